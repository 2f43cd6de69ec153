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

/* t (B, H, n, Dh) at positions pos (B, n) through the block's rotary modules, in order: a
 * query, or a key (key true: xPos divides by its scale). No rotary module: t as it is. */
static pg_tensor *rotate(pg_graph *g, const pg_lm *lm, pg_mha *m, pg_tensor *t, pg_tensor *pos, bool key)
{
    for (int i = 0; t && i < m->n_pos; i++) {
        const pg_posmod_spec *s = &lm->cfg.layer_pos[i];
        if (!kind_in(s->kind, ROTARY_KINDS))
            continue;
        const pg_rotary_opts *o = s->opts;
        double centre = o && o->xpos_fixed_centre ? o->xpos_centre : 0.0; /* cancels in q k^T (xPos) */
        t = pg_rotary_apply(g, m->pos[i], t, pos, key, centre);
    }
    return t;
}

/* The ring's slots of positions lo .. p (p - lo < R): one run of slots, or two when it
 * wraps (slots lo mod R .. R - 1, then 0 .. p mod R). Returns the number of runs. */
static int ring_runs(const ext *e, int64_t lo, int64_t p, int64_t s0[2], int64_t n[2])
{
    int64_t R = e->c->R, a = lo % R, b = p % R;
    s0[0] = a;
    if (a <= b) {
        n[0] = b - a + 1;
        return 1;
    }
    n[0] = R - a, s0[1] = 0, n[1] = b + 1;
    return 2;
}

/* CoPE: its gates sum over the keys from each key up to the query, so each new query row r
 * (column p = t0 + r) is its own call over the ring's keys up to it, columns lo .. p, in
 * order (gathered from the ring), nothing hidden; the row goes back to slot order with
 * zeros in the slots after p: (B, H, 1, Lk) per row, (B, H, Ln, Lk) in all */
static pg_tensor *cope_row(pg_graph *g, pg_posmod *p, const ext *e, pg_tensor *q1, pg_tensor *K, pg_tensor *V,
                           double scale, int64_t pos)
{
    /* every key the ring holds up to the query: a key before the band changes no in-band key's
     * sum (they run from the key to the query) and is hidden anyway, as are a row's pads */
    int64_t lo = e->Lt > e->c->R ? e->Lt - e->c->R : 0, s0[2], n[2];
    int runs = ring_runs(e, lo, pos, s0, n);
    pg_tensor *Kr = pg_narrow(g, K, 2, s0[0], n[0]), *Vr = pg_narrow(g, V, 2, s0[0], n[0]);
    if (runs == 2) { /* positions in order: the run at the ring's end first */
        Kr = pg_concat(g, 2, (pg_tensor *[]){Kr, pg_narrow(g, K, 2, 0, n[1])}, 2);
        Vr = pg_concat(g, 2, (pg_tensor *[]){Vr, pg_narrow(g, V, 2, 0, n[1])}, 2);
    }
    int64_t nk = pos - lo + 1;
    pg_pos_ctx pc = {NULL, NULL, NULL, false, false, e->c->B, e->c->H, e->c->Dh, 1, nk, scale, e->c->dtype,
                     NULL, NULL};
    pg_tensor *b = Kr && Vr ? p->ops->mod_bias(g, p, q1, Kr, Vr, &pc) : NULL;
    b = pg_broadcast_to(g, b, PG_SHAPE(e->c->B, e->c->H, 1, nk));
    if (runs == 1)
        return pg_pad(g, b, 3, s0[0], e->Lk - s0[0] - n[0], 0.0);
    pg_tensor *tail = pg_narrow(g, b, 3, 0, n[0]), *head = pg_narrow(g, b, 3, n[0], n[1]);
    return pg_concat(g, 2, (pg_tensor *[]){pg_pad(g, head, 3, 0, s0[0] - n[1], 0.0), tail}, 3);
}

static pg_tensor *cope_rows(pg_graph *g, pg_posmod *p, const ext *e, pg_tensor *q, pg_tensor *K, pg_tensor *V,
                            double scale)
{
    pg_tensor **rows = pg_graph_alloc(g, (size_t)e->Ln * sizeof *rows);
    if (!rows)
        return NULL;
    for (int64_t r = 0; r < e->Ln; r++)
        if (!(rows[r] = cope_row(g, p, e, pg_narrow(g, q, 2, r, 1), K, V, scale, e->t0 + r)))
            return NULL;
    return e->Ln == 1 ? rows[0] : pg_concat(g, (int)e->Ln, rows, 2);
}

/* FoX: c_t of the new tokens = their own cumulative log-gates (pg_fox_cumulative over the
 * chunk; a bidirectional gate's first H channels, its c: the causal LM hides the keys after
 * the query, where c' would act) plus c_{t0 - 1} from the cache; stored, then the bias
 * c_i - c_j over the keys in slot order (their positions e->pall): (B, H, Ln, Lk) */
static pg_tensor *fox_rows(pg_graph *g, pg_posmod *p, const ext *e, pg_tensor *x, pg_tensor *fc)
{
    const pg_lm_cache *c = e->c;
    pg_tensor *a = pg_narrow(g, pg_fox_cumulative(g, p, x, 0), 1, 0, c->H); /* (B, H, Ln) */
    pg_tensor *prev = pg_zeros(g, c->dtype, PG_SHAPE(c->B, c->H, 1));
    if (!a || !prev)
        return NULL;
    for (int64_t bh = 0; e->t0 > 0 && bh < c->B * c->H; bh++)
        pg_set(prev, bh, pg_get(fc, bh * c->cap + e->t0 - 1));
    pg_tensor *cn = pg_add(g, a, prev); /* (B, H, Ln) */
    if (!cn)
        return NULL;
    for (int64_t bh = 0; bh < c->B * c->H; bh++)
        for (int64_t i = 0; i < e->Ln; i++)
            pg_set(fc, bh * c->cap + e->t0 + i, pg_get(cn, bh * e->Ln + i));
    pg_tensor *all = pg_empty(g, c->dtype, PG_SHAPE(c->B, c->H, 1, e->Lk));
    for (int64_t bh = 0; all && bh < c->B * c->H; bh++)
        for (int64_t s = 0; s < e->Lk; s++)
            pg_set(all, bh * e->Lk + s, pg_get(fc, bh * c->cap + pg_kvc_slot_col(e, s)));
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
                       : !strcmp(kind, "fox")    ? fox_rows(g, p, e, x, c->fc[l])
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
    /* q, k, v (B, H, Ln, Dh): to_qkv's rows split (H, kv_heads, kv_heads heads), qk-norm, k and
     * v repeated to H heads (the cache holds H heads; pg_mha_qkv) */
    pg_tensor *qkv[3];
    if (pg_mha_qkv(g, m, h, NULL, qkv) != 0)
        return NULL;
    pg_tensor *q = qkv[0], *k = qkv[1], *v = qkv[2];
    bool raw = e->c->raw_keys; /* a dynamic rotary scaling: keys stored before rotation */
    q = rotate(g, lm, m, q, e->pn, false);
    k = raw ? k : rotate(g, lm, m, k, e->pn, true);
    if (!q || !k || !v)
        return NULL;
    store_rows(e, e->c->k[l], k);
    store_rows(e, e->c->v[l], v);
    pg_tensor *K = load_rows(g, e, e->c->k[l]), *V = load_rows(g, e, e->c->v[l]); /* (B, H, Lk, Dh) */
    if (raw) /* every key at this call's frequencies (their length is Lt, as for q) */
        K = rotate(g, lm, m, K, e->pall, true);
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

