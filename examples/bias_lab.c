/* bias_lab: watch positional biases learn a planted rule.
 *
 * The task. Tokens are random symbols 0..7. The target at position i is the
 * pair (x[i - K1], x[i - K2]) encoded as one class 8 x[i - K1] + x[i - K2]
 * (64 classes; positions i < K2 have no target). Nothing in a token says where
 * it is, so a 1-layer causal transformer with 2 heads can only solve it if one
 * head looks back exactly K1 tokens and the other exactly K2: the planted
 * offsets. Where a head looks is decided by its positional bias, so the bias
 * must learn to peak at K1 in one head and at K2 in the other.
 *
 * The model is pg_lm (1 block, 2 heads, dim 32) with one positional bias
 * scheme in its attention: dpb, alibi with a learned divisor, t5, xl, rel1d,
 * kerple, fire, cope, fox (every learnable bias; sandwich, which has no
 * parameters, has nothing to learn and no row).
 * Before training and after each epoch it draws, per scheme, a labelled
 * heatmap of every head's bias (query rows, key columns; hidden future keys
 * masked; the planted offsets as diagonals) and the bias against distance
 * (bias_lab_figures.h), and prints the bias over distance as a row of ASCII
 * shades. The bias shown is what the scheme
 * adds to the logits, averaged over a batch: for dpb, alibi and t5 it depends
 * on positions alone (kerple, fire too); xl, rel1d and cope mix in the query / key
 * content and fox the layer's input x (pg_pos_ctx.x), which the average keeps.
 *
 * At the end: per scheme, whether each head's bias peaks at a planted offset
 * (and the two heads cover both), the accuracy, and the learned divisor.
 * ALiBi's bias is -slope |i - j| / divisor, largest at distance 0 whatever the
 * divisor: it cannot peak at K1 or K2, which is the lesson of its row; so are
 * KERPLE's (-r1 log(1 + r2 d), r1, r2 > 0) and FoX's (c_i - c_j, a sum of
 * log gates <= 0) for the same reason. docs/examples.md has the new rows.
 *
 * One run can mislead (a seed where both heads settle on distance 2), so by
 * default the lab runs several seeds and a verdict is a rate: how often each
 * scheme recovers both offsets (bias_lab_seeds.h). The figures of the first
 * seed, the verdicts and the rates go into a self-contained report.html
 * (bias_lab_report.h) with a slider over the epochs of each scheme.
 * docs/teaching.md walks through a default run. */
#include "../posgrad.h" /* relative to this file: also found when a test includes it */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { BL_SYMBOLS = 8, BL_VOCAB = BL_SYMBOLS * BL_SYMBOLS, BL_K1 = 2, BL_K2 = 5 };
enum { BL_HEADS = 2, BL_DIM = 32, BL_SEQ = 16, BL_MAX_SCHEMES = 9, BL_MAX_SEEDS = 64 };
/* The default --seeds: seeds 1..5, about 90 s for the nine schemes on 2 cores:
 * one seed is about 30 s, and the seeds after the first train two at a time
 * (bl_run_quiet_seeds; docs/teaching.md has the measurements). */
#define BL_DEFAULT_SEEDS "5"

/* The lab's schemes, in the order "all" runs them, each with the options the lab
 * trains it with. Each is a registered kind with an additive bias (mod_bias),
 * which bias_lab_check confirms from the registry (pg_posmod_info; mean_bias
 * gives the bias q, k, v and x, so NEEDS_QK and NEEDS_X kinds qualify); the table
 * is the lab's experiment, not a list of what exists: a scheme joins the lab
 * with a row here and the options that let it learn the task. */
static const pg_alibi_opts BL_ALIBI = {.div = {.divide = 1.0, .learned = true}};
static const pg_t5_opts BL_T5 = {.causal = true, .num_buckets = 16, .max_distance = 32}; /* exact up to 7 */
static const pg_rel1d_opts BL_REL1D = {.tokens = BL_SEQ, .heads = BL_HEADS};             /* a table per head */
/* bio DPB (pg_dpb_bio(): the zero options) with 2 blocks and LayerNorms: depth 1
 * is linear in the distance (it cannot peak), and without norms both heads often
 * settle on the same offset */
static const pg_dpb_opts BL_DPB = {.depth = 2, .norm = true};
/* FIRE's threshold L at the lab's length (its default 512 squeezes u = psi(d) / psi(L) of
 * distances 0..15 into 0 .. 0.23); KERPLE (log), CoPE and FoX with their defaults */
static const pg_fire_opts BL_FIRE = {.init_L = BL_SEQ};

typedef struct bl_scheme {
    const char *kind; /* the registry kind */
    const void *opts; /* its options in the lab; NULL: its defaults */
} bl_scheme;

static const bl_scheme BL_LAB[BL_MAX_SCHEMES] = {
    {"dpb", &BL_DPB}, {"alibi", &BL_ALIBI}, {"t5", &BL_T5},  {"xl", NULL},   {"rel1d", &BL_REL1D},
    {"kerple", NULL}, {"fire", &BL_FIRE},   {"cope", NULL}, {"fox", NULL},
};

/* The lab's scheme names alone, BL_SCHEMES[0 .. BL_MAX_SCHEMES) (the smoke test reads them). */
static inline const char *const *bl_scheme_names(void)
{
    static const char *names[BL_MAX_SCHEMES];
    for (int i = 0; i < BL_MAX_SCHEMES; i++)
        names[i] = BL_LAB[i].kind;
    return names;
}
#define BL_SCHEMES (bl_scheme_names())

/* "dpb<sep>alibi<sep>...<last>all" into buf */
static const char *bl_scheme_list(char *buf, size_t n, const char *sep, const char *last)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < BL_MAX_SCHEMES && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", BL_LAB[i].kind, i + 1 < BL_MAX_SCHEMES ? sep : last);
    if (used < n)
        snprintf(buf + used, n - used, "all");
    return buf;
}

typedef struct bias_lab_opts {
    const char *scheme;  /* one of BL_SCHEMES, or "all" */
    int epochs;          /* heatmaps after each epoch */
    int steps;           /* optimizer steps per epoch */
    int batch;
    int probe;           /* sequences in the fixed probe batch (pictures, verdicts, accuracy) */
    const char *out_dir; /* figures and report.html go here (created if missing); NULL: none */
    uint64_t seed;       /* bias_lab_run's seed */
    const char *seeds;   /* bias_lab_seeds_run's: "N" (seeds 1..N) or a list "3,7,11"; NULL or "": seed */
    int threads;         /* 0: leave the pool as it is */
    double lr;
    int verbose;         /* print progress, text heatmaps and verdicts */
} bias_lab_opts;

typedef struct bias_lab_scheme_result {
    const char *scheme;
    uint64_t seed;
    double first_loss, last_loss; /* mean over the first / last 10% of steps (at least one step) */
    double probe_loss_before;     /* loss on a fixed probe batch (never trained on) before training */
    double probe_loss_after;      /* ... and after */
    double accuracy;              /* on the probe batch, over positions with a target */
    int peak[BL_HEADS];           /* distance where each head's bias is largest */
    double margin[BL_HEADS];      /* peak minus the second largest (bias units) */
    bool peaks_ok;                /* every head peaks at K1 or K2, and both offsets are covered */
    bool has_divisor;
    double divisor;               /* learned effective divisor max(exp(div), 1e-8) */
    double profile[BL_HEADS * BL_SEQ]; /* the final bias against distance (the peaks' source) */
    int pngs;                     /* epochs pictured: epochs + 1 (epoch 0 is the initial bias), each a
                                     heatmap and a profile figure */
    double seconds;
} bias_lab_scheme_result;

typedef struct bias_lab_result {
    int n;
    bias_lab_scheme_result s[BL_MAX_SCHEMES];
} bias_lab_result;

static bias_lab_opts bias_lab_defaults(void)
{
    return (bias_lab_opts){.scheme = "all", .epochs = 8, .steps = 250, .batch = 32, .probe = 64,
                           .out_dir = "bias_lab_out", .seed = 1, .seeds = BL_DEFAULT_SEEDS, .threads = 0,
                           .lr = 1e-2, .verbose = 1};
}

/* ---- data ---------------------------------------------------------------------------------- */

/* ids (B, L) random symbols; targets (B, L): 8 x[i-K1] + x[i-K2], or PG_LM_IGNORE for i < K2 */
static void make_batch(pg_graph *g, pg_rng *r, int64_t B, pg_tensor **ids, pg_tensor **targets)
{
    *ids = pg_empty(g, PG_I64, PG_SHAPE(B, BL_SEQ));
    *targets = pg_empty(g, PG_I64, PG_SHAPE(B, BL_SEQ));
    if (!*ids || !*targets)
        return;
    int64_t *x = pg_i64(*ids), *y = pg_i64(*targets);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < BL_SEQ; i++) {
            int64_t *row = x + b * BL_SEQ;
            row[i] = (int64_t)(pg_rng_uniform(r) * BL_SYMBOLS) % BL_SYMBOLS;
            y[b * BL_SEQ + i] = i < BL_K2 ? PG_LM_IGNORE : BL_SYMBOLS * row[i - BL_K1] + row[i - BL_K2];
        }
}

/* ---- the model --------------------------------------------------------------------------------- */

static pg_lm *make_model(const char *scheme, uint64_t seed)
{
    pg_lm_config c = pg_lm_defaults(BL_VOCAB, BL_DIM, BL_HEADS, 1);
    c.max_len = BL_SEQ;
    c.seed = seed;
    c.n_layer_pos = 1;
    c.layer_pos[0].kind = scheme;
    for (int i = 0; i < BL_MAX_SCHEMES; i++)
        if (strcmp(scheme, BL_LAB[i].kind) == 0)
            c.layer_pos[0].opts = BL_LAB[i].opts;
    return pg_lm_new(&c);
}

/* q, k, v (B, H, L, Dh) of the block's attention for the batch ids: the
 * projections pg_mha_forward makes (channel c = head * Dh + d); *xin (B, L, dim)
 * the attention's input (after the pre-norm), which PG_POS_NEEDS_X schemes read. */
static bool block_qkv(pg_graph *g, pg_lm *lm, pg_tensor *ids, pg_tensor **qkv, pg_tensor **xin)
{
    pg_block *blk = lm->blocks[0];
    int64_t B = ids->shape[0], L = ids->shape[1], H = blk->attn->cfg.heads, Dh = blk->attn->head_dim;
    pg_tensor *x = pg_embed_forward(g, lm->tok_emb, ids);
    x = pg_layernorm_forward(g, (pg_layernorm *)blk->norm1, x);
    *xin = x;
    pg_tensor *t = pg_linear_forward(g, blk->attn->to_qkv, x); /* (B, L, 3 dim) */
    t = pg_reshape(g, t, PG_SHAPE(B, L, 3, H, Dh));
    t = pg_permute(g, t, (const int[]){2, 0, 3, 1, 4}); /* (3, B, H, L, Dh) */
    for (int i = 0; i < 3; i++) {
        qkv[i] = pg_reshape(g, pg_narrow(g, t, 0, i, 1), PG_SHAPE(B, H, L, Dh));
        if (!qkv[i])
            return false;
    }
    return true;
}

/* The bias the scheme adds to the logits, averaged over the batch ids:
 * bias[h * L * L + i * L + j] (H, L, L). 0 or -1. */
static int mean_bias(pg_graph *g, pg_lm *lm, pg_tensor *ids, double *bias)
{
    pg_mha *m = lm->blocks[0]->attn;
    pg_posmod *pm = m->pos[0];
    int64_t B = ids->shape[0], H = m->cfg.heads;
    pg_tensor *qkv[3], *x;
    if (!block_qkv(g, lm, ids, qkv, &x))
        return -1;
    pg_pos_ctx c = {.self_attn = true, .causal = true, .B = B, .heads = H, .head_dim = m->head_dim,
                    .Lq = BL_SEQ, .Lk = BL_SEQ, .scale = m->cfg.scale, .dtype = m->cfg.dtype, .x = x};
    pg_tensor *b = pm->ops->mod_bias(g, pm, qkv[0], qkv[1], qkv[2], &c);
    b = pg_broadcast_to(g, b, PG_SHAPE(B, H, BL_SEQ, BL_SEQ));
    b = pg_mean(g, b, 1, (const int[]){0}, false); /* (H, L, L) */
    if (!b)
        return -1;
    for (int64_t i = 0; i < b->numel; i++)
        bias[i] = pg_get(b, i);
    return 0;
}

/* profile[h * L + d]: bias at distance d = i - j >= 0, averaged over the queries i >= d */
static void distance_profile(const double *bias, double *profile)
{
    for (int h = 0; h < BL_HEADS; h++)
        for (int d = 0; d < BL_SEQ; d++) {
            double s = 0;
            for (int i = d; i < BL_SEQ; i++)
                s += bias[(h * BL_SEQ + i) * BL_SEQ + (i - d)];
            profile[h * BL_SEQ + d] = s / (BL_SEQ - d);
        }
}

/* ---- pictures ------------------------------------------------------------------------------------ */

#include "bias_lab_figures.h"

/* One row of shades per head over distance 0..L-1, darkest = lowest bias of that head. */
static void print_text_heatmap(const double *profile)
{
    static const char SHADES[] = " .:-=+*#%@";
    printf("    distance  ");
    for (int d = 0; d < BL_SEQ; d++)
        putchar('0' + d % 10);
    putchar('\n');
    for (int h = 0; h < BL_HEADS; h++) {
        const double *pr = profile + h * BL_SEQ;
        double lo = pr[0], hi = pr[0];
        int peak = 0;
        for (int d = 1; d < BL_SEQ; d++) {
            lo = fmin(lo, pr[d]);
            hi = fmax(hi, pr[d]);
            peak = pr[d] > pr[peak] ? d : peak;
        }
        printf("    head %d   [", h);
        for (int d = 0; d < BL_SEQ; d++) {
            int s = hi > lo ? (int)lround((pr[d] - lo) / (hi - lo) * 9) : 0;
            putchar(SHADES[s]);
        }
        printf("]  peak at %d, range %.2f .. %.2f\n", peak, lo, hi);
    }
    printf("    planted   ");
    for (int d = 0; d < BL_SEQ; d++)
        putchar(d == BL_K1 || d == BL_K2 ? '^' : ' ');
    putchar('\n');
}

/* ---- verdicts ----------------------------------------------------------------------------------------- */

static void find_peaks(const double *profile, bias_lab_scheme_result *s)
{
    for (int h = 0; h < BL_HEADS; h++) {
        const double *pr = profile + h * BL_SEQ;
        int best = 0;
        for (int d = 1; d < BL_SEQ; d++)
            best = pr[d] > pr[best] ? d : best;
        double second = -INFINITY;
        for (int d = 0; d < BL_SEQ; d++)
            if (d != best)
                second = fmax(second, pr[d]);
        s->peak[h] = best;
        s->margin[h] = pr[best] - second;
    }
    bool a = s->peak[0] == BL_K1 || s->peak[1] == BL_K1, b = s->peak[0] == BL_K2 || s->peak[1] == BL_K2;
    s->peaks_ok = a && b;
}

/* Fraction of positions with a target where the argmax logit is the target. */
static double accuracy(pg_graph *g, pg_lm *lm, pg_tensor *ids, pg_tensor *targets)
{
    pg_tensor *logits = pg_lm_forward(g, lm, ids, NULL); /* (B, L, V) */
    if (!logits)
        return NAN;
    int64_t rows = ids->numel, hits = 0, n = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t y = pg_i64(targets)[r];
        if (y == PG_LM_IGNORE)
            continue;
        int64_t best = 0;
        for (int64_t v = 1; v < BL_VOCAB; v++)
            best = pg_get(logits, r * BL_VOCAB + v) > pg_get(logits, r * BL_VOCAB + best) ? v : best;
        hits += best == y;
        n++;
    }
    return n ? (double)hits / (double)n : NAN;
}

static void read_divisor(pg_lm *lm, bias_lab_scheme_result *s)
{
    pg_tensor *div = pg_module_find_param(&lm->base, "blocks.0.attn.pos.div");
    s->has_divisor = div != NULL;
    s->divisor = div ? fmax(exp(pg_get(div, 0)), 1e-8) : 1.0;
}

/* ---- training one scheme ---------------------------------------------------------------------------- */

typedef struct trainer {
    pg_lm *lm;
    pg_tensor_list params;
    pg_optim *opt;
    pg_schedule *sched;
    pg_graph *g;
} trainer;

static void trainer_free(trainer *t)
{
    pg_graph_free(t->g);
    pg_schedule_free(t->sched);
    pg_optim_free(t->opt);
    pg_tensor_list_free(&t->params);
    if (t->lm)
        pg_module_free(&t->lm->base);
}

static int trainer_init(trainer *t, const char *scheme, const bias_lab_opts *o)
{
    memset(t, 0, sizeof *t);
    t->lm = make_model(scheme, o->seed);
    if (!t->lm)
        return -1;
    t->params = pg_module_parameters(&t->lm->base);
    pg_optim_hparams h = pg_adamw_hparams(o->lr);
    t->opt = pg_optim_new(PG_ADAMW, &h);
    int64_t total = (int64_t)o->epochs * o->steps;
    if (!t->opt || pg_optim_add_decay_groups(t->opt, &t->params, pg_no_decay_default, NULL, o->lr, 0.01) != 0)
        return -1;
    int64_t warmup = total > 1 ? total / 10 + 1 : 0; /* a single step has no room for a warmup */
    t->sched = pg_schedule_new(t->opt, pg_sched_warmup_cosine(warmup, 0.1, total, 0.1));
    t->g = pg_graph_new();
    return t->sched && t->g ? 0 : -1;
}

/* Loss on the probe batch without recording; NAN on failure. */
static double probe_loss(trainer *t, pg_tensor *ids, pg_tensor *targets)
{
    pg_graph_reset(t->g);
    pg_no_grad_begin(t->g);
    pg_tensor *loss = pg_lm_loss(t->g, t->lm, ids, targets, NULL);
    pg_no_grad_end(t->g);
    return loss ? pg_item(loss) : NAN;
}

/* One optimizer step on a fresh batch; the loss, or NAN on failure. */
static double train_step(trainer *t, pg_rng *r, int64_t B)
{
    pg_graph_reset(t->g);
    pg_tensor *ids, *targets;
    make_batch(t->g, r, B, &ids, &targets);
    pg_tensor *loss = pg_lm_loss(t->g, t->lm, ids, targets, NULL);
    if (!loss || pg_backward(t->g, loss) != 0)
        return NAN;
    double v = pg_item(loss);
    pg_clip_grad_norm(t->params.tensors, t->params.n, 1.0);
    if (pg_optim_step(t->opt) != 0)
        return NAN;
    pg_optim_zero_grad(t->opt);
    pg_schedule_step(t->sched);
    return v;
}

/* Bias of the current model on a fixed probe batch: heatmap, text, peaks. */
static int inspect(trainer *t, pg_tensor *probe, const bias_lab_opts *o, const char *scheme, int epoch,
                   bias_lab_scheme_result *s)
{
    double bias[BL_HEADS * BL_SEQ * BL_SEQ], profile[BL_HEADS * BL_SEQ];
    pg_graph_reset(t->g);
    pg_no_grad_begin(t->g);
    int rc = mean_bias(t->g, t->lm, probe, bias);
    pg_no_grad_end(t->g);
    if (rc != 0)
        return -1;
    distance_profile(bias, profile);
    find_peaks(profile, s);
    memcpy(s->profile, profile, sizeof profile);
    if (o->out_dir) {
        if (bl_fig_heatmap(o->out_dir, scheme, epoch, bias) != 0 || bl_fig_profile(o->out_dir, scheme, epoch, profile) != 0)
            return -1;
        s->pngs++;
    }
    if (o->verbose)
        print_text_heatmap(profile);
    return 0;
}

/* Epoch e (1-based) of o->steps steps; adds to the first / last 10% loss means. 0 or -1. */
static int train_epoch(trainer *t, pg_rng *data_rng, const bias_lab_opts *o, int e, bias_lab_scheme_result *s)
{
    int total = o->epochs * o->steps, window = total / 10 > 0 ? total / 10 : 1;
    double sum = 0;
    for (int k = 0; k < o->steps; k++) {
        int step = (e - 1) * o->steps + k;
        double loss = train_step(t, data_rng, o->batch);
        if (!isfinite(loss))
            return -1;
        sum += loss;
        s->first_loss += step < window ? loss / window : 0;
        s->last_loss += step >= total - window ? loss / window : 0;
    }
    if (o->verbose)
        printf("  epoch %d: mean loss %.4f\n", e, sum / o->steps);
    return 0;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run_scheme(const char *scheme, const bias_lab_opts *o, bias_lab_scheme_result *s)
{
    double t0 = seconds_now();
    memset(s, 0, sizeof *s);
    s->scheme = scheme;
    s->seed = o->seed;
    trainer t;
    memset(&t, 0, sizeof t);
    pg_rng data_rng = pg_rng_init(o->seed * 7919 + 17); /* the same data for every scheme */
    pg_tensor *probe = NULL, *probe_y = NULL;
    make_batch(NULL, &data_rng, o->probe, &probe, &probe_y);
    int rc = probe && probe_y ? trainer_init(&t, scheme, o) : -1;
    if (rc == 0) {
        s->probe_loss_before = probe_loss(&t, probe, probe_y);
        rc = isfinite(s->probe_loss_before) ? 0 : -1;
    }
    if (o->verbose && rc == 0)
        printf("== %s ==\n  epoch 0 (initial bias)\n", scheme);
    if (rc == 0)
        rc = inspect(&t, probe, o, scheme, 0, s);
    for (int e = 1; rc == 0 && e <= o->epochs; e++)
        rc = train_epoch(&t, &data_rng, o, e, s) == 0 ? inspect(&t, probe, o, scheme, e, s) : -1;
    if (rc == 0) {
        s->probe_loss_after = probe_loss(&t, probe, probe_y);
        pg_graph_reset(t.g);
        pg_no_grad_begin(t.g);
        s->accuracy = accuracy(t.g, t.lm, probe, probe_y);
        pg_no_grad_end(t.g);
        read_divisor(t.lm, s);
    } else {
        const char *why = t.g && pg_graph_error(t.g) ? pg_graph_error(t.g) : pg_last_error();
        fprintf(stderr, "bias_lab: %s: %s\n", scheme, why);
    }
    trainer_free(&t);
    pg_tensor_free(probe);
    pg_tensor_free(probe_y);
    s->seconds = seconds_now() - t0;
    return rc;
}

static void print_verdicts(const bias_lab_result *r)
{
    printf("\n| scheme | loss first -> last | accuracy | head 0 peak | head 1 peak | peaks at %d and %d? | "
           "divisor |\n|---|---|---|---|---|---|---|\n",
           BL_K1, BL_K2);
    for (int i = 0; i < r->n; i++) {
        const bias_lab_scheme_result *s = &r->s[i];
        char div[32] = "-";
        if (s->has_divisor)
            snprintf(div, sizeof div, "%.3g (from 1)", s->divisor);
        printf("| %s | %.3f -> %.3f | %.1f%% | %d (margin %.2f) | %d (margin %.2f) | %s | %s |\n", s->scheme,
               s->first_loss, s->last_loss, 100 * s->accuracy, s->peak[0], s->margin[0], s->peak[1], s->margin[1],
               s->peaks_ok ? "yes" : "no", div);
    }
}

#include "bias_lab_seeds.h"
#include "bias_lab_report.h"

/* ---- options ---------------------------------------------------------------------------------------- */

enum { BL_N_FLAGS = 10 };

/* The flags, pointing into o: the one place that states each range.
 * (bias_lab_main adds --quiet, which sets o->verbose = 0.) */
static int bias_lab_flags(bias_lab_opts *o, cli_flag *f)
{
    static char help[256]; /* the flags outlive this call */
    const cli_flag flags[BL_N_FLAGS] = {
        {"scheme", CLI_STR, &o->scheme, .help = bl_scheme_list(help, sizeof help, ", ", " or ")},
        {"epochs", CLI_INT, &o->epochs, "figures after each epoch", .min = 1, .max = 1000},
        {"steps", CLI_INT, &o->steps, "optimizer steps per epoch", .min = 1, .max = 1000000},
        {"batch", CLI_INT, &o->batch, "sequences per step", .min = 1, .max = 65536},
        {"probe", CLI_INT, &o->probe, "sequences in the fixed probe batch for pictures and verdicts", .min = 1,
         .max = 65536},
        {"lr", CLI_DOUBLE, &o->lr, "AdamW learning rate", .min = 0, .max = INFINITY, .above_min = true},
        {"out", CLI_STR, &o->out_dir, .help = "where the figures and report.html go, created if missing ('': none)"},
        {"seed", CLI_U64, &o->seed, .help = "model and data seed of a single run (instead of --seeds)"},
        {"seeds", CLI_STR, &o->seeds, .help = "N: seeds 1..N, or a list like 1,2,3; a verdict is a rate over them"},
        {"threads", CLI_INT, &o->threads, "worker threads (0: PG_NUM_THREADS or all cores)", .min = 0,
         .max = PG_MAX_THREADS},
    };
    memcpy(f, flags, sizeof flags);
    return BL_N_FLAGS;
}

/* Every option of o, before any work. 0, or -1 after one line on stderr. */
static int bias_lab_check(const bias_lab_opts *o)
{
    bias_lab_opts copy = *o; /* the flags table points into it */
    cli_flag flags[BL_N_FLAGS];
    if (cli_check("bias_lab", flags, bias_lab_flags(&copy, flags)) != 0)
        return -1;
    bool known = o->scheme && strcmp(o->scheme, "all") == 0;
    for (int i = 0; i < BL_MAX_SCHEMES && !known; i++)
        known = o->scheme && strcmp(o->scheme, BL_LAB[i].kind) == 0;
    if (!known) {
        char list[256];
        fprintf(stderr, "bias_lab: --scheme: unknown scheme '%s' (accepted: %s)\n", o->scheme ? o->scheme : "(null)",
                bl_scheme_list(list, sizeof list, " ", " "));
        return -1;
    }
    uint64_t seeds[BL_MAX_SEEDS];
    int n_seeds;
    char why[128];
    if (o->seeds && *o->seeds && bl_parse_seeds(o->seeds, seeds, &n_seeds, why, sizeof why) != 0) {
        fprintf(stderr, "bias_lab: --seeds wants a count in 1..%d or a list like 1,2,3, got '%s' (%s)\n",
                BL_MAX_SEEDS, o->seeds, why);
        return -1;
    }
    for (int i = 0; i < BL_MAX_SCHEMES; i++) { /* the lab reads each scheme's mod_bias */
        const pg_posmod_kind_info *k = pg_posmod_info(BL_LAB[i].kind);
        if (!k || !(k->hooks & PG_POS_HOOK_BIAS)) {
            fprintf(stderr, "bias_lab: '%s' is not a registered scheme with an additive bias (%s)\n", BL_LAB[i].kind,
                    k ? "no mod_bias" : pg_last_error());
            return -1;
        }
    }
    return 0;
}

/* Runs the lab; 0, or -1 (one line on stderr) for a bad option, found before
 * any work, or a failure while running. */
/* bias_lab_run after its checks; the lanes call it directly (bias_lab_check
 * fills static tables: one thread at a time). */
static int bias_lab_run_checked(const bias_lab_opts *o, bias_lab_result *r)
{
    memset(r, 0, sizeof *r);
    bool all = strcmp(o->scheme, "all") == 0;
    if (o->out_dir && mkdir(o->out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bias_lab: cannot create --out directory '%s': %s\n", o->out_dir, strerror(errno));
        return -1;
    }
    if (o->threads > 0 && pg_set_num_threads(o->threads) != 0) {
        fprintf(stderr, "bias_lab: %s\n", pg_last_error());
        return -1;
    }
    for (int i = 0; i < BL_MAX_SCHEMES; i++) {
        if (!all && strcmp(o->scheme, BL_LAB[i].kind) != 0)
            continue;
        if (run_scheme(BL_LAB[i].kind, o, &r->s[r->n++]) != 0)
            return -1;
    }
    if (o->verbose)
        print_verdicts(r);
    return 0;
}

int bias_lab_run(const bias_lab_opts *o, bias_lab_result *r)
{
    memset(r, 0, sizeof *r);
    return bias_lab_check(o) != 0 ? -1 : bias_lab_run_checked(o, r);
}

/* The seeds after the first, trained quietly in lanes: the calling thread and
 * lanes - 1 more each take the next seed and train it on one thread (the lab's
 * model is too small for a second core to help inside a step, so two seeds at
 * once take the time of one). Results go to runs[k], k in 1..n-1, whatever
 * lane ran them, so the rates do not depend on the lanes. */
typedef struct bl_lanes {
    const bias_lab_opts *o;
    const uint64_t *seeds;
    int n;
    atomic_int next;          /* the next seed index to take */
    bias_lab_result *runs;    /* n results */
    int *rc;                  /* n return codes */
} bl_lanes;

static void *bl_lane(void *arg)
{
    bl_lanes *L = arg;
    for (int k; (k = atomic_fetch_add(&L->next, 1)) < L->n;) {
        bias_lab_opts one = *L->o;
        one.seed = L->seeds[k];
        one.out_dir = NULL;
        one.verbose = 0;
        one.threads = 0; /* the pool is set to one thread for the lanes */
        L->rc[k] = bias_lab_run_checked(&one, &L->runs[k]); /* checked by bias_lab_seeds_run */
    }
    return NULL;
}

/* Runs seeds 1..n-1 of seeds in up to pg_num_threads() lanes; 0, or -1 when a
 * run failed (it has said why on stderr). */
static int bl_run_quiet_seeds(const bias_lab_opts *o, const uint64_t *seeds, int n, bias_lab_result *runs)
{
    int *rc = calloc((size_t)n, sizeof *rc);
    if (!rc)
        return fprintf(stderr, "bias_lab: out of memory for %d seeds\n", n), -1;
    bl_lanes L = {.o = o, .seeds = seeds, .n = n, .runs = runs, .rc = rc};
    atomic_init(&L.next, 1);
    int threads = pg_num_threads(), lanes = threads < n - 1 ? threads : n - 1, started = 0;
    pthread_t extra[BL_MAX_SEEDS];
    if (lanes > 1 && pg_set_num_threads(1) != 0)
        lanes = 1;
    for (; started < lanes - 1; started++)
        if (pthread_create(&extra[started], NULL, bl_lane, &L) != 0)
            break; /* fewer lanes: the ones running take the rest */
    bl_lane(&L);
    for (int t = 0; t < started; t++)
        pthread_join(extra[t], NULL);
    if (lanes > 1)
        pg_set_num_threads(threads);
    int bad = 0;
    for (int k = 1; k < n; k++)
        bad |= rc[k];
    free(rc);
    return bad ? -1 : 0;
}

/* Runs the lab over o->seeds (NULL or "": o->seed alone): the first seed with
 * o's figures and progress, the others quietly in parallel lanes
 * (bl_run_quiet_seeds), each printing its verdict table afterwards when
 * o->verbose; then the rates, and with o->out_dir the report. 0, or -1 (one
 * line on stderr) as bias_lab_run. */
int bias_lab_seeds_run(const bias_lab_opts *o, bias_lab_seeds_result *r)
{
    double t0 = seconds_now();
    memset(r, 0, sizeof *r);
    if (bias_lab_check(o) != 0)
        return -1;
    char why[128];
    if (!o->seeds || !*o->seeds) {
        r->seeds[0] = o->seed;
        r->n_seeds = 1;
    } else if (bl_parse_seeds(o->seeds, r->seeds, &r->n_seeds, why, sizeof why) != 0) {
        return -1; /* bias_lab_check has said why */
    }
    bias_lab_result *runs = calloc((size_t)r->n_seeds, sizeof *runs);
    if (!runs)
        return fprintf(stderr, "bias_lab: out of memory for %d seeds\n", r->n_seeds), -1;
    bias_lab_opts first = *o;
    first.seed = r->seeds[0];
    if (o->verbose && r->n_seeds > 1)
        printf("\n#### seed %" PRIu64 " (1 of %d), pictured\n", first.seed, r->n_seeds);
    fflush(stdout);
    int rc = bias_lab_run(&first, &runs[0]);
    if (rc == 0 && r->n_seeds > 1) {
        if (o->verbose)
            printf("\n(seeds %d..%d of %d: training quietly, %d at a time)\n", 2, r->n_seeds, r->n_seeds,
                   pg_num_threads() < r->n_seeds - 1 ? pg_num_threads() : r->n_seeds - 1);
        fflush(stdout);
        rc = bl_run_quiet_seeds(o, r->seeds, r->n_seeds, runs);
    }
    for (int k = 0; rc == 0 && k < r->n_seeds; k++) {
        if (o->verbose && k > 0) {
            printf("\n#### seed %" PRIu64 " (%d of %d)\n", r->seeds[k], k + 1, r->n_seeds);
            print_verdicts(&runs[k]);
        }
        r->n = runs[k].n;
        for (int i = 0; i < runs[k].n; i++)
            bl_rate_add(&r->rate[i], &runs[k].s[i]);
    }
    if (rc == 0)
        r->first = runs[0];
    free(runs);
    if (rc != 0)
        return -1;
    if (o->out_dir && bl_write_report(o->out_dir, o, r) != 0)
        return -1;
    r->seconds = seconds_now() - t0;
    return 0;
}

/* ---- command line ------------------------------------------------------------------------------------- */

static const char BIAS_LAB_SUMMARY[] =
    "Trains a 1-layer, 2-head transformer on a task with planted offsets 2 and 5 with each\n"
    "positional bias scheme, over several seeds, and reports how often each head's bias peaks\n"
    "at a planted offset. Draws the first seed's biases every epoch (heatmaps and bias against\n"
    "distance) and writes report.html, a self-contained page with every figure. A bad argument\n"
    "is one line on stderr and exit status 2, before any work; a failure while running is status 1.";

/* Whether argv names --flag (as "--flag" or "--flag=..."). */
static bool bl_flag_given(int argc, char **argv, const char *flag)
{
    size_t n = strlen(flag);
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, flag, n) && (!argv[i][n + 2] || argv[i][n + 2] == '='))
            return true;
    return false;
}

int bias_lab_main(int argc, char **argv)
{
    bias_lab_opts o = bias_lab_defaults();
    bool quiet = false;
    cli_flag flags[BL_N_FLAGS + 1];
    int n = bias_lab_flags(&o, flags);
    flags[n++] = (cli_flag){"quiet", CLI_SWITCH, &quiet, .help = "only the final tables"};
    int p = cli_parse("bias_lab", argc, argv, flags, n, BIAS_LAB_SUMMARY);
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (bl_flag_given(argc, argv, "seed")) {
        if (bl_flag_given(argc, argv, "seeds")) {
            fprintf(stderr, "bias_lab: --seed (one run) and --seeds (several) exclude each other: give one\n");
            return CLI_EXIT_USAGE;
        }
        o.seeds = NULL; /* one run */
    }
    o.verbose = !quiet;
    if (o.out_dir && !*o.out_dir)
        o.out_dir = NULL; /* --out '': no pictures */
    if (bias_lab_check(&o) != 0 || cli_threads("bias_lab", o.threads) != 0)
        return CLI_EXIT_USAGE;
    bias_lab_seeds_result r;
    if (bias_lab_seeds_run(&o, &r) != 0)
        return CLI_EXIT_FAIL;
    if (!o.verbose)
        print_verdicts(&r.first);
    if (r.n_seeds > 1)
        bl_print_rates(&r);
    if (o.out_dir)
        printf("\n%d scheme(s) x %d seed(s) in %.1f s; figures and report in %s/report.html\n", r.n, r.n_seeds,
               r.seconds, o.out_dir);
    else
        printf("\n%d scheme(s) x %d seed(s) in %.1f s; no figures (--out '')\n", r.n, r.n_seeds, r.seconds);
    return CLI_EXIT_OK;
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return bias_lab_main(argc, argv); }
#endif
