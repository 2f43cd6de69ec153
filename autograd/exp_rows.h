/* Softmax rows for the fused attention kernels (internal): exp_row_<sfx>, exp_rows_<sfx>, row_max_<sfx>
 * (autograd/op_flash.c's tiles, autograd/op_cope_attn.c's rows). */
#ifndef PG_EXP_ROWS_H
#define PG_EXP_ROWS_H

#include <math.h>
#include <stdint.h>

#include "op_util.h"
#include "../tensor/vmath.h"

/* row maxima and sums: op_util.h's lane reductions */
DEFINE_ROW_MAX(double, f64)
DEFINE_ROW_SUM(double, f64)

/* exp_row: y[c] = exp(y[c] - m) for c < n, in place, returning the sum of the
 * results (y - m <= 0 expected; -inf gives 0).
 * With AVX-512, in float, 16 lanes at a time: exp(t) = 2^n exp(r),
 * n = round(t / ln 2), r = t - n ln 2 in two parts (|r| <= ln 2 / 2), exp(r) by
 * its degree-7 Taylor polynomial (relative error < 3e-8; within 1.2e-7 of exp
 * overall), 2^n built in the exponent bits; below 2^-126 the result is 0.
 * Values that are NaN or above 1 take expf. Elsewhere: vmath's exp (below). */
#if defined(__AVX512F__)
#include <immintrin.h>

#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693145751953125f
#define EXP_LN2_LO 1.42860682030941723212e-6f

/* 16 lanes of the function above on n vectors at once (tensor/vmath.h's PG_VLANES: each step
 * on all n, independent chains side by side); t <= 1 and not NaN */
static inline __attribute__((always_inline)) void exp16_n(__m512 *e, const __m512 *t_in, int n)
{
    __m512 t[4], nf[4], r[4];
    PG_VLANES(k, n) t[k] = _mm512_max_ps(t_in[k], _mm512_set1_ps(-100.0f)); /* also -inf */
    PG_VLANES(k, n)
    {
        nf[k] = _mm512_roundscale_ps(_mm512_mul_ps(t[k], _mm512_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT);
    }
    PG_VLANES(k, n)
    {
        const __m512 hi = _mm512_fnmadd_ps(nf[k], _mm512_set1_ps(EXP_LN2_HI), t[k]); /* t - n ln2 in two parts */
        r[k] = _mm512_fnmadd_ps(nf[k], _mm512_set1_ps(EXP_LN2_LO), hi);
    }
    pg_vexpf16_taylor_n(e, r, n);
    PG_VLANES(k, n)
    {
        const __m512i ni = _mm512_cvtps_epi32(nf[k]);
        const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23); /* 2^ni */
        const __mmask16 normal = _mm512_cmp_epi32_mask(ni, _mm512_set1_epi32(-126), _MM_CMPINT_NLT);
        e[k] = _mm512_maskz_mul_ps(normal, e[k], _mm512_castsi512_ps(bits));
    }
}

static __m512 exp16(__m512 t)
{
    __m512 e;
    exp16_n(&e, &t, 1);
    return e;
}

/* the first min(n - c, 16) lanes (n > c) */
static __mmask16 lanes_from(int64_t c, int64_t n)
{
    return n - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - c)) - 1);
}

/* exp(t) (the lanes the caller does not want are its to clear): exp16 when each lane it
 * wants is at most 1 (`small`), else expf lane by lane (a NaN or a value above 1). Always
 * inlined: called, the fused attention's forward and backward took 20% longer. */
static inline __attribute__((always_inline)) __m512 exp_chunk(__m512 t, bool small)
{
    if (small)
        return exp16(t);
    float tv[16];
    _mm512_storeu_ps(tv, t);
    for (int l = 0; l < 16; l++)
        tv[l] = expf(tv[l]);
    return _mm512_loadu_ps(tv);
}

/* exp_rows: rows r < rows of y (row stride ld, width w): y[c] = exp(y[c] - m[r]) for c <
 * n[r], 0 from n[r] to w, and with `sums` each row's sum of them (the attention's tiles: one
 * call a tile, where a call a row cost more than its exponentials). In chunks of 16 (the
 * tail masked), the sum over the chunks that hold any of the n[r]. */
static inline void exp_rows_f32(float *restrict y, int64_t ld, const float *m, const int64_t *n, int64_t rows,
                                int64_t w, float *sums)
{
    for (int64_t r = 0; r < rows; r++) {
        float *restrict yr = y + r * ld;
        const __m512 vm = _mm512_set1_ps(m[r]);
        __m512 sum = _mm512_setzero_ps();
        for (int64_t c0 = 0; c0 < w; c0 += 64) { /* four chunks side by side (exp16_n) */
            const int nk = w - c0 >= 64 ? 4 : (int)((w - c0 + 15) / 16);
            __m512 t[4], e[4];
            __mmask16 lanes[4], live[4];
            bool small[4], all_small = true; /* every live lane t <= 1: exp16 */
            for (int k = 0; k < nk; k++) {
                const int64_t c = c0 + 16 * k;
                lanes[k] = lanes_from(c, w), live[k] = c < n[r] ? lanes_from(c, n[r]) & lanes[k] : 0;
                t[k] = _mm512_sub_ps(_mm512_maskz_loadu_ps(live[k], yr + c), vm);
                small[k] = (_mm512_cmp_ps_mask(t[k], _mm512_set1_ps(1.0f), _CMP_LE_OQ) & live[k]) == live[k];
                all_small = all_small && small[k];
            }
            const bool four = all_small && nk == 4; /* else a chunk at a time */
            if (four)
                exp16_n(e, t, 4);
            for (int k = 0; k < nk; k++) {
                const int64_t c = c0 + 16 * k;
                if (!four)
                    e[k] = live[k] ? exp_chunk(t[k], small[k]) : _mm512_setzero_ps();
                e[k] = _mm512_maskz_mov_ps(live[k], e[k]);
                _mm512_mask_storeu_ps(yr + c, lanes[k], e[k]);
                if (live[k])
                    sum = _mm512_add_ps(sum, e[k]);
            }
        }
        if (sums)
            sums[r] = _mm512_reduce_add_ps(sum);
    }
}

/* exp_row: one row of exp_rows */
static inline float exp_row_f32(float *restrict y, float m, int64_t n)
{
    float sum;
    exp_rows_f32(y, n, &m, &n, 1, n, &sum);
    return sum;
}

/* the largest of x[0 .. n) ignoring NaN; -inf for none */
static float row_max_f32(const float *restrict x, int64_t n)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t c = 0; c < n; c += 16) {
        const __mmask16 lanes = lanes_from(c, n);
        mx = _mm512_mask_max_ps(mx, lanes, _mm512_maskz_loadu_ps(lanes, x + c), mx); /* NaN: keeps mx */
    }
    return _mm512_reduce_max_ps(mx);
}

#else
DEFINE_ROW_MAX(float, f32)
DEFINE_ROW_SUM(float, f32)

/* With FMA (AVX2's 8 lanes, aarch64): vmath's float exp, within 1.4 ulps (AVX2, rows of
 * 64: 4x the speed of the double exp, both vectorised); without FMA, fmaf is a libm call
 * and the double exp is the faster, by 4.7x. */
static inline float exp_row_f32(float *restrict y, float m, int64_t n)
{
    for (int64_t c = 0; c < n; c++)
#if defined(__FMA__) || defined(__aarch64__)
        y[c] = pg_vexpf(y[c] - m);
#else
        y[c] = (float)pg_vexp((double)y[c] - (double)m);
#endif
    return row_sum_f32(y, n);
}
#endif

/* f64: tensor/vmath.h's exp (vectorises; within a few ulps of libm's); with AVX-512 four
 * vectors at a time side by side (pg_vexp8_n, the same bits) */
static double exp_row_f64(double *restrict y, double m, int64_t n)
{
    int64_t c = 0;
#if defined(__AVX512F__)
    const __m512d vm = _mm512_set1_pd(m);
    for (; c + 32 <= n; c += 32) {
        __m512d t[4];
        for (int k = 0; k < 4; k++)
            t[k] = _mm512_sub_pd(_mm512_loadu_pd(y + c + 8 * k), vm);
        pg_vexp8_n(t, t, 4);
        for (int k = 0; k < 4; k++)
            _mm512_storeu_pd(y + c + 8 * k, t[k]);
    }
#endif
    for (; c < n; c++)
        y[c] = pg_vexp(y[c] - m);
    return row_sum_f64(y, n);
}

/* exp_rows (above) through exp_row: f64, and f32 where it is not written in vectors */
#define DEFINE_EXP_ROWS(T, sfx)                                                                                        \
    static inline void exp_rows_##sfx(T *restrict y, int64_t ld, const T *m, const int64_t *n, int64_t rows,         \
                                      int64_t w, T *sums)                                                          \
    {                                                                                                                  \
        for (int64_t r = 0; r < rows; r++) {                                                                           \
            const T sum = exp_row_##sfx(y + r * ld, m[r], n[r]);                                                       \
            for (int64_t c = n[r]; c < w; c++)                                                                         \
                y[r * ld + c] = 0;                                                                                     \
            if (sums)                                                                                                  \
                sums[r] = sum;                                                                                         \
        }                                                                                                              \
    }
DEFINE_EXP_ROWS(double, f64)
#if !defined(__AVX512F__)
DEFINE_EXP_ROWS(float, f32)
#endif

#endif
