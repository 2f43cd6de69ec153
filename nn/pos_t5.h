/* posgrad nn: the T5 bucketed relative position bias, with the semantics of
 * x-transformers' RelativePositionBias (lucidrains/x-transformers,
 * x_transformers/x_transformers.py). docs/pos/t5.md has the whole story.
 *
 * A mod_bias scheme: with n = pos_q[i] - pos_k[j] (query minus key: n > 0 for
 * keys before the query),
 *
 *   bias[h, i, j] = scale * table[bucket(n), h]
 *
 * bucket(n) (num_buckets N, max_distance D), as x-transformers' _relative_position_bucket:
 *   bidirectional (causal false): N <- N / 2 (floor); keys after the query
 *     (n < 0) use buckets N.. 2N-1, the others 0..N-1; n <- |n|
 *   causal: n <- max(n, 0) (keys after the query share bucket 0 with n = 0)
 *   then with E = N / 2 (floor): n < E -> bucket n (exact);
 *   else E + trunc(log(n / E) / log(D / E) * (N - E)), at most N - 1,
 *   computed in float32 as the reference does (n.float(); torch.log; .long()).
 *
 * Positions: integer (i64), or float truncated toward zero per position as
 * torch's .long() (positions must be finite with |p| <= 2^53). The bias is not
 * differentiable in them. Defaults 0..Lq-1 / 0..Lk-1 (start-aligned, as every
 * posgrad scheme) or, end-aligned, Lk-Lq..Lk-1 / 0..Lk-1 (x-transformers'
 * forward(i, j)). Positions shorter than the sequence (left padding): the
 * un-positioned tokens get a zero bias row and column (as ALiBi, §7).
 *
 * Output of mod_bias / bias_table: (H, Lq, Lk) when both sides use default
 * positions, else (B, H, Lq, Lk).
 *
 * Parameter: "relative_attention_bias.weight" (num_buckets, heads), N(0, 1)
 * init (torch.nn.Embedding), the child module "relative_attention_bias". */
#ifndef PG_NN_POS_T5_H
#define PG_NN_POS_T5_H

#include "posmod.h"

typedef enum {
    PG_T5_ALIGN_START = 0, /* default positions: queries 0..Lq-1, keys 0..Lk-1 */
    PG_T5_ALIGN_END = 1    /* queries Lk-Lq..Lk-1 (the last Lq keys), keys 0..Lk-1 (x-transformers) */
} pg_t5_align;

/* All-zero is the default: 32 buckets, max_distance 128, bidirectional,
 * scale sqrt(head_dim) (x-transformers' Attention), start-aligned. */
typedef struct pg_t5_opts {
    int64_t heads;        /* 0: the attention's (args.heads) */
    int64_t num_buckets;  /* 0: 32; >= 2 causal, >= 4 bidirectional */
    int64_t max_distance; /* 0: 128; > the exact range E (see above) */
    bool causal;          /* causal buckets (x-transformers passes its attention's causal) */
    double scale;         /* the bias multiplier; 0: sqrt(head_dim) as x-transformers' Attention does */
    pg_t5_align align;
} pg_t5_opts;


typedef struct pg_t5 {
    pg_posmod pm;                     /* first: &t->pm.base is the module */
    int64_t heads, num_buckets, max_distance;
    bool causal;
    double scale;
    pg_t5_align align;
    pg_embed *relative_attention_bias; /* child: weight (num_buckets, heads) */
} pg_t5;

/* The bucket of relative position n = q_pos - k_pos (x-transformers'
 * _relative_position_bucket with relative_position = k_pos - q_pos = -n).
 * Options must be valid (as pg_t5_new checks). */
int64_t pg_t5_bucket(int64_t n, bool causal, int64_t num_buckets, int64_t max_distance);

/* T5 bias for `heads` heads of width head_dim (used only for the default
 * scale); o NULL: defaults; table in dtype drawn from r. NULL + error. */
pg_posmod *pg_t5_new(int64_t heads, int64_t head_dim, const pg_t5_opts *o, pg_dtype dtype, pg_rng *r);
/* The registered constructor ("t5"): heads / head_dim / dtype / rng from a. */
pg_posmod *pg_posmod_make_t5(const pg_posmod_args *a);

#endif
