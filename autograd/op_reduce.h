/* Private (not installed, not in posgrad.h): the layout the reductions
 * (op_reduce.c) share with cumsum (op_cumsum.c). The reduced axes of x are
 * brought last: dims of size 1 are dropped and neighbouring dims that are
 * both reduced (or both kept) merge into one block, so x reads as
 * (outer, n, inner) with n the reduced count; when the reduced blocks are
 * not one block, a permuting copy (op_reduce.c) gives (outer, n, 1). */
#ifndef PG_AUTOGRAD_OP_REDUCE_H
#define PG_AUTOGRAD_OP_REDUCE_H

#include "graph.h"

typedef struct rplan {
    int nb;                        /* blocks of merged dims, row-major */
    int64_t size[PG_MAX_DIMS];     /* block sizes */
    int64_t stride[PG_MAX_DIMS];   /* their element strides in x */
    bool red[PG_MAX_DIMS];         /* block is reduced */
    bool permute;                  /* reduced blocks are copied last: inner == 1 */
    int64_t outer, n, inner;
} rplan;

/* The plan of x for the reduced axes in mask (bit d set: axis d reduced). */
void pg_reduce_plan(rplan *p, const pg_tensor *x, uint32_t mask);
/* axes (n_axes of them; 0: all) of x as a mask; false with "fn: ..." on g
 * for a bad, repeated or out-of-range axis. A 0-dim x accepts axes 0 and -1
 * (as torch); they reduce nothing. */
bool pg_reduce_axes(pg_graph *g, const char *fn, const pg_tensor *x, int n_axes, const int *axes, uint32_t *mask);

/* Running sums along len entries of each of `rows` rows, row r at x + r * stride
 * (and y + r * stride; y may be x): prefix sums, or suffix sums when reverse,
 * accumulated in double and rounded once per element; add: y += the sums.
 * pg_cumsum's rows, and CoPE's (op_cope.c). */
void pg_scan_rows_f32(const float *x, float *y, int64_t rows, int64_t stride, int64_t len, bool reverse, bool add);
void pg_scan_rows_f64(const double *x, double *y, int64_t rows, int64_t stride, int64_t len, bool reverse, bool add);

#endif
