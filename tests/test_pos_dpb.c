/* Dynamic position bias (nn/pos_dpb.c): parity with bio-attention's DPB, x-transformers'
 * and zeta's DynamicPositionBias as each is one configuration (fixtures from
 * tests/fixtures/gen_pos_dpb.py), gradchecks w.r.t. positions and every parameter,
 * inside MultiheadAttention and a 1-block LM with an Adam step, combined with XL, bad input. */
#include <stdlib.h>

#include "../nn/attention.h"
#include "../nn/pos_dpb.h"
#include "../nn/pos_xl.h"
#include "../nn/transformer.h"
#include "testutil.h"

#define TOL_OUT 1e-10
#define TOL_GRAD 1e-9

static pg_dpb *dpb_f64(int64_t hidden, int64_t heads, pg_dpb_opts o, uint64_t seed)
{
    o.hidden = hidden;
    pg_rng r = pg_rng_init(seed);
    pg_dpb *m = pg_dpb_new(hidden, heads, &o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static pg_dpb_opts bio_opts(int depth, bool norm, double divide, bool learned)
{
    pg_dpb_opts o = pg_dpb_bio();
    o.depth = depth;
    o.norm = norm;
    o.divide = divide;
    o.learned_div = learned;
    return o;
}

/* backward of sum(out * up) and comparison of out and every parameter's gradient */
static void check_case(pg_graph *g, pg_dpb *m, const pg_tensor_list *l, const char *name, pg_tensor *out)
{
    char buf[64];
    cr_assert_not_null(out, "%s: %s", name, pg_graph_error(g));
    snprintf(buf, sizeof buf, "%s.out", name);
    assert_close(out, fx(l, "%s", buf), TOL_OUT, buf);
    pg_module_zero_grad(&m->pm.base);
    cr_assert_eq(pg_backward_with(g, out, fx(l, "%s.up", name)), 0, "%s", pg_graph_error(g));
    snprintf(buf, sizeof buf, "%s.", name);
    check_param_grads(&m->pm.base, l, buf, TOL_GRAD);
}

static pg_dpb *loaded(const pg_tensor_list *l, const char *name, int64_t hidden, pg_dpb_opts o)
{
    pg_dpb *m = dpb_f64(hidden, 2, o, 1);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.p.", name);
    load_params(&m->pm.base, l, prefix);
    return m;
}

/* ===================================================================================
 * parity
 * =================================================================================== */

Test(pos_dpb, bio_matches_reference)
{
    pg_tensor_list l = fixture("pos_dpb_cases.safetensors");
    pg_graph *g = pg_graph_new();
    /* depth 1 (affine), default positions, self-attention */
    pg_dpb *m = loaded(&l, "bio1", 6, pg_dpb_bio());
    pg_pos_ctx c = {.self_attn = true, .B = 1, .heads = 2, .Lq = 5, .Lk = 5, .dtype = PG_F64};
    check_case(g, m, &l, "bio1", pg_posmod_bias_table(g, &m->pm, &c));
    pg_module_free(&m->pm.base);
    /* depth 2 + norm, divide 2, explicit float positions shorter than L, gradient w.r.t. them */
    m = loaded(&l, "bio2", 6, bio_opts(2, true, 2.0, false));
    pg_tensor *pos = fx_copy(&l, "bio2.pos", true);
    c = (pg_pos_ctx){.pos_q = pos, .pos_k = pos, .self_attn = true, .B = 2, .heads = 2, .Lq = 5, .Lk = 5,
                     .dtype = PG_F64};
    check_case(g, m, &l, "bio2", pg_posmod_bias_table(g, &m->pm, &c));
    assert_close(pos->grad, fx(&l, "bio2.grad_pos"), TOL_GRAD, "grad pos");
    pg_tensor_free(pos);
    pg_module_free(&m->pm.base);
    /* depth 3, learned div, cross default positions (start-aligned) */
    m = loaded(&l, "bio3", 5, bio_opts(3, false, 3.0, true));
    c = (pg_pos_ctx){.B = 1, .heads = 2, .Lq = 3, .Lk = 5, .dtype = PG_F64};
    check_case(g, m, &l, "bio3", pg_posmod_bias_table(g, &m->pm, &c));
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

Test(pos_dpb, xtransformers_matches_reference)
{
    pg_tensor_list l = fixture("pos_dpb_cases.safetensors");
    pg_graph *g = pg_graph_new();
    pg_dpb *m = loaded(&l, "xt_log", 4, pg_dpb_xtransformers(2, true, true));
    check_case(g, m, &l, "xt_log", pg_dpb_bias_ij(g, &m->pm, 3, 5));
    /* the same through the protocol: end-aligned default positions */
    pg_pos_ctx c = {.B = 1, .heads = 2, .Lq = 3, .Lk = 5, .dtype = PG_F64};
    assert_close(pg_posmod_bias_table(g, &m->pm, &c), fx(&l, "xt_log.out"), TOL_OUT, "xt_log via ctx");
    pg_module_free(&m->pm.base);
    m = loaded(&l, "xt_lin", 4, pg_dpb_xtransformers(1, false, false));
    check_case(g, m, &l, "xt_lin", pg_dpb_bias_ij(g, &m->pm, 4, 4));
    pg_module_free(&m->pm.base);
    /* explicit cross positions (keys left-padded), log distance, learned div */
    pg_dpb_opts o = pg_dpb_xtransformers(2, true, true);
    o.divide = 1.5;
    o.learned_div = true;
    m = loaded(&l, "xt_pos", 4, o);
    pg_tensor *pq = fx_copy(&l, "xt_pos.pos_q", true), *pk = fx_copy(&l, "xt_pos.pos_k", true);
    c = (pg_pos_ctx){.pos_q = pq, .pos_k = pk, .B = 2, .heads = 2, .Lq = 3, .Lk = 5, .dtype = PG_F64};
    check_case(g, m, &l, "xt_pos", pg_posmod_bias_table(g, &m->pm, &c));
    assert_close(pq->grad, fx(&l, "xt_pos.grad_pos_q"), TOL_GRAD, "grad pos_q");
    assert_close(pk->grad, fx(&l, "xt_pos.grad_pos_k"), TOL_GRAD, "grad pos_k");
    pg_tensor_free(pq);
    pg_tensor_free(pk);
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

Test(pos_dpb, zeta_matches_reference)
{
    pg_tensor_list l = fixture("pos_dpb_cases.safetensors");
    pg_graph *g = pg_graph_new();
    pg_dpb *m = loaded(&l, "zeta35", 6, pg_dpb_zeta());
    check_case(g, m, &l, "zeta35", pg_dpb_bias_ij(g, &m->pm, 3, 5));
    assert_shape(fx(&l, "zeta35.out"), 3, (int64_t[]){2, 3, 5}); /* (heads, i, j) */
    check_case(g, m, &l, "zeta44", pg_dpb_bias_ij(g, &m->pm, 4, 4));
    pg_tensor *pos = fx_copy(&l, "zeta_pos.pos", true);
    pg_pos_ctx c = {.pos_q = pos, .pos_k = pos, .self_attn = true, .B = 1, .heads = 2, .Lq = 4, .Lk = 4,
                    .dtype = PG_F64};
    check_case(g, m, &l, "zeta_pos", pg_posmod_bias_table(g, &m->pm, &c));
    assert_close(pos->grad, fx(&l, "zeta_pos.grad_pos"), TOL_GRAD, "grad pos");
    /* the zeta names */
    pg_tensor_list p = pg_module_parameters(&m->pm.base);
    const char *want[] = {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias"};
    cr_assert_eq(p.n, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_str_eq(p.names[i], want[i]);
    pg_tensor_list_free(&p);
    pg_tensor_free(pos);
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

Test(pos_dpb, inside_attention_matches_reference)
{
    pg_tensor_list l = fixture("pos_dpb_cases.safetensors");
    pg_graph *g = pg_graph_new();
    pg_dpb *m = loaded(&l, "attn", 4, bio_opts(2, true, 1.0, false));
    pg_tensor *q = fx_copy(&l, "attn.q", true), *k = fx_copy(&l, "attn.k", true), *v = fx_copy(&l, "attn.v", true);
    pg_tensor *pos = fx(&l, "attn.pos"), *mask = fx(&l, "attn.mask");
    pg_pos_ctx c = {pos, pos, mask, true, true, 2, 2, 3, 5, 5, 1 / sqrt(3.0), PG_F64, NULL, NULL};
    pg_tensor *bias = m->pm.ops->mod_bias(g, &m->pm, q, k, v, &c);
    pg_sdpa_opts o = {.bias = bias, .mask = mask, .causal = true};
    check_case(g, m, &l, "attn", pg_attention(g, q, k, v, &o));
    assert_close(q->grad, fx(&l, "attn.grad_q"), TOL_GRAD, "grad q");
    assert_close(k->grad, fx(&l, "attn.grad_k"), TOL_GRAD, "grad k");
    assert_close(v->grad, fx(&l, "attn.grad_v"), TOL_GRAD, "grad v");
    pg_tensor *own[] = {q, k, v};
    free_all(3, own);
    pg_module_free(&m->pm.base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

Test(pos_dpb, default_table_equals_per_pair_positions)
{
    /* the gathered per-distance table equals the per-pair MLP at the same positions,
     * for start- and end-aligned cross-attention */
    for (int end = 0; end < 2; end++) {
        pg_dpb_opts o = pg_dpb_xtransformers(2, true, true);
        o.end_aligned = end;
        o.divide = 1.7;
        pg_dpb *m = dpb_f64(5, 3, o, 3);
        pg_graph *g = pg_graph_new();
        pg_pos_ctx c = {.B = 2, .heads = 3, .Lq = 3, .Lk = 6, .dtype = PG_F64};
        pg_tensor *t = pg_posmod_bias_table(g, &m->pm, &c);
        assert_shape(t, 3, (int64_t[]){3, 3, 6});
        pg_tensor *pq = pg_arange(g, PG_F64, end ? 3 : 0, end ? 6 : 3, 1);
        pg_tensor *pk = pg_arange(g, PG_F64, 0, 6, 1);
        pq = pg_broadcast_to(g, pg_reshape(g, pq, PG_SHAPE(1, 3)), PG_SHAPE(2, 3));
        pk = pg_broadcast_to(g, pg_reshape(g, pk, PG_SHAPE(1, 6)), PG_SHAPE(2, 6));
        c.pos_q = pq;
        c.pos_k = pk;
        pg_tensor *p = pg_posmod_bias_table(g, &m->pm, &c);
        assert_shape(p, 4, (int64_t[]){2, 3, 3, 6});
        for (int64_t b = 0; b < 2; b++)
            for (int64_t i = 0; i < 54; i++)
                cr_assert_float_eq(pg_get(p, b * 54 + i), pg_get(t, i), 1e-13);
        /* bias_ij is always end-aligned */
        pg_tensor *ij = pg_dpb_bias_ij(g, &m->pm, 3, 6);
        if (end)
            assert_close(ij, t, 1e-14, "bias_ij");
        pg_graph_free(g);
        pg_module_free(&m->pm.base);
    }
}

Test(pos_dpb, left_padding_gives_zero_rows_and_columns)
{
    pg_dpb *m = dpb_f64(4, 2, bio_opts(2, true, 1.0, false), 2);
    pg_tensor *pos = T64(PG_SHAPE(1, 3), 0.5, 2.0, 4.0);
    pg_pos_ctx c = {.pos_q = pos, .pos_k = pos, .self_attn = true, .B = 1, .heads = 2, .Lq = 5, .Lk = 5,
                    .dtype = PG_F64};
    pg_tensor *b = pg_posmod_bias_table(NULL, &m->pm, &c);
    assert_shape(b, 4, (int64_t[]){1, 2, 5, 5});
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = 0; i < 5; i++)
            for (int64_t j = 0; j < 5; j++) {
                double x = pg_get(b, (h * 5 + i) * 5 + j);
                if (i < 2 || j < 2)
                    cr_assert_eq(x, 0.0);
                else
                    cr_assert_neq(x, 0.0);
            }
    pg_tensor_free(b);
    pg_tensor_free(pos);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * gradchecks
 * =================================================================================== */

typedef struct gc_case {
    pg_dpb *m;
    bool with_pos;  /* in[0] is the (self) position tensor */
    int64_t B, Lq, Lk;
    int ij;         /* use pg_dpb_bias_ij(Lq, Lk) */
} gc_case;

static pg_tensor *call_table(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    gc_case *c = ctx;
    if (c->ij)
        return pg_dpb_bias_ij(g, &c->m->pm, c->Lq, c->Lk);
    pg_pos_ctx pc = {.self_attn = c->Lq == c->Lk, .B = c->B, .heads = c->m->heads, .Lq = c->Lq, .Lk = c->Lk,
                     .dtype = PG_F64};
    if (c->with_pos)
        pc.pos_q = pc.pos_k = in[0];
    return pg_posmod_bias_table(g, &c->m->pm, &pc);
}

static void gradcheck_opts(pg_dpb_opts o, bool with_pos, int ij, int64_t Lq, int64_t Lk)
{
    pg_dpb *m = dpb_f64(3, 2, o, 11);
    pg_tensor *in[64];
    int n0 = 0;
    if (with_pos) {
        in[n0++] = T64(PG_SHAPE(2, 3), 0.3, 1.7, 2.2, -0.6, 0.9, 3.1); /* Lp 3 < L 4, no ties */
        in[0]->requires_grad = true;
    }
    int n = with_params(in, n0, &m->pm.base);
    gc_case c = {m, with_pos, 2, Lq, Lk, ij};
    pg_gradcheck_opts go = f64_only();
    assert_gradcheck(call_table, n, in, &c, &go);
    if (with_pos)
        pg_tensor_free(in[0]);
    pg_module_free(&m->pm.base);
}

Test(pos_dpb, gradcheck_every_option)
{
    pg_dpb_opts o;
    /* bio: depth 1, 2 + norm, learned div; default and explicit positions */
    gradcheck_opts(bio_opts(1, false, 1.0, false), false, 0, 3, 4);
    gradcheck_opts(bio_opts(2, true, 2.0, true), true, 0, 4, 4);
    /* x-transformers layout: signed / log distance, norm, learned div, both call forms */
    o = pg_dpb_xtransformers(2, true, true);
    o.learned_div = true;
    o.divide = 0.7;
    gradcheck_opts(o, true, 0, 4, 4);
    gradcheck_opts(o, false, 1, 2, 4);
    gradcheck_opts(pg_dpb_xtransformers(1, false, false), true, 0, 4, 4);
    /* zeta: absolute distance */
    o = pg_dpb_zeta();
    o.learned_div = true;
    gradcheck_opts(o, true, 0, 4, 4);
    gradcheck_opts(o, false, 1, 3, 3);
    /* subtracted, end-aligned, abs with the bio layout */
    o = bio_opts(2, false, 1.0, true);
    o.distance = PG_DPB_ABS;
    o.end_aligned = true;
    gradcheck_opts(o, false, 0, 2, 4);
}

/* ===================================================================================
 * in MultiheadAttention, an LM, combined with XL; Adam changes the parameters
 * =================================================================================== */

static void adam_step(pg_module *model, pg_module *watch, pg_tensor *(*loss)(pg_graph *, void *), void *ctx)
{
    pg_graph *g = pg_graph_new();
    assert_adam_step_changes(model, watch, g, loss(g, ctx));
    pg_graph_free(g);
}

typedef struct mha_ctx {
    pg_mha *m;
    pg_tensor *x, *mask, *pos;
} mha_ctx;

static pg_tensor *mha_loss(pg_graph *g, void *ctx)
{
    mha_ctx *c = ctx;
    pg_attn_args a = {.mask = c->mask, .pos = c->pos};
    pg_tensor *y = pg_mha_forward(g, c->m, c->x, NULL, &a);
    return pg_sum(g, pg_square(g, y), 0, NULL, false);
}

Test(pos_dpb, mha_adam_step_trains_the_mlp_and_div)
{
    pg_dpb_opts o = pg_dpb_xtransformers(2, true, true);
    o.learned_div = true;
    pg_posmod_args a = {.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64};
    pg_rng r = pg_rng_init(3);
    a.rng = &r;
    a.opts = &o;
    pg_posmod *pm = pg_posmod_make_dpb(&a);
    cr_assert_not_null(pm, "%s", pg_last_error());
    cr_assert_eq(((pg_dpb *)pm)->hidden, 2); /* x-transformers: dim / 4 */
    pg_mha_config mc = pg_mha_defaults(8, 2);
    mc.dtype = PG_F64;
    mc.causal = true;
    pg_mha *m = pg_mha_new(&mc, &pm, 1, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    cr_assert_not_null(pg_module_find_param(&m->base, "pos.mlp.0.1.gamma"));
    cr_assert_not_null(pg_module_find_param(&m->base, "pos.div"));
    mha_ctx c = {m, randt(PG_SHAPE(2, 5, 8), 4, false), key_mask(), T64(PG_SHAPE(2, 4), 0, 1.5, 2, 4, 1, 2, 3, 4)};
    adam_step(&m->base, &pm->base, mha_loss, &c);
    pg_tensor *own[] = {c.x, c.mask, c.pos};
    free_all(3, own);
    pg_module_free(&m->base);
}

typedef struct lm_ctx {
    pg_lm *lm;
    pg_tensor *ids;
} lm_ctx;

static pg_tensor *lm_loss(pg_graph *g, void *ctx)
{
    lm_ctx *c = ctx;
    return pg_lm_loss(g, c->lm, c->ids, c->ids, NULL);
}

Test(pos_dpb, lm_adam_step_trains_the_mlp_and_div)
{
    pg_dpb_opts o = bio_opts(2, true, 2.0, true);
    pg_lm_config cfg = pg_lm_defaults(11, 8, 2, 1);
    cfg.dtype = PG_F64;
    cfg.seed = 5;
    cfg.n_layer_pos = 1;
    cfg.layer_pos[0] = (pg_posmod_spec){NULL, pg_posmod_make_dpb, &o};
    pg_lm *lm = pg_lm_new(&cfg);
    cr_assert_not_null(lm, "%s", pg_last_error());
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.0.attn.pos.mlp.1.2.bias"));
    lm_ctx c = {lm, TI64(PG_SHAPE(2, 5), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)};
    adam_step(&lm->base, &lm->blocks[0]->attn->pos[0]->base, lm_loss, &c);
    pg_tensor_free(c.ids);
    pg_module_free(&lm->base);
}

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    mha_ctx *c = ctx;
    pg_attn_args a = {.mask = c->mask, .pos = c->pos};
    return pg_mha_forward(g, c->m, in[0], NULL, &a);
}

Test(pos_dpb, combined_with_xl_gradcheck)
{
    pg_rng r = pg_rng_init(9);
    pg_dpb_opts od = pg_dpb_zeta();
    od.hidden = 3;
    od.learned_div = true;
    pg_xl_opts ox = {.learned_div = true, .divide = 2.0, .r_dim = 4};
    pg_posmod_args a = {.dim = 4, .heads = 2, .head_dim = 2, .dtype = PG_F64, .rng = &r, .opts = &od};
    pg_posmod *mods[2];
    mods[0] = pg_posmod_make_dpb(&a);
    a.opts = &ox;
    mods[1] = pg_posmod_make_xl(&a);
    cr_assert(mods[0] && mods[1], "%s", pg_last_error());
    pg_mha_config mc = pg_mha_defaults(4, 2);
    mc.dtype = PG_F64;
    mc.causal = true;
    pg_mha *m = pg_mha_new(&mc, mods, 2, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    mha_ctx c = {m, NULL, TBOOL(PG_SHAPE(2, 4), 1, 1, 0, 1, 0, 1, 1, 1), T64(PG_SHAPE(2, 3), 0, 1.5, 2, 4, 1, 2)};
    pg_tensor *in[64] = {randt(PG_SHAPE(2, 4, 4), 4, true)};
    int n = with_params(in, 1, &m->base);
    pg_gradcheck_opts go = f64_only();
    assert_gradcheck(call_mha, n, in, &c, &go);
    pg_tensor *own[] = {in[0], c.mask, c.pos};
    free_all(3, own);
    pg_module_free(&m->base);
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_dpb, bad_options_and_input)
{
    pg_rng r = pg_rng_init(1);
    pg_dpb_opts o = pg_dpb_bio();
    o.depth = PG_DPB_MAX_DEPTH + 1;
    ASSERT_FAILS(pg_dpb_new(8, 2, &o, PG_F64, &r), "depth in [1, 16]");
    o = pg_dpb_zeta();
    o.norm = true;
    ASSERT_FAILS(pg_dpb_new(8, 2, &o, PG_F64, &r), "zeta layout has no norm");
    o = pg_dpb_bio();
    o.layout = 7;
    ASSERT_FAILS(pg_dpb_new(8, 2, &o, PG_F64, &r), "bad option: layout 7");
    o = pg_dpb_bio();
    o.divide = -1;
    ASSERT_FAILS(pg_dpb_new(8, 2, &o, PG_F64, &r), "divide must be a finite number > 0");
    ASSERT_FAILS(pg_dpb_new(8, 0, NULL, PG_F64, &r), "need heads >= 1");
    ASSERT_FAILS(pg_dpb_new(8, 2, NULL, PG_I64, &r), "need a float dtype");
    pg_posmod_args a = {.dim = 8, .heads = 0, .dtype = PG_F64, .rng = &r};
    ASSERT_FAILS(pg_posmod_make_dpb(&a), "needs heads >= 1");

    pg_dpb *m = dpb_f64(4, 2, pg_dpb_bio(), 1);
    pg_tensor *longer = T64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5);
    pg_pos_ctx c = {.pos_q = longer, .pos_k = longer, .self_attn = true, .B = 1, .heads = 2, .Lq = 5, .Lk = 5,
                    .dtype = PG_F64};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "pos is f64[1,6], expected (B, Lp) = (1, <= 5)");
    pg_tensor *mask = TBOOL(PG_SHAPE(1, 4), 1, 1, 1, 1);
    c = (pg_pos_ctx){.mask = mask, .self_attn = true, .B = 1, .heads = 2, .Lq = 5, .Lk = 5, .dtype = PG_F64};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "expected a bool key mask (B, Lk) = (1, 5)");
    c = (pg_pos_ctx){.self_attn = true, .B = 1, .heads = 3, .Lq = 5, .Lk = 5, .dtype = PG_F64};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "the module has 2 heads of dtype f64, the attention 3");
    c.heads = 2;
    c.dtype = PG_F32;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "the attention 2 heads of dtype f32");
    ASSERT_FAILS(pg_dpb_bias_ij(NULL, &m->pm, 0, 3), "i (queries) and j (keys) must be >= 1");
    pg_tensor *d32 = T32(PG_SHAPE(2), 1, 2);
    ASSERT_FAILS(pg_dpb_mlp(NULL, &m->pm, d32), "expected a tensor of the module's dtype f64");
    pg_xl *x = pg_xl_new(2, 2, NULL, PG_F64, &r);
    ASSERT_FAILS(pg_dpb_bias_ij(NULL, &x->pm, 2, 3), "module is TransformerXLBias, expected a DynamicPositionBias");
    /* an MHA with a DPB of other heads names the module */
    pg_posmod *pm = &dpb_f64(4, 3, pg_dpb_bio(), 1)->pm;
    pg_mha_config mc = pg_mha_defaults(8, 2);
    mc.dtype = PG_F64;
    pg_mha *mh = pg_mha_new(&mc, &pm, 1, &r);
    pg_tensor *xx = randt(PG_SHAPE(1, 5, 8), 1, false);
    ASSERT_FAILS(pg_mha_forward(NULL, mh, xx, NULL, NULL), "the module has 3 heads");
    pg_tensor *own[] = {longer, mask, d32, xx};
    free_all(4, own);
    pg_module_free(&mh->base);
    pg_module_free(&x->pm.base);
    pg_module_free(&m->pm.base);
}
