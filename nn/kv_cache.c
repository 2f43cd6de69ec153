/* Incremental decoding of the language model with a key/value cache
 * (nn/kv_cache.h has the design; docs/attention.md "Incremental decoding"). */
#include "kv_cache.h"

#include "../autograd/flash.h"
#include "pos_fox.h"
#include "pos_rope_scaling.h"
#include "pos_rotary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

struct pg_lm_cache {
    int64_t layers, B, H, Dh, cap, len;
    pg_dtype dtype;
    int64_t R;           /* key slots per layer: cap, or with a band a ring of min(cap, w (lb + 2)) */
    pg_flash_opts band;  /* the model's band (window 0: none) */
    pg_tensor **k, **v; /* per layer: (B, H, cap, Dh) heap tensors */
    pg_tensor **fc;     /* per layer with a forgetting gate: its c_t (B, H, cap) (docs/pos/fox.md (2)), else NULL */
};

/* ---- which schemes decode (nn/kv_cache.h) ---------------------------------------------- */

static bool kind_in(const char *kind, const char *const *list)
{
    for (int i = 0; kind && list[i]; i++)
        if (!strcmp(kind, list[i]))
            return true;
    return false;
}

static const char *const INPUT_KINDS[] = {"sinusoidal", "learned", "continuous", NULL};
/* biases of the positions given (generic), of the gates over the cached keys (cope, one query row at a
 * time) and of the running sum of log-gates (fox, c_t kept in the cache) */
static const char *const BIAS_KINDS[] = {"alibi", "dpb", "t5", "kerple", "sandwich", "fire", "xl", NULL};
static const char *const STATE_KINDS[] = {"cope", "fox", NULL};
static const char *const ROTARY_KINDS[] = {"rotary", "xpos", NULL};

/* true when the cache decodes spec s exactly; else an error naming why */
static bool spec_ok(const char *fn, const pg_posmod_spec *s, bool input, int i)
{
    const char *why = NULL;
    if (s->make)
        why = "a custom constructor (spec.make)";
    else if (input ? !kind_in(s->kind, INPUT_KINDS)
                   : !kind_in(s->kind, BIAS_KINDS) && !kind_in(s->kind, ROTARY_KINDS) && !kind_in(s->kind, STATE_KINDS))
        why = "a scheme without incremental decoding yet";
    else if (!strcmp(s->kind, "fox") && s->opts && ((const pg_fox_opts *)s->opts)->bidirectional)
        why = "a bidirectional forgetting gate (its c' of later keys)";
    else if (kind_in(s->kind, ROTARY_KINDS) && s->opts && pg_rope_is_dynamic(s->opts))
        why = "a dynamic_* rotary scaling (its frequencies change with the length)";
    if (why)
        pg_set_error("%s: %s positional module %d (%s) is %s; decodable: sinusoidal, learned, continuous (input), "
                     "rotary, xpos, alibi, dpb, t5, kerple, sandwich, fire, xl, cope, fox (layer)",
                     fn, input ? "input" : "layer", i, s->kind ? s->kind : "custom", why);
    return !why;
}

static bool lm_decodable(const char *fn, const pg_lm *lm)
{
    const pg_lm_config *c = &lm->cfg;
    for (int i = 0; i < c->n_input_pos; i++)
        if (!spec_ok(fn, &c->input_pos[i], true, i))
            return false;
    int n_fox = 0;
    for (int i = 0; i < c->n_layer_pos; i++) {
        if (!spec_ok(fn, &c->layer_pos[i], false, i))
            return false;
        n_fox += !strcmp(c->layer_pos[i].kind, "fox");
    }
    if (n_fox > 1) {
        pg_set_error("%s: %d forgetting gates per layer; the cache keeps the running sum of one", fn, n_fox);
        return false;
    }
    bool order = false; /* cope's gate sums and fox's c_j need the keys in order, not in a ring */
    for (int i = 0; i < c->n_layer_pos; i++)
        order = order || kind_in(c->layer_pos[i].kind, STATE_KINDS);
    if (c->band.window > 0 && order) {
        pg_set_error("%s: a local attention band (window %lld) with cope or fox does not decode incrementally yet",
                     fn, (long long)c->band.window);
        return false;
    }
    return true;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

pg_lm_cache *pg_lm_cache_new(const pg_lm *lm, int64_t batch, int64_t capacity)
{
    const char *fn = "pg_lm_cache_new";
    if (!lm) {
        pg_set_error("%s: model is NULL", fn);
        return NULL;
    }
    const pg_lm_config *lc = &lm->cfg;
    if (batch < 1 || capacity < 1 || (lc->max_len > 0 && capacity > lc->max_len)) {
        pg_set_error("%s: need batch >= 1 and 1 <= capacity%s, got batch %lld, capacity %lld (max_len %lld)", fn,
                     lc->max_len > 0 ? " <= the model's max_len" : "", (long long)batch, (long long)capacity,
                     (long long)lc->max_len);
        return NULL;
    }
    if (!lm_decodable(fn, lm))
        return NULL;
    pg_lm_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->k = calloc((size_t)lc->layers + 1, sizeof *c->k)) ||
        !(c->v = calloc((size_t)lc->layers + 1, sizeof *c->v)) || !(c->fc = calloc((size_t)lc->layers + 1, sizeof *c->fc))) {
        pg_lm_cache_free(c);
        pg_set_error("%s: out of memory", fn);
        return NULL;
    }
    const pg_attn_band *bd = &lc->band;
    pg_flash_opts band = {.window = bd->window, .look_backward = bd->look_backward, .exact_window = bd->exact};
    int64_t R = capacity; /* a ring: a chunk of <= w new tokens and the w (lb + 1) keys before it */
    if (bd->window > 0 && bd->look_backward < INT64_MAX / bd->window - 2)
        R = bd->window * (bd->look_backward + 2) < capacity ? bd->window * (bd->look_backward + 2) : capacity;
    *c = (pg_lm_cache){lc->layers, batch, lc->heads, lc->dim / lc->heads, capacity, 0, lc->dtype, R, band, c->k, c->v,
                       c->fc};
    bool fox = false;
    for (int i = 0; i < lc->n_layer_pos; i++)
        fox = fox || !strcmp(lc->layer_pos[i].kind, "fox");
    for (int64_t l = 0; l < c->layers; l++) {
        c->k[l] = pg_empty(NULL, c->dtype, PG_SHAPE(batch, c->H, R, c->Dh));
        c->v[l] = c->k[l] ? pg_empty(NULL, c->dtype, PG_SHAPE(batch, c->H, R, c->Dh)) : NULL;
        c->fc[l] = c->v[l] && fox ? pg_empty(NULL, c->dtype, PG_SHAPE(batch, c->H, capacity)) : NULL;
        if (!c->v[l] || (fox && !c->fc[l])) {
            char why[256];
            snprintf(why, sizeof why, "%s", pg_last_error());
            pg_lm_cache_free(c);
            pg_set_error("%s: batch %lld x capacity %lld: %s", fn, (long long)batch, (long long)capacity, why);
            return NULL;
        }
    }
    return c;
}

void pg_lm_cache_free(pg_lm_cache *c)
{
    if (!c)
        return;
    for (int64_t l = 0; c->k && l < c->layers; l++) {
        pg_tensor_free(c->k[l]);
        pg_tensor_free(c->v ? c->v[l] : NULL);
        pg_tensor_free(c->fc ? c->fc[l] : NULL);
    }
    free(c->k);
    free(c->v);
    free(c->fc);
    free(c);
}

void pg_lm_cache_reset(pg_lm_cache *c)
{
    if (!c) {
        pg_set_error("pg_lm_cache_reset: cache is NULL");
        return;
    }
    c->len = 0;
}

int64_t pg_lm_cache_len(const pg_lm_cache *c)
{
    if (!c) {
        pg_set_error("pg_lm_cache_len: cache is NULL");
        return -1;
    }
    return c->len;
}

/* ---- one extension by Ln tokens ------------------------------------------------------------ */

/* What one extension call shares across the blocks. */
typedef struct ext {
    const char *fn;
    pg_lm_cache *c;
    int64_t t0, Ln, Lt;   /* first new position, new tokens, tokens after the call */
    int64_t Lk;           /* keys in the store: Lt, or with a band min(Lt, R) (the ring's slots) */
    pg_tensor *pn, *pall; /* positions (B, Ln) t0 .., (B, Lk) of the keys in slot order, i64 */
    pg_tensor *hide;      /* (1, 1, Ln, Lk) bool: key after new query i or outside its band; NULL: none */
} ext;

static pg_tensor *norm_fwd(pg_graph *g, pg_norm_kind kind, pg_module *n, pg_tensor *x)
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

static pg_tensor *block_ext(pg_graph *g, const pg_lm *lm, int64_t l, const ext *e, pg_tensor *x)
{
    pg_block *b = lm->blocks[l];
    pg_mha *m = b->attn;
    x = pg_posmod_apply_x(g, m->pos, m->n_pos, x, e->pn, NULL, e->c->H, e->c->Dh, NULL);
    pg_tensor *h = x ? attend(g, lm, l, e, norm_fwd(g, b->cfg.norm, b->norm1, x)) : NULL;
    if (!h)
        return NULL;
    x = pg_add(g, x, h);
    h = pg_feedforward_forward(g, b->ff, norm_fwd(g, b->cfg.norm, b->norm2, x), NULL);
    return pg_add(g, x, h);
}

/* positions (B, n) i64 holding start, start + 1, ... in every row */
static pg_tensor *positions(pg_graph *g, int64_t B, int64_t start, int64_t n)
{
    pg_tensor *p = pg_empty(g, PG_I64, PG_SHAPE(B, n));
    for (int64_t i = 0; p && i < B * n; i++)
        pg_i64(p)[i] = start + i % n;
    return p;
}

/* the keys' positions in slot order (B, Lk): slot s holds the last position p <= Lt - 1 with p = s mod R */
static pg_tensor *slot_positions(pg_graph *g, const ext *e)
{
    int64_t R = e->c->R, B = e->c->B;
    pg_tensor *p = pg_empty(g, PG_I64, PG_SHAPE(B, e->Lk));
    for (int64_t i = 0; p && i < B * e->Lk; i++) {
        int64_t s = i % e->Lk;
        pg_i64(p)[i] = s + R * ((e->Lt - 1 - s) / R);
    }
    return p;
}

/* hide[i, s]: the key in slot s is after new query i (position t0 + i) or outside its band (pg_flash_band) */
static pg_tensor *causal_hide(pg_graph *g, const ext *e)
{
    pg_tensor *h = pg_empty(g, PG_BOOL, PG_SHAPE(1, 1, e->Ln, e->Lk));
    for (int64_t i = 0; h && i < e->Ln; i++) {
        int64_t lo = 0, hi = 0;
        pg_flash_band(&e->c->band, e->t0 + i, e->Lt, &lo, &hi);
        for (int64_t s = 0; s < e->Lk; s++) {
            int64_t p = pg_i64(e->pall)[s];
            pg_bool(h)[i * e->Lk + s] = p > e->t0 + i || p < lo;
        }
    }
    return h;
}

/* lm, cache and ids fit together: the cache's shape, (B, Ln) i64 ids in the vocabulary, room left */
static bool ext_ok(pg_graph *g, const char *fn, const pg_lm *lm, const pg_lm_cache *c, const pg_tensor *ids,
                   int64_t want_L)
{
    if (!lm || !c || !ids) {
        pg_graph_fail(g, "%s: %s is NULL", fn, !lm ? "model" : !c ? "cache" : "ids");
        return false;
    }
    const pg_lm_config *k = &lm->cfg;
    if (k->layers != c->layers || k->heads != c->H || k->dim / k->heads != c->Dh || k->dtype != c->dtype) {
        pg_graph_fail(g, "%s: the cache was made for another model shape: %lld layers, %lld heads of %lld, %s; this "
                      "model has %lld layers, %lld heads of %lld, %s", fn, (long long)c->layers, (long long)c->H,
                      (long long)c->Dh, pg_dtype_name(c->dtype), (long long)k->layers, (long long)k->heads,
                      (long long)(k->dim / k->heads), pg_dtype_name(k->dtype));
        return false;
    }
    if (ids->dtype != PG_I64 || ids->ndim != 2 || ids->shape[0] != c->B || ids->shape[1] < 1 ||
        (want_L > 0 && ids->shape[1] != want_L)) {
        pg_graph_fail(g, "%s: ids is %s, expected i64 (%lld, %s) (the cache's batch)", fn, SHAPE(ids),
                      (long long)c->B, want_L > 0 ? "1" : "L >= 1");
        return false;
    }
    if (c->len + ids->shape[1] > c->cap) {
        pg_graph_fail(g, "%s: the cache holds %lld of its capacity %lld tokens; %lld more asked for (length %lld)",
                      fn, (long long)c->len, (long long)c->cap, (long long)ids->shape[1],
                      (long long)(c->len + ids->shape[1]));
        return false;
    }
    for (int64_t i = 0; i < ids->numel; i++)
        if (pg_i64(ids)[i] < 0 || pg_i64(ids)[i] >= k->vocab) {
            pg_graph_fail(g, "%s: id %lld at [%lld, %lld] is outside the vocabulary [0, %lld)", fn,
                          (long long)pg_i64(ids)[i], (long long)(i / ids->shape[1]), (long long)(i % ids->shape[1]),
                          (long long)k->vocab);
            return false;
        }
    if (lm->base.training) {
        pg_graph_fail(g, "%s: the model is in train mode; decode in eval mode (pg_module_train(model, false))", fn);
        return false;
    }
    return true;
}

/* ids (B, Ln) -> logits (B, Ln, vocab); the cache grows by Ln on success */
static pg_tensor *extend(pg_graph *g, const char *fn, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids)
{
    int64_t B = c->B, Ln = ids->shape[1], Lt = c->len + Ln;
    ext e = {fn, c, c->len, Ln, Lt, c->band.window > 0 && Lt > c->R ? c->R : Lt, NULL, NULL, NULL};
    e.pn = positions(g, B, e.t0, Ln);
    e.pall = slot_positions(g, &e);
    bool hide = Ln > 1 || c->band.window > 0;
    e.hide = hide && e.pall ? causal_hide(g, &e) : NULL;
    if (!e.pn || !e.pall || (hide && !e.hide))
        return NULL;
    pg_tensor *x = pg_embed_forward(g, lm->tok_emb, ids); /* (B, Ln, dim) */
    x = pg_posmod_apply_x(g, lm->pos, lm->n_pos, x, e.pn, NULL, 0, 0, NULL);
    for (int64_t l = 0; x && l < lm->cfg.layers; l++)
        x = block_ext(g, lm, l, &e, x);
    pg_tensor *out = x ? pg_linear_forward(g, lm->head, norm_fwd(g, lm->cfg.norm, lm->norm, x)) : NULL;
    if (out)
        c->len = e.Lt;
    else if (!pg_graph_error(g))
        pg_graph_fail(g, "%s: the forward failed", fn);
    return out;
}

/* extend by pieces of at most one window with a band (the ring holds one piece and the keys before it) */
static pg_tensor *extend_pieces(pg_graph *g, const char *fn, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids)
{
    int64_t L = ids->shape[1], w = c->band.window, len0 = c->len;
    if (w <= 0 || L <= w)
        return extend(g, fn, lm, c, ids);
    int64_t n = (L + w - 1) / w;
    pg_tensor **parts = pg_graph_alloc(g, (size_t)n * sizeof *parts);
    for (int64_t i = 0; parts && i < n; i++)
        if (!(parts[i] = extend(g, fn, lm, c, pg_narrow(g, ids, 1, i * w, i * w + w <= L ? w : L - i * w)))) {
            c->len = len0; /* as it was (the slots written since are past it) */
            return NULL;
        }
    return parts ? pg_concat(g, (int)n, parts, 1) : NULL;
}

static pg_tensor *ext_call(pg_graph *g, const char *fn, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids, int64_t want_L)
{
    if (!g) {
        pg_set_error("%s: graph is NULL (the step runs in the caller's graph; reset it between steps)", fn);
        return NULL;
    }
    if (!ext_ok(g, fn, lm, c, ids, want_L))
        return NULL;
    pg_no_grad_begin(g);
    pg_tensor *out = extend_pieces(g, fn, lm, c, ids);
    pg_no_grad_end(g);
    return out;
}

pg_tensor *pg_lm_cache_prefill(pg_graph *g, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids)
{
    return ext_call(g, "pg_lm_cache_prefill", lm, c, ids, 0);
}

pg_tensor *pg_lm_cache_step(pg_graph *g, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids)
{
    pg_tensor *out = ext_call(g, "pg_lm_cache_step", lm, c, ids, 1);
    return out ? pg_reshape(g, out, PG_SHAPE(c->B, lm->cfg.vocab)) : NULL;
}
