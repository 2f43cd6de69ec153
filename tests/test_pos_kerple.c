/* KERPLE (nn/pos_kerple.c): the reference check values, PyTorch parity of the bias
 * table for every variant / dist / positions with the parameters' gradients
 * (tests/fixtures/gen_pos_kerple.py), MultiheadAttention parity on the fused and
 * the unfused path, gradchecks over every variant and parameter, the projection
 * options, initial values and names, training, bad options. */
#include <stdlib.h>

#include <math.h>

#include "../nn/local_attention.h"
#include "../nn/pos_kerple.h"
#include "testutil.h"

static pg_kerple *kerple_f64(int64_t H, const pg_kerple_opts *o, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_posmod *m = pg_kerple_new(H, o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return (pg_kerple *)m;
}

static void set_all(pg_tensor *t, double v)
{
    for (int64_t i = 0; t && i < t->numel; i++)
        pg_set(t, i, v);
}

/* dist_bias over d = 0..3 of head 0 */
static void assert_row(pg_kerple *m, const double *want, const char *what)
{
    pg_graph *g = pg_graph_new(); /* the hook builds a chain of ops: a graph frees them */
    pg_tensor *d = pg_arange(g, PG_F64, 0, 4, 1);
    pg_tensor *b = m->pm.ops->dist_bias(g, &m->pm, d, NULL);
    cr_assert_not_null(b, "%s", pg_graph_error(g));
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(pg_get(b, i), want[i], 1e-6, "%s, d %d: %.9g", what, i, pg_get(b, i));
    pg_graph_free(g);
}

Test(pos_kerple, check_values)
{
    /* docs/pos/kerple.md "Check values": log r1 = r2 = 1; power r1 = 1, r2 = 1.5 */
    pg_kerple *m = kerple_f64(1, NULL, 1);
    set_all(m->scale, 1.0);
    set_all(m->inner, 1.0);
    assert_row(m, (const double[]){0, -0.693147, -1.098612, -1.386294}, "log");
    pg_module_free(&m->pm.base);
    m = kerple_f64(1, &(pg_kerple_opts){.variant = PG_KERPLE_POWER}, 1);
    set_all(m->scale, 1.0);
    set_all(m->power, 1.5);
    assert_row(m, (const double[]){0, -1, -2.828427, -5.196152}, "power");
    pg_module_free(&m->pm.base);
    /* nemo with p = 1 is the log form; at its init (a = p = 1, b = ALiBi's slope 1/256 for 1 head) */
    m = kerple_f64(1, &(pg_kerple_opts){.variant = PG_KERPLE_NEMO}, 1);
    assert_row(m, (const double[]){0, -0.693147 / 256, -1.098612 / 256, -1.386294 / 256}, "nemo init");
    /* tril: keys after the query (negative delta) get distance 0, abs gets |delta| */
    pg_graph *g = pg_graph_new();
    pg_tensor *d = pg_arange(g, PG_F64, -2, 3, 4); /* -2, 2 */
    pg_tensor *b = m->pm.ops->dist_bias(g, &m->pm, d, NULL);
    cr_assert_float_eq(pg_get(b, 0), pg_get(b, 1), 1e-15);
    m->dist = PG_KERPLE_DIST_TRIL;
    b = m->pm.ops->dist_bias(g, &m->pm, d, NULL);
    cr_assert_eq(pg_get(b, 0), 0.0);
    cr_assert_float_eq(pg_get(b, 1), -1.098612 / 256, 1e-8);
    pg_graph_free(g);
    pg_module_free(&m->pm.base);
}

Test(pos_kerple, init_and_names)
{
    /* log: bias_p = r1 ~ U(0, 2), bias_a = r2 ~ U(0, 1); power: the names swap meaning */
    for (int v = 0; v < 2; v++) {
        pg_kerple *m = kerple_f64(6, &(pg_kerple_opts){.variant = v}, 5);
        pg_tensor *bp = pg_module_find_param(&m->pm.base, "bias_p"), *ba = pg_module_find_param(&m->pm.base, "bias_a");
        cr_assert_not_null(bp);
        cr_assert_not_null(ba);
        assert_shape(bp, 1, (int64_t[]){6});
        cr_assert_eq(v == PG_KERPLE_LOG ? m->scale : m->power, bp);
        cr_assert_eq(v == PG_KERPLE_LOG ? m->inner : m->scale, ba);
        for (int h = 0; h < 6; h++) {
            cr_assert(pg_get(bp, h) >= 0 && pg_get(bp, h) < 2);
            cr_assert(pg_get(ba, h) >= 0 && pg_get(ba, h) < 1);
        }
        cr_assert(pg_module_param_no_decay(&m->pm.base, "bias_p"));
        cr_assert_eq(m->project, PG_KERPLE_PROJECT_FORWARD);
        pg_module_free(&m->pm.base);
    }
    pg_kerple *m = kerple_f64(8, &(pg_kerple_opts){.variant = PG_KERPLE_NEMO}, 5);
    pg_tensor_list p = pg_module_parameters(&m->pm.base);
    cr_assert_eq(p.n, 3);
    const char *names[] = {"kerple_b", "kerple_a", "kerple_p"};
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(p.names[i], names[i]);
        assert_shape(p.tensors[i], 3, (int64_t[]){8, 1, 1});
    }
    for (int h = 0; h < 8; h++) {
        cr_assert_eq(pg_get(m->scale, h), ldexp(1.0, -(h + 1))); /* ALiBi's slopes */
        cr_assert_eq(pg_get(m->inner, h), 1.0);
        cr_assert_eq(pg_get(m->power, h), 1.0);
    }
    cr_assert_eq(m->project, PG_KERPLE_PROJECT_NONE);
    pg_tensor_list_free(&p);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * bias table parity
 * =================================================================================== */

enum { P_NONE, P_SELF, P_CROSS };

typedef struct kcase {
    const char *name;
    pg_kerple_variant variant;
    int64_t H, Lq, Lk;
    pg_kerple_dist dist;
    int pmode;
} kcase;

static const kcase CASES[] = {
    {"log", PG_KERPLE_LOG, 4, 5, 5, PG_KERPLE_DIST_ABS, P_NONE},
    {"log_tril_end", PG_KERPLE_LOG, 3, 3, 6, PG_KERPLE_DIST_TRIL, P_NONE},
    {"log_pad", PG_KERPLE_LOG, 2, 5, 5, PG_KERPLE_DIST_ABS, P_SELF},
    {"power", PG_KERPLE_POWER, 4, 5, 5, PG_KERPLE_DIST_ABS, P_NONE},
    {"power_tril", PG_KERPLE_POWER, 3, 4, 4, PG_KERPLE_DIST_TRIL, P_SELF},
    {"power_cross", PG_KERPLE_POWER, 2, 3, 5, PG_KERPLE_DIST_ABS, P_CROSS},
    {"nemo", PG_KERPLE_NEMO, 4, 5, 5, PG_KERPLE_DIST_ABS, P_NONE},
    {"nemo_tril_end", PG_KERPLE_NEMO, 2, 2, 5, PG_KERPLE_DIST_TRIL, P_NONE},
    {"nemo_cross", PG_KERPLE_NEMO, 3, 4, 6, PG_KERPLE_DIST_TRIL, P_CROSS},
};

Test(pos_kerple, table_matches_torch)
{
    pg_tensor_list l = fixture("pos_kerple_table.safetensors");
    double worst_out = 0, worst_grad = 0;
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const kcase *k = &CASES[ci];
        char key[64];
        pg_kerple *m = kerple_f64(k->H, &(pg_kerple_opts){.variant = k->variant, .dist = k->dist}, 1);
        snprintf(key, sizeof key, "%s.", k->name);
        load_params(&m->pm.base, &l, key);
        pg_tensor *pq = NULL, *pk = NULL;
        if (k->pmode == P_SELF) {
            snprintf(key, sizeof key, "%s.pos", k->name);
            pq = pk = fx_copy(&l, key, false);
        } else if (k->pmode == P_CROSS) {
            snprintf(key, sizeof key, "%s.pos_q", k->name);
            pq = fx_copy(&l, key, false);
            snprintf(key, sizeof key, "%s.pos_k", k->name);
            pk = fx_copy(&l, key, false);
        }
        pg_pos_ctx c = {pq, pk, NULL, k->pmode != P_CROSS, false, 2, k->H, 3, k->Lq, k->Lk, 0.5, PG_F64, NULL, NULL};
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_posmod_bias_table(g, &m->pm, &c);
        cr_assert_not_null(out, "%s: %s", k->name, pg_graph_error(g));
        cr_assert_eq(out->ndim, k->pmode == P_NONE ? 3 : 4);
        snprintf(key, sizeof key, "%s out", k->name);
        assert_close(out, fx(&l, "%s.out", k->name), 1e-10, key);
        double e = max_err(out, fx(&l, "%s.out", k->name));
        worst_out = e > worst_out ? e : worst_out;
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "%s.dy", k->name)), 0, "%s", pg_graph_error(g));
        pg_tensor_list p = pg_module_parameters(&m->pm.base);
        for (int i = 0; i < p.n; i++) {
            pg_tensor *want = fx(&l, "%s.grad.%s", k->name, p.names[i]);
            snprintf(key, sizeof key, "%s grad %s", k->name, p.names[i]);
            assert_close(p.tensors[i]->grad, want, 1e-10, key);
            e = max_err(p.tensors[i]->grad, want);
            worst_grad = e > worst_grad ? e : worst_grad;
        }
        pg_tensor_list_free(&p);
        pg_graph_free(g);
        pg_tensor_free(pq);
        if (pk != pq)
            pg_tensor_free(pk);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_kerple table parity: outputs %.3g, gradients %.3g", worst_out, worst_grad);
    pg_tensor_list_free_all(&l);
}

/* ===================================================================================
 * MultiheadAttention: fused and unfused paths against PyTorch, gradchecks
 * =================================================================================== */

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, bool unfused, pg_posmod *pos, uint64_t seed)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal, .unfused = unfused}, &pos, 1, seed);
}

Test(pos_kerple, mha_matches_torch_fused_and_unfused)
{
    pg_tensor_list l = fixture("pos_kerple_mha.safetensors");
    for (int unfused = 0; unfused < 2; unfused++) {
        pg_mha *m = mha_with(8, 4, true, unfused, &kerple_f64(4, &(pg_kerple_opts){.variant = PG_KERPLE_NEMO}, 1)->pm, 1);
        load_params(&m->base, &l, "");
        pg_tensor *x = fx_copy(&l, "x", true);
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = fx(&l, "mask")});
        cr_assert_not_null(out, "%s", pg_graph_error(g));
        assert_close(out, fx(&l, "out"), 1e-10, unfused ? "unfused out" : "fused out");
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "dy")), 0, "%s", pg_graph_error(g));
        assert_close(x->grad, fx(&l, "grad.x"), 1e-10, "grad x");
        check_param_grads(&m->base, &l, "", 1e-10);
        cr_log_info("pos_kerple mha parity (%s): out %.3g, grad x %.3g, grad kerple_p %.3g",
                    unfused ? "unfused" : "fused", max_err(out, fx(&l, "out")), max_err(x->grad, fx(&l, "grad.x")),
                    max_err(pg_module_find_param(&m->base, "pos.kerple_p")->grad, fx(&l, "grad.pos.kerple_p")));
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&m->base);
    }
    pg_tensor_list_free_all(&l);
}

typedef struct tab_case {
    pg_kerple *m;
    int64_t Lq, Lk;
} tab_case;

static pg_tensor *call_table(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const tab_case *t = ctx;
    pg_pos_ctx c = {NULL, NULL, NULL, true, false, 1, t->m->heads, 2, t->Lq, t->Lk, 1.0, PG_F64, NULL, NULL};
    return pg_posmod_bias_table(g, &t->m->pm, &c);
}

typedef struct mha_case {
    pg_mha *m;
    pg_tensor *mask;
} mha_case;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const mha_case *c = ctx;
    return pg_mha_forward(g, c->m, in[0], NULL, &(pg_attn_args){.mask = c->mask});
}

/* assert_gradcheck, keeping the worst absolute error for the log */
static double worst_gc;
static void gradcheck_worst(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx, const pg_gradcheck_opts *o)
{
    pg_gradcheck_result r = pg_gradcheck(fn, n, in, ctx, o);
    cr_assert(r.ok, "%s (max abs err %.3g, checked %d)", r.message, r.max_abs_err, r.checked);
    cr_assert_gt(r.checked, 0, "gradcheck checked nothing");
    worst_gc = r.max_abs_err > worst_gc ? r.max_abs_err : worst_gc;
}

/* parameters inside the constraints, away from the clamps */
static void move_inside(pg_kerple *m)
{
    for (int64_t h = 0; h < m->heads; h++) {
        pg_set(m->scale, h, 0.3 + 0.2 * (double)h);
        if (m->inner)
            pg_set(m->inner, h, 0.4 + 0.3 * (double)h);
        if (m->power)
            pg_set(m->power, h, 0.6 + 0.35 * (double)h);
    }
}

Test(pos_kerple, gradcheck_every_variant_and_parameter)
{
    pg_gradcheck_opts go = f64_only();
    for (int v = 0; v < 3; v++)
        for (int dist = 0; dist < 2; dist++) {
            /* the table w.r.t. every parameter, d = 0 included (d^p: derivative 0 there) */
            pg_kerple *m = kerple_f64(3, &(pg_kerple_opts){.variant = v, .dist = dist}, 2);
            move_inside(m);
            tab_case t = {m, 3, 5};
            pg_tensor *in[4];
            int n = with_params(in, 0, &m->pm.base);
            gradcheck_worst(call_table, n, in, &t, &go);
            pg_module_free(&m->pm.base);
            /* inside MHA, fused and unfused: x and every parameter */
            for (int unfused = 0; unfused < 2; unfused++) {
                pg_kerple *k = kerple_f64(2, &(pg_kerple_opts){.variant = v, .dist = dist}, 3);
                move_inside(k);
                pg_mha *mha = mha_with(4, 2, dist == PG_KERPLE_DIST_TRIL, unfused, &k->pm, 4);
                mha_case c = {mha, key_mask()};
                pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 9, true);
                pg_tensor *in2[16] = {x};
                n = with_params(in2, 1, &mha->base);
                gradcheck_worst(call_mha, n, in2, &c, &go);
                pg_tensor *own[] = {x, c.mask};
                free_all(2, own);
                pg_module_free(&mha->base);
            }
        }
    cr_log_info("pos_kerple gradcheck: worst abs error %.3g", worst_gc);
}

Test(pos_kerple, fused_equals_unfused_at_init)
{
    for (int v = 0; v < 3; v++) {
        pg_mha *a = mha_with(8, 2, true, false, &kerple_f64(2, &(pg_kerple_opts){.variant = v}, 6)->pm, 3);
        pg_mha *b = mha_with(8, 2, true, true, &kerple_f64(2, &(pg_kerple_opts){.variant = v}, 6)->pm, 3);
        pg_tensor *x = randt(PG_SHAPE(2, 7, 8), 4, false);
        pg_tensor *ya = pg_mha_forward(NULL, a, x, NULL, NULL), *yb = pg_mha_forward(NULL, b, x, NULL, NULL);
        cr_assert_not_null(ya, "%s", pg_last_error());
        cr_assert_not_null(yb, "%s", pg_last_error());
        cr_assert_lt(max_err(ya, yb), 1e-12, "variant %d: %g", v, max_err(ya, yb));
        pg_tensor *own[] = {x, ya, yb};
        free_all(3, own);
        pg_module_free(&a->base);
        pg_module_free(&b->base);
    }
}

/* ===================================================================================
 * projection
 * =================================================================================== */

Test(pos_kerple, projection_in_forward_at_step_or_never)
{
    pg_tensor *d = T64(PG_SHAPE(2), 0, 2);
    /* FORWARD (the log / power default): forward clamps in place, the gradient is that at the clamped value */
    pg_kerple *m = kerple_f64(1, &(pg_kerple_opts){.variant = PG_KERPLE_POWER, .eps = 0.05}, 1);
    pg_set(m->scale, 0, -0.5);
    pg_set(m->power, 0, 3.0);
    pg_graph *g = pg_graph_new();
    pg_tensor *b = m->pm.ops->dist_bias(g, &m->pm, d, NULL);
    cr_assert_eq(pg_get(m->scale, 0), 0.05);
    cr_assert_eq(pg_get(m->power, 0), 2.0);
    cr_assert_float_eq(pg_get(b, 1), -0.05 * 4.0, 1e-15);
    cr_assert_eq(pg_backward(g, pg_sum(g, b, 0, NULL, false)), 0, "%s", pg_graph_error(g));
    cr_assert_float_eq(pg_get(m->scale->grad, 0), -4.0, 1e-14);               /* -d^p, not zeroed */
    cr_assert_float_eq(pg_get(m->power->grad, 0), -0.05 * 4.0 * log(2.0), 1e-14); /* -r1 d^p ln d */
    pg_graph_free(g);
    pg_module_free(&m->pm.base);
    /* STEP: forward leaves the parameters alone; pg_kerple_project clamps them */
    m = kerple_f64(1, &(pg_kerple_opts){.project = PG_KERPLE_PROJECT_STEP, .p_max = 1.5}, 1);
    pg_set(m->scale, 0, -0.5);
    pg_set(m->inner, 0, 0.001);
    g = pg_graph_new();
    b = m->pm.ops->dist_bias(g, &m->pm, d, NULL);
    cr_assert_float_eq(pg_get(b, 1), 0.5 * log1p(0.002), 1e-15);
    cr_assert_eq(pg_get(m->scale, 0), -0.5);
    pg_graph_free(g);
    cr_assert_eq(pg_kerple_project(&m->pm), 0);
    cr_assert_eq(pg_get(m->scale, 0), 0.01);
    cr_assert_eq(pg_get(m->inner, 0), 0.01);
    pg_module_free(&m->pm.base);
    /* NONE (the nemo default): never clamped in forward; an explicit project still clamps p to [eps, p_max] */
    m = kerple_f64(1, &(pg_kerple_opts){.variant = PG_KERPLE_NEMO}, 1);
    pg_set(m->power, 0, 2.5);
    g = pg_graph_new();
    b = m->pm.ops->dist_bias(g, &m->pm, d, NULL);
    cr_assert_float_eq(pg_get(b, 1), -pg_get(m->scale, 0) * log1p(pow(2.0, 2.5)), 1e-15);
    pg_graph_free(g);
    cr_assert_eq(pg_kerple_project(&m->pm), 0);
    cr_assert_eq(pg_get(m->power, 0), 2.0);
    pg_module_free(&m->pm.base);
    ASSERT_FAILS(pg_kerple_project(NULL) ? NULL : d, "pg_kerple_project: not a KERPLE module (NULL)");
    pg_tensor_free(d);
}

/* ===================================================================================
 * training: MHA and a 1-block LM, one Adam step moves every parameter
 * =================================================================================== */

Test(pos_kerple, trains_in_mha_and_lm)
{
    for (int v = 0; v < 3; v++) {
        pg_kerple *k = kerple_f64(2, &(pg_kerple_opts){.variant = v}, 7);
        pg_mha *m = mha_with(4, 2, true, false, &k->pm, 7);
        pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 8, false);
        pg_graph *g = pg_graph_new();
        pg_tensor *y = pg_mha_forward(g, m, x, NULL, NULL);
        assert_adam_step_changes(&m->base, &k->pm.base, g, pg_sum(g, pg_square(g, y), 0, NULL, false));
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&m->base);

        pg_kerple_opts ko = {.variant = v};
        pg_lm_config c = pg_lm_defaults(7, 8, 2, 1);
        c.dtype = PG_F64;
        c.n_layer_pos = 1;
        c.layer_pos[0] = (pg_posmod_spec){"kerple", NULL, &ko};
        pg_lm *lm = pg_lm_new(&c);
        cr_assert_not_null(lm, "%s", pg_last_error());
        pg_tensor *ids = TI64(PG_SHAPE(2, 4), 1, 2, 3, 4, 6, 5, 0, 2);
        g = pg_graph_new();
        pg_module *watch = &lm->blocks[0]->attn->pos[0]->base;
        cr_assert_not_null(watch);
        assert_adam_step_changes(&lm->base, watch, g, pg_lm_loss(g, lm, ids, ids, NULL));
        pg_graph_free(g);
        pg_tensor_free(ids);
        pg_module_free(&lm->base);
    }
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_kerple, bad_options)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_kerple_new(0, NULL, PG_F64, &r), "pg_kerple_new: need 1 <= heads");
    ASSERT_FAILS(pg_kerple_new(4, &(pg_kerple_opts){.heads = 3}, PG_F64, &r), "opts.heads 3 differs from heads 4");
    ASSERT_FAILS(pg_kerple_new(2, NULL, PG_I64, &r), "pg_kerple_new: dtype must be f32 or f64, got i64");
    ASSERT_FAILS(pg_kerple_new(2, &(pg_kerple_opts){.variant = 3}, PG_F64, &r),
                 "variant must be PG_KERPLE_LOG, PG_KERPLE_POWER or PG_KERPLE_NEMO, got 3");
    ASSERT_FAILS(pg_kerple_new(2, &(pg_kerple_opts){.project = 9}, PG_F64, &r), "project must be");
    ASSERT_FAILS(pg_kerple_new(2, &(pg_kerple_opts){.dist = 2}, PG_F64, &r), "dist must be");
    ASSERT_FAILS(pg_kerple_new(2, &(pg_kerple_opts){.eps = -1}, PG_F64, &r), "need finite clamp bounds 0 < eps <= p_max");
    ASSERT_FAILS(pg_kerple_new(2, &(pg_kerple_opts){.eps = 0.5, .p_max = 0.1}, PG_F64, &r), "got eps 0.5, p_max 0.1");
    ASSERT_FAILS(pg_kerple_new(2, &(pg_kerple_opts){.eps = NAN}, PG_F64, &r), "clamp bounds");
    ASSERT_FAILS(pg_kerple_new(2, NULL, PG_F64, NULL), "pg_kerple_new: the initial values need a generator");
    pg_posmod *nemo = pg_kerple_new(2, &(pg_kerple_opts){.variant = PG_KERPLE_NEMO}, PG_F64, NULL);
    cr_assert_not_null(nemo, "nemo's init is deterministic: %s", pg_last_error());
    pg_module_free(&nemo->base);
    pg_posmod_args a = {.dim = 8, .heads = 0, .dtype = PG_F64, .rng = &r};
    ASSERT_FAILS(pg_posmod_make_kerple(&a), "needs heads >= 1");
    ASSERT_FAILS(pg_posmod_make_kerple(NULL), "pg_posmod_make_kerple: args is NULL");
}

Test(pos_kerple, bad_input)
{
    pg_kerple *m = kerple_f64(2, NULL, 1);
    pg_tensor *longer = T64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5), *d2 = T64(PG_SHAPE(1, 2), 0, 1);
    pg_pos_ctx c = {longer, longer, NULL, true, false, 1, 2, 1, 5, 5, 1.0, PG_F64, NULL, NULL};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "pos is f64[1,6], expected (B, Lp) = (1, <= 5)");
    c.pos_q = c.pos_k = NULL;
    c.heads = 3;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "kerple: the module has 2 heads, the attention 3");
    ASSERT_FAILS(m->pm.ops->dist_bias(NULL, &m->pm, d2, NULL), "kerple: dist_bias needs distances (D) of f32/f64");
    pg_mha *mha = mha_with(6, 3, false, false, &m->pm, 1);
    pg_tensor *x = randt(PG_SHAPE(1, 5, 6), 1, false);
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, NULL), "the module has 2 heads, the attention 3");
    pg_tensor *own[] = {longer, d2, x};
    free_all(3, own);
    pg_module_free(&mha->base);
}

Test(pos_kerple, f32_agrees_with_f64)
{
    pg_rng r = pg_rng_init(3);
    pg_posmod *m32 = pg_kerple_new(3, &(pg_kerple_opts){.variant = PG_KERPLE_NEMO}, PG_F32, &r);
    pg_kerple *m64 = kerple_f64(3, &(pg_kerple_opts){.variant = PG_KERPLE_NEMO}, 3);
    cr_assert_not_null(m32, "%s", pg_last_error());
    pg_tensor *pos = T32(PG_SHAPE(1, 4), 0.5f, 1.0f, 3.0f, 2.0f);
    pg_pos_ctx c = {pos, pos, NULL, true, false, 1, 3, 1, 4, 4, 1.0, PG_F32, NULL, NULL};
    pg_tensor *b32 = pg_posmod_bias_table(NULL, m32, &c);
    c.dtype = PG_F64;
    pg_tensor *b64 = pg_posmod_bias_table(NULL, &m64->pm, &c);
    cr_assert_not_null(b32, "%s", pg_last_error());
    cr_assert_not_null(b64, "%s", pg_last_error());
    cr_assert_eq(b32->dtype, PG_F32);
    cr_assert_lt(max_err(b32, b64), 1e-6);
    pg_tensor *own[] = {pos, b32, b64};
    free_all(3, own);
    pg_module_free(&m32->base);
    pg_module_free(&m64->pm.base);
}

/* ===================================================================================
 * LocalAttention: the band takes dist_bias (fused and unfused) = full attention with
 * the bias table and the band as a bias; gradients of the parameters through it
 * =================================================================================== */

/* (L, L): 0 where LocalAttention's band shows key j to query i, -inf elsewhere */
static pg_tensor *band(int64_t L, int64_t w, int64_t lb, int64_t lf, bool causal)
{
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(L, L));
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            bool vis = j / w >= i / w - lb && j / w <= i / w + lf && (!causal || j <= i);
            pg_set(t, i * L + j, vis ? 0.0 : -INFINITY);
        }
    return t;
}

typedef struct local_case {
    pg_local_attention *m;
    pg_tensor *mask;
} local_case;

static pg_tensor *call_local(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const local_case *c = ctx;
    return pg_local_attention_forward(g, c->m, in[0], in[1], in[2], &(pg_local_args){.mask = c->mask});
}

Test(pos_kerple, local_attention_band)
{
    pg_gradcheck_opts go = f64_only();
    for (int v = 0; v < 3; v++)
        for (int variant = 0; variant < 4; variant++) { /* causal or not, fused or not */
            bool causal = variant & 1, unfused = variant & 2;
            pg_kerple *p = kerple_f64(2, &(pg_kerple_opts){.variant = v}, 21);
            move_inside(p);
            pg_local_attention_config cfg = pg_local_attention_defaults(2);
            cfg.causal = causal;
            cfg.unfused = unfused;
            cfg.dtype = PG_F64;
            pg_local_attention *m = pg_local_attention_new(&cfg, (pg_posmod *[]){&p->pm}, 1);
            cr_assert_not_null(m, "%s", pg_last_error());
            int64_t L = 8;
            pg_tensor *q = randt(PG_SHAPE(2, 2, L, 4), 31, true), *k = randt(PG_SHAPE(2, 2, L, 4), 32, true),
                      *vv = randt(PG_SHAPE(2, 2, L, 4), 33, true);
            pg_tensor *mask = TBOOL(PG_SHAPE(2, 8), 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1);
            pg_graph *g = pg_graph_new();
            pg_tensor *y = pg_local_attention_forward(g, m, q, k, vv, &(pg_local_args){.mask = mask});
            cr_assert_not_null(y, "%s", pg_graph_error(g));
            pg_pos_ctx c = {.self_attn = true, .causal = causal, .B = 2, .heads = 2, .head_dim = 4, .Lq = L, .Lk = L,
                            .dtype = PG_F64};
            pg_tensor *bm = band(L, 2, 1, m->cfg.look_forward, false);
            pg_tensor *tb = pg_add(g, p->pm.ops->bias_table(g, &p->pm, &c), bm);
            pg_tensor *e = pg_attention(g, q, k, vv, &(pg_sdpa_opts){.bias = tb, .mask = mask, .causal = causal});
            assert_close(y, e, 1e-12, "kerple in local vs banded full");
            pg_graph_free(g);
            local_case lc = {m, mask};
            pg_tensor *in[8] = {q, k, vv};
            int n = with_params(in, 3, &m->base);
            gradcheck_worst(call_local, n, in, &lc, &go);
            pg_tensor *own[] = {q, k, vv, mask, bm};
            free_all(5, own);
            pg_module_free(&m->base);
        }
    cr_log_info("pos_kerple gradcheck (with local attention): worst abs error %.3g", worst_gc);
}
