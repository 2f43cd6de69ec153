/* bias_lab's figures (a part of examples/bias_lab.c, included by it after its
 * types): per scheme and epoch a labelled heatmap of every head's bias with the
 * planted offsets marked as diagonals, and the bias-against-distance profile
 * the verdict reads, with the planted distances marked. Drawn by formats/plot.h
 * (docs/plotting.md). */
#ifndef PG_EXAMPLES_BIAS_LAB_FIGURES_H
#define PG_EXAMPLES_BIAS_LAB_FIGURES_H

#include "../formats/plot.h"

static const double BL_PLANTED[2] = {BL_K1, BL_K2};

/* "dpb, epoch 0 (initial bias)", "dpb, epoch 3" */
static void bl_epoch_title(char *buf, size_t n, const char *scheme, int epoch)
{
    snprintf(buf, n, "%s, epoch %d%s", scheme, epoch, epoch == 0 ? " (initial bias)" : "");
}

/* dir/bias_<scheme>_epoch<N>.png: one panel per head (query rows i, key columns
 * j), the future keys j > i (hidden by the causal mask) masked, the planted
 * distances 2 and 5 drawn as diagonals. bias (H, L, L). 0 or -1. */
static int bl_fig_heatmap(const char *dir, const char *scheme, int epoch, const double *bias)
{
    pg_tensor *maps = pg_full(NULL, PG_F64, PG_SHAPE(BL_HEADS, BL_SEQ, BL_SEQ), NAN);
    if (!maps)
        return -1;
    double *p = pg_f64(maps);
    for (int h = 0; h < BL_HEADS; h++)
        for (int i = 0; i < BL_SEQ; i++)
            for (int j = 0; j <= i; j++)
                p[(h * BL_SEQ + i) * BL_SEQ + j] = bias[(h * BL_SEQ + i) * BL_SEQ + j];
    char title[96], path[1024];
    bl_epoch_title(title, sizeof title, scheme, epoch);
    pg_heatmap_opts opts = {.title = title,
                            .xlabel = "key position j",
                            .ylabel = "query position i",
                            .value_label = "bias added to the logits",
                            .masked_label = "future key (masked)",
                            .min_panel_px = 320,
                            .diagonals = BL_PLANTED,
                            .n_diagonals = 2};
    snprintf(path, sizeof path, "%s/bias_%s_epoch%d.png", dir, scheme, epoch);
    int rc = pg_plot_heatmaps(path, maps, &opts);
    pg_tensor_free(maps);
    return rc;
}

/* The profile (H, L) (profile[h * L + d], distance d = i - j) as one line per
 * head against d, the planted distances marked; title as given. 0 or -1. */
static int bl_fig_profile_to(const char *path, const char *title, const double *profile)
{
    static const double D[BL_SEQ] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    static const char *const HEAD[] = {"head 0", "head 1", "head 2", "head 3"};
    _Static_assert(BL_SEQ == 16 && BL_HEADS <= 4, "the distance and head tables above");
    pg_series s[BL_HEADS];
    for (int h = 0; h < BL_HEADS; h++)
        s[h] = (pg_series){.label = HEAD[h], .x = D, .y = profile + h * BL_SEQ, .n = BL_SEQ,
                           .style = PG_PLOT_STYLE_LINE_POINTS, .color = h};
    const pg_plot_mark marks[2] = {{BL_K1, "planted 2"}, {BL_K2, "planted 5"}};
    pg_lineplot_opts opts = {.title = title,
                             .xlabel = "distance d = i - j (tokens back)",
                             .ylabel = "mean bias over queries (logits)",
                             .marks = marks,
                             .n_marks = 2,
                             .xmin = 0,
                             .xmax = BL_SEQ - 1};
    return pg_plot_lines(path, s, BL_HEADS, &opts);
}

/* dir/profile_<scheme>_epoch<N>.png */
static int bl_fig_profile(const char *dir, const char *scheme, int epoch, const double *profile)
{
    char title[128], head[96], path[1024];
    bl_epoch_title(head, sizeof head, scheme, epoch);
    snprintf(title, sizeof title, "%s: bias against distance", head);
    snprintf(path, sizeof path, "%s/profile_%s_epoch%d.png", dir, scheme, epoch);
    return bl_fig_profile_to(path, title, profile);
}

/* dir/missed_<scheme>_seed<S>.png: the final profile of a run whose heads did
 * not peak at 2 and 5. */
static int bl_fig_missed(const char *dir, const char *scheme, uint64_t seed, const double *profile)
{
    char title[128], path[1024];
    snprintf(title, sizeof title, "%s, seed %" PRIu64 ", last epoch: bias against distance", scheme, seed);
    snprintf(path, sizeof path, "%s/missed_%s_seed%" PRIu64 ".png", dir, scheme, seed);
    return bl_fig_profile_to(path, title, profile);
}

#endif
