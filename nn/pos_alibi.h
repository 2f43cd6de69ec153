/* posgrad nn: ALiBi, the attention-with-linear-biases positional scheme
 * (docs/semantics.md §0.1, §1.7 bio-attention ALiBi, §4.2 x-transformers
 * AlibiPositionalBias, corrected per §7). docs/pos/alibi.md has the whole story.
 *
 * A mod_bias scheme: for heads h = 0..H-1, query i and key j,
 *
 *   raw[h, i, j]  = (pos_q[i] - pos_k[j]) * slope[h] / divisor
 *   bias[h, i, j] = -|raw[h, i, j]|
 *
 * asymmetric (bio): pairs of heads share the even head's slope; even heads
 * hide keys before the query (raw > 0), odd heads keys after it (raw < 0), by
 * setting those entries to exactly -FMAX (-1.7976931348623157e308, finite).
 *
 * Slopes (§0.1) for the first use_heads heads, 0 for the others (no bias).
 * Positions: the context's (float positions are differentiable; int positions
 * are cast), or the defaults 0..Lq-1 / 0..Lk-1 (start-aligned, bio) or
 * Lk-Lq..Lk-1 / 0..Lk-1 (end-aligned, x-transformers' forward(i, j)).
 * Positions shorter than the sequence (left padding): the un-positioned tokens
 * get a zero bias row and column (§7).
 *
 * Output of mod_bias / bias_table: (H, Lq, Lk) when both sides use default
 * positions, else (B, H, Lq, Lk).
 *
 * Parameter: "div" (0-dim, only with div.learned): effective divisor
 * max(exp(div), 1e-8), initialised to log(divide). */
#ifndef PG_NN_POS_ALIBI_H
#define PG_NN_POS_ALIBI_H

#include "posmod.h"

/* Default positions when the query and key counts differ (explicit positions
 * are used as given). */
typedef enum {
    PG_ALIBI_ALIGN_START = 0, /* queries 0..Lq-1, keys 0..Lk-1 (bio-attention) */
    PG_ALIBI_ALIGN_END = 1    /* queries Lk-Lq..Lk-1 (the last Lq keys), keys 0..Lk-1 (x-transformers) */
} pg_alibi_align;

/* All-zero is the default: every head biased, §0.1 slopes, symmetric, start-aligned, divide 1. */
typedef struct pg_alibi_opts {
    int64_t heads;         /* total heads H (bio n_heads, x-transformers total_heads); 0: the attention's (args.heads) */
    int64_t use_heads;     /* heads that get a slope, the first ones (bio use_n_heads, x-transformers heads);
                              0: all H; the others get slope 0 (no bias) */
    const double *slopes;  /* use_heads custom slopes (x-transformers `slopes`), copied; NULL: §0.1 */
    bool asymmetric;       /* bio's asymmetric ALiBi (pairs of heads look back / forward) */
    pg_alibi_align align;  /* default positions when Lq != Lk */
    pg_pos_divide div;     /* divide (0 means 1) and learned_div */
} pg_alibi_opts;

typedef struct pg_alibi {
    pg_posmod pm;          /* first: &a->pm.base is the module */
    int64_t heads, use_heads;
    double *slopes;        /* heads entries: the effective slope of each head (asymmetric pairing applied, zeros) */
    bool asymmetric;
    pg_alibi_align align;
    double divide;         /* the constant divisor (when not learned) */
    pg_tensor *div;        /* the "div" parameter, or NULL */
} pg_alibi;

/* §0.1: the ALiBi slopes for n >= 1 heads into out[0..n). 0, or -1 with an error. */
int pg_alibi_slopes(int64_t n, double *out);

/* ALiBi for `heads` heads (o->heads, when nonzero, must agree); o NULL: defaults.
 * dtype: of the "div" parameter. NULL + error on bad options. */
pg_posmod *pg_alibi_new(int64_t heads, const pg_alibi_opts *o, pg_dtype dtype);
/* The registered constructor ("alibi"): heads from o->heads or a->heads, dtype a->dtype. */
pg_posmod *pg_posmod_make_alibi(const pg_posmod_args *a);

#endif
