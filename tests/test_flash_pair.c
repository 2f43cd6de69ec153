/* The fused attention's pair bias (autograd/flash.h: pair_bias (Bb, H, Lq, Lk), Bb 1 or B;
 * FIRE's and CoPE's bias on MultiheadAttention's fused path): a value by hand, equal to
 * pg_attention with the same bias over several tiles (both batch layouts, causal, a key
 * mask, a band, Lq != Lk, a distance bias beside), the same bits for 1 and 2 threads
 * (the shared gradient of Bb 1), gradchecks, bad input. */
#include "../autograd/flash.h"
#include "testutil.h"

#include <string.h>

/* one head, two queries, three keys, q = k = 0: the logits are the bias alone */
Test(flash_pair, by_hand)
{
    pg_tensor *z = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1, 1, 2, 2), 0.0);
    pg_tensor *zk = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1, 1, 3, 2), 0.0);
    pg_tensor *v = T64(PG_SHAPE(1, 1, 3, 1), 1, 10, 100);
    pg_tensor *pb = T64(PG_SHAPE(1, 1, 2, 3), 0.5, -1, 2, /* query 1 */ 1, 0, -INFINITY);
    pg_tensor *out = pg_flash_attention(NULL, z, zk, v, &(pg_flash_opts){.pair_bias = pb});
    cr_assert_not_null(out, "%s", pg_last_error());
    double e0[3] = {exp(0.5), exp(-1), exp(2)};
    double want0 = (e0[0] * 1 + e0[1] * 10 + e0[2] * 100) / (e0[0] + e0[1] + e0[2]);
    double want1 = (exp(1) * 1 + 1 * 10) / (exp(1) + 1); /* -inf hides key 2 */
    cr_assert_float_eq(pg_get(out, 0), want0, 1e-13, "query 0: %.15g, want %.15g", pg_get(out, 0), want0);
    cr_assert_float_eq(pg_get(out, 1), want1, 1e-13, "query 1: %.15g, want %.15g", pg_get(out, 1), want1);
    free_all(5, (pg_tensor *[]){z, zk, v, pb, out});
}

typedef struct pcase {
    int64_t B, H, Lq, Lk, D, Bb;
    bool causal, mask, dist;
    int64_t window;
} pcase;

typedef struct pin {
    pg_tensor *t[5]; /* q, k, v, pair_bias, dist_bias (or NULL) */
    pg_tensor *mask;
} pin;

static pin make_inputs(const pcase *c, uint64_t seed)
{
    pin in = {{randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed, true), randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 1, true),
               randt(PG_SHAPE(c->B, c->H, c->Lk, 3), seed + 2, true),
               randt(PG_SHAPE(c->Bb, c->H, c->Lq, c->Lk), seed + 3, true),
               c->dist ? randt(PG_SHAPE(c->H, c->Lq + c->Lk - 1), seed + 4, true) : NULL},
              c->mask ? key_mask_pattern(c->B, c->Lk, 3, 2) : NULL};
    return in;
}

static void free_inputs(pin *in)
{
    free_all(5, in->t);
    pg_tensor_free(in->mask);
}

/* the fused op, or pg_attention with the pair bias (+ the distance bias as a matrix, + the
 * band as -inf) as one broadcast bias */
static pg_tensor *attend(pg_graph *g, const pcase *c, bool fused, pg_tensor *const *t, pg_tensor *mask)
{
    if (fused)
        return pg_flash_attention(g, t[0], t[1], t[2],
                                  &(pg_flash_opts){.causal = c->causal, .mask = mask, .pair_bias = t[3],
                                                   .dist_bias = t[4], .window = c->window, .look_backward = 1});
    pg_tensor *bias = t[3];
    if (t[4]) { /* dist_bias[h, i - j + Lk - 1] as (H, Lq, Lk) */
        pg_tensor *idx = pg_empty(g, PG_I64, PG_SHAPE(c->Lq * c->Lk));
        for (int64_t i = 0; i < c->Lq; i++)
            for (int64_t j = 0; j < c->Lk; j++)
                pg_i64(idx)[i * c->Lk + j] = i - j + c->Lk - 1;
        bias = pg_add(g, bias, pg_reshape(g, pg_index_select(g, t[4], 1, idx), PG_SHAPE(c->H, c->Lq, c->Lk)));
    }
    if (c->window > 0) {
        pg_tensor *band = hidden_pairs(g, 1, c->Lq, c->Lk, NULL, false, c->window);
        bias = pg_masked_fill(g, bias, band, -INFINITY);
    }
    return pg_attention(g, t[0], t[1], t[2], &(pg_sdpa_opts){.bias = bias, .mask = mask, .causal = c->causal});
}

/* outputs and every input's gradient of sum(out * w) */
enum { N_OUT = 6 };
static void run(bool fused, const pcase *c, pin *in, pg_tensor *w, pg_tensor **res)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *out = attend(g, c, fused, in->t, in->mask);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, out, w), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, out);
    for (int i = 0; i < 5; i++)
        res[1 + i] = take_grad(in->t[i]);
    pg_graph_free(g);
}

Test(flash_pair, equals_pg_attention_with_the_bias)
{
    const pcase cases[] = {
        {2, 3, 70, 70, 8, 1, false, false, false, 0}, {2, 3, 70, 70, 8, 2, true, true, false, 0},
        {1, 2, 130, 100, 5, 1, true, true, true, 0},  {3, 2, 100, 130, 4, 3, false, true, true, 0},
        {2, 2, 150, 150, 6, 1, true, false, false, 48}, {1, 1, 3, 9, 2, 1, false, false, true, 0},
    };
    double worst = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const pcase *c = &cases[k];
        pin in = make_inputs(c, 100 + 10 * k);
        pg_tensor *w = randt(PG_SHAPE(c->B, c->H, c->Lq, 3), 9 + k, false);
        pg_tensor *a[N_OUT], *b[N_OUT];
        run(true, c, &in, w, a);
        run(false, c, &in, w, b);
        for (int i = 0; i < N_OUT; i++) {
            cr_assert_eq(a[i] == NULL, b[i] == NULL);
            double e = a[i] ? max_err(a[i], b[i]) : 0;
            cr_assert_lt(e, 1e-12, "case %zu, output %d: %g", k, i, e);
            worst = e > worst ? e : worst;
            pg_tensor_free(a[i]);
            pg_tensor_free(b[i]);
        }
        pg_tensor_free(w);
        free_inputs(&in);
    }
    cr_log_info("flash_pair vs pg_attention: %.3g (outputs and gradients)", worst);
}

typedef struct fused_run {
    const pcase *c;
    pin *in;
    pg_tensor *w;
} fused_run;

static void run_fused(void *ctx, pg_tensor **res)
{
    fused_run *x = ctx;
    run(true, x->c, x->in, x->w, res);
}

/* the pair bias's gradient with Bb 1 sums batches that different threads handle */
Test(flash_pair, same_bits_for_any_thread_count)
{
    const pcase c = {3, 4, 90, 90, 8, 1, true, true, true, 0};
    pin in = make_inputs(&c, 7);
    fused_run x = {&c, &in, randt(PG_SHAPE(3, 4, 90, 3), 8, false)};
    assert_same_bits_on_1_and_2_threads(run_fused, &x, N_OUT, NULL);
    pg_tensor_free(x.w);
    free_inputs(&in);
}

static pg_tensor *pair_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const pcase *c = ctx;
    return pg_flash_attention(g, in[0], in[1], in[2],
                              &(pg_flash_opts){.causal = c->causal, .pair_bias = in[3], .window = c->window,
                                               .look_backward = 1});
}

/* q, k, v and the bias over two tiles of queries and keys, both batch layouts */
Test(flash_pair, gradcheck)
{
    const pcase cases[] = {{2, 2, 66, 66, 2, 1, true, false, false, 0}, {2, 1, 5, 7, 3, 2, false, false, false, 0},
                           {1, 2, 9, 9, 2, 1, true, false, false, 3}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const pcase *c = &cases[k];
        pg_tensor *in[4] = {randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), 1 + k, true),
                            randt(PG_SHAPE(c->B, c->H, c->Lk, c->D), 2 + k, true),
                            randt(PG_SHAPE(c->B, c->H, c->Lk, 2), 3 + k, true),
                            randt(PG_SHAPE(c->Bb, c->H, c->Lq, c->Lk), 4 + k, true)};
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(pair_fn, 4, in, (void *)c, &o);
        free_all(4, in);
    }
}

Test(flash_pair, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 4)), *k = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 5, 4));
    pg_tensor *bad[] = {pg_zeros(g, PG_F64, PG_SHAPE(3, 3, 6, 5)), pg_zeros(g, PG_F64, PG_SHAPE(1, 3, 5, 6)),
                        pg_zeros(g, PG_F64, PG_SHAPE(3, 6, 5)), pg_zeros(g, PG_F32, PG_SHAPE(1, 3, 6, 5)),
                        pg_zeros(g, PG_F64, PG_SHAPE(2, 1, 6, 5))};
    const char *shown[] = {"f64[3,3,6,5]", "f64[1,3,5,6]", "f64[3,6,5]", "f32[1,3,6,5]", "f64[2,1,6,5]"};
    for (int i = 0; i < 5; i++) {
        char want[200];
        snprintf(want, sizeof want,
                 "pg_flash_attention: pair_bias is %s, expected f64 (1 or B, H, Lq, Lk) = (1 or 2, 3, 6, 5)", shown[i]);
        ASSERT_FAILS(pg_flash_attention(g, q, k, k, &(pg_flash_opts){.pair_bias = bad[i]}), want);
    }
    pg_tensor *ok = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 5));
    cr_assert_not_null(pg_flash_attention(g, q, k, k, &(pg_flash_opts){.pair_bias = ok}), "%s", pg_last_error());
    pg_graph_free(g);
}
