/* GEMM: C = alpha * op(A) * op(B) + beta * C, row-major (see gemm.h).
 *
 * The classic blocked scheme (Goto and van de Geijn, "Anatomy of
 * High-Performance Matrix Multiplication", 2008):
 *
 *   for jc in N by NC:            a KC x NC panel of op(B) is packed into Bp
 *     for pc in K by KC:
 *       pack op(B)[pc:+KC, jc:+NC] into Bp as NR-wide column slivers
 *       for ic in M by MC:          an MC x KC block of op(A) is packed into Ap
 *         pack op(A)[ic:+MC, pc:+KC] into Ap as MR-tall row slivers (in L2)
 *         for jr in NC by NR:       one KC x NR sliver of Bp (L1 / L2)
 *           for ir in MC by MR:
 *             micro-kernel: C[ir:+MR, jr:+NR] (+)= alpha * Ap sliver * Bp sliver
 *
 * Packing makes both operands contiguous whatever the transposes. When an
 * operand is already suitable it is read in place instead (the micro-kernel
 * takes strides): op(A) always can be (the kernel broadcasts one element per
 * row), op(B) when it is not transposed and N (and each thread's block of
 * columns) is a multiple of NR. Whether to pack is decided from the shapes and
 * the split (plan_packing); packed or in place, the kernel's arithmetic is the
 * same, so the result does not depend on it.
 *
 * SIMD builds have a micro-kernel per row count 1..MR, so a ragged last row
 * sliver costs only its own rows; a ragged last column sliver goes through a
 * local MR x NR tile that holds C's values, so every element sees the same
 * arithmetic wherever it lies. beta is applied on the first K block only
 * (later blocks accumulate with beta 1), and beta == 0 never reads C.
 *
 * Threads: a product of 2^22 flops or more is cut into one block of C rows
 * (or of columns when N > M) per thread on pg_parallel_slices, at the multiples
 * of MR (NR) nearest the threads' shares (even, or sized to the cores' measured
 * speeds); each thread runs the scheme above on its block with its own packing
 * buffers. The K blocking never depends on the split, so each element is summed
 * in the same order wherever the blocks are cut and for every thread count:
 * identical results. A weight gradient's shape (K >= 2 KC and >= 4 max(M, N))
 * is summed in two halves of K on every thread count (split_k_at), the two
 * halves' blocks side by side cut into one slice per thread (a half each on two
 * threads of equal speed), added once per element.
 *
 * Micro-kernels, chosen at build time:
 *   AVX-512 (__AVX512F__):      14 x 32 f32, 14 x 16 f64 (28 zmm accumulators)
 *   AVX2 + FMA:                 6 x 16 f32, 6 x 8 f64 (12 ymm accumulators)
 *   portable C (SSE2 baseline): 4 x 16 f32, 4 x 4 f64, no FMA contraction.
 * FMA kernels round once per multiply-add where the portable one rounds twice,
 * so builds differ from each other in the last bits (each is deterministic). */
#include "gemm.h"
#include "tensor.h"

#include "prefetch.h"
#include "simd_transpose.h"
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define VEC_KERNELS 1
#define MR_F32 14
#define NR_F32 32
#define MR_F64 14
#define NR_F64 16
#define V_f32 __m512
#define V_f64 __m512d
#define SET1_f32 _mm512_set1_ps
#define SET1_f64 _mm512_set1_pd
#define ZERO_f32 _mm512_setzero_ps
#define ZERO_f64 _mm512_setzero_pd
#define LOAD_f32 _mm512_loadu_ps
#define LOAD_f64 _mm512_loadu_pd
#define STORE_f32 _mm512_storeu_ps
#define STORE_f64 _mm512_storeu_pd
#define FMA_f32 _mm512_fmadd_ps
#define FMA_f64 _mm512_fmadd_pd
#define MUL_f32 _mm512_mul_ps
#define MUL_f64 _mm512_mul_pd
#define LANES_f32 16
#define LANES_f64 8
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VEC_KERNELS 1
#define MR_F32 6
#define NR_F32 16
#define MR_F64 6
#define NR_F64 8
#define V_f32 __m256
#define V_f64 __m256d
#define SET1_f32 _mm256_set1_ps
#define SET1_f64 _mm256_set1_pd
#define ZERO_f32 _mm256_setzero_ps
#define ZERO_f64 _mm256_setzero_pd
#define LOAD_f32 _mm256_loadu_ps
#define LOAD_f64 _mm256_loadu_pd
#define STORE_f32 _mm256_storeu_ps
#define STORE_f64 _mm256_storeu_pd
#define FMA_f32 _mm256_fmadd_ps
#define FMA_f64 _mm256_fmadd_pd
#define MUL_f32 _mm256_mul_ps
#define MUL_f64 _mm256_mul_pd
#define LANES_f32 8
#define LANES_f64 4
#else /* SSE2 baseline: plain C, vectorised by the compiler */
#define VEC_KERNELS 0
#define MR_F32 4
#define NR_F32 16
#define MR_F64 4
#define NR_F64 4
#endif

/* Cache blocks (elements), measured best on Zen 5 (48 KiB L1D, 1 MiB L2): the
 * MC x KC block of op(A) (168 KiB f32) and the KC x NR sliver of op(B) (64
 * KiB) stream from L2 into the kernel, the KC x NC panel of op(B) from L3. A
 * long KC halves the passes over C against KC 256 (1024^3: 101 vs 95
 * GFLOP/s); MC is a multiple of every MR (14, 6, 4), NC of every NR. KC is
 * KC_BYTES of a row: 512 floats, 256 doubles (the same bytes of A's slivers:
 * at 512 doubles the float64 step's products were 7-17% slower, full-width
 * AVX-512 EPYC, 1 thread: 384x2048x128 tn 85 vs 100 GFLOP/s, 128x2048x128 tn
 * 87 vs 99, 2048x512x128 79 vs 84; 1024^3 the same). On Zen 3 (32 KiB L1D, 512 KiB
 * L2, AVX2), where a KC x 16 sliver of op(B) fills L1D, KC 1024 bytes was no better:
 * the toy's products took 0.93-1.01 as long at 2048 bytes, alternated call by call. */
#ifndef KC_BYTES
#define KC_BYTES 2048
#endif
#define KC_OF(elem) ((int64_t)(KC_BYTES / (elem)))
#ifndef MC
#define MC 84
#endif
#ifndef NC
#define NC 1024
#endif
/* see plan_packing */
#ifndef WIDE_BYTES
#define WIDE_BYTES 4096
#endif
#ifndef B_ROWS_BYTES
#define B_ROWS_BYTES 2048
#endif
/* below this cost (gemm_cost: flops, with the padding and memory traffic of narrow shapes) a
 * product stays on the calling thread: 2^22 flops take ~20-40 us on a core, a dispatch to the
 * pool's spinning workers a few us (10-45 us if they slept). Measured on a 2-core EPYC, 2
 * threads: FIRE's step 41.4 -> 38.9 ms (its 65536 x 32 x 4 products of ~2^24 flops had stayed
 * on one thread at 2^25), rotary 26.5 -> 25.6 ms; 2^20 gave nothing more. */
#ifndef PARALLEL_MIN_FLOPS
#define PARALLEL_MIN_FLOPS (1 << 22)
#endif

/* Micro-kernels stay separate functions: inlined into their callers, gcc's
 * register allocation of the accumulator block varies with the context. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---- micro-kernels ------------------------------------------------------------
 * Every kernel: c[0:R, 0:NR] = alpha * sum_p a(:, p) b(p, :) + beta * c, c not
 * read when beta == 0; with bias (NR entries) instead + 1 * bias in every row (an
 * fma by 1, so the same bits as beta 1 on a c preloaded with the bias). Row i of op(A) at step p is a[i * ars + p * aks] (packed
 * slivers: ars 1, aks MR); row p of the op(B) sliver starts at b + p * bks. */
#define KERNEL_ARGS(T)                                                                                                 \
    int64_t kc, const T *restrict a, int64_t ars, int64_t aks, const T *restrict b, int64_t bks, T alpha, T beta,      \
        const T *restrict bias, T *restrict c, int64_t ldc

#if VEC_KERNELS
/* R rows x NV vectors of accumulators; per k NV vectors of the B rows (vectors 0, 1 at b, 2,
 * 3 at b2) and one broadcast A element per row. ARS / AKS: the A strides (constants for
 * packed slivers, so the addressing folds); UNROLL: a pragma for the loop over k, or nothing.
 * The body of both kernels below. */
#define VKERNEL_BODY(T, sfx, R, ARS, AKS, NV, b2, UNROLL)                                                              \
    (void)ars, (void)aks;                                                                                              \
    V_##sfx acc[R][NV];                                                                                                \
    _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)          \
        acc[i][v] = ZERO_##sfx();                                                                                      \
    _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) /* the C tile, read or written at the end */                  \
    {                                                                                                                  \
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);                                                        \
        _mm_prefetch((const char *)(c + i * ldc + NV * LANES_##sfx - 1), _MM_HINT_T0);                                 \
    }                                                                                                                  \
    UNROLL for (int64_t p = 0; p < kc; p++, a += (AKS), b += bks, b2 += bks) {                                         \
        V_##sfx bv[NV];                                                                                                \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                                                          \
            bv[v] = LOAD_##sfx((v < 2 ? b : b2) + v % 2 * LANES_##sfx);                                                \
        _Pragma("GCC unroll 16") for (int i = 0; i < R; i++)                                                           \
        {                                                                                                              \
            V_##sfx ai = SET1_##sfx(a[i * (ARS)]);                                                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] = FMA_##sfx(ai, bv[v], acc[i][v]);          \
        }                                                                                                              \
    }                                                                                                                  \
    V_##sfx va = SET1_##sfx(alpha), vb = SET1_##sfx(beta), one = SET1_##sfx((T)1), bs[NV];                             \
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) bs[v] = bias ? LOAD_##sfx(bias + v * LANES_##sfx)             \
                                                                      : ZERO_##sfx();                                  \
    _Pragma("GCC unroll 16") for (int i = 0; i < R; i++)                                                               \
    {                                                                                                                  \
        T *ci = c + i * ldc;                                                                                           \
        V_##sfx r[NV];                                                                                                 \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) r[v] = MUL_##sfx(va, acc[i][v]);                          \
        if (bias) {                                                                                                    \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) r[v] = FMA_##sfx(one, bs[v], r[v]);                   \
        } else if (beta != 0) { /* beta == 0 never reads C */                                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                                                       \
                r[v] = FMA_##sfx(vb, LOAD_##sfx(ci + v * LANES_##sfx), r[v]);                                          \
        }                                                                                                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) STORE_##sfx(ci + v * LANES_##sfx, r[v]);                  \
    }

/* R rows over one sliver of op(B): 2 vectors a row */
#define DEFINE_VKERNEL(T, sfx, name, R, ARS, AKS, UNROLL)                                                              \
    NOINLINE static void name(KERNEL_ARGS(T))                                                                          \
    {                                                                                                                  \
        const T *b2 = b; /* not read: NV 2 */                                                                          \
        VKERNEL_BODY(T, sfx, R, ARS, AKS, 2, b2, UNROLL)                                                               \
    }
/* The same for R <= 2 rows over two slivers of op(B) side by side (the second b2, C's and the
 * bias's columns NR on): 4 R accumulators where one sliver's 2 R leave the multiply-adds
 * waiting on each other's latency (a 128-row product ends in 2 rows: 128 = 21 x 6 + 2, 9 x 14
 * + 2). Each element's arithmetic is the one-sliver kernel's: the same bits. */
#define DEFINE_VKERNEL2(T, sfx, name, R, ARS, AKS)                                                                     \
    NOINLINE static void name(KERNEL_ARGS(T), const T *restrict b2)                                                    \
    {                                                                                                                  \
        VKERNEL_BODY(T, sfx, R, ARS, AKS, 4, b2, )                                                                     \
    }
DEFINE_VKERNEL2(float, f32, kp2_f32_1, 1, 1, MR_F32)
DEFINE_VKERNEL2(float, f32, kp2_f32_2, 2, 1, MR_F32)
DEFINE_VKERNEL2(float, f32, ks2_f32_1, 1, ars, aks)
DEFINE_VKERNEL2(float, f32, ks2_f32_2, 2, ars, aks)
DEFINE_VKERNEL2(double, f64, kp2_f64_1, 1, 1, MR_F64)
DEFINE_VKERNEL2(double, f64, kp2_f64_2, 2, 1, MR_F64)
DEFINE_VKERNEL2(double, f64, ks2_f64_1, 1, ars, aks)
DEFINE_VKERNEL2(double, f64, ks2_f64_2, 2, ars, aks)

/* kp_<sfx>_<R>: packed A sliver; ks_<sfx>_<R>: op(A) read in place. With AVX2 the packed
 * kernels' loop over k is unrolled 4 times (a quarter of the loop's own additions, compare and
 * branch beside 12 multiply-adds): on the Zen 3, paired calls in one process, 1 thread, 1024^3
 * and the weight gradients (tn) 4-7% faster in float, 4-9% in double, the other toy products
 * within 1%; 2 threads 0-5%. Unrolling the in-place kernels too made `x W` 1.5% slower; the
 * AVX-512 kernels (28 accumulators) are left as they were, not measured. */
#if MR_F32 == 6
#define KP_UNROLL _Pragma("GCC unroll 4")
#else
#define KP_UNROLL
#endif
#define DEFINE_VKERNEL_PAIR(R, T, sfx, MR)                                                                             \
    DEFINE_VKERNEL(T, sfx, kp_##sfx##_##R, R, 1, MR, KP_UNROLL)                                                        \
    DEFINE_VKERNEL(T, sfx, ks_##sfx##_##R, R, ars, aks, )
#define KP_NAME(R, T, sfx, MR) kp_##sfx##_##R,
#define KS_NAME(R, T, sfx, MR) ks_##sfx##_##R,

#if MR_F32 == 14
#define FOR_ROWS(X, ...)                                                                                               \
    X(1, __VA_ARGS__) X(2, __VA_ARGS__) X(3, __VA_ARGS__) X(4, __VA_ARGS__) X(5, __VA_ARGS__) X(6, __VA_ARGS__)        \
    X(7, __VA_ARGS__) X(8, __VA_ARGS__) X(9, __VA_ARGS__) X(10, __VA_ARGS__) X(11, __VA_ARGS__) X(12, __VA_ARGS__)     \
    X(13, __VA_ARGS__) X(14, __VA_ARGS__)
#else
#define FOR_ROWS(X, ...)                                                                                               \
    X(1, __VA_ARGS__) X(2, __VA_ARGS__) X(3, __VA_ARGS__) X(4, __VA_ARGS__) X(5, __VA_ARGS__) X(6, __VA_ARGS__)
#endif

/* kernels_<sfx>[packed][R]: the kernel for R rows (index 0 unused) */
#define DEFINE_KERNELS(T, sfx, MR, NR)                                                                                 \
    FOR_ROWS(DEFINE_VKERNEL_PAIR, T, sfx, MR)                                                                          \
    typedef void (*kernel_##sfx##_fn)(KERNEL_ARGS(T));                                                                 \
    static const kernel_##sfx##_fn kernels_##sfx[2][MR + 1] = {{NULL, FOR_ROWS(KS_NAME, T, sfx, MR)},                 \
                                                               {NULL, FOR_ROWS(KP_NAME, T, sfx, MR)}};                 \
    typedef void (*kernel2_##sfx##_fn)(KERNEL_ARGS(T), const T *restrict b2);                                          \
    static const kernel2_##sfx##_fn kernels2_##sfx[2][3] = {{NULL, ks2_##sfx##_1, ks2_##sfx##_2},                      \
                                                            {NULL, kp2_##sfx##_1, kp2_##sfx##_2}};

#else /* portable */
/* An MR x NR block of accumulators updated by a rank-1 product per k, the NR
 * loop innermost over contiguous packed B: gcc -O3 vectorises it. Packed A
 * only (zero-padded rows), so one kernel serves every row count. */
#define DEFINE_KERNELS(T, sfx, MR_, NR_)                                                                               \
    NOINLINE static void kernel_full_##sfx(KERNEL_ARGS(T))                                                             \
    {                                                                                                                  \
        (void)ars, (void)aks;                                                                                          \
        T acc[MR_][NR_] = {{0}};                                                                                       \
        for (int64_t p = 0; p < kc; p++, a += MR_, b += bks) {                                                         \
            T bv[NR_];                                                                                                 \
            for (int j = 0; j < NR_; j++)                                                                              \
                bv[j] = b[j];                                                                                          \
            for (int i = 0; i < MR_; i++) {                                                                            \
                T ai = a[i];                                                                                           \
                for (int j = 0; j < NR_; j++)                                                                          \
                    acc[i][j] += ai * bv[j];                                                                           \
            }                                                                                                          \
        }                                                                                                              \
        for (int i = 0; i < MR_; i++)                                                                                  \
            for (int j = 0; j < NR_; j++)                                                                              \
                c[i * ldc + j] = bias      ? alpha * acc[i][j] + bias[j]                                               \
                                 : beta == 0 ? alpha * acc[i][j]                                                       \
                                             : alpha * acc[i][j] + beta * c[i * ldc + j];                              \
    }
#endif

/* ---- packing -----------------------------------------------------------------
 * Both operands become slivers of W columns (W = MR for op(A)^T, NR for op(B)):
 * X holds the n columns wanted over kc rows, and xp gets ceil(n/W) slivers of
 * (kc, W), element (p, j) of sliver s at xp[s * step + p * W + j], columns
 * past n zero. Each pack runs along the stored rows.
 * pack_rows_<W>: X stored (kc, n), row p at X + p * ldx: row p of the store is
 *   row p of every sliver, copied whole (a constant size W: inlined; a libc
 *   call a row cost a third of the AVX2 build's 128x2048x512 tn, and the
 *   sliver-by-sliver order, reading the store's columns, a fifth).
 * pack_cols_<W>: X stored (n, kc), column j at X + j * ldx: a transpose.
 * op(A) (mc, kc) is stored (kc, mc) when transposed: pack_a takes the row pack
 * then, the transpose otherwise; op(B) (kc, nc) is stored so when not
 * transposed: pack_b takes the row pack then. */
/* step: the elements from one sliver's start to the next. Back to back (kc * W)
 * every sliver would start on the same L1 set whenever kc * W * elem is a
 * multiple of 4 KiB (kc 512: every f32 sliver of 16 or 32 columns, and MR 6's
 * at 12 KiB), and a row pack, writing row p of all slivers in turn, would fight
 * over that set's 8 ways. A gap staggers the starts: MR * 8 elements for op(A)
 * (whole lines for MR 4, 6, 14; a_row_step is op(A)'s step per row, so the
 * sliver of rows i0 starts at i0 * (kc + 8)), a line for op(B). Measured: AVX2
 * 128x2048x512 tn 0.90 -> 0.99 of OpenBLAS-AVX2, alternated in one process;
 * other shapes within the noise. */
static int64_t a_row_step(int64_t kc) { return kc + 8; }
static int64_t b_sliver_step(int64_t kc, int64_t NR, size_t elem) { return kc * NR + 64 / (int64_t)elem; }

/* A row pack touches each line of the stored row PREFETCH_ROWS ahead (tensor/prefetch.h): the rows
 * are far apart (the packs of a transposed op(A) run on rows a multiple of 2 KiB
 * apart), and the hardware prefetchers left the copy waiting on L3 (AVX2 build,
 * 512x2048x128 tn, 1 thread: 0.95 -> 1.05 of OpenBLAS-AVX2; 4 rows 1.0). */
#define PREFETCH_ROWS 8

/* pack_cols with AVX-512: G columns of a sliver's rows at a time (G = 16 floats, 8
 * doubles), each group of G rows (the last padded with zeros) one G x G transpose in
 * registers (tensor/simd_transpose.h), stored a row of the sliver (G lanes, or the group's
 * rows masked) at a time, where the scalar loop stored one element at a time: the float64
 * step packs op(A) of its 2048 x 512 products (rows 4 KiB apart), and both dtypes op(B) of
 * every x W^T. Returns the columns done, a multiple of G, for w <= 2 G rows; the scalar
 * loop does the rest. Data moved, nothing computed: the same result. */
#if defined(__AVX512F__)
/* the w rows X (w, kc), row stride ldx, into the sliver xp (kc, W) */
#define DEFINE_PACK_COLS_VEC(T, sfx, V, G, MASK, LOAD, ZERO, STORE_MASKED, SQUARE)                                   \
    static int64_t pack_cols_vec_##sfx(int64_t kc, int64_t w, const T *X, int64_t ldx, T *restrict xp, int64_t W)   \
    {                                                                                                                  \
        int64_t p = 0;                                                                                                 \
        for (; w <= 2 * G && p + G <= kc; p += G)                                                                      \
            for (int64_t j0 = 0; j0 < w; j0 += G) {                                                                    \
                const int64_t rows = w - j0 < G ? w - j0 : G;                                                          \
                V r[G];                                                                                                \
                for (int64_t j = 0; j < G; j++)                                                                        \
                    r[j] = j < rows ? LOAD(X + (j0 + j) * ldx + p) : ZERO();                                           \
                SQUARE(r);                                                                                             \
                const MASK lanes = (MASK)((1u << rows) - 1);                                                           \
                for (int q = 0; q < G; q++)                                                                            \
                    STORE_MASKED(xp + (p + q) * W + j0, lanes, r[q]);                                                  \
            }                                                                                                          \
        return p;                                                                                                      \
    }
DEFINE_PACK_COLS_VEC(float, f32, __m512, 16, __mmask16, _mm512_loadu_ps, _mm512_setzero_ps, _mm512_mask_storeu_ps,
                     transpose16_f32)
DEFINE_PACK_COLS_VEC(double, f64, __m512d, 8, __mmask8, _mm512_loadu_pd, _mm512_setzero_pd, _mm512_mask_storeu_pd,
                     transpose8_f64)
#define PACK_COLS_VEC_f32(kc, w, X, ldx, xp, W) pack_cols_vec_f32(kc, w, X, ldx, xp, W)
#define PACK_COLS_VEC_f64(kc, w, X, ldx, xp, W) pack_cols_vec_f64(kc, w, X, ldx, xp, W)
#elif defined(__AVX2__)
/* The same with AVX2 (G = 8 floats, 4 doubles), a row of the sliver stored as G lanes
 * without a mask: where the group ends past the sliver's width (MR 6: 8 floats, or doubles
 * 4 .. 7), its last lanes are the zero rows' and land on the next row's first columns, which
 * a later store writes (the groups go last to first, the rows in order; the scalar loop
 * writes the rest) or the sliver's gap (a_row_step). */
#define DEFINE_PACK_COLS_YMM(T, sfx, V, G, LOAD, ZERO, STORE, SQUARE)                                                  \
    static int64_t pack_cols_vec_##sfx(int64_t kc, int64_t w, const T *X, int64_t ldx, T *restrict xp, int64_t W)   \
    {                                                                                                                  \
        int64_t p = 0;                                                                                                 \
        for (; w <= 2 * G && p + G <= kc; p += G)                                                                      \
            for (int64_t j0 = (w - 1) / G * G; j0 >= 0; j0 -= G) {                                                     \
                const int64_t rows = w - j0 < G ? w - j0 : G;                                                          \
                V r[G];                                                                                                \
                for (int64_t j = 0; j < G; j++)                                                                        \
                    r[j] = j < rows ? LOAD(X + (j0 + j) * ldx + p) : ZERO();                                           \
                SQUARE(r);                                                                                             \
                for (int q = 0; q < G; q++)                                                                            \
                    STORE(xp + (p + q) * W + j0, r[q]);                                                                \
            }                                                                                                          \
        return p;                                                                                                      \
    }
DEFINE_PACK_COLS_YMM(float, f32, __m256, 8, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps, transpose8_f32_ymm)
DEFINE_PACK_COLS_YMM(double, f64, __m256d, 4, _mm256_loadu_pd, _mm256_setzero_pd, _mm256_storeu_pd,
                     transpose4_f64_ymm)
#define PACK_COLS_VEC_f32(kc, w, X, ldx, xp, W) pack_cols_vec_f32(kc, w, X, ldx, xp, W)
#define PACK_COLS_VEC_f64(kc, w, X, ldx, xp, W) pack_cols_vec_f64(kc, w, X, ldx, xp, W)
#else
#define PACK_COLS_VEC_f32(kc, w, X, ldx, xp, W) 0
#define PACK_COLS_VEC_f64(kc, w, X, ldx, xp, W) 0
#endif

#define DEFINE_PACK_WIDTH(T, sfx, W, tag)                                                                              \
    static void pack_rows_##sfx##_##tag(int64_t kc, int64_t n, const T *X, int64_t ldx, T *restrict xp, int64_t step) \
    {                                                                                                                  \
        const int64_t full = n / W * W; /* columns of the whole slivers */                                             \
        T *ragged = xp + full / W * step;                                                                              \
        if (full < n)                                                                                                  \
            memset(ragged, 0, (size_t)(kc * W) * sizeof(T)); /* the ragged sliver's padding */                         \
        for (int64_t p = 0; p < kc; p++) {                                                                             \
            const T *row = X + p * ldx;                                                                                \
            if (p + PREFETCH_ROWS < kc)                                                                                \
                pg_prefetch_row(row + PREFETCH_ROWS * ldx, n * (int64_t)sizeof(T));                                \
            T *dst = xp + p * W; /* row p of the sliver of columns j0 */                                               \
            for (int64_t j0 = 0; j0 < full; j0 += W, dst += step)                                                      \
                memcpy(dst, row + j0, W * sizeof(T));                                                                  \
            if (full < n)                                                                                              \
                memcpy(ragged + p * W, row + full, (size_t)(n - full) * sizeof(T));                                    \
        }                                                                                                              \
    }                                                                                                                  \
    static void pack_cols_##sfx##_##tag(int64_t kc, int64_t n, const T *X, int64_t ldx, T *restrict xp, int64_t step) \
    {                                                                                                                  \
        for (int64_t j0 = 0; j0 < n; j0 += W, xp += step) {                                                            \
            int64_t w = min64(W, n - j0);                                                                              \
            if (w < W)                                                                                                 \
                memset(xp, 0, (size_t)(kc * W) * sizeof(T));                                                           \
            const int64_t p0 = PACK_COLS_VEC_##sfx(kc, w, X + j0 * ldx, ldx, xp, W);                                   \
            for (int64_t j = 0; j < w; j++)                                                                            \
                for (int64_t p = p0; p < kc; p++)                                                                      \
                    xp[p * W + j] = X[(j0 + j) * ldx + p];                                                             \
        }                                                                                                              \
    }
#define DEFINE_PACK(T, sfx, MR, NR)                                                                                    \
    DEFINE_PACK_WIDTH(T, sfx, MR, a)                                                                                   \
    DEFINE_PACK_WIDTH(T, sfx, NR, b)                                                                                   \
    static void pack_a_##sfx(bool trans, int64_t mc, int64_t kc, const T *A, int64_t lda, T *restrict ap)              \
    {                                                                                                                  \
        (trans ? pack_rows_##sfx##_a : pack_cols_##sfx##_a)(kc, mc, A, lda, ap, a_row_step(kc) * MR);                  \
    }                                                                                                                  \
    static void pack_b_##sfx(bool trans, int64_t kc, int64_t nc, const T *B, int64_t ldb, T *restrict bp)              \
    {                                                                                                                  \
        (trans ? pack_cols_##sfx##_b : pack_rows_##sfx##_b)(kc, nc, B, ldb, bp, b_sliver_step(kc, NR, sizeof(T)));     \
    }

/* ---- C = bias in every row, or beta * C (beta == 0: zeros without reading C) ----- */
#define DEFINE_SCALE(T, sfx)                                                                                           \
    static void fill_c_##sfx(int64_t M, int64_t N, T beta, const T *bias, T *C, int64_t ldc)                          \
    {                                                                                                                  \
        if (!bias && beta == 1)                                                                                        \
            return;                                                                                                    \
        for (int64_t i = 0; i < M; i++)                                                                                \
            for (int64_t j = 0; j < N; j++)                                                                            \
                C[i * ldc + j] = bias ? bias[j] : beta == 0 ? (T)0 : beta * C[i * ldc + j];                           \
    }

/* ---- fallback without packing buffers: row of C += alpha * a_ip * row of op(B) - */
#define DEFINE_PLAIN(T, sfx)                                                                                           \
    static void gemm_plain_##sfx(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A,               \
                                 int64_t lda, const T *B, int64_t ldb, T *C, int64_t ldc)                              \
    {                                                                                                                  \
        for (int64_t i = 0; i < M; i++)                                                                                \
            for (int64_t p = 0; p < K; p++) {                                                                          \
                T aip = alpha * (ta ? A[p * lda + i] : A[i * lda + p]);                                                \
                for (int64_t j = 0; j < N; j++)                                                                        \
                    C[i * ldc + j] += aip * (tb ? B[j * ldb + p] : B[p * ldb + j]);                                    \
            }                                                                                                          \
    }

/* ---- packing buffers -------------------------------------------------------------
 * One pair per thread (a pthread key, freed when the thread exits), grown when
 * a call needs more and then reused: no allocation (and no page faults) per
 * call once warm. */
typedef struct scratch_bufs {
    void *buf[3]; /* packed A, packed B, the second half of a split-K product's sums */
    size_t cap[3];
    uint64_t b_job; /* the packed B holds op(B)[b_pc.., b_jc..] of chunked job b_job (0: no job's) */
    int64_t b_jc, b_pc;
} scratch_bufs;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_key_ok;

static void scratch_free(void *p)
{
    scratch_bufs *s = p;
    for (int slot = 0; slot < 3; slot++)
        free(s->buf[slot]);
    free(s);
}

static void scratch_key_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

static void *scratch(int slot, size_t bytes)
{
    pthread_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok)
        return NULL;
    scratch_bufs *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap[slot] < bytes) {
        s->b_job = slot == 1 ? 0 : s->b_job;
        free(s->buf[slot]);
        size_t size = (bytes + 63) / 64 * 64;
        s->buf[slot] = aligned_alloc(64, size);
        s->cap[slot] = s->buf[slot] ? size : 0;
    }
    return s->buf[slot];
}

/* A chunked product's op(B) block: whether this thread's packed B holds block (jc, pc) of job
 * `job` (packed by one of its earlier chunks of the job), and the note that it now does.
 * Job 0: never kept. */
static bool b_kept(uint64_t job, int64_t jc, int64_t pc)
{
    scratch_bufs *s = scratch_key_ok ? pthread_getspecific(scratch_key) : NULL;
    return job && s && s->b_job == job && s->b_jc == jc && s->b_pc == pc;
}

static void b_keep(uint64_t job, int64_t jc, int64_t pc)
{
    scratch_bufs *s = scratch_key_ok ? pthread_getspecific(scratch_key) : NULL;
    if (s)
        s->b_job = job, s->b_jc = jc, s->b_pc = pc;
}

/* split-K's last pass, C += the second half's sums, over the pool: rows of at least this many
 * elements a thread (an addition per element: below ~2^15 a hand-off costs more than it saves) */
#define PART_SUM_GRAIN 16384

typedef struct part_sum {
    void *C;
    const void *part; /* M x N, row stride N */
    int64_t N, ldc;
} part_sum;

/* ---- one product, split into per-thread blocks of C ----------------------------- */
typedef struct gemm_plan {
    bool ta, tb, pack_a, pack_b;
    int64_t M, N, K, lda, ldb, ldc;
    const void *A, *B;
    void *C;
    double alpha, beta;
    const void *bias;   /* (N) added to every row of C, or NULL (then beta applies) */
    bool split_rows;    /* threads take blocks of rows (else of columns) */
    int64_t tasks;      /* per-thread blocks (0: run on the calling thread) */
    int64_t unit;       /* blocks start at multiples of unit (MR or NR) */
    uint64_t job;       /* chunked rows: an id for the packed op(B) a thread keeps between chunks (0: none) */
} gemm_plan;

/* The operand view handed to the block loop: the sliver for rows i0.. (i0 a
 * multiple of MR) starts at a + i0 * row_step, its element (i, p) at
 * + i * ars + p * aks. Per row, not per sliver, so that no offset is formed for
 * a row that does not exist (MR * lda may not be representable when A has one
 * row and a huge stride). */
typedef struct operand {
    const void *p;
    int64_t rs, ks, row_step;
} operand;

#if VEC_KERNELS
#define KERNEL_FOR(sfx, MR, packed, m) kernels_##sfx[packed][m]
#define TAIL_PAIR_CALL(sfx, packed, m, ...) kernels2_##sfx[packed][m](__VA_ARGS__)
#define ROW_KERNELS 1
#define TAIL_PAIRS 1
#else
#define KERNEL_FOR(sfx, MR, packed, m) ((void)(packed), kernel_full_##sfx)
#define TAIL_PAIR_CALL(sfx, packed, m, ...) ((void)0) /* never called: TAIL_PAIRS 0 */
#define ROW_KERNELS 0
#define TAIL_PAIRS 0
#endif

#define DEFINE_GEMM(T, sfx, MR, NR)                                                                                    \
    DEFINE_PACK(T, sfx, MR, NR)                                                                                        \
    DEFINE_SCALE(T, sfx)                                                                                               \
    DEFINE_PLAIN(T, sfx)                                                                                               \
    /* C[0:mc, 0:nc] (+)= alpha * op(A) op(B) over one kc block. A ragged column                                     \
     * sliver runs on a tile loaded with C's values, the same arithmetic as in place. */                               \
    static void block_##sfx(int64_t mc, int64_t nc, int64_t kc, T alpha, operand a, bool a_packed, const T *b,         \
                            int64_t bks, int64_t b_step, T beta, const T *bias, T *C, int64_t ldc)                     \
    {                                                                                                                  \
        for (int64_t j0 = 0; j0 < nc; j0 += NR) {                                                                      \
            int64_t n = min64(NR, nc - j0);                                                                            \
            const T *bj = b + (j0 / NR) * b_step;                                                                      \
            for (int64_t i0 = 0; i0 < mc; i0 += MR) {                                                                  \
                int64_t m = min64(MR, mc - i0);                                                                        \
                const T *ai = (const T *)a.p + i0 * a.row_step;                                                        \
                T *c = C + i0 * ldc + j0;                                                                              \
                if (TAIL_PAIRS && m <= 2 && (j0 / NR) % 2 == 1 && j0 + NR <= nc)                                       \
                    continue; /* done with the sliver before (below) */                                                \
                if (TAIL_PAIRS && m <= 2 && (j0 / NR) % 2 == 0 && j0 + 2 * NR <= nc) {                                 \
                    TAIL_PAIR_CALL(sfx, a_packed, m, kc, ai, a.rs, a.ks, bj, bks, alpha, beta,                         \
                                   bias ? bias + j0 : NULL, c, ldc, bj + b_step);                                      \
                    continue;                                                                                          \
                }                                                                                                      \
                if (n == NR && (ROW_KERNELS || m == MR)) {                                                             \
                    KERNEL_FOR(sfx, MR, a_packed, m)(kc, ai, a.rs, a.ks, bj, bks, alpha, beta, bias ? bias + j0 : NULL,  \
                                                     c, ldc);                                                          \
                    continue;                                                                                          \
                }                                                                                                      \
                T tile[MR * NR] = {0}, tile_bias[NR] = {0}; /* the bias padded to NR columns */                      \
                if (beta != 0 && !bias)                                                                                \
                    for (int64_t i = 0; i < m; i++)                                                                    \
                        memcpy(tile + i * NR, c + i * ldc, (size_t)n * sizeof(T));                                     \
                if (bias)                                                                                              \
                    memcpy(tile_bias, bias + j0, (size_t)n * sizeof(T));                                               \
                KERNEL_FOR(sfx, MR, a_packed, ROW_KERNELS ? m : MR)(kc, ai, a.rs, a.ks, bj, bks, alpha, beta,          \
                                                                    bias ? tile_bias : NULL, tile, NR);                \
                for (int64_t i = 0; i < m; i++)                                                                        \
                    memcpy(c + i * ldc, tile + i * NR, (size_t)n * sizeof(T));                                         \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
    /* C[m0:m1, n0:n1] of the plan, on the calling thread */                                                          \
    static void gemm_range_##sfx(const gemm_plan *g, int64_t m0, int64_t m1, int64_t n0, int64_t n1)                   \
    {                                                                                                                  \
        const T *A = g->A, *B = g->B;                                                                                  \
        T *C = (T *)g->C + m0 * g->ldc + n0, alpha = (T)g->alpha, beta = (T)g->beta;                                   \
        int64_t M = m1 - m0, N = n1 - n0, K = g->K, lda = g->lda, ldb = g->ldb, ldc = g->ldc;                         \
        bool ta = g->ta, tb = g->tb;                                                                                   \
        const int64_t KC = KC_OF(sizeof(T));                                                                           \
        int64_t kc_max = min64(K, KC), mc_max = round_up(min64(M, MC), MR), nc_max = round_up(min64(N, NC), NR);       \
        T *ap = g->pack_a ? scratch(0, (size_t)(a_row_step(kc_max) * mc_max) * sizeof(T)) : NULL;                      \
        T *bp = g->pack_b ? scratch(1, (size_t)(b_sliver_step(kc_max, NR, sizeof(T)) * nc_max / NR) * sizeof(T)) : NULL; \
        if ((g->pack_a && !ap) || (g->pack_b && !bp)) {                                                                \
            fill_c_##sfx(M, N, beta, g->bias ? (const T *)g->bias + n0 : NULL, C, ldc);                                \
            gemm_plain_##sfx(ta, tb, M, N, K, alpha, ta ? A + m0 : A + m0 * lda, lda, tb ? B + n0 * ldb : B + n0, ldb, \
                             C, ldc);                                                                                  \
            return;                                                                                                    \
        }                                                                                                              \
        for (int64_t jc = 0; jc < N; jc += NC) {                                                                       \
            int64_t nc = min64(NC, N - jc), j = n0 + jc;                                                               \
            for (int64_t pc = 0; pc < K; pc += KC) {                                                                   \
                int64_t kc = min64(KC, K - pc);                                                                        \
                const T *b = tb ? B + j * ldb + pc : B + pc * ldb + j; /* op(B)[pc, j] */                              \
                int64_t bks = ldb, b_step = NR;                                                                        \
                if (g->pack_b) {                                                                                       \
                    if (!b_kept(g->job, jc, pc))                                                                       \
                        pack_b_##sfx(tb, kc, nc, b, ldb, bp);                                                          \
                    b_keep(g->job, jc, pc);                                                                            \
                    b = bp, bks = NR, b_step = b_sliver_step(kc, NR, sizeof(T));                                       \
                }                                                                                                      \
                T beta_eff = pc == 0 ? beta : (T)1;                                                                    \
                const T *bias = pc == 0 && g->bias ? (const T *)g->bias + j : NULL; /* first K block: + bias */       \
                for (int64_t ic = 0; ic < M; ic += MC) {                                                               \
                    int64_t mc = min64(MC, M - ic), i = m0 + ic;                                                       \
                    operand a = ta ? (operand){A + pc * lda + i, 1, lda, 1}                                            \
                                   : (operand){A + i * lda + pc, lda, 1, lda};                                         \
                    if (g->pack_a) {                                                                                   \
                        pack_a_##sfx(ta, mc, kc, a.p, lda, ap);                                                        \
                        a = (operand){ap, 1, MR, a_row_step(kc)};                                                      \
                    }                                                                                                  \
                    block_##sfx(mc, nc, kc, alpha, a, g->pack_a, b, bks, b_step, beta_eff, bias, C + ic * ldc + jc,    \
                                ldc);                                                                                  \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
    /* C's rows (or columns) lo .. hi - 1 */                                                                           \
    static void gemm_slice_##sfx(void *ctx, int64_t lo, int64_t hi, int slice)                                         \
    {                                                                                                                  \
        (void)slice;                                                                                                   \
        const gemm_plan *g = ctx;                                                                                      \
        if (lo >= hi)                                                                                                  \
            return;                                                                                                    \
        if (g->split_rows)                                                                                             \
            gemm_range_##sfx(g, lo, hi, 0, g->N);                                                                      \
        else                                                                                                           \
            gemm_range_##sfx(g, 0, g->M, lo, hi);                                                                      \
    }                                                                                                                  \
    /* split-K: the two halves' blocks side by side, each padded to a multiple of the unit                             \
     * (span); slice lo .. hi - 1 of that line takes its part of each half */                                          \
    static void gemm_halves_slice_##sfx(void *ctx, int64_t lo, int64_t hi, int slice)                                  \
    {                                                                                                                  \
        const gemm_plan *h = ctx;                                                                                      \
        const int64_t extent = h[0].split_rows ? h[0].M : h[0].N, span = round_up(extent, h[0].unit);                  \
        for (int i = 0; i < 2; i++)                                                                                    \
            gemm_slice_##sfx((void *)&h[i], min64(extent, lo - min64(lo, i * span)),                                   \
                             min64(extent, hi - min64(hi, i * span)), slice);                                          \
    }                                                                                                                  \
    /* C[i0 .. i1 - 1] += the partial sums' rows (split-K's second half) */                                            \
    static void part_sum_rows_##sfx(void *ctx, int64_t i0, int64_t i1)                                                \
    {                                                                                                                  \
        const part_sum *p = ctx;                                                                                       \
        T *C = p->C;                                                                                                   \
        const T *part = p->part;                                                                                       \
        for (int64_t i = i0; i < i1; i++)                                                                              \
            for (int64_t j = 0; j < p->N; j++)                                                                         \
                C[i * p->ldc + j] += part[i * p->N + j];                                                               \
    }                                                                                                                  \
    /* C = half 0 + half 1 (split_k_at): half 0 into C (with beta or the bias), half 1 into                            \
     * the calling thread's partial sums, the two halves' blocks side by side cut into one                             \
     * slice per thread (even: a half each on two threads), then one addition per element.                             \
     * false: no memory for the partial sums (nothing done) */                                                         \
    static bool gemm_split_k_##sfx(const gemm_plan *g, int64_t at, int threads)                                        \
    {                                                                                                                  \
        T *part = scratch(2, (size_t)(g->M * g->N) * sizeof(T));                                                       \
        if (!part)                                                                                                     \
            return false;                                                                                              \
        gemm_plan h[2] = {half_of(g, 0, at, g->C, g->ldc, g->beta, g->bias, sizeof(T)),                                \
                          half_of(g, at, g->K, part, g->N, 0, NULL, sizeof(T))};                                       \
        for (int i = 0; i < 2; i++) {                                                                                  \
            h[i].split_rows = g->M >= g->N; /* as plan_split cuts */                                                   \
            h[i].unit = h[i].split_rows ? MR : NR;                                                                     \
            h[i].tasks = threads >= 2 ? threads : 0;                                                                   \
            plan_packing(&h[i], NR, sizeof(T));                                                                        \
        }                                                                                                              \
        if (threads >= 2) {                                                                                            \
            int64_t bounds[PG_MAX_THREADS + 1];                                                                        \
            int parts = halves_bounds(&h[0], threads, gemm_halves_slice_##sfx, bounds);                                \
            pg_parallel_slices_at(parts, bounds, gemm_halves_slice_##sfx, h);                                          \
        } else {                                                                                                       \
            gemm_range_##sfx(&h[0], 0, g->M, 0, g->N);                                                                 \
            gemm_range_##sfx(&h[1], 0, g->M, 0, g->N);                                                                 \
        }                                                                                                              \
        part_sum p = {g->C, part, g->N, g->ldc}; /* one thread: one range, on the caller */                          \
        pg_parallel_range(g->M, PART_SUM_GRAIN / g->N + 1, part_sum_rows_##sfx, &p);                                   \
        return true;                                                                                                   \
    }                                                                                                                  \
    /* C = alpha op(A) op(B) + (bias ? bias in every row : beta C) */                                                 \
    static void gemm_run_##sfx(const char *fn, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,   \
                               const T *A, int64_t lda, const T *B, int64_t ldb, T beta, const T *bias, T *C,          \
                               int64_t ldc)                                                                            \
    {                                                                                                                  \
        if (M <= 0 || N <= 0)                                                                                          \
            return;                                                                                                    \
        if (!gemm_args_ok(fn, C, K > 0 && alpha != 0, A, B))                                                           \
            return;                                                                                                    \
        if (K <= 0 || alpha == 0) {                                                                                    \
            fill_c_##sfx(M, N, beta, bias, C, ldc);                                                                    \
            return;                                                                                                    \
        }                                                                                                              \
        gemm_plan g = {.ta = trans_a, .tb = trans_b, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc,      \
                       .A = A, .B = B, .C = C, .alpha = alpha, .beta = bias ? 0.0 : beta, .bias = bias};               \
        const int threads = pg_num_threads();                                                                          \
        const int64_t at = split_k_at(&g, NR, sizeof(T));                                                              \
        if (at > 0 && gemm_split_k_##sfx(&g, at, threads))                                                             \
            return;                                                                                                    \
        plan_split(&g, MR, NR, threads);                                                                               \
        plan_packing(&g, NR, sizeof(T));                                                                               \
        if (g.tasks == 0)                                                                                              \
            gemm_range_##sfx(&g, 0, M, 0, N);                                                                          \
        else if (chunked(&g, sizeof(T)))                                                                               \
            pg_parallel_chunks(M, g.unit, (int)g.tasks, gemm_slice_##sfx, &g);                                         \
        else                                                                                                           \
            pg_parallel_slices(g.split_rows ? M : N, g.unit, (int)g.tasks, gemm_slice_##sfx, &g);                      \
    }                                                                                                                  \
    void pg_gemm_##sfx(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T *A,               \
                       int64_t lda, const T *B, int64_t ldb, T beta, T *C, int64_t ldc)                                \
    {                                                                                                                  \
        gemm_run_##sfx("pg_gemm_" #sfx, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, NULL, C, ldc);        \
    }                                                                                                                  \
    void pg_gemm_bias_##sfx(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T *A,          \
                            int64_t lda, const T *B, int64_t ldb, const T *bias, T *C, int64_t ldc)                    \
    {                                                                                                                  \
        if (!bias && M > 0 && N > 0) {                                                                                 \
            pg_set_error("pg_gemm_bias_" #sfx ": bias is NULL");                                                       \
            return;                                                                                                    \
        }                                                                                                              \
        gemm_run_##sfx("pg_gemm_bias_" #sfx, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, 0, bias, C, ldc);       \
    }

/* C must be given whenever it has elements; A and B when they are read. */
static bool gemm_args_ok(const char *fn, const void *C, bool reads_ab, const void *A, const void *B)
{
    const char *null = !C ? "C" : reads_ab && !A ? "A" : reads_ab && !B ? "B" : NULL;
    if (null)
        pg_set_error("%s: %s is NULL", fn, null);
    return !null;
}

/* Which operands to pack, from the shapes (and the thread split's column
 * blocks: a block narrower than a sliver is packed; the kernels do the same
 * arithmetic on packed and in-place operands, so results do not depend on it).
 * Reading op(A) in place (either transpose) and op(B) in place (not
 * transposed, N and the column blocks multiples of NR) saves the copies and
 * beats packing on narrow products (Zen 5, f32 GFLOP/s in place vs packed:
 * 2048x128x128 111 vs 100, 128x2048x128 tn 114 vs 101, 64^3 109 vs 88). It
 * loses when consecutive reads sit a multiple of 4 KiB apart (they share L1
 * and L2 sets: 512x2048x128 tn 101 vs 109) and when C's rows are 4 KiB or more
 * (each A block serves many B slivers: 1024^3 56 vs 92). A full KC-row sliver
 * of op(B) read in place with rows a multiple of 2 KiB apart falls on a 32nd of
 * L2's sets: packed instead (half-width AVX-512 EPYC, 128x2048x512 tn, best of
 * 25: 61-92 in place, 90-94 packed). The AVX2 kernels' op(B) slivers, one
 * cache line a row, are packed from K > 64 on (same machine, AVX2 build, f32
 * best of 40: 2048x512x128 85-89 in place, 112 packed; 384x2048x128 tn 84,
 * 96-100; 2048x128x128 102, 110; f64 tn 31-36, 41-46; but 64^3 101-104 in
 * place, 84 packed). A transposed op(A) whose stored rows are a multiple of 2
 * KiB apart over K of KC or more is packed too, along its stored rows (the
 * same machine, 512x2048x128 tn, alternated in one process, medians of 40:
 * AVX-512 88 in place, 99 packed; AVX2 74, 77; at 1.5 KiB, 384 rows, in place
 * stays ahead: 110 vs 102). The AVX2 kernels pack every transposed op(A) over
 * K >= KC (f32, medians of 40 alternated in one process: 128x2048x128 tn 61-79
 * in place, 68-87 packed, 128x2048x384 tn 70, 77-82; beside OpenBLAS-AVX2 in
 * `bench blas`, three alternated runs: 256x2048x128 tn 0.75-0.99x in place,
 * 1.01-1.07x packed, 384x2048x128 tn 0.94-0.99x, 0.96-1.33x; in place varies
 * with where the buffers fall: another process's 256x2048x128 tn ran 108 in
 * place, 103 packed; f64 128x2048x128 tn 50, 51), where the AVX-512 ones lose
 * by it (128x2048x128 tn 103 vs 97). The portable kernel always reads packed
 * slivers. */
static void plan_packing(gemm_plan *g, int64_t NR, size_t elem)
{
#if VEC_KERNELS
    /* (lda mod WIDE_BYTES) * elem: lda * elem may not be representable (one row, a huge stride) */
    bool wide = g->N >= WIDE_BYTES / (int64_t)elem;
    const int64_t KC = KC_OF(elem);
    bool b_sets = g->K >= KC && g->ldb % B_ROWS_BYTES * (int64_t)elem % B_ROWS_BYTES == 0;
    bool line_rows = NR * (int64_t)elem <= 64; /* AVX2: a row of an op(B) sliver is one cache line */
    bool b_line_rows = line_rows && g->K > 64;
    bool a_sets = g->ta && g->K >= KC && g->lda % B_ROWS_BYTES * (int64_t)elem % B_ROWS_BYTES == 0;
    bool a_line_rows = line_rows && g->ta && g->K >= KC;
    g->pack_a = wide || a_sets || a_line_rows || g->lda % WIDE_BYTES * (int64_t)elem % WIDE_BYTES == 0;
    bool narrow = g->N % NR != 0 || (g->tasks && !g->split_rows && g->unit % NR != 0); /* a sliver < NR wide */
    g->pack_b = wide || b_sets || b_line_rows || g->tb || narrow;
#else
    (void)NR, (void)elem;
    g->pack_a = g->pack_b = true;
#endif
}

/* What a product costs a core, in flops: the micro-kernel's, with op(B)'s columns padded to
 * whole slivers of NR (N = 4 costs as N = NR), plus 16 a matrix element read or written. The
 * skinny products of a gate or a positional MLP ((2048 x 128) x (128 x 4), or K = 1 or 4) do
 * few flops but move megabytes: 2^21 flops that took 50-140 us on one thread (FoX's gates,
 * 2.6% of a 2-thread step), where 2^22 flops of a square product take ~25. */
static double gemm_cost(const gemm_plan *g, int64_t NR)
{
    double M = (double)g->M, N = (double)g->N, K = (double)g->K;
    double padded_n = (double)((g->N + NR - 1) / NR * NR);
    return 2.0 * M * padded_n * K + 16.0 * (M * N + M * K + K * N);
}

/* Where a tall-K product is cut in two, at a multiple of KC; 0: not cut. A weight
 * gradient (K tokens summed into an M x N matrix, K >= 2 KC and >= 4 max(M, N)) is
 * summed in two halves of K whatever the thread count, so that two threads each read
 * (and pack) half of both operands, where a split of C's rows had both read all of
 * op(B); the halves' sums are added once per element, in one order for every thread
 * count: identical results. */
static int64_t split_k_at(const gemm_plan *g, int64_t NR, size_t elem)
{
    const int64_t KC = KC_OF(elem);
    int64_t side = g->M > g->N ? g->M : g->N;
    if (gemm_cost(g, NR) < PARALLEL_MIN_FLOPS || g->K < 2 * KC || g->K / 4 < side)
        return 0;
    return KC * ((g->K / KC + 1) / 2);
}

/* The split-K slices (gemm_halves_slice): the two halves' blocks side by side, each
 * padded to span, a multiple of the unit, cut to the threads' speeds; a boundary that
 * falls within an eighth of a half from the middle moves onto it, since a thread that
 * takes a sliver of the other half packs that half's operand for it too. fn: the slices'
 * function, whose kind of job keeps its own speed estimates. */
static int halves_bounds(const gemm_plan *h, int threads, pg_slice_fn fn, int64_t *bounds)
{
    const int64_t span = round_up(h->split_rows ? h->M : h->N, h->unit);
    double weight[PG_MAX_THREADS];
    int parts = pg_parallel_weights(threads, weight, fn, 2 * span);
    pg_split_bounds(2 * span, h->unit, parts, weight, bounds);
    for (int t = 1; t < parts; t++)
        if (bounds[t] != span && llabs(bounds[t] - span) < span / 8 && bounds[t - 1] <= span && span <= bounds[t + 1])
            bounds[t] = span;
    return parts;
}

/* The product over op(A)'s columns and op(B)'s rows k0 .. k1 - 1, into C (ldc), with
 * beta and bias; not yet split or planned */
static gemm_plan half_of(const gemm_plan *g, int64_t k0, int64_t k1, void *C, int64_t ldc, double beta,
                         const void *bias, size_t elem)
{
    gemm_plan h = *g;
    h.A = (const char *)g->A + (size_t)(g->ta ? k0 * g->lda : k0) * elem;
    h.B = (const char *)g->B + (size_t)(g->tb ? k0 : k0 * g->ldb) * elem;
    h.K = k1 - k0;
    h.C = C;
    h.ldc = ldc;
    h.beta = beta;
    h.bias = bias;
    return h;
}

/* One task per thread over blocks of rows (or of columns when N > M). Splitting
 * the larger dimension measured best even when the other balances better
 * (128x2048x128 tn on 2 threads: rows 70 + 58 208 GFLOP/s, columns 64 + 64
 * 198). tasks 0: run on the calling thread. */
static void plan_split(gemm_plan *g, int64_t MR, int64_t NR, int threads)
{
    g->tasks = 0;
    if (threads < 2 || gemm_cost(g, NR) < PARALLEL_MIN_FLOPS)
        return;
    g->split_rows = g->M >= g->N;
    g->unit = g->split_rows ? MR : NR;
    int64_t extent = g->split_rows ? g->M : g->N;
    if (!g->split_rows && extent <= g->unit) /* one sliver of columns, the flops all in K (a weight */
        g->unit /= 2;                        /* gradient of few outputs): half slivers (plan_packing */
    if (extent > g->unit)                    /* packs them, as the ragged last sliver of a wider one) */
        g->tasks = min64(threads, (extent + g->unit - 1) / g->unit);
}

/* Rows in chunks (pg_parallel_chunks: a thread that is done takes part of a slower one's rows)
 * when each chunk costs no more than its rows: op(B) read in place, or one block of it
 * (N <= NC, K <= KC) that a thread packs once and keeps for its later chunks (g->job). A
 * product of several blocks, or split by columns (each chunk would pack all of op(A) again),
 * takes one slice a thread. */
static bool chunked(gemm_plan *g, size_t elem)
{
    static _Atomic uint64_t jobs;
    if (!g->split_rows || (g->pack_b && (g->N > NC || g->K > KC_OF(elem))))
        return false;
    g->job = atomic_fetch_add_explicit(&jobs, 1, memory_order_relaxed) + 1;
    return true;
}

DEFINE_KERNELS(float, f32, MR_F32, NR_F32)
DEFINE_KERNELS(double, f64, MR_F64, NR_F64)
DEFINE_GEMM(float, f32, MR_F32, NR_F32)
DEFINE_GEMM(double, f64, MR_F64, NR_F64)
