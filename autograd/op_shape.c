/* Shape ops: permute / transpose, slice / narrow, concat / stack, pad.
 *
 * They move bytes, so they take every dtype (f32, f64, i64, bool); only float
 * results record a gradient. Permute has its own kernel (contiguous runs
 * copied whole, otherwise a tiled transpose). Every other op is a "block
 * copy" along one axis: both tensors are seen as (outer, n, inner) around the
 * axis, and entries src_start + k*src_step of the source land at entries
 * dst_start + k*dst_step of the destination for k < count. Each backward rule
 * is the same block walked from the output gradient into the input gradient,
 * adding instead of copying. */
#include "op_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- moving bytes ------------------------------------------------------------------ */

/* rows of N bytes: dst + r*ds <- src + r*ss (byte strides; ss 0 repeats one element) */
#define DEFINE_COPY_ROWS(N)                                                                                    \
    static void copy_rows_##N(char *restrict dst, int64_t ds, const char *restrict src, int64_t ss,            \
                              int64_t rows)                                                                    \
    {                                                                                                          \
        for (int64_t r = 0; r < rows; r++)                                                                     \
            memcpy(dst + r * ds, src + r * ss, N);                                                             \
    }
DEFINE_COPY_ROWS(1)
DEFINE_COPY_ROWS(4)
DEFINE_COPY_ROWS(8)

/* `rows` rows of `bytes` bytes, strides in bytes; element-sized rows avoid a
 * memcpy call per element, rows adjacent on both sides go as one memcpy */
static void copy_rows(char *dst, int64_t ds, const char *src, int64_t ss, int64_t rows, size_t bytes)
{
    if (rows <= 0 || bytes == 0)
        return;
    if (ds == (int64_t)bytes && ss == (int64_t)bytes) {
        memcpy(dst, src, (size_t)rows * bytes);
        return;
    }
    switch (bytes) {
    case 1: copy_rows_1(dst, ds, src, ss, rows); break;
    case 4: copy_rows_4(dst, ds, src, ss, rows); break;
    case 8: copy_rows_8(dst, ds, src, ss, rows); break;
    default:
        for (int64_t r = 0; r < rows; r++)
            memcpy(dst + r * ds, src + r * ss, bytes);
    }
}

/* ---- block copies along one axis ----------------------------------------------------- */

typedef struct block {
    int64_t outer, inner, count;       /* tensors seen as (outer, n, inner) around the axis */
    int64_t src_n, src_start, src_step;
    int64_t dst_n, dst_start, dst_step;
} block;

/* outer = prod(shape[:axis]), inner = prod(shape[axis+1:]) */
static block block_around(int ndim, const int64_t *shape, int axis)
{
    block b = {1, 1, 0, 0, 0, 1, 0, 0, 1};
    for (int d = 0; d < axis; d++)
        b.outer *= shape[d];
    for (int d = axis + 1; d < ndim; d++)
        b.inner *= shape[d];
    return b;
}

/* the same entries, walked the other way (for the backward rule) */
static block block_reversed(block b)
{
    block r = b;
    r.src_n = b.dst_n, r.src_start = b.dst_start, r.src_step = b.dst_step;
    r.dst_n = b.src_n, r.dst_start = b.src_start, r.dst_step = b.src_step;
    return r;
}

typedef struct block_job {
    const block *b;
    char *dst;
    const char *src;
    size_t es;
} block_job;

/* the block copy's outer indices o0 .. o1 - 1 */
static void block_copy_slice(void *ctx, int64_t o0, int64_t o1)
{
    const block_job *j = ctx;
    const block *b = j->b;
    size_t row = (size_t)b->inner * j->es;
    /* a single entry has no stride (and a huge step must not overflow one) */
    int64_t ds = b->count > 1 ? b->dst_step * (int64_t)row : (int64_t)row;
    int64_t ss = b->count > 1 ? b->src_step * (int64_t)row : (int64_t)row;
    for (int64_t o = o0; o < o1; o++) {
        const char *s = j->src + (size_t)((o * b->src_n + b->src_start) * b->inner) * j->es;
        char *d = j->dst + (size_t)((o * b->dst_n + b->dst_start) * b->inner) * j->es;
        copy_rows(d, ds, s, ss, b->count, row);
    }
}

/* dst[o, dst_start + k*dst_step, :] = src[o, src_start + k*src_step, :]; the outer index
 * sliced over the pool when the copy has BLOCK_GRAIN bytes a thread (a concatenation of
 * XL's sines and cosines: 511 rows of 256 bytes each side) */
#define BLOCK_GRAIN 65536

static void block_copy(const block *b, void *dst, const void *src, size_t es)
{
    size_t per = (size_t)(b->count * b->inner) * es; /* bytes an outer index copies */
    if (b->count <= 0 || per == 0)
        return;
    block_job j = {b, dst, src, es};
    pg_parallel_range(b->outer, (int64_t)(BLOCK_GRAIN / per) + 1, block_copy_slice, &j);
}

/* dst[o, dst_start + k, :] = *elem for k < count (dst_step 1) */
static void block_fill(const block *b, void *dst, const void *elem, size_t es)
{
    for (int64_t o = 0; o < b->outer; o++) {
        char *d = (char *)dst + (size_t)((o * b->dst_n + b->dst_start) * b->inner) * es;
        copy_rows(d, (int64_t)es, elem, 0, b->count * b->inner, es);
    }
}

/* dst[o, dst_start + k*dst_step, :] += src[o, src_start + k*src_step, :] */
#define DEFINE_BLOCK_ADD(T, sfx)                                                                               \
    static void block_add_##sfx(const block *b, T *dst, const T *src)                                          \
    {                                                                                                          \
        if (b->dst_step == 1 && b->src_step == 1) { /* one contiguous run of count x inner per o */            \
            const int64_t run = b->count * b->inner;                                                           \
            for (int64_t o = 0; o < b->outer; o++) {                                                           \
                T *restrict d = dst + (o * b->dst_n + b->dst_start) * b->inner;                                \
                const T *restrict s = src + (o * b->src_n + b->src_start) * b->inner;                          \
                for (int64_t i = 0; i < run; i++)                                                              \
                    d[i] += s[i];                                                                              \
            }                                                                                                  \
            return;                                                                                            \
        }                                                                                                      \
        for (int64_t o = 0; o < b->outer; o++)                                                                 \
            for (int64_t k = 0; k < b->count; k++) {                                                           \
                T *restrict d = dst + (o * b->dst_n + b->dst_start + k * b->dst_step) * b->inner;              \
                const T *restrict s = src + (o * b->src_n + b->src_start + k * b->src_step) * b->inner;        \
                for (int64_t i = 0; i < b->inner; i++)                                                         \
                    d[i] += s[i];                                                                              \
            }                                                                                                  \
    }
DEFINE_BLOCK_ADD(float, f32)
DEFINE_BLOCK_ADD(double, f64)

static void block_add(const block *b, pg_tensor *dst, const pg_tensor *src)
{
    if (dst->dtype == PG_F32)
        block_add_f32(b, dst->data, src->data);
    else
        block_add_f64(b, dst->data, src->data);
}

/* Backward of the ops whose ctx is the forward block: x->grad gets the
 * output gradient's entries back at the places they came from. */
static int block_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *gx = pg_grad_of(g, n->in[0]);
    if (!gx)
        return n->in[0]->requires_grad ? -1 : 0;
    block r = block_reversed(*(const block *)n->ctx);
    block_add(&r, gx, n->out->grad);
    return 0;
}

/* Runs the forward block and records block_backward (float outputs only). */
static pg_tensor *block_op(pg_graph *g, const char *fn, pg_tensor *x, pg_tensor *y, const block *b)
{
    block_copy(b, y->data, x->data, pg_dtype_size(x->dtype));
    if (!pg_dtype_is_float(x->dtype) || !pg_op_needs_grad(g, 1, &x))
        return y;
    block *saved = pg_graph_alloc(g, sizeof *saved);
    if (!saved)
        return NULL;
    *saved = *b;
    pg_node *n = pg_op_record(g, fn, y, 1, &x, block_backward);
    if (n)
        n->ctx = saved;
    return y;
}

/* x's shape with dim `axis` set to `size` */
static pg_tensor *output_resized(pg_graph *g, const char *fn, const pg_tensor *x, int axis, int64_t size)
{
    int64_t shape[PG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = size;
    return pg_op_output(g, fn, x->dtype, x->ndim, shape);
}

/* ---- permute / transpose ------------------------------------------------------------ */

#define TILE 32

/* dst[r*dr + c] = src[r + c*sc] for r < rows, c < cols, elements of N bytes,
 * in TILE x TILE tiles so reads and writes both stay in cache */
#define DEFINE_TILE(N)                                                                                         \
    static void tile_##N(char *restrict dst, int64_t dr, const char *restrict src, int64_t sc, int64_t rows,   \
                         int64_t cols)                                                                          \
    {                                                                                                          \
        for (int64_t r0 = 0; r0 < rows; r0 += TILE)                                                            \
            for (int64_t c0 = 0; c0 < cols; c0 += TILE) {                                                      \
                int64_t r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < cols ? c0 + TILE : cols;    \
                for (int64_t r = r0; r < r1; r++)                                                              \
                    for (int64_t c = c0; c < c1; c++)                                                          \
                        memcpy(dst + (r * dr + c) * N, src + (r + c * sc) * N, N);                             \
            }                                                                                                  \
    }
DEFINE_TILE(1)
DEFINE_TILE(4)
DEFINE_TILE(8)

static void tile(char *dst, int64_t dr, const char *src, int64_t sc, int64_t rows, int64_t cols, size_t es)
{
    switch (es) {
    case 1: tile_1(dst, dr, src, sc, rows, cols); break;
    case 4: tile_4(dst, dr, src, sc, rows, cols); break;
    default: tile_8(dst, dr, src, sc, rows, cols); break;
    }
}

/* Dims walked by an odometer, with a destination and a source stride each
 * (in elements). */
typedef struct loops {
    int n;
    int64_t size[PG_MAX_DIMS], ds[PG_MAX_DIMS], ss[PG_MAX_DIMS];
} loops;

static bool loops_next(const loops *l, int64_t *idx, int64_t *doff, int64_t *soff)
{
    for (int d = l->n - 1; d >= 0; d--) {
        if (++idx[d] < l->size[d]) {
            *doff += l->ds[d];
            *soff += l->ss[d];
            return true;
        }
        idx[d] = 0;
        *doff -= (l->size[d] - 1) * l->ds[d];
        *soff -= (l->size[d] - 1) * l->ss[d];
    }
    return false;
}

/* The work of a permuted copy: each iteration of the outer loops copies one row (j ==
 * last) or one size[j] x size[last] tile, in blocks of PERMUTE_ROWS rows (of dim j) and
 * PERMUTE_COLS columns (of the last dim). Items (iteration, row block, column block)
 * write disjoint parts of dst, so slices of them run on the thread pool (the same bytes
 * for any split). */
#define PERMUTE_ROWS 256
#define PERMUTE_COLS 4096

typedef struct permute_job {
    loops m, outer;            /* m: the merged dims; outer: all but j and the last */
    int j, last;               /* j: the dim contiguous in the source */
    int64_t rblocks, cblocks;  /* blocks per iteration */
    char *dst;
    const char *src;
    size_t es;
} permute_job;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* items t0 .. t1 - 1: iteration t / (rblocks cblocks) of the outer loops (row-major order
 * of their indices), then the row block, then the column block */
static void permute_slice(void *ctx, int64_t t0, int64_t t1)
{
    const permute_job *p = ctx;
    const loops *o = &p->outer;
    const int64_t per = p->rblocks * p->cblocks;
    int64_t idx[PG_MAX_DIMS] = {0}, doff = 0, soff = 0, rest = t0 / per;
    for (int d = o->n - 1; d >= 0; d--) { /* seek: the iteration in mixed radix */
        idx[d] = rest % o->size[d];
        rest /= o->size[d];
        doff += idx[d] * o->ds[d];
        soff += idx[d] * o->ss[d];
    }
    const bool rows = p->j != p->last;
    const int64_t nr = rows ? p->m.size[p->j] : 1, nc = p->m.size[p->last];
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r0 = (t / p->cblocks % p->rblocks) * PERMUTE_ROWS, c0 = (t % p->cblocks) * PERMUTE_COLS;
        const int64_t dr = rows ? p->m.ds[p->j] : 0; /* dst: row r0 of the tile, column c0 (contiguous) */
        char *d = p->dst + (size_t)(doff + r0 * dr + c0) * p->es;
        const char *s = p->src + (size_t)(soff + r0 + c0 * p->m.ss[p->last]) * p->es; /* dim j: stride 1 */
        if (rows)
            tile(d, dr, s, p->m.ss[p->last], min64(PERMUTE_ROWS, nr - r0), min64(PERMUTE_COLS, nc - c0), p->es);
        else
            memcpy(d, s, (size_t)min64(PERMUTE_COLS, nc - c0) * p->es);
        if (t % per == per - 1)
            loops_next(o, idx, &doff, &soff);
    }
}

/* dst (contiguous, shape oshape) gets src, where output dim d walks the
 * source with stride ss[d] (elements). Size-1 dims are dropped and output
 * dims that are adjacent in the source merged; then either the last dim is
 * contiguous in the source (rows copied whole) or a tiled 2-D transpose runs
 * between it and the dim that is contiguous in the source. Slices of the
 * work of 2^14 elements or more run on the thread pool. */
static void permute_copy(void *dst, const void *src, size_t es, int ndim, const int64_t *oshape, const int64_t *ss)
{
    permute_job p = {.dst = dst, .src = src, .es = es};
    loops *m = &p.m;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        numel *= oshape[d];
        if (oshape[d] == 1)
            continue;
        if (m->n > 0 && m->ss[m->n - 1] == ss[d] * oshape[d]) {
            m->size[m->n - 1] *= oshape[d];
            m->ss[m->n - 1] = ss[d];
        } else {
            m->size[m->n] = oshape[d];
            m->ss[m->n++] = ss[d];
        }
    }
    if (numel == 0)
        return;
    if (m->n == 0) {
        memcpy(dst, src, es);
        return;
    }
    for (int d = m->n - 1; d >= 0; d--)
        m->ds[d] = d == m->n - 1 ? 1 : m->ds[d + 1] * m->size[d + 1];
    p.last = m->n - 1;
    while (m->ss[p.j] != 1) /* the source's innermost dim is among them */
        p.j++;
    int64_t iterations = 1;
    for (int d = 0; d < p.last; d++) {
        if (d == p.j)
            continue;
        p.outer.size[p.outer.n] = m->size[d];
        p.outer.ds[p.outer.n] = m->ds[d];
        p.outer.ss[p.outer.n++] = m->ss[d];
        iterations *= m->size[d];
    }
    p.rblocks = p.j == p.last ? 1 : (m->size[p.j] + PERMUTE_ROWS - 1) / PERMUTE_ROWS;
    p.cblocks = (m->size[p.last] + PERMUTE_COLS - 1) / PERMUTE_COLS;
    int64_t items = iterations * p.rblocks * p.cblocks, per = numel / items; /* elements an item copies, about */
    pg_parallel_range(items, ((int64_t)1 << 14) / per + 1, permute_slice, &p);
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    for (int d = ndim - 1; d >= 0; d--)
        stride[d] = d == ndim - 1 ? 1 : stride[d + 1] * shape[d + 1];
}

/* y[i_0, ..., i_n-1] = x[j] with j[perm[d]] = i_d; y's dim d is x's dim perm[d] */
static void permute_into(pg_tensor *y, const pg_tensor *x, const int *perm)
{
    int64_t xs[PG_MAX_DIMS], ss[PG_MAX_DIMS];
    contiguous_strides(x->ndim, x->shape, xs);
    for (int d = 0; d < x->ndim; d++)
        ss[d] = xs[perm[d]];
    permute_copy(y->data, x->data, pg_dtype_size(x->dtype), y->ndim, y->shape, ss);
}

/* the gradient goes through the inverse permutation */
static int permute_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0];
    if (!x->requires_grad)
        return 0;
    int inv[PG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        inv[n->ip[d]] = d;
    pg_tensor *t = pg_tensor_empty(pg_graph_arena(g), x->dtype, x->ndim, x->shape);
    if (!t) {
        pg_graph_fail(g, "%s backward: out of memory", n->name);
        return -1;
    }
    permute_into(t, n->out->grad, inv);
    return pg_grad_accumulate(g, x, t);
}

/* perm already checked and normalised */
static pg_tensor *permute_op(pg_graph *g, const char *fn, pg_tensor *x, const int *perm)
{
    int64_t shape[PG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[perm[d]];
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, shape);
    if (!y)
        return NULL;
    permute_into(y, x, perm);
    if (pg_dtype_is_float(x->dtype)) {
        pg_node *n = pg_op_record(g, fn, y, 1, &x, permute_backward);
        for (int d = 0; n && d < x->ndim; d++)
            n->ip[d] = perm[d];
    }
    return y;
}

pg_tensor *pg_permute(pg_graph *g, pg_tensor *x, const int *perm)
{
    const char *fn = "pg_permute";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    if (!perm && x->ndim > 0) {
        pg_graph_fail(g, "%s: perm is NULL for %s", fn, SHAPE(x));
        return NULL;
    }
    int p[PG_MAX_DIMS];
    bool seen[PG_MAX_DIMS] = {false}, ok = true;
    for (int d = 0; d < x->ndim; d++) {
        p[d] = perm[d] < 0 ? perm[d] + x->ndim : perm[d];
        ok = ok && p[d] >= 0 && p[d] < x->ndim && !seen[p[d]];
        if (ok)
            seen[p[d]] = true;
    }
    if (!ok) {
        char list[PG_MAX_DIMS * 14 + 4] = "(";
        for (int d = 0; d < x->ndim; d++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", d ? ", " : "", perm[d]);
        pg_graph_fail(g, "%s: perm %s) is not a permutation of the %d dims of %s", fn, list, x->ndim, SHAPE(x));
        return NULL;
    }
    return permute_op(g, fn, x, p);
}

pg_tensor *pg_transpose(pg_graph *g, pg_tensor *x, int axis0, int axis1)
{
    const char *fn = "pg_transpose";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    int a = axis_arg(g, fn, axis0, x->ndim, x), b = a < 0 ? -1 : axis_arg(g, fn, axis1, x->ndim, x);
    if (b < 0)
        return NULL;
    int p[PG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        p[d] = d == a ? b : d == b ? a : d;
    return permute_op(g, fn, x, p);
}

/* ---- slice / narrow ------------------------------------------------------------------- */

/* y = entries start, start + step, ... (count of them) of x along axis */
static pg_tensor *take(pg_graph *g, const char *fn, pg_tensor *x, int axis, int64_t start, int64_t step,
                       int64_t count)
{
    pg_tensor *y = output_resized(g, fn, x, axis, count);
    if (!y)
        return NULL;
    block b = block_around(x->ndim, x->shape, axis);
    b.count = count;
    b.src_n = x->shape[axis], b.src_start = start, b.src_step = step;
    b.dst_n = count;
    return block_op(g, fn, x, y, &b);
}

/* Python's slice.indices for a positive step: negative bounds count from the
 * end, then both are clamped to [0, n] */
static int64_t slice_bound(int64_t i, int64_t n)
{
    if (i < 0)
        i = i < -n ? 0 : i + n;
    return i > n ? n : i;
}

pg_tensor *pg_slice(pg_graph *g, pg_tensor *x, int axis, int64_t start, int64_t end, int64_t step)
{
    const char *fn = "pg_slice";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    int a = axis_arg(g, fn, axis, x->ndim, x);
    if (a < 0)
        return NULL;
    if (step < 1) {
        pg_graph_fail(g, "%s: step must be >= 1, got %lld", fn, (long long)step);
        return NULL;
    }
    int64_t n = x->shape[a], s = slice_bound(start, n), e = slice_bound(end, n);
    int64_t count = e > s ? (e - s - 1) / step + 1 : 0;
    return take(g, fn, x, a, s, step, count);
}

pg_tensor *pg_narrow(pg_graph *g, pg_tensor *x, int axis, int64_t start, int64_t length)
{
    const char *fn = "pg_narrow";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    int a = axis_arg(g, fn, axis, x->ndim, x);
    if (a < 0)
        return NULL;
    int64_t n = x->shape[a], s = start < 0 ? start + n : start; /* negative start counts from the end */
    if (start < -n || s > n || length < 0 || length > n - s) {
        pg_graph_fail(g, "%s: start %lld, length %lld do not fit axis %d of size %lld of %s", fn, (long long)start,
                      (long long)length, a, (long long)n, SHAPE(x));
        return NULL;
    }
    return take(g, fn, x, a, s, 1, length);
}

/* ---- concat / stack ------------------------------------------------------------------- */

/* The block that carries xs[i] (src) into the joined output (dst). stack
 * sees each input as having a new dim of size 1 at axis. */
static block join_block(const pg_tensor *x, int axis, bool stack, int64_t offset, int64_t total)
{
    block b = block_around(x->ndim, x->shape, axis);
    if (stack)
        b.inner *= axis < x->ndim ? x->shape[axis] : 1;
    b.count = stack ? 1 : x->shape[axis];
    b.src_n = b.count;
    b.dst_n = total, b.dst_start = offset;
    return b;
}

/* ip[0] axis, ip[1] stack */
static int join_backward(pg_graph *g, pg_node *n)
{
    int axis = (int)n->ip[0];
    bool stack = n->ip[1] != 0;
    pg_tensor *gy = n->out->grad;
    int64_t offset = 0;
    for (int i = 0; i < n->n_in; i++) {
        pg_tensor *x = n->in[i];
        block b = join_block(x, axis, stack, offset, gy->shape[axis]);
        offset += b.count;
        pg_tensor *gx = pg_grad_of(g, x);
        if (!gx) {
            if (x->requires_grad)
                return -1;
            continue;
        }
        block r = block_reversed(b);
        block_add(&r, gx, gy);
    }
    return 0;
}

/* n >= 1 tensors, none NULL */
static bool check_list(pg_graph *g, const char *fn, int n, pg_tensor *const *xs)
{
    if (n < 1 || !xs) {
        pg_graph_fail(g, "%s: need at least one tensor, got n = %d%s", fn, n, xs ? "" : " and xs NULL");
        return false;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) {
            pg_graph_fail(g, "%s: xs[%d] is NULL", fn, i);
            return false;
        }
    return true;
}

/* one dtype and one shape, except along `axis` (-1: no exception) */
static bool check_alike(pg_graph *g, const char *fn, int n, pg_tensor *const *xs, int axis)
{
    for (int i = 1; i < n; i++) {
        if (xs[i]->dtype != xs[0]->dtype) {
            pg_graph_fail(g, "%s: dtypes differ: xs[0] is %s, xs[%d] is %s", fn, SHAPE(xs[0]), i, SHAPE(xs[i]));
            return false;
        }
        bool same = xs[i]->ndim == xs[0]->ndim;
        for (int d = 0; same && d < xs[0]->ndim; d++)
            same = d == axis || xs[i]->shape[d] == xs[0]->shape[d];
        if (!same) {
            if (axis >= 0)
                pg_graph_fail(g, "%s: shapes differ off axis %d: xs[0] is %s, xs[%d] is %s", fn, axis, SHAPE(xs[0]),
                              i, SHAPE(xs[i]));
            else
                pg_graph_fail(g, "%s: shapes differ: xs[0] is %s, xs[%d] is %s", fn, SHAPE(xs[0]), i, SHAPE(xs[i]));
            return false;
        }
    }
    return true;
}

static pg_tensor *join(pg_graph *g, const char *fn, int n, pg_tensor *const *xs, int axis, bool stack,
                       int ndim, const int64_t *shape)
{
    pg_tensor *y = pg_op_output(g, fn, xs[0]->dtype, ndim, shape);
    if (!y)
        return NULL;
    int64_t offset = 0;
    for (int i = 0; i < n; i++) {
        block b = join_block(xs[i], axis, stack, offset, shape[axis]);
        block_copy(&b, y->data, xs[i]->data, pg_dtype_size(y->dtype));
        offset += b.count;
    }
    if (pg_dtype_is_float(y->dtype)) {
        pg_node *nd = pg_op_record(g, fn, y, n, xs, join_backward);
        if (nd) {
            nd->ip[0] = axis;
            nd->ip[1] = stack;
        }
    }
    return y;
}

pg_tensor *pg_concat(pg_graph *g, int n, pg_tensor *const *xs, int axis)
{
    const char *fn = "pg_concat";
    if (!check_list(g, fn, n, xs))
        return NULL;
    int a = axis_arg(g, fn, axis, xs[0]->ndim, xs[0]);
    if (a < 0 || !check_alike(g, fn, n, xs, a))
        return NULL;
    int64_t shape[PG_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    for (int i = 1; i < n; i++)
        shape[a] += xs[i]->shape[a];
    return join(g, fn, n, xs, a, false, xs[0]->ndim, shape);
}

pg_tensor *pg_stack(pg_graph *g, int n, pg_tensor *const *xs, int axis)
{
    const char *fn = "pg_stack";
    if (!check_list(g, fn, n, xs) || !check_alike(g, fn, n, xs, -1))
        return NULL;
    int ndim = xs[0]->ndim + 1;
    if (ndim > PG_MAX_DIMS) {
        pg_graph_fail(g, "%s: stacking %s would need more than %d dims", fn, SHAPE(xs[0]), PG_MAX_DIMS);
        return NULL;
    }
    int a = axis_arg(g, fn, axis, ndim, xs[0]);
    if (a < 0)
        return NULL;
    int64_t shape[PG_MAX_DIMS];
    for (int d = 0, s = 0; d < ndim; d++)
        shape[d] = d == a ? n : xs[0]->shape[s++];
    return join(g, fn, n, xs, a, true, ndim, shape);
}

/* ---- pad ------------------------------------------------------------------------------ */

/* `value` as one element of dtype (i64 truncates toward zero, as torch) */
static bool pad_element(pg_graph *g, const pg_tensor *x, double value, void *elem)
{
    switch (x->dtype) {
    case PG_F32: *(float *)elem = (float)value; break;
    case PG_F64: *(double *)elem = value; break;
    case PG_BOOL: *(uint8_t *)elem = value != 0; break;
    case PG_I64:
        if (!(fabs(value) < 9.2e18)) {
            pg_graph_fail(g, "pg_pad: value %g does not fit %s", value, SHAPE(x));
            return false;
        }
        *(int64_t *)elem = (int64_t)value;
        break;
    }
    return true;
}

pg_tensor *pg_pad(pg_graph *g, pg_tensor *x, int axis, int64_t before, int64_t after, double value)
{
    const char *fn = "pg_pad";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    int a = axis_arg(g, fn, axis, x->ndim, x);
    if (a < 0)
        return NULL;
    int64_t n = x->shape[a];
    /* negative amounts crop; the crops must fit in the axis */
    if (before < -n || after < -n || (before < 0 ? -before : 0) + (after < 0 ? -after : 0) > n ||
        before > INT64_MAX / 8 || after > INT64_MAX / 8) {
        pg_graph_fail(g, "%s: cannot pad axis %d of %s by (%lld, %lld)", fn, a, SHAPE(x), (long long)before,
                      (long long)after);
        return NULL;
    }
    unsigned char elem[8];
    if (!pad_element(g, x, value, elem))
        return NULL;
    int64_t crop_b = before < 0 ? -before : 0, pad_b = before > 0 ? before : 0;
    int64_t kept = n - crop_b - (after < 0 ? -after : 0), pad_a = after > 0 ? after : 0;
    int64_t m = kept + pad_b + pad_a;
    pg_tensor *y = output_resized(g, fn, x, a, m);
    if (!y)
        return NULL;
    size_t es = pg_dtype_size(x->dtype);
    block b = block_around(x->ndim, x->shape, a);
    b.dst_n = m;
    b.count = pad_b;
    block_fill(&b, y->data, elem, es);
    b.dst_start = pad_b + kept, b.count = pad_a;
    block_fill(&b, y->data, elem, es);
    b.src_n = n, b.src_start = crop_b;
    b.dst_start = pad_b, b.count = kept;
    return block_op(g, fn, x, y, &b);
}
