/* LocalAttention (nn/local_attention.h; docs/semantics.md §2, §7). */
#include "local_attention.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "../autograd/flash.h"
#include "pos_rotary.h"

#include "../tensor/shape_util.h"
#define SELF_VALUE (-5e4) /* upstream TOKEN_SELF_ATTN_VALUE */

/* a + b and a * b for a, b >= 0, INT64_MAX when the result is not representable */
static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }
static int64_t sat_mul(int64_t a, int64_t b) { return b != 0 && a > INT64_MAX / b ? INT64_MAX : a * b; }

pg_local_attention_config pg_local_attention_defaults(int64_t window_size)
{
    pg_local_attention_config c = {0};
    c.window_size = window_size;
    c.look_backward = 1;
    c.look_forward = -1;
    c.use_rotary_pos_emb = true;
    c.dtype = PG_F32;
    return c;
}

static void la_destroy(pg_module *base)
{
    pg_local_attention *m = (pg_local_attention *)base;
    free(m->pos);
    free(m);
}

pg_local_attention *pg_local_attention_new(const pg_local_attention_config *c, pg_posmod *const *pos, int n_pos)
{
    const char *fn = "pg_local_attention_new";
    const char *bad = NULL;
    if (!c)
        bad = "config is NULL";
    else if (n_pos < 0 || (n_pos > 0 && !pos))
        bad = "n_pos < 0 or pos NULL";
    else if (c->window_size < 1)
        bad = "window_size must be >= 1";
    else if (c->look_backward < 0 || c->look_forward < -1)
        bad = "look_backward must be >= 0 and look_forward >= 0 (or -1: auto)";
    else if (c->causal && c->look_forward > 0)
        bad = "look_forward must be 0 when causal";
    else if (!(c->dropout >= 0 && c->dropout < 1) || !(c->scale >= 0) || !isfinite(c->scale) ||
             !(c->xpos_scale_base >= 0) || !isfinite(c->xpos_scale_base))
        bad = "need dropout in [0, 1), a finite scale >= 0 and xpos_scale_base >= 0";
    else if (!pg_dtype_is_float(c->dtype))
        bad = "dtype must be f32 or f64";
    else if (c->dim < 0 || (c->use_rotary_pos_emb && c->dim % 2 != 0))
        bad = "rotary needs an even dim >= 2 (0: no rotary)";
    else if (c->use_xpos && !(c->use_rotary_pos_emb && c->dim > 0))
        bad = "use_xpos needs rotary (use_rotary_pos_emb and dim > 0)";
    for (int i = 0; !bad && i < n_pos; i++)
        if (!pos[i])
            bad = "a positional module is NULL";
        else if (!pos[i]->ops->dist_bias && !pos[i]->ops->band_bias) {
            pg_set_error("%s: positional module %d (%s) has neither dist_bias (a bias of the distance) nor band_bias "
                         "(a bias on the band from q and k), so it cannot act on LocalAttention's windows",
                         fn, i, pos[i]->base.type);
            pg_posmod_free_list(pos, 0, n_pos);
            return NULL;
        }
    if (bad) {
        pg_set_error("%s: %s (window %lld, causal %d, look_backward %lld, look_forward %lld, dim %lld, "
                     "xpos %d, %d schemes)",
                     fn, bad, c ? (long long)c->window_size : 0LL, c ? c->causal : 0,
                     c ? (long long)c->look_backward : 0LL, c ? (long long)c->look_forward : 0LL,
                     c ? (long long)c->dim : 0LL, c ? c->use_xpos : 0, n_pos);
        if (n_pos > 0 && pos)
            pg_posmod_free_list(pos, 0, n_pos);
        return NULL;
    }
    pg_local_attention *m = pg_module_alloc(sizeof *m, "LocalAttention", la_destroy, fn);
    if (m && n_pos && !(m->pos = malloc((size_t)n_pos * sizeof *m->pos))) {
        pg_set_error("%s: out of memory", fn);
        pg_module_free(&m->base);
        m = NULL;
    }
    if (!m) {
        pg_posmod_free_list(pos, 0, n_pos);
        return NULL;
    }
    m->cfg = *c;
    if (m->cfg.look_forward < 0)
        m->cfg.look_forward = c->causal ? 0 : 1;
    if (m->cfg.xpos_scale_base == 0)
        m->cfg.xpos_scale_base = (double)(c->window_size / 2);
    m->n_pos = n_pos;
    for (int i = 0; i < n_pos; i++)
        m->pos[i] = pos[i];
    if (pg_posmod_adopt(&m->base, pos, n_pos) != 0)
        return pg_module_fail(&m->base, NULL);
    if (c->use_rotary_pos_emb && c->dim > 0) {
        if (m->cfg.use_xpos && !(m->cfg.xpos_scale_base > 0)) {
            pg_set_error("%s: xpos needs xpos_scale_base > 0 (window %lld gives %g)", fn, (long long)c->window_size,
                         m->cfg.xpos_scale_base);
            pg_module_free(&m->base);
            return NULL;
        }
        pg_rotary_opts o = pg_rotary_defaults();
        o.pairing = PG_ROTARY_HALF_SPLIT;
        m->rotary = pg_rotary_new(c->dim, &o, c->dtype);
        if (!m->rotary || pg_module_add_child(&m->base, "rel_pos", &m->rotary->base) != 0)
            return pg_module_fail(&m->base, NULL);
    }
    return m;
}

/* ---- forward ---------------------------------------------------------------------------- */

/* the (W, w, S) band of hidden (query, slot) pairs that do not depend on the data:
 * pad slots, autopadded keys (j >= n), causal, exact_windowsize. The slots are
 * those of lb, lf windows around (clamped to the windows that exist); the exact
 * window compares with the configured w0 lb, w0 lf (saturating). */
static pg_tensor *static_hidden(pg_graph *g, const pg_local_attention_config *c, int64_t n, int64_t W, int64_t w,
                                int64_t lb, int64_t lf)
{
    const int64_t S = (lb + lf + 1) * w, back = sat_mul(c->window_size, c->look_backward),
                  fwd = sat_mul(c->window_size, c->look_forward);
    pg_tensor *h = pg_empty(g, PG_BOOL, PG_SHAPE(W, w, S));
    if (!h)
        return NULL;
    uint8_t *hd = h->data;
    for (int64_t om = 0; om < W; om++)
        for (int64_t r = 0; r < w; r++) {
            int64_t a = om * w + r;
            for (int64_t s = 0; s < S; s++) {
                int64_t src = om - lb + s / w, j = src * w + s % w;
                bool hide = src < 0 || src >= W || j >= n;
                if (c->causal)
                    hide = hide || j > a || (c->exact_windowsize && a - j > back);
                else if (c->exact_windowsize)
                    hide = hide || j - a > fwd || a - j > back;
                hd[(om * w + r) * S + s] = hide;
            }
        }
    return h;
}

/* shared_qk: (W, w, S) true where the slot is the query itself */
static pg_tensor *self_band(pg_graph *g, int64_t lb, int64_t lf, int64_t W, int64_t w)
{
    int64_t S = (lb + lf + 1) * w;
    pg_tensor *h = pg_empty(g, PG_BOOL, PG_SHAPE(W, w, S));
    if (!h)
        return NULL;
    uint8_t *hd = h->data;
    for (int64_t om = 0; om < W; om++)
        for (int64_t r = 0; r < w; r++)
            for (int64_t s = 0; s < S; s++) {
                int64_t src = om - lb + s / w;
                hd[(om * w + r) * S + s] = src >= 0 && src < W && src * w + s % w == om * w + r;
            }
    return h;
}

/* shared_qk: k / max(|k|, 1e-12) over the head dim of a 4-D k (docs/semantics.md §7, step 2) */
static pg_tensor *unit_keys(pg_graph *g, pg_tensor *k)
{
    return pg_div(g, k, pg_clamp(g, pg_sqrt(g, pg_sum(g, pg_square(g, k), 1, (const int[]){3}, true)), 1e-12,
                                 INFINITY));
}

/* shared_qk on the fused path: bias + (H, 2n - 1) holding SELF_VALUE at distance
 * 0 (index n - 1), 0 elsewhere (bias NULL: the table alone). Added rather than
 * set: with another key visible exp(-5e4 + ...) is 0 in f32 and f64 as the
 * reference's fill gives, and a row that sees only itself has weight 1 and zero
 * logit gradient either way (docs/local_attention.md, Two paths). */
static pg_tensor *self_dist_bias(pg_graph *g, pg_tensor *bias, int64_t n, int64_t H, pg_dtype dt)
{
    pg_tensor *t = pg_zeros(g, dt, PG_SHAPE(H, 2 * n - 1));
    for (int64_t h = 0; t && h < H; h++)
        pg_set(t, h * (2 * n - 1) + n - 1, SELF_VALUE);
    return bias && t ? pg_add(g, bias, t) : t;
}

/* xPos factors for queries (w, d) (key false) or key slots (S, d) (key true), true
 * positions measured from the centre (omega - lb) w + floor(S / 2) of each window's
 * look-around: query offset r -> r + lb w - floor(S/2), slot s -> s - floor(S/2);
 * keys get the inverse */
static pg_tensor *xpos_table(pg_graph *g, const pg_local_attention *m, int64_t w, int64_t lb, int64_t S, int64_t d,
                             bool key, pg_dtype dt)
{
    int64_t n = key ? S : w, half = d / 2;
    pg_tensor *t = pg_empty(g, dt, PG_SHAPE(n, d));
    for (int64_t i = 0; t && i < n; i++) {
        double p = key ? (double)(i - S / 2) : (double)(i + lb * w - S / 2);
        for (int64_t ch = 0; ch < d; ch++) {
            int64_t f = ch % half;
            double zeta = (2.0 * (double)f + 0.4 * (double)d) / (1.4 * (double)d);
            double s = pow(zeta, p / m->cfg.xpos_scale_base);
            pg_set(t, i * d + ch, key ? 1.0 / s : s);
        }
    }
    return t;
}

/* the schemes' bias on the band: (Hs, w, S) from dist_bias at the distances
 * r + lb w - s; NULL with no error when there are no schemes */
static pg_tensor *scheme_bias(pg_graph *g, const char *fn, pg_local_attention *m, int64_t b, int64_t w, int64_t lb,
                              int64_t S, pg_dtype dt, pg_rng *rng)
{
    int64_t dmin = lb * w - (S - 1), D = w + S - 1;
    pg_tensor *total = NULL;
    pg_tensor *d = pg_arange(g, dt, (double)dmin, (double)(dmin + D), 1.0); /* (D) */
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(w * S));
    if (!d || !idx)
        return NULL;
    int64_t *ix = idx->data;
    for (int64_t r = 0; r < w; r++)
        for (int64_t s = 0; s < S; s++)
            ix[r * S + s] = r + lb * w - s - dmin;
    pg_pos_ctx ctx = {.self_attn = true, .causal = m->cfg.causal, .B = b, .Lq = w, .Lk = S, .dtype = dt, .rng = rng};
    for (int i = 0; i < m->n_pos; i++) {
        if (!m->pos[i]->ops->dist_bias) /* a band_bias scheme: hook_bias */
            continue;
        pg_tensor *t = m->pos[i]->ops->dist_bias(g, m->pos[i], d, &ctx); /* (Hs, D) */
        if (!t)
            return NULL;
        if (t->ndim != 2 || t->shape[1] != D || b % t->shape[0] != 0 || t->dtype != dt) {
            pg_graph_fail(g, "%s: scheme %d (%s) gave a distance bias %s, expected %s (H, %lld) with H dividing %lld "
                          "rows",
                          fn, i, m->pos[i]->base.type, SHAPE(t), pg_dtype_name(dt), (long long)D, (long long)b);
            return NULL;
        }
        t = pg_reshape(g, pg_index_select(g, t, 1, idx), PG_SHAPE(t->shape[0], w, S)); /* (Hs, w, S) */
        if (total && t && total->shape[0] != t->shape[0] && total->shape[0] != 1 && t->shape[0] != 1) {
            pg_graph_fail(g, "%s: schemes disagree on heads (%lld vs %lld)", fn, (long long)total->shape[0],
                          (long long)t->shape[0]);
            return NULL;
        }
        total = total ? pg_add(g, total, t) : t;
    }
    return total;
}

/* The biases of the schemes without dist_bias, from their band_bias hooks on the
 * unscaled (autopadded) inputs q, k (b, 1, L', d): (b, W, w, S), or NULL with no
 * error when there are none. */
static pg_tensor *hook_bias(pg_graph *g, const char *fn, pg_local_attention *m, pg_tensor *q, pg_tensor *k,
                            const pg_pos_band *band, const pg_pos_ctx *ctx)
{
    pg_tensor *total = NULL, *q3 = NULL, *k3 = NULL;
    int64_t b = q->shape[0], L = q->shape[2], d = q->shape[3], S = (band->lb + band->lf + 1) * band->w;
    for (int i = 0; i < m->n_pos; i++) {
        pg_posmod *p = m->pos[i];
        if (p->ops->dist_bias) /* dist_bias wins: scheme_bias */
            continue;
        if (!q3) {
            q3 = pg_reshape(g, q, PG_SHAPE(b, L, d));
            k3 = pg_reshape(g, k, PG_SHAPE(b, L, d));
        }
        pg_tensor *t = q3 && k3 ? p->ops->band_bias(g, p, q3, k3, band, ctx) : NULL;
        if (!t) {
            if (!pg_graph_error(g)) /* a hook that failed without saying why */
                pg_graph_fail(g, "%s: positional module %d (%s): band_bias failed", fn, i, p->base.type);
            return NULL;
        }
        if (t->ndim != 4 || t->shape[0] != b || t->shape[1] != band->W || t->shape[2] != band->w ||
            t->shape[3] != S || t->dtype != q->dtype) {
            pg_graph_fail(g, "%s: positional module %d (%s) gave a band bias %s, expected %s (%lld, %lld, %lld, %lld)",
                          fn, i, p->base.type, SHAPE(t), pg_dtype_name(q->dtype), (long long)b, (long long)band->W,
                          (long long)band->w, (long long)S);
            return NULL;
        }
        total = total ? pg_add(g, total, t) : t;
    }
    return total;
}

/* sim (b, W, w, S) + bias (Hb, w, S) with row r using bias[r mod Hb] */
static pg_tensor *add_head_bias(pg_graph *g, pg_tensor *sim, pg_tensor *bias)
{
    if (!sim || !bias)
        return NULL;
    int64_t b = sim->shape[0], W = sim->shape[1], w = sim->shape[2], S = sim->shape[3], Hb = bias->shape[0];
    pg_tensor *s5 = pg_reshape(g, sim, PG_SHAPE(b / Hb, Hb, W, w, S));
    s5 = pg_add(g, s5, pg_reshape(g, bias, PG_SHAPE(1, Hb, 1, w, S)));
    return pg_reshape(g, s5, PG_SHAPE(b, W, w, S));
}

/* ---- explicit positions (pg_local_args.pos_q / pos_k; docs/local_attention.md "Positions") ---- */

/* pos NULL, or (B0, n) of f32/f64/i64 with B0 dividing the b packed rows and finite entries */
static bool pos_arg_ok(pg_graph *g, const char *fn, const char *name, const pg_tensor *pos, int64_t b, int64_t n)
{
    if (!pos)
        return true;
    bool dt = pos->dtype == PG_F32 || pos->dtype == PG_F64 || pos->dtype == PG_I64;
    if (!dt || pos->ndim != 2 || pos->shape[0] < 1 || b % pos->shape[0] != 0 || pos->shape[1] != n) {
        pg_graph_fail(g, "%s: %s is %s, expected (B0, L) = (B0 dividing the %lld packed rows, %lld) of f32, f64 "
                      "or i64",
                      fn, name, SHAPE(pos), (long long)b, (long long)n);
        return false;
    }
    for (int64_t i = 0; i < pos->numel; i++)
        if (!isfinite(pg_get(pos, i))) {
            pg_graph_fail(g, "%s: %s %s holds a non-finite position at flat index %lld", fn, name, SHAPE(pos),
                          (long long)i);
            return false;
        }
    return true;
}

/* The positions of R rows over the ne >= n (autopadded) tokens as f64 (R, ne): row r
 * takes pos[r / (R / B0)] (B0 dividing R), NULL gives 0..n-1; autopadded tokens
 * t >= n continue from the last position by +1 (hidden keys, cut queries: any finite
 * value would do). No gradient: positions are data. */
static pg_tensor *row_positions(pg_graph *g, const pg_tensor *pos, int64_t R, int64_t n, int64_t ne)
{
    pg_tensor *p = pg_empty(g, PG_F64, PG_SHAPE(R, ne));
    if (!p)
        return NULL;
    double *pd = p->data;
    int64_t per = pos ? R / pos->shape[0] : R;
    for (int64_t r = 0; r < R; r++)
        for (int64_t t = 0; t < ne; t++) {
            int64_t tt = t < n ? t : n - 1;
            double v = pos ? pg_get(pos, (r / per) * n + tt) : (double)tt;
            pd[r * ne + t] = v + (double)(t - tt);
        }
    return p;
}

/* xPos factors at the positions pq, pk (R, W w) of the R = b rows: queries (b, W, w, d)
 * (key false) or key slots (b, W, S, d) (key true, the inverse; 1 for a slot without a
 * token, which is hidden). Window omega measures from c = pq[row, omega w] - lb w +
 * floor(S/2): with the default positions the centre of xpos_table, the same numbers. */
static pg_tensor *xpos_table_at(pg_graph *g, const pg_local_attention *m, const pg_tensor *pq,
                                const pg_tensor *pk, const pg_pos_band *bd, int64_t d, bool key, pg_dtype dt)
{
    int64_t R = pq->shape[0], W = bd->W, w = bd->w, S = (bd->lb + bd->lf + 1) * w, n = key ? S : w, half = d / 2;
    const double *qd = pq->data, *kd = pk->data;
    pg_tensor *t = pg_empty(g, dt, PG_SHAPE(R, W, n, d));
    for (int64_t row = 0; t && row < R; row++)
        for (int64_t om = 0; om < W; om++) {
            double c = qd[row * W * w + om * w] - (double)(bd->lb * w) + (double)(S / 2);
            for (int64_t i = 0; i < n; i++) {
                int64_t tok = key ? (om - bd->lb) * w + i : om * w + i;
                bool none = tok < 0 || tok >= W * w;
                double p = none ? c : (key ? kd : qd)[row * W * w + tok] - c;
                for (int64_t ch = 0; ch < d; ch++) {
                    double zeta = (2.0 * (double)(ch % half) + 0.4 * (double)d) / (1.4 * (double)d);
                    double s = none ? 1.0 : pow(zeta, p / m->cfg.xpos_scale_base);
                    pg_set(t, ((row * W + om) * n + i) * d + ch, key ? 1.0 / s : s);
                }
            }
        }
    return t;
}

/* sim (b, W, w, S) plus the dist_bias schemes at the given positions: the distance of
 * query r of window omega and slot s in packed row `row` is pq[row, omega w + r] -
 * pk[row, (omega - lb) w + s] (0 for a slot without a token: hidden anyway). The
 * distances are formed once per position group (G = lcm of the two position batches:
 * row r is group r / (b / G)); row r takes head r mod Hs of a scheme's (Hs, .) result. */
static pg_tensor *scheme_bias_at(pg_graph *g, const char *fn, pg_local_attention *m, pg_tensor *sim,
                                 const pg_local_args *a, int64_t n, int64_t ne, const pg_pos_band *bd, pg_rng *rng)
{
    int64_t b = sim->shape[0], W = bd->W, w = bd->w, S = sim->shape[3];
    int64_t Bq = a->pos_q ? a->pos_q->shape[0] : 1, Bk = a->pos_k ? a->pos_k->shape[0] : 1;
    int64_t G = Bq / pg_gcd64(Bq, Bk) * Bk, D = G * W * w * S;
    pg_tensor *pq = row_positions(g, a->pos_q, G, n, ne), *pk = row_positions(g, a->pos_k, G, n, ne);
    pg_tensor *dist = pg_empty(g, sim->dtype, PG_SHAPE(D));
    if (!pq || !pk || !dist)
        return NULL;
    const double *qd = pq->data, *kd = pk->data;
    for (int64_t gr = 0; gr < G; gr++)
        for (int64_t om = 0; om < W; om++)
            for (int64_t r = 0; r < w; r++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t j = (om - bd->lb) * w + s, at = ((gr * W + om) * w + r) * S + s;
                    pg_set(dist, at, j < 0 || j >= ne ? 0.0 : qd[gr * ne + om * w + r] - kd[gr * ne + j]);
                }
    pg_pos_ctx ctx = {.self_attn = true, .causal = m->cfg.causal, .B = b, .Lq = ne, .Lk = ne, .dtype = sim->dtype,
                      .rng = rng};
    for (int i = 0; i < m->n_pos && sim; i++) {
        if (!m->pos[i]->ops->dist_bias)
            continue;
        pg_tensor *t = m->pos[i]->ops->dist_bias(g, m->pos[i], dist, &ctx); /* (Hs, D) */
        if (!t)
            return NULL;
        if (t->ndim != 2 || t->shape[1] != D || b % t->shape[0] != 0 || t->dtype != sim->dtype) {
            pg_graph_fail(g, "%s: scheme %d (%s) gave a distance bias %s, expected %s (H, %lld) with H dividing %lld "
                          "rows",
                          fn, i, m->pos[i]->base.type, SHAPE(t), pg_dtype_name(sim->dtype), (long long)D,
                          (long long)b);
            return NULL;
        }
        int64_t Hs = t->shape[0];
        pg_tensor *rows = pg_empty(g, PG_I64, PG_SHAPE(b)); /* one per scheme: index_select keeps it */
        if (!rows)
            return NULL;
        int64_t *ri = rows->data;
        for (int64_t r = 0; r < b; r++) /* (head, group) of row r */
            ri[r] = (r % Hs) * G + r / (b / G);
        t = pg_index_select(g, pg_reshape(g, t, PG_SHAPE(Hs * G, W * w * S)), 0, rows); /* (b, W w S) */
        sim = pg_add(g, sim, pg_reshape(g, t, PG_SHAPE(b, W, w, S)));
    }
    return sim;
}

/* ---- the fused path ------------------------------------------------------------------ */

/* Whether the fused band kernel computes what this call asks, apart from the
 * schemes' head counts (checked once their tables exist). xPos: the kernel's
 * (flash.h) gives pair (i, j) the factor zeta^((i - j) / s) of the reference's
 * per-window tables (their positions from a window's centre differ by i - j);
 * with a window override w the band is windows of w, but an exact window
 * compares with w0 (static_hidden) within those windows: the kernel's exact band
 * i - w0 lb .. i + w0 lf lies inside them only when w >= w0. */
static bool band_fusable(const pg_local_attention *m, const pg_local_args *a, const pg_tensor *q, bool drop)
{
    const pg_local_attention_config *c = &m->cfg;
    bool given = a->pos_q || a->pos_k; /* rotary takes (1 or B, L) positions; distance tables need defaults */
    if (c->unfused || (c->use_xpos && given) || ((a->attn_bias || drop) && a->window_size > 0))
        return false;
    if (a->window_size > 0 && c->exact_windowsize && a->window_size < c->window_size)
        return false;
    if (a->mask && a->mask->shape[0] != q->shape[0])
        return false;
    if (given && (m->n_pos > 0 || (a->pos_q && a->pos_q->shape[0] != 1 && a->pos_q->shape[0] != q->shape[0]) ||
                  (a->pos_k && a->pos_k->shape[0] != 1 && a->pos_k->shape[0] != q->shape[0])))
        return false;
    int n_rel = 0; /* the kernel takes distance biases and one set of relative keys */
    for (int i = 0; i < m->n_pos; i++) {
        const pg_posmod_ops *o = m->pos[i]->ops;
        if (!o->dist_bias && !o->rel_bias)
            return false;
        n_rel += !o->dist_bias;
    }
    return n_rel <= 1;
}

/* The schemes' biases over every distance i - j of n tokens, (H, 2n - 1) in the
 * fused kernel's order; NULL without error when there is no scheme, and
 * *heads_ok false when a scheme's table is not (H, 2n - 1) of dt (its head count differs). */
static pg_tensor *band_dist_bias(pg_graph *g, pg_local_attention *m, int64_t n, int64_t H, pg_dtype dt, pg_rng *rng,
                                 bool *heads_ok)
{
    *heads_ok = true;
    if (m->n_pos == 0)
        return NULL;
    pg_tensor *d = pg_arange(g, dt, (double)(1 - n), (double)n, 1.0);
    pg_pos_ctx ctx = {.self_attn = true, .causal = m->cfg.causal, .B = 1, .heads = H, .Lq = n, .Lk = n,
                      .dtype = dt, .rng = rng};
    pg_tensor *total = NULL;
    for (int i = 0; i < m->n_pos && d; i++) {
        if (!m->pos[i]->ops->dist_bias) /* relative keys: band_rel */
            continue;
        pg_tensor *t = m->pos[i]->ops->dist_bias(g, m->pos[i], d, &ctx);
        if (!t)
            return NULL;
        if (t->ndim != 2 || t->shape[0] != H || t->shape[1] != 2 * n - 1 || t->dtype != dt) {
            *heads_ok = false; /* the band of ops takes it, or names what is wrong */
            return NULL;
        }
        total = total ? pg_add(g, total, t) : t;
    }
    return total;
}

/* The relative keys of the scheme without dist_bias (Transformer-XL; at most one:
 * band_fusable) on q, k (B, H, n, d) as given (before rotary and shared_qk, as
 * band_bias sees them), its key-side term into sep; 1 (no error) when its heads
 * do not fit, 0 also when there is no such scheme (rel->q stays NULL). */
static int band_rel(pg_graph *g, pg_local_attention *m, pg_tensor *q, pg_tensor *k, double sc, pg_rng *rng,
                    pg_pos_rel *rel, pg_tensor *sep[2])
{
    int64_t B = q->shape[0], n = q->shape[2];
    for (int i = 0; i < m->n_pos; i++) {
        pg_posmod *p = m->pos[i];
        if (p->ops->dist_bias)
            continue;
        /* heads and width left unknown (0): q, k of other heads than the scheme's give 1, not an error */
        pg_pos_ctx ctx = {.self_attn = true, .causal = m->cfg.causal, .B = B, .Lq = n, .Lk = n, .scale = sc,
                          .dtype = q->dtype, .rng = rng};
        int rc = p->ops->rel_bias(g, p, q, k, &ctx, rel);
        if (rc != 0)
            return rc;
        sep[1] = rel->e; /* the key side alone, or NULL */
        if (!rel->q || !rel->k) {
            if (!pg_graph_error(g))
                pg_graph_fail(g, "pg_local_attention_forward: positional module %d (%s): rel_bias failed", i,
                              p->base.type);
            return -1;
        }
    }
    return 0;
}

/* Dropout in train mode, with the band of ops' layout of its mask: windows of we rows, W of
 * them, lbe windows looked back, S slots (pg_local_attention_forward). p 0: none. */
typedef struct band_drop {
    double p;
    int64_t we, W, lbe, S;
} band_drop;

/* Rotary's tables for the band's queries and keys (B batches of n) at the given positions,
 * else the true positions 0 .. n - 1, into rot (cos_q, sin_q, cos_k, sin_k) for the kernel to
 * rotate q and k itself. Built without recording: positions are data (docs/local_attention.md
 * "Positions"), as on the band of ops. false after pg_graph_fail. */
static bool band_rotation(pg_graph *g, pg_local_attention *m, const pg_local_args *a, int64_t B, int64_t n,
                          pg_dtype dt, pg_tensor *rot[4], bool *interleaved)
{
    pg_no_grad_begin(g);
    bool ok = pg_rotary_tables(g, m->rotary, B, n, dt, a->pos_q, false, NAN, &rot[0], &rot[1], interleaved) == 0 &&
              pg_rotary_tables(g, m->rotary, B, n, dt, a->pos_k, true, NAN, &rot[2], &rot[3], interleaved) == 0;
    pg_no_grad_end(g);
    return ok;
}

/* q, k, v (B, L, d) or (B, H, L, d) through pg_flash_attention with the band;
 * *fallback true (no error) when a scheme's heads do not fit. */
static pg_tensor *band_fused(pg_graph *g, pg_local_attention *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                             const pg_local_args *a, int64_t w, double sc, const band_drop *dl, bool *fallback)
{
    const pg_local_attention_config *c = &m->cfg;
    int nd = q->ndim;
    int64_t B = q->shape[0], H = nd == 4 ? q->shape[1] : 1, n = q->shape[nd - 2], d = q->shape[nd - 1];
    bool heads_ok;
    pg_tensor *bias = band_dist_bias(g, m, n, H, q->dtype, a->rng, &heads_ok);
    if (!heads_ok) {
        *fallback = true;
        return NULL;
    }
    if (!bias && pg_graph_error(g))
        return NULL;
    if (c->shared_qk && !(bias = self_dist_bias(g, bias, n, H, q->dtype)))
        return NULL;
    pg_tensor *t3[3] = {q, k, v};
    for (int i = 0; nd != 4 && i < 3; i++) /* (B, L, d) as one head; (B, H, L, d) as it is */
        t3[i] = pg_reshape(g, t3[i], PG_SHAPE(B, H, n, d));
    pg_pos_rel rel = {0};
    pg_tensor *sep[2] = {NULL, NULL};
    int rc = t3[0] && t3[1] ? band_rel(g, m, t3[0], t3[1], sc, a->rng, &rel, sep) : -1;
    if (rc != 0) {
        *fallback = rc == 1;
        return NULL;
    }
    if (c->shared_qk) /* normalise, then rotary, as the reference */
        t3[1] = unit_keys(g, t3[1]);
    pg_tensor *rot[4] = {NULL, NULL, NULL, NULL}; /* the kernel's rotation tables: cos_q, sin_q, cos_k, sin_k */
    bool interleaved = false;
    if (m->rotary && !band_rotation(g, m, a, B, n, q->dtype, rot, &interleaved))
        return NULL;
    pg_flash_opts fo = {.scale = sc, .causal = c->causal, .mask = a->mask, .dist_bias = bias,
                        .window = c->exact_windowsize ? c->window_size : w, .look_backward = c->look_backward,
                        .look_forward = c->look_forward, .exact_window = c->exact_windowsize,
                        .sep_q = sep[0], .sep_k = sep[1], .rel_q = rel.q, .rel_k = rel.k, .rel_scale = rel.scale,
                        .xpos_scale_base = c->use_xpos ? c->xpos_scale_base : 0, .window_bias = a->attn_bias,
                        .dropout = dl->p, .rng = dl->p > 0 ? a->rng : NULL, .dropout_window = dl->p > 0 ? dl->we : 0,
                        .dropout_windows = dl->W, .dropout_slots = dl->S, .dropout_look_backward = dl->lbe,
                        .rot_cos_q = rot[0], .rot_sin_q = rot[1], .rot_cos_k = rot[2], .rot_sin_k = rot[3],
                        .rot_interleaved = interleaved};
    pg_tensor *out = pg_flash_attention_unchecked(g, t3[0], t3[1], t3[2], &fo); /* (B, H, n, d); checked */
    return nd == 4 ? out : pg_reshape(g, out, nd, q->shape);
}

pg_tensor *pg_local_attention_forward(pg_graph *g, pg_local_attention *m, pg_tensor *q, pg_tensor *k,
                                      pg_tensor *v, const pg_local_args *a)
{
    const char *fn = "pg_local_attention_forward";
    PG_NN_SCRATCH(g, fn, pg_local_attention_forward(g, m, q, k, v, a));
    const pg_local_args none = {0};
    if (!a)
        a = &none;
    if (!m) {
        pg_graph_fail(g, "%s: module is NULL", fn);
        return NULL;
    }
    /* q, k, v (b packed rows, n, d), the mask (B0, n) with B0 dividing b */
    const pg_attn_operands ops = {.layout = PG_ATTN_SAME, .q = q, .k = k, .v = v, .mask = a->mask, .mask_packed = true};
    if (pg_attn_check(g, fn, &ops) != 0)
        return NULL;
    const pg_local_attention_config *c = &m->cfg;
    pg_dtype dt = q->dtype;
    int nd = q->ndim;
    int64_t n = q->shape[nd - 2], d = q->shape[nd - 1], b = q->numel / (n * d > 0 ? n * d : 1);
    int64_t w0 = c->window_size, w = a->window_size > 0 ? a->window_size : w0;
    int64_t lb = c->look_backward, lf = c->look_forward;
    if (a->window_size < 0 || (a->window_size > 0 && !c->use_xpos)) {
        pg_graph_fail(g, "%s: a window_size override (%lld) is allowed only with use_xpos", fn,
                      (long long)a->window_size);
        return NULL;
    }
    if (m->rotary && d != c->dim) {
        pg_graph_fail(g, "%s: rotary was built for head dim %lld, q is %s", fn, (long long)c->dim, SHAPE(q));
        return NULL;
    }
    if (!pos_arg_ok(g, fn, "pos_q", a->pos_q, b, n) || !pos_arg_ok(g, fn, "pos_k", a->pos_k, b, n))
        return NULL;
    bool given = a->pos_q || a->pos_k;
    /* padded length: n up to a multiple of w0 (w0 - n % w0 first: no overflow, even for w0 near INT64_MAX) */
    int64_t np = c->autopad && n % w0 != 0 ? n + (w0 - n % w0) : n;
    if (np % w != 0) {
        pg_graph_fail(g, "%s: sequence length %lld%s must be divisible by the window size %lld%s", fn, (long long)n,
                      c->autopad ? " (autopadded)" : "", (long long)w,
                      c->autopad ? "" : " (set autopad to pad it; a window longer than the sequence needs autopad)");
        return NULL;
    }
    /* The band of ops runs on the windows that matter, which computes the same:
     * windows made of padding only (np beyond n rounded up to w: an override w
     * below w0) hold no output row and no visible key; one window covering the
     * sequence needs no padding (width n); look_backward / look_forward past the
     * first / last window reach only pad slots, which are hidden. So: windows of
     * we rows over ne rows, W of them, lbe / lfe windows around, S slots. The
     * exact window still compares with w0 lb, w0 lf (static_hidden). */
    int64_t ne = n % w != 0 ? n + (w - n % w) : n, we = w;
    if (ne == w)
        we = ne = n;
    int64_t W = ne / we, lbe = lb < W - 1 ? lb : W - 1, lfe = lf < W - 1 ? lf : W - 1;
    int64_t S = (lbe + lfe + 1) * we, B0 = a->mask ? a->mask->shape[0] : 0;
    pg_tensor *ab = a->attn_bias; /* documented as (Hb, w, (lb + lf + 1) w), whatever the sequence */
    if (ab) {
        int64_t S_doc = sat_mul(sat_add(sat_add(lb, lf), 1), w);
        if (S_doc == INT64_MAX) { /* no tensor has that many slots */
            pg_graph_fail(g, "%s: attn_bias must be (Hb, %lld, (lb + lf + 1) w) of %s, and with lb %lld, lf %lld "
                          "that is more than INT64_MAX slots; got %s",
                          fn, (long long)w, pg_dtype_name(dt), (long long)lb, (long long)lf, SHAPE(ab));
            return NULL;
        }
        if (ab->ndim != 3 || ab->shape[1] != w || ab->shape[2] != S_doc || ab->shape[0] < 1 ||
            b % ab->shape[0] != 0 || ab->dtype != dt) {
            pg_graph_fail(g, "%s: attn_bias must be (Hb, %lld, %lld) of %s with Hb dividing %lld, got %s %s", fn,
                          (long long)w, (long long)S_doc, pg_dtype_name(dt), (long long)b, SHAPE(ab),
                          pg_dtype_name(ab->dtype));
            return NULL;
        }
    }
    bool drop = c->dropout > 0 && m->base.training;
    if (drop && !a->rng) {
        pg_graph_fail(g, "%s: dropout %g needs a generator", fn, c->dropout);
        return NULL;
    }
    double sc = c->scale > 0 ? c->scale : 1.0 / sqrt((double)d);
    if (band_fusable(m, a, q, drop)) {
        bool fallback = false;
        const band_drop dl = {drop ? c->dropout : 0.0, we, W, lbe, S};
        pg_tensor *out = band_fused(g, m, q, k, v, a, w, sc, &dl, &fallback);
        if (!fallback)
            return out;
    }
    if (lbe + lfe + 1 > INT_MAX) { /* the band of ops: pg_pos_band_slots concatenates that many views */
        pg_graph_fail(g, "%s: %lld windows around each window (look_backward %lld, look_forward %lld over %lld "
                      "windows) are more than %d",
                      fn, (long long)(lbe + lfe + 1), (long long)lb, (long long)lf, (long long)W, INT_MAX);
        return NULL;
    }
    /* pack: (b, 1, n, d), autopad to (b, 1, ne, d) */
    pg_tensor *t3[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        t3[i] = pg_reshape(g, t3[i], PG_SHAPE(b, 1, n, d));
        if (ne > n)
            t3[i] = pg_pad(g, t3[i], 2, 0, ne - n, 0.0);
    }
    if (ab && we < w) /* the rows of the one window */
        ab = pg_narrow(g, ab, 1, 0, we);
    if (ab && S < ab->shape[2]) /* window offsets -lbe .. lfe: the slots (o + lb) w + r, a run from (lb - lbe) w */
        ab = pg_narrow(g, ab, 2, (lb - lbe) * w, S);
    pg_tensor *bk = t3[1], *bv = t3[2];
    bool hooks = false; /* band_bias schemes: they see the rows' explicit positions on the band */
    for (int i = 0; i < m->n_pos; i++)
        hooks = hooks || !m->pos[i]->ops->dist_bias;
    pg_tensor *pq = NULL, *pk = NULL; /* (b, ne) f64 when positions are given */
    if (given && (m->rotary || c->use_xpos || hooks)) {
        pq = row_positions(g, a->pos_q, b, n, ne);
        pk = row_positions(g, a->pos_k, b, n, ne);
        if (!pq || !pk)
            return NULL;
    }
    const pg_pos_band band = {W, we, lbe, lfe, pq, pk};
    const pg_pos_ctx hctx = {.self_attn = true, .causal = c->causal, .B = b, .head_dim = d, .Lq = ne, .Lk = ne,
                             .scale = sc, .dtype = dt, .rng = a->rng};
    pg_tensor *hb = t3[0] && t3[1] ? hook_bias(g, fn, m, t3[0], t3[1], &band, &hctx) : NULL; /* unscaled inputs */
    if (!hb && pg_graph_error(g))
        return NULL;
    pg_tensor *bq = pg_mul_scalar(g, t3[0], sc);
    if (c->shared_qk) /* k / max(|k|, 1e-12) */
        bk = unit_keys(g, bk);
    if (m->rotary) { /* the given positions, else the true positions 0 .. ne - 1 */
        bq = pg_rotary_apply(g, m->rotary, bq, pq, false, NAN);
        bk = pg_rotary_apply(g, m->rotary, bk, pk, true, NAN);
    }
    /* windows */
    bq = pg_reshape(g, bq, PG_SHAPE(b, W, we, d));
    bk = pg_pos_band_slots(g, pg_reshape(g, bk, PG_SHAPE(b, W, we, d)), &band); /* (b, W, S, d) */
    bv = pg_pos_band_slots(g, pg_reshape(g, bv, PG_SHAPE(b, W, we, d)), &band);
    if (c->use_xpos && pq) {
        bq = pg_mul(g, bq, xpos_table_at(g, m, pq, pk, &band, d, false, dt));
        bk = pg_mul(g, bk, xpos_table_at(g, m, pq, pk, &band, d, true, dt));
    } else if (c->use_xpos) {
        bq = pg_mul(g, bq, xpos_table(g, m, we, lbe, S, d, false, dt));
        bk = pg_mul(g, bk, xpos_table(g, m, we, lbe, S, d, true, dt));
    }
    pg_tensor *sim = pg_matmul(g, bq, bk, false, true); /* (b, W, w, S) */
    if (ab)
        sim = add_head_bias(g, sim, ab);
    int n_dist = 0;
    for (int i = 0; i < m->n_pos; i++)
        n_dist += m->pos[i]->ops->dist_bias != NULL;
    if (n_dist > 0 && sim && given) {
        if (!(sim = scheme_bias_at(g, fn, m, sim, a, n, ne, &band, a->rng)))
            return NULL;
    } else if (n_dist > 0 && sim) {
        pg_tensor *sb = scheme_bias(g, fn, m, b, we, lbe, S, dt, a->rng);
        if (!sb)
            return NULL;
        sim = add_head_bias(g, sim, sb);
    }
    if (hb)
        sim = pg_add(g, sim, hb);
    if (c->shared_qk)
        sim = pg_masked_fill(g, sim, self_band(g, lbe, lfe, W, we), SELF_VALUE);
    /* hidden entries -> -inf: the static band, and the key mask */
    pg_tensor *hidden = static_hidden(g, c, n, W, we, lbe, lfe); /* (W, we, S) */
    if (a->mask && sim) {
        pg_tensor *km = pg_logical_not(g, a->mask); /* (B0, n) true = hidden */
        km = pg_reshape(g, km, PG_SHAPE(B0, 1, n, 1));
        if (ne > n)
            km = pg_pad(g, km, 2, 0, ne - n, 1.0);
        km = pg_pos_band_slots(g, pg_reshape(g, km, PG_SHAPE(B0, W, we, 1)), &band); /* (B0, W, S, 1) */
        km = pg_reshape(g, km, PG_SHAPE(B0, 1, W, 1, S));
        hidden = pg_logical_or(g, hidden, km); /* (B0, 1, W, we, S) */
        sim = pg_reshape(g, sim, PG_SHAPE(B0, b / B0, W, we, S));
        sim = pg_masked_fill(g, sim, hidden, -INFINITY);
        sim = pg_reshape(g, sim, PG_SHAPE(b, W, we, S));
    } else {
        sim = pg_masked_fill(g, sim, hidden, -INFINITY);
    }
    /* a row with every slot -inf gives zero weights and zero gradient (pg_softmax) */
    pg_tensor *p = pg_softmax(g, sim, -1);
    if (drop)
        p = pg_dropout(g, p, c->dropout, true, a->rng);
    pg_tensor *out = pg_matmul(g, p, bv, false, false); /* (b, W, we, d) */
    out = pg_reshape(g, out, PG_SHAPE(b, ne, d));
    if (ne > n)
        out = pg_narrow(g, out, 1, 0, n);
    out = out ? pg_reshape(g, out, nd, q->shape) : NULL;
    if (!out && !pg_graph_error(g))
        pg_graph_fail(g, "%s: failed for q %s, window %lld", fn, SHAPE(q), (long long)w);
    return out;
}
