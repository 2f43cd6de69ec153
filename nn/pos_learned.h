/* posgrad nn: learned absolute encodings, mod_x schemes (docs/pos/absolute.md).
 *
 * LearnedVocab (docs/semantics.md §1.4, bio-attention's LearnedVocab), registered as
 * "learned": a table of max_seq_len learned rows, pe[t] = emb.weight[pos[t]] (optionally
 * scaled and l2-normalised: pg_learned_opts.scale, .l2norm, as x-transformers).
 *   Parameter "emb.weight" (max_seq_len, dim), N(0, 1) init. Positions: NULL = 0..L-1 or
 *   (B, Lp) i64 in [0, max_seq_len); float positions are an error (the table is discrete).
 *   No divide option.
 *
 * LearnedContinuous (§1.5, bio-attention's LearnedContinuous), registered as "continuous":
 *   an MLP of the scalar position, pe[t] = MLP(pos[t] / divisor):
 *     block 0:            Linear(1 -> dim)   "mlp.0.0.weight" (dim, 1), "mlp.0.0.bias" (dim)
 *                         [LayerNorm(dim)    "mlp.0.1.weight", "mlp.0.1.bias"   if norm]
 *     block l = 1..depth-1: silu -> Linear(dim -> dim) "mlp.l.1.*" [-> LayerNorm "mlp.l.2.*" if norm]
 *   no activation after the last block (depth 1 is an affine map of the position, plus LN).
 *   PyTorch default inits (Linear U(-1/sqrt(in), 1/sqrt(in)); LayerNorm eps 1e-5, w 1, b 0).
 *   Positions: NULL = 0..L-1, (B, Lp) f32 / f64 (differentiable) or i64. The divisor is
 *   `divide`, or with learned_div max(exp(div), 1e-8), parameter "div" = log(divide).
 *
 * Both: out = x + pe with pe zero for the first L - Lp tokens (left padding) and, unless
 * ignore_mask, for tokens whose key-mask entry is false. pg_posmod_args.dim is the width
 * of x. */
#ifndef PG_NN_POS_LEARNED_H
#define PG_NN_POS_LEARNED_H

#include "posmod.h"

/* ---- LearnedVocab ---------------------------------------------------------------------- */
typedef struct pg_learned_opts {
    int64_t max_seq_len; /* rows of the table; 0: pg_posmod_args.max_len (which must then be > 0) */
    bool ignore_mask;    /* true: masked tokens still get their row. Default false */
    /* x-transformers' AbsolutePositionalEmbedding: pe[t] = emb.weight[pos[t]] * scale, then
     * pe[t] / max(||pe[t]||_2, 1e-12) when l2norm (their l2norm_embed, which sets scale 1).
     * Theirs: scale = dim^-0.5 (pow(dim, -0.5)). */
    double scale;        /* finite, >= 0; 0 means 1 (no scaling, posgrad's and nanoGPT's). Default 1 */
    bool l2norm;         /* Default false */
} pg_learned_opts;

/* The registry constructor ("learned"): a->dim, a->max_len, a->dtype, a->rng (NULL: seed 0),
 * a->opts a pg_learned_opts or NULL. */
pg_posmod *pg_posmod_make_learned(const pg_posmod_args *a);
/* Typed constructor (o NULL: defaults, o->max_seq_len ignored in favour of max_seq_len). */
pg_posmod *pg_learned_new(int64_t dim, int64_t max_seq_len, const pg_learned_opts *o, pg_dtype dtype, pg_rng *r);

/* ---- LearnedContinuous ------------------------------------------------------------------ */
typedef struct pg_continuous_opts {
    int depth;         /* MLP blocks >= 1; 0 means 1. Default 1 */
    bool norm;         /* LayerNorm after every Linear. Default false */
    double divide;     /* > 0; 0 means 1. Default 1 */
    bool learned_div;  /* parameter "div". Default false */
    bool ignore_mask;  /* Default false */
} pg_continuous_opts;

/* {depth 1, norm false, divide 1, learned_div false, ignore_mask false} */
pg_continuous_opts pg_continuous_defaults(void);
/* The registry constructor ("continuous"): a->dim, a->dtype, a->rng (NULL: seed 0), a->opts. */
pg_posmod *pg_posmod_make_continuous(const pg_posmod_args *a);
pg_posmod *pg_continuous_new(int64_t dim, const pg_continuous_opts *o, pg_dtype dtype, pg_rng *r);

#endif
