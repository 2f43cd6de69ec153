/* Every scheme is registered under its kind and builds from a spec with its
 * defaults inside a model's context. */
#include "testutil.h"

static const char *const KINDS[] = {"sinusoidal", "learned", "continuous", "rotary", "xpos", "alibi",
                                    "dpb",        "xl",      "t5",         "abs1d",  "rel1d", "rel2d"};

Test(pos_registry, every_kind_is_registered)
{
    const char *names[32];
    int n = pg_posmod_kinds(names, 32);
    cr_assert_eq(n, (int)(sizeof KINDS / sizeof KINDS[0]), "%d kinds registered", n);
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++) {
        cr_assert_not_null(pg_posmod_lookup(KINDS[i]), "%s is not registered", KINDS[i]);
        bool listed = false;
        for (int j = 0; j < n; j++)
            listed = listed || !strcmp(names[j], KINDS[i]);
        cr_assert(listed, "%s is not listed", KINDS[i]);
    }
}

Test(pos_registry, every_kind_trains_in_a_one_block_lm)
{
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++) {
        pg_lm_config c = pg_lm_defaults(11, 8, 2, 1);
        c.dtype = PG_F64;
        c.max_len = 16;
        if (!strcmp(KINDS[i], "rel2d"))
            continue; /* needs a map size: pos_rel_lm::one_block_adam_step covers it */
        bool input = !strcmp(KINDS[i], "sinusoidal") || !strcmp(KINDS[i], "learned") ||
                     !strcmp(KINDS[i], "continuous");
        pg_posmod_spec spec = {KINDS[i], NULL, NULL};
        if (input) {
            c.n_input_pos = 1;
            c.input_pos[0] = spec;
        } else {
            c.n_layer_pos = 1;
            c.layer_pos[0] = spec;
        }
        pg_lm *lm = pg_lm_new(&c);
        cr_assert_not_null(lm, "%s: %s", KINDS[i], pg_last_error());
        pg_graph *g = pg_graph_new();
        pg_tensor *ids = TI64(PG_SHAPE(2, 6), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
        cr_assert_not_null(loss, "%s: %s", KINDS[i], pg_graph_error(g));
        cr_assert(isfinite(pg_item(loss)), "%s: loss %g", KINDS[i], pg_item(loss));
        cr_assert_eq(pg_backward(g, loss), 0, "%s: %s", KINDS[i], pg_graph_error(g));
        pg_graph_free(g);
        pg_tensor_free(ids);
        pg_module_free(&lm->base);
    }
}
