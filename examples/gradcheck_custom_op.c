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
 * Then the same op with a deliberately wrong backward (the w[h]^2 of the last
 * line written as w[h], a classic slip) is checked, and the report that catches
 * it is printed. Exit code 0 when the good op passes and the bad one is caught.
 * --plot FILE draws every analytic gradient against its numeric estimate, for
 * both ops: on the diagonal where the backward is right. */
#include "../posgrad.h" /* relative to this file: also found when a test includes it */
#include "../formats/plot.h"
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    pg_gradcheck_result good, bad;
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

/* Runs both checks; 0 when the good op passes and the bad one is caught. */
int gradcheck_custom_op_run(uint64_t seed, int verbose, const char *plot, gradcheck_custom_op_result *res)
{
    enum { H = 2, L = 5 };
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
        if (verbose) {
            print_report("gauss_bias with the correct backward:", &res->good);
            print_report("\ngauss_bias with a wrong backward (dL/dw divides by w, not w^2):", &res->bad);
        }
        rc = res->good.ok && !res->bad.ok ? 0 : 1;
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
    const char *plot = NULL;
    const cli_flag flags[] = {{"seed", CLI_U64, &seed, .help = "seed of the op's inputs s, a and w"},
                              {"plot", CLI_STR, &plot, .help = "also draw analytic against numeric gradients to this PNG"}};
    int p = cli_parse("gradcheck_custom_op", argc, argv, flags, 2,
                      "Checks a user-written positional-bias op with pg_gradcheck, then catches a wrong backward.\n"
                      "Exit status 0 when the correct op passes and the wrong one is caught, 1 otherwise,\n"
                      "2 for a bad argument.");
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (cli_threads("gradcheck_custom_op", 0) != 0)
        return CLI_EXIT_USAGE;
    gradcheck_custom_op_result res;
    int rc = gradcheck_custom_op_run(seed, 1, plot, &res);
    printf("\n%s\n", rc == 0 ? "verdict: the correct op passes, the wrong backward is caught."
                             : "verdict: UNEXPECTED (see above).");
    return rc;
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return gradcheck_custom_op_main(argc, argv); }
#endif
