/* Sampling from logits (temperature, top-k, greedy) and autoregressive
 * generation with the decoder-only LM. */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

/* index of the first maximum of x[0..n) among entries with keep[i] == want */
static int64_t first_max(const double *x, const uint8_t *keep, uint8_t want, int64_t n)
{
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if ((!keep || keep[i] == want) && (best < 0 || x[i] > x[best]))
            best = i;
    return best;
}

/* One draw from softmax(x / t) over the top_k largest entries (keep: scratch of n bytes). */
static int64_t sample_row(const double *x, int64_t n, double t, int64_t top_k, uint8_t *keep, pg_rng *r)
{
    if (top_k > 0 && top_k < n) {
        /* exactly top_k entries: repeatedly the first maximum not yet kept */
        memset(keep, 0, (size_t)n);
        for (int64_t k = 0; k < top_k; k++)
            keep[first_max(x, keep, 0, n)] = 1;
    } else {
        memset(keep, 1, (size_t)n);
    }
    double m = x[first_max(x, keep, 1, n)], total = 0.0;
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

int pg_sample_logits(const pg_tensor *logits, double temperature, int64_t top_k, pg_rng *r, int64_t *out)
{
    const char *fn = "pg_sample_logits";
    if (!logits || !pg_dtype_is_float(logits->dtype) || logits->ndim != 2 || logits->shape[1] < 1 || !out) {
        pg_set_error("%s: logits is %s, expected a float (B, V) with V >= 1 (and out non-NULL)", fn,
                     logits ? SHAPE(logits) : "NULL");
        return -1;
    }
    if (!(temperature >= 0) || !isfinite(temperature) || top_k < 0 || (temperature > 0 && !r)) {
        pg_set_error("%s: need a finite temperature >= 0, top_k >= 0 and a generator when sampling, got %g, %lld, %s",
                     fn, temperature, (long long)top_k, r ? "a generator" : "NULL");
        return -1;
    }
    int64_t B = logits->shape[0], V = logits->shape[1];
    double *row = malloc((size_t)V * sizeof *row);
    uint8_t *keep = malloc((size_t)V);
    if (!row || !keep) {
        free(row);
        free(keep);
        pg_set_error("%s: out of memory", fn);
        return -1;
    }
    int rc = 0;
    for (int64_t b = 0; b < B && rc == 0; b++) {
        double m = -INFINITY;
        for (int64_t i = 0; i < V; i++) {
            row[i] = pg_get(logits, b * V + i);
            m = row[i] > m ? row[i] : m;
            if (isnan(row[i]) || row[i] == INFINITY)
                m = NAN;
        }
        if (!isfinite(m)) {
            pg_set_error("%s: row %lld has a NaN or +inf logit, or no finite one", fn, (long long)b);
            rc = -1;
        } else {
            out[b] = temperature == 0 ? first_max(row, NULL, 0, V) : sample_row(row, V, temperature, top_k, keep, r);
        }
    }
    free(row);
    free(keep);
    return rc;
}

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

/* Appends one sampled id per row at column L of seq; 0 or -1. */
static int generate_step(pg_graph *g, pg_lm *lm, pg_tensor *seq, int64_t L, double temperature, int64_t top_k,
                         pg_rng *r, int64_t *next)
{
    int64_t B = seq->shape[0], V = lm->cfg.vocab;
    int64_t Lw = lm->cfg.max_len > 0 && L > lm->cfg.max_len ? lm->cfg.max_len : L;
    pg_tensor *logits = pg_lm_forward(g, lm, window(g, seq, L, Lw), NULL); /* (B, Lw, V) */
    pg_tensor *last = pg_reshape(g, pg_narrow(g, logits, 1, Lw - 1, 1), PG_SHAPE(B, V));
    if (!last) {
        pg_set_error("%s", pg_graph_error(g)); /* the first error, not a later "x is NULL" */
        return -1;
    }
    if (pg_sample_logits(last, temperature, top_k, r, next) != 0)
        return -1;
    for (int64_t b = 0; b < B; b++)
        pg_i64(seq)[b * seq->shape[1] + L] = next[b];
    return 0;
}

pg_tensor *pg_lm_generate(pg_lm *lm, const pg_tensor *prompt, int64_t n_new, double temperature, int64_t top_k,
                          pg_rng *r)
{
    const char *fn = "pg_lm_generate";
    if (!lm || !prompt || prompt->dtype != PG_I64 || prompt->ndim != 2 || prompt->shape[0] < 1 ||
        prompt->shape[1] < 1 || n_new < 0) {
        pg_set_error("%s: need a model, an i64 prompt (B, L0) with B, L0 >= 1 and n_new >= 0, got %s, %lld", fn,
                     prompt ? SHAPE(prompt) : "NULL", (long long)n_new);
        return NULL;
    }
    if (!r && temperature != 0) {
        pg_set_error("%s: need a generator when sampling (temperature %g), got NULL", fn, temperature);
        return NULL;
    }
    int64_t B = prompt->shape[0], L0 = prompt->shape[1];
    if (n_new > INT64_MAX - L0) {
        pg_set_error("%s: n_new %lld is too large", fn, (long long)n_new);
        return NULL;
    }
    pg_tensor *seq = pg_tensor_alloc(NULL, fn, PG_I64, PG_SHAPE(B, L0 + n_new)); /* refuses absurd lengths */
    if (!seq)
        return NULL;
    pg_fill(seq, 0.0);
    int64_t *next = malloc((size_t)B * sizeof *next);
    pg_graph *g = pg_graph_new();
    if (!next || !g) {
        pg_set_error("%s: out of memory", fn);
        pg_tensor_free(seq);
        free(next);
        pg_graph_free(g);
        return NULL;
    }
    for (int64_t b = 0; b < B; b++)
        memcpy(pg_i64(seq) + b * (L0 + n_new), pg_i64(prompt) + b * L0, (size_t)L0 * sizeof(int64_t));
    bool was_training = lm->base.training;
    pg_module_train(&lm->base, false);
    pg_no_grad_begin(g);
    int rc = 0;
    for (int64_t s = 0; s < n_new && rc == 0; s++) {
        pg_graph_reset(g);
        rc = generate_step(g, lm, seq, L0 + s, temperature, top_k, r, next);
    }
    pg_no_grad_end(g);
    pg_module_train(&lm->base, was_training);
    pg_graph_free(g);
    free(next);
    if (rc != 0) {
        pg_tensor_free(seq);
        return NULL;
    }
    return seq;
}
