/* T5 bucketed relative position bias (nn/pos_t5.c): the bucket function and the
 * bias tables against our PyTorch reference of x-transformers' RelativePositionBias
 * (tests/fixtures/gen_pos_t5.py), inside MultiheadAttention alone and combined with
 * ALiBi, gradchecks w.r.t. the table and x, training in MHA and a 1-block LM, bad input. */
#include <stdlib.h>

#include "../nn/pos_alibi.h"
#include "../nn/pos_t5.h"
#include "testutil.h"

static pg_t5 *t5_f64(int64_t H, int64_t head_dim, const pg_t5_opts *o, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_posmod *m = pg_t5_new(H, head_dim, o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return (pg_t5 *)m;
}

/* ===================================================================================
 * the bucket function
 * =================================================================================== */

static const struct {
    bool causal;
    int64_t nb, md;
} BUCKET_CFGS[] = {{false, 32, 128}, {true, 32, 128}, {false, 8, 20}, {true, 10, 50},
                   {false, 7, 9},    {true, 2, 3},     {false, 64, 1000}, {true, 16, 17}};

Test(pos_t5, buckets_match_torch)
{
    pg_tensor_list l = fixture("pos_t5_buckets.safetensors");
    pg_tensor *n = fx(&l, "n");
    for (int c = 0; c < (int)(sizeof BUCKET_CFGS / sizeof *BUCKET_CFGS); c++) {
        pg_tensor *want = fx(&l, "buckets.%d", c);
        for (int64_t i = 0; i < n->numel; i++) {
            int64_t ni = ((const int64_t *)n->data)[i], w = ((const int64_t *)want->data)[i];
            int64_t got = pg_t5_bucket(ni, BUCKET_CFGS[c].causal, BUCKET_CFGS[c].nb, BUCKET_CFGS[c].md);
            cr_assert_eq(got, w, "config %d (causal %d, %lld buckets, max_distance %lld), n %lld: bucket %lld, torch %lld",
                         c, BUCKET_CFGS[c].causal, (long long)BUCKET_CFGS[c].nb, (long long)BUCKET_CFGS[c].md,
                         (long long)ni, (long long)got, (long long)w);
        }
    }
    pg_tensor_list_free_all(&l);
}

Test(pos_t5, bucket_layout)
{
    /* bidirectional 32 / 128: exact buckets 0..7 for keys 0..7 before the query, keys after it in 16..31 */
    for (int64_t n = 0; n < 8; n++) {
        cr_assert_eq(pg_t5_bucket(n, false, 32, 128), n);
        cr_assert_eq(pg_t5_bucket(-n, false, 32, 128), n == 0 ? 0 : 16 + n);
    }
    cr_assert_eq(pg_t5_bucket(127, false, 32, 128), 15);
    cr_assert_eq(pg_t5_bucket(100000, false, 32, 128), 15);
    cr_assert_eq(pg_t5_bucket(-100000, false, 32, 128), 31);
    cr_assert_eq(pg_t5_bucket(INT64_MAX / 4, false, 32, 128), 15);
    /* causal: keys after the query share bucket 0; exact range 0..15 */
    cr_assert_eq(pg_t5_bucket(-5, true, 32, 128), 0);
    cr_assert_eq(pg_t5_bucket(15, true, 32, 128), 15);
    cr_assert_eq(pg_t5_bucket(16, true, 32, 128), 16);
    cr_assert_eq(pg_t5_bucket(1000, true, 32, 128), 31);
    /* monotone in the distance */
    for (int64_t n = 1; n < 500; n++)
        cr_assert_geq(pg_t5_bucket(n, true, 32, 128), pg_t5_bucket(n - 1, true, 32, 128));
}

/* ===================================================================================
 * bias tables
 * =================================================================================== */

enum { P_NONE, P_SELF, P_CROSS };

typedef struct tcase {
    const char *name;
    int64_t H, Lq, Lk;
    pg_t5_opts o;
    int pmode;
} tcase;

static const tcase CASES[] = {
    {"default", 3, 6, 6, {.num_buckets = 8, .max_distance = 20, .scale = 1.5}, P_NONE},
    {"causal", 3, 6, 6, {.num_buckets = 8, .max_distance = 20, .causal = true, .scale = 1.5}, P_NONE},
    {"start", 2, 3, 7, {.num_buckets = 6, .max_distance = 12, .causal = true, .scale = 0.5}, P_NONE},
    {"end", 2, 3, 7, {.num_buckets = 6, .max_distance = 12, .causal = true, .scale = 0.5, .align = PG_T5_ALIGN_END}, P_NONE},
    {"xt", 2, 5, 5, {0}, P_NONE}, /* x-transformers' defaults; scale sqrt(head_dim 4) */
    {"pos_int", 2, 6, 6, {.num_buckets = 32, .max_distance = 128, .scale = 1.0}, P_SELF},
    {"pos_float", 2, 5, 5, {.num_buckets = 10, .max_distance = 30, .scale = 0.8}, P_SELF},
    {"pad", 3, 5, 5, {.num_buckets = 8, .max_distance = 16, .causal = true, .scale = 1.0}, P_SELF},
    {"cross", 2, 4, 5, {.num_buckets = 12, .max_distance = 40, .scale = 1.25}, P_CROSS},
};

Test(pos_t5, table_matches_torch)
{
    pg_tensor_list l = fixture("pos_t5_table.safetensors");
    double worst_out = 0, worst_grad = 0;
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const tcase *k = &CASES[ci];
        char key[80];
        pg_t5 *m = t5_f64(k->H, 4, &k->o, 1);
        snprintf(key, sizeof key, "%s.", k->name);
        load_params(&m->pm.base, &l, key);
        pg_tensor *pq = NULL, *pk = NULL;
        if (k->pmode == P_SELF) {
            pq = pk = fx(&l, "%s.pos", k->name);
        } else if (k->pmode == P_CROSS) {
            pq = fx(&l, "%s.pos_q", k->name);
            pk = fx(&l, "%s.pos_k", k->name);
        }
        pg_pos_ctx c = {pq, pk, NULL, k->pmode != P_CROSS, false, 2, k->H, 4, k->Lq, k->Lk, 0.5, PG_F64, NULL, NULL};
        pg_graph *g = pg_graph_new();
        pg_tensor *out = pg_posmod_bias_table(g, &m->pm, &c);
        cr_assert_not_null(out, "%s: %s", k->name, pg_graph_error(g));
        cr_assert_eq(out->ndim, k->pmode == P_NONE ? 3 : 4);
        snprintf(key, sizeof key, "%s out", k->name);
        pg_tensor *want = fx(&l, "%s.out", k->name);
        assert_close(out, want, 1e-10, key);
        double e = max_err(out, want);
        worst_out = e > worst_out ? e : worst_out;
        cr_assert_eq(pg_backward_with(g, out, fx(&l, "%s.dy", k->name)), 0, "%s", pg_graph_error(g));
        snprintf(key, sizeof key, "%s.", k->name);
        check_param_grads(&m->pm.base, &l, key, 1e-9);
        pg_tensor *gw = m->relative_attention_bias->weight->grad;
        e = max_err(gw, fx(&l, "%s.grad.relative_attention_bias.weight", k->name));
        worst_grad = e > worst_grad ? e : worst_grad;
        pg_graph_free(g);
        pg_module_free(&m->pm.base);
    }
    cr_log_info("pos_t5 table parity: outputs %.3g, gradients %.3g", worst_out, worst_grad);
    pg_tensor_list_free_all(&l);
}

Test(pos_t5, names_defaults_and_float_positions)
{
    pg_t5 *m = t5_f64(4, 16, NULL, 3);
    cr_assert_eq(m->num_buckets, 32);
    cr_assert_eq(m->max_distance, 128);
    cr_assert_eq(m->scale, 4.0); /* sqrt(16) */
    cr_assert_not(m->causal);
    pg_tensor_list p = pg_module_parameters(&m->pm.base);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.names[0], "relative_attention_bias.weight");
    cr_assert_eq(p.tensors[0]->shape[0], 32);
    cr_assert_eq(p.tensors[0]->shape[1], 4);
    pg_tensor_list_free(&p);
    /* float positions truncate toward zero: -0.9 and 0.9 both act as 0; f32 gives the same table */
    pg_tensor *pf = T64(PG_SHAPE(1, 3), -0.9, 0.9, 5.99), *pi = TI64(PG_SHAPE(1, 3), 0, 0, 5),
              *p32 = T32(PG_SHAPE(1, 3), -0.9f, 0.9f, 5.99f);
    pg_pos_ctx c = {pf, pf, NULL, true, false, 1, 4, 16, 3, 3, 0.25, PG_F64, NULL, NULL};
    pg_tensor *a = pg_posmod_bias_table(NULL, &m->pm, &c);
    c.pos_q = c.pos_k = pi;
    pg_tensor *b = pg_posmod_bias_table(NULL, &m->pm, &c);
    c.pos_q = c.pos_k = p32;
    pg_tensor *d = pg_posmod_bias_table(NULL, &m->pm, &c);
    cr_assert_not_null(a, "%s", pg_last_error());
    cr_assert_eq(max_err(a, b), 0.0);
    cr_assert_eq(max_err(d, b), 0.0);
    /* an f32 call casts the table's bias */
    c.dtype = PG_F32;
    pg_tensor *f = pg_posmod_bias_table(NULL, &m->pm, &c);
    cr_assert_not_null(f, "%s", pg_last_error());
    cr_assert_eq(f->dtype, PG_F32);
    cr_assert_lt(max_err(f, b), 1e-6);
    pg_tensor *own[] = {pf, pi, p32, a, b, d, f};
    free_all(7, own);
    pg_module_free(&m->pm.base);
}

/* ===================================================================================
 * MultiheadAttention: alone and combined with ALiBi
 * =================================================================================== */

static pg_mha *mha_with(int64_t dim, int64_t heads, bool causal, pg_posmod *const *pos, int n, uint64_t seed)
{
    return test_mha(dim, heads, (test_mha_flags){.causal = causal}, pos, n, seed);
}

Test(pos_t5, mha_matches_torch)
{
    pg_tensor_list l = fixture("pos_t5_mha.safetensors");
    pg_posmod *mods[] = {&t5_f64(2, 4, &(pg_t5_opts){.num_buckets = 8, .max_distance = 16, .causal = true}, 1)->pm};
    pg_mha *m = mha_with(8, 2, true, mods, 1, 1);
    load_params(&m->base, &l, "t5.");
    pg_tensor *x = fx_copy(&l, "x", true);
    pg_graph *g = pg_graph_new();
    pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = fx(&l, "mask")});
    assert_close(out, fx(&l, "t5.out"), 1e-10, "out");
    cr_assert_eq(pg_backward_with(g, out, fx(&l, "t5.dy")), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(&l, "t5.grad.x"), 1e-9, "grad x");
    check_param_grads(&m->base, &l, "t5.", 1e-9);
    cr_log_info("pos_t5 mha parity: out %.3g, grad x %.3g, grad table %.3g", max_err(out, fx(&l, "t5.out")),
                max_err(x->grad, fx(&l, "t5.grad.x")),
                max_err(pg_module_find_param(&m->base, "pos.relative_attention_bias.weight")->grad,
                        fx(&l, "t5.grad.pos.relative_attention_bias.weight")));
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->base);
    pg_tensor_list_free_all(&l);
}

Test(pos_t5, combined_with_alibi_matches_torch)
{
    pg_tensor_list l = fixture("pos_t5_mha.safetensors");
    pg_posmod *al = pg_alibi_new(2, &(pg_alibi_opts){.asymmetric = true, .div = {1.5, true}}, PG_F64);
    cr_assert_not_null(al, "%s", pg_last_error());
    pg_posmod *mods[] = {al, &t5_f64(2, 4, &(pg_t5_opts){.num_buckets = 12, .max_distance = 24, .scale = 0.7}, 1)->pm};
    pg_mha *m = mha_with(8, 2, false, mods, 2, 1);
    load_params(&m->base, &l, "combo.");
    cr_assert_not_null(pg_module_find_param(&m->base, "pos.0.div"));
    cr_assert_not_null(pg_module_find_param(&m->base, "pos.1.relative_attention_bias.weight"));
    pg_tensor *x = fx_copy(&l, "x", true), *pos = fx_copy(&l, "combo.pos", true);
    pg_graph *g = pg_graph_new();
    pg_tensor *out = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = fx(&l, "mask"), .pos = pos});
    assert_close(out, fx(&l, "combo.out"), 1e-10, "out");
    cr_assert_eq(pg_backward_with(g, out, fx(&l, "combo.dy")), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(&l, "combo.grad.x"), 1e-9, "grad x");
    assert_close(pos->grad, fx(&l, "combo.grad.pos"), 1e-9, "grad pos");
    check_param_grads(&m->base, &l, "combo.", 1e-9);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(pos);
    pg_module_free(&m->base);
    pg_tensor_list_free_all(&l);
}

/* ===================================================================================
 * gradchecks
 * =================================================================================== */

typedef struct tab_case {
    pg_t5 *m;
    pg_tensor *pos_q, *pos_k;
    bool self_attn;
    int64_t B, Lq, Lk;
} tab_case;

static pg_tensor *call_table(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n; /* in[0] is the module's table */
    const tab_case *t = ctx;
    pg_pos_ctx c = {t->pos_q, t->pos_k, NULL, t->self_attn, false, t->B, t->m->heads, 4, t->Lq, t->Lk, 1.0, PG_F64, NULL, NULL};
    return pg_posmod_bias_table(g, &t->m->pm, &c);
}

Test(pos_t5, gradcheck_table)
{
    pg_gradcheck_opts go = f64_only();
    pg_t5_opts opts[] = {{.num_buckets = 6, .max_distance = 10, .scale = 1.3},
                         {.num_buckets = 4, .max_distance = 9, .causal = true, .align = PG_T5_ALIGN_END, .scale = 0.5}};
    for (int i = 0; i < 2; i++) {
        pg_t5 *m = t5_f64(2, 4, &opts[i], 2);
        tab_case t = {m, NULL, NULL, true, 1, 3, 5};
        pg_tensor *in[] = {m->relative_attention_bias->weight};
        assert_gradcheck(call_table, 1, in, &t, &go);
        pg_module_free(&m->pm.base);
    }
    /* cross positions, left padded */
    pg_t5 *m = t5_f64(2, 4, &opts[0], 3);
    pg_tensor *pq = TI64(PG_SHAPE(2, 2), 3, 9, 0, -4), *pk = T64(PG_SHAPE(2, 3), 0.5, 2, 30, 7, 1, 1);
    tab_case t = {m, pq, pk, false, 2, 3, 4};
    pg_tensor *in[] = {m->relative_attention_bias->weight};
    assert_gradcheck(call_table, 1, in, &t, &go);
    pg_module_free(&m->pm.base);
    pg_tensor_free(pq);
    pg_tensor_free(pk);
}

typedef struct mha_case {
    pg_mha *m;
    pg_tensor *mask, *pos;
} mha_case;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const mha_case *c = ctx;
    return pg_mha_forward(g, c->m, in[0], NULL, &(pg_attn_args){.mask = c->mask, .pos = c->pos});
}

Test(pos_t5, gradcheck_in_mha)
{
    pg_gradcheck_opts go = f64_only();
    pg_posmod *mods[] = {&t5_f64(2, 2, &(pg_t5_opts){.num_buckets = 4, .max_distance = 6, .causal = true}, 4)->pm};
    pg_mha *m = mha_with(4, 2, true, mods, 1, 5);
    pg_tensor *pos = TI64(PG_SHAPE(2, 4), 0, 2, 3, 9, 4, 1, 0, 2);
    mha_case c = {m, key_mask(), pos};
    pg_tensor *in[16] = {randt(PG_SHAPE(2, 5, 4), 6, true)};
    int n = with_params(in, 1, &m->base);
    cr_assert_eq(n, 1 + 4 + 1);
    assert_gradcheck(call_mha, n, in, &c, &go);
    pg_tensor *own[] = {in[0], pos, c.mask};
    free_all(3, own);
    pg_module_free(&m->base);
}

/* ===================================================================================
 * training: one Adam step moves the table, in MHA and in a 1-block LM
 * =================================================================================== */

static void adam_step_changes(pg_module *root, const char *name)
{
    pg_tensor *p = pg_module_find_param(root, name);
    cr_assert_not_null(p, "no parameter %s", name);
    cr_assert_not_null(p->grad, "%s has no grad", name);
    pg_tensor *before = pg_tensor_copy(NULL, p);
    pg_tensor_list ps = pg_module_parameters(root);
    pg_optim_hparams h = pg_adam_hparams(0.05);
    pg_optim *o = pg_optim_new(PG_ADAM, &h);
    cr_assert_eq(pg_optim_add_group(o, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_step(o), 0, "%s", pg_last_error());
    int changed = 0;
    for (int64_t i = 0; i < p->numel; i++) {
        cr_assert(isfinite(pg_get(p, i)), "%s[%lld] is not finite", name, (long long)i);
        changed += pg_get(p, i) != pg_get(before, i);
    }
    cr_assert_gt(changed, 0, "%s did not change", name);
    pg_optim_free(o);
    pg_tensor_list_free(&ps);
    pg_tensor_free(before);
}

Test(pos_t5, trains_in_mha_and_lm)
{
    pg_posmod *mods[] = {&t5_f64(2, 2, &(pg_t5_opts){.num_buckets = 8, .max_distance = 12}, 7)->pm};
    pg_mha *m = mha_with(4, 2, false, mods, 1, 7);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 8, false);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mha_forward(g, m, x, NULL, NULL);
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    adam_step_changes(&m->base, "pos.relative_attention_bias.weight");
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->base);

    pg_t5_opts to = {.num_buckets = 8, .max_distance = 16, .causal = true};
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 1);
    c.dtype = PG_F64;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){NULL, pg_posmod_make_t5, &to};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_t5 *t = (pg_t5 *)lm->blocks[0]->attn->pos[0];
    cr_assert_eq(t->scale, 2.0); /* sqrt(head_dim 4) */
    pg_tensor *ids = TI64(PG_SHAPE(2, 4), 1, 2, 3, 4, 6, 5, 0, 2);
    g = pg_graph_new();
    pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    adam_step_changes(&lm->base, "blocks.0.attn.pos.relative_attention_bias.weight");
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_module_free(&lm->base);
}

/* ===================================================================================
 * bad input
 * =================================================================================== */

Test(pos_t5, bad_options)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_t5_new(0, 4, NULL, PG_F64, &r), "pg_t5_new: need heads >= 1");
    ASSERT_FAILS(pg_t5_new(2, 4, &(pg_t5_opts){.num_buckets = 3}, PG_F64, &r),
                 "num_buckets 3 is too small: need >= 4 for bidirectional buckets");
    ASSERT_FAILS(pg_t5_new(2, 4, &(pg_t5_opts){.num_buckets = 1, .causal = true}, PG_F64, &r),
                 "need >= 2 for causal buckets");
    ASSERT_FAILS(pg_t5_new(2, 4, &(pg_t5_opts){.num_buckets = 32, .max_distance = 8}, PG_F64, &r),
                 "max_distance 8 must exceed the exact range 8");
    ASSERT_FAILS(pg_t5_new(2, 0, NULL, PG_F64, &r), "scale 0 means sqrt(head_dim), but head_dim is 0");
    ASSERT_FAILS(pg_t5_new(2, 4, &(pg_t5_opts){.scale = INFINITY}, PG_F64, &r), "scale must be finite");
    ASSERT_FAILS(pg_t5_new(2, 4, &(pg_t5_opts){.align = 3}, PG_F64, &r), "align must be");
    ASSERT_FAILS(pg_t5_new(2, 4, &(pg_t5_opts){.heads = 3}, PG_F64, &r), "opts.heads 3 differs from heads 2");
    ASSERT_FAILS(pg_t5_new(2, 4, NULL, PG_F64, NULL), "need a generator");
    ASSERT_FAILS(pg_t5_new(2, 4, NULL, PG_I64, &r), "pg_embed_new");
    pg_posmod_args a = {.dim = 8, .heads = 0, .dtype = PG_F64, .rng = &r};
    ASSERT_FAILS(pg_posmod_make_t5(&a), "needs heads >= 1");
    ASSERT_FAILS(pg_posmod_make_t5(NULL), "args is NULL");
    a.heads = 2;
    a.head_dim = 4;
    pg_posmod *ok = pg_posmod_make_t5(&a);
    cr_assert_not_null(ok, "%s", pg_last_error());
    pg_module_free(&ok->base);
}

Test(pos_t5, bad_input)
{
    pg_t5 *m = t5_f64(2, 4, NULL, 1);
    pg_tensor *longer = TI64(PG_SHAPE(1, 6), 0, 1, 2, 3, 4, 5), *nan = T64(PG_SHAPE(1, 2), 0, NAN),
              *huge = T64(PG_SHAPE(1, 2), 0, 1e300), *mask = TBOOL(PG_SHAPE(1, 4), 1, 1, 1, 1);
    pg_pos_ctx c = {longer, longer, NULL, true, false, 1, 2, 4, 5, 5, 1.0, PG_F64, NULL, NULL};
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "pos is i64[1,6], expected (B, Lp) = (1, <= 5)");
    c.pos_q = c.pos_k = nan;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "t5: pos[1] is nan, expected a finite position");
    c.pos_q = c.pos_k = huge;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "magnitude <= 2^53");
    c.pos_q = c.pos_k = NULL;
    c.mask = mask;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "mask is bool[1,4], expected a bool key mask (B, Lk) = (1, 5)");
    c.mask = NULL;
    c.heads = 4;
    ASSERT_FAILS(pg_posmod_bias_table(NULL, &m->pm, &c), "t5: the module has 2 heads, the attention 4");
    pg_tensor *own[] = {longer, nan, huge, mask};
    free_all(4, own);
    pg_module_free(&m->pm.base);
}
