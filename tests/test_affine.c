/* pg_affine (autograd/op_matmul.c): the Linear layer's x W^T + b as one op. By
 * hand, against pg_matmul + pg_add, gradcheck with and without a bias (also with
 * x reaching the loss twice, so that fresh and accumulated gradients meet), bad input. */
#include "testutil.h"

Test(affine, hand_values)
{
    /* x (2, 2) = [[1, 2], [3, 4]], W (3, 2) = [[1, 0], [0, 1], [1, 1]], b = [10, 20, 30] */
    pg_tensor *x = T64(PG_SHAPE(2, 2), 1, 2, 3, 4), *w = T64(PG_SHAPE(3, 2), 1, 0, 0, 1, 1, 1);
    pg_tensor *b = T64(PG_SHAPE(3), 10, 20, 30);
    pg_tensor *y = pg_affine(NULL, x, w, b), *y0 = pg_affine(NULL, x, w, NULL);
    cr_assert(y && y0, "%s", pg_last_error());
    ASSERT_VALUES(y, 0, 11, 22, 33, 13, 24, 37);
    ASSERT_VALUES(y0, 0, 1, 2, 3, 3, 4, 7);
    pg_tensor *ts[] = {x, w, b, y, y0};
    free_all(5, ts);
}

/* x (2, 3, 5) through W (4, 5), b (4): the op against the composite, outputs and gradients */
Test(affine, same_as_matmul_plus_add)
{
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        pg_tensor *in[2][3];
        for (int k = 0; k < 2; k++) {
            in[k][0] = randt(PG_SHAPE(2, 3, 5), 1, true);
            in[k][1] = randt(PG_SHAPE(4, 5), 2, true);
            in[k][2] = randt(PG_SHAPE(4), 3, true);
        }
        pg_graph *g = pg_graph_new();
        pg_tensor *y0 = pg_affine(g, in[0][0], in[0][1], with_bias ? in[0][2] : NULL);
        pg_tensor *y1 = pg_matmul(g, pg_reshape(g, in[1][0], PG_SHAPE(6, 5)), in[1][1], false, true);
        y1 = pg_reshape(g, with_bias ? pg_add(g, y1, in[1][2]) : y1, PG_SHAPE(2, 3, 4));
        pg_tensor *up = randt(PG_SHAPE(2, 3, 4), 4, false);
        cr_assert_eq(pg_backward_with(g, y0, up), 0, "%s", pg_graph_error(g));
        cr_assert_eq(pg_backward_with(g, y1, up), 0, "%s", pg_graph_error(g));
        assert_shape(y0, 3, (int64_t[]){2, 3, 4});
        assert_close(y0, y1, 1e-15, "output");
        for (int i = 0; i < 2 + with_bias; i++)
            assert_close(in[0][i]->grad, in[1][i]->grad, 1e-15, "gradient");
        cr_assert(with_bias || !in[0][2]->grad, "an unused bias gets no gradient");
        pg_graph_free(g);
        free_all(3, in[0]);
        free_all(3, in[1]);
        pg_tensor_free(up);
    }
}

/* y = affine(affine(x, W1, b1), W2) + x: x's gradient comes from two rules */
static pg_tensor *two_layers(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)ctx;
    pg_tensor *h = pg_affine(g, in[0], in[1], n > 3 ? in[3] : NULL);
    return pg_add(g, pg_affine(g, h, in[2], NULL), in[0]);
}

Test(affine, gradcheck)
{
    pg_tensor *in[4] = {randt(PG_SHAPE(2, 3, 4), 1, true), randt(PG_SHAPE(5, 4), 2, true),
                        randt(PG_SHAPE(4, 5), 3, true), randt(PG_SHAPE(5), 4, true)};
    assert_gradcheck(two_layers, 4, in, NULL, NULL);
    assert_gradcheck(two_layers, 3, in, NULL, NULL);
    free_all(4, in);
}

Test(affine, bad_input)
{
    pg_tensor *x = randt(PG_SHAPE(2, 4), 1, false), *w = randt(PG_SHAPE(3, 4), 2, false);
    pg_tensor *wbad = randt(PG_SHAPE(3, 5), 3, false), *bbad = randt(PG_SHAPE(4), 4, false);
    ASSERT_FAILS(pg_affine(NULL, NULL, w, NULL), "pg_affine: x is NULL");
    ASSERT_FAILS(pg_affine(NULL, x, NULL, NULL), "pg_affine: weight is NULL");
    ASSERT_FAILS(pg_affine(NULL, x, wbad, NULL), "x f64[2,4], weight f64[3,5], bias NULL");
    ASSERT_FAILS(pg_affine(NULL, x, w, bbad), "bias f64[4]");
    pg_tensor *ts[] = {x, w, wbad, bbad};
    free_all(4, ts);
}
