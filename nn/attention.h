/* posgrad nn: scaled dot-product attention and MultiheadAttention with the
 * positional protocol (nn/posmod.h). docs/attention.md has the whole story.
 *
 * Masks: a boolean key-padding mask (B, Lk) where false = masked (the key is
 * hidden from every query); causal hides key j from query i when j > i (the
 * diagonal stays visible; docs/semantics.md §7). Hidden logits become
 * -inf. A query that sees no key at all outputs 0 and passes zero gradient,
 * never NaN. */
#ifndef PG_NN_ATTENTION_H
#define PG_NN_ATTENTION_H

#include "posmod.h"

/* ---- the attention math ----------------------------------------------------------------
 * out = softmax(q k^T * scale + bias, hidden entries -inf) v, dropout on the weights.
 * q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv) -> (B, H, Lq, Dv). */
typedef struct pg_sdpa_opts {
    pg_tensor *bias;  /* additive, broadcastable to (B, H, Lq, Lk) (may require grad); NULL: none */
    pg_tensor *mask;  /* (B, Lk) bool, false = masked; NULL: none */
    bool causal;      /* hide key j from query i when j > i */
    double scale;     /* 0: 1 / sqrt(Dh) */
    double dropout;   /* probability of zeroing an attention weight (0: none; pass 0 in eval) */
    pg_rng *rng;      /* for dropout */
} pg_sdpa_opts;
/* o NULL: no bias, mask or dropout, default scale. Every dim of q, k, v must be
 * positive: an empty key sequence (softmax over no keys is undefined) or query
 * sequence is refused with pg_flash_attention's message (pg_attn_qkv_ok). */
pg_tensor *pg_attention(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_sdpa_opts *o);

/* ---- per-call inputs of MultiheadAttention, blocks and the LM --------------------------- */
typedef struct pg_attn_args {
    pg_tensor *mask;  /* (B, Lk) bool key-padding mask, false = masked; NULL: none */
    pg_tensor *bias;  /* user additive logits bias broadcastable to (B, heads, Lq, Lk); NULL: none */
    pg_tensor *pos;   /* self-attention positions (B, Lp), Lp <= L, f32/f64/i64; NULL: 0..L-1 */
    pg_tensor *pos_q; /* cross-attention: query positions (B, Lpq), NULL: 0..Lq-1 */
    pg_tensor *pos_k; /* cross-attention: key (context) positions (B, Lpk), NULL: 0..Lk-1 */
    pg_rng *rng;      /* dropout masks in train mode (needed when a dropout p > 0) */
} pg_attn_args;

/* Checks args for an attention call with batch B, Lq queries and Lk keys, naming
 * fn: mask (B, Lk) bool, bias broadcastable to (B, heads, Lq, Lk) of dtype,
 * positions (pos only in self-attention, pos_q / pos_k only in cross). 0 or -1. */
int pg_attn_args_check(pg_graph *g, const char *fn, const pg_attn_args *a, bool self_attn, int64_t B, int64_t heads,
                       int64_t Lq, int64_t Lk, pg_dtype dtype);

/* ---- MultiheadAttention --------------------------------------------------------------------
 * Parameters (PyTorch names), with H = heads, G = kv_heads, Dh = dim_head:
 *   self-attention:  to_qkv  Linear(dim -> (H + 2 G) Dh): rows q (H Dh), k (G Dh), v (G Dh)
 *   cross-attention: to_q    Linear(dim -> H Dh), to_kv Linear(context_dim -> 2 G Dh): k, v
 *   both:            to_out  Linear(H Dh -> dim)
 *   qk_norm_dim_scale: qk_norm_q_scale (H, 1, Dh), qk_norm_k_scale (G, 1, Dh)
 *   positional modules: child "pos" when there is one, "pos.0", "pos.1", ... when several
 * Heads are the outer factor of the channels: channel c = n * head_dim + h. Query head n
 * uses key / value head n mod G (x-transformers' repeat 'b g n d -> b (r g) n d'). */
/* Local attention as a band of keys (LocalAttention's windows, docs/semantics.md §2):
 * with window w > 0, query i sees the keys of its own window [w floor(i / w), +w) and of
 * look_backward windows before and look_forward windows after it; with exact the band is
 * [i - w look_backward, i + w look_forward] instead. causal still hides j > i. window 0:
 * full attention. Values up to INT64_MAX are valid: a band past either end of the
 * sequence sees every key in that direction (pg_flash_band, saturating). The fused
 * kernel visits only the key tiles that meet the band. */
typedef struct pg_attn_band {
    int64_t window, look_backward, look_forward;
    bool exact;
} pg_attn_band;

typedef struct pg_mha_config {
    int64_t dim, heads;    /* dim % heads == 0 unless dim_head is set */
    bool cross;            /* queries from x, keys and values from a context */
    int64_t context_dim;   /* cross: the context's width; 0: dim */
    bool bias;             /* biases in the projections */
    bool causal;
    double dropout;        /* on the attention weights, train mode only */
    double scale;          /* 0: 1 / sqrt(head_dim) */
    pg_dtype dtype;
    pg_attn_band band;     /* self-attention only; window 0: full */
    /* The fused kernel (autograd/flash.h: tiled, memory linear in L) runs
     * whenever the call allows it: default positions, Lq == Lk, no user bias,
     * and every positional bias a function of distance (dist_bias, or dist_bias_if
     * where the module accepts the call: FIRE below its threshold), separable
     * (sep_bias), one set of relative keys (rel_bias), or else mod_bias's
     * bias per pair (FIRE, CoPE) read per tile as the kernel's pair_bias. Attention dropout runs
     * in it too, with the very mask the reference path draws from args.rng.
     * unfused forces the reference path (pg_attention). */
    bool unfused;
    /* head width, grouped-query attention and qk-norm (docs/attention.md, section of that
     * name; x-transformers' Attention dim_head, kv_heads, qk_norm*) */
    int64_t dim_head;        /* width of a head; 0: dim / heads */
    int64_t kv_heads;        /* key / value heads G, dividing heads; 0: heads (1: multi-query) */
    bool qk_norm;            /* l2-normalise q and k per head (per group) before the positional modules */
    double qk_norm_scale;    /* qk_norm: the logit scale (scale must stay 0); 0: 10, or 1 / sqrt(dim_head)
                                with qk_norm_dim_scale (as x-transformers) */
    bool qk_norm_dim_scale;  /* qk_norm: learned gains qk_norm_q_scale / _k_scale, init dim_head^0.25 */
    int64_t qk_norm_groups;  /* qk_norm: normalise dim_head / groups channels at a time; 0: 1 */
} pg_mha_config;
/* dim, heads; bias on, f32, everything else off / default */
pg_mha_config pg_mha_defaults(int64_t dim, int64_t heads);

typedef struct pg_mha {
    pg_module base;
    pg_mha_config cfg;         /* scale and context_dim resolved */
    int64_t head_dim;
    pg_linear *to_qkv;         /* self-attention, else NULL */
    pg_linear *to_q, *to_kv;   /* cross-attention, else NULL */
    pg_linear *to_out;
    int n_pos;
    pg_posmod **pos;           /* the positional modules in call order (children: owned by the tree;
                                  or borrowed: pg_mha_borrow_pos) */
    int64_t kv_heads;          /* resolved cfg.kv_heads */
    pg_tensor *qk_q_scale, *qk_k_scale; /* qk_norm_dim_scale: (H, 1, Dh), (G, 1, Dh); else NULL */
} pg_mha;

/* Takes ownership of pos[0..n_pos) (also on failure). pos may be NULL when n_pos is 0. */
pg_mha *pg_mha_new(const pg_mha_config *c, pg_posmod *const *pos, int n_pos, pg_rng *r);
/* Puts p into m's positional modules at index `at` (0 .. n_pos; the later ones move
 * up) WITHOUT taking it: m borrows p. The ownership rule: the modules m owns are its
 * children ("pos", "pos.N": pg_mha_new's); a borrowed one is not a child, so its
 * parameters are not listed under m, pg_module_free(m) leaves it and
 * pg_module_train(m) does not reach it. Whoever lends it owns it (keeps it as a
 * child of its own) and keeps it alive as long as m: pg_lm shares one module
 * across all its blocks this way (its child "rel_pos", pg_lm_config.share_layer_pos;
 * docs/attention.md "Sharing one positional module across layers"). The
 * forwards call it like the others, in list order, fused path included, so
 * gradients from every borrower add up in its parameters. 0, or -1 (m or p NULL,
 * at out of range, p already in the list; nothing changed). */
int pg_mha_borrow_pos(pg_mha *m, pg_posmod *p, int at);
/* x (B, Lq, dim); context (B, Lk, context_dim) for cross-attention, NULL for self.
 * a may be NULL. Calls mod_qkv and mod_bias of the positional modules (not
 * mod_x: see pg_block_forward). -> (B, Lq, dim) */
pg_tensor *pg_mha_forward(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, const pg_attn_args *a);
/* What the positional modules add to the logits for this input: x, context and
 * a as for pg_mha_forward; the sum of their mod_bias (after their mod_qkv, in
 * order; unscaled, as the logits get it) as (B, H, Lq, Lk), for inspection:
 * heatmaps of input-dependent schemes (CoPE, the forgetting gate) and of the
 * others alike. Fails when no module adds a bias. Differentiable. */
pg_tensor *pg_mha_positional_bias(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, const pg_attn_args *a);
/* The attention probabilities of this input, as pg_mha_forward's reference
 * path computes them: softmax(q k^T * scale + bias, hidden entries -inf) over
 * the keys, after every positional module's mod_qkv and with their mod_bias,
 * a->bias, the mask, causal and the band; no dropout. (B, H, Lq, Lk); each row
 * sums to 1 (a query that sees no key: zeros). For inspection: attention
 * maps. Differentiable. */
pg_tensor *pg_mha_attention_weights(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, const pg_attn_args *a);

/* The projected heads as the positional modules see them: x (B, Lq, dim), context as
 * for pg_mha_forward -> qkv[0] = q (B, H, Lq, Dh), qkv[1] = k, qkv[2] = v (B, H, Lk, Dh):
 * split, qk-normalised (qk_norm) and k, v repeated from G to H heads (head n: n mod G).
 * g must not be NULL. 0, or -1 after pg_graph_fail. Differentiable. */
int pg_mha_qkv(pg_graph *g, pg_mha *m, pg_tensor *x, pg_tensor *context, pg_tensor *qkv[3]);

#endif
