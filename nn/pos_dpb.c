/* Dynamic position bias (nn/pos_dpb.h; docs/pos/dpb.md). */
#include "pos_dpb.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../tensor/shape_util.h"

pg_dpb_opts pg_dpb_bio(void) { return (pg_dpb_opts){0}; }

pg_dpb_opts pg_dpb_xtransformers(int depth, bool log_distance, bool norm)
{
    pg_dpb_opts o = {0};
    o.depth = depth;
    o.norm = norm;
    o.layout = PG_DPB_LAYOUT_XT;
    o.distance = log_distance ? PG_DPB_SIGNED_LOG : PG_DPB_SIGNED;
    o.sign = PG_DPB_ADD;
    o.end_aligned = true;
    return o;
}

pg_dpb_opts pg_dpb_zeta(void)
{
    pg_dpb_opts o = {0};
    o.depth = 2;
    o.layout = PG_DPB_LAYOUT_ZETA;
    o.distance = PG_DPB_ABS;
    o.sign = PG_DPB_ADD;
    o.end_aligned = true;
    return o;
}

/* ---- construction ------------------------------------------------------------------------ */

/* adds child (NULL: fails) under the decimal name idx */
static bool add_child(pg_module *parent, int idx, pg_module *child)
{
    char name[16];
    snprintf(name, sizeof name, "%d", idx);
    return child && pg_module_add_child(parent, name, child) == 0;
}

static const pg_posmod_ops DPB_OPS;

pg_dpb *pg_dpb_new(int64_t dim, int64_t heads, const pg_dpb_opts *opts, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_dpb_new";
    pg_dpb_opts o = opts ? *opts : pg_dpb_bio();
    if (!pg_dtype_is_float(dtype) || !r) {
        pg_set_error("%s: need a float dtype and a generator (dtype %s, generator %s)", fn, pg_dtype_name(dtype),
                     r ? "set" : "NULL");
        return NULL;
    }
    if ((unsigned)o.layout > PG_DPB_LAYOUT_ZETA || (unsigned)o.distance > PG_DPB_SIGNED_LOG ||
        (unsigned)o.sign > PG_DPB_ADD) {
        pg_set_error("%s: bad option: layout %d, distance %d, sign %d", fn, (int)o.layout, (int)o.distance,
                     (int)o.sign);
        return NULL;
    }
    if (o.depth == 0)
        o.depth = o.layout == PG_DPB_LAYOUT_BIO ? 1 : 2;
    if (o.hidden == 0)
        o.hidden = o.layout == PG_DPB_LAYOUT_XT ? (dim / 4 > 0 ? dim / 4 : 1) : dim;
    if (o.divide == 0)
        o.divide = 1.0;
    if (heads < 1 || o.hidden < 1 || o.depth < 1 || o.depth > PG_DPB_MAX_DEPTH) {
        pg_set_error("%s: need heads >= 1, hidden >= 1 and depth in [1, %d], got heads %lld, hidden %lld (dim "
                     "%lld), depth %d",
                     fn, PG_DPB_MAX_DEPTH, (long long)heads, (long long)o.hidden, (long long)dim, o.depth);
        return NULL;
    }
    if (o.norm && o.layout == PG_DPB_LAYOUT_ZETA) {
        pg_set_error("%s: the zeta layout has no norm (use the x-transformers layout)", fn);
        return NULL;
    }
    pg_dpb *m = pg_posmod_alloc(sizeof *m, "DynamicPositionBias", &DPB_OPS, NULL, fn);
    if (!m)
        return NULL;
    m->o = o;
    m->heads = heads;
    m->hidden = o.hidden;
    m->dtype = dtype;
    bool ok = true;
    pg_pos_divide d = {o.divide, o.learned_div};
    m->div = pg_pos_div_param(&m->pm, d, dtype, &ok);
    pg_module *mlp = ok ? pg_module_new_container("Sequential", fn) : NULL;
    ok = ok && mlp && pg_module_add_child(&m->pm.base, "mlp", mlp) == 0;
    int64_t H = o.hidden;
    for (int l = 0; ok && l < o.depth; l++) {
        pg_linear *lin = pg_linear_new(l == 0 ? 1 : H, H, true, dtype, r);
        m->lin[l] = lin;
        if (o.layout == PG_DPB_LAYOUT_ZETA) {
            ok = add_child(mlp, 2 * l, lin ? &lin->base : NULL);
            continue;
        }
        pg_module *blk = pg_module_new_container("Sequential", fn);
        ok = add_child(mlp, l, blk);
        if (!ok) {
            if (lin)
                pg_module_free(&lin->base);
            break;
        }
        int lin_idx = o.layout == PG_DPB_LAYOUT_BIO && l > 0 ? 1 : 0;
        ok = add_child(blk, lin_idx, lin ? &lin->base : NULL);
        if (!ok || !o.norm)
            continue;
        if (o.layout == PG_DPB_LAYOUT_XT && l == 0) { /* x-transformers' LayerNorm: gamma, no bias */
            pg_module *ln = pg_module_new_container("Sequential", fn);
            ok = add_child(blk, 1, ln);
            m->ln_w[l] = ok ? pg_module_new_param(ln, "gamma", dtype, PG_SHAPE(H)) : NULL;
            ok = ok && m->ln_w[l];
        } else {
            pg_layernorm *ln = pg_layernorm_new(H, 1e-5, true, true, dtype);
            ok = add_child(blk, lin_idx + 1, ln ? &ln->base : NULL);
            if (ok) {
                m->ln_w[l] = ln->weight;
                m->ln_b[l] = ln->bias;
            }
        }
        if (ok)
            pg_fill(m->ln_w[l], 1.0);
    }
    if (ok) {
        pg_linear *out = pg_linear_new(H, heads, true, dtype, r);
        m->lin[o.depth] = out;
        ok = add_child(mlp, o.layout == PG_DPB_LAYOUT_ZETA ? 2 * o.depth : o.depth, out ? &out->base : NULL);
    }
    if (!ok)
        return pg_module_fail(&m->pm.base, NULL);
    return m;
}

pg_posmod *pg_posmod_make_dpb(const pg_posmod_args *a)
{
    int64_t heads = pg_posmod_heads("pg_posmod_make_dpb", "DPB", 0, a);
    pg_dpb *m = heads ? pg_dpb_new(a->dim, heads, a->opts, a->dtype, a->rng) : NULL;
    return m ? &m->pm : NULL;
}

/* ---- forward ---------------------------------------------------------------------------- */

pg_tensor *pg_dpb_mlp(pg_graph *g, pg_posmod *pm, pg_tensor *r)
{
    const char *fn = "pg_dpb_mlp";
    PG_NN_SCRATCH(g, fn, pg_dpb_mlp(g, pm, r));
    if (!pm || pm->ops != &DPB_OPS) {
        pg_graph_fail(g, "%s: module is %s, expected a DynamicPositionBias", fn, pm ? pm->base.type : "NULL");
        return NULL;
    }
    pg_dpb *m = (pg_dpb *)pm;
    if (!r || r->dtype != m->dtype || r->ndim + 1 > PG_MAX_DIMS) {
        pg_graph_fail(g, "%s: distances are %s, expected a tensor of the module's dtype %s", fn,
                      r ? SHAPE(r) : "NULL", pg_dtype_name(m->dtype));
        return NULL;
    }
    pg_tensor *t = r;
    if (m->o.distance == PG_DPB_ABS)
        t = pg_abs(g, r);
    else if (m->o.distance == PG_DPB_SIGNED_LOG)
        t = pg_mul(g, pg_sign(g, r), pg_log1p(g, pg_abs(g, r)));
    t = pg_pos_divide_by(g, t, m->div, m->o.divide);
    if (!t)
        return NULL;
    int nd = r->ndim;
    int64_t shape[PG_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        shape[i] = r->shape[i];
    shape[nd] = 1;
    pg_tensor *h = pg_reshape(g, t, nd + 1, shape);
    for (int l = 0; l < m->o.depth; l++) {
        if (m->o.layout == PG_DPB_LAYOUT_BIO && l > 0)
            h = pg_silu(g, h);
        h = pg_linear_forward(g, m->lin[l], h);
        if (m->ln_w[l])
            h = pg_layer_norm(g, h, 1, m->ln_w[l], m->ln_b[l], 1e-5);
        if (m->o.layout != PG_DPB_LAYOUT_BIO)
            h = pg_silu(g, h);
    }
    return pg_linear_forward(g, m->lin[m->o.depth], h);
}

/* the module's bias from distance values: sign applied */
static pg_tensor *signed_out(pg_graph *g, pg_dpb *m, pg_tensor *b)
{
    return m->o.sign == PG_DPB_SUBTRACT ? pg_neg(g, b) : b;
}

/* Default positions: query a at off + a, key b at b. The MLP runs on the Lq + Lk - 1
 * distances off - (Lk - 1) .. off + Lq - 1 and out[h, a, b] is gathered at a - b + Lk - 1.
 * -> (heads, Lq, Lk), sign applied */
static pg_tensor *table_default(pg_graph *g, pg_dpb *m, int64_t Lq, int64_t Lk, int64_t off)
{
    int64_t N = Lq + Lk - 1;
    double dmin = (double)(off - (Lk - 1));
    pg_tensor *d = pg_arange(g, m->dtype, dmin, dmin + (double)N, 1.0); /* (N) */
    pg_tensor *T = pg_dpb_mlp(g, &m->pm, d);                          /* (N, heads) */
    T = pg_transpose(g, T, 0, 1);                                     /* (heads, N) */
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(Lq * Lk));
    if (!T || !idx)
        return NULL;
    int64_t *ix = pg_i64(idx);
    for (int64_t a = 0; a < Lq; a++)
        for (int64_t b = 0; b < Lk; b++)
            ix[a * Lk + b] = a - b + Lk - 1;
    pg_tensor *out = pg_index_select(g, T, 1, idx);
    out = pg_reshape(g, out, PG_SHAPE(m->heads, Lq, Lk));
    return signed_out(g, m, out);
}

/* one side's positions: (B, Lp) given (differentiable when float and requiring grad),
 * or the default start .. start + L - 1 as (1, L) */
static pg_tensor *side(pg_graph *g, pg_tensor *pos, int64_t L, double start, pg_dtype dt)
{
    if (!pos)
        return pg_reshape(g, pg_arange(g, dt, start, start + (double)L, 1.0), PG_SHAPE(1, L));
    if (pg_dtype_is_float(pos->dtype) && pos->requires_grad)
        return pg_cast(g, pos, dt);
    return pg_cast(g, pg_detach(g, pos), dt);
}

static bool ctx_ok(pg_graph *g, const char *fn, pg_dpb *m, const pg_pos_ctx *c)
{
    return pg_pos_module_check(g, fn, c, m->heads, m->dtype) == 0;
}

static pg_tensor *dpb_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    const char *fn = "DynamicPositionBias";
    pg_dpb *m = (pg_dpb *)pm;
    if (!ctx_ok(g, fn, m, c))
        return NULL;
    int64_t off = m->o.end_aligned ? c->Lk - c->Lq : 0;
    if (!c->pos_q && !c->pos_k)
        return table_default(g, m, c->Lq, c->Lk, off);
    pg_tensor *pq = side(g, c->pos_q, c->Lq, (double)off, m->dtype); /* (B or 1, Lpq) */
    pg_tensor *pk = side(g, c->pos_k, c->Lk, 0.0, m->dtype);
    if (!pq || !pk)
        return NULL;
    int64_t Lpq = pq->shape[1], Lpk = pk->shape[1];
    pg_tensor *d = pg_sub(g, pg_reshape(g, pq, PG_SHAPE(pq->shape[0], Lpq, 1)),
                          pg_reshape(g, pk, PG_SHAPE(pk->shape[0], 1, Lpk))); /* (B, Lpq, Lpk) */
    pg_tensor *b = pg_dpb_mlp(g, pm, d);                                      /* (B, Lpq, Lpk, heads) */
    b = pg_permute(g, b, (const int[]){0, 3, 1, 2});
    b = pg_pos_pad_bias(g, b, c->Lq, c->Lk);
    return signed_out(g, m, b);
}

static pg_tensor *dpb_bias(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v;
    return dpb_table(g, pm, c);
}

/* dist_bias: d (D) signed distances -> (heads, D) in d's dtype, sign applied */
static pg_tensor *dpb_dist(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c)
{
    (void)c;
    pg_dpb *m = (pg_dpb *)pm;
    if (!d || d->ndim != 1 || !pg_dtype_is_float(d->dtype)) {
        pg_graph_fail(g, "DynamicPositionBias: dist_bias needs distances (D) of f32/f64, got %s",
                      d ? SHAPE(d) : "NULL");
        return NULL;
    }
    pg_tensor *T = pg_dpb_mlp(g, pm, d->dtype == m->dtype ? d : pg_cast(g, d, m->dtype)); /* (D, heads) */
    T = signed_out(g, m, pg_transpose(g, T, 0, 1));                                        /* (heads, D) */
    return T && T->dtype != d->dtype ? pg_cast(g, T, d->dtype) : T;
}

static const pg_posmod_ops DPB_OPS = {.mod_bias = dpb_bias, .bias_table = dpb_table, .dist_bias = dpb_dist};

pg_tensor *pg_dpb_bias_ij(pg_graph *g, pg_posmod *pm, int64_t i, int64_t j)
{
    const char *fn = "pg_dpb_bias_ij";
    PG_NN_SCRATCH(g, fn, pg_dpb_bias_ij(g, pm, i, j));
    if (!pm || pm->ops != &DPB_OPS) {
        pg_graph_fail(g, "%s: module is %s, expected a DynamicPositionBias", fn, pm ? pm->base.type : "NULL");
        return NULL;
    }
    if (i < 1 || j < 1) {
        pg_graph_fail(g, "%s: i (queries) and j (keys) must be >= 1, got i %lld, j %lld", fn, (long long)i,
                      (long long)j);
        return NULL;
    }
    return table_default(g, (pg_dpb *)pm, i, j, j - i);
}
