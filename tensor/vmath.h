/* Vectorisable elementary functions for the float32 kernels (internal).
 *
 * libm's expf and erff are calls, and a call in a loop keeps GCC from
 * vectorising it. These are branch-free arithmetic on doubles (selects, not
 * jumps), so a loop over floats that calls them becomes SIMD code, and the
 * float result is rounded once from a double accurate to ~1e-8 relative:
 * within an ulp or so of the correctly rounded value. The float64 kernels keep
 * libm (exact parity with PyTorch to 1e-10).
 *
 *   pg_vexp(x)  = e^x            (relative error < 1e-15 for x in [-708, 708];
 *                                 0 below, +inf above, NaN stays NaN)
 *   pg_vncdf(x) = Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF
 *                                (relative error < 3e-8 for x >= -16.9, which covers
 *                                every float result but 0) */
#ifndef PG_VMATH_H
#define PG_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

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
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
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

#endif
