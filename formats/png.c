/* The PNG writer, colormap and heatmaps of png.h.
 *
 * File layout (PNG spec, ISO/IEC 15948):
 *   signature 89 50 4E 47 0D 0A 1A 0A
 *   chunk := length (4 bytes, big-endian, of data) | type (4) | data | CRC-32(type | data)
 *   IHDR: width, height (4 each), bit depth 8, colour type, 0 (deflate), 0 (filter), 0 (no interlace)
 *   IDAT: zlib stream = 78 01 | stored deflate blocks | Adler-32 (big-endian) of the raw data
 *         stored block := BFINAL/BTYPE byte (BTYPE 00) | LEN (2, little-endian) | ~LEN | LEN bytes
 *         raw data: for each row, filter byte 0 then width * channels bytes
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

/* Writes one chunk; 0 or -1 (errno from stdio). */
static int write_chunk(FILE *f, const char type[4], const uint8_t *data, size_t len)
{
    uint8_t head[8];
    put_be32(head, (uint32_t)len);
    memcpy(head + 4, type, 4);
    uint32_t crc = pg_crc32(0, (const uint8_t *)type, 4);
    crc = pg_crc32(crc, data, len);
    uint8_t tail[4];
    put_be32(tail, crc);
    if (fwrite(head, 1, 8, f) != 8)
        return -1;
    if (len > 0 && fwrite(data, 1, len, f) != len)
        return -1;
    return fwrite(tail, 1, 4, f) == 4 ? 0 : -1;
}

#define STORED_MAX 65535u

/* The zlib stream of stored blocks holding raw (n bytes): 2 header bytes, 5
 * bytes per block, n data bytes, 4 bytes Adler-32. */
static size_t zlib_stored_size(size_t n)
{
    size_t blocks = n == 0 ? 1 : (n + STORED_MAX - 1) / STORED_MAX;
    return 2 + 5 * blocks + n + 4;
}

static void zlib_stored(uint8_t *out, const uint8_t *raw, size_t n)
{
    uint8_t *p = out;
    *p++ = 0x78; /* CM 8 (deflate), CINFO 7 (32 KiB window) */
    *p++ = 0x01; /* FLEVEL 0, no dictionary; (0x78 * 256 + 0x01) % 31 == 0 */
    size_t done = 0;
    do {
        size_t len = n - done < STORED_MAX ? n - done : STORED_MAX;
        bool last = done + len == n;
        *p++ = last ? 1 : 0; /* BFINAL, BTYPE 00 (stored) */
        p[0] = (uint8_t)len;
        p[1] = (uint8_t)(len >> 8);
        p[2] = (uint8_t)~len;
        p[3] = (uint8_t)(~len >> 8);
        p += 4;
        memcpy(p, raw + done, len);
        p += len;
        done += len;
    } while (done < n);
    put_be32(p, pg_adler32(1, raw, n));
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

/* Raw image data: each row preceded by filter byte 0. */
static void raw_rows(uint8_t *raw, const uint8_t *pixels, size_t row_bytes, size_t height)
{
    for (size_t y = 0; y < height; y++) {
        uint8_t *row = raw + y * (row_bytes + 1);
        row[0] = 0;
        memcpy(row + 1, pixels + y * row_bytes, row_bytes);
    }
}

static int write_png_file(FILE *f, uint32_t w, uint32_t h, int channels, const uint8_t *idat, size_t idat_len)
{
    static const uint8_t SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    uint8_t ihdr[13];
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = 8;                          /* bit depth */
    ihdr[9] = (uint8_t)color_type(channels);
    ihdr[10] = ihdr[11] = ihdr[12] = 0;  /* deflate, adaptive filtering, no interlace */
    if (fwrite(SIGNATURE, 1, 8, f) != 8)
        return -1;
    if (write_chunk(f, "IHDR", ihdr, 13) || write_chunk(f, "IDAT", idat, idat_len) ||
        write_chunk(f, "IEND", NULL, 0))
        return -1;
    return 0;
}

/* Writes the file to a temporary name beside path, then renames it over path. */
static int write_atomically(const char *path, uint32_t w, uint32_t h, int channels, const uint8_t *idat,
                            size_t idat_len)
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
    int rc = write_png_file(f, w, h, channels, idat, idat_len);
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
    if (!path || !pixels) {
        pg_set_error("pg_png_write: %s is NULL", !path ? "path" : "pixels");
        return -1;
    }
    if (width < 1 || height < 1 || width > PG_PNG_MAX_SIDE || height > PG_PNG_MAX_SIDE) {
        pg_set_error("pg_png_write: image size %lldx%lld out of range (1..%d per side) for '%s'",
                     (long long)width, (long long)height, PG_PNG_MAX_SIDE, path);
        return -1;
    }
    if (color_type(channels) < 0) {
        pg_set_error("pg_png_write: channels %d not supported (1 gray, 3 RGB, 4 RGBA) for '%s'", channels, path);
        return -1;
    }
    size_t row_bytes = (size_t)width * (size_t)channels;
    size_t raw_len = ((size_t)row_bytes + 1) * (size_t)height;
    size_t idat_len = zlib_stored_size(raw_len);
    uint8_t *raw = malloc(raw_len);
    uint8_t *idat = malloc(idat_len);
    if (!raw || !idat) {
        free(raw);
        free(idat);
        pg_set_error("pg_png_write: out of memory for a %lldx%lld image", (long long)width, (long long)height);
        return -1;
    }
    raw_rows(raw, pixels, row_bytes, (size_t)height);
    zlib_stored(idat, raw, raw_len);
    free(raw);
    int rc = write_atomically(path, (uint32_t)width, (uint32_t)height, channels, idat, idat_len);
    free(idat);
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
