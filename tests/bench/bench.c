/* posgrad benchmarks: one line per figure, `name value unit`, each the median
 * of several timed runs after a warm-up. */
#include "bench.h"
#include "../../autograd/flash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double now_s(void)
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

double median_of(double *t, int n)
{
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return t[n / 2];
}

/* median seconds of one call of fn(ctx, reps) divided by reps */
double median_time(void (*fn)(void *, int), void *ctx, int reps)
{
    double t[RUNS];
    fn(ctx, reps); /* warm-up */
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_s();
        fn(ctx, reps);
        t[r] = (now_s() - t0) / reps;
    }
    return median_of(t, RUNS);
}

/* Runs `argv0 --case NAME ARG` as a fresh process (fork + exec of this binary,
 * so its memory starts empty rather than as a copy of this one's), which
 * prints the milliseconds its case took and its own peak resident memory
 * (VmHWM); returns those MB and, through *ms, the milliseconds; -1 on
 * failure. One process per case keeps one case's peak from hiding another's. */
double in_fresh_process(const char *argv0, const char *name, long long arg, double *ms)
{
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    fflush(stdout);
    char argbuf[32];
    snprintf(argbuf, sizeof argbuf, "%lld", arg);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        if (dup2(fd[1], STDOUT_FILENO) < 0)
            _exit(127);
        execl("/proc/self/exe", argv0, "--case", name, argbuf, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char out[64] = {0};
    ssize_t r = pid > 0 ? read(fd[0], out, sizeof out - 1) : -1;
    close(fd[0]);
    int status = 0;
    double mb = -1;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || r <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        sscanf(out, "%lf %lf", ms, &mb) != 2)
        return -1;
    return mb;
}

bool bench_selected(const char *only, const char *name)
{
    return !only || !strncmp(name, only, strlen(only));
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

/* `NAME_t1 ms` and `NAME_t2 ms`: fn's median time at 1 and at 2 threads (the caller's count
 * restored) */
static void print_ms_at_1_and_2_threads(const char *name, void (*fn)(void *, int), void *ctx, int reps)
{
    int saved = pg_num_threads();
    for (int t = 1; t <= 2; t++) {
        pg_set_num_threads(t);
        printf("%s_t%d %.2f ms\n", name, t, median_time(fn, ctx, reps) * 1e3);
    }
    pg_set_num_threads(saved);
}

/* ---- CoPE's bias: forward + backward on the toy model's shape ---------------------------
 * logits (8, 4, 256, 256) f32, z (8, 4, 256, 257), causal, the upstream gradient zero at
 * the hidden keys (as attention's): pg_cope_interp beside the chain
 * of ops it replaced (mul_scalar, sigmoid, masked_fill, cumsum_reverse, clamp,
 * gather_lerp, mul_scalar; the same bits), at 1 and 2 threads */
typedef struct cope_ctx {
    pg_graph *g;
    pg_tensor *s, *z, *hide, *up;
    bool chain;
} cope_ctx;

static void cope_run(void *p, int reps)
{
    cope_ctx *c = p;
    const double scale = 1.0 / sqrt(32.0);
    for (int i = 0; i < reps; i++) {
        pg_graph_reset(c->g);
        pg_tensor *y;
        if (c->chain) {
            pg_tensor *gates = pg_masked_fill(c->g, pg_sigmoid(c->g, pg_mul_scalar(c->g, c->s, scale)), c->hide, 0);
            pg_tensor *p = pg_clamp(c->g, pg_cumsum_reverse(c->g, gates, -1), -INFINITY, 256);
            y = pg_mul_scalar(c->g, pg_gather_lerp(c->g, c->z, p), scale);
        } else {
            y = pg_cope_interp(c->g, c->s, c->z, NULL, true, scale, scale);
        }
        if (!y || pg_backward_with(c->g, y, c->up) != 0)
            fprintf(stderr, "cope_bias: %s\n", pg_graph_error(c->g));
    }
}

static void bench_cope_bias(void)
{
    pg_rng r = pg_rng_init(5);
    cope_ctx c = {pg_graph_new(), pg_randn(NULL, PG_F32, PG_SHAPE(8, 4, 256, 256), &r),
                  pg_randn(NULL, PG_F32, PG_SHAPE(8, 4, 256, 257), &r),
                  pg_empty(NULL, PG_BOOL, PG_SHAPE(1, 1, 256, 256)),
                  pg_randn(NULL, PG_F32, PG_SHAPE(8, 4, 256, 256), &r), false};
    for (int64_t i = 0; i < 256 * 256; i++)
        pg_bool(c.hide)[i] = i % 256 > i / 256; /* causal: key j > query i */
    for (int64_t i = 0; i < c.up->numel; i++) /* attention's gradient: +-0 at the keys it hides */
        pg_f32(c.up)[i] *= pg_bool(c.hide)[i % (256 * 256)] ? 0.0f : 1.0f;
    pg_set_requires_grad(c.s, true);
    pg_set_requires_grad(c.z, true);
    int saved = pg_num_threads();
    for (int t = 1; t <= 2; t++) {
        pg_set_num_threads(t);
        for (int chain = 0; chain <= 1; chain++) {
            c.chain = chain;
            printf("cope_bias_%s_t%d %.2f ms\n", chain ? "chain" : "fused", t, median_time(cope_run, &c, 3) * 1e3);
        }
    }
    pg_set_num_threads(saved);
    pg_graph_free(c.g);
    pg_tensor_free(c.s);
    pg_tensor_free(c.z);
    pg_tensor_free(c.hide);
    pg_tensor_free(c.up);
}

/* ---- CoPE's attention: forward + backward on the toy model's shape ----------------------
 * pg_cope_attention: q, k, v (8, 4, 256, 32) f32, E (1, 32, 257), causal, scale and
 * out_scale 1 / sqrt(32) (CoPE's RAM convention, train_lm's cope), every input with a
 * gradient, at 1 and 2 threads */
typedef struct cope_attn_ctx {
    pg_graph *g;
    pg_tensor *in[4], *up; /* q, k, v, E */
} cope_attn_ctx;

static void cope_attn_run(void *p, int reps)
{
    cope_attn_ctx *c = p;
    const double scale = 1.0 / sqrt(32.0);
    const pg_cope_attn_opts o = {.scale = scale, .out_scale = scale, .causal = true};
    for (int i = 0; i < reps; i++) {
        pg_graph_reset(c->g);
        for (int k = 0; k < 4; k++)
            pg_zero_grad(c->in[k]);
        pg_tensor *y = pg_cope_attention(c->g, c->in[0], c->in[1], c->in[2], c->in[3], &o);
        if (!y || pg_backward_with(c->g, y, c->up) != 0)
            fprintf(stderr, "cope_attn: %s\n", pg_graph_error(c->g));
    }
}

static void bench_cope_attn(void)
{
    pg_rng r = pg_rng_init(6);
    cope_attn_ctx c = {pg_graph_new(), {NULL}, NULL};
    for (int k = 0; k < 3; k++)
        c.in[k] = pg_randn(NULL, PG_F32, PG_SHAPE(8, 4, 256, 32), &r);
    c.in[3] = pg_randn(NULL, PG_F32, PG_SHAPE(1, 32, 257), &r);
    c.up = pg_randn(NULL, PG_F32, PG_SHAPE(8, 4, 256, 32), &r);
    for (int k = 0; k < 4; k++)
        pg_set_requires_grad(c.in[k], true);
    print_ms_at_1_and_2_threads("cope_attn", cope_attn_run, &c, 5);
    pg_graph_free(c.g);
    for (int k = 0; k < 4; k++)
        pg_tensor_free(c.in[k]);
    pg_tensor_free(c.up);
}

/* ---- one head with a distance bias: the bias's gradient is shared by every row, fewer
 * regions than threads, so the backward's rows are dealt to per-thread buffers (before
 * 2026-12-05 they all fell to the first thread): forward + backward, (16, 1, 512, 32) f32,
 * causal, 1 and 2 threads ------------------------------------------------------------ */

typedef struct one_head_ctx {
    pg_graph *g;
    pg_tensor *q, *k, *v, *bias;
} one_head_ctx;

static void one_head_run(void *p, int reps)
{
    one_head_ctx *c = p;
    const pg_flash_opts o = {.causal = true, .dist_bias = c->bias};
    for (int i = 0; i < reps; i++) {
        pg_graph_reset(c->g);
        pg_tensor *loss = pg_sum(c->g, pg_flash_attention(c->g, c->q, c->k, c->v, &o), 0, NULL, false);
        if (!loss || pg_backward(c->g, loss) != 0)
            fprintf(stderr, "attn_one_head: %s\n", pg_graph_error(c->g));
    }
}

static void bench_one_head(void)
{
    pg_rng r = pg_rng_init(9);
    one_head_ctx c = {pg_graph_new(), pg_randn(NULL, PG_F32, PG_SHAPE(16, 1, 512, 32), &r),
                      pg_randn(NULL, PG_F32, PG_SHAPE(16, 1, 512, 32), &r),
                      pg_randn(NULL, PG_F32, PG_SHAPE(16, 1, 512, 32), &r),
                      pg_randn(NULL, PG_F32, PG_SHAPE(1, 1023), &r)};
    pg_tensor *all[4] = {c.q, c.k, c.v, c.bias};
    for (int i = 0; i < 4; i++)
        pg_set_requires_grad(all[i], true);
    print_ms_at_1_and_2_threads("attn_one_head_dist_bias", one_head_run, &c, 5);
    pg_graph_free(c.g);
    for (int i = 0; i < 4; i++)
        pg_tensor_free(all[i]);
}

/* ---- attention scaling: forward + backward at length L (batch 1, 4 heads, head dim 32,
 * f32, causal), each case in its own process for its peak memory ---------------------- */

typedef enum { ATTN_LOCAL, ATTN_FUSED, ATTN_FULL } attn_kind;
static const char *const ATTN_NAMES[] = {"local", "fused", "full"};

typedef struct attn_case {
    int64_t L;
    attn_kind kind; /* LocalAttention (window 128, look_backward 1), fused full, unfused full */
} attn_case;

static double attn_run(void *p)
{
    const attn_case *c = p;
    pg_rng r = pg_rng_init(3);
    pg_tensor *qkv[3];
    for (int i = 0; i < 3; i++) {
        qkv[i] = pg_randn(NULL, PG_F32, PG_SHAPE(1, 4, c->L, 32), &r);
        pg_set_requires_grad(qkv[i], true);
    }
    pg_local_attention_config lc = pg_local_attention_defaults(128);
    lc.causal = true;
    lc.use_rotary_pos_emb = false;
    pg_local_attention *la = c->kind == ATTN_LOCAL ? pg_local_attention_new(&lc, NULL, 0) : NULL;
    pg_graph *g = pg_graph_new();
    /* two warm-up runs (the first grows the arena, the second reuses its merged
     * chunk for the first time), then the median of RUNS timed ones */
    double t[RUNS];
    for (int rep = -2; rep < RUNS; rep++) {
        pg_graph_reset(g);
        double t0 = now_s();
        pg_tensor *out = c->kind == ATTN_LOCAL ? pg_local_attention_forward(g, la, qkv[0], qkv[1], qkv[2], NULL)
                         : c->kind == ATTN_FUSED
                             ? pg_flash_attention(g, qkv[0], qkv[1], qkv[2], &(pg_flash_opts){.causal = true})
                             : pg_attention(g, qkv[0], qkv[1], qkv[2], &(pg_sdpa_opts){.causal = true});
        pg_tensor *loss = pg_sum(g, out, 0, NULL, false);
        if (!loss || pg_backward(g, loss) != 0)
            return -1;
        if (rep >= 0)
            t[rep] = now_s() - t0;
    }
    return median_of(t, RUNS) * 1e3;
}

static void bench_attention(const char *argv0, attn_kind kind, int64_t max_L)
{
    for (int64_t L = 1024; L <= max_L; L *= 2) {
        double ms = -1, mb = in_fresh_process(argv0, ATTN_NAMES[kind], (long long)L, &ms);
        const char *name = ATTN_NAMES[kind];
        printf("attn_%s_%lld_ms %.2f ms\n", name, (long long)L, ms);
        printf("attn_%s_%lld_mb %.1f MB\n", name, (long long)L, mb);
    }
}

/* This process's peak resident memory in MB: VmHWM of /proc/self/status, the
 * high-water mark of the current address space (ru_maxrss would also count
 * the forking parent's, which Linux carries across exec). -1 if unknown. */
static double peak_rss_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb / 1024.0;
}

/* `bench --case local|fused|full L`: one attention case; prints its milliseconds
 * and this process's peak resident MB */
static int run_case(const char *name, const char *arg)
{
    for (int k = 0; k < 3; k++)
        if (!strcmp(name, ATTN_NAMES[k])) {
            attn_case c = {strtoll(arg, NULL, 10), (attn_kind)k};
            double ms = attn_run(&c), mb = peak_rss_mb();
            if (ms < 0 || mb < 0)
                return 1;
            printf("%.6f %.3f\n", ms, mb);
            return 0;
        }
    return 2;
}

/* An integer argument in lo..hi, or -1 with a message naming the mode and the argument */
static long int_arg(const char *mode, const char *what, const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "bench %s: %s '%s' is not an integer in %ld..%ld\n", mode, what, s, lo, hi);
        return -1;
    }
    return v;
}

/* argv: bench MODE SCHEME [STEPS [THREADS ...]]: STEPS (default 60) and THREADS (default
 * `threads`) into *steps, *threads; false (and a message) when one is not valid */
static bool steps_threads(int argc, char **argv, long threads_default, long *steps, long *threads)
{
    *steps = argc > 3 ? int_arg(argv[1], "STEPS", argv[3], 1, 100000) : 60;
    *threads = argc > 4 ? int_arg(argv[1], "THREADS", argv[4], 1, PG_MAX_THREADS) : threads_default;
    return *steps > 0 && *threads > 0;
}

/* `bench --steps SCHEME [STEPS [THREADS [f32|f64]]]` (defaults 60, 1, f32) */
static int run_steps(int argc, char **argv)
{
    if (argc < 3 || argc > 6) {
        fprintf(stderr, "usage: bench --steps SCHEME [STEPS [THREADS [f32|f64]]]\n");
        return 2;
    }
    long steps, threads;
    if (!steps_threads(argc, argv, 1, &steps, &threads))
        return 2;
    const char *dt = argc > 5 ? argv[5] : "f32";
    if (strcmp(dt, "f32") && strcmp(dt, "f64")) {
        fprintf(stderr, "bench --steps: dtype '%s' is neither f32 nor f64\n", dt);
        return 2;
    }
    return bench_train_steps(argv[2], (int)steps, (int)threads, strcmp(dt, "f64") ? PG_F32 : PG_F64);
}

/* `bench --balance|--scaling SCHEME [STEPS [THREADS]]` (defaults 60, 2): the alternated pair
 * of bench_train.c that fn runs */
static int run_alternated(int argc, char **argv, int (*fn)(const char *scheme, int steps, int threads))
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: bench %s SCHEME [STEPS [THREADS]]\n", argv[1]);
        return 2;
    }
    long steps, threads;
    if (!steps_threads(argc, argv, 2, &steps, &threads))
        return 2;
    return fn(argv[2], (int)steps, (int)threads);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--case"))
        return run_case(argv[2], argv[3]);
    if (argc >= 2 && !strcmp(argv[1], "--steps"))
        return run_steps(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "--balance"))
        return run_alternated(argc, argv, bench_train_balance);
    if (argc >= 2 && !strcmp(argv[1], "--scaling"))
        return run_alternated(argc, argv, bench_train_scaling);
    const char *only = argc > 1 ? argv[1] : NULL; /* a name prefix to run just some */
    /* the machine's yardstick first: every figure below means something only beside it */
    if (bench_selected(only, "fma_peak") || (only && !strncmp(only, "gemm", 4)))
        bench_fma_peak();
    if (bench_selected(only, "core_skew"))
        bench_core_skew();
    if (bench_selected(only, "stream"))
        bench_stream();
    if (bench_selected(only, "op_overhead"))
        bench_op_overhead();
    bench_gemm_all(only);
    if (bench_selected(only, "cope_bias"))
        bench_cope_bias();
    if (bench_selected(only, "cope_attn"))
        bench_cope_attn();
    if (bench_selected(only, "attn_one_head"))
        bench_one_head();
    bench_train_all(only);
    bench_png_all(only);
    bench_generate_all(only);
    bench_blas_all(only); /* only when named: `bench blas` */
    if (bench_selected(only, "attn_local"))
        bench_attention(argv[0], ATTN_LOCAL, 16384);
    if (bench_selected(only, "attn_fused"))
        bench_attention(argv[0], ATTN_FUSED, 16384);
    if (only && bench_selected(only, "attn_full")) /* unfused reference: L x L memory */
        bench_attention(argv[0], ATTN_FULL, 4096);
    return 0;
}
