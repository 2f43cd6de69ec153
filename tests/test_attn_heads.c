/* Head width independent of dim / heads, grouped-query / multi-query attention and
 * qk-norm (docs/attention.md "Head width, grouped-query attention and qk-norm"):
 * MultiheadAttention and a 2-layer LM against tests/fixtures/gen_attn_heads.py (written
 * from x-transformers' conventions), fused = reference path, f64 gradchecks w.r.t. the
 * inputs and every parameter for each option, bad configurations refused. */
#include "testutil.h"

typedef struct heads_case {
    const char *name;
    int64_t dim_head, kv_heads;
    bool qk_norm, dim_scale;
    double qk_norm_scale;
    int64_t groups;
    bool cross, causal;
} heads_case;

/* the fixture's MHA cases (dim 8, 4 heads); qk_norm_scale 0 is the default (10, or
 * 1 / sqrt(dim_head) with the dim scales), as x-transformers */
static const heads_case CASES[] = {
    {"dh", 8, 4, false, false, 0, 0, false, true},  {"gqa", 8, 2, false, false, 0, 0, false, true},
    {"qkn", 8, 2, true, false, 0, 0, false, true},  {"qkn_dim", 8, 1, true, true, 0, 2, false, false},
    {"cross", 8, 2, true, false, 4, 0, true, false},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

static pg_mha_config case_config(const heads_case *k, int64_t dim, bool unfused)
{
    pg_mha_config c = pg_mha_defaults(dim, 4);
    c.dtype = PG_F64;
    c.dim_head = k->dim_head;
    c.kv_heads = k->kv_heads;
    c.qk_norm = k->qk_norm;
    c.qk_norm_dim_scale = k->dim_scale;
    c.qk_norm_scale = k->qk_norm_scale;
    c.qk_norm_groups = k->groups;
    c.cross = k->cross;
    c.context_dim = k->cross ? 6 : 0;
    c.causal = k->causal;
    c.unfused = unfused;
    return c;
}

static pg_mha *case_mha(const heads_case *k, int64_t dim, bool unfused, uint64_t seed)
{
    pg_mha_config c = case_config(k, dim, unfused);
    pg_rng r = pg_rng_init(seed);
    pg_mha *m = pg_mha_new(&c, NULL, 0, &r);
    cr_assert_not_null(m, "%s: %s", k->name, pg_last_error());
    return m;
}

/* forward + backward of one fixture case through the fused or the reference path */
static void check_mha_case(const pg_tensor_list *l, const heads_case *k, bool unfused)
{
    char p[32];
    snprintf(p, sizeof p, "mha.%s.", k->name);
    pg_mha *m = case_mha(k, 8, unfused, 1);
    load_params(&m->base, l, p);
    char nx[48], nc[48];
    snprintf(nx, sizeof nx, "%sx", p);
    snprintf(nc, sizeof nc, "%scontext", p);
    pg_tensor *x = fx_copy(l, nx, true), *ctx = k->cross ? fx_copy(l, nc, true) : NULL;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mha_forward(g, m, x, ctx, &(pg_attn_args){.mask = fx(l, "%smask", p)});
    cr_assert_not_null(y, "%s: %s", k->name, pg_graph_error(g));
    printf("attn_heads mha %s (%s): output error %.3g\n", k->name, unfused ? "reference" : "fused",
           max_err(y, fx(l, "%sout", p)));
    assert_close(y, fx(l, "%sout", p), 1e-10, k->name);
    cr_assert_eq(pg_backward_with(g, y, fx(l, "%sdy", p)), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(l, "%sgrad.x", p), 1e-10, "grad x");
    if (ctx)
        assert_close(ctx->grad, fx(l, "%sgrad.context", p), 1e-10, "grad context");
    check_param_grads(&m->base, l, p, 1e-10);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(ctx);
    pg_module_free(&m->base);
}

Test(attn_heads, mha_matches_torch_fused_and_reference)
{
    pg_tensor_list l = fixture("attn_heads.safetensors");
    for (int i = 0; i < N_CASES; i++)
        for (int unfused = 0; unfused < 2; unfused++)
            check_mha_case(&l, &CASES[i], unfused);
    pg_tensor_list_free_all(&l);
}

Test(attn_heads, shapes_and_names)
{
    /* dim 8, 4 heads of 8, 2 kv heads: to_qkv 8 -> (4 + 2 * 2) * 8 rows, to_out 32 -> 8 */
    pg_mha *m = case_mha(&CASES[3], 8, false, 1);
    cr_assert_eq(m->head_dim, 8);
    cr_assert_eq(m->kv_heads, 1);
    cr_assert_eq(m->to_qkv->out_features, (4 + 2) * 8);
    cr_assert_eq(m->to_out->in_features, 32);
    cr_assert_float_eq(m->cfg.scale, 1.0 / sqrt(8.0), 1e-15); /* dim scales: 1 / sqrt(dim_head) */
    pg_tensor *qs = pg_module_find_param(&m->base, "qk_norm_q_scale");
    pg_tensor *ks = pg_module_find_param(&m->base, "qk_norm_k_scale");
    cr_assert_not_null(qs);
    cr_assert_not_null(ks);
    assert_shape(qs, 3, (const int64_t[]){4, 1, 8});
    assert_shape(ks, 3, (const int64_t[]){1, 1, 8});
    cr_assert_float_eq(pg_get(ks, 5), pow(8.0, 0.25), 1e-15);
    pg_module_free(&m->base);
    m = case_mha(&CASES[2], 8, false, 1);
    cr_assert_float_eq(m->cfg.scale, 10.0, 0); /* qk_norm's default scale */
    cr_assert_null(pg_module_find_param(&m->base, "qk_norm_q_scale"));
    pg_module_free(&m->base);
}

/* pg_mha_qkv: k and v repeated from G heads so that query head h reads head h mod G */
Test(attn_heads, qkv_repeats_kv_heads_h_mod_g)
{
    pg_mha *m = case_mha(&CASES[1], 8, false, 1); /* 4 heads, 2 kv heads */
    pg_tensor *x = randt(PG_SHAPE(2, 3, 8), 4, false);
    pg_graph *g = pg_graph_new();
    pg_tensor *qkv[3];
    cr_assert_eq(pg_mha_qkv(g, m, x, NULL, qkv), 0, "%s", pg_graph_error(g));
    assert_shape(qkv[1], 4, (const int64_t[]){2, 4, 3, 8});
    for (int t = 1; t < 3; t++) {
        pg_tensor *c = pg_copy(g, qkv[t]);
        for (int64_t b = 0; b < 2; b++)
            for (int64_t h = 0; h < 2; h++)
                for (int64_t j = 0; j < 24; j++) /* heads h and h + 2 are one head */
                    cr_assert_eq(pg_get(c, ((b * 4 + h) * 24) + j), pg_get(c, ((b * 4 + h + 2) * 24) + j));
        /* and the two kv heads differ */
        cr_assert_neq(pg_get(c, 0), pg_get(c, 24));
    }
    /* head 1 of k is to_qkv's rows 4 * 8 + 8 .. + 16 applied to x */
    pg_tensor *y = pg_copy(g, pg_linear_forward(g, m->to_qkv, x)); /* (2, 3, 64) */
    pg_tensor *k = pg_copy(g, qkv[1]);
    for (int64_t i = 0; i < 3; i++)
        for (int64_t d = 0; d < 8; d++)
            cr_assert_float_eq(pg_get(k, (1 * 3 + i) * 8 + d), pg_get(y, i * 64 + 40 + d), 1e-15);
    ASSERT_RC_FAILS(pg_mha_qkv(g, m, x, NULL, NULL), "pg_mha_qkv: qkv is NULL");
    pg_graph_reset(g);
    ASSERT_RC_FAILS(pg_mha_qkv(g, m, NULL, NULL, qkv), "pg_mha_qkv: x is NULL");
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->base);
}

/* ---- gradchecks ---------------------------------------------------------------------------- */

typedef struct mha_ctx {
    pg_mha *m;
    pg_tensor *mask;
} mha_ctx;

static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const mha_ctx *c = ctx;
    return pg_mha_forward(g, c->m, in[0], c->m->cfg.cross ? in[1] : NULL, &(pg_attn_args){.mask = c->mask});
}

/* dim 6 (not a multiple of dim_head 3 times 4 heads), inputs and every parameter */
static void gradcheck_case(const heads_case *k, bool unfused)
{
    heads_case s = *k;
    s.dim_head = 4;
    s.groups = k->groups ? 2 : 0;
    pg_mha *m = case_mha(&s, 6, unfused, 9);
    test_jitter_norms(&m->base, 3);
    mha_ctx c = {m, key_mask()};
    pg_tensor *in[64];
    int nf = 1;
    in[0] = randt(PG_SHAPE(2, 5, 6), 5, true);
    if (k->cross)
        in[nf++] = randt(PG_SHAPE(2, 5, 6), 6, true);
    int n = with_params(in, nf, &m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_mha, n, in, &c, &o);
    free_all(nf, in);
    pg_tensor_free(c.mask);
    pg_module_free(&m->base);
}

Test(attn_heads, gradcheck_every_option_fused_and_reference)
{
    for (int i = 0; i < N_CASES; i++)
        for (int unfused = 0; unfused < 2; unfused++)
            gradcheck_case(&CASES[i], unfused);
}

/* ---- the LM ----------------------------------------------------------------------------------- */

static pg_lm *heads_lm(int64_t dim, int64_t ff, int64_t kv_heads, bool dim_scale, uint64_t seed)
{
    pg_lm_config c = pg_lm_defaults(11, dim, 4, 2);
    c.ff_hidden = ff;
    c.dtype = PG_F64;
    c.seed = seed;
    c.dim_head = 8;
    c.kv_heads = kv_heads;
    c.qk_norm = true;
    c.qk_norm_dim_scale = dim_scale;
    c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){.kind = "rotary"};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    return lm;
}

Test(attn_heads, lm_matches_torch)
{
    pg_tensor_list l = fixture("attn_heads_lm.safetensors");
    const char *names[] = {"gqa", "mqa"};
    for (int i = 0; i < 2; i++) {
        char p[16];
        snprintf(p, sizeof p, "lm.%s.", names[i]);
        pg_lm *lm = heads_lm(8, 8, i ? 1 : 2, i == 0, 3);
        load_params(&lm->base, &l, p);
        pg_graph *g = pg_graph_new();
        pg_tensor *logits = pg_lm_forward(g, lm, fx(&l, "%sids", p), NULL);
        printf("attn_heads lm %s: logits error %.3g\n", names[i], max_err(logits, fx(&l, "%slogits", p)));
        assert_close(logits, fx(&l, "%slogits", p), 1e-10, "logits");
        pg_tensor *loss = pg_lm_loss(g, lm, fx(&l, "%sids", p), fx(&l, "%stargets", p), NULL);
        assert_close(loss, fx(&l, "%sloss", p), 1e-10, "loss");
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        check_param_grads(&lm->base, &l, p, 1e-10);
        pg_graph_free(g);
        pg_module_free(&lm->base);
    }
    pg_tensor_list_free_all(&l);
}

typedef struct lm_ctx {
    pg_lm *lm;
    pg_tensor *ids;
} lm_ctx;

static pg_tensor *call_lm(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const lm_ctx *c = ctx;
    return pg_lm_forward(g, c->lm, c->ids, NULL);
}

Test(attn_heads, lm_gradcheck_every_parameter)
{
    pg_lm_config c = pg_lm_defaults(5, 6, 4, 2);
    c.ff_hidden = 4;
    c.dtype = PG_F64;
    c.dim_head = 3;
    c.kv_heads = 2;
    c.qk_norm = true;
    c.qk_norm_dim_scale = true;
    c.qk_norm_groups = 1;
    c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){.kind = "rotary", .opts = &(pg_rotary_opts){.n_dims = 2}};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    test_jitter_norms(&lm->base, 4);
    lm_ctx k = {lm, TI64(PG_SHAPE(2, 4), 1, 4, 0, 2, 3, 3, 1, 0)};
    pg_tensor *in[128];
    int n = with_params(in, 0, &lm->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_lm, n, in, &k, &o);
    pg_tensor_free(k.ids);
    pg_module_free(&lm->base);
}

/* ---- bad configurations ---------------------------------------------------------------------- */

static void assert_mha_refused(pg_mha_config c, const char *needle)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), needle);
}

Test(attn_heads, bad_configs_refused)
{
    pg_mha_config c = pg_mha_defaults(8, 4);
    c.kv_heads = 3;
    assert_mha_refused(c, "pg_mha_new: kv_heads 3 must divide heads 4");
    c.kv_heads = -1;
    assert_mha_refused(c, "kv_heads -1 must divide heads 4");
    c = pg_mha_defaults(8, 4);
    c.dim_head = -2;
    assert_mha_refused(c, "dim_head -2 >= 0");
    c = pg_mha_defaults(10, 4); /* not a multiple without dim_head ... */
    assert_mha_refused(c, "dim 10 must be a positive multiple of heads 4 unless dim_head is set");
    c.dim_head = 5; /* ... fine with it */
    pg_rng r = pg_rng_init(1);
    pg_mha *m = pg_mha_new(&c, NULL, 0, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_module_free(&m->base);
    c = pg_mha_defaults(8, 4);
    c.qk_norm = true;
    c.qk_norm_scale = -1;
    assert_mha_refused(c, "qk_norm needs a finite qk_norm_scale >= 0");
    c.qk_norm_scale = INFINITY;
    assert_mha_refused(c, "qk_norm needs a finite qk_norm_scale >= 0");
    c.qk_norm_scale = 0;
    c.scale = 0.5;
    assert_mha_refused(c, "scale 0 (qk_norm_scale is the logit scale)");
    c.scale = 0;
    c.qk_norm_groups = 3; /* dim_head 2 */
    assert_mha_refused(c, "qk_norm_groups 3 must divide dim_head 2");
    c = pg_mha_defaults(8, 4);
    c.qk_norm_dim_scale = true;
    assert_mha_refused(c, "are options of qk_norm, which is off");
    c = pg_mha_defaults(8, 4);
    c.qk_norm_scale = 5;
    assert_mha_refused(c, "are options of qk_norm, which is off");
    /* through the block and the LM */
    pg_block_config bc = pg_block_defaults(8, 4);
    bc.kv_heads = 3;
    ASSERT_FAILS(pg_block_new(&bc, NULL, 0, &r), "kv_heads 3 must divide heads 4");
    pg_lm_config lc = pg_lm_defaults(5, 8, 4, 1);
    lc.kv_heads = 3;
    ASSERT_FAILS(pg_lm_new(&lc), "kv_heads 3 must divide heads 4");
    lc = pg_lm_defaults(5, 10, 4, 1);
    ASSERT_FAILS(pg_lm_new(&lc), "dim a positive multiple of heads (or dim_head > 0)");
    lc.dim_head = -1;
    ASSERT_FAILS(pg_lm_new(&lc), "dim_head -1");
}

/* The block passes its fields through: 4 heads of 5 over dim 6, one kv head */
Test(attn_heads, block_passes_fields)
{
    pg_block_config bc = pg_block_defaults(6, 4);
    bc.dim_head = 5;
    bc.kv_heads = 1;
    bc.qk_norm = true;
    bc.qk_norm_scale = 3;
    pg_rng r = pg_rng_init(1);
    pg_block *b = pg_block_new(&bc, NULL, 0, &r);
    cr_assert_not_null(b, "%s", pg_last_error());
    cr_assert_eq(b->attn->head_dim, 5);
    cr_assert_eq(b->attn->kv_heads, 1);
    cr_assert_eq(b->attn->to_qkv->out_features, (4 + 2) * 5);
    cr_assert_float_eq(b->attn->cfg.scale, 3.0, 0);
    pg_graph *g = pg_graph_new();
    pg_tensor *x = randt(PG_SHAPE(1, 3, 6), 2, false);
    pg_tensor *x32 = pg_cast(g, x, PG_F32);
    pg_tensor *y = pg_block_forward(g, b, x32, NULL);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    assert_shape(y, 3, (const int64_t[]){1, 3, 6});
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&b->base);
}
