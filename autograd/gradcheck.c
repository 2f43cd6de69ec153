/* pg_gradcheck: analytic gradients against central finite differences. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pg_gradcheck_opts pg_gradcheck_defaults(void)
{
    pg_gradcheck_opts o = {1e-6, 1e-7, 1e-5, true, 1e-4, 1e-3, 1, false, false, 0, 1e-3, 0};
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

/* What the element loop shares. */
typedef struct chk {
    pg_graph *g;
    pg_gradcheck_fn fn;
    pg_tensor *const *in;
    int n;
    void *ctx;
    const pg_tensor *v;
    const pg_gradcheck_opts *o;
    pg_gradcheck_result *r;
    pg_gradcheck_stat *stats;
    double l0; /* L at the inputs as given (the one-sided differences) */
} chk;

/* L with x[j] = orig + t; NaN (and r's message naming the element) when fn fails there */
static double loss_shifted(const chk *c, int i, int64_t j, double t)
{
    double *x = pg_f64(c->in[i]), orig = x[j];
    x[j] = orig + t;
    double l = loss_at(c->g, c->fn, c->in, c->n, c->ctx, c->v);
    x[j] = orig;
    if (isnan(l) && c->r->ok) {
        const char *e = pg_graph_error(c->g) ? pg_graph_error(c->g) : pg_last_error();
        char d[400];
        snprintf(d, sizeof d, "input %d element %lld %+g: %s", i, (long long)j, t,
                 e && e[0] ? e : "it returned NULL (or NaN) and said nothing");
        fail(c->r, "pg_gradcheck: the function failed at %s", d);
    }
    return l;
}

/* the numeric derivative of element j of input i; *lp, *lm: L at +-eps (for kinks) */
static double numeric_at(const chk *c, int i, int64_t j, double *lp, double *lm)
{
    double e = c->o->eps;
    *lp = loss_shifted(c, i, j, e);
    *lm = loss_shifted(c, i, j, -e);
    if (!c->o->richardson)
        return (*lp - *lm) / (2.0 * e);
    double lp2 = loss_shifted(c, i, j, 2 * e), lm2 = loss_shifted(c, i, j, -2 * e);
    return (-lp2 + 8.0 * *lp - 8.0 * *lm + lm2) / (12.0 * e);
}

/* |right slope - left slope| at x[j] with step h: (L(x+h) - L) / h - (L - L(x-h)) / h */
static double slope_jump(const chk *c, double lp, double lm, double h)
{
    return fabs((lp - c->l0) / h - (c->l0 - lm) / h);
}

/* a non-differentiable point: the one-sided slopes differ by more than kink_tol, and by as much at
 * half the step (a smooth curvature's difference halves with the step; a kink's does not) */
static bool at_kink(const chk *c, int i, int64_t j, double lp, double lm, double *lo, double *hi)
{
    double e = c->o->eps;
    if (!(slope_jump(c, lp, lm, e) > c->o->kink_tol))
        return false;
    double lp2 = loss_shifted(c, i, j, e / 2), lm2 = loss_shifted(c, i, j, -e / 2);
    if (!(slope_jump(c, lp2, lm2, e / 2) > 0.75 * slope_jump(c, lp, lm, e)))
        return false;
    *lo = fmin((lp - c->l0) / e, (c->l0 - lm) / e);
    *hi = fmax((lp - c->l0) / e, (c->l0 - lm) / e);
    return true;
}

static void record_kink(const chk *c, int i, int64_t j)
{
    if (c->r->kinks++ == 0)
        c->r->kink_input = i, c->r->kink_index = j;
    if (c->stats)
        c->stats[i].kinks++;
}

/* one element: compare, classify, record */
static void check_element(const chk *c, const pg_tensor *grad, int i, int64_t j)
{
    const pg_gradcheck_opts *o = c->o;
    pg_gradcheck_result *r = c->r;
    double lp, lm, num = numeric_at(c, i, j, &lp, &lm), ana = pg_get(grad, j), lo, hi;
    double abs_err = fabs(ana - num);
    bool bad = !(abs_err <= o->atol + o->rtol * fabs(num));
    if (isfinite(num) && at_kink(c, i, j, lp, lm, &lo, &hi)) {
        double tol = o->atol + o->rtol * fmax(fabs(lo), fabs(hi));
        if (ana >= lo - tol && ana <= hi + tol) { /* a subgradient: reported as a kink, not checked */
            record_kink(c, i, j);
            return;
        }
        bad = true; /* a value outside the one-sided slopes is wrong at a kink too */
    }
    r->checked++;
    if (bad && r->ok) {
        char d[256];
        snprintf(d, sizeof d, "input %d element %lld: analytic %.12g, numeric %.12g", i, (long long)j, ana, num);
        fail(r, "pg_gradcheck: gradient mismatch at %s", d);
    }
    if ((bad || abs_err > r->max_abs_err || r->worst_input < 0) && (r->ok || bad))
        r->worst_input = i, r->worst_index = j, r->worst_analytic = ana, r->worst_numeric = num;
    r->max_abs_err = fmax(r->max_abs_err, abs_err);
    r->max_rel_err = fmax(r->max_rel_err, abs_err <= o->atol ? 0.0 : abs_err / fmax(fabs(num), 1e-300));
    if (c->stats)
        stat_add(&c->stats[i], j, ana, num, abs_err, abs_err / fmax(fabs(num), o->atol), bad);
}

/* the elements of input i to check: all, or a seeded subset of max_per_input (a partial shuffle) */
static int64_t *chosen(const chk *c, int i, int64_t *count)
{
    int64_t m = c->in[i]->numel, k = c->o->max_per_input > 0 && c->o->max_per_input < m ? c->o->max_per_input : m;
    int64_t *idx = malloc((size_t)(m > 0 ? m : 1) * sizeof *idx);
    if (!idx)
        return NULL;
    for (int64_t j = 0; j < m; j++)
        idx[j] = j;
    pg_rng rng = pg_rng_init(c->o->seed * 1000003u + (uint64_t)i);
    for (int64_t j = 0; k < m && j < k; j++) {
        int64_t t = j + (int64_t)(pg_rng_uniform(&rng) * (double)(m - j));
        int64_t s = idx[j];
        idx[j] = idx[t], idx[t] = s;
    }
    *count = k;
    return idx;
}

static void compare_numeric(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx,
                            const pg_tensor *v, const run *rn, const pg_gradcheck_opts *o, pg_gradcheck_result *r,
                            pg_gradcheck_stat *stats)
{
    chk c = {g, fn, in, n, ctx, v, o, r, stats, loss_at(g, fn, in, n, ctx, v)};
    for (int i = 0; i < n; i++) { /* every input, also after a failure: each gets its stat */
        if (!in[i]->requires_grad)
            continue;
        int64_t k = 0, *idx = chosen(&c, i, &k);
        if (!idx) {
            fail(r, "pg_gradcheck: out of memory%s", NULL);
            return;
        }
        for (int64_t t = 0; t < k; t++)
            check_element(&c, rn->grads[i], i, idx[t]);
        free(idx);
    }
}

/* L at x0 + t d over input x (numel m; x restored to x0 after) */
static double loss_along(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx,
                         const pg_tensor *v, double *x, const double *x0, const double *d, int64_t m, double t)
{
    for (int64_t j = 0; j < m; j++)
        x[j] = x0[j] + t * d[j];
    double l = loss_at(g, fn, in, n, ctx, v);
    memcpy(x, x0, (size_t)m * sizeof *x);
    return l;
}

/* fast mode (pg_gradcheck_opts.fast): one random direction per input */
static void compare_fast(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx,
                         const pg_tensor *v, const run *rn, const pg_gradcheck_opts *o, pg_gradcheck_result *r,
                         pg_gradcheck_stat *stats)
{
    pg_rng rng = pg_rng_init(o->seed + 0x9e3779b97f4a7c15ull); /* not v's stream */
    for (int i = 0; i < n; i++) { /* every input, also after a failure: each gets its stat */
        if (!in[i]->requires_grad)
            continue;
        int64_t m = in[i]->numel;
        double *x = pg_f64(in[i]), *x0 = malloc((size_t)m * sizeof *x0), *d = malloc((size_t)m * sizeof *d);
        if (!x0 || !d) {
            free(x0), free(d);
            fail(r, "pg_gradcheck: out of memory%s", NULL);
            return;
        }
        double ana = 0;
        for (int64_t j = 0; j < m; j++) {
            d[j] = pg_rng_normal(&rng);
            x0[j] = x[j];
            ana += pg_get(rn->grads[i], j) * d[j];
        }
        double lp = loss_along(g, fn, in, n, ctx, v, x, x0, d, m, o->eps);
        double lm = loss_along(g, fn, in, n, ctx, v, x, x0, d, m, -o->eps);
        free(x0), free(d);
        double num = (lp - lm) / (2.0 * o->eps), err = fabs(ana - num);
        bool bad = !(err <= o->atol + o->rtol * fabs(num));
        r->checked++;
        if (bad || err > r->max_abs_err || r->worst_input < 0) {
            r->worst_input = i, r->worst_index = -1, r->worst_analytic = ana, r->worst_numeric = num;
            if (bad) {
                char dsc[256];
                snprintf(dsc, sizeof dsc, "input %d along a random direction: analytic %.12g, numeric %.12g", i, ana,
                         num);
                fail(r, "pg_gradcheck: gradient mismatch (fast mode) at %s", dsc);
            }
        }
        r->max_abs_err = fmax(r->max_abs_err, err);
        r->max_rel_err = fmax(r->max_rel_err, err <= o->atol ? 0.0 : err / fmax(fabs(num), 1e-300));
        if (stats) {
            stat_add(&stats[i], -1, ana, num, err, err / fmax(fabs(num), o->atol), bad);
            stats[i].checked = m;
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
    if (!(o->kink_tol >= 0) || !(o->nondet_tol >= 0) || o->max_per_input < 0) {
        char d2[200];
        snprintf(d2, sizeof d2, "opts.kink_tol %g, nondet_tol %g, max_per_input %lld; need them >= 0", o->kink_tol,
                 o->nondet_tol, (long long)o->max_per_input);
        fail(r, "pg_gradcheck: %s", d2);
        return false;
    }
    if (o->kink_tol == 0)
        o->kink_tol = d.kink_tol;
    return true;
}

/* backward again: every gradient within nondet_tol of the first run's, else r fails naming one */
static void check_determinism(pg_graph *g, pg_gradcheck_fn fn, pg_tensor *const *in, int n, void *ctx,
                              const pg_tensor *v, const run *ref, const pg_gradcheck_opts *o, pg_gradcheck_result *r)
{
    run again = {0};
    char why[256];
    if (!analytic_run(g, fn, in, n, ctx, v, &again, why)) {
        fail(r, "pg_gradcheck: the second backward (determinism) failed: %s", why);
        run_free(&again, n);
        return;
    }
    for (int i = 0; i < n && r->ok; i++)
        for (int64_t j = 0; ref->grads[i] && j < ref->grads[i]->numel; j++) {
            double a = pg_get(ref->grads[i], j), b = pg_get(again.grads[i], j);
            if (!(fabs(a - b) <= o->nondet_tol) && !(a == b)) {
                char d[256];
                snprintf(d, sizeof d, "input %d element %lld: %.17g, then %.17g (nondet_tol %g)", i, (long long)j, a,
                         b, o->nondet_tol);
                fail(r, "pg_gradcheck: non-deterministic gradient (two backward runs) at %s", d);
                break;
            }
        }
    run_free(&again, n);
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
    r.kink_input = -1;
    r.kink_index = -1;
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
        check_determinism(g, fn, in, n, ctx, v, &ref, &o, &r);
        if (o.fast)
            compare_fast(g, fn, in, n, ctx, v, &ref, &o, &r, stats);
        else
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
