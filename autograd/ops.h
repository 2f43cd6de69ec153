/* posgrad's differentiable op set.
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
/* variance with `correction` subtracted from the count (0 biased, 1 unbiased) */
pg_tensor *pg_var(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, int correction, bool keepdim);
pg_tensor *pg_argmax(pg_graph *g, pg_tensor *x, int axis, bool keepdim); /* PG_I64, first maximum */
pg_tensor *pg_cumsum(pg_graph *g, pg_tensor *x, int axis);

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

#endif
