/* Scaled dot-product attention and MultiheadAttention (self and cross) with
 * the positional protocol. Everything is built from autograd ops, so the
 * gradients come from their backward rules. */
#include "attention.h"

#include "../autograd/flash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

/* ---- checks: one helper, pg_attn_check (autograd/attn_check.h) ------------------------- */

int pg_attn_args_check(pg_graph *g, const char *fn, const pg_attn_args *a, bool self_attn, int64_t B, int64_t heads,
                       int64_t Lq, int64_t Lk, pg_dtype dtype)
{
    if (!fn) {
        pg_graph_fail(g, "pg_attn_args_check: fn (the caller's name for messages) is NULL");
        return -1;
    }
    if (!a)
        return 0;
    if (self_attn && (a->pos_q || a->pos_k)) {
        pg_graph_fail(g, "%s: pos_q / pos_k are for cross-attention; self-attention takes pos", fn);
        return -1;
    }
    if (!self_attn && a->pos) {
        pg_graph_fail(g, "%s: pos is for self-attention; cross-attention takes pos_q and pos_k", fn);
        return -1;
    }
    const pg_attn_operands ops = {.layout = PG_ATTN_SIZES, .B = B, .H = heads, .Lq = Lq, .Lk = Lk, .dtype = dtype,
                                  .mask = a->mask, .bias = a->bias, .pos_q = self_attn ? a->pos : a->pos_q,
                                  .pos_k = self_attn ? a->pos : a->pos_k, .self_attn = self_attn};
    return pg_attn_check(g, fn, &ops);
}

/* ---- the attention math -------------------------------------------------------------------- */

/* hide[b, 0, i, j] = (mask given and !mask[b, j]) or (causal and j > i): (B or 1, 1, Lq, Lk) */
static pg_tensor *hidden_entries(pg_graph *g, const pg_tensor *mask, bool causal, int64_t B, int64_t Lq, int64_t Lk)
{
    int64_t Bm = mask ? B : 1;
    pg_tensor *hide = pg_empty(g, PG_BOOL, PG_SHAPE(Bm, 1, Lq, Lk));
    if (!hide)
        return NULL;
    uint8_t *h = pg_bool(hide);
    const uint8_t *m = mask ? pg_bool(mask) : NULL;
    for (int64_t b = 0; b < Bm; b++)
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++)
                h[(b * Lq + i) * Lk + j] = (m && !m[b * Lk + j]) || (causal && j > i);
    return hide;
}

/* The attention math on checked operands (pg_attention's rules; a scale of 0
 * means 1 / sqrt(Dh)). */
/* The weights softmax(q k^T * scale + bias, hidden entries -inf) over the keys,
 * before dropout: (B, H, Lq, Lk). */
static pg_tensor *sdpa_weights(pg_graph *g, pg_tensor *q, pg_tensor *k, const pg_sdpa_opts *o)
{
    int64_t B = q->shape[0], Lq = q->shape[2], Lk = k->shape[2];
    double scale = o->scale != 0 ? o->scale : 1.0 / sqrt((double)q->shape[3]);
    /* logits = q k^T * scale + bias: (B, H, Lq, Lk) */
    pg_tensor *logits = pg_mul_scalar(g, pg_matmul(g, q, k, false, true), scale);
    if (o->bias)
        logits = pg_add(g, logits, o->bias);
    if (o->mask || o->causal) /* hidden entries: -inf, no gradient to the bias there */
        logits = pg_masked_fill(g, logits, hidden_entries(g, o->mask, o->causal, B, Lq, Lk), -INFINITY);
    /* an all -inf row gives zero weights and zero gradient (pg_softmax) */
    return pg_softmax(g, logits, -1);
}

static pg_tensor *sdpa(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_sdpa_opts *o)
{
    pg_tensor *w = sdpa_weights(g, q, k, o);
    if (o->dropout > 0)
        w = pg_dropout(g, w, o->dropout, true, o->rng);
    return pg_matmul(g, w, v, false, false); /* (B, H, Lq, Dv) */
}

pg_tensor *pg_attention(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_sdpa_opts *o)
{
    const char *fn = "pg_attention";
    PG_NN_SCRATCH(g, fn, pg_attention(g, q, k, v, o));
    static const pg_sdpa_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
    const pg_attn_operands ops = {.layout = PG_ATTN_HEADS, .q = q, .k = k, .v = v, .mask = o->mask, .bias = o->bias};
    if (pg_attn_check(g, fn, &ops) != 0) /* pg_flash_attention's rule too: every dim positive */
        return NULL;
    double scale = o->scale != 0 ? o->scale : 1.0 / sqrt((double)q->shape[3]);
    if (!isfinite(scale) || !(o->dropout >= 0 && o->dropout < 1)) {
        pg_graph_fail(g, "%s: need a finite scale and dropout in [0, 1), got %g, %g", fn, o->scale, o->dropout);
        return NULL;
    }
    if (o->dropout > 0 && !o->rng) {
        pg_graph_fail(g, "%s: dropout %g needs a generator", fn, o->dropout);
        return NULL;
    }
    return sdpa(g, q, k, v, o);
}

/* ---- MultiheadAttention ------------------------------------------------------------------------ */

pg_mha_config pg_mha_defaults(int64_t dim, int64_t heads)
{
    pg_mha_config c = {0};
    c.dim = dim;
    c.heads = heads;
    c.bias = true;
    c.dtype = PG_F32;
    return c;
}

static void mha_destroy(pg_module *base)
{
    pg_mha *m = (pg_mha *)base;
    free(m->pos);
    free(m);
}

/* kv_heads and the qk-norm options (docs/attention.md "Head width, grouped-query attention and qk-norm") */
static bool heads_config_ok(const char *fn, const pg_mha_config *c)
{
    int64_t Dh = c->dim_head > 0 ? c->dim_head : c->dim / c->heads;
    if (c->kv_heads < 0 || (c->kv_heads > 0 && c->heads % c->kv_heads != 0)) {
        pg_set_error("%s: kv_heads %lld must divide heads %lld (0: heads)", fn, (long long)c->kv_heads,
                     (long long)c->heads);
        return false;
    }
    if (!c->qk_norm && (c->qk_norm_scale != 0 || c->qk_norm_dim_scale || c->qk_norm_groups != 0)) {
        pg_set_error("%s: qk_norm_scale %g, qk_norm_dim_scale %d, qk_norm_groups %lld are options of qk_norm, which "
                     "is off", fn, c->qk_norm_scale, (int)c->qk_norm_dim_scale, (long long)c->qk_norm_groups);
        return false;
    }
    if (c->qk_norm && (!(c->qk_norm_scale >= 0) || !isfinite(c->qk_norm_scale) || c->scale != 0)) {
        pg_set_error("%s: qk_norm needs a finite qk_norm_scale >= 0 (0: the default) and scale 0 (qk_norm_scale is "
                     "the logit scale), got qk_norm_scale %g, scale %g", fn, c->qk_norm_scale, c->scale);
        return false;
    }
    if (c->qk_norm && (c->qk_norm_groups < 0 || (c->qk_norm_groups > 0 && Dh % c->qk_norm_groups != 0))) {
        pg_set_error("%s: qk_norm_groups %lld must divide dim_head %lld (0: 1)", fn, (long long)c->qk_norm_groups,
                     (long long)Dh);
        return false;
    }
    return true;
}

static bool mha_config_ok(const char *fn, const pg_mha_config *c, pg_posmod *const *pos, int n_pos, const pg_rng *r)
{
    if (!c || !r) {
        pg_set_error("%s: %s is NULL", fn, c ? "generator" : "config");
        return false;
    }
    if (c->dim < 1 || c->heads < 1 || c->context_dim < 0 || c->dim_head < 0 ||
        (c->dim_head == 0 && c->dim % c->heads != 0)) {
        pg_set_error("%s: dim %lld must be a positive multiple of heads %lld unless dim_head is set (dim_head %lld "
                     ">= 0, context_dim %lld >= 0)", fn, (long long)c->dim, (long long)c->heads,
                     (long long)c->dim_head, (long long)c->context_dim);
        return false;
    }
    if (!heads_config_ok(fn, c))
        return false;
    if (!(c->dropout >= 0 && c->dropout < 1) || !(c->scale >= 0) || !isfinite(c->scale) ||
        !pg_dtype_is_float(c->dtype)) {
        pg_set_error("%s: need dropout in [0, 1), a finite scale >= 0 and a float dtype, got %g, %g, %s", fn,
                     c->dropout, c->scale, pg_dtype_name(c->dtype));
        return false;
    }
    const pg_attn_band *b = &c->band;
    if (b->window < 0 || b->look_backward < 0 || b->look_forward < 0 || (b->window > 0 && c->cross) ||
        (b->window > 0 && c->causal && b->look_forward > 0)) {
        pg_set_error("%s: bad band: window %lld, look_backward %lld, look_forward %lld (need >= 0; self-attention; "
                     "no look_forward with causal)%s",
                     fn, (long long)b->window, (long long)b->look_backward, (long long)b->look_forward,
                     c->cross ? ", cross-attention" : "");
        return false;
    }
    if (n_pos < 0 || (n_pos > 0 && !pos)) {
        pg_set_error("%s: bad positional module list (%d modules)", fn, n_pos);
        return false;
    }
    for (int i = 0; i < n_pos; i++) {
        bool dup = false;
        for (int j = 0; j < i; j++)
            dup = dup || pos[j] == pos[i];
        if (!pos[i] || !pos[i]->ops || dup) {
            pg_set_error("%s: positional module %d is %s", fn, i,
                         !pos[i] ? "NULL" : dup ? "listed twice" : "missing its hooks");
            return false;
        }
    }
    return true;
}

/* Adds a Linear child; false (and the module's tree keeps nothing extra) on failure */
static bool add_linear(pg_mha *m, const char *name, pg_linear **slot, int64_t in, int64_t out, pg_rng *r)
{
    *slot = pg_linear_new(in, out, m->cfg.bias, m->cfg.dtype, r);
    if (!*slot || pg_module_add_child(&m->base, name, &(*slot)->base) != 0) {
        *slot = NULL;
        return false;
    }
    return true;
}

/* dim_head, kv_heads, qk_norm_groups and the logit scale resolved: with qk_norm the scale
 * is qk_norm_scale, by default 10, or 1 / sqrt(Dh) with the learned dim scales (which
 * start at Dh^(1/4), so q.k starts at cos * 1 as without them); else 1 / sqrt(Dh). */
static void resolve_heads(pg_mha *m)
{
    pg_mha_config *c = &m->cfg;
    m->head_dim = c->dim_head = c->dim_head > 0 ? c->dim_head : c->dim / c->heads;
    m->kv_heads = c->kv_heads = c->kv_heads > 0 ? c->kv_heads : c->heads;
    if (c->qk_norm && c->qk_norm_groups == 0)
        c->qk_norm_groups = 1;
    if (c->qk_norm && c->qk_norm_scale == 0)
        c->qk_norm_scale = c->qk_norm_dim_scale ? 1.0 / sqrt((double)m->head_dim) : 10.0;
    if (c->qk_norm)
        c->scale = c->qk_norm_scale;
    else if (c->scale == 0)
        c->scale = 1.0 / sqrt((double)m->head_dim);
}

/* qk_norm_dim_scale: the gains qk_norm_q_scale (H, 1, Dh), qk_norm_k_scale (G, 1, Dh), all Dh^(1/4) */
static bool add_qk_scales(pg_mha *m)
{
    const pg_mha_config *c = &m->cfg;
    if (!c->qk_norm || !c->qk_norm_dim_scale)
        return true;
    m->qk_q_scale = pg_module_new_param(&m->base, "qk_norm_q_scale", c->dtype, PG_SHAPE(c->heads, 1, m->head_dim));
    m->qk_k_scale = m->qk_q_scale ? pg_module_new_param(&m->base, "qk_norm_k_scale", c->dtype,
                                                        PG_SHAPE(m->kv_heads, 1, m->head_dim))
                                  : NULL;
    if (!m->qk_k_scale)
        return false;
    pg_tensor *t[2] = {m->qk_q_scale, m->qk_k_scale};
    for (int i = 0; i < 2; i++)
        for (int64_t j = 0; j < t[i]->numel; j++)
            pg_set(t[i], j, pow((double)m->head_dim, 0.25));
    return true;
}

pg_mha *pg_mha_new(const pg_mha_config *c, pg_posmod *const *pos, int n_pos, pg_rng *r)
{
    const char *fn = "pg_mha_new";
    if (!mha_config_ok(fn, c, pos, n_pos, r)) {
        pg_posmod_free_list(pos, 0, n_pos > 0 ? n_pos : 0);
        return NULL;
    }
    pg_mha *m = pg_module_alloc(sizeof *m, "MultiheadAttention", mha_destroy, fn);
    if (m && n_pos > 0 && !(m->pos = malloc((size_t)n_pos * sizeof *m->pos))) {
        pg_set_error("%s: out of memory", fn);
        pg_module_free(&m->base);
        m = NULL;
    }
    if (!m) {
        pg_posmod_free_list(pos, 0, n_pos);
        return NULL;
    }
    m->cfg = *c;
    resolve_heads(m);
    if (m->cfg.context_dim == 0)
        m->cfg.context_dim = c->dim;
    m->n_pos = n_pos;
    for (int i = 0; i < n_pos; i++)
        m->pos[i] = pos[i];
    int64_t qw = c->heads * m->head_dim, kvw = m->kv_heads * m->head_dim; /* H Dh, G Dh */
    bool ok = c->cross ? add_linear(m, "to_q", &m->to_q, c->dim, qw, r) &&
                             add_linear(m, "to_kv", &m->to_kv, m->cfg.context_dim, 2 * kvw, r)
                       : add_linear(m, "to_qkv", &m->to_qkv, c->dim, qw + 2 * kvw, r);
    ok = ok && add_linear(m, "to_out", &m->to_out, qw, c->dim, r) && add_qk_scales(m);
    if (!ok) {
        pg_posmod_free_list(pos, 0, n_pos);
        pg_module_free(&m->base);
        return NULL;
    }
    if (pg_posmod_adopt(&m->base, pos, n_pos) != 0)
        return pg_module_fail(&m->base, NULL);
    return m;
}

/* ---- a borrowed positional module (attention.h: pg_mha_borrow_pos) ---------------------------- */

int pg_mha_borrow_pos(pg_mha *m, pg_posmod *p, int at)
{
    const char *fn = "pg_mha_borrow_pos";
    if (!m || !p || !p->ops) {
        pg_set_error("%s: %s", fn, !m ? "module is NULL" : !p ? "positional module is NULL" : "module has no hooks");
        return -1;
    }
    if (at < 0 || at > m->n_pos) {
        pg_set_error("%s: index %d is outside [0, %d] (the attention has %d positional modules)", fn, at, m->n_pos,
                     m->n_pos);
        return -1;
    }
    for (int i = 0; i < m->n_pos; i++)
        if (m->pos[i] == p) {
            pg_set_error("%s: the module (%s) is already positional module %d", fn, p->base.type, i);
            return -1;
        }
    pg_posmod **list = realloc(m->pos, (size_t)(m->n_pos + 1) * sizeof *list);
    if (!list) {
        pg_set_error("%s: out of memory", fn);
        return -1;
    }
    memmove(list + at + 1, list + at, (size_t)(m->n_pos - at) * sizeof *list);
    list[at] = p; /* in the call list only: not a child, never freed here */
    m->pos = list;
    m->n_pos++;
    return 0;
}

/* t (B, L, C) -> channels off .. off + H Dh as (B, H, L, Dh), heads outer (channel
 * off + h Dh + d) */
static pg_tensor *split_heads(pg_graph *g, pg_tensor *t, int64_t off, int64_t H, int64_t Dh)
{
    if (!t)
        return NULL;
    return pg_split_heads(g, t, off, H, Dh); /* (B, H, L, Dh) */
}

/* x / max(|x|, 1e-12) over each group of Dh / groups channels (torch's F.normalize), times
 * the gain (heads, 1, Dh) when given: t (B, heads, L, Dh) */
static pg_tensor *qk_l2norm(pg_graph *g, pg_tensor *t, int64_t groups, pg_tensor *gain)
{
    if (!t)
        return NULL;
    int64_t B = t->shape[0], H = t->shape[1], L = t->shape[2], Dh = t->shape[3];
    pg_tensor *s = pg_reshape(g, t, PG_SHAPE(B, H, L, groups, Dh / groups));
    pg_tensor *n = pg_sqrt(g, pg_sum(g, pg_mul(g, s, s), 1, (const int[]){4}, true));
    s = pg_reshape(g, pg_div(g, s, pg_clamp(g, n, 1e-12, INFINITY)), PG_SHAPE(B, H, L, Dh));
    return gain ? pg_mul(g, s, gain) : s;
}

/* t (B, G, L, Dh) -> (B, H, L, Dh), head n = t's head n mod G: x-transformers'
 * repeat(t, 'b g n d -> b (r g) n d'); the backward sums the r copies */
static pg_tensor *repeat_kv(pg_graph *g, pg_tensor *t, int64_t H)
{
    if (!t || t->shape[1] == H)
        return t;
    int64_t B = t->shape[0], G = t->shape[1], L = t->shape[2], Dh = t->shape[3];
    pg_tensor *s = pg_broadcast_to(g, pg_reshape(g, t, PG_SHAPE(B, 1, G, L, Dh)), PG_SHAPE(B, H / G, G, L, Dh));
    return pg_reshape(g, s, PG_SHAPE(B, H, L, Dh));
}

/* The projections split into q (B, H, Lq, Dh), k, v (B, G, Lk, Dh), qk-normalised, k and
 * v repeated to H heads. Inputs checked. */
static bool heads_of(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, pg_tensor *qkv[3])
{
    const pg_mha_config *c = &m->cfg;
    int64_t H = c->heads, G = m->kv_heads, Dh = m->head_dim;
    pg_tensor *p = pg_linear_forward(g, c->cross ? m->to_q : m->to_qkv, x); /* (B, Lq, H Dh [+ 2 G Dh]) */
    pg_tensor *pkv = c->cross ? pg_linear_forward(g, m->to_kv, context) : p; /* (B, Lk, [H Dh +] 2 G Dh) */
    int64_t koff = c->cross ? 0 : H * Dh;
    qkv[0] = split_heads(g, p, 0, H, Dh);
    qkv[1] = split_heads(g, pkv, koff, G, Dh);
    qkv[2] = split_heads(g, pkv, koff + G * Dh, G, Dh);
    if (c->qk_norm) { /* before the positional modules (rotary), as x-transformers */
        qkv[0] = qk_l2norm(g, qkv[0], c->qk_norm_groups, m->qk_q_scale);
        qkv[1] = qk_l2norm(g, qkv[1], c->qk_norm_groups, m->qk_k_scale);
    }
    qkv[1] = repeat_kv(g, qkv[1], H);
    qkv[2] = repeat_kv(g, qkv[2], H);
    return qkv[0] && qkv[1] && qkv[2];
}

/* A self-attention's q, k, v left in its projection p (B, L, 3 H Dh) for the fused kernel to
 * read in place (pg_flash_attention_qkv), split now that something needs them as tensors
 * (heads_of's splits, when nothing else applies: no qk_norm, H kv heads). Nothing to do when
 * they are split already (qkv[0] set) or p is NULL. */
static bool split_packed(pg_graph *g, const pg_mha *m, pg_tensor *p, pg_tensor *qkv[3])
{
    if (qkv[0] || !p)
        return true;
    int64_t H = m->cfg.heads, Dh = m->head_dim;
    for (int i = 0; i < 3; i++)
        qkv[i] = split_heads(g, p, i * H * Dh, H, Dh);
    return qkv[0] && qkv[1] && qkv[2];
}

static bool check_input(pg_graph *g, const char *fn, const char *name, const pg_tensor *x, int64_t width,
                        pg_dtype dtype)
{
    if (!x || x->ndim != 3 || x->shape[2] != width || x->dtype != dtype || x->shape[0] < 1 || x->shape[1] < 1) {
        pg_graph_fail(g, "%s: %s is %s, expected (B, L, %lld) of %s, B and L >= 1", fn, name, x ? SHAPE(x) : "NULL",
                      (long long)width, pg_dtype_name(dtype));
        return false;
    }
    return true;
}

/* The distances i - j of Lq queries and Lk keys at default positions, in the
 * fused kernel's order: d[t] = t - (Lk - 1), t = 0 .. Lq + Lk - 2. */
static pg_tensor *distances(pg_graph *g, int64_t Lq, int64_t Lk, pg_dtype dtype)
{
    return pg_arange(g, dtype, (double)(1 - Lk), (double)Lq, 1.0);
}

/* A module's table over distance b from its hook (dist_bias or dist_bias_if, named in
 * the message): b itself when it is (H, Lq + Lk - 1) of the call's dtype, else NULL after
 * pg_graph_fail (b NULL: the hook failed). */
static pg_tensor *distance_table(pg_graph *g, const char *fn, int i, pg_posmod *p, const pg_pos_ctx *c, pg_tensor *b,
                                 const char *hook)
{
    int64_t D = c->Lq + c->Lk - 1;
    if (b && b->ndim == 2 && b->shape[0] != c->heads) {
        pg_graph_fail(g, "%s: positional module %d (%s): the module has %lld heads, the attention %lld", fn, i,
                      p->base.type, (long long)b->shape[0], (long long)c->heads);
        return NULL;
    }
    if (b && (b->ndim != 2 || b->shape[1] != D || b->dtype != c->dtype)) {
        pg_graph_fail(g, "%s: positional module %d (%s) gave a distance bias %s, expected (%lld, %lld)", fn, i,
                      p->base.type, SHAPE(b), (long long)c->heads, (long long)D);
        return NULL;
    }
    if (!b && !pg_graph_error(g))
        pg_graph_fail(g, "%s: positional module %d (%s): %s failed", fn, i, p->base.type, hook);
    return b;
}

/* A module's bias over distance for the fused kernel: (H, Lq + Lk - 1). */
static pg_tensor *distance_bias(pg_graph *g, const char *fn, int i, pg_posmod *p, const pg_pos_ctx *c)
{
    pg_tensor *b = p->ops->dist_bias(g, p, distances(g, c->Lq, c->Lk, c->dtype), c);
    return distance_table(g, fn, i, p, c, b, "dist_bias");
}

/* The same from dist_bias_if, for this call: 0 with *b (H, Lq + Lk - 1); 1 when the
 * call's bias is not one of the distance (nothing recorded); -1 after pg_graph_fail */
static int distance_bias_if(pg_graph *g, const char *fn, int i, pg_posmod *p, const pg_pos_ctx *c, pg_tensor **b)
{
    int rc = p->ops->dist_bias_if(g, p, distances(g, c->Lq, c->Lk, c->dtype), c, b);
    if (rc == 1)
        return 1;
    *b = distance_table(g, fn, i, p, c, rc == 0 ? *b : NULL, "dist_bias_if");
    return *b ? 0 : -1;
}

/* A module's separable bias for the fused kernel: sep[0] += a (B, H, Lq), sep[1] += e (B, H, Lk). */
static bool separable_bias(pg_graph *g, const char *fn, int i, pg_posmod *p, const pg_pos_ctx *c, pg_tensor *sep[2])
{
    pg_tensor *a = NULL, *e = NULL;
    if (p->ops->sep_bias(g, p, c, &a, &e) != 0 || !a || !e) {
        if (!pg_graph_error(g))
            pg_graph_fail(g, "%s: positional module %d (%s): sep_bias failed", fn, i, p->base.type);
        return false;
    }
    bool ok = a->ndim == 3 && e->ndim == 3 && a->dtype == c->dtype && e->dtype == c->dtype;
    for (int d = 0; ok && d < 2; d++)
        ok = a->shape[d] == (d ? c->heads : c->B) && e->shape[d] == a->shape[d];
    if (!ok || a->shape[2] != c->Lq || e->shape[2] != c->Lk) {
        pg_graph_fail(g, "%s: positional module %d (%s) gave a separable bias %s, %s, expected (B, H, Lq) = (%lld, "
                         "%lld, %lld) and (B, H, Lk) = (%lld, %lld, %lld) of %s", fn, i, p->base.type, SHAPE(a),
                      SHAPE(e), (long long)c->B, (long long)c->heads, (long long)c->Lq, (long long)c->B,
                      (long long)c->heads, (long long)c->Lk, pg_dtype_name(c->dtype));
        return false;
    }
    sep[0] = sep[0] ? pg_add(g, sep[0], a) : a;
    sep[1] = sep[1] ? pg_add(g, sep[1], e) : e;
    return sep[0] && sep[1];
}

/* A module's relative keys for the fused kernel (at most one per call: fusable);
 * its key-side term e joins sep[1] (the kernel takes sep_k alone: sep[0] may stay NULL). */
static bool relative_keys(pg_graph *g, const char *fn, int i, pg_posmod *p, pg_tensor *q, pg_tensor *k,
                          const pg_pos_ctx *c, pg_pos_rel *rel, pg_tensor *sep[2])
{
    int rc = p->ops->rel_bias(g, p, q, k, c, rel);
    if (rc == 0 && (rel->q_shift || rel->dist)) {
        pg_graph_fail(g, "%s: positional module %d (%s): rel_bias gave q_shift %s, dist %s: those are rel_keys' alone",
                      fn, i, p->base.type, SHAPE(rel->q_shift), SHAPE(rel->dist));
        return false;
    }
    if (rc != 0 || !rel->q || !rel->k) {
        if (!pg_graph_error(g))
            pg_graph_fail(g, "%s: positional module %d (%s): rel_bias %s (q %s, k %s, %lld heads)", fn, i,
                          p->base.type, rc == 1 ? "does not fit the call" : "failed", SHAPE(q), SHAPE(k),
                          (long long)c->heads);
        return false;
    }
    const pg_attn_operands ops = {.layout = PG_ATTN_HEADS, .q = q, .k = k, .v = k, .rel_q = rel->q, .rel_k = rel->k};
    if (pg_attn_check(g, fn, &ops) != 0)
        return false;
    if (!rel->e)
        return true;
    sep[1] = sep[1] ? pg_add(g, sep[1], rel->e) : rel->e; /* the key side alone: sep[0] may stay NULL */
    return sep[1] != NULL;
}

/* A bias broadcastable to (B, H, Lq, Lk) as the kernel's pair_bias (Bb, H, Lq, Lk), Bb 1 or B:
 * itself when it has that shape (FIRE's (1, H, L, L), CoPE's (B, H, L, L)), else broadcast. */
static pg_tensor *pair_shaped(pg_graph *g, pg_tensor *b, const pg_pos_ctx *c)
{
    int64_t Bb = b->ndim == 4 ? b->shape[0] : 1;
    if (b->ndim == 4 && b->shape[1] == c->heads && b->shape[2] == c->Lq && b->shape[3] == c->Lk)
        return b;
    return pg_add(g, pg_zeros(g, c->dtype, PG_SHAPE(Bb, c->heads, c->Lq, c->Lk)), b);
}

/* What run_posmods gathers for the attention (all NULL / 0 while none) */
typedef struct pos_terms {
    pg_tensor *bias;    /* the reference path's bias, or the kernel's over distance */
    pg_tensor *sep[2];  /* the kernel's separable bias */
    pg_tensor *pair;    /* the kernel's pair bias */
    pg_pos_rel rel;     /* the kernel's relative keys */
    bool rel_self;      /* their queries are q itself (rel_keys; rel.q NULL): the kernel's rel_q_is_q */
    pg_pos_rotation rot; /* the kernel's rotation of q and k */
} pos_terms;

/* Whether a module's hooks on a fused call may read q or k (a rotation before it must then
 * be applied to them, not left to the kernel) */
static bool reads_qk(const pg_posmod *p)
{
    const pg_posmod_ops *o = p->ops;
    return o->mod_qkv || o->rel_bias || o->attend || (o->mod_bias && !o->dist_bias && !o->sep_bias);
}

/* A header (shape and dtype, no data) of the call's heads over L positions: (B, H, L, Dh),
 * for checking what a hook gives against the heads it has not seen as tensors */
static pg_tensor heads_header(const pg_pos_ctx *c, int64_t L)
{
    return (pg_tensor){.dtype = c->dtype, .ndim = 4, .shape = {c->B, c->heads, L, c->head_dim}};
}

/* Module i's rotation as the kernel's tables into *rot (checked: a scheme's hook is
 * another's code), when the call is fused, no rotation is there yet and no later module
 * reads q or k. 0: taken; 1: not (mod_qkv's turn); -1 after pg_graph_fail. */
static int kernel_rotation(pg_graph *g, const char *fn, const pg_mha *m, int i, const pg_pos_ctx *c,
                           pg_pos_rotation *rot)
{
    pg_posmod *p = m->pos[i];
    if (!rot || rot->cos_q || !p->ops->qk_rotation)
        return 1;
    for (int j = i + 1; j < m->n_pos; j++)
        if (reads_qk(m->pos[j]))
            return 1;
    int r = p->ops->qk_rotation(g, p, c, rot);
    if (r != 0) {
        if (r < 0 && !pg_graph_error(g))
            pg_graph_fail(g, "%s: positional module %d (%s): qk_rotation failed", fn, i, p->base.type);
        *rot = (pg_pos_rotation){0};
        return r;
    }
    const pg_flash_opts o = {.rot_cos_q = rot->cos_q, .rot_sin_q = rot->sin_q, .rot_cos_k = rot->cos_k,
                             .rot_sin_k = rot->sin_k};
    const pg_tensor q = heads_header(c, c->Lq), k = heads_header(c, c->Lk);
    char who[128];
    snprintf(who, sizeof who, "%s: positional module %d (%s) qk_rotation", fn, i, p->base.type);
    return pg_flash_rotation_check(g, who, &q, &k, &o) == 0 ? 0 : -1;
}

/* Whether a rel_keys hook's result has its keys, no rel_q or e, and a shift of (H, Dh) or none */
static bool rel_keys_shaped(const pg_pos_rel *rel, const pg_pos_ctx *c)
{
    const pg_tensor *s = rel->q_shift;
    return !rel->q && !rel->e && rel->k &&
           (!s || (s->ndim == 2 && s->dtype == c->dtype && s->shape[0] == c->heads && s->shape[1] == c->head_dim));
}

/* Module i's relative keys with q itself (or q + a shift) as their queries (rel_keys) into
 * *rel, when q is still in the projection (q_packed), no rotation was left to the kernel and
 * no later module changes q: 0 taken; 1 not (rel_bias's turn); -1 after pg_graph_fail. */
static int own_rel_keys(pg_graph *g, const char *fn, const pg_mha *m, int i, bool q_packed, const pg_pos_ctx *c,
                        const pos_terms *t, pg_pos_rel *rel)
{
    pg_posmod *p = m->pos[i];
    if (!q_packed || !p->ops->rel_keys || t->rot.cos_q)
        return 1;
    for (int j = i + 1; j < m->n_pos; j++)
        if (m->pos[j]->ops->mod_qkv || m->pos[j]->ops->qk_rotation)
            return 1;
    int r = p->ops->rel_keys(g, p, c, rel);
    if (r == 0 && !rel_keys_shaped(rel, c)) {
        pg_graph_fail(g, "%s: positional module %d (%s): rel_keys gave rel_q %s, rel_k %s, e %s, q_shift %s: "
                      "expected rel_k, no rel_q or e, and a q_shift of (H, Dh) = (%lld, %lld) %s or none", fn, i,
                      p->base.type, SHAPE(rel->q), SHAPE(rel->k), SHAPE(rel->e), SHAPE(rel->q_shift),
                      (long long)c->heads, (long long)c->head_dim, pg_dtype_name(c->dtype));
        r = -1;
    }
    if (r != 0) {
        if (r < 0 && !pg_graph_error(g))
            pg_graph_fail(g, "%s: positional module %d (%s): rel_keys failed", fn, i, p->base.type);
        *rel = (pg_pos_rel){0};
        return r;
    }
    const pg_tensor q = heads_header(c, c->Lq), k = heads_header(c, c->Lk);
    const pg_attn_operands ops = {.layout = PG_ATTN_HEADS, .q = &q, .k = &k, .v = &k, .rel_q = &q, .rel_k = rel->k,
                                  .dist_bias = rel->dist};
    return pg_attn_check(g, fn, &ops) == 0 ? 0 : -1;
}

/* Runs mod_qkv / mod_bias of every positional module in order; t->bias
 * accumulates the biases (NULL while none). With `fused` the biases come from
 * dist_bias as (H, Lq + Lk - 1) tables over distance instead, from sep_bias
 * as the two halves t->sep[0] (B, H, Lq), t->sep[1] (B, H, Lk) of a separable bias,
 * from rel_bias as relative keys t->rel (from rel_keys, their queries q itself: t->rel_self),
 * or from mod_bias alone as t->pair
 * (Bb, H, Lq, Lk) for the kernel's pair_bias, and a rotation from qk_rotation as t->rot
 * (kernel_rotation). qkv NULL with `packed`: q, k, v still in the projection (project),
 * split before the first hook that takes them. */
static bool run_posmods(pg_graph *g, const char *fn, pg_mha *m, pg_tensor *qkv[3], pg_tensor *packed,
                        const pg_pos_ctx *c, bool fused, pos_terms *t)
{
    pg_tensor **q = &qkv[0], **k = &qkv[1], **v = &qkv[2];
    pg_tensor **bias = &t->bias, **sep = t->sep, **pair = &t->pair;
    pg_pos_rel *rel = &t->rel;
    for (int i = 0; i < m->n_pos; i++) {
        pg_posmod *p = m->pos[i];
        int by_kernel = p->ops->mod_qkv ? kernel_rotation(g, fn, m, i, c, fused ? &t->rot : NULL) : 1;
        if (by_kernel < 0)
            return false;
        if (p->ops->mod_qkv && by_kernel) {
            if (!split_packed(g, m, packed, qkv)) /* the hooks given q, k, v need them split */
                return false;
            pg_tensor *q0 = *q, *k0 = *k, *v0 = *v;
            if (p->ops->mod_qkv(g, p, q, k, v, c) != 0) {
                if (!pg_graph_error(g)) /* a hook that failed without saying why */
                    pg_graph_fail(g, "%s: positional module %d (%s): mod_qkv failed", fn, i, p->base.type);
                return false;
            }
            bool same = *q && *k && *v && pg_same_shape(*q, q0) && pg_same_shape(*k, k0) && pg_same_shape(*v, v0) &&
                        (*q)->dtype == q0->dtype && (*k)->dtype == k0->dtype && (*v)->dtype == v0->dtype;
            if (!same) {
                pg_graph_fail(g, "%s: positional module %d (%s): mod_qkv must keep the shapes of q %s, k %s, v %s", fn,
                              i, p->base.type, SHAPE(q0), SHAPE(k0), SHAPE(v0));
                return false;
            }
        }
        int by_dist = 1; /* dist_bias_if: 0 took the call's bias over distance into *bias, 1 declined */
        if (p->ops->mod_bias && fused && !p->ops->dist_bias && p->ops->dist_bias_if) {
            pg_tensor *b = NULL;
            if ((by_dist = distance_bias_if(g, fn, i, p, c, &b)) < 0)
                return false;
            if (by_dist == 0 && !(*bias = *bias ? pg_add(g, *bias, b) : b))
                return false;
        }
        if (by_dist == 0) {
            continue;
        } else if (p->ops->mod_bias && fused && !p->ops->dist_bias && p->ops->rel_bias) {
            int own = own_rel_keys(g, fn, m, i, packed && !*q, c, t, rel);
            if (own < 0)
                return false;
            t->rel_self = own == 0;
            if (own == 0 && rel->dist && !(*bias = *bias ? pg_add(g, *bias, rel->dist) : rel->dist))
                return false;
            if (own && (!split_packed(g, m, packed, qkv) || !relative_keys(g, fn, i, p, *q, *k, c, rel, sep)))
                return false;
        } else if (p->ops->mod_bias && fused && !p->ops->dist_bias && p->ops->sep_bias) {
            if (!separable_bias(g, fn, i, p, c, sep))
                return false;
        } else if (p->ops->mod_bias && fused && p->ops->dist_bias) {
            pg_tensor *b = distance_bias(g, fn, i, p, c);
            if (!b)
                return false;
            *bias = *bias ? pg_add(g, *bias, b) : b;
        } else if (p->ops->mod_bias) { /* a bias per pair: the reference's bias, or the kernel's pair_bias */
            pg_tensor *b = split_packed(g, m, packed, qkv) ? p->ops->mod_bias(g, p, *q, *k, *v, c) : NULL;
            if (!b) {
                if (!pg_graph_error(g))
                    pg_graph_fail(g, "%s: positional module %d (%s): mod_bias failed", fn, i, p->base.type);
                return false;
            }
            char what[96];
            snprintf(what, sizeof what, "positional module %d (%s) gave a bias that", i, p->base.type);
            const pg_attn_operands ops = {.layout = PG_ATTN_SIZES, .B = c->B, .H = c->heads, .Lq = c->Lq,
                                          .Lk = c->Lk, .head_dim = c->head_dim, .dtype = c->dtype, .bias = b,
                                          .bias_name = what};
            if (pg_attn_check(g, fn, &ops) != 0)
                return false;
            pg_tensor **sum = fused ? pair : bias;
            *sum = *sum ? pg_add(g, *sum, b) : b;
        }
    }
    if (t->rel_self && t->rot.cos_q && !rel->q_shift) { /* the kernel's rotation would turn the q the term reads
                                                        * (a shifted q never meets one: own_rel_keys declines) */
        if (!split_packed(g, m, packed, qkv))
            return false;
        rel->q = *q, t->rel_self = false;
    }
    return !fused || !*pair || (*pair = pair_shaped(g, *pair, c));
}

/* m, x (B, Lq, dim), context (cross: (B, Lk, context_dim), self: NULL) and the args */
static bool mha_inputs_ok(pg_graph *g, const char *fn, const pg_mha *m, const pg_tensor *x, const pg_tensor *context,
                          const pg_attn_args *a)
{
    if (!m) {
        pg_graph_fail(g, "%s: module is NULL", fn);
        return false;
    }
    const pg_mha_config *c = &m->cfg;
    if (!check_input(g, fn, "x", x, c->dim, c->dtype))
        return false;
    if (c->cross) {
        if (!check_input(g, fn, "context", context, c->context_dim, c->dtype))
            return false;
        if (context->shape[0] != x->shape[0]) {
            pg_graph_fail(g, "%s: batch sizes differ: x %s, context %s", fn, SHAPE(x), SHAPE(context));
            return false;
        }
    } else if (context) {
        pg_graph_fail(g, "%s: a self-attention module takes no context (got %s)", fn, SHAPE(context));
        return false;
    }
    int64_t Lk = c->cross ? context->shape[1] : x->shape[1];
    if (pg_attn_args_check(g, fn, a, !c->cross, x->shape[0], c->heads, x->shape[1], Lk, c->dtype) != 0)
        return false;
    if (a && m->base.training && c->dropout > 0 && !a->rng) {
        pg_graph_fail(g, "%s: attention dropout %g in train mode needs args.rng", fn, c->dropout);
        return false;
    }
    return true;
}

/* The band as an additive (L, L) bias: 0 inside, -inf outside (the reference path). */
static pg_tensor *band_bias(pg_graph *g, const pg_attn_band *b, int64_t L, pg_dtype dtype)
{
    pg_tensor *t = pg_empty(g, PG_F64, PG_SHAPE(L, L));
    if (!t)
        return NULL;
    const pg_flash_opts o = {.window = b->window, .look_backward = b->look_backward,
                             .look_forward = b->look_forward, .exact_window = b->exact};
    for (int64_t i = 0; i < L; i++) {
        int64_t lo, hi; /* the fused kernel's band (saturating) */
        pg_flash_band(&o, i, L, &lo, &hi);
        for (int64_t j = 0; j < L; j++)
            pg_f64(t)[i * L + j] = j < lo || j > hi ? -INFINITY : 0.0;
    }
    return dtype == PG_F64 ? t : pg_cast(g, t, dtype);
}

/* The attention of the call's only positional module when it computes whole attentions
 * (the attend hook): 0 with *out, 1 when there is no such module or it declines, -1 after
 * pg_graph_fail. */
static int module_attends(pg_graph *g, const char *fn, pg_mha *m, pg_tensor *qkv[3], pg_tensor *packed,
                          const pg_pos_ctx *c, pg_tensor **out)
{
    pg_posmod *p = m->n_pos == 1 ? m->pos[0] : NULL;
    if (!p || !p->ops->attend)
        return 1;
    if (!split_packed(g, m, packed, qkv))
        return -1;
    int rc = p->ops->attend(g, p, qkv[0], qkv[1], qkv[2], c, out);
    if (rc < 0 || (rc == 0 && !*out)) {
        if (!pg_graph_error(g))
            pg_graph_fail(g, "%s: positional module 0 (%s): attend failed", fn, p->base.type);
        return -1;
    }
    return rc;
}

/* Whether the fused kernel computes exactly what this call asks (see pg_mha_config.unfused). */
static bool fusable(const pg_mha *m, const pg_attn_args *a, int64_t Lq, int64_t Lk)
{
    const pg_mha_config *c = &m->cfg;
    if (c->unfused || a->bias || Lq != Lk || a->pos || a->pos_q || a->pos_k)
        return false;
    int n_rel = 0; /* the kernel takes one set of relative keys */
    for (int i = 0; i < m->n_pos; i++) {
        const pg_posmod_ops *o = m->pos[i]->ops;
        n_rel += o->mod_bias && !o->dist_bias && o->rel_bias;
    }
    return n_rel <= 1;
}

/* The checked inputs projected: q (B, H, Lq, Dh), k, v (B, H, Lk, Dh) into qkv and
 * the positional context of the call into *pc. With `packed` non-NULL, a call the fused
 * kernel will take whose q, k, v are the self-attention projection's plain splits leaves them
 * there: *packed = the projection (B, L, 3 H Dh), qkv NULL (split_packed splits them if a
 * positional module needs them). false after pg_graph_fail. */
static bool project(pg_graph *g, const char *fn, pg_mha *m, pg_tensor *x, pg_tensor *context, const pg_attn_args *a,
                    pg_tensor *qkv[3], pg_tensor **packed, pg_pos_ctx *pc)
{
    if (!mha_inputs_ok(g, fn, m, x, context, a))
        return false;
    const pg_mha_config *c = &m->cfg;
    int64_t B = x->shape[0], Lq = x->shape[1], Lk = c->cross ? context->shape[1] : Lq, H = c->heads;
    bool plain = packed && a && !c->cross && !c->qk_norm && m->kv_heads == H && fusable(m, a, Lq, Lk);
    bool ok = plain ? (*packed = pg_linear_forward(g, m->to_qkv, x)) != NULL : heads_of(g, m, x, context, qkv);
    *pc = (pg_pos_ctx){c->cross ? a->pos_q : a->pos, c->cross ? a->pos_k : a->pos, a->mask, !c->cross, c->causal, B,
                       H, m->head_dim, Lq, Lk, c->scale, c->dtype, a->rng, x};
    return ok;
}

/* What both probes below share: project x (and context) to q, k, v and run the
 * positional modules over them, as pg_mha_forward's reference path does. */
static bool positional_terms(pg_graph *g, const char *fn, pg_mha *m, pg_tensor *x, pg_tensor *context,
                             const pg_attn_args *a, pg_tensor *qkv[3], pg_pos_ctx *pc, pg_tensor **bias)
{
    pos_terms t = {0};
    bool ok = project(g, fn, m, x, context, a, qkv, NULL, pc) && run_posmods(g, fn, m, qkv, NULL, pc, false, &t);
    *bias = t.bias;
    return ok;
}

static const pg_attn_args NO_ATTN_ARGS = {0};

pg_tensor *pg_mha_positional_bias(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, const pg_attn_args *a)
{
    const char *fn = "pg_mha_positional_bias";
    PG_NN_SCRATCH(g, fn, pg_mha_positional_bias(g, m, x, context, a));
    a = a ? a : &NO_ATTN_ARGS;
    pg_tensor *qkv[3] = {NULL, NULL, NULL}, *bias;
    pg_pos_ctx pc;
    if (!positional_terms(g, fn, m, x, context, a, qkv, &pc, &bias))
        return NULL;
    if (!bias) {
        pg_graph_fail(g, "%s: none of the attention's %d positional modules adds a logits bias", fn, m->n_pos);
        return NULL;
    }
    return pg_broadcast_to(g, bias, PG_SHAPE(pc.B, pc.heads, pc.Lq, pc.Lk));
}

/* The bias of the reference path: the positional modules', a->bias and the band's. */
static pg_tensor *reference_bias(pg_graph *g, const pg_mha *m, const pg_attn_args *a, pg_tensor *bias, int64_t Lq)
{
    if (a->bias)
        bias = bias ? pg_add(g, bias, a->bias) : a->bias;
    if (m->cfg.band.window > 0) {
        pg_tensor *bb = band_bias(g, &m->cfg.band, Lq, m->cfg.dtype);
        bias = bias ? pg_add(g, bias, bb) : bb;
    }
    return bias;
}

pg_tensor *pg_mha_attention_weights(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, const pg_attn_args *a)
{
    const char *fn = "pg_mha_attention_weights";
    PG_NN_SCRATCH(g, fn, pg_mha_attention_weights(g, m, x, context, a));
    a = a ? a : &NO_ATTN_ARGS;
    pg_tensor *qkv[3] = {NULL, NULL, NULL}, *bias;
    pg_pos_ctx pc;
    if (!positional_terms(g, fn, m, x, context, a, qkv, &pc, &bias))
        return NULL;
    pg_sdpa_opts o = {reference_bias(g, m, a, bias, pc.Lq), a->mask, m->cfg.causal, m->cfg.scale, 0.0, NULL};
    return sdpa_weights(g, qkv[0], qkv[1], &o); /* (B, H, Lq, Lk) */
}

pg_tensor *pg_mha_forward(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, const pg_attn_args *a)
{
    const char *fn = "pg_mha_forward";
    PG_NN_SCRATCH(g, fn, pg_mha_forward(g, m, x, context, a));
    a = a ? a : &NO_ATTN_ARGS;
    pg_tensor *qkv[3] = {NULL, NULL, NULL}, *packed = NULL; /* packed: q, k, v read in place */
    pg_pos_ctx pc;
    if (!project(g, fn, m, x, context, a, qkv, &packed, &pc))
        return NULL;
    const pg_mha_config *c = &m->cfg;
    int64_t Lq = pc.Lq, Lk = pc.Lk;
    bool drop = m->base.training && c->dropout > 0;
    bool fused = fusable(m, a, Lq, Lk);
    pg_tensor *out = NULL;
    pos_terms t = {0};
    bool merged = false; /* out already (B, Lq, H Dh): the fused kernel writes it so */
    const pg_attn_band *band = &c->band;
    int attended = fused && !drop && band->window == 0 ? module_attends(g, fn, m, qkv, packed, &pc, &out) : 1;
    if (attended < 0)
        return NULL;
    if (attended == 0) {
        /* the module's attention: out (B, H, Lq, Dh) */
    } else if (!run_posmods(g, fn, m, qkv, packed, &pc, fused, &t)) {
        return NULL;
    } else if (fused) {
        pg_flash_opts fo = {.scale = c->scale, .causal = c->causal, .mask = a->mask, .dist_bias = t.bias,
                            .window = band->window, .look_backward = band->look_backward,
                            .look_forward = band->look_forward, .exact_window = band->exact,
                            .sep_q = t.sep[0], .sep_k = t.sep[1], .rel_q = t.rel.q, .rel_k = t.rel.k,
                            .rel_scale = t.rel.scale, .rel_q_is_q = t.rel_self, .q_shift = t.rel.q_shift,
                            .pair_bias = t.pair,
                            .dropout = drop ? c->dropout : 0.0, .rng = a->rng, .merge_heads = true,
                            .rot_cos_q = t.rot.cos_q, .rot_sin_q = t.rot.sin_q, .rot_cos_k = t.rot.cos_k,
                            .rot_sin_k = t.rot.sin_k, .rot_interleaved = t.rot.interleaved};
        out = qkv[0] ? pg_flash_attention_unchecked(g, qkv[0], qkv[1], qkv[2], &fo) /* (B, Lq, H Dh); checked above */
                     : pg_flash_attention_qkv_unchecked(g, packed, c->heads, &fo);
        merged = true;
    } else {
        pg_sdpa_opts o = {reference_bias(g, m, a, t.bias, Lq), a->mask, c->causal, c->scale,
                          drop ? c->dropout : 0.0, a->rng};
        out = sdpa(g, qkv[0], qkv[1], qkv[2], &o); /* (B, H, Lq, Dh); checked above */
    }
    if (!merged)
        out = pg_merge_heads(g, out); /* (B, Lq, H Dh), heads outer: (n h) */
    return out ? pg_linear_forward(g, m->to_out, out) : NULL;
}

int pg_mha_qkv(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, pg_tensor *qkv[3])
{
    const char *fn = "pg_mha_qkv";
    if (!g || !qkv) {
        pg_graph_fail(g, "%s: %s is NULL", fn, !g ? "graph" : "qkv");
        return -1;
    }
    if (!mha_inputs_ok(g, fn, m, x, context, NULL))
        return -1;
    return heads_of(g, m, x, context, qkv) ? 0 : -1;
}
