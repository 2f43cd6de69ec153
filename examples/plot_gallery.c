/* plot_gallery: draws the figures of docs/plotting.md with formats/plot.h, so
 * the page's pictures come from a program, never from hand edits.
 *
 *   examples/plot_gallery [DIR]     (DIR defaults to docs/img)
 *
 * writes DIR/plot_heatmap.png (two heads of a causal ALiBi-like bias with a
 * planted offset marked), DIR/plot_lines.png (train and validation loss on a
 * log y axis, the end of warm-up marked), DIR/plot_scatter.png (analytic
 * against numeric gradients on the identity line) and DIR/plot_font.png (the
 * built-in font at scales 1 and 2), and prints each file's size. */
#include "../posgrad.h"

#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

static int report(const char *dir, const char *name, int rc)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (rc) {
        fprintf(stderr, "plot_gallery: %s: %s\n", path, pg_last_error());
        return 1;
    }
    struct stat st;
    printf("%-40s %8lld bytes\n", path, stat(path, &st) == 0 ? (long long)st.st_size : -1LL);
    return 0;
}

/* Two heads over 12 positions: -slope * (i - j) below the diagonal, a bump at
 * i - j = 3 on head 1, future keys masked (-inf). */
static int heatmap(const char *dir)
{
    enum { H = 2, L = 12 };
    static double v[H * L * L];
    for (int h = 0; h < H; h++)
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++) {
                double d = i - j, b = -(h ? 0.25 : 0.5) * d + (h && d == 3 ? 2.0 : 0.0);
                v[(h * L + i) * L + j] = j > i ? -INFINITY : b;
            }
    pg_tensor *t = pg_tensor_from_array(NULL, PG_F64, 3, (const int64_t[]){H, L, L}, v);
    const char *labels[H] = {"head 0 (slope 1/2)", "head 1 (slope 1/4, +2 at 3)"};
    const double diag[1] = {3};
    pg_heatmap_opts o = {.title = "Positional bias b(i, j)", .panel_labels = labels, .value_label = "bias",
                         .masked_label = "masked (future key)", .diagonals = diag, .n_diagonals = 1};
    char path[512];
    snprintf(path, sizeof path, "%s/plot_heatmap.png", dir);
    int rc = t ? pg_plot_heatmaps(path, t, &o) : -1;
    pg_tensor_free(t);
    return report(dir, "plot_heatmap.png", rc);
}

static int lines(const char *dir)
{
    enum { N = 60 };
    double step[N], train[N], val[N];
    for (int i = 0; i < N; i++) {
        step[i] = 50.0 * i;
        train[i] = 0.05 + 4.0 * exp(-i / 9.0) + 0.04 * sin(i * 1.7);
        val[i] = i % 5 ? NAN : 0.12 + 4.0 * exp(-i / 10.0); /* evaluated every 5th step: NaN breaks nothing */
    }
    double val_x[N / 5], val_y[N / 5];
    for (int i = 0; i < N / 5; i++) {
        val_x[i] = step[5 * i];
        val_y[i] = val[5 * i];
    }
    pg_series s[2] = {
        {.label = "train", .x = step, .y = train, .n = N, .color = -1},
        {.label = "validation", .x = val_x, .y = val_y, .n = N / 5, .style = PG_PLOT_STYLE_LINE_POINTS, .color = -1},
    };
    pg_plot_mark mark = {.x = 500, .label = "end of warm-up"};
    pg_lineplot_opts o = {.title = "Loss", .xlabel = "step", .ylabel = "cross-entropy (nats)", .log_y = true,
                          .marks = &mark, .n_marks = 1};
    char path[512];
    snprintf(path, sizeof path, "%s/plot_lines.png", dir);
    return report(dir, "plot_lines.png", pg_plot_lines(path, s, 2, &o));
}

static int scatter(const char *dir)
{
    enum { N = 40 };
    double a[N], b[N];
    for (int i = 0; i < N; i++) {
        a[i] = sin(i * 0.7) * (1 + i * 0.05);
        b[i] = a[i] * (1 + 1e-3 * cos(i * 1.3));
    }
    pg_series s = {.label = "dL/dx, 40 entries", .x = a, .y = b, .n = N, .style = PG_PLOT_STYLE_POINTS, .color = -1};
    pg_lineplot_opts o = {.title = "Gradient check", .xlabel = "analytic", .ylabel = "numeric",
                          .identity_line = true, .width = 480, .height = 420};
    char path[512];
    snprintf(path, sizeof path, "%s/plot_scatter.png", dir);
    return report(dir, "plot_scatter.png", pg_plot_lines(path, &s, 1, &o));
}

/* Every printable character at scale 1 and scale 2. */
static int font(const char *dir)
{
    pg_canvas c;
    if (pg_canvas_init(&c, 600, 150))
        return report(dir, "plot_font.png", -1);
    char rows[3][40];
    for (int r = 0; r < 3; r++) {
        int n = 0;
        for (int ch = 32 + r * 32; ch < 32 + (r + 1) * 32 && ch < 127; ch++)
            rows[r][n++] = (char)ch;
        rows[r][n] = '\0';
    }
    const pg_rgb ink = {51, 51, 51};
    for (int r = 0; r < 3; r++) {
        pg_text_draw(&c, 10, 10 + r * PG_FONT_CELL_H, rows[r], 1, ink);
        pg_text_draw(&c, 10, 50 + r * 2 * PG_FONT_CELL_H, rows[r], 2, ink);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/plot_font.png", dir);
    int rc = pg_canvas_write_png(&c, path);
    pg_canvas_free(&c);
    return report(dir, "plot_font.png", rc);
}

/* Every figure into dir; the number that failed. */
static int plot_gallery_run(const char *dir)
{
    return heatmap(dir) + lines(dir) + scatter(dir) + font(dir);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "docs/img";
    if (argc > 2) {
        fprintf(stderr, "usage: plot_gallery [DIR]   (writes DIR/plot_*.png; DIR defaults to docs/img)\n");
        return 2;
    }
    return plot_gallery_run(dir) ? 1 : 0;
}
#endif
