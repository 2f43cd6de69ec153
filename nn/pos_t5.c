/* T5 bucketed relative position bias (nn/pos_t5.h), the semantics of
 * x-transformers' RelativePositionBias. */
#include "pos_t5.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../tensor/shape_util.h"
#define POS_LIMIT 9007199254740992.0 /* 2^53: positions beyond are not integers a double can hold */

int64_t pg_t5_bucket(int64_t n, bool causal, int64_t num_buckets, int64_t max_distance)
{
    int64_t ret = 0, nb = num_buckets;
    if (!causal) {
        nb /= 2;
        if (n < 0)
            ret += nb; /* keys after the query: the upper half */
        n = n < 0 ? -n : n;
    } else if (n < 0) {
        n = 0; /* keys after the query share bucket 0 */
    }
    int64_t exact = nb / 2;
    if (n < exact)
        return ret + n;
    /* float32 as the reference: log(n.float() / E) / log(D / E) * (N - E), truncated */
    float v = logf((float)n / (float)exact) / (float)log((double)max_distance / (double)exact) * (float)(nb - exact);
    if (!(v < (float)(nb - 1 - exact))) /* at or past the last bucket (also avoids an overflowing cast) */
        return ret + nb - 1;
    return ret + exact + (int64_t)v;
}

/* integer positions of one side into out[Bp * Lp]; float positions truncate toward zero */
static bool int_positions(pg_graph *g, const char *fn, const char *name, const pg_tensor *pos, int64_t *out)
{
    for (int64_t i = 0; i < pos->numel; i++) {
        if (pos->dtype == PG_I64) {
            out[i] = ((const int64_t *)pos->data)[i];
            continue;
        }
        double v = pg_get(pos, i);
        if (!(fabs(v) <= POS_LIMIT)) {
            pg_graph_fail(g, "%s: %s[%lld] is %g, expected a finite position of magnitude <= 2^53", fn, name,
                          (long long)i, v);
            return false;
        }
        out[i] = (int64_t)v; /* toward zero, as torch's .long() */
    }
    return true;
}

static pg_tensor *t5_table(pg_graph *g, pg_posmod *pm, const pg_pos_ctx *c)
{
    const char *fn = "t5";
    pg_t5 *m = (pg_t5 *)pm;
    if (pg_pos_table_check(g, fn, c, m->heads) != 0)
        return NULL;
    int64_t Bq = c->pos_q ? c->B : 1, Lpq = c->pos_q ? c->pos_q->shape[1] : c->Lq;
    int64_t Bk = c->pos_k ? c->B : 1, Lpk = c->pos_k ? c->pos_k->shape[1] : c->Lk;
    int64_t Bo = Bq > Bk ? Bq : Bk;
    int64_t *pq = pg_graph_alloc(g, (size_t)(Bq * Lpq + Bk * Lpk) * sizeof(int64_t)), *pk = pq ? pq + Bq * Lpq : NULL;
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(Bo, Lpq, Lpk));
    if (!pq || !idx)
        return NULL;
    if (c->pos_q) {
        if (!int_positions(g, fn, c->self_attn ? "pos" : "pos_q", c->pos_q, pq))
            return NULL;
    } else {
        int64_t start = m->align == PG_T5_ALIGN_END ? c->Lk - c->Lq : 0;
        for (int64_t i = 0; i < Lpq; i++)
            pq[i] = start + i;
    }
    if (c->pos_k) {
        if (!int_positions(g, fn, c->self_attn ? "pos" : "pos_k", c->pos_k, pk))
            return NULL;
    } else {
        for (int64_t j = 0; j < Lpk; j++)
            pk[j] = j;
    }
    int64_t *id = idx->data;
    for (int64_t b = 0; b < Bo; b++)
        for (int64_t i = 0; i < Lpq; i++)
            for (int64_t j = 0; j < Lpk; j++)
                id[(b * Lpq + i) * Lpk + j] = pg_t5_bucket(pq[(Bq > 1 ? b : 0) * Lpq + i] - pk[(Bk > 1 ? b : 0) * Lpk + j],
                                                           m->causal, m->num_buckets, m->max_distance);
    pg_tensor *w = m->relative_attention_bias->weight;
    pg_tensor *e = pg_embedding(g, w, idx);                        /* (Bo, Lpq, Lpk, H) */
    pg_tensor *bias = pg_permute(g, e, (const int[]){0, 3, 1, 2}); /* (Bo, H, Lpq, Lpk) */
    bias = pg_mul_scalar(g, bias, m->scale);
    if (bias && bias->dtype != c->dtype)
        bias = pg_cast(g, bias, c->dtype);
    return pg_pos_table_finish(g, fn, bias, c, m->heads);
}

static pg_tensor *t5_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)q, (void)k, (void)v; /* the bias depends on the positions alone */
    return t5_table(g, m, c);
}

/* dist_bias: d (D) signed distances (truncated to integers) -> (heads, D) in d's dtype */
static pg_tensor *t5_dist(pg_graph *g, pg_posmod *pm, pg_tensor *d, const pg_pos_ctx *c)
{
    (void)c;
    const char *fn = "t5";
    pg_t5 *m = (pg_t5 *)pm;
    if (pg_pos_dist_check(g, fn, d) != 0)
        return NULL;
    int64_t D = d->shape[0];
    pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(D));
    int64_t *n = pg_graph_alloc(g, (size_t)(D > 0 ? D : 1) * sizeof(int64_t));
    if (!idx || !n || !int_positions(g, fn, "distance", d, n))
        return NULL;
    int64_t *id = idx->data;
    for (int64_t i = 0; i < D; i++)
        id[i] = pg_t5_bucket(n[i], m->causal, m->num_buckets, m->max_distance);
    pg_tensor *e = pg_embedding(g, m->relative_attention_bias->weight, idx); /* (D, heads) */
    pg_tensor *bias = pg_mul_scalar(g, pg_transpose(g, e, 0, 1), m->scale);  /* (heads, D) */
    return bias && bias->dtype != d->dtype ? pg_cast(g, bias, d->dtype) : bias;
}

static const pg_posmod_ops T5_OPS = {.mod_bias = t5_bias, .bias_table = t5_table, .dist_bias = t5_dist};

pg_posmod *pg_t5_new(int64_t heads, int64_t head_dim, const pg_t5_opts *o, pg_dtype dtype, pg_rng *r)
{
    const char *fn = "pg_t5_new";
    static const pg_t5_opts DEFAULTS = {0};
    o = o ? o : &DEFAULTS;
    if (o->heads != 0 && o->heads != heads) {
        pg_set_error("%s: opts.heads %lld differs from heads %lld", fn, (long long)o->heads, (long long)heads);
        return NULL;
    }
    int64_t nb = o->num_buckets ? o->num_buckets : 32, md = o->max_distance ? o->max_distance : 128;
    int64_t half = o->causal ? nb : nb / 2, exact = half / 2;
    if (heads < 1 || head_dim < 0) {
        pg_set_error("%s: need heads >= 1 and head_dim >= 0, got %lld, %lld", fn, (long long)heads,
                     (long long)head_dim);
        return NULL;
    }
    if (nb < 0 || exact < 1) {
        pg_set_error("%s: num_buckets %lld is too small: need >= %d for %s buckets", fn, (long long)nb,
                     o->causal ? 2 : 4, o->causal ? "causal" : "bidirectional");
        return NULL;
    }
    if (md <= exact) {
        pg_set_error("%s: max_distance %lld must exceed the exact range %lld (num_buckets %lld, %s)", fn,
                     (long long)md, (long long)exact, (long long)nb, o->causal ? "causal" : "bidirectional");
        return NULL;
    }
    if (o->align != PG_T5_ALIGN_START && o->align != PG_T5_ALIGN_END) {
        pg_set_error("%s: align must be PG_T5_ALIGN_START or PG_T5_ALIGN_END, got %d", fn, (int)o->align);
        return NULL;
    }
    double scale = o->scale;
    if (scale == 0) {
        if (head_dim < 1) {
            pg_set_error("%s: scale 0 means sqrt(head_dim), but head_dim is %lld; give a scale", fn,
                         (long long)head_dim);
            return NULL;
        }
        scale = sqrt((double)head_dim);
    }
    if (!isfinite(scale)) {
        pg_set_error("%s: scale must be finite, got %g", fn, scale);
        return NULL;
    }
    if (!r) {
        pg_set_error("%s: the table's initial values need a generator (r is NULL)", fn);
        return NULL;
    }
    pg_embed *e = pg_embed_new(nb, heads, dtype, r); /* checks dtype; N(0, 1) */
    if (!e)
        return NULL;
    pg_t5 *m = pg_posmod_alloc(sizeof *m, "T5RelativePositionBias", &T5_OPS, NULL, fn);
    if (!m)
        return pg_module_fail(&e->base, NULL);
    m->heads = heads;
    m->num_buckets = nb;
    m->max_distance = md;
    m->causal = o->causal;
    m->scale = scale;
    m->align = o->align;
    m->relative_attention_bias = e;
    if (pg_module_add_child(&m->pm.base, "relative_attention_bias", &e->base) != 0)
        return pg_module_fail(&m->pm.base, NULL);
    return &m->pm;
}

pg_posmod *pg_posmod_make_t5(const pg_posmod_args *a)
{
    int64_t heads = PG_POSMOD_HEADS("pg_posmod_make_t5", "the T5 bias", pg_t5_opts, a);
    return heads ? pg_t5_new(heads, a->head_dim, a->opts, a->dtype, a->rng) : NULL;
}
