/* The graph and the tensor layer: creation, RNG, arena reuse, backward,
 * accumulation, no-grad, detach, reshape/copy/cast, custom ops, gradcheck,
 * and the error model. */
#include "testutil.h"

/* ---- creation and the tensor layer ------------------------------------------- */

Test(tensor, creation_values)
{
    pg_tensor *z = pg_zeros(NULL, PG_F32, PG_SHAPE(2, 3));
    assert_shape(z, PG_SHAPE(2, 3));
    ASSERT_VALUES(z, 0, 0, 0, 0, 0, 0, 0);
    pg_tensor *o = pg_ones(NULL, PG_F64, PG_SHAPE(2));
    ASSERT_VALUES(o, 0, 1, 1);
    pg_tensor *f = pg_full(NULL, PG_I64, PG_SHAPE(3), 7.9);
    ASSERT_VALUES(f, 0, 7, 7, 7);
    pg_tensor *ar = pg_arange(NULL, PG_I64, 2, 11, 3);
    ASSERT_VALUES(ar, 0, 2, 5, 8);
    pg_tensor *ard = pg_arange(NULL, PG_F64, 1, 0, -0.25);
    ASSERT_VALUES(ard, 0, 1, 0.75, 0.5, 0.25);
    pg_tensor *ls = pg_linspace(NULL, PG_F64, -1, 1, 5);
    ASSERT_VALUES(ls, 0, -1, -0.5, 0, 0.5, 1);
    pg_tensor *s = pg_zeros(NULL, PG_F64, 0, NULL); /* 0-dim scalar */
    cr_assert_eq(s->ndim, 0);
    cr_assert_eq(s->numel, 1);
    pg_tensor *e = pg_zeros(NULL, PG_F32, PG_SHAPE(0, 4)); /* empty */
    cr_assert_eq(e->numel, 0);
    pg_tensor *ts[] = {z, o, f, ar, ard, ls, s, e};
    free_all(8, ts);
}

Test(tensor, copy_cast_and_access)
{
    pg_tensor *a = T64(PG_SHAPE(2, 2), 1.5, -2.25, 3.0, 4.75);
    pg_tensor *b = pg_cast(NULL, a, PG_F32);
    cr_assert_eq(b->dtype, PG_F32);
    ASSERT_VALUES(b, 0, 1.5, -2.25, 3.0, 4.75);
    pg_tensor *c = pg_cast(NULL, a, PG_I64);
    ASSERT_VALUES(c, 0, 1, -2, 3, 4);
    pg_tensor *d = pg_copy(NULL, a);
    cr_assert_neq(d->data, a->data);
    ASSERT_VALUES(d, 0, 1.5, -2.25, 3.0, 4.75);
    cr_assert_null(pg_f32(a));
    cr_assert_not_null(pg_f64(a));
    cr_assert_eq(pg_f64(a)[3], 4.75);
    cr_assert(isnan(pg_item(a)));
    cr_assert(strstr(pg_last_error(), "pg_item: need exactly one element, got f64[2,2]"));
    char buf[64];
    cr_assert_str_eq(pg_shape_str(buf, sizeof buf, c), "i64[2,2]");
    pg_tensor *ts[] = {a, b, c, d};
    free_all(4, ts);
}

Test(tensor, rng_reproducible_and_distributed)
{
    pg_rng r1 = pg_rng_init(42), r2 = pg_rng_init(42);
    pg_tensor *a = pg_randn(NULL, PG_F64, PG_SHAPE(10000), &r1);
    pg_tensor *b = pg_randn(NULL, PG_F64, PG_SHAPE(10000), &r2);
    cr_assert_eq(memcmp(a->data, b->data, 10000 * sizeof(double)), 0, "same seed, same numbers");
    double m = 0, v = 0;
    for (int i = 0; i < 10000; i++)
        m += pg_f64(a)[i] / 10000;
    for (int i = 0; i < 10000; i++)
        v += (pg_f64(a)[i] - m) * (pg_f64(a)[i] - m) / 10000;
    cr_assert(fabs(m) < 0.05 && fabs(v - 1) < 0.05, "N(0,1): mean %g var %g", m, v);
    /* one fill of 10 equals ten single draws: the counter-based stream */
    pg_rng r3 = pg_rng_init(7), r4 = pg_rng_init(7);
    pg_tensor *u = pg_rand(NULL, PG_F64, PG_SHAPE(10), &r3);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(pg_f64(u)[i], pg_rng_uniform(&r4));
    cr_assert_eq(r3.counter, r4.counter);
    pg_tensor *bern = pg_bernoulli(NULL, PG_F32, PG_SHAPE(10000), 0.3, &r3);
    double kept = 0;
    for (int i = 0; i < 10000; i++)
        kept += pg_f32(bern)[i];
    cr_assert(fabs(kept / 10000 - 0.3) < 0.02, "bernoulli(0.3) gave %g", kept / 10000);
    /* uniform_at(i): draw i ahead without advancing, in any order; the bernoulli fill's rule */
    pg_rng r6 = pg_rng_init(9), r7 = pg_rng_init(9);
    pg_rng_next_u64(&r6), pg_rng_next_u64(&r7);
    pg_tensor *keep = pg_bernoulli(NULL, PG_F64, PG_SHAPE(64), 0.6, &r7);
    for (int i = 63; i >= 0; i--)
        cr_assert_eq(pg_f64(keep)[i], pg_rng_uniform_at(&r6, (uint64_t)i) < 0.6 ? 1.0 : 0.0, "element %d", i);
    cr_assert_eq(r6.counter, 1, "uniform_at does not advance");
    double us[70];
    pg_rng_uniforms_at(&r6, 5, 70, us);
    for (int i = 0; i < 70; i++)
        cr_assert_eq(us[i], pg_rng_uniform_at(&r6, 5 + (uint64_t)i), "uniforms_at %d", i);
    cr_assert_eq(pg_rng_uniform_at(&r6, 0), pg_rng_uniform(&r6));
    pg_tensor_free(keep);
    pg_rng r5 = pg_rng_init(43);
    cr_assert_neq(pg_rng_next_u64(&r5), pg_rng_next_u64(&r1), "different seeds differ");
    pg_tensor *ts[] = {a, b, u, bern};
    free_all(4, ts);
}

Test(tensor, bad_creation)
{
    ASSERT_FAILS(pg_zeros(NULL, PG_F32, PG_SHAPE(2, -1)), "pg_zeros: negative size -1 in dim 1 of shape [2,-1]");
    ASSERT_FAILS(pg_zeros(NULL, PG_F32, 9, (int64_t[9]){1, 1, 1, 1, 1, 1, 1, 1, 1}), "ndim 9 outside 0..8");
    ASSERT_FAILS(pg_zeros(NULL, (pg_dtype)17, PG_SHAPE(2)), "unknown dtype 17");
    ASSERT_FAILS(pg_zeros(NULL, PG_F32, PG_SHAPE(INT64_MAX / 2, 4)),
                 "pg_zeros: shape [4611686018427387903,4] of f32 is too large (more than 35184372088832 elements "
                 "of 4 bytes: a tensor holds at most PG_MAX_TENSOR_BYTES = 140737488355328 bytes)");
    ASSERT_FAILS(pg_arange(NULL, PG_F32, 0, 1, 0), "pg_arange: bad range");
    ASSERT_FAILS(pg_randn(NULL, PG_F32, PG_SHAPE(2), NULL), "pg_randn: generator is NULL");
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_bernoulli(NULL, PG_F32, PG_SHAPE(2), 1.5, &r), "pg_bernoulli: p = 1.5 outside [0, 1]");
    ASSERT_FAILS(pg_from_array(NULL, PG_F32, PG_SHAPE(2), NULL), "values is NULL");
    ASSERT_FAILS(pg_cast(NULL, NULL, PG_F32), "pg_cast: input is NULL");
}

/* ---- the graph ---------------------------------------------------------------- */

Test(graph, backward_accumulates_into_leaves)
{
    /* y = sum over elements of (w * x + w); dy/dw = x + 1 per element */
    pg_tensor *w = T64(PG_SHAPE(3), 1, 2, 3);
    pg_tensor *x = T64(PG_SHAPE(3), 4, 5, 6);
    w->requires_grad = true;
    pg_graph *g = pg_graph_new();
    for (int step = 1; step <= 2; step++) {
        pg_graph_reset(g);
        pg_tensor *y = pg_add(g, pg_mul(g, w, x), w);
        cr_assert(y->requires_grad);
        cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(3))), 0);
        /* leaves accumulate across backward calls until zeroed */
        ASSERT_VALUES(w->grad, 0, 5.0 * step, 6.0 * step, 7.0 * step);
        cr_assert_null(x->grad, "x does not require grad");
    }
    pg_zero_grad(w);
    ASSERT_VALUES(w->grad, 0, 0, 0, 0);
    pg_graph_free(g);
    pg_tensor_free(w);
    pg_tensor_free(x);
}

Test(graph, backward_twice_on_one_graph)
{
    /* intermediate grads restart from zero; leaves accumulate */
    pg_tensor *w = T64(PG_SHAPE(1), 3);
    w->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_square(g, pg_mul_scalar(g, w, 2)); /* (2w)^2, dy/dw = 8w = 24 */
    cr_assert_eq(pg_backward(g, y), 0);
    cr_assert_eq(pg_backward(g, y), 0);
    ASSERT_VALUES(w->grad, 0, 48);
    pg_graph_free(g);
    pg_tensor_free(w);
}

/* Backward again on the same graph (documented in graph.h): leaves add up the
 * gradient of each call (PyTorch's retain_graph=True), intermediate tensors
 * hold only the latest call's, and the tape is not consumed, so every call
 * computes the same gradient. Checked on a whole LM (attention, norms,
 * embedding, cross-entropy). */
Test(graph, backward_again_adds_to_leaves_only)
{
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 2);
    c.dtype = PG_F64;
    c.seed = 3;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_tensor *ids = TI64(PG_SHAPE(2, 5), 1, 2, 3, 4, 5, 6, 0, 1, 2, 3);
    pg_graph *g = pg_graph_new();
    pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor *once[64];
    cr_assert_lt(ps.n, 64);
    for (int i = 0; i < ps.n; i++)
        once[i] = pg_tensor_copy(NULL, ps.tensors[i]->grad);
    const pg_node *last = pg_graph_node(g, pg_graph_num_nodes(g) - 1);
    pg_tensor *logits_grad = pg_tensor_copy(NULL, last->in[0]->grad); /* an intermediate's */
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    for (int i = 0; i < ps.n; i++)
        for (int64_t j = 0; j < once[i]->numel; j++) {
            double a = pg_get(ps.tensors[i]->grad, j), b = pg_get(once[i], j);
            cr_assert(fabs(a - 2 * b) <= 1e-12 * (1 + fabs(b)), "%s[%lld]: %.17g after two calls, %.17g after one",
                      ps.names[i], (long long)j, a, b);
        }
    for (int64_t j = 0; j < logits_grad->numel; j++)
        cr_assert_eq(pg_get(last->in[0]->grad, j), pg_get(logits_grad, j), "intermediate grads restart");
    for (int i = 0; i < ps.n; i++)
        pg_tensor_free(once[i]);
    pg_tensor_free(logits_grad);
    pg_tensor_list_free(&ps);
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

/* Two losses of one graph, one backward each: the leaf gets the sum. */
Test(graph, backward_from_two_outputs_sums)
{
    pg_tensor *w = T64(PG_SHAPE(2), 3, -1);
    w->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_sum(g, w, 0, NULL, false), *b = pg_sum(g, pg_square(g, w), 0, NULL, false);
    cr_assert_eq(pg_backward(g, a), 0);
    cr_assert_eq(pg_backward(g, b), 0);
    ASSERT_VALUES(w->grad, 0, 1 + 2 * 3, 1 + 2 * -1); /* d(a + b)/dw = 1 + 2w */
    pg_graph_free(g);
    pg_tensor_free(w);
}

/* A loss made in another graph used to return 0 and compute nothing. */
Test(graph, backward_refuses_a_loss_of_another_graph)
{
    pg_tensor *w = T64(PG_SHAPE(2), 3, -1);
    w->requires_grad = true;
    pg_graph *g1 = pg_graph_new(), *g2 = pg_graph_new();
    pg_tensor *h = pg_mul_scalar(g1, w, 2);
    pg_tensor *loss = pg_sum(g1, pg_square(g1, h), 0, NULL, false);
    pg_tensor *other = pg_sum(g2, w, 0, NULL, false); /* g2 has a tape of its own */
    cr_assert(loss && other);
    cr_assert_eq(pg_backward(g2, loss), -1);
    cr_assert_str_eq(pg_graph_error(g2),
                     "pg_backward: output f64[] was not recorded on this graph (it belongs to another graph, or to "
                     "this one before its last reset): call backward on the graph that made it");
    cr_assert_null(w->grad, "nothing was computed");
    cr_assert_null(h->grad);
    pg_tensor *one = pg_ones(g2, PG_F64, 0, NULL);
    cr_assert_eq(pg_backward_with(g2, loss, one), -1);
    cr_assert(strstr(pg_last_error(), "pg_backward_with: output f64[] was not recorded on this graph"), "%s",
              pg_last_error());
    cr_assert_null(w->grad);
    /* an arena leaf of g1 is g1's too */
    pg_tensor *leaf = pg_ones(g1, PG_F64, 0, NULL);
    leaf->requires_grad = true;
    cr_assert_eq(pg_backward(g2, leaf), -1);
    /* on its own graph it works, and a heap leaf is anyone's (its gradient is the seed) */
    cr_assert_eq(pg_backward(g1, loss), 0, "%s", pg_graph_error(g1));
    ASSERT_VALUES(w->grad, 0, 8 * 3, 8 * -1);
    pg_tensor *s = T64(PG_SHAPE(1), 2);
    s->requires_grad = true;
    cr_assert_eq(pg_backward(g2, s), 0, "%s", pg_graph_error(g2));
    ASSERT_VALUES(s->grad, 0, 1);
    pg_tensor_free(s);
    pg_graph_free(g1);
    pg_graph_free(g2);
    pg_tensor_free(w);
}

Test(graph, diamond_and_scalar_loss)
{
    /* z = x*x + exp(x) uses x three times; dz/dx = 2x + e^x */
    pg_tensor *x = pg_from_array(NULL, PG_F64, 0, NULL, (double[]){0.5}); /* 0-dim */
    x->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *z = pg_add(g, pg_mul(g, x, x), pg_exp(g, x));
    cr_assert_eq(z->ndim, 0);
    cr_assert_eq(pg_backward(g, z), 0, "%s", pg_graph_error(g));
    ASSERT_VALUES(x->grad, 1e-15, 1.0 + exp(0.5));
    pg_graph_free(g);
    pg_tensor_free(x);
}

Test(graph, no_grad_and_detach)
{
    pg_tensor *w = T64(PG_SHAPE(2), 1, 2);
    w->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_no_grad_begin(g);
    pg_no_grad_begin(g);
    pg_no_grad_end(g);
    cr_assert(!pg_grad_enabled(g), "scopes nest");
    pg_tensor *y = pg_exp(g, w);
    cr_assert(!y->requires_grad);
    cr_assert_eq(pg_graph_num_nodes(g), 0);
    pg_no_grad_end(g);
    cr_assert(pg_grad_enabled(g));
    pg_tensor *d = pg_detach(g, w);
    cr_assert(!d->requires_grad);
    cr_assert_eq(d->data, w->data, "detach shares storage");
    pg_tensor *z = pg_add(g, pg_mul(g, d, w), w); /* dz/dw = d + 1 (d constant) */
    cr_assert_eq(pg_backward_with(g, z, pg_ones(g, PG_F64, PG_SHAPE(2))), 0);
    ASSERT_VALUES(w->grad, 0, 2, 3);
    cr_assert_eq(pg_backward(g, z), -1, "z has two elements");
    cr_assert(strstr(pg_graph_error(g), "pg_backward: loss must be one float element, got f64[2]"));
    pg_graph_free(g);
    pg_tensor_free(w);
}

Test(graph, reshape_shares_storage_and_backprops)
{
    pg_tensor *x = rand_param(PG_SHAPE(2, 3), -1, 1, 5);
    pg_graph *g = pg_graph_new();
    pg_tensor *r = pg_reshape(g, x, PG_SHAPE(3, -1));
    assert_shape(r, PG_SHAPE(3, 2));
    cr_assert_eq(r->data, x->data);
    pg_tensor *y = pg_mul(g, r, pg_from_array(g, PG_F64, PG_SHAPE(3, 2), (double[]){1, 2, 3, 4, 5, 6}));
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(3, 2))), 0);
    ASSERT_VALUES(x->grad, 0, 1, 2, 3, 4, 5, 6);
    ASSERT_FAILS(pg_reshape(g, x, PG_SHAPE(4, 2)), "pg_reshape: cannot reshape f64[2,3] to 2 dims");
    pg_graph_free(g);
    pg_tensor_free(x);
}

static pg_tensor *cast_roundtrip(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_dtype own = in[0]->dtype, other = own == PG_F64 ? PG_F32 : PG_F64;
    pg_tensor *there = pg_cast(g, pg_copy(g, pg_reshape(g, in[0], PG_SHAPE(5))), other);
    return pg_mul(g, pg_cast(g, there, own), in[1]);
}

Test(graph, gradcheck_copy_cast_reshape)
{
    pg_tensor *in[2] = {rand_param(PG_SHAPE(5, 1), -1, 1, 1), rand_param(PG_SHAPE(5), -1, 1, 2)};
    /* the f32 leg rounds: the function is linear in x, so a large eps is exact */
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.eps = 1e-2;
    o.atol = 1e-5;
    o.rtol = 1e-4;
    assert_gradcheck(cast_roundtrip, 2, in, NULL, &o);
    free_all(2, in);
}

Test(graph, training_loop_allocates_nothing_after_first_step)
{
    pg_rng r = pg_rng_init(3);
    pg_tensor *w = pg_randn(NULL, PG_F32, PG_SHAPE(64, 64), &r);
    pg_tensor *x = pg_randn(NULL, PG_F32, PG_SHAPE(64, 64), &r);
    w->requires_grad = true;
    pg_graph *g = pg_graph_new();
    size_t allocs_after_first = 0, cap_after_second = 0;
    for (int step = 0; step < 5; step++) {
        pg_graph_reset(g);
        pg_tensor *y = pg_tanh(g, pg_mul(g, pg_add(g, w, x), w));
        cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F32, PG_SHAPE(64, 64))), 0);
        if (step == 1) {
            allocs_after_first = pg_arena_chunk_allocs(pg_graph_arena(g));
            cap_after_second = pg_arena_capacity(pg_graph_arena(g));
        }
    }
    /* reset after step 0 may merge chunks once; from then on nothing new */
    cr_assert_eq(pg_arena_chunk_allocs(pg_graph_arena(g)), allocs_after_first);
    cr_assert_eq(pg_arena_capacity(pg_graph_arena(g)), cap_after_second);
    pg_graph_free(g);
    pg_tensor_free(w);
    pg_tensor_free(x);
}

Test(graph, arena_merges_chunks)
{
    pg_arena *a = pg_arena_new(0);
    for (int i = 0; i < 5; i++)
        cr_assert_not_null(pg_arena_alloc(a, 900000));
    size_t cap = pg_arena_capacity(a);
    pg_arena_reset(a);
    cr_assert_eq(pg_arena_capacity(a), cap, "one chunk as large as all of them");
    size_t allocs = pg_arena_chunk_allocs(a);
    for (int i = 0; i < 5; i++) {
        void *p = pg_arena_alloc(a, 900000);
        cr_assert_eq((uintptr_t)p % 64, 0, "64-byte aligned");
    }
    cr_assert_eq(pg_arena_chunk_allocs(a), allocs);
    pg_arena_free(a);
}

Test(graph, errors_first_kept_and_null_propagates)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_zeros(g, PG_F32, PG_SHAPE(4, 8));
    pg_tensor *b = pg_zeros(g, PG_F32, PG_SHAPE(16, 3));
    pg_tensor *c = pg_zeros(g, PG_F64, PG_SHAPE(4, 8));
    cr_assert_null(pg_add(g, a, b));
    cr_assert_str_eq(pg_graph_error(g), "pg_add: shapes do not broadcast: f32[4,8], f32[16,3]");
    /* a chain with a NULL in it ends in NULL; the first error stays */
    cr_assert_null(pg_exp(g, pg_add(g, a, c)));
    cr_assert_str_eq(pg_graph_error(g), "pg_add: shapes do not broadcast: f32[4,8], f32[16,3]");
    cr_assert(strstr(pg_last_error(), "pg_exp: x is NULL"));
    ASSERT_FAILS(pg_softmax(g, a, 2), "pg_softmax: axis 2 out of range for a tensor of 2 dims: x is f32[4,8]");
    pg_graph_reset(g);
    cr_assert_null(pg_graph_error(g), "reset clears the error");
    cr_assert_eq(pg_backward(g, NULL), -1);
    cr_assert_str_eq(pg_graph_error(g), "pg_backward: loss is NULL");
    pg_graph_reset(g);
    pg_tensor *x = pg_ones(g, PG_F32, PG_SHAPE(2));
    cr_assert_eq(pg_backward_with(g, x, x), -1);
    cr_assert(strstr(pg_graph_error(g), "does not require grad"));
    pg_graph_free(g);
    pg_graph_free(NULL);
    pg_tensor_free(NULL);
}

/* ---- custom ops ------------------------------------------------------------------ */

/* out = scale * x^3, a user op: d/dx = 3 scale x^2 */
typedef struct cube_ctx {
    double scale;
    bool wrong; /* a deliberately wrong backward */
} cube_ctx;

static int cube_forward(pg_tensor *out, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const cube_ctx *c = ctx;
    for (int64_t i = 0; i < out->numel; i++) {
        double x = pg_get(in[0], i);
        pg_set(out, i, c->scale * x * x * x);
    }
    return 0;
}

static int cube_backward(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                         pg_tensor *const *in, int n, void *ctx)
{
    (void)out, (void)n;
    const cube_ctx *c = ctx;
    for (int64_t i = 0; i < grad_out->numel; i++) {
        double x = pg_get(in[0], i);
        double d = (c->wrong ? 2.0 : 3.0) * c->scale * x * x;
        pg_set(grad_in[0], i, pg_get(grad_in[0], i) + pg_get(grad_out, i) * d);
    }
    return 0;
}

static const pg_custom_op CUBE = {.name = "cube", .forward = cube_forward, .backward = cube_backward};

static pg_tensor *cube_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_custom(g, &CUBE, 1, in, in[0]->ndim, in[0]->shape, ctx, sizeof(cube_ctx));
}

Test(custom, forward_backward_and_gradcheck)
{
    pg_tensor *x = T64(PG_SHAPE(3), -1, 0.5, 2);
    x->requires_grad = true;
    cube_ctx c = {2.0, false};
    pg_graph *g = pg_graph_new();
    pg_tensor *y = cube_fn(g, &x, 1, &c);
    ASSERT_VALUES(y, 1e-15, -2, 0.25, 16);
    cr_assert_str_eq(pg_graph_node(g, 0)->name, "cube");
    cr_assert_eq(pg_backward_with(g, y, pg_ones(g, PG_F64, PG_SHAPE(3))), 0);
    ASSERT_VALUES(x->grad, 1e-15, 6, 1.5, 24);
    pg_graph_free(g);
    pg_tensor_free(x->grad);
    x->grad = NULL;
    pg_tensor *x2 = rand_param(PG_SHAPE(2, 3), -1, 1, 9);
    assert_gradcheck(cube_fn, 1, &x2, &c, NULL);
    pg_tensor_free(x);
    pg_tensor_free(x2);
}

Test(custom, gradcheck_catches_a_wrong_backward)
{
    pg_tensor *x = rand_param(PG_SHAPE(4), 0.5, 1, 11);
    pg_tensor *keep = pg_full(NULL, PG_F64, PG_SHAPE(4), 9.0);
    x->grad = keep; /* the caller's grad survives gradcheck */
    cube_ctx c = {1.0, true};
    pg_gradcheck_result r = pg_gradcheck(cube_fn, 1, &x, &c, NULL);
    cr_assert(!r.ok);
    cr_assert_eq(r.worst_input, 0);
    cr_assert(fabs(r.worst_analytic / r.worst_numeric - 2.0 / 3.0) < 1e-6, "analytic %g numeric %g",
              r.worst_analytic, r.worst_numeric);
    cr_assert(strstr(r.message, "gradient mismatch at input 0"), "%s", r.message);
    cr_assert_eq(x->grad, keep);
    ASSERT_VALUES(x->grad, 0, 9, 9, 9, 9);
    pg_tensor_free(x);
}

Test(custom, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *ids = TI64(PG_SHAPE(2), 1, 2);
    ASSERT_FAILS(pg_custom(g, &CUBE, 1, &ids, PG_SHAPE(2), NULL, 0), "cube: needs a float input");
    pg_custom_op broken = {.name = "broken"};
    ASSERT_FAILS(pg_custom(g, &broken, 1, &ids, PG_SHAPE(2), NULL, 0), "op must have a name, forward and backward");
    pg_tensor *none = NULL;
    ASSERT_FAILS(pg_custom(g, &CUBE, 1, &none, PG_SHAPE(2), NULL, 0), "cube: input 0 is NULL");
    pg_tensor_free(ids);
    pg_graph_free(g);
}

/* ---- gradcheck itself -------------------------------------------------------------- */

static pg_tensor *tanh_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_tanh(g, in[0]);
}

Test(gradcheck, reports_and_rejects)
{
    pg_tensor *x = rand_param(PG_SHAPE(3), -1, 1, 4);
    pg_gradcheck_result r = pg_gradcheck(tanh_fn, 1, &x, NULL, NULL);
    cr_assert(r.ok && r.f32_ok, "%s", r.message);
    cr_assert_eq(r.checked, 3);
    cr_assert_lt(r.max_abs_err, 1e-8);
    cr_assert_lt(r.f32_max_err, 1e-5);
    pg_tensor *x32 = pg_cast(NULL, x, PG_F32);
    x32->requires_grad = true;
    r = pg_gradcheck(tanh_fn, 1, &x32, NULL, NULL);
    cr_assert(!r.ok);
    cr_assert(strstr(r.message, "inputs that require grad must be f64; input 0 is f32[3]"), "%s", r.message);
    x->requires_grad = false;
    r = pg_gradcheck(tanh_fn, 1, &x, NULL, NULL);
    cr_assert(!r.ok);
    cr_assert(strstr(r.message, "does not depend on any input that requires grad"), "%s", r.message);
    r = pg_gradcheck(NULL, 1, &x, NULL, NULL);
    cr_assert(!r.ok);
    pg_tensor_free(x);
    pg_tensor_free(x32);
}
