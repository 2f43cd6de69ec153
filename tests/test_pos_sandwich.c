/* Sandwich (nn/pos_sandwich.c): the reference check values, PyTorch parity of the
 * bias table for every option (tests/fixtures/gen_pos_sandwich.py), MultiheadAttention
 * parity on the fused and the unfused path, gradchecks through attention, a 1-block
 * LM, bad options. */
#include <stdlib.h>

#include <math.h>

#include "../nn/local_attention.h"
#include "../nn/pos_sandwich.h"
#include "testutil.h"

static pg_sandwich *sandwich_new(int64_t H, int64_t head_dim, const pg_sandwich_opts *o)
{
    pg_posmod *m = pg_sandwich_new(H, head_dim, o);
    cr_assert_not_null(m, "%s", pg_last_error());
    return (pg_sandwich *)m;
}

Test(pos_sandwich, check_values)
{
    /* docs/pos/sandwich.md "Check values": D' = 8, H = 2, head h = 1 (index 0), d = 0..3 */
    pg_sandwich *s = sandwich_new(2, 8, NULL);
    pg_tensor *d = T64(PG_SHAPE(6), 0, 1, 2, 3, -3, 1e6);
    pg_tensor *b = s->pm.ops->dist_bias(NULL, &s->pm, d, NULL);
    cr_assert_not_null(b, "%s", pg_last_error());
    assert_shape(b, 2, (int64_t[]){2, 6});
    const double want[] = {0, -0.001262, -0.005034, -0.01128};
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(pg_get(b, i), want[i], 5e-6, "d %d: %.9g", i, pg_get(b, i));
    cr_assert_eq(pg_get(b, 0), 0.0);                      /* b(0) = 0 exactly */
    cr_assert_eq(pg_get(b, 4), pg_get(b, 3));              /* |d| */
    cr_assert(pg_get(b, 5) <= 0 && pg_get(b, 5) >= -2.0); /* b <= 0, bounded: -D' / (8h / H) */
    for (int i = 0; i < 6; i++)                            /* head 2: half of head 1 */
        cr_assert_float_eq(pg_get(b, 6 + i), pg_get(b, i) / 2, 1e-15);
    pg_tensor_free(b);
    /* tril: keys after the query get distance 0 */
    s->dist = PG_SANDWICH_DIST_TRIL;
    b = s->pm.ops->dist_bias(NULL, &s->pm, d, NULL);
    cr_assert_eq(pg_get(b, 4), 0.0);
    cr_assert_float_eq(pg_get(b, 3), want[3], 5e-6);
    pg_tensor_free(b);
    pg_tensor_free(d);
    cr_assert_eq(pg_module_num_elements(&s->pm.base), 0);
    pg_module_free(&s->pm.base);
}

enum { P_NONE, P_SELF, P_CROSS };

typedef struct scase {
    const char *name;
    int64_t H, Lq, Lk, dim;
    pg_sandwich_opts o;
    int pmode;
} scase;

static const scase CASES[] = {
    {"default", 4, 5, 5, 8, {0}, P_NONE},
    {"tril_end", 3, 3, 6, 16, {.dist = PG_SANDWICH_DIST_TRIL}, P_NONE},
    {"base_scale", 2, 5, 5, 6, {.base = 100.0, .scale = 4.0}, P_NONE},
    {"pad", 2, 5, 5, 8, {0}, P_SELF},
    {"cross", 3, 3, 5, 4, {.dist = PG_SANDWICH_DIST_TRIL}, P_CROSS},
    {"far", 2, 40, 40, 32, {0}, P_NONE},
};

Test(pos_sandwich, table_matches_torch)
{
    pg_tensor_list l = fixture("pos_sandwich_table.safetensors");
    double worst = 0;
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const scase *k = &CASES[ci];
        char key[64];
        /* D' from the head dim, or from opts.dim with another head dim */
        pg_sandwich_opts o = k->o;
        if (ci % 2)
            o.dim = k->dim;
        pg_sandwich *s = sandwich_new(k->H, ci % 2 ? 2 : k->dim, &o);
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
        pg_tensor *out = pg_posmod_bias_table(NULL, &s->pm, &c);
        cr_assert_not_null(out, "%s: %s", k->name, pg_last_error());
        cr_assert_eq(out->ndim, k->pmode == P_NONE ? 3 : 4);
        assert_close(out, fx(&l, "%s.out", k->name), 1e-10, k->name);
        double e = max_err(out, fx(&l, "%s.out", k->name));
        worst = e > worst ? e : worst;
        pg_tensor_free(out);
        pg_tensor_free(pq);
        if (pk != pq)
            pg_tensor_free(pk);
        pg_module_free(&s->pm.base);
    }
    cr_log_info("pos_sandwich table parity: outputs %.3g", worst);
    pg_tensor_list_free_all(&l);
}

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, bool unfused, pg_posmod *pos, uint64_t seed)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal, .unfused = unfused}, &pos, 1, seed);
}

Test(pos_sandwich, mha_matches_torch_fused_and_unfused)
{
    pg_tensor_list l = fixture("pos_sandwich_mha.safetensors");
    for (int unfused = 0; unfused < 2; unfused++) {
        pg_mha *m = mha_with(8, 2, true, unfused, &sandwich_new(2, 4, NULL)->pm, 1);
        load_params(&m->base, &l, "");
        pg_tensor *x = fx_copy(&l, "x", true);
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = fx(&l, "mask")});
        cr_assert_not_null(out, "%s", pg_graph_error(g));
        assert_close(out, fx(&l, "out"), 1e-10, unfused ? "unfused out" : "fused out");
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "dy")), 0, "%s", pg_graph_error(g));
        assert_close(x->grad, fx(&l, "grad.x"), 1e-10, "grad x");
        check_param_grads(&m->base, &l, "", 1e-10);
        cr_log_info("pos_sandwich mha parity (%s): out %.3g, grad x %.3g", unfused ? "unfused" : "fused",
                    max_err(out, fx(&l, "out")), max_err(x->grad, fx(&l, "grad.x")));
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&m->base);
    }
    pg_tensor_list_free_all(&l);
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

Test(pos_sandwich, gradcheck_in_mha_fused_and_unfused)
{
    pg_gradcheck_opts go = f64_only();
    double worst = 0;
    for (int dist = 0; dist < 2; dist++)
        for (int unfused = 0; unfused < 2; unfused++) {
            pg_mha *m = mha_with(4, 2, dist == PG_SANDWICH_DIST_TRIL, unfused,
                                 &sandwich_new(2, 2, &(pg_sandwich_opts){.dist = dist, .base = 3.0})->pm, 4);
            mha_case c = {m, key_mask()};
            pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 9, true);
            pg_tensor *in[16] = {x};
            int n = with_params(in, 1, &m->base);
            pg_gradcheck_result r = pg_gradcheck(call_mha, n, in, &c, &go);
            cr_assert(r.ok, "%s (max abs err %.3g)", r.message, r.max_abs_err);
            worst = r.max_abs_err > worst ? r.max_abs_err : worst;
            pg_tensor *own[] = {x, c.mask};
            free_all(2, own);
            pg_module_free(&m->base);
        }
    cr_log_info("pos_sandwich gradcheck: worst abs error %.3g", worst);
}

Test(pos_sandwich, trains_in_lm)
{
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 1);
    c.dtype = PG_F64;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){"sandwich", NULL, NULL};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_tensor *ids = TI64(PG_SHAPE(2, 4), 1, 2, 3, 4, 6, 5, 0, 2);
    pg_graph *g = pg_graph_new();
    assert_adam_step_changes(&lm->base, &lm->base, g, pg_lm_loss(g, lm, ids, ids, NULL));
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

Test(pos_sandwich, bad_options_and_input)
{
    ASSERT_FAILS(pg_sandwich_new(0, 8, NULL), "pg_sandwich_new: need 1 <= heads");
    ASSERT_FAILS(pg_sandwich_new(4, 8, &(pg_sandwich_opts){.heads = 3}), "opts.heads 3 differs from heads 4");
    ASSERT_FAILS(pg_sandwich_new(2, 7, NULL), "D' (opts.dim, 0: the head dim) must be even and >= 2, got 7");
    ASSERT_FAILS(pg_sandwich_new(2, 0, NULL), "must be even and >= 2, got 0");
    ASSERT_FAILS(pg_sandwich_new(2, 8, &(pg_sandwich_opts){.dim = 5}), "got 5");
    ASSERT_FAILS(pg_sandwich_new(2, 8, &(pg_sandwich_opts){.base = -2}), "base and scale must be finite numbers > 0");
    ASSERT_FAILS(pg_sandwich_new(2, 8, &(pg_sandwich_opts){.scale = INFINITY}), "got base 10000, scale inf");
    ASSERT_FAILS(pg_sandwich_new(2, 8, &(pg_sandwich_opts){.dist = 3}), "dist must be PG_SANDWICH_DIST_ABS");
    ASSERT_FAILS(pg_posmod_make_sandwich(NULL), "pg_posmod_make_sandwich: args is NULL");
    ASSERT_FAILS(pg_posmod_make_sandwich(&(pg_posmod_args){.dim = 8, .dtype = PG_F64}), "needs heads >= 1");
    pg_sandwich *s = sandwich_new(2, 4, NULL);
    pg_tensor *longer = T64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5), *d2 = T64(PG_SHAPE(1, 2), 0, 1);
    pg_pos_ctx c = {longer, longer, NULL, true, false, 1, 2, 1, 5, 5, 1.0, PG_F64, NULL, NULL};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &s->pm, &c), "pos is f64[1,6], expected (B, Lp) = (1, <= 5)");
    c.pos_q = c.pos_k = NULL;
    c.heads = 3;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &s->pm, &c), "sandwich: the module has 2 heads, the attention 3");
    ASSERT_FAILS(s->pm.ops->dist_bias(NULL, &s->pm, d2, NULL), "sandwich: dist_bias needs distances (D) of f32/f64");
    pg_tensor *own[] = {longer, d2};
    free_all(2, own);
    pg_module_free(&s->pm.base);
}

/* LocalAttention: the band takes dist_bias (fused and unfused) = full attention with the
 * bias table and the band as a bias; gradcheck through it */
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

Test(pos_sandwich, local_attention_band)
{
    pg_gradcheck_opts go = f64_only();
    double worst = 0;
    for (int variant = 0; variant < 4; variant++) { /* causal or not, fused or not */
        bool causal = variant & 1, unfused = variant & 2;
        pg_posmod *p = &sandwich_new(2, 4, &(pg_sandwich_opts){.base = 3.0})->pm;
        pg_local_attention_config cfg = pg_local_attention_defaults(2);
        cfg.causal = causal;
        cfg.unfused = unfused;
        cfg.dtype = PG_F64;
        pg_local_attention *m = pg_local_attention_new(&cfg, (pg_posmod *[]){p}, 1);
        cr_assert_not_null(m, "%s", pg_last_error());
        int64_t L = 8;
        pg_tensor *q = randt(PG_SHAPE(2, 2, L, 4), 31, true), *k = randt(PG_SHAPE(2, 2, L, 4), 32, true),
                  *v = randt(PG_SHAPE(2, 2, L, 4), 33, true);
        pg_tensor *mask = TBOOL(PG_SHAPE(2, 8), 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1);
        pg_graph *g = pg_graph_new();
        pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.mask = mask});
        cr_assert_not_null(y, "%s", pg_graph_error(g));
        pg_pos_ctx c = {.self_attn = true, .causal = causal, .B = 2, .heads = 2, .head_dim = 4, .Lq = L, .Lk = L,
                        .dtype = PG_F64};
        pg_tensor *bm = band(L, 2, 1, m->cfg.look_forward);
        pg_tensor *tb = pg_add(g, p->ops->bias_table(g, p, &c), bm);
        pg_tensor *e = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = tb, .mask = mask, .causal = causal});
        assert_close(y, e, 1e-12, "sandwich in local vs banded full");
        pg_graph_free(g);
        local_case lc = {m, mask};
        pg_tensor *in[] = {q, k, v};
        pg_gradcheck_result r = pg_gradcheck(call_local, 3, in, &lc, &go);
        cr_assert(r.ok, "%s (max abs err %.3g)", r.message, r.max_abs_err);
        worst = r.max_abs_err > worst ? r.max_abs_err : worst;
        pg_tensor *own[] = {q, k, v, mask, bm};
        free_all(5, own);
        pg_module_free(&m->base);
    }
    cr_log_info("pos_sandwich gradcheck (local attention): worst abs error %.3g", worst);
}
