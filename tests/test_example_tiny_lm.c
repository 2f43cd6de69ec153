/* Smoke test of examples/tiny_lm.c: a few steps lower the loss, the checkpoint
 * goes where --out says (and the program says so), the sample is printable
 * text; --help and bad command lines. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/tiny_lm.c"

#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "example_run.h"

/* The losses of the "step N  loss X" lines of out: the first and the last. */
static void first_last_loss(const char *out, double *first, double *last)
{
    *first = *last = NAN;
    for (const char *p = strstr(out, "step "); p; p = strstr(p + 1, "\nstep ")) {
        int step;
        double loss;
        if (sscanf(p + (*p == '\n'), "step %d loss %lf", &step, &loss) == 2) {
            if (isnan(*first))
                *first = loss;
            *last = loss;
        }
    }
}

/* Every byte of s is printable ASCII or a newline. */
static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s != '\n' && (*s < 32 || *s > 126))
            return false;
    return true;
}

Test(example_tiny_lm, learns_saves_where_told_and_samples_text)
{
    char dir[] = "/tmp/pg_tiny_lm_XXXXXX", old[4096], path[128];
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_not_null(getcwd(old, sizeof old));
    cr_assert_eq(chdir(dir), 0); /* anything written to the working directory would stay in dir */
    snprintf(path, sizeof path, "%s/run.safetensors", dir);
    ex_run r;
    EX_RUN(&r, tiny_lm_main, "tiny_lm", "--steps", "12", "--sample", "24", "--threads", "1", "--out", path);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_empty(r.err);
    double first, last;
    first_last_loss(r.out, &first, &last);
    cr_assert(strstr(r.out, "step    1  loss ") && strstr(r.out, "step   12  loss "), "%s", r.out);
    cr_assert_lt(last, first - 0.5, "loss %g -> %g", first, last);
    char said[256];
    snprintf(said, sizeof said, "saved the training checkpoint to %s", path);
    cr_assert(strstr(r.out, said), "the program names what it wrote and where:\n%s", r.out);
    cr_assert(strstr(r.out, "sample: to be"), "%s", r.out);
    cr_assert(printable(r.out), "%s", r.out);
    /* the checkpoint loads back into the same model */
    pg_lm_config cfg = tiny_lm_config(1);
    pg_lm *lm = pg_lm_new(&cfg);
    cr_assert_not_null(lm);
    cr_assert_eq(pg_checkpoint_load(path, &lm->base, NULL, NULL, NULL), 0, "%s", pg_last_error());
    pg_module_free(&lm->base);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(chdir(old), 0);
    cr_assert_eq(rmdir(dir), 0, "only the checkpoint was written");
}

/* An untrained model samples any of its 256 byte ids: the sample still prints
 * as text (\xNN for the others), and --out '' writes nothing. */
Test(example_tiny_lm, sample_is_text_and_empty_out_writes_nothing)
{
    char dir[] = "/tmp/pg_tiny_lm_XXXXXX", old[4096];
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_not_null(getcwd(old, sizeof old));
    cr_assert_eq(chdir(dir), 0);
    ex_run r;
    EX_RUN(&r, tiny_lm_main, "tiny_lm", "--steps", "1", "--sample", "200", "--threads", "1", "--out", "",
           "--prompt", "a\tb");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(printable(r.out), "%s", r.out);
    cr_assert(strstr(r.out, "sample: a\\x09b"), "the prompt's tab is escaped too:\n%s", r.out);
    cr_assert(strstr(r.out, "\\x"), "200 bytes of an untrained model include non-text ones:\n%s", r.out);
    cr_assert(strstr(r.out, "no checkpoint written (--out '')"), "%s", r.out);
    cr_assert_eq(chdir(old), 0);
    cr_assert_eq(rmdir(dir), 0, "nothing written");
}

/* --help used to train 0 steps and print raw bytes; now the usage on stdout. */
Test(example_tiny_lm, help_and_bad_command_lines)
{
    ex_run r;
    EX_RUN(&r, tiny_lm_main, "tiny_lm", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: tiny_lm [flags]") && strstr(r.out, "--steps N") && strstr(r.out, "--out S"),
              "%s", r.out);
    cr_assert_str_empty(r.err);
    const ex_bad_arg cases[] = {
        {"300", NULL, "tiny_lm: unexpected argument '300'"},
        {"--bogus", NULL, "tiny_lm: unknown flag '--bogus'"},
        {"--steps", NULL, "tiny_lm: --steps needs a value: an integer in 1..1000000"},
        {"--steps", "ten", "tiny_lm: --steps wants an integer in 1..1000000, got 'ten'"},
        {"--steps", "0", "tiny_lm: --steps wants an integer in 1..1000000, got '0'"},
        {"--sample", "-1", "tiny_lm: --sample wants an integer in 0..100000, got '-1'"},
        {"--threads", "100000", "tiny_lm: --threads wants an integer in 0..64, got '100000'"},
        {"--prompt", "", "tiny_lm: --prompt is empty: the sample needs at least one character to start from"},
    };
    EX_ASSERT_BAD_ARGS(tiny_lm_main, "tiny_lm", cases);
    cr_assert_eq(setenv("PG_NUM_THREADS", "1000", 1), 0);
    EX_RUN(&r, tiny_lm_main, "tiny_lm", "--out", "");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "tiny_lm: pg_threads_init: PG_NUM_THREADS is '1000', not an integer in 1..64");
    unsetenv("PG_NUM_THREADS");
}
