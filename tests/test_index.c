/* Indexing ops: gather, index_select, embedding, scatter_add.
 * Forward values from PyTorch 1.13 (the expression is in a comment beside
 * them) or by hand, gradients with repeated indices by hand, f64 gradchecks
 * along every axis, other dtypes, bounds checks and bad input. */
#include "testutil.h"

static pg_tensor *arange_f64(int ndim, const int64_t *shape)
{
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, ndim, shape);
    pg_fill_arange(t, 0, 1);
    return t;
}

/* ---- forward values ------------------------------------------------------------------ */

Test(index, gather_values)
{
    pg_tensor *x = arange_f64(PG_SHAPE(3, 4));
    pg_tensor *i0 = TI64(PG_SHAPE(2, 4), 2, 0, 1, 2, 0, 0, 2, 1);
    pg_tensor *i1 = TI64(PG_SHAPE(3, 2), 3, 0, 1, 1, 2, 3);
    pg_tensor *i1s = TI64(PG_SHAPE(2, 1), 3, 1);
    pg_tensor *y0 = pg_gather(NULL, x, 0, i0), *y1 = pg_gather(NULL, x, -1, i1), *ys = pg_gather(NULL, x, 1, i1s);
    /* torch.gather(torch.arange(12.).reshape(3,4), dim, index) */
    assert_shape(y0, PG_SHAPE(2, 4));
    ASSERT_VALUES(y0, 0, 8, 1, 6, 11, 0, 1, 10, 7);
    assert_shape(y1, PG_SHAPE(3, 2));
    ASSERT_VALUES(y1, 0, 3, 0, 5, 5, 10, 11);
    assert_shape(ys, PG_SHAPE(2, 1));
    ASSERT_VALUES(ys, 0, 3, 5);
    pg_tensor *ts[] = {x, i0, i1, i1s, y0, y1, ys};
    free_all(7, ts);
}

Test(index, index_select_values)
{
    pg_tensor *x = arange_f64(PG_SHAPE(3, 4));
    pg_tensor *r = TI64(PG_SHAPE(3), 2, 0, 2), *c = TI64(PG_SHAPE(2), 3, 1), *none = TI64(PG_SHAPE(0), 0);
    pg_tensor *a = pg_index_select(NULL, x, 0, r), *b = pg_index_select(NULL, x, -1, c);
    pg_tensor *e = pg_index_select(NULL, x, 1, none);
    /* x.index_select(0, [2, 0, 2]) and x.index_select(1, [3, 1]) */
    assert_shape(a, PG_SHAPE(3, 4));
    ASSERT_VALUES(a, 0, 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11);
    assert_shape(b, PG_SHAPE(3, 2));
    ASSERT_VALUES(b, 0, 3, 1, 7, 5, 11, 9);
    assert_shape(e, PG_SHAPE(3, 0));
    pg_tensor *ts[] = {x, r, c, none, a, b, e};
    free_all(7, ts);
}

Test(index, embedding_values_and_repeated_ids)
{
    pg_tensor *table = T64(PG_SHAPE(5, 2), 0, 1, 10, 11, 20, 21, 30, 31, 40, 41);
    table->requires_grad = true;
    pg_tensor *ids = TI64(PG_SHAPE(3, 2), 1, 4, 1, 1, 0, 3);
    pg_graph *g = pg_graph_new();
    pg_tensor *e = pg_embedding(g, table, ids);
    /* F.embedding(ids, table) */
    assert_shape(e, PG_SHAPE(3, 2, 2));
    ASSERT_VALUES(e, 0, 10, 11, 40, 41, 10, 11, 10, 11, 0, 1, 30, 31);
    /* e.sum().backward(): each row's gradient counts its ids (row 1 three times) */
    cr_assert_eq(pg_backward_with(g, e, pg_ones(g, PG_F64, PG_SHAPE(3, 2, 2))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(table->grad, 0, 1, 1, 3, 3, 0, 0, 1, 1, 1, 1);
    pg_tensor *scalar_id = pg_tensor_full(NULL, PG_I64, 0, NULL, 2);
    pg_tensor *row = pg_embedding(g, table, scalar_id);
    assert_shape(row, PG_SHAPE(2));
    ASSERT_VALUES(row, 0, 20, 21);
    pg_graph_free(g);
    pg_tensor *ts[] = {table, ids, scalar_id};
    free_all(3, ts);
}

Test(index, scatter_add_values)
{
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3, 4), 0);
    pg_tensor *idx = TI64(PG_SHAPE(2, 4), 0, 1, 2, 0, 2, 2, 0, 0);
    pg_tensor *src = T64(PG_SHAPE(2, 4), 1, 2, 3, 4, 5, 6, 7, 8);
    pg_tensor *y = pg_scatter_add(NULL, x, 0, idx, src);
    /* torch.zeros(3,4).scatter_add(0, idx, arange(1.,9).reshape(2,4)) */
    ASSERT_VALUES(y, 0, 1, 0, 7, 12, 0, 2, 0, 0, 5, 6, 3, 0);
    /* index smaller than src (torch allows it; the rest of src is unused):
     * torch.ones(2,3).scatter_add(1, [[0,0,2],[1,1,1]], [[1,2,3,4],[5,6,7,8]]) */
    pg_tensor *x1 = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 3), 1);
    pg_tensor *i1 = TI64(PG_SHAPE(2, 3), 0, 0, 2, 1, 1, 1);
    pg_tensor *s1 = T64(PG_SHAPE(2, 4), 1, 2, 3, 4, 5, 6, 7, 8);
    pg_tensor *y1 = pg_scatter_add(NULL, x1, -1, i1, s1);
    ASSERT_VALUES(y1, 0, 4, 1, 4, 1, 19, 1);
    ASSERT_VALUES(x1, 0, 1, 1, 1, 1, 1, 1); /* x itself is untouched */
    pg_tensor *ts[] = {x, idx, src, y, x1, i1, s1, y1};
    free_all(8, ts);
}

Test(index, other_dtypes)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *ix = TI64(PG_SHAPE(2, 3), 10, 11, 12, 13, 14, INT64_MIN);
    pg_tensor *bx = TBOOL(PG_SHAPE(2, 3), 1, 0, 0, 0, 1, 1);
    pg_tensor *fx = T32(PG_SHAPE(2, 3), 0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f);
    pg_tensor *col = TI64(PG_SHAPE(2, 2), 2, 0, 1, 2), *rows = TI64(PG_SHAPE(3), 1, 1, 0);
    pg_tensor *gi = pg_gather(g, ix, 1, col);
    cr_assert_eq(gi->dtype, PG_I64);
    ASSERT_VALUES(gi, 0, 12, 10, 14, (double)INT64_MIN);
    cr_assert_eq(pg_i64(gi)[3], INT64_MIN, "i64 moves exactly");
    ASSERT_VALUES(pg_gather(g, bx, 1, col), 0, 0, 1, 1, 1);
    ASSERT_VALUES(pg_gather(g, fx, 1, col), 0, 2.5, 0.5, 4.5, 5.5);
    ASSERT_VALUES(pg_index_select(g, bx, 0, rows), 0, 0, 1, 1, 0, 1, 1, 1, 0, 0);
    ASSERT_VALUES(pg_embedding(g, ix, rows), 0, 13, 14, (double)INT64_MIN, 13, 14, (double)INT64_MIN, 10, 11, 12);
    pg_tensor *isrc = TI64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    ASSERT_VALUES(pg_scatter_add(g, ix, 1, col, isrc), 0, 12, 11, 13, 13, 17, INT64_MIN + 4.0);
    ASSERT_VALUES(pg_scatter_add(g, fx, 1, col, pg_cast(g, isrc, PG_F32)), 0, 2.5, 1.5, 3.5, 3.5, 7.5, 9.5);
    cr_assert_eq(pg_graph_num_nodes(g), 0, "nothing needs grad, nothing recorded");
    pg_graph_free(g);
    pg_tensor *ts[] = {ix, bx, fx, col, rows, isrc};
    free_all(6, ts);
}

/* ---- gradients --------------------------------------------------------------------------- */

Test(index, repeated_indices_accumulate)
{
    /* gather: x[0] picked 3 times along axis 0 in column 0; scatter_add: d/dsrc
     * reads the upstream gradient at each target, d/dx is the identity */
    pg_tensor *x = T64(PG_SHAPE(2, 2), 1, 2, 3, 4), *src = T64(PG_SHAPE(3, 1), 5, 6, 7);
    x->requires_grad = src->requires_grad = true;
    pg_tensor *idx = TI64(PG_SHAPE(3, 1), 0, 0, 0), *idx2 = TI64(PG_SHAPE(3, 1), 1, 0, 1);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_gather(g, x, 0, idx);
    ASSERT_VALUES(y, 0, 1, 1, 1);
    pg_tensor *up1 = T64(PG_SHAPE(3, 1), 1, 10, 100);
    cr_assert_eq(pg_backward_with(g, y, up1), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 111, 0, 0, 0);
    pg_zero_grad(x);
    pg_tensor *s = pg_scatter_add(g, pg_full(g, PG_F64, PG_SHAPE(2, 1), 0), 0, idx2, src);
    ASSERT_VALUES(s, 0, 6, 12);
    pg_tensor *up = T64(PG_SHAPE(2, 1), 2, 3);
    cr_assert_eq(pg_backward_with(g, s, up), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(src->grad, 0, 3, 2, 3);
    ASSERT_VALUES(x->grad, 0, 0, 0, 0, 0); /* the scatter does not involve x */
    pg_tensor *sel = TI64(PG_SHAPE(3), 1, 1, 1);
    pg_tensor *si = pg_index_select(g, x, 1, sel);
    ASSERT_VALUES(si, 0, 2, 2, 2, 4, 4, 4);
    cr_assert_eq(pg_backward_with(g, si, pg_ones(g, PG_F64, PG_SHAPE(2, 3))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 0, 3, 0, 3);
    pg_graph_free(g);
    pg_tensor *ts[] = {x, src, idx, idx2, up, up1, sel};
    free_all(7, ts);
}

typedef struct index_case {
    const char *name;
    int kind; /* 0 gather, 1 index_select, 2 embedding, 3 scatter_add */
    int axis;
} index_case;

/* in: x (or table), index, [src] */
static pg_tensor *call_index(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const index_case *k = ctx;
    switch (k->kind) {
    case 0: return pg_gather(g, in[0], k->axis, in[1]);
    case 1: return pg_index_select(g, in[0], k->axis, in[1]);
    case 2: return pg_embedding(g, in[0], in[1]);
    default: return pg_scatter_add(g, in[0], k->axis, in[1], in[2]);
    }
}

/* a heap i64 tensor of the given shape with entries (i * 7 + 3) % size: repeats when numel > size */
static pg_tensor *index_tensor(int ndim, const int64_t *shape, int64_t size)
{
    pg_tensor *t = pg_tensor_empty(NULL, PG_I64, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++)
        pg_i64(t)[i] = (i * 7 + 3) % size;
    return t;
}

static void check_case(const index_case *k, pg_tensor *x, pg_tensor *index, pg_tensor *src)
{
    pg_tensor *in[3] = {x, index, src};
    pg_gradcheck_result r = pg_gradcheck(call_index, src ? 3 : 2, in, (void *)k, NULL);
    cr_expect(r.ok, "%s: %s", k->name, r.message);
    cr_expect_eq(r.checked, x->numel + (src ? src->numel : 0), "%s checked %d", k->name, r.checked);
    free_all(src ? 3 : 2, in);
}

Test(index, gradcheck_gather_each_axis)
{
    /* x (3, 4, 5); index smaller than x off the axis, longer along it (repeats) */
    for (int axis = 0; axis < 3; axis++) {
        int64_t ishape[3] = {2, 3, 4};
        ishape[axis] = 6;
        pg_tensor *x = rand_param(PG_SHAPE(3, 4, 5), -1, 1, 11 + (uint64_t)axis);
        index_case k = {axis == 0 ? "gather axis 0" : axis == 1 ? "gather axis 1" : "gather axis 2", 0, axis};
        check_case(&k, x, index_tensor(3, ishape, x->shape[axis]), NULL);
    }
    index_case neg = {"gather axis -1", 0, -1};
    check_case(&neg, rand_param(PG_SHAPE(3, 5), -1, 1, 3), index_tensor(PG_SHAPE(3, 7), 5), NULL);
}

Test(index, gradcheck_index_select_and_embedding)
{
    for (int axis = 0; axis < 3; axis++) {
        pg_tensor *x = rand_param(PG_SHAPE(3, 4, 5), -1, 1, 21 + (uint64_t)axis);
        index_case k = {"index_select", 1, axis - 3};
        check_case(&k, x, index_tensor(PG_SHAPE(7), x->shape[axis]), NULL);
    }
    index_case e = {"embedding, repeated ids", 2, 0};
    check_case(&e, rand_param(PG_SHAPE(5, 3), -1, 1, 31), index_tensor(PG_SHAPE(2, 4), 5), NULL);
}

Test(index, gradcheck_scatter_add)
{
    /* index (2, 3, 4) with repeats, src (3, 3, 5) larger than it, x (3, 4, 5) */
    for (int axis = 0; axis < 3; axis++) {
        pg_tensor *x = rand_param(PG_SHAPE(3, 4, 5), -1, 1, 41 + (uint64_t)axis);
        pg_tensor *src = rand_param(PG_SHAPE(3, 3, 5), -1, 1, 51 + (uint64_t)axis);
        index_case k = {axis == 0 ? "scatter_add axis 0" : axis == 1 ? "scatter_add axis 1" : "scatter_add axis 2", 3,
                        axis};
        check_case(&k, x, index_tensor(PG_SHAPE(2, 3, 4), x->shape[axis]), src);
    }
}

/* ---- bad input --------------------------------------------------------------------------- */

Test(index, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = arange_f64(PG_SHAPE(3, 4)), *table = arange_f64(PG_SHAPE(5, 2));
    pg_tensor *ok = TI64(PG_SHAPE(2, 2), 0, 1, 2, 0), *big = TI64(PG_SHAPE(2, 2), 0, 1, 4, 0);
    pg_tensor *neg = TI64(PG_SHAPE(2, 2), 0, -1, 1, 0), *fidx = T64(PG_SHAPE(2, 2), 0, 1, 1, 0);
    pg_tensor *wide = TI64(PG_SHAPE(2, 5), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), *flat = TI64(PG_SHAPE(3), 0, 1, 7);
    pg_tensor *ids = TI64(PG_SHAPE(2), 1, 7), *src = T64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    pg_tensor *src32 = T32(PG_SHAPE(2, 2), 1, 2, 3, 4), *bx = TBOOL(PG_SHAPE(3, 4), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    pg_tensor *small = T64(PG_SHAPE(2, 1), 1, 2);

    ASSERT_FAILS(pg_gather(g, NULL, 0, ok), "pg_gather: x is NULL");
    ASSERT_FAILS(pg_gather(g, x, 0, NULL), "pg_gather: index is NULL");
    ASSERT_FAILS(pg_gather(g, x, 0, fidx), "pg_gather: index must be i64, got f64[2,2]");
    ASSERT_FAILS(pg_gather(g, x, 1, big), "pg_gather: index 4 out of range for axis 1 of size 4");
    ASSERT_FAILS(pg_gather(g, x, 0, neg), "pg_gather: index -1 out of range for axis 0 of size 3");
    ASSERT_FAILS(pg_gather(g, x, 2, ok), "pg_gather: axis 2 out of range for a tensor of 2 dims");
    ASSERT_FAILS(pg_gather(g, x, 1, flat), "pg_gather: index i64[3] must have the 2 dims of x f64[3,4]");
    ASSERT_FAILS(pg_gather(g, x, 0, wide), "pg_gather: index i64[2,5] is larger than x f64[3,4] in dim 1");

    ASSERT_FAILS(pg_index_select(g, NULL, 0, flat), "pg_index_select: x is NULL");
    ASSERT_FAILS(pg_index_select(g, x, 0, NULL), "pg_index_select: index is NULL");
    ASSERT_FAILS(pg_index_select(g, x, 0, ok), "pg_index_select: index must be 1-D i64, got i64[2,2]");
    ASSERT_FAILS(pg_index_select(g, x, 1, fidx), "pg_index_select: index must be 1-D i64, got f64[2,2]");
    ASSERT_FAILS(pg_index_select(g, x, 1, flat), "pg_index_select: index 7 out of range for axis 1 of size 4");
    ASSERT_FAILS(pg_index_select(g, x, -3, flat), "pg_index_select: axis -3 out of range");

    ASSERT_FAILS(pg_embedding(g, NULL, ids), "pg_embedding: table is NULL");
    ASSERT_FAILS(pg_embedding(g, table, NULL), "pg_embedding: ids is NULL");
    ASSERT_FAILS(pg_embedding(g, table, ids), "pg_embedding: id 7 out of range for a table of 5 rows");
    ASSERT_FAILS(pg_embedding(g, table, neg), "pg_embedding: id -1 out of range for a table of 5 rows");
    ASSERT_FAILS(pg_embedding(g, table, fidx), "pg_embedding: ids must be i64 with at most 7 dims, got f64[2,2]");
    ASSERT_FAILS(pg_embedding(g, flat, ids), "pg_embedding: table must be 2-D (V, D), got i64[3]");

    ASSERT_FAILS(pg_scatter_add(g, NULL, 0, ok, src), "pg_scatter_add: x is NULL");
    ASSERT_FAILS(pg_scatter_add(g, x, 0, NULL, src), "pg_scatter_add: index is NULL");
    ASSERT_FAILS(pg_scatter_add(g, x, 0, ok, NULL), "pg_scatter_add: src is NULL");
    ASSERT_FAILS(pg_scatter_add(g, x, 0, ok, src32),
                 "pg_scatter_add: x and src must share a dtype of f32, f64 or i64: x is f64[3,4], src is f32[2,2]");
    ASSERT_FAILS(pg_scatter_add(g, bx, 0, ok, bx), "x and src must share a dtype of f32, f64 or i64: x is bool[3,4]");
    ASSERT_FAILS(pg_scatter_add(g, x, 0, fidx, src), "pg_scatter_add: index must be i64, got f64[2,2]");
    ASSERT_FAILS(pg_scatter_add(g, x, 1, big, src), "pg_scatter_add: index 4 out of range for axis 1 of size 4");
    ASSERT_FAILS(pg_scatter_add(g, x, 0, neg, src), "pg_scatter_add: index -1 out of range for axis 0 of size 3");
    ASSERT_FAILS(pg_scatter_add(g, x, 0, ok, small), "pg_scatter_add: index i64[2,2] is larger than src f64[2,1] in dim 1");
    ASSERT_FAILS(pg_scatter_add(g, x, 0, flat, src), "pg_scatter_add: index i64[3] must have the 2 dims of x f64[3,4] and src f64[2,2]");
    cr_assert_str_eq(pg_graph_error(g), "pg_gather: x is NULL", "the graph keeps the first error");

    pg_tensor *ts[] = {x, table, ok, big, neg, fidx, wide, flat, ids, src, src32, bx, small};
    free_all(13, ts);
    pg_graph_free(g);
}

/* gather's rows on the thread pool: (400, 3, 50) from x (400, 3, 60) along the last axis
 * (forward and the scatter-add backward split by rows) and (40, 3, 60) along axis 0 (the
 * backward in one task: rows share x's rows), repeated indices; values against a naive
 * loop, 1 and 3 threads bit for bit */
Test(index, gather_rows_on_the_pool)
{
    int saved = pg_num_threads();
    for (int axis = 2; axis >= 0; axis -= 2) {
        pg_tensor *res[2][2];
        for (int run = 0; run < 2; run++) {
            cr_assert_eq(pg_set_num_threads(run == 0 ? 1 : 3), 0);
            pg_rng r = pg_rng_init(21);
            pg_tensor *x = pg_randn(NULL, PG_F64, PG_SHAPE(400, 3, 60), &r);
            pg_set_requires_grad(x, true);
            int64_t ishape[3] = {axis == 2 ? 400 : 40, 3, axis == 2 ? 50 : 60}, size = axis == 2 ? 60 : 400;
            pg_tensor *idx = pg_empty(NULL, PG_I64, 3, ishape);
            for (int64_t i = 0; i < idx->numel; i++)
                pg_i64(idx)[i] = (i * 7919) % (size / 2); /* repeats */
            pg_graph *g = pg_graph_new();
            pg_tensor *y = pg_gather(g, x, axis, idx);
            cr_assert(y, "%s", pg_graph_error(g));
            pg_tensor *w = pg_randn(g, PG_F64, 3, ishape, &r);
            cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, y, w), 0, NULL, false)), 0);
            pg_tensor *expect = pg_zeros(NULL, PG_F64, PG_SHAPE(400, 3, 60));
            for (int64_t a = 0; a < ishape[0]; a++)
                for (int64_t b = 0; b < 3; b++)
                    for (int64_t c = 0; c < ishape[2]; c++) {
                        int64_t i = (a * 3 + b) * ishape[2] + c, k = pg_i64(idx)[i];
                        int64_t at = axis == 2 ? (a * 3 + b) * 60 + k : (k * 3 + b) * 60 + c;
                        cr_assert_eq(pg_f64(y)[i], pg_f64(x)[at]);
                        pg_f64(expect)[at] += pg_f64(w)[i];
                    }
            assert_close(x->grad, expect, 1e-12, "gather gradient");
            res[run][0] = pg_copy(NULL, y);
            res[run][1] = pg_copy(NULL, x->grad);
            pg_graph_free(g);
            pg_tensor *ts[] = {x, idx, expect};
            free_all(3, ts);
        }
        for (int k = 0; k < 2; k++)
            cr_assert_eq(memcmp(res[0][k]->data, res[1][k]->data, (size_t)res[0][k]->numel * sizeof(double)), 0,
                         "axis %d: 1 and 3 threads differ (%s)", axis, k ? "gradient" : "values");
        free_all(2, res[0]);
        free_all(2, res[1]);
    }
    cr_assert_eq(pg_set_num_threads(saved), 0);
}
