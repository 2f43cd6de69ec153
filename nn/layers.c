/* The basic layers: Linear, Embedding, LayerNorm. */
#include "layers.h"

#include <math.h>
#include <stdlib.h>

static bool check_ctor(const char *fn, pg_dtype dtype, bool need_rng, const pg_rng *r)
{
    if (!pg_module_dtype_ok(fn, dtype))
        return false;
    if (need_rng && !r) {
        pg_set_error("%s: generator is NULL", fn);
        return false;
    }
    return true;
}

/* x's last dim must be `features` and its dtype the module's */
static bool check_input(pg_graph *g, const char *fn, const pg_tensor *x, int64_t features, const pg_tensor *w)
{
    char a[128], b[128];
    if (!x) {
        pg_graph_fail(g, "%s: x is NULL", fn);
        return false;
    }
    if (x->ndim < 1 || x->shape[x->ndim - 1] != features || x->dtype != w->dtype) {
        pg_graph_fail(g, "%s: x is %s, expected (..., %lld) of the weight's dtype (weight %s)", fn,
                      pg_shape_str(a, sizeof a, x), (long long)features, pg_shape_str(b, sizeof b, w));
        return false;
    }
    return true;
}

/* ---- Linear ------------------------------------------------------------------------- */

pg_linear *pg_linear_new(int64_t in_features, int64_t out_features, bool bias, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_linear_new";
    if (!check_ctor(fn, dtype, true, r))
        return NULL;
    if (in_features < 1 || out_features < 1) {
        pg_set_error("%s: features must be >= 1, got in %lld, out %lld", fn, (long long)in_features,
                     (long long)out_features);
        return NULL;
    }
    pg_linear *l = pg_module_alloc(sizeof *l, "Linear", NULL, fn);
    if (!l)
        return NULL;
    l->in_features = in_features;
    l->out_features = out_features;
    l->weight = pg_module_new_param(&l->base, "weight", dtype, PG_SHAPE(out_features, in_features));
    if (bias && l->weight)
        l->bias = pg_module_new_param(&l->base, "bias", dtype, PG_SHAPE(out_features));
    if (!l->weight || (bias && !l->bias))
        return pg_module_fail(&l->base, NULL);
    /* torch: kaiming_uniform(a = sqrt(5)) on W, i.e. U(-1/sqrt(in), 1/sqrt(in)); same for b */
    double bound = 1.0 / sqrt((double)in_features);
    pg_fill_uniform(l->weight, r, -bound, bound);
    if (l->bias)
        pg_fill_uniform(l->bias, r, -bound, bound);
    return l;
}

pg_tensor *pg_linear_forward(pg_graph *g, pg_linear *l, pg_tensor *x)
{
    const char *fn = "pg_linear_forward";
    PG_NN_SCRATCH(g, fn, pg_linear_forward(g, l, x));
    if (!l) {
        pg_graph_fail(g, "%s: module is NULL", fn);
        return NULL;
    }
    if (!check_input(g, fn, x, l->in_features, l->weight))
        return NULL;
    return pg_affine(g, x, l->weight, l->bias); /* one GEMM over x viewed as (rows, in) */
}

/* ---- Embedding ---------------------------------------------------------------------- */

pg_embed *pg_embed_new(int64_t num, int64_t dim, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_embed_new";
    if (!check_ctor(fn, dtype, true, r))
        return NULL;
    if (num < 1 || dim < 1) {
        pg_set_error("%s: num and dim must be >= 1, got %lld, %lld", fn, (long long)num, (long long)dim);
        return NULL;
    }
    pg_embed *e = pg_module_alloc(sizeof *e, "Embedding", NULL, fn);
    if (!e)
        return NULL;
    e->num = num;
    e->dim = dim;
    e->weight = pg_module_new_param(&e->base, "weight", dtype, PG_SHAPE(num, dim));
    if (!e->weight)
        return pg_module_fail(&e->base, NULL);
    pg_fill_normal(e->weight, r, 0.0, 1.0); /* torch: N(0, 1) */
    return e;
}

pg_tensor *pg_embed_forward(pg_graph *g, pg_embed *e, pg_tensor *ids)
{
    PG_NN_SCRATCH(g, "pg_embed_forward", pg_embed_forward(g, e, ids)); /* l2norm: several ops */
    if (!e || !ids) {
        pg_graph_fail(g, "pg_embed_forward: %s is NULL", e ? "ids" : "module");
        return NULL;
    }
    pg_tensor *y = pg_embedding(g, e->weight, ids);
    return e->l2norm ? pg_l2_normalize(g, y, 1e-12) : y; /* x-transformers' l2norm_embed */
}

/* ---- norm options ----------------------------------------------------------------- */

pg_norm_opts pg_norm_defaults(void)
{
    return (pg_norm_opts){.eps = 1e-5, .affine = true, .bias = true, .unit_offset = false, .form = PG_RMS_MEAN};
}

/* Shared checks of a norm's options: dim, eps (> 0 for the L2 form, whose max needs it), the
 * form, a bias only on an affine LayerNorm, a unit offset only on a gain. */
bool pg_norm_opts_ok(const char *fn, int64_t dim, const pg_norm_opts *o, bool layernorm)
{
    fn = fn ? fn : "pg_norm_opts_ok";
    if (!o) {
        pg_set_error("%s: options are NULL", fn);
        return false;
    }
    if (dim < 1 || !(o->eps >= 0) || !isfinite(o->eps)) {
        pg_set_error("%s: need dim >= 1 and finite eps >= 0, got %lld, %g", fn, (long long)dim, o->eps);
        return false;
    }
    bool l2 = o->form == PG_RMS_L2;
    const char *why = o->form != PG_RMS_MEAN && !l2 ? "unknown RMSNorm form"
                      : layernorm && l2 ? "the L2 form is an RMSNorm form, not a LayerNorm one"
                      : l2 && !(o->eps > 0) ? "the L2 form (PG_RMS_L2) needs eps > 0 (it divides by max(||x||, eps))"
                      : !layernorm && o->bias ? "RMSNorm has no bias"
                      : o->bias && !o->affine ? "a bias needs affine"
                      : o->unit_offset && !o->affine ? "unit_offset needs affine (a gain to offset)"
                                                     : NULL;
    if (why)
        pg_set_error("%s: %s (dim %lld, eps %g, affine %d, bias %d, unit_offset %d, form %d)", fn, why,
                     (long long)dim, o->eps, (int)o->affine, (int)o->bias, (int)o->unit_offset, (int)o->form);
    return !why;
}

/* The gain: weight, or weight + 1 with a unit offset (x-transformers' gamma + 1); NULL without weight */
pg_tensor *pg_norm_gain(pg_graph *g, pg_tensor *weight, bool unit_offset)
{
    return weight && unit_offset ? pg_add_scalar(g, weight, 1.0) : weight;
}

/* ---- LayerNorm ---------------------------------------------------------------------- */

static pg_layernorm *layernorm_make(const char *fn, int64_t dim, const pg_norm_opts *op, pg_dtype dtype)
{
    if (!check_ctor(fn, dtype, false, NULL) || !pg_norm_opts_ok(fn, dim, op, true))
        return NULL;
    pg_layernorm *n = pg_module_alloc(sizeof *n, "LayerNorm", NULL, fn);
    if (!n)
        return NULL;
    n->dim = dim;
    n->eps = op->eps;
    n->unit_offset = op->unit_offset;
    if (op->affine) {
        n->weight = pg_module_new_param(&n->base, "weight", dtype, PG_SHAPE(dim));
        if (n->weight)
            pg_fill(n->weight, op->unit_offset ? 0.0 : 1.0); /* the gain starts at 1 either way */
        if (op->bias)
            n->bias = pg_module_new_param(&n->base, "bias", dtype, PG_SHAPE(dim));
        if (!n->weight || (op->bias && !n->bias))
            return pg_module_fail(&n->base, NULL);
    }
    return n;
}

pg_layernorm *pg_layernorm_new(int64_t dim, double eps, bool affine, bool bias, pg_dtype dtype)
{
    pg_norm_opts o = pg_norm_defaults();
    o.eps = eps;
    o.affine = affine;
    o.bias = affine && bias; /* as before: a bias without affine is no bias */
    return layernorm_make("pg_layernorm_new", dim, &o, dtype);
}

pg_layernorm *pg_layernorm_new_opts(int64_t dim, const pg_norm_opts *o, pg_dtype dtype)
{
    pg_norm_opts op = o ? *o : pg_norm_defaults();
    return layernorm_make("pg_layernorm_new_opts", dim, &op, dtype);
}

pg_tensor *pg_layernorm_forward(pg_graph *g, pg_layernorm *n, pg_tensor *x)
{
    PG_NN_SCRATCH(g, "pg_layernorm_forward", pg_layernorm_forward(g, n, x)); /* unit offset: two ops */
    if (!n || !x) {
        pg_graph_fail(g, "pg_layernorm_forward: %s is NULL", n ? "x" : "module");
        return NULL;
    }
    /* the last dim must be the module's, also without weight (torch checks normalized_shape) */
    if ((x->ndim < 1 || x->shape[x->ndim - 1] != n->dim)) {
        char s[128];
        pg_graph_fail(g, "pg_layernorm_forward: x is %s, expected (..., %lld)", pg_shape_str(s, sizeof s, x),
                      (long long)n->dim);
        return NULL;
    }
    /* y = (x - mean) / sqrt(var + eps) * gain + bias, gain = weight (+ 1 with unit_offset) */
    return pg_layer_norm(g, x, 1, pg_norm_gain(g, n->weight, n->unit_offset), n->bias, n->eps);
}
