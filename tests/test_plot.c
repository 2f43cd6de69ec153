/* formats/plot.h: the canvas (rectangles, lines, clipping), the tick chooser
 * and its labels, labelled heatmaps (cell colours against pg_colormap, the
 * masked gray, panel sizes and labels) and line plots (series through their
 * mapped points, log axes, the legend), and bad input. */
#include <float.h>
#include <unistd.h>

#include "testutil.h"
#include "../formats/plot_impl.h"

static const pg_rgb RED = {200, 0, 0};

static bool same(pg_rgb a, pg_rgb b)
{
    return a.r == b.r && a.g == b.g && a.b == b.b;
}

static bool white(pg_rgb a)
{
    return same(a, (pg_rgb){255, 255, 255});
}

static int64_t count_color(const pg_canvas *c, pg_rgb col)
{
    int64_t n = 0;
    for (int64_t y = 0; y < c->height; y++)
        for (int64_t x = 0; x < c->width; x++)
            n += same(pg_canvas_get(c, x, y), col);
    return n;
}

/* ---- canvas ------------------------------------------------------------------------------ */

Test(plot_canvas, init_is_white_and_get_outside_is_black)
{
    pg_canvas c;
    cr_assert_eq(pg_canvas_init(&c, 7, 5), 0);
    cr_assert_eq(count_color(&c, (pg_rgb){255, 255, 255}), 35);
    cr_assert(same(pg_canvas_get(&c, 7, 0), (pg_rgb){0, 0, 0}));
    cr_assert(same(pg_canvas_get(&c, -1, 0), (pg_rgb){0, 0, 0}));
    pg_canvas_free(&c);
    pg_canvas_free(&c); /* twice: a no-op */
    cr_assert_null(c.rgb);
    cr_assert_eq(pg_canvas_init(&c, 0, 5), -1);
    cr_assert(strstr(pg_last_error(), "pg_canvas_init") && strstr(pg_last_error(), "0 x 5"), "%s", pg_last_error());
    cr_assert_eq(pg_canvas_init(&c, PG_PNG_MAX_SIDE + 1, 5), -1);
}

Test(plot_canvas, rect_is_clipped)
{
    pg_canvas c;
    cr_assert_eq(pg_canvas_init(&c, 10, 8), 0);
    pg_canvas_fill_rect(&c, -3, 6, 5, 10, RED); /* visible: x 0..1, y 6..7 */
    cr_assert_eq(count_color(&c, RED), 4);
    cr_assert(same(pg_canvas_get(&c, 1, 7), RED));
    cr_assert(white(pg_canvas_get(&c, 2, 7)));
    pg_canvas_fill_rect(&c, INT64_MAX - 2, 0, INT64_MAX, 3, RED); /* no overflow, nothing drawn */
    pg_canvas_fill_rect(&c, INT64_MIN + 1, INT64_MIN + 1, INT64_MAX, INT64_MAX, RED);
    pg_canvas_fill_rect(&c, 2, 2, 0, 3, RED);
    pg_canvas_fill_rect(&c, 2, 2, -4, 3, RED);
    cr_assert_eq(count_color(&c, RED), 4);
    pg_canvas_fill_rect(&c, -100, -100, 1000, 1000, RED);
    cr_assert_eq(count_color(&c, RED), 80);
    pg_canvas_free(&c);
}

Test(plot_canvas, horizontal_line_pixels_and_thickness)
{
    pg_canvas c;
    cr_assert_eq(pg_canvas_init(&c, 20, 12), 0);
    pg_canvas_line(&c, 2, 5, 12, 5, 1, RED);
    for (int64_t y = 0; y < 12; y++)
        for (int64_t x = 0; x < 20; x++)
            cr_assert_eq(same(pg_canvas_get(&c, x, y), RED), y == 5 && x >= 2 && x <= 12, "(%lld, %lld)",
                         (long long)x, (long long)y);
    pg_canvas_free(&c);
    cr_assert_eq(pg_canvas_init(&c, 20, 12), 0);
    pg_canvas_line(&c, 2, 5, 12, 5, 3, RED); /* rows 4..6, columns 1..13 (a square at each end) */
    cr_assert_eq(count_color(&c, RED), 13 * 3);
    cr_assert(same(pg_canvas_get(&c, 1, 4), RED) && same(pg_canvas_get(&c, 13, 6), RED));
    cr_assert(white(pg_canvas_get(&c, 7, 3)) && white(pg_canvas_get(&c, 7, 7)));
    pg_canvas_free(&c);
}

Test(plot_canvas, line_endpoints_diagonal_and_clipping)
{
    pg_canvas c;
    cr_assert_eq(pg_canvas_init(&c, 30, 30), 0);
    pg_canvas_line(&c, 3, 25, 20, 4, 1, RED);
    cr_assert(same(pg_canvas_get(&c, 3, 25), RED) && same(pg_canvas_get(&c, 20, 4), RED));
    /* connected: one pixel per column between the ends (|dx| < |dy|: one per row) */
    for (int64_t y = 4; y <= 25; y++) {
        int n = 0;
        for (int64_t x = 0; x < 30; x++)
            n += same(pg_canvas_get(&c, x, y), RED);
        cr_assert_eq(n, 1, "row %lld has %d pixels", (long long)y, n);
    }
    pg_canvas_free(&c);
    /* far outside on both ends: exactly the visible diagonal, quickly */
    cr_assert_eq(pg_canvas_init(&c, 30, 30), 0);
    pg_canvas_line(&c, -1e12, -1e12, 1e12, 1e12, 1, RED);
    for (int64_t i = 0; i < 30; i++)
        cr_assert(same(pg_canvas_get(&c, i, i), RED), "(%lld, %lld)", (long long)i, (long long)i);
    cr_assert_eq(count_color(&c, RED), 30);
    pg_canvas_line(&c, 100, 0, 200, 50, 8, RED); /* entirely outside */
    pg_canvas_line(&c, NAN, 0, 5, 5, 1, RED);    /* non-finite: nothing */
    pg_canvas_line(&c, 0, 5, INFINITY, 5, 1, RED);
    cr_assert_eq(count_color(&c, RED), 30);
    pg_canvas_free(&c);
}

/* ---- ticks ------------------------------------------------------------------------------- */

static void check_ticks(double lo, double hi, int max, bool integer, bool log, const char *want)
{
    double t[PG_PLOT_MAX_TICKS], step;
    char labels[PG_PLOT_MAX_TICKS][PG_PLOT_LABEL_LEN];
    int n = log ? pg_plot_log_ticks(lo, hi, max, t, &step) : pg_plot_ticks(lo, hi, max, integer, t, &step);
    pg_plot_tick_labels(t, n, step, labels);
    char got[512] = "";
    for (int i = 0; i < n; i++) {
        cr_assert(t[i] >= lo * (1 - 1e-12) - 1e-300 && t[i] <= hi * (1 + 1e-12) + 1e-300, "tick %g outside", t[i]);
        strcat(got, i ? " " : "");
        strcat(got, labels[i]);
    }
    cr_assert_str_eq(got, want, "[%g, %g] max %d%s%s: \"%s\", expected \"%s\"", lo, hi, max, integer ? " integer" : "",
                     log ? " log" : "", got, want);
}

Test(plot_ticks, nice_steps_and_labels)
{
    check_ticks(0, 1, 6, false, false, "0.0 0.2 0.4 0.6 0.8 1.0"); /* one number of decimals an axis */
    check_ticks(0, 1, 11, false, false, "0.0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0");
    check_ticks(0.37, 0.41, 6, false, false, "0.37 0.38 0.39 0.40 0.41");
    check_ticks(-3, 7, 6, false, false, "-2 0 2 4 6");
    check_ticks(0, 15, 32, true, false, "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15");
    check_ticks(0, 15, 8, true, false, "0 2 4 6 8 10 12 14");
    check_ticks(0, 3, 30, true, false, "0 1 2 3"); /* integer: never 0.5 */
    check_ticks(1e-5, 1, 6, false, false, "0.2 0.4 0.6 0.8 1.0");
    check_ticks(0, 2e-5, 5, false, false, "0 5e-6 1e-5 1.5e-5 2e-5");
    check_ticks(0, 3e6, 4, false, false, "0 1e6 2e6 3e6");
    check_ticks(0.001, 0.004, 4, false, false, "0.001 0.002 0.003 0.004");
    check_ticks(2, 2, 5, false, false, "2");
}

Test(plot_ticks, log_decades)
{
    check_ticks(1e-5, 1, 8, false, true, "1e-5 1e-4 1e-3 0.01 0.1 1");
    check_ticks(0.5, 2000, 8, false, true, "1 10 100 1000");
    check_ticks(1e-12, 1e12, 6, false, true, "1e-10 1e-5 1 1e5 1e10");
    /* under two powers of ten inside: 1-2-5 times them, else 1..9 times, else linear */
    check_ticks(32, 560, 8, false, true, "50 100 200 500");
    check_ticks(2, 8, 4, false, true, "2 5");
    check_ticks(2.5, 4.5, 4, false, true, "3 4");
    check_ticks(2.1, 2.9, 4, false, true, "2.2 2.4 2.6 2.8");
    double t[PG_PLOT_MAX_TICKS], step;
    cr_assert_eq(pg_plot_log_ticks(0, 1, 5, t, &step), 0);
    cr_assert_eq(pg_plot_ticks(NAN, 1, 5, false, t, &step), 0);
    cr_assert_eq(pg_plot_ticks(2, 1, 5, false, t, &step), 0);
}

/* ---- heatmaps ---------------------------------------------------------------------------- */

static pg_rgb cmap(double t)
{
    uint8_t c[3];
    pg_colormap(t, c);
    return (pg_rgb){c[0], c[1], c[2]};
}

/* Two 3 x 4 panels; panel 1's (1, 2) is NaN and (2, 3) is -DBL_MAX (masked). */
static pg_tensor *two_panels(void)
{
    double v[24];
    for (int i = 0; i < 24; i++)
        v[i] = 0.5 * i - 3;
    v[12 + 1 * 4 + 2] = NAN;
    v[12 + 2 * 4 + 3] = -DBL_MAX;
    return pg_tensor_from_array(NULL, PG_F64, 3, (const int64_t[]){2, 3, 4}, v);
}

Test(plot_heatmap, cells_are_the_colormap_of_the_shared_range)
{
    pg_tensor *t = two_panels();
    pg_canvas c;
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, NULL), 0, "%s", pg_last_error());
    for (int64_t p = 0; p < 2; p++) {
        pg_heatmap_geom g;
        cr_assert_eq(pg_plot_heatmap_geometry(&g, t, NULL, p), 0);
        cr_assert_eq(g.cell, 100); /* ceil(400 / 4) */
        cr_assert_eq(g.lo, -3);
        cr_assert_eq(g.hi, 0.5 * 22 - 3); /* the largest finite value, on panel 1 (23 is masked) */
        cr_assert_eq(c.width, g.width);
        for (int64_t r = 0; r < 3; r++)
            for (int64_t k = 0; k < 4; k++) {
                double v = pg_get(t, (p * 3 + r) * 4 + k);
                pg_rgb want = fabs(v) < PG_PNG_HUGE ? cmap((v - g.lo) / (g.hi - g.lo))
                                                    : (pg_rgb){PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY};
                pg_rgb got = pg_canvas_get(&c, g.x0 + k * g.cell + g.cell / 2, g.y0 + r * g.cell + g.cell / 2);
                cr_assert(same(got, want), "panel %lld cell (%lld, %lld): %d %d %d, expected %d %d %d", (long long)p,
                          (long long)r, (long long)k, got.r, got.g, got.b, want.r, want.g, want.b);
            }
        /* the colour bar: vmax on top, vmin at the bottom */
        int64_t bx = g.bar_x + 5;
        cr_assert(same(pg_canvas_get(&c, bx, g.bar_y), cmap(1 - 0.5 / (double)g.bar_h)));
        cr_assert(same(pg_canvas_get(&c, bx, g.bar_y + g.bar_h - 1), cmap(0.5 / (double)g.bar_h)));
    }
    cr_assert_geq(c.width, 2 * 400);
    pg_canvas_free(&c);
    pg_tensor_free(t);
}

/* The label of a panel is exactly pg_text_draw's text at its place. */
static void check_label(const pg_canvas *c, const pg_heatmap_geom *g, const char *label)
{
    pg_canvas ref;
    cr_assert_eq(pg_canvas_init(&ref, c->width, c->height), 0);
    pg_text_draw(&ref, g->label_x, g->label_y, label, 2, PG_PLOT_INK);
    int64_t w = pg_text_width(label, 2), h = pg_text_height(label, 2), ink = 0;
    for (int64_t y = g->label_y - 2; y < g->label_y + h; y++)
        for (int64_t x = g->label_x - 2; x < g->label_x + w + 2; x++) {
            cr_assert(same(pg_canvas_get(c, x, y), pg_canvas_get(&ref, x, y)), "label \"%s\" at (%lld, %lld)", label,
                      (long long)x, (long long)y);
            ink += same(pg_canvas_get(c, x, y), PG_PLOT_INK);
        }
    cr_assert_gt(ink, 20);
    pg_canvas_free(&ref);
}

Test(plot_heatmap, panel_labels_default_and_given)
{
    pg_tensor *t = two_panels();
    pg_canvas c;
    pg_heatmap_geom g;
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, NULL), 0);
    cr_assert_eq(pg_plot_heatmap_geometry(&g, t, NULL, 1), 0);
    check_label(&c, &g, "head 1");
    pg_canvas_free(&c);
    const char *labels[2] = {"layer 0 head 0", "ALiBi slope 1/4"};
    pg_heatmap_opts o = {.panel_labels = labels, .title = "bias", .min_panel_px = 200, .panels_per_row = 1};
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, &o), 0);
    for (int64_t p = 0; p < 2; p++) {
        cr_assert_eq(pg_plot_heatmap_geometry(&g, t, &o, p), 0);
        cr_assert_eq(g.cell, 50);
        check_label(&c, &g, labels[p]);
    }
    cr_assert_gt(c.height, 2 * 3 * 50); /* one panel a row: stacked */
    pg_canvas_free(&c);
    pg_tensor_free(t);
}

Test(plot_heatmap, masked_legend_and_diagonals)
{
    pg_tensor *t = two_panels();
    pg_canvas c;
    const double diag[1] = {1};
    pg_heatmap_opts o = {.diagonals = diag, .n_diagonals = 1, .vmin = -1, .vmax = 1};
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, &o), 0);
    pg_heatmap_geom g;
    cr_assert_eq(pg_plot_heatmap_geometry(&g, t, &o, 0), 0);
    cr_assert_eq(g.lo, -1);
    cr_assert_eq(g.hi, 1);
    /* the masked swatch under the colour bar: 18 x 18 pixels of gray */
    pg_rgb gray = {PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY};
    cr_assert(same(pg_canvas_get(&c, g.bar_x + 5, g.bar_y + g.bar_h + 12 + 5), gray));
    /* the diagonal i - j = 1 passes through the centres of cells (1, 0) and (2, 1) */
    pg_rgb d = pg_canvas_get(&c, g.x0 + g.cell / 2, g.y0 + g.cell + g.cell / 2);
    pg_rgb d2 = pg_canvas_get(&c, g.x0 + g.cell + g.cell / 2, g.y0 + 2 * g.cell + g.cell / 2);
    cr_assert(same(d, d2) && d.r > 200 && d.g < 80, "diagonal colour %d %d %d", d.r, d.g, d.b);
    pg_canvas_free(&c);
    pg_tensor_free(t);
}

Test(plot_heatmap, small_maps_are_upscaled_and_large_ones_fit)
{
    pg_tensor *t = pg_tensor_full(NULL, PG_F32, 2, (const int64_t[]){1, 3}, 2.0);
    pg_heatmap_geom g;
    cr_assert_eq(pg_plot_heatmap_geometry(&g, t, NULL, 0), 0);
    cr_assert_eq(g.cell, 134); /* ceil(400 / 3) */
    pg_canvas c;
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, NULL), 0);
    cr_assert(same(pg_canvas_get(&c, g.x0 + 60, g.y0 + 60), cmap(0.5))); /* constant: the middle colour */
    pg_canvas_free(&c);
    pg_tensor_free(t);
    /* 4000 columns: 1 pixel a cell still fits */
    t = pg_tensor_full(NULL, PG_F32, 2, (const int64_t[]){2, 4000}, 1.0);
    cr_assert_eq(pg_plot_heatmap_geometry(&g, t, NULL, 0), 0);
    cr_assert_eq(g.cell, 1);
    pg_tensor_free(t);
    /* 20000 columns cannot fit PG_PNG_MAX_SIDE */
    t = pg_tensor_full(NULL, PG_F32, 2, (const int64_t[]){1, 20000}, 1.0);
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, NULL), -1);
    cr_assert(strstr(pg_last_error(), "f32[1,20000]"), "%s", pg_last_error());
    cr_assert_null(c.rgb);
    pg_tensor_free(t);
}

Test(plot_heatmap, bad_input)
{
    pg_canvas c;
    pg_tensor *t = two_panels();
    cr_assert_eq(pg_plot_heatmaps_canvas(NULL, t, NULL), -1);
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, NULL, NULL), -1);
    cr_assert(strstr(pg_last_error(), "maps is NULL"));
    cr_assert_eq(pg_plot_heatmaps(NULL, t, NULL), -1);
    pg_tensor *i64 = pg_tensor_full(NULL, PG_I64, 2, (const int64_t[]){2, 2}, 1);
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, i64, NULL), -1);
    cr_assert(strstr(pg_last_error(), "i64[2,2]"), "%s", pg_last_error());
    pg_tensor *d1 = pg_tensor_full(NULL, PG_F64, 1, (const int64_t[]){5}, 1);
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, d1, NULL), -1);
    cr_assert(strstr(pg_last_error(), "f64[5]") && strstr(pg_last_error(), "pg_plot_heatmaps"), "%s",
              pg_last_error());
    pg_heatmap_opts o = {.vmin = 2, .vmax = 1};
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, &o), -1);
    cr_assert(strstr(pg_last_error(), "vmin 2, vmax 1"), "%s", pg_last_error());
    o = (pg_heatmap_opts){.n_diagonals = 2};
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, &o), -1);
    o = (pg_heatmap_opts){.min_panel_px = -1};
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, &o), -1);
    pg_tensor_free(t);
    pg_tensor_free(i64);
    pg_tensor_free(d1);
}

/* ---- line plots -------------------------------------------------------------------------- */

Test(plot_lines, series_pass_through_their_mapped_points)
{
    const double x[5] = {0, 1, 2, 3, 4}, y[5] = {1, 3, 2, 5, 4}, y2[5] = {4, 4.5, 3, 1, 0.5};
    pg_series s[2] = {{.label = "a", .x = x, .y = y, .n = 5, .color = -1},
                      {.label = "b", .y = y2, .n = 5, .style = PG_PLOT_STYLE_POINTS, .color = 3}};
    pg_lineplot_opts o = {.title = "t", .xlabel = "x", .ylabel = "y"};
    pg_canvas c;
    pg_lineplot_geom g;
    cr_assert_eq(pg_plot_lines_canvas(&c, s, 2, &o), 0, "%s", pg_last_error());
    cr_assert_eq(pg_plot_lines_geometry(&g, s, 2, &o), 0);
    cr_assert_eq(c.width, 640);
    cr_assert_eq(c.height, 420);
    for (int i = 0; i < 5; i++) {
        double px, py;
        pg_plot_lines_map(&g, x[i], y[i], &px, &py);
        cr_assert(px > g.px0 && px < g.px1 && py > g.py0 && py < g.py1);
        bool in_legend = px >= g.leg_x && px < g.leg_x + g.leg_w && py >= g.leg_y && py < g.leg_y + g.leg_h;
        cr_assert(!in_legend, "point %d under the legend", i);
        cr_assert(same(pg_canvas_get(&c, lround(px), lround(py)), pg_plot_color(0)), "series a, point %d", i);
        pg_plot_lines_map(&g, x[i], y2[i], &px, &py); /* x NULL: 0, 1, ...; a 5 x 5 square per point */
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++)
                if (abs(dx) + abs(dy) > 1 || i != 1) /* (1, 4.5) and (1, 3) are 1.5 apart: keep off a's line */
                    continue;
                else
                    cr_assert(same(pg_canvas_get(&c, lround(px) + dx, lround(py) + dy), pg_plot_color(3)));
    }
    /* the frame's corners are dark gray */
    cr_assert(same(pg_canvas_get(&c, g.px0 - 1, g.py1 + 1), PG_PLOT_INK));
    pg_canvas_free(&c);
}

Test(plot_lines, log_y_maps_decades_evenly_and_skips_nonpositive)
{
    const double y[6] = {1e-3, 1e-2, 0.1, 1, 0, -4};
    pg_series s = {.label = "loss", .y = y, .n = 6, .color = -1};
    pg_lineplot_opts o = {.log_y = true};
    pg_lineplot_geom g;
    cr_assert_eq(pg_plot_lines_geometry(&g, &s, 1, &o), 0, "%s", pg_last_error());
    double px[4], py[4];
    for (int i = 0; i < 4; i++)
        pg_plot_lines_map(&g, i, y[i], &px[i], &py[i]);
    for (int i = 1; i < 3; i++)
        cr_assert(fabs((py[i] - py[i + 1]) - (py[0] - py[1])) < 1e-9, "decade %d is not as tall as the first", i);
    cr_assert_gt(py[0] - py[1], 50);
    pg_canvas c;
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 1, &o), 0);
    cr_assert(same(pg_canvas_get(&c, lround(px[2]), lround(py[2])), pg_plot_color(0)));
    pg_canvas_free(&c);
}

Test(plot_lines, legend_is_drawn_and_avoids_the_data)
{
    /* one series along the top, an unlabelled one in the lower left: the free corner is the lower right */
    double x[40], y[40], low[10];
    for (int i = 0; i < 40; i++) {
        x[i] = i;
        y[i] = 10;
    }
    for (int i = 0; i < 10; i++)
        low[i] = 0;
    pg_series s2[2] = {{.label = "validation loss", .x = x, .y = y, .n = 40, .color = -1},
                       {.x = x, .y = low, .n = 10, .color = -1}};
    pg_series s = s2[0];
    pg_lineplot_geom g;
    cr_assert_eq(pg_plot_lines_geometry(&g, s2, 2, NULL), 0);
    cr_assert(!g.legend_outside);
    cr_assert_gt(g.leg_x, (g.px0 + g.px1) / 2, "legend at x %lld", (long long)g.leg_x);
    cr_assert_gt(g.leg_y, (g.py0 + g.py1) / 2, "legend at y %lld", (long long)g.leg_y);
    pg_canvas c, ref;
    cr_assert_eq(pg_plot_lines_canvas(&c, s2, 2, NULL), 0);
    cr_assert_eq(pg_canvas_init(&ref, c.width, c.height), 0);
    pg_text_draw(&ref, g.leg_text_x, g.leg_text_y, "validation loss", 1, PG_PLOT_INK);
    int64_t w = pg_text_width("validation loss", 1);
    for (int64_t y0 = g.leg_text_y; y0 < g.leg_text_y + PG_FONT_CELL_H; y0++)
        for (int64_t x0 = g.leg_text_x; x0 < g.leg_text_x + w; x0++)
            cr_assert(same(pg_canvas_get(&c, x0, y0), pg_canvas_get(&ref, x0, y0)), "legend text at (%lld, %lld)",
                      (long long)x0, (long long)y0);
    pg_canvas_free(&ref);
    pg_canvas_free(&c);
    /* data everywhere: the legend goes outside, right of the plot */
    for (int i = 0; i < 40; i++)
        y[i] = i % 2 ? 10 : 0; /* a zigzag over the whole plot */
    cr_assert_eq(pg_plot_lines_geometry(&g, &s, 1, NULL), 0);
    cr_assert(g.legend_outside);
    cr_assert_gt(g.leg_x, g.px1);
}

Test(plot_lines, bad_input)
{
    const double y[3] = {1, 2, 3}, nan3[3] = {NAN, NAN, INFINITY};
    pg_series s = {.label = "s", .y = y, .n = 3};
    pg_canvas c;
    cr_assert_eq(pg_plot_lines_canvas(NULL, &s, 1, NULL), -1);
    cr_assert_eq(pg_plot_lines_canvas(&c, NULL, 1, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_plot_lines: series is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_plot_lines(NULL, &s, 1, NULL), -1);
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 0, NULL), -1);
    cr_assert(strstr(pg_last_error(), "n_series 0"), "%s", pg_last_error());
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 65, NULL), -1);
    pg_series bad[2] = {s, {.label = "val", .y = NULL, .n = 4}};
    cr_assert_eq(pg_plot_lines_canvas(&c, bad, 2, NULL), -1);
    cr_assert(strstr(pg_last_error(), "series 1 (\"val\", n 4): y is NULL"), "%s", pg_last_error());
    bad[1] = (pg_series){.label = "diverged", .y = nan3, .n = 3};
    cr_assert_eq(pg_plot_lines_canvas(&c, bad, 2, NULL), -1);
    cr_assert(strstr(pg_last_error(), "series 1 (\"diverged\") has no finite point"), "%s", pg_last_error());
    bad[1] = (pg_series){.label = "neg", .y = (const double[]){-1, 0}, .n = 2};
    cr_assert_eq(pg_plot_lines_canvas(&c, bad, 2, &(pg_lineplot_opts){.log_y = true}), -1);
    cr_assert(strstr(pg_last_error(), "log axis"), "%s", pg_last_error());
    bad[1] = (pg_series){.n = -1};
    cr_assert_eq(pg_plot_lines_canvas(&c, bad, 2, NULL), -1);
    pg_series empty = {.label = "later", .n = 0};
    cr_assert_eq(pg_plot_lines_canvas(&c, &empty, 1, NULL), -1);
    cr_assert(strstr(pg_last_error(), "none of the 1 series has a point"), "%s", pg_last_error());
    pg_lineplot_opts o = {.width = 100000};
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 1, &o), -1);
    cr_assert(strstr(pg_last_error(), "100000 x 420"), "%s", pg_last_error());
    o = (pg_lineplot_opts){.ymin = 3, .ymax = 1};
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 1, &o), -1);
    o = (pg_lineplot_opts){.log_x = true, .xmin = 0, .xmax = 10};
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 1, &o), -1);
    o = (pg_lineplot_opts){.n_marks = 1};
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 1, &o), -1);
    cr_assert_null(c.rgb);
    /* a series with no points beside one with points: a legend entry only */
    pg_series two[2] = {s, empty};
    cr_assert_eq(pg_plot_lines_canvas(&c, two, 2, NULL), 0, "%s", pg_last_error());
    pg_canvas_free(&c);
}

/* ---- the files: written, read back with pg_png_read, every pixel compared ------------------ */

static void check_file_matches(const pg_canvas *c, const char *path)
{
    int64_t w = 0, h = 0;
    int ch = 0;
    uint8_t *px = NULL;
    cr_assert_eq(pg_png_read(path, &w, &h, &ch, &px), 0, "%s: %s", path, pg_last_error());
    cr_assert_eq(w, c->width);
    cr_assert_eq(h, c->height);
    cr_assert_eq(ch, 3);
    for (int64_t i = 0; i < w * h * 3; i++)
        cr_assert_eq(px[i], c->rgb[i], "%s: byte %lld (pixel %lld, %lld) is %d, the canvas has %d", path,
                     (long long)i, (long long)(i / 3 % w), (long long)(i / 3 / w), px[i], c->rgb[i]);
    free(px);
    remove(path);
}

Test(plot_files, heatmap_line_and_scatter_figures_read_back_pixel_for_pixel)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/pg_test_plot_%d.png", (int)getpid());
    pg_canvas c;
    /* a heatmap with masked cells and a title */
    pg_tensor *t = two_panels();
    pg_heatmap_opts ho = {.title = "two heads", .value_label = "bias"};
    cr_assert_eq(pg_plot_heatmaps(path, t, &ho), 0, "%s", pg_last_error());
    cr_assert_eq(pg_plot_heatmaps_canvas(&c, t, &ho), 0);
    check_file_matches(&c, path);
    pg_canvas_free(&c);
    pg_tensor_free(t);
    /* a line plot on a log axis with a mark, and a scatter plot with the identity line */
    const double y[4] = {3, 1, 0.2, 0.05}, a[4] = {-1, 0, 1, 2}, b[4] = {-1.1, 0.05, 0.9, 2.1};
    pg_series s = {.label = "loss", .y = y, .n = 4, .style = PG_PLOT_STYLE_LINE_POINTS, .color = -1};
    pg_plot_mark m = {.x = 2, .label = "L"};
    pg_lineplot_opts lo = {.title = "loss", .xlabel = "step", .ylabel = "nats", .log_y = true, .marks = &m,
                           .n_marks = 1};
    cr_assert_eq(pg_plot_lines(path, &s, 1, &lo), 0, "%s", pg_last_error());
    cr_assert_eq(pg_plot_lines_canvas(&c, &s, 1, &lo), 0);
    check_file_matches(&c, path);
    pg_canvas_free(&c);
    pg_series sc = {.label = "grad", .x = a, .y = b, .n = 4, .style = PG_PLOT_STYLE_POINTS, .color = -1};
    pg_lineplot_opts so = {.identity_line = true, .width = 300, .height = 300};
    cr_assert_eq(pg_plot_lines(path, &sc, 1, &so), 0, "%s", pg_last_error());
    cr_assert_eq(pg_plot_lines_canvas(&c, &sc, 1, &so), 0);
    check_file_matches(&c, path);
    /* and a bare canvas */
    pg_text_draw(&c, 3, 3, "canvas", 2, PG_PLOT_INK);
    cr_assert_eq(pg_canvas_write_png(&c, path), 0);
    check_file_matches(&c, path);
    pg_canvas_free(&c);
}
