/* pg_mha_attention_weights (nn/attention.c): the probabilities pg_mha_forward's
 * reference path mixes the values with. Checked against softmax(q k^T / sqrt(Dh))
 * computed by hand from to_qkv's weights, against ALiBi's bias (the log-ratio
 * of the weights with and without it is the bias, up to a per-row constant),
 * and the bad input. */
#include <math.h>

#include "../nn/attention.h"
#include "../nn/pos_alibi.h"
#include "testutil.h"

enum { B = 1, L = 5, DIM = 8, H = 2, DH = DIM / H };

static pg_mha *mha(pg_posmod *pos, bool causal)
{
    pg_mha_config c = pg_mha_defaults(DIM, H);
    c.causal = causal;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(7);
    pg_mha *m = pg_mha_new(&c, pos ? &pos : NULL, pos ? 1 : 0, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static pg_tensor *input(void)
{
    pg_rng r = pg_rng_init(3);
    pg_tensor *x = pg_empty(NULL, PG_F64, PG_SHAPE(B, L, DIM));
    pg_fill_uniform(x, &r, -1, 1);
    return x;
}

/* channel ch of to_qkv(x) at position i: the projection by hand */
static double proj(const pg_mha *m, const pg_tensor *x, int64_t i, int64_t ch)
{
    const pg_linear *l = m->to_qkv;
    double s = l->bias ? pg_get(l->bias, ch) : 0;
    for (int64_t d = 0; d < DIM; d++)
        s += pg_get(l->weight, ch * DIM + d) * pg_get(x, i * DIM + d);
    return s;
}

Test(attn_weights, are_the_softmax_of_the_scaled_logits)
{
    pg_mha *m = mha(NULL, false);
    pg_tensor *x = input();
    pg_tensor *w = pg_mha_attention_weights(NULL, m, x, NULL, NULL);
    assert_shape(w, 4, (const int64_t[]){B, H, L, L});
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < L; i++) {
            double logit[L], max = -INFINITY, sum = 0;
            for (int64_t j = 0; j < L; j++) {
                logit[j] = 0;
                for (int64_t d = 0; d < DH; d++) /* heads are the outer factor: channel h * DH + d */
                    logit[j] += proj(m, x, i, h * DH + d) * proj(m, x, j, DIM + h * DH + d);
                logit[j] /= sqrt((double)DH);
                max = fmax(max, logit[j]);
            }
            for (int64_t j = 0; j < L; j++)
                sum += exp(logit[j] - max);
            for (int64_t j = 0; j < L; j++) {
                double want = exp(logit[j] - max) / sum, got = pg_get(w, (h * L + i) * L + j);
                cr_assert_float_eq(got, want, 1e-12, "head %lld, [%lld, %lld]: %.17g, expected %.17g",
                                   (long long)h, (long long)i, (long long)j, got, want);
            }
        }
    pg_tensor_free(w);
    pg_tensor_free(x);
    pg_module_free(&m->base);
}

Test(attn_weights, causal_with_alibi)
{
    pg_mha *plain = mha(NULL, true), *alibi = mha(pg_alibi_new(H, NULL, PG_F64), true);
    pg_tensor *x = input();
    pg_tensor *w0 = pg_mha_attention_weights(NULL, plain, x, NULL, NULL);
    pg_tensor *w1 = pg_mha_attention_weights(NULL, alibi, x, NULL, NULL);
    pg_tensor *bias = pg_mha_positional_bias(NULL, alibi, x, NULL, NULL);
    cr_assert(w0 && w1 && bias, "%s", pg_last_error());
    for (int64_t r = 0; r < H * L; r++) {
        int64_t i = r % L;
        double sum = 0, c0 = NAN;
        for (int64_t j = 0; j < L; j++) {
            double p0 = pg_get(w0, r * L + j), p1 = pg_get(w1, r * L + j);
            sum += p1;
            if (j > i) { /* hidden by causal */
                cr_assert_eq(p1, 0.0, "row %lld, key %lld > query: %g", (long long)r, (long long)j, p1);
                continue;
            }
            double c = log(p1) - log(p0) - pg_get(bias, r * L + j); /* the same for every visible key */
            if (j == 0)
                c0 = c;
            cr_assert_float_eq(c, c0, 1e-9, "row %lld, key %lld: %.17g against %.17g", (long long)r, (long long)j, c,
                               c0);
        }
        cr_assert_float_eq(sum, 1.0, 1e-12, "row %lld sums to %.17g", (long long)r, sum);
    }
    pg_tensor_free(w0);
    pg_tensor_free(w1);
    pg_tensor_free(bias);
    pg_tensor_free(x);
    pg_module_free(&plain->base);
    pg_module_free(&alibi->base);
}

Test(attn_weights, bad_input)
{
    pg_mha *m = mha(NULL, true);
    pg_tensor *x = input(), *narrow = pg_empty(NULL, PG_F64, PG_SHAPE(B, L, DIM - 1));
    ASSERT_FAILS(pg_mha_attention_weights(NULL, NULL, x, NULL, NULL), "pg_mha_attention_weights: module is NULL");
    ASSERT_FAILS(pg_mha_attention_weights(NULL, m, NULL, NULL, NULL), "pg_mha_attention_weights");
    ASSERT_FAILS(pg_mha_attention_weights(NULL, m, narrow, NULL, NULL), "pg_mha_attention_weights");
    ASSERT_FAILS(pg_mha_attention_weights(NULL, m, x, x, NULL), "takes no context");
    pg_tensor_free(narrow);
    pg_tensor_free(x);
    pg_module_free(&m->base);
}
