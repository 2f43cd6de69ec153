/* Sampling options (nn/sample.h): top-p on hand-made distributions, top-k with
 * top-p, temperature limits, a chi-square check of seeded draws against the
 * exact renormalised probabilities, seeding, the per-token callback, stop ids
 * per row, and bad options. docs/attention.md, "Sampling". */
#include "testutil.h"


enum { MAXV = 8 };

/* counts[v] of n seeded draws (seed 11) from one row of logits lv[0..V) under o */
static void draw_counts(const double *lv, int64_t V, pg_sample_opts o, int n, int64_t *counts)
{
    pg_tensor *logits = pg_tensor_from_array(NULL, PG_F64, 2, (const int64_t[]){1, V}, lv);
    pg_rng r = pg_rng_init(11);
    o.rng = &r;
    memset(counts, 0, (size_t)V * sizeof *counts);
    for (int i = 0; i < n; i++) {
        int64_t id = -1;
        cr_assert_eq(pg_sample_logits_ex(logits, &o, &id), 0, "%s", pg_last_error());
        cr_assert(id >= 0 && id < V, "drew %lld", (long long)id);
        counts[id]++;
    }
    pg_tensor_free(logits);
}

/* asserts that 4000 draws hit exactly the ids with want[v] = 1 (each kept id
 * has renormalised probability >= 0.09 here: missing one has odds < 1e-160) */
static void assert_support(const double *lv, int64_t V, pg_sample_opts o, const int *want, const char *what)
{
    int64_t counts[MAXV];
    draw_counts(lv, V, o, 4000, counts);
    for (int64_t v = 0; v < V; v++)
        cr_assert_eq(counts[v] > 0, want[v] != 0, "%s: id %lld drawn %lld times", what, (long long)v,
                     (long long)counts[v]);
}

/* a pointer to options with these three fields, the rest the defaults */
#define OPTS(t, k, p) (&(pg_sample_opts){.temperature = (t), .top_k = (k), .top_p = (p), .max_new = 32})

static pg_sample_opts opts_tkp(double t, int64_t k, double p)
{
    pg_sample_opts o = pg_sample_defaults();
    o.temperature = t;
    o.top_k = k;
    o.top_p = p;
    return o;
}

Test(sampling, top_p_keeps_the_smallest_prefix)
{
    /* probabilities 0.05, 0.45, 0.2, 0.3: in order ids 1, 3, 2, 0 with sums .45, .75, .95, 1 */
    const double a[4] = {log(0.05), log(0.45), log(0.2), log(0.3)};
    assert_support(a, 4, opts_tkp(1, 0, 0.1), (const int[]){0, 1, 0, 0}, "p 0.1");
    assert_support(a, 4, opts_tkp(1, 0, 0.5), (const int[]){0, 1, 0, 1}, "p 0.5");
    assert_support(a, 4, opts_tkp(1, 0, 0.9), (const int[]){0, 1, 1, 1}, "p 0.9");
    assert_support(a, 4, opts_tkp(1, 0, 1.0), (const int[]){1, 1, 1, 1}, "p 1");
    /* ties: logits 1, 2, 2, 1, 2: three of ~.2677 (ids 1, 2, 4), two of ~.0985 (ids 0, 3) */
    const double t[5] = {1, 2, 2, 1, 2};
    assert_support(t, 5, opts_tkp(1, 0, 0.5), (const int[]){0, 1, 1, 0, 0}, "ties p 0.5: ids 1, 2 before 4");
    assert_support(t, 5, opts_tkp(1, 0, 0.9), (const int[]){1, 1, 1, 0, 1}, "ties p 0.9: .803 + id 0 (not 3)");
    assert_support(t, 5, opts_tkp(1, 0, 1.0), (const int[]){1, 1, 1, 1, 1}, "ties p 1");
    /* equal logits: exact quarters, so p 0.5 is reached exactly by ids 0 and 1 */
    const double q[4] = {0.5, 0.5, 0.5, 0.5};
    assert_support(q, 4, opts_tkp(1, 0, 0.5), (const int[]){1, 1, 0, 0}, "quarters p 0.5");
    assert_support(q, 4, opts_tkp(1, 0, 0.51), (const int[]){1, 1, 1, 0}, "quarters p 0.51");
}

Test(sampling, top_k_then_top_p_then_temperature)
{
    const double a[4] = {log(0.05), log(0.45), log(0.2), log(0.3)};
    /* top_k 2 keeps ids 1, 3, renormalised .6, .4: p 0.5 keeps id 1 only (alone: ids 1 and 3) */
    assert_support(a, 4, opts_tkp(1, 2, 0.5), (const int[]){0, 1, 0, 0}, "k 2 p 0.5");
    assert_support(a, 4, opts_tkp(1, 0, 0.5), (const int[]){0, 1, 0, 1}, "k 0 p 0.5");
    assert_support(a, 4, opts_tkp(1, 2, 0.9), (const int[]){0, 1, 0, 1}, "k 2 p 0.9");
    assert_support(a, 4, opts_tkp(1, 3, 0.9), (const int[]){0, 1, 1, 1}, "k 3 p 0.9");
    /* top_p sees the tempered probabilities: at T 0.25, id 1 has .45^4 / sum ~ .67 >= 0.5 alone */
    assert_support(a, 4, opts_tkp(0.25, 0, 0.5), (const int[]){0, 1, 0, 0}, "T 0.25 p 0.5");
    /* at T 4 the four are close to uniform (.16 .31 .25 .28): p 0.5 needs ids 1, 3 */
    assert_support(a, 4, opts_tkp(4, 0, 0.5), (const int[]){0, 1, 0, 1}, "T 4 p 0.5");
}

Test(sampling, temperature_limits)
{
    const double a[4] = {0.3, 2.0, 1.9, 2.0};
    pg_tensor *logits = pg_tensor_from_array(NULL, PG_F64, 2, (const int64_t[]){1, 4}, a);
    pg_sample_opts o = opts_tkp(0, 0, 0.3);
    int64_t id = -1;
    cr_assert_eq(pg_sample_logits_ex(logits, &o, &id), 0, "%s", pg_last_error()); /* greedy: the first maximum */
    cr_assert_eq(id, 1);
    /* T 1e-3: the two maxima (ids 1, 3) only, each about half the time (2.0 - 1.9 = 100 T) */
    int64_t c[4];
    draw_counts(a, 4, opts_tkp(1e-3, 0, 1), 4000, c);
    cr_assert(c[0] == 0 && c[2] == 0 && c[1] > 1800 && c[3] > 1800, "%lld %lld %lld %lld", (long long)c[0],
              (long long)c[1], (long long)c[2], (long long)c[3]);
    /* T 1e9: uniform within 1e-9; 40000 draws, each count 10000 +- 4.5 sd (sd 86.6) */
    draw_counts(a, 4, opts_tkp(1e9, 0, 1), 40000, c);
    for (int v = 0; v < 4; v++)
        cr_assert_lt(fabs((double)c[v] - 10000.0), 390.0, "id %d: %lld", v, (long long)c[v]);
    pg_tensor_free(logits);
}

/* chi-square quantile 0.999 for df 1..5 */
static const double CHI2_999[6] = {0, 10.83, 13.82, 16.27, 18.47, 20.52};

Test(sampling, frequencies_match_the_renormalised_probabilities)
{
    /* logits over 6 ids, T 0.7, top_k 5 (drops id 4, the smallest), top_p 0.95.
     * By hand: order 2, 0, 5, 1, 3; weights w = exp((l - 2.0) / 0.7) over those five;
     * the prefix reaching 0.95 of their sum is ids 2, 0, 5, 1 (.913 short, .983: asserted). */
    const double lv[6] = {1.5, 0.6, 2.0, -0.4, -1.5, 1.1};
    const int order[5] = {2, 0, 5, 1, 3};
    double w[5], sum5 = 0, cum = 0;
    for (int j = 0; j < 5; j++)
        sum5 += (w[j] = exp((lv[order[j]] - 2.0) / 0.7));
    for (int j = 0; j < 3; j++)
        cum += w[j];
    cr_assert_lt(cum / sum5, 0.95 - 0.01); /* the prefix of 3 falls short, by a margin */
    cr_assert_gt((cum + w[3]) / sum5, 0.95 + 0.01);
    double p[6] = {0}, kept = cum + w[3];
    for (int j = 0; j < 4; j++)
        p[order[j]] = w[j] / kept;
    const int N = 100000;
    int64_t c[6];
    pg_sample_opts o = opts_tkp(0.7, 5, 0.95);
    draw_counts(lv, 6, o, N, c);
    /* Pearson's statistic over the 4 kept ids (df 3). With this fixed seed the
     * test is deterministic; a correct sampler exceeds the 0.999 quantile with
     * probability 1e-3, while a bias of 0.01 in one probability adds about
     * N * 0.01^2 / p >= 20 (p <= 0.5) and fails it. */
    double chi2 = 0;
    for (int v = 0; v < 6; v++) {
        if (p[v] == 0) {
            cr_assert_eq(c[v], 0, "id %d outside the kept set drawn %lld times", v, (long long)c[v]);
            continue;
        }
        double e = p[v] * N;
        chi2 += ((double)c[v] - e) * ((double)c[v] - e) / e;
    }
    cr_assert_lt(chi2, CHI2_999[3], "chi2 %g over 3 df", chi2);
}

Test(sampling, seeded_and_the_old_signature_agrees)
{
    const double lv[8] = {0.1, 0.9, -0.3, 0.5, 1.0, 0.2, 0.3, -1.0};
    pg_tensor *logits = pg_tensor_from_array(NULL, PG_F64, 2, (const int64_t[]){2, 4}, lv);
    pg_sample_opts o = opts_tkp(1.3, 3, 1);
    o.seed = 5;
    int64_t a[2], b[2], c[2];
    pg_rng r = pg_rng_init(5);
    cr_assert_eq(pg_sample_logits_ex(logits, &o, a), 0);
    cr_assert_eq(pg_sample_logits_ex(logits, &o, b), 0); /* rng NULL: a generator from seed per call */
    cr_assert_eq(pg_sample_logits(logits, 1.3, 3, &r, c), 0);
    cr_assert(a[0] == b[0] && a[1] == b[1] && a[0] == c[0] && a[1] == c[1]);
    /* 64 draws with seeds 5 and 6 differ somewhere */
    pg_rng r5 = pg_rng_init(5), r6 = pg_rng_init(6);
    int differ = 0;
    for (int i = 0; i < 32; i++) {
        o.rng = &r5;
        pg_sample_logits_ex(logits, &o, a);
        o.rng = &r6;
        pg_sample_logits_ex(logits, &o, b);
        differ += a[0] != b[0] || a[1] != b[1];
    }
    cr_assert_gt(differ, 0);
    pg_tensor_free(logits);
}

Test(sampling, bad_options_name_the_function)
{
    pg_tensor *logits = T64(PG_SHAPE(1, 3), 0.0, 1.0, 2.0), *ids = TI64(PG_SHAPE(1, 3), 0, 1, 2),
              *cube = pg_tensor_full(NULL, PG_F64, 3, (const int64_t[]){1, 1, 3}, 0.0), *empty = NULL;
    empty = pg_tensor_full(NULL, PG_F64, 2, (const int64_t[]){1, 0}, 0.0);
    int64_t out[1];
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, OPTS(-0.5, 0, 1), out),
                    "pg_sample_logits_ex: need a finite temperature >= 0, top_k >= 0 and top_p in (0, 1], got -0.5");
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, OPTS(INFINITY, 0, 1), out), "got inf, 0, 1");
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, OPTS(NAN, 0, 1), out), "pg_sample_logits_ex: need a finite");
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, OPTS(1, -1, 1), out), "got 1, -1, 1");
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, OPTS(1, 0, 0), out), "top_p in (0, 1], got 1, 0, 0");
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, OPTS(1, 0, 1.5), out), "got 1, 0, 1.5");
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, OPTS(1, 0, NAN), out), "got 1, 0, nan");
    ASSERT_RC_FAILS(pg_sample_logits_ex(NULL, NULL, out), "pg_sample_logits_ex: logits is NULL");
    ASSERT_RC_FAILS(pg_sample_logits_ex(logits, NULL, NULL), "pg_sample_logits_ex: logits is f64[1,3], expected");
    ASSERT_RC_FAILS(pg_sample_logits_ex(ids, NULL, out), "pg_sample_logits_ex: logits is i64[1,3], expected a float");
    ASSERT_RC_FAILS(pg_sample_logits_ex(cube, NULL, out), "logits is f64[1,1,3], expected a float (B, V)");
    ASSERT_RC_FAILS(pg_sample_logits_ex(empty, NULL, out), "logits is f64[1,0], expected a float (B, V) with V >= 1");
    ASSERT_RC_FAILS(pg_sample_logits(logits, 1.0, 0, NULL, out), "pg_sample_logits: need a generator");
    ASSERT_RC_FAILS(pg_sample_logits(logits, -1.0, 0, NULL, out), "pg_sample_logits: need a finite temperature");
    pg_tensor *own[] = {logits, ids, cube, empty};
    free_all(4, own);
}

/* ---- generation ------------------------------------------------------------------------------ */

static pg_lm *small_lm(void)
{
    pg_lm_config c = pg_lm_defaults(7, 8, 2, 2);
    c.dtype = PG_F64;
    c.seed = 4;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    return lm;
}

typedef struct token_log {
    int n, stop_at; /* calls so far; the call (1-based) that returns 1 (0: never) */
    int64_t b[64], id[64];
} token_log;

static int log_token(void *ctx, int64_t b, int64_t token)
{
    token_log *l = ctx;
    cr_assert_lt(l->n, 64);
    l->b[l->n] = b;
    l->id[l->n] = token;
    return ++l->n == l->stop_at;
}

static pg_sample_opts gen_opts(int64_t max_new, uint64_t seed)
{
    pg_sample_opts o = pg_sample_defaults();
    o.max_new = max_new;
    o.seed = seed;
    return o;
}

Test(sampling, generate_ex_seeded_defaults_and_the_old_signature)
{
    pg_lm *lm = small_lm();
    pg_tensor *prompt = TI64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    pg_sample_opts o = gen_opts(9, 7);
    o.top_k = 4;
    pg_rng r = pg_rng_init(7);
    pg_tensor *a = pg_lm_generate_ex(lm, prompt, &o), *b = pg_lm_generate_ex(lm, prompt, &o),
              *old = pg_lm_generate(lm, prompt, 9, 1.0, 4, &r), *d = pg_lm_generate_ex(lm, prompt, NULL);
    o.seed = 8;
    pg_tensor *c = pg_lm_generate_ex(lm, prompt, &o);
    cr_assert_not_null(a, "%s", pg_last_error());
    assert_shape(a, 2, (int64_t[]){2, 11});
    cr_assert_eq(max_err(a, b), 0.0);
    cr_assert_eq(max_err(a, old), 0.0); /* rng NULL + seed 7 draws as pg_rng_init(7) passed in */
    cr_assert_gt(max_err(a, c), 0.0);
    assert_shape(d, 2, (int64_t[]){2, 34}); /* NULL options: the defaults, 32 new ids */
    pg_tensor *own[] = {prompt, a, b, c, d, old};
    free_all(6, own);
    pg_module_free(&lm->base);
}

Test(sampling, callback_order_and_early_stop)
{
    pg_lm *lm = small_lm();
    pg_tensor *prompt = TI64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    token_log log = {0};
    pg_sample_opts o = gen_opts(5, 3);
    o.on_token = log_token;
    o.ctx = &log;
    pg_tensor *full = pg_lm_generate_ex(lm, prompt, &o);
    cr_assert_not_null(full, "%s", pg_last_error());
    assert_shape(full, 2, (int64_t[]){2, 7});
    cr_assert_eq(log.n, 10); /* steps in order, rows ascending within a step */
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(log.b[i], i % 2);
        cr_assert_eq(log.id[i], pg_i64(full)[(i % 2) * 7 + 2 + i / 2], "call %d", i);
    }
    /* the third call (step 1, row 0) returns 1: step 1 completes without row 1's call, then the end */
    token_log stop = {.stop_at = 3};
    o.ctx = &stop;
    pg_tensor *early = pg_lm_generate_ex(lm, prompt, &o);
    assert_shape(early, 2, (int64_t[]){2, 4});
    cr_assert_eq(stop.n, 3);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t j = 0; j < 4; j++)
            cr_assert_eq(pg_i64(early)[b * 4 + j], pg_i64(full)[b * 7 + j], "[%lld, %lld]", (long long)b,
                         (long long)j);
    pg_tensor *own[] = {prompt, full, early};
    free_all(3, own);
    pg_module_free(&lm->base);
}

/* the first new column (0-based) of row b of ref (B, 2 + n) holding an id of stop[0..ns), or n */
static int64_t first_stop(const pg_tensor *ref, int64_t b, const int64_t *stop, int ns)
{
    int64_t C = ref->shape[1];
    for (int64_t j = 2; j < C; j++)
        for (int s = 0; s < ns; s++)
            if (pg_i64(ref)[b * C + j] == stop[s])
                return j - 2;
    return C - 2;
}

Test(sampling, stop_ids_per_row)
{
    pg_lm *lm = small_lm();
    pg_tensor *prompt = TI64(PG_SHAPE(3, 2), 1, 2, 3, 4, 5, 6);
    pg_sample_opts o = gen_opts(12, 21);
    pg_tensor *ref = pg_lm_generate_ex(lm, prompt, &o); /* (3, 14), no stops */
    /* stop ids: row 0's 3rd new id and row 1's 6th (each row stops at its first of them) */
    const int64_t stop[2] = {pg_i64(ref)[0 * 14 + 4], pg_i64(ref)[1 * 14 + 7]};
    int64_t at[3], last = 0;
    for (int64_t b = 0; b < 3; b++) {
        at[b] = first_stop(ref, b, stop, 2);
        last = at[b] > last ? at[b] : last;
    }
    cr_assert(at[0] <= 2 && at[1] <= 5);
    token_log log = {0};
    o.stop = stop;
    o.n_stop = 2;
    o.on_token = log_token;
    o.ctx = &log;
    pg_tensor *s = pg_lm_generate_ex(lm, prompt, &o);
    cr_assert_not_null(s, "%s", pg_last_error());
    int64_t C = last < 12 ? 2 + last + 1 : 14; /* all rows stopped: the result ends at the last stop */
    assert_shape(s, 2, (int64_t[]){3, C});
    int calls[3] = {0};
    for (int i = 0; i < log.n; i++)
        calls[log.b[i]]++;
    for (int64_t b = 0; b < 3; b++) {
        for (int64_t j = 0; j < C; j++) {
            int64_t want = j < 2 + at[b] ? pg_i64(ref)[b * 14 + j] : pg_i64(ref)[b * 14 + 2 + at[b]];
            cr_assert_eq(pg_i64(s)[b * C + j], want, "[%lld, %lld]", (long long)b, (long long)j);
        }
        int64_t want_calls = at[b] < C - 2 ? at[b] + 1 : C - 2; /* through its stop id, then none */
        cr_assert_eq(calls[b], want_calls, "row %lld", (long long)b);
    }
    /* a stop id drawn first by every row at step 0 ends after one step */
    const int64_t all[7] = {0, 1, 2, 3, 4, 5, 6};
    o.stop = all;
    o.n_stop = 7;
    o.on_token = NULL;
    pg_tensor *one = pg_lm_generate_ex(lm, prompt, &o);
    assert_shape(one, 2, (int64_t[]){3, 3});
    pg_tensor *own[] = {prompt, ref, s, one};
    free_all(4, own);
    pg_module_free(&lm->base);
}

Test(sampling, generate_ex_bad_input)
{
    pg_lm *lm = small_lm();
    pg_tensor *prompt = TI64(PG_SHAPE(1, 2), 1, 2), *flt = T64(PG_SHAPE(1, 2), 1, 2), *none = NULL;
    none = pg_tensor_full(NULL, PG_I64, 2, (const int64_t[]){1, 0}, 0.0);
    pg_sample_opts o = gen_opts(3, 1);
    ASSERT_FAILS(pg_lm_generate_ex(NULL, prompt, &o), "pg_lm_generate_ex: need a model, an i64 prompt (B, L0)");
    ASSERT_FAILS(pg_lm_generate_ex(lm, NULL, &o), "pg_lm_generate_ex: need a model, an i64 prompt (B, L0) with B, "
                                                  "L0 >= 1, got a model, NULL");
    ASSERT_FAILS(pg_lm_generate_ex(lm, flt, &o), "got a model, f64[1,2]");
    ASSERT_FAILS(pg_lm_generate_ex(lm, none, &o), "got a model, i64[1,0]");
    o.max_new = -1;
    ASSERT_FAILS(pg_lm_generate_ex(lm, prompt, &o), "pg_lm_generate_ex: need max_new >= 0");
    o.max_new = 3;
    o.n_stop = 1;
    ASSERT_FAILS(pg_lm_generate_ex(lm, prompt, &o), "stop non-NULL when n_stop > 0), got 3, 1, NULL");
    o.n_stop = 0;
    o.top_p = 0;
    ASSERT_FAILS(pg_lm_generate_ex(lm, prompt, &o), "pg_lm_generate_ex: need a finite temperature >= 0, top_k >= 0 "
                                                    "and top_p in (0, 1]");
    o.top_p = 1;
    o.temperature = -1;
    ASSERT_FAILS(pg_lm_generate_ex(lm, prompt, &o), "got -1, 0, 1");
    pg_tensor *own[] = {prompt, flt, none};
    free_all(3, own);
    pg_module_free(&lm->base);
}
