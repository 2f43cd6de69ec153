/* Smoke test of examples/train_lm.c: a tiny model on a tiny corpus writes its
 * CSV, checkpoints and heatmaps and lowers the loss; --resume continues from the
 * checkpoint; bad flags fail with a nonzero code. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/train_lm.c"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>

#include "testutil.h"
#include "example_run.h"

static const char CORPUS[] = "to be, or not to be, that is the question: whether 'tis nobler in the mind to "
                             "suffer the slings and arrows of outrageous fortune, or to take arms against a sea "
                             "of troubles, and by opposing end them. ";

/* A temp dir holding corpus.txt (CORPUS repeated) and the path of out/ in it. */
static void make_workdir(char dir[64], char out[128], char data[128])
{
    ex_corpus_workdir(dir, "/tmp/pg_train_lm_XXXXXX", CORPUS, out, data);
}

static bool exists_in(const char *dir, const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && st.st_size > 0;
}

static train_lm_opts tiny_opts(const char *out, const char *data, const char *pos)
{
    train_lm_opts o = train_lm_defaults();
    o.pos = pos;
    o.data = data;
    o.out = out;
    o.layers = 1;
    o.dim = 16;
    o.heads = 2;
    o.seq = 16;
    o.batch = 4;
    o.steps = 40;
    o.eval_every = 20;
    o.eval_windows = 4;
    o.sample_len = 16;
    o.lr = 1e-2;
    return o;
}

static void quiet(void)
{
    cr_assert_not_null(freopen("/dev/null", "w", stdout)); /* each test runs in its own process */
}

/* The whole of a file (malloc'd, NUL-terminated; "" when missing). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 12, n = 0, got;
    char *buf = malloc(cap + 1);
    cr_assert_not_null(buf);
    while (f && (got = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap) {
            buf = realloc(buf, (cap *= 2) + 1);
            cr_assert_not_null(buf);
        }
    if (f)
        fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Runs train_lm_main on the NULL-terminated arguments after "train_lm" with
 * stdout and stderr captured (example_run.h); *out and *err get their text
 * (free them). */
static int run_captured(char **out, char **err, ...)
{
    char *argv[64] = {"train_lm"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 63;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    ex_run *r = malloc(sizeof *r);
    cr_assert_not_null(r);
    ex_capture(r, train_lm_main, argv);
    int rc = r->rc;
    *out = strdup(r->out);
    *err = strdup(r->err);
    free(r);
    return rc;
}

/* The tiny model of tiny_opts as flags (followed by the caller's). */
#define TINY_FLAGS "--layers", "1", "--dim", "16", "--heads", "2", "--seq", "16", "--batch", "4", "--eval-windows", \
                   "4", "--sample", "0", "--lr", "1e-2"

static bool same_bytes(const char *a, const char *b)
{
    char *x = slurp(a), *y = slurp(b);
    bool same = !strcmp(x, y) && x[0];
    free(x);
    free(y);
    return same;
}

static void copy_file(const char *from, const char *to)
{
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    cr_assert(f && g);
    char buf[1 << 14];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, g), n);
    fclose(f);
    fclose(g);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Asserts the log is one header then rows for steps 1..n, each once, in order. */
static void assert_log_rows(const char *path, int n)
{
    char *text = slurp(path), *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    cr_assert(line && !strcmp(line, "step,train_loss,val_loss,lr,tokens_per_s"), "first line of %s: %s", path,
              line ? line : "(none)");
    int expect = 1;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        cr_assert_eq(atoi(line), expect, "%s: row '%s', expected step %d", path, line, expect);
        expect++;
    }
    cr_assert_eq(expect - 1, n, "%s has %d rows, expected %d", path, expect - 1, n);
    free(text);
}

Test(example_train_lm, writes_files_learns_and_resumes, .init = quiet)
{
    char dir[64], out[128], data[128], ckpt[256];
    make_workdir(dir, out, data);
    train_lm_opts o = tiny_opts(out, data, "alibi");
    train_lm_result r;
    cr_assert_eq(train_lm_run(&o, &r), 0, "%s", pg_last_error());
    cr_assert_eq(r.steps_run, 40);
    cr_assert(r.last_loss < r.first_loss - 0.5, "loss %g -> %g", r.first_loss, r.last_loss);
    cr_assert(isfinite(r.val_loss));
    const char *files[] = {"log.csv", "checkpoint.safetensors", "model.safetensors", "pos_layer0.png"};
    for (int i = 0; i < 4; i++)
        cr_assert(exists_in(out, files[i]), "%s missing", files[i]);

    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    o.resume = ckpt;
    o.steps = 50;
    train_lm_result r2;
    cr_assert_eq(train_lm_run(&o, &r2), 0);
    cr_assert_eq(r2.steps_run, 10, "resumed at step 40 of 50, ran %d", r2.steps_run);
    cr_assert(r2.first_loss < r.first_loss - 0.5, "resumed loss %g", r2.first_loss);
    train_lm_result r3; /* the checkpoint is at step 50: nothing left to run */
    cr_assert_eq(train_lm_run(&o, &r3), 0);
    cr_assert_eq(r3.steps_run, 0);
    cr_assert(isfinite(r3.val_loss));
    ex_remove_tree(dir);
}

Test(example_train_lm, input_scheme_draws_its_table_and_none_draws_nothing, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    train_lm_opts o = tiny_opts(out, data, "sinusoidal");
    o.steps = 4;
    o.eval_every = 4;
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    cr_assert(exists_in(out, "pos_input.png"));
    cr_assert(exists_in(out, "pos_input_similarity.png"));
    o.pos = "none";
    o.out = dir;
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    cr_assert(!exists_in(dir, "pos_layer0.png"));
    cr_assert(exists_in(dir, "log.csv"));
    ex_remove_tree(dir);
}

/* Every attention scheme: a heatmap when its registry entry has a bias_table (FIRE, KERPLE, ...), else a
 * reason read from its hooks and props: fox's bias comes from x, not from q and k; the loss and the
 * attention maps for all, the bias against distance for the distance-only ones. */
Test(example_train_lm, each_scheme_draws_its_bias_or_says_why_not, .init = quiet)
{
    char dir[64], out[128], data[128], png[256];
    make_workdir(dir, out, data);
    snprintf(png, sizeof png, "%s/pos_layer0.png", out);
    for (int i = 0; i < LM_N_SCHEMES; i++) {
        const char *pos = LM_SCHEMES[i];
        if (lm_scheme_is_input(pos))
            continue;
        const pg_posmod_kind_info *k = lm_pos_info(pos);
        char *o, *e;
        int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "2", "--eval-every", "2",
                              "--pos", pos, NULL);
        cr_assert_eq(rc, 0, "--pos %s: %s", pos, e);
        bool table = k && (k->hooks & PG_POS_HOOK_TABLE);
        cr_assert_eq(exists_in(out, "pos_layer0.png"), table, "--pos %s: %s", pos, o);
        cr_assert(exists_in(out, "attn_layer0.png") && exists_in(out, "loss.png"), "--pos %s: %s", pos, o);
        cr_assert_eq(exists_in(out, "bias_vs_distance.png"), table && k->dist_only, "--pos %s: %s", pos, o);
        cr_assert_eq(strstr(o, "no positional bias to draw") == NULL, table, "--pos %s: %s", pos, o);
        if (k && (k->props & PG_POS_NEEDS_X))
            cr_assert(strstr(o, "computed from the layer's input x") && !strstr(o, "q and k"), "%s: %s", pos, o);
        if (k && !(k->props & PG_POS_NEEDS_QK))
            cr_assert(!strstr(o, "q and k") && !strstr(o, "q or k"), "--pos %s: %s", pos, o);
        if (!k)
            cr_assert(strstr(o, "(it has none)"), "%s", o);
        free(o);
        free(e);
        ex_remove_tree(out);
    }
    ex_remove_tree(dir);
}

Test(example_train_lm, local_runs_with_its_band, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    train_lm_opts o = tiny_opts(out, data, "local");
    o.steps = 4;
    o.eval_every = 4;
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    ex_remove_tree(dir);
}

/* --rope-scaling reaches the rotary module of --pos rotary, xpos and local (the first loss moves
 * off the unscaled run's), and is refused for another scheme, an unknown name or a bad factor */
Test(example_train_lm, rope_scaling_reaches_rotary_xpos_and_local, .init = quiet)
{
    cr_assert_not_null(freopen("/dev/null", "w", stderr));
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    const char *pos[] = {"rotary", "xpos", "local"}, *scaling[] = {"yarn", "ntk", "dynamic_ntk"};
    for (int i = 0; i < 3; i++) {
        train_lm_opts o = tiny_opts(out, data, pos[i]);
        o.steps = 2;
        o.eval_every = 2;
        o.sample_len = 0;
        train_lm_result plain, scaled;
        cr_assert_eq(train_lm_run(&o, &plain), 0);
        o.rope_scaling = scaling[i];
        o.rope_factor = 4;
        o.rope_orig_len = 8; /* below --seq 16: dynamic_ntk scales */
        cr_assert_eq(train_lm_run(&o, &scaled), 0, "%s + %s", pos[i], scaling[i]);
        cr_assert_neq(plain.first_loss, scaled.first_loss, "%s: --rope-scaling %s changed nothing", pos[i],
                      scaling[i]);
    }
    train_lm_opts o = tiny_opts(out, data, "alibi");
    o.rope_scaling = "yarn";
    o.rope_factor = 4;
    cr_assert_neq(train_lm_run(&o, NULL), 0);
    o.pos = "rotary";
    o.rope_scaling = "bogus";
    cr_assert_neq(train_lm_run(&o, NULL), 0);
    o.rope_scaling = "yarn";
    o.rope_factor = 0.5;
    cr_assert_neq(train_lm_run(&o, NULL), 0);
    ex_remove_tree(dir);
}

Test(example_train_lm, bad_flags_fail, .init = quiet)
{
    cr_assert_not_null(freopen("/dev/null", "w", stderr));
    char *bogus[] = {"train_lm", "--bogus"};
    cr_assert_neq(train_lm_main(2, bogus), 0);
    char *pos[] = {"train_lm", "--pos", "nope"};
    cr_assert_neq(train_lm_main(3, pos), 0);
    char *num[] = {"train_lm", "--steps", "12x"};
    cr_assert_neq(train_lm_main(3, num), 0);
    char *missing[] = {"train_lm", "--layers"};
    cr_assert_neq(train_lm_main(2, missing), 0);
    char *heads[] = {"train_lm", "--dim", "10", "--heads", "4"};
    cr_assert_neq(train_lm_main(5, heads), 0);
    char *data[] = {"train_lm", "--data", "/nonexistent/corpus.txt"};
    cr_assert_neq(train_lm_main(3, data), 0);
    char *help[] = {"train_lm", "--help"};
    cr_assert_eq(train_lm_main(2, help), 0);
}

/* ---- issue 11, item 7: a diverging run says so and keeps the last good checkpoint ------------ */
Test(example_train_lm, divergence_is_explained_and_keeps_the_last_good_checkpoint, .init = quiet)
{
    char dir[64], out[128], data[128], ckpt[256], model[256], saved_ckpt[256], saved_model[256];
    make_workdir(dir, out, data);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    snprintf(model, sizeof model, "%s/model.safetensors", out);
    snprintf(saved_ckpt, sizeof saved_ckpt, "%s/ckpt_step20", dir);
    snprintf(saved_model, sizeof saved_model, "%s/model_step20", dir);
    char *o, *e;
    /* a fresh run that diverges before any checkpoint */
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "40", "--eval-every", "20",
                          "--lr", "1e30", "--clip", "0", NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "at step "), "%s", e);
    cr_assert(strstr(e, "--lr 1e+30"), "%s", e);
    cr_assert(strstr(e, "--clip"), "%s", e);
    cr_assert(strstr(e, "no checkpoint"), "%s", e);
    cr_assert(!exists_in(out, "checkpoint.safetensors"));
    free(o);
    free(e);
    /* 20 good steps (a checkpoint at 20), then a resumed run at lr 1e30 */
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "20", "--eval-every", "20", NULL);
    cr_assert_eq(rc, 0, "%s", e);
    free(o);
    free(e);
    copy_file(ckpt, saved_ckpt);
    copy_file(model, saved_model);
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "60", "--eval-every", "10",
                      "--lr", "1e30", "--clip", "0", "--resume", ckpt, NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "diverged"), "%s", e);
    cr_assert(strstr(e, "lower --lr"), "%s", e);
    cr_assert(strstr(e, "--clip 1"), "%s", e);
    char want[512];
    snprintf(want, sizeof want, "%s (step 20)", ckpt);
    cr_assert(strstr(e, want), "wanted '%s' in: %s", want, e);
    cr_assert(same_bytes(ckpt, saved_ckpt), "the good checkpoint was overwritten");
    cr_assert(same_bytes(model, saved_model), "the good model was overwritten");
    free(o);
    free(e);
    ex_remove_tree(dir);
}

/* ---- item 8: log.csv is written row by row and appended to on --resume ------------------------ */
Test(example_train_lm, log_rows_survive_a_kill, .init = quiet)
{
    char dir[64], out[128], data[128], log[256], progress[256];
    make_workdir(dir, out, data);
    snprintf(log, sizeof log, "%s/log.csv", out);
    snprintf(progress, sizeof progress, "%s/progress", dir);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr) || !freopen(progress, "w", stdout))
            _exit(3);
        train_lm_opts o = tiny_opts(out, data, "alibi");
        o.steps = 1000000;
        o.eval_every = 1000000;
        o.log_every = 1; /* a progress line per step, flushed */
        _exit(train_lm_run(&o, NULL));
    }
    /* kill -9 once the progress shows step 5 (or after 60 s) */
    int shown = 0;
    for (int i = 0; i < 600 && shown < 5; i++) {
        nanosleep(&(struct timespec){0, 100000000}, NULL);
        char *text = slurp(progress), *p = text, *at;
        while ((at = strstr(p, "step ")) != NULL) {
            int s = atoi(at + 5);
            shown = s > shown ? s : shown;
            p = at + 5;
        }
        free(text);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    char *text = slurp(progress), *p = text, *at;
    while ((at = strstr(p, "step ")) != NULL) { /* the last step shown before the kill */
        int s = atoi(at + 5);
        shown = s > shown ? s : shown;
        p = at + 5;
    }
    free(text);
    cr_assert_geq(shown, 5, "the run showed no progress");
    text = slurp(log);
    int n = 0;
    for (char *q = text; *q; q++)
        n += *q == '\n';
    char *cut = strrchr(text, '\n'); /* a kill mid-row may leave a partial last line */
    cr_assert_not_null(cut, "log.csv is empty after the run showed step %d", shown);
    cut[1] = '\0';
    FILE *f = fopen(log, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    cr_assert_geq(n - 1, shown - 1, "log.csv has %d rows; the run had shown step %d", n - 1, shown);
    assert_log_rows(log, n - 1);
    ex_remove_tree(dir);
}

Test(example_train_lm, resume_appends_to_the_log_after_the_checkpoint_step, .init = quiet)
{
    char dir[64], out[128], data[128], ckpt[256], log[256], out2[128], log2[256];
    make_workdir(dir, out, data);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    snprintf(log, sizeof log, "%s/log.csv", out);
    snprintf(out2, sizeof out2, "%s/out2", dir);
    snprintf(log2, sizeof log2, "%s/log.csv", out2);
    train_lm_opts o = tiny_opts(out, data, "alibi");
    o.steps = 20;
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    /* rows past the checkpoint (as a killed run leaves them) are dropped on resume */
    FILE *f = fopen(log, "a");
    for (int s = 21; s <= 25; s++)
        fprintf(f, "%d,9.0,,0.01,1000.0\n", s);
    fclose(f);
    o.resume = ckpt;
    o.steps = 30;
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    assert_log_rows(log, 30);
    char *text = slurp(log);
    cr_assert(!strstr(text, ",9.0,"), "the stale rows 21..25 are still there");
    free(text);
    /* resuming into a new directory starts its log with the header */
    o.out = out2;
    o.steps = 35;
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    text = slurp(log2);
    cr_assert(!strncmp(text, "step,train_loss,val_loss,lr,tokens_per_s\n31,", 44), "%s", text);
    free(text);
    ex_remove_tree(dir);
}

/* ---- item 9: the model flags are in the checkpoint; a mismatch says which -------------------- */
Test(example_train_lm, resume_with_other_model_flags_names_them, .init = quiet)
{
    char dir[64], out[128], data[128], ckpt[256], other[128];
    make_workdir(dir, out, data);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    snprintf(other, sizeof other, "%s/other", dir);
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "4", "--pos", "dpb",
                              NULL),
                 0);
    free(o);
    free(e);
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", other, "--steps", "8", "--pos", "alibi",
                          "--dim", "32", "--resume", ckpt, NULL);
    cr_assert_eq(rc, 1);
    char want[512];
    snprintf(want, sizeof want, "%s was trained with --pos dpb --layers 1 --dim 16 --heads 2 --seq 16", ckpt);
    cr_assert(strstr(e, want), "wanted '%s' in: %s", want, e);
    cr_assert(strstr(e, "this run asks for --pos alibi --dim 32"), "%s", e);
    cr_assert(!strstr(e, "exp_avg"), "%s", e);
    cr_assert(!is_dir(other), "%s was created", other);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

/* The --rope-* flags are model flags: recorded in both files' metadata, checked by --resume as
 * --pos and --dim are (a conflict names them); a checkpoint without them had no scaling. */
Test(example_train_lm, rope_flags_are_recorded_and_checked_on_resume, .init = quiet)
{
    char dir[64], out[128], data[128], ckpt[256];
    make_workdir(dir, out, data);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
#define YARN_FLAGS "--pos", "rotary", "--rope-scaling", "yarn", "--rope-factor", "4", "--rope-beta-fast", "16"
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "4", YARN_FLAGS, NULL), 0,
                 "%s", e);
    free(o);
    free(e);
    pg_checkpoint_info info;
    cr_assert_eq(pg_checkpoint_info_read(ckpt, &info), 0, "%s", pg_last_error());
    const char *want[][2] = {{"train_lm.rope-scaling", "yarn"},  {"train_lm.rope-factor", "4"},
                             {"train_lm.rope-orig-len", "16"},   {"train_lm.rope-beta-fast", "16"},
                             {"train_lm.rope-beta-slow", "1"},   {"train_lm.rope-attn-factor", "1"}};
    for (int w = 0; w < 6; w++) {
        const char *v = pg_checkpoint_info_get(&info, want[w][0]);
        cr_assert(v && !strcmp(v, want[w][1]), "%s = %s, wanted %s", want[w][0], v ? v : "(none)", want[w][1]);
    }
    pg_checkpoint_info_free(&info);
    /* the same flags resume */
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "6", YARN_FLAGS, "--resume",
                          ckpt, NULL);
    cr_assert_eq(rc, 0, "%s", e);
    cr_assert(strstr(o, "resumed from"), "%s", o);
    free(o);
    free(e);
    /* without the scaling: refused, naming it */
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "8", "--pos", "rotary", "--resume",
                      ckpt, NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "was trained with --pos rotary --layers 1 --dim 16 --heads 2 --seq 16 --rope-scaling yarn "
                        "--rope-factor 4 --rope-orig-len 16 --rope-beta-fast 16 --rope-beta-slow 1 "
                        "--rope-attn-factor 1; this run asks for --rope-scaling none ("),
              "%s", e);
    free(o);
    free(e);
    /* another beta: refused, naming that flag alone */
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "8", YARN_FLAGS,
                      "--rope-beta-slow", "2", "--resume", ckpt, NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "this run asks for --rope-beta-slow 2 ("), "%s", e);
    free(o);
    free(e);
    /* a checkpoint written before the --rope-* flags were recorded: read as --rope-scaling none */
    ex_remove_tree(out);
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "4", "--pos", "rotary",
                              NULL),
                 0);
    free(o);
    free(e);
    pg_tensor_list l = {0, 0, NULL, NULL};
    int n = 0, kept = 0;
    char **keys = NULL, **values = NULL;
    cr_assert_eq(pg_safetensors_load_meta(ckpt, &l, &n, &keys, &values), 0, "%s", pg_last_error());
    const char *k2[32], *v2[32];
    for (int i = 0; i < n && kept < 32; i++)
        if (!strstr(keys[i], "train_lm.rope-")) {
            k2[kept] = keys[i];
            v2[kept++] = values[i];
        }
    cr_assert_lt(kept, n, "the rope keys were there");
    cr_assert_eq(pg_safetensors_save(ckpt, &l, kept, k2, v2), 0, "%s", pg_last_error());
    for (int i = 0; i < n; i++) {
        free(keys[i]);
        free(values[i]);
    }
    free(keys);
    free(values);
    pg_tensor_list_free_all(&l);
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "6", "--pos", "rotary", "--resume",
                      ckpt, NULL);
    cr_assert_eq(rc, 0, "%s", e);
    free(o);
    free(e);
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "8", YARN_FLAGS, "--resume",
                      ckpt, NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "this run asks for --rope-scaling yarn --rope-factor 4"), "%s", e);
    free(o);
    free(e);
#undef YARN_FLAGS
    ex_remove_tree(dir);
}

/* --help lists YaRN's betas and attention factor with their defaults; a bad pair is refused */
Test(example_train_lm, rope_yarn_flags_have_defaults_and_are_checked, .init = quiet)
{
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, "--help", NULL), 0);
    cr_assert(strstr(o, "--rope-beta-fast X") && strstr(o, "(default 32)"), "%s", o);
    cr_assert(strstr(o, "--rope-beta-slow X") && strstr(o, "--rope-attn-factor X"), "%s", o);
    const char *after[] = {"--rope-beta-slow X", "--rope-attn-factor X"};
    for (int i = 0; i < 2; i++) {
        const char *line = strstr(o, after[i]), *end = line ? strchr(line, '\n') : NULL;
        cr_assert(end && !strncmp(end - 11, "(default 1)", 11), "%s", line ? line : o);
    }
    free(o);
    free(e);
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "2", "--pos", "rotary",
                          "--rope-scaling", "yarn", "--rope-factor", "4", "--rope-beta-fast", "0.5", NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "--rope-beta-fast 0.5") && strstr(e, "yarn_beta_fast (0.5) must be > yarn_beta_slow (1)"),
              "%s", e);
    cr_assert(!is_dir(out), "nothing written");
    free(o);
    free(e);
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "2", "--pos", "rotary",
                      "--rope-scaling", "yarn", "--rope-factor", "4", "--rope-attn-factor", "0.7", NULL);
    cr_assert_eq(rc, 0, "%s", e);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

Test(example_train_lm, resume_from_a_model_file_says_what_it_is, .init = quiet)
{
    char dir[64], out[128], data[128], model[256];
    make_workdir(dir, out, data);
    snprintf(model, sizeof model, "%s/model.safetensors", out);
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "4", NULL), 0);
    free(o);
    free(e);
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "8", "--resume", model, NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "weights only"), "%s", e);
    cr_assert(strstr(e, "no optimizer state"), "%s", e);
    cr_assert(strstr(e, "checkpoint.safetensors"), "%s", e);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

Test(example_train_lm, resume_from_an_older_checkpoint_without_flags, .init = quiet)
{
    char dir[64], out[128], data[128], ckpt[256];
    make_workdir(dir, out, data);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "4", NULL), 0);
    free(o);
    free(e);
    /* rewrite it as an older train_lm did: the format key alone */
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(ckpt, &l), 0);
    cr_assert_eq(pg_safetensors_save(ckpt, &l, 1, (const char *[]){"format"}, (const char *[]){"posgrad-checkpoint-1"}),
                 0);
    pg_tensor_list_free_all(&l);
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "8", "--dim", "32",
                          "--resume", ckpt, NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "does not record the model flags"), "%s", e);
    cr_assert(strstr(e, ckpt), "%s", e);
    free(o);
    free(e);
    /* with the flags it was trained with, it resumes (and says it could not check them) */
    rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "8", "--resume", ckpt, NULL);
    cr_assert_eq(rc, 0, "%s", e);
    cr_assert(strstr(o, "resumed from"), "%s", o);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

/* ---- item 10: only what was written is reported; the pair never silently disagrees ----------- */
Test(example_train_lm, nothing_left_reports_no_files, .init = quiet)
{
    char dir[64], out[128], data[128], ckpt[256], saved[256];
    make_workdir(dir, out, data);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    snprintf(saved, sizeof saved, "%s/saved", dir);
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "20", NULL), 0);
    free(o);
    free(e);
    copy_file(ckpt, saved);
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "10", "--resume", ckpt,
                              NULL),
                 0, "%s", e);
    cr_assert(strstr(o, "nothing left"), "%s", o);
    cr_assert(!strstr(o, "checkpoint.safetensors, "), "claims a checkpoint was written: %s", o);
    cr_assert(!strstr(o, "wrote"), "claims files were written: %s", o);
    cr_assert(same_bytes(ckpt, saved));
    free(o);
    free(e);
    ex_remove_tree(dir);
}

Test(example_train_lm, model_file_records_its_step_and_flags, .init = quiet)
{
    char dir[64], out[128], data[128], model[256];
    make_workdir(dir, out, data);
    snprintf(model, sizeof model, "%s/model.safetensors", out);
    train_lm_opts o = tiny_opts(out, data, "alibi");
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    pg_tensor_list l = {0, 0, NULL, NULL};
    int n = 0;
    char **keys = NULL, **values = NULL;
    cr_assert_eq(pg_safetensors_load_meta(model, &l, &n, &keys, &values), 0, "%s", pg_last_error());
    const char *want[][2] = {{"format", "pt"},        {"train_lm.pos", "alibi"}, {"train_lm.dim", "16"},
                             {"train_lm.seq", "16"},   {"train_lm.step", "40"}};
    for (int w = 0; w < 5; w++) {
        bool found = false;
        for (int i = 0; i < n; i++)
            found = found || (!strcmp(keys[i], want[w][0]) && !strcmp(values[i], want[w][1]));
        cr_assert(found, "model.safetensors lacks %s = %s", want[w][0], want[w][1]);
    }
    /* the state dict loads into the model as before */
    pg_lm_config c = pg_lm_defaults(0, 16, 2, 1);
    lm_config_pos(&c, "alibi", 4);
    c.vocab = l.tensors[pg_tensor_list_find(&l, "tok_emb.weight")]->shape[0];
    c.max_len = 16;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_eq(pg_module_load(&lm->base, model, true, NULL), 0, "%s", pg_last_error());
    pg_module_free(&lm->base);
    for (int i = 0; i < n; i++) {
        free(keys[i]);
        free(values[i]);
    }
    free(keys);
    free(values);
    pg_tensor_list_free_all(&l);
    ex_remove_tree(dir);
}

Test(example_train_lm, a_failed_model_save_leaves_the_checkpoint_alone, .init = quiet)
{
    char dir[64], out[128], data[128], blocker[256];
    make_workdir(dir, out, data);
    cr_assert_eq(mkdir(out, 0777), 0);
    snprintf(blocker, sizeof blocker, "%s/model.safetensors", out); /* a non-empty directory: rename fails */
    cr_assert_eq(mkdir(blocker, 0777), 0);
    strcat(blocker, "/x");
    cr_assert_eq(mkdir(blocker, 0777), 0);
    char *o, *e;
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "20", NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "model.safetensors"), "%s", e);
    cr_assert(strstr(e, "step 20"), "%s", e);
    cr_assert(!exists_in(out, "checkpoint.safetensors"), "a checkpoint newer than the model file was written");
    cr_assert(!strstr(o, "done:"), "%s", o);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

Test(example_train_lm, a_failed_checkpoint_save_names_the_stale_file, .init = quiet)
{
    char dir[64], out[128], data[128], blocker[256];
    make_workdir(dir, out, data);
    cr_assert_eq(mkdir(out, 0777), 0);
    snprintf(blocker, sizeof blocker, "%s/checkpoint.safetensors", out);
    cr_assert_eq(mkdir(blocker, 0777), 0);
    strcat(blocker, "/x");
    cr_assert_eq(mkdir(blocker, 0777), 0);
    char *o, *e;
    int rc = run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "20", NULL);
    cr_assert_eq(rc, 1);
    char want[512];
    snprintf(want, sizeof want, "%s/checkpoint.safetensors", out);
    cr_assert(strstr(e, want), "%s", e);
    cr_assert(strstr(e, "model.safetensors holds step 20"), "%s", e);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

/* ---- item 11: the step's memory is estimated, printed, and a size past the machine refused ---- */
Test(example_train_lm, a_size_past_the_memory_is_refused_before_any_work, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    char *o, *e;
    double t0 = lm_now();
    int rc = run_captured(&o, &e, "--data", data, "--out", out, "--batch", "4096", "--seq", "64", "--dim", "4096",
                          "--layers", "64", "--sample", "0", NULL);
    double dt = lm_now() - t0;
    cr_assert_eq(rc, 1);
    cr_assert(strstr(e, "memory"), "%s", e);
    cr_assert(strstr(e, "--batch 4096"), "%s", e);
    cr_assert(strstr(e, "--seq 64"), "%s", e);
    cr_assert(dt < 5, "took %.1f s", dt);
    cr_assert(!is_dir(out), "%s was created", out);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

Test(example_train_lm, memory_estimate_is_printed, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", out, "--steps", "2", NULL), 0, "%s", e);
    cr_assert(strstr(o, "memory: ~"), "%s", o);
    cr_assert(strstr(o, "per step (activations "), "%s", o);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

/* Whether this process runs under AddressSanitizer or valgrind, whose
 * shadow memory and redzones make the resident size meaningless. */
static bool memory_is_instrumented(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#endif
#endif
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "vgpreload");
}

Test(example_train_lm, memory_estimate_is_close_to_the_measured_peak, .init = quiet)
{
    if (memory_is_instrumented()) /* resident memory is not the program's there (returns: cr_skip_test leaks */
        return;                    /* Criterion's own buffers, which valgrind reports) */
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    /* activations dominate: 16 x 128 tokens through 2 blocks of width 64 (~70 MB) */
    train_lm_opts o = tiny_opts(out, data, "rotary");
    o.dim = 64;
    o.heads = 4;
    o.layers = 2;
    o.seq = 128;
    o.batch = 16;
    o.steps = 2;
    o.eval_every = 2;
    o.sample_len = 0;
    train_lm_result r;
    cr_assert_eq(train_lm_run(&o, &r), 0);
    cr_assert_gt(r.peak_rss, 0);
    double ratio = r.mem_estimate / r.peak_rss;
    cr_assert(ratio > 0.75 && ratio < 1.33, "estimated %.1f MB, measured peak %.1f MB", r.mem_estimate / 1e6,
              r.peak_rss / 1e6);
    ex_remove_tree(dir);
}

Test(example_train_lm, memory_warns_past_half_and_refuses_past_all, .init = quiet)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/pg_train_lm_judge_%d", (int)getpid());
    cr_assert_not_null(freopen(path, "w", stderr));
    train_lm_opts o = train_lm_defaults();
    lm_mem m = {.params = 1000, .param_bytes = 16e3, .act_bytes = 6e9, .base_bytes = 1e7};
    m.total = m.act_bytes + m.param_bytes + m.base_bytes;
    cr_assert_eq(judge_memory(&o, &m, 20e9, "test"), 0);
    cr_assert_eq(judge_memory(&o, &m, -1, "test"), 0); /* unknown: no verdict */
    cr_assert_eq(judge_memory(&o, &m, 10e9, "test"), 1);
    cr_assert_eq(judge_memory(&o, &m, 5e9, "test"), -1);
    m.param_bytes = 8e9; /* the parameters dominate: --dim and --layers are what to lower */
    m.total = m.act_bytes + m.param_bytes + m.base_bytes;
    cr_assert_eq(judge_memory(&o, &m, 5e9, "test"), -1);
    fflush(stderr);
    char *e = slurp(path);
    remove(path);
    char *warn = strstr(e, "train_lm: warning: a training step needs ~6.0 GB, more than half of the 10 GB available");
    cr_assert(warn, "%s", e);
    char *refuse = strstr(warn, "train_lm: a training step needs ~6.0 GB of memory");
    cr_assert(refuse, "%s", e);
    cr_assert(strstr(refuse, "only 5.0 GB is available (test): lower --seq (128) or --batch (16)"), "%s", e);
    cr_assert(strstr(refuse, "lower --dim (128) or --layers (4): the parameters and Adam's state alone need 8.0 GB"),
              "%s", e);
    free(e);
}

/* The schemes the memory advice calls fused come from the registry: a bias of the
 * distance alone or separable, or none; not XL, rel, FIRE or CoPE. */
Test(example_train_lm, fused_schemes_named_from_the_registry)
{
    char buf[512], padded[520];
    snprintf(padded, sizeof padded, " %s ", lm_fused_names(buf, sizeof buf));
    const char *fused[] = {"none", "sinusoidal", "rotary", "alibi", "dpb", "t5", "kerple", "sandwich", "fox", "local",
                           "xl", "rel", "cope"};
    const char *quadratic[] = {"fire"};
    char w[32];
    for (size_t i = 0; i < sizeof fused / sizeof fused[0]; i++) {
        snprintf(w, sizeof w, " %s ", fused[i]);
        cr_assert(strstr(padded, w), "%s missing from \"%s\"", fused[i], buf);
    }
    for (size_t i = 0; i < sizeof quadratic / sizeof quadratic[0]; i++) {
        snprintf(w, sizeof w, " %s ", quadratic[i]);
        cr_assert(!strstr(padded, w), "%s listed as fused in \"%s\"", quadratic[i], buf);
    }
}

Test(example_train_lm, memory_estimate_counts_every_parameter)
{
    for (int i = 0; i < LM_N_SCHEMES; i++)
        for (int glu = 0; glu < 2; glu++) {
            pg_lm_config c = pg_lm_defaults(11, 24, 3, 2);
            cr_assert_eq(lm_config_pos(&c, LM_SCHEMES[i], 4), 0);
            c.max_len = 17;
            c.ff_kind = glu ? PG_FF_GLU : PG_FF_MLP;
            c.bias = !glu;
            c.norm = glu ? PG_NORM_RMS : PG_NORM_LAYER;
            lm_mem m;
            cr_assert_eq(lm_step_memory(&c, LM_SCHEMES[i], 2, 17, 1000, 2, &m), 0, "%s", pg_last_error());
            pg_lm *lm = pg_lm_new(&c);
            cr_assert_not_null(lm, "%s", pg_last_error());
            cr_assert_eq(m.params, pg_module_num_elements(&lm->base), "--pos %s%s: counted %lld, the model has %lld",
                         LM_SCHEMES[i], glu ? " (GLU, RMSNorm, no biases)" : "", (long long)m.params,
                         (long long)pg_module_num_elements(&lm->base));
            /* quadratic: a bias that is neither a function of distance alone, separable, relative keys nor
             * computed with its attention (fire) */
            const lm_pos_choice *ch = lm_pos_find(LM_SCHEMES[i]);
            const pg_posmod_kind_info *k = ch->kind ? pg_posmod_info(ch->kind) : NULL;
            bool qk_bias = k && (k->hooks & PG_POS_HOOK_BIAS) &&
                           !(k->hooks & (PG_POS_HOOK_DIST | PG_POS_HOOK_SEP | PG_POS_HOOK_REL | PG_POS_HOOK_ATTEND));
            cr_assert_eq(m.quadratic, qk_bias, "--pos %s: quadratic %d", LM_SCHEMES[i], m.quadratic);
            cr_assert_eq(m.scores_bytes > 0, qk_bias);
            cr_assert(m.total > m.act_bytes + m.param_bytes);
            cr_assert_eq(m.load_bytes, (double)m.params * 32 + m.base_bytes); /* model, Adam, file, Adam copy */
            pg_module_free(&lm->base);
        }
}

/* The activations' estimate against the graph of a real step (pg_arena_used after forward,
 * backward and an AdamW step): within 2.5% for every scheme (the fit's regime: 512 tokens in 2
 * sequences, head width 16) on 1 and 2 threads (the fit's), and never under for FIRE, counted
 * with its (L, L) pairs though it runs over distances below its threshold. */
Test(example_train_lm, memory_estimate_matches_the_step_graph)
{
    int saved = pg_num_threads();
    for (int i = 0; i < 2 * LM_N_SCHEMES; i++) {
        cr_assert_eq(pg_set_num_threads(1 + i / LM_N_SCHEMES), 0);
        const char *pos = LM_SCHEMES[i % LM_N_SCHEMES];
        lm_model_flags f = {.pos = pos, .layers = 1, .dim = 64, .heads = 4, .seq = 256};
        pg_lm_config c;
        pg_rotary_opts rope;
        cr_assert_eq(lm_model_config(&f, "test", &c, &rope), 0, "%s", pos);
        c.vocab = 65;
        const int64_t B = 2, L = f.seq;
        lm_mem m;
        cr_assert_eq(lm_step_memory(&c, pos, B, L, 0, pg_num_threads(), &m), 0, "%s", pg_last_error());
        pg_lm *lm = pg_lm_new(&c);
        cr_assert_not_null(lm, "%s: %s", pos, pg_last_error());
        pg_tensor_list ps = pg_module_parameters(&lm->base);
        pg_optim_hparams h = pg_adamw_hparams(1e-3);
        pg_optim *opt = pg_optim_new(PG_ADAMW, &h);
        cr_assert_eq(pg_optim_add_decay_groups(opt, &ps, pg_no_decay_default, NULL, 1e-3, 0.1), 0);
        pg_graph *g = pg_graph_new();
        pg_tensor *ids = pg_empty(g, PG_I64, PG_SHAPE(B, L)), *targets = pg_empty(g, PG_I64, PG_SHAPE(B, L));
        for (int64_t t = 0; t < B * L; t++)
            pg_i64(ids)[t] = (t * 7) % c.vocab, pg_i64(targets)[t] = (t * 5 + 3) % c.vocab;
        pg_tensor *loss = pg_lm_loss(g, lm, ids, targets, NULL);
        cr_assert_not_null(loss, "%s: %s", pos, pg_graph_error(g));
        cr_assert_eq(pg_backward(g, loss), 0, "%s: %s", pos, pg_graph_error(g));
        cr_assert_eq(pg_optim_step(opt), 0);
        double used = (double)pg_arena_used(pg_graph_arena(g)), ratio = m.act_bytes / used;
        if (!strcmp(pos, "fire"))
            cr_assert(ratio >= 1, "--pos fire: estimated %.0f bytes, the step's graph %.0f", m.act_bytes, used);
        else
            cr_assert(ratio > 0.975 && ratio < 1.025, "--pos %s, %d threads: estimated %.0f bytes, the step's graph "
                      "%.0f (%.3f)", pos, pg_num_threads(), m.act_bytes, used, ratio);
        pg_graph_free(g);
        pg_optim_free(opt);
        pg_tensor_list_free(&ps);
        pg_module_free(&lm->base);
    }
    pg_set_num_threads(saved);
}

/* ---- issue 12: the --pos choices come from the registry -------------------------------------- */
Test(example_train_lm, pos_choices_are_the_registry_and_the_extras)
{
    int want = 0;
    const pg_posmod_kind_info *k;
    for (int i = 0; (k = pg_posmod_info_at(i)); i++) {
        const lm_pos_choice *c = lm_pos_find(k->kind);
        if (k->props & PG_POS_VISION) {
            cr_assert_null(c, "%s is a vision kind", k->kind);
            continue;
        }
        want++;
        cr_assert_not_null(c, "registered kind %s is not a --pos choice", k->kind);
        cr_assert_str_eq(c->kind, k->kind);
        cr_assert_eq(lm_scheme_is_input(k->kind), k->role == PG_POS_ROLE_INPUT, "%s", k->kind);
    }
    for (int e = 0; e < LM_N_POS_EXTRAS; e++) {
        const lm_pos_choice *c = lm_pos_find(LM_POS_EXTRAS[e].name);
        cr_assert_not_null(c, "extra %s", LM_POS_EXTRAS[e].name);
        cr_assert_eq(c->opts, LM_POS_EXTRAS[e].opts, "%s: the extra's options win", LM_POS_EXTRAS[e].name);
        want += pg_posmod_lookup(LM_POS_EXTRAS[e].name) ? 0 : 1;
        cr_assert(!LM_POS_EXTRAS[e].kind || pg_posmod_info(LM_POS_EXTRAS[e].kind), "%s builds an unknown kind",
                  LM_POS_EXTRAS[e].name);
    }
    cr_assert_eq(LM_N_SCHEMES, want);
    char names[1024];
    lm_pos_names(names, sizeof names);
    for (int i = 0; i < LM_N_SCHEMES; i++) {
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(LM_SCHEMES[i], LM_SCHEMES[j], "listed twice");
        cr_assert(strstr(names, LM_SCHEMES[i]), "%s not in '%s'", LM_SCHEMES[i], names);
    }
    cr_assert_str_eq(LM_SCHEMES[0], "none", "no scheme comes first");
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 1);
    cr_assert_eq(lm_config_pos(&c, "no_such_scheme", 4), -1);
    cr_assert_eq(c.n_input_pos + c.n_layer_pos, 0);
}

/* ---- item 13: --data naming a directory ----------------------------------------------------- */
Test(example_train_lm, data_directory_is_named_as_such, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, "--data", dir, "--out", out, NULL), 1);
    cr_assert(strstr(e, "is a directory"), "%s", e);
    cr_assert(strstr(e, "text file"), "%s", e);
    cr_assert(!strstr(e, "too short"), "%s", e);
    free(o);
    free(e);
    ex_remove_tree(dir);
}

/* ---- item 16: the corpus is found from any directory ---------------------------------------- */
Test(example_train_lm, corpus_is_found_from_another_directory, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    cr_assert_not_null(freopen("/dev/null", "w", stderr));
    cr_assert_eq(chdir(dir), 0);
    lm_corpus c;
    cr_assert_eq(lm_corpus_load(&c, "examples/data/tinyshakespeare.txt", 200), 0);
    cr_assert_eq(c.vocab, 65);
    cr_assert_gt(c.n, 1000000);
    lm_corpus_free(&c);
    ex_remove_tree(dir);
}

Test(example_train_lm, corpus_not_found_lists_every_place_looked, .init = quiet)
{
    char dir[64], out[128], data[128], errpath[128];
    make_workdir(dir, out, data);
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    cr_assert_eq(chdir(dir), 0);
    cr_assert_not_null(freopen(errpath, "w", stderr));
    setenv("PG_DATA_DIR", "/nonexistent/pg_data", 1);
    lm_corpus c;
    cr_assert_eq(lm_corpus_load(&c, "examples/data/no_such_corpus.txt", 200), -1);
    fflush(stderr);
    char *e = slurp(errpath), exe[4096], want[4200];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    cr_assert_gt(n, 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(want, sizeof want, "%s/examples/data/no_such_corpus.txt", exe); /* next to the program */
    cr_assert(strstr(e, want), "wanted '%s' in: %s", want, e);
    cr_assert(strstr(e, "/nonexistent/pg_data/no_such_corpus.txt"), "%s", e); /* $PG_DATA_DIR */
    cr_assert(strstr(e, dir), "%s", e);                                        /* the current directory */
    cr_assert(strstr(e, "--data"), "%s", e);
    free(e);
    ex_remove_tree(dir);
}

Test(example_train_lm, out_naming_a_file_is_refused_before_training, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    char *o, *e;
    cr_assert_eq(run_captured(&o, &e, TINY_FLAGS, "--data", data, "--out", data, "--steps", "4", NULL), 1);
    cr_assert(strstr(e, "a file of that name exists (--out names a directory)"), "%s", e);
    cr_assert(!strstr(o, "step 1/"), "%s", o);
    free(o);
    free(e);
    ex_remove_tree(dir);
}
