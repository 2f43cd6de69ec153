/* Unary elementwise ops, forward and backward side by side.
 *
 * Each op is one row of UNARY_OPS: its name, y = f(x) and dy/dx written in
 * terms of x, y and the op's two scalar parameters a, b. The rows expand into
 * an f32 and an f64 kernel (tgmath picks expf or exp from the type), a
 * backward rule and the public function. */
#include "op_util.h"

#include "../tensor/threadpool.h"
#include "../tensor/vmath.h"

#include <tgmath.h>

#define INV_SQRT2 0.70710678118654752440   /* 1/sqrt(2) */
#define INV_SQRT2PI 0.39894228040143267794 /* 1/sqrt(2 pi) */
#define SQRT_2_OVER_PI 0.79788456080286535588
#define GELU_C 0.044715

#define SIGMOID(x) _Generic((x), float: pg_vsigmoidf, default: pg_sigmoid_d)(x)
#define SIGN(x) (T)((x) > 0 ? 1 : (x) < 0 ? -1 : (x))

/* GELU and its derivative Phi(x) + x phi(x): tensor/vmath.h's float functions for
 * float (the loops vectorise 16 lanes wide; Phi and phi share e^(-x^2/2)), and for double
 * PyTorch's formula x (1 + erf(x / sqrt 2)) / 2 with vmath's erf (within an ulp, as libm's,
 * which is a call: the loop did not vectorise) */
static inline float gelu_f(float x) { return x * pg_vncdff(x); }
/* double: Phi(x) from u = x / sqrt 2 and e = e^(-u^2), which erf's tail and the density
 * phi(x) = e / sqrt(2 pi) share (e^(-u^2) for e^(-x^2 / 2): within a few ulps times x^2 / 2,
 * 1e-13 relative at |x| = 30) */
static inline double gauss_d(double u) { return pg_vexp(-u * u); }
static inline double ncdf_with_d(double u, double e) { return 0.5 * (1.0 + pg_verf_with(u, e)); }
static inline double gelu_d(double x)
{
    const double u = x * INV_SQRT2;
    return x * ncdf_with_d(u, gauss_d(u));
}
/* Phi(x) + x phi(x) from e = e^(-x^2/2) and cdf = Phi(x) (also the saving forwards below) */
static inline float dgelu_with_f(float x, float e, float cdf) { return fmaf(x * (float)INV_SQRT2PI, e, cdf); }
static inline double dgelu_with_d(double x, double e, double cdf) { return cdf + x * INV_SQRT2PI * e; }
/* the table's backward below; a recorded GELU saves f'(x) in its forward instead (the
 * saving kernels), so only a direct call of the kernel would reach these */
static inline float dgelu_f(float x, float y)
{
    (void)y;
    const float e = pg_vgaussf(x);
    return dgelu_with_f(x, e, pg_vncdff_with(x, e));
}
static inline double dgelu_d(double x, double y)
{
    (void)y;
    const double u = x * INV_SQRT2, e = gauss_d(u);
    return dgelu_with_d(x, e, ncdf_with_d(u, e));
}
#define GELU(x) _Generic((x), float: gelu_f, default: gelu_d)(x)
#define DGELU(x, y) _Generic((x), float: dgelu_f, default: dgelu_d)(x, y)

/* softplus(x) = log(1 + e^x), x itself above 20 (PyTorch's threshold): float through
 * vmath's pg_vsoftplusf (the loop vectorises), double through libm's log1p(exp(x)) */
static inline double softplus_d(double x) { return x > 20.0 ? x : log1p(exp(x)); }
#define SOFTPLUS(x) _Generic((x), float: pg_vsoftplusf, default: softplus_d)(x)

/* tanh-form GELU: y = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3) */
#define GELU_U(x) ((T)SQRT_2_OVER_PI * ((x) + (T)GELU_C * (x) * (x) * (x)))

/*  name        forward y(x, a, b)                              dy/dx (x, y, a, b)                        */
#define UNARY_OPS(X)                                                                                           \
    X(neg, -x, (T)-1)                                                                                          \
    X(abs, fabs(x), SIGN(x))                                                                                   \
    X(exp, exp(x), y)                                                                                          \
    X(log, log(x), (T)1 / x)                                                                                   \
    X(log1p, log1p(x), (T)1 / ((T)1 + x))                                                                      \
    X(sqrt, sqrt(x), (T)0.5 / y)                                                                               \
    X(rsqrt, (T)1 / sqrt(x), (T)-0.5 * y * y * y)                                                              \
    X(square, x * x, (T)2 * x)                                                                                 \
    X(sin, sin(x), cos(x))                                                                                     \
    X(cos, cos(x), -sin(x))                                                                                    \
    X(tanh, tanh(x), (T)1 - y * y)                                                                             \
    X(sigmoid, SIGMOID(x), y * ((T)1 - y))                                                                     \
    X(relu, x > 0 ? x : (x == x ? (T)0 : x), (T)(x > 0))                                                       \
    /* d/dx x Phi(x) = Phi(x) + x phi(x) */                                                                    \
    X(gelu, GELU(x), DGELU(x, y))                                                                              \
    X(gelu_tanh, (T)0.5 * x * ((T)1 + tanh(GELU_U(x))),                                                        \
      (T)0.5 * ((T)1 + tanh(GELU_U(x))) +                                                                      \
          (T)0.5 * x * ((T)1 - tanh(GELU_U(x)) * tanh(GELU_U(x))) * (T)SQRT_2_OVER_PI *                        \
              ((T)1 + (T)(3 * GELU_C) * x * x))                                                                \
    X(silu, x * SIGMOID(x), SIGMOID(x) * ((T)1 + x * ((T)1 - SIGMOID(x))))                                     \
    X(softplus, SOFTPLUS(x), x > (T)20 ? (T)1 : SIGMOID(x))                                                     \
    /* NaN passes through; the gradient flows where a <= x <= b */                                             \
    X(clamp, x < (T)a ? (T)a : (x > (T)b ? (T)b : x), (T)(x >= (T)a && x <= (T)b))                             \
    /* torch: the gradient of x^0 is 0 everywhere */                                                           \
    X(pow_scalar, pow(x, (T)a), a == 0 ? (T)0 : (T)a * pow(x, (T)(a - 1)))                                     \
    X(add_scalar, x + (T)a, (T)1)                                                                              \
    X(mul_scalar, x * (T)a, (T)a)

/* ops without a gradient */
#define FLAT_OPS(X)                                                                                            \
    X(sign, SIGN(x))                                                                                           \
    X(floor, floor(x))                                                                                         \
    X(round, nearbyint(x)) /* default rounding mode: half to even */

/* ---- kernels: y[i] = f(x[i]) and gx[i] += gy[i] * f'(x[i]) --------------------- */

/* y[i] = f(x[i]) for one element type */
#define DEFINE_FWD_T(name, fwd, TY, sfx)                                                                       \
    static void name##_fwd_##sfx(TY *restrict ys, const TY *restrict xs, int64_t n, double a, double b)        \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        (void)a, (void)b;                                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                                      \
            T x = xs[i];                                                                                       \
            ys[i] = fwd;                                                                                       \
        }                                                                                                      \
    }

/* gx[i] += gy[i] * f'(x[i]) for one element type; gx[i] = ... when assign (a fresh
 * gradient, pg_grad_fresh: nothing to add to) */
#define DEFINE_BWD_T(name, deriv, TY, sfx)                                                                     \
    static void name##_bwd_##sfx(TY *restrict gx, const TY *restrict gy, const TY *restrict xs,                \
                                 const TY *restrict ys, int64_t n, double a, double b, bool assign)            \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        (void)a, (void)b, (void)xs, (void)ys;                                                                  \
        if (assign)                                                                                            \
            for (int64_t i = 0; i < n; i++) {                                                                  \
                T x = xs[i], y = ys[i];                                                                        \
                (void)x, (void)y;                                                                              \
                gx[i] = gy[i] * (deriv);                                                                       \
            }                                                                                                  \
        else                                                                                                   \
            for (int64_t i = 0; i < n; i++) {                                                                  \
                T x = xs[i], y = ys[i];                                                                        \
                (void)x, (void)y;                                                                              \
                gx[i] += gy[i] * (deriv);                                                                      \
            }                                                                                                  \
    }

#define DEFINE_KERNELS(name, fwd, deriv)                                                                       \
    DEFINE_FWD_T(name, fwd, float, f32)                                                                        \
    DEFINE_FWD_T(name, fwd, double, f64)                                                                       \
    DEFINE_BWD_T(name, deriv, float, f32)                                                                      \
    DEFINE_BWD_T(name, deriv, double, f64)
#define DEFINE_FLAT_KERNELS(name, fwd)                                                                         \
    DEFINE_FWD_T(name, fwd, float, f32)                                                                        \
    DEFINE_FWD_T(name, fwd, double, f64)

UNARY_OPS(DEFINE_KERNELS)
FLAT_OPS(DEFINE_FLAT_KERNELS)

/* ---- ops whose forward also saves the derivative ---------------------------------
 * GELU's backward would compute e^(-x^2/2) and Phi(x) again (f32), or e^(-x^2/2) and a
 * division (f64): as much work as the forward. When the op is recorded, the forward writes
 * f'(x) = Phi(x) + x phi(x) beside y (the expressions of gelu_f / gelu_d and dgelu_f /
 * dgelu_d, so the same bits as the unrecorded forward) and the backward is one product per
 * element: gx (+)= gy * d. */
typedef void (*fwd_saving)(void *, void *, const void *, int64_t);

#if defined(PG_VEC)
/* gelu_fwd_saving_f32 on n vectors of floats (tensor/vmath.h's width; `last` lanes of the
 * last one): gelu_f's and dgelu_with_f's operations through vmath.h's vector functions, the
 * same bits */
PG_ALWAYS_INLINE void gelu_saving_vf_n(float *ys, float *ds, const float *xs, int n, int64_t last)
{
    pg_vf x[4], e[4], cdf[4];
    PG_VLANES(k, n) x[k] = pg_vf_loadn(xs + PG_VF_LANES * k, k < n - 1 ? PG_VF_LANES : last);
    pg_vgaussf_n(e, x, n);
    pg_vncdff_with_n(cdf, x, e, n);
    PG_VLANES(k, n)
    {
        const pg_vf d = PG_VF(fmadd)(PG_VF(mul)(x[k], PG_VF(set1)((float)INV_SQRT2PI)), e[k], cdf[k]);
        pg_vf_storen(ys + PG_VF_LANES * k, k < n - 1 ? PG_VF_LANES : last, PG_VF(mul)(x[k], cdf[k]));
        pg_vf_storen(ds + PG_VF_LANES * k, k < n - 1 ? PG_VF_LANES : last, d);
    }
}
#endif

static void gelu_fwd_saving_f32(void *ys_, void *ds_, const void *xs_, int64_t n)
{
    float *restrict ys = ys_, *restrict ds = ds_;
    const float *restrict xs = xs_;
    int64_t i = 0;
#if defined(PG_VEC)
    for (; i + 4 * PG_VF_LANES <= n; i += 4 * PG_VF_LANES) /* four vectors at a time (vmath.h, PG_VLANES) */
        gelu_saving_vf_n(ys + i, ds + i, xs + i, 4, PG_VF_LANES);
    for (; i < n; i += PG_VF_LANES)
        gelu_saving_vf_n(ys + i, ds + i, xs + i, 1, n - i);
#endif
    for (; i < n; i++) {
        const float x = xs[i], e = pg_vgaussf(x), cdf = pg_vncdff_with(x, e);
        ys[i] = x * cdf;
        ds[i] = dgelu_with_f(x, e, cdf);
    }
}

#if defined(PG_VEC)
/* gelu_fwd_saving_f64 on n vectors of doubles (`last` lanes of the last one): gelu_d's and
 * dgelu_with_d's operations through vmath.h's vector functions, the same bits */
PG_ALWAYS_INLINE void gelu_saving_vd_n(double *ys, double *ds, const double *xs, int n, int64_t last)
{
    pg_vd x[4], u[4], e[4], erf[4];
    PG_VLANES(k, n) x[k] = pg_vd_loadn(xs + PG_VD_LANES * k, k < n - 1 ? PG_VD_LANES : last);
    PG_VLANES(k, n) u[k] = PG_VD(mul)(x[k], PG_VD(set1)(INV_SQRT2));
    PG_VLANES(k, n)
    { /* (-u) u: u's sign bit flipped, as C's -u */
        const pg_vi neg_u = PG_VI_BITS(xor)(PG_VD_BITS(u[k]), PG_VI_SET1_64(INT64_MIN));
        e[k] = PG_VD(mul)(PG_VD_OF_BITS(neg_u), u[k]);
    }
    pg_vexp_n(e, e, n);
    pg_verf_with_n(erf, u, e, n);
    PG_VLANES(k, n)
    {
        const pg_vd cdf = PG_VD(mul)(PG_VD(set1)(0.5), PG_VD(add)(PG_VD(set1)(1.0), erf[k]));
        const pg_vd xe = PG_VD(mul)(PG_VD(mul)(x[k], PG_VD(set1)(INV_SQRT2PI)), e[k]);
        pg_vd_storen(ys + PG_VD_LANES * k, k < n - 1 ? PG_VD_LANES : last, PG_VD(mul)(x[k], cdf));
        pg_vd_storen(ds + PG_VD_LANES * k, k < n - 1 ? PG_VD_LANES : last, PG_VD(add)(cdf, xe));
    }
}
#endif

static void gelu_fwd_saving_f64(void *ys_, void *ds_, const void *xs_, int64_t n)
{
    double *restrict ys = ys_, *restrict ds = ds_;
    const double *restrict xs = xs_;
    int64_t i = 0;
#if defined(PG_VEC)
    for (; i + 4 * PG_VD_LANES <= n; i += 4 * PG_VD_LANES) /* four vectors at a time (vmath.h, PG_VLANES) */
        gelu_saving_vd_n(ys + i, ds + i, xs + i, 4, PG_VD_LANES);
    for (; i < n; i += PG_VD_LANES)
        gelu_saving_vd_n(ys + i, ds + i, xs + i, 1, n - i);
#endif
    for (; i < n; i++) {
        const double x = xs[i], u = x * INV_SQRT2, e = gauss_d(u), cdf = ncdf_with_d(u, e);
        ys[i] = x * cdf;
        ds[i] = dgelu_with_d(x, e, cdf);
    }
}

#define DEFINE_BWD_SAVED(T, sfx)                                                                               \
    static void bwd_saved_##sfx(T *restrict gx, const T *restrict gy, const T *restrict ds, int64_t n,         \
                                bool assign)                                                                   \
    {                                                                                                          \
        if (assign)                                                                                            \
            for (int64_t i = 0; i < n; i++)                                                                    \
                gx[i] = gy[i] * ds[i];                                                                         \
        else                                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                                    \
                gx[i] += gy[i] * ds[i];                                                                        \
    }
DEFINE_BWD_SAVED(float, f32)
DEFINE_BWD_SAVED(double, f64)

/* ---- the shared driver --------------------------------------------------------- */

typedef void (*fwd_f32)(float *, const float *, int64_t, double, double);
typedef void (*fwd_f64)(double *, const double *, int64_t, double, double);
typedef void (*bwd_f32)(float *, const float *, const float *, const float *, int64_t, double, double, bool);
typedef void (*bwd_f64)(double *, const double *, const double *, const double *, int64_t, double, double, bool);

typedef struct unary_kind {
    const char *name;
    fwd_f32 f32;
    fwd_f64 f64;
    bwd_f32 b32;
    bwd_f64 b64;
} unary_kind;

/* Elementwise kernels run over slices of the tensor on the thread pool (each
 * element's result does not depend on the split), of at least UNARY_GRAIN
 * elements, or LIBM_GRAIN for the ops that call libm per element (unary_grain). */
#define UNARY_GRAIN 32768
#define LIBM_GRAIN 1024

typedef struct unary_job {
    const unary_kind *k;
    bool f32, backward, assign; /* assign: gx is fresh (written, not added to) */
    void *out;                  /* y, or gx */
    const void *x, *y, *gy;
    double a, b;
    fwd_saving saving; /* forward: also write f'(x) into d */
    void *d;           /* the saved f'(x) (x's dtype), or NULL */
} unary_job;

static void unary_slice(void *ctx, int64_t i0, int64_t i1)
{
    const unary_job *j = ctx;
    int64_t n = i1 - i0;
    const size_t at = (size_t)i0 * (j->f32 ? sizeof(float) : sizeof(double)); /* byte offset of element i0 */
    if (j->d && !j->backward)
        j->saving((char *)j->out + at, (char *)j->d + at, (const char *)j->x + at, n);
    else if (j->d && j->f32)
        bwd_saved_f32((float *)j->out + i0, (const float *)j->gy + i0, (const float *)j->d + i0, n, j->assign);
    else if (j->d)
        bwd_saved_f64((double *)j->out + i0, (const double *)j->gy + i0, (const double *)j->d + i0, n, j->assign);
    else if (j->f32 && !j->backward)
        j->k->f32((float *)j->out + i0, (const float *)j->x + i0, n, j->a, j->b);
    else if (!j->backward)
        j->k->f64((double *)j->out + i0, (const double *)j->x + i0, n, j->a, j->b);
    else if (j->f32)
        j->k->b32((float *)j->out + i0, (const float *)j->gy + i0, (const float *)j->x + i0,
                  (const float *)j->y + i0, n, j->a, j->b, j->assign);
    else
        j->k->b64((double *)j->out + i0, (const double *)j->gy + i0, (const double *)j->x + i0,
                  (const double *)j->y + i0, n, j->a, j->b, j->assign);
}

static int64_t unary_grain(const unary_kind *k);

static int unary_backward(pg_graph *g, pg_node *n)
{
    const unary_kind *k = n->ctx;
    pg_tensor *x = n->in[0], *y = n->out;
    bool fresh;
    pg_tensor *gx = pg_grad_fresh(g, x, &fresh);
    if (!gx)
        return -1;
    unary_job j = {k,       x->dtype == PG_F32, true, fresh, gx->data, x->data, y->data, y->grad->data,
                   n->p[0], n->p[1], NULL, n->saved ? n->saved->data : NULL};
    pg_parallel_range(x->numel, unary_grain(k), unary_slice, &j);
    return 0;
}

static fwd_saving saving_kernel(const unary_kind *k, const pg_tensor *x);

static pg_tensor *unary(pg_graph *g, const unary_kind *k, pg_tensor *x, double a, double b)
{
    if (!arg_float(g, k->name, "x", x))
        return NULL;
    pg_tensor *y = pg_op_output(g, k->name, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    pg_tensor *d = NULL; /* f'(x) for the backward, when the forward can save it */
    fwd_saving saving = pg_op_needs_grad(g, 1, &x) ? saving_kernel(k, x) : NULL;
    if (saving && !(d = pg_op_output(g, k->name, x->dtype, x->ndim, x->shape)))
        return NULL;
    unary_job j = {k, x->dtype == PG_F32, false, false, y->data, x->data, NULL, NULL, a, b, saving, d ? d->data : NULL};
    pg_parallel_range(x->numel, unary_grain(k), unary_slice, &j);
    if (k->b32) {
        pg_node *n = pg_op_record(g, k->name, y, 1, &x, unary_backward);
        if (n) {
            n->ctx = (void *)k;
            n->p[0] = a;
            n->p[1] = b;
            n->saved = d;
        }
    }
    return y;
}

#define KIND(name) static const unary_kind name##_kind = {"pg_" #name, name##_fwd_f32, name##_fwd_f64, name##_bwd_f32, name##_bwd_f64};
#define FLAT_KIND(name) static const unary_kind name##_kind = {"pg_" #name, name##_fwd_f32, name##_fwd_f64, NULL, NULL};
#define DEFINE_KIND(name, fwd, deriv) KIND(name)
#define DEFINE_FLAT_KIND(name, fwd) FLAT_KIND(name)
UNARY_OPS(DEFINE_KIND)
FLAT_OPS(DEFINE_FLAT_KIND)

/* An element of these costs a libm call (7-40 ns) forward or backward (softplus only in
 * float64: its float kernels are vectorised, and keep this grain, not timed apart), 10-100
 * times a vectorised op's: XL's sinusoid table (511 x 64) is one task at
 * UNARY_GRAIN; rotary's and xPos's cos, sin and exp tables (256 x 16, 4096
 * elements a layer, a side) took 29.5 us a call on one thread, 16 us on two
 * (LIBM_GRAIN 4096 had kept them on one: two tasks need twice the grain); the
 * other ops' tensors are larger or cheap */
static int64_t unary_grain(const unary_kind *k)
{
    static const unary_kind *const libm[] = {&exp_kind,  &log_kind,       &log1p_kind,    &sin_kind,       &cos_kind,
                                             &tanh_kind, &gelu_tanh_kind, &softplus_kind, &pow_scalar_kind};
    for (size_t i = 0; i < sizeof libm / sizeof libm[0]; i++)
        if (k == libm[i])
            return LIBM_GRAIN;
    return UNARY_GRAIN;
}

/* the saving forward of k for x's dtype, or NULL (every op but GELU) */
static fwd_saving saving_kernel(const unary_kind *k, const pg_tensor *x)
{
    if (k != &gelu_kind)
        return NULL;
    return x->dtype == PG_F32 ? gelu_fwd_saving_f32 : gelu_fwd_saving_f64;
}

/* ---- public functions ------------------------------------------------------------ */

#define PLAIN(name)                                                                                            \
    pg_tensor *pg_##name(pg_graph *g, pg_tensor *x) { return unary(g, &name##_kind, x, 0.0, 0.0); }

PLAIN(neg)
PLAIN(abs)
PLAIN(sign)
PLAIN(exp)
PLAIN(log)
PLAIN(log1p)
PLAIN(sqrt)
PLAIN(rsqrt)
PLAIN(square)
PLAIN(sin)
PLAIN(cos)
PLAIN(tanh)
PLAIN(sigmoid)
PLAIN(relu)
PLAIN(gelu)
PLAIN(gelu_tanh)
PLAIN(silu)
PLAIN(softplus)
PLAIN(floor)
PLAIN(round)

pg_tensor *pg_clamp(pg_graph *g, pg_tensor *x, double lo, double hi)
{
    if (lo > hi || lo != lo || hi != hi) {
        pg_graph_fail(g, "pg_clamp: bad bounds lo %g, hi %g", lo, hi);
        return NULL;
    }
    return unary(g, &clamp_kind, x, lo, hi);
}

pg_tensor *pg_pow_scalar(pg_graph *g, pg_tensor *x, double p) { return unary(g, &pow_scalar_kind, x, p, 0.0); }
pg_tensor *pg_add_scalar(pg_graph *g, pg_tensor *x, double c) { return unary(g, &add_scalar_kind, x, c, 0.0); }
pg_tensor *pg_mul_scalar(pg_graph *g, pg_tensor *x, double c) { return unary(g, &mul_scalar_kind, x, c, 0.0); }
