/* tiny_lm: the whole stack in one page. A 2-block character-level transformer
 * learns a short text with AdamW, saves a training checkpoint and samples.
 *
 *   tiny_lm [--steps N] [--sample N] [--prompt S] [--out FILE] [--seed N] [--threads N]
 *
 * The training loop is the README's. The checkpoint goes to --out (default
 * tiny_lm.safetensors in the working directory; --out '' writes none), and the
 * program says where it went. */
#include "../posgrad.h" /* relative to this file: also found when a test includes it */
#include "cli.h"

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

/* bytes as tokens (vocab 256), dim 64, 4 heads, 2 blocks, windows of SEQ */
static pg_lm_config tiny_lm_config(uint64_t seed)
{
    pg_lm_config cfg = pg_lm_defaults(256, 64, 4, 2);
    cfg.max_len = SEQ;
    cfg.seed = seed;
    return cfg;
}

/* Token ids as text: printable ASCII as it is, any other byte as \xNN (the
 * model may sample any of its 256 byte ids, e.g. before it has learned much). */
static void print_text(const int64_t *ids, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        int c = (int)ids[i];
        if (c >= ' ' && c <= '~' && c != '\\')
            putchar(c);
        else
            printf("\\x%02x", (unsigned)c);
    }
}

static const char SUMMARY[] = "Trains a 2-block character-level transformer on a short text with AdamW, saves a\n"
                              "training checkpoint and prints a sample. A bad argument is one line on stderr and\n"
                              "exit status 2; a failure while running is status 1.";

int tiny_lm_main(int argc, char **argv)
{
    int steps = 300, sample = 80, threads = 0;
    uint64_t seed = 1;
    const char *prompt = "to be", *out = "tiny_lm.safetensors";
    const cli_flag flags[] = {
        {"steps", CLI_INT, &steps, "optimizer steps", .min = 1, .max = 1000000},
        {"sample", CLI_INT, &sample, "characters sampled after --prompt at the end", .min = 0, .max = 100000},
        {"prompt", CLI_STR, &prompt, .help = "start of the sample"},
        {"out", CLI_STR, &out, .help = "training checkpoint to write ('': none)"},
        {"seed", CLI_U64, &seed, .help = "seed of the weights, the batches and the sample"},
        {"threads", CLI_INT, &threads, "threads (0: PG_NUM_THREADS or all cores)", .min = 0, .max = PG_MAX_THREADS},
    };
    int p = cli_parse("tiny_lm", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), SUMMARY);
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (!*prompt) {
        fprintf(stderr, "tiny_lm: --prompt is empty: the sample needs at least one character to start from\n");
        return CLI_EXIT_USAGE;
    }
    if (cli_threads("tiny_lm", threads) != 0)
        return CLI_EXIT_USAGE;

    pg_lm_config cfg = tiny_lm_config(seed);
    pg_lm *lm = pg_lm_new(&cfg);
    if (!lm) {
        fprintf(stderr, "tiny_lm: %s\n", pg_last_error());
        return CLI_EXIT_FAIL;
    }
    /* AdamW; biases and norms without weight decay; warmup, then cosine decay */
    pg_tensor_list params = pg_module_parameters(&lm->base);
    pg_optim_hparams h = pg_adamw_hparams(3e-3);
    pg_optim *opt = pg_optim_new(PG_ADAMW, &h);
    pg_optim_add_decay_groups(opt, &params, pg_no_decay_default, NULL, 3e-3, 0.1);
    int warmup = steps / 10 < 30 ? steps / 10 : 30;
    pg_schedule *sched = pg_schedule_new(opt, pg_sched_warmup_cosine(warmup, 0.1, steps, 0.1));
    pg_rng rng = pg_rng_init(seed);
    pg_graph *g = pg_graph_new();
    int rc = CLI_EXIT_OK;

    for (int step = 1; step <= steps; step++) {
        pg_graph_reset(g);
        pg_tensor *ids, *targets;
        batch(g, &rng, &ids, &targets);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, targets, NULL);
        if (!loss || pg_backward(g, loss) != 0) {
            fprintf(stderr, "tiny_lm: step %d: %s\n", step, pg_graph_error(g));
            rc = CLI_EXIT_FAIL;
            break;
        }
        pg_clip_grad_norm(params.tensors, params.n, 1.0);
        pg_optim_step(opt);
        pg_optim_zero_grad(opt);
        pg_schedule_step(sched);
        if (step % 50 == 0 || step == 1 || step == steps)
            printf("step %4d  loss %.4f\n", step, pg_item(loss));
    }
    if (rc == CLI_EXIT_OK && *out) {
        if (pg_checkpoint_save(out, &lm->base, opt, sched, &rng) == 0)
            printf("saved the training checkpoint to %s (weights, AdamW state, schedule step, generator; "
                   "pg_checkpoint_load resumes it)\n", out);
        else {
            fprintf(stderr, "tiny_lm: --out %s: %s\n", out, pg_last_error());
            rc = CLI_EXIT_FAIL;
        }
    } else if (rc == CLI_EXIT_OK)
        printf("no checkpoint written (--out '')\n");

    /* sample after the prompt (its bytes are the ids) */
    int64_t n = (int64_t)strlen(prompt);
    pg_tensor *pr = pg_empty(NULL, PG_I64, PG_SHAPE(1, n)), *text = NULL;
    if (rc == CLI_EXIT_OK && pr) {
        for (int64_t i = 0; i < n; i++)
            pg_i64(pr)[i] = (unsigned char)prompt[i];
        text = pg_lm_generate(lm, pr, sample, 0.8, 10, &rng);
        if (text) {
            printf("sample: ");
            print_text(pg_i64(text), text->numel);
            putchar('\n');
        } else {
            fprintf(stderr, "tiny_lm: sampling: %s\n", pg_last_error());
            rc = CLI_EXIT_FAIL;
        }
    }

    pg_tensor_free(text);
    pg_tensor_free(pr);
    pg_graph_free(g);
    pg_schedule_free(sched);
    pg_optim_free(opt);
    pg_tensor_list_free(&params);
    pg_module_free(&lm->base);
    return rc;
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return tiny_lm_main(argc, argv); }
#endif
