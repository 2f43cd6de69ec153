/* The losses beside cross-entropy (issue 11, item 18): mse, l1, smooth l1, huber,
 * binary cross-entropy with logits and nll, each with reductions mean / sum /
 * none, f32 and f64. PyTorch 1.13 parity (tests/fixtures/gen_losses.py), values
 * by hand, float64 gradchecks away from the kinks, and bad input. */
#include "testutil.h"

enum { MSE, L1, SMOOTH_L1, HUBER, BCE, NLL };

#define SCALAR_SHAPE 0, NULL

/* t in dtype dt; t itself for f64, else a cast copy and t is freed */
static pg_tensor *in_dtype(pg_tensor *t, pg_dtype dt)
{
    if (dt == PG_F64)
        return t;
    pg_tensor *c = pg_tensor_cast(NULL, t, dt);
    pg_tensor_free(t);
    return c;
}

/* one loss call by fixture code; w and pw are bce's weights (w: nll's weight) */
static pg_tensor *call_loss(pg_graph *g, int loss, pg_reduction r, double param, pg_tensor *x, pg_tensor *y,
                            pg_tensor *w, pg_tensor *pw)
{
    switch (loss) {
    case MSE:
        return pg_mse_loss(g, x, y, r);
    case L1:
        return pg_l1_loss(g, x, y, r);
    case SMOOTH_L1:
        return pg_smooth_l1_loss(g, x, y, param, r);
    case HUBER:
        return pg_huber_loss(g, x, y, param, r);
    case BCE:
        return pg_bce_with_logits(g, x, y, w, pw, r);
    default:
        return pg_nll_loss(g, x, y, w, (int64_t)param, r);
    }
}

/* fixture entry "k.name" or NULL */
static pg_tensor *fx_opt(const pg_tensor_list *l, int k, const char *name)
{
    char s[64];
    snprintf(s, sizeof s, "%d.%s", k, name);
    int i = pg_tensor_list_find(l, s);
    return i < 0 ? NULL : l->tensors[i];
}

/* a heap copy in dtype dt (integer tensors copied as they are) */
static pg_tensor *as(const pg_tensor *t, pg_dtype dt, bool grad)
{
    if (!t)
        return NULL;
    pg_tensor *c = pg_dtype_is_float(t->dtype) ? pg_tensor_cast(NULL, t, dt) : pg_tensor_copy(NULL, t);
    c->requires_grad = grad;
    return c;
}

/* Every fixture case in dtype dt: output and the gradients of sum(out * up)
 * against torch's within tol (relative to 1 + |expected|). */
static void parity(pg_dtype dt, double tol)
{
    pg_tensor_list l = fixture("losses.safetensors");
    const char *sfx = dt == PG_F32 ? "32" : "";
    int k = 0;
    for (; fx_opt(&l, k, "cfg"); k++) {
        const pg_tensor *cfg = fx_opt(&l, k, "cfg");
        int loss = (int)pg_get(cfg, 0);
        pg_reduction r = (pg_reduction)pg_get(cfg, 1);
        double param = pg_get(cfg, 2);
        pg_tensor *x = as(fx_opt(&l, k, "input"), dt, true);
        pg_tensor *y = as(fx_opt(&l, k, "target"), dt, loss != NLL);
        pg_tensor *w = as(fx_opt(&l, k, "weight"), dt, false), *pw = as(fx_opt(&l, k, "pos_weight"), dt, false);
        pg_tensor *up = as(fx_opt(&l, k, "up"), dt, false);
        pg_graph *g = pg_graph_new();
        pg_tensor *out = call_loss(g, loss, r, param, x, y, w, pw);
        cr_assert_not_null(out, "case %d: %s", k, pg_graph_error(g));
        cr_assert_eq(out->dtype, dt);
        char what[96], name[32];
        snprintf(what, sizeof what, "case %d (loss %d, reduction %d, param %g) %s out", k, loss, (int)r, param,
                 pg_dtype_name(dt));
        snprintf(name, sizeof name, "out%s", sfx);
        assert_close(out, fx_opt(&l, k, name), tol, what);
        cr_assert_eq(pg_backward_with(g, out, up), 0, "case %d: %s", k, pg_graph_error(g));
        snprintf(name, sizeof name, "grad_input%s", sfx);
        pg_tensor *want = pg_tensor_copy(NULL, fx_opt(&l, k, name));
        if (loss == SMOOTH_L1 && param == 0) {
            /* the one deliberate difference: at beta = 0 posgrad's smooth l1 is l1
             * also in its gradient, 0 where d = 0; torch 1.13's backward gives
             * -1 there (its branch d <= -beta) */
            const pg_tensor *xi = fx_opt(&l, k, "input"), *ti = fx_opt(&l, k, "target");
            int ties = 0;
            for (int64_t i = 0; i < xi->numel; i++)
                if (pg_get(xi, i) == pg_get(ti, i)) {
                    cr_assert_neq(pg_get(want, i), 0.0, "torch's gradient at the tie");
                    pg_set(want, i, 0.0), ties++;
                }
            cr_assert_gt(ties, 0, "the fixture has ties");
        }
        snprintf(what, sizeof what, "case %d (loss %d, reduction %d) %s grad_input", k, loss, (int)r,
                 pg_dtype_name(dt));
        assert_close(x->grad, want, tol, what);
        if (loss != NLL) {
            snprintf(name, sizeof name, "grad_target%s", sfx);
            pg_tensor_free(want);
            want = pg_tensor_copy(NULL, fx_opt(&l, k, name));
            if (loss == SMOOTH_L1 && param == 0)
                for (int64_t i = 0; i < want->numel; i++)
                    if (pg_get(fx_opt(&l, k, "input"), i) == pg_get(fx_opt(&l, k, "target"), i))
                        pg_set(want, i, 0.0);
            snprintf(what, sizeof what, "case %d (loss %d, reduction %d) %s grad_target", k, loss, (int)r,
                     pg_dtype_name(dt));
            assert_close(y->grad, want, tol, what);
        }
        pg_tensor_free(want);
        pg_graph_free(g);
        free_all(5, (pg_tensor *[]){x, y, w, pw, up});
    }
    cr_assert_eq(k, 43, "fixture cases");
    pg_tensor_list_free_all(&l);
}

Test(losses, torch_parity_f64) { parity(PG_F64, 1e-12); }
Test(losses, torch_parity_f32) { parity(PG_F32, 2e-6); }

/* ---- values by hand ------------------------------------------------------------------------ */

/* x = [1, 2, 3], y = [1.5, 2, 1]: d = [-0.5, 0, 2] */
static pg_tensor *hx(pg_dtype dt)
{
    pg_tensor *x = in_dtype(T64(PG_SHAPE(3), 1, 2, 3), dt);
    x->requires_grad = true;
    return x;
}

typedef pg_tensor *(*reg_fn)(pg_graph *, pg_tensor *, pg_tensor *, double, pg_reduction);
static pg_tensor *mse_p(pg_graph *g, pg_tensor *x, pg_tensor *y, double a, pg_reduction r)
{
    (void)a;
    return pg_mse_loss(g, x, y, r);
}
static pg_tensor *l1_p(pg_graph *g, pg_tensor *x, pg_tensor *y, double a, pg_reduction r)
{
    (void)a;
    return pg_l1_loss(g, x, y, r);
}

/* checks none / sum / mean values and the sum's and mean's gradients (to x; y gets the negation) */
static void hand_case(reg_fn f, double a, const double none[3], const double dsum[3])
{
    for (int d = 0; d < 2; d++) {
        pg_dtype dt = d ? PG_F64 : PG_F32;
        double tol = d ? 1e-15 : 1e-7;
        pg_tensor *x = hx(dt), *y = in_dtype(T64(PG_SHAPE(3), 1.5, 2, 1), dt);
        y->requires_grad = true;
        pg_graph *g = pg_graph_new();
        pg_tensor *n = f(g, x, y, a, PG_REDUCE_NONE);
        assert_shape(n, PG_SHAPE(3));
        assert_values(n, none, 3, tol);
        double s = none[0] + none[1] + none[2];
        pg_tensor *sum = f(g, x, y, a, PG_REDUCE_SUM), *mean = f(g, x, y, a, PG_REDUCE_MEAN);
        assert_shape(sum, 0, NULL);
        assert_shape(mean, 0, NULL);
        ASSERT_VALUES(sum, tol, s);
        ASSERT_VALUES(mean, tol, s / 3);
        cr_assert_eq(pg_backward(g, sum), 0, "%s", pg_graph_error(g));
        assert_values(x->grad, dsum, 3, tol);
        ASSERT_VALUES(y->grad, tol, -dsum[0], -dsum[1], -dsum[2]);
        pg_zero_grad(x);
        pg_zero_grad(y);
        cr_assert_eq(pg_backward(g, mean), 0, "%s", pg_graph_error(g));
        ASSERT_VALUES(x->grad, tol, dsum[0] / 3, dsum[1] / 3, dsum[2] / 3);
        pg_graph_free(g);
        free_all(2, (pg_tensor *[]){x, y});
    }
}

Test(mse_loss, hand_values)
{
    /* d^2 = [0.25, 0, 4]; d/dx = 2d */
    hand_case(mse_p, 0, (double[]){0.25, 0, 4}, (double[]){-1, 0, 4});
}

Test(l1_loss, hand_values)
{
    /* |d| = [0.5, 0, 2]; d/dx = sign(d), 0 at the tie (as torch) */
    hand_case(l1_p, 0, (double[]){0.5, 0, 2}, (double[]){-1, 0, 1});
}

Test(smooth_l1_loss, hand_values)
{
    /* beta 1: [0.5 * 0.25, 0, 2 - 0.5]; d/dx = [d / beta, 0, sign] */
    hand_case(pg_smooth_l1_loss, 1.0, (double[]){0.125, 0, 1.5}, (double[]){-0.5, 0, 1});
    /* beta 0.5: |d| = beta at x0 takes the linear branch: 0.5 - 0.25; gradient -1 */
    hand_case(pg_smooth_l1_loss, 0.5, (double[]){0.25, 0, 1.75}, (double[]){-1, 0, 1});
    /* beta 4: all quadratic: 0.5 d^2 / 4 */
    hand_case(pg_smooth_l1_loss, 4.0, (double[]){0.03125, 0, 0.5}, (double[]){-0.125, 0, 0.5});
}

Test(smooth_l1_loss, beta_zero_is_l1_also_at_ties)
{
    /* beta = 0: |d|, gradient sign(d) with 0 at d = 0 (torch 1.13's backward gives -1 there) */
    hand_case(pg_smooth_l1_loss, 0.0, (double[]){0.5, 0, 2}, (double[]){-1, 0, 1});
}

Test(huber_loss, hand_values)
{
    /* delta 1: [0.125, 0, 1 * (2 - 0.5)]; delta 0.5: [0.5 (0.5 - 0.25), 0, 0.5 (2 - 0.25)],
     * gradient -delta at |d| = delta, d inside, +-delta outside */
    hand_case(pg_huber_loss, 1.0, (double[]){0.125, 0, 1.5}, (double[]){-0.5, 0, 1});
    hand_case(pg_huber_loss, 0.5, (double[]){0.125, 0, 0.875}, (double[]){-0.5, 0, 0.5});
}

Test(huber_loss, is_delta_times_smooth_l1)
{
    pg_tensor *x = randt(PG_SHAPE(5, 7), 3, false), *y = randt(PG_SHAPE(5, 7), 4, false);
    for (int i = 0; i < x->numel; i++)
        pg_set(x, i, 3 * pg_get(x, i));
    const double deltas[3] = {0.3, 1.0, 2.5};
    for (int k = 0; k < 3; k++) {
        pg_tensor *h = pg_huber_loss(NULL, x, y, deltas[k], PG_REDUCE_NONE);
        pg_tensor *s = pg_smooth_l1_loss(NULL, x, y, deltas[k], PG_REDUCE_NONE);
        for (int64_t i = 0; i < x->numel; i++)
            cr_assert(fabs(pg_get(h, i) - deltas[k] * pg_get(s, i)) <= 1e-15 * (1 + pg_get(h, i)));
        free_all(2, (pg_tensor *[]){h, s});
    }
    free_all(2, (pg_tensor *[]){x, y});
}

Test(bce_with_logits, hand_values)
{
    /* x = 0: log 2 whatever y, gradient sigmoid(0) - y; x = log 3 (sigmoid 3/4), y = 1:
     * log(4/3), gradient -1/4; with pos_weight 2: 2 log(4/3), gradient 2 * 3/4 - 2 = -1/2 */
    for (int d = 0; d < 2; d++) {
        pg_dtype dt = d ? PG_F64 : PG_F32;
        double tol = d ? 1e-15 : 1e-7;
        pg_tensor *x = in_dtype(T64(PG_SHAPE(3), 0, 0, log(3.0)), dt);
        pg_tensor *y = in_dtype(T64(PG_SHAPE(3), 1, 0.25, 1), dt);
        pg_tensor *pw = in_dtype(T64(PG_SHAPE(3), 1, 1, 2), dt);
        pg_tensor *w = in_dtype(T64(PG_SHAPE(1), 3), dt);
        x->requires_grad = y->requires_grad = true;
        pg_graph *g = pg_graph_new();
        pg_tensor *n = pg_bce_with_logits(g, x, y, NULL, NULL, PG_REDUCE_NONE);
        ASSERT_VALUES(n, tol, log(2.0), log(2.0), log(4.0 / 3));
        pg_tensor *s = pg_bce_with_logits(g, x, y, NULL, pw, PG_REDUCE_SUM);
        ASSERT_VALUES(s, tol, 2 * log(2.0) + 2 * log(4.0 / 3));
        cr_assert_eq(pg_backward(g, s), 0, "%s", pg_graph_error(g));
        ASSERT_VALUES(x->grad, tol, -0.5, 0.25, -0.5);
        /* d/dy = -x + (p - 1) log(1 + e^-x) */
        ASSERT_VALUES(y->grad, tol, 0, 0, -log(3.0) + log(4.0 / 3));
        pg_zero_grad(x);
        /* weight 3 broadcast, mean over 3 elements: the mean of 3 * losses */
        pg_tensor *m = pg_bce_with_logits(g, x, y, w, NULL, PG_REDUCE_MEAN);
        ASSERT_VALUES(m, tol, (2 * log(2.0) + log(4.0 / 3)));
        cr_assert_eq(pg_backward(g, m), 0, "%s", pg_graph_error(g));
        ASSERT_VALUES(x->grad, tol, -0.5, 0.25, -0.25);
        pg_graph_free(g);
        free_all(4, (pg_tensor *[]){x, y, pw, w});
    }
}

Test(bce_with_logits, stable_for_large_logits)
{
    /* the naive log(sigmoid(x)) overflows: here -x for x -> -inf with y = 1, 0 for x -> +inf */
    for (int d = 0; d < 2; d++) {
        pg_dtype dt = d ? PG_F64 : PG_F32;
        pg_tensor *x = in_dtype(T64(PG_SHAPE(4), 1000, -1000, 1e30, -1e30), dt);
        pg_tensor *y = in_dtype(T64(PG_SHAPE(4), 1, 1, 0, 0), dt);
        x->requires_grad = true;
        pg_graph *g = pg_graph_new();
        pg_tensor *n = pg_bce_with_logits(g, x, y, NULL, NULL, PG_REDUCE_NONE);
        ASSERT_VALUES(n, 1e-7, 0, 1000, 1e30, 0);
        cr_assert_eq(pg_backward_with(g, n, pg_ones(g, dt, PG_SHAPE(4))), 0, "%s", pg_graph_error(g));
        ASSERT_VALUES(x->grad, 0, 0, -1, 1, 0);
        pg_graph_free(g);
        free_all(2, (pg_tensor *[]){x, y});
    }
}

Test(nll_loss, hand_values)
{
    /* rows log [.2 .5 .3], log [.1 .6 .3], targets [1, 2], weight [1, 2, 3] */
    for (int d = 0; d < 2; d++) {
        pg_dtype dt = d ? PG_F64 : PG_F32;
        double tol = d ? 1e-15 : 1e-7;
        pg_tensor *lp = in_dtype(T64(PG_SHAPE(2, 3), log(0.2), log(0.5), log(0.3), log(0.1), log(0.6), log(0.3)), dt);
        pg_tensor *t = TI64(PG_SHAPE(2), 1, 2), *w = in_dtype(T64(PG_SHAPE(3), 1, 2, 3), dt);
        lp->requires_grad = true;
        pg_graph *g = pg_graph_new();
        ASSERT_VALUES(pg_nll_loss(g, lp, t, NULL, -100, PG_REDUCE_NONE), tol, -log(0.5), -log(0.3));
        ASSERT_VALUES(pg_nll_loss(g, lp, t, NULL, -100, PG_REDUCE_SUM), tol, -log(0.5) - log(0.3));
        ASSERT_VALUES(pg_nll_loss(g, lp, t, w, -100, PG_REDUCE_NONE), tol, -2 * log(0.5), -3 * log(0.3));
        pg_tensor *m = pg_nll_loss(g, lp, t, w, -100, PG_REDUCE_MEAN);
        ASSERT_VALUES(m, tol, (-2 * log(0.5) - 3 * log(0.3)) / 5);
        cr_assert_eq(pg_backward(g, m), 0, "%s", pg_graph_error(g));
        ASSERT_VALUES(lp->grad, tol, 0, -0.4, 0, 0, 0, -0.6);
        /* ignore class 2: only row 0 counts, mean over its weight 2 */
        ASSERT_VALUES(pg_nll_loss(g, lp, t, w, 2, PG_REDUCE_MEAN), tol, -log(0.5));
        pg_graph_free(g);
        free_all(3, (pg_tensor *[]){lp, t, w});
    }
}

Test(nll_loss, after_log_softmax_is_cross_entropy)
{
    pg_tensor *x = randt(PG_SHAPE(2, 3, 7), 5, true), *x2 = pg_tensor_copy(NULL, x);
    x2->requires_grad = true;
    pg_tensor *t = TI64(PG_SHAPE(2, 3), 6, -100, 0, 3, 3, 1);
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_nll_loss(g, pg_log_softmax(g, x, -1), t, NULL, -100, PG_REDUCE_MEAN);
    pg_tensor *b = pg_cross_entropy(g, x2, t, -100, 0.0);
    cr_assert_not_null(a, "%s", pg_graph_error(g));
    cr_assert(fabs(pg_item(a) - pg_item(b)) <= 1e-14 * fabs(pg_item(b)), "%.17g vs %.17g", pg_item(a), pg_item(b));
    cr_assert_eq(pg_backward(g, a), 0, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, b), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, x2->grad, 1e-14, "gradient");
    pg_graph_free(g);
    free_all(3, (pg_tensor *[]){x, x2, t});
}

Test(nll_loss, all_ignored_or_zero_weight_is_zero_with_zero_gradient)
{
    /* as pg_cross_entropy (torch gives NaN for the mean) */
    pg_tensor *lp = randt(PG_SHAPE(3, 4), 6, true), *t = TI64(PG_SHAPE(3), -100, -100, -100);
    pg_tensor *t2 = TI64(PG_SHAPE(3), 1, 1, -100), *w = T64(PG_SHAPE(4), 1, 0, 1, 1);
    pg_graph *g = pg_graph_new();
    for (int r = 0; r < 3; r++) {
        pg_tensor *a = pg_nll_loss(g, lp, t, NULL, -100, (pg_reduction)r);
        pg_tensor *b = pg_nll_loss(g, lp, t2, w, -100, (pg_reduction)r);
        for (int64_t i = 0; i < a->numel; i++)
            cr_assert(pg_get(a, i) == 0.0 && pg_get(b, i) == 0.0, "reduction %d", r);
        cr_assert_eq(pg_backward_with(g, a, pg_ones(g, PG_F64, a->ndim, a->shape)), 0);
        cr_assert_eq(pg_backward_with(g, b, pg_ones(g, PG_F64, b->ndim, b->shape)), 0);
    }
    for (int64_t i = 0; i < lp->numel; i++)
        cr_assert(pg_get(lp->grad, i) == 0.0);
    pg_graph_free(g);
    free_all(4, (pg_tensor *[]){lp, t, t2, w});
}

Test(losses, reductions_agree_and_empty_inputs)
{
    /* sum = sum of none, mean = sum / n (nll: / total weight) for every loss */
    pg_tensor *x = randt(PG_SHAPE(4, 6), 7, false), *y = randt(PG_SHAPE(4, 6), 8, false);
    pg_tensor *t = TI64(PG_SHAPE(4), 5, 0, -100, 2), *w = T64(PG_SHAPE(6), 1, 2, 3, 4, 5, 6);
    for (int loss = MSE; loss <= NLL; loss++) {
        pg_tensor *yy = loss == NLL ? t : y, *ww = loss == NLL ? w : NULL;
        double a = loss == NLL ? -100 : 0.7; /* beta, delta or ignore_index */
        pg_tensor *n = call_loss(NULL, loss, PG_REDUCE_NONE, a, x, yy, ww, NULL);
        pg_tensor *s = call_loss(NULL, loss, PG_REDUCE_SUM, a, x, yy, ww, NULL);
        pg_tensor *m = call_loss(NULL, loss, PG_REDUCE_MEAN, a, x, yy, ww, NULL);
        cr_assert_not_null(n, "loss %d: %s", loss, pg_last_error());
        double total = 0;
        for (int64_t i = 0; i < n->numel; i++)
            total += pg_get(n, i);
        double count = loss == NLL ? 6 + 1 + 3 : (double)x->numel;
        cr_assert(fabs(pg_item(s) - total) <= 1e-14 * fabs(total), "loss %d sum", loss);
        cr_assert(fabs(pg_item(m) - total / count) <= 1e-14 * fabs(total), "loss %d mean", loss);
        free_all(3, (pg_tensor *[]){n, s, m});
    }
    /* empty: none is empty, sum 0, mean NaN (as torch.mean) */
    pg_tensor *e = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(0, 3)), *e2 = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(0, 3));
    for (int loss = MSE; loss <= BCE; loss++) {
        pg_tensor *n = call_loss(NULL, loss, PG_REDUCE_NONE, 1.0, e, e2, NULL, NULL);
        pg_tensor *s = call_loss(NULL, loss, PG_REDUCE_SUM, 1.0, e, e2, NULL, NULL);
        pg_tensor *m = call_loss(NULL, loss, PG_REDUCE_MEAN, 1.0, e, e2, NULL, NULL);
        assert_shape(n, PG_SHAPE(0, 3));
        cr_assert(pg_item(s) == 0.0 && isnan(pg_item(m)), "loss %d", loss);
        free_all(3, (pg_tensor *[]){n, s, m});
    }
    free_all(6, (pg_tensor *[]){x, y, t, w, e, e2});
}

/* ---- gradchecks (inputs away from the kinks) -------------------------------------------------- */

typedef struct loss_ctx {
    int loss;
    pg_reduction r;
    double param;
    bool has_w, has_pw; /* in[2] is the weight, then in[2] or in[3] bce's pos_weight */
} loss_ctx;

static pg_tensor *loss_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    const loss_ctx *c = ctx;
    pg_tensor *w = c->has_w && n > 2 ? in[2] : NULL;
    pg_tensor *pw = c->has_pw ? in[c->has_w ? 3 : 2] : NULL;
    return call_loss(g, c->loss, c->r, c->param, in[0], in[1], w, pw);
}

/* y random; x = y + offsets with |offset| in {0.13, 0.37, 0.61, 1.3, 1.9, 2.6}:
 * |d| stays at least 0.1 from 0 and from every beta / delta below */
static void regression_inputs(int64_t n0, int64_t n1, uint64_t seed, pg_tensor **x, pg_tensor **y)
{
    static const double OFF[6] = {0.13, -0.37, 0.61, -1.3, 1.9, -2.6};
    *y = randt(PG_SHAPE(n0, n1), seed, true);
    *x = randt(PG_SHAPE(n0, n1), seed + 1, true);
    for (int64_t i = 0; i < (*x)->numel; i++)
        pg_set(*x, i, pg_get(*y, i) + OFF[(i * 5 + seed) % 6]);
}

Test(losses, gradcheck_regression)
{
    /* smooth l1 beta and huber delta 0.5, 1, 2.2: away from every |d| above */
    const struct { int loss; double param; } L[] = {{MSE, 0}, {L1, 0}, {SMOOTH_L1, 0.5}, {SMOOTH_L1, 1.0},
                                                     {SMOOTH_L1, 2.2}, {SMOOTH_L1, 0.0}, {HUBER, 0.5},
                                                     {HUBER, 1.0}, {HUBER, 2.2}};
    for (size_t k = 0; k < sizeof L / sizeof L[0]; k++)
        for (int r = 0; r < 3; r++) {
            pg_tensor *x, *y;
            regression_inputs(3, 5, 10 + k, &x, &y);
            loss_ctx c = {L[k].loss, (pg_reduction)r, L[k].param, false, false};
            pg_gradcheck_result res = pg_gradcheck(loss_fn, 2, (pg_tensor *[]){x, y}, &c, NULL);
            cr_assert(res.ok, "loss %d param %g reduction %d: %s", L[k].loss, L[k].param, r, res.message);
            cr_assert_eq(res.checked, 30);
            free_all(2, (pg_tensor *[]){x, y});
        }
    /* 3-D and 0-dim inputs */
    pg_tensor *x3 = rand_param(PG_SHAPE(2, 3, 4), -2, 2, 30), *y3 = rand_param(PG_SHAPE(2, 3, 4), -2, 2, 31);
    loss_ctx c3 = {MSE, PG_REDUCE_MEAN, 0, false, false};
    assert_gradcheck(loss_fn, 2, (pg_tensor *[]){x3, y3}, &c3, NULL);
    pg_tensor *x0 = T64(SCALAR_SHAPE, 0.7), *y0 = T64(SCALAR_SHAPE, -0.4);
    x0->requires_grad = y0->requires_grad = true;
    loss_ctx c0 = {HUBER, PG_REDUCE_SUM, 0.5, false, false};
    assert_gradcheck(loss_fn, 2, (pg_tensor *[]){x0, y0}, &c0, NULL);
    free_all(4, (pg_tensor *[]){x3, y3, x0, y0});
}

Test(losses, gradcheck_bce_with_logits)
{
    pg_tensor *x = rand_param(PG_SHAPE(3, 4), -4, 4, 40), *y = rand_param(PG_SHAPE(3, 4), 0, 1, 41);
    pg_tensor *w = rand_param(PG_SHAPE(3, 1), 0.2, 2, 42), *pw = rand_param(PG_SHAPE(4), 0.3, 3, 43);
    pg_tensor *wf = rand_param(PG_SHAPE(3, 4), 0.2, 2, 44);
    w->requires_grad = pw->requires_grad = wf->requires_grad = false;
    for (int r = 0; r < 3; r++) {
        loss_ctx c = {BCE, (pg_reduction)r, 0, false, false};
        assert_gradcheck(loss_fn, 2, (pg_tensor *[]){x, y}, &c, NULL);
        c.has_w = true;
        assert_gradcheck(loss_fn, 3, (pg_tensor *[]){x, y, w}, &c, NULL);
        assert_gradcheck(loss_fn, 3, (pg_tensor *[]){x, y, wf}, &c, NULL);
        c.has_pw = true;
        assert_gradcheck(loss_fn, 4, (pg_tensor *[]){x, y, w, pw}, &c, NULL);
        c.has_w = false;
        assert_gradcheck(loss_fn, 3, (pg_tensor *[]){x, y, pw}, &c, NULL);
    }
    free_all(5, (pg_tensor *[]){x, y, w, pw, wf});
}

Test(losses, gradcheck_nll)
{
    pg_tensor *lp = rand_param(PG_SHAPE(5, 4), -3, 0, 50), *t = TI64(PG_SHAPE(5), 3, -100, 0, 2, 3);
    pg_tensor *w = rand_param(PG_SHAPE(4), 0.2, 2, 51);
    w->requires_grad = false;
    pg_tensor *lp3 = rand_param(PG_SHAPE(2, 3, 4), -3, 0, 52), *t3 = TI64(PG_SHAPE(2, 3), 0, 1, 2, 3, 1, 1);
    for (int r = 0; r < 3; r++) {
        loss_ctx c = {NLL, (pg_reduction)r, -100, false, false};
        assert_gradcheck(loss_fn, 2, (pg_tensor *[]){lp, t}, &c, NULL);
        c.has_w = true;
        assert_gradcheck(loss_fn, 3, (pg_tensor *[]){lp, t, w}, &c, NULL);
        loss_ctx c3 = {NLL, (pg_reduction)r, 1, true, false}; /* ignore class 1 */
        assert_gradcheck(loss_fn, 3, (pg_tensor *[]){lp3, t3, w}, &c3, NULL);
    }
    free_all(5, (pg_tensor *[]){lp, t, w, lp3, t3});
}

/* ---- bad input ------------------------------------------------------------------------------- */

Test(losses, bad_input_regression)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = T64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), *y = T64(PG_SHAPE(2, 3), 0, 0, 0, 0, 0, 0);
    pg_tensor *y32 = T32(PG_SHAPE(2, 3), 0, 0, 0, 0, 0, 0), *yt = T64(PG_SHAPE(3, 2), 0, 0, 0, 0, 0, 0);
    pg_tensor *yb = T64(PG_SHAPE(3), 0, 0, 0), *ids = TI64(PG_SHAPE(2, 3), 0, 0, 0, 0, 0, 0);
    ASSERT_FAILS(pg_mse_loss(g, NULL, y, PG_REDUCE_MEAN), "pg_mse_loss: input is NULL");
    ASSERT_FAILS(pg_mse_loss(g, x, NULL, PG_REDUCE_MEAN), "pg_mse_loss: target is NULL");
    ASSERT_FAILS(pg_mse_loss(g, ids, y, PG_REDUCE_MEAN), "pg_mse_loss: input must be f32 or f64, got i64[2,3]");
    ASSERT_FAILS(pg_l1_loss(g, x, ids, PG_REDUCE_MEAN), "pg_l1_loss: target must be f32 or f64, got i64[2,3]");
    ASSERT_FAILS(pg_l1_loss(g, x, y32, PG_REDUCE_SUM),
                 "pg_l1_loss: dtypes differ: input is f64[2,3], target is f32[2,3]");
    ASSERT_FAILS(pg_smooth_l1_loss(g, x, yt, 1.0, PG_REDUCE_NONE),
                 "pg_smooth_l1_loss: shapes differ: input is f64[2,3], target is f64[3,2]");
    ASSERT_FAILS(pg_huber_loss(g, x, yb, 1.0, PG_REDUCE_MEAN),
                 "pg_huber_loss: shapes differ: input is f64[2,3], target is f64[3] (no broadcasting)");
    ASSERT_FAILS(pg_mse_loss(g, x, y, (pg_reduction)7),
                 "pg_mse_loss: unknown reduction 7 (PG_REDUCE_MEAN, PG_REDUCE_SUM or PG_REDUCE_NONE)");
    ASSERT_FAILS(pg_smooth_l1_loss(g, x, y, -1.0, PG_REDUCE_MEAN), "pg_smooth_l1_loss: beta must be >= 0, got -1");
    ASSERT_FAILS(pg_smooth_l1_loss(g, x, y, NAN, PG_REDUCE_MEAN), "pg_smooth_l1_loss: beta must be >= 0, got nan");
    ASSERT_FAILS(pg_huber_loss(g, x, y, 0.0, PG_REDUCE_MEAN), "pg_huber_loss: delta must be > 0, got 0");
    ASSERT_FAILS(pg_huber_loss(g, x, y, -2.0, PG_REDUCE_SUM), "pg_huber_loss: delta must be > 0, got -2");
    ASSERT_FAILS(pg_huber_loss(g, x, y, NAN, PG_REDUCE_SUM), "pg_huber_loss: delta must be > 0, got nan");
    cr_assert_str_eq(pg_graph_error(g), "pg_mse_loss: input is NULL", "the graph keeps the first error");
    pg_graph_free(g);
    free_all(6, (pg_tensor *[]){x, y, y32, yt, yb, ids});
}

Test(losses, bad_input_bce_with_logits)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(4, 5), 0.5), *y = pg_tensor_full(NULL, PG_F64, PG_SHAPE(4, 5), 1);
    pg_tensor *y32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(4, 5), 1), *yb = pg_tensor_full(NULL, PG_F64, PG_SHAPE(5), 1);
    pg_tensor *w4 = pg_tensor_full(NULL, PG_F64, PG_SHAPE(4), 1), *w32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(5), 1);
    pg_tensor *wbig = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 4, 5), 1), *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(5), 1);
    pg_tensor *wg = pg_tensor_full(NULL, PG_F64, PG_SHAPE(5), 1);
    wg->requires_grad = true;
    ASSERT_FAILS(pg_bce_with_logits(g, NULL, y, NULL, NULL, PG_REDUCE_MEAN), "pg_bce_with_logits: logits is NULL");
    ASSERT_FAILS(pg_bce_with_logits(g, x, NULL, NULL, NULL, PG_REDUCE_MEAN), "pg_bce_with_logits: target is NULL");
    ASSERT_FAILS(pg_bce_with_logits(g, x, y32, NULL, NULL, PG_REDUCE_MEAN),
                 "pg_bce_with_logits: dtypes differ: logits is f64[4,5], target is f32[4,5]");
    ASSERT_FAILS(pg_bce_with_logits(g, x, yb, NULL, NULL, PG_REDUCE_MEAN),
                 "pg_bce_with_logits: shapes differ: logits is f64[4,5], target is f64[5] (no broadcasting)");
    ASSERT_FAILS(pg_bce_with_logits(g, x, y, w4, NULL, PG_REDUCE_MEAN),
                 "pg_bce_with_logits: weight must broadcast to the logits' shape: logits is f64[4,5], weight is "
                 "f64[4]");
    ASSERT_FAILS(pg_bce_with_logits(g, x, y, NULL, wbig, PG_REDUCE_MEAN),
                 "pg_bce_with_logits: pos_weight must broadcast to the logits' shape: logits is f64[4,5], "
                 "pos_weight is f64[2,4,5]");
    ASSERT_FAILS(pg_bce_with_logits(g, x, y, w32, NULL, PG_REDUCE_MEAN),
                 "pg_bce_with_logits: weight must have the logits' dtype: logits is f64[4,5], weight is f32[5]");
    ASSERT_FAILS(pg_bce_with_logits(g, x, y, NULL, ids, PG_REDUCE_MEAN),
                 "pg_bce_with_logits: pos_weight must have the logits' dtype: logits is f64[4,5], pos_weight is "
                 "i64[5]");
    ASSERT_FAILS(pg_bce_with_logits(g, x, y, NULL, NULL, (pg_reduction)-1), "pg_bce_with_logits: unknown reduction -1");
    ASSERT_FAILS(pg_bce_with_logits(g, x, y, wg, NULL, PG_REDUCE_MEAN),
                 "pg_bce_with_logits: weight requires grad, but the loss gives weight and pos_weight no gradient "
                 "(as torch); pass a detached tensor");
    /* without a graph nothing is recorded: a weight that requires grad is fine */
    pg_tensor *ok = pg_bce_with_logits(NULL, x, y, wg, wg, PG_REDUCE_MEAN);
    cr_assert_not_null(ok, "%s", pg_last_error());
    cr_assert_str_eq(pg_graph_error(g), "pg_bce_with_logits: logits is NULL");
    pg_graph_free(g);
    free_all(10, (pg_tensor *[]){x, y, y32, yb, w4, w32, wbig, ids, wg, ok});
}

Test(losses, bad_input_nll)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *lp = pg_tensor_full(NULL, PG_F64, PG_SHAPE(4, 5), -1.0), *t = TI64(PG_SHAPE(4), 1, 7, -100, 4);
    pg_tensor *tf = T64(PG_SHAPE(4), 1, 0, 0, 0), *t2 = TI64(PG_SHAPE(2, 2), 0, 0, 0, 0);
    pg_tensor *ok = TI64(PG_SHAPE(4), 0, 0, 0, 0), *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(4, 5), 0);
    pg_tensor *w4 = pg_tensor_full(NULL, PG_F64, PG_SHAPE(4), 1), *w32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(5), 1);
    pg_tensor *wg = pg_tensor_full(NULL, PG_F64, PG_SHAPE(5), 1), *s = T64(SCALAR_SHAPE, 1.0);
    wg->requires_grad = true;
    ASSERT_FAILS(pg_nll_loss(g, NULL, t, NULL, -100, PG_REDUCE_MEAN), "pg_nll_loss: log_probs is NULL");
    ASSERT_FAILS(pg_nll_loss(g, lp, NULL, NULL, -100, PG_REDUCE_MEAN), "pg_nll_loss: targets is NULL");
    ASSERT_FAILS(pg_nll_loss(g, ids, ok, NULL, -100, PG_REDUCE_MEAN),
                 "pg_nll_loss: log_probs must be f32 or f64, got i64[4,5]");
    ASSERT_FAILS(pg_nll_loss(g, lp, tf, NULL, -100, PG_REDUCE_MEAN), "pg_nll_loss: targets must be i64, got f64[4]");
    ASSERT_FAILS(pg_nll_loss(g, lp, t2, NULL, -100, PG_REDUCE_MEAN),
                 "pg_nll_loss: targets must have the log_probs' shape without the last dim: log_probs is f64[4,5], "
                 "targets is i64[2,2]");
    ASSERT_FAILS(pg_nll_loss(g, s, ok, NULL, -100, PG_REDUCE_MEAN),
                 "pg_nll_loss: targets must have the log_probs' shape without the last dim: log_probs is f64[]");
    ASSERT_FAILS(pg_nll_loss(g, lp, t, NULL, -100, PG_REDUCE_MEAN),
                 "pg_nll_loss: target 7 at index 1 is out of range for C = 5 classes (log_probs f64[4,5])");
    ASSERT_FAILS(pg_nll_loss(g, lp, ok, w4, -100, PG_REDUCE_MEAN),
                 "pg_nll_loss: weight must be f64[5] (one per class of log_probs f64[4,5]), got f64[4]");
    ASSERT_FAILS(pg_nll_loss(g, lp, ok, w32, -100, PG_REDUCE_MEAN),
                 "pg_nll_loss: weight must be f64[5] (one per class of log_probs f64[4,5]), got f32[5]");
    ASSERT_FAILS(pg_nll_loss(g, lp, ok, NULL, -100, (pg_reduction)3), "pg_nll_loss: unknown reduction 3");
    ASSERT_FAILS(pg_nll_loss(g, lp, ok, wg, -100, PG_REDUCE_MEAN),
                 "pg_nll_loss: weight requires grad, but the loss gives it no gradient (as torch); pass a detached "
                 "tensor");
    cr_assert_str_eq(pg_graph_error(g), "pg_nll_loss: log_probs is NULL");
    pg_graph_free(g);
    free_all(10, (pg_tensor *[]){lp, t, tf, t2, ok, ids, w4, w32, wg, s});
}
