/* The absolute (mod_x) positional schemes: Sinusoidal (nn/pos_sinusoidal.c), LearnedVocab
 * and LearnedContinuous (nn/pos_learned.c). PyTorch parity (tests/fixtures/gen_pos_abs.py:
 * pos_abs_sin, pos_abs_learned, pos_abs_cont), f64 gradchecks w.r.t. x, float positions and
 * every parameter including div, the inspection table, left padding and the key mask,
 * MultiheadAttention / block / LM training with Adam, a combination of schemes in one
 * layer, and bad input. */
#include <stdlib.h>

#include "../nn/pos_learned.h"
#include "../nn/pos_sinusoidal.h"
#include "../nn/transformer.h"
#include "testutil.h"

/* ===================================================================================
 * helpers
 * =================================================================================== */

/* gradcheck context: inputs are x, then pos if pos_in (float, requiring grad), then params */
typedef struct xcase {
    pg_posmod *m;
    pg_tensor *pos;  /* used when !pos_in */
    pg_tensor *mask;
    bool pos_in;
} xcase;

static pg_tensor *call_x(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const xcase *c = ctx;
    pg_posmod *mods[] = {c->m};
    return pg_posmod_apply_x(g, mods, 1, in[0], c->pos_in ? in[1] : c->pos, c->mask, 0, 0, NULL);
}

static void gradcheck_x(pg_posmod *m, int64_t B, int64_t L, int64_t dim, pg_tensor *pos, bool pos_grad,
                        pg_tensor *mask, uint64_t seed)
{
    pg_tensor *in[64] = {randt(PG_SHAPE(B, L, dim), seed, true)};
    int nf = 1;
    if (pos_grad) {
        in[1] = pg_tensor_copy(NULL, pos);
        in[1]->requires_grad = true;
        nf = 2;
    }
    xcase c = {m, pos, mask, pos_grad};
    int n = with_params(in, nf, &m->base);
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_x, n, in, &c, &o);
    free_all(nf, in);
}

/* fixture case `pre`: load params, forward, compare out, backward with dy, compare grads */
static void parity(pg_posmod *m, const char *file, const char *pre)
{
    pg_tensor_list l = fixture(file);
    char name[64];
    load_params(&m->base, &l, pre);
    snprintf(name, sizeof name, "%sx", pre);
    pg_tensor *x = fx_copy(&l, name, true);
    snprintf(name, sizeof name, "%spos", pre);
    pg_tensor *pos = NULL;
    if (pg_tensor_list_find(&l, name) >= 0)
        pos = fx_copy(&l, name, fx(&l, "%s", name)->dtype == PG_F64);
    snprintf(name, sizeof name, "%smask", pre);
    pg_tensor *mask = pg_tensor_list_find(&l, name) >= 0 ? fx(&l, "%s", name) : NULL;

    pg_graph *g = pg_graph_new();
    pg_posmod *mods[] = {m};
    pg_tensor *y = pg_posmod_apply_x(g, mods, 1, x, pos, mask, 0, 0, NULL);
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    assert_close(y, fx(&l, "%sout", pre), 1e-10, "out");
    cr_assert_eq(pg_backward_with(g, y, fx(&l, "%sdy", pre)), 0, "%s", pg_graph_error(g));
    assert_close(x->grad, fx(&l, "%sgrad.x", pre), 1e-9, "grad.x");
    if (pos && pos->requires_grad)
        assert_close(pos->grad, fx(&l, "%sgrad.pos", pre), 1e-9, "grad.pos");
    check_param_grads(&m->base, &l, pre, 1e-9);
    if (getenv("POS_ABS_VERBOSE")) { /* the errors reached, for the docs */
        double ep = pos && pos->requires_grad ? max_err(pos->grad, fx(&l, "%sgrad.pos", pre)) : 0, eq = 0;
        pg_tensor_list p = pg_module_parameters(&m->base);
        for (int i = 0; i < p.n; i++) {
            double e = max_err(p.tensors[i]->grad, fx(&l, "%sgrad.%s", pre, p.names[i]));
            eq = e > eq ? e : eq;
        }
        pg_tensor_list_free(&p);
        fprintf(stderr, "%s %s out %.2g grad.x %.2g grad.pos %.2g params %.2g\n", file, pre,
                max_err(y, fx(&l, "%sout", pre)), max_err(x->grad, fx(&l, "%sgrad.x", pre)), ep, eq);
    }
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(pos);
    pg_tensor_list_free_all(&l);
}

static pg_posmod *sin_f64(int64_t dim, double divide, bool learned_div)
{
    pg_sinusoidal_opts o = {.divide = divide, .learned_div = learned_div};
    pg_posmod *m = pg_sinusoidal_new(dim, &o, PG_F64);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static pg_posmod *learned_f64(int64_t dim, int64_t n, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_posmod *m = pg_learned_new(dim, n, NULL, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

static pg_posmod *cont_f64(int64_t dim, int depth, bool norm, double divide, bool learned_div, uint64_t seed)
{
    pg_continuous_opts o = {.depth = depth, .norm = norm, .divide = divide, .learned_div = learned_div};
    pg_rng r = pg_rng_init(seed);
    pg_posmod *m = pg_continuous_new(dim, &o, PG_F64, &r);
    cr_assert_not_null(m, "%s", pg_last_error());
    /* LayerNorms away from their init so their gradients are exercised */
    pg_tensor_list p = pg_module_parameters(&m->base);
    for (int i = 0; i < p.n; i++)
        if (strstr(p.names[i], ".1.weight") && p.tensors[i]->ndim == 1)
            pg_fill_uniform(p.tensors[i], &r, 0.5, 1.5);
    pg_tensor_list_free(&p);
    return m;
}

static void free_mod(pg_posmod *m) { pg_module_free(&m->base); }

/* float positions (2, 5), non-contiguous; and (2, 3): left padding of 2 tokens */
static pg_tensor *fpos5(void) { return T64(PG_SHAPE(2, 5), 0.5, 3.0, 1.25, 7.5, 2.0, 10.0, -1.5, 4.0, 4.0, 0.0); }
static pg_tensor *fpos3(void) { return T64(PG_SHAPE(2, 3), 0.0, 2.5, 6.0, 1.0, 3.0, 9.5); }

/* ===================================================================================
 * Sinusoidal
 * =================================================================================== */

Test(pos_sinusoidal, parity_default_positions)
{
    pg_posmod *m = sin_f64(6, 1, false);
    parity(m, "pos_abs_sin.safetensors", "default.");
    free_mod(m);
}

Test(pos_sinusoidal, parity_float_positions_divide)
{
    pg_posmod *m = sin_f64(6, 3.0, false);
    parity(m, "pos_abs_sin.safetensors", "float.");
    free_mod(m);
}

Test(pos_sinusoidal, parity_left_padding_mask_learned_div)
{
    pg_posmod *m = sin_f64(8, 2.5, true);
    parity(m, "pos_abs_sin.safetensors", "padmask.");
    free_mod(m);
}

Test(pos_sinusoidal, parity_base)
{
    pg_sinusoidal_opts o = pg_sinusoidal_defaults();
    o.base = 100;
    pg_posmod *m = pg_sinusoidal_new(4, &o, PG_F64);
    cr_assert_not_null(m, "%s", pg_last_error());
    parity(m, "pos_abs_sin.safetensors", "base.");
    free_mod(m);
}

Test(pos_sinusoidal, table_values_interleaved)
{
    pg_posmod *m = sin_f64(6, 1, false);
    pg_tensor *t = pg_posmod_x_table(NULL, m, 4, 6, NULL);
    assert_shape(t, 2, (int64_t[]){4, 6});
    for (int64_t p = 0; p < 4; p++)
        for (int64_t i = 0; i < 3; i++) {
            double th = (double)p * pow(10000.0, -2.0 * (double)i / 6.0);
            cr_assert_float_eq(pg_get(t, p * 6 + 2 * i), sin(th), 1e-14);
            cr_assert_float_eq(pg_get(t, p * 6 + 2 * i + 1), cos(th), 1e-14);
        }
    /* positions shorter than the table: leading rows are zero, the rest are the positions' rows */
    pg_tensor *pos = T64(PG_SHAPE(1, 2), 0, 3);
    pg_tensor *t2 = pg_posmod_x_table(NULL, m, 4, 6, pos);
    for (int64_t j = 0; j < 6; j++) {
        cr_assert_eq(pg_get(t2, j), 0.0);
        cr_assert_eq(pg_get(t2, 6 + j), 0.0);
        cr_assert_float_eq(pg_get(t2, 12 + j), pg_get(t, j), 1e-15);
        cr_assert_float_eq(pg_get(t2, 18 + j), pg_get(t, 18 + j), 1e-15);
    }
    pg_tensor *own[] = {t, t2, pos};
    free_all(3, own);
    free_mod(m);
}

Test(pos_sinusoidal, int_positions_equal_float_and_ignore_mask)
{
    pg_posmod *m = sin_f64(4, 2, false);
    pg_sinusoidal_opts o = {.divide = 2, .ignore_mask = true};
    pg_posmod *mi = pg_sinusoidal_new(4, &o, PG_F64);
    pg_tensor *x = randt(PG_SHAPE(2, 5, 4), 3, false), *mask = key_mask();
    pg_tensor *pi = TI64(PG_SHAPE(2, 4), 3, 1, 4, 9, 0, 2, 2, 7);
    pg_tensor *pf = T64(PG_SHAPE(2, 4), 3, 1, 4, 9, 0, 2, 2, 7);
    pg_tensor *yi = pg_posmod_apply_x(NULL, &m, 1, x, pi, NULL, 0, 0, NULL);
    pg_tensor *yf = pg_posmod_apply_x(NULL, &m, 1, x, pf, NULL, 0, 0, NULL);
    assert_close(yi, yf, 0, "int vs float positions");
    /* ignore_mask: the mask changes nothing; without it, masked tokens get x back unchanged */
    pg_tensor *ym = pg_posmod_apply_x(NULL, &mi, 1, x, pf, mask, 0, 0, NULL);
    assert_close(ym, yf, 0, "ignore_mask");
    pg_tensor *yk = pg_posmod_apply_x(NULL, &m, 1, x, pf, mask, 0, 0, NULL);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t t = 0; t < 5; t++)
            for (int64_t j = 0; j < 4; j++) {
                int64_t k = (b * 5 + t) * 4 + j;
                bool hidden = !pg_get(mask, b * 5 + t) || t == 0; /* t = 0: un-positioned (Lp = 4) */
                cr_assert_eq(pg_get(yk, k), hidden ? pg_get(x, k) : pg_get(yf, k));
            }
    pg_tensor *own[] = {x, mask, pi, pf, yi, yf, ym, yk};
    free_all(8, own);
    free_mod(m);
    free_mod(mi);
}

/* the output of the graph's first node named op; NULL: none */
static const pg_tensor *first_out(const pg_graph *g, const char *op)
{
    for (int i = 0; i < pg_graph_num_nodes(g); i++)
        if (strcmp(pg_graph_node(g, i)->name, op) == 0)
            return pg_graph_node(g, i)->out;
    return NULL;
}

/* Default positions are the same for every batch: each scheme encodes them once, (1, L, .),
 * and the sum broadcasts. Equal, bit for bit, to explicit positions 0..L-1 in every batch
 * (encoded per batch); the parameters' gradients to rounding (summed in another order). */
Test(pos_abs, default_positions_encoded_once)
{
    pg_posmod *mods[3] = {sin_f64(6, 3, true), learned_f64(6, 9, 4), cont_f64(6, 2, true, 2, true, 5)};
    const char *ops[3] = {"pg_sin", "pg_embedding", "pg_affine"};
    pg_tensor *x = randt(PG_SHAPE(3, 7, 6), 8, true), *w = randt(PG_SHAPE(3, 7, 6), 9, false);
    pg_tensor *pf = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(3, 7)), *pi = pg_tensor_empty(NULL, PG_I64, PG_SHAPE(3, 7));
    pg_tensor *keys = pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(3, 7));
    for (int64_t k = 0; k < 21; k++) {
        pg_set(pf, k, (double)(k % 7));
        pg_i64(pi)[k] = k % 7;
        pg_bool(keys)[k] = k % 5 != 2;
    }
    for (int with_mask = 0; with_mask < 2; with_mask++) {
        pg_tensor *mask = with_mask ? keys : NULL;
        for (int s = 0; s < 3; s++) {
            pg_tensor_list grads[2];
            pg_tensor *y[2], *gx[2];
            for (int explicit = 0; explicit < 2; explicit++) {
                pg_graph *g = pg_graph_new();
                pg_module_zero_grad(&mods[s]->base);
                y[explicit] = pg_posmod_apply_x(g, &mods[s], 1, x, explicit ? (s == 1 ? pi : pf) : NULL, mask, 0,
                                                0, NULL);
                cr_assert_not_null(y[explicit], "%s", pg_graph_error(g));
                const pg_tensor *enc = first_out(g, ops[s]);
                cr_assert_not_null(enc, "%s: no %s node", mods[s]->base.type, ops[s]);
                cr_assert_eq(enc->shape[0], explicit ? 3 : 1, "%s: %s over %lld batches", mods[s]->base.type,
                             ops[s], (long long)enc->shape[0]);
                cr_assert_eq(pg_backward_with(g, y[explicit], w), 0, "%s", pg_graph_error(g));
                y[explicit] = pg_tensor_copy(NULL, y[explicit]);
                gx[explicit] = take_grad(x);
                grads[explicit] = pg_module_parameters(&mods[s]->base);
                for (int i = 0; i < grads[explicit].n; i++)
                    grads[explicit].tensors[i] = pg_tensor_copy(NULL, grads[explicit].tensors[i]->grad);
                pg_graph_free(g);
            }
            assert_close(y[0], y[1], 0, "the output, default vs explicit positions");
            assert_close(gx[0], gx[1], 0, "the gradient of x");
            for (int i = 0; i < grads[0].n; i++)
                assert_close(grads[0].tensors[i], grads[1].tensors[i], 1e-12, grads[0].names[i]);
            for (int e = 0; e < 2; e++) {
                pg_tensor *own[] = {y[e], gx[e]};
                free_all(2, own);
                pg_tensor_list_free_all(&grads[e]);
            }
        }
    }
    pg_tensor *own[] = {x, w, keys, pf, pi};
    free_all(5, own);
    for (int s = 0; s < 3; s++)
        free_mod(mods[s]);
}

Test(pos_abs, f32_agrees_with_f64)
{
    pg_sinusoidal_opts so = {.divide = 2, .learned_div = true};
    pg_continuous_opts co = {.depth = 2, .norm = true};
    pg_rng r32 = pg_rng_init(3), r64 = pg_rng_init(3);
    pg_posmod *m32[] = {pg_sinusoidal_new(4, &so, PG_F32), pg_learned_new(4, 5, NULL, PG_F32, &r32),
                        pg_continuous_new(4, &co, PG_F32, &r32)};
    pg_posmod *m64[] = {pg_sinusoidal_new(4, &so, PG_F64), pg_learned_new(4, 5, NULL, PG_F64, &r64),
                        pg_continuous_new(4, &co, PG_F64, &r64)};
    for (int i = 0; i < 3; i++) {
        pg_tensor *a = pg_posmod_x_table(NULL, m32[i], 5, 4, NULL), *b = pg_posmod_x_table(NULL, m64[i], 5, 4, NULL);
        cr_assert_not_null(a, "%s", pg_last_error());
        cr_assert_eq(a->dtype, PG_F32);
        assert_close(a, b, 1e-6, m32[i]->base.type);
        pg_tensor_free(a);
        pg_tensor_free(b);
        free_mod(m32[i]);
        free_mod(m64[i]);
    }
}

Test(pos_sinusoidal, gradcheck_x_positions_div)
{
    pg_tensor *pos = fpos3(), *pos5 = fpos5(), *mask = key_mask();
    pg_posmod *m = sin_f64(4, 1.7, true); /* x, float positions (left padding, mask), div */
    gradcheck_x(m, 2, 5, 4, pos, true, mask, 11);
    free_mod(m);
    m = sin_f64(6, 3, false); /* constant divide, full positions */
    gradcheck_x(m, 2, 5, 6, pos5, true, NULL, 12);
    free_mod(m);
    m = sin_f64(4, 1, false); /* default positions: x only */
    gradcheck_x(m, 2, 3, 4, NULL, false, NULL, 13);
    free_mod(m);
    pg_tensor *own[] = {pos, pos5, mask};
    free_all(3, own);
}

Test(pos_sinusoidal, bad_input)
{
    ASSERT_FAILS(pg_sinusoidal_new(5, NULL, PG_F64), "dim must be even");
    ASSERT_FAILS(pg_sinusoidal_new(0, NULL, PG_F64), "dim must be even");
    pg_sinusoidal_opts o = {.divide = -2};
    ASSERT_FAILS(pg_sinusoidal_new(4, &o, PG_F64), "divide");
    o = (pg_sinusoidal_opts){.divide = NAN, .learned_div = true};
    ASSERT_FAILS(pg_sinusoidal_new(4, &o, PG_F64), "divide");
    o = (pg_sinusoidal_opts){.base = 0.5};
    ASSERT_FAILS(pg_sinusoidal_new(4, &o, PG_F64), "base");
    ASSERT_FAILS(pg_sinusoidal_new(4, NULL, PG_I64), "dtype");
    pg_posmod_args a = {.dim = 7, .dtype = PG_F64};
    pg_posmod_spec s = {NULL, pg_posmod_make_sinusoidal, NULL};
    ASSERT_FAILS(pg_posmod_from_spec(&s, &a), "dim must be even");

    pg_posmod *m = sin_f64(4, 1, true);
    pg_tensor *x = randt(PG_SHAPE(2, 3, 4), 1, false), *x6 = randt(PG_SHAPE(2, 3, 6), 1, false);
    pg_tensor *x32 = pg_tensor_empty(NULL, PG_F32, PG_SHAPE(2, 3, 4));
    pg_tensor *long_pos = T64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0, 1, 2, 3);
    pg_tensor *pos1 = T64(PG_SHAPE(3), 0, 1, 2);
    pg_tensor *mask = key_mask(); /* (2, 5): wrong length for L = 3 */
    pg_tensor *bpos = TBOOL(PG_SHAPE(2, 3), 1, 1, 1, 1, 1, 1);
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x6, NULL, NULL, 0, 0, NULL), "expected (B, L, dim = 4)");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, long_pos, NULL, 0, 0, NULL), "pos is f64[2,4], expected (B, Lp) = (2, <= 3)");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, pos1, NULL, 0, 0, NULL), "expected (B, Lp)");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, bpos, NULL, 0, 0, NULL), "f32, f64 or i64");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, NULL, mask, 0, 0, NULL), "mask is bool[2,5]");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x32, NULL, NULL, 0, 0, NULL), "div is f64");
    pg_tensor *own[] = {x, x6, x32, long_pos, pos1, mask, bpos};
    free_all(7, own);
    free_mod(m);
}

/* ===================================================================================
 * LearnedVocab
 * =================================================================================== */

Test(pos_learned, parity_default_positions)
{
    pg_posmod *m = learned_f64(4, 7, 1);
    parity(m, "pos_abs_learned.safetensors", "default.");
    free_mod(m);
}

Test(pos_learned, parity_int_positions_left_padding_mask)
{
    pg_posmod *m = learned_f64(4, 7, 1);
    parity(m, "pos_abs_learned.safetensors", "padmask.");
    free_mod(m);
}

Test(pos_learned, names_table_and_gradcheck)
{
    pg_posmod *m = learned_f64(3, 6, 2);
    pg_tensor_list p = pg_module_parameters(&m->base);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.names[0], "emb.weight");
    assert_shape(p.tensors[0], 2, (int64_t[]){6, 3});
    pg_tensor *w = p.tensors[0];
    pg_tensor_list_free(&p);
    /* the inspection table at default positions is the first L rows */
    pg_tensor *t = pg_posmod_x_table(NULL, m, 4, 3, NULL);
    for (int64_t i = 0; i < 12; i++)
        cr_assert_eq(pg_get(t, i), pg_get(w, i));
    pg_tensor_free(t);
    pg_tensor *pos = TI64(PG_SHAPE(2, 2), 5, 0, 3, 3), *mask = TBOOL(PG_SHAPE(2, 3), 1, 1, 0, 1, 1, 1);
    gradcheck_x(m, 2, 3, 3, pos, false, mask, 21);
    gradcheck_x(m, 2, 4, 3, NULL, false, NULL, 22);
    pg_tensor_free(pos);
    pg_tensor_free(mask);
    free_mod(m);
}

Test(pos_learned, bad_input)
{
    pg_posmod *m = learned_f64(4, 5, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 3, 4), 1, false), *x6 = randt(PG_SHAPE(1, 6, 4), 1, false);
    pg_tensor *fp = T64(PG_SHAPE(2, 3), 0, 1, 2, 0, 1, 2);
    pg_tensor *big = TI64(PG_SHAPE(2, 3), 0, 1, 2, 0, 5, 2), *neg = TI64(PG_SHAPE(2, 2), 0, -1, 2, 3);
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, fp, NULL, 0, 0, NULL), "needs integer (i64) positions");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, big, NULL, 0, 0, NULL), "position 5");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, neg, NULL, 0, 0, NULL), "outside [0, max_seq_len = 5)");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x6, NULL, NULL, 0, 0, NULL), "exceeds max_seq_len 5");
    ASSERT_FAILS(pg_learned_new(4, 0, NULL, PG_F64, NULL), "max_seq_len >= 1");
    pg_posmod_args a = {.dim = 4, .dtype = PG_F64};
    pg_posmod_spec s = {NULL, pg_posmod_make_learned, NULL};
    ASSERT_FAILS(pg_posmod_from_spec(&s, &a), "needs a size");
    /* the model's max_len sizes the table; the options' max_seq_len wins */
    a.max_len = 9;
    pg_posmod *m9 = pg_posmod_from_spec(&s, &a);
    cr_assert_not_null(m9, "%s", pg_last_error());
    cr_assert_eq(pg_module_num_elements(&m9->base), 36);
    pg_learned_opts lo = {.max_seq_len = 3};
    s.opts = &lo;
    pg_posmod *m3 = pg_posmod_from_spec(&s, &a);
    cr_assert_not_null(m3, "%s", pg_last_error());
    cr_assert_eq(pg_module_num_elements(&m3->base), 12);
    pg_tensor *own[] = {x, x6, fp, big, neg};
    free_all(5, own);
    free_mod(m);
    free_mod(m9);
    free_mod(m3);
}

/* ===================================================================================
 * LearnedContinuous
 * =================================================================================== */

Test(pos_continuous, parity_depth1)
{
    pg_posmod *m = cont_f64(4, 1, false, 1, false, 1);
    parity(m, "pos_abs_cont.safetensors", "d1.");
    free_mod(m);
}

Test(pos_continuous, parity_depth2_divide_float_positions)
{
    pg_posmod *m = cont_f64(4, 2, false, 2.0, false, 1);
    parity(m, "pos_abs_cont.safetensors", "d2.");
    free_mod(m);
}

Test(pos_continuous, parity_depth3_norm_learned_div_padding_mask)
{
    pg_posmod *m = cont_f64(4, 3, true, 1.5, true, 1);
    parity(m, "pos_abs_cont.safetensors", "d3norm.");
    free_mod(m);
}

Test(pos_continuous, parameter_names)
{
    pg_posmod *m = cont_f64(4, 2, true, 2, true, 1);
    const char *want[] = {"div",         "mlp.0.0.weight", "mlp.0.0.bias",   "mlp.0.1.weight", "mlp.0.1.bias",
                          "mlp.1.1.weight", "mlp.1.1.bias", "mlp.1.2.weight", "mlp.1.2.bias"};
    pg_tensor_list p = pg_module_parameters(&m->base);
    cr_assert_eq(p.n, 9);
    for (int i = 0; i < 9; i++)
        cr_assert_str_eq(p.names[i], want[i]);
    cr_assert_float_eq(pg_get(p.tensors[0], 0), log(2.0), 1e-15);
    pg_tensor_list_free(&p);
    free_mod(m);
    m = cont_f64(4, 0, false, 0, false, 1); /* 0 = defaults: depth 1, divide 1 */
    p = pg_module_parameters(&m->base);
    cr_assert_eq(p.n, 2);
    cr_assert_str_eq(p.names[0], "mlp.0.0.weight");
    pg_tensor_list_free(&p);
    free_mod(m);
}

Test(pos_continuous, gradcheck_every_option)
{
    pg_tensor *pos = fpos3(), *pos5 = fpos5(), *mask = key_mask();
    pg_posmod *m = cont_f64(3, 1, false, 1, false, 31);
    gradcheck_x(m, 2, 5, 3, pos5, true, NULL, 1);
    gradcheck_x(m, 2, 4, 3, NULL, false, NULL, 2);
    free_mod(m);
    m = cont_f64(3, 2, false, 2.5, true, 32);
    gradcheck_x(m, 2, 5, 3, pos5, true, mask, 3);
    free_mod(m);
    m = cont_f64(3, 3, true, 1.5, true, 33);
    gradcheck_x(m, 2, 5, 3, pos, true, mask, 4);
    free_mod(m);
    pg_tensor *own[] = {pos, pos5, mask};
    free_all(3, own);
}

Test(pos_continuous, bad_input)
{
    pg_continuous_opts o = {.depth = -1};
    ASSERT_FAILS(pg_continuous_new(4, &o, PG_F64, NULL), "depth");
    o = (pg_continuous_opts){.divide = -1, .learned_div = true};
    ASSERT_FAILS(pg_continuous_new(4, &o, PG_F64, NULL), "divide");
    ASSERT_FAILS(pg_continuous_new(0, NULL, PG_F64, NULL), "dim >= 1");
    ASSERT_FAILS(pg_continuous_new(4, NULL, PG_BOOL, NULL), "dtype");
    pg_posmod *m = cont_f64(4, 1, false, 1, false, 1);
    pg_tensor *x = randt(PG_SHAPE(2, 3, 5), 1, false), *x4 = randt(PG_SHAPE(2, 3, 4), 1, false);
    pg_tensor *lp = T64(PG_SHAPE(2, 4), 0, 1, 2, 3, 0, 1, 2, 3), *mask = key_mask();
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x, NULL, NULL, 0, 0, NULL), "expected (B, L, dim = 4)");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x4, lp, NULL, 0, 0, NULL), "pos is f64[2,4], expected (B, Lp) = (2, <= 3)");
    ASSERT_FAILS(pg_posmod_apply_x(NULL, &m, 1, x4, NULL, mask, 0, 0, NULL), "mask is bool[2,5]");
    pg_tensor *own[] = {x, x4, lp, mask};
    free_all(4, own);
    free_mod(m);
}

/* ===================================================================================
 * inside attention, blocks and the LM; training; combinations
 * =================================================================================== */

/* heap copies of every parameter of m */
static pg_tensor_list snapshot(pg_module *m)
{
    pg_tensor_list p = pg_module_parameters(m), s = {0, 0, NULL, NULL};
    for (int i = 0; i < p.n; i++)
        pg_tensor_list_push(&s, p.names[i], pg_tensor_copy(NULL, p.tensors[i]));
    pg_tensor_list_free(&p);
    return s;
}

/* asserts every parameter of m whose name starts with `prefix` changed and is finite */
static void assert_changed(pg_module *m, pg_tensor_list *before, const char *prefix)
{
    pg_tensor_list p = pg_module_parameters(m);
    int seen = 0;
    for (int i = 0; i < p.n; i++) {
        if (strncmp(p.names[i], prefix, strlen(prefix)))
            continue;
        seen++;
        pg_tensor *old = before->tensors[pg_tensor_list_find(before, p.names[i])];
        double diff = 0;
        for (int64_t j = 0; j < old->numel; j++) {
            cr_assert(isfinite(pg_get(p.tensors[i], j)), "%s is not finite", p.names[i]);
            diff += fabs(pg_get(p.tensors[i], j) - pg_get(old, j));
        }
        cr_assert_gt(diff, 0, "%s did not change", p.names[i]);
    }
    cr_assert_gt(seen, 0, "no parameter named %s*", prefix);
    pg_tensor_list_free(&p);
    pg_tensor_list_free_all(before);
}

static void adam_step(pg_module *m)
{
    pg_optim *o = pg_optim_new(PG_ADAM, NULL);
    pg_tensor_list p = pg_module_parameters(m);
    cr_assert_geq(pg_optim_add_group(o, p.tensors, p.n, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_step(o), 0, "%s", pg_last_error());
    pg_tensor_list_free(&p);
    pg_optim_free(o);
}

Test(pos_abs, mha_trains_each_scheme)
{
    for (int kind = 0; kind < 3; kind++) {
        pg_posmod *pm = kind == 0 ? sin_f64(8, 4, true) : kind == 1 ? learned_f64(8, 6, 2) : cont_f64(8, 2, true, 3, true, 3);
        pg_mha_config c = pg_mha_defaults(8, 2);
        c.dtype = PG_F64;
        c.causal = true;
        pg_rng r = pg_rng_init(5);
        pg_mha *m = pg_mha_new(&c, &pm, 1, &r);
        cr_assert_not_null(m, "%s", pg_last_error());
        pg_tensor *x = randt(PG_SHAPE(2, 5, 8), 7, false), *mask = key_mask();
        pg_tensor *pos = kind == 1 ? TI64(PG_SHAPE(2, 4), 0, 2, 4, 5, 1, 1, 3, 0) : fpos5();
        pg_tensor_list before = snapshot(&m->base);
        pg_graph *g = pg_graph_new();
        pg_attn_args a = {.mask = mask, .pos = pos};
        pg_tensor *xp = pg_posmod_apply_x(g, m->pos, m->n_pos, x, pos, mask, 2, 4, NULL);
        pg_tensor *y = pg_mha_forward(g, m, xp, NULL, &a);
        cr_assert_not_null(y, "%s", pg_graph_error(g));
        cr_assert_eq(pg_backward(g, pg_sum(g, pg_square(g, y), 0, NULL, false)), 0, "%s", pg_graph_error(g));
        adam_step(&m->base);
        assert_changed(&m->base, &before, "pos.");
        pg_graph_free(g);
        pg_tensor *own[] = {x, mask, pos};
        free_all(3, own);
        pg_module_free(&m->base);
    }
}

Test(pos_abs, lm_trains_input_and_layer_schemes)
{
    pg_continuous_opts co = {.depth = 2, .norm = true, .divide = 4, .learned_div = true};
    pg_sinusoidal_opts so = {.divide = 2, .learned_div = true};
    pg_lm_config c = pg_lm_defaults(11, 8, 2, 1);
    c.dtype = PG_F64;
    c.max_len = 6;
    c.seed = 3;
    c.n_input_pos = 2;
    c.input_pos[0] = (pg_posmod_spec){NULL, pg_posmod_make_learned, NULL}; /* table of max_len rows */
    c.input_pos[1] = (pg_posmod_spec){NULL, pg_posmod_make_continuous, &co};
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){NULL, pg_posmod_make_sinusoidal, &so};
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    cr_assert_not_null(pg_module_find_param(&lm->base, "pos.0.emb.weight"));
    cr_assert_not_null(pg_module_find_param(&lm->base, "pos.1.mlp.1.2.bias"));
    cr_assert_not_null(pg_module_find_param(&lm->base, "blocks.0.attn.pos.div"));
    pg_tensor *ids = TI64(PG_SHAPE(2, 5), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    pg_tensor *tg = TI64(PG_SHAPE(2, 5), 2, 3, 4, 5, 6, 7, 8, 9, 10, 0);
    pg_tensor_list b1 = snapshot(&lm->base), b2 = snapshot(&lm->base);
    pg_graph *g = pg_graph_new();
    pg_tensor *loss = pg_lm_loss(g, lm, ids, tg, NULL);
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    adam_step(&lm->base);
    assert_changed(&lm->base, &b1, "pos.");
    assert_changed(&lm->base, &b2, "blocks.0.attn.pos.");
    pg_graph_free(g);
    pg_tensor_free(ids);
    pg_tensor_free(tg);
    pg_module_free(&lm->base);
}

/* a block with two absolute schemes on one attention layer: the block input becomes
 * x + pe_sin + pe_learned (mod_x in order), and gradients reach both modules */
typedef struct block_case {
    pg_block *b;
    pg_tensor *mask, *pos;
} block_case;

static pg_tensor *call_block(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const block_case *c = ctx;
    pg_attn_args a = {.mask = c->mask, .pos = c->pos};
    return pg_block_forward(g, c->b, in[0], &a);
}

Test(pos_abs, combination_in_one_block)
{
    pg_posmod *mods[] = {sin_f64(4, 2, true), learned_f64(4, 6, 4)};
    pg_block_config bc = pg_block_defaults(4, 2);
    bc.dtype = PG_F64;
    pg_rng r = pg_rng_init(9);
    pg_block *b = pg_block_new(&bc, mods, 2, &r);
    cr_assert_not_null(b, "%s", pg_last_error());
    cr_assert_not_null(pg_module_find_param(&b->base, "attn.pos.0.div"));
    cr_assert_not_null(pg_module_find_param(&b->base, "attn.pos.1.emb.weight"));
    /* the input modification is the sum of both tables */
    pg_tensor *x = randt(PG_SHAPE(1, 3, 4), 2, true);
    pg_tensor *xp = pg_posmod_apply_x(NULL, b->attn->pos, 2, x, NULL, NULL, 2, 2, NULL);
    pg_tensor *t0 = pg_posmod_x_table(NULL, mods[0], 3, 4, NULL), *t1 = pg_posmod_x_table(NULL, mods[1], 3, 4, NULL);
    for (int64_t i = 0; i < 12; i++)
        cr_assert_float_eq(pg_get(xp, i), pg_get(x, i) + pg_get(t0, i) + pg_get(t1, i), 1e-14);
    pg_tensor *own[] = {x, xp, t0, t1};
    free_all(4, own);
    /* gradcheck through the block w.r.t. x and the positional parameters */
    pg_tensor *in[4] = {randt(PG_SHAPE(2, 5, 4), 3, true), pg_module_find_param(&b->base, "attn.pos.0.div"),
                        pg_module_find_param(&b->base, "attn.pos.1.emb.weight")};
    block_case bk = {b, key_mask(), TI64(PG_SHAPE(2, 4), 0, 2, 4, 5, 1, 1, 3, 0)};
    pg_gradcheck_opts o = f64_only();
    assert_gradcheck(call_block, 3, in, &bk, &o);
    pg_tensor_free(in[0]);
    pg_tensor_free(bk.mask);
    pg_tensor_free(bk.pos);
    pg_module_free(&b->base);
}
