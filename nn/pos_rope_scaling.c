/* RoPE context extension: PI, NTK-aware, dynamic NTK, YaRN (nn/pos_rope_scaling.h has the
 * equations; docs/pos/rotary.md "Context extension" the references). */
#include "pos_rope_scaling.h"

#include <math.h>

static const double PG_ROPE_PI = 3.14159265358979323846;

static bool uses_orig_len(pg_rope_scaling s) { return s != PG_ROPE_LINEAR && s != PG_ROPE_NTK; }

static bool yarn_like(pg_rope_scaling s)
{
    return s == PG_ROPE_YARN || s == PG_ROPE_DYNAMIC_YARN || s == PG_ROPE_PART_NTK;
}

bool pg_rope_is_dynamic(const pg_rotary_opts *o)
{
    return o->scaling == PG_ROPE_DYNAMIC_NTK || o->scaling == PG_ROPE_DYNAMIC_LINEAR ||
           o->scaling == PG_ROPE_DYNAMIC_YARN;
}

static bool check_factor(const char *fn, pg_rotary_opts *o)
{
    if (o->rope_factor == 0 && pg_rope_is_dynamic(o))
        o->rope_factor = 1; /* dynamic: the reference's ntk = True means 1 */
    double s = o->rope_factor;
    if (!isfinite(s) || !(s > 0)) {
        pg_set_error("%s: rope_factor must be a finite number > 0 with scaling set (the new length over the "
                     "trained one), got %g", fn, s);
        return false;
    }
    if (o->scaling != PG_ROPE_LINEAR && s < 1) {
        pg_set_error("%s: rope_factor %g < 1 is meaningless for this scaling (it extends the context: s >= 1)",
                     fn, s);
        return false;
    }
    return true;
}

static bool check_yarn(const char *fn, pg_rotary_opts *o)
{
    if (o->yarn_beta_fast == 0)
        o->yarn_beta_fast = 32;
    if (o->yarn_beta_slow == 0)
        o->yarn_beta_slow = 1;
    if (o->yarn_extrapolation_factor == 0)
        o->yarn_extrapolation_factor = 1;
    if (o->yarn_attn_factor == 0)
        o->yarn_attn_factor = 1;
    if (o->yarn_ntk_factor == 0)
        o->yarn_ntk_factor = 1;
    if (o->rope_max_len == 0)
        o->rope_max_len = o->rope_orig_len;
    if (o->rope_max_len < 1 || !isfinite(o->yarn_ntk_factor) || o->yarn_ntk_factor < 0) {
        pg_set_error("%s: rope_max_len (%lld) must be >= 1 (0: rope_orig_len) and yarn_ntk_factor (%g) >= 0", fn,
                     (long long)o->rope_max_len, o->yarn_ntk_factor);
        return false;
    }
    double bf = o->yarn_beta_fast, bs = o->yarn_beta_slow;
    if (!isfinite(bf) || !isfinite(bs) || !(bs > 0) || !(bf > bs)) {
        pg_set_error("%s: yarn_beta_fast (%g) must be > yarn_beta_slow (%g) > 0, both finite (0: 32 and 1)", fn, bf,
                     bs);
        return false;
    }
    if (!isfinite(o->yarn_extrapolation_factor) || o->yarn_extrapolation_factor < 0 ||
        !isfinite(o->yarn_attn_factor) || !(o->yarn_attn_factor > 0)) {
        pg_set_error("%s: yarn_extrapolation_factor (%g) must be >= 0 and yarn_attn_factor (%g) > 0, finite", fn,
                     o->yarn_extrapolation_factor, o->yarn_attn_factor);
        return false;
    }
    if (o->yarn_ramp != PG_ROPE_RAMP_INDEX && o->yarn_ramp != PG_ROPE_RAMP_RATIO) {
        pg_set_error("%s: yarn_ramp must be PG_ROPE_RAMP_INDEX or PG_ROPE_RAMP_RATIO, got %d", fn, (int)o->yarn_ramp);
        return false;
    }
    return true;
}

bool pg_rope_scaling_resolve(const char *fn, pg_rotary_opts *o)
{
    if (o->scaling == PG_ROPE_NONE)
        return true;
    if ((int)o->scaling < 0 || o->scaling > PG_ROPE_DYNAMIC_YARN) {
        pg_set_error("%s: scaling must be one of none, linear, ntk, dynamic_ntk, dynamic_linear, yarn, part_ntk, "
                     "dynamic_yarn; got %d", fn,
                     (int)o->scaling);
        return false;
    }
    if (o->base_rescale_factor != 1 || o->interpolation_factor != 1) {
        pg_set_error("%s: scaling is set: leave base_rescale_factor (%g) and interpolation_factor (%g) at 1 "
                     "(they are ntk and linear spelled the x-transformers way)",
                     fn, o->base_rescale_factor, o->interpolation_factor);
        return false;
    }
    if (!check_factor(fn, o))
        return false;
    if (uses_orig_len(o->scaling) && o->rope_orig_len < 1) {
        pg_set_error("%s: rope_orig_len (the trained length) must be >= 1 for dynamic_ntk, dynamic_linear, yarn, "
                     "part_ntk and dynamic_yarn, got %lld", fn, (long long)o->rope_orig_len);
        return false;
    }
    bool ntk_like = o->scaling == PG_ROPE_NTK || o->scaling == PG_ROPE_DYNAMIC_NTK || o->scaling == PG_ROPE_PART_NTK;
    if (ntk_like && o->freq_dim <= 2) {
        pg_set_error("%s: ntk scaling needs freq_dim > 2 (base * s^(F/(F-2))), got %lld", fn, (long long)o->freq_dim);
        return false;
    }
    return !yarn_like(o->scaling) || check_yarn(fn, o);
}

/* theta_k for base b */
static void plain(double b, double F, int64_t R, double *out)
{
    for (int64_t k = 0; k < R; k++)
        out[k] = pow(b, -(double)(2 * k) / F);
}

static double clamp01(double x) { return fmin(fmax(x, 0), 1); }

/* the index ramp 1 - clamp((k - lo) / (hi - lo), 0, 1) for bounds bf > bs (pos_rope_scaling.h) */
static double index_ramp(const pg_rotary_opts *o, double F, int64_t k, double bf, double bs)
{
    double L = (double)o->rope_orig_len, lb = 2 * log(o->base);
    double lo = fmax(floor(F * log(L / (2 * PG_ROPE_PI * bf)) / lb), 0);
    double hi = fmin(ceil(F * log(L / (2 * PG_ROPE_PI * bs)) / lb), F - 1);
    if (lo == hi)
        hi += 0.001;
    return 1 - clamp01(((double)k - lo) / (hi - lo));
}

/* YaRN's gamma_k (pos_rope_scaling.h) */
static double yarn_gamma(const pg_rotary_opts *o, double F, int64_t k, double theta)
{
    double bf = o->yarn_beta_fast, bs = o->yarn_beta_slow, g;
    if (o->yarn_ramp == PG_ROPE_RAMP_RATIO)
        g = clamp01(((double)o->rope_orig_len * theta / (2 * PG_ROPE_PI) - bs) / (bf - bs));
    else
        g = index_ramp(o, F, k, bf, bs);
    return g * o->yarn_extrapolation_factor;
}

/* the scale of a call of length len: dynamic_yarn's rule, else rope_factor */
static double scale_of(const pg_rotary_opts *o, double len)
{
    if (o->scaling != PG_ROPE_DYNAMIC_YARN)
        return o->rope_factor;
    double M = (double)o->rope_max_len, L = (double)o->rope_orig_len;
    if (len > M)
        return len / (o->yarn_dynamic_by_max ? M : L);
    return o->yarn_finetuned ? M / L : 1;
}

/* jquesnelle/yarn's PartNTK (pos_rope_scaling.h) */
static void part_ntk(const pg_rotary_opts *o, double F, int64_t R, double *out)
{
    double s = o->rope_factor, bn = o->base * pow(s, F / (F - 2));
    for (int64_t k = 0; k < R; k++) {
        double th = pow(o->base, -(double)(2 * k) / F), tn = pow(bn, -(double)(2 * k) / F);
        double m1 = index_ramp(o, F, k, 1.25, 0.75) * o->yarn_ntk_factor;
        double m2 = index_ramp(o, F, k, 16, 2) * o->yarn_extrapolation_factor;
        double t1 = th / s * (1 - m1) + tn * m1;
        out[k] = t1 * (1 - m2) + th * m2;
    }
}

void pg_rope_inv_freq(const pg_rotary_opts *o, int64_t R, double len, double *out)
{
    double F = (double)o->freq_dim, base = o->base, s = o->rope_factor, L = (double)o->rope_orig_len;
    switch (o->scaling) {
    case PG_ROPE_NTK:
        plain(base * pow(s, F / (F - 2)), F, R, out);
        return;
    case PG_ROPE_DYNAMIC_NTK:
        plain(len > L ? base * pow(s * len / L - (s - 1), F / (F - 2)) : base, F, R, out);
        return;
    case PG_ROPE_PART_NTK:
        part_ntk(o, F, R, out);
        return;
    default:
        break;
    }
    if (o->base_rescale_factor != 1) /* only without scaling (pg_rope_scaling_resolve) */
        base *= pow(o->base_rescale_factor, F / (F - 2));
    plain(base, F, R, out);
    for (int64_t k = 0; k < R; k++) {
        if (o->scaling == PG_ROPE_LINEAR) {
            out[k] /= s;
        } else if (o->scaling == PG_ROPE_DYNAMIC_LINEAR && len > L) {
            out[k] *= L / len;
        } else if (o->scaling == PG_ROPE_YARN || o->scaling == PG_ROPE_DYNAMIC_YARN) {
            double g = yarn_gamma(o, F, k, out[k]), sk = scale_of(o, len);
            out[k] = (1 - g) * out[k] / sk + g * out[k];
        }
    }
}

double pg_rope_mscale(const pg_rotary_opts *o, double len)
{
    if (o->scaling != PG_ROPE_YARN && o->scaling != PG_ROPE_DYNAMIC_YARN)
        return 1;
    double s = scale_of(o, len), m = (!o->yarn_no_mscale && s > 1) ? 0.1 * log(s) + 1 : 1;
    return m * o->yarn_attn_factor;
}
