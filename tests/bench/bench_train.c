/* Training-step benchmarks: train_<scheme>_t<threads> tokens/s.
 *
 * The toy GPT of issue 6: vocab 256, d_model 128, 4 heads, 2 layers, MLP 4x,
 * sequence 256, batch 8, Adam; one step is forward + backward + optimizer
 * step (and zeroing the gradients) on a reused graph, over random tokens.
 * Schemes: every --pos choice of the LM examples (examples/lm_common.h: "none",
 * every registered kind the text examples take, "rel", and "local": rotary with
 * a band, window 64, look_backward 1), built as train_lm builds them. Tokens per
 * second = batch x seq / median step time. */
#include "bench.h"
#include "../../examples/lm_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { VOCAB = 256, DIM = 128, HEADS = 4, LAYERS = 2, SEQ = 256, BATCH = 8 };

typedef struct train_ctx {
    pg_lm *lm;
    pg_optim *opt;
    pg_graph *g;
    pg_tensor *ids, *targets;
    int failed;
} train_ctx;

/* false (and a message) when scheme is not a --pos choice */
static bool toy_config(pg_lm_config *c, const char *scheme, pg_dtype dtype)
{
    *c = pg_lm_defaults(VOCAB, DIM, HEADS, LAYERS);
    c->dtype = dtype;
    c->max_len = SEQ;
    c->seed = 1;
    if (lm_config_pos(c, scheme, SEQ / 4) == 0) /* local: window 64, one back */
        return true;
    fprintf(stderr, "train_%s: not a --pos choice of examples/train_lm\n", scheme);
    return false;
}

static void train_steps(void *p, int reps)
{
    train_ctx *c = p;
    for (int i = 0; i < reps && !c->failed; i++) {
        pg_graph_reset(c->g);
        pg_tensor *loss = pg_lm_loss(c->g, c->lm, c->ids, c->targets, NULL);
        if (!loss || pg_backward(c->g, loss) != 0 || pg_optim_step(c->opt) != 0) {
            fprintf(stderr, "train: %s\n", pg_graph_error(c->g) ? pg_graph_error(c->g) : pg_last_error());
            c->failed = 1;
            return;
        }
        pg_optim_zero_grad(c->opt);
    }
}

/* The toy model of one scheme, its optimizer and random tokens; false (and a message)
 * on failure, with whatever was made left for train_ctx_free. */
static bool train_ctx_init(train_ctx *c, const char *scheme, pg_dtype dtype)
{
    pg_lm_config cfg;
    *c = (train_ctx){0};
    if (!toy_config(&cfg, scheme, dtype))
        return false;
    c->lm = pg_lm_new(&cfg);
    c->g = pg_graph_new();
    pg_rng r = pg_rng_init(4);
    c->ids = pg_empty(NULL, PG_I64, PG_SHAPE(BATCH, SEQ));
    c->targets = pg_empty(NULL, PG_I64, PG_SHAPE(BATCH, SEQ));
    for (int64_t i = 0; c->ids && c->targets && i < BATCH * SEQ; i++) {
        pg_i64(c->ids)[i] = (int64_t)(pg_rng_uniform(&r) * VOCAB) % VOCAB;
        pg_i64(c->targets)[i] = (int64_t)(pg_rng_uniform(&r) * VOCAB) % VOCAB;
    }
    if (c->lm && c->g && c->ids && c->targets) {
        pg_tensor_list params = pg_module_parameters(&c->lm->base);
        pg_optim_hparams h = pg_adam_hparams(1e-3);
        c->opt = pg_optim_new(PG_ADAM, &h);
        bool ok = c->opt && pg_optim_add_group(c->opt, params.tensors, params.n, NULL) >= 0;
        pg_tensor_list_free(&params);
        if (ok)
            return true;
    }
    fprintf(stderr, "train_%s: %s\n", scheme, pg_last_error());
    return false;
}

static void train_ctx_free(train_ctx *c)
{
    pg_optim_free(c->opt);
    pg_tensor_free(c->ids);
    pg_tensor_free(c->targets);
    pg_graph_free(c->g);
    if (c->lm)
        pg_module_free(&c->lm->base);
}

/* tokens/s of one scheme at a thread count, or -1 */
static double train_rate(const char *scheme, pg_dtype dtype, int threads)
{
    pg_set_num_threads(threads);
    train_ctx c;
    double rate = -1;
    if (train_ctx_init(&c, scheme, dtype)) {
        double t = median_time(train_steps, &c, 1);
        rate = c.failed ? -1 : (double)(BATCH * SEQ) / t;
    }
    train_ctx_free(&c);
    return rate;
}

/* `bench --steps`: warm-up steps, then `steady_from` (CLOCK_MONOTONIC seconds, the clock of
 * `perf record -k CLOCK_MONOTONIC`, so that `perf report --time` can skip the start-up),
 * then `steps` timed steps and their median. tests/bench/profile.sh runs it under perf. */
int bench_train_steps(const char *scheme, int steps, int threads, pg_dtype dtype)
{
    enum { WARMUP = 3 };
    pg_set_num_threads(threads);
    train_ctx c = {0};
    double *t = malloc((size_t)steps * sizeof *t);
    bool ok = t && train_ctx_init(&c, scheme, dtype);
    if (ok) {
        train_steps(&c, WARMUP);
        printf("steady_from %.6f s\n", now_s());
        for (int i = 0; i < steps && !c.failed; i++) {
            double t0 = now_s();
            train_steps(&c, 1);
            t[i] = now_s() - t0;
        }
        ok = !c.failed;
    }
    if (ok) {
        const char *dt = dtype == PG_F64 ? "_f64" : "";
        double med = median_of(t, steps);
        printf("steps_%s%s_t%d %.2f ms/step (median of %d)\n", scheme, dt, threads, 1e3 * med, steps);
        printf("steps_%s%s_t%d_rate %.0f tokens/s\n", scheme, dt, threads, (double)(BATCH * SEQ) / med);
    }
    train_ctx_free(&c);
    free(t);
    return ok ? 0 : 1;
}

/* One of two set-ups of an alternated pair: which is 0 or 1, arg the command's THREADS. */
typedef void (*pair_setup)(int which, int arg);

/* `steps` timed steps of each of two set-ups, alternated in blocks of 5 in one process so
 * that both see the same stretch of the host: t[w][k] the k-th step of set-up w. After a
 * switch, `settle` untimed steps (a new thread count starts its workers on the first one).
 * False (and the message) when a step fails. */
enum { ALTERNATE_BLOCK = 5 };
static bool alternate_steps(train_ctx *c, int steps, int settle, pair_setup set, int arg, double *t[2])
{
    enum { WARMUP = 3, BLOCK = ALTERNATE_BLOCK };
    train_steps(c, WARMUP);
    for (int i = 0; i < steps && !c->failed; i += BLOCK)
        for (int w = 0; w < 2 && !c->failed; w++) {
            set(w, arg);
            train_steps(c, settle);
            for (int k = i; k < i + BLOCK && k < steps && !c->failed; k++) {
                double t0 = now_s();
                train_steps(c, 1);
                t[w][k] = now_s() - t0;
            }
        }
    return !c->failed;
}

/* The median over the blocks of alternate_steps of (set-up 0's median step in the block) /
 * (set-up 1's in the same block): a drift of the host's speed from one block to the next,
 * which moves both medians of a block alike, cancels in each block's ratio. */
static double blockwise_ratio(double *const t[2], int steps)
{
    double *ratio = malloc((size_t)(steps / ALTERNATE_BLOCK + 1) * sizeof(double)), block[2][ALTERNATE_BLOCK];
    if (!ratio)
        return NAN;
    int blocks = 0;
    for (int i = 0; i < steps; i += ALTERNATE_BLOCK, blocks++) {
        int n = steps - i < ALTERNATE_BLOCK ? steps - i : ALTERNATE_BLOCK;
        for (int w = 0; w < 2; w++)
            memcpy(block[w], t[w] + i, (size_t)n * sizeof(double));
        ratio[blocks] = median_of(block[0], n) / median_of(block[1], n);
    }
    double median = median_of(ratio, blocks);
    free(ratio);
    return median;
}

/* the median ms per step of each of an alternated pair (alternate_steps) of the toy model of
 * `scheme` and their blockwise_ratio (when `ratio` is not NULL); false (and a message) on
 * failure */
static bool alternated_medians(const char *scheme, int steps, int settle, pair_setup set, int arg, double med[2],
                               double *ratio)
{
    train_ctx c = {0};
    double *t[2] = {malloc((size_t)steps * sizeof(double)), malloc((size_t)steps * sizeof(double))};
    bool ok = t[0] && t[1] && train_ctx_init(&c, scheme, PG_F32) && alternate_steps(&c, steps, settle, set, arg, t);
    if (ok && ratio)
        *ratio = blockwise_ratio(t, steps);
    if (ok)
        for (int w = 0; w < 2; w++)
            med[w] = 1e3 * median_of(t[w], steps);
    train_ctx_free(&c);
    free(t[0]);
    free(t[1]);
    return ok;
}

static void set_balance(int even, int threads)
{
    (void)threads;
    pg_parallel_balance(even ? PG_BALANCE_EVEN : PG_BALANCE_MEASURED);
}

/* `bench --balance`: the same steps with speed-sized slices (threadpool.h) and with even
 * ones, alternated; each one's median and the speed estimates the pool ended with. */
int bench_train_balance(const char *scheme, int steps, int threads)
{
    double ms[2];
    pg_set_num_threads(threads);
    bool ok = alternated_medians(scheme, steps, 0, set_balance, threads, ms, NULL);
    pg_parallel_balance(PG_BALANCE_MEASURED);
    if (!ok)
        return 1;
    double speed[PG_MAX_THREADS];
    int T = pg_parallel_speeds(speed, PG_MAX_THREADS);
    printf("balance_%s_t%d_sized %.2f ms/step (median of %d)\n", scheme, threads, ms[0], steps);
    printf("balance_%s_t%d_even %.2f ms/step (median of %d)\n", scheme, threads, ms[1], steps);
    printf("balance_%s_t%d_gain %.3f (even / sized)\n", scheme, threads, ms[1] / ms[0]);
    for (int i = 0; i < T; i++)
        printf("balance_speed_thread%d %.3f\n", i, speed[i]);
    return 0;
}

static void set_threads(int many, int threads)
{
    pg_set_num_threads(many ? threads : 1);
}

/* `bench --scaling`: the same steps on 1 thread and on `threads`, alternated, so that a slow
 * stretch of a shared host falls on both; each one's median, their ratio (the speed-up) and
 * the speed-up taken block by block (blockwise_ratio). */
int bench_train_scaling(const char *scheme, int steps, int threads)
{
    double ms[2], blockwise;
    int saved = pg_num_threads();
    bool ok = alternated_medians(scheme, steps, 1, set_threads, threads, ms, &blockwise);
    pg_set_num_threads(saved);
    if (!ok)
        return 1;
    printf("scaling_%s_t1 %.2f ms/step (median of %d)\n", scheme, ms[0], steps);
    printf("scaling_%s_t%d %.2f ms/step (median of %d)\n", scheme, threads, ms[1], steps);
    printf("scaling_%s_t%d_over_t1 %.3f x\n", scheme, threads, ms[0] / ms[1]);
    printf("scaling_%s_t%d_over_t1_blockwise %.3f x (median of %d blocks' ratios)\n", scheme, threads, blockwise,
           (steps + ALTERNATE_BLOCK - 1) / ALTERNATE_BLOCK);
    return 0;
}

void bench_train_all(const char *only)
{
    int saved = pg_num_threads();
    char name[64];
    for (int s = 0; s < LM_N_SCHEMES; s++)
        for (int t = 1; t <= 2; t++) {
            snprintf(name, sizeof name, "train_%s_t%d", LM_SCHEMES[s], t);
            if (bench_selected(only, name))
                printf("%s %.0f tokens/s\n", name, train_rate(LM_SCHEMES[s], PG_F32, t));
            fflush(stdout);
        }
    if (bench_selected(only, "train_none_f64_t2"))
        printf("train_none_f64_t2 %.0f tokens/s\n", train_rate("none", PG_F64, 2));
    pg_set_num_threads(saved);
}
