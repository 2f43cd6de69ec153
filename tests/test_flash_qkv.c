/* The fused attention over the heads of one projection, read in place (autograd/flash.h:
 * pg_flash_attention_qkv): the result and every input's gradient equal bit for bit to
 * pg_flash_attention over pg_split_heads of the projection at 0, H D and 2 H D, over the
 * kernel's options (causal, key mask, distance and separable biases, relative keys, xPos, a
 * band with its window bias, a pair bias, dropout, the heads merged), float64 and float32, 1
 * and 3 threads; a gradient the projection already holds (added to, as the splits' is); the
 * op without a graph; a gradcheck; bad arguments. */
#include "../autograd/flash.h"
#include "../nn/attention.h"
#include "../nn/pos_alibi.h"
#include "../nn/pos_rotary.h"
#include "../nn/pos_xl.h"
#include "../tensor/threadpool.h"
#include "testutil.h"

typedef enum qcase {
    Q_CAUSAL,  /* causal */
    Q_MASKED,  /* key mask, distance bias, separable biases */
    Q_REL,     /* relative keys and a distance bias, causal */
    Q_XPOS,    /* xPos, causal */
    Q_BAND,    /* a band with its window bias, look_forward 1 */
    Q_PAIR,    /* a pair bias shared by the batches */
    Q_DROPOUT, /* dropout 0.3, causal */
    Q_MERGED,  /* causal, the result (B, L, H D) */
    Q_CASES
} qcase;

/* L = 90: a whole tile of 64 and a ragged one */
enum { QB = 2, QH = 3, QD = 8, QL = 90, N_EXTRA = 7 };

typedef struct qrun {
    pg_tensor *qkv;           /* (B, L, 3 H D) */
    pg_tensor *extra[N_EXTRA]; /* dist_bias, sep_q, sep_k, rel_q, rel_k, window_bias, pair_bias */
    pg_tensor *mask;
} qrun;

static qrun make_run(qcase c, pg_dtype dt)
{
    qrun r = {rand_leaf(dt, PG_SHAPE(QB, QL, 3 * QH * QD), 1), {NULL}, NULL};
    if (c == Q_MASKED || c == Q_REL)
        r.extra[0] = rand_leaf(dt, PG_SHAPE(QH, 2 * QL - 1), 4);
    if (c == Q_MASKED) {
        r.extra[1] = rand_leaf(dt, PG_SHAPE(QB, QH, QL), 5);
        r.extra[2] = rand_leaf(dt, PG_SHAPE(QB, QH, QL), 6);
        r.mask = key_mask_pattern(QB, QL, 3, 2);
    }
    if (c == Q_REL) {
        r.extra[3] = rand_leaf(dt, PG_SHAPE(QB, QH, QL, QD), 7);
        r.extra[4] = rand_leaf(dt, PG_SHAPE(QH, 2 * QL - 1, QD), 8);
    }
    if (c == Q_BAND)
        r.extra[5] = rand_leaf(dt, PG_SHAPE(QH, 16, 3 * 16), 9); /* window 16, look_backward 1, look_forward 1 */
    if (c == Q_PAIR)
        r.extra[6] = rand_leaf(dt, PG_SHAPE(1, QH, QL, QL), 10);
    return r;
}

static pg_flash_opts opts_of(qcase c, const qrun *r, pg_rng *rng)
{
    pg_tensor *const *e = r->extra;
    pg_flash_opts o = {.causal = c != Q_MASKED && c != Q_BAND && c != Q_PAIR, .mask = r->mask, .dist_bias = e[0],
                       .sep_q = e[1], .sep_k = e[2], .rel_q = e[3], .rel_k = e[4], .window_bias = e[5],
                       .pair_bias = e[6], .merge_heads = c == Q_MERGED};
    if (c == Q_XPOS)
        o.xpos_scale_base = 32;
    if (c == Q_BAND)
        o.window = 16, o.look_backward = 1, o.look_forward = 1;
    if (c == Q_DROPOUT)
        o.dropout = 0.3, o.rng = rng;
    return o;
}

/* out and the gradients of sum(w out) (+ sum(w2 qkv) when `held`, recorded after the attention
 * so that its gradient reaches qkv first) for each input present; `packed`: the op over qkv,
 * else over its three splits */
static void run(qcase c, qrun *r, bool packed, bool held, pg_tensor *res[2 + N_EXTRA])
{
    pg_rng rng = pg_rng_init(77);
    pg_flash_opts o = opts_of(c, r, &rng);
    pg_graph *g = pg_graph_new();
    pg_tensor *out;
    if (packed) {
        out = pg_flash_attention_qkv(g, r->qkv, QH, &o);
    } else {
        pg_tensor *q = pg_split_heads(g, r->qkv, 0, QH, QD), *k = pg_split_heads(g, r->qkv, QH * QD, QH, QD);
        out = pg_flash_attention(g, q, k, pg_split_heads(g, r->qkv, 2 * QH * QD, QH, QD), &o);
    }
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    pg_tensor *w = randt(out->ndim, out->shape, 99, false);
    pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
    if (held) {
        pg_tensor *w2 = randt(r->qkv->ndim, r->qkv->shape, 98, false);
        loss = pg_add(g, loss, pg_sum(g, pg_mul(g, r->qkv, pg_cast(g, w2, out->dtype)), 0, NULL, false));
        pg_tensor_free(w2);
    }
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor_free(w);
    res[0] = pg_tensor_copy(NULL, out);
    res[1] = take_grad(r->qkv);
    for (int i = 0; i < N_EXTRA; i++)
        res[2 + i] = r->extra[i] ? take_grad(r->extra[i]) : NULL;
    pg_graph_free(g);
}

static void free_run(qrun *r)
{
    pg_tensor_free(r->qkv);
    free_all(N_EXTRA, r->extra);
    pg_tensor_free(r->mask);
}

static const char *const NAMES[2 + N_EXTRA] = {"out",   "dqkv",   "ddist_bias", "dsep_q",      "dsep_k",
                                               "drel_q", "drel_k", "dwindow_bias", "dpair_bias"};

static void assert_same_as_splits(qcase c, pg_dtype dt, int threads)
{
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(threads), 0);
    qrun r = make_run(c, dt);
    pg_tensor *want[2 + N_EXTRA], *got[2 + N_EXTRA];
    run(c, &r, false, false, want);
    run(c, &r, true, false, got);
    char ctx[64];
    snprintf(ctx, sizeof ctx, "case %d, %s, %d threads: ", (int)c, pg_dtype_name(dt), threads);
    assert_same_bits_free_in(ctx, got, want, 2 + N_EXTRA, NAMES);
    free_run(&r);
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

Test(flash_qkv, equals_the_splits)
{
    for (int c = 0; c < Q_CASES; c++)
        for (int threads = 1; threads <= 3; threads += 2) {
            assert_same_as_splits((qcase)c, PG_F64, threads);
            assert_same_as_splits((qcase)c, PG_F32, threads);
        }
}

/* qkv's gradient already holds a term: the kernel adds to it (in its own order, where the
 * splits add a finished dq: equal to rounding) */
Test(flash_qkv, adds_to_a_held_gradient)
{
    for (int c = 0; c < Q_CASES; c++) {
        qrun r = make_run((qcase)c, PG_F64);
        pg_tensor *want[2 + N_EXTRA], *got[2 + N_EXTRA];
        run((qcase)c, &r, false, true, want);
        run((qcase)c, &r, true, true, got);
        for (int i = 0; i < 2 + N_EXTRA; i++)
            if (want[i]) {
                char what[64];
                snprintf(what, sizeof what, "case %d: %s", c, NAMES[i]);
                assert_close(got[i], want[i], 1e-12, what);
            }
        free_all(2 + N_EXTRA, want);
        free_all(2 + N_EXTRA, got);
        free_run(&r);
    }
}

Test(flash_qkv, without_a_graph)
{
    qrun r = make_run(Q_MASKED, PG_F64);
    pg_flash_opts o = opts_of(Q_MASKED, &r, NULL);
    pg_tensor *q = pg_split_heads(NULL, r.qkv, 0, QH, QD), *k = pg_split_heads(NULL, r.qkv, QH * QD, QH, QD),
              *v = pg_split_heads(NULL, r.qkv, 2 * QH * QD, QH, QD);
    pg_tensor *want = pg_flash_attention(NULL, q, k, v, &o), *got = pg_flash_attention_qkv(NULL, r.qkv, QH, &o);
    cr_assert(want && got, "%s", pg_last_error());
    assert_shape(got, PG_SHAPE(QB, QH, QL, QD));
    cr_assert_eq(memcmp(got->data, want->data, (size_t)got->numel * sizeof(double)), 0);
    pg_tensor *ts[] = {q, k, v, want, got};
    free_all(5, ts);
    free_run(&r);
}

static pg_tensor *qkv_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_flash_opts o = {.causal = true, .dist_bias = in[1], .sep_k = in[2]};
    return pg_flash_attention_qkv(g, in[0], 2, &o);
}

Test(flash_qkv, gradcheck)
{
    pg_tensor *in[3] = {randt(PG_SHAPE(2, 5, 3 * 2 * 4), 1, true), randt(PG_SHAPE(2, 9), 2, true),
                        randt(PG_SHAPE(2, 2, 5), 3, true)};
    assert_gradcheck(qkv_fn, 3, in, NULL, NULL);
    free_all(3, in);
}

Test(flash_qkv, bad_arguments)
{
    pg_tensor *qkv = randt(PG_SHAPE(2, 5, 12), 1, false), *flat = randt(PG_SHAPE(5, 12), 2, false);
    pg_tensor *ints = pg_zeros(NULL, PG_I64, PG_SHAPE(2, 5, 12));
    const pg_flash_opts causal = {.causal = true}, band = {.window = -1};
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, NULL, 2, &causal), "pg_flash_attention_qkv: qkv is NULL with heads 2");
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, flat, 2, &causal),
                 "pg_flash_attention_qkv: qkv is f64[5,12] with heads 2, expected f32 or f64 (B, L, 3 heads D)");
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, qkv, 3, NULL), "qkv is f64[2,5,12] with heads 3");
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, qkv, 0, NULL), "qkv is f64[2,5,12] with heads 0");
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, qkv, 5, NULL), "qkv is f64[2,5,12] with heads 5");
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, qkv, INT64_MAX, NULL), "with heads 9223372036854775807");
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, ints, 2, NULL), "qkv is i64[2,5,12] with heads 2");
    ASSERT_FAILS(pg_flash_attention_qkv(NULL, qkv, 2, &band), "pg_flash_attention_qkv: bad local band: window -1");
    ASSERT_FAILS(pg_flash_attention_qkv_unchecked(NULL, NULL, 2, &causal), "pg_flash_attention_qkv: qkv is NULL");
    ASSERT_FAILS(pg_flash_attention_qkv_unchecked(NULL, qkv, 2, NULL), "pg_flash_attention_qkv: opts is NULL");
    pg_tensor *a = pg_flash_attention_qkv_unchecked(NULL, qkv, 2, &causal),
              *b = pg_flash_attention_qkv(NULL, qkv, 2, &causal);
    cr_assert(a && b, "%s", pg_last_error());
    cr_assert_eq(memcmp(a->data, b->data, (size_t)a->numel * sizeof(double)), 0);
    pg_tensor *ts[] = {qkv, flat, ints, a, b};
    free_all(5, ts);
}

/* ---- MultiheadAttention reads its projection in place where nothing else takes q, k, v ---- */

/* out of m over x (2, 9, 24), its splits, in-place calls and rotations counted; *grad = x's
 * gradient */
static pg_tensor *mha_run(pg_mha *m, int *splits, int *in_place, int *rotations, pg_tensor **grad)
{
    pg_tensor *x = randt(PG_SHAPE(2, 9, 24), 5, true);
    pg_graph *g = pg_graph_new();
    pg_tensor *out = pg_mha_forward(g, m, x, NULL, NULL);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    *splits = count_nodes(g, "pg_split_heads");
    *in_place = count_nodes(g, "pg_flash_attention_qkv");
    *rotations = count_nodes(g, "pg_rotate_pairs");
    cr_assert_eq(pg_backward(g, pg_sum(g, pg_mul(g, out, out), 0, NULL, false)), 0, "%s", pg_graph_error(g));
    pg_tensor *res = pg_tensor_copy(NULL, out);
    *grad = take_grad(x);
    pg_graph_free(g);
    pg_tensor_free(x);
    return res;
}

/* what a fused call's tape holds: pg_flash_attention_qkv calls, splits, pg_rotate_pairs calls */
typedef struct tape_counts {
    int in_place, splits, rotations;
} tape_counts;

/* MultiheadAttention over the n positional modules made by make(i, seed) (twice: the
 * fused module's and the unfused reference's) gives `want` on its tape and agrees with the
 * unfused reference path */
static void assert_mha_path(pg_posmod *(*make)(int i), int n, tape_counts want, const char *scheme)
{
    pg_posmod *fp[2], *rp[2];
    for (int i = 0; i < n; i++)
        fp[i] = make(i), rp[i] = make(i);
    test_mha_flags f = {.causal = true};
    pg_mha *fused = test_mha(24, 3, f, fp, n, 3);
    f.unfused = true;
    pg_mha *ref = test_mha(24, 3, f, rp, n, 3);
    tape_counts got, rc;
    pg_tensor *dx, *ref_dx, *out = mha_run(fused, &got.splits, &got.in_place, &got.rotations, &dx);
    pg_tensor *ref_out = mha_run(ref, &rc.splits, &rc.in_place, &rc.rotations, &ref_dx);
    cr_assert(got.in_place == want.in_place && got.splits == want.splits && got.rotations == want.rotations,
              "%s: %d in-place calls, %d splits, %d rotations; expected %d, %d, %d", scheme, got.in_place, got.splits,
              got.rotations, want.in_place, want.splits, want.rotations);
    cr_assert(rc.in_place == 0 && rc.splits == 3, "%s: the reference path split %d", scheme, rc.splits);
    assert_close(out, ref_out, 1e-12, scheme);
    assert_close(dx, ref_dx, 1e-12, scheme);
    pg_tensor *ts[] = {out, ref_out, dx, ref_dx};
    free_all(4, ts);
    pg_module_free(&fused->base);
    pg_module_free(&ref->base);
}

static pg_posmod *make_alibi(int i)
{
    (void)i;
    return pg_alibi_new(3, NULL, PG_F64);
}

static pg_posmod *make_rotary(int i)
{
    (void)i;
    return pg_rotary_new(8, NULL, PG_F64);
}

static pg_posmod *make_learned_rotary(int i)
{
    (void)i;
    pg_rotary_opts o = {.learned_div = true};
    return pg_rotary_new(8, &o, PG_F64);
}

/* Transformer-XL with options o (NULL: Dai et al.'s) */
static pg_posmod *make_xl_with(const pg_xl_opts *o)
{
    pg_rng r = pg_rng_init(8);
    pg_posmod_args a = {.dim = 24, .heads = 3, .head_dim = 8, .dtype = PG_F64, .rng = &r, .opts = o};
    pg_posmod *p = pg_posmod_make_xl(&a);
    cr_assert_not_null(p, "%s", pg_last_error());
    return p;
}
static pg_posmod *make_xl(void) { return make_xl_with(NULL); }

static pg_posmod *make_rel1d(int i)
{
    (void)i;
    pg_rng r = pg_rng_init(9);
    pg_rel1d_opts o = {.tokens = 12};
    pg_posmod *p = pg_posmod_make_rel1d(&(pg_posmod_args){24, 3, 8, 0, 0, PG_F64, &r, &o});
    cr_assert_not_null(p, "%s", pg_last_error());
    return p;
}

static pg_posmod *make_rotary_then_xl(int i) { return i == 0 ? make_rotary(i) : make_xl(); }
static pg_posmod *make_rel1d_then_alibi(int i) { return i == 0 ? make_rel1d(i) : make_alibi(i); }
static pg_posmod *make_rel1d_then_rotary(int i) { return i == 0 ? make_rel1d(i) : make_rotary(i); }
static pg_posmod *make_xl_then_rotary(int i) { return i == 0 ? make_xl() : make_rotary(i); }
static pg_posmod *make_xl_alone(int i) { return (void)i, make_xl(); }
static pg_posmod *make_xl_bio(int i)
{
    (void)i;
    const pg_xl_opts o = pg_xl_bio();
    return make_xl_with(&o);
}
static pg_posmod *make_xl_then_alibi(int i) { return i == 0 ? make_xl() : make_alibi(i); }

Test(flash_qkv, multihead_attention_reads_its_projection_in_place)
{
    assert_mha_path(NULL, 0, (tape_counts){1, 0, 0}, "none");
    assert_mha_path(make_alibi, 1, (tape_counts){1, 0, 0}, "ALiBi");
    /* rotary's tables go to the kernel, which rotates q and k itself */
    assert_mha_path(make_rotary, 1, (tape_counts){1, 0, 0}, "rotary");
    /* with a learned divisor they require grad: pg_rotate_pairs rotates the splits */
    assert_mha_path(make_learned_rotary, 1, (tape_counts){0, 3, 2}, "rotary, learned divisor");
    /* Transformer-XL's relative keys read the rotated q: rotated first */
    assert_mha_path(make_rotary_then_xl, 2, (tape_counts){0, 3, 2}, "rotary, then XL");
    /* after XL (which then takes the splits) nothing reads q or k: the kernel rotates the splits */
    assert_mha_path(make_xl_then_rotary, 2, (tape_counts){0, 3, 0}, "XL, then rotary");
    /* XL's queries q + u (rel_keys): q stays in the projection, the kernel shifts it */
    assert_mha_path(make_xl_alone, 1, (tape_counts){1, 0, 0}, "XL");
    assert_mha_path(make_xl_bio, 1, (tape_counts){1, 0, 0}, "XL, bio-attention's form");
    assert_mha_path(make_xl_then_alibi, 2, (tape_counts){1, 0, 0}, "XL, then ALiBi");
    /* Shaw's relative keys meet q itself (rel_keys): q stays in the projection */
    assert_mha_path(make_rel1d, 1, (tape_counts){1, 0, 0}, "rel1d");
    assert_mha_path(make_rel1d_then_alibi, 2, (tape_counts){1, 0, 0}, "rel1d, then ALiBi");
    /* a later module turns q: rel1d takes the unturned splits (rel_bias) */
    assert_mha_path(make_rel1d_then_rotary, 2, (tape_counts){0, 3, 0}, "rel1d, then rotary");
}

/* MultiheadAttention (causal, 3 heads of 8) with one module of `ops` named `name` refuses
 * x (2, 9, 24) with a message that holds `want` */
static void assert_scheme_refused(const char *name, const pg_posmod_ops *ops, const char *want)
{
    pg_posmod *p = pg_posmod_alloc(sizeof(pg_posmod), name, ops, NULL, "test");
    cr_assert_not_null(p);
    pg_mha *m = test_mha(24, 3, (test_mha_flags){.causal = true}, &p, 1, 3);
    pg_tensor *x = randt(PG_SHAPE(2, 9, 24), 5, true);
    pg_graph *g = pg_graph_new();
    cr_assert_null(pg_mha_forward(g, m, x, NULL, NULL));
    cr_assert(strstr(pg_last_error(), want), "got \"%s\"", pg_last_error());
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&m->base);
}

/* a scheme's rel_keys hook is another's code: what it gives is checked */
static pg_tensor *no_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c)
{
    (void)m, (void)q, (void)k, (void)v;
    return pg_zeros(g, c->dtype, PG_SHAPE(c->heads, c->Lq, c->Lk));
}

static int no_rel_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, const pg_pos_ctx *c, pg_pos_rel *r)
{
    (void)g, (void)m, (void)q, (void)k, (void)c, (void)r;
    return 1;
}

/* keys of width 5 for heads of 8 channels */
static int narrow_keys(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rel *r)
{
    (void)m;
    *r = (pg_pos_rel){.k = pg_zeros(g, c->dtype, PG_SHAPE(c->heads, c->Lq + c->Lk - 1, 5)), .scale = 1.0};
    return 0;
}

/* the keys of the heads, and with a shift of 5 channels (shift) or a distance bias one short */
static int keys_with(pg_graph *g, const pg_pos_ctx *c, pg_pos_rel *r, bool shift)
{
    *r = (pg_pos_rel){.k = pg_zeros(g, c->dtype, PG_SHAPE(c->heads, c->Lq + c->Lk - 1, c->head_dim)), .scale = 1.0};
    if (shift)
        r->q_shift = pg_zeros(g, c->dtype, PG_SHAPE(c->heads, 5));
    else
        r->dist = pg_zeros(g, c->dtype, PG_SHAPE(c->heads, c->Lq + c->Lk - 2));
    return 0;
}
static int narrow_shift(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rel *r)
{
    (void)m;
    return keys_with(g, c, r, true);
}
static int short_dist(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rel *r)
{
    (void)m;
    return keys_with(g, c, r, false);
}

/* keys with a key-side term, which rel_keys does not give */
static int keys_and_e(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rel *r)
{
    (void)m;
    *r = (pg_pos_rel){.k = pg_zeros(g, c->dtype, PG_SHAPE(c->heads, c->Lq + c->Lk - 1, c->head_dim)),
                      .e = pg_zeros(g, c->dtype, PG_SHAPE(c->B, c->heads, c->Lk)), .scale = 1.0};
    return 0;
}

/* rel_bias's q and keys with a shift, which only rel_keys gives */
static int shifted_rel_bias(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, const pg_pos_ctx *c,
                            pg_pos_rel *r)
{
    (void)m, (void)k;
    *r = (pg_pos_rel){.q = q, .k = pg_zeros(g, c->dtype, PG_SHAPE(c->heads, c->Lq + c->Lk - 1, c->head_dim)),
                      .scale = 1.0, .q_shift = pg_zeros(g, c->dtype, PG_SHAPE(c->heads, c->head_dim))};
    return 0;
}

static int failing_keys(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rel *r)
{
    (void)g, (void)m, (void)c, (void)r;
    return -1;
}

Test(flash_qkv, a_schemes_relative_keys_are_checked)
{
    const pg_posmod_ops ops[5] = {{.mod_bias = no_bias, .rel_bias = no_rel_bias, .rel_keys = narrow_keys},
                                  {.mod_bias = no_bias, .rel_bias = no_rel_bias, .rel_keys = keys_and_e},
                                  {.mod_bias = no_bias, .rel_bias = no_rel_bias, .rel_keys = narrow_shift},
                                  {.mod_bias = no_bias, .rel_bias = no_rel_bias, .rel_keys = short_dist},
                                  {.mod_bias = no_bias, .rel_bias = no_rel_bias, .rel_keys = failing_keys}};
    const char *want[5] = {"pg_mha_forward: rel_q, rel_k are f64[2,3,9,8], f64[3,17,5], expected f64",
                           "pg_mha_forward: positional module 0 (Keys): rel_keys gave rel_q NULL, rel_k f64[3,17,8], "
                           "e f64[2,3,9], q_shift NULL: expected rel_k, no rel_q or e, and a q_shift of (H, Dh) = "
                           "(3, 8) f64 or none",
                           "pg_mha_forward: positional module 0 (Keys): rel_keys gave rel_q NULL, rel_k f64[3,17,8], "
                           "e NULL, q_shift f64[3,5]: expected",
                           "pg_mha_forward: dist_bias is f64[3,16]",
                           "pg_mha_forward: positional module 0 (Keys): rel_keys failed"};
    for (int i = 0; i < 5; i++)
        assert_scheme_refused("Keys", &ops[i], want[i]);
    const pg_posmod_ops shifted = {.mod_bias = no_bias, .rel_bias = shifted_rel_bias};
    assert_scheme_refused("Keys", &shifted, "pg_mha_forward: positional module 0 (Keys): rel_bias gave q_shift "
                                            "f64[3,8], dist NULL: those are rel_keys' alone");
}

/* a scheme's qk_rotation hook is another's code: its tables are checked */
static int keep_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c)
{
    (void)g, (void)m, (void)q, (void)k, (void)v, (void)c;
    return 0;
}

/* tables of R = 5 pairs for heads of 8 channels */
static int wide_rotation(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rotation *r)
{
    (void)m;
    pg_tensor *t = pg_zeros(g, c->dtype, PG_SHAPE(1, 1, c->Lq, 5));
    *r = (pg_pos_rotation){t, t, t, t, false};
    return 0;
}

static int failing_rotation(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rotation *r)
{
    (void)g, (void)m, (void)c, (void)r;
    return -1;
}

static const pg_posmod_ops WIDE_OPS = {.mod_qkv = keep_qkv, .qk_rotation = wide_rotation};
static const pg_posmod_ops FAILING_OPS = {.mod_qkv = keep_qkv, .qk_rotation = failing_rotation};

Test(flash_qkv, a_schemes_rotation_tables_are_checked)
{
    const pg_posmod_ops *ops[2] = {&WIDE_OPS, &FAILING_OPS};
    const char *want[2] = {"pg_mha_forward: positional module 0 (Wide) qk_rotation: rotation tables rot_cos_q "
                           "f64[1,1,9,5]",
                           "pg_mha_forward: positional module 0 (Failing): qk_rotation failed"};
    for (int i = 0; i < 2; i++)
        assert_scheme_refused(i ? "Failing" : "Wide", ops[i], want[i]);
}
