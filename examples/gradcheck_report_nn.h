/* gradcheck_report: the positional schemes (every registry entry, with its main
 * options) and the attention modules, each through pg_gradcheck_module: the
 * gradients of the output with respect to the input and every parameter
 * (included by examples/gradcheck_report.c after gc_report). Shapes are tiny:
 * width 8, 2 heads of 4, 4 tokens, float64. */
#ifndef PG_EXAMPLES_GRADCHECK_REPORT_NN_H
#define PG_EXAMPLES_GRADCHECK_REPORT_NN_H

enum { GC_DIM = 8, GC_HEADS = 2, GC_DH = 4, GC_L = 4, GC_MAX_LEN = 8 };

/* ---- checking a module ------------------------------------------------------------------ */
/* A module check as one row; frees nothing. */
static void gc_module_row(gc_report *rep, const char *what, pg_module_check_fn fn, pg_module *m, int n_in,
                          pg_tensor *const *in, void *ctx, bool fast)
{
    pg_gradcheck_opts o = gc_opts(rep, fast);
    double t0 = gc_now_ms();
    pg_module_gradcheck res = pg_gradcheck_module(fn, m, n_in, in, ctx, &o);
    gc_row(rep, what, &res.all, gc_now_ms() - t0);
    pg_module_gradcheck_free(&res);
}

/* x (1, L, dim) ~ N(0, 1), requiring grad; NULL on failure. */
static pg_tensor *gc_input(pg_rng *r, int64_t L, int64_t dim)
{
    pg_tensor *x = pg_randn(NULL, PG_F64, 3, (const int64_t[]){1, L, dim}, r);
    if (x)
        pg_set_requires_grad(x, true);
    return x;
}

static pg_tensor *gc_mha_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_mha_forward(g, (pg_mha *)m, in[0], NULL, NULL);
}

static pg_tensor *gc_pos_x_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_posmod *pm = (pg_posmod *)m;
    return pg_posmod_apply_x(g, &pm, 1, in[0], NULL, NULL, 0, 0, NULL);
}

/* A small MultiheadAttention (f64, causal unless told) around pos (owned; NULL: none); NULL on failure. */
static pg_mha *gc_mha(pg_posmod *pos, bool causal, bool fused, pg_rng *r)
{
    pg_mha_config c = pg_mha_defaults(GC_DIM, GC_HEADS);
    c.dtype = PG_F64;
    c.causal = causal;
    c.unfused = !fused;
    return pg_mha_new(&c, pos ? &pos : NULL, pos ? 1 : 0, r);
}

/* ---- the positional schemes ---------------------------------------------------------------- */
/* One row per (kind, variant): opts NULL for the defaults. */
typedef struct gc_pos_variant {
    const char *kind, *label;
    const void *opts;
    bool bidirectional; /* attention not causal */
} gc_pos_variant;

static const pg_rotary_opts GC_ROT_XPOS = {.use_xpos = true, .scale_base = 8};
static const pg_rotary_opts GC_ROT_HALF = {.pairing = PG_ROTARY_HALF_SPLIT};
static const pg_rotary_opts GC_ROT_PI = {.scaling = PG_ROPE_LINEAR, .rope_factor = 2};
static const pg_rotary_opts GC_ROT_NTK = {.scaling = PG_ROPE_NTK, .rope_factor = 2};
static const pg_rotary_opts GC_ROT_YARN = {.scaling = PG_ROPE_YARN, .rope_factor = 2, .rope_orig_len = 4};
static const pg_rotary_opts GC_ROT_DYN = {.scaling = PG_ROPE_DYNAMIC_NTK, .rope_factor = 1, .rope_orig_len = 2};
static const pg_fox_opts GC_FOX_BI = {.bidirectional = true};
static const pg_fox_opts GC_FOX_DD = {.init = PG_FOX_INIT_DD_ALIBI};
static const pg_cope_opts GC_COPE_XT = {.convention = PG_COPE_XT};
static const pg_cope_opts GC_COPE_VAL = {.gates = PG_COPE_GATES_VALUE};
static const pg_cope_opts GC_COPE_SOFT = {.soft_onehot = true};
static const pg_kerple_opts GC_KERPLE_POW = {.variant = PG_KERPLE_POWER};
static const pg_kerple_opts GC_KERPLE_NEMO = {.variant = PG_KERPLE_NEMO};
static const pg_rel1d_opts GC_REL1D_HEADS = {.heads = GC_HEADS};
static const pg_rel2d_opts GC_REL2D = {.height = 2, .width = 2};
static const pg_rel2d_opts GC_REL2D_AIS = {.height = 2, .width = 2, .heads = GC_HEADS, .aisummer = true};
static const pg_abs1d_opts GC_ABS1D_SCALED = {.scaled = true};

/* The defaults row of a kind that has no defaults (PG_POS_NEEDS_OPTS) uses these. */
static const gc_pos_variant GC_POS_REQUIRED[] = {
    {"rel2d", "2x2 map", &GC_REL2D, false},
};

static const gc_pos_variant GC_POS_VARIANTS[] = {
    {"rotary", "xpos", &GC_ROT_XPOS, false},
    {"rotary", "half split", &GC_ROT_HALF, false},
    {"rotary", "PI x2", &GC_ROT_PI, false},
    {"rotary", "NTK x2", &GC_ROT_NTK, false},
    {"rotary", "YaRN x2", &GC_ROT_YARN, false},
    {"rotary", "dynamic NTK", &GC_ROT_DYN, false},
    {"fox", "bidirectional", &GC_FOX_BI, true},
    {"fox", "dd-alibi init", &GC_FOX_DD, false},
    {"cope", "x-transformers", &GC_COPE_XT, false},
    {"cope", "value gates", &GC_COPE_VAL, false},
    {"cope", "soft onehot", &GC_COPE_SOFT, false},
    {"kerple", "power", &GC_KERPLE_POW, false},
    {"kerple", "nemo", &GC_KERPLE_NEMO, false},
    {"rel1d", "per head", &GC_REL1D_HEADS, false},
    {"rel2d", "aisummer per head", &GC_REL2D_AIS, false},
    {"abs1d", "scaled", &GC_ABS1D_SCALED, false},
};

/* The options the defaults row of `k` needs: NULL (its defaults), or GC_POS_REQUIRED's. */
static const gc_pos_variant *gc_pos_required(const pg_posmod_kind_info *k)
{
    for (size_t i = 0; i < sizeof GC_POS_REQUIRED / sizeof GC_POS_REQUIRED[0]; i++)
        if (!strcmp(GC_POS_REQUIRED[i].kind, k->kind))
            return &GC_POS_REQUIRED[i];
    return NULL;
}

/* One row: the scheme built with opts, checked alone (an input scheme, through
 * mod_x) or inside a small MultiheadAttention (reference path, or fused). */
static void gc_pos_row(gc_report *rep, const pg_posmod_kind_info *k, const char *label, const void *opts,
                       bool bidirectional, bool fused)
{
    char what[96];
    snprintf(what, sizeof what, "pos/%s%s%s%s", k->kind, label ? " " : "", label ? label : "", fused ? " fused" : "");
    if (!gc_want(rep, what))
        return;
    pg_rng r = pg_rng_init(7);
    pg_posmod_args a = {.dim = GC_DIM, .heads = GC_HEADS, .head_dim = GC_DH, .max_len = GC_MAX_LEN,
                        .layer = 0, .dtype = PG_F64, .rng = &r, .opts = opts};
    bool input = k->role == PG_POS_ROLE_INPUT;
    if (input)
        a.heads = a.head_dim = 0, a.layer = -1;
    pg_posmod *pm = k->make(&a);
    pg_mha *mha = !input && pm ? gc_mha(pm, !bidirectional, fused, &r) : NULL; /* takes pm */
    pg_module *m = input ? (pm ? &pm->base : NULL) : (mha ? &mha->base : NULL);
    pg_tensor *x = gc_input(&r, GC_L, GC_DIM);
    if (!m || !x)
        gc_row_setup_failed(rep, what);
    else
        gc_module_row(rep, what, input ? gc_pos_x_fn : gc_mha_fn, m, 1, &x, NULL, false);
    if (m)
        pg_module_free(m);
    pg_tensor_free(x);
}

/* Whether MultiheadAttention's fused kernel takes the kind: no bias (rotary, xPos:
 * q and k only), or a bias it adds per tile (a distance or separable bias, relative keys). */
static bool gc_pos_fusable(const pg_posmod_kind_info *k)
{
    return !(k->hooks & PG_POS_HOOK_BIAS) ||
           (k->hooks & (PG_POS_HOOK_DIST | PG_POS_HOOK_SEP | PG_POS_HOOK_REL | PG_POS_HOOK_ATTEND));
}

/* Every registered kind: its defaults (or required options), its variants, and the
 * fused path for the kinds the fused kernel takes (gc_pos_fusable). */
static void gc_run_pos(gc_report *rep)
{
    const pg_posmod_kind_info *k;
    for (int i = 0; (k = pg_posmod_info_at(i)) != NULL; i++) {
        const gc_pos_variant *req = gc_pos_required(k);
        if ((k->props & PG_POS_NEEDS_OPTS) && !req) {
            char what[96];
            snprintf(what, sizeof what, "pos/%s", k->kind);
            if (gc_want(rep, what)) {
                pg_set_error("gradcheck_report: no options for '%s' (it needs them)", k->kind);
                gc_row_setup_failed(rep, what);
            }
            continue;
        }
        gc_pos_row(rep, k, req ? req->label : NULL, req ? req->opts : NULL, false, false);
        for (size_t v = 0; v < sizeof GC_POS_VARIANTS / sizeof GC_POS_VARIANTS[0]; v++)
            if (!strcmp(GC_POS_VARIANTS[v].kind, k->kind))
                gc_pos_row(rep, k, GC_POS_VARIANTS[v].label, GC_POS_VARIANTS[v].opts,
                           GC_POS_VARIANTS[v].bidirectional, false);
        if (k->role == PG_POS_ROLE_ATTENTION && gc_pos_fusable(k))
            gc_pos_row(rep, k, req ? req->label : NULL, req ? req->opts : NULL, false, true);
    }
}

/* ---- attention, LocalAttention, a block, a small LM ------------------------------------------ */
static void gc_mha_row(gc_report *rep, const char *what, bool fused)
{
    if (!gc_want(rep, what))
        return;
    pg_rng r = pg_rng_init(11);
    pg_mha *m = gc_mha(NULL, true, fused, &r);
    pg_tensor *x = gc_input(&r, GC_L, GC_DIM);
    if (!m || !x)
        gc_row_setup_failed(rep, what);
    else
        gc_module_row(rep, what, gc_mha_fn, &m->base, 1, &x, NULL, false);
    if (m)
        pg_module_free(&m->base);
    pg_tensor_free(x);
}

static pg_tensor *gc_local_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_local_attention_forward(g, (pg_local_attention *)m, in[0], in[1], in[2], NULL);
}

/* LocalAttention: window 2, causal, rotary over the head dim; q, k, v (1, 2, 6, 4). */
static void gc_local_row(gc_report *rep, const char *what, bool unfused)
{
    if (!gc_want(rep, what))
        return;
    pg_local_attention_config c = pg_local_attention_defaults(2);
    c.causal = true;
    c.dim = GC_DH;
    c.dtype = PG_F64;
    c.unfused = unfused;
    pg_local_attention *m = pg_local_attention_new(&c, NULL, 0);
    pg_rng r = pg_rng_init(13);
    pg_tensor *qkv[3];
    bool ok = m != NULL;
    for (int i = 0; i < 3; i++) {
        qkv[i] = pg_randn(NULL, PG_F64, 4, (const int64_t[]){1, 2, 6, GC_DH}, &r);
        ok = ok && qkv[i];
        if (qkv[i])
            pg_set_requires_grad(qkv[i], true);
    }
    if (!ok)
        gc_row_setup_failed(rep, what);
    else
        gc_module_row(rep, what, gc_local_fn, &m->base, 3, qkv, NULL, false);
    if (m)
        pg_module_free(&m->base);
    for (int i = 0; i < 3; i++)
        pg_tensor_free(qkv[i]);
}

static pg_tensor *gc_block_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_block_forward(g, (pg_block *)m, in[0], NULL);
}

/* A pre-norm TransformerBlock, causal, with a dynamic position bias. */
static void gc_block_row(gc_report *rep, const char *what)
{
    if (!gc_want(rep, what))
        return;
    pg_rng r = pg_rng_init(17);
    pg_block_config c = pg_block_defaults(GC_DIM, GC_HEADS);
    c.dtype = PG_F64;
    c.causal = true;
    pg_posmod *dpb = pg_posmod_make_dpb(&(pg_posmod_args){.dim = GC_DIM, .heads = GC_HEADS, .head_dim = GC_DH,
                                                          .dtype = PG_F64, .rng = &r});
    pg_block *b = dpb ? pg_block_new(&c, &dpb, 1, &r) : NULL;
    pg_tensor *x = gc_input(&r, GC_L, GC_DIM);
    if (!b || !x)
        gc_row_setup_failed(rep, what);
    else
        gc_module_row(rep, what, gc_block_fn, &b->base, 1, &x, NULL, false);
    if (b)
        pg_module_free(&b->base);
    pg_tensor_free(x);
}

typedef struct gc_lm_ctx {
    pg_tensor *ids, *targets;
} gc_lm_ctx;

static pg_tensor *gc_lm_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const gc_lm_ctx *c = ctx;
    return pg_lm_loss(g, (pg_lm *)m, c->ids, c->targets, NULL);
}

/* A small LM (vocabulary 11, width 8, 2 layers, rotary), its loss on 5 tokens. */
static void gc_lm_row(gc_report *rep, const char *what, bool fast)
{
    if (!gc_want(rep, what))
        return;
    pg_lm_config c = pg_lm_defaults(11, GC_DIM, GC_HEADS, 2);
    c.dtype = PG_F64;
    c.seed = 19;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){.kind = "rotary"};
    pg_lm *lm = pg_lm_new(&c);
    static const int64_t ids[] = {3, 1, 4, 1, 5}, next[] = {1, 4, 1, 5, 9};
    gc_lm_ctx ctx = {pg_empty(NULL, PG_I64, 2, (const int64_t[]){1, 5}),
                     pg_empty(NULL, PG_I64, 2, (const int64_t[]){1, 5})};
    for (int i = 0; ctx.ids && ctx.targets && i < 5; i++)
        pg_set(ctx.ids, i, (double)ids[i]), pg_set(ctx.targets, i, (double)next[i]);
    pg_tensor *none = NULL;
    if (!lm || !ctx.ids || !ctx.targets)
        gc_row_setup_failed(rep, what);
    else
        gc_module_row(rep, what, gc_lm_fn, &lm->base, 0, &none, &ctx, fast);
    if (lm)
        pg_module_free(&lm->base);
    pg_tensor_free(ctx.ids);
    pg_tensor_free(ctx.targets);
}

static void gc_run_modules(gc_report *rep)
{
    gc_mha_row(rep, "attn/mha reference", false);
    gc_mha_row(rep, "attn/mha fused", true);
    gc_local_row(rep, "attn/local_attention fused", false);
    gc_local_row(rep, "attn/local_attention band of ops", true);
    gc_block_row(rep, "model/transformer block");
    gc_lm_row(rep, "model/lm loss", false);
    gc_lm_row(rep, "model/lm loss fast mode", true);
}

#endif
