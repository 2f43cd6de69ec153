/* ALiBi (nn/pos_alibi.h; docs/semantics.md §0.1, §1.7, §4.2, §7). */
#include "pos_alibi.h"

#include <float.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

int pg_alibi_slopes(int64_t n, double *out)
{
    if (n < 1 || !out) {
        pg_set_error("pg_alibi_slopes: need n >= 1 heads and an output array, got n %lld%s", (long long)n,
                     out ? "" : " and NULL");
        return -1;
    }
    int64_t c = 1; /* the largest power of two <= n */
    while (c * 2 <= n)
        c *= 2;
    /* the c power-of-two slopes 2^(-8 (h+1) / c) ... */
    for (int64_t h = 0; h < c; h++)
        out[h] = exp2(-8.0 * (double)(h + 1) / (double)c);
    /* ... then the even-indexed slopes of the list for 2c: 2^(-8 (2k+1) / 2c) */
    for (int64_t k = 0; k < n - c; k++)
        out[c + k] = exp2(-8.0 * (double)(2 * k + 1) / (double)(2 * c));
    return 0;
}

static void alibi_destroy(pg_module *m)
{
    pg_alibi *a = (pg_alibi *)m;
    free(a->slopes);
    free(a);
}

/* positions of one side as (Bp, Lp) in dtype dt, keeping the caller's float
 * positions in the graph (ALiBi is differentiable in them); defaults: (1, L)
 * with start, start + 1, ... */
static pg_tensor *side_positions(pg_graph *g, pg_tensor *pos, int64_t L, double start, pg_dtype dt)
{
    if (pos)
        return pos->dtype == dt ? pos : pg_cast(g, pos, dt);
    pg_tensor *p = pg_empty(g, dt, PG_SHAPE(1, L));
    for (int64_t i = 0; p && i < L; i++)
        pg_set(p, i, start + (double)i);
    return p;
}

static pg_tensor *alibi_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    const char *fn = "alibi";
    pg_alibi *m = (pg_alibi *)pm;
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return NULL;
    if (c->heads != 0 && c->heads != m->heads) {
        pg_graph_fail(g, "%s: the module has %lld heads, the attention %lld", fn, (long long)m->heads,
                      (long long)c->heads);
        return NULL;
    }
    pg_dtype dt = c->dtype;
    if (!pg_dtype_is_float(dt)) {
        pg_graph_fail(g, "%s: dtype must be f32 or f64, got %s", fn, pg_dtype_name(dt));
        return NULL;
    }
    double qstart = m->align == PG_ALIBI_ALIGN_END ? (double)(c->Lk - c->Lq) : 0.0;
    pg_tensor *pq = side_positions(g, c->pos_q, c->Lq, qstart, dt);
    pg_tensor *pk = side_positions(g, c->pos_k, c->Lk, 0.0, dt);
    if (!pq || !pk)
        return NULL;
    int64_t Bq = pq->shape[0], Lpq = pq->shape[1], Bk = pk->shape[0], Lpk = pk->shape[1];
    int64_t H = m->heads;
    pg_tensor *delta = pg_sub(g, pg_reshape(g, pq, PG_SHAPE(Bq, 1, Lpq, 1)),
                              pg_reshape(g, pk, PG_SHAPE(Bk, 1, 1, Lpk))); /* (Bo, 1, Lpq, Lpk) */
    pg_tensor *slopes = pg_empty(g, dt, PG_SHAPE(H, 1, 1));
    for (int64_t h = 0; slopes && h < H; h++)
        pg_set(slopes, h, m->slopes[h]);
    pg_tensor *div = m->div && m->div->dtype != dt ? pg_cast(g, m->div, dt) : m->div;
    pg_tensor *raw = pg_pos_divide_by(g, pg_mul(g, delta, slopes), div, m->divide); /* (Bo, H, Lpq, Lpk) */
    pg_tensor *bias = pg_neg(g, pg_abs(g, raw));
    if (m->asymmetric && bias) {
        /* even heads hide keys before the query (raw > 0), odd heads keys after it (raw < 0);
         * the split is over the head axis whatever the batch (§7) */
        pg_tensor *zero = pg_zeros(g, dt, 0, NULL);
        pg_tensor *even = pg_empty(g, PG_BOOL, PG_SHAPE(H, 1, 1));
        for (int64_t h = 0; even && h < H; h++)
            pg_set(even, h, h % 2 == 0);
        pg_tensor *odd = pg_logical_not(g, even);
        pg_tensor *block = pg_logical_or(g, pg_logical_and(g, even, pg_gt(g, raw, zero)),
                                         pg_logical_and(g, odd, pg_lt(g, raw, zero)));
        bias = pg_masked_fill(g, bias, block, dt == PG_F32 ? -FLT_MAX : -DBL_MAX);
    }
    bias = pg_pos_pad_bias(g, bias, c->Lq, c->Lk);
    if (bias && !c->pos_q && !c->pos_k)
        bias = pg_reshape(g, bias, PG_SHAPE(H, c->Lq, c->Lk));
    if (!bias && !pg_graph_error(g))
        pg_graph_fail(g, "%s: failed for positions %s, %s", fn, c->pos_q ? SHAPE(c->pos_q) : "default",
                      c->pos_k ? SHAPE(c->pos_k) : "default");
    return bias;
}

static pg_tensor *alibi_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                             const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v; /* ALiBi depends on the positions alone */
    return alibi_table(g, m, c);
}

/* dist_bias: d (D) signed distances -> (H, D): -|slope_h d / divisor|, and the
 * asymmetric fill, as alibi_table for one row of distances */
static pg_tensor *alibi_dist(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c)
{
    (void)c;
    pg_alibi *m = (pg_alibi *)pm;
    if (!d || d->ndim != 1 || !pg_dtype_is_float(d->dtype)) {
        pg_graph_fail(g, "alibi: dist_bias needs distances (D) of f32/f64, got %s", d ? SHAPE(d) : "NULL");
        return NULL;
    }
    pg_dtype dt = d->dtype;
    int64_t H = m->heads, D = d->shape[0];
    pg_tensor *slopes = pg_empty(g, dt, PG_SHAPE(H, 1));
    for (int64_t h = 0; slopes && h < H; h++)
        pg_set(slopes, h, m->slopes[h]);
    pg_tensor *div = m->div && m->div->dtype != dt ? pg_cast(g, m->div, dt) : m->div;
    pg_tensor *raw = pg_pos_divide_by(g, pg_mul(g, pg_reshape(g, d, PG_SHAPE(1, D)), slopes), div, m->divide);
    pg_tensor *bias = pg_neg(g, pg_abs(g, raw)); /* (H, D) */
    if (m->asymmetric && bias) {
        pg_tensor *zero = pg_zeros(g, dt, 0, NULL);
        pg_tensor *even = pg_empty(g, PG_BOOL, PG_SHAPE(H, 1));
        for (int64_t h = 0; even && h < H; h++)
            pg_set(even, h, h % 2 == 0);
        pg_tensor *odd = pg_logical_not(g, even);
        pg_tensor *block = pg_logical_or(g, pg_logical_and(g, even, pg_gt(g, raw, zero)),
                                         pg_logical_and(g, odd, pg_lt(g, raw, zero)));
        bias = pg_masked_fill(g, bias, block, dt == PG_F32 ? -FLT_MAX : -DBL_MAX);
    }
    return bias;
}

static const pg_posmod_ops ALIBI_OPS = {.mod_bias = alibi_bias, .bias_table = alibi_table, .dist_bias = alibi_dist};

pg_posmod *pg_alibi_new(int64_t heads, const pg_alibi_opts *o, pg_dtype dtype)
{
    const char *fn = "pg_alibi_new";
    pg_alibi_opts d = {0};
    if (!o)
        o = &d;
    if (o->heads != 0 && o->heads != heads) {
        pg_set_error("%s: opts.heads %lld differs from heads %lld", fn, (long long)o->heads, (long long)heads);
        return NULL;
    }
    int64_t use = o->use_heads ? o->use_heads : heads;
    if (heads < 1 || use < 1 || use > heads || heads > (int64_t)(PG_MAX_TENSOR_BYTES / sizeof(double))) {
        pg_set_error("%s: need 1 <= heads <= %lld and 0 <= use_heads <= heads, got heads %lld, use_heads %lld", fn,
                     (long long)(PG_MAX_TENSOR_BYTES / sizeof(double)), (long long)heads, (long long)o->use_heads);
        return NULL;
    }
    if (!pg_dtype_is_float(dtype)) {
        pg_set_error("%s: dtype must be f32 or f64, got %s", fn, pg_dtype_name(dtype));
        return NULL;
    }
    if (o->align != PG_ALIBI_ALIGN_START && o->align != PG_ALIBI_ALIGN_END) {
        pg_set_error("%s: align must be PG_ALIBI_ALIGN_START or PG_ALIBI_ALIGN_END, got %d", fn, (int)o->align);
        return NULL;
    }
    for (int64_t h = 0; o->slopes && h < use; h++)
        if (!isfinite(o->slopes[h])) {
            pg_set_error("%s: slope %lld is %g, expected a finite number", fn, (long long)h, o->slopes[h]);
            return NULL;
        }
    pg_alibi *m = pg_posmod_alloc(sizeof *m, "ALiBi", &ALIBI_OPS, alibi_destroy, fn);
    if (!m)
        return NULL;
    double *base = calloc((size_t)heads, sizeof *base);
    m->slopes = calloc((size_t)heads, sizeof *m->slopes);
    if (!base || !m->slopes) {
        pg_set_error("%s: out of memory", fn);
        free(base);
        pg_module_free(&m->pm.base);
        return NULL;
    }
    m->heads = heads;
    m->use_heads = use;
    m->asymmetric = o->asymmetric;
    m->align = o->align;
    if (o->slopes)
        memcpy(base, o->slopes, (size_t)use * sizeof *base);
    else
        pg_alibi_slopes(use, base);
    /* asymmetric: head h takes the slope of the even head 2 floor(h / 2), within the first use heads */
    for (int64_t h = 0; h < use; h++)
        m->slopes[h] = base[m->asymmetric ? h - h % 2 : h];
    free(base);
    pg_pos_divide dv = o->div;
    if (dv.divide == 0)
        dv.divide = 1.0;
    m->divide = dv.divide;
    bool ok;
    m->div = pg_pos_div_param(&m->pm, dv, dtype, &ok);
    if (!ok) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: %s", fn, pg_last_error());
        pg_set_error("%s", msg);
        pg_module_free(&m->pm.base);
        return NULL;
    }
    return &m->pm;
}

pg_posmod *pg_posmod_make_alibi(const pg_posmod_args *a)
{
    if (!a) {
        pg_set_error("pg_posmod_make_alibi: args is NULL");
        return NULL;
    }
    const pg_alibi_opts *o = a->opts;
    int64_t heads = pg_posmod_heads("pg_posmod_make_alibi", "ALiBi", o ? o->heads : 0, a);
    if (!heads)
        return NULL;
    return pg_alibi_new(heads, o, a->dtype);
}
