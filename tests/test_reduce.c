/* Reductions and cumsum: forward values against PyTorch 1.13 (numbers pasted
 * below), every axis form (single, several non-adjacent, all, negative,
 * keepdim), f64 gradchecks on odd shapes, tie and infinity behaviour,
 * accuracy of long f32 sums, bad input. */
#include "testutil.h"

/* AXES(0, 2) expands to `2, (const int[]){0, 2}`; ALL reduces every axis */
#define AXES(...) (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)), (const int[]){__VA_ARGS__}
#define ALL 0, NULL
#define SCALAR 0, NULL

typedef pg_tensor *(*reduce_fn)(pg_graph *, pg_tensor *, int, const int *, bool);

static pg_tensor *var0(pg_graph *g, pg_tensor *x, int n, const int *axes, bool keep)
{
    return pg_var(g, x, n, axes, 0, keep);
}
static pg_tensor *var1(pg_graph *g, pg_tensor *x, int n, const int *axes, bool keep)
{
    return pg_var(g, x, n, axes, 1, keep);
}
static pg_tensor *var2(pg_graph *g, pg_tensor *x, int n, const int *axes, bool keep)
{
    return pg_var(g, x, n, axes, 2, keep);
}

/* X (2,3,4): ((i * 37) % 29) / 4 - 3 for i = 0..23, all distinct */
static pg_tensor *make_x(pg_dtype dtype)
{
    double v[24];
    for (int i = 0; i < 24; i++)
        v[i] = ((i * 37) % 29) / 4.0 - 3.0;
    pg_tensor *x = pg_tensor_from_array(NULL, PG_F64, PG_SHAPE(2, 3, 4), v);
    pg_tensor *c = pg_tensor_cast(NULL, x, dtype);
    pg_tensor_free(x);
    return c;
}

/* y = fn(NULL, x, AX, keep) has shape SHP and the given values */
#define CHECK(fn, x, AX, keep, SHP, tol, ...)                                                                  \
    do {                                                                                                       \
        pg_tensor *y_ = fn(NULL, x, AX, keep);                                                                 \
        assert_shape(y_, SHP);                                                                                 \
        ASSERT_VALUES(y_, tol, __VA_ARGS__);                                                                   \
        pg_tensor_free(y_);                                                                                    \
    } while (0)

/* Expected values: torch on X, e.g. X.sum(dim=(0, 2)), torch.logsumexp(X, dim=(0, 2)),
 * torch.var(X, dim=(0, 2), correction=1), in float64. */
Test(reduce, sum_mean_values)
{
    pg_tensor *x = make_x(PG_F64);
    CHECK(pg_sum, x, AXES(1), false, PG_SHAPE(2, 4), 1e-15, -6.75, -0.75, 5.25, 4, 0, 6, 4.75, -3.75);
    CHECK(pg_sum, x, AXES(0, 2), false, PG_SHAPE(3), 1e-15, 1.75, 7.75, -0.75);
    CHECK(pg_sum, x, AXES(2, 0), true, PG_SHAPE(1, 3, 1), 1e-15, 1.75, 7.75, -0.75);
    CHECK(pg_sum, x, ALL, false, SCALAR, 1e-15, 8.75);
    CHECK(pg_sum, x, ALL, true, PG_SHAPE(1, 1, 1), 1e-15, 8.75);
    CHECK(pg_sum, x, AXES(0, 1, 2), false, SCALAR, 1e-15, 8.75);
    CHECK(pg_sum, x, AXES(-1), false, PG_SHAPE(2, 3), 1e-15, 0, 3, -1.25, 1.75, 4.75, 0.5);
    CHECK(pg_sum, x, AXES(-1), true, PG_SHAPE(2, 3, 1), 1e-15, 0, 3, -1.25, 1.75, 4.75, 0.5);
    CHECK(pg_sum, x, AXES(0, -2), false, PG_SHAPE(4), 1e-15, -6.75, 5.25, 10, 0.25);
    CHECK(pg_mean, x, AXES(1), false, PG_SHAPE(2, 4), 1e-15, -2.25, -0.25, 1.75, 1.3333333333333333, 0, 2,
          1.5833333333333333, -1.25);
    CHECK(pg_mean, x, AXES(-3, -1), true, PG_SHAPE(1, 3, 1), 1e-15, 0.21875, 0.96875, -0.09375);
    CHECK(pg_mean, x, ALL, false, SCALAR, 1e-15, 0.36458333333333331);
    CHECK(pg_mean, x, AXES(2), false, PG_SHAPE(2, 3), 1e-15, 0, 0.75, -0.3125, 0.4375, 1.1875, 0.125);
    CHECK(pg_mean, x, AXES(1, 0), false, PG_SHAPE(4), 1e-15, -1.125, 0.875, 1.6666666666666667,
          0.041666666666666664);
    pg_tensor_free(x);
}

Test(reduce, max_min_values)
{
    pg_tensor *x = make_x(PG_F64);
    CHECK(pg_max, x, AXES(1), false, PG_SHAPE(2, 4), 0, -1.5, 0.5, 2.5, 3.75, 0.75, 2.75, 4, -0.5);
    CHECK(pg_max, x, AXES(0, 2), true, PG_SHAPE(1, 3, 1), 0, 3.25, 4, 2.75);
    CHECK(pg_max, x, ALL, false, SCALAR, 0, 4);
    CHECK(pg_max, x, AXES(-1), false, PG_SHAPE(2, 3), 0, 3, 3.75, 2.5, 3.25, 4, 2.75);
    CHECK(pg_max, x, AXES(0, 1), false, PG_SHAPE(4), 0, 0.75, 2.75, 4, 3.75);
    CHECK(pg_min, x, AXES(1), true, PG_SHAPE(2, 1, 4), 0, -3, -1, 1, -2.75, -0.75, 1.25, -2.5, -2);
    CHECK(pg_min, x, AXES(0, 2), false, PG_SHAPE(3), 0, -3, -2.25, -2.75);
    CHECK(pg_min, x, ALL, true, PG_SHAPE(1, 1, 1), 0, -3);
    CHECK(pg_min, x, AXES(-1), false, PG_SHAPE(2, 3), 0, -3, -2.25, -2.75, -2, -1.25, -2.5);
    CHECK(pg_min, x, AXES(0, 1), false, PG_SHAPE(4), 0, -3, -1, -2.5, -2.75);
    pg_tensor_free(x);
}

Test(reduce, logsumexp_var_values)
{
    pg_tensor *x = make_x(PG_F64);
    CHECK(pg_logsumexp, x, AXES(1), false, PG_SHAPE(2, 4), 1e-15, -0.97202425614469024, 1.0279757438553099,
          3.0279757438553099, 4.1378915890183281, 1.2779757438553099, 3.2779757438553099, 4.3878915890183281,
          0.027975743855309765);
    CHECK(pg_logsumexp, x, AXES(0, 2), false, PG_SHAPE(3), 1e-15, 3.9723627861507333, 4.7223627861507333,
          3.483284791718483);
    CHECK(pg_logsumexp, x, ALL, false, SCALAR, 1e-15, 5.2888223633190865);
    CHECK(pg_logsumexp, x, AXES(-1), true, PG_SHAPE(2, 3, 1), 1e-15, 3.1450779389607821, 3.8950779389607821,
          2.6474699337058474, 3.3974699337058474, 4.1474699337058469, 2.9149693827307557);
    CHECK(pg_logsumexp, x, AXES(0, 1), false, PG_SHAPE(4), 1e-15, 1.378182302772057, 3.378182302772057,
          4.6163668034096572, 4.1541675690941151);
    CHECK(var0, x, AXES(1), false, PG_SHAPE(2, 4), 1e-15, 0.375, 0.375, 0.375, 8.4305555555555571, 0.375, 0.375,
          8.4305555555555571, 0.375);
    CHECK(var0, x, AXES(0, 2), false, PG_SHAPE(3), 1e-15, 4.5380859375, 4.5380859375, 3.8583984375000004);
    CHECK(var0, x, ALL, false, SCALAR, 1e-15, 4.5103081597222214);
    CHECK(var0, x, AXES(-1), false, PG_SHAPE(2, 3), 1e-15, 5, 5, 3.98046875, 3.98046875, 3.98046875, 3.640625);
    CHECK(var0, x, AXES(0, 1), false, PG_SHAPE(4), 1e-15, 1.640625, 1.640625, 4.4097222222222214,
          6.0711805555555571);
    CHECK(var1, x, AXES(1), false, PG_SHAPE(2, 4), 1e-15, 0.5625, 0.5625, 0.5625, 12.645833333333336, 0.5625,
          0.5625, 12.645833333333336, 0.5625);
    CHECK(var1, x, AXES(-3, 2), true, PG_SHAPE(1, 3, 1), 1e-15, 5.1863839285714288, 5.1863839285714288,
          4.4095982142857144);
    CHECK(var1, x, ALL, false, SCALAR, 1e-15, 4.706408514492753);
    CHECK(var1, x, AXES(-1), false, PG_SHAPE(2, 3), 1e-15, 6.666666666666667, 6.666666666666667,
          5.307291666666667, 5.307291666666667, 5.307291666666667, 4.854166666666667);
    CHECK(var1, x, AXES(0, 1), false, PG_SHAPE(4), 1e-15, 1.96875, 1.96875, 5.2916666666666661,
          7.2854166666666682);
    pg_tensor_free(x);
}

Test(reduce, f32_values)
{
    pg_tensor *x = make_x(PG_F32);
    pg_tensor *s = pg_sum(NULL, x, AXES(0, 2), false), *l = pg_logsumexp(NULL, x, AXES(1), false);
    pg_tensor *v = pg_var(NULL, x, ALL, 1, false), *m = pg_max(NULL, x, AXES(0, 2), false);
    cr_assert(s->dtype == PG_F32 && l->dtype == PG_F32 && v->dtype == PG_F32 && m->dtype == PG_F32);
    ASSERT_VALUES(s, 1e-6, 1.75, 7.75, -0.75);
    ASSERT_VALUES(l, 1e-6, -0.97202425614469024, 1.0279757438553099, 3.0279757438553099, 4.1378915890183281,
                  1.2779757438553099, 3.2779757438553099, 4.3878915890183281, 0.027975743855309765);
    ASSERT_VALUES(v, 1e-6, 4.706408514492753);
    ASSERT_VALUES(m, 0, 3.25, 4, 2.75);
    pg_tensor *ys[] = {x, s, l, v, m};
    free_all(5, ys);
}

/* rows longer than the kernels' 8 lanes: the first extremum still wins */
Test(reduce, long_rows_first_extremum)
{
    double v[4 * 21];
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 21; i++)
            v[r * 21 + i] = (i * 5) % 7 - 3.0; /* max 3 first at i = 4, min -3 first at i = 0 */
    v[21 + 13] = 4, v[21 + 20] = 4, v[21 + 16] = -5; /* row 1: max at 13, min at 16 */
    v[42 + 17] = NAN, v[42 + 19] = NAN;              /* row 2: NaN at 17 */
    for (int i = 0; i < 21; i++)
        v[63 + i] = -INFINITY; /* row 3: all -inf */
    pg_tensor *x = pg_tensor_from_array(NULL, PG_F64, PG_SHAPE(4, 21), v);
    pg_tensor *f = pg_tensor_cast(NULL, x, PG_F32);
    pg_tensor *a = pg_argmax(NULL, x, 1, false), *af = pg_argmax(NULL, f, 1, false);
    pg_tensor *mx = pg_max(NULL, x, AXES(1), false), *mn = pg_min(NULL, f, AXES(1), false);
    pg_tensor *l = pg_logsumexp(NULL, x, AXES(1), false);
    ASSERT_VALUES(a, 0, 4, 13, 17, 0);
    ASSERT_VALUES(af, 0, 4, 13, 17, 0);
    ASSERT_VALUES(mx, 0, 3, 4, NAN, -INFINITY);
    ASSERT_VALUES(mn, 0, -3, -5, NAN, -INFINITY);
    cr_assert(isinf(pg_get(l, 3)) && pg_get(l, 3) < 0 && isnan(pg_get(l, 2)));
    /* the gradient follows the index */
    pg_graph *g = pg_graph_new();
    x->requires_grad = true;
    pg_tensor *y = pg_max(g, x, AXES(-1), true);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(4, 1))), 0);
    int64_t hot[4] = {4, 21 + 13, 42 + 17, 63};
    for (int64_t i = 0, h = 0; i < x->numel; i++) {
        bool is_hot = h < 4 && i == hot[h];
        cr_expect_eq(pg_get(x->grad, i), is_hot ? 1.0 : 0.0, "grad %lld", (long long)i);
        h += is_hot;
    }
    pg_graph_free(g);
    pg_tensor *ts[] = {x, f, a, af, mx, mn, l};
    free_all(7, ts);
}

/* torch.argmax(X, dim=a), torch.cumsum(X, dim=a) */
Test(reduce, argmax_values)
{
    pg_tensor *x = make_x(PG_F64);
    pg_tensor *a0 = pg_argmax(NULL, x, 0, false), *a1 = pg_argmax(NULL, x, 1, true);
    pg_tensor *a2 = pg_argmax(NULL, x, -1, false);
    cr_assert_eq(a0->dtype, PG_I64);
    assert_shape(a0, PG_SHAPE(3, 4));
    ASSERT_VALUES(a0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1);
    assert_shape(a1, PG_SHAPE(2, 1, 4));
    ASSERT_VALUES(a1, 0, 2, 2, 2, 1, 2, 2, 1, 2);
    assert_shape(a2, PG_SHAPE(2, 3));
    ASSERT_VALUES(a2, 0, 3, 3, 2, 2, 2, 1);
    /* i64 input; first of equal maxima */
    pg_tensor *ids = TI64(PG_SHAPE(2, 3), 3, 7, 7, 9, 1, 9);
    pg_tensor *ai = pg_argmax(NULL, ids, 1, false);
    ASSERT_VALUES(ai, 0, 1, 0);
    /* NaN counts as the maximum, as torch */
    pg_tensor *xn = T64(PG_SHAPE(4), 1.0, NAN, 3.0, NAN);
    pg_tensor *an = pg_argmax(NULL, xn, 0, false), *mx = pg_max(NULL, xn, ALL, false);
    pg_tensor *mn = pg_min(NULL, xn, ALL, false);
    ASSERT_VALUES(an, 0, 1);
    ASSERT_VALUES(mx, 0, NAN);
    ASSERT_VALUES(mn, 0, NAN);
    pg_tensor *ts[] = {x, a0, a1, a2, ids, ai, xn, an, mx, mn};
    free_all(10, ts);
}

Test(reduce, cumsum_values)
{
    pg_tensor *x = make_x(PG_F64);
    pg_tensor *c0 = pg_cumsum(NULL, x, 0), *c1 = pg_cumsum(NULL, x, 1), *c2 = pg_cumsum(NULL, x, -1);
    assert_shape(c0, PG_SHAPE(2, 3, 4));
    ASSERT_VALUES(c0, 1e-15, -3, -1, 1, 3, -2.25, -0.25, 1.75, 3.75, -1.5, 0.5, 2.5, -2.75, -3.75, 0.25, 4.25, 1,
                  -2.25, 1.75, 5.75, 2.5, -0.75, 3.25, 0, -3.25);
    ASSERT_VALUES(c1, 1e-15, -3, -1, 1, 3, -5.25, -1.25, 2.75, 6.75, -6.75, -0.75, 5.25, 4, -0.75, 1.25, 3.25, -2,
                  -0.75, 3.25, 7.25, -3.25, 0, 6, 4.75, -3.75);
    ASSERT_VALUES(c2, 1e-15, -3, -4, -3, 0, -2.25, -2.5, -0.75, 3, -1.5, -1, 1.5, -1.25, -0.75, 0.5, 3.75, 1.75, 0,
                  2, 6, 4.75, 0.75, 3.5, 1, 0.5);
    pg_tensor *ts[] = {x, c0, c1, c2};
    free_all(4, ts);
}

Test(reduce, scalars_and_empty)
{
    pg_tensor *s = T64(SCALAR, 5.0);
    pg_tensor *r[6] = {pg_sum(NULL, s, ALL, false), pg_sum(NULL, s, AXES(-1), true), pg_max(NULL, s, AXES(0), false),
                       pg_argmax(NULL, s, 0, false), pg_cumsum(NULL, s, -1), pg_var(NULL, s, ALL, 0, false)};
    for (int i = 0; i < 6; i++) {
        assert_shape(r[i], SCALAR);
        ASSERT_VALUES(r[i], 0, i == 3 || i == 5 ? 0.0 : 5.0);
    }
    free_all(6, r);
    /* (3, 0): empty rows sum to 0, mean and var of nothing are NaN, logsumexp -inf (torch) */
    pg_tensor *e = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(3, 0));
    pg_tensor *q[5] = {pg_sum(NULL, e, AXES(1), false), pg_mean(NULL, e, AXES(1), false),
                       pg_logsumexp(NULL, e, AXES(1), false), pg_var(NULL, e, AXES(1), 0, false),
                       pg_sum(NULL, e, AXES(0), true)};
    ASSERT_VALUES(q[0], 0, 0, 0, 0);
    ASSERT_VALUES(q[1], 0, NAN, NAN, NAN);
    ASSERT_VALUES(q[2], 0, -INFINITY, -INFINITY, -INFINITY);
    ASSERT_VALUES(q[3], 0, NAN, NAN, NAN);
    assert_shape(q[4], PG_SHAPE(1, 0));
    pg_tensor *mx = pg_max(NULL, e, AXES(0), false); /* over 3 elements of each of 0 columns: fine */
    assert_shape(mx, PG_SHAPE(0));
    free_all(5, q);
    pg_tensor_free(mx);
    pg_tensor_free(e);
    pg_tensor_free(s);
}

/* ---- gradients ---------------------------------------------------------------- */

typedef struct rcase {
    reduce_fn fn;
    int n;
    int axes[4];
    bool keep;
} rcase;

static pg_tensor *call_reduce(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const rcase *c = ctx;
    return c->fn(g, in[0], c->n, c->n ? c->axes : NULL, c->keep);
}

static const struct {
    const char *name;
    reduce_fn fn;
} OPS[] = {{"sum", pg_sum}, {"mean", pg_mean},   {"max", pg_max}, {"min", pg_min},
           {"logsumexp", pg_logsumexp}, {"var0", var0}, {"var1", var1}, {"var2", var2}};
#define N_OPS (int)(sizeof OPS / sizeof OPS[0])

/* every op over every axis set, with and without keepdim, on x of the given shape */
static void gradcheck_sets(int ndim, const int64_t *shape, int n_sets, const int (*sets)[5], int n_ops,
                           uint64_t seed)
{
    pg_tensor *x = rand_param(ndim, shape, -2, 2, seed);
    for (int o = 0; o < n_ops; o++)
        for (int s = 0; s < n_sets; s++)
            for (int k = 0; k < 2; k++) {
                rcase c = {OPS[o].fn, sets[s][0], {sets[s][1], sets[s][2], sets[s][3], sets[s][4]}, k == 1};
                pg_gradcheck_result r = pg_gradcheck(call_reduce, 1, &x, &c, NULL);
                cr_expect(r.ok, "%s axes set %d keepdim %d: %s", OPS[o].name, s, k, r.message);
                cr_expect_eq(r.checked, (int)x->numel);
            }
    pg_tensor_free(x);
}

Test(reduce, gradcheck_3d)
{
    /* {n, axes...}: single, middle, non-adjacent (permuted copy), all, negative,
     * leading block (column kernel), trailing block (row kernel) */
    static const int sets[][5] = {{1, 1}, {2, 0, 2}, {0}, {1, -1}, {2, 0, 1}, {2, -2, -1}, {1, -3}, {3, 2, 0, 1}};
    gradcheck_sets(PG_SHAPE(3, 4, 5), (int)(sizeof sets / sizeof sets[0]), sets, N_OPS, 7);
}

Test(reduce, gradcheck_4d_interleaved)
{
    /* reduced and kept axes alternate: R K R K and K R K R */
    static const int sets[][5] = {{2, 0, 2}, {2, 1, 3}, {3, 0, 1, 3}};
    gradcheck_sets(PG_SHAPE(2, 3, 2, 3), (int)(sizeof sets / sizeof sets[0]), sets, N_OPS, 8);
}

Test(reduce, gradcheck_size_one_axes)
{
    /* size-1 axes are dropped from the plan; reducing only them reduces nothing
     * (var with correction >= 1 over one element is NaN: those ops are skipped) */
    static const int sets[][5] = {{1, 1}, {2, 0, 1}, {2, 1, 3}, {0}};
    gradcheck_sets(PG_SHAPE(3, 1, 4, 1), (int)(sizeof sets / sizeof sets[0]), sets, N_OPS - 2, 9);
}

static pg_tensor *call_cumsum(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_cumsum(g, in[0], *(const int *)ctx);
}

Test(reduce, gradcheck_cumsum)
{
    pg_tensor *x = rand_param(PG_SHAPE(3, 4, 5), -2, 2, 10);
    for (int axis = -1; axis < 3; axis++)
        assert_gradcheck(call_cumsum, 1, &x, &axis, NULL);
    pg_tensor_free(x);
}

/* reductions feeding broadcasting ops: standardise over (0, 2) and a log-softmax */
static pg_tensor *standardise(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_tensor *x = in[0];
    pg_tensor *mu = pg_mean(g, x, AXES(0, 2), true), *v = pg_var(g, x, AXES(0, 2), 1, true);
    pg_tensor *z = pg_div(g, pg_sub(g, x, mu), pg_sqrt(g, pg_add_scalar(g, v, 1e-3)));
    pg_tensor *ls = pg_sub(g, x, pg_logsumexp(g, x, AXES(-1), true));
    return pg_add(g, z, pg_mul(g, ls, pg_max(g, x, AXES(1), true)));
}

Test(reduce, gradcheck_broadcast_composite)
{
    pg_tensor *x = rand_param(PG_SHAPE(3, 4, 5), -2, 2, 11);
    assert_gradcheck(standardise, 1, &x, NULL, NULL);
    pg_tensor_free(x);
}

/* runs backward of sum(y) and returns x->grad */
static const pg_tensor *grad_through(pg_graph *g, pg_tensor *x, pg_tensor *y)
{
    pg_zero_grad(x);
    cr_assert_eq(pg_backward(g, pg_sum(g, y, ALL, false)), 0, "%s", pg_graph_error(g));
    return x->grad;
}

Test(reduce, max_min_tie_gradients)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = T64(PG_SHAPE(2, 3), 1, 3, 3, 2, 2, 0);
    x->requires_grad = true;
    ASSERT_VALUES(grad_through(g, x, pg_max(g, x, AXES(1), false)), 0, 0, 1, 0, 1, 0, 0);
    ASSERT_VALUES(grad_through(g, x, pg_min(g, x, AXES(0), false)), 0, 1, 0, 0, 0, 1, 1);
    ASSERT_VALUES(grad_through(g, x, pg_max(g, x, ALL, false)), 0, 0, 1, 0, 0, 0, 0);
    ASSERT_VALUES(pg_argmax(g, x, 1, false), 0, 1, 0); /* argmax picks the same elements */
    ASSERT_VALUES(pg_argmax(g, x, -2, false), 0, 1, 0, 0);
    pg_tensor_free(x);
    /* (2, 2, 2) over axes (0, 2), the permuted path: x[0, k, 1] and x[1, k, 0] tie;
     * (0, 1) precedes (1, 0) in row-major order within the reduced axes */
    pg_graph_reset(g);
    pg_tensor *y = T64(PG_SHAPE(2, 2, 2), 0, 5, -1, 7, 5, 0, 7, -1);
    y->requires_grad = true;
    ASSERT_VALUES(grad_through(g, y, pg_max(g, y, AXES(0, 2), false)), 0, 0, 1, 0, 1, 0, 0, 0, 0);
    ASSERT_VALUES(grad_through(g, y, pg_min(g, y, AXES(2, 0), true)), 0, 1, 0, 1, 0, 0, 0, 0, 0);
    /* (3, 2) over axis 0, the column kernel: ties at rows 0 and 2 */
    pg_graph_reset(g);
    pg_tensor *z = T64(PG_SHAPE(3, 2), 4, 1, 2, 1, 4, 0);
    z->requires_grad = true;
    ASSERT_VALUES(grad_through(g, z, pg_max(g, z, AXES(0), false)), 0, 1, 1, 0, 0, 0, 0);
    ASSERT_VALUES(grad_through(g, z, pg_min(g, z, AXES(-2), false)), 0, 0, 0, 1, 0, 0, 1);
    pg_tensor_free(y);
    pg_tensor_free(z);
    pg_graph_free(g);
}

/* torch.logsumexp(x, 1) and its gradient for these rows: -inf, 1000.6931471805599,
 * inf, 0; torch's gradient is NaN for the -inf row, we give 0 there (by design). */
static void check_lse_extremes(pg_dtype dtype, double tol)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x64 = T64(PG_SHAPE(4, 2), -INFINITY, -INFINITY, 1000, 1000, INFINITY, 1, 0, -INFINITY);
    pg_tensor *x = pg_tensor_cast(NULL, x64, dtype);
    x->requires_grad = true;
    pg_tensor *y = pg_logsumexp(g, x, AXES(1), false);
    ASSERT_VALUES(y, tol, -INFINITY, 1000.6931471805599, INFINITY, 0);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, dtype, PG_SHAPE(4))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-7, 0, 0, 0.5, 0.5, NAN, 0, 1, 0);
    pg_tensor_free(x);
    pg_tensor_free(x64);
    pg_graph_free(g);
}

Test(reduce, logsumexp_infinities_and_large)
{
    check_lse_extremes(PG_F64, 1e-15);
    check_lse_extremes(PG_F32, 1e-7);
    /* all rows over the column kernel as well: (2, 4) over axis 0 */
    pg_tensor *x = T64(PG_SHAPE(2, 4), -INFINITY, 1000, INFINITY, 0, -INFINITY, 1000, 1, -INFINITY);
    pg_tensor *y = pg_logsumexp(NULL, x, AXES(0), false);
    ASSERT_VALUES(y, 1e-15, -INFINITY, 1000.6931471805599, INFINITY, 0);
    pg_tensor_free(y);
    pg_tensor_free(x);
}

/* torch.var(torch.tensor([1., 2, 4]), correction=c) and its gradient: c = 3 gives
 * inf and gradient (-inf, -inf, inf); c = 4 the same here (torch's backward uses
 * n - c = -1 and returns finite numbers); one element with c = 1 gives NaN. */
Test(reduce, var_corrections)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = T64(PG_SHAPE(3), 1, 2, 4);
    x->requires_grad = true;
    ASSERT_VALUES(pg_var(g, x, ALL, 2, false), 1e-15, 4.666666666666666);
    ASSERT_VALUES(grad_through(g, x, pg_var(g, x, ALL, 2, false)), 1e-15, -2.6666666666666667, -0.6666666666666667,
                  3.3333333333333333);
    /* correction < 0 or >= n: refused (ops.h), where this test used to pin inf / NaN / the n + 1 divisor */
    ASSERT_FAILS(pg_var(g, x, ALL, -1, false), "pg_var: correction must be >= 0, got -1");
    ASSERT_FAILS(pg_var(g, x, ALL, 3, false), "pg_var: correction 3 leaves no degrees of freedom");
    ASSERT_FAILS(pg_var(g, x, ALL, 4, false), "pg_var: correction 4 leaves no degrees of freedom");
    pg_tensor *one = T64(PG_SHAPE(1), 3);
    one->requires_grad = true;
    ASSERT_FAILS(pg_var(g, one, ALL, 1, false), "pg_var: correction 1 leaves no degrees of freedom");
    ASSERT_VALUES(pg_var(g, one, ALL, 0, false), 0, 0);
    pg_tensor_free(one);
    pg_tensor_free(x);
    pg_graph_free(g);
}

/* The rule of ops.h: 0 <= correction < n, where n is the number of reduced
 * elements; reducing nothing (n == 0) gives NaN as pg_mean does. */
Test(reduce, var_correction_must_leave_degrees_of_freedom)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = make_x(PG_F64); /* (2, 3, 4) */
    ASSERT_FAILS(pg_var(g, x, AXES(1), -2, true),
                 "pg_var: correction must be >= 0, got -2 (x is f64[2,3,4])");
    ASSERT_FAILS(pg_var(NULL, x, AXES(1), INT32_MIN, false), "pg_var: correction must be >= 0");
    ASSERT_FAILS(pg_var(g, x, AXES(1), 3, false),
                 "pg_var: correction 3 leaves no degrees of freedom: it reduces 3 elements of f64[2,3,4] "
                 "(need 0 <= correction < 3)");
    ASSERT_FAILS(pg_var(g, x, AXES(0, 2), 8, false), "reduces 8 elements of f64[2,3,4]");
    ASSERT_FAILS(pg_var(g, x, AXES(0, 2), INT32_MAX, false), "pg_var: correction 2147483647 leaves");
    pg_tensor *v = pg_var(g, x, AXES(0, 2), 7, false); /* n - 1 is the largest correction */
    cr_assert_not_null(v, "%s", pg_last_error());
    for (int64_t i = 0; i < v->numel; i++)
        cr_assert(isfinite(pg_get(v, i)) && pg_get(v, i) >= 0, "var %g", pg_get(v, i));
    /* a size-1 axis reduces one element: only correction 0 */
    pg_tensor *col = T64(PG_SHAPE(3, 1), 1, 2, 3);
    ASSERT_VALUES(pg_var(g, col, AXES(1), 0, false), 0, 0, 0, 0);
    ASSERT_FAILS(pg_var(g, col, AXES(1), 1, false), "pg_var: correction 1 leaves no degrees of freedom");
    /* reducing nothing: NaN whatever the correction */
    pg_tensor *e = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(3, 0));
    ASSERT_VALUES(pg_var(g, e, AXES(1), 0, false), 0, NAN, NAN, NAN);
    ASSERT_VALUES(pg_var(g, e, AXES(1), 1, false), 0, NAN, NAN, NAN);
    ASSERT_FAILS(pg_var(g, e, AXES(1), -1, false), "pg_var: correction must be >= 0, got -1");
    pg_tensor *ts[] = {x, col, e};
    free_all(3, ts);
    pg_graph_free(g);
}

Test(reduce, sum_mean_gradients_by_hand)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = T64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    x->requires_grad = true;
    pg_tensor *y = pg_mean(g, x, AXES(0), false);
    ASSERT_VALUES(y, 0, 2.5, 3.5, 4.5);
    cr_assert_eq(pg_backward_with(g, y, pg_from_array(g, PG_F64, PG_SHAPE(3), (const double[]){1, 2, 4})), 0);
    ASSERT_VALUES(x->grad, 0, 0.5, 1, 2, 0.5, 1, 2);
    pg_zero_grad(x);
    pg_tensor *c = pg_cumsum(g, x, 1);
    ASSERT_VALUES(grad_through(g, x, c), 0, 3, 2, 1, 3, 2, 1);
    pg_tensor_free(x);
    pg_graph_free(g);
}

/* ---- accuracy ------------------------------------------------------------------ */

Test(reduce, long_f32_sums_are_accurate)
{
    /* 2^20 copies of 0.1f: a float accumulator drifts by ~1e-2 relative; the
     * exact sum is 2^20 * (double)0.1f */
    int64_t n = 1 << 20;
    pg_tensor *row = pg_tensor_full(NULL, PG_F32, 1, &n, 0.1);
    pg_tensor *col = pg_tensor_full(NULL, PG_F32, PG_SHAPE(1 << 18, 3), 0.1);
    double exact = (double)n * (double)0.1f;
    pg_tensor *s = pg_sum(NULL, row, ALL, false), *sc = pg_sum(NULL, col, AXES(0), false);
    pg_tensor *m = pg_mean(NULL, row, ALL, false), *cs = pg_cumsum(NULL, row, 0);
    pg_tensor *v = pg_var(NULL, col, AXES(0), 0, false);
    ASSERT_VALUES(s, 1e-7, exact);
    ASSERT_VALUES(sc, 1e-7, exact / 4, exact / 4, exact / 4);
    ASSERT_VALUES(m, 1e-7, (double)0.1f);
    cr_assert(fabs(pg_get(cs, n - 1) - exact) <= 1e-7 * exact, "cumsum end %.9g", pg_get(cs, n - 1));
    ASSERT_VALUES(v, 1e-9, 0, 0, 0);
    pg_tensor *ts[] = {row, col, s, sc, m, cs, v};
    free_all(7, ts);
}

/* ---- bad input -------------------------------------------------------------------- */

Test(reduce, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = make_x(PG_F64), *ids = TI64(PG_SHAPE(2), 1, 2), *mask = TBOOL(PG_SHAPE(2), 0, 1);
    pg_tensor *e = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(3, 0));
    ASSERT_FAILS(pg_sum(g, NULL, ALL, false), "pg_sum: x is NULL");
    ASSERT_FAILS(pg_mean(g, ids, ALL, false), "pg_mean: x must be f32 or f64, got i64[2]");
    ASSERT_FAILS(pg_sum(g, x, AXES(2, -1), false), "pg_sum: axis -1 repeated in axes for f64[2,3,4]");
    ASSERT_FAILS(pg_max(g, x, AXES(0, 0), true), "pg_max: axis 0 repeated in axes for f64[2,3,4]");
    ASSERT_FAILS(pg_min(g, x, AXES(3), false), "pg_min: axis 3 out of range for a tensor of 3 dims");
    ASSERT_FAILS(pg_logsumexp(g, x, AXES(-4), false), "pg_logsumexp: axis -4 out of range for a tensor of 3 dims");
    ASSERT_FAILS(pg_var(g, x, -1, (const int[]){0}, 1, false), "pg_var: bad axes (n_axes -1, axes given) for f64[2,3,4]");
    ASSERT_FAILS(pg_sum(g, x, 2, NULL, false), "pg_sum: bad axes (n_axes 2, axes NULL) for f64[2,3,4]");
    ASSERT_FAILS(pg_max(g, e, AXES(1), false), "pg_max: cannot reduce zero elements of f64[3,0]");
    ASSERT_FAILS(pg_min(NULL, e, ALL, false), "pg_min: cannot reduce zero elements of f64[3,0]");
    ASSERT_FAILS(pg_argmax(g, e, -1, false), "pg_argmax: axis -1 of f64[3,0] is empty");
    ASSERT_FAILS(pg_argmax(g, mask, 0, false), "pg_argmax: x must be f32, f64 or i64, got bool[2]");
    ASSERT_FAILS(pg_argmax(g, x, 3, false), "pg_argmax: axis 3 out of range");
    ASSERT_FAILS(pg_argmax(g, NULL, 0, false), "pg_argmax: x is NULL");
    ASSERT_FAILS(pg_cumsum(g, x, -4), "pg_cumsum: axis -4 out of range");
    ASSERT_FAILS(pg_cumsum(g, ids, 0), "pg_cumsum: x must be f32 or f64, got i64[2]");
    ASSERT_FAILS(pg_var(NULL, NULL, ALL, 1, false), "pg_var: x is NULL");
    cr_assert_str_eq(pg_graph_error(g), "pg_sum: x is NULL", "the graph keeps the first error");
    pg_tensor *ts[] = {x, ids, mask, e};
    free_all(4, ts);
    pg_graph_free(g);
}

/* cumsum's rows run in slices on the thread pool: (300, 7, 40) along the middle axis
 * (many slices, a chunked inner scan) and (5000, 33) along the last, values against a
 * naive double sum, 1 and 3 threads bit for bit; the gradient of x used by two cumsums
 * (a fresh gradient, then one that adds) is the sum of both reversed cumsums. */
Test(reduce, cumsum_on_the_pool)
{
    int saved = pg_num_threads();
    const int64_t shapes[2][3] = {{300, 7, 40}, {5000, 33, 1}};
    for (int s = 0; s < 2; s++) {
        int axis = s == 0 ? 1 : -1;
        pg_tensor *out[2] = {NULL, NULL}, *grad[2] = {NULL, NULL};
        for (int run = 0; run < 2; run++) {
            cr_assert_eq(pg_set_num_threads(run == 0 ? 1 : 3), 0);
            pg_rng r = pg_rng_init(9);
            pg_tensor *x = s == 0 ? pg_randn(NULL, PG_F32, PG_SHAPE(300, 7, 40), &r)
                                  : pg_randn(NULL, PG_F32, PG_SHAPE(5000, 33), &r);
            pg_set_requires_grad(x, true);
            pg_graph *g = pg_graph_new();
            pg_tensor *c = pg_cumsum(g, x, axis), *d = pg_cumsum(g, x, axis);
            pg_tensor *loss = pg_add(g, pg_sum(g, c, 0, NULL, false), pg_sum(g, pg_mul_scalar(g, d, 2.0), 0, NULL, false));
            cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
            out[run] = pg_copy(NULL, c);
            grad[run] = pg_copy(NULL, x->grad);
            int64_t n = shapes[s][1], inner = shapes[s][2];
            for (int64_t o = 0; o < shapes[s][0]; o += 37)
                for (int64_t i = 0; i < inner; i++) {
                    double acc = 0;
                    for (int64_t k = 0; k < n; k++) {
                        int64_t at = (o * n + k) * inner + i;
                        acc += pg_f32(x)[at];
                        cr_assert_eq(pg_f32(c)[at], (float)acc, "cumsum at %lld", (long long)at);
                        /* d loss / d x[k] = 3 (n - k): every later position sums it, once plus twice */
                        cr_assert_eq(pg_f32(x->grad)[at], (float)(3 * (n - k)), "grad at %lld", (long long)at);
                    }
                }
            pg_graph_free(g);
            pg_tensor_free(x);
        }
        cr_assert_eq(memcmp(out[0]->data, out[1]->data, (size_t)out[0]->numel * sizeof(float)), 0);
        cr_assert_eq(memcmp(grad[0]->data, grad[1]->data, (size_t)grad[0]->numel * sizeof(float)), 0);
        free_all(2, out);
        free_all(2, grad);
    }
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

/* Along the last axis, rows go 8 at a time (transposed into vector lanes with AVX-512):
 * (19, 45) f32, two groups of 8 rows and 3 alone, 5 blocks of 8 keys and a tail of 5;
 * prefix and suffix sums bit for bit against a naive double sum rounded once, and the
 * gradient of x used by both (a fresh one, then one added to) against its own sums. */
Test(reduce, cumsum_rows_by_eight_match_a_naive_sum)
{
    const int64_t R = 19, N = 45;
    pg_rng r = pg_rng_init(41);
    pg_tensor *x = pg_randn(NULL, PG_F32, PG_SHAPE(R, N), &r);
    pg_set_requires_grad(x, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *up = pg_randn(g, PG_F32, PG_SHAPE(R, N), &r);
    pg_tensor *fwd = pg_cumsum(g, x, 1), *rev = pg_cumsum_reverse(g, x, 1);
    pg_tensor *loss =
        pg_add(g, pg_sum(g, pg_mul(g, fwd, up), 0, NULL, false), pg_sum(g, pg_mul(g, rev, up), 0, NULL, false));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    const float *xs = pg_f32(x), *us = pg_f32(up);
    for (int64_t i = 0; i < R; i++) {
        double pre = 0, suf = 0, gpre = 0, gsuf = 0;
        float grad_rev[45]; /* the reverse cumsum's gradient: a prefix sum of up, written first */
        for (int64_t k = 0; k < N; k++) {
            pre += xs[i * N + k];
            suf += xs[i * N + N - 1 - k];
            gpre += us[i * N + k];
            grad_rev[k] = (float)gpre;
            cr_assert_eq(pg_f32(fwd)[i * N + k], (float)pre, "prefix (%lld, %lld)", (long long)i, (long long)k);
            cr_assert_eq(pg_f32(rev)[i * N + N - 1 - k], (float)suf, "suffix (%lld, %lld)", (long long)i,
                         (long long)(N - 1 - k));
        }
        for (int64_t k = N - 1; k >= 0; k--) { /* then the forward cumsum's: a suffix sum of up, added */
            gsuf += us[i * N + k];
            cr_assert_eq(pg_f32(x->grad)[i * N + k], grad_rev[k] + (float)gsuf, "gradient (%lld, %lld)", (long long)i,
                         (long long)k);
        }
    }
    pg_graph_free(g);
    pg_tensor_free(x);
}

/* pg_cumsum_reverse: the suffix sums, equal bit for bit to flip, cumsum, flip (forward and
 * gradient, f32 and f64, each axis), gradcheck, bad input named */
static pg_tensor *flip_axis(pg_graph *g, pg_tensor *x, int axis)
{
    int64_t n = x->shape[axis];
    pg_tensor *rev = pg_empty(g, PG_I64, PG_SHAPE(n));
    for (int64_t j = 0; j < n; j++)
        pg_i64(rev)[j] = n - 1 - j;
    return pg_index_select(g, x, axis, rev);
}

Test(reduce, cumsum_reverse_is_flip_cumsum_flip)
{
    for (int dt = 0; dt < 2; dt++)
        for (int axis = 0; axis < 3; axis++) {
            pg_dtype d = dt ? PG_F64 : PG_F32;
            pg_tensor *x[2];
            for (int k = 0; k < 2; k++) {
                pg_rng r = pg_rng_init(31);
                x[k] = pg_randn(NULL, d, PG_SHAPE(4, 70, 9), &r);
                pg_set_requires_grad(x[k], true);
            }
            pg_graph *g = pg_graph_new();
            pg_rng ru = pg_rng_init(32);
            pg_tensor *up = pg_randn(g, d, PG_SHAPE(4, 70, 9), &ru);
            pg_tensor *y0 = pg_cumsum_reverse(g, x[0], axis);
            pg_tensor *y1 = flip_axis(g, pg_cumsum(g, flip_axis(g, x[1], axis), axis), axis);
            cr_assert(y0 && y1, "%s", pg_graph_error(g));
            cr_assert_eq(pg_backward_with(g, y0, up), 0);
            cr_assert_eq(pg_backward_with(g, y1, up), 0);
            size_t bytes = (size_t)y0->numel * pg_dtype_size(d);
            cr_assert_eq(memcmp(y0->data, y1->data, bytes), 0, "values, axis %d", axis);
            cr_assert_eq(memcmp(x[0]->grad->data, x[1]->grad->data, bytes), 0, "gradients, axis %d", axis);
            pg_graph_free(g);
            free_all(2, x);
        }
    pg_tensor *v = T64(PG_SHAPE(4), 1, 2, 3, 4), *s = pg_cumsum_reverse(NULL, v, 0);
    ASSERT_VALUES(s, 0, 10, 9, 7, 4);
    ASSERT_FAILS(pg_cumsum_reverse(NULL, v, 1), "pg_cumsum_reverse");
    pg_tensor *ts[] = {v, s};
    free_all(2, ts);
}

static pg_tensor *call_cumsum_reverse(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_cumsum_reverse(g, in[0], *(const int *)ctx);
}

Test(reduce, gradcheck_cumsum_reverse)
{
    for (int axis = 0; axis < 3; axis++) {
        pg_tensor *x = randt(PG_SHAPE(2, 3, 4), 5, true);
        assert_gradcheck(call_cumsum_reverse, 1, &x, &axis, NULL);
        pg_tensor_free(x);
    }
}
