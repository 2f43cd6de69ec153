/* posgrad's GEMM beside OpenBLAS's cblas_sgemm: `bench blas` (only when asked
 * for by name; make bench-compare runs it).
 *
 * OpenBLAS is not linked: posgrad depends on libc and libm alone. When
 * libopenblas.so.0 is installed (Debian: libopenblas0-pthread, or
 * libopenblas-dev which pulls it in) it is opened at run time with dlopen
 * (in glibc's libc since 2.34: no -ldl). Missing: one line says so.
 *
 * Shapes: 1024^3 and the toy training model's products, the same as
 * bench_gemm.c's (keep the two tables alike), row-major with the same
 * transposes. For each shape and thread count (1, 2) posgrad's pg_gemm_f32
 * and cblas_sgemm are timed alternately, ROUNDS times each (each a median of
 * RUNS timed runs after 50 ms of untimed calls (warm()) and bench.c's warm-up,
 * then a pause of 150 ms: settle()); the figure printed is the median of the rounds:
 *   gemm_f32_<shape>_t<T>    posgrad  GFLOP/s
 *   blas_sgemm_<shape>_t<T>  OpenBLAS GFLOP/s
 *   blas_ratio_<shape>_t<T>  posgrad / OpenBLAS  x
 * OpenBLAS picks its kernels by the CPU it detects, or by OPENBLAS_CORETYPE
 * as the user sets it (e.g. OPENBLAS_CORETYPE=SkylakeX for its AVX-512
 * kernels, Haswell for AVX2); the first line names the core it runs. */
#include "bench.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 3

/* CBLAS's enum values (cblas.h) and the LP64 interface of Debian's libopenblas0 (int indices) */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc);
typedef void (*set_threads_fn)(int n);
typedef char *(*str_fn)(void);

typedef struct blas_lib {
    void *handle;
    sgemm_fn sgemm;
    set_threads_fn set_threads;
    str_fn corename, config; /* may be NULL */
} blas_lib;

/* dlsym's object pointer into a function pointer without the cast ISO C does not define */
static void *sym(void *handle, const char *name, void *fn_out, size_t size)
{
    void *p = dlsym(handle, name);
    if (p)
        memcpy(fn_out, &p, size);
    return p;
}

/* NULL, or why OpenBLAS cannot be used */
static const char *blas_open(blas_lib *b)
{
    memset(b, 0, sizeof *b);
    b->handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!b->handle)
        return "libopenblas.so.0 is not installed";
    bool ok = sym(b->handle, "cblas_sgemm", &b->sgemm, sizeof b->sgemm) &&
              sym(b->handle, "openblas_set_num_threads", &b->set_threads, sizeof b->set_threads);
    sym(b->handle, "openblas_get_corename", &b->corename, sizeof b->corename);
    sym(b->handle, "openblas_get_config", &b->config, sizeof b->config);
    if (!ok) {
        dlclose(b->handle);
        b->handle = NULL;
    }
    return ok ? NULL : "libopenblas.so.0 has no cblas_sgemm or openblas_set_num_threads";
}

typedef struct blas_case {
    const blas_lib *lib;
    bool ta, tb;
    int64_t M, N, K;
    float *a, *b, *c;
} blas_case;

static void run_posgrad(void *p, int reps)
{
    blas_case *g = p;
    int64_t lda = g->ta ? g->M : g->K, ldb = g->tb ? g->K : g->N;
    for (int i = 0; i < reps; i++)
        pg_gemm_f32(g->ta, g->tb, g->M, g->N, g->K, 1.0f, g->a, lda, g->b, ldb, 0.0f, g->c, g->N);
}

static void run_blas(void *p, int reps)
{
    blas_case *g = p;
    int lda = (int)(g->ta ? g->M : g->K), ldb = (int)(g->tb ? g->K : g->N);
    for (int i = 0; i < reps; i++)
        g->lib->sgemm(CBLAS_ROW_MAJOR, g->ta ? CBLAS_TRANS : CBLAS_NO_TRANS, g->tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
                      (int)g->M, (int)g->N, (int)g->K, 1.0f, g->a, lda, g->b, ldb, 0.0f, g->c, (int)g->N);
}

/* A pause between the two sides: OpenBLAS's idle threads spin (yielding) for about
 * 2^28 cycles after a call before they sleep (its THREAD_TIMEOUT), posgrad's pool
 * briefly too; without it one side's spinning threads share the cores with the
 * other side's first timed runs. */
static void settle(void)
{
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* Runs fn for at least 50 ms before a side is timed: after settle()'s pause the
 * second core is cold (an idle virtual CPU, a sleeping pool thread), and the first
 * milliseconds of either library ran at half speed at 2 threads (posgrad's
 * 2048x128x384 product: 180 GFLOP/s timed right after the pause, 400 without it). */
static void warm(void (*fn)(void *, int), void *ctx, int reps)
{
    double t0 = now_s();
    while (now_s() - t0 < 0.05)
        fn(ctx, reps);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* largest |posgrad - OpenBLAS| over C relative to the largest |C| (the same product twice) */
static double blas_disagreement(blas_case *g)
{
    size_t n = (size_t)(g->M * g->N);
    float *mine = malloc(n * sizeof *mine);
    if (!mine)
        return 0;
    run_posgrad(g, 1);
    memcpy(mine, g->c, n * sizeof *mine);
    run_blas(g, 1);
    double diff = 0, big = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)mine[i] - (double)g->c[i]));
        big = fmax(big, fabs((double)g->c[i]));
    }
    free(mine);
    return big > 0 ? diff / big : diff;
}

static float *rand_floats(int64_t n, pg_rng *r)
{
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; v && i < n; i++)
        v[i] = (float)(2 * pg_rng_uniform(r) - 1);
    return v;
}

/* one shape at 1 and 2 threads: posgrad and OpenBLAS alternately, ROUNDS each */
static void blas_shape(const blas_lib *lib, const char *shape, bool ta, bool tb, int64_t M, int64_t K, int64_t N)
{
    pg_rng r = pg_rng_init(2);
    blas_case g = {lib, ta, tb, M, N, K, rand_floats(M * K, &r), rand_floats(K * N, &r), rand_floats(M * N, &r)};
    double flops = 2.0 * (double)M * (double)N * (double)K;
    int reps = (int)(2e8 / flops) + 1; /* about 2 ms or more per timed run, as bench_gemm.c */
    double err = g.a && g.b && g.c ? blas_disagreement(&g) : 0;
    if (err > 1e-4)
        printf("# blas_%s: posgrad and OpenBLAS disagree (max difference %.3g of max |C|)\n", shape, err);
    for (int threads = 1; threads <= 2 && g.a && g.b && g.c; threads++) {
        pg_set_num_threads(threads);
        lib->set_threads(threads); /* may start OpenBLAS's threads, which then spin a while */
        settle();
        double tp[ROUNDS], tb_[ROUNDS];
        for (int k = 0; k < ROUNDS; k++) {
            warm(run_posgrad, &g, reps);
            tp[k] = median_time(run_posgrad, &g, reps);
            settle();
            warm(run_blas, &g, reps);
            tb_[k] = median_time(run_blas, &g, reps);
            settle();
        }
        qsort(tp, ROUNDS, sizeof tp[0], cmp_double);
        qsort(tb_, ROUNDS, sizeof tb_[0], cmp_double);
        double mine = flops / tp[ROUNDS / 2] * 1e-9, theirs = flops / tb_[ROUNDS / 2] * 1e-9;
        printf("gemm_f32_%s_t%d %.2f GFLOP/s\n", shape, threads, mine);
        printf("blas_sgemm_%s_t%d %.2f GFLOP/s\n", shape, threads, theirs);
        printf("blas_ratio_%s_t%d %.3f x\n", shape, threads, mine / theirs);
        fflush(stdout);
    }
    free(g.a), free(g.b), free(g.c);
}

/* Runs only when `only` names it: "blas" (every shape), "blas_sgemm_1024", "blas_sgemm_toy", ... */
void bench_blas_all(const char *only)
{
    if (!only || strncmp(only, "blas", 4) != 0)
        return;
    blas_lib lib;
    const char *why = blas_open(&lib);
    if (why) {
        printf("# blas: OpenBLAS missing (%s): install libopenblas0-pthread to compare; skipped\n", why);
        return;
    }
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("# blas: %s, core %s (OPENBLAS_CORETYPE %s)\n", lib.config ? lib.config() : "?",
           lib.corename ? lib.corename() : "?", core ? core : "unset: detected");
    int saved = pg_num_threads();
    char name[96];
    if (bench_selected(only, "blas_sgemm_1024"))
        blas_shape(&lib, "1024", false, false, 1024, 1024, 1024);
    /* the toy model's products (bench_gemm.c): x W^T (_nt), dY W, dY^T X (_tn), T = 2048 tokens */
    int64_t io[5][2] = {{128, 384}, {128, 128}, {128, 512}, {512, 128}, {128, 256}}, T = 2048;
    for (int i = 0; i < 5; i++) {
        int64_t in = io[i][0], out = io[i][1];
        struct {
            int64_t M, K, N;
            bool ta, tb;
            const char *sfx;
        } cases[3] = {{T, in, out, false, true, "_nt"}, {T, out, in, false, false, ""}, {out, T, in, true, false, "_tn"}};
        for (int c = 0; c < 3; c++) {
            char shape[64];
            snprintf(shape, sizeof shape, "toy_%lldx%lldx%lld%s", (long long)cases[c].M, (long long)cases[c].K,
                     (long long)cases[c].N, cases[c].sfx);
            snprintf(name, sizeof name, "blas_sgemm_%s", shape);
            if (bench_selected(only, name))
                blas_shape(&lib, shape, cases[c].ta, cases[c].tb, cases[c].M, cases[c].K, cases[c].N);
        }
    }
    pg_set_num_threads(saved);
    dlclose(lib.handle);
}
