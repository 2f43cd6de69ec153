/* Rotary and xPos (nn/pos_rotary.c): PyTorch parity (tests/fixtures/gen_pos_rotary.py:
 * pos_rotary_cases, pos_rotary_mha), gradchecks w.r.t. q, k, float positions and div for
 * every option, the §7 left-padding rule, relative-position invariance, MultiheadAttention
 * and a 1-block LM with an Adam step, rotary combined with a bias module, bad input. */
#include <stdlib.h>

#include "../nn/attention.h"
#include "../nn/pos_rotary.h"
#include "../nn/transformer.h"
#include "../optim/optim.h"
#include "testutil.h"

/* ===================================================================================
 * a trivial bias module for the combination tests:
 *   bias[b, h, i, j] = slope[h] * (pos_q[i] - pos_k[j]), zero rows / columns for
 *   un-positioned tokens; parameter "slope" (H, 1, 1)
 * =================================================================================== */

typedef struct slope_mod {
    pg_posmod pm;
    pg_tensor *slope;
} slope_mod;

static pg_tensor *slope_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v;
    pg_tensor *d = pg_pos_pad_bias(g, pg_pos_delta(g, c, c->dtype), c->Lq, c->Lk);
    return pg_mul(g, ((slope_mod *)m)->slope, pg_reshape(g, d, PG_SHAPE(c->B, 1, c->Lq, c->Lk)));
}
static const pg_posmod_ops SLOPE_OPS = {.mod_bias = slope_bias};

static pg_posmod *slope_new(int64_t H)
{
    slope_mod *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    pg_posmod_init(&s->pm, "TestSlope", &SLOPE_OPS, NULL);
    s->slope = pg_module_new_param(&s->pm.base, "slope", PG_F64, PG_SHAPE(H, 1, 1));
    for (int64_t h = 0; h < H; h++)
        pg_set(s->slope, h, 0.3 - 0.5 * (double)h);
    return &s->pm;
}
static pg_posmod *make_slope(const pg_posmod_args *a) { return slope_new(a->heads); }

/* ===================================================================================
 * helpers
 * =================================================================================== */

static pg_posmod *rot_new(int64_t Dh, pg_rotary_opts o)
{
    pg_posmod *m = pg_rotary_new(Dh, &o, PG_F64);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* runs mod_qkv directly; returns q' and k' through *q, *k */
static int run_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor *pos_q, pg_tensor *pos_k,
                   bool self)
{
    pg_tensor *v = *k;
    pg_pos_ctx c = {pos_q, pos_k, NULL, self, false, (*q)->shape[0], (*q)->shape[1], (*q)->shape[3],
                    (*q)->shape[2], (*k)->shape[2], 1.0, (*q)->dtype, NULL, NULL};
    pg_tensor *v0 = v;
    int rc = pg_pos_ctx_check(g, "run_qkv", &c) ? -1 : m->ops->mod_qkv(g, m, q, k, &v, &c);
    if (rc == 0)
        cr_assert_eq(v, v0, "rotary must not change v");
    return rc;
}

/* ===================================================================================
 * parity
 * =================================================================================== */

typedef struct rcase {
    const char *name;
    bool self;
    pg_rotary_opts o;
} rcase;

static const rcase CASES[] = {
    {"bio", true, {0}},
    {"bio_ndims", true, {.n_dims = 4, .divide = 2.0, .learned_div = true}},
    {"leftpad", true, {.divide = 1.5}},
    {"xt", true,
     {.n_dims = 4, .freq_dim = 4, .base = 500, .base_rescale_factor = 2, .interpolation_factor = 2,
      .use_xpos = true, .scale_base = 8}},
    {"xpos_pos", true, {.use_xpos = true, .scale_base = 3, .divide = 0.7, .learned_div = true}},
    {"local", false, {.pairing = PG_ROTARY_HALF_SPLIT, .use_xpos = true, .scale_base = 1}},
    {"cross", false,
     {.n_dims = 6, .use_xpos = true, .xpos_fixed_centre = true, .xpos_centre = 1.5, .scale_base = 5, .divide = 1.3,
      .learned_div = true}},
    {"half_partial", false, {.pairing = PG_ROTARY_HALF_SPLIT, .n_dims = 4, .base = 100}},
};

static pg_tensor *opt_fx(const pg_tensor_list *l, const char *cs, const char *name, bool grad)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", cs, name);
    return pg_tensor_list_find(l, full) >= 0 ? fx_copy(l, full, grad) : NULL;
}

Test(pos_rotary, matches_torch_every_option)
{
    pg_tensor_list l = fixture("pos_rotary_cases.safetensors");
    pg_graph *g = pg_graph_new();
    double worst_out = 0, worst_grad = 0;
    for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ci++) {
        const rcase *rc = &CASES[ci];
        const char *cs = rc->name;
        pg_tensor *q = opt_fx(&l, cs, "q", true), *k = opt_fx(&l, cs, "k", true);
        pg_posmod *m = rot_new(q->shape[3], rc->o);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s.", cs);
        load_params(&m->base, &l, prefix);
        pg_tensor *pos = opt_fx(&l, cs, "pos", true), *pq = opt_fx(&l, cs, "pos_q", true),
                  *pk = opt_fx(&l, cs, "pos_k", true);
        pg_graph_reset(g);
        pg_tensor *oq = q, *ok = k;
        int r = rc->self ? run_qkv(g, m, &oq, &ok, pos, pos, true) : run_qkv(g, m, &oq, &ok, pq, pk, false);
        cr_assert_eq(r, 0, "%s: %s", cs, pg_graph_error(g));
        double e = fmax(max_err(oq, fx(&l, "%s.out_q", cs)), max_err(ok, fx(&l, "%s.out_k", cs)));
        cr_assert_leq(e, 1e-10, "%s: outputs differ by %.3g", cs, e);
        worst_out = fmax(worst_out, e);
        pg_tensor *loss = pg_add(g, pg_sum(g, pg_mul(g, oq, fx(&l, "%s.dq", cs)), 0, NULL, false),
                                 pg_sum(g, pg_mul(g, ok, fx(&l, "%s.dk", cs)), 0, NULL, false));
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        struct { pg_tensor *t; const char *n; } gs[] = {{q, "q"}, {k, "k"}, {pos, "pos"}, {pq, "pos_q"}, {pk, "pos_k"}};
        for (int i = 0; i < 5; i++) {
            if (!gs[i].t)
                continue;
            double eg = max_err(gs[i].t->grad, fx(&l, "%s.grad.%s", cs, gs[i].n));
            cr_assert_leq(eg, 1e-9, "%s: grad %s differs by %.3g", cs, gs[i].n, eg);
            worst_grad = fmax(worst_grad, eg);
        }
        pg_tensor *div = pg_module_find_param(&m->base, "div");
        cr_assert_eq(div != NULL, rc->o.learned_div);
        if (div) {
            double eg = max_err(div->grad, fx(&l, "%s.grad.div", cs));
            cr_assert_leq(eg, 1e-9, "%s: grad div differs by %.3g", cs, eg);
            worst_grad = fmax(worst_grad, eg);
        }
        pg_tensor *own[] = {q, k, pos, pq, pk};
        free_all(5, own);
        pg_module_free(&m->base);
    }
    cr_log_info("pos_rotary parity: outputs %.3g, gradients %.3g", worst_out, worst_grad);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

/* rotary (xPos, learned div) + a bias module in one MultiheadAttention, causal + mask +
 * left-padded float positions, against PyTorch */
Test(pos_rotary, combined_with_a_bias_module_matches_torch)
{
    pg_tensor_list l = fixture("pos_rotary_mha.safetensors");
    pg_posmod *mods[] = {rot_new(4, (pg_rotary_opts){.use_xpos = true, .scale_base = 4, .divide = 1.5,
                                                     .learned_div = true}),
                         slope_new(2)};
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.causal = true;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(1);
    pg_mha *m = pg_mha_new(&c, mods, 2, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    load_params(&m->base, &l, "mha.");
    pg_tensor *x = fx_copy(&l, "mha.x", true);
    pg_graph *g = pg_graph_new();
    pg_attn_args a = {.mask = fx(&l, "mha.mask"), .pos = fx(&l, "mha.pos")};
    pg_tensor *out = pg_mha_forward(g, m, x, NULL, &a);
    assert_close(out, fx(&l, "mha.out"), 1e-10, "out");
    cr_assert_eq(pg_backward_with(g, out, fx(&l, "mha.dy")), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(&l, "mha.grad.x"), 1e-9, "grad x");
    check_param_grads(&m->base, &l, "mha.", 1e-9);
    cr_assert_not_null(pg_module_find_param(&m->base, "pos.0.div"));
    cr_assert_not_null(pg_module_find_param(&m->base, "pos.1.slope"));
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->base);
    pg_tensor_list_free_all(&l);
}

/* ===================================================================================
 * gradchecks: q, k, float positions, div, for every option
 * =================================================================================== */

typedef struct gcase {
    pg_posmod *m;
    bool self;
    int ipq, ipk; /* input index of pos_q / pos_k, -1: default positions */
} gcase;

static pg_tensor *call_rot(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const gcase *c = ctx;
    pg_tensor *q = in[0], *k = in[1];
    pg_tensor *pq = c->ipq >= 0 ? in[c->ipq] : NULL, *pk = c->ipk >= 0 ? in[c->ipk] : NULL;
    if (run_qkv(g, c->m, &q, &k, pq, c->self ? pq : pk, c->self) != 0)
        return NULL;
    pg_tensor *parts[] = {pg_reshape(g, q, PG_SHAPE(q->numel)), pg_reshape(g, k, PG_SHAPE(k->numel))};
    return pg_concat(g, 2, parts, 0);
}

static void gradcheck_rot(pg_rotary_opts o, int64_t Dh, bool self, int64_t Lq, int64_t Lk, pg_tensor *pq,
                          pg_tensor *pk)
{
    pg_posmod *m = rot_new(Dh, o);
    pg_tensor *in[8] = {randt(PG_SHAPE(2, 2, Lq, Dh), 11, true), randt(PG_SHAPE(2, 2, Lk, Dh), 12, true)};
    int n = 2;
    gcase c = {m, self, -1, -1};
    if (pq) {
        c.ipq = n;
        in[n++] = pq;
    }
    if (pk && !self) {
        c.ipk = n;
        in[n++] = pk;
    }
    n = with_params(in, n, &m->base);
    pg_gradcheck_opts go = f64_only();
    assert_gradcheck(call_rot, n, in, &c, &go);
    pg_tensor_free(in[0]);
    pg_tensor_free(in[1]);
    pg_module_free(&m->base);
}

static pg_tensor *fpos(int64_t B, int64_t Lp, uint64_t seed)
{
    pg_tensor *p = rand_param(2, (int64_t[]){B, Lp}, -1, 6, seed);
    return p;
}

Test(pos_rotary_grad, interleaved_bio_options)
{
    pg_tensor *p = fpos(2, 4, 1);
    gradcheck_rot((pg_rotary_opts){0}, 4, true, 4, 4, NULL, NULL);
    gradcheck_rot((pg_rotary_opts){.n_dims = 2, .divide = 2, .learned_div = true}, 6, true, 4, 4, p, NULL);
    gradcheck_rot((pg_rotary_opts){.divide = 0.5}, 4, true, 5, 5, p, NULL); /* left padding */
    pg_tensor_free(p);
}

Test(pos_rotary_grad, x_transformers_and_xpos)
{
    pg_tensor *p = fpos(2, 3, 2);
    gradcheck_rot((pg_rotary_opts){.n_dims = 4, .freq_dim = 4, .base = 50, .base_rescale_factor = 3,
                                   .interpolation_factor = 1.5, .use_xpos = true, .scale_base = 2},
                  6, true, 3, 3, NULL, NULL);
    gradcheck_rot((pg_rotary_opts){.use_xpos = true, .scale_base = 2, .learned_div = true, .divide = 1.7}, 4, true,
                  4, 4, p, NULL);
    pg_tensor_free(p);
}

Test(pos_rotary_grad, half_split_and_cross)
{
    pg_tensor *pq = fpos(2, 2, 3), *pk = fpos(2, 4, 4);
    gradcheck_rot((pg_rotary_opts){.pairing = PG_ROTARY_HALF_SPLIT, .use_xpos = true, .scale_base = 2}, 4, false, 3,
                  4, pq, pk);
    gradcheck_rot((pg_rotary_opts){.pairing = PG_ROTARY_HALF_SPLIT, .n_dims = 4, .learned_div = true,
                                   .use_xpos = true, .xpos_fixed_centre = true, .xpos_centre = 2, .scale_base = 3},
                  6, false, 3, 4, pq, pk);
    gradcheck_rot((pg_rotary_opts){.n_dims = 2}, 4, false, 3, 4, NULL, NULL);
    pg_tensor *own[] = {pq, pk};
    free_all(2, own);
}

/* ===================================================================================
 * semantics
 * =================================================================================== */

/* dot products of rotated q and k depend on the position difference only (with xPos too) */
Test(pos_rotary, logits_depend_on_the_position_difference_only)
{
    pg_rotary_opts opts[] = {{0}, {.pairing = PG_ROTARY_HALF_SPLIT, .n_dims = 4},
                             {.use_xpos = true, .scale_base = 3}, {.use_xpos = true, .pairing = PG_ROTARY_HALF_SPLIT}};
    for (int oi = 0; oi < 4; oi++) {
        pg_posmod *m = rot_new(6, opts[oi]);
        pg_tensor *q = randt(PG_SHAPE(1, 1, 1, 6), 1, false), *k = randt(PG_SHAPE(1, 1, 1, 6), 2, false);
        pg_tensor *a1 = T64(PG_SHAPE(1, 1), 3.25), *b1 = T64(PG_SHAPE(1, 1), 1.0);
        pg_tensor *a2 = T64(PG_SHAPE(1, 1), 10.25), *b2 = T64(PG_SHAPE(1, 1), 8.0);
        double dots[2];
        for (int s = 0; s < 2; s++) {
            /* one centre for both sides, as in attention */
            pg_tensor *qq = pg_rotary_apply(NULL, m, q, s ? a2 : a1, false, 4.0);
            pg_tensor *kk = pg_rotary_apply(NULL, m, k, s ? b2 : b1, true, 4.0);
            cr_assert_not_null(qq, "%s", pg_last_error());
            dots[s] = 0;
            for (int i = 0; i < 6; i++)
                dots[s] += pg_get(qq, i) * pg_get(kk, i);
            pg_tensor_free(qq);
            pg_tensor_free(kk);
        }
        cr_assert_float_eq(dots[0], dots[1], 1e-12, "option %d: %.17g vs %.17g", oi, dots[0], dots[1]);
        pg_tensor *own[] = {q, k, a1, b1, a2, b2};
        free_all(6, own);
        pg_module_free(&m->base);
    }
}

/* §7: un-positioned (left-padded) tokens are left as they are (bio-attention zeroed them);
 * channels past n_dims pass through; v is untouched */
Test(pos_rotary, left_padded_tokens_and_extra_channels_pass_through)
{
    pg_posmod *m = rot_new(6, (pg_rotary_opts){.n_dims = 4, .use_xpos = true, .scale_base = 2});
    pg_tensor *q = randt(PG_SHAPE(2, 2, 5, 6), 1, false), *k = randt(PG_SHAPE(2, 2, 5, 6), 2, false);
    pg_tensor *pos = T64(PG_SHAPE(2, 3), 1, 2, 3, 7, 8, 9);
    pg_graph *g = pg_graph_new();
    pg_tensor *oq = q, *ok = k;
    cr_assert_eq(run_qkv(g, m, &oq, &ok, pos, pos, true), 0, "%s", pg_graph_error(g));
    for (int64_t b = 0; b < 2; b++)
        for (int64_t h = 0; h < 2; h++)
            for (int64_t s = 0; s < 5; s++)
                for (int64_t d = 0; d < 6; d++) {
                    int64_t i = ((b * 2 + h) * 5 + s) * 6 + d;
                    if (s < 2 || d >= 4) {
                        cr_assert_eq(pg_get(oq, i), pg_get(q, i));
                        cr_assert_eq(pg_get(ok, i), pg_get(k, i));
                    } else {
                        cr_assert_neq(pg_get(oq, i), pg_get(q, i));
                    }
                }
    pg_graph_free(g);
    pg_tensor *own[] = {q, k, pos};
    free_all(3, own);
    pg_module_free(&m->base);
}

/* i64 positions are allowed (exact integers) and equal the same f64 positions; f32 positions too */
Test(pos_rotary, int_and_float_positions_agree)
{
    pg_posmod *m = rot_new(4, (pg_rotary_opts){.use_xpos = true, .scale_base = 3});
    pg_tensor *q = randt(PG_SHAPE(2, 1, 4, 4), 1, false);
    pg_tensor *pi = TI64(PG_SHAPE(2, 3), 0, 4, 2, 7, 1, 3), *pf = T64(PG_SHAPE(2, 3), 0, 4, 2, 7, 1, 3),
              *p32 = T32(PG_SHAPE(2, 3), 0, 4, 2, 7, 1, 3);
    pg_tensor *a = pg_rotary_apply(NULL, m, q, pi, false, NAN), *b = pg_rotary_apply(NULL, m, q, pf, false, NAN),
              *c = pg_rotary_apply(NULL, m, q, p32, false, NAN);
    cr_assert_eq(max_err(a, b), 0.0);
    cr_assert_eq(max_err(c, b), 0.0);
    /* default positions = 0..L-1 */
    pg_tensor *d = TI64(PG_SHAPE(1, 4), 0, 1, 2, 3);
    pg_tensor *e = pg_rotary_apply(NULL, m, q, NULL, true, NAN), *f = pg_rotary_apply(NULL, m, q, d, true, NAN);
    cr_assert_eq(max_err(e, f), 0.0);
    pg_tensor *own[] = {q, pi, pf, p32, a, b, c, d, e, f};
    free_all(10, own);
    pg_module_free(&m->base);
}

Test(pos_rotary, angles_table_and_apply_agree_with_mod_qkv)
{
    pg_posmod *m = rot_new(8, (pg_rotary_opts){.n_dims = 4, .divide = 2, .base = 100});
    pg_tensor *pos = T64(PG_SHAPE(1, 2), 3, 5);
    pg_tensor *a = pg_rotary_angles(NULL, m, 3, pos);
    assert_shape(a, 3, (int64_t[]){1, 3, 2});
    /* inv_freq = 100^(-2i/8) over head_dim 8 (bio), angles / 2; first token un-positioned */
    ASSERT_VALUES(a, 1e-15, 0, 0, 1.5, 1.5 * pow(100, -0.25), 2.5, 2.5 * pow(100, -0.25));
    pg_tensor *q = randt(PG_SHAPE(1, 2, 3, 8), 3, false), *k = randt(PG_SHAPE(1, 2, 3, 8), 4, false);
    pg_tensor *ap = pg_rotary_apply(NULL, m, q, pos, false, NAN);
    pg_graph *g = pg_graph_new();
    pg_tensor *oq = q, *ok = k;
    cr_assert_eq(run_qkv(g, m, &oq, &ok, pos, pos, true), 0);
    cr_assert_eq(max_err(ap, oq), 0.0);
    pg_graph_free(g);
    pg_tensor *own[] = {pos, a, q, k, ap};
    free_all(5, own);
    pg_module_free(&m->base);
}

Test(pos_rotary, registry_constructors_and_names)
{
    pg_rotary_opts o = {.learned_div = true, .divide = 2};
    pg_posmod_args a = {.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64, .opts = &o};
    pg_posmod *r = pg_posmod_make_rotary(&a), *x = pg_posmod_make_xpos(&a);
    cr_assert_not_null(r, "%s", pg_last_error());
    cr_assert_not_null(x, "%s", pg_last_error());
    cr_assert_str_eq(r->base.type, "Rotary");
    pg_tensor_list p = pg_module_parameters(&r->base);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.names[0], "div");
    cr_assert_float_eq(pg_item(p.tensors[0]), log(2.0), 1e-15);
    pg_tensor_list_free(&p);
    /* "xpos" = rotary with use_xpos: k is scaled by 1/sigma, so it differs from plain rotary */
    pg_tensor *k = randt(PG_SHAPE(1, 1, 6, 4), 1, false);
    pg_tensor *kr = pg_rotary_apply(NULL, r, k, NULL, true, NAN), *kx = pg_rotary_apply(NULL, x, k, NULL, true, NAN);
    cr_assert_gt(max_err(kr, kx), 1e-6);
    pg_tensor *own[] = {k, kr, kx};
    free_all(3, own);
    pg_module_free(&r->base);
    pg_module_free(&x->base);
    /* opts.head_dim overrides the model's; NULL opts: defaults, no parameters */
    pg_rotary_opts o2 = {.head_dim = 2};
    a.opts = &o2;
    r = pg_posmod_make_rotary(&a);
    cr_assert_not_null(r);
    cr_assert_eq(pg_module_num_elements(&r->base), 0);
    pg_module_free(&r->base);
    a.opts = NULL;
    r = pg_posmod_make_rotary(&a);
    cr_assert_not_null(r);
    pg_module_free(&r->base);
}

/* ===================================================================================
 * inside MultiheadAttention and a 1-block LM: forward, backward, Adam changes div
 * =================================================================================== */

static void adam_step_changes(pg_module *root, pg_tensor *loss_param_probe, pg_graph *g, pg_tensor *loss)
{
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    cr_assert_not_null(loss_param_probe->grad);
    cr_assert_neq(pg_item(loss_param_probe->grad), 0.0, "div got no gradient");
    double before = pg_item(loss_param_probe);
    pg_tensor_list ps = pg_module_parameters(root);
    pg_optim_hparams h = pg_adam_hparams(1e-2);
    pg_optim *opt = pg_optim_new(PG_ADAM, &h);
    cr_assert_geq(pg_optim_add_group(opt, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
    double after = pg_item(loss_param_probe);
    cr_assert(isfinite(after) && after != before, "div %g -> %g", before, after);
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
}

Test(pos_rotary_train, mha_adam_step_trains_div)
{
    pg_posmod *mods[] = {rot_new(4, (pg_rotary_opts){.learned_div = true, .divide = 3, .use_xpos = true,
                                                     .scale_base = 4}),
                         slope_new(2)};
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.causal = true;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(2);
    pg_mha *m = pg_mha_new(&c, mods, 2, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 3, false), *mask = key_mask(),
              *pos = T64(PG_SHAPE(2, 4), 0.5, 1.5, 2.5, 3.5, 1, 2, 4, 8);
    pg_graph *g = pg_graph_new();
    pg_attn_args a = {.mask = mask, .pos = pos};
    pg_tensor *y = pg_mha_forward(g, m, x, NULL, &a);
    adam_step_changes(&m->base, pg_module_find_param(&m->base, "pos.0.div"), g,
                      pg_sum(g, pg_square(g, y), 0, NULL, false));
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(mask);
    pg_tensor_free(pos);
    pg_module_free(&m->base);
}

typedef struct mha_ctx {
    pg_mha *m;
    pg_attn_args a;
} mha_ctx;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    mha_ctx *c = ctx;
    return pg_mha_forward(g, c->m, in[0], n > 1 && c->m->cfg.cross ? in[1] : NULL, &c->a);
}

Test(pos_rotary_grad, inside_mha_with_a_bias_module)
{
    pg_posmod *mods[] = {rot_new(2, (pg_rotary_opts){.learned_div = true, .divide = 1.2, .use_xpos = true,
                                                     .scale_base = 2}),
                         slope_new(2)};
    pg_mha_config c = pg_mha_defaults(4, 2);
    c.causal = true;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(5);
    pg_mha *m = pg_mha_new(&c, mods, 2, &r);
    pg_tensor *mask = key_mask(), *pos = T64(PG_SHAPE(2, 4), 0.5, 1.5, 2.5, 3.5, 1, 2, 4, 8);
    mha_ctx mc = {m, {.mask = mask, .pos = pos}};
    pg_tensor *in[16] = {randt(PG_SHAPE(2, 5, 4), 6, true)};
    int n = with_params(in, 1, &m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_mha, n, in, &mc, &o);
    pg_tensor *own[] = {in[0], mask, pos};
    free_all(3, own);
    pg_module_free(&m->base);
}

Test(pos_rotary_grad, inside_cross_attention)
{
    pg_posmod *mods[] = {rot_new(2, (pg_rotary_opts){.learned_div = true, .use_xpos = true, .scale_base = 2,
                                                     .pairing = PG_ROTARY_HALF_SPLIT})};
    pg_mha_config c = pg_mha_defaults(4, 2);
    c.cross = true;
    c.context_dim = 3;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(7);
    pg_mha *m = pg_mha_new(&c, mods, 1, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_tensor *pq = T64(PG_SHAPE(2, 2), 3, 4, 5, 6), *pk = T64(PG_SHAPE(2, 4), 0, 2, 4, 6, 1, 2, 3, 4);
    mha_ctx mc = {m, {.pos_q = pq, .pos_k = pk}};
    pg_tensor *in[16] = {randt(PG_SHAPE(2, 3, 4), 8, true), randt(PG_SHAPE(2, 4, 3), 9, true)};
    int n = with_params(in, 2, &m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_mha, n, in, &mc, &o);
    pg_tensor *own[] = {in[0], in[1], pq, pk};
    free_all(4, own);
    pg_module_free(&m->base);
}

Test(pos_rotary_train, lm_one_block_adam_step_trains_div)
{
    pg_rotary_opts o = {.learned_div = true, .divide = 2, .scale_base = 8};
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 1);
    c.dtype = PG_F64;
    c.seed = 3;
    c.n_layer_pos = 2;
    c.layer_pos[0] = (pg_posmod_spec){NULL, pg_posmod_make_xpos, &o};
    c.layer_pos[1] = (pg_posmod_spec){NULL, make_slope, NULL};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_tensor *div = pg_module_find_param(&lm->base, "blocks.0.attn.pos.0.div");
    cr_assert_not_null(div);
    pg_tensor *ids = TI64(PG_SHAPE(2, 5), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    pg_graph *g = pg_graph_new();
    pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
    adam_step_changes(&lm->base, div, g, loss);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    for (int i = 0; i < ps.n; i++)
        for (int64_t j = 0; j < ps.tensors[i]->numel; j++)
            cr_assert(isfinite(pg_get(ps.tensors[i], j)), "%s not finite", ps.names[i]);
    pg_tensor_list_free(&ps);
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_rotary, bad_options)
{
    ASSERT_FAILS(pg_rotary_new(5, NULL, PG_F64), "pg_rotary_new: n_dims 5 must be even");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.n_dims = 3}, PG_F64), "n_dims 3 must be even, >= 2 and <= head_dim 8");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.n_dims = 10}, PG_F64), "n_dims 10 must be even, >= 2 and <= head_dim 8");
    ASSERT_FAILS(pg_rotary_new(0, NULL, PG_F64), "head_dim must be >= 1, got 0");
    ASSERT_FAILS(pg_rotary_new(8, NULL, PG_I64), "dtype must be f32 or f64, got i64");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.divide = -1}, PG_F64), "divide must be a finite number > 0");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.divide = NAN, .learned_div = true}, PG_F64), "divide must be");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.base = -3}, PG_F64), "base must be a finite number > 0");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.scale_base = INFINITY}, PG_F64), "scale_base must be");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.interpolation_factor = -1}, PG_F64), "interpolation_factor must be");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.freq_dim = 2, .n_dims = 2, .base_rescale_factor = 2}, PG_F64),
                 "base_rescale_factor 2 needs freq_dim > 2");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.freq_dim = -2}, PG_F64), "freq_dim must be >= 2");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.pairing = (pg_rotary_pairing)7}, PG_F64), "pairing must be");
    ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){.use_xpos = true, .xpos_fixed_centre = true, .xpos_centre = NAN},
                               PG_F64), "xpos_centre must be finite");
    ASSERT_FAILS(pg_posmod_make_rotary(&(pg_posmod_args){.head_dim = 3, .dtype = PG_F64}), "n_dims 3 must be even");
    ASSERT_FAILS(pg_posmod_make_xpos(NULL), "pg_posmod_make_xpos: args is NULL");
}

Test(pos_rotary, bad_forward_input)
{
    pg_posmod *m = rot_new(4, (pg_rotary_opts){.learned_div = true});
    pg_tensor *q = randt(PG_SHAPE(2, 2, 5, 4), 1, false), *q6 = randt(PG_SHAPE(2, 2, 5, 6), 2, false),
              *q32 = pg_tensor_cast(NULL, q, PG_F32), *q3 = randt(PG_SHAPE(2, 5, 4), 3, false);
    pg_tensor *longer = TI64(PG_SHAPE(2, 6), 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5),
              *b3 = T64(PG_SHAPE(3, 2), 0, 1, 2, 3, 4, 5), *pb = TBOOL(PG_SHAPE(2, 2), 1, 1, 1, 1);
    ASSERT_FAILS(pg_rotary_apply(NULL, m, q6, NULL, false, NAN),
                 "pg_rotary_apply: t is f64[2,2,5,6], expected a (B, H, L, 4) tensor of f64");
    ASSERT_FAILS(pg_rotary_apply(NULL, m, q32, NULL, false, NAN), "t is f32[2,2,5,4]");
    ASSERT_FAILS(pg_rotary_apply(NULL, m, q3, NULL, false, NAN), "t is f64[2,5,4]");
    ASSERT_FAILS(pg_rotary_apply(NULL, m, q, longer, false, NAN),
                 "positions are i64[2,6], expected (B, Lp), (1, Lp) or (Lp) with B = 2, 1 <= Lp <= L = 5");
    ASSERT_FAILS(pg_rotary_apply(NULL, m, q, b3, false, NAN), "positions are f64[3,2]");
    ASSERT_FAILS(pg_rotary_apply(NULL, m, q, pb, false, NAN), "positions are bool[2,2]");
    pg_posmod *s = slope_new(2);
    ASSERT_FAILS(pg_rotary_apply(NULL, s, q, NULL, false, NAN), "pg_rotary_apply: TestSlope is not a rotary module");
    ASSERT_FAILS(pg_rotary_angles(NULL, m, 0, NULL), "pg_rotary_angles: L must be >= 1");
    /* in attention: head_dim mismatch, positions longer than the sequence, mask shape */
    pg_mha_config c = pg_mha_defaults(12, 2);
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(1);
    pg_posmod *mods[] = {rot_new(4, (pg_rotary_opts){0})};
    pg_mha *mh = pg_mha_new(&c, mods, 1, &r); /* head_dim 6, module built for 4 */
    pg_tensor *x = randt(PG_SHAPE(2, 5, 12), 4, false);
    ASSERT_FAILS(pg_mha_forward(NULL, mh, x, NULL, NULL), "rotary mod_qkv: q is f64[2,2,5,6], expected a (B, H, L, 4)");
    pg_module_free(&mh->base);
    pg_posmod *mods2[] = {rot_new(6, (pg_rotary_opts){0})};
    mh = pg_mha_new(&c, mods2, 1, &r);
    ASSERT_FAILS(pg_mha_forward(NULL, mh, x, NULL, &(pg_attn_args){.pos = longer}),
                 "pos is i64[2,6], expected (B, Lp) = (2, <= 5)");
    ASSERT_FAILS(pg_mha_forward(NULL, mh, x, NULL, &(pg_attn_args){.mask = pb}), "mask is bool[2,2], expected a bool key mask");
    pg_tensor *ok = pg_mha_forward(NULL, mh, x, NULL, NULL);
    cr_assert_not_null(ok, "%s", pg_last_error());
    pg_tensor *own[] = {q, q6, q32, q3, longer, b3, pb, x, ok};
    free_all(9, own);
    pg_module_free(&mh->base);
    pg_module_free(&s->base);
    pg_module_free(&m->base);
}
