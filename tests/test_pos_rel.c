/* Shaw-style learned position embeddings (nn/pos_rel.c): AbsPosEmb1D ("abs1d"),
 * RelPosEmb1D ("rel1d", shared or per-head tables) with relative_to_absolute, and
 * RelPosEmb2D ("rel2d", textbook or AI Summer form). PyTorch parity
 * (tests/fixtures/gen_pos_rel.py), gradchecks w.r.t. q and every table, inside
 * MultiheadAttention (with other modules) and a 1-block LM with an Adam step, bad input. */
#include <stdlib.h>

#include "../nn/attention.h"
#include "../nn/pos_rel.h"
#include "../nn/transformer.h"
#include "../optim/optim.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static double worst_out, worst_grad; /* the largest errors seen (POSREL_VERBOSE=1 prints them) */

static void note(double out, double grad)
{
    worst_out = out > worst_out ? out : worst_out;
    worst_grad = grad > worst_grad ? grad : worst_grad;
    if (getenv("POSREL_VERBOSE"))
        fprintf(stderr, "posrel parity: out %.3g, grad %.3g (worst so far %.3g, %.3g)\n", out, grad, worst_out,
                worst_grad);
}

static pg_posmod *make(pg_posmod_make_fn fn, const void *opts, int64_t heads, int64_t head_dim, int64_t max_len)
{
    pg_rng r = pg_rng_init(7);
    pg_posmod_args a = {.dim = heads * head_dim, .heads = heads, .head_dim = head_dim, .max_len = max_len,
                        .layer = 0, .dtype = PG_F64, .rng = &r, .opts = opts};
    pg_posmod *m = fn(&a);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static pg_pos_ctx ctx_for(pg_tensor *q, int64_t Lk, pg_tensor *pos_q, pg_tensor *pos_k, bool self_attn, double scale)
{
    return (pg_pos_ctx){pos_q, pos_k, NULL, self_attn, false, q->shape[0], q->shape[1], q->shape[3],
                        q->shape[2], Lk, scale, PG_F64, NULL, NULL};
}

static pg_tensor *maybe(const pg_tensor_list *l, const char *prefix, const char *name)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int i = pg_tensor_list_find(l, full);
    return i < 0 ? NULL : l->tensors[i];
}

/* one direct call of mod_bias against the fixture case `prefix` */
static void parity(pg_posmod *m, const pg_tensor_list *l, const char *prefix, bool self_attn, double scale)
{
    load_params(&m->base, l, prefix);
    char name[128];
    snprintf(name, sizeof name, "%sq", prefix);
    pg_tensor *q = fx_copy(l, name, true);
    pg_tensor *dy = fx(l, "%sdy", prefix);
    pg_tensor *pq = maybe(l, prefix, "pos_q"), *pk = maybe(l, prefix, "pos_k");
    pg_pos_ctx c = ctx_for(q, dy->shape[3], pq, self_attn ? pq : pk, self_attn, scale);
    pg_graph *g = pg_graph_new();
    pg_tensor *out = pg_posrel_logits(g, m, q, &c);
    cr_assert_not_null(out, "%s: %s", prefix, pg_graph_error(g));
    double eo = max_err(out, fx(l, "%sout", prefix));
    cr_assert(eo <= 1e-10, "%s out: %.3g", prefix, eo);
    cr_assert_eq(pg_backward_with(g, out, dy), 0, "%s", pg_graph_error(g));
    double eg = max_err(q->grad, fx(l, "%sgrad.q", prefix));
    pg_tensor_list p = pg_module_parameters(&m->base);
    for (int i = 0; i < p.n; i++) {
        double e = max_err(p.tensors[i]->grad, fx(l, "%sgrad.%s", prefix, p.names[i]));
        eg = e > eg ? e : eg;
    }
    pg_tensor_list_free(&p);
    cr_assert(eg <= 1e-9, "%s grads: %.3g", prefix, eg);
    note(eo, eg);
    pg_graph_free(g);
    pg_tensor_free(q);
    pg_module_free(&m->base);
}

/* ---- relative_to_absolute ---------------------------------------------------------------- */

Test(pos_rel_r2a, worked_definition)
{
    /* x[b, i, r] = 100 i + r: out[i, j] = x[i, j - i + l - 1] */
    int64_t l = 4;
    pg_tensor *x = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, l, 2 * l - 1));
    for (int64_t t = 0; t < x->numel; t++)
        pg_set(x, t, (double)((t / (2 * l - 1)) % l * 100 + t % (2 * l - 1) + 1000 * (t / (l * (2 * l - 1)))));
    pg_tensor *y = pg_rel_to_abs(NULL, x);
    assert_shape(y, 3, (int64_t[]){2, l, l});
    for (int64_t b = 0; b < 2; b++)
        for (int64_t i = 0; i < l; i++)
            for (int64_t j = 0; j < l; j++)
                cr_assert_eq(pg_get(y, (b * l + i) * l + j), (double)(1000 * b + 100 * i + (j - i + l - 1)));
    /* l = 1: a single entry */
    pg_tensor *x1 = T64(PG_SHAPE(1, 1), 3.5), *y1 = pg_rel_to_abs(NULL, x1);
    ASSERT_VALUES(y1, 0, 3.5);
    pg_tensor *own[] = {x, y, x1, y1};
    free_all(4, own);
}

Test(pos_rel_r2a, matches_torch)
{
    pg_tensor_list l = fixture("pos_rel_rel1d.safetensors");
    pg_tensor *x = fx_copy(&l, "r2a.x", true);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_rel_to_abs(g, x);
    assert_close(y, fx(&l, "r2a.out"), 1e-15, "out");
    cr_assert_eq(pg_backward_with(g, y, fx(&l, "r2a.dy")), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(&l, "r2a.grad.x"), 1e-15, "grad x");
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_list_free_all(&l);
}

static pg_tensor *call_r2a(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_rel_to_abs(g, in[0]);
}

Test(pos_rel_r2a, gradcheck_and_bad_shape)
{
    pg_tensor *x = randt(PG_SHAPE(2, 3, 5), 1, true);
    assert_gradcheck(call_r2a, 1, &x, NULL, NULL);
    pg_tensor *bad = randt(PG_SHAPE(2, 3, 6), 2, false), *v = randt(PG_SHAPE(5), 3, false);
    ASSERT_FAILS(pg_rel_to_abs(NULL, bad), "pg_rel_to_abs: x is f64[2,3,6], expected (..., l, 2l - 1)");
    ASSERT_FAILS(pg_rel_to_abs(NULL, v), "pg_rel_to_abs: x is f64[5]");
    ASSERT_FAILS(pg_rel_to_abs(NULL, NULL), "x is NULL");
    pg_tensor *own[] = {x, bad, v};
    free_all(3, own);
}

/* ---- parity --------------------------------------------------------------------------------- */

Test(pos_rel_abs1d, matches_torch)
{
    pg_tensor_list l = fixture("pos_rel_abs1d.safetensors");
    pg_abs1d_opts up = {.tokens = 5}, sc = {.tokens = 5, .scaled = true}, p7 = {.tokens = 7}, p6 = {.tokens = 6};
    parity(make(pg_posmod_make_abs1d, &up, 2, 4, 0), &l, "upstream.", true, 0.5);
    parity(make(pg_posmod_make_abs1d, &sc, 2, 4, 0), &l, "scaled.", true, 0.37);
    parity(make(pg_posmod_make_abs1d, &p7, 2, 4, 0), &l, "pos.", true, 0.5);
    parity(make(pg_posmod_make_abs1d, &p6, 2, 3, 0), &l, "cross.", false, 0.5);
    pg_tensor_list_free_all(&l);
}

Test(pos_rel_rel1d, matches_torch)
{
    pg_tensor_list l = fixture("pos_rel_rel1d.safetensors");
    pg_rel1d_opts sh = {.tokens = 5}, ph = {.tokens = 5, .heads = 2}, s6 = {.tokens = 6}, p6 = {.tokens = 6, .heads = 2},
                  cr = {.tokens = 5, .heads = 2}, cp = {.tokens = 6, .scaled = true};
    parity(make(pg_posmod_make_rel1d, &sh, 2, 4, 0), &l, "shared.", true, 0.5);
    parity(make(pg_posmod_make_rel1d, &ph, 2, 4, 0), &l, "perhead.", true, 0.5);
    parity(make(pg_posmod_make_rel1d, &s6, 2, 4, 0), &l, "short.", true, 0.5);
    parity(make(pg_posmod_make_rel1d, &s6, 2, 4, 0), &l, "pos_shared.", true, 0.5);
    parity(make(pg_posmod_make_rel1d, &p6, 2, 4, 0), &l, "pos_perhead.", true, 0.5);
    parity(make(pg_posmod_make_rel1d, &cr, 2, 3, 0), &l, "cross.", false, 0.5);
    parity(make(pg_posmod_make_rel1d, &cp, 2, 3, 0), &l, "cross_pos.", false, 0.6);
    pg_tensor_list_free_all(&l);
}

Test(pos_rel_rel2d, matches_torch)
{
    pg_tensor_list l = fixture("pos_rel_rel2d.safetensors");
    pg_rel2d_opts a = {.height = 2, .width = 3}, b = {.height = 3, .width = 2, .heads = 2},
                  c = {.height = 2, .width = 3, .scaled = true}, d = {.height = 3, .width = 3, .aisummer = true};
    parity(make(pg_posmod_make_rel2d, &a, 2, 4, 0), &l, "hw23.", true, 0.5);
    parity(make(pg_posmod_make_rel2d, &b, 2, 4, 0), &l, "hw32_perhead.", true, 0.5);
    parity(make(pg_posmod_make_rel2d, &c, 2, 3, 0), &l, "pos.", true, 0.5);
    parity(make(pg_posmod_make_rel2d, &d, 2, 4, 0), &l, "aisummer.", true, 0.5);
    pg_tensor_list_free_all(&l);
}

/* ---- semantics ---------------------------------------------------------------------------------- */

Test(pos_rel_rel1d, default_and_explicit_positions_agree)
{
    /* default positions use relative_to_absolute; explicit ones the gather: same values */
    pg_rel1d_opts o = {.tokens = 7, .heads = 2};
    pg_posmod *m = make(pg_posmod_make_rel1d, &o, 2, 3, 0);
    pg_tensor *q = randt(PG_SHAPE(2, 2, 5, 3), 1, false);
    pg_tensor *pos = TI64(PG_SHAPE(2, 5), 0, 1, 2, 3, 4, 0, 1, 2, 3, 4);
    pg_pos_ctx c0 = ctx_for(q, 5, NULL, NULL, true, 1), c1 = ctx_for(q, 5, pos, pos, true, 1);
    pg_tensor *a = pg_posrel_logits(NULL, m, q, &c0), *b = pg_posrel_logits(NULL, m, q, &c1);
    cr_assert_lt(max_err(a, b), 1e-15);
    /* shifting every position keeps the relative bias */
    pg_tensor *shifted = TI64(PG_SHAPE(2, 5), 10, 11, 12, 13, 14, -3, -2, -1, 0, 1);
    pg_pos_ctx c2 = ctx_for(q, 5, shifted, shifted, true, 1);
    pg_tensor *s = pg_posrel_logits(NULL, m, q, &c2);
    cr_assert_lt(max_err(s, a), 1e-15);
    /* by hand: bias[b, h, i, j] = q[b, h, i] . R[h, j - i + 6] */
    pg_tensor *R = pg_posrel_table(m, 0);
    assert_shape(R, 3, (int64_t[]){2, 13, 3});
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = 0; i < 5; i++)
            for (int64_t j = 0; j < 5; j++) {
                double e = 0;
                for (int64_t d = 0; d < 3; d++)
                    e += pg_get(q, ((1 * 2 + h) * 5 + i) * 3 + d) * pg_get(R, (h * 13 + j - i + 6) * 3 + d);
                cr_assert_float_eq(pg_get(a, ((1 * 2 + h) * 5 + i) * 5 + j), e, 1e-14);
            }
    pg_tensor *own[] = {q, pos, a, b, shifted, s};
    free_all(6, own);
    pg_module_free(&m->base);
}

Test(pos_rel_rel2d, left_padding_and_row_offsets)
{
    pg_rel2d_opts o = {.height = 2, .width = 3};
    pg_posmod *m = make(pg_posmod_make_rel2d, &o, 1, 2, 0);
    pg_tensor *q = randt(PG_SHAPE(1, 1, 7, 2), 1, false); /* a CLS token then the 2 x 3 map */
    pg_tensor *pos = TI64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5);
    pg_pos_ctx c = ctx_for(q, 7, pos, pos, true, 1);
    pg_tensor *b = pg_posrel_logits(NULL, m, q, &c);
    assert_shape(b, 4, (int64_t[]){1, 1, 7, 7});
    pg_tensor *Rw = pg_posrel_table(m, 0), *Rh = pg_posrel_table(m, 1);
    assert_shape(Rw, 2, (int64_t[]){5, 2});
    assert_shape(Rh, 2, (int64_t[]){3, 2});
    for (int64_t i = 0; i < 7; i++)
        for (int64_t j = 0; j < 7; j++) {
            double e = 0;
            if (i > 0 && j > 0) { /* query cell (r, s), key cell (t, u) */
                int64_t r = (i - 1) / 3, s = (i - 1) % 3, t = (j - 1) / 3, u = (j - 1) % 3;
                for (int64_t d = 0; d < 2; d++)
                    e += pg_get(q, i * 2 + d) * (pg_get(Rw, (u - s + 2) * 2 + d) + pg_get(Rh, (t - r + 1) * 2 + d));
            }
            cr_assert_float_eq(pg_get(b, i * 7 + j), e, 1e-14, "bias[%lld, %lld]", (long long)i, (long long)j);
        }
    pg_tensor *own[] = {q, pos, b};
    free_all(3, own);
    pg_module_free(&m->base);
}

Test(pos_rel, names_shapes_and_init)
{
    pg_abs1d_opts ao = {.tokens = 200};
    pg_rel1d_opts ro = {.heads = 4};
    pg_rel2d_opts to = {.height = 2, .width = 5, .heads = 4};
    pg_posmod *a = make(pg_posmod_make_abs1d, &ao, 4, 16, 0), *r = make(pg_posmod_make_rel1d, &ro, 4, 16, 9),
              *t = make(pg_posmod_make_rel2d, &to, 4, 16, 0);
    cr_assert_str_eq(a->base.type, "AbsPosEmb1D");
    cr_assert_str_eq(r->base.type, "RelPosEmb1D");
    cr_assert_str_eq(t->base.type, "RelPosEmb2D");
    assert_shape(pg_module_find_param(&a->base, "abs_pos_emb"), 2, (int64_t[]){200, 16});
    assert_shape(pg_module_find_param(&r->base, "rel_pos_emb"), 3, (int64_t[]){4, 17, 16}); /* tokens = max_len 9 */
    assert_shape(pg_module_find_param(&t->base, "emb_w.rel_pos_emb"), 3, (int64_t[]){4, 9, 16});
    assert_shape(pg_module_find_param(&t->base, "emb_h.rel_pos_emb"), 3, (int64_t[]){4, 3, 16});
    cr_assert_eq(pg_module_num_elements(&t->base), 4 * 12 * 16);
    /* init N(0, 1) / sqrt(dim_head) (AI Summer's randn * dim_head ** -0.5) */
    pg_tensor *e = pg_posrel_table(a, 0);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < e->numel; i++) {
        s += pg_get(e, i);
        s2 += pg_get(e, i) * pg_get(e, i);
    }
    double mean = s / e->numel, sd = sqrt(s2 / e->numel - mean * mean);
    cr_assert_lt(fabs(mean), 0.02);
    cr_assert_lt(fabs(sd - 0.25), 0.02, "std %g", sd);
    /* bias_table: the bias needs q */
    pg_pos_ctx c = {.self_attn = true, .B = 1, .heads = 4, .head_dim = 16, .Lq = 3, .Lk = 3, .scale = 1, .dtype = PG_F64};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, r, &c), "RelPosEmb1D has no bias_table hook");
    cr_assert_null(pg_posrel_table(a, 1));
    /* the registry, once the lead has added the lines */
    if (pg_posmod_lookup("rel1d")) {
        cr_assert_eq(pg_posmod_lookup("abs1d"), pg_posmod_make_abs1d);
        cr_assert_eq(pg_posmod_lookup("rel1d"), pg_posmod_make_rel1d);
        cr_assert_eq(pg_posmod_lookup("rel2d"), pg_posmod_make_rel2d);
    }
    /* typed constructors */
    pg_rng rng = pg_rng_init(1);
    pg_posmod *x = pg_rel2d_new(3, 3, 4, 0, PG_F32, &rng), *y = pg_rel1d_new(4, 2, 0, PG_F64, &rng),
              *z = pg_abs1d_new(4, 2, PG_F64, &rng);
    cr_assert_not_null(x, "%s", pg_last_error());
    cr_assert_eq(pg_posrel_table(x, 1)->dtype, PG_F32);
    assert_shape(pg_posrel_table(y, 0), 2, (int64_t[]){7, 2});
    assert_shape(pg_posrel_table(z, 0), 2, (int64_t[]){4, 2});
    pg_posmod *all[] = {a, r, t, x, y, z};
    for (int i = 0; i < 6; i++)
        pg_module_free(&all[i]->base);
}

/* ---- gradchecks -------------------------------------------------------------------------------- */

typedef struct gc_case {
    pg_posmod *m;
    pg_pos_ctx c;
} gc_case;

static pg_tensor *call_logits(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    gc_case *k = ctx;
    return pg_posrel_logits(g, k->m, in[0], &k->c);
}

static void gradcheck_case(pg_posmod *m, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t d, pg_tensor *pq,
                           pg_tensor *pk, bool self_attn, uint64_t seed)
{
    pg_tensor *in[8] = {randt(PG_SHAPE(B, H, Lq, d), seed, true)};
    int n = with_params(in, 1, &m->base);
    gc_case k = {m, ctx_for(in[0], Lk, pq, pk, self_attn, 0.7)};
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_logits, n, in, &k, &o);
    pg_tensor_free(in[0]);
}

Test(pos_rel_abs1d, gradcheck)
{
    pg_abs1d_opts o = {.tokens = 6, .scaled = true};
    pg_posmod *m = make(pg_posmod_make_abs1d, &o, 2, 2, 0);
    pg_tensor *pos = TI64(PG_SHAPE(2, 3), 5, 0, 2, 1, 1, 3), *pq = TI64(PG_SHAPE(2, 2), 0, 9, 4, 4);
    gradcheck_case(m, 2, 2, 4, 4, 2, NULL, NULL, true, 1);
    gradcheck_case(m, 2, 2, 4, 4, 2, pos, pos, true, 2); /* left padding */
    gradcheck_case(m, 2, 2, 3, 3, 2, pq, pos, false, 3); /* cross: pos_q only pads rows */
    pg_tensor *own[] = {pos, pq};
    free_all(2, own);
    pg_module_free(&m->base);
}

Test(pos_rel_rel1d, gradcheck)
{
    pg_rel1d_opts sh = {.tokens = 4}, ph = {.tokens = 5, .heads = 2, .scaled = true};
    pg_posmod *s = make(pg_posmod_make_rel1d, &sh, 2, 2, 0), *p = make(pg_posmod_make_rel1d, &ph, 2, 2, 0);
    pg_tensor *pos = TI64(PG_SHAPE(2, 3), 4, 1, 2, 0, 3, 3), *pk = TI64(PG_SHAPE(2, 4), 0, 1, 2, 3, 3, 4, 2, 1);
    gradcheck_case(s, 2, 2, 4, 4, 2, NULL, NULL, true, 1);  /* relative_to_absolute path */
    gradcheck_case(p, 2, 2, 4, 4, 2, NULL, NULL, true, 2);
    gradcheck_case(p, 2, 2, 4, 4, 2, pos, pos, true, 3);    /* gather path, left padding */
    gradcheck_case(s, 2, 2, 3, 4, 2, NULL, NULL, false, 4); /* cross, default positions */
    gradcheck_case(p, 2, 2, 3, 4, 2, pos, pk, false, 5);    /* cross, explicit positions */
    pg_tensor *own[] = {pos, pk};
    free_all(2, own);
    pg_module_free(&s->base);
    pg_module_free(&p->base);
}

Test(pos_rel_rel2d, gradcheck)
{
    pg_rel2d_opts tb = {.height = 2, .width = 3, .heads = 2, .scaled = true}, ai = {.height = 2, .width = 2, .aisummer = true};
    pg_posmod *t = make(pg_posmod_make_rel2d, &tb, 2, 2, 0), *a = make(pg_posmod_make_rel2d, &ai, 2, 2, 0);
    pg_tensor *pos = TI64(PG_SHAPE(1, 4), 5, 0, 3, 1), *pk = TI64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5);
    gradcheck_case(t, 1, 2, 6, 6, 2, NULL, NULL, true, 1);
    gradcheck_case(t, 1, 2, 5, 5, 2, pos, pos, true, 2);   /* a CLS token, cells in any order */
    gradcheck_case(t, 1, 2, 4, 6, 2, pos, pk, false, 3);   /* cross */
    gradcheck_case(a, 2, 2, 4, 4, 2, NULL, NULL, true, 4); /* AI Summer's form */
    pg_tensor *own[] = {pos, pk};
    free_all(2, own);
    pg_module_free(&t->base);
    pg_module_free(&a->base);
}

/* ---- inside MultiheadAttention, combined with other modules -------------------------------------- */

/* a trivial mod_qkv module: q <- q * scale, parameter "scale" (1) (as gen_attention.py's QScale) */
static int qscale_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c)
{
    (void)k, (void)v, (void)c;
    *q = pg_mul(g, *q, pg_module_find_param(&m->base, "scale"));
    return *q ? 0 : -1;
}
static const pg_posmod_ops QSCALE_OPS = {.mod_qkv = qscale_qkv};

static pg_posmod *qscale_new(void)
{
    pg_posmod *m = calloc(1, sizeof *m);
    pg_posmod_init(m, "TestQScale", &QSCALE_OPS, NULL);
    pg_fill(pg_module_new_param(&m->base, "scale", PG_F64, PG_SHAPE(1)), 1.3);
    return m;
}

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, bool cross, pg_posmod *const *mods, int n)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal, .cross = cross}, mods, n, 3);
}

static void mha_parity(pg_mha *m, const pg_tensor_list *l, const char *p, pg_tensor *mask)
{
    load_params(&m->base, l, p);
    char name[64];
    snprintf(name, sizeof name, "%sx", p);
    pg_tensor *x = fx_copy(l, name, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = mask});
    double eo = max_err(out, fx(l, "%sout", p));
    cr_assert(eo <= 1e-10, "%s out %.3g", p, eo);
    cr_assert_eq(pg_backward_with(g, out, fx(l, "%sdy", p)), 0, "%s", pg_graph_error(g));
    double eg = max_err(x->grad, fx(l, "%sgrad.x", p));
    cr_assert(eg <= 1e-9, "%s grad x %.3g", p, eg);
    check_param_grads(&m->base, l, p, 1e-9);
    note(eo, eg);
    pg_graph_free(g);
    pg_tensor_free(x);
}

Test(pos_rel_mha, matches_torch_with_other_modules)
{
    pg_tensor_list l = fixture("pos_rel_mha.safetensors");
    /* QScale then rel1d per head: rel1d's bias uses the scaled q; causal + key mask */
    pg_rel1d_opts ro = {.tokens = 5, .heads = 2};
    pg_posmod *m1[] = {qscale_new(), make(pg_posmod_make_rel1d, &ro, 2, 4, 0)};
    pg_mha *a = mha_with(8, 2, true, false, m1, 2);
    mha_parity(a, &l, "rel1d.", fx(&l, "rel1d.mask"));
    assert_shape(pg_module_find_param(&a->base, "pos.1.rel_pos_emb"), 3, (int64_t[]){2, 9, 4});
    pg_module_free(&a->base);
    /* rel2d on a 2 x 3 map (L = 6) plus abs1d: two bias modules in one layer */
    pg_rel2d_opts to = {.height = 2, .width = 3};
    pg_abs1d_opts ao = {.tokens = 6};
    pg_posmod *m2[] = {make(pg_posmod_make_rel2d, &to, 2, 4, 0), make(pg_posmod_make_abs1d, &ao, 2, 4, 0)};
    pg_mha *b = mha_with(8, 2, false, false, m2, 2);
    mha_parity(b, &l, "rel2d.", NULL);
    pg_module_free(&b->base);
    pg_tensor_list_free_all(&l);
}

typedef struct mha_case {
    pg_mha *m;
    pg_tensor *mask, *pos, *pos_q, *pos_k;
    bool cross;
} mha_case;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    mha_case *c = ctx;
    pg_attn_args a = {.mask = c->mask, .pos = c->pos, .pos_q = c->pos_q, .pos_k = c->pos_k};
    return pg_mha_forward(g, c->m, in[0], c->cross ? in[1] : NULL, &a);
}

Test(pos_rel_mha, gradcheck_self_and_cross)
{
    /* self: all three schemes, causal, key mask, left-padded i64 positions */
    pg_abs1d_opts ao = {.tokens = 6};
    pg_rel1d_opts ro = {.tokens = 6, .heads = 2};
    pg_rel2d_opts to = {.height = 2, .width = 3};
    pg_posmod *mods[] = {make(pg_posmod_make_abs1d, &ao, 2, 2, 0), make(pg_posmod_make_rel1d, &ro, 2, 2, 0),
                         make(pg_posmod_make_rel2d, &to, 2, 2, 0)};
    pg_mha *m = mha_with(4, 2, true, false, mods, 3);
    pg_tensor *pos = TI64(PG_SHAPE(2, 4), 0, 1, 2, 5, 3, 4, 1, 0);
    mha_case c = {m, key_mask(), pos, NULL, NULL, false};
    pg_tensor *in[16] = {randt(PG_SHAPE(2, 5, 4), 1, true)};
    int n = with_params(in, 1, &m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_mha, n, in, &c, &o);
    /* cross: rel1d shared, query and key positions */
    pg_rel1d_opts cs = {.tokens = 8};
    pg_posmod *cm[] = {make(pg_posmod_make_rel1d, &cs, 2, 2, 0)};
    pg_mha_config cc = pg_mha_defaults(4, 2);
    cc.cross = true;
    cc.context_dim = 3;
    cc.dtype = PG_F64;
    pg_rng r = pg_rng_init(2);
    pg_mha *xm = pg_mha_new(&cc, cm, 1, &r);
    cr_assert_not_null(xm, "%s", pg_last_error());
    pg_tensor *pq = TI64(PG_SHAPE(2, 3), 2, 3, 4, 0, 1, 2), *pk = TI64(PG_SHAPE(2, 5), 0, 2, 4, 6, 7, 1, 2, 3, 4, 5);
    mha_case xc = {xm, key_mask(), NULL, pq, pk, true};
    pg_tensor *xin[16] = {randt(PG_SHAPE(2, 3, 4), 2, true), randt(PG_SHAPE(2, 5, 3), 3, true)};
    int xn = with_params(xin, 2, &xm->base);
    assert_gradcheck(call_mha, xn, xin, &xc, &o);
    pg_tensor *own[] = {pos, c.mask, in[0], pq, pk, xc.mask, xin[0], xin[1]};
    free_all(8, own);
    pg_module_free(&m->base);
    pg_module_free(&xm->base);
}

/* true if any element of t differs from before[] and all are finite */
static bool changed_and_finite(const pg_tensor *t, const double *before)
{
    bool changed = false;
    for (int64_t i = 0; i < t->numel; i++) {
        cr_assert(isfinite(pg_get(t, i)));
        changed |= pg_get(t, i) != before[i];
    }
    return changed;
}

/* one forward + backward + Adam step on a module tree; asserts every named table changed */
static void adam_step_changes(pg_module *root, pg_graph *g, pg_tensor *loss, const char *const *names, int n_names)
{
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    double *before[8];
    for (int i = 0; i < n_names; i++) {
        pg_tensor *t = pg_module_find_param(root, names[i]);
        cr_assert_not_null(t, "no parameter %s", names[i]);
        before[i] = malloc(sizeof(double) * (size_t)t->numel);
        for (int64_t j = 0; j < t->numel; j++)
            before[i][j] = pg_get(t, j);
    }
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor_list ps = pg_module_parameters(root);
    pg_optim *opt = pg_optim_new(PG_ADAM, NULL);
    cr_assert_geq(pg_optim_add_group(opt, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
    for (int i = 0; i < n_names; i++) {
        cr_assert(changed_and_finite(pg_module_find_param(root, names[i]), before[i]), "%s did not change", names[i]);
        free(before[i]);
    }
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
}

Test(pos_rel_mha, adam_step_changes_the_tables)
{
    pg_abs1d_opts ao = {.tokens = 6};
    pg_rel1d_opts ro = {.tokens = 6, .heads = 2};
    pg_rel2d_opts to = {.height = 2, .width = 3, .heads = 2};
    pg_posmod *mods[] = {make(pg_posmod_make_abs1d, &ao, 2, 4, 0), make(pg_posmod_make_rel1d, &ro, 2, 4, 0),
                         make(pg_posmod_make_rel2d, &to, 2, 4, 0)};
    pg_mha *m = mha_with(8, 2, true, false, mods, 3);
    pg_tensor *x = randt(PG_SHAPE(2, 6, 8), 1, false);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mha_forward(g, m, x, NULL, NULL);
    const char *names[] = {"pos.0.abs_pos_emb", "pos.1.rel_pos_emb", "pos.2.emb_w.rel_pos_emb",
                           "pos.2.emb_h.rel_pos_emb"};
    adam_step_changes(&m->base, g, pg_sum(g, pg_square(g, y), 0, NULL, false), names, 4);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->base);
}

Test(pos_rel_lm, one_block_adam_step)
{
    /* a 1-block causal LM on sequences of 6 = a 2 x 3 map; tokens from max_len */
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 1);
    c.dtype = PG_F64;
    c.max_len = 6;
    c.seed = 3;
    pg_rel1d_opts ro = {.heads = 2};
    pg_rel2d_opts to = {.height = 2, .width = 3, .scaled = true};
    c.n_layer_pos = 3;
    c.layer_pos[0] = (pg_posmod_spec){.make = pg_posmod_make_abs1d};
    c.layer_pos[1] = (pg_posmod_spec){.make = pg_posmod_make_rel1d, .opts = &ro};
    c.layer_pos[2] = (pg_posmod_spec){.make = pg_posmod_make_rel2d, .opts = &to};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    assert_shape(pg_module_find_param(&lm->base, "blocks.0.attn.pos.0.abs_pos_emb"), 2, (int64_t[]){6, 4});
    assert_shape(pg_module_find_param(&lm->base, "blocks.0.attn.pos.1.rel_pos_emb"), 3, (int64_t[]){2, 11, 4});
    pg_tensor *ids = TI64(PG_SHAPE(2, 6), 1, 5, 2, 9, 0, 3, 10, 4, 4, 7, 6, 2);
    pg_tensor *tg = TI64(PG_SHAPE(2, 6), 5, 2, 9, 0, 3, 8, 4, 4, 7, 6, 2, 1);
    pg_graph *g = pg_graph_new();
    pg_tensor *loss = pg_lm_loss(g, lm, ids, tg, NULL);
    const char *names[] = {"blocks.0.attn.pos.0.abs_pos_emb", "blocks.0.attn.pos.1.rel_pos_emb",
                           "blocks.0.attn.pos.2.emb_w.rel_pos_emb", "blocks.0.attn.pos.2.emb_h.rel_pos_emb"};
    adam_step_changes(&lm->base, g, loss, names, 4);
    /* explicit i64 positions with left padding also run; float positions are refused */
    pg_graph_reset(g);
    pg_tensor *pos = TI64(PG_SHAPE(2, 5), 0, 1, 2, 3, 4, 1, 2, 3, 4, 5), *fpos = pg_tensor_cast(NULL, pos, PG_F64);
    cr_assert_not_null(pg_lm_loss(g, lm, ids, tg, &(pg_attn_args){.pos = pos}), "%s", pg_graph_error(g));
    ASSERT_FAILS(pg_lm_forward(NULL, lm, ids, &(pg_attn_args){.pos = fpos}),
                 "abs1d: pos is f64[2,5]: positions index a learned table and must be i64");
    pg_graph_free(g);
    pg_tensor *own[] = {ids, tg, pos, fpos};
    free_all(4, own);
    pg_module_free(&lm->base);
}

/* ---- bad input ------------------------------------------------------------------------------------ */

Test(pos_rel, bad_options)
{
    pg_rng r = pg_rng_init(1);
    pg_posmod_args a = {.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64, .rng = &r};
    ASSERT_FAILS(pg_posmod_make_abs1d(&a), "pg_posmod_make_abs1d: tokens must be >= 1 (opts.tokens 0, args.max_len 0)");
    pg_rel1d_opts ro = {.tokens = 4, .heads = 3};
    a.opts = &ro;
    ASSERT_FAILS(pg_posmod_make_rel1d(&a), "pg_posmod_make_rel1d: heads 3 must be 0 (shared table) or the attention's 2 heads");
    ro.heads = -1;
    ASSERT_FAILS(pg_posmod_make_rel1d(&a), "heads -1 must be 0");
    ro = (pg_rel1d_opts){.tokens = -2};
    ASSERT_FAILS(pg_posmod_make_rel1d(&a), "tokens must be >= 1 (opts.tokens -2");
    ro = (pg_rel1d_opts){.tokens = 4, .dim_head = -1};
    ASSERT_FAILS(pg_posmod_make_rel1d(&a), "dim_head must be >= 1 (opts.dim_head -1, args.head_dim 4)");
    pg_rel2d_opts to = {.height = 0, .width = 3};
    a.opts = &to;
    ASSERT_FAILS(pg_posmod_make_rel2d(&a), "pg_posmod_make_rel2d: the feature map needs height, width >= 1, got 0 x 3");
    to = (pg_rel2d_opts){.height = 2, .width = 3, .aisummer = true};
    ASSERT_FAILS(pg_posmod_make_rel2d(&a), "the aisummer form needs a square map, got 2 x 3");
    a.opts = NULL;
    a.max_len = 4;
    a.rng = NULL;
    ASSERT_FAILS(pg_posmod_make_abs1d(&a), "need a float dtype and a generator (dtype f64, rng NULL)");
    a.rng = &r;
    a.dtype = PG_I64;
    ASSERT_FAILS(pg_posmod_make_rel1d(&a), "need a float dtype");
    a.dtype = PG_F64;
    a.head_dim = 0;
    ASSERT_FAILS(pg_posmod_make_rel1d(&a), "dim_head must be >= 1");
    ASSERT_FAILS(pg_posmod_make_abs1d(NULL), "args is NULL");
    ASSERT_FAILS(pg_rel1d_new(0, 4, 0, PG_F64, &r), "pg_rel1d_new: tokens must be >= 1, got 0");
    ASSERT_FAILS(pg_abs1d_new(0, 4, PG_F64, &r), "pg_abs1d_new: tokens must be >= 1, got 0");
}

Test(pos_rel, bad_forward_input)
{
    pg_abs1d_opts ao = {.tokens = 4};
    pg_rel1d_opts ro = {.tokens = 4, .heads = 2};
    pg_rel2d_opts to = {.height = 2, .width = 2}, ai = {.height = 2, .width = 2, .aisummer = true};
    pg_posmod *a = make(pg_posmod_make_abs1d, &ao, 2, 3, 0), *r = make(pg_posmod_make_rel1d, &ro, 2, 3, 0),
              *t = make(pg_posmod_make_rel2d, &to, 2, 3, 0), *s = make(pg_posmod_make_rel2d, &ai, 2, 3, 0);
    pg_tensor *q = randt(PG_SHAPE(2, 2, 4, 3), 1, false), *q5 = randt(PG_SHAPE(2, 2, 5, 3), 2, false),
              *qd = randt(PG_SHAPE(2, 2, 4, 2), 3, false), *qh = randt(PG_SHAPE(2, 3, 4, 3), 4, false),
              *q32 = pg_tensor_cast(NULL, q, PG_F32);
    pg_pos_ctx c = ctx_for(q, 4, NULL, NULL, true, 1), c5 = ctx_for(q5, 5, NULL, NULL, true, 1);
    /* float positions */
    pg_tensor *fp = T64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0, 1, 2, 3);
    pg_pos_ctx cf = ctx_for(q, 4, fp, fp, true, 1);
    ASSERT_FAILS(pg_posrel_logits(NULL, r, q, &cf),
                 "rel1d: pos is f64[2,4]: positions index a learned table and must be i64 (float positions are not supported)");
    /* positions outside the tables */
    pg_tensor *p4 = TI64(PG_SHAPE(2, 4), 0, 1, 2, 4, 0, 1, 2, 3);
    pg_pos_ctx cp = ctx_for(q, 4, p4, p4, true, 1);
    ASSERT_FAILS(pg_posrel_logits(NULL, a, q, &cp), "abs1d: key position 4 (batch 0, index 3) is outside the table [0, 4)");
    ASSERT_FAILS(pg_posrel_logits(NULL, r, q, &cp),
                 "rel1d: distance key - query = 4 (batch 0, query 0, key 3) is outside the table's range [-3, 3] (tokens 4)");
    ASSERT_FAILS(pg_posrel_logits(NULL, t, q, &cp), "rel2d: query position 4 (batch 0) is outside the 2 x 2 map [0, 4)");
    pg_tensor *neg = TI64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0, -1, 2, 3);
    pg_pos_ctx cn = ctx_for(q, 4, neg, neg, true, 1);
    ASSERT_FAILS(pg_posrel_logits(NULL, a, q, &cn), "abs1d: key position -1 (batch 1, index 1)");
    /* default positions longer than the tables */
    ASSERT_FAILS(pg_posrel_logits(NULL, a, q5, &c5), "abs1d: 5 keys but the table holds 4 positions (tokens)");
    ASSERT_FAILS(pg_posrel_logits(NULL, r, q5, &c5),
                 "rel1d: sequence length 5 but the table covers distances up to 3 (tokens 4)");
    ASSERT_FAILS(pg_posrel_logits(NULL, t, q5, &c5), "rel2d: 5 queries / 5 keys but the 2 x 2 map has 4 cells");
    /* positions longer than the sequence (the context check) */
    pg_tensor *p5 = TI64(PG_SHAPE(2, 5), 0, 1, 2, 3, 3, 0, 1, 2, 3, 3);
    pg_pos_ctx cl = ctx_for(q, 4, p5, p5, true, 1);
    ASSERT_FAILS(pg_posrel_logits(NULL, r, q, &cl), "pg_posrel_logits: pos is i64[2,5], expected (B, Lp) = (2, <= 4)");
    /* q of the wrong width, heads, dtype */
    ASSERT_FAILS(pg_posrel_logits(NULL, r, qd, &c), "rel1d: q is f64[2,2,4,2], expected (B, heads, Lq, dim_head) = (2, 2, 4, 3) of f64");
    pg_pos_ctx ch = ctx_for(qh, 4, NULL, NULL, true, 1);
    ASSERT_FAILS(pg_posrel_logits(NULL, r, qh, &ch), "rel1d: q is f64[2,3,4,3], expected (B, heads, Lq, dim_head) = (2, 2, 4, 3)");
    ASSERT_FAILS(pg_posrel_logits(NULL, a, q32, &c), "expected (B, heads, Lq, dim_head) = (2, H, 4, 3) of f64");
    /* the AI Summer form needs the whole map and default positions */
    pg_tensor *p3 = TI64(PG_SHAPE(2, 3), 0, 1, 2, 0, 1, 2);
    pg_pos_ctx c3 = ctx_for(q, 4, p3, p3, true, 1);
    ASSERT_FAILS(pg_posrel_logits(NULL, s, q, &c3), "rel2d: the aisummer form needs default positions and Lq = Lk = 4");
    pg_tensor *qs = randt(PG_SHAPE(2, 2, 3, 3), 5, false);
    pg_pos_ctx cs = ctx_for(qs, 3, NULL, NULL, true, 1);
    ASSERT_FAILS(pg_posrel_logits(NULL, s, qs, &cs), "got Lq 3, Lk 3");
    /* not one of these modules; a mask of the wrong shape through attention */
    pg_posmod *qm = qscale_new();
    ASSERT_FAILS(pg_posrel_logits(NULL, qm, q, &c), "pg_posrel_logits: module TestQScale is not abs1d, rel1d or rel2d");
    pg_module_free(&qm->base);
    pg_posmod *mods[] = {r};
    pg_mha *m = mha_with(6, 2, false, false, mods, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 4, 6), 6, false), *mask = key_mask();
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.mask = mask}),
                 "mask is bool[2,5], expected a bool key mask (B, Lk) = (2, 4)");
    pg_tensor *own[] = {q, q5, qd, qh, q32, fp, p4, neg, p5, p3, qs, x, mask};
    free_all(13, own);
    pg_module_free(&m->base);
    pg_module_free(&a->base);
    pg_module_free(&t->base);
    pg_module_free(&s->base);
}

Test(pos_rel, f32_agrees_with_f64)
{
    pg_rng r64 = pg_rng_init(5), r32 = pg_rng_init(5);
    pg_posmod *m64[] = {pg_rel1d_new(5, 3, 2, PG_F64, &r64), pg_rel2d_new(2, 2, 3, 0, PG_F64, &r64),
                        pg_abs1d_new(4, 3, PG_F64, &r64)};
    pg_posmod *m32[] = {pg_rel1d_new(5, 3, 2, PG_F32, &r32), pg_rel2d_new(2, 2, 3, 0, PG_F32, &r32),
                        pg_abs1d_new(4, 3, PG_F32, &r32)};
    pg_tensor *q = randt(PG_SHAPE(2, 2, 4, 3), 1, false), *q32 = pg_tensor_cast(NULL, q, PG_F32);
    pg_pos_ctx c = ctx_for(q, 4, NULL, NULL, true, 1);
    for (int i = 0; i < 3; i++) {
        cr_assert_not_null(m64[i], "%s", pg_last_error());
        for (int w = 0; w < 2; w++)
            if (pg_posrel_table(m64[i], w))
                pg_copy_into(pg_posrel_table(m32[i], w), pg_posrel_table(m64[i], w));
        c.dtype = PG_F64;
        pg_tensor *a = pg_posrel_logits(NULL, m64[i], q, &c);
        c.dtype = PG_F32;
        pg_tensor *b = pg_posrel_logits(NULL, m32[i], q32, &c);
        cr_assert_not_null(b, "%s", pg_last_error());
        cr_assert_eq(b->dtype, PG_F32);
        cr_assert_lt(max_err(b, a), 1e-6);
        pg_tensor_free(a);
        pg_tensor_free(b);
        pg_module_free(&m64[i]->base);
        pg_module_free(&m32[i]->base);
    }
    pg_tensor_free(q);
    pg_tensor_free(q32);
}
