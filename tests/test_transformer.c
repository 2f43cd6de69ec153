/* TransformerBlock, the decoder-only LM and sampling (nn/transformer.c,
 * nn/sample.c): PyTorch parity (tests/fixtures/gen_attention.py: attn_block,
 * lm_2block), gradchecks w.r.t. inputs and every parameter, parameter names
 * and weight tying, positional modules in blocks and at the input, seeded
 * sampling, bad input. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "../nn/transformer.h"
#include "testutil.h"

/* ===================================================================================
 * two trivial positional modules (see tests/test_attention.c for the protocol tests)
 * =================================================================================== */

typedef struct tmod {
    pg_posmod pm;
    pg_tensor *p;
} tmod;

/* AddVec: x <- x + vec (dim) */
static pg_tensor *addvec_x(pg_graph *g, pg_posmod *m, pg_tensor *x, const pg_pos_ctx *c)
{
    (void)c;
    return pg_add(g, x, ((tmod *)m)->p);
}

/* HeadSlope: bias = slope[h] * (pos_q[i] - pos_k[j]) */
static pg_tensor *slope_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v;
    pg_tensor *d = pg_pos_pad_bias(g, pg_pos_delta(g, c, c->dtype), c->Lq, c->Lk); /* (B, Lq, Lk) */
    return pg_mul(g, ((tmod *)m)->p, pg_reshape(g, d, PG_SHAPE(c->B, 1, c->Lq, c->Lk)));
}

static const pg_posmod_ops ADDVEC_OPS = {.mod_x = addvec_x};
static const pg_posmod_ops SLOPE_OPS = {.mod_bias = slope_bias};

static tmod *tmod_new(bool addvec, int64_t n, pg_dtype dtype, uint64_t seed)
{
    tmod *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    pg_posmod_init(&t->pm, addvec ? "TestAddVec" : "TestHeadSlope", addvec ? &ADDVEC_OPS : &SLOPE_OPS, NULL);
    t->p = addvec ? pg_module_new_param(&t->pm.base, "vec", dtype, PG_SHAPE(n))
                  : pg_module_new_param(&t->pm.base, "slope", dtype, PG_SHAPE(n, 1, 1));
    pg_rng r = pg_rng_init(seed);
    pg_fill_uniform(t->p, &r, -0.5, 0.5);
    return t;
}

static pg_posmod *make_addvec(const pg_posmod_args *a) { return &tmod_new(true, a->dim, a->dtype, 11)->pm; }
static pg_posmod *make_slope(const pg_posmod_args *a)
{
    return &tmod_new(false, a->heads, a->dtype, 12 + (uint64_t)a->layer)->pm;
}

/* ===================================================================================
 * helpers
 * =================================================================================== */

/* Copies "<prefix><param name>" into every parameter of m, and checks that the
 * fixture has no parameter m lacks (its "<prefix>grad.<name>" entries). */
static void load_params_all(pg_module *m, const pg_tensor_list *l, const char *prefix)
{
    load_params(m, l, prefix);
    size_t n = strlen(prefix);
    int n_grads = 0;
    for (int i = 0; i < l->n; i++)
        if (!strncmp(l->names[i], prefix, n))
            n_grads += !strncmp(l->names[i] + n, "grad.", 5) && strcmp(l->names[i] + n, "grad.x");
    pg_tensor_list p = pg_module_parameters(m);
    cr_assert_eq(n_grads, p.n, "fixture has %d parameters, the module %d", n_grads, p.n);
    pg_tensor_list_free(&p);
}

static pg_block *block_f64(pg_block_config c, pg_posmod *const *pos, int n_pos, uint64_t seed)
{
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(seed);
    pg_block *b = pg_block_new(&c, pos, n_pos, &r);
    cr_assert_not_null(b, "%s", pg_last_error());
    return b;
}

/* ===================================================================================
 * TransformerBlock
 * =================================================================================== */

Test(block, matches_torch)
{
    pg_tensor_list l = fixture("attn_block.safetensors");
    pg_block_config mlp = pg_block_defaults(8, 2), glu = pg_block_defaults(8, 2);
    mlp.ff_hidden = 16;
    mlp.causal = true;
    glu.ff_hidden = 6;
    glu.ff_kind = PG_FF_GLU;
    glu.ff_act = PG_ACT_SILU;
    glu.norm = PG_NORM_RMS;
    const char *prefixes[] = {"mlp.", "glu."};
    pg_block_config cs[] = {mlp, glu};
    pg_graph *g = pg_graph_new();
    for (int c = 0; c < 2; c++) {
        const char *p = prefixes[c];
        pg_block *b = block_f64(cs[c], NULL, 0, 1);
        load_params_all(&b->base, &l, p);
        pg_tensor *x = pg_tensor_copy(NULL, fx(&l, "%sx", p));
        x->requires_grad = true;
        pg_attn_args a = {.mask = c == 0 ? fx(&l, "%smask", p) : NULL};
        pg_graph_reset(g);
        pg_tensor *out = pg_block_forward(g, b, x, &a);
        assert_close(out, fx(&l, "%sout", p), 1e-10, p);
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "%sdy", p)), 0, "%s", pg_graph_error(g));
        assert_close(x->grad, fx(&l, "%sgrad.x", p), 1e-9, "grad x");
        check_param_grads(&b->base, &l, p, 1e-9);
        pg_tensor_free(x);
        pg_module_free(&b->base);
    }
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

typedef struct block_case {
    pg_block *b;
    pg_tensor *mask, *pos;
} block_case;

static pg_tensor *call_block(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const block_case *c = ctx;
    pg_attn_args a = {.mask = c->mask, .pos = c->pos};
    return pg_block_forward(g, c->b, in[0], &a);
}

Test(block, gradcheck_layernorm_mlp_with_positional_modules)
{
    pg_block_config c = pg_block_defaults(4, 2);
    c.ff_hidden = 6;
    c.causal = true;
    pg_posmod *pos[] = {&tmod_new(true, 4, PG_F64, 1)->pm, &tmod_new(false, 2, PG_F64, 2)->pm};
    pg_block *b = block_f64(c, pos, 2, 3);
    test_jitter_norms(&b->base, 4);
    pg_tensor *p = T64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0.5, 1, 3, 7);
    block_case bc = {b, key_mask(), p};
    pg_tensor *in[64] = {randt(PG_SHAPE(2, 5, 4), 5, true)};
    int n = with_params(in, 1, &b->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_block, n, in, &bc, &o);
    pg_tensor *own[] = {in[0], bc.mask, p};
    free_all(3, own);
    pg_module_free(&b->base);
}

Test(block, gradcheck_rmsnorm_swiglu)
{
    pg_block_config c = pg_block_defaults(4, 1);
    c.ff_hidden = 5;
    c.ff_kind = PG_FF_GLU;
    c.ff_act = PG_ACT_SILU;
    c.norm = PG_NORM_RMS;
    c.bias = false;
    pg_block *b = block_f64(c, NULL, 0, 3);
    test_jitter_norms(&b->base, 4);
    block_case bc = {b, NULL, NULL};
    pg_tensor *in[64] = {randt(PG_SHAPE(1, 3, 4), 5, true)};
    int n = with_params(in, 1, &b->base);
    cr_assert_eq(n, 7, "%d inputs", n); /* x and 6 weights, no biases */
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_block, n, in, &bc, &o);
    pg_tensor_free(in[0]);
    pg_module_free(&b->base);
}

Test(block, parameter_names)
{
    pg_posmod *pos[] = {&tmod_new(false, 2, PG_F64, 1)->pm};
    pg_block *b = block_f64(pg_block_defaults(8, 2), pos, 1, 1);
    pg_tensor_list p = pg_module_parameters(&b->base);
    const char *want[] = {"norm1.weight",       "norm1.bias",         "attn.to_qkv.weight", "attn.to_qkv.bias",
                          "attn.to_out.weight", "attn.to_out.bias",   "attn.pos.slope",     "norm2.weight",
                          "norm2.bias",         "ff.proj_in.weight",  "ff.proj_in.bias",    "ff.proj_out.weight",
                          "ff.proj_out.bias"};
    cr_assert_eq(p.n, 13);
    for (int i = 0; i < 13; i++)
        cr_assert_str_eq(p.names[i], want[i]);
    assert_shape(b->ff->proj_in->weight, 2, (int64_t[]){32, 8}); /* ff_hidden 0: 4 dim */
    cr_assert_float_eq(b->cfg.norm_eps, 1e-5, 0);
    pg_tensor_list_free(&p);
    pg_module_free(&b->base);
}

Test(block, mod_x_acts_before_the_pre_norm)
{
    /* block(x) with AddVec equals the same block without it on x + vec: the residual carries vec */
    tmod *v = tmod_new(true, 8, PG_F64, 1);
    pg_posmod *pos[] = {&v->pm};
    pg_block *with = block_f64(pg_block_defaults(8, 2), pos, 1, 2), *plain = block_f64(pg_block_defaults(8, 2), NULL, 0, 2);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 3, false);
    pg_tensor *a = pg_block_forward(NULL, with, x, NULL);
    pg_tensor *xv = pg_add(NULL, x, v->p);
    pg_tensor *b = pg_block_forward(NULL, plain, xv, NULL);
    cr_assert_lt(max_err(a, b), 1e-14);
    pg_tensor *own[] = {x, a, xv, b};
    free_all(4, own);
    pg_module_free(&with->base);
    pg_module_free(&plain->base);
}

Test(block, dropout_needs_a_generator_and_is_seeded)
{
    pg_block_config c = pg_block_defaults(8, 2);
    c.resid_dropout = 0.3;
    pg_block *b = block_f64(c, NULL, 0, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 3, false);
    ASSERT_FAILS(pg_block_forward(NULL, b, x, NULL), "pg_block_forward: dropout in train mode needs args.rng");
    pg_rng r1 = pg_rng_init(5), r2 = pg_rng_init(5);
    pg_tensor *a = pg_block_forward(NULL, b, x, &(pg_attn_args){.rng = &r1});
    pg_tensor *a2 = pg_block_forward(NULL, b, x, &(pg_attn_args){.rng = &r2});
    cr_assert_eq(max_err(a, a2), 0.0);
    pg_module_train(&b->base, false);
    pg_tensor *e = pg_block_forward(NULL, b, x, NULL);
    cr_assert_gt(max_err(a, e), 1e-4);
    pg_tensor *own[] = {x, a, a2, e};
    free_all(4, own);
    pg_module_free(&b->base);
}

Test(block, bad_input)
{
    pg_rng r = pg_rng_init(1);
    pg_block_config c = pg_block_defaults(10, 4);
    ASSERT_FAILS(pg_block_new(&c, NULL, 0, &r), "pg_mha_new: dim 10 must be a positive multiple of heads 4");
    c = pg_block_defaults(8, 2);
    c.resid_dropout = 1.5;
    ASSERT_FAILS(pg_block_new(&c, NULL, 0, &r), "pg_block_new: need dim >= 1");
    c = pg_block_defaults(8, 2);
    c.norm = (pg_norm_kind)7;
    pg_posmod *pos[] = {&tmod_new(true, 8, PG_F64, 1)->pm}; /* freed by the failing constructor */
    ASSERT_FAILS(pg_block_new(&c, pos, 1, &r), "a known norm");
    ASSERT_FAILS(pg_block_new(NULL, NULL, 0, &r), "pg_block_new: config is NULL");
    pg_block *b = block_f64(pg_block_defaults(8, 2), NULL, 0, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 6), 1, false), *x2 = randt(PG_SHAPE(5, 8), 1, false),
              *ok = randt(PG_SHAPE(2, 5, 8), 1, false), *m4 = TBOOL(PG_SHAPE(2, 4), 1, 1, 1, 1, 1, 1, 1, 1),
              *mf = randt(PG_SHAPE(2, 5), 2, false);
    ASSERT_FAILS(pg_block_forward(NULL, b, x, NULL), "pg_block_forward: x is f64[2,5,6], expected (B, L, 8) of f64");
    ASSERT_FAILS(pg_block_forward(NULL, b, x2, NULL), "x is f64[5,8]");
    ASSERT_FAILS(pg_block_forward(NULL, NULL, ok, NULL), "pg_block_forward: module is NULL");
    ASSERT_FAILS(pg_block_forward(NULL, b, ok, &(pg_attn_args){.mask = m4}),
                 "pg_block_forward: mask is bool[2,4], expected a bool key mask (B, Lk) = (2, 5)");
    ASSERT_FAILS(pg_block_forward(NULL, b, ok, &(pg_attn_args){.mask = mf}), "mask is f64[2,5]");
    pg_tensor *own[] = {x, x2, ok, m4, mf};
    free_all(5, own);
    pg_module_free(&b->base);
}

/* ===================================================================================
 * the language model
 * =================================================================================== */

static pg_lm *tiny_lm(int64_t vocab, int64_t dim, int64_t heads, int64_t layers, int64_t hidden, bool tie)
{
    pg_lm_config c = pg_lm_defaults(vocab, dim, heads, layers);
    c.ff_hidden = hidden;
    c.tie_weights = tie;
    c.dtype = PG_F64;
    c.seed = 3;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    return lm;
}

Test(lm, matches_torch_untied_and_tied)
{
    pg_tensor_list l = fixture("lm_2block.safetensors");
    pg_graph *g = pg_graph_new();
    for (int tie = 0; tie < 2; tie++) {
        const char *p = tie ? "tied." : "untied.";
        pg_lm *lm = tiny_lm(11, 8, 2, 2, 16, tie);
        load_params_all(&lm->base, &l, p);
        pg_graph_reset(g);
        pg_tensor *logits = pg_lm_forward(g, lm, fx(&l, "ids"), NULL);
        assert_close(logits, fx(&l, "%slogits", p), 1e-10, "logits");
        pg_tensor *loss = pg_cross_entropy(g, logits, fx(&l, "targets"), PG_LM_IGNORE, 0.0);
        assert_close(loss, fx(&l, "%sloss", p), 1e-10, "loss");
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        check_param_grads(&lm->base, &l, p, 1e-9);
        /* pg_lm_loss gives the same number */
        pg_graph_reset(g);
        assert_close(pg_lm_loss(g, lm, fx(&l, "ids"), fx(&l, "targets"), NULL), fx(&l, "%sloss", p), 1e-12, "loss");
        pg_module_free(&lm->base);
    }
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

typedef struct lm_case {
    pg_lm *lm;
    pg_tensor *ids, *mask;
} lm_case;

static pg_tensor *call_lm(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const lm_case *c = ctx;
    return pg_lm_forward(g, c->lm, c->ids, &(pg_attn_args){.mask = c->mask});
}

static void gradcheck_lm(bool tie)
{
    pg_lm *lm = tiny_lm(5, 4, 2, 2, 6, tie);
    test_jitter_norms(&lm->base, 1);
    lm_case c = {lm, TI64(PG_SHAPE(2, 4), 1, 4, 0, 2, 3, 3, 1, 0), TBOOL(PG_SHAPE(2, 4), 1, 1, 0, 1, 0, 1, 1, 1)};
    pg_tensor *in[128];
    int n = with_params(in, 0, &lm->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_lm, n, in, &c, &o);
    pg_tensor_free(c.ids);
    pg_tensor_free(c.mask);
    pg_module_free(&lm->base);
}

Test(lm, gradcheck_every_parameter) { gradcheck_lm(false); }
Test(lm, gradcheck_tied) { gradcheck_lm(true); }

Test(lm, names_and_tying)
{
    pg_lm *lm = tiny_lm(11, 8, 2, 2, 0, true);
    cr_assert_eq(lm->head->weight, lm->tok_emb->weight);
    cr_assert_eq(pg_module_find_param(&lm->base, "head.weight"), lm->tok_emb->weight);
    pg_tensor_list p = pg_module_parameters(&lm->base);
    cr_assert_str_eq(p.names[0], "tok_emb.weight");
    cr_assert_str_eq(p.names[1], "blocks.0.norm1.weight");
    cr_assert_str_eq(p.names[p.n - 1], "norm.bias"); /* head.weight is tok_emb.weight, listed once */
    int64_t per_block = 16 + (8 * 24 + 24) + (64 + 8) + 16 + (8 * 32 + 32) + (32 * 8 + 8);
    cr_assert_eq(pg_module_num_elements(&lm->base), 88 + 2 * per_block + 16);
    pg_tensor_list_free(&p);
    pg_module_free(&lm->base);
    lm = tiny_lm(11, 8, 2, 2, 0, false);
    cr_assert_neq(lm->head->weight, lm->tok_emb->weight);
    cr_assert_null(lm->head->bias);
    p = pg_module_parameters(&lm->base);
    cr_assert_str_eq(p.names[p.n - 1], "head.weight");
    cr_assert_eq(pg_module_num_elements(&lm->base), 88 + 2 * per_block + 16 + 88);
    pg_tensor_list_free(&p);
    pg_module_free(&lm->base);
}

Test(lm, positional_modules_from_specs)
{
    pg_lm_config c = pg_lm_defaults(7, 4, 2, 2);
    c.dtype = PG_F64;
    c.n_input_pos = 1;
    c.input_pos[0] = (pg_posmod_spec){NULL, make_addvec, NULL};
    c.n_layer_pos = 2;
    c.layer_pos[0] = (pg_posmod_spec){NULL, make_slope, NULL};
    c.layer_pos[1] = (pg_posmod_spec){NULL, make_slope, NULL};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    cr_assert_not_null(pg_module_find_param(&lm->base, "pos.vec"));
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.1.attn.pos.1.slope"));
    cr_assert_eq(lm->blocks[1]->attn->n_pos, 2);
    cr_assert_neq(lm->blocks[0]->attn->pos[0], lm->blocks[1]->attn->pos[0]); /* own instances */
    /* gradients reach them through the whole model */
    pg_tensor *ids = TI64(PG_SHAPE(1, 4), 1, 2, 3, 4);
    pg_graph *g = pg_graph_new();
    pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    const char *names[] = {"pos.vec", "blocks.0.attn.pos.0.slope", "blocks.1.attn.pos.1.slope"};
    for (int i = 0; i < 3; i++) {
        pg_tensor *t = pg_module_find_param(&lm->base, names[i]);
        double s = 0;
        for (int64_t j = 0; j < t->numel; j++)
            s += fabs(pg_get(t->grad, j));
        cr_assert_gt(s, 0, "%s got no gradient", names[i]);
    }
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
    /* an input module acting inside attention, and an unknown kind, are refused */
    c.n_layer_pos = 0;
    c.input_pos[0] = (pg_posmod_spec){NULL, make_slope, NULL};
    ASSERT_FAILS(pg_lm_new(&c), "input positional module 0 (TestHeadSlope) has mod_qkv / mod_bias hooks");
    c.n_input_pos = 0;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){"no_such_scheme", NULL, NULL};
    ASSERT_FAILS(pg_lm_new(&c), "positional module 0 of layer 0: pg_posmod_from_spec: unknown positional module kind");
}

Test(lm, gpt2_init)
{
    pg_lm_config c = pg_lm_defaults(50, 32, 4, 1);
    c.init_std = 0.02;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    const pg_tensor *w = lm->tok_emb->weight;
    double s2 = 0;
    for (int64_t i = 0; i < w->numel; i++)
        s2 += pg_get(w, i) * pg_get(w, i);
    cr_assert_lt(fabs(sqrt(s2 / (double)w->numel) - 0.02), 0.002);
    cr_assert_eq(pg_get(lm->blocks[0]->attn->to_qkv->bias, 0), 0.0);
    cr_assert_eq(w->dtype, PG_F32);
    pg_module_free(&lm->base);
    /* the same seed gives the same model */
    pg_lm *a = pg_lm_new(&c), *b = pg_lm_new(&c);
    cr_assert_eq(max_err(a->head->weight, b->head->weight), 0.0);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
}

Test(lm, bad_input)
{
    pg_lm_config c = pg_lm_defaults(11, 10, 4, 1);
    ASSERT_FAILS(pg_lm_new(&c), "pg_lm_new: need vocab >= 1, dim a positive multiple of heads");
    c = pg_lm_defaults(0, 8, 2, 1);
    ASSERT_FAILS(pg_lm_new(&c), "vocab 0");
    c = pg_lm_defaults(11, 8, 2, 1);
    c.dropout = -0.1;
    ASSERT_FAILS(pg_lm_new(&c), "need dropout in [0, 1)");
    c = pg_lm_defaults(11, 8, 2, 1);
    c.n_layer_pos = PG_LM_MAX_POS + 1;
    ASSERT_FAILS(pg_lm_new(&c), "n_layer_pos 5 must be in [0, 4]");
    ASSERT_FAILS(pg_lm_new(NULL), "pg_lm_new: config is NULL");

    c = pg_lm_defaults(11, 8, 2, 1);
    c.max_len = 4;
    c.dtype = PG_F64;
    pg_lm *lm = pg_lm_new(&c);
    pg_tensor *big = TI64(PG_SHAPE(1, 3), 0, 11, 2), *neg = TI64(PG_SHAPE(1, 3), 0, -1, 2),
              *flt = T64(PG_SHAPE(1, 3), 0, 1, 2), *flat = TI64(PG_SHAPE(3), 0, 1, 2),
              *longer = TI64(PG_SHAPE(1, 5), 0, 1, 2, 3, 4), *ok = TI64(PG_SHAPE(2, 3), 0, 1, 2, 3, 4, 5),
              *m = TBOOL(PG_SHAPE(2, 2), 1, 1, 1, 1), *mf = T64(PG_SHAPE(2, 3), 1, 1, 1, 1, 1, 1),
              *tg = TI64(PG_SHAPE(2, 2), 1, 1, 1, 1);
    ASSERT_FAILS(pg_lm_forward(NULL, lm, big, NULL),
                 "pg_lm_forward: id 11 at [0, 1] is outside the vocabulary [0, 11)");
    ASSERT_FAILS(pg_lm_forward(NULL, lm, neg, NULL), "id -1 at [0, 1] is outside the vocabulary");
    ASSERT_FAILS(pg_lm_forward(NULL, lm, flt, NULL), "ids is f64[1,3], expected i64 (B, L)");
    ASSERT_FAILS(pg_lm_forward(NULL, lm, flat, NULL), "ids is i64[3], expected i64 (B, L)");
    ASSERT_FAILS(pg_lm_forward(NULL, lm, longer, NULL), "ids is i64[1,5], expected i64 (B, L) with 1 <= L <= max_len 4");
    ASSERT_FAILS(pg_lm_forward(NULL, lm, ok, &(pg_attn_args){.mask = m}),
                 "pg_lm_forward: mask is bool[2,2], expected a bool key mask (B, Lk) = (2, 3)");
    ASSERT_FAILS(pg_lm_forward(NULL, lm, ok, &(pg_attn_args){.mask = mf}), "mask is f64[2,3]");
    ASSERT_FAILS(pg_lm_forward(NULL, NULL, ok, NULL), "pg_lm_forward: module is NULL");
    ASSERT_FAILS(pg_lm_loss(NULL, lm, ok, tg, NULL), "pg_cross_entropy: targets must have the logits' shape");
    pg_tensor *own[] = {big, neg, flt, flat, longer, ok, m, mf, tg};
    free_all(9, own);
    pg_module_free(&lm->base);
}

/* ===================================================================================
 * sampling
 * =================================================================================== */


Test(sample, temperature_shapes_the_distribution)
{
    /* empirical frequencies of 20000 draws against softmax(logits / T) */
    const double lv[4] = {1.0, 0.0, -0.5, 2.0};
    pg_tensor *logits = T64(PG_SHAPE(1, 4), 1.0, 0.0, -0.5, 2.0);
    const double temps[2] = {0.5, 2.0};
    double freq[2][4] = {{0}};
    for (int t = 0; t < 2; t++) {
        pg_rng r = pg_rng_init(17);
        const int N = 20000;
        for (int i = 0; i < N; i++) {
            int64_t id;
            cr_assert_eq(pg_sample_logits(logits, temps[t], 0, &r, &id), 0, "%s", pg_last_error());
            freq[t][id] += 1.0 / N;
        }
        double z = 0;
        for (int k = 0; k < 4; k++)
            z += exp(lv[k] / temps[t]);
        for (int k = 0; k < 4; k++)
            cr_assert_lt(fabs(freq[t][k] - exp(lv[k] / temps[t]) / z), 0.012, "T %g id %d: %g", temps[t], k,
                         freq[t][k]);
    }
    cr_assert_gt(freq[0][3] - freq[1][3], 0.2); /* colder: the top id much more often */
    /* top_k 2 never draws outside the two largest */
    pg_rng r = pg_rng_init(3);
    for (int i = 0; i < 2000; i++) {
        int64_t id;
        pg_sample_logits(logits, 1.0, 2, &r, &id);
        cr_assert(id == 0 || id == 3, "drew %lld", (long long)id);
    }
    pg_tensor_free(logits);
}

Test(sample, greedy_and_top_k_one)
{
    pg_tensor *logits = T64(PG_SHAPE(2, 4), 0.1, 3.0, 3.0, -1.0, 5.0, 0.0, 1.0, 2.0);
    int64_t out[2];
    cr_assert_eq(pg_sample_logits(logits, 0.0, 0, NULL, out), 0); /* greedy needs no generator */
    cr_assert_eq(out[0], 1);                                      /* the first maximum */
    cr_assert_eq(out[1], 0);
    pg_rng r = pg_rng_init(1);
    for (int i = 0; i < 50; i++) {
        int64_t k1[2];
        cr_assert_eq(pg_sample_logits(logits, 1.5, 1, &r, k1), 0);
        cr_assert_eq(k1[0], 1);
        cr_assert_eq(k1[1], 0);
    }
    pg_tensor *nan_l = T64(PG_SHAPE(1, 2), NAN, 1.0), *inf_l = T64(PG_SHAPE(1, 2), -INFINITY, -INFINITY);
    ASSERT_RC_FAILS(pg_sample_logits(nan_l, 1.0, 0, &r, out), "row 0 has a NaN");
    ASSERT_RC_FAILS(pg_sample_logits(inf_l, 1.0, 0, &r, out), "no finite one");
    ASSERT_RC_FAILS(pg_sample_logits(logits, -1.0, 0, &r, out), "finite temperature >= 0");
    ASSERT_RC_FAILS(pg_sample_logits(logits, 1.0, 0, NULL, out), "a generator when sampling");
    pg_tensor *own[] = {logits, nan_l, inf_l};
    free_all(3, own);
}

Test(sample, generate_is_seeded_and_top_k_one_is_greedy)
{
    pg_lm *lm = tiny_lm(13, 8, 2, 2, 0, true);
    pg_tensor *prompt = TI64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    pg_rng r1 = pg_rng_init(42), r2 = pg_rng_init(42), r3 = pg_rng_init(43), r4 = pg_rng_init(1);
    pg_tensor *a = pg_lm_generate(lm, prompt, 12, 1.0, 0, &r1), *b = pg_lm_generate(lm, prompt, 12, 1.0, 0, &r2),
              *c = pg_lm_generate(lm, prompt, 12, 1.0, 0, &r3);
    cr_assert_not_null(a, "%s", pg_last_error());
    assert_shape(a, 2, (int64_t[]){2, 15});
    cr_assert_eq(max_err(a, b), 0.0);
    cr_assert_gt(max_err(a, c), 0.0); /* another seed, other tokens (12 draws from 13 ids) */
    for (int64_t i = 0; i < 3; i++)   /* the prompt stays in front */
        cr_assert_eq(pg_i64(a)[i], pg_i64(prompt)[i]);
    for (int64_t i = 0; i < a->numel; i++)
        cr_assert(pg_i64(a)[i] >= 0 && pg_i64(a)[i] < 13);
    pg_tensor *greedy = pg_lm_generate(lm, prompt, 6, 0.0, 0, NULL), *k1 = pg_lm_generate(lm, prompt, 6, 0.8, 1, &r4);
    cr_assert_eq(max_err(greedy, k1), 0.0);
    cr_assert(lm->base.training, "the module's mode is restored");
    /* greedy equals the argmax of a full forward at each step */
    pg_graph *g = pg_graph_new();
    pg_module_train(&lm->base, false);
    pg_tensor *ids = pg_tensor_empty(NULL, PG_I64, PG_SHAPE(2, 8));
    for (int64_t bi = 0; bi < 2; bi++)
        memcpy(pg_i64(ids) + bi * 8, pg_i64(greedy) + bi * 9, 8 * sizeof(int64_t));
    pg_tensor *logits = pg_lm_forward(g, lm, ids, NULL);
    pg_tensor *am = pg_argmax(g, logits, -1, false); /* (2, 8) */
    for (int64_t bi = 0; bi < 2; bi++)
        cr_assert_eq(pg_i64(am)[bi * 8 + 7], pg_i64(greedy)[bi * 9 + 8]);
    pg_graph_free(g);
    pg_tensor *own[] = {prompt, a, b, c, greedy, k1, ids};
    free_all(7, own);
    pg_module_free(&lm->base);
}

Test(sample, generate_past_max_len_and_bad_input)
{
    pg_lm_config c = pg_lm_defaults(9, 8, 2, 1);
    c.max_len = 4;
    pg_lm *lm = pg_lm_new(&c);
    pg_tensor *prompt = TI64(PG_SHAPE(1, 3), 1, 2, 3), *flt = T64(PG_SHAPE(1, 2), 1, 2),
              *big = TI64(PG_SHAPE(1, 2), 1, 9);
    pg_rng r = pg_rng_init(5);
    pg_tensor *s = pg_lm_generate(lm, prompt, 6, 1.0, 3, &r); /* the window slides over the last 4 ids */
    cr_assert_not_null(s, "%s", pg_last_error());
    assert_shape(s, 2, (int64_t[]){1, 9});
    pg_tensor *z = pg_lm_generate(lm, prompt, 0, 1.0, 0, &r);
    assert_shape(z, 2, (int64_t[]){1, 3});
    ASSERT_FAILS(pg_lm_generate(lm, flt, 2, 1.0, 0, &r), "pg_lm_generate: need a model, an i64 prompt (B, L0)");
    ASSERT_FAILS(pg_lm_generate(lm, prompt, -1, 1.0, 0, &r), "n_new >= 0");
    ASSERT_FAILS(pg_lm_generate(NULL, prompt, 2, 1.0, 0, &r), "need a model");
    ASSERT_FAILS(pg_lm_generate(lm, big, 2, 1.0, 0, &r), "pg_lm_generate: prompt id 9 at [0, 1] is outside the vocabulary [0, 9)");
    ASSERT_FAILS(pg_lm_generate(lm, prompt, 2, 1.0, -2, &r), "top_k >= 0");
    ASSERT_FAILS(pg_lm_generate(lm, prompt, 2, 1.0, 0, NULL), "a generator when sampling");
    pg_tensor *own[] = {prompt, flt, big, s, z};
    free_all(5, own);
    pg_module_free(&lm->base);
}
