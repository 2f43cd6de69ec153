/* CoPE (nn/pos_cope.h; docs/pos/cope.md). The bias is one op, pg_cope_interp
 * (autograd/op_cope.c: gates (1), suffix sums and clamp (2), interpolation (4) in one
 * pass over the (B, H, Lq, Lk) logits), beside the matmuls of the logits and of (3).
 * The soft one-hot (5) is built from differentiable ops: sigmoid, masked_fill, a
 * reversed cumsum, clamp, then sub, abs, softmax, matmul. */
#include "pos_cope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

static const pg_posmod_ops COPE_OPS;

/* hide[b, 0, i, j] = (mask given and !mask[b, j]) or (causal and j > i): (B or 1, 1, Lq, Lk),
 * the entries the attention hides (nn/attention.c), whose gates are 0 */
static pg_tensor *hidden(pg_graph *g, const pg_pos_ctx *c)
{
    int64_t Bm = c->mask ? c->B : 1, Lq = c->Lq, Lk = c->Lk;
    pg_tensor *hide = pg_empty(g, PG_BOOL, PG_SHAPE(Bm, 1, Lq, Lk));
    if (!hide)
        return NULL;
    uint8_t *h = pg_bool(hide);
    const uint8_t *m = c->mask ? pg_bool(c->mask) : NULL;
    for (int64_t b = 0; b < Bm; b++)
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++)
                h[(b * Lq + i) * Lk + j] = (m && !m[b * Lk + j]) || (c->causal && j > i);
    return hide;
}

/* (1)-(2): gates (B, H, Lq, Lk) -> p_ij = min(sum_{t >= j} g_it, npos - 1) */
static pg_tensor *positions(pg_graph *g, pg_tensor *gates, int64_t npos)
{
    pg_tensor *p = pg_cumsum_reverse(g, gates, -1);         /* suffix sum, diagonal included */
    return pg_clamp(g, p, -INFINITY, (double)(npos - 1)); /* gradient 0 where clamped */
}

/* the position embeddings E in the call's dtype */
static pg_tensor *emb_as(pg_graph *g, pg_cope *m, pg_dtype dtype)
{
    return m->pos_emb->dtype != dtype ? pg_cast(g, m->pos_emb, dtype) : m->pos_emb;
}

/* the scale of the logits (and the gates' in_scale) and the bias's factor: RAM divides
 * (q.k + bias) by sqrt(Dh), the bias scaled too; XT (and nodiv) adds it after the scaling */
static double call_scale(const pg_cope *m, const pg_pos_ctx *c, double *out_scale)
{
    double scale = c->scale != 0 ? c->scale : 1.0 / sqrt((double)m->head_dim);
    *out_scale = m->convention == PG_COPE_RAM && !m->nodiv ? scale : 1.0;
    return scale;
}

/* (3): z = q E, (B, H, Lq, npos), from the unscaled q */
static pg_tensor *int_logits(pg_graph *g, pg_cope *m, pg_tensor *q)
{
    pg_tensor *E = emb_as(g, m, q->dtype);
    if (m->convention == PG_COPE_RAM) /* (1, Dh, npos) broadcasts over (B, H) */
        return pg_matmul(g, q, E, false, false);
    return pg_matmul(g, q, E, false, true); /* XT: (npos, Dh) */
}

static bool check_call(pg_graph *g, pg_cope *m, const pg_tensor *q, const pg_tensor *k, const pg_tensor *v,
                       const pg_pos_ctx *c)
{
    const char *fn = "cope";
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return false;
    if (!q || !k || !v || q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || !pg_dtype_is_float(q->dtype) ||
        k->dtype != q->dtype || v->dtype != q->dtype) {
        pg_graph_fail(g, "%s: needs q (B, H, Lq, Dh), k and v (B, H, Lk, Dh) of one float dtype, got %s, %s, %s", fn,
                      q ? SHAPE(q) : "NULL", k ? SHAPE(k) : "NULL", v ? SHAPE(v) : "NULL");
        return false;
    }
    if (q->shape[3] != m->head_dim || k->shape[3] != m->head_dim || v->shape[3] != m->head_dim) {
        pg_graph_fail(g, "%s: the module has head_dim %lld, got q %s, k %s, v %s", fn, (long long)m->head_dim,
                      SHAPE(q), SHAPE(k), SHAPE(v));
        return false;
    }
    if (q->shape[2] != c->Lq || k->shape[2] != c->Lk || v->shape[2] != c->Lk || q->shape[0] != c->B) {
        pg_graph_fail(g, "%s: q %s, k %s do not match the context (B %lld, Lq %lld, Lk %lld)", fn, SHAPE(q),
                      SHAPE(k), (long long)c->B, (long long)c->Lq, (long long)c->Lk);
        return false;
    }
    return true;
}

/* (5): a_ijn = softmax_n(-|p_ij - n| / temp) (B, H, Lq, Lk, npos); bias_ij = sum_n a_ijn z_i[n].
 * Smooth in p except where p is an integer (the kink of |p - n|). */
static pg_tensor *soft_bias(pg_graph *g, pg_tensor *p, pg_tensor *z, double temp)
{
    if (!p || !z)
        return NULL;
    int64_t B = p->shape[0], H = p->shape[1], Lq = p->shape[2], Lk = p->shape[3], npos = z->shape[3];
    pg_tensor *n = pg_arange(g, p->dtype, 0, (double)npos, 1); /* (npos) */
    pg_tensor *d = pg_abs(g, pg_sub(g, pg_reshape(g, p, 5, (int64_t[]){B, H, Lq, Lk, 1}), n));
    pg_tensor *a = pg_softmax(g, pg_mul_scalar(g, d, -1.0 / temp), -1);
    pg_tensor *zc = pg_reshape(g, z, 5, (int64_t[]){B, H, Lq, npos, 1});
    pg_tensor *bias = pg_matmul(g, a, zc, false, false); /* (B, H, Lq, Lk, 1) */
    return bias ? pg_reshape(g, bias, 4, p->shape) : NULL;
}

/* (1), (2) and (5) from the scaled logits s (B, H, Lq, Lk): the soft one-hot's chain of ops */
static pg_tensor *soft_onehot_bias(pg_graph *g, pg_cope *m, pg_tensor *s, pg_tensor *z, const pg_pos_ctx *c)
{
    pg_tensor *gates = pg_sigmoid(g, s); /* (1), 0 where hidden (masked_fill: no gradient there) */
    if (c->mask || c->causal)
        gates = pg_masked_fill(g, gates, hidden(g, c), 0.0);
    return soft_bias(g, positions(g, gates, m->npos), z, m->soft_onehot_temp);
}

/* mod_bias: (B, H, Lq, Lk), docs/pos/cope.md (1)-(5). (4) reads z at p by linear
 * interpolation with the upper index floor p + 1 (not ceil p), so at an integer p the
 * gradient is the right-hand slope z[f + 1] - z[f], a one-sided derivative, where
 * ceil p = floor p (the references) gives 0, which is neither (docs/pos/cope.md). */
static pg_tensor *cope_bias(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                            const pg_pos_ctx *c)
{
    pg_cope *m = (pg_cope *)pm;
    if (!check_call(g, m, q, k, v, c))
        return NULL;
    double out_scale, scale = call_scale(m, c, &out_scale);
    pg_tensor *kg = m->gates == PG_COPE_GATES_VALUE ? v : k;
    pg_tensor *logits = pg_matmul(g, q, kg, false, true); /* (B, H, Lq, Lk), unscaled */
    pg_tensor *z = int_logits(g, m, q);                   /* (3) (B, H, Lq, npos) */
    pg_tensor *bias = NULL;
    if (m->soft_onehot) {
        bias = soft_onehot_bias(g, m, pg_mul_scalar(g, logits, scale), z, c);
        bias = bias && out_scale != 1.0 ? pg_mul_scalar(g, bias, out_scale) : bias;
    } else if (logits && z) {
        bias = pg_cope_interp(g, logits, z, c->mask, c->causal, scale, out_scale);
    }
    if (!bias && !pg_graph_error(g))
        pg_graph_fail(g, "cope: failed for q %s, k %s", SHAPE(q), SHAPE(k));
    return bias;
}

/* The attention with the bias of cope_bias in one op (pg_cope_attention: no Lq x Lk
 * tensor); the soft one-hot (5) is left to mod_bias */
static int cope_attend(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c,
                       pg_tensor **out)
{
    pg_cope *m = (pg_cope *)pm;
    if (m->soft_onehot)
        return 1;
    if (!check_call(g, m, q, k, v, c))
        return -1;
    pg_cope_attn_opts o = {.causal = c->causal,
                           .mask = c->mask,
                           .gates_from_values = m->gates == PG_COPE_GATES_VALUE,
                           .emb_by_position = m->convention == PG_COPE_XT};
    o.scale = call_scale(m, c, &o.out_scale);
    pg_tensor *E = emb_as(g, m, q->dtype);
    *out = E ? pg_cope_attention(g, q, k, v, E, &o) : NULL;
    return *out ? 0 : -1;
}

static const pg_posmod_ops COPE_OPS = {.mod_bias = cope_bias, .attend = cope_attend};

static int check_opts(const char *fn, int64_t head_dim, int64_t max_len, const pg_cope_opts *o, pg_dtype dtype)
{
    if (head_dim < 1) {
        pg_set_error("%s: CoPE acts inside attention and needs head_dim >= 1, got %lld", fn, (long long)head_dim);
        return -1;
    }
    if (!pg_module_dtype_ok(fn, dtype))
        return -1;
    if (o->convention != PG_COPE_RAM && o->convention != PG_COPE_XT) {
        pg_set_error("%s: convention must be PG_COPE_RAM or PG_COPE_XT, got %d", fn, (int)o->convention);
        return -1;
    }
    if (o->gates != PG_COPE_GATES_KEY && o->gates != PG_COPE_GATES_VALUE) {
        pg_set_error("%s: gates must be PG_COPE_GATES_KEY or PG_COPE_GATES_VALUE, got %d", fn, (int)o->gates);
        return -1;
    }
    if (o->nodiv && o->convention == PG_COPE_XT) {
        pg_set_error("%s: nodiv is an option of the RAM convention (x-transformers always adds the bias after "
                     "the scaling)", fn);
        return -1;
    }
    if (!o->soft_onehot && o->soft_onehot_temp != 0) {
        pg_set_error("%s: soft_onehot_temp is %g but soft_onehot is off (set soft_onehot, or leave the "
                     "temperature 0)", fn, o->soft_onehot_temp);
        return -1;
    }
    double t = o->soft_onehot_temp; /* 1 / t must be finite too: (5) divides by it */
    if (o->soft_onehot && !(t == 0 || (t > 0 && isfinite(t) && isfinite(1.0 / t)))) {
        pg_set_error("%s: soft_onehot_temp must be a finite temperature > 0 (0: x-transformers' 0.05), got %g", fn,
                     t);
        return -1;
    }
    if (o->npos < 0 || max_len < 0) {
        pg_set_error("%s: need npos >= 1 (0: the default) and max_len >= 0, got npos %lld, max_len %lld", fn,
                     (long long)o->npos, (long long)max_len);
        return -1;
    }
    if (o->npos == 0 && o->convention == PG_COPE_RAM && max_len < 1) {
        pg_set_error("%s: npos is unset and there is no max_len: the RAM convention's default npos is the block "
                     "size + 1 (set opts.npos or max_len)", fn);
        return -1;
    }
    return 0;
}

pg_posmod *pg_cope_new(int64_t head_dim, int64_t max_len, const pg_cope_opts *o, pg_dtype dtype)
{
    const char *fn = "pg_cope_new";
    static const pg_cope_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
    if (check_opts(fn, head_dim, max_len, o, dtype) != 0)
        return NULL;
    int64_t npos = o->npos ? o->npos : o->convention == PG_COPE_RAM ? max_len + 1 : 16;
    if (npos > (int64_t)(PG_MAX_TENSOR_BYTES / sizeof(double)) / head_dim) {
        pg_set_error("%s: npos %lld times head_dim %lld is too large", fn, (long long)npos, (long long)head_dim);
        return NULL;
    }
    pg_cope *m = pg_posmod_alloc(sizeof *m, "CoPE", &COPE_OPS, NULL, fn);
    if (!m)
        return NULL;
    m->head_dim = head_dim;
    m->npos = npos;
    m->convention = o->convention;
    m->nodiv = o->nodiv;
    m->gates = o->gates;
    m->soft_onehot = o->soft_onehot;
    m->soft_onehot_temp = !o->soft_onehot ? 0 : o->soft_onehot_temp != 0 ? o->soft_onehot_temp : 0.05;
    /* zeros, as both references */
    m->pos_emb = o->convention == PG_COPE_RAM
                     ? pg_module_new_param(&m->pm.base, "pos_emb", dtype, PG_SHAPE(1, head_dim, npos))
                     : pg_module_new_param(&m->pm.base, "pos_emb", dtype, PG_SHAPE(npos, head_dim));
    if (!m->pos_emb) {
        return pg_module_fail(&m->pm.base, NULL);
    }
    return &m->pm;
}

pg_posmod *pg_posmod_make_cope(const pg_posmod_args *a)
{
    if (!pg_posmod_args_ok("pg_posmod_make_cope", a))
        return NULL;
    if (a->head_dim < 1) {
        pg_set_error("pg_posmod_make_cope: CoPE acts inside attention and needs head_dim >= 1 (args.head_dim %lld)",
                     (long long)a->head_dim);
        return NULL;
    }
    return pg_cope_new(a->head_dim, a->max_len, a->opts, a->dtype);
}
