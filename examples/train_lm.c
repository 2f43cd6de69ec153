/* train_lm: a character-level decoder LM on tinyshakespeare (`make run`).
 *
 * AdamW with linear warmup and cosine decay, a live progress bar, validation
 * loss at intervals, a CSV log, a training checkpoint (resumable with --resume)
 * and a model-only state dict (both safetensors, readable by
 * safetensors.torch.load_file), heatmaps of the positional biases, and sampled
 * text at the end. docs/examples.md describes a run; --help lists the flags. */
#include "lm_common.h"
#include "../tensor/png.h"

typedef struct train_lm_opts {
    const char *pos, *data, *out, *resume, *prompt;
    int layers, dim, heads, seq, batch, steps, threads, eval_every, eval_windows, warmup, sample_len, seed;
    int log_every;
    double lr, min_lr, weight_decay, clip, init_std;
} train_lm_opts;

typedef struct train_lm_result {
    double first_loss;     /* training loss of the first step run */
    double last_loss;      /* mean training loss of the last (up to 20) steps */
    double val_loss;       /* validation loss at the end */
    double seconds;        /* training time of this invocation (no sampling) */
    double tokens_per_s;   /* training throughput of this invocation */
    int steps_run;
} train_lm_result;

/* The default run (`make run`): docs/examples.md records it. */
static train_lm_opts train_lm_defaults(void)
{
    return (train_lm_opts){.pos = "dpb",
                           .data = "examples/data/tinyshakespeare.txt",
                           .out = "train_lm_out",
                           .prompt = "ROMEO:",
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
                           .log_every = 50,
                           .lr = 3e-3,
                           .min_lr = 0.1,
                           .weight_decay = 0.1,
                           .clip = 1.0};
}

static const char TRAIN_LM_SUMMARY[] =
    "Trains a character-level transformer (pg_lm) on a text corpus with AdamW (warmup + cosine),\n"
    "logs losses to DIR/log.csv, saves DIR/checkpoint.safetensors (training state) and\n"
    "DIR/model.safetensors (weights), draws DIR/pos_*.png and prints a sample.\n"
    "--pos: none sinusoidal learned continuous rotary xpos alibi dpb xl t5 rel local";

/* ---- positional heatmaps ----------------------------------------------------------------------- */
/* bias (H, L, L) or (1, H, L, L) -> one (L, H (L + 1) - 1) picture: the heads side
 * by side, separated by a NaN (gray) column; causally hidden cells NaN too. */
static pg_tensor *heads_side_by_side(const pg_tensor *bias, int64_t H, int64_t L)
{
    int64_t W = H * (L + 1) - 1;
    pg_tensor *img = pg_empty(NULL, PG_F64, PG_SHAPE(L, W));
    if (!img)
        return NULL;
    for (int64_t i = 0; i < L; i++)
        for (int64_t x = 0; x < W; x++) {
            int64_t h = x / (L + 1), j = x % (L + 1);
            bool shown = j < L && j <= i;
            pg_f64(img)[i * W + x] = shown ? pg_get(bias, (h * L + i) * L + j) : NAN;
        }
    return img;
}

static int64_t cell_px_for(int64_t L)
{
    return L >= 128 ? 2 : L >= 32 ? 4 : 8;
}

/* blocks.N's bias for the scheme's bias_table over positions 0..L-1 -> DIR/pos_layerN.png */
static int draw_layer_biases(pg_graph *g, pg_lm *lm, const char *dir, int64_t L)
{
    int drawn = 0;
    for (int64_t layer = 0; layer < lm->cfg.layers; layer++) {
        pg_mha *attn = lm->blocks[layer]->attn;
        for (int i = 0; i < attn->n_pos; i++) {
            pg_posmod *m = attn->pos[i];
            if (!m->ops->bias_table)
                continue;
            pg_pos_ctx c = {.self_attn = true, .causal = true, .B = 1, .heads = lm->cfg.heads,
                            .head_dim = attn->head_dim, .Lq = L, .Lk = L, .scale = attn->cfg.scale,
                            .dtype = lm->cfg.dtype};
            pg_graph_reset(g);
            pg_no_grad_begin(g);
            pg_tensor *bias = pg_posmod_bias_table(g, m, &c);
            pg_no_grad_end(g);
            pg_tensor *img = bias ? heads_side_by_side(bias, lm->cfg.heads, L) : NULL;
            char path[4096];
            snprintf(path, sizeof path, "%s/pos_layer%lld.png", dir, (long long)layer);
            if (!img || pg_png_heatmap(path, img, cell_px_for(L), 0, 0) != 0) {
                fprintf(stderr, "heatmap of layer %lld: %s\n", (long long)layer,
                        bias ? pg_last_error() : pg_graph_error(g));
                pg_tensor_free(img);
                return -1;
            }
            pg_tensor_free(img);
            drawn++;
        }
    }
    pg_graph_reset(g);
    return drawn;
}

/* What the input scheme adds, P (L, dim) -> DIR/pos_input.png, and the cosine
 * similarity of its rows, S[i][j] = P_i . P_j / (|P_i| |P_j|) -> DIR/pos_input_similarity.png */
static int draw_input_table(pg_graph *g, pg_lm *lm, const char *dir, int64_t L)
{
    if (lm->n_pos < 1)
        return 0;
    int64_t D = lm->cfg.dim;
    pg_graph_reset(g);
    pg_no_grad_begin(g);
    pg_tensor *P = pg_posmod_x_table(g, lm->pos[0], L, D, NULL);
    pg_no_grad_end(g);
    pg_tensor *S = pg_empty(NULL, PG_F64, PG_SHAPE(L, L));
    char path[4096];
    int rc = P && S ? 0 : -1;
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/pos_input.png", dir);
        rc = pg_png_heatmap(path, P, cell_px_for(L) > 2 ? 2 : 1, 0, 0);
    }
    for (int64_t i = 0; rc == 0 && i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            double dot = 0, ni = 0, nj = 0;
            for (int64_t d = 0; d < D; d++) {
                double a = pg_get(P, i * D + d), b = pg_get(P, j * D + d);
                dot += a * b;
                ni += a * a;
                nj += b * b;
            }
            pg_f64(S)[i * L + j] = ni > 0 && nj > 0 ? dot / sqrt(ni * nj) : 0.0;
        }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/pos_input_similarity.png", dir);
        rc = pg_png_heatmap(path, S, cell_px_for(L), -1, 1);
    }
    if (rc != 0)
        fprintf(stderr, "heatmap of the input table: %s\n", P ? pg_last_error() : pg_graph_error(g));
    pg_tensor_free(S);
    pg_graph_reset(g);
    return rc == 0 ? 2 : -1;
}

/* ---- the run ------------------------------------------------------------------------------------ */
typedef struct trainer {
    const train_lm_opts *o;
    lm_corpus corpus;
    pg_lm *lm;
    pg_tensor_list params;
    pg_optim *opt;
    pg_schedule *sched;
    pg_rng rng;
    pg_graph *g;
    FILE *csv;
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
    if (bad)
        fprintf(stderr, "train_lm: %s\n", bad);
    return bad ? -1 : 0;
}

static int trainer_init(trainer *t, const train_lm_opts *o)
{
    memset(t, 0, sizeof *t);
    t->o = o;
    pg_lm_config c = pg_lm_defaults(0, o->dim, o->heads, o->layers);
    if (lm_config_pos(&c, o->pos, o->seq / 4) != 0) { /* local: window seq / 4, one back */
        fprintf(stderr, "train_lm: unknown --pos '%s'\n", o->pos);
        return -1;
    }
    if (o->threads > 0 && pg_set_num_threads(o->threads) != 0) {
        fprintf(stderr, "train_lm: %s\n", pg_last_error());
        return -1;
    }
    if (lm_corpus_load(&t->corpus, o->data, o->seq + 1) != 0)
        return -1;
    c.vocab = t->corpus.vocab;
    c.max_len = o->seq;
    c.init_std = o->init_std;
    c.seed = (uint64_t)o->seed;
    t->lm = pg_lm_new(&c);
    if (!t->lm) {
        fprintf(stderr, "train_lm: %s\n", pg_last_error());
        return -1;
    }
    t->params = pg_module_parameters(&t->lm->base);
    pg_optim_hparams h = pg_adamw_hparams(o->lr);
    h.beta2 = 0.99; /* nanoGPT's choice for small character models */
    t->opt = pg_optim_new(PG_ADAMW, &h);
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
    if (lm_make_dir(o->out) != 0)
        return -1;
    if (o->resume && pg_checkpoint_load(o->resume, &t->lm->base, t->opt, t->sched, &t->rng) != 0) {
        fprintf(stderr, "train_lm: --resume: %s\n", pg_last_error());
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/log.csv", o->out);
    t->csv = fopen(path, o->resume ? "a" : "w");
    if (!t->csv) {
        fprintf(stderr, "train_lm: cannot write '%s': %s\n", path, strerror(errno));
        return -1;
    }
    if (!o->resume)
        fprintf(t->csv, "step,train_loss,val_loss,lr,tokens_per_s\n");
    return 0;
}

/* One optimisation step on a fresh batch; the training loss, NaN on error. */
static double train_step(trainer *t)
{
    pg_graph_reset(t->g);
    pg_tensor *ids, *targets;
    lm_train_batch(t->g, &t->corpus, t->o->batch, t->o->seq, &t->rng, &ids, &targets);
    pg_tensor *loss = pg_lm_loss(t->g, t->lm, ids, targets, NULL);
    if (!loss || pg_backward(t->g, loss) != 0) {
        fprintf(stderr, "\ntrain_lm: %s\n", pg_graph_error(t->g));
        return NAN;
    }
    if (t->o->clip > 0)
        pg_clip_grad_norm(t->params.tensors, t->params.n, t->o->clip);
    pg_optim_step(t->opt);
    pg_optim_zero_grad(t->opt);
    pg_schedule_step(t->sched);
    return pg_item(loss);
}

static int save_checkpoints(trainer *t)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", t->o->out);
    int rc = pg_checkpoint_save(path, &t->lm->base, t->opt, t->sched, &t->rng);
    snprintf(path, sizeof path, "%s/model.safetensors", t->o->out);
    if (rc == 0)
        rc = pg_module_save(&t->lm->base, path);
    if (rc != 0)
        fprintf(stderr, "train_lm: saving: %s\n", pg_last_error());
    return rc;
}

static int train_loop(trainer *t, train_lm_result *res)
{
    const train_lm_opts *o = t->o;
    lm_progress bar = {.tty = isatty(STDOUT_FILENO) != 0, .every = o->log_every, .width = 30};
    int first = (int)*pg_i64(t->sched->step) + 1;
    double t0 = lm_now(), tail = 0;
    int n_tail = 0;
    res->first_loss = NAN;
    if (first > 1)
        printf("resumed from %s at step %d\n", o->resume, first - 1);
    for (int step = first; step <= o->steps; step++) {
        double lr = t->opt->groups[0].h.lr;
        double loss = train_step(t);
        if (!isfinite(loss))
            return -1;
        if (step == first)
            res->first_loss = loss;
        if (step > o->steps - 20) {
            tail += loss;
            n_tail++;
        }
        double dt = lm_now() - t0, done = step - first + 1;
        double tok_s = done * o->batch * o->seq / dt;
        bool eval = step % o->eval_every == 0 || step == o->steps;
        if (eval)
            bar.last_draw = 0; /* show this step before the evaluation line */
        lm_progress_show(&bar, step, o->steps, loss, tok_s, dt / done * (o->steps - step));
        double val = NAN;
        if (eval) {
            val = lm_eval_loss(t->g, t->lm, &t->corpus, o->seq, o->eval_windows, o->batch);
            lm_progress_break(&bar);
            printf("step %d: val loss %.4f (train %.4f, %.1f s)\n", step, val, loss, lm_now() - t0);
            if (!isfinite(val) || save_checkpoints(t) != 0)
                return -1;
        }
        fprintf(t->csv, "%d,%.6f,", step, loss);
        if (isfinite(val))
            fprintf(t->csv, "%.6f", val);
        fprintf(t->csv, ",%.6g,%.1f\n", lr, tok_s);
        res->val_loss = isfinite(val) ? val : res->val_loss;
        res->steps_run++;
    }
    fflush(t->csv);
    if (res->steps_run == 0) {
        printf("the checkpoint is at step %d: nothing left of --steps %d\n", first - 1, o->steps);
        res->val_loss = lm_eval_loss(t->g, t->lm, &t->corpus, o->seq, o->eval_windows, o->batch);
    }
    res->seconds = lm_now() - t0;
    res->tokens_per_s = res->steps_run * (double)o->batch * o->seq / (res->seconds > 0 ? res->seconds : 1);
    res->last_loss = n_tail ? tail / n_tail : NAN;
    return 0;
}

static void draw_pictures(trainer *t)
{
    const char *o = t->o->out;
    int64_t L = t->o->seq < 64 ? t->o->seq : 64;
    int n = lm_scheme_is_input(t->o->pos) ? draw_input_table(t->g, t->lm, o, L) : draw_layer_biases(t->g, t->lm, o, L);
    if (n > 0)
        printf("wrote %d heatmap%s of the positional %s to %s/pos_*.png\n", n, n > 1 ? "s" : "",
               lm_scheme_is_input(t->o->pos) ? "table" : "biases", o);
    else if (n == 0)
        printf("no positional bias to draw for --pos %s (it %s)\n", t->o->pos,
               !strcmp(t->o->pos, "none") ? "has none" : "acts on q and k, not through an additive bias table");
}

/* Trains as o says; res (may be NULL) gets the figures. 0, or 1 after a message. */
static int train_lm_run(const train_lm_opts *o, train_lm_result *res)
{
    train_lm_result scratch;
    res = res ? res : &scratch;
    memset(res, 0, sizeof *res);
    res->val_loss = NAN;
    if (check_opts(o) != 0)
        return 1;
    trainer t;
    int rc = trainer_init(&t, o);
    if (rc == 0) {
        printf("train_lm: --pos %s, %d layers, dim %d, %d heads, seq %d, batch %d, %lld parameters, vocab %d, "
               "%lld train / %lld val characters, %d threads\n",
               o->pos, o->layers, o->dim, o->heads, o->seq, o->batch,
               (long long)pg_module_num_elements(&t.lm->base), t.corpus.vocab, (long long)t.corpus.n_train,
               (long long)(t.corpus.n - t.corpus.n_train), pg_num_threads());
        rc = train_loop(&t, res);
    }
    if (rc == 0) {
        printf("done: %d steps in %.1f s (%.0f tokens/s), val loss %.4f; wrote %s/log.csv, "
               "%s/checkpoint.safetensors, %s/model.safetensors\n",
               res->steps_run, res->seconds, res->tokens_per_s, res->val_loss, o->out, o->out, o->out);
        draw_pictures(&t);
        if (o->sample_len > 0) {
            printf("---- sample (temperature 0.8) ----\n");
            rc = lm_sample(stdout, t.g, t.lm, &t.corpus, o->prompt, o->sample_len, o->seq, 0.8, 0,
                           &t.rng);
        }
    }
    trainer_free(&t);
    return rc == 0 ? 0 : 1;
}

int train_lm_main(int argc, char **argv)
{
    train_lm_opts o = train_lm_defaults();
    const lm_flag flags[] = {
        {"pos", LM_STR, &o.pos, "positional scheme"},
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
        {"data", LM_STR, &o.data, "corpus (any text file)"},
        {"out", LM_STR, &o.out, "output directory (created)"},
        {"resume", LM_STR, &o.resume, "training checkpoint to continue from (DIR/checkpoint.safetensors)"},
    };
    int n = (int)(sizeof flags / sizeof flags[0]);
    int p = lm_parse_flags(argc, argv, flags, n, TRAIN_LM_SUMMARY);
    if (p != 0)
        return p > 0 ? 0 : 2;
    bool known = false;
    for (int i = 0; i < LM_N_SCHEMES; i++)
        known = known || !strcmp(o.pos, LM_SCHEMES[i]);
    if (!known) {
        fprintf(stderr, "%s: unknown --pos '%s'\n", argv[0], o.pos);
        lm_usage(stderr, argv[0], TRAIN_LM_SUMMARY, flags, n);
        return 2;
    }
    return train_lm_run(&o, NULL);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return train_lm_main(argc, argv); }
#endif
