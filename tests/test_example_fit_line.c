/* Smoke test of examples/fit_line.c: gradient descent through autograd finds
 * the least-squares line of noisy points from y = a x + b, close to the true
 * a and b; main reports both; --help and bad command lines. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/fit_line.c"

#include "testutil.h"

#include "example_run.h"

Test(example_fit_line, learns_the_line)
{
    fit_line_opts o = fit_line_defaults();
    o.a = -1.5;
    o.b = 0.25;
    o.noise = 0.05;
    o.n = 64;
    fit_line_result r;
    cr_assert_eq(fit_line_run(&o, &r, false), 0);
    /* gradient descent converges to the closed-form least-squares line */
    cr_assert_float_eq(r.a, r.ls_a, 1e-9, "learned a %.12g, least squares %.12g", r.a, r.ls_a);
    cr_assert_float_eq(r.b, r.ls_b, 1e-9, "learned b %.12g, least squares %.12g", r.b, r.ls_b);
    /* which, with 64 points and noise 0.05, is within a few hundredths of the truth */
    cr_assert_float_eq(r.a, -1.5, 0.05, "a %g", r.a);
    cr_assert_float_eq(r.b, 0.25, 0.05, "b %g", r.b);
    /* from the line 0 x + 0 the loss is about mean((a x + b)^2) = a^2 / 3 + b^2 = 0.81 */
    cr_assert(r.first_loss > 0.6 && r.first_loss < 1.0, "starts from the line 0 x + 0: loss %g", r.first_loss);
    cr_assert_lt(r.last_loss, 0.005, "ends at about noise^2 = 0.0025: %g", r.last_loss);
    /* without noise the line is recovered exactly */
    o.noise = 0;
    cr_assert_eq(fit_line_run(&o, &r, false), 0);
    cr_assert_float_eq(r.a, -1.5, 1e-9, "a %.12g", r.a);
    cr_assert_float_eq(r.b, 0.25, 1e-9, "b %.12g", r.b);
}

Test(example_fit_line, main_reports_learned_against_true)
{
    ex_run r;
    EX_RUN(&r, fit_line_main, "fit_line", "--a", "3", "--b", "-2", "--noise", "0.1", "--n", "50", "--seed", "4");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_empty(r.err);
    cr_assert(strstr(r.out, "fit_line: y = 3 x - 2 + noise (sd 0.1) at 50 points"), "%s", r.out);
    cr_assert(strstr(r.out, "step    0  loss "), "%s", r.out);
    double a, b, ta, tb;
    const char *learned = strstr(r.out, "learned:"), *truth = strstr(r.out, "true:");
    cr_assert(learned && truth && strstr(r.out, "least squares:"), "%s", r.out);
    cr_assert_eq(sscanf(learned, "learned: a = %lf, b = %lf", &a, &b), 2, "%s", learned);
    cr_assert_eq(sscanf(truth, "true: a = %lf, b = %lf", &ta, &tb), 2, "%s", truth);
    cr_assert(ta == 3 && tb == -2);
    cr_assert_float_eq(a, 3, 0.1);
    cr_assert_float_eq(b, -2, 0.1);
}

Test(example_fit_line, help_and_bad_command_lines)
{
    ex_run r;
    EX_RUN(&r, fit_line_main, "fit_line", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: fit_line [flags]") && strstr(r.out, "--noise X"), "%s", r.out);
    cr_assert_str_empty(r.err);
    const ex_bad_arg cases[] = {
        {"--bogus", NULL, "fit_line: unknown flag '--bogus'"},
        {"--steps", NULL, "fit_line: --steps needs a value: an integer in 1..10000000"},
        {"--a", "two", "fit_line: --a wants a number in -1e+06..1e+06, got 'two'"},
        {"--n", "1", "fit_line: --n wants an integer in 2..10000000, got '1'"},
        {"--noise", "-0.1", "fit_line: --noise wants a number in 0..1e+06, got '-0.1'"},
        {"--lr", "0", "fit_line: --lr wants a number > 0, got '0'"},
        {"--seed", "x", "fit_line: --seed wants an integer in 0..18446744073709551615, got 'x'"},
    };
    EX_ASSERT_BAD_ARGS(fit_line_main, "fit_line", cases);
    /* a learning rate too large for the data diverges: a failure (1), said in one line */
    EX_RUN(&r, fit_line_main, "fit_line", "--lr", "5");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "fit_line: the loss diverged (") && strstr(r.err, "--lr 5 is too large"), "%s",
              r.err);
    cr_assert_eq(ex_lines(r.err), 1, "%s", r.err);
    cr_assert_eq(setenv("PG_NUM_THREADS", "1000", 1), 0);
    EX_RUN(&r, fit_line_main, "fit_line");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "fit_line: pg_threads_init: PG_NUM_THREADS is '1000', not an integer in 1..64");
    unsetenv("PG_NUM_THREADS");
}
