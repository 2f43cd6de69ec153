/* MultiheadAttention takes the fused kernel whenever the call allows it; the
 * unfused path is the reference and the two agree to 1e-12 in f64, outputs and
 * every gradient, with and without distance-bias schemes. */
#include "testutil.h"

typedef enum { NO_POS, WITH_ALIBI, WITH_DPB_T5_ROTARY } pos_set;

static pg_posmod *alibi_learned(void)
{
    pg_alibi_opts o = {0};
    o.div.divide = 2.0;
    o.div.learned = true;
    return pg_alibi_new(2, &o, PG_F64);
}

/* an MHA (dim 8, 2 heads) with the given schemes; the same seed gives the same weights */
static pg_mha *make(pos_set set, bool causal, bool unfused)
{
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.dtype = PG_F64;
    c.causal = causal;
    c.unfused = unfused;
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
    pg_mha *m = pg_mha_new(&c, pos, n, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

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

static void assert_fused_equals_unfused(pos_set set, bool causal, bool masked)
{
    pg_mha *fused = make(set, causal, false), *ref = make(set, causal, true);
    pg_tensor *x1 = randt(PG_SHAPE(2, 7, 8), 3, true), *x2 = pg_tensor_copy(NULL, x1);
    x2->requires_grad = true;
    /* batch 1 hides keys 0 and 4; batch 0 hides nothing */
    pg_tensor *mask = masked ? TBOOL(PG_SHAPE(2, 7), 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1) : NULL;
    pg_tensor *y1 = run(fused, x1, mask), *y2 = run(ref, x2, mask);
    assert_close(y1, y2, 1e-12, "output");
    assert_close(x1->grad, x2->grad, 1e-12, "grad x");
    pg_tensor_list p1 = pg_module_parameters(&fused->base), p2 = pg_module_parameters(&ref->base);
    cr_assert_eq(p1.n, p2.n);
    for (int i = 0; i < p1.n; i++) {
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

Test(flash_mha, fused_equals_unfused_plain) { assert_fused_equals_unfused(NO_POS, false, false); }
Test(flash_mha, fused_equals_unfused_causal_masked) { assert_fused_equals_unfused(NO_POS, true, true); }
Test(flash_mha, fused_equals_unfused_alibi_learned_div) { assert_fused_equals_unfused(WITH_ALIBI, true, true); }
Test(flash_mha, fused_equals_unfused_dpb_t5_rotary)
{
    assert_fused_equals_unfused(WITH_DPB_T5_ROTARY, false, true);
    assert_fused_equals_unfused(WITH_DPB_T5_ROTARY, true, false);
}

/* counts the fused op in a graph's tape */
static int fused_nodes(const pg_graph *g)
{
    int n = 0;
    for (int i = 0; i < pg_graph_num_nodes(g); i++)
        n += strstr(pg_graph_node(g, i)->name, "flash") != NULL;
    return n;
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
    pg_graph_free(g);
    pg_tensor *ts[] = {x, pos, bias};
    free_all(3, ts);
    pg_module_free(&m->base);
}
