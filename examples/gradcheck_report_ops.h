/* gradcheck_report: the ops of autograd/ops.h, a table of small cases (included
 * by examples/gradcheck_report.c after gc_report). Each case names its inputs as
 * "kind shape" words: kind u uniform in [-1, 1), p positive in [0.5, 2), q in
 * [0.05, 0.95) (probabilities), a |x| in [0.2, 1) with a random sign (away from
 * the kinks of abs, relu, l1 at 0); shape "2x3" (a scalar is not used). The
 * comparisons, floor, round, sign and argmax have no gradient and are not rows;
 * they appear where they build a case's constants. */
#ifndef PG_EXAMPLES_GRADCHECK_REPORT_OPS_H
#define PG_EXAMPLES_GRADCHECK_REPORT_OPS_H

#define X in[0]
#define Y in[1]
#define Z in[2]
/* One case's function: pg_gradcheck_fn over in[0..n). */
#define OPFN(fname, expr)                                                                 \
    static pg_tensor *fname(pg_graph *g, pg_tensor *const *in, int n, void *ctx)          \
    {                                                                                     \
        (void)n, (void)ctx, (void)in;                                                     \
        return (expr);                                                                    \
    }

/* A constant of the graph (no gradient): dtype, shape, entries v[i % nv]. */
static pg_tensor *gc_const(pg_graph *g, pg_dtype dt, int ndim, const int64_t *shape, const double *v, int nv)
{
    pg_tensor *t = pg_empty(g, dt, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        pg_set(t, i, v[i % nv]);
    return t;
}
#define GC_I64(g, shape, ...) \
    gc_const((g), PG_I64, shape, (const double[]){__VA_ARGS__}, (int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)))
#define GC_BOOL(g, shape, ...) \
    gc_const((g), PG_BOOL, shape, (const double[]){__VA_ARGS__}, (int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)))
#define GC_F64(g, shape, ...) \
    gc_const((g), PG_F64, shape, (const double[]){__VA_ARGS__}, (int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)))

/* ---- unary ---------------------------------------------------------------------------- */
OPFN(op_neg, pg_neg(g, X))
OPFN(op_abs, pg_abs(g, X))
OPFN(op_exp, pg_exp(g, X))
OPFN(op_log, pg_log(g, X))
OPFN(op_log1p, pg_log1p(g, X))
OPFN(op_sqrt, pg_sqrt(g, X))
OPFN(op_rsqrt, pg_rsqrt(g, X))
OPFN(op_square, pg_square(g, X))
OPFN(op_sin, pg_sin(g, X))
OPFN(op_cos, pg_cos(g, X))
OPFN(op_tanh, pg_tanh(g, X))
OPFN(op_sigmoid, pg_sigmoid(g, X))
OPFN(op_relu, pg_relu(g, X))
OPFN(op_gelu, pg_gelu(g, X))
OPFN(op_gelu_tanh, pg_gelu_tanh(g, X))
OPFN(op_silu, pg_silu(g, X))
OPFN(op_softplus, pg_softplus(g, X))
OPFN(op_clamp, pg_clamp(g, X, -0.5, 0.5))
OPFN(op_clamp_lo, pg_clamp(g, X, -0.5, INFINITY))
OPFN(op_pow_scalar, pg_pow_scalar(g, X, 2.5))
OPFN(op_add_scalar, pg_add_scalar(g, X, 0.75))
OPFN(op_mul_scalar, pg_mul_scalar(g, X, -1.5))

/* ---- binary, broadcasting -------------------------------------------------------------- */
OPFN(op_add, pg_add(g, X, Y))
OPFN(op_sub, pg_sub(g, X, Y))
OPFN(op_mul, pg_mul(g, X, Y))
OPFN(op_div, pg_div(g, X, Y))
OPFN(op_maximum, pg_maximum(g, X, Y))
OPFN(op_minimum, pg_minimum(g, X, Y))
OPFN(op_pow, pg_pow(g, X, Y))
OPFN(op_broadcast_to, pg_broadcast_to(g, X, PG_SHAPE(2, 3, 4)))

/* ---- masks ----------------------------------------------------------------------------- */
OPFN(op_where, pg_where(g, GC_BOOL(g, PG_SHAPE(2, 3), 1, 0, 0, 1, 1, 0), X, Y))
OPFN(op_masked_fill, pg_masked_fill(g, X, GC_BOOL(g, PG_SHAPE(1, 4), 0, 1, 0, 0), -2.0))
OPFN(op_tril, pg_tril(g, X, 0))
OPFN(op_triu, pg_triu(g, X, 1))

/* ---- reductions -------------------------------------------------------------------------- */
OPFN(op_sum_axis, pg_sum(g, X, 1, (const int[]){1}, true))
OPFN(op_sum_all, pg_sum(g, X, 0, NULL, false))
OPFN(op_mean, pg_mean(g, X, 2, (const int[]){0, 2}, false))
OPFN(op_max, pg_max(g, X, 1, (const int[]){-1}, false))
OPFN(op_min_all, pg_min(g, X, 0, NULL, false))
OPFN(op_logsumexp, pg_logsumexp(g, X, 1, (const int[]){1}, true))
OPFN(op_var1, pg_var(g, X, 1, (const int[]){-1}, 1, false))
OPFN(op_var0, pg_var(g, X, 0, NULL, 0, false))
OPFN(op_cumsum, pg_cumsum(g, X, 1))
OPFN(op_cumsum_reverse, pg_cumsum_reverse(g, X, 1))

/* ---- matmul ------------------------------------------------------------------------------ */
OPFN(op_matmul, pg_matmul(g, X, Y, false, false))
OPFN(op_matmul_ta, pg_matmul(g, X, Y, true, false))
OPFN(op_matmul_tb, pg_matmul(g, X, Y, false, true))
OPFN(op_affine, pg_affine(g, X, Y, Z))
OPFN(op_affine_nb, pg_affine(g, X, Y, NULL))
/* FIRE's MLP: 2 rows of 6 scalars, 3 hidden units, 2 outputs */
OPFN(op_scalar_mlp, pg_scalar_mlp(g, X, Y, Z, in[3], in[4]))

/* ---- softmax and norms --------------------------------------------------------------------- */
OPFN(op_softmax, pg_softmax(g, X, -1))
OPFN(op_softmax0, pg_softmax(g, X, 0))
OPFN(op_log_softmax, pg_log_softmax(g, X, 1))
OPFN(op_layer_norm, pg_layer_norm(g, X, 1, Y, Z, 1e-5))
OPFN(op_layer_norm2, pg_layer_norm(g, X, 2, NULL, NULL, 1e-5))
OPFN(op_rms_norm, pg_rms_norm(g, X, 1, Y, 1e-6))

/* ---- copy, cast, reshape, shape and indexing ------------------------------------------------- */
OPFN(op_copy, pg_copy(g, X))
OPFN(op_cast, pg_cast(g, X, PG_F64))
OPFN(op_reshape, pg_reshape(g, X, PG_SHAPE(6, 4)))
OPFN(op_permute, pg_permute(g, X, (const int[]){2, 0, 1}))
OPFN(op_transpose, pg_transpose(g, X, 0, 2))
OPFN(op_slice, pg_slice(g, X, 1, 1, 6, 2))
OPFN(op_narrow, pg_narrow(g, X, 0, 1, 2))
OPFN(op_concat, pg_concat(g, 2, in, 1))
OPFN(op_stack, pg_stack(g, 2, in, 0))
OPFN(op_pad, pg_pad(g, X, 1, 2, -1, 0.5))
OPFN(op_rotate_half, pg_rotate_pairs(g, X, Y, Z, false))
OPFN(op_rotate_inter, pg_rotate_pairs(g, X, Y, Z, true))
OPFN(op_rel_shift, pg_rel_shift(g, X, 4))
OPFN(op_split_heads, pg_mul(g, pg_split_heads(g, X, 1, 2, 2), pg_split_heads(g, X, 5, 2, 2)))
OPFN(op_merge_heads, pg_merge_heads(g, X))
OPFN(op_gather, pg_gather(g, X, 1, GC_I64(g, PG_SHAPE(2, 2), 2, 0, 1, 1)))
OPFN(op_gather_lerp, pg_gather_lerp(g, X, pg_mul_scalar(g, pg_sigmoid(g, Y), 2.5)))
/* CoPE's bias, causal, sums of up to 5 gates over 4 values: some clamped */
OPFN(op_cope_interp, pg_cope_interp(g, pg_mul_scalar(g, X, 3.0), Y, NULL, true, 0.9, 0.6))
OPFN(op_index_select, pg_index_select(g, X, 0, GC_I64(g, PG_SHAPE(3), 2, 0, 2)))
OPFN(op_embedding, pg_embedding(g, X, GC_I64(g, PG_SHAPE(2, 3), 4, 0, 4, 1, 3, 0)))
OPFN(op_scatter_add, pg_scatter_add(g, X, 0, GC_I64(g, PG_SHAPE(2, 4), 2, 0, 1, 2, 0, 0, 2, 1), Y))

/* ---- the fused attention (autograd/flash.h) and its options --------------------------------- */
static pg_tensor *gc_flash(pg_graph *g, pg_tensor *const *in, pg_flash_opts o)
{
    o.causal = true;
    return pg_flash_attention(g, in[0], in[1], in[2], &o);
}
OPFN(op_flash, gc_flash(g, in, (pg_flash_opts){.scale = 0.7}))
OPFN(op_flash_rel, gc_flash(g, in, (pg_flash_opts){.rel_q = in[3], .rel_k = in[4], .rel_scale = 0.6}))
OPFN(op_flash_wbias, gc_flash(g, in, (pg_flash_opts){.window = 2, .look_backward = 1, .window_bias = in[3]}))
OPFN(op_flash_xpos, gc_flash(g, in, (pg_flash_opts){.xpos_scale_base = 2.0}))
/* rotary in the kernel, interleaved: channels 0 and 1 turned by p radians at position p, 2 and 3 as
 * they are; constant tables */
static pg_tensor *op_flash_rotary(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_tensor *C = pg_empty(g, in[0]->dtype, PG_SHAPE(1, 1, 5, 1));
    pg_tensor *S = pg_empty(g, in[0]->dtype, PG_SHAPE(1, 1, 5, 1));
    for (int64_t p = 0; C && S && p < 5; p++)
        pg_set(C, p, cos((double)p)), pg_set(S, p, sin((double)p));
    return gc_flash(g, in, (pg_flash_opts){.rot_cos_q = C, .rot_sin_q = S, .rot_cos_k = C, .rot_sin_k = S,
                                           .rot_interleaved = true});
}
/* dropout 0.3 from the same generator state at every evaluation: one fixed mask */
OPFN(op_flash_dropout, gc_flash(g, in, (pg_flash_opts){.dropout = 0.3, .rng = &(pg_rng){pg_rng_init(5).seed, 0}}))
/* q, k, v read in place from one (B, L, 3 H D) projection, 2 heads of 4, with xPos */
OPFN(op_flash_qkv, pg_flash_attention_qkv(g, in[0], 2, &(pg_flash_opts){.causal = true, .xpos_scale_base = 2.0}))

/* ---- losses ----------------------------------------------------------------------------------- */
OPFN(op_cross_entropy, pg_cross_entropy(g, X, GC_I64(g, PG_SHAPE(2, 3), 1, 4, -100, 0, 2, 3), -100, 0.0))
OPFN(op_cross_entropy_ls, pg_cross_entropy(g, X, GC_I64(g, PG_SHAPE(2, 3), 1, 4, 2, 0, 2, 3), -100, 0.1))
static pg_tensor *op_dropout(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    pg_rng r = pg_rng_init(5); /* the same mask at every evaluation */
    return pg_dropout(g, X, 0.3, true, &r);
}
OPFN(op_mse_mean, pg_mse_loss(g, X, Y, PG_REDUCE_MEAN))
OPFN(op_mse_sum, pg_mse_loss(g, X, Y, PG_REDUCE_SUM))
OPFN(op_mse_none, pg_mse_loss(g, X, Y, PG_REDUCE_NONE))
OPFN(op_l1, pg_l1_loss(g, X, GC_F64(g, PG_SHAPE(2, 3), 0.0), PG_REDUCE_MEAN)) /* d = x: away from 0 */
OPFN(op_smooth_l1, pg_smooth_l1_loss(g, X, Y, 0.5, PG_REDUCE_SUM))
OPFN(op_huber, pg_huber_loss(g, X, Y, 0.7, PG_REDUCE_NONE))
OPFN(op_bce, pg_bce_with_logits(g, X, Y, NULL, NULL, PG_REDUCE_MEAN))
OPFN(op_bce_w, pg_bce_with_logits(g, X, Y, GC_F64(g, PG_SHAPE(3), 0.5, 1.0, 2.0),
                                  GC_F64(g, PG_SHAPE(3), 2.0, 0.5, 1.5), PG_REDUCE_SUM))
OPFN(op_nll, pg_nll_loss(g, X, GC_I64(g, PG_SHAPE(2, 3), 1, 4, -100, 0, 2, 3), NULL, -100, PG_REDUCE_MEAN))
OPFN(op_nll_w, pg_nll_loss(g, X, GC_I64(g, PG_SHAPE(2, 3), 1, 4, 2, 0, 2, 3),
                           GC_F64(g, PG_SHAPE(5), 1.0, 0.5, 2.0, 1.5, 0.25), -100, PG_REDUCE_MEAN))

typedef struct gc_op_case {
    const char *name;
    pg_gradcheck_fn fn;
    const char *inputs; /* "u2x3 p3": kind and shape of each input */
} gc_op_case;

static const gc_op_case GC_OPS[] = {
    {"unary/neg", op_neg, "u2x3"}, {"unary/abs", op_abs, "a2x3"}, {"unary/exp", op_exp, "u2x3"},
    {"unary/log", op_log, "p2x3"}, {"unary/log1p", op_log1p, "p2x3"}, {"unary/sqrt", op_sqrt, "p2x3"},
    {"unary/rsqrt", op_rsqrt, "p2x3"}, {"unary/square", op_square, "u2x3"}, {"unary/sin", op_sin, "u2x3"},
    {"unary/cos", op_cos, "u2x3"}, {"unary/tanh", op_tanh, "u2x3"}, {"unary/sigmoid", op_sigmoid, "u2x3"},
    {"unary/relu", op_relu, "a2x3"}, {"unary/gelu", op_gelu, "u2x3"}, {"unary/gelu_tanh", op_gelu_tanh, "u2x3"},
    {"unary/silu", op_silu, "u2x3"}, {"unary/softplus", op_softplus, "u2x3"},
    {"unary/clamp", op_clamp, "u2x4"}, {"unary/clamp lo only", op_clamp_lo, "u2x4"},
    {"unary/pow_scalar 2.5", op_pow_scalar, "p2x3"}, {"unary/add_scalar", op_add_scalar, "u2x3"},
    {"unary/mul_scalar", op_mul_scalar, "u2x3"},
    {"binary/add (2,3)+(3)", op_add, "u2x3 u3"}, {"binary/sub (2,1,3)-(4,3)", op_sub, "u2x1x3 u4x3"},
    {"binary/mul (2,3)*(2,1)", op_mul, "u2x3 u2x1"}, {"binary/div (2,3)/(3)", op_div, "u2x3 p3"},
    {"binary/maximum", op_maximum, "u2x3 u2x3"}, {"binary/minimum (3,1),(1,4)", op_minimum, "u3x1 u1x4"},
    {"binary/pow (2,3)^(3)", op_pow, "p2x3 u3"}, {"binary/broadcast_to", op_broadcast_to, "u3x1"},
    {"mask/where", op_where, "u2x3 u3"}, {"mask/masked_fill", op_masked_fill, "u3x4"},
    {"mask/tril", op_tril, "u2x3x3"}, {"mask/triu 1", op_triu, "u2x3x3"},
    {"reduce/sum axis keepdim", op_sum_axis, "u2x3x4"}, {"reduce/sum all", op_sum_all, "u2x3"},
    {"reduce/mean axes 0,2", op_mean, "u2x3x4"}, {"reduce/max axis", op_max, "u3x4"},
    {"reduce/min all", op_min_all, "u3x4"}, {"reduce/logsumexp", op_logsumexp, "u2x3x4"},
    {"reduce/var unbiased", op_var1, "u3x4"}, {"reduce/var biased all", op_var0, "u3x4"},
    {"reduce/cumsum", op_cumsum, "u2x4"}, {"reduce/cumsum_reverse", op_cumsum_reverse, "u2x4"},
    {"matmul/plain", op_matmul, "u3x4 u4x2"}, {"matmul/trans_a", op_matmul_ta, "u4x3 u4x2"},
    {"matmul/trans_b", op_matmul_tb, "u3x4 u2x4"}, {"matmul/batch broadcast", op_matmul, "u2x3x4 u4x2"},
    {"matmul/affine", op_affine, "u2x3x4 u5x4 u5"}, {"matmul/affine no bias", op_affine_nb, "u3x4 u5x4"},
    {"softmax/softmax", op_softmax, "u2x5"}, {"softmax/softmax axis 0", op_softmax0, "u3x4"},
    {"softmax/log_softmax", op_log_softmax, "u2x5"},
    {"norm/layer_norm", op_layer_norm, "u2x3x4 u4 u4"}, {"norm/layer_norm 2 dims", op_layer_norm2, "u2x3x4"},
    {"norm/rms_norm", op_rms_norm, "u2x3x4 u4"},
    {"shape/copy", op_copy, "u2x3"}, {"shape/cast", op_cast, "u2x3"}, {"shape/reshape", op_reshape, "u2x3x4"},
    {"shape/permute", op_permute, "u2x3x4"}, {"shape/transpose", op_transpose, "u2x3x4"},
    {"shape/slice step 2", op_slice, "u2x6"}, {"shape/narrow", op_narrow, "u3x4"},
    {"shape/concat", op_concat, "u2x3 u2x2"}, {"shape/stack", op_stack, "u2x3 u2x3"},
    {"shape/pad and crop", op_pad, "u2x3"},
    {"shape/rotate_pairs half", op_rotate_half, "u1x2x4x6 u1x1x4x2 u1x1x4x2"},
    {"shape/rotate_pairs interleaved", op_rotate_inter, "u1x2x4x6 u1x1x4x3 u1x1x4x3"},
    {"shape/rel_shift", op_rel_shift, "u1x2x3x6"}, {"shape/split_heads", op_split_heads, "u2x3x9"},
    {"shape/merge_heads", op_merge_heads, "u2x2x3x2"}, {"index/gather", op_gather, "u2x3"},
    {"index/gather_lerp", op_gather_lerp, "u2x3x4 u2x3x5"}, {"index/cope_interp", op_cope_interp, "u1x2x5x5 u1x2x5x4"},
    {"index/index_select", op_index_select, "u3x4"}, {"index/embedding", op_embedding, "u5x3"},
    {"index/scatter_add", op_scatter_add, "u3x4 u2x4"},
    {"loss/cross_entropy ignore", op_cross_entropy, "u2x3x5"},
    {"loss/cross_entropy smoothing", op_cross_entropy_ls, "u2x3x5"}, {"loss/dropout train", op_dropout, "u3x4"},
    {"loss/mse mean", op_mse_mean, "u2x3 u2x3"}, {"loss/mse sum", op_mse_sum, "u2x3 u2x3"},
    {"loss/mse none", op_mse_none, "u2x3 u2x3"}, {"loss/l1", op_l1, "a2x3"},
    {"loss/smooth_l1", op_smooth_l1, "u2x3 u2x3"}, {"loss/huber", op_huber, "u2x3 u2x3"},
    {"loss/bce_with_logits", op_bce, "u2x3 q2x3"}, {"loss/bce weight pos_weight", op_bce_w, "u2x3 q2x3"},
    {"loss/nll ignore", op_nll, "u2x3x5"}, {"loss/nll weight", op_nll_w, "u2x3x5"},
    {"attn/flash", op_flash, "u1x2x5x4 u1x2x5x4 u1x2x5x3"},
    {"attn/flash relative keys", op_flash_rel, "u1x2x5x4 u1x2x5x4 u1x2x5x3 u1x2x5x4 u2x9x4"},
    {"attn/flash window bias", op_flash_wbias, "u1x2x6x4 u1x2x6x4 u1x2x6x3 u2x2x4"},
    {"attn/flash xpos", op_flash_xpos, "u1x2x5x4 u1x2x5x4 u1x2x5x3"},
    {"attn/flash dropout", op_flash_dropout, "u1x2x5x4 u1x2x5x4 u1x2x5x3"},
    {"attn/flash qkv", op_flash_qkv, "u1x5x24"},
    {"attn/flash rotary", op_flash_rotary, "u1x2x5x4 u1x2x5x4 u1x2x5x3"},
    /* last: each row's inputs are drawn with its index as seed, so the rows above keep theirs */
    {"matmul/scalar_mlp", op_scalar_mlp, "u2x6 u3x1 u3 u2x3 u2"},
};

/* One input from its word ("u2x3"); NULL for a bad word. */
static pg_tensor *gc_op_input(const char *w, pg_rng *r)
{
    int64_t shape[4];
    int nd = 0;
    const char *s = w + 1;
    while (nd < 4 && *s >= '0' && *s <= '9') {
        char *e;
        shape[nd++] = strtoll(s, &e, 10);
        s = *e == 'x' ? e + 1 : e;
    }
    pg_tensor *t = nd ? pg_empty(NULL, PG_F64, nd, shape) : NULL;
    if (!t)
        return NULL;
    double lo = w[0] == 'p' ? 0.5 : w[0] == 'q' ? 0.05 : w[0] == 'a' ? 0.2 : -1.0;
    double hi = w[0] == 'p' ? 2.0 : w[0] == 'q' ? 0.95 : 1.0;
    pg_fill_uniform(t, r, lo, hi);
    for (int64_t i = 0; w[0] == 'a' && i < t->numel; i++)
        if (pg_rng_uniform(r) < 0.5)
            pg_set(t, i, -pg_get(t, i));
    pg_set_requires_grad(t, true);
    return t;
}

#define GC_MAX_INPUTS 5 /* inputs of a case at most */

/* One case: its inputs, the check, the row. */
static void gc_op_row(gc_report *rep, const gc_op_case *c, uint64_t seed)
{
    if (!gc_want(rep, c->name))
        return;
    pg_rng r = pg_rng_init(seed);
    pg_tensor *in[GC_MAX_INPUTS] = {NULL};
    int n = 0;
    bool ok = true;
    for (const char *w = c->inputs; ok && *w && n < GC_MAX_INPUTS; n++) {
        ok = (in[n] = gc_op_input(w, &r)) != NULL;
        w = strchr(w, ' ') ? strchr(w, ' ') + 1 : w + strlen(w);
    }
    if (!ok) {
        gc_row_setup_failed(rep, c->name);
    } else {
        pg_gradcheck_opts o = gc_opts(rep, false);
        double t0 = gc_now_ms();
        pg_gradcheck_result res = pg_gradcheck(c->fn, n, in, NULL, &o);
        gc_row(rep, c->name, &res, gc_now_ms() - t0);
    }
    for (int i = 0; i < n; i++)
        pg_tensor_free(in[i]);
}

static void gc_run_ops(gc_report *rep)
{
    for (size_t i = 0; i < sizeof GC_OPS / sizeof GC_OPS[0]; i++)
        gc_op_row(rep, &GC_OPS[i], 100 + i);
}

#undef X
#undef Y
#undef Z
#undef OPFN

#endif
