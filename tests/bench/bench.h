/* Shared helpers of the benchmark programs (tests/bench/): timing, medians,
 * peak memory of a forked case. Every figure is printed as `name value unit`. */
#ifndef PG_BENCH_H
#define PG_BENCH_H

#include "../../posgrad.h"

#include <stdbool.h>
#include <stdint.h>

#define RUNS 7

double now_s(void);
/* median seconds of one call of fn(ctx, reps) divided by reps, after a warm-up call */
double median_time(void (*fn)(void *, int), void *ctx, int reps);
/* runs `argv0 --case name arg` as a fresh process: returns its peak resident MB, *ms the
 * milliseconds it printed; -1 on failure */
double in_fresh_process(const char *argv0, const char *name, long long arg, double *ms);
/* true when the case `name` matches the command-line prefix (or there is none) */
bool bench_selected(const char *only, const char *name);

void bench_fma_peak(void);              /* bench_gemm.c: fma_peak_t1, fma_peak_t2 (first of all) */
/* `name value GFLOP/s (P% of fma_peak_t<threads>)` once bench_fma_peak has run */
void print_gflops(const char *name, int threads, double gflops);
void bench_gemm_all(const char *only);  /* bench_gemm.c: gemm_* */
void bench_train_all(const char *only); /* bench_train.c: train_<scheme>_t1/t2 */
void bench_png_all(const char *only);   /* bench_png.c: png_encode_*, png_decode_* */
void bench_generate_all(const char *only); /* bench_generate.c: generate_cached_tok_s, generate_full_tok_s */
void bench_blas_all(const char *only);     /* bench_blas.c: `bench blas`, posgrad beside OpenBLAS (only when named) */

#endif
