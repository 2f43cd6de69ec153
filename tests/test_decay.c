/* Weight-decay groups: pg_no_decay_default's documented table (docs/optim.md
 * "Decay and no-decay groups") on the library's own parameters, and the
 * no-decay mark a module sets when it registers a parameter. */
#include "testutil.h"

/* true when name is in l */
static bool listed(const pg_tensor_list *l, const char *name) { return pg_tensor_list_find(l, name) >= 0; }

/* The default split of m's parameters into *dec and *nodec. */
static void split_default(const pg_module *m, pg_tensor_list *dec, pg_tensor_list *nodec)
{
    pg_tensor_list ps = pg_module_parameters(m);
    *dec = (pg_tensor_list){0, 0, NULL, NULL};
    *nodec = (pg_tensor_list){0, 0, NULL, NULL};
    cr_assert_eq(pg_split_decay(&ps, pg_no_decay_default, NULL, dec, nodec), 0, "%s", pg_last_error());
    cr_assert_eq(dec->n + nodec->n, ps.n);
    pg_tensor_list_free(&ps);
}

/* A one-block LM with one per-layer positional scheme of this kind. */
static pg_lm *lm_with(const char *kind)
{
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 1);
    c.dtype = PG_F64;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){.kind = kind};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    return lm;
}

Test(decay, t5_table_decays)
{
    /* T5's bucket table is an embedding table (N, H): it decays, as every
     * tensor of 2 or more dims in nanoGPT's rule; "bias" in its name does not
     * exempt it */
    pg_lm *lm = lm_with("t5");
    const char *table = "blocks.0.attn.pos.relative_attention_bias.weight";
    pg_tensor *t = pg_module_find_param(&lm->base, table);
    cr_assert_not_null(t);
    cr_assert_eq(t->ndim, 2);
    cr_assert_not(pg_module_param_no_decay(&lm->base, table));
    cr_assert_not(pg_no_decay_default(table, t, NULL));
    pg_tensor_list dec, nodec;
    split_default(&lm->base, &dec, &nodec);
    cr_assert(listed(&dec, table));
    cr_assert(listed(&dec, "tok_emb.weight") && listed(&dec, "blocks.0.attn.to_qkv.weight"));
    cr_assert(listed(&nodec, "blocks.0.attn.to_qkv.bias") && listed(&nodec, "blocks.0.norm1.weight"));
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);
    pg_module_free(&lm->base);
}

Test(decay, xl_u_and_v_do_not_decay)
{
    /* XL's u and v (bias_r_w, bias_r_r: (H, Dh)) are per-head biases of the
     * query: pos_xl.c marks them no-decay; its projection of the sinusoids
     * (embed_lin.weight) is a weight matrix and decays */
    pg_lm *lm = lm_with("xl");
    const char *u = "blocks.0.attn.pos.bias_r_w", *v = "blocks.0.attn.pos.bias_r_r";
    const char *w = "blocks.0.attn.pos.embed_lin.weight";
    cr_assert_eq(pg_module_find_param(&lm->base, u)->ndim, 2);
    cr_assert(pg_module_param_no_decay(&lm->base, u) && pg_module_param_no_decay(&lm->base, v));
    cr_assert_not(pg_module_param_no_decay(&lm->base, w));
    pg_tensor_list dec, nodec;
    split_default(&lm->base, &dec, &nodec);
    cr_assert(listed(&nodec, u) && listed(&nodec, v));
    cr_assert(listed(&dec, w));
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);

    /* the same through pg_xl_new directly */
    pg_rng r = pg_rng_init(2);
    pg_xl *xl = pg_xl_new(2, 4, NULL, PG_F32, &r);
    cr_assert_not_null(xl, "%s", pg_last_error());
    cr_assert(xl->u->no_decay && xl->v->no_decay);
    cr_assert(pg_no_decay_default("bias_r_w", xl->u, NULL));
    pg_module_free(&xl->pm.base);
    pg_module_free(&lm->base);
}

/* Model: table (3, 2) registered no-decay, proj (Linear 2 -> 2), emb (Embedding 4 x 2) */
static pg_module *marked_model(void)
{
    pg_rng r = pg_rng_init(5);
    pg_module *root = malloc(sizeof *root);
    pg_module_init(root, "Model", NULL);
    pg_tensor *table = pg_module_new_param_ex(root, "table", PG_F64, PG_SHAPE(3, 2), PG_PARAM_NO_DECAY);
    cr_assert_not_null(table, "%s", pg_last_error());
    pg_fill(table, 1.5);
    cr_assert(table->no_decay && table->requires_grad);
    pg_module_add_child(root, "proj", &pg_linear_new(2, 2, true, PG_F64, &r)->base);
    pg_module_add_child(root, "emb", &pg_embed_new(4, 2, PG_F64, &r)->base);
    return root;
}

static void joined(const pg_tensor_list *l, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (int i = 0; i < l->n; i++) {
        strncat(buf, l->names[i], cap - strlen(buf) - 1);
        strncat(buf, " ", cap - strlen(buf) - 1);
    }
}

Test(decay, module_mark_is_honoured)
{
    pg_module *m = marked_model();
    char buf[256];
    pg_tensor_list dec, nodec;
    split_default(m, &dec, &nodec);
    joined(&dec, buf, sizeof buf);
    cr_assert_str_eq(buf, "proj.weight emb.weight ");
    joined(&nodec, buf, sizeof buf);
    cr_assert_str_eq(buf, "table proj.bias ");
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);

    /* marking later, by full name, and clearing a mark */
    cr_assert_eq(pg_module_param_set_no_decay(m, "emb.weight", true), 0);
    cr_assert_eq(pg_module_param_set_no_decay(m, "table", false), 0);
    cr_assert(pg_module_param_no_decay(m, "emb.weight"));
    cr_assert_not(pg_module_param_no_decay(m, "table"));
    split_default(m, &dec, &nodec);
    joined(&dec, buf, sizeof buf);
    cr_assert_str_eq(buf, "table proj.weight ");
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);
    cr_assert_eq(pg_module_param_set_no_decay(m, "table", true), 0);
    cr_assert_eq(pg_module_param_set_no_decay(m, "emb.weight", false), 0);

    /* AdamW over the default groups with zero grads: only decay moves a
     * parameter, so the marked table keeps its values */
    pg_tensor_list ps = pg_module_parameters(m);
    pg_optim *o = pg_optim_new(PG_ADAMW, NULL);
    cr_assert_eq(pg_optim_add_decay_groups(o, &ps, pg_no_decay_default, NULL, 0.1, 0.5), 0, "%s", pg_last_error());
    double before[3];
    for (int i = 0; i < ps.n; i++)
        ps.tensors[i]->grad = pg_tensor_full(NULL, PG_F64, ps.tensors[i]->ndim, ps.tensors[i]->shape, 0);
    pg_tensor *table = pg_module_find_param(m, "table"), *w = pg_module_find_param(m, "proj.weight");
    before[0] = pg_get(table, 0);
    before[1] = pg_get(w, 0);
    cr_assert_eq(pg_optim_step(o), 0, "%s", pg_last_error());
    cr_assert_eq(pg_get(table, 0), before[0]);
    cr_assert_eq(pg_get(w, 0), before[1] * (1.0 - 0.1 * 0.5));
    pg_optim_free(o);
    pg_tensor_list_free(&ps);
    pg_module_free(m);
}

Test(decay, mark_travels_with_a_tied_tensor)
{
    /* the mark is on the tensor: a parameter shared under two names carries it under both */
    pg_rng r = pg_rng_init(1);
    pg_module *root = malloc(sizeof *root), *head = malloc(sizeof *head);
    pg_module_init(root, "Model", NULL);
    pg_module_init(head, "Head", NULL);
    pg_embed *e = pg_embed_new(4, 3, PG_F64, &r);
    cr_assert_eq(pg_module_add_child(root, "emb", &e->base), 0);
    cr_assert_eq(pg_module_add_param(head, "weight", e->weight, false), 0);
    cr_assert_eq(pg_module_add_child(root, "head", head), 0);
    cr_assert_not(pg_module_param_no_decay(root, "head.weight"));
    cr_assert_eq(pg_module_param_set_no_decay(root, "head.weight", true), 0);
    cr_assert(pg_module_param_no_decay(root, "emb.weight"));
    pg_tensor_list dec, nodec;
    split_default(root, &dec, &nodec);
    cr_assert(dec.n == 0 && nodec.n == 1 && listed(&nodec, "emb.weight"));
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);
    pg_module_free(root);
}

Test(decay, default_rules_by_shape_and_own_name)
{
    pg_tensor *scalar = pg_tensor_full(NULL, PG_F64, 0, NULL, 1.0);
    pg_tensor *vec = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3), 1.0);
    pg_tensor *mat = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3, 2), 1.0);
    /* fewer than 2 dims: never decayed, whatever the name */
    cr_assert(pg_no_decay_default("blocks.0.attn.pos.div", scalar, NULL));
    cr_assert(pg_no_decay_default("slopes", vec, NULL));
    cr_assert(pg_no_decay_default("proj.weight", vec, NULL));
    /* 2 or more dims: decayed unless the parameter's own name is bias or div */
    cr_assert_not(pg_no_decay_default("proj.weight", mat, NULL));
    cr_assert(pg_no_decay_default("proj.bias", mat, NULL));
    cr_assert(pg_no_decay_default("bias", mat, NULL));
    cr_assert(pg_no_decay_default("pos.div", mat, NULL));
    /* a word inside a longer name does not count */
    cr_assert_not(pg_no_decay_default("relative_attention_bias.weight", mat, NULL));
    cr_assert_not(pg_no_decay_default("blocks.0.norm1.weight", mat, NULL));
    cr_assert_not(pg_no_decay_default("bias_table", mat, NULL));
    cr_assert_not(pg_no_decay_default("bias.weight", mat, NULL));
    cr_assert_not(pg_no_decay_default("divisor", mat, NULL));
    /* the mark wins */
    mat->no_decay = true;
    cr_assert(pg_no_decay_default("proj.weight", mat, NULL));
    pg_tensor_free(scalar);
    pg_tensor_free(vec);
    pg_tensor_free(mat);
}

Test(decay, bad_input)
{
    pg_module *m = marked_model();
    ASSERT_FAILS(pg_module_new_param_ex(m, "x", PG_F64, PG_SHAPE(2), 2u), "pg_module_new_param_ex: unknown flags 0x2");
    ASSERT_FAILS(pg_module_new_param_ex(m, "table", PG_F64, PG_SHAPE(2), 0), "already has a parameter");
    ASSERT_FAILS(pg_module_new_param_ex(m, "x", PG_I64, PG_SHAPE(2), 0), "pg_module_new_param_ex");
    ASSERT_FAILS(pg_module_new_param_ex(NULL, "x", PG_F64, PG_SHAPE(2), 0), "pg_module_new_param_ex");
    cr_assert_null(pg_module_find_param(m, "x"));
    /* flags 0 is pg_module_new_param */
    pg_tensor *y = pg_module_new_param_ex(m, "y", PG_F64, PG_SHAPE(2, 2), 0);
    cr_assert(y && !y->no_decay);

    pg_clear_error();
    cr_assert_eq(pg_module_param_set_no_decay(m, "proj.nope", true), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_param_set_no_decay: Model has no parameter \"proj.nope\""), "%s",
              pg_last_error());
    cr_assert_eq(pg_module_param_set_no_decay(NULL, "table", true), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_param_set_no_decay: module is NULL"));
    cr_assert_eq(pg_module_param_set_no_decay(m, NULL, true), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_param_set_no_decay: full_name is NULL"));
    pg_clear_error();
    cr_assert_not(pg_module_param_no_decay(m, "nope"));
    cr_assert(strstr(pg_last_error(), "pg_module_param_no_decay: Model has no parameter \"nope\""));
    cr_assert_not(pg_module_param_no_decay(NULL, "table"));
    cr_assert(strstr(pg_last_error(), "pg_module_param_no_decay: module is NULL"));
    cr_assert_not(pg_module_param_no_decay(m, NULL));
    cr_assert(strstr(pg_last_error(), "pg_module_param_no_decay: full_name is NULL"));
    pg_module_free(m);
}
