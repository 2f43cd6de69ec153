/* GEMM kernels against a naive triple loop, and pg_matmul: forward values
 * (PyTorch 1.13 numbers), transposes, batch broadcasting, gradchecks, f32. */
#include "testutil.h"

#include "../tensor/gemm.h"
#include "../tensor/threadpool.h"

/* ---- pg_gemm against a naive loop ------------------------------------------------ */

/* C = alpha op(A) op(B) + beta C in double, beta == 0 not reading C */
static void naive_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                       int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t p = 0; p < K; p++)
                s += (ta ? A[p * lda + i] : A[i * lda + p]) * (tb ? B[j * ldb + p] : B[p * ldb + j]);
            C[i * ldc + j] = alpha * s + (beta == 0 ? 0 : beta * C[i * ldc + j]);
        }
}

static double *rand_buf(int64_t n, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = 2 * pg_rng_uniform(&r) - 1;
    return v;
}

static float *to_f32(const double *v, int64_t n)
{
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)v[i];
    return f;
}

/* One case: stored A, B with padded leading dims, C prefilled (NaN when beta
 * is 0); f64 and f32 results against the naive loop. */
/* padded: leading dimensions past the rows (lda + 3, ldb + 1, ldc + 2), else exact */
static void check_gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, double beta, uint64_t seed,
                          bool padded)
{
    int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    int64_t lda = ac + 3 * padded, ldb = bc + padded, ldc = N + 2 * padded;
    double *A = rand_buf(ar * lda, seed), *B = rand_buf(br * ldb, seed + 1), *C = rand_buf(M * ldc, seed + 2);
    if (beta == 0)
        for (int64_t i = 0; i < M * ldc; i++)
            C[i] = NAN;
    size_t bytes = (size_t)(M * ldc + 1) * sizeof(double);
    double *ref = malloc(bytes), *c64 = malloc(bytes);
    for (int64_t i = 0; i < M * ldc; i++)
        ref[i] = c64[i] = C[i];
    float *A32 = to_f32(A, ar * lda), *B32 = to_f32(B, br * ldb), *c32 = to_f32(C, M * ldc);
    naive_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc);
    pg_gemm_f64(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c64, ldc);
    pg_gemm_f32(ta, tb, M, N, K, (float)alpha, A32, lda, B32, ldb, (float)beta, c32, ldc);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < ldc; j++) {
            int64_t k = i * ldc + j;
            if (j >= N) { /* padding past N is untouched */
                cr_assert(isnan(C[k]) ? isnan(c64[k]) : c64[k] == C[k], "padding written");
                continue;
            }
            double tol = 1e-13 * (double)(K + 1), tol32 = 3e-6 * (double)(K + 1);
            cr_assert(fabs(c64[k] - ref[k]) <= tol * (1 + fabs(ref[k])),
                      "f64 ta %d tb %d M %lld N %lld K %lld alpha %g beta %g: C[%lld,%lld] = %.17g, expected %.17g",
                      ta, tb, (long long)M, (long long)N, (long long)K, alpha, beta, (long long)i, (long long)j,
                      c64[k], ref[k]);
            cr_assert(fabs(c32[k] - ref[k]) <= tol32 * (1 + fabs(ref[k])),
                      "f32 ta %d tb %d M %lld N %lld K %lld: C[%lld,%lld] = %.9g, expected %.17g", ta, tb,
                      (long long)M, (long long)N, (long long)K, (long long)i, (long long)j, (double)c32[k], ref[k]);
        }
    free(A), free(B), free(C), free(ref), free(c64), free(A32), free(B32), free(c32);
}

static void check_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, double beta, uint64_t seed)
{
    check_gemm_ld(ta, tb, M, N, K, alpha, beta, seed, true);
}

Test(gemm, awkward_sizes_all_transposes)
{
    const int64_t sizes[] = {1, 7, 33, 65};
    uint64_t seed = 1;
    for (int t = 0; t < 4; t++)
        for (int mi = 0; mi < 4; mi++)
            for (int ni = 0; ni < 4; ni++)
                for (int ki = 0; ki < 4; ki++)
                    check_gemm(t & 1, t & 2, sizes[mi], sizes[ni], sizes[ki], 1.0, 0.0, seed++);
}

Test(gemm, alpha_beta_and_nan_in_c)
{
    for (int t = 0; t < 4; t++) {
        check_gemm(t & 1, t & 2, 9, 17, 5, 1.0, 1.0, 10 + t);   /* accumulate */
        check_gemm(t & 1, t & 2, 13, 6, 11, -0.5, 2.0, 20 + t); /* general alpha, beta */
        check_gemm(t & 1, t & 2, 7, 33, 3, 2.0, 0.0, 30 + t);   /* beta 0: C is NaN before */
    }
}

Test(gemm, blocking_boundaries)
{
    /* K beyond one KC block (512 floats, 256 doubles), M beyond MC (84), N beyond NC (1024) */
    for (int t = 0; t < 4; t++) {
        check_gemm(t & 1, t & 2, 5, 9, 600, 1.0, 0.0, 40 + t);
        check_gemm(t & 1, t & 2, 150, 20, 300, 1.0, 0.5, 50 + t);
        check_gemm(t & 1, t & 2, 3, 2100, 4, 1.0, 0.0, 60 + t);
    }
}

/* Every row count of a micro-kernel (1 .. 30 covers MR 4, 6, 14 and two
 * slivers), on each path: op(A) and op(B) read in place (N a multiple of NR,
 * narrow C), op(B) packed (transposed or ragged N), both packed (C rows of
 * 4 KiB or more), K over one KC block with in-place operands (the AVX2
 * kernels pack a transposed op(A) there), and op(B)'s rows exactly 2 KiB apart
 * over K >= KC (packed: N 512 in f32, 256 in f64). */
Test(gemm, row_counts_and_packing_paths)
{
    uint64_t seed = 100;
    for (int64_t m = 1; m <= 30; m++)
        for (int t = 0; t < 4; t++) {
            check_gemm(t & 1, t & 2, m, 64, 9, 1.0, m % 2 ? 0.0 : 0.75, seed++);
            check_gemm(t & 1, t & 2, m, 40, 4, -1.0, 1.0, seed++);
        }
    for (int t = 0; t < 4; t++) {
        check_gemm(t & 1, t & 2, 17, 1040, 3, 1.0, 0.5, seed++);
        check_gemm(t & 1, t & 2, 20, 32, 1100, 1.0, 0.0, seed++);
        check_gemm_ld(t & 1, false, 19, 512, 600, 1.0, 0.0, seed++, false);
        check_gemm_ld(t & 1, false, 19, 256, 600, 1.0, 0.5, seed++, false);
    }
    /* op(A) transposed, its rows 2 KiB apart in f32 over K >= KC: packed along the stored rows */
    check_gemm_ld(true, false, 512, 20, 600, 1.0, 0.5, seed++, false);
}

/* The first m rows of a product of 30 rows, as a product of their own: the same bits, each
 * row's arithmetic does not depend on its block (a tail of 1 or 2 rows runs over two slivers
 * of op(B) at once, tensor/gemm.c DEFINE_VKERNEL2; others on the kernel for their row count);
 * N 170 has pairs of whole slivers, a lone one and a ragged one on every build; K over two
 * blocks (in f64), not cut in halves (split_k_at: K < 4 N); beta 0, beta 0.5 on C and a bias;
 * A and B in place and packed, f32 and f64 */
static void check_rows_of_30(bool ta, bool tb, int mode, uint64_t seed)
{
    enum { M = 30, N = 170, K = 600 };
    double *A = rand_buf(M * K, seed), *B = rand_buf(K * N, seed + 1), *C0 = rand_buf(M * N, seed + 2);
    double *bias = rand_buf(N, seed + 3), *full = malloc(M * N * sizeof *full), *part = malloc(M * N * sizeof *part);
    float *A32 = to_f32(A, M * K), *B32 = to_f32(B, K * N), *b32 = to_f32(bias, N), *C32 = to_f32(C0, M * N);
    float *full32 = malloc(M * N * sizeof *full32), *part32 = malloc(M * N * sizeof *part32);
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    const double beta = mode == 1 ? 0.5 : 0.0;
    for (int64_t m = 1; m <= M; m++) {
        double *dst[2] = {m == 1 ? full : part, part};
        float *dst32[2] = {m == 1 ? full32 : part32, part32};
        for (int pass = m == 1 ? 0 : 1; pass < 2; pass++) { /* pass 0: all 30 rows, once */
            const int64_t rows = pass == 0 ? M : m;
            memcpy(dst[pass], C0, M * N * sizeof *C0);
            memcpy(dst32[pass], C32, M * N * sizeof *C32);
            if (mode == 2) {
                pg_gemm_bias_f64(ta, tb, rows, N, K, 0.75, A, lda, B, ldb, bias, dst[pass], N);
                pg_gemm_bias_f32(ta, tb, rows, N, K, 0.75f, A32, lda, B32, ldb, b32, dst32[pass], N);
            } else {
                pg_gemm_f64(ta, tb, rows, N, K, 0.75, A, lda, B, ldb, beta, dst[pass], N);
                pg_gemm_f32(ta, tb, rows, N, K, 0.75f, A32, lda, B32, ldb, (float)beta, dst32[pass], N);
            }
        }
        cr_assert(!memcmp(part, full, (size_t)(m * N) * sizeof *part), "f64 rows 0..%lld of 30, ta %d tb %d mode %d",
                  (long long)m, ta, tb, mode);
        cr_assert(!memcmp(part32, full32, (size_t)(m * N) * sizeof *part32),
                  "f32 rows 0..%lld of 30, ta %d tb %d mode %d", (long long)m, ta, tb, mode);
    }
    free(A), free(B), free(C0), free(bias), free(full), free(part);
    free(A32), free(B32), free(b32), free(C32), free(full32), free(part32);
}

Test(gemm, tail_rows_same_bits_as_full_blocks)
{
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(1), 0);
    for (int t = 0; t < 4; t++)
        for (int mode = 0; mode < 3; mode++)
            check_rows_of_30(t & 1, t & 2, mode, 900 + 10 * t + mode);
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

/* C = op(A) op(B) on t threads into a fresh buffer */
static double *gemm_on_threads(int t, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double *A,
                               const double *B, const double *C0)
{
    cr_assert_eq(pg_set_num_threads(t), 0);
    double *C = malloc((size_t)(M * N) * sizeof *C);
    memcpy(C, C0, (size_t)(M * N) * sizeof *C);
    pg_gemm_f64(ta, tb, M, N, K, 0.5, A, ta ? M : K, B, tb ? K : N, -1.0, C, N);
    return C;
}

static float *gemm_on_threads_f32(int t, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                                  const float *B)
{
    cr_assert_eq(pg_set_num_threads(t), 0);
    float *C = malloc((size_t)(M * N) * sizeof *C);
    pg_gemm_f32(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C, N);
    return C;
}

/* Products large enough to be split over the pool (over 2^22 flops; rows
 * when M >= N, else columns; ragged and not; in place, packed, A packed for
 * its 4 KiB row stride; a skinny one as FIRE's output layer; 20 rows, fewer
 * slivers than 3 threads; one sliver of columns or less with a long K, as the
 * weight gradient of FIRE's output layer, split in half slivers; FoX's gate
 * and its input gradient, 2^21 flops that go to the pool for the memory they
 * move, tensor/gemm.c gemm_cost) give the same bits on 1, 2 and 3 threads, and
 * match a naive loop. */
Test(gemm, thread_count_does_not_change_bits)
{
    int saved = pg_num_threads();
    struct {
        int64_t M, N, K;
    } shapes[] = {{200, 96, 900}, {30, 1100, 520}, {45, 390, 1024}, {20000, 4, 32},
                  {20, 4, 30000}, {4, 32, 20000},   {3, 20, 40000}, {2048, 4, 128}, {2048, 128, 4}};
    for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++)
        for (int t = s % 2; t < 4; t += 2) { /* two transposes per shape: small for valgrind */
            bool ta = t & 1, tb = t & 2;
            int64_t M = shapes[s].M, N = shapes[s].N, K = shapes[s].K;
            double *A = rand_buf(M * K, 300 + s), *B = rand_buf(K * N, 400 + s), *C0 = rand_buf(M * N, 500 + s);
            float *A32 = to_f32(A, M * K), *B32 = to_f32(B, K * N);
            double *c1 = gemm_on_threads(1, ta, tb, M, N, K, A, B, C0);
            float *f1 = gemm_on_threads_f32(1, ta, tb, M, N, K, A32, B32);
            double *c2 = NULL;
            float *f2 = NULL;
            for (int threads = 3; threads >= 2; threads--) { /* c2, f2: the 2-thread results */
                free(c2), free(f2);
                c2 = gemm_on_threads(threads, ta, tb, M, N, K, A, B, C0);
                f2 = gemm_on_threads_f32(threads, ta, tb, M, N, K, A32, B32);
                cr_assert(!memcmp(c1, c2, (size_t)(M * N) * sizeof *c1),
                          "f64 M %lld N %lld K %lld ta %d tb %d differs on %d threads", (long long)M, (long long)N,
                          (long long)K, ta, tb, threads);
                cr_assert(!memcmp(f1, f2, (size_t)(M * N) * sizeof *f1),
                          "f32 M %lld N %lld K %lld ta %d tb %d differs on %d threads", (long long)M, (long long)N,
                          (long long)K, ta, tb, threads);
            }
            /* spot checks against the naive sum: corners and the middle */
            int64_t probe[3][2] = {{0, 0}, {M - 1, N - 1}, {M / 2, N / 2}};
            for (int q = 0; q < 3; q++) {
                int64_t i = probe[q][0], j = probe[q][1];
                double ref = 0;
                for (int64_t p = 0; p < K; p++)
                    ref += (ta ? A[p * M + i] : A[i * K + p]) * (tb ? B[j * K + p] : B[p * N + j]);
                double c64 = 0.5 * ref - C0[i * N + j];
                cr_assert(fabs(c2[i * N + j] - c64) <= 1e-12 * (double)K, "f64 C[%lld,%lld] = %.17g, expected %.17g",
                          (long long)i, (long long)j, c2[i * N + j], c64);
                cr_assert(fabs(f2[i * N + j] - ref) <= 1e-5 * (double)K, "f32 C[%lld,%lld] = %.9g, expected %.17g",
                          (long long)i, (long long)j, (double)f2[i * N + j], ref);
            }
            free(A), free(B), free(C0), free(A32), free(B32), free(c1), free(c2), free(f1), free(f2);
        }
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

/* Products split by rows take chunks, a thread packing op(B) once for all of its chunks of a
 * product (tensor/gemm.c, chunked): two products one after another, of one shape but with
 * different op(B)s (transposed, so packed), on 2 threads of uneven speeds, each give the
 * 1-thread bits: the second does not reuse the first's packed op(B). */
Test(gemm, chunked_rows_pack_each_products_own_b)
{
    int saved = pg_num_threads();
    const int64_t M = 1000, N = 128, K = 256;
    double *a64 = rand_buf(M * K, 71), *b64[2];
    float *A = to_f32(a64, M * K), *B[2], *one[2];
    for (int i = 0; i < 2; i++) {
        b64[i] = rand_buf(K * N, 72 + (uint64_t)i);
        B[i] = to_f32(b64[i], K * N);
        one[i] = gemm_on_threads_f32(1, false, true, M, N, K, A, B[i]);
    }
    cr_assert_eq(pg_set_num_threads(2), 0);
    pg_balance was = pg_parallel_balance(PG_BALANCE_FIXED);
    const double speeds[2][2] = {{0.3, 1.7}, {1.7, 0.3}};
    for (int c = 0; c < 2; c++) {
        cr_assert_eq(pg_parallel_set_speeds(speeds[c], 2), 0);
        for (int i = 0; i < 2; i++) {
            float *two = gemm_on_threads_f32(2, false, true, M, N, K, A, B[i]);
            cr_assert(!memcmp(one[i], two, (size_t)(M * N) * sizeof *two), "product %d, speeds %g : %g: not the "
                      "1-thread bits", i, speeds[c][0], speeds[c][1]);
            free(two);
        }
    }
    pg_parallel_balance(was);
    cr_assert_eq(pg_parallel_set_speeds((const double[]){1, 1}, 2), 0);
    for (int i = 0; i < 2; i++)
        free(b64[i]), free(B[i]), free(one[i]);
    free(a64), free(A);
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

/* A weight gradient's shape (K >= 2 KC and >= 4 max(M, N)) is summed in two halves of K
 * whatever the thread count (tensor/gemm.c, split_k_at): the same bits on 1, 2 and 4
 * threads (4: each half split again by rows or columns), ragged halves (2100 = 1024 +
 * 1076), a gate's weight gradient (4 x 128, 2^21 flops: split for the memory it reads),
 * the halves' sum on the pool (264 rows of 128), beta and alpha applied once, and the
 * naive sum's value. */
Test(gemm, split_k_same_bits_on_1_2_4_threads)
{
    int saved = pg_num_threads();
    const int64_t shapes[][3] = {{70, 40, 2100}, {128, 128, 2048}, {9, 300, 4096}, {4, 128, 2048}, {264, 128, 2048}};
    for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        double *A = rand_buf(M * K, 900 + s), *B = rand_buf(K * N, 910 + s), *C0 = rand_buf(M * N, 920 + s);
        float *A32 = to_f32(A, M * K), *B32 = to_f32(B, K * N);
        bool ta = s != 1, tb = s == 2;
        double *c1 = gemm_on_threads(1, ta, tb, M, N, K, A, B, C0);
        float *f1 = gemm_on_threads_f32(1, ta, tb, M, N, K, A32, B32);
        for (int threads = 2; threads <= 4; threads += 2) {
            double *c = gemm_on_threads(threads, ta, tb, M, N, K, A, B, C0);
            float *f = gemm_on_threads_f32(threads, ta, tb, M, N, K, A32, B32);
            cr_assert(!memcmp(c1, c, (size_t)(M * N) * sizeof *c), "f64 %lldx%lldx%lld differs on %d threads",
                      (long long)M, (long long)N, (long long)K, threads);
            cr_assert(!memcmp(f1, f, (size_t)(M * N) * sizeof *f), "f32 %lldx%lldx%lld differs on %d threads",
                      (long long)M, (long long)N, (long long)K, threads);
            free(c), free(f);
        }
        for (int64_t i = 0; i < M; i += M / 3 + 1)
            for (int64_t j = 0; j < N; j += N / 3 + 1) {
                double ref = 0;
                for (int64_t p = 0; p < K; p++)
                    ref += (ta ? A[p * M + i] : A[i * K + p]) * (tb ? B[j * K + p] : B[p * N + j]);
                cr_assert(fabs(c1[i * N + j] - (0.5 * ref - C0[i * N + j])) <= 1e-12 * (double)K,
                          "f64 C[%lld,%lld] = %.17g, expected %.17g", (long long)i, (long long)j, c1[i * N + j],
                          0.5 * ref - C0[i * N + j]);
                cr_assert(fabs(f1[i * N + j] - ref) <= 1e-5 * (double)K, "f32 C[%lld,%lld] = %.9g, expected %.17g",
                          (long long)i, (long long)j, (double)f1[i * N + j], ref);
            }
        free(A), free(B), free(C0), free(A32), free(B32), free(c1), free(f1);
    }
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

Test(gemm, degenerate_sizes)
{
    /* K = 0: C = beta C, and beta 0 writes zeros over NaN; M or N = 0: nothing */
    double C[6] = {NAN, NAN, NAN, NAN, NAN, NAN}, A[1] = {7}, B[1] = {5};
    pg_gemm_f64(false, false, 2, 3, 0, 1.0, A, 1, B, 3, 0.0, C, 3);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(C[i], 0.0);
    double D[4] = {1, 2, 3, 4};
    pg_gemm_f64(false, false, 2, 2, 0, 1.0, A, 1, B, 2, 3.0, D, 2);
    cr_assert(D[0] == 3 && D[1] == 6 && D[2] == 9 && D[3] == 12);
    float E[2] = {NAN, NAN};
    pg_gemm_f32(true, true, 0, 2, 3, 1.0f, NULL, 1, NULL, 3, 0.0f, E, 2);
    cr_assert(isnan(E[0]) && isnan(E[1]), "M = 0 touches nothing");
    /* alpha 0 does not read A or B (NaN there) */
    double An[4] = {NAN, NAN, NAN, NAN}, F[4] = {1, 1, 1, 1};
    pg_gemm_f64(false, false, 2, 2, 2, 0.0, An, 2, An, 2, 0.5, F, 2);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(F[i], 0.5);
}

/* pg_gemm_bias: C = alpha op(A) op(B) + bias in every row, the same bits as C filled
 * with the bias rows and pg_gemm with beta 1 (what pg_affine did before), for every
 * path: ragged and full tiles, operands in place and packed, K over several blocks
 * (the bias joins the first), 1 and 2 threads, f32 and f64; K = 0 gives the bias rows */
static void check_gemm_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int threads, uint64_t seed)
{
    double *A = rand_buf(M * K, seed), *B = rand_buf(K * N, seed + 1), *bias = rand_buf(N, seed + 2);
    float *A32 = to_f32(A, M * K), *B32 = to_f32(B, K * N), *b32 = to_f32(bias, N);
    double *c = malloc((size_t)(M * N) * sizeof *c), *want = malloc((size_t)(M * N) * sizeof *want);
    float *c32 = malloc((size_t)(M * N) * sizeof *c32), *want32 = malloc((size_t)(M * N) * sizeof *want32);
    for (int64_t i = 0; i < M * N; i++) {
        want[i] = bias[i % N], want32[i] = b32[i % N];
        c[i] = NAN, c32[i] = NAN; /* never read */
    }
    cr_assert_eq(pg_set_num_threads(threads), 0);
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    pg_gemm_f64(ta, tb, M, N, K, 0.75, A, lda, B, ldb, 1.0, want, N);
    pg_gemm_bias_f64(ta, tb, M, N, K, 0.75, A, lda, B, ldb, bias, c, N);
    pg_gemm_f32(ta, tb, M, N, K, 1.0f, A32, lda, B32, ldb, 1.0f, want32, N);
    pg_gemm_bias_f32(ta, tb, M, N, K, 1.0f, A32, lda, B32, ldb, b32, c32, N);
    cr_assert(!memcmp(c, want, (size_t)(M * N) * sizeof *c), "f64 M %lld N %lld K %lld ta %d tb %d, %d threads",
              (long long)M, (long long)N, (long long)K, ta, tb, threads);
    cr_assert(!memcmp(c32, want32, (size_t)(M * N) * sizeof *c32), "f32 M %lld N %lld K %lld ta %d tb %d, %d threads",
              (long long)M, (long long)N, (long long)K, ta, tb, threads);
    free(A), free(B), free(bias), free(A32), free(B32), free(b32), free(c), free(want), free(c32), free(want32);
}

Test(gemm, bias_rows_same_bits_as_prefilled_c)
{
    int saved = pg_num_threads();
    const int64_t shapes[][3] = {{7, 5, 3},      {30, 64, 9},  {17, 1040, 3}, {20, 32, 1100}, {200, 96, 900},
                                 {2048, 40, 128}, {13, 1, 600}, {5, 9, 0},     {70, 40, 2100}}; /* last: split K */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            check_gemm_bias(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1 + (int)((s + t) % 2),
                            700 + 10 * s + t);
    cr_assert_eq(pg_set_num_threads(saved), 0);
    float C[2] = {1, 2}, A[1] = {1};
    pg_gemm_bias_f32(false, false, 1, 2, 1, 1.0f, A, 1, A, 2, NULL, C, 2);
    cr_assert(strstr(pg_last_error(), "pg_gemm_bias_f32: bias is NULL"), "%s", pg_last_error());
    cr_assert(C[0] == 1 && C[1] == 2, "C untouched");
}

/* ---- pg_matmul forward --------------------------------------------------------------- */

/* a = [[-1, -0.5, 0], [0.5, 1, 1.5]], b = [[1, 2], [3, -1], [0.5, 4]];
 * torch: a @ b = [[-2.5, -1.5], [4.25, 6.0]] (also by hand) */
Test(matmul, forward_all_transposes)
{
    pg_tensor *a = T64(PG_SHAPE(2, 3), -1, -0.5, 0, 0.5, 1, 1.5);
    pg_tensor *at = T64(PG_SHAPE(3, 2), -1, 0.5, -0.5, 1, 0, 1.5); /* a^T stored */
    pg_tensor *b = T64(PG_SHAPE(3, 2), 1, 2, 3, -1, 0.5, 4);
    pg_tensor *bt = T64(PG_SHAPE(2, 3), 1, 3, 0.5, 2, -1, 4); /* b^T stored */
    pg_tensor *ys[4] = {pg_matmul(NULL, a, b, false, false), pg_matmul(NULL, at, b, true, false),
                        pg_matmul(NULL, a, bt, false, true), pg_matmul(NULL, at, bt, true, true)};
    for (int i = 0; i < 4; i++) {
        assert_shape(ys[i], PG_SHAPE(2, 2));
        ASSERT_VALUES(ys[i], 1e-15, -2.5, -1.5, 4.25, 6.0);
    }
    free_all(4, ys);
    free_all(4, (pg_tensor *[]){a, at, b, bt});
}

/* A = (arange(12).reshape(2,1,2,3) - 5) / 4, B = arange(18).reshape(3,3,2) * 0.3 - 2;
 * values of A @ B from torch 1.13 (float64) */
Test(matmul, forward_batch_broadcast_values)
{
    pg_tensor *a = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, 1, 2, 3));
    pg_tensor *b = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(3, 3, 2));
    pg_fill_arange(a, -5.0 / 4, 0.25);
    pg_fill_arange(b, -2, 0.3);
    pg_tensor *y = pg_matmul(NULL, a, b, false, false);
    assert_shape(y, PG_SHAPE(2, 3, 2, 2));
    ASSERT_VALUES(y, 1e-14, 4.5, 3.6, 1.35, 1.125, -0.8999999999999997, -1.7999999999999998, 1.1102230246251565e-16,
                  -0.22499999999999998, -6.299999999999999, -7.199999999999999, -1.3499999999999999, -1.575, -1.8,
                  -1.35, -4.95, -3.825, 0.8999999999999999, 1.3499999999999996, 1.7999999999999998,
                  2.9249999999999994, 3.5999999999999996, 4.05, 8.549999999999999, 9.675);
    free_all(3, (pg_tensor *[]){a, b, y});
}

/* Reference batched matmul by index arithmetic (pg_get), any transposes and
 * broadcast batch dims; out has the expected shape already. */
static void ref_matmul(const pg_tensor *a, const pg_tensor *b, bool ta, bool tb, pg_tensor *out)
{
    int nb = out->ndim - 2;
    int64_t M = out->shape[nb], N = out->shape[nb + 1], K = a->shape[a->ndim - (ta ? 2 : 1)];
    int64_t nbatch = M > 0 && N > 0 ? out->numel / (M * N) : 0;
    for (int64_t z = 0; z < nbatch; z++) {
        /* batch multi-index of z, mapped into a and b with broadcasting */
        int64_t rem = z, za = 0, zb = 0, sa = 1, sb = 1;
        for (int d = nb - 1; d >= 0; d--) {
            int64_t i = rem % out->shape[d];
            rem /= out->shape[d];
            int da = d - (nb - (a->ndim - 2)), db = d - (nb - (b->ndim - 2));
            if (da >= 0) {
                za += (a->shape[da] == 1 ? 0 : i) * sa;
                sa *= a->shape[da];
            }
            if (db >= 0) {
                zb += (b->shape[db] == 1 ? 0 : i) * sb;
                sb *= b->shape[db];
            }
        }
        int64_t lda = a->shape[a->ndim - 1], ldb = b->shape[b->ndim - 1];
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t p = 0; p < K; p++)
                    s += pg_get(a, za * M * K + (ta ? p * lda + i : i * lda + p)) *
                         pg_get(b, zb * K * N + (tb ? j * ldb + p : p * ldb + j));
                pg_set(out, z * M * N + i * N + j, s);
            }
    }
}

typedef struct mm_case {
    int an, bn;
    int64_t ashape[5], bshape[5];
    int on;
    int64_t oshape[5];
} mm_case;

/* shapes are given untransposed (a: ..., M, K; b: ..., K, N) */
static const mm_case BCAST[] = {
    {4, 3, {2, 1, 3, 4}, {5, 4, 2}, 4, {2, 5, 3, 2}}, /* both broadcast */
    {2, 3, {3, 4}, {2, 4, 5}, 3, {2, 3, 5}},          /* a 2-D */
    {3, 2, {2, 3, 4}, {4, 5}, 3, {2, 3, 5}},          /* b 2-D: batch folded into rows */
    {4, 4, {2, 3, 1, 4}, {1, 3, 4, 2}, 4, {2, 3, 1, 2}}, /* M = 1, both broadcast */
    {3, 3, {1, 3, 4}, {2, 4, 3}, 3, {2, 3, 3}},       /* a batch 1 */
};

/* the stored shape of an operand: its last two dims swapped when transposed */
static pg_tensor *operand(int n, const int64_t *shape, bool trans, uint64_t seed)
{
    int64_t s[5];
    memcpy(s, shape, (size_t)n * sizeof *s);
    if (trans) {
        s[n - 2] = shape[n - 1];
        s[n - 1] = shape[n - 2];
    }
    return rand_param(n, s, -1, 1, seed);
}

Test(matmul, broadcast_all_transposes_against_reference)
{
    for (size_t c = 0; c < sizeof BCAST / sizeof BCAST[0]; c++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            const mm_case *k = &BCAST[c];
            pg_tensor *a = operand(k->an, k->ashape, ta, 7 * c + t), *b = operand(k->bn, k->bshape, tb, 100 + c);
            pg_tensor *y = pg_matmul(NULL, a, b, ta, tb);
            assert_shape(y, k->on, k->oshape);
            pg_tensor *ref = pg_tensor_empty(NULL, PG_F64, k->on, k->oshape);
            ref_matmul(a, b, ta, tb, ref);
            for (int64_t i = 0; i < ref->numel; i++)
                cr_assert(fabs(pg_get(y, i) - pg_get(ref, i)) < 1e-13, "case %zu ta %d tb %d element %lld: %g vs %g",
                          c, ta, tb, (long long)i, pg_get(y, i), pg_get(ref, i));
            free_all(4, (pg_tensor *[]){a, b, y, ref});
        }
}

Test(matmul, f32_matches_f64)
{
    pg_tensor *a = rand_param(PG_SHAPE(2, 33, 65), -1, 1, 3), *b = rand_param(PG_SHAPE(65, 17), -1, 1, 4);
    pg_tensor *a32 = pg_tensor_cast(NULL, a, PG_F32), *b32 = pg_tensor_cast(NULL, b, PG_F32);
    pg_tensor *y = pg_matmul(NULL, a, b, false, false), *y32 = pg_matmul(NULL, a32, b32, false, false);
    cr_assert_eq(y32->dtype, PG_F32);
    assert_shape(y32, PG_SHAPE(2, 33, 17));
    for (int64_t i = 0; i < y->numel; i++)
        cr_assert(fabs(pg_get(y32, i) - pg_get(y, i)) < 1e-5, "element %lld", (long long)i);
    free_all(6, (pg_tensor *[]){a, b, a32, b32, y, y32});
}

/* ---- gradients --------------------------------------------------------------------- */

typedef struct flags {
    bool ta, tb;
} flags;

static pg_tensor *mm_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const flags *f = ctx;
    return pg_matmul(g, in[0], in[1], f->ta, f->tb);
}

Test(matmul, gradcheck_transposes)
{
    /* odd sizes M 3, K 5, N 4 with a batch of 2 */
    const int64_t a_nt[3] = {2, 3, 5}, b_nt[3] = {2, 5, 4};
    for (int t = 0; t < 4; t++) {
        flags f = {t & 1, t & 2};
        pg_tensor *a = operand(3, a_nt, f.ta, 11 + t), *b = operand(3, b_nt, f.tb, 21 + t);
        assert_gradcheck(mm_fn, 2, (pg_tensor *[]){a, b}, &f, NULL);
        free_all(2, (pg_tensor *[]){a, b});
    }
}

Test(matmul, gradcheck_broadcast)
{
    for (size_t c = 0; c < sizeof BCAST / sizeof BCAST[0]; c++)
        for (int t = 0; t < 4; t++) {
            flags f = {t & 1, t & 2};
            const mm_case *k = &BCAST[c];
            pg_tensor *a = operand(k->an, k->ashape, f.ta, 31 + c), *b = operand(k->bn, k->bshape, f.tb, 41 + t);
            pg_gradcheck_result r = pg_gradcheck(mm_fn, 2, (pg_tensor *[]){a, b}, &f, NULL);
            cr_expect(r.ok, "case %zu ta %d tb %d: %s", c, f.ta, f.tb, r.message);
            free_all(2, (pg_tensor *[]){a, b});
        }
}

static pg_tensor *gram_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_matmul(g, in[0], in[0], false, true); /* x x^T: both gradients land in one tensor */
}

Test(matmul, gradcheck_same_operand_and_one_input)
{
    pg_tensor *x = rand_param(PG_SHAPE(3, 4), -1, 1, 5);
    assert_gradcheck(gram_fn, 1, &x, NULL, NULL);
    /* only b requires grad */
    pg_tensor *a = rand_param(PG_SHAPE(2, 3, 4), -1, 1, 6), *b = rand_param(PG_SHAPE(4, 2), -1, 1, 7);
    a->requires_grad = false;
    flags f = {false, false};
    assert_gradcheck(mm_fn, 2, (pg_tensor *[]){a, b}, &f, NULL);
    free_all(3, (pg_tensor *[]){x, a, b});
}

/* hand-checked: y = a b with a (1,2) = [1, 2], b (2,1) = [3, 4]; dy = 1 gives
 * da = b^T = [3, 4], db = a^T = [1, 2]; grads accumulate across backward calls */
Test(matmul, gradient_values)
{
    pg_tensor *a = T64(PG_SHAPE(1, 2), 1, 2), *b = T64(PG_SHAPE(2, 1), 3, 4);
    a->requires_grad = b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    for (int step = 0; step < 2; step++) {
        pg_graph_reset(g);
        pg_tensor *y = pg_matmul(g, a, b, false, false);
        ASSERT_VALUES(y, 0, 11);
        cr_assert_eq(pg_backward(g, y), 0, "%s", pg_graph_error(g));
    }
    ASSERT_VALUES(a->grad, 0, 6, 8);
    ASSERT_VALUES(b->grad, 0, 2, 4);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){a, b});
}

/* A batch of products goes over the pool a batch to a thread (autograd/op_matmul.c, mm_run):
 * for a full batch, 3 batches on 2 threads (products too small for the pool), and a
 * broadcast operand (its gradient summed batch after batch, on one thread), the product
 * and both gradients have the same bits on 1 and 2 threads, and batch 5 of the full case
 * (the second thread's) equals its own product computed alone. */
typedef struct batch_case {
    int64_t ab, bb, M, K, N; /* a (ab, M, K), b (bb, K, N) */
    bool ta, tb;
} batch_case;

static void batch_run(void *ctx, pg_tensor **res)
{
    const batch_case *c = ctx;
    pg_tensor *a = operand(3, (int64_t[]){c->ab, c->M, c->K}, c->ta, 70);
    pg_tensor *b = operand(3, (int64_t[]){c->bb, c->K, c->N}, c->tb, 71);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_matmul(g, a, b, c->ta, c->tb);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, y, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, y);
    res[1] = take_grad(a);
    res[2] = take_grad(b);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){a, b});
}

Test(matmul, batches_on_the_pool_same_bits)
{
    const batch_case cases[] = {{8, 8, 64, 32, 64, false, true}, {3, 3, 20, 7, 9, true, false},
                                {8, 1, 64, 32, 64, false, false}};
    const char *names[] = {"y", "da", "db"};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        assert_same_bits_on_1_and_2_threads(batch_run, (void *)&cases[k], 3, names);
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(2), 0);
    pg_tensor *res[3];
    batch_run((void *)&cases[0], res);
    pg_tensor *a = operand(3, (int64_t[]){8, 64, 32}, false, 70), *b = operand(3, (int64_t[]){8, 32, 64}, true, 71);
    pg_tensor *a5 = pg_narrow(NULL, a, 0, 5, 1), *b5 = pg_narrow(NULL, b, 0, 5, 1);
    pg_tensor *y5 = pg_matmul(NULL, a5, b5, false, true);
    cr_assert_not_null(y5);
    for (int64_t i = 0; i < y5->numel; i++)
        cr_assert_eq(pg_get(res[0], 5 * y5->numel + i), pg_get(y5, i), "batch 5 element %lld", (long long)i);
    cr_assert_eq(pg_set_num_threads(saved), 0);
    free_all(8, (pg_tensor *[]){res[0], res[1], res[2], a, b, a5, b5, y5});
}

Test(matmul, empty_dims)
{
    /* K = 0 gives zeros; a zero batch gives an empty result */
    pg_tensor *a = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, 0)), *b = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(0, 3));
    pg_tensor *y = pg_matmul(NULL, a, b, false, false);
    assert_shape(y, PG_SHAPE(2, 3));
    ASSERT_VALUES(y, 0, 0, 0, 0, 0, 0, 0);
    pg_tensor *c = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(0, 2, 2)), *d = T64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    pg_tensor *z = pg_matmul(NULL, c, d, false, false);
    assert_shape(z, PG_SHAPE(0, 2, 2));
    free_all(6, (pg_tensor *[]){a, b, y, c, d, z});
}

Test(matmul, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_tensor_full(NULL, PG_F64, PG_SHAPE(4, 8), 1);
    pg_tensor *b = pg_tensor_full(NULL, PG_F64, PG_SHAPE(16, 3), 1);
    pg_tensor *v = pg_tensor_full(NULL, PG_F64, PG_SHAPE(8), 1);
    pg_tensor *f = pg_tensor_full(NULL, PG_F32, PG_SHAPE(8, 3), 1);
    pg_tensor *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(8, 3), 0);
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 4, 8), 1);
    pg_tensor *y = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3, 8, 3), 1);
    ASSERT_FAILS(pg_matmul(g, NULL, b, false, false), "pg_matmul: a is NULL");
    ASSERT_FAILS(pg_matmul(g, a, NULL, false, false), "pg_matmul: b is NULL");
    ASSERT_FAILS(pg_matmul(g, a, b, false, false), "pg_matmul: inner dims differ: a is f64[4,8], b is f64[16,3]");
    ASSERT_FAILS(pg_matmul(g, a, b, true, false),
                 "pg_matmul: inner dims differ: a is f64[4,8] transposed, b is f64[16,3]");
    ASSERT_FAILS(pg_matmul(g, a, b, false, true),
                 "pg_matmul: inner dims differ: a is f64[4,8], b is f64[16,3] transposed");
    ASSERT_FAILS(pg_matmul(g, a, v, false, false),
                 "pg_matmul: both operands must be at least 2-D: a is f64[4,8], b is f64[8]");
    ASSERT_FAILS(pg_matmul(g, a, f, false, false), "pg_matmul: dtypes differ: a is f64[4,8], b is f32[8,3]");
    ASSERT_FAILS(pg_matmul(g, a, ids, false, false), "pg_matmul: b must be f32 or f64, got i64[8,3]");
    ASSERT_FAILS(pg_matmul(g, x, y, false, false),
                 "pg_matmul: batch dims do not broadcast: a is f64[2,4,8], b is f64[3,8,3]");
    cr_assert_str_eq(pg_graph_error(g), "pg_matmul: a is NULL", "the graph keeps the first error");
    free_all(7, (pg_tensor *[]){a, b, v, f, ids, x, y});
    pg_graph_free(g);
}
