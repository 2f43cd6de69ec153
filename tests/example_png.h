/* For the examples' smoke tests: a figure an example wrote is a PNG of
 * plausible size (PNG spec 5.2 signature, 11.2.2 IHDR: width and height as
 * big-endian 32-bit integers at bytes 16..23), read back through the
 * project's own decoder (pg_png_read). (Included after testutil.h.) */
#ifndef PG_TESTS_EXAMPLE_PNG_H
#define PG_TESTS_EXAMPLE_PNG_H

#include <sys/stat.h>

#include "../formats/png.h"

typedef struct ex_png {
    int64_t width, height;
    long bytes;
} ex_png;

/* Asserts path is a PNG at least min_w x min_h pixels, of 1 KB .. 1 MB, that the
 * project's decoder reads back (RGB, the size of its IHDR) with more than 1% of
 * its pixels drawn; returns its size. */
static inline ex_png ex_assert_png(const char *path, int64_t min_w, int64_t min_h)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s is missing", path);
    uint8_t head[24];
    size_t got = fread(head, 1, sizeof head, f);
    fseek(f, 0, SEEK_END);
    ex_png p = {.bytes = ftell(f)};
    fclose(f);
    static const uint8_t SIG[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};
    cr_assert(got == sizeof head && !memcmp(head, SIG, 8) && !memcmp(head + 12, "IHDR", 4), "%s is not a PNG", path);
    p.width = (int64_t)head[16] << 24 | head[17] << 16 | head[18] << 8 | head[19];
    p.height = (int64_t)head[20] << 24 | head[21] << 16 | head[22] << 8 | head[23];
    cr_assert(p.width >= min_w && p.height >= min_h, "%s is %lld x %lld, want at least %lld x %lld", path,
              (long long)p.width, (long long)p.height, (long long)min_w, (long long)min_h);
    cr_assert(p.bytes >= 1024 && p.bytes <= (1L << 20), "%s has %ld bytes (a compressed figure: tens of KB)", path,
              p.bytes);
    int64_t w, h;
    int ch;
    uint8_t *px = NULL;
    cr_assert_eq(pg_png_read(path, &w, &h, &ch, &px), 0, "%s: %s", path, pg_last_error());
    cr_assert(w == p.width && h == p.height && ch == 3, "%s decodes to %lld x %lld x %d", path, (long long)w,
              (long long)h, ch);
    int64_t ink = 0; /* pixels that are not the white background */
    for (int64_t i = 0; i < w * h; i++)
        ink += px[3 * i] != 255 || px[3 * i + 1] != 255 || px[3 * i + 2] != 255;
    free(px);
    cr_assert(ink > w * h / 100, "%s is nearly blank (%lld pixels drawn)", path, (long long)ink);
    return p;
}

/* The bytes of path (malloc'd, *n set); fails the test when unreadable. */
static inline uint8_t *ex_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *b = malloc((size_t)len + 1);
    cr_assert(b && fread(b, 1, (size_t)len, f) == (size_t)len, "cannot read %s", path);
    fclose(f);
    *n = (size_t)len;
    return b;
}

#endif
