/* extrapolate: train short, test long (Press et al. 2022, "Train Short, Test Long").
 *
 * Trains the same small character-level LM once per positional scheme, with the
 * same budget, seed and batches, on windows of --train-len characters; then
 * measures the validation loss on windows of each --eval-lens length and prints
 * a markdown table (scheme x length). A learned absolute table has rows only for
 * the training length: its longer entries are "n/a" (nothing is extended).
 * docs/examples.md records a run. */
#include "cli.h"
#include "lm_common.h"

#include <limits.h>

enum { EX_MAX_SCHEMES = 32, EX_MAX_LENS = 8 };

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
    char schemes[EX_MAX_SCHEMES][32];
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
    "character) at each of --eval-lens. Every argument is checked before any training: a bad one\n"
    "is one line on stderr and exit status 2; a failure while running (e.g. no corpus) is status 1.\n"
    "Schemes (train_lm's --pos choices):";

enum { EX_N_FLAGS = 14, EX_MIN_LEN = 2, EX_MAX_LEN = 65536 };

/* The flags, pointing into o: the one place that states each option's range. */
static int extrapolate_flags(extrapolate_opts *o, cli_flag *f)
{
    const cli_flag flags[EX_N_FLAGS] = {
        {"schemes", CLI_STR, &o->schemes, .help = "comma-separated positional schemes, from the list above"},
        {"train-len", CLI_INT, &o->train_len, "training window length", .min = EX_MIN_LEN, .max = EX_MAX_LEN},
        {"eval-lens", CLI_STR, &o->eval_lens, .help = "comma-separated evaluation lengths, each 2..65536, at most 8"},
        {"layers", CLI_INT, &o->layers, "transformer blocks", .min = 1, .max = 256},
        {"dim", CLI_INT, &o->dim, "model width (a multiple of --heads)", .min = 1, .max = 16384},
        {"heads", CLI_INT, &o->heads, "attention heads", .min = 1, .max = 1024},
        {"batch", CLI_INT, &o->batch, "sequences per step", .min = 1, .max = 4096},
        {"steps", CLI_INT, &o->steps, "optimisation steps per scheme", .min = 1, .max = 1e9},
        {"lr", CLI_DOUBLE, &o->lr, "peak learning rate (AdamW, warmup + cosine)", .min = 0, .max = INFINITY,
         .above_min = true},
        {"seed", CLI_INT, &o->seed, "seed of the weights and the batches", .min = 0, .max = INT_MAX},
        {"threads", CLI_INT, &o->threads, "threads (0: PG_NUM_THREADS or all cores)", .min = 0,
         .max = PG_MAX_THREADS},
        {"eval-tokens", CLI_INT, &o->eval_tokens, "validation characters per length", .min = 1, .max = 1e9},
        {"data", CLI_STR, &o->data, .help = "corpus (any text file)"},
        {"md", CLI_STR, &o->md, .help = "also write the table to this file"},
    };
    memcpy(f, flags, sizeof flags);
    return EX_N_FLAGS;
}

/* The next entry of a comma-separated list at *p, its length; *p advances past
 * it and its comma, *more says whether there was a comma (another entry, maybe
 * empty, follows). */
static size_t next_entry(const char **p, const char **entry, bool *more)
{
    *entry = *p;
    size_t len = strcspn(*p, ",");
    *more = (*p)[len] == ',';
    *p += len + *more;
    return len;
}

/* --schemes into r->schemes: every name one of LM_SCHEMES, none twice. 0, or
 * -1 after one line naming the flag, the bad entry and the accepted names. */
static int check_schemes(const char *list, extrapolate_result *r)
{
    char known[1024];
    lm_pos_names(known, sizeof known);
    r->n_schemes = 0;
    const char *p = list, *e;
    for (bool more = true; more;) {
        size_t len = next_entry(&p, &e, &more);
        int k = 0;
        while (k < LM_N_SCHEMES && (strlen(LM_SCHEMES[k]) != len || strncmp(LM_SCHEMES[k], e, len)))
            k++;
        if (len == 0) {
            fprintf(stderr, "extrapolate: --schemes: '%s' has an empty entry (want comma-separated names of: %s)\n",
                    list, known);
            return -1;
        }
        if (k == LM_N_SCHEMES) {
            fprintf(stderr, "extrapolate: --schemes: unknown scheme '%.*s' (accepted: %s)\n", (int)len, e, known);
            return -1;
        }
        for (int s = 0; s < r->n_schemes; s++)
            if (!strcmp(r->schemes[s], LM_SCHEMES[k])) {
                fprintf(stderr, "extrapolate: --schemes lists '%s' twice\n", LM_SCHEMES[k]);
                return -1;
            }
        if (r->n_schemes == EX_MAX_SCHEMES) {
            fprintf(stderr, "extrapolate: --schemes: more than %d schemes\n", EX_MAX_SCHEMES);
            return -1;
        }
        snprintf(r->schemes[r->n_schemes++], sizeof r->schemes[0], "%s", LM_SCHEMES[k]);
    }
    return 0;
}

/* --eval-lens into r->lens: integers in 2..65536, at most EX_MAX_LENS, none twice. 0 or -1 (one line). */
static int check_lens(const char *list, extrapolate_result *r)
{
    int n = 0;
    const char *p = list, *e;
    for (bool more = true; more; n++) {
        size_t len = next_entry(&p, &e, &more);
        char entry[32] = "", *end;
        snprintf(entry, sizeof entry, "%.*s", (int)(len < 31 ? len : 31), e);
        errno = 0;
        long v = strtol(entry, &end, 10);
        if (len == 0) {
            fprintf(stderr, "extrapolate: --eval-lens: '%s' has an empty entry (want comma-separated integers in "
                            "%d..%d)\n", list, EX_MIN_LEN, EX_MAX_LEN);
            return -1;
        }
        if (errno || end == entry || *end || len > 31 || v < EX_MIN_LEN || v > EX_MAX_LEN) {
            fprintf(stderr, "extrapolate: --eval-lens: '%.*s' is not an integer in %d..%d\n", (int)len, e,
                    EX_MIN_LEN, EX_MAX_LEN);
            return -1;
        }
        for (int i = 0; i < n && i < EX_MAX_LENS; i++)
            if (r->lens[i] == v) {
                fprintf(stderr, "extrapolate: --eval-lens lists '%ld' twice\n", v);
                return -1;
            }
        if (n < EX_MAX_LENS)
            r->lens[n] = v;
    }
    if (n > EX_MAX_LENS) {
        fprintf(stderr, "extrapolate: --eval-lens: %d lengths, at most %d\n", n, EX_MAX_LENS);
        return -1;
    }
    r->n_lens = n;
    return 0;
}

/* Every option of o, before any work; r gets the scheme and length lists. 0, or -1 after one line. */
static int extrapolate_check(const extrapolate_opts *o, extrapolate_result *r)
{
    extrapolate_opts copy = *o; /* the flags table points into it */
    cli_flag flags[EX_N_FLAGS];
    int n = extrapolate_flags(&copy, flags);
    if (cli_check("extrapolate", flags, n) != 0 || check_schemes(o->schemes, r) != 0 ||
        check_lens(o->eval_lens, r) != 0)
        return -1;
    if (o->dim % o->heads != 0) {
        fprintf(stderr, "extrapolate: --dim %d is not a multiple of --heads %d\n", o->dim, o->heads);
        return -1;
    }
    return 0;
}

/* One scheme: train, then evaluate at every length (NaN where the model cannot go). 0 or -1. */
static int run_scheme(const extrapolate_opts *o, const lm_corpus *c, const char *pos, extrapolate_result *r, int s)
{
    pg_lm_config cfg = pg_lm_defaults(c->vocab, o->dim, o->heads, o->layers);
    if (lm_config_pos(&cfg, pos, o->train_len / 4) != 0) { /* local: window train_len / 4, one back */
        fprintf(stderr, "extrapolate: unknown scheme '%s'\n", pos);
        return -1;
    }
    const pg_posmod_kind_info *k = lm_pos_info(pos);
    bool table = k && (k->props & PG_POS_MAX_LEN);
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

/* Runs every scheme of o; r gets the figures. The exit status: 0; 2 (CLI_EXIT_USAGE)
 * for a bad option, found before any work; 1 for a failure while running. */
static int extrapolate_run(const extrapolate_opts *o, extrapolate_result *r)
{
    memset(r, 0, sizeof *r);
    if (extrapolate_check(o, r) != 0)
        return CLI_EXIT_USAGE;
    if (cli_threads("extrapolate", o->threads) != 0)
        return CLI_EXIT_USAGE;
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
    cli_flag flags[EX_N_FLAGS];
    int n = extrapolate_flags(&o, flags);
    char choices[1024], summary[sizeof EXTRAPOLATE_SUMMARY + sizeof choices + 16];
    snprintf(summary, sizeof summary, "%s\n%s", EXTRAPOLATE_SUMMARY, lm_pos_names(choices, sizeof choices));
    int p = cli_parse("extrapolate", argc, argv, flags, n, summary);
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    extrapolate_result r;
    return extrapolate_run(&o, &r);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return extrapolate_main(argc, argv); }
#endif
