/* ---- stream: what a second thread adds to a memory-bound pass ------------------------
 * The speed-up of a 2-thread training step is bounded by the speed-ups of its parts: the
 * products' (near fma_peak_t2 / fma_peak_t1) and the elementwise passes', which read and
 * write memory and share the cores' caches and memory path. This measures the second:
 * y = y + a x over n floats through the pool (pg_parallel_range, as the elementwise ops
 * split), at three sizes: a (B L, d) activation of the toy model (1 MiB an array), its
 * MLP's (B L, 4 d) hidden layer (4 MiB) and 64 MiB (main memory). 1 and 2 threads
 * alternate, so that both meet the same stretch of a shared host; each round's ratio is
 * taken between two calls a few milliseconds apart, and the median of the rounds printed:
 *   stream_<KiB>k_t1 / _t2  GB/s (12 bytes an element: two reads, one write)
 *   stream_<KiB>k_t2_over_t1  x */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>

#include "../../tensor/threadpool.h"

enum { STREAM_ROUNDS = 15 };

typedef struct stream_job {
    float *x, *y;
    int64_t n;
} stream_job;

static void axpy_range(void *ctx, int64_t begin, int64_t end)
{
    stream_job *j = ctx;
    float *restrict y = j->y;
    const float *restrict x = j->x;
    for (int64_t i = begin; i < end; i++)
        y[i] += 0.5f * x[i];
}

static void stream_run(void *ctx, int reps)
{
    stream_job *j = ctx;
    for (int r = 0; r < reps; r++)
        pg_parallel_range(j->n, 4096, axpy_range, j);
}

/* seconds of one pass on `threads` threads (median of RUNS after a warm-up) */
static double stream_pass(stream_job *j, int threads, int reps)
{
    pg_set_num_threads(threads);
    return median_time(stream_run, j, reps);
}

static void stream_case(int64_t n)
{
    stream_job j = {malloc((size_t)n * sizeof(float)), malloc((size_t)n * sizeof(float)), n};
    if (!j.x || !j.y) {
        fprintf(stderr, "stream: out of memory for %lld floats\n", (long long)n);
        free(j.x), free(j.y);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        j.x[i] = (float)(i % 7), j.y[i] = 0;
    const int reps = n >= (1 << 22) ? 2 : 20; /* a few ms a timing */
    double t[2][STREAM_ROUNDS], ratio[STREAM_ROUNDS];
    for (int r = 0; r < STREAM_ROUNDS; r++) {
        t[0][r] = stream_pass(&j, 1, reps);
        t[1][r] = stream_pass(&j, 2, reps);
        ratio[r] = t[0][r] / t[1][r];
    }
    const long long kib = (long long)(n * (int64_t)sizeof(float) / 1024);
    const double bytes = 12.0 * (double)n;
    printf("stream_%lldk_t1 %.1f GB/s\n", kib, bytes / median_of(t[0], STREAM_ROUNDS) * 1e-9);
    printf("stream_%lldk_t2 %.1f GB/s\n", kib, bytes / median_of(t[1], STREAM_ROUNDS) * 1e-9);
    printf("stream_%lldk_t2_over_t1 %.3f x (median of %d alternated rounds)\n", kib, median_of(ratio, STREAM_ROUNDS),
           STREAM_ROUNDS);
    free(j.x), free(j.y);
}

void bench_stream(void)
{
    int saved = pg_num_threads();
    const int64_t sizes[] = {2048 * 128, 2048 * 512, 16 << 20};
    for (int i = 0; i < 3; i++)
        stream_case(sizes[i]);
    pg_set_num_threads(saved);
}
