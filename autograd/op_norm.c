/* layer_norm and rms_norm over the last norm_ndim dims, forward and backward
 * side by side. x is viewed as (rows, D), D the product of the normalised dims;
 * weight and bias, when given, have exactly the shape of those dims.
 *
 * Both are one kernel: rms_norm is layer_norm without centring.
 *   layer_norm: mean = mean(x), var = mean((x - mean)^2) (biased, as torch)
 *   rms_norm:   mean = 0,       var = mean(x^2)
 *   rstd = 1 / sqrt(var + eps), xhat = (x - mean) * rstd, y = xhat * w + b
 * Row statistics are accumulated in double for both dtypes (two passes, no
 * cancellation) and saved per row in the graph arena for the backward.
 *
 * Backward, with dxhat = dy * w (w = 1 without weight), means over the row:
 *   layer_norm: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *   rms_norm:   dx = rstd * (dxhat - xhat * mean(dxhat * xhat))
 *   dw = sum over rows of dy * xhat,  db = sum over rows of dy.
 * (Differentiate xhat through mean and rstd: d rstd / dx_i = -rstd^3 (x_i -
 * mean) / D; the mean(dxhat) term comes from d mean / dx_i = 1 / D.) */
#include "op_util.h"

#include <tgmath.h>

/* Per-row statistics saved for the backward: stats[2r] = mean, stats[2r+1] = rstd. */
typedef struct norm_ctx {
    double *stats;
    bool center;
} norm_ctx;

#define DEFINE_NORM(TY, sfx)                                                                                   \
    /* x, y: (rows, D); w, b: (D) or NULL; stats: (rows, 2) or NULL */                                         \
    static void norm_fwd_##sfx(TY *restrict y, const TY *restrict x, const TY *restrict w,                       \
                               const TY *restrict b, double *restrict stats, int64_t rows, int64_t D,              \
                               double eps, bool center)                                                        \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        for (int64_t r = 0; r < rows; r++, x += D, y += D) {                                                   \
            double mean = 0, var = 0;                                                                          \
            if (center) {                                                                                      \
                for (int64_t j = 0; j < D; j++)                                                                \
                    mean += x[j];                                                                              \
                mean /= (double)D;                                                                             \
            }                                                                                                  \
            for (int64_t j = 0; j < D; j++)                                                                    \
                var += ((double)x[j] - mean) * ((double)x[j] - mean);                                          \
            double rstd = 1.0 / sqrt(var / (double)D + eps);                                                   \
            if (stats)                                                                                         \
                stats[2 * r] = mean, stats[2 * r + 1] = rstd;                                                  \
            T mu = (T)mean, rs = (T)rstd;                                                                      \
            for (int64_t j = 0; j < D; j++)                                                                    \
                y[j] = (x[j] - mu) * rs * (w ? w[j] : (T)1) + (b ? b[j] : (T)0);                               \
        }                                                                                                      \
    }                                                                                                          \
    /* gx (rows, D) += dx, or NULL; aw, ab (D) += dw, db in double, or NULL */                                 \
    static void norm_bwd_##sfx(TY *restrict gx, double *restrict aw, double *restrict ab, const TY *restrict gy,   \
                               const TY *restrict x, const TY *restrict w, const double *restrict stats,         \
                               int64_t rows, int64_t D, bool center)                                           \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        for (int64_t r = 0; r < rows; r++, x += D, gy += D) {                                                  \
            T mu = (T)stats[2 * r], rs = (T)stats[2 * r + 1];                                                  \
            if (aw || ab)                                                                                      \
                for (int64_t j = 0; j < D; j++) {                                                              \
                    if (aw)                                                                                    \
                        aw[j] += (double)(gy[j] * ((x[j] - mu) * rs));                                         \
                    if (ab)                                                                                    \
                        ab[j] += (double)gy[j];                                                                \
                }                                                                                              \
            if (!gx)                                                                                           \
                continue;                                                                                      \
            double sd = 0, sdx = 0; /* sum(dxhat), sum(dxhat * xhat) */                                       \
            for (int64_t j = 0; j < D; j++) {                                                                  \
                T d = gy[j] * (w ? w[j] : (T)1);                                                               \
                sd += d;                                                                                       \
                sdx += d * ((x[j] - mu) * rs);                                                                 \
            }                                                                                                  \
            T md = center ? (T)(sd / (double)D) : (T)0, mdx = (T)(sdx / (double)D);                           \
            for (int64_t j = 0; j < D; j++) {                                                                  \
                T d = gy[j] * (w ? w[j] : (T)1);                                                               \
                gx[j] += rs * (d - md - (x[j] - mu) * rs * mdx);                                               \
            }                                                                                                  \
            gx += D;                                                                                           \
        }                                                                                                      \
    }

DEFINE_NORM(float, f32)
DEFINE_NORM(double, f64)

/* ---- drivers --------------------------------------------------------------------- */

/* gw += acc (double) */
static void add_acc(pg_tensor *gw, const double *acc)
{
    if (gw->dtype == PG_F32) {
        float *p = gw->data;
        for (int64_t j = 0; j < gw->numel; j++)
            p[j] += (float)acc[j];
    } else {
        double *p = gw->data;
        for (int64_t j = 0; j < gw->numel; j++)
            p[j] += acc[j];
    }
}

/* zeroed double scratch of D entries in the graph arena, or NULL when not needed */
static bool acc_for(pg_graph *g, const pg_tensor *grad, int64_t D, double **acc)
{
    *acc = NULL;
    if (!grad)
        return true;
    *acc = pg_graph_alloc(g, (size_t)(D ? D : 1) * sizeof(double));
    if (!*acc)
        return false;
    for (int64_t j = 0; j < D; j++)
        (*acc)[j] = 0.0;
    return true;
}

/* n->in: x, weight, bias (the last two may be NULL); n->ip: rows, D; n->ctx: norm_ctx */
static int norm_backward(pg_graph *g, pg_node *n)
{
    const norm_ctx *c = n->ctx;
    pg_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    pg_tensor *gx = pg_grad_of(g, x), *gw = pg_grad_of(g, w), *gb = pg_grad_of(g, b);
    if ((x->requires_grad && !gx) || (w && w->requires_grad && !gw) || (b && b->requires_grad && !gb))
        return -1;
    int64_t rows = n->ip[0], D = n->ip[1];
    double *aw, *ab;
    if (!acc_for(g, gw, D, &aw) || !acc_for(g, gb, D, &ab))
        return -1;
    void *gxd = gx ? gx->data : NULL, *wd = w ? w->data : NULL;
    if (x->dtype == PG_F32)
        norm_bwd_f32(gxd, aw, ab, y->grad->data, x->data, wd, c->stats, rows, D, c->center);
    else
        norm_bwd_f64(gxd, aw, ab, y->grad->data, x->data, wd, c->stats, rows, D, c->center);
    if (gw)
        add_acc(gw, aw);
    if (gb)
        add_acc(gb, ab);
    return 0;
}

/* weight / bias: NULL, or x's dtype and the shape of x's last norm_ndim dims */
static bool affine_arg(pg_graph *g, const char *fn, const char *name, const pg_tensor *p, const pg_tensor *x,
                       int norm_ndim)
{
    if (!p)
        return true;
    if (!arg_float(g, fn, name, p))
        return false;
    if (p->dtype != x->dtype) {
        pg_graph_fail(g, "%s: dtypes differ: x is %s, %s is %s", fn, SHAPE(x), name, SHAPE(p));
        return false;
    }
    bool same = p->ndim == norm_ndim;
    for (int d = 0; same && d < norm_ndim; d++)
        same = p->shape[d] == x->shape[x->ndim - norm_ndim + d];
    if (!same)
        pg_graph_fail(g, "%s: %s must have the shape of the last %d dims of x: x is %s, %s is %s", fn, name,
                      norm_ndim, SHAPE(x), name, SHAPE(p));
    return same;
}

static pg_tensor *norm_op(pg_graph *g, const char *fn, pg_tensor *x, int norm_ndim, pg_tensor *w, pg_tensor *b,
                          double eps, bool center)
{
    if (!arg_float(g, fn, "x", x))
        return NULL;
    if (norm_ndim < 1 || norm_ndim > x->ndim) {
        pg_graph_fail(g, "%s: norm_ndim %d out of range for x %s (1..%d)", fn, norm_ndim, SHAPE(x), x->ndim);
        return NULL;
    }
    if (!(eps >= 0) || isinf(eps)) {
        pg_graph_fail(g, "%s: eps must be finite and >= 0, got %g", fn, eps);
        return NULL;
    }
    if (!affine_arg(g, fn, "weight", w, x, norm_ndim) || !affine_arg(g, fn, "bias", b, x, norm_ndim))
        return NULL;
    int64_t rows = 1, D = 1;
    for (int d = 0; d < x->ndim; d++)
        *(d < x->ndim - norm_ndim ? &rows : &D) *= x->shape[d];
    pg_tensor *in[3] = {x, w, b};
    norm_ctx *c = NULL;
    if (pg_op_needs_grad(g, 3, in)) {
        c = pg_graph_alloc(g, sizeof *c);
        double *stats = pg_graph_alloc(g, (size_t)(rows ? 2 * rows : 1) * sizeof(double));
        if (!c || !stats)
            return NULL;
        c->stats = stats;
        c->center = center;
    }
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    void *wd = w ? w->data : NULL, *bd = b ? b->data : NULL;
    double *stats = c ? c->stats : NULL;
    if (x->dtype == PG_F32)
        norm_fwd_f32(y->data, x->data, wd, bd, stats, rows, D, eps, center);
    else
        norm_fwd_f64(y->data, x->data, wd, bd, stats, rows, D, eps, center);
    pg_node *n = pg_op_record(g, fn, y, 3, in, norm_backward);
    if (n) {
        n->ctx = c;
        n->ip[0] = rows;
        n->ip[1] = D;
        n->p[0] = eps;
    }
    return y;
}

pg_tensor *pg_layer_norm(pg_graph *g, pg_tensor *x, int norm_ndim, pg_tensor *weight, pg_tensor *bias,
                         double eps)
{
    return norm_op(g, "pg_layer_norm", x, norm_ndim, weight, bias, eps, true);
}

pg_tensor *pg_rms_norm(pg_graph *g, pg_tensor *x, int norm_ndim, pg_tensor *weight, double eps)
{
    return norm_op(g, "pg_rms_norm", x, norm_ndim, weight, NULL, eps, false);
}
