/* CoPE (nn/pos_cope.c): hand-computed cases (also the soft one-hot), PyTorch parity of the bias and its
 * gradients for every option (tests/fixtures/gen_pos_cope.py), MultiheadAttention
 * parity, gradchecks w.r.t. q, k, v and E away from integer positions and the
 * clamp, names and shapes, training (MHA, a 1-block LM with Adam), bad options,
 * LocalAttention's refusal. */
#include <stdlib.h>

#include <math.h>

#include "../nn/local_attention.h"
#include "../nn/pos_cope.h"
#include "testutil.h"

static pg_cope *cope_f64(int64_t Dh, int64_t max_len, const pg_cope_opts *o)
{
    pg_posmod *m = pg_cope_new(Dh, max_len, o, PG_F64);
    cr_assert_not_null(m, "%s", pg_last_error());
    return (pg_cope *)m;
}

static pg_pos_ctx ctx_for(const pg_tensor *q, const pg_tensor *k, pg_tensor *mask, bool causal, double scale)
{
    return (pg_pos_ctx){.mask = mask, .self_attn = q->shape[2] == k->shape[2], .causal = causal, .B = q->shape[0],
                        .heads = q->shape[1], .head_dim = q->shape[3], .Lq = q->shape[2], .Lk = k->shape[2],
                        .scale = scale, .dtype = PG_F64};
}

/* ===================================================================================
 * a hand-computed case
 * =================================================================================== */

Test(pos_cope, hand_computed)
{
    /* docs/pos/cope.md "Check values": Dh = 1, q_i = ln 3, k_j = 1, scale 1: every gate
     * sigmoid(ln 3) = 3/4; causal L = 3: p = 0.75 (j = i), 1.5, 2.25; E[n] = n^2, so
     * z_i[n] = ln 3 n^2 and bias = ln 3 (floor^2 + w (2 floor + 1)): 0.75, 2.5, 5.25 (x ln 3);
     * npos 3 clamps p = 2.25 to 2: 4 ln 3. x-transformers' convention (no scale on the bias). */
    const double l3 = log(3.0);
    for (int npos = 3; npos <= 4; npos++) {
        pg_cope *m = cope_f64(1, 0, &(pg_cope_opts){.convention = PG_COPE_XT, .npos = npos});
        for (int n = 0; n < npos; n++)
            pg_set(m->pos_emb, n, (double)(n * n));
        pg_tensor *q = T64(PG_SHAPE(1, 1, 3, 1), l3, l3, l3), *k = T64(PG_SHAPE(1, 1, 3, 1), 1, 1, 1);
        q->requires_grad = true;
        pg_pos_ctx c = ctx_for(q, k, NULL, true, 1.0);
        pg_graph *g = pg_graph_new();
        pg_tensor *b = m->pm.ops->mod_bias(g, &m->pm, q, k, k, &c);
        cr_assert_not_null(b, "%s", pg_graph_error(g));
        assert_shape(b, 4, (int64_t[]){1, 1, 3, 3});
        double p20 = npos == 3 ? 4.0 : 5.25;
        const double want[9] = {0.75, 0, 0, 2.5, 0.75, 0, p20, 2.5, 0.75}; /* hidden: p = 0, z[0] = 0 */
        for (int i = 0; i < 9; i++)
            cr_assert_float_eq(pg_get(b, i), want[i] * l3, 1e-14, "npos %d entry %d: %.15g", npos, i, pg_get(b, i));
        /* d bias_20 / d q_2: z through E at p (ln3-free part) + gates; with the clamp only z: E[2] = 4 */
        pg_tensor *dy = T64(PG_SHAPE(1, 1, 3, 3), 0, 0, 0, 0, 0, 0, 1, 0, 0);
        cr_assert_eq(pg_backward_with(g, b, dy), 0, "%s", pg_graph_error(g));
        if (npos == 3)
            cr_assert_float_eq(pg_get(q->grad, 2), 4.0, 1e-14, "clamped: %.15g", pg_get(q->grad, 2));
        else /* 5.25 + ln3 * (z[3] - z[2] = 5) * dp/dq, dp/dq = 3 sigmoid' = 3 * 3/16 */
            cr_assert_float_eq(pg_get(q->grad, 2), 5.25 + l3 * 5 * 9.0 / 16, 1e-14, "%.15g", pg_get(q->grad, 2));
        pg_graph_free(g);
        pg_tensor *own[] = {q, k, dy};
        free_all(3, own);
        pg_module_free(&m->pm.base);
    }
}

Test(pos_cope, hand_computed_soft_onehot)
{
    /* docs/pos/cope.md "Check values": Dh = 1, q = 1, k = 0: every gate 1/2; causal L = 3:
     * p = 0.5 (j = i), 1, 1.5, hidden p = 0. E[n] = n^2, npos 3, temp 1 / ln 2: weights
     * prop. to 2^-|p - n|: p 0.5 -> (2, 2, 1) / 5, bias 1.2; p 1 -> (1, 2, 1) / 4, 1.5;
     * p 1.5 -> (1, 2, 2) / 5, 2.0; p 0 -> (4, 2, 1) / 7, 6/7. d bias_20 / d E = q a = (0.2, 0.4, 0.4). */
    pg_cope *m = cope_f64(1, 0,
                          &(pg_cope_opts){.convention = PG_COPE_XT, .npos = 3, .soft_onehot = true,
                                          .soft_onehot_temp = 1 / log(2.0)});
    for (int n = 0; n < 3; n++)
        pg_set(m->pos_emb, n, (double)(n * n));
    pg_tensor *q = T64(PG_SHAPE(1, 1, 3, 1), 1, 1, 1), *k = T64(PG_SHAPE(1, 1, 3, 1), 0, 0, 0);
    pg_pos_ctx c = ctx_for(q, k, NULL, true, 1.0);
    pg_graph *g = pg_graph_new();
    pg_tensor *b = m->pm.ops->mod_bias(g, &m->pm, q, k, k, &c);
    cr_assert_not_null(b, "%s", pg_graph_error(g));
    const double h = 6.0 / 7, want[9] = {1.2, h, h, 1.5, 1.2, h, 2.0, 1.5, 1.2};
    for (int i = 0; i < 9; i++)
        cr_assert_float_eq(pg_get(b, i), want[i], 1e-14, "entry %d: %.15g", i, pg_get(b, i));
    pg_tensor *dy = T64(PG_SHAPE(1, 1, 3, 3), 0, 0, 0, 0, 0, 0, 1, 0, 0);
    cr_assert_eq(pg_backward_with(g, b, dy), 0, "%s", pg_graph_error(g));
    const double dE[3] = {0.2, 0.4, 0.4};
    for (int n = 0; n < 3; n++)
        cr_assert_float_eq(pg_get(m->pos_emb->grad, n), dE[n], 1e-14, "dE[%d]", n);
    pg_graph_free(g);
    pg_tensor *own[] = {q, k, dy};
    free_all(3, own);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * parity with PyTorch
 * =================================================================================== */

typedef struct ccase {
    const char *name;
    pg_cope_convention conv;
    int64_t npos;
    double scale;
    bool causal, mask;
    pg_cope_gates gates;
    bool nodiv;
    double temp; /* > 0: the soft one-hot; -1: with temp 0 (x-transformers' 0.05) */
} ccase;

/* gen_pos_cope.py's CASES (the sizes come from the fixture) */
static const ccase CASES[] = {
    {"ram", PG_COPE_RAM, 6, 0.5, true, true, PG_COPE_GATES_KEY, false, 0},
    {"ram_clamp", PG_COPE_RAM, 3, 0.7, true, false, PG_COPE_GATES_KEY, false, 0},
    {"ram_nodiv", PG_COPE_RAM, 6, 0.5, true, true, PG_COPE_GATES_KEY, true, 0},
    {"ram_val", PG_COPE_RAM, 5, 0.6, true, false, PG_COPE_GATES_VALUE, false, 0},
    {"xt", PG_COPE_XT, 0, 0.5, true, true, PG_COPE_GATES_KEY, false, 0}, /* npos 0: XT's default 16 */
    {"xt_bidir", PG_COPE_XT, 4, 0.5, false, true, PG_COPE_GATES_KEY, false, 0},
    {"xt_cross", PG_COPE_XT, 8, 0.8, true, false, PG_COPE_GATES_VALUE, false, 0},
    {"xt_soft", PG_COPE_XT, 0, 0.5, true, true, PG_COPE_GATES_KEY, false, -1}, /* 0.05 by default */
    {"xt_soft_t", PG_COPE_XT, 4, 0.9, false, true, PG_COPE_GATES_KEY, false, 0.7},
    {"ram_soft", PG_COPE_RAM, 3, 0.7, true, false, PG_COPE_GATES_VALUE, false, 0.3},
};

Test(pos_cope, matches_torch_every_option)
{
    pg_tensor_list l = fixture("pos_cope.safetensors");
    double worst_out = 0, worst_grad = 0;
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const ccase *k = &CASES[ci];
        char key[64];
        snprintf(key, sizeof key, "%s.q", k->name);
        pg_tensor *q = fx_copy(&l, key, true);
        snprintf(key, sizeof key, "%s.k", k->name);
        pg_tensor *kk = fx_copy(&l, key, true);
        snprintf(key, sizeof key, "%s.v", k->name);
        pg_tensor *v = fx_copy(&l, key, true);
        pg_cope *m = cope_f64(q->shape[3], 0,
                              &(pg_cope_opts){.convention = k->conv, .npos = k->npos, .nodiv = k->nodiv,
                                              .gates = k->gates, .soft_onehot = k->temp != 0,
                                              .soft_onehot_temp = k->temp > 0 ? k->temp : 0});
        pg_copy_into(m->pos_emb, fx(&l, "%s.pos_emb", k->name)); /* checks the shape too */
        pg_tensor *mask = k->mask ? fx(&l, "%s.mask", k->name) : NULL;
        pg_pos_ctx c = ctx_for(q, kk, mask, k->causal, k->scale);
        pg_graph *g = pg_graph_new();
        pg_tensor *out = m->pm.ops->mod_bias(g, &m->pm, q, kk, v, &c);
        cr_assert_not_null(out, "%s: %s", k->name, pg_graph_error(g));
        snprintf(key, sizeof key, "%s out", k->name);
        assert_close(out, fx(&l, "%s.out", k->name), 1e-10, key);
        double e = max_err(out, fx(&l, "%s.out", k->name));
        worst_out = e > worst_out ? e : worst_out;
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "%s.dy", k->name)), 0, "%s", pg_graph_error(g));
        pg_tensor *ts[] = {q, kk, v, m->pos_emb};
        const char *names[] = {"q", "k", "v", "pos_emb"};
        for (int i = 0; i < 4; i++) {
            pg_tensor *want = fx(&l, "%s.grad.%s", k->name, names[i]);
            snprintf(key, sizeof key, "%s grad %s", k->name, names[i]);
            if (!ts[i]->grad) { /* v without value gates: no gradient, torch's zeros */
                for (int64_t j = 0; j < want->numel; j++)
                    cr_assert_eq(pg_get(want, j), 0.0, "%s", key);
                continue;
            }
            assert_close(ts[i]->grad, want, 1e-10, key);
            e = max_err(ts[i]->grad, want);
            worst_grad = e > worst_grad ? e : worst_grad;
        }
        pg_graph_free(g);
        pg_tensor *own[] = {q, kk, v};
        free_all(3, own);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_cope parity: outputs %.3g, gradients %.3g", worst_out, worst_grad);
    pg_tensor_list_free_all(&l);
}

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, pg_posmod *pos, uint64_t seed)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal}, &pos, 1, seed);
}

/* both paths of MultiheadAttention: the fused one (the module's attend hook,
 * pg_cope_attention) and the reference (mod_bias, then softmax) */
Test(pos_cope, mha_matches_torch)
{
    pg_tensor_list l = fixture("pos_cope.safetensors");
    for (int unfused = 0; unfused < 2; unfused++) {
        pg_posmod *pos = &cope_f64(2, 0, &(pg_cope_opts){.npos = 6})->pm;
        pg_mha *m = test_mha(8, 4, (test_mha_flags){.causal = true, .unfused = unfused}, &pos, 1, 1);
        load_params(&m->base, &l, "mha.");
        pg_tensor *x = fx_copy(&l, "mha.x", true);
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = fx(&l, "mha.mask")});
        cr_assert_not_null(out, "%s", pg_graph_error(g));
        bool attended = count_nodes(g, "pg_cope_attention") > 0; /* which op made the attention */
        cr_assert_eq(attended, !unfused, "unfused %d: pg_cope_attention %s", unfused, attended ? "used" : "not used");
        assert_close(out, fx(&l, "mha.out"), 1e-10, "mha out");
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "mha.dy")), 0, "%s", pg_graph_error(g));
        assert_close(x->grad, fx(&l, "mha.grad.x"), 1e-10, "grad x");
        check_param_grads(&m->base, &l, "mha.", 1e-10);
        cr_log_info("pos_cope mha parity (%s): out %.3g, grad x %.3g, grad pos_emb %.3g",
                    unfused ? "reference" : "fused", max_err(out, fx(&l, "mha.out")),
                    max_err(x->grad, fx(&l, "mha.grad.x")),
                    max_err(pg_module_find_param(&m->base, "pos.pos_emb")->grad, fx(&l, "mha.grad.pos.pos_emb")));
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&m->base);
    }
    pg_tensor_list_free_all(&l);
}

/* ===================================================================================
 * gradchecks
 * =================================================================================== */

typedef struct gc_case {
    pg_cope *m;
    pg_pos_ctx c;
} gc_case;

static pg_tensor *call_bias(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    gc_case *t = ctx;
    return t->m->pm.ops->mod_bias(g, &t->m->pm, in[0], in[1], in[2], &t->c);
}

/* the positions (2) of the visible entries, by hand; true when every one (and every
 * unclamped sum's distance to npos - 1) is at least 1e-3 from an integer */
static bool away_from_kinks(const pg_cope *m, const pg_tensor *q, const pg_tensor *k, const pg_tensor *v,
                            const pg_pos_ctx *c)
{
    const pg_tensor *kg = m->gates == PG_COPE_GATES_VALUE ? v : k;
    int64_t B = q->shape[0], H = q->shape[1], Lq = c->Lq, Lk = c->Lk, D = q->shape[3];
    for (int64_t bh = 0; bh < B * H; bh++)
        for (int64_t i = 0; i < Lq; i++) {
            double p = 0;
            for (int64_t j = Lk - 1; j >= 0; j--) {
                bool hid = (c->mask && !pg_bool(c->mask)[(bh / H) * Lk + j]) || (c->causal && j > i);
                if (!hid) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += pg_get(q, (bh * Lq + i) * D + d) * pg_get(kg, (bh * Lk + j) * D + d);
                    p += 1 / (1 + exp(-c->scale * s));
                }
                if (!hid && fabs(p - round(p)) < 1e-3)
                    return false;
            }
        }
    return true;
}

static double worst_gc;
static void gradcheck_worst(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx)
{
    pg_gradcheck_opts go = f64_only();
    pg_gradcheck_result r = pg_gradcheck(fn, n, in, ctx, &go);
    cr_assert(r.ok, "%s (max abs err %.3g, checked %d)", r.message, r.max_abs_err, r.checked);
    cr_assert_gt(r.checked, 0, "gradcheck checked nothing");
    worst_gc = r.max_abs_err > worst_gc ? r.max_abs_err : worst_gc;
}

Test(pos_cope, gradcheck_q_k_v_and_E)
{
    /* every convention, gates, causal or not, with a key mask; npos 3 clamps the long sums */
    for (int variant = 0; variant < 8; variant++) {
        pg_cope_opts o = {.convention = variant & 1 ? PG_COPE_XT : PG_COPE_RAM,
                          .gates = variant & 2 ? PG_COPE_GATES_VALUE : PG_COPE_GATES_KEY,
                          .npos = variant & 4 ? 3 : 8};
        bool causal = variant != 5;
        pg_cope *m = cope_f64(3, 0, &o);
        pg_tensor *mask = TBOOL(PG_SHAPE(2, 5), 1, 1, 0, 1, 1, 1, 1, 1, 1, 0);
        bool found = false;
        for (uint64_t seed = 1; seed < 200 && !found; seed++) {
            pg_tensor *q = randt(PG_SHAPE(2, 2, 5, 3), 10 * seed, true),
                      *k = randt(PG_SHAPE(2, 2, 5, 3), 10 * seed + 1, true),
                      *v = randt(PG_SHAPE(2, 2, 5, 3), 10 * seed + 2, true);
            pg_tensor *E = rand_param(m->pos_emb->ndim, m->pos_emb->shape, -1, 1, 10 * seed + 3);
            pg_copy_into(m->pos_emb, E); /* nonzero E: every path carries gradient */
            gc_case t = {m, ctx_for(q, k, mask, causal, 0.9)};
            t.c.scale = 2.3; /* large gates' spread: positions reach the clamp at npos 3 */
            found = away_from_kinks(m, q, k, v, &t.c);
            if (found) {
                pg_tensor *in[] = {q, k, v, m->pos_emb};
                gradcheck_worst(call_bias, 4, in, &t);
            }
            pg_tensor *own[] = {q, k, v, E};
            free_all(4, own);
        }
        cr_assert(found, "variant %d: no seed keeps the positions 1e-3 from an integer", variant);
        pg_tensor_free(mask);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_cope gradcheck (bias): worst abs error %.3g", worst_gc);
}

Test(pos_cope, gradcheck_soft_onehot)
{
    /* the soft one-hot (5): XT at x-transformers' temp 0.05 (steep between integers), XT at
     * temp 0.5 with npos 3 (the clamp active) and not causal, RAM with value gates at 0.3;
     * the only kinks are at integer p (|p - n|), kept 1e-3 away as above */
    const pg_cope_opts opts[] = {
        {.convention = PG_COPE_XT, .npos = 8, .soft_onehot = true},
        {.convention = PG_COPE_XT, .npos = 3, .soft_onehot = true, .soft_onehot_temp = 0.5},
        {.convention = PG_COPE_RAM, .npos = 8, .gates = PG_COPE_GATES_VALUE, .soft_onehot = true,
         .soft_onehot_temp = 0.3},
    };
    for (int variant = 0; variant < 3; variant++) {
        pg_cope *m = cope_f64(3, 0, &opts[variant]);
        pg_tensor *mask = TBOOL(PG_SHAPE(2, 5), 1, 1, 0, 1, 1, 1, 1, 1, 1, 0);
        bool found = false;
        for (uint64_t seed = 1; seed < 200 && !found; seed++) {
            pg_tensor *q = randt(PG_SHAPE(2, 2, 5, 3), 10 * seed + 5, true),
                      *k = randt(PG_SHAPE(2, 2, 5, 3), 10 * seed + 6, true),
                      *v = randt(PG_SHAPE(2, 2, 5, 3), 10 * seed + 7, true);
            pg_tensor *E = rand_param(m->pos_emb->ndim, m->pos_emb->shape, -1, 1, 10 * seed + 8);
            pg_copy_into(m->pos_emb, E);
            gc_case t = {m, ctx_for(q, k, mask, variant != 1, 2.3)};
            found = away_from_kinks(m, q, k, v, &t.c);
            if (found) {
                pg_tensor *in[] = {q, k, v, m->pos_emb};
                gradcheck_worst(call_bias, 4, in, &t);
            }
            pg_tensor *own[] = {q, k, v, E};
            free_all(4, own);
        }
        cr_assert(found, "variant %d: no seed keeps the positions 1e-3 from an integer", variant);
        pg_tensor_free(mask);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_cope gradcheck (soft one-hot): worst abs error %.3g", worst_gc);
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

Test(pos_cope, gradcheck_in_mha)
{
    for (int conv = 0; conv < 2; conv++) {
        pg_cope *p = cope_f64(2, 0, &(pg_cope_opts){.convention = conv, .npos = 4});
        pg_tensor *E = rand_param(p->pos_emb->ndim, p->pos_emb->shape, -1, 1, 5);
        pg_copy_into(p->pos_emb, E);
        pg_mha *mha = mha_with(4, 2, true, &p->pm, 4 + (uint64_t)conv);
        mha_case c = {mha, key_mask()};
        pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 9, true);
        pg_tensor *in[16] = {x};
        int n = with_params(in, 1, &mha->base);
        gradcheck_worst(call_mha, n, in, &c);
        pg_tensor *own[] = {x, c.mask, E};
        free_all(3, own);
        pg_module_free(&mha->base);
    }
    cr_log_info("pos_cope gradcheck (in MHA): worst abs error %.3g", worst_gc);
}

/* ===================================================================================
 * names, shapes, init; f32
 * =================================================================================== */

Test(pos_cope, names_shapes_and_init)
{
    /* RAM: pos_emb (1, Dh, max_len + 1); XT: (16, Dh); zeros; through the registry in an LM */
    pg_cope *m = cope_f64(4, 10, NULL);
    cr_assert_eq(m->npos, 11);
    pg_tensor_list p = pg_module_parameters(&m->pm.base);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.names[0], "pos_emb");
    assert_shape(p.tensors[0], 3, (int64_t[]){1, 4, 11});
    for (int64_t i = 0; i < p.tensors[0]->numel; i++)
        cr_assert_eq(pg_get(p.tensors[0], i), 0.0);
    pg_tensor_list_free(&p);
    pg_module_free(&m->pm.base);
    m = cope_f64(4, 10, &(pg_cope_opts){.convention = PG_COPE_XT});
    assert_shape(pg_module_find_param(&m->pm.base, "pos_emb"), 2, (int64_t[]){16, 4});
    pg_module_free(&m->pm.base);
    m = cope_f64(4, 0, &(pg_cope_opts){.npos = 7});
    assert_shape(m->pos_emb, 3, (int64_t[]){1, 4, 7});
    cr_assert(!m->soft_onehot);
    cr_assert_eq(m->soft_onehot_temp, 0.0);
    pg_module_free(&m->pm.base);
    m = cope_f64(4, 0, &(pg_cope_opts){.convention = PG_COPE_XT, .soft_onehot = true}); /* temp 0: 0.05 */
    cr_assert(m->soft_onehot);
    cr_assert_eq(m->soft_onehot_temp, 0.05);
    pg_module_free(&m->pm.base);

    pg_lm_config c = pg_lm_defaults(7, 8, 2, 2);
    c.max_len = 6;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){.kind = "cope"};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    for (int b = 0; b < 2; b++) { /* one E per layer, shared by the heads */
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.attn.pos.pos_emb", b);
        pg_tensor *e = pg_module_find_param(&lm->base, name);
        cr_assert_not_null(e, "%s missing", name);
        assert_shape(e, 3, (int64_t[]){1, 4, 7});
    }
    pg_module_free(&lm->base);
}

Test(pos_cope, f32_agrees_with_f64)
{
    pg_posmod *m32 = pg_cope_new(3, 0, &(pg_cope_opts){.npos = 5}, PG_F32);
    pg_cope *m64 = cope_f64(3, 0, &(pg_cope_opts){.npos = 5});
    cr_assert_not_null(m32, "%s", pg_last_error());
    pg_tensor *E = rand_param(3, (int64_t[]){1, 3, 5}, -1, 1, 3);
    pg_copy_into(((pg_cope *)m32)->pos_emb, E);
    pg_copy_into(m64->pos_emb, E);
    pg_tensor *q = randt(PG_SHAPE(1, 2, 4, 3), 1, false), *k = randt(PG_SHAPE(1, 2, 4, 3), 2, false);
    pg_tensor *q32 = pg_cast(NULL, q, PG_F32), *k32 = pg_cast(NULL, k, PG_F32);
    pg_pos_ctx c = ctx_for(q, k, NULL, true, 0.5);
    pg_graph *g = pg_graph_new();
    pg_tensor *b64 = m64->pm.ops->mod_bias(g, &m64->pm, q, k, k, &c);
    c.dtype = PG_F32;
    pg_tensor *b32 = m32->ops->mod_bias(g, m32, q32, k32, k32, &c);
    cr_assert_not_null(b32, "%s", pg_graph_error(g));
    cr_assert_eq(b32->dtype, PG_F32);
    cr_assert_lt(max_err(b32, b64), 1e-6);
    pg_graph_free(g);
    pg_tensor *own[] = {E, q, k, q32, k32};
    free_all(5, own);
    pg_module_free(m32 == NULL ? NULL : &m32->base);
    pg_module_free(&m64->pm.base);
}

/* ===================================================================================
 * training: MHA and a 1-block LM with Adam
 * =================================================================================== */

Test(pos_cope, trains_in_mha_and_lm)
{
    for (int conv = 0; conv < 2; conv++) {
        pg_cope *p = cope_f64(2, 0, &(pg_cope_opts){.convention = conv, .npos = 6});
        pg_mha *m = mha_with(4, 2, true, &p->pm, 7);
        pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 8, false);
        pg_graph *g = pg_graph_new();
        pg_tensor *y = pg_mha_forward(g, m, x, NULL, NULL);
        assert_adam_step_changes(&m->base, &p->pm.base, g, pg_sum(g, pg_square(g, y), 0, NULL, false));
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&m->base);
    }
    /* a 1-block LM: 30 Adam steps on one batch lower the loss; E moves from zero */
    pg_cope_opts co = {0};
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 1);
    c.dtype = PG_F64;
    c.max_len = 8;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){"cope", NULL, &co};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_tensor *ids = TI64(PG_SHAPE(2, 6), 1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1);
    pg_tensor *E = pg_module_find_param(&lm->base, "blocks.0.attn.pos.pos_emb");
    cr_assert_not_null(E);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_optim_hparams h = pg_adam_hparams(1e-2);
    pg_optim *opt = pg_optim_new(PG_ADAM, &h);
    cr_assert_geq(pg_optim_add_group(opt, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    double first = 0, last = 0;
    for (int step = 0; step < 30; step++) {
        pg_graph *g = pg_graph_new();
        pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
        cr_assert_not_null(loss, "%s", pg_graph_error(g));
        last = pg_get(loss, 0);
        first = step == 0 ? last : first;
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
        pg_optim_zero_grad(opt);
        pg_graph_free(g);
    }
    double moved = 0;
    for (int64_t i = 0; i < E->numel; i++)
        moved = fmax(moved, fabs(pg_get(E, i)));
    cr_assert_lt(last, first - 0.1, "loss %g -> %g", first, last);
    cr_assert_gt(moved, 1e-3, "E did not move (max |E| %g)", moved);
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

/* ===================================================================================
 * bad options and input; LocalAttention
 * =================================================================================== */

Test(pos_cope, bad_options)
{
    ASSERT_FAILS(pg_cope_new(0, 8, NULL, PG_F64), "pg_cope_new: CoPE acts inside attention and needs head_dim >= 1");
    ASSERT_FAILS(pg_cope_new(4, 8, NULL, PG_I64), "pg_cope_new: dtype must be f32 or f64, got i64");
    ASSERT_FAILS(pg_cope_new(4, 8, &(pg_cope_opts){.convention = 2}, PG_F64),
                 "convention must be PG_COPE_RAM or PG_COPE_XT, got 2");
    ASSERT_FAILS(pg_cope_new(4, 8, &(pg_cope_opts){.gates = 2}, PG_F64),
                 "gates must be PG_COPE_GATES_KEY or PG_COPE_GATES_VALUE, got 2");
    ASSERT_FAILS(pg_cope_new(4, 8, &(pg_cope_opts){.convention = PG_COPE_XT, .nodiv = true}, PG_F64),
                 "nodiv is an option of the RAM convention");
    ASSERT_FAILS(pg_cope_new(4, 8, &(pg_cope_opts){.npos = -1}, PG_F64), "need npos >= 1");
    const double bad_t[] = {-0.05, NAN, INFINITY, -INFINITY, 1e-320};
    for (int i = 0; i < 5; i++)
        ASSERT_FAILS(pg_cope_new(4, 8, &(pg_cope_opts){.soft_onehot = true, .soft_onehot_temp = bad_t[i]}, PG_F64),
                     "pg_cope_new: soft_onehot_temp must be a finite temperature > 0");
    ASSERT_FAILS(pg_cope_new(4, 8, &(pg_cope_opts){.soft_onehot_temp = 0.1}, PG_F64),
                 "pg_cope_new: soft_onehot_temp is 0.1 but soft_onehot is off");
    ASSERT_FAILS(pg_cope_new(4, 8, &(pg_cope_opts){.soft_onehot_temp = NAN}, PG_F64),
                 "pg_cope_new: soft_onehot_temp is nan but soft_onehot is off");
    ASSERT_FAILS(pg_cope_new(4, 0, NULL, PG_F64), "pg_cope_new: npos is unset and there is no max_len");
    ASSERT_FAILS(pg_cope_new(4, (int64_t)1 << 60, NULL, PG_F64), "is too large");
    pg_posmod *xt = pg_cope_new(4, 0, &(pg_cope_opts){.convention = PG_COPE_XT}, PG_F64);
    cr_assert_not_null(xt, "XT's default npos needs no max_len: %s", pg_last_error());
    pg_module_free(&xt->base);
    pg_posmod_args a = {.dim = 8, .heads = 2, .head_dim = 0, .max_len = 8, .dtype = PG_F64};
    ASSERT_FAILS(pg_posmod_make_cope(&a), "pg_posmod_make_cope: CoPE acts inside attention and needs head_dim >= 1");
    ASSERT_FAILS(pg_posmod_make_cope(NULL), "pg_posmod_make_cope: args is NULL");
}

Test(pos_cope, bad_input)
{
    pg_cope *m = cope_f64(2, 0, &(pg_cope_opts){.npos = 4});
    pg_tensor *q = randt(PG_SHAPE(1, 2, 3, 3), 1, false), *k = randt(PG_SHAPE(1, 2, 3, 3), 2, false);
    pg_pos_ctx c = ctx_for(q, k, NULL, true, 0.5);
    ASSERT_FAILS(m->pm.ops->mod_bias(NULL, &m->pm, q, k, k, &c), "cope: the module has head_dim 2, got q f64[1,2,3,3]");
    pg_tensor *q2 = randt(PG_SHAPE(2, 3, 2), 1, false);
    ASSERT_FAILS(m->pm.ops->mod_bias(NULL, &m->pm, q2, k, k, &c), "cope: needs q (B, H, Lq, Dh)");
    /* in MHA: head_dim 3 against the module's 2 */
    pg_mha *mha = mha_with(6, 2, true, &m->pm, 1);
    pg_tensor *x = randt(PG_SHAPE(1, 4, 6), 1, false);
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, NULL), "cope: the module has head_dim 2");
    pg_module_free(&mha->base);
    /* LocalAttention needs dist_bias or band_bias: CoPE has neither */
    pg_local_attention_config cfg = pg_local_attention_defaults(2);
    cfg.dtype = PG_F64;
    pg_posmod *p = pg_cope_new(2, 0, &(pg_cope_opts){.npos = 4}, PG_F64);
    ASSERT_FAILS(pg_local_attention_new(&cfg, (pg_posmod *[]){p}, 1),
                 "positional module 0 (CoPE) has neither dist_bias");
    pg_tensor *own[] = {q, k, q2, x};
    free_all(4, own);
}

/* ===================================================================================
 * a kink planted at an integer position (docs/pos/cope.md "Gradients"; docs/autograd.md "Kinks")
 * =================================================================================== */

/* Dh = 1, q_i = 1, k_j = 0, scale 1, causal L = 3: every gate is sigmoid(0) = 1/2 exactly, so
 * p = 0.5 on the diagonal, p_10 = p_21 = 1 exactly, p_20 = 1.5. Moving k_0 moves g_10 and so
 * p_10 across the integer 1: the bias of (4) is piecewise linear in p with slope z[1] - z[0]
 * below 1 and z[2] - z[1] above. E[n] = e[n] (XT, npos 4). */
static pg_gradcheck_result cope_at_integer(const pg_cope_opts *o, const double e[4], pg_gradcheck_stat st[4])
{
    pg_cope *m = cope_f64(1, 0, o);
    for (int n = 0; n < 4; n++)
        pg_set(m->pos_emb, n, e[n]);
    pg_tensor *q = T64(PG_SHAPE(1, 1, 3, 1), 1, 1, 1), *k = T64(PG_SHAPE(1, 1, 3, 1), 0, 0, 0);
    pg_tensor *v = T64(PG_SHAPE(1, 1, 3, 1), 0, 0, 0);
    q->requires_grad = k->requires_grad = true;
    gc_case t = {m, ctx_for(q, k, NULL, true, 1.0)};
    pg_tensor *in[] = {q, k, v, m->pos_emb};
    pg_gradcheck_opts go = f64_only();
    pg_gradcheck_result r = pg_gradcheck_ex(call_bias, 4, in, &t, &go, st);
    cr_assert(!away_from_kinks(m, q, k, v, &t.c), "the planted positions are integers");
    pg_tensor *own[] = {q, k, v};
    free_all(3, own);
    pg_module_free(&m->pm.base);
    return r;
}

Test(pos_cope, integer_position_is_a_kink)
{
    /* the soft one-hot (5): |p - n| at p = n = 1; its derivative there is taken as 0, so the
     * analytic slope is the midpoint of the one-sided ones: a kink, counted, not a failure */
    const double sq[4] = {0, 1, 4, 9};
    pg_gradcheck_stat st[4];
    pg_gradcheck_result r = cope_at_integer(&(pg_cope_opts){.convention = PG_COPE_XT, .npos = 4, .soft_onehot = true,
                                                            .soft_onehot_temp = 0.5},
                                            sq, st);
    cr_assert(r.ok, "%s", r.message);
    cr_assert_geq(r.kinks, 1, "no kink reported at p = 1");
    cr_assert_geq(st[1].kinks, 1, "k_0 moves p_10 across 1: a kink in k");
    cr_assert_eq(st[3].kinks, 0, "the bias is linear in E: no kink there");
    cr_assert_eq(st[3].checked, 4);
    cr_log_info("pos_cope kink (soft one-hot at p = 1): %d kinks, first input %d element %lld", r.kinks,
                r.kink_input, (long long)r.kink_index);
    /* (4): at integer p the gradient is the right-hand slope z[p + 1] - z[p] (the upper index
     * is floor p + 1, its weight 0), one of the one-sided slopes: a kink, whether z has a peak
     * at 1 (E = 0, 1, 0, -1: slopes +1 and -1) or rises through it (E = n^2: slopes 1 and 3).
     * The references' floor = ceil gives 0 there, outside the second pair: gradcheck would
     * fail it (a value outside the one-sided slopes is wrong at a kink too). */
    const double peak[4] = {0, 1, 0, -1};
    r = cope_at_integer(&(pg_cope_opts){.convention = PG_COPE_XT, .npos = 4}, peak, st);
    cr_assert(r.ok, "%s", r.message);
    cr_assert_geq(st[1].kinks, 1, "no kink reported at p = 1 with a peak in z");
    r = cope_at_integer(&(pg_cope_opts){.convention = PG_COPE_XT, .npos = 4}, sq, st);
    cr_assert(r.ok, "%s", r.message);
    cr_assert_geq(st[1].kinks, 1, "no kink reported at p = 1 with z rising");
    cr_assert_eq(st[1].first_bad, -1, "k_0 moves p_10: a kink, not a wrong gradient");
    cr_log_info("pos_cope at p = 1 with z rising: %d kinks, first input %d element %lld", r.kinks, r.kink_input,
                (long long)r.kink_index);
}
