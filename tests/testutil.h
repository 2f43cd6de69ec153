/* Helpers for the Criterion suites: tensors from literals, closeness
 * assertions, and a one-call gradcheck. */
#ifndef PG_TESTUTIL_H
#define PG_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../posgrad.h"

/* A heap f64 tensor from a literal: T64(PG_SHAPE(2, 2), 1, 2, 3, 4). S is a PG_SHAPE(...). */
#define T64(S, ...) pg_tensor_from_array(NULL, PG_F64, S, (const double[]){__VA_ARGS__})
#define T32(S, ...) pg_tensor_from_array(NULL, PG_F32, S, (const float[]){__VA_ARGS__})
#define TI64(S, ...) pg_tensor_from_array(NULL, PG_I64, S, (const int64_t[]){__VA_ARGS__})
#define TBOOL(S, ...) pg_tensor_from_array(NULL, PG_BOOL, S, (const uint8_t[]){__VA_ARGS__})

/* Asserts t has the given shape. */
static inline void assert_shape(const pg_tensor *t, int ndim, const int64_t *shape)
{
    cr_assert_not_null(t, "tensor is NULL: %s", pg_last_error());
    cr_assert_eq(t->ndim, ndim, "ndim %d, expected %d", t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(t->shape[i], shape[i], "dim %d is %lld, expected %lld", i, (long long)t->shape[i],
                     (long long)shape[i]);
}

/* Asserts every element of t is within tol of expected[i] (NaN matches NaN,
 * inf matches inf of the same sign). */
static inline void assert_values(const pg_tensor *t, const double *expected, int64_t n, double tol)
{
    cr_assert_not_null(t, "tensor is NULL: %s", pg_last_error());
    cr_assert_eq(t->numel, n, "numel %lld, expected %lld", (long long)t->numel, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        double v = pg_get(t, i), e = expected[i];
        if (isnan(e)) {
            cr_assert(isnan(v), "element %lld is %.17g, expected NaN", (long long)i, v);
        } else if (isinf(e)) {
            cr_assert(v == e, "element %lld is %.17g, expected %g", (long long)i, v, e);
        } else {
            cr_assert(fabs(v - e) <= tol * (1.0 + fabs(e)), "element %lld is %.17g, expected %.17g (tol %g)",
                      (long long)i, v, e, tol);
        }
    }
}
#define ASSERT_VALUES(t, tol, ...)                                                                             \
    assert_values((t), (const double[]){__VA_ARGS__}, (int64_t)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)), (tol))

/* Asserts a call failed: NULL result and a last error containing `needle`. */
#define ASSERT_FAILS(expr, needle)                                                                             \
    do {                                                                                                       \
        pg_clear_error();                                                                                      \
        const void *r_ = (expr);                                                                               \
        cr_assert_null(r_, "%s should have failed", #expr);                                                    \
        cr_assert(strstr(pg_last_error(), (needle)) != NULL, "error \"%s\" lacks \"%s\"", pg_last_error(),      \
                  (needle));                                                                                   \
    } while (0)

/* Asserts an int-returning call fails (-1) with a last error containing needle. */
#define ASSERT_RC_FAILS(expr, needle)                                                                          \
    do {                                                                                                       \
        pg_clear_error();                                                                                      \
        cr_assert_eq((expr), -1, "%s should have failed", #expr);                                              \
        cr_assert(strstr(pg_last_error(), (needle)) != NULL, "error \"%s\" lacks \"%s\"", pg_last_error(),      \
                  (needle));                                                                                   \
    } while (0)

/* Random heap f64 tensor with values in [lo, hi), requiring grad. */
static inline pg_tensor *rand_param(int ndim, const int64_t *shape, double lo, double hi, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, ndim, shape);
    pg_fill_uniform(t, &r, lo, hi);
    t->requires_grad = true;
    return t;
}

/* Runs pg_gradcheck with the given options (NULL: defaults) and asserts it passed. */
static inline void assert_gradcheck(pg_gradcheck_fn fn, int n, pg_tensor *const *in, void *ctx,
                                    const pg_gradcheck_opts *opts)
{
    pg_gradcheck_result r = pg_gradcheck(fn, n, in, ctx, opts);
    cr_assert(r.ok, "%s (max abs err %.3g, checked %d)", r.message, r.max_abs_err, r.checked);
    cr_assert_gt(r.checked, 0, "gradcheck checked nothing");
}

static inline void free_all(int n, pg_tensor **ts)
{
    for (int i = 0; i < n; i++)
        pg_tensor_free(ts[i]);
}

/* ---- PyTorch parity fixtures (the .safetensors files in tests/fixtures) -------------- */

static inline pg_tensor_list fixture(const char *file)
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/%s", file);
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &l), 0, "%s", pg_last_error());
    return l;
}

/* the fixture tensor with the formatted name (borrowed); fails the test if absent */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline pg_tensor *fx(const pg_tensor_list *l, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int i = pg_tensor_list_find(l, name);
    cr_assert_geq(i, 0, "fixture lacks %s", name);
    return l->tensors[i];
}

/* a heap copy of a fixture tensor, requiring grad if asked */
static inline pg_tensor *fx_copy(const pg_tensor_list *l, const char *name, bool grad)
{
    pg_tensor *t = pg_tensor_copy(NULL, fx(l, "%s", name));
    t->requires_grad = grad;
    return t;
}

/* max over elements of |a - e| / (1 + |e|); the shapes must agree */
static inline double max_err(const pg_tensor *a, const pg_tensor *e)
{
    cr_assert_not_null(a, "tensor is NULL: %s", pg_last_error());
    assert_shape(a, e->ndim, e->shape);
    double worst = 0;
    for (int64_t i = 0; i < e->numel; i++) {
        double d = fabs(pg_get(a, i) - pg_get(e, i)) / (1.0 + fabs(pg_get(e, i)));
        worst = d > worst || isnan(d) ? d : worst;
    }
    return worst;
}

static inline void assert_close(const pg_tensor *a, const pg_tensor *e, double tol, const char *what)
{
    double err = max_err(a, e);
    cr_assert(err <= tol, "%s: max error %.3g > %.3g", what, err, tol);
}

/* Copies the fixture entries "<prefix><param name>" into every parameter of m. */
static inline void load_params(pg_module *m, const pg_tensor_list *l, const char *prefix)
{
    pg_tensor_list sub = {0, 0, NULL, NULL};
    size_t n = strlen(prefix);
    for (int i = 0; i < l->n; i++)
        if (!strncmp(l->names[i], prefix, n))
            pg_tensor_list_push(&sub, l->names[i] + n, l->tensors[i]);
    pg_load_report rep = {0};
    cr_assert_eq(pg_module_load_state(m, &sub, false, &rep), 0, "%s", pg_last_error());
    cr_assert_eq(rep.n_missing, 0, "fixture lacks %s%s", prefix, rep.n_missing ? rep.missing[0] : "");
    pg_load_report_free(&rep);
    pg_tensor_list_free(&sub);
}

/* Every parameter's grad against the fixture's "<prefix>grad.<name>". */
static inline void check_param_grads(pg_module *m, const pg_tensor_list *l, const char *prefix, double tol)
{
    pg_tensor_list p = pg_module_parameters(m);
    for (int i = 0; i < p.n; i++) {
        cr_assert_not_null(p.tensors[i]->grad, "%s has no grad", p.names[i]);
        assert_close(p.tensors[i]->grad, fx(l, "%sgrad.%s", prefix, p.names[i]), tol, p.names[i]);
    }
    pg_tensor_list_free(&p);
}

/* inputs[0..n_fixed) then every parameter of m, for pg_gradcheck; returns the count */
static inline int with_params(pg_tensor **inputs, int n_fixed, const pg_module *m)
{
    pg_tensor_list p = pg_module_parameters(m);
    for (int i = 0; i < p.n; i++)
        inputs[n_fixed + i] = p.tensors[i];
    int n = n_fixed + p.n;
    pg_tensor_list_free(&p);
    return n;
}

/* gradcheck options for modules whose dtype is fixed at construction (the f32
 * leg would cast the inputs but not the module's own weights) */
static inline pg_gradcheck_opts f64_only(void)
{
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.check_f32 = false;
    return o;
}

/* random heap f64 tensor in [-1, 1), requiring grad if asked */
/* An f64 MultiheadAttention of the given shape and flags over the positional
 * modules pos[0..n) (taken), its weights drawn from seed; asserts it builds. */
typedef struct test_mha_flags {
    bool causal, unfused, cross;
    int64_t context_dim; /* 0: pg_mha_defaults' */
} test_mha_flags;
static inline pg_mha *test_mha(int64_t dim, int64_t heads, test_mha_flags f, pg_posmod *const *pos, int n,
                               uint64_t seed)
{
    pg_mha_config c = pg_mha_defaults(dim, heads);
    c.causal = f.causal;
    c.unfused = f.unfused;
    c.cross = f.cross;
    if (f.context_dim)
        c.context_dim = f.context_dim;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(seed);
    pg_mha *m = pg_mha_new(&c, pos, n, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static inline pg_tensor *randt(int ndim, const int64_t *shape, uint64_t seed, bool grad)
{
    pg_tensor *t = rand_param(ndim, shape, -1, 1, seed);
    t->requires_grad = grad;
    return t;
}

/* how many of g's nodes are named `name` (pg_split_heads, pg_rotate_pairs, ...) */
static inline int count_nodes(const pg_graph *g, const char *name)
{
    int n = 0;
    for (int i = 0; i < pg_graph_num_nodes(g); i++)
        n += strcmp(pg_graph_node(g, i)->name, name) == 0;
    return n;
}

/* how many of g's nodes are the fused attention (a name with "flash" in it) */
static inline int fused_nodes(const pg_graph *g)
{
    int n = 0;
    for (int i = 0; i < pg_graph_num_nodes(g); i++)
        n += strstr(pg_graph_node(g, i)->name, "flash") != NULL;
    return n;
}

/* the float whose bits are u (tests that walk the floats by their bits) */
static inline float float_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* randt's values in dtype dt (f32: rounded from them), a leaf requiring grad */
static inline pg_tensor *rand_leaf(pg_dtype dt, int ndim, const int64_t *shape, uint64_t seed)
{
    pg_tensor *t = randt(ndim, shape, seed, false);
    if (dt != PG_F64) {
        pg_tensor *c = pg_cast(NULL, t, dt);
        pg_tensor_free(t);
        t = c;
    }
    pg_set_requires_grad(t, true);
    return t;
}

/* key mask (2, 5) as the attention fixtures: batch 0 hides key 3, batch 1 hides key 0 */
static inline pg_tensor *key_mask(void) { return TBOOL(PG_SHAPE(2, 5), 1, 1, 1, 0, 1, 0, 1, 1, 1, 1); }
/* a[i] and b[i] (heap tensors, or both NULL) hold the same bytes for i < n, named names[i]
 * in the message (NULL: by index); all freed. For "the same bits for any thread count". */
static inline void assert_same_bits_free_in(const char *ctx, pg_tensor **a, pg_tensor **b, int n,
                                            const char *const *names)
{
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "output %d", i);
        const char *what = names ? names[i] : name;
        cr_assert_eq(a[i] == NULL, b[i] == NULL, "%s%s: present in one run only", ctx, what);
        if (a[i])
            cr_assert(a[i]->numel == b[i]->numel &&
                          !memcmp(a[i]->data, b[i]->data, (size_t)a[i]->numel * pg_dtype_size(a[i]->dtype)),
                      "%s%s differs (max %.3g)", ctx, what, a[i]->numel == b[i]->numel ? max_err(a[i], b[i]) : NAN);
        pg_tensor_free(a[i]);
        pg_tensor_free(b[i]);
    }
}
static inline void assert_same_bits_free(pg_tensor **a, pg_tensor **b, int n, const char *const *names)
{
    assert_same_bits_free_in("", a, b, n, names);
}

/* fn(ctx) on 1 and then on 2 threads, the thread count restored after */
static inline void on_1_and_2_threads(void (*fn)(void *ctx), void *ctx)
{
    int saved = pg_num_threads();
    for (int threads = 1; threads <= 2; threads++) {
        cr_assert_eq(pg_set_num_threads(threads), 0);
        fn(ctx);
    }
    cr_assert_eq(pg_set_num_threads(saved), 0);
}

/* fn(ctx, res) fills res[0..n) with heap tensors (outputs, gradients): run on 1 and then
 * 2 threads, the same bits both times (the thread count restored) */
static inline void assert_same_bits_on_1_and_2_threads(void (*fn)(void *ctx, pg_tensor **res), void *ctx, int n,
                                                       const char *const *names)
{
    enum { MAX_RES = 16 };
    cr_assert_leq(n, MAX_RES);
    pg_tensor *a[MAX_RES], *b[MAX_RES];
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(1), 0);
    fn(ctx, a);
    cr_assert_eq(pg_set_num_threads(2), 0);
    fn(ctx, b);
    pg_set_num_threads(saved);
    assert_same_bits_free(a, b, n, names);
}

/* a heap copy of t's gradient, which is then zeroed (NULL for t NULL); fails the test when
 * no gradient reached t */
static inline pg_tensor *take_grad(pg_tensor *t)
{
    if (!t)
        return NULL;
    cr_assert_not_null(t->grad, "no gradient reached an input");
    pg_tensor *c = pg_tensor_copy(NULL, t->grad);
    pg_zero_grad(t);
    return c;
}

/* (B, 1, Lq, Lk) bool in g: true where attention hides key j from query i: the key mask
 * (B, Lk) (NULL: none), causal j > i, or outside a band of `window` with one window back
 * (pg_flash_band; window 0: none) */
static inline pg_tensor *hidden_pairs(pg_graph *g, int64_t B, int64_t Lq, int64_t Lk, const pg_tensor *mask,
                                      bool causal, int64_t window)
{
    pg_tensor *h = pg_empty(g, PG_BOOL, PG_SHAPE(B, 1, Lq, Lk));
    const pg_flash_opts band = {.window = window, .look_backward = 1};
    for (int64_t b = 0; h && b < B; b++)
        for (int64_t i = 0; i < Lq; i++) {
            int64_t lo, hi;
            pg_flash_band(&band, i, Lk, &lo, &hi);
            for (int64_t j = 0; j < Lk; j++)
                pg_bool(h)[(b * Lq + i) * Lk + j] =
                    (mask && !pg_bool(mask)[b * Lk + j]) || (causal && j > i) || j < lo || j > hi;
        }
    return h;
}

/* a (B, Lk) key mask that hides key j of batch b where (a j + b) mod 7 == r (heap) */
static inline pg_tensor *key_mask_pattern(int64_t B, int64_t Lk, int64_t a, int64_t r)
{
    pg_tensor *m = pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(B, Lk));
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < Lk; j++)
            pg_bool(m)[b * Lk + j] = (j * a + b) % 7 != r;
    return m;
}

/* ---- training: one Adam step changes a module's parameters ------------------------------ */

/* All parameter values of m, flattened (malloc'd; free it). */
static inline double *params_snapshot(const pg_module *m)
{
    pg_tensor_list p = pg_module_parameters(m);
    int64_t total = 0;
    for (int i = 0; i < p.n; i++)
        total += p.tensors[i]->numel;
    double *s = malloc(sizeof(double) * (size_t)(total ? total : 1));
    int64_t k = 0;
    for (int i = 0; i < p.n; i++)
        for (int64_t j = 0; j < p.tensors[i]->numel; j++)
            s[k++] = pg_get(p.tensors[i], j);
    pg_tensor_list_free(&p);
    return s;
}

/* Backward from loss (a scalar in g), one Adam step (lr 1e-2) over model's
 * parameters; then every parameter of watch has changed and is finite. */
static inline void assert_adam_step_changes(pg_module *model, pg_module *watch, pg_graph *g, pg_tensor *loss)
{
    double *before = params_snapshot(watch);
    pg_tensor_list ps = pg_module_parameters(model);
    pg_optim_hparams h = pg_adam_hparams(1e-2);
    pg_optim *opt = pg_optim_new(PG_ADAM, &h);
    cr_assert_geq(pg_optim_add_group(opt, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
    pg_tensor_list p = pg_module_parameters(watch);
    int64_t k = 0;
    for (int i = 0; i < p.n; i++) {
        bool changed = false;
        for (int64_t j = 0; j < p.tensors[i]->numel; j++, k++) {
            double x = pg_get(p.tensors[i], j);
            cr_assert(isfinite(x), "%s is not finite", p.names[i]);
            changed |= x != before[k];
        }
        cr_assert(changed, "%s did not change", p.names[i]);
    }
    pg_tensor_list_free(&p);
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
    free(before);
}

/* A relative-bias scheme for attention tests, f64, dim 8 over heads x 4:
 * which 0 ALiBi, 1 DPB, 2 T5 (its table, zero at the start, filled from
 * U(-1, 1) so the bias is not trivial); parameters drawn from seed. */
static inline pg_posmod *test_rel_scheme(int which, int64_t heads, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_posmod_args a = {.dim = 8, .heads = heads, .head_dim = 4, .dtype = PG_F64, .rng = &r};
    pg_posmod *p = which == 0 ? pg_posmod_make_alibi(&a) : which == 1 ? pg_posmod_make_dpb(&a) : pg_posmod_make_t5(&a);
    cr_assert_not_null(p, "%s", pg_last_error());
    if (which == 2) {
        pg_tensor_list ps = pg_module_parameters(&p->base);
        pg_fill_uniform(ps.tensors[0], &r, -1, 1);
        pg_tensor_list_free(&ps);
    }
    return p;
}

/* (L, L) f64: [i, j] = 0 where a local-attention band (windows of w, lb back, lf ahead, causal)
 * lets query i see key j, else -inf; the reference's additive mask */
static inline pg_tensor *test_band_mask(pg_graph *g, int64_t L, int64_t w, int64_t lb, int64_t lf, bool causal)
{
    pg_tensor *t = pg_empty(g, PG_F64, PG_SHAPE(L, L));
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            bool vis = j / w >= i / w - lb && j / w <= i / w + lf && (!causal || j <= i);
            pg_set(t, i * L + j, vis ? 0.0 : -INFINITY);
        }
    return t;
}

/* A small f64 LM of shape c (its max_len, band, ...) for the KV cache suites, in
 * eval mode, with one input kind and one layer kind (either NULL): seed 7,
 * init_std 0.3 (attention far from uniform) and CoPE's position embeddings
 * (zero at the start, as the references) drawn from N(0, 1) so its bias counts. */
static inline pg_lm *test_small_lm(pg_lm_config c, const char *input, const char *layer, const void *layer_opts)
{
    c.dtype = PG_F64;
    c.seed = 7;
    c.init_std = 0.3;
    if (input)
        c.input_pos[c.n_input_pos++] = (pg_posmod_spec){.kind = input};
    if (layer)
        c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){.kind = layer, .opts = layer_opts};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "pg_lm_new(%s, %s): %s", input ? input : "-", layer ? layer : "-", pg_last_error());
    pg_module_train(&lm->base, false);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_rng r = pg_rng_init(11);
    for (int i = 0; i < ps.n; i++)
        if (strstr(ps.names[i], "pos_emb"))
            pg_fill_normal(ps.tensors[i], &r, 0.0, 1.0);
    pg_tensor_list_free(&ps);
    return lm;
}

/* The rotary options the KV cache suites decode: PI (linear, factor 2), YaRN
 * (factor 4 over a trained length of 8), xPos about the fixed centre 5. */
typedef enum { TEST_ROPE_PI, TEST_ROPE_YARN, TEST_XPOS_FIXED } test_rope_case;
static inline pg_rotary_opts test_rope_opts(test_rope_case which)
{
    pg_rotary_opts o = pg_rotary_defaults();
    if (which == TEST_ROPE_PI)
        o.scaling = PG_ROPE_LINEAR, o.rope_factor = 2;
    else if (which == TEST_ROPE_YARN)
        o.scaling = PG_ROPE_YARN, o.rope_factor = 4, o.rope_orig_len = 8;
    else
        o.use_xpos = true, o.xpos_fixed_centre = true, o.xpos_centre = 5;
    return o;
}

/* Parameters named *norm* (LayerNorm / RMSNorm gains and biases, qk-norm gains) moved
 * off their initial 1 / 0 by U(-0.15, 0.15), so gradchecks and fixtures see them. */
static inline void test_jitter_norms(pg_module *m, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_tensor_list p = pg_module_parameters(m);
    for (int i = 0; i < p.n; i++)
        if (strstr(p.names[i], "norm"))
            for (int64_t j = 0; j < p.tensors[i]->numel; j++)
                pg_set(p.tensors[i], j, pg_get(p.tensors[i], j) + 0.3 * (pg_rng_uniform(&r) - 0.5));
    pg_tensor_list_free(&p);
}

#endif
