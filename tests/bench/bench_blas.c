/* posgrad's GEMM beside OpenBLAS's cblas_sgemm: `bench blas` (only when asked
 * for by name; make bench-compare runs it).
 *
 * OpenBLAS is not linked: posgrad depends on libc and libm alone. When
 * libopenblas.so.0 is installed (Debian: libopenblas0-pthread, or
 * libopenblas-dev which pulls it in) it is opened at run time with dlopen
 * (in glibc's libc since 2.34: no -ldl). Missing: one line says so.
 *
 * Shapes: 1024^3 and the toy training model's products, the same as
 * bench_gemm.c's (one list: bench_toy_shapes), row-major with the same
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
    gemm_case g; /* f32; posgrad's side is gemm_case_run on it */
    const blas_lib *lib;
} blas_case;

static void run_blas(void *p, int reps)
{
    const blas_case *bc = p;
    const gemm_case *g = &bc->g;
    int lda = (int)(g->ta ? g->M : g->K), ldb = (int)(g->tb ? g->K : g->N);
    for (int i = 0; i < reps; i++)
        bc->lib->sgemm(CBLAS_ROW_MAJOR, g->ta ? CBLAS_TRANS : CBLAS_NO_TRANS, g->tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
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

/* largest |posgrad - OpenBLAS| over C relative to the largest |C| (the same product twice) */
static double blas_disagreement(blas_case *bc)
{
    const gemm_case *g = &bc->g;
    size_t n = (size_t)(g->M * g->N);
    float *mine = malloc(n * sizeof *mine), *c = g->c;
    if (!mine)
        return 0;
    gemm_case_run(&bc->g, 1);
    memcpy(mine, c, n * sizeof *mine);
    run_blas(bc, 1);
    double diff = 0, big = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)mine[i] - (double)c[i]));
        big = fmax(big, fabs((double)c[i]));
    }
    free(mine);
    return big > 0 ? diff / big : diff;
}

/* one shape at 1 and 2 threads: posgrad and OpenBLAS alternately, ROUNDS each */
static void blas_shape(const blas_lib *lib, const char *shape, bool ta, bool tb, int64_t M, int64_t K, int64_t N)
{
    blas_case bc = {.lib = lib};
    bool ok = gemm_case_init(&bc.g, PG_F32, ta, tb, M, K, N);
    double flops = 2.0 * (double)M * (double)N * (double)K;
    int reps = (int)(2e8 / flops) + 1; /* about 2 ms or more per timed run, as bench_gemm.c */
    double err = ok ? blas_disagreement(&bc) : 0;
    if (err > 1e-4)
        printf("# blas_%s: posgrad and OpenBLAS disagree (max difference %.3g of max |C|)\n", shape, err);
    for (int threads = 1; threads <= 2 && ok; threads++) {
        pg_set_num_threads(threads);
        lib->set_threads(threads); /* may start OpenBLAS's threads, which then spin a while */
        settle();
        double tp[ROUNDS], tb_[ROUNDS];
        for (int k = 0; k < ROUNDS; k++) {
            warm(gemm_case_run, &bc.g, reps);
            tp[k] = median_time(gemm_case_run, &bc.g, reps);
            settle();
            warm(run_blas, &bc, reps);
            tb_[k] = median_time(run_blas, &bc, reps);
            settle();
        }
        double mine = flops / median_of(tp, ROUNDS) * 1e-9, theirs = flops / median_of(tb_, ROUNDS) * 1e-9;
        printf("gemm_f32_%s_t%d %.2f GFLOP/s\n", shape, threads, mine);
        printf("blas_sgemm_%s_t%d %.2f GFLOP/s\n", shape, threads, theirs);
        printf("blas_ratio_%s_t%d %.3f x\n", shape, threads, mine / theirs);
        fflush(stdout);
    }
    gemm_case_free(&bc.g);
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
    toy_shape toy[BENCH_TOY_SHAPES]; /* bench_gemm.c's gemm_f32_toy_* products */
    for (int c = 0, n = bench_toy_shapes(toy); c < n; c++) {
        snprintf(name, sizeof name, "blas_sgemm_%s", toy[c].name);
        if (bench_selected(only, name))
            blas_shape(&lib, toy[c].name, toy[c].ta, toy[c].tb, toy[c].M, toy[c].K, toy[c].N);
    }
    pg_set_num_threads(saved);
    dlclose(lib.handle);
}
