/* The PNG writer and reader (formats/png.h). Files are parsed here
 * independently of the reader (chunks walked with a bitwise CRC-32, the
 * stream's Adler-32 recomputed plainly, the filters undone from the spec);
 * only the inflating is the project's own pg_zlib_decompress, which
 * tests/test_zlib.c checks against Python's zlib. Every file is also read
 * back with pg_png_decode and the two results compared. Two fixtures written
 * by Python from the spec (tests/fixtures/gen_png_filters.py) use all five
 * filter types. The colormap and heatmaps are checked against their definitions. */
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
    unsigned filters; /* bit t set: some row uses filter type t */
    size_t file_size;
} decoded;

/* PNG spec section 9.4 */
static int paeth_ref(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc)
        return a;
    return pb <= pc ? b : c;
}

/* Undoes the filters (section 9.2) of raw into d->pixels. */
static void unfilter_ref(decoded *d, const uint8_t *raw)
{
    size_t row = (size_t)d->width * d->channels, bpp = (size_t)d->channels;
    d->pixels = malloc(row * d->height);
    for (uint32_t y = 0; y < d->height; y++) {
        const uint8_t *f = raw + y * (row + 1) + 1;
        uint8_t *cur = d->pixels + y * row, *up = y ? cur - row : NULL;
        int t = f[-1];
        cr_assert_leq(t, 4, "filter type %d of row %u", t, y);
        d->filters |= 1u << t;
        for (size_t x = 0; x < row; x++) {
            int a = x >= bpp ? cur[x - bpp] : 0, b = up ? up[x] : 0, c = up && x >= bpp ? up[x - bpp] : 0;
            int pred[5] = {0, a, b, (a + b) >> 1, paeth_ref(a, b, c)};
            cur[x] = (uint8_t)(f[x] + pred[t]);
        }
    }
}

/* Parses a PNG file's bytes, checking every chunk's CRC; ancillary chunks skipped. */
static decoded parse_png(const uint8_t *f, size_t n)
{
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    static const int CHANNELS[7] = {1, 0, 3, 0, 2, 0, 4};
    cr_assert_geq(n, 8u + 25 + 12 + 12);
    cr_assert_arr_eq(f, SIG, 8, "PNG signature");
    decoded d = {0};
    d.file_size = n;
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
            cr_assert(ct == 0 || ct == 2 || ct == 4 || ct == 6, "colour type %d", ct);
            d.channels = CHANNELS[ct];
            cr_assert_eq(data[10], 0, "compression method");
            cr_assert_eq(data[11], 0, "filter method");
            cr_assert_eq(data[12], 0, "no interlace");
        } else if (memcmp(type, "IDAT", 4) == 0) {
            memcpy(idat + idat_n, data, len);
            idat_n += len;
        } else if (memcmp(type, "IEND", 4) == 0) {
            cr_assert_eq(len, 0u);
            seen_end = 1;
            cr_assert_eq(pos + 12, n, "IEND is last");
        } else {
            cr_assert(type[0] >= 'a' && type[0] <= 'z', "unexpected critical chunk %.4s", type);
        }
        pos += 12 + len;
        chunk++;
    }
    cr_assert(seen_end, "IEND");
    size_t row = (size_t)d.width * d.channels, raw_n;
    uint8_t *raw;
    cr_assert_eq(pg_zlib_decompress(&raw, &raw_n, idat, idat_n, (row + 1) * d.height), 0, "%s", pg_last_error());
    cr_assert_eq(raw_n, (row + 1) * d.height, "raw size");
    cr_assert_eq(be32(idat + idat_n - 4), adler_plain(raw, raw_n), "Adler-32");
    unfilter_ref(&d, raw);
    free(raw);
    free(idat);
    /* the project's reader agrees */
    int64_t w, h;
    int c;
    uint8_t *px;
    cr_assert_eq(pg_png_decode(f, n, &w, &h, &c, &px), 0, "%s", pg_last_error());
    cr_assert(w == d.width && h == d.height && c == d.channels, "pg_png_decode: %lldx%lld x %d", (long long)w,
              (long long)h, c);
    cr_assert_arr_eq(px, d.pixels, row * d.height, "pg_png_decode's pixels");
    free(px);
    return d;
}

static decoded read_png(const char *path)
{
    size_t n;
    uint8_t *f = read_all(path, &n);
    decoded d = parse_png(f, n);
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

static void roundtrip(int64_t w, int64_t h, int channels, const uint8_t *px)
{
    char dir[64], path[128];
    tmp_dir(dir);
    snprintf(path, sizeof path, "%s/img.png", dir);
    size_t n = (size_t)(w * h * channels);
    cr_assert_eq(pg_png_write(path, w, h, channels, px), 0, "%s", pg_last_error());
    decoded d = read_png(path);
    cr_assert_eq(d.width, (uint32_t)w);
    cr_assert_eq(d.height, (uint32_t)h);
    cr_assert_eq(d.channels, channels);
    cr_assert_arr_eq(d.pixels, px, n, "decoded pixels equal the input");
    /* pg_png_encode makes the same bytes in memory */
    size_t fn, en;
    uint8_t *file = read_all(path, &fn), *enc;
    cr_assert_eq(pg_png_encode(&enc, &en, w, h, channels, px), 0, "%s", pg_last_error());
    cr_assert_eq(en, fn);
    cr_assert_arr_eq(enc, file, fn);
    free(enc);
    free(file);
    free(d.pixels);
    rm_file_in(dir, "img.png");
    cr_assert_eq(rmdir(dir), 0, "only img.png was left (no temporary file)");
}

static uint8_t *pattern(size_t n)
{
    uint8_t *px = malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)(i * 37 + i / 251);
    return px;
}

Test(png, gray_rgb_rgba_roundtrip)
{
    const int64_t sizes[][3] = {{1, 1, 1}, {5, 3, 1}, {7, 4, 3}, {3, 9, 4}, {1, 6, 3}, {300, 250, 4}};
    for (int i = 0; i < 6; i++) {
        uint8_t *px = pattern((size_t)(sizes[i][0] * sizes[i][1] * sizes[i][2]));
        roundtrip(sizes[i][0], sizes[i][1], (int)sizes[i][2], px);
        free(px);
    }
}

/* Encodes in memory and parses; the caller frees d.pixels. */
static decoded encode_parse(int64_t w, int64_t h, int channels, const uint8_t *px)
{
    uint8_t *f;
    size_t n;
    cr_assert_eq(pg_png_encode(&f, &n, w, h, channels, px), 0, "%s", pg_last_error());
    decoded d = parse_png(f, n);
    cr_assert_arr_eq(d.pixels, px, (size_t)(w * h * channels));
    free(f);
    return d;
}

Test(png, filters_chosen_per_row)
{
    /* 64 x 64 RGB: rows 0-15 a horizontal ramp (Sub is exact), rows 16-31
     * noise repeated from row 16 on (Up is exact), rows 32-63 a smooth 2-D
     * field (Average or Paeth) */
    int64_t w = 64, h = 64;
    uint8_t *px = malloc((size_t)(w * h * 3));
    uint32_t seed = 5;
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                uint8_t *p = px + (y * w + x) * 3 + c;
                seed = seed * 1103515245u + 12345u;
                if (y < 16)
                    *p = (uint8_t)(x * 3 + c * 50 + y * 7);
                else if (y == 16)
                    *p = (uint8_t)(seed >> 24);
                else if (y < 32)
                    *p = px[(16 * w + x) * 3 + c];
                else
                    *p = (uint8_t)((x * x + y * y) / 40 + c * 30);
            }
    decoded d = encode_parse(w, h, 3, px);
    cr_assert(d.filters & (1u << 1), "Sub used (filters 0x%x)", d.filters);
    cr_assert(d.filters & (1u << 2), "Up used (filters 0x%x)", d.filters);
    cr_assert(d.filters & (1u << 3 | 1u << 4), "Average or Paeth used (filters 0x%x)", d.filters);
    free(d.pixels);
    free(px);
}

Test(png, python_fixtures_all_five_filters)
{
    const char *files[2] = {"tests/fixtures/png_filters.png", "tests/fixtures/png_gray_alpha.png"};
    const int channels[2] = {3, 2};
    for (int k = 0; k < 2; k++) {
        decoded d = read_png(files[k]);
        cr_assert(d.width == 9 && d.height == 10 && d.channels == channels[k], "%s: %ux%u x %d", files[k], d.width,
                  d.height, d.channels);
        cr_assert_eq(d.filters, 0x1Fu, "%s: all five filter types (0x%x)", files[k], d.filters);
        for (int y = 0; y < 10; y++)
            for (int x = 0; x < 9; x++)
                for (int c = 0; c < channels[k]; c++) {
                    int want = (x * 37 + y * 91 + c * 53 + x * y * 11) % 256;
                    cr_assert_eq(d.pixels[(y * 9 + x) * channels[k] + c], want, "%s: (%d, %d) sample %d",
                                 files[k], x, y, c);
                }
        free(d.pixels);
        int64_t w, h;
        int ch;
        uint8_t *px;
        cr_assert_eq(pg_png_read(files[k], &w, &h, &ch, &px), 0, "%s", pg_last_error());
        cr_assert(w == 9 && h == 10 && ch == channels[k]);
        free(px);
    }
}

/* A (rows, 4 * L) f64 attention-bias-like tensor: four causal heads side by
 * side, each a smooth decay with its own rate, the future -inf (gray). */
static pg_tensor *bias_like(int64_t L)
{
    pg_tensor *t = pg_empty(NULL, PG_F64, PG_SHAPE(L, 4 * L));
    for (int64_t i = 0; i < L; i++)
        for (int64_t hd = 0; hd < 4; hd++)
            for (int64_t j = 0; j < L; j++)
                pg_f64(t)[i * 4 * L + hd * L + j] = j > i ? -INFINITY : -(double)(i - j) * (hd + 1) / 8.0 + sin(j);
    return t;
}

Test(png, heatmap_sizes)
{
    char dir[64], path[128];
    tmp_dir(dir);
    snprintf(path, sizeof path, "%s/h.png", dir);
    /* train_lm's layout: four heads of L = 128 side by side, 2 px cells: 1024 x 256 pixels here
     * (train_lm's gaps make 1036), 786 KB as stored blocks */
    pg_tensor *t = bias_like(128);
    cr_assert_eq(pg_png_heatmap(path, t, 2, 0, 0), 0, "%s", pg_last_error());
    decoded d = read_png(path);
    cr_assert(d.width == 1024 && d.height == 256);
    cr_assert_lt(d.file_size, 100000u, "a 1024 x 256 heatmap takes %zu bytes", d.file_size);
    free(d.pixels);
    pg_tensor_free(t);
    rm_file_in(dir, "h.png");
    cr_assert_eq(rmdir(dir), 0);
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
    uint8_t *out;
    size_t n;
    cr_assert_eq(pg_png_encode(&out, &n, 2, 2, 5, px), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_encode: channels 5 not supported (1 gray, 3 RGB, 4 RGBA)"), "%s",
              pg_last_error());
    cr_assert_eq(pg_png_encode(&out, &n, PG_PNG_MAX_SIDE + 1, 1, 1, px), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_encode: image size 16385x1 out of range"), "%s", pg_last_error());
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
