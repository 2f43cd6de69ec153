/* The part of Criterion's interface the suites use, for one process that runs them all
 * (tests/memcheck/runner.c, `make valgrind`).
 *
 * Criterion starts every test as a program of its own (fork and exec): natively a few
 * milliseconds, under valgrind 1.1 s of valgrind's and the libraries' start before the
 * test begins, about 900 times in CI. Built with -Itests/memcheck, the same test files
 * take this header instead: Test() registers the test with the runner, a failed
 * cr_assert returns to it by longjmp, and the runner asks memcheck after each test
 * whether it reported errors or leaks. Only the macros the suites use are here (with
 * Criterion's old-style arguments: values, then an optional printf message); a test
 * that needs another fails to compile in this build, never passes by accident.
 *
 * `#pragma GCC system_header`: as in Criterion's own headers, `cr_assert(x)` without a
 * message passes no variadic arguments, which -Wpedantic would name at every use. */
#ifndef POSGRAD_MEMCHECK_CRITERION_H
#define POSGRAD_MEMCHECK_CRITERION_H
#pragma GCC system_header

#include <stdbool.h>
#include <stddef.h>

typedef struct mc_test {
    const char *suite, *name;
    void (*body)(void);
    void (*init)(void), (*fini)(void); /* Test(..., .init = f, .fini = g) */
} mc_test;

void mc_register(const mc_test *t);
/* records a failed check (ok false) at file:line; a fatal one ends the test */
void mc_check(bool ok, bool fatal, const char *file, int line, const char *what, const char *fmt, ...);
void mc_skip(const char *fmt, ...);
void mc_log(const char *fmt, ...);
bool mc_float_eq(double actual, double expected, double eps);
bool mc_str_eq(const char *a, const char *b);  /* both non-NULL and equal */
bool mc_str_neq(const char *a, const char *b); /* both non-NULL and different */
bool mc_arr_eq(const void *a, const void *b, size_t size);

/* Test(suite, name) and Test(suite, name, .init = f, .fini = g): the trailing comma that
 * MC_TEST_ receives always ends the designated initialiser harmlessly */
#define Test(...) MC_TEST_(__VA_ARGS__, )
#define MC_TEST_(S, N, ...)                                                                                         \
    static void mc_body_##S##_##N(void);                                                                            \
    static const mc_test mc_desc_##S##_##N = {.suite = #S, .name = #N, .body = mc_body_##S##_##N, __VA_ARGS__};     \
    __attribute__((constructor)) static void mc_reg_##S##_##N(void)                                                 \
    {                                                                                                               \
        mc_register(&mc_desc_##S##_##N);                                                                            \
    }                                                                                                               \
    static void mc_body_##S##_##N(void)

/* "" __VA_ARGS__: the optional message (a string literal, then its arguments) or "" */
#define MC_CHECK_(ok, fatal, what, ...) mc_check((ok), (fatal), __FILE__, __LINE__, what, "" __VA_ARGS__)

#define cr_assert(c, ...) MC_CHECK_((c) ? true : false, true, #c, __VA_ARGS__)
#define cr_assert_not(c, ...) MC_CHECK_(!(c), true, "!(" #c ")", __VA_ARGS__)
#define cr_assert_fail(...) MC_CHECK_(false, true, "cr_assert_fail", __VA_ARGS__)
#define cr_assert_null(p, ...) MC_CHECK_((p) == NULL, true, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) MC_CHECK_((p) != NULL, true, #p " != NULL", __VA_ARGS__)
#define cr_assert_eq(a, b, ...) MC_CHECK_((a) == (b), true, #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) MC_CHECK_((a) != (b), true, #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) MC_CHECK_((a) < (b), true, #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) MC_CHECK_((a) <= (b), true, #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) MC_CHECK_((a) > (b), true, #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) MC_CHECK_((a) >= (b), true, #a " >= " #b, __VA_ARGS__)
#define cr_assert_float_eq(a, b, eps, ...)                                                                          \
    MC_CHECK_(mc_float_eq((a), (b), (eps)), true, #a " == " #b " within " #eps, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) MC_CHECK_(mc_str_eq((a), (b)), true, #a " equals " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) MC_CHECK_(mc_str_neq((a), (b)), true, #a " differs from " #b, __VA_ARGS__)
#define cr_assert_str_empty(s, ...) MC_CHECK_(mc_str_eq((s), ""), true, #s " is empty", __VA_ARGS__)
#define cr_assert_arr_eq(a, b, size, ...)                                                                           \
    MC_CHECK_(mc_arr_eq((a), (b), (size)), true, #a " equals " #b " (" #size " bytes)", __VA_ARGS__)

#define cr_expect(c, ...) MC_CHECK_((c) ? true : false, false, #c, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) MC_CHECK_((a) == (b), false, #a " == " #b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...) MC_CHECK_((a) > (b), false, #a " > " #b, __VA_ARGS__)

#define cr_skip_test(...) mc_skip("" __VA_ARGS__)
#define cr_log_info(...) mc_log(__VA_ARGS__)

#endif
