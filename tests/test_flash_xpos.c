/* xPos in the fused attention op (autograd/flash.h "xPos"): pg_flash_attention with
 * xpos_scale_base against the same attention from unfused ops with q_i scaled by
 * zeta^(i / s) and k_j by zeta^(-j / s) over the whole sequence (pow per entry, no
 * tiles: an independent construction), f64 within 1e-12 for the output and the
 * gradients of q, k, v over causal / not, masks, local bands (plain and exact),
 * sizes that are not multiples of the tile, cross attention; float64 gradchecks; f32
 * against f64; bad input. LocalAttention's fused xPos against its reference path is
 * in tests/test_local_fused.c. */
#include "../autograd/flash.h"
#include "testutil.h"

typedef struct xcase {
    int64_t B, H, Lq, Lk, D;
    bool causal, masked;
    int64_t w, lb, lf; /* local band (w 0: none) */
    bool exact;
    double s;          /* xpos_scale_base */
} xcase;

static pg_flash_opts opts_of(const xcase *c, pg_tensor *mask)
{
    return (pg_flash_opts){.causal = c->causal, .mask = mask, .window = c->w, .look_backward = c->lb,
                           .look_forward = c->lf, .exact_window = c->exact, .xpos_scale_base = c->s};
}

/* zeta_e^(sign p / s) for positions p = 0 .. n - 1: (n, D) of dt */
static pg_tensor *factors(pg_graph *g, int64_t n, int64_t D, double s, double sign, pg_dtype dt)
{
    pg_tensor *t = pg_empty(g, dt, PG_SHAPE(n, D));
    for (int64_t p = 0; p < n; p++)
        for (int64_t e = 0; e < D; e++) {
            double zeta = (2.0 * (double)(e % (D / 2)) + 0.4 * (double)D) / (1.4 * (double)D);
            pg_set(t, p * D + e, pow(zeta, sign * (double)p / s));
        }
    return t;
}

/* the same attention from unfused ops: (B, H, Lq, D) */
static pg_tensor *unfused(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *mask, const xcase *c)
{
    int64_t B = q->shape[0], Lq = q->shape[2], Lk = k->shape[2], D = q->shape[3];
    pg_tensor *qs = pg_mul(g, q, factors(g, Lq, D, c->s, 1, q->dtype));
    pg_tensor *ks = pg_mul(g, k, factors(g, Lk, D, c->s, -1, q->dtype));
    pg_tensor *logits = pg_mul_scalar(g, pg_matmul(g, qs, ks, false, true), 1.0 / sqrt((double)D));
    pg_flash_opts o = opts_of(c, mask);
    int64_t Bm = mask ? B : 1;
    pg_tensor *hide = pg_empty(g, PG_BOOL, PG_SHAPE(Bm, 1, Lq, Lk));
    for (int64_t b = 0; b < Bm; b++)
        for (int64_t i = 0; i < Lq; i++) {
            int64_t lo, hi;
            pg_flash_band(&o, i, Lk, &lo, &hi);
            for (int64_t j = 0; j < Lk; j++)
                pg_bool(hide)[(b * Lq + i) * Lk + j] =
                    (mask && !pg_bool(mask)[b * Lk + j]) || (c->causal && j > i) || j < lo || j > hi;
        }
    logits = pg_masked_fill(g, logits, hide, -INFINITY);
    return pg_matmul(g, pg_softmax(g, logits, -1), v, false, false);
}

/* batch 1 hides every third key, and key 0 */
static pg_tensor *make_mask(const xcase *c)
{
    if (!c->masked)
        return NULL;
    pg_tensor *m = pg_ones(NULL, PG_BOOL, PG_SHAPE(c->B, c->Lk));
    for (int64_t j = 0; c->B > 1 && j < c->Lk; j++)
        pg_bool(m)[c->Lk + j] = j % 3 != 1 && j != 0;
    return m;
}

typedef struct xrun {
    pg_tensor *out, *g[3]; /* heap copies */
} xrun;

static void xrun_free(xrun *r) { free_all(4, (pg_tensor *[]){r->out, r->g[0], r->g[1], r->g[2]}); }

/* out and the gradients of sum(w * out); counts the nodes named "flash" */
static xrun run(bool fused, pg_tensor *const *qkv, pg_tensor *mask, const xcase *c, pg_tensor *w, int *n_flash)
{
    pg_graph *g = pg_graph_new();
    pg_flash_opts o = opts_of(c, mask);
    pg_tensor *out = fused ? pg_flash_attention(g, qkv[0], qkv[1], qkv[2], &o) : unfused(g, qkv[0], qkv[1], qkv[2],
                                                                                        mask, c);
    cr_assert_not_null(out, "%s", pg_last_error());
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_last_error());
    *n_flash = fused_nodes(g);
    xrun r = {pg_tensor_copy(NULL, out), {NULL, NULL, NULL}};
    for (int i = 0; i < 3; i++) {
        cr_assert_not_null(qkv[i]->grad, "no gradient reached input %d", i);
        r.g[i] = pg_tensor_copy(NULL, qkv[i]->grad);
        pg_zero_grad(qkv[i]);
    }
    pg_graph_free(g);
    return r;
}

static void check_case(const xcase *c, uint64_t seed)
{
    pg_tensor *qkv[3] = {randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed, true),
                         randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 1, true),
                         randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 2, true)};
    pg_tensor *w = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed + 3, false), *mask = make_mask(c);
    int nf = 0, nu = 0;
    xrun f = run(true, qkv, mask, c, w, &nf), u = run(false, qkv, mask, c, w, &nu);
    char what[200];
    snprintf(what, sizeof what, "Lq %lld Lk %lld D %lld causal %d mask %d band %lld/%lld/%lld exact %d s %g",
             (long long)c->Lq, (long long)c->Lk, (long long)c->D, c->causal, c->masked, (long long)c->w,
             (long long)c->lb, (long long)c->lf, c->exact, c->s);
    cr_assert_eq(nf, 1, "%s: one fused node", what);
    cr_assert_eq(nu, 0, "%s: the reference has none", what);
    assert_close(f.out, u.out, 1e-12, what);
    for (int i = 0; i < 3; i++)
        assert_close(f.g[i], u.g[i], 1e-12, what);
    xrun_free(&f);
    xrun_free(&u);
    free_all(5, (pg_tensor *[]){qkv[0], qkv[1], qkv[2], w, mask});
}

Test(flash_xpos, matches_unfused_f64)
{
    const xcase cases[] = {
        {2, 2, 150, 150, 8, false, false, 0, 0, 0, false, 40},  /* full, several tiles each way */
        {2, 2, 150, 150, 8, true, true, 0, 0, 0, false, 40},    /* causal, masked */
        {1, 2, 170, 170, 6, true, false, 40, 1, 0, false, 20},  /* windows of 40 */
        {2, 1, 160, 160, 4, false, true, 40, 1, 1, false, 20},  /* look_forward, masked */
        {1, 2, 150, 150, 8, false, false, 41, 1, 1, true, 20},  /* exact window */
        {1, 2, 150, 150, 8, true, true, 45, 2, 0, true, 2.5},   /* exact causal, small scale base */
        {2, 2, 70, 130, 4, false, true, 0, 0, 0, false, 48},    /* cross attention */
        {2, 2, 130, 9, 2, true, false, 0, 0, 0, false, 3},      /* Lq > Lk, D 2 */
        {1, 1, 5, 7, 4, false, false, 0, 0, 0, false, 0.5},     /* below one tile */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i], 10 + 10 * i);
}

static pg_tensor *xpos_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const xcase *c = ctx;
    pg_flash_opts o = opts_of(c, NULL);
    return pg_flash_attention(g, in[0], in[1], in[2], &o);
}

/* float64 finite differences through q, k and v, full and banded, causal and not */
Test(flash_xpos, gradcheck)
{
    const xcase cases[] = {
        {1, 2, 5, 6, 4, false, false, 0, 0, 0, false, 1.5},
        {1, 2, 6, 6, 4, true, false, 0, 0, 0, false, 0.75},
        {1, 1, 9, 9, 6, false, false, 3, 1, 1, false, 2},
        {1, 1, 8, 8, 2, true, false, 2, 1, 0, true, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const xcase *c = &cases[i];
        pg_tensor *in[3] = {randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), 1 + i, true),
                            randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), 2 + i, true),
                            randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), 3 + i, true)};
        assert_gradcheck(xpos_fn, 3, in, (void *)c, NULL);
        free_all(3, in);
    }
}

/* f32 against f64 over several tiles and a band */
Test(flash_xpos, f32_agrees_with_f64)
{
    const xcase c = {2, 2, 200, 200, 16, true, true, 48, 2, 0, false, 24};
    pg_tensor *qkv[3] = {randt(PG_SHAPE(2, 2, 200, 16), 7, true), randt(PG_SHAPE(2, 2, 200, 16), 8, true),
                         randt(PG_SHAPE(2, 2, 200, 16), 9, true)};
    pg_tensor *w = randt(PG_SHAPE(2, 2, 200, 16), 11, false), *mask = make_mask(&c), *h32[3];
    for (int i = 0; i < 3; i++) {
        h32[i] = pg_tensor_cast(NULL, qkv[i], PG_F32);
        h32[i]->requires_grad = true;
    }
    int n1, n2;
    xrun a = run(true, qkv, mask, &c, w, &n1), b = run(true, h32, mask, &c, w, &n2);
    cr_assert_eq(b.out->dtype, PG_F32);
    assert_close(b.out, a.out, 1e-4, "out");
    for (int i = 0; i < 3; i++)
        assert_close(b.g[i], a.g[i], 1e-4, i == 0 ? "dq" : i == 1 ? "dk" : "dv");
    xrun_free(&a);
    xrun_free(&b);
    free_all(8, (pg_tensor *[]){qkv[0], qkv[1], qkv[2], w, mask, h32[0], h32[1], h32[2]});
}

/* heads go to threads whole (each thread its own scaled tiles): the same bits for 1 and 2
 * threads, f32 and f64; the work is above the one-task threshold */
Test(flash_xpos, same_bits_for_any_thread_count)
{
    const xcase c = {2, 3, 140, 140, 8, true, true, 30, 2, 0, true, 10};
    for (int f32 = 0; f32 < 2; f32++) {
        pg_tensor *qkv[3], *w = randt(PG_SHAPE(2, 3, 140, 8), 14, false), *mask = make_mask(&c);
        for (int i = 0; i < 3; i++) {
            pg_tensor *t = randt(PG_SHAPE(2, 3, 140, 8), 11 + (uint64_t)i, false);
            qkv[i] = f32 ? pg_tensor_cast(NULL, t, PG_F32) : pg_tensor_copy(NULL, t);
            qkv[i]->requires_grad = true;
            pg_tensor_free(t);
        }
        int saved = pg_num_threads(), n;
        cr_assert_eq(pg_set_num_threads(1), 0);
        xrun a = run(true, qkv, mask, &c, w, &n);
        cr_assert_eq(pg_set_num_threads(2), 0);
        xrun b = run(true, qkv, mask, &c, w, &n);
        pg_set_num_threads(saved);
        size_t bytes = (size_t)a.out->numel * pg_dtype_size(a.out->dtype);
        cr_assert_eq(memcmp(a.out->data, b.out->data, bytes), 0, "out differs (f32 %d)", f32);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(memcmp(a.g[i]->data, b.g[i]->data, bytes), 0, "gradient %d differs (f32 %d)", i, f32);
        xrun_free(&a);
        xrun_free(&b);
        free_all(5, (pg_tensor *[]){qkv[0], qkv[1], qkv[2], w, mask});
    }
}

/* no graph: the heap result equals the graph's (the tables freed with it) */
Test(flash_xpos, without_graph)
{
    const xcase c = {1, 2, 70, 70, 4, true, false, 0, 0, 0, false, 8};
    pg_tensor *q = randt(PG_SHAPE(1, 2, 70, 4), 1, false), *k = randt(PG_SHAPE(1, 2, 70, 4), 2, false);
    pg_tensor *v = randt(PG_SHAPE(1, 2, 70, 4), 3, false);
    pg_flash_opts o = opts_of(&c, NULL);
    pg_tensor *a = pg_flash_attention(NULL, q, k, v, &o);
    pg_graph *g = pg_graph_new();
    pg_tensor *b = unfused(g, q, k, v, NULL, &c);
    assert_close(a, b, 1e-12, "g NULL");
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){q, k, v, a});
}

Test(flash_xpos, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 4, 4)), *k = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 5, 4));
    pg_tensor *v = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 5, 3)), *q3 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 4, 3));
    pg_tensor *k3 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 5, 3));
    const double bad[] = {-1, NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 4; i++)
        ASSERT_FAILS(pg_flash_attention(g, q, k, v, &(pg_flash_opts){.xpos_scale_base = bad[i]}),
                     "pg_flash_attention: xpos_scale_base must be finite and >= 0 (0: off)");
    ASSERT_FAILS(pg_flash_attention(g, q3, k3, v, &(pg_flash_opts){.xpos_scale_base = 2}),
                 "> 0 needs an even head dim; got 2 with q f64[1,2,4,3]");
    cr_assert_not_null(pg_flash_attention(g, q3, k3, v, &(pg_flash_opts){.xpos_scale_base = 0}), "0 is off: D odd "
                                                                                                  "is fine");
    pg_graph_free(g);
}
