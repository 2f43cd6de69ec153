/* pg_split_heads / pg_merge_heads (autograd/op_heads.c): hand values, bit equality with
 * the narrow + reshape + permute (and permute + reshape) composites they replaced, forward
 * and gradients, fresh and accumulating gradients (q, k and v of one projection), 1 and 3
 * threads bit for bit, gradchecks, bad input. */
#include "testutil.h"

Test(heads, hand_values)
{
    /* x (1, 2, 6): row l = [10 l + c for c in 0..5]; offset 2, 2 heads of 2 channels:
     * head 0 = channels 2, 3; head 1 = channels 4, 5 */
    pg_tensor *x = T64(PG_SHAPE(1, 2, 6), 0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15);
    pg_tensor *y = pg_split_heads(NULL, x, 2, 2, 2);
    cr_assert(y, "%s", pg_last_error());
    cr_assert(y->ndim == 4 && y->shape[0] == 1 && y->shape[1] == 2 && y->shape[2] == 2 && y->shape[3] == 2);
    ASSERT_VALUES(y, 0, 2, 3, 12, 13, 4, 5, 14, 15);
    pg_tensor *m = pg_merge_heads(NULL, y); /* (1, 2, 4): channels 2..5 of each row */
    cr_assert(m && m->ndim == 3 && m->shape[2] == 4, "%s", pg_last_error());
    ASSERT_VALUES(m, 0, 2, 3, 4, 5, 12, 13, 14, 15);
    pg_tensor *ts[] = {x, y, m};
    free_all(3, ts);
}

/* the composites the ops replaced (nn/attention.c before) */
static pg_tensor *split_composite(pg_graph *g, pg_tensor *t, int64_t off, int64_t H, int64_t Dh)
{
    int64_t B = t->shape[0], L = t->shape[1];
    pg_tensor *s = pg_reshape(g, pg_narrow(g, t, 2, off, H * Dh), PG_SHAPE(B, L, H, Dh));
    return pg_permute(g, s, (const int[]){0, 2, 1, 3});
}

static pg_tensor *merge_composite(pg_graph *g, pg_tensor *o)
{
    int64_t B = o->shape[0], H = o->shape[1], L = o->shape[2], Dh = o->shape[3];
    return pg_reshape(g, pg_permute(g, o, (const int[]){0, 2, 1, 3}), PG_SHAPE(B, L, H * Dh));
}

/* attention's use: q, k, v of one (B, L, (H + 2 G) Dh) projection, each split, mixed,
 * merged; both ways, values and the projection's gradient bit for bit */
static pg_tensor *qkv_chain(pg_graph *g, pg_tensor *p, bool fused, int64_t H, int64_t G, int64_t Dh)
{
    pg_tensor *q = fused ? pg_split_heads(g, p, 0, H, Dh) : split_composite(g, p, 0, H, Dh);
    pg_tensor *k = fused ? pg_split_heads(g, p, H * Dh, G, Dh) : split_composite(g, p, H * Dh, G, Dh);
    pg_tensor *v = fused ? pg_split_heads(g, p, (H + G) * Dh, G, Dh) : split_composite(g, p, (H + G) * Dh, G, Dh);
    pg_tensor *o = pg_add(g, pg_mul(g, q, k), v); /* G = H here */
    return fused ? pg_merge_heads(g, o) : merge_composite(g, o);
}

static void assert_same_as_composites(pg_dtype dt, int threads)
{
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(threads), 0);
    enum { B = 3, L = 37, H = 4, Dh = 8 };
    pg_tensor *p[2];
    for (int k = 0; k < 2; k++) {
        pg_rng r = pg_rng_init(11);
        p[k] = pg_randn(NULL, dt, PG_SHAPE(B, L, 3 * H * Dh), &r);
        pg_set_requires_grad(p[k], true);
    }
    pg_graph *g = pg_graph_new();
    pg_rng ru = pg_rng_init(12);
    pg_tensor *up = pg_randn(g, dt, PG_SHAPE(B, L, H * Dh), &ru);
    pg_tensor *y0 = qkv_chain(g, p[0], true, H, H, Dh), *y1 = qkv_chain(g, p[1], false, H, H, Dh);
    cr_assert(y0 && y1, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward_with(g, y0, up), 0);
    cr_assert_eq(pg_backward_with(g, y1, up), 0);
    size_t es = pg_dtype_size(dt);
    cr_assert_eq(memcmp(y0->data, y1->data, (size_t)y0->numel * es), 0, "outputs differ");
    cr_assert_eq(memcmp(p[0]->grad->data, p[1]->grad->data, (size_t)p[0]->numel * es), 0,
                 "projection gradients differ (%s, %d threads, max %.3g)", pg_dtype_name(dt), threads,
                 max_err(p[0]->grad, p[1]->grad));
    pg_graph_free(g);
    free_all(2, p);
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

Test(heads, same_as_the_composites)
{
    for (int threads = 1; threads <= 3; threads += 2) {
        assert_same_as_composites(PG_F64, threads);
        assert_same_as_composites(PG_F32, threads);
    }
}

/* a split that covers only some columns: the others get exactly 0 (fresh), and a second
 * backward adds (not fresh) */
Test(heads, fresh_gradient_zeroes_other_columns)
{
    pg_rng r = pg_rng_init(3);
    pg_tensor *x = pg_randn(NULL, PG_F64, PG_SHAPE(2, 3, 10), &r);
    pg_set_requires_grad(x, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_split_heads(g, x, 3, 2, 2); /* columns 3..6 */
    cr_assert_eq(pg_backward(g, pg_sum(g, y, 0, NULL, false)), 0);
    for (int64_t i = 0; i < x->numel; i++) {
        int64_t c = i % 10;
        cr_assert_eq(pg_f64(x->grad)[i], c >= 3 && c < 7 ? 1.0 : 0.0, "grad[%lld] column %lld", (long long)i,
                     (long long)c);
    }
    pg_graph_reset(g);
    y = pg_split_heads(g, x, 3, 2, 2);
    cr_assert_eq(pg_backward(g, pg_sum(g, y, 0, NULL, false)), 0); /* x is a leaf: its grad accumulates */
    for (int64_t i = 0; i < x->numel; i++)
        cr_assert_eq(pg_f64(x->grad)[i], i % 10 >= 3 && i % 10 < 7 ? 2.0 : 0.0);
    pg_graph_free(g);
    pg_tensor_free(x);
}

/* Splits of one x recorded back to back go back as a group (op_heads.c): the first of
 * their backwards writes every split's columns and zeroes the rest. Each pattern below
 * against the composites, bit for bit, on gradient buffers in an arena full of NaN
 * (a column left unwritten shows): W = 12 columns, Dh = 2. */
enum { GROUP_B = 2, GROUP_L = 5, GROUP_W = 12 };
typedef enum group_pattern {
    GROUP_QKV,         /* three splits taking every column */
    GROUP_GAPS,        /* columns 0, 5, 6 and 11 taken by none */
    GROUP_ONE_UNUSED,  /* the last split reaches the loss through no path: its columns zero */
    GROUP_FIRST_ONLY,  /* only the first split reaches the loss */
    GROUP_OVERLAP,     /* two splits sharing columns 4..7: they add */
    GROUP_INTERRUPTED, /* an op recorded between the splits: two groups */
    GROUP_PATTERNS
} group_pattern;

static pg_tensor *split_either(pg_graph *g, pg_tensor *x, bool fused, int64_t off, int64_t H)
{
    return fused ? pg_split_heads(g, x, off, H, 2) : split_composite(g, x, off, H, 2);
}

/* x (B, L, W) in g -> a scalar through the pattern's splits */
static pg_tensor *group_chain(pg_graph *g, pg_tensor *x, bool fused, group_pattern pat)
{
    static const int64_t offs[GROUP_PATTERNS][3] = {{0, 4, 8}, {1, 7, 9}, {0, 4, 8}, {0, 4, 8}, {0, 4, 8}, {0, 4, 8}};
    pg_tensor *s[3];
    for (int i = 0; i < 3; i++) {
        int64_t off = pat == GROUP_OVERLAP && i == 1 ? 2 : offs[pat][i];
        s[i] = split_either(g, x, fused, off, pat == GROUP_GAPS && i == 0 ? 2 : pat == GROUP_GAPS ? 1 : 2);
        if (pat == GROUP_INTERRUPTED && i == 0)
            s[0] = pg_mul(g, s[0], s[0]);
    }
    /* sum s0^2 + sum s1^3 + sum s2: each split's gradient its own, over all its heads */
    pg_tensor *loss = pg_sum(g, pg_mul(g, s[0], s[0]), 0, NULL, false);
    if (pat != GROUP_FIRST_ONLY)
        loss = pg_add(g, loss, pg_sum(g, pg_mul(g, s[1], pg_mul(g, s[1], s[1])), 0, NULL, false));
    if (pat != GROUP_FIRST_ONLY && pat != GROUP_ONE_UNUSED)
        loss = pg_add(g, loss, pg_sum(g, s[2], 0, NULL, false));
    return loss;
}

/* the leaf p's gradient through x = 2 p (x in the graph: its gradient fresh, in the arena) */
static pg_tensor *group_grad(pg_graph *g, pg_tensor *p, bool fused, group_pattern pat, int passes)
{
    pg_graph_reset(g);
    pg_tensor *junk = pg_full(g, p->dtype, PG_SHAPE(1 << 16), NAN); /* the arena's memory, NaN */
    cr_assert(junk, "%s", pg_graph_error(g));
    pg_graph_reset(g);
    pg_zero_grad(p);
    pg_tensor *loss = group_chain(g, pg_mul_scalar(g, p, 2.0), fused, pat);
    cr_assert(loss, "%s", pg_graph_error(g));
    for (int k = 0; k < passes; k++) /* a second pass accumulates into the leaf */
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    return p->grad;
}

Test(heads, grouped_splits_same_as_the_composites)
{
    for (int dt = 0; dt < 2; dt++)
        for (int pat = 0; pat < GROUP_PATTERNS; pat++)
            for (int passes = 1; passes <= 2; passes++) {
                pg_dtype dtype = dt ? PG_F32 : PG_F64;
                pg_rng r = pg_rng_init(21);
                pg_tensor *p = pg_randn(NULL, dtype, PG_SHAPE(GROUP_B, GROUP_L, GROUP_W), &r);
                pg_set_requires_grad(p, true);
                pg_graph *g = pg_graph_new();
                pg_tensor *want = pg_copy(NULL, group_grad(g, p, false, (group_pattern)pat, passes));
                pg_tensor *got = group_grad(g, p, true, (group_pattern)pat, passes);
                cr_assert(want && got);
                for (int64_t i = 0; i < got->numel; i++)
                    cr_assert(pg_get(got, i) == pg_get(want, i), "%s, pattern %d, %d passes: grad[%lld] (column %lld) "
                              "%g, expected %g", pg_dtype_name(dtype), pat, passes, (long long)i,
                              (long long)(i % GROUP_W), pg_get(got, i), pg_get(want, i));
                pg_graph_free(g);
                pg_tensor_free(want);
                pg_tensor_free(p);
            }
}

static pg_tensor *split_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    /* two splits of one input (columns 1..4 and 5..10), mixed so each has its own gradient */
    pg_tensor *a = pg_split_heads(g, in[0], 1, 2, 2), *b = pg_split_heads(g, in[0], 5, 2, 3);
    return pg_add(g, pg_mul(g, a, a), pg_narrow(g, b, 3, 0, 2));
}

static pg_tensor *merge_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_mul(g, pg_merge_heads(g, in[0]), pg_merge_heads(g, in[0]));
}

Test(heads, gradcheck)
{
    pg_tensor *x = randt(PG_SHAPE(2, 3, 12), 1, true), *o = randt(PG_SHAPE(2, 3, 4, 2), 2, true);
    assert_gradcheck(split_fn, 1, &x, NULL, NULL);
    assert_gradcheck(merge_fn, 1, &o, NULL, NULL);
    pg_tensor *ts[] = {x, o};
    free_all(2, ts);
}

Test(heads, bad_input)
{
    pg_tensor *x = randt(PG_SHAPE(2, 3, 8), 1, false), *flat = randt(PG_SHAPE(2, 8), 2, false);
    ASSERT_FAILS(pg_split_heads(NULL, NULL, 0, 2, 4), "pg_split_heads: x is NULL");
    ASSERT_FAILS(pg_split_heads(NULL, x, 2, 2, 4), "pg_split_heads: x f64[2,3,8], offset 2, heads 2, head_dim 4");
    ASSERT_FAILS(pg_split_heads(NULL, x, -1, 1, 4), "offset -1");
    ASSERT_FAILS(pg_split_heads(NULL, x, 0, 0, 4), "heads 0");
    ASSERT_FAILS(pg_split_heads(NULL, x, 0, 1, 0), "head_dim 0");
    ASSERT_FAILS(pg_split_heads(NULL, x, 0, INT64_MAX, 4), "heads 9223372036854775807");
    ASSERT_FAILS(pg_split_heads(NULL, flat, 0, 2, 4), "x f64[2,8]");
    ASSERT_FAILS(pg_merge_heads(NULL, NULL), "pg_merge_heads: x is NULL");
    ASSERT_FAILS(pg_merge_heads(NULL, x), "pg_merge_heads: x is f64[2,3,8], expected (B, H, L, Dh)");
    pg_tensor *ts[] = {x, flat};
    free_all(2, ts);
}
