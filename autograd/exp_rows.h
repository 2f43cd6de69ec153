/* Softmax rows for the fused attention kernels (internal): exp_row_<sfx>, exp_rows_<sfx>, row_max_<sfx>
 * (autograd/op_flash.c's tiles, autograd/op_cope_attn.c's rows). */
#ifndef PG_EXP_ROWS_H
#define PG_EXP_ROWS_H

#include <math.h>
#include <stdint.h>

#include "op_util.h"
#include "../tensor/vmath.h"

/* row maxima and sums: op_util.h's lane reductions (the float maximum in vectors below) */
DEFINE_ROW_MAX(double, f64)
DEFINE_ROW_SUM(double, f64)

/* exp_row: y[c] = exp(y[c] - m) for c < n, in place, returning the sum of the
 * results (y - m <= 0 expected; -inf gives 0).
 * With AVX-512 or AVX2, in float, a vector at a time (16 or 8 lanes): exp(t) = 2^n exp(r),
 * n = round(t / ln 2), r = t - n ln 2 in two parts (|r| <= ln 2 / 2), exp(r) by
 * its degree-7 Taylor polynomial (relative error < 3e-8; within 1.2e-7 of exp
 * overall), 2^n built in the exponent bits; below 2^-126 the result is 0.
 * Values that are NaN or above 1 take expf. Elsewhere: vmath's exp (below). */
#if defined(PG_VEC)
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693145751953125f
#define EXP_LN2_LO 1.42860682030941723212e-6f

/* the function above on n vectors at once (tensor/vmath.h's PG_VLANES: each step on all n,
 * independent chains side by side); t <= 1 and not NaN */
PG_ALWAYS_INLINE void exp_vec_n(pg_vf *e, const pg_vf *t_in, int n)
{
    pg_vf t[4], nf[4], r[4];
    PG_VLANES(k, n) t[k] = PG_VF(max)(t_in[k], PG_VF(set1)(-100.0f)); /* also -inf */
    PG_VLANES(k, n) nf[k] = PG_VF_ROUND(PG_VF(mul)(t[k], PG_VF(set1)(EXP_LOG2E)));
    PG_VLANES(k, n)
    {
        const pg_vf hi = PG_VF(fnmadd)(nf[k], PG_VF(set1)(EXP_LN2_HI), t[k]); /* t - n ln2 in two parts */
        r[k] = PG_VF(fnmadd)(nf[k], PG_VF(set1)(EXP_LN2_LO), hi);
    }
    pg_vexpf_taylor_n(e, r, n);
    PG_VLANES(k, n)
    {
        const pg_vi ni = PG_VI(cvtps_epi32)(nf[k]);
        const pg_vi bits = PG_VI(slli_epi32)(PG_VI(add_epi32)(ni, PG_VI(set1_epi32)(127)), 23); /* 2^ni */
        const pg_vf_mask normal = PG_VI_GT32(ni, PG_VI(set1_epi32)(-127));                       /* ni >= -126 */
        e[k] = PG_VF_KEEP(normal, PG_VF(mul)(e[k], PG_VF_OF_BITS(bits)));
    }
}

static pg_vf exp_vec(pg_vf t)
{
    pg_vf e;
    exp_vec_n(&e, &t, 1);
    return e;
}

/* exp(t) (the lanes the caller does not want are its to clear): exp_vec when each lane it
 * wants is at most 1 (`small`), else expf lane by lane (a NaN or a value above 1). Always
 * inlined: called, the fused attention's forward and backward took 20% longer. */
PG_ALWAYS_INLINE pg_vf exp_chunk(pg_vf t, bool small)
{
    if (small)
        return exp_vec(t);
    float tv[PG_VF_LANES];
    PG_VF(storeu)(tv, t);
    for (int l = 0; l < PG_VF_LANES; l++)
        tv[l] = expf(tv[l]);
    return PG_VF(loadu)(tv);
}

/* exp_rows: rows r < rows of y (row stride ld, width w): y[c] = exp(y[c] - m[r]) for c <
 * n[r], 0 from n[r] to w, and with `sums` each row's sum of them (the attention's tiles: one
 * call a tile, where a call a row cost more than its exponentials). In chunks of a vector
 * (the tail partial), four side by side; the sum over the chunks that hold any of the n[r].
 * With AVX2 (8 lanes) the masks of the general loop had cost more than they do with AVX-512:
 * through it alone the fused attention's forward and backward took 3-5% longer than with
 * gcc's loop of pg_vexpf; with the first loop for whole chunks, 2-3% less (Zen 3, toy shape). */
static inline void exp_rows_f32(float *restrict y, int64_t ld, const float *m, const int64_t *n, int64_t rows,
                                int64_t w, float *sums)
{
    enum { L = PG_VF_LANES };
    for (int64_t r = 0; r < rows; r++) {
        float *restrict yr = y + r * ld;
        const pg_vf vm = PG_VF(set1)(m[r]);
        pg_vf sum = PG_VF(setzero)();
        int64_t c0 = 0;
        for (; c0 + 4 * L <= n[r]; c0 += 4 * L) { /* four whole visible chunks: what the loop below */
            pg_vf t[4], e[4];                      /* does with them, without its masks */
            unsigned big = 0;                      /* lanes above 1 or NaN: expf's, below */
            PG_VLANES(k, 4)
            {
                t[k] = PG_VF(sub)(PG_VF(loadu)(yr + c0 + L * k), vm);
                big |= PG_VF_MASK_BITS(PG_VF_CMP(t[k], PG_VF(set1)(1.0f), _CMP_NLE_UQ));
            }
            if (big)
                break;
            exp_vec_n(e, t, 4);
            PG_VLANES(k, 4)
            {
                PG_VF(storeu)(yr + c0 + L * k, e[k]);
                sum = PG_VF(add)(sum, e[k]);
            }
        }
        for (; c0 < w; c0 += 4 * L) { /* four chunks side by side (exp_vec_n) */
            const int nk = w - c0 >= 4 * L ? 4 : (int)((w - c0 + L - 1) / L);
            pg_vf t[4], e[4];
            int64_t lanes[4], live[4]; /* the chunk's columns within w, and within n[r] */
            bool small[4], all_small = true; /* every live lane t <= 1: exp_vec */
            for (int k = 0; k < nk; k++) {
                const int64_t c = c0 + L * k;
                lanes[k] = w - c < L ? w - c : L;
                live[k] = c >= n[r] ? 0 : n[r] - c < lanes[k] ? n[r] - c : lanes[k];
                t[k] = PG_VF(sub)(live[k] ? pg_vf_loadn(yr + c, live[k]) : PG_VF(setzero)(), vm);
                const unsigned want = PG_VF_MASK_BITS(pg_vf_first(live[k]));
                small[k] = (PG_VF_MASK_BITS(PG_VF_CMP(t[k], PG_VF(set1)(1.0f), _CMP_LE_OQ)) & want) == want;
                all_small = all_small && small[k];
            }
            const bool four = all_small && nk == 4; /* else a chunk at a time */
            if (four)
                exp_vec_n(e, t, 4);
            for (int k = 0; k < nk; k++) {
                if (!four)
                    e[k] = live[k] ? exp_chunk(t[k], small[k]) : PG_VF(setzero)();
                if (live[k] < L)
                    e[k] = PG_VF_KEEP(pg_vf_first(live[k]), e[k]);
                pg_vf_storen(yr + c0 + L * k, lanes[k], e[k]);
                if (live[k])
                    sum = PG_VF(add)(sum, e[k]);
            }
        }
        if (sums)
            sums[r] = PG_VF_SUM(sum);
    }
}

/* exp_row: one row of exp_rows */
static inline float exp_row_f32(float *restrict y, float m, int64_t n)
{
    float sum;
    exp_rows_f32(y, n, &m, &n, 1, n, &sum);
    return sum;
}

/* the largest of x[0 .. n) ignoring NaN (max keeps its second operand where either is NaN);
 * -inf for none */
static float row_max_f32(const float *restrict x, int64_t n)
{
    pg_vf mx = PG_VF(set1)(-INFINITY);
    int64_t c = 0;
    for (; c + PG_VF_LANES <= n; c += PG_VF_LANES)
        mx = PG_VF(max)(PG_VF(loadu)(x + c), mx);
    if (c < n) {
        const pg_vf_mask lanes = pg_vf_first(n - c);
        mx = PG_VF_SELECT(lanes, mx, PG_VF(max)(pg_vf_loadn(x + c, n - c), mx));
    }
    return PG_VF_MAX(mx);
}

#else
DEFINE_ROW_MAX(float, f32)
DEFINE_ROW_SUM(float, f32)

/* Without AVX2 and FMA: with FMA (aarch64), vmath's float exp, within 1.4 ulps (rows of 64:
 * 4x the speed of the double exp, both vectorised); without FMA, fmaf is a libm call and the
 * double exp is the faster, by 4.7x. */
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

/* f64: tensor/vmath.h's exp (vectorises; within a few ulps of libm's); with AVX-512 or AVX2
 * four vectors at a time side by side (pg_vexp_n, the same bits) */
static double exp_row_f64(double *restrict y, double m, int64_t n)
{
    int64_t c = 0;
#if defined(PG_VEC)
    const pg_vd vm = PG_VD(set1)(m);
    for (; c + 4 * PG_VD_LANES <= n; c += 4 * PG_VD_LANES) {
        pg_vd t[4];
        for (int k = 0; k < 4; k++)
            t[k] = PG_VD(sub)(PG_VD(loadu)(y + c + PG_VD_LANES * k), vm);
        pg_vexp_n(t, t, 4);
        for (int k = 0; k < 4; k++)
            PG_VD(storeu)(y + c + PG_VD_LANES * k, t[k]);
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
#if !defined(PG_VEC)
DEFINE_EXP_ROWS(float, f32)
#endif

#endif
