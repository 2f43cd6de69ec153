/* posgrad nn: incremental decoding of the language model (nn/transformer.h's pg_lm)
 * with a key/value cache. docs/attention.md "Incremental decoding".
 *
 * Design. A pg_lm_cache holds, for every block, the keys and values of the
 * tokens seen so far, as attention uses them: AFTER the projections and after
 * the positional modules' mod_qkv at each token's absolute position:
 *
 *   (H query heads of width Dh = dim_head; with grouped-query attention (kv_heads)
 *   k and v are kept repeated to H heads, as pg_mha_qkv gives them: simple, not
 *   the memory GQA could save)
 *   keys[layer]   (B, H, R, Dh)          rotary / xPos: k rotated (and xPos-scaled by
 *                                        zeta^(-p / scale_base), centre 0 or the fixed
 *                                        xpos_centre) at its position p; other schemes: k
 *   values[layer] (B, H, R, Dh)          v (no scheme here modifies v)
 *   fc[layer]     (B, H, capacity)       FoX only: c_t, the cumulative log-gate sum at each
 *                                        token (docs/pos/fox.md (2)); the running sum is c_{len-1}
 *
 * all allocated once, at pg_lm_cache_new (no allocation while decoding). R is the
 * capacity, or with a local attention band (window w, look_backward lb) a ring of
 * min(capacity, w (lb + 2)) slots: token t in slot t mod R, memory bounded by the
 * window, not the length; calls longer than w are cut into pieces of w tokens. A call that extends the cache with Ln new
 * tokens (B, Ln) at positions t0 = len .. len + Ln - 1:
 *
 *   x = tok_emb(ids); x = mod_x of the input modules at the explicit positions t0..;
 *   per block: x = mod_x of the block's modules at those positions;
 *     q, k, v = split(to_qkv(norm1(x)))                          (B, H, Ln, Dh)
 *     rotary family: q, k rotated at their positions (pg_rotary_apply)
 *     keys[slots of t0 .. t0 + Ln) = k, values[..] = v
 *     logits = q K^T scale + sum of mod_bias over (pos_q = t0.., pos_k = the stored keys'
 *              positions, 0 .. len + Ln - 1 without a ring) (B, H, Ln, keys), key at p
 *              hidden from new query i when p > t0 + i or p is outside its band
 *              (per row with left padding: positions t - start[b], pads hidden,
 *              pg_lm_cache_set_start below)
 *     x += to_out(softmax(logits) V); x += ff(norm2(x))
 *   logits = head(norm(x))                                      (B, Ln, vocab)
 *
 * So every scheme that honours explicit positions decodes without a special case,
 * and each call equals the full forward of the whole sequence at the new positions
 * (up to rounding; tests/test_kv_cache.c checks 1e-12 in float64). Two schemes keep
 * more: CoPE's gates sum over the keys up to the query, so each new query row is one
 * mod_bias call over keys 0 .. t0 + r (nothing hidden); FoX's bias c_i - c_j reads
 * fc: the new c_t are the chunk's own cumulative sums (sep_bias) plus c_{t0-1}.
 * Decodable: input sinusoidal, learned, continuous; layer rotary and xpos with
 * every scaling (the dynamic_* ones below), alibi, dpb, t5, kerple, sandwich, fire,
 * xl, abs1d, rel1d, rel2d (their tables indexed by the explicit positions), cope,
 * fox (one per layer; a bidirectional gate decodes as its causal half, since the LM
 * hides later keys); bands with all of them (CoPE's keys gathered in order from the
 * ring, FoX's c_t kept for every position: B H capacity scalars). pg_lm_cache_new
 * refuses a custom constructor (spec.make), whose hooks it cannot know, naming it.
 *
 * Calls run without recording a backward graph (pg_no_grad_begin) in the caller's
 * graph g: reset g between steps (pg_graph_reset) and its arena is reused. The
 * model must be in eval mode. A failed call leaves the cache as it was (except a call
 * of more than one window with a band that fails after its checks, e.g. out of
 * memory: it may have overwritten ring slots; reset the cache). */
#ifndef PG_NN_KV_CACHE_H
#define PG_NN_KV_CACHE_H

#include "transformer.h"

typedef struct pg_lm_cache pg_lm_cache;

/* A cache for lm's shape (layers, heads, head_dim, dtype), batch rows and up to
 * capacity tokens (<= lm's max_len when set). NULL + error for a NULL lm, batch or
 * capacity < 1, or a positional scheme this cache cannot decode. */
pg_lm_cache *pg_lm_cache_new(const pg_lm *lm, int64_t batch, int64_t capacity);
void pg_lm_cache_free(pg_lm_cache *c); /* NULL: no-op */
/* Empties the cache (length 0) for a new sequence; keeps its memory. */
void pg_lm_cache_reset(pg_lm_cache *c);
/* Left padding: a batch of prompts of different lengths, right-aligned to a
 * common width. On an empty cache (new or reset), start (B entries) gives each
 * row's leading pad columns, 0 <= start[b] < capacity; reset clears them (no
 * padding). Then column t of row b is at position t - start[b] (its pads at
 * position 0), its real queries see only its real keys (columns >= start[b]),
 * causal and band measured in positions, so every row's logits equal those of
 * its unpadded sequence alone (tests/test_kv_cache_pad.c: 1e-12 in float64);
 * a pad query sees its own key only (finite, meaningless logits). CoPE's gate
 * sums and FoX's c_i - c_j between a real key and a real query read real
 * tokens only. A prefill or step fails when a row would still hold only pads
 * after it (its last logits would be a pad's). 0, or -1 + error: NULL, a
 * non-empty cache, a start outside [0, capacity). */
int pg_lm_cache_set_start(pg_lm_cache *c, const int64_t *start);
/* Tokens held (0 after new / reset); -1 for NULL. */
int64_t pg_lm_cache_len(const pg_lm_cache *c);
/* Rotary scalings whose frequencies depend on the length (pg_rotary_opts.scaling
 * dynamic_ntk, dynamic_linear, dynamic_yarn): the cache keeps their keys BEFORE
 * rotation and rotates every key at each call at the frequencies of the length
 * after the call, as the full forward of the whole sequence does. That makes the
 * first block exact; a deeper block's keys of earlier tokens, though, come from
 * states the full forward would recompute at the new length. So:
 *   PG_LM_CACHE_ROPE_RECOMPUTE (default): a call after which the frequencies differ
 *     from those before it runs the whole sequence again from the cached ids (each
 *     step then costs a full forward, past the trained length only) and every
 *     step equals the full forward;
 *   PG_LM_CACHE_ROPE_REROTATE: never recomputes (incremental cost; what KV-cached
 *     dynamic scaling elsewhere does): each token's deeper states stay those of
 *     the length at which it was new, its first block's keys re-rotated.
 * Without a dynamic scaling both are the same. 0, or -1 for a NULL cache or an
 * unknown mode. */
typedef enum { PG_LM_CACHE_ROPE_RECOMPUTE = 0, PG_LM_CACHE_ROPE_REROTATE = 1 } pg_lm_cache_rope;
int pg_lm_cache_set_rope(pg_lm_cache *c, pg_lm_cache_rope how);
/* Feeds ids (B, L0) PG_I64 (B the cache's batch) in one forward at positions
 * len .. len + L0 - 1 (0 .. L0 - 1 on an empty cache) -> logits (B, L0, vocab) of
 * every new position. Fails when len + L0 > capacity. */
pg_tensor *pg_lm_cache_prefill(pg_graph *g, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids);
/* One token per row: ids (B, 1) PG_I64 at position len -> logits (B, vocab).
 * On an empty cache it is a prefill of one token (allowed). */
pg_tensor *pg_lm_cache_step(pg_graph *g, pg_lm *lm, pg_lm_cache *c, pg_tensor *ids);

#endif
