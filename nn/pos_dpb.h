/* posgrad nn: dynamic position bias (DPB), a mod_bias positional scheme
 * (docs/semantics.md §1.8 bio-attention, §4.1 x-transformers, §3.2 zeta,
 * corrected per §7). docs/pos/dpb.md has the whole story.
 *
 * An MLP maps each relative distance to one bias per head:
 *
 *   r      = pos_q[i] - pos_k[j]                       (query minus key)
 *   t      = r | |r| | sign(r) log(|r| + 1)            (opts.distance)
 *   b[h]   = MLP(t / divisor)[h]                        (divisor: divide or max(exp(div), 1e-8))
 *   bias   = -b (bio, PG_DPB_SUBTRACT) or +b (x-transformers, zeta, PG_DPB_ADD)
 *
 * The MLP layout (opts.layout), with its PyTorch parameter names:
 *   PG_DPB_LAYOUT_BIO   mlp.0.0 Linear(1, d) [mlp.0.1 LayerNorm(d)]
 *                       { silu, mlp.l.1 Linear(d, d) [mlp.l.2 LayerNorm(d)] } l = 1..depth-1
 *                       mlp.{depth} Linear(d, heads)            (no activation before it)
 *   PG_DPB_LAYOUT_XT    mlp.0.0 Linear(1, d) [mlp.0.1.gamma: bias-free LayerNorm] silu
 *                       { mlp.l.0 Linear(d, d) [mlp.l.1 LayerNorm(d)] silu } l = 1..depth-1
 *                       mlp.{depth} Linear(d, heads)
 *   PG_DPB_LAYOUT_ZETA  mlp.0 Linear(1, d) silu { mlp.2l Linear(d, d) silu } mlp.{2 depth} Linear(d, heads)
 *                       (no norm; depth 2 is zeta's fixed MLP)
 * LayerNorms have eps 1e-5.
 *
 * Peers as configurations: pg_dpb_bio(), pg_dpb_xtransformers(depth, log_distance, norm),
 * pg_dpb_zeta() (see below).
 *
 * Positions: default 0..Lq-1 / 0..Lk-1 (start-aligned, bio) or, with end_aligned, the
 * queries are the last Lq of the Lk keys (query a at key position Lk - Lq + a, as
 * x-transformers and zeta). Explicit positions (B, Lp) f32 / f64 / i64; float positions
 * that require grad get gradients through the MLP. Lp < L (left padding): the leading
 * L - Lp tokens get a zero bias row / column (§7). With default positions the MLP runs
 * once per distinct distance (Lq + Lk - 1 of them) and the result is gathered; with
 * explicit positions once per (query, key) pair. */
#ifndef PG_NN_POS_DPB_H
#define PG_NN_POS_DPB_H

#include "posmod.h"

typedef enum { PG_DPB_LAYOUT_BIO = 0, PG_DPB_LAYOUT_XT = 1, PG_DPB_LAYOUT_ZETA = 2 } pg_dpb_layout;
typedef enum { PG_DPB_SIGNED = 0, PG_DPB_ABS = 1, PG_DPB_SIGNED_LOG = 2 } pg_dpb_distance;
typedef enum { PG_DPB_SUBTRACT = 0, PG_DPB_ADD = 1 } pg_dpb_sign;

#define PG_DPB_MAX_DEPTH 16

/* All-zero is bio-attention's DPB(dim, heads) with defaults. */
typedef struct pg_dpb_opts {
    int64_t hidden;           /* MLP width d; 0: the model dim (bio, zeta), max(dim / 4, 1) (x-transformers) */
    int depth;                /* hidden blocks, 1..PG_DPB_MAX_DEPTH; 0: 1 (bio) or 2 (x-transformers, zeta) */
    bool norm;                /* LayerNorms in the MLP (not with the zeta layout) */
    pg_dpb_layout layout;     /* default PG_DPB_LAYOUT_BIO */
    pg_dpb_distance distance; /* default PG_DPB_SIGNED */
    pg_dpb_sign sign;         /* default PG_DPB_SUBTRACT (bio) */
    bool end_aligned;         /* default positions when Lq != Lk: false start (bio), true end (x-transformers, zeta) */
    double divide;            /* > 0; 0 means 1 */
    bool learned_div;         /* parameter "div" = log(divide), divisor max(exp(div), 1e-8) */
} pg_dpb_opts;

/* bio-attention DPB(dim, heads, depth=1, norm=False): the zero options */
pg_dpb_opts pg_dpb_bio(void);
/* x-transformers DynamicPositionBias(dim, heads=, depth=, log_distance=, norm=): XT layout,
 * signed or signed-log distance, added, end-aligned */
pg_dpb_opts pg_dpb_xtransformers(int depth, bool log_distance, bool norm);
/* zeta DynamicPositionBias(dim, heads): ZETA layout depth 2, absolute distance, added, end-aligned */
pg_dpb_opts pg_dpb_zeta(void);

typedef struct pg_dpb {
    pg_posmod pm;
    pg_dpb_opts o;            /* resolved: hidden, depth, divide filled in */
    int64_t heads, hidden;
    pg_dtype dtype;
    pg_tensor *div;           /* learned divisor or NULL */
    pg_linear *lin[PG_DPB_MAX_DEPTH + 1]; /* depth hidden Linears, then the output Linear */
    pg_tensor *ln_w[PG_DPB_MAX_DEPTH], *ln_b[PG_DPB_MAX_DEPTH]; /* per block, NULL without norm / bias */
} pg_dpb;

/* The registered constructor ("dpb"): heads = a->heads, model dim a->dim, a->opts a
 * pg_dpb_opts (NULL: pg_dpb_bio()). */
pg_posmod *pg_posmod_make_dpb(const pg_posmod_args *a);
/* Typed constructor: hidden 0 resolves against dim as above. NULL + pg_last_error. */
pg_dpb *pg_dpb_new(int64_t dim, int64_t heads, const pg_dpb_opts *o, pg_dtype dtype, pg_rng *r);

/* The MLP on distances r (any shape, the module's float dtype; may require grad):
 * b = MLP(t(r) / divisor), shape r.shape + (heads), WITHOUT the sign. */
pg_tensor *pg_dpb_mlp(pg_graph *g, pg_posmod *m, pg_tensor *r);

/* zeta's / x-transformers' call form forward(i, j): i = the number of queries, j = the
 * number of keys (counts, not positions); the queries are the LAST i of the j key
 * positions (query a at key position j - i + a, whatever opts.end_aligned says).
 * Returns the (heads, i, j) bias, sign applied: out[h, a, b] = +-MLP(t(j - i + a - b) / divisor)[h].
 * i > j is allowed (the first queries then sit before key 0). g NULL: a heap tensor. */
pg_tensor *pg_dpb_bias_ij(pg_graph *g, pg_posmod *m, int64_t i, int64_t j);

#endif
