/* LocalAttention (nn/local_attention.c) and the dist_bias hooks of ALiBi, DPB, T5. */
#include "testutil.h"

#include "../nn/local_attention.h"
#include "../nn/pos_alibi.h"
#include "../nn/pos_dpb.h"
#include "../nn/pos_t5.h"
#include "../nn/pos_xl.h"

/* ---- parity with tests/fixtures/gen_local_attention.py -------------------------------------- */

typedef struct {
    const char *name;
    int64_t w0;
    bool causal;
    int64_t lb, lf;
    bool shared, autopad, exact, rotary, xpos;
    double sb, scale;
    int64_t window;
    bool mask, bias;
} la_case;

static const la_case CASES[] = {
    {.name = "base", .w0 = 3, .lb = 1, .lf = -1},
    {.name = "causal", .w0 = 3, .causal = true, .lb = 2, .lf = -1},
    {.name = "fwd2", .w0 = 2, .lb = 0, .lf = 2},
    {.name = "exact", .w0 = 3, .exact = true, .lb = 1, .lf = 1},
    {.name = "exact_causal", .w0 = 2, .causal = true, .exact = true, .lb = 2, .lf = -1},
    {.name = "shared", .w0 = 2, .causal = true, .shared = true, .lb = 1, .lf = -1},
    {.name = "shared_nc", .w0 = 4, .shared = true, .lb = 1, .lf = 0},
    {.name = "autopad", .w0 = 4, .autopad = true, .mask = true, .lb = 1, .lf = -1},
    {.name = "autopad_causal", .w0 = 3, .autopad = true, .causal = true, .lb = 1, .lf = -1},
    {.name = "rotary", .w0 = 2, .rotary = true, .lb = 1, .lf = 1},
    {.name = "xpos", .w0 = 4, .rotary = true, .xpos = true, .causal = true, .lb = 1, .lf = -1},
    {.name = "xpos_nc", .w0 = 3, .rotary = true, .xpos = true, .lb = 1, .lf = 1, .sb = 2.5},
    {.name = "override", .w0 = 4, .rotary = true, .xpos = true, .window = 2, .causal = true, .lb = 1, .lf = -1},
    {.name = "mask", .w0 = 2, .causal = true, .mask = true, .lb = 1, .lf = -1},
    {.name = "bias", .w0 = 2, .bias = true, .lb = 1, .lf = 1},
    {.name = "scale", .w0 = 3, .scale = 0.7, .lb = 0, .lf = 1},
};

static pg_local_attention *make(const la_case *c, int64_t d, pg_dtype dt)
{
    pg_local_attention_config cfg = pg_local_attention_defaults(c->w0);
    cfg.causal = c->causal;
    cfg.look_backward = c->lb;
    cfg.look_forward = c->lf;
    cfg.shared_qk = c->shared;
    cfg.autopad = c->autopad;
    cfg.exact_windowsize = c->exact;
    cfg.scale = c->scale;
    cfg.dim = c->rotary ? d : 0;
    cfg.use_xpos = c->xpos;
    cfg.xpos_scale_base = c->sb;
    cfg.dtype = dt;
    pg_local_attention *m = pg_local_attention_new(&cfg, NULL, 0);
    cr_assert_not_null(m, "%s: %s", c->name, pg_last_error());
    return m;
}

Test(local_attention, parity_f64)
{
    pg_tensor_list l = fixture("local_cases.safetensors");
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const la_case *c = &CASES[i];
        char nm[64];
        snprintf(nm, sizeof nm, "%s.q", c->name);
        pg_tensor *q = fx_copy(&l, nm, true);
        snprintf(nm, sizeof nm, "%s.k", c->name);
        pg_tensor *k = fx_copy(&l, nm, true);
        snprintf(nm, sizeof nm, "%s.v", c->name);
        pg_tensor *v = fx_copy(&l, nm, true);
        pg_tensor *ab = NULL;
        if (c->bias) {
            snprintf(nm, sizeof nm, "%s.attn_bias", c->name);
            ab = fx_copy(&l, nm, true);
        }
        pg_local_attention *m = make(c, q->shape[q->ndim - 1], PG_F64);
        pg_graph *g = pg_graph_new();
        pg_local_args a = {.window_size = c->window, .attn_bias = ab};
        if (c->mask)
            a.mask = fx(&l, "%s.mask", c->name);
        pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &a);
        cr_assert_not_null(y, "%s: %s", c->name, pg_last_error());
        assert_close(y, fx(&l, "%s.out", c->name), 1e-10, c->name);
        pg_tensor *loss = pg_sum(g, pg_mul(g, y, fx(&l, "%s.dy", c->name)), 0, NULL, false);
        cr_assert_eq(pg_backward(g, loss), 0, "%s: %s", c->name, pg_last_error());
        assert_close(q->grad, fx(&l, "%s.grad.q", c->name), 1e-9, "grad q");
        assert_close(k->grad, fx(&l, "%s.grad.k", c->name), 1e-9, "grad k");
        assert_close(v->grad, fx(&l, "%s.grad.v", c->name), 1e-9, "grad v");
        if (ab)
            assert_close(ab->grad, fx(&l, "%s.grad.attn_bias", c->name), 1e-9, "grad attn_bias");
        pg_graph_free(g);
        pg_module_free(&m->base);
        pg_tensor_free(q), pg_tensor_free(k), pg_tensor_free(v), pg_tensor_free(ab);
    }
    pg_tensor_list_free_all(&l);
}

Test(local_attention, f32_matches_f64)
{
    pg_tensor_list l = fixture("local_cases.safetensors");
    const la_case *c = &CASES[10]; /* xpos causal */
    pg_tensor *q = pg_tensor_cast(NULL, fx(&l, "xpos.q"), PG_F32), *k = pg_tensor_cast(NULL, fx(&l, "xpos.k"), PG_F32),
              *v = pg_tensor_cast(NULL, fx(&l, "xpos.v"), PG_F32);
    pg_local_attention *m = make(c, 4, PG_F32);
    pg_tensor *y = pg_local_attention_forward(NULL, m, q, k, v, NULL);
    cr_assert_not_null(y, "%s", pg_last_error());
    cr_assert_eq(y->dtype, PG_F32);
    assert_close(y, fx(&l, "xpos.out"), 1e-5, "f32 out");
    pg_tensor_free(y);
    pg_module_free(&m->base);
    pg_tensor_free(q), pg_tensor_free(k), pg_tensor_free(v);
    pg_tensor_list_free_all(&l);
}

/* ---- gradcheck ------------------------------------------------------------------------------ */

typedef struct {
    pg_local_attention *m;
    pg_local_args a;
} gc_ctx;

static pg_tensor *gc_fn(pg_graph *g, pg_tensor *const *in, int n_in, void *vctx)
{
    (void)n_in;
    gc_ctx *c = vctx;
    pg_local_args a = c->a;
    if (a.attn_bias)
        a.attn_bias = in[3];
    return pg_local_attention_forward(g, c->m, in[0], in[1], in[2], &a);
}

static void gradcheck_case(const la_case *c, int64_t B, int64_t L, bool with_mask)
{
    int64_t d = 4, w = c->window ? c->window : c->w0;
    int64_t lf = c->lf >= 0 ? c->lf : (c->causal ? 0 : 1), S = (c->lb + lf + 1) * w;
    pg_tensor *in[4] = {randt(PG_SHAPE(B, 2, L, d), 11, true), randt(PG_SHAPE(B, 2, L, d), 12, true),
                        randt(PG_SHAPE(B, 2, L, d), 13, true), NULL};
    gc_ctx ctx = {.m = make(c, d, PG_F64), .a = {.window_size = c->window}};
    pg_tensor *mask = NULL;
    if (with_mask) {
        mask = pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(B, L));
        for (int64_t i = 0; i < B * L; i++)
            pg_set(mask, i, (i * 7 + 3) % 5 != 0);
        ctx.a.mask = mask;
    }
    int n = 3;
    if (c->bias) {
        in[3] = randt(PG_SHAPE(2, w, S), 14, true);
        ctx.a.attn_bias = in[3];
        n = 4;
    }
    /* the f32 leg too: LocalAttention has no parameters of its own to pin the dtype */
    assert_gradcheck(gc_fn, n, in, &ctx, NULL);
    pg_module_free(&ctx.m->base);
    pg_tensor_free(mask);
    free_all(n, in);
}

Test(local_attention, gradcheck_options)
{
    gradcheck_case(&(la_case){.w0 = 3, .lb = 1, .lf = -1}, 1, 9, false);
    gradcheck_case(&(la_case){.w0 = 2, .causal = true, .lb = 2, .lf = -1}, 1, 8, true);
    gradcheck_case(&(la_case){.w0 = 3, .exact = true, .lb = 1, .lf = 1}, 1, 9, false);
    gradcheck_case(&(la_case){.w0 = 4, .autopad = true, .lb = 1, .lf = -1}, 2, 10, true);
    gradcheck_case(&(la_case){.w0 = 2, .shared = true, .causal = true, .lb = 1, .lf = -1}, 1, 8, false);
}

Test(local_attention, gradcheck_rotary_xpos_bias)
{
    gradcheck_case(&(la_case){.w0 = 2, .rotary = true, .lb = 1, .lf = 1}, 1, 8, false);
    gradcheck_case(&(la_case){.w0 = 4, .rotary = true, .xpos = true, .window = 2, .causal = true, .lb = 1, .lf = -1},
                   1, 8, false);
    gradcheck_case(&(la_case){.w0 = 2, .bias = true, .lb = 1, .lf = 1}, 1, 8, true);
}

/* ---- fully masked rows --------------------------------------------------------------------- */

Test(local_attention, fully_masked_rows_zero)
{
    /* causal, key 0 hidden: query 0 sees nothing */
    pg_local_attention_config cfg = pg_local_attention_defaults(2);
    cfg.causal = true;
    cfg.dtype = PG_F64;
    pg_local_attention *m = pg_local_attention_new(&cfg, NULL, 0);
    pg_tensor *q = randt(PG_SHAPE(1, 6, 4), 1, true), *k = randt(PG_SHAPE(1, 6, 4), 2, true),
              *v = randt(PG_SHAPE(1, 6, 4), 3, true);
    pg_tensor *mask = TBOOL(PG_SHAPE(1, 6), 0, 1, 1, 1, 1, 1);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.mask = mask});
    cr_assert_not_null(y, "%s", pg_last_error());
    for (int64_t c = 0; c < 4; c++)
        cr_assert_eq(pg_get(y, c), 0.0);
    for (int64_t i = 0; i < y->numel; i++)
        cr_assert(isfinite(pg_get(y, i)));
    cr_assert_eq(pg_backward(g, pg_sum(g, y, 0, NULL, false)), 0, "%s", pg_last_error());
    for (int64_t c = 0; c < 4; c++)
        cr_assert_eq(pg_get(q->grad, c), 0.0, "query 0 gets no gradient");
    for (int64_t i = 0; i < q->numel; i++)
        cr_assert(isfinite(pg_get(q->grad, i)) && isfinite(pg_get(k->grad, i)) && isfinite(pg_get(v->grad, i)));
    pg_graph_free(g);
    pg_module_free(&m->base);
    pg_tensor_free(q), pg_tensor_free(k), pg_tensor_free(v), pg_tensor_free(mask);
}

Test(local_attention, dropout)
{
    pg_local_attention_config cfg = pg_local_attention_defaults(2);
    cfg.dropout = 0.5;
    cfg.dtype = PG_F64;
    pg_local_attention *m = pg_local_attention_new(&cfg, NULL, 0);
    pg_tensor *q = randt(PG_SHAPE(1, 8, 4), 1, false), *k = randt(PG_SHAPE(1, 8, 4), 2, false),
              *v = randt(PG_SHAPE(1, 8, 4), 3, false);
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, k, v, NULL), "needs a generator");
    pg_rng r = pg_rng_init(9);
    pg_tensor *y1 = pg_local_attention_forward(NULL, m, q, k, v, &(pg_local_args){.rng = &r});
    pg_module_train(&m->base, false);
    pg_tensor *y0 = pg_local_attention_forward(NULL, m, q, k, v, NULL); /* eval: no dropout, no rng needed */
    cr_assert_not_null(y1, "%s", pg_last_error());
    cr_assert_not_null(y0, "%s", pg_last_error());
    cfg.dropout = 0;
    pg_local_attention *m2 = pg_local_attention_new(&cfg, NULL, 0);
    pg_tensor *e = pg_local_attention_forward(NULL, m2, q, k, v, NULL);
    assert_close(y0, e, 0, "eval mode = no dropout");
    cr_assert_gt(max_err(y1, e), 1e-6, "train mode drops weights");
    pg_tensor_free(y0), pg_tensor_free(y1), pg_tensor_free(e);
    pg_tensor_free(q), pg_tensor_free(k), pg_tensor_free(v);
    pg_module_free(&m->base);
    pg_module_free(&m2->base);
}

/* ---- equality with full attention and a banded additive mask -------------------------------- */

/* band[i, j] = 0 where LocalAttention (window w, lb, lf, no exact) lets query i see key j, else -inf */
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

Test(local_attention, equals_banded_full_attention)
{
    for (int cs = 0; cs < 2; cs++) {
        bool causal = cs == 1;
        pg_local_attention_config cfg = pg_local_attention_defaults(3);
        cfg.causal = causal;
        cfg.look_backward = causal ? 2 : 1;
        cfg.dtype = PG_F64;
        pg_local_attention *m = pg_local_attention_new(&cfg, NULL, 0);
        pg_tensor *q = randt(PG_SHAPE(2, 2, 12, 4), 21, true), *k = randt(PG_SHAPE(2, 2, 12, 4), 22, true),
                  *v = randt(PG_SHAPE(2, 2, 12, 4), 23, true);
        pg_tensor *mask = TBOOL(PG_SHAPE(2, 12), 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1);
        pg_tensor *bm = band(12, 3, m->cfg.look_backward, m->cfg.look_forward, false);
        pg_tensor *y = pg_local_attention_forward(NULL, m, q, k, v, &(pg_local_args){.mask = mask});
        pg_tensor *e = pg_attention(NULL, q, k, v, &(pg_sdpa_opts){.bias = bm, .mask = mask, .causal = causal});
        cr_assert_not_null(y, "%s", pg_last_error());
        assert_close(y, e, 1e-12, "local vs banded full");
        pg_tensor_free(y), pg_tensor_free(e), pg_tensor_free(bm), pg_tensor_free(mask);
        pg_tensor_free(q), pg_tensor_free(k), pg_tensor_free(v);
        pg_module_free(&m->base);
    }
}

/* ---- relative-bias schemes ------------------------------------------------------------------ */

static pg_posmod *scheme(int which, int64_t heads) { return test_rel_scheme(which, heads, 77); }

Test(local_attention, dist_bias_matches_bias_table)
{
    for (int which = 0; which < 3; which++) {
        pg_posmod *p = scheme(which, 3);
        int64_t L = 5;
        pg_pos_ctx c = {.self_attn = true, .B = 1, .heads = 3, .head_dim = 4, .Lq = L, .Lk = L, .dtype = PG_F64};
        pg_graph *g = pg_graph_new();
        pg_tensor *t = p->ops->bias_table(g, p, &c); /* (3, L, L) */
        pg_tensor *d = pg_arange(g, PG_F64, -(double)(L - 1), (double)L, 1.0);
        pg_tensor *db = p->ops->dist_bias(g, p, d, &c); /* (3, 2L-1) */
        cr_assert_not_null(t, "%s", pg_graph_error(g));
        cr_assert_not_null(db, "%s", pg_graph_error(g));
        assert_shape(db, 2, (const int64_t[]){3, 2 * L - 1});
        for (int64_t h = 0; h < 3; h++)
            for (int64_t i = 0; i < L; i++)
                for (int64_t j = 0; j < L; j++)
                    cr_assert_float_eq(pg_get(t, (h * L + i) * L + j), pg_get(db, h * (2 * L - 1) + i - j + L - 1),
                                       1e-14, "scheme %d h %lld i %lld j %lld", which, (long long)h, (long long)i,
                                       (long long)j);
        pg_graph_free(g);
        pg_module_free(&p->base);
    }
}

Test(local_attention, schemes_equal_banded_full_attention_and_train)
{
    for (int which = 0; which < 3; which++) {
        for (int cs = 0; cs < 2; cs++) {
            bool causal = cs == 1;
            pg_posmod *p = scheme(which, 2);
            pg_local_attention_config cfg = pg_local_attention_defaults(2);
            cfg.causal = causal;
            cfg.dtype = PG_F64;
            pg_local_attention *m = pg_local_attention_new(&cfg, (pg_posmod *[]){p}, 1);
            cr_assert_not_null(m, "%s", pg_last_error());
            int64_t L = 8;
            pg_tensor *q = randt(PG_SHAPE(2, 2, L, 4), 31, false), *k = randt(PG_SHAPE(2, 2, L, 4), 32, false),
                      *v = randt(PG_SHAPE(2, 2, L, 4), 33, false);
            pg_tensor *mask = TBOOL(PG_SHAPE(2, 8), 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1);
            pg_graph *g = pg_graph_new();
            pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, &(pg_local_args){.mask = mask});
            cr_assert_not_null(y, "%s", pg_graph_error(g));
            /* reference: full attention with the scheme's (H, L, L) table + the band */
            pg_pos_ctx c = {.self_attn = true, .causal = causal, .B = 2, .heads = 2, .head_dim = 4, .Lq = L, .Lk = L,
                            .dtype = PG_F64};
            pg_tensor *bm = band(L, 2, 1, m->cfg.look_forward, false);
            pg_tensor *tb = pg_add(g, p->ops->bias_table(g, p, &c), bm);
            pg_tensor *e = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = tb, .mask = mask, .causal = causal});
            assert_close(y, e, 1e-12, "scheme in local vs banded full");
            /* gradients reach the scheme's parameters; an Adam step changes them */
            pg_tensor_list ps = pg_module_parameters(&m->base);
            if (which != 0) { /* ALiBi without learned_div has no parameters */
                cr_assert_gt(ps.n, 0);
                cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
                pg_tensor *before = pg_tensor_copy(NULL, ps.tensors[0]);
                cr_assert_not_null(ps.tensors[0]->grad, "%s has no grad", ps.names[0]);
                pg_optim_hparams h = pg_adam_hparams(1e-2);
                pg_optim *opt = pg_optim_new(PG_ADAM, &h);
                cr_assert_not_null(opt, "%s", pg_last_error());
                cr_assert_eq(pg_optim_add_group(opt, ps.tensors, ps.n, &h), 0, "%s", pg_last_error());
                cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
                double diff = 0;
                for (int64_t i = 0; i < before->numel; i++)
                    diff += fabs(pg_get(before, i) - pg_get(ps.tensors[0], i));
                cr_assert_gt(diff, 0, "%s did not change", ps.names[0]);
                pg_optim_free(opt);
                pg_tensor_free(before);
            }
            pg_tensor_list_free(&ps);
            pg_graph_free(g);
            pg_tensor_free(bm), pg_tensor_free(mask);
            pg_tensor_free(q), pg_tensor_free(k), pg_tensor_free(v);
            pg_module_free(&m->base);
        }
    }
}

Test(local_attention, xl_equals_banded_full_attention_and_trains)
{
    for (int cs = 0; cs < 2; cs++) {
        bool causal = cs == 1;
        pg_rng r = pg_rng_init(78);
        pg_posmod_args pa = {.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64, .rng = &r};
        pg_xl_opts xo = pg_xl_bio(); /* W_R bias, unscaled position term: exercises the options */
        if (causal)
            xo = (pg_xl_opts){0};
        pa.opts = &xo;
        pg_posmod *xl = pg_posmod_make_xl(&pa);
        pg_posmod *al = scheme(0, 2); /* and ALiBi alongside */
        cr_assert_not_null(xl, "%s", pg_last_error());
        pg_local_attention_config cfg = pg_local_attention_defaults(2);
        cfg.causal = causal;
        cfg.dtype = PG_F64;
        pg_local_attention *m = pg_local_attention_new(&cfg, (pg_posmod *[]){xl, al}, 2);
        cr_assert_not_null(m, "%s", pg_last_error());
        int64_t L = 8;
        pg_tensor *q = randt(PG_SHAPE(2, 2, L, 4), 41, true), *k = randt(PG_SHAPE(2, 2, L, 4), 42, true),
                  *v = randt(PG_SHAPE(2, 2, L, 4), 43, true);
        pg_graph *g = pg_graph_new();
        pg_tensor *y = pg_local_attention_forward(g, m, q, k, v, NULL);
        cr_assert_not_null(y, "%s", pg_graph_error(g));
        pg_pos_ctx c = {.self_attn = true, .causal = causal, .B = 2, .heads = 2, .head_dim = 4, .Lq = L, .Lk = L,
                        .dtype = PG_F64};
        pg_tensor *bm = band(L, 2, 1, m->cfg.look_forward, false);
        pg_tensor *tb = pg_add(g, pg_add(g, xl->ops->mod_bias(g, xl, q, k, v, &c), al->ops->bias_table(g, al, &c)), bm);
        pg_tensor *e = pg_attention(g, q, k, v, &(pg_sdpa_opts){.bias = tb, .causal = causal});
        assert_close(y, e, 1e-12, "XL in local vs banded full");
        cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
        pg_tensor_list ps = pg_module_parameters(&m->base);
        cr_assert_geq(ps.n, 3);
        pg_tensor *before[8];
        for (int i = 0; i < ps.n; i++) {
            cr_assert_not_null(ps.tensors[i]->grad, "%s has no grad", ps.names[i]);
            before[i] = pg_tensor_copy(NULL, ps.tensors[i]);
        }
        pg_optim_hparams h = pg_adam_hparams(1e-2);
        pg_optim *opt = pg_optim_new(PG_ADAM, &h);
        cr_assert_eq(pg_optim_add_group(opt, ps.tensors, ps.n, &h), 0, "%s", pg_last_error());
        cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
        for (int i = 0; i < ps.n; i++) {
            cr_assert_gt(max_err(ps.tensors[i], before[i]), 0, "%s did not change", ps.names[i]);
            pg_tensor_free(before[i]);
        }
        pg_optim_free(opt);
        pg_tensor_list_free(&ps);
        pg_graph_free(g);
        pg_tensor_free(bm);
        pg_tensor_free(q), pg_tensor_free(k), pg_tensor_free(v);
        pg_module_free(&m->base);
    }
}

Test(local_attention, gradcheck_xl)
{
    pg_rng r = pg_rng_init(79);
    pg_posmod_args pa = {.dim = 8, .heads = 2, .head_dim = 4, .dtype = PG_F64, .rng = &r};
    pg_posmod *xl = pg_posmod_make_xl(&pa);
    pg_local_attention_config cfg = pg_local_attention_defaults(2);
    cfg.dtype = PG_F64;
    gc_ctx ctx = {.m = pg_local_attention_new(&cfg, (pg_posmod *[]){xl}, 1)};
    cr_assert_not_null(ctx.m, "%s", pg_last_error());
    pg_tensor *in[8] = {randt(PG_SHAPE(1, 2, 6, 4), 51, true), randt(PG_SHAPE(1, 2, 6, 4), 52, true),
                        randt(PG_SHAPE(1, 2, 6, 4), 53, true)};
    int n = with_params(in, 3, &ctx.m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(gc_fn, n, in, &ctx, &o);
    free_all(3, in);
    pg_module_free(&ctx.m->base);
}

/* ---- bad input --------------------------------------------------------------------------- */

Test(local_attention, bad_input_errors)
{
    pg_local_attention_config cfg = pg_local_attention_defaults(4);
    cfg.dtype = PG_F64;
    pg_local_attention *m = pg_local_attention_new(&cfg, NULL, 0);
    pg_tensor *q = randt(PG_SHAPE(1, 3, 4), 1, false), *q6 = randt(PG_SHAPE(1, 6, 4), 2, false);
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q, q, q, NULL), "divisible by the window size 4");
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q6, q6, q6, NULL), "divisible by the window size 4");
    pg_tensor *bad_mask = TBOOL(PG_SHAPE(1, 5), 1, 1, 1, 1, 1);
    pg_tensor *q8 = randt(PG_SHAPE(1, 8, 4), 3, false);
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q8, q8, q8, &(pg_local_args){.mask = bad_mask}),
                 "mask must be (B, 8) bool");
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q8, q8, q8, &(pg_local_args){.window_size = 2}),
                 "only with use_xpos");
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q8, q, q8, NULL), "share one shape");
    pg_tensor *ab = randt(PG_SHAPE(1, 4, 8), 4, false); /* S is 12 */
    ASSERT_FAILS(pg_local_attention_forward(NULL, m, q8, q8, q8, &(pg_local_args){.attn_bias = ab}),
                 "attn_bias must be (Hb, 4, 12)");
    pg_tensor_free(ab);
    pg_local_attention_config rc = cfg;
    rc.dim = 6;
    pg_local_attention *rm = pg_local_attention_new(&rc, NULL, 0);
    cr_assert_not_null(rm, "%s", pg_last_error());
    ASSERT_FAILS(pg_local_attention_forward(NULL, rm, q8, q8, q8, NULL), "rotary was built for head dim 6");
    pg_module_free(&rm->base);
    pg_local_attention_config bad = pg_local_attention_defaults(4);
    bad.causal = true;
    bad.look_forward = 1;
    ASSERT_FAILS(pg_local_attention_new(&bad, NULL, 0), "look_forward must be 0 when causal");
    bad = pg_local_attention_defaults(0);
    ASSERT_FAILS(pg_local_attention_new(&bad, NULL, 0), "window_size must be >= 1");
    bad = pg_local_attention_defaults(4);
    bad.use_xpos = true;
    ASSERT_FAILS(pg_local_attention_new(&bad, NULL, 0), "use_xpos needs rotary");
    /* a scheme without dist_bias (rotary) is refused and freed */
    pg_posmod *rot = pg_rotary_new(4, NULL, PG_F64);
    ASSERT_FAILS(pg_local_attention_new(&cfg, (pg_posmod *[]){rot}, 1), "dist_bias");
    /* autopad: the window longer than the sequence works */
    cfg.autopad = true;
    pg_local_attention *pm = pg_local_attention_new(&cfg, NULL, 0);
    pg_tensor *y = pg_local_attention_forward(NULL, pm, q, q, q, NULL);
    cr_assert_not_null(y, "%s", pg_last_error());
    assert_shape(y, 3, (const int64_t[]){1, 3, 4});
    pg_tensor_free(y);
    pg_module_free(&pm->base);
    pg_tensor_free(q), pg_tensor_free(q6), pg_tensor_free(q8), pg_tensor_free(bad_mask);
    pg_module_free(&m->base);
}
