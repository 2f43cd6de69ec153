/* Generation benchmarks (issue 15): generate_cached_tok_s and generate_full_tok_s,
 * new tokens per second of greedy decoding with the key/value cache
 * (pg_lm_cache_prefill / pg_lm_cache_step) and by recomputing the whole prefix
 * for every token (pg_lm_forward). The default train_lm model shape: vocab 65,
 * 4 layers, width 128, 4 heads, rotary, f32; a 16-token prompt, 512 new tokens,
 * 1 thread, eval mode, no grad; one timed run each after building the model.
 * Both runs must produce the same tokens (a line on stderr otherwise). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>

enum { VOCAB = 65, DIM = 128, HEADS = 4, LAYERS = 4, PROMPT = 16, NEW = 512 };

static int64_t argmax_row(const pg_tensor *logits, int64_t row)
{
    const float *p = pg_f32(logits) + row * VOCAB;
    int64_t best = 0;
    for (int64_t v = 1; v < VOCAB; v++)
        best = p[v] > p[best] ? v : best;
    return best;
}

/* seq[PROMPT .. PROMPT + NEW) from seq[0 .. PROMPT) through the cache; seconds or -1 */
static double run_cached(pg_lm *lm, int64_t *seq)
{
    pg_graph *g = pg_graph_new();
    pg_lm_cache *c = pg_lm_cache_new(lm, 1, PROMPT + NEW);
    pg_tensor *prompt = pg_tensor_from_array(NULL, PG_I64, PG_SHAPE(1, PROMPT), seq);
    pg_tensor *one = pg_empty(NULL, PG_I64, PG_SHAPE(1, 1));
    double t0 = now_s(), secs = -1;
    pg_tensor *logits = g && c && prompt && one ? pg_lm_cache_prefill(g, lm, c, prompt) : NULL;
    if (logits)
        seq[PROMPT] = argmax_row(logits, PROMPT - 1);
    for (int64_t i = PROMPT + 1; logits && i < PROMPT + NEW; i++) {
        pg_graph_reset(g);
        pg_i64(one)[0] = seq[i - 1];
        logits = pg_lm_cache_step(g, lm, c, one);
        if (logits)
            seq[i] = argmax_row(logits, 0);
    }
    if (logits)
        secs = now_s() - t0;
    else
        fprintf(stderr, "generate_cached: %s\n", pg_last_error());
    pg_tensor_free(prompt);
    pg_tensor_free(one);
    pg_lm_cache_free(c);
    pg_graph_free(g);
    return secs;
}

/* the same by a full forward of the prefix for every new token; seconds or -1 */
static double run_full(pg_lm *lm, int64_t *seq)
{
    pg_graph *g = pg_graph_new();
    if (!g)
        return -1;
    double t0 = now_s();
    for (int64_t L = PROMPT; L < PROMPT + NEW; L++) {
        pg_graph_reset(g);
        pg_no_grad_begin(g);
        pg_tensor *ids = pg_from_array(g, PG_I64, PG_SHAPE(1, L), seq);
        pg_tensor *logits = pg_lm_forward(g, lm, ids, NULL);
        pg_no_grad_end(g);
        if (!logits) {
            fprintf(stderr, "generate_full: %s\n", pg_graph_error(g));
            pg_graph_free(g);
            return -1;
        }
        seq[L] = argmax_row(logits, L - 1);
    }
    double secs = now_s() - t0;
    pg_graph_free(g);
    return secs;
}

void bench_generate_all(const char *only)
{
    bool cached = bench_selected(only, "generate_cached_tok_s"), full = bench_selected(only, "generate_full_tok_s");
    if (!cached && !full)
        return;
    int saved = pg_num_threads();
    pg_set_num_threads(1);
    pg_lm_config cfg = pg_lm_defaults(VOCAB, DIM, HEADS, LAYERS);
    cfg.seed = 1;
    cfg.layer_pos[cfg.n_layer_pos++] = (pg_posmod_spec){.kind = "rotary"};
    pg_lm *lm = pg_lm_new(&cfg);
    static int64_t a[PROMPT + NEW], b[PROMPT + NEW];
    for (int i = 0; i < PROMPT; i++)
        a[i] = b[i] = (i * 7 + 3) % VOCAB;
    if (lm) {
        pg_module_train(&lm->base, false);
        if (cached) {
            double s = run_cached(lm, a);
            printf("generate_cached_tok_s %.1f tok/s\n", s > 0 ? NEW / s : -1.0);
            fflush(stdout);
        }
        if (full) {
            double s = run_full(lm, b);
            printf("generate_full_tok_s %.1f tok/s\n", s > 0 ? NEW / s : -1.0);
        }
        for (int i = PROMPT; cached && full && i < PROMPT + NEW; i++)
            if (a[i] != b[i]) {
                fprintf(stderr, "generate: cached and full tokens differ from position %d\n", i);
                break;
            }
        pg_module_free(&lm->base);
    } else {
        fprintf(stderr, "generate: %s\n", pg_last_error());
    }
    pg_set_num_threads(saved);
}
