/* extrapolate: train short, test long (Press et al. 2022, "Train Short, Test Long").
 *
 * Trains the same small character-level LM once per positional scheme, with the
 * same budget, seed and batches, on windows of --train-len characters; then
 * measures the validation loss on windows of each --eval-lens length and prints
 * a markdown table (scheme x length). A learned absolute table has rows only for
 * the training length: its longer entries are "n/a" (nothing is extended).
 * A rotary scheme may carry a context extension, "rotary+yarn": the rotary model
 * is trained once and evaluated past --train-len with the scaled frequencies
 * (PI, NTK, YaRN: factor eval_len / train_len; dynamic: from the call's length),
 * no fine-tuning. --schemes newer runs the newer schemes and these rows.
 * --plot draws the table: the loss against the length, a line per row.
 * docs/examples.md records runs. */
#include "cli.h"
#include "lm_common.h"
#include "../formats/plot.h"

#include <limits.h>

enum { EX_MAX_SCHEMES = 32, EX_MAX_LENS = 8 };

typedef struct extrapolate_opts {
    const char *schemes;   /* comma-separated --pos names */
    const char *eval_lens; /* comma-separated lengths */
    const char *data, *md, *plot;
    int train_len, layers, dim, heads, batch, steps, seed, threads, eval_tokens;
    double lr;
    bool quiet;
} extrapolate_opts;

typedef struct extrapolate_result {
    int n_schemes, n_lens;
    char schemes[EX_MAX_SCHEMES][32];     /* as listed, e.g. "rotary+yarn" */
    const char *base[EX_MAX_SCHEMES];      /* the scheme it trains (an LM_SCHEMES name), e.g. "rotary" */
    int scaling[EX_MAX_SCHEMES];           /* pg_rope_scaling applied past --train-len; PG_ROPE_NONE */
    double scheme_seconds[EX_MAX_SCHEMES]; /* training (the first row of its scheme) and evaluation */
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
                              .steps = 0, /* extrapolate_resolve: 1500, or the preset newer's 600 */
                              .seed = 1337,
                              .eval_tokens = 0, /* 32768, or the preset newer's 16384 */
                              .lr = 3e-3};
}

static const char EXTRAPOLATE_SUMMARY[] =
    "Trains one character-level LM per positional scheme on windows of --train-len characters\n"
    "(same budget, seed and batches) and prints a markdown table of the validation loss (nats per\n"
    "character) at each of --eval-lens. Every argument is checked before any training: a bad one\n"
    "is one line on stderr and exit status 2; a failure while running (e.g. no corpus) is status 1.\n"
    "A rotary scheme may carry a context extension applied past --train-len, e.g. rotary+yarn\n"
    "(+pi +linear +ntk +dynamic_ntk +dynamic_linear +yarn +part_ntk +dynamic_yarn); presets:\n"
    "--schemes classic (the default list), --schemes newer (none alibi rotary kerple sandwich fire\n"
    "cope fox rotary+pi rotary+ntk rotary+dynamic_ntk rotary+yarn, 600 steps).\n"
    "Schemes (train_lm's --pos choices):";

enum { EX_N_FLAGS = 15, EX_MIN_LEN = 2, EX_MAX_LEN = 65536 };

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
        {"steps", CLI_INT, &o->steps, "optimisation steps per scheme (0: 1500; 600 for --schemes newer)", .min = 0,
         .max = 1e9},
        {"lr", CLI_DOUBLE, &o->lr, "peak learning rate (AdamW, warmup + cosine)", .min = 0, .max = INFINITY,
         .above_min = true},
        {"seed", CLI_INT, &o->seed, "seed of the weights and the batches", .min = 0, .max = INT_MAX},
        {"threads", CLI_INT, &o->threads, "threads (0: PG_NUM_THREADS or all cores)", .min = 0,
         .max = PG_MAX_THREADS},
        {"eval-tokens", CLI_INT, &o->eval_tokens,
         "validation characters per length (0: 32768; 16384 for --schemes newer)", .min = 0, .max = 1e9},
        {"data", CLI_STR, &o->data, .help = "corpus (any text file)"},
        {"md", CLI_STR, &o->md, .help = "also write the table to this file"},
        {"plot", CLI_STR, &o->plot, .help = "also draw the table to this PNG: loss against length, a line per row"},
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

/* The +suffixes of --schemes: rotary context extension applied at evaluation
 * (docs/examples.md "extrapolate": the factor each one uses). "pi" and "linear"
 * are the same method. */
typedef struct ex_scaling {
    const char *name;
    pg_rope_scaling scaling;
} ex_scaling;
static const ex_scaling EX_SCALINGS[] = {
    {"pi", PG_ROPE_LINEAR},   {"linear", PG_ROPE_LINEAR},       {"ntk", PG_ROPE_NTK},
    {"dynamic_ntk", PG_ROPE_DYNAMIC_NTK}, {"dynamic_linear", PG_ROPE_DYNAMIC_LINEAR}, {"yarn", PG_ROPE_YARN},
    {"part_ntk", PG_ROPE_PART_NTK}, {"dynamic_yarn", PG_ROPE_DYNAMIC_YARN},
};
enum { EX_N_SCALINGS = sizeof EX_SCALINGS / sizeof EX_SCALINGS[0] };

/* Whole-list names of --schemes. */
static const char *const EX_PRESETS[][2] = {
    {"classic", "none,sinusoidal,learned,rotary,alibi,t5,dpb,xl"},
    {"newer", "none,alibi,rotary,kerple,sandwich,fire,cope,fox,rotary+pi,rotary+ntk,rotary+dynamic_ntk,rotary+yarn"},
};
enum { EX_N_PRESETS = sizeof EX_PRESETS / sizeof EX_PRESETS[0] };

/* The list a --schemes value stands for: a preset's, or the value itself. */
static const char *expand_schemes(const char *list)
{
    for (int i = 0; i < EX_N_PRESETS; i++)
        if (!strcmp(list, EX_PRESETS[i][0]))
            return EX_PRESETS[i][1];
    return list;
}

/* Does the choice pos build a rotary module (rotary, xpos, local)? */
static bool ex_is_rotary(const char *pos)
{
    const pg_posmod_kind_info *k = lm_pos_info(pos);
    return k && (k->props & PG_POS_ROTARY);
}

/* One entry "<scheme>" or "<scheme>+<scaling>" (len bytes at e) into slot s of
 * r. 0, or -1 after one line naming the flag and what is accepted. */
static int parse_scheme(const char *e, size_t len, const char *known, extrapolate_result *r, int s)
{
    const char *plus = memchr(e, '+', len);
    size_t blen = plus ? (size_t)(plus - e) : len;
    int k = 0;
    while (k < LM_N_SCHEMES && (strlen(LM_SCHEMES[k]) != blen || strncmp(LM_SCHEMES[k], e, blen)))
        k++;
    if (k == LM_N_SCHEMES) {
        fprintf(stderr, "extrapolate: --schemes: unknown scheme '%.*s' (accepted: %s; presets: classic newer)\n",
                (int)blen, e, known);
        return -1;
    }
    r->base[s] = LM_SCHEMES[k];
    r->scaling[s] = PG_ROPE_NONE;
    if (plus) {
        const char *suf = plus + 1;
        size_t slen = len - blen - 1;
        int j = 0;
        while (j < EX_N_SCALINGS && (strlen(EX_SCALINGS[j].name) != slen || strncmp(EX_SCALINGS[j].name, suf, slen)))
            j++;
        if (!ex_is_rotary(LM_SCHEMES[k])) {
            fprintf(stderr, "extrapolate: --schemes: '%.*s': a +scaling applies to rotary, xpos or local only, not "
                            "%s\n", (int)len, e, LM_SCHEMES[k]);
            return -1;
        }
        if (j == EX_N_SCALINGS) {
            fprintf(stderr, "extrapolate: --schemes: '%.*s': unknown scaling '%.*s' (accepted after rotary, xpos or "
                            "local: pi linear ntk dynamic_ntk dynamic_linear yarn part_ntk dynamic_yarn)\n",
                    (int)len, e, (int)slen, suf);
            return -1;
        }
        r->scaling[s] = (int)EX_SCALINGS[j].scaling;
    }
    snprintf(r->schemes[s], sizeof r->schemes[0], "%.*s", (int)len, e);
    return 0;
}

/* --schemes (or a preset's list) into r: every entry a scheme of LM_SCHEMES,
 * optionally with a +scaling after a rotary one, none twice. 0, or -1 after
 * one line naming the flag, the bad entry and the accepted names. */
static int check_schemes(const char *given, extrapolate_result *r)
{
    char known[1024];
    lm_pos_names(known, sizeof known);
    const char *list = expand_schemes(given);
    r->n_schemes = 0;
    const char *p = list, *e;
    for (bool more = true; more;) {
        size_t len = next_entry(&p, &e, &more);
        if (len == 0) {
            fprintf(stderr, "extrapolate: --schemes: '%s' has an empty entry (want comma-separated names of: %s)\n",
                    list, known);
            return -1;
        }
        if (r->n_schemes == EX_MAX_SCHEMES) {
            fprintf(stderr, "extrapolate: --schemes: more than %d schemes\n", EX_MAX_SCHEMES);
            return -1;
        }
        int s = r->n_schemes;
        if (parse_scheme(e, len, known, r, s) != 0)
            return -1;
        for (int t = 0; t < s; t++)
            if (r->base[t] == r->base[s] && r->scaling[t] == r->scaling[s]) {
                fprintf(stderr, "extrapolate: --schemes lists '%s' twice\n", r->schemes[s]);
                return -1;
            }
        r->n_schemes++;
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

enum { EX_STEPS = 1500, EX_EVAL_TOKENS = 32768, EX_NEWER_STEPS = 600, EX_NEWER_EVAL_TOKENS = 16384 };

/* o with its zero (default) --steps and --eval-tokens resolved: the preset
 * newer's smaller budget (its twelve rows in under 10 minutes on 2 busy
 * cores, docs/examples.md), or the classic one. */
static extrapolate_opts extrapolate_resolve(const extrapolate_opts *o)
{
    extrapolate_opts res = *o;
    bool newer = !strcmp(o->schemes, "newer");
    if (res.steps == 0)
        res.steps = newer ? EX_NEWER_STEPS : EX_STEPS;
    if (res.eval_tokens == 0)
        res.eval_tokens = newer ? EX_NEWER_EVAL_TOKENS : EX_EVAL_TOKENS;
    return res;
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

/* The options a scheme's module gets here instead of its defaults (docs/examples.md "extrapolate"). */
typedef struct ex_pos_opts {
    pg_fire_opts fire;
    pg_cope_opts cope;
    pg_rotary_opts rope;
} ex_pos_opts;

/* The options this experiment gives a kind, from the training length (a table
 * keyed by registry kind; tests check each is one): FIRE's threshold L0 below
 * the training length (the paper's train_len / 4); CoPE's npos = train_len + 1
 * (RAM's block size + 1; counted positions past it share the last row). */
static const void *ex_fire_opts(ex_pos_opts *x, int train_len)
{
    x->fire = (pg_fire_opts){.init_L = train_len / 4.0};
    return &x->fire;
}
static const void *ex_cope_opts(ex_pos_opts *x, int train_len)
{
    x->cope = (pg_cope_opts){.npos = train_len + 1};
    return &x->cope;
}
static const struct {
    const char *kind;
    const void *(*opts)(ex_pos_opts *x, int train_len);
} EX_KIND_OPTS[] = {{"fire", ex_fire_opts}, {"cope", ex_cope_opts}};

/* *cfg for the scheme pos trained at o->train_len, pointing into *x; *table: a
 * table with train_len rows (nothing past them). 0, or -1 (unknown scheme). */
static int scheme_config(const extrapolate_opts *o, const lm_corpus *c, const char *pos, ex_pos_opts *x,
                         pg_lm_config *cfg, bool *table)
{
    *cfg = pg_lm_defaults(c->vocab, o->dim, o->heads, o->layers);
    if (lm_config_pos(cfg, pos, o->train_len / 4) != 0) { /* local: window train_len / 4, one back */
        fprintf(stderr, "extrapolate: unknown scheme '%s'\n", pos);
        return -1;
    }
    const pg_posmod_kind_info *k = lm_pos_info(pos);
    for (size_t i = 0; k && i < sizeof EX_KIND_OPTS / sizeof EX_KIND_OPTS[0]; i++)
        if (!strcmp(k->kind, EX_KIND_OPTS[i].kind))
            cfg->layer_pos[0].opts = EX_KIND_OPTS[i].opts(x, o->train_len);
    *table = k && (k->props & PG_POS_BOUNDED);
    cfg->max_len = *table ? o->train_len : 0; /* tables have train_len rows; the rest are unbounded */
    cfg->seed = (uint64_t)o->seed;
    return 0;
}

/* Trains lm for o->steps steps; the first and last training losses into row s of r. 0 or -1. */
static int train_scheme(const extrapolate_opts *o, const lm_corpus *c, pg_lm *lm, pg_graph *g, extrapolate_result *r,
                        int s)
{
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_optim_hparams h = pg_adamw_hparams(o->lr);
    h.beta2 = 0.99;
    pg_optim *opt = pg_optim_new(PG_ADAMW, &h);
    pg_optim_add_decay_groups(opt, &ps, pg_no_decay_default, NULL, o->lr, 0.1);
    int warmup = o->steps / 10 < 100 ? o->steps / 10 : 100;
    pg_schedule *sched = pg_schedule_new(opt, pg_sched_warmup_cosine(warmup, 0.0, o->steps, 0.1));
    pg_rng rng = pg_rng_init((uint64_t)o->seed); /* the same batches for every scheme */
    int rc = sched ? 0 : -1;
    for (int step = 1; rc == 0 && step <= o->steps; step++) {
        pg_graph_reset(g);
        pg_tensor *ids, *targets;
        lm_train_batch(g, c, o->batch, o->train_len, &rng, &ids, &targets);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, targets, NULL);
        if (!loss || pg_backward(g, loss) != 0) {
            fprintf(stderr, "extrapolate: %s: %s\n", r->schemes[s], pg_graph_error(g));
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
    pg_graph_reset(g);
    pg_schedule_free(sched);
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
    return rc;
}

/* The rotary options of a row with scaling sc at evaluation length L: plain up to
 * train_len; past it PI, NTK, YaRN, part_ntk with factor L / train_len and the
 * dynamic ones with their default factor (1), both from L0 = train_len. */
static pg_rotary_opts eval_rope(const pg_posmod_spec *spec, int sc, int64_t L, int train_len)
{
    pg_rotary_opts ro = spec->opts ? *(const pg_rotary_opts *)spec->opts : pg_rotary_defaults();
    bool dynamic = sc == PG_ROPE_DYNAMIC_NTK || sc == PG_ROPE_DYNAMIC_LINEAR || sc == PG_ROPE_DYNAMIC_YARN;
    if (L <= train_len)
        return ro;
    ro.scaling = (pg_rope_scaling)sc;
    ro.rope_orig_len = train_len;
    ro.rope_factor = dynamic ? 0.0 : (double)L / train_len;
    return ro;
}

/* The loss of the trained lm (config cfg) at length L with the rotary scaling sc
 * (a copy of lm with the scaled frequencies: the same weights). NaN on error. */
static double eval_scaled(pg_graph *g, pg_lm *lm, const pg_lm_config *cfg, const lm_corpus *c, int sc, int64_t L,
                          int train_len, int64_t windows, int64_t B)
{
    if (sc == PG_ROPE_NONE || L <= train_len)
        return lm_eval_loss(g, lm, c, L, windows, B);
    pg_lm_config scaled = *cfg;
    pg_rotary_opts ro = eval_rope(&cfg->layer_pos[0], sc, L, train_len);
    scaled.layer_pos[0].opts = &ro;
    pg_lm *copy = pg_lm_new(&scaled);
    if (!copy) {
        fprintf(stderr, "extrapolate: scaled rotary at length %lld: %s\n", (long long)L, pg_last_error());
        return NAN;
    }
    pg_tensor_list from = pg_module_parameters(&lm->base), to = pg_module_parameters(&copy->base);
    int rc = from.n == to.n ? 0 : -1;
    for (int i = 0; rc == 0 && i < from.n; i++)
        rc = pg_copy_into(to.tensors[i], from.tensors[i]);
    double loss = rc == 0 ? lm_eval_loss(g, copy, c, L, windows, B) : NAN;
    pg_tensor_list_free(&from);
    pg_tensor_list_free(&to);
    pg_module_free(&copy->base);
    return loss;
}

/* Row s: the trained lm evaluated at every length (NaN where a table has no rows). 0 or -1. */
static int eval_row(const extrapolate_opts *o, const lm_corpus *c, pg_graph *g, pg_lm *lm, const pg_lm_config *cfg,
                    bool table, extrapolate_result *r, int s)
{
    for (int i = 0; i < r->n_lens; i++) {
        int64_t L = r->lens[i];
        if (table && L > o->train_len) {
            r->loss[s][i] = NAN; /* no rows past the training length */
            continue;
        }
        int64_t windows = o->eval_tokens / L > 0 ? o->eval_tokens / L : 1, B = 4096 / L > 0 ? 4096 / L : 1;
        r->loss[s][i] = eval_scaled(g, lm, cfg, c, r->scaling[s], L, o->train_len, windows, B);
        if (!isfinite(r->loss[s][i]))
            return -1;
    }
    return 0;
}

static void print_row(const extrapolate_opts *o, const extrapolate_result *r, int s, int trained_by)
{
    if (trained_by == s)
        printf("%-20s trained %d steps, evaluated, in %6.1f s (loss %.3f -> %.3f); val:", r->schemes[s], o->steps,
               r->scheme_seconds[s], r->first_loss[s], r->last_loss[s]);
    else
        printf("%-20s (the %s model above) evaluated in %6.1f s; val:", r->schemes[s], r->schemes[trained_by],
               r->scheme_seconds[s]);
    for (int i = 0; i < r->n_lens; i++)
        printf(" %lld: %.3f", (long long)r->lens[i], r->loss[s][i]);
    printf("\n");
    fflush(stdout);
}

/* Trains the scheme of row s once, then evaluates every row from s on that
 * trains the same scheme (rotary, rotary+pi, ... share one model); marks them done. 0 or -1. */
static int run_scheme(const extrapolate_opts *o, const lm_corpus *c, extrapolate_result *r, int s, bool *done)
{
    double t0 = lm_now();
    ex_pos_opts x;
    pg_lm_config cfg;
    bool table;
    if (scheme_config(o, c, r->base[s], &x, &cfg, &table) != 0)
        return -1;
    pg_lm *lm = pg_lm_new(&cfg);
    if (!lm) {
        fprintf(stderr, "extrapolate: %s: %s\n", r->schemes[s], pg_last_error());
        return -1;
    }
    pg_graph *g = pg_graph_new();
    int rc = g ? train_scheme(o, c, lm, g, r, s) : -1;
    for (int t = s; rc == 0 && t < r->n_schemes; t++) {
        if (done[t] || r->base[t] != r->base[s])
            continue;
        r->first_loss[t] = r->first_loss[s];
        r->last_loss[t] = r->last_loss[s];
        rc = eval_row(o, c, g, lm, &cfg, table, r, t);
        r->scheme_seconds[t] = lm_now() - t0;
        t0 = lm_now();
        done[t] = true;
        if (rc == 0 && !o->quiet)
            print_row(o, r, t, s);
    }
    pg_graph_free(g);
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

/* The table as a figure at path: the loss against the evaluation length (log
 * axis), a line per row ("n/a" entries leave a gap), the training length
 * marked. 0, or -1 after a message. */
static int draw_plot(const char *path, const extrapolate_opts *o, const extrapolate_result *r)
{
    double x[EX_MAX_LENS];
    pg_series s[EX_MAX_SCHEMES];
    for (int i = 0; i < r->n_lens; i++)
        x[i] = (double)r->lens[i];
    for (int k = 0; k < r->n_schemes; k++) /* past the palette's colours, lines without points */
        s[k] = (pg_series){.label = r->schemes[k], .x = x, .y = r->loss[k], .n = r->n_lens, .color = k,
                           .style = k < PG_PLOT_PALETTE ? PG_PLOT_STYLE_LINE_POINTS : PG_PLOT_STYLE_LINE};
    char title[160], mark[64];
    snprintf(title, sizeof title, "extrapolate: trained on %d characters, evaluated longer", o->train_len);
    snprintf(mark, sizeof mark, "training length %d", o->train_len);
    pg_plot_mark m = {.x = o->train_len, .label = mark};
    double lo = o->train_len, hi = o->train_len; /* an octave of room on the left for the legend and the mark */
    for (int i = 0; i < r->n_lens; i++)
        lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
    pg_lineplot_opts po = {.title = title, .xlabel = "evaluation length L (characters, log scale)",
                           .ylabel = "validation loss (nats per character)", .width = 800, .height = 520,
                           .log_x = true, .marks = &m, .n_marks = 1, .xmin = lo / 2, .xmax = hi * 1.15};
    if (pg_plot_lines(path, s, r->n_schemes, &po) != 0) {
        fprintf(stderr, "extrapolate: cannot draw '%s': %s\n", path, pg_last_error());
        return -1;
    }
    return 0;
}

/* Runs every scheme of o; r gets the figures. The exit status: 0; 2 (CLI_EXIT_USAGE)
 * for a bad option, found before any work; 1 for a failure while running. */
static int extrapolate_run(const extrapolate_opts *given, extrapolate_result *r)
{
    extrapolate_opts resolved = extrapolate_resolve(given);
    const extrapolate_opts *o = &resolved;
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
    bool done[EX_MAX_SCHEMES] = {false};
    for (int s = 0; s < r->n_schemes && rc == 0; s++)
        if (!done[s])
            rc = run_scheme(o, &c, r, s, done);
    lm_corpus_free(&c);
    r->seconds = lm_now() - t0;
    if (rc != 0)
        return 1;
    if (!o->quiet) {
        printf("\nvalidation loss (nats per character), trained at L = %d; %.0f s in all\n\n", o->train_len,
               r->seconds);
        print_table(stdout, o, r);
        fflush(stdout);
        fprintf(stderr, "extrapolate: wall time:");
        for (int s = 0; s < r->n_schemes; s++)
            fprintf(stderr, " %s %.0f s,", r->schemes[s], r->scheme_seconds[s]);
        fprintf(stderr, " the sweep %.0f s (%.1f min)\n", r->seconds, r->seconds / 60);
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
    if (o->plot && draw_plot(o->plot, o, r) != 0)
        return 1;
    if (o->plot && !o->quiet)
        printf("\nwrote %s (the table above as a figure)\n", o->plot);
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
