/* Square transposes in registers (internal): with AVX-512 16 x 16 floats and 8 x 8 doubles,
 * shared by the GEMM's column packs (tensor/gemm.c) and the fused attention's transposes of
 * keys and values (autograd/op_flash.c); with AVX2 8 x 8 floats and 4 x 4 doubles in ymm (the
 * AVX2 build's column packs, and the row scans of autograd/op_cumsum.c). Data moved, nothing
 * computed. */
#ifndef PG_SIMD_TRANSPOSE_H
#define PG_SIMD_TRANSPOSE_H

#if defined(__AVX2__)
#include <immintrin.h>

/* r[0..7], 8 rows of 8 floats in ymm registers -> their transpose */
static inline void transpose8_f32_ymm(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* r[0..3], 4 rows of 4 doubles -> their transpose: pairs of rows interleaved (t0: elements
 * 0 and 2 of rows 0, 1), then the 128-bit halves paired */
static inline void transpose4_f64_ymm(__m256d r[4])
{
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
#endif

#if defined(__AVX512F__)

/* The 4 x 4 grid of 128-bit lanes of a, b, c, d transposed in place (lane r of the k-th
 * output is lane k of the r-th input), SHUF the lane shuffle of floats or doubles */
#define LANE_GRID4(V, SHUF, a, b, c, d)                                                                        \
    do {                                                                                                       \
        const V p_ = SHUF(a, b, 0x44), q_ = SHUF(a, b, 0xEE), r_ = SHUF(c, d, 0x44), s_ = SHUF(c, d, 0xEE);    \
        a = SHUF(p_, r_, 0x88), b = SHUF(p_, r_, 0xDD), c = SHUF(q_, s_, 0x88), d = SHUF(q_, s_, 0xDD);        \
    } while (0)

/* r[0..15], 16 rows of 16 floats -> their transpose: pairs of rows interleaved, then
 * 4 x 4 squares inside each lane (r[4 g + c], lane k: column 4 k + c of rows 4 g..4 g + 3),
 * then the grid of lanes of each c */
static inline void transpose16_f32(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) /* lane k of r[4 g + c] -> lane g of r[4 k + c]: r[j] is column j */
        LANE_GRID4(__m512, _mm512_shuffle_f32x4, r[c], r[4 + c], r[8 + c], r[12 + c]);
}

/* r[0..7], 8 rows of 8 doubles -> their transpose (t[2 g + c], lane k: column 2 k + c of
 * rows 2 g, 2 g + 1; then the grid of lanes) */
static inline void transpose8_f64(__m512d r[8])
{
    __m512d t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int c = 0; c < 2; c++) /* lane k of t[2 g + c] -> lane g of t[2 k + c]: t[j] is column j */
        LANE_GRID4(__m512d, _mm512_shuffle_f64x2, t[c], t[2 + c], t[4 + c], t[6 + c]);
    for (int i = 0; i < 8; i++)
        r[i] = t[i];
}

#endif
#endif
