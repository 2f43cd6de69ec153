/* Internal to the plotting files (formats/font.c, plot_*.c): the font's
 * descender shift, the tick chooser and its labels, and the drawing helpers
 * the heatmap and line-plot files share. Not installed. */
#ifndef PG_PLOT_IMPL_H
#define PG_PLOT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plot.h"

/* Rows c's glyph is drawn below the top of its cell: 2 for g p q y , ; _,
 * 1 for j, else 0 (the descenders, font.c). */
int pg_font_shift(char c);

/* The house colours: white background, dark gray axes and text. */
#define PG_PLOT_BG ((pg_rgb){255, 255, 255})
#define PG_PLOT_INK ((pg_rgb){51, 51, 51})
#define PG_PLOT_GRID ((pg_rgb){232, 232, 232})

#define PG_PLOT_MAX_TICKS 32
#define PG_PLOT_LABEL_LEN 24

/* Ticks at multiples of a "nice" step (1, 2 or 5 times a power of ten) inside
 * [lo, hi], at most max_ticks of them (2..PG_PLOT_MAX_TICKS), as many as fit;
 * integer: the step is at least 1 (whole-number axes). Writes the ticks in
 * ascending order and the step to *step; returns their count (0 for a bad or
 * non-finite range; lo == hi gives the one tick lo, with a step of 1 for a
 * whole number, else a hundredth of its power of ten). */
int pg_plot_ticks(double lo, double hi, int max_ticks, bool integer, double *ticks, double *step);

/* Decade ticks for a log10 axis over [lo, hi] (values, both > 0): the powers
 * of ten inside, every k-th decade when there are more than max_ticks. When
 * fewer than two powers of ten fall inside, the nice linear ticks of the
 * values instead. Returns the count; *step is 0 for decades (labels 1e-3
 * style), else the linear step. */
int pg_plot_log_ticks(double lo, double hi, int max_ticks, double *ticks, double *step);

/* Labels for n ticks with the given step, one style for the whole axis:
 * fixed with as many decimals as the step needs, the same on every label
 * ("0.0 0.5 1.0", "0.37", "15"), or
 * scientific ("1e-5", "2.5e6") when the largest magnitude is >= 1e5 or below
 * 1e-3. step 0: powers of ten, "0.01" .. "1000" as decimals, else "1e-3". */
void pg_plot_tick_labels(const double *ticks, int n, double step, char labels[][PG_PLOT_LABEL_LEN]);

/* A short number for a colour bar's end ("%.3g", exponent without padding). */
void pg_plot_number(char *buf, size_t size, double v);

/* Text centred horizontally on cx with its top at y. */
void pg_text_center(pg_canvas *c, int64_t cx, int64_t y, const char *s, int scale, pg_rgb color);

/* The segment clipped to the rectangle [x0, x1] x [y0, y1] (Liang-Barsky);
 * false when nothing is left. */
bool pg_plot_clip(double *ax, double *ay, double *bx, double *by, double x0, double y0, double x1, double y1);

/* A dashed line (dash and gap in pixels) between two points, clipped. */
void pg_plot_dashed(pg_canvas *c, double x0, double y0, double x1, double y1, int dash, int gap, int thickness,
                    pg_rgb color);

#endif

/* ---- geometry of the figures, for tests ----------------------------------------------------- */

/* Where pg_plot_heatmaps_canvas puts panel p: its first cell's top-left
 * (x0, y0), the cell side, the panel label's top-left, and the colour bar
 * (top-left, height; its top row is vmax). Same errors as the figure. */
typedef struct pg_heatmap_geom {
    int64_t width, height, cell, x0, y0, label_x, label_y, bar_x, bar_y, bar_h;
    double lo, hi; /* the colour range */
} pg_heatmap_geom;
int pg_plot_heatmap_geometry(pg_heatmap_geom *g, const pg_tensor *maps, const pg_heatmap_opts *opts, int64_t p);

/* Where pg_plot_lines_canvas puts things: the plot area (inclusive), each
 * axis's range in axis units (log10 on a log axis), the legend box and the
 * top-left of its first entry's text. */
typedef struct pg_lineplot_geom {
    int64_t px0, py0, px1, py1;
    double xlo, xhi, ylo, yhi;
    bool log_x, log_y, legend_outside;
    int64_t leg_x, leg_y, leg_w, leg_h, leg_text_x, leg_text_y;
} pg_lineplot_geom;
int pg_plot_lines_geometry(pg_lineplot_geom *g, const pg_series *series, int n_series, const pg_lineplot_opts *opts);
/* The pixel position of the data point (x, y) (not rounded). */
void pg_plot_lines_map(const pg_lineplot_geom *g, double x, double y, double *px, double *py);
