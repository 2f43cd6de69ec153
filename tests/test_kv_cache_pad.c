/* Left padding in the KV cache (pg_lm_cache_set_start) and in generation
 * (pg_sample_opts.prompt_start): a batch of 3 prompts of lengths 5, 2 and 7,
 * left-padded to width 7, then 16 steps of fixed ids; for every scheme the
 * cache decodes, each row's cached logits at every real position equal those
 * of the full forward (pg_lm_forward, the independent reference) of the row's
 * own unpadded sequence within 1e-12 in float64, past max_len where the scheme
 * has none, with bands measured in positions; greedy generation gives each row
 * the ids its unpadded prompt gives alone; and the bad calls. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../nn/kv_cache.h"
#include "../nn/pos_cope.h"
#include "../nn/pos_fire.h"
#include "../nn/pos_fox.h"
#include "../nn/pos_rotary.h"
#include "../nn/pos_rel.h"
#include "testutil.h"

enum { VOCAB = 11, DIM = 16, HEADS = 2, LAYERS = 2, B = 3, W = 7, STEPS = 16, TOTAL = W + STEPS };
static const int64_t LENS[B] = {5, 2, 7};   /* the prompts' real lengths */
static const int64_t START[B] = {2, 5, 0}; /* their leading pad columns: W - LENS */

static pg_lm *pad_lm(const char *input, const char *layer, const void *opts, int64_t max_len, pg_attn_band band)
{
    pg_lm_config c = pg_lm_defaults(VOCAB, DIM, HEADS, LAYERS);
    c.max_len = max_len;
    c.band = band;
    return test_small_lm(c, input, layer, opts);
}

/* seq (B, TOTAL): row b is pads (id 3 + b, so pads differ between rows) then LENS[b] prompt ids then STEPS
 * fixed ids, all random */
static pg_tensor *padded_ids(uint64_t seed)
{
    pg_tensor *ids = pg_empty(NULL, PG_I64, PG_SHAPE(B, TOTAL));
    pg_rng r = pg_rng_init(seed);
    for (int64_t i = 0; i < B * TOTAL; i++)
        pg_i64(ids)[i] = i % TOTAL < START[i / TOTAL] ? 3 + i / TOTAL : (int64_t)(pg_rng_uniform(&r) * VOCAB) % VOCAB;
    return ids;
}

/* row b of seq without its pads, the first n real ids: (1, n) heap */
static pg_tensor *unpadded(const pg_tensor *seq, int64_t b, int64_t n)
{
    pg_tensor *t = pg_empty(NULL, PG_I64, PG_SHAPE(1, n));
    memcpy(pg_i64(t), pg_i64(seq) + b * seq->shape[1] + START[b], (size_t)n * sizeof(int64_t));
    return t;
}

/* worst |got[b, i, :] - ref_b[column t0 + i - START[b]]| over the real columns of a call's logits got (B, n, V) */
static double worst_vs_rows(const pg_tensor *got, pg_tensor *const *ref, int64_t t0, int64_t n)
{
    cr_assert_not_null(got, "cached logits are NULL: %s", pg_last_error());
    double worst = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) {
            int64_t p = t0 + i - START[b];
            for (int64_t v = 0; p >= 0 && v < VOCAB; v++) {
                double d = fabs(pg_f64(got)[(b * n + i) * VOCAB + v] - pg_f64(ref[b])[p * VOCAB + v]);
                cr_assert(isfinite(pg_f64(got)[(b * n + i) * VOCAB + v]), "row %lld column %lld: not finite",
                          (long long)b, (long long)(t0 + i));
                worst = d > worst || isnan(d) ? d : worst;
            }
        }
    return worst;
}

/* prefill the padded prompts in chunks (chunk[0] columns first, ... summing to W), then STEPS single steps;
 * the worst difference to each row's own full forward */
static double padded_decode_diff(pg_lm *lm, const int64_t *chunk, int n_chunk, uint64_t seed)
{
    pg_tensor *seq = padded_ids(seed), *ref[B], *rows[B];
    for (int64_t b = 0; b < B; b++) {
        rows[b] = unpadded(seq, b, LENS[b] + STEPS);
        ref[b] = pg_lm_forward(NULL, lm, rows[b], NULL); /* (1, LENS[b] + STEPS, V) */
        cr_assert_not_null(ref[b], "full forward of row %lld: %s", (long long)b, pg_last_error());
    }
    pg_graph *g = pg_graph_new();
    pg_lm_cache *c = pg_lm_cache_new(lm, B, TOTAL);
    cr_assert_not_null(c, "pg_lm_cache_new: %s", pg_last_error());
    cr_assert_eq(pg_lm_cache_set_start(c, START), 0, "%s", pg_last_error());
    double worst = 0;
    for (int k = 0, t = 0; k < n_chunk; t += (int)chunk[k++]) {
        pg_graph_reset(g);
        pg_tensor *part = pg_narrow(g, seq, 1, t, chunk[k]);
        worst = fmax(worst, worst_vs_rows(pg_lm_cache_prefill(g, lm, c, part), ref, t, chunk[k]));
    }
    for (int64_t t = W; t < TOTAL; t++) {
        pg_graph_reset(g);
        double d = worst_vs_rows(pg_lm_cache_step(g, lm, c, pg_narrow(g, seq, 1, t, 1)), ref, t, 1);
        worst = d > worst || isnan(d) ? d : worst;
    }
    cr_assert_eq(pg_lm_cache_len(c), TOTAL);
    pg_lm_cache_free(c);
    pg_graph_free(g);
    for (int64_t b = 0; b < B; b++) {
        pg_tensor_free(ref[b]);
        pg_tensor_free(rows[b]);
    }
    pg_tensor_free(seq);
    return worst;
}

/* one scheme: the prompts in one prefill, and in chunks of 6 and 1 (the first past every row's start) */
static void check_padded(const char *input, const char *layer, const void *opts, int64_t max_len, pg_attn_band band)
{
    pg_lm *lm = pad_lm(input, layer, opts, max_len, band);
    double one = padded_decode_diff(lm, (const int64_t[]){W}, 1, 3);
    double two = padded_decode_diff(lm, (const int64_t[]){6, 1}, 2, 4);
    double worst = fmax(one, two);
    printf("kv_cache_pad %s/%s%s: worst padded-vs-unpadded difference %.3g\n", input ? input : "-",
           layer ? layer : "-", band.window > 0 ? " (band)" : "", worst);
    cr_assert(worst <= 1e-12, "%s/%s: worst padded-vs-unpadded difference %.3g (one prefill %.3g, chunked %.3g)",
              input ? input : "-", layer ? layer : "-", worst, one, two);
    pg_module_free(&lm->base);
}

static void check(const char *input, const char *layer, const void *opts, int64_t max_len)
{
    check_padded(input, layer, opts, max_len, (pg_attn_band){0});
}

/* max_len 0 (unbounded) where the scheme allows: the decode runs past any trained length */
Test(kv_cache_pad, no_positions) { check(NULL, NULL, NULL, 0); }
Test(kv_cache_pad, sinusoidal) { check("sinusoidal", NULL, NULL, 0); }
Test(kv_cache_pad, learned) { check("learned", NULL, NULL, TOTAL); }
Test(kv_cache_pad, continuous) { check("continuous", NULL, NULL, 0); }
Test(kv_cache_pad, rotary) { check(NULL, "rotary", NULL, 0); }
Test(kv_cache_pad, xpos) { check(NULL, "xpos", NULL, 0); }
Test(kv_cache_pad, alibi) { check(NULL, "alibi", NULL, 0); }
Test(kv_cache_pad, dpb) { check(NULL, "dpb", NULL, 0); }
Test(kv_cache_pad, t5) { check(NULL, "t5", NULL, 0); }
Test(kv_cache_pad, kerple) { check(NULL, "kerple", NULL, 0); }
Test(kv_cache_pad, sandwich) { check(NULL, "sandwich", NULL, 0); }
Test(kv_cache_pad, fire) { check(NULL, "fire", NULL, 0); }
/* L = 4: the bias depends on the query position past it (psi(max(L, i))), per row */
Test(kv_cache_pad, fire_past_its_length) { check(NULL, "fire", &(pg_fire_opts){.init_L = 4}, 0); }
Test(kv_cache_pad, xl) { check("sinusoidal", "xl", NULL, 0); }
Test(kv_cache_pad, cope) { check(NULL, "cope", NULL, TOTAL); } /* npos = max_len + 1 */
Test(kv_cache_pad, cope_xt) { check(NULL, "cope", &(pg_cope_opts){.convention = PG_COPE_XT, .npos = 4}, 0); }
Test(kv_cache_pad, fox) { check(NULL, "fox", NULL, 0); }
Test(kv_cache_pad, fox_dd_alibi) { check("sinusoidal", "fox", &(pg_fox_opts){.init = PG_FOX_INIT_DD_ALIBI}, 0); }

Test(kv_cache_pad, rotary_pi)
{
    pg_rotary_opts o = test_rope_opts(TEST_ROPE_PI);
    check(NULL, "rotary", &o, 0);
}

Test(kv_cache_pad, rotary_yarn)
{
    pg_rotary_opts o = test_rope_opts(TEST_ROPE_YARN);
    check(NULL, "rotary", &o, 0);
}

Test(kv_cache_pad, xpos_fixed_centre)
{
    pg_rotary_opts o = test_rope_opts(TEST_XPOS_FIXED);
    check(NULL, "rotary", &o, 0);
}

/* bands in positions: window 3 (a ring of 9 slots of 23 columns), the prefill cut in pieces of 3, some of
 * them only pads for a row */
static const pg_attn_band BAND = {.window = 3, .look_backward = 1};
Test(kv_cache_pad, band_none) { check_padded(NULL, NULL, NULL, 0, BAND); }
Test(kv_cache_pad, band_rotary) { check_padded(NULL, "rotary", NULL, 0, BAND); }
Test(kv_cache_pad, band_alibi) { check_padded(NULL, "alibi", NULL, 0, BAND); }
Test(kv_cache_pad, band_t5) { check_padded(NULL, "t5", NULL, 0, BAND); }
/* CoPE over the ring's keys in column order, FoX's c_t by column: the pads never between a real key and query */
Test(kv_cache_pad, band_cope)
{
    check_padded(NULL, "cope", &(pg_cope_opts){.convention = PG_COPE_XT, .npos = 5}, 0, BAND);
}
Test(kv_cache_pad, band_fox) { check_padded(NULL, "fox", NULL, 0, BAND); }
Test(kv_cache_pad, fox_bidirectional) { check(NULL, "fox", &(pg_fox_opts){.bidirectional = true}, 0); }
Test(kv_cache_pad, rel1d) { check(NULL, "rel1d", NULL, TOTAL); }
Test(kv_cache_pad, band_exact_t5)
{
    check_padded(NULL, "t5", NULL, 0, (pg_attn_band){.window = 2, .look_backward = 2, .exact = true});
}

/* reset clears the starts: an unpadded prefill after it equals one on a new cache */
Test(kv_cache_pad, reset_clears_the_starts)
{
    pg_lm *lm = pad_lm(NULL, "rotary", NULL, 0, (pg_attn_band){0});
    pg_graph *g = pg_graph_new();
    pg_tensor *seq = padded_ids(5);
    pg_lm_cache *c = pg_lm_cache_new(lm, B, W), *fresh = pg_lm_cache_new(lm, B, W);
    cr_assert_eq(pg_lm_cache_set_start(c, START), 0, "%s", pg_last_error());
    cr_assert_not_null(pg_lm_cache_prefill(g, lm, c, pg_narrow(g, seq, 1, 0, W)), "%s", pg_last_error());
    pg_lm_cache_reset(c);
    pg_tensor *a = pg_lm_cache_prefill(g, lm, c, pg_narrow(g, seq, 1, 0, W));
    pg_tensor *b = pg_lm_cache_prefill(g, lm, fresh, pg_narrow(g, seq, 1, 0, W));
    cr_assert(a && b, "%s", pg_last_error());
    cr_assert(memcmp(pg_f64(a), pg_f64(b), (size_t)a->numel * sizeof(double)) == 0, "reset kept the starts");
    pg_lm_cache_free(c);
    pg_lm_cache_free(fresh);
    pg_tensor_free(seq);
    pg_graph_free(g);
    pg_module_free(&lm->base);
}

/* ---- generation ------------------------------------------------------------------------------ */

/* greedy pg_lm_generate_ex of the padded prompts (B, W) with prompt_start against each row's unpadded prompt
 * alone: the same ids, the pads kept in front */
static void check_generate(pg_lm *lm, const char *what)
{
    pg_tensor *seq = padded_ids(6), *prompt = pg_narrow(NULL, seq, 1, 0, W);
    pg_sample_opts o = pg_sample_defaults();
    o.temperature = 0;
    o.max_new = STEPS;
    o.prompt_start = START;
    pg_tensor *got = pg_lm_generate_ex(lm, prompt, &o);
    cr_assert_not_null(got, "%s: %s", what, pg_last_error());
    cr_assert_eq(got->shape[1], TOTAL);
    o.prompt_start = NULL;
    for (int64_t b = 0; b < B; b++) {
        pg_tensor *alone_prompt = unpadded(seq, b, LENS[b]);
        pg_tensor *alone = pg_lm_generate_ex(lm, alone_prompt, &o); /* (1, LENS[b] + STEPS) */
        cr_assert_not_null(alone, "%s: %s", what, pg_last_error());
        const int64_t *row = pg_i64(got) + b * TOTAL;
        cr_assert(memcmp(row, pg_i64(seq) + b * TOTAL, (size_t)START[b] * sizeof(int64_t)) == 0,
                  "%s: row %lld lost its pads", what, (long long)b);
        cr_assert(memcmp(row + START[b], pg_i64(alone), (size_t)(LENS[b] + STEPS) * sizeof(int64_t)) == 0,
                  "%s: row %lld's ids differ from its unpadded prompt's", what, (long long)b);
        pg_tensor_free(alone);
        pg_tensor_free(alone_prompt);
    }
    pg_tensor_free(got);
    pg_tensor_free(prompt);
    pg_tensor_free(seq);
}

Test(kv_cache_pad, generate_through_the_cache)
{
    const char *layers[] = {"rotary", "alibi", "fox", "cope"};
    for (int k = 0; k < 4; k++) {
        pg_lm *lm = pad_lm(NULL, layers[k], NULL, k == 3 ? TOTAL : 0, (pg_attn_band){0});
        check_generate(lm, layers[k]);
        pg_module_free(&lm->base);
    }
}

/* max_len 10 < 23 columns: the cache until then, after it the full forward of each row's own last 10 ids;
 * max_len 5 < the width 7 (a start of 5 past the cache's capacity): full forwards only */
Test(kv_cache_pad, generate_past_max_len)
{
    const char *input[] = {NULL, "learned", NULL}, *layer[] = {"rotary", NULL, "rotary"};
    for (int k = 0; k < 3; k++) {
        pg_lm *lm = pad_lm(input[k], layer[k], NULL, k == 2 ? 5 : 10, (pg_attn_band){0});
        check_generate(lm, layer[k] ? layer[k] : input[k]);
        pg_module_free(&lm->base);
    }
}

/* dynamic NTK rotary: one length sets the frequencies of a whole cached batch, so the cache
 * refuses left padding and generation takes full forwards of each row from the start */
Test(kv_cache_pad, generate_without_a_cache)
{
    pg_rotary_opts o = pg_rotary_defaults();
    o.scaling = PG_ROPE_DYNAMIC_NTK;
    o.rope_orig_len = 8;
    pg_lm *lm = pad_lm(NULL, "rotary", &o, 0, (pg_attn_band){0});
    pg_lm_cache *c = pg_lm_cache_new(lm, B, W);
    cr_assert_not_null(c, "%s", pg_last_error());
    ASSERT_RC_FAILS(pg_lm_cache_set_start(c, START), "pg_lm_cache_set_start: a dynamic_* rotary scaling takes its "
                                                     "frequencies from the sequence's length");
    cr_assert_eq(pg_lm_cache_set_start(c, (const int64_t[]){0, 0, 0}), 0, "no padding: %s", pg_last_error());
    pg_lm_cache_free(c);
    check_generate(lm, "dynamic ntk");
    pg_module_free(&lm->base);
}

/* ---- bad calls ---------------------------------------------------------------------------- */

Test(kv_cache_pad, bad_starts)
{
    pg_lm *lm = pad_lm(NULL, "alibi", NULL, 0, (pg_attn_band){0});
    pg_graph *g = pg_graph_new();
    pg_lm_cache *c = pg_lm_cache_new(lm, B, W);
    ASSERT_RC_FAILS(pg_lm_cache_set_start(NULL, START), "pg_lm_cache_set_start: cache is NULL");
    ASSERT_RC_FAILS(pg_lm_cache_set_start(c, NULL), "pg_lm_cache_set_start: start is NULL");
    ASSERT_RC_FAILS(pg_lm_cache_set_start(c, (const int64_t[]){0, -1, 0}), "start[1] = -1, need 0 <= start");
    ASSERT_RC_FAILS(pg_lm_cache_set_start(c, (const int64_t[]){7, 0, 0}), "start[0] = 7, need 0 <= start < the "
                                                                           "capacity 7");
    /* a row holding only pads after a call */
    cr_assert_eq(pg_lm_cache_set_start(c, START), 0, "%s", pg_last_error());
    pg_tensor *seq = padded_ids(7);
    ASSERT_FAILS(pg_lm_cache_prefill(g, lm, c, pg_narrow(g, seq, 1, 0, 5)),
                 "pg_lm_cache_prefill: row 1 starts at column 5 (pg_lm_cache_set_start) but would hold 5 columns");
    pg_graph_reset(g);
    cr_assert_eq(pg_lm_cache_len(c), 0);
    cr_assert_not_null(pg_lm_cache_prefill(g, lm, c, pg_narrow(g, seq, 1, 0, 6)), "%s", pg_last_error());
    ASSERT_RC_FAILS(pg_lm_cache_set_start(c, START), "pg_lm_cache_set_start: the cache holds 6 tokens");
    /* generation */
    pg_tensor *prompt = pg_narrow(NULL, seq, 1, 0, W);
    pg_sample_opts o = pg_sample_defaults();
    o.max_new = 2;
    o.prompt_start = (const int64_t[]){0, 7, 0};
    ASSERT_FAILS(pg_lm_generate_ex(lm, prompt, &o), "pg_lm_generate_ex: prompt_start[1] = 7, need 0 <= start < "
                                                    "the prompt's width 7");
    o.prompt_start = (const int64_t[]){-2, 0, 0};
    ASSERT_FAILS(pg_lm_generate_ex(lm, prompt, &o), "pg_lm_generate_ex: prompt_start[0] = -2");
    pg_tensor_free(prompt);
    pg_tensor_free(seq);
    pg_lm_cache_free(c);
    pg_graph_free(g);
    pg_module_free(&lm->base);
}
