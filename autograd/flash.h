/* posgrad autograd: fused scaled dot-product attention (FlashAttention style).
 *
 * out = softmax(q k^T * scale + bias, hidden entries -inf) v, computed in
 * tiles of 64 queries x 64 keys with the online softmax (running max, running
 * sum, output accumulator), so neither the forward nor the backward ever holds
 * an Lq x Lk matrix: memory grows linearly with the sequence length. The
 * forward saves only the output and the per-row logsumexp (B, H, Lq); the
 * backward recomputes each tile's probabilities (FlashAttention-2:
 * D_i = rowsum(dO * O), dS = P * (dP - D_i)). docs/flash_attention.md.
 *
 * Shapes: q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), one float dtype
 * (f32 or f64) -> out (B, H, Lq, Dv).
 *
 * Hidden entries, exactly as pg_attention (nn/attention.h):
 *   mask (B, Lk) bool, false = key hidden from every query;
 *   causal hides key j from query i when j > i, start-aligned also when
 *   Lq != Lk (query i sees keys 0..i; with Lq > Lk the rows i >= Lk - 1 see
 *   every key, with Lq < Lk the keys j >= Lq are never seen).
 * A query that sees no key outputs 0 and passes zero gradient, never NaN.
 *
 * Relative bias as a function of distance: dist_bias (H, Lq + Lk - 1) holds,
 * for head h, the bias of the pair (i, j) at index (i - j) + Lk - 1 (the
 * distance d = i - j runs from -(Lk - 1) to Lq - 1); it is added to the scaled
 * logits. It may require grad: its gradient is the sum of dS over the visible
 * pairs at each distance, so it flows on to whatever produced it (a positional
 * module's dist_bias hook: ALiBi slopes, DPB MLP, T5 table).
 *
 * Separable bias: sep_q (B, H, Lq) and sep_k (B, H, Lk) add
 * sep_q[b, h, i] - sep_k[b, h, j] to the scaled logits of the pair (i, j) (the
 * forgetting gate's c_i - c_j, nn/pos_fox.h), in each tile, never as an
 * Lq x Lk matrix; either side may be given alone (the other is 0: Transformer-XL's
 * key-side term -s u . k_j is sep_k alone). Their gradients are the row and (minus) the column sums of
 * dS over the visible pairs: dsep_q[i] = sum_j dS_ij, dsep_k[j] = -sum_i dS_ij.
 *
 * Relative keys (Transformer-XL's position term, nn/pos_xl.h): rel_q
 * (B, H, Lq, D) and rel_k (H, Lq + Lk - 1, D) add
 *   rel_scale * rel_q[b, h, i] . rel_k[h, i - j + Lk - 1]
 * to the logit of the pair (i, j), same index as dist_bias. A tile of bq x bk
 * pairs meets the bq + bk - 1 consecutive distances of a band of rel_k, so each
 * tile costs one more small product, (bq, D) x (D, bq + bk - 1), and memory
 * stays linear in L. Gradients: drel_q[i] += rel_scale sum_j dS_ij rel_k[i - j],
 * drel_k[i - j] += rel_scale sum dS_ij rel_q[i] (summed over batches). With rel_q_is_q the
 * queries are q's own rows, and drel_q goes into dq.
 *
 * xPos (xpos_scale_base = s > 0; Sun et al. 2022, as LocalAttention's reference
 * path in nn/local_attention.c): channel c of q_i and k_j is scaled so that the
 * product of the pair is q_ic k_jc zeta_c^((i - j) / s), with
 *   zeta_c = (2 f + 0.4 D) / (1.4 D),  f = c mod (D / 2)  (D even),
 * a function of i - j only. Scaling q_i by zeta^(i/s) and k_j by zeta^(-j/s)
 * would leave the range of the dtype for long sequences, so each tile measures
 * from its own centre c0 = i0 + BQ / 2 (i0 its first query): q'_i = q_i
 * zeta^((i - c0)/s), k'_j = k_j zeta^((c0 - j)/s), the factors in double; the
 * logit is scale q' . k', and the chain rule gives dq_i and dk_j the same factors.
 * A pair's factor zeta^((i - j)/s) itself may of course leave the range (a key
 * far in the future of a non-causal query with a small s): then the logit is
 * +-inf or NaN, as the product's. */
#ifndef PG_FLASH_H
#define PG_FLASH_H

#include "attn_check.h"

typedef struct pg_flash_opts {
    double scale;          /* 0: 1 / sqrt(D) */
    bool causal;           /* hide key j from query i when j > i */
    pg_tensor *mask;       /* (B, Lk) bool, false = masked; NULL: none */
    pg_tensor *dist_bias;  /* (H, Lq + Lk - 1) of q's dtype, index (i - j) + Lk - 1; NULL: none */
    /* A local band (LocalAttention, docs/semantics.md §2): with window
     * w > 0, query i sees only the keys of windows floor(i/w) - look_backward
     * .. floor(i/w) + look_forward, or with exact_window the keys
     * i - w look_backward <= j <= i + w look_forward. Only the key tiles that
     * meet the band are visited: time and memory O(L (lb + lf + 1) w). */
    int64_t window;
    int64_t look_backward, look_forward;
    bool exact_window;
    pg_tensor *sep_q, *sep_k; /* (B, H, Lq), (B, H, Lk) of q's dtype: + sep_q[i] - sep_k[j]; either may be NULL (0) */
    pg_tensor *rel_q, *rel_k; /* (B, H, Lq, D), (H, Lq + Lk - 1, D) of q's dtype: relative keys; both or neither */
    double rel_scale;         /* the relative term's factor; 0: 1 */
    /* true: the relative term's queries are q itself (rel_q stays NULL, rel_k is given), as
     * Shaw's q_i . R[j - i]: the kernel reads q's rows for it and adds its gradient into q's,
     * so q is not copied (pg_flash_attention_qkv keeps it in the projection) and there is no
     * rel_q to differentiate. Not with the rotation tables or xPos (they change the q the
     * kernel sees). */
    bool rel_q_is_q;
    /* (H, D) of q's dtype, or NULL: the kernel's queries are q_i + q_shift[h] for every row i of
     * head h (Transformer-XL's q + u, nn/pos_xl.h), in the logits and, with rel_q_is_q, in the
     * relative term: the result and gradients are those of this kernel on q + q_shift,
     * without storing that sum (a thread shifts a head's rows into its scratch, as for the
     * rotation). Differentiable: its gradient is the sum of dq over the batches and rows.
     * Not with the rotation tables or xPos. */
    pg_tensor *q_shift;
    double xpos_scale_base;   /* > 0: xPos on q and k with this scale base (above; D even); 0: off */
    /* Attention dropout: each probability P[b, h, i, j] is kept with probability
     * 1 - dropout and then divided by 1 - dropout, else 0 (the normaliser is the
     * undropped one), from rng's stream: element (b, h, i, j) of a (B, H, Lq, Lk)
     * tensor at pg_rng_uniform_at(rng, ((b H + h) Lq + i) Lk + j) < 1 - dropout,
     * exactly the mask pg_dropout draws for the weights from the same state; rng
     * then advances by B H Lq Lk. The backward regenerates the mask, never stores
     * it. dropout in [0, 1]; > 0 needs rng. 0: none. */
    double dropout;
    pg_rng *rng;
    /* The mask in LocalAttention's layout instead (its band of ops draws it on the
     * (B H, W, w, S) weights of windows): with dropout_window = w > 0, pair (i, j) of
     * row bh = b H + h takes uniform number ((bh W + floor(i / w)) w + i mod w) S +
     * j - (floor(i / w) - lb) w (a key outside the S slots is never visible), W =
     * dropout_windows >= ceil(Lq / w), S = dropout_slots, lb = dropout_look_backward < W,
     * and the stream moves on by B H W w S. 0: the (B, H, Lq, Lk) layout above. */
    int64_t dropout_window, dropout_windows, dropout_slots, dropout_look_backward;
    /* LocalAttention's attn_bias: (Hb, window, (look_backward + look_forward + 1)
     * window) of q's dtype, Hb dividing B H, with a band (window > 0). Row
     * bh = b H + h uses window_bias[bh mod Hb]; the pair (i, j) gets entry
     * [i mod window, j - (floor(i / window) - look_backward) window]: the query's
     * offset in its window and the key's slot in the windows it looks at (every
     * key the band shows has one). Differentiable. NULL: none. */
    pg_tensor *window_bias;
    /* A bias per pair of positions: (Bb, H, Lq, Lk) of q's dtype, Bb 1 (the same for
     * every batch, as FIRE's) or B; entry [b, h, i, j] is added to the scaled logit of
     * the pair (i, j), read per tile. Differentiable (with Bb 1 the batches' gradients
     * are summed). NULL: none. Memory: the caller's L x L tensor, nothing more. */
    pg_tensor *pair_bias;
    /* true: the result is (B, Lq, H Dv), head h in columns h Dv .. (h + 1) Dv - 1 of each
     * row, which is pg_merge_heads of the (B, H, Lq, Dv) result, written so by the kernel
     * (and its gradient read so) instead of copied each way. false: (B, H, Lq, Dv). */
    bool merge_heads;
    /* Rotary embedding inside the kernel: q's rows rotated with rot_cos_q / rot_sin_q
     * (Bc, 1, Lq, R), k's with rot_cos_k / rot_sin_k (Bc, 1, Lk, R), Bc 1 or B (each side
     * its own), of q's dtype, one R with 1 <= R <= D / 2, channel pairs interleaved or
     * half-split (rot_interleaved) exactly as pg_rotate_pairs (autograd/ops.h) rotates them:
     * the result and the gradients of q, k and v are those of pg_rotate_pairs on q and on k
     * followed by this kernel, bit for bit, but the rotated q and k are never stored (a
     * thread rotates a head's rows into its scratch; the backward takes that head's dq and dk
     * back through the rotation). The tables are constants: one that requires grad is
     * refused (a learned divisor's or float positions' rotation is pg_rotate_pairs' to
     * differentiate). With xPos as well, xPos scales the rotated q and k. All four NULL: none. */
    pg_tensor *rot_cos_q, *rot_sin_q, *rot_cos_k, *rot_sin_k;
    bool rot_interleaved;
} pg_flash_opts;

/* o NULL: default scale, no mask, no bias, not causal. Differentiable in q, k,
 * v, dist_bias, sep_q, sep_k, rel_q, rel_k, window_bias, pair_bias and q_shift. g NULL: a
 * heap result the caller frees, nothing recorded.
 *
 * The operands are checked by pg_attn_check (autograd/attn_check.h, layout
 * PG_ATTN_HEADS: the messages pg_attention gives too). Every dim of q, k, v
 * must be positive: an empty key sequence (softmax over no keys is undefined)
 * or query sequence is refused, as by pg_attention.
 * Any window >= 0 and look_backward, look_forward >= 0 are valid, up to
 * INT64_MAX: a band that reaches past either end of the sequence sees every key
 * in that direction (the arithmetic saturates), so window 4 with look_backward
 * 2^62 and causal is full causal attention. Negative values are refused. */
pg_tensor *pg_flash_attention(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_flash_opts *o);

/* The keys [*lo, *hi] of 0 .. Lk - 1 that query i >= 0 may see through o's local
 * band, before causal and the mask (window <= 0 or o NULL: all of them; *lo > *hi:
 * none; a negative look_backward or look_forward counts as 0). Saturating, as
 * above. The one definition of the band: the kernel's and MultiheadAttention's
 * reference path (nn/attention.c) use it. */
void pg_flash_band(const pg_flash_opts *o, int64_t i, int64_t Lk, int64_t *lo, int64_t *hi);

/* The rotation tables of o (rot_cos_q .. rot_sin_k) for q (B, H, Lq, D) and k (B, H, Lk, D),
 * checked as pg_flash_attention checks them, its message naming fn: 0 (also for none), or -1
 * after pg_graph_fail. For a caller of the unchecked forms below whose tables come from
 * elsewhere (MultiheadAttention: a positional module's qk_rotation hook). q and k need only
 * their dtype and shape. */
int pg_flash_rotation_check(pg_graph *g, const char *fn, const pg_tensor *q, const pg_tensor *k,
                            const pg_flash_opts *o);

/* pg_flash_attention for a caller that has checked the operands itself:
 * q, k, v, mask, dist_bias, sep_q / sep_k and rel_q / rel_k with pg_attn_check (PG_ATTN_HEADS), pair_bias
 * (Bb, H, Lq, Lk) of q's dtype with Bb 1 or B, q_shift as described there, a finite
 * scale and rel_scale, a finite xpos_scale_base >= 0 (> 0 only with an even D), rotation tables as
 * described at rot_cos_q (none requiring grad) and a band with
 * window, look_backward, look_forward >= 0, as pg_flash_attention does. Only a NULL q, k, v
 * or o is refused here (naming pg_flash_attention); anything else unchecked is undefined behaviour. For the
 * attention layers (MultiheadAttention, LocalAttention), which check their
 * arguments once at their own entry. */
pg_tensor *pg_flash_attention_unchecked(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                                        const pg_flash_opts *o);

/* pg_flash_attention over the heads of one self-attention projection qkv (B, L, 3 H D),
 * H = heads: q's head h is columns h D .. h D + D - 1 of each row, k's H D + h D .., v's
 * 2 H D + h D .. (pg_split_heads of qkv at 0, H D and 2 H D). The kernel reads them in place
 * and writes qkv's gradient so (every column of it): the result and every gradient are those
 * of pg_flash_attention over the three splits, bit for bit, without the splits' copies either
 * way (a gradient qkv already holds, from an earlier backward, is added to tile by tile where
 * the splits add their finished sums: the same to rounding). o as pg_flash_attention's,
 * checked the same way (messages give the heads' shapes, (B, H, L, D)). */
pg_tensor *pg_flash_attention_qkv(pg_graph *g, pg_tensor *qkv, int64_t heads, const pg_flash_opts *o);

/* The same unchecked, as pg_flash_attention_unchecked: qkv f32 or f64 (B, L, 3 heads D) with
 * B, L, D, heads >= 1 and o as checked by pg_flash_attention; a NULL qkv or o is refused. */
pg_tensor *pg_flash_attention_qkv_unchecked(pg_graph *g, pg_tensor *qkv, int64_t heads, const pg_flash_opts *o);

/* Tile sizes (queries x keys) of the kernels. */
#define PG_FLASH_BQ 64
#define PG_FLASH_BK 64

#endif
