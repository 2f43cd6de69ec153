/* Internal helpers shared by the op files: argument checks that record
 * "pg_op: ..." messages, and dtype dispatch. Not part of the public API. */
#ifndef PG_OP_UTIL_H
#define PG_OP_UTIL_H

#include "../tensor/broadcast.h"
#include "../tensor/shape_util.h"
#include "ops.h"
#include "../tensor/threadpool.h"

#include <string.h>

/* x is non-NULL (else records "fn: name is NULL") */
static inline bool arg_present(pg_graph *g, const char *fn, const char *name, const pg_tensor *x)
{
    if (!x)
        pg_graph_fail(g, "%s: %s is NULL", fn, name);
    return x != NULL;
}

/* x is non-NULL and f32 or f64 */
static inline bool arg_float(pg_graph *g, const char *fn, const char *name, const pg_tensor *x)
{
    if (!arg_present(g, fn, name, x))
        return false;
    if (!pg_dtype_is_float(x->dtype)) {
        pg_graph_fail(g, "%s: %s must be f32 or f64, got %s", fn, name, SHAPE(x));
        return false;
    }
    return true;
}

/* a and b are float tensors of one dtype */
static inline bool args_float_pair(pg_graph *g, const char *fn, const pg_tensor *a, const pg_tensor *b)
{
    if (!arg_float(g, fn, "a", a) || !arg_float(g, fn, "b", b))
        return false;
    if (a->dtype != b->dtype) {
        pg_graph_fail(g, "%s: dtypes differ: a is %s, b is %s", fn, SHAPE(a), SHAPE(b));
        return false;
    }
    return true;
}

/* Broadcast shape of n tensors, recording the error on g. */
static inline bool broadcast_shape(pg_graph *g, const char *fn, int n, const pg_tensor *const *ts, int *ndim,
                                   int64_t *shape)
{
    if (!pg_bcast_shape(fn, n, ts, ndim, shape)) {
        pg_graph_fail(g, "%s", pg_last_error());
        return false;
    }
    return true;
}

/* Normalises an axis of a tensor with ndim dims, recording the error on g
 * with x's shape. -1 when out of range. */
static inline int axis_arg(pg_graph *g, const char *fn, int axis, int ndim, const pg_tensor *x)
{
    int a = pg_axis(fn, axis, ndim);
    if (a < 0)
        pg_graph_fail(g, "%s: x is %s", pg_last_error(), SHAPE(x));
    return a;
}

/* Row reductions over ROW_LANES independent partial results, so that the loops
 * vectorise without -ffast-math (a single running sum is a serial chain); each
 * macro defines a static function for element type T with suffix sfx:
 *   row_max_sfx(x, n)    the largest of x[0..n) ignoring NaN, -inf for none
 *   row_sum_sfx(x, n)    sum of x[0..n)
 *   row_dot_sfx(a, b, n) sum of a[k] * b[k] */
#define ROW_LANES 16
#define DEFINE_ROW_MAX(T, sfx)                                                                                         \
    static T row_max_##sfx(const T *restrict x, int64_t n)                                                             \
    {                                                                                                                  \
        T part[ROW_LANES];                                                                                             \
        for (int l = 0; l < ROW_LANES; l++)                                                                            \
            part[l] = -INFINITY;                                                                                       \
        int64_t c = 0;                                                                                                 \
        for (; c + ROW_LANES <= n; c += ROW_LANES)                                                                     \
            for (int l = 0; l < ROW_LANES; l++)                                                                        \
                part[l] = x[c + l] > part[l] ? x[c + l] : part[l];                                                     \
        T m = -INFINITY;                                                                                               \
        for (int l = 0; l < ROW_LANES; l++)                                                                            \
            m = part[l] > m ? part[l] : m;                                                                             \
        for (; c < n; c++)                                                                                             \
            m = x[c] > m ? x[c] : m;                                                                                   \
        return m;                                                                                                      \
    }
#define DEFINE_ROW_SUM(T, sfx)                                                                                         \
    static T row_sum_##sfx(const T *restrict x, int64_t n)                                                             \
    {                                                                                                                  \
        T part[ROW_LANES] = {0};                                                                                       \
        int64_t c = 0;                                                                                                 \
        for (; c + ROW_LANES <= n; c += ROW_LANES)                                                                     \
            for (int l = 0; l < ROW_LANES; l++)                                                                        \
                part[l] += x[c + l];                                                                                   \
        T s = 0;                                                                                                       \
        for (int l = 0; l < ROW_LANES; l++)                                                                            \
            s += part[l];                                                                                              \
        for (; c < n; c++)                                                                                             \
            s += x[c];                                                                                                 \
        return s;                                                                                                      \
    }
#define DEFINE_ROW_DOT(T, sfx)                                                                                         \
    static T row_dot_##sfx(const T *restrict a, const T *restrict b, int64_t n)                                        \
    {                                                                                                                  \
        T part[ROW_LANES] = {0};                                                                                       \
        int64_t c = 0;                                                                                                 \
        for (; c + ROW_LANES <= n; c += ROW_LANES)                                                                     \
            for (int l = 0; l < ROW_LANES; l++)                                                                        \
                part[l] += a[c + l] * b[c + l];                                                                        \
        T s = 0;                                                                                                       \
        for (int l = 0; l < ROW_LANES; l++)                                                                            \
            s += part[l];                                                                                              \
        for (; c < n; c++)                                                                                             \
            s += a[c] * b[c];                                                                                          \
        return s;                                                                                                      \
    }

/* ---- loops over a broadcast plan ------------------------------------------------------ */

/* Loops over a broadcast plan p (a const pg_bcast *); the body sees PLAN_AT(k), the
 * element index of operand k. Strides are hoisted into locals so stores through
 * uint8_t pointers (which may alias anything) do not force reloads. When every
 * inner stride is 1 (no broadcasting in the inner loop, the common case) a
 * second copy of the loop shadows the strides with the constant 1, so the
 * compiler sees contiguous accesses and can vectorise. PLAN_LOOP_ROWS runs the
 * inner loops [r0, r1) only (a slice on the thread pool). Used by op_mask.c and
 * op_binary.c. */
#define PLAN_LOOP_ROWS(r0, r1, ...)                                                                             \
    do {                                                                                                        \
        int64_t idx_[PG_MAX_DIMS] = {0}, o_[PG_BCAST_MAX] = {0}, s_[PG_BCAST_MAX] = {1, 1, 1, 1};               \
        pg_bcast_seek(p, r0, idx_, o_);                                                                         \
        bool unit_ = true;                                                                                      \
        for (int k_ = 0; k_ < p->n; k_++) {                                                                     \
            s_[k_] = p->istride[k_];                                                                            \
            unit_ = unit_ && s_[k_] == 1;                                                                       \
        }                                                                                                       \
        const int64_t n_ = p->inner, s0_ = s_[0], s1_ = s_[1], s2_ = s_[2], s3_ = s_[3];                        \
        (void)s0_, (void)s1_, (void)s2_, (void)s3_;                                                             \
        for (int64_t r_ = r0; r_ < (r1); r_++, pg_bcast_next(p, idx_, o_)) {                                    \
            const int64_t b0_ = o_[0], b1_ = o_[1], b2_ = o_[2], b3_ = o_[3];                                   \
            (void)b1_, (void)b2_, (void)b3_;                                                                    \
            if (unit_) {                                                                                        \
                const int64_t s0_ = 1, s1_ = 1, s2_ = 1, s3_ = 1;                                               \
                (void)s0_, (void)s1_, (void)s2_, (void)s3_;                                                     \
                for (int64_t i_ = 0; i_ < n_; i_++) {                                                           \
                    __VA_ARGS__;                                                                                \
                }                                                                                               \
            } else {                                                                                            \
                for (int64_t i_ = 0; i_ < n_; i_++) {                                                           \
                    __VA_ARGS__;                                                                                \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
    } while (0)
#define PLAN_AT(k) (b##k##_ + i_ * s##k##_)

/* ---- a large copy on the thread pool -------------------------------------------------- */

typedef struct op_copy_job {
    char *dst;
    const char *src;
} op_copy_job;

static inline void op_copy_slice(void *ctx, int64_t b0, int64_t b1)
{
    const op_copy_job *j = ctx;
    memcpy(j->dst + b0, j->src + b0, (size_t)(b1 - b0));
}

/* memcpy(dst, src, bytes), split over the threads in slices of at least 64 KiB (a
 * serial copy is the other thread's idle time in a 2-thread step; FIRE's 1 MiB bias
 * gradient was one) */
static inline void op_copy_parallel(void *dst, const void *src, size_t bytes)
{
    op_copy_job j = {dst, src};
    pg_parallel_range((int64_t)bytes, (int64_t)1 << 16, op_copy_slice, &j);
}

/* A kernel's vector form where a build has none: it did no elements, the scalar loop that
 * goes on from its count does them all (op_cope.c, op_cumsum.c) */
#define OP_NO_VECTOR_FORM(...) ((int64_t)0)

#define OP_SUM_BLOCKS_MAX 64

/* How many blocks a sum over `rows` rows (`work` elements in all) is taken in: one per
 * block_work elements, at most OP_SUM_BLOCKS_MAX and one a row, at least 1. From the
 * shape alone, so sums grouped by block, added in block order, have the same bits for any
 * thread count (the norms' weight gradients, the losses). */
static inline int64_t op_sum_blocks(int64_t rows, int64_t work, int64_t block_work)
{
    int64_t nb = work / block_work;
    nb = nb < OP_SUM_BLOCKS_MAX ? nb : OP_SUM_BLOCKS_MAX;
    nb = nb < rows ? nb : rows;
    return nb > 1 ? nb : 1;
}

/* A gradient summed in op_sum_blocks' blocks, each block into its own partial on the pool:
 * worth it when there are 2 blocks or more and the partials (partial_elems each) stay
 * small beside the work they sum (a quarter of it at most) */
static inline bool op_partials_worth(int64_t blocks, int64_t partial_elems, int64_t work)
{
    return blocks >= 2 && partial_elems * blocks * 4 <= work;
}

/* room in g's arena for `blocks` partials of gr's shape, laid one after another; NULL
 * after pg_graph_fail naming op `name` */
static inline void *op_partials(pg_graph *g, const char *name, const pg_tensor *gr, int64_t blocks)
{
    pg_tensor *t = pg_tensor_empty(pg_graph_arena(g), gr->dtype, PG_SHAPE(blocks * gr->numel));
    if (!t)
        pg_graph_fail(g, "%s backward: out of memory for %lld partial sums of %s", name, (long long)blocks, SHAPE(gr));
    return t ? t->data : NULL;
}

/* gr (f32 or f64) += blocks partial sums of gr's shape laid one after another, added in
 * block order (a sum cut into op_sum_blocks' blocks: the same bits for any thread count) */
static inline void op_add_partials(const pg_tensor *gr, const void *part, int64_t blocks)
{
    const int64_t n = gr->numel;
    for (int64_t k = 0; k < blocks; k++) {
        if (gr->dtype == PG_F32)
            for (int64_t e = 0; e < n; e++)
                ((float *)gr->data)[e] += ((const float *)part)[k * n + e];
        else
            for (int64_t e = 0; e < n; e++)
                ((double *)gr->data)[e] += ((const double *)part)[k * n + e];
    }
}

/* fn(ctx, i, thread) for i in [0, n) on the pool when the work (elements, say) is worth
 * it: below `grain` the caller runs every task itself as thread 0 (a hand-off to a
 * sleeping worker costs 10-45 us, more than a small op). Each thread takes a run of
 * consecutive tasks, sized to the threads' speeds, and one that is done takes tasks from
 * the end of a slower one's run (pg_parallel_chunks), so the tasks must cost about the
 * same and not depend on the split; `thread` (the thread running the task) may index
 * per-thread scratch. */
typedef struct op_tasks {
    void (*fn)(void *ctx, int64_t i, int thread);
    void *ctx;
} op_tasks;

static inline void op_tasks_run(void *ctx, int64_t begin, int64_t end, int slice)
{
    const op_tasks *j = ctx;
    for (int64_t i = begin; i < end; i++)
        j->fn(j->ctx, i, slice);
}

static inline void op_parallel_for(int64_t n, int64_t work, int64_t grain,
                                   void (*fn)(void *ctx, int64_t i, int thread), void *ctx)
{
    op_tasks j = {fn, ctx};
    if (work < grain)
        op_tasks_run(&j, 0, n, 0);
    else
        pg_parallel_chunks(n, 1, pg_num_threads(), op_tasks_run, &j);
}

#endif
