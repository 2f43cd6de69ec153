/* pg_scalar_mlp (autograd/op_mlp.c): hand-computed values and gradients, the chain of
 * ops it replaces (affine, relu, affine, permute) with and without biases and over
 * several chunks, a gradcheck, f32 against f64, the same bits on 1 and 2 threads, bad
 * input. */
#include "testutil.h"

/* u (1, 3) = (-1, 0.5, 2); F 2: w0 (1, -2), b0 (0.5, 1); H 2: w2 ((1, 2), (-1, 0.5)),
 * b2 (0.1, -0.2). a = (-0.5, 3), (1, 0), (2.5, -3); h = (0, 3), (1, 0), (2.5, 0). */
Test(scalar_mlp, hand_computed)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *u = T64(PG_SHAPE(1, 3), -1, 0.5, 2), *w0 = T64(PG_SHAPE(2, 1), 1, -2), *b0 = T64(PG_SHAPE(2), 0.5, 1);
    pg_tensor *w2 = T64(PG_SHAPE(2, 2), 1, 2, -1, 0.5), *b2 = T64(PG_SHAPE(2), 0.1, -0.2);
    pg_tensor *all[5] = {u, w0, b0, w2, b2};
    for (int i = 0; i < 5; i++)
        all[i]->requires_grad = true;
    pg_tensor *y = pg_scalar_mlp(g, u, w0, b0, w2, b2);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    assert_shape(y, PG_SHAPE(1, 2, 3));
    /* head 0: 2 h_1 + 0.1 = 6.1, h_0 + 0.1 = 1.1, 2.6; head 1: 0.5 h_1 - h_0 - 0.2 */
    ASSERT_VALUES(y, 1e-15, 6.1, 1.1, 2.6, 1.3, -1.2, -2.7);
    pg_tensor *up = pg_from_array(g, PG_F64, PG_SHAPE(1, 2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    cr_assert_eq(pg_backward_with(g, y, up), 0, "%s", pg_graph_error(g));
    /* dh = w2^T d: (-3, 4), (-3, 6.5), (-3, 9); da = dh [a > 0] (a = 0 passes none):
     * (0, 4), (-3, 0), (-3, 0); du = da . w0 */
    ASSERT_VALUES(u->grad, 1e-15, -8, -3, -3);
    ASSERT_VALUES(w0->grad, 1e-15, -7.5, -4); /* sum da u */
    ASSERT_VALUES(b0->grad, 1e-15, -6, 4);    /* sum da */
    ASSERT_VALUES(w2->grad, 1e-15, 9.5, 3, 20, 12); /* sum d_h h_k */
    ASSERT_VALUES(b2->grad, 1e-15, 6, 15);
    pg_graph_free(g);
    free_all(5, all);
}

/* the chain: (B, R, 1) -> affine -> relu -> affine -> (B, R, H) -> (B, H, R) */
static pg_tensor *chain(pg_graph *g, pg_tensor *const *in)
{
    pg_tensor *u = in[0];
    pg_tensor *x = pg_reshape(g, u, PG_SHAPE(u->shape[0], u->shape[1], 1));
    pg_tensor *y = pg_affine(g, pg_relu(g, pg_affine(g, x, in[1], in[2])), in[3], in[4]);
    return pg_permute(g, y, (const int[]){0, 2, 1});
}

/* out and the five gradients (zeros for an absent bias), heap copies */
static void run(pg_tensor *const *in, bool fused, uint64_t seed, pg_tensor **res)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *y = fused ? pg_scalar_mlp(g, in[0], in[1], in[2], in[3], in[4]) : chain(g, in);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_rng r = pg_rng_init(seed);
    cr_assert_eq(pg_backward_with(g, y, pg_randn(g, y->dtype, y->ndim, y->shape, &r)), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, y);
    for (int i = 0; i < 5; i++)
        res[i + 1] = in[i] ? take_grad(in[i]) : pg_zeros(NULL, in[0]->dtype, 1, (int64_t[]){1});
    pg_graph_free(g);
}

/* u (B, R) in [-2, 2], weights in [-1, 1], biases where asked; float64 */
static void make_inputs(pg_tensor **in, int64_t B, int64_t R, int64_t F, int64_t H, bool biases, uint64_t seed)
{
    in[0] = rand_param(PG_SHAPE(B, R), -2, 2, seed);
    in[1] = randt(PG_SHAPE(F, 1), seed + 1, true);
    in[2] = biases ? randt(PG_SHAPE(F), seed + 2, true) : NULL;
    in[3] = randt(PG_SHAPE(H, F), seed + 3, true);
    in[4] = biases ? randt(PG_SHAPE(H), seed + 4, true) : NULL;
}

static void free_inputs(pg_tensor **in)
{
    for (int i = 0; i < 5; i++)
        pg_tensor_free(in[i]);
}

/* R 70: four vectors of 16 and a tail of 6; R 1200: three chunks; H 11: two blocks of heads */
Test(scalar_mlp, equals_the_chain_of_ops)
{
    static const char *const what[6] = {"out", "du", "dw0", "db0", "dw2", "db2"};
    const int64_t shapes[][4] = {{2, 70, 5, 3}, {1, 1200, 32, 4}, {3, 37, 7, 11}, {2, 16, 1, 1}};
    for (int s = 0; s < 4; s++)
        for (int biases = 0; biases <= 1; biases++) {
            pg_tensor *in[5], *a[6], *b[6];
            make_inputs(in, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], biases, 10 + (uint64_t)s);
            run(in, true, 5, a);
            run(in, false, 5, b);
            for (int i = 0; i < 6; i++)
                assert_close(a[i], b[i], 1e-12, what[i]);
            free_all(6, a);
            free_all(6, b);
            free_inputs(in);
        }
}

static pg_tensor *mlp_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_scalar_mlp(g, in[0], in[1], in[2], in[3], in[4]);
}

/* relu's kink is at a = 0: these u and weights keep every a at least 0.05 away from it */
Test(scalar_mlp, gradcheck)
{
    pg_tensor *in[5] = {T64(PG_SHAPE(2, 5), -1.3, -0.6, 0.2, 0.9, 1.7, -1.9, -0.3, 0.4, 1.1, 2.2),
                        T64(PG_SHAPE(3, 1), 0.8, -1.1, 0.35), T64(PG_SHAPE(3), 0.1, 0.55, -0.2),
                        T64(PG_SHAPE(2, 3), 0.7, -0.4, 1.2, -0.9, 0.3, 0.6), T64(PG_SHAPE(2), 0.25, -0.15)};
    for (int i = 0; i < 5; i++)
        in[i]->requires_grad = true;
    for (int64_t i = 0; i < in[0]->numel; i++)
        for (int k = 0; k < 3; k++) {
            double a = pg_get(in[0], i) * pg_get(in[1], k) + pg_get(in[2], k);
            cr_assert_gt(fabs(a), 0.05, "u[%lld] puts a_%d = %g near the kink", (long long)i, k, a);
        }
    assert_gradcheck(mlp_fn, 5, in, NULL, NULL);
    free_all(5, in);
}

Test(scalar_mlp, f32_agrees_with_f64)
{
    pg_tensor *in[5], *in32[5], *a[6], *b[6];
    make_inputs(in, 2, 300, 32, 4, true, 40);
    for (int i = 0; i < 5; i++) {
        in32[i] = pg_tensor_cast(NULL, in[i], PG_F32);
        in32[i]->requires_grad = true;
    }
    run(in, true, 6, a);
    run(in32, true, 6, b);
    static const char *const what[6] = {"out", "du", "dw0", "db0", "dw2", "db2"};
    for (int i = 0; i < 6; i++) /* the weights' gradients sum 600 entries */
        assert_close(b[i], a[i], i >= 2 ? 2e-4 : 2e-5, what[i]);
    free_all(6, a);
    free_all(6, b);
    free_inputs(in);
    free_inputs(in32);
}

typedef struct bits_case {
    pg_dtype dt;
    int64_t B, R;
} bits_case;

/* ctx: a bits_case; res: out and the five gradients, F 32, H 4 */
static void mlp_grads(void *ctx, pg_tensor **res)
{
    const bits_case *c = ctx;
    pg_tensor *in[5];
    make_inputs(in, c->B, c->R, 32, 4, true, 50);
    for (int i = 0; c->dt == PG_F32 && i < 5; i++) {
        pg_tensor *t = pg_tensor_cast(NULL, in[i], PG_F32);
        t->requires_grad = true;
        pg_tensor_free(in[i]);
        in[i] = t;
    }
    run(in, true, 7, res);
    free_inputs(in);
}

/* FIRE's shape, one row of 5000 (10 chunks); and 300 rows of 20, several to a task */
Test(scalar_mlp, same_bits_on_1_and_2_threads)
{
    static const char *const what[6] = {"out", "du", "dw0", "db0", "dw2", "db2"};
    const bits_case cases[4] = {{PG_F32, 1, 5000}, {PG_F64, 1, 5000}, {PG_F32, 300, 20}, {PG_F64, 300, 20}};
    for (int i = 0; i < 4; i++)
        assert_same_bits_on_1_and_2_threads(mlp_grads, (void *)&cases[i], 6, what);
}

Test(scalar_mlp, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *u = pg_zeros(g, PG_F64, PG_SHAPE(2, 4)), *w0 = pg_zeros(g, PG_F64, PG_SHAPE(3, 1));
    pg_tensor *b0 = pg_zeros(g, PG_F64, PG_SHAPE(3)), *w2 = pg_zeros(g, PG_F64, PG_SHAPE(2, 3));
    pg_tensor *b2 = pg_zeros(g, PG_F64, PG_SHAPE(2));
    ASSERT_FAILS(pg_scalar_mlp(g, NULL, w0, b0, w2, b2), "pg_scalar_mlp: u is NULL");
    ASSERT_FAILS(pg_scalar_mlp(g, u, NULL, b0, w2, b2), "pg_scalar_mlp: w0 is NULL");
    ASSERT_FAILS(pg_scalar_mlp(g, u, w0, b0, NULL, b2), "pg_scalar_mlp: w2 is NULL");
    pg_tensor *ids = pg_zeros(g, PG_I64, PG_SHAPE(2, 4)), *u32 = pg_zeros(g, PG_F32, PG_SHAPE(2, 4));
    ASSERT_FAILS(pg_scalar_mlp(g, ids, w0, b0, w2, b2), "pg_scalar_mlp: u must be f32 or f64, got i64[2,4]");
    ASSERT_FAILS(pg_scalar_mlp(g, u32, w0, b0, w2, b2),
                 "pg_scalar_mlp: u is f32[2,4], w0 f64[3,1], b0 f64[3], w2 f64[2,3], b2 f64[2]: expected u (B, R)");
    pg_tensor *u3 = pg_zeros(g, PG_F64, PG_SHAPE(2, 4, 1)), *w0w = pg_zeros(g, PG_F64, PG_SHAPE(3, 2));
    pg_tensor *w2n = pg_zeros(g, PG_F64, PG_SHAPE(2, 4)), *b0n = pg_zeros(g, PG_F64, PG_SHAPE(4));
    pg_tensor *b2n = pg_zeros(g, PG_F64, PG_SHAPE(3));
    ASSERT_FAILS(pg_scalar_mlp(g, u3, w0, b0, w2, b2), "u is f64[2,4,1]");
    ASSERT_FAILS(pg_scalar_mlp(g, u, w0w, b0, w2, b2), "w0 f64[3,2]");
    ASSERT_FAILS(pg_scalar_mlp(g, u, w0, b0, w2n, b2), "w2 f64[2,4]");
    ASSERT_FAILS(pg_scalar_mlp(g, u, w0, b0n, w2, b2), "b0 f64[4]");
    ASSERT_FAILS(pg_scalar_mlp(g, u, w0, b0, w2, b2n), "b2 f64[3]");
    cr_assert_str_eq(pg_graph_error(g), "pg_scalar_mlp: u is NULL", "the graph keeps the first error");
    pg_graph_free(g);
    /* no graph: a heap result, NULL biases read as zeros; an empty u gives an empty out */
    pg_tensor *hu = T64(PG_SHAPE(1, 2), 1, -1), *hw0 = T64(PG_SHAPE(1, 1), 2), *hw2 = T64(PG_SHAPE(1, 1), 3);
    pg_tensor *y = pg_scalar_mlp(NULL, hu, hw0, NULL, hw2, NULL);
    cr_assert_not_null(y, "%s", pg_last_error());
    ASSERT_VALUES(y, 0, 6, 0);
    pg_tensor *empty = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(0, 5)), *ye = pg_scalar_mlp(NULL, empty, hw0, NULL, hw2, NULL);
    cr_assert_not_null(ye, "%s", pg_last_error());
    assert_shape(ye, PG_SHAPE(0, 1, 5));
    pg_tensor *heap[] = {y, hu, hw0, hw2, empty, ye};
    free_all(6, heap);
}
