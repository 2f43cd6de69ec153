/* The one check of an attention call's operands (autograd/attn_check.h). */
#include "attn_check.h"

#include "op_util.h"

/* The call's sizes, from q, k (PG_ATTN_HEADS, PG_ATTN_SAME) or as given. */
typedef struct sizes {
    int64_t B, H, Lq, Lk, D; /* D: the head dim (0 when unknown) */
    pg_dtype dtype;
} sizes;

/* q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv) of one float dtype, every dim positive */
static bool heads_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_tensor *k, const pg_tensor *v,
                     sizes *s)
{
    bool ok = pg_dtype_is_float(q->dtype) && q->dtype == k->dtype && q->dtype == v->dtype && q->ndim == 4 &&
              k->ndim == 4 && v->ndim == 4;
    for (int d = 0; ok && d < 2; d++)
        ok = k->shape[d] == q->shape[d] && v->shape[d] == q->shape[d];
    ok = ok && k->shape[3] == q->shape[3] && v->shape[2] == k->shape[2];
    for (int d = 0; ok && d < 4; d++) /* softmax over an empty key sequence is undefined */
        ok = q->shape[d] > 0 && k->shape[d] > 0 && v->shape[d] > 0;
    if (!ok) {
        pg_graph_fail(g,
                      "%s: expected q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv) of one float dtype, all "
                      "dims positive, got q %s, k %s, v %s",
                      fn, SHAPE(q), SHAPE(k), SHAPE(v));
        return false;
    }
    *s = (sizes){q->shape[0], q->shape[1], q->shape[2], k->shape[2], q->shape[3], q->dtype};
    return true;
}

/* q, k, v one shape (B, L, d) or (B, H, L, d), one float dtype, not empty: B = the packed rows */
static bool same_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_tensor *k, const pg_tensor *v,
                    sizes *s)
{
    if ((q->ndim != 3 && q->ndim != 4) || !pg_same_shape(q, k) || !pg_same_shape(q, v) ||
        !pg_dtype_is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype) {
        pg_graph_fail(g, "%s: q, k, v must share one shape (B, L, d) or (B, H, L, d) and a float dtype, got %s %s, "
                      "%s %s, %s %s",
                      fn, SHAPE(q), pg_dtype_name(q->dtype), SHAPE(k), pg_dtype_name(k->dtype), SHAPE(v),
                      pg_dtype_name(v->dtype));
        return false;
    }
    int nd = q->ndim;
    int64_t n = q->shape[nd - 2], d = q->shape[nd - 1], b = q->numel / (n * d > 0 ? n * d : 1);
    if (n < 1 || d < 1 || b < 1) {
        pg_graph_fail(g, "%s: empty input %s", fn, SHAPE(q));
        return false;
    }
    *s = (sizes){b, nd == 4 ? q->shape[1] : 1, n, n, q->shape[nd - 1], q->dtype};
    return true;
}

static bool sizes_ok(pg_graph *g, const char *fn, const pg_attn_operands *a, sizes *s)
{
    if (a->B < 1 || a->Lq < 1 || a->Lk < 1 || a->H < 0 || a->head_dim < 0) {
        pg_graph_fail(g, "%s: bad sizes B %lld, Lq %lld, Lk %lld, heads %lld, head_dim %lld", fn, (long long)a->B,
                      (long long)a->Lq, (long long)a->Lk, (long long)a->H, (long long)a->head_dim);
        return false;
    }
    *s = (sizes){a->B, a->H, a->Lq, a->Lk, a->head_dim, a->dtype};
    return true;
}

static bool mask_ok(pg_graph *g, const char *fn, const pg_tensor *m, bool packed, const sizes *s)
{
    if (!m)
        return true;
    if (packed) {
        int64_t B0 = m->ndim == 2 ? m->shape[0] : 0;
        if (m->dtype != PG_BOOL || m->ndim != 2 || m->shape[1] != s->Lk || B0 < 1 || s->B % B0 != 0) {
            pg_graph_fail(g, "%s: mask must be (B, %lld) bool with B dividing the %lld packed rows, got %s %s", fn,
                          (long long)s->Lk, (long long)s->B, SHAPE(m), pg_dtype_name(m->dtype));
            return false;
        }
    } else if (m->dtype != PG_BOOL || m->ndim != 2 || m->shape[0] != s->B || m->shape[1] != s->Lk) {
        pg_graph_fail(g, "%s: mask is %s, expected a bool key mask (B, Lk) = (%lld, %lld)", fn, SHAPE(m),
                      (long long)s->B, (long long)s->Lk);
        return false;
    }
    return true;
}

/* pos is NULL or (B, Lp) of f32/f64/i64 with Lp <= L */
static bool pos_ok(pg_graph *g, const char *fn, const char *name, const pg_tensor *pos, int64_t B, int64_t L)
{
    if (!pos)
        return true;
    bool dtype_ok = pos->dtype == PG_F32 || pos->dtype == PG_F64 || pos->dtype == PG_I64;
    if (!dtype_ok || pos->ndim != 2 || pos->shape[0] != B || pos->shape[1] > L) {
        pg_graph_fail(g, "%s: %s is %s, expected (B, Lp) = (%lld, <= %lld) of f32, f64 or i64", fn, name, SHAPE(pos),
                      (long long)B, (long long)L);
        return false;
    }
    return true;
}

/* b broadcasts to (B, H, Lq, Lk) without growing it: at most 4 dims, each 1 or equal */
static bool bias_ok(pg_graph *g, const char *fn, const char *name, const pg_tensor *b, const sizes *s)
{
    if (!b)
        return true;
    const int64_t want[4] = {s->B, s->H, s->Lq, s->Lk};
    bool ok = b->dtype == s->dtype && b->ndim <= 4;
    for (int d = 0; ok && d < b->ndim; d++) {
        int64_t n = b->shape[d], t = want[d + 4 - b->ndim];
        ok = n == 1 || n == t;
    }
    if (!ok)
        pg_graph_fail(g, "%s: %s is %s, expected %s broadcastable to (B, H, Lq, Lk) = (%lld, %lld, %lld, %lld)", fn,
                      name ? name : "bias", SHAPE(b), pg_dtype_name(s->dtype), (long long)want[0], (long long)want[1],
                      (long long)want[2], (long long)want[3]);
    return ok;
}

static bool dist_bias_ok(pg_graph *g, const char *fn, const pg_tensor *b, const sizes *s)
{
    if (b && (b->dtype != s->dtype || b->ndim != 2 || b->shape[0] != s->H || b->shape[1] != s->Lq + s->Lk - 1)) {
        pg_graph_fail(g, "%s: dist_bias is %s, expected %s (H, Lq + Lk - 1) = (%lld, %lld) for Lq %lld, Lk %lld", fn,
                      SHAPE(b), pg_dtype_name(s->dtype), (long long)s->H, (long long)(s->Lq + s->Lk - 1),
                      (long long)s->Lq, (long long)s->Lk);
        return false;
    }
    return true;
}

/* one side of the separable bias, sep_q (B, H, Lq) or sep_k (B, H, Lk) of the dtype, or NULL */
static bool sep_side_ok(pg_graph *g, const char *fn, const char *name, const pg_tensor *t, int64_t L, const char *Ln,
                        const sizes *s)
{
    if (!t || (t->dtype == s->dtype && t->ndim == 3 && t->shape[0] == s->B && t->shape[1] == s->H && t->shape[2] == L))
        return true;
    pg_graph_fail(g, "%s: %s is %s, expected %s (B, H, %s) = (%lld, %lld, %lld)", fn, name, SHAPE(t),
                  pg_dtype_name(s->dtype), Ln, (long long)s->B, (long long)s->H, (long long)L);
    return false;
}

/* the separable bias: sep_q (B, H, Lq) and sep_k (B, H, Lk), either or both */
static bool sep_ok(pg_graph *g, const char *fn, const pg_tensor *sq, const pg_tensor *sk, const sizes *s)
{
    return sep_side_ok(g, fn, "sep_q", sq, s->Lq, "Lq", s) && sep_side_ok(g, fn, "sep_k", sk, s->Lk, "Lk", s);
}

/* the relative keys: rel_q (B, H, Lq, D) and rel_k (H, Lq + Lk - 1, D) of the dtype, both or neither */
static bool rel_ok(pg_graph *g, const char *fn, const pg_tensor *rq, const pg_tensor *rk, const sizes *s)
{
    if (!rq && !rk)
        return true;
    const int64_t wq[4] = {s->B, s->H, s->Lq, s->D}, wk[3] = {s->H, s->Lq + s->Lk - 1, s->D};
    bool ok = rq && rk && s->D > 0 && rq->dtype == s->dtype && rk->dtype == s->dtype && rq->ndim == 4 && rk->ndim == 3;
    for (int d = 0; ok && d < 4; d++)
        ok = rq->shape[d] == wq[d] && (d == 3 || rk->shape[d] == wk[d]);
    if (!ok)
        pg_graph_fail(g, "%s: rel_q, rel_k are %s, %s, expected %s (B, H, Lq, Dh) = (%lld, %lld, %lld, %lld) and "
                         "(H, Lq + Lk - 1, Dh) = (%lld, %lld, %lld), both or neither", fn, rq ? SHAPE(rq) : "NULL",
                      rk ? SHAPE(rk) : "NULL", pg_dtype_name(s->dtype), (long long)s->B, (long long)s->H,
                      (long long)s->Lq, (long long)s->D, (long long)wk[0], (long long)wk[1], (long long)wk[2]);
    return ok;
}

int pg_attn_check(pg_graph *g, const char *fn, const pg_attn_operands *a)
{
    if (!fn || !a) {
        pg_graph_fail(g, "pg_attn_check: %s is NULL", fn ? "operands" : "fn (the caller's name for messages)");
        return -1;
    }
    if (a->layout != PG_ATTN_HEADS && a->layout != PG_ATTN_SAME && a->layout != PG_ATTN_SIZES) {
        pg_graph_fail(g, "%s: pg_attn_check: unknown layout %d", fn, (int)a->layout);
        return -1;
    }
    sizes s;
    bool ok;
    if (a->layout == PG_ATTN_SIZES) {
        ok = sizes_ok(g, fn, a, &s);
    } else {
        ok = arg_present(g, fn, "q", a->q) && arg_present(g, fn, "k", a->k) && arg_present(g, fn, "v", a->v);
        ok = ok && (a->layout == PG_ATTN_HEADS ? heads_ok(g, fn, a->q, a->k, a->v, &s)
                                               : same_ok(g, fn, a->q, a->k, a->v, &s));
    }
    ok = ok && mask_ok(g, fn, a->mask, a->mask_packed, &s);
    ok = ok && pos_ok(g, fn, a->self_attn ? "pos" : "pos_q", a->pos_q, s.B, s.Lq) &&
         pos_ok(g, fn, a->self_attn ? "pos" : "pos_k", a->pos_k, s.B, s.Lk);
    ok = ok && bias_ok(g, fn, a->bias_name, a->bias, &s) && dist_bias_ok(g, fn, a->dist_bias, &s);
    ok = ok && sep_ok(g, fn, a->sep_q, a->sep_k, &s) && rel_ok(g, fn, a->rel_q, a->rel_k, &s);
    return ok ? 0 : -1;
}
