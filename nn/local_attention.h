/* posgrad nn: LocalAttention, lucidrains' local-attention (docs/semantics.md §2)
 * with the corrections of §7. docs/local_attention.md has the story.
 *
 * Queries are cut into windows of w tokens; window omega sees the keys of windows
 * omega - lb .. omega + lf (S = (lb + lf + 1) w key slots). Everything is computed on
 * that band: q windows (b, W, w, d), keys / values (b, W, S, d), logits (b, W, w, S);
 * memory O(L S), never an L x L matrix.
 *
 * Deviations from upstream (§7): padded keys (look-around pad slots and autopad
 * rows) are always hidden; rotary / xPos use each token's true position (the logit
 * depends on the true distance, also with look_forward > 0); a query that sees no
 * key outputs 0 and passes zero gradient (never NaN, never the average of pad
 * values); causal hides key j from query i only when j > i. Hidden logits are -inf
 * (upstream -FMAX: the same weights wherever a row sees some key).
 *
 * window_size, look_backward and look_forward may be as large as INT64_MAX: a band
 * reaching past either end of the sequence sees every key in that direction (no
 * size grows with them: the look-around is clamped to the windows that exist, a
 * window longer than the sequence is one window of it). attn_bias keeps its shape
 * (Hb, w, (lb + lf + 1) w); it is refused when that is beyond INT64_MAX slots.
 *
 * Relative-bias schemes (pg_posmod with a dist_bias hook: ALiBi, DPB, T5) are
 * computed on the band only: with the default positions the distance between query
 * offset r of its window and slot s is r + lb w - s in every window, so one (H, w, S)
 * table from dist_bias over the w + S - 1 distinct distances serves all windows.
 * Packed row r (see below) uses head r mod H of the scheme. A scheme whose bias needs q
 * and k (a pg_posmod with band_bias and no dist_bias: Transformer-XL) computes it on the
 * band through that hook (nn/posmod.h: pg_pos_band is the window layout); dist_bias wins
 * when a module has both. */
#ifndef PG_NN_LOCAL_ATTENTION_H
#define PG_NN_LOCAL_ATTENTION_H

#include "posmod.h"

typedef struct pg_local_attention_config {
    int64_t window_size;     /* w0 >= 1 (required) */
    bool causal;             /* hide key j from query i when j > i */
    int64_t look_backward;   /* lb >= 0 windows back (default 1) */
    int64_t look_forward;    /* lf >= 0 windows ahead; -1: 0 if causal else 1; > 0 with causal is an error */
    double dropout;          /* on the attention weights in train mode (needs pg_local_args.rng) */
    bool shared_qk;          /* k <- k / max(|k|, 1e-12); a key at the query's own position gets -5e4 */
    bool autopad;            /* pad L up to a multiple of w0 (padded keys hidden, output cut back) */
    bool exact_windowsize;   /* see exactly the keys a - w0 lb <= j <= a + w0 lf */
    double scale;            /* 0: d^-1/2; q is multiplied by it */
    bool use_rotary_pos_emb; /* half-split rotary over the whole head dim; active only when dim > 0 */
    int64_t dim;             /* head dim d for rotary (upstream `dim`); 0: no rotary */
    bool use_xpos;           /* xPos scaling (needs rotary active) */
    double xpos_scale_base;  /* 0: w0 / 2 (integer division, as upstream) */
    pg_dtype dtype;          /* of the rotary module (no other parameters); f32 or f64 */
    /* The fused band kernel (pg_flash_attention with a window: memory and time
     * O(L S), no (b, W, w, S) logits) runs whenever the call allows it: no
     * attn_bias or dropout with a window override, xPos with explicit positions, an exact
     * window with a smaller window override, or a scheme with neither dist_bias
     * nor rel_bias (FIRE); a mask with one row per batch element; schemes whose
     * tables have one row per head (Transformer-XL: q, k as (B, H, L, d) with
     * its heads). shared_qk, xPos, attn_bias and dropout are fused. unfused forces the band-of-ops path,
     * which is the reference (tests hold the two equal). */
    bool unfused;
} pg_local_attention_config;

/* window_size w0; look_backward 1, look_forward -1 (auto), use_rotary_pos_emb true
 * (inactive until dim is set), everything else off / default, f32 */
pg_local_attention_config pg_local_attention_defaults(int64_t window_size);

typedef struct pg_local_attention {
    pg_module base;
    pg_local_attention_config cfg; /* look_forward and xpos_scale_base resolved */
    pg_posmod *rotary;             /* child "rel_pos" (half-split, no xPos: LocalAttention scales) or NULL */
    int n_pos;
    pg_posmod **pos;               /* relative-bias schemes (children "pos" / "pos.0", ...) */
} pg_local_attention;

/* Takes ownership of pos[0..n_pos) (also on failure); each must implement dist_bias or
 * band_bias (nn/posmod.h).
 * NULL + pg_last_error for a bad config (window < 1, look_forward > 0 with causal,
 * xpos without rotary, rotary with an odd dim, ...). */
pg_local_attention *pg_local_attention_new(const pg_local_attention_config *c, pg_posmod *const *pos, int n_pos);

typedef struct pg_local_args {
    pg_tensor *mask;       /* (B0, L) bool key mask, false = hidden; packed rows b % B0 == 0, row r uses
                              mask[r / (b / B0)] (for (B, H, L, D) inputs: B0 = B); NULL: none */
    pg_tensor *attn_bias;  /* (Hb, w, S) additive, row r uses attn_bias[r mod Hb] (b % Hb == 0); NULL: none */
    int64_t window_size;   /* > 0: the bucket size for this call (only with use_xpos); 0: w0 */
    pg_rng *rng;           /* dropout */
    /* Explicit positions (docs/local_attention.md "Positions"): (B0, L) of f32, f64 or i64,
     * finite, one row per batch element as the mask (b % B0 == 0, row r uses pos[r / (b / B0)]);
     * NULL: 0..L-1. The windows stay cut by sequence index; rotary / xPos angles and the
     * dist_bias schemes' distances use pos_q[i] - pos_k[j]. Data: no gradient. Not with a
     * band_bias scheme (Transformer-XL). */
    pg_tensor *pos_q;      /* query positions */
    pg_tensor *pos_k;      /* key positions */
} pg_local_args;

/* q, k, v (B, L, d) or (B, H, L, d), all the same shape and float dtype; leading axes
 * are packed into b rows. a may be NULL. -> the shape of q. */
pg_tensor *pg_local_attention_forward(pg_graph *g, pg_local_attention *m, pg_tensor *q, pg_tensor *k,
                                      pg_tensor *v, const pg_local_args *a);

#endif
