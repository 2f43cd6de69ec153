/* Losses over classes and regularisers: fused softmax cross-entropy, negative
 * log-likelihood and dropout, forward and backward side by side. (The
 * elementwise losses are in op_loss_extra.c.) */
#include "op_util.h"

#include "../tensor/threadpool.h"
#include "../tensor/vmath.h"

#include <tgmath.h>

/* ---- cross entropy ------------------------------------------------------------
 * Row i of logits x (C classes), target t, lse = log sum_c exp(x_c):
 *   -log p_t = lse - x_t,   mean_c(-log p_c) = lse - mean_c(x_c)
 *   loss_i = (1 - s) (lse - x_t) + s (lse - mean_c x_c)
 *   loss = sum over kept rows of loss_i / count        (torch's formula)
 *   d loss / d x_c = (p_c - (1 - s) [c == t] - s / C) / count
 * lse is computed stably (max subtracted) and saved per row for backward. */

/* e^x of a float: pg_vexpf (within 1.4 ulps, 16 lanes) where fmas are instructions; the
 * portable build (libm's fmaf would be a call per step) takes pg_vexp in double */
static inline float exp_f(float x)
{
#if defined(__FMA__) || defined(__aarch64__)
    return pg_vexpf(x);
#else
    return (float)pg_vexp((double)x);
#endif
}

/* log sum_c exp(x_c) of one row and, through *xsum, sum_c x_c, exp from tensor/vmath.h
 * (vectorisable): 16 partial maxima and sums, so that the loops run in lanes, sums in
 * double. f64: pg_vexp (relative error < 1e-15); f32: exp_f of the float difference. */
#define CE_LANES 16
#define DEFINE_LSE_ROW(T, sfx, EXP)                                                                                    \
    static T lse_row_##sfx(const T *x, int64_t C, double *xsum)                                                        \
    {                                                                                                                  \
        T mp[CE_LANES];                                                                                                \
        double sp[CE_LANES] = {0}, xp[CE_LANES] = {0};                                                                 \
        for (int l = 0; l < CE_LANES; l++)                                                                             \
            mp[l] = -INFINITY;                                                                                         \
        int64_t c0 = C / CE_LANES * CE_LANES;                                                                          \
        for (int64_t c = 0; c < c0; c += CE_LANES)                                                                     \
            for (int l = 0; l < CE_LANES; l++)                                                                         \
                mp[l] = x[c + l] > mp[l] ? x[c + l] : mp[l];                                                           \
        T m = x[0]; /* NaN in x[0] stays: every comparison with it is false */                                         \
        for (int l = 0; l < CE_LANES; l++)                                                                             \
            m = mp[l] > m ? mp[l] : m;                                                                                 \
        for (int64_t c = c0; c < C; c++)                                                                               \
            m = x[c] > m ? x[c] : m;                                                                                   \
        for (int64_t c = 0; c < c0; c += CE_LANES)                                                                     \
            for (int l = 0; l < CE_LANES; l++) {                                                                       \
                sp[l] += (double)EXP(x[c + l] - m);                                                                    \
                xp[l] += (double)x[c + l];                                                                             \
            }                                                                                                          \
        double sum = 0, xs = 0;                                                                                        \
        for (int l = 0; l < CE_LANES; l++)                                                                             \
            sum += sp[l], xs += xp[l];                                                                                 \
        for (int64_t c = c0; c < C; c++)                                                                               \
            sum += (double)EXP(x[c] - m), xs += (double)x[c];                                                          \
        *xsum = xs;                                                                                                    \
        return (T)((double)m + log(sum));                                                                              \
    }
DEFINE_LSE_ROW(double, f64, pg_vexp)
DEFINE_LSE_ROW(float, f32, exp_f)

/* exp(a - b) through vmath: f32 in float lanes (exp_f), f64 in double */
static inline float exp_diff_f(float a, float b) { return exp_f(a - b); }
static inline double exp_diff_d(double a, double b) { return pg_vexp(a - b); }
#define EXP_DIFF(a, b) _Generic((a), float: exp_diff_f, default: exp_diff_d)(a, b)

/* gx[c] += up * (softmax_c - off) for one row, softmax_c = exp(x_c - lse); = when assign
 * (a fresh gradient, pg_grad_fresh) */
#define DEFINE_CE_GRAD_ROW(T, sfx)                                                                                     \
    static void ce_grad_row_##sfx(T *restrict gx, const T *restrict x, int64_t C, T lse, T up, T off, bool assign)     \
    {                                                                                                                  \
        if (assign)                                                                                                    \
            for (int64_t c = 0; c < C; c++)                                                                            \
                gx[c] = up * (EXP_DIFF(x[c], lse) - off);                                                              \
        else                                                                                                           \
            for (int64_t c = 0; c < C; c++)                                                                            \
                gx[c] += up * (EXP_DIFF(x[c], lse) - off);                                                             \
    }
DEFINE_CE_GRAD_ROW(float, f32)
DEFINE_CE_GRAD_ROW(double, f64)

/* a kept row's loss (the formula above) from its log-sum-exp l, its target's logit xt and
 * the sum of its logits: ce_fwd and ce_fwd_vec_f32 below */
#define DEFINE_CE_ROW_LOSS(T, sfx)                                                                                     \
    static inline T ce_row_loss_##sfx(T l, T xt, double xsum, T s, int64_t C)                                          \
    {                                                                                                                  \
        T loss = ((T)1 - s) * (l - xt);                                                                                \
        if (s > 0) /* s == 0 adds nothing, even where a logit is -inf */                                               \
            loss += s * (l - (T)xsum / (T)C);                                                                          \
        return loss;                                                                                                   \
    }
DEFINE_CE_ROW_LOSS(float, f32)
DEFINE_CE_ROW_LOSS(double, f64)

#define DEFINE_CE(T, sfx)                                                                                              \
    /* x: (rows, C); lse: (rows) or NULL; returns the sum of the kept rows' losses */                                  \
    static double ce_fwd_##sfx(const T *x, const int64_t *tg, int64_t rows, int64_t C, int64_t ignore, T s,            \
                               T *lse)                                                                                 \
    {                                                                                                                  \
        double total = 0;                                                                                              \
        for (int64_t r = 0; r < rows; r++, x += C) {                                                                   \
            if (tg[r] == ignore)                                                                                       \
                continue;                                                                                              \
            double xsum;                                                                                               \
            T l = lse_row_##sfx(x, C, &xsum);                                                                          \
            if (lse)                                                                                                   \
                lse[r] = l;                                                                                            \
            total += ce_row_loss_##sfx(l, x[tg[r]], xsum, s, C);                                                       \
        }                                                                                                              \
        return total;                                                                                                  \
    }                                                                                                                  \
    /* gx += up * (softmax - smoothed one-hot) for the kept rows */                                                    \
    static void ce_bwd_##sfx(T *gx, const T *x, const int64_t *tg, const T *lse, int64_t rows, int64_t C,              \
                             int64_t ignore, T s, T up, bool assign)                                                   \
    {                                                                                                                  \
        T off = s / (T)C;                                                                                              \
        for (int64_t r = 0; r < rows; r++, x += C, gx += C) {                                                          \
            if (tg[r] == ignore) { /* no gradient: a fresh row is zeroed */                                            \
                for (int64_t c = 0; assign && c < C; c++)                                                              \
                    gx[c] = 0;                                                                                         \
                continue;                                                                                              \
            }                                                                                                          \
            ce_grad_row_##sfx(gx, x, C, lse[r], up, off, assign);                                                      \
            gx[tg[r]] -= up * ((T)1 - s);                                                                              \
        }                                                                                                              \
    }

DEFINE_CE(float, f32)
DEFINE_CE(double, f64)

/* ---- float rows of whole vectors (AVX-512 or AVX2), as many rows at a time as a vector
 * has lanes (16 or 8) ---------------------------------------------------------------------
 * lse_row_f32's arithmetic in vectors: a row's 16 lane maxima (x > m ? x : m, as max_ps
 * takes it), its exponentials through tensor/vmath.h's pg_vexpf_v (pg_vexpf's bits), its 16
 * lane sums in double; the rows' maxima transposed so that their final chains (x[0], then
 * lane 0, lane 1, ...) run side by side, and their sums' through autograd/lane_sums.h. The
 * same operations in the same order: the same bits (tests/test_loss_rows.c). The loop took
 * 0.43 ms of a toy step's 1-thread forward, (2048, 256) logits, on the full-width AVX-512
 * machine: its final reductions one row at a time and its maxima scalar. C a multiple of 16. */
#if defined(PG_VEC)
#include "lane_sums.h"

enum { CE_ROWS = PG_VF_LANES };

/* m[q] = the largest of row q (NaN in x[0] stays), q < n; the rest -inf */
static void row_maxima_vec_f32(float *m, const float *x, int64_t C, int n)
{
    pg_vf mx[PG_SUM_FLOATS][CE_ROWS]; /* mx[f][q]: row q's lane maxima from f PG_VF_LANES on */
    float first[CE_ROWS];
    for (int q = 0; q < CE_ROWS; q++) {
        for (int f = 0; f < PG_SUM_FLOATS; f++)
            mx[f][q] = PG_VF(set1)(-INFINITY);
        for (int64_t c = 0; q < n && c < C; c += 16)
            for (int f = 0; f < PG_SUM_FLOATS; f++)
                mx[f][q] = PG_VF(max)(PG_VF(loadu)(x + q * C + c + f * PG_VF_LANES), mx[f][q]);
        first[q] = q < n ? x[q * C] : -INFINITY;
    }
    pg_vf v = PG_VF(loadu)(first);
    for (int f = 0; f < PG_SUM_FLOATS; f++) {
        PG_VF_TRANSPOSE(mx[f]);
        for (int l = 0; l < PG_VF_LANES; l++)
            v = PG_VF(max)(mx[f][l], v);
    }
    PG_VF(storeu)(m, v);
}

/* lse[q] and xsum[q] (the sum of row q) of rows q < n of x, as lse_row_f32 */
static void lse_rows_vec_f32(float *lse, double *xsum, const float *x, int64_t C, int n)
{
    float m[CE_ROWS];
    row_maxima_vec_f32(m, x, C, n);
    pg_vd sp[PG_SUM_PARTS][CE_ROWS], xp[PG_SUM_PARTS][CE_ROWS]; /* [p][q]: row q's lanes from p PG_VD_LANES */
    for (int q = 0; q < CE_ROWS; q++) {
        for (int p = 0; p < PG_SUM_PARTS; p++)
            sp[p][q] = xp[p][q] = PG_VD(setzero)();
        const pg_vf vm = PG_VF(set1)(q < n ? m[q] : 0.0f);
        for (int64_t c = 0; q < n && c < C; c += 16)
            for (int f = 0; f < PG_SUM_FLOATS; f++) {
                const pg_vf v = PG_VF(loadu)(x + q * C + c + f * PG_VF_LANES), e = pg_vexpf_v(PG_VF(sub)(v, vm));
                sp[2 * f][q] = PG_VD(add)(sp[2 * f][q], pg_lo_pd(e));
                sp[2 * f + 1][q] = PG_VD(add)(sp[2 * f + 1][q], pg_hi_pd(e));
                xp[2 * f][q] = PG_VD(add)(xp[2 * f][q], pg_lo_pd(v));
                xp[2 * f + 1][q] = PG_VD(add)(xp[2 * f + 1][q], pg_hi_pd(v));
            }
    }
    double sum[CE_ROWS];
    for (int q0 = 0; q0 < CE_ROWS; q0 += PG_SUM_ROWS) { /* the totals PG_SUM_ROWS rows at a time */
        pg_vd *s_rows[PG_SUM_PARTS], *x_rows[PG_SUM_PARTS];
        for (int p = 0; p < PG_SUM_PARTS; p++)
            s_rows[p] = sp[p] + q0, x_rows[p] = xp[p] + q0;
        pg_row_totals(sum + q0, s_rows);
        pg_row_totals(xsum + q0, x_rows);
    }
    for (int q = 0; q < n; q++)
        lse[q] = (float)((double)m[q] + log(sum[q]));
}

/* ce_fwd_f32 for C a multiple of 16: the same losses added in the same order */
static double ce_fwd_vec_f32(const float *x, const int64_t *tg, int64_t rows, int64_t C, int64_t ignore, float s,
                             float *lse)
{
    double total = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += CE_ROWS) {
        const int n = rows - r0 < CE_ROWS ? (int)(rows - r0) : CE_ROWS;
        float l[CE_ROWS];
        double xsum[CE_ROWS];
        lse_rows_vec_f32(l, xsum, x + r0 * C, C, n);
        for (int q = 0; q < n; q++) {
            const int64_t r = r0 + q;
            if (tg[r] == ignore)
                continue;
            if (lse)
                lse[r] = l[q];
            total += ce_row_loss_f32(l[q], x[r * C + tg[r]], xsum[q], s, C);
        }
    }
    return total;
}
#define CE_FWD_VEC_OK(C) ((C) % 16 == 0)
#else
#define ce_fwd_vec_f32 ce_fwd_f32
#define CE_FWD_VEC_OK(C) false
#endif

/* ---- rows in blocks over the thread pool: block t of T takes rows [t rows / T, (t + 1) rows
 * / T), T fixed by the size alone (ce_blocks), so the forward's per-block loss sums, added in
 * block order, are the same bits for any thread count and any split of the blocks ---------- */
#define CE_GRAIN 16384 /* logits per thread at least */

/* blocks of at least CE_GRAIN / 4 logits (op_sum_blocks) */
static int64_t ce_blocks(int64_t rows, int64_t C) { return op_sum_blocks(rows, rows * C, CE_GRAIN / 4); }

typedef struct ce_job {
    bool f32, backward, assign; /* assign: the backward's gx is fresh */
    int64_t rows, C, T, ignore;
    double s, up;
    void *gx;
    const void *x, *lse_in;
    void *lse;
    const int64_t *tg;
    double *totals; /* forward: T per-block sums */
} ce_job;

static void ce_task(void *ctx, int64_t t, int thread)
{
    (void)thread;
    const ce_job *j = ctx;
    int64_t r0 = t * j->rows / j->T, n = (t + 1) * j->rows / j->T - r0, off = r0 * j->C;
    const int64_t *tg = j->tg + r0;
    if (j->f32) {
        const float *x = (const float *)j->x + off;
        if (j->backward)
            ce_bwd_f32((float *)j->gx + off, x, tg, (const float *)j->lse_in + r0, n, j->C, j->ignore, (float)j->s,
                       (float)j->up, j->assign);
        else
            j->totals[t] = (CE_FWD_VEC_OK(j->C) ? ce_fwd_vec_f32 : ce_fwd_f32)(x, tg, n, j->C, j->ignore, (float)j->s,
                                                                             j->lse ? (float *)j->lse + r0 : NULL);
    } else {
        const double *x = (const double *)j->x + off;
        if (j->backward)
            ce_bwd_f64((double *)j->gx + off, x, tg, (const double *)j->lse_in + r0, n, j->C, j->ignore, j->s, j->up,
                       j->assign);
        else
            j->totals[t] = ce_fwd_f64(x, tg, n, j->C, j->ignore, j->s, j->lse ? (double *)j->lse + r0 : NULL);
    }
}

static int cross_entropy_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *tg = n->in[1];
    bool fresh;
    pg_tensor *gx = pg_grad_fresh(g, x, &fresh);
    if (!gx)
        return -1;
    int64_t C = x->shape[x->ndim - 1], rows = tg->numel, ignore = n->ip[0];
    double count = n->p[0], s = n->p[1];
    if (count == 0) { /* every target ignored: zero gradient */
        if (fresh)
            memset(gx->data, 0, (size_t)gx->numel * pg_dtype_size(gx->dtype));
        return 0;
    }
    double up = pg_get(n->out->grad, 0) / count;
    ce_job j = {.f32 = x->dtype == PG_F32, .backward = true, .assign = fresh, .rows = rows, .C = C,
                .T = ce_blocks(rows, C),
                .ignore = ignore, .s = s, .up = up, .gx = gx->data, .x = x->data, .lse_in = n->ctx, .tg = tg->data};
    op_parallel_for(j.T, rows * C, 2 * CE_GRAIN, ce_task, &j);
    return 0;
}

/* Targets within [0, C) or ignore_index; counts the kept ones. fn and xn name
 * the op and its input in messages. */
static bool check_targets(pg_graph *g, const char *fn, const char *xn, const pg_tensor *x, const pg_tensor *tg,
                          int64_t ignore, int64_t *count)
{
    int64_t C = x->shape[x->ndim - 1];
    const int64_t *t = tg->data;
    *count = 0;
    for (int64_t i = 0; i < tg->numel; i++) {
        if (t[i] == ignore)
            continue;
        if (t[i] < 0 || t[i] >= C) {
            pg_graph_fail(g, "%s: target %lld at index %lld is out of range for C = %lld classes (%s %s)", fn,
                          (long long)t[i], (long long)i, (long long)C, xn, SHAPE(x));
            return false;
        }
        (*count)++;
    }
    return true;
}

/* x (named xn): float (..., C); targets: i64 (...) */
static bool check_class_args(pg_graph *g, const char *fn, const char *xn, const pg_tensor *x, const pg_tensor *tg)
{
    if (!arg_float(g, fn, xn, x) || !arg_present(g, fn, "targets", tg))
        return false;
    if (tg->dtype != PG_I64) {
        pg_graph_fail(g, "%s: targets must be i64, got %s", fn, SHAPE(tg));
        return false;
    }
    bool same = x->ndim >= 1 && tg->ndim == x->ndim - 1;
    for (int d = 0; same && d < tg->ndim; d++)
        same = tg->shape[d] == x->shape[d];
    if (!same) {
        pg_graph_fail(g, "%s: targets must have the %s' shape without the last dim: %s is %s, targets is %s", fn, xn,
                      xn, SHAPE(x), SHAPE(tg));
        return false;
    }
    return true;
}

static bool check_ce_args(pg_graph *g, const pg_tensor *x, const pg_tensor *tg, double s)
{
    const char *fn = "pg_cross_entropy";
    if (!check_class_args(g, fn, "logits", x, tg))
        return false;
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
        !check_targets(g, fn, "logits", logits, targets, ignore_index, &count))
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
    double totals[OP_SUM_BLOCKS_MAX], total = 0;
    ce_job j = {.f32 = logits->dtype == PG_F32, .rows = rows, .C = C, .T = ce_blocks(rows, C),
                .ignore = ignore_index,
                .s = label_smoothing, .x = logits->data, .lse = lse, .tg = targets->data, .totals = totals};
    op_parallel_for(j.T, rows * C, 2 * CE_GRAIN, ce_task, &j);
    for (int64_t t = 0; t < j.T; t++)
        total += totals[t];
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

/* ---- negative log-likelihood ------------------------------------------------------
 * Row i of log-probabilities lp (C classes), target t_i, weight w (1 without):
 *   loss_i = -w[t_i] lp[i, t_i], 0 where t_i == ignore_index
 *   NONE: loss_i; SUM: sum_i loss_i; MEAN: sum_i loss_i / W, W = sum of w[t_i]
 *   over the kept rows (0 when W == 0, as pg_cross_entropy; torch: NaN)
 *   d/d lp[i, t_i] = -w[t_i] up_i, up_i = upstream (NONE: per row; MEAN: / W)
 * One element per row: a plain loop (no thread pool); the products are rounded
 * once to the dtype (a product of two floats is exact in double), sums in double. */

static int nll_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *lp = n->in[0], *tg = n->in[1], *w = n->in[2], *out = n->out;
    pg_tensor *glp = pg_grad_of(g, lp);
    if (!glp)
        return -1;
    int64_t C = lp->shape[lp->ndim - 1], ignore = n->ip[0];
    pg_reduction r = (pg_reduction)n->ip[1];
    double total_w = n->p[0];
    if (r != PG_REDUCE_NONE && total_w == 0)
        return 0; /* a loss of 0 by convention: zero gradient */
    double up0 = r == PG_REDUCE_NONE ? 0.0 : pg_get(out->grad, 0) / (r == PG_REDUCE_MEAN ? total_w : 1.0);
    const int64_t *t = tg->data;
    for (int64_t i = 0; i < tg->numel; i++) {
        if (t[i] == ignore)
            continue;
        double u = r == PG_REDUCE_NONE ? pg_get(out->grad, i) : up0;
        int64_t k = i * C + t[i];
        pg_set(glp, k, pg_get(glp, k) - (w ? pg_get(w, t[i]) : 1.0) * u);
    }
    return 0;
}

pg_tensor *pg_nll_loss(pg_graph *g, pg_tensor *log_probs, pg_tensor *targets, pg_tensor *weight,
                       int64_t ignore_index, pg_reduction r)
{
    const char *fn = "pg_nll_loss";
    int64_t count;
    if (!check_class_args(g, fn, "log_probs", log_probs, targets))
        return NULL;
    if (r != PG_REDUCE_MEAN && r != PG_REDUCE_SUM && r != PG_REDUCE_NONE) {
        pg_graph_fail(g, "%s: unknown reduction %d (PG_REDUCE_MEAN, PG_REDUCE_SUM or PG_REDUCE_NONE)", fn, (int)r);
        return NULL;
    }
    int64_t C = log_probs->shape[log_probs->ndim - 1];
    if (weight && (weight->dtype != log_probs->dtype || weight->ndim != 1 || weight->shape[0] != C)) {
        pg_graph_fail(g, "%s: weight must be %s[%lld] (one per class of log_probs %s), got %s", fn,
                      pg_dtype_name(log_probs->dtype), (long long)C, SHAPE(log_probs), SHAPE(weight));
        return NULL;
    }
    if (weight && weight->requires_grad && pg_grad_enabled(g)) {
        pg_graph_fail(g, "%s: weight requires grad, but the loss gives it no gradient (as torch); pass a detached "
                      "tensor", fn);
        return NULL;
    }
    if (!check_targets(g, fn, "log_probs", log_probs, targets, ignore_index, &count))
        return NULL;
    bool none = r == PG_REDUCE_NONE;
    pg_tensor *out = pg_op_output(g, fn, log_probs->dtype, none ? targets->ndim : 0, targets->shape);
    if (!out)
        return NULL;
    const int64_t *t = targets->data;
    double total = 0, total_w = 0;
    for (int64_t i = 0; i < targets->numel; i++) {
        double li = 0;
        if (t[i] != ignore_index) {
            double wi = weight ? pg_get(weight, t[i]) : 1.0;
            li = -wi * pg_get(log_probs, i * C + t[i]);
            total_w += wi;
        }
        if (none)
            pg_set(out, i, li);
        else
            total += li;
    }
    if (!none)
        pg_set(out, 0, r == PG_REDUCE_SUM ? total : total_w != 0 ? total / total_w : 0.0);
    pg_node *n = pg_op_record(g, fn, out, 3, (pg_tensor *[]){log_probs, targets, weight}, nll_backward);
    if (n) {
        n->p[0] = total_w;
        n->ip[0] = ignore_index;
        n->ip[1] = r;
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
