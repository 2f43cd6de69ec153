/* The PNG writer, colormap and heatmaps of png.h (the reader: png_read.c).
 *
 * File layout (PNG spec, ISO/IEC 15948):
 *   signature 89 50 4E 47 0D 0A 1A 0A
 *   chunk := length (4 bytes, big-endian, of data) | type (4) | data | CRC-32(type | data)
 *   IHDR: width, height (4 each), bit depth 8, colour type, 0 (deflate), 0 (filter), 0 (no interlace)
 *   IDAT: zlib stream (pg_zlib_compress, zlib_deflate.c) of the filtered rows:
 *         for each row, a filter type byte (0..4, section 9) then width * channels bytes
 *   IEND: empty */
#define _POSIX_C_SOURCE 200809L

#include "png.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- checksums ----------------------------------------------------------------------- */

/* CRC-32 with the reflected polynomial 0xEDB88320, four bits at a time:
 * NIBBLE[n] is the register n after four rounds of the bitwise algorithm
 * (c = c & 1 ? P ^ (c >> 1) : c >> 1), so a byte takes two lookups.
 * A constant table needs no initialisation, so concurrent callers are safe. */
static const uint32_t NIBBLE[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

/* buf may be NULL only for n == 0 */
static bool bytes_given(const char *fn, const uint8_t *buf, size_t n)
{
    if (!buf && n)
        pg_set_error("%s: buf is NULL for %zu bytes", fn, n);
    return buf || !n;
}

uint32_t pg_crc32(uint32_t crc, const uint8_t *buf, size_t n)
{
    if (!bytes_given("pg_crc32", buf, n))
        return crc;
    uint32_t c = crc ^ 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= buf[i];
        c = NIBBLE[c & 0xFu] ^ (c >> 4);
        c = NIBBLE[c & 0xFu] ^ (c >> 4);
    }
    return c ^ 0xFFFFFFFFu;
}

/* Adler-32 (RFC 1950): a = 1 + sum of bytes, b = sum of the a's, both mod 65521. */
uint32_t pg_adler32(uint32_t adler, const uint8_t *buf, size_t n)
{
    if (!bytes_given("pg_adler32", buf, n))
        return adler;
    const uint32_t MOD = 65521u;
    uint32_t a = adler & 0xFFFFu, b = adler >> 16;
    while (n > 0) {
        size_t run = n < 5552 ? n : 5552; /* largest run with no 32-bit overflow of b */
        for (size_t i = 0; i < run; i++) {
            a += buf[i];
            b += a;
        }
        a %= MOD;
        b %= MOD;
        buf += run;
        n -= run;
    }
    return (b << 16) | a;
}

/* ---- writing ------------------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Appends one chunk at p: length, type, data, CRC-32 of type and data; returns the end. */
static uint8_t *put_chunk(uint8_t *p, const char type[4], const uint8_t *data, size_t len)
{
    put_be32(p, (uint32_t)len);
    memcpy(p + 4, type, 4);
    if (len)
        memcpy(p + 8, data, len);
    put_be32(p + 8 + len, pg_crc32(0, p + 4, 4 + len));
    return p + 12 + len;
}

static int color_type(int channels)
{
    switch (channels) {
    case 1: return 0; /* grayscale */
    case 3: return 2; /* truecolour */
    case 4: return 6; /* truecolour with alpha */
    default: return -1;
    }
}

/* Paeth predictor (PNG spec section 9.4): of left a, up b, up-left c, the one
 * nearest to a + b - c, ties going to a, then b. */
static uint8_t paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return (uint8_t)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

/* Row cur filtered with type ft (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)
 * into out (n bytes); prev is the row above (zeros for the first), bpp the
 * bytes per pixel (section 9.2: a, b, c are the bytes left, up and up-left,
 * 0 off the image's left edge). Returns the sum of |byte| read as signed,
 * the spec's suggested measure of how well the row will compress. */
static uint64_t filter_row(int ft, const uint8_t *cur, const uint8_t *prev, size_t n, size_t bpp, uint8_t *out)
{
    size_t k = bpp < n ? bpp : n; /* the first pixel: a = c = 0 */
    for (size_t x = 0; x < k; x++)
        out[x] = (uint8_t)(cur[x] - (ft == 2 || ft == 4 ? prev[x] : ft == 3 ? prev[x] / 2 : 0));
    switch (ft) {
    case 0: memcpy(out + k, cur + k, n - k); break;
    case 1: for (size_t x = k; x < n; x++) out[x] = (uint8_t)(cur[x] - cur[x - bpp]); break;
    case 2: for (size_t x = k; x < n; x++) out[x] = (uint8_t)(cur[x] - prev[x]); break;
    case 3: for (size_t x = k; x < n; x++) out[x] = (uint8_t)(cur[x] - ((cur[x - bpp] + prev[x]) >> 1)); break;
    default:
        for (size_t x = k; x < n; x++)
            out[x] = (uint8_t)(cur[x] - paeth(cur[x - bpp], prev[x], prev[x - bpp]));
    }
    uint64_t sum = 0;
    for (size_t x = 0; x < n; x++)
        sum += out[x] < 128 ? out[x] : 256u - out[x];
    return sum;
}

/* The filtered image (section 7.3): each row as its filter type byte and the
 * filtered bytes, the type chosen per row by the smallest sum of |byte|. */
static void filter_rows(uint8_t *raw, const uint8_t *pixels, size_t row_bytes, size_t height, size_t bpp,
                        uint8_t *zero, uint8_t *trial)
{
    for (size_t y = 0; y < height; y++) {
        const uint8_t *cur = pixels + y * row_bytes, *prev = y ? cur - row_bytes : zero;
        uint8_t *row = raw + y * (row_bytes + 1);
        uint64_t best = filter_row(0, cur, prev, row_bytes, bpp, row + 1);
        row[0] = 0;
        for (int ft = 1; ft <= 4; ft++) {
            uint64_t sum = filter_row(ft, cur, prev, row_bytes, bpp, trial);
            if (sum < best) {
                best = sum;
                row[0] = (uint8_t)ft;
                memcpy(row + 1, trial, row_bytes);
            }
        }
    }
}

static int encode_check(int64_t width, int64_t height, int channels, const uint8_t *pixels, const char *fn,
                        const char *path)
{
    if (!pixels) {
        pg_set_error("%s: pixels is NULL", fn);
        return -1;
    }
    if (width < 1 || height < 1 || width > PG_PNG_MAX_SIDE || height > PG_PNG_MAX_SIDE) {
        pg_set_error("%s: image size %lldx%lld out of range (1..%d per side)%s%s%s", fn, (long long)width,
                     (long long)height, PG_PNG_MAX_SIDE, path ? " for '" : "", path ? path : "", path ? "'" : "");
        return -1;
    }
    if (color_type(channels) < 0) {
        pg_set_error("%s: channels %d not supported (1 gray, 3 RGB, 4 RGBA)%s%s%s", fn, channels,
                     path ? " for '" : "", path ? path : "", path ? "'" : "");
        return -1;
    }
    return 0;
}

/* The filtered rows' zlib stream in *z; 0 or -1 (message naming fn). */
static int compress_image(uint8_t **z, size_t *zn, int64_t width, int64_t height, int channels,
                          const uint8_t *pixels, const char *fn)
{
    size_t row_bytes = (size_t)width * (size_t)channels;
    size_t raw_len = (row_bytes + 1) * (size_t)height;
    uint8_t *raw = malloc(raw_len), *zero = calloc(row_bytes, 1), *trial = malloc(row_bytes);
    int rc = -1;
    if (raw && zero && trial) {
        filter_rows(raw, pixels, row_bytes, (size_t)height, (size_t)channels, zero, trial);
        rc = pg_zlib_compress(z, zn, raw, raw_len);
    } else {
        pg_set_error("%s: out of memory for a %lldx%lld image", fn, (long long)width, (long long)height);
    }
    free(raw);
    free(zero);
    free(trial);
    return rc;
}

static int encode(uint8_t **out, size_t *len, int64_t width, int64_t height, int channels, const uint8_t *pixels,
                  const char *fn)
{
    static const uint8_t SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    uint8_t *z;
    size_t zn;
    if (compress_image(&z, &zn, width, height, channels, pixels, fn))
        return -1;
    /* signature, IHDR (12 + 13), IDAT (12 + zn), IEND (12) */
    size_t total = 8 + 25 + 12 + zn + 12;
    uint8_t *file = zn <= 0x7FFFFFFFu ? malloc(total) : NULL;
    if (!file) {
        free(z);
        pg_set_error("%s: out of memory for a %zu-byte file", fn, total);
        return -1;
    }
    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)width);
    put_be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8; /* bit depth */
    ihdr[9] = (uint8_t)color_type(channels);
    ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filtering, no interlace */
    memcpy(file, SIGNATURE, 8);
    uint8_t *p = put_chunk(file + 8, "IHDR", ihdr, 13);
    p = put_chunk(p, "IDAT", z, zn);
    put_chunk(p, "IEND", NULL, 0);
    free(z);
    *out = file;
    *len = total;
    return 0;
}

int pg_png_encode(uint8_t **out, size_t *len, int64_t width, int64_t height, int channels, const uint8_t *pixels)
{
    if (!out || !len) {
        pg_set_error("pg_png_encode: %s is NULL", !out ? "out" : "len");
        return -1;
    }
    if (encode_check(width, height, channels, pixels, "pg_png_encode", NULL))
        return -1;
    return encode(out, len, width, height, channels, pixels, "pg_png_encode");
}

/* Writes the file to a temporary name beside path, then renames it over path. */
static int write_atomically(const char *path, const uint8_t *file, size_t len)
{
    size_t tmp_size = strlen(path) + 32;
    char *tmp = malloc(tmp_size);
    if (!tmp) {
        pg_set_error("pg_png_write: out of memory for '%s'", path);
        return -1;
    }
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        pg_set_error("pg_png_write: cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int rc = fwrite(file, 1, len, f) == len ? 0 : -1;
    int err = errno;
    if (fclose(f) != 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        err = errno;
    }
    if (rc != 0) {
        pg_set_error("pg_png_write: cannot write '%s': %s", path, strerror(err));
        remove(tmp);
    }
    free(tmp);
    return rc;
}

int pg_png_write(const char *path, int64_t width, int64_t height, int channels, const uint8_t *pixels)
{
    if (!path) {
        pg_set_error("pg_png_write: path is NULL");
        return -1;
    }
    if (encode_check(width, height, channels, pixels, "pg_png_write", path))
        return -1;
    uint8_t *file;
    size_t len;
    if (encode(&file, &len, width, height, channels, pixels, "pg_png_write"))
        return -1;
    int rc = write_atomically(path, file, len);
    free(file);
    return rc;
}

/* ---- colormap -------------------------------------------------------------------------- */

/* Control points of a viridis-like ramp (dark blue-violet -> teal -> green ->
 * yellow), chosen by hand so that CIE lightness L* rises along it (about
 * 15 -> 91); the colormap interpolates linearly in sRGB between them. Rounding
 * each channel to a byte jitters L* by up to ~0.1, more than it rises between
 * two nearby t, so t is first quantised to PG_COLORMAP_LEVELS levels, far
 * enough apart (L* step >= 0.25) that lightness rises strictly from one level
 * to the next. tests/test_png.c checks it. */
static const uint8_t RAMP[9][3] = {
    {68, 1, 84},    /* t = 0     */
    {72, 36, 117},  /* t = 0.125 */
    {64, 67, 135},  /* t = 0.25  */
    {52, 94, 141},  /* t = 0.375 */
    {41, 120, 142}, /* t = 0.5   */
    {32, 144, 140}, /* t = 0.625 */
    {53, 183, 121}, /* t = 0.75  */
    {144, 215, 67}, /* t = 0.875 */
    {253, 231, 37}, /* t = 1     */
};

void pg_colormap(double t, uint8_t rgb[3])
{
    if (!rgb) {
        pg_set_error("pg_colormap: rgb is NULL");
        return;
    }
    if (isnan(t)) {
        rgb[0] = rgb[1] = rgb[2] = PG_PNG_NAN_GRAY;
        return;
    }
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    long level = lround(t * (PG_COLORMAP_LEVELS - 1));
    long segs = (long)(sizeof RAMP / sizeof RAMP[0]) - 1;
    /* level -> segment k and fraction f, exactly: s = level * segs / (levels - 1) */
    long num = level * segs;
    long k = num / (PG_COLORMAP_LEVELS - 1);
    if (k >= segs)
        k = segs - 1;
    double f = (double)(num - k * (PG_COLORMAP_LEVELS - 1)) / (PG_COLORMAP_LEVELS - 1);
    for (int c = 0; c < 3; c++) {
        double v = RAMP[k][c] + f * (RAMP[k + 1][c] - RAMP[k][c]);
        rgb[c] = (uint8_t)lround(v);
    }
}

/* ---- heatmaps ---------------------------------------------------------------------------- */

static double cell_value(const pg_tensor *t, int64_t i)
{
    return t->dtype == PG_F32 ? (double)((const float *)t->data)[i] : ((const double *)t->data)[i];
}

/* NaN, infinities and mask values such as -DBL_MAX are not drawn on the scale */
static bool drawable(double v)
{
    return fabs(v) < PG_PNG_HUGE; /* false for NaN too */
}

/* The min and max of t's drawable values; both 0 when there are none. */
static void finite_range(const pg_tensor *t, double *lo, double *hi)
{
    bool any = false;
    *lo = *hi = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        double v = cell_value(t, i);
        if (!drawable(v))
            continue;
        if (!any || v < *lo)
            *lo = v;
        if (!any || v > *hi)
            *hi = v;
        any = true;
    }
}

/* Colour of one value under the range [lo, hi]; lo == hi maps to the middle. */
static void value_color(double v, double lo, double hi, uint8_t rgb[3])
{
    if (!drawable(v)) {
        rgb[0] = rgb[1] = rgb[2] = PG_PNG_NAN_GRAY;
        return;
    }
    /* halves first: hi - lo may overflow for a range like [-DBL_MAX, DBL_MAX] */
    pg_colormap(hi > lo ? (0.5 * v - 0.5 * lo) / (0.5 * hi - 0.5 * lo) : 0.5, rgb);
}

/* Paints the cell (r, c) into the RGB image of width w pixels. */
static void paint_cell(uint8_t *img, int64_t w, int64_t r, int64_t c, int64_t px, const uint8_t rgb[3])
{
    for (int64_t y = r * px; y < (r + 1) * px; y++) {
        uint8_t *p = img + (size_t)(y * w + c * px) * 3;
        for (int64_t x = 0; x < px; x++, p += 3)
            memcpy(p, rgb, 3);
    }
}

static int heatmap_check(const char *path, const pg_tensor *t, int64_t cell_px, double vmin, double vmax)
{
    char buf[64];
    if (!path || !t) {
        pg_set_error("pg_png_heatmap: %s is NULL", !path ? "path" : "t");
        return -1;
    }
    if (t->ndim != 2 || (t->dtype != PG_F32 && t->dtype != PG_F64) || !t->data) {
        pg_set_error("pg_png_heatmap: expected a 2-D f32/f64 tensor (rows, cols), got %s",
                     pg_shape_str(buf, sizeof buf, t));
        return -1;
    }
    if (cell_px < 1 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > PG_PNG_MAX_SIDE / cell_px ||
        t->shape[1] > PG_PNG_MAX_SIDE / cell_px) {
        pg_set_error("pg_png_heatmap: %s with cell_px %lld gives an image out of range (1..%d per side)",
                     pg_shape_str(buf, sizeof buf, t), (long long)cell_px, PG_PNG_MAX_SIDE);
        return -1;
    }
    if (isnan(vmin) || isnan(vmax) || vmin > vmax) {
        pg_set_error("pg_png_heatmap: bad range vmin %g, vmax %g (need vmin <= vmax, or equal for auto)", vmin,
                     vmax);
        return -1;
    }
    return 0;
}

int pg_png_heatmap(const char *path, const pg_tensor *t, int64_t cell_px, double vmin, double vmax)
{
    if (heatmap_check(path, t, cell_px, vmin, vmax))
        return -1;
    /* t: (rows, cols) -> image (rows * cell_px, cols * cell_px) RGB */
    int64_t rows = t->shape[0], cols = t->shape[1];
    int64_t w = cols * cell_px, h = rows * cell_px;
    double lo = vmin, hi = vmax;
    if (vmin == vmax)
        finite_range(t, &lo, &hi);
    uint8_t *img = malloc((size_t)(w * h) * 3);
    if (!img) {
        pg_set_error("pg_png_heatmap: out of memory for a %lldx%lld image", (long long)w, (long long)h);
        return -1;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            uint8_t rgb[3];
            value_color(cell_value(t, r * cols + c), lo, hi, rgb);
            paint_cell(img, w, r, c, cell_px, rgb);
        }
    int rc = pg_png_write(path, w, h, 3, img);
    free(img);
    return rc;
}
