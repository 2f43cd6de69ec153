/* The band_bias hook of the positional protocol (nn/posmod.h): LocalAttention
 * biases its band through it for any module that implements it, knowing nothing
 * of the scheme. A module defined here (TestBandQK) proves the hook is generic:
 *
 *   bias[b, h, i, j] = alpha[h] (q_i . k_j) + beta[h] (i - j)
 *
 * computed on the band by band_bias, and as a full (B, H, L, L) bias by mod_bias
 * for the reference (full attention with the band as an additive -inf mask). */
#include "testutil.h"

#include "../nn/local_attention.h"

typedef struct {
    pg_posmod pm;
    int64_t heads;
    pg_tensor *alpha, *beta; /* (heads) */
} band_qk;

/* per-head weights (heads) as a (1, heads, 1, 1, 1) factor of rows packed (b / heads, heads, ...) */
static pg_tensor *per_head(pg_graph *g, pg_tensor *p, int64_t heads)
{
    return pg_reshape(g, p, PG_SHAPE(1, heads, 1, 1, 1));
}

/* q, k (b, W w, d) -> (b, W, w, S) */
static pg_tensor *bqk_band(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, const pg_pos_band *band,
                           const pg_pos_ctx *c)
{
    (void)c;
    band_qk *m = (band_qk *)pm;
    int64_t b = q->shape[0], d = q->shape[2], W = band->W, w = band->w, S = (band->lb + band->lf + 1) * w;
    int64_t NH = m->heads;
    pg_tensor *qw = pg_reshape(g, q, PG_SHAPE(b, W, w, d));
    pg_tensor *kb = pg_pos_band_slots(g, pg_reshape(g, k, PG_SHAPE(b, W, w, d)), band); /* (b, W, S, d) */
    pg_tensor *qk = pg_reshape(g, pg_matmul(g, qw, kb, false, true), PG_SHAPE(b / NH, NH, W, w, S));
    pg_tensor *dist = pg_empty(g, PG_F64, PG_SHAPE(1, 1, 1, w, S));
    for (int64_t r = 0; r < w; r++)
        for (int64_t s = 0; s < S; s++)
            pg_set(dist, r * S + s, (double)(r + band->lb * w - s));
    pg_tensor *t = pg_add(g, pg_mul(g, qk, per_head(g, m->alpha, NH)), pg_mul(g, dist, per_head(g, m->beta, NH)));
    return pg_reshape(g, t, PG_SHAPE(b, W, w, S));
}

/* the reference: q, k (B, H, L, d) -> (B, H, L, L) */
static pg_tensor *bqk_full(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)v;
    band_qk *m = (band_qk *)pm;
    int64_t L = c->Lq;
    pg_tensor *dist = pg_empty(g, PG_F64, PG_SHAPE(1, 1, L, L));
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            pg_set(dist, i * L + j, (double)(i - j));
    pg_tensor *a = pg_reshape(g, m->alpha, PG_SHAPE(1, m->heads, 1, 1)),
              *bt = pg_reshape(g, m->beta, PG_SHAPE(1, m->heads, 1, 1));
    return pg_add(g, pg_mul(g, pg_matmul(g, q, k, false, true), a), pg_mul(g, dist, bt));
}

/* a band_bias that must never run (the module's dist_bias wins) */
static pg_tensor *never_band(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, const pg_pos_band *band,
                             const pg_pos_ctx *c)
{
    (void)pm, (void)q, (void)k, (void)band, (void)c;
    pg_graph_fail(g, "TestNeverBand: band_bias called although dist_bias exists");
    return NULL;
}

/* dist_bias: beta[h] * d, (heads, D) */
static pg_tensor *beta_dist(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c)
{
    (void)c;
    band_qk *m = (band_qk *)pm;
    return pg_mul(g, pg_reshape(g, m->beta, PG_SHAPE(m->heads, 1)), pg_reshape(g, d, PG_SHAPE(1, d->numel)));
}

/* a band_bias of the wrong shape */
static pg_tensor *bad_band(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, const pg_pos_band *band,
                           const pg_pos_ctx *c)
{
    (void)pm, (void)k, (void)band, (void)c;
    return pg_zeros(g, q->dtype, PG_SHAPE(1, 2, 3));
}

static const pg_posmod_ops BAND_QK = {.mod_bias = bqk_full, .band_bias = bqk_band};
static const pg_posmod_ops BOTH = {.dist_bias = beta_dist, .band_bias = never_band};
static const pg_posmod_ops BAD = {.band_bias = bad_band};

static band_qk *bqk_new(const pg_posmod_ops *ops, const char *type, int64_t heads, uint64_t seed)
{
    band_qk *m = calloc(1, sizeof *m);
    cr_assert_not_null(m);
    pg_posmod_init(&m->pm, type, ops, NULL);
    m->heads = heads;
    m->alpha = pg_module_new_param(&m->pm.base, "alpha", PG_F64, PG_SHAPE(heads));
    m->beta = pg_module_new_param(&m->pm.base, "beta", PG_F64, PG_SHAPE(heads));
    cr_assert(m->alpha && m->beta, "%s", pg_last_error());
    pg_rng r = pg_rng_init(seed);
    pg_fill_uniform(m->alpha, &r, 0.3, 1.2);
    pg_fill_uniform(m->beta, &r, -0.5, 0.5);
    return m;
}

static pg_local_attention *local(int64_t w, int64_t lb, int64_t lf, bool causal, bool autopad, pg_posmod *p)
{
    pg_local_attention_config cfg = pg_local_attention_defaults(w);
    cfg.look_backward = lb;
    cfg.look_forward = lf;
    cfg.causal = causal;
    cfg.autopad = autopad;
    cfg.dtype = PG_F64;
    pg_local_attention *m = pg_local_attention_new(&cfg, (pg_posmod *[]){p}, 1);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static void check_equals_full(int64_t L, int64_t w, int64_t lb, int64_t lf, bool causal, bool autopad)
{
    band_qk *bm = bqk_new(&BAND_QK, "TestBandQK", 2, 5);
    pg_local_attention *m = local(w, lb, lf, causal, autopad, &bm->pm);
    pg_tensor *q = randt(PG_SHAPE(2, 2, L, 4), 61, true), *k = randt(PG_SHAPE(2, 2, L, 4), 62, true),
              *v = randt(PG_SHAPE(2, 2, L, 4), 63, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, NULL);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_pos_ctx c = {.self_attn = true, .causal = causal, .B = 2, .heads = 2, .head_dim = 4, .Lq = L, .Lk = L,
                    .dtype = PG_F64};
    pg_tensor *bias = pg_add(g, bm->pm.ops->mod_bias(g, &bm->pm, q, k, v, &c), test_band_mask(g, L, w, lb, lf, causal));
    pg_tensor *e = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = bias, .causal = causal});
    cr_assert_not_null(e, "%s", pg_graph_error(g));
    assert_close(y, e, 1e-12, "band_bias in LocalAttention vs full attention with mod_bias");
    /* the hook's parameters get gradients through LocalAttention */
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    cr_assert(bm->alpha->grad && bm->beta->grad, "the hook's parameters have no gradient");
    cr_assert_gt(fabs(pg_get(bm->alpha->grad, 0)) + fabs(pg_get(bm->beta->grad, 1)), 0.0);
    pg_graph_free(g);
    free_all(3, (pg_tensor *[]){q, k, v});
    pg_module_free(&m->base);
}

Test(local_band_hook, custom_band_bias_equals_full_attention)
{
    check_equals_full(8, 2, 1, 1, false, false);
    check_equals_full(9, 3, 2, 0, true, false);
    check_equals_full(7, 3, 1, 1, false, true); /* autopad: padded keys hidden */
    check_equals_full(6, 2, 5, 4, false, false); /* look-around clamped to the windows that exist */
}

typedef struct {
    pg_local_attention *m;
} gc_ctx;

static pg_tensor *gc_fn(pg_graph *g, pg_tensor *const *in, int n_in, void *vctx)
{
    (void)n_in;
    gc_ctx *c = vctx;
    return pg_local_attention_forward(g, c->m, in[0], in[1], in[2], NULL);
}

Test(local_band_hook, gradcheck_f64)
{
    for (int cs = 0; cs < 2; cs++) {
        band_qk *bm = bqk_new(&BAND_QK, "TestBandQK", 2, 9);
        gc_ctx ctx = {local(2, 1, cs ? 0 : 1, cs == 1, false, &bm->pm)};
        /* packed rows (B H, L, d): row r is head r mod 2 */
        pg_tensor *in[8] = {randt(PG_SHAPE(4, 6, 3), 71, true), randt(PG_SHAPE(4, 6, 3), 72, true),
                            randt(PG_SHAPE(4, 6, 3), 73, true)};
        int n = with_params(in, 3, &ctx.m->base);
        cr_assert_eq(n, 5);
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(gc_fn, n, in, &ctx, &o);
        free_all(3, in);
        pg_module_free(&ctx.m->base);
    }
}

/* A module with both hooks is biased through dist_bias (and may run fused); one
 * whose band_bias gives the wrong shape is refused with a message naming it. */
Test(local_band_hook, precedence_and_bad_hook)
{
    pg_tensor *q = randt(PG_SHAPE(1, 2, 8, 4), 81, false);
    band_qk *both = bqk_new(&BOTH, "TestBoth", 2, 3);
    pg_local_attention *m = local(2, 1, 1, false, false, &both->pm);
    pg_tensor *y = pg_local_attention_forward(NULL, m, q, q, q, NULL);
    cr_assert_not_null(y, "%s", pg_last_error());
    pg_tensor_free(y);
    pg_module_free(&m->base);
    band_qk *bad = bqk_new(&BAD, "TestBadBand", 2, 3);
    m = local(2, 1, 1, false, false, &bad->pm);
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, NULL),
                 "pg_local_attention_forward: positional module 0 (TestBadBand) gave a band bias f64[1,2,3], "
                 "expected f64 (2, 4, 2, 6)");
    pg_module_free(&m->base);
    pg_tensor_free(q);
}

Test(local_band_hook, band_slots)
{
    /* 2 windows of 2 tokens, lb 1, lf 0: window 0 sees (pad, pad, 0, 1), window 1 sees (0, 1, 2, 3) */
    pg_tensor *x = T64(PG_SHAPE(1, 2, 2, 1), 10, 11, 12, 13);
    pg_tensor *s = pg_pos_band_slots(NULL, x, &(pg_pos_band){.W = 2, .w = 2, .lb = 1, .lf = 0});
    assert_shape(s, 4, (const int64_t[]){1, 2, 4, 1});
    ASSERT_VALUES(s, 0, 0, 0, 10, 11, 10, 11, 12, 13);
    pg_tensor_free(s);
    ASSERT_FAILS(pg_pos_band_slots(NULL, x, &(pg_pos_band){.W = 2, .w = 2, .lb = 2, .lf = 0}),
                 "pg_pos_band_slots: x is f64[1,2,2,1], expected (b, W, w, c) = (b, 2, 2, c)");
    ASSERT_FAILS(pg_pos_band_slots(NULL, x, NULL), "pg_pos_band_slots: band is NULL");
    ASSERT_FAILS(pg_pos_band_slots(NULL, NULL, &(pg_pos_band){.W = 2, .w = 2}), "pg_pos_band_slots: x is NULL");
    pg_tensor_free(x);
}
