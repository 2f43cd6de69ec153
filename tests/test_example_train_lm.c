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

static const char CORPUS[] = "to be, or not to be, that is the question: whether 'tis nobler in the mind to "
                             "suffer the slings and arrows of outrageous fortune, or to take arms against a sea "
                             "of troubles, and by opposing end them. ";

/* A temp dir holding corpus.txt (CORPUS repeated) and the path of out/ in it. */
static void make_workdir(char dir[64], char out[128], char data[128])
{
    strcpy(dir, "/tmp/pg_train_lm_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(out, 128, "%s/out", dir);
    snprintf(data, 128, "%s/corpus.txt", dir);
    FILE *f = fopen(data, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 12; i++)
        fputs(CORPUS, f);
    fclose(f);
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            remove_tree(path);
    }
    closedir(d);
    rmdir(dir);
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
 * stdout and stderr going to files; *out and *err get their text (free them). */
static int run_captured(char **out, char **err, ...)
{
    char *argv[64] = {"train_lm"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 63;)
        argv[argc++] = a;
    va_end(ap);
    char po[64], pe[64];
    snprintf(po, sizeof po, "/tmp/pg_train_lm_out_%d", (int)getpid());
    snprintf(pe, sizeof pe, "/tmp/pg_train_lm_err_%d", (int)getpid());
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(so >= 0 && se >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    int rc = train_lm_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    *out = slurp(po);
    *err = slurp(pe);
    remove(po);
    remove(pe);
    return rc;
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
    remove_tree(dir);
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
    remove_tree(dir);
}

Test(example_train_lm, local_runs_with_its_band, .init = quiet)
{
    char dir[64], out[128], data[128];
    make_workdir(dir, out, data);
    train_lm_opts o = tiny_opts(out, data, "local");
    o.steps = 4;
    o.eval_every = 4;
    cr_assert_eq(train_lm_run(&o, NULL), 0);
    remove_tree(dir);
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
    remove_tree(dir);
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
    remove_tree(dir);
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
    remove_tree(dir);
}
