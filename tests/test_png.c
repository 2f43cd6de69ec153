/* The PNG writer (formats/png.h): the file is parsed back here independently
 * of the writer (a bitwise CRC-32, a plain Adler-32, a stored-block inflater),
 * and the colormap and heatmaps are checked against their definitions. */
#include <float.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "../formats/png.h"

/* ---- an independent reader ---------------------------------------------------- */

static uint32_t crc_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static uint32_t adler_plain(const uint8_t *p, size_t n)
{
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    return (b << 16) | a;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

typedef struct decoded {
    uint32_t width, height;
    int channels;
    uint8_t *pixels; /* height * width * channels */
    int stored_blocks;
} decoded;

/* Inflates a zlib stream made only of stored blocks; checks the Adler-32.
 * Returns the raw bytes (malloc) and their count. */
static uint8_t *inflate_stored(const uint8_t *z, size_t zn, size_t *out_n, int *blocks)
{
    cr_assert_geq(zn, 6u);
    cr_assert_eq(z[0] & 0x0F, 8, "CM must be 8 (deflate)");
    cr_assert_eq((z[0] * 256 + z[1]) % 31, 0, "zlib header check bits");
    cr_assert_eq(z[1] & 0x20, 0, "no preset dictionary");
    uint8_t *out = malloc(zn);
    size_t pos = 2, n = 0;
    int final = 0;
    *blocks = 0;
    while (!final) {
        cr_assert_lt(pos + 5, zn);
        final = z[pos] & 1;
        cr_assert_eq((z[pos] >> 1) & 3, 0, "BTYPE must be 00 (stored)");
        uint32_t len = z[pos + 1] | (uint32_t)z[pos + 2] << 8;
        uint32_t nlen = z[pos + 3] | (uint32_t)z[pos + 4] << 8;
        cr_assert_eq(len ^ 0xFFFFu, nlen, "NLEN is the complement of LEN");
        pos += 5;
        cr_assert_leq(pos + len, zn - 4);
        memcpy(out + n, z + pos, len);
        n += len;
        pos += len;
        (*blocks)++;
    }
    cr_assert_eq(pos + 4, zn, "the Adler-32 ends the stream");
    cr_assert_eq(be32(z + pos), adler_plain(out, n), "Adler-32");
    *out_n = n;
    return out;
}

/* Parses a PNG as pg_png_write makes it, checking every chunk's CRC. */
static decoded read_png(const char *path)
{
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    size_t n;
    uint8_t *f = read_all(path, &n);
    cr_assert_geq(n, 8u + 25 + 12 + 12);
    cr_assert_arr_eq(f, SIG, 8, "PNG signature");
    decoded d = {0};
    uint8_t *idat = malloc(n);
    size_t idat_n = 0, pos = 8;
    int chunk = 0, seen_end = 0;
    while (pos < n) {
        cr_assert_leq(pos + 12, n, "truncated chunk");
        uint32_t len = be32(f + pos);
        cr_assert_leq(pos + 12 + len, n, "chunk length past the end");
        const uint8_t *type = f + pos + 4, *data = f + pos + 8;
        cr_assert_eq(be32(data + len), crc_bitwise(type, 4 + len), "CRC of chunk %d (%.4s)", chunk, type);
        if (chunk == 0) {
            cr_assert_eq(memcmp(type, "IHDR", 4), 0, "IHDR first");
            cr_assert_eq(len, 13u);
            d.width = be32(data);
            d.height = be32(data + 4);
            cr_assert_eq(data[8], 8, "bit depth 8");
            int ct = data[9];
            cr_assert(ct == 0 || ct == 2 || ct == 6, "colour type %d", ct);
            d.channels = ct == 0 ? 1 : ct == 2 ? 3 : 4;
            cr_assert_eq(data[10], 0, "compression method");
            cr_assert_eq(data[11], 0, "filter method");
            cr_assert_eq(data[12], 0, "no interlace");
        } else if (memcmp(type, "IDAT", 4) == 0) {
            memcpy(idat + idat_n, data, len);
            idat_n += len;
        } else {
            cr_assert_eq(memcmp(type, "IEND", 4), 0, "unexpected chunk %.4s", type);
            cr_assert_eq(len, 0u);
            seen_end = 1;
            cr_assert_eq(pos + 12, n, "IEND is last");
        }
        pos += 12 + len;
        chunk++;
    }
    cr_assert(seen_end, "IEND");
    size_t raw_n;
    uint8_t *raw = inflate_stored(idat, idat_n, &raw_n, &d.stored_blocks);
    size_t row = (size_t)d.width * d.channels;
    cr_assert_eq(raw_n, (row + 1) * d.height, "raw size");
    d.pixels = malloc(row * d.height);
    for (uint32_t y = 0; y < d.height; y++) {
        cr_assert_eq(raw[y * (row + 1)], 0, "filter byte of row %u", y);
        memcpy(d.pixels + y * row, raw + y * (row + 1) + 1, row);
    }
    free(raw);
    free(idat);
    free(f);
    return d;
}

/* A scratch directory, removed with its files by rm_dir. */
static void tmp_dir(char dir[64])
{
    strcpy(dir, "/tmp/pg_png_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void rm_file_in(const char *dir, const char *name)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    remove(p);
}

/* ---- the writer ----------------------------------------------------------------- */

static void roundtrip(int64_t w, int64_t h, int channels, int min_blocks)
{
    char dir[64], path[128];
    tmp_dir(dir);
    snprintf(path, sizeof path, "%s/img.png", dir);
    size_t n = (size_t)(w * h * channels);
    uint8_t *px = malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)(i * 37 + i / 251);
    cr_assert_eq(pg_png_write(path, w, h, channels, px), 0, "%s", pg_last_error());
    decoded d = read_png(path);
    cr_assert_eq(d.width, (uint32_t)w);
    cr_assert_eq(d.height, (uint32_t)h);
    cr_assert_eq(d.channels, channels);
    cr_assert_geq(d.stored_blocks, min_blocks);
    cr_assert_arr_eq(d.pixels, px, n, "decoded pixels equal the input");
    free(d.pixels);
    free(px);
    rm_file_in(dir, "img.png");
    cr_assert_eq(rmdir(dir), 0, "only img.png was left (no temporary file)");
}

Test(png, gray_rgb_rgba_roundtrip)
{
    roundtrip(1, 1, 1, 1);
    roundtrip(5, 3, 1, 1);
    roundtrip(7, 4, 3, 1);
    roundtrip(3, 9, 4, 1);
}

Test(png, several_stored_blocks)
{
    /* (200 * 3 + 1) * 120 = 72120 raw bytes: two stored blocks */
    roundtrip(200, 120, 3, 2);
}

Test(png, checksums_match_independent_ones)
{
    uint8_t buf[300];
    for (int i = 0; i < 300; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    cr_assert_eq(pg_crc32(0, (const uint8_t *)"123456789", 9), 0xCBF43926u); /* the CRC-32 check value */
    cr_assert_eq(pg_crc32(0, buf, 300), crc_bitwise(buf, 300));
    cr_assert_eq(pg_crc32(pg_crc32(0, buf, 100), buf + 100, 200), crc_bitwise(buf, 300), "running CRC");
    cr_assert_eq(pg_adler32(1, (const uint8_t *)"Wikipedia", 9), 0x11E60398u);
    cr_assert_eq(pg_adler32(pg_adler32(1, buf, 120), buf + 120, 180), adler_plain(buf, 300));
    /* long run of 0xFF: the deferred modulo must not overflow */
    size_t big = 100000;
    uint8_t *ff = malloc(big);
    memset(ff, 0xFF, big);
    cr_assert_eq(pg_adler32(1, ff, big), adler_plain(ff, big));
    free(ff);
}

Test(png, bad_input)
{
    char dir[64], path[128];
    tmp_dir(dir);
    snprintf(path, sizeof path, "%s/x.png", dir);
    uint8_t px[12] = {0};
    cr_assert_eq(pg_png_write(NULL, 2, 2, 3, px), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_write: path is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_png_write(path, 2, 2, 3, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pixels is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_png_write(path, 0, 2, 3, px), -1);
    cr_assert(strstr(pg_last_error(), "image size 0x2 out of range"), "%s", pg_last_error());
    cr_assert_eq(pg_png_write(path, 2, -1, 3, px), -1);
    cr_assert_eq(pg_png_write(path, (int64_t)1 << 40, 1, 3, px), -1);
    cr_assert_eq(pg_png_write(path, 2, 2, 2, px), -1);
    cr_assert(strstr(pg_last_error(), "channels 2 not supported"), "%s", pg_last_error());
    cr_assert_eq(pg_png_write("/nonexistent-dir/x.png", 2, 2, 3, px), -1);
    cr_assert(strstr(pg_last_error(), "cannot create '/nonexistent-dir/x.png.tmp."), "%s", pg_last_error());
    struct stat st;
    cr_assert_neq(stat(path, &st), 0, "nothing written on failure");
    /* a directory in the way: the rename fails, the temporary file is removed */
    cr_assert_eq(mkdir(path, 0700), 0);
    cr_assert_eq(pg_png_write(path, 2, 2, 3, px), -1);
    cr_assert(strstr(pg_last_error(), "cannot write"), "%s", pg_last_error());
    cr_assert_eq(rmdir(path), 0);
    cr_assert_eq(rmdir(dir), 0, "no temporary file left behind");
}

/* ---- the colormap --------------------------------------------------------------- */

/* CIE L* of an sRGB colour (D65). */
static double lightness(const uint8_t c[3])
{
    double lin[3];
    for (int i = 0; i < 3; i++) {
        double v = c[i] / 255.0;
        lin[i] = v <= 0.04045 ? v / 12.92 : pow((v + 0.055) / 1.055, 2.4);
    }
    double y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
    return y > 216.0 / 24389 ? 116 * cbrt(y) - 16 : y * 24389.0 / 27;
}

Test(png, colormap_monotonic_lightness_and_endpoints)
{
    uint8_t c0[3], c1[3], prev[3], cur[3], lo[3], hi[3], nan_c[3];
    pg_colormap(0, c0);
    pg_colormap(1, c1);
    pg_colormap(-5, lo);
    pg_colormap(7, hi);
    cr_assert_arr_eq(lo, c0, 3, "t < 0 clamps to t = 0");
    cr_assert_arr_eq(hi, c1, 3, "t > 1 clamps to t = 1");
    cr_assert_lt(lightness(c0), 20, "dark end: L* %g", lightness(c0));
    cr_assert_gt(lightness(c1), 85, "light end: L* %g", lightness(c1));
    /* non-decreasing on a fine grid (nearby t share a level) ... */
    pg_colormap(0, prev);
    for (int i = 1; i <= 1000; i++) {
        pg_colormap(i / 1000.0, cur);
        cr_assert_geq(lightness(cur), lightness(prev), "L* falls at t = %g", i / 1000.0);
        memcpy(prev, cur, 3);
    }
    /* ... and strictly rising from each level to the next */
    int distinct = 1;
    for (int i = 1; i < PG_COLORMAP_LEVELS; i++) {
        pg_colormap((i - 1) / (double)(PG_COLORMAP_LEVELS - 1), prev);
        pg_colormap(i / (double)(PG_COLORMAP_LEVELS - 1), cur);
        cr_assert_gt(lightness(cur), lightness(prev), "L* does not rise at level %d", i);
        distinct += memcmp(cur, prev, 3) != 0;
    }
    cr_assert_eq(distinct, PG_COLORMAP_LEVELS);
    pg_colormap(NAN, nan_c);
    cr_assert(nan_c[0] == PG_PNG_NAN_GRAY && nan_c[1] == PG_PNG_NAN_GRAY && nan_c[2] == PG_PNG_NAN_GRAY);
}

/* ---- heatmaps --------------------------------------------------------------------- */

static void expect_cell(const decoded *d, int64_t px, int64_t r, int64_t c, const uint8_t rgb[3])
{
    for (int64_t y = r * px; y < (r + 1) * px; y++)
        for (int64_t x = c * px; x < (c + 1) * px; x++) {
            const uint8_t *p = d->pixels + (y * d->width + x) * 3;
            cr_assert(p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2],
                      "cell (%lld, %lld) pixel (%lld, %lld) is %d,%d,%d, expected %d,%d,%d", (long long)r,
                      (long long)c, (long long)y, (long long)x, p[0], p[1], p[2], rgb[0], rgb[1], rgb[2]);
        }
}

Test(png, heatmap_known_tensor)
{
    char dir[64], path[128];
    tmp_dir(dir);
    snprintf(path, sizeof path, "%s/h.png", dir);
    /* (2, 3): auto range over the finite values [-1, 3]; NaN and inf in gray */
    pg_tensor *t = T64(PG_SHAPE(2, 3), -1, 0, 1, 3, NAN, INFINITY);
    cr_assert_eq(pg_png_heatmap(path, t, 2, 0, 0), 0, "%s", pg_last_error());
    decoded d = read_png(path);
    cr_assert_eq(d.width, 6u);
    cr_assert_eq(d.height, 4u);
    cr_assert_eq(d.channels, 3);
    const double expect_t[4] = {0, 0.25, 0.5, 1};
    uint8_t rgb[3], gray[3] = {PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY};
    for (int i = 0; i < 4; i++) {
        pg_colormap(expect_t[i], rgb);
        expect_cell(&d, 2, i / 3, i % 3, rgb);
    }
    expect_cell(&d, 2, 1, 1, gray);
    expect_cell(&d, 2, 1, 2, gray);
    free(d.pixels);
    pg_tensor_free(t);

    /* f32, explicit range [0, 10]: values outside clamp */
    pg_tensor *u = T32(PG_SHAPE(1, 3), -4, 5, 40);
    cr_assert_eq(pg_png_heatmap(path, u, 1, 0, 10), 0, "%s", pg_last_error());
    d = read_png(path);
    cr_assert_eq(d.width, 3u);
    cr_assert_eq(d.height, 1u);
    const double ut[3] = {0, 0.5, 1};
    for (int i = 0; i < 3; i++) {
        pg_colormap(ut[i], rgb);
        expect_cell(&d, 1, 0, i, rgb);
    }
    free(d.pixels);

    /* the mask value -DBL_MAX is gray and stays out of the range; an explicit
     * range as wide as the doubles does not overflow */
    pg_tensor *w = T64(PG_SHAPE(1, 3), 2, -DBL_MAX, 4);
    cr_assert_eq(pg_png_heatmap(path, w, 1, 0, 0), 0, "%s", pg_last_error());
    d = read_png(path);
    pg_colormap(0, rgb);
    expect_cell(&d, 1, 0, 0, rgb);
    expect_cell(&d, 1, 0, 1, gray);
    pg_colormap(1, rgb);
    expect_cell(&d, 1, 0, 2, rgb);
    free(d.pixels);
    cr_assert_eq(pg_png_heatmap(path, u, 1, -DBL_MAX / 2, DBL_MAX / 2), 0, "%s", pg_last_error());
    d = read_png(path);
    pg_colormap(0.5, rgb);
    expect_cell(&d, 1, 0, 1, rgb);
    free(d.pixels);
    pg_tensor_free(w);

    /* constant tensor: the colormap's middle */
    pg_tensor *k = T64(PG_SHAPE(1, 1), 2.5);
    cr_assert_eq(pg_png_heatmap(path, k, 3, 0, 0), 0, "%s", pg_last_error());
    d = read_png(path);
    pg_colormap(0.5, rgb);
    expect_cell(&d, 3, 0, 0, rgb);
    free(d.pixels);
    pg_tensor_free(k);
    pg_tensor_free(u);
    rm_file_in(dir, "h.png");
    cr_assert_eq(rmdir(dir), 0);
}

Test(png, heatmap_bad_input)
{
    pg_tensor *v = T64(PG_SHAPE(3), 1, 2, 3);
    pg_tensor *ids = TI64(PG_SHAPE(1, 2), 1, 2);
    pg_tensor *m = T64(PG_SHAPE(1, 2), 1, 2);
    cr_assert_eq(pg_png_heatmap("/tmp/x.png", NULL, 1, 0, 0), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_heatmap: t is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_png_heatmap(NULL, m, 1, 0, 0), -1);
    cr_assert_eq(pg_png_heatmap("/tmp/x.png", v, 1, 0, 0), -1);
    cr_assert(strstr(pg_last_error(), "expected a 2-D f32/f64 tensor (rows, cols), got f64[3]"), "%s",
              pg_last_error());
    cr_assert_eq(pg_png_heatmap("/tmp/x.png", ids, 1, 0, 0), -1);
    cr_assert(strstr(pg_last_error(), "got i64[1,2]"), "%s", pg_last_error());
    cr_assert_eq(pg_png_heatmap("/tmp/x.png", m, 0, 0, 0), -1);
    cr_assert(strstr(pg_last_error(), "cell_px 0"), "%s", pg_last_error());
    cr_assert_eq(pg_png_heatmap("/tmp/x.png", m, 100000, 0, 0), -1);
    cr_assert_eq(pg_png_heatmap("/tmp/x.png", m, 1, 2, 1), -1);
    cr_assert(strstr(pg_last_error(), "bad range vmin 2, vmax 1"), "%s", pg_last_error());
    cr_assert_eq(pg_png_heatmap("/tmp/x.png", m, 1, NAN, 1), -1);
    cr_assert_eq(pg_png_heatmap("/nonexistent-dir/h.png", m, 1, 0, 0), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_write: cannot create"), "%s", pg_last_error());
    pg_tensor_free(v);
    pg_tensor_free(ids);
    pg_tensor_free(m);
}
