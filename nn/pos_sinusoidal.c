/* The sinusoidal absolute encoding (docs/semantics.md §1.3) and the helpers the
 * absolute schemes share (left padding, key mask, positions). */
#include "pos_sinusoidal.h"

#include <math.h>
#include <stdlib.h>

#include "../tensor/shape_util.h"

typedef struct pos_sinusoidal {
    pg_posmod pm;
    int64_t dim;
    pg_sinusoidal_opts o; /* resolved: divide > 0, base > 1 */
    pg_tensor *div;       /* learned_div parameter, else NULL */
    pg_tensor *scale;     /* learned_scale parameter (1), else NULL */
} pos_sinusoidal;

/* ---- shared helpers --------------------------------------------------------------------- */

pg_tensor *pg_pos_abs_positions(pg_graph *g, const char *fn, pg_tensor *x, const pg_pos_ctx *c)
{
    if (!fn) {
        pg_graph_fail(g, "pg_pos_abs_positions: fn is NULL");
        return NULL;
    }
    if (!x || !pg_dtype_is_float(x->dtype) || x->ndim != 3) {
        pg_graph_fail(g, "%s: x is %s, expected a float (B, L, dim)", fn, x ? SHAPE(x) : "NULL");
        return NULL;
    }
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return NULL;
    int64_t B = x->shape[0], L = x->shape[1];
    if (c->B != B || c->Lq != L) {
        pg_graph_fail(g, "%s: context is for B %lld, L %lld but x is %s", fn, (long long)c->B, (long long)c->Lq,
                      SHAPE(x));
        return NULL;
    }
    pg_tensor *p;
    if (!c->pos_q) /* one row for every batch */
        p = pg_pos_resolve(g, NULL, 1, L, x->dtype);
    else /* float positions keep their gradient (pg_cast is differentiable between floats) */
        p = pg_cast(g, c->pos_q, x->dtype);
    return p ? pg_reshape(g, p, PG_SHAPE(p->shape[0], p->shape[1], 1)) : NULL;
}

pg_tensor *pg_pos_abs_add(pg_graph *g, const char *fn, pg_tensor *x, pg_tensor *pe, const pg_pos_ctx *c,
                          bool use_mask)
{
    if (!fn || !x || !pe || !c || x->ndim != 3) {
        pg_graph_fail(g, "%s: %s", fn ? fn : "pg_pos_abs_add",
                      !fn ? "fn is NULL" : !x ? "x is NULL" : !pe ? "encoding is NULL" : !c ? "context is NULL"
                                                                                     : "x is not (B, L, dim)");
        return NULL;
    }
    int64_t B = x->shape[0], L = x->shape[1], dim = x->shape[2];
    if (pe->ndim != 3 || (pe->shape[0] != B && pe->shape[0] != 1) || pe->shape[1] > L || pe->shape[2] != dim) {
        pg_graph_fail(g, "%s: encoding is %s, expected (%lld or 1, <= %lld, %lld) for x %s", fn, SHAPE(pe),
                      (long long)B, (long long)L, (long long)dim, SHAPE(x));
        return NULL;
    }
    if (pe->shape[1] < L) /* left padding: the first L - Lp tokens get no encoding */
        pe = pg_pad(g, pe, 1, L - pe->shape[1], 0, 0.0);
    if (use_mask && c->mask) { /* false = this token gets no encoding */
        pg_tensor *hide = pg_reshape(g, pg_logical_not(g, c->mask), PG_SHAPE(B, L, 1));
        if (pe && pe->shape[0] != B)
            pe = pg_broadcast_to(g, pe, PG_SHAPE(B, L, dim));
        pe = pg_masked_fill(g, pe, hide, 0.0);
    }
    return pg_add(g, x, pe);
}

/* ---- Sinusoidal -------------------------------------------------------------------------- */

static pg_tensor *sinusoidal_mod_x(pg_graph *g, pg_posmod *m, pg_tensor *x, const pg_pos_ctx *c)
{
    const char *fn = "pg_pos_sinusoidal";
    pos_sinusoidal *s = (pos_sinusoidal *)m;
    pg_tensor *p = pg_pos_abs_positions(g, fn, x, c); /* (B or 1, Lp, 1) */
    if (!p)
        return NULL;
    if (x->shape[2] != s->dim) {
        pg_graph_fail(g, "%s: x is %s, expected (B, L, dim = %lld)", fn, SHAPE(x), (long long)s->dim);
        return NULL;
    }
    pg_tensor *own = s->div ? s->div : s->scale; /* both have the module's dtype */
    if (own && own->dtype != x->dtype) {
        pg_graph_fail(g, "%s: x is %s but the module's %s is %s", fn, pg_dtype_name(x->dtype),
                      s->div ? "div" : "scale", pg_dtype_name(own->dtype));
        return NULL;
    }
    int64_t B = p->shape[0], Lp = p->shape[1], half = s->dim / 2; /* B 1: default positions */
    pg_tensor *f = pg_empty(g, x->dtype, PG_SHAPE(half));
    for (int64_t i = 0; f && i < half; i++)
        pg_set(f, i, 1.0 / pow(s->o.base, (double)(2 * i) / (double)s->dim));
    pg_tensor *th = pg_pos_divide_by(g, pg_mul(g, p, f), s->div, s->o.divide); /* (B or 1, Lp, dim/2) */
    pg_tensor *sc[2] = {pg_sin(g, th), pg_cos(g, th)};
    pg_tensor *pe = s->o.cat_halves ? pg_concat(g, 2, sc, 2) /* (B, Lp, dim): sines, then cosines */
                                    : pg_reshape(g, pg_stack(g, 2, sc, 3), PG_SHAPE(B, Lp, s->dim)); /* pairs */
    if (s->scale) /* x-transformers' ScaledSinusoidalEmbedding: emb * scale */
        pe = pg_mul(g, pe, s->scale);
    return pg_pos_abs_add(g, fn, x, pe, c, !s->o.ignore_mask);
}

static const pg_posmod_ops SINUSOIDAL_OPS = {.mod_x = sinusoidal_mod_x};

pg_sinusoidal_opts pg_sinusoidal_defaults(void)
{
    return (pg_sinusoidal_opts){.divide = 1.0, .learned_div = false, .base = 10000.0, .ignore_mask = false};
}

pg_sinusoidal_opts pg_scaled_sinusoidal_defaults(void)
{
    pg_sinusoidal_opts o = pg_sinusoidal_defaults();
    o.cat_halves = true;
    o.learned_scale = true;
    return o;
}

pg_posmod *pg_sinusoidal_new(int64_t dim, const pg_sinusoidal_opts *o, pg_dtype dtype)
{
    const char *fn = "pg_sinusoidal_new";
    pg_sinusoidal_opts op = o ? *o : pg_sinusoidal_defaults();
    if (op.divide == 0)
        op.divide = 1.0;
    if (op.base == 0)
        op.base = 10000.0;
    if (dim < 2 || dim % 2 != 0) {
        pg_set_error("%s: dim must be even and >= 2 (sin/cos pairs), got %lld", fn, (long long)dim);
        return NULL;
    }
    if (!(op.base > 1) || !isfinite(op.base)) { /* divide: checked by pg_pos_div_param */
        pg_set_error("%s: need a finite base > 1, got %g", fn, op.base);
        return NULL;
    }
    if (!pg_module_dtype_ok(fn, dtype))
        return NULL;
    pos_sinusoidal *s = pg_posmod_alloc(sizeof *s, "Sinusoidal", &SINUSOIDAL_OPS, NULL, fn);
    if (!s)
        return NULL;
    s->dim = dim;
    s->o = op;
    bool ok;
    s->div = pg_pos_div_param(&s->pm, (pg_pos_divide){op.divide, op.learned_div}, dtype, &ok);
    if (ok && op.learned_scale) {
        s->scale = pg_module_new_param(&s->pm.base, "scale", dtype, PG_SHAPE(1));
        if (s->scale)
            pg_fill(s->scale, 1.0 / sqrt((double)dim)); /* torch.ones(1) * dim ** -0.5 */
        ok = s->scale != NULL;
    }
    if (!ok)
        return pg_module_fail(&s->pm.base, NULL);
    return &s->pm;
}

pg_posmod *pg_posmod_make_sinusoidal(const pg_posmod_args *a)
{
    if (!pg_posmod_args_ok("pg_posmod_make_sinusoidal", a))
        return NULL;
    return pg_sinusoidal_new(a->dim, a->opts, a->dtype);
}
