/* Incremental decoding of the language model with a key/value cache
 * (nn/kv_cache.h has the design; docs/attention.md "Incremental decoding"). */
#include "kv_cache_impl.h"

#include "pos_rope_scaling.h"
#include "pos_rotary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

/* ---- which schemes decode (nn/kv_cache.h) ---------------------------------------------- */

/* true when the cache decodes spec s exactly; else an error naming why */
static bool spec_ok(const char *fn, const pg_posmod_spec *s, bool input, int i)
{
    const char *why = NULL;
    if (s->make)
        why = "a custom constructor (spec.make)";
    else if (input ? !kind_in(s->kind, INPUT_KINDS)
                   : !kind_in(s->kind, BIAS_KINDS) && !kind_in(s->kind, ROTARY_KINDS) && !kind_in(s->kind, STATE_KINDS))
        why = "a scheme without incremental decoding yet";
    if (why)
        pg_set_error("%s: %s positional module %d (%s) is %s; decodable: sinusoidal, learned, continuous (input), "
                     "rotary, xpos, alibi, dpb, t5, kerple, sandwich, fire, xl, abs1d, rel1d, rel2d, cope, fox (layer)",
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
        !(c->v = calloc((size_t)lc->layers + 1, sizeof *c->v)) || !(c->fc = calloc((size_t)lc->layers + 1, sizeof *c->fc)) ||
        !(c->start = calloc((size_t)batch, sizeof *c->start))) {
        pg_lm_cache_free(c);
        pg_set_error("%s: out of memory", fn);
        return NULL;
    }
    const pg_attn_band *bd = &lc->band;
    pg_flash_opts band = {.window = bd->window, .look_backward = bd->look_backward, .exact_window = bd->exact};
    int64_t R = capacity; /* a ring: a chunk of <= w new tokens and the w (lb + 1) keys before it */
    if (bd->window > 0 && bd->look_backward < INT64_MAX / bd->window - 2)
        R = bd->window * (bd->look_backward + 2) < capacity ? bd->window * (bd->look_backward + 2) : capacity;
    int64_t Dh = lc->dim_head > 0 ? lc->dim_head : lc->dim / lc->heads; /* H heads of Dh: k, v repeated (GQA) */
    *c = (pg_lm_cache){lc->layers, batch, lc->heads, Dh, capacity, 0, lc->dtype, R, band, c->k, c->v,
                       c->fc, false, PG_LM_CACHE_ROPE_RECOMPUTE, NULL, c->start, false};
    bool fox = false;
    for (int i = 0; i < lc->n_layer_pos; i++) {
        const pg_posmod_spec *s = &lc->layer_pos[i];
        fox = fox || !strcmp(s->kind, "fox");
        c->raw_keys = c->raw_keys || (kind_in(s->kind, ROTARY_KINDS) && s->opts && pg_rope_is_dynamic(s->opts));
    }
    c->ids = c->raw_keys ? pg_empty(NULL, PG_I64, PG_SHAPE(batch, capacity)) : NULL;
    for (int64_t l = 0; l < c->layers && (!c->raw_keys || c->ids); l++) {
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
    if (c->raw_keys && !c->ids) {
        pg_lm_cache_free(c);
        pg_set_error("%s: batch %lld x capacity %lld: out of memory", fn, (long long)batch, (long long)capacity);
        return NULL;
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
    pg_tensor_free(c->ids);
    free(c->k);
    free(c->v);
    free(c->fc);
    free(c->start);
    free(c);
}

void pg_lm_cache_reset(pg_lm_cache *c)
{
    if (!c) {
        pg_set_error("pg_lm_cache_reset: cache is NULL");
        return;
    }
    c->len = 0;
    memset(c->start, 0, (size_t)c->B * sizeof *c->start);
    c->padded = false;
}

int pg_lm_cache_set_start(pg_lm_cache *c, const int64_t *start)
{
    const char *fn = "pg_lm_cache_set_start";
    if (!c || !start) {
        pg_set_error("%s: %s is NULL", fn, !c ? "cache" : "start");
        return -1;
    }
    if (c->len > 0) {
        pg_set_error("%s: the cache holds %lld tokens; set the starts on an empty cache (new or reset)", fn,
                     (long long)c->len);
        return -1;
    }
    for (int64_t b = 0; b < c->B; b++)
        if (start[b] < 0 || start[b] >= c->cap) {
            pg_set_error("%s: start[%lld] = %lld, need 0 <= start < the capacity %lld (a row keeps a real token)", fn,
                         (long long)b, (long long)start[b], (long long)c->cap);
            return -1;
        }
    bool any = false;
    for (int64_t b = 0; b < c->B; b++)
        any = any || start[b] > 0;
    if (any && c->raw_keys) { /* the call's length sets the frequencies: one length for the whole batch */
        pg_set_error("%s: a dynamic_* rotary scaling takes its frequencies from the sequence's length, which left "
                     "padding would make the longest row's for every row; decode rows of different lengths one at "
                     "a time", fn);
        return -1;
    }
    c->padded = false;
    for (int64_t b = 0; b < c->B; b++) {
        c->start[b] = start[b];
        c->padded = c->padded || start[b] > 0;
    }
    return 0;
}

int pg_lm_cache_set_rope(pg_lm_cache *c, pg_lm_cache_rope how)
{
    if (!c || (how != PG_LM_CACHE_ROPE_RECOMPUTE && how != PG_LM_CACHE_ROPE_REROTATE)) {
        pg_set_error("pg_lm_cache_set_rope: %s", !c ? "cache is NULL" : "how is not a pg_lm_cache_rope");
        return -1;
    }
    c->rope = how;
    return 0;
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

/* the position of column t in row b: t - start[b], the row's pads at 0 */
static int64_t col_pos(const pg_lm_cache *c, int64_t b, int64_t t)
{
    return t > c->start[b] ? t - c->start[b] : 0;
}

/* positions (B, Ln) i64 of the new columns t0 .. t0 + Ln - 1 */
static pg_tensor *positions(pg_graph *g, const ext *e)
{
    pg_tensor *p = pg_empty(g, PG_I64, PG_SHAPE(e->c->B, e->Ln));
    for (int64_t i = 0; p && i < e->c->B * e->Ln; i++)
        pg_i64(p)[i] = col_pos(e->c, i / e->Ln, e->t0 + i % e->Ln);
    return p;
}

/* the keys' positions in slot order (B, Lk) */
static pg_tensor *slot_positions(pg_graph *g, const ext *e)
{
    pg_tensor *p = pg_empty(g, PG_I64, PG_SHAPE(e->c->B, e->Lk));
    for (int64_t i = 0; p && i < e->c->B * e->Lk; i++)
        pg_i64(p)[i] = col_pos(e->c, i / e->Lk, pg_kvc_slot_col(e, i % e->Lk));
    return p;
}

/* hide[b, 0, i, s] for the new query i of row b (column t = t0 + i) and the key in slot s (column u):
 * a real query (t >= start[b], position p = t - start[b]) sees the real keys (u >= start[b]) at positions
 * <= p inside the band of p (pg_flash_band over the row's Lt - start[b] tokens: the band is measured in
 * positions, so a padded row sees the keys its unpadded run sees); a pad query sees its own key only
 * (finite: a row of -inf would give NaN) */
static pg_tensor *causal_hide(pg_graph *g, const ext *e)
{
    int64_t B = e->c->B, Ln = e->Ln, Lk = e->Lk;
    pg_tensor *h = pg_empty(g, PG_BOOL, PG_SHAPE(B, 1, Ln, Lk));
    for (int64_t b = 0; h && b < B; b++)
        for (int64_t i = 0; i < Ln; i++) {
            int64_t t = e->t0 + i, s0 = e->c->start[b], p = t - s0, lo = 0, hi = 0;
            if (p >= 0)
                pg_flash_band(&e->c->band, p, e->Lt - s0, &lo, &hi);
            for (int64_t s = 0; s < Lk; s++) {
                int64_t u = pg_kvc_slot_col(e, s);
                pg_bool(h)[(b * Ln + i) * Lk + s] = p < 0 ? u != t : u < s0 || u - s0 > p || u - s0 < lo;
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
    int64_t Dh = k->dim_head > 0 ? k->dim_head : k->dim / k->heads;
    if (k->layers != c->layers || k->heads != c->H || Dh != c->Dh || k->dtype != c->dtype) {
        pg_graph_fail(g, "%s: the cache was made for another model shape: %lld layers, %lld heads of %lld, %s; this "
                      "model has %lld layers, %lld heads of %lld, %s", fn, (long long)c->layers, (long long)c->H,
                      (long long)c->Dh, pg_dtype_name(c->dtype), (long long)k->layers, (long long)k->heads,
                      (long long)Dh, pg_dtype_name(k->dtype));
        return false;
    }
    if (ids->dtype != PG_I64 || ids->ndim != 2 || ids->shape[0] != c->B || ids->shape[1] < 1 ||
        (want_L > 0 && ids->shape[1] != want_L)) {
        pg_graph_fail(g, "%s: ids is %s, expected i64 (%lld, %s) (the cache's batch)", fn, SHAPE(ids),
                      (long long)c->B, want_L > 0 ? "1" : "L >= 1");
        return false;
    }
    for (int64_t b = 0; b < c->B; b++)
        if (c->start[b] >= c->len + ids->shape[1]) {
            pg_graph_fail(g, "%s: row %lld starts at column %lld (pg_lm_cache_set_start) but would hold %lld columns: "
                          "every row needs a real token by the end of a call", fn, (long long)b,
                          (long long)c->start[b], (long long)(c->len + ids->shape[1]));
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
    int64_t Ln = ids->shape[1], Lt = c->len + Ln;
    ext e = {fn, c, c->len, Ln, Lt, c->band.window > 0 && Lt > c->R ? c->R : Lt, NULL, NULL, NULL};
    e.pn = positions(g, &e);
    e.pall = slot_positions(g, &e);
    bool hide = Ln > 1 || c->band.window > 0 || c->padded;
    e.hide = hide && e.pall ? causal_hide(g, &e) : NULL;
    if (!e.pn || !e.pall || (hide && !e.hide))
        return NULL;
    pg_tensor *x = pg_embed_forward(g, lm->tok_emb, ids); /* (B, Ln, dim) */
    x = pg_posmod_apply_x(g, lm->pos, lm->n_pos, x, e.pn, NULL, 0, 0, NULL);
    for (int64_t l = 0; x && l < lm->cfg.layers; l++)
        x = pg_kvc_block(g, lm, l, &e, x);
    pg_tensor *out = x ? pg_linear_forward(g, lm->head, pg_kvc_norm(g, lm->cfg.norm, lm->norm, x)) : NULL;
    if (out && c->ids)
        for (int64_t b = 0; b < c->B; b++)
            memcpy(pg_i64(c->ids) + b * c->cap + e.t0, pg_i64(ids) + b * Ln, (size_t)Ln * sizeof(int64_t));
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

/* true when a dynamic rotary module's frequencies (or attention factor) for the length after a
 * call of Ln tokens differ from those before it: the cached states are then stale */
static bool rope_changes(pg_graph *g, const pg_lm *lm, const pg_lm_cache *c, int64_t Ln)
{
    const pg_mha *m = lm->blocks[0]->attn;
    for (int i = 0; c->len > 0 && i < m->n_pos; i++) {
        const pg_posmod_spec *s = &lm->cfg.layer_pos[i];
        if (!kind_in(s->kind, ROTARY_KINDS) || !s->opts || !pg_rope_is_dynamic(s->opts))
            continue;
        double *f0 = pg_graph_alloc(g, (size_t)c->Dh * sizeof *f0), *f1 = pg_graph_alloc(g, (size_t)c->Dh * sizeof *f1);
        double m0 = 0, m1 = 0;
        int64_t n = f0 && f1 ? pg_rotary_frequencies(m->pos[i], (double)c->len, f0, &m0) : -1;
        if (n < 0 || pg_rotary_frequencies(m->pos[i], (double)(c->len + Ln), f1, &m1) != n || m0 != m1 ||
            memcmp(f0, f1, (size_t)n * sizeof *f0) != 0)
            return true;
    }
    return false;
}

/* PG_LM_CACHE_ROPE_RECOMPUTE when the frequencies change: the whole sequence (cached ids, then
 * ids) again from an empty cache, the last Ln rows returned; else the plain extension */
static pg_tensor *extend_or_recompute(pg_graph *g, const char *fn, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids)
{
    if (!c->raw_keys || c->rope != PG_LM_CACHE_ROPE_RECOMPUTE || !rope_changes(g, lm, c, ids->shape[1]))
        return extend_pieces(g, fn, lm, c, ids);
    int64_t t0 = c->len, Ln = ids->shape[1];
    pg_tensor *held = pg_narrow(g, c->ids, 1, 0, t0);
    pg_tensor *all = pg_concat(g, 2, (pg_tensor *[]){held, ids}, 1); /* (B, t0 + Ln) */
    if (!all)
        return NULL;
    c->len = 0;
    pg_tensor *out = extend_pieces(g, fn, lm, c, all);
    if (!out)
        c->len = t0;
    return out ? pg_narrow(g, out, 1, t0, Ln) : NULL;
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
    pg_tensor *out = extend_or_recompute(g, fn, lm, c, ids);
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
