/* GEMM benchmarks: gemm_<dtype>_<n>_t<threads> GFLOP/s. */
#include "bench.h"

#include <stdio.h>

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

void bench_gemm_all(const char *only)
{
    if (!bench_selected(only, "gemm"))
        return;
    int64_t sizes[] = {64, 256, 1024};
    for (int i = 0; i < 3; i++)
        bench_matmul(PG_F32, sizes[i]);
    bench_matmul(PG_F64, 256);
}
