/* Every public function given NULL where it needs an object returns an error
 * (NULL, -1, NaN or the value its header documents), records a message that
 * starts with the function's name, and never crashes (issue 11, "Hardening").
 *
 * Each (function, NULL position) is one case; positions where NULL is
 * documented as meaningful (g NULL: a heap result; an options struct NULL: the
 * defaults; a bias or generator that may be absent) are not listed, or listed as
 * VALUE cases with their documented result. The cases of one header section run
 * in one Criterion test (null_args/<section>), each between its own setup and
 * teardown: 450 separate worker processes cost ~1.5 s each under valgrind. A
 * failing assertion names its call and line; a case that crashes is named on
 * stderr by a signal handler before the default (or sanitizer's) handler runs. */
#include "testutil.h"

#include <signal.h>
#include <unistd.h>

/* ---- fixture: a few valid objects, so that only the NULL is wrong ------------- */

static pg_graph *G;
static pg_tensor *X;     /* f64 (2, 3), requires grad */
static pg_tensor *Y;     /* f64 (2, 3) */
static pg_tensor *IDX;   /* i64 (2, 3) in 0..2 */
static pg_tensor *MASK;  /* bool (2, 3), all true */
static pg_tensor *Q;     /* f64 (1, 2, 3, 4): q, k, v of a 2-head attention over 3 tokens */
static pg_tensor *XS;    /* f64 (1, 3, 8): a sequence of width 8 */
static pg_tensor *TOK;   /* i64 (1, 3) token ids */
static pg_tensor *ROT;   /* f64 (1, 1, 3, 2): cos / sin for pg_rotate_pairs on Q */
static pg_rng RNG;
static pg_pos_ctx CTX;
static pg_posmod_args ARGS;
static pg_tensor_list LIST;
static const int64_t S23[2] = {2, 3};
static const double V6[6] = {1, 2, 3, 4, 5, 6};
static const uint8_t PX[4] = {1, 2, 3, 4};
static const char *const NUL_STR = NULL; /* a NULL string the compiler cannot see through in formats */

static pg_module *OWNED[16]; /* modules built by a case, freed by the teardown */
static int N_OWNED;
static pg_optim *OPT; /* an optimizer without groups, likewise */

static void setup(void)
{
    RNG = pg_rng_init(7);
    G = pg_graph_new();
    X = pg_rand(NULL, PG_F64, 2, S23, &RNG);
    X->requires_grad = true;
    Y = pg_rand(NULL, PG_F64, 2, S23, &RNG);
    IDX = TI64(PG_SHAPE(2, 3), 0, 1, 2, 0, 1, 2);
    MASK = TBOOL(PG_SHAPE(2, 3), 1, 1, 1, 1, 1, 1);
    Q = pg_rand(NULL, PG_F64, PG_SHAPE(1, 2, 3, 4), &RNG);
    XS = pg_rand(NULL, PG_F64, PG_SHAPE(1, 3, 8), &RNG);
    TOK = TI64(PG_SHAPE(1, 3), 0, 1, 2);
    ROT = pg_rand(NULL, PG_F64, PG_SHAPE(1, 1, 3, 2), &RNG);
    CTX = (pg_pos_ctx){.self_attn = true, .B = 1, .heads = 2, .head_dim = 4, .Lq = 3, .Lk = 3, .scale = 0.5,
                       .dtype = PG_F64, .rng = &RNG};
    ARGS = (pg_posmod_args){.dim = 8, .heads = 2, .head_dim = 4, .max_len = 16, .layer = 0, .dtype = PG_F64,
                            .rng = &RNG};
    LIST = (pg_tensor_list){0, 0, NULL, NULL};
    cr_assert_eq(pg_tensor_list_push(&LIST, "x", X), 0);
    N_OWNED = 0;
    OPT = NULL;
}

static void teardown(void)
{
    for (int i = 0; i < N_OWNED; i++)
        pg_module_free(OWNED[i]);
    pg_optim_free(OPT);
    pg_tensor_list_free(&LIST);
    pg_tensor *ts[] = {X, Y, IDX, MASK, Q, XS, TOK, ROT};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        pg_tensor_free(ts[i]);
    pg_graph_free(G);
}

/* Modules built inside a case are freed by the teardown. */
static void *keep(void *m)
{
    cr_assert_not_null(m, "building the fixture failed: %s", pg_last_error());
    OWNED[N_OWNED++] = m;
    pg_clear_error();
    return m;
}
static pg_linear *lin(void) { return keep(pg_linear_new(3, 3, true, PG_F64, &RNG)); }
static pg_embed *emb(void) { return keep(pg_embed_new(4, 3, PG_F64, &RNG)); }
static pg_layernorm *lnorm(void) { return keep(pg_layernorm_new(3, 1e-5, true, true, PG_F64)); }
static pg_rmsnorm *rnorm(void) { return keep(pg_rmsnorm_new(3, 1e-5, true, PG_F64)); }
static pg_dropout_mod *drop(void) { return keep(pg_dropout_new(0.5)); }
static pg_feedforward *ff(void)
{
    return keep(pg_feedforward_new(3, 6, PG_FF_MLP, PG_ACT_GELU, 0.0, true, PG_F64, &RNG));
}
static pg_module *mod(void) { return &lin()->base; }
static pg_posmod *alibi(void) { return keep(pg_alibi_new(2, NULL, PG_F64)); }
static pg_posmod *sinus(void) { return keep(pg_sinusoidal_new(8, NULL, PG_F64)); }
static pg_posmod *rotary(void) { return keep(pg_rotary_new(4, NULL, PG_F64)); }
static pg_posmod *dpb(void) { return keep(pg_posmod_make_dpb(&ARGS)); }
static pg_posmod *xl(void) { return keep(pg_posmod_make_xl(&ARGS)); }
static pg_posmod *rel1d(void) { return keep(pg_rel1d_new(8, 4, 0, PG_F64, &RNG)); }
static pg_mha *mha(void)
{
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.dtype = PG_F64;
    return keep(pg_mha_new(&c, NULL, 0, &RNG));
}
static pg_block *block(void)
{
    pg_block_config c = pg_block_defaults(8, 2);
    c.dtype = PG_F64;
    return keep(pg_block_new(&c, NULL, 0, &RNG));
}
static pg_lm *lm(void)
{
    pg_lm_config c = pg_lm_defaults(5, 8, 2, 1);
    c.dtype = PG_F64;
    return keep(pg_lm_new(&c));
}
static pg_local_attention *local(void)
{
    pg_local_attention_config c = pg_local_attention_defaults(2);
    c.dtype = PG_F64;
    return keep(pg_local_attention_new(&c, NULL, 0));
}
static pg_optim *opt(void)
{
    OPT = pg_optim_new(PG_SGD, NULL);
    cr_assert_not_null(OPT, "%s", pg_last_error());
    pg_clear_error();
    return OPT;
}

/* The last error starts with "fn:". */
static void expect_error(const char *fn, const char *call)
{
    const char *e = pg_last_error();
    size_t n = strlen(fn);
    cr_assert(strncmp(e, fn, n) == 0 && e[n] == ':', "%s: the error \"%s\" does not start with \"%s:\"", call, e,
              fn);
}

/* ---- the cases: registered at start-up, run by section ------------------------ */

typedef struct null_case {
    const char *section, *id;
    void (*run)(void);
} null_case;
enum { MAX_CASES = 1024 };
static null_case CASES[MAX_CASES];
static int N_CASES;

/* CASE(id) { body }: a case of the section named by SECTION where it is written. */
#define CASE(id)                                                                                               \
    static void case_##id(void);                                                                               \
    __attribute__((constructor)) static void register_##id(void)                                               \
    {                                                                                                          \
        if (N_CASES < MAX_CASES)                                                                               \
            CASES[N_CASES++] = (null_case){SECTION, #id, case_##id};                                           \
    }                                                                                                          \
    static void case_##id(void)

/* A call returning a pointer: NULL and an error naming fn. */
#define PTR(id, fn, expr)                                                                                      \
    CASE(id)                                                                                                   \
    {                                                                                                          \
        pg_clear_error();                                                                                      \
        const void *r_ = (const void *)(expr);                                                                 \
        cr_assert_null(r_, "%s should fail", #expr);                                                           \
        expect_error(fn, #expr);                                                                               \
    }
/* A call returning a number: `want` (NaN matches NaN) and an error naming fn. */
#define NUM(id, fn, expr, want)                                                                                \
    CASE(id)                                                                                              \
    {                                                                                                          \
        pg_clear_error();                                                                                      \
        double r_ = (double)(expr), w_ = (want);                                                               \
        cr_assert(r_ == w_ || (isnan(r_) && isnan(w_)), "%s returned %g, expected %g", #expr, r_, w_);        \
        expect_error(fn, #expr);                                                                               \
    }
/* A call without a result: an error naming fn. */
#define VOID(id, fn, stmt)                                                                                     \
    CASE(id)                                                                                              \
    {                                                                                                          \
        pg_clear_error();                                                                                      \
        stmt;                                                                                                  \
        expect_error(fn, #stmt);                                                                               \
    }
/* NULL documented as meaningful: the documented result, no crash. */
#define VALUE(id, expr, want)                                                                                  \
    CASE(id)                                                                                                   \
    {                                                                                                          \
        double r_ = (double)(uintptr_t)(expr), w_ = (want);                                                    \
        cr_assert(r_ == w_, "%s returned %g, expected %g", #expr, r_, w_);                                     \
    }
/* *_free and friends: a no-op. */
#define NOOP(id, stmt)                                                                                         \
    CASE(id) { stmt; }

/* ---- tensor/tensor.h ------------------------------------------------------------ */
#define SECTION "tensor"

VOID(set_error_fmt, "pg_set_error", pg_set_error(NUL_STR))
PTR(shape_str_buf, "pg_shape_str", pg_shape_str(NULL, 16, X))
CASE(shape_str_t)
{
    char buf[16];
    cr_assert_str_eq(pg_shape_str(buf, sizeof buf, NULL), "NULL");
}
NUM(same_shape_a, "pg_same_shape", pg_same_shape(NULL, X), 0)
NUM(same_shape_b, "pg_same_shape", pg_same_shape(X, NULL), 0)
NUM(axis_fn, "pg_axis", pg_axis(NULL, 0, 2), -1)
NOOP(arena_free, pg_arena_free(NULL))
PTR(arena_alloc, "pg_arena_alloc", pg_arena_alloc(NULL, 8))
VOID(arena_reset, "pg_arena_reset", pg_arena_reset(NULL))
NUM(arena_used, "pg_arena_used", pg_arena_used(NULL), 0)
NUM(arena_capacity, "pg_arena_capacity", pg_arena_capacity(NULL), 0)
NUM(arena_chunk_allocs, "pg_arena_chunk_allocs", pg_arena_chunk_allocs(NULL), 0)
PTR(tensor_empty_shape, "pg_tensor_empty", pg_tensor_empty(NULL, PG_F64, 2, NULL))
NOOP(tensor_free, pg_tensor_free(NULL))
PTR(tensor_view_src, "pg_tensor_view", pg_tensor_view(NULL, NULL, 2, S23))
PTR(tensor_view_shape, "pg_tensor_view", pg_tensor_view(NULL, X, 2, NULL))
PTR(f32, "pg_f32", pg_f32(NULL))
PTR(f64, "pg_f64", pg_f64(NULL))
PTR(i64, "pg_i64", pg_i64(NULL))
PTR(bool_, "pg_bool", pg_bool(NULL))
NUM(get, "pg_get", pg_get(NULL, 0), NAN)
VOID(set, "pg_set", pg_set(NULL, 0, 1.0))
NUM(item, "pg_item", pg_item(NULL), NAN)
NUM(rng_next_u64, "pg_rng_next_u64", pg_rng_next_u64(NULL), 0)
NUM(rng_uniform, "pg_rng_uniform", pg_rng_uniform(NULL), NAN)
NUM(rng_uniform_at, "pg_rng_uniform_at", pg_rng_uniform_at(NULL, 3), NAN)
VOID(rng_uniforms_at, "pg_rng_uniforms_at", pg_rng_uniforms_at(NULL, 0, 4, (double[4]){0}))
NUM(rng_normal, "pg_rng_normal", pg_rng_normal(NULL), NAN)
PTR(tensor_full_shape, "pg_tensor_full", pg_tensor_full(NULL, PG_F64, 2, NULL, 1.0))
PTR(tensor_from_array_shape, "pg_tensor_from_array", pg_tensor_from_array(NULL, PG_F64, 2, NULL, V6))
PTR(tensor_from_array_values, "pg_tensor_from_array", pg_tensor_from_array(NULL, PG_F64, 2, S23, NULL))
PTR(tensor_copy, "pg_tensor_copy", pg_tensor_copy(NULL, NULL))
PTR(tensor_cast, "pg_tensor_cast", pg_tensor_cast(NULL, NULL, PG_F32))
NUM(fill, "pg_fill", pg_fill(NULL, 1.0), -1)
NUM(fill_arange, "pg_fill_arange", pg_fill_arange(NULL, 0, 1), -1)
NUM(fill_linspace, "pg_fill_linspace", pg_fill_linspace(NULL, 0, 1), -1)
NUM(fill_uniform_t, "pg_fill_uniform", pg_fill_uniform(NULL, &RNG, 0, 1), -1)
NUM(fill_uniform_r, "pg_fill_uniform", pg_fill_uniform(Y, NULL, 0, 1), -1)
NUM(fill_normal_t, "pg_fill_normal", pg_fill_normal(NULL, &RNG, 0, 1), -1)
NUM(fill_normal_r, "pg_fill_normal", pg_fill_normal(Y, NULL, 0, 1), -1)
NUM(fill_bernoulli_t, "pg_fill_bernoulli", pg_fill_bernoulli(NULL, &RNG, 0.5), -1)
NUM(fill_bernoulli_r, "pg_fill_bernoulli", pg_fill_bernoulli(Y, NULL, 0.5), -1)
NUM(copy_into_dst, "pg_copy_into", pg_copy_into(NULL, X), -1)
NUM(copy_into_src, "pg_copy_into", pg_copy_into(Y, NULL), -1)

/* ---- tensor/gemm.h, threadpool.h, formats/png.h ------------------------------------- */
#undef SECTION
#define SECTION "kernels"

static float F4[4] = {1, 2, 3, 4};
static void noop_slice(void *ctx, int64_t begin, int64_t end, int slice)
{
    (void)ctx, (void)begin, (void)end, (void)slice;
}
static double D4[4] = {1, 2, 3, 4};
VOID(gemm_f32_a, "pg_gemm_f32", pg_gemm_f32(false, false, 2, 2, 2, 1.0f, NULL, 2, F4, 2, 0.0f, F4, 2))
VOID(gemm_f32_b, "pg_gemm_f32", pg_gemm_f32(false, false, 2, 2, 2, 1.0f, F4, 2, NULL, 2, 0.0f, F4, 2))
VOID(gemm_f32_c, "pg_gemm_f32", pg_gemm_f32(false, false, 2, 2, 2, 1.0f, F4, 2, F4, 2, 0.0f, NULL, 2))
VOID(gemm_f64_a, "pg_gemm_f64", pg_gemm_f64(false, false, 2, 2, 2, 1.0, NULL, 2, D4, 2, 0.0, D4, 2))
VOID(gemm_f64_b, "pg_gemm_f64", pg_gemm_f64(false, false, 2, 2, 2, 1.0, D4, 2, NULL, 2, 0.0, D4, 2))
VOID(gemm_f64_c, "pg_gemm_f64", pg_gemm_f64(false, false, 2, 2, 2, 1.0, D4, 2, D4, 2, 0.0, NULL, 2))
VOID(parallel_for, "pg_parallel_for", pg_parallel_for(4, NULL, NULL))
VOID(parallel_range, "pg_parallel_range", pg_parallel_range(4, 1, NULL, NULL))
VOID(parallel_slices, "pg_parallel_slices", pg_parallel_slices(4, 1, 2, NULL, NULL))
VOID(parallel_chunks, "pg_parallel_chunks", pg_parallel_chunks(4, 1, 2, NULL, NULL))
NUM(parallel_set_speeds, "pg_parallel_set_speeds", pg_parallel_set_speeds(NULL, 2), -1)
VOID(split_bounds, "pg_split_bounds", pg_split_bounds(4, 1, 2, NULL, NULL))
NUM(parallel_speeds, "pg_parallel_speeds", pg_parallel_speeds(NULL, 2), -1)
NUM(parallel_weights, "pg_parallel_weights", pg_parallel_weights(2, NULL, NULL, 0), -1)
VOID(parallel_slices_at_fn, "pg_parallel_slices_at", pg_parallel_slices_at(1, (const int64_t[]){0, 4}, NULL, NULL))
VOID(parallel_slices_at_bounds, "pg_parallel_slices_at",
     pg_parallel_slices_at(1, NULL, noop_slice, NULL))
VOID(parallel_learn_bounds, "pg_parallel_learn", pg_parallel_learn(noop_slice, 1, NULL, D4))
VOID(parallel_learn_secs, "pg_parallel_learn", pg_parallel_learn(noop_slice, 1, (const int64_t[]){0, 4}, NULL))
VOID(speeds_update_speed, "pg_speeds_update", pg_speeds_update(NULL, 2, 2, (const int64_t[]){0, 1, 2}, D4))
VOID(speeds_update_bounds, "pg_speeds_update", pg_speeds_update(D4, 2, 2, NULL, D4))
VOID(speeds_update_secs, "pg_speeds_update", pg_speeds_update(D4, 2, 2, (const int64_t[]){0, 1, 2}, NULL))
NUM(png_write_path, "pg_png_write", pg_png_write(NULL, 2, 2, 1, PX), -1)
NUM(png_write_pixels, "pg_png_write", pg_png_write("/tmp/pg_null_args.png", 2, 2, 1, NULL), -1)
VOID(colormap, "pg_colormap", pg_colormap(0.5, NULL))
NUM(png_heatmap_path, "pg_png_heatmap", pg_png_heatmap(NULL, X, 1, 0, 0), -1)
NUM(png_heatmap_t, "pg_png_heatmap", pg_png_heatmap("/tmp/pg_null_args.png", NULL, 1, 0, 0), -1)
NUM(crc32, "pg_crc32", pg_crc32(0, NULL, 4), 0)
NUM(adler32, "pg_adler32", pg_adler32(1, NULL, 4), 1)
static uint8_t *PNG_OUT;
static size_t PNG_LEN;
static int64_t PNG_W, PNG_H;
static int PNG_C;
NUM(png_encode_out, "pg_png_encode", pg_png_encode(NULL, &PNG_LEN, 2, 2, 1, PX), -1)
NUM(png_encode_len, "pg_png_encode", pg_png_encode(&PNG_OUT, NULL, 2, 2, 1, PX), -1)
NUM(png_encode_pixels, "pg_png_encode", pg_png_encode(&PNG_OUT, &PNG_LEN, 2, 2, 1, NULL), -1)
NUM(png_decode_data, "pg_png_decode", pg_png_decode(NULL, 8, &PNG_W, &PNG_H, &PNG_C, &PNG_OUT), -1)
NUM(png_decode_width, "pg_png_decode", pg_png_decode(PX, 4, NULL, &PNG_H, &PNG_C, &PNG_OUT), -1)
NUM(png_decode_pixels, "pg_png_decode", pg_png_decode(PX, 4, &PNG_W, &PNG_H, &PNG_C, NULL), -1)
NUM(png_read_path, "pg_png_read", pg_png_read(NULL, &PNG_W, &PNG_H, &PNG_C, &PNG_OUT), -1)
NUM(png_read_channels, "pg_png_read", pg_png_read("/tmp/x.png", &PNG_W, &PNG_H, NULL, &PNG_OUT), -1)
NUM(zlib_compress_out, "pg_zlib_compress", pg_zlib_compress(NULL, &PNG_LEN, PX, 4), -1)
NUM(zlib_compress_in, "pg_zlib_compress", pg_zlib_compress(&PNG_OUT, &PNG_LEN, NULL, 4), -1)
NUM(zlib_decompress_out, "pg_zlib_decompress", pg_zlib_decompress(NULL, &PNG_LEN, PX, 4, 100), -1)
NUM(zlib_decompress_in, "pg_zlib_decompress", pg_zlib_decompress(&PNG_OUT, &PNG_LEN, NULL, 4, 100), -1)

/* ---- autograd/graph.h ------------------------------------------------------------------ */
#undef SECTION
#define SECTION "graph"

NOOP(graph_free, pg_graph_free(NULL))
VOID(graph_reset, "pg_graph_reset", pg_graph_reset(NULL))
VALUE(graph_arena, pg_graph_arena(NULL), 0)         /* no graph: the heap */
VALUE(graph_num_nodes, pg_graph_num_nodes(NULL), 0) /* no graph records nothing */
VALUE(graph_node, pg_graph_node(NULL, 0), 0)
VALUE(graph_error, pg_graph_error(NULL), 0)
VALUE(grad_enabled, pg_grad_enabled(NULL), 0)
NOOP(no_grad_begin, pg_no_grad_begin(NULL))
NOOP(no_grad_end, pg_no_grad_end(NULL))
VOID(graph_fail_fmt, "pg_graph_fail", pg_graph_fail(G, NUL_STR))
VOID(set_requires_grad, "pg_set_requires_grad", pg_set_requires_grad(NULL, true))
VOID(zero_grad, "pg_zero_grad", pg_zero_grad(NULL))
PTR(detach, "pg_detach", pg_detach(G, NULL))
NUM(backward_g, "pg_backward", pg_backward(NULL, X), -1)
NUM(backward_loss, "pg_backward", pg_backward(G, NULL), -1)
NUM(backward_with_g, "pg_backward_with", pg_backward_with(NULL, X, Y), -1)
NUM(backward_with_out, "pg_backward_with", pg_backward_with(G, NULL, Y), -1)
NUM(backward_with_grad, "pg_backward_with", pg_backward_with(G, X, NULL), -1)
PTR(empty_shape, "pg_empty", pg_empty(G, PG_F64, 2, NULL))
PTR(zeros_shape, "pg_zeros", pg_zeros(G, PG_F64, 2, NULL))
PTR(ones_shape, "pg_ones", pg_ones(G, PG_F64, 2, NULL))
PTR(full_shape, "pg_full", pg_full(G, PG_F64, 2, NULL, 1.0))
PTR(from_array_shape, "pg_from_array", pg_from_array(G, PG_F64, 2, NULL, V6))
PTR(from_array_values, "pg_from_array", pg_from_array(G, PG_F64, 2, S23, NULL))
PTR(rand_shape, "pg_rand", pg_rand(G, PG_F64, 2, NULL, &RNG))
PTR(rand_r, "pg_rand", pg_rand(G, PG_F64, 2, S23, NULL))
PTR(randn_shape, "pg_randn", pg_randn(G, PG_F64, 2, NULL, &RNG))
PTR(randn_r, "pg_randn", pg_randn(G, PG_F64, 2, S23, NULL))
PTR(bernoulli_shape, "pg_bernoulli", pg_bernoulli(G, PG_F64, 2, NULL, 0.5, &RNG))
PTR(bernoulli_r, "pg_bernoulli", pg_bernoulli(G, PG_F64, 2, S23, 0.5, NULL))
PTR(copy, "pg_copy", pg_copy(G, NULL))
PTR(cast, "pg_cast", pg_cast(G, NULL, PG_F32))
PTR(reshape_x, "pg_reshape", pg_reshape(G, NULL, 2, S23))
PTR(reshape_shape, "pg_reshape", pg_reshape(G, X, 2, NULL))
PTR(op_output_fn, "pg_op_output", pg_op_output(G, NULL, PG_F64, 2, S23))
PTR(op_output_shape, "my_op", pg_op_output(G, "my_op", PG_F64, 2, NULL))
static int no_backward(pg_graph *g, pg_node *n) { return (void)g, (void)n, 0; }
PTR(op_record_fn, "pg_op_record", pg_op_record(G, NULL, Y, 1, &X, no_backward))
PTR(op_record_out, "pg_op_record", pg_op_record(G, "my_op", NULL, 1, &X, no_backward))
PTR(op_record_in, "pg_op_record", pg_op_record(G, "my_op", Y, 1, NULL, no_backward))
PTR(op_record_backward, "pg_op_record", pg_op_record(G, "my_op", Y, 1, &X, NULL))
NUM(op_needs_grad, "pg_op_needs_grad", pg_op_needs_grad(G, 1, NULL), 0)
VALUE(grad_of_x, pg_grad_of(G, NULL), 0) /* documented: NULL when x needs no grad */
CASE(grad_of_arena_without_graph)
{
    pg_tensor *t = pg_zeros(G, PG_F64, 2, S23);
    t->requires_grad = true;
    pg_clear_error();
    cr_assert_null(pg_grad_of(NULL, t));
    expect_error("pg_grad_of", "pg_grad_of(NULL, t)");
}
PTR(grad_fresh_flag, "pg_grad_fresh", pg_grad_fresh(G, X, NULL))
NUM(grad_accumulate_delta, "pg_grad_accumulate", pg_grad_accumulate(G, X, NULL), -1)
PTR(graph_alloc, "pg_graph_alloc", pg_graph_alloc(NULL, 8))

static int copy_forward(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx)
{
    (void)n_in, (void)ctx;
    return pg_copy_into(out, in[0]);
}
static int copy_backward(pg_tensor *const *gi, const pg_tensor *go, const pg_tensor *out, pg_tensor *const *in,
                         int n_in, void *ctx)
{
    (void)out, (void)in, (void)n_in, (void)ctx;
    return gi[0] ? pg_copy_into(gi[0], go) : 0;
}
static const pg_custom_op MY_OP = {.name = "my_op", .forward = copy_forward, .backward = copy_backward};
PTR(custom_op, "pg_custom", pg_custom(G, NULL, 1, &X, 2, S23, NULL, 0))
PTR(custom_in, "my_op", pg_custom(G, &MY_OP, 1, NULL, 2, S23, NULL, 0))
PTR(custom_in_entry, "my_op", pg_custom(G, &MY_OP, 1, (pg_tensor *[]){NULL}, 2, S23, NULL, 0))
PTR(custom_shape, "my_op", pg_custom(G, &MY_OP, 1, &X, 2, NULL, NULL, 0))

static pg_tensor *id_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_copy(g, in[0]);
}
CASE(gradcheck_fn)
{
    pg_clear_error();
    pg_gradcheck_result r = pg_gradcheck(NULL, 1, &X, NULL, NULL);
    cr_assert(!r.ok);
    expect_error("pg_gradcheck", "pg_gradcheck(NULL, ...)");
    cr_assert(strncmp(r.message, "pg_gradcheck:", 13) == 0, "message \"%s\"", r.message);
}
CASE(gradcheck_inputs)
{
    pg_clear_error();
    pg_gradcheck_result r = pg_gradcheck(id_fn, 1, NULL, NULL, NULL);
    cr_assert(!r.ok);
    expect_error("pg_gradcheck", "pg_gradcheck(id_fn, 1, NULL, ...)");
}
CASE(gradcheck_input_entry)
{
    pg_clear_error();
    pg_gradcheck_result r = pg_gradcheck(id_fn, 1, (pg_tensor *[]){NULL}, NULL, NULL);
    cr_assert(!r.ok);
    expect_error("pg_gradcheck", "pg_gradcheck(id_fn, 1, {NULL}, ...)");
}
CASE(gradcheck_ex_fn)
{
    pg_clear_error();
    pg_gradcheck_stat st;
    cr_assert(!pg_gradcheck_ex(NULL, 1, &X, NULL, NULL, &st).ok);
    expect_error("pg_gradcheck", "pg_gradcheck_ex(NULL, ...)");
}
static pg_tensor *id_module_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)m, (void)n, (void)ctx;
    return pg_copy(g, in[0]);
}
CASE(gradcheck_module_args)
{
    pg_clear_error();
    cr_assert(!pg_gradcheck_module(NULL, &lm()->base, 1, &X, NULL, NULL).all.ok);
    expect_error("pg_gradcheck_module", "pg_gradcheck_module(NULL fn, ...)");
    pg_clear_error();
    cr_assert(!pg_gradcheck_module(id_module_fn, NULL, 1, &X, NULL, NULL).all.ok);
    expect_error("pg_gradcheck_module", "pg_gradcheck_module(fn, NULL, ...)");
    pg_clear_error();
    cr_assert(!pg_gradcheck_module(id_module_fn, &lm()->base, 1, NULL, NULL, NULL).all.ok);
    expect_error("pg_gradcheck_module", "pg_gradcheck_module(fn, m, 1, NULL, ...)");
    pg_clear_error();
    cr_assert(!pg_gradcheck_module(id_module_fn, &lm()->base, 1, (pg_tensor *[]){NULL}, NULL, NULL).all.ok);
    expect_error("pg_gradcheck_module", "pg_gradcheck_module(fn, m, 1, {NULL}, ...)");
    cr_assert(strstr(pg_last_error(), "input 0 is NULL"), "%s", pg_last_error());
    pg_clear_error();
    cr_assert_eq(pg_module_gradcheck_print(NULL, NULL), -1);
    expect_error("pg_module_gradcheck_print", "pg_module_gradcheck_print(NULL, NULL)");
    pg_module_gradcheck_free(NULL);
}

/* ---- autograd/ops.h: every tensor position of every op ----------------------------------- */
#undef SECTION
#define SECTION "ops"

#define UNARY(name) PTR(name, "pg_" #name, pg_##name(G, NULL))
UNARY(neg)
UNARY(abs)
UNARY(sign)
UNARY(exp)
UNARY(log)
UNARY(log1p)
UNARY(sqrt)
UNARY(rsqrt)
UNARY(square)
UNARY(sin)
UNARY(cos)
UNARY(tanh)
UNARY(sigmoid)
UNARY(relu)
UNARY(gelu)
UNARY(gelu_tanh)
UNARY(silu)
UNARY(softplus)
UNARY(floor)
UNARY(round)
UNARY(logical_not)
PTR(clamp, "pg_clamp", pg_clamp(G, NULL, 0, 1))
PTR(pow_scalar, "pg_pow_scalar", pg_pow_scalar(G, NULL, 2))
PTR(add_scalar, "pg_add_scalar", pg_add_scalar(G, NULL, 2))
PTR(mul_scalar, "pg_mul_scalar", pg_mul_scalar(G, NULL, 2))

#define BINARY(name, a, b)                                                                                     \
    PTR(name##_a, "pg_" #name, pg_##name(G, NULL, b))                                                          \
    PTR(name##_b, "pg_" #name, pg_##name(G, a, NULL))
BINARY(add, X, Y)
BINARY(sub, X, Y)
BINARY(mul, X, Y)
BINARY(div, X, Y)
BINARY(maximum, X, Y)
BINARY(minimum, X, Y)
BINARY(pow, X, Y)
BINARY(eq, X, Y)
BINARY(ne, X, Y)
BINARY(lt, X, Y)
BINARY(le, X, Y)
BINARY(gt, X, Y)
BINARY(ge, X, Y)
BINARY(logical_and, MASK, MASK)
BINARY(logical_or, MASK, MASK)
#undef BINARY
PTR(broadcast_to_x, "pg_broadcast_to", pg_broadcast_to(G, NULL, 2, S23))
PTR(broadcast_to_shape, "pg_broadcast_to", pg_broadcast_to(G, X, 2, NULL))
PTR(where_cond, "pg_where", pg_where(G, NULL, X, Y))
PTR(where_a, "pg_where", pg_where(G, MASK, NULL, Y))
PTR(where_b, "pg_where", pg_where(G, MASK, X, NULL))
PTR(masked_fill_x, "pg_masked_fill", pg_masked_fill(G, NULL, MASK, 0))
PTR(masked_fill_mask, "pg_masked_fill", pg_masked_fill(G, X, NULL, 0))
PTR(tril, "pg_tril", pg_tril(G, NULL, 0))
PTR(triu, "pg_triu", pg_triu(G, NULL, 0))

#define REDUCE(name)                                                                                           \
    PTR(name##_x, "pg_" #name, pg_##name(G, NULL, 0, NULL, false))                                            \
    PTR(name##_axes, "pg_" #name, pg_##name(G, X, 1, NULL, false))
REDUCE(sum)
REDUCE(mean)
REDUCE(max)
REDUCE(min)
REDUCE(logsumexp)
#undef REDUCE
PTR(var_x, "pg_var", pg_var(G, NULL, 0, NULL, 1, false))
PTR(var_axes, "pg_var", pg_var(G, X, 1, NULL, 1, false))
PTR(argmax, "pg_argmax", pg_argmax(G, NULL, 0, false))
PTR(cumsum, "pg_cumsum", pg_cumsum(G, NULL, 0))
PTR(cumsum_reverse, "pg_cumsum_reverse", pg_cumsum_reverse(G, NULL, 0))
PTR(matmul_a, "pg_matmul", pg_matmul(G, NULL, Y, false, true))
PTR(matmul_b, "pg_matmul", pg_matmul(G, X, NULL, false, true))
PTR(affine_x, "pg_affine", pg_affine(G, NULL, Y, NULL))
PTR(affine_weight, "pg_affine", pg_affine(G, X, NULL, NULL))
PTR(softmax, "pg_softmax", pg_softmax(G, NULL, -1))
PTR(log_softmax, "pg_log_softmax", pg_log_softmax(G, NULL, -1))
PTR(layer_norm, "pg_layer_norm", pg_layer_norm(G, NULL, 1, NULL, NULL, 1e-5))
PTR(rms_norm, "pg_rms_norm", pg_rms_norm(G, NULL, 1, NULL, 1e-5))
PTR(permute_x, "pg_permute", pg_permute(G, NULL, (const int[]){1, 0}))
PTR(permute_perm, "pg_permute", pg_permute(G, X, NULL))
PTR(transpose, "pg_transpose", pg_transpose(G, NULL, 0, 1))
PTR(slice, "pg_slice", pg_slice(G, NULL, 0, 0, 1, 1))
PTR(narrow, "pg_narrow", pg_narrow(G, NULL, 0, 0, 1))
PTR(concat_xs, "pg_concat", pg_concat(G, 2, NULL, 0))
PTR(concat_entry, "pg_concat", pg_concat(G, 2, (pg_tensor *[]){X, NULL}, 0))
PTR(stack_xs, "pg_stack", pg_stack(G, 2, NULL, 0))
PTR(stack_entry, "pg_stack", pg_stack(G, 2, (pg_tensor *[]){X, NULL}, 0))
PTR(pad, "pg_pad", pg_pad(G, NULL, 0, 1, 1, 0))
PTR(rotate_pairs_t, "pg_rotate_pairs", pg_rotate_pairs(G, NULL, ROT, ROT, false))
PTR(rotate_pairs_cos, "pg_rotate_pairs", pg_rotate_pairs(G, Q, NULL, ROT, false))
PTR(rotate_pairs_sin, "pg_rotate_pairs", pg_rotate_pairs(G, Q, ROT, NULL, false))
PTR(rel_shift, "pg_rel_shift", pg_rel_shift(G, NULL, 2))
PTR(split_heads, "pg_split_heads", pg_split_heads(G, NULL, 0, 1, 1))
PTR(merge_heads, "pg_merge_heads", pg_merge_heads(G, NULL))
PTR(gather_x, "pg_gather", pg_gather(G, NULL, 0, IDX))
PTR(gather_index, "pg_gather", pg_gather(G, X, 0, NULL))
PTR(gather_lerp_z, "pg_gather_lerp", pg_gather_lerp(G, NULL, X))
PTR(gather_lerp_p, "pg_gather_lerp", pg_gather_lerp(G, X, NULL))
PTR(cope_interp_logits, "pg_cope_interp", pg_cope_interp(G, NULL, Q, NULL, true, 1, 1))
PTR(cope_interp_z, "pg_cope_interp", pg_cope_interp(G, Q, NULL, NULL, true, 1, 1))
PTR(index_select_x, "pg_index_select", pg_index_select(G, NULL, 0, TOK))
PTR(index_select_index, "pg_index_select", pg_index_select(G, X, 0, NULL))
PTR(embedding_table, "pg_embedding", pg_embedding(G, NULL, IDX))
PTR(embedding_ids, "pg_embedding", pg_embedding(G, X, NULL))
PTR(scatter_add_x, "pg_scatter_add", pg_scatter_add(G, NULL, 0, IDX, Y))
PTR(scatter_add_index, "pg_scatter_add", pg_scatter_add(G, X, 0, NULL, Y))
PTR(scatter_add_src, "pg_scatter_add", pg_scatter_add(G, X, 0, IDX, NULL))
PTR(cross_entropy_logits, "pg_cross_entropy", pg_cross_entropy(G, NULL, TOK, -100, 0))
PTR(cross_entropy_targets, "pg_cross_entropy", pg_cross_entropy(G, X, NULL, -100, 0))
PTR(dropout_x, "pg_dropout", pg_dropout(G, NULL, 0.5, true, &RNG))
PTR(dropout_r, "pg_dropout", pg_dropout(G, X, 0.5, true, NULL))
PTR(flash_q, "pg_flash_attention", pg_flash_attention(G, NULL, Q, Q, NULL))
PTR(flash_k, "pg_flash_attention", pg_flash_attention(G, Q, NULL, Q, NULL))
PTR(flash_v, "pg_flash_attention", pg_flash_attention(G, Q, Q, NULL, NULL))

/* ---- nn/module.h ---------------------------------------------------------------------------- */
#undef SECTION
#define SECTION "module"

VOID(module_init_m, "pg_module_init", pg_module_init(NULL, "T", NULL))
CASE(module_init_type)
{
    pg_module m;
    pg_clear_error();
    pg_module_init(&m, NULL, NULL);
    expect_error("pg_module_init", "pg_module_init(&m, NULL, NULL)");
    cr_assert_not_null(m.type, "the module is still usable");
}
PTR(module_alloc_type, "pg_module_alloc", pg_module_alloc(sizeof(pg_module), NULL, NULL, "f"))
PTR(module_alloc_fn, "pg_module_alloc", pg_module_alloc(sizeof(pg_module), "T", NULL, NULL))
PTR(module_new_container_type, "pg_module_new_container", pg_module_new_container(NULL, "f"))
PTR(module_new_container_fn, "pg_module_new_container", pg_module_new_container("T", NULL))
PTR(module_new_param_m, "pg_module_new_param", pg_module_new_param(NULL, "w", PG_F64, 2, S23))
PTR(module_new_param_name, "pg_module_new_param", pg_module_new_param(mod(), NULL, PG_F64, 2, S23))
PTR(module_new_param_shape, "pg_module_new_param", pg_module_new_param(mod(), "w", PG_F64, 2, NULL))
NUM(module_add_param_m, "pg_module_add_param", pg_module_add_param(NULL, "w", X, false), -1)
NUM(module_add_param_name, "pg_module_add_param", pg_module_add_param(mod(), NULL, X, false), -1)
NUM(module_add_param_t, "pg_module_add_param", pg_module_add_param(mod(), "w", NULL, false), -1)
NUM(module_add_child_m, "pg_module_add_child", pg_module_add_child(NULL, "c", &pg_dropout_new(0)->base), -1)
NUM(module_add_child_name, "pg_module_add_child", pg_module_add_child(mod(), NULL, &pg_dropout_new(0)->base), -1)
NUM(module_add_child_child, "pg_module_add_child", pg_module_add_child(mod(), "c", NULL), -1)
NOOP(module_free, pg_module_free(NULL))
NUM(tensor_list_push_l, "pg_tensor_list_push", pg_tensor_list_push(NULL, "a", X), -1)
NUM(tensor_list_push_name, "pg_tensor_list_push", pg_tensor_list_push(&LIST, NULL, X), -1)
NUM(tensor_list_find_l, "pg_tensor_list_find", pg_tensor_list_find(NULL, "x"), -1)
NUM(tensor_list_find_name, "pg_tensor_list_find", pg_tensor_list_find(&LIST, NULL), -1)
NOOP(tensor_list_free, pg_tensor_list_free(NULL))
NOOP(tensor_list_free_all, pg_tensor_list_free_all(NULL))
CASE(module_parameters)
{
    pg_clear_error();
    pg_tensor_list l = pg_module_parameters(NULL);
    cr_assert_eq(l.n, 0);
    cr_assert_null(l.names);
    expect_error("pg_module_parameters", "pg_module_parameters(NULL)");
}
PTR(module_find_param_m, "pg_module_find_param", pg_module_find_param(NULL, "weight"))
PTR(module_find_param_name, "pg_module_find_param", pg_module_find_param(mod(), NULL))
NUM(module_num_elements, "pg_module_num_elements", pg_module_num_elements(NULL), 0) /* documented 0 */
VOID(module_zero_grad, "pg_module_zero_grad", pg_module_zero_grad(NULL))
VOID(module_train, "pg_module_train", pg_module_train(NULL, true))
PTR(module_new_param_ex_m, "pg_module_new_param_ex", pg_module_new_param_ex(NULL, "w", PG_F64, 2, S23, 0))
PTR(module_new_param_ex_name, "pg_module_new_param_ex", pg_module_new_param_ex(mod(), NULL, PG_F64, 2, S23, 0))
PTR(module_new_param_ex_shape, "pg_module_new_param_ex", pg_module_new_param_ex(mod(), "w", PG_F64, 2, NULL, 0))
NUM(module_set_no_decay_m, "pg_module_param_set_no_decay", pg_module_param_set_no_decay(NULL, "w", true), -1)
NUM(module_set_no_decay_name, "pg_module_param_set_no_decay", pg_module_param_set_no_decay(mod(), NULL, true), -1)
NUM(module_no_decay_m, "pg_module_param_no_decay", pg_module_param_no_decay(NULL, "w"), 0)
NUM(module_no_decay_name, "pg_module_param_no_decay", pg_module_param_no_decay(mod(), NULL), 0)
PTR(nn_scratch_begin, "pg_nn_scratch_begin", pg_nn_scratch_begin(NULL))
VALUE(nn_scratch_end, pg_nn_scratch_end(NULL, NULL), 0) /* documented: begin failed, its error stands */
#define INIT(name, ...)                                                                                        \
    NUM(name##_t, "pg_" #name, pg_##name(NULL, &RNG, __VA_ARGS__), -1)                                        \
    NUM(name##_r, "pg_" #name, pg_##name(Y, NULL, __VA_ARGS__), -1)
INIT(init_uniform, 0, 1)
INIT(init_normal, 0, 1)
INIT(init_trunc_normal, 0, 1, -2, 2)
INIT(init_xavier_uniform, 1)
INIT(init_xavier_normal, 1)
INIT(init_kaiming_uniform, 0, PG_FAN_IN)
INIT(init_kaiming_normal, 0, PG_FAN_IN)
#undef INIT
static int64_t FAN[2];
NUM(init_fans_t, "pg_init_fans", pg_init_fans(NULL, &FAN[0], &FAN[1]), -1)
NUM(init_fans_in, "pg_init_fans", pg_init_fans(Y, NULL, &FAN[1]), -1)
NUM(init_fans_out, "pg_init_fans", pg_init_fans(Y, &FAN[0], NULL), -1)
PTR(linear_new_r, "pg_linear_new", pg_linear_new(3, 3, true, PG_F64, NULL))
PTR(linear_forward_l, "pg_linear_forward", pg_linear_forward(G, NULL, X))
PTR(linear_forward_x, "pg_linear_forward", pg_linear_forward(G, lin(), NULL))
PTR(embed_new_r, "pg_embed_new", pg_embed_new(4, 3, PG_F64, NULL))
PTR(embed_forward_e, "pg_embed_forward", pg_embed_forward(G, NULL, IDX))
PTR(embed_forward_ids, "pg_embed_forward", pg_embed_forward(G, emb(), NULL))
PTR(layernorm_forward_n, "pg_layernorm_forward", pg_layernorm_forward(G, NULL, X))
PTR(layernorm_forward_x, "pg_layernorm_forward", pg_layernorm_forward(G, lnorm(), NULL))
PTR(rmsnorm_forward_n, "pg_rmsnorm_forward", pg_rmsnorm_forward(G, NULL, X))
PTR(rmsnorm_forward_x, "pg_rmsnorm_forward", pg_rmsnorm_forward(G, rnorm(), NULL))
PTR(dropout_forward_d, "pg_dropout_forward", pg_dropout_forward(G, NULL, X, &RNG))
PTR(dropout_forward_x, "pg_dropout_forward", pg_dropout_forward(G, drop(), NULL, &RNG))
PTR(dropout_forward_r, "pg_dropout_forward", pg_dropout_forward(G, drop(), X, NULL))
PTR(feedforward_new_r, "pg_feedforward_new", pg_feedforward_new(3, 6, PG_FF_MLP, PG_ACT_GELU, 0, true, PG_F64, NULL))
PTR(feedforward_forward_f, "pg_feedforward_forward", pg_feedforward_forward(G, NULL, X, &RNG))
PTR(feedforward_forward_x, "pg_feedforward_forward", pg_feedforward_forward(G, ff(), NULL, &RNG))
PTR(activation_apply, "pg_activation_apply", pg_activation_apply(G, PG_ACT_RELU, NULL))

/* ---- formats/safetensors.h, nn/state_dict.h -------------------------------------------------------- */
#undef SECTION
#define SECTION "safetensors"

static const char *const KEYS[1] = {"k"};
NUM(safetensors_save_path, "pg_safetensors_save", pg_safetensors_save(NULL, &LIST, 0, NULL, NULL), -1)
NUM(safetensors_save_list, "pg_safetensors_save", pg_safetensors_save("/tmp/pg_null.st", NULL, 0, NULL, NULL), -1)
NUM(safetensors_save_keys, "pg_safetensors_save", pg_safetensors_save("/tmp/pg_null.st", &LIST, 1, NULL, KEYS), -1)
NUM(safetensors_save_values, "pg_safetensors_save", pg_safetensors_save("/tmp/pg_null.st", &LIST, 1, KEYS, NULL),
    -1)
NUM(safetensors_load_path, "pg_safetensors_load", pg_safetensors_load(NULL, &LIST), -1)
NUM(safetensors_load_out, "pg_safetensors_load", pg_safetensors_load("/tmp/pg_null.st", NULL), -1)
NUM(safetensors_parse_data, "pg_safetensors_parse", pg_safetensors_parse(NULL, 16, &LIST), -1)
NUM(safetensors_parse_out, "pg_safetensors_parse", pg_safetensors_parse(PX, 4, NULL), -1)
static int N_META;
static char **MK, **MV;
NUM(safetensors_load_meta_path, "pg_safetensors_load_meta", pg_safetensors_load_meta(NULL, &LIST, &N_META, &MK, &MV),
    -1)
NUM(safetensors_load_meta_out, "pg_safetensors_load_meta",
    pg_safetensors_load_meta("/tmp/pg_null.st", NULL, &N_META, &MK, &MV), -1)
NUM(safetensors_load_meta_n, "pg_safetensors_load_meta",
    pg_safetensors_load_meta("/tmp/pg_null.st", &LIST, NULL, &MK, &MV), -1)
NUM(safetensors_load_meta_keys, "pg_safetensors_load_meta",
    pg_safetensors_load_meta("/tmp/pg_null.st", &LIST, &N_META, NULL, &MV), -1)
NUM(safetensors_load_meta_values, "pg_safetensors_load_meta",
    pg_safetensors_load_meta("/tmp/pg_null.st", &LIST, &N_META, &MK, NULL), -1)
NUM(module_save_m, "pg_module_save", pg_module_save(NULL, "/tmp/pg_null.st"), -1)
NUM(module_save_path, "pg_module_save", pg_module_save(mod(), NULL), -1)
NOOP(load_report_free, pg_load_report_free(NULL))
NUM(module_load_state_m, "pg_module_load_state", pg_module_load_state(NULL, &LIST, false, NULL), -1)
NUM(module_load_state_state, "pg_module_load_state", pg_module_load_state(mod(), NULL, false, NULL), -1)
NUM(module_load_m, "pg_module_load", pg_module_load(NULL, "/tmp/pg_null.st", false, NULL), -1)
NUM(module_load_path, "pg_module_load", pg_module_load(mod(), NULL, false, NULL), -1)

/* ---- nn/state_map.h --------------------------------------------------------------------------------- */
#undef SECTION
#define SECTION "state_map"

/* A call on a fresh map M (freed after the call): -1 and an error naming fn. */
#define MAP_NUM(id, fn, expr)                                                                                  \
    CASE(id)                                                                                                   \
    {                                                                                                          \
        pg_state_map *M = pg_state_map_new("t");                                                               \
        pg_tensor_list out_ = {0, 0, NULL, NULL};                                                              \
        (void)out_;                                                                                            \
        pg_clear_error();                                                                                      \
        int r_ = (expr);                                                                                       \
        pg_state_map_free(M);                                                                                  \
        cr_assert_eq(r_, -1, "%s should fail", #expr);                                                         \
        expect_error(fn, #expr);                                                                               \
    }
static const pg_map_entry MAP_E = {PG_MAP_RENAME, "weight", 1, {"w"}, {0}, 0, 0};
NOOP(state_map_free, pg_state_map_free(NULL))
PTR(state_map_nanogpt, "pg_state_map_nanogpt", pg_state_map_nanogpt(NULL))
PTR(state_map_xtransformers, "pg_state_map_xtransformers", pg_state_map_xtransformers(NULL))
NUM(lm_config_xtransformers, "pg_lm_config_xtransformers", pg_lm_config_xtransformers(NULL).dim, 0)
static pg_xt_config XT;
static char XT_K[2][PG_XT_KEY_MAX], XT_V[2][PG_XT_VALUE_MAX];
NUM(xt_buffers_c, "pg_xt_buffers", pg_xt_buffers(NULL, &LIST), -1)
NUM(xt_config_set_x, "pg_xt_config_set", pg_xt_config_set(NULL, "heads", "4"), -1)
NUM(xt_config_set_key, "pg_xt_config_set", pg_xt_config_set(&XT, NULL, "4"), -1)
NUM(xt_config_set_value, "pg_xt_config_set", pg_xt_config_set(&XT, "heads", NULL), -1)
NUM(xt_config_write_x, "pg_xt_config_write", pg_xt_config_write(NULL, 2, XT_K, XT_V), -1)
NUM(xt_config_write_keys, "pg_xt_config_write", pg_xt_config_write(&XT, 2, NULL, XT_V), -1)
NUM(xt_config_write_values, "pg_xt_config_write", pg_xt_config_write(&XT, 2, XT_K, NULL), -1)
MAP_NUM(state_map_add_m, "pg_state_map_add", pg_state_map_add(NULL, &MAP_E))
MAP_NUM(state_map_add_e, "pg_state_map_add", pg_state_map_add(M, NULL))
MAP_NUM(state_map_rename_m, "pg_state_map_rename", pg_state_map_rename(NULL, "a", "b"))
MAP_NUM(state_map_rename_ours, "pg_state_map_rename", pg_state_map_rename(M, NULL, "b"))
MAP_NUM(state_map_rename_theirs, "pg_state_map_rename", pg_state_map_rename(M, "a", NULL))
MAP_NUM(state_map_drop_m, "pg_state_map_drop", pg_state_map_drop(NULL, "b"))
MAP_NUM(state_map_drop_theirs, "pg_state_map_drop", pg_state_map_drop(M, NULL))
MAP_NUM(state_map_to_theirs_map, "pg_state_map_to_theirs", pg_state_map_to_theirs(NULL, &LIST, &out_))
MAP_NUM(state_map_to_theirs_ours, "pg_state_map_to_theirs", pg_state_map_to_theirs(M, NULL, &out_))
MAP_NUM(state_map_to_theirs_out, "pg_state_map_to_theirs", pg_state_map_to_theirs(M, &LIST, NULL))
MAP_NUM(module_load_state_mapped_m, "pg_module_load_state_mapped", pg_module_load_state_mapped(NULL, M, &LIST))
MAP_NUM(module_load_state_mapped_map, "pg_module_load_state_mapped", pg_module_load_state_mapped(mod(), NULL, &LIST))
MAP_NUM(module_load_state_mapped_state, "pg_module_load_state_mapped", pg_module_load_state_mapped(mod(), M, NULL))
MAP_NUM(module_load_mapped_m, "pg_module_load_mapped", pg_module_load_mapped(NULL, M, "/tmp/pg_null.st"))
MAP_NUM(module_load_mapped_map, "pg_module_load_mapped", pg_module_load_mapped(mod(), NULL, "/tmp/pg_null.st"))
MAP_NUM(module_load_mapped_path, "pg_module_load_mapped", pg_module_load_mapped(mod(), M, NULL))
MAP_NUM(module_save_mapped_m, "pg_module_save_mapped", pg_module_save_mapped(NULL, M, "/tmp/pg_null.st", 0, NULL, NULL))
MAP_NUM(module_save_mapped_map, "pg_module_save_mapped",
        pg_module_save_mapped(mod(), NULL, "/tmp/pg_null.st", 0, NULL, NULL))
MAP_NUM(module_save_mapped_path, "pg_module_save_mapped", pg_module_save_mapped(mod(), M, NULL, 0, NULL, NULL))

/* ---- nn/posmod.h ------------------------------------------------------------------------------------ */
#undef SECTION
#define SECTION "posmod"

static const pg_posmod_ops NO_OPS = {0};
VOID(posmod_init_m, "pg_posmod_init", pg_posmod_init(NULL, "P", &NO_OPS, NULL))
CASE(posmod_init_ops)
{
    pg_posmod p;
    pg_clear_error();
    pg_posmod_init(&p, "P", NULL, NULL);
    expect_error("pg_posmod_init", "pg_posmod_init(&p, \"P\", NULL, NULL)");
    cr_assert_not_null(p.ops, "ops is never NULL");
}
PTR(posmod_alloc_type, "pg_posmod_alloc", pg_posmod_alloc(sizeof(pg_posmod), NULL, &NO_OPS, NULL, "f"))
PTR(posmod_alloc_ops, "pg_posmod_alloc", pg_posmod_alloc(sizeof(pg_posmod), "P", NULL, NULL, "f"))
PTR(posmod_alloc_fn, "pg_posmod_alloc", pg_posmod_alloc(sizeof(pg_posmod), "P", &NO_OPS, NULL, NULL))
NOOP(posmod_free_list, pg_posmod_free_list(NULL, 0, 2))
NUM(posmod_adopt_parent, "pg_posmod_adopt", pg_posmod_adopt(NULL, (pg_posmod *[]){pg_alibi_new(2, NULL, PG_F64)}, 1),
    -1)
NUM(posmod_adopt_pos, "pg_posmod_adopt", pg_posmod_adopt(mod(), NULL, 1), -1)
NUM(posmod_adopt_entry, "pg_posmod_adopt", pg_posmod_adopt(mod(), (pg_posmod *[]){NULL}, 1), -1)
PTR(posmod_apply_x_mods, "pg_posmod_apply_x", pg_posmod_apply_x(G, NULL, 1, XS, NULL, NULL, 0, 0, NULL))
PTR(posmod_apply_x_entry, "pg_posmod_apply_x",
    pg_posmod_apply_x(G, (pg_posmod *[]){NULL}, 1, XS, NULL, NULL, 0, 0, NULL))
PTR(posmod_apply_x_x, "pg_posmod_apply_x",
    pg_posmod_apply_x(G, (pg_posmod *[]){sinus()}, 1, NULL, NULL, NULL, 0, 0, NULL))
PTR(posmod_bias_table_m, "pg_posmod_bias_table", pg_posmod_bias_table(G, NULL, &CTX))
PTR(posmod_bias_table_c, "pg_posmod_bias_table", pg_posmod_bias_table(G, alibi(), NULL))
PTR(posmod_x_table, "pg_posmod_x_table", pg_posmod_x_table(G, NULL, 3, 8, NULL))
NUM(pos_ctx_check_fn, "pg_pos_ctx_check", pg_pos_ctx_check(G, NULL, &CTX), -1)
NUM(pos_ctx_check_c, "my_fn", pg_pos_ctx_check(G, "my_fn", NULL), -1)
PTR(pos_delta, "pg_pos_delta", pg_pos_delta(G, NULL, PG_F64))
PTR(pos_pad_bias, "pg_pos_pad_bias", pg_pos_pad_bias(G, NULL, 3, 3))
static bool OK;
PTR(pos_div_param_m, "pg_pos_div_param", pg_pos_div_param(NULL, (pg_pos_divide){2, true}, PG_F64, &OK))
PTR(pos_div_param_ok, "pg_pos_div_param", pg_pos_div_param(alibi(), (pg_pos_divide){2, true}, PG_F64, NULL))
PTR(pos_divide_by, "pg_pos_divide_by", pg_pos_divide_by(G, NULL, NULL, 2))
NUM(posmod_heads_fn, "pg_posmod_heads", pg_posmod_heads(NULL, "X", 0, &ARGS), 0)
NUM(posmod_heads_what, "my_fn", pg_posmod_heads("my_fn", NULL, 0, &ARGS), 0)
NUM(posmod_heads_a, "my_fn", pg_posmod_heads("my_fn", "X", 0, NULL), 0)
CASE(posmod_lookup)
{
    pg_clear_error();
    cr_assert_null(pg_posmod_lookup(NULL));
    expect_error("pg_posmod_lookup", "pg_posmod_lookup(NULL)");
}
NUM(posmod_kinds, "pg_posmod_kinds", pg_posmod_kinds(NULL, 4), -1)
PTR(posmod_info, "pg_posmod_info", pg_posmod_info(NUL_STR))
PTR(posmod_info_at, "pg_posmod_info_at", pg_posmod_info_at(-1))
PTR(posmod_from_spec_s, "pg_posmod_from_spec", pg_posmod_from_spec(NULL, &ARGS))
PTR(posmod_from_spec_a, "pg_posmod_from_spec", pg_posmod_from_spec(&(pg_posmod_spec){"alibi", NULL, NULL}, NULL))

/* ---- the schemes ------------------------------------------------------------------------------------ */
#undef SECTION
#define SECTION "schemes"

#define MAKE(kind) PTR(posmod_make_##kind, "pg_posmod_make_" #kind, pg_posmod_make_##kind(NULL))
MAKE(sinusoidal)
MAKE(learned)
MAKE(continuous)
MAKE(rotary)
MAKE(xpos)
MAKE(alibi)
MAKE(dpb)
MAKE(xl)
MAKE(t5)
MAKE(abs1d)
MAKE(rel1d)
MAKE(rel2d)
#undef MAKE
CASE(posmod_make_every_registered_kind) /* the list above, and any kind registered since */
{
    const pg_posmod_kind_info *k;
    for (int i = 0; (k = pg_posmod_info_at(i)); i++) {
        char fn[64];
        snprintf(fn, sizeof fn, "pg_posmod_make_%s", k->kind);
        pg_clear_error();
        cr_assert_null(k->make(NULL), "%s(NULL) should fail", fn);
        expect_error(fn, fn);
    }
}
PTR(dpb_new_r, "pg_dpb_new", pg_dpb_new(8, 2, NULL, PG_F64, NULL))
PTR(xl_new_r, "pg_xl_new", pg_xl_new(2, 4, NULL, PG_F64, NULL))
PTR(t5_new_r, "pg_t5_new", pg_t5_new(2, 4, NULL, PG_F64, NULL))
PTR(abs1d_new_r, "pg_abs1d_new", pg_abs1d_new(8, 4, PG_F64, NULL))
PTR(rel1d_new_r, "pg_rel1d_new", pg_rel1d_new(8, 4, 0, PG_F64, NULL))
PTR(rel2d_new_r, "pg_rel2d_new", pg_rel2d_new(2, 2, 4, 0, PG_F64, NULL))
CASE(learned_new_r) /* documented: a NULL generator means seed 0 */
{
    keep(pg_learned_new(8, 4, NULL, PG_F64, NULL));
    keep(pg_continuous_new(8, NULL, PG_F64, NULL));
}
PTR(pos_abs_add_fn, "pg_pos_abs_add", pg_pos_abs_add(G, NULL, XS, XS, &CTX, false))
PTR(pos_abs_add_x, "my_fn", pg_pos_abs_add(G, "my_fn", NULL, XS, &CTX, false))
PTR(pos_abs_add_pe, "my_fn", pg_pos_abs_add(G, "my_fn", XS, NULL, &CTX, false))
PTR(pos_abs_add_c, "my_fn", pg_pos_abs_add(G, "my_fn", XS, XS, NULL, false))
PTR(pos_abs_positions_fn, "pg_pos_abs_positions", pg_pos_abs_positions(G, NULL, XS, &CTX))
PTR(pos_abs_positions_x, "my_fn", pg_pos_abs_positions(G, "my_fn", NULL, &CTX))
PTR(pos_abs_positions_c, "my_fn", pg_pos_abs_positions(G, "my_fn", XS, NULL))
PTR(rotary_apply_m, "pg_rotary_apply", pg_rotary_apply(G, NULL, Q, NULL, false, 0))
PTR(rotary_apply_t, "pg_rotary_apply", pg_rotary_apply(G, rotary(), NULL, NULL, false, 0))
PTR(rotary_angles, "pg_rotary_angles", pg_rotary_angles(G, NULL, 3, NULL))
NUM(alibi_slopes, "pg_alibi_slopes", pg_alibi_slopes(4, NULL), -1)
PTR(dpb_mlp_m, "pg_dpb_mlp", pg_dpb_mlp(G, NULL, X))
PTR(dpb_mlp_r, "pg_dpb_mlp", pg_dpb_mlp(G, dpb(), NULL))
PTR(dpb_bias_ij, "pg_dpb_bias_ij", pg_dpb_bias_ij(G, NULL, 2, 2))
PTR(xl_rel_encoding_m, "pg_xl_rel_encoding", pg_xl_rel_encoding(G, NULL, X))
PTR(xl_rel_encoding_d, "pg_xl_rel_encoding", pg_xl_rel_encoding(G, xl(), NULL))
PTR(posrel_table, "pg_posrel_table", pg_posrel_table(NULL, 0))
PTR(posrel_logits_m, "pg_posrel_logits", pg_posrel_logits(G, NULL, Q, &CTX))
PTR(posrel_logits_q, "pg_posrel_logits", pg_posrel_logits(G, rel1d(), NULL, &CTX))
PTR(posrel_logits_c, "pg_posrel_logits", pg_posrel_logits(G, rel1d(), Q, NULL))
PTR(rel_to_abs, "pg_rel_to_abs", pg_rel_to_abs(G, NULL))

/* ---- nn/attention.h, transformer.h, local_attention.h ------------------------------------------------- */
#undef SECTION
#define SECTION "attention"

PTR(attention_q, "pg_attention", pg_attention(G, NULL, Q, Q, NULL))
PTR(attention_k, "pg_attention", pg_attention(G, Q, NULL, Q, NULL))
PTR(attention_v, "pg_attention", pg_attention(G, Q, Q, NULL, NULL))
/* nn/attention.c: fn NULL with a NULL args struct passes (returns 0) */
NUM(attn_args_check_fn, "pg_attn_args_check", pg_attn_args_check(G, NULL, NULL, true, 1, 2, 3, 3, PG_F64), -1)
PTR(mha_new_c, "pg_mha_new", pg_mha_new(NULL, NULL, 0, &RNG))
PTR(mha_new_pos, "pg_mha_new", pg_mha_new(&(pg_mha_config){.dim = 8, .heads = 2, .dtype = PG_F64}, NULL, 1, &RNG))
PTR(mha_new_r, "pg_mha_new", pg_mha_new(&(pg_mha_config){.dim = 8, .heads = 2, .dtype = PG_F64}, NULL, 0, NULL))
PTR(mha_forward_m, "pg_mha_forward", pg_mha_forward(G, NULL, XS, NULL, NULL))
PTR(mha_forward_x, "pg_mha_forward", pg_mha_forward(G, mha(), NULL, NULL, NULL))
PTR(mha_attention_weights_m, "pg_mha_attention_weights", pg_mha_attention_weights(G, NULL, XS, NULL, NULL))
PTR(mha_attention_weights_x, "pg_mha_attention_weights", pg_mha_attention_weights(G, mha(), NULL, NULL, NULL))
PTR(block_new_c, "pg_block_new", pg_block_new(NULL, NULL, 0, &RNG))
PTR(block_new_pos, "pg_block_new",
    pg_block_new(&(pg_block_config){.dim = 8, .heads = 2, .dtype = PG_F64}, NULL, 1, &RNG))
PTR(block_new_r, "pg_block_new", pg_block_new(&(pg_block_config){.dim = 8, .heads = 2, .dtype = PG_F64}, NULL, 0, NULL))
PTR(block_forward_b, "pg_block_forward", pg_block_forward(G, NULL, XS, NULL))
PTR(block_forward_x, "pg_block_forward", pg_block_forward(G, block(), NULL, NULL))
PTR(lm_new, "pg_lm_new", pg_lm_new(NULL))
PTR(lm_forward_lm, "pg_lm_forward", pg_lm_forward(G, NULL, TOK, NULL))
PTR(lm_forward_ids, "pg_lm_forward", pg_lm_forward(G, lm(), NULL, NULL))
PTR(lm_loss_lm, "pg_lm_loss", pg_lm_loss(G, NULL, TOK, TOK, NULL))
PTR(lm_loss_ids, "pg_lm_loss", pg_lm_loss(G, lm(), NULL, TOK, NULL))
PTR(lm_loss_targets, "pg_lm_loss", pg_lm_loss(G, lm(), TOK, NULL, NULL))
static int64_t OUT2[2];
NUM(sample_logits_logits, "pg_sample_logits", pg_sample_logits(NULL, 1.0, 0, &RNG, OUT2), -1)
NUM(sample_logits_r, "pg_sample_logits", pg_sample_logits(X, 1.0, 0, NULL, OUT2), -1)
NUM(sample_logits_out, "pg_sample_logits", pg_sample_logits(X, 1.0, 0, &RNG, NULL), -1)
PTR(lm_generate_lm, "pg_lm_generate", pg_lm_generate(NULL, TOK, 2, 1.0, 0, &RNG))
PTR(lm_generate_prompt, "pg_lm_generate", pg_lm_generate(lm(), NULL, 2, 1.0, 0, &RNG))
PTR(lm_generate_r, "pg_lm_generate", pg_lm_generate(lm(), TOK, 2, 1.0, 0, NULL))
/* nn/sample.h options (issue 15): NULL options are the defaults, so only logits / out / lm / prompt */
NUM(sample_logits_ex_logits, "pg_sample_logits_ex", pg_sample_logits_ex(NULL, NULL, OUT2), -1)
NUM(sample_logits_ex_out, "pg_sample_logits_ex", pg_sample_logits_ex(X, NULL, NULL), -1)
PTR(lm_generate_ex_lm, "pg_lm_generate_ex", pg_lm_generate_ex(NULL, TOK, NULL))
PTR(lm_generate_ex_prompt, "pg_lm_generate_ex", pg_lm_generate_ex(lm(), NULL, NULL))
PTR(local_attention_new_c, "pg_local_attention_new", pg_local_attention_new(NULL, NULL, 0))
PTR(local_attention_new_pos, "pg_local_attention_new",
    pg_local_attention_new(&(pg_local_attention_config){.window_size = 2, .dtype = PG_F64}, NULL, 1))
PTR(local_attention_forward_m, "pg_local_attention_forward", pg_local_attention_forward(G, NULL, Q, Q, Q, NULL))
PTR(local_attention_forward_q, "pg_local_attention_forward", pg_local_attention_forward(G, local(), NULL, Q, Q, NULL))
PTR(local_attention_forward_k, "pg_local_attention_forward", pg_local_attention_forward(G, local(), Q, NULL, Q, NULL))
PTR(local_attention_forward_v, "pg_local_attention_forward", pg_local_attention_forward(G, local(), Q, Q, NULL, NULL))

/* ---- optim/optim.h, checkpoint.h --------------------------------------------------------------------- */
#undef SECTION
#define SECTION "optim"

NOOP(optim_free, pg_optim_free(NULL))
NUM(optim_add_group_o, "pg_optim_add_group", pg_optim_add_group(NULL, &X, 1, NULL), -1)
NUM(optim_add_group_params, "pg_optim_add_group", pg_optim_add_group(opt(), NULL, 1, NULL), -1)
NUM(optim_add_group_lr, "pg_optim_add_group_lr", pg_optim_add_group_lr(NULL, &X, 1, 0.1, 0), -1)
NUM(optim_step, "pg_optim_step", pg_optim_step(NULL), -1)
/* optim/optim.c: these three return without recording an error */
VOID(optim_zero_grad, "pg_optim_zero_grad", pg_optim_zero_grad(NULL))
NUM(no_decay_default_name, "pg_no_decay_default", pg_no_decay_default(NULL, X, NULL), 0)
NUM(no_decay_default_t, "pg_no_decay_default", pg_no_decay_default("w", NULL, NULL), 0)
static pg_tensor_list D1, D2;
NUM(split_decay_params, "pg_split_decay", pg_split_decay(NULL, pg_no_decay_default, NULL, &D1, &D2), -1)
NUM(split_decay_pred, "pg_split_decay", pg_split_decay(&LIST, NULL, NULL, &D1, &D2), -1)
NUM(split_decay_decay, "pg_split_decay", pg_split_decay(&LIST, pg_no_decay_default, NULL, NULL, &D2), -1)
NUM(split_decay_no_decay, "pg_split_decay", pg_split_decay(&LIST, pg_no_decay_default, NULL, &D1, NULL), -1)
NUM(optim_add_decay_groups_o, "pg_optim_add_decay_groups",
    pg_optim_add_decay_groups(NULL, &LIST, pg_no_decay_default, NULL, 0.1, 0.1), -1)
/* optim/optim.c: the error names pg_split_decay */
NUM(optim_add_decay_groups_params, "pg_optim_add_decay_groups",
     pg_optim_add_decay_groups(opt(), NULL, pg_no_decay_default, NULL, 0.1, 0.1), -1)
NUM(clip_grad_norm, "pg_clip_grad_norm", pg_clip_grad_norm(NULL, 1, 1.0), -1)
NUM(clip_grad_norm_entry, "pg_clip_grad_norm", pg_clip_grad_norm((pg_tensor *[]){NULL}, 1, 1.0), -1)
/* optim/clip.c: the error names pg_clip_grad_norm */
NUM(clip_grad_norm_p, "pg_clip_grad_norm_p", pg_clip_grad_norm_p(NULL, 1, 1.0, 2.0), -1)
NUM(grad_norm, "pg_grad_norm", pg_grad_norm(NULL, 1, 2.0), -1)
NUM(clip_grad_value, "pg_clip_grad_value", pg_clip_grad_value(NULL, 1, 1.0), -1)
PTR(schedule_new, "pg_schedule_new", pg_schedule_new(NULL, pg_sched_constant()))
NOOP(schedule_free, pg_schedule_free(NULL))
NUM(schedule_step, "pg_schedule_step", pg_schedule_step(NULL), -1)
NUM(schedule_set_step, "pg_schedule_set_step", pg_schedule_set_step(NULL, 0), -1)
NUM(schedule_get_step, "pg_schedule_get_step", pg_schedule_get_step(NULL), -1)
NUM(optim_state_export_o, "pg_optim_state_export", pg_optim_state_export(NULL, NULL, &LIST), -1)
NUM(optim_state_export_out, "pg_optim_state_export", pg_optim_state_export(opt(), NULL, NULL), -1)
NUM(optim_state_import_o, "pg_optim_state_import", pg_optim_state_import(NULL, NULL, &LIST), -1)
NUM(optim_state_import_state, "pg_optim_state_import", pg_optim_state_import(opt(), NULL, NULL), -1)
NUM(checkpoint_save_path, "pg_checkpoint_save", pg_checkpoint_save(NULL, mod(), NULL, NULL, NULL), -1)
NUM(checkpoint_load_path, "pg_checkpoint_load", pg_checkpoint_load(NULL, mod(), NULL, NULL, NULL), -1)

/* ---- formats/plot.h ------------------------------------------------------------------------ */
#undef SECTION
#define SECTION "plot"

static const pg_rgb INK3 = {0, 0, 0};
static const double Y3[3] = {1, 2, 3};
#define SERIES3 (&(pg_series){.label = "s", .y = Y3, .n = 3})
NUM(canvas_init, "pg_canvas_init", pg_canvas_init(NULL, 4, 4), -1)
NOOP(canvas_free, pg_canvas_free(NULL))
NUM(canvas_write_png_c, "pg_canvas_write_png", pg_canvas_write_png(NULL, "/tmp/pg_null_args.png"), -1)
VOID(canvas_get, "pg_canvas_get", (void)pg_canvas_get(NULL, 0, 0))
VOID(canvas_fill_rect, "pg_canvas_fill_rect", pg_canvas_fill_rect(NULL, 0, 0, 2, 2, INK3))
VOID(canvas_line, "pg_canvas_line", pg_canvas_line(NULL, 0, 0, 2, 2, 1, INK3))
VOID(text_draw_c, "pg_text_draw", pg_text_draw(NULL, 0, 0, "a", 1, INK3))
VOID(text_draw_up_c, "pg_text_draw_up", pg_text_draw_up(NULL, 0, 0, "a", 1, INK3))
VALUE(text_width, pg_text_width(NULL, 1), 0) /* no text: no width */
VALUE(text_height, pg_text_height(NULL, 1), 0)
CASE(plot_canvas_strings) /* a live canvas with a NULL string or path */
{
    pg_canvas c;
    cr_assert_eq(pg_canvas_init(&c, 4, 4), 0);
    pg_clear_error();
    pg_text_draw(&c, 0, 0, NUL_STR, 1, INK3);
    expect_error("pg_text_draw", "pg_text_draw(&c, 0, 0, NULL, 1, INK3)");
    pg_text_draw_up(&c, 0, 0, NUL_STR, 1, INK3);
    expect_error("pg_text_draw_up", "pg_text_draw_up(&c, 0, 0, NULL, 1, INK3)");
    cr_assert_eq(pg_canvas_write_png(&c, NULL), -1);
    expect_error("pg_canvas_write_png", "pg_canvas_write_png(&c, NULL)");
    pg_canvas_free(&c);
}
NUM(plot_heatmaps_canvas_out, "pg_plot_heatmaps", pg_plot_heatmaps_canvas(NULL, X, NULL), -1)
NUM(plot_heatmaps_canvas_maps, "pg_plot_heatmaps", pg_plot_heatmaps_canvas(&(pg_canvas){0}, NULL, NULL), -1)
NUM(plot_heatmaps_path, "pg_plot_heatmaps", pg_plot_heatmaps(NULL, X, NULL), -1)
NUM(plot_heatmaps_maps, "pg_plot_heatmaps", pg_plot_heatmaps("/tmp/pg_null_args.png", NULL, NULL), -1)
NUM(plot_lines_canvas_out, "pg_plot_lines", pg_plot_lines_canvas(NULL, SERIES3, 1, NULL), -1)
NUM(plot_lines_canvas_series, "pg_plot_lines", pg_plot_lines_canvas(&(pg_canvas){0}, NULL, 1, NULL), -1)
NUM(plot_lines_path, "pg_plot_lines", pg_plot_lines(NULL, SERIES3, 1, NULL), -1)
NUM(plot_lines_series, "pg_plot_lines", pg_plot_lines("/tmp/pg_null_args.png", NULL, 1, NULL), -1)
NUM(plot_lines_y, "pg_plot_lines", pg_plot_lines_canvas(&(pg_canvas){0}, &(pg_series){.n = 3}, 1, NULL), -1)

/* ---- nn/kv_cache.h ------------------------------------------------------------------------------ */
#undef SECTION
#define SECTION "kv_cache"

PTR(lm_cache_new, "pg_lm_cache_new", pg_lm_cache_new(NULL, 1, 4))
NOOP(lm_cache_free, pg_lm_cache_free(NULL))
VOID(lm_cache_reset, "pg_lm_cache_reset", pg_lm_cache_reset(NULL))
NUM(lm_cache_len, "pg_lm_cache_len", pg_lm_cache_len(NULL), -1)
NUM(lm_cache_set_rope, "pg_lm_cache_set_rope", pg_lm_cache_set_rope(NULL, PG_LM_CACHE_ROPE_REROTATE), -1)
PTR(lm_cache_prefill_c, "pg_lm_cache_prefill", pg_lm_cache_prefill(G, lm(), NULL, TOK))
PTR(lm_cache_step_c, "pg_lm_cache_step", pg_lm_cache_step(G, lm(), NULL, TOK))
/* calls with a valid cache (batch 1, capacity 4) and one NULL: lm, ids or g (needed: the caller's graph) */
static void cache_call(bool step, int null_at)
{
    pg_lm *m = lm();
    pg_lm_cache *c = pg_lm_cache_new(m, 1, 4);
    cr_assert_not_null(c, "%s", pg_last_error());
    pg_graph *g = null_at == 0 ? NULL : G;
    pg_lm *mm = null_at == 1 ? NULL : m;
    pg_tensor *ids = null_at == 2 ? NULL : TOK;
    pg_clear_error();
    const char *fn = step ? "pg_lm_cache_step" : "pg_lm_cache_prefill";
    pg_tensor *r = step ? pg_lm_cache_step(g, mm, c, ids) : pg_lm_cache_prefill(g, mm, c, ids);
    cr_assert_null(r, "%s with NULL at %d should fail", fn, null_at);
    expect_error(fn, fn);
    pg_lm_cache_free(c);
}
CASE(lm_cache_prefill_g) { cache_call(false, 0); }
CASE(lm_cache_prefill_lm) { cache_call(false, 1); }
CASE(lm_cache_prefill_ids) { cache_call(false, 2); }
CASE(lm_cache_step_g) { cache_call(true, 0); }
CASE(lm_cache_step_lm) { cache_call(true, 1); }
CASE(lm_cache_step_ids) { cache_call(true, 2); }

/* ---- nn/kv_cache.h: left padding ------------------------------------------------------------------------ */
#undef SECTION
#define SECTION "kv_cache_pad"

NUM(lm_cache_set_start_c, "pg_lm_cache_set_start", pg_lm_cache_set_start(NULL, (const int64_t[]){0}), -1)
/* a valid cache (batch 1, capacity 4) and NULL starts */
CASE(lm_cache_set_start_start)
{
    pg_lm_cache *c = pg_lm_cache_new(lm(), 1, 4);
    cr_assert_not_null(c, "%s", pg_last_error());
    pg_clear_error();
    cr_assert_eq(pg_lm_cache_set_start(c, NULL), -1, "NULL starts should fail");
    expect_error("pg_lm_cache_set_start", "pg_lm_cache_set_start(c, NULL)");
    pg_lm_cache_free(c);
}

/* ---- nn/attention.h: head width, grouped-query attention, qk-norm (pg_mha_qkv) ------------------------ */
#undef SECTION
#define SECTION "attn_heads"

static pg_tensor *QKV3[3];
NUM(mha_qkv_g, "pg_mha_qkv", pg_mha_qkv(NULL, mha(), XS, NULL, QKV3), -1)
NUM(mha_qkv_m, "pg_mha_qkv", pg_mha_qkv(G, NULL, XS, NULL, QKV3), -1)
NUM(mha_qkv_x, "pg_mha_qkv", pg_mha_qkv(G, mha(), NULL, NULL, QKV3), -1)
NUM(mha_qkv_qkv, "pg_mha_qkv", pg_mha_qkv(G, mha(), XS, NULL, NULL), -1)
/* ---- nn/attention.h: a borrowed positional module (pg_mha_borrow_pos; tests/test_shared_pos.c) -------- */
#undef SECTION
#define SECTION "shared_pos"

NUM(mha_borrow_pos_m, "pg_mha_borrow_pos", pg_mha_borrow_pos(NULL, NULL, 0), -1)
NUM(mha_borrow_pos_p, "pg_mha_borrow_pos", pg_mha_borrow_pos(mha(), NULL, 0), -1)

/* ---- running a section ------------------------------------------------------------------------------ */
#undef SECTION

static const char *CURRENT = "";
static struct sigaction PREVIOUS[4];
static const int CRASH_SIGNALS[4] = {SIGSEGV, SIGBUS, SIGFPE, SIGABRT};

/* Names the case on stderr, then puts back the previous handler: returning
 * re-runs the faulting instruction (or abort's raise) under it. */
static void name_the_crash(int sig)
{
    static const char head[] = "null_args: the case that crashed is ";
    ssize_t w = write(2, head, sizeof head - 1);
    w += write(2, CURRENT, strlen(CURRENT));
    w += write(2, "\n", 1);
    (void)w;
    for (int i = 0; i < 4; i++)
        if (CRASH_SIGNALS[i] == sig)
            sigaction(sig, &PREVIOUS[i], NULL);
}

static void run_section(const char *section)
{
    struct sigaction on_crash = {0};
    on_crash.sa_handler = name_the_crash;
    for (int i = 0; i < 4; i++)
        sigaction(CRASH_SIGNALS[i], &on_crash, &PREVIOUS[i]);
    cr_assert_lt(N_CASES, MAX_CASES, "more cases than MAX_CASES: raise it");
    int ran = 0;
    for (int i = 0; i < N_CASES; i++) {
        if (strcmp(CASES[i].section, section) != 0)
            continue;
        CURRENT = CASES[i].id;
        setup();
        CASES[i].run();
        teardown();
        ran++;
    }
    cr_assert_gt(ran, 0, "no case in section %s", section);
}

Test(null_args, tensor) { run_section("tensor"); }
Test(null_args, kernels) { run_section("kernels"); }
Test(null_args, graph) { run_section("graph"); }
Test(null_args, ops) { run_section("ops"); }
Test(null_args, module) { run_section("module"); }
Test(null_args, safetensors) { run_section("safetensors"); }
Test(null_args, posmod) { run_section("posmod"); }
Test(null_args, schemes) { run_section("schemes"); }
Test(null_args, attention) { run_section("attention"); }
Test(null_args, optim) { run_section("optim"); }
Test(null_args, plot) { run_section("plot"); }
Test(null_args, kv_cache) { run_section("kv_cache"); }
Test(null_args, kv_cache_pad) { run_section("kv_cache_pad"); }
Test(null_args, attn_heads) { run_section("attn_heads"); }
Test(null_args, shared_pos) { run_section("shared_pos"); }
Test(null_args, state_map) { run_section("state_map"); }

/* Every case belongs to one of the sections above. */
Test(null_args, every_case_has_a_section)
{
    static const char *const known[] = {"tensor", "kernels", "graph",  "ops",       "module",
                                        "safetensors", "posmod", "schemes", "attention", "optim",
                                        "plot",
                                        "kv_cache",
                                        "kv_cache_pad",
                                        "attn_heads", "shared_pos", "state_map"};
    cr_assert_gt(N_CASES, 400, "only %d cases registered", N_CASES);
    for (int i = 0; i < N_CASES; i++) {
        bool found = false;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            found = found || strcmp(CASES[i].section, known[k]) == 0;
        cr_assert(found, "case %s is in section %s, which no test runs", CASES[i].id, CASES[i].section);
    }
}

/* ---- nn/layers.h: norm options, l2 normalisation (issue 16) ------------------------------------------ */
#define SECTION "module"
PTR(l2_normalize_x, "pg_l2_normalize", pg_l2_normalize(G, NULL, 1e-12))
VALUE(norm_opts_ok_o, pg_norm_opts_ok("pg_norm_opts_ok", 3, NULL, true), 0)
VALUE(norm_opts_ok_fn, pg_norm_opts_ok(NULL, 3, &(pg_norm_opts){.eps = 1e-5}, true), 1) /* fn NULL: named for itself */
VALUE(norm_gain_weight, pg_norm_gain(G, NULL, true), 0) /* no weight: no gain */
VALUE(layernorm_new_opts_o, keep(pg_layernorm_new_opts(3, NULL, PG_F64)) != NULL, 1) /* NULL: the defaults */
VALUE(rmsnorm_new_opts_o, keep(pg_rmsnorm_new_opts(3, NULL, PG_F64)) != NULL, 1)
#undef SECTION
