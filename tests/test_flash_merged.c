/* The fused attention writing its result with the heads merged (autograd/flash.h:
 * merge_heads): (B, Lq, H Dv) equal bit for bit to pg_merge_heads of the (B, H, Lq, Dv)
 * result, and so are the gradients of every input, over the kernel's options (causal,
 * key mask, distance bias, separable biases, relative keys, xPos, a band with its window
 * bias, a pair bias, dropout, Dv != D, Lq != Lk), float64 and float32, 1 and 3 threads;
 * the op without a graph; a gradcheck of the merged op. */
#include "../autograd/flash.h"
#include "../tensor/threadpool.h"
#include "testutil.h"

typedef enum mcase {
    M_CAUSAL,   /* causal, Dv != D */
    M_MASKED,   /* key mask, distance bias, separable biases, Lq != Lk */
    M_REL,      /* relative keys and a distance bias, causal */
    M_XPOS,     /* xPos, causal */
    M_BAND,     /* a band with its window bias, look_forward 1 */
    M_PAIR,     /* a pair bias shared by the batches */
    M_DROPOUT,  /* dropout 0.3, causal */
    M_CASES
} mcase;

enum { MB = 2, MH = 3, MD = 8, N_IN = 10 };

typedef struct mrun {
    int64_t Lq, Lk, Dv;
    pg_tensor *in[N_IN]; /* q, k, v, dist_bias, sep_q, sep_k, rel_q, rel_k, window_bias, pair_bias */
    pg_tensor *mask;
} mrun;

static mrun make_run(mcase c, pg_dtype dt)
{
    mrun r = {70, c == M_MASKED ? 90 : 70, c == M_CAUSAL ? 6 : MD, {NULL}, NULL};
    r.in[0] = rand_leaf(dt, PG_SHAPE(MB, MH, r.Lq, MD), 1);
    r.in[1] = rand_leaf(dt, PG_SHAPE(MB, MH, r.Lk, MD), 2);
    r.in[2] = rand_leaf(dt, PG_SHAPE(MB, MH, r.Lk, r.Dv), 3);
    if (c == M_MASKED || c == M_REL)
        r.in[3] = rand_leaf(dt, PG_SHAPE(MH, r.Lq + r.Lk - 1), 4);
    if (c == M_MASKED) {
        r.in[4] = rand_leaf(dt, PG_SHAPE(MB, MH, r.Lq), 5);
        r.in[5] = rand_leaf(dt, PG_SHAPE(MB, MH, r.Lk), 6);
        r.mask = key_mask_pattern(MB, r.Lk, 3, 2);
    }
    if (c == M_REL) {
        r.in[6] = rand_leaf(dt, PG_SHAPE(MB, MH, r.Lq, MD), 7);
        r.in[7] = rand_leaf(dt, PG_SHAPE(MH, r.Lq + r.Lk - 1, MD), 8);
    }
    if (c == M_BAND)
        r.in[8] = rand_leaf(dt, PG_SHAPE(MH, 16, 3 * 16), 9); /* window 16, look_backward 1, look_forward 1 */
    if (c == M_PAIR)
        r.in[9] = rand_leaf(dt, PG_SHAPE(1, MH, r.Lq, r.Lk), 10);
    return r;
}

static pg_flash_opts opts_of(mcase c, const mrun *r, pg_rng *rng, bool merged)
{
    pg_tensor *const *in = r->in;
    pg_flash_opts o = {.causal = c != M_MASKED && c != M_BAND && c != M_PAIR, .mask = r->mask,
                       .dist_bias = in[3], .sep_q = in[4], .sep_k = in[5], .rel_q = in[6], .rel_k = in[7],
                       .window_bias = in[8], .pair_bias = in[9], .merge_heads = merged};
    if (c == M_XPOS)
        o.xpos_scale_base = 32;
    if (c == M_BAND)
        o.window = 16, o.look_backward = 1, o.look_forward = 1;
    if (c == M_DROPOUT)
        o.dropout = 0.3, o.rng = rng;
    return o;
}

/* out (merged either way) and the gradients of sum(w * out) for each input present */
static void run(mcase c, mrun *r, bool merged, pg_tensor *res[1 + N_IN])
{
    pg_rng rng = pg_rng_init(77);
    pg_flash_opts o = opts_of(c, r, &rng, merged);
    pg_graph *g = pg_graph_new();
    pg_tensor *out = pg_flash_attention(g, r->in[0], r->in[1], r->in[2], &o);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    if (!merged)
        out = pg_merge_heads(g, out);
    cr_assert(out && out->ndim == 3 && out->shape[0] == MB && out->shape[1] == r->Lq && out->shape[2] == MH * r->Dv,
              "case %d: out is %s", (int)c, out ? PG_SHAPE_STR(out) : "NULL");
    pg_tensor *w = randt(PG_SHAPE(MB, r->Lq, MH * r->Dv), 99, false);
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor_free(w);
    res[0] = pg_tensor_copy(NULL, out);
    for (int i = 0; i < N_IN; i++)
        res[1 + i] = r->in[i] ? take_grad(r->in[i]) : NULL;
    pg_graph_free(g);
}

static void free_run(mrun *r)
{
    free_all(N_IN, r->in);
    pg_tensor_free(r->mask);
}

static void assert_merged_same(mcase c, pg_dtype dt, int threads)
{
    static const char *const names[1 + N_IN] = {"out",   "dq",    "dk",     "dv",     "ddist_bias", "dsep_q",
                                                "dsep_k", "drel_q", "drel_k", "dwindow_bias", "dpair_bias"};
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(threads), 0);
    mrun r = make_run(c, dt);
    pg_tensor *want[1 + N_IN], *got[1 + N_IN];
    run(c, &r, false, want);
    run(c, &r, true, got);
    char ctx[64];
    snprintf(ctx, sizeof ctx, "case %d, %s, %d threads: ", (int)c, pg_dtype_name(dt), threads);
    assert_same_bits_free_in(ctx, got, want, 1 + N_IN, names);
    free_run(&r);
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

Test(flash_merged, equals_merge_heads_of_the_result)
{
    for (int c = 0; c < M_CASES; c++)
        for (int threads = 1; threads <= 3; threads += 2) {
            assert_merged_same((mcase)c, PG_F64, threads);
            assert_merged_same((mcase)c, PG_F32, threads);
        }
}

Test(flash_merged, without_a_graph)
{
    mrun r = make_run(M_MASKED, PG_F64);
    pg_flash_opts o = opts_of(M_MASKED, &r, NULL, false), om = opts_of(M_MASKED, &r, NULL, true);
    pg_tensor *heads = pg_flash_attention(NULL, r.in[0], r.in[1], r.in[2], &o);
    pg_tensor *want = pg_merge_heads(NULL, heads), *got = pg_flash_attention(NULL, r.in[0], r.in[1], r.in[2], &om);
    cr_assert(want && got, "%s", pg_last_error());
    cr_assert(got->ndim == 3 && got->shape[2] == MH * MD);
    cr_assert_eq(memcmp(got->data, want->data, (size_t)got->numel * sizeof(double)), 0);
    pg_tensor *ts[] = {heads, want, got};
    free_all(3, ts);
    free_run(&r);
}

static pg_tensor *merged_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_flash_opts o = {.causal = true, .dist_bias = in[3], .merge_heads = true};
    return pg_flash_attention(g, in[0], in[1], in[2], &o);
}

Test(flash_merged, gradcheck)
{
    pg_tensor *in[4] = {randt(PG_SHAPE(2, 2, 5, 4), 1, true), randt(PG_SHAPE(2, 2, 5, 4), 2, true),
                        randt(PG_SHAPE(2, 2, 5, 3), 3, true), randt(PG_SHAPE(2, 9), 4, true)};
    assert_gradcheck(merged_fn, 4, in, NULL, NULL);
    free_all(4, in);
}
