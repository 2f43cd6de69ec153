/* The positional protocol: context checks, mod_x application, helpers for
 * schemes, and the registry of schemes by name (nn/posmod_list.h). */
#include "posmod.h"

#include "../autograd/attn_check.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

/* ---- the registry: one PG_POSMOD entry per kind in posmod_list.h ------------------------ */

#define PG_POSMOD(kind, role, hooks, props, file, summary) pg_posmod *pg_posmod_make_##kind(const pg_posmod_args *a);
#include "posmod_list.h"
#undef PG_POSMOD

/* dist_only and needs_qk spell out a bit of hooks and of props */
static const pg_posmod_kind_info KINDS[] = {
#define PG_POSMOD(kind, role, hooks, props, file, summary)                                                        \
    {#kind, pg_posmod_make_##kind, file, role, (hooks), (props), ((hooks) & PG_POS_HOOK_DIST) != 0,                 \
     ((props) & PG_POS_NEEDS_QK) != 0, summary},
#include "posmod_list.h"
#undef PG_POSMOD
};
enum { N_KINDS = sizeof KINDS / sizeof KINDS[0] };

/* "sinusoidal learned ..." into buf (truncated to n) */
static const char *kind_names(char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < N_KINDS && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? " " : "", KINDS[i].kind);
    return buf;
}

const pg_posmod_kind_info *pg_posmod_info(const char *kind)
{
    for (int i = 0; kind && i < N_KINDS; i++)
        if (!strcmp(KINDS[i].kind, kind))
            return &KINDS[i];
    char names[512];
    if (!kind)
        pg_set_error("pg_posmod_info: kind is NULL (registered: %s)", kind_names(names, sizeof names));
    else
        pg_set_error("pg_posmod_info: unknown positional module kind \"%s\" (registered: %s)", kind,
                     kind_names(names, sizeof names));
    return NULL;
}

const pg_posmod_kind_info *pg_posmod_info_at(int i)
{
    if (i < 0) {
        pg_set_error("pg_posmod_info_at: index %d < 0", i);
        return NULL;
    }
    return i < N_KINDS ? &KINDS[i] : NULL;
}

pg_posmod_make_fn pg_posmod_lookup(const char *kind)
{
    if (!kind) {
        pg_set_error("pg_posmod_lookup: kind is NULL");
        return NULL;
    }
    for (int i = 0; i < N_KINDS; i++)
        if (!strcmp(KINDS[i].kind, kind))
            return KINDS[i].make;
    return NULL;
}

int pg_posmod_kinds(const char **names, int max)
{
    if (!names && max > 0) {
        pg_set_error("pg_posmod_kinds: names is NULL for max %d", max);
        return -1;
    }
    for (int i = 0; names && i < N_KINDS && i < max; i++)
        names[i] = KINDS[i].kind;
    return N_KINDS;
}

pg_posmod *pg_posmod_from_spec(const pg_posmod_spec *s, const pg_posmod_args *a)
{
    const char *fn = "pg_posmod_from_spec";
    if (!s || !a) {
        pg_set_error("%s: %s is NULL", fn, s ? "args" : "spec");
        return NULL;
    }
    pg_posmod_make_fn make = s->make ? s->make : s->kind ? pg_posmod_lookup(s->kind) : NULL;
    if (!make) {
        char names[512];
        pg_set_error("%s: unknown positional module kind \"%s\" (registered in nn/posmod_list.h: %s)", fn,
                     s->kind ? s->kind : "(null)", kind_names(names, sizeof names));
        return NULL;
    }
    pg_posmod_args args = *a;
    args.opts = s->opts;
    pg_posmod *m = make(&args);
    if (m && !m->ops) {
        pg_set_error("%s: the constructor for \"%s\" returned a module without hooks", fn,
                     s->kind ? s->kind : "(custom)");
        pg_module_free(&m->base);
        return NULL;
    }
    return m;
}

void pg_posmod_init(pg_posmod *m, const char *type, const pg_posmod_ops *ops, void (*destroy)(pg_module *))
{
    static const pg_posmod_ops no_hooks = {0};
    if (!m) {
        pg_set_error("pg_posmod_init: module is NULL");
        return;
    }
    pg_module_init(&m->base, type, destroy);
    m->ops = ops ? ops : &no_hooks;
    if (!ops)
        pg_set_error("pg_posmod_init: ops is NULL (the module gets no hooks)");
}

void *pg_posmod_alloc(size_t size, const char *type, const pg_posmod_ops *ops, void (*destroy)(pg_module *),
                      const char *fn)
{
    if (!type || !ops || !fn || size < sizeof(pg_posmod)) {
        pg_set_error("pg_posmod_alloc: %s", !type ? "type is NULL"
                                           : !ops ? "ops is NULL"
                                           : !fn  ? "fn is NULL"
                                                  : "size is smaller than a pg_posmod");
        return NULL;
    }
    pg_posmod *m = pg_module_alloc(size, type, destroy, fn);
    if (m)
        m->ops = ops;
    return m;
}

/* ---- checks ---------------------------------------------------------------------------- */

int pg_pos_ctx_check(pg_graph *g, const char *fn, const pg_pos_ctx *c)
{
    if (!fn) {
        pg_graph_fail(g, "pg_pos_ctx_check: fn is NULL");
        return -1;
    }
    if (!c) {
        pg_graph_fail(g, "%s: context is NULL", fn);
        return -1;
    }
    const pg_attn_operands ops = {.layout = PG_ATTN_SIZES, .B = c->B, .H = c->heads, .Lq = c->Lq, .Lk = c->Lk,
                                  .head_dim = c->head_dim, .dtype = c->dtype, .mask = c->mask, .pos_q = c->pos_q,
                                  .pos_k = c->pos_k, .self_attn = c->self_attn};
    return pg_attn_check(g, fn, &ops);
}

/* ---- mod_x ----------------------------------------------------------------------------- */

pg_tensor *pg_posmod_apply_x(pg_graph *g, pg_posmod *const *mods, int n, pg_tensor *x, pg_tensor *pos,
                             pg_tensor *mask, int64_t heads, int64_t head_dim, pg_rng *rng)
{
    const char *fn = "pg_posmod_apply_x";
    PG_NN_SCRATCH(g, fn, pg_posmod_apply_x(g, mods, n, x, pos, mask, heads, head_dim, rng));
    if (!x || !pg_dtype_is_float(x->dtype) || x->ndim != 3) {
        pg_graph_fail(g, "%s: x is %s, expected a float (B, L, dim)", fn, x ? SHAPE(x) : "NULL");
        return NULL;
    }
    if (n < 0 || (n > 0 && !mods)) {
        pg_graph_fail(g, "%s: bad module list (%d modules)", fn, n);
        return NULL;
    }
    pg_pos_ctx c = {pos, pos, mask, true, false, x->shape[0], heads, head_dim, x->shape[1], x->shape[1],
                    1.0, x->dtype, rng, NULL};
    if (pg_pos_ctx_check(g, fn, &c) != 0)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (!mods[i]) {
            pg_graph_fail(g, "%s: module %d of %d is NULL", fn, i, n);
            return NULL;
        }
        if (!mods[i]->ops->mod_x)
            continue;
        pg_tensor *y = mods[i]->ops->mod_x(g, mods[i], x, &c);
        if (!y) {
            if (!pg_graph_error(g)) /* a hook that failed without saying why */
                pg_graph_fail(g, "%s: module %d (%s): mod_x failed", fn, i, mods[i]->base.type);
            return NULL;
        }
        if (!pg_same_shape(y, x) || y->dtype != x->dtype) {
            pg_graph_fail(g, "%s: module %d (%s) mod_x turned x %s into %s", fn, i, mods[i]->base.type, SHAPE(x),
                          SHAPE(y));
            return NULL;
        }
        x = y;
    }
    return x;
}

pg_tensor *pg_posmod_x_table(pg_graph *g, pg_posmod *m, int64_t L, int64_t dim, pg_tensor *pos)
{
    const char *fn = "pg_posmod_x_table";
    PG_NN_SCRATCH(g, fn, pg_posmod_x_table(g, m, L, dim, pos));
    if (!m || !m->ops->mod_x || L < 1 || dim < 1) {
        pg_graph_fail(g, "%s: need a module with mod_x and L, dim >= 1 (module %s, L %lld, dim %lld)", fn,
                      m ? m->base.type : "NULL", (long long)L, (long long)dim);
        return NULL;
    }
    pg_tensor *zeros = pg_zeros(g, PG_F64, PG_SHAPE(1, L, dim));
    pg_tensor_list p = pg_module_parameters(&m->base); /* the table in the module's own dtype */
    if (p.n > 0 && zeros)
        zeros = pg_cast(g, zeros, p.tensors[0]->dtype);
    pg_tensor_list_free(&p);
    pg_tensor *x = pg_posmod_apply_x(g, &m, 1, zeros, pos, NULL, 0, 0, NULL);
    return pg_reshape(g, x, PG_SHAPE(L, dim));
}

pg_tensor *pg_posmod_bias_table(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c)
{
    const char *fn = "pg_posmod_bias_table";
    PG_NN_SCRATCH(g, fn, pg_posmod_bias_table(g, m, c));
    if (!m || !m->ops->bias_table) {
        pg_graph_fail(g, "%s: %s has no bias_table hook", fn, m ? m->base.type : "NULL module");
        return NULL;
    }
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return NULL;
    return m->ops->bias_table(g, m, c);
}

/* ---- helpers for schemes ------------------------------------------------------------------ */

pg_tensor *pg_pos_resolve(pg_graph *g, pg_tensor *pos, int64_t B, int64_t L, pg_dtype dtype)
{
    const char *fn = "pg_pos_resolve";
    PG_NN_SCRATCH(g, fn, pg_pos_resolve(g, pos, B, L, dtype));
    if (!pg_dtype_is_float(dtype) && dtype != PG_I64) {
        pg_graph_fail(g, "%s: dtype must be f32, f64 or i64, got %s", fn, pg_dtype_name(dtype));
        return NULL;
    }
    if (B < 1 || L < 1) {
        pg_graph_fail(g, "%s: bad sizes B %lld, L %lld", fn, (long long)B, (long long)L);
        return NULL;
    }
    const pg_attn_operands ops = {.layout = PG_ATTN_SIZES, .B = B, .Lq = L, .Lk = L, .pos_q = pos, .self_attn = true};
    if (pg_attn_check(g, fn, &ops) != 0)
        return NULL;
    if (pos) /* positions are data: detach so a cast never records */
        return pg_cast(g, pg_detach(g, pos), dtype);
    pg_tensor *p = pg_empty(g, dtype, PG_SHAPE(B, L));
    for (int64_t i = 0; p && i < B * L; i++)
        pg_set(p, i, (double)(i % L));
    return p;
}

pg_tensor *pg_pos_delta(pg_graph *g, const pg_pos_ctx *c, pg_dtype dtype)
{
    const char *fn = "pg_pos_delta";
    PG_NN_SCRATCH(g, fn, pg_pos_delta(g, c, dtype));
    if (!pg_dtype_is_float(dtype)) {
        pg_graph_fail(g, "%s: dtype must be f32 or f64, got %s", fn, pg_dtype_name(dtype));
        return NULL;
    }
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return NULL;
    pg_tensor *pq = pg_pos_resolve(g, c->pos_q, c->B, c->Lq, dtype); /* (B, Lpq) */
    pg_tensor *pk = pg_pos_resolve(g, c->pos_k, c->B, c->Lk, dtype); /* (B, Lpk) */
    if (!pq || !pk)
        return NULL;
    pq = pg_reshape(g, pq, PG_SHAPE(c->B, pq->shape[1], 1));
    pk = pg_reshape(g, pk, PG_SHAPE(c->B, 1, pk->shape[1]));
    return pg_sub(g, pq, pk); /* (B, Lpq, Lpk) */
}

pg_tensor *pg_pos_pad_bias(pg_graph *g, pg_tensor *bias, int64_t Lq, int64_t Lk)
{
    const char *fn = "pg_pos_pad_bias";
    PG_NN_SCRATCH(g, fn, pg_pos_pad_bias(g, bias, Lq, Lk));
    if (!bias) {
        pg_graph_fail(g, "%s: bias is NULL", fn);
        return NULL;
    }
    int nd = bias->ndim;
    if (nd < 2 || bias->shape[nd - 2] > Lq || bias->shape[nd - 1] > Lk) {
        pg_graph_fail(g, "%s: bias is %s, expected (..., <= %lld, <= %lld)", fn, SHAPE(bias), (long long)Lq,
                      (long long)Lk);
        return NULL;
    }
    pg_tensor *b = bias;
    if (b->shape[nd - 2] < Lq)
        b = pg_pad(g, b, nd - 2, Lq - b->shape[nd - 2], 0, 0.0);
    if (b && b->shape[nd - 1] < Lk)
        b = pg_pad(g, b, nd - 1, Lk - b->shape[nd - 1], 0, 0.0);
    return b;
}

int pg_pos_table_check(pg_graph *g, const char *fn, const pg_pos_ctx *c, int64_t heads)
{
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return -1;
    if (c->heads != 0 && c->heads != heads) {
        pg_graph_fail(g, "%s: the module has %lld heads, the attention %lld", fn, (long long)heads,
                      (long long)c->heads);
        return -1;
    }
    if (!pg_dtype_is_float(c->dtype)) {
        pg_graph_fail(g, "%s: dtype must be f32 or f64, got %s", fn, pg_dtype_name(c->dtype));
        return -1;
    }
    return 0;
}

int pg_pos_module_check(pg_graph *g, const char *fn, const pg_pos_ctx *c, int64_t heads, pg_dtype dtype)
{
    if (pg_pos_ctx_check(g, fn, c) != 0)
        return -1;
    if (c->dtype != dtype || (c->heads != 0 && c->heads != heads)) {
        pg_graph_fail(g, "%s: the module has %lld heads of dtype %s, the attention %lld heads of dtype %s", fn,
                      (long long)heads, pg_dtype_name(dtype), (long long)c->heads, pg_dtype_name(c->dtype));
        return -1;
    }
    return 0;
}

pg_tensor *pg_pos_side(pg_graph *g, pg_tensor *pos, int64_t L, double start, pg_dtype dtype, bool keep_grad)
{
    if (pos && keep_grad)
        return pos->dtype == dtype ? pos : pg_cast(g, pos, dtype);
    if (pos)
        return pg_pos_resolve(g, pos, pos->shape[0], L, dtype);
    pg_tensor *p = pg_empty(g, dtype, PG_SHAPE(1, L));
    for (int64_t i = 0; p && i < L; i++)
        pg_set(p, i, start + (double)i);
    return p;
}

pg_tensor *pg_pos_delta_sides(pg_graph *g, pg_tensor *pq, pg_tensor *pk)
{
    if (!pq || !pk)
        return NULL;
    int64_t Bq = pq->shape[0], Lpq = pq->shape[1], Bk = pk->shape[0], Lpk = pk->shape[1];
    return pg_sub(g, pg_reshape(g, pq, PG_SHAPE(Bq, 1, Lpq, 1)), pg_reshape(g, pk, PG_SHAPE(Bk, 1, 1, Lpk)));
}

pg_tensor *pg_pos_table_finish(pg_graph *g, const char *fn, pg_tensor *bias, const pg_pos_ctx *c, int64_t heads)
{
    if (!bias) {
        if (!pg_graph_error(g))
            pg_graph_fail(g, "%s: failed for positions %s, %s", fn, c->pos_q ? SHAPE(c->pos_q) : "default",
                          c->pos_k ? SHAPE(c->pos_k) : "default");
        return NULL;
    }
    bias = pg_pos_pad_bias(g, bias, c->Lq, c->Lk);
    if (bias && !c->pos_q && !c->pos_k)
        bias = pg_reshape(g, bias, PG_SHAPE(heads, c->Lq, c->Lk));
    return bias;
}

int pg_pos_dist_check(pg_graph *g, const char *fn, const pg_tensor *d)
{
    if (d && d->ndim == 1 && pg_dtype_is_float(d->dtype))
        return 0;
    pg_graph_fail(g, "%s: dist_bias needs distances (D) of f32/f64, got %s", fn, d ? SHAPE(d) : "NULL");
    return -1;
}

int pg_pos_heads_check(const char *fn, int64_t opt_heads, int64_t heads)
{
    const int64_t most = (int64_t)(PG_MAX_TENSOR_BYTES / sizeof(double));
    if (opt_heads != 0 && opt_heads != heads) {
        pg_set_error("%s: opts.heads %lld differs from heads %lld", fn, (long long)opt_heads, (long long)heads);
        return -1;
    }
    if (heads < 1 || heads > most) {
        pg_set_error("%s: need 1 <= heads <= %lld, got %lld", fn, (long long)most, (long long)heads);
        return -1;
    }
    return 0;
}

pg_tensor *pg_pos_band_slots(pg_graph *g, pg_tensor *x, const pg_pos_band *band)
{
    const char *fn = "pg_pos_band_slots";
    PG_NN_SCRATCH(g, fn, pg_pos_band_slots(g, x, band));
    if (!x || !band) {
        pg_graph_fail(g, "%s: %s is NULL", fn, x ? "band" : "x");
        return NULL;
    }
    int64_t W = band->W, w = band->w, lb = band->lb, lf = band->lf;
    if (W < 1 || w < 1 || lb < 0 || lf < 0 || lb > W - 1 || lf > W - 1 || lb + lf + 1 > INT_MAX || x->ndim != 4 ||
        x->shape[1] != W || x->shape[2] != w) {
        pg_graph_fail(g, "%s: x is %s, expected (b, W, w, c) = (b, %lld, %lld, c) for a band of W %lld windows of "
                      "%lld, lb %lld, lf %lld (0 <= lb, lf < W)",
                      fn, SHAPE(x), (long long)W, (long long)w, (long long)W, (long long)w, (long long)lb,
                      (long long)lf);
        return NULL;
    }
    pg_tensor *p = pg_pad(g, x, 1, lb, lf, 0.0); /* (b, W + lb + lf, w, c) */
    int n = (int)(lb + lf + 1);
    pg_tensor **parts = pg_graph_alloc(g, (size_t)n * sizeof *parts);
    if (!p || !parts)
        return NULL;
    for (int i = 0; i < n; i++) /* window offset i - lb: slots i w .. (i + 1) w - 1 */
        parts[i] = pg_narrow(g, p, 1, i, W);
    return n == 1 ? parts[0] : pg_concat(g, n, parts, 2);
}

static double band_position(const pg_tensor *pos, int64_t row, int64_t n, int64_t t)
{
    return pos ? ((const double *)pos->data)[row * n + t] : (double)t;
}

int pg_pos_band_positions(pg_graph *g, const pg_pos_band *band, int64_t b, pg_dtype dtype, pg_tensor **pq,
                          pg_tensor **pk)
{
    const char *fn = "pg_pos_band_positions";
    int64_t W = band ? band->W : 0, w = band ? band->w : 0, n = W * w;
    int64_t S = band ? (band->lb + band->lf + 1) * w : 0;
    const pg_tensor *sq = band ? band->pq : NULL, *sk = band ? band->pk : NULL;
    for (int i = 0; i < 2; i++) {
        const pg_tensor *p = i ? sk : sq;
        if (!band || !pq || !pk || (p && (p->dtype != PG_F64 || p->ndim != 2 || p->shape[0] != b || p->shape[1] != n))) {
            pg_graph_fail(g, "%s: %s; band positions must be f64 (b, W w) = (%lld, %lld)", fn,
                          !band ? "band is NULL" : !pq || !pk ? "an output is NULL" : SHAPE(p), (long long)b,
                          (long long)n);
            return -1;
        }
    }
    *pq = pg_empty(g, dtype, PG_SHAPE(b, W, w));
    *pk = pg_empty(g, dtype, PG_SHAPE(b, W, S));
    if (!*pq || !*pk)
        return -1;
    for (int64_t r = 0; r < b; r++)
        for (int64_t o = 0; o < W; o++) {
            for (int64_t i = 0; i < w; i++)
                pg_set(*pq, (r * W + o) * w + i, band_position(sq, r, n, o * w + i));
            for (int64_t s = 0; s < S; s++) {
                int64_t t = (o - band->lb) * w + s;
                bool none = t < 0 || t >= n;
                pg_set(*pk, (r * W + o) * S + s, none ? band_position(sq, r, n, o * w) : band_position(sk, r, n, t));
            }
        }
    return 0;
}

pg_tensor *pg_pos_head_of_row(pg_graph *g, pg_tensor *t)
{
    if (!t || t->ndim < 2) {
        pg_graph_fail(g, "pg_pos_head_of_row: t is %s, expected (b, H, ...)", t ? SHAPE(t) : "NULL");
        return NULL;
    }
    int64_t b = t->shape[0], H = t->shape[1], rest = t->numel / (b > 0 && H > 0 ? b * H : 1);
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(b));
    if (!idx)
        return NULL;
    for (int64_t r = 0; r < b; r++)
        pg_i64(idx)[r] = r * H + r % H;
    int64_t shape[PG_MAX_DIMS];
    shape[0] = b;
    for (int i = 2; i < t->ndim; i++)
        shape[i - 1] = t->shape[i];
    pg_tensor *sel = pg_index_select(g, pg_reshape(g, t, PG_SHAPE(b * H, rest)), 0, idx);
    return pg_reshape(g, sel, t->ndim - 1, shape);
}

/* ---- divide / learned_div ---------------------------------------------------------------- */

pg_tensor *pg_pos_div_param(pg_posmod *m, pg_pos_divide d, pg_dtype dtype, bool *ok)
{
    if (!m || !ok) {
        pg_set_error("pg_pos_div_param: %s is NULL", m ? "ok" : "module");
        if (ok)
            *ok = false;
        return NULL;
    }
    *ok = false;
    if (!(d.divide > 0) || !isfinite(d.divide)) {
        pg_set_error("%s: divide must be a finite number > 0, got %g", m && m->base.type ? m->base.type : "posmod",
                     d.divide);
        return NULL;
    }
    if (!d.learned) {
        *ok = true;
        return NULL;
    }
    pg_tensor *div = pg_module_new_param(&m->base, "div", dtype, 0, NULL);
    if (!div)
        return NULL;
    pg_set(div, 0, log(d.divide)); /* div = log(divide): exp(div) starts at divide */
    *ok = true;
    return div;
}

pg_tensor *pg_pos_divide_by(pg_graph *g, pg_tensor *t, pg_tensor *div, double divide)
{
    if (!t) {
        pg_graph_fail(g, "pg_pos_divide_by: t is NULL");
        return NULL;
    }
    if (div) /* max(exp(div), 1e-8): the clamp passes no gradient where it clamps */
        return pg_div(g, t, pg_clamp(g, pg_exp(g, div), 1e-8, INFINITY));
    return divide == 1.0 ? t : pg_mul_scalar(g, t, 1.0 / divide);
}

/* ---- owning lists of modules ------------------------------------------------------------- */

void pg_posmod_free_list(pg_posmod *const *pos, int from, int n)
{
    for (int i = from; pos && i < n; i++) {
        bool seen = false;
        for (int j = from; j < i; j++)
            seen = seen || pos[j] == pos[i];
        if (pos[i] && !seen)
            pg_module_free(&pos[i]->base);
    }
}

int pg_posmod_adopt(pg_module *parent, pg_posmod *const *pos, int n)
{
    const char *fn = "pg_posmod_adopt";
    if (n == 0)
        return 0;
    if (!parent || !pos || n < 0) {
        pg_set_error("%s: %s (%d modules)", fn, !parent ? "parent is NULL" : !pos ? "pos is NULL" : "n < 0", n);
        pg_posmod_free_list(pos, 0, n);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (!pos[i]) {
            pg_set_error("%s: module %d of %d is NULL", fn, i, n);
            pg_posmod_free_list(pos, 0, n);
            return -1;
        }
    if (n == 1)
        return pg_module_add_child(parent, "pos", &pos[0]->base);
    pg_module *list = pg_module_new_container("ModuleList", fn);
    if (!list) {
        pg_posmod_free_list(pos, 0, n);
        return -1;
    }
    if (pg_module_add_child(parent, "pos", list) != 0) {
        pg_posmod_free_list(pos, 0, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        if (pg_module_add_child(list, name, &pos[i]->base) != 0) {
            pg_posmod_free_list(pos, i + 1, n);
            return -1;
        }
    }
    return 0;
}

bool pg_posmod_args_ok(const char *fn, const pg_posmod_args *a)
{
    if (!a)
        pg_set_error("%s: args is NULL", fn ? fn : "pg_posmod_args_ok");
    return a != NULL;
}

int64_t pg_posmod_heads(const char *fn, const char *what, int64_t opt_heads, const pg_posmod_args *a)
{
    if (!fn || !what || !a) {
        pg_set_error("%s: %s is NULL", fn ? fn : "pg_posmod_heads", !fn ? "fn" : !what ? "what" : "args");
        return 0;
    }
    int64_t heads = opt_heads ? opt_heads : a->heads;
    if (heads < 1) {
        pg_set_error("%s: %s acts inside attention and needs heads >= 1 (args.heads %lld)", fn, what,
                     (long long)a->heads);
        return 0;
    }
    if (opt_heads && a->heads && opt_heads != a->heads) {
        pg_set_error("%s: opts.heads %lld differs from the attention's %lld heads", fn, (long long)opt_heads,
                     (long long)a->heads);
        return 0;
    }
    return heads;
}
