/* ALiBi (nn/pos_alibi.c): §0.1 slopes, PyTorch parity of the bias table for every
 * option (tests/fixtures/gen_pos_alibi.py), inside MultiheadAttention, gradchecks
 * w.r.t. learned div, float positions and x, training in MHA and a 1-block LM,
 * combination with another module, bad input. */
#include <float.h>
#include <stdlib.h>

#include "../nn/pos_alibi.h"
#include "testutil.h"

static pg_alibi *alibi_f64(int64_t H, const pg_alibi_opts *o)
{
    pg_posmod *m = pg_alibi_new(H, o, PG_F64);
    cr_assert_not_null(m, "%s", pg_last_error());
    return (pg_alibi *)m;
}

/* ===================================================================================
 * slopes
 * =================================================================================== */

Test(pos_alibi, slopes_match_spec_and_xtransformers)
{
    double s[16];
    /* the examples of docs/semantics.md §0.1, exactly */
    cr_assert_eq(pg_alibi_slopes(8, s), 0);
    for (int h = 0; h < 8; h++)
        cr_assert_eq(s[h], ldexp(1.0, -(h + 1)), "n 8, head %d: %.17g", h, s[h]);
    cr_assert_eq(pg_alibi_slopes(6, s), 0);
    const int e6[] = {-2, -4, -6, -8, -1, -3};
    for (int h = 0; h < 6; h++)
        cr_assert_eq(s[h], ldexp(1.0, e6[h]), "n 6, head %d: %.17g", h, s[h]);
    cr_assert_eq(pg_alibi_slopes(3, s), 0);
    const int e3[] = {-4, -8, -2};
    for (int h = 0; h < 3; h++)
        cr_assert_eq(s[h], ldexp(1.0, e3[h]), "n 3, head %d: %.17g", h, s[h]);
    cr_assert_eq(pg_alibi_slopes(1, s), 0);
    cr_assert_eq(s[0], 1.0 / 256);
    /* n = 1..16 against x-transformers' start * ratio^i recipe */
    pg_tensor_list l = fixture("pos_alibi_slopes.safetensors");
    for (int n = 1; n <= 16; n++) {
        cr_assert_eq(pg_alibi_slopes(n, s), 0);
        pg_tensor *t = pg_tensor_from_array(NULL, PG_F64, PG_SHAPE(n), s);
        char what[32];
        snprintf(what, sizeof what, "slopes %d", n);
        assert_close(t, fx(&l, "slopes.%d", n), 1e-15, what);
        pg_tensor_free(t);
    }
    pg_tensor_list_free_all(&l);
    ASSERT_FAILS(pg_alibi_slopes(0, s) ? NULL : s, "pg_alibi_slopes: need n >= 1");
}

Test(pos_alibi, slopes_of_the_module)
{
    /* use_heads: zeros for the others; asymmetric: pairs share the even head's slope */
    pg_alibi *m = alibi_f64(6, &(pg_alibi_opts){.use_heads = 3, .asymmetric = true});
    const double want[] = {1.0 / 16, 1.0 / 16, 1.0 / 4, 0, 0, 0};
    for (int h = 0; h < 6; h++)
        cr_assert_eq(m->slopes[h], want[h], "head %d: %g", h, m->slopes[h]);
    cr_assert_null(m->div);
    cr_assert_eq(pg_module_num_elements(&m->pm.base), 0);
    pg_module_free(&m->pm.base);
    /* custom slopes (x-transformers' slopes), learned div named "div" */
    const double mine[] = {0.3, 0.7};
    m = alibi_f64(3, &(pg_alibi_opts){.use_heads = 2, .slopes = mine, .div = {2.0, true}});
    cr_assert_eq(m->slopes[0], 0.3);
    cr_assert_eq(m->slopes[1], 0.7);
    cr_assert_eq(m->slopes[2], 0.0);
    pg_tensor_list p = pg_module_parameters(&m->pm.base);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.names[0], "div");
    cr_assert_eq(p.tensors[0]->ndim, 0);
    cr_assert_float_eq(pg_get(p.tensors[0], 0), log(2.0), 1e-15);
    pg_tensor_list_free(&p);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * bias table parity
 * =================================================================================== */

enum { P_NONE, P_SELF, P_CROSS, P_SELF_INT };

typedef struct acase {
    const char *name;
    int64_t H, Lq, Lk;
    pg_alibi_opts o;
    int pmode;
} acase;

static const double CUSTOM[] = {0.3, 0.7};

static const acase CASES[] = {
    {"default", 4, 5, 5, {0}, P_NONE},
    {"use_heads", 6, 4, 4, {.use_heads = 3, .div = {2.0, false}}, P_NONE},
    {"slopes", 4, 3, 4, {.use_heads = 2, .slopes = CUSTOM}, P_NONE},
    {"start", 3, 3, 6, {.align = PG_ALIBI_ALIGN_START}, P_NONE},
    {"end", 3, 3, 6, {.align = PG_ALIBI_ALIGN_END}, P_NONE},
    {"end_long_q", 2, 5, 3, {.align = PG_ALIBI_ALIGN_END}, P_NONE},
    {"asym", 5, 5, 5, {.asymmetric = true, .div = {1.5, true}}, P_SELF},
    {"asym_use", 6, 4, 4, {.asymmetric = true, .use_heads = 5}, P_NONE},
    {"pad", 4, 5, 5, {.div = {0.7, true}}, P_SELF},
    {"cross", 3, 4, 6, {.asymmetric = true, .div = {1.0, true}}, P_CROSS},
    {"int", 2, 4, 4, {.div = {3.0, false}}, P_SELF_INT},
};

Test(pos_alibi, table_matches_torch)
{
    pg_tensor_list l = fixture("pos_alibi_table.safetensors");
    double worst_out = 0, worst_grad = 0;
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const acase *k = &CASES[ci];
        char key[64];
        pg_alibi *m = alibi_f64(k->H, &k->o);
        if (m->div) {
            snprintf(key, sizeof key, "%s.div", k->name);
            pg_set(m->div, 0, pg_get(fx(&l, "%s", key), 0));
        }
        pg_tensor *pq = NULL, *pk = NULL;
        if (k->pmode == P_SELF || k->pmode == P_SELF_INT) {
            snprintf(key, sizeof key, "%s.pos", k->name);
            pq = pk = fx_copy(&l, key, k->pmode == P_SELF);
        } else if (k->pmode == P_CROSS) {
            snprintf(key, sizeof key, "%s.pos_q", k->name);
            pq = fx_copy(&l, key, true);
            snprintf(key, sizeof key, "%s.pos_k", k->name);
            pk = fx_copy(&l, key, true);
        }
        pg_pos_ctx c = {pq, pk, NULL, k->pmode != P_CROSS, false, 2, k->H, 3, k->Lq, k->Lk, 0.5, PG_F64, NULL, NULL};
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_posmod_bias_table(g, &m->pm, &c);
        cr_assert_not_null(out, "%s: %s", k->name, pg_graph_error(g));
        snprintf(key, sizeof key, "%s out", k->name);
        assert_close(out, fx(&l, "%s.out", k->name), 1e-10, key);
        double e = max_err(out, fx(&l, "%s.out", k->name));
        worst_out = e > worst_out ? e : worst_out;
        if (out->requires_grad) {
            cr_assert_eq(pg_backward_with(g, out, fx(&l, "%s.dy", k->name)), 0, "%s", pg_graph_error(g));
            struct {
                pg_tensor *t;
                const char *n;
            } gs[] = {{m->div, "div"}, {k->pmode == P_CROSS ? pq : (k->pmode == P_SELF ? pq : NULL), k->pmode == P_CROSS ? "pos_q" : "pos"},
                      {k->pmode == P_CROSS ? pk : NULL, "pos_k"}};
            for (int i = 0; i < 3; i++) {
                if (!gs[i].t)
                    continue;
                snprintf(key, sizeof key, "%s grad %s", k->name, gs[i].n);
                pg_tensor *want = fx(&l, "%s.grad.%s", k->name, gs[i].n);
                assert_close(gs[i].t->grad, want, 1e-9, key);
                e = max_err(gs[i].t->grad, want);
                worst_grad = e > worst_grad ? e : worst_grad;
            }
        }
        /* default positions give (H, Lq, Lk), explicit ones (B, H, Lq, Lk) */
        cr_assert_eq(out->ndim, k->pmode == P_NONE ? 3 : 4);
        pg_graph_free(g);
        pg_tensor_free(pq);
        if (pk != pq)
            pg_tensor_free(pk);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_alibi table parity: outputs %.3g, gradients %.3g", worst_out, worst_grad);
    pg_tensor_list_free_all(&l);
}

Test(pos_alibi, asymmetric_blocks_with_minus_fmax_per_head)
{
    /* positions 0..3, 2 batch rows, 4 heads: even heads hide keys before the query,
     * odd heads keys after it; the diagonal stays; the split is over heads for every batch row (§7) */
    pg_alibi *m = alibi_f64(4, &(pg_alibi_opts){.asymmetric = true});
    pg_tensor *pos = TI64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0, 1, 2, 3);
    pg_pos_ctx c = {pos, pos, NULL, true, false, 2, 4, 1, 4, 4, 1.0, PG_F64, NULL, NULL};
    pg_tensor *b = pg_posmod_bias_table(NULL, &m->pm, &c);
    assert_shape(b, 4, (int64_t[]){2, 4, 4, 4});
    for (int64_t bi = 0; bi < 2; bi++)
        for (int64_t h = 0; h < 4; h++)
            for (int64_t i = 0; i < 4; i++)
                for (int64_t j = 0; j < 4; j++) {
                    double v = pg_get(b, ((bi * 4 + h) * 4 + i) * 4 + j);
                    bool blocked = h % 2 == 0 ? j < i : j > i;
                    if (blocked)
                        cr_assert_eq(v, -DBL_MAX);
                    else
                        cr_assert_float_eq(v, -fabs((double)(i - j)) * m->slopes[h], 1e-15);
                }
    pg_tensor_free(b);
    /* f32: -FLT_MAX (finite) */
    pg_pos_ctx c32 = c;
    c32.dtype = PG_F32;
    b = pg_posmod_bias_table(NULL, &m->pm, &c32);
    cr_assert_not_null(b, "%s", pg_last_error());
    cr_assert_eq(b->dtype, PG_F32);
    cr_assert_eq(pg_get(b, 1 * 4 + 0), (double)-FLT_MAX);
    pg_tensor_free(b);
    pg_tensor_free(pos);
    pg_module_free(&m->pm.base);
}

Test(pos_alibi, left_padding_gives_zero_rows_and_columns)
{
    pg_alibi *m = alibi_f64(2, NULL);
    pg_tensor *pos = T64(PG_SHAPE(1, 2), 4.0, 1.5);
    pg_pos_ctx c = {pos, pos, NULL, true, false, 1, 2, 1, 4, 4, 1.0, PG_F64, NULL, NULL};
    pg_tensor *b = pg_posmod_bias_table(NULL, &m->pm, &c);
    assert_shape(b, 4, (int64_t[]){1, 2, 4, 4});
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = 0; i < 4; i++)
            for (int64_t j = 0; j < 4; j++) {
                double v = pg_get(b, (h * 4 + i) * 4 + j);
                if (i < 2 || j < 2)
                    cr_assert_eq(v, 0.0);
                else
                    cr_assert_float_eq(v, -fabs(pg_get(pos, i - 2) - pg_get(pos, j - 2)) * m->slopes[h], 1e-15);
            }
    pg_tensor_free(b);
    pg_tensor_free(pos);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * MultiheadAttention parity, gradchecks
 * =================================================================================== */

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, pg_posmod *const *pos, int n, uint64_t seed)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal}, pos, n, seed);
}

Test(pos_alibi, mha_matches_torch)
{
    pg_tensor_list l = fixture("pos_alibi_mha.safetensors");
    pg_posmod *mods[] = {&alibi_f64(4, &(pg_alibi_opts){.asymmetric = true, .div = {2.0, true}})->pm};
    pg_mha *m = mha_with(8, 4, true, mods, 1, 1);
    load_params(&m->base, &l, "");
    pg_tensor *x = fx_copy(&l, "x", true), *pos = fx_copy(&l, "pos", true);
    pg_graph *g = pg_graph_new();
    pg_attn_args a = {.mask = fx(&l, "mask"), .pos = pos};
    pg_tensor *out = pg_mha_forward(g, m, x, NULL, &a);
    assert_close(out, fx(&l, "out"), 1e-10, "out");
    cr_assert_eq(pg_backward_with(g, out, fx(&l, "dy")), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(&l, "grad.x"), 1e-9, "grad x");
    assert_close(pos->grad, fx(&l, "grad.pos"), 1e-9, "grad pos");
    check_param_grads(&m->base, &l, "", 1e-9);
    cr_assert_not_null(pg_module_find_param(&m->base, "pos.div"));
    cr_log_info("pos_alibi mha parity: out %.3g, grad x %.3g, grad pos %.3g, grad div %.3g",
                max_err(out, fx(&l, "out")), max_err(x->grad, fx(&l, "grad.x")), max_err(pos->grad, fx(&l, "grad.pos")),
                max_err(pg_module_find_param(&m->base, "pos.div")->grad, fx(&l, "grad.pos.div")));
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(pos);
    pg_module_free(&m->base);
    pg_tensor_list_free_all(&l);
}

typedef struct tab_case {
    pg_alibi *m;
    int64_t B, Lq, Lk;
    int pmode; /* P_NONE: inputs [div]; P_SELF: [pos, div]; P_CROSS: [pos_q, pos_k, div] */
} tab_case;

/* exp(bias) so that -FMAX entries become 0 (as softmax sees them) and sums stay finite */
static pg_tensor *call_table(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const tab_case *t = ctx;
    pg_pos_ctx c = {NULL, NULL, NULL, true, false, t->B, t->m->heads, 2, t->Lq, t->Lk, 1.0, PG_F64, NULL, NULL};
    if (t->pmode == P_SELF)
        c.pos_q = c.pos_k = in[0];
    if (t->pmode == P_CROSS) {
        c.pos_q = in[0];
        c.pos_k = in[1];
        c.self_attn = false;
    }
    return pg_exp(g, pg_posmod_bias_table(g, &t->m->pm, &c));
}

Test(pos_alibi, gradcheck_div_and_positions)
{
    pg_gradcheck_opts go = f64_only();
    /* learned div, default positions, start and end aligned, use_heads */
    for (int align = 0; align < 2; align++) {
        pg_alibi *m = alibi_f64(3, &(pg_alibi_opts){.use_heads = 2, .align = align, .div = {1.7, true}});
        tab_case t = {m, 1, 3, 5, P_NONE};
        pg_tensor *in[] = {m->div};
        assert_gradcheck(call_table, 1, in, &t, &go);
        pg_module_free(&m->pm.base);
    }
    /* self float positions (left padded), asymmetric, learned div */
    pg_alibi *m = alibi_f64(4, &(pg_alibi_opts){.asymmetric = true, .div = {0.8, true}});
    pg_tensor *pos = T64(PG_SHAPE(2, 4), 0.3, 1.1, 2.9, 2.2, -1.0, 0.4, 1.7, 3.5);
    pos->requires_grad = true;
    tab_case t = {m, 2, 5, 5, P_SELF};
    pg_tensor *in[] = {pos, m->div};
    assert_gradcheck(call_table, 2, in, &t, &go);
    pg_module_free(&m->pm.base);
    /* cross positions, constant divide */
    m = alibi_f64(2, &(pg_alibi_opts){.div = {2.5, false}});
    pg_tensor *pq = T64(PG_SHAPE(2, 2), 0.5, 2.25, 1.0, -0.5), *pk = T64(PG_SHAPE(2, 3), 0.1, 1.3, 3.2, 2.0, 0.6, -2.2);
    pq->requires_grad = pk->requires_grad = true;
    tab_case tc = {m, 2, 3, 3, P_CROSS};
    pg_tensor *in2[] = {pq, pk};
    assert_gradcheck(call_table, 2, in2, &tc, &go);
    pg_module_free(&m->pm.base);
    pg_tensor *own[] = {pos, pq, pk};
    free_all(3, own);
}

typedef struct mha_case {
    pg_mha *m;
    pg_tensor *mask;
    bool pos_in; /* in[1] is the positions */
} mha_case;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const mha_case *c = ctx;
    pg_attn_args a = {.mask = c->mask, .pos = c->pos_in ? in[1] : NULL};
    return pg_mha_forward(g, c->m, in[0], NULL, &a);
}

Test(pos_alibi, gradcheck_in_mha)
{
    pg_gradcheck_opts go = f64_only();
    pg_posmod *mods[] = {&alibi_f64(2, &(pg_alibi_opts){.asymmetric = true, .div = {1.3, true}})->pm};
    pg_mha *m = mha_with(4, 2, true, mods, 1, 3);
    pg_tensor *pos = T64(PG_SHAPE(2, 4), 0.2, 1.4, 2.1, 3.3, 2.5, 1.2, 0.3, -0.9);
    pos->requires_grad = true;
    mha_case c = {m, key_mask(), true};
    pg_tensor *in[16] = {randt(PG_SHAPE(2, 5, 4), 4, true), pos};
    int n = with_params(in, 2, &m->base);
    cr_assert_eq(n, 2 + 4 + 1);
    assert_gradcheck(call_mha, n, in, &c, &go);
    /* default positions, symmetric, use_heads 1 of 2 */
    pg_posmod *mods2[] = {&alibi_f64(2, &(pg_alibi_opts){.use_heads = 1, .div = {0.5, true}})->pm};
    pg_mha *m2 = mha_with(4, 2, false, mods2, 1, 5);
    mha_case c2 = {m2, NULL, false};
    pg_tensor *in2[16] = {in[0]};
    n = with_params(in2, 1, &m2->base);
    assert_gradcheck(call_mha, n, in2, &c2, &go);
    pg_tensor *own[] = {in[0], pos, c.mask};
    free_all(3, own);
    pg_module_free(&m->base);
    pg_module_free(&m2->base);
}

/* ===================================================================================
 * training: MHA and a 1-block LM, one Adam step moves div
 * =================================================================================== */

static void adam_step_changes(pg_module *root, const char *name)
{
    pg_tensor *p = pg_module_find_param(root, name);
    cr_assert_not_null(p, "no parameter %s", name);
    double before = pg_get(p, 0);
    cr_assert_not_null(p->grad, "%s has no grad", name);
    cr_assert_neq(pg_get(p->grad, 0), 0.0, "%s got a zero gradient", name);
    pg_tensor_list ps = pg_module_parameters(root);
    pg_optim_hparams h = pg_adam_hparams(0.05);
    pg_optim *o = pg_optim_new(PG_ADAM, &h);
    cr_assert_eq(pg_optim_add_group(o, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_step(o), 0, "%s", pg_last_error());
    double after = pg_get(p, 0);
    cr_assert(isfinite(after) && after != before, "%s: %g -> %g", name, before, after);
    pg_optim_free(o);
    pg_tensor_list_free(&ps);
}

Test(pos_alibi, trains_in_mha_and_lm)
{
    pg_posmod *mods[] = {&alibi_f64(2, &(pg_alibi_opts){.div = {2.0, true}})->pm};
    pg_mha *m = mha_with(4, 2, true, mods, 1, 7);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 8, false), *pos = T64(PG_SHAPE(2, 5), 0, 1.5, 2, 3.5, 4, 1, 2, 3, 5, 8);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.pos = pos});
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    adam_step_changes(&m->base, "pos.div");
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(pos);
    pg_module_free(&m->base);

    pg_alibi_opts ao = {.asymmetric = false, .div = {1.5, true}};
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 1);
    c.dtype = PG_F64;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){NULL, pg_posmod_make_alibi, &ao};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_tensor *ids = TI64(PG_SHAPE(2, 4), 1, 2, 3, 4, 6, 5, 0, 2);
    g = pg_graph_new();
    pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    adam_step_changes(&lm->base, "blocks.0.attn.pos.div");
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

/* ===================================================================================
 * combination: a q-scaling module before ALiBi equals ALiBi with the q projection scaled
 * =================================================================================== */

typedef struct qscale {
    pg_posmod pm;
    double s;
} qscale;

static int qscale_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c)
{
    (void)k, (void)v, (void)c;
    *q = pg_mul_scalar(g, *q, ((qscale *)m)->s);
    return *q ? 0 : -1;
}
static const pg_posmod_ops QSCALE_OPS = {.mod_qkv = qscale_qkv};

Test(pos_alibi, combined_with_another_module)
{
    qscale *qs = calloc(1, sizeof *qs);
    pg_posmod_init(&qs->pm, "TestQScale", &QSCALE_OPS, NULL);
    qs->s = 1.7;
    pg_alibi_opts ao = {.asymmetric = true, .div = {1.2, true}};
    pg_posmod *two[] = {&qs->pm, &alibi_f64(4, &ao)->pm};
    pg_posmod *one[] = {&alibi_f64(4, &ao)->pm};
    pg_mha *a = mha_with(8, 4, true, two, 2, 11), *b = mha_with(8, 4, true, one, 1, 11);
    /* b: the same weights, with the q rows of to_qkv scaled by s */
    pg_linear *la = a->to_qkv, *lb = b->to_qkv;
    for (int64_t r = 0; r < 8; r++) {
        for (int64_t cc = 0; cc < 8; cc++)
            pg_set(lb->weight, r * 8 + cc, 1.7 * pg_get(la->weight, r * 8 + cc));
        pg_set(lb->bias, r, 1.7 * pg_get(la->bias, r));
    }
    pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 12, false), *pos = T64(PG_SHAPE(2, 4), 0.5, 1, 2, 4, 3, 2, 1.5, 0);
    pg_attn_args args = {.mask = key_mask(), .pos = pos};
    pg_tensor *ya = pg_mha_forward(NULL, a, x, NULL, &args), *yb = pg_mha_forward(NULL, b, x, NULL, &args);
    cr_assert_not_null(ya, "%s", pg_last_error());
    cr_assert_lt(max_err(ya, yb), 1e-13);
    cr_assert_not_null(pg_module_find_param(&a->base, "pos.1.div"));
    pg_tensor *own[] = {ya, yb, x, pos, args.mask};
    free_all(5, own);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_alibi, bad_options)
{
    ASSERT_FAILS(pg_alibi_new(0, NULL, PG_F64), "pg_alibi_new: need 1 <= heads <= 17592186044416 and 0 <= use_heads <= heads, got heads 0");
    ASSERT_FAILS(pg_alibi_new(4, &(pg_alibi_opts){.use_heads = 5}, PG_F64), "use_heads 5");
    ASSERT_FAILS(pg_alibi_new(4, &(pg_alibi_opts){.heads = 3}, PG_F64), "opts.heads 3 differs from heads 4");
    ASSERT_FAILS(pg_alibi_new(4, &(pg_alibi_opts){.div = {-1.0, true}}, PG_F64), "divide must be a finite number > 0");
    ASSERT_FAILS(pg_alibi_new(4, &(pg_alibi_opts){.div = {NAN, false}}, PG_F64), "divide must be a finite number > 0");
    ASSERT_FAILS(pg_alibi_new(4, &(pg_alibi_opts){.align = 7}, PG_F64), "align must be");
    ASSERT_FAILS(pg_alibi_new(2, &(pg_alibi_opts){.slopes = (const double[]){0.5, INFINITY}}, PG_F64),
                 "slope 1 is inf");
    ASSERT_FAILS(pg_alibi_new(2, NULL, PG_I64), "dtype must be f32 or f64");
    pg_posmod_args a = {.dim = 8, .heads = 0, .dtype = PG_F64};
    ASSERT_FAILS(pg_posmod_make_alibi(&a), "needs heads >= 1");
    a.heads = 2;
    a.opts = &(pg_alibi_opts){.heads = 4};
    ASSERT_FAILS(pg_posmod_make_alibi(&a), "opts.heads 4 differs from the attention's 2 heads");
    ASSERT_FAILS(pg_posmod_make_alibi(NULL), "args is NULL");
    a.opts = NULL;
    pg_posmod *ok = pg_posmod_make_alibi(&a);
    cr_assert_not_null(ok, "%s", pg_last_error());
    cr_assert_eq(((pg_alibi *)ok)->heads, 2);
    pg_module_free(&ok->base);
}

Test(pos_alibi, bad_input)
{
    pg_alibi *m = alibi_f64(2, NULL);
    pg_tensor *longer = T64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5), *bpos = TBOOL(PG_SHAPE(1, 2), 1, 0),
              *mask = TBOOL(PG_SHAPE(1, 4), 1, 1, 1, 1);
    pg_pos_ctx c = {longer, longer, NULL, true, false, 1, 2, 1, 5, 5, 1.0, PG_F64, NULL, NULL};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "pos is f64[1,6], expected (B, Lp) = (1, <= 5)");
    c.pos_q = c.pos_k = bpos;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "of f32, f64 or i64");
    c.pos_q = c.pos_k = NULL;
    c.mask = mask;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "mask is bool[1,4], expected a bool key mask (B, Lk) = (1, 5)");
    c.mask = NULL;
    c.heads = 3;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "alibi: the module has 2 heads, the attention 3");
    /* inside attention: positions longer than the sequence, a module for other heads */
    pg_posmod *mods[] = {&m->pm};
    pg_mha *mha = mha_with(6, 3, false, mods, 1, 1);
    pg_tensor *x = randt(PG_SHAPE(1, 5, 6), 1, false);
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, &(pg_attn_args){.pos = longer}), "pos is f64[1,6]");
    ASSERT_FAILS(pg_mha_forward(NULL, mha, x, NULL, NULL), "the module has 2 heads, the attention 3");
    pg_tensor *own[] = {longer, bpos, mask, x};
    free_all(4, own);
    pg_module_free(&mha->base);
}

Test(pos_alibi, f32_agrees_with_f64)
{
    pg_posmod *m32 = pg_alibi_new(3, &(pg_alibi_opts){.div = {1.5, true}}, PG_F32);
    cr_assert_not_null(m32, "%s", pg_last_error());
    pg_alibi *m64 = alibi_f64(3, &(pg_alibi_opts){.div = {1.5, true}});
    pg_tensor *pos = T32(PG_SHAPE(1, 4), 0.5f, 1.0f, 3.0f, 2.0f);
    pg_pos_ctx c = {pos, pos, NULL, true, false, 1, 3, 1, 4, 4, 1.0, PG_F32, NULL, NULL};
    pg_tensor *b32 = pg_posmod_bias_table(NULL, m32, &c);
    c.dtype = PG_F64; /* f32 positions and an f32 div cast to the call's dtype */
    pg_tensor *b64 = pg_posmod_bias_table(NULL, &m64->pm, &c);
    cr_assert_not_null(b32, "%s", pg_last_error());
    cr_assert_not_null(b64, "%s", pg_last_error());
    cr_assert_eq(b32->dtype, PG_F32);
    cr_assert_lt(max_err(b32, b64), 1e-6);
    pg_tensor *own[] = {pos, b32, b64};
    free_all(3, own);
    pg_module_free(m32 ? &m32->base : NULL);
    pg_module_free(&m64->pm.base);
}
