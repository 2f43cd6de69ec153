/* posgrad nn: CoPE, contextual position encoding (Golovneva et al. 2024).
 * docs/pos/cope.md has the whole story.
 *
 * A logits bias that reads q and k: positions are counted by gates instead of
 * tokens. For batch b, head h, query i and key j (docs/pos/cope.md, (1)-(4)):
 *
 *   (1) g_ij = sigmoid(scale q_i . k'_j)      k' the key (default) or the value;
 *                                             0 where the attention hides key j
 *   (2) p_ij = min(sum_{t=j..Lk-1} g_it, npos - 1)   (causal: the sum stops at t = i)
 *   (3) z_i[n] = q_i . E[:, n]               n = 0..npos-1, E (Dh, npos), the unscaled q
 *   (4) bias_ij = z_i[ceil p] w + z_i[floor p] (1 - w),   w = p - floor p
 *   (5) soft_onehot instead of (4): a_ijn = softmax_n(-|p_ij - n| / temp),
 *       bias_ij = sum_n a_ijn z_i[n]   (x-transformers' soft one-hot)
 *
 * and, in the RAM convention without nodiv, the bias times scale (RAM adds it
 * before the 1/sqrt(Dh) division; posgrad adds biases after the scaling).
 * Only w carries the gradient to p: d bias / d p = z[ceil] - z[floor], 0 where
 * p is clamped. Gradients reach q (through z and the gates), k (or v, through
 * the gates) and E.
 *
 * E is one parameter "pos_emb" per layer, shared by the heads, initialised to
 * zeros (the references): (1, Dh, npos) in the RAM convention
 * (facebookresearch/RAM projects/cope), (npos, Dh) in x-transformers'.
 *
 * (1), (2) and (4) are one op, pg_cope_interp (autograd/ops.h).
 * Memory: mod_bias materialises (B, H, Lq, Lk) gates, positions and bias (the
 * suffix sum needs the whole row), so MultiheadAttention takes its unfused path
 * and memory is quadratic in L (soft_onehot: also (B, H, Lq, Lk, npos) weights).
 * No bias_table (the bias has no position-only
 * part), no dist_bias, no band_bias: LocalAttention refuses the module.
 * Positions (pos_q / pos_k) are not used: CoPE's positions come from content. */
#ifndef PG_NN_POS_COPE_H
#define PG_NN_POS_COPE_H

#include "posmod.h"

typedef enum {
    PG_COPE_RAM = 0, /* facebookresearch/RAM (official): pos_emb (1, Dh, npos), bias times scale, npos max_len + 1 */
    PG_COPE_XT = 1   /* x-transformers' CoPE: pos_emb (npos, Dh), bias added after scaling, npos 16 */
} pg_cope_convention;

typedef enum {
    PG_COPE_GATES_KEY = 0,  /* sigmoid(scale q . k) (both references' default) */
    PG_COPE_GATES_VALUE = 1 /* sigmoid(scale q . v) (RAM's cope_val_gates) */
} pg_cope_gates;

/* All-zero is the default: RAM, npos = max_len + 1, bias divided with the logits, key gates,
 * linear interpolation (4). */
typedef struct pg_cope_opts {
    pg_cope_convention convention;
    int64_t npos;        /* npos_max >= 1; 0: max_len + 1 (RAM, needs max_len >= 1) or 16 (XT) */
    bool nodiv;          /* RAM's cope_nodiv: the bias is added after the scaling (XT always does) */
    pg_cope_gates gates;
    bool soft_onehot;        /* (5) instead of (4), either convention (x-transformers' soft_onehot) */
    double soft_onehot_temp; /* temp > 0 of (5); 0: x-transformers' 0.05; must stay 0 without soft_onehot */
} pg_cope_opts;

typedef struct pg_cope {
    pg_posmod pm; /* first: &m->pm.base is the module */
    int64_t head_dim, npos;
    pg_cope_convention convention;
    bool nodiv;
    pg_cope_gates gates;
    bool soft_onehot;
    double soft_onehot_temp; /* resolved (> 0) when soft_onehot, else 0 */
    pg_tensor *pos_emb; /* E: RAM (1, Dh, npos), XT (npos, Dh); zeros at init */
} pg_cope;

/* CoPE for heads of width head_dim; max_len (the block size, 0: none) gives RAM's
 * default npos. o NULL: defaults. dtype: of pos_emb. NULL + error on bad options. */
pg_posmod *pg_cope_new(int64_t head_dim, int64_t max_len, const pg_cope_opts *o, pg_dtype dtype);
/* The registered constructor ("cope"): head_dim from a->head_dim, max_len from
 * a->max_len, dtype a->dtype (no generator needed: E starts at zero). */
pg_posmod *pg_posmod_make_cope(const pg_posmod_args *a);

#endif
