/* Helpers for the Criterion suites: tensors from literals, closeness
 * assertions, and a one-call gradcheck. */
#ifndef PG_TESTUTIL_H
#define PG_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../posgrad.h"

/* A heap f64 tensor from a literal: T64(PG_SHAPE(2, 2), 1, 2, 3, 4). S is a PG_SHAPE(...). */
#define T64(S, ...) pg_tensor_from_array(NULL, PG_F64, S, (const double[]){__VA_ARGS__})
#define T32(S, ...) pg_tensor_from_array(NULL, PG_F32, S, (const float[]){__VA_ARGS__})
#define TI64(S, ...) pg_tensor_from_array(NULL, PG_I64, S, (const int64_t[]){__VA_ARGS__})
#define TBOOL(S, ...) pg_tensor_from_array(NULL, PG_BOOL, S, (const uint8_t[]){__VA_ARGS__})

/* Asserts t has the given shape. */
static inline void assert_shape(const pg_tensor *t, int ndim, const int64_t *shape)
{
    cr_assert_not_null(t, "tensor is NULL: %s", pg_last_error());
    cr_assert_eq(t->ndim, ndim, "ndim %d, expected %d", t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(t->shape[i], shape[i], "dim %d is %lld, expected %lld", i, (long long)t->shape[i],
                     (long long)shape[i]);
}

/* Asserts every element of t is within tol of expected[i] (NaN matches NaN,
 * inf matches inf of the same sign). */
static inline void assert_values(const pg_tensor *t, const double *expected, int64_t n, double tol)
{
    cr_assert_not_null(t, "tensor is NULL: %s", pg_last_error());
    cr_assert_eq(t->numel, n, "numel %lld, expected %lld", (long long)t->numel, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        double v = pg_get(t, i), e = expected[i];
        if (isnan(e)) {
            cr_assert(isnan(v), "element %lld is %.17g, expected NaN", (long long)i, v);
        } else if (isinf(e)) {
            cr_assert(v == e, "element %lld is %.17g, expected %g", (long long)i, v, e);
        } else {
            cr_assert(fabs(v - e) <= tol * (1.0 + fabs(e)), "element %lld is %.17g, expected %.17g (tol %g)",
                      (long long)i, v, e, tol);
        }
    }
}
#define ASSERT_VALUES(t, tol, ...)                                                                             \
    assert_values((t), (const double[]){__VA_ARGS__}, (int64_t)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)), (tol))

/* Asserts a call failed: NULL result and a last error containing `needle`. */
#define ASSERT_FAILS(expr, needle)                                                                             \
    do {                                                                                                       \
        pg_clear_error();                                                                                      \
        const void *r_ = (expr);                                                                               \
        cr_assert_null(r_, "%s should have failed", #expr);                                                    \
        cr_assert(strstr(pg_last_error(), (needle)) != NULL, "error \"%s\" lacks \"%s\"", pg_last_error(),      \
                  (needle));                                                                                   \
    } while (0)

/* Random heap f64 tensor with values in [lo, hi), requiring grad. */
static inline pg_tensor *rand_param(int ndim, const int64_t *shape, double lo, double hi, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, ndim, shape);
    pg_fill_uniform(t, &r, lo, hi);
    t->requires_grad = true;
    return t;
}

/* Runs pg_gradcheck with the given options (NULL: defaults) and asserts it passed. */
static inline void assert_gradcheck(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx,
                                    const pg_gradcheck_opts *opts)
{
    pg_gradcheck_result r = pg_gradcheck(fn, n, in, ctx, opts);
    cr_assert(r.ok, "%s (max abs err %.3g, checked %d)", r.message, r.max_abs_err, r.checked);
    cr_assert_gt(r.checked, 0, "gradcheck checked nothing");
}

static inline void free_all(int n, pg_tensor **ts)
{
    for (int i = 0; i < n; i++)
        pg_tensor_free(ts[i]);
}

#endif
