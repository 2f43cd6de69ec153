/* GEMM: C = alpha * op(A) * op(B) + beta * C, row-major (see gemm.h).
 *
 * The classic blocked scheme (Goto and van de Geijn, "Anatomy of
 * High-Performance Matrix Multiplication", 2008):
 *
 *   for jc in N by NC:            a KC x NC panel of op(B) is packed into Bp
 *     for pc in K by KC:            (stays in L3 / L2)
 *       pack op(B)[pc:+KC, jc:+NC] into Bp as NR-wide column slivers
 *       for ic in M by MC:          an MC x KC block of op(A) is packed into Ap
 *         pack op(A)[ic:+MC, pc:+KC] into Ap as MR-tall row slivers (in L2)
 *         for jr in NC by NR, ir in MC by MR:
 *           micro-kernel: C[ir:+MR, jr:+NR] (+)= alpha * Ap sliver * Bp sliver
 *
 * Packing makes both operands contiguous and unit-stride whatever the
 * transposes, and pads the edge slivers with zeros, so the micro-kernel always
 * runs a full MR x NR tile; edge tiles go through a small local buffer. beta
 * is applied on the first K block only (later blocks accumulate with beta 1),
 * and beta == 0 never reads C.
 *
 * The micro-kernel is plain C: an MR x NR block of accumulators updated by a
 * rank-1 product per k, the NR loop innermost over contiguous packed B, so
 * gcc -O3 vectorises it and keeps the accumulators in vector registers (SSE2
 * build: f32 ~35 GFLOP/s, f64 ~16 GFLOP/s on one Zen 4 core at n = 1024, the
 * same for every transpose combination). No FMA contraction (-std=c11), so
 * results do not depend on the target ISA's fusing. */
#include "gemm.h"

#include <stdlib.h>

/* Tile sizes per target ISA. With AVX-512 (a build for a machine that has it,
 * e.g. -march=native) the micro-kernels below use intrinsics: 14 rows x 2
 * vectors = 28 of the 32 zmm registers hold the C tile. Otherwise the plain-C
 * kernel, with the sizes measured best for it on Zen 4 (SSE2 default build).
 * MC is a multiple of MR, NC of NR. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define MR_F32 14
#define NR_F32 32
#define MR_F64 14
#define NR_F64 16
#define MC 112
#else /* SSE2, AVX */
#define MR_F32 4
#define NR_F32 16
#define MR_F64 4
#define NR_F64 4
#define MC 72
#endif
/* cache blocks: MC x KC of op(A) stays in L2, a KC x NR sliver of op(B) in L1 */
#define KC 256
#define NC 2048

/* The micro-kernel stays a separate function: inlined into its callers, gcc's
 * register allocation of the accumulator block varies with the context. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---- micro-kernel ------------------------------------------------------------
 * a: (kc, MR) packed sliver of op(A), b: (kc, NR) packed sliver of op(B),
 * c: MR x NR tile with row stride ldc.
 * c = alpha * (a^T b) + beta * c, and c is not read when beta == 0. */
#define DEFINE_UKERNEL(T, sfx, MR, NR)                                                                                 \
    NOINLINE static void ukernel_##sfx(int64_t kc, const T *restrict a, const T *restrict b, T alpha, T beta,          \
                              T *restrict c, int64_t ldc)                                                              \
    {                                                                                                                  \
        T acc[MR][NR] = {{0}};                                                                                         \
        for (int64_t p = 0; p < kc; p++, a += MR, b += NR) {                                                           \
            T bv[NR];                                                                                                  \
            for (int j = 0; j < NR; j++)                                                                               \
                bv[j] = b[j];                                                                                          \
            for (int i = 0; i < MR; i++) {                                                                             \
                T ai = a[i];                                                                                           \
                for (int j = 0; j < NR; j++)                                                                           \
                    acc[i][j] += ai * bv[j];                                                                           \
            }                                                                                                          \
        }                                                                                                              \
        if (beta == 0) {                                                                                               \
            for (int i = 0; i < MR; i++)                                                                               \
                for (int j = 0; j < NR; j++)                                                                           \
                    c[i * ldc + j] = alpha * acc[i][j];                                                                \
        } else {                                                                                                       \
            for (int i = 0; i < MR; i++)                                                                               \
                for (int j = 0; j < NR; j++)                                                                           \
                    c[i * ldc + j] = alpha * acc[i][j] + beta * c[i * ldc + j];                                        \
        }                                                                                                              \
    }

#if defined(__AVX512F__)
/* The same contract with AVX-512 FMA: per k, two vectors of the packed B row
 * and one broadcast A element per row update the 14 x 2 accumulator tile. The
 * FMA rounds once where the plain kernel rounds twice, so AVX-512 builds
 * differ from portable ones in the last bit (each is deterministic). */
#define DEFINE_UKERNEL_AVX512(T, sfx, MR, V, SET1, ZERO, LOADU, STOREU, FMADD, MUL, LANES)                           \
    NOINLINE static void ukernel_##sfx(int64_t kc, const T *restrict a, const T *restrict b, T alpha, T beta,          \
                                       T *restrict c, int64_t ldc)                                                     \
    {                                                                                                                  \
        V c0[MR], c1[MR];                                                                                              \
        _Pragma("GCC unroll 14") for (int i = 0; i < MR; i++) c0[i] = c1[i] = ZERO();                                  \
        for (int64_t p = 0; p < kc; p++, a += MR, b += 2 * LANES) {                                                    \
            V b0 = LOADU(b), b1 = LOADU(b + LANES);                                                                    \
            _Pragma("GCC unroll 14") for (int i = 0; i < MR; i++)                                                      \
            {                                                                                                          \
                V ai = SET1(a[i]);                                                                                     \
                c0[i] = FMADD(ai, b0, c0[i]);                                                                          \
                c1[i] = FMADD(ai, b1, c1[i]);                                                                          \
            }                                                                                                          \
        }                                                                                                              \
        V va = SET1(alpha), vb = SET1(beta);                                                                           \
        _Pragma("GCC unroll 14") for (int i = 0; i < MR; i++)                                                          \
        {                                                                                                              \
            T *ci = c + i * ldc;                                                                                       \
            V r0 = MUL(va, c0[i]), r1 = MUL(va, c1[i]);                                                                \
            if (beta != 0) { /* beta == 0 never reads C */                                                             \
                r0 = FMADD(vb, LOADU(ci), r0);                                                                         \
                r1 = FMADD(vb, LOADU(ci + LANES), r1);                                                                 \
            }                                                                                                          \
            STOREU(ci, r0);                                                                                            \
            STOREU(ci + LANES, r1);                                                                                    \
        }                                                                                                              \
    }
DEFINE_UKERNEL_AVX512(float, f32, MR_F32, __m512, _mm512_set1_ps, _mm512_setzero_ps, _mm512_loadu_ps,
                      _mm512_storeu_ps, _mm512_fmadd_ps, _mm512_mul_ps, 16)
DEFINE_UKERNEL_AVX512(double, f64, MR_F64, __m512d, _mm512_set1_pd, _mm512_setzero_pd, _mm512_loadu_pd,
                      _mm512_storeu_pd, _mm512_fmadd_pd, _mm512_mul_pd, 8)
#define PORTABLE_UKERNEL(T, sfx, MR, NR) /* the intrinsics kernels above */
#else
#define PORTABLE_UKERNEL(T, sfx, MR, NR) DEFINE_UKERNEL(T, sfx, MR, NR)
#endif

/* ---- packing -----------------------------------------------------------------
 * pack_a: op(A)[0:mc, 0:kc] (A already offset to the block) -> Ap as
 *   ceil(mc/MR) slivers of (kc, MR), rows past mc zero.
 * pack_b: op(B)[0:kc, 0:nc] -> Bp as ceil(nc/NR) slivers of (kc, NR), columns
 *   past nc zero. */
#define DEFINE_PACK(T, sfx, MR, NR)                                                                                    \
    static void pack_a_##sfx(bool trans, int64_t mc, int64_t kc, const T *A, int64_t lda, T *restrict ap)              \
    {                                                                                                                  \
        for (int64_t i0 = 0; i0 < mc; i0 += MR, ap += kc * MR) {                                                       \
            int64_t m = min64(MR, mc - i0);                                                                            \
            for (int64_t p = 0; p < kc; p++)                                                                           \
                for (int64_t i = 0; i < MR; i++)                                                                       \
                    ap[p * MR + i] = i >= m ? (T)0 : trans ? A[p * lda + i0 + i] : A[(i0 + i) * lda + p];              \
        }                                                                                                              \
    }                                                                                                                  \
    static void pack_b_##sfx(bool trans, int64_t kc, int64_t nc, const T *B, int64_t ldb, T *restrict bp)              \
    {                                                                                                                  \
        for (int64_t j0 = 0; j0 < nc; j0 += NR, bp += kc * NR) {                                                       \
            int64_t n = min64(NR, nc - j0);                                                                            \
            for (int64_t p = 0; p < kc; p++)                                                                           \
                for (int64_t j = 0; j < NR; j++)                                                                       \
                    bp[p * NR + j] = j >= n ? (T)0 : trans ? B[(j0 + j) * ldb + p] : B[p * ldb + j0 + j];              \
        }                                                                                                              \
    }

/* ---- C = beta * C (beta == 0: zeros without reading C) ------------------------ */
#define DEFINE_SCALE(T, sfx)                                                                                           \
    static void scale_c_##sfx(int64_t M, int64_t N, T beta, T *C, int64_t ldc)                                         \
    {                                                                                                                  \
        if (beta == 1)                                                                                                 \
            return;                                                                                                    \
        for (int64_t i = 0; i < M; i++)                                                                                \
            for (int64_t j = 0; j < N; j++)                                                                            \
                C[i * ldc + j] = beta == 0 ? (T)0 : beta * C[i * ldc + j];                                             \
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

/* ---- one packed block: C[0:mc, 0:nc] (+)= alpha * Ap * Bp ------------------------
 * Full tiles go straight to C; edge tiles through a local MR x NR buffer. */
#define DEFINE_MACRO_KERNEL(T, sfx, MR, NR)                                                                            \
    static void block_##sfx(int64_t mc, int64_t nc, int64_t kc, T alpha, const T *ap, const T *bp, T beta,             \
                            T *C, int64_t ldc)                                                                         \
    {                                                                                                                  \
        for (int64_t j0 = 0; j0 < nc; j0 += NR) {                                                                      \
            int64_t n = min64(NR, nc - j0);                                                                            \
            const T *b = bp + (j0 / NR) * kc * NR;                                                                     \
            for (int64_t i0 = 0; i0 < mc; i0 += MR) {                                                                  \
                int64_t m = min64(MR, mc - i0);                                                                        \
                const T *a = ap + (i0 / MR) * kc * MR;                                                                 \
                T *c = C + i0 * ldc + j0;                                                                              \
                if (m == MR && n == NR) {                                                                              \
                    ukernel_##sfx(kc, a, b, alpha, beta, c, ldc);                                                      \
                    continue;                                                                                          \
                }                                                                                                      \
                T tile[MR * NR];                                                                                       \
                ukernel_##sfx(kc, a, b, alpha, 0, tile, NR);                                                           \
                for (int64_t i = 0; i < m; i++)                                                                        \
                    for (int64_t j = 0; j < n; j++)                                                                    \
                        c[i * ldc + j] = beta == 0 ? tile[i * NR + j] : tile[i * NR + j] + beta * c[i * ldc + j];      \
            }                                                                                                          \
        }                                                                                                              \
    }

/* ---- driver --------------------------------------------------------------------- */
/* Packing buffers, one pair per thread, grown when a call needs more and then
 * reused: no allocation (and no page faults) per call once warm. */
static void *scratch(int slot, size_t bytes)
{
    static _Thread_local void *buf[2];
    static _Thread_local size_t cap[2];
    if (cap[slot] < bytes) {
        free(buf[slot]);
        size_t size = (bytes + 63) / 64 * 64;
        buf[slot] = aligned_alloc(64, size);
        cap[slot] = buf[slot] ? size : 0;
    }
    return buf[slot];
}

#define DEFINE_GEMM(T, sfx, MR, NR)                                                                                    \
    PORTABLE_UKERNEL(T, sfx, MR, NR)                                                                                   \
    DEFINE_PACK(T, sfx, MR, NR)                                                                                        \
    DEFINE_SCALE(T, sfx)                                                                                               \
    DEFINE_PLAIN(T, sfx)                                                                                               \
    DEFINE_MACRO_KERNEL(T, sfx, MR, NR)                                                                                \
    void pg_gemm_##sfx(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T *A,               \
                       int64_t lda, const T *B, int64_t ldb, T beta, T *C, int64_t ldc)                                \
    {                                                                                                                  \
        if (M <= 0 || N <= 0)                                                                                          \
            return;                                                                                                    \
        if (K <= 0 || alpha == 0) {                                                                                    \
            scale_c_##sfx(M, N, beta, C, ldc);                                                                         \
            return;                                                                                                    \
        }                                                                                                              \
        int64_t kc_max = min64(K, KC), mc_max = round_up(min64(M, MC), MR);                                            \
        int64_t nc_max = round_up(min64(N, NC), NR);                                                                   \
        T *ap = scratch(0, (size_t)(kc_max * mc_max) * sizeof(T));                                                     \
        T *bp = scratch(1, (size_t)(kc_max * nc_max) * sizeof(T));                                                     \
        if (!ap || !bp) {                                                                                              \
            scale_c_##sfx(M, N, beta, C, ldc);                                                                         \
            gemm_plain_##sfx(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, C, ldc);                                \
            return;                                                                                                    \
        }                                                                                                              \
        for (int64_t jc = 0; jc < N; jc += NC) {                                                                       \
            int64_t nc = min64(NC, N - jc);                                                                            \
            for (int64_t pc = 0; pc < K; pc += KC) {                                                                   \
                int64_t kc = min64(KC, K - pc);                                                                        \
                pack_b_##sfx(trans_b, kc, nc, trans_b ? B + jc * ldb + pc : B + pc * ldb + jc, ldb, bp);               \
                T beta_eff = pc == 0 ? beta : (T)1;                                                                    \
                for (int64_t ic = 0; ic < M; ic += MC) {                                                               \
                    int64_t mc = min64(MC, M - ic);                                                                    \
                    pack_a_##sfx(trans_a, mc, kc, trans_a ? A + pc * lda + ic : A + ic * lda + pc, lda, ap);           \
                    block_##sfx(mc, nc, kc, alpha, ap, bp, beta_eff, C + ic * ldc + jc, ldc);                          \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

DEFINE_GEMM(float, f32, MR_F32, NR_F32)
DEFINE_GEMM(double, f64, MR_F64, NR_F64)
