/* The float norms' rows in whole vectors (autograd/op_norm.c, norm_fwd_vec_f32 and
 * norm_bwd_vec_f32 with AVX-512 or AVX2, D a multiple of 16) against the loops' arithmetic
 * written out here, element by element and sum by sum: the same bits, with and without
 * weight and bias, centred or not, a fresh gradient or one added to. Without either, and for
 * other D, op_norm.c runs those loops themselves, which this checks the same way. */
#include "testutil.h"

#include <string.h>

#define LANES 16

/* a row's sum as the loops take it: lane l sums elements l, l + 16, ... in double, in order;
 * the total is 0 + the last D mod 16 elements + lane 0 + ... + lane 15. With mean: of the
 * squares (x - mean)^2 */
static double loop_sum(const float *x, int64_t D, const double *mean)
{
    double part[LANES] = {0}, s = 0;
    int64_t j0 = D / LANES * LANES;
    for (int64_t j = 0; j < D; j++) {
        double v = mean ? ((double)x[j] - *mean) * ((double)x[j] - *mean) : (double)x[j];
        if (j < j0)
            part[j % LANES] += v;
        else
            s += v;
    }
    for (int l = 0; l < LANES; l++)
        s += part[l];
    return s;
}

typedef struct norm_case {
    int64_t rows, D;
    bool center, weight, bias, added; /* added: x's gradient is added to, not fresh */
} norm_case;

/* y, and per row mean and rstd, as the loops compute them */
static void loop_forward(const norm_case *c, float *y, double *mean, double *rstd, const float *x, const float *w,
                         const float *b)
{
    for (int64_t r = 0; r < c->rows; r++) {
        const float *xr = x + r * c->D;
        mean[r] = c->center ? loop_sum(xr, c->D, NULL) / (double)c->D : 0.0;
        rstd[r] = 1.0 / sqrt(loop_sum(xr, c->D, &mean[r]) / (double)c->D + 1e-5);
        const float mu = (float)mean[r], rs = (float)rstd[r];
        for (int64_t j = 0; j < c->D; j++)
            y[r * c->D + j] = (xr[j] - mu) * rs * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
    }
}

/* gx (+)= dx row by row; gw, gb = the rows' sums of dy xhat and dy in double, in row order
 * (one task: rows x D below op_norm.c's block of work), rounded to float */
static void loop_backward(const norm_case *c, float *gx, float *gw, float *gb, const float *gy, const float *x,
                          const float *w, const double *mean, const double *rstd)
{
    const int64_t D = c->D;
    double *aw = calloc((size_t)D, sizeof *aw), *ab = calloc((size_t)D, sizeof *ab);
    for (int64_t r = 0; r < c->rows; r++) {
        const float *g = gy + r * D, *xr = x + r * D, mu = (float)mean[r], rs = (float)rstd[r];
        double pd[LANES] = {0}, pdx[LANES] = {0}, sd = 0, sdx = 0;
        int64_t j0 = D / LANES * LANES;
        for (int64_t j = 0; j < D; j++) {
            const float xhat = (xr[j] - mu) * rs, d = g[j] * (w ? w[j] : 1.0f);
            aw[j] += (double)(g[j] * xhat);
            ab[j] += (double)g[j];
            if (j < j0)
                pd[j % LANES] += d, pdx[j % LANES] += d * xhat;
            else
                sd += d, sdx += d * xhat;
        }
        for (int l = 0; l < LANES; l++)
            sd += pd[l], sdx += pdx[l];
        const float md = c->center ? (float)(sd / (double)D) : 0.0f, mdx = (float)(sdx / (double)D);
        for (int64_t j = 0; j < D; j++) {
            const float t = rs * (g[j] * (w ? w[j] : 1.0f) - md - (xr[j] - mu) * rs * mdx);
            gx[r * D + j] = c->added ? gx[r * D + j] + t : t;
        }
    }
    for (int64_t j = 0; j < D; j++)
        gw[j] = 0.0f + (float)aw[j], gb[j] = 0.0f + (float)ab[j];
    free(aw);
    free(ab);
}

static void assert_bits(const pg_tensor *got, const float *want, const char *what, const norm_case *c)
{
    cr_assert(!memcmp(got->data, want, (size_t)got->numel * sizeof(float)),
              "%s differs from the loops': rows %lld, D %lld, center %d, weight %d, bias %d, added %d", what,
              (long long)c->rows, (long long)c->D, c->center, c->weight, c->bias, c->added);
}

static void check_case(const norm_case *c)
{
    const int64_t n = c->rows * c->D;
    pg_rng r = pg_rng_init((uint64_t)(c->rows * 131 + c->D));
    pg_tensor *x = pg_randn(NULL, PG_F32, PG_SHAPE(c->rows, c->D), &r);
    pg_tensor *gy = pg_randn(NULL, PG_F32, PG_SHAPE(c->rows, c->D), &r);
    pg_tensor *w = c->weight ? pg_randn(NULL, PG_F32, PG_SHAPE(c->D), &r) : NULL;
    pg_tensor *b = c->bias ? pg_randn(NULL, PG_F32, PG_SHAPE(c->D), &r) : NULL;
    pg_tensor *all[] = {x, gy, w, b};
    for (int i = 0; i < 4; i++)
        if (all[i] && i != 1)
            all[i]->requires_grad = true;
    float *y = malloc((size_t)n * sizeof *y), *gx = calloc((size_t)n, sizeof *gx);
    float *gw = malloc((size_t)c->D * sizeof *gw), *gb = malloc((size_t)c->D * sizeof *gb);
    double *mean = malloc((size_t)c->rows * sizeof *mean), *rstd = malloc((size_t)c->rows * sizeof *rstd);
    pg_graph *g = pg_graph_new();
    if (c->added) { /* x's gradient first holds gy itself */
        cr_assert_eq(pg_backward_with(g, pg_mul_scalar(g, x, 1.0), gy), 0, "%s", pg_graph_error(g));
        memcpy(gx, x->grad->data, (size_t)n * sizeof *gx);
        pg_graph_reset(g);
    }
    pg_tensor *out = c->center ? pg_layer_norm(g, x, 1, w, b, 1e-5) : pg_rms_norm(g, x, 1, w, 1e-5);
    cr_assert_not_null(out, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward_with(g, out, gy), 0, "%s", pg_graph_error(g));
    loop_forward(c, y, mean, rstd, x->data, w ? w->data : NULL, b && c->center ? b->data : NULL); /* rms: no bias */
    loop_backward(c, gx, gw, gb, gy->data, x->data, w ? w->data : NULL, mean, rstd);
    assert_bits(out, y, "y", c);
    assert_bits(x->grad, gx, "x's gradient", c);
    if (w)
        assert_bits(w->grad, gw, "the weight's gradient", c);
    if (b && c->center)
        assert_bits(b->grad, gb, "the bias's gradient", c);
    pg_graph_free(g);
    free_all(4, all);
    free(y), free(gx), free(gw), free(gb), free(mean), free(rstd);
}

/* shapes below 2 x 8192 elements (one task: the weight's and bias's gradients summed in row
 * order), D a multiple of 16 and not, rows a multiple of 8 and not */
static void all_cases(void *ctx)
{
    (void)ctx;
    static const int64_t shapes[][2] = {{37, 128}, {8, 16}, {9, 48}, {1, 16}, {300, 32}, {23, 100}, {5, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int k = 0; k < 16; k++) {
            norm_case c = {shapes[s][0], shapes[s][1], k & 1, k & 2, k & 4, k & 8};
            check_case(&c);
        }
}

Test(norm_rows, same_bits_as_the_loops) { on_1_and_2_threads(all_cases, NULL); }
