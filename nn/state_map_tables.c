/* The library tables of state maps (state_map.h), one function per library,
 * each first checking that the pg_lm_config is one the library can express.
 * Names and conventions are read from the libraries' public code
 * (docs/interop.md cites where). */
#include "state_map.h"

#include <stdio.h>
#include <string.h>

/* ---- nanoGPT (karpathy/nanoGPT, model.py) ----------------------------------------------------
 * GPT: transformer.wte (Embedding vocab x n_embd), transformer.wpe (Embedding block_size x
 * n_embd), transformer.h.N = Block(ln_1, attn = CausalSelfAttention(c_attn: Linear(n_embd,
 * 3 n_embd), q, k, v = split in that order; c_proj), ln_2, mlp = MLP(c_fc: Linear(n_embd,
 * 4 n_embd), nn.GELU() (exact), c_proj)), transformer.ln_f, lm_head (no bias) tied to wte.
 * LayerNorm eps 1e-5; pre-norm; its nn.Linear weights are (out, in) as torch's, so nothing
 * is transposed (HF's GPT-2 Conv1D weights would be: PG_MAP_TRANSPOSE). Without flash
 * attention (torch < 2.0) each attn registers the causal mask as buffer "attn.bias". */

/* Why nanoGPT cannot express c, or NULL. */
static const char *nanogpt_problem(const pg_lm_config *c)
{
    if (!c->tie_weights)
        return "needs tie_weights (lm_head.weight is transformer.wte.weight)";
    if (c->n_input_pos != 1 || !c->input_pos[0].kind || c->input_pos[0].make ||
        strcmp(c->input_pos[0].kind, "learned") != 0 || c->input_pos[0].opts)
        return "needs one \"learned\" input positional module (transformer.wpe) and nothing else";
    if (c->max_len <= 0)
        return "needs max_len = block_size > 0 (the rows of transformer.wpe)";
    if (c->n_layer_pos != 0)
        return "has no positional modules inside attention (layer_pos)";
    if (c->norm != PG_NORM_LAYER || (c->norm_eps != 0 && c->norm_eps != 1e-5))
        return "needs LayerNorm with eps 1e-5";
    if (c->ff_kind != PG_FF_MLP || c->ff_act != PG_ACT_GELU || (c->ff_hidden != 0 && c->ff_hidden != 4 * c->dim))
        return "needs an exact-GELU MLP of 4 dim (nn.GELU())";
    if (c->band.window != 0)
        return "has full causal attention only (no band)";
    if (c->dim_head != 0 && c->dim_head * c->heads != c->dim)
        return "has heads of n_embd / n_head (dim_head)";
    if ((c->kv_heads != 0 && c->kv_heads != c->heads) || c->qk_norm)
        return "has neither grouped-query attention (kv_heads) nor qk_norm";
    if (c->norm_unit_offset || c->tok_l2norm)
        return "has plain LayerNorm gains and token embeddings (norm_unit_offset, tok_l2norm)";
    /* bias=True: every bias; bias=False: none (bias = false and norm_bias = PG_BIAS_OFF) */
    pg_bias_switch off = PG_BIAS_OFF, on = PG_BIAS_ON;
    if (c->bias ? c->attn_bias == off || c->ff_bias == off || c->norm_bias == off
                : c->attn_bias == on || c->ff_bias == on || c->norm_bias != off)
        return c->bias ? "bias = True has biases everywhere (attn_bias, ff_bias, norm_bias not PG_BIAS_OFF)"
                       : "bias = False has no bias anywhere: bias = false and norm_bias = PG_BIAS_OFF "
                         "(attn_bias, ff_bias not PG_BIAS_ON)";
    return NULL;
}

pg_lm_config pg_lm_config_nanogpt(int64_t block_size, int64_t vocab, int64_t layers, int64_t heads, int64_t dim,
                                  bool bias, pg_dtype dtype)
{
    pg_lm_config c = pg_lm_defaults(vocab, dim, heads, layers);
    c.bias = bias;
    c.norm_bias = bias ? PG_BIAS_DEFAULT : PG_BIAS_OFF;
    c.has_ignore_index = true; /* F.cross_entropy(..., ignore_index=-1) */
    c.ignore_index = -1;
    c.tie_weights = true;
    c.max_len = block_size;
    c.norm_eps = 1e-5;
    c.dtype = dtype;
    c.n_input_pos = 1;
    c.input_pos[0] = (pg_posmod_spec){"learned", NULL, NULL};
    return c;
}

/* ours <- theirs pairs of one block ({i} the layer); the biases last */
static const char *const nanogpt_block[][2] = {
    {"blocks.{i}.norm1.weight", "transformer.h.{i}.ln_1.weight"},
    {"blocks.{i}.attn.to_qkv.weight", "transformer.h.{i}.attn.c_attn.weight"},
    {"blocks.{i}.attn.to_out.weight", "transformer.h.{i}.attn.c_proj.weight"},
    {"blocks.{i}.norm2.weight", "transformer.h.{i}.ln_2.weight"},
    {"blocks.{i}.ff.proj_in.weight", "transformer.h.{i}.mlp.c_fc.weight"},
    {"blocks.{i}.ff.proj_out.weight", "transformer.h.{i}.mlp.c_proj.weight"},
    {"norm.weight", "transformer.ln_f.weight"},
    {"pos.emb.weight", "transformer.wpe.weight"},
    /* bias = True only */
    {"blocks.{i}.norm1.bias", "transformer.h.{i}.ln_1.bias"},
    {"blocks.{i}.attn.to_qkv.bias", "transformer.h.{i}.attn.c_attn.bias"},
    {"blocks.{i}.attn.to_out.bias", "transformer.h.{i}.attn.c_proj.bias"},
    {"blocks.{i}.norm2.bias", "transformer.h.{i}.ln_2.bias"},
    {"blocks.{i}.ff.proj_in.bias", "transformer.h.{i}.mlp.c_fc.bias"},
    {"blocks.{i}.ff.proj_out.bias", "transformer.h.{i}.mlp.c_proj.bias"},
    {"norm.bias", "transformer.ln_f.bias"},
};
#define NANOGPT_NO_BIAS 8 /* entries before the biases */

pg_state_map *pg_state_map_nanogpt(const pg_lm_config *c)
{
    if (!c) {
        pg_set_error("pg_state_map_nanogpt: config is NULL");
        return NULL;
    }
    const char *bad = nanogpt_problem(c);
    if (bad) {
        pg_set_error("pg_state_map_nanogpt: nanoGPT's GPT %s", bad);
        return NULL;
    }
    pg_state_map *m = pg_state_map_new("nanogpt");
    pg_map_entry tied = {PG_MAP_TIED, "tok_emb.weight", 2, {"transformer.wte.weight", "lm_head.weight"}, {0}, 0, 0};
    int n = c->bias ? (int)(sizeof nanogpt_block / sizeof nanogpt_block[0]) : NANOGPT_NO_BIAS;
    int rc = m ? pg_state_map_add(m, &tied) : -1;
    for (int k = 0; rc == 0 && k < n; k++)
        rc = pg_state_map_rename(m, nanogpt_block[k][0], nanogpt_block[k][1]);
    if (rc == 0) /* the causal mask buffer of nanoGPT without flash attention */
        rc = pg_state_map_drop(m, "transformer.h.{i}.attn.bias");
    if (rc != 0) {
        pg_state_map_free(m);
        return NULL;
    }
    return m;
}
