/* Helpers shared by the character-level LM examples (train_lm, extrapolate):
 * command-line flags, finding and loading the corpus and its batches, building
 * a model for a positional scheme by name, the memory a training step needs,
 * evaluation, sampling, a progress bar and timing.
 * Everything is static inline so that an example including this header only
 * pays for (and is only warned about) what it uses. */
#ifndef PG_EXAMPLES_LM_COMMON_H
#define PG_EXAMPLES_LM_COMMON_H

#include "../posgrad.h" /* relative to this file: also found when a test includes it */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- flags ------------------------------------------------------------------------------------ */
typedef enum { LM_INT, LM_DOUBLE, LM_STR } lm_flag_type;

typedef struct lm_flag {
    const char *name; /* without the leading "--" */
    lm_flag_type type;
    void *dst;        /* int *, double * or const char ** */
    const char *help;
} lm_flag;

static inline void lm_usage(FILE *f, const char *prog, const char *summary, const lm_flag *flags, int n)
{
    fprintf(f, "usage: %s [flags]\n%s\n\nflags:\n", prog, summary);
    for (int i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s %s", flags[i].name,
                 flags[i].type == LM_STR ? "S" : flags[i].type == LM_INT ? "N" : "X");
        fprintf(f, "  %-20s %s", left, flags[i].help);
        if (flags[i].type == LM_INT)
            fprintf(f, " (default %d)\n", *(int *)flags[i].dst);
        else if (flags[i].type == LM_DOUBLE)
            fprintf(f, " (default %g)\n", *(double *)flags[i].dst);
        else if (*(const char **)flags[i].dst)
            fprintf(f, " (default %s)\n", *(const char **)flags[i].dst);
        else
            fprintf(f, "\n");
    }
    fprintf(f, "  %-20s %s\n", "--help", "this list");
}

static inline int lm_set_flag(const lm_flag *f, const char *value, const char *prog)
{
    char *end = NULL;
    errno = 0;
    if (f->type == LM_STR) {
        *(const char **)f->dst = value;
        return 0;
    }
    if (f->type == LM_INT) {
        long v = strtol(value, &end, 10);
        if (errno == 0 && end != value && *end == '\0' && v >= -1000000000L && v <= 1000000000L) {
            *(int *)f->dst = (int)v;
            return 0;
        }
    } else {
        double v = strtod(value, &end);
        if (errno == 0 && end != value && *end == '\0' && isfinite(v)) {
            *(double *)f->dst = v;
            return 0;
        }
    }
    fprintf(stderr, "%s: --%s wants %s, got '%s'\n", prog, f->name, f->type == LM_INT ? "an integer" : "a number",
            value);
    return -1;
}

/* Parses "--name value" and "--name=value". 0: parsed; 1: --help was printed
 * (exit 0); -1: a message and the usage went to stderr (exit nonzero). */
static inline int lm_parse_flags(int argc, char **argv, const lm_flag *flags, int n, const char *summary)
{
    const char *prog = argc > 0 ? argv[0] : "example";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            lm_usage(stdout, prog, summary, flags, n);
            return 1;
        }
        const lm_flag *f = NULL;
        const char *value = NULL;
        if (!strncmp(a, "--", 2)) {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            for (int j = 0; j < n && !f; j++)
                if (strlen(flags[j].name) == len && !strncmp(flags[j].name, a + 2, len))
                    f = &flags[j];
            if (f && eq)
                value = eq + 1;
            else if (f && i + 1 < argc)
                value = argv[++i];
            else if (f) {
                fprintf(stderr, "%s: --%s needs a value\n", prog, f->name);
                lm_usage(stderr, prog, summary, flags, n);
                return -1;
            }
        }
        if (!f) {
            fprintf(stderr, "%s: unknown argument '%s'\n", prog, a);
            lm_usage(stderr, prog, summary, flags, n);
            return -1;
        }
        if (lm_set_flag(f, value, prog) != 0) {
            lm_usage(stderr, prog, summary, flags, n);
            return -1;
        }
    }
    return 0;
}

/* ---- time ------------------------------------------------------------------------------------- */
static inline double lm_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- finding data files ----------------------------------------------------------------------- */
/* Where a relative data path such as the default examples/data/tinyshakespeare.txt
 * is looked for, in this order (an absolute path is only itself):
 *   1. the path itself, from the current directory;
 *   2. $PG_DATA_DIR/<file name> when the environment variable is set;
 *   3. the path from the program's directory (/proc/self/exe) and from its
 *      parent and grandparent (examples/train_lm -> the repository root;
 *      build/tests/run_tests -> the same);
 *   4. <file name> in PG_DATA_DIR as compiled in (-DPG_DATA_DIR=...; default
 *      /usr/local/share/posgrad/data) and in ../share/posgrad/data next to the
 *      program (an installed layout). */
#ifndef PG_DATA_DIR
#define PG_DATA_DIR "/usr/local/share/posgrad/data"
#endif

enum { LM_MAX_PLACES = 8, LM_PATH_MAX = 4096 };

typedef struct lm_places {
    int n;
    char path[LM_MAX_PLACES][LM_PATH_MAX];
    char why[LM_MAX_PLACES][LM_PATH_MAX + 64]; /* what the place is, for the not-found message */
} lm_places;

static inline void lm_places_add(lm_places *p, const char *why, const char *fmt_dir, const char *rest)
{
    if (p->n >= LM_MAX_PLACES)
        return;
    char path[LM_PATH_MAX];
    int k = snprintf(path, sizeof path, "%s%s%s", fmt_dir, fmt_dir[0] ? "/" : "", rest);
    if (k < 0 || k >= (int)sizeof path)
        return;
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->path[i], path))
            return;
    memcpy(p->path[p->n], path, (size_t)k + 1);
    snprintf(p->why[p->n], sizeof p->why[p->n], "%s", why);
    p->n++;
}

/* Every place where `path` may be, in the order above. */
static inline void lm_data_places(const char *path, lm_places *p)
{
    p->n = 0;
    if (path[0] == '/') {
        lm_places_add(p, "as given", "", path);
        return;
    }
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    char cwd[LM_PATH_MAX];
    if (getcwd(cwd, sizeof cwd)) {
        lm_places_add(p, "from the current directory", cwd, path);
    } else
        lm_places_add(p, "from the current directory", "", path);
    const char *env = getenv("PG_DATA_DIR");
    if (env && env[0])
        lm_places_add(p, "$PG_DATA_DIR", env, name);
    char exe[LM_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *cut = strrchr(exe, '/');
        for (int up = 0; up < 3 && cut && cut != exe; up++) { /* the program's directory, its parent, ... */
            *cut = '\0';
            lm_places_add(p,
                          up == 0   ? "from the program's directory"
                          : up == 1 ? "from the program's parent directory"
                                    : "from two levels above the program",
                          exe, path);
            cut = strrchr(exe, '/');
        }
    }
    lm_places_add(p, "PG_DATA_DIR as compiled in", PG_DATA_DIR, name);
    if (n > 0) {
        exe[n] = '\0';
        char *cut = strrchr(exe, '/');
        if (cut && cut != exe) {
            *cut = '\0';
            cut = strrchr(exe, '/');
            if (cut && cut != exe) {
                *cut = '\0';
                char share[LM_PATH_MAX];
                if (snprintf(share, sizeof share, "%s/share/posgrad/data", exe) < (int)sizeof share)
                    lm_places_add(p, "share/posgrad/data of the program's installation prefix", share, name);
            }
        }
    }
}

/* Resolves a data file (what: "corpus", flag: "--data") into found. 0; or
 * -1 after a message on stderr: a directory, or every place looked in. A file
 * found elsewhere than the path itself gets a note on stderr. */
static inline int lm_find_data(const char *path, const char *what, const char *flag, char *found, size_t size)
{
    struct stat st;
    if (stat(path, &st) == 0) { /* as given (also a directory: said so below) */
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "%s '%s' is a directory; %s expects a text file (e.g. examples/data/tinyshakespeare.txt)\n",
                    what, path, flag);
            return -1;
        }
        snprintf(found, size, "%s", path);
        return 0;
    }
    int err = errno;
    lm_places p;
    lm_data_places(path, &p);
    for (int i = 1; i < p.n && err == ENOENT; i++)
        if (stat(p.path[i], &st) == 0 && !S_ISDIR(st.st_mode) && strlen(p.path[i]) < size) {
            snprintf(found, size, "%s", p.path[i]);
            fprintf(stderr, "note: %s '%s' is not in the current directory; using %s (%s)\n", what, path, p.path[i],
                    p.why[i]);
            return 0;
        }
    if (err != ENOENT || path[0] == '/') {
        fprintf(stderr, "cannot open %s '%s': %s (%s expects a text file)\n", what, path, strerror(err), flag);
        return -1;
    }
    fprintf(stderr, "cannot find %s '%s'; looked in:\n", what, path);
    for (int i = 0; i < p.n; i++)
        fprintf(stderr, "  %s  (%s)\n", p.path[i], p.why[i]);
    const char *env = getenv("PG_DATA_DIR");
    if (!env || !env[0])
        fprintf(stderr, "  ($PG_DATA_DIR is not set)\n");
    fprintf(stderr, "pass %s with the path of a text file, or set PG_DATA_DIR to the directory that holds it\n", flag);
    return -1;
}

/* ---- corpus ----------------------------------------------------------------------------------- */
/* A text as ids into its sorted set of distinct bytes; the first 90% is the
 * training split, the rest validation (as nanoGPT's shakespeare_char). */
typedef struct lm_corpus {
    uint8_t *ids;
    int64_t n, n_train;       /* ids [0, n_train) train, [n_train, n) validation */
    int vocab;
    unsigned char chars[256]; /* id -> byte */
    int id_of[256];           /* byte -> id, -1 if absent */
    char path[LM_PATH_MAX];   /* the file read (lm_find_data's answer for the path asked for) */
} lm_corpus;

static inline void lm_corpus_free(lm_corpus *c)
{
    free(c->ids);
    c->ids = NULL;
}

/* 0, or -1 after a message on stderr. The path is looked for as lm_find_data
 * does (it is --data's value). Needs min_split + 1 tokens in each split. */
static inline int lm_corpus_load(lm_corpus *c, const char *path, int64_t min_split)
{
    memset(c, 0, sizeof *c);
    if (lm_find_data(path, "corpus", "--data", c->path, sizeof c->path) != 0)
        return -1;
    path = c->path;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open corpus '%s': %s (--data expects a text file)\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    bool failed = ferror(f) != 0;
    int err = errno;
    fclose(f);
    if (!buf) {
        fprintf(stderr, "out of memory reading '%s'\n", path);
        return -1;
    }
    if (failed) {
        fprintf(stderr, "cannot read corpus '%s': %s (--data expects a text file)\n", path, strerror(err));
        free(buf);
        return -1;
    }
    int64_t n_val = (int64_t)n - (int64_t)n * 9 / 10;
    if (n == 0) {
        fprintf(stderr, "corpus '%s' is empty; --data expects a text file\n", path);
        free(buf);
        return -1;
    }
    if ((int64_t)n * 9 / 10 <= min_split || n_val <= min_split) {
        fprintf(stderr,
                "corpus '%s' has %zu bytes: too short for windows of %lld tokens in both splits (the last 10%% "
                "is validation)\n",
                path, n, (long long)min_split);
        free(buf);
        return -1;
    }
    bool seen[256] = {false};
    for (size_t i = 0; i < n; i++)
        seen[buf[i]] = true;
    for (int b = 0; b < 256; b++) {
        c->id_of[b] = seen[b] ? c->vocab : -1;
        if (seen[b])
            c->chars[c->vocab++] = (unsigned char)b;
    }
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)c->id_of[buf[i]];
    c->ids = buf;
    c->n = (int64_t)n;
    c->n_train = (int64_t)n * 9 / 10;
    return 0;
}

/* ids and targets (B, L) I64 in g: window b starts at starts[b] of the corpus. */
static inline void lm_fill_windows(pg_graph *g, const lm_corpus *c, const int64_t *starts, int64_t B, int64_t L,
                                   pg_tensor **ids, pg_tensor **targets)
{
    *ids = pg_empty(g, PG_I64, PG_SHAPE(B, L));
    *targets = pg_empty(g, PG_I64, PG_SHAPE(B, L));
    if (!*ids || !*targets)
        return;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L; t++) {
            pg_i64(*ids)[b * L + t] = c->ids[starts[b] + t];
            pg_i64(*targets)[b * L + t] = c->ids[starts[b] + t + 1];
        }
}

/* A random training batch (B <= 4096). */
static inline void lm_train_batch(pg_graph *g, const lm_corpus *c, int64_t B, int64_t L, pg_rng *r,
                                  pg_tensor **ids, pg_tensor **targets)
{
    int64_t starts[4096];
    for (int64_t b = 0; b < B && b < 4096; b++)
        starts[b] = (int64_t)(pg_rng_uniform(r) * (double)(c->n_train - L - 1));
    lm_fill_windows(g, c, starts, B, L, ids, targets);
}

/* ---- models by scheme name ---------------------------------------------------------------------- */
/* The --pos choices of the LM examples (train_lm, extrapolate; the training
 * benchmarks use them too): "none", then every registered kind (nn/posmod_list.h,
 * pg_posmod_info_at) not marked PG_POS_VISION, under its kind name, then the
 * choices below that are not registry kinds. LM_POS_EXTRAS is the one place
 * these are defined:
 *   none   no positional module (kind NULL);
 *   t5     the registry's t5 with causal buckets, as x-transformers in a decoder
 *          (an entry named after a kind replaces that kind's defaults);
 *   rel    Shaw-style relative embeddings: the registry's rel1d (a vision kind,
 *          offered to the text examples under this name);
 *   local  rotary inside local attention: LocalAttention's causal windows (one
 *          window back) as pg_lm's attention band, which the fused kernel runs
 *          in time and memory linear in the length. */
typedef struct lm_pos_choice {
    const char *name; /* the --pos value */
    const char *kind; /* the registry kind it builds; NULL: no positional module */
    const void *opts; /* that kind's options; NULL: its defaults */
    bool band;        /* attention in causal windows of local_window (lm_config_pos), one back */
} lm_pos_choice;

static const pg_t5_opts LM_T5_CAUSAL = {.causal = true};
static const lm_pos_choice LM_POS_EXTRAS[] = {
    {"none", NULL, NULL, false},
    {"t5", "t5", &LM_T5_CAUSAL, false},
    {"rel", "rel1d", NULL, false},
    {"local", "rotary", NULL, true},
};
enum { LM_N_POS_EXTRAS = sizeof LM_POS_EXTRAS / sizeof LM_POS_EXTRAS[0], LM_MAX_POS_CHOICES = 128 };

typedef struct lm_pos_choices {
    int n;
    const char *names[LM_MAX_POS_CHOICES];
    lm_pos_choice c[LM_MAX_POS_CHOICES];
} lm_pos_choices;

static inline void lm_pos_add(lm_pos_choices *l, lm_pos_choice c)
{
    if (l->n < LM_MAX_POS_CHOICES) {
        l->c[l->n] = c;
        l->names[l->n++] = c.name;
    }
}

/* The choices in order, built from the registry on the first call. */
static inline const lm_pos_choices *lm_pos_choice_list(void)
{
    static lm_pos_choices l;
    if (l.n > 0)
        return &l;
    bool used[LM_N_POS_EXTRAS] = {false};
    for (int e = 0; e < LM_N_POS_EXTRAS; e++)
        if (!LM_POS_EXTRAS[e].kind) { /* "none" first */
            lm_pos_add(&l, LM_POS_EXTRAS[e]);
            used[e] = true;
        }
    const pg_posmod_kind_info *k;
    for (int i = 0; (k = pg_posmod_info_at(i)); i++) {
        if (k->props & PG_POS_VISION)
            continue;
        lm_pos_choice c = {k->kind, k->kind, NULL, false};
        for (int e = 0; e < LM_N_POS_EXTRAS; e++)
            if (!used[e] && !strcmp(LM_POS_EXTRAS[e].name, k->kind)) {
                c = LM_POS_EXTRAS[e];
                used[e] = true;
            }
        lm_pos_add(&l, c);
    }
    for (int e = 0; e < LM_N_POS_EXTRAS; e++)
        if (!used[e])
            lm_pos_add(&l, LM_POS_EXTRAS[e]);
    return &l;
}

/* The choices as an array of names and their number (expressions, not constants). */
#define LM_SCHEMES (lm_pos_choice_list()->names)
#define LM_N_SCHEMES (lm_pos_choice_list()->n)

/* The choice called name, or NULL. */
static inline const lm_pos_choice *lm_pos_find(const char *name)
{
    const lm_pos_choices *l = lm_pos_choice_list();
    for (int i = 0; name && i < l->n; i++)
        if (!strcmp(l->names[i], name))
            return &l->c[i];
    return NULL;
}

/* "none sinusoidal ... local" into buf (n bytes). */
static inline const char *lm_pos_names(char *buf, size_t n)
{
    const lm_pos_choices *l = lm_pos_choice_list();
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->n && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? " " : "", l->names[i]);
    return buf;
}

/* The registry entry of the kind the choice pos builds; NULL for "none" or an unknown name. */
static inline const pg_posmod_kind_info *lm_pos_info(const char *pos)
{
    const lm_pos_choice *c = lm_pos_find(pos);
    return c && c->kind ? pg_posmod_info(c->kind) : NULL;
}

/* The choices whose attention runs in the fused kernel (memory linear in the
 * length), from the registry: no logits bias, or one of the distance alone
 * (dist_bias), separable (sep_bias), in relative keys (rel_bias) or computed with
 * the attention (attend: CoPE). Space-separated into buf (n bytes). */
static inline const char *lm_fused_names(char *buf, size_t n)
{
    const lm_pos_choices *l = lm_pos_choice_list();
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->n && used < n; i++) {
        const pg_posmod_kind_info *k = l->c[i].kind ? pg_posmod_info(l->c[i].kind) : NULL;
        if (k && (k->hooks & PG_POS_HOOK_BIAS) &&
            !(k->hooks & (PG_POS_HOOK_DIST | PG_POS_HOOK_SEP | PG_POS_HOOK_REL | PG_POS_HOOK_ATTEND)))
            continue;
        used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? " " : "", l->names[i]);
    }
    return buf;
}

/* An input scheme (applied once to the embeddings, pg_lm_config.input_pos)? */
static inline bool lm_scheme_is_input(const char *pos)
{
    const pg_posmod_kind_info *k = lm_pos_info(pos);
    return k && k->role == PG_POS_ROLE_INPUT;
}

/* Sets c's positional modules (and for a banded choice, "local", its band of
 * window local_window) for the choice pos. 0, or -1 (unknown name). */
static inline int lm_config_pos(pg_lm_config *c, const char *pos, int64_t local_window)
{
    const lm_pos_choice *ch = lm_pos_find(pos);
    c->n_input_pos = 0;
    c->n_layer_pos = 0;
    if (!ch)
        return -1;
    if (!ch->kind)
        return 0;
    pg_posmod_spec s = {.kind = ch->kind, .opts = ch->opts};
    if (ch->band)
        c->band = (pg_attn_band){.window = local_window > 0 ? local_window : 1, .look_backward = 1};
    if (lm_scheme_is_input(pos)) {
        c->n_input_pos = 1;
        c->input_pos[0] = s;
    } else {
        c->n_layer_pos = 1;
        c->layer_pos[0] = s;
    }
    return 0;
}

/* ---- the memory of a training step ------------------------------------------------------------ */
/* The parameters pg_lm_new(c) would make, without making them: the blocks by
 * formula, the positional modules by building one of each at max_len 2 and 3
 * (a table of max_len rows, as learned's or rel's, grows linearly; the others
 * do not depend on it), counted once when shared (share_layer_pos). The blocks follow
 * dim_head, kv_heads, qk-norm gains and the bias switches. *mat (may be NULL) is set when a layer module adds a
 * bias the fused attention kernel cannot take (mod_bias without dist_bias, sep_bias or rel_bias): a
 * step then holds (B, heads, L, L) tensors. 0, or -1 with pg_last_error. */
/* a bias switch resolved as pg_block_new does (transformer.h: DEFAULT follows dflt) */
static inline int64_t lm_bias_on(pg_bias_switch s, bool dflt) { return s == PG_BIAS_ON || (s == PG_BIAS_DEFAULT && dflt); }

/* One block's parameters: norms, to_qkv (q: heads x dim_head rows, k and v: kv_heads x dim_head
 * each), to_out, the qk-norm gains, the feed-forward (nn/transformer.h, nn/attention.h). */
static inline int64_t lm_block_params(const pg_lm_config *c)
{
    int64_t D = c->dim, F = c->ff_hidden > 0 ? c->ff_hidden : 4 * D;
    int64_t dh = c->dim_head > 0 ? c->dim_head : D / c->heads, kv = c->kv_heads > 0 ? c->kv_heads : c->heads;
    int64_t q = c->heads * dh, qkv = q + 2 * kv * dh;
    int64_t ab = lm_bias_on(c->attn_bias, c->bias), fb = lm_bias_on(c->ff_bias, c->bias);
    int64_t norm = D + (c->norm == PG_NORM_LAYER && c->norm_bias != PG_BIAS_OFF ? D : 0);
    int64_t attn = qkv * D + qkv * ab + q * D + D * ab + (c->qk_norm && c->qk_norm_dim_scale ? qkv - kv * dh : 0);
    int64_t ff = c->ff_kind == PG_FF_GLU ? D * 2 * F + 2 * F * fb + F * D + D * fb : D * F + F * fb + F * D + D * fb;
    return 2 * norm + attn + ff;
}

static inline int lm_count_params(const pg_lm_config *c, int64_t *out, bool *mat)
{
    int64_t D = c->dim, V = c->vocab;
    int64_t norm = D + (c->norm == PG_NORM_LAYER && c->norm_bias != PG_BIAS_OFF ? D : 0);
    int64_t dh = c->dim_head > 0 ? c->dim_head : D / c->heads;
    int64_t n = V * D + c->layers * lm_block_params(c) + norm + (c->tie_weights ? 0 : D * V);
    bool quadratic = false;
    for (int side = 0; side < 2; side++) {
        int k = side == 0 ? c->n_input_pos : c->n_layer_pos;
        const pg_posmod_spec *specs = side == 0 ? c->input_pos : c->layer_pos;
        for (int i = 0; i < k; i++) {
            int64_t at[2];
            for (int j = 0; j < 2; j++) {
                pg_rng r = pg_rng_init(0);
                pg_posmod_args a = {D, side ? c->heads : 0, side ? dh : 0, c->max_len > 0 ? 2 + j : 0,
                                    side ? 0 : -1, c->dtype, &r, NULL};
                pg_posmod *m = pg_posmod_from_spec(&specs[i], &a);
                if (!m)
                    return -1;
                at[j] = pg_module_num_elements(&m->base);
                quadratic = quadratic || (side && m->ops->mod_bias && !m->ops->dist_bias && !m->ops->sep_bias &&
                                          !m->ops->rel_bias && !m->ops->attend);
                pg_module_free(&m->base);
            }
            int64_t per_row = at[1] - at[0];
            int64_t copies = side && !c->share_layer_pos[i] ? c->layers : 1; /* a shared one is the LM's, once */
            n += copies * (at[0] + (c->max_len > 0 ? per_row * (c->max_len - 2) : 0));
        }
    }
    if (mat)
        *mat = quadratic || c->attn_dropout > 0; /* attention dropout needs the weights too */
    *out = n;
    return 0;
}

/* What one training step of pg_lm (forward, backward, clipping, an AdamW step)
 * holds at its peak, in bytes. The graph of a step keeps every activation and
 * its gradient until the graph is reset, so the activations are counted per
 * token. Fitted to pg_arena_used after a step of pg_lm's defaults (GELU MLP of
 * 4 dim, LayerNorm, no dropout) on the kernels of 2026-12-04 (per token 2 dim N
 * fewer from 2026-12-06: the fused attention writes its heads merged), a step holds, in
 * floats of the model's dtype, with N layers, H heads, Dh = dim / H, T threads:
 *   per token      (40.2 + a) dim N + (4.15 + d) dim + H N + 2 vocab
 *   per position   ((4.8 Dh + rT + rD Dh) T + p dim) N (the fused attention's rows, per thread;
 *                                                 CoPE's own attention: pT in place of 4.8 Dh)
 *   per layer      18000 T + c + cT T
 *   per pair       (q B H + qh H + ql) L^2 N   (only the schemes the fused kernel cannot run)
 * with a, d, p, c, cT, q, qh, ql, rT, rD of the scheme below: q, k and v split from the
 * projection and their gradients where a module takes them (cope's a; the fused kernel
 * reads the rest in place, pg_flash_attention_qkv, rel's and xl's relative queries too, and
 * rotates rotary's and xPos's q and k itself, a head at a time: rD, its rotated q, k and
 * their gradients, 2 (Lq + Lk) Dh floats in the forward's scratch and again in the
 * backward's; rel's rD its relative keys transposed there, xl's those and its shifted q,
 * q + u, and their gradient), the input encodings (d, p), relative
 * tables (p, c, cT; rT, the fused kernel's relative logits of a query block and their
 * gradient, 2 x 64 x (Lq + Lk - 1) floats in the forward's scratch and again in the
 * backward's), CoPE's (B, H, L, max_len + 1) position logits and their gradients (q; with
 * attention dropout its bias goes through mod_bias, with its (B, H, L, L) logits, bias and
 * gradients), FIRE's (H, L, L) bias and its MLP's (L, L) pairs (qh, ql). Within 1.3% of the arena over dim 64..256,
 * 1..4 layers, 1..8 heads of width >= 16, vocab 65..256, batch >= 2 and 512
 * tokens or more, 1 and 2 threads; smaller runs within 1.6% (docs/examples.md,
 * "Memory"). FIRE is counted with its pairs although it runs over distances
 * while every position is below its threshold: the threshold is learned and
 * may fall below seq during a run. Parameters cost 16 bytes each in f32 (value,
 * gradient, Adam's two moments); the process itself (code, thread pool, GEMM
 * buffers) about 3 MB + 1 MB per thread; the corpus one byte per character
 * (train_lm adds its figures, lm_figs_memory). Loading a training checkpoint
 * holds, besides the model and Adam's state, the file's tensors and a copy of
 * the optimizer state: 32 bytes per f32 parameter in all, which passes a step's
 * peak for models of many parameters and short windows. docs/examples.md
 * compares these with the peak resident memory of real runs. */
typedef struct lm_mem {
    int64_t params;
    double param_bytes;     /* parameters, gradients and AdamW's moments */
    double act_bytes;       /* the step's graph */
    double scores_bytes;    /* the part of act_bytes in tensors over (query, key) pairs */
    const char *scores_what; /* what those are, for messages ("(batch, heads, seq, seq) attention scores") */
    double base_bytes;      /* the process and the corpus */
    double total;           /* a training step's peak */
    double load_bytes;      /* the peak while loading a checkpoint (pg_checkpoint_load) */
    bool quadratic;         /* act_bytes grows with L^2 */
} lm_mem;

typedef struct lm_scheme_cost {
    const char *pos;
    double a, d, p, c, cT, q, qh, ql; /* as in lm_step_memory's comment */
    const char *pairs;            /* what the pair terms hold, NULL: none */
    double pT;                    /* its own attention's rows (pos_cope's attend); 0: the fused kernel's */
    double rT;                    /* the fused kernel's relative-key tables, per position and thread */
    double rD;                    /* the fused kernel's rotated heads (rel: relative keys), per position and
                                   * thread, times Dh */
} lm_scheme_cost;

/* Measured per --pos choice (not a list of choices: a choice measured nowhere
 * here, e.g. a newly registered scheme, gets lm_unmeasured_cost). */
#define LM_SCORES "(batch, heads, seq, seq) attention scores"
#define LM_FIRE_PAIRS "(heads, seq, seq) biases and (seq, seq) pairs through its MLP"
static const lm_scheme_cost LM_SCHEME_COSTS[] = {
    /*  --pos      a     d    p     c       cT     q  qh ql   pairs          pT   rT   rD */
    {"none",       0,    0,   0,    0,      0,     0, 0, 0,   NULL,          0,   0,   0},
    {"sinusoidal", 0,    2.5, 1.1,  0,      0,     0, 0, 0,   NULL,          0,   0,   0},
    {"learned",    0,    2.4, 0.7,  0,      0,     0, 0, 0,   NULL,          0,   0,   0},
    {"continuous", 0,    2.4, 0.7,  0,      0,     0, 0, 0,   NULL,          0,   0,   0},
    {"rotary",     0,    0,   0,    0,      0,     0, 0, 0,   NULL,          0,   0,   8},
    {"xpos",       0,    0,   2.2,  0,      0,     0, 0, 0,   NULL,          0,   0,   8},
    {"alibi",      0,    0,   0,    2300,   0,     0, 0, 0,   NULL,          0,   0,   0},
    {"dpb",        0,    0,   4,    4700,   0,     0, 0, 0,   NULL,          0,   0,   0},
    {"xl",         0,    0,   18.8, -26400, 28600, 0, 0, 0,   NULL,          0,   512, 4.5},
    {"t5",         0,    0,   0,    5500,   0,     0, 0, 0,   NULL,          0,   0,   0},
    {"kerple",     0,    0,   0,    6000,   0,     0, 0, 0,   NULL,          0,   0,   0},
    {"sandwich",   0,    0,   0,    0,      0,     0, 0, 0,   NULL,          0,   0,   0},
    {"fire",       0,    0,   0,    12400,  0,     0, 7, 8.9, LM_FIRE_PAIRS, 0,   0,   0},
    {"cope",       9.1,  0,   0,    5500,   0,     0, 0, 0,   NULL,          940, 0,   0},
    {"fox",        0.14, 0,   0,    21100,  0,     0, 0, 0,   NULL,          0,   0,   0},
    {"rel",        0,    0,   5.3,  -28400, 28600, 0, 0, 0,   NULL,          0,   512, 6.5},
    {"local",      0,    0,   0,    0,      0,     0, 0, 0,   NULL,          0,   0,   8},
};
/* floats a score of a bias the fused kernel cannot take, measured nowhere: the unfused
 * attention's logits, bias, weights and their gradients */
#define LM_UNFUSED_SCORE_FLOATS 32

/* The costs of a choice measured nowhere: the largest of each column of LM_SCHEME_COSTS,
 * and LM_UNFUSED_SCORE_FLOATS a score for the pair terms */
static inline lm_scheme_cost lm_unmeasured_cost(void)
{
    lm_scheme_cost u = {NULL, 0, 0, 0, 0, 0, LM_UNFUSED_SCORE_FLOATS, 0, 0, LM_SCORES, 0, 0, 0};
    for (size_t i = 0; i < sizeof LM_SCHEME_COSTS / sizeof LM_SCHEME_COSTS[0]; i++) {
        const lm_scheme_cost *k = &LM_SCHEME_COSTS[i];
        u.a = fmax(u.a, k->a), u.d = fmax(u.d, k->d), u.p = fmax(u.p, k->p);
        u.c = fmax(u.c, k->c), u.cT = fmax(u.cT, k->cT), u.rT = fmax(u.rT, k->rT), u.rD = fmax(u.rD, k->rD);
    }
    return u;
}

/* c: the model (vocab set); pos: the --pos name (NULL or unknown:
 * lm_unmeasured_cost); B x L tokens a step; corpus_bytes; threads. 0 or -1. */
static inline int lm_step_memory(const pg_lm_config *c, const char *pos, int64_t B, int64_t L, int64_t corpus_bytes,
                                 int threads, lm_mem *m)
{
    memset(m, 0, sizeof *m);
    if (lm_count_params(c, &m->params, &m->quadratic) != 0)
        return -1;
    lm_scheme_cost k = lm_unmeasured_cost();
    for (size_t i = 0; pos && i < sizeof LM_SCHEME_COSTS / sizeof LM_SCHEME_COSTS[0]; i++)
        if (!strcmp(pos, LM_SCHEME_COSTS[i].pos))
            k = LM_SCHEME_COSTS[i];
    if (m->quadratic && !k.pairs) /* attention dropout keeps the weights of any scheme */
        k.q = LM_UNFUSED_SCORE_FLOATS, k.pairs = LM_SCORES;
    if (c->attn_dropout > 0) /* a scheme's own attention then gives way to mod_bias: pairs (above), the kernel's rows */
        k.pT = 0;
    double D = (double)c->dim, N = (double)c->layers, H = (double)c->heads, V = (double)c->vocab;
    double T = threads > 0 ? threads : 1, Lf = (double)L, Dh = c->dim_head > 0 ? (double)c->dim_head : D / H;
    double tokens = (double)B * Lf, size = c->dtype == PG_F64 ? 8.0 : 4.0;
    double per_token = (40.2 + k.a) * D * N + (4.15 + k.d) * D + H * N + 2 * V;
    double per_position = (((k.pT > 0 ? k.pT : 4.8 * Dh) + k.rT + k.rD * Dh) * T + k.p * D) * N;
    double fixed = (18000 * T + k.c + k.cT * T) * N;
    double pairs = m->quadratic ? (k.q * (double)B * H + k.qh * H + k.ql) * Lf * Lf * N : 0;
    m->scores_bytes = pairs * size;
    m->scores_what = m->quadratic ? k.pairs : NULL;
    m->act_bytes = (tokens * per_token + Lf * per_position + fixed + pairs) * size;
    m->param_bytes = (double)m->params * size * 4;
    m->base_bytes = 3e6 + 1e6 * T + (double)corpus_bytes;
    m->total = m->act_bytes + m->param_bytes + m->base_bytes;
    m->load_bytes = (double)m->params * size * 8 + m->base_bytes;
    return 0;
}

/* "812 kB", "3.1 MB", "2.1 GB", "1.6 TB" (decimal units). */
static inline const char *lm_fmt_bytes(char *buf, size_t n, double bytes)
{
    static const char *const units[] = {"bytes", "kB", "MB", "GB", "TB", "PB", "EB"};
    int u = 0;
    while (bytes >= 999.5 && u < 6) {
        bytes /= 1000;
        u++;
    }
    snprintf(buf, n, bytes < 9.95 && u > 0 ? "%.1f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

/* A "Key:   123 kB" line of a /proc file, in bytes; -1 if absent. */
static inline double lm_proc_kb(const char *file, const char *key)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return -1;
    char line[256];
    size_t n = strlen(key);
    double v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            v = strtod(line + n + 1, NULL) * 1024.0;
            break;
        }
    fclose(f);
    return v;
}

/* The memory this process may still use, in bytes: MemAvailable of
 * /proc/meminfo, lowered to a cgroup's limit minus its usage when one is set
 * (v2 memory.max / memory.current, v1 memory.limit_in_bytes / usage_in_bytes),
 * else free physical pages (sysconf). *source names where it came from. -1 if
 * nothing says. */
static inline double lm_mem_available(const char **source)
{
    double avail = lm_proc_kb("/proc/meminfo", "MemAvailable");
    *source = "MemAvailable in /proc/meminfo";
#ifdef _SC_AVPHYS_PAGES
    if (avail < 0) {
        long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) {
            avail = (double)pages * (double)page;
            *source = "free physical memory (sysconf)";
        }
    }
#endif
    static const char *const limits[2][2] = {{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
                                             {"/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                              "/sys/fs/cgroup/memory/memory.usage_in_bytes"}};
    for (int i = 0; i < 2; i++) {
        double v[2] = {-1, -1};
        for (int j = 0; j < 2; j++) {
            FILE *f = fopen(limits[i][j], "r");
            char text[64];
            if (f && fgets(text, sizeof text, f) && text[0] >= '0' && text[0] <= '9')
                v[j] = strtod(text, NULL);
            if (f)
                fclose(f);
        }
        if (v[0] > 0 && v[0] < 1e18 && v[1] >= 0 && (avail < 0 || v[0] - v[1] < avail)) {
            avail = v[0] > v[1] ? v[0] - v[1] : 0;
            *source = i == 0 ? "the cgroup's memory.max" : "the cgroup's memory.limit_in_bytes";
        }
    }
    return avail;
}

/* This process's peak resident memory so far (VmHWM), in bytes; -1 if unknown. */
static inline double lm_peak_rss(void) { return lm_proc_kb("/proc/self/status", "VmHWM"); }

/* ---- evaluation and sampling -------------------------------------------------------------------- */
/* Mean loss over n_windows evenly spaced windows of length L in the validation
 * split (the same windows every call), batched by B, without recording.
 * NaN on error. */
static inline double lm_eval_loss(pg_graph *g, pg_lm *lm, const lm_corpus *c, int64_t L, int64_t n_windows, int64_t B)
{
    int64_t n_val = c->n - c->n_train, span = n_val - L - 1;
    if (span < 0 || n_windows < 1 || B < 1 || B > 4096)
        return NAN;
    bool was_training = lm->base.training;
    pg_module_train(&lm->base, false);
    double total = 0.0;
    int64_t done = 0;
    while (done < n_windows) {
        int64_t nb = n_windows - done < B ? n_windows - done : B, starts[4096];
        for (int64_t b = 0; b < nb; b++)
            starts[b] = c->n_train + (n_windows > 1 ? (done + b) * span / (n_windows - 1) : 0);
        pg_graph_reset(g);
        pg_no_grad_begin(g);
        pg_tensor *ids, *targets;
        lm_fill_windows(g, c, starts, nb, L, &ids, &targets);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, targets, NULL);
        pg_no_grad_end(g);
        if (!loss) {
            fprintf(stderr, "evaluation at length %lld: %s\n", (long long)L, pg_graph_error(g));
            total = NAN;
            break;
        }
        total += pg_item(loss) * (double)nb;
        done += nb;
    }
    pg_graph_reset(g);
    pg_module_train(&lm->base, was_training);
    return total / (double)n_windows;
}

/* pg_sample_opts.on_token for lm_sample: prints each character as it comes */
typedef struct lm_printer {
    FILE *out;
    const lm_corpus *c;
} lm_printer;

static inline int lm_print_token(void *ctx, int64_t b, int64_t token)
{
    (void)b; /* one row */
    lm_printer *p = ctx;
    fputc(p->c->chars[token], p->out);
    return fflush(p->out) == 0 ? 0 : 1; /* a closed pipe ends the sampling */
}

/* Writes prompt + up to o->max_new sampled characters to out, each as it is
 * drawn (pg_lm_generate_ex under o, whose on_token / ctx this sets; the model
 * sees at most its cfg.max_len last ids). The characters drawn (>= 0), or -1. */
static inline int lm_sample(FILE *out, pg_lm *lm, const lm_corpus *c, const char *prompt, const pg_sample_opts *o)
{
    int64_t n0 = 0, *hist = malloc(strlen(prompt) * sizeof *hist + sizeof *hist);
    if (!hist)
        return -1;
    for (const char *p = prompt; *p; p++)
        if (c->id_of[(unsigned char)*p] >= 0)
            hist[n0++] = c->id_of[(unsigned char)*p];
    if (n0 == 0)
        hist[n0++] = 0;
    for (int64_t i = 0; i < n0; i++)
        fputc(c->chars[hist[i]], out);
    pg_tensor *ids = pg_tensor_from_array(NULL, PG_I64, 2, (const int64_t[]){1, n0}, hist); /* (1, L0) */
    free(hist);
    if (!ids)
        return -1;
    lm_printer pr = {out, c};
    pg_sample_opts so = *o;
    so.on_token = lm_print_token;
    so.ctx = &pr;
    pg_tensor *text = pg_lm_generate_ex(lm, ids, &so); /* (1, n0 + n) */
    fputc('\n', out);
    if (!text)
        fprintf(stderr, "sampling: %s\n", pg_last_error());
    int rc = text ? (int)(text->shape[1] - n0) : -1; /* text (1, n0 + n) */
    pg_tensor_free(text);
    pg_tensor_free(ids);
    return rc;
}

/* ---- progress ----------------------------------------------------------------------------------- */
/* On a terminal: one line redrawn with \r (step, loss, tokens/s, ETA); otherwise
 * a plain line every `every` steps and at the last. */
typedef struct lm_progress {
    bool tty;
    int every;
    int width;        /* characters of the bar */
    double last_draw; /* lm_now() of the last redraw (the bar is redrawn at most 10 times a second) */
} lm_progress;

static inline void lm_fmt_time(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7)
        s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static inline void lm_progress_show(lm_progress *p, int step, int steps, double loss, double tok_s, double eta_s)
{
    char eta[32];
    lm_fmt_time(eta, sizeof eta, eta_s);
    if (p->tty) {
        double now = lm_now();
        if (now - p->last_draw < 0.1 && step != steps)
            return;
        p->last_draw = now;
        int filled = steps > 0 ? (int)((int64_t)p->width * step / steps) : p->width;
        char bar[128];
        int w = p->width < 120 ? p->width : 120;
        for (int i = 0; i < w; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[w] = '\0';
        printf("\r[%s] step %d/%d  loss %.4f  %.0f tok/s  ETA %s   ", bar, step, steps, loss, tok_s, eta);
        fflush(stdout);
    } else if (step % p->every == 0 || step == steps || step == 1) {
        printf("step %d/%d  loss %.4f  %.0f tok/s  ETA %s\n", step, steps, loss, tok_s, eta);
        fflush(stdout);
    }
}

/* Ends the redrawn line before other output. */
static inline void lm_progress_break(const lm_progress *p)
{
    if (p->tty) {
        printf("\n");
        fflush(stdout);
    }
}

/* mkdir -p for one level (the parent must exist). 0 or -1 with a message. */
static inline int lm_make_dir(const char *dir)
{
    struct stat st;
    if (mkdir(dir, 0777) == 0 || (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)))
        return 0;
    if (errno == EEXIST)
        fprintf(stderr, "cannot create directory '%s': a file of that name exists (--out names a directory)\n", dir);
    else
        fprintf(stderr, "cannot create directory '%s': %s\n", dir, strerror(errno));
    return -1;
}

#endif
