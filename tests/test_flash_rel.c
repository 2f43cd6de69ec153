/* The fused attention's relative keys (autograd/flash.h: rel_q, rel_k, rel_scale)
 * against the same logits built from unfused ops: raw = rel_q rel_k^T over every
 * distance, gathered at i - j + Lk - 1 (the relative shift), scaled and added.
 * Outputs and the gradients of q, k, v, rel_q, rel_k in f64 within 1e-12 over
 * several tiles, Lq != Lk, causal, masks, a local band, a distance bias beside
 * them; bit-identical results for 1 and 2 threads; gradchecks; f32 against f64;
 * bad input. The same with q's own rows as the relative queries (rel_q_is_q), q, k, v as
 * heads or read in one projection (pg_flash_attention_qkv), and with the queries shifted per
 * head (q_shift: the unfused ops on q + q_shift). */
#include "../autograd/flash.h"
#include "testutil.h"

typedef struct rcase {
    int64_t B, H, Lq, Lk, D;
    bool causal, mask, bias;
    int64_t window; /* > 0: a local band, look_backward 1 */
    double rs;      /* rel_scale (0: 1) */
    bool shift;     /* the queries shifted per head (q_shift) */
} rcase;

typedef struct rel_in {
    pg_tensor *q, *k, *v, *rq, *rk, *db, *mask, *qs;
} rel_in;

static pg_tensor *key_mask_of(const rcase *c) { return key_mask_pattern(c->B, c->Lk, 5, 3); }

static rel_in make_inputs(const rcase *c, uint64_t seed)
{
    rel_in in = {randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed, true),
                 randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 1, true),
                 randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 2, true),
                 randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed + 3, true),
                 randt(PG_SHAPE(c->H, c->Lq + c->Lk - 1, c->D), seed + 4, true),
                 c->bias ? randt(PG_SHAPE(c->H, c->Lq + c->Lk - 1), seed + 5, true) : NULL,
                 c->mask ? key_mask_of(c) : NULL,
                 c->shift ? randt(PG_SHAPE(c->H, c->D), seed + 6, true) : NULL};
    return in;
}

static void free_inputs(rel_in *in)
{
    free_all(8, (pg_tensor *[]){in->q, in->k, in->v, in->rq, in->rk, in->db, in->mask, in->qs});
}

/* q + qs[h] from ops (qs NULL: q) */
static pg_tensor *shifted(pg_graph *g, pg_tensor *q, pg_tensor *qs)
{
    return qs ? pg_add(g, q, pg_reshape(g, qs, PG_SHAPE(1, qs->shape[0], 1, qs->shape[1]))) : q;
}

/* (B, H, Lq, Lk): rs rq_i . rk[i - j + Lk - 1] from ops */
static pg_tensor *rel_logits(pg_graph *g, pg_tensor *rq, pg_tensor *rk, int64_t Lk, double rs)
{
    int64_t B = rq->shape[0], H = rq->shape[1], Lq = rq->shape[2];
    pg_tensor *raw = pg_matmul(g, rq, pg_reshape(g, rk, PG_SHAPE(1, H, Lq + Lk - 1, rk->shape[2])), false, true);
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(B, H, Lq, Lk));
    for (int64_t r = 0; r < B * H; r++)
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++)
                pg_i64(idx)[(r * Lq + i) * Lk + j] = i - j + Lk - 1;
    return pg_mul_scalar(g, pg_gather(g, raw, 3, idx), rs != 0 ? rs : 1.0);
}

static pg_tensor *unfused(pg_graph *g, const rcase *c, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *rq,
                          pg_tensor *rk, pg_tensor *db, const pg_tensor *mask)
{
    pg_tensor *logits = pg_mul_scalar(g, pg_matmul(g, q, k, false, true), 1.0 / sqrt((double)c->D));
    logits = pg_add(g, logits, rel_logits(g, rq, rk, c->Lk, c->rs));
    if (db) {
        pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(c->Lq * c->Lk));
        for (int64_t i = 0; i < c->Lq; i++)
            for (int64_t j = 0; j < c->Lk; j++)
                pg_i64(idx)[i * c->Lk + j] = i - j + c->Lk - 1;
        logits = pg_add(g, logits, pg_reshape(g, pg_index_select(g, db, 1, idx), PG_SHAPE(c->H, c->Lq, c->Lk)));
    }
    logits = pg_masked_fill(g, logits, hidden_pairs(g, c->B, c->Lq, c->Lk, mask, c->causal, c->window), -INFINITY);
    return pg_matmul(g, pg_softmax(g, logits, -1), v, false, false);
}

static pg_tensor *fused(pg_graph *g, const rcase *c, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *rq,
                        pg_tensor *rk, pg_tensor *db, pg_tensor *mask, pg_tensor *qs)
{
    pg_flash_opts o = {.causal = c->causal, .mask = mask, .dist_bias = db, .rel_q = rq, .rel_k = rk,
                       .rel_scale = c->rs, .window = c->window, .look_backward = 1, .q_shift = qs};
    return pg_flash_attention(g, q, k, v, &o);
}

enum { N_OUT = 8 }; /* out, dq, dk, dv, drq, drk, ddb, dqs */

/* out and the gradients of sum(w * out) */
static void run(bool use_fused, const rcase *c, rel_in *in, pg_tensor *w, pg_tensor *res[N_OUT])
{
    pg_graph *g = pg_graph_new();
    pg_tensor *out = use_fused ? fused(g, c, in->q, in->k, in->v, in->rq, in->rk, in->db, in->mask, in->qs)
                               : unfused(g, c, shifted(g, in->q, in->qs), in->k, in->v, in->rq, in->rk, in->db,
                                         in->mask);
    cr_assert_not_null(out, "%s", pg_last_error());
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_last_error());
    pg_tensor *got[N_OUT] = {pg_tensor_copy(NULL, out), take_grad(in->q), take_grad(in->k), take_grad(in->v),
                             take_grad(in->rq), take_grad(in->rk), take_grad(in->db), take_grad(in->qs)};
    memcpy(res, got, sizeof got);
    pg_graph_free(g);
}

static const char *const NAMES[N_OUT] = {"out", "dq", "dk", "dv", "drel_q", "drel_k", "ddist_bias", "dq_shift"};

static void check_case(const rcase *c, uint64_t seed)
{
    rel_in in = make_inputs(c, seed);
    pg_tensor *w = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed + 9, false);
    pg_tensor *f[N_OUT], *u[N_OUT];
    run(true, c, &in, w, f);
    run(false, c, &in, w, u);
    for (int i = 0; i < N_OUT; i++) {
        char what[200];
        snprintf(what, sizeof what,
                 "%s: B%lld H%lld Lq%lld Lk%lld D%lld causal %d mask %d bias %d window %lld rs %g shift %d", NAMES[i],
                 (long long)c->B, (long long)c->H, (long long)c->Lq, (long long)c->Lk, (long long)c->D, c->causal,
                 c->mask, c->bias, (long long)c->window, c->rs, c->shift);
        if (u[i])
            assert_close(f[i], u[i], 1e-12, what);
        pg_tensor_free(f[i]);
        pg_tensor_free(u[i]);
    }
    pg_tensor_free(w);
    free_inputs(&in);
}

Test(flash_rel, matches_unfused_f64)
{
    const rcase cases[] = {
        {2, 3, 70, 70, 8, false, false, false, 0, 0, false},   {2, 3, 70, 70, 8, true, false, false, 0, 0.37, false},
        {1, 2, 130, 100, 5, true, true, false, 0, 1.5, false}, {1, 2, 100, 130, 5, false, true, true, 0, 0, false},
        {2, 2, 150, 150, 7, true, false, true, 0, 0.125, false}, {1, 2, 200, 200, 4, true, true, false, 48, 0.5, false},
        {1, 1, 3, 9, 2, false, false, false, 0, -2, false},
        /* head dims of whole register blocks: every product through the vector blocks */
        {1, 2, 140, 140, 32, true, false, false, 0, 0.5, false}, {1, 1, 90, 75, 40, false, true, true, 0, 0.3, false},
        /* the queries shifted (the relative term's queries rel_q are not) */
        {2, 3, 70, 70, 8, true, false, false, 0, 0.37, true}, {1, 2, 130, 100, 32, false, true, true, 0, 1.5, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i], 100 + 10 * i);
}

typedef struct fused_run {
    const rcase *c;
    rel_in *in;
    pg_tensor *w;
} fused_run;

static void run_fused(void *ctx, pg_tensor **res)
{
    fused_run *x = ctx;
    run(true, x->c, x->in, x->w, res);
}

/* drel_k sums over batches that different threads handle: the same bits for 1 and 2 threads */
Test(flash_rel, same_bits_for_any_thread_count)
{
    const rcase c = {3, 4, 90, 90, 8, true, true, true, 0, 0.5, false};
    rel_in in = make_inputs(&c, 7);
    fused_run x = {&c, &in, randt(PG_SHAPE(3, 4, 90, 8), 8, false)};
    assert_same_bits_on_1_and_2_threads(run_fused, &x, N_OUT, NAMES);
    pg_tensor_free(x.w);
    free_inputs(&in);
}

typedef struct gc_ctx {
    rcase c;
    pg_tensor *mask;
} gc_ctx;

static pg_tensor *rel_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    const gc_ctx *x = ctx;
    return fused(g, &x->c, in[0], in[1], in[2], in[3], in[4], n > 5 ? in[5] : NULL, x->mask, n > 6 ? in[6] : NULL);
}

/* gradcheck in q, k, v, rel_q, rel_k (and a distance bias, and the queries' shift), one and several tiles */
Test(flash_rel, gradcheck)
{
    const rcase cases[] = {{2, 2, 4, 4, 3, false, true, true, 0, 0.7, false},
                           {1, 2, 3, 6, 3, true, false, false, 0, 0, false},
                           {1, 1, 6, 3, 2, true, true, true, 0, -1.3, false},
                           {1, 1, 70, 70, 2, true, false, false, 32, 0.9, false},
                           {1, 2, 6, 4, 3, true, true, true, 0, 0.8, true}}; /* a shift: with a distance bias */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gc_ctx x = {cases[i], cases[i].mask ? key_mask_of(&cases[i]) : NULL};
        rel_in in = make_inputs(&cases[i], 30 + i);
        pg_tensor *ins[7] = {in.q, in.k, in.v, in.rq, in.rk, in.db, in.qs};
        assert_gradcheck(rel_fn, in.qs ? 7 : in.db ? 6 : 5, ins, &x, NULL);
        free_inputs(&in);
        pg_tensor_free(x.mask);
    }
}

/* f32 (fast exp) against f64 over several tiles */
Test(flash_rel, f32_agrees_with_f64)
{
    const rcase c = {1, 2, 130, 100, 8, true, true, true, 0, 0.5, true};
    rel_in in = make_inputs(&c, 50);
    rel_in in32;
    pg_tensor **src = &in.q, **dst = &in32.q;
    for (int i = 0; i < 8; i++) {
        dst[i] = src[i] && src[i]->dtype == PG_F64 ? pg_tensor_cast(NULL, src[i], PG_F32)
                                                   : (src[i] ? pg_tensor_copy(NULL, src[i]) : NULL);
        if (dst[i] && dst[i]->dtype == PG_F32)
            dst[i]->requires_grad = true;
    }
    pg_tensor *w = randt(PG_SHAPE(1, 2, 130, 8), 51, false);
    pg_tensor *a[N_OUT], *b[N_OUT];
    run(true, &c, &in, w, a);
    run(true, &c, &in32, w, b);
    for (int i = 0; i < N_OUT; i++) {
        assert_close(b[i], a[i], 1e-4, NAMES[i]);
        pg_tensor_free(a[i]);
        pg_tensor_free(b[i]);
    }
    pg_tensor_free(w);
    free_inputs(&in);
    free_inputs(&in32);
}

/* ---- rel_q_is_q: the relative term's queries are q's own rows ---------------------------- */

/* the fused call with q as the relative queries: q, k, v as heads, or (qkv non-NULL) read in
 * the projection qkv (B, L, 3 H D) in place; the result (B, H, Lq, D) */
static pg_tensor *fused_self(pg_graph *g, const rcase *c, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *qkv,
                             pg_tensor *rk, pg_tensor *db, pg_tensor *mask, pg_tensor *qs)
{
    pg_flash_opts o = {.causal = c->causal, .mask = mask, .dist_bias = db, .rel_q_is_q = true, .rel_k = rk,
                       .rel_scale = c->rs, .window = c->window, .look_backward = 1, .q_shift = qs};
    return qkv ? pg_flash_attention_qkv(g, qkv, c->H, &o) : pg_flash_attention(g, q, k, v, &o);
}

enum { N_SELF = 7 }; /* out, dq (or dqkv), dk, dv, drk, ddb, dqs */
static const char *const SELF_NAMES[N_SELF] = {"out", "dq", "dk", "dv", "drel_k", "ddist_bias", "dq_shift"};

/* out and the gradients of sum(w * out): fused with rel_q_is_q, or unfused with rel_q = q;
 * with `packed`, q, k, v split from one projection (B, Lq, 3 H D), whose gradient is dq's */
static void run_self(bool use_fused, bool packed, const rcase *c, rel_in *in, pg_tensor *qkv, pg_tensor *w,
                     pg_tensor *res[N_SELF])
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = in->q, *k = in->k, *v = in->v;
    if (packed && !use_fused) {
        q = pg_split_heads(g, qkv, 0, c->H, c->D);
        k = pg_split_heads(g, qkv, c->H * c->D, c->H, c->D);
        v = pg_split_heads(g, qkv, 2 * c->H * c->D, c->H, c->D);
    }
    pg_tensor *qs = use_fused ? NULL : shifted(g, q, in->qs); /* the unfused side's queries, both terms' */
    pg_tensor *out = use_fused ? fused_self(g, c, q, k, v, packed ? qkv : NULL, in->rk, in->db, in->mask, in->qs)
                               : unfused(g, c, qs, k, v, qs, in->rk, in->db, in->mask);
    cr_assert_not_null(out, "%s", pg_last_error());
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_last_error());
    pg_tensor *got[N_SELF] = {pg_tensor_copy(NULL, out), take_grad(packed ? qkv : in->q),
                              packed ? NULL : take_grad(in->k), packed ? NULL : take_grad(in->v), take_grad(in->rk),
                              take_grad(in->db), take_grad(in->qs)};
    memcpy(res, got, sizeof got);
    pg_graph_free(g);
}

static void check_self(const rcase *c, bool packed, uint64_t seed)
{
    rel_in in = make_inputs(c, seed);
    pg_tensor *qkv = packed ? randt(PG_SHAPE(c->B, c->Lq, 3 * c->H * c->D), seed + 7, true) : NULL;
    pg_tensor *w = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed + 9, false);
    pg_tensor *f[N_SELF], *u[N_SELF];
    run_self(true, packed, c, &in, qkv, w, f);
    run_self(false, packed, c, &in, qkv, w, u);
    for (int i = 0; i < N_SELF; i++) {
        char what[200];
        snprintf(what, sizeof what,
                 "rel_q_is_q%s %s: B%lld H%lld L%lld D%lld causal %d mask %d bias %d window %lld shift %d",
                 packed ? " (qkv)" : "", SELF_NAMES[i], (long long)c->B, (long long)c->H, (long long)c->Lq,
                 (long long)c->D, c->causal, c->mask, c->bias, (long long)c->window, c->shift);
        cr_assert((f[i] == NULL) == (u[i] == NULL), "%s: one side has no result", what);
        if (u[i])
            assert_close(f[i], u[i], 1e-12, what);
        pg_tensor_free(f[i]);
        pg_tensor_free(u[i]);
    }
    free_all(2, (pg_tensor *[]){w, qkv});
    free_inputs(&in);
}

/* q as the relative queries, with q, k, v as heads and read in one projection: the unfused
 * logits with rel_q = q (both of q's gradients summed by the graph), within 1e-12 in f64 */
Test(flash_rel, queries_are_q_matches_unfused_f64)
{
    const rcase cases[] = {
        {2, 3, 70, 70, 8, true, false, false, 0, 0.37, false}, {1, 2, 130, 130, 5, false, true, true, 0, 1.5, false},
        {1, 2, 200, 200, 4, true, true, false, 48, 0.5, false}, {2, 2, 140, 140, 32, true, false, true, 0, 0.25, false},
        {1, 1, 3, 3, 2, false, false, false, 0, -2, false},
        /* q + q_shift in both terms (Transformer-XL's q + u with a distance bias for v - u) */
        {2, 3, 70, 70, 8, true, false, true, 0, 0.37, true}, {1, 2, 200, 200, 4, true, true, false, 48, 0.5, true},
        {2, 2, 140, 140, 32, false, true, true, 0, 0.25, true}, {1, 1, 3, 3, 2, false, false, false, 0, -2, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int packed = 0; packed < 2; packed++)
            check_self(&cases[i], packed, 300 + 10 * i);
}

typedef struct self_run {
    const rcase *c;
    rel_in *in;
    pg_tensor *qkv, *w;
} self_run;

static void run_self_fused(void *ctx, pg_tensor **res)
{
    self_run *x = ctx;
    run_self(true, true, x->c, x->in, x->qkv, x->w, res);
}

/* drel_k and dq_shift sum over batches, dq gets the relative term's share: the same bits on 1
 * and 2 threads */
Test(flash_rel, queries_are_q_same_bits_for_any_thread_count)
{
    const rcase c = {3, 4, 90, 90, 8, true, true, true, 0, 0.5, true};
    rel_in in = make_inputs(&c, 17);
    self_run x = {&c, &in, randt(PG_SHAPE(3, 90, 3 * 4 * 8), 18, true), randt(PG_SHAPE(3, 4, 90, 8), 19, false)};
    assert_same_bits_on_1_and_2_threads(run_self_fused, &x, N_SELF, SELF_NAMES);
    free_all(2, (pg_tensor *[]){x.w, x.qkv});
    free_inputs(&in);
}

/* the fused call on the inputs: q, k, v or the projection, rel_k, the distance bias (NULL when
 * absent: the gradcheck's inputs are those present) and with c.shift the queries' shift last */
static pg_tensor *self_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    const gc_ctx *x = ctx;
    pg_tensor *qs = x->c.shift ? in[n - 1] : NULL;
    int m = n - x->c.shift; /* without the shift */
    if (m == 2 || m == 3) /* the projection, rel_k (and the distance bias) */
        return fused_self(g, &x->c, NULL, NULL, NULL, in[0], in[1], m > 2 ? in[2] : NULL, x->mask, qs);
    return fused_self(g, &x->c, in[0], in[1], in[2], NULL, in[3], m > 4 ? in[4] : NULL, x->mask, qs);
}

/* gradcheck with q as the relative queries: in q, k, v, rel_k (and a distance bias, and the
 * queries' shift), and in the projection read in place */
Test(flash_rel, queries_are_q_gradcheck)
{
    const rcase cases[] = {{2, 2, 4, 4, 3, false, true, true, 0, 0.7, false},
                           {1, 1, 6, 6, 2, true, true, false, 0, -1.3, false},
                           {1, 1, 70, 70, 2, true, false, true, 32, 0.9, false},
                           {2, 2, 5, 5, 3, true, true, true, 0, 0.6, true},
                           {1, 2, 70, 70, 2, false, false, false, 0, 1.1, true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rcase *c = &cases[i];
        gc_ctx x = {*c, c->mask ? key_mask_of(c) : NULL};
        rel_in in = make_inputs(c, 60 + i);
        pg_tensor *heads[6] = {in.q, in.k, in.v, in.rk, in.db ? in.db : in.qs, in.db ? in.qs : NULL};
        assert_gradcheck(self_fn, 4 + (in.db != NULL) + c->shift, heads, &x, NULL);
        pg_tensor *qkv = randt(PG_SHAPE(c->B, c->Lq, 3 * c->H * c->D), 70 + i, true);
        pg_tensor *proj[4] = {qkv, in.rk, in.db ? in.db : in.qs, in.db ? in.qs : NULL};
        assert_gradcheck(self_fn, 2 + (in.db != NULL) + c->shift, proj, &x, NULL);
        pg_tensor_free(qkv);
        free_inputs(&in);
        pg_tensor_free(x.mask);
    }
}

Test(flash_rel, queries_are_q_bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 4, 6)), *k = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 6));
    pg_tensor *v = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 6)), *rq = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 4, 6));
    pg_tensor *rk = pg_zeros(g, PG_F64, PG_SHAPE(3, 9, 6)), *rk_d = pg_zeros(g, PG_F64, PG_SHAPE(3, 9, 5));
    pg_tensor *cq = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 4, 3)), *ck = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 6, 3));
    const char *what = "pg_flash_attention: rel_q_is_q takes q's rows as the relative keys' queries: it wants rel_k "
                       "and no rel_q, and neither the rotation tables nor xPos";
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q_is_q = true}), what);
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q_is_q = true, .rel_q = rq, .rel_k = rk}),
                 "got rel_q f64[2,3,4,6], rel_k f64[3,9,6], rotation none, xpos_scale_base 0");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v,
                                    &(pg_flash_opts){.rel_q_is_q = true, .rel_k = rk, .xpos_scale_base = 512}),
                 "xpos_scale_base 512");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v,
                                    &(pg_flash_opts){.rel_q_is_q = true, .rel_k = rk, .rot_cos_q = cq, .rot_sin_q = cq,
                                                     .rot_cos_k = ck, .rot_sin_k = ck}),
                 "rotation set");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q_is_q = true, .rel_k = rk_d}),
                 "rel_q, rel_k are f64[2,3,4,6], f64[3,9,5], expected f64 (B, H, Lq, Dh) = (2, 3, 4, 6)");
    pg_tensor *qkv = pg_zeros(g, PG_F64, PG_SHAPE(2, 4, 3 * 3 * 6));
    ASSERT_FAILS(pg_flash_attention_qkv(g, qkv, 3, &(pg_flash_opts){.rel_q_is_q = true}),
                 "pg_flash_attention_qkv: rel_q_is_q takes q's rows");
    pg_tensor *rk7 = pg_zeros(g, PG_F64, PG_SHAPE(3, 7, 6)); /* Lq = Lk = 4 */
    cr_assert_not_null(pg_flash_attention_qkv(g, qkv, 3, &(pg_flash_opts){.rel_q_is_q = true, .rel_k = rk7}), "%s",
                       pg_last_error());
    cr_assert_not_null(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q_is_q = true, .rel_k = rk}), "%s",
                       pg_last_error());
    pg_graph_free(g);
}

Test(flash_rel, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 4, 5)), *k = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 5));
    pg_tensor *v = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 5));
    pg_tensor *rq = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 4, 5)), *rk = pg_zeros(g, PG_F64, PG_SHAPE(3, 9, 5));
    pg_tensor *rk_len = pg_zeros(g, PG_F64, PG_SHAPE(3, 10, 5)), *rk_d = pg_zeros(g, PG_F64, PG_SHAPE(3, 9, 4));
    pg_tensor *rq32 = pg_zeros(g, PG_F32, PG_SHAPE(2, 3, 4, 5));
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q = rq}),
                 "pg_flash_attention: rel_q, rel_k are f64[2,3,4,5], NULL, expected f64 (B, H, Lq, Dh) = (2, 3, 4, "
                 "5) and (H, Lq + Lk - 1, Dh) = (3, 9, 5), both or neither");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_k = rk}), "rel_q, rel_k are NULL, f64[3,9,5]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q = rq, .rel_k = rk_len}), "f64[3,10,5]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q = rq, .rel_k = rk_d}), "f64[3,9,4]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q = rq32, .rel_k = rk}), "f32[2,3,4,5]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q = rq, .rel_k = rk, .rel_scale = NAN}),
                 "scale and rel_scale must be finite");
    cr_assert_not_null(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.rel_q = rq, .rel_k = rk}), "%s",
                       pg_last_error());
    pg_graph_free(g);
}

/* q_shift: (H, D) of q's dtype, without the rotation or xPos; refused with a message naming
 * its shape and q's, nothing recorded */
Test(flash_rel, shifted_queries_bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 4, 6)), *k = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 6));
    pg_tensor *v = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 6)), *qs = pg_zeros(g, PG_F64, PG_SHAPE(3, 6));
    pg_tensor *cq = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 4, 3)), *ck = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 6, 3));
    const char *what = "pg_flash_attention: q_shift is f64[2,6], expected f64 (H, D) = (3, 6) for q "
                       "f64[2,3,4,6], and neither the rotation tables nor xPos (rotation none, xpos_scale_base 0)";
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.q_shift = pg_zeros(g, PG_F64, PG_SHAPE(2, 6))}),
                 what);
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.q_shift = pg_zeros(g, PG_F64, PG_SHAPE(3, 5))}),
                 "q_shift is f64[3,5]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.q_shift = pg_zeros(g, PG_F32, PG_SHAPE(3, 6))}),
                 "q_shift is f32[3,6], expected f64");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.q_shift = pg_zeros(g, PG_F64, PG_SHAPE(1, 3, 6))}),
                 "q_shift is f64[1,3,6]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.q_shift = qs, .xpos_scale_base = 512}),
                 "xpos_scale_base 512");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v,
                                    &(pg_flash_opts){.q_shift = qs, .rot_cos_q = cq, .rot_sin_q = cq, .rot_cos_k = ck,
                                                     .rot_sin_k = ck}),
                 "rotation set");
    pg_tensor *qkv = pg_zeros(g, PG_F64, PG_SHAPE(2, 4, 3 * 3 * 6));
    ASSERT_FAILS(pg_flash_attention_qkv(g, qkv, 3, &(pg_flash_opts){.q_shift = pg_zeros(g, PG_F64, PG_SHAPE(3, 5))}),
                 "pg_flash_attention_qkv: q_shift is f64[3,5], expected f64 (H, D) = (3, 6)");
    cr_assert_not_null(pg_flash_attention_qkv(g, qkv, 3, &(pg_flash_opts){.q_shift = qs}), "%s", pg_last_error());
    cr_assert_not_null(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.q_shift = qs}), "%s", pg_last_error());
    pg_graph_free(g);
}
