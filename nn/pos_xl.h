/* posgrad nn: Transformer-XL relative position bias (Dai et al. 2019), a mod_bias
 * positional scheme (docs/semantics.md §1.9 describes bio-attention's XL and
 * its bugs; posgrad follows §7). docs/pos/xl.md has the whole story.
 *
 * Per head n, query i, key j, with q, k the head's projected vectors (width H):
 *
 *   logit[i, j] = ((q_i + u) . k_j + (q_i + v) . r_ij) * s
 *   r_ij        = (W_R R(Delta_ij / divisor))[n]     Delta = pos_q[i] - pos_k[j]
 *   R(t)[m]     = sin(t f_m), cos(t f_m),  f_m = 10000^(-2m / r_dim), m < r_dim / 2
 *
 * s is the attention's scale (pg_pos_ctx.scale, 1/sqrt(H) by default). The attention
 * computes q.k*s itself; this module's mod_bias returns the rest,
 *
 *   bias[b, n, i, j] = (u . k_j + (q_i + v) . r_ij) * s
 *
 * (with unscaled_pos: u . k_j * s + (q_i + v) . r_ij). No mod_qkv: q, k, v are left
 * as they are for the modules after this one. band_bias (nn/posmod.h) computes the same
 * bias on LocalAttention's band of windows: W_R R on the band's distances, gathered per
 * window, never an L x L matrix.
 *
 * Parameters (bio-attention's names):
 *   bias_r_w          (heads, H)         u, U(-1/sqrt(H), 1/sqrt(H))
 *   bias_r_r          (heads, H)         v, same init
 *   embed_lin.weight  (heads H, r_dim)   W_R, torch Linear init; embed_lin.bias with proj_bias
 *   div               ()                 with learned_div
 *
 * Positions: default 0..Lq-1 / 0..Lk-1 (start-aligned), or with end_aligned the queries
 * are the last Lq of the Lk keys (Transformer-XL with memory). Explicit (B, Lp) f32 / f64
 * / i64; float positions that require grad get gradients. Lp < L: the position term is 0
 * for un-positioned queries / keys (the content term u . k stays). Default positions
 * evaluate W_R R on the Lq + Lk - 1 distinct distances and gather (Dai et al.'s
 * relative shift); explicit positions evaluate it per (query, key) pair. */
#ifndef PG_NN_POS_XL_H
#define PG_NN_POS_XL_H

#include "posmod.h"

/* All-zero is Transformer-XL as in Dai et al.: [sin | cos] blocks, W_R without bias,
 * both terms scaled, start-aligned default positions, r_dim = the model dim. */
typedef struct pg_xl_opts {
    int64_t r_dim;      /* width of R (even); 0: the model dim (heads * head_dim) */
    bool interleaved;   /* R layout: false [sin..., cos...] (Dai et al.), true (sin, cos) pairs (bio) */
    bool proj_bias;     /* W_R with a bias (bio's embed_lin) */
    bool unscaled_pos;  /* the position term is not multiplied by s (bio adds it unscaled) */
    bool end_aligned;   /* default positions when Lq != Lk: queries are the last Lq keys */
    double divide;      /* > 0; 0 means 1 */
    bool learned_div;   /* parameter "div" = log(divide), divisor max(exp(div), 1e-8) */
} pg_xl_opts;

/* bio-attention's XL layout (interleaved, W_R bias, unscaled position term); its
 * forward is reached with v = 2 u (docs/pos/xl.md) */
pg_xl_opts pg_xl_bio(void);

typedef struct pg_xl {
    pg_posmod pm;
    pg_xl_opts o;               /* resolved */
    int64_t heads, head_dim;
    pg_dtype dtype;
    pg_tensor *u, *v, *div;     /* div NULL unless learned */
    pg_linear *embed_lin;       /* W_R: r_dim -> heads * head_dim */
} pg_xl;

/* The registered constructor ("xl"): a->heads, a->head_dim (0: dim / heads), a->opts
 * a pg_xl_opts (NULL: Dai et al.). */
pg_posmod *pg_posmod_make_xl(const pg_posmod_args *a);
pg_xl *pg_xl_new(int64_t heads, int64_t head_dim, const pg_xl_opts *o, pg_dtype dtype, pg_rng *r);

/* The sinusoid R of the distances d (any shape, module dtype, may require grad),
 * divided: d.shape + (r_dim). */
pg_tensor *pg_xl_rel_encoding(pg_graph *g, pg_posmod *m, pg_tensor *d);

#endif
