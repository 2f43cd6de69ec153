/* The PNG reader of png.h: pg_png_decode and pg_png_read.
 *
 * Accepts what the PNG spec (ISO/IEC 15948) calls bit depth 8, colour types
 * 0 (gray), 2 (RGB), 4 (gray + alpha) and 6 (RGBA), not interlaced: the
 * chunks are walked with their CRC-32 checked, IHDR read, the IDAT chunks
 * joined and inflated (pg_zlib_decompress, no more than the image's size),
 * and each row's filter (section 9) undone. Ancillary chunks (lower-case first
 * letter) are skipped; palettes, 16-bit samples and interlacing are refused
 * with a message naming them. */
#define _POSIX_C_SOURCE 200809L

#include "png.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct png_info {
    uint32_t width, height;
    int channels;
} png_info;

/* pg_set_error("<who>: <message>"), who being "pg_png_decode" or "pg_png_read: 'path'" */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(const char *who, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pg_set_error("%s: %s", who, msg);
    return -1;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Four ASCII letters (section 5.4); other bytes are shown as '?'. */
static bool chunk_type(const uint8_t *t, char name[5])
{
    bool ok = true;
    for (int i = 0; i < 4; i++) {
        bool letter = (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z');
        name[i] = letter ? (char)t[i] : '?';
        ok = ok && letter;
    }
    name[4] = '\0';
    return ok;
}

/* IHDR (section 11.2.2) */
static int read_ihdr(const char *who, const uint8_t *d, uint32_t len, png_info *info)
{
    static const int CHANNELS[7] = {1, 0, 3, 0, 2, 0, 4};
    if (len != 13)
        return fail(who, "IHDR chunk of %u bytes, expected 13", len);
    info->width = be32(d);
    info->height = be32(d + 4);
    if (info->width < 1 || info->height < 1 || info->width > PG_PNG_MAX_SIDE || info->height > PG_PNG_MAX_SIDE)
        return fail(who, "image size %ux%u out of range (1..%d per side)", info->width, info->height,
                    PG_PNG_MAX_SIDE);
    int depth = d[8], type = d[9];
    if (type == 3)
        return fail(who, "palette images (colour type 3) are not supported");
    if (type > 6 || CHANNELS[type] == 0)
        return fail(who, "colour type %d is not a PNG colour type (0, 2, 3, 4 or 6)", type);
    if (depth != 8)
        return fail(who, "bit depth %d is not supported (only 8 bits per sample)", depth);
    if (d[10] != 0 || d[11] != 0)
        return fail(who, "compression method %d / filter method %d, expected 0 and 0", d[10], d[11]);
    if (d[12] != 0)
        return fail(who, "interlace method %d: interlaced (Adam7) images are not supported", d[12]);
    info->channels = CHANNELS[type];
    return 0;
}

/* Appends an IDAT chunk's data to *z (size *zn, room *zcap). */
static int add_idat(const char *who, uint8_t **z, size_t *zn, size_t *zcap, const uint8_t *d, uint32_t len)
{
    if (*zcap - *zn < len) {
        size_t cap = *zcap * 2 > *zn + len ? *zcap * 2 : *zn + len;
        uint8_t *p = realloc(*z, cap ? cap : 1);
        if (!p)
            return fail(who, "out of memory for %zu bytes of image data", cap);
        *z = p;
        *zcap = cap;
    }
    if (len)
        memcpy(*z + *zn, d, len);
    *zn += len;
    return 0;
}

/* Walks the chunks (section 5.3): IHDR first, the IDATs joined into *z, up to IEND. */
static int read_chunks(const char *who, const uint8_t *data, size_t len, png_info *info, uint8_t **z, size_t *zn)
{
    size_t pos = 8, zcap = 0;
    bool ihdr = false;
    for (;;) {
        if (len - pos < 12)
            return fail(who, "truncated file: %s at byte %zu", ihdr ? "no IEND chunk" : "no IHDR chunk", pos);
        uint32_t n = be32(data + pos);
        const uint8_t *t = data + pos + 4, *d = data + pos + 8;
        char name[5];
        bool named = chunk_type(t, name);
        if (n > 0x7FFFFFFFu || len - pos - 12 < n)
            return fail(who, "truncated file: chunk '%s' at byte %zu has %u data bytes, %zu left", name, pos, n,
                        len - pos - 12);
        if (!named)
            return fail(who, "bad chunk type '%s' at byte %zu (not four letters)", name, pos);
        uint32_t want = be32(d + n), got = pg_crc32(0, t, 4 + (size_t)n);
        if (want != got)
            return fail(who, "CRC mismatch in chunk '%s' at byte %zu (stored 0x%08X, computed 0x%08X)", name, pos,
                        want, got);
        pos += 12 + (size_t)n;
        if (!ihdr && strcmp(name, "IHDR") != 0)
            return fail(who, "the first chunk is '%s', not IHDR", name);
        if (!ihdr) {
            if (read_ihdr(who, d, n, info))
                return -1;
            ihdr = true;
        } else if (!strcmp(name, "IDAT")) {
            if (add_idat(who, z, zn, &zcap, d, n))
                return -1;
        } else if (!strcmp(name, "IEND")) {
            return *z ? 0 : fail(who, "no IDAT chunk (no image data)");
        } else if (name[0] >= 'A' && name[0] <= 'Z' && !(strcmp(name, "PLTE") == 0 && info->channels >= 3)) {
            return fail(who, "unsupported critical chunk '%s'", name); /* a suggested palette (PLTE) is skipped */
        }
    }
}

/* Paeth predictor (section 9.4) */
static int paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Undoes each row's filter (section 9.2) from raw (rows of a type byte and
 * row_bytes bytes) into px (rows of row_bytes). */
static int unfilter(const char *who, const uint8_t *raw, uint8_t *px, size_t row_bytes, size_t height, size_t bpp)
{
    for (size_t y = 0; y < height; y++) {
        const uint8_t *in = raw + y * (row_bytes + 1) + 1;
        uint8_t *cur = px + y * row_bytes;
        const uint8_t *prev = y ? cur - row_bytes : NULL;
        int ft = in[-1];
        if (ft > 4)
            return fail(who, "row %zu has filter type %d (0..4 are defined)", y, ft);
        for (size_t x = 0; x < row_bytes; x++) {
            int a = x >= bpp ? cur[x - bpp] : 0, b = prev ? prev[x] : 0, c = prev && x >= bpp ? prev[x - bpp] : 0;
            int pred = ft == 0 ? 0 : ft == 1 ? a : ft == 2 ? b : ft == 3 ? (a + b) / 2 : paeth(a, b, c);
            cur[x] = (uint8_t)(in[x] + pred);
        }
    }
    return 0;
}

/* Inflates the joined IDAT data and unfilters it into *pixels. */
static int decode_image(const char *who, const png_info *info, const uint8_t *z, size_t zn, uint8_t **pixels)
{
    size_t row_bytes = (size_t)info->width * (size_t)info->channels;
    size_t raw_len = (row_bytes + 1) * info->height;
    uint8_t *raw;
    size_t got;
    if (pg_zlib_decompress(&raw, &got, z, zn, raw_len)) {
        char inner[400];
        snprintf(inner, sizeof inner, "%s", pg_last_error());
        return fail(who, "image data: %s", inner);
    }
    if (got != raw_len) {
        free(raw);
        return fail(who, "image data holds %zu bytes, a %ux%u image with %d channels needs %zu", got, info->width,
                    info->height, info->channels, raw_len);
    }
    uint8_t *px = malloc(row_bytes * info->height);
    if (!px || unfilter(who, raw, px, row_bytes, info->height, (size_t)info->channels)) {
        if (!px)
            fail(who, "out of memory for a %ux%u image", info->width, info->height);
        free(px);
        free(raw);
        return -1;
    }
    free(raw);
    *pixels = px;
    return 0;
}

static int decode(const char *who, const uint8_t *data, size_t len, int64_t *width, int64_t *height, int *channels,
                  uint8_t **pixels)
{
    static const uint8_t SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (len < 8 || memcmp(data, SIGNATURE, 8) != 0)
        return fail(who, "not a PNG file (the first 8 bytes are not the PNG signature)");
    png_info info = {0, 0, 0};
    uint8_t *z = NULL, *px = NULL;
    size_t zn = 0;
    int rc = read_chunks(who, data, len, &info, &z, &zn);
    if (rc == 0)
        rc = decode_image(who, &info, z, zn, &px);
    free(z);
    if (rc)
        return -1;
    *width = info.width;
    *height = info.height;
    *channels = info.channels;
    *pixels = px;
    return 0;
}

static const char *null_arg(const void *data, size_t len, const int64_t *width, const int64_t *height,
                            const int *channels, uint8_t *const *pixels)
{
    return (!data && len) ? "data" : !width ? "width" : !height ? "height" : !channels ? "channels"
                                   : !pixels ? "pixels" : NULL;
}

int pg_png_decode(const uint8_t *data, size_t len, int64_t *width, int64_t *height, int *channels,
                  uint8_t **pixels)
{
    const char *null = null_arg(data, len, width, height, channels, pixels);
    if (null)
        return fail("pg_png_decode", "%s is NULL", null);
    *pixels = NULL;
    return decode("pg_png_decode", data ? data : (const uint8_t *)"", len, width, height, channels, pixels);
}

/* The whole file at path, malloc'd, in *buf and *len; 0 or -1. */
static int slurp(const char *who, const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(who, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fail(who, "not a regular file");
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        fclose(f);
        return fail(who, "out of memory for a %zu-byte file", n);
    }
    size_t got = fread(b, 1, n, f);
    int err = errno, bad = ferror(f);
    fclose(f);
    if (got != n) {
        free(b);
        return fail(who, "cannot read: %s", bad ? strerror(err) : "the file shrank while being read");
    }
    *buf = b;
    *len = n;
    return 0;
}

int pg_png_read(const char *path, int64_t *width, int64_t *height, int *channels, uint8_t **pixels)
{
    const char *null = path ? null_arg("", 0, width, height, channels, pixels) : "path";
    if (null)
        return fail("pg_png_read", "%s is NULL", null);
    *pixels = NULL;
    char who[256];
    snprintf(who, sizeof who, "pg_png_read: '%.200s'", path);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (slurp(who, path, &buf, &len))
        return -1;
    int rc = decode(who, buf, len, width, height, channels, pixels);
    free(buf);
    return rc;
}
