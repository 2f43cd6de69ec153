/* Transformer-XL relative position bias (nn/pos_xl.h; docs/pos/xl.md). */
#include "pos_xl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../tensor/shape_util.h"

static const pg_posmod_ops XL_OPS;

pg_xl_opts pg_xl_bio(void)
{
    pg_xl_opts o = {0};
    o.interleaved = true;
    o.proj_bias = true;
    o.unscaled_pos = true;
    return o;
}

pg_xl *pg_xl_new(int64_t heads, int64_t head_dim, const pg_xl_opts *opts, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_xl_new";
    pg_xl_opts o = opts ? *opts : (pg_xl_opts){0};
    if (!pg_dtype_is_float(dtype) || !r) {
        pg_set_error("%s: need a float dtype and a generator (dtype %s, generator %s)", fn, pg_dtype_name(dtype),
                     r ? "set" : "NULL");
        return NULL;
    }
    if (heads < 1 || head_dim < 1) {
        pg_set_error("%s: need heads >= 1 and head_dim >= 1, got %lld, %lld", fn, (long long)heads,
                     (long long)head_dim);
        return NULL;
    }
    if (o.r_dim == 0)
        o.r_dim = heads * head_dim;
    if (o.r_dim < 2 || o.r_dim % 2) {
        pg_set_error("%s: r_dim must be even and >= 2 (sin / cos pairs), got %lld", fn, (long long)o.r_dim);
        return NULL;
    }
    if (o.divide == 0)
        o.divide = 1.0;
    pg_xl *m = pg_posmod_alloc(sizeof *m, "TransformerXLBias", &XL_OPS, NULL, fn);
    if (!m)
        return NULL;
    m->o = o;
    m->heads = heads;
    m->head_dim = head_dim;
    m->dtype = dtype;
    bool ok = true;
    m->div = pg_pos_div_param(&m->pm, (pg_pos_divide){o.divide, o.learned_div}, dtype, &ok);
    if (ok) {
        m->u = pg_module_new_param_ex(&m->pm.base, "bias_r_w", dtype, PG_SHAPE(heads, head_dim), PG_PARAM_NO_DECAY);
        m->v = pg_module_new_param_ex(&m->pm.base, "bias_r_r", dtype, PG_SHAPE(heads, head_dim), PG_PARAM_NO_DECAY);
        ok = m->u && m->v;
    }
    if (ok) {
        double bound = 1.0 / sqrt((double)head_dim);
        pg_fill_uniform(m->u, r, -bound, bound);
        pg_fill_uniform(m->v, r, -bound, bound);
        m->embed_lin = pg_linear_new(o.r_dim, heads * head_dim, o.proj_bias, dtype, r);
        ok = m->embed_lin && pg_module_add_child(&m->pm.base, "embed_lin", &m->embed_lin->base) == 0;
    }
    if (!ok)
        return pg_module_fail(&m->pm.base, NULL);
    return m;
}

pg_posmod *pg_posmod_make_xl(const pg_posmod_args *a)
{
    if (!pg_posmod_heads("pg_posmod_make_xl", "Transformer-XL", 0, a))
        return NULL;
    int64_t hd = a->head_dim ? a->head_dim : a->dim / a->heads;
    pg_xl *m = pg_xl_new(a->heads, hd, a->opts, a->dtype, a->rng);
    return m ? &m->pm : NULL;
}

/* ---- forward ---------------------------------------------------------------------------- */

pg_tensor *pg_xl_rel_encoding(pg_graph *g, pg_posmod *pm, pg_tensor *d)
{
    const char *fn = "pg_xl_rel_encoding";
    PG_NN_SCRATCH(g, fn, pg_xl_rel_encoding(g, pm, d));
    if (!pm || pm->ops != &XL_OPS) {
        pg_graph_fail(g, "%s: module is %s, expected a TransformerXLBias", fn, pm ? pm->base.type : "NULL");
        return NULL;
    }
    pg_xl *m = (pg_xl *)pm;
    if (!d || d->dtype != m->dtype || d->ndim + 1 >= PG_MAX_DIMS) {
        pg_graph_fail(g, "%s: distances are %s, expected a tensor of the module's dtype %s", fn,
                      d ? SHAPE(d) : "NULL", pg_dtype_name(m->dtype));
        return NULL;
    }
    int64_t half = m->o.r_dim / 2;
    pg_tensor *f = pg_empty(g, m->dtype, PG_SHAPE(half));
    if (!f)
        return NULL;
    for (int64_t i = 0; i < half; i++)
        pg_set(f, i, pow(10000.0, -2.0 * (double)i / (double)m->o.r_dim));
    int nd = d->ndim;
    int64_t shape[PG_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        shape[i] = d->shape[i];
    shape[nd] = 1;
    pg_tensor *s = pg_mul(g, pg_reshape(g, d, nd + 1, shape), f); /* (..., half) */
    s = pg_pos_divide_by(g, s, m->div, m->o.divide);
    pg_tensor *sc[2] = {pg_sin(g, s), pg_cos(g, s)};
    if (!sc[0] || !sc[1])
        return NULL;
    if (!m->o.interleaved)
        return pg_concat(g, 2, sc, nd);
    pg_tensor *st = pg_stack(g, 2, sc, nd + 1); /* (..., half, 2) */
    shape[nd] = m->o.r_dim;
    return pg_reshape(g, st, nd + 1, shape);
}

/* positions of one side: given (B, Lp), differentiable when float and requiring grad,
 * or start .. start + L - 1 as (1, L) */
static pg_tensor *side(pg_graph *g, pg_tensor *pos, int64_t L, double start, pg_dtype dt)
{
    if (!pos)
        return pg_reshape(g, pg_arange(g, dt, start, start + (double)L, 1.0), PG_SHAPE(1, L));
    if (pg_dtype_is_float(pos->dtype) && pos->requires_grad)
        return pg_cast(g, pos, dt);
    return pg_cast(g, pg_detach(g, pos), dt);
}

/* (q + v) . r_ij for qv (Bq, heads, Lq, H): (B', heads, Lq, Lk), zero for un-positioned tokens */
static pg_tensor *pos_term(pg_graph *g, pg_xl *m, pg_tensor *qv, const pg_pos_ctx *c)
{
    int64_t NH = m->heads, H = m->head_dim, Lq = c->Lq, Lk = c->Lk;
    int64_t off = m->o.end_aligned ? Lk - Lq : 0;
    if (!c->pos_q && !c->pos_k) { /* the Lq + Lk - 1 distances off - (Lk - 1) .. off + Lq - 1, then the shift */
        int64_t N = Lq + Lk - 1;
        double dmin = (double)(off - (Lk - 1));
        pg_tensor *d = pg_arange(g, m->dtype, dmin, dmin + (double)N, 1.0);
        pg_tensor *r = pg_linear_forward(g, m->embed_lin, pg_xl_rel_encoding(g, &m->pm, d)); /* (N, NH H) */
        r = pg_permute(g, pg_reshape(g, r, PG_SHAPE(N, NH, H)), (const int[]){1, 2, 0}); /* (NH, H, N) */
        pg_tensor *raw = pg_matmul(g, qv, r, false, false);                               /* (Bq, NH, Lq, N) */
        return pg_rel_shift(g, raw, Lk); /* [a, b] = raw[a, a - b + Lk - 1] */
    }
    pg_tensor *pq = side(g, c->pos_q, Lq, (double)off, m->dtype);
    pg_tensor *pk = side(g, c->pos_k, Lk, 0.0, m->dtype);
    if (!pq || !pk)
        return NULL;
    int64_t Lpq = pq->shape[1], Lpk = pk->shape[1];
    pg_tensor *d = pg_sub(g, pg_reshape(g, pq, PG_SHAPE(pq->shape[0], Lpq, 1)),
                          pg_reshape(g, pk, PG_SHAPE(pk->shape[0], 1, Lpk))); /* (B', Lpq, Lpk) */
    if (!d)
        return NULL;
    int64_t Bd = d->shape[0];
    pg_tensor *r = pg_linear_forward(g, m->embed_lin, pg_xl_rel_encoding(g, &m->pm, d)); /* (B', Lpq, Lpk, NH H) */
    r = pg_reshape(g, r, PG_SHAPE(Bd, Lpq, Lpk, NH, H));
    r = pg_permute(g, r, (const int[]){0, 3, 1, 2, 4}); /* (B', NH, Lpq, Lpk, H) */
    pg_tensor *qp = pg_narrow(g, qv, 2, Lq - Lpq, Lpq);  /* the positioned queries */
    if (!qp)
        return NULL;
    int64_t Bq = qp->shape[0];
    qp = pg_reshape(g, qp, PG_SHAPE(Bq, NH, Lpq, 1, H));
    pg_tensor *bd = pg_matmul(g, qp, r, false, true); /* (B'', NH, Lpq, 1, Lpk) */
    if (!bd)
        return NULL;
    bd = pg_reshape(g, bd, PG_SHAPE(bd->shape[0], NH, Lpq, Lpk));
    return pg_pos_pad_bias(g, bd, Lq, Lk);
}

static double scale_of(const pg_xl *m, const pg_pos_ctx *c)
{
    return c->scale != 0 ? c->scale : 1.0 / sqrt((double)m->head_dim);
}

static bool ctx_ok(pg_graph *g, const char *fn, pg_xl *m, const pg_pos_ctx *c)
{
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return false;
    if (c->dtype != m->dtype || (c->heads != 0 && c->heads != m->heads) ||
        (c->head_dim != 0 && c->head_dim != m->head_dim)) {
        pg_graph_fail(g, "%s: the module has %lld heads of width %lld in %s, the attention %lld heads of width %lld "
                      "in %s",
                      fn, (long long)m->heads, (long long)m->head_dim, pg_dtype_name(m->dtype), (long long)c->heads,
                      (long long)c->head_dim, pg_dtype_name(c->dtype));
        return false;
    }
    return true;
}

static pg_tensor *xl_bias(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)v;
    const char *fn = "TransformerXLBias";
    pg_xl *m = (pg_xl *)pm;
    if (!ctx_ok(g, fn, m, c))
        return NULL;
    int64_t NH = m->heads, H = m->head_dim;
    if (!q || !k || q->ndim != 4 || k->ndim != 4 || q->dtype != m->dtype || k->dtype != m->dtype ||
        q->shape[0] != c->B || q->shape[1] != NH || q->shape[2] != c->Lq || q->shape[3] != H ||
        k->shape[0] != c->B || k->shape[1] != NH || k->shape[2] != c->Lk || k->shape[3] != H) {
        pg_graph_fail(g, "%s: q is %s, k is %s, expected (B, heads, L, head_dim) = (%lld, %lld, %lld / %lld, %lld) "
                      "of %s",
                      fn, q ? SHAPE(q) : "NULL", k ? SHAPE(k) : "NULL", (long long)c->B, (long long)NH,
                      (long long)c->Lq, (long long)c->Lk, (long long)H, pg_dtype_name(m->dtype));
        return NULL;
    }
    double s = scale_of(m, c);
    pg_tensor *u = pg_reshape(g, m->u, PG_SHAPE(NH, 1, H));
    pg_tensor *vv = pg_reshape(g, m->v, PG_SHAPE(NH, 1, H));
    pg_tensor *uk = pg_matmul(g, u, k, false, true); /* (B, NH, 1, Lk) */
    pg_tensor *p = pos_term(g, m, pg_add(g, q, vv), c);
    if (m->o.unscaled_pos)
        return pg_add(g, pg_mul_scalar(g, uk, s), p);
    return pg_mul_scalar(g, pg_add(g, uk, p), s);
}

/* the position-only part: v . r_ij * s (unscaled_pos: without s) */
static pg_tensor *xl_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    const char *fn = "TransformerXLBias";
    pg_xl *m = (pg_xl *)pm;
    if (!ctx_ok(g, fn, m, c))
        return NULL;
    int64_t NH = m->heads, H = m->head_dim;
    pg_tensor *vv = pg_reshape(g, m->v, PG_SHAPE(1, NH, 1, H));
    vv = pg_broadcast_to(g, vv, PG_SHAPE(1, NH, c->Lq, H));
    pg_tensor *p = pos_term(g, m, vv, c);
    if (!m->o.unscaled_pos)
        p = pg_mul_scalar(g, p, scale_of(m, c));
    if (p && p->shape[0] == 1 && !c->pos_q && !c->pos_k)
        p = pg_reshape(g, p, PG_SHAPE(NH, c->Lq, c->Lk));
    return p;
}

/* (q_i + v) . W_R R(pq_i - pk_j) on the band at its explicit positions, qv (b, W, w, H) with
 * row r on head r mod NH: each row's encodings R (b, W w S, r_dim) projected by its own head's
 * rows of W_R (and bias), then one dot per pair: (b, W, w, S). Memory b W w S H. */
static pg_tensor *band_pos_term(pg_graph *g, pg_xl *m, pg_tensor *qv, const pg_pos_band *band)
{
    int64_t NH = m->heads, H = m->head_dim, R = m->o.r_dim, b = qv->shape[0], W = band->W, w = band->w;
    int64_t S = (band->lb + band->lf + 1) * w, P = W * w * S;
    pg_tensor *pq = NULL, *pk = NULL;
    if (pg_pos_band_positions(g, band, b, m->dtype, &pq, &pk) != 0)
        return NULL;
    pg_tensor *dist = pg_sub(g, pg_reshape(g, pq, PG_SHAPE(b, W, w, 1)), pg_reshape(g, pk, PG_SHAPE(b, W, 1, S)));
    pg_tensor *enc = pg_reshape(g, pg_xl_rel_encoding(g, &m->pm, dist), PG_SHAPE(b, P, R));
    pg_tensor *wr = pg_reshape(g, m->embed_lin->weight, PG_SHAPE(1, NH, H, R));
    wr = pg_pos_head_of_row(g, pg_broadcast_to(g, wr, PG_SHAPE(b, NH, H, R))); /* (b, H, R) */
    pg_tensor *r = pg_matmul(g, enc, wr, false, true);                           /* (b, P, H) */
    if (m->embed_lin->bias) {
        pg_tensor *br = pg_reshape(g, m->embed_lin->bias, PG_SHAPE(1, NH, 1, H));
        r = pg_add(g, r, pg_pos_head_of_row(g, pg_broadcast_to(g, br, PG_SHAPE(b, NH, 1, H)))); /* + (b, 1, H) */
    }
    r = pg_reshape(g, r, PG_SHAPE(b, W, w, S, H));
    pg_tensor *p = pg_matmul(g, pg_reshape(g, qv, PG_SHAPE(b, W, w, 1, H)), r, false, true); /* (b, W, w, 1, S) */
    return pg_reshape(g, p, PG_SHAPE(b, W, w, S));
}

/* The bias on LocalAttention's band (pg_posmod_ops.band_bias), (b, W, w, S):
 *   (u . k_j + (q_i + v) . r(i - j)) * s   (unscaled_pos: u . k_j * s + (q_i + v) . r(i - j))
 * with q, k (b, W w, H) as (b / heads, heads, W w, H); u . k_j is put on the band's slots,
 * W_R R is evaluated on the w + S - 1 distances of the band and gathered per (row, slot)
 * (the relative shift of Dai et al., on the band); at explicit positions (band->pq / pk)
 * on each pair's own distance (band_pos_term). */
static pg_tensor *xl_band_bias(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, const pg_pos_band *band,
                               const pg_pos_ctx *c)
{
    const char *fn = "TransformerXLBias";
    pg_xl *m = (pg_xl *)pm;
    if (!ctx_ok(g, fn, m, c))
        return NULL;
    int64_t NH = m->heads, H = m->head_dim;
    if (!q || !k || !band || q->ndim != 3 || !pg_same_shape(q, k) || q->dtype != m->dtype || k->dtype != m->dtype ||
        q->shape[0] % NH != 0 || q->shape[2] != H || q->shape[1] != band->W * band->w) {
        pg_graph_fail(g, "%s: Transformer-XL has %lld heads of width %lld in %s; the band input is q %s, k %s, "
                      "expected (rows, W w, %lld) with rows = batch x heads%s",
                      fn, (long long)NH, (long long)H, pg_dtype_name(m->dtype), q ? SHAPE(q) : "NULL",
                      k ? SHAPE(k) : "NULL", (long long)H, band ? "" : " (band is NULL)");
        return NULL;
    }
    int64_t b = q->shape[0], Lp = q->shape[1], W = band->W, w = band->w, lb = band->lb;
    int64_t S = (lb + band->lf + 1) * w, D = w + S - 1, dmin = lb * w - (S - 1);
    double s = scale_of(m, c);
    pg_tensor *q4 = pg_reshape(g, q, PG_SHAPE(b / NH, NH, Lp, H)), *k4 = pg_reshape(g, k, PG_SHAPE(b / NH, NH, Lp, H));
    pg_tensor *uk = pg_matmul(g, pg_reshape(g, m->u, PG_SHAPE(NH, 1, H)), k4, false, true); /* (B, NH, 1, L') */
    uk = pg_pos_band_slots(g, pg_reshape(g, uk, PG_SHAPE(b, W, w, 1)), band);               /* (b, W, S, 1) */
    uk = pg_reshape(g, uk, PG_SHAPE(b, W, 1, S));
    if (band->pq || band->pk) { /* explicit positions: r of each pair's own distance */
        pg_tensor *qv = pg_add(g, q4, pg_reshape(g, m->v, PG_SHAPE(NH, 1, H)));
        pg_tensor *p = band_pos_term(g, m, pg_reshape(g, qv, PG_SHAPE(b, W, w, H)), band);
        if (m->o.unscaled_pos)
            return pg_add(g, pg_mul_scalar(g, uk, s), p);
        return pg_mul_scalar(g, pg_add(g, uk, p), s);
    }
    pg_tensor *dist = pg_arange(g, m->dtype, (double)dmin, (double)(dmin + D), 1.0);
    pg_tensor *r = pg_linear_forward(g, m->embed_lin, pg_xl_rel_encoding(g, &m->pm, dist)); /* (D, NH H) */
    r = pg_permute(g, pg_reshape(g, r, PG_SHAPE(D, NH, H)), (const int[]){1, 2, 0});         /* (NH, H, D) */
    pg_tensor *qv = pg_add(g, q4, pg_reshape(g, m->v, PG_SHAPE(NH, 1, H)));
    pg_tensor *raw = pg_reshape(g, pg_matmul(g, qv, r, false, false), PG_SHAPE(b, W, w, D));
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(b, W, w, S));
    if (!raw || !uk || !idx)
        return NULL;
    int64_t *ix = idx->data; /* slot s of row r is at distance r + lb w - s */
    for (int64_t row = 0; row < b * W; row++)
        for (int64_t rr = 0; rr < w; rr++)
            for (int64_t sl = 0; sl < S; sl++)
                ix[(row * w + rr) * S + sl] = rr + lb * w - sl - dmin;
    pg_tensor *p = pg_gather(g, raw, 3, idx); /* (b, W, w, S) */
    if (m->o.unscaled_pos)
        return pg_add(g, pg_mul_scalar(g, uk, s), p);
    return pg_mul_scalar(g, pg_add(g, uk, p), s);
}

/* The kernel's relative keys (NH, Lq + Lk - 1, H): r_k[t] = W_R R(t - (Lk - 1) + off), the
 * distances of the kernel's index t (off = Lk - Lq when end_aligned) */
static pg_tensor *kernel_keys(pg_graph *g, pg_xl *m, const pg_pos_ctx *c)
{
    int64_t NH = m->heads, H = m->head_dim, N = c->Lq + c->Lk - 1;
    double dmin = (double)((m->o.end_aligned ? c->Lk - c->Lq : 0) - (c->Lk - 1));
    pg_tensor *d = pg_arange(g, m->dtype, dmin, dmin + (double)N, 1.0);
    pg_tensor *rk = pg_linear_forward(g, m->embed_lin, pg_xl_rel_encoding(g, &m->pm, d)); /* (N, NH H) */
    return pg_permute(g, pg_reshape(g, rk, PG_SHAPE(N, NH, H)), (const int[]){1, 0, 2});
}

/* The bias in the fused kernel's form (pg_posmod_ops.rel_bias), default positions:
 *   r->q = q_i + v, r->k = kernel_keys, r->scale = s (unscaled_pos: 1),
 *   r->e = -s u . k_j (the content term u . k_j s as a key-side separable bias). */
static int xl_rel_bias(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, const pg_pos_ctx *c, pg_pos_rel *r)
{
    pg_xl *m = (pg_xl *)pm;
    if (!ctx_ok(g, "TransformerXLBias", m, c)) /* heads, widths, dtype the context names: an error */
        return -1;
    if (!r || !q || !k) {
        pg_graph_fail(g, "TransformerXLBias: rel_bias: %s is NULL", !r ? "result" : !q ? "q" : "k");
        return -1;
    }
    int64_t NH = m->heads, H = m->head_dim, Lq = c->Lq, Lk = c->Lk;
    if (c->pos_q || c->pos_k || c->dtype != m->dtype || q->dtype != m->dtype || k->dtype != m->dtype ||
        q->ndim != 4 || k->ndim != 4 || q->shape[1] != NH || k->shape[1] != NH || q->shape[2] != Lq ||
        k->shape[2] != Lk || q->shape[3] != H || k->shape[3] != H)
        return 1; /* q, k not of this module's heads (context without heads) or positions: another path */
    double s = scale_of(m, c);
    r->k = kernel_keys(g, m, c);
    r->q = pg_add(g, q, pg_reshape(g, m->v, PG_SHAPE(NH, 1, H))); /* (B, NH, Lq, H) */
    pg_tensor *uk = pg_matmul(g, pg_reshape(g, m->u, PG_SHAPE(NH, 1, H)), k, false, true); /* (B, NH, 1, Lk) */
    r->e = pg_mul_scalar(g, pg_reshape(g, uk, PG_SHAPE(k->shape[0], NH, Lk)), -s);
    r->scale = m->o.unscaled_pos ? 1.0 : s;
    return r->k && r->q && r->e ? 0 : -1;
}

/* The same for the kernel reading q in place (pg_posmod_ops.rel_keys), default positions: its
 * queries q_i + u in both products (r->q_shift = u), r->k = kernel_keys, r->scale = rs (s;
 * unscaled_pos: 1), and r->dist[h, t] = rs (v - u) . r_k[t], so that the logit is
 *   s (q_i + u) . k_j + rs (q_i + u) . r_k[t] + rs (v - u) . r_k[t]
 *     = s u . k_j + s q_i . k_j + rs (q_i + v) . r_k[t]          (Dai et al. eq. 2, as xl_bias) */
static int xl_rel_keys(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c, pg_pos_rel *r)
{
    pg_xl *m = (pg_xl *)pm;
    if (!ctx_ok(g, "TransformerXLBias", m, c))
        return -1;
    if (!r) {
        pg_graph_fail(g, "TransformerXLBias: rel_keys: result is NULL");
        return -1;
    }
    if (c->pos_q || c->pos_k || c->heads != m->heads || c->head_dim != m->head_dim)
        return 1; /* positions, or a context without heads: rel_bias's call */
    int64_t NH = m->heads, H = m->head_dim, N = c->Lq + c->Lk - 1;
    double rs = m->o.unscaled_pos ? 1.0 : scale_of(m, c);
    r->k = kernel_keys(g, m, c);
    pg_tensor *vu = pg_reshape(g, pg_sub(g, m->v, m->u), PG_SHAPE(NH, 1, H));
    r->dist = pg_mul_scalar(g, pg_reshape(g, pg_matmul(g, vu, r->k, false, true), PG_SHAPE(NH, N)), rs);
    r->q_shift = m->u;
    r->scale = rs;
    return r->k && r->dist ? 0 : -1;
}

static const pg_posmod_ops XL_OPS = {.mod_bias = xl_bias, .bias_table = xl_table, .band_bias = xl_band_bias,
                                     .rel_bias = xl_rel_bias, .rel_keys = xl_rel_keys};
