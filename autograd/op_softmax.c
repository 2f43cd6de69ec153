/* softmax and log_softmax over any axis, forward and backward side by side.
 *
 * x is viewed as (outer, n, inner) with n the softmax axis. When the axis is
 * the last (inner == 1) each row is contiguous; otherwise the kernels walk
 * blocks of up to CHUNK adjacent columns at once, so the innermost loops stay
 * contiguous and no permuted copy is made.
 *
 * Stability: every row is shifted by its maximum. A row that is all -inf has
 * no maximum to shift by: softmax gives zeros, log_softmax -inf. Outputs that
 * are -inf in log_softmax (0 in softmax) do not depend on x, so they neither
 * receive nor pass gradient; hence a fully masked row gets zero gradient and
 * never NaN.
 *
 * Backward (p = softmax(x), y the output, dy its gradient):
 *   softmax:     dx = y * (dy - sum(dy * y))
 *   log_softmax: dx = dy - exp(y) * sum(dy), sum and dx over entries with
 *                y != -inf only (dx = 0 where y = -inf; torch would pass dy
 *                there and count it in the sum, posgrad treats those outputs
 *                as the constants they are). Equal to torch whenever dy is 0
 *                at the -inf outputs, which any finite loss implies. */
#include "op_util.h"

#include "../tensor/threadpool.h"
#include "../tensor/vmath.h"

#include <tgmath.h>

#define CHUNK 64 /* columns per block in the strided kernels */

/* The shift for a row with maximum m: 0 for an all -inf row (x - m would be NaN). */
#define SHIFT(m) ((m) == -INFINITY ? (T)0 : (m))
/* log(s) for s = sum(exp(x - shift)), 0 for an all -inf row (s == 0) so that
 * y = (x - shift) - log(s) stays -inf there. NaN propagates. Subtracting the
 * shift first keeps y exact to an ulp of itself, not of the logits. */
#define LOGSUM(s) ((s) == 0 ? (T)0 : log(s))
#define INV(s) ((s) == 0 ? (T)0 : (T)1 / (s))
#define ALIVE(y) ((y) != -INFINITY) /* NaN stays alive: it propagates */

/* exp(a - b): f32 from tensor/vmath.h with the difference taken in double (the
 * loops vectorise; within an ulp of expf), f64 from libm (the reference path
 * stays exact to rounding) */
static inline float exp_diff_f(float a, float b) { return (float)pg_vexp((double)a - (double)b); }
static inline double exp_diff_d(double a, double b) { return exp(a - b); }
#define EXP_DIFF(a, b) _Generic((a), float: exp_diff_f, default: exp_diff_d)(a, (T)(b))

/* row maxima, sums and dot products: op_util.h's lane reductions */
DEFINE_ROW_MAX(float, f32)
DEFINE_ROW_MAX(double, f64)
DEFINE_ROW_SUM(float, f32)
DEFINE_ROW_SUM(double, f64)
DEFINE_ROW_DOT(float, f32)
DEFINE_ROW_DOT(double, f64)

#define DEFINE_SOFTMAX(TY, sfx)                                                                                \
    /* x, y: (rows, n) */                                                                                      \
    static void rows_fwd_##sfx(TY *restrict y, const TY *restrict x, int64_t rows, int64_t n, bool logsm)         \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        for (int64_t r = 0; r < rows; r++, x += n, y += n) {                                                   \
            T shift = SHIFT(row_max_##sfx(x, n)); /* NaN skipped here, it propagates through s */             \
            for (int64_t k = 0; k < n; k++)                                                                    \
                y[k] = (T)EXP_DIFF(x[k], shift);                                                               \
            T s = row_sum_##sfx(y, n);                                                                   \
            if (logsm) {                                                                                       \
                T ls = LOGSUM(s);                                                                              \
                for (int64_t k = 0; k < n; k++)                                                                \
                    y[k] = (x[k] - shift) - ls;                                                                \
            } else {                                                                                           \
                T inv = INV(s);                                                                                \
                for (int64_t k = 0; k < n; k++)                                                                \
                    y[k] *= inv;                                                                               \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    /* x, y: (outer, n, inner); columns j0 .. j0 + w of one outer slice at a time */                           \
    static void cols_fwd_##sfx(TY *restrict y, const TY *restrict x, int64_t outer, int64_t n, int64_t inner,    \
                               bool logsm)                                                                     \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        T m[CHUNK], s[CHUNK];                                                                                  \
        for (int64_t o = 0; o < outer; o++)                                                                    \
            for (int64_t j0 = 0; j0 < inner; j0 += CHUNK) {                                                    \
                int64_t w = inner - j0 < CHUNK ? inner - j0 : CHUNK;                                           \
                const T *xs = x + o * n * inner + j0;                                                          \
                T *ys = y + o * n * inner + j0;                                                                \
                for (int64_t j = 0; j < w; j++)                                                                \
                    m[j] = -INFINITY, s[j] = 0;                                                                \
                for (int64_t k = 0; k < n; k++)                                                                \
                    for (int64_t j = 0; j < w; j++)                                                            \
                        m[j] = xs[k * inner + j] > m[j] ? xs[k * inner + j] : m[j];                            \
                for (int64_t j = 0; j < w; j++)                                                                \
                    m[j] = SHIFT(m[j]);                                                                        \
                if (logsm) {                                                                                   \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++)                                                        \
                            s[j] += (T)EXP_DIFF(xs[k * inner + j], m[j]);                                      \
                    for (int64_t j = 0; j < w; j++)                                                            \
                        s[j] = LOGSUM(s[j]);                                                                   \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++)                                                        \
                            ys[k * inner + j] = (xs[k * inner + j] - m[j]) - s[j];                             \
                } else {                                                                                       \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++) {                                                      \
                            ys[k * inner + j] = (T)EXP_DIFF(xs[k * inner + j], m[j]);                          \
                            s[j] += ys[k * inner + j];                                                         \
                        }                                                                                      \
                    for (int64_t j = 0; j < w; j++)                                                            \
                        s[j] = INV(s[j]);                                                                      \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++)                                                        \
                            ys[k * inner + j] *= s[j];                                                         \
                }                                                                                              \
            }                                                                                                  \
    }                                                                                                          \
    /* gx += dx for rows of (rows, n); the formulas are in the file comment */                                 \
    static void rows_bwd_##sfx(TY *restrict gx, const TY *restrict gy, const TY *restrict y, int64_t rows,        \
                               int64_t n, bool logsm)                                                          \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        for (int64_t r = 0; r < rows; r++, gx += n, gy += n, y += n) {                                         \
            T s = 0;                                                                                           \
            if (logsm) {                                                                                       \
                for (int64_t k = 0; k < n; k++)                                                                \
                    s += ALIVE(y[k]) ? gy[k] : (T)0;                                                           \
                for (int64_t k = 0; k < n; k++)                                                                \
                    gx[k] += ALIVE(y[k]) ? gy[k] - (T)EXP_DIFF(y[k], 0) * s : (T)0;                            \
            } else {                                                                                           \
                s = row_dot_##sfx(gy, y, n);                                                                   \
                for (int64_t k = 0; k < n; k++)                                                                \
                    gx[k] += y[k] * (gy[k] - s);                                                               \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    /* the same on (outer, n, inner), CHUNK columns at a time */                                               \
    static void cols_bwd_##sfx(TY *restrict gx, const TY *restrict gy, const TY *restrict y, int64_t outer,       \
                               int64_t n, int64_t inner, bool logsm)                                           \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        T s[CHUNK];                                                                                            \
        for (int64_t o = 0; o < outer; o++)                                                                    \
            for (int64_t j0 = 0; j0 < inner; j0 += CHUNK) {                                                    \
                int64_t w = inner - j0 < CHUNK ? inner - j0 : CHUNK, base = o * n * inner + j0;                \
                const T *ys = y + base, *gys = gy + base;                                                      \
                T *gxs = gx + base;                                                                            \
                for (int64_t j = 0; j < w; j++)                                                                \
                    s[j] = 0;                                                                                  \
                if (logsm) {                                                                                   \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++)                                                        \
                            s[j] += ALIVE(ys[k * inner + j]) ? gys[k * inner + j] : (T)0;                      \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++) {                                                      \
                            T yv = ys[k * inner + j];                                                          \
                            gxs[k * inner + j] += ALIVE(yv) ? gys[k * inner + j] - (T)EXP_DIFF(yv, 0) * s[j] : (T)0; \
                        }                                                                                      \
                } else {                                                                                       \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++)                                                        \
                            s[j] += gys[k * inner + j] * ys[k * inner + j];                                    \
                    for (int64_t k = 0; k < n; k++)                                                            \
                        for (int64_t j = 0; j < w; j++)                                                        \
                            gxs[k * inner + j] += ys[k * inner + j] * (gys[k * inner + j] - s[j]);             \
                }                                                                                              \
            }                                                                                                  \
    }

DEFINE_SOFTMAX(float, f32)
DEFINE_SOFTMAX(double, f64)

/* ---- drivers --------------------------------------------------------------------- */

/* Rows of a last-axis softmax over the thread pool: each row is independent, so
 * the result does not depend on the split (whole rows per slice). */
#define SOFTMAX_GRAIN 32768 /* elements per slice at least */

typedef struct rows_job {
    bool f32, logsm, backward;
    int64_t n;
    void *out;             /* y, or gx */
    const void *x, *gy, *y; /* forward: x; backward: gy, y */
} rows_job;

static void rows_slice(void *ctx, int64_t r0, int64_t r1)
{
    const rows_job *j = ctx;
    int64_t off = r0 * j->n, rows = r1 - r0;
    if (j->f32 && !j->backward)
        rows_fwd_f32((float *)j->out + off, (const float *)j->x + off, rows, j->n, j->logsm);
    else if (!j->backward)
        rows_fwd_f64((double *)j->out + off, (const double *)j->x + off, rows, j->n, j->logsm);
    else if (j->f32)
        rows_bwd_f32((float *)j->out + off, (const float *)j->gy + off, (const float *)j->y + off, rows, j->n,
                     j->logsm);
    else
        rows_bwd_f64((double *)j->out + off, (const double *)j->gy + off, (const double *)j->y + off, rows, j->n,
                     j->logsm);
}

static void rows_parallel(rows_job *j, int64_t rows)
{
    int64_t grain = SOFTMAX_GRAIN / (j->n > 0 ? j->n : 1);
    pg_parallel_range(rows, grain > 0 ? grain : 1, rows_slice, j);
}

/* n->ip: outer, n, inner, log flag */
static int softmax_backward(pg_graph *g, pg_node *node)
{
    pg_tensor *x = node->in[0], *y = node->out;
    pg_tensor *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    int64_t outer = node->ip[0], n = node->ip[1], inner = node->ip[2];
    bool logsm = node->ip[3] != 0;
    if (inner == 1) {
        rows_job j = {x->dtype == PG_F32, logsm, true, n, gx->data, NULL, y->grad->data, y->data};
        rows_parallel(&j, outer);
    } else if (x->dtype == PG_F32) {
        cols_bwd_f32(gx->data, y->grad->data, y->data, outer, n, inner, logsm);
    } else {
        cols_bwd_f64(gx->data, y->grad->data, y->data, outer, n, inner, logsm);
    }
    return 0;
}

static pg_tensor *softmax_op(pg_graph *g, const char *fn, pg_tensor *x, int axis, bool logsm)
{
    if (!arg_float(g, fn, "x", x))
        return NULL;
    /* a 0-dim tensor is one row of one element (axis 0 or -1, as torch) */
    int a = x->ndim == 0 && (axis == 0 || axis == -1) ? 0 : axis_arg(g, fn, axis, x->ndim, x);
    if (a < 0)
        return NULL;
    int64_t outer = 1, n = x->ndim ? x->shape[a] : 1, inner = 1;
    for (int d = 0; d < a; d++)
        outer *= x->shape[d];
    for (int d = a + 1; d < x->ndim; d++)
        inner *= x->shape[d];
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    if (inner == 1) {
        rows_job j = {x->dtype == PG_F32, logsm, false, n, y->data, x->data, NULL, NULL};
        rows_parallel(&j, outer);
    } else if (x->dtype == PG_F32) {
        cols_fwd_f32(y->data, x->data, outer, n, inner, logsm);
    } else {
        cols_fwd_f64(y->data, x->data, outer, n, inner, logsm);
    }
    pg_node *node = pg_op_record(g, fn, y, 1, &x, softmax_backward);
    if (node) {
        node->ip[0] = outer;
        node->ip[1] = n;
        node->ip[2] = inner;
        node->ip[3] = logsm;
    }
    return y;
}

pg_tensor *pg_softmax(pg_graph *g, pg_tensor *x, int axis) { return softmax_op(g, "pg_softmax", x, axis, false); }

pg_tensor *pg_log_softmax(pg_graph *g, pg_tensor *x, int axis)
{
    return softmax_op(g, "pg_log_softmax", x, axis, true);
}
