/* Rotary embedding inside the fused attention (autograd/flash.h rot_cos_q ...): the kernel
 * with the rotation's tables against pg_rotate_pairs on q and on k followed by the kernel
 * without them, bit for bit, for the output and the gradients of q, k, v (and of the one
 * projection, pg_flash_attention_qkv): both pairings, partial rotation (2R < D), tables per
 * batch or shared, q's and k's tables apart (xPos's sigma^(+-1)), causal / not, masks,
 * local bands, cross attention, xPos on top, attention dropout, sizes that are not multiples of the tile,
 * f32 and f64, gradients fresh or added to; float64 gradchecks; the same bits on 1 and 2
 * threads; bad tables refused with their shapes. */
#include "../autograd/flash.h"
#include "testutil.h"

typedef struct rcase {
    int64_t B, H, Lq, Lk, D, R;
    bool interleaved, causal, masked;
    int64_t w, lb, lf; /* local band (w 0: none) */
    bool batched_q, batched_k; /* tables per batch (Bc = B), else shared */
    double xpos;               /* xpos_scale_base (0: off) */
    double drop;               /* attention dropout from a fixed generator state (0: none) */
} rcase;

/* one side's cos and sin (Bc, 1, L, R) of dt: angles p theta_i (+ b / 3 per batch), times
 * sigma = 1.01^(+-p) on k's side (sign -1) as xPos scales them */
static void side_tables(const rcase *c, int64_t L, bool batched, double sign, pg_dtype dt, pg_tensor **C,
                        pg_tensor **S)
{
    int64_t Bc = batched ? c->B : 1;
    *C = pg_empty(NULL, dt, PG_SHAPE(Bc, 1, L, c->R));
    *S = pg_empty(NULL, dt, PG_SHAPE(Bc, 1, L, c->R));
    for (int64_t b = 0; b < Bc; b++)
        for (int64_t p = 0; p < L; p++)
            for (int64_t i = 0; i < c->R; i++) {
                double a = (double)p * pow(100.0, -(double)i / (double)c->R) + (double)b / 3;
                double sigma = pow(1.01, sign * (double)p);
                int64_t at = (b * L + p) * c->R + i;
                pg_set(*C, at, cos(a) * sigma);
                pg_set(*S, at, sin(a) * sigma);
            }
}

typedef struct tables {
    pg_tensor *t[4]; /* cos_q, sin_q, cos_k, sin_k */
} tables;

static tables make_tables(const rcase *c, pg_dtype dt)
{
    tables t;
    side_tables(c, c->Lq, c->batched_q, 1, dt, &t.t[0], &t.t[1]);
    side_tables(c, c->Lk, c->batched_k, -1, dt, &t.t[2], &t.t[3]);
    return t;
}

/* the dropout's generator: the same state for every call (each run draws the same mask) */
static pg_rng drop_rng;

static pg_flash_opts opts_of(const rcase *c, pg_tensor *mask, const tables *t)
{
    drop_rng = pg_rng_init(17);
    pg_flash_opts o = {.causal = c->causal, .mask = mask, .window = c->w, .look_backward = c->lb,
                       .look_forward = c->lf, .xpos_scale_base = c->xpos, .dropout = c->drop,
                       .rng = c->drop > 0 ? &drop_rng : NULL};
    if (t) {
        o.rot_cos_q = t->t[0], o.rot_sin_q = t->t[1], o.rot_cos_k = t->t[2], o.rot_sin_k = t->t[3];
        o.rot_interleaved = c->interleaved;
    }
    return o;
}

/* batch 1 hides every third key */
static pg_tensor *make_mask(const rcase *c)
{
    if (!c->masked)
        return NULL;
    pg_tensor *m = pg_ones(NULL, PG_BOOL, PG_SHAPE(c->B, c->Lk));
    for (int64_t j = 0; c->B > 1 && j < c->Lk; j++)
        pg_bool(m)[c->Lk + j] = j % 3 != 1;
    return m;
}

/* the attention of q, k, v (in[0..3)), or of the projection in[0] (B, L, 3 H D) when packed:
 * fused, the kernel rotates; else pg_rotate_pairs first */
static pg_tensor *attend(pg_graph *g, pg_tensor *const *in, bool packed, bool fused, const rcase *c, pg_tensor *mask,
                         const tables *t)
{
    pg_flash_opts o = opts_of(c, mask, fused ? t : NULL);
    if (packed && fused)
        return pg_flash_attention_qkv(g, in[0], c->H, &o);
    pg_tensor *q = in[0], *k = in[1], *v = in[2];
    if (packed) {
        q = pg_split_heads(g, in[0], 0, c->H, c->D);
        k = pg_split_heads(g, in[0], c->H * c->D, c->H, c->D);
        v = pg_split_heads(g, in[0], 2 * c->H * c->D, c->H, c->D);
    }
    if (!fused) {
        q = pg_rotate_pairs(g, q, t->t[0], t->t[1], c->interleaved);
        k = pg_rotate_pairs(g, k, t->t[2], t->t[3], c->interleaved);
    }
    return pg_flash_attention(g, q, k, v, &o);
}

/* t's gradient, taken from it: the next backward starts from a fresh one, as the first did */
static pg_tensor *move_grad(pg_tensor *t)
{
    pg_tensor *gr = t->grad;
    cr_assert_not_null(gr, "no gradient reached an input");
    t->grad = NULL;
    return gr;
}

/* res: out, then the gradients of sum(w out) for the n inputs (heap copies); with `twice`
 * the backward runs a second time into the gradients the first left (added to, not fresh) */
static void run(pg_tensor **res, pg_tensor *const *in, int n, bool packed, bool fused, const rcase *c,
                pg_tensor *mask, const tables *t, pg_tensor *w, bool twice)
{
    for (int pass = 0; pass < (twice ? 2 : 1); pass++) {
        pg_graph *g = pg_graph_new();
        pg_tensor *out = attend(g, in, packed, fused, c, mask, t);
        cr_assert_not_null(out, "%s", pg_last_error());
        pg_tensor *loss = pg_sum(g, pg_mul(g, out, pg_cast(g, w, out->dtype)), 0, NULL, false);
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_last_error());
        if (pass == 0)
            res[0] = pg_tensor_copy(NULL, out);
        pg_graph_free(g);
    }
    for (int i = 0; i < n; i++)
        res[1 + i] = move_grad(in[i]);
}

/* inputs of dtype dt requiring grad: q, k, v, or the projection alone */
static int make_inputs(const rcase *c, bool packed, pg_dtype dt, uint64_t seed, pg_tensor **in)
{
    if (packed) {
        cr_assert_eq(c->Lq, c->Lk, "a projection is self-attention");
        in[0] = rand_leaf(dt, PG_SHAPE(c->B, c->Lq, 3 * c->H * c->D), seed);
        return 1;
    }
    in[0] = rand_leaf(dt, PG_SHAPE(c->B, c->H, c->Lq, c->D), seed);
    in[1] = rand_leaf(dt, PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 1);
    in[2] = rand_leaf(dt, PG_SHAPE(c->B, c->H, c->Lk, c->D), seed + 2);
    return 3;
}

static void check_case(const rcase *c, bool packed, pg_dtype dt, bool twice, uint64_t seed)
{
    pg_tensor *in[3];
    int n = make_inputs(c, packed, dt, seed, in);
    pg_tensor *w = randt(PG_SHAPE(c->B, c->H, c->Lq, c->D), seed + 5, false), *mask = make_mask(c);
    tables t = make_tables(c, dt);
    pg_tensor *f[4], *u[4];
    run(f, in, n, packed, true, c, mask, &t, w, twice);
    run(u, in, n, packed, false, c, mask, &t, w, twice);
    char what[240];
    snprintf(what, sizeof what,
             "%s B %lld H %lld Lq %lld Lk %lld D %lld R %lld interleaved %d causal %d mask %d band %lld/%lld/%lld "
             "batched %d/%d xpos %g drop %g packed %d twice %d: ",
             pg_dtype_name(dt), (long long)c->B, (long long)c->H, (long long)c->Lq, (long long)c->Lk,
             (long long)c->D, (long long)c->R, c->interleaved, c->causal, c->masked, (long long)c->w,
             (long long)c->lb, (long long)c->lf, c->batched_q, c->batched_k, c->xpos, c->drop, packed, twice);
    static const char *const names[4] = {"out", "dq", "dk", "dv"}, *const pnames[2] = {"out", "dqkv"};
    assert_same_bits_free_in(what, f, u, 1 + n, packed ? pnames : names);
    free_all(n, in);
    free_all(6, (pg_tensor *[]){w, mask, t.t[0], t.t[1], t.t[2], t.t[3]});
}

static const rcase CASES[] = {
    /* B, H, Lq, Lk, D, R, interleaved, causal, masked, w, lb, lf, batched_q, batched_k, xpos, drop */
    {2, 2, 150, 150, 8, 4, false, true, false, 0, 0, 0, false, false, 0, 0},  /* causal, several tiles */
    {2, 2, 150, 150, 8, 4, true, false, true, 0, 0, 0, false, false, 0, 0},   /* interleaved, masked */
    {2, 3, 130, 130, 12, 3, false, true, true, 0, 0, 0, true, false, 0, 0},   /* 2R < D, q's tables per batch */
    {2, 2, 100, 100, 6, 2, true, true, false, 0, 0, 0, false, true, 0, 0},    /* interleaved 2R < D, k's per batch */
    {1, 2, 170, 170, 8, 4, false, true, false, 40, 1, 0, true, true, 0, 0},   /* windows of 40 */
    {2, 2, 150, 150, 8, 4, false, true, true, 0, 0, 0, false, false, 24, 0},  /* xPos on the rotated q, k */
    {1, 1, 5, 5, 4, 2, true, false, false, 0, 0, 0, false, false, 0, 0},      /* below one tile */
    {2, 2, 100, 100, 8, 4, true, true, false, 0, 0, 0, false, false, 0, 0.3}, /* attention dropout */
};

static const rcase CROSS[] = {
    {2, 2, 70, 130, 8, 4, false, false, true, 0, 0, 0, true, false, 0, 0}, /* cross attention */
    {2, 1, 130, 9, 4, 1, true, true, false, 0, 0, 0, false, true, 0, 0},   /* Lq > Lk */
};

Test(flash_rope, same_bits_as_rotate_pairs_then_kernel)
{
    for (int f32 = 0; f32 < 2; f32++)
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
            check_case(&CASES[i], false, f32 ? PG_F32 : PG_F64, false, 10 + 10 * i);
    for (size_t i = 0; i < sizeof CROSS / sizeof CROSS[0]; i++)
        check_case(&CROSS[i], false, PG_F64, false, 200 + 10 * i);
}

/* the one projection read in place, against its three splits rotated */
Test(flash_rope, projection_same_bits_as_splits_rotated)
{
    for (int f32 = 0; f32 < 2; f32++)
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
            check_case(&CASES[i], true, f32 ? PG_F32 : PG_F64, false, 300 + 10 * i);
}

/* a second backward adds to the gradients the first wrote (the rotation's backward adds,
 * not assigns); q, k, v apart (into one projection's gradient the kernel adds tile by
 * tile where the splits add their finished sums: the same to rounding, flash.h) */
Test(flash_rope, gradients_added_to)
{
    check_case(&CASES[0], false, PG_F64, true, 400);
    check_case(&CASES[5], false, PG_F32, true, 410);
}

typedef struct gc_ctx {
    const rcase *c;
    tables t;
} gc_ctx;

static pg_tensor *rope_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const gc_ctx *x = ctx;
    pg_flash_opts o = opts_of(x->c, NULL, &x->t);
    return pg_flash_attention(g, in[0], in[1], in[2], &o);
}

/* float64 finite differences through q, k and v, both pairings, a band, xPos */
Test(flash_rope, gradcheck)
{
    const rcase cases[] = {
        {1, 2, 5, 6, 4, 2, false, false, false, 0, 0, 0, false, false, 0, 0},
        {2, 1, 6, 6, 6, 2, true, true, false, 0, 0, 0, true, true, 0, 0},
        {1, 1, 9, 9, 4, 2, false, false, false, 3, 1, 1, false, true, 2, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rcase *c = &cases[i];
        gc_ctx x = {c, make_tables(c, PG_F64)};
        pg_tensor *in[3];
        make_inputs(c, false, PG_F64, 1 + 3 * i, in);
        assert_gradcheck(rope_fn, 3, in, &x, NULL);
        free_all(3, in);
        free_all(4, x.t.t);
    }
}

typedef struct threads_ctx {
    const rcase *c;
    pg_dtype dt;
} threads_ctx;

static void threads_run(void *ctx, pg_tensor **res)
{
    const threads_ctx *x = ctx;
    pg_tensor *in[1];
    make_inputs(x->c, true, x->dt, 21, in);
    pg_tensor *w = randt(PG_SHAPE(x->c->B, x->c->H, x->c->Lq, x->c->D), 22, false);
    tables t = make_tables(x->c, x->dt);
    run(res, in, 1, true, true, x->c, NULL, &t, w, false);
    free_all(6, (pg_tensor *[]){in[0], w, t.t[0], t.t[1], t.t[2], t.t[3]});
}

/* heads go to threads whole, each rotating its own: the same bits on 1 and 2 threads */
Test(flash_rope, same_bits_for_any_thread_count)
{
    const rcase c = {2, 3, 140, 140, 8, 4, false, true, false, 0, 0, 0, true, false, 0, 0};
    for (int f32 = 0; f32 < 2; f32++) {
        threads_ctx x = {&c, f32 ? PG_F32 : PG_F64};
        assert_same_bits_on_1_and_2_threads(threads_run, &x, 2, (const char *const[]){"out", "dqkv"});
    }
}

/* no graph: the heap result equals the graph's */
Test(flash_rope, without_graph)
{
    const rcase c = CASES[1];
    pg_tensor *in[3];
    make_inputs(&c, false, PG_F64, 31, in);
    tables t = make_tables(&c, PG_F64);
    pg_flash_opts o = opts_of(&c, NULL, &t);
    pg_tensor *a = pg_flash_attention(NULL, in[0], in[1], in[2], &o);
    cr_assert_not_null(a, "%s", pg_last_error());
    pg_graph *g = pg_graph_new();
    pg_tensor *b = attend(g, in, false, false, &c, NULL, &t);
    cr_assert_eq(memcmp(a->data, b->data, (size_t)a->numel * sizeof(double)), 0, "g NULL differs");
    pg_graph_free(g);
    free_all(3, in);
    free_all(5, (pg_tensor *[]){a, t.t[0], t.t[1], t.t[2], t.t[3]});
}

Test(flash_rope, bad_tables)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *q = pg_zeros(g, PG_F64, PG_SHAPE(2, 2, 4, 6)), *k = pg_zeros(g, PG_F64, PG_SHAPE(2, 2, 5, 6));
    pg_tensor *v = pg_zeros(g, PG_F64, PG_SHAPE(2, 2, 5, 3));
    pg_tensor *cq = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 4, 3)), *ck = pg_zeros(g, PG_F64, PG_SHAPE(2, 1, 5, 3));
    pg_tensor *ck2 = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 5, 2)), *cq4 = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 4, 4));
    pg_tensor *ck3 = pg_zeros(g, PG_F64, PG_SHAPE(3, 1, 5, 3)), *cq32 = pg_zeros(g, PG_F32, PG_SHAPE(1, 1, 4, 3));
    pg_tensor *lk = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 4, 3)), *learned = pg_zeros(g, PG_F64, PG_SHAPE(1, 1, 4, 3));
    pg_set_requires_grad(learned, true);
    const char *shape_msg = "expected all four or none, of q's dtype f64, q's (1 or B, 1, Lq, R) and k's (1 or B, 1, "
                            "Lk, R) = (1 or 2, 1, 4, R) and (1 or 2, 1, 5, R), one R with 1 <= R <= D / 2 = 3";
    pg_flash_opts good = {.rot_cos_q = cq, .rot_sin_q = cq, .rot_cos_k = ck, .rot_sin_k = ck};
    cr_assert_not_null(pg_flash_attention(g, q, k, v, &good), "%s", pg_last_error());
    pg_flash_opts bad[] = {
        {.rot_cos_q = cq},                                                        /* one of four */
        {.rot_cos_q = cq, .rot_sin_q = cq, .rot_cos_k = ck2, .rot_sin_k = ck2},   /* R differs */
        {.rot_cos_q = cq4, .rot_sin_q = cq4, .rot_cos_k = ck, .rot_sin_k = ck},   /* R > D / 2 */
        {.rot_cos_q = cq, .rot_sin_q = cq, .rot_cos_k = ck3, .rot_sin_k = ck3},   /* Bc neither 1 nor B */
        {.rot_cos_q = cq32, .rot_sin_q = cq32, .rot_cos_k = ck, .rot_sin_k = ck}, /* dtype */
        {.rot_cos_q = cq, .rot_sin_q = cq, .rot_cos_k = lk, .rot_sin_k = lk},     /* k's tables of Lq rows */
        {.rot_cos_q = cq, .rot_sin_q = cq, .rot_cos_k = ck, .rot_sin_k = ck2},    /* cos and sin unlike */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ASSERT_FAILS(pg_flash_attention(g, q, k, v, &bad[i]), shape_msg);
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &bad[0]), "rot_cos_q f64[1,1,4,3], rot_sin_q NULL");
    pg_flash_opts grad = {.rot_cos_q = cq, .rot_sin_q = learned, .rot_cos_k = ck, .rot_sin_k = ck};
    ASSERT_FAILS(pg_flash_attention(g, q, k, v, &grad),
                 "pg_flash_attention: rot_sin_q f64[1,1,4,3] requires grad: the kernel takes the rotation's tables "
                 "as constants");
    pg_tensor *qkv = pg_zeros(g, PG_F64, PG_SHAPE(2, 4, 36));
    ASSERT_FAILS(pg_flash_attention_qkv(g, qkv, 2, &bad[1]), "pg_flash_attention_qkv: rotation tables");
    pg_graph_free(g);
}
