/* examples/lm_common.h's parameter count (lm_count_params, behind the examples' memory
 * estimate) against what pg_lm_new makes, for configs with a head width of their own,
 * grouped-query attention, qk-norm gains, bias switches, shared relative biases and
 * nanoGPT's bias=False. */
#include "../examples/lm_common.h"

#include "testutil.h"

static void assert_count(const pg_lm_config *c, const char *what)
{
    int64_t n = -1;
    cr_assert_eq(lm_count_params(c, &n, NULL), 0, "%s: %s", what, pg_last_error());
    pg_lm *lm = pg_lm_new(c);
    cr_assert_not_null(lm, "%s: %s", what, pg_last_error());
    int64_t real = pg_module_num_elements(&lm->base);
    cr_assert_eq(n, real, "%s: estimated %lld parameters, pg_lm_new makes %lld", what, (long long)n, (long long)real);
    pg_module_free(&lm->base);
}

Test(example_lm_params, count_follows_dim_head_kv_heads_biases_and_sharing)
{
    pg_lm_config c = pg_lm_defaults(13, 16, 4, 2);
    assert_count(&c, "defaults");
    c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, false, PG_F32);
    assert_count(&c, "nanoGPT bias=False");
    pg_xt_config x = {.num_tokens = 13, .max_seq_len = 8, .dim = 16, .depth = 2, .heads = 4, .attn_dim_head = 8,
                      .attn_kv_heads = 2, .attn_qk_norm = true, .attn_qk_norm_dim_scale = true, .dtype = PG_F32};
    c = pg_lm_config_xtransformers(&x);
    assert_count(&c, "x-transformers GQA, dim_head 8, qk-norm gains");
    x.rel_pos_bias = true;
    x.ff_glu = true;
    x.tie_embedding = true;
    c = pg_lm_config_xtransformers(&x);
    assert_count(&c, "x-transformers shared T5, GLU, tied");
    x.rel_pos_bias = false;
    x.dynamic_pos_bias = true;
    x.use_rmsnorm = true;
    x.attn_kv_heads = 1;
    c = pg_lm_config_xtransformers(&x);
    assert_count(&c, "x-transformers shared DPB, RMSNorm, MQA");
    c.share_layer_pos[0] = false;
    assert_count(&c, "a DPB per layer");
}
