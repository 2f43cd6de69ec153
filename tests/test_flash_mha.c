/* MultiheadAttention takes the fused kernel whenever the call allows it; the
 * unfused path is the reference and the two agree to 1e-12 in f64, outputs and
 * every gradient, with and without distance-bias schemes. */
#include "testutil.h"

typedef enum { NO_POS, WITH_ALIBI, WITH_DPB_T5_ROTARY, WITH_XL, WITH_XL_BIO_ROTARY_ALIBI, WITH_REL1D,
               WITH_REL1D_HEADS_SCALED_ROTARY, WITH_REL1D_THEN_ROTARY, WITH_FIRE, WITH_COPE_ROTARY,
               WITH_FIRE_COPE_ALIBI } pos_set;

static pg_posmod *alibi_learned(void)
{
    pg_alibi_opts o = {0};
    o.div.divide = 2.0;
    o.div.learned = true;
    return pg_alibi_new(2, &o, PG_F64);
}

/* an MHA (dim 8, 2 heads) with the given schemes and band (NULL: full); the same seed
 * gives the same weights */
static pg_mha *make_band(pos_set set, bool causal, bool unfused, const pg_attn_band *band)
{
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.dtype = PG_F64;
    c.causal = causal;
    c.unfused = unfused;
    if (band)
        c.band = *band;
    pg_rng r = pg_rng_init(7);
    pg_posmod *pos[3];
    int n = 0;
    if (set == WITH_ALIBI)
        pos[n++] = alibi_learned();
    if (set == WITH_DPB_T5_ROTARY) {
        pg_dpb_opts d = pg_dpb_xtransformers(2, true, false);
        pg_rng pr = pg_rng_init(11);
        pos[n++] = pg_rotary_new(4, NULL, PG_F64);
        pos[n++] = &pg_dpb_new(8, 2, &d, PG_F64, &pr)->pm;
        pos[n++] = pg_t5_new(2, 4, NULL, PG_F64, &pr);
    }
    if (set == WITH_XL || set == WITH_XL_BIO_ROTARY_ALIBI) { /* Dai et al. with a learned divisor; bio's layout */
        pg_xl_opts o = set == WITH_XL ? (pg_xl_opts){.divide = 3, .learned_div = true, .r_dim = 6} : pg_xl_bio();
        pg_rng pr = pg_rng_init(13);
        if (set == WITH_XL_BIO_ROTARY_ALIBI)
            pos[n++] = pg_rotary_new(4, NULL, PG_F64);
        pos[n++] = &pg_xl_new(2, 4, &o, PG_F64, &pr)->pm;
        if (set == WITH_XL_BIO_ROTARY_ALIBI)
            pos[n++] = alibi_learned();
    }
    if (set == WITH_REL1D || set == WITH_REL1D_HEADS_SCALED_ROTARY || set == WITH_REL1D_THEN_ROTARY) {
        bool per_head = set == WITH_REL1D_HEADS_SCALED_ROTARY; /* Shaw's 1-D table, 200 tokens */
        pg_rel1d_opts o = {.tokens = 200, .heads = per_head ? 2 : 0, .scaled = per_head};
        pg_rng pr = pg_rng_init(17);
        if (per_head)
            pos[n++] = pg_rotary_new(4, NULL, PG_F64);
        pos[n++] = pg_posmod_make_rel1d(&(pg_posmod_args){8, 2, 4, 0, 0, PG_F64, &pr, &o});
        if (set == WITH_REL1D_THEN_ROTARY) /* rel1d reads q unturned, the kernel turns it */
            pos[n++] = pg_rotary_new(4, NULL, PG_F64);
    }
    if (set == WITH_FIRE || set == WITH_FIRE_COPE_ALIBI) { /* FIRE's bias (1, H, L, L), the same per batch */
        pg_rng pr = pg_rng_init(19);
        pos[n++] = pg_fire_new(2, &(pg_fire_opts){.hidden = 5, .init_L = 4}, PG_F64, &pr);
    }
    if (set == WITH_COPE_ROTARY || set == WITH_FIRE_COPE_ALIBI) { /* CoPE's bias (B, H, L, L) */
        if (set == WITH_COPE_ROTARY)
            pos[n++] = pg_rotary_new(4, NULL, PG_F64);
        pos[n++] = pg_cope_new(4, 6, NULL, PG_F64);
    }
    if (set == WITH_FIRE_COPE_ALIBI)
        pos[n++] = alibi_learned();
    pg_mha *m = pg_mha_new(&c, pos, n, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static pg_mha *make(pos_set set, bool causal, bool unfused) { return make_band(set, causal, unfused, NULL); }

/* forward + backward with a fixed upstream; returns the output (heap copy) */
static pg_tensor *run(pg_mha *m, pg_tensor *x, pg_tensor *mask)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.mask = mask});
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    pg_rng r = pg_rng_init(5);
    pg_tensor *up = pg_randn(g, PG_F64, y->ndim, y->shape, &r);
    cr_assert_eq(pg_backward_with(g, y, up), 0, "%s", pg_graph_error(g));
    pg_tensor *out = pg_tensor_copy(NULL, y);
    pg_graph_free(g);
    return out;
}

/* L tokens; with `masked` batch 1 hides keys 0 and 4 (and every 9th from 13), batch 0 nothing */
static void assert_fused_equals_unfused_at(pos_set set, bool causal, bool masked, const pg_attn_band *band, int64_t L)
{
    pg_mha *fused = make_band(set, causal, false, band), *ref = make_band(set, causal, true, band);
    pg_tensor *x1 = randt(PG_SHAPE(2, L, 8), 3, true), *x2 = pg_tensor_copy(NULL, x1);
    x2->requires_grad = true;
    pg_tensor *mask = masked ? pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(2, L)) : NULL;
    for (int64_t j = 0; mask && j < L; j++) {
        pg_bool(mask)[j] = 1;
        pg_bool(mask)[L + j] = j != 0 && j != 4 && (j < 13 || (j - 13) % 9 != 0);
    }
    pg_tensor *y1 = run(fused, x1, mask), *y2 = run(ref, x2, mask);
    assert_close(y1, y2, 1e-12, "output");
    assert_close(x1->grad, x2->grad, 1e-12, "grad x");
    pg_tensor_list p1 = pg_module_parameters(&fused->base), p2 = pg_module_parameters(&ref->base);
    cr_assert_eq(p1.n, p2.n);
    for (int i = 0; i < p1.n; i++) {
        if (!p1.tensors[i]->requires_grad) { /* frozen (FIRE's init_L): no gradient on either path */
            cr_assert(!p1.tensors[i]->grad && !p2.tensors[i]->grad, "%s is frozen but has a grad", p1.names[i]);
            continue;
        }
        cr_assert_not_null(p1.tensors[i]->grad, "%s has no grad", p1.names[i]);
        assert_close(p1.tensors[i]->grad, p2.tensors[i]->grad, 1e-12, p1.names[i]);
    }
    pg_tensor_list_free(&p1);
    pg_tensor_list_free(&p2);
    pg_tensor *ts[] = {x1, x2, mask, y1, y2};
    free_all(5, ts);
    pg_module_free(&fused->base);
    pg_module_free(&ref->base);
}

static void assert_band_fused_equals_unfused(pos_set set, bool causal, bool masked, const pg_attn_band *band)
{
    assert_fused_equals_unfused_at(set, causal, masked, band, 7);
}

static void assert_fused_equals_unfused(pos_set set, bool causal, bool masked)
{
    assert_band_fused_equals_unfused(set, causal, masked, NULL);
}

Test(flash_mha, fused_equals_unfused_plain) { assert_fused_equals_unfused(NO_POS, false, false); }
Test(flash_mha, fused_equals_unfused_causal_masked) { assert_fused_equals_unfused(NO_POS, true, true); }
Test(flash_mha, fused_equals_unfused_alibi_learned_div) { assert_fused_equals_unfused(WITH_ALIBI, true, true); }
Test(flash_mha, fused_equals_unfused_dpb_t5_rotary)
{
    assert_fused_equals_unfused(WITH_DPB_T5_ROTARY, false, true);
    assert_fused_equals_unfused(WITH_DPB_T5_ROTARY, true, false);
}

/* Transformer-XL through the kernel's relative keys: u, v, W_R (and the learned
 * divisor) get the unfused path's gradients; several tiles; beside rotary and ALiBi */
Test(flash_mha, fused_equals_unfused_xl)
{
    assert_fused_equals_unfused(WITH_XL, true, true);
    assert_fused_equals_unfused(WITH_XL, false, false);
    assert_fused_equals_unfused(WITH_XL_BIO_ROTARY_ALIBI, true, true);
    assert_fused_equals_unfused_at(WITH_XL, true, true, NULL, 150);
    assert_fused_equals_unfused_at(WITH_XL_BIO_ROTARY_ALIBI, false, true, NULL, 97);
}

/* Shaw's 1-D relative table through the kernel's relative keys (the table's middle rows
 * reversed): shared and per-head tables, unscaled and scaled, beside rotary before it (q
 * split and turned first) and after it (q split, the kernel turning it) */
Test(flash_mha, fused_equals_unfused_rel1d)
{
    assert_fused_equals_unfused(WITH_REL1D, true, true);
    assert_fused_equals_unfused(WITH_REL1D_HEADS_SCALED_ROTARY, false, true);
    assert_fused_equals_unfused(WITH_REL1D_THEN_ROTARY, true, true);
    assert_fused_equals_unfused_at(WITH_REL1D, false, true, NULL, 150);
    assert_fused_equals_unfused_at(WITH_REL1D_HEADS_SCALED_ROTARY, true, false, NULL, 200);
    const pg_attn_band windows = {.window = 2, .look_backward = 1};
    assert_band_fused_equals_unfused(WITH_REL1D, true, true, &windows);
    /* past the table: the same refusal on both paths */
    pg_mha *m = make(WITH_REL1D, true, false);
    pg_tensor *x = randt(PG_SHAPE(1, 201, 8), 3, false);
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, NULL), "rel1d: sequence length 201 but the table covers distances "
                                                         "up to 199 (tokens 200)");
    pg_module_free(&m->base);
    m = make(WITH_REL1D, true, true);
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, NULL), "rel1d: sequence length 201 but the table covers distances "
                                                         "up to 199 (tokens 200)");
    pg_module_free(&m->base);
    pg_tensor_free(x);
}

/* FIRE and CoPE (a bias per pair, mod_bias alone) through the kernel's pair_bias: FIRE's
 * (1, H, L, L) shared by the batches, CoPE's (B, H, L, L) per batch, both with a distance
 * bias beside; every parameter's gradient as on the reference path; several tiles, a band */
Test(flash_mha, fused_equals_unfused_fire_cope)
{
    assert_fused_equals_unfused(WITH_FIRE, true, true);
    assert_fused_equals_unfused(WITH_COPE_ROTARY, false, true);
    assert_fused_equals_unfused(WITH_FIRE_COPE_ALIBI, true, false);
    assert_fused_equals_unfused_at(WITH_FIRE, false, true, NULL, 150);
    assert_fused_equals_unfused_at(WITH_FIRE_COPE_ALIBI, true, true, NULL, 97);
    const pg_attn_band windows = {.window = 2, .look_backward = 1};
    assert_band_fused_equals_unfused(WITH_FIRE_COPE_ALIBI, true, true, &windows);
}

Test(flash_mha, takes_the_fused_path_only_when_it_computes_the_same)
{
    pg_mha *m = make(WITH_ALIBI, true, false);
    pg_tensor *x = randt(PG_SHAPE(2, 7, 8), 3, true);
    pg_graph *g = pg_graph_new();
    cr_assert_not_null(pg_mha_forward(g, m, x, NULL, NULL));
    cr_assert_eq(fused_nodes(g), 1, "default positions: fused");
    pg_graph_reset(g);
    pg_tensor *pos = TI64(PG_SHAPE(2, 7), 0, 1, 2, 3, 4, 5, 6, 0, 2, 4, 6, 8, 10, 12);
    cr_assert_not_null(pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.pos = pos}), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 0, "explicit positions: the reference path");
    pg_graph_reset(g);
    pg_tensor *bias = randt(PG_SHAPE(7, 7), 4, false);
    cr_assert_not_null(pg_mha_forward(g, m, x, NULL, &(pg_attn_args){.bias = bias}), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 0, "a user bias: the reference path");
    pg_graph_reset(g);
    pg_mha *xl = make(WITH_XL, true, false);
    cr_assert_not_null(pg_mha_forward(g, xl, x, NULL, NULL), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 1, "Transformer-XL at default positions: fused");
    cr_assert_eq(count_nodes(g, "pg_split_heads"), 0, "Transformer-XL: q, k, v read in the projection (rel_keys)");
    pg_graph_reset(g);
    cr_assert_not_null(pg_mha_forward(g, xl, x, NULL, &(pg_attn_args){.pos = pos}), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 0, "Transformer-XL at explicit positions: the reference path");
    pg_graph_reset(g);
    pg_mha *rel = make(WITH_REL1D, true, false);
    cr_assert_not_null(pg_mha_forward(g, rel, x, NULL, NULL), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 1, "rel1d at default positions: fused");
    cr_assert_eq(count_nodes(g, "pg_split_heads"), 0, "rel1d alone: q, k, v read in the projection (rel_keys)");
    pg_graph_reset(g);
    pg_mha *rel_rot = make(WITH_REL1D_THEN_ROTARY, true, false);
    cr_assert_not_null(pg_mha_forward(g, rel_rot, x, NULL, NULL), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 1, "rel1d, rotary: fused");
    cr_assert_eq(count_nodes(g, "pg_split_heads"), 3, "rel1d, rotary after it: q split for rel_bias");
    pg_module_free(&rel_rot->base);
    pg_graph_reset(g);
    pg_mha *fire = make(WITH_FIRE_COPE_ALIBI, true, false);
    cr_assert_not_null(pg_mha_forward(g, fire, x, NULL, NULL), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 1, "FIRE, CoPE at default positions: fused");
    pg_graph_reset(g);
    cr_assert_not_null(pg_mha_forward(g, fire, x, NULL, &(pg_attn_args){.pos = pos}), "%s", pg_graph_error(g));
    cr_assert_eq(fused_nodes(g), 0, "FIRE, CoPE at explicit positions: the reference path");
    pg_module_free(&fire->base);
    pg_module_free(&rel->base);
    pg_module_free(&xl->base);
    pg_graph_free(g);
    pg_tensor *ts[] = {x, pos, bias};
    free_all(3, ts);
    pg_module_free(&m->base);
}

/* ---- local attention bands (pg_mha_config.band) ---------------------------------------------- */

Test(flash_mha, band_fused_equals_unfused)
{
    const pg_attn_band windows = {.window = 2, .look_backward = 1}, both = {.window = 3, .look_backward = 1, .look_forward = 1},
                       exact = {.window = 2, .look_backward = 1, .look_forward = 1, .exact = true};
    assert_band_fused_equals_unfused(NO_POS, true, false, &windows);
    assert_band_fused_equals_unfused(WITH_ALIBI, true, true, &windows);
    assert_band_fused_equals_unfused(WITH_DPB_T5_ROTARY, false, true, &both);
    assert_band_fused_equals_unfused(NO_POS, false, false, &exact);
    assert_band_fused_equals_unfused(WITH_XL, true, true, &windows);
    assert_band_fused_equals_unfused(WITH_XL_BIO_ROTARY_ALIBI, false, true, &both);
    const pg_attn_band wide = {.window = 40, .look_backward = 1};
    assert_fused_equals_unfused_at(WITH_XL, true, true, &wide, 150);
}

/* The band hides exactly the keys LocalAttention's windows hide: the same module
 * without a band but with the band written out by hand as a user bias. L 7, window 2,
 * look_backward 1, causal: query i sees keys 2 floor(i / 2) - 2 .. i. */
Test(flash_mha, band_hides_what_the_windows_hide)
{
    const pg_attn_band band = {.window = 2, .look_backward = 1};
    pg_mha *banded = make_band(NO_POS, true, false, &band), *full = make(NO_POS, true, true);
    pg_tensor *x = randt(PG_SHAPE(2, 7, 8), 3, false), *bias = pg_zeros(NULL, PG_F64, PG_SHAPE(7, 7));
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 7; j++)
            pg_f64(bias)[i * 7 + j] = j < 2 * (i / 2) - 2 ? -INFINITY : 0.0;
    pg_tensor *y1 = pg_mha_forward(NULL, banded, x, NULL, NULL);
    pg_tensor *y2 = pg_mha_forward(NULL, full, x, NULL, &(pg_attn_args){.bias = bias});
    cr_assert(y1 && y2, "%s", pg_last_error());
    assert_close(y1, y2, 1e-13, "banded vs hand-written band");
    pg_tensor *ts[] = {x, bias, y1, y2};
    free_all(4, ts);
    pg_module_free(&banded->base);
    pg_module_free(&full->base);
}

typedef struct band_ctx {
    pg_mha *m;
} band_ctx;

static pg_tensor *band_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const band_ctx *c = ctx;
    return pg_mha_forward(g, c->m, in[0], NULL, NULL);
}

Test(flash_mha, band_gradcheck)
{
    const pg_attn_band band = {.window = 2, .look_backward = 1};
    for (int unfused = 0; unfused < 2; unfused++) {
        band_ctx c = {make_band(WITH_ALIBI, true, unfused, &band)};
        pg_tensor *in[8] = {randt(PG_SHAPE(1, 5, 8), 9, true)};
        int n = with_params(in, 1, &c.m->base);
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(band_fn, n, in, &c, &o);
        pg_tensor_free(in[0]);
        pg_module_free(&c.m->base);
    }
}

Test(flash_mha, band_in_an_lm_trains)
{
    pg_lm_config cfg = pg_lm_defaults(11, 8, 2, 1);
    cfg.band = (pg_attn_band){.window = 3, .look_backward = 1};
    cfg.n_layer_pos = 1;
    cfg.layer_pos[0] = (pg_posmod_spec){.kind = "rotary"};
    pg_lm *lm = pg_lm_new(&cfg);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_graph *g = pg_graph_new();
    pg_tensor *ids = TI64(PG_SHAPE(1, 8), 1, 2, 3, 4, 5, 6, 7, 8), *tg = TI64(PG_SHAPE(1, 8), 2, 3, 4, 5, 6, 7, 8, 9);
    assert_adam_step_changes(&lm->base, &lm->blocks[0]->attn->base, g, pg_lm_loss(g, lm, ids, tg, NULL));
    pg_graph_free(g);
    pg_tensor *ts[] = {ids, tg};
    free_all(2, ts);
    pg_module_free(&lm->base);
}

Test(flash_mha, band_bad_config)
{
    pg_mha_config c = pg_mha_defaults(8, 2);
    pg_rng r = pg_rng_init(1);
    c.band.window = -1;
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), "pg_mha_new: bad band: window -1");
    c.band = (pg_attn_band){.window = 4, .look_forward = 1};
    c.causal = true;
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), "no look_forward with causal");
    c.causal = false;
    c.cross = true;
    ASSERT_FAILS(pg_mha_new(&c, NULL, 0, &r), "cross-attention");
}
