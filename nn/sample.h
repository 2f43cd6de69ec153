/* posgrad nn: sampling (nn/sample.c): one draw per row of logits (greedy,
 * temperature, top-k, top-p) and autoregressive generation with the
 * decoder-only language model of nn/transformer.h (stop tokens, a per-token
 * callback). docs/attention.md, "Sampling", states the rules exactly. */
#ifndef PG_NN_SAMPLE_H
#define PG_NN_SAMPLE_H

#include "transformer.h"

/* Called once per new token of a row that has not stopped (row b, its id),
 * steps in order, rows ascending within a step; nonzero ends the generation
 * after that step (no further callbacks). */
typedef int (*pg_token_fn)(void *ctx, int64_t b, int64_t token);

typedef struct pg_sample_opts {
    double temperature;   /* >= 0, finite; 0: greedy (the first maximum). Default 1 */
    int64_t top_k;        /* >= 0; keep the top_k largest logits (0: all). Default 0 */
    double top_p;         /* (0, 1]; then keep the smallest prefix reaching top_p (1: all). Default 1 */
    pg_rng *rng;          /* the generator, advanced; NULL: pg_rng_init(seed) made for the call */
    uint64_t seed;        /* used when rng is NULL. Default 0 */
    const int64_t *stop;  /* n_stop ids that end a row (generation only) */
    int64_t n_stop;       /* >= 0. Default 0 */
    int64_t max_new;      /* >= 0; new ids per row at most (generation only). Default 32 */
    pg_token_fn on_token; /* NULL: none */
    void *ctx;            /* on_token's first argument */
    const int64_t *prompt_start; /* generation: B entries, 0 <= prompt_start[b] < L0: row b's prompt is
                                    left-padded, its real tokens start at that column; NULL: none. Default NULL */
} pg_sample_opts;

/* temperature 1, top_k 0, top_p 1, no generator (seed 0), no stop ids, max_new 32, no callback, no padding */
pg_sample_opts pg_sample_defaults(void);

/* logits (B, V) f32/f64 -> out[b]: one id per row under o (NULL: the
 * defaults): greedy at temperature 0; otherwise the entries are ordered by
 * logit, descending, ties towards the lower index; the first top_k are kept;
 * of those, with probabilities pi = softmax(logits / temperature) over the
 * kept ones, the shortest prefix whose sum reaches top_p is kept; one draw
 * from the kept entries renormalised (one pg_rng_uniform per row). 0, or -1
 * with pg_last_error naming pg_sample_logits_ex. */
int pg_sample_logits_ex(const pg_tensor *logits, const pg_sample_opts *o, int64_t *out);
/* As pg_sample_logits_ex with temperature, top_k and the generator r, which
 * is required when temperature > 0. */
int pg_sample_logits(const pg_tensor *logits, double temperature, int64_t top_k, pg_rng *r, int64_t *out);

/* prompt (B, L0) PG_I64, L0 >= 1 -> a heap (B, L0 + n) PG_I64 tensor: the
 * prompt followed by n <= o->max_new sampled ids per row (pg_sample_logits_ex
 * on the last position each step). A row that draws an id of o->stop has
 * stopped: its later columns repeat that id and its callback is no longer
 * made; the draws of every row are made each step, so stops do not change
 * the other rows' ids. Generation ends after max_new steps, when every row has
 * stopped, or when on_token returns nonzero (n: the steps run). Runs in eval
 * mode without recording (the module's mode is restored). With
 * o->prompt_start, prompts of different lengths left-padded to L0: row b
 * continues from its last real token and its ids are those its unpadded
 * prompt prompt[b, start[b]:] gives alone (the KV cache with
 * pg_lm_cache_set_start; past the model's max_len, the full forward of each
 * row's own last max_len real ids); the pads stay in the output, the new ids
 * follow column L0 - 1 in every row. NULL + error. */
pg_tensor *pg_lm_generate_ex(pg_lm *lm, const pg_tensor *prompt, const pg_sample_opts *o);
/* As pg_lm_generate_ex with max_new n_new, temperature, top_k and the
 * generator r (required when temperature != 0): always (B, L0 + n_new). */
pg_tensor *pg_lm_generate(pg_lm *lm, const pg_tensor *prompt, int64_t n_new, double temperature, int64_t top_k,
                          pg_rng *r);

#endif
