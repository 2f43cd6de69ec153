/* posgrad nn: the pre-norm transformer block and a decoder-only language model
 * (nn/transformer.c); sampling from it is nn/sample.h. docs/attention.md
 * describes them with their parameter names. */
#ifndef PG_NN_TRANSFORMER_H
#define PG_NN_TRANSFORMER_H

#include "attention.h"
#include "layers.h"

typedef enum { PG_NORM_LAYER = 0, PG_NORM_RMS = 1 } pg_norm_kind;

/* ---- biases and norm conventions (issue 16; docs/attention.md "Biases, norms and ignore_index") ----
 * A bias switch is three-valued: PG_BIAS_DEFAULT (0, what a zeroed config gives) keeps the meaning
 * the config had before the switch existed, PG_BIAS_ON / PG_BIAS_OFF force it.
 *   attn_bias  the attention projections (to_qkv / to_q, to_kv, to_out):  DEFAULT = follow `bias`
 *   ff_bias    the feed-forward's proj_in, proj_out:                       DEFAULT = follow `bias`
 *   norm_bias  the LayerNorms' "bias" (norm1, norm2, the LM's norm):       DEFAULT = on, whatever
 *              `bias` says (as before); PG_BIAS_ON with RMSNorm is refused (it has no bias)
 * nanoGPT's bias=False: bias = false, norm_bias = PG_BIAS_OFF. x-transformers' defaults (LayerNorm
 * without bias, attention without bias, FF with): bias = true, attn_bias = PG_BIAS_OFF,
 * norm_bias = PG_BIAS_OFF.
 * norm_eps: > 0 as given; 0 = the default of the norm's form: 1e-5 (LayerNorm, PG_RMS_MEAN, as
 * torch and nanoGPT) or 1e-12 (PG_RMS_L2, F.normalize's); PG_NORM_EPS_ZERO = exactly 0 (not for
 * PG_RMS_L2). */
typedef enum { PG_BIAS_DEFAULT = 0, PG_BIAS_ON = 1, PG_BIAS_OFF = 2 } pg_bias_switch;
#define PG_NORM_EPS_ZERO (-1.0)

/* ---- TransformerBlock ------------------------------------------------------------------------
 *   x <- mod_x of attn's positional modules, in order (before the pre-norm: the
 *        residual carries the encoding, docs/semantics.md §1.2 step 2)
 *   x <- x + drop(attn(norm1(x)))
 *   x <- x + drop(ff(norm2(x)))
 * Children: "norm1" (LayerNorm or RMSNorm), "attn" (MultiheadAttention, self),
 * "norm2", "ff" (FeedForward: "ff.proj_in", "ff.proj_out"). */
typedef struct pg_block_config {
    int64_t dim, heads;
    int64_t ff_hidden;     /* 0: 4 dim */
    pg_ff_kind ff_kind;    /* PG_FF_MLP or PG_FF_GLU */
    pg_activation ff_act;
    bool bias;             /* biases in the attention and FF Linears */
    bool causal;
    double attn_dropout;   /* on the attention weights */
    double ff_dropout;     /* inside the FF, after the activation */
    double resid_dropout;  /* on each branch before its residual add */
    pg_norm_kind norm;
    double norm_eps;       /* 0: the form's default (1e-5; PG_RMS_L2 1e-12); PG_NORM_EPS_ZERO: 0 */
    double scale;          /* attention logit scale; 0: 1 / sqrt(head width) */
    pg_dtype dtype;
    pg_attn_band band;     /* local attention band (window 0: full attention) */
    /* head width, grouped-query attention, qk-norm: pg_mha_config's fields of these
     * names, passed to every attention (docs/attention.md, "Head width, ...") */
    int64_t dim_head;          /* 0: dim / heads */
    int64_t kv_heads;          /* 0: heads */
    bool qk_norm, qk_norm_dim_scale;
    double qk_norm_scale;      /* 0: 10, or 1 / sqrt(dim_head) with qk_norm_dim_scale */
    int64_t qk_norm_groups;    /* 0: 1 */
    /* biases and norm conventions (see above pg_bias_switch) */
    pg_bias_switch attn_bias, ff_bias, norm_bias;
    bool norm_unit_offset; /* norm gains are weight + 1, weight initialised at 0 (x-transformers' unit_offset) */
    pg_rms_form rms_form;  /* PG_NORM_RMS: PG_RMS_MEAN (torch) or PG_RMS_L2 (x-transformers) */
} pg_block_config;
/* dim, heads; GELU MLP of 4 dim, biases on, LayerNorm, f32, no dropout, not causal */
pg_block_config pg_block_defaults(int64_t dim, int64_t heads);

typedef struct pg_block {
    pg_module base;
    pg_block_config cfg;  /* ff_hidden, norm_eps and the bias switches resolved (ON / OFF) */
    pg_module *norm1, *norm2; /* pg_layernorm or pg_rmsnorm (cfg.norm) */
    pg_mha *attn;
    pg_feedforward *ff;
} pg_block;

/* Takes ownership of the positional modules pos[0..n_pos) (also on failure);
 * they become attn's ("attn.pos" or "attn.pos.N"). */
pg_block *pg_block_new(const pg_block_config *c, pg_posmod *const *pos, int n_pos, pg_rng *r);
/* x (B, L, dim) -> (B, L, dim); a may be NULL (a->rng is needed for dropout in train mode). */
pg_tensor *pg_block_forward(pg_graph *g, pg_block *b, pg_tensor *x, const pg_attn_args *a);

/* ---- decoder-only language model --------------------------------------------------------------
 *   x = tok_emb(ids); x = mod_x of the input positional modules; x = drop(x);
 *   x = blocks.0(x) ... blocks.{layers-1}(x)   (causal);
 *   logits = head(norm(x))
 * Children: "tok_emb" (Embedding vocab x dim), "pos" / "pos.N" (input positional
 * modules), "rel_pos" / "rel_pos.N" (the shared layer modules, see share_layer_pos),
 * "blocks.N" (TransformerBlock), "norm", "head" (Linear dim -> vocab, no
 * bias). With tie_weights head.weight IS tok_emb.weight (one tensor, listed once,
 * as "tok_emb.weight"). */
#define PG_LM_MAX_POS 4

typedef struct pg_lm_config {
    int64_t vocab, dim, heads, layers;
    int64_t ff_hidden;     /* 0: 4 dim */
    pg_ff_kind ff_kind;
    pg_activation ff_act;
    bool bias;             /* biases in the blocks' Linears */
    double dropout;        /* embeddings, residual branches and inside the FF */
    double attn_dropout;   /* attention weights */
    pg_norm_kind norm;
    double norm_eps;       /* 0: the form's default (1e-5; PG_RMS_L2 1e-12); PG_NORM_EPS_ZERO: 0 */
    int64_t max_len;       /* 0: unbounded; else longer inputs fail and generation keeps the last max_len ids */
    bool tie_weights;
    double init_std;       /* 0: PyTorch's default inits; > 0: N(0, init_std) for the embedding and the
                              blocks' Linear weights, zero Linear biases (GPT-2 style) */
    pg_dtype dtype;
    pg_attn_band band;     /* every block's local attention band (window 0: full attention) */
    uint64_t seed;         /* all initial parameters come from pg_rng_init(seed) */
    /* positional modules: input ones act through mod_x on the embeddings; every
     * block gets its own instances of the layer ones (args.layer = block index) */
    int n_input_pos;
    pg_posmod_spec input_pos[PG_LM_MAX_POS];
    int n_layer_pos;
    pg_posmod_spec layer_pos[PG_LM_MAX_POS];
    /* head width, grouped-query attention, qk-norm: pg_mha_config's fields of these
     * names, passed to every attention (docs/attention.md, "Head width, ...") */
    int64_t dim_head;          /* 0: dim / heads */
    int64_t kv_heads;          /* 0: heads */
    bool qk_norm, qk_norm_dim_scale;
    double qk_norm_scale;      /* 0: 10, or 1 / sqrt(dim_head) with qk_norm_dim_scale */
    int64_t qk_norm_groups;    /* 0: 1 */
    /* share_layer_pos[i]: layer_pos[i] is ONE module of the LM, used by every block
     * (x-transformers' AttentionLayers.rel_pos: its DPB, T5 or ALiBi serves all
     * layers). The LM owns it as child "rel_pos" (one shared module) or
     * "rel_pos.N" (several, N counting the shared ones in layer_pos order); the
     * blocks borrow it (pg_mha_borrow_pos) at index i of their attention's list,
     * so its parameters are listed once and get the sum of every layer's
     * gradient, and the fused kernel still takes it (dist_bias / sep_bias). A
     * flag per entry rather than a second spec list: the call order and the
     * index i stay those of layer_pos (the KV cache reads layer_pos[i] beside
     * attn->pos[i]), and shared and per-layer modules mix (a shared T5 bias with
     * per-layer CoPE, as x-transformers). Every attention kind can be shared
     * (none depends on its layer index; built with args.layer 0). A flag past
     * n_layer_pos is refused. docs/attention.md "Sharing one positional module
     * across layers". */
    bool share_layer_pos[PG_LM_MAX_POS];
    /* biases, norm conventions and the loss (docs/attention.md "Biases, norms and ignore_index"):
     * the blocks' and the final norm's switches as pg_block_config's; tok_l2norm: the token
     * embedding is l2-normalised (x-transformers' l2norm_embed); the loss leaves out targets equal
     * to ignore_index when has_ignore_index, else PG_LM_IGNORE (-100) */
    pg_bias_switch attn_bias, ff_bias, norm_bias;
    bool norm_unit_offset;
    pg_rms_form rms_form;
    bool tok_l2norm;
    bool has_ignore_index;
    int64_t ignore_index;
} pg_lm_config;
/* GELU MLP of 4 dim, biases on, LayerNorm, f32, untied, no dropout, seed 0 */
pg_lm_config pg_lm_defaults(int64_t vocab, int64_t dim, int64_t heads, int64_t layers);

typedef struct pg_lm {
    pg_module base;
    pg_lm_config cfg;
    pg_embed *tok_emb;
    int n_pos;
    pg_posmod **pos;     /* input positional modules */
    pg_block **blocks;   /* cfg.layers of them */
    pg_posmod *rel_pos[PG_LM_MAX_POS]; /* [i]: the shared module of layer_pos[i] (child "rel_pos" /
                                          "rel_pos.N"), NULL where not shared */
    pg_module *norm;
    pg_linear *head;
} pg_lm;

pg_lm *pg_lm_new(const pg_lm_config *c);
/* ids (B, L) PG_I64 -> logits (B, L, vocab). a may be NULL; a->pos, a->mask and a->bias
 * reach every block. */
pg_tensor *pg_lm_forward(pg_graph *g, pg_lm *lm, pg_tensor *ids, const pg_attn_args *a);
/* Mean cross-entropy of pg_lm_forward(ids) against targets (B, L) PG_I64; targets equal
 * to the ignored index are left out: cfg.ignore_index when cfg.has_ignore_index (nanoGPT: -1),
 * else PG_LM_IGNORE (-100, as torch). A scalar. */
#define PG_LM_IGNORE (-100)
pg_tensor *pg_lm_loss(pg_graph *g, pg_lm *lm, pg_tensor *ids, pg_tensor *targets, const pg_attn_args *a);

#endif
