/* Shared helpers of the benchmark programs (tests/bench/): timing, medians,
 * peak memory of a forked case. Every figure is printed as `name value unit`. */
#ifndef PG_BENCH_H
#define PG_BENCH_H

#include "../../posgrad.h"

#include <stdbool.h>
#include <stdint.h>

#define RUNS 7

double now_s(void);
double median_of(double *t, int n); /* sorts t[0..n) in place; its middle element (n > 0) */
/* median seconds of one call of fn(ctx, reps) divided by reps, after a warm-up call */
double median_time(void (*fn)(void *, int), void *ctx, int reps);
/* runs `argv0 --case name arg` as a fresh process: returns its peak resident MB, *ms the
 * milliseconds it printed; -1 on failure */
double in_fresh_process(const char *argv0, const char *name, long long arg, double *ms);
/* true when the case `name` matches the command-line prefix (or there is none) */
bool bench_selected(const char *only, const char *name);

void bench_fma_peak(void);              /* bench_gemm.c: fma_peak_t1, fma_peak_t2 (first of all) */
void bench_core_skew(void);             /* bench_gemm.c: core_skew, the 2 threads' speed ratio */
void bench_stream(void);                /* bench_stream.c: stream_*, a memory-bound pass on 1 and 2 threads */
/* `name value GFLOP/s (P% of fma_peak_t<threads>)` once bench_fma_peak has run */
void print_gflops(const char *name, int threads, double gflops);
void bench_gemm_all(const char *only);  /* bench_gemm.c: gemm_* */

/* One product C = op(A) op(B) of random matrices (bench_gemm.c; bench_blas.c times
 * OpenBLAS on the same): C (M, N), row-major, lda / ldb those of op's storage. */
typedef struct gemm_case {
    pg_dtype dt;
    bool ta, tb;
    int64_t M, N, K;
    void *a, *b, *c;
} gemm_case;
bool gemm_case_init(gemm_case *g, pg_dtype dt, bool ta, bool tb, int64_t M, int64_t K, int64_t N);
void gemm_case_run(void *g, int reps); /* reps x pg_gemm_f32 / _f64, for median_time */
void gemm_case_free(gemm_case *g);

/* The toy training model's 15 products, named toy_<M>x<K>x<N>[_nt|_tn] */
enum { BENCH_TOY_SHAPES = 15 };
typedef struct toy_shape {
    int64_t M, K, N;
    bool ta, tb;
    char name[48];
} toy_shape;
int bench_toy_shapes(toy_shape out[BENCH_TOY_SHAPES]);
void bench_train_all(const char *only); /* bench_train.c: train_<scheme>_t1/t2 */
/* bench_train.c, `bench --steps`: timed steps of one scheme after a `steady_from` line; 0 or 1 */
int bench_train_steps(const char *scheme, int steps, int threads, pg_dtype dtype);
int bench_train_balance(const char *scheme, int steps, int threads);
int bench_train_scaling(const char *scheme, int steps, int threads);
void bench_png_all(const char *only);   /* bench_png.c: png_encode_*, png_decode_* */
void bench_generate_all(const char *only); /* bench_generate.c: generate_cached_tok_s, generate_full_tok_s */
void bench_blas_all(const char *only);     /* bench_blas.c: `bench blas`, posgrad beside OpenBLAS (only when named) */

#endif
