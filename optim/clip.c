/* Gradient clipping, as torch.nn.utils.clip_grad_norm_ and clip_grad_value_
 * (PyTorch 1.13). Parameters whose grad is NULL are skipped. */
#include "optim.h"

#include <math.h>

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

double pg_clip_grad_norm_p(pg_tensor *const *params, int n, double max_norm, double p)
{
    const char *fn = "pg_clip_grad_norm";
    if (!check_args(fn, params, n, p))
        return -1.0;
    if (!(max_norm >= 0)) {
        pg_set_error("%s: max_norm must be >= 0, got %g", fn, max_norm);
        return -1.0;
    }
    double total = total_norm(params, n, p);
    /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to <= 1 (NaN stays
     * NaN); multiplying by a coef of exactly 1 changes nothing, so it is skipped */
    double coef = max_norm / (total + 1e-6);
    if (!(coef >= 1.0))
        for (int i = 0; i < n; i++)
            if (params[i]->grad)
                scale_grad(params[i]->grad, coef);
    return total;
}

double pg_clip_grad_norm(pg_tensor *const *params, int n, double max_norm)
{
    return pg_clip_grad_norm_p(params, n, max_norm, 2.0);
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
