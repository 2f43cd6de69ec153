/* The bitmap font of formats/plot.h: every glyph drawn at scales 1 and 2 is
 * its bitmap exactly (descenders shifted down), text sizes, clipping at the
 * canvas's edges, the rotated text, and that easily confused characters
 * differ. */
#include "testutil.h"
#include "../formats/plot_impl.h"

static const pg_rgb INK = {10, 20, 30};

static bool is_white(pg_rgb p)
{
    return p.r == 255 && p.g == 255 && p.b == 255;
}

static bool is_ink(pg_rgb p)
{
    return p.r == INK.r && p.g == INK.g && p.b == INK.b;
}

/* Whether the font pixel (col, row) of the cell (row counted from the cell's
 * top, after the descender shift) is set in c's glyph. */
static bool font_bit(char ch, int col, int row)
{
    int r = row - pg_font_shift(ch);
    if (col < 0 || col >= PG_FONT_GLYPH_W || r < 0 || r >= PG_FONT_GLYPH_H)
        return false;
    return pg_font_glyph(ch)[r] & (0x10 >> col);
}

/* ch drawn at (ox, oy) on a canvas is its bitmap at scale s, and nothing else is painted. */
static void check_glyph(char ch, int s)
{
    pg_canvas c;
    cr_assert_eq(pg_canvas_init(&c, 40, 40), 0);
    const int64_t ox = 5, oy = 3;
    char str[2] = {ch, 0};
    pg_text_draw(&c, ox, oy, str, s, INK);
    for (int64_t y = 0; y < c.height; y++)
        for (int64_t x = 0; x < c.width; x++) {
            int64_t u = x - ox, v = y - oy;
            bool want = u >= 0 && v >= 0 && font_bit(ch, (int)(u / s), (int)(v / s));
            pg_rgb p = pg_canvas_get(&c, x, y);
            cr_assert(want ? is_ink(p) : is_white(p), "'%c' at scale %d: pixel (%lld, %lld) should be %s", ch, s,
                      (long long)x, (long long)y, want ? "ink" : "white");
        }
    pg_canvas_free(&c);
}

Test(font, every_glyph_matches_its_bitmap_at_1x_and_2x)
{
    for (int ch = 32; ch < 127; ch++) {
        check_glyph((char)ch, 1);
        check_glyph((char)ch, 2);
    }
}

Test(font, glyphs_stay_in_their_cell_and_printables_have_ink)
{
    for (int ch = 32; ch < 127; ch++) {
        const uint8_t *g = pg_font_glyph((char)ch);
        int ink = 0;
        for (int r = 0; r < PG_FONT_GLYPH_H; r++) {
            cr_assert_eq(g[r] & ~0x1Fu, 0, "'%c' row %d uses more than 5 columns", ch, r);
            ink += g[r] != 0;
        }
        cr_assert(ch == ' ' ? ink == 0 : ink > 0, "'%c' has %d inked rows", ch, ink);
        int last = 0; /* the lowest inked row, shifted, stays inside the 9-row cell */
        for (int r = 0; r < PG_FONT_GLYPH_H; r++)
            if (g[r])
                last = r;
        cr_assert_lt(last + pg_font_shift((char)ch), PG_FONT_CELL_H, "'%c' runs out of its cell", ch);
    }
    /* outside 32..126: the glyph of '?' */
    cr_assert_eq(pg_font_glyph('\x01'), pg_font_glyph('?'));
    cr_assert_eq(pg_font_glyph((char)200), pg_font_glyph('?'));
}

static int differing_pixels(char a, char b)
{
    int n = 0;
    for (int row = 0; row < PG_FONT_CELL_H; row++)
        for (int col = 0; col < PG_FONT_GLYPH_W; col++)
            n += font_bit(a, col, row) != font_bit(b, col, row);
    return n;
}

Test(font, glyphs_are_distinct_and_confusable_pairs_differ_clearly)
{
    for (int a = 33; a < 127; a++)
        for (int b = a + 1; b < 127; b++)
            cr_assert_gt(differing_pixels((char)a, (char)b), 0, "'%c' and '%c' are the same", a, b);
    const char *pairs[] = {"0O", "1l", "1I", "lI", "5S", "8B", "2Z", "0D", "gq", "il", "1|"};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        cr_assert_geq(differing_pixels(pairs[i][0], pairs[i][1]), 3, "'%c' and '%c' differ in only %d pixels",
                      pairs[i][0], pairs[i][1], differing_pixels(pairs[i][0], pairs[i][1]));
    /* descenders reach below the baseline (cell row 6) */
    const char *desc = "gjpqy";
    for (const char *p = desc; *p; p++) {
        bool below = false;
        for (int col = 0; col < PG_FONT_GLYPH_W; col++)
            below = below || font_bit(*p, col, 7);
        cr_assert(below, "'%c' has no descender", *p);
    }
}

Test(font, text_sizes)
{
    cr_assert_eq(pg_text_width("abc", 1), 3 * PG_FONT_CELL_W);
    cr_assert_eq(pg_text_width("abc", 2), 6 * PG_FONT_CELL_W);
    cr_assert_eq(pg_text_height("abc", 2), 2 * PG_FONT_CELL_H);
    cr_assert_eq(pg_text_width("ab\nlonger\nc", 1), 6 * PG_FONT_CELL_W);
    cr_assert_eq(pg_text_height("ab\nlonger\nc", 3), 3 * 3 * PG_FONT_CELL_H);
    cr_assert_eq(pg_text_width("", 1), 0);
    cr_assert_eq(pg_text_height("", 1), 0);
    cr_assert_eq(pg_text_width(NULL, 1), 0);
    /* scales outside 1..8 are clamped */
    cr_assert_eq(pg_text_width("a", 0), PG_FONT_CELL_W);
    cr_assert_eq(pg_text_width("a", 50), 8 * PG_FONT_CELL_W);
}

Test(font, second_line_starts_one_cell_lower)
{
    pg_canvas a, b;
    cr_assert_eq(pg_canvas_init(&a, 30, 30), 0);
    cr_assert_eq(pg_canvas_init(&b, 30, 30), 0);
    pg_text_draw(&a, 2, 1, "x\nE", 1, INK);
    pg_text_draw(&b, 2, 1, "x", 1, INK);
    pg_text_draw(&b, 2, 1 + PG_FONT_CELL_H, "E", 1, INK);
    cr_assert_eq(memcmp(a.rgb, b.rgb, 30 * 30 * 3), 0);
    pg_canvas_free(&a);
    pg_canvas_free(&b);
}

/* Text half off each edge paints exactly the visible part of the glyph. */
Test(font, clipping_at_the_edges)
{
    const int64_t offs[4][2] = {{-3, 2}, {2, -4}, {7, 2}, {2, 5}};
    for (int k = 0; k < 4; k++) {
        pg_canvas c;
        cr_assert_eq(pg_canvas_init(&c, 10, 10), 0);
        int64_t ox = offs[k][0], oy = offs[k][1];
        pg_text_draw(&c, ox, oy, "W", 1, INK);
        for (int64_t y = 0; y < 10; y++)
            for (int64_t x = 0; x < 10; x++) {
                int64_t u = x - ox, v = y - oy;
                bool want = u >= 0 && v >= 0 && font_bit('W', (int)u, (int)v);
                cr_assert(want ? is_ink(pg_canvas_get(&c, x, y)) : is_white(pg_canvas_get(&c, x, y)),
                          "offset (%lld, %lld): pixel (%lld, %lld)", (long long)ox, (long long)oy, (long long)x,
                          (long long)y);
            }
        /* far away or enormous: nothing drawn, no crash (the sanitizers watch the writes) */
        uint8_t before[300];
        memcpy(before, c.rgb, 300);
        pg_text_draw(&c, INT64_MAX / 2, 0, "far", 8, INK);
        pg_text_draw(&c, -INT64_MAX / 2, 0, "far", 8, INK);
        pg_text_draw(&c, 0, INT64_MAX / 2, "far", 8, INK);
        pg_text_draw_up(&c, 0, -INT64_MAX / 2, "far", 8, INK);
        cr_assert_eq(memcmp(before, c.rgb, 300), 0);
        pg_canvas_free(&c);
    }
}

/* Rotated text: the pixel (u, v) of the upright text lands at (v, W - 1 - u). */
Test(font, rotated_text_is_the_upright_text_turned_counter_clockwise)
{
    const char *s = "Ag1";
    int64_t w = pg_text_width(s, 2), h = pg_text_height(s, 2);
    pg_canvas up, flat;
    cr_assert_eq(pg_canvas_init(&flat, w, h), 0);
    cr_assert_eq(pg_canvas_init(&up, h + 4, w + 4), 0);
    pg_text_draw(&flat, 0, 0, s, 2, INK);
    pg_text_draw_up(&up, 2, 2, s, 2, INK);
    for (int64_t v = 0; v < h; v++)
        for (int64_t u = 0; u < w; u++)
            cr_assert_eq(is_ink(pg_canvas_get(&flat, u, v)), is_ink(pg_canvas_get(&up, 2 + v, 2 + w - 1 - u)),
                         "pixel (%lld, %lld)", (long long)u, (long long)v);
    pg_canvas_free(&up);
    pg_canvas_free(&flat);
}
