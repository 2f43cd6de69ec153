/* Elementwise losses with a reduction, forward and backward side by side:
 * mse, l1, smooth l1, huber (d = input - target) and binary cross-entropy
 * with logits. Definitions and conventions are in ops.h; the formulas and
 * their order of operations are torch's (aten/src/ATen/native/Loss.cpp and
 * its CPU kernels, PyTorch 1.13), elementwise in the tensors' dtype.
 *
 * Reductions: NONE writes the per-element losses; SUM and MEAN add them in
 * double, per task of the thread pool and then in task order (so the result
 * is the same for a fixed thread count), MEAN then divides by the count. The
 * backward scales the upstream gradient by 1 (SUM), 1/n (MEAN) or takes it
 * per element (NONE). */
#include "op_util.h"

#include "../tensor/threadpool.h"

#include <tgmath.h>

#define LOSS_GRAIN 32768 /* elements per task at least */
#define LANES 16         /* partial sums, so that the sum loops vectorise */

#define SIGN(x) (T)((x) > 0 ? 1 : (x) < 0 ? -1 : (x)) /* 0 at 0, NaN stays NaN */

/*  name        loss(d, a)                                                  dloss/dd (d, a)
 * a is beta (smooth l1) or delta (huber). At |d| = a both take the linear
 * branch, as torch (forward z < a; backward d <= -a, d >= a). smooth l1 with
 * beta = 0 is routed to l1 (see pg_smooth_l1_loss). */
#define REG_LOSSES(X)                                                                                                  \
    X(mse, d * d, (T)2 * d)                                                                                            \
    X(l1, fabs(d), SIGN(d))                                                                                            \
    X(smooth_l1, fabs(d) < a ? (T)0.5 * fabs(d) * fabs(d) / a : fabs(d) - (T)0.5 * a,                                  \
      d <= -a ? (T)-1 : d >= a ? (T)1 : d / a)                                                                         \
    X(huber, fabs(d) < a ? (T)0.5 * fabs(d) * fabs(d) : a * (fabs(d) - (T)0.5 * a), d <= -a ? -a : d >= a ? a : d)

/* ---- regression kernels ------------------------------------------------------------------ */

#define DEFINE_REG_T(name, loss, deriv, TY, sfx)                                                                       \
    /* out[i] = loss (out non-NULL; returns 0), else the sum of the losses in double */                                \
    static double name##_fwd_##sfx(TY *restrict out, const TY *restrict xs, const TY *restrict ys, int64_t n,          \
                                   double a_)                                                                          \
    {                                                                                                                  \
        typedef TY T;                                                                                                  \
        const T a = (T)a_;                                                                                             \
        (void)a;                                                                                                       \
        if (out) {                                                                                                     \
            for (int64_t i = 0; i < n; i++) {                                                                          \
                const T d = xs[i] - ys[i];                                                                             \
                out[i] = loss;                                                                                         \
            }                                                                                                          \
            return 0;                                                                                                  \
        }                                                                                                              \
        double part[LANES] = {0};                                                                                      \
        int64_t i = 0;                                                                                                 \
        for (; i + LANES <= n; i += LANES)                                                                             \
            for (int l = 0; l < LANES; l++) {                                                                          \
                const T d = xs[i + l] - ys[i + l];                                                                     \
                part[l] += (double)(loss);                                                                             \
            }                                                                                                          \
        double s = 0;                                                                                                  \
        for (int l = 0; l < LANES; l++)                                                                                \
            s += part[l];                                                                                              \
        for (; i < n; i++) {                                                                                           \
            const T d = xs[i] - ys[i];                                                                                 \
            s += (double)(loss);                                                                                       \
        }                                                                                                              \
        return s;                                                                                                      \
    }                                                                                                                  \
    /* gx[i] += u dl/dd and gy[i] -= u dl/dd (either may be NULL; both may be one                                      \
     * buffer when input and target are one tensor), u = up[i] or, up NULL, up0 */                                     \
    static void name##_bwd_##sfx(TY *gx, TY *gy, const TY *up, double up0_, const TY *xs, const TY *ys, int64_t n,     \
                                 double a_)                                                                            \
    {                                                                                                                  \
        typedef TY T;                                                                                                  \
        const T a = (T)a_, up0 = (T)up0_;                                                                              \
        (void)a;                                                                                                       \
        for (int64_t i = 0; i < n; i++) {                                                                              \
            const T d = xs[i] - ys[i];                                                                                 \
            const T gi = (up ? up[i] : up0) * (deriv);                                                                 \
            if (gx)                                                                                                    \
                gx[i] += gi;                                                                                           \
            if (gy)                                                                                                    \
                gy[i] -= gi;                                                                                           \
        }                                                                                                              \
    }

#define DEFINE_REG(name, loss, deriv)                                                                                  \
    DEFINE_REG_T(name, loss, deriv, float, f32)                                                                        \
    DEFINE_REG_T(name, loss, deriv, double, f64)
REG_LOSSES(DEFINE_REG)

typedef struct reg_kind {
    const char *name;
    double (*f32)(float *, const float *, const float *, int64_t, double);
    double (*f64)(double *, const double *, const double *, int64_t, double);
    void (*b32)(float *, float *, const float *, double, const float *, const float *, int64_t, double);
    void (*b64)(double *, double *, const double *, double, const double *, const double *, int64_t, double);
} reg_kind;

#define DEFINE_KIND(name, loss, deriv)                                                                                 \
    static const reg_kind name##_kind = {"pg_" #name "_loss", name##_fwd_f32, name##_fwd_f64, name##_bwd_f32,          \
                                         name##_bwd_f64};
REG_LOSSES(DEFINE_KIND)

/* ---- binary cross-entropy with logits ---------------------------------------------------------
 * torch:  m = max(-x, 0), lse = log(e^-m + e^(-x-m))   (= log(1 + e^-x), stably)
 *   no pos_weight:  l = (1 - y) x + m + lse
 *   pos_weight p:   l = (1 - y) x + ((p - 1) y + 1) (lse + m)
 *   l *= w
 *   dl/dx = w (sigmoid(x) - y),  with p: w (((p y + 1) - y) sigmoid(x) - p y)
 *   dl/dy = w (-x),              with p: w (log_sigmoid(-x) - p log_sigmoid(x)) */

static inline double sigmoid_d(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
static inline float sigmoid_f(float x) { return x >= 0 ? 1.0f / (1.0f + exp(-x)) : exp(x) / (1.0f + exp(x)); }
#define SIGMOID(x) _Generic((x), float: sigmoid_f, default: sigmoid_d)(x)
/* log sigmoid(x) = min(x, 0) - log1p(e^-|x|), as torch's CPU kernel */
static inline double log_sigmoid_d(double x) { return (x < 0 ? x : 0.0) - log1p(exp(-fabs(x))); }
static inline float log_sigmoid_f(float x) { return (x < 0 ? x : 0.0f) - log1p(exp(-fabs(x))); }
#define LOG_SIGMOID(x) _Generic((x), float: log_sigmoid_f, default: log_sigmoid_d)(x)

#define DEFINE_BCE_T(TY, sfx)                                                                                          \
    /* w, pw: weights broadcast to x's shape, or NULL; out as the regression kernels */                                \
    static double bce_fwd_##sfx(TY *out, const TY *xs, const TY *ys, const TY *w, const TY *pw, int64_t n)             \
    {                                                                                                                  \
        typedef TY T;                                                                                                  \
        double s = 0;                                                                                                  \
        for (int64_t i = 0; i < n; i++) {                                                                              \
            const T x = xs[i], y = ys[i];                                                                              \
            const T m = -x > 0 ? -x : (T)0;                                                                            \
            const T lse = log(exp(-m) + exp(-x - m));                                                                  \
            T l = pw ? ((T)1 - y) * x + ((pw[i] - (T)1) * y + (T)1) * (lse + m) : ((T)1 - y) * x + m + lse;            \
            if (w)                                                                                                     \
                l *= w[i];                                                                                             \
            if (out)                                                                                                   \
                out[i] = l;                                                                                            \
            else                                                                                                       \
                s += (double)l;                                                                                        \
        }                                                                                                              \
        return s;                                                                                                      \
    }                                                                                                                  \
    static void bce_bwd_##sfx(TY *gx, TY *gy, const TY *up, double up0_, const TY *xs, const TY *ys, const TY *w,      \
                              const TY *pw, int64_t n)                                                                 \
    {                                                                                                                  \
        typedef TY T;                                                                                                  \
        const T up0 = (T)up0_;                                                                                         \
        for (int64_t i = 0; i < n; i++) {                                                                              \
            const T x = xs[i], y = ys[i], u = (up ? up[i] : up0) * (w ? w[i] : (T)1);                                  \
            if (gx) {                                                                                                  \
                const T s = SIGMOID(x), t = pw ? pw[i] * y : (T)0;                                                     \
                gx[i] += (pw ? ((t + (T)1) - y) * s - t : s - y) * u;                                                  \
            }                                                                                                          \
            if (gy)                                                                                                    \
                gy[i] += (pw ? LOG_SIGMOID(-x) - LOG_SIGMOID(x) * pw[i] : -x) * u;                                     \
        }                                                                                                              \
    }
DEFINE_BCE_T(float, f32)
DEFINE_BCE_T(double, f64)

/* ---- the shared driver: elements in blocks over the thread pool, block t of T takes
 * [t n / T, (t + 1) n / T) (run_job) ------------------------------------------------------------- */

typedef struct loss_job {
    const reg_kind *k; /* NULL: bce */
    bool f32, backward;
    int64_t n, T;
    double a, up0;
    void *out, *gx, *gy;          /* out: per-element losses (NONE) or NULL */
    const void *x, *y, *w, *pw, *up;
    double sums[OP_SUM_BLOCKS_MAX]; /* forward with out NULL: per-block sums */
} loss_job;

#define AT(TY, p) ((p) ? (TY *)(p) + i0 : NULL)

static void loss_task(void *ctx, int64_t t, int thread)
{
    (void)thread;
    loss_job *j = ctx;
    int64_t i0 = t * j->n / j->T, m = (t + 1) * j->n / j->T - i0;
    if (j->f32) {
        const float *x = AT(const float, j->x), *y = AT(const float, j->y), *up = AT(const float, j->up);
        const float *w = AT(const float, j->w), *pw = AT(const float, j->pw);
        if (!j->backward)
            j->sums[t] = j->k ? j->k->f32(AT(float, j->out), x, y, m, j->a) : bce_fwd_f32(AT(float, j->out), x, y, w, pw, m);
        else if (j->k)
            j->k->b32(AT(float, j->gx), AT(float, j->gy), up, j->up0, x, y, m, j->a);
        else
            bce_bwd_f32(AT(float, j->gx), AT(float, j->gy), up, j->up0, x, y, w, pw, m);
    } else {
        const double *x = AT(const double, j->x), *y = AT(const double, j->y), *up = AT(const double, j->up);
        const double *w = AT(const double, j->w), *pw = AT(const double, j->pw);
        if (!j->backward)
            j->sums[t] =
                j->k ? j->k->f64(AT(double, j->out), x, y, m, j->a) : bce_fwd_f64(AT(double, j->out), x, y, w, pw, m);
        else if (j->k)
            j->k->b64(AT(double, j->gx), AT(double, j->gy), up, j->up0, x, y, m, j->a);
        else
            bce_bwd_f64(AT(double, j->gx), AT(double, j->gy), up, j->up0, x, y, w, pw, m);
    }
}

/* blocks of at least LOSS_GRAIN / 4 elements (op_sum_blocks): fixed by the size alone,
 * so the per-block sums, added in block order, are the same bits for any thread count; the
 * blocks go over the pool in runs sized to the cores' speeds */
static void run_job(loss_job *j)
{
    j->T = op_sum_blocks(j->n, j->n, LOSS_GRAIN / 4);
    op_parallel_for(j->T, j->n, 2 * LOSS_GRAIN, loss_task, j);
}

/* node: in = {x, y, w, pw} (bce's weights broadcast to x's shape, or NULL), ctx
 * = the kind (NULL: bce), p[0] = beta / delta, ip[0] = the reduction */
static int loss_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *y = n->in[1], *out = n->out;
    pg_tensor *gx = pg_grad_of(g, x), *gy = pg_grad_of(g, y);
    if ((x->requires_grad && !gx) || (y->requires_grad && !gy))
        return -1;
    pg_reduction r = (pg_reduction)n->ip[0];
    loss_job j = {.k = n->ctx, .f32 = x->dtype == PG_F32, .backward = true, .n = x->numel, .a = n->p[0],
                  .gx = gx ? gx->data : NULL, .gy = gy ? gy->data : NULL, .x = x->data, .y = y->data,
                  .w = n->n_in > 2 && n->in[2] ? n->in[2]->data : NULL,
                  .pw = n->n_in > 3 && n->in[3] ? n->in[3]->data : NULL};
    if (r == PG_REDUCE_NONE)
        j.up = out->grad->data;
    else
        j.up0 = pg_get(out->grad, 0) / (r == PG_REDUCE_MEAN ? (double)x->numel : 1.0);
    run_job(&j);
    return 0;
}

/* ---- argument checks ---------------------------------------------------------------------------- */

static bool check_reduction(pg_graph *g, const char *fn, pg_reduction r)
{
    if (r == PG_REDUCE_MEAN || r == PG_REDUCE_SUM || r == PG_REDUCE_NONE)
        return true;
    pg_graph_fail(g, "%s: unknown reduction %d (PG_REDUCE_MEAN, PG_REDUCE_SUM or PG_REDUCE_NONE)", fn, (int)r);
    return false;
}

/* x (named xn) and target: float, one dtype, one shape */
static bool check_pair(pg_graph *g, const char *fn, const char *xn, const pg_tensor *x, const pg_tensor *y)
{
    if (!arg_float(g, fn, xn, x) || !arg_float(g, fn, "target", y))
        return false;
    if (x->dtype != y->dtype) {
        pg_graph_fail(g, "%s: dtypes differ: %s is %s, target is %s", fn, xn, SHAPE(x), SHAPE(y));
        return false;
    }
    if (!pg_same_shape(x, y)) {
        pg_graph_fail(g, "%s: shapes differ: %s is %s, target is %s (no broadcasting)", fn, xn, SHAPE(x), SHAPE(y));
        return false;
    }
    return true;
}

/* The forward of every loss here: checks done, w / pw broadcast to x's shape. */
static pg_tensor *loss_forward(pg_graph *g, const reg_kind *k, const char *fn, pg_tensor *x, pg_tensor *y,
                               pg_tensor *w, pg_tensor *pw, double a, pg_reduction r)
{
    bool none = r == PG_REDUCE_NONE;
    pg_tensor *out = pg_op_output(g, fn, x->dtype, none ? x->ndim : 0, x->shape);
    if (!out)
        return NULL;
    loss_job j = {.k = k, .f32 = x->dtype == PG_F32, .n = x->numel, .a = a, .out = none ? out->data : NULL,
                  .x = x->data, .y = y->data, .w = w ? w->data : NULL, .pw = pw ? pw->data : NULL};
    run_job(&j);
    if (!none) {
        double total = 0;
        for (int64_t t = 0; t < j.T; t++)
            total += j.sums[t];
        /* MEAN of nothing: 0 / 0 = NaN, as torch */
        pg_set(out, 0, r == PG_REDUCE_MEAN ? total / (double)x->numel : total);
    }
    pg_node *n = pg_op_record(g, fn, out, 4, (pg_tensor *[]){x, y, w, pw}, loss_backward);
    if (n) {
        n->ctx = (void *)k;
        n->p[0] = a;
        n->ip[0] = r;
    }
    return out;
}

static pg_tensor *regression(pg_graph *g, const reg_kind *k, pg_tensor *x, pg_tensor *y, double a, pg_reduction r)
{
    if (!check_pair(g, k->name, "input", x, y) || !check_reduction(g, k->name, r))
        return NULL;
    return loss_forward(g, k, k->name, x, y, NULL, NULL, a, r);
}

pg_tensor *pg_mse_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, pg_reduction r)
{
    return regression(g, &mse_kind, input, target, 0.0, r);
}

pg_tensor *pg_l1_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, pg_reduction r)
{
    return regression(g, &l1_kind, input, target, 0.0, r);
}

pg_tensor *pg_smooth_l1_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, double beta, pg_reduction r)
{
    const char *fn = smooth_l1_kind.name;
    if (!check_pair(g, fn, "input", input, target) || !check_reduction(g, fn, r))
        return NULL;
    if (!(beta >= 0)) {
        pg_graph_fail(g, "%s: beta must be >= 0, got %g", fn, beta);
        return NULL;
    }
    /* beta = 0 is l1, in the gradient too: 0 at d = 0 (torch 1.13's backward
     * takes its d <= -beta branch there and gives -1) */
    return loss_forward(g, beta == 0 ? &l1_kind : &smooth_l1_kind, fn, input, target, NULL, NULL, beta, r);
}

pg_tensor *pg_huber_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, double delta, pg_reduction r)
{
    const char *fn = huber_kind.name;
    if (!check_pair(g, fn, "input", input, target) || !check_reduction(g, fn, r))
        return NULL;
    if (!(delta > 0)) {
        pg_graph_fail(g, "%s: delta must be > 0, got %g", fn, delta);
        return NULL;
    }
    return loss_forward(g, &huber_kind, fn, input, target, NULL, NULL, delta, r);
}

/* weight / pos_weight: the logits' dtype, broadcasting to their shape, no
 * gradient wanted (w may be NULL) */
static bool check_weight(pg_graph *g, const char *fn, const char *name, const pg_tensor *w, const pg_tensor *x)
{
    if (!w)
        return true;
    if (w->dtype != x->dtype) {
        pg_graph_fail(g, "%s: %s must have the logits' dtype: logits is %s, %s is %s", fn, name, SHAPE(x), name,
                      SHAPE(w));
        return false;
    }
    int nd;
    int64_t shape[PG_MAX_DIMS];
    bool ok = pg_bcast_shape(fn, 2, (const pg_tensor *[]){x, w}, &nd, shape) && nd == x->ndim;
    for (int d = 0; ok && d < nd; d++)
        ok = shape[d] == x->shape[d];
    if (!ok) {
        pg_graph_fail(g, "%s: %s must broadcast to the logits' shape: logits is %s, %s is %s", fn, name, SHAPE(x),
                      name, SHAPE(w));
        return false;
    }
    if (w->requires_grad && pg_grad_enabled(g)) {
        pg_graph_fail(g, "%s: %s requires grad, but the loss gives weight and pos_weight no gradient (as torch); "
                      "pass a detached tensor", fn, name);
        return false;
    }
    return true;
}

pg_tensor *pg_bce_with_logits(pg_graph *g, pg_tensor *logits, pg_tensor *target, pg_tensor *weight,
                              pg_tensor *pos_weight, pg_reduction r)
{
    const char *fn = "pg_bce_with_logits";
    if (!check_pair(g, fn, "logits", logits, target) || !check_reduction(g, fn, r) ||
        !check_weight(g, fn, "weight", weight, logits) || !check_weight(g, fn, "pos_weight", pos_weight, logits))
        return NULL;
    /* weights of another shape are broadcast once (in g, or on the heap without g) */
    pg_tensor *w = weight, *pw = pos_weight;
    if (w && !pg_same_shape(w, logits))
        w = pg_broadcast_to(g, w, logits->ndim, logits->shape);
    if (pw && !pg_same_shape(pw, logits))
        pw = pg_broadcast_to(g, pw, logits->ndim, logits->shape);
    pg_tensor *out = NULL;
    if ((!weight || w) && (!pos_weight || pw))
        out = loss_forward(g, NULL, fn, logits, target, w, pw, 0.0, r);
    if (!g) {
        if (w != weight)
            pg_tensor_free(w);
        if (pw != pos_weight)
            pg_tensor_free(pw);
    }
    return out;
}
