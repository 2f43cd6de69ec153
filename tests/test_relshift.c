/* pg_rel_shift (autograd/op_relshift.c): by hand, against the gather it
 * replaced (values and gradients), gradcheck, bad input. */
#include "testutil.h"

Test(relshift, hand_values)
{
    /* Lq 2, Lk 3: N 4 distances -2 .. 1; row a reads columns a + 2, a + 1, a */
    pg_tensor *x = T64(PG_SHAPE(2, 4), 10, 11, 12, 13, 20, 21, 22, 23);
    pg_tensor *y = pg_rel_shift(NULL, x, 3);
    cr_assert_not_null(y, "%s", pg_last_error());
    ASSERT_VALUES(y, 0, 12, 11, 10, 23, 22, 21);
    pg_tensor_free(x);
    pg_tensor_free(y);
}

Test(relshift, same_as_gather)
{
    const int64_t B = 2, H = 3, Lq = 4, Lk = 5, N = Lq + Lk - 1;
    pg_tensor *x1 = randt(PG_SHAPE(B, H, Lq, N), 1, true), *x2 = randt(PG_SHAPE(B, H, Lq, N), 1, true);
    pg_tensor *idx = pg_empty(NULL, PG_I64, PG_SHAPE(B, H, Lq, Lk));
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t b = i % Lk, a = i / Lk % Lq;
        pg_i64(idx)[i] = a - b + Lk - 1;
    }
    pg_graph *g = pg_graph_new();
    pg_tensor *y1 = pg_rel_shift(g, x1, Lk), *y2 = pg_gather(g, x2, 3, idx);
    pg_tensor *up = randt(PG_SHAPE(B, H, Lq, Lk), 2, false);
    cr_assert_eq(pg_backward_with(g, y1, up), 0, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward_with(g, y2, up), 0, "%s", pg_graph_error(g));
    assert_close(y1, y2, 0, "output");
    assert_close(x1->grad, x2->grad, 0, "gradient");
    pg_graph_free(g);
    pg_tensor *ts[] = {x1, x2, idx, up};
    free_all(4, ts);
}

static pg_tensor *shift_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_rel_shift(g, in[0], 2);
}

Test(relshift, gradcheck)
{
    pg_tensor *in[1] = {randt(PG_SHAPE(2, 3, 4), 3, true)}; /* Lq 3, Lk 2 */
    assert_gradcheck(shift_fn, 1, in, NULL, NULL);
    pg_tensor_free(in[0]);
}

Test(relshift, bad_input)
{
    pg_tensor *x = randt(PG_SHAPE(3, 5), 1, false), *v = randt(PG_SHAPE(5), 2, false);
    ASSERT_FAILS(pg_rel_shift(NULL, NULL, 2), "pg_rel_shift: x is NULL");
    ASSERT_FAILS(pg_rel_shift(NULL, x, 2), "got x f64[3,5] and Lk 2");
    ASSERT_FAILS(pg_rel_shift(NULL, v, 1), "got x f64[5]");
    ASSERT_FAILS(pg_rel_shift(NULL, x, 0), "Lk 0");
    pg_tensor *ts[] = {x, v};
    free_all(2, ts);
}
