/* Binary broadcasting ops and pg_broadcast_to: forward values, gradient
 * conventions, gradchecks, bad input. Expected numbers were computed with
 * PyTorch 1.13 (torch.add ... torch.pow, float64) unless noted. */
#include "testutil.h"

#include "../tensor/broadcast.h"

/* the shape arguments of a 0-dim tensor */
#define SCALAR 0, NULL

typedef pg_tensor *(*binary_fn)(pg_graph *, pg_tensor *, pg_tensor *);

Test(binary, forward_values)
{
    /* a (2,3) against b (3) */
    pg_tensor *a = T64(PG_SHAPE(2, 3), 1.5, -2.0, 0.5, 3.0, 0.25, -1.0);
    pg_tensor *b = T64(PG_SHAPE(3), 0.5, 4.0, -2.0);
    pg_tensor *pa = T64(PG_SHAPE(2, 3), 1.5, 2.0, 0.5, 3.0, 0.25, 1.0);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_add(g, a, b);
    assert_shape(y, PG_SHAPE(2, 3));
    cr_assert_eq(y->dtype, PG_F64);
    ASSERT_VALUES(y, 0, 2.0, 2.0, -1.5, 3.5, 4.25, -3.0);
    ASSERT_VALUES(pg_sub(g, a, b), 0, 1.0, -6.0, 2.5, 2.5, -3.75, 1.0);
    ASSERT_VALUES(pg_mul(g, a, b), 0, 0.75, -8.0, -1.0, 1.5, 1.0, 2.0);
    ASSERT_VALUES(pg_div(g, a, b), 0, 3.0, -0.5, -0.25, 6.0, 0.0625, 0.5);
    ASSERT_VALUES(pg_maximum(g, a, b), 0, 1.5, 4.0, 0.5, 3.0, 4.0, -1.0);
    ASSERT_VALUES(pg_minimum(g, a, b), 0, 0.5, -2.0, -2.0, 0.5, 0.25, -2.0);
    ASSERT_VALUES(pg_pow(g, pa, b), 1e-15, 1.224744871391589, 16.0, 4.0, 1.7320508075688772, 0.00390625, 1.0);
    pg_graph_free(g);
    free_all(3, (pg_tensor *[]){a, b, pa});
}

Test(binary, broadcast_forward)
{
    pg_graph *g = pg_graph_new();
    /* (2,1,4) * (3,1) -> (2,3,4); x = arange(8) / 2 - 1 */
    pg_tensor *x = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, 1, 4));
    pg_fill_arange(x, -1.0, 0.5);
    pg_tensor *w = T64(PG_SHAPE(3, 1), 2.0, -1.0, 0.5);
    pg_tensor *y = pg_mul(g, x, w);
    assert_shape(y, PG_SHAPE(2, 3, 4));
    ASSERT_VALUES(y, 0, -2.0, -1.0, 0.0, 1.0, 1.0, 0.5, -0.0, -0.5, -0.5, -0.25, 0.0, 0.25, 2.0, 3.0, 4.0, 5.0, -1.0,
                  -1.5, -2.0, -2.5, 0.5, 0.75, 1.0, 1.25);
    /* a 0-dim scalar on either side of a (2,2) */
    pg_tensor *s = T64(SCALAR, 2.5), *m = T64(PG_SHAPE(2, 2), 1.0, -2.0, 4.0, 0.5);
    pg_tensor *sd = pg_div(g, s, m), *ms = pg_sub(g, m, s);
    assert_shape(sd, PG_SHAPE(2, 2));
    ASSERT_VALUES(sd, 0, 2.5, -1.25, 0.625, 5.0);
    ASSERT_VALUES(ms, 0, -1.5, -4.5, 1.5, -2.0);
    /* scalar with scalar stays 0-dim (by hand) */
    pg_tensor *ss = pg_add(g, s, s);
    assert_shape(ss, SCALAR);
    ASSERT_VALUES(ss, 0, 5.0);
    /* f32 stays f32 (by hand) */
    pg_tensor *f = T32(PG_SHAPE(3), 1.0f, 2.0f, 3.0f), *fs = T32(PG_SHAPE(1), 0.5f);
    pg_tensor *fy = pg_mul(NULL, f, fs);
    cr_assert_eq(fy->dtype, PG_F32);
    ASSERT_VALUES(fy, 0, 0.5, 1.0, 1.5);
    pg_graph_free(g);
    free_all(7, (pg_tensor *[]){x, w, s, m, f, fs, fy});
}

Test(binary, broadcast_gradient_values)
{
    /* y = a * b with a (2,1,3), b (2,1), upstream ones: torch gives
     * a.grad = b summed over the broadcast dim, b.grad = a summed over two dims */
    pg_tensor *a = T64(PG_SHAPE(2, 1, 3), 1, 2, 3, 4, 5, 6), *b = T64(PG_SHAPE(2, 1), 10, 20);
    a->requires_grad = b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mul(g, a, b);
    assert_shape(y, PG_SHAPE(2, 2, 3));
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(2, 2, 3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(a->grad, 0, 30, 30, 30, 30, 30, 30);
    ASSERT_VALUES(b->grad, 0, 21, 21);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){a, b});
}

Test(binary, max_min_ties)
{
    /* a tie gives each side half the gradient (torch: 0.5 / 0.5) */
    pg_tensor *a = T64(PG_SHAPE(3), 1.0, 2.0, 3.0), *b = T64(PG_SHAPE(3), 1.0, 5.0, 3.0);
    a->requires_grad = b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *mx = pg_maximum(g, a, b);
    ASSERT_VALUES(mx, 0, 1.0, 5.0, 3.0);
    cr_assert_eq(pg_backward_with(g, mx, pg_ones(g, PG_F64, PG_SHAPE(3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(a->grad, 0, 0.5, 0.0, 0.5);
    ASSERT_VALUES(b->grad, 0, 0.5, 1.0, 0.5);
    pg_zero_grad(a);
    pg_zero_grad(b);
    pg_tensor *mn = pg_minimum(g, a, b);
    ASSERT_VALUES(mn, 0, 1.0, 2.0, 3.0);
    cr_assert_eq(pg_backward_with(g, mn, pg_ones(g, PG_F64, PG_SHAPE(3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(a->grad, 0, 0.5, 1.0, 0.5);
    ASSERT_VALUES(b->grad, 0, 0.5, 0.0, 0.5);
    /* maximum(x, x): each side gets half, so x gets all of it */
    pg_zero_grad(a);
    pg_tensor *xx = pg_maximum(g, a, a);
    cr_assert_eq(pg_backward_with(g, xx, pg_ones(g, PG_F64, PG_SHAPE(3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(a->grad, 0, 1.0, 1.0, 1.0);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){a, b});
}

Test(binary, max_min_nan)
{
    /* NaN on either side propagates; torch.maximum([nan,1,2],[1,nan,2]) gives
     * [nan,nan,2] and gradients [1,1,0.5] to both sides */
    pg_tensor *a = T64(PG_SHAPE(3), NAN, 1.0, 2.0), *b = T64(PG_SHAPE(3), 1.0, NAN, 2.0);
    a->requires_grad = b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *mx = pg_maximum(g, a, b);
    ASSERT_VALUES(mx, 0, NAN, NAN, 2.0);
    ASSERT_VALUES(pg_minimum(g, a, b), 0, NAN, NAN, 2.0);
    cr_assert_eq(pg_backward_with(g, mx, pg_ones(g, PG_F64, PG_SHAPE(3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(a->grad, 0, 1.0, 1.0, 0.5);
    ASSERT_VALUES(b->grad, 0, 1.0, 1.0, 0.5);
    /* f32 kernel too (by hand) */
    pg_tensor *fa = T32(PG_SHAPE(2), NAN, -1.0f), *fb = T32(PG_SHAPE(2), 3.0f, NAN);
    ASSERT_VALUES(pg_maximum(g, fa, fb), 0, NAN, NAN);
    ASSERT_VALUES(pg_minimum(g, fb, fa), 0, NAN, NAN);
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){a, b, fa, fb});
}

Test(binary, pow_gradient_conventions)
{
    /* torch.pow(a, b) with a = [0,0,0,2,-1.5], b = [0,2,-1,0,2], upstream ones:
     * d/da is 0 where b == 0; d/db is 0 where a == 0 and b >= 0, and
     * y log(a) elsewhere (-inf at 0^-1, NaN for negative a) */
    pg_tensor *a = T64(PG_SHAPE(5), 0.0, 0.0, 0.0, 2.0, -1.5), *b = T64(PG_SHAPE(5), 0.0, 2.0, -1.0, 0.0, 2.0);
    a->requires_grad = b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_pow(g, a, b);
    ASSERT_VALUES(y, 0, 1.0, 0.0, INFINITY, 1.0, 2.25);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(5))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(a->grad, 0, 0.0, 0.0, -INFINITY, 0.0, -3.0);
    ASSERT_VALUES(b->grad, 1e-15, 0.0, 0.0, -INFINITY, 0.6931471805599453, NAN);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){a, b});
}

/* ---- gradchecks ---------------------------------------------------------------------- */

typedef struct binary_case {
    const char *name;
    binary_fn fn;
    double lo, hi;     /* range of a */
    double blo, bhi;   /* range of b */
} binary_case;

static const binary_case CASES[] = {
    {"add", pg_add, -2, 2, -2, 2},         {"sub", pg_sub, -2, 2, -2, 2},
    {"mul", pg_mul, -2, 2, -2, 2},         {"div", pg_div, -2, 2, 0.5, 2},
    {"maximum", pg_maximum, -2, 2, -2, 2}, {"minimum", pg_minimum, -2, 2, -2, 2},
    {"pow", pg_pow, 0.3, 2, -1.5, 1.5},
};

static pg_tensor *call_binary(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    const binary_case *c = ctx;
    return n == 1 ? c->fn(g, in[0], in[0]) : c->fn(g, in[0], in[1]);
}

static void check_case(const binary_case *c, int nda, const int64_t *sa, int ndb, const int64_t *sb, uint64_t seed,
                       const char *what)
{
    pg_tensor *a = rand_param(nda, sa, c->lo, c->hi, seed), *b = rand_param(ndb, sb, c->blo, c->bhi, seed + 1);
    pg_gradcheck_result r = pg_gradcheck(call_binary, 2, (pg_tensor *[]){a, b}, (void *)c, NULL);
    cr_expect(r.ok, "%s %s: %s", c->name, what, r.message);
    cr_expect_eq(r.checked, (int)(a->numel + b->numel), "%s %s", c->name, what);
    free_all(2, (pg_tensor *[]){a, b});
}

Test(binary, gradcheck_all)
{
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const binary_case *c = &CASES[i];
        uint64_t seed = 100 + 10 * i;
        check_case(c, PG_SHAPE(3, 5), PG_SHAPE(3, 5), seed, "odd shape");
        check_case(c, PG_SHAPE(2, 1, 4), PG_SHAPE(3, 1), seed + 2, "(2,1,4) with (3,1)");
        check_case(c, PG_SHAPE(3), PG_SHAPE(5, 1), seed + 4, "(3) with (5,1)");
        check_case(c, SCALAR, PG_SHAPE(2, 3), seed + 6, "0-dim with (2,3)");
        check_case(c, PG_SHAPE(2, 3), SCALAR, seed + 8, "(2,3) with 0-dim");
    }
}

Test(binary, gradcheck_same_tensor_both_inputs)
{
    /* f(x, x): both gradients land in one buffer. maximum / minimum tie
     * everywhere and give x all of it (derivative 1), as torch */
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const binary_case *c = &CASES[i];
        pg_tensor *x = rand_param(PG_SHAPE(3, 5), c->lo > 0 ? c->lo : 0.5, 2, 200 + i);
        pg_gradcheck_result r = pg_gradcheck(call_binary, 1, &x, (void *)c, NULL);
        cr_expect(r.ok, "%s(x, x): %s", c->name, r.message);
        cr_expect_eq(r.checked, 15);
        pg_tensor_free(x);
    }
    /* and the values: d/dx x*x = 2x, d/dx x-x = 0, d/dx x/x = 0 (by hand) */
    pg_tensor *x = T64(PG_SHAPE(3), -1.0, 0.5, 3.0);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    const binary_fn fns[3] = {pg_mul, pg_sub, pg_div};
    const double want[3][3] = {{-2.0, 1.0, 6.0}, {0, 0, 0}, {0, 0, 0}};
    for (int f = 0; f < 3; f++) {
        pg_zero_grad(x);
        pg_tensor *y = fns[f](g, x, x);
        cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(3))), 0, "%s", pg_graph_error(g));
        assert_values(x->grad, want[f], 3, 1e-15);
    }
    pg_graph_free(g);
    pg_tensor_free(x);
}

Test(binary, only_one_side_requires_grad)
{
    /* b is a constant: only a's gradient is computed, b gets none */
    pg_tensor *a = rand_param(PG_SHAPE(3, 5), -2, 2, 300), *b = rand_param(PG_SHAPE(5), 0.5, 2, 301);
    b->requires_grad = false;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        if (CASES[i].fn != pg_pow) /* pow needs a > 0 */
            assert_gradcheck(call_binary, 2, (pg_tensor *[]){a, b}, (void *)&CASES[i], NULL);
    cr_assert_null(b->grad);
    free_all(2, (pg_tensor *[]){a, b});
}

/* ---- broadcast_to ----------------------------------------------------------------------- */

typedef struct bto_case {
    int ndim;
    int64_t shape[4];
} bto_case;

static pg_tensor *bto_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const bto_case *c = ctx;
    return pg_broadcast_to(g, in[0], c->ndim, c->shape);
}

Test(binary, broadcast_to)
{
    /* (3,1) -> (2,3,4) (torch.broadcast_to) and the gradient summed back */
    pg_tensor *x = T64(PG_SHAPE(3, 1), 1.0, 2.0, 3.0);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_broadcast_to(g, x, PG_SHAPE(2, 3, 4));
    assert_shape(y, PG_SHAPE(2, 3, 4));
    ASSERT_VALUES(y, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(2, 3, 4))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 8, 8, 8);
    /* i64 data and a 0-dim source (by hand); no gradient recorded */
    pg_tensor *ids = TI64(PG_SHAPE(2), 7, 9), *s = T64(SCALAR, 1.5);
    pg_tensor *yi = pg_broadcast_to(g, ids, PG_SHAPE(3, 2));
    cr_assert_eq(yi->dtype, PG_I64);
    ASSERT_VALUES(yi, 0, 7, 9, 7, 9, 7, 9);
    ASSERT_VALUES(pg_broadcast_to(g, s, PG_SHAPE(2, 2)), 0, 1.5, 1.5, 1.5, 1.5);
    pg_graph_free(g);
    /* gradchecks: odd shape to itself, and (3,1) -> (2,3,5) */
    pg_tensor *o = rand_param(PG_SHAPE(3, 5), -1, 1, 400);
    bto_case same = {2, {3, 5}}, wide = {3, {2, 3, 5}}, grow = {3, {2, 3, 5}};
    assert_gradcheck(bto_fn, 1, &o, &same, NULL);
    assert_gradcheck(bto_fn, 1, &o, &grow, NULL);
    pg_tensor *c = rand_param(PG_SHAPE(3, 1), -1, 1, 401);
    assert_gradcheck(bto_fn, 1, &c, &wide, NULL);
    free_all(5, (pg_tensor *[]){x, ids, s, o, c});
}

/* ---- bad input --------------------------------------------------------------------------- */

Test(binary, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *a = T64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), *a32 = T32(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    pg_tensor *b4 = T64(PG_SHAPE(4), 1, 2, 3, 4), *c = T64(PG_SHAPE(3, 1, 2), 1, 2, 3, 4, 5, 6);
    pg_tensor *ids = TI64(PG_SHAPE(3), 1, 2, 3);
    ASSERT_FAILS(pg_add(g, NULL, a), "pg_add: a is NULL");
    ASSERT_FAILS(pg_sub(g, a, NULL), "pg_sub: b is NULL");
    ASSERT_FAILS(pg_mul(g, a, a32), "pg_mul: dtypes differ: a is f64[2,3], b is f32[2,3]");
    ASSERT_FAILS(pg_div(g, ids, ids), "pg_div: a must be f32 or f64, got i64[3]");
    ASSERT_FAILS(pg_pow(g, a, ids), "pg_pow: b must be f32 or f64, got i64[3]");
    /* shapes that do not broadcast: the message names both */
    ASSERT_FAILS(pg_maximum(g, a, b4), "pg_maximum: shapes do not broadcast: f64[2,3], f64[4]");
    ASSERT_FAILS(pg_minimum(g, b4, a), "pg_minimum: shapes do not broadcast: f64[4], f64[2,3]");
    ASSERT_FAILS(pg_add(g, a, c), "pg_add: shapes do not broadcast: f64[2,3], f64[3,1,2]");
    /* broadcast_to */
    ASSERT_FAILS(pg_broadcast_to(g, NULL, PG_SHAPE(2)), "pg_broadcast_to: x is NULL");
    ASSERT_FAILS(pg_broadcast_to(g, a, PG_SHAPE(3)), "pg_broadcast_to: cannot broadcast f64[2,3] to 1 dims");
    ASSERT_FAILS(pg_broadcast_to(g, a, PG_SHAPE(2, 4)), "pg_broadcast_to: f64[2,3] does not broadcast to dim 1 of size 4");
    ASSERT_FAILS(pg_broadcast_to(g, a, PG_SHAPE(5, 3, 3)), "pg_broadcast_to: f64[2,3] does not broadcast to dim 1 of size 3");
    ASSERT_FAILS(pg_broadcast_to(g, a, 2, NULL), "pg_broadcast_to: cannot broadcast f64[2,3] to 2 dims");
    ASSERT_FAILS(pg_broadcast_to(g, a, 9, (int64_t[9]){0}), "pg_broadcast_to: cannot broadcast f64[2,3] to 9 dims");
    cr_assert_str_eq(pg_graph_error(g), "pg_add: a is NULL", "the graph keeps the first error");
    /* a chain with a failure inside returns NULL at its end */
    pg_clear_error();
    cr_assert_null(pg_mul(g, pg_add(g, a, b4), a));
    cr_assert(strstr(pg_last_error(), "pg_mul: a is NULL") != NULL, "%s", pg_last_error());
    pg_graph_free(g);
    free_all(5, (pg_tensor *[]){a, a32, b4, c, ids});
}

Test(binary, empty_tensors)
{
    /* a zero-size dim broadcasts against 1 and gives an empty result (NumPy) */
    pg_tensor *e = pg_zeros(NULL, PG_F64, PG_SHAPE(0, 3)), *r = T64(PG_SHAPE(2, 1, 3), 1, 2, 3, 4, 5, 6);
    pg_tensor *y = pg_add(NULL, e, r);
    assert_shape(y, PG_SHAPE(2, 0, 3));
    free_all(3, (pg_tensor *[]){e, r, y});
}

/* Same-shape inputs run sliced on the thread pool, fresh gradients zeroed slice by slice:
 * values by hand at 100003 elements (several slices, a ragged last one), with 1 and 3
 * threads bit for bit, and a gradient that two ops feed (the second adds to the first). */
Test(binary, same_shape_slices_on_the_pool)
{
    enum { N = 100003 };
    int saved = pg_num_threads();
    static float grad[2][N]; /* off the stack */
    for (int run = 0; run < 2; run++) {
        cr_assert_eq(pg_set_num_threads(run == 0 ? 1 : 3), 0);
        pg_tensor *a = pg_empty(NULL, PG_F32, PG_SHAPE(N)), *b = pg_empty(NULL, PG_F32, PG_SHAPE(N));
        for (int i = 0; i < N; i++) {
            pg_f32(a)[i] = (float)(i % 97) * 0.25f - 7.0f;
            pg_f32(b)[i] = (float)(i % 13) + 0.5f;
        }
        pg_set_requires_grad(a, true);
        pg_set_requires_grad(b, true);
        pg_graph *g = pg_graph_new();
        pg_tensor *y = pg_mul(g, a, b), *z = pg_sub(g, y, a); /* z = a b - a: a gets b - 1 */
        cr_assert_eq(pg_backward(g, pg_sum(g, z, 0, NULL, false)), 0);
        for (int i = 0; i < N; i++) {
            float av = pg_f32(a)[i], bv = pg_f32(b)[i];
            cr_assert_eq(pg_f32(y)[i], av * bv, "y[%d]", i);
            cr_assert_eq(pg_f32(a->grad)[i], bv - 1.0f, "da[%d] = %g, b - 1 = %g", i, pg_f32(a->grad)[i], bv - 1);
            cr_assert_eq(pg_f32(b->grad)[i], av, "db[%d]", i);
            grad[run][i] = pg_f32(a->grad)[i];
        }
        pg_graph_free(g);
        pg_tensor_free(a);
        pg_tensor_free(b);
    }
    cr_assert_eq(memcmp(grad[0], grad[1], sizeof grad[0]), 0, "1 and 3 threads differ");
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

/* Broadcast gradients (dst += src summed over the dims where dst broadcasts, the
 * backward of every broadcasting op, tensor/broadcast.c): for reductions over leading,
 * middle, inner, non-adjacent and all dims, over a long inner dim of dst's own (slices of
 * columns), row sums (slices of rows) and a bias's gradient over enough rows (blocks of
 * rows: few columns, a linear layer's 128 over 2048 rows, 384 over 1000 in 10 blocks), the
 * sums equal a plain loop over src within rounding and are the same bits on 1 and 2
 * threads. */
typedef struct sum_case {
    int nd;
    int64_t src[4], dst[4]; /* dst as broadcast to src's rank (1 where it broadcasts) */
    pg_dtype dtype;
} sum_case;

static void sum_to_run(void *ctx, pg_tensor **res)
{
    const sum_case *c = ctx;
    pg_rng r = pg_rng_init(5);
    pg_tensor *src = pg_randn(NULL, c->dtype, c->nd, c->src, &r), *dst = pg_randn(NULL, c->dtype, c->nd, c->dst, &r);
    pg_sum_to_accumulate(dst, src);
    res[0] = dst;
    pg_tensor_free(src);
}

/* the expected dst in double: its start plus every src element added where it maps */
static void sum_to_expected(const sum_case *c, pg_tensor *dst, double tol)
{
    pg_rng r = pg_rng_init(5);
    pg_tensor *src = pg_randn(NULL, c->dtype, c->nd, c->src, &r), *d0 = pg_randn(NULL, c->dtype, c->nd, c->dst, &r);
    pg_tensor *s64 = pg_cast(NULL, src, PG_F64), *e = pg_cast(NULL, d0, PG_F64); /* the run's values */
    for (int64_t f = 0; f < s64->numel; f++) {
        int64_t rem = f, at = 0, scale = 1;
        for (int d = c->nd - 1; d >= 0; d--) {
            int64_t i = rem % c->src[d];
            rem /= c->src[d];
            at += (c->dst[d] == 1 ? 0 : i) * scale;
            scale *= c->dst[d];
        }
        pg_f64(e)[at] += pg_f64(s64)[f];
    }
    pg_tensor *got = pg_cast(NULL, dst, PG_F64);
    for (int64_t i = 0; i < e->numel; i++)
        cr_assert_leq(fabs(pg_f64(got)[i] - pg_f64(e)[i]), tol * (1 + fabs(pg_f64(e)[i])), "element %lld: %.17g vs %.17g",
                      (long long)i, pg_f64(got)[i], pg_f64(e)[i]);
    pg_tensor *all[] = {src, d0, s64, e, got};
    free_all(5, all);
}

Test(binary, broadcast_gradient_sums)
{
    const sum_case cases[] = {
        {3, {64, 300, 40}, {1, 300, 40}, PG_F64},    {3, {64, 300, 40}, {64, 1, 40}, PG_F64},
        {3, {64, 300, 40}, {64, 300, 1}, PG_F64},    {3, {64, 300, 40}, {1, 1, 1}, PG_F64},
        {2, {16, 5000}, {1, 5000}, PG_F64},          {4, {2, 30, 4, 500}, {1, 30, 1, 500}, PG_F64},
        {4, {5, 60, 7, 80}, {5, 1, 7, 1}, PG_F32},   {3, {64, 300, 40}, {1, 300, 40}, PG_F32},
        {2, {3, 70001}, {1, 70001}, PG_F32},         {4, {2, 30, 4, 5000}, {1, 30, 1, 1}, PG_F64},
        {3, {40, 3000, 7}, {40, 3000, 1}, PG_F32},   {2, {70000, 4}, {1, 4}, PG_F32},
        {3, {3, 9000, 7}, {1, 1, 7}, PG_F64},        {2, {2048, 128}, {1, 128}, PG_F32},
        {2, {1000, 384}, {1, 384}, PG_F64},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pg_tensor *res[1];
        sum_to_run((void *)&cases[k], res);
        sum_to_expected(&cases[k], res[0], cases[k].dtype == PG_F64 ? 1e-12 : 1e-4);
        pg_tensor_free(res[0]);
        assert_same_bits_on_1_and_2_threads(sum_to_run, (void *)&cases[k], 1, NULL);
    }
}

/* Broadcasting ops on the pool: the forward in slices of the plan's inner loops, the
 * backward too for a gradient no two loops add into one element of (FIRE's num / den
 * with den (1, L, 1)), the other on one thread (XL's q + u with u (H, 1, D)). The product and
 * both gradients equal a plain loop over the output in row-major order bit for bit (the
 * terms of a broadcast gradient added in that order), and the same bits on 1 and 2
 * threads, for mul and div, float and double. */
typedef struct bcast_case {
    int nd;
    int64_t sa[4], sb[4];
    pg_dtype dtype;
    bool div;
} bcast_case;

static void bcast_run_case(void *ctx, pg_tensor **res)
{
    const bcast_case *c = ctx;
    pg_rng r = pg_rng_init(9);
    pg_tensor *a = pg_randn(NULL, c->dtype, c->nd, c->sa, &r), *b = pg_rand(NULL, c->dtype, c->nd, c->sb, &r);
    pg_set_requires_grad(a, true);
    pg_set_requires_grad(b, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = c->div ? pg_div(g, a, b) : pg_mul(g, a, b);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_rng ru = pg_rng_init(10);
    cr_assert_eq(pg_backward_with(g, y, pg_randn(g, c->dtype, y->ndim, y->shape, &ru)), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, y);
    res[1] = take_grad(a);
    res[2] = take_grad(b);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){a, b});
}

/* flat index of operand s (broadcast to shape o) at output index f */
static int64_t bcast_at(int nd, const int64_t *o, const int64_t *s, int64_t f)
{
    int64_t at = 0, scale = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int64_t i = f % o[d];
        f /= o[d];
        at += (s[d] == 1 ? 0 : i) * scale;
        scale *= s[d];
    }
    return at;
}

#define BCAST_REFERENCE(T, sfx)                                                                                \
    static void bcast_reference_##sfx(const bcast_case *c, pg_tensor *const *got)                              \
    {                                                                                                          \
        pg_rng r = pg_rng_init(9), ru = pg_rng_init(10);                                                       \
        pg_tensor *a = pg_randn(NULL, c->dtype, c->nd, c->sa, &r), *b = pg_rand(NULL, c->dtype, c->nd, c->sb, &r); \
        pg_tensor *up = pg_randn(NULL, c->dtype, got[0]->ndim, got[0]->shape, &ru);                            \
        pg_tensor *ga = pg_zeros(NULL, c->dtype, c->nd, c->sa), *gb = pg_zeros(NULL, c->dtype, c->nd, c->sb);  \
        const T *av = a->data, *bv = b->data, *gy = up->data, *y = got[0]->data;                               \
        T *da = ga->data, *db = gb->data;                                                                      \
        for (int64_t f = 0; f < got[0]->numel; f++) {                                                          \
            int64_t ia = bcast_at(c->nd, got[0]->shape, c->sa, f), ib = bcast_at(c->nd, got[0]->shape, c->sb, f); \
            cr_assert_eq(y[f], av[ia] * bv[ib], "y[%lld]", (long long)f);                                      \
            da[ia] += gy[f] * bv[ib];                                                                          \
            db[ib] += gy[f] * av[ia];                                                                          \
        }                                                                                                      \
        cr_assert(!memcmp(da, got[1]->data, (size_t)ga->numel * sizeof(T)), "da differs from the plain loop"); \
        cr_assert(!memcmp(db, got[2]->data, (size_t)gb->numel * sizeof(T)), "db differs from the plain loop"); \
        free_all(4, (pg_tensor *[]){a, b, up, ga});                                                            \
        pg_tensor_free(gb);                                                                                    \
    }
BCAST_REFERENCE(float, f32)
BCAST_REFERENCE(double, f64)

Test(binary, broadcast_ops_on_the_pool)
{
    const bcast_case cases[] = {
        {3, {1, 256, 256}, {1, 256, 1}, PG_F32, false}, /* rows own their gradients */
        {3, {1, 256, 256}, {1, 256, 1}, PG_F64, false},
        {2, {300, 200}, {300, 1}, PG_F32, false},
        {4, {2, 4, 64, 32}, {1, 4, 1, 32}, PG_F32, false}, /* b broadcast along outer dims */
        {3, {1, 1, 1}, {64, 30, 40}, PG_F32, false},       /* a one element (FIRE's |c| d) */
        {3, {64, 1, 300}, {1, 40, 300}, PG_F64, false},    /* both */
        {3, {1, 256, 256}, {1, 256, 1}, PG_F32, true},
        {4, {2, 4, 64, 32}, {1, 4, 1, 32}, PG_F64, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pg_tensor *res[3];
        bcast_run_case((void *)&cases[i], res);
        if (!cases[i].div)
            (cases[i].dtype == PG_F32 ? bcast_reference_f32 : bcast_reference_f64)(&cases[i], res);
        free_all(3, res);
        assert_same_bits_on_1_and_2_threads(bcast_run_case, (void *)&cases[i], 3,
                                            (const char *const[]){"y", "da", "db"});
    }
}
