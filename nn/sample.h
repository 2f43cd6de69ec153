/* posgrad nn: sampling (nn/sample.c): one draw per row of logits (greedy,
 * temperature, top-k) and autoregressive generation with the decoder-only
 * language model of nn/transformer.h. */
#ifndef PG_NN_SAMPLE_H
#define PG_NN_SAMPLE_H

#include "transformer.h"

/* logits (B, V) f32/f64 -> out[b]: temperature 0 is greedy (the first maximum);
 * otherwise one draw per row from softmax(logits / temperature) restricted to the
 * top_k largest logits (0: all; ties broken towards the lower index, so top_k 1 is
 * greedy), using one pg_rng_uniform of r per row. 0, or -1 with pg_last_error. */
int pg_sample_logits(const pg_tensor *logits, double temperature, int64_t top_k, pg_rng *r, int64_t *out);
/* prompt (B, L0) PG_I64, L0 >= 1 -> a heap (B, L0 + n_new) PG_I64 tensor: the prompt
 * followed by n_new sampled ids (pg_sample_logits on the last position each step).
 * Runs in eval mode without recording (the module's mode is restored). NULL + error. */
pg_tensor *pg_lm_generate(pg_lm *lm, const pg_tensor *prompt, int64_t n_new, double temperature, int64_t top_k,
                          pg_rng *r);

#endif
