/* The forgetting gate (nn/pos_fox.c): hand-computed values, PyTorch parity of
 * the bias for each option (tests/fixtures/gen_pos_fox.py) and inside
 * MultiheadAttention, gradchecks w.r.t. x and fgate_proj through the attention,
 * initial values and names, training in MHA and a 1-block LM, bad options and input. */
#include <stdlib.h>

#include <math.h>

#include "../nn/local_attention.h"
#include "../nn/pos_fox.h"
#include "testutil.h"

static pg_fox *fox_f64(int64_t H, int64_t dim, const pg_fox_opts *o, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_posmod *m = pg_fox_new(H, dim, o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return (pg_fox *)m;
}

/* mod_bias for x (B, L, dim), self-attention, causal unless bidirectional; pos (B, Lp) or NULL */
static pg_tensor *bias_of(pg_graph *g, pg_fox *m, pg_tensor *x, pg_tensor *pos, bool causal)
{
    int64_t B = x->shape[0], L = x->shape[1];
    pg_pos_ctx c = {.pos_q = pos, .pos_k = pos, .self_attn = true, .causal = causal, .B = B, .heads = m->heads,
                    .head_dim = 2, .Lq = L, .Lk = L, .scale = 1.0, .dtype = x->dtype, .x = x};
    return m->pm.ops->mod_bias(g, &m->pm, NULL, NULL, NULL, &c);
}

/* ===================================================================================
 * hand-computed values
 * =================================================================================== */

Test(pos_fox, hand_values)
{
    /* H = 1, dim = 1, w = 1, b = 0: x = 0, ln 3, -ln 3 gives f = 1/2, 3/4, 1/4 and
     * c = ln(1/2), ln(3/8), ln(3/32): bias_ij = c_i - c_j = log prod_{j < l <= i} f_l */
    pg_fox *m = fox_f64(1, 1, NULL, 1);
    pg_set(m->fgate_proj->weight, 0, 1.0);
    cr_assert_eq(pg_get(m->fgate_proj->bias, 0), 0.0, "FoX's bias starts at 0");
    pg_tensor *x = T64(PG_SHAPE(1, 3, 1), 0.0, log(3.0), -log(3.0));
    pg_graph *g = pg_graph_new();
    pg_tensor *b = bias_of(g, m, x, NULL, true);
    cr_assert_not_null(b, "%s", pg_graph_error(g));
    assert_shape(b, 4, (int64_t[]){1, 1, 3, 3});
    /* row i, column j at i * 3 + j; above the diagonal c_i - c_j = -(the entry mirrored below it) */
    const double want[9] = {0, -log(0.75), -log(0.75 * 0.25), log(0.75), 0, -log(0.25), log(0.75 * 0.25), log(0.25), 0};
    for (int i = 0; i < 9; i++)
        cr_assert_float_eq(pg_get(b, i), want[i], 1e-14, "entry %d: %.17g, want %.17g", i, pg_get(b, i), want[i]);
    ASSERT_VALUES(b, 1e-6, 0, 0.287682, 1.673976, -0.287682, 0, 1.386294, -1.673976, -1.386294, 0);
    /* w = 0, b = 0: every gate 1/2, the bias is ALiBi's with slope ln 2: -(i - j) ln 2 below the diagonal */
    pg_set(m->fgate_proj->weight, 0, 0.0);
    b = bias_of(g, m, x, NULL, true);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j <= i; j++)
            cr_assert_float_eq(pg_get(b, i * 3 + j), -(i - j) * log(2.0), 1e-14);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->pm.base);
}

/* random x: the bias is 0 on the diagonal and <= 0 below it (every gate is < 1) */
Test(pos_fox, diagonal_zero_below_nonpositive)
{
    pg_fox *m = fox_f64(3, 4, &(pg_fox_opts){.bidirectional = true}, 2);
    pg_tensor *x = randt(PG_SHAPE(2, 6, 4), 3, false);
    pg_graph *g = pg_graph_new();
    pg_tensor *b = bias_of(g, m, x, NULL, false);
    cr_assert_not_null(b, "%s", pg_graph_error(g));
    for (int64_t r = 0; r < 2 * 3; r++)
        for (int64_t i = 0; i < 6; i++)
            for (int64_t j = 0; j < 6; j++) {
                double v = pg_get(b, (r * 6 + i) * 6 + j);
                cr_assert(i == j ? v == 0.0 : v < 0.0, "row %lld (%lld, %lld): %g", (long long)r, (long long)i,
                          (long long)j, v);
            }
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * PyTorch parity: the bias alone, and inside MultiheadAttention
 * =================================================================================== */

typedef struct fcase {
    const char *name;
    int64_t H, dim, Lp; /* Lp: positioned tokens (0: all) */
    pg_fox_opts o;
} fcase;

static const fcase CASES[] = {
    {"fox", 3, 4, 0, {0}},
    {"dd_alibi", 2, 3, 0, {.init = PG_FOX_INIT_DD_ALIBI, .post_log_scale = 0.7}},
    {"bidir", 2, 4, 0, {.post_log_scale = 1.3, .bidirectional = true}},
    {"pad", 2, 3, 3, {0}},
};

Test(pos_fox, bias_matches_torch)
{
    pg_tensor_list l = fixture("pos_fox.safetensors");
    double worst = 0, worst_grad = 0;
    char key[64];
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const fcase *k = &CASES[ci];
        pg_fox *m = fox_f64(k->H, k->dim, &k->o, 1);
        snprintf(key, sizeof key, "%s.fox.", k->name);
        load_params(&m->pm.base, &l, key);
        snprintf(key, sizeof key, "%s.x", k->name);
        pg_tensor *x = fx_copy(&l, key, true), *pos = NULL;
        if (k->Lp) {
            pos = pg_tensor_empty(NULL, PG_F64, 2, (int64_t[]){x->shape[0], k->Lp});
            for (int64_t i = 0; i < pos->numel; i++)
                pg_set(pos, i, 10.0 + (double)i); /* values do not matter, only how many */
        }
        pg_graph *g = pg_graph_new();
        pg_tensor *out = bias_of(g, m, x, pos, !k->o.bidirectional);
        cr_assert_not_null(out, "%s: %s", k->name, pg_graph_error(g));
        assert_close(out, fx(&l, "%s.out", k->name), 1e-10, k->name);
        double e = max_err(out, fx(&l, "%s.out", k->name));
        worst = e > worst ? e : worst;
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "%s.dy", k->name)), 0, "%s", pg_graph_error(g));
        assert_close(x->grad, fx(&l, "%s.grad.x", k->name), 1e-10, "grad x");
        snprintf(key, sizeof key, "%s.", k->name);
        check_param_grads(&m->pm.base, &l, key, 1e-10);
        e = max_err(x->grad, fx(&l, "%s.grad.x", k->name));
        worst_grad = e > worst_grad ? e : worst_grad;
        e = max_err(m->fgate_proj->weight->grad, fx(&l, "%s.grad.fgate_proj.weight", k->name));
        worst_grad = e > worst_grad ? e : worst_grad;
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_tensor_free(pos);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_fox bias parity: outputs %.3g, gradients %.3g", worst, worst_grad);
    pg_tensor_list_free_all(&l);
}

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, pg_posmod *pos, uint64_t seed)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal}, &pos, 1, seed);
}

Test(pos_fox, mha_matches_torch)
{
    pg_tensor_list l = fixture("pos_fox.safetensors");
    for (int bi = 0; bi < 2; bi++) {
        const char *p = bi ? "mha_bi." : "mha.";
        pg_fox_opts o = {.bidirectional = bi, .post_log_scale = bi ? 0.9 : 1.0};
        pg_mha *m = mha_with(8, 4, !bi, &fox_f64(4, 8, &o, 1)->pm, 1);
        load_params(&m->base, &l, p);
        char key[64];
        snprintf(key, sizeof key, "%sx", p);
        pg_tensor *x = fx_copy(&l, key, true);
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = fx(&l, "%smask", p)});
        cr_assert_not_null(out, "%s", pg_graph_error(g));
        assert_close(out, fx(&l, "%sout", p), 1e-10, p);
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "%sdy", p)), 0, "%s", pg_graph_error(g));
        assert_close(x->grad, fx(&l, "%sgrad.x", p), 1e-10, "grad x");
        check_param_grads(&m->base, &l, p, 1e-10);
        cr_log_info("pos_fox mha parity (%s): out %.3g, grad x %.3g, grad fgate_proj.weight %.3g", p,
                    max_err(out, fx(&l, "%sout", p)), max_err(x->grad, fx(&l, "%sgrad.x", p)),
                    max_err(pg_module_find_param(&m->base, "pos.fgate_proj.weight")->grad,
                            fx(&l, "%sgrad.pos.fgate_proj.weight", p)));
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&m->base);
    }
    pg_tensor_list_free_all(&l);
}

/* ===================================================================================
 * gradchecks: through MultiheadAttention w.r.t. x, fgate_proj and the rest
 * =================================================================================== */

typedef struct mha_case {
    pg_mha *m;
    pg_tensor *mask, *pos;
} mha_case;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const mha_case *c = ctx;
    return pg_mha_forward(g, c->m, in[0], NULL, &(pg_attn_args){.mask = c->mask, .pos = c->pos});
}

static pg_tensor *call_bias(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return bias_of(g, ctx, in[0], NULL, !((pg_fox *)ctx)->bidirectional);
}

static double worst_gc;
static void gradcheck_worst(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx, const pg_gradcheck_opts *o)
{
    pg_gradcheck_result r = pg_gradcheck(fn, n, in, ctx, o);
    cr_assert(r.ok, "%s (max abs err %.3g, checked %d)", r.message, r.max_abs_err, r.checked);
    cr_assert_gt(r.checked, 0, "gradcheck checked nothing");
    worst_gc = r.max_abs_err > worst_gc ? r.max_abs_err : worst_gc;
}

/* weights large enough that the gates differ between tokens */
static void spread(pg_fox *m, double bias)
{
    pg_rng r = pg_rng_init(17);
    pg_init_normal(m->fgate_proj->weight, &r, 0.0, 0.5);
    for (int64_t i = 0; i < m->fgate_proj->bias->numel; i++)
        pg_set(m->fgate_proj->bias, i, bias + 0.3 * (double)i);
}

Test(pos_fox, gradcheck_through_attention)
{
    pg_gradcheck_opts go = f64_only();
    const pg_fox_opts opts[] = {{0}, {.init = PG_FOX_INIT_DD_ALIBI, .post_log_scale = 0.6}, {.post_log_scale = 1.7},
                                {.bidirectional = true, .post_log_scale = 0.8}};
    for (size_t oi = 0; oi < sizeof opts / sizeof *opts; oi++)
        for (int padded = 0; padded < 2; padded++) {
            pg_fox *f = fox_f64(2, 4, &opts[oi], 3);
            spread(f, opts[oi].init == PG_FOX_INIT_DD_ALIBI ? 2.0 : 0.0);
            /* the bias alone w.r.t. x and fgate_proj */
            pg_tensor *xb = randt(PG_SHAPE(2, 4, 4), 5, true);
            pg_tensor *inb[4] = {xb};
            int n = with_params(inb, 1, &f->pm.base);
            gradcheck_worst(call_bias, n, inb, f, &go);
            pg_tensor_free(xb);
            /* inside MHA (causal unless bidirectional, key mask, left padding) w.r.t. x and every parameter */
            pg_mha *mha = mha_with(4, 2, !opts[oi].bidirectional, &f->pm, 4);
            mha_case c = {mha, key_mask(), padded ? T64(PG_SHAPE(2, 3), 0, 1, 2, 0, 1, 2) : NULL};
            pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 9, true);
            pg_tensor *in[16] = {x};
            n = with_params(in, 1, &mha->base);
            gradcheck_worst(call_mha, n, in, &c, &go);
            pg_tensor *own[] = {x, c.mask, c.pos};
            free_all(3, own);
            pg_module_free(&mha->base);
        }
    cr_log_info("pos_fox gradcheck: worst abs error %.3g", worst_gc);
}

/* ===================================================================================
 * options: initial values, names, left padding
 * =================================================================================== */

Test(pos_fox, init_and_names)
{
    for (int v = 0; v < 4; v++) {
        pg_fox_opts o = {.init = v & 1 ? PG_FOX_INIT_DD_ALIBI : PG_FOX_INIT_FOX, .bidirectional = v >= 2};
        pg_fox *m = fox_f64(6, 40, &o, 5);
        int64_t G = v >= 2 ? 12 : 6;
        pg_tensor_list p = pg_module_parameters(&m->pm.base);
        cr_assert_eq(p.n, 2);
        cr_assert_str_eq(p.names[0], "fgate_proj.weight");
        cr_assert_str_eq(p.names[1], "fgate_proj.bias");
        assert_shape(p.tensors[0], 2, (int64_t[]){G, 40});
        assert_shape(p.tensors[1], 1, (int64_t[]){G});
        double s2 = 0, mean = 0;
        for (int64_t i = 0; i < p.tensors[0]->numel; i++) {
            mean += pg_get(p.tensors[0], i);
            s2 += pg_get(p.tensors[0], i) * pg_get(p.tensors[0], i);
        }
        double std = sqrt(s2 / (double)p.tensors[0]->numel);
        cr_assert(std > 0.017 && std < 0.023 && fabs(mean / (double)p.tensors[0]->numel) < 0.004, "N(0, 0.02): std %g",
                  std);
        for (int64_t i = 0; i < G; i++)
            cr_assert_eq(pg_get(p.tensors[1], i), v & 1 ? 5.0 : 0.0);
        cr_assert_eq(m->post_log_scale, 1.0);
        pg_tensor_list_free(&p);
        pg_module_free(&m->pm.base);
    }
}

/* tokens without a position contribute no gate: their x does not change the other tokens' bias */
Test(pos_fox, left_padding_has_no_gate)
{
    pg_fox *m = fox_f64(2, 3, NULL, 6);
    spread(m, 0.0);
    pg_tensor *x = randt(PG_SHAPE(1, 5, 3), 7, false), *pos = T64(PG_SHAPE(1, 3), 0, 1, 2);
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_copy(NULL, bias_of(g, m, x, pos, true));
    for (int i = 0; i < 6; i++) /* the two un-positioned tokens */
        pg_set(x, i, 3.0 * (i + 1));
    pg_tensor *b = bias_of(g, m, x, pos, true);
    cr_assert_lt(max_err(a, b), 1e-15);
    /* and the first un-positioned rows are 0 below the diagonal (no gate between them) */
    cr_assert_eq(pg_get(b, 1 * 5 + 0), 0.0);
    pg_graph_free(g);
    pg_tensor *own[] = {x, pos, a};
    free_all(3, own);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * training: MHA, a block's pre-norm input, and a 1-block LM with Adam
 * =================================================================================== */

Test(pos_fox, trains_in_mha_and_lm)
{
    for (int v = 0; v < 2; v++) {
        pg_fox *f = fox_f64(2, 4, &(pg_fox_opts){.init = v}, 7);
        pg_mha *m = mha_with(4, 2, true, &f->pm, 7);
        pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 8, false);
        pg_graph *g = pg_graph_new();
        pg_tensor *y = pg_mha_forward(g, m, x, NULL, NULL);
        assert_adam_step_changes(&m->base, &f->pm.base, g, pg_sum(g, pg_square(g, y), 0, NULL, false));
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&m->base);
    }
    /* a 1-block LM: 30 Adam steps on a fixed batch, the loss falls and fgate_proj moves */
    pg_fox_opts fo = {.init = PG_FOX_INIT_DD_ALIBI, .post_log_scale = 2.0};
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 1);
    c.dtype = PG_F64;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){"fox", NULL, &fo};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_fox *f = (pg_fox *)lm->blocks[0]->attn->pos[0];
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.0.attn.pos.fgate_proj.weight"));
    double *before = params_snapshot(&f->pm.base);
    pg_tensor *ids = TI64(PG_SHAPE(2, 6), 1, 2, 3, 4, 6, 5, 0, 2, 4, 6, 1, 3);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_optim_hparams h = pg_adam_hparams(1e-2);
    pg_optim *opt = pg_optim_new(PG_ADAM, &h);
    pg_optim_add_group(opt, ps.tensors, ps.n, NULL);
    double first = 0, last = 0;
    pg_graph *g = pg_graph_new();
    for (int step = 0; step < 30; step++) {
        pg_graph_reset(g);
        pg_optim_zero_grad(opt);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
        cr_assert_not_null(loss, "%s", pg_graph_error(g));
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
        last = pg_item(loss);
        first = step == 0 ? last : first;
    }
    cr_assert_lt(last, 0.5 * first, "loss %g -> %g", first, last);
    double *after = params_snapshot(&f->pm.base);
    int moved = 0;
    for (int64_t i = 0; i < pg_module_num_elements(&f->pm.base); i++)
        moved += after[i] != before[i];
    cr_assert_eq(moved, pg_module_num_elements(&f->pm.base), "every fgate_proj entry moves");
    cr_log_info("pos_fox 1-block LM: loss %.4f -> %.4f in 30 Adam steps", first, last);
    free(before);
    free(after);
    pg_graph_free(g);
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_fox, bad_options)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_fox_new(0, 4, NULL, PG_F64, &r), "pg_fox_new: need heads >= 1 and dim >= 1");
    ASSERT_FAILS(pg_fox_new(2, 0, NULL, PG_F64, &r), "pg_fox_new: need heads >= 1 and dim >= 1");
    ASSERT_FAILS(pg_fox_new(2, 4, &(pg_fox_opts){.heads = 3}, PG_F64, &r), "opts.heads 3 / opts.dim 0 differ");
    ASSERT_FAILS(pg_fox_new(2, 4, &(pg_fox_opts){.dim = 5}, PG_F64, &r), "differ from heads 2 / dim 4");
    ASSERT_FAILS(pg_fox_new(2, 4, NULL, PG_I64, &r), "pg_fox_new: dtype must be f32 or f64, got i64");
    ASSERT_FAILS(pg_fox_new(2, 4, &(pg_fox_opts){.init = 2}, PG_F64, &r),
                 "init must be PG_FOX_INIT_FOX or PG_FOX_INIT_DD_ALIBI, got 2");
    ASSERT_FAILS(pg_fox_new(2, 4, &(pg_fox_opts){.post_log_scale = -1}, PG_F64, &r),
                 "post_log_scale must be finite and > 0, got -1");
    ASSERT_FAILS(pg_fox_new(2, 4, &(pg_fox_opts){.post_log_scale = NAN}, PG_F64, &r), "post_log_scale");
    ASSERT_FAILS(pg_fox_new(2, 4, NULL, PG_F64, NULL), "pg_fox_new: the initial weights need a generator");
    ASSERT_FAILS(pg_posmod_make_fox(&(pg_posmod_args){.dim = 8, .dtype = PG_F64, .rng = &r}), "needs heads >= 1");
    ASSERT_FAILS(pg_posmod_make_fox(NULL), "pg_posmod_make_fox: args is NULL");
    pg_posmod *ok = pg_posmod_make_fox(&(pg_posmod_args){.dim = 8, .heads = 2, .dtype = PG_F64, .rng = &r});
    cr_assert_not_null(ok, "%s", pg_last_error());
    cr_assert_eq(((pg_fox *)ok)->dim, 8);
    pg_module_free(&ok->base);
    /* LocalAttention has no x to give: it refuses the module at construction */
    pg_fox *f = fox_f64(2, 4, NULL, 1);
    pg_local_attention_config lc = pg_local_attention_defaults(2);
    lc.use_rotary_pos_emb = false;
    pg_posmod *mods[] = {&f->pm};
    ASSERT_FAILS(pg_local_attention_new(&lc, mods, 1), "positional module 0 (FoX) has neither dist_bias");
}

Test(pos_fox, bad_input)
{
    pg_fox *m = fox_f64(2, 4, NULL, 1);
    pg_tensor *x = randt(PG_SHAPE(1, 5, 4), 1, false), *x3 = randt(PG_SHAPE(1, 5, 3), 1, false);
    pg_pos_ctx c = {.self_attn = true, .causal = true, .B = 1, .heads = 2, .head_dim = 2, .Lq = 5, .Lk = 5,
                    .scale = 1.0, .dtype = PG_F64};
    const pg_posmod_ops *o = m->pm.ops;
    ASSERT_FAILS(o->mod_bias(NULL, &m->pm, NULL, NULL, NULL, &c),
                 "fox: the forgetting gate reads the attention's input, and this call gives none (pg_pos_ctx.x is NULL");
    c.x = x3;
    ASSERT_FAILS(o->mod_bias(NULL, &m->pm, NULL, NULL, NULL, &c), "fox: x is f64[1,5,3], expected (B, Lq, dim) = (1, 5, 4)");
    c.x = x;
    c.causal = false;
    ASSERT_FAILS(o->mod_bias(NULL, &m->pm, NULL, NULL, NULL, &c),
                 "fox: a one-directional forgetting gate in attention that is not causal");
    c.causal = true;
    c.heads = 3;
    ASSERT_FAILS(o->mod_bias(NULL, &m->pm, NULL, NULL, NULL, &c), "fox: the module has 2 heads, the attention 3");
    c.heads = 2;
    c.self_attn = false;
    ASSERT_FAILS(o->mod_bias(NULL, &m->pm, NULL, NULL, NULL, &c), "fox: the forgetting gate is for self-attention");
    ASSERT_FAILS(pg_fox_cumulative(NULL, &m->pm, x, 6), "pad_front 6 in 0..L");
    ASSERT_FAILS(pg_fox_cumulative(NULL, NULL, x, 0), "pg_fox_cumulative: not a FoX module (NULL)");
    /* in MultiheadAttention: heads disagree; not causal; cross-attention */
    pg_mha *mha = mha_with(4, 1, true, &m->pm, 1);
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, NULL), "the module has 2 heads, the attention 1");
    pg_module_free(&mha->base);
    mha = mha_with(4, 2, false, &fox_f64(2, 4, NULL, 1)->pm, 1);
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, NULL), "not causal");
    pg_module_free(&mha->base);
    pg_mha_config cc = pg_mha_defaults(4, 2);
    cc.cross = true;
    cc.dtype = PG_F64;
    pg_rng r = pg_rng_init(1);
    pg_posmod *mods[] = {&fox_f64(2, 4, NULL, 1)->pm};
    mha = pg_mha_new(&cc, mods, 1, &r);
    cr_assert_not_null(mha, "%s", pg_last_error());
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, x, NULL), "fox: the forgetting gate is for self-attention (got cross");
    pg_module_free(&mha->base);
    pg_tensor *own[] = {x, x3};
    free_all(2, own);
}

/* ===================================================================================
 * the fused path: a separable bias per tile (autograd/op_flash.c), used by MHA
 * =================================================================================== */

/* c_i - c_j for sep_q = a (B, H, Lq), sep_k = e (B, H, Lk) as a (B, H, Lq, Lk) matrix */
static pg_tensor *sep_matrix(pg_graph *g, pg_tensor *a, pg_tensor *e)
{
    int64_t B = a->shape[0], H = a->shape[1], Lq = a->shape[2], Lk = e->shape[2];
    return pg_sub(g, pg_reshape(g, a, PG_SHAPE(B, H, Lq, 1)), pg_reshape(g, e, PG_SHAPE(B, H, 1, Lk)));
}

typedef struct flash_case {
    bool causal, fused;
    pg_tensor *mask;
} flash_case;

/* in: q, k, v, sep_q, sep_k: fused, or the reference pg_attention with the bias matrix */
static pg_tensor *call_flash(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const flash_case *c = ctx;
    if (c->fused)
        return pg_flash_attention(g, in[0], in[1], in[2],
                                  &(pg_flash_opts){.causal = c->causal, .mask = c->mask, .sep_q = in[3], .sep_k = in[4]});
    return pg_attention(g, in[0], in[1], in[2],
                        &(pg_sdpa_opts){.bias = sep_matrix(g, in[3], in[4]), .mask = c->mask, .causal = c->causal});
}

/* the op against the reference over several tiles (L 70 > 64), also Lq != Lk, and its gradients */
Test(pos_fox, flash_separable_bias_equals_reference)
{
    const int64_t sizes[][2] = {{70, 70}, {5, 70}, {70, 9}};
    double worst = 0;
    for (int si = 0; si < 3; si++)
        for (int causal = 0; causal < 2; causal++) {
            int64_t Lq = sizes[si][0], Lk = sizes[si][1];
            pg_tensor *in[2][5];
            for (int r = 0; r < 2; r++) { /* the same values for both runs */
                in[r][0] = randt(PG_SHAPE(2, 2, Lq, 3), 31, true);
                in[r][1] = randt(PG_SHAPE(2, 2, Lk, 3), 32, true);
                in[r][2] = randt(PG_SHAPE(2, 2, Lk, 2), 33, true);
                in[r][3] = randt(PG_SHAPE(2, 2, Lq), 34, true);
                in[r][4] = randt(PG_SHAPE(2, 2, Lk), 35, true);
            }
            pg_tensor *mask = pg_tensor_empty(NULL, PG_BOOL, 2, (int64_t[]){2, Lk});
            for (int64_t j = 0; j < 2 * Lk; j++)
                pg_bool(mask)[j] = j % 7 != 3;
            pg_graph *g = pg_graph_new();
            pg_tensor *y[2];
            for (int r = 0; r < 2; r++) {
                flash_case fc = {causal, r == 0, mask};
                y[r] = call_flash(g, in[r], 5, &fc);
                cr_assert_not_null(y[r], "%s", pg_graph_error(g));
                cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, y[r], y[r]), 0, NULL, false)), 0, "%s",
                             pg_graph_error(g));
            }
            double e = max_err(y[0], y[1]);
            for (int i = 0; i < 5; i++) {
                double ei = max_err(in[0][i]->grad, in[1][i]->grad);
                e = ei > e ? ei : e;
            }
            cr_assert_lt(e, 1e-12, "Lq %lld, Lk %lld, causal %d: %g", (long long)Lq, (long long)Lk, causal, e);
            worst = e > worst ? e : worst;
            pg_graph_free(g);
            free_all(5, in[0]);
            free_all(5, in[1]);
            pg_tensor_free(mask);
        }
    cr_log_info("pos_fox flash separable bias vs reference: %.3g (outputs and gradients)", worst);
    /* gradcheck of the op over two tiles of queries and keys */
    pg_gradcheck_opts go = f64_only();
    flash_case fc = {true, true, NULL};
    pg_tensor *in[5] = {randt(PG_SHAPE(1, 1, 66, 2), 41, true), randt(PG_SHAPE(1, 1, 66, 2), 42, true),
                        randt(PG_SHAPE(1, 1, 66, 2), 43, true), randt(PG_SHAPE(1, 1, 66), 44, true),
                        randt(PG_SHAPE(1, 1, 66), 45, true)};
    gradcheck_worst(call_flash, 5, in, &fc, &go);
    free_all(5, in);
    cr_log_info("pos_fox flash gradcheck: worst abs error %.3g", worst_gc);
}

/* one side alone (the other 0, as Transformer-XL's key-side term is given): the op
 * against itself with that side's zeros given, outputs and every gradient, causal
 * over two tiles, Lq != Lk */
Test(pos_fox, flash_one_sided_separable_bias)
{
    double worst = 0;
    for (int side = 3; side <= 4; side++) {
        pg_tensor *in[2][5];
        for (int r = 0; r < 2; r++) {
            in[r][0] = randt(PG_SHAPE(2, 2, 70, 3), 51, true);
            in[r][1] = randt(PG_SHAPE(2, 2, 75, 3), 52, true);
            in[r][2] = randt(PG_SHAPE(2, 2, 75, 2), 53, true);
            in[r][3] = side == 3 ? randt(PG_SHAPE(2, 2, 70), 54, true) : pg_zeros(NULL, PG_F64, PG_SHAPE(2, 2, 70));
            in[r][4] = side == 4 ? randt(PG_SHAPE(2, 2, 75), 55, true) : pg_zeros(NULL, PG_F64, PG_SHAPE(2, 2, 75));
        }
        pg_graph *g = pg_graph_new();
        pg_tensor *y[2];
        for (int r = 0; r < 2; r++) {
            pg_flash_opts o = {.causal = true, .sep_q = in[r][3], .sep_k = in[r][4]};
            if (r == 0) /* the one side alone */
                (side == 3 ? &o.sep_k : &o.sep_q)[0] = NULL;
            y[r] = pg_flash_attention(g, in[r][0], in[r][1], in[r][2], &o);
            cr_assert_not_null(y[r], "%s", pg_graph_error(g));
            cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, y[r], y[r]), 0, NULL, false)), 0, "%s",
                         pg_graph_error(g));
        }
        double e = max_err(y[0], y[1]);
        for (int i = 0; i < 5; i++)
            if (in[0][i]->grad) {
                double ei = max_err(in[0][i]->grad, in[1][i]->grad);
                e = ei > e ? ei : e;
            }
        cr_assert(in[0][side]->grad && in[1][side]->grad, "side %d: no gradient", side);
        cr_assert_lt(e, 1e-13, "%s alone: %g", side == 3 ? "sep_q" : "sep_k", e);
        worst = e > worst ? e : worst;
        pg_graph_free(g);
        free_all(5, in[0]);
        free_all(5, in[1]);
    }
    cr_log_info("pos_fox flash one-sided separable bias vs both given: %.3g", worst);
}

Test(pos_fox, flash_separable_bias_bad_operands)
{
    pg_tensor *q = randt(PG_SHAPE(1, 2, 4, 3), 1, false), *a = randt(PG_SHAPE(1, 2, 4), 2, false);
    pg_tensor *a5 = randt(PG_SHAPE(1, 2, 5), 3, false), *a32 = pg_cast(NULL, a, PG_F32);
    ASSERT_FAILS(pg_flash_attention(NULL, q, q, q, &(pg_flash_opts){.sep_q = a5}),
                 "pg_flash_attention: sep_q is f64[1,2,5], expected f64 (B, H, Lq) = (1, 2, 4)");
    ASSERT_FAILS(pg_flash_attention(NULL, q, q, q, &(pg_flash_opts){.sep_q = a, .sep_k = a5}),
                 "pg_flash_attention: sep_k is f64[1,2,5], expected f64 (B, H, Lk) = (1, 2, 4)");
    ASSERT_FAILS(pg_flash_attention(NULL, q, q, q, &(pg_flash_opts){.sep_k = a32}),
                 "pg_flash_attention: sep_k is f32[1,2,4], expected f64 (B, H, Lk) = (1, 2, 4)");
    pg_tensor *own[] = {q, a, a5, a32};
    free_all(4, own);
}

static pg_mha *mha_cfg(bool unfused, pg_fox_opts o, uint64_t seed)
{
    pg_mha_config c = pg_mha_defaults(4, 2);
    c.causal = true;
    c.unfused = unfused;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(seed);
    pg_posmod *mods[] = {&fox_f64(2, 4, &o, seed)->pm};
    spread((pg_fox *)mods[0], 1.0);
    pg_mha *m = pg_mha_new(&c, mods, 1, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* MHA takes the fused kernel for a causal FoX at default positions: equal to the reference path
 * over several tiles, outputs and every gradient; explicit positions and bidirectional: unfused */
Test(pos_fox, mha_fused_equals_unfused)
{
    pg_fox_opts o = {.post_log_scale = 1.5};
    pg_mha *fused = mha_cfg(false, o, 3), *ref = mha_cfg(true, o, 3);
    pg_tensor *x[2] = {randt(PG_SHAPE(2, 70, 4), 5, true), randt(PG_SHAPE(2, 70, 4), 5, true)};
    pg_tensor *mask = pg_tensor_empty(NULL, PG_BOOL, 2, (int64_t[]){2, 70});
    for (int64_t j = 0; j < 140; j++)
        pg_bool(mask)[j] = j % 9 != 4;
    pg_graph *g = pg_graph_new();
    pg_tensor *y[2];
    pg_mha *ms[2] = {fused, ref};
    for (int r = 0; r < 2; r++) {
        y[r] = pg_mha_forward(g, ms[r], x[r], NULL, &(pg_attn_args){.mask = mask});
        cr_assert_not_null(y[r], "%s", pg_graph_error(g));
        cr_assert_eq(fused_nodes(g), 1, "run %d: only the first takes the fused kernel", r);
        cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y[r]), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    }
    double e = max_err(y[0], y[1]), eg = max_err(x[0]->grad, x[1]->grad);
    pg_tensor_list p0 = pg_module_parameters(&fused->base), p1 = pg_module_parameters(&ref->base);
    for (int i = 0; i < p0.n; i++) {
        double ei = max_err(p0.tensors[i]->grad, p1.tensors[i]->grad);
        eg = ei > eg ? ei : eg;
    }
    cr_assert_lt(e, 1e-12);
    cr_assert_lt(eg, 1e-12);
    cr_log_info("pos_fox mha fused vs unfused (L 70): out %.3g, gradients %.3g", e, eg);
    pg_tensor_list_free(&p0);
    pg_tensor_list_free(&p1);
    /* explicit positions: the reference path */
    pg_graph_reset(g);
    pg_tensor *pos = pg_tensor_empty(NULL, PG_I64, 2, (int64_t[]){2, 68});
    for (int64_t i = 0; i < pos->numel; i++)
        pg_i64(pos)[i] = i % 68;
    cr_assert_not_null(pg_mha_forward(g, fused, x[0], NULL, &(pg_attn_args){.pos = pos}), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 0, "explicit positions: the reference path");
    pg_graph_free(g);
    pg_tensor *own[] = {x[0], x[1], mask, pos};
    free_all(4, own);
    pg_module_free(&fused->base);
    pg_module_free(&ref->base);
}

/* gradcheck through the fused MHA w.r.t. x and every parameter, each init, s != 1 */
Test(pos_fox, gradcheck_fused_mha)
{
    pg_gradcheck_opts go = f64_only();
    const pg_fox_opts opts[] = {{0}, {.init = PG_FOX_INIT_DD_ALIBI, .post_log_scale = 0.6}};
    for (int oi = 0; oi < 2; oi++) {
        pg_mha *mha = mha_cfg(false, opts[oi], 8);
        mha_case c = {mha, key_mask(), NULL};
        pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 9, true);
        pg_tensor *in[16] = {x};
        int n = with_params(in, 1, &mha->base);
        pg_graph *g = pg_graph_new();
        cr_assert_not_null(call_mha(g, in, n, &c));
        cr_assert_eq(fused_nodes(g), 1);
        pg_graph_free(g);
        gradcheck_worst(call_mha, n, in, &c, &go);
        pg_tensor *own[] = {x, c.mask};
        free_all(2, own);
        pg_module_free(&mha->base);
    }
    cr_log_info("pos_fox gradcheck (fused MHA): worst abs error %.3g", worst_gc);
}

/* f32 (fused and unfused) agrees with f64 built from the same generator */
Test(pos_fox, f32_agrees_with_f64)
{
    for (int unfused = 0; unfused < 2; unfused++) {
        pg_tensor *y[2];
        pg_mha *m[2];
        pg_graph *g = pg_graph_new();
        pg_tensor *x64 = randt(PG_SHAPE(2, 9, 4), 3, false), *x32 = pg_cast(NULL, x64, PG_F32);
        for (int f = 0; f < 2; f++) {
            pg_dtype dt = f ? PG_F32 : PG_F64;
            pg_rng r = pg_rng_init(4);
            pg_posmod *fox = pg_fox_new(2, 4, &(pg_fox_opts){.init = PG_FOX_INIT_DD_ALIBI}, dt, &r);
            cr_assert_not_null(fox, "%s", pg_last_error());
            pg_mha_config c = pg_mha_defaults(4, 2);
            c.causal = true;
            c.unfused = unfused;
            c.dtype = dt;
            m[f] = pg_mha_new(&c, &fox, 1, &r);
            cr_assert_not_null(m[f], "%s", pg_last_error());
            y[f] = pg_mha_forward(g, m[f], f ? x32 : x64, NULL, &(pg_attn_args){.mask = NULL});
            cr_assert_not_null(y[f], "%s", pg_graph_error(g));
        }
        double e = 0;
        for (int64_t i = 0; i < y[0]->numel; i++) {
            double d = fabs(pg_get(y[0], i) - pg_get(y[1], i));
            e = d > e ? d : e;
        }
        cr_assert_lt(e, 1e-5, "%s: f32 vs f64 %g", unfused ? "unfused" : "fused", e);
        pg_graph_free(g);
        pg_tensor_free(x64);
        pg_tensor_free(x32);
        pg_module_free(&m[0]->base);
        pg_module_free(&m[1]->base);
    }
}
