/* GEMM benchmarks, GFLOP/s: the register-only FMA peak (fma_peak_t1/_t2),
 * square products gemm_<dtype>_<n>_t<threads>, and the toy training model's
 * products gemm_f32_toy_<M>x<K>x<N>[_tn|_nt]_t<threads> (op(A) M x K, op(B)
 * K x N; _nt: B stored transposed as in a Linear forward x W^T, _tn: A stored
 * transposed as in its weight gradient dY^T X). Each figure is the median of
 * several runs after a warm-up, threads set by pg_set_num_threads. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/* ---- peak: independent FMA chains on registers only ------------------------------ */

#if defined(__AVX512F__)
typedef __m512 fvec;
#define FV_LANES 16
#define FV_SET1 _mm512_set1_ps
#define FV_FMA _mm512_fmadd_ps
#define FV_SUM _mm512_reduce_add_ps
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 fvec;
#define FV_LANES 8
#define FV_SET1 _mm256_set1_ps
#define FV_FMA _mm256_fmadd_ps
static float fv_sum(__m256 v)
{
    float f[8];
    _mm256_storeu_ps(f, v);
    return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#define FV_SUM fv_sum
#elif defined(__GNUC__) /* portable: SSE2 multiply then add (no FMA), counted as 2 flops a lane */
typedef float fvec __attribute__((vector_size(16)));
#define FV_LANES 4
#define FV_SET1(x) ((fvec){(x), (x), (x), (x)})
#define FV_FMA(a, b, c) ((a) * (b) + (c))
#define FV_SUM(v) ((v)[0] + (v)[1] + (v)[2] + (v)[3])
#else
typedef float fvec;
#define FV_LANES 1
#define FV_SET1(x) (x)
#define FV_FMA(a, b, c) ((a) * (b) + (c))
#define FV_SUM(x) (x)
#endif

#define PEAK_ITERS 20000000L
#define PEAK_CHAINS 12

static volatile float peak_sink;

/* PEAK_ITERS x PEAK_CHAINS independent vector multiply-adds */
static void peak_task(void *ctx, int64_t i, int thread)
{
    (void)ctx, (void)i, (void)thread;
    static volatile float init[PEAK_CHAINS + 2] = {1, 1e-30f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    fvec x = FV_SET1(init[0]), y = FV_SET1(init[1]); /* c = c * 1 + tiny, opaque to the compiler */
    fvec c0 = FV_SET1(init[2]), c1 = FV_SET1(init[3]), c2 = FV_SET1(init[4]), c3 = FV_SET1(init[5]);
    fvec c4 = FV_SET1(init[6]), c5 = FV_SET1(init[7]), c6 = FV_SET1(init[8]), c7 = FV_SET1(init[9]);
    fvec c8 = FV_SET1(init[10]), c9 = FV_SET1(init[11]), c10 = FV_SET1(init[12]), c11 = FV_SET1(init[13]);
    for (long r = 0; r < PEAK_ITERS; r++) {
        c0 = FV_FMA(c0, x, y), c1 = FV_FMA(c1, x, y), c2 = FV_FMA(c2, x, y), c3 = FV_FMA(c3, x, y);
        c4 = FV_FMA(c4, x, y), c5 = FV_FMA(c5, x, y), c6 = FV_FMA(c6, x, y), c7 = FV_FMA(c7, x, y);
        c8 = FV_FMA(c8, x, y), c9 = FV_FMA(c9, x, y), c10 = FV_FMA(c10, x, y), c11 = FV_FMA(c11, x, y);
    }
    peak_sink = FV_SUM(c0) + FV_SUM(c1) + FV_SUM(c2) + FV_SUM(c3) + FV_SUM(c4) + FV_SUM(c5) + FV_SUM(c6) +
                FV_SUM(c7) + FV_SUM(c8) + FV_SUM(c9) + FV_SUM(c10) + FV_SUM(c11);
}

static void peak_run(void *ctx, int reps)
{
    int threads = *(int *)ctx;
    for (int i = 0; i < reps; i++)
        pg_parallel_for(threads, peak_task, NULL);
}

/* this run's peak at 1 and 2 threads (GFLOP/s), the yardstick of every GEMM line */
static double fma_peak[3];

static void bench_peak(int threads)
{
    pg_set_num_threads(threads);
    double t = median_time(peak_run, &threads, 1);
    double flops = 2.0 * FV_LANES * PEAK_CHAINS * (double)PEAK_ITERS * threads;
    fma_peak[threads] = flops / t * 1e-9;
    printf("fma_peak_t%d %.2f GFLOP/s\n", threads, fma_peak[threads]);
}

void bench_fma_peak(void)
{
    int saved = pg_num_threads();
    bench_peak(1);
    bench_peak(2);
    pg_set_num_threads(saved);
}

/* ---- core_skew: the second thread's time over the first's for the same work ----------- */
/* Both threads run the same product (the toy model's 2048 x 128 x 512, each on its own
 * matrices) at the same time, each timing itself; a step's even split waits for the
 * slower one. On the two-core VMs of docs/performance.md it read 0.88-1.08 in runs a few
 * seconds apart, and a training step's jobs once found the worker 7-30% slower. */
#define SKEW_REPS 21

typedef struct skew_job {
    gemm_case g[2];
    double secs[2];
} skew_job;

static void skew_task(void *ctx, int64_t i, int thread)
{
    (void)thread;
    skew_job *j = ctx;
    double t0 = now_s();
    gemm_case_run(&j->g[i], 1); /* nested in a task: runs on this thread alone */
    j->secs[i] = now_s() - t0;
}

void bench_core_skew(void)
{
    skew_job j;
    bool ok = gemm_case_init(&j.g[0], PG_F32, false, false, 2048, 128, 512);
    ok = gemm_case_init(&j.g[1], PG_F32, false, false, 2048, 128, 512) && ok;
    int saved = pg_num_threads();
    if (ok && pg_set_num_threads(2) == 0) {
        double ratio[SKEW_REPS];
        pg_parallel_for(2, skew_task, &j); /* warm-up: pages, the worker */
        for (int r = 0; r < SKEW_REPS; r++) {
            pg_parallel_for(2, skew_task, &j);
            ratio[r] = j.secs[1] / j.secs[0];
        }
        printf("core_skew %.3f (second thread's time / first's, median of %d)\n", median_of(ratio, SKEW_REPS),
               SKEW_REPS);
    }
    pg_set_num_threads(saved);
    gemm_case_free(&j.g[0]), gemm_case_free(&j.g[1]);
}

/* `name GFLOP/s` and, after the unit, the share of this run's fma_peak at that
 * thread count (measured first by bench_fma_peak) */
void print_gflops(const char *name, int threads, double gflops)
{
    printf("%s %.2f GFLOP/s", name, gflops);
    if (threads >= 1 && threads <= 2 && fma_peak[threads] > 0)
        printf(" (%.0f%% of fma_peak_t%d)", 100 * gflops / fma_peak[threads], threads);
    printf("\n");
}

/* ---- one product C = op(A) op(B) (bench.h's gemm_case) ---------------------------- */

void gemm_case_run(void *p, int reps)
{
    gemm_case *g = p;
    int64_t lda = g->ta ? g->M : g->K, ldb = g->tb ? g->K : g->N;
    for (int i = 0; i < reps; i++) {
        if (g->dt == PG_F32)
            pg_gemm_f32(g->ta, g->tb, g->M, g->N, g->K, 1.0f, g->a, lda, g->b, ldb, 0.0f, g->c, g->N);
        else
            pg_gemm_f64(g->ta, g->tb, g->M, g->N, g->K, 1.0, g->a, lda, g->b, ldb, 0.0, g->c, g->N);
    }
}

static void *rand_matrix(pg_dtype dt, int64_t n, pg_rng *r)
{
    size_t size = dt == PG_F32 ? sizeof(float) : sizeof(double);
    void *v = malloc((size_t)n * size);
    for (int64_t i = 0; v && i < n; i++) {
        double x = 2 * pg_rng_uniform(r) - 1;
        if (dt == PG_F32)
            ((float *)v)[i] = (float)x;
        else
            ((double *)v)[i] = x;
    }
    return v;
}

bool gemm_case_init(gemm_case *g, pg_dtype dt, bool ta, bool tb, int64_t M, int64_t K, int64_t N)
{
    pg_rng r = pg_rng_init(2);
    *g = (gemm_case){dt, ta, tb, M, N, K, rand_matrix(dt, M * K, &r), rand_matrix(dt, K * N, &r),
                     rand_matrix(dt, M * N, &r)};
    return g->a && g->b && g->c;
}

void gemm_case_free(gemm_case *g)
{
    free(g->a), free(g->b), free(g->c);
}

/* toy model (d_model 128, MLP 512, qkv 384, vocab 256, 2048 tokens): a Linear (out, in)
 * runs x W^T forward (_nt), dY W for the input gradient, dY^T X for the weight gradient (_tn) */
int bench_toy_shapes(toy_shape out[BENCH_TOY_SHAPES])
{
    const int64_t io[5][2] = {{128, 384}, {128, 128}, {128, 512}, {512, 128}, {128, 256}}, T = 2048;
    int n = 0;
    for (int i = 0; i < 5; i++) {
        int64_t in = io[i][0], o = io[i][1];
        out[n++] = (toy_shape){T, in, o, false, true, ""};  /* y = x W^T */
        out[n++] = (toy_shape){T, o, in, false, false, ""}; /* dx = dy W */
        out[n++] = (toy_shape){o, T, in, true, false, ""};  /* dW = dy^T x */
    }
    for (int k = 0; k < n; k++)
        snprintf(out[k].name, sizeof out[k].name, "toy_%lldx%lldx%lld%s", (long long)out[k].M,
                 (long long)out[k].K, (long long)out[k].N, out[k].tb ? "_nt" : out[k].ta ? "_tn" : "");
    return n;
}

/* prints `name_t<threads> GFLOP/s` for each thread count in 1, 2 */
static void bench_gemm(const char *name, pg_dtype dt, bool ta, bool tb, int64_t M, int64_t K, int64_t N)
{
    gemm_case g;
    bool ok = gemm_case_init(&g, dt, ta, tb, M, K, N);
    double flops = 2.0 * (double)M * (double)N * (double)K;
    int reps = (int)(2e8 / flops) + 1; /* about 2 ms or more per timed run */
    for (int threads = 1; threads <= 2 && ok; threads++) {
        pg_set_num_threads(threads);
        double t = median_time(gemm_case_run, &g, reps);
        char full[128];
        snprintf(full, sizeof full, "%s_t%d", name, threads);
        print_gflops(full, threads, flops / t * 1e-9);
    }
    gemm_case_free(&g);
}

void bench_gemm_all(const char *only)
{
    int saved = pg_num_threads();
    char name[96];
    int64_t sizes[] = {64, 128, 256, 512, 1024, 2048};
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "gemm_f32_%lld", (long long)sizes[i]);
        if (bench_selected(only, name))
            bench_gemm(name, PG_F32, false, false, sizes[i], sizes[i], sizes[i]);
    }
    if (bench_selected(only, "gemm_f64_1024"))
        bench_gemm("gemm_f64_1024", PG_F64, false, false, 1024, 1024, 1024);
    toy_shape toy[BENCH_TOY_SHAPES];
    for (int c = 0, n = bench_toy_shapes(toy); c < n; c++) {
        snprintf(name, sizeof name, "gemm_f32_%s", toy[c].name);
        if (bench_selected(only, name))
            bench_gemm(name, PG_F32, toy[c].ta, toy[c].tb, toy[c].M, toy[c].K, toy[c].N);
    }
    for (int c = 0, n = bench_toy_shapes(toy); c < n; c++) { /* the float64 step's products */
        snprintf(name, sizeof name, "gemm_f64_%s", toy[c].name);
        if (bench_selected(only, name))
            bench_gemm(name, PG_F64, toy[c].ta, toy[c].tb, toy[c].M, toy[c].K, toy[c].N);
    }
    pg_set_num_threads(saved);
}
