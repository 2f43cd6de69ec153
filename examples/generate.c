/* generate: continues a prompt with a model examples/train_lm saved, without
 * training.
 *
 *   ./examples/generate train_lm_out --prompt "ROMEO:" --tokens 200 --seed 1
 *
 * MODEL is DIR/model.safetensors (the weights), DIR/checkpoint.safetensors
 * (the training checkpoint) or a DIR holding them (model.safetensors
 * preferred). The model is rebuilt from the train_lm.<flag> pairs of the
 * file's metadata with train_lm's own code (lm_model.h), its vocabulary from
 * train_lm.vocab, and its weights loaded strictly (every parameter, no
 * unknown name). The text is drawn by pg_lm_generate_ex (nn/sample.h), through
 * the KV cache (nn/kv_cache.h) while the sequence fits the model's max_len
 * (train_lm's --seq), and printed as it comes; a summary line goes to stderr.
 * Exit codes: 0; 1 for a model file that cannot be used; 2 for a bad command
 * line or a prompt character outside the vocabulary. docs/examples.md,
 * "generate". */
#include "lm_model.h"

typedef struct generate_opts {
    const char *model, *prompt; /* prompt NULL: the vocabulary's first character */
    int tokens, top_k, seed, threads;
    double temperature, top_p;
} generate_opts;

/* train_lm's sample: its length, temperature, top-k and top-p */
static generate_opts generate_defaults(void)
{
    return (generate_opts){.tokens = 400, .top_k = 0, .seed = -1, .threads = 0, .temperature = 0.8, .top_p = 1};
}

static const char GENERATE_SUMMARY[] =
    "Continues --prompt with a model examples/train_lm saved, without training, printing the characters as\n"
    "they are drawn (through the KV cache while the text fits the model's --seq) and a summary on stderr.\n"
    "MODEL (the argument that is not a flag): DIR/model.safetensors, DIR/checkpoint.safetensors, or a DIR\n"
    "train_lm --out wrote (model.safetensors preferred).";

/* A model read back from a train_lm file. */
typedef struct generate_model {
    char path[LM_PATH_MAX + 32];   /* the file read */
    bool checkpoint;               /* a training checkpoint (else a state dict) */
    char flags[LM_N_MODEL_FLAGS][LM_FLAG_CHARS]; /* train_lm.<flag> as recorded */
    lm_model_flags f;              /* parsed; strings point into flags */
    pg_rotary_opts rope;           /* the layer module's options under --rope-scaling */
    pg_lm_config cfg;
    lm_corpus vocab;               /* chars and id_of only (no text) */
    pg_lm *lm;
} generate_model;

static void generate_model_free(generate_model *m)
{
    if (m->lm)
        pg_module_free(&m->lm->base);
    m->lm = NULL;
}

/* MODEL -> the file to read into m->path: a file as given; a directory's
 * model.safetensors, else its checkpoint.safetensors. 0, or -1 after a message. */
static int find_model_file(const char *model, generate_model *m)
{
    struct stat st;
    if (stat(model, &st) != 0) {
        fprintf(stderr, "generate: cannot open model '%s': %s (MODEL is DIR/model.safetensors, "
                "DIR/checkpoint.safetensors or a DIR that train_lm --out wrote)\n", model, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(m->path, sizeof m->path, "%s", model);
        return 0;
    }
    static const char *const names[] = {"model.safetensors", "checkpoint.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(m->path, sizeof m->path, "%s/%s", model, names[i]);
        if (stat(m->path, &st) == 0 && S_ISREG(st.st_mode))
            return 0;
    }
    fprintf(stderr, "generate: directory '%s' holds neither model.safetensors nor checkpoint.safetensors "
            "(train_lm --out DIR writes both)\n", model);
    return -1;
}

/* Whether info's metadata has any train_lm.* key. */
static bool has_train_lm_meta(const pg_checkpoint_info *info)
{
    for (int i = 0; i < info->n_meta; i++)
        if (!strncmp(info->keys[i], "train_lm.", 9))
            return true;
    return false;
}

/* The model flags and the vocabulary of m->path's metadata into m. 0, or -1 after a message. */
static int read_recipe(generate_model *m, const pg_checkpoint_info *info)
{
    const char *p = m->path;
    if (!has_train_lm_meta(info)) {
        fprintf(stderr, "generate: '%s' is not a train_lm model: its metadata has no train_lm.* entries (the model "
                "flags and vocabulary examples/train_lm records)\n", p);
        return -1;
    }
    bool recorded = lm_model_flags_saved(info, m->flags);
    int bad = -1;
    for (int i = 0; !recorded && i < LM_N_CORE_FLAGS && bad < 0; i++)
        bad = strcmp(m->flags[i], "?") ? -1 : i;
    if (bad >= 0) {
        fprintf(stderr, "generate: '%s' lacks train_lm.%s: the model's shape is not recorded\n", p,
                LM_MODEL_FLAGS[bad]);
        return -1;
    }
    if (lm_model_flags_parse(m->flags, &m->f, &bad) != 0) {
        fprintf(stderr, "generate: '%s' has train_lm.%s '%s': not a valid value\n", p, LM_MODEL_FLAGS[bad],
                m->flags[bad]);
        return -1;
    }
    if (!lm_pos_find(m->f.pos)) {
        char choices[1024];
        fprintf(stderr, "generate: '%s' was trained with --pos %s, which this build does not know (choices: %s)\n", p,
                m->f.pos, lm_pos_names(choices, sizeof choices));
        return -1;
    }
    const char *hex = pg_checkpoint_info_get(info, "train_lm.vocab");
    if (!hex || lm_vocab_from_hex(&m->vocab, hex) != 0) {
        fprintf(stderr, "generate: '%s' has %s train_lm.vocab (the vocabulary: ascending distinct bytes in hex)\n", p,
                hex ? "an invalid" : "no");
        return -1;
    }
    return 0;
}

/* Builds the model train_lm built for these flags and loads its weights,
 * strictly. 0, or -1 after a message. */
static int build_and_load(generate_model *m)
{
    char prefix[LM_PATH_MAX + 64];
    snprintf(prefix, sizeof prefix, "generate: '%s'", m->path);
    if (lm_model_config(&m->f, prefix, &m->cfg, &m->rope) != 0)
        return -1;
    m->cfg.vocab = m->vocab.vocab;
    m->lm = pg_lm_new(&m->cfg);
    if (!m->lm) {
        fprintf(stderr, "generate: cannot build the model '%s' records: %s\n", m->path, pg_last_error());
        return -1;
    }
    int rc = m->checkpoint ? pg_checkpoint_load(m->path, &m->lm->base, NULL, NULL, NULL)
                           : pg_module_load(&m->lm->base, m->path, true, NULL);
    if (rc != 0) {
        fprintf(stderr, "generate: cannot load the weights of '%s': %s\n", m->path, pg_last_error());
        return -1;
    }
    return 0;
}

/* MODEL -> m, ready to generate. 0, or -1 after a message. */
static int generate_model_load(generate_model *m, const char *model)
{
    memset(m, 0, sizeof *m);
    if (find_model_file(model, m) != 0)
        return -1;
    pg_checkpoint_info info;
    if (pg_checkpoint_info_read(m->path, &info) != 0) {
        fprintf(stderr, "generate: cannot read '%s': %s\n", m->path, pg_last_error());
        return -1;
    }
    m->checkpoint = info.is_checkpoint;
    int rc = read_recipe(m, &info);
    pg_checkpoint_info_free(&info);
    if (rc == 0)
        rc = build_and_load(m);
    if (rc != 0)
        generate_model_free(m);
    return rc;
}

/* Every character of prompt in the vocabulary? 0, or -1 after a message naming the first that is not. */
static int check_prompt(const generate_model *m, const char *prompt)
{
    for (size_t i = 0; prompt[i]; i++) {
        unsigned char ch = (unsigned char)prompt[i];
        if (m->vocab.id_of[ch] >= 0)
            continue;
        char shown[32];
        if (ch >= 0x20 && ch < 0x7f)
            snprintf(shown, sizeof shown, "'%c' (byte 0x%02x)", ch, ch);
        else
            snprintf(shown, sizeof shown, "byte 0x%02x", ch);
        fprintf(stderr, "generate: --prompt character %s at position %zu (0-based) is not in the vocabulary of "
                "%s (%d characters)\n", shown, i, m->path, m->vocab.vocab);
        return -1;
    }
    return 0;
}

/* How many of the n tokens drawn after a prompt of n0 came through the KV
 * cache, by pg_lm_generate_ex's rule (nn/sample.c): a cache of
 * min(n0 + max_new, max_len) tokens, if the scheme has one, serves the steps
 * whose sequence fits it; *why says why there is none. */
static int64_t cached_tokens(const generate_model *m, int64_t n0, int64_t max_new, int64_t n, char *why, size_t size)
{
    int64_t cap = n0 + max_new > m->cfg.max_len ? m->cfg.max_len : n0 + max_new;
    pg_lm_cache *c = cap > 0 ? pg_lm_cache_new(m->lm, 1, cap) : NULL;
    snprintf(why, size, "%s", c ? "" : pg_last_error());
    pg_lm_cache_free(c);
    if (!c)
        return 0;
    int64_t k = cap - n0 + 1; /* step s runs with n0 + s tokens */
    return k < 0 ? 0 : k > n ? n : k;
}

/* The summary line on stderr. */
static void print_summary(const generate_model *m, const generate_opts *o, uint64_t seed, int64_t n0, int64_t n,
                          double seconds)
{
    char why[512];
    int64_t cached = cached_tokens(m, n0, o->tokens, n, why, sizeof why);
    fprintf(stderr, "generate: %lld tokens in %.2f s (%.0f tokens/s) from %s (--pos %s, --seq %d); ", (long long)n,
            seconds, seconds > 0 ? (double)n / seconds : 0.0, m->path, m->f.pos, m->f.seq);
    if (n == 0)
        fprintf(stderr, "KV cache: not needed");
    else if (cached == n)
        fprintf(stderr, "KV cache: used for all %lld", (long long)n);
    else if (cached > 0)
        fprintf(stderr, "KV cache: used for %lld, then full forwards of the last %d", (long long)cached, m->f.seq);
    else if (why[0])
        fprintf(stderr, "KV cache: not used (%s)", why);
    else
        fprintf(stderr, "KV cache: not used (the prompt is longer than --seq %d)", m->f.seq);
    if (o->temperature > 0)
        fprintf(stderr, "; seed %llu", (unsigned long long)seed);
    else
        fprintf(stderr, "; greedy");
    fprintf(stderr, "\n");
}

/* Generates as o says. 0, 1 (the model), 2 (the prompt). */
static int generate_run(const generate_opts *o)
{
    if (o->threads > 0 && pg_set_num_threads(o->threads) != 0) {
        fprintf(stderr, "generate: %s\n", pg_last_error());
        return 2;
    }
    generate_model m;
    if (generate_model_load(&m, o->model) != 0)
        return 1;
    const char *prompt = o->prompt ? o->prompt : "";
    if (check_prompt(&m, prompt) != 0) {
        generate_model_free(&m);
        return 2;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t seed = o->seed >= 0 ? (uint64_t)o->seed : ((uint64_t)now.tv_sec * 1000003u ^ (uint64_t)now.tv_nsec);
    pg_sample_opts so = pg_sample_defaults();
    so.temperature = o->temperature;
    so.top_k = o->top_k;
    so.top_p = o->top_p;
    so.max_new = o->tokens;
    so.seed = seed;
    double t0 = lm_now();
    int n = lm_sample(stdout, m.lm, &m.vocab, prompt, &so); /* an empty prompt: the first character */
    double dt = lm_now() - t0;
    fflush(stdout);
    if (n >= 0)
        print_summary(&m, o, seed, prompt[0] ? (int64_t)strlen(prompt) : 1, n, dt);
    generate_model_free(&m);
    return n >= 0 ? 0 : 1;
}

static int generate_check_opts(const generate_opts *o)
{
    const char *bad = NULL;
    if (o->tokens < 0 || o->threads < 0 || o->seed < -1)
        bad = "--tokens and --threads must be >= 0 and --seed >= -1";
    else if (!(o->temperature >= 0) || !isfinite(o->temperature) || o->top_k < 0 || !(o->top_p > 0 && o->top_p <= 1))
        bad = "--temperature must be finite and >= 0, --top-k >= 0 and --top-p in (0, 1]";
    if (bad)
        fprintf(stderr, "generate: %s\n", bad);
    return bad ? -1 : 0;
}

/* argv without MODEL (the first argument that is neither a flag nor a flag's
 * value) into rest (argc entries); *model gets it (NULL: none). The count. */
static int split_model(int argc, char **argv, const lm_flag *flags, int n, char **rest, const char **model)
{
    int k = 0;
    *model = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (i > 0 && a[0] != '-' && !*model) {
            *model = a;
            continue;
        }
        rest[k++] = argv[i];
        for (int j = 0; i > 0 && j < n && !strncmp(a, "--", 2); j++)
            if (!strcmp(a + 2, flags[j].name) && i + 1 < argc) { /* "--name value": keep the value */
                rest[k++] = argv[++i];
                break;
            }
    }
    return k;
}

static int generate_main(int argc, char **argv)
{
    generate_opts o = generate_defaults();
    const lm_flag flags[] = {
        {"prompt", LM_STR, &o.prompt, "text to continue (default: the vocabulary's first character, a newline "
                                      "for tinyshakespeare)"},
        {"tokens", LM_INT, &o.tokens, "characters to draw"},
        {"temperature", LM_DOUBLE, &o.temperature, "temperature (0: greedy)"},
        {"top-k", LM_INT, &o.top_k, "draw from the top-k likeliest characters (0: all)"},
        {"top-p", LM_DOUBLE, &o.top_p, "then from the fewest whose probability reaches top-p (1: all)"},
        {"seed", LM_INT, &o.seed, "seed of the draws (-1: from the clock; the summary prints it)"},
        {"threads", LM_INT, &o.threads, "threads (0: PG_NUM_THREADS or all cores)"},
    };
    int n = (int)(sizeof flags / sizeof flags[0]);
    char **rest = malloc((size_t)(argc > 0 ? argc : 1) * sizeof *rest);
    if (!rest)
        return 1;
    const char *prog = argc > 0 ? argv[0] : "generate";
    int k = split_model(argc, argv, flags, n, rest, &o.model);
    int p = lm_parse_flags(k, rest, flags, n, GENERATE_SUMMARY);
    free(rest);
    if (p != 0)
        return p > 0 ? 0 : 2;
    if (!o.model) {
        fprintf(stderr, "%s: no MODEL given (DIR/model.safetensors, DIR/checkpoint.safetensors or a DIR that "
                "train_lm --out wrote; --help lists the flags)\n", prog);
        return 2;
    }
    if (generate_check_opts(&o) != 0)
        return 2;
    return generate_run(&o);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return generate_main(argc, argv); }
#endif
