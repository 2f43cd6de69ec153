/* State maps (nn/state_map.h) and nanoGPT interop: a GPT written in PyTorch with
 * nanoGPT's names and conventions (tests/fixtures/gen_interop_nanogpt.py) loads
 * strictly into a pg_lm through pg_state_map_nanogpt and gives its logits, loss and
 * every gradient to 1e-10 in float64; saving through the map gives its tensors back
 * bit for bit; posgrad -> nanoGPT -> posgrad is bit-identical; bad files and bad maps
 * fail naming the tensor. The general transforms (split, transpose, values, drop)
 * are tested on maps written here. */
#include "testutil.h"

#define ST "tests/fixtures/interop_nanogpt.safetensors"
#define IO "interop_nanogpt_io.safetensors"

static pg_lm *nanogpt_lm(pg_dtype dtype, uint64_t seed)
{
    pg_lm_config c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, true, dtype);
    c.seed = seed;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    return lm;
}

static pg_state_map *nanogpt_map(const pg_lm *lm)
{
    pg_state_map *m = pg_state_map_nanogpt(&lm->cfg);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* Same names (any order), dtypes, shapes and bytes. */
static void assert_same_lists(const pg_tensor_list *a, const pg_tensor_list *b)
{
    cr_assert_eq(a->n, b->n, "%d tensors vs %d", a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        int j = pg_tensor_list_find(b, a->names[i]);
        cr_assert_geq(j, 0, "%s missing", a->names[i]);
        const pg_tensor *x = a->tensors[i], *y = b->tensors[j];
        cr_assert(x->dtype == y->dtype && pg_same_shape(x, y), "%s: %s vs %s", a->names[i], PG_SHAPE_STR(x),
                  PG_SHAPE_STR(y));
        cr_assert_eq(memcmp(x->data, y->data, (size_t)x->numel * pg_dtype_size(x->dtype)), 0, "%s differs",
                     a->names[i]);
    }
}

static pg_tensor_list load_file(const char *path)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &l), 0, "%s", pg_last_error());
    return l;
}

static void assert_same_files(const char *a, const char *b)
{
    pg_tensor_list x = load_file(a), y = load_file(b);
    assert_same_lists(&x, &y);
    pg_tensor_list_free_all(&x);
    pg_tensor_list_free_all(&y);
}

Test(interop, nanogpt_state_dict_gives_its_logits_loss_and_gradients)
{
    pg_lm *lm = nanogpt_lm(PG_F64, 0);
    pg_state_map *map = nanogpt_map(lm);
    cr_assert_eq(pg_module_load_mapped(&lm->base, map, ST), 0, "%s", pg_last_error());
    pg_tensor_list io = fixture(IO);
    pg_graph *g = pg_graph_new();
    pg_tensor *logits = pg_lm_forward(g, lm, fx(&io, "ids"), NULL);
    assert_close(logits, fx(&io, "logits"), 1e-10, "logits");
    pg_tensor *loss = pg_lm_loss(g, lm, fx(&io, "ids"), fx(&io, "targets"), NULL);
    assert_close(loss, fx(&io, "loss"), 1e-10, "loss");
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    /* every gradient, mapped to nanoGPT's names like the parameters */
    pg_tensor_list params = pg_module_parameters(&lm->base), grads = {0, 0, NULL, NULL}, theirs = {0, 0, NULL, NULL};
    for (int i = 0; i < params.n; i++)
        pg_tensor_list_push(&grads, params.names[i], params.tensors[i]->grad);
    cr_assert_eq(pg_state_map_to_theirs(map, &grads, &theirs), 0, "%s", pg_last_error());
    cr_assert_eq(theirs.n, 29);
    for (int i = 0; i < theirs.n; i++)
        assert_close(theirs.tensors[i], fx(&io, "grad.%s", theirs.names[i]), 1e-10, theirs.names[i]);
    pg_tensor_list_free_all(&theirs);
    pg_tensor_list_free(&grads);
    pg_tensor_list_free(&params);
    pg_graph_free(g);
    pg_tensor_list_free_all(&io);
    pg_state_map_free(map);
    pg_module_free(&lm->base);
}

Test(interop, nanogpt_save_gives_the_state_dict_back_bit_for_bit)
{
    pg_lm *lm = nanogpt_lm(PG_F64, 0);
    pg_state_map *map = nanogpt_map(lm);
    cr_assert_eq(pg_module_load_mapped(&lm->base, map, ST), 0, "%s", pg_last_error());
    const char *out = "build/tests/interop_nanogpt_out.safetensors";
    cr_assert_eq(pg_module_save_mapped(&lm->base, map, out, 0, NULL, NULL), 0, "%s", pg_last_error());
    assert_same_files(ST, out); /* exactly nanoGPT's 29 names, both tied copies */
    remove(out);
    pg_state_map_free(map);
    pg_module_free(&lm->base);
}

/* posgrad -> nanoGPT -> posgrad for a model of its own init, f32 and f64. */
static void round_trip(pg_dtype dtype)
{
    pg_lm *a = nanogpt_lm(dtype, 1), *b = nanogpt_lm(dtype, 2);
    pg_state_map *map = nanogpt_map(a);
    const char *theirs = "build/tests/interop_rt_theirs.safetensors", *pa = "build/tests/interop_rt_a.safetensors",
               *pb = "build/tests/interop_rt_b.safetensors";
    cr_assert_eq(pg_module_save_mapped(&a->base, map, theirs, 0, NULL, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_module_load_mapped(&b->base, map, theirs), 0, "%s", pg_last_error());
    cr_assert_eq(pg_module_save(&a->base, pa), 0);
    cr_assert_eq(pg_module_save(&b->base, pb), 0);
    assert_same_files(pa, pb);
    remove(theirs);
    remove(pa);
    remove(pb);
    pg_state_map_free(map);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
}

Test(interop, round_trip_posgrad_nanogpt_posgrad_is_bit_identical)
{
    round_trip(PG_F64);
    round_trip(PG_F32);
}

/* A load that must fail with needle and leave the model as it was. */
static void assert_load_fails(pg_tensor_list *l, const char *needle)
{
    pg_lm *lm = nanogpt_lm(PG_F64, 3);
    pg_state_map *map = nanogpt_map(lm);
    double *before = params_snapshot(&lm->base);
    ASSERT_RC_FAILS(pg_module_load_state_mapped(&lm->base, map, l), needle);
    double *after = params_snapshot(&lm->base);
    cr_assert_eq(memcmp(before, after, (size_t)pg_module_num_elements(&lm->base) * sizeof *before), 0,
                 "a failed load changed the model");
    free(before);
    free(after);
    pg_state_map_free(map);
    pg_module_free(&lm->base);
}

static int find(const pg_tensor_list *l, const char *name)
{
    int i = pg_tensor_list_find(l, name);
    cr_assert_geq(i, 0, "%s", name);
    return i;
}

Test(interop, bad_nanogpt_files_fail_naming_the_tensor)
{
    pg_tensor_list l = load_file(ST);
    /* missing: the last entry renamed out of the way is both missing and unexpected; missing comes first */
    int i = find(&l, "transformer.h.1.ln_2.bias");
    l.names[i][0] = 'X';
    assert_load_fails(&l, "nanogpt: missing \"transformer.h.1.ln_2.bias\" (for blocks.1.norm2.bias)");
    l.names[i][0] = 't';
    /* unexpected */
    pg_tensor *extra = pg_tensor_full(NULL, PG_F64, PG_SHAPE(8), 0);
    pg_tensor_list_push(&l, "transformer.h.0.attn.rotary.inv_freq", extra);
    assert_load_fails(&l, "1 unexpected: \"transformer.h.0.attn.rotary.inv_freq\"");
    free(l.names[--l.n]); /* the extra entry out again (its tensor is freed below) */
    /* wrong shape */
    i = find(&l, "transformer.h.0.attn.c_attn.weight");
    pg_tensor *w = l.tensors[i], *bad = pg_tensor_full(NULL, PG_F64, PG_SHAPE(24, 7), 0);
    l.tensors[i] = bad;
    assert_load_fails(&l, "\"transformer.h.0.attn.c_attn.weight\" is f64[24,7], it needs f64[24,8]");
    l.tensors[i] = w;
    /* tied copies that differ */
    i = find(&l, "lm_head.weight");
    pg_set(l.tensors[i], 5, pg_get(l.tensors[i], 5) + 1e-12);
    assert_load_fails(&l, "tied copies \"transformer.wte.weight\" and \"lm_head.weight\" differ");
    pg_set(l.tensors[i], 5, pg_get(l.tensors[find(&l, "transformer.wte.weight")], 5));
    /* both tied names gone */
    int j = find(&l, "transformer.wte.weight");
    l.names[i][0] = 'X';
    l.names[j][0] = 'X';
    assert_load_fails(&l, "missing \"transformer.wte.weight\" (for tok_emb.weight)");
    pg_tensor_free(extra);
    pg_tensor_free(bad);
    pg_tensor_list_free_all(&l);
}

Test(interop, nanogpt_mask_buffers_and_one_tied_name_load)
{
    pg_tensor_list l = load_file(ST);
    /* nanoGPT without flash attention saves its causal mask as attn.bias (1, 1, T, T) */
    pg_tensor *mask[2];
    for (int k = 0; k < 2; k++) {
        char name[64];
        snprintf(name, sizeof name, "transformer.h.%d.attn.bias", k);
        mask[k] = pg_tensor_full(NULL, PG_F32, PG_SHAPE(1, 1, 8, 8), 1);
        pg_tensor_list_push(&l, name, mask[k]);
    }
    /* safetensors' save_model keeps one of the tied names: lm_head.weight alone */
    l.names[find(&l, "transformer.wte.weight")][0] = 'X';
    pg_tensor_list kept = {0, 0, NULL, NULL};
    for (int i = 0; i < l.n; i++)
        if (l.names[i][0] != 'X')
            pg_tensor_list_push(&kept, l.names[i], l.tensors[i]);
    pg_lm *lm = nanogpt_lm(PG_F64, 4);
    pg_state_map *map = nanogpt_map(lm);
    cr_assert_eq(pg_module_load_state_mapped(&lm->base, map, &kept), 0, "%s", pg_last_error());
    const pg_tensor *wte = pg_module_find_param(&lm->base, "tok_emb.weight"), *src = l.tensors[find(&l, "lm_head.weight")];
    cr_assert_eq(memcmp(wte->data, src->data, (size_t)src->numel * 8), 0);
    pg_tensor_list_free(&kept);
    pg_tensor_list_free_all(&l);
    pg_state_map_free(map);
    pg_module_free(&lm->base);
}

Test(interop, nanogpt_refuses_what_it_cannot_express)
{
    pg_lm_config c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, true, PG_F64);
    c.tie_weights = false;
    ASSERT_FAILS(pg_state_map_nanogpt(&c), "needs tie_weights");
    c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, true, PG_F64);
    c.bias = false; /* the Linears' biases off, the LayerNorms' kept: neither bias=True nor bias=False */
    ASSERT_FAILS(pg_state_map_nanogpt(&c), "bias = False has no bias anywhere");
    c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, true, PG_F64);
    c.attn_bias = PG_BIAS_OFF;
    ASSERT_FAILS(pg_state_map_nanogpt(&c), "bias = True has biases everywhere");
    c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, false, PG_F64);
    pg_state_map *ok = pg_state_map_nanogpt(&c);
    cr_assert_not_null(ok, "bias=False: %s", pg_last_error());
    pg_state_map_free(ok);
    c.kv_heads = 1;
    ASSERT_FAILS(pg_state_map_nanogpt(&c), "grouped-query");
    c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, false, PG_F64);
    c.dim_head = 8;
    ASSERT_FAILS(pg_state_map_nanogpt(&c), "dim_head");
    c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, true, PG_F64);
    c.ff_act = PG_ACT_GELU_TANH;
    ASSERT_FAILS(pg_state_map_nanogpt(&c), "exact-GELU");
    c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, true, PG_F64);
    c.input_pos[0].kind = "sinusoidal";
    ASSERT_FAILS(pg_state_map_nanogpt(&c), "\"learned\"");
    ASSERT_FAILS(pg_state_map_nanogpt(NULL), "NULL");
}
