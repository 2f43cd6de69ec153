/* Incremental decoding with the key/value cache (nn/kv_cache.c): for every
 * scheme the cache decodes, a prefill and single steps give the logits of the
 * full forward of the whole sequence (pg_lm_forward, the independent reference)
 * at every position within 1e-12 in float64, batch 2, prefills of 1 and 5
 * tokens, past max_len where the scheme has none; and the bad calls. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../nn/kv_cache.h"
#include "../nn/pos_cope.h"
#include "../nn/pos_fire.h"
#include "../nn/pos_fox.h"
#include "../nn/pos_rel.h"
#include "../nn/pos_rotary.h"
#include "testutil.h"

enum { VOCAB = 11, DIM = 16, HEADS = 2, LAYERS = 2 };

static pg_attn_band BAND; /* every block's band for the next small_lm (window 0: none) */
static int64_t N_LAYERS = LAYERS; /* blocks of the next small_lm */

/* A small f64 LM in eval mode with one input kind and one layer kind (either NULL) (testutil.h) */
static pg_lm *small_lm(const char *input, const char *layer, const void *layer_opts, int64_t max_len)
{
    pg_lm_config c = pg_lm_defaults(VOCAB, DIM, HEADS, N_LAYERS);
    c.max_len = max_len;
    c.band = BAND;
    return test_small_lm(c, input, layer, layer_opts);
}

/* ids (B, L) with random tokens */
static pg_tensor *random_ids(int64_t B, int64_t L, uint64_t seed)
{
    pg_tensor *ids = pg_empty(NULL, PG_I64, PG_SHAPE(B, L));
    pg_rng r = pg_rng_init(seed);
    for (int64_t i = 0; i < B * L; i++)
        pg_i64(ids)[i] = (int64_t)(pg_rng_uniform(&r) * VOCAB) % VOCAB;
    return ids;
}

/* worst |a - full[b, t0 + i, :]| over a (B, n, V) against full (B, L, V) */
static double worst_diff(const pg_tensor *a, const pg_tensor *full, int64_t t0, int64_t n)
{
    cr_assert_not_null(a, "cached logits are NULL: %s", pg_last_error());
    int64_t B = full->shape[0], L = full->shape[1];
    double worst = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t v = 0; v < VOCAB; v++) {
                double d = fabs(pg_f64(a)[(b * n + i) * VOCAB + v] - pg_f64(full)[(b * L + t0 + i) * VOCAB + v]);
                worst = d > worst || isnan(d) ? d : worst;
            }
    return worst;
}

/* prefill L0 tokens, then single steps to L; the worst difference to the full forward */
static double decode_diff(pg_lm *lm, int64_t B, int64_t L0, int64_t L, uint64_t seed)
{
    pg_tensor *ids = random_ids(B, L, seed);
    pg_graph *g = pg_graph_new();
    pg_tensor *full = pg_lm_forward(NULL, lm, ids, NULL); /* (B, L, V), heap */
    cr_assert_not_null(full, "full forward: %s", pg_last_error());
    pg_lm_cache *c = pg_lm_cache_new(lm, B, L);
    cr_assert_not_null(c, "pg_lm_cache_new: %s", pg_last_error());
    pg_tensor *prompt = pg_narrow(NULL, ids, 1, 0, L0);
    double worst = worst_diff(pg_lm_cache_prefill(g, lm, c, prompt), full, 0, L0);
    for (int64_t t = L0; t < L; t++) {
        pg_graph_reset(g);
        pg_tensor *one = pg_narrow(g, ids, 1, t, 1);
        double d = worst_diff(pg_lm_cache_step(g, lm, c, one), full, t, 1);
        worst = d > worst || isnan(d) ? d : worst;
    }
    cr_assert_eq(pg_lm_cache_len(c), L);
    pg_lm_cache_free(c);
    pg_tensor_free(prompt);
    pg_tensor_free(full);
    pg_tensor_free(ids);
    pg_graph_free(g);
    return worst;
}

/* every check of one scheme: batch 2, prefills of 5 and 1 tokens, 24 tokens in all */
static void check_scheme(const char *input, const char *layer, const void *opts, int64_t max_len)
{
    pg_lm *lm = small_lm(input, layer, opts, max_len);
    double d5 = decode_diff(lm, 2, 5, 24, 3), d1 = decode_diff(lm, 1, 1, 24, 4);
    double worst = fmax(d5, d1);
    printf("kv_cache %s/%s: worst cached-vs-full difference %.3g\n", input ? input : "-", layer ? layer : "-",
           worst);
    cr_assert(worst <= 1e-12, "%s/%s: worst cached-vs-full difference %.3g (prefill 5: %.3g, prefill 1: %.3g)",
              input ? input : "-", layer ? layer : "-", worst, d5, d1);
    pg_module_free(&lm->base);
}

/* max_len 0 (unbounded) where the scheme allows: the decode runs past any trained length */
Test(kv_cache, no_positions) { check_scheme(NULL, NULL, NULL, 0); }
Test(kv_cache, sinusoidal) { check_scheme("sinusoidal", NULL, NULL, 0); }
Test(kv_cache, learned) { check_scheme("learned", NULL, NULL, 24); }
Test(kv_cache, continuous) { check_scheme("continuous", NULL, NULL, 0); }
Test(kv_cache, rotary) { check_scheme(NULL, "rotary", NULL, 0); }
Test(kv_cache, xpos) { check_scheme(NULL, "xpos", NULL, 0); }
Test(kv_cache, alibi) { check_scheme(NULL, "alibi", NULL, 0); }
Test(kv_cache, dpb) { check_scheme(NULL, "dpb", NULL, 0); }
Test(kv_cache, t5) { check_scheme(NULL, "t5", NULL, 0); }
Test(kv_cache, kerple) { check_scheme(NULL, "kerple", NULL, 0); }
Test(kv_cache, sandwich) { check_scheme(NULL, "sandwich", NULL, 0); }
Test(kv_cache, fire) { check_scheme(NULL, "fire", NULL, 0); }
/* L = 4: the bias depends on the query position past it (psi(max(L, i))) */
Test(kv_cache, fire_past_its_length) { check_scheme(NULL, "fire", &(pg_fire_opts){.init_L = 4}, 0); }
Test(kv_cache, xl) { check_scheme(NULL, "xl", NULL, 0); }
Test(kv_cache, cope) { check_scheme(NULL, "cope", NULL, 24); } /* npos = max_len + 1 */
Test(kv_cache, cope_xt) { check_scheme(NULL, "cope", &(pg_cope_opts){.convention = PG_COPE_XT, .npos = 4}, 0); }
Test(kv_cache, fox) { check_scheme(NULL, "fox", NULL, 0); }
Test(kv_cache, sinusoidal_and_fox_dd_alibi)
{
    check_scheme("sinusoidal", "fox", &(pg_fox_opts){.init = PG_FOX_INIT_DD_ALIBI}, 0);
}
Test(kv_cache, sinusoidal_and_alibi) { check_scheme("sinusoidal", "alibi", NULL, 0); }
/* the tables of the vision kinds indexed by the explicit positions (bounded by max_len / the map) */
Test(kv_cache, abs1d) { check_scheme(NULL, "abs1d", NULL, 24); }
Test(kv_cache, rel1d) { check_scheme(NULL, "rel1d", &(pg_rel1d_opts){.heads = HEADS}, 24); }
Test(kv_cache, rel2d) { check_scheme(NULL, "rel2d", &(pg_rel2d_opts){.height = 4, .width = 6}, 24); }
/* the causal LM hides the keys after the query, where the second gate c' acts: c alone decodes */
Test(kv_cache, fox_bidirectional) { check_scheme(NULL, "fox", &(pg_fox_opts){.bidirectional = true}, 0); }

Test(kv_cache, rotary_scaling_yarn)
{
    pg_rotary_opts o = test_rope_opts(TEST_ROPE_YARN);
    check_scheme(NULL, "rotary", &o, 0);
}

Test(kv_cache, xpos_fixed_centre)
{
    pg_rotary_opts o = test_rope_opts(TEST_XPOS_FIXED);
    check_scheme(NULL, "rotary", &o, 0);
}

Test(kv_cache, rotary_scaling_linear)
{
    pg_rotary_opts o = test_rope_opts(TEST_ROPE_PI);
    check_scheme(NULL, "rotary", &o, 0);
}

/* a prefill on a non-empty cache extends it: chunks of 3, 1, 4, 1, 7 tokens */
Test(kv_cache, chunked_prefill)
{
    const char *kinds[] = {"rotary", "alibi", "t5"};
    for (int k = 0; k < 3; k++) {
        pg_lm *lm = small_lm("sinusoidal", kinds[k], NULL, 0);
        pg_tensor *ids = random_ids(2, 16, 5);
        pg_tensor *full = pg_lm_forward(NULL, lm, ids, NULL);
        pg_lm_cache *c = pg_lm_cache_new(lm, 2, 16);
        pg_graph *g = pg_graph_new();
        const int64_t chunks[] = {3, 1, 4, 1, 7};
        double worst = 0;
        for (int i = 0, t = 0; i < 5; t += (int)chunks[i++]) {
            pg_graph_reset(g);
            pg_tensor *part = pg_narrow(g, ids, 1, t, chunks[i]);
            double d = worst_diff(pg_lm_cache_prefill(g, lm, c, part), full, t, chunks[i]);
            worst = fmax(worst, d);
        }
        cr_assert(worst <= 1e-12, "%s: worst chunked difference %.3g", kinds[k], worst);
        pg_lm_cache_free(c);
        pg_graph_free(g);
        pg_tensor_free(full);
        pg_tensor_free(ids);
        pg_module_free(&lm->base);
    }
}

/* local attention bands: the keys in a ring of w (lb + 2) slots (12 or 8 here, of 24 tokens), prefills
 * of 5 tokens cut into pieces of one window */
static void check_banded_with(const char *input, const char *layer, const void *opts, pg_attn_band band)
{
    BAND = band;
    check_scheme(input, layer, opts, 0);
    BAND = (pg_attn_band){0};
}
static void check_banded(const char *input, const char *layer, pg_attn_band band)
{
    check_banded_with(input, layer, NULL, band);
}
Test(kv_cache, band_none) { check_banded(NULL, NULL, (pg_attn_band){.window = 4, .look_backward = 1}); }
Test(kv_cache, band_rotary) { check_banded(NULL, "rotary", (pg_attn_band){.window = 4, .look_backward = 1}); }
Test(kv_cache, band_alibi) { check_banded(NULL, "alibi", (pg_attn_band){.window = 3, .look_backward = 1}); }
Test(kv_cache, band_xl) { check_banded("sinusoidal", "xl", (pg_attn_band){.window = 4, .look_backward = 1}); }
Test(kv_cache, band_exact_t5)
{
    check_banded(NULL, "t5", (pg_attn_band){.window = 2, .look_backward = 2, .exact = true});
}
Test(kv_cache, band_fire) { check_banded(NULL, "fire", (pg_attn_band){.window = 4, .look_backward = 0}); }
/* CoPE's gates over the keys its band shows, gathered in order from the ring (which wraps); FoX's
 * c_j read at the ring's positions */
Test(kv_cache, band_cope)
{
    pg_cope_opts o = {.convention = PG_COPE_XT, .npos = 6};
    check_banded_with(NULL, "cope", &o, (pg_attn_band){.window = 4, .look_backward = 1});
    check_banded_with(NULL, "cope", &o, (pg_attn_band){.window = 3, .look_backward = 2, .exact = true});
}
Test(kv_cache, band_fox)
{
    check_banded(NULL, "fox", (pg_attn_band){.window = 4, .look_backward = 1});
    check_banded_with("sinusoidal", "fox", &(pg_fox_opts){.bidirectional = true},
                      (pg_attn_band){.window = 3, .look_backward = 0});
}

/* reset empties the cache and a second sequence decodes as the first */
Test(kv_cache, reset_reuses)
{
    pg_lm *lm = small_lm(NULL, "rotary", NULL, 0);
    pg_graph *g = pg_graph_new();
    pg_lm_cache *c = pg_lm_cache_new(lm, 1, 4);
    pg_tensor *ids = TI64(PG_SHAPE(1, 3), 1, 2, 3);
    pg_tensor *a = pg_lm_cache_prefill(g, lm, c, ids);
    cr_assert_not_null(a, "%s", pg_last_error());
    double first = pg_f64(a)[2 * VOCAB];
    pg_lm_cache_reset(c);
    cr_assert_eq(pg_lm_cache_len(c), 0);
    pg_tensor *b = pg_lm_cache_prefill(g, lm, c, ids);
    cr_assert_not_null(b, "%s", pg_last_error());
    cr_assert_eq(pg_f64(b)[2 * VOCAB], first);
    pg_tensor_free(ids);
    pg_lm_cache_free(c);
    pg_graph_free(g);
    pg_module_free(&lm->base);
}

/* ---- bad calls ---------------------------------------------------------------------------- */

#define GRAPH_FAILS(expr, needle)                                                                              \
    do {                                                                                                       \
        pg_graph_reset(g);                                                                                     \
        ASSERT_FAILS(expr, needle);                                                                            \
    } while (0)

Test(kv_cache, bad_calls)
{
    pg_lm *lm = small_lm(NULL, "alibi", NULL, 0);
    pg_lm *other = small_lm(NULL, NULL, NULL, 0);
    other->cfg.layers = 1; /* only its shape is read: a model of another shape */
    pg_graph *g = pg_graph_new();
    pg_lm_cache *c = pg_lm_cache_new(lm, 2, 4);
    cr_assert_not_null(c, "%s", pg_last_error());
    pg_tensor *p3 = TI64(PG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), *p1 = TI64(PG_SHAPE(2, 1), 1, 2);
    pg_tensor *wrong_b = TI64(PG_SHAPE(1, 1), 1), *f = T64(PG_SHAPE(2, 1), 1, 2);
    pg_tensor *big = TI64(PG_SHAPE(2, 1), 1, VOCAB);
    GRAPH_FAILS(pg_lm_cache_step(g, lm, c, p3), "ids is i64[2,3], expected i64 (2, 1)");
    GRAPH_FAILS(pg_lm_cache_step(g, lm, c, wrong_b), "ids is i64[1,1]");
    GRAPH_FAILS(pg_lm_cache_step(g, lm, c, f), "ids is f64[2,1]");
    GRAPH_FAILS(pg_lm_cache_step(g, lm, c, big), "outside the vocabulary [0, 11)");
    GRAPH_FAILS(pg_lm_cache_step(g, other, c, p1), "the cache was made for another model shape: 2 layers");
    GRAPH_FAILS(pg_lm_cache_step(g, lm, NULL, p1), "pg_lm_cache_step: cache is NULL");
    GRAPH_FAILS(pg_lm_cache_prefill(g, NULL, c, p3), "pg_lm_cache_prefill: model is NULL");
    GRAPH_FAILS(pg_lm_cache_prefill(g, lm, c, NULL), "pg_lm_cache_prefill: ids is NULL");
    ASSERT_FAILS(pg_lm_cache_step(NULL, lm, c, p1), "pg_lm_cache_step: graph is NULL");
    cr_assert_eq(pg_lm_cache_len(c), 0, "failed calls leave the cache empty");
    /* a step before any prefill is a prefill of one token */
    pg_graph_reset(g);
    cr_assert_not_null(pg_lm_cache_step(g, lm, c, p1), "%s", pg_last_error());
    pg_graph_reset(g);
    cr_assert_not_null(pg_lm_cache_prefill(g, lm, c, p3), "%s", pg_last_error());
    GRAPH_FAILS(pg_lm_cache_step(g, lm, c, p1),
                "pg_lm_cache_step: the cache holds 4 of its capacity 4 tokens; 1 more asked for (length 5)");
    cr_assert_eq(pg_lm_cache_len(c), 4);
    pg_module_train(&lm->base, true);
    pg_lm_cache_reset(c);
    GRAPH_FAILS(pg_lm_cache_step(g, lm, c, p1), "the model is in train mode");
    pg_tensor *ts[] = {p3, p1, wrong_b, f, big};
    free_all(5, ts);
    pg_lm_cache_free(c);
    pg_graph_free(g);
    other->cfg.layers = LAYERS;
    pg_module_free(&other->base);
    pg_module_free(&lm->base);
}

Test(kv_cache, new_refuses)
{
    pg_lm *lm = small_lm(NULL, "rotary", NULL, 8);
    pg_lm_cache *mode = pg_lm_cache_new(lm, 1, 4);
    cr_assert_eq(pg_lm_cache_set_rope(mode, (pg_lm_cache_rope)7), -1);
    cr_assert(strstr(pg_last_error(), "pg_lm_cache_set_rope: how is not a pg_lm_cache_rope"), "%s", pg_last_error());
    pg_lm_cache_free(mode);
    ASSERT_FAILS(pg_lm_cache_new(NULL, 1, 4), "pg_lm_cache_new: model is NULL");
    ASSERT_FAILS(pg_lm_cache_new(lm, 0, 4), "need batch >= 1 and 1 <= capacity <= the model's max_len");
    ASSERT_FAILS(pg_lm_cache_new(lm, 1, 0), "got batch 1, capacity 0");
    ASSERT_FAILS(pg_lm_cache_new(lm, 1, 9), "capacity 9 (max_len 8)");
    pg_module_free(&lm->base);
    pg_lm_config c = pg_lm_defaults(VOCAB, DIM, HEADS, LAYERS);
    c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){.kind = "alibi", .make = pg_posmod_make_alibi};
    c.max_len = 8;
    lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    ASSERT_FAILS(pg_lm_cache_new(lm, 1, 4), "layer positional module 0 (alibi) is a custom constructor (spec.make)");
    pg_module_free(&lm->base);
    c.n_layer_pos = 0;
    c.band = (pg_attn_band){.window = 4, .look_backward = 1};
    lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    pg_lm_cache *ok = pg_lm_cache_new(lm, 1, 4);
    cr_assert_not_null(ok, "a band alone decodes: %s", pg_last_error());
    pg_lm_cache_free(ok);
    pg_module_free(&lm->base);
    c.layer_pos[0] = c.layer_pos[1] = (pg_posmod_spec){.kind = "fox"};
    c.n_layer_pos = 2;
    lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    ASSERT_FAILS(pg_lm_cache_new(lm, 1, 4), "2 forgetting gates per layer; the cache keeps the running sum of one");
    pg_module_free(&lm->base);
    pg_lm_cache_free(NULL); /* a no-op */
    pg_clear_error();
    cr_assert_eq(pg_lm_cache_set_rope(NULL, PG_LM_CACHE_ROPE_REROTATE), -1);
    cr_assert(strstr(pg_last_error(), "pg_lm_cache_set_rope: cache is NULL"));
    cr_assert_eq(pg_lm_cache_len(NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_lm_cache_len: cache is NULL"));
}

/* Greedy ids after seq[:, :L] by the full forward of the whole prefix (the reference) */
static void greedy_by_full_forward(pg_lm *lm, pg_tensor *seq, int64_t L0, int64_t n)
{
    int64_t B = seq->shape[0], C = seq->shape[1];
    for (int64_t L = L0; L < L0 + n; L++) {
        pg_graph *g = pg_graph_new();
        pg_tensor *ids = pg_empty(g, PG_I64, PG_SHAPE(B, L));
        for (int64_t b = 0; b < B; b++)
            memcpy(pg_i64(ids) + b * L, pg_i64(seq) + b * C, (size_t)L * sizeof(int64_t));
        pg_tensor *logits = pg_lm_forward(g, lm, ids, NULL); /* (B, L, V) */
        cr_assert_not_null(logits, "%s", pg_last_error());
        for (int64_t b = 0; b < B; b++) {
            const double *row = pg_f64(logits) + (b * L + L - 1) * VOCAB;
            int64_t best = 0;
            for (int64_t v = 1; v < VOCAB; v++)
                best = row[v] > row[best] ? v : best;
            pg_i64(seq)[b * C + L] = best;
        }
        pg_graph_free(g);
    }
}

/* pg_lm_generate_ex decodes through the cache: its greedy ids equal those of
 * the full forward of the whole prefix at every step (rotary, alibi, and fox
 * with its running gate sum). */
Test(kv_cache, generate_goes_through_the_cache)
{
    const char *layers[] = {"rotary", "alibi", "fox"};
    for (int k = 0; k < 3; k++) {
        pg_lm *lm = small_lm(NULL, layers[k], NULL, 0);
        int64_t B = 2, L0 = 3, n = 20;
        pg_tensor *prompt = random_ids(B, L0, 5);
        pg_sample_opts o = pg_sample_defaults();
        o.temperature = 0; /* greedy */
        o.max_new = n;
        pg_tensor *got = pg_lm_generate_ex(lm, prompt, &o);
        cr_assert_not_null(got, "%s: %s", layers[k], pg_last_error());
        pg_tensor *want = pg_empty(NULL, PG_I64, PG_SHAPE(B, L0 + n));
        for (int64_t b = 0; b < B; b++)
            memcpy(pg_i64(want) + b * (L0 + n), pg_i64(prompt) + b * L0, (size_t)L0 * sizeof(int64_t));
        greedy_by_full_forward(lm, want, L0, n);
        cr_assert(memcmp(pg_i64(got), pg_i64(want), (size_t)(B * (L0 + n)) * sizeof(int64_t)) == 0,
                  "%s: cached greedy ids differ from the full forward's", layers[k]);
        pg_tensor_free(got);
        pg_tensor_free(want);
        pg_tensor_free(prompt);
        pg_module_free(&lm->base);
    }
}

/* ---- rotary scalings whose frequencies depend on the length (dynamic_*) -------------------------
 * The cache keeps such keys before rotation and rotates all of them at each call at the
 * frequencies of the length after it (nn/kv_cache.h). The first block's attention is then the full
 * forward's; a deeper block's keys of earlier tokens come from states computed when those tokens
 * were new. stepwise_reference computes exactly that without the cache: the prompt's states in one
 * pg_block_forward per block, then for each new token t, block l's output row t from
 * pg_block_forward over the states of tokens 0..t entering it. */
static void copy_rows(pg_tensor *dst, const pg_tensor *src, int64_t from, int64_t n, int64_t at)
{
    int64_t B = dst->shape[0], Ld = dst->shape[1], Ls = src->shape[1], D = dst->shape[2];
    for (int64_t b = 0; b < B; b++)
        memcpy(pg_f64(dst) + (b * Ld + at) * D, pg_f64(src) + (b * Ls + from) * D, (size_t)(n * D) * sizeof(double));
}

static pg_tensor *stepwise_reference(pg_lm *lm, pg_tensor *ids, int64_t L0)
{
    int64_t B = ids->shape[0], L = ids->shape[1], nl = lm->cfg.layers;
    pg_graph *g = pg_graph_new();
    pg_tensor *X[8]; /* X[l]: (B, L, dim), the states entering block l; X[nl] the last block's output */
    cr_assert(nl < 8);
    X[0] = pg_embed_forward(g, lm->tok_emb, ids);
    X[0] = pg_posmod_apply_x(g, lm->pos, lm->n_pos, X[0], NULL, NULL, 0, 0, NULL);
    cr_assert_not_null(X[0], "%s", pg_last_error());
    for (int64_t l = 1; l <= nl; l++)
        X[l] = pg_zeros(g, PG_F64, PG_SHAPE(B, L, DIM));
    for (int64_t t = L0; t <= L; t++) /* t = L0: the prompt's rows 0 .. L0 - 1 together */
        for (int64_t l = 0; l < nl; l++) {
            int64_t n = t == L0 ? L0 : t;
            pg_tensor *out = pg_block_forward(g, lm->blocks[l], pg_narrow(g, X[l], 1, 0, n), NULL);
            cr_assert_not_null(out, "%s", pg_last_error());
            copy_rows(X[l + 1], out, t == L0 ? 0 : n - 1, t == L0 ? L0 : 1, t == L0 ? 0 : n - 1);
        }
    pg_tensor *logits = pg_linear_forward(g, lm->head, pg_layernorm_forward(g, (pg_layernorm *)lm->norm, X[nl]));
    pg_tensor *heap = pg_empty(NULL, PG_F64, PG_SHAPE(B, L, VOCAB));
    memcpy(pg_f64(heap), pg_f64(logits), (size_t)(B * L * VOCAB) * sizeof(double));
    pg_graph_free(g);
    return heap;
}

/* cached logits (B, L, V) of prefill L0 then single steps, in mode how */
static pg_tensor *cached_logits(pg_lm *lm, pg_tensor *ids, int64_t L0, pg_lm_cache_rope how)
{
    int64_t B = ids->shape[0], L = ids->shape[1];
    pg_tensor *out = pg_empty(NULL, PG_F64, PG_SHAPE(B, L, VOCAB));
    pg_lm_cache *c = pg_lm_cache_new(lm, B, L);
    cr_assert_not_null(c, "pg_lm_cache_new: %s", pg_last_error());
    cr_assert_eq(pg_lm_cache_set_rope(c, how), 0);
    pg_graph *g = pg_graph_new();
    pg_tensor *first = pg_lm_cache_prefill(g, lm, c, pg_narrow(g, ids, 1, 0, L0));
    cr_assert_not_null(first, "%s", pg_last_error());
    copy_rows(out, first, 0, L0, 0);
    for (int64_t t = L0; t < L; t++) {
        pg_graph_reset(g);
        pg_tensor *y = pg_lm_cache_step(g, lm, c, pg_narrow(g, ids, 1, t, 1));
        cr_assert_not_null(y, "step %lld: %s", (long long)t, pg_last_error());
        copy_rows(out, pg_reshape(g, y, PG_SHAPE(B, 1, VOCAB)), 0, 1, t);
    }
    pg_graph_free(g);
    pg_lm_cache_free(c);
    return out;
}

/* worst |a - b| over positions [from, to) of (B, L, V) logits */
static double worst_between(const pg_tensor *a, const pg_tensor *b, int64_t from, int64_t to)
{
    int64_t B = a->shape[0], L = a->shape[1];
    double worst = 0;
    for (int64_t r = 0; r < B; r++)
        for (int64_t i = from * VOCAB; i < to * VOCAB; i++) {
            double d = fabs(pg_f64(a)[r * L * VOCAB + i] - pg_f64(b)[r * L * VOCAB + i]);
            worst = d > worst || isnan(d) ? d : worst;
        }
    return worst;
}

/* What a fresh full forward gives at each step: positions < L0 from pg_lm_forward of the prompt,
 * position t >= L0 from pg_lm_forward of ids[:, :t + 1] (its frequencies those of length t + 1) */
static pg_tensor *full_at_each_step(pg_lm *lm, pg_tensor *ids, int64_t L0)
{
    int64_t B = ids->shape[0], L = ids->shape[1];
    pg_tensor *out = pg_empty(NULL, PG_F64, PG_SHAPE(B, L, VOCAB));
    pg_graph *g = pg_graph_new();
    for (int64_t t = L0 - 1; t < L; t++) {
        pg_graph_reset(g);
        pg_tensor *y = pg_lm_forward(g, lm, pg_narrow(g, ids, 1, 0, t + 1), NULL); /* (B, t + 1, V) */
        cr_assert_not_null(y, "%s", pg_last_error());
        copy_rows(out, y, t == L0 - 1 ? 0 : t, t == L0 - 1 ? L0 : 1, t == L0 - 1 ? 0 : t);
    }
    pg_graph_free(g);
    return out;
}

/* L = 8 trained tokens (dynamic_yarn: M = 10), a prompt of 5, decoding to 24: the frequencies change
 * at every step past L. Recompute (the default): every step equals the full forward. Re-rotate: equals
 * the stepwise reference, and the full forward within L, and past L with one block; with two the
 * difference past L is real (printed for docs/attention.md). */
static void check_dynamic(pg_rope_scaling scaling, bool xpos)
{
    pg_rotary_opts o = pg_rotary_defaults();
    o.scaling = scaling;
    o.rope_factor = scaling == PG_ROPE_DYNAMIC_NTK ? 2 : 0;
    o.rope_orig_len = 8;
    o.rope_max_len = scaling == PG_ROPE_DYNAMIC_YARN ? 10 : 0;
    o.use_xpos = xpos;
    int64_t B = 2, L0 = 5, L = 24, Lo = scaling == PG_ROPE_DYNAMIC_YARN ? 10 : 8;
    pg_tensor *ids = random_ids(B, L, 9);
    for (int64_t layers = 1; layers <= 2; layers++) {
        N_LAYERS = layers;
        pg_lm *lm = small_lm(NULL, "rotary", &o, 0);
        N_LAYERS = LAYERS;
        pg_tensor *full = full_at_each_step(lm, ids, L0), *step = stepwise_reference(lm, ids, L0);
        pg_tensor *exact = cached_logits(lm, ids, L0, PG_LM_CACHE_ROPE_RECOMPUTE);
        pg_tensor *fast = cached_logits(lm, ids, L0, PG_LM_CACHE_ROPE_REROTATE);
        double d_exact = worst_between(exact, full, 0, L), d_step = worst_between(fast, step, 0, L);
        double d_in = worst_between(fast, full, 0, Lo), d_past = worst_between(fast, full, Lo, L);
        printf("kv_cache dynamic %d%s, %lld layer%s: recompute vs full forward %.3g; re-rotate vs stepwise %.3g, "
               "vs full forward %.3g up to the trained length, %.3g past it\n", (int)scaling, xpos ? " xpos" : "",
               (long long)layers, layers > 1 ? "s" : "", d_exact, d_step, d_in, d_past);
        cr_assert(d_exact <= 1e-12, "recompute: cached vs full forward %.3g", d_exact);
        cr_assert(d_step <= 1e-12, "re-rotate: cached vs stepwise reference %.3g", d_step);
        cr_assert(d_in <= 1e-12, "re-rotate: cached vs full forward within the trained length %.3g", d_in);
        if (layers == 1) /* one block: its keys are the embeddings', so the full forward is matched */
            cr_assert(d_past <= 1e-12, "one layer, re-rotate vs full past the trained length: %.3g", d_past);
        else /* the deeper keys of earlier tokens were computed at their own length: the case is real */
            cr_assert(d_past > 1e-6, "two layers: the frequencies should have changed past %lld", (long long)Lo);
        pg_tensor_free(full);
        pg_tensor_free(exact);
        pg_tensor_free(fast);
        pg_tensor_free(step);
        pg_module_free(&lm->base);
    }
    pg_tensor_free(ids);
}
Test(kv_cache, rotary_dynamic_ntk) { check_dynamic(PG_ROPE_DYNAMIC_NTK, false); }
Test(kv_cache, rotary_dynamic_linear) { check_dynamic(PG_ROPE_DYNAMIC_LINEAR, false); }
Test(kv_cache, rotary_dynamic_yarn) { check_dynamic(PG_ROPE_DYNAMIC_YARN, false); }
Test(kv_cache, xpos_dynamic_ntk) { check_dynamic(PG_ROPE_DYNAMIC_NTK, true); }

/* ---- head width, grouped-query attention and qk-norm (docs/attention.md, section of that name):
 * 4 heads over dim 16; the cache holds the 4 query heads' keys and values (k, v repeated from
 * kv_heads), each of dim_head; cached = full forward within 1e-12 as above */
typedef struct heads_opts {
    int64_t dim_head, kv_heads;
    bool qk_norm, dim_scale;
    pg_attn_band band;
} heads_opts;

static void check_heads(heads_opts h, const char *layer, const void *opts)
{
    pg_lm_config c = pg_lm_defaults(VOCAB, DIM, 4, LAYERS);
    c.dim_head = h.dim_head;
    c.kv_heads = h.kv_heads;
    c.qk_norm = h.qk_norm;
    c.qk_norm_dim_scale = h.dim_scale;
    c.band = h.band;
    pg_lm *lm = test_small_lm(c, NULL, layer, opts);
    cr_assert_eq(lm->blocks[0]->attn->head_dim, h.dim_head ? h.dim_head : DIM / 4);
    double worst = fmax(decode_diff(lm, 2, 5, 24, 3), decode_diff(lm, 1, 1, 24, 4));
    printf("kv_cache heads: dim_head %lld, kv_heads %lld, qk_norm %d%s, %s: worst cached-vs-full difference %.3g\n",
           (long long)h.dim_head, (long long)h.kv_heads, (int)h.qk_norm, h.dim_scale ? " + dim scale" : "",
           layer ? layer : "-", worst);
    cr_assert(worst <= 1e-12, "dim_head %lld, kv_heads %lld, qk_norm %d, %s: worst difference %.3g",
              (long long)h.dim_head, (long long)h.kv_heads, (int)h.qk_norm, layer ? layer : "-", worst);
    pg_module_free(&lm->base);
}
Test(kv_cache, dim_head_rotary) { check_heads((heads_opts){.dim_head = 8}, "rotary", NULL); }
Test(kv_cache, dim_head_xl) { check_heads((heads_opts){.dim_head = 6}, "xl", NULL); }
Test(kv_cache, gqa_rotary) { check_heads((heads_opts){.dim_head = 8, .kv_heads = 2}, "rotary", NULL); }
Test(kv_cache, gqa_t5) { check_heads((heads_opts){.kv_heads = 2}, "t5", NULL); }
Test(kv_cache, gqa_cope) { check_heads((heads_opts){.kv_heads = 2}, "cope", &(pg_cope_opts){.convention = PG_COPE_XT, .npos = 4}); }
Test(kv_cache, mqa_xpos) { check_heads((heads_opts){.dim_head = 8, .kv_heads = 1}, "xpos", NULL); }
Test(kv_cache, mqa_band_alibi)
{
    check_heads((heads_opts){.kv_heads = 1, .band = {.window = 4, .look_backward = 1}}, "alibi", NULL);
}
Test(kv_cache, qk_norm_rotary) { check_heads((heads_opts){.kv_heads = 2, .qk_norm = true}, "rotary", NULL); }
Test(kv_cache, qk_norm_dim_scale_gqa)
{
    check_heads((heads_opts){.dim_head = 8, .kv_heads = 2, .qk_norm = true, .dim_scale = true}, "rotary", NULL);
}

/* ---- one positional module shared by every block (pg_lm_config.share_layer_pos) ---------------- */

/* A 3-block LM whose layer modules are the kinds given, shared where share[i]; the shared
 * modules' parameters (T5's table starts at zero) drawn from N(0, 0.5) so they count. */
static pg_lm *shared_lm(int n, const char *const *kinds, const bool *share)
{
    pg_lm_config c = pg_lm_defaults(VOCAB, DIM, HEADS, 3);
    for (int i = 0; i < n; i++) {
        c.layer_pos[c.n_layer_pos] = (pg_posmod_spec){.kind = kinds[i]};
        c.share_layer_pos[c.n_layer_pos++] = share[i];
    }
    pg_lm *lm = test_small_lm(c, NULL, NULL, NULL);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_rng r = pg_rng_init(5);
    int n_shared = 0;
    for (int i = 0; i < ps.n; i++)
        if (!strncmp(ps.names[i], "rel_pos.", 8)) {
            pg_fill_normal(ps.tensors[i], &r, 0.0, 0.5);
            n_shared++;
        }
    pg_tensor_list_free(&ps);
    cr_assert_gt(n_shared, 0, "no rel_pos parameters");
    return lm;
}

static void check_shared(int n, const char *const *kinds, const bool *share, const char *what)
{
    pg_lm *lm = shared_lm(n, kinds, share);
    double d5 = decode_diff(lm, 2, 5, 24, 3), d1 = decode_diff(lm, 1, 1, 24, 4);
    double worst = fmax(d5, d1);
    printf("kv_cache shared %s: worst cached-vs-full difference %.3g\n", what, worst);
    cr_assert(worst <= 1e-12, "shared %s: worst cached-vs-full difference %.3g", what, worst);
    pg_module_free(&lm->base);
}

Test(kv_cache, shared_dpb_and_t5)
{
    check_shared(2, (const char *[]){"dpb", "t5"}, (const bool[]){true, true}, "dpb + t5");
}
Test(kv_cache, shared_dpb_alone_and_t5_alone)
{
    check_shared(1, (const char *[]){"dpb"}, (const bool[]){true}, "dpb");
    check_shared(1, (const char *[]){"t5"}, (const bool[]){true}, "t5");
}
/* shared and per-layer modules mixed: a per-layer rotary before a shared T5 and FoX */
Test(kv_cache, shared_mixed_with_per_layer)
{
    check_shared(3, (const char *[]){"rotary", "t5", "fox"}, (const bool[]){false, true, true}, "rotary | t5 + fox");
}
