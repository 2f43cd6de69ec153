/* One block's attention for the new tokens over the cached keys and values
 * (nn/kv_cache.h has the design; docs/attention.md "Incremental decoding"). */
#include "kv_cache_impl.h"

#include "pos_fox.h"
#include "pos_rotary.h"

#include <math.h>
#include <stdlib.h>

pg_tensor *pg_kvc_norm(pg_graph *g, pg_norm_kind kind, pg_module *n, pg_tensor *x)
{
    return kind == PG_NORM_RMS ? pg_rmsnorm_forward(g, (pg_rmsnorm *)n, x)
                               : pg_layernorm_forward(g, (pg_layernorm *)n, x);
}

/* t (B, H, Ln, Dh) into the slots (t0 + i) mod R of store (B, H, R, Dh) */
static void store_rows(const ext *e, pg_tensor *store, const pg_tensor *t)
{
    size_t es = pg_dtype_size(store->dtype), row = (size_t)e->c->Dh * es;
    for (int64_t bh = 0; bh < e->c->B * e->c->H; bh++)
        for (int64_t i = 0; i < e->Ln; i++)
            memcpy((char *)store->data + ((size_t)(bh * e->c->R + (e->t0 + i) % e->c->R)) * row,
                   (const char *)t->data + (size_t)(bh * e->Ln + i) * row, row);
}

/* slots 0 .. Lk of store as a tensor (B, H, Lk, Dh) of g */
static pg_tensor *load_rows(pg_graph *g, const ext *e, const pg_tensor *store)
{
    const pg_lm_cache *c = e->c;
    pg_tensor *t = pg_empty(g, c->dtype, PG_SHAPE(c->B, c->H, e->Lk, c->Dh));
    if (!t)
        return NULL;
    size_t row = (size_t)c->Dh * pg_dtype_size(c->dtype);
    for (int64_t bh = 0; bh < c->B * c->H; bh++)
        memcpy((char *)t->data + (size_t)(bh * e->Lk) * row, (const char *)store->data + (size_t)(bh * c->R) * row,
               (size_t)e->Lk * row);
    return t;
}

/* t (B, L, n H Dh) -> chunk i of the last axis as (B, H, L, Dh) (attention.c's split_heads) */
static pg_tensor *head_chunk(pg_graph *g, pg_tensor *t, int n, int i, int64_t H, int64_t Dh)
{
    int64_t B = t ? t->shape[0] : 0, L = t ? t->shape[1] : 0;
    pg_tensor *s = pg_reshape(g, t, PG_SHAPE(B, L, n, H, Dh));
    s = pg_permute(g, pg_narrow(g, s, 2, i, 1), (const int[]){2, 0, 3, 1, 4}); /* (1, B, H, L, Dh) */
    return pg_reshape(g, s, PG_SHAPE(B, H, L, Dh));
}

/* q, k (B, H, Ln, Dh) through the block's rotary modules at the new positions */
static bool rotate_new(pg_graph *g, const pg_lm *lm, pg_mha *m, const ext *e, pg_tensor **q, pg_tensor **k)
{
    for (int i = 0; i < m->n_pos; i++) {
        const pg_posmod_spec *s = &lm->cfg.layer_pos[i];
        if (!kind_in(s->kind, ROTARY_KINDS))
            continue;
        const pg_rotary_opts *o = s->opts;
        double centre = o && o->xpos_fixed_centre ? o->xpos_centre : 0.0; /* cancels in q k^T (xPos) */
        *q = pg_rotary_apply(g, m->pos[i], *q, e->pn, false, centre);
        *k = pg_rotary_apply(g, m->pos[i], *k, e->pn, true, centre);
        if (!*q || !*k)
            return false;
    }
    return true;
}

/* CoPE: its gates sum over the keys up to the query (start-aligned causal in the
 * module), so each new query row r is its own call over keys 0 .. t0 + r with
 * nothing hidden; rows padded with zeros (hidden there anyway) to Lt: (B, H, Ln, Lt) */
static pg_tensor *cope_rows(pg_graph *g, pg_posmod *p, const ext *e, pg_tensor *q, pg_tensor *K, pg_tensor *V,
                            double scale)
{
    pg_tensor **rows = pg_graph_alloc(g, (size_t)e->Ln * sizeof *rows);
    if (!rows)
        return NULL;
    for (int64_t r = 0; r < e->Ln; r++) {
        int64_t n = e->t0 + r + 1;
        pg_pos_ctx pc = {NULL, NULL, NULL, false, false, e->c->B, e->c->H, e->c->Dh, 1, n, scale, e->c->dtype,
                         NULL, NULL};
        pg_tensor *b = p->ops->mod_bias(g, p, pg_narrow(g, q, 2, r, 1), pg_narrow(g, K, 2, 0, n),
                                        pg_narrow(g, V, 2, 0, n), &pc);
        if (!(rows[r] = pg_pad(g, pg_broadcast_to(g, b, PG_SHAPE(e->c->B, e->c->H, 1, n)), 3, 0, e->Lt - n, 0.0)))
            return NULL;
    }
    return e->Ln == 1 ? rows[0] : pg_concat(g, (int)e->Ln, rows, 2);
}

/* FoX: c_t of the new tokens = their own cumulative log-gates (sep_bias over the chunk) plus
 * c_{t0 - 1} from the cache; stored, then bias c_i - c_j over all keys: (B, H, Ln, Lt) */
static pg_tensor *fox_rows(pg_graph *g, pg_posmod *p, const ext *e, pg_tensor *x, pg_tensor *fc, double scale)
{
    const pg_lm_cache *c = e->c;
    pg_pos_ctx pc = {NULL, NULL, NULL, true, true, c->B, c->H, c->Dh, e->Ln, e->Ln, scale, c->dtype, NULL, x};
    pg_tensor *a = NULL, *d = NULL, *prev = pg_zeros(g, c->dtype, PG_SHAPE(c->B, c->H, 1));
    if (!prev || p->ops->sep_bias(g, p, &pc, &a, &d) != 0 || !a)
        return NULL;
    for (int64_t bh = 0; e->t0 > 0 && bh < c->B * c->H; bh++)
        pg_set(prev, bh, pg_get(fc, bh * c->cap + e->t0 - 1));
    pg_tensor *cn = pg_add(g, a, prev); /* (B, H, Ln) */
    if (!cn)
        return NULL;
    for (int64_t bh = 0; bh < c->B * c->H; bh++)
        for (int64_t i = 0; i < e->Ln; i++)
            pg_set(fc, bh * c->cap + e->t0 + i, pg_get(cn, bh * e->Ln + i));
    pg_tensor *all = pg_empty(g, c->dtype, PG_SHAPE(c->B, c->H, 1, e->Lt));
    for (int64_t bh = 0; all && bh < c->B * c->H; bh++)
        for (int64_t j = 0; j < e->Lt; j++)
            pg_set(all, bh * e->Lt + j, pg_get(fc, bh * c->cap + j));
    return pg_sub(g, pg_reshape(g, cn, PG_SHAPE(c->B, c->H, e->Ln, 1)), all);
}

/* sum of the bias modules' terms for the new queries over all keys: (.., H, Ln, Lt) or NULL */
static pg_tensor *bias_terms(pg_graph *g, const pg_lm *lm, int64_t l, const ext *e, pg_tensor *x, pg_tensor *q,
                             pg_tensor *K, pg_tensor *V, bool *ok)
{
    const pg_lm_cache *c = e->c;
    pg_mha *m = lm->blocks[l]->attn;
    pg_pos_ctx pc = {e->pn, e->pall, NULL, false, true, c->B, c->H, c->Dh, e->Ln, e->Lk, m->cfg.scale, c->dtype,
                     NULL, x};
    pg_tensor *bias = NULL;
    for (int i = 0; i < m->n_pos && *ok; i++) {
        const char *kind = lm->cfg.layer_pos[i].kind;
        pg_posmod *p = m->pos[i];
        pg_tensor *b = kind_in(kind, BIAS_KINDS) ? p->ops->mod_bias(g, p, q, K, V, &pc)
                       : !strcmp(kind, "cope")   ? cope_rows(g, p, e, q, K, V, m->cfg.scale)
                       : !strcmp(kind, "fox")    ? fox_rows(g, p, e, x, c->fc[l], m->cfg.scale)
                                                 : NULL;
        if (!kind_in(kind, BIAS_KINDS) && !kind_in(kind, STATE_KINDS))
            continue;
        *ok = b != NULL;
        bias = !b ? NULL : bias ? pg_add(g, bias, b) : b;
    }
    return bias;
}

/* The attention of block b for the new tokens: h (B, Ln, dim) -> (B, Ln, dim) */
static pg_tensor *attend(pg_graph *g, const pg_lm *lm, int64_t l, const ext *e, pg_tensor *h)
{
    pg_mha *m = lm->blocks[l]->attn;
    int64_t B = e->c->B, H = e->c->H, Dh = e->c->Dh;
    pg_tensor *qkv = pg_linear_forward(g, m->to_qkv, h); /* (B, Ln, 3 dim) */
    pg_tensor *q = head_chunk(g, qkv, 3, 0, H, Dh), *k = head_chunk(g, qkv, 3, 1, H, Dh);
    pg_tensor *v = head_chunk(g, qkv, 3, 2, H, Dh);
    if (!q || !k || !v || !rotate_new(g, lm, m, e, &q, &k))
        return NULL;
    store_rows(e, e->c->k[l], k);
    store_rows(e, e->c->v[l], v);
    pg_tensor *K = load_rows(g, e, e->c->k[l]), *V = load_rows(g, e, e->c->v[l]); /* (B, H, Lk, Dh) */
    bool ok = K && V;
    pg_tensor *bias = ok ? bias_terms(g, lm, l, e, h, q, K, V, &ok) : NULL;
    if (!ok)
        return NULL;
    pg_tensor *logits = pg_mul_scalar(g, pg_matmul(g, q, K, false, true), m->cfg.scale); /* (B, H, Ln, Lk) */
    if (bias)
        logits = pg_add(g, logits, bias);
    if (e->hide)
        logits = pg_masked_fill(g, logits, e->hide, -INFINITY);
    pg_tensor *o = pg_matmul(g, pg_softmax(g, logits, -1), V, false, false); /* (B, H, Ln, Dh) */
    o = pg_reshape(g, pg_permute(g, o, (const int[]){0, 2, 1, 3}), PG_SHAPE(B, e->Ln, H * Dh));
    return o ? pg_linear_forward(g, m->to_out, o) : NULL;
}

pg_tensor *pg_kvc_block(pg_graph *g, const pg_lm *lm, int64_t l, const ext *e, pg_tensor *x)
{
    pg_block *b = lm->blocks[l];
    pg_mha *m = b->attn;
    x = pg_posmod_apply_x(g, m->pos, m->n_pos, x, e->pn, NULL, e->c->H, e->c->Dh, NULL);
    pg_tensor *h = x ? attend(g, lm, l, e, pg_kvc_norm(g, b->cfg.norm, b->norm1, x)) : NULL;
    if (!h)
        return NULL;
    x = pg_add(g, x, h);
    h = pg_feedforward_forward(g, b->ff, pg_kvc_norm(g, b->cfg.norm, b->norm2, x), NULL);
    return pg_add(g, x, h);
}

