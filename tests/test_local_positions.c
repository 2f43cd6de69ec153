/* LocalAttention at explicit positions (pg_local_args.pos_q / pos_k; docs/local_attention.md
 * "Positions"): rotary, xPos and the dist_bias schemes at the given positions, the windows by
 * sequence index. */
#include "testutil.h"

#include "../nn/local_attention.h"
#include "../nn/pos_alibi.h"
#include "../nn/pos_dpb.h"
#include "../nn/pos_t5.h"
#include "../nn/pos_xl.h"

/* The configurations tried: what is on and which scheme (0 none, 1 ALiBi, 2 DPB, 3 T5). */
typedef struct {
    int64_t w, lb, lf;
    bool causal, rotary, xpos, autopad, unfused;
    int scheme;
    double sb; /* xPos scale base (0: default) */
} lp_case;

static const lp_case CASES[] = {
    {.w = 2, .lb = 1, .lf = -1, .rotary = true},                           /* fused */
    {.w = 2, .lb = 1, .lf = -1, .rotary = true, .unfused = true},          /* band of ops */
    {.w = 2, .lb = 2, .lf = -1, .causal = true, .rotary = true, .xpos = true, .sb = 2.5},
    {.w = 2, .lb = 1, .lf = 1, .scheme = 1},                               /* ALiBi */
    {.w = 2, .lb = 1, .lf = -1, .causal = true, .rotary = true, .scheme = 2}, /* DPB */
    {.w = 4, .lb = 1, .lf = -1, .scheme = 3, .autopad = true},             /* T5, autopad 6 -> 8 */
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

/* which 1 ALiBi, 2 DPB, 3 T5 (dist_bias); 4 Transformer-XL, 5 FIRE (band_bias) */
static pg_posmod *lp_scheme(int which, int64_t heads, int64_t d)
{
    if (which <= 3)
        return test_rel_scheme(which - 1, heads, 91);
    pg_rng r = pg_rng_init(92);
    pg_posmod_args pa = {.dim = heads * d, .heads = heads, .head_dim = d, .dtype = PG_F64, .rng = &r};
    pg_posmod *p = which == 4 ? pg_posmod_make_xl(&pa) : pg_posmod_make_fire(&pa);
    cr_assert_not_null(p, "%s", pg_last_error());
    return p;
}

static pg_local_attention *lp_make(const lp_case *c, int64_t d)
{
    pg_local_attention_config cfg = pg_local_attention_defaults(c->w);
    cfg.causal = c->causal;
    cfg.look_backward = c->lb;
    cfg.look_forward = c->lf;
    cfg.dim = c->rotary ? d : 0;
    cfg.use_xpos = c->xpos;
    cfg.xpos_scale_base = c->sb;
    cfg.autopad = c->autopad;
    cfg.unfused = c->unfused;
    cfg.dtype = PG_F64;
    pg_posmod *p = c->scheme ? lp_scheme(c->scheme, 2, d) : NULL;
    pg_local_attention *m = pg_local_attention_new(&cfg, &p, c->scheme ? 1 : 0);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* positions (B0, L) of dtype: p[b, i] = f(b, i) */
static pg_tensor *positions(pg_dtype dt, int64_t B0, int64_t L, double (*f)(int64_t, int64_t))
{
    pg_tensor *p = pg_tensor_empty(NULL, dt, PG_SHAPE(B0, L));
    for (int64_t b = 0; b < B0; b++)
        for (int64_t i = 0; i < L; i++)
            pg_set(p, b * L + i, f(b, i));
    return p;
}

static double p_default(int64_t b, int64_t i) { return (void)b, (double)i; }
/* irregular, multiples of 1/4 (shifts by multiples of 1/4 are exact), different per row */
static double p_irregular(int64_t b, int64_t i) { return (double)(i * i % 7) * 0.75 + 1.25 * (double)i - (double)b * 2.5; }
static double p_shifted(int64_t b, int64_t i) { return p_irregular(b, i) + 13.25; }
static double p_int(int64_t b, int64_t i) { return (double)(3 * i + (i * i) % 5 - 4 * b); }

static pg_tensor *run(pg_local_attention *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *pq, pg_tensor *pk)
{
    pg_tensor *y = pg_local_attention_forward(NULL, m, q, k, v, &(pg_local_args){.pos_q = pq, .pos_k = pk});
    cr_assert_not_null(y, "%s", pg_last_error());
    return y;
}

/* ---- equalities ---------------------------------------------------------------------------- */

Test(local_positions, default_positions_equal_none)
{
    const int64_t B = 2, H = 2, L = 8, d = 4;
    pg_tensor *q = randt(PG_SHAPE(B, H, L, d), 1, false), *k = randt(PG_SHAPE(B, H, L, d), 2, false),
              *v = randt(PG_SHAPE(B, H, L, d), 3, false);
    const pg_dtype dts[] = {PG_F64, PG_F32, PG_I64};
    for (int ci = 0; ci < N_CASES; ci++) {
        pg_local_attention *m = lp_make(&CASES[ci], d);
        pg_tensor *y0 = run(m, q, k, v, NULL, NULL);
        for (int t = 0; t < 3; t++)
            for (int64_t B0 = 1; B0 <= 2; B0++) {
                pg_tensor *p = positions(dts[t], B0, L, p_default);
                pg_tensor *y = run(m, q, k, v, p, p);
                cr_assert_leq(max_err(y, y0), 1e-15, "case %d %s B0 %lld: %g", ci, pg_dtype_name(dts[t]),
                              (long long)B0, max_err(y, y0));
                pg_tensor_free(y), pg_tensor_free(p);
            }
        pg_tensor_free(y0);
        pg_module_free(&m->base);
    }
    free_all(3, (pg_tensor *[]){q, k, v});
}

Test(local_positions, shift_leaves_relative_schemes_unchanged)
{
    const int64_t B = 2, H = 2, L = 8, d = 4;
    pg_tensor *q = randt(PG_SHAPE(B, H, L, d), 4, false), *k = randt(PG_SHAPE(B, H, L, d), 5, false),
              *v = randt(PG_SHAPE(B, H, L, d), 6, false);
    pg_tensor *p = positions(PG_F64, B, L, p_irregular), *ps = positions(PG_F64, B, L, p_shifted);
    pg_tensor *pd = positions(PG_F64, 1, L, p_default);
    for (int ci = 0; ci < N_CASES; ci++) {
        if (CASES[ci].autopad)
            continue; /* L 8 is a multiple of 4: no autopadding; the case runs as the others */
        pg_local_attention *m = lp_make(&CASES[ci], d);
        pg_tensor *y = run(m, q, k, v, p, p), *ys = run(m, q, k, v, ps, ps), *yd = run(m, q, k, v, pd, pd);
        cr_assert_leq(max_err(ys, y), 1e-12, "case %d: shift changed the output by %g", ci, max_err(ys, y));
        /* the positions matter: irregular ones differ from the default */
        cr_assert_gt(max_err(y, yd), 1e-6, "case %d: irregular positions had no effect", ci);
        pg_tensor_free(y), pg_tensor_free(ys), pg_tensor_free(yd);
        pg_module_free(&m->base);
    }
    free_all(3, (pg_tensor *[]){q, k, v});
    free_all(3, (pg_tensor *[]){p, ps, pd});
}

Test(local_positions, float_and_int_positions_agree)
{
    const int64_t B = 2, H = 2, L = 8, d = 4;
    pg_tensor *q = randt(PG_SHAPE(B, H, L, d), 7, false), *k = randt(PG_SHAPE(B, H, L, d), 8, false),
              *v = randt(PG_SHAPE(B, H, L, d), 9, false);
    pg_tensor *pi = positions(PG_I64, B, L, p_int), *pf = positions(PG_F32, B, L, p_int),
              *p64 = positions(PG_F64, B, L, p_int);
    for (int ci = 0; ci < N_CASES; ci++) {
        pg_local_attention *m = lp_make(&CASES[ci], d);
        pg_tensor *yi = run(m, q, k, v, pi, pi), *yf = run(m, q, k, v, pf, pf), *y64 = run(m, q, k, v, p64, p64);
        cr_assert_leq(max_err(yi, y64), 1e-15, "case %d: i64 vs f64 %g", ci, max_err(yi, y64));
        cr_assert_leq(max_err(yf, y64), 1e-15, "case %d: f32 vs f64 %g", ci, max_err(yf, y64));
        pg_tensor_free(yi), pg_tensor_free(yf), pg_tensor_free(y64);
        pg_module_free(&m->base);
    }
    free_all(3, (pg_tensor *[]){q, k, v});
    free_all(3, (pg_tensor *[]){pi, pf, p64});
}

/* the fused kernel (rotary at the positions) equals the band of ops; per-batch rows of a
 * (B, H, L, d) call equal one-batch calls with that row's positions */
Test(local_positions, fused_equals_band_and_rows_are_batches)
{
    const int64_t B = 2, H = 2, L = 8, d = 4;
    pg_tensor *q = randt(PG_SHAPE(B, H, L, d), 10, false), *k = randt(PG_SHAPE(B, H, L, d), 11, false),
              *v = randt(PG_SHAPE(B, H, L, d), 12, false);
    pg_tensor *p = positions(PG_F64, B, L, p_irregular), *p1 = positions(PG_F64, 1, L, p_irregular);
    for (int cs = 0; cs < 2; cs++) {
        lp_case c = {.w = 2, .lb = 1, .lf = -1, .causal = cs == 1, .rotary = true};
        pg_local_attention *mf = lp_make(&c, d);
        c.unfused = true;
        pg_local_attention *mu = lp_make(&c, d);
        for (int which = 0; which < 2; which++) {
            pg_tensor *pp = which ? p1 : p;
            pg_tensor *yf = run(mf, q, k, v, pp, pp), *yu = run(mu, q, k, v, pp, pp);
            cr_assert_leq(max_err(yf, yu), 1e-12, "causal %d B0 %lld: fused vs band %g", cs, (long long)pp->shape[0],
                          max_err(yf, yu));
            pg_tensor_free(yf), pg_tensor_free(yu);
        }
        pg_module_free(&mf->base), pg_module_free(&mu->base);
    }
    /* batch row 1 alone, with ALiBi (band of ops) and rotary */
    lp_case c = {.w = 2, .lb = 1, .lf = 1, .rotary = true, .scheme = 1};
    pg_local_attention *m = lp_make(&c, d);
    pg_tensor *y = run(m, q, k, v, p, p);
    pg_tensor *q1 = pg_narrow(NULL, q, 0, 1, 1), *k1 = pg_narrow(NULL, k, 0, 1, 1),
              *v1 = pg_narrow(NULL, v, 0, 1, 1), *row1 = pg_narrow(NULL, p, 0, 1, 1);
    pg_tensor *y1 = run(m, q1, k1, v1, row1, row1), *e = pg_narrow(NULL, y, 0, 1, 1);
    cr_assert_leq(max_err(y1, e), 1e-15, "row 1 alone vs packed %g", max_err(y1, e));
    free_all(7, (pg_tensor *[]){y, q1, k1, v1, row1, y1, e});
    pg_module_free(&m->base);
    free_all(3, (pg_tensor *[]){q, k, v});
    free_all(2, (pg_tensor *[]){p, p1});
}

/* ---- a small case computed by hand ----------------------------------------------------------- */

/* Expected output of rotary (d 2: one pair, frequency 1) + xPos (zeta 2/7, base sb) + ALiBi
 * (slope 0.7) on the band: window w, lb, lf, causal, at positions pq, pk (B, L). */
static void hand_expected(const double *q, const double *k, const double *v, const double *pq, const double *pk,
                          int64_t B, int64_t L, int64_t w, int64_t lb, int64_t lf, bool causal, bool xpos, double sb,
                          double *out)
{
    const double sc = 1 / sqrt(2.0), slope = 0.7, zeta = 0.8 / 2.8;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < L; i++) {
            double lg[16], mx = -INFINITY, den = 0;
            const double *qi = q + (b * L + i) * 2, a = pq[b * L + i];
            double rq[2] = {qi[0] * cos(a) - qi[1] * sin(a), qi[1] * cos(a) + qi[0] * sin(a)};
            for (int64_t j = 0; j < L; j++) {
                bool vis = j / w >= i / w - lb && j / w <= i / w + lf && (!causal || j <= i);
                const double *kj = k + (b * L + j) * 2, c = pk[b * L + j];
                double rk[2] = {kj[0] * cos(c) - kj[1] * sin(c), kj[1] * cos(c) + kj[0] * sin(c)};
                double delta = a - c, x = xpos ? pow(zeta, delta / sb) : 1.0;
                lg[j] = vis ? sc * x * (rq[0] * rk[0] + rq[1] * rk[1]) - fabs(slope * delta) : -INFINITY;
                mx = fmax(mx, lg[j]);
            }
            for (int64_t j = 0; j < L; j++)
                den += exp(lg[j] - mx);
            for (int64_t ch = 0; ch < 2; ch++) {
                double acc = 0;
                for (int64_t j = 0; j < L; j++)
                    acc += exp(lg[j] - mx) / den * v[(b * L + j) * 2 + ch];
                out[(b * L + i) * 2 + ch] = acc;
            }
        }
}

Test(local_positions, hand_computed_irregular_positions)
{
    const int64_t B = 2, L = 6;
    pg_tensor *q = randt(PG_SHAPE(B, L, 2), 13, false), *k = randt(PG_SHAPE(B, L, 2), 14, false),
              *v = randt(PG_SHAPE(B, L, 2), 15, false);
    /* queries and keys at different irregular positions, per batch row */
    pg_tensor *pq = T64(PG_SHAPE(B, L), 0, 1.5, 4, 4.25, 9, 10.5, -3, -2.75, 0.5, 6, 6.5, 7);
    pg_tensor *pk = T64(PG_SHAPE(B, L), 0.25, 1, 3, 5.5, 8, 12, -2, -2.5, 1, 5, 7.25, 7.5);
    for (int cs = 0; cs < 2; cs++) {
        bool causal = cs == 1, xpos = causal;
        pg_local_attention_config cfg = pg_local_attention_defaults(2);
        cfg.causal = causal;
        cfg.look_backward = 1;
        cfg.look_forward = causal ? 0 : 1;
        cfg.dim = 2;
        cfg.use_xpos = xpos;
        cfg.xpos_scale_base = 2.5;
        cfg.dtype = PG_F64;
        pg_posmod *al = pg_alibi_new(1, &(pg_alibi_opts){.slopes = (const double[]){0.7}}, PG_F64);
        cr_assert_not_null(al, "%s", pg_last_error());
        pg_local_attention *m = pg_local_attention_new(&cfg, &al, 1);
        cr_assert_not_null(m, "%s", pg_last_error());
        pg_tensor *y = run(m, q, k, v, pq, pk);
        double e[24];
        hand_expected(pg_f64(q), pg_f64(k), pg_f64(v), pg_f64(pq), pg_f64(pk), B, L, 2, 1, cfg.look_forward, causal,
                      xpos, 2.5, e);
        for (int64_t i = 0; i < B * L * 2; i++)
            cr_assert_float_eq(pg_get(y, i), e[i], 1e-13, "causal %d [%lld]: %.17g vs %.17g", cs, (long long)i,
                               pg_get(y, i), e[i]);
        pg_tensor_free(y);
        pg_module_free(&m->base);
    }
    free_all(3, (pg_tensor *[]){q, k, v});
    free_all(2, (pg_tensor *[]){pq, pk});
}

/* ---- gradcheck ------------------------------------------------------------------------------ */

typedef struct {
    pg_local_attention *m;
    pg_local_args a;
} lp_gc;

static pg_tensor *lp_gc_fn(pg_graph *g, pg_tensor *const *in, int n_in, void *vctx)
{
    (void)n_in;
    lp_gc *c = vctx;
    return pg_local_attention_forward(g, c->m, in[0], in[1], in[2], &c->a);
}

Test(local_positions, gradcheck_with_positions)
{
    const int64_t L = 6, d = 4;
    pg_tensor *p = positions(PG_F64, 1, L, p_irregular), *pk = positions(PG_I64, 1, L, p_int);
    pg_tensor *mask = TBOOL(PG_SHAPE(1, 6), 1, 1, 0, 1, 1, 1);
    const lp_case cs[] = {
        {.w = 2, .lb = 1, .lf = -1, .causal = true, .rotary = true, .xpos = true, .sb = 2.5},
        {.w = 2, .lb = 1, .lf = 1, .rotary = true, .scheme = 2},      /* DPB: its MLP's parameters too */
        {.w = 4, .lb = 1, .lf = -1, .scheme = 3, .autopad = true},    /* T5's table, autopad 6 -> 8 */
        {.w = 2, .lb = 1, .lf = -1, .scheme = 1, .unfused = true},    /* ALiBi */
        {.w = 2, .lb = 1, .lf = 0, .causal = true, .scheme = 4},      /* Transformer-XL: u, v, W_R */
        {.w = 3, .lb = 1, .lf = 1, .scheme = 5},                      /* FIRE: its MLP, c, L */
    };
    for (int ci = 0; ci < (int)(sizeof cs / sizeof cs[0]); ci++) {
        lp_gc ctx = {.m = lp_make(&cs[ci], d), .a = {.pos_q = p, .pos_k = ci == 1 ? pk : p, .mask = ci == 2 ? mask : NULL}};
        pg_tensor *in[12] = {randt(PG_SHAPE(1, 2, L, d), 20 + ci, true), randt(PG_SHAPE(1, 2, L, d), 30 + ci, true),
                             randt(PG_SHAPE(1, 2, L, d), 40 + ci, true)};
        int n = with_params(in, 3, &ctx.m->base);
        cr_assert(cs[ci].scheme < 2 || n > 3, "case %d: the scheme's parameters are checked", ci);
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(lp_gc_fn, n, in, &ctx, &o);
        free_all(3, in);
        pg_module_free(&ctx.m->base);
    }
    free_all(3, (pg_tensor *[]){p, pk, mask});
}

/* ---- band_bias schemes at explicit positions ------------------------------------------------
 * Transformer-XL and FIRE bias the band through band_bias, which reads the rows' positions
 * (pg_pos_band.pq / pk): each pair's own distance, FIRE also the query's position. Reference:
 * full attention with the scheme's mod_bias at the same positions plus the band (by index) as a
 * -inf mask. q, k, v (B, H, L, d), positions per batch row. */
static void check_hook_at_positions(int scheme, lp_case c, int64_t L)
{
    const int64_t B = 2, H = 2, d = 4;
    c.scheme = scheme;
    pg_local_attention *m = lp_make(&c, d);
    pg_tensor *q = randt(PG_SHAPE(B, H, L, d), 81, true), *k = randt(PG_SHAPE(B, H, L, d), 82, true),
              *v = randt(PG_SHAPE(B, H, L, d), 83, true), *pq = positions(PG_F64, B, L, p_irregular);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.pos_q = pq, .pos_k = pq});
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_pos_ctx ctx = {.pos_q = pq, .pos_k = pq, .self_attn = true, .causal = c.causal, .B = B, .heads = H,
                      .head_dim = d, .Lq = L, .Lk = L, .scale = 1.0 / sqrt((double)d), .dtype = PG_F64};
    pg_posmod *p = m->pos[0];
    int64_t lf = c.lf < 0 ? 0 : c.lf;
    pg_tensor *bias = pg_add(g, p->ops->mod_bias(g, p, q, k, v, &ctx), test_band_mask(g, L, c.w, c.lb, lf, c.causal));
    pg_tensor *e = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = bias, .causal = c.causal});
    cr_assert_not_null(e, "%s", pg_graph_error(g));
    double err = max_err(y, e);
    printf("local_positions %s at irregular positions (w %lld, lb %lld, lf %lld%s, L %lld): %.3g\n",
           scheme == 4 ? "xl" : "fire", (long long)c.w, (long long)c.lb, (long long)lf, c.causal ? ", causal" : "",
           (long long)L, err);
    cr_assert_leq(err, 1e-12, "band_bias at positions vs full attention with mod_bias: %g", err);
    /* and the positions matter: the default positions give another output */
    pg_tensor *y0 = pg_local_attention_forward(g, m, q, k, v, NULL);
    cr_assert_gt(max_err(y0, e), 1e-6, "the explicit positions changed nothing");
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){q, k, v, pq});
    pg_module_free(&m->base);
}

Test(local_positions, band_bias_schemes_at_positions)
{
    for (int scheme = 4; scheme <= 5; scheme++) {
        check_hook_at_positions(scheme, (lp_case){.w = 2, .lb = 1, .lf = 1}, 8);
        check_hook_at_positions(scheme, (lp_case){.w = 3, .lb = 2, .lf = 0, .causal = true}, 9);
        check_hook_at_positions(scheme, (lp_case){.w = 2, .lb = 1, .lf = 0, .causal = true}, 8);
    }
}

/* ---- bad input --------------------------------------------------------------------------- */

Test(local_positions, bad_positions)
{
    lp_case c = {.w = 2, .lb = 1, .lf = -1, .rotary = true};
    pg_local_attention *m = lp_make(&c, 4);
    pg_tensor *q = randt(PG_SHAPE(2, 2, 8, 4), 50, false);
    pg_tensor *short_p = positions(PG_F64, 2, 7, p_default), *bool_p = pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(2, 8));
    pg_tensor *b3 = positions(PG_F64, 3, 8, p_default), *one_d = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(8));
    pg_tensor *nan_p = positions(PG_F64, 2, 8, p_default);
    pg_set(nan_p, 5, NAN);
    for (int64_t i = 0; i < 8; i++)
        pg_set(one_d, i, (double)i);
    for (int64_t i = 0; i < bool_p->numel; i++)
        pg_set(bool_p, i, 1);
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, &(pg_local_args){.pos_q = short_p}),
                 "pg_local_attention_forward: pos_q is f64[2,7], expected (B0, L) = (B0 dividing the 4 packed rows, "
                 "8) of f32, f64 or i64");
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, &(pg_local_args){.pos_k = bool_p}),
                 "pg_local_attention_forward: pos_k is bool[2,8], expected (B0, L)");
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, &(pg_local_args){.pos_q = b3}),
                 "pos_q is f64[3,8], expected (B0, L) = (B0 dividing the 4 packed rows, 8)");
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, &(pg_local_args){.pos_q = one_d}),
                 "pos_q is f64[8], expected (B0, L)");
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, &(pg_local_args){.pos_k = nan_p}),
                 "pg_local_attention_forward: pos_k f64[2,8] holds a non-finite position at flat index 5");
    /* NULL on one side is 0..L-1 there */
    pg_tensor *pd = positions(PG_F64, 2, 8, p_default), *pi = positions(PG_F64, 2, 8, p_irregular);
    pg_tensor *y1 = run(m, q, q, q, pi, NULL), *y2 = run(m, q, q, q, pi, pd);
    cr_assert_leq(max_err(y1, y2), 1e-15, "pos_k NULL = 0..L-1: %g", max_err(y1, y2));
    pg_tensor_free(y1), pg_tensor_free(y2);
    free_all(7, (pg_tensor *[]){q, short_p, bool_p, b3, one_d, nan_p, pd});
    pg_tensor_free(pi);
    pg_module_free(&m->base);
}

/* y and q's gradient after sum(y^2) on path `unfused` at float positions that require grad,
 * with the fused nodes and the pg_rotate_pairs ones counted; the positions get no gradient */
static void positions_run(bool unfused, pg_tensor *res[2], int *n_fused, int *n_rot)
{
    const int64_t B = 2, H = 2, L = 8, d = 4;
    lp_case c = {.w = 2, .lb = 1, .lf = -1, .causal = true, .rotary = true, .unfused = unfused};
    pg_local_attention *m = lp_make(&c, d);
    pg_tensor *q = randt(PG_SHAPE(B, H, L, d), 50, true), *k = randt(PG_SHAPE(B, H, L, d), 51, false),
              *v = randt(PG_SHAPE(B, H, L, d), 52, false), *p = positions(PG_F64, B, L, p_irregular);
    pg_set_requires_grad(p, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.pos_q = p, .pos_k = p});
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, y, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    *n_fused = fused_nodes(g);
    *n_rot = count_nodes(g, "pg_rotate_pairs");
    cr_assert_null(p->grad, "unfused %d: a gradient reached the positions", unfused);
    res[0] = pg_tensor_copy(NULL, y);
    res[1] = take_grad(q);
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){q, k, v, p});
    pg_module_free(&m->base);
}

/* positions are data on both paths, also when they require grad: the fused path hands rotary's
 * tables, built without recording, to the kernel (no pg_rotate_pairs on the tape), and agrees
 * with the band of ops */
Test(local_positions, positions_are_data_on_both_paths)
{
    int nf, nr, uf, ur;
    pg_tensor *f[2], *u[2];
    positions_run(false, f, &nf, &nr);
    positions_run(true, u, &uf, &ur);
    cr_assert(nf == 1 && nr == 0, "fused path: %d fused nodes and %d rotations, expected 1 and 0", nf, nr);
    cr_assert_eq(uf, 0, "the band of ops has no fused node");
    assert_close(f[0], u[0], 1e-12, "output, fused vs band of ops");
    assert_close(f[1], u[1], 1e-12, "q's gradient, fused vs band of ops");
    free_all(2, f);
    free_all(2, u);
}
