/* pg_cope_interp (autograd/op_cope.c): values and gradients by hand, the same bits as
 * the chain of ops it replaces (both dtypes, masks, clamping, accumulated gradients),
 * a gradcheck, the same bits for any thread count, NaN logits, empty shapes, bad input. */
#include "testutil.h"

#include "../tensor/threadpool.h"

/* causal, logits 0 (every visible gate 1/2), z rows (10, 20, 40) and (1, 2, 4), out_scale 2:
 * row 0 sums (1/2, 0, 0), row 1 (1, 1/2, 0) */
Test(cope_interp, by_hand)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *s = pg_zeros(NULL, PG_F64, PG_SHAPE(1, 1, 2, 3));
    pg_tensor *z = T64(PG_SHAPE(1, 1, 2, 3), 10, 20, 40, 1, 2, 4);
    s->requires_grad = z->requires_grad = true;
    pg_tensor *y = pg_cope_interp(g, s, z, NULL, true, 1.0, 2.0);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    ASSERT_VALUES(y, 0, 30, 20, 20, 4, 3, 2);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, y->ndim, y->shape)), 0, "%s", pg_graph_error(g));
    /* d = 2. Row 0: p = 1/2 -> z0, z1 += 1, dx = 2 (20 - 10); p = 0 twice -> z0 += 2, dx = 20;
     * dg = 20, 40, 60, ds = dg / 4 where visible: 5. Row 1: p = 1 -> z1 += 2, dx = 2 (4 - 2);
     * p = 1/2 -> z0, z1 += 1, dx = 2; p = 0 -> z0 += 2, dx = 2; ds = (4, 6) / 4 */
    ASSERT_VALUES(z->grad, 0, 5, 1, 0, 3, 3, 0);
    ASSERT_VALUES(s->grad, 0, 5, 0, 0, 1, 1.5, 0);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){s, z});
}

/* key 1 masked, saturated gates (sigmoid(40) = 1 in double): sums (3, 2, 2, 1) clamped to n - 1 = 2 */
Test(cope_interp, mask_and_clamp_by_hand)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *s = T64(PG_SHAPE(1, 1, 1, 4), 40, 0, 40, 40), *z = T64(PG_SHAPE(1, 1, 1, 3), 1, 2, 4);
    pg_tensor *keep = TBOOL(PG_SHAPE(1, 4), 1, 0, 1, 1);
    s->requires_grad = z->requires_grad = true;
    pg_tensor *y = pg_cope_interp(g, s, z, keep, false, 1.0, 1.0);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    ASSERT_VALUES(y, 0, 4, 4, 4, 2);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, y->ndim, y->shape)), 0, "%s", pg_graph_error(g));
    /* p = 2 three times: z2 += 1 each, dx = 0 (c = f; the first sum 3 is clamped too);
     * p = 1: z1 += 1, dx = 4 - 2, but every gate is saturated (g (1 - g) = 0) or hidden */
    ASSERT_VALUES(z->grad, 0, 0, 1, 3);
    ASSERT_VALUES(s->grad, 0, 0, 0, 0, 0);
    pg_graph_free(g);
    free_all(3, (pg_tensor *[]){s, z, keep});
}

typedef struct chain_case {
    pg_dtype dt;
    int64_t B, H, Lq, Lk, n;
    bool causal, masked, shared; /* shared: logits and z feed a second op too (accumulated gradients) */
    double in_scale, out_scale;
    bool z_frozen; /* z needs no gradient */
    bool zero_hidden; /* the upstream gradient +-0 at the pairs attention hides, as attention's is */
} chain_case;

/* the ops CoPE used before the fused op: the same bits are expected */
static pg_tensor *chain(pg_graph *g, const chain_case *c, pg_tensor *s, pg_tensor *z, pg_tensor *keep)
{
    pg_tensor *gates = pg_sigmoid(g, pg_mul_scalar(g, s, c->in_scale));
    if (keep || c->causal)
        gates = pg_masked_fill(g, gates, hidden_pairs(g, c->B, c->Lq, c->Lk, keep, c->causal, 0), 0.0);
    pg_tensor *p = pg_clamp(g, pg_cumsum_reverse(g, gates, -1), -INFINITY, (double)(c->n - 1));
    pg_tensor *out = pg_gather_lerp(g, z, p);
    return c->out_scale != 1.0 ? pg_mul_scalar(g, out, c->out_scale) : out;
}

/* x (B, H, Lq, Lk) times 0 where hide (B, 1, Lq, Lk) is true: -0 where x < 0, else +0 */
static void times_zero_where(pg_tensor *x, const pg_tensor *hide)
{
    int64_t H = x->shape[1], plane = x->shape[2] * x->shape[3];
    for (int64_t i = 0; i < x->numel; i++) {
        if (!pg_bool(hide)[i / (H * plane) * plane + i % plane])
            continue;
        if (x->dtype == PG_F32)
            pg_f32(x)[i] *= 0.0f;
        else
            pg_f64(x)[i] *= 0.0;
    }
}

static pg_tensor *total(pg_graph *g, pg_tensor *x) { return pg_sum(g, x, 0, NULL, false); }

/* out, dlogits, dz of one case, fused or by the chain (heap copies in res) */
static void run_case(const chain_case *c, bool fused, pg_tensor **res)
{
    pg_rng r = pg_rng_init(11);
    pg_graph *g = pg_graph_new();
    pg_tensor *s = pg_mul_scalar(g, pg_randn(g, c->dt, PG_SHAPE(c->B, c->H, c->Lq, c->Lk), &r), 2.0);
    pg_tensor *z = pg_randn(g, c->dt, PG_SHAPE(c->B, c->H, c->Lq, c->n), &r);
    pg_tensor *keep = c->masked ? key_mask_pattern(c->B, c->Lk, 3, 2) : NULL;
    s->requires_grad = true;
    z->requires_grad = !c->z_frozen;
    pg_tensor *y = fused ? pg_cope_interp(g, s, z, keep, c->causal, c->in_scale, c->out_scale)
                         : chain(g, c, s, z, keep);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_tensor *up = pg_randn(g, c->dt, y->ndim, y->shape, &r);
    if (c->zero_hidden) /* times 0: -0 where the weight is negative, +0 elsewhere */
        times_zero_where(up, hidden_pairs(g, c->B, c->Lq, c->Lk, keep, c->causal, 0));
    pg_tensor *loss = total(g, pg_mul(g, y, up));
    if (c->shared) /* recorded after y: their gradients are written first, y's added to them */
        loss = pg_add(g, loss, pg_add(g, total(g, pg_square(g, s)), total(g, pg_square(g, z))));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, y);
    res[1] = pg_tensor_copy(NULL, s->grad);
    res[2] = c->z_frozen ? pg_zeros(NULL, c->dt, z->ndim, z->shape) : pg_tensor_copy(NULL, z->grad);
    pg_graph_free(g);
    pg_tensor_free(keep);
}

static const char *const NAMES[3] = {"out", "dlogits", "dz"};

Test(cope_interp, same_bits_as_the_chain_of_ops)
{
    const chain_case cases[] = {
        {PG_F64, 2, 3, 13, 11, 5, true, true, false, 0.7, 0.35, false, false}, /* rows not a multiple of 8, Lq != Lk */
        {PG_F32, 2, 3, 13, 11, 5, true, true, false, 0.7, 0.35, false, false},
        {PG_F64, 1, 2, 9, 17, 24, false, false, true, 0.25, 1.0, false, false}, /* nothing clamped, accumulated */
        {PG_F32, 1, 2, 9, 17, 24, false, true, true, 0.25, 1.0, false, false},
        {PG_F32, 2, 2, 20, 20, 4, true, false, true, 1.0, 0.5, false, false}, /* most sums clamped */
        {PG_F64, 1, 1, 16, 16, 17, true, false, false, 0.125, 0.125, false, false},
        {PG_F32, 2, 1, 8, 12, 6, true, true, false, 0.5, 1.0, true, false},
        /* n >= 32: AVX-512 builds read z 16 keys at a time (blocks, then a scalar tail) */
        {PG_F32, 2, 2, 70, 70, 65, true, true, false, 0.5, 0.5, false, false},
        {PG_F32, 1, 2, 40, 100, 40, false, false, true, 0.3, 1.0, false, false}, /* clamped: windows at n - 32 */
        {PG_F32, 2, 2, 50, 50, 51, true, false, false, 0.5, 0.5, false, true}, /* hidden gradients +-0 */
        {PG_F64, 2, 2, 50, 50, 51, true, true, false, 0.5, 0.5, false, true},
        {PG_F32, 1, 1, 64, 64, 33, false, true, false, 4.0, 0.25, false, true}, /* saturated gates: p steps by 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pg_tensor *a[3], *b[3];
        run_case(&cases[i], true, a);
        run_case(&cases[i], false, b);
        for (int k = 0; k < 3; k++)
            cr_assert(!memcmp(a[k]->data, b[k]->data, (size_t)a[k]->numel * pg_dtype_size(a[k]->dtype)),
                      "case %zu: %s differs from the chain's (max error %.3g)", i, NAMES[k], max_err(a[k], b[k]));
        free_all(3, a);
        free_all(3, b);
    }
}

static pg_tensor *interp_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_cope_interp(g, in[0], in[1], ctx, true, 0.9, 0.6);
}

/* sums of up to 6 gates read by z of 4 values: some clamped, none within the step of an
 * integer or of the clamp for this seed */
Test(cope_interp, gradcheck)
{
    pg_tensor *in[2] = {randt(PG_SHAPE(2, 2, 5, 6), 21, true), randt(PG_SHAPE(2, 2, 5, 4), 22, true)};
    pg_tensor *keep = TBOOL(PG_SHAPE(2, 6), 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0);
    for (int64_t i = 0; i < in[0]->numel; i++) /* gates from 0.05 to 0.95 */
        pg_f64(in[0])[i] *= 3.5;
    assert_gradcheck(interp_fn, 2, in, keep, NULL);
    free_all(2, in);
    pg_tensor_free(keep);
}

static pg_tensor *interp_self_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_cope_interp(g, in[0], in[0], NULL, *(const bool *)ctx, 0.9, 0.6);
}

/* one tensor as both the logits and z (n = Lk): its gradient is the sum of both roles',
 * causal and not (the logits' gradient had overwritten z's in each group of rows) */
Test(cope_interp, logits_and_z_one_tensor)
{
    pg_tensor *x = randt(PG_SHAPE(1, 2, 10, 6), 23, true);
    for (int causal = 0; causal < 2; causal++)
        assert_gradcheck(interp_self_fn, 1, &x, &(bool){causal != 0}, NULL);
    pg_tensor_free(x);
}

/* ctx: the case; res: out, dlogits, dz */
static void run_fused(void *ctx, pg_tensor **res) { run_case(ctx, true, res); }

Test(cope_interp, same_bits_for_any_thread_count)
{
    chain_case c = {PG_F32, 2, 4, 70, 64, 65, true, true, false, 0.5, 0.5, false, false}; /* enough for the pool */
    assert_same_bits_on_1_and_2_threads(run_fused, &c, 3, NAMES);
    c.dt = PG_F64;
    assert_same_bits_on_1_and_2_threads(run_fused, &c, 3, NAMES);
}

/* a NaN logit of a visible key: NaN at it and before it in its row, nothing else; a hidden
 * NaN is never read; the backward runs (NaN gradients where they come from, no crash) */
Test(cope_interp, nan_logits)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *s = T64(PG_SHAPE(1, 1, 2, 4), 0, 0, NAN, 0, 0, NAN, 0, 0);
    pg_tensor *z = T64(PG_SHAPE(1, 1, 2, 4), 1, 2, 3, 4, 1, 2, 3, 4);
    s->requires_grad = z->requires_grad = true;
    pg_tensor *y = pg_cope_interp(g, s, z, NULL, true, 1.0, 1.0); /* row 0 sees key 0 only */
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    ASSERT_VALUES(y, 0, 1.5, 1, 1, 1, NAN, NAN, 1, 1);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, y->ndim, y->shape)), 0, "%s", pg_graph_error(g));
    cr_assert(isfinite(pg_f64(s->grad)[0]) && isnan(pg_f64(s->grad)[5]), "ds: %g %g", pg_f64(s->grad)[0],
              pg_f64(s->grad)[5]);
    ASSERT_VALUES(z->grad, 0, 3.5, 0.5, 0, 0, 2, 0, 0, 0); /* row 1: only p = 0 at keys 2, 3 */
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){s, z});
}

/* no keys: an empty bias, and a gradient of zeros for z (its fresh buffer is cleared) */
Test(cope_interp, empty_shapes)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *s = pg_zeros(g, PG_F32, PG_SHAPE(2, 1, 3, 0)), *z = pg_full(g, PG_F32, PG_SHAPE(2, 1, 3, 4), 1.0);
    s->requires_grad = z->requires_grad = true;
    pg_tensor *y = pg_cope_interp(g, s, z, NULL, true, 1.0, 1.0);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    assert_shape(y, PG_SHAPE(2, 1, 3, 0));
    cr_assert_eq(pg_backward(g, total(g, y)), 0, "%s", pg_graph_error(g));
    cr_assert_not_null(z->grad);
    for (int64_t i = 0; i < z->numel; i++)
        cr_assert_eq(pg_f32(z->grad)[i], 0.0f, "dz[%lld] = %g", (long long)i, pg_f32(z->grad)[i]);
    pg_tensor *s0 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 0, 5)), *z0 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 0, 3));
    y = pg_cope_interp(g, s0, z0, NULL, false, 1.0, 1.0);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    assert_shape(y, PG_SHAPE(1, 2, 0, 5));
    pg_graph_free(g);
}

Test(cope_interp, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *s = pg_zeros(g, PG_F64, PG_SHAPE(2, 1, 3, 4)), *z = pg_zeros(g, PG_F64, PG_SHAPE(2, 1, 3, 5));
    ASSERT_FAILS(pg_cope_interp(g, NULL, z, NULL, false, 1, 1), "pg_cope_interp: logits is NULL");
    ASSERT_FAILS(pg_cope_interp(g, s, NULL, NULL, false, 1, 1), "pg_cope_interp: z is NULL");
    pg_tensor *si = pg_zeros(g, PG_I64, PG_SHAPE(2, 1, 3, 4));
    ASSERT_FAILS(pg_cope_interp(g, si, z, NULL, false, 1, 1), "pg_cope_interp: logits must be f32 or f64");
    pg_tensor *z32 = pg_zeros(g, PG_F32, PG_SHAPE(2, 1, 3, 5)), *zq = pg_zeros(g, PG_F64, PG_SHAPE(2, 1, 2, 5));
    pg_tensor *z0 = pg_zeros(g, PG_F64, PG_SHAPE(2, 1, 3, 0)), *s3 = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 4));
    ASSERT_FAILS(pg_cope_interp(g, s, z32, NULL, false, 1, 1),
                 "pg_cope_interp: logits is f64[2,1,3,4], z is f32[2,1,3,5]: expected logits (B, H, Lq, Lk)");
    ASSERT_FAILS(pg_cope_interp(g, s, zq, NULL, false, 1, 1), "z is f64[2,1,2,5]");
    ASSERT_FAILS(pg_cope_interp(g, s, z0, NULL, false, 1, 1), "z is f64[2,1,3,0]");
    ASSERT_FAILS(pg_cope_interp(g, s3, z, NULL, false, 1, 1), "logits is f64[2,3,4]");
    pg_tensor *k1 = pg_ones(g, PG_BOOL, PG_SHAPE(2, 3)), *kf = pg_ones(g, PG_F64, PG_SHAPE(2, 4));
    ASSERT_FAILS(pg_cope_interp(g, s, z, k1, false, 1, 1),
                 "pg_cope_interp: the key mask is bool[2,3], expected bool (B, Lk) = (2, 4) for logits f64[2,1,3,4]");
    ASSERT_FAILS(pg_cope_interp(g, s, z, kf, false, 1, 1), "the key mask is f64[2,4]");
    ASSERT_FAILS(pg_cope_interp(g, s, z, NULL, false, NAN, 1), "pg_cope_interp: the scales must be finite, got "
                                                                "in_scale nan, out_scale 1");
    ASSERT_FAILS(pg_cope_interp(NULL, s, z, NULL, false, 1, INFINITY), "out_scale inf");
    pg_tensor *ok = pg_cope_interp(NULL, s, z, NULL, true, 1, 1); /* no graph: a heap result */
    cr_assert_not_null(ok, "%s", pg_last_error());
    pg_tensor_free(ok);
    pg_graph_free(g);
}
