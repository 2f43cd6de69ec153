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
