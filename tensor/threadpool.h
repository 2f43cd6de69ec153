/* A persistent pool of worker threads for the kernels.
 *
 * The workers start on the first parallel call and wait between calls; no
 * thread is started per call. They are joined at exit, and a child process
 * made by fork() starts its own pool when it first needs one.
 *
 * The thread count: one rule. A count is an integer in 1..PG_MAX_THREADS,
 * whether it comes from a program's flag or from the environment variable
 * PG_NUM_THREADS; nothing is clamped. Until a program says otherwise the pool
 * uses PG_NUM_THREADS if it is set to a valid count, else the number of online
 * cores (at most PG_MAX_THREADS). An unset or empty PG_NUM_THREADS means "not
 * given". A PG_NUM_THREADS that is set but not a valid count ("1000", "0",
 * "four") is never used, and the library never prints: the pool falls back to
 * the cores, and pg_threads_init(0) returns -1 with a message naming the
 * variable, its value and the range, which a program should show (the examples
 * print it and exit with status 2, as for a bad --threads).
 *
 * pg_parallel_for(n, fn, ctx) calls fn(ctx, i, t) for every i in [0, n), thread
 * t (the caller is thread 0) running a run of consecutive tasks: n / T each, the
 * first n mod T threads one more, in thread order (T = 2, n = 5: tasks 0-2 on
 * thread 0, 3-4 on thread 1). A fixed partition, so results that reduce per
 * thread in thread order are identical from run to run for a fixed thread
 * count. Consecutive, not dealt i mod T: ops that cut the same rows into tasks
 * the same way then find them in the cache of the core that wrote them (a
 * 2-thread training step 4-7% faster). Calls do not nest: a parallel
 * call from inside fn runs serially on the calling thread. fn NULL records an
 * error (pg_last_error) and runs nothing.
 *
 * The two virtual cores of a shared host do not always run at one speed (for
 * seconds at a time one can be 10-20% slower: bench core_skew), and an even
 * split then waits for the slower. So the kernels whose results do not depend
 * on where a split falls (the GEMM, elementwise ranges, the norm's forward, the
 * fused attention's rows, op_parallel_for's tasks) cut their work with
 * pg_parallel_slices: one slice per thread, sized to speeds the pool measures as
 * it goes, per kind of job (PG_BALANCE_MEASURED: a slowed core loses more on a
 * memory-bound pass than on a GEMM), or evenly, or to given speeds (pg_balance). The
 * bits are the same whichever (tests/test_balance.c). A core can also slow down in
 * the middle of a job, which no estimate foresees: pg_parallel_chunks lets a thread
 * that is done take part of a slower one's slice (all of the above but the GEMM's
 * column splits and split-K halves, which would pack an operand again per chunk).
 * Sums over rows go in blocks fixed by the size alone, whichever thread takes them;
 * what keeps pg_parallel_for's fixed partition: the fused attention's backward with
 * fewer shared-gradient regions than threads and copies too large to keep one per
 * row (a buffer per thread) and the non-finite scan. */
#ifndef PG_THREADPOOL_H
#define PG_THREADPOOL_H

#include <stdbool.h>
#include <stdint.h>

#define PG_MAX_THREADS 64

int pg_num_threads(void);
/* 1 .. PG_MAX_THREADS; returns 0, or -1 with an error (the count is unchanged). */
int pg_set_num_threads(int n);
/* What a program calls once at its start with the count from its command line.
 * n in 1..PG_MAX_THREADS: pg_set_num_threads(n), the environment is not read.
 * n == 0: PG_NUM_THREADS if set to a valid count, else the online cores; when
 * PG_NUM_THREADS is set but invalid the cores are used and -1 is returned with
 * "pg_threads_init: PG_NUM_THREADS is '1000', not an integer in 1..64".
 * Any other n: -1 and nothing changes. 0 otherwise. */
int pg_threads_init(int n);
void pg_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i, int thread), void *ctx);

/* How many tasks `work` items (elements, say) are worth: the thread count, but
 * at least `grain` items per task, and at least 1. Small work does not ask the
 * pool (no lock). */
int64_t pg_parallel_tasks(int64_t work, int64_t grain);

/* fn(ctx, begin, end) over contiguous slices that cover [0, n) once: one slice
 * per thread (pg_parallel_tasks(n, grain) of them, so small n stays on the
 * caller), boundaries multiples of 16 items (whole cache lines of floats) unless
 * there are fewer than 16 a slice (then each item is a large one: a table's copy
 * per head), sized as pg_parallel_slices sizes them. For elementwise and row-wise
 * kernels: each item's result does not depend on the split. */
void pg_parallel_range(int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

/* fn(ctx, begin, end, t) on slice t of [0, extent) on thread t, for t < parts (at
 * most the thread count; nested calls run every slice on the caller, in order):
 * boundaries multiples of `unit` (the last slice ends at extent, a slice may be
 * empty and then fn is not called for it), sizes in proportion to the threads'
 * measured speeds. The pool times each slice and moves its estimate of each
 * thread's speed toward what the job saw (that thread's items per second over the
 * job's mean), so when one core of a shared host runs slower for a while, it gets
 * less to do. For work whose items each cost about the same and whose results do
 * not depend on where the boundaries fall: then the bits are those of any other
 * split. t may index per-thread scratch. */
typedef void (*pg_slice_fn)(void *ctx, int64_t begin, int64_t end, int slice);
void pg_parallel_slices(int64_t extent, int64_t unit, int parts, pg_slice_fn fn, void *ctx);

/* pg_parallel_slices for work that may be cut finer as it runs: the same sized slices, but
 * each thread runs its own in chunks (each half of what is left of it, boundaries multiples
 * of `unit`), and a thread whose slice is done takes half of what is left of the slice with
 * the most left, from its end, until nothing is. So fn is called several times on a thread,
 * on consecutive pieces (slice: the thread running it, for its scratch), and the threads
 * end within about a unit of each other even when a core slows down during the job. For
 * work whose results do not depend on the split and whose calls cost little beyond their
 * items (not a GEMM, which packs its operand on every call). */
void pg_parallel_chunks(int64_t extent, int64_t unit, int parts, pg_slice_fn fn, void *ctx);

/* The two halves of pg_parallel_slices, for a caller that moves the boundaries
 * itself: the weights of threads 0..parts-1 for slices of fn over [0, extent) (parts
 * clamped to 1..threads, the count returned; measured speeds in steps of 5%, so that
 * estimates within 2.5% of each other give equal slices), and running fn on given
 * bounds[0..parts] (parts at most the thread count; the extent is bounds[parts]),
 * timed and learnt from like any other slices. Each kind of job, fn and extent,
 * keeps its own estimates (the cores' ratio differs between a GEMM and a
 * memory-bound pass), starting from the pool-wide ones; fn NULL: the pool-wide
 * ones. weight NULL: -1 with an error; bad bounds or parts: an error, nothing run. */
int pg_parallel_weights(int parts, double *weight, pg_slice_fn fn, int64_t extent);
/* What a job of fn with slices bounds[0..parts] that took secs[0..parts-1] seconds teaches
 * the estimates (fn's kind of job's and the pool-wide ones; nothing in PG_BALANCE_FIXED):
 * pg_parallel_slices_at calls it after each job; a caller that times its own slices may
 * too. NULL bounds or secs, or parts outside 1..threads: an error, nothing learnt. */
void pg_parallel_learn(pg_slice_fn fn, int parts, const int64_t *bounds, const double *secs);
void pg_parallel_slices_at(int parts, const int64_t *bounds, pg_slice_fn fn, void *ctx);

/* Boundaries of `parts` slices of [0, extent): bounds[0] = 0, bounds[parts] = extent,
 * bounds[t] the multiple of unit nearest extent * (weight[0] + .. + weight[t-1]) /
 * (sum of the weights), never below bounds[t - 1]. weight NULL: equal. */
void pg_split_bounds(int64_t extent, int64_t unit, int parts, const double *weight, int64_t *bounds);

/* How pg_parallel_slices sizes the slices. Whichever, the results are the same. */
typedef enum pg_balance {
    PG_BALANCE_MEASURED, /* the default: to the speeds the pool measures as it goes */
    PG_BALANCE_EVEN,     /* equal, still measuring (to see what the sizing gains: bench --balance) */
    PG_BALANCE_FIXED,    /* to the speeds given by pg_parallel_set_speeds, never updated
                          * (cores known to differ; tests of uneven splits) */
} pg_balance;

/* Sets the mode and returns the one before; anything but a pg_balance records an
 * error and changes nothing. */
pg_balance pg_parallel_balance(pg_balance mode);
/* The pool-wide speeds (mean 1 when measured) of the current thread count's threads
 * into out[0..n-1]; returns the thread count (-1 with an error when out is NULL). */
int pg_parallel_speeds(double *out, int n);
/* Sets the pool-wide speeds of threads 0..n-1 (each in (0, 1e6]; the others keep theirs)
 * until the thread count changes to another count above 1 (a stretch on one thread keeps
 * every estimate); every kind of job's own estimates start again from them. 0, or -1
 * with an error and nothing changed. */
int pg_parallel_set_speeds(const double *speeds, int n);

/* One job's lesson (what pg_parallel_slices does after each measured job): slice t of
 * `parts` had bounds[t + 1] - bounds[t] items and took secs[t]; speed[t] moves toward
 * its rate over the slices' mean rate (on the scale of speed[0..parts-1]) by a step of
 * up to 1/4, the whole step for a job of 1 ms or more, none below 20 us or when a
 * slice is empty. Then speed[0..T-1] is scaled to mean 1 and each kept in [1/2, 2]. */
void pg_speeds_update(double *speed, int T, int parts, const int64_t *bounds, const double *secs);

#endif
