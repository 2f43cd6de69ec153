/* pg_rotate_pairs (autograd/op_rotate.c): hand values for both pairings, bit
 * equality with the composite of narrow / mul / sub / add / concat it replaced,
 * gradcheck with respect to t, cos and sin (cos/sin per batch or shared), bad input. */
#include "testutil.h"

Test(rotate, hand_values_both_pairings)
{
    /* t = [1, 2, 3, 4, 9] (Dh 5, R 2: channel 4 passes), cos = [0.5, 0], sin = [0.25, 1] */
    pg_tensor *t = T64(PG_SHAPE(1, 1, 1, 5), 1, 2, 3, 4, 9);
    pg_tensor *C = T64(PG_SHAPE(1, 1, 1, 2), 0.5, 0), *S = T64(PG_SHAPE(1, 1, 1, 2), 0.25, 1);
    pg_tensor *half = pg_rotate_pairs(NULL, t, C, S, false), *inter = pg_rotate_pairs(NULL, t, C, S, true);
    cr_assert(half && inter, "%s", pg_last_error());
    /* half-split pairs (0, 2), (1, 3): y0 = 1 (.5) - 3 (.25), y2 = 3 (.5) + 1 (.25), y1 = -4, y3 = 2 */
    ASSERT_VALUES(half, 0, -0.25, -4, 1.75, 2, 9);
    /* interleaved pairs (0, 1), (2, 3): y0 = .5 - .5, y1 = 1 + .25, y2 = -4, y3 = 3 */
    ASSERT_VALUES(inter, 0, 0, 1.25, -4, 3, 9);
    pg_tensor *ts[] = {t, C, S, half, inter};
    free_all(5, ts);
}

/* the composite the op replaced (nn/pos_rotary.c before), on (B, H, L, Dh) */
static pg_tensor *composite(pg_graph *g, pg_tensor *t, pg_tensor *C, pg_tensor *S, bool interleaved)
{
    int64_t B = t->shape[0], H = t->shape[1], L = t->shape[2], Dh = t->shape[3], R = C->shape[3], n = 2 * R;
    pg_tensor *x = n < Dh ? pg_narrow(g, t, 3, 0, n) : t, *x0, *x1;
    if (interleaved) {
        x = pg_reshape(g, x, PG_SHAPE(B, H, L, R, 2));
        x0 = pg_narrow(g, x, 4, 0, 1);
        x1 = pg_narrow(g, x, 4, 1, 1);
        C = pg_reshape(g, C, PG_SHAPE(C->shape[0], 1, L, R, 1));
        S = pg_reshape(g, S, PG_SHAPE(S->shape[0], 1, L, R, 1));
    } else {
        x0 = pg_narrow(g, x, 3, 0, R);
        x1 = pg_narrow(g, x, 3, R, R);
    }
    pg_tensor *y0 = pg_sub(g, pg_mul(g, x0, C), pg_mul(g, x1, S));
    pg_tensor *y1 = pg_add(g, pg_mul(g, x1, C), pg_mul(g, x0, S));
    pg_tensor *y = pg_reshape(g, pg_concat(g, 2, (pg_tensor *[]){y0, y1}, interleaved ? 4 : 3), PG_SHAPE(B, H, L, n));
    return n < Dh ? pg_concat(g, 2, (pg_tensor *[]){y, pg_narrow(g, t, 3, n, Dh - n)}, 3) : y;
}

static void assert_same_as_composite(pg_dtype dt, bool interleaved, int64_t Bc)
{
    pg_rng r = pg_rng_init(5);
    pg_tensor *in[2][3];
    for (int k = 0; k < 2; k++) {
        pg_rng rk = r;
        in[k][0] = pg_randn(NULL, dt, PG_SHAPE(2, 3, 5, 7), &rk);
        in[k][1] = pg_randn(NULL, dt, PG_SHAPE(Bc, 1, 5, 3), &rk);
        in[k][2] = pg_randn(NULL, dt, PG_SHAPE(Bc, 1, 5, 3), &rk);
        for (int i = 0; i < 3; i++)
            pg_set_requires_grad(in[k][i], true);
    }
    pg_graph *g = pg_graph_new();
    pg_rng ru = pg_rng_init(6);
    pg_tensor *up = pg_randn(g, dt, PG_SHAPE(2, 3, 5, 7), &ru);
    pg_tensor *y0 = pg_rotate_pairs(g, in[0][0], in[0][1], in[0][2], interleaved);
    pg_tensor *y1 = composite(g, in[1][0], in[1][1], in[1][2], interleaved);
    cr_assert(y0 && y1, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward_with(g, y0, up), 0);
    cr_assert_eq(pg_backward_with(g, y1, up), 0);
    size_t es = pg_dtype_size(dt);
    cr_assert_eq(memcmp(y0->data, y1->data, (size_t)y0->numel * es), 0, "outputs differ (%s, interleaved %d, Bc %lld, max %.3g)",
                 pg_dtype_name(dt), interleaved, (long long)Bc, max_err(y0, y1));
    for (int i = 0; i < 3; i++) /* dC, dS sum the same products in another order: close, not equal */
        assert_close(in[0][i]->grad, in[1][i]->grad, dt == PG_F64 ? 1e-14 : 1e-5, "gradient");
    cr_assert_eq(memcmp(in[0][0]->grad->data, in[1][0]->grad->data, (size_t)y0->numel * es), 0, "dt differs");
    pg_graph_free(g);
    free_all(3, in[0]);
    free_all(3, in[1]);
}

Test(rotate, same_as_the_composite)
{
    for (int inter = 0; inter < 2; inter++)
        for (int64_t Bc = 1; Bc <= 2; Bc++) {
            assert_same_as_composite(PG_F64, inter, Bc);
            assert_same_as_composite(PG_F32, inter, Bc);
        }
}

static pg_tensor *rotate_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_rotate_pairs(g, in[0], in[1], in[2], *(const bool *)ctx);
}

Test(rotate, gradcheck)
{
    for (int inter = 0; inter < 2; inter++)
        for (int64_t Bc = 1; Bc <= 2; Bc++) {
            pg_tensor *in[3] = {randt(PG_SHAPE(2, 2, 3, 5), 1, true), randt(PG_SHAPE(Bc, 1, 3, 2), 2, true),
                                randt(PG_SHAPE(Bc, 1, 3, 2), 3, true)};
            bool il = inter;
            assert_gradcheck(rotate_fn, 3, in, &il, NULL);
            free_all(3, in);
        }
}

Test(rotate, bad_input)
{
    pg_tensor *t = randt(PG_SHAPE(2, 2, 3, 4), 1, false), *C = randt(PG_SHAPE(1, 1, 3, 2), 2, false);
    pg_tensor *wide = randt(PG_SHAPE(1, 1, 3, 3), 3, false), *f32 = pg_cast(NULL, C, PG_F32);
    ASSERT_FAILS(pg_rotate_pairs(NULL, NULL, C, C, false), "pg_rotate_pairs: t is NULL");
    ASSERT_FAILS(pg_rotate_pairs(NULL, t, wide, wide, false), "R 3");
    ASSERT_FAILS(pg_rotate_pairs(NULL, t, C, wide, false), "sin f64[1,1,3,3]");
    ASSERT_FAILS(pg_rotate_pairs(NULL, t, f32, f32, false), "cos f32[1,1,3,2]");
    pg_tensor *ts[] = {t, C, wide, f32};
    free_all(4, ts);
}
