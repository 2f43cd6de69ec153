/* libFuzzer target for the PNG reader (and through it the inflater): any byte
 * string must either decode into width * height * channels bytes that can be
 * read and freed, or fail with a message and nothing allocated. Build and
 * run: see tests/fuzz/README.md. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../formats/png.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
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
    return 0;
}
