/* Sandwich (nn/pos_sandwich.h; docs/pos/sandwich.md). */
#include "pos_sandwich.h"

#include <math.h>

#include "../tensor/shape_util.h"

double pg_sandwich_value(const pg_sandwich *s, int64_t h, double d)
{
    /* (1): [sum_{k=1..D'/2} cos(d w_k) - D'/2] / (scale (h + 1) / H), w_k = base^(-2k / D') */
    int64_t half = s->dim / 2;
    double sum = 0;
    for (int64_t k = 1; k <= half; k++)
        sum += cos(d * pow(s->base, -2.0 * (double)k / (double)s->dim));
    return (sum - (double)half) / (s->scale * (double)(h + 1) / (double)s->heads);
}

static double distance(const pg_sandwich *s, double delta)
{
    return s->dist == PG_SANDWICH_DIST_TRIL ? (delta > 0 ? delta : 0.0) : fabs(delta);
}

/* positions of one side as (Bp, Lp) of f64, detached; defaults: (1, L) with start, start + 1, ... */
static pg_tensor *side_positions(pg_graph *g, pg_tensor *pos, int64_t L, double start)
{
    if (pos)
        return pg_pos_resolve(g, pos, pos->shape[0], L, PG_F64);
    pg_tensor *p = pg_empty(g, PG_F64, PG_SHAPE(1, L));
    for (int64_t i = 0; p && i < L; i++)
        pg_set(p, i, start + (double)i);
    return p;
}

static pg_tensor *sandwich_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    const char *fn = "sandwich";
    pg_sandwich *s = (pg_sandwich *)pm;
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return NULL;
    if (c->heads != 0 && c->heads != s->heads) {
        pg_graph_fail(g, "%s: the module has %lld heads, the attention %lld", fn, (long long)s->heads,
                      (long long)c->heads);
        return NULL;
    }
    if (!pg_dtype_is_float(c->dtype)) {
        pg_graph_fail(g, "%s: dtype must be f32 or f64, got %s", fn, pg_dtype_name(c->dtype));
        return NULL;
    }
    /* default positions end-aligned: queries Lk-Lq..Lk-1 */
    pg_tensor *pq = side_positions(g, c->pos_q, c->Lq, (double)(c->Lk - c->Lq));
    pg_tensor *pk = side_positions(g, c->pos_k, c->Lk, 0.0);
    if (!pq || !pk)
        return NULL;
    int64_t Bq = pq->shape[0], Lpq = pq->shape[1], Bk = pk->shape[0], Lpk = pk->shape[1], H = s->heads;
    int64_t Bo = Bq > Bk ? Bq : Bk;
    pg_tensor *bias = pg_empty(g, c->dtype, PG_SHAPE(Bo, H, Lpq, Lpk));
    for (int64_t b = 0; bias && b < Bo; b++)
        for (int64_t i = 0; i < Lpq; i++)
            for (int64_t j = 0; j < Lpk; j++) {
                double d = distance(s, pg_get(pq, (Bq > 1 ? b : 0) * Lpq + i) - pg_get(pk, (Bk > 1 ? b : 0) * Lpk + j));
                for (int64_t h = 0; h < H; h++)
                    pg_set(bias, ((b * H + h) * Lpq + i) * Lpk + j, pg_sandwich_value(s, h, d));
            }
    bias = pg_pos_pad_bias(g, bias, c->Lq, c->Lk);
    if (bias && !c->pos_q && !c->pos_k)
        bias = pg_reshape(g, bias, PG_SHAPE(H, c->Lq, c->Lk));
    if (!bias && !pg_graph_error(g))
        pg_graph_fail(g, "%s: failed for positions %s, %s", fn, c->pos_q ? SHAPE(c->pos_q) : "default",
                      c->pos_k ? SHAPE(c->pos_k) : "default");
    return bias;
}

static pg_tensor *sandwich_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                                const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v; /* Sandwich depends on the positions alone */
    return sandwich_table(g, m, c);
}

/* dist_bias: d (D) signed distances -> (H, D) of d's dtype, no gradient */
static pg_tensor *sandwich_dist(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c)
{
    (void)c;
    pg_sandwich *s = (pg_sandwich *)pm;
    if (!d || d->ndim != 1 || !pg_dtype_is_float(d->dtype)) {
        pg_graph_fail(g, "sandwich: dist_bias needs distances (D) of f32/f64, got %s", d ? SHAPE(d) : "NULL");
        return NULL;
    }
    int64_t D = d->shape[0];
    pg_tensor *out = pg_empty(g, d->dtype, PG_SHAPE(s->heads, D));
    for (int64_t t = 0; out && t < D; t++) {
        double dt = distance(s, pg_get(d, t));
        for (int64_t h = 0; h < s->heads; h++)
            pg_set(out, h * D + t, pg_sandwich_value(s, h, dt));
    }
    return out;
}

static const pg_posmod_ops SANDWICH_OPS = {
    .mod_bias = sandwich_bias, .bias_table = sandwich_table, .dist_bias = sandwich_dist};

pg_posmod *pg_sandwich_new(int64_t heads, int64_t head_dim, const pg_sandwich_opts *o)
{
    const char *fn = "pg_sandwich_new";
    pg_sandwich_opts d0 = {0};
    if (!o)
        o = &d0;
    if (o->heads != 0 && o->heads != heads) {
        pg_set_error("%s: opts.heads %lld differs from heads %lld", fn, (long long)o->heads, (long long)heads);
        return NULL;
    }
    if (heads < 1 || heads > (int64_t)(PG_MAX_TENSOR_BYTES / sizeof(double))) {
        pg_set_error("%s: need 1 <= heads <= %lld, got %lld", fn, (long long)(PG_MAX_TENSOR_BYTES / sizeof(double)),
                     (long long)heads);
        return NULL;
    }
    int64_t dim = o->dim ? o->dim : head_dim;
    if (dim < 2 || dim % 2 != 0 || dim > (int64_t)1 << 40) {
        pg_set_error("%s: D' (opts.dim, 0: the head dim) must be even and >= 2, got %lld", fn, (long long)dim);
        return NULL;
    }
    double base = o->base == 0 ? 10000.0 : o->base, scale = o->scale == 0 ? 8.0 : o->scale;
    if (!(base > 0) || !isfinite(base) || !(scale > 0) || !isfinite(scale)) {
        pg_set_error("%s: base and scale must be finite numbers > 0, got base %g, scale %g", fn, base, scale);
        return NULL;
    }
    if (o->dist != PG_SANDWICH_DIST_ABS && o->dist != PG_SANDWICH_DIST_TRIL) {
        pg_set_error("%s: dist must be PG_SANDWICH_DIST_ABS or PG_SANDWICH_DIST_TRIL, got %d", fn, (int)o->dist);
        return NULL;
    }
    pg_sandwich *s = pg_posmod_alloc(sizeof *s, "Sandwich", &SANDWICH_OPS, NULL, fn);
    if (!s)
        return NULL;
    *s = (pg_sandwich){s->pm, heads, dim, base, scale, o->dist};
    return &s->pm;
}

pg_posmod *pg_posmod_make_sandwich(const pg_posmod_args *a)
{
    if (!a) {
        pg_set_error("pg_posmod_make_sandwich: args is NULL");
        return NULL;
    }
    const pg_sandwich_opts *o = a->opts;
    int64_t heads = pg_posmod_heads("pg_posmod_make_sandwich", "Sandwich", o ? o->heads : 0, a);
    if (!heads)
        return NULL;
    return pg_sandwich_new(heads, a->head_dim, o);
}
