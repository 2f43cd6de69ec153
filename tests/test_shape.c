/* Shape ops: permute, transpose, slice, narrow, concat, stack, pad.
 * Forward values computed by hand or with PyTorch 1.13 (the expression is in
 * a comment beside them), f64 gradchecks on odd shapes for every variant,
 * i64 and bool data, bad input. */
#include "testutil.h"

/* a heap f64 tensor holding 0, 1, 2, ... */
static pg_tensor *arange_f64(int ndim, const int64_t *shape)
{
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, ndim, shape);
    pg_fill_arange(t, 0, 1);
    return t;
}

/* ---- forward values ------------------------------------------------------------------ */

Test(shape, permute_values)
{
    pg_tensor *x = arange_f64(PG_SHAPE(2, 3, 4));
    pg_tensor *y = pg_permute(NULL, x, (const int[]){2, 0, 1});
    assert_shape(y, PG_SHAPE(4, 2, 3));
    /* torch.arange(24.).reshape(2,3,4).permute(2,0,1).flatten() */
    ASSERT_VALUES(y, 0, 0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21, 2, 6, 10, 14, 18, 22, 3, 7, 11, 15, 19, 23);
    pg_tensor *z = pg_permute(NULL, x, (const int[]){-1, -3, -2}); /* negative entries: the same perm */
    ASSERT_VALUES(z, 0, 0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21, 2, 6, 10, 14, 18, 22, 3, 7, 11, 15, 19, 23);
    pg_tensor *id = pg_permute(NULL, x, (const int[]){0, 1, 2});
    cr_assert_eq(memcmp(id->data, x->data, 24 * sizeof(double)), 0, "identity permutation copies");
    pg_tensor *s = pg_tensor_full(NULL, PG_F64, 0, NULL, 3.5);
    pg_tensor *ps = pg_permute(NULL, s, NULL); /* a scalar has nothing to permute */
    assert_shape(ps, 0, NULL);
    ASSERT_VALUES(ps, 0, 3.5);
    pg_tensor *ts[] = {x, y, z, id, s, ps};
    free_all(6, ts);
}

/* reference permute by explicit index arithmetic over every output element */
static void naive_permute(const pg_tensor *x, const int *perm, double *out)
{
    int nd = x->ndim;
    int64_t xs[PG_MAX_DIMS], oshape[PG_MAX_DIMS], idx[PG_MAX_DIMS] = {0};
    xs[nd - 1] = 1;
    for (int d = nd - 2; d >= 0; d--)
        xs[d] = xs[d + 1] * x->shape[d + 1];
    for (int d = 0; d < nd; d++)
        oshape[d] = x->shape[perm[d]];
    for (int64_t i = 0; i < x->numel; i++) {
        int64_t rem = i, off = 0;
        for (int d = nd - 1; d >= 0; d--) {
            idx[d] = rem % oshape[d];
            rem /= oshape[d];
        }
        for (int d = 0; d < nd; d++)
            off += idx[d] * xs[perm[d]];
        out[i] = pg_get(x, off);
    }
}

Test(shape, permute_paths_match_reference)
{
    /* every kernel path: rows copied whole (last axis kept), tiled transposes
     * larger than a tile, size-1 dims, and every dtype; the last five large enough for
     * slices on 2 threads, in blocks of columns or rows (FIRE's (B, L, L, H) -> (B, H, L, L)
     * and back) */
    struct {
        int ndim;
        int64_t shape[4];
        int perm[4];
    } cases[] = {
        {4, {3, 5, 7, 9}, {0, 2, 1, 3}}, {4, {3, 5, 7, 9}, {3, 2, 1, 0}}, {4, {2, 3, 4, 5}, {1, 3, 0, 2}},
        {3, {2, 40, 70}, {0, 2, 1}},     {2, {33, 65}, {1, 0}},           {4, {1, 6, 1, 5}, {3, 1, 2, 0}},
        {3, {4, 1, 37}, {2, 1, 0}},      {4, {2, 3, 4, 5}, {2, 3, 0, 1}},
        {4, {2, 128, 100, 8}, {0, 3, 1, 2}}, {4, {6, 50, 40, 30}, {1, 0, 2, 3}}, {3, {70, 60, 50}, {2, 0, 1}},
        {3, {4, 6, 5000}, {1, 0, 2}},        {4, {2, 4, 128, 100}, {0, 2, 3, 1}},
    };
    int threads = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(2), 0);
    pg_dtype dtypes[] = {PG_F64, PG_F32, PG_I64, PG_BOOL};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t k = 0; k < 4; k++) {
            pg_tensor *x64 = arange_f64(cases[c].ndim, cases[c].shape);
            for (int64_t i = 0; i < x64->numel; i++)
                pg_set(x64, i, dtypes[k] == PG_BOOL ? (double)(i % 3 == 0) : (double)(i % 1000));
            pg_tensor *x = pg_tensor_cast(NULL, x64, dtypes[k]);
            pg_tensor *y = pg_permute(NULL, x, cases[c].perm);
            cr_assert_not_null(y, "%s", pg_last_error());
            cr_assert_eq(y->dtype, dtypes[k]);
            double *ref = malloc((size_t)x->numel * sizeof *ref);
            naive_permute(x, cases[c].perm, ref);
            for (int64_t i = 0; i < x->numel; i++)
                cr_assert_eq(pg_get(y, i), ref[i], "case %zu dtype %s element %lld", c, pg_dtype_name(dtypes[k]),
                             (long long)i);
            free(ref);
            pg_tensor *ts[] = {x64, x, y};
            free_all(3, ts);
        }
    pg_set_num_threads(threads);
}

Test(shape, transpose_values)
{
    pg_tensor *x = T64(PG_SHAPE(2, 3), 0, 1, 2, 3, 4, 5);
    pg_tensor *y = pg_transpose(NULL, x, 0, 1), *z = pg_transpose(NULL, x, -1, -2), *w = pg_transpose(NULL, x, 1, 1);
    assert_shape(y, PG_SHAPE(3, 2));
    ASSERT_VALUES(y, 0, 0, 3, 1, 4, 2, 5); /* by hand */
    ASSERT_VALUES(z, 0, 0, 3, 1, 4, 2, 5);
    assert_shape(w, PG_SHAPE(2, 3));
    ASSERT_VALUES(w, 0, 0, 1, 2, 3, 4, 5);
    pg_tensor *ts[] = {x, y, z, w};
    free_all(4, ts);
}

Test(shape, slice_values)
{
    pg_tensor *x = arange_f64(PG_SHAPE(10));
    pg_tensor *a = pg_slice(NULL, x, 0, 1, 8, 2);        /* x[1:8:2] */
    pg_tensor *b = pg_slice(NULL, x, 0, -3, 100, 1);     /* x[-3:100] */
    pg_tensor *c = pg_slice(NULL, x, -1, -100, -7, 2);   /* x[-100:-7:2] */
    pg_tensor *d = pg_slice(NULL, x, 0, 5, 2, 1);        /* x[5:2]: empty */
    pg_tensor *e = pg_slice(NULL, x, 0, 0, INT64_MAX, 4); /* x[::4] */
    pg_tensor *f = pg_slice(NULL, x, 0, 9, 10, INT64_MAX);
    ASSERT_VALUES(a, 0, 1, 3, 5, 7);
    ASSERT_VALUES(b, 0, 7, 8, 9);
    ASSERT_VALUES(c, 0, 0, 2);
    assert_shape(d, PG_SHAPE(0));
    ASSERT_VALUES(e, 0, 0, 4, 8);
    ASSERT_VALUES(f, 0, 9);
    pg_tensor *m = arange_f64(PG_SHAPE(3, 4));
    pg_tensor *s1 = pg_slice(NULL, m, 1, -3, INT64_MAX, 2); /* torch: z[:, -3::2] */
    pg_tensor *s0 = pg_slice(NULL, m, 0, -100, -1, 2);      /* torch: z[-100:-1:2] */
    assert_shape(s1, PG_SHAPE(3, 2));
    ASSERT_VALUES(s1, 0, 1, 3, 5, 7, 9, 11);
    assert_shape(s0, PG_SHAPE(1, 4));
    ASSERT_VALUES(s0, 0, 0, 1, 2, 3);
    pg_tensor *ts[] = {x, a, b, c, d, e, f, m, s1, s0};
    free_all(10, ts);
}

Test(shape, narrow_values)
{
    pg_tensor *m = arange_f64(PG_SHAPE(3, 4));
    pg_tensor *a = pg_narrow(NULL, m, 1, 1, 2), *b = pg_narrow(NULL, m, 0, -2, 2), *c = pg_narrow(NULL, m, 1, 4, 0);
    assert_shape(a, PG_SHAPE(3, 2));
    ASSERT_VALUES(a, 0, 1, 2, 5, 6, 9, 10); /* by hand */
    ASSERT_VALUES(b, 0, 4, 5, 6, 7, 8, 9, 10, 11);
    assert_shape(c, PG_SHAPE(3, 0));
    pg_tensor *ts[] = {m, a, b, c};
    free_all(4, ts);
}

Test(shape, concat_values)
{
    pg_tensor *a = arange_f64(PG_SHAPE(2, 1, 2));
    pg_tensor *b = arange_f64(PG_SHAPE(2, 3, 2)), *c = arange_f64(PG_SHAPE(2, 2, 2));
    pg_fill_arange(b, 10, 1);
    pg_fill_arange(c, 100, 1);
    pg_tensor *y = pg_concat(NULL, 3, (pg_tensor *[]){a, b, c}, 1);
    pg_tensor *z = pg_concat(NULL, 3, (pg_tensor *[]){a, b, c}, -2);
    assert_shape(y, PG_SHAPE(2, 6, 2));
    /* torch.cat([arange(4.).reshape(2,1,2), arange(10.,22).reshape(2,3,2), arange(100.,108).reshape(2,2,2)], 1) */
    ASSERT_VALUES(y, 0, 0, 1, 10, 11, 12, 13, 14, 15, 100, 101, 102, 103, 2, 3, 16, 17, 18, 19, 20, 21, 104, 105,
                  106, 107);
    cr_assert_eq(memcmp(y->data, z->data, 24 * sizeof(double)), 0);
    pg_tensor *one = pg_concat(NULL, 1, &a, 0);
    ASSERT_VALUES(one, 0, 0, 1, 2, 3);
    pg_tensor *ts[] = {a, b, c, y, z, one};
    free_all(6, ts);
}

Test(shape, stack_values)
{
    pg_tensor *p = T64(PG_SHAPE(3, 2), 1, 2, 3, 4, 5, 6), *q = T64(PG_SHAPE(3, 2), 7, 8, 9, 10, 11, 12);
    pg_tensor *s0 = pg_stack(NULL, 2, (pg_tensor *[]){p, q}, 0);
    pg_tensor *s1 = pg_stack(NULL, 2, (pg_tensor *[]){p, q}, 1);
    pg_tensor *sl = pg_stack(NULL, 2, (pg_tensor *[]){p, q}, -1);
    assert_shape(s0, PG_SHAPE(2, 3, 2));
    assert_shape(s1, PG_SHAPE(3, 2, 2));
    assert_shape(sl, PG_SHAPE(3, 2, 2));
    /* torch.stack([p, q], 0 / 1 / -1).flatten() */
    ASSERT_VALUES(s0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    ASSERT_VALUES(s1, 0, 1, 2, 7, 8, 3, 4, 9, 10, 5, 6, 11, 12);
    ASSERT_VALUES(sl, 0, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 6, 12);
    pg_tensor *sc = pg_tensor_full(NULL, PG_F64, 0, NULL, 2.5);
    pg_tensor *ss = pg_stack(NULL, 3, (pg_tensor *[]){sc, sc, sc}, 0); /* scalars stack into a vector */
    assert_shape(ss, PG_SHAPE(3));
    ASSERT_VALUES(ss, 0, 2.5, 2.5, 2.5);
    pg_tensor *ts[] = {p, q, s0, s1, sl, sc, ss};
    free_all(7, ts);
}

Test(shape, pad_values)
{
    pg_tensor *p = T64(PG_SHAPE(3, 2), 1, 2, 3, 4, 5, 6);
    pg_tensor *a = pg_pad(NULL, p, 1, 1, 2, 9);  /* F.pad(p, (1, 2), value=9) */
    pg_tensor *b = pg_pad(NULL, p, 0, -1, 1, -1); /* F.pad(p, (0, 0, -1, 1), value=-1) */
    pg_tensor *c = pg_pad(NULL, p, -1, -1, 0, 0); /* F.pad(p, (-1, 0)) */
    pg_tensor *d = pg_pad(NULL, p, 0, -2, -1, 0); /* everything cropped */
    pg_tensor *e = pg_pad(NULL, p, 0, 0, 0, 0);
    assert_shape(a, PG_SHAPE(3, 5));
    ASSERT_VALUES(a, 0, 9, 1, 2, 9, 9, 9, 3, 4, 9, 9, 9, 5, 6, 9, 9);
    assert_shape(b, PG_SHAPE(3, 2));
    ASSERT_VALUES(b, 0, 3, 4, 5, 6, -1, -1);
    assert_shape(c, PG_SHAPE(3, 1));
    ASSERT_VALUES(c, 0, 2, 4, 6);
    assert_shape(d, PG_SHAPE(0, 2));
    ASSERT_VALUES(e, 0, 1, 2, 3, 4, 5, 6);
    pg_tensor *ts[] = {p, a, b, c, d, e};
    free_all(6, ts);
}

Test(shape, i64_and_bool_data)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *ix = TI64(PG_SHAPE(2, 3), 1, -2, 3, 4, 5, INT64_MAX);
    pg_tensor *bx = TBOOL(PG_SHAPE(2, 3), 1, 0, 0, 1, 1, 0);
    ix->requires_grad = bx->requires_grad = false;
    pg_tensor *t = pg_transpose(g, ix, 0, 1);
    cr_assert_eq(t->dtype, PG_I64);
    cr_assert_eq(pg_i64(t)[5], INT64_MAX, "i64 is copied exactly");
    ASSERT_VALUES(pg_permute(g, bx, (const int[]){1, 0}), 0, 1, 1, 0, 1, 0, 0);
    ASSERT_VALUES(pg_slice(g, ix, 1, -1, 3, 1), 0, 3, (double)INT64_MAX);
    ASSERT_VALUES(pg_slice(g, bx, 1, 0, 3, 2), 0, 1, 0, 1, 0);
    ASSERT_VALUES(pg_narrow(g, bx, 0, 1, 1), 0, 1, 1, 0);
    pg_tensor *ci = pg_concat(g, 2, (pg_tensor *[]){ix, ix}, 0);
    assert_shape(ci, PG_SHAPE(4, 3));
    cr_assert_eq(pg_i64(ci)[11], INT64_MAX);
    ASSERT_VALUES(pg_stack(g, 2, (pg_tensor *[]){bx, bx}, -1), 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0);
    ASSERT_VALUES(pg_pad(g, ix, 1, 1, -2, 7.9), 0, 7, 1, 7, 4); /* i64 value truncates, as torch */
    ASSERT_VALUES(pg_pad(g, bx, 0, 0, 1, 2.0), 0, 1, 0, 0, 1, 1, 0, 1, 1, 1); /* nonzero pads true */
    cr_assert_eq(pg_graph_num_nodes(g), 0, "nothing recorded for non-float data");
    pg_graph_free(g);
    pg_tensor_free(ix);
    pg_tensor_free(bx);
}

/* ---- gradients ------------------------------------------------------------------------- */

typedef struct shape_case {
    const char *name;
    int kind; /* 0 permute, 1 transpose, 2 slice, 3 narrow, 4 concat, 5 stack, 6 pad */
    int axis, perm[4];
    int64_t a, b, c;
    double value;
} shape_case;

static pg_tensor *call_shape(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    const shape_case *k = ctx;
    switch (k->kind) {
    case 0: return pg_permute(g, in[0], k->perm);
    case 1: return pg_transpose(g, in[0], k->perm[0], k->perm[1]);
    case 2: return pg_slice(g, in[0], k->axis, k->a, k->b, k->c);
    case 3: return pg_narrow(g, in[0], k->axis, k->a, k->b);
    case 4: return pg_concat(g, n, in, k->axis);
    case 5: return pg_stack(g, n, in, k->axis);
    default: return pg_pad(g, in[0], k->axis, k->a, k->b, k->value);
    }
}

static void gradcheck_case(const shape_case *k, int n, int ndim, const int64_t *const *shapes)
{
    pg_tensor *in[4];
    for (int i = 0; i < n; i++)
        in[i] = rand_param(ndim, shapes[i], -1, 1, 7 + (uint64_t)i);
    pg_gradcheck_result r = pg_gradcheck(call_shape, n, in, (void *)k, NULL);
    cr_expect(r.ok, "%s: %s", k->name, r.message);
    cr_expect_gt(r.checked, 0, "%s checked nothing", k->name);
    free_all(n, in);
}

#define SHAPES(...) (const int64_t *const[]){__VA_ARGS__}
#define S(...) (const int64_t[]){__VA_ARGS__}

Test(shape, gradcheck_permute_transpose)
{
    shape_case p3 = {"permute 3-D", 0, 0, {2, 0, 1, 0}, 0, 0, 0, 0};
    shape_case p4 = {"permute 4-D", 0, 0, {1, 3, 0, 2}, 0, 0, 0, 0};
    shape_case p4k = {"permute 4-D last kept", 0, 0, {2, 0, 1, 3}, 0, 0, 0, 0};
    shape_case t = {"transpose", 1, 0, {-1, 0, 0, 0}, 0, 0, 0, 0};
    gradcheck_case(&p3, 1, 3, SHAPES(S(3, 2, 5)));
    gradcheck_case(&p4, 1, 4, SHAPES(S(2, 3, 1, 5)));
    gradcheck_case(&p4k, 1, 4, SHAPES(S(3, 2, 3, 5)));
    gradcheck_case(&t, 1, 3, SHAPES(S(3, 4, 5)));
}

Test(shape, gradcheck_slice_narrow)
{
    shape_case s2 = {"slice step 2, negative bounds", 2, 1, {0}, -6, -1, 2, 0};
    shape_case s3 = {"slice step 3 axis -1", 2, -1, {0}, 1, INT64_MAX, 3, 0};
    shape_case s1 = {"slice step 1 axis 0", 2, 0, {0}, -2, 100, 1, 0};
    shape_case nr = {"narrow", 3, 1, {0}, -4, 3, 0, 0};
    gradcheck_case(&s2, 1, 3, SHAPES(S(2, 7, 3)));
    gradcheck_case(&s3, 1, 3, SHAPES(S(2, 3, 7)));
    gradcheck_case(&s1, 1, 3, SHAPES(S(3, 2, 5)));
    gradcheck_case(&nr, 1, 3, SHAPES(S(2, 5, 3)));
}

Test(shape, gradcheck_concat_stack)
{
    shape_case c1 = {"concat middle axis", 4, 1, {0}, 0, 0, 0, 0};
    shape_case c0 = {"concat axis 0", 4, 0, {0}, 0, 0, 0, 0};
    shape_case s0 = {"stack axis 0", 5, 0, {0}, 0, 0, 0, 0};
    shape_case sl = {"stack axis -1", 5, -1, {0}, 0, 0, 0, 0};
    shape_case s1 = {"stack axis 1", 5, 1, {0}, 0, 0, 0, 0};
    gradcheck_case(&c1, 3, 3, SHAPES(S(2, 1, 3), S(2, 3, 3), S(2, 2, 3)));
    gradcheck_case(&c0, 2, 2, SHAPES(S(3, 5), S(1, 5)));
    gradcheck_case(&s0, 3, 2, SHAPES(S(3, 5), S(3, 5), S(3, 5)));
    gradcheck_case(&sl, 2, 2, SHAPES(S(3, 5), S(3, 5)));
    gradcheck_case(&s1, 3, 3, SHAPES(S(2, 3, 5), S(2, 3, 5), S(2, 3, 5)));
}

Test(shape, gradcheck_pad)
{
    shape_case both = {"pad both sides", 6, 1, {0}, 2, 1, 0, 0.5};
    shape_case neg = {"pad negative (crop)", 6, 0, {0}, -1, -2, 0, 0};
    shape_case mixed = {"pad crop before, pad after", 6, -1, {0}, -2, 3, 0, -1};
    gradcheck_case(&both, 1, 3, SHAPES(S(2, 3, 5)));
    gradcheck_case(&neg, 1, 3, SHAPES(S(5, 3, 2)));
    gradcheck_case(&mixed, 1, 3, SHAPES(S(2, 3, 5)));
}

Test(shape, repeated_inputs_accumulate)
{
    /* concat(x, x) and pad(transpose(x)) feeding a sum: d/dx = 2 + 1 everywhere
     * the padded copy keeps x, computed by hand */
    pg_tensor *x = T64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *c = pg_concat(g, 2, (pg_tensor *[]){x, x}, 0);
    pg_tensor *p = pg_pad(g, pg_transpose(g, x, 0, 1), 0, -1, 1, 5.0); /* keeps x[:, 1] */
    cr_assert_eq(pg_backward_with(g, c, pg_ones(g, PG_F64, PG_SHAPE(4, 2))), 0, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward_with(g, p, pg_ones(g, PG_F64, PG_SHAPE(2, 2))), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 2, 3, 2, 3);
    /* an input that needs no grad is skipped: it gets none */
    pg_tensor *k = T64(PG_SHAPE(1, 2), 7, 8);
    pg_tensor *ck = pg_concat(g, 2, (pg_tensor *[]){k, x}, 0);
    cr_assert_eq(pg_backward_with(g, ck, pg_full(g, PG_F64, PG_SHAPE(3, 2), 0.5)), 0, "%s", pg_graph_error(g));
    cr_assert_null(k->grad);
    ASSERT_VALUES(x->grad, 0, 2.5, 3.5, 2.5, 3.5);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(k);
}

Test(shape, f32_path)
{
    pg_tensor *x = T32(PG_SHAPE(2, 3), 0.5f, 1, 2, 3, 4, 5);
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_slice(g, pg_transpose(g, x, 0, 1), 0, 0, 3, 2);
    cr_assert_eq(y->dtype, PG_F32);
    ASSERT_VALUES(y, 0, 0.5, 3, 2, 5);
    cr_assert_eq(pg_backward_with(g, y, pg_full(g, PG_F32, PG_SHAPE(2, 2), 2.0)), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 0, 2, 0, 2, 2, 0, 2);
    pg_graph_free(g);
    pg_tensor_free(x);
}

/* ---- bad input ----------------------------------------------------------------------- */

Test(shape, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *x = arange_f64(PG_SHAPE(2, 3, 4)), *y = arange_f64(PG_SHAPE(2, 5, 4));
    pg_tensor *z = arange_f64(PG_SHAPE(2, 3, 5)), *f = pg_tensor_empty(NULL, PG_F32, PG_SHAPE(2, 3, 4));
    ASSERT_FAILS(pg_permute(g, NULL, (const int[]){0}), "pg_permute: x is NULL");
    ASSERT_FAILS(pg_permute(g, x, NULL), "pg_permute: perm is NULL for f64[2,3,4]");
    ASSERT_FAILS(pg_permute(g, x, (const int[]){0, 0, 1}),
                 "pg_permute: perm (0, 0, 1) is not a permutation of the 3 dims of f64[2,3,4]");
    ASSERT_FAILS(pg_permute(g, x, (const int[]){0, 1, 3}), "perm (0, 1, 3) is not a permutation");
    ASSERT_FAILS(pg_permute(g, x, (const int[]){0, 1, -4}), "perm (0, 1, -4) is not a permutation");
    ASSERT_FAILS(pg_transpose(g, x, 0, 3), "pg_transpose: axis 3 out of range for a tensor of 3 dims");
    ASSERT_FAILS(pg_transpose(g, NULL, 0, 1), "pg_transpose: x is NULL");
    ASSERT_FAILS(pg_slice(g, x, 1, 0, 3, 0), "pg_slice: step must be >= 1, got 0");
    ASSERT_FAILS(pg_slice(g, x, 1, 3, 0, -1), "pg_slice: step must be >= 1, got -1");
    ASSERT_FAILS(pg_slice(g, x, -4, 0, 1, 1), "pg_slice: axis -4 out of range for a tensor of 3 dims");
    ASSERT_FAILS(pg_slice(g, NULL, 0, 0, 1, 1), "pg_slice: x is NULL");
    ASSERT_FAILS(pg_narrow(g, x, 1, 2, 2), "pg_narrow: start 2, length 2 do not fit axis 1 of size 3 of f64[2,3,4]");
    ASSERT_FAILS(pg_narrow(g, x, 1, -4, 1), "pg_narrow: start -4, length 1 do not fit");
    ASSERT_FAILS(pg_narrow(g, x, 1, 0, -1), "pg_narrow: start 0, length -1 do not fit");
    ASSERT_FAILS(pg_concat(g, 0, (pg_tensor *[]){x}, 0), "pg_concat: need at least one tensor, got n = 0");
    ASSERT_FAILS(pg_concat(g, 2, NULL, 0), "pg_concat: need at least one tensor, got n = 2 and xs NULL");
    ASSERT_FAILS(pg_concat(g, 2, (pg_tensor *[]){x, NULL}, 0), "pg_concat: xs[1] is NULL");
    ASSERT_FAILS(pg_concat(g, 3, (pg_tensor *[]){x, y, z}, 1),
                 "pg_concat: shapes differ off axis 1: xs[0] is f64[2,3,4], xs[2] is f64[2,3,5]");
    ASSERT_FAILS(pg_concat(g, 2, (pg_tensor *[]){x, f}, 0), "pg_concat: dtypes differ: xs[0] is f64[2,3,4], xs[1] is f32[2,3,4]");
    ASSERT_FAILS(pg_concat(g, 2, (pg_tensor *[]){x, x}, 3), "pg_concat: axis 3 out of range");
    ASSERT_FAILS(pg_stack(g, 0, (pg_tensor *[]){x}, 0), "pg_stack: need at least one tensor, got n = 0");
    ASSERT_FAILS(pg_stack(g, 2, (pg_tensor *[]){x, y}, 0), "pg_stack: shapes differ: xs[0] is f64[2,3,4], xs[1] is f64[2,5,4]");
    ASSERT_FAILS(pg_stack(g, 2, (pg_tensor *[]){x, f}, 0), "pg_stack: dtypes differ");
    ASSERT_FAILS(pg_stack(g, 2, (pg_tensor *[]){x, x}, 4), "pg_stack: axis 4 out of range for a tensor of 4 dims");
    ASSERT_FAILS(pg_pad(g, x, 1, -2, -2, 0), "pg_pad: cannot pad axis 1 of f64[2,3,4] by (-2, -2)");
    ASSERT_FAILS(pg_pad(g, x, 1, -4, 5, 0), "pg_pad: cannot pad axis 1 of f64[2,3,4] by (-4, 5)");
    ASSERT_FAILS(pg_pad(g, NULL, 1, 1, 1, 0), "pg_pad: x is NULL");
    pg_tensor *ix = TI64(PG_SHAPE(2), 1, 2);
    ASSERT_FAILS(pg_pad(g, ix, 0, 1, 1, NAN), "pg_pad: value nan does not fit i64[2]");
    cr_assert_str_eq(pg_graph_error(g), "pg_permute: x is NULL", "the graph keeps the first error");
    pg_tensor *ts[] = {x, y, z, f, ix};
    free_all(5, ts);
    pg_graph_free(g);
}
