/* Losses: cross entropy values and gradients against PyTorch 1.13
 * (torch.nn.functional.cross_entropy, float64), gradchecks, ignored targets;
 * dropout masks, scaling, eval mode, gradcheck with a fixed mask. */
#include "testutil.h"

/* logits (4, 5) and targets [1, 0, -100, 4] used with ignore_index -100 */
static pg_tensor *ce_logits(void)
{
    pg_tensor *x = T64(PG_SHAPE(4, 5), 1.0, 2.0, 0.5, -1.0, 0.0, 0.3, -0.2, 2.5, 1.0, -3.0, 5.0, 1.0, 1.0, 1.0, 1.0,
                       -1.0, -2.0, -3.0, 0.5, 0.25);
    x->requires_grad = true;
    return x;
}

/* torch: F.cross_entropy(x, t, ignore_index=-100, label_smoothing=s), then .backward() */
Test(cross_entropy, values_and_gradients_vs_torch)
{
    pg_tensor *x = ce_logits(), *t = TI64(PG_SHAPE(4), 1, 0, -100, 4);
    pg_graph *g = pg_graph_new();

    pg_tensor *l = pg_cross_entropy(g, x, t, -100, 0.0);
    assert_shape(l, 0, NULL);
    ASSERT_VALUES(l, 1e-14, 1.3711061979703247);
    cr_assert_eq(pg_backward(g, l), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-14, 0.06904131204248642, -0.14565958939527185, 0.041875672540555076,
                  0.009343725520297259, 0.025398879291933078, -0.30704973442216776, 0.015941808587211493,
                  0.23720983498698103, 0.05292866846942768, 0.0009694223785475681, 0.0, 0.0, 0.0, 0.0, 0.0,
                  0.03517938287524372, 0.012941771712900868, 0.004761011745510351, 0.15766305573321782,
                  -0.2105452220668727);

    pg_zero_grad(x);
    pg_graph_reset(g);
    l = pg_cross_entropy(g, x, t, -100, 0.1);
    ASSERT_VALUES(l, 1e-14, 1.470439531303658);
    cr_assert_eq(pg_backward(g, l), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-14, 0.06237464537581974, -0.11899292272860522, 0.0352090058738884,
                  0.0026770588536305906, 0.018732212625266406, -0.2803830677555011, 0.009275141920544823,
                  0.23054316832031432, 0.04626200180276101, -0.0056972442881190995, 0.0, 0.0, 0.0, 0.0, 0.0,
                  0.02851271620857705, 0.006275105046234198, -0.0019056549211563167, 0.15099638906655113,
                  -0.18387855540020606);

    /* no target ignored: torch F.cross_entropy(x, [1, 0, 2, 4]) */
    pg_tensor *t2 = TI64(PG_SHAPE(4), 1, 0, 2, 4);
    ASSERT_VALUES(pg_cross_entropy(g, x, t2, -100, 0.0), 1e-14, 2.0460054301488366);
    pg_graph_free(g);
    free_all(3, (pg_tensor *[]){x, t, t2});
}

/* x3 = sin(arange(24).reshape(2,3,4) * 0.37) * 3, targets [[0,3,-1],[2,1,1]],
 * ignore_index -1, label_smoothing 0.1; torch on x3.reshape(-1, 4) */
Test(cross_entropy, logits_3d_vs_torch)
{
    pg_tensor *x = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, 3, 4));
    for (int i = 0; i < 24; i++)
        pg_set(x, i, sin(i * 0.37) * 3);
    x->requires_grad = true;
    pg_tensor *t = TI64(PG_SHAPE(2, 3), 0, 3, -1, 2, 1, 1);
    pg_graph *g = pg_graph_new();
    pg_tensor *l = pg_cross_entropy(g, x, t, -1, 0.1);
    ASSERT_VALUES(l, 1e-13, 2.108224093582346);
    cr_assert_eq(pg_backward(g, l), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-13, -0.1773687093611922, 0.017580874345028127, 0.052692127115264116,
                  0.10709570790089996, 0.06923540778747689, 0.06191507683977526, 0.03582501937116704,
                  -0.16697550399841918, 0.0, 0.0, 0.0, 0.0, 0.030980462642658992, 0.027676278979110288,
                  -0.1405472938797036, 0.08189055225793436, 0.0007146402453508801, -0.16806748147326178,
                  0.045032538198931875, 0.12232030302897903, 0.04186636594773132, -0.12215930764961283,
                  0.051221569851583146, 0.02907137185029835);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){x, t});
}

typedef struct ce_ctx {
    pg_tensor *targets;
    int64_t ignore;
    double s;
} ce_ctx;

static pg_tensor *ce_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const ce_ctx *c = ctx;
    return pg_cross_entropy(g, in[0], c->targets, c->ignore, c->s);
}

Test(cross_entropy, gradcheck)
{
    pg_tensor *x = rand_param(PG_SHAPE(3, 7), -2, 2, 1);
    pg_tensor *t = TI64(PG_SHAPE(3), 6, -100, 0);
    ce_ctx c = {t, -100, 0.0};
    assert_gradcheck(ce_fn, 1, &x, &c, NULL);
    c.s = 0.2;
    assert_gradcheck(ce_fn, 1, &x, &c, NULL);
    /* 3-D logits, ignore_index a valid class id (2 is never a loss term) */
    pg_tensor *x3 = rand_param(PG_SHAPE(2, 3, 5), -3, 3, 2);
    pg_tensor *t3 = TI64(PG_SHAPE(2, 3), 0, 2, 4, 1, 3, 2);
    ce_ctx c3 = {t3, 2, 0.1};
    assert_gradcheck(ce_fn, 1, &x3, &c3, NULL);
    /* 1-D logits with a 0-dim target */
    pg_tensor *x1 = rand_param(PG_SHAPE(4), -1, 1, 3);
    pg_tensor *t1 = pg_tensor_full(NULL, PG_I64, 0, NULL, 3);
    ce_ctx c1 = {t1, -100, 0.05};
    assert_gradcheck(ce_fn, 1, &x1, &c1, NULL);
    free_all(6, (pg_tensor *[]){x, t, x3, t3, x1, t1});
}

Test(cross_entropy, all_ignored_is_zero_with_zero_gradient)
{
    pg_tensor *x = ce_logits(), *t = TI64(PG_SHAPE(4), -100, -100, -100, -100);
    pg_graph *g = pg_graph_new();
    pg_tensor *l = pg_cross_entropy(g, x, t, -100, 0.1);
    ASSERT_VALUES(l, 0, 0.0);
    cr_assert_eq(pg_backward(g, l), 0, "%s", pg_graph_error(g));
    for (int64_t i = 0; i < 20; i++)
        cr_assert_eq(pg_get(x->grad, i), 0.0);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){x, t});
}

Test(cross_entropy, stable_and_f32)
{
    /* huge logits: log-sum-exp with the max subtracted; -log p = 1000 exactly */
    pg_tensor *x = T64(PG_SHAPE(2, 2), 1000.0, 0.0, -1000.0, -1000.0);
    pg_tensor *x32 = T32(PG_SHAPE(2, 2), 1000.0f, 0.0f, -1000.0f, -1000.0f);
    pg_tensor *t = TI64(PG_SHAPE(2), 1, 0);
    pg_tensor *l = pg_cross_entropy(NULL, x, t, -100, 0.0), *l32 = pg_cross_entropy(NULL, x32, t, -100, 0.0);
    /* (1000 + log 2) / 2 */
    ASSERT_VALUES(l, 1e-15, 500.34657359027997);
    cr_assert_eq(l32->dtype, PG_F32);
    ASSERT_VALUES(l32, 1e-7, 500.34657359027997);
    /* f32 against the torch value of the first test */
    pg_tensor *y = ce_logits(), *y32 = pg_tensor_cast(NULL, y, PG_F32), *t4 = TI64(PG_SHAPE(4), 1, 0, -100, 4);
    pg_tensor *m32 = pg_cross_entropy(NULL, y32, t4, -100, 0.1);
    ASSERT_VALUES(m32, 1e-6, 1.470439531303658);
    free_all(9, (pg_tensor *[]){x, x32, t, l, l32, y, y32, t4, m32});
}

/* The float path (exp in float lanes, sums in double) on 64 rows of 300 classes (a tail
 * of 12 past the 16-lane blocks), logits in [-30, 30) rounded to float, against float64 on
 * the same values: the loss within 1e-6 relative, every gradient entry within 4e-6 of
 * its softmax p (relative, the rounding of x - lse by up to ~60 times an ulp) plus 1e-9. */
static pg_tensor *ce_on(pg_tensor *x, const pg_tensor *t, double s, pg_tensor **grad)
{
    pg_graph *g = pg_graph_new();
    x->requires_grad = true;
    pg_tensor *l = pg_cross_entropy(g, x, (pg_tensor *)t, -100, s);
    cr_assert_eq(pg_backward(g, l), 0, "%s", pg_graph_error(g));
    pg_tensor *loss = pg_tensor_cast(NULL, l, PG_F64);
    *grad = pg_tensor_cast(NULL, x->grad, PG_F64);
    pg_graph_free(g);
    return loss;
}

Test(cross_entropy, f32_within_float_rounding_of_f64)
{
    const int64_t R = 64, C = 300;
    pg_tensor *x = rand_param(PG_SHAPE(R, C), -30, 30, 77), *x32 = pg_tensor_cast(NULL, x, PG_F32);
    pg_tensor *x64 = pg_tensor_cast(NULL, x32, PG_F64), *t = pg_tensor_empty(NULL, PG_I64, PG_SHAPE(R));
    int64_t *tg = t->data;
    for (int64_t r = 0; r < R; r++)
        tg[r] = r % 7 == 3 ? -100 : (r * 37) % C;
    for (int k = 0; k < 2; k++) {
        double s = k ? 0.1 : 0.0;
        pg_tensor *g32, *g64, *l32 = ce_on(x32, t, s, &g32), *l64 = ce_on(x64, t, s, &g64);
        double want = pg_get(l64, 0), got = pg_get(l32, 0);
        cr_assert(fabs(got - want) <= 1e-6 * fabs(want), "loss %.9g, float64 %.17g (s %g)", got, want, s);
        const double *a = g32->data, *b = g64->data;
        double count = R - (R + 3) / 7; /* rows r % 7 == 3 are ignored */
        for (int64_t i = 0; i < R * C; i++) {
            double p = fabs(b[i] * count) + 0.1; /* p + s/C and the target's 1 - s: |g count| <= 1.1 */
            cr_assert(fabs(a[i] - b[i]) <= (4e-6 * p + 1e-9) / count, "grad[%lld] %.9g, float64 %.17g (s %g)",
                      (long long)i, a[i], b[i], s);
        }
        free_all(4, (pg_tensor *[]){g32, g64, l32, l64});
        pg_zero_grad(x32), pg_zero_grad(x64);
    }
    free_all(4, (pg_tensor *[]){x, x32, x64, t});
}

Test(cross_entropy, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = ce_logits(), *t = TI64(PG_SHAPE(4), 1, 7, -100, 4), *tf = T64(PG_SHAPE(4), 1, 0, 0, 0);
    pg_tensor *t2 = TI64(PG_SHAPE(2, 2), 0, 0, 0, 0), *neg = TI64(PG_SHAPE(4), 0, 0, -1, 0);
    pg_tensor *ok = TI64(PG_SHAPE(4), 0, 0, 0, 0), *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(4, 5), 0);
    ASSERT_FAILS(pg_cross_entropy(g, NULL, t, -100, 0), "pg_cross_entropy: logits is NULL");
    ASSERT_FAILS(pg_cross_entropy(g, x, NULL, -100, 0), "pg_cross_entropy: targets is NULL");
    ASSERT_FAILS(pg_cross_entropy(g, ids, ok, -100, 0), "pg_cross_entropy: logits must be f32 or f64, got i64[4,5]");
    ASSERT_FAILS(pg_cross_entropy(g, x, tf, -100, 0), "pg_cross_entropy: targets must be i64, got f64[4]");
    ASSERT_FAILS(pg_cross_entropy(g, x, t2, -100, 0),
                 "pg_cross_entropy: targets must have the logits' shape without the last dim: logits is f64[4,5], "
                 "targets is i64[2,2]");
    ASSERT_FAILS(pg_cross_entropy(g, x, t, -100, 0),
                 "pg_cross_entropy: target 7 at index 1 is out of range for C = 5 classes (logits f64[4,5])");
    ASSERT_FAILS(pg_cross_entropy(g, x, neg, -100, 0), "pg_cross_entropy: target -1 at index 2");
    ASSERT_FAILS(pg_cross_entropy(g, x, ok, -100, 1.5), "pg_cross_entropy: label_smoothing 1.5 outside [0, 1]");
    ASSERT_FAILS(pg_cross_entropy(g, x, ok, -100, NAN), "outside [0, 1]");
    cr_assert_str_eq(pg_graph_error(g), "pg_cross_entropy: logits is NULL");
    pg_graph_free(g);
    free_all(7, (pg_tensor *[]){x, t, tf, t2, neg, ok, ids});
}

/* ---- dropout ------------------------------------------------------------------------ */

Test(dropout, same_seed_same_mask_and_rng_advances)
{
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3, 50), 1.0);
    pg_rng r1 = pg_rng_init(42), r2 = pg_rng_init(42);
    pg_tensor *a = pg_dropout(NULL, x, 0.5, true, &r1), *b = pg_dropout(NULL, x, 0.5, true, &r2);
    for (int64_t i = 0; i < x->numel; i++)
        cr_assert_eq(pg_get(a, i), pg_get(b, i), "element %lld", (long long)i);
    cr_assert_eq(r1.counter, (uint64_t)x->numel, "one draw per element");
    pg_tensor *c = pg_dropout(NULL, x, 0.5, true, &r1); /* next draws: another mask */
    int differ = 0;
    for (int64_t i = 0; i < x->numel; i++)
        differ += pg_get(a, i) != pg_get(c, i);
    cr_assert_gt(differ, 0);
    free_all(4, (pg_tensor *[]){x, a, b, c});
}

Test(dropout, fraction_kept_and_scaling)
{
    const double p = 0.3;
    pg_tensor *x = pg_tensor_full(NULL, PG_F32, PG_SHAPE(100, 100), 1.0);
    pg_rng r = pg_rng_init(7);
    pg_tensor *y = pg_dropout(NULL, x, p, true, &r);
    int64_t kept = 0;
    for (int64_t i = 0; i < y->numel; i++) {
        double v = pg_get(y, i);
        cr_assert(v == 0.0 || v == (double)(float)(1.0 / (1.0 - p)), "element %lld is %g", (long long)i, v);
        kept += v != 0.0;
    }
    /* 1 - p = 0.7; the standard deviation of the fraction is 0.0046 */
    double frac = (double)kept / 10000.0;
    cr_assert(fabs(frac - 0.7) < 0.02, "kept %g", frac);
    free_all(2, (pg_tensor *[]){x, y});
}

Test(dropout, eval_mode_and_p_zero_return_x)
{
    pg_tensor *x = rand_param(PG_SHAPE(2, 3), -1, 1, 1);
    pg_graph *g = pg_graph_new();
    cr_assert_eq(pg_dropout(g, x, 0.5, false, NULL), x, "not training: x itself");
    pg_rng r = pg_rng_init(1);
    cr_assert_eq(pg_dropout(g, x, 0.0, true, &r), x, "p == 0: x itself");
    cr_assert_eq(r.counter, 0, "no draws");
    cr_assert_eq(pg_graph_num_nodes(g), 0, "nothing recorded");
    pg_graph_free(g);
    pg_tensor_free(x);
}

Test(dropout, p_one_gives_zeros)
{
    pg_tensor *x = T64(PG_SHAPE(4), 1, -2, 3, 4);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_rng r = pg_rng_init(3);
    pg_tensor *y = pg_dropout(g, x, 1.0, true, &r);
    ASSERT_VALUES(y, 0, 0, 0, 0, 0);
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(4))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 0, 0, 0, 0);
    pg_graph_free(g);
    pg_tensor_free(x);
}

Test(dropout, backward_uses_the_same_mask)
{
    /* x = 1 everywhere: y = mask * 2 (p = 0.5), and dL/dx = upstream * y */
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(5, 7), 1.0);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_rng r = pg_rng_init(11);
    pg_tensor *y = pg_dropout(g, x, 0.5, true, &r);
    pg_tensor *up = pg_full(g, PG_F64, PG_SHAPE(5, 7), 3.0);
    cr_assert_eq(pg_backward_with(g, y, up), 0, "%s", pg_graph_error(g));
    for (int64_t i = 0; i < x->numel; i++) {
        cr_assert(pg_get(y, i) == 0.0 || pg_get(y, i) == 2.0);
        cr_assert_eq(pg_get(x->grad, i), 3.0 * pg_get(y, i));
    }
    pg_graph_free(g);
    pg_tensor_free(x);
}

typedef struct drop_ctx {
    pg_rng rng;
    double p;
} drop_ctx;

/* every evaluation draws from a copy of the same state: one fixed mask */
static pg_tensor *drop_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    drop_ctx *c = ctx;
    pg_rng r = c->rng;
    return pg_dropout(g, in[0], c->p, true, &r);
}

Test(dropout, gradcheck_fixed_mask)
{
    pg_tensor *x = rand_param(PG_SHAPE(3, 5, 7), -1, 1, 9);
    drop_ctx c = {pg_rng_init(5), 0.25};
    assert_gradcheck(drop_fn, 1, &x, &c, NULL);
    c.p = 0.6;
    assert_gradcheck(drop_fn, 1, &x, &c, NULL);
    pg_tensor_free(x);
}

Test(dropout, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = T64(PG_SHAPE(2), 1, 2), *ids = TI64(PG_SHAPE(2), 1, 2);
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_dropout(g, NULL, 0.5, true, &r), "pg_dropout: x is NULL");
    ASSERT_FAILS(pg_dropout(g, ids, 0.5, true, &r), "pg_dropout: x must be f32 or f64, got i64[2]");
    ASSERT_FAILS(pg_dropout(g, x, 1.5, true, &r), "pg_dropout: p = 1.5 outside [0, 1]");
    ASSERT_FAILS(pg_dropout(g, x, -0.1, false, &r), "pg_dropout: p = -0.1 outside [0, 1]");
    ASSERT_FAILS(pg_dropout(g, x, NAN, true, &r), "outside [0, 1]");
    ASSERT_FAILS(pg_dropout(g, x, 0.5, true, NULL), "pg_dropout: rng is NULL");
    cr_assert_str_eq(pg_graph_error(g), "pg_dropout: x is NULL");
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){x, ids});
}
