/* Learned absolute encodings: LearnedVocab (docs/semantics.md §1.4) and
 * LearnedContinuous (§1.5). Left padding and the key mask as Sinusoidal
 * (pg_pos_abs_add in nn/pos_sinusoidal.c). */
#include "pos_learned.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "pos_sinusoidal.h"

#include "../tensor/shape_util.h"

/* ===================================================================================
 * LearnedVocab
 * =================================================================================== */

typedef struct pos_learned {
    pg_posmod pm;
    int64_t dim, max_seq_len;
    bool ignore_mask, l2norm;
    double scale; /* resolved: > 0 */
    pg_embed *emb;
} pos_learned;

static pg_tensor *learned_mod_x(pg_graph *g, pg_posmod *m, pg_tensor *x, const pg_pos_ctx *c)
{
    const char *fn = "pg_pos_learned";
    pos_learned *s = (pos_learned *)m;
    if (!x || !pg_dtype_is_float(x->dtype) || x->ndim != 3 || x->shape[2] != s->dim) {
        pg_graph_fail(g, "%s: x is %s, expected a float (B, L, dim = %lld)", fn, x ? SHAPE(x) : "NULL",
                      (long long)s->dim);
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
    if (x->dtype != s->emb->weight->dtype) {
        pg_graph_fail(g, "%s: x is %s but the table is %s", fn, pg_dtype_name(x->dtype),
                      pg_dtype_name(s->emb->weight->dtype));
        return NULL;
    }
    pg_tensor *ids = c->pos_q;
    if (ids && ids->dtype != PG_I64) {
        pg_graph_fail(g, "%s: positions are %s, but a learned table needs integer (i64) positions", fn, SHAPE(ids));
        return NULL;
    }
    if (!ids) {
        if (L > s->max_seq_len) {
            pg_graph_fail(g, "%s: sequence length %lld exceeds max_seq_len %lld (x is %s)", fn, (long long)L,
                          (long long)s->max_seq_len, SHAPE(x));
            return NULL;
        }
        ids = pg_pos_resolve(g, NULL, 1, L, PG_I64); /* one row for every batch: (1, L, dim) */
        if (!ids)
            return NULL;
    } else {
        const int64_t *v = pg_i64(ids);
        for (int64_t i = 0; i < ids->numel; i++)
            if (v[i] < 0 || v[i] >= s->max_seq_len) {
                pg_graph_fail(g, "%s: position %lld (at flat index %lld of %s) is outside [0, max_seq_len = %lld)",
                              fn, (long long)v[i], (long long)i, SHAPE(ids), (long long)s->max_seq_len);
                return NULL;
            }
    }
    pg_tensor *pe = pg_embedding(g, s->emb->weight, ids); /* (B, Lp, dim) */
    if (s->scale != 1.0) /* x-transformers: emb * dim^-0.5 */
        pe = pg_mul_scalar(g, pe, s->scale);
    if (s->l2norm) /* x-transformers' l2norm_embed: F.normalize(pe, dim=-1) */
        pe = pg_l2_normalize(g, pe, 1e-12);
    return pg_pos_abs_add(g, fn, x, pe, c, !s->ignore_mask);
}

static const pg_posmod_ops LEARNED_OPS = {.mod_x = learned_mod_x};

pg_posmod *pg_learned_new(int64_t dim, int64_t max_seq_len, const pg_learned_opts *o, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_learned_new";
    if (dim < 1 || max_seq_len < 1) {
        pg_set_error("%s: need dim >= 1 and max_seq_len >= 1, got dim %lld, max_seq_len %lld", fn, (long long)dim,
                     (long long)max_seq_len);
        return NULL;
    }
    double scale = o && o->scale != 0 ? o->scale : 1.0;
    if (!(scale > 0) || !isfinite(scale)) {
        pg_set_error("%s: scale must be finite and >= 0 (0 means 1), got %g", fn, o->scale);
        return NULL;
    }
    if (!pg_module_dtype_ok(fn, dtype))
        return NULL;
    pg_rng r0 = pg_rng_init(0);
    pg_embed *e = pg_embed_new(max_seq_len, dim, dtype, r ? r : &r0);
    if (!e)
        return NULL;
    pos_learned *s = pg_posmod_alloc(sizeof *s, "LearnedVocab", &LEARNED_OPS, NULL, fn);
    if (!s)
        return pg_module_fail(&e->base, NULL);
    s->dim = dim;
    s->max_seq_len = max_seq_len;
    s->ignore_mask = o && o->ignore_mask;
    s->l2norm = o && o->l2norm;
    s->scale = scale;
    s->emb = e;
    if (pg_module_add_child(&s->pm.base, "emb", &e->base) != 0)
        return pg_module_fail(&s->pm.base, NULL);
    return &s->pm;
}

pg_posmod *pg_posmod_make_learned(const pg_posmod_args *a)
{
    if (!pg_posmod_args_ok("pg_posmod_make_learned", a))
        return NULL;
    const pg_learned_opts *o = a->opts;
    int64_t n = o && o->max_seq_len ? o->max_seq_len : a->max_len;
    if (n < 1) {
        pg_set_error("pg_posmod_make_learned: the table needs a size: set pg_learned_opts.max_seq_len or the "
                     "model's max_len (got %lld, %lld)",
                     (long long)(o ? o->max_seq_len : 0), (long long)a->max_len);
        return NULL;
    }
    return pg_learned_new(a->dim, n, o, a->dtype, a->rng);
}

/* ===================================================================================
 * LearnedContinuous
 * =================================================================================== */

#define MAX_DEPTH 64

typedef struct pos_continuous {
    pg_posmod pm;
    int64_t dim;
    pg_continuous_opts o;         /* resolved */
    pg_tensor *div;               /* learned_div parameter, else NULL */
    pg_linear *lin[MAX_DEPTH];    /* mlp.l.0 (l = 0) / mlp.l.1 */
    pg_layernorm *ln[MAX_DEPTH];  /* mlp.l.1 / mlp.l.2 when norm */
} pos_continuous;

static pg_tensor *continuous_mod_x(pg_graph *g, pg_posmod *m, pg_tensor *x, const pg_pos_ctx *c)
{
    const char *fn = "pg_pos_continuous";
    pos_continuous *s = (pos_continuous *)m;
    pg_tensor *h = pg_pos_abs_positions(g, fn, x, c); /* (B or 1, Lp, 1) */
    if (!h)
        return NULL;
    if (x->shape[2] != s->dim) {
        pg_graph_fail(g, "%s: x is %s, expected (B, L, dim = %lld)", fn, SHAPE(x), (long long)s->dim);
        return NULL;
    }
    if (x->dtype != s->lin[0]->weight->dtype) {
        pg_graph_fail(g, "%s: x is %s but the MLP is %s", fn, pg_dtype_name(x->dtype),
                      pg_dtype_name(s->lin[0]->weight->dtype));
        return NULL;
    }
    h = pg_pos_divide_by(g, h, s->div, s->o.divide);
    for (int l = 0; l < s->o.depth; l++) {
        if (l > 0)
            h = pg_silu(g, h);
        h = pg_linear_forward(g, s->lin[l], h);
        if (s->ln[l])
            h = pg_layernorm_forward(g, s->ln[l], h);
    }
    return pg_pos_abs_add(g, fn, x, h, c, !s->o.ignore_mask);
}

static const pg_posmod_ops CONTINUOUS_OPS = {.mod_x = continuous_mod_x};

pg_continuous_opts pg_continuous_defaults(void)
{
    return (pg_continuous_opts){.depth = 1, .norm = false, .divide = 1.0, .learned_div = false, .ignore_mask = false};
}

pg_posmod *pg_continuous_new(int64_t dim, const pg_continuous_opts *o, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_continuous_new";
    pg_continuous_opts op = o ? *o : pg_continuous_defaults();
    if (op.depth == 0)
        op.depth = 1;
    if (op.divide == 0)
        op.divide = 1.0;
    if (dim < 1 || op.depth < 1 || op.depth > MAX_DEPTH) {
        pg_set_error("%s: need dim >= 1 and depth in [1, %d], got dim %lld, depth %d", fn, MAX_DEPTH, (long long)dim,
                     op.depth);
        return NULL;
    }
    if (!pg_module_dtype_ok(fn, dtype))
        return NULL;
    pos_continuous *s = pg_posmod_alloc(sizeof *s, "LearnedContinuous", &CONTINUOUS_OPS, NULL, fn);
    if (!s)
        return NULL;
    s->dim = dim;
    s->o = op;
    bool ok;
    s->div = pg_pos_div_param(&s->pm, (pg_pos_divide){op.divide, op.learned_div}, dtype, &ok);
    pg_module *mlp = ok ? pg_module_new_container("ModuleList", fn) : NULL;
    if (!mlp || pg_module_add_child(&s->pm.base, "mlp", mlp) != 0)
        goto fail;
    pg_rng r0 = pg_rng_init(0);
    if (!r)
        r = &r0;
    for (int l = 0; l < op.depth; l++) {
        char name[16];
        snprintf(name, sizeof name, "%d", l);
        pg_module *blk = pg_module_new_container("Sequential", fn);
        if (!blk || pg_module_add_child(mlp, name, blk) != 0)
            goto fail;
        s->lin[l] = pg_linear_new(l == 0 ? 1 : dim, dim, true, dtype, r);
        if (!s->lin[l] || pg_module_add_child(blk, l == 0 ? "0" : "1", &s->lin[l]->base) != 0)
            goto fail;
        if (op.norm) {
            s->ln[l] = pg_layernorm_new(dim, 1e-5, true, true, dtype);
            if (!s->ln[l] || pg_module_add_child(blk, l == 0 ? "1" : "2", &s->ln[l]->base) != 0)
                goto fail;
        }
    }
    return &s->pm;
fail:
    pg_module_free(&s->pm.base);
    return NULL;
}

pg_posmod *pg_posmod_make_continuous(const pg_posmod_args *a)
{
    if (!pg_posmod_args_ok("pg_posmod_make_continuous", a))
        return NULL;
    return pg_continuous_new(a->dim, a->opts, a->dtype, a->rng);
}
