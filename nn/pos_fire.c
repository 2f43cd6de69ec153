/* FIRE (nn/pos_fire.h; docs/pos/fire.md). */
#include "pos_fire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

static const pg_posmod_ops FIRE_OPS;

/* ---- the bias ------------------------------------------------------------------------ */

/* pq (Bq, Lpq), pk (Bk, Lpk) positions of m's dtype (data, no gradient) ->
 * the bias (Bo, H, Lpq, Lpk), Bo = max(Bq, Bk), docs/pos/fire.md (1)-(3):
 *   u = log1p(|c| d) / (log1p(|c| max(L, i)) + eps),  L = |L_multiplier init_L|,
 *   bias = Linear2(relu(Linear0(u))) */
static pg_tensor *fire_of(pg_graph *g, pg_fire *m, pg_tensor *pq, pg_tensor *pk)
{
    if (!pq || !pk)
        return NULL;
    int64_t Bq = pq->shape[0], Lpq = pq->shape[1], Bk = pk->shape[0], Lpk = pk->shape[1];
    pg_tensor *cabs = pg_abs(g, m->c);                                  /* |c|, 0-dim */
    pg_tensor *L = pg_abs(g, pg_mul(g, m->L_multiplier, m->init_L));   /* the threshold, 0-dim */
    pg_tensor *delta = pg_sub(g, pg_reshape(g, pq, PG_SHAPE(Bq, Lpq, 1)),
                              pg_reshape(g, pk, PG_SHAPE(Bk, 1, Lpk))); /* (Bo, Lpq, Lpk) */
    pg_tensor *d = m->dist == PG_FIRE_DIST_TRIL ? pg_relu(g, delta) : pg_abs(g, delta);
    pg_tensor *num = pg_log1p(g, pg_mul(g, cabs, d));                   /* (1): psi(d) */
    pg_tensor *top = pg_maximum(g, pq, L);                              /* max(L, i): a tie splits half / half */
    pg_tensor *den = pg_add_scalar(g, pg_log1p(g, pg_mul(g, cabs, top)), m->eps); /* (2): psi(max(L, i)) + eps */
    pg_tensor *u = pg_div(g, num, pg_reshape(g, den, PG_SHAPE(Bq, Lpq, 1)));       /* (Bo, Lpq, Lpk) */
    if (!u)
        return NULL;
    int64_t Bo = u->shape[0];
    /* (3): mlp.2(relu(mlp.0(u))) for every u, in one op, head-major: (Bo, H, Lpq Lpk) */
    pg_tensor *h = pg_scalar_mlp(g, pg_reshape(g, u, PG_SHAPE(Bo, Lpq * Lpk)), m->lin0->weight, m->lin0->bias,
                                 m->lin2->weight, m->lin2->bias);
    return h ? pg_reshape(g, h, PG_SHAPE(Bo, m->heads, Lpq, Lpk)) : NULL; /* (Bo, H, Lpq, Lpk) */
}

static bool ctx_ok(pg_graph *g, const char *fn, pg_fire *m, const pg_pos_ctx *c)
{
    return pg_pos_module_check(g, fn, c, m->heads, m->dtype) == 0;
}

/* ---- training-mode random positions (opts.train_max_len) ------------------------------ */

/* uniform in [0, n), n >= 1, without modulo bias (rejects the low (2^64 - n) mod n values) */
static uint64_t below(pg_rng *r, uint64_t n)
{
    uint64_t floor = (0 - n) % n, x;
    do
        x = pg_rng_next_u64(r);
    while (x < floor);
    return x % n;
}

int pg_fire_draw_positions(pg_rng *r, int64_t L, int64_t max_len, int64_t *pos)
{
    const char *fn = "pg_fire_draw_positions";
    if (!r || !pos || L < 1 || L > max_len || max_len > (1LL << 53)) {
        pg_set_error("%s: need a generator, an output and 1 <= L <= max_len <= 2^53, got generator %s, output %s, "
                     "L %lld, max_len %lld",
                     fn, r ? "set" : "NULL", pos ? "set" : "NULL", (long long)L, (long long)max_len);
        return -1;
    }
    /* Floyd: for j = max_len - L .. max_len - 1 take t uniform in [0, j]; t if new, else j
     * (j exceeds everything taken so far, so it goes at the end). pos[0..n-1] stays sorted. */
    int64_t n = 0;
    for (int64_t j = max_len - L; j < max_len; j++) {
        int64_t t = (int64_t)below(r, (uint64_t)j + 1), lo = 0, hi = n;
        while (lo < hi) { /* first index with pos[idx] >= t */
            int64_t mid = lo + (hi - lo) / 2;
            if (pos[mid] < t)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < n && pos[lo] == t) {
            pos[n++] = j;
        } else {
            memmove(pos + lo + 1, pos + lo, (size_t)(n - lo) * sizeof *pos);
            pos[lo] = t;
            n++;
        }
    }
    return 0;
}

/* The call draws when the option is on, the module trains, and it is a square
 * self-attention with default positions shorter than train_max_len. */
static bool draws(const pg_fire *m, const pg_pos_ctx *c)
{
    return m->train_max_len > c->Lq && m->pm.base.training && c->self_attn && !c->pos_q && !c->pos_k &&
           c->Lq == c->Lk;
}

/* (1, L) i64 positions drawn from the call's generator; NULL after pg_graph_fail */
static pg_tensor *drawn_positions(pg_graph *g, const char *fn, const pg_fire *m, const pg_pos_ctx *c)
{
    if (!c->rng) {
        pg_graph_fail(g, "%s: train_max_len %lld in training mode draws random positions and needs the call's "
                      "generator (pg_pos_ctx.rng, pg_attn_args.rng), got NULL",
                      fn, (long long)m->train_max_len);
        return NULL;
    }
    pg_tensor *p = pg_empty(g, PG_I64, PG_SHAPE(1, c->Lq));
    if (!p)
        return NULL;
    if (pg_fire_draw_positions(c->rng, c->Lq, m->train_max_len, p->data) != 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", pg_last_error()); /* pg_graph_fail may reuse the error buffer */
        pg_graph_fail(g, "%s: %s", fn, why);
        return NULL;
    }
    return p;
}

static pg_tensor *fire_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    const char *fn = "fire";
    pg_fire *m = (pg_fire *)pm;
    if (!ctx_ok(g, fn, m, c))
        return NULL;
    pg_tensor *pq, *pk;
    if (draws(m, c)) { /* the same sorted random positions for queries and keys */
        pg_tensor *p = drawn_positions(g, fn, m, c);
        if (!p)
            return NULL;
        pq = pk = pg_pos_side(g, p, c->Lq, 0.0, m->dtype, false);
    } else { /* default positions end-aligned: queries Lk-Lq..Lk-1 */
        pq = pg_pos_side(g, c->pos_q, c->Lq, (double)(c->Lk - c->Lq), m->dtype, false);
        pk = pg_pos_side(g, c->pos_k, c->Lk, 0.0, m->dtype, false);
    }
    pg_tensor *bias = fire_of(g, m, pq, pk); /* (Bo, H, Lpq, Lpk) */
    return pg_pos_table_finish(g, fn, bias, c, m->heads);
}

static pg_tensor *fire_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v; /* FIRE depends on the positions alone */
    return fire_table(g, m, c);
}

/* The bias on LocalAttention's band (pg_posmod_ops.band_bias), (b, W, w, S): query
 * row r of window omega is token omega w + r, key slot s token (omega - lb) w + s
 * (nn/posmod.h, pg_pos_band), or the band's explicit positions; FIRE of those
 * positions, head h on rows h mod H.
 * Slots without a token get a finite bias that attention hides. */
static pg_tensor *fire_band_bias(pg_graph *g, pg_posmod *pm, pg_tensor *q, pg_tensor *k, const pg_pos_band *band,
                                 const pg_pos_ctx *c)
{
    const char *fn = "fire";
    pg_fire *m = (pg_fire *)pm;
    if (!ctx_ok(g, fn, m, c))
        return NULL;
    if (m->train_max_len > 0 && m->pm.base.training) {
        pg_graph_fail(g, "%s: band_bias: train_max_len %lld (random positions in training) is not supported by "
                      "LocalAttention; set it to 0 or put the module in eval mode",
                      fn, (long long)m->train_max_len);
        return NULL;
    }
    int64_t H = m->heads;
    if (!q || !k || !band || q->ndim != 3 || k->ndim != 3 || q->shape[0] % H != 0 ||
        q->shape[1] != band->W * band->w || k->shape[1] != q->shape[1]) {
        pg_graph_fail(g, "%s: band_bias: FIRE has %lld heads; the band input is q %s, k %s, expected (rows, W w, Dh) "
                      "with rows = batch x heads%s",
                      fn, (long long)H, q ? SHAPE(q) : "NULL", k ? SHAPE(k) : "NULL", band ? "" : " (band is NULL)");
        return NULL;
    }
    int64_t b = q->shape[0], W = band->W, w = band->w, S = (band->lb + band->lf + 1) * w;
    if (band->pq || band->pk) { /* explicit positions: each row's own, each row its head */
        pg_tensor *bq = NULL, *bk = NULL;
        if (pg_pos_band_positions(g, band, b, m->dtype, &bq, &bk) != 0)
            return NULL;
        pg_tensor *t = fire_of(g, m, pg_reshape(g, bq, PG_SHAPE(b * W, w)), pg_reshape(g, bk, PG_SHAPE(b * W, S)));
        t = pg_permute(g, pg_reshape(g, t, PG_SHAPE(b, W, H, w, S)), (const int[]){0, 2, 1, 3, 4}); /* (b, H, W, w, S) */
        return pg_pos_head_of_row(g, t);
    }
    pg_tensor *pq = pg_empty(g, m->dtype, PG_SHAPE(W, w)), *pk = pg_empty(g, m->dtype, PG_SHAPE(W, S));
    if (!pq || !pk)
        return NULL;
    for (int64_t o = 0; o < W; o++) {
        for (int64_t r = 0; r < w; r++)
            pg_set(pq, o * w + r, (double)(o * w + r));
        for (int64_t s = 0; s < S; s++)
            pg_set(pk, o * S + s, (double)((o - band->lb) * w + s));
    }
    pg_tensor *t = fire_of(g, m, pq, pk);                                   /* (W, H, w, S) */
    t = pg_permute(g, t, (const int[]){1, 0, 2, 3});                        /* (H, W, w, S) */
    t = pg_broadcast_to(g, pg_reshape(g, t, PG_SHAPE(1, H, W, w, S)), PG_SHAPE(b / H, H, W, w, S));
    return pg_reshape(g, t, PG_SHAPE(b, W, w, S));
}

/* L = |L_multiplier init_L| as the graph computes it, in the module's dtype */
static double threshold(const pg_fire *m)
{
    double L = fabs(pg_get(m->L_multiplier, 0) * pg_get(m->init_L, 0)); /* exact in double for f32 factors */
    return m->dtype == PG_F32 ? (double)(float)L : L;
}

/* pg_posmod_ops.dist_bias_if: with every query position i below L, max(L, i) = L and
 * u = psi(d) / (psi(L) + eps) depends on the distance alone, docs/pos/fire.md
 * ("Below the threshold"): d (D) signed distances -> (H, D) by fire_of itself, so entry
 * by entry the bits of the (H, L, L) bias. Default positions only (the
 * queries Lk-Lq..Lk-1 end-aligned), not while drawing random positions. */
static int fire_dist_if(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c, pg_tensor **b)
{
    const char *fn = "fire";
    pg_fire *m = (pg_fire *)pm;
    *b = NULL;
    if (!ctx_ok(g, fn, m, c) || pg_pos_dist_check(g, fn, d) != 0)
        return -1;
    if (d->dtype != m->dtype) {
        pg_graph_fail(g, "%s: dist_bias_if: the distances are %s, the module's dtype is %s", fn, SHAPE(d),
                      pg_dtype_name(m->dtype));
        return -1;
    }
    if (c->pos_q || c->pos_k || draws(m, c) || !((double)(c->Lk - 1) < threshold(m)))
        return 1;
    /* fire_of itself at one query at 0 (max(L, 0) = L, as max(L, i) below L) and keys at
     * -d, whose distances 0 - (-d) are d exactly */
    int64_t D = d->shape[0];
    pg_tensor *pq = pg_zeros(g, m->dtype, PG_SHAPE(1, 1));
    pg_tensor *pk = pg_reshape(g, pg_neg(g, pg_detach(g, d)), PG_SHAPE(1, D));
    pg_tensor *t = fire_of(g, m, pq, pk); /* (1, H, 1, D) */
    *b = t ? pg_reshape(g, t, PG_SHAPE(m->heads, D)) : NULL;
    return *b ? 0 : -1;
}

static const pg_posmod_ops FIRE_OPS = {
    .mod_bias = fire_bias, .bias_table = fire_table, .band_bias = fire_band_bias, .dist_bias_if = fire_dist_if};

/* ---- construction ---------------------------------------------------------------------- */

static int check_opts(const char *fn, int64_t heads, const pg_fire_opts *o, pg_dtype dtype, pg_rng *r)
{
    if (o->heads != 0 && o->heads != heads) {
        pg_set_error("%s: opts.heads %lld differs from heads %lld", fn, (long long)o->heads, (long long)heads);
        return -1;
    }
    if (heads < 1 || heads > (1LL << 24) || o->hidden < 0 || o->hidden > (1LL << 24)) {
        pg_set_error("%s: need 1 <= heads <= 2^24 and 1 <= hidden <= 2^24 (0: 32), got heads %lld, hidden %lld", fn,
                     (long long)heads, (long long)o->hidden);
        return -1;
    }
    if (!pg_dtype_is_float(dtype) || !r) {
        pg_set_error("%s: need a float dtype and a generator (dtype %s, generator %s)", fn, pg_dtype_name(dtype),
                     r ? "set" : "NULL");
        return -1;
    }
    if (!isfinite(o->init_c) || !(o->init_L >= 0) || !isfinite(o->init_L) || !(o->eps >= 0) || !isfinite(o->eps)) {
        pg_set_error("%s: need a finite init_c (0: 0.1), init_L > 0 (0: 512) and eps >= 0 (0: 1e-6), got init_c %g, "
                     "init_L %g, eps %g",
                     fn, o->init_c, o->init_L, o->eps);
        return -1;
    }
    if (o->train_max_len < 0 || o->train_max_len > (1LL << 53)) {
        pg_set_error("%s: need 0 <= train_max_len <= 2^53 (0: off), got %lld", fn, (long long)o->train_max_len);
        return -1;
    }
    if (o->dist != PG_FIRE_DIST_ABS && o->dist != PG_FIRE_DIST_TRIL) {
        pg_set_error("%s: dist must be PG_FIRE_DIST_ABS or PG_FIRE_DIST_TRIL, got %d", fn, (int)o->dist);
        return -1;
    }
    return 0;
}

/* mlp.0 and mlp.2 under a Sequential "mlp", in that order (torch draws them so) */
static int make_mlp(pg_fire *m, pg_dtype dt, pg_rng *r, const char *fn)
{
    pg_module *mlp = pg_module_new_container("Sequential", fn);
    if (!mlp || pg_module_add_child(&m->pm.base, "mlp", mlp) != 0)
        return -1;
    m->lin0 = pg_linear_new(1, m->hidden, true, dt, r);
    if (!m->lin0 || pg_module_add_child(mlp, "0", &m->lin0->base) != 0)
        return -1;
    m->lin2 = pg_linear_new(m->hidden, m->heads, true, dt, r);
    if (!m->lin2 || pg_module_add_child(mlp, "2", &m->lin2->base) != 0)
        return -1;
    return 0;
}

/* c, init_L (frozen), L_multiplier: 0-dim, no weight decay */
static int make_scalars(pg_fire *m, pg_dtype dt, double c, double L0)
{
    pg_module *b = &m->pm.base;
    m->c = pg_module_new_param_ex(b, "c", dt, 0, NULL, PG_PARAM_NO_DECAY);
    m->init_L = pg_module_new_param_ex(b, "init_L", dt, 0, NULL, PG_PARAM_NO_DECAY);
    m->L_multiplier = pg_module_new_param_ex(b, "L_multiplier", dt, 0, NULL, PG_PARAM_NO_DECAY);
    if (!m->c || !m->init_L || !m->L_multiplier)
        return -1;
    pg_set(m->c, 0, c);
    pg_set(m->init_L, 0, L0);
    m->init_L->requires_grad = false; /* the references' nn.Parameter(..., requires_grad=False) */
    pg_set(m->L_multiplier, 0, 1.0);
    return 0;
}

pg_posmod *pg_fire_new(int64_t heads, const pg_fire_opts *o, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_fire_new";
    static const pg_fire_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
    if (check_opts(fn, heads, o, dtype, r) != 0)
        return NULL;
    pg_fire *m = pg_posmod_alloc(sizeof *m, "FIRE", &FIRE_OPS, NULL, fn);
    if (!m)
        return NULL;
    m->heads = heads;
    m->hidden = o->hidden ? o->hidden : 32;
    m->eps = o->eps != 0 ? o->eps : 1e-6;
    m->dist = o->dist;
    m->train_max_len = o->train_max_len;
    m->dtype = dtype;
    /* registered in the references' order: mlp (drawn first), c, init_L, L_multiplier */
    if (make_mlp(m, dtype, r, fn) != 0 ||
        make_scalars(m, dtype, o->init_c != 0 ? o->init_c : 0.1, o->init_L != 0 ? o->init_L : 512.0) != 0) {
        return pg_module_fail(&m->pm.base, NULL);
    }
    return &m->pm;
}

pg_posmod *pg_posmod_make_fire(const pg_posmod_args *a)
{
    int64_t heads = PG_POSMOD_HEADS("pg_posmod_make_fire", "FIRE", pg_fire_opts, a);
    return heads ? pg_fire_new(heads, a->opts, a->dtype, a->rng) : NULL;
}
