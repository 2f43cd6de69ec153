/* Shaw-style learned position embeddings in the attention logits: AbsPosEmb1D,
 * RelPosEmb1D (shared or per-head tables) with AI Summer's relative_to_absolute,
 * and RelPosEmb2D on any H x W map (docs/semantics.md §5, §7). nn/pos_rel.h
 * and docs/pos/relative.md describe the semantics. */
#include "pos_rel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../tensor/shape_util.h"

typedef enum { ABS1D = 0, REL1D = 1, REL2D = 2 } posrel_kind;

static const char *const KIND_NAME[] = {"abs1d", "rel1d", "rel2d"};
static const char *const TYPE_NAME[] = {"AbsPosEmb1D", "RelPosEmb1D", "RelPosEmb2D"};

typedef struct posrel {
    pg_posmod pm;
    posrel_kind kind;
    int64_t tokens;   /* abs1d, rel1d */
    int64_t hgt, wid; /* rel2d map */
    int64_t d;        /* dim_head */
    int64_t heads;    /* 0: shared tables */
    bool scaled, aisummer;
    pg_tensor *t0, *t1; /* abs1d: E; rel1d: R; rel2d: Rw, Rh */
} posrel;

/* ---- relative_to_absolute ------------------------------------------------------------ */

pg_tensor *pg_rel_to_abs(pg_graph *g, pg_tensor *x)
{
    const char *fn = "pg_rel_to_abs";
    PG_NN_SCRATCH(g, fn, pg_rel_to_abs(g, x));
    if (!x || x->ndim < 2 || x->ndim > 7 || x->shape[x->ndim - 1] != 2 * x->shape[x->ndim - 2] - 1 ||
        x->shape[x->ndim - 2] < 1) {
        pg_graph_fail(g, "%s: x is %s, expected (..., l, 2l - 1) with l >= 1", fn, x ? SHAPE(x) : "NULL");
        return NULL;
    }
    int nd = x->ndim;
    int64_t l = x->shape[nd - 2], shp[8];
    for (int i = 0; i < nd - 2; i++)
        shp[i] = x->shape[i];
    /* one zero column: (..., l, 2l); flattened: (..., 2l^2); l - 1 zeros more: (..., (l + 1)(2l - 1)) */
    pg_tensor *y = pg_pad(g, x, nd - 1, 0, 1, 0.0);
    shp[nd - 2] = 2 * l * l;
    y = pg_reshape(g, y, nd - 1, shp);
    y = pg_pad(g, y, nd - 2, 0, l - 1, 0.0);
    shp[nd - 2] = l + 1;
    shp[nd - 1] = 2 * l - 1;
    y = pg_reshape(g, y, nd, shp); /* row i is x's row i shifted left by i */
    y = pg_narrow(g, y, nd - 2, 0, l);
    return pg_narrow(g, y, nd - 1, l - 1, l);
}

/* ---- helpers ------------------------------------------------------------------------- */

/* positions of one side as (B, Lp) i64; float positions are refused */
static pg_tensor *int_pos(pg_graph *g, const posrel *p, const char *side, pg_tensor *pos, int64_t B, int64_t L)
{
    if (pos && pos->dtype != PG_I64) {
        pg_graph_fail(g, "%s: %s is %s: positions index a learned table and must be i64 (float positions are "
                         "not supported)", KIND_NAME[p->kind], side, SHAPE(pos));
        return NULL;
    }
    return pg_pos_resolve(g, pos, B, L, PG_I64);
}

/* x[b, h, i, idx[b, i, j]] for x = q . table^T over the table rows [lo, hi]:
 * q (B, Hh, Lq, d), table (n, d) or (Hh, n, d), idx (B, Lq, Lk) row numbers -> (B, Hh, Lq, Lk) */
static pg_tensor *rel_term(pg_graph *g, pg_tensor *q, pg_tensor *table, const int64_t *idx, int64_t Lq, int64_t Lk)
{
    int64_t B = q->shape[0], Hh = q->shape[1], n = B * Lq * Lk;
    int64_t lo = idx[0], hi = idx[0];
    for (int64_t t = 1; t < n; t++) {
        lo = idx[t] < lo ? idx[t] : lo;
        hi = idx[t] > hi ? idx[t] : hi;
    }
    pg_tensor *rows = pg_narrow(g, table, table->ndim - 2, lo, hi - lo + 1);
    pg_tensor *x = pg_matmul(g, q, rows, false, true); /* (B, Hh, Lq, hi - lo + 1) */
    pg_tensor *ix = pg_empty(g, PG_I64, PG_SHAPE(B, Hh, Lq, Lk));
    if (!x || !ix)
        return NULL;
    int64_t *o = pg_i64(ix);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hh; h++)
            for (int64_t t = 0; t < Lq * Lk; t++)
                o[(b * Hh + h) * Lq * Lk + t] = idx[b * Lq * Lk + t] - lo;
    return pg_gather(g, x, 3, ix);
}

/* ---- the bias ------------------------------------------------------------------------- */

/* q (B, heads, Lq, dim_head) of the table's dtype (heads the module's when it has its own
 * tables), else false after pg_graph_fail naming the kind */
static bool q_ok(pg_graph *g, const posrel *p, const pg_tensor *q, const pg_pos_ctx *c)
{
    if (q && q->ndim == 4 && q->dtype == p->t0->dtype && q->shape[0] == c->B && q->shape[2] == c->Lq &&
        q->shape[3] == p->d && (p->heads == 0 || q->shape[1] == p->heads))
        return true;
    char want[64];
    if (p->heads > 0)
        snprintf(want, sizeof want, "%lld", (long long)p->heads);
    else
        snprintf(want, sizeof want, "H");
    pg_graph_fail(g, "%s: q is %s, expected (B, heads, Lq, dim_head) = (%lld, %s, %lld, %lld) of %s",
                  KIND_NAME[p->kind], q ? SHAPE(q) : "NULL", (long long)c->B, want, (long long)c->Lq,
                  (long long)p->d, pg_dtype_name(p->t0->dtype));
    return false;
}

static pg_tensor *posrel_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                              const pg_pos_ctx *c)
{
    (void)k, (void)v;
    posrel *p = (posrel *)m;
    const char *fn = KIND_NAME[p->kind];
    if (!q_ok(g, p, q, c))
        return NULL;
    int64_t B = c->B, Hh = q->shape[1], Lq = c->Lq, Lk = c->Lk;
    bool defaults = !c->pos_q && !c->pos_k;
    pg_tensor *pq = int_pos(g, p, c->self_attn ? "pos" : "pos_q", c->pos_q, B, Lq);
    pg_tensor *pk = pq ? int_pos(g, p, c->self_attn ? "pos" : "pos_k", c->pos_k, B, Lk) : NULL;
    if (!pq || !pk)
        return NULL;
    int64_t Lpq = pq->shape[1], Lpk = pk->shape[1];
    const int64_t *iq = pg_i64(pq), *ik = pg_i64(pk);
    if (Lpq == 0 || Lpk == 0) /* no positioned query or key: no positional term */
        return pg_zeros(g, q->dtype, PG_SHAPE(B, Hh, Lq, Lk));
    pg_tensor *qq = Lpq < Lq ? pg_narrow(g, q, 2, Lq - Lpq, Lpq) : q; /* the positioned queries */
    pg_tensor *bias = NULL;

    if (p->kind == ABS1D) {
        if (defaults && Lk > p->tokens) {
            pg_graph_fail(g, "%s: %lld keys but the table holds %lld positions (tokens)", fn, (long long)Lk,
                          (long long)p->tokens);
            return NULL;
        }
        for (int64_t t = 0; t < B * Lpk; t++)
            if (ik[t] < 0 || ik[t] >= p->tokens) {
                pg_graph_fail(g, "%s: key position %lld (batch %lld, index %lld) is outside the table [0, %lld)", fn,
                              (long long)ik[t], (long long)(t / Lpk), (long long)(t % Lpk), (long long)p->tokens);
                return NULL;
            }
        pg_tensor *e;
        if (!c->pos_k)
            e = pg_narrow(g, p->t0, 0, 0, Lk); /* (Lk, d) */
        else
            e = pg_reshape(g, pg_embedding(g, p->t0, pk), PG_SHAPE(B, 1, Lpk, p->d));
        bias = pg_matmul(g, qq, e, false, true);
    } else if (p->kind == REL1D) {
        int64_t T = p->tokens;
        if (defaults && Lq == Lk) { /* the whole table's middle, re-indexed by relative_to_absolute */
            if (Lq > T) {
                pg_graph_fail(g, "%s: sequence length %lld but the table covers distances up to %lld (tokens %lld)",
                              fn, (long long)Lq, (long long)(T - 1), (long long)T);
                return NULL;
            }
            pg_tensor *rows = pg_narrow(g, p->t0, p->t0->ndim - 2, T - Lq, 2 * Lq - 1);
            bias = pg_rel_to_abs(g, pg_matmul(g, qq, rows, false, true));
        } else {
            pg_tensor *ix = pg_empty(g, PG_I64, PG_SHAPE(B, Lpq, Lpk));
            if (!ix)
                return NULL;
            int64_t *o = pg_i64(ix);
            for (int64_t b = 0; b < B; b++)
                for (int64_t i = 0; i < Lpq; i++)
                    for (int64_t j = 0; j < Lpk; j++) {
                        int64_t dist = ik[b * Lpk + j] - iq[b * Lpq + i]; /* key - query */
                        if (dist <= -T || dist >= T) {
                            pg_graph_fail(g, "%s: distance key - query = %lld (batch %lld, query %lld, key %lld) is "
                                             "outside the table's range [%lld, %lld] (tokens %lld)",
                                          fn, (long long)dist, (long long)b, (long long)(i + Lq - Lpq),
                                          (long long)(j + Lk - Lpk), (long long)(1 - T), (long long)(T - 1),
                                          (long long)T);
                            return NULL;
                        }
                        o[(b * Lpq + i) * Lpk + j] = dist + T - 1;
                    }
            bias = rel_term(g, qq, p->t0, o, Lpq, Lpk);
        }
    } else { /* REL2D */
        int64_t Hm = p->hgt, Wm = p->wid, cells = Hm * Wm;
        if (defaults && (Lq > cells || Lk > cells)) {
            pg_graph_fail(g, "%s: %lld queries / %lld keys but the %lld x %lld map has %lld cells", fn, (long long)Lq,
                          (long long)Lk, (long long)Hm, (long long)Wm, (long long)cells);
            return NULL;
        }
        const int64_t *sides[2] = {iq, ik};
        int64_t lens[2] = {B * Lpq, B * Lpk};
        for (int s = 0; s < 2; s++)
            for (int64_t t = 0; t < lens[s]; t++)
                if (sides[s][t] < 0 || sides[s][t] >= cells) {
                    pg_graph_fail(g, "%s: %s position %lld (batch %lld) is outside the %lld x %lld map [0, %lld)", fn,
                                  s ? "key" : "query", (long long)sides[s][t], (long long)(t / (s ? Lpk : Lpq)),
                                  (long long)Hm, (long long)Wm, (long long)cells);
                    return NULL;
                }
        pg_tensor *ixw = pg_empty(g, PG_I64, PG_SHAPE(B, Lpq, Lpk)), *ixh = pg_empty(g, PG_I64, PG_SHAPE(B, Lpq, Lpk));
        if (!ixw || !ixh)
            return NULL;
        int64_t *ow = pg_i64(ixw), *oh = pg_i64(ixh);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < Lpq; i++)
                for (int64_t j = 0; j < Lpk; j++) {
                    int64_t a = iq[b * Lpq + i], z = ik[b * Lpk + j];
                    ow[(b * Lpq + i) * Lpk + j] = z % Wm - a % Wm + Wm - 1; /* column offset u - s */
                    oh[(b * Lpq + i) * Lpk + j] = z / Wm - a / Wm + Hm - 1; /* row offset t - r */
                }
        if (p->aisummer) {
            if (!defaults || Lq != cells || Lk != cells) {
                pg_graph_fail(g, "%s: the aisummer form needs default positions and Lq = Lk = %lld (the whole map), "
                                 "got Lq %lld, Lk %lld%s",
                              fn, (long long)cells, (long long)Lq, (long long)Lk,
                              defaults ? "" : " and explicit positions");
                return NULL;
            }
            /* q of the transposed cell: qT[(r, s)] = q[(s, r)]; both terms use the column offset */
            pg_tensor *qt = pg_reshape(g, qq, PG_SHAPE(B, Hh, Hm, Wm, p->d));
            qt = pg_permute(g, qt, (const int[]){0, 1, 3, 2, 4});
            qt = pg_reshape(g, qt, PG_SHAPE(B, Hh, cells, p->d));
            bias = pg_add(g, rel_term(g, qq, p->t0, ow, Lpq, Lpk), rel_term(g, qt, p->t1, ow, Lpq, Lpk));
        } else {
            bias = pg_add(g, rel_term(g, qq, p->t0, ow, Lpq, Lpk), rel_term(g, qq, p->t1, oh, Lpq, Lpk));
        }
    }
    bias = pg_pos_pad_bias(g, bias, Lq, Lk); /* zero rows / columns for un-positioned tokens */
    if (bias && p->scaled)
        bias = pg_mul_scalar(g, bias, c->scale);
    return bias;
}

/* whether the fused kernel's form serves this call: default positions, Lq = Lk, and a
 * scale given when the table is scaled by it */
static bool rel1d_fused_call(const posrel *p, const pg_pos_ctx *c)
{
    return !c->pos_q && !c->pos_k && c->Lq == c->Lk && !(p->scaled && c->scale == 0);
}

/* rel1d's relative keys for the fused kernel (pg_posmod_ops.rel_keys) at default positions,
 * Lq = Lk = L <= tokens: q_i . R[j - i + T - 1] is q_i against the relative key of the
 * kernel's index t = i - j + L - 1, rel_k[t] = R[T + L - 2 - t] (the table's middle
 * 2L - 1 rows, reversed; a shared table repeated over the heads); r->q NULL (q itself).
 * 1 (another path) with positions or Lq != Lk. */
static int rel1d_rel_keys(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rel *r)
{
    posrel *p = (posrel *)m;
    if (!r || !rel1d_fused_call(p, c))
        return r ? 1 : -1;
    int64_t T = p->tokens, L = c->Lq, N = 2 * L - 1, H = p->heads > 0 ? p->heads : c->heads;
    if (c->dtype != p->t0->dtype || H < 1 || (c->head_dim != 0 && c->head_dim != p->d)) {
        pg_graph_fail(g, "rel1d: the attention has %lld heads of width %lld in %s, the module a table of width %lld "
                      "in %s", (long long)c->heads, (long long)c->head_dim, pg_dtype_name(c->dtype), (long long)p->d,
                      pg_dtype_name(p->t0->dtype));
        return -1;
    }
    if (L > T) {
        pg_graph_fail(g, "rel1d: sequence length %lld but the table covers distances up to %lld (tokens %lld)",
                      (long long)L, (long long)(T - 1), (long long)T);
        return -1;
    }
    int64_t ax = p->t0->ndim - 2;
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(N));
    for (int64_t t = 0; idx && t < N; t++)
        pg_i64(idx)[t] = N - 1 - t;
    pg_tensor *rk = pg_index_select(g, pg_narrow(g, p->t0, ax, T - L, N), ax, idx); /* ([heads,] N, d) */
    if (rk && rk->ndim == 2)
        rk = pg_broadcast_to(g, pg_reshape(g, rk, PG_SHAPE(1, N, p->d)), PG_SHAPE(H, N, p->d));
    *r = (pg_pos_rel){.k = rk, .scale = p->scaled ? c->scale : 1.0};
    return rk ? 0 : -1;
}

/* rel1d's bias in the fused kernel's form (pg_posmod_ops.rel_bias): rel_keys' keys with
 * r->q = q. 1 (another path) with positions or Lq != Lk. */
static int rel1d_rel_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, const pg_pos_ctx *c, pg_pos_rel *r)
{
    (void)k;
    posrel *p = (posrel *)m;
    if (!r || !rel1d_fused_call(p, c))
        return r ? 1 : -1;
    if (!q_ok(g, p, q, c))
        return -1;
    pg_pos_ctx heads_of_q = *c; /* LocalAttention's band leaves heads and head_dim 0 */
    heads_of_q.heads = q->shape[1], heads_of_q.head_dim = q->shape[3], heads_of_q.dtype = q->dtype;
    int rc = rel1d_rel_keys(g, m, &heads_of_q, r);
    r->q = rc == 0 ? q : NULL;
    return rc;
}

static const pg_posmod_ops POSREL_OPS = {.mod_bias = posrel_bias};
static const pg_posmod_ops REL1D_OPS = {.mod_bias = posrel_bias, .rel_bias = rel1d_rel_bias,
                                         .rel_keys = rel1d_rel_keys};

pg_tensor *pg_posrel_logits(pg_graph *g, pg_posmod *m, pg_tensor *q, const pg_pos_ctx *c)
{
    const char *fn = "pg_posrel_logits";
    PG_NN_SCRATCH(g, fn, pg_posrel_logits(g, m, q, c));
    if (!m || (m->ops != &POSREL_OPS && m->ops != &REL1D_OPS)) {
        pg_graph_fail(g, "%s: module %s is not abs1d, rel1d or rel2d", fn, m ? m->base.type : "NULL");
        return NULL;
    }
    if (!q) {
        pg_graph_fail(g, "%s: q is NULL", fn);
        return NULL;
    }
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return NULL;
    return posrel_bias(g, m, q, NULL, NULL, c);
}

pg_tensor *pg_posrel_table(const pg_posmod *m, int which)
{
    if (!m || (m->ops != &POSREL_OPS && m->ops != &REL1D_OPS) || which < 0 || which > 1) {
        pg_set_error("pg_posrel_table: need an abs1d, rel1d or rel2d module and which 0 or 1, got %s and %d",
                     m ? m->base.type : "NULL", which);
        return NULL;
    }
    const posrel *p = (const posrel *)m;
    return which ? p->t1 : p->t0;
}

/* ---- construction ------------------------------------------------------------------------- */

/* a table (n, d) or (heads, n, d) registered as `name` on mod, N(0, 1) / sqrt(d) */
static pg_tensor *new_table(pg_module *mod, const char *name, int64_t heads, int64_t n, int64_t d, pg_dtype dt,
                            pg_rng *r)
{
    pg_tensor *t = heads > 0 ? pg_module_new_param(mod, name, dt, PG_SHAPE(heads, n, d))
                             : pg_module_new_param(mod, name, dt, PG_SHAPE(n, d));
    if (t && pg_fill_normal(t, r, 0.0, 1.0 / sqrt((double)d)) != 0)
        return NULL;
    return t;
}

typedef struct posrel_cfg {
    int64_t tokens, hgt, wid, d, heads;
    bool scaled, aisummer;
} posrel_cfg;

static pg_posmod *posrel_make(posrel_kind kind, const char *fn, const pg_posmod_args *a, posrel_cfg o)
{
    if (!a) {
        pg_set_error("%s: args is NULL", fn);
        return NULL;
    }
    if (!pg_dtype_is_float(a->dtype) || !a->rng) {
        pg_set_error("%s: need a float dtype and a generator (dtype %s, rng %s)", fn, pg_dtype_name(a->dtype),
                     a->rng ? "set" : "NULL");
        return NULL;
    }
    int64_t d = o.d > 0 ? o.d : a->head_dim;
    if (o.d < 0 || d < 1) {
        pg_set_error("%s: dim_head must be >= 1 (opts.dim_head %lld, args.head_dim %lld)", fn, (long long)o.d,
                     (long long)a->head_dim);
        return NULL;
    }
    if (o.heads < 0 || (o.heads > 0 && a->heads > 0 && o.heads != a->heads)) {
        pg_set_error("%s: heads %lld must be 0 (shared table) or the attention's %lld heads", fn,
                     (long long)o.heads, (long long)a->heads);
        return NULL;
    }
    if (kind != REL2D) {
        int64_t tokens = o.tokens > 0 ? o.tokens : a->max_len;
        if (o.tokens < 0 || tokens < 1) {
            pg_set_error("%s: tokens must be >= 1 (opts.tokens %lld, args.max_len %lld)", fn, (long long)o.tokens,
                         (long long)a->max_len);
            return NULL;
        }
        o.tokens = tokens;
    } else {
        if (o.hgt < 1 || o.wid < 1) {
            pg_set_error("%s: the feature map needs height, width >= 1, got %lld x %lld", fn, (long long)o.hgt,
                         (long long)o.wid);
            return NULL;
        }
        if (o.aisummer && o.hgt != o.wid) {
            pg_set_error("%s: the aisummer form needs a square map, got %lld x %lld", fn, (long long)o.hgt,
                         (long long)o.wid);
            return NULL;
        }
    }
    posrel *p = pg_posmod_alloc(sizeof *p, TYPE_NAME[kind], kind == REL1D ? &REL1D_OPS : &POSREL_OPS, NULL, fn);
    if (!p)
        return NULL;
    p->kind = kind;
    p->tokens = o.tokens;
    p->hgt = o.hgt;
    p->wid = o.wid;
    p->d = d;
    p->heads = o.heads;
    p->scaled = o.scaled;
    p->aisummer = o.aisummer;
    bool ok = true;
    if (kind == ABS1D) {
        ok = (p->t0 = new_table(&p->pm.base, "abs_pos_emb", 0, o.tokens, d, a->dtype, a->rng)) != NULL;
    } else if (kind == REL1D) {
        ok = (p->t0 = new_table(&p->pm.base, "rel_pos_emb", o.heads, 2 * o.tokens - 1, d, a->dtype, a->rng)) != NULL;
    } else {
        /* children "emb_w" and "emb_h" (AI Summer's RelPosEmb1D submodules), each with "rel_pos_emb" */
        const char *names[2] = {"emb_w", "emb_h"};
        int64_t rows[2] = {2 * o.wid - 1, 2 * o.hgt - 1};
        for (int s = 0; s < 2 && ok; s++) {
            pg_module *ch = pg_module_new_container("RelPosEmb1D", fn);
            if (!ch) {
                ok = false;
                break;
            }
            if (pg_module_add_child(&p->pm.base, names[s], ch) != 0) {
                ok = false;
                break;
            }
            pg_tensor *t = new_table(ch, "rel_pos_emb", o.heads, rows[s], d, a->dtype, a->rng);
            ok = t != NULL;
            if (s == 0)
                p->t0 = t;
            else
                p->t1 = t;
        }
    }
    if (!ok)
        return pg_module_fail(&p->pm.base, NULL);
    return &p->pm;
}

pg_posmod *pg_posmod_make_abs1d(const pg_posmod_args *a)
{
    const pg_abs1d_opts *o = a ? a->opts : NULL;
    pg_abs1d_opts d = o ? *o : (pg_abs1d_opts){0};
    return posrel_make(ABS1D, "pg_posmod_make_abs1d", a,
                       (posrel_cfg){.tokens = d.tokens, .d = d.dim_head, .scaled = d.scaled});
}

pg_posmod *pg_posmod_make_rel1d(const pg_posmod_args *a)
{
    const pg_rel1d_opts *o = a ? a->opts : NULL;
    pg_rel1d_opts d = o ? *o : (pg_rel1d_opts){0};
    return posrel_make(REL1D, "pg_posmod_make_rel1d", a,
                       (posrel_cfg){.tokens = d.tokens, .d = d.dim_head, .heads = d.heads, .scaled = d.scaled});
}

pg_posmod *pg_posmod_make_rel2d(const pg_posmod_args *a)
{
    const pg_rel2d_opts *o = a ? a->opts : NULL;
    pg_rel2d_opts d = o ? *o : (pg_rel2d_opts){0};
    return posrel_make(REL2D, "pg_posmod_make_rel2d", a,
                       (posrel_cfg){.hgt = d.height, .wid = d.width, .d = d.dim_head, .heads = d.heads,
                                    .scaled = d.scaled, .aisummer = d.aisummer});
}

pg_posmod *pg_abs1d_new(int64_t tokens, int64_t dim_head, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_abs1d_new";
    pg_posmod_args a = {.dtype = dtype, .rng = r, .layer = 0};
    if (tokens < 1) {
        pg_set_error("%s: tokens must be >= 1, got %lld", fn, (long long)tokens);
        return NULL;
    }
    return posrel_make(ABS1D, fn, &a, (posrel_cfg){.tokens = tokens, .d = dim_head});
}

pg_posmod *pg_rel1d_new(int64_t tokens, int64_t dim_head, int64_t heads, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_rel1d_new";
    pg_posmod_args a = {.dtype = dtype, .rng = r, .layer = 0};
    if (tokens < 1) {
        pg_set_error("%s: tokens must be >= 1, got %lld", fn, (long long)tokens);
        return NULL;
    }
    return posrel_make(REL1D, fn, &a, (posrel_cfg){.tokens = tokens, .d = dim_head, .heads = heads});
}

pg_posmod *pg_rel2d_new(int64_t height, int64_t width, int64_t dim_head, int64_t heads, pg_dtype dtype, pg_rng *r)
{
    pg_posmod_args a = {.dtype = dtype, .rng = r, .layer = 0};
    return posrel_make(REL2D, "pg_rel2d_new", &a,
                       (posrel_cfg){.hgt = height, .wid = width, .d = dim_head, .heads = heads});
}
