/* train_lm's figures (formats/plot.h), redrawn into --out at each evaluation:
 *   loss.png              training and validation loss against step (from log.csv)
 *   pos_layerN.png        a layer scheme's bias table, one panel per head
 *   bias_vs_distance.png  a distance-only scheme's bias against d = i - j, a line per head, a panel per layer
 *   pos_input.png, pos_input_similarity.png   an input scheme's table and the cosine similarity of its rows
 *   attn_layerN.png       attention probabilities per head on the first characters of the validation text
 * Which figures a scheme gets comes from its registry entry (hooks, role,
 * dist_only), never from its name. Every file is written atomically (a PNG
 * renamed over the old one), so a viewer never sees half a figure. */
#ifndef PG_EXAMPLES_LM_FIGURES_H
#define PG_EXAMPLES_LM_FIGURES_H

#include "lm_common.h"
#include "../formats/plot.h"

enum { LM_FIG_MAX_L = 64 }; /* positions drawn: min(--seq, 64) */

typedef struct lm_figs {
    const char *dir, *pos; /* --out, --pos */
    int64_t L;             /* positions in the heatmaps and the prompt of the attention maps */
    int files;             /* files the last lm_figs_draw wrote */
    int rounds;            /* evaluations that drew them */
    char list[512];        /* "loss.png, pos_layer0..3.png, ...": what the last round wrote */
} lm_figs;

static void lm_figs_path(char *path, size_t n, const lm_figs *f, const char *name, int64_t layer)
{
    if (layer >= 0)
        snprintf(path, n, "%s/%s%lld.png", f->dir, name, (long long)layer);
    else
        snprintf(path, n, "%s/%s.png", f->dir, name);
}

/* Appends "name" (or "nameA..B.png" for layers 0..layers-1) to f->list. */
static void lm_figs_note(lm_figs *f, const char *name, int64_t layers, int files)
{
    size_t k = strlen(f->list);
    if (layers > 1)
        snprintf(f->list + k, sizeof f->list - k, "%s%s0..%lld.png", k ? ", " : "", name, (long long)layers - 1);
    else
        snprintf(f->list + k, sizeof f->list - k, "%s%s%s.png", k ? ", " : "", name, layers == 1 ? "0" : "");
    f->files += files;
}

/* ---- loss.png ------------------------------------------------------------------------------------ */
/* The rows of log.csv (step,train_loss,val_loss,...) as three arrays of n
 * (val NaN where the row has none). 0, or -1 (cannot read, or out of memory). */
static int lm_figs_read_log(const char *log_path, double **step, double **train, double **val, int64_t *n)
{
    FILE *fp = fopen(log_path, "r");
    int64_t cap = 1024;
    *n = 0;
    *step = malloc((size_t)cap * sizeof **step);
    *train = malloc((size_t)cap * sizeof **train);
    *val = malloc((size_t)cap * sizeof **val);
    char line[256];
    bool ok = fp && *step && *train && *val && fgets(line, sizeof line, fp); /* the header */
    while (ok && fgets(line, sizeof line, fp)) {
        if (*n == cap) {
            cap *= 2;
            double *a = realloc(*step, (size_t)cap * sizeof *a), *b = a ? realloc(*train, (size_t)cap * sizeof *b) : NULL;
            double *c = b ? realloc(*val, (size_t)cap * sizeof *c) : NULL;
            *step = a ? a : *step;
            *train = b ? b : *train;
            *val = c ? c : *val;
            if (!(ok = a && b && c))
                break;
        }
        char *end, *p = line;
        (*step)[*n] = strtod(p, &end);
        p = *end == ',' ? end + 1 : end;
        (*train)[*n] = strtod(p, &end);
        p = *end == ',' ? end + 1 : end;
        (*val)[*n] = *p == ',' ? NAN : strtod(p, &end); /* an empty field: no evaluation at that step */
        (*n)++;
    }
    if (fp)
        fclose(fp);
    return ok ? 0 : -1;
}

static int lm_figs_loss(lm_figs *f, const char *log_path)
{
    double *step = NULL, *train = NULL, *val = NULL;
    int64_t n = 0, nv = 0;
    int rc = lm_figs_read_log(log_path, &step, &train, &val, &n);
    double *vs = rc == 0 ? malloc((size_t)(n + 1) * sizeof *vs) : NULL, *vv = vs ? malloc((size_t)(n + 1) * sizeof *vv) : NULL;
    for (int64_t i = 0; vv && i < n; i++)
        if (!isnan(val[i])) { /* the evaluations only, joined */
            vs[nv] = step[i];
            vv[nv++] = val[i];
        }
    char title[160], path[LM_PATH_MAX + 32];
    snprintf(title, sizeof title, "train_lm --pos %s: loss against step", f->pos);
    pg_series s[2] = {{.label = "training (each step's batch)", .x = step, .y = train, .n = n, .color = 0},
                      {.label = "validation", .x = vs, .y = vv, .n = nv, .style = PG_PLOT_STYLE_LINE_POINTS,
                       .color = 1}};
    pg_lineplot_opts o = {.title = title, .xlabel = "step", .ylabel = "cross-entropy (nats per character)",
                          .width = 800, .height = 480};
    lm_figs_path(path, sizeof path, f, "loss", -1);
    rc = vv && n > 0 ? pg_plot_lines(path, s, 2, &o) : -1;
    if (rc != 0)
        fprintf(stderr, "train_lm: cannot draw %s: %s\n", path, vv ? pg_last_error() : "cannot read the log");
    else
        lm_figs_note(f, "loss", 0, 1);
    free(step), free(train), free(val), free(vs), free(vv);
    return rc;
}

/* ---- the layer biases ---------------------------------------------------------------------------- */
/* bias (H, L, L) or (1, H, L, L) -> a heap (H, L, L) f64 copy with the causally hidden cells (j > i) NaN */
static pg_tensor *lm_figs_causal(const pg_tensor *bias, int64_t H, int64_t L)
{
    pg_tensor *t = pg_empty(NULL, PG_F64, PG_SHAPE(H, L, L));
    for (int64_t c = 0; t && c < H * L * L; c++)
        pg_f64(t)[c] = c % L <= c / L % L ? pg_get(bias, c) : NAN;
    return t;
}

/* Panel `layer` of bias_vs_distance.png: b_h(d) = bias[h, L - 1, L - 1 - d], d = 0..L-1. */
static int lm_figs_distance_panel(pg_canvas *out, const pg_tensor *b, int64_t H, int64_t L, int64_t layer)
{
    double *d = malloc((size_t)L * sizeof *d), *y = malloc((size_t)(H * L) * sizeof *y);
    pg_series s[PG_PLOT_PALETTE];
    char names[PG_PLOT_PALETTE][24], title[32];
    int n = H < PG_PLOT_PALETTE ? (int)H : PG_PLOT_PALETTE; /* the first 10 heads */
    for (int64_t k = 0; d && y && k < L; k++) {
        d[k] = (double)k;
        for (int h = 0; h < n; h++)
            y[h * L + k] = pg_get(b, (h * L + L - 1) * L + L - 1 - k);
    }
    for (int h = 0; h < n; h++) {
        snprintf(names[h], sizeof names[h], "head %d", h);
        s[h] = (pg_series){.label = names[h], .x = d, .y = y + h * L, .n = L, .color = h};
    }
    snprintf(title, sizeof title, "layer %lld", (long long)layer);
    pg_lineplot_opts o = {.title = title, .xlabel = "query - key distance d = i - j",
                          .ylabel = "bias added to the logit", .width = 560, .height = 400};
    int rc = d && y ? pg_plot_lines_canvas(out, s, n, &o) : -1;
    free(d), free(y);
    return rc;
}

/* Copies src into dst with its top-left corner at (x, y) (inside dst). */
static void lm_figs_blit(pg_canvas *dst, const pg_canvas *src, int64_t x, int64_t y)
{
    for (int64_t r = 0; r < src->height && y + r < dst->height; r++) {
        int64_t w = x + src->width <= dst->width ? src->width : dst->width - x;
        memcpy(dst->rgb + ((y + r) * dst->width + x) * 3, src->rgb + r * src->width * 3, (size_t)w * 3);
    }
}

/* The panels of bias_vs_distance.png, two a row under a title. 0 or -1. */
static int lm_figs_distance(lm_figs *f, pg_canvas *panels, int64_t n)
{
    char title[160], path[LM_PATH_MAX + 32];
    snprintf(title, sizeof title, "--pos %s: the bias against query-key distance, a line per head", f->pos);
    int64_t cols = n < 2 ? n : 2, rows = (n + 1) / 2, pw = panels[0].width, ph = panels[0].height, top = 40;
    pg_canvas all = {0};
    int rc = pg_canvas_init(&all, cols * pw, top + rows * ph);
    if (rc == 0) {
        pg_text_draw(&all, (all.width - pg_text_width(title, 2)) / 2, 10, title, 2, (pg_rgb){0, 0, 0});
        for (int64_t i = 0; i < n; i++)
            lm_figs_blit(&all, &panels[i], i % 2 * pw, top + i / 2 * ph);
        lm_figs_path(path, sizeof path, f, "bias_vs_distance", -1);
        rc = pg_canvas_write_png(&all, path);
    }
    pg_canvas_free(&all);
    if (rc == 0)
        lm_figs_note(f, "bias_vs_distance", 0, 1);
    return rc;
}

/* Whether a run draws bias_vs_distance.png: a layer scheme with bias tables (whose
 * figures lm_figs_draw draws) whose bias is of the distance alone */
static inline bool lm_figs_draws_distance(const pg_posmod_kind_info *k)
{
    return k && k->role != PG_POS_ROLE_INPUT && (k->hooks & PG_POS_HOOK_TABLE) && k->dist_only;
}

/* pos_layerN.png of each layer's first module with a bias_table, and for a
 * distance-only scheme bias_vs_distance.png. 0 or -1 after a message. */
static int lm_figs_biases(lm_figs *f, pg_graph *g, pg_lm *lm)
{
    int64_t H = lm->cfg.heads, L = f->L, layers = lm->cfg.layers, drawn = 0;
    bool dist = lm_figs_draws_distance(lm_pos_info(f->pos));
    pg_canvas *panels = calloc((size_t)layers, sizeof *panels);
    int rc = panels ? 0 : -1;
    for (int64_t layer = 0; rc == 0 && layer < layers; layer++) {
        pg_mha *attn = lm->blocks[layer]->attn;
        pg_posmod *m = NULL;
        for (int i = 0; !m && i < attn->n_pos; i++)
            m = attn->pos[i]->ops->bias_table ? attn->pos[i] : NULL;
        if (!m)
            continue;
        pg_pos_ctx c = {.self_attn = true, .causal = true, .B = 1, .heads = H, .head_dim = attn->head_dim,
                        .Lq = L, .Lk = L, .scale = attn->cfg.scale, .dtype = lm->cfg.dtype};
        pg_graph_reset(g);
        pg_no_grad_begin(g);
        pg_tensor *bias = pg_posmod_bias_table(g, m, &c);
        pg_no_grad_end(g);
        pg_tensor *maps = bias ? lm_figs_causal(bias, H, L) : NULL;
        char title[160], path[LM_PATH_MAX + 32];
        snprintf(title, sizeof title, "--pos %s, layer %lld: the positional bias each head adds to the logits",
                 f->pos, (long long)layer);
        pg_heatmap_opts o = {.title = title, .value_label = "bias added to the logit of (i, j)",
                             .masked_label = "hidden (causal: key j after query i)"};
        lm_figs_path(path, sizeof path, f, "pos_layer", layer);
        rc = maps ? pg_plot_heatmaps(path, maps, &o) : -1;
        if (rc == 0 && dist)
            rc = lm_figs_distance_panel(&panels[drawn], maps, H, L, layer);
        if (rc != 0)
            fprintf(stderr, "train_lm: cannot draw %s: %s\n", path, bias ? pg_last_error() : pg_graph_error(g));
        drawn += rc == 0;
        pg_tensor_free(maps);
    }
    pg_graph_reset(g);
    if (rc == 0 && drawn > 0)
        lm_figs_note(f, "pos_layer", drawn, (int)drawn);
    if (rc == 0 && drawn > 0 && dist && lm_figs_distance(f, panels, drawn) != 0) {
        fprintf(stderr, "train_lm: cannot draw %s/bias_vs_distance.png: %s\n", f->dir, pg_last_error());
        rc = -1;
    }
    for (int64_t i = 0; panels && i < layers; i++)
        pg_canvas_free(&panels[i]);
    free(panels);
    return rc;
}

/* ---- the input table ----------------------------------------------------------------------------- */
/* S[i][j] = P_i . P_j / (|P_i| |P_j|), the cosine similarity of P's rows (L, D) */
static pg_tensor *lm_figs_similarity(const pg_tensor *P, int64_t L, int64_t D)
{
    pg_tensor *S = pg_empty(NULL, PG_F64, PG_SHAPE(L, L));
    for (int64_t i = 0; S && i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            double dot = 0, ni = 0, nj = 0;
            for (int64_t d = 0; d < D; d++) {
                double a = pg_get(P, i * D + d), b = pg_get(P, j * D + d);
                dot += a * b;
                ni += a * a;
                nj += b * b;
            }
            pg_f64(S)[i * L + j] = ni > 0 && nj > 0 ? dot / sqrt(ni * nj) : 0.0;
        }
    return S;
}

/* What the input scheme adds, P (L, dim) -> pos_input.png, and the cosine
 * similarity of its rows -> pos_input_similarity.png. 0 or -1 after a message. */
static int lm_figs_input(lm_figs *f, pg_graph *g, pg_lm *lm)
{
    int64_t L = f->L, D = lm->cfg.dim;
    pg_graph_reset(g);
    pg_no_grad_begin(g);
    pg_tensor *P = pg_posmod_x_table(g, lm->pos[0], L, D, NULL);
    pg_no_grad_end(g);
    pg_tensor *S = P ? lm_figs_similarity(P, L, D) : NULL;
    char t1[160], t2[160], path[LM_PATH_MAX + 32];
    snprintf(t1, sizeof t1, "--pos %s: the vector added to the embedding at each position", f->pos);
    snprintf(t2, sizeof t2, "--pos %s: cosine similarity of the vectors of positions i and j", f->pos);
    const char *one[] = {"P[i, c]"}, *sim[] = {"cos(P_i, P_j)"};
    pg_heatmap_opts o1 = {.title = t1, .xlabel = "channel c", .ylabel = "position i", .panel_labels = one,
                          .value_label = "added to the embedding"};
    pg_heatmap_opts o2 = {.title = t2, .xlabel = "position j", .ylabel = "position i", .panel_labels = sim,
                          .value_label = "cosine similarity", .vmin = -1, .vmax = 1};
    lm_figs_path(path, sizeof path, f, "pos_input", -1);
    int rc = S ? pg_plot_heatmaps(path, P, &o1) : -1;
    if (rc == 0) {
        lm_figs_path(path, sizeof path, f, "pos_input_similarity", -1);
        rc = pg_plot_heatmaps(path, S, &o2);
    }
    if (rc != 0)
        fprintf(stderr, "train_lm: cannot draw %s: %s\n", path, P ? pg_last_error() : pg_graph_error(g));
    else {
        lm_figs_note(f, "pos_input", 0, 1);
        lm_figs_note(f, "pos_input_similarity", 0, 1);
    }
    pg_tensor_free(S);
    pg_graph_reset(g);
    return rc;
}

/* ---- attention maps ------------------------------------------------------------------------------ */
/* The block's attention input for x (B, L, dim): its mod_x, then its pre-norm (pg_block_forward's order). */
static pg_tensor *lm_figs_attn_input(pg_graph *g, pg_block *b, pg_tensor *x)
{
    x = pg_posmod_apply_x(g, b->attn->pos, b->attn->n_pos, x, NULL, NULL, b->cfg.heads, b->attn->head_dim, NULL);
    return b->cfg.norm == PG_NORM_RMS ? pg_rmsnorm_forward(g, (pg_rmsnorm *)b->norm1, x)
                                      : pg_layernorm_forward(g, (pg_layernorm *)b->norm1, x);
}

static int lm_figs_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The 99th percentile of the finite values of t (1 when there are none). */
static double lm_figs_p99(const pg_tensor *t)
{
    double *v = malloc((size_t)t->numel * sizeof *v), q = 1;
    int64_t n = 0;
    for (int64_t i = 0; v && i < t->numel; i++)
        if (isfinite(pg_get(t, i)))
            v[n++] = pg_get(t, i);
    if (n > 0) {
        qsort(v, (size_t)n, sizeof *v, lm_figs_cmp);
        q = v[(int64_t)(0.99 * (double)(n - 1))];
    }
    free(v);
    return q > 0 ? q : 1;
}

/* attn_layerN.png: weights (1, H, L, L) of layer on the prompt `text`. The
 * first queries see few keys and put most of their weight on them: the
 * colours stop at the 99th percentile so that the other rows stay readable. 0 or -1. */
static int lm_figs_attn_layer(lm_figs *f, const pg_tensor *w, int64_t H, int64_t layer, const char *text)
{
    pg_tensor *maps = lm_figs_causal(w, H, f->L);
    char title[320], path[LM_PATH_MAX + 32];
    snprintf(title, sizeof title, "--pos %s, layer %lld: attention probabilities of each head\non \"%s\"", f->pos,
             (long long)layer, text);
    double top = maps ? lm_figs_p99(maps) : 1;
    pg_heatmap_opts o = {.title = title, .value_label = "probability (top 1% clamped)", .vmin = 0, .vmax = top,
                         .masked_label = "hidden (causal: key j after query i)"};
    lm_figs_path(path, sizeof path, f, "attn_layer", layer);
    int rc = maps ? pg_plot_heatmaps(path, maps, &o) : -1;
    if (rc != 0)
        fprintf(stderr, "train_lm: cannot draw %s: %s\n", path, pg_last_error());
    pg_tensor_free(maps);
    return rc;
}

/* The prompt: the first L characters of the validation split as ids (1, L) in
 * g, and as text (a newline shown as "\n") in text (>= 2 L + 1 bytes). */
static pg_tensor *lm_figs_prompt(pg_graph *g, const lm_corpus *c, int64_t L, char *text)
{
    pg_tensor *ids = pg_empty(g, PG_I64, PG_SHAPE(1, L));
    size_t k = 0;
    for (int64_t i = 0; ids && i < L; i++) {
        uint8_t id = c->ids[c->n_train + i];
        unsigned char ch = c->chars[id];
        pg_i64(ids)[i] = id;
        if (ch == '\n')
            text[k++] = '\\', text[k++] = 'n';
        else
            text[k++] = ch >= 32 && ch < 127 ? (char)ch : '?';
    }
    text[k] = '\0';
    return ids;
}

/* attn_layerN.png of every layer, the model in eval mode. 0 or -1 after a message. */
static int lm_figs_attention(lm_figs *f, pg_graph *g, pg_lm *lm, const lm_corpus *c)
{
    char text[2 * LM_FIG_MAX_L + 1];
    bool was_training = lm->base.training;
    pg_module_train(&lm->base, false);
    pg_graph_reset(g);
    pg_no_grad_begin(g);
    pg_tensor *ids = lm_figs_prompt(g, c, f->L, text);
    pg_tensor *x = ids ? pg_embed_forward(g, lm->tok_emb, ids) : NULL; /* pg_lm_forward's start: (1, L, dim) */
    x = pg_posmod_apply_x(g, lm->pos, lm->n_pos, x, NULL, NULL, 0, 0, NULL);
    int rc = x ? 0 : -1;
    for (int64_t layer = 0; rc == 0 && layer < lm->cfg.layers; layer++) {
        pg_block *b = lm->blocks[layer];
        pg_tensor *w = pg_mha_attention_weights(g, b->attn, lm_figs_attn_input(g, b, x), NULL, NULL);
        rc = w ? lm_figs_attn_layer(f, w, lm->cfg.heads, layer, text) : -1;
        x = rc == 0 ? pg_block_forward(g, b, x, NULL) : NULL;
        rc = x ? rc : -1;
    }
    if (rc != 0 && pg_graph_error(g))
        fprintf(stderr, "train_lm: cannot compute the attention maps: %s\n", pg_graph_error(g));
    pg_no_grad_end(g);
    pg_graph_reset(g);
    pg_module_train(&lm->base, was_training);
    if (rc == 0)
        lm_figs_note(f, "attn_layer", lm->cfg.layers, (int)lm->cfg.layers);
    return rc;
}

/* ---- their memory --------------------------------------------------------------------------------- */
/* What drawing the figures adds to a run's peak, in bytes (the figures are drawn between
 * steps, while the step's graph is still held). One figure at a time: the attention maps'
 * canvas of a panel per head is the largest, ~2.5 MB a head at 64 positions, and a
 * distance-only scheme's bias_vs_distance.png holds a 560 x 400 panel per layer and their
 * grid (~1.4 MB a layer). Measured on train_lm's defaults (dim 64, --seq 64, 1..8 layers,
 * 4 and 8 heads, none, rotary, sinusoidal, alibi, dpb): 10-24 MB, this within 5 MB above. */
static inline double lm_figs_memory(const char *pos, int64_t heads, int64_t layers)
{
    bool dist = lm_figs_draws_distance(lm_pos_info(pos));
    return 1.5e6 + 2.5e6 * (double)heads + (dist ? 1.4e6 * (double)layers : 0);
}

/* ---- all of them ---------------------------------------------------------------------------------- */
/* Draws every figure of the run (a failed one is named on stderr; the others
 * are still drawn). 0, or -1 when any failed. */
static int lm_figs_draw(lm_figs *f, pg_graph *g, pg_lm *lm, const lm_corpus *c, const char *log_path)
{
    f->files = 0;
    f->list[0] = '\0';
    int rc = lm_figs_loss(f, log_path);
    const pg_posmod_kind_info *k = lm_pos_info(f->pos);
    if (k && k->role == PG_POS_ROLE_INPUT)
        rc |= lm_figs_input(f, g, lm);
    else if (k && (k->hooks & PG_POS_HOOK_TABLE))
        rc |= lm_figs_biases(f, g, lm);
    rc |= lm_figs_attention(f, g, lm, c);
    f->rounds++;
    return rc ? -1 : 0;
}

#endif
