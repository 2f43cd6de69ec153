/* The fused attention's window bias (autograd/flash.h: window_bias, LocalAttention's
 * attn_bias; local_fused::attn_bias holds it equal to the band of ops): a value by hand,
 * gradchecks in q, k, v and the bias (windows and exact windows), bad input. */
#include "../autograd/flash.h"
#include "testutil.h"

/* one head, L 4, window 2, look_backward 1, q = k = 0: the logits are the bias alone.
 * Query 3 (window 1, offset 1) looks at windows 0 and 1: keys 0..3 at slots 0..3, so
 * its weights are softmax(wb[0, 1, 0..3]) */
Test(flash_window_bias, by_hand)
{
    pg_tensor *z = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1, 1, 4, 2), 0.0);
    pg_tensor *v = T64(PG_SHAPE(1, 1, 4, 1), 1, 10, 100, 1000);
    pg_tensor *wb = T64(PG_SHAPE(1, 2, 4), 0, 0, 0, 0, /* offset 0 */ 0.5, -1, 2, 0.25 /* offset 1 */);
    pg_flash_opts o = {.window = 2, .look_backward = 1, .window_bias = wb};
    pg_tensor *out = pg_flash_attention(NULL, z, z, v, &o);
    cr_assert_not_null(out, "%s", pg_last_error());
    double e[4] = {exp(0.5), exp(-1), exp(2), exp(0.25)}, sum = e[0] + e[1] + e[2] + e[3];
    double want = (e[0] * 1 + e[1] * 10 + e[2] * 100 + e[3] * 1000) / sum;
    cr_assert_float_eq(pg_get(out, 3), want, 1e-13, "query 3: %.15g, want %.15g", pg_get(out, 3), want);
    /* query 1 (window 0, offset 1): keys 0, 1 at slots 2, 3 (window -1 holds no key) */
    double w1 = (exp(2) * 1 + exp(0.25) * 10) / (exp(2) + exp(0.25));
    cr_assert_float_eq(pg_get(out, 1), w1, 1e-13, "query 1: %.15g, want %.15g", pg_get(out, 1), w1);
    free_all(4, (pg_tensor *[]){z, v, wb, out});
}

typedef struct gc_ctx {
    bool exact, causal;
} gc_ctx;

static pg_tensor *wb_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const gc_ctx *c = ctx;
    pg_flash_opts o = {.window = 3, .look_backward = 1, .look_forward = c->causal ? 0 : 1, .exact_window = c->exact,
                       .causal = c->causal, .window_bias = in[3]};
    return pg_flash_attention(g, in[0], in[1], in[2], &o);
}

Test(flash_window_bias, gradcheck)
{
    for (int k = 0; k < 3; k++) {
        gc_ctx c = {k == 1, k == 2};
        int64_t S = (1 + (c.causal ? 0 : 1) + 1) * 3;
        pg_tensor *in[4] = {randt(PG_SHAPE(2, 2, 7, 3), 1, true), randt(PG_SHAPE(2, 2, 7, 3), 2, true),
                            randt(PG_SHAPE(2, 2, 7, 2), 3, true), randt(PG_SHAPE(2, 3, S), 4, true)};
        assert_gradcheck(wb_fn, 4, in, &c, NULL);
        free_all(4, in);
    }
}

Test(flash_window_bias, bad_input)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 3, 6, 4));
    pg_tensor *wb = pg_zeros(g, PG_F64, PG_SHAPE(3, 2, 4)), *wb5 = pg_zeros(g, PG_F64, PG_SHAPE(3, 2, 5));
    pg_tensor *wb4 = pg_zeros(g, PG_F64, PG_SHAPE(4, 2, 4)), *wb32 = pg_zeros(g, PG_F32, PG_SHAPE(3, 2, 4));
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &(pg_flash_opts){.window_bias = wb}),
                 "pg_flash_attention: window_bias is f64[3,2,4], expected f64 (Hb, window, (look_backward + "
                 "look_forward + 1) window) = (Hb, 0, -1) with Hb dividing B H = 6, and a band (window 0 > 0)");
    const pg_flash_opts band = {.window = 2, .look_backward = 1};
    pg_flash_opts o = band;
    o.window_bias = wb5;
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &o), "window_bias is f64[3,2,5], expected f64 (Hb, window, "
                                                     "(look_backward + look_forward + 1) window) = (Hb, 2, 4)");
    o.window_bias = wb4;
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &o), "window_bias is f64[4,2,4]");
    o.window_bias = wb32;
    ASSERT_FAILS(pg_flash_attention(g, q, q, q, &o), "window_bias is f32[3,2,4]");
    o.window_bias = wb;
    cr_assert_not_null(pg_flash_attention(g, q, q, q, &o), "%s", pg_last_error());
    pg_graph_free(g);
}
