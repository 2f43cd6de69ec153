/* The positional protocol (nn/posmod.c), the attention math and
 * MultiheadAttention (nn/attention.c): call order of the hooks with trivial
 * test modules defined here, gradients reaching their parameters, PyTorch
 * parity (tests/fixtures/gen_attention.py: attn_sdpa, attn_mha), fully masked
 * rows, gradchecks w.r.t. inputs and every parameter, bad input. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "../nn/attention.h"
#include "testutil.h"

/* ===================================================================================
 * trivial positional modules (the schemes proper are the next issue)
 * =================================================================================== */

typedef enum { QSCALE, HEADSLOPE, ADDVEC, XLISH, BADBIAS, BADQKV } tkind;

typedef struct tmod {
    pg_posmod pm;
    char id;          /* letter in the call log */
    char *log;        /* shared call log: "<id><hook> " per call, hook x / q / b; may be NULL */
    pg_tensor *p0, *p1;
    pg_tensor *in_q;   /* q handed to mod_qkv */
    pg_tensor *out_q;  /* q mod_qkv returned */
    pg_tensor *bias_q; /* q handed to mod_bias */
} tmod;

static void tlog(tmod *t, char hook)
{
    if (t->log)
        sprintf(t->log + strlen(t->log), "%c%c ", t->id, hook);
}

/* QSCALE: q <- q * scale (scale (1)) */
static int qscale_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c)
{
    (void)k, (void)v, (void)c;
    tmod *t = (tmod *)m;
    tlog(t, 'q');
    t->in_q = *q;
    *q = t->out_q = pg_mul(g, *q, t->p0);
    return *q ? 0 : -1;
}

/* HEADSLOPE: bias[b, h, i, j] = slope[h] * (pos_q[i] - pos_k[j]), slope (H, 1, 1) */
static pg_tensor *headslope_table(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c)
{
    tmod *t = (tmod *)m;
    pg_tensor *d = pg_pos_pad_bias(g, pg_pos_delta(g, c, c->dtype), c->Lq, c->Lk); /* (B, Lq, Lk) */
    return pg_mul(g, t->p0, pg_reshape(g, d, PG_SHAPE(c->B, 1, c->Lq, c->Lk)));
}
static pg_tensor *headslope_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                                 const pg_pos_ctx *c)
{
    (void)k, (void)v;
    tmod *t = (tmod *)m;
    tlog(t, 'b');
    t->bias_q = q;
    return headslope_table(g, m, c);
}

/* ADDVEC: x <- x + vec (dim) */
static pg_tensor *addvec_x(pg_graph *g, pg_posmod *m, pg_tensor *x, const pg_pos_ctx *c)
{
    (void)c;
    tmod *t = (tmod *)m;
    tlog(t, 'x');
    return pg_add(g, x, t->p0);
}

/* XLISH (both hooks, bias from the modified q and the positions):
 *   mod_qkv: q <- q + u, u (H, 1, Dh)
 *   mod_bias: bias[b, h, i, j] = (q[b, h, i, :] . w[h, :]) * delta[b, i, j], w (H, Dh, 1),
 *             delta = pos_q[i] - pos_k[j], zero rows / columns for un-positioned tokens */
static int xlish_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c)
{
    (void)k, (void)v, (void)c;
    tmod *t = (tmod *)m;
    tlog(t, 'q');
    t->in_q = *q;
    *q = t->out_q = pg_add(g, *q, t->p0);
    return *q ? 0 : -1;
}
static pg_tensor *xlish_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)k, (void)v;
    tmod *t = (tmod *)m;
    tlog(t, 'b');
    t->bias_q = q;
    pg_tensor *qw = pg_matmul(g, q, t->p1, false, false);                         /* (B, H, Lq, 1) */
    pg_tensor *d = pg_pos_pad_bias(g, pg_pos_delta(g, c, c->dtype), c->Lq, c->Lk); /* (B, Lq, Lk) */
    d = pg_reshape(g, d, PG_SHAPE(c->B, 1, c->Lq, c->Lk));
    return pg_mul(g, qw, d);
}

/* BADBIAS: a (H + 1, 1, 1) bias; BADQKV: drops channels of q */
static pg_tensor *badbias_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                               const pg_pos_ctx *c)
{
    (void)m, (void)q, (void)k, (void)v;
    return pg_zeros(g, c->dtype, PG_SHAPE(c->heads + 1, 1, 1));
}
static int badqkv_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c)
{
    (void)m, (void)k, (void)v, (void)c;
    *q = pg_narrow(g, *q, 3, 0, 1);
    return 0;
}

static const pg_posmod_ops OPS[] = {
    [QSCALE] = {.mod_qkv = qscale_qkv},
    [HEADSLOPE] = {.mod_bias = headslope_bias, .bias_table = headslope_table},
    [ADDVEC] = {.mod_x = addvec_x},
    [XLISH] = {.mod_qkv = xlish_qkv, .mod_bias = xlish_bias},
    [BADBIAS] = {.mod_bias = badbias_bias},
    [BADQKV] = {.mod_qkv = badqkv_qkv},
};
static const char *const TYPES[] = {"TestQScale", "TestHeadSlope", "TestAddVec", "TestXLish", "TestBadBias",
                                    "TestBadQKV"};

static pg_tensor *tparam(tmod *t, const char *name, int ndim, const int64_t *shape, pg_rng *r)
{
    pg_tensor *p = pg_module_new_param(&t->pm.base, name, PG_F64, ndim, shape);
    cr_assert_not_null(p, "%s", pg_last_error());
    pg_fill_uniform(p, r, -0.8, 0.8);
    return p;
}

/* A test module for heads H of width Dh in a model of width dim. */
static tmod *tmod_new(tkind kind, char id, char *log, int64_t H, int64_t Dh, int64_t dim, uint64_t seed)
{
    tmod *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    pg_posmod_init(&t->pm, TYPES[kind], &OPS[kind], NULL);
    t->id = id;
    t->log = log;
    pg_rng r = pg_rng_init(seed);
    switch (kind) {
    case QSCALE:
        t->p0 = tparam(t, "scale", PG_SHAPE(1), &r);
        pg_fill(t->p0, 1.3);
        break;
    case HEADSLOPE: t->p0 = tparam(t, "slope", PG_SHAPE(H, 1, 1), &r); break;
    case ADDVEC: t->p0 = tparam(t, "vec", PG_SHAPE(dim), &r); break;
    case XLISH:
        t->p0 = tparam(t, "u", PG_SHAPE(H, 1, Dh), &r);
        t->p1 = tparam(t, "w", PG_SHAPE(H, Dh, 1), &r);
        break;
    default: break;
    }
    return t;
}

/* ===================================================================================
 * helpers
 * =================================================================================== */

static pg_mha *mha_f64(int64_t dim, int64_t heads, bool cross, int64_t ctx_dim, bool causal, pg_posmod *const *pos,
                       int n_pos, uint64_t seed)
{
    pg_mha_config c = pg_mha_defaults(dim, heads);
    c.cross = cross;
    c.context_dim = ctx_dim;
    c.causal = causal;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(seed);
    pg_mha *m = pg_mha_new(&c, pos, n_pos, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* ===================================================================================
 * the protocol
 * =================================================================================== */

Test(posmod, call_order_and_what_each_hook_sees)
{
    char log[128] = "";
    tmod *x1 = tmod_new(XLISH, '1', log, 2, 4, 8, 1), *v = tmod_new(ADDVEC, 'V', log, 2, 4, 8, 2),
         *x2 = tmod_new(XLISH, '2', log, 2, 4, 8, 3), *hb = tmod_new(HEADSLOPE, 'H', log, 2, 4, 8, 4);
    pg_posmod *mods[] = {&x1->pm, &v->pm, &x2->pm, &hb->pm};
    pg_mha *m = mha_f64(8, 2, false, 0, true, mods, 4, 5);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 6, false);
    pg_graph *g = pg_graph_new();
    /* mod_x of every module in order (the block does this before its pre-norm), then the attention */
    pg_tensor *xp = pg_posmod_apply_x(g, m->pos, m->n_pos, x, NULL, NULL, 2, 4, NULL);
    cr_assert_not_null(pg_mha_forward(g, m, xp, NULL, NULL), "%s", pg_graph_error(g));
    cr_assert_str_eq(log, "Vx 1q 1b 2q 2b Hb ");
    /* mod_bias sees the q of its own module's mod_qkv; the next module gets that q */
    cr_assert_eq(x1->bias_q, x1->out_q);
    cr_assert_eq(x2->in_q, x1->out_q);
    cr_assert_eq(x2->bias_q, x2->out_q);
    cr_assert_eq(hb->bias_q, x2->out_q);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->base);
}

Test(posmod, names_of_one_and_several_modules)
{
    pg_posmod *one[] = {&tmod_new(HEADSLOPE, 'a', NULL, 2, 4, 8, 1)->pm};
    pg_mha *m = mha_f64(8, 2, false, 0, false, one, 1, 1);
    pg_tensor_list p = pg_module_parameters(&m->base);
    const char *want1[] = {"to_qkv.weight", "to_qkv.bias", "to_out.weight", "to_out.bias", "pos.slope"};
    cr_assert_eq(p.n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_str_eq(p.names[i], want1[i]);
    pg_tensor_list_free(&p);
    pg_module_free(&m->base);

    pg_posmod *two[] = {&tmod_new(QSCALE, 'a', NULL, 2, 4, 8, 1)->pm, &tmod_new(XLISH, 'b', NULL, 2, 4, 8, 2)->pm};
    m = mha_f64(8, 2, false, 0, false, two, 2, 1);
    p = pg_module_parameters(&m->base);
    cr_assert_eq(p.n, 7);
    cr_assert_str_eq(p.names[4], "pos.0.scale");
    cr_assert_str_eq(p.names[5], "pos.1.u");
    cr_assert_str_eq(p.names[6], "pos.1.w");
    cr_assert_eq(m->n_pos, 2);
    cr_assert_eq(m->pos[1], two[1]);
    pg_tensor_list_free(&p);
    pg_module_free(&m->base);
}

/* ctx for the gradchecks below */
typedef struct mha_case {
    pg_mha *m;
    int n_fixed;       /* leading inputs that are not parameters: x, [context], [bias] */
    bool cross, bias;  /* context in inputs[1]; user bias after x (and context) */
    pg_tensor *mask, *pos, *pos_q, *pos_k;
} mha_case;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const mha_case *c = ctx;
    pg_attn_args a = {.mask = c->mask, .pos = c->pos, .pos_q = c->pos_q, .pos_k = c->pos_k};
    if (c->bias)
        a.bias = in[c->cross ? 2 : 1];
    return pg_mha_forward(g, c->m, in[0], c->cross ? in[1] : NULL, &a);
}

Test(posmod, gradients_reach_the_modules)
{
    /* three test modules, causal, key mask, positions shorter than L (left padding, float) */
    pg_posmod *mods[] = {&tmod_new(QSCALE, 'a', NULL, 2, 3, 6, 1)->pm, &tmod_new(HEADSLOPE, 'b', NULL, 2, 3, 6, 2)->pm,
                         &tmod_new(XLISH, 'c', NULL, 2, 3, 6, 3)->pm};
    pg_mha *m = mha_f64(6, 2, false, 0, true, mods, 3, 4);
    pg_tensor *pos = T64(PG_SHAPE(2, 4), 0.5, 1.0, 2.5, 3.0, 2.0, 1.0, 0.0, -1.0);
    mha_case c = {m, 1, false, false, key_mask(), pos, NULL, NULL};
    pg_tensor *in[64] = {randt(PG_SHAPE(2, 5, 6), 5, true)};
    int n = with_params(in, 1, &m->base);
    cr_assert_eq(n, 1 + 4 + 1 + 1 + 2);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_mha, n, in, &c, &o);
    /* and the modules' parameters do get a nonzero gradient */
    pg_graph *g = pg_graph_new();
    pg_tensor *y = call_mha(g, in, n, &c);
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    for (int i = 5; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < in[i]->grad->numel; j++)
            s += fabs(pg_get(in[i]->grad, j));
        cr_assert_gt(s, 0, "module parameter %d got no gradient", i);
    }
    pg_graph_free(g);
    pg_tensor *own[] = {in[0], pos, c.mask};
    free_all(3, own);
    pg_module_free(&m->base);
}

static pg_tensor *call_apply_x(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    tmod *t = ctx;
    pg_posmod *mods[] = {&t->pm};
    return pg_posmod_apply_x(g, mods, 1, in[0], NULL, NULL, 0, 0, NULL);
}

Test(posmod, mod_x_gradcheck_and_values)
{
    tmod *t = tmod_new(ADDVEC, 'v', NULL, 0, 0, 3, 1);
    pg_tensor *in[] = {randt(PG_SHAPE(2, 2, 3), 2, true), t->p0};
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_apply_x, 2, in, t, &o);
    pg_tensor *y = call_apply_x(NULL, in, 2, t);
    for (int64_t i = 0; i < 12; i++)
        cr_assert_float_eq(pg_get(y, i), pg_get(in[0], i) + pg_get(t->p0, i % 3), 1e-15);
    /* no module with mod_x: x itself */
    pg_posmod *none[] = {&tmod_new(HEADSLOPE, 'h', NULL, 2, 1, 3, 1)->pm};
    pg_graph *g = pg_graph_new();
    cr_assert_eq(pg_posmod_apply_x(g, none, 1, in[0], NULL, NULL, 0, 0, NULL), in[0]);
    pg_graph_free(g);
    pg_tensor_free(y);
    pg_tensor_free(in[0]);
    pg_module_free(&t->pm.base);
    pg_module_free(&none[0]->base);
}

Test(posmod, bias_table)
{
    tmod *t = tmod_new(HEADSLOPE, 'h', NULL, 2, 4, 8, 1);
    pg_graph *g = pg_graph_new();
    pg_pos_ctx c = {.self_attn = true, .B = 1, .heads = 2, .head_dim = 4, .Lq = 3, .Lk = 4, .dtype = PG_F64};
    pg_tensor *b = pg_posmod_bias_table(g, &t->pm, &c); /* slope[h] * (i - j) */
    assert_shape(b, 4, (int64_t[]){1, 2, 3, 4});
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 4; j++)
                cr_assert_float_eq(pg_get(b, (h * 3 + i) * 4 + j), pg_get(t->p0, h) * (double)(i - j), 1e-15);
    tmod *q = tmod_new(QSCALE, 'q', NULL, 2, 4, 8, 1);
    cr_assert_null(pg_posmod_bias_table(g, &q->pm, &c));
    cr_assert(strstr(pg_last_error(), "TestQScale has no bias_table hook"), "%s", pg_last_error());
    c.Lk = 0;
    cr_assert_null(pg_posmod_bias_table(g, &t->pm, &c));
    cr_assert(strstr(pg_last_error(), "bad sizes"), "%s", pg_last_error());
    pg_graph_free(g);
    pg_module_free(&t->pm.base);
    pg_module_free(&q->pm.base);
}

static pg_posmod *make_headslope(const pg_posmod_args *a)
{
    return &tmod_new(HEADSLOPE, 'h', NULL, a->heads, a->head_dim, a->dim, 7)->pm;
}

Test(posmod, registry)
{
    const char *names[4];
    int n = pg_posmod_kinds(names, 4);
    cr_assert_geq(n, 0);
    for (int i = 0; i < n && i < 4; i++)
        cr_assert_not_null(pg_posmod_lookup(names[i]));
    cr_assert_null(pg_posmod_lookup("no_such_scheme"));
    pg_posmod_args a = {.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64};
    pg_posmod_spec bad = {"no_such_scheme", NULL, NULL};
    ASSERT_FAILS(pg_posmod_from_spec(&bad, &a), "unknown positional module kind \"no_such_scheme\"");
    pg_posmod_spec own = {NULL, make_headslope, NULL};
    pg_posmod *m = pg_posmod_from_spec(&own, &a);
    cr_assert_not_null(m, "%s", pg_last_error());
    cr_assert_str_eq(m->base.type, "TestHeadSlope");
    cr_assert_eq(((tmod *)m)->p0->shape[0], 2);
    pg_module_free(&m->base);
}

Test(posmod, position_helpers)
{
    pg_graph *g = pg_graph_new();
    /* defaults 0..L-1 per batch element; i64 positions cast to f64 */
    pg_tensor *d = pg_pos_resolve(g, NULL, 2, 3, PG_F64);
    ASSERT_VALUES(d, 0, 0, 1, 2, 0, 1, 2);
    pg_tensor *pi = TI64(PG_SHAPE(2, 2), 5, 7, -1, 4);
    pg_tensor *r = pg_pos_resolve(g, pi, 2, 3, PG_F64);
    cr_assert_eq(r->dtype, PG_F64);
    ASSERT_VALUES(r, 0, 5, 7, -1, 4);
    /* delta over positioned tokens, then padded: the first query / key has no position */
    pg_pos_ctx c = {.pos_q = pi, .pos_k = pi, .self_attn = true, .B = 2, .Lq = 3, .Lk = 3, .dtype = PG_F64};
    pg_tensor *delta = pg_pos_delta(g, &c, PG_F64);
    assert_shape(delta, 3, (int64_t[]){2, 2, 2});
    ASSERT_VALUES(delta, 0, 0, -2, 2, 0, 0, -5, 5, 0);
    pg_tensor *pad = pg_pos_pad_bias(g, delta, 3, 3);
    assert_shape(pad, 3, (int64_t[]){2, 3, 3});
    ASSERT_VALUES(pad, 0, 0, 0, 0, 0, 0, -2, 0, 2, 0, 0, 0, 0, 0, 0, -5, 0, 5, 0);
    /* bad positions */
    pg_tensor *longer = TI64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0, 1, 2, 3), *b = TBOOL(PG_SHAPE(2, 2), 1, 1, 1, 1);
    ASSERT_FAILS(pg_pos_resolve(g, longer, 2, 3, PG_F64), "pos is i64[2,4], expected (B, Lp) = (2, <= 3)");
    ASSERT_FAILS(pg_pos_resolve(g, pi, 3, 3, PG_F64), "pos is i64[2,2], expected (B, Lp) = (3, <= 3)");
    ASSERT_FAILS(pg_pos_resolve(g, b, 2, 3, PG_F64), "of f32, f64 or i64");
    ASSERT_FAILS(pg_pos_pad_bias(g, delta, 1, 3), "expected (..., <= 1, <= 3)");
    pg_tensor *own[] = {pi, longer, b};
    free_all(3, own);
    pg_graph_free(g);
}

Test(posmod, bad_module_output_is_named)
{
    pg_posmod *bb[] = {&tmod_new(BADBIAS, 'b', NULL, 2, 4, 8, 1)->pm};
    pg_mha *m = mha_f64(8, 2, false, 0, false, bb, 1, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 2, false);
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, NULL),
                 "pg_mha_forward: positional module 0 (TestBadBias) gave a bias that is f64[3,1,1], expected f64 "
                 "broadcastable to (B, H, Lq, Lk) = (2, 2, 5, 5)");
    pg_module_free(&m->base);
    pg_posmod *bq[] = {&tmod_new(BADQKV, 'q', NULL, 2, 4, 8, 1)->pm};
    m = mha_f64(8, 2, false, 0, false, bq, 1, 1);
    pg_graph *g = pg_graph_new();
    ASSERT_FAILS(pg_mha_forward(g, m, x, NULL, NULL), "positional module 0 (TestBadQKV): mod_qkv must keep the shapes");
    pg_graph_free(g);
    pg_module_free(&m->base);
    pg_tensor_free(x);
}

/* ===================================================================================
 * the attention math
 * =================================================================================== */

Test(attention, matches_torch)
{
    pg_tensor_list l = fixture("attn_sdpa.safetensors");
    pg_tensor *q = fx_copy(&l, "q", true), *k = fx_copy(&l, "k", true), *v = fx_copy(&l, "v", true),
              *bias = fx_copy(&l, "bias", true);
    pg_tensor *in[] = {q, k, v, bias};
    const char *names[] = {"q", "k", "v", "bias"};
    pg_graph *g = pg_graph_new();
    for (int full = 0; full < 2; full++) {
        const char *cs = full ? "full" : "plain";
        pg_graph_reset(g);
        pg_sdpa_opts o = {0};
        if (full)
            o = (pg_sdpa_opts){bias, fx(&l, "mask"), true, 0.7, 0, NULL};
        pg_tensor *out = pg_attention(g, q, k, v, &o);
        assert_close(out, fx(&l, "%s.out", cs), 1e-10, "out");
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "dy")), 0, "%s", pg_graph_error(g));
        for (int i = 0; i < 3 + full; i++) {
            assert_close(in[i]->grad, fx(&l, "%s.grad.%s", cs, names[i]), 1e-9, names[i]);
            pg_zero_grad(in[i]);
        }
        if (full) /* batch 1, query 0 sees no key (key 0 masked, causal): output 0 */
            for (int h = 0; h < 2; h++)
                for (int d = 0; d < 3; d++)
                    cr_assert_eq(pg_get(out, ((1 * 2 + h) * 4 + 0) * 3 + d), 0.0);
    }
    pg_graph_free(g);
    free_all(4, in);
    pg_tensor_list_free_all(&l);
}

Test(attention, fully_masked_rows_give_zero_and_no_gradient)
{
    pg_tensor *q = randt(PG_SHAPE(2, 1, 3, 2), 1, true), *k = randt(PG_SHAPE(2, 1, 4, 2), 2, true),
              *v = randt(PG_SHAPE(2, 1, 4, 2), 3, true), *bias = randt(PG_SHAPE(2, 1, 3, 4), 4, true);
    pg_tensor *mask = TBOOL(PG_SHAPE(2, 4), 1, 0, 1, 1, 0, 0, 0, 0); /* batch 1: every key hidden */
    pg_graph *g = pg_graph_new();
    pg_sdpa_opts o = {bias, mask, false, 0, 0, NULL};
    pg_tensor *out = pg_attention(g, q, k, v, &o);
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, out, out), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    for (int64_t i = 6; i < 12; i++) /* batch 1 outputs */
        cr_assert_eq(pg_get(out, i), 0.0);
    pg_tensor *ts[] = {q, k, v, bias};
    for (int t = 0; t < 4; t++) {
        int64_t half = ts[t]->numel / 2;
        for (int64_t i = 0; i < ts[t]->numel; i++) {
            double gv = pg_get(ts[t]->grad, i);
            cr_assert(!isnan(gv), "NaN gradient");
            if (i >= half)
                cr_assert_eq(gv, 0.0, "batch 1 gradient of input %d is %g", t, gv);
        }
    }
    /* hidden key 1 of batch 0 gets no gradient through k, v or the bias */
    for (int64_t d = 0; d < 2; d++) {
        cr_assert_eq(pg_get(k->grad, 1 * 2 + d), 0.0);
        cr_assert_eq(pg_get(v->grad, 1 * 2 + d), 0.0);
    }
    for (int64_t i = 0; i < 3; i++)
        cr_assert_eq(pg_get(bias->grad, i * 4 + 1), 0.0);
    pg_graph_free(g);
    pg_tensor *own[] = {q, k, v, bias, mask};
    free_all(5, own);
}

Test(attention, causal_keeps_the_diagonal)
{
    /* one head, Lq = Lk = 3, v = identity rows: out[i] is the weight row of query i */
    pg_tensor *q = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1, 1, 3, 1), 0.0), *k = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1, 1, 3, 1), 0.0);
    pg_tensor *v = T64(PG_SHAPE(1, 1, 3, 3), 1, 0, 0, 0, 1, 0, 0, 0, 1);
    pg_sdpa_opts o = {.causal = true};
    pg_tensor *out = pg_attention(NULL, q, k, v, &o);
    ASSERT_VALUES(out, 1e-15, 1, 0, 0, 0.5, 0.5, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3);
    pg_tensor *own[] = {q, k, v, out};
    free_all(4, own);
}

typedef struct sdpa_case {
    pg_tensor *mask;
    bool causal;
} sdpa_case;

static pg_tensor *call_sdpa(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const sdpa_case *c = ctx;
    pg_sdpa_opts o = {in[3], c->mask, c->causal, 0.6, 0, NULL};
    return pg_attention(g, in[0], in[1], in[2], &o);
}

Test(attention, gradcheck)
{
    pg_tensor *in[] = {randt(PG_SHAPE(2, 2, 4, 3), 1, true), randt(PG_SHAPE(2, 2, 5, 3), 2, true),
                       randt(PG_SHAPE(2, 2, 5, 2), 3, true), randt(PG_SHAPE(2, 1, 4, 5), 4, true)};
    sdpa_case c = {key_mask(), true};
    assert_gradcheck(call_sdpa, 4, in, &c, NULL); /* f64 and the f32 leg */
    c.causal = false;
    assert_gradcheck(call_sdpa, 4, in, &c, NULL);
    free_all(4, in);
    pg_tensor_free(c.mask);
}

Test(attention, dropout_is_seeded)
{
    pg_tensor *q = randt(PG_SHAPE(1, 2, 4, 3), 1, false), *k = randt(PG_SHAPE(1, 2, 4, 3), 2, false),
              *v = randt(PG_SHAPE(1, 2, 4, 3), 3, false);
    pg_rng r1 = pg_rng_init(9), r2 = pg_rng_init(9);
    pg_sdpa_opts o1 = {.dropout = 0.5, .rng = &r1}, o2 = {.dropout = 0.5, .rng = &r2}, o0 = {0};
    pg_tensor *a = pg_attention(NULL, q, k, v, &o1), *b = pg_attention(NULL, q, k, v, &o2),
              *c = pg_attention(NULL, q, k, v, &o0);
    cr_assert_eq(max_err(a, b), 0.0);
    cr_assert_gt(max_err(a, c), 1e-3);
    ASSERT_FAILS(pg_attention(NULL, q, k, v, &(pg_sdpa_opts){.dropout = 0.5}), "dropout 0.5 needs a generator");
    pg_tensor *own[] = {q, k, v, a, b, c};
    free_all(6, own);
}

Test(attention, bad_input)
{
    pg_tensor *q = randt(PG_SHAPE(2, 2, 4, 3), 1, false), *k = randt(PG_SHAPE(2, 2, 5, 3), 2, false),
              *v = randt(PG_SHAPE(2, 2, 5, 3), 3, false), *q3 = randt(PG_SHAPE(2, 4, 3), 4, false),
              *k2 = randt(PG_SHAPE(2, 2, 5, 2), 5, false), *v32 = pg_tensor_cast(NULL, v, PG_F32);
    pg_tensor *mask_f = randt(PG_SHAPE(2, 5), 6, false), *mask_s = TBOOL(PG_SHAPE(2, 4), 1, 1, 1, 1, 1, 1, 1, 1),
              *bias_b = randt(PG_SHAPE(3, 4, 5), 7, false);
    ASSERT_FAILS(pg_attention(NULL, q3, k, v, NULL), "pg_attention: expected q (B, H, Lq, Dh)");
    ASSERT_FAILS(pg_attention(NULL, q, k2, v, NULL), "got q f64[2,2,4,3], k f64[2,2,5,2], v f64[2,2,5,3]");
    ASSERT_FAILS(pg_attention(NULL, q, k, v32, NULL), "of one float dtype");
    ASSERT_FAILS(pg_attention(NULL, q, k, NULL, NULL), "pg_attention: v is NULL");
    ASSERT_FAILS(pg_attention(NULL, q, k, v, &(pg_sdpa_opts){.mask = mask_f}),
                 "mask is f64[2,5], expected a bool key mask (B, Lk) = (2, 5)");
    ASSERT_FAILS(pg_attention(NULL, q, k, v, &(pg_sdpa_opts){.mask = mask_s}), "mask is bool[2,4]");
    ASSERT_FAILS(pg_attention(NULL, q, k, v, &(pg_sdpa_opts){.bias = bias_b}),
                 "bias is f64[3,4,5], expected f64 broadcastable to (B, H, Lq, Lk) = (2, 2, 4, 5)");
    ASSERT_FAILS(pg_attention(NULL, q, k, v, &(pg_sdpa_opts){.scale = NAN}), "finite scale");
    pg_tensor *own[] = {q, k, v, q3, k2, v32, mask_f, mask_s, bias_b};
    free_all(9, own);
}

/* Softmax over zero keys is undefined: an empty key (or query) sequence is refused,
 * as pg_flash_attention refuses it (one rule for both). */
Test(attention, empty_sequences_refused)
{
    pg_tensor *q = randt(PG_SHAPE(1, 2, 4, 3), 1, false), *k = randt(PG_SHAPE(1, 2, 5, 3), 2, false),
              *v = randt(PG_SHAPE(1, 2, 5, 3), 3, false), *q0 = randt(PG_SHAPE(1, 2, 0, 3), 4, false),
              *k0 = randt(PG_SHAPE(1, 2, 0, 3), 5, false), *v0 = randt(PG_SHAPE(1, 2, 0, 3), 6, false);
    ASSERT_FAILS(pg_attention(NULL, q, k0, v0, NULL),
                 "pg_attention: expected q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv) of one float dtype, "
                 "all dims positive, got q f64[1,2,4,3], k f64[1,2,0,3], v f64[1,2,0,3]");
    ASSERT_FAILS(pg_attention(NULL, q0, k, v, NULL), "all dims positive, got q f64[1,2,0,3]");
    ASSERT_FAILS(pg_attention(NULL, q0, k0, v0, &(pg_sdpa_opts){.causal = true}), "pg_attention: expected q");
    pg_graph *g = pg_graph_new();
    ASSERT_FAILS(pg_attention(g, q, k0, v0, NULL), "k f64[1,2,0,3]");
    cr_assert(strstr(pg_graph_error(g), "pg_attention: expected q"), "%s", pg_graph_error(g));
    pg_graph_free(g);
    free_all(6, (pg_tensor *[]){q, k, v, q0, k0, v0});
}

/* ===================================================================================
 * MultiheadAttention
 * =================================================================================== */

Test(mha, self_attention_matches_torch)
{
    pg_tensor_list l = fixture("attn_mha.safetensors");
    pg_posmod *mods[] = {&tmod_new(QSCALE, 'q', NULL, 2, 4, 8, 1)->pm, &tmod_new(HEADSLOPE, 'h', NULL, 2, 4, 8, 2)->pm};
    pg_mha *m = mha_f64(8, 2, false, 0, false, mods, 2, 3);
    load_params(&m->base, &l, "self.");
    pg_tensor *x = fx_copy(&l, "self.x", true), *bias = fx_copy(&l, "self.bias", true);
    pg_graph *g = pg_graph_new();
    for (int full = 0; full < 2; full++) {
        const char *cs = full ? "self.full." : "self.plain.";
        pg_graph_reset(g);
        m->cfg.causal = full;
        pg_attn_args a = {0};
        if (full)
            a = (pg_attn_args){.mask = fx(&l, "self.mask"), .bias = bias};
        pg_tensor *out = pg_mha_forward(g, m, x, NULL, &a);
        assert_close(out, fx(&l, "%sout", cs), 1e-10, "out");
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "self.dy")), 0, "%s", pg_graph_error(g));
        assert_close(x->grad, fx(&l, "%sgrad.x", cs), 1e-9, "grad x");
        if (full)
            assert_close(bias->grad, fx(&l, "%sgrad.bias", cs), 1e-9, "grad bias");
        check_param_grads(&m->base, &l, cs, 1e-9);
        pg_zero_grad(x);
        pg_module_zero_grad(&m->base);
    }
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(bias);
    pg_module_free(&m->base);
    pg_tensor_list_free_all(&l);
}

Test(mha, cross_attention_matches_torch)
{
    pg_tensor_list l = fixture("attn_mha.safetensors");
    pg_mha *m = mha_f64(8, 2, true, 6, false, NULL, 0, 3);
    load_params(&m->base, &l, "cross.");
    pg_tensor *x = fx_copy(&l, "cross.x", true), *ctx = fx_copy(&l, "cross.context", true),
              *bias = fx_copy(&l, "cross.bias", true);
    pg_graph *g = pg_graph_new();
    pg_attn_args a = {.mask = fx(&l, "cross.mask"), .bias = bias};
    pg_tensor *out = pg_mha_forward(g, m, x, ctx, &a);
    assert_close(out, fx(&l, "cross.out"), 1e-10, "out");
    cr_assert_eq(pg_backward_with(g, out, fx(&l, "cross.dy")), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(&l, "cross.grad.x"), 1e-9, "grad x");
    assert_close(ctx->grad, fx(&l, "cross.grad.context"), 1e-9, "grad context");
    assert_close(bias->grad, fx(&l, "cross.grad.bias"), 1e-9, "grad bias");
    check_param_grads(&m->base, &l, "cross.", 1e-9);
    pg_graph_free(g);
    pg_tensor *own[] = {x, ctx, bias};
    free_all(3, own);
    pg_module_free(&m->base);
    pg_tensor_list_free_all(&l);
}

Test(mha, gradcheck_self)
{
    pg_posmod *mods[] = {&tmod_new(XLISH, 'x', NULL, 2, 2, 4, 1)->pm};
    pg_mha *m = mha_f64(4, 2, false, 0, true, mods, 1, 2);
    pg_tensor *pos = TI64(PG_SHAPE(2, 5), 0, 1, 2, 3, 4, 3, 1, 4, 1, 5);
    mha_case c = {m, 2, false, true, key_mask(), pos, NULL, NULL};
    pg_tensor *in[32] = {randt(PG_SHAPE(2, 5, 4), 3, true), randt(PG_SHAPE(2, 5, 5), 4, true)};
    int n = with_params(in, 2, &m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_mha, n, in, &c, &o);
    pg_tensor *mask = c.mask;
    c.mask = NULL; /* no mask, not causal, default positions */
    c.pos = NULL;
    m->cfg.causal = false;
    assert_gradcheck(call_mha, n, in, &c, &o);
    pg_tensor *own[] = {in[0], in[1], pos, mask};
    free_all(4, own);
    pg_module_free(&m->base);
}

Test(mha, gradcheck_cross)
{
    pg_posmod *mods[] = {&tmod_new(XLISH, 'x', NULL, 2, 2, 4, 1)->pm, &tmod_new(HEADSLOPE, 'h', NULL, 2, 2, 4, 2)->pm};
    pg_mha *m = mha_f64(4, 2, true, 3, true, mods, 2, 2);
    pg_tensor *pq = T64(PG_SHAPE(2, 3), 0, 1, 2, 0.5, 1.5, 2.5), *pk = T64(PG_SHAPE(2, 4), 0, 2, 4, 6, 1, 2, 3, 4);
    mha_case c = {m, 3, true, true, key_mask(), NULL, pq, pk};
    pg_tensor *in[32] = {randt(PG_SHAPE(2, 3, 4), 3, true), randt(PG_SHAPE(2, 5, 3), 4, true),
                         randt(PG_SHAPE(2, 1, 3, 1), 5, true)};
    int n = with_params(in, 3, &m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_mha, n, in, &c, &o);
    pg_tensor *own[] = {in[0], in[1], in[2], pq, pk, c.mask};
    free_all(6, own);
    pg_module_free(&m->base);
}

Test(mha, cross_names_and_defaults)
{
    pg_mha *m = mha_f64(8, 4, true, 5, false, NULL, 0, 1);
    pg_tensor_list p = pg_module_parameters(&m->base);
    const char *want[] = {"to_q.weight", "to_q.bias", "to_kv.weight", "to_kv.bias", "to_out.weight", "to_out.bias"};
    cr_assert_eq(p.n, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_str_eq(p.names[i], want[i]);
    assert_shape(m->to_kv->weight, 2, (int64_t[]){16, 5});
    cr_assert_float_eq(m->cfg.scale, 1.0 / sqrt(2.0), 1e-15);
    cr_assert_eq(m->head_dim, 2);
    pg_tensor_list_free(&p);
    pg_module_free(&m->base);
    pg_mha_config c = pg_mha_defaults(6, 3);
    c.bias = false;
    pg_rng r = pg_rng_init(1);
    m = pg_mha_new(&c, NULL, 0, &r);
    cr_assert_eq(pg_module_num_elements(&m->base), 6 * 18 + 36);
    cr_assert_eq(m->to_qkv->weight->dtype, PG_F32);
    pg_module_free(&m->base);
}

Test(mha, f32_agrees_with_f64)
{
    pg_mha *m64 = mha_f64(8, 2, false, 0, true, NULL, 0, 1);
    pg_mha_config c = m64->cfg;
    c.dtype = PG_F32;
    pg_rng r = pg_rng_init(1);
    pg_mha *m32 = pg_mha_new(&c, NULL, 0, &r);
    pg_tensor_list p64 = pg_module_parameters(&m64->base), p32 = pg_module_parameters(&m32->base);
    for (int i = 0; i < p64.n; i++)
        pg_copy_into(p32.tensors[i], p64.tensors[i]);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 2, false), *x32 = pg_tensor_cast(NULL, x, PG_F32), *mask = key_mask();
    pg_attn_args a = {.mask = mask};
    pg_tensor *y64 = pg_mha_forward(NULL, m64, x, NULL, &a), *y32 = pg_mha_forward(NULL, m32, x32, NULL, &a);
    cr_assert_eq(y32->dtype, PG_F32);
    cr_assert_lt(max_err(y32, y64), 1e-5);
    pg_tensor *own[] = {x, x32, mask, y64, y32};
    free_all(5, own);
    pg_tensor_list_free(&p64);
    pg_tensor_list_free(&p32);
    pg_module_free(&m64->base);
    pg_module_free(&m32->base);
}

Test(mha, dropout_in_train_mode_only)
{
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.dropout = 0.5;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(1);
    pg_mha *m = pg_mha_new(&c, NULL, 0, &r);
    pg_tensor *x = randt(PG_SHAPE(1, 4, 8), 2, false);
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, NULL), "attention dropout 0.5 in train mode needs args.rng");
    pg_rng d1 = pg_rng_init(3), d2 = pg_rng_init(3);
    pg_tensor *a = pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.rng = &d1});
    pg_tensor *b = pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.rng = &d2});
    cr_assert_eq(max_err(a, b), 0.0);
    pg_module_train(&m->base, false);
    pg_tensor *e1 = pg_mha_forward(NULL, m, x, NULL, NULL), *e2 = pg_mha_forward(NULL, m, x, NULL, NULL);
    cr_assert_eq(max_err(e1, e2), 0.0);
    cr_assert_gt(max_err(a, e1), 1e-4);
    pg_tensor *own[] = {x, a, b, e1, e2};
    free_all(5, own);
    pg_module_free(&m->base);
}

Test(mha, bad_constructor_arguments)
{
    pg_rng r = pg_rng_init(1);
    pg_mha_config c = pg_mha_defaults(10, 4);
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), "pg_mha_new: dim 10 must be a positive multiple of heads 4");
    c = pg_mha_defaults(8, 0);
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), "multiple of heads 0");
    c = pg_mha_defaults(8, 2);
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, NULL), "pg_mha_new: generator is NULL");
    ASSERT_FAILS(pg_mha_new(NULL, NULL, 0, &r), "pg_mha_new: config is NULL");
    c.dropout = 1.0;
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), "need dropout in [0, 1)");
    c = pg_mha_defaults(8, 2);
    c.dtype = PG_I64;
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), "a float dtype");
    /* the modules handed over are freed on failure (ASan / valgrind check this) */
    c = pg_mha_defaults(8, 2);
    tmod *t = tmod_new(HEADSLOPE, 'h', NULL, 2, 4, 8, 1);
    pg_posmod *dup[] = {&t->pm, &t->pm};
    ASSERT_FAILS(pg_mha_new(&c, dup, 2, &r), "positional module 1 is listed twice");
    pg_posmod *withnull[] = {&tmod_new(HEADSLOPE, 'h', NULL, 2, 4, 8, 1)->pm, NULL};
    ASSERT_FAILS(pg_mha_new(&c, withnull, 2, &r), "positional module 1 is NULL");
    pg_posmod *ok[] = {&tmod_new(HEADSLOPE, 'h', NULL, 2, 4, 8, 1)->pm};
    c.heads = 3;
    ASSERT_FAILS(pg_mha_new(&c, ok, 1, &r), "multiple of heads 3");
}

Test(mha, bad_forward_input)
{
    pg_mha *m = mha_f64(8, 2, false, 0, false, NULL, 0, 1), *xm = mha_f64(8, 2, true, 6, false, NULL, 0, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 1, false), *x7 = randt(PG_SHAPE(2, 5, 7), 2, false),
              *x2 = randt(PG_SHAPE(10, 8), 3, false), *x32 = pg_tensor_cast(NULL, x, PG_F32),
              *ctx = randt(PG_SHAPE(2, 3, 6), 4, false), *ctx8 = randt(PG_SHAPE(2, 3, 8), 5, false),
              *ctx1 = randt(PG_SHAPE(1, 3, 6), 6, false);
    pg_tensor *mask = key_mask(), *mask_f = randt(PG_SHAPE(2, 5), 7, false), *mask4 = TBOOL(PG_SHAPE(2, 4), 1, 1, 1, 1, 1, 1, 1, 1),
              *pos = TI64(PG_SHAPE(2, 6), 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5),
              *bias = randt(PG_SHAPE(3, 5, 5), 8, false);
    ASSERT_FAILS(pg_mha_forward(NULL, m, x7, NULL, NULL), "pg_mha_forward: x is f64[2,5,7], expected (B, L, 8) of f64");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x2, NULL, NULL), "x is f64[10,8]");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x32, NULL, NULL), "x is f32[2,5,8], expected (B, L, 8) of f64");
    ASSERT_FAILS(pg_mha_forward(NULL, m, NULL, NULL, NULL), "x is NULL");
    ASSERT_FAILS(pg_mha_forward(NULL, NULL, x, NULL, NULL), "pg_mha_forward: module is NULL");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, ctx, NULL), "a self-attention module takes no context");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x, NULL, NULL), "context is NULL, expected (B, L, 6)");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x, ctx8, NULL), "context is f64[2,3,8], expected (B, L, 6)");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x, ctx1, NULL), "batch sizes differ");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.mask = mask_f}),
                 "mask is f64[2,5], expected a bool key mask (B, Lk) = (2, 5)");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.mask = mask4}), "mask is bool[2,4]");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x, ctx, &(pg_attn_args){.mask = mask}),
                 "mask is bool[2,5], expected a bool key mask (B, Lk) = (2, 3)");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.pos = pos}),
                 "pos is i64[2,6], expected (B, Lp) = (2, <= 5)");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.pos_q = pos}), "pos_q / pos_k are for cross");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x, ctx, &(pg_attn_args){.pos = pos}), "pos is for self-attention");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x, ctx, &(pg_attn_args){.pos_k = pos}),
                 "pos_k is i64[2,6], expected (B, Lp) = (2, <= 3)");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.bias = bias}),
                 "bias is f64[3,5,5], expected f64 broadcastable to (B, H, Lq, Lk) = (2, 2, 5, 5)");
    pg_tensor *own[] = {x, x7, x2, x32, ctx, ctx8, ctx1, mask, mask_f, mask4, pos, bias};
    free_all(12, own);
    pg_module_free(&m->base);
    pg_module_free(&xm->base);
}

/* An empty sequence (x or context with L = 0) is refused, as by pg_attention. */
Test(mha, empty_sequences_refused)
{
    pg_mha *m = mha_f64(8, 2, false, 0, false, NULL, 0, 1), *xm = mha_f64(8, 2, true, 6, false, NULL, 0, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 1, false), *x0 = randt(PG_SHAPE(2, 0, 8), 2, false),
              *ctx0 = randt(PG_SHAPE(2, 0, 6), 3, false), *ctx = randt(PG_SHAPE(2, 3, 6), 4, false);
    ASSERT_FAILS(pg_mha_forward(NULL, m, x0, NULL, NULL),
                 "pg_mha_forward: x is f64[2,0,8], expected (B, L, 8) of f64");
    ASSERT_FAILS(pg_mha_forward(NULL, m, x0, NULL, NULL), "B and L >= 1");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x, ctx0, NULL),
                 "pg_mha_forward: context is f64[2,0,6], expected (B, L, 6)");
    ASSERT_FAILS(pg_mha_forward(NULL, xm, x0, ctx, NULL), "pg_mha_forward: x is f64[2,0,8]");
    pg_tensor *own[] = {x, x0, ctx0, ctx};
    free_all(4, own);
    pg_module_free(&m->base);
    pg_module_free(&xm->base);
}

/* pg_mha_positional_bias: ALiBi's bias is its table whatever the input; FoX's is its
 * own mod_bias for the layer input; a module without a bias is refused, as are bad inputs. */
Test(mha, positional_bias_for_an_input)
{
    pg_posmod *al = pg_alibi_new(2, NULL, PG_F64);
    pg_mha *m = mha_f64(8, 2, false, 0, true, &al, 1, 7);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 3, false);
    pg_graph *g = pg_graph_new();
    pg_tensor *b = pg_mha_positional_bias(g, m, x, NULL, NULL);
    assert_shape(b, PG_SHAPE(2, 2, 5, 5));
    pg_pos_ctx c = {.self_attn = true, .causal = true, .B = 2, .heads = 2, .head_dim = 4, .Lq = 5, .Lk = 5,
                    .scale = 0.5, .dtype = PG_F64};
    pg_tensor *t = pg_broadcast_to(g, pg_posmod_bias_table(g, m->pos[0], &c), PG_SHAPE(2, 2, 5, 5));
    cr_assert_lt(max_err(b, t), 1e-15);
    cr_assert_eq(pg_get(b, 1 * 5 + 0), -0.0625); /* head 0, query 1, key 0: -slope 2^-4 x distance 1 */
    pg_module_free(&m->base);

    pg_rng r = pg_rng_init(5);
    pg_posmod *fox = pg_fox_new(2, 8, NULL, PG_F64, &r);
    m = mha_f64(8, 2, false, 0, true, &fox, 1, 7);
    b = pg_mha_positional_bias(g, m, x, NULL, NULL);
    assert_shape(b, PG_SHAPE(2, 2, 5, 5));
    /* the forgetting gate: zero on the diagonal, <= 0 below it, and it depends on x */
    for (int64_t i = 0; i < 5; i++)
        for (int64_t j = 0; j <= i; j++) {
            double v = pg_get(b, (1 * 5 + i) * 5 + j);
            cr_assert(i == j ? v == 0 : v < 0, "bias[0, 1, %lld, %lld] = %g", (long long)i, (long long)j, v);
        }
    pg_tensor *x2 = randt(PG_SHAPE(2, 5, 8), 4, false);
    cr_assert_gt(max_err(pg_mha_positional_bias(g, m, x2, NULL, NULL), b), 1e-6);
    ASSERT_FAILS(pg_mha_positional_bias(g, m, NULL, NULL, NULL), "pg_mha_positional_bias: x is NULL");
    ASSERT_FAILS(pg_mha_positional_bias(g, NULL, x, NULL, NULL), "pg_mha_positional_bias: module is NULL");
    pg_module_free(&m->base);

    pg_posmod *rot = pg_rotary_new(4, NULL, PG_F64);
    m = mha_f64(8, 2, false, 0, true, &rot, 1, 7);
    ASSERT_FAILS(pg_mha_positional_bias(g, m, x, NULL, NULL), "none of the attention's 1 positional modules");
    pg_module_free(&m->base);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(x2);
}
