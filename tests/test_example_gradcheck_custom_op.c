/* Smoke test of examples/gradcheck_custom_op.c: the correct Gaussian-distance
 * bias op passes pg_gradcheck, the one with the wrong backward is caught on
 * its w input. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/gradcheck_custom_op.c"

#include "testutil.h"
#include <criterion/redirect.h>

Test(example_gradcheck_custom_op, good_passes_bad_is_caught)
{
    gradcheck_custom_op_result r;
    cr_assert_eq(gradcheck_custom_op_run(3, 0, &r), 0);
    cr_assert(r.good.ok, "%s", r.good.message);
    cr_assert(r.good.f32_ok);
    cr_assert_eq(r.good.checked, 2 * 5 * 5 + 2 + 2);
    cr_assert(!r.bad.ok);
    cr_assert_eq(r.bad.worst_input, 2, "the wrong dL/dw is what is caught");
    cr_assert(strstr(r.bad.message, "gradient mismatch at input 2"), "%s", r.bad.message);
}

Test(example_gradcheck_custom_op, main_exit_codes)
{
    char *ok_args[] = {"gradcheck_custom_op", "--seed", "5", NULL};
    char *help[] = {"gradcheck_custom_op", "--help", NULL};
    char *bad[] = {"gradcheck_custom_op", "--nope", NULL};
    cr_redirect_stdout();
    cr_assert_eq(gradcheck_custom_op_main(3, ok_args), 0);
    cr_assert_eq(gradcheck_custom_op_main(2, help), 0);
    cr_assert_eq(gradcheck_custom_op_main(2, bad), 2);
}
