/* posgrad nn: rotary position embedding (RoPE) and xPos on top of it, a mod_qkv scheme
 * (docs/semantics.md §1.6 bio-attention Rotary, §4.3 x-transformers RotaryEmbedding,
 * §2 step 4 lucidrains local-attention's rotary). docs/pos/rotary.md has the story.
 *
 * For q (B, H, Lq, Dh) at positions p_q and k (B, H, Lk, Dh) at positions p_k, with
 * R = n_dims / 2 rotated pairs and F = freq_dim:
 *
 *   base'       = base * base_rescale_factor^(F / (F - 2))     (just base when the factor is 1)
 *   inv_freq[i] = base'^(-2i / F),                                i < R
 *   inv_freq'   = inv_freq rescaled by the context-extension option `scaling` (PI, NTK, dynamic
 *                 NTK, YaRN; nn/pos_rope_scaling.h has the equations; none by default)
 *   a[s, i]     = (p[s] * inv_freq'[i]) / divisor / interpolation_factor
 *   pair i of the first n_dims channels = (2i, 2i+1) interleaved (default) or (i, i+R) half-split:
 *     x'_first  = (x_first * cos a - x_second * sin a) * sigma * mscale
 *     x'_second = (x_second * cos a + x_first * sin a) * sigma * mscale
 *   (mscale = 1 except with YaRN: its attention factor, on q and k both, so the logits get mscale^2)
 *   channels n_dims .. Dh-1 pass through unchanged (and unscaled); v is never changed.
 *
 *   xPos (use_xpos): sigma[s, i] = zeta_i^((p[s] - c) / scale_base), zeta_i = (2i + 0.4 F) / (1.4 F),
 *   applied to q and its inverse 1/sigma to k, so q'.k' depends on p_q - p_k only. The
 *   centre c is floor((max p_k + 1) / 2) over all batch elements (x-transformers'
 *   floor((max t + 1)/2); local-attention's floor(S/2) for key slots 0..S-1), or
 *   xpos_centre when xpos_fixed_centre. Without xPos sigma = 1. The divisor and the
 *   interpolation factor act on the angle only, not on the xPos power.
 *
 * Positions (pg_pos_ctx pos_q / pos_k): NULL = 0..L-1 (cross-attention: both sides start at 0);
 * (B, Lp) f32 / f64 (differentiable: a float position tensor that requires grad gets its
 * gradient) or i64 (exact integers, allowed: rotary is defined at any real position and
 * integers are the common case; no gradient). Lp < L (left padding): the first L - Lp
 * tokens are NOT rotated and not xPos-scaled (angle 0, sigma 1; docs/semantics.md §7 —
 * bio-attention zeroes them instead).
 *
 * The divisor is `divide`, or with learned_div max(exp(div), 1e-8) where the 0-dim
 * parameter "div" starts at log(divide). No other parameters (inv_freq / zeta are
 * recomputed constants, not state-dict entries).
 *
 * Configurations of the references (Dh = head dim):
 *   bio-attention Rotary(head_dim, n_dims, divide, learned_div):  defaults, n_dims, divide, learned_div
 *   x-transformers RotaryEmbedding(dim, use_xpos, scale_base, interpolation_factor, base,
 *     base_rescale_factor):  n_dims = freq_dim = dim, and the same-named options
 *     (before its commit 992ab09 of 2024-05: pairing = PG_ROTARY_HALF_SPLIT)
 *   local-attention rotary (dim = Dh, use_xpos, xpos_scale_base):  pairing = PG_ROTARY_HALF_SPLIT,
 *     use_xpos, scale_base = xpos_scale_base; pg_rotary_apply with the window's slot positions
 *     (the true positions per §7 are the LocalAttention's business).
 *
 * Registered as "rotary" and "xpos" (the same module with use_xpos forced on):
 * pg_posmod_args.head_dim is Dh unless opts.head_dim is set. */
#ifndef PG_NN_POS_ROTARY_H
#define PG_NN_POS_ROTARY_H

#include "posmod.h"

typedef enum {
    PG_ROTARY_INTERLEAVED = 0, /* pairs (2i, 2i+1): bio-attention, x-transformers (since 2024-05) */
    PG_ROTARY_HALF_SPLIT = 1   /* pairs (i, i + n_dims/2): local-attention, zeta, old x-transformers */
} pg_rotary_pairing;

/* RoPE context extension (docs/pos/rotary.md "Context extension"; nn/pos_rope_scaling.h) */
typedef enum {
    PG_ROPE_NONE = 0,        /* today's rotary */
    PG_ROPE_LINEAR = 1,      /* position interpolation (PI): angles / s */
    PG_ROPE_NTK = 2,         /* NTK-aware: base * s^(F / (F - 2)) */
    PG_ROPE_DYNAMIC_NTK = 3, /* NTK with s from the call's length (ntk = rope_factor) */
    PG_ROPE_DYNAMIC_LINEAR = 4, /* jquesnelle/yarn's dynamic with ntk = False: angles * L / len */
    PG_ROPE_YARN = 5,        /* NTK-by-parts ramp + attention factor */
    PG_ROPE_PART_NTK = 6,    /* jquesnelle/yarn's PartNTK: two ramps between PI, NTK and theta; no mscale */
    PG_ROPE_DYNAMIC_YARN = 7 /* YaRN with s from the call's length (past rope_max_len) */
} pg_rope_scaling;

typedef enum {
    PG_ROPE_RAMP_INDEX = 0, /* YaRN code: linear in the pair index between floor/ceil'd bounds */
    PG_ROPE_RAMP_RATIO = 1  /* YaRN paper: linear in r = L / lambda between beta_slow and beta_fast */
} pg_rope_ramp;

/* Zero in a numeric field means its default, so designated initialisers work:
 * (pg_rotary_opts){.n_dims = 8, .use_xpos = true}. */
typedef struct pg_rotary_opts {
    int64_t head_dim;            /* Dh; 0: pg_posmod_args.head_dim */
    int64_t n_dims;              /* rotated channels (the first n_dims), even, <= Dh; 0: Dh */
    int64_t freq_dim;            /* F above, >= 2; 0: Dh (bio: frequencies over head_dim);
                                    x-transformers: n_dims */
    pg_rotary_pairing pairing;   /* default PG_ROTARY_INTERLEAVED */
    double base;                 /* > 0; 0: 10000 */
    double base_rescale_factor;  /* > 0; 0: 1 (needs F > 2 when not 1) */
    double interpolation_factor; /* > 0; 0: 1 */
    double divide;               /* > 0; 0: 1 */
    bool learned_div;            /* parameter "div" = log(divide) */
    bool use_xpos;               /* scale q by sigma, k by 1/sigma */
    double scale_base;           /* xPos scale base > 0; 0: 512 (x-transformers' default) */
    bool xpos_fixed_centre;      /* true: c = xpos_centre; false: floor((max key position + 1) / 2) */
    double xpos_centre;
    /* context extension; all zero: none (bit-identical to plain rotary) */
    pg_rope_scaling scaling;     /* default PG_ROPE_NONE */
    double rope_factor;          /* s: > 0 for linear, >= 1 otherwise; 0: needed (dynamic_*: 1;
                                    dynamic_yarn does not read it) */
    int64_t rope_orig_len;       /* L, the trained length: > 0 for all but linear and ntk */
    double yarn_beta_fast;       /* > yarn_beta_slow > 0; 0: 32 (the paper's beta) */
    double yarn_beta_slow;       /* 0: 1 (the paper's alpha) */
    double yarn_extrapolation_factor; /* gamma multiplier; 0: 1 */
    double yarn_attn_factor;     /* multiplies mscale; 0: 1 */
    bool yarn_no_mscale;         /* true: mscale = yarn_attn_factor (no 0.1 ln s + 1) */
    pg_rope_ramp yarn_ramp;      /* default PG_ROPE_RAMP_INDEX (the reference code's) */
    double yarn_ntk_factor;      /* part_ntk: multiplies its NTK ramp; 0: 1 */
    int64_t rope_max_len;        /* dynamic_yarn: max_position_embeddings (the cache); 0: rope_orig_len */
    bool yarn_dynamic_by_max;    /* dynamic_yarn: s = len / rope_max_len, not len / rope_orig_len */
    bool yarn_finetuned;         /* dynamic_yarn: len <= rope_max_len uses s = rope_max_len / rope_orig_len, not 1 */
} pg_rotary_opts;

/* all of the above at their defaults (every field zero / false) */
pg_rotary_opts pg_rotary_defaults(void);

/* The registry constructors: a->head_dim (or opts.head_dim), a->dtype (of "div"),
 * a->opts a pg_rotary_opts or NULL. "xpos" is "rotary" with use_xpos = true. */
pg_posmod *pg_posmod_make_rotary(const pg_posmod_args *a);
pg_posmod *pg_posmod_make_xpos(const pg_posmod_args *a);
/* Typed constructor (head_dim overrides o->head_dim); o NULL: defaults. NULL + pg_last_error
 * for an odd head_dim / n_dims, n_dims > head_dim, a bad option, a non-float dtype. */
pg_posmod *pg_rotary_new(int64_t head_dim, const pg_rotary_opts *o, pg_dtype dtype);

/* What mod_qkv does to one side: t (B, H, L, Dh) at positions pos ((B, Lp), (1, Lp) or (Lp),
 * Lp <= L; NULL: 0..L-1) rotated, times sigma (key false: a query) or divided by sigma
 * (key true), with xPos centre `centre` (NAN: the module's rule applied to pos). m must be a
 * rotary module. For LocalAttention's windows and for tests. */
pg_tensor *pg_rotary_apply(pg_graph *g, pg_posmod *m, pg_tensor *t, pg_tensor *pos, bool key, double centre);

/* pg_rotary_apply's tables instead of its rotation, for t of B batches, L tokens and dtype:
 * *C, *S (Bp, 1, L, n_dims / 2) such that pg_rotate_pairs(g, t, *C, *S, *interleaved)
 * (autograd/ops.h) is pg_rotary_apply(g, m, t, pos, key, centre), bit for bit. For a caller
 * that hands them to the fused attention kernel (autograd/flash.h rot_cos_q ..) when they do
 * not require grad (LocalAttention). 0, or -1 after pg_graph_fail (g required). */
int pg_rotary_tables(pg_graph *g, pg_posmod *m, int64_t B, int64_t L, pg_dtype dtype, pg_tensor *pos, bool key,
                     double centre, pg_tensor **C, pg_tensor **S, bool *interleaved);

/* The angles a[b, s, i] for L tokens at positions pos (as pg_rotary_apply; un-positioned
 * tokens 0): (Bp, L, n_dims / 2) in the module's dtype, Bp = pos's batch (1 for NULL).
 * For heatmaps. */
pg_tensor *pg_rotary_angles(pg_graph *g, pg_posmod *m, int64_t L, pg_tensor *pos);

/* The effective frequencies d(angle)/d(position) per pair for a call whose longest length is len
 * (positions up to len - 1; only dynamic_* read it): inv_freq'[i] / divisor / interpolation_factor
 * (the divisor's current value) into out[0 .. n_dims/2). Returns n_dims / 2, or -1 with
 * pg_last_error (not a rotary module, len not finite or < 1, out NULL). *mscale (when not NULL)
 * gets the attention factor on q and on k. */
int64_t pg_rotary_frequencies(pg_posmod *m, double len, double *out, double *mscale);

#endif
