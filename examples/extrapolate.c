/* extrapolate: train short, test long (Press et al. 2022, "Train Short, Test Long").
 *
 * Trains the same small character-level LM once per positional scheme, with the
 * same budget, seed and batches, on windows of --train-len characters; then
 * measures the validation loss on windows of each --eval-lens length and prints
 * a markdown table (scheme x length). A learned absolute table has rows only for
 * the training length: its longer entries are "n/a" (nothing is extended).
 * docs/examples.md records a run. */
#include "lm_common.h"

enum { EX_MAX_SCHEMES = 16, EX_MAX_LENS = 8 };

typedef struct extrapolate_opts {
    const char *schemes;   /* comma-separated --pos names */
    const char *eval_lens; /* comma-separated lengths */
    const char *data, *md;
    int train_len, layers, dim, heads, batch, steps, seed, threads, eval_tokens;
    double lr;
    bool quiet;
} extrapolate_opts;

typedef struct extrapolate_result {
    int n_schemes, n_lens;
    char schemes[EX_MAX_SCHEMES][16];
    int64_t lens[EX_MAX_LENS];
    double first_loss[EX_MAX_SCHEMES], last_loss[EX_MAX_SCHEMES]; /* training loss, first / last step */
    double loss[EX_MAX_SCHEMES][EX_MAX_LENS];                      /* NaN: n/a */
    double seconds;
} extrapolate_result;

static extrapolate_opts extrapolate_defaults(void)
{
    return (extrapolate_opts){.schemes = "none,sinusoidal,learned,rotary,alibi,t5,dpb,xl",
                              .eval_lens = "64,128,256,512",
                              .data = "examples/data/tinyshakespeare.txt",
                              .train_len = 64,
                              .layers = 2,
                              .dim = 64,
                              .heads = 4,
                              .batch = 16,
                              .steps = 1500,
                              .seed = 1337,
                              .eval_tokens = 32768,
                              .lr = 3e-3};
}

static const char EXTRAPOLATE_SUMMARY[] =
    "Trains one character-level LM per positional scheme on windows of --train-len characters\n"
    "(same budget, seed and batches) and prints a markdown table of the validation loss (nats per\n"
    "character) at each of --eval-lens. Schemes: none sinusoidal learned continuous rotary xpos\n"
    "alibi dpb xl t5 rel";

/* Splits "a,b,c" into out[0..max) (copies of at most 15 characters). The count, or -1. */
static int split_names(const char *list, char out[][16], int max)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len > 15 || n == max)
            return -1;
        memcpy(out[n], p, len);
        out[n++][len] = '\0';
        p += len + (e ? 1 : 0);
    }
    return n;
}

static int parse_lens(const char *list, int64_t *lens, int max)
{
    char names[EX_MAX_LENS][16];
    int n = split_names(list, names, max < EX_MAX_LENS ? max : EX_MAX_LENS);
    for (int i = 0; i < n; i++) {
        char *end;
        lens[i] = strtol(names[i], &end, 10);
        if (*end || lens[i] < 2 || lens[i] > 65536)
            return -1;
    }
    return n;
}

/* One scheme: train, then evaluate at every length (NaN where the model cannot go). 0 or -1. */
static int run_scheme(const extrapolate_opts *o, const lm_corpus *c, const char *pos, extrapolate_result *r, int s)
{
    pg_lm_config cfg = pg_lm_defaults(c->vocab, o->dim, o->heads, o->layers);
    if (lm_config_pos(&cfg, pos, o->train_len / 4) != 0) { /* local: window train_len / 4, one back */
        fprintf(stderr, "extrapolate: unknown scheme '%s'\n", pos);
        return -1;
    }
    bool table = !strcmp(pos, "learned") || !strcmp(pos, "rel");
    cfg.max_len = table ? o->train_len : 0; /* tables have train_len rows; the rest are unbounded */
    cfg.seed = (uint64_t)o->seed;
    pg_lm *lm = pg_lm_new(&cfg);
    if (!lm) {
        fprintf(stderr, "extrapolate: %s: %s\n", pos, pg_last_error());
        return -1;
    }
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_optim_hparams h = pg_adamw_hparams(o->lr);
    h.beta2 = 0.99;
    pg_optim *opt = pg_optim_new(PG_ADAMW, &h);
    pg_optim_add_decay_groups(opt, &ps, pg_no_decay_default, NULL, o->lr, 0.1);
    int warmup = o->steps / 10 < 100 ? o->steps / 10 : 100;
    pg_schedule *sched = pg_schedule_new(opt, pg_sched_warmup_cosine(warmup, 0.0, o->steps, 0.1));
    pg_rng rng = pg_rng_init((uint64_t)o->seed); /* the same batches for every scheme */
    pg_graph *g = pg_graph_new();
    int rc = sched && g ? 0 : -1;
    double t0 = lm_now();
    for (int step = 1; rc == 0 && step <= o->steps; step++) {
        pg_graph_reset(g);
        pg_tensor *ids, *targets;
        lm_train_batch(g, c, o->batch, o->train_len, &rng, &ids, &targets);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, targets, NULL);
        if (!loss || pg_backward(g, loss) != 0) {
            fprintf(stderr, "extrapolate: %s: %s\n", pos, pg_graph_error(g));
            rc = -1;
            break;
        }
        pg_clip_grad_norm(ps.tensors, ps.n, 1.0);
        pg_optim_step(opt);
        pg_optim_zero_grad(opt);
        pg_schedule_step(sched);
        if (step == 1)
            r->first_loss[s] = pg_item(loss);
        r->last_loss[s] = pg_item(loss);
    }
    for (int i = 0; rc == 0 && i < r->n_lens; i++) {
        int64_t L = r->lens[i];
        if (table && L > o->train_len) {
            r->loss[s][i] = NAN; /* no rows past the training length */
            continue;
        }
        int64_t windows = o->eval_tokens / L > 0 ? o->eval_tokens / L : 1, B = 4096 / L > 0 ? 4096 / L : 1;
        r->loss[s][i] = lm_eval_loss(g, lm, c, L, windows, B);
        if (!isfinite(r->loss[s][i]))
            rc = -1;
    }
    if (rc == 0 && !o->quiet) {
        printf("%-10s trained %d steps in %5.1f s (loss %.3f -> %.3f); val:", pos, o->steps, lm_now() - t0,
               r->first_loss[s], r->last_loss[s]);
        for (int i = 0; i < r->n_lens; i++)
            printf(" %lld: %.3f", (long long)r->lens[i], r->loss[s][i]);
        printf("\n");
        fflush(stdout);
    }
    pg_graph_free(g);
    pg_schedule_free(sched);
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
    pg_module_free(&lm->base);
    return rc;
}

static void print_table(FILE *f, const extrapolate_opts *o, const extrapolate_result *r)
{
    fprintf(f, "| scheme |");
    for (int i = 0; i < r->n_lens; i++)
        fprintf(f, " L = %lld%s |", (long long)r->lens[i], r->lens[i] == o->train_len ? " (train)" : "");
    fprintf(f, "\n|---|");
    for (int i = 0; i < r->n_lens; i++)
        fprintf(f, "---|");
    fprintf(f, "\n");
    for (int s = 0; s < r->n_schemes; s++) {
        fprintf(f, "| %s |", r->schemes[s]);
        for (int i = 0; i < r->n_lens; i++)
            if (isfinite(r->loss[s][i]))
                fprintf(f, " %.3f |", r->loss[s][i]);
            else
                fprintf(f, " n/a |");
        fprintf(f, "\n");
    }
}

/* Runs every scheme of o; r gets the figures. 0, or 1 after a message. */
static int extrapolate_run(const extrapolate_opts *o, extrapolate_result *r)
{
    memset(r, 0, sizeof *r);
    r->n_schemes = split_names(o->schemes, r->schemes, EX_MAX_SCHEMES);
    r->n_lens = parse_lens(o->eval_lens, r->lens, EX_MAX_LENS);
    if (r->n_schemes < 1 || r->n_lens < 1) {
        fprintf(stderr, "extrapolate: bad --schemes '%s' or --eval-lens '%s' (comma-separated, at most %d / %d)\n",
                o->schemes, o->eval_lens, EX_MAX_SCHEMES, EX_MAX_LENS);
        return 1;
    }
    if (o->train_len < 2 || o->layers < 1 || o->dim < 1 || o->heads < 1 || o->dim % o->heads || o->batch < 1 ||
        o->batch > 4096 || o->steps < 1 || !(o->lr > 0) || o->eval_tokens < 1 || o->threads < 0) {
        fprintf(stderr, "extrapolate: sizes, --steps, --lr and --eval-tokens must be positive, --dim a multiple of "
                        "--heads\n");
        return 1;
    }
    if (o->threads > 0 && pg_set_num_threads(o->threads) != 0) {
        fprintf(stderr, "extrapolate: %s\n", pg_last_error());
        return 1;
    }
    int64_t longest = o->train_len;
    for (int i = 0; i < r->n_lens; i++)
        longest = r->lens[i] > longest ? r->lens[i] : longest;
    lm_corpus c;
    if (lm_corpus_load(&c, o->data, longest + 1) != 0)
        return 1;
    if (!o->quiet)
        printf("extrapolate: %d layers, dim %d, %d heads, train length %d, batch %d, %d steps, lr %g, seed %d, "
               "%d threads\n",
               o->layers, o->dim, o->heads, o->train_len, o->batch, o->steps, o->lr, o->seed, pg_num_threads());
    double t0 = lm_now();
    int rc = 0;
    for (int s = 0; s < r->n_schemes && rc == 0; s++)
        rc = run_scheme(o, &c, r->schemes[s], r, s);
    lm_corpus_free(&c);
    r->seconds = lm_now() - t0;
    if (rc != 0)
        return 1;
    if (!o->quiet) {
        printf("\nvalidation loss (nats per character), trained at L = %d; %.0f s in all\n\n", o->train_len,
               r->seconds);
        print_table(stdout, o, r);
    }
    if (o->md) {
        FILE *f = fopen(o->md, "w");
        if (!f) {
            fprintf(stderr, "extrapolate: cannot write '%s': %s\n", o->md, strerror(errno));
            return 1;
        }
        print_table(f, o, r);
        fclose(f);
    }
    return 0;
}

int extrapolate_main(int argc, char **argv)
{
    extrapolate_opts o = extrapolate_defaults();
    const lm_flag flags[] = {
        {"schemes", LM_STR, &o.schemes, "comma-separated positional schemes"},
        {"train-len", LM_INT, &o.train_len, "training window length"},
        {"eval-lens", LM_STR, &o.eval_lens, "comma-separated evaluation lengths"},
        {"layers", LM_INT, &o.layers, "transformer blocks"},
        {"dim", LM_INT, &o.dim, "model width"},
        {"heads", LM_INT, &o.heads, "attention heads"},
        {"batch", LM_INT, &o.batch, "sequences per step"},
        {"steps", LM_INT, &o.steps, "optimisation steps per scheme"},
        {"lr", LM_DOUBLE, &o.lr, "peak learning rate (AdamW, warmup + cosine)"},
        {"seed", LM_INT, &o.seed, "seed of the weights and the batches"},
        {"threads", LM_INT, &o.threads, "threads (0: PG_NUM_THREADS or all cores)"},
        {"eval-tokens", LM_INT, &o.eval_tokens, "validation characters per length"},
        {"data", LM_STR, &o.data, "corpus (any text file)"},
        {"md", LM_STR, &o.md, "also write the table to this file"},
    };
    int n = (int)(sizeof flags / sizeof flags[0]);
    int p = lm_parse_flags(argc, argv, flags, n, EXTRAPOLATE_SUMMARY);
    if (p != 0)
        return p > 0 ? 0 : 2;
    extrapolate_result r;
    return extrapolate_run(&o, &r);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return extrapolate_main(argc, argv); }
#endif
