/* posgrad nn: Shaw-style learned position embeddings for the attention logits
 * (docs/semantics.md §5, AI Summer's self-attention-cv, corrected per §7).
 * docs/pos/relative.md has the equations, options and test names.
 *
 * Three mod_bias schemes whose bias depends on the query q (B, H, Lq, d):
 *
 *   abs1d  bias[b,h,i,j] = q[b,h,i] . E[pk_j]                      E = "abs_pos_emb" (tokens, d)
 *   rel1d  bias[b,h,i,j] = q[b,h,i] . R[pk_j - pq_i + tokens - 1]  R = "rel_pos_emb" (2 tokens - 1, d),
 *                                                                   or (heads, 2 tokens - 1, d) per head
 *   rel2d  tokens are cells of an H x W map in row-major order: position p is cell
 *          (row p / W, column p % W). For query cell (r, s) and key cell (t, u):
 *          bias = q . (Rw[u - s + W - 1] + Rh[t - r + H - 1])     Rw = "emb_w.rel_pos_emb" (2W - 1, d)
 *                                                                   Rh = "emb_h.rel_pos_emb" (2H - 1, d)
 *          (the textbook 2-D relative logit, §7); option `aisummer` gives AI Summer's own
 *          (square maps only, §5: q_(r,s).Rw[u-s+S-1] + q_(s,r).Rh[u-s+S-1]).
 *
 * Positions index discrete tables: they must be PG_I64 (float positions are refused
 * with an error naming the scheme), default 0..L-1 (start-aligned in cross-attention).
 * Positions shorter than the sequence (left padding): the leading tokens get a zero
 * bias row and column. Positions (or default lengths) outside the table: an error.
 * The bias is added unscaled (AI Summer's bot_att.py); `scaled` multiplies it by the
 * attention's scale (the article's q.(k + r) / sqrt(d)).
 *
 * bias_table is NULL for all three (the bias needs q); pg_posrel_logits computes
 * the bias for a given q and context. */
#ifndef PG_NN_POS_REL_H
#define PG_NN_POS_REL_H

#include "posmod.h"

/* ---- options (a->opts of the constructors; NULL: all defaults) --------------------------- */
typedef struct pg_abs1d_opts {
    int64_t tokens;   /* table rows (positions 0..tokens-1); 0: args.max_len */
    int64_t dim_head; /* 0: args.head_dim */
    bool scaled;      /* multiply the bias by the attention's scale (default off: unscaled) */
} pg_abs1d_opts;

typedef struct pg_rel1d_opts {
    int64_t tokens;   /* relative distances -(tokens-1)..tokens-1; 0: args.max_len */
    int64_t dim_head; /* 0: args.head_dim */
    int64_t heads;    /* 0: one table shared by every head; N > 0: one table per head (N = the attention's heads) */
    bool scaled;
} pg_rel1d_opts;

typedef struct pg_rel2d_opts {
    int64_t height, width; /* the feature map (required, >= 1); sequences hold up to height * width tokens */
    int64_t dim_head;      /* 0: args.head_dim */
    int64_t heads;         /* 0: shared tables; N > 0: per-head tables */
    bool scaled;
    bool aisummer;         /* AI Summer's RelPosEmb2D (§5: drops the row offset); needs height == width,
                              default positions and L = height * width */
} pg_rel2d_opts;

/* ---- constructors (registered as "abs1d", "rel1d", "rel2d") -------------------------------
 * Read a->head_dim (or opts.dim_head), a->max_len (default tokens), a->heads (checked
 * against opts.heads), a->dtype, a->rng (required: init N(0, 1) / sqrt(dim_head), as
 * AI Summer's randn * dim_head^-0.5). NULL + pg_last_error on bad options. */
pg_posmod *pg_posmod_make_abs1d(const pg_posmod_args *a);
pg_posmod *pg_posmod_make_rel1d(const pg_posmod_args *a);
pg_posmod *pg_posmod_make_rel2d(const pg_posmod_args *a);

/* typed shortcuts */
pg_posmod *pg_abs1d_new(int64_t tokens, int64_t dim_head, pg_dtype dtype, pg_rng *r);
pg_posmod *pg_rel1d_new(int64_t tokens, int64_t dim_head, int64_t heads, pg_dtype dtype, pg_rng *r);
pg_posmod *pg_rel2d_new(int64_t height, int64_t width, int64_t dim_head, int64_t heads, pg_dtype dtype, pg_rng *r);

/* The module's tables (borrowed): abs1d: E; rel1d: R; rel2d: Rw then Rh (second NULL otherwise).
 * NULL and an error for m NULL, not one of these schemes, or which outside 0..1. */
pg_tensor *pg_posrel_table(const pg_posmod *m, int which);

/* The bias one of these modules adds for queries q (B, H, Lq, d) in context c
 * (c->pos_q / pos_k / B / Lq / Lk / scale are used): (B, H, Lq, Lk). */
pg_tensor *pg_posrel_logits(pg_graph *g, pg_posmod *m, pg_tensor *q, const pg_pos_ctx *c);

/* AI Summer's relative_to_absolute: x (..., l, 2l - 1) -> (..., l, l) with
 * out[..., i, j] = x[..., i, j - i + l - 1] (column r of x holds the distance
 * key - query = r - (l - 1)), built from differentiable pad / reshape / slice. */
pg_tensor *pg_rel_to_abs(pg_graph *g, pg_tensor *x);

#endif
