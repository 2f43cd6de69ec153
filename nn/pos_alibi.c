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

/* a per-head column of dtype dt, viewed as (H, 1) (nd 2) or (H, 1, 1) (nd 3):
 * the slopes, or (bool) whether the head is even */
static pg_tensor *per_head(pg_graph *g, const pg_alibi *m, pg_dtype dt, int nd, bool even)
{
    int64_t H = m->heads;
    pg_tensor *t = nd == 2 ? pg_empty(g, dt, PG_SHAPE(H, 1)) : pg_empty(g, dt, PG_SHAPE(H, 1, 1));
    for (int64_t h = 0; t && h < H; h++)
        pg_set(t, h, even ? (double)(h % 2 == 0) : m->slopes[h]);
    return t;
}

/* delta (any shape broadcasting against (H, 1) for nd 2, (H, 1, 1) for nd 3)
 * -> -|slope_h delta / divisor| (docs/semantics.md §1.7), and the asymmetric fill */
static pg_tensor *alibi_of(pg_graph *g, pg_alibi *m, pg_tensor *delta, int nd)
{
    pg_dtype dt = delta->dtype;
    pg_tensor *div = m->div && m->div->dtype != dt ? pg_cast(g, m->div, dt) : m->div;
    pg_tensor *raw = pg_pos_divide_by(g, pg_mul(g, delta, per_head(g, m, dt, nd, false)), div, m->divide);
    pg_tensor *bias = pg_neg(g, pg_abs(g, raw));
    if (!m->asymmetric || !bias)
        return bias;
    /* even heads hide keys before the query (raw > 0), odd heads keys after it (raw < 0);
     * the split is over the head axis whatever the batch (§7) */
    pg_tensor *zero = pg_zeros(g, dt, 0, NULL);
    pg_tensor *even = per_head(g, m, PG_BOOL, nd, true);
    pg_tensor *odd = pg_logical_not(g, even);
    pg_tensor *block = pg_logical_or(g, pg_logical_and(g, even, pg_gt(g, raw, zero)),
                                     pg_logical_and(g, odd, pg_lt(g, raw, zero)));
    return pg_masked_fill(g, bias, block, dt == PG_F32 ? -FLT_MAX : -DBL_MAX);
}

static pg_tensor *alibi_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    pg_alibi *m = (pg_alibi *)pm;
    if (pg_pos_table_check(g, "alibi", c, m->heads) != 0)
        return NULL;
    /* the caller's float positions stay in the graph: ALiBi is differentiable in them */
    double qstart = m->align == PG_ALIBI_ALIGN_END ? (double)(c->Lk - c->Lq) : 0.0;
    pg_tensor *pq = pg_pos_side(g, c->pos_q, c->Lq, qstart, c->dtype, true);
    pg_tensor *pk = pg_pos_side(g, c->pos_k, c->Lk, 0.0, c->dtype, true);
    pg_tensor *delta = pg_pos_delta_sides(g, pq, pk);         /* (Bo, 1, Lpq, Lpk) */
    pg_tensor *bias = delta ? alibi_of(g, m, delta, 3) : NULL; /* (Bo, H, Lpq, Lpk) */
    return pg_pos_table_finish(g, "alibi", bias, c, m->heads);
}

static pg_tensor *alibi_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                             const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v; /* ALiBi depends on the positions alone */
    return alibi_table(g, m, c);
}

/* dist_bias: d (D) signed distances -> (H, D), as alibi_table for one row of distances */
static pg_tensor *alibi_dist(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c)
{
    (void)c;
    if (pg_pos_dist_check(g, "alibi", d) != 0)
        return NULL;
    pg_tensor *row = pg_reshape(g, d, PG_SHAPE(1, d->shape[0]));
    return row ? alibi_of(g, (pg_alibi *)pm, row, 2) : NULL;
}

static const pg_posmod_ops ALIBI_OPS = {.mod_bias = alibi_bias, .bias_table = alibi_table, .dist_bias = alibi_dist};

pg_posmod *pg_alibi_new(int64_t heads, const pg_alibi_opts *o, pg_dtype dtype)
{
    const char *fn = "pg_alibi_new";
    static const pg_alibi_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
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
    if (!pg_module_dtype_ok(fn, dtype))
        return NULL;
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
        return pg_module_fail(&m->pm.base, fn);
    }
    return &m->pm;
}

pg_posmod *pg_posmod_make_alibi(const pg_posmod_args *a)
{
    int64_t heads = PG_POSMOD_HEADS("pg_posmod_make_alibi", "ALiBi", pg_alibi_opts, a);
    return heads ? pg_alibi_new(heads, a->opts, a->dtype) : NULL;
}
