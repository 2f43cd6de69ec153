/* posgrad nn: Sandwich, the parameter-free sinusoidal logits bias (Chi et al.
 * 2023; NVIDIA NeMo SandwichRelativePositionEmbedding). docs/pos/sandwich.md has
 * the whole story.
 *
 * A distance-only logits bias: for heads h = 1..H (1-based), query i and key j,
 * with delta = pos_q[i] - pos_k[j] and d = |delta| (dist ABS, the default) or
 * max(delta, 0) (dist TRIL, NeMo's causal tril: 0 for keys after the query),
 *
 *   b_h(d) = [ sum_{k=1..D'/2} cos(d w_k) - D'/2 ] / (scale h / H),
 *   w_k = base^(-2k / D')                                (docs/pos/sandwich.md, (1))
 *
 * the inner product of the sinusoidal embeddings of two positions d apart,
 * minus its maximum D'/2: b(0) = 0, b <= 0. Defaults: D' = the head dim,
 * base 10000, scale 8 (NeMo). No parameters; positions are data (not
 * differentiable).
 *
 * Default positions: queries Lk-Lq..Lk-1, keys 0..Lk-1 (end-aligned).
 * Positions shorter than the sequence: zero bias rows and columns for the
 * un-positioned tokens. Output of mod_bias / bias_table: (H, Lq, Lk) with default
 * positions on both sides, else (B, H, Lq, Lk); dist_bias: (H, D). */
#ifndef PG_NN_POS_SANDWICH_H
#define PG_NN_POS_SANDWICH_H

#include "posmod.h"

typedef enum {
    PG_SANDWICH_DIST_ABS = 0, /* d = |pos_q - pos_k| (NeMo bidirectional) */
    PG_SANDWICH_DIST_TRIL = 1 /* d = max(pos_q - pos_k, 0) (NeMo causal: 0 above the diagonal) */
} pg_sandwich_dist;

/* All-zero is the default: D' = head_dim, base 10000, scale 8, |d|. */
typedef struct pg_sandwich_opts {
    int64_t heads; /* H; 0: the attention's (args.heads) */
    int64_t dim;   /* D' (NeMo's hidden_size), even >= 2; 0: the head dim */
    double base;   /* > 0, finite; 0 means 10000 */
    double scale;  /* the 8 of 8h / H, > 0, finite; 0 means 8 */
    pg_sandwich_dist dist;
} pg_sandwich_opts;

typedef struct pg_sandwich {
    pg_posmod pm; /* first: &s->pm.base is the module */
    int64_t heads, dim;
    double base, scale;
    pg_sandwich_dist dist;
} pg_sandwich;

/* Sandwich for `heads` heads of head_dim channels (o->dim, when nonzero, is used
 * instead of head_dim; o->heads, when nonzero, must agree); o NULL: defaults.
 * NULL + error on bad options. */
pg_posmod *pg_sandwich_new(int64_t heads, int64_t head_dim, const pg_sandwich_opts *o);
/* The registered constructor ("sandwich"): heads from o->heads or a->heads,
 * D' from o->dim or a->head_dim. */
pg_posmod *pg_posmod_make_sandwich(const pg_posmod_args *a);

/* b_h(d) of (1) for one head h (0-based here: h = 0..H-1 is NeMo's 1..H) and a
 * distance d >= 0 (the caller applies |.| or max(., 0)). */
double pg_sandwich_value(const pg_sandwich *s, int64_t h, double d);

#endif
