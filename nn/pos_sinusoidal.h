/* posgrad nn: the fixed sinusoidal absolute encoding (docs/semantics.md §1.3,
 * bio-attention's Sinusoidal), a mod_x scheme. docs/pos/absolute.md has the story.
 *
 *   theta[t, i] = (pos[t] * inv_freq[i]) / divisor,   inv_freq[i] = base^(-2i/dim), i < dim/2
 *   pe[t, 2i] = sin theta[t, i],  pe[t, 2i+1] = cos theta[t, i]      (interleaved pairs)
 *   or, with cat_halves, pe[t, i] = sin theta[t, i], pe[t, dim/2 + i] = cos theta[t, i]; with
 *   learned_scale pe is multiplied by the parameter "scale" (1) (x-transformers' scaled form)
 *   out = x + pe,  where pe is
 *     - zero for the first L - Lp tokens when positions are shorter than the sequence
 *       (left padding: un-positioned tokens get no encoding);
 *     - zero for tokens whose key mask entry is false (bio-attention: the mask says which
 *       tokens get an encoding), unless ignore_mask.
 *
 * Positions: NULL = 0..L-1; (B, Lp) f32 / f64 (differentiable: a float position tensor that
 * requires grad gets its gradient) or i64. The divisor is `divide`, or with learned_div
 * max(exp(div), 1e-8) where the 0-dim parameter "div" starts at log(divide).
 *
 * Registered as "sinusoidal": pg_posmod_args.dim is the width of x (even). */
#ifndef PG_NN_POS_SINUSOIDAL_H
#define PG_NN_POS_SINUSOIDAL_H

#include "posmod.h"

typedef struct pg_sinusoidal_opts {
    double divide;     /* > 0; 0 means 1 (no division). Default 1 */
    bool learned_div;  /* parameter "div" = log(divide), divisor max(exp(div), 1e-8). Default false */
    double base;       /* frequency base; 0 means 10000 (the reference). Default 10000 */
    bool ignore_mask;  /* true: tokens with a false key-mask entry still get their encoding. Default false */
    /* x-transformers' ScaledSinusoidalEmbedding (scaled_sinu_pos_emb = True) is
     * pg_scaled_sinusoidal_defaults(): the same frequencies, base^(-i/(dim/2)) = base^(-2i/dim), and
     *   cat_halves:     pe = cat(sin theta, cos theta) (sines in the first half) instead of pairs
     *   learned_scale:  pe *= parameter "scale" (1), initialised at dim^-0.5 */
    bool cat_halves;    /* Default false */
    bool learned_scale; /* Default false */
} pg_sinusoidal_opts;

/* {divide 1, learned_div false, base 10000, ignore_mask false, cat_halves false, learned_scale false} */
pg_sinusoidal_opts pg_sinusoidal_defaults(void);
/* x-transformers' ScaledSinusoidalEmbedding: the defaults with cat_halves and learned_scale */
pg_sinusoidal_opts pg_scaled_sinusoidal_defaults(void);

/* The registry constructor: a->dim, a->dtype (of "div"), a->opts a pg_sinusoidal_opts or NULL. */
pg_posmod *pg_posmod_make_sinusoidal(const pg_posmod_args *a);
/* Typed constructor; o NULL: defaults. NULL + pg_last_error for an odd or non-positive dim,
 * divide < 0 or not finite, base <= 1, a non-float dtype. */
pg_posmod *pg_sinusoidal_new(int64_t dim, const pg_sinusoidal_opts *o, pg_dtype dtype);

/* ---- shared by the absolute (mod_x) schemes of posgrad (nn/pos_learned.c) -------------
 * Finishes an absolute encoding: pe (B, Lp, dim), or (1, Lp, dim) for every batch alike,
 * for the positioned tokens is left-padded with zero rows to (B or 1, L, dim), zeroed where
 * the context's key mask is false (if use_mask; pe is broadcast to (B, L, dim) first), and
 * added to x (B, L, dim). fn names the scheme in errors. */
pg_tensor *pg_pos_abs_add(pg_graph *g, const char *fn, pg_tensor *x, pg_tensor *pe, const pg_pos_ctx *c,
                          bool use_mask);
/* The positions of x's tokens as a (B, Lp, 1) tensor of dtype: the context's pos_q (cast,
 * keeping the gradient of float positions), or 0..L-1 as (1, L, 1): the same for every
 * batch, so that an encoding of them is computed once and broadcast. Checks the context
 * against x. */
pg_tensor *pg_pos_abs_positions(pg_graph *g, const char *fn, pg_tensor *x, const pg_pos_ctx *c);

#endif
