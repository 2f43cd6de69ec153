/* train_lm: a character-level decoder LM on tinyshakespeare (`make run`).
 *
 * AdamW with linear warmup and cosine decay, a live progress bar, validation
 * loss at intervals, a CSV log, a training checkpoint (resumable with --resume)
 * and a model-only state dict (both safetensors, readable by
 * safetensors.torch.load_file), figures redrawn at each evaluation (the loss,
 * the positional biases, the attention maps: lm_figures.h) and sampled text
 * at the end. docs/examples.md describes a run; --help lists the flags. */
#include "lm_figures.h"
#include "lm_model.h"

typedef struct train_lm_opts {
    const char *pos, *data, *out, *resume, *prompt, *rope_scaling;
    int rope_orig_len; /* --rope-orig-len; 0: --seq */
    double rope_factor, rope_beta_fast, rope_beta_slow, rope_attn_factor; /* YaRN's */
    int layers, dim, heads, seq, batch, steps, threads, eval_every, eval_windows, warmup, sample_len, seed;
    int log_every, figures, top_k, sample_seed;
    double temperature, top_p; /* the sample's (pg_sample_opts) */
    double lr, min_lr, weight_decay, clip, init_std;
} train_lm_opts;

typedef struct train_lm_result {
    double first_loss;     /* training loss of the first step run */
    double last_loss;      /* mean training loss of the last (up to 20) steps */
    double val_loss;       /* validation loss at the end */
    double seconds;        /* training time of this invocation (no sampling) */
    double tokens_per_s;   /* training throughput of this invocation */
    int steps_run;
    double mem_estimate;   /* lm_step_memory's total, bytes */
    double peak_rss;       /* the process's peak resident memory at the end (VmHWM), bytes; -1 unknown */
} train_lm_result;

/* The default run (`make run`): docs/examples.md records it. */
static train_lm_opts train_lm_defaults(void)
{
    return (train_lm_opts){.pos = "dpb",
                           .data = "examples/data/tinyshakespeare.txt",
                           .out = "train_lm_out",
                           .prompt = "ROMEO:",
                           .rope_scaling = "none",
                           .rope_beta_fast = 32, /* pg_rotary_opts' defaults (the paper's beta and alpha) */
                           .rope_beta_slow = 1,
                           .rope_attn_factor = 1,
                           .layers = 4,
                           .dim = 128,
                           .heads = 4,
                           .seq = 128,
                           .batch = 16,
                           .steps = 800,
                           .threads = 0,
                           .eval_every = 200,
                           .eval_windows = 128,
                           .warmup = -1,
                           .sample_len = 400,
                           .seed = 1337,
                           .sample_seed = -1,
                           .temperature = 0.8,
                           .top_p = 1,
                           .log_every = 50,
                           .figures = 1,
                           .lr = 3e-3,
                           .min_lr = 0.1,
                           .weight_decay = 0.1,
                           .clip = 1.0};
}

static const char TRAIN_LM_SUMMARY[] =
    "Trains a character-level transformer (pg_lm) on a text corpus with AdamW (warmup + cosine),\n"
    "logs losses to DIR/log.csv, saves DIR/checkpoint.safetensors (training state) and\n"
    "DIR/model.safetensors (weights), redraws the figures DIR/*.png at each evaluation and prints a sample.";

/* ---- the run ------------------------------------------------------------------------------------ */
static const char LOG_HEADER[] = "step,train_loss,val_loss,lr,tokens_per_s";

/* The model flags of o (lm_model.h: stored in both files' metadata as train_lm.<flag>). */
static lm_model_flags model_flags_of(const train_lm_opts *o)
{
    return (lm_model_flags){.pos = o->pos,
                            .rope_scaling = o->rope_scaling,
                            .layers = o->layers,
                            .dim = o->dim,
                            .heads = o->heads,
                            .seq = o->seq,
                            .rope_orig_len = o->rope_orig_len,
                            .rope_factor = o->rope_factor,
                            .rope_beta_fast = o->rope_beta_fast,
                            .rope_beta_slow = o->rope_beta_slow,
                            .rope_attn_factor = o->rope_attn_factor};
}

typedef struct trainer {
    const train_lm_opts *o;
    lm_corpus corpus;
    pg_lm_config cfg;
    lm_mem mem;
    pg_lm *lm;
    pg_tensor_list params;
    pg_optim *opt;
    pg_schedule *sched;
    pg_rng rng;
    pg_graph *g;
    lm_figs figs;
    FILE *csv;
    int start_step;                 /* the resumed checkpoint's step, 0 for a new run */
    char ckpt_path[LM_PATH_MAX], model_path[LM_PATH_MAX], log_path[LM_PATH_MAX];
    const char *good_path;          /* the newest good training state on disk: ckpt_path, o->resume or NULL */
    int good_step;
    int saved_step;                 /* step of the last pair written by this run, -1: none */
    int logged_first, logged_last;  /* steps this run added to the log (0: none) */
    bool log_failed;
    /* metadata of both files: the model flags, the vocabulary, the corpus, the step */
    pg_rotary_opts rope; /* --rope-* for --pos rotary, xpos, local (the layer module's options) */
    char flag_values[LM_N_MODEL_FLAGS][LM_FLAG_CHARS], meta_keys[LM_N_MODEL_FLAGS + 4][32], vocab_hex[513], step_text[32];
    const char *keys[LM_N_MODEL_FLAGS + 4], *values[LM_N_MODEL_FLAGS + 4]; /* "format" (model file only), then the pairs */
} trainer;

static void trainer_free(trainer *t)
{
    if (t->csv)
        fclose(t->csv);
    pg_graph_free(t->g);
    pg_schedule_free(t->sched);
    pg_optim_free(t->opt);
    pg_tensor_list_free(&t->params);
    if (t->lm)
        pg_module_free(&t->lm->base);
    lm_corpus_free(&t->corpus);
}

/* --sample characters after --prompt, printed as they are drawn; 0 or -1 */
static int print_sample(trainer *t)
{
    const train_lm_opts *o = t->o;
    pg_sample_opts so = pg_sample_defaults();
    so.temperature = o->temperature;
    so.top_k = o->top_k;
    so.top_p = o->top_p;
    so.max_new = o->sample_len;
    so.rng = o->sample_seed < 0 ? &t->rng : NULL; /* -1: the training generator goes on */
    so.seed = (uint64_t)o->sample_seed;
    if (o->sample_len == 0)
        return 0;
    printf("---- sample (temperature %g, top-k %d, top-p %g) ----\n", o->temperature, o->top_k, o->top_p);
    return lm_sample(stdout, t->lm, &t->corpus, o->prompt, &so) < 0 ? -1 : 0;
}

static int check_opts(const train_lm_opts *o)
{
    const char *bad = NULL;
    if (o->layers < 1 || o->dim < 1 || o->heads < 1 || o->seq < 2 || o->batch < 1 || o->batch > 4096)
        bad = "--layers, --dim, --heads, --batch must be >= 1 (batch <= 4096) and --seq >= 2";
    else if (o->dim % o->heads != 0)
        bad = "--dim must be a multiple of --heads";
    else if (o->steps < 1 || o->eval_every < 1 || o->eval_windows < 1 || o->log_every < 1)
        bad = "--steps, --eval-every, --eval-windows and --log-every must be >= 1";
    else if (!(o->lr > 0) || o->warmup < -1 || o->warmup >= o->steps || o->min_lr < 0 || o->min_lr > 1)
        bad = "--lr must be > 0, -1 <= --warmup < --steps and --min-lr (a factor of --lr) in [0, 1]";
    else if (o->threads < 0 || o->sample_len < 0 || o->weight_decay < 0 || o->init_std < 0)
        bad = "--threads, --sample, --wd and --init-std must be >= 0";
    else if (!(o->temperature >= 0) || !isfinite(o->temperature) || o->top_k < 0 || !(o->top_p > 0 && o->top_p <= 1))
        bad = "--temperature must be finite and >= 0, --top-k >= 0 and --top-p in (0, 1]";
    else if (o->figures != 0 && o->figures != 1)
        bad = "--figures must be 0 (none) or 1 (redrawn at each evaluation)";
    if (bad)
        fprintf(stderr, "train_lm: %s\n", bad);
    return bad ? -1 : 0;
}

/* The metadata pairs of both files: the model flags, the vocabulary (its
 * bytes in hex) and the corpus; model.safetensors also gets the step and
 * "format": "pt" (as safetensors.torch.save_file writes; some loaders want
 * it), the checkpoint its own format (optim/checkpoint.h) and sched.step. */
static void set_metadata(trainer *t)
{
    lm_model_flags f = model_flags_of(t->o);
    lm_model_flag_values(&f, t->flag_values);
    snprintf(t->meta_keys[0], sizeof t->meta_keys[0], "format");
    t->values[0] = "pt";
    int n = 1;
    for (; n <= LM_N_MODEL_FLAGS; n++) {
        snprintf(t->meta_keys[n], sizeof t->meta_keys[n], "train_lm.%s", LM_MODEL_FLAGS[n - 1]);
        t->values[n] = t->flag_values[n - 1];
    }
    lm_vocab_hex(&t->corpus, t->vocab_hex);
    snprintf(t->meta_keys[n], sizeof t->meta_keys[n], "train_lm.vocab");
    t->values[n++] = t->vocab_hex;
    snprintf(t->meta_keys[n], sizeof t->meta_keys[n], "train_lm.data");
    t->values[n++] = t->corpus.path;
    snprintf(t->meta_keys[n], sizeof t->meta_keys[n], "train_lm.step");
    t->values[n++] = t->step_text;
    for (int i = 0; i < n; i++)
        t->keys[i] = t->meta_keys[i];
}

/* ---- memory ----------------------------------------------------------------------------------- */
/* Against avail bytes (from source): 0 when m->total fits in half of it (or
 * avail is unknown, <= 0), 1 after a warning past half, -1 after a refusal
 * past all of it; both messages say which flags to lower. */
static int judge_memory(const train_lm_opts *o, const lm_mem *m, double avail, const char *source)
{
    if (!(avail > 0) || m->total <= avail / 2)
        return 0;
    char total[32], act[32], par[32], av[32], advice[1024], fused[256];
    lm_fmt_bytes(total, sizeof total, m->total);
    lm_fmt_bytes(act, sizeof act, m->act_bytes);
    lm_fmt_bytes(par, sizeof par, m->param_bytes);
    lm_fmt_bytes(av, sizeof av, avail);
    if (m->act_bytes >= m->param_bytes) {
        int k = snprintf(advice, sizeof advice,
                         "lower --seq (%d) or --batch (%d): the activations grow with batch x seq", o->seq, o->batch);
        if (m->quadratic && m->scores_bytes > m->act_bytes / 2 && k > 0 && k < (int)sizeof advice)
            k += snprintf(advice + k, sizeof advice - (size_t)k,
                          ", and --pos %s keeps %s, which grow with seq^2 (%s run in the fused kernel, linear "
                          "in --seq)",
                          o->pos, m->scores_what, lm_fused_names(fused, sizeof fused));
        if (k > 0 && k < (int)sizeof advice)
            snprintf(advice + k, sizeof advice - (size_t)k, "; or lower --dim (%d) or --layers (%d)", o->dim,
                     o->layers);
    } else
        snprintf(advice, sizeof advice,
                 "lower --dim (%d) or --layers (%d): the parameters and Adam's state alone need %s", o->dim,
                 o->layers, par);
    if (m->total > avail) {
        fprintf(stderr,
                "train_lm: a training step needs ~%s of memory (activations %s for --batch %d x --seq %d tokens "
                "through --layers %d of --dim %d, parameters+Adam %s) but only %s is available (%s): %s\n",
                total, act, o->batch, o->seq, o->layers, o->dim, par, av, source, advice);
        return -1;
    }
    fprintf(stderr,
            "train_lm: warning: a training step needs ~%s, more than half of the %s available (%s); other "
            "programs may push it into swap (to be safe, %s)\n",
            total, av, source, advice);
    return 1;
}

/* Estimates and prints the memory of a step, then judges it against what the
 * machine has available. 0, or -1 after a message. */
static int check_memory(trainer *t)
{
    const train_lm_opts *o = t->o;
    lm_mem *m = &t->mem;
    if (lm_step_memory(&t->cfg, o->pos, o->batch, o->seq, t->corpus.n, pg_num_threads(), m) != 0) {
        fprintf(stderr, "train_lm: %s\n", pg_last_error());
        return -1;
    }
    if (o->figures) { /* drawn between steps, while the step's graph is held */
        double fig = lm_figs_memory(o->pos, o->heads, o->layers);
        m->base_bytes += fig;
        m->total += fig;
    }
    char total[32], act[32], par[32], base[32], sc[32], av[32];
    const char *source = NULL;
    double avail = lm_mem_available(&source);
    printf("memory: ~%s per step (activations %s", lm_fmt_bytes(total, sizeof total, m->total),
           lm_fmt_bytes(act, sizeof act, m->act_bytes));
    if (m->quadratic)
        printf(", %s of them %s", lm_fmt_bytes(sc, sizeof sc, m->scores_bytes), m->scores_what);
    printf(", parameters+Adam %s, %s %s)", lm_fmt_bytes(par, sizeof par, m->param_bytes),
           o->figures ? "program, corpus and figures" : "program and corpus",
           lm_fmt_bytes(base, sizeof base, m->base_bytes));
    if (o->resume && m->load_bytes > m->total) { /* loading the checkpoint is the peak */
        printf("; ~%s while loading the checkpoint", lm_fmt_bytes(sc, sizeof sc, m->load_bytes));
        m->total = m->load_bytes;
    }
    if (avail > 0)
        printf("; %s available", lm_fmt_bytes(av, sizeof av, avail));
    printf("\n");
    fflush(stdout);
    return judge_memory(o, m, avail, source) < 0 ? -1 : 0;
}

/* ---- resuming --------------------------------------------------------------------------------- */
/* "--pos dpb --layers 4 ..." of the flags in v (only those with differ[i] when differ is set);
 * a --rope-* flag that does not apply ("-") is left out, and so is --rope-scaling none unless it differs. */
static void flags_text(char *buf, size_t n, char v[LM_N_MODEL_FLAGS][LM_FLAG_CHARS], const bool *differ)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < LM_N_MODEL_FLAGS && k < n; i++) {
        bool unset = i >= LM_N_CORE_FLAGS && (!strcmp(v[i], "-") || (!differ && !strcmp(v[i], "none")));
        if ((!differ || differ[i]) && !unset) {
            int w = snprintf(buf + k, n - k, "%s--%s %s", k ? " " : "", LM_MODEL_FLAGS[i], v[i]);
            k += w > 0 ? (size_t)w : 0;
        }
    }
}

/* Checks that o->resume is a training checkpoint of this run's model and loads
 * it. 0, or -1 after a message. */
static int resume(trainer *t)
{
    const train_lm_opts *o = t->o;
    struct stat st;
    bool missing = stat(o->resume, &st) != 0;
    if (missing || S_ISDIR(st.st_mode)) {
        int err = errno;
        char inside[LM_PATH_MAX + 32];
        snprintf(inside, sizeof inside, "%s/checkpoint.safetensors", o->resume);
        bool has = !missing && stat(inside, &st) == 0 && S_ISREG(st.st_mode);
        fprintf(stderr, "train_lm: cannot resume from %s: %s (--resume expects a training checkpoint%s%s)\n",
                o->resume, missing ? strerror(err) : "it is a directory", has ? ": " : ", OUT/checkpoint.safetensors",
                has ? inside : "");
        return -1;
    }
    pg_checkpoint_info info;
    if (pg_checkpoint_info_read(o->resume, &info) != 0) {
        fprintf(stderr, "train_lm: cannot resume from %s: %s\n", o->resume, pg_last_error());
        return -1;
    }
    int rc = -1;
    char saved[LM_N_MODEL_FLAGS][LM_FLAG_CHARS], mine[512], theirs[512];
    bool differ[LM_N_MODEL_FLAGS], any = false, recorded = lm_model_flags_saved(&info, saved);
    if (!info.is_checkpoint && !info.has_optim) {
        char sibling[LM_PATH_MAX + 32];
        const char *slash = strrchr(o->resume, '/');
        snprintf(sibling, sizeof sibling, "%.*scheckpoint.safetensors", slash ? (int)(slash - o->resume) + 1 : 0,
                 o->resume);
        bool there = stat(sibling, &st) == 0 && S_ISREG(st.st_mode) && strcmp(sibling, o->resume) != 0;
        fprintf(stderr,
                "train_lm: --resume %s is a model file: weights only, with no optimizer state, schedule step or "
                "generator state (as train_lm writes OUT/model.safetensors), so a run cannot continue from it; "
                "resume from the training checkpoint %s%s\n",
                o->resume, there ? sibling : "(OUT/checkpoint.safetensors)",
                there ? ", written with it" : " that train_lm writes next to it");
        goto done;
    }
    if (!info.is_checkpoint) {
        fprintf(stderr,
                "train_lm: --resume %s is not a posgrad training checkpoint (no \"format\": \"%s\" in its "
                "metadata); resume from a checkpoint.safetensors that train_lm wrote\n",
                o->resume, PG_CHECKPOINT_FORMAT);
        goto done;
    }
    for (int i = 0; i < LM_N_MODEL_FLAGS; i++) { /* "?": not recorded (lm_model_flags_saved) */
        differ[i] = strcmp(saved[i], "?") != 0 && strcmp(saved[i], t->flag_values[i]) != 0;
        any = any || differ[i];
    }
    flags_text(mine, sizeof mine, t->flag_values, NULL);
    if (recorded && any) {
        flags_text(theirs, sizeof theirs, saved, NULL);
        char asked[512];
        flags_text(asked, sizeof asked, t->flag_values, differ);
        fprintf(stderr,
                "train_lm: %s was trained with %s; this run asks for %s (resume with the same model flags, or "
                "start a new run without --resume, with another --out to keep this one)\n",
                o->resume, theirs, asked);
        goto done;
    }
    const char *vocab = pg_checkpoint_info_get(&info, "train_lm.vocab");
    if (recorded && vocab && strcmp(vocab, t->vocab_hex) != 0) {
        const char *data = pg_checkpoint_info_get(&info, "train_lm.data");
        fprintf(stderr,
                "train_lm: %s was trained on a corpus of %zu distinct characters (--data %s); --data %s has %s%d: "
                "the model's token ids would mean other characters (resume with the corpus it was trained on)\n",
                o->resume, strlen(vocab) / 2, data ? data : "?", t->corpus.path,
                strlen(vocab) / 2 == (size_t)t->corpus.vocab ? "as many but other ones, " : "", t->corpus.vocab);
        goto done;
    }
    if (info.step < 0) {
        fprintf(stderr, "train_lm: --resume %s holds no schedule step (sched.step): not a train_lm checkpoint\n",
                o->resume);
        goto done;
    }
    if (pg_checkpoint_load(o->resume, &t->lm->base, t->opt, t->sched, &t->rng) != 0) {
        if (recorded)
            fprintf(stderr, "train_lm: cannot resume from %s: %s\n", o->resume, pg_last_error());
        else
            fprintf(stderr,
                    "train_lm: %s does not record the model flags it was trained with (an older train_lm wrote "
                    "it), and its tensors do not fit this run's model (%s): %s; resume with the flags it was "
                    "trained with\n",
                    o->resume, mine, pg_last_error());
        goto done;
    }
    if (!recorded)
        printf("note: %s does not record the model flags it was trained with (an older train_lm wrote it); its "
               "tensors fit this run's %s\n",
               o->resume, mine);
    t->start_step = (int)info.step;
    t->good_path = o->resume;
    t->good_step = t->start_step;
    rc = 0;
done:
    pg_checkpoint_info_free(&info);
    return rc;
}

/* ---- the log ---------------------------------------------------------------------------------- */
/* Opens OUT/log.csv: a new run writes the header; a resumed run appends,
 * after dropping any rows past the checkpoint's step (a run that went on
 * after its last checkpoint, or was killed), so that every step is in the log
 * once. 0, or -1 after a message. */
static int open_log(trainer *t)
{
    const train_lm_opts *o = t->o;
    snprintf(t->log_path, sizeof t->log_path, "%s/log.csv", o->out);
    char *text = NULL;
    size_t n = 0;
    if (o->resume) {
        FILE *f = fopen(t->log_path, "rb");
        if (f) {
            size_t cap = 1 << 16, got;
            text = malloc(cap + 1);
            while (text && (got = fread(text + n, 1, cap - n, f)) > 0)
                if ((n += got) == cap) {
                    char *bigger = realloc(text, 2 * cap + 1);
                    if (!bigger)
                        free(text);
                    text = bigger;
                    cap *= 2;
                }
            fclose(f);
            if (!text) {
                fprintf(stderr, "train_lm: out of memory reading %s\n", t->log_path);
                return -1;
            }
            text[n] = '\0';
        }
    }
    if (n > 0) {
        size_t h = strlen(LOG_HEADER);
        if (strncmp(text, LOG_HEADER, h) != 0 || (text[h] != '\n' && text[h] != '\0')) {
            fprintf(stderr,
                    "train_lm: %s does not start with train_lm's header (%s); move it away or choose another "
                    "--out\n",
                    t->log_path, LOG_HEADER);
            free(text);
            return -1;
        }
        /* keep the header and the complete rows up to the checkpoint's step */
        size_t keep = text[h] == '\n' ? h + 1 : h, at = keep;
        int dropped = 0;
        while (at < n) {
            char *eol = memchr(text + at, '\n', n - at);
            size_t len = eol ? (size_t)(eol - (text + at)) + 1 : n - at;
            if (eol && atoi(text + at) <= t->start_step && atoi(text + at) >= 1) {
                memmove(text + keep, text + at, len);
                keep += len;
            } else
                dropped++;
            at += len;
        }
        if (keep < n) {
            char tmp[LM_PATH_MAX + 8];
            snprintf(tmp, sizeof tmp, "%s.tmp", t->log_path);
            FILE *f = fopen(tmp, "wb");
            bool ok = f && fwrite(text, 1, keep, f) == keep;
            ok = f && fclose(f) == 0 && ok;
            if (!ok || rename(tmp, t->log_path) != 0) {
                fprintf(stderr, "train_lm: cannot rewrite %s: %s\n", t->log_path, strerror(errno));
                remove(tmp);
                free(text);
                return -1;
            }
            printf("note: dropped %d row%s of %s past the checkpoint's step %d (a run that went on after it); "
                   "the log continues from step %d\n",
                   dropped, dropped == 1 ? "" : "s", t->log_path, t->start_step, t->start_step + 1);
        }
    }
    free(text);
    t->csv = fopen(t->log_path, n > 0 ? "a" : "w");
    if (!t->csv) {
        fprintf(stderr, "train_lm: cannot write %s: %s\n", t->log_path, strerror(errno));
        return -1;
    }
    if (n == 0)
        fprintf(t->csv, "%s\n", LOG_HEADER);
    fflush(t->csv);
    return 0;
}

/* "nan", "inf", "-inf" (never "-nan"), else the number with fmt. */
static const char *fmt_value(char *buf, size_t n, const char *fmt, double v)
{
    if (isnan(v))
        snprintf(buf, n, "nan");
    else if (isinf(v))
        snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else
        snprintf(buf, n, fmt, v);
    return buf;
}

/* One row, flushed at once: a killed run leaves every step it finished. */
static void log_row(trainer *t, int step, double loss, double val, double lr, double tok_s)
{
    char l[32];
    fprintf(t->csv, "%d,%s,", step, fmt_value(l, sizeof l, "%.6f", loss));
    if (!isnan(val))
        fprintf(t->csv, "%.6f", val);
    fprintf(t->csv, ",%.6g,%.1f\n", lr, tok_s);
    if (fflush(t->csv) != 0 && !t->log_failed) {
        fprintf(stderr, "\ntrain_lm: warning: cannot write %s: %s (training goes on)\n", t->log_path,
                strerror(errno));
        t->log_failed = true;
    }
    t->logged_first = t->logged_first ? t->logged_first : step;
    t->logged_last = step;
}

/* ---- setting up ------------------------------------------------------------------------------- */
/* Everything that can fail before the first step: the corpus, the memory
 * estimate, the model, the checkpoint to resume. Nothing is written. */
static int trainer_init(trainer *t, const train_lm_opts *o)
{
    memset(t, 0, sizeof *t);
    t->o = o;
    t->saved_step = -1;
    lm_model_flags f = model_flags_of(o);
    if (lm_model_config(&f, "train_lm", &t->cfg, &t->rope) != 0) /* the model generate rebuilds (lm_model.h) */
        return -1;
    if (o->threads > 0 && pg_set_num_threads(o->threads) != 0) {
        fprintf(stderr, "train_lm: %s\n", pg_last_error());
        return -1;
    }
    if (lm_corpus_load(&t->corpus, o->data, o->seq + 1) != 0)
        return -1;
    t->cfg.vocab = t->corpus.vocab;
    t->cfg.init_std = o->init_std;
    t->cfg.seed = (uint64_t)o->seed;
    set_metadata(t);
    printf("train_lm: --pos %s, %d layers, dim %d, %d heads, seq %d, batch %d, %d threads; corpus %s: vocab %d, "
           "%lld train / %lld val characters\n",
           o->pos, o->layers, o->dim, o->heads, o->seq, o->batch, pg_num_threads(), t->corpus.path, t->corpus.vocab,
           (long long)t->corpus.n_train, (long long)(t->corpus.n - t->corpus.n_train));
    if (check_memory(t) != 0)
        return -1;
    t->lm = pg_lm_new(&t->cfg);
    if (!t->lm) {
        fprintf(stderr, "train_lm: %s\n", pg_last_error());
        return -1;
    }
    t->params = pg_module_parameters(&t->lm->base);
    pg_optim_hparams h = pg_adamw_hparams(o->lr);
    h.beta2 = 0.99; /* nanoGPT's choice for small character models */
    t->opt = pg_optim_new(PG_ADAMW, &h);
    if (t->opt)
        t->opt->check_finite = true;
    if (!t->opt ||
        pg_optim_add_decay_groups(t->opt, &t->params, pg_no_decay_default, NULL, o->lr, o->weight_decay) != 0) {
        fprintf(stderr, "train_lm: %s\n", pg_last_error());
        return -1;
    }
    int warmup = o->warmup >= 0 ? o->warmup : (o->steps / 10 < 100 ? o->steps / 10 : 100);
    t->sched = pg_schedule_new(t->opt, pg_sched_warmup_cosine(warmup, 0.0, o->steps, o->min_lr));
    t->rng = pg_rng_init((uint64_t)o->seed);
    t->g = pg_graph_new();
    if (!t->sched || !t->g) {
        fprintf(stderr, "train_lm: %s\n", pg_last_error());
        return -1;
    }
    printf("model: %lld parameters\n", (long long)pg_module_num_elements(&t->lm->base));
    snprintf(t->ckpt_path, sizeof t->ckpt_path, "%s/checkpoint.safetensors", o->out);
    snprintf(t->model_path, sizeof t->model_path, "%s/model.safetensors", o->out);
    if (o->resume && resume(t) != 0)
        return -1;
    return 0;
}

/* ---- training --------------------------------------------------------------------------------- */
/* One optimisation step on a fresh batch: 0 with *loss set (when the loss is
 * not finite nothing is updated), PG_NONFINITE when a gradient is not finite
 * (nothing updated, the message in pg_last_error), -1 after a message. */
static int train_step(trainer *t, double *loss_out)
{
    pg_graph_reset(t->g);
    pg_tensor *ids, *targets;
    lm_train_batch(t->g, &t->corpus, t->o->batch, t->o->seq, &t->rng, &ids, &targets);
    pg_tensor *loss = pg_lm_loss(t->g, t->lm, ids, targets, NULL);
    if (!loss) {
        fprintf(stderr, "\ntrain_lm: %s\n", pg_graph_error(t->g));
        return -1;
    }
    *loss_out = pg_item(loss);
    if (!isfinite(*loss_out))
        return 0;
    if (pg_backward(t->g, loss) != 0) {
        fprintf(stderr, "\ntrain_lm: %s\n", pg_graph_error(t->g));
        return -1;
    }
    /* a NaN or inf gradient stops the run before it reaches the parameters */
    pg_clip_opts clip = {.max_norm = t->o->clip, .error_if_nonfinite = true};
    double norm;
    int rc = t->o->clip > 0 ? pg_clip_grad_norm_ex(t->params.tensors, t->params.n, &clip, &norm) : 0;
    if (rc == 0)
        rc = pg_optim_step(t->opt); /* check_finite: refuses a non-finite gradient when not clipping */
    if (rc == PG_NONFINITE)
        return PG_NONFINITE;
    if (rc != 0) {
        fprintf(stderr, "\ntrain_lm: %s\n", pg_last_error());
        return -1;
    }
    pg_optim_zero_grad(t->opt);
    pg_schedule_step(t->sched);
    return 0;
}

/* What went wrong at step, where the last good state is, what to try. */
static void report_divergence(const trainer *t, int step, const char *what, double lr, int prev_step,
                              double prev_loss)
{
    const train_lm_opts *o = t->o;
    fprintf(stderr, "\ntrain_lm: training diverged: %s at step %d (learning rate %g at that step, --lr %g, ", what,
            step, lr, o->lr);
    if (o->clip > 0)
        fprintf(stderr, "--clip %g)\n", o->clip);
    else
        fprintf(stderr, "--clip 0: no gradient clipping)\n");
    if (prev_step > 0)
        fprintf(stderr, "  the training loss at step %d was %.4f\n", prev_step, prev_loss);
    if (t->good_path && t->good_path == t->ckpt_path)
        fprintf(stderr, "  the last good state is %s (step %d), left as it was, with %s\n", t->good_path,
                t->good_step, t->model_path);
    else if (t->good_path)
        fprintf(stderr, "  the last good state is %s (step %d), the checkpoint this run resumed from; nothing "
                        "was saved after it\n",
                t->good_path, t->good_step);
    else
        fprintf(stderr, "  no checkpoint was written: the first was due at step %d (--eval-every %d)\n",
                o->eval_every < o->steps ? o->eval_every : o->steps, o->eval_every);
    fprintf(stderr, "  try a lower --lr than %g", o->lr);
    if (o->clip > 0)
        fprintf(stderr, " or a longer --warmup");
    else
        fprintf(stderr, ", or clip the gradient norm with --clip 1");
    if (t->good_path)
        fprintf(stderr, ", and continue with --resume %s\n", t->good_path);
    else
        fprintf(stderr, "\n");
}

/* Whether every parameter and every optimizer state value is finite. */
static bool state_is_finite(const trainer *t)
{
    pg_tensor_list l = pg_module_parameters(&t->lm->base);
    bool ok = pg_optim_state_export(t->opt, t->sched, &l) == 0;
    for (int i = 0; ok && i < l.n; i++) {
        const pg_tensor *x = l.tensors[i];
        if (x->dtype != PG_F32 && x->dtype != PG_F64)
            continue;
        for (int64_t j = 0; ok && j < x->numel; j++)
            ok = isfinite(pg_get(x, j));
    }
    pg_tensor_list_free(&l);
    return ok;
}

/* Writes the model file, then the checkpoint, so that the checkpoint is never
 * newer than the model beside it; on a failure says which file holds what.
 * 0, or -1 after a message. */
static int save_checkpoints(trainer *t, int step)
{
    char held[128];
    if (t->saved_step >= 0)
        snprintf(held, sizeof held, "still holds step %d", t->saved_step);
    else
        snprintf(held, sizeof held, "was not written by this run");
    snprintf(t->step_text, sizeof t->step_text, "%d", step);
    int n_meta = LM_N_MODEL_FLAGS + 4; /* format, the flags, vocab, data, step */
    if (pg_safetensors_save(t->model_path, &t->params, n_meta, t->keys, t->values) != 0) {
        fprintf(stderr, "\ntrain_lm: cannot write %s at step %d: %s\n  %s was not written either, so the two "
                        "files still agree (the checkpoint %s)\n",
                t->model_path, step, pg_last_error(), t->ckpt_path, held);
        return -1;
    }
    if (pg_checkpoint_save_meta(t->ckpt_path, &t->lm->base, t->opt, t->sched, &t->rng, n_meta - 2, t->keys + 1,
                                t->values + 1) != 0) {
        fprintf(stderr, "\ntrain_lm: cannot write %s at step %d: %s\n  %s holds step %d but the checkpoint %s: "
                        "they disagree, and --resume would not continue from step %d\n",
                t->ckpt_path, step, pg_last_error(), t->model_path, step, held, step);
        return -1;
    }
    t->saved_step = step;
    t->good_path = t->ckpt_path;
    t->good_step = step;
    return 0;
}

static int train_loop(trainer *t, train_lm_result *res)
{
    const train_lm_opts *o = t->o;
    lm_progress bar = {.tty = isatty(STDOUT_FILENO) != 0, .every = o->log_every, .width = 30};
    int first = t->start_step + 1, prev_step = 0;
    double t0 = lm_now(), tail = 0, prev_loss = NAN;
    int n_tail = 0;
    res->first_loss = NAN;
    for (int step = first; step <= o->steps; step++) {
        double lr = t->opt->groups[0].h.lr, loss = NAN;
        int rc = train_step(t, &loss);
        double dt = lm_now() - t0, done = step - first + 1;
        double tok_s = done * o->batch * o->seq / dt;
        char what[512], v[32];
        if (rc == PG_NONFINITE) {
            lm_progress_break(&bar);
            log_row(t, step, loss, NAN, lr, tok_s);
            snprintf(what, sizeof what, "a gradient is not finite (training loss %.4f; %s)", loss, pg_last_error());
            report_divergence(t, step, what, lr, prev_step, prev_loss);
            return -1;
        }
        if (rc != 0)
            return -1;
        if (!isfinite(loss)) {
            lm_progress_break(&bar);
            log_row(t, step, loss, NAN, lr, tok_s);
            snprintf(what, sizeof what, "the training loss is %s", fmt_value(v, sizeof v, "%g", loss));
            report_divergence(t, step, what, lr, prev_step, prev_loss);
            return -1;
        }
        if (step == first)
            res->first_loss = loss;
        if (step > o->steps - 20) {
            tail += loss;
            n_tail++;
        }
        bool eval = step % o->eval_every == 0 || step == o->steps;
        if (eval)
            bar.last_draw = 0; /* show this step before the evaluation line */
        lm_progress_show(&bar, step, o->steps, loss, tok_s, dt / done * (o->steps - step));
        double val = NAN;
        if (eval) {
            val = lm_eval_loss(t->g, t->lm, &t->corpus, o->seq, o->eval_windows, o->batch);
            lm_progress_break(&bar);
            printf("step %d: val loss %.4f (train %.4f, %.1f s)\n", step, val, loss, lm_now() - t0);
            fflush(stdout);
        }
        log_row(t, step, loss, val, lr, tok_s);
        res->steps_run++;
        if (eval) {
            bool finite = isfinite(val) && state_is_finite(t);
            if (!finite) {
                snprintf(what, sizeof what, isfinite(val) ? "the parameters or Adam's state hold nan or inf%s"
                                                          : "the validation loss is %s",
                         isfinite(val) ? "" : fmt_value(v, sizeof v, "%g", val));
                report_divergence(t, step, what, lr, step, loss);
                return -1;
            }
            if (save_checkpoints(t, step) != 0)
                return -1;
            if (o->figures && lm_figs_draw(&t->figs, t->g, t->lm, &t->corpus, t->log_path) == 0 &&
                t->figs.rounds == 1)
                printf("figures in %s/, redrawn at each evaluation: %s\n", o->out, t->figs.list);
            res->val_loss = val;
        }
        prev_step = step;
        prev_loss = loss;
    }
    res->seconds = lm_now() - t0;
    res->tokens_per_s = res->steps_run * (double)o->batch * o->seq / (res->seconds > 0 ? res->seconds : 1);
    res->last_loss = n_tail ? tail / n_tail : NAN;
    return 0;
}

/* Why --pos has no picture, from its registry entry (hooks, props), not its name. */
static const char *no_picture_reason(const char *pos)
{
    const pg_posmod_kind_info *k = lm_pos_info(pos);
    if (!k)
        return "it has none";
    if (!(k->hooks & PG_POS_HOOK_BIAS))
        return k->hooks & PG_POS_HOOK_QKV ? "it modifies q and k (mod_qkv) and adds no bias to the logits"
                                          : "it adds no bias to the logits";
    if (k->props & PG_POS_NEEDS_X)
        return "its bias is computed from the layer's input x (pg_pos_ctx.x), not from positions alone: it has no "
               "position-only table (bias_table)";
    if (k->props & PG_POS_NEEDS_QK)
        return "its bias reads q or k, not positions alone: it has no position-only table (bias_table)";
    return "it has no position-only table (bias_table)";
}

static void report_figures(const trainer *t)
{
    const lm_figs *f = &t->figs;
    if (f->rounds > 0)
        printf("figures: %d file%s in %s/, drawn at each of %d evaluation%s: %s\n", f->files, f->files == 1 ? "" : "s",
               t->o->out, f->rounds, f->rounds == 1 ? "" : "s", f->list);
    const pg_posmod_kind_info *k = lm_pos_info(t->o->pos);
    if (!k || (k->role != PG_POS_ROLE_INPUT && !(k->hooks & PG_POS_HOOK_TABLE)))
        printf("no positional bias to draw for --pos %s (%s)\n", t->o->pos, no_picture_reason(t->o->pos));
}

/* Trains as o says; res (may be NULL) gets the figures. 0, or 1 after a message. */
static int train_lm_run(const train_lm_opts *o, train_lm_result *res)
{
    train_lm_result scratch;
    res = res ? res : &scratch;
    memset(res, 0, sizeof *res);
    res->val_loss = NAN;
    res->peak_rss = -1;
    if (check_opts(o) != 0)
        return 1;
    trainer t;
    int rc = trainer_init(&t, o);
    res->mem_estimate = t.mem.total;
    if (rc == 0 && t.start_step > 0)
        printf("resumed from %s at step %d\n", o->resume, t.start_step);
    if (rc == 0 && t.start_step >= o->steps) {
        /* nothing to train, nothing written */
        res->val_loss = lm_eval_loss(t.g, t.lm, &t.corpus, o->seq, o->eval_windows, o->batch);
        printf("nothing left to train: %s is at step %d and --steps is %d (pass --steps above %d to continue; the "
               "cosine schedule then stretches to the new length); val loss %.4f; nothing was written\n",
               o->resume, t.start_step, o->steps, t.start_step, res->val_loss);
        rc = print_sample(&t);
        trainer_free(&t);
        return rc == 0 ? 0 : 1;
    }
    t.figs = (lm_figs){.dir = o->out, .pos = o->pos, .L = o->seq < LM_FIG_MAX_L ? o->seq : LM_FIG_MAX_L};
    if (rc == 0)
        rc = lm_make_dir(o->out) == 0 && open_log(&t) == 0 ? 0 : -1;
    if (rc == 0)
        rc = train_loop(&t, res);
    res->peak_rss = lm_peak_rss();
    if (rc == 0) {
        char peak[32], est[32];
        printf("done: %d steps (%d-%d) in %.1f s (%.0f tokens/s), val loss %.4f at step %d\n", res->steps_run,
               t.start_step + 1, o->steps, res->seconds, res->tokens_per_s, res->val_loss, o->steps);
        printf("wrote %s (steps %d-%d), %s and %s (step %d)\n", t.log_path, t.logged_first, t.logged_last,
               t.model_path, t.ckpt_path, t.saved_step);
        if (res->peak_rss > 0)
            printf("memory: peak %s resident (VmHWM), estimated ~%s\n", lm_fmt_bytes(peak, sizeof peak, res->peak_rss),
                   lm_fmt_bytes(est, sizeof est, res->mem_estimate));
        report_figures(&t);
        rc = print_sample(&t);
    }
    trainer_free(&t);
    return rc == 0 ? 0 : 1;
}

static int train_lm_main(int argc, char **argv)
{
    train_lm_opts o = train_lm_defaults();
    const lm_flag flags[] = {
        {"pos", LM_STR, &o.pos, "positional scheme (the --pos line above)"},
        {"layers", LM_INT, &o.layers, "transformer blocks"},
        {"dim", LM_INT, &o.dim, "model width"},
        {"heads", LM_INT, &o.heads, "attention heads"},
        {"seq", LM_INT, &o.seq, "training sequence length"},
        {"batch", LM_INT, &o.batch, "sequences per step"},
        {"steps", LM_INT, &o.steps, "optimisation steps (the schedule's length)"},
        {"lr", LM_DOUBLE, &o.lr, "peak learning rate (AdamW)"},
        {"min-lr", LM_DOUBLE, &o.min_lr, "final learning rate as a factor of --lr"},
        {"warmup", LM_INT, &o.warmup, "linear warmup steps (-1: min(100, steps / 10))"},
        {"wd", LM_DOUBLE, &o.weight_decay, "AdamW weight decay (matrices and embeddings only)"},
        {"clip", LM_DOUBLE, &o.clip, "gradient norm clip (0: off)"},
        {"init-std", LM_DOUBLE, &o.init_std, "0: PyTorch's default inits; > 0: N(0, std) weights (GPT-2)"},
        {"seed", LM_INT, &o.seed, "seed of the initial weights and the batches"},
        {"threads", LM_INT, &o.threads, "threads (0: PG_NUM_THREADS or all cores)"},
        {"eval-every", LM_INT, &o.eval_every, "steps between validation losses and checkpoints"},
        {"eval-windows", LM_INT, &o.eval_windows, "validation windows of --seq characters"},
        {"log-every", LM_INT, &o.log_every, "steps between plain progress lines (not a terminal)"},
        {"sample", LM_INT, &o.sample_len, "characters sampled at the end"},
        {"prompt", LM_STR, &o.prompt, "start of the sample"},
        {"temperature", LM_DOUBLE, &o.temperature, "the sample's temperature (0: greedy)"},
        {"top-k", LM_INT, &o.top_k, "the sample draws from the top-k likeliest characters (0: all)"},
        {"top-p", LM_DOUBLE, &o.top_p, "then from the fewest whose probability reaches top-p (1: all)"},
        {"sample-seed", LM_INT, &o.sample_seed, "seed of the sample (-1: the training generator goes on)"},
        {"data", LM_STR, &o.data, "corpus (any text file)"},
        {"out", LM_STR, &o.out, "output directory (created)"},
        {"figures", LM_INT, &o.figures, "1: redraw the figures DIR/*.png at each evaluation; 0: none"},
        {"rope-scaling", LM_STR, &o.rope_scaling,
         "rotary context extension for --pos rotary, xpos, local: none linear ntk dynamic_ntk dynamic_linear yarn "
         "part_ntk dynamic_yarn"},
        {"rope-factor", LM_DOUBLE, &o.rope_factor,
         "its scale factor (linear, ntk, yarn, part_ntk; dynamic_ntk: its factor, 0: 1)"},
        {"rope-orig-len", LM_INT, &o.rope_orig_len, "its original (trained) length (0: --seq)"},
        {"rope-beta-fast", LM_DOUBLE, &o.rope_beta_fast,
         "yarn, dynamic_yarn: the ramp's high end beta_fast (> --rope-beta-slow; the paper's beta)"},
        {"rope-beta-slow", LM_DOUBLE, &o.rope_beta_slow, "yarn, dynamic_yarn: the ramp's low end (the paper's alpha)"},
        {"rope-attn-factor", LM_DOUBLE, &o.rope_attn_factor,
         "yarn, dynamic_yarn: multiplies the attention factor mscale = 0.1 ln(factor) + 1 on q and k"},
        {"resume", LM_STR, &o.resume, "training checkpoint to continue from (DIR/checkpoint.safetensors)"},
    };
    int n = (int)(sizeof flags / sizeof flags[0]);
    char choices[1024], summary[sizeof TRAIN_LM_SUMMARY + sizeof choices + 16];
    snprintf(summary, sizeof summary, "%s\n--pos: %s", TRAIN_LM_SUMMARY, lm_pos_names(choices, sizeof choices));
    int p = lm_parse_flags(argc, argv, flags, n, summary);
    if (p != 0)
        return p > 0 ? 0 : 2;
    if (!lm_pos_find(o.pos)) {
        fprintf(stderr, "%s: unknown --pos '%s' (choices: %s)\n", argv[0], o.pos, choices);
        lm_usage(stderr, argv[0], summary, flags, n);
        return 2;
    }
    return train_lm_run(&o, NULL);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return train_lm_main(argc, argv); }
#endif
