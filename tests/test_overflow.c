/* Extreme but legal sizes and options (issue 11, item 2): a local band that
 * reaches beyond the sequence (window, look_backward, look_forward up to
 * INT64_MAX) means "every key in that direction", so the result equals the
 * attention with that band written out by hand (or full / full causal
 * attention); arguments whose arithmetic cannot be represented are refused
 * with a message naming the function. `make asan` runs every case under UBSan
 * (no signed overflow anywhere). */
#include "../autograd/flash.h"
#include "testutil.h"


#define BIG (1LL << 62)
#define MAX INT64_MAX

typedef struct band {
    int64_t w, lb, lf;
    bool exact, causal;
} band;

/* whether query i sees key j under b (w 0: every key), computed without overflow */
static bool visible(const band *b, int64_t i, int64_t j)
{
    if (b->causal && j > i)
        return false;
    if (b->w <= 0)
        return true;
    if (b->exact) { /* i - w lb <= j <= i + w lf; the products in double (exact for these small distances) */
        double d = (double)i - (double)j;
        return d >= 0 ? d <= (double)b->w * (double)b->lb : -d <= (double)b->w * (double)b->lf;
    }
    int64_t ahead = j / b->w - i / b->w; /* windows from the query's to the key's */
    return ahead >= 0 ? ahead <= b->lf : -ahead <= b->lb;
}

/* (Lq, Lk) additive bias: 0 where visible, -inf elsewhere */
static pg_tensor *band_bias(const band *b, int64_t Lq, int64_t Lk)
{
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(Lq, Lk));
    for (int64_t i = 0; i < Lq; i++)
        for (int64_t j = 0; j < Lk; j++)
            pg_set(t, i * Lk + j, visible(b, i, j) ? 0.0 : -INFINITY);
    return t;
}

static char *describe(char *buf, size_t n, const band *b, int64_t Lq, int64_t Lk)
{
    snprintf(buf, n, "Lq %lld Lk %lld window %lld lb %lld lf %lld exact %d causal %d", (long long)Lq, (long long)Lk,
             (long long)b->w, (long long)b->lb, (long long)b->lf, b->exact, b->causal);
    return buf;
}

typedef struct res {
    pg_tensor *out, *gq, *gk, *gv; /* heap copies */
} res;

static void res_free(res *r) { free_all(4, (pg_tensor *[]){r->out, r->gq, r->gk, r->gv}); }

/* out and the gradients of sum(w * out): pg_flash_attention with the band (fused), or
 * pg_attention with the band as an additive bias (the reference) */
static res run(bool fused, const band *b, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *w)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *out, *bias = NULL;
    if (fused) {
        pg_flash_opts o = {.causal = b->causal, .window = b->w, .look_backward = b->lb, .look_forward = b->lf,
                           .exact_window = b->exact};
        out = pg_flash_attention(g, q, k, v, &o);
    } else {
        bias = band_bias(b, q->shape[2], k->shape[2]);
        out = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = bias, .causal = b->causal});
    }
    cr_assert_not_null(out, "%s", pg_last_error());
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, out, w), 0, NULL, false)), 0, "%s", pg_last_error());
    res r = {pg_tensor_copy(NULL, out), take_grad(q), take_grad(k), take_grad(v)};
    pg_graph_free(g);
    pg_tensor_free(bias);
    return r;
}

static void assert_same(const res *a, const res *e, const char *what)
{
    assert_close(a->out, e->out, 1e-12, what);
    assert_close(a->gq, e->gq, 1e-12, what);
    assert_close(a->gk, e->gk, 1e-12, what);
    assert_close(a->gv, e->gv, 1e-12, what);
}

/* the flash kernel with band b against pg_attention with b written out, for q (1, 2, Lq, 3) */
static void check_flash_band(const band *b, int64_t Lq, int64_t Lk, uint64_t seed)
{
    pg_tensor *q = randt(PG_SHAPE(1, 2, Lq, 3), seed, true), *k = randt(PG_SHAPE(1, 2, Lk, 3), seed + 1, true),
              *v = randt(PG_SHAPE(1, 2, Lk, 3), seed + 2, true), *w = randt(PG_SHAPE(1, 2, Lq, 3), seed + 3, false);
    res f = run(true, b, q, k, v, w), e = run(false, b, q, k, v, w);
    char what[160];
    assert_same(&f, &e, describe(what, sizeof what, b, Lq, Lk));
    res_free(&f);
    res_free(&e);
    free_all(4, (pg_tensor *[]){q, k, v, w});
}

/* The reported case: causal, window 4, look_backward 2^62 is full causal attention. */
Test(overflow, flash_reported_case_is_full_causal)
{
    pg_tensor *q = randt(PG_SHAPE(2, 2, 70, 4), 1, true), *k = randt(PG_SHAPE(2, 2, 70, 4), 2, true),
              *v = randt(PG_SHAPE(2, 2, 70, 4), 3, true), *w = randt(PG_SHAPE(2, 2, 70, 4), 4, false);
    const band full = {.causal = true};
    res e = run(false, &full, q, k, v, w);
    for (int exact = 0; exact < 2; exact++) {
        const band b = {.w = 4, .lb = 1LL << 62, .exact = exact, .causal = true};
        res f = run(true, &b, q, k, v, w);
        assert_same(&f, &e, exact ? "exact window" : "windows");
        res_free(&f);
    }
    res_free(&e);
    free_all(4, (pg_tensor *[]){q, k, v, w});
}

/* Huge look_forward / look_backward / window, window 1, length 1, Lq != Lk: every
 * band that reaches past the sequence saturates. */
Test(overflow, flash_band_saturates)
{
    const band bands[] = {
        {4, BIG, 0, false, true},   {4, MAX, 0, true, true},     {4, 0, MAX, false, false},  {4, 0, BIG, true, false},
        {4, 1, MAX, false, false},  {4, MAX, MAX, false, false}, {4, MAX, MAX, true, false}, {3, MAX, 1, true, false},
        {MAX, 1, 1, false, false},  {MAX, 1, 1, true, false},    {MAX, 0, 0, true, false},   {MAX, 0, 0, false, true},
        {BIG, BIG, BIG, false, false}, {MAX, MAX, MAX, true, true}, {1, MAX, 0, false, true}, {1, 0, MAX, true, false},
        {1, 0, 0, false, false},    {1, MAX, MAX, false, false},
    };
    const int64_t sizes[][2] = {{70, 70}, {70, 5}, {3, 130}, {1, 1}};
    uint64_t seed = 10;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t i = 0; i < sizeof bands / sizeof bands[0]; i++, seed += 4)
            check_flash_band(&bands[i], sizes[s][0], sizes[s][1], seed);
}

/* A negative band is still refused, naming the function. */
Test(overflow, flash_bad_band_refused)
{
    pg_tensor *q = randt(PG_SHAPE(1, 1, 4, 2), 1, false);
    ASSERT_FAILS(pg_flash_attention(NULL, q, q, q, &(pg_flash_opts){.window = 2, .look_backward = INT64_MIN}),
                 "pg_flash_attention: bad local band");
    ASSERT_FAILS(pg_flash_attention(NULL, q, q, q, &(pg_flash_opts){.window = INT64_MIN}),
                 "pg_flash_attention: bad local band");
    pg_tensor_free(q);
}

/* ---- MultiheadAttention's band: fused and the reference path ---------------------------- */

static pg_mha *mha(bool causal, bool unfused, const pg_attn_band *b)
{
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.dtype = PG_F64;
    c.causal = causal;
    c.unfused = unfused;
    if (b)
        c.band = *b;
    pg_rng r = pg_rng_init(7);
    pg_mha *m = pg_mha_new(&c, NULL, 0, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* output and grad x of MHA on x (2, 7, 8) with an additive bias (or NULL), heap copies */
static pg_tensor *mha_run(pg_mha *m, pg_tensor *x, pg_tensor *bias, pg_tensor **gx)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.bias = bias});
    cr_assert_not_null(y, "%s", pg_last_error());
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_last_error());
    pg_tensor *out = pg_tensor_copy(NULL, y);
    *gx = take_grad(x);
    pg_graph_free(g);
    return out;
}

/* the band of cfg.band (fused and the reference path) against no band and the
 * band written out as a bias */
Test(overflow, mha_band_saturates)
{
    const pg_attn_band bands[] = {
        {4, BIG, 0, false}, {4, MAX, 0, true},  {4, MAX, MAX, false},   {2, 0, MAX, true},  {MAX, 1, 1, false},
        {MAX, 1, 1, true},  {MAX, 0, 0, true},  {BIG, MAX, MAX, true},  {1, MAX, 0, false},
    };
    pg_tensor *x = randt(PG_SHAPE(2, 7, 8), 3, true);
    for (int causal = 0; causal < 2; causal++) {
        pg_mha *full = mha(causal, true, NULL);
        for (size_t i = 0; i < sizeof bands / sizeof bands[0]; i++) {
            const pg_attn_band *a = &bands[i];
            if (causal && a->look_forward > 0)
                continue; /* refused with causal */
            const band b = {a->window, a->look_backward, a->look_forward, a->exact, causal};
            pg_tensor *bias = band_bias(&b, 7, 7), *ge, *e = mha_run(full, x, bias, &ge);
            for (int unfused = 0; unfused < 2; unfused++) {
                pg_mha *m = mha(causal, unfused, a);
                pg_tensor *gy, *y = mha_run(m, x, NULL, &gy);
                char what[200];
                int n = snprintf(what, sizeof what, "unfused %d ", unfused);
                describe(what + n, sizeof what - (size_t)n, &b, 7, 7);
                assert_close(y, e, 1e-12, what);
                assert_close(gy, ge, 1e-12, what);
                free_all(2, (pg_tensor *[]){y, gy});
                pg_module_free(&m->base);
            }
            free_all(3, (pg_tensor *[]){bias, e, ge});
        }
        pg_module_free(&full->base);
    }
    pg_tensor_free(x);
}

/* ---- LocalAttention: fused and unfused ---------------------------------------------------- */

typedef struct la_opts {
    int64_t w0, lb, lf;
    bool exact, causal, autopad;
} la_opts;

static pg_local_attention *local(const la_opts *o, bool unfused)
{
    pg_local_attention_config c = pg_local_attention_defaults(o->w0);
    c.look_backward = o->lb;
    c.look_forward = o->lf;
    c.exact_windowsize = o->exact;
    c.causal = o->causal;
    c.autopad = o->autopad;
    c.unfused = unfused;
    c.dtype = PG_F64;
    pg_local_attention *m = pg_local_attention_new(&c, NULL, 0);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* LocalAttention on q, k, v (2, 2, L, 4), out and grads, against pg_attention with its band */
static void check_local(const la_opts *o, int64_t L, pg_tensor *mask, uint64_t seed)
{
    pg_tensor *q = randt(PG_SHAPE(2, 2, L, 4), seed, true), *k = randt(PG_SHAPE(2, 2, L, 4), seed + 1, true),
              *v = randt(PG_SHAPE(2, 2, L, 4), seed + 2, true), *w = randt(PG_SHAPE(2, 2, L, 4), seed + 3, false);
    /* the windows: autopad with a window longer than the sequence makes one window of it all */
    const band b = {o->exact || o->w0 < L ? o->w0 : L, o->lb, o->lf, o->exact, o->causal};
    pg_tensor *bias = band_bias(&b, L, L);
    pg_graph *g = pg_graph_new();
    pg_tensor *e = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = bias, .mask = mask, .causal = o->causal});
    cr_assert_not_null(e, "%s", pg_last_error());
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, e, w), 0, NULL, false)), 0, "%s", pg_last_error());
    res ref = {pg_tensor_copy(NULL, e), take_grad(q), take_grad(k), take_grad(v)};
    pg_graph_free(g);
    for (int unfused = 0; unfused < 2; unfused++) {
        pg_local_attention *m = local(o, unfused);
        g = pg_graph_new();
        pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.mask = mask});
        char what[200];
        int n = snprintf(what, sizeof what, "unfused %d autopad %d mask %d ", unfused, o->autopad, mask != NULL);
        describe(what + n, sizeof what - (size_t)n, &b, L, L);
        cr_assert_not_null(y, "%s: %s", what, pg_last_error());
        cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, y, w), 0, NULL, false)), 0, "%s", pg_last_error());
        res got = {pg_tensor_copy(NULL, y), take_grad(q), take_grad(k), take_grad(v)};
        pg_graph_free(g);
        assert_same(&got, &ref, what);
        res_free(&got);
        pg_module_free(&m->base);
    }
    res_free(&ref);
    free_all(5, (pg_tensor *[]){q, k, v, w, bias});
}

Test(overflow, local_attention_band_saturates)
{
    const la_opts opts[] = {
        {4, BIG, 0, false, true, false},  {4, MAX, 0, true, true, false},     {4, BIG, 0, false, true, true},
        {4, 1, MAX, false, false, false}, {4, MAX, MAX, false, false, false}, {3, BIG, BIG, true, false, false},
        {3, 0, MAX, true, false, false},  {1, MAX, 0, false, true, false},    {2, 9, 0, false, false, false},
        {MAX, 1, 1, false, false, true},  {MAX, MAX, 0, false, true, true},   {MAX, 0, 0, true, false, true},
        {BIG, 0, MAX, true, false, true}, {5, 1, 0, false, true, true},
    };
    pg_tensor *mask = TBOOL(PG_SHAPE(2, 12), 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1);
    uint64_t seed = 100;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++, seed += 8) {
        check_local(&opts[i], 12, NULL, seed);
        check_local(&opts[i], 12, mask, seed + 4);
    }
    const la_opts one = {MAX, MAX, 0, false, true, true}; /* L = 1 */
    check_local(&one, 1, NULL, 7);
    pg_tensor_free(mask);
}

/* attn_bias keeps its documented shape (Hb, w, (lb + lf + 1) w) when look_backward
 * reaches past the sequence: the slots of windows that do not exist are never read. */
Test(overflow, local_attention_attn_bias_past_the_sequence)
{
    const int64_t L = 8, w = 4, lb = 5, lf = 2, S = (lb + lf + 1) * w; /* 2 windows */
    pg_tensor *q = randt(PG_SHAPE(2, L, 3), 1, true), *k = randt(PG_SHAPE(2, L, 3), 2, true),
              *v = randt(PG_SHAPE(2, L, 3), 3, true), *ab = randt(PG_SHAPE(1, w, S), 4, true);
    /* the reference: slot (window offset o = j/w - i/w, row j % w) of the look-around at index (o + lb) w + j % w */
    pg_tensor *bias = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(L, L));
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            pg_set(bias, i * L + j, pg_get(ab, (i % w) * S + (j / w - i / w + lb) * w + j % w));
    pg_tensor *q4 = pg_reshape(NULL, q, PG_SHAPE(2, 1, L, 3)), *k4 = pg_reshape(NULL, k, PG_SHAPE(2, 1, L, 3)),
              *v4 = pg_reshape(NULL, v, PG_SHAPE(2, 1, L, 3));
    pg_tensor *e = pg_attention(NULL, q4, k4, v4, &(pg_sdpa_opts){.bias = bias});
    const la_opts o = {w, lb, lf, false, false, false};
    pg_local_attention *m = local(&o, false);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.attn_bias = ab});
    cr_assert_not_null(y, "%s", pg_last_error());
    assert_close(pg_reshape(g, y, PG_SHAPE(2, 1, L, 3)), e, 1e-12, "attn_bias past the sequence");
    cr_assert_eq(pg_backward(g, pg_sum(g, y, 0, NULL, false)), 0, "%s", pg_last_error());
    cr_assert_not_null(ab->grad);
    for (int64_t r = 0; r < w; r++) /* the slots of window offset -5 .. -2 exist for no query: no gradient */
        for (int64_t s = 0; s < (lb - 1) * w; s++)
            cr_assert_eq(pg_get(ab->grad, r * S + s), 0.0);
    pg_graph_free(g);
    /* a huge look_backward: no attn_bias can have (lb + lf + 1) w slots */
    const la_opts huge = {w, BIG, 0, false, false, false};
    pg_local_attention *mh = local(&huge, false);
    ASSERT_FAILS(pg_local_attention_forward(NULL, mh, q, k, v, &(pg_local_args){.attn_bias = ab}),
                 "pg_local_attention_forward: attn_bias must be (Hb, 4, (lb + lf + 1) w)");
    pg_module_free(&m->base);
    pg_module_free(&mh->base);
    free_all(9, (pg_tensor *[]){q, k, v, ab, bias, q4, k4, v4, e});
}

/* xPos with a window override: autopad to a huge window_size only pads up to the
 * override's windows (the rest would be pad rows and hidden keys). */
Test(overflow, local_attention_override_with_huge_window)
{
    pg_tensor *q = randt(PG_SHAPE(1, 2, 8, 4), 1, false), *k = randt(PG_SHAPE(1, 2, 8, 4), 2, false),
              *v = randt(PG_SHAPE(1, 2, 8, 4), 3, false);
    pg_tensor *y[2];
    const int64_t w0[2] = {8, BIG};
    for (int i = 0; i < 2; i++) {
        pg_local_attention_config c = pg_local_attention_defaults(w0[i]);
        c.causal = true;
        c.autopad = true;
        c.dim = 4;
        c.use_xpos = true;
        c.xpos_scale_base = 3;
        c.dtype = PG_F64;
        pg_local_attention *m = pg_local_attention_new(&c, NULL, 0);
        cr_assert_not_null(m, "%s", pg_last_error());
        y[i] = pg_local_attention_forward(NULL, m, q, k, v, &(pg_local_args){.window_size = 4});
        cr_assert_not_null(y[i], "window %lld: %s", (long long)w0[i], pg_last_error());
        pg_module_free(&m->base);
    }
    assert_close(y[1], y[0], 1e-12, "window 2^62 vs 8");
    free_all(5, (pg_tensor *[]){q, k, v, y[0], y[1]});
}

/* ---- pg_rel_shift, GEMM ----------------------------------------------------------------- */

Test(overflow, rel_shift_huge_lk_refused)
{
    pg_tensor *x = randt(PG_SHAPE(3, 4), 1, false);
    ASSERT_FAILS(pg_rel_shift(NULL, x, MAX), "pg_rel_shift: expected x (..., Lq, Lq + Lk - 1)");
    ASSERT_FAILS(pg_rel_shift(NULL, x, BIG), "Lk 4611686018427387904");
    pg_tensor_free(x);
}

/* One row of A (or one column of op(B) stored transposed) with a row stride near
 * INT64_MAX is legal (the stride is never stepped); K spans several KC blocks. */
Test(overflow, gemm_single_row_huge_strides)
{
    enum { K = 1100, N = 40 };
    double *a = malloc(K * sizeof *a), *b = malloc((size_t)K * N * sizeof *b), *bt = malloc(K * sizeof *bt);
    double c[N], e[N], c1[1], e1 = 0;
    for (int p = 0; p < K; p++) {
        a[p] = sin(p + 1.0);
        bt[p] = cos(p * 0.5);
        e1 += a[p] * bt[p];
        for (int j = 0; j < N; j++)
            b[p * N + j] = cos(p * 0.3 + j);
    }
    for (int j = 0; j < N; j++) {
        e[j] = 0;
        for (int p = 0; p < K; p++)
            e[j] += a[p] * b[p * N + j];
    }
    const int64_t huge = INT64_MAX / 2;
    pg_gemm_f64(false, false, 1, N, K, 1.0, a, huge, b, N, 0.0, c, huge);
    for (int j = 0; j < N; j++)
        cr_assert_float_eq(c[j], e[j], 1e-12 * (1 + fabs(e[j])), "column %d", j);
    /* op(B) = bt^T with B stored (N = 1, K) transposed, its row stride huge */
    pg_gemm_f64(false, true, 1, 1, K, 1.0, a, huge, bt, huge, 0.0, c1, huge);
    cr_assert_float_eq(c1[0], e1, 1e-12 * (1 + fabs(e1)));
    float af[K], btf[K], cf[1];
    for (int p = 0; p < K; p++)
        af[p] = (float)a[p], btf[p] = (float)bt[p];
    pg_gemm_f32(false, true, 1, 1, K, 1.0f, af, huge, btf, huge, 0.0f, cf, huge);
    cr_assert_float_eq(cf[0], e1, 1e-3 * (1 + fabs(e1)));
    free(a);
    free(b);
    free(bt);
}
