/* The forgetting gate, FoX and data-dependent ALiBi (nn/pos_fox.h; docs/pos/fox.md). */
#include "pos_fox.h"

#include <math.h>
#include <stdio.h>

#include "../tensor/shape_util.h"
#include "init.h"

static const pg_posmod_ops FOX_OPS, FOX_BI_OPS;

pg_tensor *pg_fox_cumulative(pg_graph *g, pg_posmod *pm, pg_tensor *x, int64_t pad_front)
{
    if (!pm || (pm->ops != &FOX_OPS && pm->ops != &FOX_BI_OPS)) {
        pg_graph_fail(g, "pg_fox_cumulative: not a FoX module (%s)", pm ? pm->base.type : "NULL");
        return NULL;
    }
    pg_fox *m = (pg_fox *)pm;
    if (!x || x->ndim != 3 || x->shape[2] != m->dim || x->dtype != m->fgate_proj->weight->dtype || pad_front < 0 ||
        pad_front > x->shape[1]) {
        pg_graph_fail(g, "fox: x is %s, expected (B, L, %lld) of %s (pad_front %lld in 0..L)", x ? SHAPE(x) : "NULL",
                      (long long)m->dim, pg_dtype_name(m->fgate_proj->weight->dtype), (long long)pad_front);
        return NULL;
    }
    int64_t L = x->shape[1];
    /* (1), (2): log f = log sigmoid(z) = -softplus(-z), (B, L, G), times s */
    pg_tensor *z = pg_linear_forward(g, m->fgate_proj, x);
    pg_tensor *logf = pg_neg(g, pg_softplus(g, pg_neg(g, z)));
    if (m->post_log_scale != 1.0)
        logf = pg_mul_scalar(g, logf, m->post_log_scale);
    if (pad_front > 0) /* left padding: no gate for the un-positioned tokens */
        logf = pg_pad(g, pg_narrow(g, logf, 1, pad_front, L - pad_front), 1, pad_front, 0, 0.0);
    pg_tensor *t = pg_permute(g, logf, (const int[]){0, 2, 1}); /* (B, G, L) */
    return pg_cumsum(g, t, 2);
}

/* c (B, H, L) -> d[b, h, i, j] = c_i - c_j (sign 1) or c_j - c_i (sign -1): (B, H, L, L) */
static pg_tensor *pair_diff(pg_graph *g, pg_tensor *c, int sign)
{
    int64_t B = c->shape[0], H = c->shape[1], L = c->shape[2];
    pg_tensor *ci = pg_reshape(g, c, PG_SHAPE(B, H, L, 1)), *cj = pg_reshape(g, c, PG_SHAPE(B, H, 1, L));
    return sign > 0 ? pg_sub(g, ci, cj) : pg_sub(g, cj, ci);
}

/* the context as FoX needs it; 0, or -1 after pg_graph_fail */
static int fox_ctx_ok(pg_graph *g, const pg_fox *m, const pg_pos_ctx *c)
{
    const char *fn = "fox";
    if (pg_pos_table_check(g, fn, c, m->heads) != 0) /* the context, the head count, a float dtype */
        return -1;
    if (!c->x) {
        pg_graph_fail(g, "%s: the forgetting gate reads the attention's input, and this call gives none "
                         "(pg_pos_ctx.x is NULL; MultiheadAttention fills it)", fn);
        return -1;
    }
    if (!c->self_attn || c->Lq != c->Lk) {
        pg_graph_fail(g, "%s: the forgetting gate is for self-attention (got %s, Lq %lld, Lk %lld)", fn,
                      c->self_attn ? "self-attention" : "cross-attention", (long long)c->Lq, (long long)c->Lk);
        return -1;
    }
    const pg_tensor *x = c->x;
    if (x->ndim != 3 || x->shape[0] != c->B || x->shape[1] != c->Lq || x->shape[2] != m->dim || x->dtype != c->dtype) {
        pg_graph_fail(g, "%s: x is %s, expected (B, Lq, dim) = (%lld, %lld, %lld) of %s", fn, SHAPE(x),
                      (long long)c->B, (long long)c->Lq, (long long)m->dim, pg_dtype_name(c->dtype));
        return -1;
    }
    if (x->dtype != m->fgate_proj->weight->dtype) {
        pg_graph_fail(g, "%s: x is %s, the gate's parameters %s", fn, pg_dtype_name(x->dtype),
                      pg_dtype_name(m->fgate_proj->weight->dtype));
        return -1;
    }
    if (!c->causal && !m->bidirectional) {
        pg_graph_fail(g, "%s: a one-directional forgetting gate in attention that is not causal (its bias above the "
                         "diagonal is positive); use a causal attention or opts.bidirectional", fn);
        return -1;
    }
    return 0;
}

/* mod_bias: (3) or (4) as (B, H, L, L) */
static pg_tensor *fox_bias(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v; /* the gate reads x, not q or k */
    pg_fox *m = (pg_fox *)pm;
    if (fox_ctx_ok(g, m, c) != 0)
        return NULL;
    int64_t H = m->heads, L = c->Lq;
    int64_t pad = c->pos_q ? L - c->pos_q->shape[1] : 0;
    pg_tensor *cum = pg_fox_cumulative(g, pm, c->x, pad); /* (B, G, L) */
    if (!cum)
        return NULL;
    pg_tensor *bias = pair_diff(g, m->bidirectional ? pg_narrow(g, cum, 1, 0, H) : cum, 1);
    if (m->bidirectional) /* (4): lower triangle from c, strict upper triangle from c' */
        bias = pg_add(g, pg_tril(g, bias, 0), pg_triu(g, pair_diff(g, pg_narrow(g, cum, 1, H, H), -1), 1));
    if (!bias && !pg_graph_error(g))
        pg_graph_fail(g, "fox: failed for x %s", SHAPE(c->x));
    return bias;
}

/* sep_bias: (3) as c_i - c_j with a = e = c (B, H, L), for the fused kernel (one-directional only) */
static int fox_sep(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c, pg_tensor **a, pg_tensor **e)
{
    if (fox_ctx_ok(g, (pg_fox *)pm, c) != 0)
        return -1;
    pg_tensor *cum = pg_fox_cumulative(g, pm, c->x, c->pos_q ? c->Lq - c->pos_q->shape[1] : 0);
    *a = *e = cum;
    return cum ? 0 : -1;
}

/* one-directional: the fused kernel takes (3) through sep_bias; bidirectional (4) is not separable */
static const pg_posmod_ops FOX_OPS = {.mod_bias = fox_bias, .sep_bias = fox_sep};
static const pg_posmod_ops FOX_BI_OPS = {.mod_bias = fox_bias};

static int check_opts(const char *fn, int64_t heads, int64_t dim, const pg_fox_opts *o, pg_dtype dtype, double s)
{
    if ((o->heads != 0 && o->heads != heads) || (o->dim != 0 && o->dim != dim)) {
        pg_set_error("%s: opts.heads %lld / opts.dim %lld differ from heads %lld / dim %lld", fn, (long long)o->heads,
                     (long long)o->dim, (long long)heads, (long long)dim);
        return -1;
    }
    int64_t big = (int64_t)(PG_MAX_TENSOR_BYTES / sizeof(double)) / 2;
    if (heads < 1 || dim < 1 || heads > big || dim > big || 2 * heads > big / dim) {
        pg_set_error("%s: need heads >= 1 and dim >= 1 (and 2 heads dim within the tensor limit), got %lld, %lld",
                     fn, (long long)heads, (long long)dim);
        return -1;
    }
    if (!pg_module_dtype_ok(fn, dtype))
        return -1;
    if (o->init != PG_FOX_INIT_FOX && o->init != PG_FOX_INIT_DD_ALIBI) {
        pg_set_error("%s: init must be PG_FOX_INIT_FOX or PG_FOX_INIT_DD_ALIBI, got %d", fn, (int)o->init);
        return -1;
    }
    if (!(s > 0) || !isfinite(s)) {
        pg_set_error("%s: post_log_scale must be finite and > 0, got %g", fn, s);
        return -1;
    }
    return 0;
}

pg_posmod *pg_fox_new(int64_t heads, int64_t dim, const pg_fox_opts *o, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_fox_new";
    static const pg_fox_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
    double s = o->post_log_scale == 0 ? 1.0 : o->post_log_scale;
    if (check_opts(fn, heads, dim, o, dtype, s) != 0)
        return NULL;
    if (!r) {
        pg_set_error("%s: the initial weights need a generator (r is NULL)", fn);
        return NULL;
    }
    pg_fox *m = pg_posmod_alloc(sizeof *m, "FoX", o->bidirectional ? &FOX_BI_OPS : &FOX_OPS, NULL, fn);
    if (!m)
        return NULL;
    m->heads = heads;
    m->dim = dim;
    m->post_log_scale = s;
    m->bidirectional = o->bidirectional;
    int64_t G = o->bidirectional ? 2 * heads : heads;
    /* fgate_proj: weight ~ N(0, 0.02), bias 0 (FoX) or 5 (DataDependentAlibi) */
    pg_linear *l = pg_linear_new(dim, G, true, dtype, r);
    if (!l || pg_module_add_child(&m->pm.base, "fgate_proj", &l->base) != 0 ||
        pg_init_normal(l->weight, r, 0.0, 0.02) != 0) {
        return pg_module_fail(&m->pm.base, fn);
    }
    for (int64_t i = 0; i < G; i++)
        pg_set(l->bias, i, o->init == PG_FOX_INIT_DD_ALIBI ? 5.0 : 0.0);
    m->fgate_proj = l;
    return &m->pm;
}

pg_posmod *pg_posmod_make_fox(const pg_posmod_args *a)
{
    int64_t heads = PG_POSMOD_HEADS("pg_posmod_make_fox", "the forgetting gate", pg_fox_opts, a);
    const pg_fox_opts *o = heads ? a->opts : NULL;
    return heads ? pg_fox_new(heads, o && o->dim ? o->dim : a->dim, o, a->dtype, a->rng) : NULL;
}
