/* train_lm's sampling flags (--temperature, --top-k, --top-p, --sample-seed):
 * the sample is printed after its header, seeded, greedy at temperature 0,
 * and bad values are refused. Tiny models on a tiny corpus;
 * test_example_train_lm.c has the rest of train_lm. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/train_lm.c"

#include "testutil.h"
#include "example_run.h"

#define SAMPLE_FLAGS "--layers", "1", "--dim", "16", "--heads", "2", "--seq", "16", "--batch", "4", "--eval-windows", \
                     "4", "--steps", "2", "--figures", "0", "--prompt", "to be", "--sample", "40"

/* the line after "---- sample (...) ----\n" in r's stdout (a static copy) */
static const char *sample_line(const ex_run *r, const char *header)
{
    static char line[256];
    const char *s = strstr(r->out, header);
    cr_assert_not_null(s, "no \"%s\" in: %s (stderr %s)", header, r->out, r->err);
    s += strlen(header);
    size_t n = strcspn(s, "\n");
    cr_assert_lt(n, sizeof line);
    memcpy(line, s, n);
    line[n] = '\0';
    return line;
}

static void clean(const char *dir, const char *out)
{
    const char *files[] = {"log.csv", "checkpoint.safetensors", "model.safetensors"};
    char path[256];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", out, files[i]);
        unlink(path);
    }
    rmdir(out);
    snprintf(path, sizeof path, "%s/corpus.txt", dir);
    unlink(path);
    rmdir(dir);
}

Test(example_train_lm_sample, seeded_greedy_and_checked)
{
    char dir[64], out[128], data[128];
    ex_corpus_workdir(dir, "/tmp/pg_train_lm_sample_XXXXXX", "to be, or not to be, that is the question. ", out,
                      data);
    ex_run *r = malloc(sizeof *r);
    cr_assert_not_null(r);
    const char *h = "---- sample (temperature 0.8, top-k 5, top-p 0.9) ----\n";
    const char *h0 = "---- sample (temperature 0, top-k 0, top-p 1) ----\n";
    char a[256], b[256];
    EX_RUN(r, train_lm_main, "train_lm", SAMPLE_FLAGS, "--data", data, "--out", out, "--top-k", "5", "--top-p", "0.9",
           "--sample-seed", "5");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    snprintf(a, sizeof a, "%s", sample_line(r, h));
    cr_assert_eq(strlen(a), 45, "the prompt and 40 characters: \"%s\"", a);
    cr_assert_eq(strncmp(a, "to be", 5), 0);
    EX_RUN(r, train_lm_main, "train_lm", SAMPLE_FLAGS, "--data", data, "--out", out, "--top-k", "5", "--top-p", "0.9",
           "--sample-seed", "5");
    cr_assert_str_eq(sample_line(r, h), a, "the same seed, the same sample");
    EX_RUN(r, train_lm_main, "train_lm", SAMPLE_FLAGS, "--data", data, "--out", out, "--top-k", "5", "--top-p", "0.9",
           "--sample-seed", "6");
    cr_assert_str_neq(sample_line(r, h), a, "another seed, another sample");
    EX_RUN(r, train_lm_main, "train_lm", SAMPLE_FLAGS, "--data", data, "--out", out, "--temperature", "0",
           "--sample-seed", "1");
    snprintf(b, sizeof b, "%s", sample_line(r, h0));
    EX_RUN(r, train_lm_main, "train_lm", SAMPLE_FLAGS, "--data", data, "--out", out, "--temperature", "0",
           "--sample-seed", "2");
    cr_assert_str_eq(sample_line(r, h0), b, "greedy ignores the seed");
    const char *bad[][2] = {{"--top-p", "0"}, {"--top-p", "1.5"}, {"--temperature", "-1"}, {"--top-k", "-1"}};
    for (int i = 0; i < 4; i++) {
        EX_RUN(r, train_lm_main, "train_lm", SAMPLE_FLAGS, "--data", data, "--out", out, (char *)bad[i][0],
               (char *)bad[i][1]);
        cr_assert_neq(r->rc, 0, "%s %s", bad[i][0], bad[i][1]);
        cr_assert(strstr(r->err, "--temperature must be finite and >= 0, --top-k >= 0 and --top-p in (0, 1]"), "%s",
                  r->err);
    }
    free(r);
    clean(dir, out);
}
