/* FIRE (nn/pos_fire.c): hand-computed values and the tie at i == L, PyTorch parity
 * of the bias table (both distance options, explicit and padded positions, a small
 * L0 so the normaliser varies) with the parameters' gradients and inside a causal
 * MultiheadAttention (tests/fixtures/gen_pos_fire.py), gradchecks w.r.t. every
 * parameter, LocalAttention through band_bias, initial values and state-dict names
 * (init_L frozen), training in a 1-block LM, training-mode random positions
 * (train_max_len), bad options. */
#include <stdlib.h>
#include <unistd.h>

#include <math.h>

#include "../nn/local_attention.h"
#include "../nn/pos_fire.h"
#include "testutil.h"

static pg_fire *fire_f64(int64_t H, const pg_fire_opts *o, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_posmod *m = pg_fire_new(H, o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return (pg_fire *)m;
}

/* one head, one hidden unit: f(u) = w2 relu(w0 u + b0) + b2; c, L0, L_multiplier */
static pg_fire *tiny(double w0, double b0, double w2, double b2, double c, double L0, double Lm, pg_fire_dist dist)
{
    pg_fire *m = fire_f64(1, &(pg_fire_opts){.hidden = 1, .init_c = c, .init_L = L0, .dist = dist}, 1);
    pg_set(m->lin0->weight, 0, w0);
    pg_set(m->lin0->bias, 0, b0);
    pg_set(m->lin2->weight, 0, w2);
    pg_set(m->lin2->bias, 0, b2);
    pg_set(m->L_multiplier, 0, Lm);
    return m;
}

static pg_pos_ctx self_ctx(int64_t H, int64_t L)
{
    return (pg_pos_ctx){.self_attn = true, .B = 1, .heads = H, .head_dim = 2, .Lq = L, .Lk = L, .dtype = PG_F64};
}

Test(pos_fire, hand_values)
{
    /* c = 0.1, L = 2, f(u) = 2 relu(u - 0.3) + 0.5, u = log(1 + 0.1 d) / (log(1 + 0.1 max(2, i)) + 1e-6)
     * (values computed by hand with a calculator-level script, docs/pos/fire.md (1)-(3)) */
    static const struct {
        int i, j;
        double abs, tril;
    } want[] = {{1, 0, 0.9455116632884474, 0.9455116632884474}, {3, 1, 1.2898299926554917, 1.2898299926554917},
                {3, 0, 1.8999923770396818, 1.8999923770396818}, {2, 0, 1.8999890304302705, 1.8999890304302705},
                {0, 3, 2.778023093587841, 0.5},                  {1, 1, 0.5, 0.5}};
    for (int dist = 0; dist < 2; dist++) {
        pg_fire *m = tiny(1, -0.3, 2, 0.5, 0.1, 2, 1, dist);
        pg_pos_ctx c = self_ctx(1, 4);
        pg_tensor *b = pg_posmod_bias_table(NULL, &m->pm, &c);
        cr_assert_not_null(b, "%s", pg_last_error());
        assert_shape(b, 3, (int64_t[]){1, 4, 4});
        for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
            double w = dist ? want[k].tril : want[k].abs;
            cr_assert_float_eq(pg_get(b, want[k].i * 4 + want[k].j), w, 1e-12, "dist %d (%d, %d): %.17g", dist,
                               want[k].i, want[k].j, pg_get(b, want[k].i * 4 + want[k].j));
        }
        pg_tensor_free(b);
        pg_module_free(&m->pm.base);
    }
}

/* d bias[i, j] / d L_multiplier for f(u) = u, L = L0 Lm (Lm > 0), i < L (full) or i == L (half) */
static double dLm(double i, double j, double c, double L0, double Lm, double share)
{
    double L = L0 * Lm, num = log1p(c * fabs(i - j)), den = log1p(c * L) + 1e-6;
    return -num / (den * den) * c / (1 + c * L) * L0 * share;
}

Test(pos_fire, tie_splits_the_gradient_half_and_half)
{
    /* L = 2: row 2 is a tie (max(L, i) = L = i), row 1 below (all to L), row 3 above (none to L) */
    pg_fire *m = tiny(1, 0, 1, 0, 0.1, 2, 1, PG_FIRE_DIST_ABS);
    struct {
        int i, j;
        double share;
    } rows[] = {{2, 0, 0.5}, {1, 0, 1.0}, {3, 0, 0.0}, {2, 1, 0.5}};
    for (size_t k = 0; k < sizeof rows / sizeof *rows; k++) {
        pg_graph *g = pg_graph_new();
        pg_pos_ctx c = self_ctx(1, 4);
        pg_tensor *b = pg_posmod_bias_table(g, &m->pm, &c);
        pg_tensor *dy = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1, 4, 4), 0.0);
        pg_set(dy, rows[k].i * 4 + rows[k].j, 1.0);
        cr_assert_eq(pg_backward_with(g, b, dy), 0, "%s", pg_graph_error(g));
        double want = dLm(rows[k].i, rows[k].j, 0.1, 2, 1, rows[k].share);
        cr_assert_float_eq(pg_get(m->L_multiplier->grad, 0), want, 1e-12, "row %d: %.17g, want %.17g", rows[k].i,
                           pg_get(m->L_multiplier->grad, 0), want);
        cr_assert_null(m->init_L->grad, "init_L is frozen: no gradient");
        pg_module_zero_grad(&m->pm.base);
        pg_tensor_free(dy);
        pg_graph_free(g);
    }
    pg_module_free(&m->pm.base);
}

Test(pos_fire, init_and_names)
{
    pg_fire *m = fire_f64(4, NULL, 5);
    pg_tensor_list p = pg_module_parameters(&m->pm.base);
    const char *names[] = {"c", "init_L", "L_multiplier", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"};
    cr_assert_eq(p.n, 7);
    for (int i = 0; i < 7; i++)
        cr_assert_str_eq(p.names[i], names[i]);
    assert_shape(p.tensors[3], 2, (int64_t[]){32, 1});
    assert_shape(p.tensors[5], 2, (int64_t[]){4, 32});
    cr_assert_eq(p.tensors[0]->ndim, 0);
    cr_assert_eq(pg_get(m->c, 0), 0.1);
    cr_assert_eq(pg_get(m->init_L, 0), 512.0);
    cr_assert_eq(pg_get(m->L_multiplier, 0), 1.0);
    cr_assert(!m->init_L->requires_grad && m->c->requires_grad && m->L_multiplier->requires_grad);
    cr_assert(pg_module_param_no_decay(&m->pm.base, "c") && pg_module_param_no_decay(&m->pm.base, "L_multiplier"));
    /* torch's Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    for (int64_t k = 0; k < 32; k++)
        cr_assert(fabs(pg_get(m->lin0->weight, k)) <= 1.0 && fabs(pg_get(m->lin0->bias, k)) <= 1.0);
    for (int64_t k = 0; k < 4 * 32; k++)
        cr_assert(fabs(pg_get(m->lin2->weight, k)) <= 1 / sqrt(32.0));
    cr_assert_eq(m->eps, 1e-6);
    cr_assert_eq(m->dist, PG_FIRE_DIST_ABS);
    pg_tensor_list_free(&p);
    /* the state dict holds init_L: save, change, load back */
    char path[] = "/tmp/pg_fire_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    pg_set(m->init_L, 0, 7.0);
    cr_assert_eq(pg_module_save(&m->pm.base, path), 0, "%s", pg_last_error());
    pg_fire *n = fire_f64(4, NULL, 6);
    cr_assert_eq(pg_module_load(&n->pm.base, path, true, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_get(n->init_L, 0), 7.0);
    cr_assert(!n->init_L->requires_grad, "loading keeps init_L frozen");
    cr_assert_eq(pg_get(n->lin2->weight, 5), pg_get(m->lin2->weight, 5));
    unlink(path);
    pg_module_free(&n->pm.base);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * parity with PyTorch
 * =================================================================================== */

enum { P_NONE, P_SELF, P_CROSS };

typedef struct fcase {
    const char *name;
    int64_t H, hidden, Lq, Lk;
    pg_fire_dist dist;
    int pmode;
} fcase;

static const fcase CASES[] = {
    {"abs", 3, 6, 7, 7, PG_FIRE_DIST_ABS, P_NONE},   {"tril", 3, 6, 7, 7, PG_FIRE_DIST_TRIL, P_NONE},
    {"big_L", 2, 32, 5, 5, PG_FIRE_DIST_ABS, P_NONE}, {"end", 2, 5, 3, 6, PG_FIRE_DIST_TRIL, P_NONE},
    {"self", 3, 4, 5, 5, PG_FIRE_DIST_ABS, P_SELF},   {"pad", 2, 4, 5, 5, PG_FIRE_DIST_TRIL, P_SELF},
    {"cross", 2, 5, 3, 5, PG_FIRE_DIST_ABS, P_CROSS}, {"tie", 2, 4, 6, 6, PG_FIRE_DIST_ABS, P_NONE},
};

static double worst_out, worst_grad;
static void note(double *worst, double e) { *worst = e > *worst ? e : *worst; }

/* every parameter's grad (init_L: none) against "<prefix>grad.<name>" */
static void check_grads(pg_module *m, const pg_tensor_list *l, const char *prefix)
{
    pg_tensor_list p = pg_module_parameters(m);
    for (int i = 0; i < p.n; i++) {
        if (!p.tensors[i]->requires_grad) {
            cr_assert_null(p.tensors[i]->grad, "%s is frozen but has a gradient", p.names[i]);
            continue;
        }
        pg_tensor *want = fx(l, "%sgrad.%s", prefix, p.names[i]);
        cr_assert_not_null(p.tensors[i]->grad, "%s has no grad", p.names[i]);
        assert_close(p.tensors[i]->grad, want, 1e-10, p.names[i]);
        note(&worst_grad, max_err(p.tensors[i]->grad, want));
    }
    pg_tensor_list_free(&p);
}

Test(pos_fire, table_matches_torch)
{
    pg_tensor_list l = fixture("pos_fire_table.safetensors");
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const fcase *k = &CASES[ci];
        char key[64];
        pg_fire *m = fire_f64(k->H, &(pg_fire_opts){.hidden = k->hidden, .dist = k->dist}, 1);
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
        note(&worst_out, max_err(out, fx(&l, "%s.out", k->name)));
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "%s.dy", k->name)), 0, "%s", pg_graph_error(g));
        snprintf(key, sizeof key, "%s.", k->name);
        check_grads(&m->pm.base, &l, key);
        pg_graph_free(g);
        pg_tensor_free(pq);
        if (pk != pq)
            pg_tensor_free(pk);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_fire table parity: outputs %.3g, gradients %.3g", worst_out, worst_grad);
    pg_tensor_list_free_all(&l);
}

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, bool unfused, pg_posmod *pos, uint64_t seed)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal, .unfused = unfused}, &pos, 1, seed);
}

/* the row length of the graph's FIRE MLP: 2 L - 1 distances (dist_bias_if) or L^2 pairs; -1: none */
static int64_t mlp_row_length(const pg_graph *g)
{
    for (int i = 0; i < pg_graph_num_nodes(g); i++) {
        const pg_node *n = pg_graph_node(g, i);
        if (strcmp(n->name, "pg_scalar_mlp") == 0)
            return n->out->shape[2];
    }
    return -1;
}

/* L = 2.75 (rows on both sides) and L = 5.2 (above every position 0..4: the fused
 * path takes FIRE's table over the 9 distances, the reference path the 25 pairs) */
Test(pos_fire, mha_matches_torch)
{
    static const char *const files[2] = {"pos_fire_mha.safetensors", "pos_fire_mha_below.safetensors"};
    for (int f = 0; f < 2; f++)
        for (int unfused = 0; unfused < 2; unfused++) {
            pg_tensor_list l = fixture(files[f]);
            pg_mha *m = mha_with(8, 4, true, unfused, &fire_f64(4, &(pg_fire_opts){.hidden = 8}, 1)->pm, 1);
            load_params(&m->base, &l, "");
            pg_tensor *x = fx_copy(&l, "x", true);
            pg_graph *g = pg_graph_new();
            pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = fx(&l, "mask")});
            cr_assert_not_null(out, "%s", pg_graph_error(g));
            cr_assert_eq(mlp_row_length(g), f == 1 && !unfused ? 9 : 25, "%s, %s: the MLP ran on %lld entries",
                         files[f], unfused ? "unfused" : "fused", (long long)mlp_row_length(g));
            assert_close(out, fx(&l, "out"), 1e-10, "out");
            note(&worst_out, max_err(out, fx(&l, "out")));
            cr_assert_eq(pg_backward_with(g, out, fx(&l, "dy")), 0, "%s", pg_graph_error(g));
            assert_close(x->grad, fx(&l, "grad.x"), 1e-10, "grad x");
            check_grads(&m->base, &l, "");
            cr_log_info("pos_fire mha parity (%s, %s): out %.3g, grad x %.3g", files[f],
                        unfused ? "unfused" : "default", max_err(out, fx(&l, "out")),
                        max_err(x->grad, fx(&l, "grad.x")));
            pg_graph_free(g);
            pg_tensor_free(x);
            pg_module_free(&m->base);
            pg_tensor_list_free_all(&l);
        }
}

/* ===================================================================================
 * dist_bias_if: the table over distances below the threshold
 * =================================================================================== */

/* the hook at default positions, Lq = Lk = L: rc, and *b (H, 2L - 1) on 0 */
static int dist_if(pg_graph *g, pg_fire *m, int64_t L, pg_dtype dt, const pg_tensor *pos, pg_tensor **b)
{
    pg_pos_ctx c = {(pg_tensor *)pos, (pg_tensor *)pos, NULL, true, false, 1, m->heads, 2, L, L, 1.0, dt, NULL, NULL};
    return m->pm.ops->dist_bias_if(g, &m->pm, pg_arange(g, dt, (double)(1 - L), (double)L, 1.0), &c, b);
}

/* every entry of the table (H, L, L) equals the hook's entry at its distance, bit for bit */
static void assert_table_by_distance(pg_fire *m, int64_t L, pg_dtype dt)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *b = NULL;
    cr_assert_eq(dist_if(g, m, L, dt, NULL, &b), 0, "%s", pg_graph_error(g));
    assert_shape(b, 2, (int64_t[]){m->heads, 2 * L - 1});
    pg_pos_ctx c = {.self_attn = true, .B = 1, .heads = m->heads, .head_dim = 2, .Lq = L, .Lk = L, .dtype = dt};
    pg_tensor *t = pg_posmod_bias_table(g, &m->pm, &c);
    cr_assert_not_null(t, "%s", pg_graph_error(g));
    for (int64_t h = 0; h < m->heads; h++)
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++) {
                double want = pg_get(t, (h * L + i) * L + j), got = pg_get(b, h * (2 * L - 1) + i - j + L - 1);
                cr_assert(got == want, "%s h %lld (%lld, %lld): %.17g, the table %.17g", pg_dtype_name(dt),
                          (long long)h, (long long)i, (long long)j, got, want);
            }
    pg_graph_free(g);
}

Test(pos_fire, dist_bias_if_below_the_threshold)
{
    for (int dt = 0; dt < 2; dt++)
        for (int dist = 0; dist < 2; dist++) {
            pg_dtype dtype = dt ? PG_F64 : PG_F32;
            pg_rng r = pg_rng_init(7);
            /* L = 9.5 * 1.25 = 11.875 above the positions 0..10 of 11 tokens */
            pg_fire *m = (pg_fire *)pg_fire_new(3, &(pg_fire_opts){.hidden = 6, .init_c = 0.4, .init_L = 9.5,
                                                                    .dist = dist}, dtype, &r);
            cr_assert_not_null(m, "%s", pg_last_error());
            pg_set(m->L_multiplier, 0, 1.25);
            assert_table_by_distance(m, 11, dtype);
            pg_module_free(&m->pm.base);
        }
}

/* 1 (declined, nothing recorded, no error) wherever the bias is not one of the distance */
Test(pos_fire, dist_bias_if_declines)
{
    pg_fire *m = fire_f64(2, &(pg_fire_opts){.init_L = 4, .train_max_len = 64}, 1);
    pg_graph *g = pg_graph_new();
    pg_tensor *b = NULL, *pos = T64(PG_SHAPE(1, 4), 0.0, 1.0, 2.0, 3.0);
    pg_module_train(&m->pm.base, false);
    cr_assert_eq(dist_if(g, m, 4, PG_F64, NULL, &b), 0, "positions 0..3 below L 4: %s", pg_graph_error(g));
    int nodes = pg_graph_num_nodes(g);
    cr_assert_eq(dist_if(g, m, 5, PG_F64, NULL, &b), 1, "a tie: the query at 4 = L");
    cr_assert_eq(dist_if(g, m, 9, PG_F64, NULL, &b), 1, "queries above L");
    cr_assert_eq(dist_if(g, m, 4, PG_F64, pos, &b), 1, "explicit positions");
    pg_module_train(&m->pm.base, true); /* train_max_len 64 > 4: draws random positions */
    cr_assert_eq(dist_if(g, m, 4, PG_F64, NULL, &b), 1, "drawing positions");
    cr_assert_null(b);
    cr_assert_eq(pg_graph_num_nodes(g), nodes, "a declining call recorded nodes");
    cr_assert_null(pg_graph_error(g), "%s", pg_graph_error(g));
    pg_graph_free(g);
    pg_tensor_free(pos);
    pg_module_free(&m->pm.base);
}

Test(pos_fire, dist_bias_if_bad_input)
{
    pg_fire *m = fire_f64(2, NULL, 1);
    pg_tensor *b = NULL, *d32 = T32(PG_SHAPE(3), -1.0f, 0.0f, 1.0f), *d2 = T64(PG_SHAPE(1, 3), -1.0, 0.0, 1.0);
    pg_pos_ctx c = self_ctx(2, 2);
    pg_graph *g = pg_graph_new();
    cr_assert_eq(m->pm.ops->dist_bias_if(g, &m->pm, d32, &c, &b), -1);
    cr_assert(strstr(pg_graph_error(g), "fire: dist_bias_if: the distances are f32[3], the module's dtype is f64"),
              "%s", pg_graph_error(g));
    pg_graph_free(g);
    g = pg_graph_new();
    cr_assert_eq(m->pm.ops->dist_bias_if(g, &m->pm, d2, &c, &b), -1);
    cr_assert(strstr(pg_graph_error(g), "fire: dist_bias needs distances (D) of f32/f64, got f64[1,3]"), "%s",
              pg_graph_error(g));
    pg_graph_free(g);
    g = pg_graph_new();
    c.heads = 3;
    cr_assert_eq(m->pm.ops->dist_bias_if(g, &m->pm, d2, &c, &b), -1);
    cr_assert(strstr(pg_graph_error(g), "fire: the module has 2 heads"), "%s", pg_graph_error(g));
    cr_assert_null(b);
    pg_graph_free(g);
    pg_tensor *own[] = {d32, d2};
    free_all(2, own);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * gradchecks, away from the kinks: no row at i == L, ReLU pre-activations away from 0
 * =================================================================================== */

static double worst_gc;
static void gradcheck_worst(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx)
{
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.check_f32 = false; /* the module's dtype is fixed at construction */
    pg_gradcheck_result r = pg_gradcheck(fn, n, in, ctx, &o);
    cr_assert(r.ok, "%s (max abs err %.3g, checked %d)", r.message, r.max_abs_err, r.checked);
    cr_assert_gt(r.checked, 0, "gradcheck checked nothing");
    note(&worst_gc, r.max_abs_err);
}

/* L = 2.5 * 1.3 = 3.25 (rows 0..3 below it, 4.. above), c = 0.35; mlp.0 set so that
 * |w0 u + b0| >= 0.05 for every u in [0, 1.5] (half the units always on, half off
 * or switching well away from the u of the grid); checked below */
static pg_fire *away_from_kinks(int64_t H, int64_t hidden, pg_fire_dist dist, uint64_t seed)
{
    pg_fire *m = fire_f64(H, &(pg_fire_opts){.hidden = hidden, .init_c = 0.35, .init_L = 2.5, .dist = dist}, seed);
    pg_set(m->L_multiplier, 0, 1.3);
    for (int64_t k = 0; k < hidden; k++) {
        double s = k % 2 ? -1.0 : 1.0;
        pg_set(m->lin0->weight, k, s * (0.4 + 0.3 * (double)k));
        pg_set(m->lin0->bias, k, s * (0.1 + 0.05 * (double)k));
    }
    return m;
}

/* the smallest |w0 u + b0| over the u of default positions 0..L-1 (all pairs) */
static double min_preact(const pg_fire *m, int64_t L)
{
    double c = fabs(pg_get(m->c, 0)), Lt = fabs(pg_get(m->L_multiplier, 0) * pg_get(m->init_L, 0)), lo = INFINITY;
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            double d = m->dist == PG_FIRE_DIST_TRIL ? fmax((double)(i - j), 0) : fabs((double)(i - j));
            double u = log1p(c * d) / (log1p(c * fmax(Lt, (double)i)) + m->eps);
            for (int64_t k = 0; k < m->hidden; k++)
                lo = fmin(lo, fabs(pg_get(m->lin0->weight, k) * u + pg_get(m->lin0->bias, k)));
        }
    return lo;
}

typedef struct tab_case {
    pg_fire *m;
    int64_t Lq, Lk;
    pg_tensor *pos;
} tab_case;

static pg_tensor *call_table(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const tab_case *t = ctx;
    pg_pos_ctx c = {t->pos, t->pos, NULL, true, false, 1, t->m->heads, 2, t->Lq, t->Lk, 1.0, PG_F64, NULL, NULL};
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

Test(pos_fire, gradcheck_every_parameter)
{
    for (int dist = 0; dist < 2; dist++) {
        /* the table w.r.t. mlp.*, c, L_multiplier (init_L is frozen): 7 positions, rows on both sides of L */
        pg_fire *m = away_from_kinks(3, 4, dist, 2);
        cr_assert_gt(min_preact(m, 7), 0.02, "a ReLU pre-activation near its kink: %g", min_preact(m, 7));
        tab_case t = {m, 7, 7, NULL};
        pg_tensor *in[8];
        int n = with_params(in, 0, &m->pm.base);
        gradcheck_worst(call_table, n, in, &t);
        /* explicit, left-padded positions (B 1, 5 of 6 tokens), one on each side of L */
        t.pos = T64(PG_SHAPE(1, 5), 0.5, 4.5, 2.0, 6.1, 1.2);
        t.Lq = t.Lk = 6;
        gradcheck_worst(call_table, n, in, &t);
        pg_tensor_free(t.pos);
        pg_module_free(&m->pm.base);
        /* inside MHA (causal with TRIL), default and unfused path: x and every parameter;
         * L 3.25 (rows on both sides) and 5.2 (above the positions 0..4: dist_bias_if) */
        for (int variant = 0; variant < 4; variant++) { /* unfused: odd; L 5.2: 2, 3 */
            pg_fire *f = away_from_kinks(2, 4, dist, 3);
            if (variant >= 2)
                pg_set(f->L_multiplier, 0, 2.08);
            cr_assert_gt(min_preact(f, 5), 0.02, "a ReLU pre-activation near its kink: %g", min_preact(f, 5));
            pg_mha *mha = mha_with(4, 2, dist == PG_FIRE_DIST_TRIL, variant % 2, &f->pm, 4);
            mha_case c = {mha, key_mask()};
            pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 9, true);
            pg_tensor *in2[16] = {x};
            n = with_params(in2, 1, &mha->base);
            gradcheck_worst(call_mha, n, in2, &c);
            pg_tensor *own[] = {x, c.mask};
            free_all(2, own);
            pg_module_free(&mha->base);
        }
    }
    cr_log_info("pos_fire gradcheck: worst abs error %.3g", worst_gc);
}

/* ===================================================================================
 * LocalAttention through band_bias
 * =================================================================================== */

/* (L, L): 0 where LocalAttention's band shows key j to query i, -inf elsewhere */
static pg_tensor *band(int64_t L, int64_t w, int64_t lb, int64_t lf)
{
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(L, L));
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            pg_set(t, i * L + j, j / w >= i / w - lb && j / w <= i / w + lf ? 0.0 : -INFINITY);
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

/* window w over L = 7 tokens (autopadded), causal or not: equal to full attention
 * with the bias table (plus the band when it does not cover everything); gradcheck */
static void local_case_run(int64_t w, bool causal, pg_fire_dist dist)
{
    int64_t L = 7;
    pg_fire *p = away_from_kinks(2, 4, dist, 21);
    pg_local_attention_config cfg = pg_local_attention_defaults(w);
    cfg.causal = causal;
    cfg.autopad = true;
    cfg.dtype = PG_F64;
    pg_local_attention *m = pg_local_attention_new(&cfg, (pg_posmod *[]){&p->pm}, 1);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_tensor *q = randt(PG_SHAPE(2, 2, L, 4), 31, true), *k = randt(PG_SHAPE(2, 2, L, 4), 32, true),
              *v = randt(PG_SHAPE(2, 2, L, 4), 33, true);
    pg_tensor *mask = TBOOL(PG_SHAPE(2, 7), 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.mask = mask});
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_pos_ctx c = {.self_attn = true, .causal = causal, .B = 2, .heads = 2, .head_dim = 4, .Lq = L, .Lk = L,
                    .dtype = PG_F64};
    pg_tensor *tb = p->pm.ops->bias_table(g, &p->pm, &c), *bm = NULL;
    if (w < L) {
        bm = band(L, w, 1, m->cfg.look_forward);
        tb = pg_add(g, tb, bm);
    }
    pg_tensor *e = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = tb, .mask = mask, .causal = causal});
    assert_close(y, e, 1e-12, "fire in local attention vs full attention");
    pg_graph_free(g);
    local_case lc = {m, mask};
    pg_tensor *in[12] = {q, k, v};
    int n = with_params(in, 3, &m->base);
    gradcheck_worst(call_local, n, in, &lc);
    pg_tensor *own[] = {q, k, v, mask, bm};
    free_all(bm ? 5 : 4, own);
    pg_module_free(&m->base);
}

Test(pos_fire, local_attention_band)
{
    for (int causal = 0; causal < 2; causal++)
        for (int dist = 0; dist < 2; dist++) {
            local_case_run(8, causal, dist); /* one window covers everything: full attention */
            local_case_run(3, causal, dist); /* windows of 3 (autopad to 9): banded full attention */
        }
    cr_log_info("pos_fire gradcheck (with local attention): worst abs error %.3g", worst_gc);
}

/* ===================================================================================
 * training-mode random positions (opts.train_max_len)
 * =================================================================================== */

Test(pos_fire, draw_positions)
{
    int64_t a[6], b[6], c[6];
    pg_rng r1 = pg_rng_init(7), r2 = pg_rng_init(7), r3 = pg_rng_init(8);
    cr_assert_eq(pg_fire_draw_positions(&r1, 6, 40, a), 0, "%s", pg_last_error());
    cr_assert_eq(pg_fire_draw_positions(&r2, 6, 40, b), 0, "%s", pg_last_error());
    cr_assert_eq(pg_fire_draw_positions(&r3, 6, 40, c), 0, "%s", pg_last_error());
    bool other = false;
    for (int i = 0; i < 6; i++) {
        cr_assert(a[i] >= 0 && a[i] < 40, "position %lld out of [0, 40)", (long long)a[i]);
        cr_assert(i == 0 || a[i] > a[i - 1], "not sorted and distinct at %d: %lld, %lld", i, (long long)a[i - 1],
                  (long long)a[i]);
        cr_assert_eq(a[i], b[i], "the same seed drew differently at %d", i);
        other = other || a[i] != c[i];
    }
    cr_assert(other, "another seed drew the same positions");
    /* L = max_len: every position */
    cr_assert_eq(pg_fire_draw_positions(&r1, 6, 6, a), 0, "%s", pg_last_error());
    for (int i = 0; i < 6; i++)
        cr_assert_eq(a[i], i);
    /* uniform over the 10 pairs of 0..4: 20000 draws, each pair 2000 +- 10% (about 7 sigma) */
    int count[5][5] = {{0}};
    for (int t = 0; t < 20000; t++) {
        cr_assert_eq(pg_fire_draw_positions(&r1, 2, 5, a), 0);
        count[a[0]][a[1]]++;
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            cr_assert(count[i][j] > 1800 && count[i][j] < 2200, "pair (%d, %d) drawn %d times of 20000", i, j,
                      count[i][j]);
    pg_clear_error();
    cr_assert_eq(pg_fire_draw_positions(NULL, 2, 5, a), -1);
    cr_assert(strstr(pg_last_error(), "pg_fire_draw_positions: need a generator") != NULL, "%s", pg_last_error());
    cr_assert_eq(pg_fire_draw_positions(&r1, 6, 5, a), -1);
    cr_assert(strstr(pg_last_error(), "L 6, max_len 5") != NULL, "%s", pg_last_error());
    cr_assert_eq(pg_fire_draw_positions(&r1, 0, 5, a), -1);
}

/* the table of m for a self-attention of L tokens; pos NULL: default positions */
static pg_tensor *table_of(pg_fire *m, int64_t L, pg_tensor *pos, pg_rng *r)
{
    pg_pos_ctx c = self_ctx(m->heads, L);
    c.pos_q = c.pos_k = pos;
    c.rng = r;
    pg_tensor *t = pg_posmod_bias_table(NULL, &m->pm, &c);
    cr_assert_not_null(t, "%s", pg_last_error());
    return t;
}

/* (1, L) f64 positions drawn as the module draws them from a generator seeded `seed` */
static pg_tensor *drawn_like(int64_t L, int64_t max_len, uint64_t seed)
{
    int64_t p[16];
    pg_rng r = pg_rng_init(seed);
    cr_assert_eq(pg_fire_draw_positions(&r, L, max_len, p), 0, "%s", pg_last_error());
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(1, L));
    for (int64_t i = 0; i < L; i++)
        pg_set(t, i, (double)p[i]);
    return t;
}

Test(pos_fire, train_positions_off_cases)
{
    /* no draw: eval mode, train_max_len <= L, explicit positions, cross-attention, Lq != Lk;
     * each equals the module without the option (same seed: same weights) and leaves the generator alone */
    pg_fire *off = fire_f64(2, &(pg_fire_opts){.init_L = 3}, 5);
    pg_tensor *pos = T64(PG_SHAPE(1, 6), 0.0, 2.0, 3.0, 7.0, 9.0, 20.0);
    pg_tensor *want = table_of(off, 6, NULL, NULL), *want_pos = table_of(off, 6, pos, NULL);
    for (int64_t tml = 3; tml <= 30; tml += 27) { /* 3 <= L, 30 > L */
        pg_fire *m = fire_f64(2, &(pg_fire_opts){.init_L = 3, .train_max_len = tml}, 5);
        cr_assert_eq(m->train_max_len, tml);
        pg_rng r = pg_rng_init(1), r0 = pg_rng_init(1);
        for (int eval = 0; eval < 2; eval++) {
            pg_module_train(&m->pm.base, !eval);
            if (eval || tml <= 6) {
                pg_tensor *t = table_of(m, 6, NULL, &r);
                assert_close(t, want, 0, "eval mode or train_max_len <= L: the default positions");
                pg_tensor_free(t);
            }
            pg_tensor *t = table_of(m, 6, pos, &r);
            assert_close(t, want_pos, 0, "explicit positions: as given");
            pg_tensor_free(t);
        }
        pg_module_train(&m->pm.base, true);
        pg_pos_ctx c = self_ctx(2, 6);
        c.rng = &r;
        c.self_attn = false; /* cross-attention */
        pg_tensor *t = pg_posmod_bias_table(NULL, &m->pm, &c);
        assert_close(t, want, 0, "cross-attention: the default positions");
        pg_tensor_free(t);
        cr_assert_eq(pg_rng_next_u64(&r), pg_rng_next_u64(&r0), "a call without a draw used the generator");
        pg_module_free(&m->pm.base);
    }
    pg_tensor *own[] = {pos, want, want_pos};
    free_all(3, own);
    pg_module_free(&off->pm.base);
}

Test(pos_fire, train_positions_are_drawn)
{
    /* training, L = 6 < train_max_len = 40: the bias at the positions drawn from the call's generator */
    pg_fire *m = fire_f64(3, &(pg_fire_opts){.init_L = 8, .train_max_len = 40}, 5);
    pg_rng r = pg_rng_init(11);
    pg_tensor *got = table_of(m, 6, NULL, &r), *got2 = table_of(m, 6, NULL, &r);
    assert_shape(got, 3, (int64_t[]){3, 6, 6});
    pg_tensor *p = drawn_like(6, 40, 11), *want = table_of(m, 6, p, NULL); /* (1, 3, 6, 6) */
    pg_tensor *got4 = pg_reshape(NULL, got, PG_SHAPE(1, 3, 6, 6));
    assert_close(got4, want, 0, "training: the drawn positions");
    pg_tensor_free(got4);
    double diff = 0;
    for (int64_t i = 0; i < 108; i++)
        diff = fmax(diff, fabs(pg_get(got, i) - pg_get(got2, i)));
    cr_assert_gt(diff, 1e-6, "the second call drew the same positions");
    /* a NULL generator: named */
    pg_pos_ctx c = self_ctx(3, 6);
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c),
                 "fire: train_max_len 40 in training mode draws random positions and needs the call's generator");
    /* inside MultiheadAttention: args.rng draws what args.pos gives explicitly */
    pg_mha *mha = mha_with(6, 3, true, false, &m->pm, 4);
    pg_tensor *x = randt(PG_SHAPE(2, 6, 6), 3, false);
    pg_rng ra = pg_rng_init(11);
    pg_tensor *y = pg_mha_forward(NULL, mha, x, NULL, &(pg_attn_args){.rng = &ra});
    cr_assert_not_null(y, "%s", pg_last_error());
    pg_tensor *pp = pg_broadcast_to(NULL, p, PG_SHAPE(2, 6));
    pg_tensor *e = pg_mha_forward(NULL, mha, x, NULL, &(pg_attn_args){.pos = pp});
    cr_assert_not_null(e, "%s", pg_last_error());
    assert_close(y, e, 1e-15, "MultiheadAttention: drawn vs explicit positions");
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, NULL), "train_max_len 40");
    pg_tensor *own[] = {got, got2, p, want, x, y, pp, e};
    free_all(8, own);
    pg_module_free(&mha->base);
}

/* the table at positions drawn from a generator re-seeded per call (so every call draws the same) */
static pg_tensor *call_drawn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    pg_fire *m = ctx;
    pg_rng r = pg_rng_init(13);
    pg_pos_ctx c = self_ctx(m->heads, 6);
    c.rng = &r;
    return pg_posmod_bias_table(g, &m->pm, &c);
}

Test(pos_fire, train_positions_gradcheck)
{
    for (int dist = 0; dist < 2; dist++) {
        pg_fire *m = away_from_kinks(3, 4, dist, 2);
        m->train_max_len = 12; /* positions in 0..11, L = 3.25 between them */
        pg_tensor *p = drawn_like(6, 12, 13);
        double c = fabs(pg_get(m->c, 0)), Lt = fabs(pg_get(m->L_multiplier, 0) * pg_get(m->init_L, 0)), lo = INFINITY;
        for (int64_t i = 0; i < 6; i++)
            for (int64_t j = 0; j < 6; j++) {
                double pi = pg_get(p, i), pj = pg_get(p, j);
                double d = dist == PG_FIRE_DIST_TRIL ? fmax(pi - pj, 0) : fabs(pi - pj);
                double u = log1p(c * d) / (log1p(c * fmax(Lt, pi)) + m->eps);
                for (int64_t k = 0; k < m->hidden; k++)
                    lo = fmin(lo, fabs(pg_get(m->lin0->weight, k) * u + pg_get(m->lin0->bias, k)));
            }
        cr_assert_gt(lo, 0.02, "a ReLU pre-activation near its kink at the drawn positions: %g", lo);
        pg_tensor *in[8];
        int n = with_params(in, 0, &m->pm.base);
        gradcheck_worst(call_drawn, n, in, m);
        pg_tensor_free(p);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_fire gradcheck (drawn positions): worst abs error %.3g", worst_gc);
}

Test(pos_fire, train_positions_local_attention)
{
    /* LocalAttention refuses the option in training mode and ignores it in eval mode */
    pg_fire *p = fire_f64(2, &(pg_fire_opts){.train_max_len = 40}, 5);
    pg_local_attention_config cfg = pg_local_attention_defaults(3);
    cfg.autopad = true;
    cfg.dtype = PG_F64;
    pg_local_attention *m = pg_local_attention_new(&cfg, (pg_posmod *[]){&p->pm}, 1);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_tensor *q = randt(PG_SHAPE(1, 2, 7, 4), 31, false);
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, &(pg_local_args){.rng = &r}),
                 "fire: band_bias: train_max_len 40 (random positions in training) is not supported by LocalAttention");
    pg_module_train(&m->base, false);
    pg_tensor *y = pg_local_attention_forward(NULL, m, q, q, q, &(pg_local_args){.rng = &r});
    cr_assert_not_null(y, "%s", pg_last_error());
    pg_tensor *own[] = {q, y};
    free_all(2, own);
    pg_module_free(&m->base);
}

/* ===================================================================================
 * training
 * =================================================================================== */

Test(pos_fire, trains_in_a_one_block_lm)
{
    /* L0 = 4 < the 8 tokens: rows on both sides of L, so L_multiplier gets a gradient */
    pg_fire_opts fo = {.init_L = 4};
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 1);
    c.dtype = PG_F64;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){"fire", NULL, &fo};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_fire *f = (pg_fire *)lm->blocks[0]->attn->pos[0];
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.0.attn.pos.L_multiplier"), "%s", pg_last_error());
    double c0 = pg_get(f->c, 0), lm0 = pg_get(f->L_multiplier, 0);
    pg_tensor *ids = TI64(PG_SHAPE(2, 8), 1, 2, 3, 4, 5, 6, 0, 1, 6, 5, 4, 3, 2, 1, 0, 6);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_optim_hparams h = pg_adam_hparams(1e-2);
    pg_optim *opt = pg_optim_new(PG_ADAM, &h);
    cr_assert_geq(pg_optim_add_group(opt, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    double first = 0, last = 0;
    for (int step = 0; step < 30; step++) {
        pg_graph *g = pg_graph_new();
        pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
        cr_assert_not_null(loss, "%s", pg_graph_error(g));
        pg_optim_zero_grad(opt);
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
        last = pg_item(loss);
        first = step == 0 ? last : first;
        pg_graph_free(g);
    }
    cr_assert_lt(last, first, "loss %g -> %g", first, last);
    cr_assert_neq(pg_get(f->c, 0), c0, "c did not change");
    cr_assert_neq(pg_get(f->L_multiplier, 0), lm0, "L_multiplier did not change");
    cr_assert_eq(pg_get(f->init_L, 0), 4.0, "init_L is frozen");
    cr_log_info("pos_fire lm: loss %.4f -> %.4f, c %.4f -> %.4f, L_multiplier %.4f -> %.4f", first, last, c0,
                pg_get(f->c, 0), lm0, pg_get(f->L_multiplier, 0));
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

Test(pos_fire, f32_agrees_with_f64)
{
    pg_rng r = pg_rng_init(3);
    pg_posmod *m32 = pg_fire_new(3, &(pg_fire_opts){.init_L = 2}, PG_F32, &r);
    pg_fire *m64 = fire_f64(3, &(pg_fire_opts){.init_L = 2}, 3);
    cr_assert_not_null(m32, "%s", pg_last_error());
    pg_tensor *pos = T32(PG_SHAPE(1, 4), 0.5f, 1.0f, 3.0f, 2.5f);
    pg_tensor *pos64 = T64(PG_SHAPE(1, 4), 0.5, 1.0, 3.0, 2.5);
    pg_pos_ctx c = {pos, pos, NULL, true, false, 1, 3, 1, 4, 4, 1.0, PG_F32, NULL, NULL};
    pg_tensor *b32 = pg_posmod_bias_table(NULL, m32, &c);
    c.dtype = PG_F64;
    c.pos_q = c.pos_k = pos64;
    pg_tensor *b64 = pg_posmod_bias_table(NULL, &m64->pm, &c);
    cr_assert_not_null(b32, "%s", pg_last_error());
    cr_assert_not_null(b64, "%s", pg_last_error());
    cr_assert_eq(b32->dtype, PG_F32);
    cr_assert_lt(max_err(b32, b64), 1e-6);
    pg_tensor *own[] = {pos, pos64, b32, b64};
    free_all(4, own);
    pg_module_free(&m32->base);
    pg_module_free(&m64->pm.base);
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_fire, bad_options)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_fire_new(0, NULL, PG_F64, &r), "pg_fire_new: need 1 <= heads <= 2^24 and 1 <= hidden");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.hidden = -1}, PG_F64, &r), "hidden -1");
    ASSERT_FAILS(pg_fire_new(4, &(pg_fire_opts){.heads = 3}, PG_F64, &r), "opts.heads 3 differs from heads 4");
    ASSERT_FAILS(pg_fire_new(2, NULL, PG_I64, &r), "pg_fire_new: need a float dtype and a generator (dtype i64");
    ASSERT_FAILS(pg_fire_new(2, NULL, PG_F64, NULL), "generator NULL");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.init_L = -5}, PG_F64, &r), "init_L > 0 (0: 512)");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.init_L = NAN}, PG_F64, &r), "init_L nan");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.init_c = INFINITY}, PG_F64, &r), "init_c inf");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.eps = -1e-3}, PG_F64, &r), "eps -0.001");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.train_max_len = -1}, PG_F64, &r),
                 "pg_fire_new: need 0 <= train_max_len <= 2^53 (0: off), got -1");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.train_max_len = (1LL << 53) + 1}, PG_F64, &r), "train_max_len");
    ASSERT_FAILS(pg_fire_new(2, &(pg_fire_opts){.dist = 2}, PG_F64, &r),
                 "dist must be PG_FIRE_DIST_ABS or PG_FIRE_DIST_TRIL, got 2");
    pg_posmod_args a = {.dim = 8, .heads = 0, .dtype = PG_F64, .rng = &r};
    ASSERT_FAILS(pg_posmod_make_fire(&a), "needs heads >= 1");
    ASSERT_FAILS(pg_posmod_make_fire(NULL), "pg_posmod_make_fire: args is NULL");
}

Test(pos_fire, bad_input)
{
    pg_fire *m = fire_f64(2, NULL, 1);
    pg_tensor *longer = T64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5);
    pg_pos_ctx c = {longer, longer, NULL, true, false, 1, 2, 1, 5, 5, 1.0, PG_F64, NULL, NULL};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "pos is f64[1,6], expected (B, Lp) = (1, <= 5)");
    c.pos_q = c.pos_k = NULL;
    c.heads = 3;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "fire: the module has 2 heads of dtype f64, the attention 3");
    c.heads = 2;
    c.dtype = PG_F32;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "the attention 2 heads of dtype f32");
    pg_mha *mha = mha_with(6, 3, false, false, &m->pm, 1);
    pg_tensor *x = randt(PG_SHAPE(1, 5, 6), 1, false);
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, NULL), "the module has 2 heads");
    pg_tensor *own[] = {longer, x};
    free_all(2, own);
    pg_module_free(&mha->base);
}
