/* Parameter initialisers, as torch.nn.init, from a seeded generator. */
#include "init.h"

#include <math.h>

static bool check_float(const char *fn, const pg_tensor *t, const pg_rng *r)
{
    if (!t || !r) {
        pg_set_error("%s: %s is NULL", fn, t ? "generator" : "tensor");
        return false;
    }
    if (!pg_dtype_is_float(t->dtype)) {
        char s[128];
        pg_set_error("%s: need a float tensor, got %s", fn, pg_shape_str(s, sizeof s, t));
        return false;
    }
    return true;
}

int pg_init_fans(const pg_tensor *t, int64_t *fan_in, int64_t *fan_out)
{
    if (!fan_in || !fan_out) {
        pg_set_error("pg_init_fans: %s is NULL", fan_in ? "fan_out" : "fan_in");
        return -1;
    }
    if (!t || t->ndim < 2) {
        char s[128];
        pg_set_error("pg_init_fans: fans need at least 2 dims, got %s", pg_shape_str(s, sizeof s, t));
        return -1;
    }
    int64_t receptive = 1; /* product of the dims after (out, in) */
    for (int d = 2; d < t->ndim; d++)
        receptive *= t->shape[d];
    *fan_in = t->shape[1] * receptive;
    *fan_out = t->shape[0] * receptive;
    return 0;
}

int pg_init_uniform(pg_tensor *t, pg_rng *r, double low, double high)
{
    if (!check_float("pg_init_uniform", t, r))
        return -1;
    return pg_fill_uniform(t, r, low, high);
}

int pg_init_normal(pg_tensor *t, pg_rng *r, double mean, double std)
{
    if (!check_float("pg_init_normal", t, r))
        return -1;
    return pg_fill_normal(t, r, mean, std);
}

int pg_init_trunc_normal(pg_tensor *t, pg_rng *r, double mean, double std, double a, double b)
{
    if (!check_float("pg_init_trunc_normal", t, r))
        return -1;
    if (!(a < b) || !(std > 0) || mean + 10 * std < a || mean - 10 * std > b) {
        pg_set_error("pg_init_trunc_normal: [%g, %g] is empty or far outside N(%g, %g^2)", a, b, mean, std);
        return -1;
    }
    for (int64_t i = 0; i < t->numel; i++) {
        double v;
        do /* rejection: the interval holds a usable share of the mass (checked above) */
            v = mean + std * pg_rng_normal(r);
        while (v < a || v > b);
        pg_set(t, i, v);
    }
    return 0;
}

static int fan(const char *fn, const pg_tensor *t, pg_fan_mode mode, double *out)
{
    int64_t fi, fo;
    if (pg_init_fans(t, &fi, &fo) != 0) {
        char s[128];
        pg_set_error("%s: fans need at least 2 dims, got %s", fn, pg_shape_str(s, sizeof s, t));
        return -1;
    }
    *out = (double)(mode == PG_FAN_OUT ? fo : fi);
    return 0;
}

int pg_init_xavier_uniform(pg_tensor *t, pg_rng *r, double gain)
{
    double fi, fo;
    if (!check_float("pg_init_xavier_uniform", t, r) || fan("pg_init_xavier_uniform", t, PG_FAN_IN, &fi) ||
        fan("pg_init_xavier_uniform", t, PG_FAN_OUT, &fo))
        return -1;
    double bound = gain * sqrt(6.0 / (fi + fo));
    return pg_fill_uniform(t, r, -bound, bound);
}

int pg_init_xavier_normal(pg_tensor *t, pg_rng *r, double gain)
{
    double fi, fo;
    if (!check_float("pg_init_xavier_normal", t, r) || fan("pg_init_xavier_normal", t, PG_FAN_IN, &fi) ||
        fan("pg_init_xavier_normal", t, PG_FAN_OUT, &fo))
        return -1;
    return pg_fill_normal(t, r, 0.0, gain * sqrt(2.0 / (fi + fo)));
}

int pg_init_kaiming_uniform(pg_tensor *t, pg_rng *r, double a, pg_fan_mode mode)
{
    double f;
    if (!check_float("pg_init_kaiming_uniform", t, r) || fan("pg_init_kaiming_uniform", t, mode, &f))
        return -1;
    double gain = sqrt(2.0 / (1.0 + a * a));
    double bound = gain * sqrt(3.0 / f);
    return pg_fill_uniform(t, r, -bound, bound);
}

int pg_init_kaiming_normal(pg_tensor *t, pg_rng *r, double a, pg_fan_mode mode)
{
    double f;
    if (!check_float("pg_init_kaiming_normal", t, r) || fan("pg_init_kaiming_normal", t, mode, &f))
        return -1;
    double gain = sqrt(2.0 / (1.0 + a * a));
    return pg_fill_normal(t, r, 0.0, gain / sqrt(f));
}
