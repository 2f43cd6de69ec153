/* plot.h's line and scatter plots: a frame with ticks (nice steps, or
 * decades on log axes) and labels, light grid lines, the series clipped to
 * the plot area, dashed marks, an optional identity line, and a legend
 * placed in the corner that covers the fewest points (outside on the right
 * when every corner covers some). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"
#include "plot_impl.h"
#include "png.h"

#define FN "pg_plot_lines"
#define PAD 12
#define TICK 5
#define MAX_SERIES 64
#define MAX_POINTS ((int64_t)1 << 26)
#define TITLE_S 2 /* scales: title and axis labels, tick labels and legend */
#define LABEL_S 2
#define TICK_S 1
#define LEGEND_S 1
#define MIN_W 200
#define MIN_H 150
#define MARK_COLOR ((pg_rgb){120, 120, 120})

typedef struct lp_axis {
    bool log;
    double lo, hi; /* the range, in axis units (log10 of the values on a log axis) */
    int n;
    double ticks[PG_PLOT_MAX_TICKS]; /* in axis units */
    char labels[PG_PLOT_MAX_TICKS][PG_PLOT_LABEL_LEN];
    bool integer; /* every finite value a whole number */
    bool decades; /* a log axis: minor ticks at 2..9 times each power of ten */
} lp_axis;

typedef struct lp_plot {
    const pg_series *s;
    int n_series;
    pg_lineplot_opts o;
    lp_axis x, y;
    int64_t px0, py0, px1, py1; /* the plot area, inclusive */
    int64_t leg_w, leg_h, leg_x, leg_y;
    int n_legend;
    bool legend_outside;
} lp_plot;

/* ---- data ----------------------------------------------------------------------------------- */

static double sx(const pg_series *s, int64_t i)
{
    return s->x ? s->x[i] : (double)i;
}

/* A value's position on an axis; NaN when it cannot be drawn there. */
static double to_axis(double v, bool log)
{
    if (!isfinite(v) || (log && !(v > 0)))
        return NAN;
    return log ? log10(v) : v;
}

static bool point_ok(const lp_plot *P, const pg_series *s, int64_t i)
{
    return !isnan(to_axis(sx(s, i), P->o.log_x)) && !isnan(to_axis(s->y[i], P->o.log_y));
}

static const char *series_name(const pg_series *s)
{
    return s->label ? s->label : "unlabelled";
}

/* ---- checks --------------------------------------------------------------------------------- */

static int check_opts(const pg_lineplot_opts *o)
{
    if (o->width < MIN_W || o->height < MIN_H || o->width > PG_PNG_MAX_SIDE || o->height > PG_PNG_MAX_SIDE) {
        pg_set_error(FN ": figure size %lld x %lld is out of range (%d..%d wide, %d..%d tall; 0 for 640 x 420)",
                     (long long)o->width, (long long)o->height, MIN_W, PG_PNG_MAX_SIDE, MIN_H, PG_PNG_MAX_SIDE);
        return -1;
    }
    if (o->n_marks < 0 || (o->n_marks > 0 && !o->marks)) {
        pg_set_error(FN ": n_marks %d with marks %s", o->n_marks, o->marks ? "set" : "NULL");
        return -1;
    }
    const double r[4] = {o->xmin, o->xmax, o->ymin, o->ymax};
    for (int a = 0; a < 2; a++) {
        bool log = a ? o->log_y : o->log_x;
        double lo = r[2 * a], hi = r[2 * a + 1];
        if (!isfinite(lo) || !isfinite(hi) || lo > hi || (lo < hi && log && !(lo > 0))) {
            pg_set_error(FN ": bad %s range [%g, %g] (need min < max%s, or min == max for the data's range)",
                         a ? "y" : "x", lo, hi, log ? ", both > 0 on a log axis" : "");
            return -1;
        }
    }
    return 0;
}

static int check_series(const lp_plot *P)
{
    for (int k = 0; k < P->n_series; k++) {
        const pg_series *s = &P->s[k];
        const char *why = s->n < 0 || s->n > MAX_POINTS ? "n is out of range (0..2^26)"
                          : s->n > 0 && !s->y             ? "y is NULL"
                          : (unsigned)s->style > PG_PLOT_STYLE_LINE_POINTS ? "style is not a pg_plot_style"
                          : s->color < -1                                  ? "color is below -1"
                                                                           : NULL;
        if (why) {
            pg_set_error(FN ": series %d (\"%s\", n %lld): %s", k, series_name(s), (long long)s->n, why);
            return -1;
        }
        bool any = s->n == 0;
        for (int64_t i = 0; i < s->n && !any; i++)
            any = point_ok(P, s, i);
        if (!any) {
            pg_set_error(FN ": series %d (\"%s\") has no finite point%s", k, series_name(s),
                         P->o.log_x || P->o.log_y ? " (a log axis needs values > 0)" : "");
            return -1;
        }
    }
    return 0;
}

/* ---- axes ----------------------------------------------------------------------------------- */

/* The data's range on one axis (marks count on x), with a margin. */
static void data_range(lp_plot *P, lp_axis *A, bool is_x)
{
    double lo = INFINITY, hi = -INFINITY;
    A->integer = true;
    for (int k = 0; k < P->n_series; k++)
        for (int64_t i = 0; i < P->s[k].n; i++) {
            if (!point_ok(P, &P->s[k], i))
                continue;
            double v = is_x ? sx(&P->s[k], i) : P->s[k].y[i], a = to_axis(v, A->log);
            lo = fmin(lo, a);
            hi = fmax(hi, a);
            A->integer = A->integer && v == floor(v);
        }
    for (int m = 0; is_x && m < P->o.n_marks; m++) {
        double a = to_axis(P->o.marks[m].x, A->log);
        if (!isnan(a) && lo <= hi) {
            lo = fmin(lo, a);
            hi = fmax(hi, a);
        }
    }
    if (lo == hi) { /* one value: a window around it */
        double d = A->log ? 0.5 : lo != 0 ? fabs(lo) * 0.1 : 1.0;
        lo -= d;
        hi += d;
    }
    double margin = (hi - lo) * 0.04;
    A->lo = lo - margin;
    A->hi = hi + margin;
    A->integer = A->integer && !A->log && hi - lo >= 2;
}

static void axis_range(lp_plot *P, lp_axis *A, bool is_x)
{
    A->log = is_x ? P->o.log_x : P->o.log_y;
    double lo = is_x ? P->o.xmin : P->o.ymin, hi = is_x ? P->o.xmax : P->o.ymax;
    data_range(P, A, is_x);
    if (lo < hi) {
        A->lo = A->log ? log10(lo) : lo;
        A->hi = A->log ? log10(hi) : hi;
    }
}

/* Ticks for a length of len pixels, each label given room px plus its width. */
static void axis_ticks(lp_axis *A, int64_t len, bool across)
{
    for (int max = PG_PLOT_MAX_TICKS; max >= 2; max--) {
        double v[PG_PLOT_MAX_TICKS], step;
        A->n = A->log ? pg_plot_log_ticks(pow(10, A->lo), pow(10, A->hi), max, v, &step)
                      : pg_plot_ticks(A->lo, A->hi, max, A->integer, v, &step);
        pg_plot_tick_labels(v, A->n, step, A->labels);
        A->decades = A->log; /* minor ticks at 2..9 times each power of ten */
        int64_t need = 0;
        for (int i = 0; i < A->n; i++) {
            A->ticks[i] = A->log ? log10(v[i]) : v[i];
            int64_t w = across ? pg_text_width(A->labels[i], TICK_S) + 16 : PG_FONT_CELL_H * TICK_S + 26;
            need = w > need ? w : need;
        }
        if (need * A->n <= len)
            return;
    }
}

static double map_x(const lp_plot *P, double a)
{
    return P->px0 + (a - P->x.lo) / (P->x.hi - P->x.lo) * (double)(P->px1 - P->px0);
}

static double map_y(const lp_plot *P, double a)
{
    return P->py1 - (a - P->y.lo) / (P->y.hi - P->y.lo) * (double)(P->py1 - P->py0);
}

static int64_t widest_label(const lp_axis *A)
{
    int64_t w = 0;
    for (int i = 0; i < A->n; i++) {
        int64_t t = pg_text_width(A->labels[i], TICK_S);
        w = t > w ? t : w;
    }
    return w;
}

/* The plot area and ticks, leaving right_extra pixels on the right (an outside legend). */
static int lp_layout(lp_plot *P, int64_t right_extra)
{
    const pg_lineplot_opts *o = &P->o;
    P->py0 = PAD + (o->title ? pg_text_height(o->title, TITLE_S) + 10 : 4);
    int64_t bottom = TICK + 4 + PG_FONT_CELL_H * TICK_S + (o->xlabel ? 8 + PG_FONT_CELL_H * LABEL_S : 0) + PAD;
    P->py1 = o->height - 1 - bottom;
    if (P->py1 - P->py0 >= 40)
        axis_ticks(&P->y, P->py1 - P->py0, false);
    int64_t left = PAD + (o->ylabel ? PG_FONT_CELL_H * LABEL_S + 8 : 0) + widest_label(&P->y) + TICK + 5;
    P->px0 = left;
    P->px1 = o->width - 1 - PAD - right_extra - 3 * PG_FONT_CELL_W * TICK_S;
    if (P->px1 - P->px0 < 40 || P->py1 - P->py0 < 40) {
        pg_set_error(FN ": a %lld x %lld figure leaves no room for the plot beside its labels and legend",
                     (long long)o->width, (long long)o->height);
        return -1;
    }
    axis_ticks(&P->x, P->px1 - P->px0, true);
    return 0;
}

/* ---- legend --------------------------------------------------------------------------------- */

#define SWATCH 24
#define LEGEND_TEXT_DX (8 + SWATCH + 6) /* the first entry's text from the box's corner */
#define LEGEND_TEXT_DY 9

static void legend_size(lp_plot *P)
{
    P->n_legend = 0;
    P->leg_w = 0;
    for (int k = 0; k < P->n_series; k++) {
        if (!P->s[k].label)
            continue;
        P->n_legend++;
        int64_t w = pg_text_width(P->s[k].label, LEGEND_S);
        P->leg_w = w > P->leg_w ? w : P->leg_w;
    }
    P->leg_w += SWATCH + 6 + 2 * 8;
    P->leg_h = P->n_legend * (PG_FONT_CELL_H * LEGEND_S + 6) + 2 * 6;
}

/* Points (and samples along joined segments) of all series inside the box. */
static int64_t covered(const lp_plot *P, int64_t bx, int64_t by)
{
    int64_t n = 0;
    for (int k = 0; k < P->n_series; k++) {
        const pg_series *s = &P->s[k];
        double qx = NAN, qy = NAN;
        for (int64_t i = 0; i < s->n; i++) {
            if (!point_ok(P, s, i)) {
                qx = NAN;
                continue;
            }
            double x = map_x(P, to_axis(sx(s, i), P->o.log_x)), y = map_y(P, to_axis(s->y[i], P->o.log_y));
            int samples = !isnan(qx) && s->style != PG_PLOT_STYLE_POINTS ? 8 : 1;
            for (int j = 1; j <= samples; j++) {
                double t = (double)j / samples, ux = samples > 1 ? qx + t * (x - qx) : x;
                double uy = samples > 1 ? qy + t * (y - qy) : y;
                n += ux >= bx - 4 && ux <= bx + P->leg_w + 4 && uy >= by - 4 && uy <= by + P->leg_h + 4;
            }
            qx = x;
            qy = y;
        }
    }
    return n;
}

/* The corner covering the fewest points; outside on the right when none is free. */
static int place_legend(lp_plot *P)
{
    legend_size(P);
    if (P->n_legend == 0)
        return 0;
    int64_t best = -1;
    for (int corner = 0; corner < 4; corner++) { /* upper right, upper left, lower right, lower left */
        int64_t x = corner % 2 ? P->px0 + 8 : P->px1 - 8 - P->leg_w;
        int64_t y = corner / 2 ? P->py1 - 8 - P->leg_h : P->py0 + 8;
        int64_t n = covered(P, x, y);
        if (best < 0 || n < best) {
            best = n;
            P->leg_x = x;
            P->leg_y = y;
        }
    }
    bool fits = P->leg_w < (P->px1 - P->px0) - 16 && P->leg_h < (P->py1 - P->py0) - 16;
    if (best == 0 && fits)
        return 0;
    P->legend_outside = true;
    if (lp_layout(P, P->leg_w + 10))
        return -1;
    P->leg_x = P->px1 + 3 * PG_FONT_CELL_W * TICK_S + 10;
    P->leg_y = P->py0;
    return 0;
}

static void draw_swatch(pg_canvas *c, const pg_series *s, int k, int64_t x, int64_t y)
{
    pg_rgb col = pg_plot_color(s->color >= 0 ? s->color : k);
    if (s->style != PG_PLOT_STYLE_POINTS)
        pg_canvas_line(c, (double)x, (double)y, (double)(x + SWATCH - 1), (double)y, 2, col);
    if (s->style != PG_PLOT_STYLE_LINE)
        pg_canvas_fill_rect(c, x + SWATCH / 2 - 2, y - 2, 5, 5, col);
}

static void draw_legend(pg_canvas *c, const lp_plot *P)
{
    if (P->n_legend == 0)
        return;
    pg_canvas_fill_rect(c, P->leg_x, P->leg_y, P->leg_w, P->leg_h, (pg_rgb){200, 200, 200});
    pg_canvas_fill_rect(c, P->leg_x + 1, P->leg_y + 1, P->leg_w - 2, P->leg_h - 2, PG_PLOT_BG);
    int64_t row = PG_FONT_CELL_H * LEGEND_S + 6, y = P->leg_y + LEGEND_TEXT_DY;
    for (int k = 0; k < P->n_series; k++) {
        if (!P->s[k].label)
            continue;
        draw_swatch(c, &P->s[k], k, P->leg_x + 8, y + (PG_FONT_GLYPH_H * LEGEND_S) / 2);
        pg_text_draw(c, P->leg_x + LEGEND_TEXT_DX, y, P->s[k].label, LEGEND_S, PG_PLOT_INK);
        y += row;
    }
}

/* ---- drawing -------------------------------------------------------------------------------- */

static void clipped_line(pg_canvas *c, const lp_plot *P, double ax, double ay, double bx, double by, int t,
                         pg_rgb col)
{
    if (pg_plot_clip(&ax, &ay, &bx, &by, (double)P->px0, (double)P->py0, (double)P->px1, (double)P->py1))
        pg_canvas_line(c, ax, ay, bx, by, t, col);
}

static void draw_series(pg_canvas *c, const lp_plot *P, int k)
{
    const pg_series *s = &P->s[k];
    pg_rgb col = pg_plot_color(s->color >= 0 ? s->color : k);
    double qx = NAN, qy = NAN;
    for (int64_t i = 0; i < s->n; i++) {
        double x = NAN, y = NAN;
        if (point_ok(P, s, i)) {
            x = map_x(P, to_axis(sx(s, i), P->o.log_x));
            y = map_y(P, to_axis(s->y[i], P->o.log_y));
        }
        if (!isfinite(x) || !isfinite(y)) { /* a break in the line */
            qx = NAN;
            continue;
        }
        if (s->style != PG_PLOT_STYLE_POINTS && !isnan(qx))
            clipped_line(c, P, qx, qy, x, y, 2, col);
        if (s->style != PG_PLOT_STYLE_LINE && x >= P->px0 && x <= P->px1 && y >= P->py0 && y <= P->py1)
            pg_canvas_fill_rect(c, (int64_t)lround(x) - 2, (int64_t)lround(y) - 2, 5, 5, col);
        qx = x;
        qy = y;
    }
}

/* Short unlabelled ticks at 2..9 times each power of ten on a log axis, when
 * the powers of ten are far enough apart to tell them apart. */
static void minor_ticks(pg_canvas *c, const lp_plot *P, const lp_axis *A, bool is_x)
{
    double len = is_x ? (double)(P->px1 - P->px0) : (double)(P->py1 - P->py0);
    if (!A->decades || len / (A->hi - A->lo) < 40)
        return;
    for (double e = floor(A->lo); e <= A->hi; e++)
        for (int k = 2; k <= 9; k++) {
            double a = e + log10(k);
            if (a < A->lo || a > A->hi)
                continue;
            if (is_x)
                pg_canvas_fill_rect(c, (int64_t)lround(map_x(P, a)), P->py1 + 1, 1, TICK / 2 + 1, PG_PLOT_INK);
            else
                pg_canvas_fill_rect(c, P->px0 - TICK / 2 - 1, (int64_t)lround(map_y(P, a)), TICK / 2 + 1, 1,
                                    PG_PLOT_INK);
        }
}

static void draw_grid_and_ticks(pg_canvas *c, const lp_plot *P)
{
    minor_ticks(c, P, &P->x, true);
    minor_ticks(c, P, &P->y, false);
    for (int i = 0; i < P->x.n; i++) {
        int64_t x = (int64_t)lround(map_x(P, P->x.ticks[i]));
        pg_canvas_fill_rect(c, x, P->py0, 1, P->py1 - P->py0 + 1, PG_PLOT_GRID);
        pg_canvas_fill_rect(c, x, P->py1 + 1, 1, TICK, PG_PLOT_INK);
        pg_text_center(c, x + 1, P->py1 + TICK + 4, P->x.labels[i], TICK_S, PG_PLOT_INK);
    }
    for (int i = 0; i < P->y.n; i++) {
        int64_t y = (int64_t)lround(map_y(P, P->y.ticks[i]));
        pg_canvas_fill_rect(c, P->px0, y, P->px1 - P->px0 + 1, 1, PG_PLOT_GRID);
        pg_canvas_fill_rect(c, P->px0 - TICK, y, TICK, 1, PG_PLOT_INK);
        int64_t w = pg_text_width(P->y.labels[i], TICK_S);
        pg_text_draw(c, P->px0 - TICK - 4 - w, y - (PG_FONT_GLYPH_H * TICK_S) / 2, P->y.labels[i], TICK_S,
                     PG_PLOT_INK);
    }
}

static void draw_frame_and_labels(pg_canvas *c, const lp_plot *P)
{
    int64_t w = P->px1 - P->px0 + 3, h = P->py1 - P->py0 + 3;
    pg_canvas_fill_rect(c, P->px0 - 1, P->py0 - 1, w, 1, PG_PLOT_INK);
    pg_canvas_fill_rect(c, P->px0 - 1, P->py1 + 1, w, 1, PG_PLOT_INK);
    pg_canvas_fill_rect(c, P->px0 - 1, P->py0 - 1, 1, h, PG_PLOT_INK);
    pg_canvas_fill_rect(c, P->px1 + 1, P->py0 - 1, 1, h, PG_PLOT_INK);
    const pg_lineplot_opts *o = &P->o;
    int64_t cx = (P->px0 + P->px1) / 2, cy = (P->py0 + P->py1) / 2;
    if (o->title)
        pg_text_center(c, cx, PAD, o->title, TITLE_S, PG_PLOT_INK);
    if (o->xlabel)
        pg_text_center(c, cx, P->py1 + TICK + 4 + PG_FONT_CELL_H * TICK_S + 8, o->xlabel, LABEL_S, PG_PLOT_INK);
    if (o->ylabel)
        pg_text_draw_up(c, PAD, cy - pg_text_width(o->ylabel, LABEL_S) / 2, o->ylabel, LABEL_S, PG_PLOT_INK);
}

static void draw_marks(pg_canvas *c, const lp_plot *P)
{
    for (int m = 0; m < P->o.n_marks; m++) {
        double a = to_axis(P->o.marks[m].x, P->o.log_x);
        if (isnan(a) || a < P->x.lo || a > P->x.hi)
            continue;
        double x = round(map_x(P, a));
        pg_plot_dashed(c, x, (double)P->py0, x, (double)P->py1, 6, 4, 1, MARK_COLOR);
        if (P->o.marks[m].label)
            pg_text_draw(c, (int64_t)x + 4, P->py0 + 4, P->o.marks[m].label, TICK_S, MARK_COLOR);
    }
}

/* y = x: straight when both axes are linear or both log, else sampled. */
static void draw_identity(pg_canvas *c, const lp_plot *P)
{
    double lo = fmax(P->x.log ? pow(10, P->x.lo) : P->x.lo, P->y.log ? pow(10, P->y.lo) : P->y.lo);
    double hi = fmin(P->x.log ? pow(10, P->x.hi) : P->x.hi, P->y.log ? pow(10, P->y.hi) : P->y.hi);
    if (!(lo < hi))
        return;
    int n = P->x.log == P->y.log ? 1 : 128;
    for (int i = 0; i < n; i++) {
        double a = lo + (hi - lo) * i / n, b = lo + (hi - lo) * (i + 1) / n;
        double ax = map_x(P, to_axis(a, P->x.log)), ay = map_y(P, to_axis(a, P->y.log));
        double bx = map_x(P, to_axis(b, P->x.log)), by = map_y(P, to_axis(b, P->y.log));
        if (isfinite(ax) && isfinite(ay) && isfinite(bx) && isfinite(by) &&
            pg_plot_clip(&ax, &ay, &bx, &by, (double)P->px0, (double)P->py0, (double)P->px1, (double)P->py1))
            pg_plot_dashed(c, ax, ay, bx, by, n == 1 ? 8 : 1000, n == 1 ? 5 : 0, 1, MARK_COLOR);
    }
}

/* Checks everything and lays the figure out (no pixels yet). 0 or -1. */
static int lp_prepare(lp_plot *P, const pg_series *series, int n_series, const pg_lineplot_opts *opts)
{
    P->s = series;
    P->n_series = n_series;
    P->o = opts ? *opts : (pg_lineplot_opts){0};
    P->o.width = P->o.width ? P->o.width : 640;
    P->o.height = P->o.height ? P->o.height : 420;
    if (check_opts(&P->o) || check_series(P))
        return -1;
    bool any = false;
    for (int k = 0; k < n_series; k++)
        any = any || series[k].n > 0;
    if (!any) {
        pg_set_error(FN ": none of the %d series has a point, so the axes have no range", n_series);
        return -1;
    }
    axis_range(P, &P->x, true);
    axis_range(P, &P->y, false);
    return lp_layout(P, 0) || place_legend(P) ? -1 : 0;
}

/* The checks of the arguments every entry point shares; P calloc'd on success. */
static lp_plot *lp_begin(const void *out, const pg_series *series, int n_series)
{
    if (!out || !series) {
        pg_set_error(FN ": %s is NULL", !out ? "out" : "series");
        return NULL;
    }
    if (n_series < 1 || n_series > MAX_SERIES) {
        pg_set_error(FN ": n_series %d is out of range (1..%d)", n_series, MAX_SERIES);
        return NULL;
    }
    lp_plot *P = calloc(1, sizeof *P);
    if (!P)
        pg_set_error(FN ": out of memory");
    return P;
}

int pg_plot_lines_canvas(pg_canvas *out, const pg_series *series, int n_series, const pg_lineplot_opts *opts)
{
    if (out) {
        out->rgb = NULL;
        out->width = out->height = 0;
    }
    lp_plot *P = lp_begin(out, series, n_series);
    if (!P)
        return -1;
    int rc = -1;
    if (lp_prepare(P, series, n_series, opts) || pg_canvas_init(out, P->o.width, P->o.height))
        goto done;
    draw_grid_and_ticks(out, P);
    if (P->o.identity_line)
        draw_identity(out, P);
    draw_marks(out, P);
    for (int k = 0; k < n_series; k++)
        draw_series(out, P, k);
    draw_frame_and_labels(out, P);
    draw_legend(out, P);
    rc = 0;
done:
    free(P);
    return rc;
}

int pg_plot_lines_geometry(pg_lineplot_geom *g, const pg_series *series, int n_series, const pg_lineplot_opts *opts)
{
    lp_plot *P = lp_begin(g, series, n_series);
    if (!P)
        return -1;
    int rc = lp_prepare(P, series, n_series, opts);
    if (rc == 0)
        *g = (pg_lineplot_geom){P->px0, P->py0, P->px1, P->py1, P->x.lo, P->x.hi, P->y.lo, P->y.hi,
                                P->x.log, P->y.log, P->legend_outside, P->leg_x, P->leg_y, P->leg_w, P->leg_h,
                                P->leg_x + LEGEND_TEXT_DX, P->leg_y + LEGEND_TEXT_DY};
    free(P);
    return rc;
}

void pg_plot_lines_map(const pg_lineplot_geom *g, double x, double y, double *px, double *py)
{
    double ax = to_axis(x, g->log_x), ay = to_axis(y, g->log_y);
    *px = g->px0 + (ax - g->xlo) / (g->xhi - g->xlo) * (double)(g->px1 - g->px0);
    *py = g->py1 - (ay - g->ylo) / (g->yhi - g->ylo) * (double)(g->py1 - g->py0);
}

int pg_plot_lines(const char *path, const pg_series *series, int n_series, const pg_lineplot_opts *opts)
{
    if (!path) {
        pg_set_error(FN ": path is NULL");
        return -1;
    }
    pg_canvas c = {0};
    if (pg_plot_lines_canvas(&c, series, n_series, opts))
        return -1;
    int rc = pg_canvas_write_png(&c, path);
    pg_canvas_free(&c);
    return rc;
}
