/* Vectorisable elementary functions for the float32 kernels (internal).
 *
 * libm's expf and erff are calls, and a call in a loop keeps GCC from
 * vectorising it. These are branch-free arithmetic on doubles (selects, not
 * jumps), so a loop over floats that calls them becomes SIMD code, and the
 * float result is rounded once from a double accurate to ~1e-8 relative:
 * within an ulp or so of the correctly rounded value. The float64 kernels use
 * libm or, for GELU's erf, pg_verf: within an ulp, as libm's erf.
 *
 *   pg_vexp(x)  = e^x            (relative error < 1e-15 for x in [-708, 708];
 *                                 0 below, +inf above, NaN stays NaN)
 *   pg_verf(x)  = erf(x)         (within an ulp of the correctly rounded value)
 *   pg_vncdf(x) = Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF
 *                                (relative error < 3e-8 for x >= -16.9, which covers
 *                                every float result but 0)
 *
 * Below them, float32 versions in float arithmetic for the GELU kernels (pg_vexpf,
 * pg_vgaussf, pg_vncdff: twice the lanes, their accuracy in their own comment), and the
 * float sigmoid and softplus (pg_vsigmoidf; pg_vsoftplusf, in double through pg_vexp). */
#ifndef PG_VMATH_H
#define PG_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* the vector functions below, and their callers' loops around them: called, not inlined, they
 * pass vectors through memory */
#define PG_ALWAYS_INLINE static inline __attribute__((always_inline))

/* a b + c in the double polynomials: an fma where fmas are instructions (one rounding and
 * one operation: C11 does not contract a b + c by itself; pg_vexp's 13 steps as products
 * and sums had a float64 2-thread step of the toy model at 51.8 ms, 50.4 in fmas), else a
 * product and a sum (fma would be a libm call) */
#if defined(__FMA__) || defined(__aarch64__)
#define PG_VMADD(a, b, c) fma(a, b, c)
#else
#define PG_VMADD(a, b, c) ((a) * (b) + (c))
#endif

/* e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, |r| <= ln2 / 2),
 * e^r by its Taylor polynomial of degree 13 (truncation < 1e-17 relative). n is read off
 * the low bits of x / ln 2 + 1.5 * 2^52 (rounding to nearest by the addition itself). */
static inline double pg_vexp(double x)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double log2e = 1.4426950408889634074, ln2_hi = 0.693147180369123816490, ln2_lo = 1.90821492927058770002e-10;
    double xc = x < 709.0 ? x : 709.0; /* selects GCC vectorises; NaN is put back at the end */
    xc = xc > -708.0 ? xc : -708.0;
    const double kd = xc * log2e + shifter, n = kd - shifter;
    const double r = (xc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;
    p = PG_VMADD(p, r, 1.0 / 479001600.0);
    p = PG_VMADD(p, r, 1.0 / 39916800.0);
    p = PG_VMADD(p, r, 1.0 / 3628800.0);
    p = PG_VMADD(p, r, 1.0 / 362880.0);
    p = PG_VMADD(p, r, 1.0 / 40320.0);
    p = PG_VMADD(p, r, 1.0 / 5040.0);
    p = PG_VMADD(p, r, 1.0 / 720.0);
    p = PG_VMADD(p, r, 1.0 / 120.0);
    p = PG_VMADD(p, r, 1.0 / 24.0);
    p = PG_VMADD(p, r, 1.0 / 6.0);
    p = PG_VMADD(p, r, 0.5);
    p = PG_VMADD(p, r, 1.0);
    p = PG_VMADD(p, r, 1.0);
    uint64_t bits; /* kd's bits are those of 1.5 * 2^52 plus n: n + 1023 into the exponent field */
    memcpy(&bits, &kd, sizeof bits);
    bits = (bits + 1023) << 52; /* 2^n */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    double y = p * scale;
    y = x > -708.0 ? y : 0.0;
    y = x < 709.0 ? y : (double)INFINITY;
    return x == x ? y : x;
}

/* Phi(x) = erfc(y) / 2 with y = -x / sqrt 2 for x <= 0, and 1 - erfc(|y|) / 2 for x > 0.
 * erfc(y) = e^(-y^2) erfcx(y), erfcx(y) ~ t P(t) with t = 1 / (1 + 0.3 y): P of degree 8
 * fitted here (weighted least squares at 800 Chebyshev points of y in [0, 12] against
 * mpmath, constrained to P(1) = 1 so that Phi(0) = 1/2; max relative error of t P(t)
 * 2.4e-8 there). Past y = 12 (x < -16.9, Phi < 1e-64, zero in float) the fit extrapolates
 * towards erfcx's 1 / (y sqrt pi) within 0.1%. e must be e^(-x^2 / 2) = e^(-y^2) (GELU's
 * backward shares it with the density). */
static inline double pg_vncdf_with(double x, double e)
{
    const double y = (x < 0 ? -x : x) * 0.70710678118654752440;
    const double t = 1.0 / (1.0 + 0.3 * y); /* NaN stays NaN */
    double p = -0.12910959126972466;
    p = p * t + 0.48364367879323261;
    p = p * t - 0.50849330159579442;
    p = p * t + 0.54359245356866848;
    p = p * t - 0.091934903425368419;
    p = p * t + 0.21382518906156556;
    p = p * t + 0.14860686161274106;
    p = p * t + 0.17067963281084197;
    p = p * t + 0.16918998044383771;
    const double half_erfc = 0.5 * t * p * e;
    return x < 0 ? half_erfc : 1.0 - half_erfc;
}

static inline double pg_vncdf(double x) { return pg_vncdf_with(x, pg_vexp(-0.5 * x * x)); }

/* erf(x) in double, within an ulp of the correctly rounded value (as glibc's erf; tests/
 * test_vmath.c checks it against tests/fixtures/vmath_erf.safetensors, mpmath's values).
 * Two branch-free pieces, both evaluated and one selected, so that a loop vectorises:
 *   |x| < 1:      erf(x) = x A(x^2), A of degree 11 (Chebyshev interpolation of erf(a) / a
 *                 in z = a^2 on [0, 1], as monomials in z);
 *   1 <= |x| < 6: erf(x) = 1 - e^(-x^2) erfcx(|x|), erfcx(a) = e^(a^2) erfc(a) = B(u) of degree
 *                 14 in u, t = 1 / (1 + a / 2) mapped onto [-1, 1] (t in [1/4, 2/3]);
 *   |x| >= 6:     +-1 (erfc(6) = 2e-17 is below half an ulp of 1).
 * The coefficients come from tests/fixtures/gen_vmath_erf.py. NaN stays NaN, erf(+-inf) = +-1,
 * erf(-0) = -0. pg_verf_with takes e = pg_vexp(-x * x) from the caller (GELU's derivative
 * shares it), the same bits as pg_verf. */
static inline double pg_verf_with(double x, double e)
{
    const double a = fabs(x), z = a * a;
    double p = -7.795898827002142e-10;
    p = fma(p, z, 1.3720064546777686e-08);
    p = fma(p, z, -1.6208483801871705e-07);
    p = fma(p, z, 1.6447424703317362e-06);
    p = fma(p, z, -1.492473690741966e-05);
    p = fma(p, z, 0.00012055294904839707);
    p = fma(p, z, -0.0008548325975389692);
    p = fma(p, z, 0.0052239776071164225);
    p = fma(p, z, -0.02686617064323777);
    p = fma(p, z, 0.11283791670945006);
    p = fma(p, z, -0.37612638903183543);
    p = fma(p, z, 1.1283791670955126);
    const double near0 = a * p;
    const double ab = a < 1.0 ? 1.0 : a < 6.0 ? a : 6.0; /* the tail's argument, kept in [1, 6] */
    const double t = 1.0 / fma(0.5, ab, 1.0), u = (t - 11.0 / 24.0) * 4.8; /* t in [1/4, 2/3] -> u in [-1, 1] */
    double q = 1.8620989806815163e-11;
    q = fma(q, u, -7.290508535165398e-11);
    q = fma(q, u, -2.634243021000669e-10);
    q = fma(q, u, 2.622350032514279e-09);
    q = fma(q, u, -5.926361315281833e-10);
    q = fma(q, u, -7.005170205475373e-08);
    q = fma(q, u, 1.6350102372087984e-07);
    q = fma(q, u, 1.979561158209264e-06);
    q = fma(q, u, -7.340518284999869e-06);
    q = fma(q, u, -8.079220411804128e-05);
    q = fma(q, u, 0.00019713917776008889);
    q = fma(q, u, 0.0055888162818258785);
    q = fma(q, u, 0.038560570425181566);
    q = fma(q, u, 0.16189356804102537);
    q = fma(q, u, 0.2214295402299318);
    const double tail = 1.0 - e * q; /* e = e^(-x^2) = e^(-ab^2) where the tail is taken */
    const double r = a < 1.0 ? near0 : a < 6.0 ? tail : 1.0;
    return x == x ? copysign(r, x) : x;
}

static inline double pg_verf(double x) { return pg_verf_with(x, pg_vexp(-x * x)); }

/* ---- float32 lanes: 16 a zmm register, fused multiply-adds ----------------------------------
 * For the float32 kernels whose cost these functions are (GELU forward and backward): float
 * arithmetic throughout, fmas keeping exact the roundings that matter. Measured over every
 * float input (tests/test_vmath.c samples them): pg_vexpf within 1.4 ulps on [-87, 88] (0
 * below -87, where e^x is subnormal; +inf from 88.73); pg_vgaussf = e^(-x^2/2) within 1.2e-7
 * relative; on [-12.5, 12.5] pg_vncdff within 1.8e-7 relative and x pg_vncdff(x) (GELU, the
 * product rounded in float) within 2.2e-7, and Phi within 2e-7 down to x = -12.85; below,
 * the result is subnormal (4e-7 at -13, 1e-6 at -13.15, 0 from -13.2). The double versions
 * above: 3e-8, at half the lanes and a double division. */

/* e^x as pg_vexp: n = round(x / ln 2) by the addition of 1.5 * 2^23, ln 2 in two parts
 * (n ln2_hi is exact for |n| < 2^13), e^r by Taylor to degree 7 (|r| <= 0.35: truncation
 * below 6e-9, a twentieth of an ulp), 2^n put into the exponent field. */
static inline float pg_vexpf(float x)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float xc = x < 88.0f ? x : 88.0f;
    xc = xc > -87.0f ? xc : -87.0f;
    const float kd = fmaf(xc, log2e, shifter), n = kd - shifter;
    const float r = fmaf(-n, ln2_lo, fmaf(-n, ln2_hi, xc));
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    uint32_t bits; /* kd's bits are those of 1.5 * 2^23 plus n: n + 127 into the exponent field */
    memcpy(&bits, &kd, sizeof bits);
    bits = (bits + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x >= -87.0f ? y : 0.0f;
    y = x < 88.72283905f ? y : (float)INFINITY;
    return x == x ? y : x;
}

/* sigmoid(x) = 1 / (1 + e^-x) from e = e^-|x|: 1 / (1 + e) for x >= 0, e / (1 + e) below
 * (no overflow either side). Float through pg_vexpf (the loops vectorise); the double
 * version calls libm's exp (pg_sigmoid and CoPE's gates, autograd/op_cope.c, share both). */
static inline float pg_vsigmoidf(float x)
{
    const float e = pg_vexpf(x < 0 ? x : -x), s = 1.0f / (1.0f + e);
    return x >= 0 ? s : e * s;
}
static inline double pg_sigmoid_d(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

/* softplus(x) = log(1 + e^x) for float x, x itself above 20 (PyTorch's threshold): max(x, 0)
 * + log1p(e), e = e^-|x| in (0, 1], in double through pg_vexp; log1p(e) = 2 atanh(s), s = e
 * / (2 + e) <= 1/3, by the series 2 s (1 + z/3 + z^2/5 + ... + z^7/15), z = s^2 <= 1/9
 * (truncation below 2e-9 relative); rounded to float once: within 0.52 ulps over the floats
 * of [-110, 30] (tests/test_unary.c walks them; libm's log1pf(expf(x)) is 1.5 off), the
 * subnormal results below -87 included. libm's pair was two calls, 9 ns an element (0.66%
 * of a 1-thread FoX step, whose forgetting gate is log sigmoid = -softplus(-z)). */
static inline float pg_vsoftplusf(float xf)
{
    const double x = xf, e = pg_vexp(-fabs(x)), s = e / (2.0 + e), z = s * s;
    double p = 1.0 / 15.0;
    p = PG_VMADD(p, z, 1.0 / 13.0);
    p = PG_VMADD(p, z, 1.0 / 11.0);
    p = PG_VMADD(p, z, 1.0 / 9.0);
    p = PG_VMADD(p, z, 1.0 / 7.0);
    p = PG_VMADD(p, z, 1.0 / 5.0);
    p = PG_VMADD(p, z, 1.0 / 3.0);
    const double l = 2.0 * s * PG_VMADD(p, z, 1.0);
    return xf > 20.0f ? xf : (float)((x > 0.0 ? x : 0.0) + l);
}

/* e^(-x^2 / 2) with x^2 = h + l split exactly by an fma (h = fl(x^2)): e^(-h/2) (1 - l/2).
 * Rounding x^2 first would cost up to x^2 2^-25 of relative error: 4e-6 at x = 12. */
static inline float pg_vgaussf(float x)
{
    const float h = x * x;
    float l = fmaf(x, x, -h);
    l = l == l ? l : 0.0f; /* x = +-inf: h = inf, l = NaN; e = 0 */
    const float e = pg_vexpf(-0.5f * h);
    return fmaf(-0.5f * l, e, e);
}

/* R(v) of pg_vncdff_with's P = C + R(v): degree 11, fitted by tests/fixtures/gen_vmath_ncdff.py */
static inline float pg_vncdff_r(float v)
{
    float r = 0.06841329485177994f;
    r = fmaf(r, v, -0.25686460733413696f);
    r = fmaf(r, v, 0.36453911662101746f);
    r = fmaf(r, v, -0.17046022415161133f);
    r = fmaf(r, v, -0.1298529952764511f);
    r = fmaf(r, v, 0.1610693782567978f);
    r = fmaf(r, v, 0.05792813003063202f);
    r = fmaf(r, v, -0.13731645047664642f);
    r = fmaf(r, v, -0.07483464479446411f);
    r = fmaf(r, v, 0.14550715684890747f);
    r = fmaf(r, v, 0.2805614769458771f);
    return fmaf(r, v, 1.1558215717855091e-08f);
}

/* pg_vncdf_with for float x, e = pg_vgaussf(x), in float throughout. With a = |x|,
 * Phi(-a) = erfc(a / sqrt 2) / 2 = e g(a), g(a) = e^(a^2/2) erfc(a / sqrt 2) / 2 falling
 * from 1/2 at a = 0 to 0.03 at a = 13.5 (beyond 13.2, e = 0 in float), and Phi(a) = 1 -
 * Phi(-a). g = t P(t) with t = 1 / (1 + a/2) in [0.129, 1] and P = C + R(t - t0) between
 * 0.23 and 1/2, R of degree 11 (gen_vmath_ncdff.py: 3.4e-9 relative, a = 0 to 13.5). No
 * separate series near 0 then: 8 operations fewer, and for |x| < 1/2 within 1.6e-7 (e's
 * error included) where the series gave 0.9e-7. Evaluated plainly in float, g's roundings
 * add to e's own error (1.2e-7) and the result's rounding (6e-8): 3.7e-7 in all (5e-7 with a
 * fit in t = 1 / (1 + 0.3 a / sqrt 2), whose P magnifies t's error 4x near t = 1). Three
 * exact remainders, each an fma or two, leave g's part near the fit's (1.8e-7 in all, below
 * the double tail's 1.9e-7):
 *  - t's two roundings (d = 1 + a/2 and 1 / d: g follows t one to one): with d's remainder
 *    rem = 1 + a/2 - d (an fma; 1 - d is exact), the exact reciprocal is t (1 + dl), dl =
 *    1 - (d + rem) t, and g moves by t dl (t P)', a slope needed to a few percent only (a
 *    line in v);
 *  - P's rounding p = C + R: its error R - (p - C) is exact (Fast2Sum: C > |R|);
 *  - t p = hi + its remainder, exact; so g = hi + lo, lo a few ulps of g, and e g =
 *    fma(e, hi, e lo) rounds once. */
static inline float pg_vncdff_with(float x, float e)
{
    const float a = x < 0 ? -x : x;
    const float d = fmaf(0.5f, a, 1.0f), rem = fmaf(0.5f, a, 1.0f - d); /* 1 + a/2 = d + rem */
    const float t = 1.0f / d, dl = fmaf(-rem, t, fmaf(-d, t, 1.0f));
    const float v = t - 0.25999999046325684f; /* exact for t in [0.13, 0.52]: a >= 1.85 */
    const float c = 0.26190823316574097f, r = pg_vncdff_r(v), p = c + r, p_err = r - (p - c);
    const float slope = fmaf(0.6396522521972656f, v, 0.34231677651405334f); /* (t P)' */
    const float hi = t * p, lo = fmaf(t, fmaf(dl, slope, p_err), fmaf(t, p, -hi));
    const float lower = fmaf(e, hi, e * lo); /* Phi(-a) */
    const float tail = x < 0 ? lower : 1.0f - lower;
    const float far = x < 0 ? 0.0f : 1.0f; /* |x| > 14: e = 0 (and +-inf would give 0 * NaN) */
    return a > 14.0f ? far : tail;
}

static inline float pg_vncdff(float x) { return pg_vncdff_with(x, pg_vgaussf(x)); }

/* ---- the functions above on vectors: 16 floats or 8 doubles a register with AVX-512, 8 or 4
 * with AVX2 and FMA -------------------------------------------------------------------------
 * Operation for operation (each fmaf an fma, each select a blend, the clamps `x < c ? x : c`
 * and `x > c ? x : c` as min and max): the same bits for every input (pg_vexpf's over all
 * 2^32 floats when it was written; tests/test_vmath.c samples them all). One text serves
 * both widths through the names below: pg_vf / pg_vd a vector of floats / doubles, PG_VF(op)
 * and PG_VD(op) their intrinsics (PG_VF(fmadd) is _mm512_fmadd_ps or _mm256_fmadd_ps), PG_VI
 * and PG_VI_BITS the integer ones; a lane mask (pg_vf_mask, pg_vd_mask) is a __mmask with
 * AVX-512 and a vector of all-ones / all-zeros lanes with AVX2, made by the comparisons and
 * pg_vf_first / pg_vd_first and used by the selects, PG_VF_KEEP and the partial loads. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define PG_VEC 1

#if defined(__AVX512F__)
#define PG_VF_LANES 16
#define PG_VD_LANES 8
typedef __m512 pg_vf;
typedef __m512d pg_vd;
typedef __m512i pg_vi;
typedef __mmask16 pg_vf_mask;
typedef __mmask8 pg_vd_mask;
#define PG_VF(op) _mm512_##op##_ps
#define PG_VD(op) _mm512_##op##_pd
#define PG_VI(op) _mm512_##op
#define PG_VI_BITS(op) _mm512_##op##_si512
#define PG_VI_SET1_64(x) _mm512_set1_epi64(x)
#define PG_VF_CMP(a, b, pred) _mm512_cmp_ps_mask(a, b, pred)
#define PG_VD_CMP(a, b, pred) _mm512_cmp_pd_mask(a, b, pred)
#define PG_VI_GT32(a, b) _mm512_cmpgt_epi32_mask(a, b) /* a float lane mask */
#define PG_VF_SELECT(m, no, yes) _mm512_mask_blend_ps(m, no, yes)
#define PG_VD_SELECT(m, no, yes) _mm512_mask_blend_pd(m, no, yes)
#define PG_VF_KEEP(m, x) _mm512_maskz_mov_ps(m, x) /* x where m, else 0 */
#define PG_VF_MASK_BITS(m) ((unsigned)(m)) /* bit l: lane l */
#define PG_VF_BITS(x) _mm512_castps_si512(x)
#define PG_VF_OF_BITS(i) _mm512_castsi512_ps(i)
#define PG_VD_BITS(x) _mm512_castpd_si512(x)
#define PG_VD_OF_BITS(i) _mm512_castsi512_pd(i)
#define PG_VF_ROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT)
#define PG_VF_FLOOR(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define PG_VF_LOAD_FIRST(p, m) _mm512_maskz_loadu_ps(m, p) /* the lanes of m, the others 0 */
#define PG_VF_STORE_FIRST(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define PG_VD_LOAD_FIRST(p, m) _mm512_maskz_loadu_pd(m, p)
#define PG_VD_STORE_FIRST(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#define PG_VF_SUM(v) _mm512_reduce_add_ps(v)
#define PG_VF_MAX(v) _mm512_reduce_max_ps(v)

/* the first min(n, lanes) lanes (n >= 0) */
static inline pg_vf_mask pg_vf_first(int64_t n) { return n >= 16 ? (pg_vf_mask)0xFFFF : (pg_vf_mask)((1u << n) - 1); }
static inline pg_vd_mask pg_vd_first(int64_t n) { return n >= 8 ? (pg_vd_mask)0xFF : (pg_vd_mask)((1u << n) - 1); }
#else
#define PG_VF_LANES 8
#define PG_VD_LANES 4
typedef __m256 pg_vf;
typedef __m256d pg_vd;
typedef __m256i pg_vi;
typedef __m256 pg_vf_mask;
typedef __m256d pg_vd_mask;
#define PG_VF(op) _mm256_##op##_ps
#define PG_VD(op) _mm256_##op##_pd
#define PG_VI(op) _mm256_##op
#define PG_VI_BITS(op) _mm256_##op##_si256
#define PG_VI_SET1_64(x) _mm256_set1_epi64x(x)
#define PG_VF_CMP(a, b, pred) _mm256_cmp_ps(a, b, pred)
#define PG_VD_CMP(a, b, pred) _mm256_cmp_pd(a, b, pred)
#define PG_VI_GT32(a, b) _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, b))
#define PG_VF_SELECT(m, no, yes) _mm256_blendv_ps(no, yes, m)
#define PG_VD_SELECT(m, no, yes) _mm256_blendv_pd(no, yes, m)
#define PG_VF_KEEP(m, x) _mm256_and_ps(m, x)
#define PG_VF_MASK_BITS(m) ((unsigned)_mm256_movemask_ps(m))
#define PG_VF_BITS(x) _mm256_castps_si256(x)
#define PG_VF_OF_BITS(i) _mm256_castsi256_ps(i)
#define PG_VD_BITS(x) _mm256_castpd_si256(x)
#define PG_VD_OF_BITS(i) _mm256_castsi256_pd(i)
#define PG_VF_ROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define PG_VF_FLOOR(x) _mm256_round_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define PG_VF_LOAD_FIRST(p, m) _mm256_maskload_ps(p, _mm256_castps_si256(m))
#define PG_VF_STORE_FIRST(p, m, v) _mm256_maskstore_ps(p, _mm256_castps_si256(m), v)
#define PG_VD_LOAD_FIRST(p, m) _mm256_maskload_pd(p, _mm256_castpd_si256(m))
#define PG_VD_STORE_FIRST(p, m, v) _mm256_maskstore_pd(p, _mm256_castpd_si256(m), v)

static inline pg_vf_mask pg_vf_first(int64_t n)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), lane));
}
static inline pg_vd_mask pg_vd_first(int64_t n)
{
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(n < 4 ? n : 4), lane));
}

/* lanes 0 + 4, 1 + 5, ... then pairs, then the last two */
static inline float pg_vf_sum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#define PG_VF_SUM(v) pg_vf_sum8(v)

/* the largest of 8 lanes (none NaN) */
static inline float pg_vf_max8(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
#define PG_VF_MAX(v) pg_vf_max8(v)
#endif

/* pg_vf_loadn / pg_vd_loadn: the first `count` lanes at p (count > 0; the other lanes 0);
 * pg_vf_storen / pg_vd_storen: their store. A whole vector's a plain load or store (AVX2's
 * masked stores are slow). */
#define PG_DEFINE_PARTIAL(v, T, LANES, OP, LOAD_FIRST, STORE_FIRST)                                 \
    PG_ALWAYS_INLINE pg_##v pg_##v##_loadn(const T *p, int64_t count)                              \
    {                                                                                              \
        return count >= LANES ? OP(loadu)(p) : LOAD_FIRST(p, pg_##v##_first(count));              \
    }                                                                                              \
    PG_ALWAYS_INLINE void pg_##v##_storen(T *p, int64_t count, pg_##v x)                           \
    {                                                                                              \
        if (count >= LANES)                                                                        \
            OP(storeu)(p, x);                                                                      \
        else                                                                                       \
            STORE_FIRST(p, pg_##v##_first(count), x);                                              \
    }
PG_DEFINE_PARTIAL(vf, float, PG_VF_LANES, PG_VF, PG_VF_LOAD_FIRST, PG_VF_STORE_FIRST)
PG_DEFINE_PARTIAL(vd, double, PG_VD_LANES, PG_VD, PG_VD_LOAD_FIRST, PG_VD_STORE_FIRST)

/* The vector functions named ..._n take n vectors at once (n a constant once inlined, 1 to
 * 4): each step runs on all n before the next, so that n independent chains of dependent
 * operations fill the vector units that one chain leaves waiting. GELU's recorded forward
 * on 2^20 floats four vectors at a time: 0.62 ms, against 0.79-0.82 for the loop of the float
 * functions that gcc vectorised (1 thread, full-width AVX-512 EPYC; the same bits). */
#define PG_VLANES(k, n) _Pragma("GCC unroll 4") for (int k = 0; k < (n); k++)

/* e^r for |r| <= ln 2 / 2 by its Taylor polynomial of degree 7, Horner's steps from 1/7!
 * (pg_vexpf's; autograd/exp_rows.h's exp_vec_n shares them) */
PG_ALWAYS_INLINE void pg_vexpf_taylor_n(pg_vf *p, const pg_vf *r, int n)
{
    static const float c[7] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
    PG_VLANES(k, n) p[k] = PG_VF(set1)(1.0f / 5040.0f);
    _Pragma("GCC unroll 7") for (int i = 0; i < 7; i++)
    {
        PG_VLANES(k, n) p[k] = PG_VF(fmadd)(p[k], r[k], PG_VF(set1)(c[i]));
    }
}

/* pg_vexpf (y may be x_in) */
PG_ALWAYS_INLINE void pg_vexpf_n(pg_vf *y, const pg_vf *x_in, int n)
{
    const pg_vf shifter = PG_VF(set1)(12582912.0f);
    pg_vf x[4], xc[4], kd[4], r[4];
    PG_VLANES(k, n) x[k] = x_in[k];
    PG_VLANES(k, n) xc[k] = PG_VF(max)(PG_VF(min)(x[k], PG_VF(set1)(88.0f)), PG_VF(set1)(-87.0f));
    PG_VLANES(k, n) kd[k] = PG_VF(fmadd)(xc[k], PG_VF(set1)(1.44269504088896341f), shifter);
    PG_VLANES(k, n)
    {
        const pg_vf nk = PG_VF(sub)(kd[k], shifter);
        r[k] = PG_VF(fnmadd)(nk, PG_VF(set1)(-2.12194440e-4f), PG_VF(fnmadd)(nk, PG_VF(set1)(0.693359375f), xc[k]));
    }
    pg_vexpf_taylor_n(y, r, n);
    PG_VLANES(k, n)
    {
        const pg_vi biased = PG_VI(add_epi32)(PG_VF_BITS(kd[k]), PG_VI(set1_epi32)(127));
        y[k] = PG_VF(mul)(y[k], PG_VF_OF_BITS(PG_VI(slli_epi32)(biased, 23))); /* p 2^n */
    }
    PG_VLANES(k, n)
    {
        const pg_vf_mask normal = PG_VF_CMP(x[k], PG_VF(set1)(-87.0f), _CMP_GE_OQ);
        y[k] = PG_VF_SELECT(normal, PG_VF(setzero)(), y[k]);
    }
    PG_VLANES(k, n)
    {
        y[k] = PG_VF_SELECT(PG_VF_CMP(x[k], PG_VF(set1)(88.72283905f), _CMP_LT_OQ), PG_VF(set1)(INFINITY), y[k]);
    }
    PG_VLANES(k, n) y[k] = PG_VF_SELECT(PG_VF_CMP(x[k], x[k], _CMP_EQ_OQ), x[k], y[k]);
}

PG_ALWAYS_INLINE pg_vf pg_vexpf_v(pg_vf x)
{
    pg_vf y;
    pg_vexpf_n(&y, &x, 1);
    return y;
}

/* pg_vexp (y may be x_in): its clamps as min and max (NaN takes the bound, as the selects
 * do), its products and sums apart (C does not contract them), its Horner steps fmas */
PG_ALWAYS_INLINE void pg_vexp_n(pg_vd *y, const pg_vd *x_in, int n)
{
    static const double c[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                 1.0 / 40320.0,     1.0 / 5040.0,      1.0 / 720.0,     1.0 / 120.0,
                                 1.0 / 24.0,        1.0 / 6.0,         0.5,             1.0,
                                 1.0};
    const pg_vd shifter = PG_VD(set1)(6755399441055744.0);
    pg_vd x[4], xc[4], kd[4], r[4];
    PG_VLANES(k, n) x[k] = x_in[k];
    PG_VLANES(k, n) xc[k] = PG_VD(max)(PG_VD(min)(x[k], PG_VD(set1)(709.0)), PG_VD(set1)(-708.0));
    PG_VLANES(k, n) kd[k] = PG_VD(add)(PG_VD(mul)(xc[k], PG_VD(set1)(1.4426950408889634074)), shifter);
    PG_VLANES(k, n)
    {
        const pg_vd nk = PG_VD(sub)(kd[k], shifter);
        r[k] = PG_VD(sub)(PG_VD(sub)(xc[k], PG_VD(mul)(nk, PG_VD(set1)(0.693147180369123816490))),
                          PG_VD(mul)(nk, PG_VD(set1)(1.90821492927058770002e-10)));
    }
    PG_VLANES(k, n) y[k] = PG_VD(set1)(1.0 / 6227020800.0);
    _Pragma("GCC unroll 13") for (int i = 0; i < 13; i++)
    {
        PG_VLANES(k, n) y[k] = PG_VD(fmadd)(y[k], r[k], PG_VD(set1)(c[i]));
    }
    PG_VLANES(k, n)
    {
        const pg_vi biased = PG_VI(add_epi64)(PG_VD_BITS(kd[k]), PG_VI_SET1_64(1023));
        y[k] = PG_VD(mul)(y[k], PG_VD_OF_BITS(PG_VI(slli_epi64)(biased, 52))); /* p 2^n */
        y[k] = PG_VD_SELECT(PG_VD_CMP(x[k], PG_VD(set1)(-708.0), _CMP_GT_OQ), PG_VD(setzero)(), y[k]);
        y[k] = PG_VD_SELECT(PG_VD_CMP(x[k], PG_VD(set1)(709.0), _CMP_LT_OQ), PG_VD(set1)(INFINITY), y[k]);
        y[k] = PG_VD_SELECT(PG_VD_CMP(x[k], x[k], _CMP_EQ_OQ), x[k], y[k]);
    }
}

/* pg_verf_with: fabs and copysign through the sign bit */
PG_ALWAYS_INLINE void pg_verf_with_n(pg_vd *erf, const pg_vd *x, const pg_vd *e, int n)
{
    static const double cp[11] = {1.3720064546777686e-08, -1.6208483801871705e-07, 1.6447424703317362e-06,
                                  -1.492473690741966e-05, 0.00012055294904839707,  -0.0008548325975389692,
                                  0.0052239776071164225,  -0.02686617064323777,    0.11283791670945006,
                                  -0.37612638903183543,   1.1283791670955126};
    static const double cq[14] = {-7.290508535165398e-11, -2.634243021000669e-10, 2.622350032514279e-09,
                                  -5.926361315281833e-10, -7.005170205475373e-08, 1.6350102372087984e-07,
                                  1.979561158209264e-06,  -7.340518284999869e-06, -8.079220411804128e-05,
                                  0.00019713917776008889, 0.0055888162818258785,  0.038560570425181566,
                                  0.16189356804102537,    0.2214295402299318};
    const pg_vi sign = PG_VI_SET1_64((long long)0x8000000000000000ull);
    const pg_vd one = PG_VD(set1)(1.0);
    pg_vd a[4], z[4], p[4], u[4], q[4];
    PG_VLANES(k, n) a[k] = PG_VD_OF_BITS(PG_VI_BITS(andnot)(sign, PG_VD_BITS(x[k])));
    PG_VLANES(k, n) z[k] = PG_VD(mul)(a[k], a[k]);
    PG_VLANES(k, n) p[k] = PG_VD(set1)(-7.795898827002142e-10);
    _Pragma("GCC unroll 11") for (int i = 0; i < 11; i++)
    {
        PG_VLANES(k, n) p[k] = PG_VD(fmadd)(p[k], z[k], PG_VD(set1)(cp[i]));
    }
    PG_VLANES(k, n)
    { /* the tail's argument ab, kept in [1, 6]; t = 1 / (1 + ab / 2) -> u in [-1, 1] */
        const pg_vd_mask below6 = PG_VD_CMP(a[k], PG_VD(set1)(6.0), _CMP_LT_OQ);
        const pg_vd ab = PG_VD_SELECT(PG_VD_CMP(a[k], one, _CMP_LT_OQ),
                                      PG_VD_SELECT(below6, PG_VD(set1)(6.0), a[k]), one);
        const pg_vd t = PG_VD(div)(one, PG_VD(fmadd)(PG_VD(set1)(0.5), ab, one));
        u[k] = PG_VD(mul)(PG_VD(sub)(t, PG_VD(set1)(11.0 / 24.0)), PG_VD(set1)(4.8));
    }
    PG_VLANES(k, n) q[k] = PG_VD(set1)(1.8620989806815163e-11);
    _Pragma("GCC unroll 14") for (int i = 0; i < 14; i++)
    {
        PG_VLANES(k, n) q[k] = PG_VD(fmadd)(q[k], u[k], PG_VD(set1)(cq[i]));
    }
    PG_VLANES(k, n)
    {
        const pg_vd near0 = PG_VD(mul)(a[k], p[k]), tail = PG_VD(sub)(one, PG_VD(mul)(e[k], q[k]));
        const pg_vd far = PG_VD_SELECT(PG_VD_CMP(a[k], PG_VD(set1)(6.0), _CMP_LT_OQ), one, tail);
        const pg_vd r = PG_VD_SELECT(PG_VD_CMP(a[k], one, _CMP_LT_OQ), far, near0);
        const pg_vi rs =
            PG_VI_BITS(or)(PG_VI_BITS(andnot)(sign, PG_VD_BITS(r)), PG_VI_BITS(and)(sign, PG_VD_BITS(x[k])));
        erf[k] = PG_VD_SELECT(PG_VD_CMP(x[k], x[k], _CMP_EQ_OQ), x[k], PG_VD_OF_BITS(rs));
    }
}

/* pg_vgaussf */
PG_ALWAYS_INLINE void pg_vgaussf_n(pg_vf *e, const pg_vf *x, int n)
{
    const pg_vf half = PG_VF(set1)(-0.5f);
    pg_vf h[4], l[4];
    PG_VLANES(k, n) h[k] = PG_VF(mul)(x[k], x[k]);
    PG_VLANES(k, n) l[k] = PG_VF(fmsub)(x[k], x[k], h[k]);
    PG_VLANES(k, n) l[k] = PG_VF_KEEP(PG_VF_CMP(l[k], l[k], _CMP_EQ_OQ), l[k]);
    PG_VLANES(k, n) h[k] = PG_VF(mul)(half, h[k]);
    pg_vexpf_n(e, h, n);
    PG_VLANES(k, n) e[k] = PG_VF(fmadd)(PG_VF(mul)(half, l[k]), e[k], e[k]);
}

/* pg_vncdff_r: Horner's steps from the leading coefficient */
PG_ALWAYS_INLINE void pg_vncdff_r_n(pg_vf *r, const pg_vf *v, int n)
{
    static const float c[11] = {-0.25686460733413696f, 0.36453911662101746f, -0.17046022415161133f,
                                -0.1298529952764511f,  0.1610693782567978f,  0.05792813003063202f,
                                -0.13731645047664642f, -0.07483464479446411f, 0.14550715684890747f,
                                0.2805614769458771f,   1.1558215717855091e-08f};
    PG_VLANES(k, n) r[k] = PG_VF(set1)(0.06841329485177994f);
    _Pragma("GCC unroll 11") for (int i = 0; i < 11; i++)
    {
        PG_VLANES(k, n) r[k] = PG_VF(fmadd)(r[k], v[k], PG_VF(set1)(c[i]));
    }
}

/* pg_vncdff_with, each select a blend: x < 0 ? -x : x with -x as 0 - x (the same where x < 0) */
PG_ALWAYS_INLINE void pg_vncdff_with_n(pg_vf *cdf, const pg_vf *x, const pg_vf *e, int n)
{
    const pg_vf one = PG_VF(set1)(1.0f), half = PG_VF(set1)(0.5f), c = PG_VF(set1)(0.26190823316574097f);
    pg_vf_mask neg[4];
    pg_vf a[4], d[4], t[4], dl[4], v[4], r[4];
    PG_VLANES(k, n) neg[k] = PG_VF_CMP(x[k], PG_VF(setzero)(), _CMP_LT_OQ);
    PG_VLANES(k, n) a[k] = PG_VF_SELECT(neg[k], x[k], PG_VF(sub)(PG_VF(setzero)(), x[k]));
    PG_VLANES(k, n) d[k] = PG_VF(fmadd)(half, a[k], one);
    PG_VLANES(k, n) t[k] = PG_VF(div)(one, d[k]);
    PG_VLANES(k, n)
    {
        const pg_vf rem = PG_VF(fmadd)(half, a[k], PG_VF(sub)(one, d[k]));
        dl[k] = PG_VF(fnmadd)(rem, t[k], PG_VF(fnmadd)(d[k], t[k], one));
    }
    PG_VLANES(k, n) v[k] = PG_VF(sub)(t[k], PG_VF(set1)(0.25999999046325684f));
    pg_vncdff_r_n(r, v, n);
    PG_VLANES(k, n)
    {
        const pg_vf p = PG_VF(add)(c, r[k]), p_err = PG_VF(sub)(r[k], PG_VF(sub)(p, c));
        const pg_vf slope = PG_VF(fmadd)(PG_VF(set1)(0.6396522521972656f), v[k], PG_VF(set1)(0.34231677651405334f));
        const pg_vf hi = PG_VF(mul)(t[k], p);
        const pg_vf lo = PG_VF(fmadd)(t[k], PG_VF(fmadd)(dl[k], slope, p_err), PG_VF(fmsub)(t[k], p, hi));
        r[k] = PG_VF(fmadd)(e[k], hi, PG_VF(mul)(e[k], lo)); /* Phi(-a) */
    }
    PG_VLANES(k, n)
    {
        const pg_vf tail = PG_VF_SELECT(neg[k], PG_VF(sub)(one, r[k]), r[k]);
        const pg_vf far = PG_VF_SELECT(neg[k], one, PG_VF(setzero)());
        cdf[k] = PG_VF_SELECT(PG_VF_CMP(a[k], PG_VF(set1)(14.0f), _CMP_GT_OQ), tail, far);
    }
}
#endif

#endif
