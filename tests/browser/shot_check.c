/* make browser-check: is a headless-Chromium screenshot of bias_lab's
 * report.html a rendered page? Decodes it with the project's own PNG reader
 * (pg_png_read) and checks that it is not blank: no single colour covers
 * almost all of it, it has many distinct colours, and the heatmaps' colormap
 * (pg_colormap, docs/png.md) is on it at many levels over many pixels.
 *
 *   shot_check shot.png      exit 0 and one line of counts, or 1 and why */
#include "posgrad.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MIN_DISTINCT = 64, MIN_LEVELS = 24, MIN_MAP_PIXELS = 5000, TOL = 3 };
#define MAX_TOP_SHARE 0.97 /* the most common colour (the white page) may cover at most this */

/* Index of the colormap level within TOL of (r, g, b) in every channel, or -1. */
static int colormap_level(uint8_t lut[PG_COLORMAP_LEVELS][3], const uint8_t *px)
{
    for (int l = 0; l < PG_COLORMAP_LEVELS; l++)
        if (abs(px[0] - lut[l][0]) <= TOL && abs(px[1] - lut[l][1]) <= TOL && abs(px[2] - lut[l][2]) <= TOL)
            return l;
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: shot_check shot.png\n");
        return 2;
    }
    int64_t w, h;
    int ch;
    uint8_t *px;
    if (pg_png_read(argv[1], &w, &h, &ch, &px) != 0) {
        fprintf(stderr, "shot_check: %s\n", pg_last_error());
        return 1;
    }
    uint8_t lut[PG_COLORMAP_LEVELS][3];
    for (int l = 0; l < PG_COLORMAP_LEVELS; l++)
        pg_colormap((l + 0.5) / PG_COLORMAP_LEVELS, lut[l]);
    uint8_t *seen = calloc(1u << 21, 1); /* one bit per 24-bit colour */
    uint32_t *count = calloc(1u << 24, sizeof *count);
    bool level_seen[PG_COLORMAP_LEVELS] = {false};
    int64_t distinct = 0, map_pixels = 0, top = 0;
    int levels = 0;
    for (int64_t i = 0; seen && count && ch >= 3 && i < w * h; i++) {
        const uint8_t *p = px + i * ch;
        uint32_t c = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        if (!(seen[c >> 3] & (1u << (c & 7)))) {
            seen[c >> 3] |= (uint8_t)(1u << (c & 7));
            distinct++;
        }
        top = ++count[c] > top ? count[c] : top;
        int l = colormap_level(lut, p);
        if (l >= 0) {
            map_pixels++;
            levels += !level_seen[l];
            level_seen[l] = true;
        }
    }
    bool alloc_ok = seen && count;
    free(seen);
    free(count);
    free(px);
    double share = w > 0 && h > 0 ? (double)top / (double)(w * h) : 1;
    printf("shot_check: %s: %lldx%lld, %d channels, %lld distinct colours, the commonest on %.1f%% of it, "
           "%d of %d colormap levels on %lld pixels\n",
           argv[1], (long long)w, (long long)h, ch, (long long)distinct, 100 * share, levels, PG_COLORMAP_LEVELS,
           (long long)map_pixels);
    const char *why = !alloc_ok                     ? "out of memory"
                      : ch < 3                      ? "not a colour image"
                      : share > MAX_TOP_SHARE       ? "blank: one colour covers almost all of it"
                      : distinct < MIN_DISTINCT     ? "too few distinct colours for a page of figures"
                      : levels < MIN_LEVELS         ? "too few colormap levels: the heatmaps did not render"
                      : map_pixels < MIN_MAP_PIXELS ? "too few heatmap pixels: the heatmaps did not render"
                                                    : NULL;
    if (why) {
        fprintf(stderr, "shot_check: %s: %s\n", argv[1], why);
        return 1;
    }
    return 0;
}
