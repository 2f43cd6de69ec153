/* posgrad benchmarks: one line per figure, `name value unit`, each the median
 * of several timed runs after a warm-up. */
#include "../../posgrad.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define RUNS 7

/* median seconds of one call of fn(ctx, reps) divided by reps */
static double median_time(void (*fn)(void *, int), void *ctx, int reps)
{
    double t[RUNS];
    fn(ctx, reps); /* warm-up */
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_s();
        fn(ctx, reps);
        t[r] = (now_s() - t0) / reps;
    }
    qsort(t, RUNS, sizeof t[0], cmp_double);
    return t[RUNS / 2];
}

/* ---- op overhead: record a 16-element add and run its backward ------------------ */

typedef struct overhead_ctx {
    pg_graph *g;
    pg_tensor *a, *b, *up;
} overhead_ctx;

static void overhead_run(void *p, int reps)
{
    overhead_ctx *c = p;
    for (int i = 0; i < reps; i++) {
        pg_graph_reset(c->g);
        pg_tensor *y = pg_add(c->g, c->a, c->b);
        pg_backward_with(c->g, y, c->up);
    }
}

static void bench_op_overhead(void)
{
    pg_rng r = pg_rng_init(1);
    overhead_ctx c = {pg_graph_new(), pg_randn(NULL, PG_F32, PG_SHAPE(16), &r), pg_randn(NULL, PG_F32, PG_SHAPE(16), &r),
                      pg_ones(NULL, PG_F32, PG_SHAPE(16))};
    pg_set_requires_grad(c.a, true);
    pg_set_requires_grad(c.b, true);
    double t = median_time(overhead_run, &c, 200000);
    printf("op_overhead_us %.4f us\n", t * 1e6);
    pg_graph_free(c.g);
    pg_tensor_free(c.a);
    pg_tensor_free(c.b);
    pg_tensor_free(c.up);
}

/* ---- matmul forward ---------------------------------------------------------------- */

typedef struct mm_ctx {
    pg_graph *g;
    pg_tensor *a, *b;
} mm_ctx;

static void mm_run(void *p, int reps)
{
    mm_ctx *c = p;
    for (int i = 0; i < reps; i++) {
        pg_graph_reset(c->g);
        pg_matmul(c->g, c->a, c->b, false, false);
    }
}

static void bench_matmul(pg_dtype dt, int64_t n)
{
    pg_rng r = pg_rng_init(2);
    mm_ctx c = {pg_graph_new(), pg_randn(NULL, dt, PG_SHAPE(n, n), &r), pg_randn(NULL, dt, PG_SHAPE(n, n), &r)};
    int reps = n >= 1024 ? 2 : n >= 256 ? 20 : 2000;
    double t = median_time(mm_run, &c, reps);
    printf("gemm_%s_%lld_t1 %.2f GFLOP/s\n", pg_dtype_name(dt), (long long)n, 2.0 * (double)(n * n * n) / t * 1e-9);
    pg_graph_free(c.g);
    pg_tensor_free(c.a);
    pg_tensor_free(c.b);
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL; /* a name prefix to run just some */
    if (!only || !strncmp("op_overhead", only, strlen(only)))
        bench_op_overhead();
    if (!only || !strncmp("gemm", only, strlen(only))) {
        int64_t sizes[] = {64, 256, 1024};
        for (int i = 0; i < 3; i++)
            bench_matmul(PG_F32, sizes[i]);
        bench_matmul(PG_F64, 256);
    }
    return 0;
}
