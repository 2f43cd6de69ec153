/* Sampling from logits (temperature, top-k, top-p, greedy) and autoregressive
 * generation with the decoder-only LM (stop ids, a per-token callback).
 * docs/attention.md, "Sampling". */
#include "sample.h"
#include "kv_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

pg_sample_opts pg_sample_defaults(void)
{
    return (pg_sample_opts){.temperature = 1.0, .top_k = 0, .top_p = 1.0, .max_new = 32};
}

/* the sampling fields of o; 0 or -1 with an error naming fn */
static int check_sampling(const char *fn, const pg_sample_opts *o)
{
    if (!(o->temperature >= 0) || !isfinite(o->temperature) || o->top_k < 0 || !(o->top_p > 0 && o->top_p <= 1)) {
        pg_set_error("%s: need a finite temperature >= 0, top_k >= 0 and top_p in (0, 1], got %g, %lld, %g", fn,
                     o->temperature, (long long)o->top_k, o->top_p);
        return -1;
    }
    return 0;
}

/* index of the first maximum of x[0..n) */
static int64_t first_max(const double *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

typedef struct logit_entry {
    double x;
    int64_t i;
} logit_entry;

/* by logit, descending, ties towards the lower index (a total order, so qsort is deterministic) */
static int by_logit_desc(const void *pa, const void *pb)
{
    const logit_entry *a = pa, *b = pb;
    if (a->x != b->x)
        return a->x > b->x ? -1 : 1;
    return a->i < b->i ? -1 : (a->i > b->i);
}

/* keep[i] = 1 for the entries that may be drawn: in the order by_logit_desc,
 * the first k = top_k (0: all); then the shortest prefix j of those whose
 * weights exp((x - max) / t), summed in that order, reach top_p times their
 * sum over the k (the same order, so top_p 1 keeps all k). e: scratch of n. */
static void keep_set(const double *x, int64_t n, double t, int64_t top_k, double top_p, logit_entry *e,
                     uint8_t *keep)
{
    int64_t k = top_k > 0 && top_k < n ? top_k : n;
    if (k == n && top_p >= 1) {
        memset(keep, 1, (size_t)n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        e[i] = (logit_entry){x[i], i};
    qsort(e, (size_t)n, sizeof *e, by_logit_desc);
    if (top_p < 1) {
        double total = 0.0, cum = 0.0;
        for (int64_t j = 0; j < k; j++)
            total += exp((e[j].x - e[0].x) / t);
        int64_t j = 0;
        while (j < k) {
            cum += exp((e[j].x - e[0].x) / t);
            j++;
            if (cum >= top_p * total)
                break;
        }
        k = j;
    }
    memset(keep, 0, (size_t)n);
    for (int64_t j = 0; j < k; j++)
        keep[e[j].i] = 1;
}

/* One draw from softmax(x / t) restricted to keep, by inverse CDF in index order. */
static int64_t draw_row(const double *x, int64_t n, double t, const uint8_t *keep, pg_rng *r)
{
    double m = -INFINITY, total = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (keep[i] && x[i] > m)
            m = x[i];
    for (int64_t i = 0; i < n; i++)
        if (keep[i])
            total += exp((x[i] - m) / t);
    double u = pg_rng_uniform(r) * total, cum = 0.0;
    int64_t last = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!keep[i])
            continue;
        cum += exp((x[i] - m) / t);
        last = i;
        if (cum > u)
            return i;
    }
    return last; /* u rounded to the very top of the total */
}

/* row b of logits (B, V) into x; -1 (and an error) when it has a NaN or +inf, or no finite entry */
static int read_row(const char *fn, const pg_tensor *logits, int64_t b, double *x)
{
    int64_t V = logits->shape[1];
    double m = -INFINITY;
    for (int64_t i = 0; i < V; i++) {
        x[i] = pg_get(logits, b * V + i);
        m = x[i] > m ? x[i] : m;
        if (isnan(x[i]) || x[i] == INFINITY)
            m = NAN;
    }
    if (!isfinite(m)) {
        pg_set_error("%s: row %lld has a NaN or +inf logit, or no finite one", fn, (long long)b);
        return -1;
    }
    return 0;
}

/* logits (B, V) -> out[B] under o (options already checked), drawing from r; 0 or -1 */
static int sample_rows(const char *fn, const pg_tensor *logits, const pg_sample_opts *o, pg_rng *r, int64_t *out)
{
    int64_t B = logits->shape[0], V = logits->shape[1];
    double *x = malloc((size_t)V * sizeof *x);
    uint8_t *keep = malloc((size_t)V);
    logit_entry *e = malloc((size_t)V * sizeof *e);
    int rc = x && keep && e ? 0 : -1;
    if (rc != 0)
        pg_set_error("%s: out of memory", fn);
    for (int64_t b = 0; b < B && rc == 0; b++) {
        rc = read_row(fn, logits, b, x);
        if (rc == 0 && o->temperature == 0) {
            out[b] = first_max(x, V);
        } else if (rc == 0) {
            keep_set(x, V, o->temperature, o->top_k, o->top_p, e, keep);
            out[b] = draw_row(x, V, o->temperature, keep, r);
        }
    }
    free(x);
    free(keep);
    free(e);
    return rc;
}

static int check_logits(const char *fn, const pg_tensor *logits, const int64_t *out)
{
    if (!logits || !pg_dtype_is_float(logits->dtype) || logits->ndim != 2 || logits->shape[1] < 1 || !out) {
        pg_set_error("%s: logits is %s, expected a float (B, V) with V >= 1 (and out non-NULL)", fn,
                     logits ? SHAPE(logits) : "NULL");
        return -1;
    }
    return 0;
}

int pg_sample_logits_ex(const pg_tensor *logits, const pg_sample_opts *o, int64_t *out)
{
    const char *fn = "pg_sample_logits_ex";
    pg_sample_opts d = pg_sample_defaults();
    o = o ? o : &d;
    if (check_logits(fn, logits, out) != 0 || check_sampling(fn, o) != 0)
        return -1;
    pg_rng own = pg_rng_init(o->seed);
    return sample_rows(fn, logits, o, o->rng ? o->rng : &own, out);
}

int pg_sample_logits(const pg_tensor *logits, double temperature, int64_t top_k, pg_rng *r, int64_t *out)
{
    const char *fn = "pg_sample_logits";
    pg_sample_opts o = pg_sample_defaults();
    o.temperature = temperature;
    o.top_k = top_k;
    if (check_logits(fn, logits, out) != 0 || check_sampling(fn, &o) != 0)
        return -1;
    if (temperature > 0 && !r) {
        pg_set_error("%s: need a generator when sampling (temperature %g), got NULL", fn, temperature);
        return -1;
    }
    return sample_rows(fn, logits, &o, r, out);
}

/* ---- generation --------------------------------------------------------------------------------- */

/* ids (B, Lw) in g: the last Lw columns of seq (B, L) */
static pg_tensor *window(pg_graph *g, const pg_tensor *seq, int64_t L, int64_t Lw)
{
    int64_t B = seq->shape[0], stride = seq->shape[1];
    pg_tensor *ids = pg_empty(g, PG_I64, PG_SHAPE(B, Lw));
    if (!ids)
        return NULL;
    for (int64_t b = 0; b < B; b++)
        memcpy(pg_i64(ids) + b * Lw, pg_i64(seq) + b * stride + (L - Lw), (size_t)Lw * sizeof(int64_t));
    return ids;
}

/* The model's next-id logits (B, V) in g after the first L columns of seq
 * (B, >= L). Through the KV cache (nn/kv_cache.h) while the sequence fits it:
 * the columns not yet fed (the prompt at first, then one id a step) in one
 * call, each step costing one position instead of the whole prefix. Without a
 * cache (a scheme it cannot decode), or past its capacity (the model's max_len:
 * a window then slides), the full forward of the last max_len columns. */
typedef struct decoder {
    pg_lm_cache *cache;   /* NULL: full forwards */
    int64_t capacity;     /* the cache's */
    int64_t fed;          /* columns of seq the cache holds */
    const int64_t *start; /* (B) left padding (o->prompt_start); NULL: none */
} decoder;

/* logits of a prefill (B, n, V) or a step (B, V) -> the last position's (B, V) */
static pg_tensor *last_row(pg_graph *g, pg_tensor *logits, int64_t B, int64_t V)
{
    if (logits->ndim == 2)
        return logits;
    return pg_reshape(g, pg_narrow(g, logits, 1, logits->shape[1] - 1, 1), PG_SHAPE(B, V));
}

/* Without the cache and with left padding: row by row, the full forward of the row's own last
 * min(max_len, L - start[b]) real columns (the ids it gives alone) -> (B, V) in g */
static pg_tensor *rows_forward(pg_graph *g, pg_lm *lm, const pg_tensor *seq, int64_t L, const int64_t *start)
{
    int64_t B = seq->shape[0], V = lm->cfg.vocab, C = seq->shape[1];
    pg_tensor *out = pg_empty(g, lm->cfg.dtype, PG_SHAPE(B, V));
    for (int64_t b = 0; out && b < B; b++) {
        int64_t Lb = L - start[b], Lw = lm->cfg.max_len > 0 && Lb > lm->cfg.max_len ? lm->cfg.max_len : Lb;
        pg_tensor *ids = pg_empty(g, PG_I64, PG_SHAPE(1, Lw));
        if (!ids)
            return NULL;
        memcpy(pg_i64(ids), pg_i64(seq) + b * C + (L - Lw), (size_t)Lw * sizeof(int64_t));
        pg_tensor *logits = pg_lm_forward(g, lm, ids, NULL); /* (1, Lw, V) */
        if (!logits)
            return NULL;
        for (int64_t v = 0; v < V; v++)
            pg_set(out, b * V + v, pg_get(logits, (Lw - 1) * V + v));
    }
    return out;
}

static pg_tensor *next_logits(pg_graph *g, pg_lm *lm, decoder *d, const pg_tensor *seq, int64_t L)
{
    int64_t B = seq->shape[0], V = lm->cfg.vocab;
    pg_tensor *logits;
    if (d->cache && L <= d->capacity) {
        pg_tensor *ids = window(g, seq, L, L - d->fed); /* the columns not fed yet */
        logits = L - d->fed == 1 ? pg_lm_cache_step(g, lm, d->cache, ids) : pg_lm_cache_prefill(g, lm, d->cache, ids);
        if (logits)
            d->fed = L;
    } else if (d->start) {
        logits = rows_forward(g, lm, seq, L, d->start); /* (B, V) */
    } else {
        int64_t Lw = lm->cfg.max_len > 0 && L > lm->cfg.max_len ? lm->cfg.max_len : L;
        logits = pg_lm_forward(g, lm, window(g, seq, L, Lw), NULL); /* (B, Lw, V) */
    }
    pg_tensor *last = logits ? last_row(g, logits, B, V) : NULL;
    const char *e = pg_graph_error(g);
    if (!last && e && *e)
        pg_set_error("%s", e); /* the first error, not a later "x is NULL" */
    return last;
}

static bool is_stop(const pg_sample_opts *o, int64_t id)
{
    for (int64_t j = 0; j < o->n_stop; j++)
        if (o->stop[j] == id)
            return true;
    return false;
}

/* Writes column L of seq (B, cap): next[b] for a live row (then its stop check
 * and callback, unless *halt), the previous id for a stopped one. The rows still live. */
static int64_t place_ids(const pg_sample_opts *o, pg_tensor *seq, int64_t L, const int64_t *next, uint8_t *done,
                         bool *halt)
{
    int64_t B = seq->shape[0], cap = seq->shape[1], live = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t *row = pg_i64(seq) + b * cap;
        row[L] = done[b] ? row[L - 1] : next[b];
        if (done[b])
            continue;
        done[b] = is_stop(o, next[b]);
        live += !done[b];
        if (!*halt && o->on_token && o->on_token(o->ctx, b, next[b]) != 0)
            *halt = true;
    }
    return live;
}

/* Runs up to o->max_new steps on seq (B, L0 + max_new) holding the prompt; *n: the steps run. 0 or -1. */
static int generate_loop(const char *fn, pg_graph *g, pg_lm *lm, const pg_sample_opts *o, pg_rng *r, pg_tensor *seq,
                         int64_t L0, int64_t *n)
{
    /* the cache holds what fits the model's max_len; a scheme it cannot decode: full forwards */
    int64_t cap = L0 + o->max_new;
    cap = lm->cfg.max_len > 0 && cap > lm->cfg.max_len ? lm->cfg.max_len : cap;
    decoder d = {pg_lm_cache_new(lm, seq->shape[0], cap), cap, 0, o->prompt_start};
    int64_t B = seq->shape[0];
    int64_t *next = malloc((size_t)B * sizeof *next);
    uint8_t *done = calloc((size_t)B, 1);
    int rc = next && done ? 0 : -1;
    if (rc != 0)
        pg_set_error("%s: out of memory", fn);
    if (d.cache && d.start && pg_lm_cache_set_start(d.cache, d.start) != 0) { /* a start past max_len: */
        pg_lm_cache_free(d.cache);                                           /* full forwards only */
        d.cache = NULL;
    }
    bool halt = false;
    int64_t live = B, s = 0;
    while (rc == 0 && s < o->max_new && live > 0 && !halt) {
        pg_graph_reset(g);
        pg_tensor *last = next_logits(g, lm, &d, seq, L0 + s); /* (B, V) */
        rc = last ? sample_rows(fn, last, o, r, next) : -1;
        if (rc == 0)
            live = place_ids(o, seq, L0 + s++, next, done, &halt);
    }
    *n = s;
    free(next);
    free(done);
    pg_lm_cache_free(d.cache);
    return rc;
}

/* seq (B, C) -> a heap (B, n) copy of its first n columns; seq is freed */
static pg_tensor *first_columns(const char *fn, pg_tensor *seq, int64_t n)
{
    int64_t B = seq->shape[0], C = seq->shape[1];
    if (n == C)
        return seq;
    pg_tensor *out = pg_tensor_alloc(NULL, fn, PG_I64, PG_SHAPE(B, n));
    for (int64_t b = 0; out && b < B; b++)
        memcpy(pg_i64(out) + b * n, pg_i64(seq) + b * C, (size_t)n * sizeof(int64_t));
    pg_tensor_free(seq);
    return out;
}

/* pg_lm_generate(_ex) once the arguments are checked */
static pg_tensor *generate(const char *fn, pg_lm *lm, const pg_tensor *prompt, const pg_sample_opts *o, pg_rng *r)
{
    int64_t B = prompt->shape[0], L0 = prompt->shape[1];
    if (o->max_new > INT64_MAX - L0) {
        pg_set_error("%s: n_new %lld is too large", fn, (long long)o->max_new);
        return NULL;
    }
    pg_tensor *seq = pg_tensor_alloc(NULL, fn, PG_I64, PG_SHAPE(B, L0 + o->max_new)); /* refuses absurd lengths */
    pg_graph *g = seq ? pg_graph_new() : NULL;
    if (!g) {
        if (seq)
            pg_set_error("%s: out of memory", fn);
        pg_tensor_free(seq);
        return NULL;
    }
    pg_fill(seq, 0.0);
    for (int64_t b = 0; b < B; b++)
        memcpy(pg_i64(seq) + b * (L0 + o->max_new), pg_i64(prompt) + b * L0, (size_t)L0 * sizeof(int64_t));
    bool was_training = lm->base.training;
    pg_module_train(&lm->base, false);
    pg_no_grad_begin(g);
    int64_t n = 0;
    int rc = generate_loop(fn, g, lm, o, r, seq, L0, &n);
    pg_no_grad_end(g);
    pg_module_train(&lm->base, was_training);
    pg_graph_free(g);
    if (rc != 0) {
        pg_tensor_free(seq);
        return NULL;
    }
    return first_columns(fn, seq, L0 + n);
}

static int check_prompt(const char *fn, const pg_lm *lm, const pg_tensor *prompt)
{
    if (!lm || !prompt || prompt->dtype != PG_I64 || prompt->ndim != 2 || prompt->shape[0] < 1 ||
        prompt->shape[1] < 1) {
        pg_set_error("%s: need a model, an i64 prompt (B, L0) with B, L0 >= 1, got %s, %s", fn,
                     lm ? "a model" : "NULL", prompt ? SHAPE(prompt) : "NULL");
        return -1;
    }
    const int64_t *v = pg_i64(prompt);
    for (int64_t i = 0; i < prompt->numel; i++)
        if (v[i] < 0 || v[i] >= lm->cfg.vocab) {
            pg_set_error("%s: prompt id %lld at [%lld, %lld] is outside the vocabulary [0, %lld)", fn,
                         (long long)v[i], (long long)(i / prompt->shape[1]), (long long)(i % prompt->shape[1]),
                         (long long)lm->cfg.vocab);
            return -1;
        }
    return 0;
}

pg_tensor *pg_lm_generate_ex(pg_lm *lm, const pg_tensor *prompt, const pg_sample_opts *o)
{
    const char *fn = "pg_lm_generate_ex";
    pg_sample_opts d = pg_sample_defaults();
    o = o ? o : &d;
    if (check_prompt(fn, lm, prompt) != 0 || check_sampling(fn, o) != 0)
        return NULL;
    if (o->max_new < 0 || o->n_stop < 0 || (o->n_stop > 0 && !o->stop)) {
        pg_set_error("%s: need max_new >= 0 and n_stop >= 0 stop ids (stop non-NULL when n_stop > 0), got %lld, "
                     "%lld, %s",
                     fn, (long long)o->max_new, (long long)o->n_stop, o->stop ? "ids" : "NULL");
        return NULL;
    }
    for (int64_t b = 0; o->prompt_start && b < prompt->shape[0]; b++)
        if (o->prompt_start[b] < 0 || o->prompt_start[b] >= prompt->shape[1]) {
            pg_set_error("%s: prompt_start[%lld] = %lld, need 0 <= start < the prompt's width %lld (a row keeps a "
                         "real token)", fn, (long long)b, (long long)o->prompt_start[b], (long long)prompt->shape[1]);
            return NULL;
        }
    pg_rng own = pg_rng_init(o->seed);
    return generate(fn, lm, prompt, o, o->rng ? o->rng : &own);
}

pg_tensor *pg_lm_generate(pg_lm *lm, const pg_tensor *prompt, int64_t n_new, double temperature, int64_t top_k,
                          pg_rng *r)
{
    const char *fn = "pg_lm_generate";
    pg_sample_opts o = pg_sample_defaults();
    o.temperature = temperature;
    o.top_k = top_k;
    o.max_new = n_new;
    o.rng = r;
    if (check_prompt(fn, lm, prompt) != 0 || check_sampling(fn, &o) != 0)
        return NULL;
    if (n_new < 0 || (!r && temperature != 0)) {
        pg_set_error("%s: need n_new >= 0 and a generator when sampling, got %lld, temperature %g and %s", fn,
                     (long long)n_new, temperature, r ? "a generator" : "NULL");
        return NULL;
    }
    return generate(fn, lm, prompt, &o, r);
}
