/* Attention dropout inside the fused kernel (autograd/flash.h: dropout, rng) against
 * the unfused ops with pg_dropout on the weights from the same generator state: the
 * same mask, so outputs and gradients agree to 1e-12 in f64 and the generator ends
 * at the same position; gradcheck at a fixed state; the same bits for 1 and 2
 * threads; f32 against f64; dropout 1; bad input; MultiheadAttention in train mode
 * takes the fused path and equals its reference path. */
#include "../autograd/flash.h"
#include "../tensor/threadpool.h"
#include "testutil.h"

typedef struct dcase {
    int64_t B, H, Lq, Lk, D;
    bool causal, mask;
    int64_t window; /* > 0: a band, look_backward 1 */
    double p;
} dcase;

static pg_tensor *key_mask_of(const dcase *c) { return key_mask_pattern(c->B, c->Lk, 3, 2); }

static pg_tensor *unfused(pg_graph *g, const dcase *c, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                          const pg_tensor *mask, pg_rng *r)
{
    pg_tensor *logits = pg_mul_scalar(g, pg_matmul(g, q, k, false, true), 1.0 / sqrt((double)c->D));
    pg_tensor *hide = hidden_pairs(g, c->B, c->Lq, c->Lk, mask, c->causal, c->window);
    pg_tensor *w = pg_softmax(g, pg_masked_fill(g, logits, hide, -INFINITY), -1);
    return pg_matmul(g, pg_dropout(g, w, c->p, true, r), v, false, false);
}

static pg_tensor *fused(pg_graph *g, const dcase *c, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *mask,
                        pg_rng *r)
{
    pg_flash_opts o = {.causal = c->causal, .mask = mask, .window = c->window, .look_backward = 1, .dropout = c->p,
                       .rng = r};
    return pg_flash_attention(g, q, k, v, &o);
}

enum { N_OUT = 4 };
static const char *const NAMES[N_OUT] = {"out", "dq", "dk", "dv"};

/* out and the gradients of sum(w * out); r advances as the call draws */
static void run(bool use_fused, const dcase *c, pg_tensor *const qkv[3], pg_tensor *mask, pg_tensor *w, pg_rng *r,
                pg_tensor *res[N_OUT])
{
    pg_graph *g = pg_graph_new();
    pg_tensor *out = use_fused ? fused(g, c, qkv[0], qkv[1], qkv[2], mask, r)
                               : unfused(g, c, qkv[0], qkv[1], qkv[2], mask, r);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, out);
    for (int i = 0; i < 3; i++)
        res[1 + i] = take_grad(qkv[i]);
    pg_graph_free(g);
}

static void make_qkv(const dcase *c, uint64_t seed, pg_tensor *qkv[3])
{
    qkv[0] = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed, true);
    qkv[1] = randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 1, true);
    qkv[2] = randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 2, true);
}

static void check_case(const dcase *c, uint64_t seed)
{
    pg_tensor *qkv[3], *mask = c->mask ? key_mask_of(c) : NULL, *f[N_OUT], *u[N_OUT];
    make_qkv(c, seed, qkv);
    pg_tensor *w = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed + 7, false);
    pg_rng r1 = pg_rng_init(seed), r2 = pg_rng_init(seed);
    pg_rng_uniform(&r1), pg_rng_uniform(&r2); /* not at the stream's start */
    run(true, c, qkv, mask, w, &r1, f);
    run(false, c, qkv, mask, w, &r2, u);
    cr_assert_eq(r1.counter, r2.counter, "the generator moves on as pg_dropout's does");
    for (int i = 0; i < N_OUT; i++) {
        char what[160];
        snprintf(what, sizeof what, "%s: B%lld H%lld Lq%lld Lk%lld causal %d mask %d window %lld p %g", NAMES[i],
                 (long long)c->B, (long long)c->H, (long long)c->Lq, (long long)c->Lk, c->causal, c->mask,
                 (long long)c->window, c->p);
        assert_close(f[i], u[i], 1e-12, what);
    }
    free_all(N_OUT, f);
    free_all(N_OUT, u);
    free_all(5, (pg_tensor *[]){qkv[0], qkv[1], qkv[2], mask, w});
}

Test(flash_dropout, matches_pg_dropout_on_the_weights)
{
    const dcase cases[] = {
        {2, 3, 70, 70, 8, true, false, 0, 0.1},  {1, 2, 130, 100, 5, true, true, 0, 0.5},
        {1, 2, 100, 130, 5, false, true, 0, 0.3}, {2, 2, 150, 150, 4, true, false, 48, 0.2},
        {1, 1, 3, 9, 2, false, false, 0, 0.9},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i], 100 + 10 * i);
}

/* the mask is really random: about p of a large tile's weights are dropped (the output
 * differs from the undropped one, and dropout 1 gives 0 everywhere) */
Test(flash_dropout, drops_about_p_and_all_at_1)
{
    const dcase c = {1, 1, 200, 200, 4, false, false, 0, 1.0};
    pg_tensor *qkv[3];
    make_qkv(&c, 3, qkv);
    pg_rng r = pg_rng_init(1);
    pg_tensor *out = pg_flash_attention(NULL, qkv[0], qkv[1], qkv[2], &(pg_flash_opts){.dropout = 1.0, .rng = &r});
    cr_assert_not_null(out, "%s", pg_last_error());
    for (int64_t t = 0; t < out->numel; t++)
        cr_assert_eq(pg_get(out, t), 0.0, "dropout 1: element %lld", (long long)t);
    cr_assert_eq(r.counter, 200 * 200);
    /* p 0.25 with v = 1: each output is (kept weights' sum) / 0.75, whose mean over rows is ~1 */
    pg_tensor *ones = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1, 1, 200, 4), 1.0);
    pg_tensor *o2 = pg_flash_attention(NULL, qkv[0], qkv[1], ones, &(pg_flash_opts){.dropout = 0.25, .rng = &r});
    double mean = 0, differ = 0;
    for (int64_t i = 0; i < 200; i++) {
        mean += pg_get(o2, i * 4) / 200;
        differ += fabs(pg_get(o2, i * 4) - 1.0) > 1e-9;
    }
    cr_assert(fabs(mean - 1.0) < 0.05, "mean of the rescaled kept weights %g", mean);
    cr_assert_gt(differ, 190, "rows that lost weight: %g", differ);
    free_all(6, (pg_tensor *[]){qkv[0], qkv[1], qkv[2], out, ones, o2});
}

typedef struct gc_ctx {
    dcase c;
    pg_rng r; /* the state each evaluation starts from: the same mask every time */
} gc_ctx;

static pg_tensor *drop_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const gc_ctx *x = ctx;
    pg_rng r = x->r;
    return fused(g, &x->c, in[0], in[1], in[2], NULL, &r);
}

Test(flash_dropout, gradcheck)
{
    const dcase cases[] = {{2, 2, 5, 5, 3, true, false, 0, 0.3}, {1, 2, 70, 70, 2, true, false, 0, 0.5}};
    for (size_t i = 0; i < 2; i++) {
        gc_ctx x = {cases[i], pg_rng_init(5 + i)};
        pg_tensor *qkv[3];
        make_qkv(&cases[i], 20 + i, qkv);
        assert_gradcheck(drop_fn, 3, qkv, &x, NULL);
        free_all(3, qkv);
    }
}

typedef struct fused_run {
    const dcase *c;
    pg_tensor **qkv, *mask, *w;
} fused_run;

/* the fused op from the same generator state each time */
static void run_fused(void *ctx, pg_tensor **res)
{
    const fused_run *x = ctx;
    pg_rng r = pg_rng_init(2);
    run(true, x->c, x->qkv, x->mask, x->w, &r, res);
}

Test(flash_dropout, same_bits_for_any_thread_count)
{
    const dcase c = {2, 4, 90, 90, 8, true, true, 0, 0.2};
    pg_tensor *qkv[3], *mask = key_mask_of(&c);
    make_qkv(&c, 40, qkv);
    fused_run x = {&c, qkv, mask, randt(PG_SHAPE(2, 4, 90, 8), 41, false)};
    assert_same_bits_on_1_and_2_threads(run_fused, &x, N_OUT, NAMES);
    free_all(5, (pg_tensor *[]){qkv[0], qkv[1], qkv[2], mask, x.w});
}

Test(flash_dropout, f32_agrees_with_f64)
{
    const dcase c = {1, 2, 130, 100, 8, true, true, 0, 0.3};
    pg_tensor *qkv[3], *q32[3], *mask = key_mask_of(&c), *a[N_OUT], *b[N_OUT];
    make_qkv(&c, 60, qkv);
    for (int i = 0; i < 3; i++) {
        q32[i] = pg_tensor_cast(NULL, qkv[i], PG_F32);
        q32[i]->requires_grad = true;
    }
    pg_tensor *w = randt(PG_SHAPE(1, 2, 130, 8), 61, false);
    pg_rng r1 = pg_rng_init(3), r2 = pg_rng_init(3);
    run(true, &c, qkv, mask, w, &r1, a);
    run(true, &c, q32, mask, w, &r2, b);
    for (int i = 0; i < N_OUT; i++)
        assert_close(b[i], a[i], 1e-4, NAMES[i]);
    free_all(N_OUT, a);
    free_all(N_OUT, b);
    free_all(8, (pg_tensor *[]){qkv[0], qkv[1], qkv[2], q32[0], q32[1], q32[2], mask, w});
}

Test(flash_dropout, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 4, 4));
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &(pg_flash_opts){.dropout = 0.1}),
                 "pg_flash_attention: dropout must be in [0, 1] and > 0 needs a generator (rng), got 0.1 and rng NULL");
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &(pg_flash_opts){.dropout = -0.1, .rng = &r}), "got -0.1 and rng set");
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &(pg_flash_opts){.dropout = 1.5, .rng = &r}), "got 1.5");
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &(pg_flash_opts){.dropout = NAN, .rng = &r}), "got nan");
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &(pg_flash_opts){.dropout = 0.1, .rng = &r, .dropout_window = 2}),
                 "pg_flash_attention: dropout layout window 2, windows 0, slots 0, look_backward 0: need window, "
                 "windows, slots >= 1, 0 <= look_backward < windows, windows x window >= Lq = 4");
    ASSERT_FAILS(pg_flash_attention(g, q, q, q,
                                    &(pg_flash_opts){.dropout = 0.1, .rng = &r, .dropout_window = 2,
                                                     .dropout_windows = 1, .dropout_slots = 4}),
                 "dropout layout window 2, windows 1, slots 4"); /* 1 window of 2 rows < 4 queries */
    cr_assert_eq(r.counter, 0, "a refused call draws nothing");
    cr_assert_not_null(pg_flash_attention(g, q, q, q, &(pg_flash_opts){.dropout = 0}), "%s", pg_last_error());
    pg_graph_free(g);
}

/* MultiheadAttention in train mode with dropout: the fused kernel, equal to the reference path */
static pg_mha *drop_mha(bool unfused)
{
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.dtype = PG_F64;
    c.causal = true;
    c.dropout = 0.25;
    c.unfused = unfused;
    pg_rng r = pg_rng_init(7);
    pg_mha *m = pg_mha_new(&c, NULL, 0, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_module_train(&m->base, true);
    return m;
}

Test(flash_dropout, mha_train_mode_is_fused_and_equal)
{
    pg_mha *m[2] = {drop_mha(false), drop_mha(true)};
    pg_tensor *x[2] = {randt(PG_SHAPE(2, 77, 8), 3, true), NULL};
    x[1] = pg_tensor_copy(NULL, x[0]);
    x[1]->requires_grad = true;
    pg_tensor *y[2];
    int flash[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        pg_rng r = pg_rng_init(11);
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_mha_forward(g, m[i], x[i], NULL, &(pg_attn_args){.rng = &r});
        cr_assert_not_null(out, "%s", pg_graph_error(g));
        flash[i] = fused_nodes(g);
        pg_rng ru = pg_rng_init(5);
        cr_assert_eq(pg_backward_with(g, out, pg_randn(g, PG_F64, out->ndim, out->shape, &ru)), 0);
        y[i] = pg_tensor_copy(NULL, out);
        pg_graph_free(g);
    }
    cr_assert_eq(flash[0], 1, "train mode with dropout: fused");
    cr_assert_eq(flash[1], 0, "unfused: the reference");
    assert_close(y[0], y[1], 1e-12, "output");
    assert_close(x[0]->grad, x[1]->grad, 1e-12, "grad x");
    pg_tensor_list p1 = pg_module_parameters(&m[0]->base), p2 = pg_module_parameters(&m[1]->base);
    for (int i = 0; i < p1.n; i++)
        assert_close(p1.tensors[i]->grad, p2.tensors[i]->grad, 1e-12, p1.names[i]);
    pg_tensor_list_free(&p1);
    pg_tensor_list_free(&p2);
    free_all(4, (pg_tensor *[]){x[0], x[1], y[0], y[1]});
    pg_module_free(&m[0]->base);
    pg_module_free(&m[1]->base);
}
