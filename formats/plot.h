/* posgrad figures: an RGB canvas with a built-in bitmap font, labelled
 * heatmaps (one panel per head, ticks, a colour bar), line and scatter plots
 * (ticks, legend, optional log axes), written as compressed PNGs (png.h).
 * libc + libm only. docs/plotting.md shows each kind of figure.
 *
 * Errors never abort: functions return 0, or -1 with pg_set_error naming the
 * function and what was wrong (a NULL, a shape, a bad range). Drawing calls
 * (rectangles, lines, text) clip to the canvas and cannot fail once the
 * canvas exists. */
#ifndef PG_PLOT_H
#define PG_PLOT_H

#include <stdbool.h>
#include <stdint.h>

#include "../tensor/tensor.h"

typedef struct pg_rgb {
    uint8_t r, g, b;
} pg_rgb;

/* ---- canvas ------------------------------------------------------------------------------ */

typedef struct pg_canvas {
    int64_t width, height;
    uint8_t *rgb; /* height * width * 3 bytes, row-major, top row first */
} pg_canvas;

/* A white canvas of width x height pixels (1..PG_PNG_MAX_SIDE each). 0 or -1. */
int pg_canvas_init(pg_canvas *c, int64_t width, int64_t height);
/* Frees the pixels; c may be NULL or already freed (then a no-op). */
void pg_canvas_free(pg_canvas *c);
/* The canvas as an RGB PNG (compressed, written atomically). 0 or -1. */
int pg_canvas_write_png(const pg_canvas *c, const char *path);

/* The colour at (x, y); outside the canvas: black. For tests. */
pg_rgb pg_canvas_get(const pg_canvas *c, int64_t x, int64_t y);
/* Filled rectangle with top-left (x, y), clipped. */
void pg_canvas_fill_rect(pg_canvas *c, int64_t x, int64_t y, int64_t w, int64_t h, pg_rgb color);
/* Straight line between pixel centres (x0, y0) and (x1, y1), thickness 1..8
 * pixels, clipped; non-finite end points draw nothing. */
void pg_canvas_line(pg_canvas *c, double x0, double y0, double x1, double y1, int thickness, pg_rgb color);

/* ---- text: a built-in bitmap font ---------------------------------------------------------- */

/* Each printable ASCII character (32..126) is a 5 x 7 glyph in a 6 x 9 cell
 * (one column of spacing, two rows for descenders and line spacing), drawn
 * at an integer scale 1..8 (scale 2: 12 x 18 pixels a character; other
 * scales are clamped to 1..8). Other bytes draw as '?'. '\n' starts a new
 * line. Descenders: the glyphs of g p q y , ; _ are drawn 2 rows lower in the
 * cell and j 1 row lower, so their tails use the two spare rows. */
#define PG_FONT_GLYPH_W 5
#define PG_FONT_GLYPH_H 7
#define PG_FONT_CELL_W 6
#define PG_FONT_CELL_H 9

/* The glyph of c: PG_FONT_GLYPH_H rows, top first, bit 4 of a row = leftmost
 * pixel (before the descender shift above). Characters outside 32..126 give
 * '?''s glyph. */
const uint8_t *pg_font_glyph(char c);
/* Pixel size of s at scale (the widest line; lines * cell height). */
int64_t pg_text_width(const char *s, int scale);
int64_t pg_text_height(const char *s, int scale);
/* Draws s with its top-left corner at (x, y), clipped. */
void pg_text_draw(pg_canvas *c, int64_t x, int64_t y, const char *s, int scale, pg_rgb color);
/* Draws s rotated 90 degrees counter-clockwise (reading bottom to top, as a
 * y-axis label), the bounding box's top-left at (x, y). */
void pg_text_draw_up(pg_canvas *c, int64_t x, int64_t y, const char *s, int scale, pg_rgb color);

/* ---- colours ------------------------------------------------------------------------------ */

/* The i-th colour of a categorical palette of PG_PLOT_PALETTE distinct
 * colours (cycles for i >= PG_PLOT_PALETTE), for series and heads. */
#define PG_PLOT_PALETTE 10
pg_rgb pg_plot_color(int i);

/* ---- heatmaps ------------------------------------------------------------------------------ */

typedef struct pg_heatmap_opts {
    const char *title;               /* above the panels; NULL: none */
    const char *xlabel;              /* NULL: "key position j" */
    const char *ylabel;              /* NULL: "query position i" */
    const char *const *panel_labels; /* one per panel; NULL: "head 0", "head 1", ... */
    const char *value_label;         /* caption of the colour bar; NULL: none */
    double vmin, vmax;               /* colour range; equal: the finite range over all panels */
    int64_t min_panel_px;            /* each panel upscaled (nearest neighbour, square cells) to at
                                        least this wide; 0: 400 */
    int panels_per_row;              /* 0: up to 4 a row */
    const char *masked_label;        /* legend entry for masked cells (NaN, +-inf, |v| >= PG_PNG_HUGE),
                                        drawn when any cell is masked; NULL: "masked" */
    const double *diagonals;         /* distances d = row - col marked by a thin line on every panel
                                        (planted offsets); NULL: none */
    int n_diagonals;
} pg_heatmap_opts;

/* maps: (rows, cols) for one panel or (panels, rows, cols), f32 or f64. Row 0
 * is the top row; ticks number rows and columns from 0. Masked cells are
 * drawn in PG_PNG_NAN_GRAY and named by the legend. opts NULL: all defaults.
 * The figure is a new canvas in out (free it with pg_canvas_free). 0 or -1. */
int pg_plot_heatmaps_canvas(pg_canvas *out, const pg_tensor *maps, const pg_heatmap_opts *opts);
/* The same figure written to path as a PNG. 0 or -1. */
int pg_plot_heatmaps(const char *path, const pg_tensor *maps, const pg_heatmap_opts *opts);

/* ---- line and scatter plots ----------------------------------------------------------------- */

typedef enum pg_plot_style {
    PG_PLOT_STYLE_LINE = 0, /* points joined; a non-finite y (or x) breaks the line */
    PG_PLOT_STYLE_POINTS,   /* a small filled square per point (scatter) */
    PG_PLOT_STYLE_LINE_POINTS,
} pg_plot_style;

typedef struct pg_series {
    const char *label;  /* legend entry; NULL: left out of the legend */
    const double *x;    /* n values; NULL: 0, 1, ..., n - 1 */
    const double *y;    /* n values */
    int64_t n;
    pg_plot_style style;
    int color;          /* index into pg_plot_color; -1: the series' own index */
} pg_series;

typedef struct pg_plot_mark {
    double x;           /* a dashed vertical line at x (the training length, a planted offset) */
    const char *label;  /* written beside it at the top; NULL: none */
} pg_plot_mark;

typedef struct pg_lineplot_opts {
    const char *title, *xlabel, *ylabel; /* NULL: none */
    int64_t width, height;   /* whole figure in pixels; 0: 640 x 420 */
    bool log_x, log_y;       /* log10 axes; points <= 0 on a log axis are skipped */
    bool identity_line;      /* draws y = x across the plot (analytic against numeric) */
    const pg_plot_mark *marks;
    int n_marks;
    /* Axis ranges; min == max: from the data (with a small margin), with
     * ticks at 1, 2 or 5 times a power of ten. */
    double xmin, xmax, ymin, ymax;
} pg_lineplot_opts;

/* Plots n_series series (1..64) on one pair of axes with a legend (the
 * labelled series). A series with n == 0 is allowed (legend only). A series
 * with n > 0 but no drawable point (all non-finite, or all <= 0 on a log
 * axis) is an error naming the series, as is a call where no series has a
 * point. The legend sits in the plot corner covering the fewest points, or
 * outside on the right when every corner covers some. 0 or -1. */
int pg_plot_lines_canvas(pg_canvas *out, const pg_series *series, int n_series, const pg_lineplot_opts *opts);
int pg_plot_lines(const char *path, const pg_series *series, int n_series, const pg_lineplot_opts *opts);

#endif
