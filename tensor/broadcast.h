/* NumPy broadcasting for kernels: the broadcast shape of several tensors and
 * an iteration plan over it with each operand's element strides (0 along a
 * broadcast dim). Adjacent dims that are contiguous for every operand are
 * merged and size-1 dims dropped, so the common cases run as one flat loop.
 *
 * Iterate:
 *   pg_bcast p; pg_bcast_plan(&p, ndim, shape, 3, (const pg_tensor *[]){out, a, b});
 *   int64_t idx[PG_MAX_DIMS] = {0}, off[PG_BCAST_MAX] = {0};
 *   for (int64_t r = 0; r < p.outer; r++, pg_bcast_next(&p, idx, off))
 *       for (int64_t i = 0; i < p.inner; i++)
 *           out[off[0] + i * p.istride[0]] = a[off[1] + i * p.istride[1]] + ...;
 */
#ifndef PG_BROADCAST_H
#define PG_BROADCAST_H

#include "tensor.h"

#define PG_BCAST_MAX 4

typedef struct pg_bcast {
    int ndim;                                /* merged dims, the last is the inner loop */
    int n;                                   /* operands */
    int64_t shape[PG_MAX_DIMS];
    int64_t stride[PG_BCAST_MAX][PG_MAX_DIMS];
    int64_t inner;                           /* length of the inner loop */
    int64_t istride[PG_BCAST_MAX];           /* operands' strides in the inner loop */
    int64_t outer;                           /* number of inner loops */
} pg_bcast;

/* Broadcast shape of n tensors into (ndim, shape); false and an error naming fn
 * and the shapes when they do not broadcast. */
bool pg_bcast_shape(const char *fn, int n, const pg_tensor *const *ts, int *ndim, int64_t *shape);
/* Plan over `shape` for n operands, each of which broadcasts to it. */
void pg_bcast_plan(pg_bcast *p, int ndim, const int64_t *shape, int n, const pg_tensor *const *ts);
/* Advances the outer multi-index (all but the inner dim) and the offsets. */
void pg_bcast_next(const pg_bcast *p, int64_t *idx, int64_t *off);
/* The outer multi-index and offsets of inner loop r (0 <= r < outer): where r calls
 * of pg_bcast_next from zeros leave them (a slice of the loops starts there). */
void pg_bcast_seek(const pg_bcast *p, int64_t r, int64_t *idx, int64_t *off);
/* Operand k has a stride along every outer dim of p: distinct inner loops touch distinct
 * elements of it (one loop may touch one element n times), so slices of the loops may
 * write it from different threads. */
bool pg_bcast_rows_own(const pg_bcast *p, int k);

/* dst (shape of x, any broadcastable-to-src shape) += src summed over the
 * dims where dst broadcasts. Same float dtype. */
void pg_sum_to_accumulate(pg_tensor *dst, const pg_tensor *src);

#endif
