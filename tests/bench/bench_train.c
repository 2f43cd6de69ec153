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
#include <string.h>

enum { VOCAB = 256, DIM = 128, HEADS = 4, LAYERS = 2, SEQ = 256, BATCH = 8 };

typedef struct train_ctx {
    pg_lm *lm;
    pg_optim *opt;
    pg_graph *g;
    pg_tensor *ids, *targets;
    int failed;
} train_ctx;

static pg_lm_config toy_config(const char *scheme, pg_dtype dtype)
{
    pg_lm_config c = pg_lm_defaults(VOCAB, DIM, HEADS, LAYERS);
    c.dtype = dtype;
    c.max_len = SEQ;
    c.seed = 1;
    if (lm_config_pos(&c, scheme, SEQ / 4) != 0) /* local: window 64, one back */
        fprintf(stderr, "train_%s: not a --pos choice\n", scheme);
    return c;
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

/* tokens/s of one scheme at a thread count, or -1 */
static double train_rate(const char *scheme, pg_dtype dtype, int threads)
{
    pg_set_num_threads(threads);
    pg_lm_config cfg = toy_config(scheme, dtype);
    train_ctx c = {.lm = pg_lm_new(&cfg), .g = pg_graph_new()};
    pg_rng r = pg_rng_init(4);
    c.ids = pg_empty(NULL, PG_I64, PG_SHAPE(BATCH, SEQ));
    c.targets = pg_empty(NULL, PG_I64, PG_SHAPE(BATCH, SEQ));
    for (int64_t i = 0; c.ids && c.targets && i < BATCH * SEQ; i++) {
        pg_i64(c.ids)[i] = (int64_t)(pg_rng_uniform(&r) * VOCAB) % VOCAB;
        pg_i64(c.targets)[i] = (int64_t)(pg_rng_uniform(&r) * VOCAB) % VOCAB;
    }
    double rate = -1;
    if (c.lm && c.g && c.ids && c.targets) {
        pg_tensor_list params = pg_module_parameters(&c.lm->base);
        pg_optim_hparams h = pg_adam_hparams(1e-3);
        c.opt = pg_optim_new(PG_ADAM, &h);
        if (c.opt && pg_optim_add_group(c.opt, params.tensors, params.n, NULL) >= 0) {
            double t = median_time(train_steps, &c, 1);
            rate = c.failed ? -1 : (double)(BATCH * SEQ) / t;
        }
        pg_optim_free(c.opt);
        pg_tensor_list_free(&params);
    } else {
        fprintf(stderr, "train_%s: %s\n", scheme, pg_last_error());
    }
    pg_tensor_free(c.ids);
    pg_tensor_free(c.targets);
    pg_graph_free(c.g);
    if (c.lm)
        pg_module_free(&c.lm->base);
    return rate;
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
