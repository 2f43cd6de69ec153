/* posgrad's differentiable op set (autograd/op_*.c; the fused attention kernel
 * is autograd/flash.h, user-written ops pg_custom in autograd/graph.h).
 *
 * Every op takes the graph first and returns a new tensor in it (g NULL: a
 * heap tensor the caller frees, nothing recorded). Bad arguments give NULL and
 * a message naming the op and the shapes (pg_graph_error, pg_last_error); an
 * op given a NULL tensor returns NULL, so a chain can be checked once at its
 * end. Float ops take f32 or f64 (both inputs the same dtype; no promotion).
 * Axes may be negative (counted from the end). Broadcasting follows NumPy.
 *
 * Gradient conventions (documented ties, as PyTorch):
 *   abs, sign, relu at 0: derivative 0 (relu) and sign(0) = 0 (abs);
 *   clamp(x, lo, hi): gradient passes where lo <= x <= hi (bounds included);
 *   maximum / minimum: on a tie each input gets half;
 *   max / min reductions: all of it to the first extremal element (flat order
 *   within the reduced axes), the one argmax returns;
 *   floor, round, sign, comparisons, argmax: no gradient (result does not
 *   require grad). */
#ifndef PG_OPS_H
#define PG_OPS_H

#include "graph.h"

/* ---- unary (autograd/op_unary.c) ---------------------------------------------- */
pg_tensor *pg_neg(pg_graph *g, pg_tensor *x);
pg_tensor *pg_abs(pg_graph *g, pg_tensor *x);
pg_tensor *pg_sign(pg_graph *g, pg_tensor *x);
pg_tensor *pg_exp(pg_graph *g, pg_tensor *x);
pg_tensor *pg_log(pg_graph *g, pg_tensor *x);
pg_tensor *pg_log1p(pg_graph *g, pg_tensor *x);
pg_tensor *pg_sqrt(pg_graph *g, pg_tensor *x);
pg_tensor *pg_rsqrt(pg_graph *g, pg_tensor *x);
pg_tensor *pg_square(pg_graph *g, pg_tensor *x);
pg_tensor *pg_sin(pg_graph *g, pg_tensor *x);
pg_tensor *pg_cos(pg_graph *g, pg_tensor *x);
pg_tensor *pg_tanh(pg_graph *g, pg_tensor *x);
pg_tensor *pg_sigmoid(pg_graph *g, pg_tensor *x);
pg_tensor *pg_relu(pg_graph *g, pg_tensor *x);
pg_tensor *pg_gelu(pg_graph *g, pg_tensor *x);      /* x * Phi(x), erf form */
pg_tensor *pg_gelu_tanh(pg_graph *g, pg_tensor *x); /* tanh approximation */
pg_tensor *pg_silu(pg_graph *g, pg_tensor *x);
pg_tensor *pg_softplus(pg_graph *g, pg_tensor *x);  /* log(1 + e^x); x above 20 passes through, as PyTorch */
pg_tensor *pg_clamp(pg_graph *g, pg_tensor *x, double lo, double hi); /* -INFINITY / INFINITY: one-sided */
pg_tensor *pg_pow_scalar(pg_graph *g, pg_tensor *x, double p);
pg_tensor *pg_add_scalar(pg_graph *g, pg_tensor *x, double c);
pg_tensor *pg_mul_scalar(pg_graph *g, pg_tensor *x, double c);
pg_tensor *pg_floor(pg_graph *g, pg_tensor *x); /* no gradient */
pg_tensor *pg_round(pg_graph *g, pg_tensor *x); /* half to even, as PyTorch; no gradient */

/* ---- binary, broadcasting (autograd/op_binary.c) ------------------------------ */
pg_tensor *pg_add(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_sub(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_mul(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_div(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_maximum(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_minimum(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_pow(pg_graph *g, pg_tensor *a, pg_tensor *b); /* d/db uses log(a); 0 where a == 0 */
/* x broadcast to `shape` (a copy); gradient sums back. */
pg_tensor *pg_broadcast_to(pg_graph *g, pg_tensor *x, int ndim, const int64_t *shape);

/* ---- masks (autograd/op_mask.c): comparisons give PG_BOOL ------------------------ */
pg_tensor *pg_eq(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_ne(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_lt(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_le(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_gt(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_ge(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_logical_and(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_logical_or(pg_graph *g, pg_tensor *a, pg_tensor *b);
pg_tensor *pg_logical_not(pg_graph *g, pg_tensor *a);
/* cond ? a : b, all three broadcast; gradient to a where cond, to b elsewhere. */
pg_tensor *pg_where(pg_graph *g, pg_tensor *cond, pg_tensor *a, pg_tensor *b);
/* x with `value` where mask (broadcast to x) is true; those entries get no gradient. */
pg_tensor *pg_masked_fill(pg_graph *g, pg_tensor *x, pg_tensor *mask, double value);
/* Lower / upper triangle of the last two dims (entries j - i > k, resp. < k, set to 0). */
pg_tensor *pg_tril(pg_graph *g, pg_tensor *x, int64_t k);
pg_tensor *pg_triu(pg_graph *g, pg_tensor *x, int64_t k);

/* ---- reductions (autograd/op_reduce.c) ---------------------------------------------
 * axes: n_axes distinct axes; n_axes 0 (axes may be NULL) reduces over all.
 * Without keepdim the reduced axes are removed (all of them: a 0-dim scalar). */
pg_tensor *pg_sum(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim);
pg_tensor *pg_mean(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim);
pg_tensor *pg_max(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim);
pg_tensor *pg_min(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim);
pg_tensor *pg_logsumexp(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim);
/* variance: sum (x - mean)^2 / (n - correction) over the n reduced elements
 * (correction 0 biased, 1 unbiased). Needs 0 <= correction < n, at least one
 * degree of freedom: a negative correction, or correction >= n (e.g.
 * correction 1 over a size-1 axis), is an error naming both, where PyTorch
 * warns and returns inf or NaN. Reducing nothing (n == 0) gives NaN, as
 * pg_mean, for any correction >= 0. */
pg_tensor *pg_var(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, int correction, bool keepdim);
pg_tensor *pg_argmax(pg_graph *g, pg_tensor *x, int axis, bool keepdim); /* PG_I64, first maximum */
pg_tensor *pg_cumsum(pg_graph *g, pg_tensor *x, int axis);
/* the suffix sums y[..., i, ...] = sum over j >= i of x[..., j, ...] (torch: x.flip(a).cumsum(a).flip(a)) */
pg_tensor *pg_cumsum_reverse(pg_graph *g, pg_tensor *x, int axis);

/* ---- matmul (autograd/op_matmul.c) -----------------------------------------------
 * a: (..., M, K) (or (..., K, M) with trans_a), b: (..., K, N) (or (..., N, K)
 * with trans_b); batch dims broadcast; out (..., M, N). Both at least 2-D. */
pg_tensor *pg_matmul(pg_graph *g, pg_tensor *a, pg_tensor *b, bool trans_a, bool trans_b);
/* The Linear layer's product, one op: y = x W^T + b for x (..., K), weight (N, K),
 * bias (N) or NULL; y (..., N). */
pg_tensor *pg_affine(pg_graph *g, pg_tensor *x, pg_tensor *weight, pg_tensor *bias);

/* ---- softmax and norms (autograd/op_softmax.c, op_norm.c) ---------------------------
 * A row that is all -inf gives zeros (softmax) or -inf (log_softmax) and
 * zero gradient, never NaN. */
pg_tensor *pg_softmax(pg_graph *g, pg_tensor *x, int axis);
pg_tensor *pg_log_softmax(pg_graph *g, pg_tensor *x, int axis);
/* Normalises over the last norm_ndim dims; weight and bias (shape of those
 * dims) may be NULL. Biased variance, as torch.nn.LayerNorm. */
pg_tensor *pg_layer_norm(pg_graph *g, pg_tensor *x, int norm_ndim, pg_tensor *weight, pg_tensor *bias,
                         double eps);
/* x / sqrt(mean(x^2) + eps) * weight over the last norm_ndim dims (weight may be NULL). */
pg_tensor *pg_rms_norm(pg_graph *g, pg_tensor *x, int norm_ndim, pg_tensor *weight, double eps);

/* ---- copy, cast, reshape (autograd/op_copy.c); the gradient is the identity ----------- */
/* Differentiable copy and dtype cast (gradient flows back, cast to the input's dtype). */
pg_tensor *pg_copy(pg_graph *g, pg_tensor *x);
pg_tensor *pg_cast(pg_graph *g, pg_tensor *x, pg_dtype dtype);
/* Shares storage with x; differentiable. */
pg_tensor *pg_reshape(pg_graph *g, pg_tensor *x, int ndim, const int64_t *shape);

/* ---- shape and indexing (autograd/op_shape.c, op_index.c); any dtype --------------- */
pg_tensor *pg_permute(pg_graph *g, pg_tensor *x, const int *perm); /* x->ndim entries */
pg_tensor *pg_transpose(pg_graph *g, pg_tensor *x, int axis0, int axis1);
/* Python slicing x[start:end:step] on one axis: negative start/end count from
 * the end, both clamped to the axis; step >= 1. */
pg_tensor *pg_slice(pg_graph *g, pg_tensor *x, int axis, int64_t start, int64_t end, int64_t step);
pg_tensor *pg_narrow(pg_graph *g, pg_tensor *x, int axis, int64_t start, int64_t length);
pg_tensor *pg_concat(pg_graph *g, int n, pg_tensor *const *xs, int axis);
pg_tensor *pg_stack(pg_graph *g, int n, pg_tensor *const *xs, int axis);
/* Pads one axis with `value`: `before` entries in front, `after` behind. A
 * negative amount crops that side instead (as torch.nn.functional.pad). */
pg_tensor *pg_pad(pg_graph *g, pg_tensor *x, int axis, int64_t before, int64_t after, double value);
/* Attention heads (autograd/op_heads.c), one copy each way:
 * pg_split_heads: x (B, L, W) -> (B, heads, L, head_dim), y[b, h, l, d] = x[b, l, offset + h head_dim + d]
 * (needs offset + heads head_dim <= W); pg_merge_heads: x (B, H, L, Dh) -> (B, L, H Dh). */
pg_tensor *pg_split_heads(pg_graph *g, pg_tensor *x, int64_t offset, int64_t heads, int64_t head_dim);
pg_tensor *pg_merge_heads(pg_graph *g, pg_tensor *x);
/* Rotary rotation of channel pairs (autograd/op_rotate.c): t (B, H, L, Dh), cos and
 * sin (1 or B, 1, L, R) with 1 <= R <= Dh / 2; pair i is channels (i, R + i), or
 * (2i, 2i + 1) when interleaved: y_a = x_a cos - x_b sin, y_b = x_b cos + x_a sin;
 * channels 2R .. Dh - 1 pass through. Gradients reach t, cos and sin. */
pg_tensor *pg_rotate_pairs(pg_graph *g, pg_tensor *t, pg_tensor *cos, pg_tensor *sin, bool interleaved);
/* Transformer-XL's relative-to-absolute shift (autograd/op_relshift.c): x (..., Lq,
 * Lq + Lk - 1) of scores per distance t - (Lk - 1) -> y (..., Lq, Lk) with
 * y[..., a, b] = x[..., a, a - b + Lk - 1]. */
pg_tensor *pg_rel_shift(pg_graph *g, pg_tensor *x, int64_t Lk);
/* torch.gather: out[i][j] = x[index[i][j]][j] for axis 0; out has index's shape. */
pg_tensor *pg_gather(pg_graph *g, pg_tensor *x, int axis, pg_tensor *index);
/* z (..., n) read at fractional positions p (..., m), same leading dims, every p in
 * [0, n - 1] (autograd/op_lerp.c): out[..., j] = z[f] + w (z[c] - z[f]), f = floor p_j,
 * c = min(f + 1, n - 1), w = p_j - f (CoPE's interpolation). Gradients reach z and p
 * (dp = z[c] - z[f]: the right-hand slope at an integer p). */
pg_tensor *pg_gather_lerp(pg_graph *g, pg_tensor *z, pg_tensor *p);
/* CoPE's bias from the logits in one op (autograd/op_cope.c, docs/pos/cope.md (1)-(4)):
 * logits (B, H, Lq, Lk), z (B, H, Lq, n), key_mask (B, Lk) bool or NULL (false: hidden).
 * g_ij = sigmoid(in_scale logits_ij), 0 where key j is hidden from query i (the key mask,
 * or causal and j > i); p_ij = min(sum_{t >= j} g_it, n - 1); out_ij = out_scale times
 * z_i read at p_ij as pg_gather_lerp reads it. The same bits as that chain of ops
 * (mul_scalar, sigmoid, masked_fill, cumsum_reverse, clamp, gather_lerp, mul_scalar);
 * gradients reach logits and z. A NaN logit (of a visible key) makes the bias NaN at
 * it and at the keys before it in its row (their sums include it). */
pg_tensor *pg_cope_interp(pg_graph *g, pg_tensor *logits, pg_tensor *z, pg_tensor *key_mask, bool causal,
                          double in_scale, double out_scale);
/* Attention with CoPE's bias in one op (autograd/op_cope_attn.c, docs/pos/cope.md):
 *   out = softmax(scale q k^T + bias, hidden entries -inf) v,
 *   bias = pg_cope_interp(q g^T, q E, mask, causal, scale, out_scale), g = k, or v with
 *   gates_from_values,
 * q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv) (Dv = D with gates_from_values),
 * pos_emb E (D, n), or (n, D) with emb_by_position (leading dims of 1 allowed: CoPE's
 * (1, D, n)), one float dtype; hidden entries as pg_flash_attention's (the key mask,
 * causal j > i), a query that sees no key gives 0. The chain pg_matmul (q E, q g^T),
 * pg_cope_interp, pg_flash_attention (pair_bias) to rounding, without any Lq x Lk or
 * Lq x n tensor: a block of queries at a time, memory linear in L, the same bits for any
 * thread count. Gradients reach q, k, v and E. g NULL: a heap result the caller frees,
 * nothing recorded. */
typedef struct pg_cope_attn_opts {
    double scale;           /* of q k^T and of the gates' logits; 0: 1 / sqrt(D) */
    double out_scale;       /* the bias's factor (CoPE's RAM convention: scale; x-transformers: 1) */
    bool causal;            /* hide key j from query i when j > i */
    pg_tensor *mask;        /* (B, Lk) bool, false = hidden; NULL: none */
    bool gates_from_values; /* the gates read q . v_j instead of q . k_j */
    bool emb_by_position;   /* pos_emb is (n, D) (x-transformers' layout), not (D, n) */
} pg_cope_attn_opts;
pg_tensor *pg_cope_attention(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *pos_emb,
                             const pg_cope_attn_opts *o);
/* A two-layer ReLU MLP applied to every scalar of u (autograd/op_mlp.c; FIRE's MLP,
 * docs/pos/fire.md (3)): u (B, R), w0 (F, 1), b0 (F) or NULL, w2 (H, F), b2 (H) or
 * NULL (the weights of Linear(1, F) and Linear(F, H)), out (B, H, R):
 *   out[b, h, r] = b2[h] + sum_k w2[h, k] relu(w0[k] u[b, r] + b0[k]).
 * The chain pg_affine, pg_relu, pg_affine, permute in one pass without the (B, R, F)
 * activations; its values to rounding (sums in another order). Gradients reach all
 * five, the same bits for any thread count. */
pg_tensor *pg_scalar_mlp(pg_graph *g, pg_tensor *u, pg_tensor *w0, pg_tensor *b0, pg_tensor *w2, pg_tensor *b2);
/* Entries of x along `axis` at the 1-D PG_I64 `index`. */
pg_tensor *pg_index_select(pg_graph *g, pg_tensor *x, int axis, pg_tensor *index);
/* Rows of table (V, D) at ids (any shape, PG_I64): out ids.shape + (D). */
pg_tensor *pg_embedding(pg_graph *g, pg_tensor *table, pg_tensor *ids);
/* torch.scatter_add: x + src scattered along axis at index. index (PG_I64) has x's
 * ndim and is no larger than src, nor than x off the axis (as torch). */
pg_tensor *pg_scatter_add(pg_graph *g, pg_tensor *x, int axis, pg_tensor *index, pg_tensor *src);

/* ---- losses and regularisers (autograd/op_loss.c) --------------------------------------
 * logits (..., C), targets PG_I64 (...). Mean over targets != ignore_index of
 * -log softmax(logits)[target], with label smoothing s as torch:
 * (1 - s) * nll + s * mean_c(-log p_c). All targets ignored: 0 (not NaN). */
pg_tensor *pg_cross_entropy(pg_graph *g, pg_tensor *logits, pg_tensor *targets, int64_t ignore_index,
                            double label_smoothing);
/* training: zero with probability p, scale the rest by 1/(1-p), mask drawn
 * from r; not training (or p == 0): x itself. */
pg_tensor *pg_dropout(pg_graph *g, pg_tensor *x, double p, bool training, pg_rng *r);

/* How a loss reduces its per-element values (torch's reduction=): MEAN (the
 * zero value, torch's default), SUM (both give a 0-dim tensor), or NONE (the
 * per-element losses, shaped as below). The reduction is always the last
 * argument. */
typedef enum { PG_REDUCE_MEAN = 0, PG_REDUCE_SUM = 1, PG_REDUCE_NONE = 2 } pg_reduction;

/* ---- regression losses (autograd/op_loss_extra.c) ----------------------------------------
 * input and target: one float dtype and the same shape (torch broadcasts them
 * with a warning; here a shape mismatch is an error). With d = input - target,
 * per element (torch.nn.functional's definitions):
 *   mse        d^2
 *   l1         |d|                                         d/dd: sign(d), 0 at d = 0 (as torch)
 *   smooth_l1  |d| < beta ? 0.5 d^2 / beta : |d| - beta/2  beta >= 0; beta = 0 is l1 (as torch)
 *   huber      |d| < delta ? 0.5 d^2 : delta (|d| - delta/2)  delta > 0  (= delta * smooth_l1(beta = delta))
 * MEAN divides the sum by the element count (an empty input gives NaN, as
 * torch). Gradients reach input and target (d/dtarget = -d/dinput). Kinks:
 * l1's derivative jumps at d = 0; smooth_l1 and huber are once differentiable,
 * their second derivative jumps at |d| = beta / delta, where the gradient is
 * +-1 (+-delta), the value both sides agree on. */
pg_tensor *pg_mse_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, pg_reduction r);
pg_tensor *pg_l1_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, pg_reduction r);
pg_tensor *pg_smooth_l1_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, double beta, pg_reduction r);
pg_tensor *pg_huber_loss(pg_graph *g, pg_tensor *input, pg_tensor *target, double delta, pg_reduction r);

/* torch's binary_cross_entropy_with_logits (autograd/op_loss_extra.c): logits x
 * and target y (probabilities, usually 0 or 1) of one float dtype and shape;
 * weight w and pos_weight p (either may be NULL) of that dtype, each
 * broadcasting to x's shape (pos_weight typically (C) against (..., C)):
 *   loss = w [(1 - y) x + (1 + (p - 1) y) log(1 + e^-x)]
 * in torch's stable form (log(1 + e^-x) = m + log(e^-m + e^(-x-m)), m = max(-x, 0)),
 * so logits of any size give finite values. MEAN divides by the element count
 * (not by the weights). Gradients reach x and y; weight and pos_weight get none
 * (as torch): recording with one of them requiring grad is an error. */
pg_tensor *pg_bce_with_logits(pg_graph *g, pg_tensor *logits, pg_tensor *target, pg_tensor *weight,
                              pg_tensor *pos_weight, pg_reduction r);

/* torch's nll_loss (autograd/op_loss.c) on log-probabilities, with
 * pg_cross_entropy's conventions: log_probs (..., C) with the classes on the
 * LAST axis (torch puts them at dim 1; the same for 1-D and 2-D inputs),
 * targets PG_I64 (...), entries equal to ignore_index skipped (torch's default
 * is -100), others in [0, C). weight: (C) of log_probs' dtype, or NULL (all 1).
 * Per target: -weight[t] * log_probs[..., t] (0 where ignored); NONE gives those
 * (targets' shape), SUM their sum, MEAN their sum divided by the sum of
 * weight[t] over the kept targets; a total weight of 0 (e.g. every target
 * ignored) gives 0 and zero gradient, as pg_cross_entropy (torch: NaN).
 * Gradient to log_probs only (weight: none, as torch; an error when recording
 * with a weight that requires grad). nll_loss(log_softmax(x)) is cross_entropy(x). */
pg_tensor *pg_nll_loss(pg_graph *g, pg_tensor *log_probs, pg_tensor *targets, pg_tensor *weight,
                       int64_t ignore_index, pg_reduction r);

#endif
