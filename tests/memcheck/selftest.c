/* The one-process runner's own test (tests/memcheck/selftest.sh checks what it prints):
 * a passing test, a failing check that ends its test, a non-fatal one that does not, a
 * skip, a fini after a failure, limits and handlers put back between tests, and, under
 * valgrind, a leak and a read of uninitialised memory, each charged to its test. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

Test(selftest, passes)
{
    cr_assert_eq(1 + 1, 2);
    cr_assert_float_eq(0.1 + 0.2, 0.3, 1e-12);
    cr_assert_str_eq("posgrad", "posgrad", "strings %s", "equal");
    cr_assert_not_null("x");
}

Test(selftest, fails_and_stops)
{
    cr_assert_eq(1, 2, "one is not %d", 2);
    fprintf(stderr, "selftest: not reached\n");
}

Test(selftest, expect_goes_on)
{
    cr_expect(0 > 1);
    fprintf(stderr, "selftest: after the expect\n");
}

Test(selftest, skips)
{
    cr_skip_test("skipped on purpose");
}

static void say_fini(void)
{
    fprintf(stderr, "selftest: fini ran\n");
}

Test(selftest, fini_after_failure, .fini = say_fini)
{
    cr_assert_float_eq(1.0, 2.0, 0.5);
}

static void ignore(int sig)
{
    (void)sig;
}

/* limits_1 changes what limits_2 (sorted after it) must find as the runner began */
Test(selftest, limits_1_changed)
{
    struct rlimit low = {1 << 20, RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &low), 0);
    signal(SIGSEGV, ignore);
}

Test(selftest, limits_2_put_back)
{
    struct rlimit now;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &now), 0);
    cr_assert_neq(now.rlim_cur, (rlim_t)(1 << 20), "RLIMIT_FSIZE still lowered");
    struct sigaction act;
    sigaction(SIGSEGV, NULL, &act);
    cr_assert(act.sa_handler != ignore, "SIGSEGV's handler still the last test's");
}

void *volatile selftest_kept; /* volatile: the allocation cannot be optimised away */

Test(selftest, leaks)
{
    selftest_kept = malloc(100);
    selftest_kept = NULL;
}

Test(selftest, reads_uninitialised)
{
    int *volatile p = malloc(4 * sizeof *p);
    cr_assert_not_null(p);
    if (p[1] > 0) /* memcheck: the branch depends on uninitialised memory */
        fprintf(stderr, "selftest: positive\n");
    free(p);
}
