/* The fused attention's backward into gradients of q, k and v new to it (pg_grad_fresh):
 * no zero-fill first, a block's first product assigns (autograd/flash_kernels.h,
 * keys_acc, zero_rows). Against the same backward adding to gradients that already exist
 * (zeros), equal values, with the fresh buffers in an arena filled with NaN first, so that
 * a row left unwritten shows: keys no query reaches at the end (causal, Lk > Lq), query
 * blocks that see no key and keys between the blocks' ranges that none reaches (a band
 * over a key mask hiding a window), a batch with every key hidden, xPos (whose dq and dk
 * are zeroed first), dropout; float64 and float32, 1 and 3 threads. */
#include "../autograd/flash.h"
#include "../tensor/threadpool.h"
#include "testutil.h"

typedef enum fcase { F_CAUSAL_WIDE, F_BAND_GAPS, F_XPOS, F_DROPOUT, F_CASES } fcase;

enum { FB = 2, FH = 2, FD = 8 };

static int64_t lq_of(fcase c) { return c == F_CAUSAL_WIDE ? 70 : 200; }
static int64_t lk_of(fcase c) { return c == F_CAUSAL_WIDE ? 130 : 200; }

/* batch 0: keys 64..127 hidden (the band's second window sees nothing); batch 1: every key */
static pg_tensor *gap_mask(int64_t Lk)
{
    pg_tensor *m = pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(FB, Lk));
    for (int64_t j = 0; j < Lk; j++) {
        pg_bool(m)[j] = j < 64 || j >= 128;
        pg_bool(m)[Lk + j] = false;
    }
    return m;
}

static pg_flash_opts opts_of(fcase c, pg_tensor *mask, pg_rng *rng)
{
    pg_flash_opts o = {.causal = c != F_BAND_GAPS, .mask = c == F_BAND_GAPS ? mask : NULL};
    if (c == F_BAND_GAPS)
        o.window = 64; /* look_backward, look_forward 0: a query sees its own window */
    if (c == F_XPOS)
        o.xpos_scale_base = 64;
    if (c == F_DROPOUT)
        o.dropout = 0.25, o.rng = rng;
    return o;
}

/* the gradients of q, k, v (leaves) of sum(w * out); fresh: through q * 1 (and k, v), whose
 * gradients the kernel gets new, in an arena filled with NaN; else into the leaves' own
 * gradients, zeroed before */
static void grads(fcase c, pg_tensor *const qkv[3], pg_tensor *mask, bool fresh, pg_tensor *res[3])
{
    pg_graph *g = pg_graph_new();
    cr_assert_not_null(pg_full(g, qkv[0]->dtype, PG_SHAPE(1 << 18), NAN));
    pg_graph_reset(g);
    pg_tensor *in[3];
    for (int i = 0; i < 3; i++) {
        pg_tensor *z = pg_zeros(NULL, qkv[i]->dtype, qkv[i]->ndim, qkv[i]->shape);
        pg_tensor_free(qkv[i]->grad);
        qkv[i]->grad = fresh ? NULL : z; /* existing zeros: the kernel adds */
        if (fresh)
            pg_tensor_free(z);
        in[i] = fresh ? pg_mul_scalar(g, qkv[i], 1.0) : qkv[i];
    }
    pg_rng rng = pg_rng_init(5);
    pg_flash_opts o = opts_of(c, mask, &rng);
    pg_tensor *out = pg_flash_attention(g, in[0], in[1], in[2], &o);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    pg_tensor *w = randt(PG_SHAPE(FB, FH, lq_of(c), FD), 9, false);
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor_free(w);
    for (int i = 0; i < 3; i++)
        res[i] = take_grad(qkv[i]);
    pg_graph_free(g);
}

static pg_tensor *leaf(pg_dtype dt, int64_t L, uint64_t seed) { return rand_leaf(dt, PG_SHAPE(FB, FH, L, FD), seed); }

static void assert_fresh_same(fcase c, pg_dtype dt, int threads)
{
    static const char *const names[3] = {"dq", "dk", "dv"};
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(threads), 0);
    pg_tensor *qkv[3] = {leaf(dt, lq_of(c), 1), leaf(dt, lk_of(c), 2), leaf(dt, lk_of(c), 3)};
    pg_tensor *mask = gap_mask(lk_of(c)), *want[3], *got[3];
    grads(c, qkv, mask, false, want);
    grads(c, qkv, mask, true, got);
    for (int i = 0; i < 3; i++)
        for (int64_t e = 0; e < got[i]->numel; e++)
            cr_assert(pg_get(got[i], e) == pg_get(want[i], e), "case %d, %s, %d threads: %s[%lld] = %g, expected %g",
                      (int)c, pg_dtype_name(dt), threads, names[i], (long long)e, pg_get(got[i], e),
                      pg_get(want[i], e));
    free_all(3, want);
    free_all(3, got);
    free_all(3, qkv);
    pg_tensor_free(mask);
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

Test(flash_fresh, first_products_assign)
{
    for (int c = 0; c < F_CASES; c++)
        for (int threads = 1; threads <= 3; threads += 2) {
            assert_fresh_same((fcase)c, PG_F64, threads);
            assert_fresh_same((fcase)c, PG_F32, threads);
        }
}
