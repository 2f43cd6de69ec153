/* Indexing ops: gather, index_select, embedding, scatter_add.
 *
 * Indices are PG_I64. Every index is checked against its axis before anything
 * is written; the first bad one gives NULL and a message with its value and
 * the size. gather / index_select / embedding move bytes, so they take any
 * dtype; scatter_add adds, so it takes f32, f64 or i64. Float results record
 * a gradient: the backward rules scatter-add (gather, index_select,
 * embedding) or gather (scatter_add w.r.t. src) the upstream gradient, in
 * index order, so repeated indices accumulate. */
#include "op_util.h"

#include <string.h>

/* first position of an index outside [0, size), or -1 */
static int64_t first_bad(const pg_tensor *index, int64_t size)
{
    const int64_t *v = index->data;
    for (int64_t i = 0; i < index->numel; i++)
        if (v[i] < 0 || v[i] >= size)
            return i;
    return -1;
}

/* index is a non-NULL i64 tensor whose entries lie in [0, size) */
static bool check_index(pg_graph *g, const char *fn, const pg_tensor *index, int axis, int64_t size)
{
    if (!arg_present(g, fn, "index", index))
        return false;
    if (index->dtype != PG_I64) {
        pg_graph_fail(g, "%s: index must be i64, got %s", fn, SHAPE(index));
        return false;
    }
    int64_t i = first_bad(index, size);
    if (i >= 0)
        pg_graph_fail(g, "%s: index %lld out of range for axis %d of size %lld", fn,
                      (long long)((const int64_t *)index->data)[i], axis, (long long)size);
    return i < 0;
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    for (int d = ndim - 1; d >= 0; d--)
        stride[d] = d == ndim - 1 ? 1 : stride[d + 1] * shape[d + 1];
}

/* ---- walking an index tensor (gather, scatter_add) ------------------------------------
 * For each entry i (flat, contiguous) of the index: `oa` is the offset in the
 * indexed tensor a without the axis term (the caller adds index[i] * ax) and
 * `ob` the offset in a dense tensor b (scatter_add's src). The last dim is the
 * inner loop, the others an odometer. */
typedef struct walk {
    int n;                                     /* outer dims: all but the last */
    int64_t size[PG_MAX_DIMS], sa[PG_MAX_DIMS], sb[PG_MAX_DIMS];
    int64_t outer, inner, ia, ib;              /* inner loop: length and strides */
    int64_t ax;                                /* a's stride along the axis */
} walk;

/* over index's shape; a's and b's (may be NULL) own shapes give the strides */
static walk walk_plan(const pg_tensor *index, const pg_tensor *a, const pg_tensor *b, int axis)
{
    walk w;
    int64_t as[PG_MAX_DIMS] = {0}, bs[PG_MAX_DIMS] = {0};
    int nd = index->ndim;
    contiguous_strides(nd, a->shape, as);
    contiguous_strides(nd, b ? b->shape : index->shape, bs);
    w.ax = as[axis];
    as[axis] = 0;
    w.n = nd - 1;
    w.outer = 1;
    for (int d = 0; d < nd - 1; d++) {
        w.size[d] = index->shape[d];
        w.sa[d] = as[d];
        w.sb[d] = bs[d];
        w.outer *= index->shape[d];
    }
    w.inner = index->shape[nd - 1];
    w.ia = as[nd - 1];
    w.ib = bs[nd - 1];
    return w;
}

static void walk_next(const walk *w, int64_t *idx, int64_t *oa, int64_t *ob)
{
    for (int d = w->n - 1; d >= 0; d--) {
        if (++idx[d] < w->size[d]) {
            *oa += w->sa[d];
            *ob += w->sb[d];
            return;
        }
        idx[d] = 0;
        *oa -= (w->size[d] - 1) * w->sa[d];
        *ob -= (w->size[d] - 1) * w->sb[d];
    }
}

/* the odometer at outer row r: idx and the offsets oa, ob of its first entry */
static void walk_seek(const walk *w, int64_t r, int64_t *idx, int64_t *oa, int64_t *ob)
{
    *oa = *ob = 0;
    for (int d = w->n - 1; d >= 0; d--) {
        if (w->size[d] <= 0) { /* an empty index: no rows to walk */
            idx[d] = 0;
            continue;
        }
        idx[d] = r % w->size[d];
        r /= w->size[d];
        *oa += idx[d] * w->sa[d];
        *ob += idx[d] * w->sb[d];
    }
}

/* BODY sees i (flat index position), oa and ob, for the outer rows [r0, r1) */
#define WALK_ROWS(w, r0, r1, ...)                                                                              \
    do {                                                                                                       \
        int64_t idx_[PG_MAX_DIMS] = {0}, oa_, ob_;                                                             \
        walk_seek(&(w), (r0), idx_, &oa_, &ob_);                                                               \
        for (int64_t r_ = (r0); r_ < (r1); r_++, walk_next(&(w), idx_, &oa_, &ob_))                            \
            for (int64_t j_ = 0; j_ < (w).inner; j_++) {                                                       \
                int64_t i = r_ * (w).inner + j_, oa = oa_ + j_ * (w).ia, ob = ob_ + j_ * (w).ib;               \
                (void)ob;                                                                                      \
                __VA_ARGS__;                                                                                   \
            }                                                                                                  \
    } while (0)
#define WALK(w, ...) WALK_ROWS(w, 0, (w).outer, __VA_ARGS__)

/* ---- gather ------------------------------------------------------------------------- */

/* y[i] = x[oa + index[i] * ax] for the rows [r0, r1), elements of N bytes */
#define DEFINE_GATHER(N)                                                                                       \
    static void gather_##N(const walk *w, int64_t r0, int64_t r1, char *restrict y, const char *restrict x,   \
                           const int64_t *index)                                                               \
    {                                                                                                          \
        WALK_ROWS(*w, r0, r1, memcpy(y + i * N, x + (oa + index[i] * w->ax) * N, N));                          \
    }
DEFINE_GATHER(1)
DEFINE_GATHER(4)
DEFINE_GATHER(8)

/* gx[oa + index[i] * ax] += gy[i] for the rows [r0, r1): the scatter-add of the gradient */
#define DEFINE_GATHER_BWD(T, sfx)                                                                              \
    static void gather_bwd_##sfx(const walk *w, int64_t r0, int64_t r1, T *restrict gx, const T *restrict gy,  \
                                 const int64_t *index)                                                         \
    {                                                                                                          \
        WALK_ROWS(*w, r0, r1, gx[oa + index[i] * w->ax] += gy[i]);                                             \
    }
DEFINE_GATHER_BWD(float, f32)
DEFINE_GATHER_BWD(double, f64)

/* Rows of the walk on the thread pool. The forward's rows write disjoint outputs; the
 * backward's only when the axis is the last dim (each outer row of the index then reads
 * and writes its own row of x), else one task adds in index order. */
typedef struct gather_job {
    const walk *w;
    size_t es;
    bool backward;
    void *out;
    const void *in;
    const int64_t *index;
} gather_job;

static void gather_rows(void *ctx, int64_t r0, int64_t r1)
{
    const gather_job *j = ctx;
    if (!j->backward) {
        switch (j->es) {
        case 1: gather_1(j->w, r0, r1, j->out, j->in, j->index); break;
        case 4: gather_4(j->w, r0, r1, j->out, j->in, j->index); break;
        default: gather_8(j->w, r0, r1, j->out, j->in, j->index); break;
        }
    } else if (j->es == sizeof(float)) {
        gather_bwd_f32(j->w, r0, r1, j->out, j->in, j->index);
    } else {
        gather_bwd_f64(j->w, r0, r1, j->out, j->in, j->index);
    }
}

static void gather_run(const gather_job *j, bool split)
{
    if (split)
        pg_parallel_range(j->w->outer, 16384 / (j->w->inner > 0 ? j->w->inner : 1) + 1, gather_rows, (void *)j);
    else
        gather_rows((void *)j, 0, j->w->outer);
}

/* ip[0] axis; saved: the index */
static int gather_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *gx = pg_grad_of(g, x);
    if (!gx)
        return x->requires_grad ? -1 : 0;
    walk w = walk_plan(n->saved, x, NULL, (int)n->ip[0]);
    gather_job j = {&w, pg_dtype_size(x->dtype), true, gx->data, n->out->grad->data, n->saved->data};
    gather_run(&j, n->ip[0] == x->ndim - 1);
    return 0;
}

/* index has x's ndim and is no larger than x off the axis (larger than `other` nowhere, when given) */
static bool check_index_shape(pg_graph *g, const char *fn, const pg_tensor *index, const pg_tensor *x, int axis,
                              const pg_tensor *other)
{
    if (index->ndim != x->ndim || (other && other->ndim != x->ndim)) {
        pg_graph_fail(g, "%s: index %s must have the %d dims of x %s%s%s", fn, SHAPE(index), x->ndim, SHAPE(x),
                      other ? " and src " : "", other ? SHAPE(other) : "");
        return false;
    }
    for (int d = 0; d < x->ndim; d++) {
        if (d != axis && index->shape[d] > x->shape[d]) {
            pg_graph_fail(g, "%s: index %s is larger than x %s in dim %d", fn, SHAPE(index), SHAPE(x), d);
            return false;
        }
        if (other && index->shape[d] > other->shape[d]) {
            pg_graph_fail(g, "%s: index %s is larger than src %s in dim %d", fn, SHAPE(index), SHAPE(other), d);
            return false;
        }
    }
    return true;
}

/* The axis of a gather / scatter_add along `axis` of x with index (and src for
 * scatter_add): index i64 of a shape that fits x (and src), entries in range.
 * The axis in 0..ndim-1, or -1 after pg_graph_fail. */
static int gather_axis(pg_graph *g, const char *fn, const pg_tensor *x, int axis, const pg_tensor *index,
                       const pg_tensor *src)
{
    int a = axis_arg(g, fn, axis, x->ndim, x);
    if (a < 0)
        return -1;
    if (index->dtype != PG_I64) {
        pg_graph_fail(g, "%s: index must be i64, got %s", fn, SHAPE(index));
        return -1;
    }
    if (!check_index_shape(g, fn, index, x, a, src) || !check_index(g, fn, index, a, x->shape[a]))
        return -1;
    return a;
}

pg_tensor *pg_gather(pg_graph *g, pg_tensor *x, int axis, pg_tensor *index)
{
    const char *fn = "pg_gather";
    if (!arg_present(g, fn, "x", x) || !arg_present(g, fn, "index", index))
        return NULL;
    int a = gather_axis(g, fn, x, axis, index, NULL);
    if (a < 0)
        return NULL;
    pg_tensor *y = pg_op_output(g, fn, x->dtype, index->ndim, index->shape);
    if (!y)
        return NULL;
    walk w = walk_plan(index, x, NULL, a);
    gather_job j = {&w, pg_dtype_size(x->dtype), false, y->data, x->data, index->data};
    gather_run(&j, true);
    if (pg_dtype_is_float(x->dtype)) {
        pg_node *n = pg_op_record(g, fn, y, 1, &x, gather_backward);
        if (n) {
            n->ip[0] = a;
            n->saved = index;
        }
    }
    return y;
}

/* ---- index_select / embedding ----------------------------------------------------------
 * x seen as (outer, n, inner) around the axis, y as (outer, k, inner):
 * y[o, j, :] = x[o, index[j], :] */

typedef struct rows {
    int64_t outer, n, k, inner;
} rows;

static rows rows_around(const pg_tensor *x, int axis, int64_t k)
{
    rows r = {1, x->shape[axis], k, 1};
    for (int d = 0; d < axis; d++)
        r.outer *= x->shape[d];
    for (int d = axis + 1; d < x->ndim; d++)
        r.inner *= x->shape[d];
    return r;
}

/* single elements (inner 1) of N bytes, without a memcpy call each */
#define DEFINE_SELECT1(N)                                                                                      \
    static void select1_##N(const rows *r, char *restrict y, const char *restrict x, const int64_t *index)    \
    {                                                                                                          \
        for (int64_t o = 0; o < r->outer; o++)                                                                 \
            for (int64_t j = 0; j < r->k; j++)                                                                 \
                memcpy(y + (o * r->k + j) * N, x + (o * r->n + index[j]) * N, N);                             \
    }
DEFINE_SELECT1(1)
DEFINE_SELECT1(4)
DEFINE_SELECT1(8)

/* A select's slices on the thread pool, forward (out = y, in = x) or backward (out = gx,
 * in = gy) */
typedef struct select_job {
    rows r;
    size_t es;
    char *out;
    const char *in;
    const int64_t *index;
} select_job;

/* rows t0 .. t1 - 1 of y (row o k + j: x's row index[j] of block o), inner > 1 */
static void select_slice(void *ctx, int64_t t0, int64_t t1)
{
    const select_job *s = ctx;
    const rows *r = &s->r;
    size_t row = (size_t)r->inner * s->es;
    for (int64_t t = t0; t < t1; t++) {
        int64_t o = t / r->k, j = t % r->k;
        memcpy(s->out + (size_t)t * row, s->in + (size_t)(o * r->n + s->index[j]) * row, row);
    }
}

/* y's rows gathered from x: an embedding's (B L) rows of D on the pool, each thread its
 * own rows (at least SELECT_GRAIN bytes a thread) */
#define SELECT_GRAIN 65536

static void select_rows(const rows *r, void *y, const void *x, const int64_t *index, size_t es)
{
    if (r->inner == 1) {
        switch (es) {
        case 1: select1_1(r, y, x, index); return;
        case 4: select1_4(r, y, x, index); return;
        default: select1_8(r, y, x, index); return;
        }
    }
    size_t row = (size_t)r->inner * es;
    if (row == 0)
        return;
    select_job s = {*r, es, y, x, index};
    int64_t grain = (int64_t)(SELECT_GRAIN / row) + 1;
    pg_parallel_range(r->outer * r->k, grain, select_slice, &s);
}

/* gx[o, index[j], c] += gy[o, j, c] for the columns c0 .. c1 - 1: a repeated index adds into
 * one row, so the pool splits the columns, never the rows (the same order per element) */
#define DEFINE_SELECT_BWD(T, sfx)                                                                              \
    static void select_bwd_##sfx(const rows *r, T *gx, const T *gy, const int64_t *index, int64_t c0,          \
                                 int64_t c1)                                                                   \
    {                                                                                                          \
        for (int64_t o = 0; o < r->outer; o++)                                                                 \
            for (int64_t j = 0; j < r->k; j++) {                                                               \
                T *restrict d = gx + (o * r->n + index[j]) * r->inner;                                         \
                const T *restrict s = gy + (o * r->k + j) * r->inner;                                          \
                for (int64_t c = c0; c < c1; c++)                                                              \
                    d[c] += s[c];                                                                              \
            }                                                                                                  \
    }
DEFINE_SELECT_BWD(float, f32)
DEFINE_SELECT_BWD(double, f64)

#define SELECT_BWD_GRAIN 32768 /* additions a thread's columns take at least */

/* columns c0 .. c1 - 1 of the backward (select_job: out = gx, in = gy) */
static void select_bwd_slice(void *ctx, int64_t c0, int64_t c1)
{
    const select_job *s = ctx;
    if (s->es == sizeof(float))
        select_bwd_f32(&s->r, (float *)s->out, (const float *)s->in, s->index, c0, c1);
    else
        select_bwd_f64(&s->r, (double *)s->out, (const double *)s->in, s->index, c0, c1);
}

/* ip[0] axis; saved: the index (any shape, read flat) */
static int select_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *gx = pg_grad_of(g, x);
    if (!gx)
        return x->requires_grad ? -1 : 0;
    select_job s = {rows_around(x, (int)n->ip[0], n->saved->numel), pg_dtype_size(x->dtype), gx->data,
                    n->out->grad->data, n->saved->data};
    int64_t lines = s.r.outer * s.r.k; /* additions per column */
    pg_parallel_range(s.r.inner, SELECT_BWD_GRAIN / (lines > 0 ? lines : 1) + 1, select_bwd_slice, &s);
    return 0;
}

/* y (shape given) = rows of x at index along axis; records select_backward */
static pg_tensor *select_op(pg_graph *g, const char *fn, pg_tensor *x, int axis, pg_tensor *index, int ndim,
                         const int64_t *shape)
{
    pg_tensor *y = pg_op_output(g, fn, x->dtype, ndim, shape);
    if (!y)
        return NULL;
    rows r = rows_around(x, axis, index->numel);
    select_rows(&r, y->data, x->data, index->data, pg_dtype_size(x->dtype));
    if (pg_dtype_is_float(x->dtype)) {
        pg_node *n = pg_op_record(g, fn, y, 1, &x, select_backward);
        if (n) {
            n->ip[0] = axis;
            n->saved = index;
        }
    }
    return y;
}

pg_tensor *pg_index_select(pg_graph *g, pg_tensor *x, int axis, pg_tensor *index)
{
    const char *fn = "pg_index_select";
    if (!arg_present(g, fn, "x", x) || !arg_present(g, fn, "index", index))
        return NULL;
    int a = axis_arg(g, fn, axis, x->ndim, x);
    if (a < 0)
        return NULL;
    if (index->dtype != PG_I64 || index->ndim != 1) {
        pg_graph_fail(g, "%s: index must be 1-D i64, got %s", fn, SHAPE(index));
        return NULL;
    }
    if (!check_index(g, fn, index, a, x->shape[a]))
        return NULL;
    int64_t shape[PG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[a] = index->numel;
    return select_op(g, fn, x, a, index, x->ndim, shape);
}

pg_tensor *pg_embedding(pg_graph *g, pg_tensor *table, pg_tensor *ids)
{
    const char *fn = "pg_embedding";
    if (!arg_present(g, fn, "table", table) || !arg_present(g, fn, "ids", ids))
        return NULL;
    if (table->ndim != 2) {
        pg_graph_fail(g, "%s: table must be 2-D (V, D), got %s", fn, SHAPE(table));
        return NULL;
    }
    if (ids->dtype != PG_I64 || ids->ndim + 1 > PG_MAX_DIMS) {
        pg_graph_fail(g, "%s: ids must be i64 with at most %d dims, got %s", fn, PG_MAX_DIMS - 1, SHAPE(ids));
        return NULL;
    }
    int64_t i = first_bad(ids, table->shape[0]);
    if (i >= 0) {
        pg_graph_fail(g, "%s: id %lld out of range for a table of %lld rows", fn,
                      (long long)((const int64_t *)ids->data)[i], (long long)table->shape[0]);
        return NULL;
    }
    int64_t shape[PG_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof shape);
    shape[ids->ndim] = table->shape[1];
    return select_op(g, fn, table, 0, ids, ids->ndim + 1, shape);
}

/* ---- scatter_add -------------------------------------------------------------------------
 * y = x; y[oa + index[i] * ax] += src[ob] over index's entries (torch.scatter_add:
 * index has x's ndim, is no larger than src anywhere and than x off the axis). */

#define DEFINE_SCATTER(T, sfx)                                                                                 \
    static void scatter_##sfx(const walk *w, T *restrict y, const T *restrict src, const int64_t *index)      \
    {                                                                                                          \
        WALK(*w, y[oa + index[i] * w->ax] += src[ob]);                                                         \
    }
DEFINE_SCATTER(float, f32)
DEFINE_SCATTER(double, f64)
DEFINE_SCATTER(int64_t, i64)

#define DEFINE_SCATTER_BWD(T, sfx)                                                                             \
    /* d/dsrc: gsrc[ob] += gy[oa + index[i] * ax] (a gather of the gradient) */                                \
    static void scatter_bwd_##sfx(const walk *w, T *restrict gsrc, const T *restrict gy, const int64_t *index) \
    {                                                                                                          \
        WALK(*w, gsrc[ob] += gy[oa + index[i] * w->ax]);                                                       \
    }
DEFINE_SCATTER_BWD(float, f32)
DEFINE_SCATTER_BWD(double, f64)

/* in: x, src; ip[0] axis; saved: the index. d/dx is the identity. */
static int scatter_add_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *src = n->in[1], *gy = n->out->grad;
    if (pg_grad_accumulate(g, x, gy) != 0)
        return -1;
    pg_tensor *gs = pg_grad_of(g, src);
    if (!gs)
        return src->requires_grad ? -1 : 0;
    walk w = walk_plan(n->saved, x, src, (int)n->ip[0]);
    if (x->dtype == PG_F32)
        scatter_bwd_f32(&w, gs->data, gy->data, n->saved->data);
    else
        scatter_bwd_f64(&w, gs->data, gy->data, n->saved->data);
    return 0;
}

pg_tensor *pg_scatter_add(pg_graph *g, pg_tensor *x, int axis, pg_tensor *index, pg_tensor *src)
{
    const char *fn = "pg_scatter_add";
    if (!arg_present(g, fn, "x", x) || !arg_present(g, fn, "index", index) || !arg_present(g, fn, "src", src))
        return NULL;
    if (x->dtype == PG_BOOL || src->dtype != x->dtype) {
        pg_graph_fail(g, "%s: x and src must share a dtype of f32, f64 or i64: x is %s, src is %s", fn, SHAPE(x),
                      SHAPE(src));
        return NULL;
    }
    int a = gather_axis(g, fn, x, axis, index, src);
    if (a < 0)
        return NULL;
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    if (x->numel)
        memcpy(y->data, x->data, (size_t)x->numel * pg_dtype_size(x->dtype));
    walk w = walk_plan(index, x, src, a);
    switch (x->dtype) {
    case PG_F32: scatter_f32(&w, y->data, src->data, index->data); break;
    case PG_F64: scatter_f64(&w, y->data, src->data, index->data); break;
    default: scatter_i64(&w, y->data, src->data, index->data); break;
    }
    if (pg_dtype_is_float(x->dtype)) {
        pg_node *n = pg_op_record(g, fn, y, 2, (pg_tensor *[]){x, src}, scatter_add_backward);
        if (n) {
            n->ip[0] = a;
            n->saved = index;
        }
    }
    return y;
}
