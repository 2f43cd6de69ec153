/* Rotary position embedding and xPos (nn/pos_rotary.h, docs/pos/rotary.md). Built from
 * autograd ops, so gradients reach q, k, float positions and the learned divisor. */
#include "pos_rotary.h"
#include "pos_rope_scaling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

typedef struct rotary {
    pg_posmod pm;
    pg_rotary_opts o;   /* resolved: no zero defaults left */
    int64_t R;          /* rotated pairs: n_dims / 2 */
    pg_dtype dtype;
    pg_tensor *div;     /* learned divisor parameter, or NULL */
    double tab[];       /* inv_freq'[0..R) (the static one; dynamic_*: recomputed per call), then log(zeta)[0..R) */
} rotary;

static int rotary_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c);
static int rotary_qk_rotation(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rotation *rot);

static const pg_posmod_ops ROTARY_OPS = {.mod_qkv = rotary_qkv, .qk_rotation = rotary_qk_rotation};

pg_rotary_opts pg_rotary_defaults(void) { return (pg_rotary_opts){0}; }

/* a numeric option: 0 -> def; otherwise finite and > 0 */
static bool opt_pos(const char *fn, const char *name, double *v, double def)
{
    if (*v == 0) {
        *v = def;
        return true;
    }
    if (!(*v > 0) || !isfinite(*v)) {
        pg_set_error("%s: %s must be a finite number > 0 (0: default %g), got %g", fn, name, def, *v);
        return false;
    }
    return true;
}

pg_posmod *pg_rotary_new(int64_t head_dim, const pg_rotary_opts *opts, pg_dtype dtype)
{
    const char *fn = "pg_rotary_new";
    pg_rotary_opts o = opts ? *opts : pg_rotary_defaults();
    o.head_dim = head_dim;
    if (!pg_module_dtype_ok(fn, dtype))
        return NULL;
    if (head_dim < 1) {
        pg_set_error("%s: head_dim must be >= 1, got %lld", fn, (long long)head_dim);
        return NULL;
    }
    if (o.n_dims == 0)
        o.n_dims = head_dim;
    if (o.n_dims < 2 || o.n_dims % 2 || o.n_dims > head_dim) {
        pg_set_error("%s: n_dims %lld must be even, >= 2 and <= head_dim %lld (rotation acts on channel pairs)",
                     fn, (long long)o.n_dims, (long long)head_dim);
        return NULL;
    }
    if (o.freq_dim == 0)
        o.freq_dim = head_dim;
    if (o.freq_dim < 2) {
        pg_set_error("%s: freq_dim must be >= 2 (0: head_dim), got %lld", fn, (long long)o.freq_dim);
        return NULL;
    }
    if (o.pairing != PG_ROTARY_INTERLEAVED && o.pairing != PG_ROTARY_HALF_SPLIT) {
        pg_set_error("%s: pairing must be PG_ROTARY_INTERLEAVED or PG_ROTARY_HALF_SPLIT, got %d", fn, (int)o.pairing);
        return NULL;
    }
    if (!opt_pos(fn, "base", &o.base, 10000) || !opt_pos(fn, "base_rescale_factor", &o.base_rescale_factor, 1) ||
        !opt_pos(fn, "interpolation_factor", &o.interpolation_factor, 1) || !opt_pos(fn, "scale_base", &o.scale_base, 512))
        return NULL;
    if (o.base_rescale_factor != 1 && o.freq_dim <= 2) {
        pg_set_error("%s: base_rescale_factor %g needs freq_dim > 2 (base * factor^(F/(F-2))), got %lld", fn,
                     o.base_rescale_factor, (long long)o.freq_dim);
        return NULL;
    }
    if (!pg_rope_scaling_resolve(fn, &o))
        return NULL;
    if (o.use_xpos && o.xpos_fixed_centre && !isfinite(o.xpos_centre)) {
        pg_set_error("%s: xpos_centre must be finite, got %g", fn, o.xpos_centre);
        return NULL;
    }
    if (o.divide == 0) /* 0: the default; checked by pg_pos_div_param */
        o.divide = 1;
    int64_t R = o.n_dims / 2;
    rotary *r = pg_posmod_alloc(sizeof *r + 2 * (size_t)R * sizeof(double), "Rotary", &ROTARY_OPS, NULL, fn);
    if (!r)
        return NULL;
    r->o = o;
    r->R = R;
    r->dtype = dtype;
    double F = (double)o.freq_dim;
    pg_rope_inv_freq(&o, R, 0, r->tab); /* len 0: the static table (dynamic_*: unscaled) */
    for (int64_t i = 0; i < R; i++)
        r->tab[R + i] = log((2.0 * (double)i + 0.4 * F) / (1.4 * F));
    bool ok;
    pg_pos_divide d = {o.divide, o.learned_div};
    r->div = pg_pos_div_param(&r->pm, d, dtype, &ok);
    if (!ok)
        return pg_module_fail(&r->pm.base, NULL);
    return &r->pm;
}

static pg_posmod *make(const pg_posmod_args *a, bool xpos)
{
    if (!a) {
        pg_set_error("pg_posmod_make_%s: args is NULL", xpos ? "xpos" : "rotary");
        return NULL;
    }
    pg_rotary_opts o = a->opts ? *(const pg_rotary_opts *)a->opts : pg_rotary_defaults();
    if (xpos)
        o.use_xpos = true;
    return pg_rotary_new(o.head_dim ? o.head_dim : a->head_dim, &o, a->dtype);
}

pg_posmod *pg_posmod_make_rotary(const pg_posmod_args *a) { return make(a, false); }
pg_posmod *pg_posmod_make_xpos(const pg_posmod_args *a) { return make(a, true); }

/* ---- the math ---------------------------------------------------------------------------- */

static rotary *as_rotary(pg_graph *g, const char *fn, pg_posmod *m)
{
    if (!m || m->ops != &ROTARY_OPS) {
        pg_graph_fail(g, "%s: %s is not a rotary module", fn, m ? m->base.type : "NULL module");
        return NULL;
    }
    return (rotary *)m;
}

/* pos NULL, (Lp), (1, Lp) or (B, Lp) with Lp <= L, f32/f64/i64 -> (Bp, 1, Lp, 1) of dtype
 * (float positions keep their gradient). */
static pg_tensor *positions(pg_graph *g, const char *fn, pg_tensor *pos, int64_t B, int64_t L, pg_dtype dtype)
{
    if (!pos) {
        pg_tensor *p = pg_arange(g, dtype, 0, (double)L, 1);
        return pg_reshape(g, p, PG_SHAPE(1, 1, L, 1));
    }
    bool dt = pos->dtype == PG_F32 || pos->dtype == PG_F64 || pos->dtype == PG_I64;
    int64_t Bp = pos->ndim == 2 ? pos->shape[0] : 1, Lp = pos->ndim >= 1 ? pos->shape[pos->ndim - 1] : 0;
    if (!dt || pos->ndim < 1 || pos->ndim > 2 || (Bp != 1 && Bp != B) || Lp > L || Lp < 1) {
        pg_graph_fail(g, "%s: positions are %s, expected (B, Lp), (1, Lp) or (Lp) with B = %lld, 1 <= Lp <= L = %lld, "
                      "of f32, f64 or i64", fn, SHAPE(pos), (long long)B, (long long)L);
        return NULL;
    }
    pg_tensor *p = pos->dtype == dtype ? pos : pg_cast(g, pos, dtype);
    return pg_reshape(g, p, PG_SHAPE(Bp, 1, Lp, 1));
}

/* the largest entry of pos (NULL: L - 1) */
static double max_pos(const pg_tensor *pos, int64_t L)
{
    if (!pos)
        return (double)L - 1;
    double mx = -INFINITY;
    for (int64_t i = 0; i < pos->numel; i++)
        mx = fmax(mx, pg_get(pos, i));
    return mx;
}

/* floor((max p + 1) / 2) over the entries of pos (NULL: 0..L-1) */
static double auto_centre(const pg_tensor *pos, int64_t L) { return floor((max_pos(pos, L) + 1) / 2); }

/* inv_freq' (R) of dtype for a call of length len (dynamic_*: recomputed; a constant, no gradient
 * through len) */
static pg_tensor *inv_freq(pg_graph *g, rotary *r, double len, pg_dtype dtype)
{
    pg_tensor *inv = pg_empty(g, dtype, PG_SHAPE(r->R));
    if (!inv)
        return NULL;
    double *tab = r->tab, *dyn = NULL;
    if (pg_rope_is_dynamic(&r->o)) {
        dyn = malloc((size_t)r->R * sizeof *dyn);
        if (!dyn) {
            pg_graph_fail(g, "rotary: out of memory");
            return NULL;
        }
        pg_rope_inv_freq(&r->o, r->R, len, dyn);
        tab = dyn;
    }
    for (int64_t i = 0; i < r->R; i++)
        pg_set(inv, i, tab[i]);
    free(dyn);
    return inv;
}

/* angles (Bp, 1, L, R) for p (Bp, 1, Lp, 1), left-padded with zeros; len: the call's length */
static pg_tensor *angles(pg_graph *g, rotary *r, pg_tensor *p, int64_t L, double len, pg_dtype dtype)
{
    pg_tensor *inv = p ? inv_freq(g, r, len, dtype) : NULL;
    if (!p || !inv)
        return NULL;
    pg_tensor *a = pg_mul(g, p, inv); /* (Bp, 1, Lp, R) */
    a = pg_pos_divide_by(g, a, r->div, r->o.divide);
    if (r->o.interpolation_factor != 1)
        a = pg_mul_scalar(g, a, 1.0 / r->o.interpolation_factor);
    int64_t Lp = p->shape[2];
    return Lp < L ? pg_pad(g, a, 2, L - Lp, 0, 0.0) : a;
}

/* the xPos log-scale (Bp, 1, L, R): +-log(zeta_i) (p - c) / scale_base, 0 for un-positioned tokens */
static pg_tensor *xpos_log_scale(pg_graph *g, rotary *r, pg_tensor *p, int64_t L, double centre, bool key,
                                 pg_dtype dtype)
{
    pg_tensor *lz = pg_empty(g, dtype, PG_SHAPE(r->R));
    if (!p || !lz)
        return NULL;
    double sgn = key ? -1.0 : 1.0;
    for (int64_t i = 0; i < r->R; i++)
        pg_set(lz, i, sgn * r->tab[r->R + i] / r->o.scale_base);
    pg_tensor *e = pg_mul(g, pg_add_scalar(g, p, -centre), lz);
    int64_t Lp = p->shape[2];
    return Lp < L ? pg_pad(g, e, 2, L - Lp, 0, 0.0) : e;
}

/* t (B, H, L, Dh) rotated with cos / sin (Bp, 1, L, R) already times sigma (one fused op) */
static pg_tensor *rotate(pg_graph *g, rotary *r, pg_tensor *t, pg_tensor *C, pg_tensor *S)
{
    if (!t || !C || !S)
        return NULL;
    return pg_rotate_pairs(g, t, C, S, r->o.pairing == PG_ROTARY_INTERLEAVED);
}

/* cos and sin tables (times sigma^(+-1) with xPos, times YaRN's mscale) for one side */
static int tables(pg_graph *g, rotary *r, pg_tensor *p, int64_t L, double len, double centre, bool key,
                  pg_dtype dtype, pg_tensor **C, pg_tensor **S)
{
    pg_tensor *a = angles(g, r, p, L, len, dtype);
    *C = pg_cos(g, a);
    *S = pg_sin(g, a);
    double mscale = pg_rope_mscale(&r->o, len); /* YaRN's attention factor */
    if (mscale != 1) {
        *C = pg_mul_scalar(g, *C, mscale);
        *S = pg_mul_scalar(g, *S, mscale);
    }
    if (r->o.use_xpos) {
        pg_tensor *sigma = pg_exp(g, xpos_log_scale(g, r, p, L, centre, key, dtype));
        *C = pg_mul(g, *C, sigma);
        *S = pg_mul(g, *S, sigma);
    }
    return *C && *S ? 0 : -1;
}

static bool check_t(pg_graph *g, const char *fn, const char *name, rotary *r, const pg_tensor *t)
{
    if (!t || t->ndim != 4 || !pg_dtype_is_float(t->dtype) || t->shape[3] != r->o.head_dim ||
        (r->div && t->dtype != r->dtype)) {
        pg_graph_fail(g, "%s: %s is %s, expected a (B, H, L, %lld) tensor of %s (the rotary module's head_dim%s)", fn,
                      name, t ? SHAPE(t) : "NULL", (long long)r->o.head_dim,
                      r->div ? pg_dtype_name(r->dtype) : "f32 or f64", r->div ? " and dtype" : "");
        return false;
    }
    return true;
}

/* The call's tables for B batches of Lq queries and Lk keys of dtype dt: *rot's (Bp, 1, L, R)
 * cos and sin of each side (times sigma^(+-1) with xPos); k's are q's when the sides share
 * their positions and there is no xPos. 0, or -1 after pg_graph_fail. */
static int call_tables(pg_graph *g, const char *fn, rotary *r, const pg_pos_ctx *c, int64_t B, int64_t Lq,
                       int64_t Lk, pg_dtype dt, pg_pos_rotation *rot)
{
    pg_tensor *pq = positions(g, fn, c->pos_q, B, Lq, dt);
    pg_tensor *pk = c->self_attn && c->pos_k == c->pos_q && Lq == Lk ? pq : positions(g, fn, c->pos_k, B, Lk, dt);
    if (!pq || !pk)
        return -1;
    double centre = r->o.xpos_fixed_centre ? r->o.xpos_centre : auto_centre(c->pos_k, Lk);
    /* dynamic_*: the call's length is the largest position of either side + 1 */
    double len = fmax(max_pos(c->pos_q, Lq), max_pos(c->pos_k, Lk)) + 1;
    rot->interleaved = r->o.pairing == PG_ROTARY_INTERLEAVED;
    if (tables(g, r, pq, Lq, len, centre, false, dt, &rot->cos_q, &rot->sin_q) != 0)
        return -1;
    if (pk == pq && !r->o.use_xpos) {
        rot->cos_k = rot->cos_q, rot->sin_k = rot->sin_q;
        return 0;
    }
    return tables(g, r, pk, Lk, len, centre, true, dt, &rot->cos_k, &rot->sin_k);
}

static int rotary_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c)
{
    (void)v; /* v is never rotated (§1.6, §4.3) */
    const char *fn = "rotary mod_qkv";
    rotary *r = (rotary *)m;
    if (!check_t(g, fn, "q", r, *q) || !check_t(g, fn, "k", r, *k))
        return -1;
    pg_pos_rotation rot;
    if (call_tables(g, fn, r, c, (*q)->shape[0], (*q)->shape[2], (*k)->shape[2], (*q)->dtype, &rot) != 0)
        return -1;
    pg_tensor *nq = rotate(g, r, *q, rot.cos_q, rot.sin_q), *nk = rotate(g, r, *k, rot.cos_k, rot.sin_k);
    if (!nq || !nk)
        return -1;
    *q = nq;
    *k = nk;
    return 0;
}

/* The same tables for the fused kernel, when they are constants: no learned divisor, no
 * positions that require grad, q and k of the module's head_dim (else mod_qkv, which says
 * what is wrong) */
static int rotary_qk_rotation(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rotation *rot)
{
    rotary *r = (rotary *)m;
    bool constant = !r->div && !(c->pos_q && c->pos_q->requires_grad) && !(c->pos_k && c->pos_k->requires_grad);
    if (!constant || c->head_dim != r->o.head_dim || !pg_dtype_is_float(c->dtype))
        return 1;
    return call_tables(g, "rotary qk_rotation", r, c, c->B, c->Lq, c->Lk, c->dtype, rot) != 0 ? -1 : 0;
}

/* one side's tables for B batches of L tokens of dtype dt (pg_rotary_apply's, pg_rotary_tables') */
static int side_tables(pg_graph *g, const char *fn, rotary *r, int64_t B, int64_t L, pg_dtype dt, pg_tensor *pos,
                       bool key, double centre, pg_tensor **C, pg_tensor **S)
{
    pg_tensor *p = positions(g, fn, pos, B, L, dt);
    if (!p)
        return -1;
    if (isnan(centre))
        centre = r->o.xpos_fixed_centre ? r->o.xpos_centre : auto_centre(pos, L);
    return tables(g, r, p, L, max_pos(pos, L) + 1, centre, key, dt, C, S);
}

pg_tensor *pg_rotary_apply(pg_graph *g, pg_posmod *m, pg_tensor *t, pg_tensor *pos, bool key, double centre)
{
    const char *fn = "pg_rotary_apply";
    PG_NN_SCRATCH(g, fn, pg_rotary_apply(g, m, t, pos, key, centre));
    rotary *r = as_rotary(g, fn, m);
    pg_tensor *C, *S;
    if (!r || !check_t(g, fn, "t", r, t) ||
        side_tables(g, fn, r, t->shape[0], t->shape[2], t->dtype, pos, key, centre, &C, &S) != 0)
        return NULL;
    return rotate(g, r, t, C, S);
}

int pg_rotary_tables(pg_graph *g, pg_posmod *m, int64_t B, int64_t L, pg_dtype dtype, pg_tensor *pos, bool key,
                     double centre, pg_tensor **C, pg_tensor **S, bool *interleaved)
{
    const char *fn = "pg_rotary_tables";
    if (!g || !C || !S || !interleaved) {
        pg_graph_fail(g, "%s: %s is NULL", fn, !g ? "graph" : !C ? "C" : !S ? "S" : "interleaved");
        return -1;
    }
    rotary *r = as_rotary(g, fn, m);
    if (!r)
        return -1;
    if (B < 1 || L < 1 || !pg_dtype_is_float(dtype) || (r->div && dtype != r->dtype)) {
        pg_graph_fail(g, "%s: B %lld and L %lld must be >= 1, dtype f32 or f64%s, got %s", fn, (long long)B,
                      (long long)L, r->div ? " and the module's (learned divisor)" : "", pg_dtype_name(dtype));
        return -1;
    }
    *interleaved = r->o.pairing == PG_ROTARY_INTERLEAVED;
    return side_tables(g, fn, r, B, L, dtype, pos, key, centre, C, S);
}

pg_tensor *pg_rotary_angles(pg_graph *g, pg_posmod *m, int64_t L, pg_tensor *pos)
{
    const char *fn = "pg_rotary_angles";
    PG_NN_SCRATCH(g, fn, pg_rotary_angles(g, m, L, pos));
    rotary *r = as_rotary(g, fn, m);
    if (!r)
        return NULL;
    if (L < 1) {
        pg_graph_fail(g, "%s: L must be >= 1, got %lld", fn, (long long)L);
        return NULL;
    }
    int64_t B = pos && pos->ndim == 2 ? pos->shape[0] : 1;
    pg_tensor *a = angles(g, r, positions(g, fn, pos, B, L, r->dtype), L, max_pos(pos, L) + 1, r->dtype);
    return a ? pg_reshape(g, a, PG_SHAPE(a->shape[0], L, r->R)) : NULL;
}

int64_t pg_rotary_frequencies(pg_posmod *m, double len, double *out, double *mscale)
{
    const char *fn = "pg_rotary_frequencies";
    if (!m || m->ops != &ROTARY_OPS) {
        pg_set_error("%s: %s is not a rotary module", fn, m ? m->base.type : "NULL module");
        return -1;
    }
    if (!out || !isfinite(len) || len < 1) {
        pg_set_error("%s: %s", fn, out ? "len must be finite and >= 1" : "out is NULL");
        return -1;
    }
    rotary *r = (rotary *)m;
    pg_rope_inv_freq(&r->o, r->R, len, out);
    double div = r->div ? fmax(exp(pg_get(r->div, 0)), 1e-8) : r->o.divide;
    for (int64_t i = 0; i < r->R; i++)
        out[i] = out[i] / div / r->o.interpolation_factor;
    if (mscale)
        *mscale = pg_rope_mscale(&r->o, len);
    return r->R;
}
