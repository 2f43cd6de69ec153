/* A persistent pool of worker threads for the kernels.
 *
 * The workers start on the first parallel call and wait between calls; no
 * thread is started per call. They are joined at exit, and a child process
 * made by fork() starts its own pool when it first needs one. The thread count
 * is PG_NUM_THREADS from the environment if set (1..PG_MAX_THREADS), else the
 * number of online cores; pg_set_num_threads changes it.
 *
 * pg_parallel_for(n, fn, ctx) calls fn(ctx, i, t) for every i in [0, n), with
 * task i always run by thread t = i % T (the caller is thread 0): a fixed
 * partition, so results that reduce per thread in thread order are identical
 * from run to run for a fixed thread count. Calls do not nest: a parallel
 * call from inside fn runs serially on the calling thread. */
#ifndef PG_THREADPOOL_H
#define PG_THREADPOOL_H

#include <stdint.h>

#define PG_MAX_THREADS 64

int pg_num_threads(void);
/* 1 .. PG_MAX_THREADS; returns 0, or -1 with an error. */
int pg_set_num_threads(int n);
void pg_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i, int thread), void *ctx);

/* How many tasks `work` items (elements, say) are worth: the thread count, but
 * at least `grain` items per task, and at least 1. Small work does not ask the
 * pool (no lock). */
int64_t pg_parallel_tasks(int64_t work, int64_t grain);

/* fn(ctx, begin, end) over contiguous slices that cover [0, n) once: one slice
 * per thread, each at least `grain` items (so small n stays on the caller),
 * boundaries multiples of 16 items (whole cache lines of floats). For
 * elementwise and row-wise kernels: each item's result does not depend on the
 * split. */
void pg_parallel_range(int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

#endif
