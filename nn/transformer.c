/* The pre-norm transformer block and the decoder-only language model.
 * Sampling and generation are in nn/sample.c. */
#include "transformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

static const pg_attn_args NO_ARGS = {0}; /* a NULL pg_attn_args means these */

/* ---- biases and norm conventions (transformer.h, pg_bias_switch) ------------------------------ */

static pg_bias_switch switch_resolve(pg_bias_switch s, bool dflt)
{
    return s == PG_BIAS_DEFAULT ? (dflt ? PG_BIAS_ON : PG_BIAS_OFF) : s;
}

/* the form's default eps: F.normalize's 1e-12 for PG_RMS_L2, else torch's 1e-5 */
static double eps_default(pg_norm_kind kind, pg_rms_form form)
{
    return kind == PG_NORM_RMS && form == PG_RMS_L2 ? 1e-12 : 1e-5;
}

static bool switch_ok(pg_bias_switch s) { return s == PG_BIAS_DEFAULT || s == PG_BIAS_ON || s == PG_BIAS_OFF; }

/* The switches and norm options of c are known and fit its norm; message "fn: ..." */
static bool conventions_ok(const char *fn, const pg_block_config *c)
{
    bool rms = c->norm == PG_NORM_RMS, l2 = rms && c->rms_form == PG_RMS_L2;
    const char *why = !switch_ok(c->attn_bias) || !switch_ok(c->ff_bias) || !switch_ok(c->norm_bias)
                          ? "attn_bias, ff_bias and norm_bias must be PG_BIAS_DEFAULT, PG_BIAS_ON or PG_BIAS_OFF"
                      : rms && c->norm_bias == PG_BIAS_ON ? "norm_bias PG_BIAS_ON needs LayerNorm (RMSNorm has no bias)"
                      : c->rms_form != PG_RMS_MEAN && c->rms_form != PG_RMS_L2 ? "unknown rms_form"
                      : !rms && c->rms_form != PG_RMS_MEAN ? "rms_form PG_RMS_L2 needs norm PG_NORM_RMS"
                      : l2 && c->norm_eps == PG_NORM_EPS_ZERO ? "PG_RMS_L2 needs norm_eps > 0 (0 means 1e-12)"
                      : !(c->norm_eps >= 0 || c->norm_eps == PG_NORM_EPS_ZERO) || !isfinite(c->norm_eps)
                          ? "norm_eps must be finite and >= 0, or PG_NORM_EPS_ZERO"
                          : NULL;
    if (why)
        pg_set_error("%s: %s (norm %d, rms_form %d, norm_eps %g, attn_bias %d, ff_bias %d, norm_bias %d)", fn, why,
                     (int)c->norm, (int)c->rms_form, c->norm_eps, (int)c->attn_bias, (int)c->ff_bias,
                     (int)c->norm_bias);
    return !why;
}

/* The switches to ON / OFF and norm_eps 0 to the form's default (PG_NORM_EPS_ZERO stays) */
static void conventions_resolve(pg_block_config *k)
{
    k->attn_bias = switch_resolve(k->attn_bias, k->bias);
    k->ff_bias = switch_resolve(k->ff_bias, k->bias);
    k->norm_bias = switch_resolve(k->norm_bias, k->norm == PG_NORM_LAYER); /* before: always on */
    if (k->norm_eps == 0)
        k->norm_eps = eps_default(k->norm, k->rms_form);
}

/* ---- norms: LayerNorm or RMSNorm behind one pointer ------------------------------------------ */

/* the block's norm (k resolved) */
static pg_module *norm_new(const pg_block_config *k)
{
    pg_norm_opts o = pg_norm_defaults();
    o.eps = k->norm_eps == PG_NORM_EPS_ZERO ? 0.0 : k->norm_eps;
    o.bias = k->norm == PG_NORM_LAYER && k->norm_bias == PG_BIAS_ON;
    o.unit_offset = k->norm_unit_offset;
    o.form = k->norm == PG_NORM_RMS ? k->rms_form : PG_RMS_MEAN;
    if (k->norm == PG_NORM_RMS) {
        pg_rmsnorm *n = pg_rmsnorm_new_opts(k->dim, &o, k->dtype);
        return n ? &n->base : NULL;
    }
    pg_layernorm *n = pg_layernorm_new_opts(k->dim, &o, k->dtype);
    return n ? &n->base : NULL;
}

static pg_tensor *norm_forward(pg_graph *g, pg_norm_kind kind, pg_module *n, pg_tensor *x)
{
    return kind == PG_NORM_RMS ? pg_rmsnorm_forward(g, (pg_rmsnorm *)n, x)
                               : pg_layernorm_forward(g, (pg_layernorm *)n, x);
}

/* Adds a module made by a constructor as child `name`; false on failure (the
 * child, if any, is freed by pg_module_add_child). */
static bool adopt(pg_module *parent, const char *name, pg_module *child)
{
    return child && pg_module_add_child(parent, name, child) == 0;
}

/* ---- TransformerBlock ------------------------------------------------------------------------ */

pg_block_config pg_block_defaults(int64_t dim, int64_t heads)
{
    pg_block_config c = {0};
    c.dim = dim;
    c.heads = heads;
    c.ff_kind = PG_FF_MLP;
    c.ff_act = PG_ACT_GELU;
    c.bias = true;
    c.norm = PG_NORM_LAYER;
    c.dtype = PG_F32;
    return c;
}

static bool block_config_ok(const char *fn, const pg_block_config *c)
{
    if (!c) {
        pg_set_error("%s: config is NULL", fn);
        return false;
    }
    bool ok = c->dim >= 1 && c->ff_hidden >= 0 && (c->norm == PG_NORM_LAYER || c->norm == PG_NORM_RMS) &&
              (c->norm_eps >= 0 || c->norm_eps == PG_NORM_EPS_ZERO) && isfinite(c->norm_eps) &&
              c->resid_dropout >= 0 && c->resid_dropout < 1;
    if (!ok)
        pg_set_error("%s: need dim >= 1, ff_hidden >= 0, a known norm, finite norm_eps >= 0 and resid_dropout in "
                     "[0, 1), got dim %lld, ff_hidden %lld, norm %d, norm_eps %g, resid_dropout %g",
                     fn, (long long)c->dim, (long long)c->ff_hidden, (int)c->norm, c->norm_eps, c->resid_dropout);
    return ok && conventions_ok(fn, c);
}

pg_block *pg_block_new(const pg_block_config *c, pg_posmod *const *pos, int n_pos, pg_rng *r)
{
    const char *fn = "pg_block_new";
    bool args_ok = r && n_pos >= 0 && (pos || n_pos == 0);
    if (!args_ok)
        pg_set_error("%s: %s", fn, !r ? "generator is NULL" : "bad positional module list (pos NULL or n_pos < 0)");
    if (!args_ok || !block_config_ok(fn, c)) {
        pg_posmod_free_list(pos, 0, n_pos); /* ownership was promised */
        return NULL;
    }
    pg_block *b = pg_module_alloc(sizeof *b, "TransformerBlock", NULL, fn);
    if (!b) {
        pg_posmod_free_list(pos, 0, n_pos);
        return NULL;
    }
    b->cfg = *c;
    if (b->cfg.ff_hidden == 0)
        b->cfg.ff_hidden = 4 * c->dim;
    conventions_resolve(&b->cfg);
    const pg_block_config *k = &b->cfg;
    pg_mha_config mc = {.dim = k->dim, .heads = k->heads, .bias = k->attn_bias == PG_BIAS_ON, .causal = k->causal,
                        .dropout = k->attn_dropout, .scale = k->scale, .dtype = k->dtype, .band = k->band,
                        .dim_head = k->dim_head, .kv_heads = k->kv_heads, .qk_norm = k->qk_norm,
                        .qk_norm_scale = k->qk_norm_scale, .qk_norm_dim_scale = k->qk_norm_dim_scale,
                        .qk_norm_groups = k->qk_norm_groups};
    /* children in data-flow order */
    b->norm1 = norm_new(k);
    if (!adopt(&b->base, "norm1", b->norm1)) {
        pg_posmod_free_list(pos, 0, n_pos);
        goto fail;
    }
    b->attn = pg_mha_new(&mc, pos, n_pos, r); /* adopts pos, also when it fails */
    if (!adopt(&b->base, "attn", b->attn ? &b->attn->base : NULL))
        goto fail;
    b->norm2 = norm_new(k);
    if (!adopt(&b->base, "norm2", b->norm2))
        goto fail;
    b->ff = pg_feedforward_new(k->dim, k->ff_hidden, k->ff_kind, k->ff_act, k->ff_dropout, k->ff_bias == PG_BIAS_ON,
                               k->dtype, r);
    if (!adopt(&b->base, "ff", b->ff ? &b->ff->base : NULL))
        goto fail;
    return b;
fail:
    pg_module_free(&b->base);
    return NULL;
}

/* training and p > 0: dropout from a->rng; else x itself */
static pg_tensor *resid_drop(pg_graph *g, const pg_module *m, double p, pg_tensor *x, const pg_attn_args *a)
{
    return pg_dropout(g, x, p, m->training, a->rng);
}

pg_tensor *pg_block_forward(pg_graph *g, pg_block *b, pg_tensor *x, const pg_attn_args *a)
{
    const char *fn = "pg_block_forward";
    PG_NN_SCRATCH(g, fn, pg_block_forward(g, b, x, a));
    a = a ? a : &NO_ARGS;
    if (!b) {
        pg_graph_fail(g, "%s: module is NULL", fn);
        return NULL;
    }
    const pg_block_config *c = &b->cfg;
    if (!x || x->ndim != 3 || x->shape[2] != c->dim || x->dtype != c->dtype || x->shape[0] < 1 || x->shape[1] < 1) {
        pg_graph_fail(g, "%s: x is %s, expected (B, L, %lld) of %s", fn, x ? SHAPE(x) : "NULL", (long long)c->dim,
                      pg_dtype_name(c->dtype));
        return NULL;
    }
    if (pg_attn_args_check(g, fn, a, true, x->shape[0], c->heads, x->shape[1], x->shape[1], c->dtype) != 0)
        return NULL;
    bool drop = b->base.training && (c->resid_dropout > 0 || c->ff_dropout > 0 || c->attn_dropout > 0);
    if (drop && !a->rng) {
        pg_graph_fail(g, "%s: dropout in train mode needs args.rng", fn);
        return NULL;
    }
    pg_mha *m = b->attn;
    x = pg_posmod_apply_x(g, m->pos, m->n_pos, x, a->pos, a->mask, c->heads, m->head_dim, a->rng);
    pg_tensor *h = pg_mha_forward(g, m, norm_forward(g, c->norm, b->norm1, x), NULL, a);
    x = pg_add(g, x, resid_drop(g, &b->base, c->resid_dropout, h, a));
    h = pg_feedforward_forward(g, b->ff, norm_forward(g, c->norm, b->norm2, x), a->rng);
    return pg_add(g, x, resid_drop(g, &b->base, c->resid_dropout, h, a));
}

/* ---- the language model --------------------------------------------------------------------- */

pg_lm_config pg_lm_defaults(int64_t vocab, int64_t dim, int64_t heads, int64_t layers)
{
    pg_lm_config c = {0};
    c.vocab = vocab;
    c.dim = dim;
    c.heads = heads;
    c.layers = layers;
    c.ff_kind = PG_FF_MLP;
    c.ff_act = PG_ACT_GELU;
    c.bias = true;
    c.norm = PG_NORM_LAYER;
    c.dtype = PG_F32;
    return c;
}

static void lm_destroy(pg_module *base)
{
    pg_lm *lm = (pg_lm *)base;
    free(lm->pos);
    free(lm->blocks);
    free(lm);
}

/* The LM's switches and norm options (one group of fields) into a block config */
static void lm_conventions(pg_block_config *bc, const pg_lm_config *c)
{
    bc->attn_bias = c->attn_bias;
    bc->ff_bias = c->ff_bias;
    bc->norm_bias = c->norm_bias;
    bc->norm_unit_offset = c->norm_unit_offset;
    bc->rms_form = c->rms_form;
}

/* What the final norm is built from (resolved by norm_new's caller) */
static pg_block_config lm_norm_config(const pg_lm_config *c)
{
    pg_block_config bc = {.dim = c->dim, .bias = c->bias, .norm = c->norm, .norm_eps = c->norm_eps, .dtype = c->dtype};
    lm_conventions(&bc, c);
    return bc;
}

static bool lm_config_ok(const char *fn, const pg_lm_config *c)
{
    if (!c) {
        pg_set_error("%s: config is NULL", fn);
        return false;
    }
    if (c->vocab < 1 || c->dim < 1 || c->heads < 1 || c->dim_head < 0 || (c->dim_head == 0 && c->dim % c->heads) ||
        c->layers < 0 || c->max_len < 0) {
        pg_set_error("%s: need vocab >= 1, dim a positive multiple of heads (or dim_head > 0), layers >= 0 and "
                     "max_len >= 0, got vocab %lld, dim %lld, heads %lld, dim_head %lld, layers %lld, max_len %lld",
                     fn, (long long)c->vocab, (long long)c->dim, (long long)c->heads, (long long)c->dim_head,
                     (long long)c->layers, (long long)c->max_len);
        return false;
    }
    if (!(c->dropout >= 0 && c->dropout < 1) || !(c->init_std >= 0) || !isfinite(c->init_std) ||
        !pg_dtype_is_float(c->dtype) || (c->norm != PG_NORM_LAYER && c->norm != PG_NORM_RMS) ||
        !(c->norm_eps >= 0 || c->norm_eps == PG_NORM_EPS_ZERO) || !isfinite(c->norm_eps)) {
        pg_set_error("%s: need dropout in [0, 1), finite init_std >= 0, a float dtype, a known norm and finite "
                     "norm_eps >= 0, got %g, %g, %s, %d, %g",
                     fn, c->dropout, c->init_std, pg_dtype_name(c->dtype), (int)c->norm, c->norm_eps);
        return false;
    }
    if (c->n_input_pos < 0 || c->n_input_pos > PG_LM_MAX_POS || c->n_layer_pos < 0 ||
        c->n_layer_pos > PG_LM_MAX_POS) {
        pg_set_error("%s: n_input_pos %d and n_layer_pos %d must be in [0, %d]", fn, c->n_input_pos, c->n_layer_pos,
                     PG_LM_MAX_POS);
        return false;
    }
    for (int i = c->n_layer_pos; i < PG_LM_MAX_POS; i++)
        if (c->share_layer_pos[i]) {
            pg_set_error("%s: share_layer_pos[%d] is set but n_layer_pos is %d: there is no layer_pos[%d] to share",
                         fn, i, c->n_layer_pos, i);
            return false;
        }
    pg_block_config bc = lm_norm_config(c);
    return conventions_ok(fn, &bc);
}

/* Builds the n positional modules of specs for `layer` into out; on failure
 * frees those already built and returns -1. */
static int build_posmods(const char *fn, const pg_lm_config *c, const pg_posmod_spec *specs, int n, int layer,
                         pg_rng *r, pg_posmod **out)
{
    int64_t Dh = c->dim_head > 0 ? c->dim_head : c->dim / c->heads; /* the attention's head width */
    pg_posmod_args a = {c->dim, layer < 0 ? 0 : c->heads, layer < 0 ? 0 : Dh, c->max_len, layer,
                        c->dtype, r, NULL};
    for (int i = 0; i < n; i++) {
        out[i] = pg_posmod_from_spec(&specs[i], &a);
        bool bad_input = out[i] && layer < 0 && (out[i]->ops->mod_qkv || out[i]->ops->mod_bias);
        if (!out[i] || bad_input) {
            if (bad_input)
                pg_set_error("%s: input positional module %d (%s) has mod_qkv / mod_bias hooks, which act inside "
                             "attention: list it in layer_pos",
                             fn, i, out[i]->base.type);
            else {
                char why[256];
                snprintf(why, sizeof why, "%s", pg_last_error());
                pg_set_error("%s: positional module %d of layer %d: %s", fn, i, layer, why);
            }
            for (int j = 0; j <= i; j++)
                if (out[j])
                    pg_module_free(&out[j]->base);
            return -1;
        }
    }
    return 0;
}

/* A ModuleList child `name` of parent; NULL on failure */
static pg_module *add_list(pg_module *parent, const char *name)
{
    pg_module *l = pg_module_new_container("ModuleList", "pg_lm_new");
    return l && pg_module_add_child(parent, name, l) == 0 ? l : NULL;
}

/* input modules: "pos" (one) or "pos.N" (several) */
static bool add_input_pos(pg_lm *lm, pg_rng *r)
{
    const pg_lm_config *c = &lm->cfg;
    if (c->n_input_pos == 0)
        return true;
    if (build_posmods("pg_lm_new", c, c->input_pos, c->n_input_pos, -1, r, lm->pos) != 0)
        return false;
    lm->n_pos = c->n_input_pos;
    pg_module *parent = &lm->base;
    if (c->n_input_pos > 1 && !(parent = add_list(&lm->base, "pos"))) {
        for (int i = 0; i < lm->n_pos; i++)
            pg_module_free(&lm->pos[i]->base);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < lm->n_pos; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        if (!ok) /* ownership: free those not adopted */
            pg_module_free(&lm->pos[i]->base);
        else
            ok = pg_module_add_child(parent, lm->n_pos > 1 ? name : "pos", &lm->pos[i]->base) == 0;
    }
    return ok;
}

/* ---- one positional module shared by every block (pg_lm_config.share_layer_pos) ---------------- */

/* Builds each shared layer_pos[i] once as lm->rel_pos[i], the LM's child "rel_pos"
 * (one) or "rel_pos.N" (several, N counting the shared ones), built as for block 0. */
static bool add_rel_pos(pg_lm *lm, pg_rng *r)
{
    const char *fn = "pg_lm_new";
    const pg_lm_config *c = &lm->cfg;
    int n = 0;
    for (int i = 0; i < c->n_layer_pos; i++)
        n += c->share_layer_pos[i];
    pg_module *parent = &lm->base;
    if (n > 1 && !(parent = add_list(&lm->base, "rel_pos")))
        return false;
    for (int i = 0, k = 0; i < c->n_layer_pos; i++) {
        if (!c->share_layer_pos[i])
            continue;
        pg_posmod *p = NULL;
        if (build_posmods(fn, c, &c->layer_pos[i], 1, 0, r, &p) != 0) {
            char why[300];
            const char *at = strstr(pg_last_error(), "of layer 0: ");
            snprintf(why, sizeof why, "%s", at ? at + strlen("of layer 0: ") : pg_last_error());
            pg_set_error("%s: shared positional module layer_pos[%d] (share_layer_pos): %s", fn, i, why);
            return false;
        }
        char name[16];
        snprintf(name, sizeof name, "%d", k++);
        if (pg_module_add_child(parent, n > 1 ? name : "rel_pos", &p->base) != 0)
            return false;
        lm->rel_pos[i] = p;
    }
    return true;
}

/* The specs each block builds for itself: layer_pos without the shared entries, in order. */
static int own_layer_specs(const pg_lm_config *c, pg_posmod_spec *own)
{
    int n = 0;
    for (int i = 0; i < c->n_layer_pos; i++)
        if (!c->share_layer_pos[i])
            own[n++] = c->layer_pos[i];
    return n;
}

/* Lends the shared modules to b's attention at their layer_pos index (ascending, so
 * the list ends up in layer_pos order). */
static bool lend_rel_pos(const pg_lm *lm, pg_block *b)
{
    for (int i = 0; i < lm->cfg.n_layer_pos; i++)
        if (lm->rel_pos[i] && pg_mha_borrow_pos(b->attn, lm->rel_pos[i], i) != 0)
            return false;
    return true;
}

static bool add_blocks(pg_lm *lm, pg_rng *r)
{
    const pg_lm_config *c = &lm->cfg;
    pg_module *list = add_list(&lm->base, "blocks");
    if (!list)
        return false;
    pg_posmod_spec own[PG_LM_MAX_POS];
    int n_own = own_layer_specs(c, own);
    pg_block_config bc = {.dim = c->dim, .heads = c->heads, .ff_hidden = c->ff_hidden, .ff_kind = c->ff_kind,
                          .ff_act = c->ff_act, .bias = c->bias, .causal = true, .attn_dropout = c->attn_dropout,
                          .ff_dropout = c->dropout, .resid_dropout = c->dropout, .norm = c->norm,
                          .norm_eps = c->norm_eps, .dtype = c->dtype, .band = c->band,
                          .dim_head = c->dim_head, .kv_heads = c->kv_heads, .qk_norm = c->qk_norm,
                          .qk_norm_dim_scale = c->qk_norm_dim_scale, .qk_norm_scale = c->qk_norm_scale,
                          .qk_norm_groups = c->qk_norm_groups};
    lm_conventions(&bc, c);
    for (int64_t i = 0; i < c->layers; i++) {
        pg_posmod *pos[PG_LM_MAX_POS];
        if (build_posmods("pg_lm_new", c, own, n_own, (int)i, r, pos) != 0)
            return false;
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        lm->blocks[i] = pg_block_new(&bc, pos, n_own, r);
        if (!adopt(list, name, lm->blocks[i] ? &lm->blocks[i]->base : NULL) || !lend_rel_pos(lm, lm->blocks[i]))
            return false;
    }
    return true;
}

/* head: Linear(dim -> vocab) without bias, or a Linear sharing tok_emb.weight */
static pg_linear *make_head(pg_lm *lm, pg_rng *r)
{
    const pg_lm_config *c = &lm->cfg;
    if (!c->tie_weights)
        return pg_linear_new(c->dim, c->vocab, false, c->dtype, r);
    pg_linear *h = pg_module_alloc(sizeof *h, "Linear", NULL, "pg_lm_new");
    if (!h)
        return NULL;
    h->in_features = c->dim;
    h->out_features = c->vocab;
    h->weight = lm->tok_emb->weight;
    if (pg_module_add_param(&h->base, "weight", h->weight, false) != 0)
        return pg_module_fail(&h->base, NULL);
    return h;
}

/* GPT-2 style init: N(0, std) weights, zero biases, for the Linears named here */
static void init_linear(pg_linear *l, pg_rng *r, double std)
{
    pg_fill_normal(l->weight, r, 0.0, std);
    if (l->bias)
        pg_fill(l->bias, 0.0);
}

static void init_gpt2(pg_lm *lm, pg_rng *r)
{
    double s = lm->cfg.init_std;
    pg_fill_normal(lm->tok_emb->weight, r, 0.0, s);
    for (int64_t i = 0; i < lm->cfg.layers; i++) {
        pg_block *b = lm->blocks[i];
        init_linear(b->attn->to_qkv, r, s);
        init_linear(b->attn->to_out, r, s);
        init_linear(b->ff->proj_in, r, s);
        init_linear(b->ff->proj_out, r, s);
    }
    if (!lm->cfg.tie_weights)
        init_linear(lm->head, r, s);
}

pg_lm *pg_lm_new(const pg_lm_config *c)
{
    const char *fn = "pg_lm_new";
    if (!lm_config_ok(fn, c))
        return NULL;
    pg_lm *lm = pg_module_alloc(sizeof *lm, "TransformerLM", lm_destroy, fn);
    if (!lm)
        return NULL;
    lm->pos = calloc(PG_LM_MAX_POS, sizeof *lm->pos);
    lm->blocks = calloc((size_t)c->layers + 1, sizeof *lm->blocks);
    if (!lm->pos || !lm->blocks) {
        pg_set_error("%s: out of memory", fn);
        pg_module_free(&lm->base);
        return NULL;
    }
    lm->cfg = *c;
    pg_block_config nc = lm_norm_config(c);
    conventions_resolve(&nc);
    lm->cfg.norm_eps = nc.norm_eps;
    pg_rng r = pg_rng_init(c->seed);
    lm->tok_emb = pg_embed_new(c->vocab, c->dim, c->dtype, &r);
    if (lm->tok_emb)
        lm->tok_emb->l2norm = c->tok_l2norm;
    bool ok = adopt(&lm->base, "tok_emb", lm->tok_emb ? &lm->tok_emb->base : NULL) && add_input_pos(lm, &r) &&
              add_rel_pos(lm, &r) && add_blocks(lm, &r);
    if (ok) {
        lm->norm = norm_new(&nc);
        ok = adopt(&lm->base, "norm", lm->norm);
    }
    if (ok) {
        lm->head = make_head(lm, &r);
        ok = adopt(&lm->base, "head", lm->head ? &lm->head->base : NULL);
    }
    if (!ok)
        return pg_module_fail(&lm->base, NULL);
    if (c->init_std > 0)
        init_gpt2(lm, &r);
    return lm;
}

/* ids: (B, L) i64, 1 <= L <= max_len (if set), every id in [0, vocab) */
static bool ids_ok(pg_graph *g, const char *fn, const pg_lm_config *c, const pg_tensor *ids)
{
    if (!ids || ids->dtype != PG_I64 || ids->ndim != 2 || ids->shape[0] < 1 || ids->shape[1] < 1 ||
        (c->max_len > 0 && ids->shape[1] > c->max_len)) {
        char lim[48] = "";
        if (c->max_len > 0)
            snprintf(lim, sizeof lim, " <= max_len %lld", (long long)c->max_len);
        pg_graph_fail(g, "%s: ids is %s, expected i64 (B, L) with 1 <= L%s", fn, ids ? SHAPE(ids) : "NULL", lim);
        return false;
    }
    const int64_t *v = pg_i64(ids);
    for (int64_t i = 0; i < ids->numel; i++)
        if (v[i] < 0 || v[i] >= c->vocab) {
            pg_graph_fail(g, "%s: id %lld at [%lld, %lld] is outside the vocabulary [0, %lld)", fn, (long long)v[i],
                          (long long)(i / ids->shape[1]), (long long)(i % ids->shape[1]), (long long)c->vocab);
            return false;
        }
    return true;
}

pg_tensor *pg_lm_forward(pg_graph *g, pg_lm *lm, pg_tensor *ids, const pg_attn_args *a)
{
    const char *fn = "pg_lm_forward";
    PG_NN_SCRATCH(g, fn, pg_lm_forward(g, lm, ids, a));
    a = a ? a : &NO_ARGS;
    if (!lm) {
        pg_graph_fail(g, "%s: module is NULL", fn);
        return NULL;
    }
    const pg_lm_config *c = &lm->cfg;
    if (!ids_ok(g, fn, c, ids))
        return NULL;
    int64_t B = ids->shape[0], L = ids->shape[1];
    if (pg_attn_args_check(g, fn, a, true, B, c->heads, L, L, c->dtype) != 0)
        return NULL;
    if (lm->base.training && c->dropout > 0 && !a->rng) {
        pg_graph_fail(g, "%s: dropout %g in train mode needs args.rng", fn, c->dropout);
        return NULL;
    }
    pg_tensor *x = pg_embed_forward(g, lm->tok_emb, ids); /* (B, L, dim) */
    x = pg_posmod_apply_x(g, lm->pos, lm->n_pos, x, a->pos, a->mask, 0, 0, a->rng);
    x = pg_dropout(g, x, c->dropout, lm->base.training, a->rng);
    for (int64_t i = 0; i < c->layers; i++)
        x = pg_block_forward(g, lm->blocks[i], x, a);
    x = norm_forward(g, c->norm, lm->norm, x);
    return pg_linear_forward(g, lm->head, x); /* (B, L, vocab) */
}

pg_tensor *pg_lm_loss(pg_graph *g, pg_lm *lm, pg_tensor *ids, pg_tensor *targets, const pg_attn_args *a)
{
    PG_NN_SCRATCH(g, "pg_lm_loss", pg_lm_loss(g, lm, ids, targets, a));
    if (!lm || !ids || !targets) {
        pg_graph_fail(g, "pg_lm_loss: %s is NULL", !lm ? "module" : !ids ? "ids" : "targets");
        return NULL;
    }
    pg_tensor *logits = pg_lm_forward(g, lm, ids, a);
    if (!logits)
        return NULL;
    const pg_lm_config *c = &lm->cfg;
    return pg_cross_entropy(g, logits, targets, c->has_ignore_index ? c->ignore_index : PG_LM_IGNORE, 0.0);
}
