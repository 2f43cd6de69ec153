/* Mask ops: comparisons, logical ops, where, masked_fill, tril / triu.
 * Expected numbers were computed with PyTorch 1.13 (torch.eq ... torch.ge,
 * torch.where, Tensor.masked_fill, torch.tril / torch.triu) unless noted. */
#include "testutil.h"

/* the shape arguments of a 0-dim tensor */
#define SCALAR 0, NULL

/* ---- comparisons -------------------------------------------------------------------- */

typedef pg_tensor *(*pair_fn)(pg_graph *, pg_tensor *, pg_tensor *);

Test(mask, compare_values_broadcast_nan)
{
    /* (2,3) against (3); NaN is unequal to everything, itself included */
    pg_tensor *a = T64(PG_SHAPE(2, 3), 1.0, 2.0, NAN, 3.0, -1.0, 2.0);
    pg_tensor *b = T64(PG_SHAPE(3), 2.0, 2.0, NAN);
    a->requires_grad = true;
    pg_graph *g = pg_graph_new();
    const pair_fn fns[6] = {pg_eq, pg_ne, pg_lt, pg_le, pg_gt, pg_ge};
    const double want[6][6] = {
        {0, 1, 0, 0, 0, 0}, /* eq */
        {1, 0, 1, 1, 1, 1}, /* ne */
        {1, 0, 0, 0, 1, 0}, /* lt */
        {1, 1, 0, 0, 1, 0}, /* le */
        {0, 0, 0, 1, 0, 0}, /* gt */
        {0, 1, 0, 1, 0, 0}, /* ge */
    };
    for (int f = 0; f < 6; f++) {
        pg_tensor *y = fns[f](g, a, b);
        assert_shape(y, PG_SHAPE(2, 3));
        cr_assert_eq(y->dtype, PG_BOOL);
        cr_assert(!y->requires_grad, "comparisons have no gradient");
        assert_values(y, want[f], 6, 0);
    }
    cr_assert_eq(pg_graph_num_nodes(g), 0, "comparisons record nothing");
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){a, b});
}

Test(mask, compare_other_dtypes)
{
    /* f32 and i64 with a 0-dim scalar on either side, bool against bool (by hand) */
    pg_tensor *a32 = T32(PG_SHAPE(4), -1.5f, 0.0f, 2.0f, 0.25f);
    pg_tensor *s32 = T32(SCALAR, 0.25f);
    pg_tensor *i = TI64(PG_SHAPE(2, 2), 3, -7, 5, 3);
    pg_tensor *si = TI64(SCALAR, 3);
    pg_tensor *m1 = TBOOL(PG_SHAPE(4), 0, 1, 1, 0), *m2 = TBOOL(PG_SHAPE(4), 0, 0, 1, 1);
    pg_tensor *ys[6] = {pg_le(NULL, a32, s32), pg_gt(NULL, s32, a32), pg_eq(NULL, i, si), pg_lt(NULL, si, i),
                        pg_ne(NULL, m1, m2), pg_ge(NULL, m1, m2)};
    ASSERT_VALUES(ys[0], 0, 1, 1, 0, 1);
    ASSERT_VALUES(ys[1], 0, 1, 1, 0, 0);
    ASSERT_VALUES(ys[2], 0, 1, 0, 0, 1);
    assert_shape(ys[2], PG_SHAPE(2, 2));
    ASSERT_VALUES(ys[3], 0, 0, 0, 1, 0);
    ASSERT_VALUES(ys[4], 0, 0, 1, 0, 1);
    ASSERT_VALUES(ys[5], 0, 1, 1, 1, 0);
    free_all(6, ys);
    free_all(6, (pg_tensor *[]){a32, s32, i, si, m1, m2});
}

Test(mask, logical_ops)
{
    /* truth tables by hand; (2,1) against (3) broadcasts to (2,3) */
    pg_tensor *a = TBOOL(PG_SHAPE(2, 1), 1, 0), *b = TBOOL(PG_SHAPE(3), 1, 0, 1);
    pg_tensor *and_ = pg_logical_and(NULL, a, b), *or_ = pg_logical_or(NULL, a, b), *not_ = pg_logical_not(NULL, b);
    assert_shape(and_, PG_SHAPE(2, 3));
    cr_assert_eq(and_->dtype, PG_BOOL);
    ASSERT_VALUES(and_, 0, 1, 0, 1, 0, 0, 0);
    ASSERT_VALUES(or_, 0, 1, 1, 1, 1, 0, 1);
    assert_shape(not_, PG_SHAPE(3));
    ASSERT_VALUES(not_, 0, 0, 1, 0);
    free_all(5, (pg_tensor *[]){a, b, and_, or_, not_});
}

Test(mask, compare_chain_to_mask)
{
    /* a causal mask made from comparisons: row index >= column index */
    pg_tensor *row = TI64(PG_SHAPE(3, 1), 0, 1, 2), *col = TI64(PG_SHAPE(3), 0, 1, 2);
    pg_graph *g = pg_graph_new();
    pg_tensor *causal = pg_ge(g, row, col);
    ASSERT_VALUES(causal, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1);
    ASSERT_VALUES(pg_logical_not(g, causal), 0, 0, 1, 1, 0, 0, 1, 0, 0, 0);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){row, col});
}

/* ---- where -------------------------------------------------------------------------- */

Test(mask, where_values_and_gradient)
{
    pg_graph *g = pg_graph_new();
    /* cond (2,1), a (3), b 0-dim -> (2,3) */
    pg_tensor *c1 = TBOOL(PG_SHAPE(2, 1), 1, 0), *a1 = T64(PG_SHAPE(3), 1, 2, 3), *b1 = T64(SCALAR, -1);
    pg_tensor *y1 = pg_where(g, c1, a1, b1);
    assert_shape(y1, PG_SHAPE(2, 3));
    ASSERT_VALUES(y1, 0, 1, 2, 3, -1, -1, -1);
    /* cond (2,3), a (3), b (2,1), upstream [[1,2,3],[4,5,6]]: gradients sum over broadcast dims */
    pg_tensor *c = TBOOL(PG_SHAPE(2, 3), 1, 0, 1, 0, 0, 1);
    pg_tensor *a = T64(PG_SHAPE(3), 1, 2, 3), *b = T64(PG_SHAPE(2, 1), 5, 6);
    a->requires_grad = b->requires_grad = true;
    pg_tensor *y = pg_where(g, c, a, b);
    ASSERT_VALUES(y, 0, 1, 5, 3, 6, 6, 3);
    cr_assert(y->requires_grad);
    cr_assert_eq(pg_backward_with(g, y, pg_from_array(g, PG_F64, PG_SHAPE(2, 3), (double[]){1, 2, 3, 4, 5, 6})), 0,
                 "%s", pg_graph_error(g));
    ASSERT_VALUES(a->grad, 0, 1, 0, 9);
    ASSERT_VALUES(b->grad, 0, 2, 9);
    pg_graph_free(g);
    free_all(6, (pg_tensor *[]){c1, a1, b1, c, a, b});
}

Test(mask, where_other_dtypes)
{
    /* i64 and bool data select without gradient; f32 keeps f32 (by hand) */
    pg_tensor *c = TBOOL(PG_SHAPE(3), 0, 1, 1);
    pg_tensor *ia = TI64(PG_SHAPE(3), 1, 2, 3), *ib = TI64(PG_SHAPE(2, 1), -4, 7);
    pg_tensor *ba = TBOOL(PG_SHAPE(3), 1, 1, 0), *bb = TBOOL(SCALAR, 0);
    pg_tensor *fa = T32(PG_SHAPE(3), 0.5f, 1.5f, 2.5f), *fb = T32(PG_SHAPE(3), -1.0f, -2.0f, -3.0f);
    pg_tensor *yi = pg_where(NULL, c, ia, ib), *yb = pg_where(NULL, c, ba, bb), *yf = pg_where(NULL, c, fa, fb);
    cr_assert_eq(yi->dtype, PG_I64);
    assert_shape(yi, PG_SHAPE(2, 3));
    ASSERT_VALUES(yi, 0, -4, 2, 3, 7, 2, 3);
    cr_assert_eq(yb->dtype, PG_BOOL);
    ASSERT_VALUES(yb, 0, 0, 1, 0);
    cr_assert_eq(yf->dtype, PG_F32);
    ASSERT_VALUES(yf, 0, -1, 1.5, 2.5);
    free_all(10, (pg_tensor *[]){c, ia, ib, ba, bb, fa, fb, yi, yb, yf});
}

static pg_tensor *where_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_where(g, in[0], in[1], in[2]);
}

/* where(cond, x, x * x): the same tensor feeds both branches */
static pg_tensor *where_same_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_where(g, in[0], in[1], pg_mul(g, in[1], in[1]));
}

static pg_tensor *random_mask(int ndim, const int64_t *shape, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_tensor *m = pg_tensor_empty(NULL, PG_BOOL, ndim, shape);
    pg_fill_bernoulli(m, &r, 0.5);
    return m;
}

Test(mask, where_gradcheck)
{
    /* odd shape, all three (3,5) */
    pg_tensor *c = random_mask(PG_SHAPE(3, 5), 1);
    pg_tensor *a = rand_param(PG_SHAPE(3, 5), -2, 2, 2), *b = rand_param(PG_SHAPE(3, 5), -2, 2, 3);
    assert_gradcheck(where_fn, 3, (pg_tensor *[]){c, a, b}, NULL, NULL);
    /* broadcasting: cond (3,1,5), a (4,1), b (5) -> (3,4,5) */
    pg_tensor *cb = random_mask(PG_SHAPE(3, 1, 5), 4);
    pg_tensor *ab = rand_param(PG_SHAPE(4, 1), -2, 2, 5), *bb = rand_param(PG_SHAPE(5), -2, 2, 6);
    assert_gradcheck(where_fn, 3, (pg_tensor *[]){cb, ab, bb}, NULL, NULL);
    /* only b requires grad */
    ab->requires_grad = false;
    assert_gradcheck(where_fn, 3, (pg_tensor *[]){cb, ab, bb}, NULL, NULL);
    /* one tensor in both branches, cond broadcast (1,5) against (3,5) */
    pg_tensor *cs = random_mask(PG_SHAPE(1, 5), 7);
    assert_gradcheck(where_same_fn, 2, (pg_tensor *[]){cs, a}, NULL, NULL);
    free_all(7, (pg_tensor *[]){c, a, b, cb, ab, bb, cs});
}

/* ---- masked_fill ---------------------------------------------------------------------- */

Test(mask, masked_fill_values_and_gradient)
{
    /* x (2,3), mask (3) broadcast over rows, filled with -inf; exp makes the
     * filled entries 0 and gives them no gradient */
    pg_tensor *x = T64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    pg_tensor *m = TBOOL(PG_SHAPE(3), 0, 1, 0);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_masked_fill(g, x, m, -INFINITY);
    assert_shape(y, PG_SHAPE(2, 3));
    ASSERT_VALUES(y, 0, 1, -INFINITY, 3, 4, -INFINITY, 6);
    pg_tensor *loss = pg_exp(g, y);
    cr_assert_eq(pg_backward_with(g, loss, pg_ones(g, PG_F64, PG_SHAPE(2, 3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-15, 2.718281828459045, 0.0, 20.085536923187668, 54.598150033144236, 0.0,
                  403.4287934927351);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){x, m});
}

Test(mask, masked_fill_other_dtypes)
{
    /* by hand: f32, i64 and bool data; a 0-dim mask fills everything */
    pg_tensor *m = TBOOL(PG_SHAPE(2, 1), 1, 0), *all = TBOOL(SCALAR, 1);
    pg_tensor *f = T32(PG_SHAPE(2, 2), 1, 2, 3, 4);
    pg_tensor *i = TI64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    pg_tensor *b = TBOOL(PG_SHAPE(2, 2), 0, 1, 0, 1);
    pg_tensor *ys[4] = {pg_masked_fill(NULL, f, m, 0.5), pg_masked_fill(NULL, i, m, -7),
                        pg_masked_fill(NULL, b, m, 2.0), pg_masked_fill(NULL, i, all, 9)};
    cr_assert_eq(ys[0]->dtype, PG_F32);
    ASSERT_VALUES(ys[0], 0, 0.5, 0.5, 3, 4);
    cr_assert_eq(ys[1]->dtype, PG_I64);
    ASSERT_VALUES(ys[1], 0, -7, -7, 3, 4);
    cr_assert_eq(ys[2]->dtype, PG_BOOL);
    ASSERT_VALUES(ys[2], 0, 1, 1, 0, 1);
    ASSERT_VALUES(ys[3], 0, 9, 9, 9, 9);
    free_all(4, ys);
    free_all(5, (pg_tensor *[]){m, all, f, i, b});
}

static pg_tensor *fill_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_masked_fill(g, in[0], in[1], *(const double *)ctx);
}

/* exp(masked_fill(x, mask, -inf)): -inf would make the projected loss NaN */
static pg_tensor *fill_inf_exp_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_exp(g, pg_masked_fill(g, in[0], in[1], -INFINITY));
}

/* masked_fill on the thread pool (slices of the broadcast plan's inner loops): large
 * tensors with masks broadcast three ways give every element as a plain loop does,
 * forward and backward, and the same bits on 1 and 2 threads */
typedef struct fill_case {
    pg_tensor *x, *mask, *up;
} fill_case;

static void fill_run_case(void *ctx, pg_tensor **res)
{
    fill_case *c = ctx;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_masked_fill(g, c->x, c->mask, -2.5);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward_with(g, y, c->up), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, y);
    res[1] = take_grad(c->x);
    pg_graph_free(g);
}

Test(mask, masked_fill_on_the_pool)
{
    const int64_t mshapes[][4] = {{1, 1, 130, 257}, {4, 1, 1, 257}, {4, 3, 130, 1}};
    for (int s = 0; s < 3; s++) {
        fill_case c = {randt(PG_SHAPE(4, 3, 130, 257), 1 + s, true), NULL,
                       randt(PG_SHAPE(4, 3, 130, 257), 10 + s, false)};
        const int64_t *ms = mshapes[s];
        c.mask = pg_tensor_empty(NULL, PG_BOOL, 4, ms);
        for (int64_t i = 0; i < c.mask->numel; i++)
            pg_bool(c.mask)[i] = (i * 7 + s) % 5 == 0;
        pg_tensor *res[2];
        fill_run_case(&c, res);
        for (int64_t i = 0; i < c.x->numel; i++) { /* (b, h, r, k) against the mask's broadcast entry */
            int64_t k = i % 257, r = i / 257 % 130, h = i / (257 * 130) % 3, b = i / (257 * 130 * 3);
            int64_t mi = ((ms[0] > 1 ? b : 0) * ms[1] + (ms[1] > 1 ? h : 0)) * ms[2] * ms[3] +
                         (ms[2] > 1 ? r : 0) * ms[3] + (ms[3] > 1 ? k : 0);
            bool hide = pg_bool(c.mask)[mi];
            cr_assert_eq(pg_get(res[0], i), hide ? -2.5 : pg_get(c.x, i), "case %d, element %lld", s, (long long)i);
            cr_assert_eq(pg_get(res[1], i), hide ? 0.0 : pg_get(c.up, i), "case %d, gradient %lld", s, (long long)i);
        }
        pg_tensor_free(res[0]);
        pg_tensor_free(res[1]);
        assert_same_bits_on_1_and_2_threads(fill_run_case, &c, 2, (const char *const[]){"y", "dx"});
        free_all(3, (pg_tensor *[]){c.x, c.mask, c.up});
    }
}

Test(mask, masked_fill_gradcheck)
{
    double value = 0.75;
    /* odd shape, mask of the same shape */
    pg_tensor *x = rand_param(PG_SHAPE(3, 5), -2, 2, 11), *m = random_mask(PG_SHAPE(3, 5), 12);
    assert_gradcheck(fill_fn, 2, (pg_tensor *[]){x, m}, &value, NULL);
    /* mask broadcast: (5) and (3,1,5) against x (3,4,5) */
    pg_tensor *x3 = rand_param(PG_SHAPE(3, 4, 5), -2, 2, 13);
    pg_tensor *mb = random_mask(PG_SHAPE(5), 14), *mc = random_mask(PG_SHAPE(3, 1, 5), 15);
    assert_gradcheck(fill_fn, 2, (pg_tensor *[]){x3, mb}, &value, NULL);
    assert_gradcheck(fill_fn, 2, (pg_tensor *[]){x3, mc}, &value, NULL);
    /* -inf fill, as for attention logits */
    assert_gradcheck(fill_inf_exp_fn, 2, (pg_tensor *[]){x3, mc}, NULL, NULL);
    free_all(5, (pg_tensor *[]){x, m, x3, mb, mc});
}

/* ---- tril / triu ------------------------------------------------------------------------ */

Test(mask, tril_triu_values)
{
    /* x = 1..12 as (3,4); every k from the PyTorch run */
    pg_tensor *x = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(3, 4));
    pg_fill_arange(x, 1, 1);
    pg_graph *g = pg_graph_new();
    ASSERT_VALUES(pg_tril(g, x, 0), 0, 1, 0, 0, 0, 5, 6, 0, 0, 9, 10, 11, 0);
    ASSERT_VALUES(pg_triu(g, x, 0), 0, 1, 2, 3, 4, 0, 6, 7, 8, 0, 0, 11, 12);
    ASSERT_VALUES(pg_tril(g, x, 1), 0, 1, 2, 0, 0, 5, 6, 7, 0, 9, 10, 11, 12);
    ASSERT_VALUES(pg_triu(g, x, 1), 0, 0, 2, 3, 4, 0, 0, 7, 8, 0, 0, 0, 12);
    ASSERT_VALUES(pg_tril(g, x, -1), 0, 0, 0, 0, 0, 5, 0, 0, 0, 9, 10, 0, 0);
    ASSERT_VALUES(pg_triu(g, x, -1), 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 10, 11, 12);
    ASSERT_VALUES(pg_tril(g, x, 3), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    ASSERT_VALUES(pg_triu(g, x, 3), 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0);
    ASSERT_VALUES(pg_tril(g, x, -3), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    ASSERT_VALUES(pg_triu(g, x, -3), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    /* extreme k (as torch with k = +-10; no overflow) */
    ASSERT_VALUES(pg_tril(g, x, INT64_MAX), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    ASSERT_VALUES(pg_triu(g, x, INT64_MAX), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    ASSERT_VALUES(pg_tril(g, x, INT64_MIN), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    ASSERT_VALUES(pg_triu(g, x, INT64_MIN), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    /* batched (2,3,3), k = -1 */
    pg_tensor *xb = pg_tensor_empty(NULL, PG_F32, PG_SHAPE(2, 3, 3));
    pg_fill_arange(xb, 1, 1);
    pg_tensor *yb = pg_tril(g, xb, -1);
    assert_shape(yb, PG_SHAPE(2, 3, 3));
    cr_assert_eq(yb->dtype, PG_F32);
    ASSERT_VALUES(yb, 0, 0, 0, 0, 4, 0, 0, 7, 8, 0, 0, 0, 0, 13, 0, 0, 16, 17, 0);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){x, xb});
}

Test(mask, tril_triu_int_and_bool)
{
    /* i64 (2,4) with triu k=1 (torch); a causal bool mask from ones (by hand) */
    pg_tensor *i = TI64(PG_SHAPE(2, 4), 1, 2, 3, 4, 5, 6, 7, 8);
    pg_tensor *yi = pg_triu(NULL, i, 1);
    cr_assert_eq(yi->dtype, PG_I64);
    ASSERT_VALUES(yi, 0, 0, 2, 3, 4, 0, 0, 7, 8);
    pg_tensor *ones = pg_ones(NULL, PG_BOOL, PG_SHAPE(3, 3));
    pg_tensor *causal = pg_tril(NULL, ones, 0);
    cr_assert_eq(causal->dtype, PG_BOOL);
    ASSERT_VALUES(causal, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1);
    free_all(4, (pg_tensor *[]){i, yi, ones, causal});
}

Test(mask, tril_triu_gradient_values)
{
    /* the gradient passes through the kept entries only (upstream ones) */
    pg_tensor *x = rand_param(PG_SHAPE(2, 3), -1, 1, 21);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_add(g, pg_tril(g, x, 0), pg_mul_scalar(g, pg_triu(g, x, 2), 10));
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(2, 3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 1, 0, 10, 1, 1, 0);
    pg_graph_free(g);
    pg_tensor_free(x);
}

typedef struct tri_case {
    bool lower;
    int64_t k;
} tri_case;

static pg_tensor *tri_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const tri_case *c = ctx;
    return c->lower ? pg_tril(g, in[0], c->k) : pg_triu(g, in[0], c->k);
}

Test(mask, tril_triu_gradcheck)
{
    /* odd shapes (3,5) and batched (2,3,4), several offsets, both ops */
    pg_tensor *x = rand_param(PG_SHAPE(3, 5), -2, 2, 31), *xb = rand_param(PG_SHAPE(2, 3, 4), -2, 2, 32);
    const int64_t ks[5] = {0, 1, -1, 2, -2};
    for (int lower = 0; lower < 2; lower++)
        for (int i = 0; i < 5; i++) {
            tri_case c = {lower, ks[i]};
            assert_gradcheck(tri_fn, 1, &x, &c, NULL);
            assert_gradcheck(tri_fn, 1, &xb, &c, NULL);
        }
    free_all(2, (pg_tensor *[]){x, xb});
}

/* ---- bad input ------------------------------------------------------------------------- */

Test(mask, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *a = T64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), *a32 = T32(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    pg_tensor *b4 = T64(PG_SHAPE(4), 1, 2, 3, 4), *v = T64(PG_SHAPE(5), 1, 2, 3, 4, 5);
    pg_tensor *m = TBOOL(PG_SHAPE(3), 1, 0, 1), *m4 = TBOOL(PG_SHAPE(2, 4), 0, 0, 0, 0, 0, 0, 0, 0);
    pg_tensor *ids = TI64(PG_SHAPE(3), 1, 2, 3);
    /* comparisons */
    ASSERT_FAILS(pg_eq(g, NULL, a), "pg_eq: a is NULL");
    ASSERT_FAILS(pg_ge(g, a, NULL), "pg_ge: b is NULL");
    ASSERT_FAILS(pg_lt(g, a, a32), "pg_lt: dtypes differ: a is f64[2,3], b is f32[2,3]");
    ASSERT_FAILS(pg_ne(g, a, ids), "pg_ne: dtypes differ: a is f64[2,3], b is i64[3]");
    ASSERT_FAILS(pg_gt(g, a, b4), "pg_gt: shapes do not broadcast: f64[2,3], f64[4]");
    ASSERT_FAILS(pg_le(g, b4, a), "pg_le: shapes do not broadcast: f64[4], f64[2,3]");
    /* logical */
    ASSERT_FAILS(pg_logical_and(g, m, a), "pg_logical_and: b must be bool, got f64[2,3]");
    ASSERT_FAILS(pg_logical_or(g, NULL, m), "pg_logical_or: a is NULL");
    ASSERT_FAILS(pg_logical_or(g, m, m4), "pg_logical_or: shapes do not broadcast: bool[3], bool[2,4]");
    ASSERT_FAILS(pg_logical_not(g, ids), "pg_logical_not: a must be bool, got i64[3]");
    ASSERT_FAILS(pg_logical_not(g, NULL), "pg_logical_not: a is NULL");
    /* where */
    ASSERT_FAILS(pg_where(g, a, a, a), "pg_where: cond must be bool, got f64[2,3]");
    ASSERT_FAILS(pg_where(g, NULL, a, a), "pg_where: cond is NULL");
    ASSERT_FAILS(pg_where(g, m, a, NULL), "pg_where: b is NULL");
    ASSERT_FAILS(pg_where(g, m, a, a32), "pg_where: dtypes differ: a is f64[2,3], b is f32[2,3]");
    ASSERT_FAILS(pg_where(g, m4, a, a), "pg_where: shapes do not broadcast: bool[2,4], f64[2,3], f64[2,3]");
    ASSERT_FAILS(pg_where(g, m, a, v), "pg_where: shapes do not broadcast: bool[3], f64[2,3], f64[5]");
    /* masked_fill */
    ASSERT_FAILS(pg_masked_fill(g, NULL, m, 0), "pg_masked_fill: x is NULL");
    ASSERT_FAILS(pg_masked_fill(g, a, NULL, 0), "pg_masked_fill: mask is NULL");
    ASSERT_FAILS(pg_masked_fill(g, a, ids, 0), "pg_masked_fill: mask must be bool, got i64[3]");
    ASSERT_FAILS(pg_masked_fill(g, a, m4, 0), "pg_masked_fill: mask bool[2,4] does not broadcast to x f64[2,3]");
    /* the mask must broadcast to x's shape, not just with it */
    ASSERT_FAILS(pg_masked_fill(g, b4, m4, 0), "pg_masked_fill: mask bool[2,4] does not broadcast to x f64[4]");
    ASSERT_FAILS(pg_masked_fill(g, ids, m, -INFINITY), "pg_masked_fill: value -inf does not fit x i64[3]");
    ASSERT_FAILS(pg_masked_fill(g, ids, m, NAN), "does not fit x i64[3]");
    /* tril / triu */
    ASSERT_FAILS(pg_tril(g, b4, 0), "pg_tril: x must have at least 2 dims, got f64[4]");
    ASSERT_FAILS(pg_triu(g, pg_full(g, PG_F64, SCALAR, 1.0), 0), "pg_triu: x must have at least 2 dims, got f64[]");
    ASSERT_FAILS(pg_triu(g, NULL, 0), "pg_triu: x is NULL");
    cr_assert_str_eq(pg_graph_error(g), "pg_eq: a is NULL", "the graph keeps the first error");
    pg_graph_free(g);
    free_all(7, (pg_tensor *[]){a, a32, b4, v, m, m4, ids});
}

Test(mask, empty_tensors)
{
    /* zero-size dims go through every op */
    pg_tensor *x = pg_zeros(NULL, PG_F64, PG_SHAPE(0, 3));
    pg_tensor *m = pg_zeros(NULL, PG_BOOL, PG_SHAPE(3));
    pg_tensor *ys[4] = {pg_lt(NULL, x, x), pg_where(NULL, m, x, x), pg_masked_fill(NULL, x, m, 1), pg_tril(NULL, x, 0)};
    for (int i = 0; i < 4; i++)
        assert_shape(ys[i], PG_SHAPE(0, 3));
    free_all(4, ys);
    free_all(2, (pg_tensor *[]){x, m});
}
