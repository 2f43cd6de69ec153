/* pg_png_decode and pg_png_read (formats/png.h) on corrupt and unsupported
 * files: each refused with -1, a message naming the function and what was
 * wrong, and nothing allocated. The files are built here chunk by chunk
 * (PNG spec section 5: length, type, data, CRC-32 of type and data). */
#include "testutil.h"
#include "../formats/png.h"

typedef struct file {
    uint8_t b[4096];
    size_t n;
} file;

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void add(file *f, const void *p, size_t n)
{
    cr_assert_leq(f->n + n, sizeof f->b);
    if (n)
        memcpy(f->b + f->n, p, n);
    f->n += n;
}

static void chunk(file *f, const char *type, const uint8_t *data, uint32_t len)
{
    uint8_t head[8];
    be32(head, len);
    memcpy(head + 4, type, 4);
    add(f, head, 8);
    add(f, data, len);
    uint8_t crc[4];
    be32(crc, pg_crc32(pg_crc32(0, (const uint8_t *)type, 4), data, len));
    add(f, crc, 4);
}

typedef struct spec {
    uint32_t w, h;
    uint8_t depth, type, interlace;
    const uint8_t *raw; /* raw_n bytes of filtered rows; NULL: raw_n zeros (at most 512) */
    size_t raw_n;
    const char *extra;  /* a chunk type put between IHDR and IDAT, or NULL */
} spec;

/* A PNG of the given IHDR fields and image data (compressed by pg_zlib_compress). */
static file make(spec s)
{
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    file f = {{0}, 0};
    add(&f, SIG, 8);
    uint8_t ihdr[13];
    be32(ihdr, s.w);
    be32(ihdr + 4, s.h);
    ihdr[8] = s.depth;
    ihdr[9] = s.type;
    ihdr[10] = ihdr[11] = 0;
    ihdr[12] = s.interlace;
    chunk(&f, "IHDR", ihdr, 13);
    if (s.extra)
        chunk(&f, s.extra, (const uint8_t *)"abc", 3);
    uint8_t zeros[512] = {0};
    uint8_t *z;
    size_t zn;
    cr_assert(s.raw || s.raw_n <= sizeof zeros);
    cr_assert_eq(pg_zlib_compress(&z, &zn, s.raw ? s.raw : zeros, s.raw_n), 0);
    chunk(&f, "IDAT", z, (uint32_t)zn);
    free(z);
    chunk(&f, "IEND", NULL, 0);
    return f;
}

static void refused(const uint8_t *data, size_t n, const char *what)
{
    int64_t w = -1, h = -1;
    int c = -1;
    uint8_t *px = (uint8_t *)"x";
    cr_assert_eq(pg_png_decode(data, n, &w, &h, &c, &px), -1, "accepted a file with %s", what);
    cr_assert_null(px, "nothing allocated");
    cr_assert(strstr(pg_last_error(), "pg_png_decode: "), "%s", pg_last_error());
    cr_assert(strstr(pg_last_error(), what), "expected '%s' in: %s", what, pg_last_error());
}

static void decodes(const file *f, int64_t w, int64_t h, int channels)
{
    int64_t gw, gh;
    int gc;
    uint8_t *px;
    cr_assert_eq(pg_png_decode(f->b, f->n, &gw, &gh, &gc, &px), 0, "%s", pg_last_error());
    cr_assert(gw == w && gh == h && gc == channels, "%lldx%lld x %d", (long long)gw, (long long)gh, gc);
    free(px);
}

Test(png_read, valid_built_files)
{
    /* zero image data: gray (type 0), gray + alpha (4), RGB (2), RGBA (6) */
    const uint8_t types[4] = {0, 4, 2, 6};
    const int channels[4] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        file f = make((spec){3, 2, 8, types[i], 0, NULL, (size_t)(3 * channels[i] + 1) * 2, NULL});
        decodes(&f, 3, 2, channels[i]);
    }
    /* an ancillary chunk is skipped, and so is a suggested palette (PLTE) in an RGB file */
    file f = make((spec){3, 2, 8, 2, 0, NULL, 20, "tEXt"});
    decodes(&f, 3, 2, 3);
    f = make((spec){3, 2, 8, 2, 0, NULL, 20, "PLTE"});
    decodes(&f, 3, 2, 3);
}

Test(png_read, bad_signature_crc_truncation)
{
    uint8_t px[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint8_t *png;
    size_t n;
    cr_assert_eq(pg_png_encode(&png, &n, 2, 2, 3, px), 0);
    uint8_t *bad = malloc(n);
    memcpy(bad, png, n);
    bad[1] = 'Q';
    refused(bad, n, "not a PNG file (the first 8 bytes are not the PNG signature)");
    refused(bad, 3, "not a PNG file");
    /* one flipped bit in each chunk's data or CRC */
    const size_t flips[4] = {8 + 8 + 5, 8 + 25 - 1, 8 + 25 + 8 + 2, n - 1};
    const char *chunks[4] = {"'IHDR'", "'IHDR'", "'IDAT'", "'IEND'"};
    for (int i = 0; i < 4; i++) {
        memcpy(bad, png, n);
        bad[flips[i]] ^= 0x10;
        refused(bad, n, "CRC mismatch in chunk");
        cr_assert(strstr(pg_last_error(), chunks[i]), "%s", pg_last_error());
    }
    /* every shorter prefix is truncated */
    for (size_t k = 8; k < n; k++)
        refused(png, k, "truncated file");
    /* a chunk length past the end */
    memcpy(bad, png, n);
    be32(bad + 8 + 25, 0x7FFFFFF0u);
    refused(bad, n, "chunk 'IDAT' at byte 33 has 2147483632 data bytes");
    free(bad);
    free(png);
}

Test(png_read, unsupported_and_invalid_headers)
{
    file f = make((spec){3, 2, 8, 3, 0, NULL, 20, NULL});
    refused(f.b, f.n, "palette images (colour type 3) are not supported");
    f = make((spec){3, 2, 16, 2, 0, NULL, 20, NULL});
    refused(f.b, f.n, "bit depth 16 is not supported (only 8 bits per sample)");
    f = make((spec){3, 2, 8, 2, 1, NULL, 20, NULL});
    refused(f.b, f.n, "interlaced (Adam7) images are not supported");
    f = make((spec){3, 2, 8, 5, 0, NULL, 20, NULL});
    refused(f.b, f.n, "colour type 5 is not a PNG colour type");
    f = make((spec){0, 2, 8, 2, 0, NULL, 20, NULL});
    refused(f.b, f.n, "image size 0x2 out of range");
    f = make((spec){PG_PNG_MAX_SIDE + 1, 1, 8, 0, 0, NULL, 20, NULL});
    refused(f.b, f.n, "image size 16385x1 out of range (1..16384 per side)");
    f = make((spec){3, 2, 8, 0, 0, NULL, 8, "QQQQ"});
    refused(f.b, f.n, "unsupported critical chunk 'QQQQ'");
    f = make((spec){3, 2, 8, 0, 0, NULL, 8, "PLTE"}); /* gray images have no palette */
    refused(f.b, f.n, "unsupported critical chunk 'PLTE'");
    f = make((spec){3, 2, 8, 0, 0, NULL, 8, "a1bc"});
    refused(f.b, f.n, "bad chunk type 'a?bc' at byte 33 (not four letters)");
    /* IHDR not first: a tEXt chunk before it */
    f = make((spec){3, 2, 8, 0, 0, NULL, 8, NULL});
    decodes(&f, 3, 2, 1);
    file g = {{0}, 0};
    add(&g, f.b, 8);
    chunk(&g, "tEXt", (const uint8_t *)"k\0v", 3);
    add(&g, f.b + 8, f.n - 8);
    refused(g.b, g.n, "the first chunk is 'tEXt', not IHDR");
    /* IHDR of 12 bytes */
    file h = {{0}, 0};
    add(&h, f.b, 8);
    chunk(&h, "IHDR", f.b + 16, 12);
    refused(h.b, h.n, "IHDR chunk of 12 bytes, expected 13");
    /* no IDAT: IHDR then IEND */
    file e = {{0}, 0};
    add(&e, f.b, 8 + 25);
    chunk(&e, "IEND", NULL, 0);
    refused(e.b, e.n, "no IDAT chunk (no image data)");
    /* no IEND: cut after IDAT */
    refused(f.b, f.n - 12, "truncated file: no IEND chunk");
}

Test(png_read, bad_image_data)
{
    /* gray 3 x 2: rows of 1 + 3 bytes */
    uint8_t raw[8] = {0, 1, 2, 3, 5, 4, 5, 6};
    file f = make((spec){3, 2, 8, 0, 0, raw, 8, NULL});
    refused(f.b, f.n, "row 1 has filter type 5 (0..4 are defined)");
    f = make((spec){3, 2, 8, 0, 0, raw, 7, NULL});
    refused(f.b, f.n, "image data holds 7 bytes, a 3x2 image with 1 channels needs 8");
    uint8_t more[9] = {0};
    f = make((spec){3, 2, 8, 0, 0, more, 9, NULL});
    refused(f.b, f.n, "image data: pg_zlib_decompress: output past max_out (8 bytes)");
    /* a corrupt zlib stream inside IDAT (its CRC kept right): the Adler-32 */
    f = make((spec){3, 2, 8, 0, 0, raw, 8, NULL});
    size_t idat = 8 + 25 + 8; /* the IDAT's data */
    uint32_t len = (uint32_t)f.b[idat - 5] | (uint32_t)f.b[idat - 6] << 8;
    f.b[idat + len - 1] ^= 1;
    be32(f.b + idat + len, pg_crc32(0, f.b + idat - 4, 4 + len));
    refused(f.b, f.n, "image data: pg_zlib_decompress: Adler-32");
}

Test(png_read, read_files)
{
    int64_t w, h;
    int c;
    uint8_t *px = (uint8_t *)"x";
    cr_assert_eq(pg_png_read("/nonexistent-dir/x.png", &w, &h, &c, &px), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_read: '/nonexistent-dir/x.png': cannot open"), "%s", pg_last_error());
    cr_assert_null(px);
    cr_assert_eq(pg_png_read("tests/fixtures/gen_png_filters.py", &w, &h, &c, &px), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_read: 'tests/fixtures/gen_png_filters.py': not a PNG file"), "%s",
              pg_last_error());
    cr_assert_eq(pg_png_read("tests", &w, &h, &c, &px), -1, "a directory");
    cr_assert(strstr(pg_last_error(), "pg_png_read: 'tests': not a regular file"), "%s", pg_last_error());
    cr_assert_eq(pg_png_decode(NULL, 0, &w, &h, &c, &px), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_decode: not a PNG file"), "%s", pg_last_error());
    cr_assert_eq(pg_png_decode((const uint8_t *)"x", 1, &w, NULL, &c, &px), -1);
    cr_assert(strstr(pg_last_error(), "pg_png_decode: height is NULL"), "%s", pg_last_error());
}
