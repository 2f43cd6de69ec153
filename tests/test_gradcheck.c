/* pg_gradcheck as a user meets it (issue 17's defects): a custom op that handles
 * f64 only, a function that captures f64 weights, zero-initialised options, bad
 * options, and a custom op's own error message kept. */
#include <math.h>
#include <string.h>

#include "testutil.h"

/* out = x^3 reading the data as double: only f64 (PG_CUSTOM_F64) */
static int cube64_forward(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx)
{
    (void)n_in, (void)ctx;
    const double *x = pg_f64(in[0]);
    for (int64_t i = 0; i < out->numel; i++)
        pg_f64(out)[i] = x[i] * x[i] * x[i];
    return 0;
}

static int cube64_backward(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                           pg_tensor *const *in, int n_in, void *ctx)
{
    (void)out, (void)n_in, (void)ctx;
    const double *x = pg_f64(in[0]), *go = pg_f64((pg_tensor *)grad_out);
    for (int64_t i = 0; grad_in[0] && i < grad_out->numel; i++)
        pg_f64(grad_in[0])[i] += go[i] * 3 * x[i] * x[i];
    return 0;
}

static const pg_custom_op CUBE64 = {
    .name = "cube64", .forward = cube64_forward, .backward = cube64_backward, .dtypes = PG_CUSTOM_F64};

static pg_tensor *cube_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_custom(g, ctx, 1, in, in[0]->ndim, in[0]->shape, NULL, 0);
}

static pg_tensor *input(uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_tensor *x = pg_randn(NULL, PG_F64, 2, (const int64_t[]){2, 3}, &r);
    pg_set_requires_grad(x, true);
    return x;
}

/* the default gradcheck never hands an f64-only op f32 data: the f32 leg is skipped with a note */
Test(gradcheck, f64_only_custom_op_under_the_defaults)
{
    pg_tensor *x = input(1);
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, (void *)&CUBE64, NULL);
    cr_assert(r.ok, "%s", r.message);
    cr_assert_eq(r.checked, 6);
    cr_assert(!r.f32_checked);
    cr_assert(strstr(r.note, "f32 leg skipped: the function failed: cube64: the inputs are f32; the op handles only "
                             "f64 (pg_custom_op.dtypes)"),
              "note: %s", r.note);
    pg_tensor_free(x);
}

/* the op refuses f32 inputs itself, naming the declaration */
Test(gradcheck, custom_op_refuses_an_undeclared_dtype)
{
    pg_tensor *x = pg_zeros(NULL, PG_F32, PG_SHAPE(3));
    pg_graph *g = pg_graph_new();
    cr_assert_null(pg_custom(g, &CUBE64, 1, &x, 1, x->shape, NULL, 0));
    cr_assert(strstr(pg_graph_error(g), "cube64: the inputs are f32; the op handles only f64"), "%s",
              pg_graph_error(g));
    pg_graph_free(g);
    pg_tensor_free(x);
}

/* a function of a module with f64 weights: the f32 copies of the inputs cannot run, the check still passes */
static pg_tensor *linear_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_linear_forward(g, ctx, in[0]);
}

Test(gradcheck, module_with_f64_weights_under_the_defaults)
{
    pg_rng r = pg_rng_init(2);
    pg_linear *lin = pg_linear_new(3, 4, true, PG_F64, &r);
    pg_tensor *x = input(3);
    pg_gradcheck_result res = pg_gradcheck(linear_fn, 1, &x, lin, NULL);
    cr_assert(res.ok, "%s", res.message);
    cr_assert(!res.f32_checked);
    cr_assert(strstr(res.note, "f32 leg skipped: the function failed:"), "note: %s", res.note);
    cr_assert(strstr(res.note, "f32"), "the note names the dtype: %s", res.note);
    pg_tensor_free(x);
    pg_module_free(&lin->base);
}

/* a zero-initialised options struct means the defaults (and no f32 leg), not eps = 0 */
Test(gradcheck, zero_options_are_the_defaults)
{
    pg_tensor *x = input(4);
    pg_gradcheck_opts zero = {0};
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, (void *)&CUBE64, &zero);
    cr_assert(r.ok, "%s", r.message);
    cr_assert(isfinite(r.worst_numeric) && r.max_abs_err < 1e-6, "worst numeric %g, error %g", r.worst_numeric,
              r.max_abs_err);
    cr_assert(!r.f32_checked && !r.note[0], "no f32 leg asked: note '%s'", r.note);
    pg_tensor_free(x);
}

Test(gradcheck, bad_options_are_refused)
{
    pg_tensor *x = input(5);
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.eps = -1;
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, (void *)&CUBE64, &o);
    cr_assert(!r.ok);
    cr_assert(strstr(r.message, "pg_gradcheck: opts.eps is -1; need a finite value >= 0 (0: the default 1e-06)"),
              "%s", r.message);
    o = pg_gradcheck_defaults();
    o.atol = NAN;
    r = pg_gradcheck(cube_fn, 1, &x, (void *)&CUBE64, &o);
    cr_assert(!r.ok && strstr(r.message, "opts.atol is nan"), "%s", r.message);
    pg_tensor_free(x);
}

/* mixed f32 / f64 inputs that require grad: refused, naming the input */
Test(gradcheck, mixed_dtypes_are_refused)
{
    pg_tensor *in[2] = {input(6), pg_zeros(NULL, PG_F32, PG_SHAPE(2, 3))};
    pg_set_requires_grad(in[1], true);
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 2, in, (void *)&CUBE64, NULL);
    cr_assert(!r.ok && strstr(r.message, "inputs that require grad must be f64; input 1 is f32[2,3]"), "%s",
              r.message);
    free_all(2, in);
}

/* an error the op sets itself survives, after the op's name */
static int picky_forward(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx)
{
    (void)out, (void)n_in, (void)ctx;
    pg_set_error("picky: x[0] must be positive, got %g", pg_get(in[0], 0));
    return 1;
}

static const pg_custom_op PICKY = {.name = "picky", .forward = picky_forward, .backward = cube64_backward};

Test(gradcheck, a_custom_ops_own_message_is_kept)
{
    pg_tensor *x = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){2}, (const double[]){-1, 2});
    pg_set_requires_grad(x, true);
    pg_graph *g = pg_graph_new();
    cr_assert_null(pg_custom(g, &PICKY, 1, &x, 1, x->shape, NULL, 0));
    cr_assert(strstr(pg_graph_error(g), "picky: custom forward failed: picky: x[0] must be positive, got -1"), "%s",
              pg_graph_error(g));
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, (void *)&PICKY, NULL);
    cr_assert(!r.ok && strstr(r.message, "x[0] must be positive, got -1"), "%s", r.message);
    pg_graph_free(g);
    pg_tensor_free(x);
}

/* ---- a module, by named tensor (nn/gradcheck_module.h) ------------------------------------- */

static pg_tensor *lin_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_linear_forward(g, (pg_linear *)m, in[0]);
}

Test(gradcheck, module_by_named_tensor)
{
    pg_rng r = pg_rng_init(7);
    pg_linear *lin = pg_linear_new(3, 4, true, PG_F64, &r);
    pg_tensor *x = input(8);
    pg_module_gradcheck res = pg_gradcheck_module(lin_fn, &lin->base, 1, &x, NULL, NULL);
    cr_assert(res.all.ok, "%s", res.all.message);
    cr_assert_eq(res.n, 3);
    const char *names[] = {"input 0", "weight", "bias"};
    const int64_t counts[] = {6, 12, 4};
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(res.entries[i].name, names[i]);
        cr_assert_eq(res.entries[i].stat.checked, counts[i], "%s: %lld", names[i],
                     (long long)res.entries[i].stat.checked);
        cr_assert(res.entries[i].stat.ok && res.entries[i].stat.max_abs_err < 1e-8);
    }
    cr_assert_str_eq(res.entries[1].shape, "f64[4,3]");
    cr_assert(strstr(res.all.note, "f32 leg not run"), "%s", res.all.note);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_eq(pg_module_gradcheck_print(f, &res), 0);
    fclose(f);
    cr_assert(strstr(text, "weight") && strstr(text, "pass: 22 elements"), "%s", text);
    free(text);
    pg_module_gradcheck_free(&res);
    pg_tensor_free(x);
    pg_module_free(&lin->base);
}

/* a wrong backward planted on one parameter: that parameter and element are named */
static int twice_forward(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx)
{
    (void)n_in, (void)ctx;
    for (int64_t i = 0; i < out->numel; i++)
        pg_set(out, i, 2 * pg_get(in[0], i));
    return 0;
}

static int twice_wrong_backward(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                                pg_tensor *const *in, int n_in, void *ctx)
{
    (void)out, (void)in, (void)n_in, (void)ctx;
    for (int64_t i = 0; grad_in[0] && i < grad_out->numel; i++) /* planted: element 2 forgets its factor 2 */
        pg_set(grad_in[0], i, pg_get(grad_out, i) * (i == 2 ? 1.0 : 2.0));
    return 0;
}

static const pg_custom_op TWICE = {.name = "twice", .forward = twice_forward, .backward = twice_wrong_backward};

static pg_tensor *lin_twice_bias_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_linear *lin = (pg_linear *)m;
    pg_tensor *b2 = pg_custom(g, &TWICE, 1, &lin->bias, 1, lin->bias->shape, NULL, 0);
    return pg_add(g, pg_linear_forward(g, lin, in[0]), b2);
}

Test(gradcheck, module_names_the_wrong_parameter)
{
    pg_rng r = pg_rng_init(9);
    pg_linear *lin = pg_linear_new(3, 4, true, PG_F64, &r);
    pg_tensor *x = input(10);
    pg_module_gradcheck res = pg_gradcheck_module(lin_twice_bias_fn, &lin->base, 1, &x, NULL, NULL);
    cr_assert(!res.all.ok);
    printf("gradcheck planted fault: %s\n", res.all.message);
    cr_assert(strstr(res.all.message, "pg_gradcheck_module: bias[2]: analytic"), "%s", res.all.message);
    cr_assert(res.entries[0].stat.ok && res.entries[1].stat.ok && !res.entries[2].stat.ok);
    cr_assert_eq(res.entries[2].stat.first_bad, 2);
    pg_module_gradcheck_free(&res);
    pg_tensor_free(x);
    pg_module_free(&lin->base);
}

Test(gradcheck, module_bad_arguments)
{
    pg_rng r = pg_rng_init(11);
    pg_linear *lin = pg_linear_new(3, 4, true, PG_F32, &r);
    pg_tensor *x = input(12);
    pg_module_gradcheck res = pg_gradcheck_module(lin_fn, &lin->base, 1, &x, NULL, NULL);
    cr_assert(!res.all.ok && strstr(res.all.message, "pg_gradcheck_module: parameter weight is f32[4,3]; check the "
                                                     "module in f64"),
              "%s", res.all.message);
    res = pg_gradcheck_module(NULL, &lin->base, 1, &x, NULL, NULL);
    cr_assert(!res.all.ok && strstr(res.all.message, "fn is NULL"));
    res = pg_gradcheck_module(lin_fn, NULL, 1, &x, NULL, NULL);
    cr_assert(!res.all.ok && strstr(res.all.message, "module is NULL"));
    cr_assert_eq(pg_module_gradcheck_print(NULL, &res), -1);
    pg_module_gradcheck_free(NULL);
    pg_tensor_free(x);
    pg_module_free(&lin->base);
}

/* ---- fast mode: one random direction per tensor -------------------------------------------- */

Test(gradcheck, fast_mode_passes_and_catches)
{
    pg_tensor *x = input(13);
    pg_gradcheck_opts o = {.fast = true};
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, (void *)&CUBE64, &o);
    cr_assert(r.ok, "%s", r.message);
    cr_assert_eq(r.checked, 1, "one direction for one input");
    cr_assert_eq(r.worst_index, -1);
    pg_rng rng = pg_rng_init(14);
    pg_linear *lin = pg_linear_new(3, 4, true, PG_F64, &rng);
    pg_module_gradcheck m = pg_gradcheck_module(lin_twice_bias_fn, &lin->base, 1, &x, NULL, &o);
    cr_assert(!m.all.ok);
    cr_assert(strstr(m.all.message, "pg_gradcheck_module: bias along a random direction (fast mode): analytic"),
              "%s", m.all.message);
    cr_assert(m.entries[0].stat.ok && m.entries[1].stat.ok && !m.entries[2].stat.ok,
              "input and weight pass, bias fails");
    cr_assert_eq(m.entries[1].stat.checked, 12, "the weight's direction covers its 12 elements");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    pg_module_gradcheck_print(f, &m);
    fclose(f);
    cr_assert(strstr(text, "FAIL: 3 random directions (fast mode, one per tensor) over 22 elements"), "%s", text);
    free(text);
    pg_module_gradcheck_free(&m);
    pg_module_free(&lin->base);
    pg_tensor_free(x);
}

/* a block through fast mode agrees with the full mode's verdict, far faster */
static pg_tensor *block_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_block_forward(g, (pg_block *)m, in[0], NULL);
}

Test(gradcheck, fast_mode_on_a_block)
{
    pg_rng r = pg_rng_init(15);
    pg_block_config c = pg_block_defaults(8, 2);
    c.dtype = PG_F64;
    c.causal = true;
    pg_posmod *dpb = pg_posmod_make_dpb(&(pg_posmod_args){.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64,
                                                          .rng = &r});
    pg_block *b = pg_block_new(&c, &dpb, 1, &r);
    pg_tensor *x = pg_randn(NULL, PG_F64, 3, (const int64_t[]){2, 5, 8}, &r);
    pg_set_requires_grad(x, true);
    pg_gradcheck_opts o = {.fast = true};
    pg_module_gradcheck m = pg_gradcheck_module(block_fn, &b->base, 1, &x, NULL, &o);
    cr_assert(m.all.ok, "%s", m.all.message);
    cr_assert_eq(m.all.checked, m.n, "one direction per tensor: %d for %d tensors", m.all.checked, m.n);
    pg_module_gradcheck_free(&m);
    pg_tensor_free(x);
    pg_module_free(&b->base);
}

/* ---- kinks, Richardson, sampling, determinism, a function failing mid-check ---------------- */

/* kinks planted: x[1] = 0 under relu and abs, x[2] = 0.5 at clamp's upper bound, x[3] ties y[3] under max */
static pg_tensor *kinky_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    int which = *(const int *)ctx;
    pg_tensor *x = in[0];
    return which == 0   ? pg_relu(g, x)
           : which == 1 ? pg_abs(g, x)
           : which == 2 ? pg_clamp(g, x, -2.0, 0.5)
                        : pg_maximum(g, x, in[1]);
}

Test(gradcheck, kinks_are_reported_not_failed)
{
    const char *what[] = {"relu at 0", "abs at 0", "clamp at its bound", "max tie"};
    const int64_t where[] = {1, 1, 2, 3};
    for (int which = 0; which < 4; which++) {
        pg_tensor *in[2] = {pg_from_array(NULL, PG_F64, 1, (const int64_t[]){4}, (const double[]){-0.7, 0, 0.5, 1.25}),
                            pg_from_array(NULL, PG_F64, 1, (const int64_t[]){4}, (const double[]){0.3, -1, 2, 1.25})};
        pg_set_requires_grad(in[0], true);
        pg_set_requires_grad(in[1], true);
        int nin = which == 3 ? 2 : 1;
        pg_gradcheck_opts o = pg_gradcheck_defaults();
        o.check_f32 = false;
        pg_gradcheck_stat st[2];
        pg_gradcheck_result r = pg_gradcheck_ex(kinky_fn, nin, in, &which, &o, st);
        cr_assert(r.ok, "%s: %s", what[which], r.message);
        cr_assert_geq(r.kinks, 1, "%s: no kink reported", what[which]);
        cr_assert_eq(r.kink_input, 0, "%s", what[which]);
        cr_assert_eq(r.kink_index, where[which], "%s: kink at %lld", what[which], (long long)r.kink_index);
        cr_assert_eq(st[0].kinks, which == 3 ? 1 : 1, "%s", what[which]);
        free_all(2, in);
    }
}

/* a wrong gradient AT a kink is still a failure: its value is not between the one-sided slopes */
static int relu_wrong_forward(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx)
{
    (void)n_in, (void)ctx;
    for (int64_t i = 0; i < out->numel; i++)
        pg_set(out, i, fmax(pg_get(in[0], i), 0.0));
    return 0;
}

static int relu_wrong_backward(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                               pg_tensor *const *in, int n_in, void *ctx)
{
    (void)out, (void)n_in, (void)ctx;
    for (int64_t i = 0; grad_in[0] && i < grad_out->numel; i++) /* planted: slope 3 at 0 */
        pg_set(grad_in[0], i, pg_get(grad_out, i) * (pg_get(in[0], i) > 0 ? 1.0 : pg_get(in[0], i) == 0 ? 3.0 : 0.0));
    return 0;
}

static const pg_custom_op RELU_WRONG = {.name = "relu_wrong", .forward = relu_wrong_forward,
                                        .backward = relu_wrong_backward};

Test(gradcheck, a_wrong_gradient_at_a_kink_still_fails)
{
    pg_tensor *x = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){3}, (const double[]){-0.7, 0, 0.5});
    pg_set_requires_grad(x, true);
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, (void *)&RELU_WRONG, NULL);
    cr_assert(!r.ok && strstr(r.message, "input 0 element 1"), "%s", r.message);
    cr_assert_eq(r.kinks, 0);
    pg_tensor_free(x);
}

/* x^5 at 2 with eps 1e-2: the central difference is off by ~5e-5 relative, the 4-point one by ~1e-9 */
static pg_tensor *fifth_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_tensor *x2 = pg_mul(g, in[0], in[0]);
    return pg_mul(g, pg_mul(g, x2, x2), in[0]);
}

Test(gradcheck, richardson_is_tighter)
{
    pg_tensor *x = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){2}, (const double[]){2, -1.5});
    pg_set_requires_grad(x, true);
    pg_gradcheck_opts o = {.eps = 1e-2, .rtol = 1e-6, .atol = 1e-12};
    pg_gradcheck_result central = pg_gradcheck(fifth_fn, 1, &x, NULL, &o);
    cr_assert(!central.ok, "the central difference should miss rtol 1e-6 at eps 1e-2 (%g)", central.max_rel_err);
    o.richardson = true;
    pg_gradcheck_result four = pg_gradcheck(fifth_fn, 1, &x, NULL, &o);
    cr_assert(four.ok, "%s", four.message);
    cr_assert_lt(four.max_abs_err, central.max_abs_err / 100, "%g vs %g", four.max_abs_err, central.max_abs_err);
    pg_tensor_free(x);
}

/* max_per_input: a seeded subset, each element at most once, the same for the same seed */
Test(gradcheck, sampling_checks_a_seeded_subset)
{
    pg_rng rng = pg_rng_init(21);
    pg_tensor *x = pg_randn(NULL, PG_F64, 2, (const int64_t[]){10, 10}, &rng);
    pg_set_requires_grad(x, true);
    pg_gradcheck_opts o = {.max_per_input = 7};
    pg_gradcheck_stat st;
    pg_gradcheck_result r = pg_gradcheck_ex(fifth_fn, 1, &x, NULL, &o, &st);
    cr_assert(r.ok, "%s", r.message);
    cr_assert_eq(r.checked, 7);
    cr_assert_eq(st.checked, 7);
    pg_gradcheck_stat st2;
    pg_gradcheck_ex(fifth_fn, 1, &x, NULL, &o, &st2);
    cr_assert_eq(st.worst_index, st2.worst_index, "same seed, same subset");
    o.max_per_input = 1000; /* more than there are: all */
    cr_assert_eq(pg_gradcheck(fifth_fn, 1, &x, NULL, &o).checked, 100);
    pg_tensor_free(x);
}

/* a backward that differs from call to call */
static int drift_calls;
static int drift_backward(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                          pg_tensor *const *in, int n_in, void *ctx)
{
    (void)out, (void)in, (void)n_in, (void)ctx;
    drift_calls++;
    for (int64_t i = 0; grad_in[0] && i < grad_out->numel; i++)
        pg_set(grad_in[0], i, 2 * pg_get(grad_out, i) + (i == 1 ? 1e-13 * drift_calls : 0.0));
    return 0;
}

static const pg_custom_op DRIFT = {.name = "drift", .forward = twice_forward, .backward = drift_backward};

Test(gradcheck, non_deterministic_gradients_fail)
{
    pg_tensor *x = input(22);
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, (void *)&DRIFT, NULL);
    cr_assert(!r.ok && strstr(r.message, "non-deterministic gradient (two backward runs) at input 0 element 1"), "%s",
              r.message);
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.nondet_tol = 1e-9; /* allowed to drift that much */
    r = pg_gradcheck(cube_fn, 1, &x, (void *)&DRIFT, &o);
    cr_assert(r.ok, "%s", r.message);
    pg_tensor_free(x);
}

/* fn fails at one perturbed point: a failed result naming the element and the graph's message */
static pg_tensor *fails_past_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    if (pg_f64(in[0])[3] > 0.25 + 1e-9) {
        pg_graph_fail(g, "fails_past: x[3] = %g is past 0.25", pg_f64(in[0])[3]);
        return NULL;
    }
    return pg_mul(g, in[0], in[0]);
}

Test(gradcheck, a_function_failing_mid_check_is_named)
{
    pg_tensor *x = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){4}, (const double[]){1, 2, 3, 0.25});
    pg_set_requires_grad(x, true);
    pg_gradcheck_result r = pg_gradcheck(fails_past_fn, 1, &x, NULL, NULL);
    cr_assert(!r.ok);
    cr_assert(strstr(r.message, "pg_gradcheck: the function failed at input 0 element 3 +1e-06: fails_past: x[3] = "
                                "0.250001 is past 0.25"),
              "%s", r.message);
    pg_tensor_free(x);
}
