/* libFuzzer target for the PNG reader and the inflater. Every input is tried
 * three ways: as a PNG file; as a PNG file with every chunk's CRC-32 made
 * right (mutations would otherwise nearly always stop at the first CRC, and
 * the inflater behind it would go unexplored); and as a bare zlib stream.
 * Each must either succeed with what it promised (a sane image whose every
 * byte is read, or max_out bytes at most) and no error left behind, or fail
 * with a message and nothing allocated. Build and run: tests/fuzz/README.md. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/png.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_png(const uint8_t *data, size_t size)
{
    int64_t w = 0, h = 0;
    int c = 0;
    uint8_t *px = NULL;
    pg_clear_error();
    if (pg_png_decode(data, size, &w, &h, &c, &px) == 0) {
        if (w < 1 || h < 1 || w > PG_PNG_MAX_SIDE || h > PG_PNG_MAX_SIDE || c < 1 || c > 4 || !px ||
            pg_last_error()[0] != '\0')
            __builtin_trap(); /* a success is a sane image and leaves no error behind */
        unsigned sum = 0;      /* touch every byte so ASan checks the promised size */
        for (size_t i = 0; i < (size_t)(w * h * c); i++)
            sum += px[i];
        (void)sum;
        free(px);
    } else if (px != NULL || pg_last_error()[0] == '\0') {
        __builtin_trap(); /* failure: nothing allocated, message set */
    }
}

/* Rewrites the CRC-32 of every whole chunk after the 8-byte signature. */
static void fix_crcs(uint8_t *d, size_t size)
{
    size_t pos = 8;
    while (size >= 12 && pos <= size - 12) {
        uint32_t n = (uint32_t)d[pos] << 24 | (uint32_t)d[pos + 1] << 16 | (uint32_t)d[pos + 2] << 8 | d[pos + 3];
        if (n > size - pos - 12)
            return;
        uint32_t crc = pg_crc32(0, d + pos + 4, 4 + (size_t)n);
        uint8_t *p = d + pos + 8 + n;
        p[0] = (uint8_t)(crc >> 24);
        p[1] = (uint8_t)(crc >> 16);
        p[2] = (uint8_t)(crc >> 8);
        p[3] = (uint8_t)crc;
        pos += 12 + (size_t)n;
    }
}

static void check_zlib(const uint8_t *data, size_t size)
{
    const size_t max_out = 1 << 20;
    uint8_t *out = NULL;
    size_t n = 0;
    pg_clear_error();
    if (pg_zlib_decompress(&out, &n, data, size, max_out) == 0) {
        if (!out || n > max_out || pg_last_error()[0] != '\0')
            __builtin_trap();
        unsigned sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += out[i];
        (void)sum;
        free(out);
    } else if (out != NULL || n != 0 || pg_last_error()[0] == '\0') {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_png(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (copy) {
        if (size)
            memcpy(copy, data, size);
        fix_crcs(copy, size);
        check_png(copy, size);
        free(copy);
    }
    check_zlib(data, size);
    return 0;
}
