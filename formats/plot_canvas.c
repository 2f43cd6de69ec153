/* plot.h's canvas: an RGB pixel buffer with clipped rectangles, thick lines
 * and bitmap text (glyphs from font.c), and the categorical palette. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"
#include "plot_impl.h"
#include "png.h"

/* ---- canvas ------------------------------------------------------------------------------ */

int pg_canvas_init(pg_canvas *c, int64_t width, int64_t height)
{
    if (!c) {
        pg_set_error("pg_canvas_init: c is NULL");
        return -1;
    }
    c->width = c->height = 0;
    c->rgb = NULL;
    if (width < 1 || height < 1 || width > PG_PNG_MAX_SIDE || height > PG_PNG_MAX_SIDE) {
        pg_set_error("pg_canvas_init: size %lld x %lld is out of range (1..%d per side)", (long long)width,
                     (long long)height, PG_PNG_MAX_SIDE);
        return -1;
    }
    size_t n = (size_t)width * (size_t)height * 3;
    c->rgb = malloc(n);
    if (!c->rgb) {
        pg_set_error("pg_canvas_init: out of memory for %lld x %lld pixels", (long long)width, (long long)height);
        return -1;
    }
    memset(c->rgb, 255, n);
    c->width = width;
    c->height = height;
    return 0;
}

void pg_canvas_free(pg_canvas *c)
{
    if (!c)
        return;
    free(c->rgb);
    c->rgb = NULL;
    c->width = c->height = 0;
}

/* A canvas that can be drawn on; names fn in the error otherwise. */
static bool canvas_ok(const pg_canvas *c, const char *fn)
{
    if (!c || !c->rgb || c->width < 1 || c->height < 1) {
        pg_set_error("%s: %s", fn, !c ? "c is NULL" : "the canvas has no pixels (not initialised or freed)");
        return false;
    }
    return true;
}

int pg_canvas_write_png(const pg_canvas *c, const char *path)
{
    if (!canvas_ok(c, "pg_canvas_write_png"))
        return -1;
    if (!path) {
        pg_set_error("pg_canvas_write_png: path is NULL");
        return -1;
    }
    return pg_png_write(path, c->width, c->height, 3, c->rgb);
}

pg_rgb pg_canvas_get(const pg_canvas *c, int64_t x, int64_t y)
{
    if (!canvas_ok(c, "pg_canvas_get") || x < 0 || y < 0 || x >= c->width || y >= c->height)
        return (pg_rgb){0, 0, 0};
    const uint8_t *p = c->rgb + ((size_t)y * (size_t)c->width + (size_t)x) * 3;
    return (pg_rgb){p[0], p[1], p[2]};
}

void pg_canvas_fill_rect(pg_canvas *c, int64_t x, int64_t y, int64_t w, int64_t h, pg_rgb color)
{
    if (!canvas_ok(c, "pg_canvas_fill_rect") || w <= 0 || h <= 0)
        return;
    /* clip [x, x + w) x [y, y + h) to the canvas without overflowing */
    int64_t x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int64_t x1 = x > c->width - w ? c->width : x + w, y1 = y > c->height - h ? c->height : y + h;
    if (x0 >= x1 || y0 >= y1)
        return;
    for (int64_t yy = y0; yy < y1; yy++) {
        uint8_t *p = c->rgb + ((size_t)yy * (size_t)c->width + (size_t)x0) * 3;
        for (int64_t xx = x0; xx < x1; xx++, p += 3) {
            p[0] = color.r;
            p[1] = color.g;
            p[2] = color.b;
        }
    }
}

/* ---- lines ------------------------------------------------------------------------------- */

/* Liang-Barsky: the part of a -> b with x in [x0, x1] and y in [y0, y1]. */
bool pg_plot_clip(double *ax, double *ay, double *bx, double *by, double x0, double y0, double x1, double y1)
{
    double dx = *bx - *ax, dy = *by - *ay, t0 = 0, t1 = 1;
    const double p[4] = {-dx, dx, -dy, dy};
    const double q[4] = {*ax - x0, x1 - *ax, *ay - y0, y1 - *ay};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0)
                return false; /* parallel to this edge and outside it */
            continue;
        }
        double r = q[i] / p[i];
        if (p[i] < 0 && r > t0)
            t0 = r;
        else if (p[i] > 0 && r < t1)
            t1 = r;
        if (t0 > t1)
            return false;
    }
    double sx = *ax, sy = *ay;
    *ax = sx + t0 * dx;
    *ay = sy + t0 * dy;
    *bx = sx + t1 * dx;
    *by = sy + t1 * dy;
    return true;
}

/* A thickness x thickness square centred on the pixel (x, y). */
static void stamp(pg_canvas *c, int64_t x, int64_t y, int thickness, pg_rgb color)
{
    int64_t back = (thickness - 1) / 2;
    pg_canvas_fill_rect(c, x - back, y - back, thickness, thickness, color);
}

void pg_canvas_line(pg_canvas *c, double x0, double y0, double x1, double y1, int thickness, pg_rgb color)
{
    if (!canvas_ok(c, "pg_canvas_line"))
        return;
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1))
        return;
    thickness = thickness < 1 ? 1 : thickness > 8 ? 8 : thickness;
    /* keep only what can touch the canvas, so the steps below stay few */
    double m = thickness + 1.0;
    if (!pg_plot_clip(&x0, &y0, &x1, &y1, -m, -m, (double)c->width - 1 + m, (double)c->height - 1 + m))
        return;
    /* one step per pixel along the longer axis (a DDA), a square at each */
    double dx = x1 - x0, dy = y1 - y0;
    int64_t steps = (int64_t)ceil(fmax(fabs(dx), fabs(dy)));
    for (int64_t i = 0; i <= steps; i++) {
        double t = steps ? (double)i / (double)steps : 0.0;
        stamp(c, (int64_t)lround(x0 + t * dx), (int64_t)lround(y0 + t * dy), thickness, color);
    }
}

void pg_plot_dashed(pg_canvas *c, double x0, double y0, double x1, double y1, int dash, int gap, int thickness,
                    pg_rgb color)
{
    double len = hypot(x1 - x0, y1 - y0);
    if (!isfinite(len))
        return;
    if (len == 0 || dash < 1 || gap < 0) {
        pg_canvas_line(c, x0, y0, x1, y1, thickness, color);
        return;
    }
    double ux = (x1 - x0) / len, uy = (y1 - y0) / len;
    for (double s = 0; s < len; s += dash + gap) {
        double e = fmin(s + dash - 1, len);
        pg_canvas_line(c, x0 + s * ux, y0 + s * uy, x0 + e * ux, y0 + e * uy, thickness, color);
    }
}

/* ---- text -------------------------------------------------------------------------------- */

static int clamp_scale(int scale)
{
    return scale < 1 ? 1 : scale > 8 ? 8 : scale;
}

int64_t pg_text_width(const char *s, int scale)
{
    if (!s)
        return 0;
    int64_t widest = 0, run = 0;
    for (; *s; s++) {
        run = *s == '\n' ? 0 : run + 1;
        widest = run > widest ? run : widest;
    }
    return widest * PG_FONT_CELL_W * clamp_scale(scale);
}

int64_t pg_text_height(const char *s, int scale)
{
    if (!s || !*s)
        return 0;
    int64_t lines = 1;
    for (; *s; s++)
        lines += *s == '\n';
    return lines * PG_FONT_CELL_H * clamp_scale(scale);
}

/* Calls block(u, v) for every set font pixel of s at scale: (u, v) the
 * pixel's top-left in the unrotated text box (u across, v down). */
typedef struct text_pen {
    pg_canvas *c;
    int64_t x, y, box_w;
    bool up;
    int scale;
    pg_rgb color;
} text_pen;

static void pen_block(const text_pen *p, int64_t u, int64_t v)
{
    if (p->up) /* 90 degrees counter-clockwise: u runs bottom to top, v left to right */
        pg_canvas_fill_rect(p->c, p->x + v, p->y + p->box_w - u - p->scale, p->scale, p->scale, p->color);
    else
        pg_canvas_fill_rect(p->c, p->x + u, p->y + v, p->scale, p->scale, p->color);
}

static void draw_glyph(const text_pen *p, char ch, int64_t u0, int64_t v0)
{
    const uint8_t *g = pg_font_glyph(ch);
    int64_t shift = pg_font_shift(ch);
    for (int r = 0; r < PG_FONT_GLYPH_H; r++)
        for (int k = 0; k < PG_FONT_GLYPH_W; k++)
            if (g[r] & (0x10 >> k))
                pen_block(p, u0 + (int64_t)k * p->scale, v0 + (r + shift) * p->scale);
}

static void draw_text(const text_pen *p, const char *s)
{
    int64_t u = 0, v = 0, cw = (int64_t)PG_FONT_CELL_W * p->scale, ch = (int64_t)PG_FONT_CELL_H * p->scale;
    for (; *s; s++) {
        if (*s == '\n') {
            u = 0;
            v += ch;
            continue;
        }
        /* whole characters off the canvas are skipped (long strings stay cheap) */
        if (p->up || (p->x + u < p->c->width && p->x + u + cw > 0))
            draw_glyph(p, *s, u, v);
        u += cw;
    }
}

void pg_text_draw(pg_canvas *c, int64_t x, int64_t y, const char *s, int scale, pg_rgb color)
{
    if (!canvas_ok(c, "pg_text_draw"))
        return;
    if (!s) {
        pg_set_error("pg_text_draw: s is NULL");
        return;
    }
    text_pen p = {c, x, y, 0, false, clamp_scale(scale), color};
    draw_text(&p, s);
}

void pg_text_draw_up(pg_canvas *c, int64_t x, int64_t y, const char *s, int scale, pg_rgb color)
{
    if (!canvas_ok(c, "pg_text_draw_up"))
        return;
    if (!s) {
        pg_set_error("pg_text_draw_up: s is NULL");
        return;
    }
    text_pen p = {c, x, y, pg_text_width(s, scale), true, clamp_scale(scale), color};
    draw_text(&p, s);
}

void pg_text_center(pg_canvas *c, int64_t cx, int64_t y, const char *s, int scale, pg_rgb color)
{
    pg_text_draw(c, cx - pg_text_width(s, scale) / 2, y, s, scale, color);
}

/* ---- colours ----------------------------------------------------------------------------- */

/* Ten hues of similar weight on white, chosen apart in hue and lightness so
 * neighbouring series stay distinct (blue, orange, green, red, purple, brown,
 * pink, gray, olive, cyan). */
static const pg_rgb PALETTE[PG_PLOT_PALETTE] = {
    {33, 102, 172}, {230, 97, 1},  {27, 150, 110}, {200, 30, 40},  {117, 82, 168},
    {140, 86, 60},  {214, 70, 160}, {110, 110, 110}, {160, 155, 20}, {20, 165, 200},
};

pg_rgb pg_plot_color(int i)
{
    int n = PG_PLOT_PALETTE;
    return PALETTE[((i % n) + n) % n];
}
