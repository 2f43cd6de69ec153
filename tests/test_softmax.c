/* softmax and log_softmax: forward values on every axis, large logits, masked
 * (-inf) rows and their gradients, gradchecks on odd shapes, bad input.
 *
 * Reference numbers were computed with PyTorch 1.13 in float64
 * (torch.softmax / torch.log_softmax and .backward) and pasted here. Where
 * torch gives NaN (a row that is all -inf) the expected value is posgrad's
 * documented one: 0 (softmax), -inf (log_softmax), gradient 0. */
#include "testutil.h"

typedef pg_tensor *(*softmax_fn)(pg_graph *, pg_tensor *, int);

/* x (2,3,4) = 3 sin(0.37 i), i = 0..23 */
static pg_tensor *x234(void)
{
    pg_tensor *x = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, 3, 4));
    for (int64_t i = 0; i < 24; i++)
        pg_set(x, i, 3.0 * sin(0.37 * (double)i));
    return x;
}

static void check_axis(softmax_fn f, pg_tensor *x, int axis, const double *expected)
{
    pg_tensor *y = f(NULL, x, axis);
    assert_shape(y, x->ndim, x->shape);
    assert_values(y, expected, 24, 1e-14);
    pg_tensor_free(y);
}

Test(softmax, forward_every_axis)
{
    static const double sm0[24] = {
        0.9473195869512918,   0.9832186895527882,  0.9909939046390576,   0.9909402761684863,
        0.9829331514654018,   0.946006291477263,   0.7834379726851103,   0.38561532545298355,
        0.1039267829712394,   0.02788701592885991, 0.01134427534863411,  0.008332024739820091,
        0.05268041304870829,  0.01678131044721171, 0.009006095360942523, 0.009059723831513693,
        0.017066848534598084, 0.05399370852273699, 0.2165620273148897,   0.6143846745470164,
        0.8960732170287606,   0.97211298407114,    0.988655724651366,    0.9916679752601799};
    static const double sm1[24] = {
        0.04433029474801163,  0.13819494483911673,  0.40483466769349463,  0.7495740611344193,
        0.8794624172363543,   0.835177807342947,    0.5842397548257875,   0.2458058741017132,
        0.0762072880156341,   0.026627247817936375, 0.010925577480717836, 0.004620064763867497,
        0.0036532031162249184, 0.002411175940250936, 0.003292732190382251, 0.007226180733826082,
        0.02262909483977799,  0.04872917701508189,  0.14453797028134113,  0.4129572894659084,
        0.9737177020439971,   0.9488596470446673,   0.8521692975282765,   0.5798165298002655};
    static const double sm2[24] = {
        0.038156453194038986, 0.11290437172514063, 0.2884606355763207,  0.5604785395044998,
        0.3711770389373844,   0.3345753841988763,  0.2041250968558352,  0.09012248000790406,
        0.6653360896051831,   0.22065921913955142, 0.07896423942523427, 0.035040451830031266,
        0.17990231321329492,  0.1633813948955514,  0.22226353060148193, 0.43445276128967175,
        0.028573201226754396, 0.08466259263369105, 0.2501626909946594,  0.6366015151448952,
        0.2343318297386566,   0.3142034617519358,  0.28110784925791577, 0.17035685925149177};
    static const double ls0[24] = {
        -0.05411876970584333, -0.016923712008631246, -0.009046895388463807, -0.009101012695792806,
        -0.0172141657604085,  -0.055506059342159436, -0.2440633872821386,   -0.9529149726035242,
        -2.264068637664028,   -3.5795940773710933,   -4.479042036864047,    -4.787648786334328,
        -2.9435115614257925,  -4.087489485211004,    -4.709853668557603,    -4.703916641564722,
        -4.070617379337456,   -2.9188877480437485,   -1.529878272273245,    -0.48713404123090775,
        -0.10973315391184614, -0.028283242520581873, -0.0114091124599734,   -0.008366930081289827};
    static const double ls1[24] = {
        -3.1160869812959677,  -1.979089946905737,   -0.9042765231405954, -0.2882501522660093,
        -0.12844444768304744, -0.18011063387472326, -0.5374438413167704, -1.4032131842443238,
        -2.574298177613269,   -3.625820233429333,   -4.516648680750511,  -5.377346555833605,
        -5.612150930134709,   -6.027640708471731,   -5.71603760583644,   -4.930044634968853,
        -3.7885188183788876,  -3.021477310939933,   -1.9342130358345822, -0.8844111067056226,
        -0.026633850979879192, -0.052494386942441795, -0.15997006587314352, -0.545043553414482};
    static const double ls2[24] = {
        -3.2660603823706396, -2.1812140864757534, -1.2431966474862044, -0.5789643253304967,
        -0.9910761362941977, -1.0948930609812182, -1.5890222531988578, -2.40658564484529,
        -0.4074629680942574, -1.5111357624056656, -2.5387601945024367, -3.351252118304409,
        -1.7153412797798295, -1.8116679653673682, -1.5038915263445842, -0.8336680598886664,
        -3.555286020477593,  -2.4690814202891542, -1.385643808796311,  -0.4516113840790203,
        -1.4510170923381622, -1.157714535551241,  -1.2690168780944502, -1.7698598700474575};
    pg_tensor *x = x234();
    check_axis(pg_softmax, x, 0, sm0);
    check_axis(pg_softmax, x, 1, sm1);
    check_axis(pg_softmax, x, 2, sm2);
    check_axis(pg_softmax, x, -1, sm2);
    check_axis(pg_softmax, x, -2, sm1);
    check_axis(pg_softmax, x, -3, sm0);
    check_axis(pg_log_softmax, x, 0, ls0);
    check_axis(pg_log_softmax, x, 1, ls1);
    check_axis(pg_log_softmax, x, 2, ls2);
    check_axis(pg_log_softmax, x, -1, ls2);
    check_axis(pg_log_softmax, x, -2, ls1);
    pg_tensor_free(x);
}

Test(softmax, f32_matches_torch)
{
    /* the same x in f32; torch f64 numbers, f32 tolerance (middle axis: strided kernel) */
    pg_tensor *x64 = x234(), *x = pg_tensor_cast(NULL, x64, PG_F32);
    pg_tensor *y = pg_softmax(NULL, x, 1), *l = pg_log_softmax(NULL, x, -1);
    cr_assert_eq(y->dtype, PG_F32);
    cr_assert_eq(l->dtype, PG_F32);
    ASSERT_VALUES(y, 1e-6, 0.04433029474801163, 0.13819494483911673, 0.40483466769349463, 0.7495740611344193,
                  0.8794624172363543, 0.835177807342947, 0.5842397548257875, 0.2458058741017132,
                  0.0762072880156341, 0.026627247817936375, 0.010925577480717836, 0.004620064763867497,
                  0.0036532031162249184, 0.002411175940250936, 0.003292732190382251, 0.007226180733826082,
                  0.02262909483977799, 0.04872917701508189, 0.14453797028134113, 0.4129572894659084,
                  0.9737177020439971, 0.9488596470446673, 0.8521692975282765, 0.5798165298002655);
    ASSERT_VALUES(l, 1e-6, -3.2660603823706396, -2.1812140864757534, -1.2431966474862044, -0.5789643253304967,
                  -0.9910761362941977, -1.0948930609812182, -1.5890222531988578, -2.40658564484529,
                  -0.4074629680942574, -1.5111357624056656, -2.5387601945024367, -3.351252118304409,
                  -1.7153412797798295, -1.8116679653673682, -1.5038915263445842, -0.8336680598886664,
                  -3.555286020477593, -2.4690814202891542, -1.385643808796311, -0.4516113840790203,
                  -1.4510170923381622, -1.157714535551241, -1.2690168780944502, -1.7698598700474575);
    pg_tensor *all[] = {x64, x, y, l};
    free_all(4, all);
}

Test(softmax, large_logits)
{
    /* max-shifted: no overflow at |x| = 1000, in f64 and f32, last and first axis */
    pg_tensor *x = T64(PG_SHAPE(2, 3), 1000.0, 999.0, 998.0, -1000.0, 0.0, 1000.0);
    pg_tensor *x32 = T32(PG_SHAPE(2, 3), 1000.0f, 999.0f, 998.0f, -1000.0f, 0.0f, 1000.0f);
    pg_tensor *xt = T64(PG_SHAPE(3, 2), 1000.0, -1000.0, 999.0, 0.0, 998.0, 1000.0); /* x transposed */
    pg_tensor *ys[] = {pg_softmax(NULL, x, -1), pg_log_softmax(NULL, x, -1), pg_softmax(NULL, x32, 1),
                       pg_log_softmax(NULL, x32, 1), pg_softmax(NULL, xt, 0), pg_log_softmax(NULL, xt, 0)};
    ASSERT_VALUES(ys[0], 1e-15, 0.6652409557748218, 0.2447284710547976, 0.09003057317038045, 0.0, 0.0, 1.0);
    ASSERT_VALUES(ys[1], 1e-15, -0.4076059644443804, -1.4076059644443804, -2.4076059644443806, -2000.0, -1000.0,
                  0.0);
    ASSERT_VALUES(ys[2], 1e-6, 0.6652409557748218, 0.2447284710547976, 0.09003057317038045, 0.0, 0.0, 1.0);
    ASSERT_VALUES(ys[3], 1e-6, -0.4076059644443804, -1.4076059644443804, -2.4076059644443806, -2000.0, -1000.0,
                  0.0);
    ASSERT_VALUES(ys[4], 1e-15, 0.6652409557748218, 0.0, 0.2447284710547976, 0.0, 0.09003057317038045, 1.0);
    ASSERT_VALUES(ys[5], 1e-15, -0.4076059644443804, -2000.0, -1.4076059644443804, -1000.0, -2.4076059644443806,
                  0.0);
    pg_tensor *all[] = {x, x32, xt, ys[0], ys[1], ys[2], ys[3], ys[4], ys[5]};
    free_all(9, all);
}

static void assert_no_nan(const pg_tensor *t)
{
    cr_assert_not_null(t);
    for (int64_t i = 0; i < t->numel; i++)
        cr_assert(!isnan(pg_get(t, i)), "element %lld is NaN", (long long)i);
}

/* y = f(x, axis), backward with dy; returns x's gradient as a heap f64 copy */
static pg_tensor *grad_of(softmax_fn f, pg_tensor *x, int axis, pg_tensor *dy, pg_tensor **y_out)
{
    pg_graph *g = pg_graph_new();
    x->requires_grad = true;
    pg_tensor *y = f(g, x, axis);
    cr_assert_not_null(y, "%s", pg_last_error());
    cr_assert_eq(pg_backward_with(g, y, dy), 0, "%s", pg_graph_error(g));
    *y_out = pg_tensor_cast(NULL, y, PG_F64);
    pg_tensor *gx = pg_tensor_cast(NULL, x->grad, PG_F64);
    pg_tensor_free(x->grad);
    x->grad = NULL;
    pg_graph_free(g);
    return gx;
}

Test(softmax, masked_rows_last_axis)
{
    /* rows: partly masked, all -inf, partly masked */
    pg_tensor *x = T64(PG_SHAPE(3, 3), 1.0, -INFINITY, 2.0, -INFINITY, -INFINITY, -INFINITY, 0.5, -0.5, -INFINITY);
    pg_tensor *dy = T64(PG_SHAPE(3, 3), 0.3, -0.2, 0.5, 0.4, -0.7, 1.1, 1.0, 2.0, 0.0);
    pg_tensor *y, *gx = grad_of(pg_softmax, x, -1, dy, &y);
    ASSERT_VALUES(y, 1e-15, 0.26894142136999516, 0.0, 0.7310585786300049, 0, 0, 0, 0.7310585786300049,
                  0.26894142136999516, 0.0);
    ASSERT_VALUES(gx, 1e-15, -0.03932238664829638, 0.0, 0.03932238664829636, 0, 0, 0, -0.19661193324148193,
                  0.19661193324148185, 0.0);
    pg_tensor_free(y);
    pg_tensor_free(gx);
    /* log_softmax; torch numbers with dy zero at the masked entries (posgrad
     * ignores dy there: those outputs are constant -inf) */
    pg_tensor *dyl = T64(PG_SHAPE(3, 3), 0.3, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0);
    gx = grad_of(pg_log_softmax, x, -1, dyl, &y);
    ASSERT_VALUES(y, 1e-15, -1.3132616875182228, -INFINITY, -0.31326168751822286, -INFINITY, -INFINITY, -INFINITY,
                  -0.31326168751822286, -1.3132616875182228, -INFINITY);
    ASSERT_VALUES(gx, 1e-15, 0.0848468629040039, 0.0, -0.08484686290400395, 0, 0, 0, -1.1931757358900148,
                  1.1931757358900148, 0.0);
    pg_tensor_free(y);
    pg_tensor_free(gx);
    /* nonzero dy at the masked entries changes nothing */
    gx = grad_of(pg_log_softmax, x, -1, dy, &y);
    ASSERT_VALUES(gx, 1e-15, 0.0848468629040039, 0.0, -0.08484686290400395, 0, 0, 0, -1.1931757358900148,
                  1.1931757358900148, 0.0);
    pg_tensor *all[] = {x, dy, dyl, y, gx};
    free_all(5, all);
}

Test(softmax, masked_middle_axis)
{
    /* x (2,3,2), softmax over axis 1 (strided kernel): column (0,:,0) all -inf */
    double inf = INFINITY;
    pg_tensor *x = T64(PG_SHAPE(2, 3, 2), -inf, 1.0, -inf, -inf, -inf, 3.0, 0.5, -inf, 2.0, 0.0, -1.0, 0.0);
    pg_tensor *dy = T64(PG_SHAPE(2, 3, 2), 0.7, -0.4, 0.2, 0.9, -1.1, 0.3, 0.6, 0.8, -0.5, 1.2, 0.25, -0.75);
    pg_tensor *dyl = T64(PG_SHAPE(2, 3, 2), 0.0, -0.4, 0.0, 0.0, 0.0, 0.3, 0.6, 0.0, -0.5, 1.2, 0.25, -0.75);
    pg_tensor *y, *gx = grad_of(pg_softmax, x, 1, dy, &y);
    ASSERT_VALUES(y, 1e-15, 0, 0.11920292202211755, 0, 0.0, 0, 0.8807970779778823, 0.1752903921400367, 0.0,
                  0.7855970345892759, 0.5, 0.039112573270687456, 0.5);
    ASSERT_VALUES(gx, 1e-15, 0, -0.07349550978245455, 0, 0.0, 0, 0.07349550978245459, 0.1538779938901032, 0.0,
                  -0.17452341466538043, 0.4875, 0.02064542077527723, -0.4875);
    pg_tensor_free(y);
    pg_tensor_free(gx);
    gx = grad_of(pg_log_softmax, x, -2, dyl, &y);
    ASSERT_VALUES(y, 1e-15, -inf, -2.1269280110429727, -inf, -inf, -inf, -0.1269280110429726, -1.7413112966571571,
                  -inf, -0.24131129665715703, -0.6931471805599453, -3.241311296657157, -0.6931471805599453);
    ASSERT_VALUES(gx, 1e-15, 0, -0.3880797077977883, 0, 0.0, 0, 0.3880797077977883, 0.5386483627509872, 0.0,
                  -0.7749589621062465, 0.975, 0.2363105993552594, -0.975);
    pg_tensor *all[] = {x, dy, dyl, y, gx};
    free_all(5, all);
}

Test(softmax, masked_additive_no_nan_f32_f64)
{
    /* logits = x + bias with -inf in bias (an additive mask); every input's
     * gradient stays finite and the fully masked row (1) gets none */
    for (int dt = 0; dt < 2; dt++)
        for (int lg = 0; lg < 2; lg++)
            for (int axis = 0; axis < 2; axis++) {
                pg_dtype dtype = dt ? PG_F64 : PG_F32;
                double inf = INFINITY;
                /* axis 1: rows masked as in the comment; axis 0: transpose of it */
                const double b1[12] = {0, -inf, 0, 0, -inf, -inf, -inf, -inf, 0, 0, 0, -inf};
                double bias[12], xs[12];
                for (int i = 0; i < 12; i++) {
                    int r = axis ? i / 4 : i % 3, c = axis ? i % 4 : i / 3;
                    bias[i] = b1[r * 4 + c];
                    xs[i] = sin(1.7 * i);
                }
                int64_t shape[2] = {axis ? 3 : 4, axis ? 4 : 3};
                pg_tensor *x = pg_tensor_from_array(NULL, PG_F64, 2, shape, xs);
                pg_tensor *b = pg_tensor_from_array(NULL, PG_F64, 2, shape, bias);
                pg_tensor *xc = pg_tensor_cast(NULL, x, dtype), *bc = pg_tensor_cast(NULL, b, dtype);
                xc->requires_grad = bc->requires_grad = true;
                pg_graph *g = pg_graph_new();
                pg_tensor *z = pg_add(g, xc, bc);
                pg_tensor *y = lg ? pg_log_softmax(g, z, axis) : pg_softmax(g, z, axis);
                pg_rng r = pg_rng_init(7);
                pg_tensor *dy = pg_randn(g, dtype, 2, shape, &r);
                cr_assert_eq(pg_backward_with(g, y, dy), 0, "%s", pg_graph_error(g));
                assert_no_nan(y);
                assert_no_nan(xc->grad);
                assert_no_nan(bc->grad);
                for (int i = 0; i < 12; i++) {
                    int row = axis ? i / 4 : i % 3;
                    double yi = pg_get(y, i);
                    if (row == 1) {
                        cr_assert(lg ? yi == -inf : yi == 0.0, "masked row output %g", yi);
                        cr_assert_eq(pg_get(xc->grad, i), 0.0);
                    }
                    if (bias[i] == -inf)
                        cr_assert_eq(pg_get(bc->grad, i), 0.0, "masked entries get no gradient");
                }
                pg_graph_free(g);
                pg_tensor *all[] = {x, b, xc, bc};
                free_all(4, all);
            }
}

typedef struct sm_case {
    softmax_fn f;
    int axis;
} sm_case;

static pg_tensor *call_softmax(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const sm_case *c = ctx;
    return c->f(g, in[0], c->axis);
}

Test(softmax, gradcheck_every_axis)
{
    softmax_fn fs[2] = {pg_softmax, pg_log_softmax};
    const int axes[5] = {0, 1, 2, -1, -2};
    pg_tensor *x = rand_param(PG_SHAPE(3, 5, 7), -3, 3, 11);
    for (int f = 0; f < 2; f++)
        for (int a = 0; a < 5; a++) {
            sm_case c = {fs[f], axes[a]};
            pg_gradcheck_result r = pg_gradcheck(call_softmax, 1, &x, &c, NULL);
            cr_expect(r.ok, "%s axis %d: %s", f ? "log_softmax" : "softmax", axes[a], r.message);
            cr_expect_eq(r.checked, 105);
        }
    pg_tensor_free(x);
}

Test(softmax, gradcheck_wide_and_small)
{
    /* inner 67 > one column block; 1-D; a single element per row */
    pg_tensor *wide = rand_param(PG_SHAPE(2, 3, 67), -2, 2, 12);
    pg_tensor *vec = rand_param(PG_SHAPE(9), -4, 4, 13);
    pg_tensor *one = rand_param(PG_SHAPE(4, 1, 3), -1, 1, 14);
    for (int f = 0; f < 2; f++) {
        softmax_fn fn = f ? pg_log_softmax : pg_softmax;
        sm_case cw = {fn, 1}, cv = {fn, 0}, co = {fn, 1};
        assert_gradcheck(call_softmax, 1, &wide, &cw, NULL);
        assert_gradcheck(call_softmax, 1, &vec, &cv, NULL);
        assert_gradcheck(call_softmax, 1, &one, &co, NULL);
    }
    pg_tensor *all[] = {wide, vec, one};
    free_all(3, all);
}

Test(softmax, rows_sum_to_one_and_scalar)
{
    pg_tensor *x = rand_param(PG_SHAPE(4, 70, 3), -5, 5, 15);
    pg_tensor *y = pg_softmax(NULL, x, 1);
    for (int64_t o = 0; o < 4; o++)
        for (int64_t j = 0; j < 3; j++) {
            double s = 0;
            for (int64_t k = 0; k < 70; k++)
                s += pg_get(y, (o * 70 + k) * 3 + j);
            cr_assert(fabs(s - 1.0) < 1e-14, "column sum %.17g", s);
        }
    /* a 0-dim tensor is one row of one element (torch: softmax 1, log_softmax 0) */
    pg_tensor *s = pg_tensor_full(NULL, PG_F64, 0, NULL, 3.5);
    pg_tensor *ys = pg_softmax(NULL, s, 0), *ls = pg_log_softmax(NULL, s, -1);
    assert_shape(ys, 0, NULL);
    ASSERT_VALUES(ys, 0, 1.0);
    ASSERT_VALUES(ls, 0, 0.0);
    pg_tensor *all[] = {x, y, s, ys, ls};
    free_all(5, all);
}

Test(softmax, nan_propagates)
{
    /* as torch: a NaN makes its whole row NaN (values and gradient), other rows are untouched */
    pg_tensor *x = T64(PG_SHAPE(2, 3), 1.0, NAN, 2.0, 0.0, 0.0, 0.0);
    pg_tensor *xt = T64(PG_SHAPE(3, 2), 1.0, 0.0, NAN, 0.0, 2.0, 0.0);
    pg_tensor *dy = T64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), *dyt = T64(PG_SHAPE(3, 2), 1, 4, 2, 5, 3, 6);
    for (int lg = 0; lg < 2; lg++) {
        softmax_fn f = lg ? pg_log_softmax : pg_softmax;
        /* the finite row is uniform, p = 1/3, dy = (4, 5, 6):
         * softmax dx = p (dy - sum(p dy)) = (dy - 5) / 3, log_softmax dx = dy - p sum(dy) = dy - 5 */
        double t = lg ? -1.0986122886681098 : 1.0 / 3.0, c = lg ? 1.0 : 1.0 / 3.0;
        pg_tensor *y, *gx = grad_of(f, x, 1, dy, &y);
        ASSERT_VALUES(y, 1e-15, NAN, NAN, NAN, t, t, t);
        ASSERT_VALUES(gx, 1e-15, NAN, NAN, NAN, -c, 0, c);
        pg_tensor_free(y);
        pg_tensor_free(gx);
        gx = grad_of(f, xt, 0, dyt, &y);
        ASSERT_VALUES(y, 1e-15, NAN, t, NAN, t, NAN, t);
        ASSERT_VALUES(gx, 1e-15, NAN, -c, NAN, 0, NAN, c);
        pg_tensor_free(y);
        pg_tensor_free(gx);
    }
    pg_tensor *all[] = {x, xt, dy, dyt};
    free_all(4, all);
}

Test(softmax, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = T64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    pg_tensor *ids = TI64(PG_SHAPE(2), 1, 2);
    ASSERT_FAILS(pg_softmax(g, NULL, 0), "pg_softmax: x is NULL");
    ASSERT_FAILS(pg_log_softmax(g, NULL, 0), "pg_log_softmax: x is NULL");
    ASSERT_FAILS(pg_softmax(g, ids, 0), "pg_softmax: x must be f32 or f64, got i64[2]");
    ASSERT_FAILS(pg_softmax(g, x, 2), "pg_softmax: axis 2 out of range for a tensor of 2 dims");
    ASSERT_FAILS(pg_log_softmax(g, x, -3), "pg_log_softmax: axis -3 out of range for a tensor of 2 dims");
    cr_assert_str_eq(pg_graph_error(g), "pg_softmax: x is NULL", "the graph keeps the first error");
    pg_tensor_free(x);
    pg_tensor_free(ids);
    pg_graph_free(g);
}
