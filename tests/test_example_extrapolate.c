/* Smoke test of examples/extrapolate.c: three schemes trained a few steps on a
 * tiny corpus, evaluated at the training length and twice it; the learned table
 * reports n/a past its rows; the markdown file is written; bad flags fail. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/extrapolate.c"

#include "testutil.h"

static const char CORPUS[] = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor "
                             "jugs. how vexingly quick daft zebras jump! ";

Test(example_extrapolate, trains_each_scheme_and_tabulates)
{
    char dir[64] = "/tmp/pg_extrapolate_XXXXXX", data[128], md[128];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/corpus.txt", dir);
    snprintf(md, sizeof md, "%s/table.md", dir);
    FILE *f = fopen(data, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 10; i++)
        fputs(CORPUS, f);
    fclose(f);

    extrapolate_opts o = extrapolate_defaults();
    o.schemes = "none,alibi,learned";
    o.eval_lens = "8,16";
    o.data = data;
    o.md = md;
    o.train_len = 8;
    o.layers = 1;
    o.dim = 16;
    o.heads = 2;
    o.batch = 4;
    o.steps = 30;
    o.eval_tokens = 64;
    o.lr = 1e-2;
    o.quiet = true;
    extrapolate_result r;
    cr_assert_eq(extrapolate_run(&o, &r), 0);
    cr_assert_eq(r.n_schemes, 3);
    cr_assert_eq(r.n_lens, 2);
    for (int s = 0; s < 3; s++) {
        cr_assert(r.last_loss[s] < r.first_loss[s] - 0.5, "%s: %g -> %g", r.schemes[s], r.first_loss[s],
                  r.last_loss[s]);
        cr_assert(isfinite(r.loss[s][0]), "%s at 8", r.schemes[s]);
    }
    cr_assert(isfinite(r.loss[1][1]), "alibi at 16");
    cr_assert(isnan(r.loss[2][1]), "learned has no rows past 8");
    char line[256] = {0};
    f = fopen(md, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    cr_assert(strstr(line, "| scheme |") == line, "%s", line);
    unlink(md);
    unlink(data);
    rmdir(dir);
}

Test(example_extrapolate, bad_flags_fail)
{
    cr_assert_not_null(freopen("/dev/null", "w", stdout));
    cr_assert_not_null(freopen("/dev/null", "w", stderr));
    char *bogus[] = {"extrapolate", "--bogus"};
    cr_assert_neq(extrapolate_main(2, bogus), 0);
    char *lens[] = {"extrapolate", "--eval-lens", "64,,128"};
    cr_assert_neq(extrapolate_main(3, lens), 0);
    char *scheme[] = {"extrapolate", "--schemes", "nope", "--steps", "1", "--data", "/nonexistent"};
    cr_assert_neq(extrapolate_main(7, scheme), 0);
    char *help[] = {"extrapolate", "--help"};
    cr_assert_eq(extrapolate_main(2, help), 0);
}
