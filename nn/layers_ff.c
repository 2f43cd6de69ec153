/* RMSNorm, Dropout, FeedForward and the activation switch.
 *
 * FeedForward's PyTorch counterpart (the state-dict names are these):
 *
 *   class FeedForward(nn.Module):
 *       def __init__(self, dim, hidden, glu, act, p, bias):
 *           self.proj_in = nn.Linear(dim, 2 * hidden if glu else hidden, bias)
 *           self.dropout = nn.Dropout(p)
 *           self.proj_out = nn.Linear(hidden, dim, bias)
 *       def forward(self, x):
 *           h = self.proj_in(x)
 *           if glu:
 *               a, gate = h.chunk(2, dim=-1)   # a: first half, gate: second half
 *               h = a * act(gate)
 *           else:
 *               h = act(h)
 *           return self.proj_out(self.dropout(h))
 *
 * giving "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias". */
#include "layers.h"

#include <math.h>
#include <stdlib.h>

/* x is a float tensor whose last dim is `dim` (and whose dtype is w's when w is given) */
static bool check_x(pg_graph *g, const char *fn, const pg_tensor *x, int64_t dim, const pg_tensor *w)
{
    char a[128], b[128];
    if (!x) {
        pg_graph_fail(g, "%s: x is NULL", fn);
        return false;
    }
    if (!pg_dtype_is_float(x->dtype) || x->ndim < 1 || x->shape[x->ndim - 1] != dim) {
        pg_graph_fail(g, "%s: x is %s, expected a float tensor (..., %lld)", fn, pg_shape_str(a, sizeof a, x),
                      (long long)dim);
        return false;
    }
    if (w && x->dtype != w->dtype) {
        pg_graph_fail(g, "%s: x is %s, the weight is %s: dtypes differ", fn, pg_shape_str(a, sizeof a, x),
                      pg_shape_str(b, sizeof b, w));
        return false;
    }
    return true;
}

/* ---- RMSNorm -------------------------------------------------------------------------
 * PG_RMS_MEAN: y = x / sqrt(mean(x^2) + eps) * gain (torch.nn.RMSNorm; pass eps explicitly:
 *   torch's eps=None means the dtype's machine epsilon).
 * PG_RMS_L2:   y = x / max(||x||_2, eps) * sqrt(dim) * gain (x-transformers' RMSNorm).
 * gain = weight (+ 1 with unit_offset). */

pg_tensor *pg_l2_normalize(pg_graph *g, pg_tensor *x, double eps)
{
    const char *fn = "pg_l2_normalize";
    PG_NN_SCRATCH(g, fn, pg_l2_normalize(g, x, eps));
    if (!x || !pg_dtype_is_float(x->dtype) || x->ndim < 1) {
        char a[128];
        pg_graph_fail(g, "%s: x is %s, expected a float tensor (..., dim)", fn, x ? pg_shape_str(a, sizeof a, x)
                                                                                   : "NULL");
        return NULL;
    }
    if (!(eps > 0) || !isfinite(eps)) {
        pg_graph_fail(g, "%s: need a finite eps > 0, got %g", fn, eps);
        return NULL;
    }
    int last = x->ndim - 1;
    /* max(||x||, eps) = sqrt(max(sum x^2, eps^2)): the clamp keeps sqrt's gradient finite at a zero row */
    pg_tensor *ss = pg_clamp(g, pg_sum(g, pg_square(g, x), 1, &last, true), eps * eps, INFINITY); /* (..., 1) */
    return pg_div(g, x, pg_sqrt(g, ss));
}

static pg_rmsnorm *rmsnorm_make(const char *fn, int64_t dim, const pg_norm_opts *o, pg_dtype dtype)
{
    if (!pg_module_dtype_ok(fn, dtype) || !pg_norm_opts_ok(fn, dim, o, false))
        return NULL;
    pg_rmsnorm *n = pg_module_alloc(sizeof *n, "RMSNorm", NULL, fn);
    if (!n)
        return NULL;
    n->dim = dim;
    n->eps = o->eps;
    n->unit_offset = o->unit_offset;
    n->form = o->form;
    if (o->affine) {
        n->weight = pg_module_new_param(&n->base, "weight", dtype, PG_SHAPE(dim));
        if (!n->weight)
            return pg_module_fail(&n->base, NULL);
        pg_fill(n->weight, o->unit_offset ? 0.0 : 1.0); /* the gain starts at 1 either way */
    }
    return n;
}

pg_rmsnorm *pg_rmsnorm_new(int64_t dim, double eps, bool affine, pg_dtype dtype)
{
    pg_norm_opts o = pg_norm_defaults();
    o.eps = eps;
    o.affine = affine;
    o.bias = false;
    return rmsnorm_make("pg_rmsnorm_new", dim, &o, dtype);
}

pg_rmsnorm *pg_rmsnorm_new_opts(int64_t dim, const pg_norm_opts *o, pg_dtype dtype)
{
    pg_norm_opts op = o ? *o : pg_norm_defaults();
    if (!o)
        op.bias = false;
    return rmsnorm_make("pg_rmsnorm_new_opts", dim, &op, dtype);
}

pg_tensor *pg_rmsnorm_forward(pg_graph *g, pg_rmsnorm *n, pg_tensor *x)
{
    const char *fn = "pg_rmsnorm_forward";
    PG_NN_SCRATCH(g, fn, pg_rmsnorm_forward(g, n, x));
    if (!n) {
        pg_graph_fail(g, "%s: module is NULL", fn);
        return NULL;
    }
    if (!check_x(g, fn, x, n->dim, n->weight))
        return NULL;
    pg_tensor *gain = pg_norm_gain(g, n->weight, n->unit_offset);
    if (n->form == PG_RMS_MEAN)
        return pg_rms_norm(g, x, 1, gain, n->eps);
    pg_tensor *y = pg_mul_scalar(g, pg_l2_normalize(g, x, n->eps), sqrt((double)n->dim));
    return gain ? pg_mul(g, y, gain) : y;
}

/* ---- Dropout (torch.nn.Dropout) --------------------------------------------------------
 * train mode: y = x * m / (1 - p), m ~ Bernoulli(1 - p) drawn from r; eval mode: y = x. */

pg_dropout_mod *pg_dropout_new(double p)
{
    if (!(p >= 0 && p < 1)) {
        pg_set_error("pg_dropout_new: p must be in [0, 1), got %g", p);
        return NULL;
    }
    pg_dropout_mod *d = pg_module_alloc(sizeof *d, "Dropout", NULL, "pg_dropout_new");
    if (d)
        d->p = p;
    return d;
}

pg_tensor *pg_dropout_forward(pg_graph *g, pg_dropout_mod *d, pg_tensor *x, pg_rng *r)
{
    const char *fn = "pg_dropout_forward";
    char s[128];
    if (!d || !x) {
        pg_graph_fail(g, "%s: %s is NULL", fn, d ? "x" : "module");
        return NULL;
    }
    if (!pg_dtype_is_float(x->dtype)) {
        pg_graph_fail(g, "%s: x must be f32 or f64, got %s", fn, pg_shape_str(s, sizeof s, x));
        return NULL;
    }
    bool active = d->base.training && d->p > 0;
    if (active && !r) {
        pg_graph_fail(g, "%s: generator is NULL in train mode (p = %g)", fn, d->p);
        return NULL;
    }
    return pg_dropout(g, x, d->p, active, r);
}

/* ---- activations ------------------------------------------------------------------------ */

pg_tensor *pg_activation_apply(pg_graph *g, pg_activation act, pg_tensor *x)
{
    if (!x) {
        pg_graph_fail(g, "pg_activation_apply: x is NULL");
        return NULL;
    }
    switch (act) {
    case PG_ACT_GELU:
        return pg_gelu(g, x);
    case PG_ACT_GELU_TANH:
        return pg_gelu_tanh(g, x);
    case PG_ACT_RELU:
        return pg_relu(g, x);
    case PG_ACT_SILU:
        return pg_silu(g, x);
    }
    pg_graph_fail(g, "pg_activation_apply: unknown activation %d", (int)act);
    return NULL;
}

static bool valid_activation(pg_activation act)
{
    return act == PG_ACT_GELU || act == PG_ACT_GELU_TANH || act == PG_ACT_RELU || act == PG_ACT_SILU;
}

/* ---- FeedForward ----------------------------------------------------------------------- */

pg_feedforward *pg_feedforward_new(int64_t dim, int64_t hidden, pg_ff_kind kind, pg_activation act, double dropout,
                                   bool bias, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_feedforward_new";
    if (dim < 1 || hidden < 1 || (kind != PG_FF_MLP && kind != PG_FF_GLU) || !valid_activation(act)) {
        pg_set_error("%s: need dim, hidden >= 1 and a known kind and activation, got dim %lld, hidden %lld, "
                     "kind %d, act %d",
                     fn, (long long)dim, (long long)hidden, (int)kind, (int)act);
        return NULL;
    }
    if (!(dropout >= 0 && dropout < 1)) {
        pg_set_error("%s: dropout must be in [0, 1), got %g", fn, dropout);
        return NULL;
    }
    if (!pg_dtype_is_float(dtype) || !r) {
        pg_set_error("%s: need a float dtype and a generator, got %s and %s", fn, pg_dtype_name(dtype),
                     r ? "a generator" : "NULL");
        return NULL;
    }
    pg_feedforward *f = pg_module_alloc(sizeof *f, "FeedForward", NULL, fn);
    if (!f)
        return NULL;
    f->kind = kind;
    f->act = act;
    f->dim = dim;
    f->hidden = hidden;
    /* children in data-flow order, as the PyTorch module above registers them;
     * add_child frees a NULL-checked child on failure, so only f is left to free */
    int64_t in_out = kind == PG_FF_GLU ? 2 * hidden : hidden;
    f->proj_in = pg_linear_new(dim, in_out, bias, dtype, r);
    if (!f->proj_in || pg_module_add_child(&f->base, "proj_in", &f->proj_in->base) != 0)
        goto fail;
    f->dropout = pg_dropout_new(dropout);
    if (!f->dropout || pg_module_add_child(&f->base, "dropout", &f->dropout->base) != 0)
        goto fail;
    f->proj_out = pg_linear_new(hidden, dim, bias, dtype, r);
    if (!f->proj_out || pg_module_add_child(&f->base, "proj_out", &f->proj_out->base) != 0)
        goto fail;
    return f;
fail:
    pg_module_free(&f->base);
    return NULL;
}

pg_tensor *pg_feedforward_forward(pg_graph *g, pg_feedforward *f, pg_tensor *x, pg_rng *r)
{
    const char *fn = "pg_feedforward_forward";
    PG_NN_SCRATCH(g, fn, pg_feedforward_forward(g, f, x, r));
    if (!f) {
        pg_graph_fail(g, "%s: module is NULL", fn);
        return NULL;
    }
    if (!check_x(g, fn, x, f->dim, f->proj_in->weight))
        return NULL;
    pg_tensor *h = pg_linear_forward(g, f->proj_in, x); /* (..., hidden) or (..., 2 hidden) */
    if (f->kind == PG_FF_GLU) {
        /* a = h[..., :hidden], gate = h[..., hidden:]; h = a * act(gate) */
        pg_tensor *a = pg_narrow(g, h, -1, 0, f->hidden);
        pg_tensor *gate = pg_narrow(g, h, -1, f->hidden, f->hidden);
        h = pg_mul(g, a, pg_activation_apply(g, f->act, gate));
    } else {
        h = pg_activation_apply(g, f->act, h);
    }
    h = pg_dropout_forward(g, f->dropout, h, r); /* (..., hidden) */
    return pg_linear_forward(g, f->proj_out, h);
}
