/* gradcheck_custom_op: write your own differentiable op and prove its backward.
 *
 * The op is a new positional bias, a Gaussian-distance bias with two learnable
 * numbers per head, added to attention logits s (H, L, L):
 *
 *   out[h, i, j] = s[h, i, j] + b[h, i, j],   b[h, i, j] = -a[h] (i - j)^2 / w[h]
 *
 * so a head with a large a / w attends only near the diagonal. With upstream
 * gradient G = dLoss/dout, the backward rule is
 *
 *   dLoss/ds[h, i, j] = G[h, i, j]
 *   dLoss/da[h]       = sum_ij G[h, i, j] * (-(i - j)^2 / w[h])
 *   dLoss/dw[h]       = sum_ij G[h, i, j] * ( a[h] (i - j)^2 / w[h]^2 )
 *
 * The op is written with pg_custom (docs/autograd.md), composed with the
 * built-in softmax, and checked by pg_gradcheck in f64 (and again in f32).
 * A walk-through in four steps, each printed with a short explanation:
 *   1. the op with its correct backward passes;
 *   2. the same op with a deliberately wrong backward (the w[h]^2 of the last
 *      line written as w[h], a classic slip) is caught, naming the element;
 *   3. a kink: |x| at x = 0 exactly is reported as a non-differentiable point,
 *      not a failure (and a slope outside [-1, 1] there still fails);
 *   4. fast mode on a whole transformer block (pg_gradcheck_module), timed.
 * Exit code 0 when every step comes out as it should.
 * --plot FILE draws every analytic gradient against its numeric estimate, for
 * both ops: on the diagonal where the backward is right.
 * --eps-plot FILE draws the error of the finite difference against its step, in
 * float64 and float32, central and Richardson (examples/gradcheck_eps.h,
 * docs/teaching.md "Finite differences"). */
#include "../posgrad.h" /* relative to this file: also found when a test includes it */
#include "../formats/plot.h"
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What the op is told besides its inputs; copied into the graph by pg_custom. */
typedef struct gauss_ctx {
    int wrong_backward; /* 1: the deliberately wrong dLoss/dw */
} gauss_ctx;

/* in[0] = s (H, L, L), in[1] = a (H), in[2] = w (H) -> out (H, L, L) */
static int gauss_bias_forward(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx)
{
    (void)n_in, (void)ctx;
    int64_t H = in[0]->shape[0], L = in[0]->shape[1];
    for (int64_t h = 0; h < H; h++) {
        double a = pg_get(in[1], h), w = pg_get(in[2], h);
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++) {
                int64_t at = (h * L + i) * L + j;
                double d2 = (double)((i - j) * (i - j));
                pg_set(out, at, pg_get(in[0], at) - a * d2 / w);
            }
    }
    return 0;
}

/* grad_in[k] arrives zeroed (or NULL when in[k] needs no gradient); add into it. */
static int gauss_bias_backward(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                               pg_tensor *const *in, int n_in, void *ctx)
{
    (void)out, (void)n_in;
    const gauss_ctx *c = ctx;
    int64_t H = in[0]->shape[0], L = in[0]->shape[1];
    for (int64_t h = 0; h < H; h++) {
        double a = pg_get(in[1], h), w = pg_get(in[2], h);
        double w_pow = c->wrong_backward ? w : w * w; /* the bug: w instead of w^2 */
        double da = 0, dw = 0;
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++) {
                int64_t at = (h * L + i) * L + j;
                double G = pg_get(grad_out, at), d2 = (double)((i - j) * (i - j));
                if (grad_in[0])
                    pg_set(grad_in[0], at, pg_get(grad_in[0], at) + G);
                da += G * (-d2 / w);
                dw += G * (a * d2 / w_pow);
            }
        if (grad_in[1])
            pg_set(grad_in[1], h, pg_get(grad_in[1], h) + da);
        if (grad_in[2])
            pg_set(grad_in[2], h, pg_get(grad_in[2], h) + dw);
    }
    return 0;
}

/* The pg_custom_op must outlive every graph that recorded it: static const. */
static const pg_custom_op GAUSS_BIAS = {
    .name = "gauss_bias", .forward = gauss_bias_forward, .backward = gauss_bias_backward};

/* What gradcheck differentiates: attention weights softmax(s + b) over keys,
 * (H, L, L). inputs: s, a, w. */
static pg_tensor *biased_attention(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    pg_tensor *biased = pg_custom(g, &GAUSS_BIAS, 3, in, 3, in[0]->shape, ctx, sizeof(gauss_ctx));
    return pg_softmax(g, biased, -1);
}

typedef struct gradcheck_custom_op_result {
    pg_gradcheck_result good, bad;       /* steps 1 and 2 */
    pg_gradcheck_result kink, kink_bad;  /* step 3: |x| at 0; the same with slope 2 claimed at 0 */
    pg_gradcheck_result block;           /* step 4: fast mode on a block */
    int block_tensors;                   /* the input and every parameter */
    int64_t block_elements;
    double block_ms, forward_ms;         /* the fast check; one forward of the block */
} gradcheck_custom_op_result;

static pg_tensor *param_f64(pg_rng *r, int ndim, const int64_t *shape, double lo, double hi)
{
    pg_tensor *t = pg_empty(NULL, PG_F64, ndim, shape);
    if (!t)
        return NULL;
    pg_fill_uniform(t, r, lo, hi);
    pg_set_requires_grad(t, true);
    return t;
}

static void print_report(const char *title, const pg_gradcheck_result *r)
{
    printf("%s\n", title);
    printf("  ok: %s   elements checked: %d\n", r->ok ? "yes" : "NO", r->checked);
    printf("  worst abs error %.3e, worst rel error %.3e (counted where abs error > atol)\n", r->max_abs_err,
           r->max_rel_err);
    if (r->worst_input >= 0)
        printf("  worst element: input %d (%s) index %lld: analytic %.10f, numeric %.10f\n", r->worst_input,
               r->worst_input == 0 ? "s" : r->worst_input == 1 ? "a" : "w", (long long)r->worst_index,
               r->worst_analytic, r->worst_numeric);
    if (r->ok) /* the f32 rerun is only meaningful once f64 passes */
        printf("  f32 rerun agrees: %s (max |f32 - f64| %.3e)\n", r->f32_ok ? "yes" : "no", r->f32_max_err);
    if (r->message[0])
        printf("  message: %s\n", r->message);
}

/* ---- step 3: a kink ---------------------------------------------------------------------------------- */

/* out = |x|; backward sign(x) G, with the slope at x = 0 taken as *(double *)ctx (0 is right: any value
 * in [-1, 1] is a subgradient; 2 is not) */
static int abs_forward(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx)
{
    (void)n_in, (void)ctx;
    for (int64_t i = 0; i < out->numel; i++)
        pg_set(out, i, fabs(pg_get(in[0], i)));
    return 0;
}

static int abs_backward(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                        pg_tensor *const *in, int n_in, void *ctx)
{
    (void)out, (void)n_in;
    double at0 = *(const double *)ctx;
    for (int64_t i = 0; grad_in[0] && i < grad_out->numel; i++) {
        double x = pg_get(in[0], i), slope = x > 0 ? 1.0 : x < 0 ? -1.0 : at0;
        pg_set(grad_in[0], i, pg_get(grad_in[0], i) + slope * pg_get(grad_out, i));
    }
    return 0;
}

static const pg_custom_op ABS_OP = {.name = "my_abs", .forward = abs_forward, .backward = abs_backward};

static pg_tensor *abs_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    return pg_custom(g, &ABS_OP, 1, in, in[0]->ndim, in[0]->shape, ctx, sizeof(double));
}

/* |x| at x = (-0.8, 0, 0.6, 1.3): element 1 sits exactly on the kink */
static void step_kink(gradcheck_custom_op_result *res)
{
    pg_tensor *x = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){4}, (const double[]){-0.8, 0, 0.6, 1.3});
    pg_set_requires_grad(x, true);
    double right = 0, wrong = 2;
    res->kink = pg_gradcheck(abs_fn, 1, &x, &right, NULL);
    res->kink_bad = pg_gradcheck(abs_fn, 1, &x, &wrong, NULL);
    pg_tensor_free(x);
}

/* ---- step 4: fast mode on a whole block --------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static pg_tensor *block_fn(pg_graph *g, pg_module *m, pg_tensor *const *in, int n, void *ctx)
{
    (void)n, (void)ctx;
    return pg_block_forward(g, (pg_block *)m, in[0], NULL);
}

/* A pre-norm block of width 32, 4 heads, a DPB bias, causal, in f64, on x (2, 16, 32). 0 or -1. */
static int step_block(uint64_t seed, gradcheck_custom_op_result *res)
{
    pg_rng r = pg_rng_init(seed);
    pg_block_config c = pg_block_defaults(32, 4);
    c.dtype = PG_F64;
    c.causal = true;
    pg_posmod *dpb = pg_posmod_make_dpb(&(pg_posmod_args){.dim = 32, .heads = 4, .head_dim = 8, .dtype = PG_F64,
                                                          .rng = &r});
    pg_block *b = dpb ? pg_block_new(&c, &dpb, 1, &r) : NULL;
    pg_tensor *x = b ? pg_randn(NULL, PG_F64, 3, (const int64_t[]){2, 16, 32}, &r) : NULL;
    pg_graph *g = pg_graph_new();
    if (!x || !g) {
        fprintf(stderr, "gradcheck_custom_op: %s\n", pg_last_error());
        pg_graph_free(g);
        pg_module_free(b ? &b->base : NULL);
        return -1;
    }
    pg_set_requires_grad(x, true);
    double t0 = now_ms();
    for (int k = 0; k < 5; k++) { /* one forward's time, for the full mode's estimate */
        pg_graph_reset(g);
        block_fn(g, &b->base, &x, 1, NULL);
    }
    res->forward_ms = (now_ms() - t0) / 5;
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.fast = true;
    t0 = now_ms();
    pg_module_gradcheck m = pg_gradcheck_module(block_fn, &b->base, 1, &x, NULL, &o);
    res->block_ms = now_ms() - t0;
    res->block = m.all;
    res->block_tensors = m.n;
    res->block_elements = x->numel + pg_module_num_elements(&b->base);
    pg_module_gradcheck_free(&m);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&b->base);
    return 0;
}

/* ---- what the walk-through prints --------------------------------------------------------------------- */

static void explain_steps_1_2(const gradcheck_custom_op_result *res)
{
    printf("step 1. A correct backward passes.\n"
           "  gradcheck nudges every input element by +-eps (1e-6) in float64, takes the central\n"
           "  difference (L(x+eps) - L(x-eps)) / 2eps of L = sum(v * out) for a random v, and compares it\n"
           "  with what the backward rule gave for that element.\n");
    print_report("gauss_bias with the correct backward:", &res->good);
    printf("\nstep 2. A wrong backward is caught, and the element named.\n"
           "  The same op, but dLoss/dw divides by w instead of w^2. The s and a elements still agree;\n"
           "  the first w element that does not is reported with both values.\n");
    print_report("gauss_bias with a wrong backward (dL/dw divides by w, not w^2):", &res->bad);
}

static void explain_steps_3_4(const gradcheck_custom_op_result *res)
{
    printf("\nstep 3. A kink is reported as a kink, not as a failure.\n"
           "  my_abs(x) = |x| at x = (-0.8, 0, 0.6, 1.3): element 1 sits exactly at the corner. The\n"
           "  central difference there is 0 (the average of the slopes -1 and +1), and the one-sided\n"
           "  slopes differ by 2, also at half the step: gradcheck calls it non-differentiable. Any\n"
           "  value between them (a subgradient; my_abs says 0) is accepted and counted in res.kinks.\n");
    printf("  ok: %s, elements checked %d, kinks %d (first: input %d element %lld)\n", res->kink.ok ? "yes" : "NO",
           res->kink.checked, res->kink.kinks, res->kink.kink_input, (long long)res->kink.kink_index);
    printf("  The same op claiming slope 2 at 0, outside [-1, 1], still fails:\n  %s\n",
           res->kink_bad.ok ? "(it passed: UNEXPECTED)" : res->kink_bad.message);
    printf("\nstep 4. Fast mode on a whole transformer block.\n"
           "  The full mode costs 2 forwards per element. Fast mode draws ONE random direction d per\n"
           "  tensor and compares the backward's u.J.d with the central difference along d: 2 forwards\n"
           "  per tensor. It can miss a wrong gradient in a few elements (their share of the sum is\n"
           "  small): use it first on big things, then the full mode on a small one to find the element.\n");
    printf("  block of width 32, 4 heads, DPB bias, x (2, 16, 32): %d tensors, %lld elements\n", res->block_tensors,
           (long long)res->block_elements);
    printf("  fast mode: %s, %d directions in %.0f ms; the full mode would take about 2 x %lld forwards of "
           "%.2f ms = %.0f s\n",
           res->block.ok ? "pass" : "FAIL", res->block.checked, res->block_ms, (long long)res->block_elements,
           res->forward_ms, 2.0 * (double)res->block_elements * res->forward_ms / 1e3);
    if (!res->block.ok)
        printf("  message: %s\n", res->block.message);
}

/* ---- the figure -------------------------------------------------------------------------------------- */
enum { N_GRADS = 2 * 5 * 5 + 2 + 2 }; /* the elements of s (2, 5, 5), a (2), w (2) */

/* Every element's analytic gradient of sum(v * f(in)) (one backward) and its
 * numeric estimate (central differences, step 1e-6), v uniform in [-1, 1). 0 or -1. */
static int gradient_pairs(pg_tensor *const *in, gauss_ctx *ctx, double ana[N_GRADS], double num[N_GRADS])
{
    pg_graph *g = pg_graph_new();
    pg_rng r = pg_rng_init(11);
    pg_tensor *v = pg_empty(NULL, PG_F64, PG_SHAPE(2, 5, 5)), *out = g ? biased_attention(g, in, 3, ctx) : NULL;
    int rc = v && out && pg_fill_uniform(v, &r, -1, 1) == 0 && pg_backward_with(g, out, v) == 0 ? 0 : -1;
    for (int k = 0, at = 0; rc == 0 && k < 3; k++) {
        for (int64_t j = 0; j < in[k]->numel; j++, at++) {
            ana[at] = in[k]->grad ? pg_get(in[k]->grad, j) : 0.0;
            double *x = pg_f64(in[k]), orig = x[j], side[2];
            for (int e = 0; e < 2; e++) {
                x[j] = orig + (e ? -1e-6 : 1e-6);
                pg_graph_reset(g);
                pg_no_grad_begin(g);
                pg_tensor *o = biased_attention(g, in, 3, ctx);
                pg_no_grad_end(g);
                side[e] = 0;
                for (int64_t i = 0; o && i < o->numel; i++)
                    side[e] += pg_get(v, i) * pg_get(o, i);
            }
            x[j] = orig;
            num[at] = (side[0] - side[1]) / 2e-6;
        }
        pg_tensor_free(in[k]->grad);
        in[k]->grad = NULL;
    }
    pg_tensor_free(v);
    pg_graph_free(g);
    return rc;
}

/* One panel: analytic against numeric, a series per input (s, a, w). 0 or -1. */
static int gradient_panel(pg_canvas *c, pg_tensor *const *in, gauss_ctx *ctx, const char *title)
{
    double ana[N_GRADS], num[N_GRADS];
    if (gradient_pairs(in, ctx, ana, num) != 0)
        return -1;
    static const char *const names[3] = {"d/ds (the logits)", "d/da (strength)", "d/dw (width)"};
    pg_series s[3];
    for (int k = 0, at = 0; k < 3; at += (int)in[k]->numel, k++)
        s[k] = (pg_series){.label = names[k], .x = num + at, .y = ana + at, .n = in[k]->numel,
                           .style = PG_PLOT_STYLE_POINTS, .color = k};
    pg_lineplot_opts o = {.title = title, .xlabel = "numeric gradient (central differences)",
                          .ylabel = "analytic gradient (the op's backward)", .width = 560, .height = 480,
                          .identity_line = true};
    return pg_plot_lines_canvas(c, s, 3, &o);
}

/* path: the two panels side by side under a title. 0, or -1 after a message. */
static int draw_gradients(const char *path, pg_tensor *const *in)
{
    gauss_ctx good = {0}, bad = {1};
    pg_canvas p[2] = {{0}, {0}}, all = {0};
    int rc = gradient_panel(&p[0], in, &good, "correct backward: every point on y = x");
    if (rc == 0)
        rc = gradient_panel(&p[1], in, &bad, "wrong backward (dL/dw over w, not w^2)");
    if (rc == 0)
        rc = pg_canvas_init(&all, p[0].width + p[1].width, p[0].height + 40);
    if (rc == 0) {
        const char *t = "gauss_bias: analytic against numeric gradients, each element of s, a, w";
        pg_text_draw(&all, (all.width - pg_text_width(t, 2)) / 2, 10, t, 2, (pg_rgb){0, 0, 0});
        for (int k = 0; k < 2; k++) /* the panels' rows, copied in */
            for (int64_t y = 0; y < p[k].height; y++)
                memcpy(all.rgb + ((y + 40) * all.width + k * p[0].width) * 3, p[k].rgb + y * p[k].width * 3,
                       (size_t)p[k].width * 3);
        rc = pg_canvas_write_png(&all, path);
    }
    if (rc != 0)
        fprintf(stderr, "gradcheck_custom_op: cannot draw '%s': %s\n", path, pg_last_error());
    pg_canvas_free(&p[0]);
    pg_canvas_free(&p[1]);
    pg_canvas_free(&all);
    return rc;
}

#include "gradcheck_eps.h"

/* Whether every step came out as it should: 1 passes, 2 is caught on w, 3 is a kink at element 1 (and its
 * wrong twin fails), 4 passes in fast mode. */
static bool steps_as_expected(const gradcheck_custom_op_result *res)
{
    return res->good.ok && !res->bad.ok && res->bad.worst_input == 2 && res->kink.ok && res->kink.kinks == 1 &&
           res->kink.kink_index == 1 && !res->kink_bad.ok && res->block.ok;
}

/* Runs the four steps (printed when verbose); 0 when each comes out as it should. */
int gradcheck_custom_op_run(uint64_t seed, int verbose, const char *plot, gradcheck_custom_op_result *res)
{
    enum { H = 2, L = 5 };
    memset(res, 0, sizeof *res);
    pg_rng rng = pg_rng_init(seed);
    pg_tensor *in[3] = {
        param_f64(&rng, PG_SHAPE(H, L, L), -1, 1), /* s: logits */
        param_f64(&rng, PG_SHAPE(H), 0.2, 1.0),    /* a: strength */
        param_f64(&rng, PG_SHAPE(H), 1.0, 3.0),    /* w: width, kept away from 0 */
    };
    int rc = 1;
    if (in[0] && in[1] && in[2]) {
        gauss_ctx good = {0}, bad = {1};
        res->good = pg_gradcheck(biased_attention, 3, in, &good, NULL);
        res->bad = pg_gradcheck(biased_attention, 3, in, &bad, NULL);
        step_kink(res);
        rc = step_block(seed, res) == 0 && steps_as_expected(res) ? 0 : 1;
        if (verbose) {
            explain_steps_1_2(res);
            explain_steps_3_4(res);
        }
        if (plot && draw_gradients(plot, in) != 0)
            rc = 1;
        else if (plot && verbose)
            printf("\nwrote %s: analytic against numeric gradients of both ops\n", plot);
    } else {
        fprintf(stderr, "gradcheck_custom_op: %s\n", pg_last_error());
    }
    for (int k = 0; k < 3; k++)
        pg_tensor_free(in[k]);
    return rc;
}

int gradcheck_custom_op_main(int argc, char **argv)
{
    uint64_t seed = 7;
    const char *plot = NULL, *eps_png = NULL;
    const cli_flag flags[] = {{"seed", CLI_U64, &seed, .help = "seed of the op's inputs s, a and w"},
                              {"plot", CLI_STR, &plot, .help = "also draw analytic against numeric gradients to this PNG"},
                              {"eps-plot", CLI_STR, &eps_png,
                               .help = "also measure the finite difference's error against its step, draw it to this PNG"}};
    int p = cli_parse("gradcheck_custom_op", argc, argv, flags, 3,
                      "A gradcheck walk-through: a user-written positional-bias op passes pg_gradcheck, a wrong\n"
                      "backward is caught, a kink is reported as a kink, a transformer block passes in fast mode.\n"
                      "Exit status 0 when every step comes out so, 1 otherwise, 2 for a bad argument.");
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (cli_threads("gradcheck_custom_op", 0) != 0)
        return CLI_EXIT_USAGE;
    gradcheck_custom_op_result res;
    int rc = gradcheck_custom_op_run(seed, 1, plot, &res);
    if (eps_png) {
        eps_study st;
        if (eps_study_run(&st) != 0 || eps_plot(eps_png, &st) != 0)
            rc = 1;
        else {
            eps_print(&st);
            printf("wrote %s: the error against the step, log-log\n", eps_png);
        }
    }
    printf("\n%s\n", rc == 0 ? "verdict: the correct op passes, the wrong backward is caught, the kink is a kink, "
                               "the block passes in fast mode."
                             : "verdict: UNEXPECTED (see above).");
    return rc;
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return gradcheck_custom_op_main(argc, argv); }
#endif
