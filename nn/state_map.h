/* State maps: a module's parameters under another library's names and
 * layouts (docs/interop.md). A map is a list of entries, each tying one
 * posgrad parameter name to the foreign name(s) that hold it, with a
 * transform:
 *
 *   PG_MAP_RENAME     theirs[0] is the parameter (up to the value transform)
 *   PG_MAP_TRANSPOSE  theirs[0] is the 2-D parameter transposed (HF GPT-2's Conv1D)
 *   PG_MAP_SPLIT      theirs[0..n) are row blocks of the parameter, concatenated
 *                     along dim 0 in that order (posgrad's fused to_qkv <-> separate
 *                     to_q, to_k, to_v); rows[k] their row counts (all 0: equal parts)
 *   PG_MAP_TIED       each of theirs[0..n) is a full copy (a tied tensor that the
 *                     library's state_dict lists under several names, nanoGPT's
 *                     transformer.wte.weight and lm_head.weight): loading needs at
 *                     least one, and those present must be equal bit for bit;
 *                     saving writes every one
 *   PG_MAP_DROP       theirs[0..n) are foreign buffers that are no parameter
 *                     (nanoGPT's causal-mask attn.bias, rotary inv_freq): loading
 *                     accepts and ignores them, saving does not write them; ours is NULL
 *
 * and a value transform, theirs = ours * mul + add (mul 0 means 1): add = -1
 * for a unit-offset gain stored as gamma = weight - 1, mul for an embedding
 * scale. Loading computes ours = (theirs - add) / mul. With mul a power of two
 * and add 0 the round trip is exact; with add = -1 it is exact when w - 1 is
 * (weights in [0.5, 2] by Sterbenz's lemma, so trained gains near 1).
 *
 * Names are patterns with at most one index token, "{i}" (a layer index,
 * decimal, no leading zeros) or an affine "{Ai+B}" standing for A i + B:
 * "blocks.{i}.attn.to_qkv.weight" <-> "transformer.h.{i}.attn.c_attn.weight", or
 * "blocks.{i}.norm2.weight" <-> "attn_layers.layers.{2i+1}.0.0.gamma" where a library
 * interleaves attention and feed-forward layers; so one map serves any depth.
 *
 * Loading through a map is strict: every parameter of the module needs an
 * entry and its foreign tensor(s); every foreign name must be used by an
 * entry or match a DROP pattern. Failures name the tensor:
 *   pg_module_load_mapped: ckpt.st: nanogpt: missing "transformer.h.1.ln_1.bias" (for blocks.1.norm1.bias)
 * and leave the module untouched (everything is checked before anything is
 * copied). Saving writes exactly the foreign names. */
#ifndef PG_NN_STATE_MAP_H
#define PG_NN_STATE_MAP_H

#include "pos_alibi.h"
#include "pos_dpb.h"
#include "pos_learned.h"
#include "pos_rotary.h"
#include "pos_sinusoidal.h"
#include "pos_t5.h"
#include "state_dict.h"
#include "transformer.h"

#define PG_MAP_MAX_PARTS 4

typedef enum pg_map_op { PG_MAP_RENAME = 0, PG_MAP_TRANSPOSE, PG_MAP_SPLIT, PG_MAP_TIED, PG_MAP_DROP } pg_map_op;

typedef struct pg_map_entry {
    pg_map_op op;
    const char *ours; /* posgrad parameter name pattern; NULL for PG_MAP_DROP */
    int n_theirs;     /* 1 for RENAME / TRANSPOSE, 1..PG_MAP_MAX_PARTS otherwise */
    const char *theirs[PG_MAP_MAX_PARTS];
    int64_t rows[PG_MAP_MAX_PARTS]; /* SPLIT: rows per part on save (all 0: equal parts) */
    double mul, add;                /* theirs = ours * mul + add; mul 0 means 1 */
} pg_map_entry;

typedef struct pg_state_map {
    char *library; /* "nanogpt", for messages */
    int n, cap;
    pg_map_entry *entries; /* owned copies of the names */
} pg_state_map;

/* An empty map (library names it in messages; NULL: "map"); NULL + error when out of memory. */
pg_state_map *pg_state_map_new(const char *library);
void pg_state_map_free(pg_state_map *m);
/* Appends a copy of e; -1 + error for a malformed entry (an op/part count that
 * does not fit, a NULL name, a malformed or second index token, or ours and
 * theirs that do not all carry one). */
int pg_state_map_add(pg_state_map *m, const pg_map_entry *e);
/* Shorthands for pg_state_map_add. */
int pg_state_map_rename(pg_state_map *m, const char *ours, const char *theirs);
int pg_state_map_drop(pg_state_map *m, const char *theirs);

/* ours (names the map's ours patterns match, each tensor once: pg_module_parameters
 * or gradients under the same names) -> new heap tensors under the foreign names,
 * appended to *out (free with pg_tensor_list_free_all), in ours' order; a name
 * without an entry fails naming it. On failure *out is as it was. */
int pg_state_map_to_theirs(const pg_state_map *map, const pg_tensor_list *ours, pg_tensor_list *out);

/* Strict load of a foreign state (or file) into m through the map; casts f32 <-> f64. */
int pg_module_load_state_mapped(pg_module *m, const pg_state_map *map, const pg_tensor_list *theirs);
int pg_module_load_mapped(pg_module *m, const pg_state_map *map, const char *path);
/* m's parameters under the foreign names, with optional metadata pairs (n_meta may be 0). */
int pg_module_save_mapped(const pg_module *m, const pg_state_map *map, const char *path, int n_meta,
                          const char *const *meta_keys, const char *const *meta_values);

/* ---- one table per library (nn/state_map_tables.c) ----------------------------------------
 * nanoGPT (karpathy/nanoGPT model.py, GPT(GPTConfig)): a pg_lm with tie_weights, one
 * "learned" input positional module (block_size = max_len rows), no layer positional
 * modules, LayerNorm with eps 1e-5, an exact-GELU MLP of 4 dim, causal full
 * attention; bias=True (every Linear and LayerNorm has its bias) or bias=False (none:
 * bias = false and norm_bias = PG_BIAS_OFF; the map leaves the bias entries out).
 * NULL + error naming the first setting nanoGPT cannot express. */
pg_state_map *pg_state_map_nanogpt(const pg_lm_config *c);
/* The pg_lm_config of GPT(GPTConfig(block_size, vocab_size, n_layer, n_head, n_embd,
 * dropout = 0, bias)) in dtype, with nanoGPT's loss ignore_index -1. */
pg_lm_config pg_lm_config_nanogpt(int64_t block_size, int64_t vocab, int64_t layers, int64_t heads, int64_t dim,
                                  bool bias, pg_dtype dtype);

/* ---- x-transformers (lucidrains/x-transformers v2.26.4, x_transformers.py; nn/state_map_xtransformers.c)
 * TransformerWrapper(num_tokens, max_seq_len, attn_layers = Decoder(dim, depth, heads, ...)):
 * the fields below are its keyword arguments, zero / false meaning x-transformers' default.
 * pg_lm_config_xtransformers fills the option structs at the end (storage the returned
 * config's positional specs point into: keep *x alive until pg_lm_new and the map are made). */
typedef struct pg_xt_config {
    int64_t num_tokens, max_seq_len, dim, depth, heads;
    int64_t attn_dim_head;              /* 0: 64 (DEFAULT_DIM_HEAD) */
    int64_t attn_kv_heads;              /* 0: heads; attn_one_kv_head is 1 */
    bool attn_qk_norm, attn_qk_norm_dim_scale;
    int64_t attn_qk_norm_groups;        /* 0: 1 */
    double attn_qk_norm_scale;          /* 0: 10 */
    bool use_rmsnorm;                   /* RMSNorm (F.normalize * sqrt(dim) * g) instead of LayerNorm */
    bool no_norm_unit_offset;           /* norm_add_unit_offset = False (its default is True) */
    bool rotary_pos_emb, rotary_xpos;
    int64_t rotary_emb_dim;             /* 0: attn_dim_head / 2 */
    bool alibi_pos_bias;                /* AlibiPositionalBias, no parameters */
    bool rel_pos_bias;                  /* T5 RelativePositionBias */
    int64_t rel_pos_num_buckets, rel_pos_max_distance; /* 0: 32, 128 */
    bool dynamic_pos_bias, dynamic_pos_bias_log_distance, dynamic_pos_bias_norm;
    int dynamic_pos_bias_mlp_depth;     /* 0: 2 */
    double ff_mult;                     /* 0: 4 */
    bool ff_glu, ff_swish, ff_no_bias;
    /* TransformerWrapper */
    bool tie_embedding, l2norm_embed, scaled_sinu_pos_emb;
    int abs_pos_emb; /* 0: x-transformers' rule (on unless rotary or rel_pos_bias), 1: on, -1: off
                        (use_abs_pos_emb = False) */
    pg_dtype dtype;
    /* filled by pg_lm_config_xtransformers */
    pg_learned_opts learned;
    pg_sinusoidal_opts sinu;
    pg_rotary_opts rotary;
    pg_alibi_opts alibi;
    pg_t5_opts t5;
    pg_dpb_opts dpb;
} pg_xt_config;

/* The pg_lm_config of that TransformerWrapper (its options resolved into x's storage); x NULL:
 * an error and a config pg_lm_new refuses. */
pg_lm_config pg_lm_config_xtransformers(pg_xt_config *x);
/* The map of a pg_lm of config c to x-transformers' state_dict names ("token_emb.emb.weight",
 * "attn_layers.layers.{2i}.1.to_q.weight", ...; docs/interop.md "x-transformers"). NULL + error
 * naming the first setting x-transformers cannot express. */
pg_state_map *pg_state_map_xtransformers(const pg_lm_config *c);
/* One keyword argument of the constructors from a string ("heads" "4", "rotary_pos_emb" "True";
 * the names above plus attn_one_kv_head, norm_add_unit_offset, use_abs_pos_emb and Decoder's
 * disable_abs_pos_emb): 0 set, 1 not a key of these (x unchanged), -1 + error for a bad value. */
int pg_xt_config_set(pg_xt_config *x, const char *key, const char *value);
/* The keyword arguments of x that differ from x-transformers' defaults (the five sizes always
 * unless 0), at most cap pairs into keys / values; returns how many (-1 + error for NULL). For
 * file metadata. */
/* x-transformers' persistent buffers of a config c (the rotary "attn_layers.rotary_pos_emb.inv_freq",
 * with xPos also ".scale"; float32 as torch registers them), appended to *out as heap tensors, so
 * that a file of pg_state_map_to_theirs plus these loads into their model with strict=True. The
 * map drops them on load. Returns how many (0, 1 or 2), -1 + error (out as it was). */
int pg_xt_buffers(const pg_lm_config *c, pg_tensor_list *out);
#define PG_XT_KEY_MAX 40
#define PG_XT_VALUE_MAX 32
int pg_xt_config_write(const pg_xt_config *x, int cap, char (*keys)[PG_XT_KEY_MAX], char (*values)[PG_XT_VALUE_MAX]);

#endif
