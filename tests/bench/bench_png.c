/* PNG encoding and decoding speed, one thread: a 2000 x 1000 RGB figure
 * (white page, axes, a smooth heatmap panel, noisy scatter dots), the kind of
 * picture the examples draw. MB/s counts the image's raw bytes (6 MB). */
#include "bench.h"
#include "../../formats/png.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { W = 2000, H = 1000 };

typedef struct png_ctx {
    uint8_t *px;       /* (H, W, 3) */
    uint8_t *file;     /* the encoded figure */
    size_t len;
} png_ctx;

static void figure(uint8_t *px)
{
    memset(px, 255, (size_t)W * H * 3);
    for (int y = 100; y < 900; y++)
        for (int x = 100; x < 900; x++) /* heatmap panel, 8 px cells */
            pg_colormap(0.5 + 0.5 * sin((x / 8) * 0.07) * cos((y / 8) * 0.05), px + ((size_t)y * W + x) * 3);
    for (int x = 1000; x < 1900; x++) { /* axes and a noisy curve */
        memset(px + ((size_t)900 * W + x) * 3, 0, 3);
        int y = 500 + (int)(300 * sin(x * 0.01)) + (int)((x * 7919u) % 13) - 6;
        for (int d = -1; d <= 1; d++)
            memset(px + ((size_t)(y + d) * W + x) * 3, 30, 3);
    }
}

static void encode_reps(void *p, int reps)
{
    png_ctx *c = p;
    for (int r = 0; r < reps; r++) {
        free(c->file);
        if (pg_png_encode(&c->file, &c->len, W, H, 3, c->px))
            fprintf(stderr, "png bench: %s\n", pg_last_error());
    }
}

static void decode_reps(void *p, int reps)
{
    png_ctx *c = p;
    for (int r = 0; r < reps; r++) {
        int64_t w, h;
        int ch;
        uint8_t *out;
        if (pg_png_decode(c->file, c->len, &w, &h, &ch, &out) == 0)
            free(out);
    }
}

void bench_png_all(const char *only)
{
    if (!bench_selected(only, "png"))
        return;
    png_ctx c = {malloc((size_t)W * H * 3), NULL, 0};
    figure(c.px);
    double mb = (double)W * H * 3 / 1e6;
    double te = median_time(encode_reps, &c, 1);
    printf("png_encode_mb_s %.1f MB/s\n", mb / te);
    printf("png_encode_2000x1000_ms %.0f ms (%zu bytes)\n", 1e3 * te, c.len);
    double td = median_time(decode_reps, &c, 1);
    printf("png_decode_mb_s %.1f MB/s\n", mb / td);
    free(c.file);
    free(c.px);
}
