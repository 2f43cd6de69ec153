/* plot.h's labelled heatmaps: one panel per head (query position i down, key
 * position j across, integer ticks), a shared colour bar with its numeric
 * range, the masked cells in PG_PNG_NAN_GRAY named by a legend, marked
 * diagonals. Colours come from png.h's pg_colormap, under the same masking
 * rule as pg_png_heatmap (NaN, +-inf and |v| >= PG_PNG_HUGE). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"
#include "plot_impl.h"
#include "png.h"

#define FN "pg_plot_heatmaps"
#define PAD 12
#define TICK 4
#define BAR_W 22
#define MAX_PANELS 256
#define DIAG_COLOR ((pg_rgb){255, 40, 40})

/* The figure's geometry, in pixels. */
typedef struct hm_layout {
    int64_t panels, rows, cols, cell, per_row, grid_rows;
    int ts;                     /* scale of tick labels and axis labels */
    int64_t pw, ph;             /* one panel's cells */
    int64_t gutter, block_w, block_h, label_h, top, left;
    int64_t bar_x, bar_y, bar_h, bar_area_w;
    int64_t width, height;
} hm_layout;

typedef struct hm_data {
    const pg_tensor *t;
    double lo, hi; /* colour range */
    bool any_masked;
} hm_data;

static double hm_value(const pg_tensor *t, int64_t i)
{
    return t->dtype == PG_F32 ? (double)((const float *)t->data)[i] : ((const double *)t->data)[i];
}

static bool drawable(double v)
{
    return fabs(v) < PG_PNG_HUGE; /* false for NaN too: the rule of pg_png_heatmap */
}

/* ---- checks --------------------------------------------------------------------------------- */

static int hm_check(const pg_canvas *out, const pg_tensor *maps, const pg_heatmap_opts *o)
{
    if (!out || !maps) {
        pg_set_error(FN ": %s is NULL", !out ? "out" : "maps");
        return -1;
    }
    if ((maps->ndim != 2 && maps->ndim != 3) || (maps->dtype != PG_F32 && maps->dtype != PG_F64) || !maps->data ||
        maps->numel < 1) {
        pg_set_error(FN ": maps must be a non-empty f32/f64 (rows, cols) or (panels, rows, cols) tensor, got %s",
                     PG_SHAPE_STR(maps));
        return -1;
    }
    if (maps->ndim == 3 && maps->shape[0] > MAX_PANELS) {
        pg_set_error(FN ": maps %s has more than %d panels", PG_SHAPE_STR(maps), MAX_PANELS);
        return -1;
    }
    if (isnan(o->vmin) || isnan(o->vmax) || o->vmin > o->vmax) {
        pg_set_error(FN ": bad colour range vmin %g, vmax %g (need vmin <= vmax, or equal for the data's range)",
                     o->vmin, o->vmax);
        return -1;
    }
    if (o->min_panel_px < 0 || o->min_panel_px > PG_PNG_MAX_SIDE || o->panels_per_row < 0 || o->n_diagonals < 0 ||
        (o->n_diagonals > 0 && !o->diagonals)) {
        pg_set_error(FN ": bad options: min_panel_px %lld (0..%d), panels_per_row %d (>= 0), n_diagonals %d with "
                     "diagonals %s",
                     (long long)o->min_panel_px, PG_PNG_MAX_SIDE, o->panels_per_row, o->n_diagonals,
                     o->diagonals ? "set" : "NULL");
        return -1;
    }
    return 0;
}

/* ---- layout --------------------------------------------------------------------------------- */

static const char *panel_label(const pg_heatmap_opts *o, int64_t p, char *buf, size_t n)
{
    if (o->panel_labels && o->panel_labels[p])
        return o->panel_labels[p];
    snprintf(buf, n, "head %lld", (long long)p);
    return buf;
}

static const char *xlabel_of(const pg_heatmap_opts *o)
{
    return o->xlabel ? o->xlabel : "key position j";
}

static const char *ylabel_of(const pg_heatmap_opts *o)
{
    return o->ylabel ? o->ylabel : "query position i";
}

/* An end of the colour bar: 3 significant digits, and 0 for rounding noise
 * (|v| below 1e-6 of the range, such as a probability of 4.9e-17). */
static void bar_number(char *buf, size_t n, double v, const hm_data *d)
{
    double span = d->hi - d->lo;
    pg_plot_number(buf, n, isfinite(span) && span > 0 && fabs(v) < 1e-6 * span ? 0.0 : v);
}

/* The colour bar's inner ticks for a bar h pixels tall; their count. */
static int bar_ticks(const hm_data *d, int64_t h, double *ticks, char labels[][PG_PLOT_LABEL_LEN])
{
    double step;
    int n = d->hi > d->lo ? pg_plot_ticks(d->lo, d->hi, (int)(h / 40 + 1), false, ticks, &step) : 0;
    pg_plot_tick_labels(ticks, n, step, labels);
    return n;
}

/* The widest label beside a colour bar h pixels tall. */
static int64_t bar_label_w(const hm_data *d, int64_t h, int ts)
{
    char a[32], b[32];
    bar_number(a, sizeof a, d->lo, d);
    bar_number(b, sizeof b, d->hi, d);
    int64_t w = pg_text_width(a, ts), wb = pg_text_width(b, ts);
    w = w > wb ? w : wb;
    double ticks[PG_PLOT_MAX_TICKS];
    char labels[PG_PLOT_MAX_TICKS][PG_PLOT_LABEL_LEN];
    int n = bar_ticks(d, h, ticks, labels);
    for (int k = 0; k < n; k++) {
        int64_t t = pg_text_width(labels[k], ts);
        w = t > w ? t : w;
    }
    return w;
}

/* Width of the legend lines under the colour bar. */
static int64_t legend_w(const pg_heatmap_opts *o, const hm_data *d, int ts)
{
    int64_t w = 0, sw = PG_FONT_CELL_H * ts + 6;
    if (d->any_masked)
        w = sw + pg_text_width(o->masked_label ? o->masked_label : "masked", ts);
    if (o->n_diagonals > 0) {
        int64_t wd = sw + pg_text_width("i - j = ", ts) + o->n_diagonals * 8 * PG_FONT_CELL_W * ts;
        w = wd > w ? wd : w;
    }
    return w;
}

static void layout_for_cell(hm_layout *L, const pg_heatmap_opts *o, const hm_data *d)
{
    int ls = 2, ts = L->ts;
    L->pw = L->cols * L->cell;
    L->ph = L->rows * L->cell;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)(L->rows - 1));
    L->gutter = pg_text_width(buf, ts) + TICK + 6;
    L->label_h = PG_FONT_CELL_H * ls + 8;
    L->block_w = L->gutter + L->pw + 2 * PAD;
    L->block_h = L->label_h + L->ph + TICK + 4 + PG_FONT_CELL_H * ts + 6 + PG_FONT_CELL_H * ts + PAD;
    L->top = PAD + (o->title ? pg_text_height(o->title, 2) + 8 : 0);
    L->left = PAD + PG_FONT_CELL_H * ts + 8;
    L->bar_x = L->left + L->per_row * L->block_w + 8;
    L->bar_y = L->top + L->label_h;
    L->bar_h = L->ph > 160 ? L->ph : 160;
    int64_t bar_w = BAR_W + TICK + 4 + bar_label_w(d, L->bar_h, ts) + (o->value_label ? PG_FONT_CELL_H * ts + 12 : 0);
    int64_t leg = legend_w(o, d, ts);
    L->bar_area_w = (bar_w > leg ? bar_w : leg) + PAD;
    L->width = L->bar_x + L->bar_area_w;
    int64_t legend_h = 2 * (PG_FONT_CELL_H * ts + 8) + 8;
    int64_t h_grid = L->top + L->grid_rows * L->block_h, h_bar = L->bar_y + L->bar_h + legend_h + PAD;
    L->height = h_grid > h_bar ? h_grid : h_bar;
    int64_t tw = o->title ? pg_text_width(o->title, 2) + 2 * PAD : 0;
    L->width = L->width > tw ? L->width : tw;
}

/* The largest cell up to ceil(min_panel_px / cols) whose figure fits PG_PNG_MAX_SIDE. */
static int hm_layout_init(hm_layout *L, const pg_tensor *maps, const pg_heatmap_opts *o, const hm_data *d)
{
    memset(L, 0, sizeof *L);
    L->panels = maps->ndim == 3 ? maps->shape[0] : 1;
    L->rows = maps->shape[maps->ndim - 2];
    L->cols = maps->shape[maps->ndim - 1];
    int64_t per = o->panels_per_row > 0 ? o->panels_per_row : 4;
    L->per_row = per < L->panels ? per : L->panels;
    L->grid_rows = (L->panels + L->per_row - 1) / L->per_row;
    int64_t min_px = o->min_panel_px > 0 ? o->min_panel_px : 400;
    L->ts = min_px >= 300 ? 2 : 1;
    int64_t cell = (min_px + L->cols - 1) / L->cols;
    /* each panel is at most MAX_SIDE wide and tall, so cells beyond that never fit */
    int64_t cap = PG_PNG_MAX_SIDE / (L->cols > L->rows ? L->cols : L->rows);
    for (L->cell = cell < cap ? cell : cap; L->cell >= 1; L->cell--) {
        layout_for_cell(L, o, d);
        if (L->width <= PG_PNG_MAX_SIDE && L->height <= PG_PNG_MAX_SIDE)
            return 0;
    }
    pg_set_error(FN ": maps %s with %lld panels a row do not fit in %d x %d pixels even at 1 pixel a cell",
                 PG_SHAPE_STR(maps), (long long)L->per_row, PG_PNG_MAX_SIDE, PG_PNG_MAX_SIDE);
    return -1;
}

/* ---- drawing -------------------------------------------------------------------------------- */

static pg_rgb value_rgb(double v, double lo, double hi)
{
    uint8_t c[3];
    if (!drawable(v))
        return (pg_rgb){PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY};
    /* halves first: hi - lo may overflow for a range like [-DBL_MAX, DBL_MAX] */
    pg_colormap(hi > lo ? (0.5 * v - 0.5 * lo) / (0.5 * hi - 0.5 * lo) : 0.5, c);
    return (pg_rgb){c[0], c[1], c[2]};
}

/* Integer ticks at cell centres along one side of a panel. */
static void panel_ticks(pg_canvas *c, const hm_layout *L, int64_t x0, int64_t y0, bool across)
{
    int64_t n_cells = across ? L->cols : L->rows, len = across ? L->pw : L->ph;
    char buf[32];
    /* the same spacing on both axes: room for the longer of the two last labels */
    snprintf(buf, sizeof buf, "%lld", (long long)((L->rows > L->cols ? L->rows : L->cols) - 1));
    int64_t room = pg_text_width(buf, L->ts) + 14, tall = PG_FONT_CELL_H * L->ts + 8;
    room = room > tall ? room : tall;
    double ticks[PG_PLOT_MAX_TICKS], step;
    int64_t max_ticks = len / room + 1;
    int n = pg_plot_ticks(0, (double)(n_cells - 1), (int)(max_ticks < 2 ? 2 : max_ticks), true, ticks, &step);
    for (int k = 0; k < n; k++) {
        int64_t i = (int64_t)llround(ticks[k]), at = i * L->cell + L->cell / 2;
        snprintf(buf, sizeof buf, "%lld", (long long)i);
        if (across) {
            pg_canvas_fill_rect(c, x0 + at, y0 + L->ph, 1, TICK, PG_PLOT_INK);
            pg_text_center(c, x0 + at + 1, y0 + L->ph + TICK + 4, buf, L->ts, PG_PLOT_INK);
        } else {
            pg_canvas_fill_rect(c, x0 - TICK, y0 + at, TICK, 1, PG_PLOT_INK);
            int64_t w = pg_text_width(buf, L->ts);
            pg_text_draw(c, x0 - TICK - 3 - w, y0 + at - (PG_FONT_GLYPH_H * L->ts) / 2, buf, L->ts, PG_PLOT_INK);
        }
    }
}

/* The cells where row - col = d, joined through their centres. */
static void panel_diagonal(pg_canvas *c, const hm_layout *L, int64_t x0, int64_t y0, double d)
{
    if (!isfinite(d))
        return;
    double c0 = fmax(0.0, -d), c1 = fmin((double)L->cols - 1, (double)L->rows - 1 - d);
    if (c0 > c1)
        return;
    double ax = x0 + (c0 + 0.5) * L->cell, ay = y0 + (c0 + d + 0.5) * L->cell;
    double bx = x0 + (c1 + 0.5) * L->cell, by = y0 + (c1 + d + 0.5) * L->cell;
    pg_canvas_line(c, ax - 0.5, ay - 0.5, bx - 0.5, by - 0.5, L->cell >= 12 ? 2 : 1, DIAG_COLOR);
}

/* The top-left pixel of panel p's first cell. */
static void panel_origin(const hm_layout *L, int64_t p, int64_t *x0, int64_t *y0)
{
    *x0 = L->left + (p % L->per_row) * L->block_w + L->gutter;
    *y0 = L->top + (p / L->per_row) * L->block_h + L->label_h;
}

static void draw_panel(pg_canvas *c, const hm_layout *L, const pg_heatmap_opts *o, const hm_data *d, int64_t p)
{
    int64_t x0, y0;
    panel_origin(L, p, &x0, &y0);
    char buf[32];
    pg_text_center(c, x0 + L->pw / 2, y0 - L->label_h + 2, panel_label(o, p, buf, sizeof buf), 2, PG_PLOT_INK);
    const int64_t base = p * L->rows * L->cols;
    for (int64_t r = 0; r < L->rows; r++)
        for (int64_t k = 0; k < L->cols; k++)
            pg_canvas_fill_rect(c, x0 + k * L->cell, y0 + r * L->cell, L->cell, L->cell,
                                value_rgb(hm_value(d->t, base + r * L->cols + k), d->lo, d->hi));
    for (int i = 0; i < o->n_diagonals; i++)
        panel_diagonal(c, L, x0, y0, o->diagonals[i]);
    /* a frame just outside the cells, ticks, the x label under the tick labels */
    pg_canvas_fill_rect(c, x0 - 1, y0 - 1, L->pw + 2, 1, PG_PLOT_INK);
    pg_canvas_fill_rect(c, x0 - 1, y0 + L->ph, L->pw + 2, 1, PG_PLOT_INK);
    pg_canvas_fill_rect(c, x0 - 1, y0 - 1, 1, L->ph + 2, PG_PLOT_INK);
    pg_canvas_fill_rect(c, x0 + L->pw, y0 - 1, 1, L->ph + 2, PG_PLOT_INK);
    panel_ticks(c, L, x0, y0, true);
    panel_ticks(c, L, x0, y0, false);
    int64_t ty = y0 + L->ph + TICK + 4 + PG_FONT_CELL_H * L->ts + 4;
    pg_text_center(c, x0 + L->pw / 2, ty, xlabel_of(o), L->ts, PG_PLOT_INK);
}

/* A tick and its label on the colour bar's right side, at row y. */
static void bar_tick(pg_canvas *c, const hm_layout *L, int64_t y, const char *label)
{
    int64_t x = L->bar_x + BAR_W;
    pg_canvas_fill_rect(c, x, y, TICK, 1, PG_PLOT_INK);
    pg_text_draw(c, x + TICK + 3, y - (PG_FONT_GLYPH_H * L->ts) / 2, label, L->ts, PG_PLOT_INK);
}

static void draw_bar(pg_canvas *c, const hm_layout *L, const pg_heatmap_opts *o, const hm_data *d)
{
    int64_t h = L->bar_h, x = L->bar_x, y0 = L->bar_y;
    for (int64_t y = 0; y < h; y++) { /* top: hi, bottom: lo */
        uint8_t rgb[3];
        pg_colormap(d->hi > d->lo ? 1.0 - (y + 0.5) / (double)h : 0.5, rgb);
        pg_canvas_fill_rect(c, x, y0 + y, BAR_W, 1, (pg_rgb){rgb[0], rgb[1], rgb[2]});
    }
    pg_canvas_fill_rect(c, x - 1, y0 - 1, BAR_W + 2, 1, PG_PLOT_INK);
    pg_canvas_fill_rect(c, x - 1, y0 + h, BAR_W + 2, 1, PG_PLOT_INK);
    pg_canvas_fill_rect(c, x - 1, y0 - 1, 1, h + 2, PG_PLOT_INK);
    pg_canvas_fill_rect(c, x + BAR_W, y0 - 1, 1, h + 2, PG_PLOT_INK);
    char buf[32];
    if (!(d->hi > d->lo)) {
        pg_plot_number(buf, sizeof buf, d->lo);
        bar_tick(c, L, y0 + h / 2, buf);
    } else {
        bar_number(buf, sizeof buf, d->hi, d);
        bar_tick(c, L, y0, buf);
        bar_number(buf, sizeof buf, d->lo, d);
        bar_tick(c, L, y0 + h - 1, buf);
        /* nice ticks between, clear of the two ends' labels */
        double ticks[PG_PLOT_MAX_TICKS];
        char labels[PG_PLOT_MAX_TICKS][PG_PLOT_LABEL_LEN];
        int n = bar_ticks(d, h, ticks, labels);
        int64_t clear = PG_FONT_CELL_H * L->ts + 2;
        for (int k = 0; k < n; k++) {
            int64_t y = y0 + (int64_t)llround((d->hi - ticks[k]) / (d->hi - d->lo) * (double)(h - 1));
            if (y - y0 >= clear && y0 + h - 1 - y >= clear)
                bar_tick(c, L, y, labels[k]);
        }
    }
    if (o->value_label) {
        int64_t lx = x + BAR_W + TICK + 4 + bar_label_w(d, h, L->ts) + 10;
        int64_t tw = pg_text_width(o->value_label, L->ts);
        pg_text_draw_up(c, lx, y0 + h / 2 - tw / 2, o->value_label, L->ts, PG_PLOT_INK);
    }
}

/* Under the bar: the masked colour and the marked diagonals, when there are any. */
static void draw_legend(pg_canvas *c, const hm_layout *L, const pg_heatmap_opts *o, const hm_data *d)
{
    int64_t sw = PG_FONT_CELL_H * L->ts, x = L->bar_x, y = L->bar_y + L->bar_h + 12;
    if (d->any_masked) {
        pg_canvas_fill_rect(c, x - 1, y - 1, sw + 2, sw + 2, PG_PLOT_INK);
        pg_canvas_fill_rect(c, x, y, sw, sw, (pg_rgb){PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY, PG_PNG_NAN_GRAY});
        pg_text_draw(c, x + sw + 6, y + 1, o->masked_label ? o->masked_label : "masked", L->ts, PG_PLOT_INK);
        y += sw + 8;
    }
    if (o->n_diagonals > 0) {
        char text[256] = "i - j = ";
        for (int i = 0; i < o->n_diagonals && strlen(text) < sizeof text - 24; i++) {
            char num[24];
            snprintf(num, sizeof num, i ? ", %g" : "%g", o->diagonals[i]);
            strcat(text, num);
        }
        pg_canvas_line(c, x, y + sw / 2, x + sw - 1, y + sw / 2, 2, DIAG_COLOR);
        pg_text_draw(c, x + sw + 6, y + 1, text, L->ts, PG_PLOT_INK);
    }
}

static void hm_range(hm_data *d, const pg_heatmap_opts *o)
{
    bool any = false;
    d->lo = d->hi = 0;
    d->any_masked = false;
    for (int64_t i = 0; i < d->t->numel; i++) {
        double v = hm_value(d->t, i);
        if (!drawable(v)) {
            d->any_masked = true;
            continue;
        }
        d->lo = !any || v < d->lo ? v : d->lo;
        d->hi = !any || v > d->hi ? v : d->hi;
        any = true;
    }
    if (o->vmin != o->vmax) {
        d->lo = o->vmin;
        d->hi = o->vmax;
    }
}

/* Checks, the colour range and the layout (no pixels yet). 0 or -1. */
static int hm_prepare(hm_layout *L, hm_data *d, pg_heatmap_opts *o, const void *out, const pg_tensor *maps,
                      const pg_heatmap_opts *opts)
{
    *o = opts ? *opts : (pg_heatmap_opts){0};
    if (hm_check(out, maps, o))
        return -1;
    *d = (hm_data){.t = maps};
    hm_range(d, o);
    return hm_layout_init(L, maps, o, d);
}

int pg_plot_heatmaps_canvas(pg_canvas *out, const pg_tensor *maps, const pg_heatmap_opts *opts)
{
    if (out) {
        out->rgb = NULL;
        out->width = out->height = 0;
    }
    pg_heatmap_opts o;
    hm_data d;
    hm_layout L;
    if (hm_prepare(&L, &d, &o, out, maps, opts) || pg_canvas_init(out, L.width, L.height))
        return -1;
    if (o.title)
        pg_text_center(out, L.width / 2, PAD, o.title, 2, PG_PLOT_INK);
    for (int64_t p = 0; p < L.panels; p++)
        draw_panel(out, &L, &o, &d, p);
    const char *yl = ylabel_of(&o);
    for (int64_t gy = 0; gy < L.grid_rows; gy++) {
        int64_t tw = pg_text_width(yl, L.ts), mid = L.top + gy * L.block_h + L.label_h + L.ph / 2;
        pg_text_draw_up(out, PAD, mid - tw / 2, yl, L.ts, PG_PLOT_INK);
    }
    draw_bar(out, &L, &o, &d);
    draw_legend(out, &L, &o, &d);
    return 0;
}

int pg_plot_heatmap_geometry(pg_heatmap_geom *g, const pg_tensor *maps, const pg_heatmap_opts *opts, int64_t p)
{
    pg_heatmap_opts o;
    hm_data d;
    hm_layout L;
    if (hm_prepare(&L, &d, &o, g, maps, opts))
        return -1;
    if (p < 0 || p >= L.panels) {
        pg_set_error(FN ": panel %lld of %lld", (long long)p, (long long)L.panels);
        return -1;
    }
    int64_t x0, y0;
    panel_origin(&L, p, &x0, &y0);
    char buf[32];
    const char *label = panel_label(&o, p, buf, sizeof buf);
    *g = (pg_heatmap_geom){L.width, L.height, L.cell, x0, y0, x0 + L.pw / 2 - pg_text_width(label, 2) / 2,
                           y0 - L.label_h + 2, L.bar_x, L.bar_y, L.bar_h, d.lo, d.hi};
    return 0;
}

int pg_plot_heatmaps(const char *path, const pg_tensor *maps, const pg_heatmap_opts *opts)
{
    if (!path) {
        pg_set_error(FN ": path is NULL");
        return -1;
    }
    pg_canvas c = {0};
    if (pg_plot_heatmaps_canvas(&c, maps, opts))
        return -1;
    int rc = pg_canvas_write_png(&c, path);
    pg_canvas_free(&c);
    return rc;
}
