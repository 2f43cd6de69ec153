/* posgrad nn: FIRE, functional interpolation for relative positions (Li et al.
 * 2024). docs/pos/fire.md has the whole story.
 *
 * A logits bias from an MLP of a normalised distance: for heads h = 0..H-1,
 * query position i and key position j (docs/pos/fire.md, equations (1)-(3)),
 *
 *   psi(x) = log(|c| x + 1)
 *   u(i, j) = psi(d(i, j)) / (psi(max(L, i)) + eps)          L = |L_multiplier * init_L|
 *   bias[h, i, j] = f(u(i, j))[h]                          f = Linear(1 -> hidden), ReLU, Linear(hidden -> H)
 *
 * with the distance d = |i - j| (dist ABS, the default) or d = max(i - j, 0)
 * (dist TRIL: u = 0 and the bias f(0) for keys after the query). The bias
 * depends on i as well as i - j once i > L: it has no dist_bias, but
 * dist_bias_if gives the (H, D) table over distances on the calls where every
 * query position is below L (default positions, Lk - 1 < L, not drawing), which
 * MultiheadAttention's fused path takes; LocalAttention takes FIRE through
 * band_bias (the positions of its band).
 *
 * Parameters (the references' state-dict names): "c" (0-dim, init 0.1),
 * "init_L" (0-dim, init 512; FROZEN: it does not require grad, gets no gradient,
 * and optimizers skip it, but it is in the state dict), "L_multiplier" (0-dim,
 * init 1), "mlp.0.weight" (hidden, 1), "mlp.0.bias" (hidden), "mlp.2.weight"
 * (H, hidden), "mlp.2.bias" (H) (torch's Linear init, from the constructor's
 * generator). c, init_L and L_multiplier have no weight decay.
 *
 * At a tie i == L the gradient of max(L, i) goes half to L and half to i (as
 * torch.maximum). Positions are data (no gradient). Default positions: queries
 * Lk-Lq..Lk-1, keys 0..Lk-1 (end-aligned). Positions shorter than the sequence:
 * zero bias rows and columns for the un-positioned tokens. opts.train_max_len:
 * random positions in training (pg_fire_draw_positions); LocalAttention refuses
 * it in training mode. Output of mod_bias /
 * bias_table: (H, Lq, Lk) with default positions on both sides, else
 * (B, H, Lq, Lk). */
#ifndef PG_NN_POS_FIRE_H
#define PG_NN_POS_FIRE_H

#include "posmod.h"

typedef enum {
    PG_FIRE_DIST_ABS = 0, /* d = |i - j| over the whole matrix (mcleish7/arithmetic; the default) */
    PG_FIRE_DIST_TRIL = 1 /* d = max(i - j, 0): bias f(0) for keys after the query (DAPE's tril) */
} pg_fire_dist;

/* All-zero is the default: H from the attention, hidden 32, c 0.1, init_L 512,
 * eps 1e-6, |i - j|. */
typedef struct pg_fire_opts {
    int64_t heads;     /* H; 0: the attention's (args.heads) */
    int64_t hidden;    /* the MLP's width, >= 1; 0 means 32 */
    double init_c;     /* initial c, finite and nonzero; 0 means 0.1 */
    double init_L;     /* the frozen L0, finite and > 0; 0 means 512 */
    double eps;        /* added to the normaliser, finite and >= 0; 0 means 1e-6 (use a tiny value for none) */
    pg_fire_dist dist;
    int64_t train_max_len; /* >= 0; 0: off. In training mode, self-attention with default positions and
                              Lq = Lk = L < train_max_len: the bias at L random sorted distinct positions
                              in [0, train_max_len), drawn per call from pg_pos_ctx.rng (required then) */
} pg_fire_opts;

typedef struct pg_fire {
    pg_posmod pm; /* first: &f->pm.base is the module */
    int64_t heads, hidden;
    double eps;
    pg_fire_dist dist;
    int64_t train_max_len; /* 0: off */
    pg_dtype dtype;
    pg_tensor *c, *init_L, *L_multiplier; /* 0-dim; init_L does not require grad */
    pg_linear *lin0, *lin2;               /* mlp.0 (1 -> hidden), mlp.2 (hidden -> H) */
} pg_fire;

/* FIRE for `heads` heads (o->heads, when nonzero, must agree); o NULL:
 * defaults. dtype: of the parameters (and of the attention it serves); r: the
 * MLP's initial weights (required). NULL + error on bad options. */
pg_posmod *pg_fire_new(int64_t heads, const pg_fire_opts *o, pg_dtype dtype, pg_rng *r);
/* The training-mode draw (opts.train_max_len): L distinct positions in
 * [0, max_len), sorted ascending, into pos[0..L-1], uniform over the L-subsets
 * (Floyd's sampling, one bounded integer per position from r). Needs r and
 * 1 <= L <= max_len <= 2^53. 0, or -1 and an error naming the function. */
int pg_fire_draw_positions(pg_rng *r, int64_t L, int64_t max_len, int64_t *pos);
/* The registered constructor ("fire"): heads from o->heads or a->heads, dtype
 * a->dtype, initial weights from a->rng. */
pg_posmod *pg_posmod_make_fire(const pg_posmod_args *a);

#endif
