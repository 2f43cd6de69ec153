/* Sandwich (nn/pos_sandwich.h; docs/pos/sandwich.md). */
#include "pos_sandwich.h"

#include <math.h>
#include <stdlib.h>

#include "../tensor/shape_util.h"
#include "../tensor/threadpool.h"

/* sum_{k=1..D'/2} cos(d w_k) - D'/2 of (1), w_k = base^(-2k / D') given in w or, when w is
 * NULL, computed */
static double sandwich_sum(const pg_sandwich *s, const double *w, double d)
{
    int64_t half = s->dim / 2;
    double sum = 0;
    for (int64_t k = 1; k <= half; k++)
        sum += cos(d * (w ? w[k - 1] : pow(s->base, -2.0 * (double)k / (double)s->dim)));
    return sum - (double)half;
}

/* b_h = the sum over scale (h + 1) / H */
static double sandwich_head(const pg_sandwich *s, int64_t h, double sum)
{
    return sum / (s->scale * (double)(h + 1) / (double)s->heads);
}

double pg_sandwich_value(const pg_sandwich *s, int64_t h, double d)
{
    return sandwich_head(s, h, sandwich_sum(s, NULL, d));
}

static double distance(const pg_sandwich *s, double delta)
{
    return s->dist == PG_SANDWICH_DIST_TRIL ? (delta > 0 ? delta : 0.0) : fabs(delta);
}

typedef struct sandwich_job {
    const pg_sandwich *s;
    const double *w;
    const pg_tensor *delta;
    pg_tensor *out;
    int64_t n;
} sandwich_job;

/* entries i0 .. i1 - 1 of delta (o n + t): every head's value there */
static void sandwich_range(void *ctx, int64_t i0, int64_t i1)
{
    const sandwich_job *j = ctx;
    const int64_t H = j->s->heads, n = j->n;
    for (int64_t i = i0; i < i1; i++) {
        double sum = sandwich_sum(j->s, j->w, distance(j->s, pg_get(j->delta, i)));
        for (int64_t h = 0; h < H; h++)
            pg_set(j->out, (i / n * H + h) * n + i % n, sandwich_head(j->s, h, sum));
    }
}

/* delta (outer, 1, n) -> out (outer, H, n) of dtype, given as its nd-dim shape
 * ((Bo, H, Lpq, Lpk) or (H, D)): the value of each head at each distance (no
 * gradient: Sandwich has no parameters). The sum once per distance, the frequencies
 * w_k once per call (the same bits as pg_sandwich_value: a training step of the toy
 * model spent 2% of its time in pow and cos here, per head). */
static pg_tensor *sandwich_of(pg_graph *g, const pg_sandwich *s, const pg_tensor *delta, int64_t outer, int64_t n,
                              pg_dtype dtype, int nd, const int64_t *shape)
{
    const int64_t half = s->dim / 2, terms = half > 0 ? half : 1;
    pg_tensor *out = pg_empty(g, dtype, nd, shape);
    double *w = out ? malloc((size_t)terms * sizeof *w) : NULL; /* NULL: pow per term */
    for (int64_t k = 1; w && k <= half; k++)
        w[k - 1] = pow(s->base, -2.0 * (double)k / (double)s->dim);
    /* D'/2 cosines an entry (10-15 ns each): tasks of at least 1024 of them. The toy model's
     * 256 distances of 16 took 60 us a layer on the calling thread, its 2-thread step's
     * largest serial piece */
    sandwich_job j = {s, w, delta, out, n};
    if (out)
        pg_parallel_range(outer * n, 1024 / terms + 1, sandwich_range, &j);
    free(w);
    return out;
}

static pg_tensor *sandwich_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    pg_sandwich *s = (pg_sandwich *)pm;
    if (pg_pos_table_check(g, "sandwich", c, s->heads) != 0)
        return NULL;
    /* default positions end-aligned: queries Lk-Lq..Lk-1 */
    pg_tensor *pq = pg_pos_side(g, c->pos_q, c->Lq, (double)(c->Lk - c->Lq), PG_F64, false);
    pg_tensor *pk = pg_pos_side(g, c->pos_k, c->Lk, 0.0, PG_F64, false);
    pg_tensor *delta = pg_pos_delta_sides(g, pq, pk); /* (Bo, 1, Lpq, Lpk) */
    pg_tensor *bias = NULL;
    if (delta) {
        int64_t Bo = delta->shape[0], Lpq = delta->shape[2], Lpk = delta->shape[3];
        bias = sandwich_of(g, s, delta, Bo, Lpq * Lpk, c->dtype, PG_SHAPE(Bo, s->heads, Lpq, Lpk));
    }
    return pg_pos_table_finish(g, "sandwich", bias, c, s->heads);
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
    if (pg_pos_dist_check(g, "sandwich", d) != 0)
        return NULL;
    int64_t D = d->shape[0];
    return sandwich_of(g, s, d, 1, D, d->dtype, PG_SHAPE(s->heads, D));
}

static const pg_posmod_ops SANDWICH_OPS = {
    .mod_bias = sandwich_bias, .bias_table = sandwich_table, .dist_bias = sandwich_dist};

pg_posmod *pg_sandwich_new(int64_t heads, int64_t head_dim, const pg_sandwich_opts *o)
{
    const char *fn = "pg_sandwich_new";
    static const pg_sandwich_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
    if (pg_pos_heads_check(fn, o->heads, heads) != 0)
        return NULL;
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
    int64_t heads = PG_POSMOD_HEADS("pg_posmod_make_sandwich", "Sandwich", pg_sandwich_opts, a);
    return heads ? pg_sandwich_new(heads, a->head_dim, a->opts) : NULL;
}
