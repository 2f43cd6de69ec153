/* examples/gradcheck_custom_op.c, the walk-through: the correct Gaussian-distance
 * bias op passes pg_gradcheck, the one with the wrong backward is caught on its
 * w input, |x| at 0 is a kink (a slope outside [-1, 1] there fails), a block
 * passes in fast mode; --eps-plot's errors behave as docs/teaching.md says. */
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

/* steps 3 and 4 of the walk-through */
Test(example_gradcheck_custom_op, kink_and_fast_block_steps)
{
    gradcheck_custom_op_result r;
    cr_assert_eq(gradcheck_custom_op_run(3, 0, NULL, &r), 0);
    cr_assert(r.kink.ok, "%s", r.kink.message);
    cr_assert_eq(r.kink.kinks, 1);
    cr_assert(r.kink.kink_input == 0 && r.kink.kink_index == 1, "the kink is x[1] = 0");
    cr_assert_eq(r.kink.checked, 3, "the other three elements are checked");
    cr_assert(!r.kink_bad.ok);
    cr_assert(strstr(r.kink_bad.message, "gradient mismatch at input 0 element 1"), "%s", r.kink_bad.message);
    cr_assert(r.block.ok, "%s", r.block.message);
    cr_assert_eq(r.block_tensors, 17, "the input and 16 parameters");
    cr_assert_eq(r.block.checked, r.block_tensors, "one direction per tensor");
    cr_assert_gt(r.block_elements, 10000);
    cr_assert(r.block_ms > 0 && r.forward_ms > 0);
    cr_assert_lt(r.block_ms, 100 * r.forward_ms * r.block_tensors, "fast mode: about 2 forwards a tensor");
}

/* The finite difference's error against its step: O(eps^2) truncation at large eps, rounding ~u/eps at small
 * eps, the float64 optimum near u^(1/3), float32 far worse, Richardson better (docs/teaching.md). */
Test(example_gradcheck_custom_op, eps_study_behaves)
{
    eps_study s;
    cr_assert_eq(eps_study_run(&s), 0);
    double c64 = s.best_err[EPS_F64_CENTRAL], c32 = s.best_err[EPS_F32_CENTRAL];
    cr_assert_lt(c64, 1e-9, "float64 central: best %g", c64);
    cr_assert(s.best_eps[EPS_F64_CENTRAL] >= 1e-7 && s.best_eps[EPS_F64_CENTRAL] <= 1e-3, "best eps %g",
              s.best_eps[EPS_F64_CENTRAL]);
    cr_assert_gt(c32, 1e4 * c64, "float32 %g against float64 %g", c32, c64);
    cr_assert(s.best_eps[EPS_F32_CENTRAL] >= 1e-4, "float32's best step is larger: %g", s.best_eps[EPS_F32_CENTRAL]);
    cr_assert_lt(s.best_err[EPS_F64_RICHARDSON], c64 / 10, "Richardson %g", s.best_err[EPS_F64_RICHARDSON]);
    cr_assert_gt(s.best_eps[EPS_F64_RICHARDSON], s.best_eps[EPS_F64_CENTRAL], "Richardson's best step is larger");
    /* k = 8: eps 1e-2, k = 12: 1e-3: truncation, central O(eps^2) -> x100 */
    double ratio = s.err[EPS_F64_CENTRAL][8] / s.err[EPS_F64_CENTRAL][12];
    cr_assert(ratio > 50 && ratio < 200, "central, 1e-2 against 1e-3: ratio %g, not ~100", ratio);
    /* k = 4: 0.1, k = 8: 1e-2: Richardson O(eps^4) -> x10^4 */
    double r4 = s.err[EPS_F64_RICHARDSON][4] / s.err[EPS_F64_RICHARDSON][8];
    cr_assert(r4 > 2e3 && r4 < 5e4, "Richardson, 0.1 against 1e-2: ratio %g, not ~1e4", r4);
    /* k = 48: 1e-12: rounding dominates, ~u |L| / eps */
    cr_assert_gt(s.err[EPS_F64_CENTRAL][48], 1e3 * c64, "at 1e-12: %g", s.err[EPS_F64_CENTRAL][48]);
    cr_assert_gt(s.err[EPS_F32_CENTRAL][24], 1e-3, "float32 at 1e-6: %g", s.err[EPS_F32_CENTRAL][24]);
}

Test(example_gradcheck_custom_op, eps_plot_flag)
{
    char path[] = "/tmp/pg_gradcheck_eps_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    ex_run r;
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--eps-plot", path);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "float64 central") && strstr(r.out, "step 4. Fast mode on a whole transformer block") &&
                  strstr(r.out, "step 3. A kink is reported as a kink"),
              "%s", r.out);
    ex_png p = ex_assert_png(path, 760, 520);
    cr_assert(p.width == 760 && p.height == 520);
    unlink(path);
    EX_RUN(&r, gradcheck_custom_op_main, "gradcheck_custom_op", "--eps-plot", "/nonexistent/dir/x.png");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "cannot draw '/nonexistent/dir/x.png'"), "%s", r.err);
}
