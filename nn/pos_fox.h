/* posgrad nn: the forgetting gate (FoX, Lin et al. 2025) and x-transformers'
 * data-dependent ALiBi. docs/pos/fox.md has the whole story.
 *
 * A logits bias computed from the tokens, not from their positions: for the
 * attention's input x (B, L, dim) (after the block's pre-norm), head h and
 * token t (docs/pos/fox.md, equations (1)-(3))
 *
 *   (1) z_t^h     = w_h . x_t + b_h                         fgate_proj: Linear(dim -> H)
 *   (2) c_t^h     = sum_{l <= t} s * log sigmoid(z_l^h)     s = post_log_scale
 *   (3) bias_hij  = c_i^h - c_j^h                           (<= 0 for j <= i)
 *
 * log sigmoid(z) = -softplus(-z). Bidirectional (opts.bidirectional):
 * fgate_proj is Linear(dim -> 2H), the first H outputs give c, the last H give
 * c', and
 *
 *   (4) bias_hij  = c_i^h - c_j^h (j <= i),   c'_j^h - c'_i^h (j > i)
 *
 * (x-transformers' tril(c_i - c_j) + triu(c'_j - c'_i)). A one-directional
 * module in attention that is not causal is an error: its bias above the
 * diagonal is positive and grows with the distance.
 *
 * Parameters: fgate_proj.weight (G, dim) ~ N(0, 0.02), fgate_proj.bias (G) = 0
 * (PG_FOX_INIT_FOX) or 5 (PG_FOX_INIT_DD_ALIBI: sigmoid(5) ~ 0.993, gates start
 * nearly open), G = H or 2H. The bias reads x: mod_bias needs pg_pos_ctx.x
 * (MultiheadAttention gives it; other callers must) and self-attention.
 *
 * Positions: their values are not used. Positions shorter than the sequence
 * (left padding, Lp < L): the first L - Lp tokens contribute no gate (log f = 0),
 * so the positioned tokens are gated as if the sequence began at them. Key
 * padding (pg_pos_ctx.mask) is the attention's business: masked keys are hidden,
 * their gates still count between the tokens around them. Output of mod_bias:
 * (B, H, L, L). The one-directional module also has sep_bias (c as (B, H, L)
 * for both sides): MultiheadAttention's fused kernel adds c_i - c_j per tile,
 * memory linear in L (docs/pos/fox.md, "The fused path"). */
#ifndef PG_NN_POS_FOX_H
#define PG_NN_POS_FOX_H

#include "posmod.h"

typedef enum {
    PG_FOX_INIT_FOX = 0,     /* fgate_proj.bias = 0 (zhixuan-lin/forgetting-transformer) */
    PG_FOX_INIT_DD_ALIBI = 1 /* fgate_proj.bias = 5 (x-transformers DataDependentAlibi) */
} pg_fox_init;

/* All-zero is the default: FoX's init, post_log_scale 1, causal gates. */
typedef struct pg_fox_opts {
    int64_t heads;         /* H; 0: the attention's (args.heads) */
    int64_t dim;           /* width of x; 0: the model's (args.dim) */
    pg_fox_init init;
    double post_log_scale; /* s in (2), finite and > 0; 0 means 1 */
    bool bidirectional;    /* (4): a second gate for keys after the query (x-transformers causal=False) */
} pg_fox_opts;

typedef struct pg_fox {
    pg_posmod pm; /* first: &f->pm.base is the module */
    int64_t heads, dim;
    double post_log_scale;
    bool bidirectional;
    pg_linear *fgate_proj; /* child "fgate_proj": weight (G, dim), bias (G), G = H or 2H */
} pg_fox;

/* The gate for `heads` heads on inputs of width `dim` (o->heads, o->dim, when
 * nonzero, must agree); o NULL: defaults. dtype: of the parameters; r: the
 * weight's initial values (required). NULL + error on bad options. */
pg_posmod *pg_fox_new(int64_t heads, int64_t dim, const pg_fox_opts *o, pg_dtype dtype, pg_rng *r);
/* The registered constructor ("fox"): heads from o->heads or a->heads, dim from
 * o->dim or a->dim, dtype a->dtype, initial values from a->rng. */
pg_posmod *pg_posmod_make_fox(const pg_posmod_args *a);

/* c of (2) for x (B, L, dim): (B, G, L), differentiable in x and fgate_proj.
 * pad_front: leading tokens without a gate (left padding, 0 <= pad_front <= L). */
pg_tensor *pg_fox_cumulative(pg_graph *g, pg_posmod *m, pg_tensor *x, int64_t pad_front);

#endif
