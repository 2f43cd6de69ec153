/* pg_cope_attention (autograd/op_cope_attn.c): a value by hand; outputs and gradients equal
 * to the chain it replaces (pg_matmul for z = q E and the logits, pg_cope_interp,
 * pg_flash_attention with the bias as pair_bias) over several blocks of queries, both
 * dtypes, causal, a key mask, gates from the values, Lq != Lk, both layouts of E, both
 * paths of the interpolation (n < 32 and n >= 32), one tensor in two or three roles;
 * the same bits for any thread count; gradchecks; bad input. */
#include "../autograd/flash.h"
#include "testutil.h"

#include <string.h>

/* one head, one query, two keys, D 1: q = 1, k = (0, ln 3), v = (1, 10), E = z = (2, 6, 7),
 * scale and out_scale 1. Gates sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4, running sums from
 * the right x = (5/4, 3/4), the bias z read there, the logits q . k + bias. */
Test(cope_attn, by_hand)
{
    const double l3 = log(3.0);
    pg_tensor *q = T64(PG_SHAPE(1, 1, 1, 1), 1), *k = T64(PG_SHAPE(1, 1, 2, 1), 0, l3);
    pg_tensor *v = T64(PG_SHAPE(1, 1, 2, 1), 1, 10), *z = T64(PG_SHAPE(1, 3), 2, 6, 7);
    pg_tensor *out = pg_cope_attention(NULL, q, k, v, z, &(pg_cope_attn_opts){.scale = 1, .out_scale = 1});
    cr_assert_not_null(out, "%s", pg_last_error());
    /* p = 5/4: z1 + 1/4 (z2 - z1) = 6.25; p = 3/4: z0 + 3/4 (z1 - z0) = 5 */
    const double a0 = 0 + 6.25, a1 = l3 + 5, want = (exp(a0) * 1 + exp(a1) * 10) / (exp(a0) + exp(a1));
    cr_assert_float_eq(pg_get(out, 0), want, 1e-13, "out %.15g, want %.15g", pg_get(out, 0), want);
    free_all(5, (pg_tensor *[]){q, k, v, z, out});
}

typedef struct ccase {
    pg_dtype dt;
    int64_t B, H, Lq, Lk, D, n;
    bool causal, masked, gates_v;
    double scale, out_scale;
    bool nd;       /* E (n, D), else (1, D, n) */
    bool positive; /* q, k, v in [0, 1): gates near 1, sums as far as the keys reach */
} ccase;

enum { N_IN = 4, N_OUT = 1 + N_IN };

typedef struct cin {
    pg_tensor *t[N_IN]; /* q, k, v, E */
    pg_tensor *mask;
} cin;

/* inputs of c's dtype; E spread over [-2, 2] so that the bias matters */
static cin make_inputs(const ccase *c, uint64_t seed)
{
    const int64_t sh[N_IN][4] = {{c->B, c->H, c->Lq, c->D}, {c->B, c->H, c->Lk, c->D}, {c->B, c->H, c->Lk, c->D},
                                 {1, c->D, c->n}};
    const int64_t e_nd[2] = {c->n, c->D};
    cin in = {{NULL}, c->masked ? key_mask_pattern(c->B, c->Lk, 3, 2) : NULL};
    for (int i = 0; i < N_IN; i++) {
        const bool e = i == 3;
        pg_tensor *t = rand_param(e ? (c->nd ? 2 : 3) : 4, e && c->nd ? e_nd : sh[i], e ? -2 : c->positive ? 0 : -1,
                                  e ? 2 : 1, seed + (uint64_t)i);
        in.t[i] = c->dt == PG_F64 ? t : pg_tensor_cast(NULL, t, c->dt);
        if (in.t[i] != t)
            pg_tensor_free(t);
        in.t[i]->requires_grad = true;
    }
    return in;
}

static void free_inputs(cin *in)
{
    free_all(N_IN, in->t);
    pg_tensor_free(in->mask);
}

/* the fused op, or the chain of ops it replaces */
static pg_tensor *attend(pg_graph *g, const ccase *c, bool fused, pg_tensor *const *t, pg_tensor *mask)
{
    const pg_cope_attn_opts o = {c->scale, c->out_scale, c->causal, mask, c->gates_v, c->nd};
    if (fused)
        return pg_cope_attention(g, t[0], t[1], t[2], t[3], &o);
    pg_tensor *s = pg_matmul(g, t[0], c->gates_v ? t[2] : t[1], false, true);
    pg_tensor *z = pg_matmul(g, t[0], t[3], false, c->nd); /* (B, H, Lq, n) */
    pg_tensor *bias = pg_cope_interp(g, s, z, mask, c->causal, c->scale, c->out_scale);
    return pg_flash_attention(g, t[0], t[1], t[2],
                              &(pg_flash_opts){.scale = c->scale, .causal = c->causal, .mask = mask,
                                               .pair_bias = bias});
}

/* the output and every input's gradient of sum(out * w) */
static void run(bool fused, const ccase *c, cin *in, pg_tensor *w, pg_tensor **res)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *out = attend(g, c, fused, in->t, in->mask);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, out, w), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, out);
    for (int i = 0; i < N_IN; i++)
        res[1 + i] = take_grad(in->t[i]);
    pg_graph_free(g);
}

static const char *const NAMES[N_OUT] = {"out", "dq", "dk", "dv", "dE"};

static void assert_equals_chain(const ccase *cases, size_t n, double tol, const char *what)
{
    double worst = 0;
    for (size_t k = 0; k < n; k++) {
        const ccase *c = &cases[k];
        cin in = make_inputs(c, 100 + 10 * k);
        pg_tensor *w64 = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), 9 + k, false);
        pg_tensor *w = c->dt == PG_F64 ? w64 : pg_tensor_cast(NULL, w64, c->dt);
        pg_tensor *a[N_OUT], *b[N_OUT];
        run(true, c, &in, w, a);
        run(false, c, &in, w, b);
        for (int i = 0; i < N_OUT; i++) {
            double e = max_err(a[i], b[i]);
            cr_assert_lt(e, tol, "%s case %zu, %s: %g", what, k, NAMES[i], e);
            worst = e > worst ? e : worst;
            pg_tensor_free(a[i]);
            pg_tensor_free(b[i]);
        }
        if (w != w64)
            pg_tensor_free(w);
        pg_tensor_free(w64);
        free_inputs(&in);
    }
    cr_log_info("cope_attn vs the chain (%s): %.3g (outputs and gradients)", what, worst);
}

/* Lq over two and three blocks of 32 queries, a last block of 1 and of 6, two chunks of
 * 128 (z computed only as far as a chunk's sums reach: n above the keys); n >= 32 reads z
 * through the float kernel's windows */
Test(cope_attn, equals_the_chain_f64)
{
    const ccase cases[] = {
        {PG_F64, 2, 3, 70, 70, 8, 12, true, false, false, 0.35, 0.35, false, false},
        {PG_F64, 2, 2, 65, 65, 4, 40, true, true, false, 0.5, 1.0, true, false},
        {PG_F64, 1, 2, 38, 50, 5, 9, false, true, true, 0.3, 0.3, false, false},
        {PG_F64, 2, 1, 50, 38, 6, 7, true, false, true, 0.25, 1.0, true, false},
        {PG_F64, 1, 1, 3, 9, 2, 3, false, false, false, 1.0, 1.0, false, false},
        {PG_F64, 2, 2, 160, 160, 4, 170, true, true, false, 0.35, 0.35, false, false}, /* two chunks, z cut short */
        {PG_F64, 1, 2, 140, 140, 8, 150, true, false, false, 3.0, 1.0, false, true}, /* sums reach the keys */
    };
    assert_equals_chain(cases, sizeof cases / sizeof cases[0], 1e-12, "f64");
}

Test(cope_attn, equals_the_chain_f32)
{
    const ccase cases[] = {
        {PG_F32, 2, 3, 70, 70, 8, 12, true, false, false, 0.35, 0.35, false, false},
        {PG_F32, 2, 2, 97, 97, 16, 48, true, true, false, 0.25, 1.0, true, false},
        {PG_F32, 1, 2, 38, 50, 5, 33, false, true, true, 0.3, 0.3, false, false},
        {PG_F32, 1, 2, 150, 150, 8, 151, true, false, false, 3.0, 1.0, true, true},
    };
    assert_equals_chain(cases, sizeof cases / sizeof cases[0], 5e-6, "f32");
}

/* One tensor in two or three roles (q = k: shared query-key projections; k = v; q = k = v),
 * causal and not, gates from the keys and from the values: the shared tensor's gradient is
 * the sum of its roles', as the chain accumulates it. The fused op runs first (every
 * gradient new to it) and again after the chain (each gradient then zeroed, added to). */
Test(cope_attn, shared_inputs_equal_the_chain)
{
    static const int roles[3][3] = {{0, 0, 2}, {0, 1, 1}, {0, 0, 0}}; /* q, k, v: which of in.t */
    static const bool fused_run[3] = {true, false, true};
    double worst = 0;
    for (int share = 0; share < 3; share++)
        for (int causal = 0; causal < 2; causal++) {
            const ccase c = {PG_F64, 2, 2, 70, 70, 8, 12, causal, false, share > 0, 0.35, 0.35, false, false};
            cin in = make_inputs(&c, 300 + 2 * (uint64_t)share + (uint64_t)causal);
            pg_tensor *t[N_IN] = {in.t[roles[share][0]], in.t[roles[share][1]], in.t[roles[share][2]], in.t[3]};
            pg_tensor *w = randt(PG_SHAPE(c.B, c.H, c.Lq, c.D), 41, false), *res[3][N_OUT] = {{NULL}};
            for (int r = 0; r < 3; r++) {
                pg_graph *g = pg_graph_new();
                pg_tensor *out = attend(g, &c, fused_run[r], t, NULL);
                cr_assert_not_null(out, "%s", pg_graph_error(g));
                cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, out, w), 0, NULL, false)), 0, "%s", pg_graph_error(g));
                res[r][0] = pg_tensor_copy(NULL, out);
                for (int i = 0; i < N_IN; i++) /* the tensors in some role */
                    if (i == 3 || i == roles[share][0] || i == roles[share][1] || i == roles[share][2])
                        res[r][1 + i] = take_grad(in.t[i]);
                pg_graph_free(g);
            }
            for (int r = 0; r < 3; r += 2)
                for (int i = 0; i < N_OUT; i++) {
                    double e = res[1][i] ? max_err(res[r][i], res[1][i]) : 0;
                    cr_assert_lt(e, 1e-12, "share %d, causal %d, run %d: %s of in.t: %g", share, causal, r, NAMES[i], e);
                    worst = e > worst ? e : worst;
                }
            for (int r = 0; r < 3; r++)
                for (int i = 0; i < N_OUT; i++)
                    pg_tensor_free(res[r][i]);
            pg_tensor_free(w);
            free_inputs(&in);
        }
    cr_log_info("cope_attn with shared inputs vs the chain: %.3g", worst);
}

typedef struct fused_run {
    const ccase *c;
    cin *in;
    pg_tensor *w;
} fused_run;

static void run_fused(void *ctx, pg_tensor **res)
{
    fused_run *x = ctx;
    run(true, x->c, x->in, x->w, res);
}

Test(cope_attn, same_bits_for_any_thread_count)
{
    const ccase cases[] = {{PG_F32, 3, 3, 90, 90, 8, 40, true, true, false, 0.35, 0.35, false, false},
                           {PG_F64, 2, 3, 40, 40, 4, 6, true, false, true, 0.5, 1.0, true, false}};
    for (size_t k = 0; k < 2; k++) {
        const ccase *c = &cases[k];
        cin in = make_inputs(c, 7 + k);
        pg_tensor *w64 = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), 8, false);
        fused_run x = {c, &in, c->dt == PG_F64 ? w64 : pg_tensor_cast(NULL, w64, c->dt)};
        assert_same_bits_on_1_and_2_threads(run_fused, &x, N_OUT, NAMES);
        if (x.w != w64)
            pg_tensor_free(x.w);
        pg_tensor_free(w64);
        free_inputs(&in);
    }
}

/* the result without a graph: the graph's bits, nothing recorded, nothing leaked */
Test(cope_attn, without_a_graph)
{
    const ccase c = {PG_F64, 1, 2, 40, 40, 4, 6, true, true, false, 0.5, 0.5, false, false};
    cin in = make_inputs(&c, 3);
    pg_tensor *a = attend(NULL, &c, true, in.t, in.mask);
    cr_assert_not_null(a, "%s", pg_last_error());
    pg_graph *g = pg_graph_new();
    pg_tensor *b = attend(g, &c, true, in.t, in.mask);
    cr_assert(!memcmp(a->data, b->data, (size_t)a->numel * sizeof(double)), "the two results differ");
    pg_tensor_free(a);
    pg_graph_free(g);
    free_inputs(&in);
}

typedef struct grad_case {
    ccase c;
    pg_tensor *mask; /* or NULL */
} grad_case;

static pg_tensor *cope_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const grad_case *x = ctx;
    return attend(g, &x->c, true, in, x->mask);
}

/* q, k, v and E over two blocks of queries; causal and not, gates from keys and values,
 * both layouts of E */
Test(cope_attn, gradcheck)
{
    const ccase cases[] = {{PG_F64, 1, 2, 34, 34, 2, 5, true, false, false, 0.7, 0.7, false, false},
                           {PG_F64, 2, 1, 5, 7, 3, 4, false, true, true, 0.6, 1.0, true, false},
                           {PG_F64, 1, 1, 9, 9, 2, 3, true, true, false, 0.8, 1.0, false, false},
                           {PG_F64, 1, 1, 9, 9, 2, 12, true, false, false, 1.5, 1.0, true, false}}; /* n > L + 1 */
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        grad_case x = {cases[k], NULL};
        cin in = make_inputs(&x.c, 1 + 7 * k);
        x.mask = in.mask;
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(cope_fn, N_IN, in.t, &x, &o);
        free_inputs(&in);
    }
}

Test(cope_attn, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 4)), *k = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 5, 4));
    pg_tensor *v3 = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 5, 3)), *E = pg_zeros(g, PG_F64, PG_SHAPE(1, 4, 7));
    const pg_cope_attn_opts o = {.out_scale = 1};
    ASSERT_FAILS(pg_cope_attention(g, q, k, k, E, NULL), "pg_cope_attention: opts is NULL");
    ASSERT_FAILS(pg_cope_attention(g, q, k, k, NULL, &o), "pg_cope_attention: pos_emb is NULL");
    ASSERT_FAILS(pg_cope_attention(g, NULL, k, k, E, &o), "pg_cope_attention: q is NULL");
    pg_tensor *bad_E[] = {pg_zeros(g, PG_F64, PG_SHAPE(2, 4, 7)), pg_zeros(g, PG_F32, PG_SHAPE(4, 7)),
                          pg_zeros(g, PG_F64, PG_SHAPE(7, 4)), pg_zeros(g, PG_F64, PG_SHAPE(4))};
    const char *shown[] = {"f64[2,4,7]", "f32[4,7]", "f64[7,4]", "f64[4]"};
    for (int i = 0; i < 4; i++) {
        char want[200];
        snprintf(want, sizeof want,
                 "pg_cope_attention: pos_emb is %s, expected f64 (D, n) = (D of q, n) with 1 <= n <= 2^31 - 1 "
                 "(leading dims 1) for q f64[2,3,6,4]",
                 shown[i]);
        ASSERT_FAILS(pg_cope_attention(g, q, k, k, bad_E[i], &o), want);
    }
    ASSERT_FAILS(pg_cope_attention(g, q, k, k, E, &(pg_cope_attn_opts){.out_scale = 1, .emb_by_position = true}),
                 "pg_cope_attention: pos_emb is f64[1,4,7], expected f64 (n, D) = (n, D of q)");
    ASSERT_FAILS(pg_cope_attention(g, q, k, v3, E, &(pg_cope_attn_opts){.out_scale = 1, .gates_from_values = true}),
                 "pg_cope_attention: gates from the values need v's head dim 3 to be q's 4");
    ASSERT_FAILS(pg_cope_attention(g, q, k, k, E, &(pg_cope_attn_opts){.scale = INFINITY}),
                 "pg_cope_attention: the scales must be finite, got scale inf, out_scale 0");
    pg_tensor *mask = pg_empty(g, PG_BOOL, PG_SHAPE(2, 6));
    ASSERT_FAILS(pg_cope_attention(g, q, k, k, E, &(pg_cope_attn_opts){.mask = mask}),
                 "pg_cope_attention: mask is bool[2,6], expected a bool key mask (B, Lk) = (2, 5)");
    cr_assert_not_null(pg_cope_attention(g, q, k, v3, E, &o), "%s", pg_last_error());
    pg_tensor *E_nd = pg_zeros(g, PG_F64, PG_SHAPE(7, 4));
    cr_assert_not_null(pg_cope_attention(g, q, k, v3, E_nd, &(pg_cope_attn_opts){.emb_by_position = true}), "%s",
                       pg_last_error());
    pg_graph_free(g);
}

/* a NaN in one query: its row as the chain gives it (the fused kernel's rule: logits that
 * are all NaN see no key, the row 0), every other row finite and the chain's */
Test(cope_attn, nan_query_as_the_chain)
{
    const ccase c = {PG_F64, 1, 2, 40, 40, 4, 12, true, false, false, 0.5, 0.5, false, false};
    cin in = make_inputs(&c, 21);
    pg_f64(in.t[0])[5 * 4 + 1] = NAN; /* head 0, query 5 */
    pg_graph *g = pg_graph_new();
    pg_tensor *a = attend(g, &c, true, in.t, NULL), *b = attend(g, &c, false, in.t, NULL);
    cr_assert(a && b, "%s", pg_graph_error(g));
    int64_t nonfinite = 0;
    for (int64_t e = 0; e < a->numel; e++) {
        double x = pg_f64(a)[e], y = pg_f64(b)[e];
        nonfinite += !isfinite(x);
        cr_assert(isnan(x) ? isnan(y) : fabs(x - y) < 1e-12, "entry %lld: %g, the chain %g", (long long)e, x, y);
    }
    cr_assert_eq(nonfinite, 0, "only query 5 of head 0 holds a NaN, and its row is 0");
    for (int64_t e = 5 * 4; e < 6 * 4; e++)
        cr_assert_eq(pg_f64(a)[e], 0.0);
    pg_graph_free(g);
    free_inputs(&in);
}
