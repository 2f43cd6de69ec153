/* posgrad autograd: gradcheck (autograd/gradcheck.c): analytic gradients
 * against central finite differences, for the ops, the layers and custom ops. */
#ifndef PG_GRADCHECK_H
#define PG_GRADCHECK_H

#include "graph.h"

/* fn builds the output from the inputs in graph g. gradcheck compares the
 * analytic gradient of L = sum(v * fn(inputs)) (v random, seeded) with central
 * differences (L(x+eps) - L(x-eps)) / 2eps for every element of every f64 input
 * that requires grad. An element passes when |analytic - numeric| <= atol +
 * rtol * |numeric|. With check_f32 it also runs fn on f32 copies of the float
 * inputs and requires outputs and gradients to agree with f64 within f32_atol +
 * f32_rtol * |f64 value|; when fn fails on the copies (it captures f64 weights,
 * or a custom op handles f64 only) the f32 leg is skipped, said in r.note. Mixed
 * f32 / f64 inputs that require grad are refused (they must all be f64). The
 * inputs and their grads are left as they were. */
typedef pg_tensor *(*pg_gradcheck_fn)(pg_graph *g, pg_tensor *const *inputs, int n_inputs, void *ctx);

/* Zero in a numeric field means its default, so a zero-initialised struct works
 * (with check_f32 false there: no f32 leg); negative or non-finite values are
 * refused (r.ok false, the field named in r.message). For atol = 0 exactly, give a
 * tiny positive value (1e-300). */
typedef struct pg_gradcheck_opts {
    double eps, atol, rtol;     /* defaults 1e-6, 1e-7, 1e-5 */
    bool check_f32;             /* pg_gradcheck_defaults: true */
    double f32_atol, f32_rtol;  /* defaults 1e-4, 1e-3 */
    uint64_t seed;              /* for v; default 1 */
} pg_gradcheck_opts;

typedef struct pg_gradcheck_result {
    bool ok;
    double max_abs_err, max_rel_err; /* over all checked elements (f64) */
    int worst_input;                 /* -1 if nothing was checked */
    int64_t worst_index;             /* flat index in that input */
    double worst_analytic, worst_numeric;
    bool f32_ok;
    bool f32_checked;                /* the f32 leg ran (check_f32, and fn ran on the f32 copies) */
    double f32_max_err;              /* worst |f32 - f64| over outputs and grads */
    int checked;                     /* elements checked */
    char message[512];               /* why it failed, empty when ok */
    char note[512];                  /* what was skipped and why (the f32 leg when fn does not run on
                                        f32 copies: a custom op declaring f64 only, a module whose
                                        weights are f64), empty otherwise */
} pg_gradcheck_result;

/* One input's share of a check (pg_gradcheck_ex): elements checked, the worst
 * element (flat index, -1 when none was checked) and whether all passed. */
typedef struct pg_gradcheck_stat {
    int64_t checked;
    double max_abs_err, max_rel_err; /* relative: |analytic - numeric| / max(|numeric|, atol) */
    int64_t worst_index;
    double analytic, numeric; /* at worst_index */
    int64_t first_bad;        /* the first failing element, -1: none */
    double bad_analytic, bad_numeric;
    bool ok;
} pg_gradcheck_stat;

pg_gradcheck_opts pg_gradcheck_defaults(void);
/* opts NULL: defaults. fn or inputs NULL (or a NULL input): r.ok false and
 * the reason in r.message and pg_last_error ("pg_gradcheck: ..."). */
pg_gradcheck_result pg_gradcheck(pg_gradcheck_fn fn, int n_inputs, pg_tensor *const *inputs, void *ctx,
                                 const pg_gradcheck_opts *opts);
/* pg_gradcheck that also fills stats[0 .. n_inputs) (one per input; zeros with
 * worst_index -1 for an input that needs no gradient). stats may be NULL. */
pg_gradcheck_result pg_gradcheck_ex(pg_gradcheck_fn fn, int n_inputs, pg_tensor *const *inputs, void *ctx,
                                    const pg_gradcheck_opts *opts, pg_gradcheck_stat *stats);

#endif
