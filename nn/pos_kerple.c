/* KERPLE (nn/pos_kerple.h; docs/pos/kerple.md). */
#include "pos_kerple.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"
#include "init.h"
#include "pos_alibi.h" /* pg_alibi_slopes: nemo's initial kerple_b */

static const pg_posmod_ops KERPLE_OPS;

static double clamp_to(double v, double lo, double hi) { return v < lo ? lo : (v > hi ? hi : v); }

int pg_kerple_project(pg_posmod *pm)
{
    if (!pm || pm->ops != &KERPLE_OPS) {
        pg_set_error("pg_kerple_project: not a KERPLE module (%s)", pm ? pm->base.type : "NULL");
        return -1;
    }
    pg_kerple *m = (pg_kerple *)pm;
    /* scale, inner >= eps; exponent in [eps, p_max] (docs/pos/kerple.md, "Constraints") */
    for (int64_t h = 0; h < m->heads; h++) {
        pg_set(m->scale, h, clamp_to(pg_get(m->scale, h), m->eps, INFINITY));
        if (m->inner)
            pg_set(m->inner, h, clamp_to(pg_get(m->inner, h), m->eps, INFINITY));
        if (m->power)
            pg_set(m->power, h, clamp_to(pg_get(m->power, h), m->eps, m->p_max));
    }
    return 0;
}

/* a parameter in dtype dt, viewed as (H, 1) (nd 2) or (H, 1, 1) (nd 3) */
static pg_tensor *param_as(pg_graph *g, pg_tensor *p, pg_dtype dt, int nd, int64_t H)
{
    pg_tensor *t = p->dtype != dt ? pg_cast(g, p, dt) : p;
    return nd == 2 ? pg_reshape(g, t, PG_SHAPE(H, 1)) : pg_reshape(g, t, PG_SHAPE(H, 1, 1));
}

/* delta (detached, any shape broadcasting against the params viewed with nd
 * dims) -> the bias: d = |delta| or max(delta, 0), then (1)-(3) of
 * docs/pos/kerple.md: -scale * log(1 + inner * d^power) with the missing parts
 * left out (log: no power; power: no inner, no log). */
static pg_tensor *kerple_of(pg_graph *g, pg_kerple *m, pg_tensor *delta, int nd)
{
    if (m->project == PG_KERPLE_PROJECT_FORWARD)
        pg_kerple_project(&m->pm);
    pg_dtype dt = delta->dtype;
    int64_t H = m->heads;
    pg_tensor *d = m->dist == PG_KERPLE_DIST_TRIL ? pg_relu(g, delta) : pg_abs(g, delta);
    pg_tensor *u = m->power ? pg_pow(g, d, param_as(g, m->power, dt, nd, H)) : d; /* d^p; d/dp = 0 at d = 0 */
    pg_tensor *k = m->inner ? pg_log1p(g, pg_mul(g, param_as(g, m->inner, dt, nd, H), u)) : u;
    return pg_neg(g, pg_mul(g, param_as(g, m->scale, dt, nd, H), k));
}

static pg_tensor *kerple_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    pg_kerple *m = (pg_kerple *)pm;
    if (pg_pos_table_check(g, "kerple", c, m->heads) != 0)
        return NULL;
    /* default positions end-aligned: queries Lk-Lq..Lk-1; detached (KERPLE is not differentiable in them) */
    pg_tensor *pq = pg_pos_side(g, c->pos_q, c->Lq, (double)(c->Lk - c->Lq), c->dtype, false);
    pg_tensor *pk = pg_pos_side(g, c->pos_k, c->Lk, 0.0, c->dtype, false);
    pg_tensor *delta = pg_pos_delta_sides(g, pq, pk);          /* (Bo, 1, Lpq, Lpk) */
    pg_tensor *bias = delta ? kerple_of(g, m, delta, 3) : NULL; /* (Bo, H, Lpq, Lpk) */
    return pg_pos_table_finish(g, "kerple", bias, c, m->heads);
}

static pg_tensor *kerple_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                              const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v; /* KERPLE depends on the positions alone */
    return kerple_table(g, m, c);
}

/* dist_bias: d (D) signed distances -> (H, D), as kerple_table for one row of distances */
static pg_tensor *kerple_dist(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c)
{
    (void)c;
    if (pg_pos_dist_check(g, "kerple", d) != 0)
        return NULL;
    pg_tensor *row = pg_reshape(g, pg_detach(g, d), PG_SHAPE(1, d->shape[0]));
    return row ? kerple_of(g, (pg_kerple *)pm, row, 2) : NULL;
}

static const pg_posmod_ops KERPLE_OPS = {.mod_bias = kerple_bias, .bias_table = kerple_table, .dist_bias = kerple_dist};

static int check_opts(const char *fn, int64_t heads, const pg_kerple_opts *o, pg_dtype dtype, double eps,
                      double p_max)
{
    if (pg_pos_heads_check(fn, o->heads, heads) != 0)
        return -1;
    if (!pg_module_dtype_ok(fn, dtype))
        return -1;
    if (o->variant < PG_KERPLE_LOG || o->variant > PG_KERPLE_NEMO) {
        pg_set_error("%s: variant must be PG_KERPLE_LOG, PG_KERPLE_POWER or PG_KERPLE_NEMO, got %d", fn,
                     (int)o->variant);
        return -1;
    }
    if (o->project < PG_KERPLE_PROJECT_DEFAULT || o->project > PG_KERPLE_PROJECT_NONE) {
        pg_set_error("%s: project must be a pg_kerple_project_mode (0..3), got %d", fn, (int)o->project);
        return -1;
    }
    if (o->dist != PG_KERPLE_DIST_ABS && o->dist != PG_KERPLE_DIST_TRIL) {
        pg_set_error("%s: dist must be PG_KERPLE_DIST_ABS or PG_KERPLE_DIST_TRIL, got %d", fn, (int)o->dist);
        return -1;
    }
    if (!(eps > 0) || !isfinite(eps) || !(p_max >= eps) || !isfinite(p_max)) {
        pg_set_error("%s: need finite clamp bounds 0 < eps <= p_max, got eps %g, p_max %g", fn, eps, p_max);
        return -1;
    }
    return 0;
}

/* the parameters, named as the references, with their initial values */
static int make_params(pg_kerple *m, pg_dtype dt, pg_rng *r, const char *fn)
{
    pg_module *b = &m->pm.base;
    int64_t H = m->heads;
    if (m->variant == PG_KERPLE_NEMO) { /* (H, 1, 1): b = ALiBi slopes, a = p = 1 */
        m->scale = pg_module_new_param_ex(b, "kerple_b", dt, PG_SHAPE(H, 1, 1), PG_PARAM_NO_DECAY);
        m->inner = pg_module_new_param_ex(b, "kerple_a", dt, PG_SHAPE(H, 1, 1), PG_PARAM_NO_DECAY);
        m->power = pg_module_new_param_ex(b, "kerple_p", dt, PG_SHAPE(H, 1, 1), PG_PARAM_NO_DECAY);
        if (!m->scale || !m->inner || !m->power)
            return -1;
        double *s = malloc((size_t)H * sizeof *s);
        if (!s || pg_alibi_slopes(H, s) != 0) {
            free(s);
            pg_set_error("%s: out of memory", fn);
            return -1;
        }
        for (int64_t h = 0; h < H; h++) {
            pg_set(m->scale, h, s[h]);
            pg_set(m->inner, h, 1.0);
            pg_set(m->power, h, 1.0);
        }
        free(s);
        return 0;
    }
    if (!r) {
        pg_set_error("%s: the initial values need a generator (r is NULL)", fn);
        return -1;
    }
    bool log = m->variant == PG_KERPLE_LOG;
    /* log: bias_p = r1 ~ U(0, 2), bias_a = r2 ~ U(0, 1); power: bias_p = r2 ~ U(0, 2), bias_a = r1 ~ U(0, 1);
     * registered bias_p first, as the reference */
    pg_tensor *bp = pg_module_new_param_ex(b, "bias_p", dt, PG_SHAPE(H), PG_PARAM_NO_DECAY);
    pg_tensor *ba = pg_module_new_param_ex(b, "bias_a", dt, PG_SHAPE(H), PG_PARAM_NO_DECAY);
    if (!bp || !ba || pg_init_uniform(bp, r, 0.0, 2.0) != 0 || pg_init_uniform(ba, r, 0.0, 1.0) != 0)
        return -1;
    m->scale = log ? bp : ba;
    m->inner = log ? ba : NULL;
    m->power = log ? NULL : bp;
    return 0;
}

pg_posmod *pg_kerple_new(int64_t heads, const pg_kerple_opts *o, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_kerple_new";
    static const pg_kerple_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
    double eps = o->eps == 0 ? 1e-2 : o->eps, p_max = o->p_max == 0 ? 2.0 : o->p_max;
    if (check_opts(fn, heads, o, dtype, eps, p_max) != 0)
        return NULL;
    pg_kerple *m = pg_posmod_alloc(sizeof *m, "KERPLE", &KERPLE_OPS, NULL, fn);
    if (!m)
        return NULL;
    m->heads = heads;
    m->variant = o->variant;
    m->eps = eps;
    m->p_max = p_max;
    m->dist = o->dist;
    m->project = o->project;
    if (m->project == PG_KERPLE_PROJECT_DEFAULT)
        m->project = o->variant == PG_KERPLE_NEMO ? PG_KERPLE_PROJECT_NONE : PG_KERPLE_PROJECT_FORWARD;
    if (make_params(m, dtype, r, fn) != 0) {
        return pg_module_fail(&m->pm.base, NULL);
    }
    return &m->pm;
}

pg_posmod *pg_posmod_make_kerple(const pg_posmod_args *a)
{
    int64_t heads = PG_POSMOD_HEADS("pg_posmod_make_kerple", "KERPLE", pg_kerple_opts, a);
    return heads ? pg_kerple_new(heads, a->opts, a->dtype, a->rng) : NULL;
}
