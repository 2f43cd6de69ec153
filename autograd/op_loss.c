/* Losses and regularisers: fused softmax cross-entropy and dropout, forward
 * and backward side by side. */
#include "op_util.h"

#include <tgmath.h>

/* ---- cross entropy ------------------------------------------------------------
 * Row i of logits x (C classes), target t, lse = log sum_c exp(x_c):
 *   -log p_t = lse - x_t,   mean_c(-log p_c) = lse - mean_c(x_c)
 *   loss_i = (1 - s) (lse - x_t) + s (lse - mean_c x_c)
 *   loss = sum over kept rows of loss_i / count        (torch's formula)
 *   d loss / d x_c = (p_c - (1 - s) [c == t] - s / C) / count
 * lse is computed stably (max subtracted) and saved per row for backward. */

#define DEFINE_CE(T, sfx)                                                                                              \
    /* x: (rows, C); lse: (rows) or NULL; returns the sum of the kept rows' losses */                                  \
    static double ce_fwd_##sfx(const T *x, const int64_t *tg, int64_t rows, int64_t C, int64_t ignore, T s,            \
                               T *lse)                                                                                 \
    {                                                                                                                  \
        double total = 0;                                                                                              \
        for (int64_t r = 0; r < rows; r++, x += C) {                                                                   \
            if (tg[r] == ignore)                                                                                       \
                continue;                                                                                              \
            T m = x[0], sum = 0, xsum = 0;                                                                             \
            for (int64_t c = 1; c < C; c++)                                                                            \
                m = x[c] > m ? x[c] : m;                                                                               \
            for (int64_t c = 0; c < C; c++) {                                                                          \
                sum += exp(x[c] - m);                                                                                  \
                xsum += x[c];                                                                                          \
            }                                                                                                          \
            T l = m + log(sum);                                                                                        \
            if (lse)                                                                                                   \
                lse[r] = l;                                                                                            \
            T loss = ((T)1 - s) * (l - x[tg[r]]);                                                                      \
            if (s > 0) /* s == 0 adds nothing, even where a logit is -inf */                                           \
                loss += s * (l - xsum / (T)C);                                                                         \
            total += loss;                                                                                             \
        }                                                                                                              \
        return total;                                                                                                  \
    }                                                                                                                  \
    /* gx += up * (softmax - smoothed one-hot) for the kept rows */                                                    \
    static void ce_bwd_##sfx(T *gx, const T *x, const int64_t *tg, const T *lse, int64_t rows, int64_t C,              \
                             int64_t ignore, T s, T up)                                                                \
    {                                                                                                                  \
        T off = s / (T)C;                                                                                              \
        for (int64_t r = 0; r < rows; r++, x += C, gx += C) {                                                          \
            if (tg[r] == ignore)                                                                                       \
                continue;                                                                                              \
            for (int64_t c = 0; c < C; c++)                                                                            \
                gx[c] += up * (exp(x[c] - lse[r]) - off);                                                              \
            gx[tg[r]] -= up * ((T)1 - s);                                                                              \
        }                                                                                                              \
    }

DEFINE_CE(float, f32)
DEFINE_CE(double, f64)

static int cross_entropy_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *tg = n->in[1];
    pg_tensor *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    int64_t C = x->shape[x->ndim - 1], rows = tg->numel, ignore = n->ip[0];
    double count = n->p[0], s = n->p[1];
    if (count == 0)
        return 0; /* every target ignored: zero gradient */
    double up = pg_get(n->out->grad, 0) / count;
    if (x->dtype == PG_F32)
        ce_bwd_f32(gx->data, x->data, tg->data, n->ctx, rows, C, ignore, (float)s, (float)up);
    else
        ce_bwd_f64(gx->data, x->data, tg->data, n->ctx, rows, C, ignore, s, up);
    return 0;
}

/* Targets within [0, C) or ignore_index; counts the kept ones. */
static bool check_targets(pg_graph *g, const pg_tensor *x, const pg_tensor *tg, int64_t ignore, int64_t *count)
{
    int64_t C = x->shape[x->ndim - 1];
    const int64_t *t = tg->data;
    *count = 0;
    for (int64_t i = 0; i < tg->numel; i++) {
        if (t[i] == ignore)
            continue;
        if (t[i] < 0 || t[i] >= C) {
            pg_graph_fail(g, "pg_cross_entropy: target %lld at index %lld is out of range for C = %lld classes "
                          "(logits %s)", (long long)t[i], (long long)i, (long long)C, SHAPE(x));
            return false;
        }
        (*count)++;
    }
    return true;
}

static bool check_ce_args(pg_graph *g, const pg_tensor *x, const pg_tensor *tg, double s)
{
    const char *fn = "pg_cross_entropy";
    if (!arg_float(g, fn, "logits", x) || !arg_present(g, fn, "targets", tg))
        return false;
    if (tg->dtype != PG_I64) {
        pg_graph_fail(g, "%s: targets must be i64, got %s", fn, SHAPE(tg));
        return false;
    }
    bool same = x->ndim >= 1 && tg->ndim == x->ndim - 1;
    for (int d = 0; same && d < tg->ndim; d++)
        same = tg->shape[d] == x->shape[d];
    if (!same) {
        pg_graph_fail(g, "%s: targets must have the logits' shape without the last dim: logits is %s, targets is %s",
                      fn, SHAPE(x), SHAPE(tg));
        return false;
    }
    if (!(s >= 0 && s <= 1)) {
        pg_graph_fail(g, "%s: label_smoothing %g outside [0, 1]", fn, s);
        return false;
    }
    return true;
}

pg_tensor *pg_cross_entropy(pg_graph *g, pg_tensor *logits, pg_tensor *targets, int64_t ignore_index,
                            double label_smoothing)
{
    const char *fn = "pg_cross_entropy";
    int64_t count;
    if (!check_ce_args(g, logits, targets, label_smoothing) ||
        !check_targets(g, logits, targets, ignore_index, &count))
        return NULL;
    int64_t C = logits->shape[logits->ndim - 1], rows = targets->numel;
    pg_tensor *out = pg_op_output(g, fn, logits->dtype, 0, NULL);
    if (!out)
        return NULL;
    /* per-row log-sum-exp, kept in the graph for backward */
    bool keep = pg_op_needs_grad(g, 2, (pg_tensor *[]){logits, targets});
    void *lse = keep ? pg_graph_alloc(g, (size_t)rows * pg_dtype_size(logits->dtype)) : NULL;
    if (keep && !lse)
        return NULL;
    double total = logits->dtype == PG_F32
                       ? ce_fwd_f32(logits->data, targets->data, rows, C, ignore_index, (float)label_smoothing, lse)
                       : ce_fwd_f64(logits->data, targets->data, rows, C, ignore_index, label_smoothing, lse);
    pg_set(out, 0, count ? total / (double)count : 0.0);
    pg_node *n = pg_op_record(g, fn, out, 2, (pg_tensor *[]){logits, targets}, cross_entropy_backward);
    if (n) {
        n->p[0] = (double)count;
        n->p[1] = label_smoothing;
        n->ip[0] = ignore_index;
        n->ctx = lse;
    }
    return out;
}

/* ---- dropout --------------------------------------------------------------------
 * y = x * ms with ms = mask / (1 - p), mask ~ Bernoulli(1 - p) from r's stream
 * (one draw per element: the same rng state gives the same mask, and r
 * advances by numel). dx = dy * ms; ms is saved as the node's tensor. */

#define DEFINE_DROPOUT(T, sfx)                                                                                         \
    /* ms holds the 0/1 mask on entry and mask * scale on return */                                                    \
    static void dropout_fwd_##sfx(T *y, const T *restrict x, T *ms, int64_t n, T scale)                                \
    {                                                                                                                  \
        for (int64_t i = 0; i < n; i++) {                                                                              \
            ms[i] *= scale;                                                                                            \
            y[i] = x[i] * ms[i];                                                                                       \
        }                                                                                                              \
    }                                                                                                                  \
    static void dropout_bwd_##sfx(T *restrict gx, const T *restrict gy, const T *restrict ms, int64_t n)               \
    {                                                                                                                  \
        for (int64_t i = 0; i < n; i++)                                                                                \
            gx[i] += gy[i] * ms[i];                                                                                    \
    }

DEFINE_DROPOUT(float, f32)
DEFINE_DROPOUT(double, f64)

static int dropout_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    if (x->dtype == PG_F32)
        dropout_bwd_f32(gx->data, n->out->grad->data, n->saved->data, x->numel);
    else
        dropout_bwd_f64(gx->data, n->out->grad->data, n->saved->data, x->numel);
    return 0;
}

pg_tensor *pg_dropout(pg_graph *g, pg_tensor *x, double p, bool training, pg_rng *r)
{
    const char *fn = "pg_dropout";
    if (!arg_float(g, fn, "x", x))
        return NULL;
    if (!(p >= 0 && p <= 1)) {
        pg_graph_fail(g, "%s: p = %g outside [0, 1]", fn, p);
        return NULL;
    }
    if (!training || p == 0)
        return x;
    if (!r) {
        pg_graph_fail(g, "%s: rng is NULL", fn);
        return NULL;
    }
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    /* the mask lives in the graph when backward needs it, else in y itself */
    bool keep = pg_op_needs_grad(g, 1, &x);
    pg_tensor *ms = keep ? pg_tensor_empty(pg_graph_arena(g), x->dtype, x->ndim, x->shape) : y;
    if (!ms) {
        pg_graph_fail(g, "%s: out of memory for the mask", fn);
        return NULL;
    }
    pg_fill_bernoulli(ms, r, 1.0 - p);
    double scale = p < 1 ? 1.0 / (1.0 - p) : 0.0; /* p == 1: all zeros, as torch */
    if (x->dtype == PG_F32)
        dropout_fwd_f32(y->data, x->data, ms->data, x->numel, (float)scale);
    else
        dropout_fwd_f64(y->data, x->data, ms->data, x->numel, scale);
    pg_node *n = pg_op_record(g, fn, y, 1, &x, dropout_backward);
    if (n)
        n->saved = ms;
    return y;
}
