/* RoPE context extension (pg_rotary_opts.scaling: linear / PI, ntk, dynamic_ntk, dynamic_linear,
 * yarn; nn/pos_rope_scaling.c): hand-computed frequencies, PyTorch parity
 * (tests/fixtures/gen_pos_rope_scaling.py: pos_rope_scaling) below and above the trained length,
 * f64 gradchecks through mod_qkv (and through float positions where the scaling is smooth in
 * them), equivalences with the x-transformers spellings, the dynamic length rule, bad options. */
#include <stdlib.h>
#include <string.h>

#include "../nn/attention.h"
#include "../nn/pos_rotary.h"
#include "testutil.h"

static pg_posmod *rot_new(int64_t Dh, pg_rotary_opts o)
{
    pg_posmod *m = pg_rotary_new(Dh, &o, PG_F64);
    cr_assert_not_null(m, "%s", pg_last_error());
    return m;
}

/* runs mod_qkv directly; returns q' and k' through *q, *k */
static int run_qkv(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor *pos_q, pg_tensor *pos_k,
                   bool self)
{
    pg_tensor *v = *k;
    pg_pos_ctx c = {pos_q, pos_k, NULL, self, false, (*q)->shape[0], (*q)->shape[1], (*q)->shape[3],
                    (*q)->shape[2], (*k)->shape[2], 1.0, (*q)->dtype, NULL, NULL};
    return pg_pos_ctx_check(g, "run_qkv", &c) ? -1 : m->ops->mod_qkv(g, m, q, k, &v, &c);
}

/* the effective frequency of pair k for a call of length len, and the module's mscale */
static double freq(pg_posmod *m, double len, int64_t k, double *mscale)
{
    double out[64];
    int64_t R = pg_rotary_frequencies(m, len, out, mscale);
    cr_assert_gt(R, k, "%s", pg_last_error());
    return out[k];
}

/* ===================================================================================
 * hand values: theta_k = base^(-2k/F)
 * =================================================================================== */

Test(pos_rope_scaling, hand_frequencies_linear_ntk_dynamic)
{
    double ms;
    /* PI, base 10000, F 8, s 2: theta_1 = 10000^(-1/4) / 2 = 0.1 / 2 */
    pg_posmod *m = rot_new(8, (pg_rotary_opts){.scaling = PG_ROPE_LINEAR, .rope_factor = 2});
    cr_assert_float_eq(freq(m, 5, 0, &ms), 0.5, 1e-15);
    cr_assert_float_eq(freq(m, 5, 1, &ms), 0.05, 1e-15);
    cr_assert_eq(ms, 1.0);
    pg_module_free(&m->base);
    /* NTK, base 16, F 4, s 2: base' = 16 * 2^(4/2) = 64, theta_1 = 64^(-1/2) = 1/8 */
    m = rot_new(4, (pg_rotary_opts){.scaling = PG_ROPE_NTK, .rope_factor = 2, .base = 16});
    cr_assert_float_eq(freq(m, 5, 1, NULL), 0.125, 1e-15);
    pg_module_free(&m->base);
    /* dynamic NTK, base 16, F 4, L 8, ntk 1: len 8 -> 16^(-1/2) = 1/4; len 16 -> base 16 * 2^2 = 64 -> 1/8 */
    m = rot_new(4, (pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_NTK, .rope_orig_len = 8, .base = 16});
    cr_assert_float_eq(freq(m, 8, 1, NULL), 0.25, 1e-15);
    cr_assert_float_eq(freq(m, 16, 1, NULL), 0.125, 1e-15);
    pg_module_free(&m->base);
    /* ntk 2, len 16: base 16 * (2*16/8 - 1)^2 = 144 -> theta_1 = 1/12 */
    m = rot_new(4, (pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_NTK, .rope_factor = 2, .rope_orig_len = 8, .base = 16});
    cr_assert_float_eq(freq(m, 16, 1, NULL), 1.0 / 12, 1e-15);
    pg_module_free(&m->base);
    /* dynamic linear, L 8, len 32: theta_1 * 8 / 32 = 1/16; len 4: 1/4; with divide 2: halved */
    m = rot_new(4, (pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_LINEAR, .rope_orig_len = 8, .base = 16, .divide = 2});
    cr_assert_float_eq(freq(m, 32, 1, NULL), 0.0625 / 2, 1e-15);
    cr_assert_float_eq(freq(m, 4, 1, NULL), 0.25 / 2, 1e-15);
    pg_module_free(&m->base);
}

Test(pos_rope_scaling, hand_frequencies_yarn)
{
    double ms;
    /* defaults (beta 32 / 1), base 10000, F 8, L 8, s 8: lo = 0, hi = ceil(8 ln(8/(2 pi)) / (2 ln 1e4))
     * = ceil(0.105) = 1: gamma_0 = 1 (theta_0 = 1 kept), gamma_k = 0 after (theta_1 = 0.1 / 8);
     * mscale = 0.1 ln 8 + 1 */
    pg_posmod *m = rot_new(8, (pg_rotary_opts){.scaling = PG_ROPE_YARN, .rope_factor = 8, .rope_orig_len = 8});
    cr_assert_float_eq(freq(m, 3, 0, &ms), 1.0, 1e-15);
    cr_assert_float_eq(freq(m, 3, 1, &ms), 0.0125, 1e-15);
    cr_assert_float_eq(ms, 1.2079441541679836, 1e-15);
    pg_module_free(&m->base);
    /* base 50, F 16, L 16, beta 4 / 0.5, s 4: lo = 0, hi = ceil(16 ln(16/pi) / (2 ln 50)) = ceil(3.33) = 4,
     * gamma_k = 1 - k/4: theta'_2 = (0.5 / 4 + 0.5) theta_2 = 0.625 * 50^(-1/4); theta'_5 = theta_5 / 4 */
    pg_rotary_opts y = {.scaling = PG_ROPE_YARN, .rope_factor = 4, .rope_orig_len = 16, .base = 50,
                        .yarn_beta_fast = 4, .yarn_beta_slow = 0.5};
    m = rot_new(16, y);
    cr_assert_float_eq(freq(m, 3, 0, NULL), 1.0, 1e-15);
    cr_assert_float_eq(freq(m, 3, 2, NULL), 0.625 * 0.37606030930863937, 1e-15);
    cr_assert_float_eq(freq(m, 3, 5, NULL), pow(50, -5.0 / 8) / 4, 1e-15);
    pg_module_free(&m->base);
    /* the paper's ramp, beta 2 / 0.5: r_3 = 16 * 50^(-3/8) / (2 pi) = 0.58725, gamma_3 = (r_3 - 0.5) / 1.5 */
    y.yarn_ramp = PG_ROPE_RAMP_RATIO;
    y.yarn_beta_fast = 2;
    m = rot_new(16, y);
    double t3 = pow(50, -3.0 / 8), g3 = (16 * t3 / (2 * 3.14159265358979323846) - 0.5) / 1.5;
    cr_assert_float_eq(g3, 0.0581697, 1e-6);
    cr_assert_float_eq(freq(m, 3, 3, NULL), (1 - g3) * t3 / 4 + g3 * t3, 1e-15);
    cr_assert_float_eq(freq(m, 3, 0, NULL), 1.0, 1e-15); /* r_0 = 2.55 > 2: kept */
    pg_module_free(&m->base);
    /* attention factor: (0.1 ln 4 + 1) * 1.3; without the log term: 1.3 */
    y.yarn_attn_factor = 1.3;
    m = rot_new(16, y);
    freq(m, 3, 0, &ms);
    cr_assert_float_eq(ms, (0.1 * log(4) + 1) * 1.3, 1e-15);
    pg_module_free(&m->base);
    y.yarn_no_mscale = true;
    m = rot_new(16, y);
    freq(m, 3, 0, &ms);
    cr_assert_float_eq(ms, 1.3, 1e-15);
    pg_module_free(&m->base);
}

/* PartNTK and dynamic YaRN */
Test(pos_rope_scaling, hand_frequencies_part_ntk_and_dynamic_yarn)
{
    /* PartNTK, base 50, F 16, L 64, s 4: theta_ntk from 50 * 4^(16/14); ramp (1.25, 0.75): lo = floor(4.29) = 4,
     * hi = ceil(5.33) = 6; ramp (16, 2): lo = 0, hi = ceil(3.33) = 4.
     * k = 5: m1 = 0.5, m2 = 0: theta_5 / 4 * 0.5 + theta_ntk_5 * 0.5;
     * k = 2: m1 = 1, m2 = 0.5: theta_ntk_2 * 0.5 + theta_2 * 0.5 */
    pg_posmod *m = rot_new(16, (pg_rotary_opts){.scaling = PG_ROPE_PART_NTK, .rope_factor = 4, .rope_orig_len = 64,
                                                .base = 50});
    double bn = 50 * pow(4, 16.0 / 14), ms;
    cr_assert_float_eq(freq(m, 3, 5, &ms), 0.5 * pow(50, -10.0 / 16) / 4 + 0.5 * pow(bn, -10.0 / 16), 1e-15);
    cr_assert_float_eq(freq(m, 3, 5, &ms), 0.02694969701446836, 1e-15);
    cr_assert_float_eq(freq(m, 3, 2, &ms), 0.5 * pow(bn, -4.0 / 16) + 0.5 * pow(50, -4.0 / 16), 1e-15);
    cr_assert_eq(ms, 1.0);
    pg_module_free(&m->base);
    /* dynamic YaRN, the YaRN case above (L 16) with M 20: len 12 -> s 1 (theta_5 kept); len 24 -> s 24/16 = 1.5;
     * by_max -> 24/20; finetuned, len 12 -> 20/16 */
    pg_rotary_opts o = {.scaling = PG_ROPE_DYNAMIC_YARN, .rope_orig_len = 16, .rope_max_len = 20, .base = 50,
                        .yarn_beta_fast = 4, .yarn_beta_slow = 0.5};
    double t5 = pow(50, -5.0 / 8);
    double cases[][3] = {{0, 12, 1}, {0, 24, 1.5}, {1, 24, 1.2}, {2, 12, 1.25}};
    for (int i = 0; i < 4; i++) {
        o.yarn_dynamic_by_max = cases[i][0] == 1;
        o.yarn_finetuned = cases[i][0] == 2;
        m = rot_new(16, o);
        double sc = cases[i][2];
        cr_assert_float_eq(freq(m, cases[i][1], 5, &ms), t5 / sc, 1e-15, "case %d", i);
        cr_assert_float_eq(ms, sc > 1 ? 0.1 * log(sc) + 1 : 1, 1e-15, "case %d", i);
        pg_module_free(&m->base);
    }
}

/* ===================================================================================
 * parity
 * =================================================================================== */

typedef struct scase {
    const char *name;
    bool self;
    pg_rotary_opts o;
} scase;

#define YARN_C .scaling = PG_ROPE_YARN, .rope_factor = 4, .rope_orig_len = 16, .base = 50, .yarn_beta_slow = 0.5
#define YARN_T YARN_C, .yarn_beta_fast = 4
#define DYN_YARN .scaling = PG_ROPE_DYNAMIC_YARN, .rope_factor = 4, .rope_orig_len = 16, .base = 50, \
                 .yarn_beta_slow = 0.5, .yarn_beta_fast = 4
#define LOHI(name, ...) {name "_lo", true, {__VA_ARGS__}}, {name "_hi", true, {__VA_ARGS__}}

static const scase CASES[] = {
    LOHI("linear", .scaling = PG_ROPE_LINEAR, .rope_factor = 2),
    LOHI("ntk", .scaling = PG_ROPE_NTK, .rope_factor = 4, .base = 100),
    LOHI("dyn_ntk", .scaling = PG_ROPE_DYNAMIC_NTK, .rope_orig_len = 8),
    LOHI("dyn_ntk2", .scaling = PG_ROPE_DYNAMIC_NTK, .rope_factor = 2, .rope_orig_len = 8, .base = 500),
    LOHI("dyn_linear", .scaling = PG_ROPE_DYNAMIC_LINEAR, .rope_orig_len = 8),
    LOHI("yarn_default", .scaling = PG_ROPE_YARN, .rope_factor = 8, .rope_orig_len = 8),
    LOHI("yarn_index", YARN_T),
    LOHI("yarn_ratio", YARN_C, .yarn_ramp = PG_ROPE_RAMP_RATIO, .yarn_beta_fast = 2),
    {"yarn_knobs", true, {YARN_T, .yarn_extrapolation_factor = 0.5, .yarn_attn_factor = 1.3,
                          .pairing = PG_ROTARY_HALF_SPLIT}},
    {"yarn_no_mscale", true, {YARN_T, .yarn_no_mscale = true, .yarn_attn_factor = 0.9}},
    {"yarn_xpos_pos", true, {YARN_T, .n_dims = 8, .freq_dim = 8, .use_xpos = true, .scale_base = 16}},
    {"dyn_ntk_cross", false, {.scaling = PG_ROPE_DYNAMIC_NTK, .rope_factor = 1.5, .rope_orig_len = 8}},
    {"part_ntk_lo", true, {.scaling = PG_ROPE_PART_NTK, .rope_factor = 4, .rope_orig_len = 64, .base = 50}},
    {"part_ntk_knobs", true,
     {.scaling = PG_ROPE_PART_NTK, .rope_factor = 3, .rope_orig_len = 64, .base = 50, .yarn_ntk_factor = 0.5,
      .yarn_extrapolation_factor = 0.7}},
    {"dyn_yarn_lo", true, {DYN_YARN}},
    {"dyn_yarn_hi", true, {DYN_YARN}},
    {"dyn_yarn_max", true, {DYN_YARN, .rope_max_len = 20, .yarn_dynamic_by_max = true}},
    {"dyn_yarn_ft", true, {DYN_YARN, .rope_max_len = 20, .yarn_finetuned = true}},
    {"linear_half_partial", true,
     {.scaling = PG_ROPE_LINEAR, .rope_factor = 0.5, .n_dims = 4, .pairing = PG_ROTARY_HALF_SPLIT}},
};
#define NCASES (sizeof CASES / sizeof CASES[0])

static pg_tensor *opt_fx(const pg_tensor_list *l, const char *cs, const char *name, bool grad)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", cs, name);
    return pg_tensor_list_find(l, full) >= 0 ? fx_copy(l, full, grad) : NULL;
}

/* the call's length: the largest position of either side + 1 */
static double call_len(const pg_tensor *pq, const pg_tensor *pk, int64_t Lq, int64_t Lk)
{
    double mx = (double)(Lq > Lk ? Lq : Lk) - 1;
    if (pq || pk) {
        mx = -INFINITY;
        const pg_tensor *ps[] = {pq, pk};
        for (int s = 0; s < 2; s++)
            for (int64_t i = 0; ps[s] && i < ps[s]->numel; i++)
                mx = fmax(mx, pg_get(ps[s], i));
    }
    return mx + 1;
}

/* max |grad - fixture| over q, k and the given positions */
static double grad_errs(const pg_tensor_list *l, const char *cs, pg_tensor *const *ts, const char *const *names)
{
    double w = 0;
    for (int i = 0; i < 5; i++) {
        if (!ts[i])
            continue;
        double e = max_err(ts[i]->grad, fx(l, "%s.grad.%s", cs, names[i]));
        cr_assert_leq(e, 1e-9, "%s: grad %s differs by %.3g", cs, names[i], e);
        w = fmax(w, e);
    }
    return w;
}

Test(pos_rope_scaling, matches_torch_every_option)
{
    pg_tensor_list l = fixture("pos_rope_scaling.safetensors");
    pg_graph *g = pg_graph_new();
    double worst_out = 0, worst_grad = 0, worst_inv = 0;
    for (size_t ci = 0; ci < NCASES; ci++) {
        const char *cs = CASES[ci].name;
        pg_tensor *q = opt_fx(&l, cs, "q", true), *k = opt_fx(&l, cs, "k", true);
        cr_assert_not_null(q, "case %s missing", cs);
        pg_posmod *m = rot_new(q->shape[3], CASES[ci].o);
        pg_tensor *pos = opt_fx(&l, cs, "pos", true), *pq = opt_fx(&l, cs, "pos_q", true),
                  *pk = opt_fx(&l, cs, "pos_k", true);
        pg_graph_reset(g);
        pg_tensor *oq = q, *ok = k;
        int r = CASES[ci].self ? run_qkv(g, m, &oq, &ok, pos, pos, true) : run_qkv(g, m, &oq, &ok, pq, pk, false);
        cr_assert_eq(r, 0, "%s: %s", cs, pg_graph_error(g));
        double e = fmax(max_err(oq, fx(&l, "%s.out_q", cs)), max_err(ok, fx(&l, "%s.out_k", cs)));
        cr_assert_leq(e, 1e-10, "%s: outputs differ by %.3g", cs, e);
        worst_out = fmax(worst_out, e);
        /* the inspection function agrees with the fixture's frequencies at the call's length */
        pg_tensor *inv = fx(&l, "%s.inv", cs);
        double f[64];
        double len = CASES[ci].self ? call_len(pos, pos, q->shape[2], q->shape[2])
                                    : call_len(pq, pk, q->shape[2], k->shape[2]);
        cr_assert_eq(pg_rotary_frequencies(m, len, f, NULL), inv->numel);
        for (int64_t i = 0; i < inv->numel; i++)
            worst_inv = fmax(worst_inv, fabs(f[i] - pg_get(inv, i)));
        cr_assert_leq(worst_inv, 1e-15, "%s: frequencies differ by %.3g", cs, worst_inv);
        pg_tensor *loss = pg_add(g, pg_sum(g, pg_mul(g, oq, fx(&l, "%s.dq", cs)), 0, NULL, false),
                                 pg_sum(g, pg_mul(g, ok, fx(&l, "%s.dk", cs)), 0, NULL, false));
        cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
        pg_tensor *own[] = {q, k, pos, pq, pk};
        worst_grad = fmax(worst_grad, grad_errs(&l, cs, own, (const char *const[]){"q", "k", "pos", "pos_q", "pos_k"}));
        free_all(5, own);
        pg_module_free(&m->base);
    }
    cr_log_info("pos_rope_scaling parity: outputs %.3g, gradients %.3g, frequencies %.3g", worst_out, worst_grad,
                worst_inv);
    pg_graph_free(g);
    pg_tensor_list_free_all(&l);
}

/* ===================================================================================
 * gradchecks through mod_qkv
 * =================================================================================== */

typedef struct gcase {
    pg_posmod *m;
    bool with_pos;
} gcase;

static pg_tensor *call_rot(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const gcase *c = ctx;
    pg_tensor *q = in[0], *k = in[1], *p = c->with_pos ? in[2] : NULL;
    if (run_qkv(g, c->m, &q, &k, p, p, true) != 0)
        return NULL;
    pg_tensor *parts[] = {pg_reshape(g, q, PG_SHAPE(q->numel)), pg_reshape(g, k, PG_SHAPE(k->numel))};
    return pg_concat(g, 2, parts, 0);
}

/* q, k (2, 2, L, Dh) and, with pos, float positions (2, L) that require grad */
static void gradcheck_scaled(pg_rotary_opts o, int64_t Dh, int64_t L, pg_tensor *pos)
{
    pg_posmod *m = rot_new(Dh, o);
    pg_tensor *in[3] = {randt(PG_SHAPE(2, 2, L, Dh), 11, true), randt(PG_SHAPE(2, 2, L, Dh), 12, true), pos};
    gcase c = {m, pos != NULL};
    pg_gradcheck_opts go = f64_only();
    pg_gradcheck_result r = pg_gradcheck(call_rot, pos ? 3 : 2, in, &c, &go);
    cr_assert(r.ok && r.checked > 0, "%s (max abs err %.3g, checked %d)", r.message, r.max_abs_err, r.checked);
    cr_log_info("rope scaling %d gradcheck: max abs err %.3g", (int)o.scaling, r.max_abs_err);
    pg_tensor_free(in[0]);
    pg_tensor_free(in[1]);
    pg_module_free(&m->base);
}

/* static scalings: smooth in the positions, so they are checked too */
Test(pos_rope_scaling_grad, linear_ntk_yarn_with_positions)
{
    pg_tensor *p = rand_param(2, (int64_t[]){2, 6}, -1, 20, 5);
    pg_rotary_opts y = {YARN_T};
    gradcheck_scaled((pg_rotary_opts){.scaling = PG_ROPE_LINEAR, .rope_factor = 3}, 4, 6, p);
    gradcheck_scaled((pg_rotary_opts){.scaling = PG_ROPE_NTK, .rope_factor = 4, .base = 100}, 6, 6, p);
    gradcheck_scaled(y, 8, 6, p);
    y.yarn_ramp = PG_ROPE_RAMP_RATIO;
    y.yarn_beta_fast = 2;
    y.yarn_attn_factor = 1.2;
    gradcheck_scaled(y, 8, 6, p);
    y.use_xpos = true;
    y.scale_base = 8;
    y.pairing = PG_ROTARY_HALF_SPLIT;
    gradcheck_scaled(y, 8, 6, p);
    gradcheck_scaled((pg_rotary_opts){.scaling = PG_ROPE_PART_NTK, .rope_factor = 4, .rope_orig_len = 64, .base = 50},
                     16, 6, p);
    pg_tensor_free(p);
}

/* dynamic: the frequencies follow the call's largest position (a constant: no gradient through
 * the length), so q and k are checked, below and above the trained length */
Test(pos_rope_scaling_grad, dynamic_q_and_k)
{
    gradcheck_scaled((pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_NTK, .rope_factor = 2, .rope_orig_len = 4}, 4, 3,
                     NULL);
    gradcheck_scaled((pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_NTK, .rope_factor = 2, .rope_orig_len = 4}, 4, 7,
                     NULL);
    gradcheck_scaled((pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_LINEAR, .rope_orig_len = 4, .use_xpos = true}, 4, 7,
                     NULL);
    gradcheck_scaled((pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_YARN, .rope_orig_len = 4, .base = 50,
                                       .yarn_beta_fast = 4, .yarn_beta_slow = 0.5},
                     8, 7, NULL);
}

/* ===================================================================================
 * semantics
 * =================================================================================== */

/* linear == interpolation_factor and ntk == base_rescale_factor (the x-transformers spellings) */
Test(pos_rope_scaling, linear_and_ntk_equal_the_x_transformers_options)
{
    pg_rotary_opts pairs[][2] = {
        {{.scaling = PG_ROPE_LINEAR, .rope_factor = 3}, {.interpolation_factor = 3}},
        {{.scaling = PG_ROPE_NTK, .rope_factor = 3, .base = 300}, {.base_rescale_factor = 3, .base = 300}},
    };
    for (int i = 0; i < 2; i++) {
        pg_posmod *a = rot_new(6, pairs[i][0]), *b = rot_new(6, pairs[i][1]);
        pg_tensor *t = randt(PG_SHAPE(1, 2, 9, 6), 3, false);
        pg_tensor *ta = pg_rotary_apply(NULL, a, t, NULL, false, NAN);
        pg_tensor *tb = pg_rotary_apply(NULL, b, t, NULL, false, NAN);
        cr_assert_leq(max_err(ta, tb), 1e-15, "pair %d differs by %.3g", i, max_err(ta, tb));
        pg_tensor *own[] = {t, ta, tb};
        free_all(3, own);
        pg_module_free(&a->base);
        pg_module_free(&b->base);
    }
}

/* dynamic: a call no longer than the trained length is plain rotary; a longer one uses its largest
 * position (either side) + 1, not the tensor length */
Test(pos_rope_scaling, dynamic_length_is_the_largest_position_plus_one)
{
    pg_posmod *d = rot_new(4, (pg_rotary_opts){.scaling = PG_ROPE_DYNAMIC_NTK, .rope_orig_len = 8}),
              *plain = rot_new(4, (pg_rotary_opts){0});
    pg_tensor *t = randt(PG_SHAPE(1, 1, 3, 4), 4, false);
    pg_tensor *near = T64(PG_SHAPE(1, 3), 0, 1, 7), *far = T64(PG_SHAPE(1, 3), 0, 1, 15);
    pg_tensor *a = pg_rotary_apply(NULL, d, t, near, false, NAN);
    pg_tensor *b = pg_rotary_apply(NULL, plain, t, near, false, NAN);
    cr_assert_eq(max_err(a, b), 0.0, "len 8 <= L must be unscaled");
    pg_tensor *c = pg_rotary_apply(NULL, d, t, far, false, NAN);
    double f[2];
    pg_rotary_frequencies(d, 16, f, NULL);
    cr_assert_float_eq(f[1], 0.01 / 2, 1e-15); /* base 10000 * (16/8)^2: theta_1 = 40000^(-1/2) */
    /* token 2 at position 15 rotated by 15 * f */
    double x0 = pg_get(t, 8), x1 = pg_get(t, 9);
    cr_assert_float_eq(pg_get(c, 8), x0 * cos(15 * f[0]) - x1 * sin(15 * f[0]), 1e-14);
    pg_tensor *own[] = {t, near, far, a, b, c};
    free_all(6, own);
    pg_module_free(&d->base);
    pg_module_free(&plain->base);
}

/* YaRN's mscale multiplies q' and k' (the rotated channels), so the logits get mscale^2 = 1/t */
Test(pos_rope_scaling, yarn_attention_factor_scales_q_and_k)
{
    pg_rotary_opts o = {.scaling = PG_ROPE_YARN, .rope_factor = 8, .rope_orig_len = 8, .n_dims = 4};
    pg_posmod *y = rot_new(6, o);
    o.yarn_no_mscale = true;
    pg_posmod *y1 = rot_new(6, o);
    pg_tensor *t = randt(PG_SHAPE(1, 1, 3, 6), 5, false);
    pg_tensor *a = pg_rotary_apply(NULL, y, t, NULL, true, NAN), *b = pg_rotary_apply(NULL, y1, t, NULL, true, NAN);
    double ms = 0.1 * log(8) + 1;
    for (int64_t i = 0; i < 18; i++)
        cr_assert_float_eq(pg_get(a, i), i % 6 < 4 ? ms * pg_get(b, i) : pg_get(t, i), 1e-14);
    pg_tensor *own[] = {t, a, b};
    free_all(3, own);
    pg_module_free(&y->base);
    pg_module_free(&y1->base);
}

/* through the registry in a causal MultiheadAttention, f64 gradcheck of the whole layer */
static pg_tensor *call_mha(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_mha_forward(g, ctx, in[0], NULL, NULL);
}

Test(pos_rope_scaling_grad, yarn_xpos_inside_mha)
{
    pg_rotary_opts o = {YARN_T};
    o.rope_orig_len = 4;
    pg_posmod *m = pg_posmod_make_xpos(&(pg_posmod_args){.head_dim = 4, .dtype = PG_F64, .opts = &o});
    cr_assert_not_null(m, "%s", pg_last_error());
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.causal = true;
    c.dtype = PG_F64;
    pg_rng r = pg_rng_init(3);
    pg_mha *mha = pg_mha_new(&c, &m, 1, &r);
    cr_assert_not_null(mha, "%s", pg_last_error());
    pg_tensor *in[16] = {randt(PG_SHAPE(1, 6, 8), 6, true)};
    int n = with_params(in, 1, &mha->base);
    pg_gradcheck_opts go = f64_only();
    assert_gradcheck(call_mha, n, in, mha, &go);
    pg_tensor_free(in[0]);
    pg_module_free(&mha->base);
}

/* ===================================================================================
 * errors
 * =================================================================================== */

#define BAD(needle, ...) ASSERT_FAILS(pg_rotary_new(8, &(pg_rotary_opts){__VA_ARGS__}, PG_F64), needle)

Test(pos_rope_scaling, bad_options)
{
    BAD("pg_rotary_new: rope_factor must be a finite number > 0", .scaling = PG_ROPE_LINEAR, .rope_factor = -2);
    BAD("pg_rotary_new: rope_factor must be a finite number > 0", .scaling = PG_ROPE_NTK);
    BAD("pg_rotary_new: rope_factor must be", .scaling = PG_ROPE_YARN, .rope_factor = NAN, .rope_orig_len = 8);
    BAD("pg_rotary_new: rope_factor 0.5 < 1 is meaningless", .scaling = PG_ROPE_NTK, .rope_factor = 0.5);
    BAD("rope_factor 0.5 < 1 is meaningless", .scaling = PG_ROPE_YARN, .rope_factor = 0.5, .rope_orig_len = 8);
    BAD("rope_factor 0.5 < 1 is meaningless", .scaling = PG_ROPE_DYNAMIC_NTK, .rope_factor = 0.5, .rope_orig_len = 8);
    BAD("pg_rotary_new: rope_orig_len (the trained length) must be >= 1", .scaling = PG_ROPE_YARN,
        .rope_factor = 4);
    BAD("rope_orig_len (the trained length) must be >= 1 for dynamic_ntk, dynamic_linear, yarn, part_ntk and "
        "dynamic_yarn, got -3", .scaling = PG_ROPE_DYNAMIC_NTK,
        .rope_orig_len = -3);
    BAD("rope_orig_len", .scaling = PG_ROPE_DYNAMIC_LINEAR);
    BAD("pg_rotary_new: yarn_beta_fast (1) must be > yarn_beta_slow (2) > 0", .scaling = PG_ROPE_YARN,
        .rope_factor = 4, .rope_orig_len = 8, .yarn_beta_fast = 1, .yarn_beta_slow = 2);
    BAD("yarn_beta_fast (32) must be > yarn_beta_slow (-1) > 0", .scaling = PG_ROPE_YARN, .rope_factor = 4,
        .rope_orig_len = 8, .yarn_beta_slow = -1);
    BAD("pg_rotary_new: yarn_extrapolation_factor (-1) must be >= 0", .scaling = PG_ROPE_YARN, .rope_factor = 4,
        .rope_orig_len = 8, .yarn_extrapolation_factor = -1);
    BAD("yarn_attn_factor (-2) > 0", .scaling = PG_ROPE_YARN, .rope_factor = 4, .rope_orig_len = 8,
        .yarn_attn_factor = -2);
    BAD("pg_rotary_new: yarn_ramp must be", .scaling = PG_ROPE_YARN, .rope_factor = 4, .rope_orig_len = 8,
        .yarn_ramp = (pg_rope_ramp)5);
    BAD("pg_rotary_new: rope_max_len (-4) must be >= 1", .scaling = PG_ROPE_DYNAMIC_YARN, .rope_orig_len = 8,
        .rope_max_len = -4);
    BAD("yarn_ntk_factor (-1) >= 0", .scaling = PG_ROPE_PART_NTK, .rope_factor = 2, .rope_orig_len = 8,
        .yarn_ntk_factor = -1);
    BAD("rope_orig_len", .scaling = PG_ROPE_PART_NTK, .rope_factor = 2);
    BAD("pg_rotary_new: scaling must be one of none, linear, ntk", .scaling = (pg_rope_scaling)9);
    BAD("pg_rotary_new: scaling is set: leave base_rescale_factor (2)", .scaling = PG_ROPE_NTK, .rope_factor = 2,
        .base_rescale_factor = 2);
    BAD("interpolation_factor (3)", .scaling = PG_ROPE_LINEAR, .rope_factor = 2, .interpolation_factor = 3);
    BAD("pg_rotary_new: ntk scaling needs freq_dim > 2", .scaling = PG_ROPE_NTK, .rope_factor = 2, .n_dims = 2,
        .freq_dim = 2);
    pg_posmod *m = rot_new(4, (pg_rotary_opts){0});
    double f[2];
    pg_clear_error();
    cr_assert_eq(pg_rotary_frequencies(m, 0.5, f, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_rotary_frequencies: len must be finite and >= 1"), "%s", pg_last_error());
    cr_assert_eq(pg_rotary_frequencies(m, 4, NULL, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_rotary_frequencies: out is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_rotary_frequencies(NULL, 4, f, NULL), -1);
    cr_assert(strstr(pg_last_error(), "is not a rotary module"), "%s", pg_last_error());
    pg_module_free(&m->base);
}
