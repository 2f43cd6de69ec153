/* The general transforms of nn/state_map.h on a map written here (an
 * x-transformers-like layout): row split of the fused to_qkv into to_q / to_k /
 * to_v, a Conv1D-style transpose, a unit-offset gain (add -1), an embedding scale
 * (mul 2), a dropped buffer, {i} patterns; the values each produces, the exact
 * round trip, and malformed maps and states. */
#include "testutil.h"

static pg_lm *small_lm(uint64_t seed)
{
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 2);
    c.dtype = PG_F64;
    c.seed = seed;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    /* gains in [0.5, 2] (where w - 1 is exact), not all 1 */
    for (int b = 0; b < 2; b++) {
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.norm1.weight", b);
        pg_tensor *w = pg_module_find_param(&lm->base, name);
        pg_rng r = pg_rng_init(seed * 7 + (uint64_t)b);
        pg_fill_uniform(w, &r, 0.5, 2.0);
    }
    return lm;
}

static const char *const plain[][2] = {
    {"blocks.{i}.norm1.bias", "layers.{i}.n1.beta"},
    {"blocks.{i}.attn.to_out.weight", "layers.{i}.attn.to_out.weight"},
    {"blocks.{i}.attn.to_out.bias", "layers.{i}.attn.to_out.bias"},
    {"blocks.{i}.norm2.weight", "layers.{2i+1}.n2.weight"}, /* interleaved, as x-transformers' layers */
    {"blocks.{i}.norm2.bias", "layers.{2i+1}.n2.bias"},
    {"blocks.{i}.ff.proj_in.bias", "layers.{i}.ff.c_fc.bias"},
    {"blocks.{i}.ff.proj_out.weight", "layers.{i}.ff.out.weight"},
    {"blocks.{i}.ff.proj_out.bias", "layers.{i}.ff.out.bias"},
    {"norm.weight", "final_norm.weight"},
    {"norm.bias", "final_norm.bias"},
};

/* head_entry false leaves head.weight without an entry */
static pg_state_map *test_map(bool head_entry)
{
    pg_state_map *m = pg_state_map_new("test");
    pg_map_entry e[] = {
        {PG_MAP_RENAME, "tok_emb.weight", 1, {"token_emb.emb.weight"}, {0}, 2.0, 0},
        {PG_MAP_RENAME, "blocks.{i}.norm1.weight", 1, {"layers.{2i}.n1.gamma"}, {0}, 0, -1.0},
        {PG_MAP_SPLIT, "blocks.{i}.attn.to_qkv.weight", 3,
         {"layers.{i}.attn.to_q.weight", "layers.{i}.attn.to_k.weight", "layers.{i}.attn.to_v.weight"}, {0}, 0, 0},
        {PG_MAP_SPLIT, "blocks.{i}.attn.to_qkv.bias", 3,
         {"layers.{i}.attn.to_q.bias", "layers.{i}.attn.to_k.bias", "layers.{i}.attn.to_v.bias"}, {8, 8, 8}, 0, 0},
        {PG_MAP_TRANSPOSE, "blocks.{i}.ff.proj_in.weight", 1, {"layers.{i}.ff.c_fc.weight"}, {0}, 0, 0},
    };
    for (size_t k = 0; k < sizeof e / sizeof e[0]; k++)
        cr_assert_eq(pg_state_map_add(m, &e[k]), 0, "%s", pg_last_error());
    for (size_t k = 0; k < sizeof plain / sizeof plain[0]; k++)
        cr_assert_eq(pg_state_map_rename(m, plain[k][0], plain[k][1]), 0, "%s", pg_last_error());
    if (head_entry)
        cr_assert_eq(pg_state_map_rename(m, "head.weight", "to_logits.weight"), 0);
    cr_assert_eq(pg_state_map_drop(m, "layers.{i}.attn.rotary.inv_freq"), 0);
    return m;
}

static pg_tensor_list theirs_of(const pg_lm *lm, const pg_state_map *map)
{
    pg_tensor_list p = pg_module_parameters(&lm->base), out = {0, 0, NULL, NULL};
    cr_assert_eq(pg_state_map_to_theirs(map, &p, &out), 0, "%s", pg_last_error());
    pg_tensor_list_free(&p);
    return out;
}

static const pg_tensor *get(const pg_tensor_list *l, const char *name)
{
    int i = pg_tensor_list_find(l, name);
    cr_assert_geq(i, 0, "%s", name);
    return l->tensors[i];
}

static const pg_tensor *param(const pg_lm *lm, const char *name)
{
    const pg_tensor *t = pg_module_find_param(&lm->base, name);
    cr_assert_not_null(t, "%s", name);
    return t;
}

Test(state_map, each_transform_gives_the_foreign_values)
{
    pg_lm *lm = small_lm(1);
    pg_state_map *map = test_map(true);
    pg_tensor_list t = theirs_of(lm, map);
    cr_assert_eq(t.n, 1 + 2 * 16 + 2 + 1, "%d", t.n); /* each block: 12 parameters, two of them in 3 parts */
    const pg_tensor *qkv = param(lm, "blocks.1.attn.to_qkv.weight"), *fc = param(lm, "blocks.0.ff.proj_in.weight");
    const pg_tensor *k = get(&t, "layers.1.attn.to_k.weight"), *c = get(&t, "layers.0.ff.c_fc.weight");
    cr_assert(k->shape[0] == 8 && k->shape[1] == 8 && c->shape[0] == 8 && c->shape[1] == 32);
    for (int64_t r = 0; r < 8; r++)
        for (int64_t j = 0; j < 8; j++)
            cr_assert_eq(pg_get(k, r * 8 + j), pg_get(qkv, (8 + r) * 8 + j)); /* rows 8..15 */
    for (int64_t r = 0; r < 8; r++)
        for (int64_t j = 0; j < 32; j++)
            cr_assert_eq(pg_get(c, r * 32 + j), pg_get(fc, j * 8 + r)); /* (in, out) */
    /* {2i} and {2i+1}: block 1's norms are layers 2 and 3 */
    cr_assert_lt(pg_tensor_list_find(&t, "layers.1.n1.gamma"), 0);
    cr_assert_eq(memcmp(get(&t, "layers.3.n2.weight")->data, param(lm, "blocks.1.norm2.weight")->data, 64), 0);
    const pg_tensor *g = get(&t, "layers.2.n1.gamma"), *w = param(lm, "blocks.1.norm1.weight");
    const pg_tensor *e = get(&t, "token_emb.emb.weight"), *emb = param(lm, "tok_emb.weight");
    for (int64_t j = 0; j < 8; j++)
        cr_assert_eq(pg_get(g, j), pg_get(w, j) - 1.0);
    for (int64_t j = 0; j < emb->numel; j++)
        cr_assert_eq(pg_get(e, j), 2.0 * pg_get(emb, j));
    pg_tensor_list_free_all(&t);
    pg_state_map_free(map);
    pg_module_free(&lm->base);
}

Test(state_map, round_trip_through_every_transform_is_bit_identical)
{
    pg_lm *a = small_lm(1), *b = small_lm(2);
    pg_state_map *map = test_map(true);
    pg_tensor_list t = theirs_of(a, map);
    /* a foreign buffer the map drops */
    pg_tensor *inv = pg_tensor_full(NULL, PG_F32, PG_SHAPE(2), 1);
    pg_tensor_list_push(&t, "layers.1.attn.rotary.inv_freq", inv);
    cr_assert_eq(pg_module_load_state_mapped(&b->base, map, &t), 0, "%s", pg_last_error());
    pg_tensor_list pa = pg_module_parameters(&a->base), pb = pg_module_parameters(&b->base);
    cr_assert_eq(pa.n, pb.n);
    for (int i = 0; i < pa.n; i++)
        cr_assert_eq(memcmp(pa.tensors[i]->data, pb.tensors[i]->data, (size_t)pa.tensors[i]->numel * 8), 0, "%s",
                     pa.names[i]);
    pg_tensor_list_free(&pa);
    pg_tensor_list_free(&pb);
    pg_tensor_list_free_all(&t);
    pg_state_map_free(map);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
}

Test(state_map, a_wrong_split_part_or_a_missing_entry_fails_naming_it)
{
    pg_lm *a = small_lm(1);
    pg_state_map *map = test_map(true);
    pg_tensor_list t = theirs_of(a, map);
    int i = pg_tensor_list_find(&t, "layers.0.attn.to_k.weight");
    pg_tensor *k = t.tensors[i], *bad = pg_tensor_full(NULL, PG_F64, PG_SHAPE(7, 8), 0);
    t.tensors[i] = bad;
    ASSERT_RC_FAILS(pg_module_load_state_mapped(&a->base, map, &t),
                    "test: \"layers.0.attn.to_k.weight\" is f64[7,8], its part of the split needs f64[8,8] "
                    "(for blocks.0.attn.to_qkv.weight f64[24,8])");
    t.tensors[i] = k;
    pg_tensor_free(bad);
    pg_state_map *no_head = test_map(false);
    ASSERT_RC_FAILS(pg_module_load_state_mapped(&a->base, no_head, &t), "parameter \"head.weight\" has no entry");
    pg_tensor_list p = pg_module_parameters(&a->base), out = {0, 0, NULL, NULL};
    ASSERT_RC_FAILS(pg_state_map_to_theirs(no_head, &p, &out), "\"head.weight\" has no entry in the map");
    cr_assert_eq(out.n, 0, "a failed conversion left %d tensors", out.n);
    ASSERT_RC_FAILS(pg_module_save_mapped(&a->base, no_head, "build/tests/never.safetensors", 0, NULL, NULL),
                    "pg_module_save_mapped: build/tests/never.safetensors: test: \"head.weight\" has no entry");
    pg_tensor_list_free(&p);
    pg_tensor_list_free_all(&t);
    pg_state_map_free(no_head);
    pg_state_map_free(map);
    pg_module_free(&a->base);
}

Test(state_map, malformed_entries_are_refused)
{
    pg_state_map *m = pg_state_map_new("bad");
    pg_map_entry two = {PG_MAP_RENAME, "a.{i}.{i}", 1, {"b.{i}.{i}"}, {0}, 0, 0};
    ASSERT_RC_FAILS(pg_state_map_add(m, &two), "a malformed or second index token in ours");
    ASSERT_RC_FAILS(pg_state_map_rename(m, "blocks.{i}.w", "h.w"), "all carry one index token or none");
    ASSERT_RC_FAILS(pg_state_map_rename(m, "blocks.{i}.w", "h.{i+}.w"), "malformed or second index token in a foreign");
    ASSERT_RC_FAILS(pg_state_map_rename(m, "blocks.{i}.w", "h.{0i}.w"), "malformed or second index token in a foreign");
    pg_map_entry parts = {PG_MAP_RENAME, "w", 2, {"a", "b"}, {0}, 0, 0};
    ASSERT_RC_FAILS(pg_state_map_add(m, &parts), "n_theirs does not fit");
    ASSERT_RC_FAILS(pg_state_map_rename(m, "w", NULL), "a foreign name is NULL");
    pg_map_entry drop = {PG_MAP_DROP, "w", 1, {"a"}, {0}, 0, 0};
    ASSERT_RC_FAILS(pg_state_map_add(m, &drop), "ours must be NULL exactly for a drop");
    cr_assert_eq(m->n, 0);
    /* rows that do not add up to the parameter's fail on use, naming it */
    pg_map_entry rows = {PG_MAP_SPLIT, "norm.weight", 2, {"a", "b"}, {3, 3}, 0, 0};
    cr_assert_eq(pg_state_map_add(m, &rows), 0);
    pg_lm *lm = small_lm(1);
    pg_tensor_list p = {0, 0, NULL, NULL}, out = {0, 0, NULL, NULL};
    pg_tensor_list_push(&p, "norm.weight", pg_module_find_param(&lm->base, "norm.weight"));
    ASSERT_RC_FAILS(pg_state_map_to_theirs(m, &p, &out), "\"norm.weight\" f64[8] does not fit its split entry");
    pg_tensor_list_free(&p);
    pg_module_free(&lm->base);
    pg_state_map_free(m);
}
