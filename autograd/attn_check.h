/* posgrad autograd: the one check of an attention call's operands.
 *
 * Every public attention entry point validates its q, k, v, mask, biases and
 * positions once, with pg_attn_check, naming itself in the messages:
 * pg_flash_attention (autograd/flash.h), pg_attention and, through
 * pg_attn_args_check, pg_mha_forward, pg_block_forward and pg_lm_forward
 * (nn/attention.h), pg_local_attention_forward (nn/local_attention.h), and the
 * positional protocol's pg_pos_ctx_check (nn/posmod.h). What they call inside
 * (the fused kernel through pg_flash_attention_unchecked, the attention math)
 * takes the operands as checked and does not check them again.
 *
 * The messages, one wording per mistake:
 *   fn: q is NULL                                         (k, v likewise)
 *   fn: expected q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv) of one float
 *       dtype, all dims positive, got q f64[..], k .., v ..            (PG_ATTN_HEADS)
 *   fn: q, k, v must share one shape (B, L, d) or (B, H, L, d) and a float dtype,
 *       got ..                                                         (PG_ATTN_SAME)
 *   fn: empty input f64[..]                                            (PG_ATTN_SAME)
 *   fn: bad sizes B .., Lq .., Lk .., heads .., head_dim ..            (PG_ATTN_SIZES)
 *   fn: mask is bool[..], expected a bool key mask (B, Lk) = (.., ..)
 *   fn: mask must be (B, Lk) bool with B dividing the .. packed rows, got ..  (mask_packed)
 *   fn: pos is i64[..], expected (B, Lp) = (.., <= ..) of f32, f64 or i64  (pos_q / pos_k)
 *   fn: bias is f64[..], expected f64 broadcastable to (B, H, Lq, Lk) = (.., .., .., ..)
 *   fn: dist_bias is f64[..], expected f64 (H, Lq + Lk - 1) = (.., ..) for Lq .., Lk ..
 *   fn: sep_k is f64[..], expected f64 (B, H, Lk) = (.., .., ..)       (sep_q likewise, Lq)
 *   fn: rel_q, rel_k are .., .., expected f64 (B, H, Lq, Dh) = (..) and (H, Lq + Lk - 1, Dh) = (..), both or neither */
#ifndef PG_ATTN_CHECK_H
#define PG_ATTN_CHECK_H

#include "graph.h"

/* How the call gives its sizes. */
typedef enum pg_attn_layout {
    PG_ATTN_HEADS, /* q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv): one float dtype, every dim >= 1 */
    PG_ATTN_SAME,  /* q, k, v one shape (B, L, d) or (B, H, L, d) and float dtype, every dim >= 1:
                      B is then the packed rows (the leading dims), Lq = Lk = L (LocalAttention) */
    PG_ATTN_SIZES, /* no q, k, v: B, H, Lq, Lk (>= 1; H, head_dim >= 0, 0 = unknown) and dtype given */
} pg_attn_layout;

/* An attention call's operands; a NULL tensor is not checked (absent), except q, k, v. */
typedef struct pg_attn_operands {
    pg_attn_layout layout;
    const pg_tensor *q, *k, *v;     /* PG_ATTN_HEADS, PG_ATTN_SAME */
    int64_t B, H, Lq, Lk, head_dim; /* PG_ATTN_SIZES */
    pg_dtype dtype;                 /* PG_ATTN_SIZES: what bias and dist_bias must be (else q's dtype) */
    const pg_tensor *mask;          /* (B, Lk) bool key mask */
    bool mask_packed;               /* mask (B0, Lk) with B0 dividing B instead */
    const pg_tensor *bias;          /* broadcastable to (B, H, Lq, Lk) (at most 4 dims, each 1 or equal) */
    const char *bias_name;          /* the bias in messages; NULL: "bias" */
    const pg_tensor *dist_bias;     /* (H, Lq + Lk - 1) */
    const pg_tensor *sep_q, *sep_k; /* (B, H, Lq) and (B, H, Lk), either or both (a separable bias) */
    const pg_tensor *rel_q, *rel_k; /* (B, H, Lq, Dh) and (H, Lq + Lk - 1, Dh), both or neither (PG_ATTN_HEADS) */
    const pg_tensor *pos_q, *pos_k; /* (B, Lp) of f32, f64 or i64 with Lp <= Lq (pos_q), <= Lk (pos_k) */
    bool self_attn;                 /* positions are named "pos" (else "pos_q", "pos_k") */
} pg_attn_operands;

/* Checks a's operands in the order above (q, k, v or the sizes, mask, positions,
 * bias, dist_bias, sep_q / sep_k, rel_q / rel_k), naming fn. 0, or -1 after one pg_graph_fail (also in
 * pg_last_error). fn or a NULL: -1 with a message naming pg_attn_check. */
int pg_attn_check(pg_graph *g, const char *fn, const pg_attn_operands *a);

#endif
