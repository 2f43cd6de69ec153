/* Transformer-XL relative bias (nn/pos_xl.c): parity with Dai et al.'s formula and
 * bio-attention's XL (reached with v = 2u), fixtures from tests/fixtures/gen_pos_xl.py;
 * gradchecks w.r.t. q, k, positions and every parameter; inside MultiheadAttention and a
 * 1-block LM with an Adam step; combined with a DPB; bad input. */
#include <stdlib.h>

#include "../nn/attention.h"
#include "../nn/pos_dpb.h"
#include "../nn/pos_xl.h"
#include "../nn/transformer.h"
#include "testutil.h"

#define TOL_OUT 1e-10
#define TOL_GRAD 1e-9

static pg_xl *loaded(const pg_tensor_list *l, const char *name, pg_xl_opts o)
{
    pg_rng r = pg_rng_init(1);
    pg_xl *m = pg_xl_new(2, 3, &o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.p.", name);
    load_params(&m->pm.base, l, prefix);
    return m;
}

typedef struct xcase {
    const char *name;
    pg_xl_opts o;
    int64_t Lq, Lk;
    bool self, pos, pos_qk;
} xcase;

/* the module's bias vs the fixture: out, q / k / position / parameter gradients */
static void run_case(const pg_tensor_list *l, const xcase *x)
{
    char buf[64];
    pg_graph *g = pg_graph_new();
    pg_xl *m = loaded(l, x->name, x->o);
#define FX(what) (snprintf(buf, sizeof buf, "%s." what, x->name), buf)
    pg_tensor *q = fx_copy(l, FX("q"), true), *k = fx_copy(l, FX("k"), true);
    pg_tensor *pq = NULL, *pk = NULL;
    if (x->pos)
        pq = pk = fx_copy(l, FX("pos"), true);
    if (x->pos_qk) {
        pq = fx_copy(l, FX("pos_q"), true);
        pk = fx_copy(l, FX("pos_k"), true);
    }
    pg_pos_ctx c = {pq, pk, NULL, x->self, false, 2, 2, 3, x->Lq, x->Lk, 1 / sqrt(3.0), PG_F64, NULL, NULL};
    pg_tensor *b = m->pm.ops->mod_bias(g, &m->pm, q, k, k, &c);
    cr_assert_not_null(b, "%s: %s", x->name, pg_graph_error(g));
    assert_close(b, fx(l, "%s", FX("out")), TOL_OUT, FX("out"));
    cr_assert_eq(pg_backward_with(g, b, fx(l, "%s", FX("up"))), 0, "%s", pg_graph_error(g));
    assert_close(q->grad, fx(l, "%s", FX("grad_q")), TOL_GRAD, FX("grad_q"));
    assert_close(k->grad, fx(l, "%s", FX("grad_k")), TOL_GRAD, FX("grad_k"));
    if (x->pos)
        assert_close(pq->grad, fx(l, "%s", FX("grad_pos")), TOL_GRAD, FX("grad_pos"));
    if (x->pos_qk) {
        assert_close(pq->grad, fx(l, "%s", FX("grad_pos_q")), TOL_GRAD, FX("grad_pos_q"));
        assert_close(pk->grad, fx(l, "%s", FX("grad_pos_k")), TOL_GRAD, FX("grad_pos_k"));
    }
    snprintf(buf, sizeof buf, "%s.", x->name);
    check_param_grads(&m->pm.base, l, buf, TOL_GRAD);
#undef FX
    pg_tensor_free(q);
    pg_tensor_free(k);
    pg_tensor_free(pq);
    if (pk != pq)
        pg_tensor_free(pk);
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
}

/* ===================================================================================
 * parity
 * =================================================================================== */

Test(pos_xl, dai_matches_reference)
{
    pg_tensor_list l = fixture("pos_xl_cases.safetensors");
    xcase cs[] = {
        {"dai", {0}, 5, 5, true, false, false},
        {"pos", {.interleaved = true, .proj_bias = true, .divide = 2, .learned_div = true}, 5, 5, true, true, false},
        {"cross_end", {.r_dim = 4, .divide = 1.5, .end_aligned = true}, 3, 5, false, false, false},
        {"cross_pos", {.proj_bias = true, .unscaled_pos = true}, 3, 5, false, false, true},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        run_case(&l, &cs[i]);
    pg_tensor_list_free_all(&l);
}

Test(pos_xl, inside_attention_matches_reference)
{
    pg_tensor_list l = fixture("pos_xl_cases.safetensors");
    pg_graph *g = pg_graph_new();
    pg_xl *m = loaded(&l, "attn", (pg_xl_opts){0});
    pg_tensor *q = fx_copy(&l, "attn.q", true), *k = fx_copy(&l, "attn.k", true), *v = fx_copy(&l, "attn.v", true);
    pg_tensor *mask = fx(&l, "attn.mask");
    pg_pos_ctx c = {NULL, NULL, mask, true, true, 2, 2, 3, 5, 5, 1 / sqrt(3.0), PG_F64, NULL, NULL};
    pg_sdpa_opts o = {.bias = m->pm.ops->mod_bias(g, &m->pm, q, k, v, &c), .mask = mask, .causal = true};
    pg_tensor *y = pg_attention(g, q, k, v, &o);
    assert_close(y, fx(&l, "attn.out"), TOL_OUT, "attn.out");
    cr_assert_eq(pg_backward_with(g, y, fx(&l, "attn.up")), 0, "%s", pg_graph_error(g));
    assert_close(q->grad, fx(&l, "attn.grad_q"), TOL_GRAD, "grad q");
    assert_close(k->grad, fx(&l, "attn.grad_k"), TOL_GRAD, "grad k");
    assert_close(v->grad, fx(&l, "attn.grad_v"), TOL_GRAD, "grad v");
    check_param_grads(&m->pm.base, &l, "attn.", TOL_GRAD);
    pg_tensor *own[] = {q, k, v};
    free_all(3, own);
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

Test(pos_xl, bio_forward_reached_with_v_twice_u)
{
    /* bio's logits (q+u).k*s + (q+2u).r: pg_xl_bio() with bias_r_r = 2 bias_r_w; q, k and W_R
     * gradients agree too (u's differ: bio ties the two uses, posgrad has two parameters) */
    pg_tensor_list l = fixture("pos_xl_cases.safetensors");
    pg_graph *g = pg_graph_new();
    pg_xl *m = loaded(&l, "bio", pg_xl_bio());
    for (int64_t i = 0; i < 6; i++)
        cr_assert_float_eq(pg_get(m->v, i), 2 * pg_get(m->u, i), 1e-15);
    pg_tensor *q = fx_copy(&l, "bio.q", true), *k = fx_copy(&l, "bio.k", true);
    double s = 1 / sqrt(3.0);
    pg_pos_ctx c = {NULL, NULL, NULL, true, false, 2, 2, 3, 5, 5, s, PG_F64, NULL, NULL};
    pg_tensor *logits = pg_add(g, pg_mul_scalar(g, pg_matmul(g, q, k, false, true), s),
                               m->pm.ops->mod_bias(g, &m->pm, q, k, k, &c));
    assert_close(logits, fx(&l, "bio.out"), TOL_OUT, "bio logits");
    cr_assert_eq(pg_backward_with(g, logits, fx(&l, "bio.up")), 0, "%s", pg_graph_error(g));
    assert_close(q->grad, fx(&l, "bio.grad_q"), TOL_GRAD, "grad q");
    assert_close(k->grad, fx(&l, "bio.grad_k"), TOL_GRAD, "grad k");
    assert_close(m->embed_lin->weight->grad, fx(&l, "bio.grad.embed_lin.weight"), TOL_GRAD, "grad W_R");
    assert_close(m->embed_lin->bias->grad, fx(&l, "bio.grad.embed_lin.bias"), TOL_GRAD, "grad W_R bias");
    pg_tensor_free(q);
    pg_tensor_free(k);
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

Test(pos_xl, bias_table_is_the_position_part)
{
    /* bias_table = v . r_ij * s: the bias with q = 0 and k = 0 */
    pg_rng r = pg_rng_init(4);
    pg_xl_opts o = {.end_aligned = true};
    pg_xl *m = pg_xl_new(2, 2, &o, PG_F64, &r);
    pg_graph *g = pg_graph_new();
    pg_pos_ctx c = {.B = 1, .heads = 2, .head_dim = 2, .Lq = 2, .Lk = 4, .scale = 0.5, .dtype = PG_F64};
    pg_tensor *t = pg_posmod_bias_table(g, &m->pm, &c);
    assert_shape(t, 3, (int64_t[]){2, 2, 4});
    pg_tensor *q0 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 2, 2)), *k0 = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 4, 2));
    pg_tensor *b = m->pm.ops->mod_bias(g, &m->pm, q0, k0, k0, &c);
    for (int64_t i = 0; i < 16; i++)
        cr_assert_float_eq(pg_get(t, i), pg_get(b, i), 1e-15);
    /* end-aligned: query 1 is key position 3, so entry (h, 1, 3) is at distance 0 and equals (h, 0, 2) */
    for (int64_t h = 0; h < 2; h++)
        cr_assert_float_eq(pg_get(t, h * 8 + 7), pg_get(t, h * 8 + 2), 1e-15);
    /* explicit positions: the same values as the defaults they spell out; (B, H, Lq, Lk) */
    pg_tensor *pq = T64(PG_SHAPE(1, 2), 2, 3), *pk = T64(PG_SHAPE(1, 4), 0, 1, 2, 3);
    c.pos_q = pq;
    c.pos_k = pk;
    pg_tensor *e = pg_posmod_bias_table(g, &m->pm, &c);
    assert_shape(e, 4, (int64_t[]){1, 2, 2, 4});
    for (int64_t i = 0; i < 16; i++)
        cr_assert_float_eq(pg_get(e, i), pg_get(t, i), 1e-14);
    pg_tensor_free(pq);
    pg_tensor_free(pk);
    pg_graph_free(g);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * gradchecks
 * =================================================================================== */

typedef struct gc_case {
    pg_xl *m;
    int64_t Lq, Lk;
    int pos; /* 0 none, 1 self pos in[2], 2 pos_q in[2] and pos_k in[3] */
} gc_case;

static pg_tensor *call_bias(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    gc_case *c = ctx;
    pg_pos_ctx pc = {.self_attn = c->pos != 2 && c->Lq == c->Lk, .B = 1, .heads = 2, .head_dim = 2, .Lq = c->Lq,
                     .Lk = c->Lk, .scale = 0.6, .dtype = PG_F64};
    if (c->pos == 1)
        pc.pos_q = pc.pos_k = in[2];
    if (c->pos == 2) {
        pc.pos_q = in[2];
        pc.pos_k = in[3];
    }
    return c->m->pm.ops->mod_bias(g, &c->m->pm, in[0], in[1], in[1], &pc);
}

static void gradcheck_xl(pg_xl_opts o, int pos, int64_t Lq, int64_t Lk)
{
    pg_rng r = pg_rng_init(5);
    pg_xl *m = pg_xl_new(2, 2, &o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_tensor *in[32] = {randt(PG_SHAPE(1, 2, Lq, 2), 1, true), randt(PG_SHAPE(1, 2, Lk, 2), 2, true)};
    int n0 = 2;
    if (pos == 1)
        in[n0++] = T64(PG_SHAPE(1, 3), 0.4, 1.9, 3.2);
    if (pos == 2) {
        in[n0++] = T64(PG_SHAPE(1, 2), 0.4, 2.3);
        in[n0++] = T64(PG_SHAPE(1, 3), -0.2, 1.1, 2.6);
    }
    for (int i = 2; i < n0; i++)
        in[i]->requires_grad = true;
    int n = with_params(in, n0, &m->pm.base);
    gc_case c = {m, Lq, Lk, pos};
    pg_gradcheck_opts go = f64_only();
    assert_gradcheck(call_bias, n, in, &c, &go);
    free_all(n0, in);
    pg_module_free(&m->pm.base);
}

Test(pos_xl, gradcheck_every_option)
{
    gradcheck_xl((pg_xl_opts){0}, 0, 3, 3);
    gradcheck_xl((pg_xl_opts){.interleaved = true, .proj_bias = true, .learned_div = true, .divide = 2}, 1, 4, 4);
    gradcheck_xl((pg_xl_opts){.end_aligned = true, .r_dim = 6, .unscaled_pos = true}, 0, 2, 4);
    gradcheck_xl((pg_xl_opts){.learned_div = true, .divide = 0.5}, 2, 3, 4);
    gradcheck_xl(pg_xl_bio(), 0, 3, 3);
}

/* ===================================================================================
 * in MultiheadAttention and an LM: an Adam step changes u, v, W_R and div
 * =================================================================================== */

Test(pos_xl, mha_adam_step_trains_u_v_w_and_div)
{
    pg_rng r = pg_rng_init(3);
    pg_xl_opts o = {.learned_div = true, .proj_bias = true};
    pg_posmod_args a = {.dim = 8, .heads = 2, .head_dim = 0, .dtype = PG_F64, .rng = &r, .opts = &o};
    pg_posmod *pm = pg_posmod_make_xl(&a);
    cr_assert_not_null(pm, "%s", pg_last_error());
    cr_assert_eq(((pg_xl *)pm)->head_dim, 4);
    pg_mha_config mc = pg_mha_defaults(8, 2);
    mc.dtype = PG_F64;
    mc.causal = true;
    pg_mha *m = pg_mha_new(&mc, &pm, 1, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    const char *names[] = {"pos.div", "pos.bias_r_w", "pos.bias_r_r", "pos.embed_lin.weight", "pos.embed_lin.bias"};
    for (int i = 0; i < 5; i++)
        cr_assert_not_null(pg_module_find_param(&m->base, names[i]), "%s", names[i]);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 4, false), *mask = key_mask();
    pg_tensor *pos = T64(PG_SHAPE(2, 4), 0, 1.5, 2, 4, 1, 2, 3, 4);
    pg_graph *g = pg_graph_new();
    pg_attn_args args = {.mask = mask, .pos = pos};
    pg_tensor *y = pg_mha_forward(g, m, x, NULL, &args);
    assert_adam_step_changes(&m->base, &pm->base, g, pg_sum(g, pg_square(g, y), 0, NULL, false));
    pg_graph_free(g);
    pg_tensor *own[] = {x, mask, pos};
    free_all(3, own);
    pg_module_free(&m->base);
}

Test(pos_xl, lm_adam_step_trains_u_v_w_and_div)
{
    pg_xl_opts o = {.learned_div = true, .divide = 4};
    pg_lm_config cfg = pg_lm_defaults(11, 8, 2, 1);
    cfg.dtype = PG_F64;
    cfg.seed = 5;
    cfg.n_layer_pos = 1;
    cfg.layer_pos[0] = (pg_posmod_spec){NULL, pg_posmod_make_xl, &o};
    pg_lm *lm = pg_lm_new(&cfg);
    cr_assert_not_null(lm, "%s", pg_last_error());
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.0.attn.pos.bias_r_r"));
    pg_tensor *ids = TI64(PG_SHAPE(2, 5), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    pg_graph *g = pg_graph_new();
    assert_adam_step_changes(&lm->base, &lm->blocks[0]->attn->pos[0]->base, g, pg_lm_loss(g, lm, ids, ids, NULL));
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

Test(pos_xl, cross_attention_with_dpb)
{
    /* XL + a DPB in one cross-attention layer; positions given for both sides */
    pg_rng r = pg_rng_init(8);
    pg_posmod_args a = {.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64, .rng = &r};
    pg_posmod *mods[2] = {pg_posmod_make_xl(&a), pg_posmod_make_dpb(&a)};
    cr_assert(mods[0] && mods[1], "%s", pg_last_error());
    pg_mha_config mc = pg_mha_defaults(8, 2);
    mc.dtype = PG_F64;
    mc.cross = true;
    mc.context_dim = 6;
    pg_mha *m = pg_mha_new(&mc, mods, 2, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_tensor *x = randt(PG_SHAPE(2, 3, 8), 1, false), *ctx = randt(PG_SHAPE(2, 5, 6), 2, false);
    pg_tensor *pq = T64(PG_SHAPE(2, 3), 4, 5, 6, 1, 2, 3), *pk = T64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0, 2, 4, 6);
    pg_attn_args args = {.pos_q = pq, .pos_k = pk};
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mha_forward(g, m, x, ctx, &args);
    assert_shape(y, 3, (int64_t[]){2, 3, 8});
    assert_adam_step_changes(&m->base, &m->base, g, pg_sum(g, pg_square(g, y), 0, NULL, false));
    pg_graph_free(g);
    pg_tensor *own[] = {x, ctx, pq, pk};
    free_all(4, own);
    pg_module_free(&m->base);
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_xl, bad_options_and_input)
{
    pg_rng r = pg_rng_init(1);
    pg_xl_opts o = {.r_dim = 5};
    ASSERT_FAILS(pg_xl_new(2, 3, &o, PG_F64, &r), "r_dim must be even and >= 2");
    o = (pg_xl_opts){.divide = -2};
    ASSERT_FAILS(pg_xl_new(2, 3, &o, PG_F64, &r), "divide must be a finite number > 0");
    ASSERT_FAILS(pg_xl_new(0, 3, NULL, PG_F64, &r), "need heads >= 1 and head_dim >= 1");
    ASSERT_FAILS(pg_xl_new(2, 3, NULL, PG_BOOL, &r), "need a float dtype");
    ASSERT_FAILS(pg_xl_new(2, 3, NULL, PG_F64, NULL), "generator NULL");
    pg_posmod_args a = {.dim = 8, .heads = 0, .dtype = PG_F64, .rng = &r};
    ASSERT_FAILS(pg_posmod_make_xl(&a), "needs heads >= 1");

    pg_xl *m = pg_xl_new(2, 3, NULL, PG_F64, &r);
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 4, 3)), *k = pg_zeros(g, PG_F64, PG_SHAPE(1, 2, 4, 2));
    pg_pos_ctx c = {.self_attn = true, .B = 1, .heads = 2, .head_dim = 3, .Lq = 4, .Lk = 4, .dtype = PG_F64};
    ASSERT_FAILS(m->pm.ops->mod_bias(g, &m->pm, q, k, k, &c), "k is f64[1,2,4,2], expected (B, heads, L, head_dim)");
    c.head_dim = 4;
    ASSERT_FAILS(m->pm.ops->mod_bias(g, &m->pm, q, q, q, &c), "the module has 2 heads of width 3 in f64, the attention 2 heads of width 4");
    c.head_dim = 3;
    pg_tensor *longer = T64(PG_SHAPE(1, 5), 0, 1, 2, 3, 4);
    c.pos_q = c.pos_k = longer;
    ASSERT_FAILS(m->pm.ops->mod_bias(g, &m->pm, q, q, q, &c), "pos is f64[1,5], expected (B, Lp) = (1, <= 4)");
    pg_tensor *mask = TBOOL(PG_SHAPE(1, 3), 1, 1, 1);
    c.pos_q = c.pos_k = NULL;
    c.mask = mask;
    ASSERT_FAILS(m->pm.ops->mod_bias(g, &m->pm, q, q, q, &c), "expected a bool key mask (B, Lk) = (1, 4)");
    pg_tensor *d32 = T32(PG_SHAPE(2), 1, 2);
    ASSERT_FAILS(pg_xl_rel_encoding(NULL, &m->pm, d32), "expected a tensor of the module's dtype f64");
    pg_rng r2 = pg_rng_init(2);
    pg_dpb *d = pg_dpb_new(4, 2, NULL, PG_F64, &r2);
    ASSERT_FAILS(pg_xl_rel_encoding(NULL, &d->pm, d32), "module is DynamicPositionBias, expected a TransformerXLBias");
    /* in an MHA of another head width: the module is named */
    pg_posmod *pm = &pg_xl_new(2, 3, NULL, PG_F64, &r)->pm;
    pg_mha_config mc = pg_mha_defaults(8, 2);
    mc.dtype = PG_F64;
    pg_mha *mh = pg_mha_new(&mc, &pm, 1, &r);
    pg_tensor *x = randt(PG_SHAPE(1, 4, 8), 1, false);
    ASSERT_FAILS(pg_mha_forward(NULL, mh, x, NULL, NULL), "the module has 2 heads of width 3");
    pg_tensor *own[] = {longer, mask, d32, x};
    free_all(4, own);
    pg_module_free(&mh->base);
    pg_module_free(&d->pm.base);
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
}
