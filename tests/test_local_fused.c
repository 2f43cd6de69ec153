/* LocalAttention's fused band kernel against its band-of-ops reference path:
 * equal to 1e-12 in f64, outputs and every gradient, over the options the
 * fused path serves. */
#include "testutil.h"

typedef struct band_case {
    bool causal, exact, autopad, rotary, masked;
    int64_t w, lb, lf, L;
    int scheme; /* 0 none, 1 ALiBi (learned div), 2 DPB, 3 T5, 4 Transformer-XL, 5 XL (bio) + ALiBi */
    bool shared_qk;
    bool xpos;     /* use_xpos (rotary on) with xpos_scale_base sb (0: w / 2) */
    double sb;
    int64_t wo;    /* the call's window_size override (xpos only; 0: none) */
    bool ref_only; /* the call must take the reference path */
    int64_t ab;    /* attn_bias (Hb, w, (lb + lf + 1) w) with Hb = ab (1, 2 or 4 of the 4 rows); 0: none */
    double drop;   /* attention dropout in train mode (the same generator state on both paths) */
} band_case;

static pg_posmod *scheme(int kind, int64_t heads)
{
    pg_rng r = pg_rng_init(21);
    if (kind == 4 || kind == 5) {
        pg_xl_opts o = kind == 4 ? (pg_xl_opts){.divide = 2, .learned_div = true} : pg_xl_bio();
        return &pg_xl_new(heads, 4, &o, PG_F64, &r)->pm;
    }
    if (kind == 1) {
        pg_alibi_opts o = {0};
        o.div.divide = 1.5;
        o.div.learned = true;
        return pg_alibi_new(heads, &o, PG_F64);
    }
    if (kind == 2) {
        pg_dpb_opts o = pg_dpb_xtransformers(2, true, false);
        return &pg_dpb_new(8, heads, &o, PG_F64, &r)->pm;
    }
    pg_t5_opts o = {0};
    o.num_buckets = 8;
    o.max_distance = 16;
    o.causal = false;
    return pg_t5_new(heads, 4, &o, PG_F64, &r);
}

static pg_local_attention *make(const band_case *bc, bool unfused)
{
    pg_local_attention_config c = pg_local_attention_defaults(bc->w);
    c.causal = bc->causal;
    c.look_backward = bc->lb;
    c.look_forward = bc->causal ? 0 : bc->lf;
    c.exact_windowsize = bc->exact;
    c.autopad = bc->autopad;
    c.use_rotary_pos_emb = bc->rotary || bc->xpos;
    c.dim = bc->rotary || bc->xpos ? 4 : 0;
    c.use_xpos = bc->xpos;
    c.xpos_scale_base = bc->sb;
    c.dtype = PG_F64;
    c.unfused = unfused;
    c.shared_qk = bc->shared_qk;
    c.dropout = bc->drop;
    pg_posmod *pos[2] = {bc->scheme ? scheme(bc->scheme, 2) : NULL, bc->scheme == 5 ? scheme(1, 2) : NULL};
    pg_local_attention *m = pg_local_attention_new(&c, pos, bc->scheme ? 1 + (bc->scheme == 5) : 0);
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_module_train(&m->base, bc->drop > 0);
    return m;
}

/* forward + backward on (2, 2, L, 4) inputs; counts the fused nodes and the pg_rotate_pairs ones */
static pg_tensor *run(pg_local_attention *m, pg_tensor *const *qkv, pg_tensor *mask, int64_t wo, pg_tensor *ab,
                      int *n_fused, int *n_rot)
{
    pg_graph *g = pg_graph_new();
    pg_rng dr = pg_rng_init(99);
    pg_tensor *y = pg_local_attention_forward(g, m, qkv[0], qkv[1], qkv[2],
                                              &(pg_local_args){.mask = mask, .window_size = wo, .attn_bias = ab,
                                                               .rng = &dr});
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_rng r = pg_rng_init(8);
    cr_assert_eq(pg_backward_with(g, y, pg_randn(g, PG_F64, y->ndim, y->shape, &r)), 0, "%s", pg_graph_error(g));
    *n_fused = fused_nodes(g);
    *n_rot = count_nodes(g, "pg_rotate_pairs");
    pg_tensor *out = pg_tensor_copy(NULL, y);
    pg_graph_free(g);
    return out;
}

static void check(band_case bc)
{
    pg_local_attention *fused = make(&bc, false), *ref = make(&bc, true);
    pg_tensor *a[3], *b[3];
    for (int i = 0; i < 3; i++) {
        a[i] = randt(PG_SHAPE(2, 2, bc.L, 4), 30 + (uint64_t)i, true);
        b[i] = pg_tensor_copy(NULL, a[i]);
        b[i]->requires_grad = true;
    }
    pg_tensor *mask = NULL;
    if (bc.masked) { /* batch 1 hides keys 1 and L - 2; batch 0 nothing */
        mask = pg_ones(NULL, PG_BOOL, PG_SHAPE(2, bc.L));
        pg_bool(mask)[bc.L + 1] = 0;
        pg_bool(mask)[2 * bc.L - 2] = 0;
    }
    pg_tensor *ab[2] = {NULL, NULL}; /* attn_bias, one copy per path */
    if (bc.ab) {
        int64_t lf = bc.causal ? 0 : bc.lf, ww = bc.wo ? bc.wo : bc.w;
        ab[0] = randt(PG_SHAPE(bc.ab, ww, (bc.lb + lf + 1) * ww), 77, true);
        ab[1] = pg_tensor_copy(NULL, ab[0]);
        ab[1]->requires_grad = true;
    }
    int nf = 0, nr = 0, rot_f = 0, rot_r = 0;
    pg_tensor *y1 = run(fused, a, mask, bc.wo, ab[0], &nf, &rot_f), *y2 = run(ref, b, mask, bc.wo, ab[1], &nr, &rot_r);
    if (bc.ab)
        assert_close(ab[0]->grad, ab[1]->grad, 1e-12, "grad attn_bias");
    cr_assert_eq(nf, bc.ref_only ? 0 : 1, "%s",
                 bc.ref_only ? "the reference serves this case" : "the fused path serves this case");
    cr_assert_eq(nr, 0, "unfused forces the reference");
    if (!bc.ref_only) /* the kernel rotates q and k itself: its tables are constants here */
        cr_assert_eq(rot_f, 0, "the fused path rotated q and k with pg_rotate_pairs (%d calls)", rot_f);
    assert_close(y1, y2, 1e-12, "output");
    for (int i = 0; i < 3; i++)
        assert_close(a[i]->grad, b[i]->grad, 1e-12, i == 0 ? "grad q" : i == 1 ? "grad k" : "grad v");
    pg_tensor_list p1 = pg_module_parameters(&fused->base), p2 = pg_module_parameters(&ref->base);
    for (int i = 0; i < p1.n; i++) {
        cr_assert_not_null(p1.tensors[i]->grad, "%s has no grad", p1.names[i]);
        assert_close(p1.tensors[i]->grad, p2.tensors[i]->grad, 1e-12, p1.names[i]);
    }
    pg_tensor_list_free(&p1);
    pg_tensor_list_free(&p2);
    free_all(3, a);
    free_all(3, b);
    pg_tensor *ts[] = {mask, y1, y2, ab[0], ab[1]};
    free_all(5, ts);
    pg_module_free(&fused->base);
    pg_module_free(&ref->base);
}

Test(local_fused, plain_windows)
{
    check((band_case){.w = 3, .lb = 1, .lf = 1, .L = 12});
    check((band_case){.w = 3, .lb = 2, .lf = 0, .L = 12, .causal = true});
    check((band_case){.w = 4, .lb = 1, .lf = 2, .L = 12, .exact = true});
}

Test(local_fused, causal_exact_masked_autopad_rotary)
{
    check((band_case){.w = 3, .lb = 1, .L = 11, .causal = true, .exact = true, .masked = true, .autopad = true});
    check((band_case){.w = 4, .lb = 1, .lf = 1, .L = 10, .autopad = true, .rotary = true, .masked = true});
}

Test(local_fused, distance_bias_schemes)
{
    check((band_case){.w = 3, .lb = 1, .L = 9, .causal = true, .scheme = 1});
    check((band_case){.w = 3, .lb = 1, .lf = 1, .L = 9, .scheme = 2, .masked = true});
    check((band_case){.w = 2, .lb = 2, .lf = 1, .L = 8, .scheme = 3, .exact = true});
}

/* Transformer-XL through the kernel's relative keys on the band: u, v, W_R and the
 * divisor get the band of ops' gradients (its band_bias hook); with ALiBi beside it,
 * rotary, shared_qk, masks, autopad, exact windows, several tiles */
Test(local_fused, transformer_xl)
{
    check((band_case){.w = 3, .lb = 1, .L = 9, .causal = true, .scheme = 4});
    check((band_case){.w = 3, .lb = 1, .lf = 1, .L = 10, .scheme = 4, .masked = true, .autopad = true});
    check((band_case){.w = 2, .lb = 2, .lf = 1, .L = 8, .scheme = 5, .exact = true, .rotary = true});
    check((band_case){.w = 4, .lb = 1, .L = 12, .causal = true, .scheme = 5, .shared_qk = true, .masked = true});
    check((band_case){.w = 40, .lb = 1, .L = 160, .causal = true, .scheme = 4, .rotary = true});
}

/* xPos through the kernel's per-tile scaling (autograd/flash.h "xPos"): the reference
 * scales each window's queries and slots from the window's centre, the kernel each
 * tile's from the tile's; both give pair (i, j) zeta^((i - j) / s). Causal and not,
 * look_forward, exact windows, autopad, masks, rotary under it, several tiles,
 * shared_qk and ALiBi beside it, the window override (an exact window with a smaller
 * override takes the reference: its band is not the kernel's) */
Test(local_fused, xpos)
{
    check((band_case){.w = 3, .lb = 1, .L = 12, .causal = true, .xpos = true});
    check((band_case){.w = 3, .lb = 1, .lf = 1, .L = 11, .xpos = true, .sb = 2.5, .masked = true, .autopad = true});
    check((band_case){.w = 4, .lb = 2, .lf = 1, .L = 12, .xpos = true, .exact = true});
    check((band_case){.w = 40, .lb = 1, .L = 160, .causal = true, .xpos = true, .masked = true});
    check((band_case){.w = 48, .lb = 1, .lf = 1, .L = 150, .xpos = true, .autopad = true, .exact = true,
                      .masked = true});
    check((band_case){.w = 40, .lb = 2, .L = 200, .causal = true, .xpos = true, .sb = 7, .exact = true});
    check((band_case){.w = 4, .lb = 1, .L = 12, .causal = true, .xpos = true, .shared_qk = true, .scheme = 1});
    check((band_case){.w = 4, .lb = 1, .lf = 1, .L = 160, .xpos = true, .sb = 20, .wo = 40, .masked = true});
    check((band_case){.w = 4, .lb = 1, .L = 12, .causal = true, .xpos = true, .wo = 2});
    check((band_case){.w = 2, .lb = 1, .L = 12, .causal = true, .xpos = true, .exact = true, .wo = 6});
    check((band_case){.w = 4, .lb = 1, .L = 12, .causal = true, .xpos = true, .exact = true, .wo = 2,
                      .ref_only = true});
}

/* attn_bias (Hb, w, (lb + lf + 1) w) through the kernel's window_bias: the query's offset in its
 * window and the key's slot, row r on attn_bias[r mod Hb]; its gradient too */
Test(local_fused, attn_bias)
{
    check((band_case){.w = 3, .lb = 1, .L = 12, .causal = true, .ab = 1});
    check((band_case){.w = 3, .lb = 1, .lf = 1, .L = 10, .autopad = true, .masked = true, .ab = 2});
    check((band_case){.w = 4, .lb = 2, .lf = 1, .L = 12, .exact = true, .ab = 4});
    check((band_case){.w = 4, .lb = 1, .L = 12, .causal = true, .exact = true, .rotary = true, .scheme = 1, .ab = 2});
    check((band_case){.w = 8, .lb = 3, .lf = 2, .L = 24, .ab = 1}); /* look-around past both ends */
    check((band_case){.w = 16, .lb = 1, .L = 10, .autopad = true, .causal = true, .ab = 4}); /* one short window */
    check((band_case){.w = 40, .lb = 1, .L = 160, .causal = true, .scheme = 4, .ab = 2});
    check((band_case){.w = 4, .lb = 1, .L = 12, .xpos = true, .wo = 6, .ab = 1, .ref_only = true}); /* override */
}

/* attention dropout in train mode: the kernel draws the band of ops' own mask (its (b, W, w, S)
 * layout) from the same generator state, so the two paths agree */
Test(local_fused, dropout)
{
    check((band_case){.w = 3, .lb = 1, .L = 12, .causal = true, .drop = 0.3});
    check((band_case){.w = 3, .lb = 1, .lf = 1, .L = 10, .autopad = true, .masked = true, .drop = 0.5});
    check((band_case){.w = 4, .lb = 2, .lf = 1, .L = 12, .exact = true, .ab = 2, .drop = 0.2});
    check((band_case){.w = 8, .lb = 3, .lf = 2, .L = 24, .rotary = true, .scheme = 1, .drop = 0.4});
    check((band_case){.w = 16, .lb = 1, .L = 10, .autopad = true, .causal = true, .drop = 0.3}); /* one window */
    check((band_case){.w = 40, .lb = 1, .L = 160, .causal = true, .scheme = 4, .drop = 0.1});
    check((band_case){.w = 4, .lb = 1, .L = 12, .xpos = true, .wo = 6, .drop = 0.3, .ref_only = true});
}
