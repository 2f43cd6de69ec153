/* Unary ops: forward values (reference numbers from Python's math module),
 * f64 gradchecks on an odd shape, f32 path, bad input. */
#include "testutil.h"

typedef pg_tensor *(*unary_fn)(pg_graph *, pg_tensor *);

static pg_tensor *apply_f64(unary_fn f, const double *xs, int64_t n)
{
    pg_tensor *x = pg_tensor_from_array(NULL, PG_F64, 1, &n, xs);
    pg_tensor *y = f(NULL, x);
    pg_tensor_free(x);
    return y;
}

static const double SYM[5] = {-2.0, -0.5, 0.0, 0.5, 2.0};
static const double POS[4] = {0.5, 1.0, 2.0, 3.0};

#define CHECK_SYM(fn, tol, ...)                                                                                \
    do {                                                                                                       \
        pg_tensor *y = apply_f64(fn, SYM, 5);                                                                  \
        ASSERT_VALUES(y, tol, __VA_ARGS__);                                                                    \
        pg_tensor_free(y);                                                                                     \
    } while (0)
#define CHECK_POS(fn, tol, ...)                                                                                \
    do {                                                                                                       \
        pg_tensor *y = apply_f64(fn, POS, 4);                                                                  \
        ASSERT_VALUES(y, tol, __VA_ARGS__);                                                                    \
        pg_tensor_free(y);                                                                                     \
    } while (0)

Test(unary, forward_values)
{
    CHECK_SYM(pg_neg, 0, 2.0, 0.5, 0.0, -0.5, -2.0);
    CHECK_SYM(pg_abs, 0, 2.0, 0.5, 0.0, 0.5, 2.0);
    CHECK_SYM(pg_sign, 0, -1, -1, 0, 1, 1);
    CHECK_SYM(pg_square, 0, 4, 0.25, 0, 0.25, 4);
    CHECK_SYM(pg_relu, 0, 0, 0, 0, 0.5, 2);
    CHECK_SYM(pg_exp, 1e-15, 0.1353352832366127, 0.6065306597126334, 1.0, 1.6487212707001282, 7.38905609893065);
    CHECK_SYM(pg_sin, 1e-15, -0.9092974268256817, -0.479425538604203, 0.0, 0.479425538604203, 0.9092974268256817);
    CHECK_SYM(pg_cos, 1e-15, -0.4161468365471424, 0.8775825618903728, 1.0, 0.8775825618903728, -0.4161468365471424);
    CHECK_SYM(pg_tanh, 1e-15, -0.9640275800758169, -0.46211715726000974, 0.0, 0.46211715726000974,
              0.9640275800758169);
    CHECK_SYM(pg_sigmoid, 1e-15, 0.11920292202211755, 0.3775406687981454, 0.5, 0.6224593312018546,
              0.8807970779778823);
    CHECK_SYM(pg_gelu, 1e-15, -0.04550026389635842, -0.15426876936299344, 0.0, 0.34573123063700656,
              1.9544997361036416);
    CHECK_SYM(pg_gelu_tanh, 1e-15, -0.04540230591222494, -0.15428599017485606, 0.0, 0.34571400982514394,
              1.954597694087775);
    CHECK_SYM(pg_silu, 1e-15, -0.2384058440442351, -0.1887703343990727, 0.0, 0.3112296656009273,
              1.7615941559557646);
    CHECK_SYM(pg_softplus, 1e-15, 0.1269280110429725, 0.4740769841801067, 0.6931471805599453, 0.9740769841801067,
              2.1269280110429727);
    CHECK_POS(pg_log, 1e-15, -0.6931471805599453, 0.0, 0.6931471805599453, 1.0986122886681098);
    CHECK_POS(pg_log1p, 1e-15, 0.4054651081081644, 0.6931471805599453, 1.0986122886681096, 1.3862943611198906);
    CHECK_POS(pg_sqrt, 1e-15, 0.7071067811865476, 1.0, 1.4142135623730951, 1.7320508075688772);
    CHECK_POS(pg_rsqrt, 1e-15, 1.414213562373095, 1.0, 0.7071067811865475, 0.5773502691896258);
}

Test(unary, floor_round_and_scalars)
{
    const double xs[6] = {-1.5, -0.5, 0.5, 1.5, 2.5, 2.7};
    pg_tensor *x = pg_tensor_from_array(NULL, PG_F64, 1, (int64_t[]){6}, xs);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *f = pg_floor(g, x), *r = pg_round(g, x);
    ASSERT_VALUES(f, 0, -2, -1, 0, 1, 2, 2);
    ASSERT_VALUES(r, 0, -2, -0.0, 0, 2, 2, 3); /* half to even */
    cr_assert(!f->requires_grad && !r->requires_grad, "floor/round have no gradient");
    ASSERT_VALUES(pg_clamp(g, x, -1, 1), 0, -1, -0.5, 0.5, 1, 1, 1);
    ASSERT_VALUES(pg_clamp(g, x, 0, INFINITY), 0, 0, 0, 0.5, 1.5, 2.5, 2.7);
    ASSERT_VALUES(pg_pow_scalar(g, x, 2), 1e-15, 2.25, 0.25, 0.25, 2.25, 6.25, 7.29);
    ASSERT_VALUES(pg_add_scalar(g, x, 1), 1e-15, -0.5, 0.5, 1.5, 2.5, 3.5, 3.7);
    ASSERT_VALUES(pg_mul_scalar(g, x, -2), 1e-15, 3, 1, -1, -3, -5, -5.4);
    pg_graph_free(g);
    pg_tensor_free(x);
}

Test(unary, tie_gradients)
{
    /* relu'(0) = 0, |x|'(0) = 0, clamp passes the gradient at its bounds */
    pg_tensor *x = T64(PG_SHAPE(3), -1.0, 0.0, 1.0);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_add(g, pg_add(g, pg_relu(g, x), pg_abs(g, x)), pg_clamp(g, x, -1.0, 0.0));
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 0 + -1 + 1, 0 + 0 + 1, 1 + 1 + 0);
    pg_graph_free(g);
    pg_tensor_free(x);
}

typedef struct unary_case {
    const char *name;
    unary_fn fn;
    double lo, hi;
} unary_case;

static pg_tensor *call_unary(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return ((const unary_case *)ctx)->fn(g, in[0]);
}

static pg_tensor *clamp_fn(pg_graph *g, pg_tensor *x) { return pg_clamp(g, x, -0.5, 0.4); }
static pg_tensor *pow_fn(pg_graph *g, pg_tensor *x) { return pg_pow_scalar(g, x, 2.5); }
static pg_tensor *add_s_fn(pg_graph *g, pg_tensor *x) { return pg_add_scalar(g, x, 0.7); }
static pg_tensor *mul_s_fn(pg_graph *g, pg_tensor *x) { return pg_mul_scalar(g, x, -1.3); }

static const unary_case CASES[] = {
    {"neg", pg_neg, -2, 2},           {"abs", pg_abs, -2, 2},       {"exp", pg_exp, -2, 2},
    {"log", pg_log, 0.2, 3},          {"log1p", pg_log1p, -0.5, 3}, {"sqrt", pg_sqrt, 0.2, 3},
    {"rsqrt", pg_rsqrt, 0.2, 3},      {"square", pg_square, -2, 2}, {"sin", pg_sin, -3, 3},
    {"cos", pg_cos, -3, 3},           {"tanh", pg_tanh, -2, 2},     {"sigmoid", pg_sigmoid, -4, 4},
    {"relu", pg_relu, -2, 2},         {"gelu", pg_gelu, -3, 3},     {"gelu_tanh", pg_gelu_tanh, -3, 3},
    {"silu", pg_silu, -3, 3},         {"softplus", pg_softplus, -3, 3}, {"clamp", clamp_fn, -1, 1},
    {"pow_scalar", pow_fn, 0.2, 2},   {"add_scalar", add_s_fn, -2, 2}, {"mul_scalar", mul_s_fn, -2, 2},
};

Test(unary, gradcheck_all)
{
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        pg_tensor *x = rand_param(PG_SHAPE(3, 5), CASES[c].lo, CASES[c].hi, 100 + c);
        pg_gradcheck_result r = pg_gradcheck(call_unary, 1, &x, (void *)&CASES[c], NULL);
        cr_expect(r.ok, "%s: %s", CASES[c].name, r.message);
        cr_expect_eq(r.checked, 15);
        pg_tensor_free(x);
    }
}

Test(unary, softplus_threshold_and_stability)
{
    pg_tensor *x = T64(PG_SHAPE(4), -800.0, 30.0, 800.0, -30.0);
    pg_tensor *y = pg_softplus(NULL, x), *s = pg_sigmoid(NULL, x);
    ASSERT_VALUES(y, 1e-15, 0.0, 30.0, 800.0, 9.357622968839737e-14);
    ASSERT_VALUES(s, 1e-15, 0.0, 0.9999999999999064, 1.0, 9.3576229688393e-14);
    pg_tensor_free(x);
    pg_tensor_free(y);
    pg_tensor_free(s);
}

/* float softplus (tensor/vmath.h pg_vsoftplusf) at every 1601st float of [-110, 30],
 * walked by its bits (~1.4M inputs, each binade its share), against log1p(exp(x)) in
 * double: within 0.52 ulps (libm's log1pf(expf(x)) is 1.5 off), the subnormal results
 * below -87 included; x itself above 20, NaN and the infinities */
static double float_ulps_off(float v, double ref)
{
    const float r = (float)fabs(ref);
    const double ulp = (double)nextafterf(r, INFINITY) - (double)r;
    return fabs((double)v - ref) / ulp;
}

Test(unary, softplus_f32_within_0_52_ulps)
{
    enum { CAP = 1 << 21 };
    pg_tensor *x = pg_empty(NULL, PG_F32, PG_SHAPE(CAP));
    int64_t n = 0;
    for (uint32_t b = 0; b < 0xFF800000u && n < CAP; b += 1601) { /* up to -inf's bits */
        const float f = float_of_bits(b);
        if (f >= -110.0f && f <= 30.0f)
            pg_f32(x)[n++] = f;
    }
    cr_assert_gt(n, 1000000);
    pg_tensor *y = pg_softplus(NULL, x);
    cr_assert(y, "%s", pg_last_error());
    double worst = 0;
    float at = 0;
    for (int64_t i = 0; i < n; i++) {
        const float xi = pg_f32(x)[i];
        const double ref = xi > 20.0f ? xi : log1p(exp((double)xi)), off = float_ulps_off(pg_f32(y)[i], ref);
        if (off > worst)
            worst = off, at = xi;
    }
    cr_assert_leq(worst, 0.52, "softplus f32: %.3f ulps at x = %.9g", worst, at);
    pg_tensor_free(y);
    pg_tensor_free(x);
    pg_tensor *e = T32(PG_SHAPE(5), -100.0f, 25.0f, (float)NAN, (float)INFINITY, -(float)INFINITY);
    pg_tensor *ye = pg_softplus(NULL, e);
    cr_assert_gt(pg_f32(ye)[0], 0.0f, "e^-100 is a subnormal float, not 0");
    cr_assert_lt(pg_f32(ye)[0], 4e-44f);
    cr_assert_eq(pg_f32(ye)[1], 25.0f);
    cr_assert(isnan(pg_f32(ye)[2]));
    cr_assert(isinf(pg_f32(ye)[3]) && pg_f32(ye)[3] > 0);
    cr_assert_eq(pg_f32(ye)[4], 0.0f);
    pg_tensor_free(ye);
    pg_tensor_free(e);
}

Test(unary, f32_matches_f64)
{
    pg_tensor *x = T32(PG_SHAPE(2, 2), -1.0f, 0.25f, 0.5f, 2.0f);
    pg_tensor *y = pg_gelu(NULL, x);
    cr_assert_eq(y->dtype, PG_F32);
    ASSERT_VALUES(y, 1e-6, -0.15865525393145707, 0.14967658142073093, 0.34573123063700656, 1.9544997361036416);
    pg_tensor_free(x);
    pg_tensor_free(y);
}

/* The ops that call libm per element run on the pool from 4096 elements (unary.c's
 * LIBM_GRAIN): on 2 threads, y and x's gradient (y's upstream gradient is 1) are the
 * same bits as on 1, and each element of sin / cos / exp / log is libm's own (a
 * slice at a wrong offset would differ), f32 and f64. */
typedef struct libm_case {
    unary_fn f;
    pg_dtype dt;
} libm_case;

static void libm_run(void *ctx, pg_tensor **res)
{
    const libm_case *c = ctx;
    pg_tensor *x = rand_param(PG_SHAPE(20001), 0.1, 3, 7);
    pg_tensor *x32 = c->dt == PG_F32 ? pg_cast(NULL, x, PG_F32) : NULL;
    pg_tensor *in = x32 ? x32 : x;
    in->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = c->f(g, in);
    cr_assert(y && pg_backward(g, pg_sum(g, y, 0, NULL, false)) == 0, "%s", pg_last_error());
    res[0] = pg_tensor_copy(NULL, y);
    res[1] = pg_tensor_copy(NULL, in->grad);
    pg_graph_free(g);
    pg_tensor_free(x32);
    pg_tensor_free(x);
}

Test(unary, libm_ops_on_the_pool)
{
    const unary_fn fs[] = {pg_sin, pg_cos, pg_exp, pg_log, pg_log1p, pg_tanh, pg_gelu_tanh, pg_softplus};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        for (int t = 0; t < 2; t++) {
            libm_case c = {fs[i], t ? PG_F32 : PG_F64};
            assert_same_bits_on_1_and_2_threads(libm_run, &c, 2, (const char *const[]){"y", "x's gradient"});
        }
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(2), 0);
    const struct {
        unary_fn f;
        float (*f32)(float);
        double (*f64)(double);
    } ref[] = {{pg_sin, sinf, sin}, {pg_cos, cosf, cos}, {pg_exp, expf, exp}, {pg_log, logf, log}};
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < 2; t++) {
            pg_tensor *y[2];
            libm_run(&(libm_case){ref[i].f, t ? PG_F32 : PG_F64}, y);
            pg_tensor *x = rand_param(PG_SHAPE(20001), 0.1, 3, 7);
            for (int64_t k = 0; k < x->numel; k++) {
                double xk = pg_f64(x)[k];
                double want = t ? (double)ref[i].f32((float)xk) : ref[i].f64(xk), got = pg_get(y[0], k);
                cr_assert(got == want, "op %d %s element %lld: %.17g, libm %.17g", i, t ? "f32" : "f64",
                          (long long)k, got, want);
            }
            pg_tensor_free(x);
            pg_tensor_free(y[0]);
            pg_tensor_free(y[1]);
        }
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

Test(unary, bad_input)
{
    pg_graph *g = pg_graph_new();
    ASSERT_FAILS(pg_exp(g, NULL), "pg_exp: x is NULL");
    pg_tensor *ids = TI64(PG_SHAPE(2), 1, 2);
    ASSERT_FAILS(pg_tanh(g, ids), "pg_tanh: x must be f32 or f64, got i64[2]");
    ASSERT_FAILS(pg_clamp(g, NULL, 1, 0), "pg_clamp: bad bounds");
    cr_assert_str_eq(pg_graph_error(g), "pg_exp: x is NULL", "the graph keeps the first error");
    pg_tensor_free(ids);
    pg_graph_free(g);
}
