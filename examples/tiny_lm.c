/* tiny_lm: the whole stack in one page. A 2-block character-level transformer
 * learns a short text with AdamW, saves a training checkpoint and samples.
 * Usage: tiny_lm [steps]   (default 300) */
#include "posgrad.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char TEXT[] = "to be, or not to be, that is the question: "
                           "whether 'tis nobler in the mind to suffer "
                           "the slings and arrows of outrageous fortune, "
                           "or to take arms against a sea of troubles. ";

enum { SEQ = 32, BATCH = 8 };

/* a random batch of windows: ids (B, SEQ) and the next characters as targets */
static void batch(pg_graph *g, pg_rng *r, pg_tensor **ids, pg_tensor **targets)
{
    int64_t n = (int64_t)strlen(TEXT);
    *ids = pg_empty(g, PG_I64, PG_SHAPE(BATCH, SEQ));
    *targets = pg_empty(g, PG_I64, PG_SHAPE(BATCH, SEQ));
    for (int b = 0; b < BATCH; b++) {
        int64_t start = (int64_t)(pg_rng_uniform(r) * (double)(n - SEQ - 1));
        for (int t = 0; t < SEQ; t++) {
            pg_i64(*ids)[b * SEQ + t] = (unsigned char)TEXT[start + t];
            pg_i64(*targets)[b * SEQ + t] = (unsigned char)TEXT[start + t + 1];
        }
    }
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 300;
    pg_lm_config cfg = pg_lm_defaults(256, 64, 4, 2); /* bytes as tokens, dim 64, 4 heads, 2 blocks */
    cfg.max_len = SEQ;
    cfg.n_input_pos = 0;
    pg_lm *lm = pg_lm_new(&cfg);
    if (!lm) {
        fprintf(stderr, "tiny_lm: %s\n", pg_last_error());
        return 1;
    }
    /* AdamW; biases and norms without weight decay */
    pg_tensor_list params = pg_module_parameters(&lm->base);
    pg_optim_hparams h = pg_adamw_hparams(3e-3);
    pg_optim *opt = pg_optim_new(PG_ADAMW, &h);
    pg_optim_add_decay_groups(opt, &params, pg_no_decay_default, NULL, 3e-3, 0.1);
    pg_schedule *sched = pg_schedule_new(opt, pg_sched_warmup_cosine(30, 0.1, steps, 0.1));
    pg_rng rng = pg_rng_init(1);
    pg_graph *g = pg_graph_new();

    for (int step = 1; step <= steps; step++) {
        pg_graph_reset(g);
        pg_tensor *ids, *targets;
        batch(g, &rng, &ids, &targets);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, targets, NULL);
        if (!loss || pg_backward(g, loss) != 0) {
            fprintf(stderr, "tiny_lm: %s\n", pg_graph_error(g));
            return 1;
        }
        pg_clip_grad_norm(params.tensors, params.n, 1.0);
        pg_optim_step(opt);
        pg_optim_zero_grad(opt);
        pg_schedule_step(sched);
        if (step % 50 == 0 || step == 1)
            printf("step %4d  loss %.4f\n", step, pg_item(loss));
    }
    if (pg_checkpoint_save("tiny_lm.safetensors", &lm->base, opt, sched, &rng) != 0)
        fprintf(stderr, "tiny_lm: %s\n", pg_last_error());

    /* sample 80 characters after a prompt */
    const char *prompt = "to be";
    int64_t n = (int64_t)strlen(prompt);
    pg_tensor *p = pg_empty(NULL, PG_I64, PG_SHAPE(1, n));
    for (int64_t i = 0; i < n; i++)
        pg_i64(p)[i] = (unsigned char)prompt[i];
    pg_module_train(&lm->base, false);
    pg_tensor *out = pg_lm_generate(lm, p, 80, 0.8, 10, &rng);
    printf("sample: ");
    for (int64_t i = 0; out && i < out->numel; i++)
        putchar((int)pg_i64(out)[i]);
    putchar('\n');

    pg_tensor_free(out);
    pg_tensor_free(p);
    pg_graph_free(g);
    pg_schedule_free(sched);
    pg_optim_free(opt);
    pg_tensor_list_free(&params);
    pg_module_free(&lm->base);
    return 0;
}
