/* Smoke test of examples/gradcheck_custom_op.c: the correct Gaussian-distance
 * bias op passes pg_gradcheck, the one with the wrong backward is caught on
 * its w input. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/gradcheck_custom_op.c"

#include "testutil.h"
#include <criterion/redirect.h>

#include "example_png.h"
#include "example_run.h"

Test(example_gradcheck_custom_op, good_passes_bad_is_caught)
{
    gradcheck_custom_op_result r;
    cr_assert_eq(gradcheck_custom_op_run(3, 0, NULL, &r), 0);
    cr_assert(r.good.ok, "%s", r.good.message);
    cr_assert(r.good.f32_ok);
    cr_assert_eq(r.good.checked, 2 * 5 * 5 + 2 + 2);
    cr_assert(!r.bad.ok);
    cr_assert_eq(r.bad.worst_input, 2, "the wrong dL/dw is what is caught");
    cr_assert(strstr(r.bad.message, "gradient mismatch at input 2"), "%s", r.bad.message);
}

/* The figure's points: the correct backward agrees with central differences
 * everywhere; the wrong one on s and a, not on w. */
Test(example_gradcheck_custom_op, figure_points_and_file)
{
    pg_rng rng = pg_rng_init(3);
    pg_tensor *in[3] = {param_f64(&rng, PG_SHAPE(2, 5, 5), -1, 1), param_f64(&rng, PG_SHAPE(2), 0.2, 1.0),
                        param_f64(&rng, PG_SHAPE(2), 1.0, 3.0)};
    double ana[N_GRADS], num[N_GRADS];
    gauss_ctx good = {0}, bad = {1};
    cr_assert_eq(gradient_pairs(in, &good, ana, num), 0);
    for (int i = 0; i < N_GRADS; i++)
        cr_assert(fabs(ana[i] - num[i]) < 1e-7, "element %d: %g against %g", i, ana[i], num[i]);
    cr_assert_eq(gradient_pairs(in, &bad, ana, num), 0);
    for (int i = 0; i < N_GRADS; i++) /* w: the last two */
        cr_assert_eq(fabs(ana[i] - num[i]) < 1e-7, i < N_GRADS - 2, "element %d: %g against %g", i, ana[i], num[i]);
    for (int k = 0; k < 3; k++)
        cr_assert_null(in[k]->grad, "the inputs' grads are left as they were");
    char path[] = "/tmp/pg_gradcheck_plot_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(draw_gradients(path, in), 0, "%s", pg_last_error());
    ex_png p = ex_assert_png(path, 2 * 560, 40 + 480);
    cr_assert(p.width == 2 * 560 && p.height == 40 + 480, "%lld x %lld", (long long)p.width, (long long)p.height);
    unlink(path);
    free_all(3, in);
}

Test(example_gradcheck_custom_op, main_exit_codes)
{
    char *ok_args[] = {"gradcheck_custom_op", "--seed", "5", NULL};
    char *help[] = {"gradcheck_custom_op", "--help", NULL};
    char *bad[] = {"gradcheck_custom_op", "--nope", NULL};
    cr_redirect_stdout();
    cr_redirect_stderr(); /* the bad flag's message */
    cr_assert_eq(gradcheck_custom_op_main(3, ok_args), 0);
    cr_assert_eq(gradcheck_custom_op_main(2, help), 0);
    cr_assert_eq(gradcheck_custom_op_main(2, bad), 2);
}

/* --help on stdout, status 0; what it does not understand (an unknown flag, a
 * missing or non-numeric --seed, which used to run with seed 0): one line on
 * stderr, status 2, nothing checked. */
Test(example_gradcheck_custom_op, help_and_bad_command_lines)
{
    ex_run r;
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: gradcheck_custom_op [flags]") && strstr(r.out, "--seed N"), "%s", r.out);
    cr_assert_str_empty(r.err);
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--seed", "x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "gradcheck_custom_op: --seed wants an integer in 0..18446744073709551615, got 'x'");
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--seed", "12abc");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "got '12abc'");
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--seed");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "gradcheck_custom_op: --seed needs a value");
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--nope");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "gradcheck_custom_op: unknown flag '--nope'");
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--seed=9");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "verdict: the correct op passes"), "%s", r.out);
    cr_assert(setenv("PG_NUM_THREADS", "1000", 1) == 0);
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "gradcheck_custom_op: pg_threads_init: PG_NUM_THREADS is '1000', not an integer in 1..64");
    unsetenv("PG_NUM_THREADS");
}
