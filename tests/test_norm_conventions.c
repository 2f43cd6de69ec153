/* The norm, bias and embedding conventions of x-transformers and nanoGPT (issue 16,
 * configurations 3, 4, 6): LayerNorm / RMSNorm with unit offset, bias switches, the L2 RMSNorm
 * form, the scaled / l2-normalised learned embeddings, the scaled sinusoidal embedding,
 * the token l2norm, the LM's bias switches and ignore_index. Values against
 * tests/fixtures/gen_norm_conventions.py (norm_conventions.safetensors, float64, written from
 * their public code), f64 gradchecks, parameter names, bad options. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/kv_cache.h"
#include "../nn/pos_learned.h"
#include "../nn/pos_sinusoidal.h"
#include "../nn/transformer.h"
#include "testutil.h"

#define FIX "norm_conventions.safetensors"

/* ===================================================================================
 * helpers
 * =================================================================================== */

/* a parameter of m set from the fixture entry `name` */
static void set_param(pg_module *m, const char *param, const pg_tensor_list *l, const char *name)
{
    pg_tensor *p = pg_module_find_param(m, param);
    cr_assert_not_null(p, "no parameter %s", param);
    pg_tensor *v = fx(l, "%s", name);
    assert_shape(p, v->ndim, v->shape);
    for (int64_t i = 0; i < p->numel; i++)
        pg_set(p, i, pg_get(v, i));
}

/* y's value and the gradients of sum(y * dy) w.r.t. x (if given) and m's parameters
 * against "<c>.out", "<c>.grad.x", "<c>.grad.<param>" */
static void check_case(pg_graph *g, pg_module *m, pg_tensor *x, pg_tensor *y, const pg_tensor_list *l, const char *c)
{
    cr_assert_not_null(y, "%s: %s", c, pg_graph_error(g));
    assert_close(y, fx(l, "%s.out", c), 1e-12, c);
    pg_tensor *loss = pg_sum(g, pg_mul(g, y, fx(l, "%s.dy", c)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    if (x)
        assert_close(x->grad, fx(l, "%s.grad.x", c), 1e-12, "grad.x");
    pg_tensor_list p = pg_module_parameters(m);
    for (int i = 0; i < p.n; i++) {
        char what[128];
        snprintf(what, sizeof what, "%s.grad.%s", c, p.names[i]);
        cr_assert_not_null(p.tensors[i]->grad, "%s has no grad", what);
        assert_close(p.tensors[i]->grad, fx(l, "%s", what), 1e-12, what);
    }
    pg_tensor_list_free(&p);
}

/* the norm of case c: form "ln" / "mean" / "l2", bias and unit offset */
static pg_module *make_norm(const char *form, bool bias, bool unit, double eps, pg_dtype dt)
{
    pg_norm_opts o = pg_norm_defaults();
    o.eps = eps;
    o.bias = bias;
    o.unit_offset = unit;
    if (!strcmp(form, "ln")) {
        pg_layernorm *n = pg_layernorm_new_opts(6, &o, dt);
        cr_assert_not_null(n, "%s", pg_last_error());
        return &n->base;
    }
    o.form = !strcmp(form, "l2") ? PG_RMS_L2 : PG_RMS_MEAN;
    pg_rmsnorm *n = pg_rmsnorm_new_opts(6, &o, dt);
    cr_assert_not_null(n, "%s", pg_last_error());
    return &n->base;
}

static pg_tensor *norm_fwd(pg_graph *g, pg_module *m, pg_tensor *x)
{
    return !strcmp(m->type, "LayerNorm") ? pg_layernorm_forward(g, (pg_layernorm *)m, x)
                                         : pg_rmsnorm_forward(g, (pg_rmsnorm *)m, x);
}

typedef struct norm_case {
    const char *name, *form;
    bool bias, unit;
} norm_case;

static const norm_case NORMS[] = {
    {"ln_bias", "ln", true, false},      {"ln_nobias", "ln", false, false},  {"ln_unit", "ln", false, true},
    {"ln_unit_bias", "ln", true, true},  {"rms_mean", "mean", false, false}, {"rms_mean_unit", "mean", false, true},
    {"rms_l2", "l2", false, false},      {"rms_l2_unit", "l2", false, true},
};
#define N_NORMS ((int)(sizeof NORMS / sizeof NORMS[0]))

/* ===================================================================================
 * norms
 * =================================================================================== */

Test(norm_conventions, norms_match_torch)
{
    pg_tensor_list l = fixture(FIX);
    pg_graph *g = pg_graph_new();
    for (int i = 0; i < N_NORMS; i++) {
        const norm_case *c = &NORMS[i];
        double eps = !strcmp(c->form, "l2") ? 1e-12 : 1e-5;
        pg_module *m = make_norm(c->form, c->bias, c->unit, eps, PG_F64);
        char name[64];
        snprintf(name, sizeof name, "%s.weight", c->name);
        set_param(m, "weight", &l, name);
        if (c->bias) {
            snprintf(name, sizeof name, "%s.bias", c->name);
            set_param(m, "bias", &l, name);
        }
        snprintf(name, sizeof name, "%s.x", c->name);
        pg_tensor *x = fx_copy(&l, name, true);
        pg_graph_reset(g);
        check_case(g, m, x, norm_fwd(g, m, x), &l, c->name);
        pg_tensor_free(x);
        pg_module_free(m);
    }
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

/* a unit-offset gain starts at 0 (the gain at 1): the output of a fresh module is the plain norm's */
Test(norm_conventions, unit_offset_starts_at_the_plain_norm)
{
    const char *forms[] = {"ln", "mean", "l2"};
    pg_tensor *x = randt(PG_SHAPE(2, 3, 6), 5, false);
    for (int f = 0; f < 3; f++) {
        double eps = f == 2 ? 1e-12 : 1e-5;
        pg_module *u = make_norm(forms[f], false, true, eps, PG_F64), *p = make_norm(forms[f], false, false, eps, PG_F64);
        pg_tensor *w = pg_module_find_param(u, "weight");
        for (int64_t i = 0; i < w->numel; i++)
            cr_assert_eq(pg_get(w, i), 0.0, "%s: unit-offset weight not initialised at 0", forms[f]);
        cr_assert_eq(pg_get(pg_module_find_param(p, "weight"), 0), 1.0);
        pg_tensor *a = norm_fwd(NULL, u, x), *b = norm_fwd(NULL, p, x);
        cr_assert(max_err(a, b) == 0.0, "%s: unit offset at init differs from the plain norm", forms[f]);
        pg_tensor_free(a);
        pg_tensor_free(b);
        pg_module_free(u);
        pg_module_free(p);
    }
    pg_tensor_free(x);
}

/* the L2 form equals the mean form with eps 0 (x / rms(x)); a zero row has torch's finite gradient */
Test(norm_conventions, l2_form_is_rms_without_eps_and_zero_rows_as_torch)
{
    pg_tensor *x = randt(PG_SHAPE(2, 3, 6), 6, false);
    pg_module *a = make_norm("l2", false, false, 1e-12, PG_F64), *b = make_norm("mean", false, false, 0.0, PG_F64);
    pg_tensor *ya = norm_fwd(NULL, a, x), *yb = norm_fwd(NULL, b, x);
    cr_assert(max_err(ya, yb) < 1e-14, "L2 form vs mean form with eps 0: %g", max_err(ya, yb));
    pg_tensor *z = pg_zeros(NULL, PG_F64, PG_SHAPE(1, 6));
    z->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = norm_fwd(g, a, z);
    cr_assert_eq(pg_backward(g, pg_sum(g, y, 0, NULL, false)), 0, "%s", pg_graph_error(g));
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(pg_get(y, i), 0.0);
        /* as torch's F.normalize: x / eps there, so the gradient is sqrt(dim) / eps, finite */
        double want = sqrt(6.0) / 1e-12;
        cr_assert(fabs(pg_get(z->grad, i) - want) <= 1e-12 * want, "zero row: grad %g", pg_get(z->grad, i));
    }
    pg_graph_free(g);
    pg_tensor_free(ya);
    pg_tensor_free(yb);
    pg_tensor_free(x);
    pg_tensor_free(z);
    pg_module_free(a);
    pg_module_free(b);
}

typedef struct mod_ctx {
    pg_module *m;
} mod_ctx;

static pg_tensor *call_norm(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return norm_fwd(g, ((mod_ctx *)ctx)->m, in[0]);
}

Test(norm_conventions, gradcheck_every_norm_option)
{
    for (int i = 0; i < N_NORMS; i++) {
        const norm_case *c = &NORMS[i];
        pg_module *m = make_norm(c->form, c->bias, c->unit, !strcmp(c->form, "l2") ? 1e-12 : 1e-5, PG_F64);
        pg_tensor_list ps = pg_module_parameters(m);
        pg_rng r = pg_rng_init(20 + (uint64_t)i);
        for (int k = 0; k < ps.n; k++)
            pg_fill_uniform(ps.tensors[k], &r, -0.8, 0.8);
        pg_tensor_list_free(&ps);
        pg_tensor *in[4] = {randt(PG_SHAPE(3, 6), 30 + (uint64_t)i, true)};
        int n = with_params(in, 1, m);
        mod_ctx ctx = {m};
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(call_norm, n, in, &ctx, &o);
        pg_tensor_free(in[0]);
        pg_module_free(m);
    }
}

Test(norm_conventions, parameter_names)
{
    pg_module *m = make_norm("ln", false, true, 1e-5, PG_F64);
    pg_tensor_list p = pg_module_parameters(m);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.names[0], "weight");
    pg_tensor_list_free(&p);
    pg_module_free(m);
    m = make_norm("ln", true, true, 1e-5, PG_F64);
    cr_assert_not_null(pg_module_find_param(m, "bias"));
    pg_module_free(m);
    m = make_norm("l2", false, true, 1e-12, PG_F64);
    p = pg_module_parameters(m);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.names[0], "weight");
    pg_tensor_list_free(&p);
    pg_module_free(m);
}

Test(norm_conventions, bad_norm_options)
{
    pg_norm_opts o = pg_norm_defaults();
    o.form = PG_RMS_L2;
    ASSERT_FAILS(pg_layernorm_new_opts(4, &o, PG_F64), "pg_layernorm_new_opts: the L2 form is an RMSNorm form");
    o = pg_norm_defaults();
    ASSERT_FAILS(pg_rmsnorm_new_opts(4, &o, PG_F64), "pg_rmsnorm_new_opts: RMSNorm has no bias");
    o.bias = false;
    o.form = PG_RMS_L2;
    o.eps = 0;
    ASSERT_FAILS(pg_rmsnorm_new_opts(4, &o, PG_F64), "pg_rmsnorm_new_opts: the L2 form (PG_RMS_L2) needs eps > 0");
    o.eps = 1e-12;
    o.form = (pg_rms_form)7;
    ASSERT_FAILS(pg_rmsnorm_new_opts(4, &o, PG_F64), "pg_rmsnorm_new_opts: unknown RMSNorm form");
    o = pg_norm_defaults();
    o.affine = false;
    ASSERT_FAILS(pg_layernorm_new_opts(4, &o, PG_F64), "pg_layernorm_new_opts: a bias needs affine");
    o.bias = false;
    o.unit_offset = true;
    ASSERT_FAILS(pg_layernorm_new_opts(4, &o, PG_F64), "unit_offset needs affine");
    o = pg_norm_defaults();
    o.eps = -1;
    ASSERT_FAILS(pg_layernorm_new_opts(4, &o, PG_F64), "pg_layernorm_new_opts: need dim >= 1 and finite eps >= 0");
    ASSERT_FAILS(pg_l2_normalize(NULL, NULL, 1e-12), "pg_l2_normalize: x is NULL");
    pg_tensor *x = randt(PG_SHAPE(2, 3), 1, false);
    ASSERT_FAILS(pg_l2_normalize(NULL, x, 0.0), "pg_l2_normalize: need a finite eps > 0, got 0");
    pg_tensor_free(x);
    cr_assert(!pg_norm_opts_ok("f", 4, NULL, true));
    cr_assert(strstr(pg_last_error(), "f: options are NULL"));
    /* NULL options are the defaults (RMSNorm: without the bias) */
    pg_rmsnorm *r = pg_rmsnorm_new_opts(4, NULL, PG_F64);
    cr_assert_not_null(r, "%s", pg_last_error());
    cr_assert(r->eps == 1e-5 && r->form == PG_RMS_MEAN && r->weight && !r->unit_offset);
    pg_module_free(&r->base);
    pg_layernorm *n = pg_layernorm_new_opts(4, NULL, PG_F64);
    cr_assert(n && n->bias && n->weight);
    pg_module_free(&n->base);
}

/* ===================================================================================
 * embeddings
 * =================================================================================== */

static pg_tensor *apply_x(pg_graph *g, pg_posmod *m, pg_tensor *x)
{
    return pg_posmod_apply_x(g, &m, 1, x, NULL, NULL, 0, 0, NULL);
}

Test(norm_conventions, embeddings_match_torch)
{
    pg_tensor_list l = fixture(FIX);
    pg_graph *g = pg_graph_new();
    for (int l2 = 0; l2 < 2; l2++) {
        const char *c = l2 ? "abs_l2" : "abs_scale";
        pg_learned_opts o = {.scale = l2 ? 0.0 : 1.0 / sqrt(6.0), .l2norm = l2};
        pg_posmod *m = pg_learned_new(6, 8, &o, PG_F64, NULL);
        cr_assert_not_null(m, "%s", pg_last_error());
        char name[64];
        snprintf(name, sizeof name, "%s.emb.weight", c);
        set_param(&m->base, "emb.weight", &l, name);
        snprintf(name, sizeof name, "%s.x", c);
        pg_tensor *x = fx_copy(&l, name, true);
        pg_graph_reset(g);
        check_case(g, &m->base, x, apply_x(g, m, x), &l, c);
        pg_tensor_free(x);
        pg_module_free(&m->base);
    }
    /* ScaledSinusoidalEmbedding */
    pg_sinusoidal_opts so = pg_scaled_sinusoidal_defaults();
    pg_posmod *s = pg_sinusoidal_new(6, &so, PG_F64);
    cr_assert_not_null(s, "%s", pg_last_error());
    pg_tensor *sc = pg_module_find_param(&s->base, "scale");
    cr_assert(sc && sc->numel == 1 && fabs(pg_get(sc, 0) - 1 / sqrt(6.0)) < 1e-16, "scale starts at dim^-0.5");
    set_param(&s->base, "scale", &l, "sinu.scale");
    pg_tensor *x = fx_copy(&l, "sinu.x", true);
    pg_graph_reset(g);
    check_case(g, &s->base, x, apply_x(g, s, x), &l, "sinu");
    pg_tensor_free(x);
    pg_module_free(&s->base);
    /* TokenEmbedding with l2norm_embed */
    pg_rng r = pg_rng_init(1);
    pg_embed *e = pg_embed_new(7, 6, PG_F64, &r);
    e->l2norm = true;
    set_param(&e->base, "weight", &l, "tok.weight");
    pg_graph_reset(g);
    check_case(g, &e->base, NULL, pg_embed_forward(g, e, fx(&l, "tok.ids")), &l, "tok");
    pg_module_free(&e->base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

/* the halves layout is the interleaved one with its columns permuted (same frequencies) */
Test(norm_conventions, sinusoidal_halves_permute_the_pairs)
{
    pg_sinusoidal_opts ho = pg_sinusoidal_defaults();
    ho.cat_halves = true;
    pg_posmod *h = pg_sinusoidal_new(8, &ho, PG_F64), *p = pg_sinusoidal_new(8, NULL, PG_F64);
    pg_tensor *x = pg_zeros(NULL, PG_F64, PG_SHAPE(1, 5, 8));
    pg_tensor *yh = apply_x(NULL, h, x), *yp = apply_x(NULL, p, x);
    cr_assert_not_null(yh, "%s", pg_last_error());
    for (int t = 0; t < 5; t++)
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(pg_get(yh, t * 8 + i), pg_get(yp, t * 8 + 2 * i), "sin %d of token %d", i, t);
            cr_assert_eq(pg_get(yh, t * 8 + 4 + i), pg_get(yp, t * 8 + 2 * i + 1), "cos %d of token %d", i, t);
        }
    cr_assert_null(pg_module_find_param(&h->base, "scale"), "no scale without learned_scale");
    pg_tensor_free(yh);
    pg_tensor_free(yp);
    pg_tensor_free(x);
    pg_module_free(&h->base);
    pg_module_free(&p->base);
}

static pg_tensor *call_pos(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return apply_x(g, ctx, in[0]);
}

typedef struct embed_ctx {
    pg_embed *e;
    pg_tensor *ids;
} embed_ctx;

static pg_tensor *call_pos_embed(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const embed_ctx *c = ctx;
    return pg_embed_forward(g, c->e, c->ids);
}

Test(norm_conventions, gradcheck_embeddings)
{
    pg_learned_opts lo[2] = {{.scale = 0.4}, {.scale = 0.0, .l2norm = true}};
    pg_sinusoidal_opts so = pg_scaled_sinusoidal_defaults();
    pg_posmod *mods[3] = {pg_learned_new(4, 6, &lo[0], PG_F64, NULL), pg_learned_new(4, 6, &lo[1], PG_F64, NULL),
                          pg_sinusoidal_new(4, &so, PG_F64)};
    for (int i = 0; i < 3; i++) {
        cr_assert_not_null(mods[i], "%s", pg_last_error());
        pg_tensor *in[4] = {randt(PG_SHAPE(2, 3, 4), 40 + (uint64_t)i, true)};
        int n = with_params(in, 1, &mods[i]->base);
        cr_assert_eq(n, 2, "one parameter (the table or the scale)");
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(call_pos, n, in, mods[i], &o);
        pg_tensor_free(in[0]);
        pg_module_free(&mods[i]->base);
    }
    pg_rng r = pg_rng_init(3);
    pg_embed *e = pg_embed_new(5, 4, PG_F64, &r);
    e->l2norm = true;
    pg_tensor *ids = TI64(PG_SHAPE(2, 2), 0, 4, 2, 2);
    pg_tensor *in[1] = {e->weight};
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_pos_embed, 1, in, &(embed_ctx){e, ids}, &o);
    pg_tensor_free(ids);
    pg_module_free(&e->base);
}

Test(norm_conventions, bad_embedding_options)
{
    pg_learned_opts o = {.scale = -1.0};
    ASSERT_FAILS(pg_learned_new(4, 6, &o, PG_F64, NULL), "pg_learned_new: scale must be finite and >= 0");
    o.scale = NAN;
    ASSERT_FAILS(pg_learned_new(4, 6, &o, PG_F64, NULL), "got nan");
    pg_sinusoidal_opts so = pg_scaled_sinusoidal_defaults();
    pg_posmod *s = pg_sinusoidal_new(4, &so, PG_F64);
    pg_tensor *x = pg_zeros(NULL, PG_F32, PG_SHAPE(1, 2, 4));
    ASSERT_FAILS(apply_x(NULL, s, x), "pg_pos_sinusoidal: x is f32 but the module's scale is f64");
    pg_tensor_free(x);
    pg_module_free(&s->base);
}

/* ===================================================================================
 * the LM: nanoGPT's bias=False, x-transformers' conventions, ignore_index
 * =================================================================================== */

/* GPT(vocab 11, block_size 8, n_layer 2, n_head 2, n_embd 8, bias=False): its state dict (the
 * fixture's "nano.p.<nanoGPT name>" entries) loaded strictly through the nanoGPT map */
static pg_lm *nano_lm(const pg_tensor_list *l, int64_t ignore, pg_state_map **map)
{
    pg_lm_config c = pg_lm_config_nanogpt(8, 11, 2, 2, 8, /*bias*/ false, PG_F64);
    c.ignore_index = ignore;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_tensor_list p = pg_module_parameters(&lm->base);
    cr_assert_eq(p.n, 15, "nanoGPT bias=False has 15 parameters, posgrad %d", p.n);
    for (int i = 0; i < p.n; i++)
        cr_assert_null(strstr(p.names[i], "bias"), "%s with bias=False", p.names[i]);
    pg_tensor_list_free(&p);
    *map = pg_state_map_nanogpt(&c);
    cr_assert_not_null(*map, "%s", pg_last_error());
    pg_tensor_list theirs = {0};
    for (int i = 0; i < l->n; i++)
        if (!strncmp(l->names[i], "nano.p.", 7))
            pg_tensor_list_push(&theirs, l->names[i] + 7, l->tensors[i]);
    cr_assert_eq(pg_module_load_state_mapped(&lm->base, *map, &theirs), 0, "%s", pg_last_error());
    pg_tensor_list_free(&theirs);
    return lm;
}

Test(norm_conventions, nanogpt_bias_false_matches_torch)
{
    pg_tensor_list l = fixture(FIX);
    pg_graph *g = pg_graph_new();
    pg_state_map *map = NULL;
    pg_lm *lm = nano_lm(&l, -1, &map);
    pg_tensor *ids = fx(&l, "nano.ids");
    assert_close(pg_lm_forward(g, lm, ids, NULL), fx(&l, "nano.logits"), 1e-10, "logits");
    pg_graph_reset(g);
    pg_tensor *loss = pg_lm_loss(g, lm, ids, fx(&l, "nano.targets_m1"), NULL);
    assert_close(loss, fx(&l, "nano.loss_m1"), 1e-12, "loss, ignore_index -1");
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor_list ps = pg_module_parameters(&lm->base), grads = {0}, theirs = {0};
    for (int i = 0; i < ps.n; i++)
        pg_tensor_list_push(&grads, ps.names[i], ps.tensors[i]->grad);
    cr_assert_eq(pg_state_map_to_theirs(map, &grads, &theirs), 0, "%s", pg_last_error());
    cr_assert_geq(theirs.n, 15);
    for (int i = 0; i < theirs.n; i++) /* lm_head.weight: the tied copy of transformer.wte.weight's */
        assert_close(theirs.tensors[i], fx(&l, "nano.grad.%s", !strcmp(theirs.names[i], "lm_head.weight")
                                                                  ? "transformer.wte.weight" : theirs.names[i]),
                     1e-10, theirs.names[i]);
    pg_tensor_list_free_all(&theirs);
    pg_tensor_list_free(&grads);
    pg_tensor_list_free(&ps);
    pg_module_free(&lm->base);
    pg_state_map_free(map);
    /* ignore_index 0: a real class id, asked for explicitly */
    lm = nano_lm(&l, 0, &map);
    pg_state_map_free(map);
    pg_graph_reset(g);
    assert_close(pg_lm_loss(g, lm, ids, fx(&l, "nano.targets_0"), NULL), fx(&l, "nano.loss_0"), 1e-12, "loss, 0");
    /* without has_ignore_index the index is -100, as before: 0 counts and -1 is refused */
    lm->cfg.has_ignore_index = false;
    pg_graph_reset(g);
    pg_tensor *l0 = pg_lm_loss(g, lm, ids, fx(&l, "nano.targets_0"), NULL);
    cr_assert(l0 && fabs(pg_get(l0, 0) - pg_get(fx(&l, "nano.loss_0"), 0)) > 1e-3, "0 should count without it");
    pg_graph_reset(g);
    cr_assert_null(pg_lm_loss(g, lm, ids, fx(&l, "nano.targets_m1"), NULL), "-1 is no class");
    pg_module_free(&lm->base);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

/* x-transformers' defaults (norm_add_unit_offset, no attention bias, FF bias, bias-less norms) */
static pg_lm *xt_lm(bool rms)
{
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 2);
    c.attn_bias = PG_BIAS_OFF;
    c.norm_bias = PG_BIAS_OFF;
    c.norm_unit_offset = true;
    c.max_len = 8;
    c.dtype = PG_F64;
    static pg_learned_opts scaled, l2 = {.l2norm = true};
    scaled.scale = 1.0 / sqrt(8.0); /* AbsolutePositionalEmbedding: dim ** -0.5 */
    c.input_pos[c.n_input_pos++] = (pg_posmod_spec){.kind = "learned", .opts = rms ? &l2 : &scaled};
    if (rms) { /* use_rmsnorm, l2norm_embed */
        c.norm = PG_NORM_RMS;
        c.rms_form = PG_RMS_L2;
        c.tok_l2norm = true;
    }
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    return lm;
}

Test(norm_conventions, xtransformers_conventions_match_torch)
{
    pg_tensor_list l = fixture(FIX);
    pg_graph *g = pg_graph_new();
    for (int rms = 0; rms < 2; rms++) {
        const char *p = rms ? "xt_rms." : "xt_ln.";
        pg_lm *lm = xt_lm(rms);
        char pre[16];
        snprintf(pre, sizeof pre, "%sp.", p);
        load_params(&lm->base, &l, pre);
        cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.1.ff.proj_out.bias"));
        cr_assert_null(pg_module_find_param(&lm->base, "blocks.1.attn.to_qkv.bias"));
        cr_assert_null(pg_module_find_param(&lm->base, "blocks.1.attn.to_out.bias"));
        cr_assert_null(pg_module_find_param(&lm->base, "blocks.1.norm2.bias"));
        cr_assert_null(pg_module_find_param(&lm->base, "norm.bias"));
        if (rms)
            cr_assert_eq(((pg_rmsnorm *)lm->norm)->eps, 1e-12, "PG_RMS_L2's default eps");
        pg_graph_reset(g);
        assert_close(pg_lm_forward(g, lm, fx(&l, "xt.ids"), NULL), fx(&l, "%slogits", p), 1e-10, p);
        pg_graph_reset(g);
        pg_tensor *loss = pg_lm_loss(g, lm, fx(&l, "xt.ids"), fx(&l, "xt.targets"), NULL);
        assert_close(loss, fx(&l, "%sloss", p), 1e-12, p);
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        check_param_grads(&lm->base, &l, p, 1e-10);
        pg_module_free(&lm->base);
    }
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

typedef struct loss_ctx {
    pg_lm *lm;
    pg_tensor *ids, *targets;
} loss_ctx;

static pg_tensor *call_loss(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const loss_ctx *c = ctx;
    return pg_lm_loss(g, c->lm, c->ids, c->targets, NULL);
}

/* the loss of a small LM with the new switches (targets with the ignored index 0) */
static void gradcheck_switches(pg_norm_kind norm, bool unit, pg_bias_switch attn, pg_bias_switch ff,
                               pg_bias_switch nb, bool l2embed)
{
    pg_lm_config c = pg_lm_defaults(5, 4, 2, 2);
    c.ff_hidden = 6;
    c.bias = false;
    c.attn_bias = attn, c.ff_bias = ff, c.norm_bias = nb;
    c.norm = norm;
    c.rms_form = norm == PG_NORM_RMS ? PG_RMS_L2 : PG_RMS_MEAN;
    c.norm_unit_offset = unit;
    c.tok_l2norm = l2embed;
    c.max_len = 4;
    c.dtype = PG_F64;
    c.seed = 3;
    static const pg_learned_opts l2 = {.l2norm = true}, scaled = {.scale = 0.5};
    c.input_pos[c.n_input_pos++] = (pg_posmod_spec){.kind = "learned", .opts = l2embed ? &l2 : &scaled};
    c.has_ignore_index = true;
    c.ignore_index = 0;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_rng r = pg_rng_init(9);
    for (int i = 0; i < ps.n; i++)
        if (strstr(ps.names[i], "norm")) /* gains and biases off their initial 0 / 1 */
            pg_fill_uniform(ps.tensors[i], &r, -0.5, 0.5);
    pg_tensor_list_free(&ps);
    loss_ctx lc = {lm, TI64(PG_SHAPE(2, 3), 1, 4, 0, 2, 3, 3), TI64(PG_SHAPE(2, 3), 4, 0, 2, 3, 0, 1)};
    pg_tensor *in[64];
    int n = with_params(in, 0, &lm->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_loss, n, in, &lc, &o);
    pg_tensor_free(lc.ids);
    pg_tensor_free(lc.targets);
    pg_module_free(&lm->base);
}

Test(norm_conventions, gradcheck_lm_layernorm_switches)
{
    gradcheck_switches(PG_NORM_LAYER, true, PG_BIAS_DEFAULT, PG_BIAS_ON, PG_BIAS_ON, false);
    gradcheck_switches(PG_NORM_LAYER, false, PG_BIAS_ON, PG_BIAS_OFF, PG_BIAS_OFF, false);
}

Test(norm_conventions, gradcheck_lm_rms_l2_unit_offset_l2norm_embed)
{
    gradcheck_switches(PG_NORM_RMS, true, PG_BIAS_OFF, PG_BIAS_ON, PG_BIAS_DEFAULT, true);
}

/* old callers: `bias` alone means what it did (Linears only; the LayerNorms keep theirs) */
Test(norm_conventions, bias_alone_keeps_its_meaning)
{
    pg_lm_config c = pg_lm_defaults(7, 4, 2, 1);
    c.bias = false;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.0.norm1.bias"));
    cr_assert_not_null(pg_module_find_param(&lm->base, "norm.bias"));
    cr_assert_null(pg_module_find_param(&lm->base, "blocks.0.attn.to_qkv.bias"));
    cr_assert_null(pg_module_find_param(&lm->base, "blocks.0.ff.proj_in.bias"));
    const pg_block_config *k = &lm->blocks[0]->cfg;
    cr_assert(k->attn_bias == PG_BIAS_OFF && k->ff_bias == PG_BIAS_OFF && k->norm_bias == PG_BIAS_ON, "resolved");
    cr_assert_eq(lm->cfg.norm_eps, 1e-5);
    pg_module_free(&lm->base);
    /* the switches override `bias` one by one */
    c.bias = true;
    c.ff_bias = PG_BIAS_OFF;
    lm = pg_lm_new(&c);
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.0.attn.to_out.bias"));
    cr_assert_null(pg_module_find_param(&lm->base, "blocks.0.ff.proj_out.bias"));
    pg_module_free(&lm->base);
    /* PG_NORM_EPS_ZERO: exactly 0 in the norms, kept as the sentinel in the configs */
    c.norm_eps = PG_NORM_EPS_ZERO;
    lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    cr_assert_eq(((pg_layernorm *)lm->norm)->eps, 0.0);
    cr_assert_eq(((pg_layernorm *)lm->blocks[0]->norm1)->eps, 0.0);
    cr_assert_eq(lm->blocks[0]->cfg.norm_eps, PG_NORM_EPS_ZERO);
    pg_module_free(&lm->base);
}

Test(norm_conventions, bad_switches_refused)
{
    pg_lm_config c = pg_lm_defaults(7, 4, 2, 1);
    c.norm = PG_NORM_RMS;
    c.norm_bias = PG_BIAS_ON;
    ASSERT_FAILS(pg_lm_new(&c), "pg_lm_new: norm_bias PG_BIAS_ON needs LayerNorm (RMSNorm has no bias)");
    c = pg_lm_defaults(7, 4, 2, 1);
    c.rms_form = PG_RMS_L2;
    ASSERT_FAILS(pg_lm_new(&c), "pg_lm_new: rms_form PG_RMS_L2 needs norm PG_NORM_RMS");
    c.norm = PG_NORM_RMS;
    c.norm_eps = PG_NORM_EPS_ZERO;
    ASSERT_FAILS(pg_lm_new(&c), "pg_lm_new: PG_RMS_L2 needs norm_eps > 0");
    c = pg_lm_defaults(7, 4, 2, 1);
    c.attn_bias = (pg_bias_switch)5;
    ASSERT_FAILS(pg_lm_new(&c), "pg_lm_new: attn_bias, ff_bias and norm_bias must be PG_BIAS_DEFAULT");
    c = pg_lm_defaults(7, 4, 2, 1);
    c.norm_eps = -2;
    ASSERT_FAILS(pg_lm_new(&c), "norm_eps");
    pg_block_config b = pg_block_defaults(4, 2);
    b.ff_bias = (pg_bias_switch)-1;
    pg_rng r = pg_rng_init(0);
    ASSERT_FAILS(pg_block_new(&b, NULL, 0, &r), "pg_block_new: attn_bias, ff_bias and norm_bias must be");
    b = pg_block_defaults(4, 2);
    b.rms_form = (pg_rms_form)3;
    b.norm = PG_NORM_RMS;
    ASSERT_FAILS(pg_block_new(&b, NULL, 0, &r), "pg_block_new: unknown rms_form");
}

/* a block with the switches: x-transformers' layout of parameters */
Test(norm_conventions, block_switches_and_names)
{
    pg_block_config b = pg_block_defaults(4, 2);
    b.attn_bias = PG_BIAS_OFF;
    b.norm_bias = PG_BIAS_OFF;
    b.norm_unit_offset = true;
    b.dtype = PG_F64;
    pg_rng r = pg_rng_init(0);
    pg_block *blk = pg_block_new(&b, NULL, 0, &r);
    cr_assert_not_null(blk, "%s", pg_last_error());
    pg_tensor_list p = pg_module_parameters(&blk->base);
    static const char *const want[] = {"norm1.weight", "attn.to_qkv.weight", "attn.to_out.weight", "norm2.weight",
                                       "ff.proj_in.weight", "ff.proj_in.bias", "ff.proj_out.weight",
                                       "ff.proj_out.bias"};
    cr_assert_eq(p.n, 8);
    for (int i = 0; i < 8; i++)
        cr_assert_str_eq(p.names[i], want[i]);
    cr_assert_eq(pg_get(blk->norm1 ? pg_module_find_param(blk->norm1, "weight") : NULL, 0), 0.0, "unit offset");
    pg_tensor_list_free(&p);
    pg_module_free(&blk->base);
}

/* the KV cache decodes these models as the full forward does (the conventions live in the modules) */
static double cached_vs_full(pg_lm *lm)
{
    pg_tensor *ids = TI64(PG_SHAPE(2, 6), 1, 5, 2, 9, 0, 3, 10, 4, 4, 7, 6, 2);
    pg_tensor *full = pg_lm_forward(NULL, lm, ids, NULL); /* (2, 6, 11) */
    cr_assert_not_null(full, "%s", pg_last_error());
    pg_lm_cache *c = pg_lm_cache_new(lm, 2, 6);
    cr_assert_not_null(c, "%s", pg_last_error());
    pg_graph *g = pg_graph_new();
    double worst = 0;
    for (int64_t t = 0; t < 6; t += t == 0 ? 3 : 1) {
        pg_graph_reset(g);
        int64_t n = t == 0 ? 3 : 1;
        pg_tensor *y = t == 0 ? pg_lm_cache_prefill(g, lm, c, pg_narrow(g, ids, 1, 0, 3))
                              : pg_lm_cache_step(g, lm, c, pg_narrow(g, ids, 1, t, 1));
        cr_assert_not_null(y, "%s", pg_graph_error(g));
        for (int64_t b = 0; b < 2; b++)
            for (int64_t i = 0; i < n * 11; i++)
                worst = fmax(worst, fabs(pg_get(y, b * n * 11 + i) - pg_get(full, (b * 6 + t) * 11 + i)));
    }
    pg_graph_free(g);
    pg_lm_cache_free(c);
    pg_tensor_free(full);
    pg_tensor_free(ids);
    return worst;
}

Test(norm_conventions, kv_cache_decodes_the_conventions)
{
    pg_tensor_list l = fixture(FIX);
    pg_state_map *map = NULL;
    pg_lm *lms[3] = {nano_lm(&l, -1, &map), xt_lm(false), xt_lm(true)};
    pg_state_map_free(map);
    for (int i = 0; i < 3; i++) {
        pg_module_train(&lms[i]->base, false);
        if (i > 0)
            load_params(&lms[i]->base, &l, i == 1 ? "xt_ln.p." : "xt_rms.p.");
        double d = cached_vs_full(lms[i]);
        cr_assert(d <= 1e-12, "model %d: cached vs full %.3g", i, d);
        pg_module_free(&lms[i]->base);
    }
    pg_tensor_list_free_all(&l);
}
