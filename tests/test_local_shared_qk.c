/* LocalAttention with shared_qk on the fused band kernel (k normalised before
 * rotary, SELF_VALUE added at distance 0) against the band-of-ops reference
 * (masked_fill of the self slot): equal to 1e-12 in f64, outputs and the
 * gradients of q, k, v, including rows that see only themselves (causal first
 * row, a one-slot band, a mask leaving one key) and rows whose own key is
 * masked; f32 within 1e-5; an f64 gradcheck of the fused path
 * (docs/local_attention.md, Two paths). */
#include "testutil.h"

typedef struct sq_case {
    bool causal, exact, autopad, rotary, heads3, alibi, given;
    int masked; /* 0 none; 1 batch 1 hides keys 1 and L - 2; 2 batch 1 sees key 5 only */
    double q_gain; /* 0: 1; scales q (large logits) */
    int64_t w, lb, lf, L;
} sq_case;

static pg_local_attention *make(const sq_case *sc, bool unfused, pg_dtype dt)
{
    pg_local_attention_config c = pg_local_attention_defaults(sc->w);
    c.causal = sc->causal;
    c.look_backward = sc->lb;
    c.look_forward = sc->causal ? 0 : sc->lf;
    c.exact_windowsize = sc->exact;
    c.autopad = sc->autopad;
    c.use_rotary_pos_emb = sc->rotary;
    c.dim = sc->rotary ? 4 : 0;
    c.shared_qk = true;
    c.dtype = dt;
    c.unfused = unfused;
    pg_posmod *pos = sc->alibi ? pg_alibi_new(sc->heads3 ? 1 : 2, &(pg_alibi_opts){0}, dt) : NULL;
    pg_local_attention *m = pg_local_attention_new(&c, &pos, sc->alibi ? 1 : 0);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* (2, 2, L, 4), or (4, L, 4) with heads3, in [-1, 1) (q times q_gain) */
static void inputs(const sq_case *sc, pg_dtype dt, pg_tensor **t)
{
    for (int i = 0; i < 3; i++) {
        pg_tensor *x = sc->heads3 ? randt(PG_SHAPE(4, sc->L, 4), 40 + (uint64_t)i, false)
                                  : randt(PG_SHAPE(2, 2, sc->L, 4), 40 + (uint64_t)i, false);
        if (i == 0 && sc->q_gain > 0)
            for (int64_t j = 0; j < x->numel; j++)
                pg_set(x, j, sc->q_gain * pg_get(x, j));
        t[i] = dt == PG_F64 ? x : pg_tensor_cast(NULL, x, dt);
        if (t[i] != x)
            pg_tensor_free(x);
        t[i]->requires_grad = true;
    }
}

/* the key mask (rows of q's leading axis, L) of the case, or NULL */
static pg_tensor *case_mask(const sq_case *sc)
{
    if (!sc->masked)
        return NULL;
    int64_t R = sc->heads3 ? 4 : 2, L = sc->L;
    pg_tensor *mask = pg_ones(NULL, PG_BOOL, PG_SHAPE(R, L));
    for (int64_t j = 0; j < L; j++)
        if (sc->masked == 1)
            pg_bool(mask)[L + j] = j != 1 && j != L - 2;
        else
            pg_bool(mask)[L + j] = j == 5;
    return mask;
}

/* forward + backward (seeded upstream gradient); *n_fused counts the fused nodes */
static pg_tensor *run(pg_local_attention *m, const sq_case *sc, pg_tensor *const *qkv, pg_tensor *mask,
                      int *n_fused)
{
    pg_graph *g = pg_graph_new();
    pg_local_args a = {.mask = mask};
    if (sc->given) { /* shifted, non-monotone positions for rotary */
        pg_tensor *p = pg_empty(g, PG_I64, PG_SHAPE(1, sc->L));
        for (int64_t i = 0; i < sc->L; i++)
            pg_set(p, i, (double)(3 + i + (i % 3 == 1 ? 2 : 0)));
        a.pos_q = a.pos_k = p;
    }
    pg_tensor *y = pg_local_attention_forward(g, m, qkv[0], qkv[1], qkv[2], &a);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_rng r = pg_rng_init(9);
    pg_tensor *up = pg_randn(g, PG_F64, y->ndim, y->shape, &r);
    if (y->dtype != PG_F64)
        up = pg_cast(g, up, y->dtype);
    cr_assert_eq(pg_backward_with(g, y, up), 0, "%s", pg_graph_error(g));
    *n_fused = fused_nodes(g);
    pg_tensor *out = pg_tensor_copy(NULL, y);
    pg_graph_free(g);
    return out;
}

/* fused (cfg.unfused false) against the reference in dtype dt, to tol */
static void check_dt(sq_case sc, pg_dtype dt, double tol)
{
    pg_local_attention *fused = make(&sc, false, dt), *ref = make(&sc, true, dt);
    pg_tensor *a[3], *b[3];
    inputs(&sc, dt, a);
    inputs(&sc, dt, b);
    pg_tensor *mask = case_mask(&sc);
    int nf = 0, nr = 0;
    pg_tensor *y1 = run(fused, &sc, a, mask, &nf), *y2 = run(ref, &sc, b, mask, &nr);
    cr_assert_eq(nf, 1, "the fused path serves shared_qk (w %lld lb %lld L %lld)", (long long)sc.w,
                 (long long)sc.lb, (long long)sc.L);
    cr_assert_eq(nr, 0, "unfused forces the reference");
    assert_close(y1, y2, tol, "output");
    for (int i = 0; i < 3; i++)
        assert_close(a[i]->grad, b[i]->grad, tol, i == 0 ? "grad q" : i == 1 ? "grad k" : "grad v");
    free_all(3, a);
    free_all(3, b);
    pg_tensor *ts[] = {mask, y1, y2};
    free_all(3, ts);
    pg_module_free(&fused->base);
    pg_module_free(&ref->base);
}

static void check(sq_case sc) { check_dt(sc, PG_F64, 1e-12); }

Test(local_shared_qk, windows_causal_lookforward_exact)
{
    check((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 12});
    check((sq_case){.w = 3, .lb = 2, .L = 12, .causal = true});
    check((sq_case){.w = 4, .lb = 1, .lf = 2, .L = 12});
    check((sq_case){.w = 4, .lb = 1, .lf = 2, .L = 12, .exact = true});
    check((sq_case){.w = 3, .lb = 1, .L = 12, .causal = true, .exact = true});
    check((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 9, .heads3 = true});
}

Test(local_shared_qk, autopad_rotary_mask)
{
    check((sq_case){.w = 4, .lb = 1, .lf = 1, .L = 10, .autopad = true, .rotary = true, .masked = 1});
    check((sq_case){.w = 3, .lb = 1, .L = 11, .causal = true, .exact = true, .autopad = true, .masked = 1});
    check((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 9, .rotary = true});
    check((sq_case){.w = 3, .lb = 2, .L = 11, .causal = true, .rotary = true, .autopad = true, .heads3 = true});
    check((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 9, .rotary = true, .given = true, .masked = 1});
    check((sq_case){.w = 3, .lb = 1, .L = 9, .causal = true, .alibi = true, .masked = 1});
    check((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 9, .alibi = true, .heads3 = true, .rotary = true});
}

/* rows that see only their own key: weight 1 from the fill (reference) and from
 * the added -5e4 (fused), zero logit gradient in both */
Test(local_shared_qk, rows_seeing_only_themselves)
{
    check((sq_case){.w = 1, .lb = 0, .lf = 0, .L = 6});                                    /* one-slot band */
    check((sq_case){.w = 3, .lb = 0, .L = 9, .causal = true, .exact = true, .rotary = true}); /* exact, lb 0 */
    check((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 12, .masked = 2});                       /* key 5 only */
    check((sq_case){.w = 4, .lb = 1, .L = 12, .causal = true, .masked = 2, .rotary = true});
    check((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 9, .q_gain = 40}); /* logits up to ~80: still exact */
}

Test(local_shared_qk, f32_agrees)
{
    check_dt((sq_case){.w = 4, .lb = 1, .lf = 1, .L = 10, .autopad = true, .rotary = true, .masked = 1}, PG_F32,
             1e-5);
    check_dt((sq_case){.w = 3, .lb = 1, .L = 11, .causal = true, .autopad = true, .masked = 2}, PG_F32, 1e-5);
    check_dt((sq_case){.w = 3, .lb = 1, .L = 9, .causal = true, .alibi = true, .exact = true}, PG_F32, 1e-5);
}

/* ---- gradcheck of the fused path -------------------------------------------------------------- */

typedef struct {
    pg_local_attention *m;
    pg_tensor *mask;
    int fused; /* calls that took the fused kernel */
} gc_ctx;

static pg_tensor *gc_fn(pg_graph *g, pg_tensor *const *in, int n_in, void *vctx)
{
    (void)n_in;
    gc_ctx *c = vctx;
    int before = pg_graph_num_nodes(g);
    pg_tensor *y = pg_local_attention_forward(g, c->m, in[0], in[1], in[2], &(pg_local_args){.mask = c->mask});
    for (int i = before; y && i < pg_graph_num_nodes(g); i++)
        c->fused += strstr(pg_graph_node(g, i)->name, "flash") != NULL;
    return y;
}

static void gradcheck_case(sq_case sc)
{
    pg_tensor *in[3];
    inputs(&sc, PG_F64, in);
    gc_ctx ctx = {.m = make(&sc, false, PG_F64), .mask = case_mask(&sc)};
    assert_gradcheck(gc_fn, 3, in, &ctx, NULL); /* f64, and the f32 leg */
    cr_assert_gt(ctx.fused, 0, "the gradcheck ran the fused path");
    pg_module_free(&ctx.m->base);
    pg_tensor_free(ctx.mask);
    free_all(3, in);
}

Test(local_shared_qk, gradcheck_fused)
{
    gradcheck_case((sq_case){.w = 3, .lb = 1, .lf = 1, .L = 9, .rotary = true, .masked = 1});
    gradcheck_case((sq_case){.w = 2, .lb = 2, .L = 8, .causal = true, .autopad = false});
    gradcheck_case((sq_case){.w = 3, .lb = 1, .L = 10, .causal = true, .exact = true, .autopad = true, .masked = 2,
                             .rotary = true});
}
