/* Gradient clipping, as torch.nn.utils.clip_grad_norm_ and clip_grad_value_
 * (PyTorch 1.13). Parameters whose grad is NULL are skipped. */
#include "optim.h"

#include "../tensor/threadpool.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* max that keeps a NaN once seen (torch.max propagates NaN) */
static double max_nan(double m, double a)
{
    return (a > m || isnan(a)) && !isnan(m) ? a : m;
}

/* ||g||_p of one tensor, accumulated in double: p = 2: sqrt(sum g^2),
 * p = inf: max |g|, else (sum |g|^p)^(1/p). */
#define DEFINE_NORM(NAME, T)                                                                                   \
    static double NAME(const T *g, int64_t n, double p)                                                        \
    {                                                                                                          \
        double acc = 0.0;                                                                                      \
        if (p == 2.0) {                                                                                        \
            for (int64_t i = 0; i < n; i++)                                                                    \
                acc += (double)g[i] * (double)g[i];                                                            \
            return sqrt(acc);                                                                                  \
        }                                                                                                      \
        if (isinf(p)) {                                                                                        \
            for (int64_t i = 0; i < n; i++)                                                                    \
                acc = max_nan(acc, fabs((double)g[i]));                                                        \
            return acc;                                                                                        \
        }                                                                                                      \
        for (int64_t i = 0; i < n; i++)                                                                        \
            acc += pow(fabs((double)g[i]), p);                                                                 \
        return pow(acc, 1.0 / p);                                                                              \
    }
DEFINE_NORM(norm_f32, float)
DEFINE_NORM(norm_f64, double)

static bool check_args(const char *fn, pg_tensor *const *params, int n, double p)
{
    char s[128];
    if (n < 0 || (n > 0 && !params)) {
        pg_set_error("%s: bad parameter array (%d params, array %s)", fn, n, params ? "set" : "NULL");
        return false;
    }
    if (!(p > 0)) {
        pg_set_error("%s: norm type must be > 0 (or INFINITY), got %g", fn, p);
        return false;
    }
    for (int i = 0; i < n; i++) {
        const pg_tensor *t = params[i];
        if (!t) {
            pg_set_error("%s: parameter %d is NULL", fn, i);
            return false;
        }
        if (t->grad && !pg_dtype_is_float(t->grad->dtype)) {
            pg_set_error("%s: the grad of parameter %d is %s, not f32 or f64", fn, i,
                         pg_shape_str(s, sizeof s, t->grad));
            return false;
        }
    }
    return true;
}

/* torch: total = norm(stack([norm(g, p) for g in grads]), p) */
static double total_norm(pg_tensor *const *params, int n, double p)
{
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        const pg_tensor *g = params[i]->grad;
        if (!g)
            continue;
        double nt = g->dtype == PG_F32 ? norm_f32(g->data, g->numel, p) : norm_f64(g->data, g->numel, p);
        if (isinf(p))
            acc = max_nan(acc, nt);
        else
            acc += p == 2.0 ? nt * nt : pow(nt, p);
    }
    return isinf(p) ? acc : p == 2.0 ? sqrt(acc) : pow(acc, 1.0 / p);
}

double pg_grad_norm(pg_tensor *const *params, int n, double p)
{
    if (!check_args("pg_grad_norm", params, n, p))
        return -1.0;
    return total_norm(params, n, p);
}

static void scale_grad(pg_tensor *g, double coef)
{
    if (g->dtype == PG_F32) {
        float *d = g->data, c = (float)coef;
        for (int64_t i = 0; i < g->numel; i++)
            d[i] *= c;
    } else {
        double *d = g->data;
        for (int64_t i = 0; i < g->numel; i++)
            d[i] *= coef;
    }
}

/* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to <= 1 (NaN stays
 * NaN); multiplying by a coef of exactly 1 changes nothing, so it is skipped */
static void clip_to(pg_tensor *const *params, int n, double max_norm, double total)
{
    double coef = max_norm / (total + 1e-6);
    if (!(coef >= 1.0))
        for (int i = 0; i < n; i++)
            if (params[i]->grad)
                scale_grad(params[i]->grad, coef);
}

static bool check_max_norm(const char *fn, double max_norm)
{
    if (!(max_norm >= 0))
        pg_set_error("%s: max_norm must be >= 0, got %g", fn, max_norm);
    return max_norm >= 0;
}

static double clip_grad_norm(const char *fn, pg_tensor *const *params, int n, double max_norm, double p)
{
    if (!check_args(fn, params, n, p) || !check_max_norm(fn, max_norm))
        return -1.0;
    double total = total_norm(params, n, p);
    clip_to(params, n, max_norm, total);
    return total;
}

double pg_clip_grad_norm_p(pg_tensor *const *params, int n, double max_norm, double p)
{
    return clip_grad_norm("pg_clip_grad_norm_p", params, n, max_norm, p);
}

double pg_clip_grad_norm(pg_tensor *const *params, int n, double max_norm)
{
    return clip_grad_norm("pg_clip_grad_norm", params, n, max_norm, 2.0);
}

int pg_clip_grad_value(pg_tensor *const *params, int n, double clip_value)
{
    const char *fn = "pg_clip_grad_value";
    if (!check_args(fn, params, n, 2.0))
        return -1;
    if (!(clip_value >= 0)) {
        pg_set_error("%s: clip_value must be >= 0, got %g", fn, clip_value);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        pg_tensor *g = params[i]->grad;
        for (int64_t j = 0; g && j < g->numel; j++) {
            double v = pg_get(g, j); /* clamp_(-c, c): NaN stays NaN */
            if (v > clip_value)
                pg_set(g, j, clip_value);
            else if (v < -clip_value)
                pg_set(g, j, -clip_value);
        }
    }
    return 0;
}


/* ---- non-finite gradients ------------------------------------------------------------------
 * A float is NaN or infinite exactly when its exponent bits are all ones, i.e.
 * when its bit pattern with the sign cleared is >= that of +inf. Blocks of
 * SCAN_BLOCK elements take the largest such pattern (an integer max that
 * vectorises; no float compare, so no -ffast-math question); only a block that
 * reaches +inf's pattern is searched element by element. */
#define SCAN_BLOCK 256
#define SCAN_GRAIN 65536 /* elements per task at least */

#define DEFINE_SCAN(NAME, T, I, ABS_MASK, INF_BITS)                                                            \
    /* first i in [i0, i1) with x[i] NaN or infinite, else -1 */                                               \
    static int64_t NAME(const T *x, int64_t i0, int64_t i1)                                                    \
    {                                                                                                          \
        for (int64_t b = i0; b < i1; b += SCAN_BLOCK) {                                                        \
            int64_t e = i1 - b < SCAN_BLOCK ? i1 : b + SCAN_BLOCK;                                             \
            I m = 0;                                                                                           \
            for (int64_t i = b; i < e; i++) {                                                                  \
                I u;                                                                                           \
                memcpy(&u, &x[i], sizeof u);                                                                   \
                u &= ABS_MASK;                                                                                 \
                m = u > m ? u : m;                                                                             \
            }                                                                                                  \
            if (m >= INF_BITS)                                                                                 \
                for (int64_t i = b; i < e; i++)                                                                \
                    if (!isfinite(x[i]))                                                                       \
                        return i;                                                                              \
        }                                                                                                      \
        return -1;                                                                                             \
    }
DEFINE_SCAN(scan_f32, float, int32_t, INT32_C(0x7fffffff), INT32_C(0x7f800000))
DEFINE_SCAN(scan_f64, double, int64_t, INT64_C(0x7fffffffffffffff), INT64_C(0x7ff0000000000000))

/* task t of T scans its share [t n / T, (t + 1) n / T) of one grad */
typedef struct scan_job {
    const pg_tensor *g;
    int64_t T;
    int64_t first[PG_MAX_THREADS];
} scan_job;

static void scan_task(void *ctx, int64_t t, int thread)
{
    (void)thread;
    scan_job *j = ctx;
    int64_t n = j->g->numel, i0 = t * n / j->T, i1 = (t + 1) * n / j->T;
    j->first[t] = j->g->dtype == PG_F32 ? scan_f32(j->g->data, i0, i1) : scan_f64(j->g->data, i0, i1);
}

/* flat index of the first non-finite element of a float tensor, or -1 */
static int64_t first_nonfinite(const pg_tensor *g)
{
    scan_job j = {.g = g, .T = pg_parallel_tasks(g->numel, SCAN_GRAIN)};
    if (j.T > PG_MAX_THREADS)
        j.T = PG_MAX_THREADS;
    if (j.T <= 1) {
        scan_task(&j, 0, 0);
    } else {
        pg_parallel_for(j.T, scan_task, &j);
    }
    for (int64_t t = 0; t < j.T; t++)
        if (j.first[t] >= 0)
            return j.first[t];
    return -1;
}

/* params already checked */
static bool find_nonfinite(pg_tensor *const *params, int n, pg_nonfinite *where)
{
    for (int i = 0; i < n; i++) {
        const pg_tensor *g = params[i]->grad;
        int64_t k = g ? first_nonfinite(g) : -1;
        if (k >= 0) {
            *where = (pg_nonfinite){i, k, pg_get(g, k)};
            return true;
        }
    }
    *where = (pg_nonfinite){-1, -1, 0.0};
    return false;
}

int pg_grad_find_nonfinite(pg_tensor *const *params, int n, pg_nonfinite *where)
{
    const char *fn = "pg_grad_find_nonfinite";
    if (!where) {
        pg_set_error("%s: where is NULL", fn);
        return -1;
    }
    if (!check_args(fn, params, n, 2.0))
        return -1;
    return find_nonfinite(params, n, where) ? 1 : 0;
}

/* "nan", "inf", "-inf" (printf may write a NaN with its sign bit as "-nan") */
static const char *nonfinite_str(double v)
{
    return isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
}

int pg_clip_grad_norm_ex(pg_tensor *const *params, int n, const pg_clip_opts *opts, double *total_out)
{
    const char *fn = "pg_clip_grad_norm_ex";
    if (!opts) {
        pg_set_error("%s: opts is NULL", fn);
        return -1;
    }
    double p = opts->norm_type == 0 ? 2.0 : opts->norm_type;
    if (!check_args(fn, params, n, p) || !check_max_norm(fn, opts->max_norm))
        return -1;
    double total = total_norm(params, n, p);
    if (total_out)
        *total_out = total;
    if (opts->error_if_nonfinite && !isfinite(total)) {
        /* the error path pays a second pass, to say where */
        pg_nonfinite w;
        char s[128], where[256];
        if (find_nonfinite(params, n, &w))
            snprintf(where, sizeof where, "first non-finite in parameter %d, %s: element %lld is %s", w.param,
                     pg_shape_str(s, sizeof s, params[w.param]->grad), (long long)w.index, nonfinite_str(w.value));
        else
            snprintf(where, sizeof where, "every element is finite: their %g-norm overflows double", p);
        pg_set_error("%s: total gradient norm is %s (%s); the grads are left unchanged", fn, nonfinite_str(total),
                     where);
        return PG_NONFINITE;
    }
    clip_to(params, n, opts->max_norm, total);
    return 0;
}
