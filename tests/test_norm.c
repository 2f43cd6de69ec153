/* layer_norm and rms_norm: forward values with and without weight/bias for
 * norm_ndim 1 and 2, gradients against torch, gradchecks, f32 path, bad input.
 *
 * Reference numbers were computed with PyTorch 1.13 in float64 and pasted
 * here: torch.nn.functional.layer_norm, and for rms_norm (torch 1.13 has no
 * RMSNorm) x / torch.sqrt((x * x).mean(dims, keepdim=True) + eps) * w, with
 * .backward(dy) for the gradients. */
#include "testutil.h"

/* x (2,3,4) = 3 sin(0.37 i) + 0.1 i, i = 0..23 */
static pg_tensor *x234(void)
{
    pg_tensor *x = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, 3, 4));
    for (int64_t i = 0; i < 24; i++)
        pg_set(x, i, 3.0 * sin(0.37 * (double)i) + 0.1 * (double)i);
    return x;
}

/* w1 (4), b1 (4), w2 = cos(0.7 i) (3,4), b2 = sin(0.3 i) (3,4) */
static pg_tensor *w1(void) { return T64(PG_SHAPE(4), 0.5, -1.0, 2.0, 1.5); }
static pg_tensor *b1(void) { return T64(PG_SHAPE(4), 0.1, 0.2, -0.3, 0.0); }
static pg_tensor *param2(bool bias)
{
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(3, 4));
    for (int64_t i = 0; i < 12; i++)
        pg_set(t, i, bias ? sin(0.3 * (double)i) : cos(0.7 * (double)i));
    return t;
}

static void check(pg_tensor *y, const double *expected)
{
    assert_shape(y, 3, (int64_t[]){2, 3, 4});
    assert_values(y, expected, 24, 1e-13);
    pg_tensor_free(y);
}

Test(norm, layer_norm_forward)
{
    static const double ln1_wb[24] = {
        -0.6118089868708296,  0.568531417687947,    0.8116128090881858,  1.8545144803282692,
        0.5170476785243108,   -0.625702193514889,   -0.3819233754747157, -2.428253794239236,
        0.8020743200052557,   -0.19366889283544697, -1.3804934576012609, -1.8863562060679921,
        -0.3143387466047737,  1.0210522425687176,   -0.24913883949296314, 2.436448733287118,
        -0.5825111549835941,  0.6343860554610256,   0.6881587187619009,  1.9579935090708935,
        -0.37584844418464747, -0.8275476072364336,  1.6413400461930154,  -1.569781112945463};
    static const double ln1[24] = {
        -1.4236179737416592, -0.36853141768794695, 0.5558064045440929,  1.2363429868855127,
        0.8340953570486216,  0.825702193514889,    -0.04096168773735787, -1.6188358628261572,
        1.4041486400105114,  0.393668892835447,    -0.5402467288006304, -1.2575708040453282,
        -0.8286774932095474, -0.8210522425687177,  0.02543058025351842, 1.6242991555247455,
        -1.365022309967188,  -0.43438605546102554, 0.49407935938095043, 1.3053290060472624,
        -0.951696888369295,  1.0275476072364336,   0.9706700230965077,  -1.046520741963642};
    static const double ln2_wb[24] = {
        -0.9833263818581696, 0.13044389047666183, 0.6422418956761198,  0.30291817189669984,
        -0.20904148159846284, -0.13428773020723592, 0.5064923678579485, 0.9543150820432149,
        0.5869172061539351,  -0.33682049075499043, -0.888096984787299, -0.4379152451545038,
        -1.3741981491117052, -0.7544655291833061, 0.3574336447338347,  1.2522239628068794,
        1.4371157277496496,  1.0807779755086226,  0.7987573623238227,  1.002514163414982,
        1.4763776633397063,  1.6081438193453648,  1.0282147066101965,  -0.00044827788944141366};
    static const double ln2[24] = {
        -0.9833263818581696, -0.21583055815836738, 0.45655543157909007, 0.9515944232382603,
        1.21105233692072,    1.2085798864713961,   0.9532788317495687,  0.48847009813019987,
        -0.11416950751791705, -0.7643084163907479, -1.3651862518220983, -1.8267098923419351,
        -1.3741981491117052, -1.372813572918273,   -1.2191110889168615, -0.9287920594158999,
        -0.5360482552599956, -0.08893416004696263, 0.35713697879336764, 0.7468930730834799,
        1.032684011739914,   1.1809308797716358,   1.1766707068982616,  1.0255816353830414};
    pg_tensor *x = x234(), *w = w1(), *b = b1(), *w2 = param2(false), *b2 = param2(true);
    check(pg_layer_norm(NULL, x, 1, w, b, 1e-5), ln1_wb);
    check(pg_layer_norm(NULL, x, 1, NULL, NULL, 1e-5), ln1);
    check(pg_layer_norm(NULL, x, 2, w2, b2, 1e-5), ln2_wb);
    check(pg_layer_norm(NULL, x, 2, NULL, NULL, 1e-5), ln2);
    /* weight only: ln1 * w; bias only: ln1 + b */
    pg_tensor *yw = pg_layer_norm(NULL, x, 1, w, NULL, 1e-5), *yb = pg_layer_norm(NULL, x, 1, NULL, b, 1e-5);
    for (int64_t i = 0; i < 24; i++) {
        cr_assert(fabs(pg_get(yw, i) - ln1[i] * pg_get(w, i % 4)) < 1e-13);
        cr_assert(fabs(pg_get(yb, i) - (ln1[i] + pg_get(b, i % 4))) < 1e-13);
    }
    pg_tensor *all[] = {x, w, b, w2, b2, yw, yb};
    free_all(7, all);
}

Test(norm, rms_norm_forward)
{
    static const double r1_w[24] = {
        0.0,                 -0.6064629192967184, 2.275543139270475,   2.293415189694354,
        0.5567195738834331,  -1.1121846135802045, 1.9652870674941527,  1.120195755869647,
        0.6744884865825862,  -0.3399273489602242, -1.1853330204589294, -1.9634630446662475,
        -0.6133458741838848, 1.2240245033664818,  -1.8558646486846748, -0.552993429621339,
        0.10246383238935511, -0.6599412318258867, 2.227786831747475,   2.2658033981963817,
        0.48024710906008933, -1.040936048157872,  2.0772487797255033,  1.4349604817632737};
    static const double r1[24] = {
        0.0,                 0.6064629192967184,  1.1377715696352375,  1.528943459796236,
        1.1134391477668661,  1.1121846135802045,  0.9826435337470764,  0.7467971705797646,
        1.3489769731651724,  0.3399273489602242,  -0.5926665102294647, -1.3089753631108316,
        -1.2266917483677695, -1.2240245033664818, -0.9279323243423374, -0.36866228641422605,
        0.20492766477871022, 0.6599412318258867,  1.1138934158737375,  1.510535598797588,
        0.9604942181201787,  1.040936048157872,   1.0386243898627516,  0.9566403211755158};
    static const double r2_w[24] = {
        0.0,                 0.4185557555130059,  0.1745007439876483,   -0.6965104976806975,
        -1.4742476449577906, -1.4635755187566697, -0.6769767407151832,  0.1957315619051636,
        0.4806426723950385,  0.15614346226971593, -0.2052695474085594,  -0.09223206273053801,
        -0.5125024021167708, -0.39113115289017597, -0.0658933729895138, 0.07775855531601782,
        -0.15270544216034337, -0.4887575562220854, -0.4318882130846731, 0.2228122839209796,
        1.1049014529352583,  1.543734986307147,   1.1614049021634012,   0.21762567510633482};
    static const double r2_eps01[24] = { /* no weight, eps 0.1 */
        0.0,                 0.5414999121002492,  1.0158959193450847,  1.3651663156026241,
        1.5482245591973407,  1.5464801435801625,  1.3663547351778833,  1.0384130309676938,
        0.613225970126794,   0.154526194653761,   -0.2694178647426212, -0.5950418004781078,
        -0.5101605025515054, -0.5090512401372962, -0.3859114741337177, -0.15332045524812807,
        0.16132885219357287, 0.5195372794622491,  0.8769101353052524,  1.1891658191425563,
        1.4181291279708843,  1.5368980910022294,  1.5334850252071621,  1.412439011976099};
    pg_tensor *x = x234(), *w = w1(), *w2 = param2(false);
    check(pg_rms_norm(NULL, x, 1, w, 1e-5), r1_w);
    check(pg_rms_norm(NULL, x, 1, NULL, 1e-5), r1);
    check(pg_rms_norm(NULL, x, 2, w2, 1e-5), r2_w);
    check(pg_rms_norm(NULL, x, 2, NULL, 0.1), r2_eps01);
    pg_tensor *all[] = {x, w, w2};
    free_all(3, all);
}

Test(norm, f32_forward)
{
    /* torch numbers in f64 from the same (exactly representable) values */
    pg_tensor *x = T32(PG_SHAPE(2, 3), 1.0f, 2.0f, 4.0f, -3.0f, 0.5f, 0.25f);
    pg_tensor *w = T32(PG_SHAPE(3), 1.0f, 0.5f, -2.0f), *b = T32(PG_SHAPE(3), 0.0f, 1.0f, 0.5f);
    pg_tensor *ln = pg_layer_norm(NULL, x, 1, w, b, 1e-5), *rms = pg_rms_norm(NULL, x, 1, w, 1e-5);
    cr_assert_eq(ln->dtype, PG_F32);
    cr_assert_eq(rms->dtype, PG_F32);
    ASSERT_VALUES(ln, 1e-6, -1.069041531450298, 0.8663698085687127, -2.1726038286257436, -1.4113098320766753,
                  1.3920305089101874, -0.7544976285126002);
    ASSERT_VALUES(rms, 1e-6, 0.3779642030348929, 0.3779642030348929, -3.0237136242791434, -1.7027388287610867,
                  0.14189490239675723, -0.28378980479351446);
    pg_tensor *all[] = {x, w, b, ln, rms};
    free_all(5, all);
}

static pg_tensor *dy234(pg_graph *g)
{
    pg_tensor *dy = pg_empty(g, PG_F64, PG_SHAPE(2, 3, 4));
    for (int64_t i = 0; i < 24; i++)
        pg_set(dy, i, cos(1.3 * (double)i));
    return dy;
}

Test(norm, backward_matches_torch)
{
    pg_tensor *x = x234(), *w = w1(), *b = b1();
    x->requires_grad = w->requires_grad = b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_layer_norm(g, x, 1, w, b, 1e-5);
    cr_assert_eq(pg_backward_with(g, y, dy234(g)), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-12, 0.09452224430987127, 0.09506208058137905, -0.5936016196226146, 0.4040172947313638,
                  0.8723296413913095, -1.7824612979707295, 1.4055044156158791, -0.4953727590364565,
                  0.02334600352860361, -0.6828518085553564, 1.485239423493883, -0.8257336184671303,
                  -1.5139980256401415, 0.27720559754731067, 1.8986863574343689, -0.6618939293415349,
                  -0.12249859394649279, 0.5400637903014066, -0.7549461273020568, 0.33738093094714305,
                  0.811761557483365, 6.13441241985587, -6.346586415149915, -0.5995875621893205);
    ASSERT_VALUES(w->grad, 1e-13, -1.1064860017943643, 1.120948275254762, -1.9477816517568152, 3.2608260580562836);
    ASSERT_VALUES(b->grad, 1e-13, 0.189680785180332, -0.03388627766709307, -0.20780986434512205,
                  -0.07729151291081263);
    pg_graph_reset(g);
    pg_zero_grad(x);
    pg_zero_grad(w);
    y = pg_rms_norm(g, x, 1, w, 1e-5);
    cr_assert_eq(pg_backward_with(g, y, dy234(g)), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-12, 0.2559247226403622, 0.15619121274177425, -0.3272982887939288, 0.18160347411641198,
                  0.23993130080207414, -0.15822912980570403, 0.1792637388575926, -0.35795781798507764,
                  0.17770200676543008, -0.5352270846771482, 1.622650672242621, -0.6905396144761747,
                  -0.7530446907431233, -0.12275507415091647, 0.8598796991079752, 0.7489388267179454,
                  -0.11658748349840409, 0.23475899816836526, -0.3710691799017899, 0.18688581845571262,
                  0.1149731657600999, 0.16779258026721638, -0.3347701298322172, 0.06544563201762713);
    ASSERT_VALUES(w->grad, 1e-13, 1.529876890695017, 0.6803657405277678, -3.3623331662281255, -0.4750902835166487);
    pg_graph_free(g);
    pg_tensor *all[] = {x, w, b};
    free_all(3, all);
}

/* ctx: norm_ndim, rms flag, which of in[1], in[2] are weight / bias */
typedef struct norm_case {
    int norm_ndim;
    bool rms, has_w, has_b;
} norm_case;

static pg_tensor *call_norm(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    const norm_case *c = ctx;
    pg_tensor *w = c->has_w ? in[1] : NULL, *b = c->has_b ? in[n - 1] : NULL;
    return c->rms ? pg_rms_norm(g, in[0], c->norm_ndim, w, 1e-5) : pg_layer_norm(g, in[0], c->norm_ndim, w, b, 1e-5);
}

static void gradcheck_norm(norm_case c, int ndim, const int64_t *shape, uint64_t seed)
{
    pg_tensor *in[3];
    int n = 0;
    in[n++] = rand_param(ndim, shape, -2, 2, seed);
    const int64_t *pshape = shape + ndim - c.norm_ndim;
    if (c.has_w)
        in[n++] = rand_param(c.norm_ndim, pshape, 0.5, 1.5, seed + 1);
    if (c.has_b)
        in[n++] = rand_param(c.norm_ndim, pshape, -1, 1, seed + 2);
    pg_gradcheck_result r = pg_gradcheck(call_norm, n, in, &c, NULL);
    cr_expect(r.ok, "%s norm_ndim %d w %d b %d: %s", c.rms ? "rms" : "layer", c.norm_ndim, c.has_w, c.has_b,
              r.message);
    free_all(n, in);
}

Test(norm, gradcheck_layer_norm)
{
    for (int mask = 0; mask < 4; mask++) {
        bool hw = mask & 1, hb = mask & 2;
        gradcheck_norm((norm_case){1, false, hw, hb}, PG_SHAPE(3, 5), 20 + (uint64_t)mask);
        gradcheck_norm((norm_case){1, false, hw, hb}, PG_SHAPE(2, 3, 7), 30 + (uint64_t)mask);
        gradcheck_norm((norm_case){2, false, hw, hb}, PG_SHAPE(2, 3, 5), 40 + (uint64_t)mask);
        gradcheck_norm((norm_case){3, false, hw, hb}, PG_SHAPE(2, 3, 5), 50 + (uint64_t)mask);
    }
}

Test(norm, gradcheck_rms_norm)
{
    for (int hw = 0; hw < 2; hw++) {
        gradcheck_norm((norm_case){1, true, hw, false}, PG_SHAPE(3, 5), 60 + (uint64_t)hw);
        gradcheck_norm((norm_case){1, true, hw, false}, PG_SHAPE(2, 3, 7), 70 + (uint64_t)hw);
        gradcheck_norm((norm_case){2, true, hw, false}, PG_SHAPE(2, 3, 5), 80 + (uint64_t)hw);
        gradcheck_norm((norm_case){1, true, hw, false}, PG_SHAPE(9), 90 + (uint64_t)hw);
    }
}

Test(norm, grad_to_params_only)
{
    /* x does not require grad: weight and bias still get theirs (sum over rows) */
    pg_tensor *x = x234(), *w = w1(), *b = b1();
    w->requires_grad = b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_layer_norm(g, x, 1, w, b, 1e-5);
    cr_assert(y->requires_grad);
    cr_assert_eq(pg_backward_with(g, y, dy234(g)), 0, "%s", pg_graph_error(g));
    cr_assert_null(x->grad);
    ASSERT_VALUES(w->grad, 1e-13, -1.1064860017943643, 1.120948275254762, -1.9477816517568152, 3.2608260580562836);
    ASSERT_VALUES(b->grad, 1e-13, 0.189680785180332, -0.03388627766709307, -0.20780986434512205,
                  -0.07729151291081263);
    /* nothing requires grad: nothing recorded */
    pg_graph_reset(g);
    w->requires_grad = b->requires_grad = false;
    y = pg_layer_norm(g, x, 1, w, b, 1e-5);
    cr_assert(!y->requires_grad);
    cr_assert_eq(pg_graph_num_nodes(g), 0);
    pg_graph_free(g);
    pg_tensor *all[] = {x, w, b};
    free_all(3, all);
}

/* ctx: center (layer norm) or not (rms norm); res: gx, gw, gb of a (700, 96) float64 norm */
static void norm_grads(void *ctx, pg_tensor **res)
{
    const bool center = *(const bool *)ctx;
    pg_rng r = pg_rng_init(17);
    pg_tensor *x = pg_randn(NULL, PG_F64, PG_SHAPE(700, 96), &r), *w = pg_randn(NULL, PG_F64, PG_SHAPE(96), &r);
    pg_tensor *b = center ? pg_randn(NULL, PG_F64, PG_SHAPE(96), &r) : NULL;
    x->requires_grad = w->requires_grad = true;
    if (b)
        b->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = center ? pg_layer_norm(g, x, 1, w, b, 1e-5) : pg_rms_norm(g, x, 1, w, 1e-5);
    cr_assert_eq(pg_backward_with(g, y, pg_randn(g, PG_F64, PG_SHAPE(700, 96), &r)), 0, "%s", pg_graph_error(g));
    res[0] = take_grad(x), res[1] = take_grad(w), res[2] = center ? take_grad(b) : pg_zeros(NULL, PG_F64, 1, NULL);
    pg_graph_free(g);
    pg_tensor *all[] = {x, w, b};
    free_all(b ? 3 : 2, all);
}

/* dw and db sum over rows in groups that depend on the shape alone: float64 (where those
 * double sums are the result) gives the same bits on 1 and 2 threads */
Test(norm, same_bits_on_1_and_2_threads)
{
    static const char *const names[3] = {"gx", "gw", "gb"};
    for (int center = 0; center <= 1; center++) {
        bool c = center;
        assert_same_bits_on_1_and_2_threads(norm_grads, &c, 3, names);
    }
}

Test(norm, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 3, 4), 1.0);
    pg_tensor *w = pg_tensor_full(NULL, PG_F64, PG_SHAPE(5), 1.0);
    pg_tensor *w34 = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3, 4), 1.0);
    pg_tensor *w32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(4), 1.0);
    pg_tensor *ids = TI64(PG_SHAPE(4), 1, 2, 3, 4);
    ASSERT_FAILS(pg_layer_norm(g, NULL, 1, NULL, NULL, 1e-5), "pg_layer_norm: x is NULL");
    ASSERT_FAILS(pg_rms_norm(g, NULL, 1, NULL, 1e-5), "pg_rms_norm: x is NULL");
    ASSERT_FAILS(pg_layer_norm(g, x, 1, w, NULL, 1e-5),
                 "pg_layer_norm: weight must have the shape of the last 1 dims of x: x is f64[2,3,4], weight is f64[5]");
    ASSERT_FAILS(pg_layer_norm(g, x, 1, NULL, w34, 1e-5),
                 "pg_layer_norm: bias must have the shape of the last 1 dims of x: x is f64[2,3,4], bias is f64[3,4]");
    ASSERT_FAILS(pg_rms_norm(g, x, 2, w, 1e-5),
                 "pg_rms_norm: weight must have the shape of the last 2 dims of x: x is f64[2,3,4], weight is f64[5]");
    ASSERT_FAILS(pg_layer_norm(g, x, 0, NULL, NULL, 1e-5),
                 "pg_layer_norm: norm_ndim 0 out of range for x f64[2,3,4] (1..3)");
    ASSERT_FAILS(pg_rms_norm(g, x, 4, NULL, 1e-5), "pg_rms_norm: norm_ndim 4 out of range for x f64[2,3,4] (1..3)");
    ASSERT_FAILS(pg_layer_norm(g, x, 1, NULL, NULL, -1e-5), "pg_layer_norm: eps must be finite and >= 0, got -1e-05");
    ASSERT_FAILS(pg_rms_norm(g, x, 1, NULL, NAN), "pg_rms_norm: eps must be finite and >= 0, got nan");
    ASSERT_FAILS(pg_layer_norm(g, x, 1, w32, NULL, 1e-5),
                 "pg_layer_norm: dtypes differ: x is f64[2,3,4], weight is f32[4]");
    ASSERT_FAILS(pg_rms_norm(g, x, 1, w32, 1e-5), "pg_rms_norm: dtypes differ: x is f64[2,3,4], weight is f32[4]");
    ASSERT_FAILS(pg_layer_norm(g, ids, 1, NULL, NULL, 1e-5), "pg_layer_norm: x must be f32 or f64, got i64[4]");
    ASSERT_FAILS(pg_layer_norm(g, x, 1, NULL, ids, 1e-5), "pg_layer_norm: bias must be f32 or f64, got i64[4]");
    cr_assert_str_eq(pg_graph_error(g), "pg_layer_norm: x is NULL", "the graph keeps the first error");
    pg_tensor *all[] = {x, w, w34, w32, ids};
    free_all(5, all);
    pg_graph_free(g);
}
