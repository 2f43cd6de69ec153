/* posgrad nn: the KV cache's private pieces, shared by nn/kv_cache.c (lifetime,
 * checks, the extension call) and nn/kv_cache_attend.c (one block's attention for
 * the new tokens over the cached keys). nn/kv_cache.h has the design. */
#ifndef PG_NN_KV_CACHE_IMPL_H
#define PG_NN_KV_CACHE_IMPL_H

#include "kv_cache.h"
#include "../autograd/flash.h"

#include <string.h>

struct pg_lm_cache {
    int64_t layers, B, H, Dh, cap, len;
    pg_dtype dtype;
    int64_t R;           /* key slots per layer: cap, or with a band a ring of min(cap, w (lb + 2)) */
    pg_flash_opts band;  /* the model's band (window 0: none) */
    pg_tensor **k, **v; /* per layer: (B, H, cap, Dh) heap tensors */
    pg_tensor **fc;     /* per layer with a forgetting gate: its c_t (B, H, cap) (docs/pos/fox.md (2)), else NULL */
    bool raw_keys;      /* a dynamic_* rotary scaling: k stored before rotation, all rotated at each call */
    pg_lm_cache_rope rope; /* with raw_keys: recompute when the frequencies change, or re-rotate only */
    pg_tensor *ids;     /* with raw_keys: the ids held (B, cap) i64, for a recompute; else NULL */
    int64_t *start;     /* (B) leading pad columns of each row (pg_lm_cache_set_start); all 0: none */
    bool padded;        /* some start[b] > 0 */
};

/* ---- which schemes decode, and how ---------------------------------------------------------- */

static inline bool kind_in(const char *kind, const char *const *list)
{
    for (int i = 0; kind && list[i]; i++)
        if (!strcmp(kind, list[i]))
            return true;
    return false;
}

static const char *const INPUT_KINDS[] = {"sinusoidal", "learned", "continuous", NULL};
/* biases of the positions given (generic), of the gates over the cached keys (cope, one query row at a
 * time) and of the running sum of log-gates (fox, c_t kept in the cache) */
static const char *const BIAS_KINDS[] = {"alibi", "dpb", "t5", "kerple", "sandwich", "fire", "xl",
                                         "abs1d", "rel1d", "rel2d", NULL};
static const char *const STATE_KINDS[] = {"cope", "fox", NULL};
static const char *const ROTARY_KINDS[] = {"rotary", "xpos", NULL};

/* What one extension call shares across the blocks. */
typedef struct ext {
    const char *fn;
    pg_lm_cache *c;
    int64_t t0, Ln, Lt;   /* first new position, new tokens, tokens after the call */
    int64_t Lk;           /* keys in the store: Lt, or with a band min(Lt, R) (the ring's slots) */
    pg_tensor *pn, *pall; /* positions (B, Ln) of the new columns t0 .., (B, Lk) of the keys in slot order, i64:
                             column t of row b is at position t - start[b] (its pads at 0) */
    pg_tensor *hide;      /* (B, 1, Ln, Lk) bool: key after new query i, outside its band or a pad of the row
                             (a pad query sees its own key only); NULL: none */
} ext;

/* the column in slot s after Lt columns: the last t <= Lt - 1 with t = s mod R */
static inline int64_t pg_kvc_slot_col(const ext *e, int64_t s)
{
    return s + e->c->R * ((e->Lt - 1 - s) / e->c->R);
}

/* block l for the new tokens: x (B, Ln, dim) -> (B, Ln, dim); keys and values stored (kv_cache_attend.c) */
pg_tensor *pg_kvc_block(pg_graph *g, const pg_lm *lm, int64_t l, const ext *e, pg_tensor *x);
/* the final norm of lm on x (LayerNorm or RMSNorm) */
pg_tensor *pg_kvc_norm(pg_graph *g, pg_norm_kind kind, pg_module *n, pg_tensor *x);

#endif
