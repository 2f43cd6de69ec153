/* pg_gather_lerp (autograd/op_lerp.c): hand-computed values and gradients, the same
 * numbers as the chain of ops it replaces (floor, two gathers, sub, mul, add), a
 * gradcheck, f32 against f64, rows on the pool for any thread count, bad input. */
#include "testutil.h"

#include "../tensor/threadpool.h"

/* z = (10, 20, 40, 80), p = (0, 0.5, 1.25, 3, 2.75): 10, 15, 25, 80, 70 */
Test(gather_lerp, hand_computed)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *z = T64(PG_SHAPE(1, 4), 10, 20, 40, 80), *p = T64(PG_SHAPE(1, 5), 0, 0.5, 1.25, 3, 2.75);
    z->requires_grad = p->requires_grad = true;
    pg_tensor *y = pg_gather_lerp(g, z, p);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    ASSERT_VALUES(y, 0, 10, 15, 25, 80, 70);
    pg_tensor *up = pg_from_array(g, PG_F64, PG_SHAPE(1, 5), (const double[]){1, 2, 4, 8, 16});
    cr_assert_eq(pg_backward_with(g, y, up), 0, "%s", pg_graph_error(g));
    /* dz: p=0 -> z0 += 1; p=0.5 -> z0 += 1, z1 += 1; p=1.25 -> z1 += 3, z2 += 1;
     * p=3 -> z3 += 8 (c = f); p=2.75 -> z2 += 4, z3 += 12 */
    ASSERT_VALUES(z->grad, 1e-15, 2, 4, 5, 20);
    /* dp = up (z[c] - z[f]): right-hand slope at 0 (10), 10, 4 * 20, 0 at the top, 16 * 40 */
    ASSERT_VALUES(p->grad, 1e-15, 10, 20, 80, 0, 640);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){z, p});
}

/* the chain of ops CoPE used before: the same values and gradients */
static pg_tensor *chain(pg_graph *g, pg_tensor *z, pg_tensor *p)
{
    int64_t n = z->shape[z->ndim - 1];
    pg_tensor *fl = pg_empty(g, PG_I64, p->ndim, p->shape), *ce = pg_empty(g, PG_I64, p->ndim, p->shape);
    for (int64_t i = 0; i < p->numel; i++) {
        int64_t f = (int64_t)floor(pg_get(p, i));
        pg_i64(fl)[i] = f;
        pg_i64(ce)[i] = f + 1 < n ? f + 1 : f;
    }
    pg_tensor *zf = pg_gather(g, z, -1, fl), *zc = pg_gather(g, z, -1, ce);
    return pg_add(g, zf, pg_mul(g, pg_sub(g, p, pg_floor(g, p)), pg_sub(g, zc, zf)));
}

static pg_tensor *positions(int64_t rows, int64_t m, int64_t n, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_tensor *p = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, rows / 2, m));
    for (int64_t i = 0; i < p->numel; i++) /* some exact integers, 0 and n - 1 among them */
        pg_f64(p)[i] = i % 7 == 0 ? (double)(i % n) : pg_rng_uniform(&r) * (double)(n - 1);
    p->requires_grad = true;
    return p;
}

static void run(pg_tensor *z, pg_tensor *p, bool fused, pg_tensor **y, pg_tensor **dz, pg_tensor **dp)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *out = fused ? pg_gather_lerp(g, z, p) : chain(g, z, p);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    pg_rng r = pg_rng_init(3);
    cr_assert_eq(pg_backward_with(g, out, pg_randn(g, out->dtype, out->ndim, out->shape, &r)), 0);
    *y = pg_tensor_copy(NULL, out);
    *dz = pg_tensor_copy(NULL, z->grad);
    *dp = pg_tensor_copy(NULL, p->grad);
    pg_zero_grad(z);
    pg_zero_grad(p);
    pg_graph_free(g);
}

Test(gather_lerp, equals_the_chain_of_ops)
{
    pg_tensor *z = randt(PG_SHAPE(2, 300, 9), 1, true), *p = positions(600, 150, 9, 2);
    pg_tensor *a[3], *b[3];
    run(z, p, true, &a[0], &a[1], &a[2]);
    run(z, p, false, &b[0], &b[1], &b[2]);
    const char *what[3] = {"out", "dz", "dp"};
    for (int i = 0; i < 3; i++)
        assert_close(a[i], b[i], 1e-14, what[i]);
    free_all(3, a);
    free_all(3, b);
    free_all(2, (pg_tensor *[]){z, p});
}

/* ctx: {z, p}; res: the op's output, dz, dp */
static void run_op(void *ctx, pg_tensor **res)
{
    pg_tensor *const *zp = ctx;
    run(zp[0], zp[1], true, &res[0], &res[1], &res[2]);
}

Test(gather_lerp, same_bits_for_any_thread_count)
{
    pg_tensor *zp[2] = {randt(PG_SHAPE(2, 300, 9), 4, true), positions(600, 150, 9, 5)};
    assert_same_bits_on_1_and_2_threads(run_op, zp, 3, (const char *const[]){"out", "dz", "dp"});
    free_all(2, zp);
}

/* p = (n - 1) sigmoid(u): inside the range, away from integers for these u */
static pg_tensor *lerp_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_gather_lerp(g, in[0], pg_mul_scalar(g, pg_sigmoid(g, in[1]), 3.0));
}

Test(gather_lerp, gradcheck)
{
    pg_tensor *in[2] = {randt(PG_SHAPE(2, 3, 4), 7, true),
                        T64(PG_SHAPE(2, 3, 2), -1.9, -0.7, 0.3, 1.1, 2.3, -2.9, 0.05, 0.6, -1.3, 1.7, 2.9, -0.4)};
    in[1]->requires_grad = true;
    assert_gradcheck(lerp_fn, 2, in, NULL, NULL);
    free_all(2, in);
}

Test(gather_lerp, f32_agrees_with_f64)
{
    pg_tensor *z = randt(PG_SHAPE(2, 50, 9), 8, true), *p = positions(100, 40, 9, 9);
    pg_tensor *z32 = pg_tensor_cast(NULL, z, PG_F32), *p32 = pg_tensor_cast(NULL, p, PG_F32);
    z32->requires_grad = p32->requires_grad = true;
    pg_tensor *a[3], *b[3];
    run(z, p, true, &a[0], &a[1], &a[2]);
    run(z32, p32, true, &b[0], &b[1], &b[2]);
    for (int i = 0; i < 3; i++)
        assert_close(b[i], a[i], 2e-5, "f32");
    free_all(3, a);
    free_all(3, b);
    free_all(4, (pg_tensor *[]){z, p, z32, p32});
}

Test(gather_lerp, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *z = pg_zeros(g, PG_F64, PG_SHAPE(2, 4)), *p = pg_zeros(g, PG_F64, PG_SHAPE(2, 3));
    ASSERT_FAILS(pg_gather_lerp(g, NULL, p), "pg_gather_lerp: z is NULL");
    ASSERT_FAILS(pg_gather_lerp(g, z, NULL), "pg_gather_lerp: p is NULL");
    pg_tensor *p3 = pg_zeros(g, PG_F64, PG_SHAPE(3, 3)), *p32 = pg_zeros(g, PG_F32, PG_SHAPE(2, 3));
    ASSERT_FAILS(pg_gather_lerp(g, z, p3), "pg_gather_lerp: z is f64[2,4], p is f64[3,3]: expected z (..., n)");
    ASSERT_FAILS(pg_gather_lerp(g, z, p32), "p is f32[2,3]");
    pg_tensor *pi = pg_zeros(g, PG_I64, PG_SHAPE(2, 3));
    ASSERT_FAILS(pg_gather_lerp(g, z, pi), "pg_gather_lerp");
    pg_tensor *far = T64(PG_SHAPE(2, 3), 0, 1, 2, 3, 3.5, 0), *neg = T64(PG_SHAPE(2, 3), 0, 1, 2, 3, 0, -0.25);
    pg_tensor *nan = T64(PG_SHAPE(2, 3), 0, NAN, 2, 3, 0, 1);
    ASSERT_FAILS(pg_gather_lerp(g, z, far), "pg_gather_lerp: p[4] = 3.5 is outside [0, 3] (z has 4 values per row)");
    ASSERT_FAILS(pg_gather_lerp(g, z, neg), "p[5] = -0.25 is outside [0, 3]");
    ASSERT_FAILS(pg_gather_lerp(NULL, z, nan), "p[1] = nan is outside [0, 3]");
    pg_tensor *ok = pg_gather_lerp(NULL, z, p); /* no graph: a heap result */
    cr_assert_not_null(ok, "%s", pg_last_error());
    pg_tensor_free(ok);
    pg_graph_free(g);
    free_all(3, (pg_tensor *[]){far, neg, nan});
}
