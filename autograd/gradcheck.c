/* pg_gradcheck: analytic gradients against central finite differences. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pg_gradcheck_opts pg_gradcheck_defaults(void)
{
    pg_gradcheck_opts o = {1e-6, 1e-7, 1e-5, true, 1e-4, 1e-3, 1};
    return o;
}

/* Records the first failure in r->message and in pg_last_error. */
static void fail(pg_gradcheck_result *r, const char *fmt, const char *detail)
{
    r->ok = false;
    if (!r->message[0]) {
        snprintf(r->message, sizeof r->message, fmt, detail ? detail : "");
        pg_set_error("%s", r->message);
    }
}

/* sum(v * out) in double */
static double project(const pg_tensor *v, const pg_tensor *out)
{
    double s = 0.0;
    for (int64_t i = 0; i < out->numel; i++)
        s += pg_get(v, i) * pg_get(out, i);
    return s;
}

/* Runs fn in a fresh state of g with grad mode off; returns sum(v * out) or NaN. */
static double loss_at(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx, const pg_tensor *v)
{
    pg_graph_reset(g);
    pg_no_grad_begin(g);
    pg_tensor *out = fn(g, in, n, ctx);
    pg_no_grad_end(g);
    if (!out || out->numel != v->numel)
        return NAN;
    return project(v, out);
}

typedef struct run {
    pg_tensor *out;    /* heap copy of the output, f64 */
    pg_tensor **grads; /* heap copies of the inputs' grads, f64 (NULL: none asked) */
} run;

static void run_free(run *rn, int n)
{
    pg_tensor_free(rn->out);
    for (int i = 0; rn->grads && i < n; i++)
        pg_tensor_free(rn->grads[i]);
    free(rn->grads);
}

/* Forward + backward with upstream v (cast to the output's dtype); copies the
 * output and the inputs' grads to f64 heap tensors. Returns false with a message. */
/* why (256 bytes) gets the reason when it returns false */
static bool analytic_run(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx,
                         const pg_tensor *v, run *rn, char *why)
{
    pg_graph_reset(g);
    rn->out = NULL;
    rn->grads = calloc((size_t)n, sizeof *rn->grads);
    pg_tensor *out = fn(g, in, n, ctx);
    const char *err = pg_graph_error(g) ? pg_graph_error(g) : pg_last_error();
    if (!out || !rn->grads) {
        snprintf(why, 256, "the function failed: %s", err && err[0] ? err : "it returned NULL and said nothing");
        return false;
    }
    if (out->numel != v->numel) {
        snprintf(why, 256, "the output changed size between runs");
        return false;
    }
    rn->out = pg_tensor_cast(NULL, out, PG_F64);
    if (!out->requires_grad) {
        snprintf(why, 256, "the output does not depend on any input that requires grad");
        return false;
    }
    pg_tensor *up = pg_tensor_cast(pg_graph_arena(g), v, out->dtype);
    pg_tensor *upv = up ? pg_tensor_view(pg_graph_arena(g), up, out->ndim, out->shape) : NULL;
    if (!upv || pg_backward_with(g, out, upv) != 0) {
        snprintf(why, 256, "backward failed: %s", pg_graph_error(g) ? pg_graph_error(g) : "out of memory");
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (!in[i]->requires_grad)
            continue;
        rn->grads[i] = in[i]->grad ? pg_tensor_cast(NULL, in[i]->grad, PG_F64)
                                   : pg_tensor_full(NULL, PG_F64, in[i]->ndim, in[i]->shape, 0.0);
        pg_tensor_free(in[i]->grad);
        in[i]->grad = NULL;
    }
    return true;
}

/* one element's errors into input i's stat */
static void stat_add(pg_gradcheck_stat *st, int64_t j, double ana, double num, double abs_err, double rel_err,
                     bool bad)
{
    st->checked++;
    if (abs_err > st->max_abs_err || st->worst_index < 0)
        st->worst_index = j, st->analytic = ana, st->numeric = num;
    st->max_abs_err = fmax(st->max_abs_err, abs_err);
    st->max_rel_err = fmax(st->max_rel_err, rel_err);
    if (bad && st->ok)
        st->ok = false, st->first_bad = j, st->bad_analytic = ana, st->bad_numeric = num;
}

static void compare_numeric(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx,
                            const pg_tensor *v, const run *rn, const pg_gradcheck_opts *o, pg_gradcheck_result *r,
                            pg_gradcheck_stat *stats)
{
    for (int i = 0; i < n; i++) {
        if (!in[i]->requires_grad)
            continue;
        double *x = pg_f64(in[i]);
        for (int64_t j = 0; j < in[i]->numel; j++) {
            double orig = x[j];
            x[j] = orig + o->eps;
            double lp = loss_at(g, fn, in, n, ctx, v);
            x[j] = orig - o->eps;
            double lm = loss_at(g, fn, in, n, ctx, v);
            x[j] = orig;
            double num = (lp - lm) / (2.0 * o->eps);
            double ana = pg_get(rn->grads[i], j);
            double abs_err = fabs(ana - num);
            double rel_err = abs_err / fmax(fabs(num), 1e-300);
            r->checked++;
            bool bad = !(abs_err <= o->atol + o->rtol * fabs(num));
            if (bad || abs_err > r->max_abs_err || r->worst_input < 0) {
                if (bad && r->ok) {
                    char d[256];
                    snprintf(d, sizeof d, "input %d element %lld: analytic %.12g, numeric %.12g", i, (long long)j,
                             ana, num);
                    fail(r, "pg_gradcheck: gradient mismatch at %s", d);
                }
                if (r->ok || bad) {
                    r->worst_input = i;
                    r->worst_index = j;
                    r->worst_analytic = ana;
                    r->worst_numeric = num;
                }
            }
            r->max_abs_err = fmax(r->max_abs_err, abs_err);
            r->max_rel_err = fmax(r->max_rel_err, abs_err <= o->atol ? 0.0 : rel_err);
            if (stats)
                stat_add(&stats[i], j, ana, num, abs_err, abs_err / fmax(fabs(num), o->atol), bad);
        }
    }
}

/* worst |a - b| beyond atol + rtol*|b|; returns false if any element exceeds */
static bool close_f32(const pg_tensor *a, const pg_tensor *b, const pg_gradcheck_opts *o, double *worst)
{
    bool ok = true;
    for (int64_t j = 0; j < b->numel; j++) {
        double d = fabs(pg_get(a, j) - pg_get(b, j));
        *worst = fmax(*worst, d);
        if (!(d <= o->f32_atol + o->f32_rtol * fabs(pg_get(b, j))))
            ok = false;
    }
    return ok;
}

static void compare_f32(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx,
                        const pg_tensor *v, const run *ref, const pg_gradcheck_opts *o, pg_gradcheck_result *r)
{
    pg_tensor **in32 = calloc((size_t)n, sizeof *in32);
    if (!in32) {
        fail(r, "pg_gradcheck: out of memory%s", NULL);
        return;
    }
    for (int i = 0; i < n; i++) {
        in32[i] = in[i]->dtype == PG_F64 ? pg_tensor_cast(NULL, in[i], PG_F32) : pg_tensor_copy(NULL, in[i]);
        if (in32[i])
            in32[i]->requires_grad = in[i]->requires_grad;
    }
    run rn = {0};
    char why[256];
    if (!analytic_run(g, fn, in32, n, ctx, v, &rn, why)) { /* fn does not run on f32 data: skip, say why */
        snprintf(r->note, sizeof r->note, "f32 leg skipped: %s", why);
    } else {
        r->f32_checked = true;
        r->f32_ok = close_f32(rn.out, ref->out, o, &r->f32_max_err);
        for (int i = 0; i < n; i++)
            if (rn.grads[i] && !close_f32(rn.grads[i], ref->grads[i], o, &r->f32_max_err))
                r->f32_ok = false;
        if (!r->f32_ok)
            fail(r, "pg_gradcheck: the f32 path differs from f64 by up to %s", NULL);
    }
    run_free(&rn, n);
    for (int i = 0; i < n; i++)
        pg_tensor_free(in32[i]);
    free(in32);
}

static bool check_args(pg_gradcheck_fn fn, int n, pg_tensor *const *in, pg_gradcheck_result *r)
{
    if (!fn || n < 1 || !in) {
        fail(r, "pg_gradcheck: need a function and at least one input%s", NULL);
        return false;
    }
    for (int i = 0; i < n; i++) {
        char d[160], s[128];
        if (!in[i]) {
            snprintf(d, sizeof d, "%d", i);
            fail(r, "pg_gradcheck: input %s is NULL", d);
            return false;
        }
        if (in[i]->requires_grad && in[i]->dtype != PG_F64) {
            snprintf(d, sizeof d, "%d is %s", i, pg_shape_str(s, sizeof s, in[i]));
            fail(r, "pg_gradcheck: inputs that require grad must be f64; input %s", d);
            return false;
        }
    }
    return true;
}

/* zero fields -> their defaults; false (and r's message) for a negative or non-finite one */
static bool resolve_opts(pg_gradcheck_opts *o, pg_gradcheck_result *r)
{
    const pg_gradcheck_opts d = pg_gradcheck_defaults();
    double *f[] = {&o->eps, &o->atol, &o->rtol, &o->f32_atol, &o->f32_rtol};
    const double def[] = {d.eps, d.atol, d.rtol, d.f32_atol, d.f32_rtol};
    const char *names[] = {"eps", "atol", "rtol", "f32_atol", "f32_rtol"};
    for (int i = 0; i < 5; i++) {
        if (!isfinite(*f[i]) || *f[i] < 0) {
            char d2[160];
            snprintf(d2, sizeof d2, "opts.%s is %g; need a finite value >= 0 (0: the default %g)", names[i], *f[i],
                     def[i]);
            fail(r, "pg_gradcheck: %s", d2);
            return false;
        }
        if (*f[i] == 0)
            *f[i] = def[i];
    }
    if (o->seed == 0)
        o->seed = d.seed;
    return true;
}

pg_gradcheck_result pg_gradcheck(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx,
                                 const pg_gradcheck_opts *opts)
{
    return pg_gradcheck_ex(fn, n, in, ctx, opts, NULL);
}

pg_gradcheck_result pg_gradcheck_ex(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx,
                                    const pg_gradcheck_opts *opts, pg_gradcheck_stat *stats)
{
    for (int i = 0; stats && i < n; i++)
        stats[i] = (pg_gradcheck_stat){.worst_index = -1, .first_bad = -1, .ok = true};
    pg_gradcheck_opts o = opts ? *opts : pg_gradcheck_defaults();
    pg_gradcheck_result r;
    memset(&r, 0, sizeof r);
    r.ok = true;
    r.f32_ok = true;
    r.worst_input = -1;
    if (!resolve_opts(&o, &r) || !check_args(fn, n, in, &r))
        return r;
    pg_tensor **saved = calloc((size_t)n, sizeof *saved);
    if (!saved) {
        fail(&r, "pg_gradcheck: out of memory%s", NULL);
        return r;
    }
    for (int i = 0; i < n; i++) { /* the caller's grads are put back at the end */
        saved[i] = in[i]->grad;
        in[i]->grad = NULL;
    }
    pg_graph *g = pg_graph_new();
    pg_tensor *v = NULL;
    run ref = {0};
    if (g) {
        pg_graph_reset(g);
        pg_no_grad_begin(g);
        pg_tensor *probe = fn(g, in, n, ctx);
        pg_no_grad_end(g);
        if (probe) {
            pg_rng rng = pg_rng_init(o.seed);
            v = pg_tensor_empty(NULL, PG_F64, probe->ndim, probe->shape);
            if (v)
                pg_fill_uniform(v, &rng, -1.0, 1.0);
        }
    }
    char why[256];
    if (v && analytic_run(g, fn, in, n, ctx, v, &ref, why)) {
        compare_numeric(g, fn, in, n, ctx, v, &ref, &o, &r, stats);
        if (o.check_f32 && r.ok)
            compare_f32(g, fn, in, n, ctx, v, &ref, &o, &r);
    } else if (v) {
        fail(&r, "pg_gradcheck: %s", why);
    } else {
        fail(&r, "pg_gradcheck: the function failed: %s", g && pg_graph_error(g) ? pg_graph_error(g) : pg_last_error());
    }
    if (!r.f32_ok) {
        char d[64];
        snprintf(d, sizeof d, "%.3g", r.f32_max_err);
        r.message[0] = '\0';
        fail(&r, "pg_gradcheck: the f32 path differs from f64 by up to %s", d);
    }
    run_free(&ref, n);
    pg_tensor_free(v);
    pg_graph_free(g);
    for (int i = 0; i < n; i++) {
        pg_tensor_free(in[i]->grad);
        in[i]->grad = saved[i];
    }
    free(saved);
    return r;
}
