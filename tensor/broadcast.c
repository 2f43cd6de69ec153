/* NumPy broadcasting plans (see broadcast.h). */
#include "broadcast.h"

#include "threadpool.h"

#include <stdio.h>
#include <string.h>

bool pg_bcast_shape(const char *fn, int n, const pg_tensor *const *ts, int *ndim, int64_t *shape)
{
    int nd = 0;
    for (int k = 0; k < n; k++)
        nd = ts[k]->ndim > nd ? ts[k]->ndim : nd;
    for (int d = 0; d < nd; d++) {
        int64_t size = 1;
        for (int k = 0; k < n; k++) {
            int kd = d - (nd - ts[k]->ndim);
            int64_t s = kd >= 0 ? ts[k]->shape[kd] : 1;
            if (s == 1)
                continue;
            if (size != 1 && s != size) {
                char msg[400] = "";
                size_t len = 0;
                for (int j = 0; j < n && len < sizeof msg; j++) {
                    char buf[96];
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", j ? ", " : "",
                                            pg_shape_str(buf, sizeof buf, ts[j]));
                }
                pg_set_error("%s: shapes do not broadcast: %s", fn, msg);
                return false;
            }
            size = s;
        }
        shape[d] = size;
    }
    *ndim = nd;
    return true;
}

void pg_bcast_plan(pg_bcast *p, int ndim, const int64_t *shape, int n, const pg_tensor *const *ts)
{
    int64_t st[PG_BCAST_MAX][PG_MAX_DIMS];
    for (int k = 0; k < n; k++) {
        int64_t s = 1;
        for (int d = ndim - 1; d >= 0; d--) {
            int kd = d - (ndim - ts[k]->ndim);
            int64_t size = kd >= 0 ? ts[k]->shape[kd] : 1;
            st[k][d] = size == 1 ? 0 : s;
            s *= size;
        }
    }
    /* drop size-1 dims and merge dims contiguous for every operand */
    p->n = n;
    p->ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1)
            continue;
        int m = p->ndim;
        bool merge = m > 0;
        for (int k = 0; k < n && merge; k++)
            merge = p->stride[k][m - 1] == st[k][d] * shape[d];
        if (merge) {
            p->shape[m - 1] *= shape[d];
            for (int k = 0; k < n; k++)
                p->stride[k][m - 1] = st[k][d];
        } else {
            p->shape[m] = shape[d];
            for (int k = 0; k < n; k++)
                p->stride[k][m] = st[k][d];
            p->ndim++;
        }
    }
    if (p->ndim == 0) { /* a scalar or all size-1 dims */
        p->shape[0] = 1;
        for (int k = 0; k < n; k++)
            p->stride[k][0] = 0;
        p->ndim = 1;
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) { /* empty: no iteration */
            p->inner = 0;
            p->outer = 0;
            for (int k = 0; k < n; k++)
                p->istride[k] = 0;
            return;
        }
    p->inner = p->shape[p->ndim - 1];
    for (int k = 0; k < n; k++)
        p->istride[k] = p->stride[k][p->ndim - 1];
    p->outer = 1;
    for (int d = 0; d < p->ndim - 1; d++)
        p->outer *= p->shape[d];
}

void pg_bcast_next(const pg_bcast *p, int64_t *idx, int64_t *off)
{
    for (int d = p->ndim - 2; d >= 0; d--) {
        idx[d]++;
        for (int k = 0; k < p->n; k++)
            off[k] += p->stride[k][d];
        if (idx[d] < p->shape[d])
            return;
        for (int k = 0; k < p->n; k++)
            off[k] -= p->stride[k][d] * p->shape[d];
        idx[d] = 0;
    }
}

bool pg_bcast_rows_own(const pg_bcast *p, int k)
{
    for (int d = 0; d < p->ndim - 1; d++) /* size-1 dims are not in the plan */
        if (p->stride[k][d] == 0)
            return false;
    return true;
}

void pg_bcast_seek(const pg_bcast *p, int64_t r, int64_t *idx, int64_t *off)
{
    for (int k = 0; k < p->n; k++)
        off[k] = 0;
    for (int d = 0; d < p->ndim - 1; d++)
        idx[d] = 0;
    for (int d = p->ndim - 2; d >= 0 && r > 0; d--) { /* r > 0: no dim is empty */
        idx[d] = r % p->shape[d];
        r /= p->shape[d];
        for (int k = 0; k < p->n; k++)
            off[k] += idx[d] * p->stride[k][d];
    }
}

/* dst += src summed over dst's broadcast dims. The plan's loops run outer index r, then
 * the inner dim, so each dst element gets its terms in r order. Two common shapes run on
 * the thread pool: a bias's gradient, (rows, n) -> (n), in blocks of rows when there are
 * enough of them (sum_column_blocks), else in slices of the columns, and row sums, (rows,
 * n) -> (rows, 1), in slices of the rows. Both give the same bits for any thread count;
 * slices keep those of the serial loop. */
#define SUM_GRAIN 32768 /* src elements per slice, about */

typedef struct sum_job {
    const pg_bcast *p;
    void *d;
    const void *s;
    bool f32;
} sum_job;

#define SUM_TO(T, r0, r1)                                                                          \
    do {                                                                                           \
        T *d = j->d;                                                                               \
        const T *s = j->s;                                                                         \
        pg_bcast_seek(p, r0, idx, off);                                                            \
        for (int64_t r = r0; r < (r1); r++, pg_bcast_next(p, idx, off)) {                          \
            if (p->istride[1] == 0) {                                                              \
                T acc = 0;                                                                         \
                for (int64_t i = 0; i < p->inner; i++)                                             \
                    acc += s[off[0] + i * p->istride[0]];                                          \
                d[off[1]] += acc;                                                                  \
            } else {                                                                               \
                for (int64_t i = 0; i < p->inner; i++)                                             \
                    d[off[1] + i * p->istride[1]] += s[off[0] + i * p->istride[0]];                \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* outer indices [r0, r1), every inner element */
static void sum_rows(void *ctx, int64_t r0, int64_t r1)
{
    const sum_job *j = ctx;
    const pg_bcast *p = j->p;
    int64_t idx[PG_MAX_DIMS], off[PG_BCAST_MAX];
    if (j->f32)
        SUM_TO(float, r0, r1);
    else
        SUM_TO(double, r0, r1);
}

/* columns [c0, c1) of (rows, n) -> (n): every row in order */
#define SUM_COLUMNS(T)                                                                             \
    do {                                                                                           \
        T *d = (T *)j->d + c0;                                                                     \
        const T *s = (const T *)j->s + c0 * p->istride[0];                                         \
        const int64_t rs = p->stride[0][0], cs = p->istride[0];                                    \
        for (int64_t r = 0; r < p->shape[0]; r++, s += rs)                                         \
            if (cs == 1)                                                                           \
                for (int64_t c = 0; c < c1 - c0; c++)                                              \
                    d[c] += s[c];                                                                  \
            else                                                                                   \
                for (int64_t c = 0; c < c1 - c0; c++)                                              \
                    d[c] += s[c * cs];                                                             \
    } while (0)

static void sum_columns(void *ctx, int64_t c0, int64_t c1)
{
    const sum_job *j = ctx;
    const pg_bcast *p = j->p;
    if (j->f32)
        SUM_COLUMNS(float);
    else
        SUM_COLUMNS(double);
}


/* A bias's gradient over enough rows ((2048, 128) -> (128), FIRE's (65536, 4) -> (4)) goes
 * in blocks of consecutive rows whose count and size follow from the shape alone (at least
 * SUM_BLOCK_ELEMS elements each, at most SUM_SLOTS / n of them): each block's column sums
 * into a slot of its own, and the slots are added in block order, the same bits for any
 * thread count (though not those of one pass over the rows). A thread takes a run of
 * consecutive blocks, so it reads the rows that the op before, shared out by rows, left in
 * its own core's cache (slices of columns read half of every row from the other core:
 * 2.6x the time of one thread in a 2-thread step). */
enum { SUM_BLOCK_ELEMS = 8192, SUM_SLOTS = 4096 };

typedef struct block_job {
    const sum_job *j;
    int64_t blocks, rows_per_block, tasks;
    union { /* block b's sums at b * n */
        float f32[SUM_SLOTS];
        double f64[SUM_SLOTS];
    } slots;
} block_job;

/* how many blocks sum_column_blocks would cut (rows, n) into: 1 when not worth it */
static int64_t sum_blocks_of(int64_t rows, int64_t n)
{
    int64_t by_work = rows * n / SUM_BLOCK_ELEMS, by_slots = SUM_SLOTS / n;
    int64_t b = by_work < by_slots ? by_work : by_slots;
    return b < rows ? b : rows;
}

#define SUM_BLOCK(T, sfx)                                                                          \
    do {                                                                                           \
        T *slot = bj->slots.sfx + b * n;                                                           \
        const T *s = (const T *)bj->j->s + r0 * rs;                                                \
        for (int64_t c = 0; c < n; c++)                                                            \
            slot[c] = 0;                                                                           \
        for (int64_t r = r0; r < r1; r++, s += rs)                                                 \
            if (cs == 1)                                                                           \
                for (int64_t c = 0; c < n; c++)                                                    \
                    slot[c] += s[c];                                                               \
            else                                                                                   \
                for (int64_t c = 0; c < n; c++)                                                    \
                    slot[c] += s[c * cs];                                                          \
    } while (0)

/* blocks b0 .. b1 - 1, each into its own slot: any split of the blocks, the same bits */
static void sum_blocks_slice(void *ctx, int64_t b0, int64_t b1, int slice)
{
    (void)slice;
    block_job *bj = ctx;
    const pg_bcast *p = bj->j->p;
    const int64_t n = p->inner, rs = p->stride[0][0], cs = p->istride[0], rows = p->shape[0];
    for (int64_t b = b0; b < b1; b++) {
        const int64_t r0 = b * bj->rows_per_block, r1 = r0 + bj->rows_per_block < rows ? r0 + bj->rows_per_block : rows;
        if (bj->j->f32)
            SUM_BLOCK(float, f32);
        else
            SUM_BLOCK(double, f64);
    }
}

#define ADD_SLOTS(T, slots)                                                                        \
    for (int64_t c = 0; c < n; c++) {                                                              \
        T acc = slots[c];                                                                          \
        for (int64_t b = 1; b < bj.blocks; b++)                                                    \
            acc += slots[b * n + c];                                                               \
        ((T *)j->d)[c] += acc;                                                                     \
    }

static void sum_column_blocks(const sum_job *j, int64_t blocks)
{
    const int64_t rows = j->p->shape[0], n = j->p->inner;
    block_job bj = {.j = j};
    bj.rows_per_block = (rows + blocks - 1) / blocks;
    bj.blocks = (rows + bj.rows_per_block - 1) / bj.rows_per_block;
    bj.tasks = pg_parallel_tasks(rows * n, SUM_GRAIN);
    bj.tasks = bj.tasks < bj.blocks ? bj.tasks : bj.blocks;
    pg_parallel_chunks(bj.blocks, 1, (int)bj.tasks, sum_blocks_slice, &bj);
    if (j->f32)
        ADD_SLOTS(float, bj.slots.f32)
    else
        ADD_SLOTS(double, bj.slots.f64)
}

void pg_sum_to_accumulate(pg_tensor *dst, const pg_tensor *src)
{
    pg_bcast p;
    pg_bcast_plan(&p, src->ndim, src->shape, 2, (const pg_tensor *[]){src, dst});
    sum_job j = {&p, dst->data, src->data, dst->dtype == PG_F32};
    if (p.outer == 0 || p.inner == 0)
        return;
    bool columns = p.ndim == 2 && p.stride[1][0] == 0 && p.istride[1] == 1; /* (rows, n) -> (n) */
    int64_t blocks = columns ? sum_blocks_of(p.shape[0], p.inner) : 1;
    if (blocks >= 2)
        sum_column_blocks(&j, blocks);
    else if (columns)
        pg_parallel_range(p.inner, SUM_GRAIN / p.shape[0] + 1, sum_columns, &j);
    else if (p.istride[1] == 0 && pg_bcast_rows_own(&p, 1)) /* row sums */
        pg_parallel_range(p.outer, SUM_GRAIN / p.inner + 1, sum_rows, &j);
    else
        sum_rows(&j, 0, p.outer);
}
