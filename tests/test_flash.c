/* The fused attention op (autograd/op_flash.c) against the same attention
 * built from the unfused ops (matmul, gathered distance bias, masked_fill,
 * softmax, matmul): outputs and gradients w.r.t. q, k, v and dist_bias in
 * f64 within 1e-12, over causal / not, masks, fully masked rows, sizes that
 * are not multiples of the tile, cross attention; gradchecks; f32 against
 * f64; bad input. */
#include "../autograd/flash.h"
#include "testutil.h"

typedef struct fcase {
    int64_t B, H, Lq, Lk, D, Dv;
    bool causal;
    int mask;  /* 0 none, 1 some keys hidden, 2 batch 1 fully hidden, 3 key 0 hidden in batch 1 */
    bool bias;
    double scale;
} fcase;

static pg_tensor *make_mask(const fcase *c)
{
    if (!c->mask)
        return NULL;
    pg_tensor *m = pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(c->B, c->Lk));
    uint8_t *p = pg_bool(m);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t j = 0; j < c->Lk; j++) {
            bool keep = true;
            if (c->mask == 1)
                keep = (j * 7 + b * 3) % 5 != 0;
            else if (c->mask == 2)
                keep = b != 1;
            else if (c->mask == 3)
                keep = !(b == 1 && j == 0);
            p[b * c->Lk + j] = keep;
        }
    return m;
}

/* the same attention from unfused ops: (B, H, Lq, Dv) */
static pg_tensor *unfused(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *dist_bias,
                          pg_tensor *mask, bool causal, double scale)
{
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], Lk = k->shape[2];
    if (scale == 0)
        scale = 1.0 / sqrt((double)q->shape[3]);
    pg_tensor *logits = pg_mul_scalar(g, pg_matmul(g, q, k, false, true), scale);
    if (dist_bias) {
        pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(Lq * Lk));
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++)
                pg_i64(idx)[i * Lk + j] = i - j + Lk - 1;
        pg_tensor *b = pg_reshape(g, pg_index_select(g, dist_bias, 1, idx), PG_SHAPE(H, Lq, Lk));
        logits = pg_add(g, logits, b);
    }
    if (mask || causal) {
        int64_t Bm = mask ? B : 1;
        pg_tensor *hide = pg_empty(g, PG_BOOL, PG_SHAPE(Bm, 1, Lq, Lk));
        for (int64_t b = 0; b < Bm; b++)
            for (int64_t i = 0; i < Lq; i++)
                for (int64_t j = 0; j < Lk; j++)
                    pg_bool(hide)[(b * Lq + i) * Lk + j] =
                        (mask && !pg_bool(mask)[b * Lk + j]) || (causal && j > i);
        logits = pg_masked_fill(g, logits, hide, -INFINITY);
    }
    return pg_matmul(g, pg_softmax(g, logits, -1), v, false, false);
}

typedef struct run_out {
    pg_tensor *out, *gq, *gk, *gv, *gb; /* heap copies */
} run_out;

static void run_free(run_out *r) { free_all(5, (pg_tensor *[]){r->out, r->gq, r->gk, r->gv, r->gb}); }

/* out and gradients of L = sum(w * out) */
static run_out run(bool fused, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *db, pg_tensor *mask,
                   bool causal, double scale, pg_tensor *w)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *out;
    if (fused) {
        pg_flash_opts o = {.scale = scale, .causal = causal, .mask = mask, .dist_bias = db};
        out = pg_flash_attention(g, q, k, v, &o);
    } else {
        out = unfused(g, q, k, v, db, mask, causal, scale);
    }
    cr_assert_not_null(out, "%s", pg_last_error());
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_last_error());
    run_out r = {pg_tensor_copy(NULL, out), take_grad(q), take_grad(k), take_grad(v), take_grad(db)};
    pg_graph_free(g);
    return r;
}

static void check_case(const fcase *c, uint64_t seed)
{
    pg_tensor *q = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed, true);
    pg_tensor *k = randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 1, true);
    pg_tensor *v = randt(PG_SHAPE(c->B, c->H, c->Lk, c->Dv), seed + 2, true);
    pg_tensor *db = c->bias ? randt(PG_SHAPE(c->H, c->Lq + c->Lk - 1), seed + 3, true) : NULL;
    pg_tensor *w = randt(PG_SHAPE(c->B, c->H, c->Lq, c->Dv), seed + 4, false);
    pg_tensor *mask = make_mask(c);
    run_out f = run(true, q, k, v, db, mask, c->causal, c->scale, w);
    run_out u = run(false, q, k, v, db, mask, c->causal, c->scale, w);
    char what[160];
    snprintf(what, sizeof what, "B%lld H%lld Lq%lld Lk%lld D%lld causal %d mask %d bias %d", (long long)c->B,
             (long long)c->H, (long long)c->Lq, (long long)c->Lk, (long long)c->D, c->causal, c->mask, c->bias);
    assert_close(f.out, u.out, 1e-12, what);
    assert_close(f.gq, u.gq, 1e-12, what);
    assert_close(f.gk, u.gk, 1e-12, what);
    assert_close(f.gv, u.gv, 1e-12, what);
    if (db)
        assert_close(f.gb, u.gb, 1e-12, what);
    for (int64_t i = 0; i < f.out->numel; i++)
        cr_assert(isfinite(pg_get(f.out, i)), "%s: non-finite output", what);
    run_free(&f);
    run_free(&u);
    free_all(6, (pg_tensor *[]){q, k, v, db, w, mask});
}

Test(flash, matches_unfused_f64)
{
    const int64_t sizes[][3] = {{67, 67, 5}, {5, 7, 3}, {70, 9, 4}, {3, 130, 2}, {64, 64, 4}};
    uint64_t seed = 10;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int causal = 0; causal < 2; causal++)
            for (int mask = 0; mask < 4; mask++)
                for (int bias = 0; bias < 2; bias++) {
                    if (sizes[s][0] > 64 && sizes[s][1] > 64 && mask != 1 && mask != 3 && bias != causal)
                        continue; /* the largest size: a subset of the options keeps the suite fast */
                    fcase c = {2, 3, sizes[s][0], sizes[s][1], sizes[s][2], sizes[s][2], causal, mask, bias,
                               mask == 1 ? 0.3 : 0.0};
                    check_case(&c, seed += 10);
                }
}

Test(flash, value_dim_differs)
{
    fcase c = {2, 3, 7, 9, 4, 6, true, 1, true, 0};
    check_case(&c, 99);
}

/* a batch with every key hidden: zero output and zero gradients from its rows */
Test(flash, fully_masked_rows_zero)
{
    fcase c = {2, 2, 6, 6, 3, 3, false, 2, true, 0};
    pg_tensor *q = randt(PG_SHAPE(2, 2, 6, 3), 1, true), *k = randt(PG_SHAPE(2, 2, 6, 3), 2, true);
    pg_tensor *v = randt(PG_SHAPE(2, 2, 6, 3), 3, true), *db = randt(PG_SHAPE(2, 11), 4, true);
    pg_tensor *w = randt(PG_SHAPE(2, 2, 6, 3), 5, false), *mask = make_mask(&c);
    run_out f = run(true, q, k, v, db, mask, false, 0, w);
    int64_t half = 2 * 6 * 3; /* batch 1 */
    for (int64_t i = half; i < 2 * half; i++) {
        cr_assert_eq(pg_get(f.out, i), 0.0);
        cr_assert_eq(pg_get(f.gq, i), 0.0);
        cr_assert_eq(pg_get(f.gk, i), 0.0);
        cr_assert_eq(pg_get(f.gv, i), 0.0);
    }
    run_free(&f);
    free_all(6, (pg_tensor *[]){q, k, v, db, w, mask});
}

typedef struct gc_ctx {
    pg_tensor *mask;
    bool causal;
} gc_ctx;

static pg_tensor *flash_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    gc_ctx *c = ctx;
    pg_flash_opts o = {.scale = 0.7, .causal = c->causal, .mask = c->mask, .dist_bias = n > 3 ? in[3] : NULL};
    return pg_flash_attention(g, in[0], in[1], in[2], &o);
}

/* gradcheck w.r.t. q, k, v and dist_bias (and the f32 leg against f64) */
Test(flash, gradcheck)
{
    const int64_t sz[][2] = {{4, 4}, {3, 5}, {5, 3}};
    for (int s = 0; s < 3; s++)
        for (int causal = 0; causal < 2; causal++) {
            int64_t Lq = sz[s][0], Lk = sz[s][1];
            fcase mc = {2, 2, Lq, Lk, 3, 3, causal, 3, true, 0};
            gc_ctx ctx = {make_mask(&mc), causal};
            pg_tensor *in[4] = {randt(PG_SHAPE(2, 2, Lq, 3), 1 + s, true), randt(PG_SHAPE(2, 2, Lk, 3), 2 + s, true),
                                randt(PG_SHAPE(2, 2, Lk, 2), 3 + s, true),
                                randt(PG_SHAPE(2, Lq + Lk - 1), 4 + s, true)};
            assert_gradcheck(flash_fn, 4, in, &ctx, NULL);
            assert_gradcheck(flash_fn, 3, in, &ctx, NULL); /* without dist_bias */
            free_all(4, in);
            pg_tensor_free(ctx.mask);
        }
}

/* the fused attention in float32 (b) against float64 (a): out, the gradients (and the
 * bias's where there is one), then both freed */
static void assert_f32_near_f64(run_out *a, run_out *b)
{
    assert_close(b->out, a->out, 1e-5, "out");
    assert_close(b->gq, a->gq, 1e-4, "dq");
    assert_close(b->gk, a->gk, 1e-4, "dk");
    assert_close(b->gv, a->gv, 1e-5, "dv");
    if (a->gb)
        assert_close(b->gb, a->gb, 1e-4, "dbias");
    run_free(a);
    run_free(b);
}

/* head and value widths around the transposes' blocks of columns (16 floats, 8 doubles;
 * the last block loaded masked) with key counts around their blocks of rows: against the
 * unfused attention in f64, and float32 against float64 */
Test(flash, widths_around_the_transpose_blocks)
{
    const int64_t dims[][3] = {{40, 7, 9}, {37, 8, 16}, {33, 17, 24}, {48, 33, 8}, {19, 16, 33}};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int64_t L = dims[s][0], D = dims[s][1], Dv = dims[s][2];
        fcase c = {1, 2, L, L, D, Dv, true, 1, true, 0};
        check_case(&c, 300 + s);
        pg_tensor *q = randt(PG_SHAPE(1, 2, L, D), 7, true), *k = randt(PG_SHAPE(1, 2, L, D), 8, true);
        pg_tensor *v = randt(PG_SHAPE(1, 2, L, Dv), 9, true), *w = randt(PG_SHAPE(1, 2, L, Dv), 11, false);
        pg_tensor *q32 = pg_tensor_cast(NULL, q, PG_F32), *k32 = pg_tensor_cast(NULL, k, PG_F32);
        pg_tensor *v32 = pg_tensor_cast(NULL, v, PG_F32);
        q32->requires_grad = k32->requires_grad = v32->requires_grad = true;
        run_out a = run(true, q, k, v, NULL, NULL, true, 0, w), b = run(true, q32, k32, v32, NULL, NULL, true, 0, w);
        assert_f32_near_f64(&a, &b);
        free_all(7, (pg_tensor *[]){q, k, v, w, q32, k32, v32});
    }
}

/* f32 (fast exp) against f64 over several tiles */
Test(flash, f32_agrees_with_f64)
{
    fcase c = {1, 2, 130, 100, 8, 8, true, 1, true, 0};
    pg_tensor *q = randt(PG_SHAPE(1, 2, 130, 8), 7, true), *k = randt(PG_SHAPE(1, 2, 100, 8), 8, true);
    pg_tensor *v = randt(PG_SHAPE(1, 2, 100, 8), 9, true), *db = randt(PG_SHAPE(2, 229), 10, true);
    pg_tensor *w = randt(PG_SHAPE(1, 2, 130, 8), 11, false), *mask = make_mask(&c);
    for (int64_t i = 0; i < q->numel; i++) /* larger logits: a wide range of exponents */
        pg_f64(q)[i] *= 6;
    pg_tensor *q32 = pg_tensor_cast(NULL, q, PG_F32), *k32 = pg_tensor_cast(NULL, k, PG_F32);
    pg_tensor *v32 = pg_tensor_cast(NULL, v, PG_F32), *db32 = pg_tensor_cast(NULL, db, PG_F32);
    pg_tensor *p32[] = {q32, k32, v32, db32};
    for (int i = 0; i < 4; i++)
        p32[i]->requires_grad = true;
    run_out a = run(true, q, k, v, db, mask, true, 0, w);
    run_out b = run(true, q32, k32, v32, db32, mask, true, 0, w);
    assert_f32_near_f64(&a, &b);
    free_all(10, (pg_tensor *[]){q, k, v, db, w, mask, q32, k32, v32, db32});
}

/* no graph: a heap result equal to the graph's */
Test(flash, without_graph)
{
    pg_tensor *q = randt(PG_SHAPE(1, 2, 5, 3), 1, false), *k = randt(PG_SHAPE(1, 2, 5, 3), 2, false);
    pg_tensor *v = randt(PG_SHAPE(1, 2, 5, 3), 3, false);
    pg_flash_opts o = {.causal = true};
    pg_tensor *a = pg_flash_attention(NULL, q, k, v, &o);
    pg_graph *g = pg_graph_new();
    pg_tensor *b = unfused(g, q, k, v, NULL, NULL, true, 0);
    assert_close(a, b, 1e-12, "g NULL");
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){q, k, v, a});
}

Test(flash, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 4, 5)), *k = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 5));
    pg_tensor *v = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 5)), *k32 = pg_zeros(g, PG_F32, PG_SHAPE(2, 3, 6, 5));
    pg_tensor *kd = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 4)), *vl = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 7, 5));
    ASSERT_FAILS(pg_flash_attention(g, NULL, k, v, NULL), "pg_flash_attention: q is NULL");
    ASSERT_FAILS(pg_flash_attention(g, q, k, NULL, NULL), "v is NULL");
    ASSERT_FAILS(pg_flash_attention(g, q, kd, v, NULL), "got q f64[2,3,4,5], k f64[2,3,6,4], v f64[2,3,6,5]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, vl, NULL), "v f64[2,3,7,5]");
    ASSERT_FAILS(pg_flash_attention(g, q, k32, v, NULL), "k f32[2,3,6,5]");
    pg_tensor *m_bad = pg_zeros(g, PG_BOOL, PG_SHAPE(2, 4)), *m_f = pg_zeros(g, PG_F64, PG_SHAPE(2, 6));
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.mask = m_bad}),
                 "mask is bool[2,4], expected a bool key mask (B, Lk) = (2, 6)");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.mask = m_f}), "mask is f64[2,6]");
    pg_tensor *b_len = pg_zeros(g, PG_F64, PG_SHAPE(3, 10)), *b_h = pg_zeros(g, PG_F64, PG_SHAPE(2, 9));
    pg_tensor *b_32 = pg_zeros(g, PG_F32, PG_SHAPE(3, 9));
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.dist_bias = b_len}),
                 "dist_bias is f64[3,10], expected f64 (H, Lq + Lk - 1) = (3, 9)");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.dist_bias = b_h}), "dist_bias is f64[2,9]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.dist_bias = b_32}), "dist_bias is f32[3,9]");
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.scale = INFINITY}), "scale must be finite");
    pg_tensor *q3 = pg_zeros(g, PG_F64, PG_SHAPE(3, 4, 5));
    ASSERT_FAILS(pg_flash_attention(g, q3, k, v, NULL), "q f64[3,4,5]");
    pg_tensor *qi = pg_zeros(g, PG_I64, PG_SHAPE(2, 3, 4, 5));
    ASSERT_FAILS(pg_flash_attention(g, qi, k, v, NULL), "q i64[2,3,4,5]");
    pg_graph_free(g);
}

/* One rule with pg_attention: an empty query or key sequence (softmax over no keys is
 * undefined) is refused with the same message. */
Test(flash, empty_sequences_refused)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 4, 3)), *k = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 5, 3));
    pg_tensor *v = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 5, 3)), *q0 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 0, 3));
    pg_tensor *k0 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 0, 3)), *v0 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 0, 3));
    const char *both = "expected q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv) of one float dtype, "
                       "all dims positive, got q f64[1,2,4,3], k f64[1,2,0,3], v f64[1,2,0,3]";
    ASSERT_FAILS(pg_flash_attention(g, q, k0, v0, NULL), both);
    ASSERT_FAILS(pg_attention(g, q, k0, v0, NULL), both);
    ASSERT_FAILS(pg_flash_attention(g, q0, k, v, &(pg_flash_opts){.causal = true}),
                 "pg_flash_attention: expected q (B, H, Lq, Dh)");
    ASSERT_FAILS(pg_attention(g, q0, k, v, &(pg_sdpa_opts){.causal = true}), "pg_attention: expected q (B, H, Lq, Dh)");
    ASSERT_FAILS(pg_flash_attention(NULL, q0, k0, v0, &(pg_flash_opts){.window = 2, .look_backward = 1}),
                 "all dims positive, got q f64[1,2,0,3]");
    pg_graph_free(g);
}

/* an ALiBi-like bias: dist_bias = slope[h] * -|d| built by ops; the gradient reaches slope */
static pg_tensor *alibi_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    int64_t Lq = in[0]->shape[2], Lk = in[1]->shape[2];
    pg_tensor *dist = pg_empty(g, in[0]->dtype, PG_SHAPE(1, Lq + Lk - 1));
    for (int64_t i = 0; i < Lq + Lk - 1; i++)
        pg_set(dist, i, -fabs((double)(i - (Lk - 1))));
    pg_flash_opts o = {.causal = true, .dist_bias = pg_mul(g, in[3], dist)};
    return pg_flash_attention(g, in[0], in[1], in[2], &o);
}

Test(flash, gradient_reaches_bias_producer)
{
    pg_tensor *in[4] = {randt(PG_SHAPE(1, 2, 6, 3), 1, true), randt(PG_SHAPE(1, 2, 6, 3), 2, true),
                        randt(PG_SHAPE(1, 2, 6, 3), 3, true), randt(PG_SHAPE(2, 1), 4, true)};
    assert_gradcheck(alibi_fn, 4, in, NULL, NULL);
    free_all(4, in);
}

Test(flash, no_grad_records_nothing)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = randt(PG_SHAPE(1, 1, 4, 2), 1, true), *k = randt(PG_SHAPE(1, 1, 4, 2), 2, true);
    pg_tensor *v = randt(PG_SHAPE(1, 1, 4, 2), 3, true);
    pg_no_grad_begin(g);
    pg_tensor *out = pg_flash_attention(g, q, k, v, NULL);
    pg_no_grad_end(g);
    cr_assert_not_null(out, "%s", pg_last_error());
    cr_assert(!out->requires_grad);
    cr_assert_eq(pg_graph_num_nodes(g), 0);
    pg_graph_free(g);
    free_all(3, (pg_tensor *[]){q, k, v});
}

/* ctx: {H, B, accumulated}; res: the distance bias's gradient of a causal (B, H, 64, 16)
 * float64 attention, accumulated onto the gradient of a second use of the bias when asked */
static void dist_bias_grad(void *ctx, pg_tensor **res)
{
    const int64_t *c = ctx, H = c[0], B = c[1], L = 64, D = 16;
    pg_rng r = pg_rng_init(3);
    pg_tensor *q = pg_randn(NULL, PG_F64, PG_SHAPE(B, H, L, D), &r);
    pg_tensor *k = pg_randn(NULL, PG_F64, PG_SHAPE(B, H, L, D), &r);
    pg_tensor *v = pg_randn(NULL, PG_F64, PG_SHAPE(B, H, L, D), &r);
    pg_tensor *db = pg_randn(NULL, PG_F64, PG_SHAPE(H, 2 * L - 1), &r);
    db->requires_grad = true;
    pg_graph *g = pg_graph_new();
    const pg_flash_opts o = {.dist_bias = db, .causal = true};
    pg_tensor *y = pg_flash_attention(g, q, k, v, &o);
    pg_tensor *loss = pg_sum(g, pg_mul(g, y, y), 0, NULL, false);
    if (c[2]) /* recorded after y: its gradient is written first, the attention's added to it */
        loss = pg_add(g, loss, pg_sum(g, pg_mul(g, db, db), 0, NULL, false));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    res[0] = take_grad(db);
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){q, k, v, db});
}

/* ctx: {B}; res: q's and the distance bias's gradients of a one-head causal (B, 1, 128, 16)
 * float64 attention (enough work for the kernel to take 2 threads from B = 2) */
static void one_head_grads(void *ctx, pg_tensor **res)
{
    const int64_t B = *(const int64_t *)ctx, L = 128, D = 16;
    pg_rng r = pg_rng_init(5);
    pg_tensor *q = pg_randn(NULL, PG_F64, PG_SHAPE(B, 1, L, D), &r);
    pg_tensor *k = pg_randn(NULL, PG_F64, PG_SHAPE(B, 1, L, D), &r);
    pg_tensor *v = pg_randn(NULL, PG_F64, PG_SHAPE(B, 1, L, D), &r);
    pg_tensor *db = pg_randn(NULL, PG_F64, PG_SHAPE(1, 2 * L - 1), &r);
    q->requires_grad = db->requires_grad = true;
    pg_graph *g = pg_graph_new();
    const pg_flash_opts o = {.dist_bias = db, .causal = true};
    pg_tensor *y = pg_flash_attention(g, q, k, v, &o);
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, y, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    res[0] = take_grad(q);
    res[1] = take_grad(db);
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){q, k, v, db});
}

/* One head shares the distance bias's gradient among all rows, fewer regions than threads.
 * Its copies are small, so each row adds to its own, summed after in row order
 * (op_flash.c sh_rows): q's gradient and the bias's have one thread's bits. (Until the
 * thirty-fourth session the rows went to a buffer per thread, and the bias's last bits
 * depended on the thread count; before that they all went to the first thread.) */
Test(flash, one_head_shared_gradient_on_2_threads)
{
    int saved = pg_num_threads();
    for (int64_t B = 2; B <= 5; B += 3) {
        pg_tensor *a[2], *b[2];
        cr_assert_eq(pg_set_num_threads(1), 0);
        one_head_grads(&B, a);
        cr_assert_eq(pg_set_num_threads(2), 0);
        one_head_grads(&B, b);
        cr_assert(!memcmp(a[0]->data, b[0]->data, (size_t)a[0]->numel * sizeof(double)), "dq differs, B %lld",
                  (long long)B);
        cr_assert(!memcmp(a[1]->data, b[1]->data, (size_t)a[1]->numel * sizeof(double)), "dbias differs, B %lld",
                  (long long)B);
        free_all(4, (pg_tensor *[]){a[0], a[1], b[0], b[1]});
    }
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

/* The distance bias's gradient sums over batches: each head's rows go to one thread in
 * batch order, straight into the gradient, so 1 and 2 threads give the same bits with an
 * odd head count (3 heads of 3 batches) and onto a gradient that already has a value. */
Test(flash, shared_bias_gradient_same_bits_for_any_thread_count)
{
    const int64_t cases[4][3] = {{4, 2, 0}, {4, 2, 1}, {3, 3, 0}, {3, 3, 1}};
    for (int i = 0; i < 4; i++)
        assert_same_bits_on_1_and_2_threads(dist_bias_grad, (void *)cases[i], 1, NULL);
}
