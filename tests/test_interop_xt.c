/* x-transformers interop (nn/state_map.h, nn/state_map_xtransformers.c; docs/interop.md
 * "x-transformers"): a TransformerWrapper(Decoder) written in PyTorch with x-transformers'
 * names and conventions (tests/fixtures/gen_interop_xtransformers.py, float64) in four
 * configurations (abs: the defaults; rot: rotary + RMSNorm + GQA + tied; dpb: shared DPB +
 * qk-norm with dim scale + no unit offset + SwiGLU; t5: shared T5 + MQA + qk-norm +
 * l2norm_embed + FF without bias) loads strictly into the pg_lm of
 * pg_lm_config_xtransformers (the kwargs read from the file's metadata) and gives the
 * logits, loss and every gradient within 1e-10 (the measured errors are printed); saving
 * gives the state dict back bit for bit (the rotary inv_freq buffer from pg_xt_buffers);
 * posgrad -> x-transformers -> posgrad is bit-identical; inexpressible configurations,
 * missing tensors and bad kwargs are refused with messages naming them. */
#include "testutil.h"

static const char *const CASES[] = {"abs", "rot", "dpb", "t5"};
#define N_CASES 4

/* The file's state dict and its kwargs (metadata) as a pg_xt_config in f64. */
static pg_tensor_list xt_file(const char *cfg, pg_xt_config *x)
{
    char path[128];
    snprintf(path, sizeof path, "tests/fixtures/interop_xt_%s.safetensors", cfg);
    pg_tensor_list l = {0, 0, NULL, NULL};
    int n = 0;
    char **keys = NULL, **values = NULL;
    cr_assert_eq(pg_safetensors_load_meta(path, &l, &n, &keys, &values), 0, "%s", pg_last_error());
    *x = (pg_xt_config){.dtype = PG_F64};
    for (int k = 0; k < n; k++) {
        cr_assert_eq(pg_xt_config_set(x, keys[k], values[k]), 0, "%s: %s = %s: %s", path, keys[k], values[k],
                     pg_last_error());
        free(keys[k]);
        free(values[k]);
    }
    free(keys);
    free(values);
    return l;
}

static pg_lm *xt_lm(pg_xt_config *x, uint64_t seed, pg_state_map **map)
{
    pg_lm_config c = pg_lm_config_xtransformers(x);
    c.seed = seed;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    *map = pg_state_map_xtransformers(&lm->cfg);
    cr_assert_not_null(*map, "%s", pg_last_error());
    return lm;
}

/* max |a - e| / (1 + |e|) over a list against the fixture's "<cfg>.grad.<name>" */
static double grads_err(const pg_tensor_list *theirs, const pg_tensor_list *io, const char *cfg)
{
    double worst = 0;
    for (int i = 0; i < theirs->n; i++) {
        double e = max_err(theirs->tensors[i], fx(io, "%s.grad.%s", cfg, theirs->names[i]));
        cr_assert(e <= 1e-10, "%s: gradient of %s: error %.3g", cfg, theirs->names[i], e);
        worst = e > worst ? e : worst;
    }
    return worst;
}

static void check_case(const char *cfg)
{
    pg_xt_config x;
    pg_tensor_list sd = xt_file(cfg, &x);
    pg_state_map *map;
    pg_lm *lm = xt_lm(&x, 0, &map);
    cr_assert_eq(pg_module_load_state_mapped(&lm->base, map, &sd), 0, "%s: %s", cfg, pg_last_error());
    pg_tensor_list io = fixture("interop_xt_io.safetensors");
    pg_graph *g = pg_graph_new();
    pg_tensor *ids = fx(&io, "%s.ids", cfg), *targets = fx(&io, "%s.targets", cfg);
    double e_logits = max_err(pg_lm_forward(g, lm, ids, NULL), fx(&io, "%s.logits", cfg));
    pg_tensor *loss = pg_lm_loss(g, lm, ids, targets, NULL);
    double e_loss = max_err(loss, fx(&io, "%s.loss", cfg));
    cr_assert(e_logits <= 1e-10 && e_loss <= 1e-10, "%s: logits %.3g, loss %.3g", cfg, e_logits, e_loss);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor_list ps = pg_module_parameters(&lm->base), grads = {0, 0, NULL, NULL}, theirs = {0, 0, NULL, NULL};
    for (int i = 0; i < ps.n; i++)
        pg_tensor_list_push(&grads, ps.names[i], ps.tensors[i]->grad);
    cr_assert_eq(pg_state_map_to_theirs(map, &grads, &theirs), 0, "%s", pg_last_error());
    int n_buffers = pg_tensor_list_find(&sd, "attn_layers.rotary_pos_emb.inv_freq") >= 0;
    cr_assert_eq(theirs.n, sd.n - n_buffers, "%s: %d gradients for %d tensors", cfg, theirs.n, sd.n);
    double e_grad = grads_err(&theirs, &io, cfg);
    printf("interop_xt %s: %d tensors, max error logits %.2g, loss %.2g, gradients %.2g\n", cfg, sd.n, e_logits,
           e_loss, e_grad);
    pg_tensor_list_free_all(&theirs);
    pg_tensor_list_free(&grads);
    pg_tensor_list_free(&ps);
    pg_graph_free(g);
    pg_tensor_list_free_all(&io);
    pg_tensor_list_free_all(&sd);
    pg_state_map_free(map);
    pg_module_free(&lm->base);
}

Test(interop_xt, absolute_defaults_give_their_logits_loss_and_gradients) { check_case("abs"); }
Test(interop_xt, rotary_rmsnorm_gqa_tied_give_their_logits_loss_and_gradients) { check_case("rot"); }
Test(interop_xt, shared_dpb_qk_norm_swiglu_give_their_logits_loss_and_gradients) { check_case("dpb"); }
Test(interop_xt, shared_t5_mqa_qk_norm_l2norm_embed_give_their_logits_loss_and_gradients) { check_case("t5"); }

/* Saving gives every tensor of the file back bit for bit, and nothing else: the parameters through
 * the map, the rotary inv_freq buffer (float32, as torch registers it) from pg_xt_buffers. */
Test(interop_xt, save_gives_the_state_dict_back_bit_for_bit)
{
    for (int k = 0; k < N_CASES; k++) {
        pg_xt_config x;
        pg_tensor_list sd = xt_file(CASES[k], &x), back = {0, 0, NULL, NULL};
        pg_state_map *map;
        pg_lm *lm = xt_lm(&x, 0, &map);
        cr_assert_eq(pg_module_load_state_mapped(&lm->base, map, &sd), 0, "%s", pg_last_error());
        pg_tensor_list ps = pg_module_parameters(&lm->base);
        cr_assert_eq(pg_state_map_to_theirs(map, &ps, &back), 0, "%s", pg_last_error());
        int nb = pg_xt_buffers(&lm->cfg, &back);
        cr_assert_eq(nb, k == 1 ? 1 : 0, "%s: %d buffers (%s)", CASES[k], nb, pg_last_error());
        cr_assert_eq(back.n, sd.n, "%s: %d saved, %d in the file", CASES[k], back.n, sd.n);
        for (int i = 0; i < sd.n; i++) {
            int j = pg_tensor_list_find(&back, sd.names[i]);
            cr_assert_geq(j, 0, "%s: %s not saved", CASES[k], sd.names[i]);
            const pg_tensor *a = sd.tensors[i], *b = back.tensors[j];
            cr_assert(a->dtype == b->dtype && pg_same_shape(a, b), "%s: %s vs %s", sd.names[i], PG_SHAPE_STR(a),
                      PG_SHAPE_STR(b));
            cr_assert_eq(memcmp(a->data, b->data, (size_t)a->numel * pg_dtype_size(a->dtype)), 0, "%s: %s differs",
                         CASES[k], sd.names[i]);
        }
        pg_tensor_list_free_all(&back);
        pg_tensor_list_free(&ps);
        pg_tensor_list_free_all(&sd);
        pg_state_map_free(map);
        pg_module_free(&lm->base);
    }
}

/* xPos adds RotaryEmbedding's "scale" buffer: (2k + 0.4 r) / (1.4 r) for r = rotary_emb_dim. */
Test(interop_xt, xpos_buffers)
{
    pg_xt_config x = {.num_tokens = 5, .max_seq_len = 4, .dim = 8, .depth = 1, .heads = 2, .attn_dim_head = 8,
                      .rotary_xpos = true, .dtype = PG_F64};
    pg_lm_config c = pg_lm_config_xtransformers(&x);
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_xt_buffers(&c, &l), 2, "%s", pg_last_error());
    const pg_tensor *inv = l.tensors[0], *sc = l.tensors[1];
    cr_assert(!strcmp(l.names[1], "attn_layers.rotary_pos_emb.scale") && inv->numel == 2 && sc->dtype == PG_F32);
    cr_assert(((float *)inv->data)[0] == 1.0f && ((float *)inv->data)[1] == 0.01f); /* 10000^(-2/4) */
    cr_assert(((float *)sc->data)[0] == (float)(1.6 / 5.6) && ((float *)sc->data)[1] == (float)(3.6 / 5.6));
    pg_tensor_list_free_all(&l);
    ASSERT_RC_FAILS(pg_xt_buffers(NULL, &l), "pg_xt_buffers");
}

/* posgrad -> x-transformers -> posgrad for models of their own init (T5 and ALiBi included). */
static void round_trip(pg_xt_config x)
{
    pg_state_map *map, *map_b;
    pg_lm *a = xt_lm(&x, 1, &map), *b = xt_lm(&x, 2, &map_b);
    pg_tensor_list pa = pg_module_parameters(&a->base), theirs = {0, 0, NULL, NULL};
    cr_assert_eq(pg_state_map_to_theirs(map, &pa, &theirs), 0, "%s", pg_last_error());
    cr_assert_eq(pg_module_load_state_mapped(&b->base, map_b, &theirs), 0, "%s", pg_last_error());
    pg_tensor_list pb = pg_module_parameters(&b->base);
    cr_assert_eq(pa.n, pb.n);
    for (int i = 0; i < pa.n; i++) {
        const pg_tensor *s = pa.tensors[i], *t = pb.tensors[i];
        cr_assert_eq(memcmp(s->data, t->data, (size_t)s->numel * pg_dtype_size(s->dtype)), 0, "%s differs",
                     pa.names[i]);
    }
    pg_tensor_list_free_all(&theirs);
    pg_tensor_list_free(&pa);
    pg_tensor_list_free(&pb);
    pg_state_map_free(map);
    pg_state_map_free(map_b);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
}

Test(interop_xt, round_trip_posgrad_xtransformers_posgrad_is_bit_identical)
{
    for (int k = 0; k < N_CASES; k++) {
        pg_xt_config x;
        pg_tensor_list sd = xt_file(CASES[k], &x);
        pg_tensor_list_free_all(&sd);
        round_trip(x);
        x.dtype = PG_F32;
        round_trip(x);
    }
    pg_xt_config base = {.num_tokens = 11, .max_seq_len = 8, .dim = 8, .depth = 2, .heads = 2, .attn_dim_head = 4,
                         .dtype = PG_F32};
    pg_xt_config t5 = base, alibi = base, sinu = base;
    t5.rel_pos_bias = true;
    t5.rotary_pos_emb = true;
    t5.rotary_xpos = true;
    alibi.alibi_pos_bias = true;
    alibi.l2norm_embed = true;
    alibi.ff_no_bias = true;
    sinu.scaled_sinu_pos_emb = true;
    sinu.dynamic_pos_bias = true;
    sinu.dynamic_pos_bias_norm = true;
    sinu.dynamic_pos_bias_mlp_depth = 3;
    round_trip(t5);
    round_trip(alibi);
    round_trip(sinu);
}

Test(interop_xt, missing_and_unexpected_tensors_fail_naming_them)
{
    pg_xt_config x;
    pg_tensor_list sd = xt_file("rot", &x);
    pg_state_map *map;
    pg_lm *lm = xt_lm(&x, 3, &map);
    int i = pg_tensor_list_find(&sd, "attn_layers.layers.2.1.to_k.weight");
    cr_assert_geq(i, 0);
    sd.names[i][0] = 'X';
    ASSERT_RC_FAILS(pg_module_load_state_mapped(&lm->base, map, &sd),
                    "xtransformers: missing \"attn_layers.layers.2.1.to_k.weight\" (for blocks.1.attn.to_qkv.weight)");
    sd.names[i][0] = 'a';
    pg_tensor *extra = pg_tensor_full(NULL, PG_F64, PG_SHAPE(8), 0);
    pg_tensor_list_push(&sd, "to_logits.weight", extra); /* tie_embedding has no to_logits */
    ASSERT_RC_FAILS(pg_module_load_state_mapped(&lm->base, map, &sd), "1 unexpected: \"to_logits.weight\"");
    free(sd.names[--sd.n]);
    pg_tensor_free(extra);
    /* k's rows are kv_heads * dim_head = 16 */
    int k = pg_tensor_list_find(&sd, "attn_layers.layers.0.1.to_k.weight");
    pg_tensor *w = sd.tensors[k], *bad = pg_tensor_full(NULL, PG_F64, PG_SHAPE(32, 8), 0);
    sd.tensors[k] = bad;
    ASSERT_RC_FAILS(pg_module_load_state_mapped(&lm->base, map, &sd),
                    "\"attn_layers.layers.0.1.to_k.weight\" is f64[32,8], its part of the split needs f64[16,8]");
    sd.tensors[k] = w;
    pg_tensor_free(bad);
    pg_tensor_list_free_all(&sd);
    pg_state_map_free(map);
    pg_module_free(&lm->base);
}

Test(interop_xt, refuses_what_xtransformers_cannot_express)
{
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 2); /* posgrad's defaults: LayerNorm and attention biases */
    ASSERT_FAILS(pg_state_map_xtransformers(&c), "no attention biases and no LayerNorm bias");
    pg_xt_config x = {.num_tokens = 11, .max_seq_len = 8, .dim = 8, .depth = 2, .heads = 2, .dtype = PG_F64};
    c = pg_lm_config_xtransformers(&x);
    c.norm = PG_NORM_RMS;
    c.rms_form = PG_RMS_MEAN;
    ASSERT_FAILS(pg_state_map_xtransformers(&c), "RMSNorm of F.normalize (PG_RMS_L2");
    c = pg_lm_config_xtransformers(&x);
    x.learned.scale = 0; /* the embedding unscaled, as nanoGPT's */
    ASSERT_FAILS(pg_state_map_xtransformers(&c), "scales AbsolutePositionalEmbedding by dim^-0.5");
    x.dynamic_pos_bias = true;
    c = pg_lm_config_xtransformers(&x);
    c.share_layer_pos[0] = false; /* a DPB per layer: x-transformers has one */
    ASSERT_FAILS(pg_state_map_xtransformers(&c), "shares its relative bias across layers");
    x.dynamic_pos_bias = false;
    x.rotary_pos_emb = true;
    c = pg_lm_config_xtransformers(&x);
    x.rotary.pairing = PG_ROTARY_HALF_SPLIT;
    ASSERT_FAILS(pg_state_map_xtransformers(&c), "has RotaryEmbedding(rotary_emb_dim) only as");
    x.rotary_pos_emb = false;
    c = pg_lm_config_xtransformers(&x);
    c.heads = 1;
    ASSERT_FAILS(pg_state_map_xtransformers(&c), "heads >= 2");
    c = pg_lm_config_xtransformers(&x);
    c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){"cope", NULL, NULL};
    ASSERT_FAILS(pg_state_map_xtransformers(&c), "rotary, xpos, alibi, t5 or dpb only");
    ASSERT_FAILS(pg_state_map_xtransformers(NULL), "NULL");
}

Test(interop_xt, kwargs_from_strings_and_back)
{
    pg_xt_config x, y;
    memset(&x, 0, sizeof x);
    memset(&y, 0, sizeof y);
    cr_assert_eq(pg_xt_config_set(&x, "heads", "4"), 0);
    cr_assert_eq(pg_xt_config_set(&x, "rotary_pos_emb", "True"), 0);
    cr_assert_eq(pg_xt_config_set(&x, "norm_add_unit_offset", "False"), 0);
    cr_assert_eq(pg_xt_config_set(&x, "attn_one_kv_head", "True"), 0);
    cr_assert_eq(pg_xt_config_set(&x, "ff_mult", "2.5"), 0);
    cr_assert_eq(pg_xt_config_set(&x, "disable_abs_pos_emb", "False"), 0);
    cr_assert(x.heads == 4 && x.rotary_pos_emb && x.no_norm_unit_offset && x.attn_kv_heads == 1 && x.ff_mult == 2.5 &&
              x.abs_pos_emb == 1);
    cr_assert_eq(pg_xt_config_set(&x, "block_size", "8"), 1); /* nanoGPT's, not a kwarg of these */
    ASSERT_RC_FAILS(pg_xt_config_set(&x, "heads", "four"), "heads = \"four\" is not a non-negative integer");
    ASSERT_RC_FAILS(pg_xt_config_set(&x, "use_rmsnorm", "yes"), "not a bool (True / False)");
    ASSERT_RC_FAILS(pg_xt_config_set(NULL, "heads", "4"), "NULL");
    char keys[40][PG_XT_KEY_MAX], values[40][PG_XT_VALUE_MAX];
    int n = pg_xt_config_write(&x, 40, keys, values);
    cr_assert_eq(n, 6, "%d pairs", n); /* heads, kv heads, unit offset, rotary, ff_mult, disable_abs_pos_emb */
    for (int k = 0; k < n; k++)
        cr_assert_eq(pg_xt_config_set(&y, keys[k], values[k]), 0, "%s = %s", keys[k], values[k]);
    cr_assert_eq(memcmp(&x, &y, offsetof(pg_xt_config, learned)), 0, "the kwargs do not survive the round trip");
}
