/* tensor/vmath.h: the vectorisable exp and normal CDF behind the float32 GELU
 * agree with libm (double) to their stated accuracy, including the far tail,
 * the overflow/underflow ends and NaN; GELU in f32 then sits within a few ulps
 * of the f64 op. */
#include "testutil.h"

#include <float.h>

#include "../tensor/vmath.h"

Test(vmath, exp_matches_libm)
{
    double worst = 0;
    for (double x = -707.5; x < 708.5; x += 0.0731) {
        double e = exp(x), rel = fabs(pg_vexp(x) - e) / e;
        worst = rel > worst ? rel : worst;
    }
    cr_assert_lt(worst, 1e-15, "worst relative error %.3g", worst);
    cr_assert_eq(pg_vexp(0.0), 1.0);
    cr_assert_eq(pg_vexp(-800.0), 0.0);
    cr_assert_eq(pg_vexp(-INFINITY), 0.0);
    cr_assert(isinf(pg_vexp(800.0)) && isinf(pg_vexp(INFINITY)));
    cr_assert(isnan(pg_vexp(NAN)));
}

Test(vmath, normal_cdf_matches_erfc_in_both_tails)
{
    double worst = 0;
    for (double x = -16.9; x < 9.0; x += 0.00913) {
        double e = 0.5 * erfc(-x / sqrt(2.0)), rel = fabs(pg_vncdf(x) - e) / e;
        worst = rel > worst ? rel : worst;
    }
    cr_assert_lt(worst, 3e-8, "worst relative error %.3g", worst);
    cr_assert_eq(pg_vncdf(0.0), 0.5);
    cr_assert_lt(pg_vncdf(-20.0), 1e-85, "far tail: tiny, not clamped");
    cr_assert_gt(pg_vncdf(-20.0), 2e-89);
    cr_assert_eq(pg_vncdf(INFINITY), 1.0);
    cr_assert_eq(pg_vncdf(-INFINITY), 0.0);
    cr_assert(isnan(pg_vncdf(NAN)));
}

/* pg_verf against mpmath's erf, correctly rounded (tests/fixtures/gen_vmath_erf.py: a grid and
 * random points over [-7, 7], tiny and subnormal arguments, the neighbours of the pieces' ends
 * 1 and 6): within an ulp everywhere, as glibc's erf (checked beside it); the ends exact */
static double ulps_off(double v, double ref)
{
    double ulp = nextafter(fabs(ref), INFINITY) - fabs(ref);
    return ref == 0 ? (v == 0 ? 0 : INFINITY) : fabs(v - ref) / ulp;
}

Test(vmath, erf_within_an_ulp_of_mpmath)
{
    pg_tensor_list l = fixture("vmath_erf.safetensors");
    const pg_tensor *x = fx(&l, "x"), *ref = fx(&l, "erf");
    double worst = 0, worst_libm = 0, at = 0;
    for (int64_t i = 0; i < x->shape[0]; i++) {
        double xi = pg_f64(x)[i], e = pg_f64(ref)[i], off = ulps_off(pg_verf(xi), e);
        if (off > worst)
            worst = off, at = xi;
        worst_libm = fmax(worst_libm, ulps_off(erf(xi), e));
    }
    cr_assert_gt(x->shape[0], 5000);
    cr_assert_leq(worst, 1.0, "pg_verf: %.3g ulps at x = %.17g (libm: %.3g)", worst, at, worst_libm);
    cr_assert_eq(pg_verf(0.0), 0.0);
    cr_assert(signbit(pg_verf(-0.0)), "erf(-0) = -0");
    cr_assert_eq(pg_verf(6.0), 1.0);
    cr_assert_eq(pg_verf(-30.0), -1.0);
    cr_assert_eq(pg_verf(INFINITY), 1.0);
    cr_assert_eq(pg_verf(-INFINITY), -1.0);
    cr_assert(isnan(pg_verf(NAN)));
    pg_tensor_list_free_all(&l);
}

/* f64 GELU (x (1 + erf(x / sqrt 2)) / 2, PyTorch's formula, through pg_verf) beside the same
 * formula through libm's erf. Each erf is within an ulp, so the two differ by at most two ulps
 * of erf (eps near +-1), which 1 + erf keeps as an absolute error in the negative tail (where
 * it cancels, in PyTorch as here): |difference| <= 4 eps |gelu| + eps |x| / 2 x 2 */
Test(vmath, gelu_f64_matches_libm_formula)
{
    enum { N = 20001 };
    pg_tensor *x = pg_empty(NULL, PG_F64, PG_SHAPE(N));
    for (int i = 0; i < N; i++)
        pg_f64(x)[i] = -40.0 + 60.0 * i / (N - 1);
    pg_tensor *y = pg_gelu(NULL, x);
    cr_assert(y, "%s", pg_last_error());
    for (int i = 0; i < N; i++) {
        double xi = pg_f64(x)[i], e = xi * (0.5 * (1.0 + erf(xi * 0.70710678118654752440)));
        cr_assert_leq(fabs(pg_f64(y)[i] - e), 4 * DBL_EPSILON * fabs(e) + DBL_EPSILON * fabs(xi), "gelu(%.17g) = %.17g, libm %.17g",
                      xi, pg_f64(y)[i], e);
    }
    pg_tensor_free(y);
    pg_tensor_free(x);
}

/* the float versions at float inputs: e^x within 1.4 ulps (relative 8.4e-8), Phi within
 * 2.3e-7 down to x = -12.5, with the same ends and NaN */
Test(vmath, float_exp_and_normal_cdf_match_libm)
{
    double worst_exp = 0, worst_cdf = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.000731f) {
        double e = exp((double)x), rel = fabs(pg_vexpf(x) - e) / e;
        worst_exp = rel > worst_exp ? rel : worst_exp;
    }
    for (float x = -12.5f; x < 9.0f; x += 0.0000913f) {
        double e = 0.5 * erfc(-(double)x / sqrt(2.0)), rel = fabs(pg_vncdff(x) - e) / e;
        worst_cdf = rel > worst_cdf ? rel : worst_cdf;
    }
    cr_assert_lt(worst_exp, 8.4e-8, "exp: worst relative error %.3g", worst_exp);
    cr_assert_lt(worst_cdf, 2.3e-7, "Phi: worst relative error %.3g", worst_cdf);
    cr_assert_eq(pg_vexpf(0.0f), 1.0f);
    cr_assert_eq(pg_vexpf(-90.0f), 0.0f);
    cr_assert_eq(pg_vexpf(-INFINITY), 0.0f);
    cr_assert(isinf(pg_vexpf(89.0f)) && isinf(pg_vexpf(INFINITY)));
    cr_assert(isnan(pg_vexpf(NAN)) && isnan(pg_vncdff(NAN)));
    cr_assert_eq(pg_vncdff(0.0f), 0.5f);
    cr_assert_eq(pg_vncdff(INFINITY), 1.0f);
    cr_assert_eq(pg_vncdff(-INFINITY), 0.0f);
    cr_assert_eq(pg_vncdff(-14.0f), 0.0f, "below -13.2 the tail is subnormal: 0");
}

/* Phi and GELU's x Phi(x) (the product rounded in float, as GELU does) at every 1009th float
 * of [-12.5, 12.5], walked by its bits (so each binade gets its share: ~2.1M inputs), against
 * erfc in double. Every float there gives at most 1.8e-7 and 2.2e-7 (pg_vncdff_with's
 * comment); a tail evaluated in float without its exact remainders gives 5e-7 near x = -0.63 */
static void ncdf_f32_worst(float x, double *worst, double *worst_gelu, float *at, float *at_gelu)
{
    const double ref = 0.5 * erfc(-(double)x * 0.70710678118654752440), cdf = pg_vncdff(x);
    const double rel = fabs(cdf - ref) / ref, gelu = x * (float)cdf;
    const double rel_gelu = x == 0 ? 0 : fabs(gelu - x * ref) / fabs(x * ref);
    if (rel > *worst)
        *worst = rel, *at = x;
    if (fabs(x * ref) >= FLT_MIN && rel_gelu > *worst_gelu) /* a subnormal product has fewer bits */
        *worst_gelu = rel_gelu, *at_gelu = x;
}

Test(vmath, float_normal_cdf_and_gelu_at_sampled_floats)
{
    const uint32_t top = 0x41480000u, sign = 0x80000000u; /* 12.5's bits; the sign bit */
    double worst = 0, worst_gelu = 0;
    float at = 0, at_gelu = 0;
    for (uint32_t u = 0; u <= top; u += 1009) {
        ncdf_f32_worst(float_of_bits(u), &worst, &worst_gelu, &at, &at_gelu);
        ncdf_f32_worst(float_of_bits(u | sign), &worst, &worst_gelu, &at, &at_gelu);
    }
    ncdf_f32_worst(-12.5f, &worst, &worst_gelu, &at, &at_gelu);
    cr_assert_lt(worst, 2.0e-7, "Phi: worst relative error %.3g at x = %.9g", worst, at);
    cr_assert_lt(worst_gelu, 2.3e-7, "x Phi(x): worst relative error %.3g at x = %.9g", worst_gelu, at_gelu);
    cr_assert_eq(pg_vncdff(-0.0f), 0.5f);
    cr_assert_eq(pg_vncdff(FLT_TRUE_MIN), 0.5f);
    cr_assert_eq(pg_vncdff(14.0f), 1.0f);
}

/* The vector forms (tensor/vmath.h, AVX-512's 16 floats / 8 doubles a register or AVX2's 8 /
 * 4; without either these tests are not built). L and LD: this build's lanes. */
#if defined(PG_VEC)
enum { L = PG_VF_LANES, LD = PG_VD_LANES };

/* pg_vexpf_v: pg_vexpf's bits, a vector at a time, at every 1021st float bit pattern (both
 * signs: +-0, subnormals, the clamps at -87 and 88, overflow, +-inf, NaN) and at the ends of
 * its range (checked over all 2^32 floats when it was written) */
Test(vmath, float_exp_vector_same_bits)
{
    const float edges[16] = {-87.0f, -87.00001f, -86.99999f, 88.0f, 88.72283f, 88.72284f, 88.73f, -88.0f,
                             0.0f, -0.0f, INFINITY, -INFINITY, NAN, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-20f};
    float x[16], got[16];
    for (uint64_t b = 0; b < (1ull << 32) + 16 * 1021; b += 16 * 1021) {
        for (int l = 0; l < 16; l++)
            x[l] = b < (1ull << 32) ? float_of_bits((uint32_t)(b + (uint64_t)l * 1021)) : edges[l];
        for (int v = 0; v < 16; v += L)
            PG_VF(storeu)(got + v, pg_vexpf_v(PG_VF(loadu)(x + v)));
        for (int l = 0; l < 16; l++) {
            const float want = pg_vexpf(x[l]);
            cr_assert(!memcmp(&got[l], &want, sizeof want), "pg_vexpf_v(%a) = %a, pg_vexpf's %a", x[l], got[l], want);
        }
    }
}

/* pg_vgaussf_n and pg_vncdff_with_n: pg_vgaussf's and pg_vncdff_with's bits, four vectors at
 * a time and one, at every 1021st float bit pattern (both signs: +-0, subnormals, the tails
 * past 13.2 and 14, +-inf, NaN) and at the edges of their branches */
static void gauss_ncdf_lanes_match(const float *x, int n)
{
    pg_vf xv[4], e[4], cdf[4];
    float got_e[4 * L], got_cdf[4 * L];
    for (int k = 0; k < n; k++)
        xv[k] = PG_VF(loadu)(x + L * k);
    if (n == 4) {
        pg_vgaussf_n(e, xv, 4);
        pg_vncdff_with_n(cdf, xv, e, 4);
    } else {
        pg_vgaussf_n(e, xv, 1);
        pg_vncdff_with_n(cdf, xv, e, 1);
    }
    for (int k = 0; k < n; k++) {
        PG_VF(storeu)(got_e + L * k, e[k]);
        PG_VF(storeu)(got_cdf + L * k, cdf[k]);
    }
    for (int l = 0; l < L * n; l++) {
        const float want_e = pg_vgaussf(x[l]), want_cdf = pg_vncdff_with(x[l], want_e);
        cr_assert(!memcmp(&got_e[l], &want_e, sizeof want_e), "pg_vgaussf_n(%a) = %a, pg_vgaussf's %a", x[l],
                  got_e[l], want_e);
        cr_assert(!memcmp(&got_cdf[l], &want_cdf, sizeof want_cdf), "pg_vncdff_with_n(%a) = %a, pg_vncdff_with's %a",
                  x[l], got_cdf[l], want_cdf);
    }
}

Test(vmath, float_gauss_and_normal_cdf_vectors_same_bits)
{
    const float edges[16] = {14.0f, 14.000001f, -14.0f, -14.000001f, 13.2f, -13.2f, 1.85f, -1.85f,
                             0.0f, -0.0f, INFINITY, -INFINITY, NAN, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-20f};
    float x[4 * L];
    for (uint64_t b = 0; b < (1ull << 32); b += 4 * L * 1021) {
        for (int l = 0; l < 4 * L; l++)
            x[l] = float_of_bits((uint32_t)(b + (uint64_t)l * 1021));
        gauss_ncdf_lanes_match(x, 4);
        gauss_ncdf_lanes_match(x + L, 1);
    }
    for (int v = 0; v < 16; v += L)
        gauss_ncdf_lanes_match(edges + v, 1);
}

/* pg_vexp_n and pg_verf_with_n: pg_vexp's and pg_verf_with's bits, four vectors at a time and
 * one, at a million doubles of every exponent (random bit patterns), a million in [-40, 40]
 * and at the edges of their branches (the clamps at -708 and 709, erf's pieces at 1 and 6,
 * +-0, subnormals, +-inf, NaN) */
static void exp_erf_lanes_match(const double *x, int n)
{
    pg_vd xv[4], e[4], erf[4];
    double got_e[4 * LD], got_erf[4 * LD];
    for (int k = 0; k < n; k++)
        xv[k] = PG_VD(loadu)(x + LD * k);
    pg_vd in_place[4]; /* pg_vexp_n's result over its argument, as exp_row_f64 takes it */
    for (int k = 0; k < n; k++)
        in_place[k] = xv[k];
    if (n == 4) {
        pg_vexp_n(e, xv, 4);
        pg_vexp_n(in_place, in_place, 4);
        pg_verf_with_n(erf, xv, e, 4);
    } else {
        pg_vexp_n(e, xv, 1);
        pg_vexp_n(in_place, in_place, 1);
        pg_verf_with_n(erf, xv, e, 1);
    }
    for (int k = 0; k < n; k++)
        cr_assert(!memcmp(&in_place[k], &e[k], sizeof e[k]), "pg_vexp_n in place differs");
    for (int k = 0; k < n; k++) {
        PG_VD(storeu)(got_e + LD * k, e[k]);
        PG_VD(storeu)(got_erf + LD * k, erf[k]);
    }
    for (int l = 0; l < LD * n; l++) {
        const double want_e = pg_vexp(x[l]), want_erf = pg_verf_with(x[l], want_e);
        cr_assert(!memcmp(&got_e[l], &want_e, sizeof want_e), "pg_vexp_n(%a) = %a, pg_vexp's %a", x[l], got_e[l],
                  want_e);
        cr_assert(!memcmp(&got_erf[l], &want_erf, sizeof want_erf), "pg_verf_with_n(%a) = %a, pg_verf_with's %a",
                  x[l], got_erf[l], want_erf);
    }
}

Test(vmath, double_exp_and_erf_vectors_same_bits)
{
    const double edges[40] = {-708.0, -708.0000000001, -707.9999999, 709.0, 709.0000000001, 708.9999999, -745.0, 710.0,
                              1.0, 0.9999999999999999, 1.0000000000000002, -1.0, 6.0, 5.999999999999999, -6.0, 6.5,
                              0.0, -0.0, INFINITY, -INFINITY, NAN, -NAN, DBL_TRUE_MIN, -DBL_TRUE_MIN,
                              DBL_MIN, 1e-300, -1e-300, 0.5, -0.5, 2.0, -3.0, 27.0,
                              -27.0, 1e300, -1e300, 0.1, 3.0, 4.0, 5.0, 0.75};
    pg_rng r = pg_rng_init(17);
    double x[32];
    for (int i = 0; i < 2 * 31250; i++) {
        for (int l = 0; l < 32; l++) {
            uint64_t bits = (uint64_t)(pg_rng_uniform(&r) * 4294967296.0) << 32 |
                            (uint64_t)(pg_rng_uniform(&r) * 4294967296.0);
            double v;
            memcpy(&v, &bits, sizeof v);
            x[l] = i % 2 ? v : 80.0 * pg_rng_uniform(&r) - 40.0;
        }
        for (int v = 0; v < 32; v += 4 * LD)
            exp_erf_lanes_match(x + v, 4);
        exp_erf_lanes_match(x + LD, 1);
    }
    for (int v = 0; v + 4 * LD <= 40; v += 4 * LD)
        exp_erf_lanes_match(edges + v, 4);
    for (int v = 0; v < 40; v += LD)
        exp_erf_lanes_match(edges + v, 1);
}

/* the partial loads and stores (pg_vf_loadn, pg_vf_storen and the double ones): the first
 * count lanes, the others 0 loaded and untouched stored */
Test(vmath, partial_vectors_load_and_store_their_lanes_only)
{
    float xf[L], yf[L];
    double xd[LD], yd[LD];
    for (int count = 1; count <= L; count++) {
        for (int l = 0; l < L; l++)
            xf[l] = (float)(l + 1), yf[l] = -1.0f;
        pg_vf_storen(yf, count, pg_vf_loadn(xf, count));
        for (int l = 0; l < L; l++)
            cr_assert_eq(yf[l], l < count ? xf[l] : -1.0f, "float, %d lanes: lane %d is %g", count, l, yf[l]);
        float all[L];
        PG_VF(storeu)(all, pg_vf_loadn(xf, count));
        for (int l = count; l < L; l++)
            cr_assert_eq(all[l], 0.0f, "float, %d lanes: lane %d loaded as %g", count, l, all[l]);
    }
    for (int count = 1; count <= LD; count++) {
        for (int l = 0; l < LD; l++)
            xd[l] = l + 1, yd[l] = -1.0;
        pg_vd_storen(yd, count, pg_vd_loadn(xd, count));
        for (int l = 0; l < LD; l++)
            cr_assert_eq(yd[l], l < count ? xd[l] : -1.0, "double, %d lanes: lane %d is %g", count, l, yd[l]);
    }
}
#endif

/* f32 GELU and its gradient against libm in double at the same float inputs: the
 * value relative to itself, the gradient Phi(x) + x phi(x) relative to its terms'
 * size (the two cancel near x = -0.75, as they do in any float computation) */
Test(vmath, gelu_f32_within_ulps_of_f64)
{
    enum { N = 4001 };
    pg_tensor *x64 = pg_empty(NULL, PG_F64, PG_SHAPE(N));
    for (int i = 0; i < N; i++)
        pg_f64(x64)[i] = -20.0 + 30.0 * i / (N - 1);
    pg_tensor *x32 = pg_cast(NULL, x64, PG_F32);
    pg_set_requires_grad(x64, true);
    pg_set_requires_grad(x32, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *y64 = pg_gelu(g, x64), *y32 = pg_gelu(g, x32);
    cr_assert_eq(pg_backward(g, pg_sum(g, y64, 0, NULL, false)), 0);
    cr_assert_eq(pg_backward(g, pg_sum(g, y32, 0, NULL, false)), 0);
    for (int i = 0; i < N; i++) {
        double xi = pg_f32(x32)[i]; /* compare at the float input itself */
        double cdf = 0.5 * erfc(-xi / sqrt(2.0)), xpdf = xi * exp(-0.5 * xi * xi) / sqrt(2.0 * 3.14159265358979323846);
        double e = xi * cdf, de = cdf + xpdf;
        double a = pg_f32(y32)[i], da = pg_f32(x32->grad)[i];
        cr_assert_leq(fabs(a - e), 4e-7 * fmax(fabs(e), 1e-30), "gelu(%.9g) = %.9g, expected %.9g", xi, a, e);
        cr_assert_leq(fabs(da - de), 4e-7 * (fabs(cdf) + fabs(xpdf)) + 1e-37, "gelu'(%.9g) = %.9g, expected %.9g",
                      xi, da, de);
    }
    pg_graph_free(g);
    pg_tensor_free(x32);
    pg_tensor_free(x64);
}

/* The recorded GELU writes f'(x) beside y and its backward multiplies by it: its y
 * equals the unrecorded forward's bit for bit (odd lengths reach the loops' remainders),
 * the fresh (=) and accumulating (+=) backward agree (two uses of x: the gradient is the
 * sum of both products), and an upstream gradient scales it. Values read as double (pg_get). */
static void saved_derivative_paths_agree(pg_dtype dtype)
{
    enum { N = 1037 };
    pg_rng r = pg_rng_init(11);
    pg_tensor *x = pg_randn(NULL, dtype, PG_SHAPE(N), &r), *up = pg_randn(NULL, dtype, PG_SHAPE(N), &r);
    pg_tensor *x4 = pg_mul_scalar(NULL, x, 4.0);
    pg_tensor_free(x);
    x = x4;
    pg_tensor *plain = pg_gelu(NULL, x);
    pg_set_requires_grad(x, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_gelu(g, x);
    cr_assert(plain && y, "%s", pg_last_error());
    cr_assert_eq(memcmp(plain->data, y->data, (size_t)N * pg_dtype_size(dtype)), 0, "recorded and plain GELU differ");
    cr_assert_eq(pg_backward_with(g, y, up), 0, "%s", pg_graph_error(g));
    pg_tensor *once = pg_cast(NULL, x->grad, dtype);
    pg_zero_grad(x);
    pg_graph_reset(g);
    pg_tensor *y1 = pg_gelu(g, x), *y2 = pg_gelu(g, x);
    cr_assert_eq(pg_backward_with(g, pg_add(g, y1, y2), up), 0, "%s", pg_graph_error(g));
    for (int i = 0; i < N; i++)
        cr_assert_eq(pg_get(x->grad, i), pg_get(once, i) + pg_get(once, i), "element %d: %.17g vs 2 x %.17g", i, pg_get(x->grad, i),
                     pg_get(once, i));
    pg_zero_grad(x);
    pg_graph_reset(g);
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_gelu(g, x), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    for (int i = 0; i < N; i++) {
        cr_assert_eq(pg_get(once, i), dtype == PG_F32 ? (double)(pg_f32(up)[i] * pg_f32(x->grad)[i])
                                                  : pg_f64(up)[i] * pg_f64(x->grad)[i], "element %d", i);
        if (dtype == PG_F64) { /* Phi(x) + x phi(x) through libm's erfc: within a few ulps of its terms,
                                * plus eps for Phi = (1 + erf) / 2, which cancels in the left tail */
            double xi = pg_f64(x)[i], cdf = 0.5 * erfc(-xi / sqrt(2.0));
            double xpdf = xi * exp(-0.5 * xi * xi) / sqrt(2.0 * 3.14159265358979323846);
            cr_assert_leq(fabs(pg_f64(x->grad)[i] - (cdf + xpdf)), 4 * DBL_EPSILON * (fabs(cdf) + fabs(xpdf)) + DBL_EPSILON,
                          "gelu'(%.17g) = %.17g, libm %.17g", xi, pg_f64(x->grad)[i], cdf + xpdf);
        }
    }
    pg_graph_free(g);
    pg_tensor_free(once);
    pg_tensor_free(plain);
    pg_tensor_free(up);
    pg_tensor_free(x);
}

Test(vmath, gelu_f32_saved_derivative_paths_agree) { saved_derivative_paths_agree(PG_F32); }
Test(vmath, gelu_f64_saved_derivative_paths_agree) { saved_derivative_paths_agree(PG_F64); }

/* f32 sigmoid (e^-|x| from pg_vexpf, vectorised) against libm in double at the same float
 * inputs: within 2.5e-7 relative on [-87, 30]; 0 and 1 at the far ends, NaN kept; its
 * gradient y (1 - y) follows */
Test(vmath, sigmoid_f32_within_ulps_of_f64)
{
    enum { N = 11701 };
    pg_tensor *x = pg_empty(NULL, PG_F32, PG_SHAPE(N + 3));
    for (int i = 0; i < N; i++)
        pg_f32(x)[i] = -87.0f + 117.0f * (float)i / (float)(N - 1);
    pg_f32(x)[N] = -200.0f, pg_f32(x)[N + 1] = 200.0f, pg_f32(x)[N + 2] = NAN;
    pg_tensor *y = pg_sigmoid(NULL, x);
    cr_assert(y, "%s", pg_last_error());
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double xi = pg_f32(x)[i], e = 1.0 / (1.0 + exp(-xi)), rel = fabs(pg_f32(y)[i] - e) / e;
        worst = rel > worst ? rel : worst;
    }
    cr_assert_lt(worst, 2.5e-7, "worst relative error %.3g", worst);
    cr_assert_eq(pg_f32(y)[N], 0.0f);
    cr_assert_eq(pg_f32(y)[N + 1], 1.0f);
    cr_assert(isnan(pg_f32(y)[N + 2]));
    pg_tensor_free(y);
    pg_tensor_free(x);
}

/* CoPE's gates a vector at a time (autograd/cope_rows.h, cope_gates_vec_f32, AVX-512 and
 * AVX2 builds): the same bits as pg_vsigmoidf(in_scale s) key by key, over a ramp through
 * [-100, 100], the ends of pg_vexpf's range, +-0, +-inf, NaN and a last vector of 7
 * keys (partial) */
#if defined(PG_VEC)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../autograd/cope_rows.h"
#pragma GCC diagnostic pop

Test(vmath, cope_gates_vector_same_bits_as_pg_vsigmoidf)
{
    enum { N = 4096 + 7 };
    static float s[N], g[N];
    const float edges[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -87.0f, -87.01f, 86.99f, 88.0f,
                           88.73f, -88.73f, 1e-30f, -1e-30f, 1e30f, -1e30f, FLT_MIN, -FLT_MIN};
    const int n_edges = (int)(sizeof edges / sizeof edges[0]);
    for (int i = 0; i < N; i++)
        s[i] = i < n_edges ? edges[i] : -100.0f + 200.0f * (float)i / (float)(N - 1);
    for (int k = 0; k < 2; k++) {
        const float in_scale = k == 0 ? 1.0f : 0.17677669f;
        cr_assert_eq(cope_gates_vec_f32(g, s, N, in_scale), N);
        for (int i = 0; i < N; i++) {
            const float want = pg_vsigmoidf(s[i] * in_scale);
            cr_assert(memcmp(&g[i], &want, sizeof want) == 0 || (isnan(g[i]) && isnan(want)),
                      "s = %.9g, scale %g: %.9g against pg_vsigmoidf's %.9g", s[i], in_scale, g[i], want);
        }
    }
}
#endif
