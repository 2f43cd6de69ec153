/* The norms' rows in whole vectors (autograd/op_norm.c, norm_fwd_vec_<sfx> and
 * norm_bwd_vec_<sfx> with AVX-512 or AVX2, D a multiple of 16; float and double) against
 * the loops' arithmetic written out here, element by element and sum by sum: the same bits,
 * with and without weight and bias, centred or not, a fresh gradient or one added to.
 * Without either, and for other D, op_norm.c runs those loops themselves, which this checks
 * the same way. */
#include "testutil.h"

#include <string.h>

#define LANES 16

typedef struct norm_case {
    int64_t rows, D;
    bool center, weight, bias, added; /* added: x's gradient is added to, not fresh */
} norm_case;

#define DEFINE_NORM_REF(T, sfx, DT)                                                                                  \
    /* a row's sum as the loops take it: lane l sums elements l, l + 16, ... in double, in order;                    \
     * the total is 0 + the last D mod 16 elements + lane 0 + ... + lane 15. With mean: of the                       \
     * squares (x - mean)^2 */                                                                                       \
    static double loop_sum_##sfx(const T *x, int64_t D, const double *mean)                                          \
    {                                                                                                                \
        double part[LANES] = {0}, s = 0;                                                                             \
        int64_t j0 = D / LANES * LANES;                                                                              \
        for (int64_t j = 0; j < D; j++) {                                                                            \
            double v = mean ? ((double)x[j] - *mean) * ((double)x[j] - *mean) : (double)x[j];                        \
            if (j < j0)                                                                                              \
                part[j % LANES] += v;                                                                                \
            else                                                                                                     \
                s += v;                                                                                              \
        }                                                                                                            \
        for (int l = 0; l < LANES; l++)                                                                              \
            s += part[l];                                                                                            \
        return s;                                                                                                    \
    }                                                                                                                \
                                                                                                                     \
    /* y, and per row mean and rstd, as the loops compute them */                                                    \
    static void loop_forward_##sfx(const norm_case *c, T *y, double *mean, double *rstd, const T *x, const T *w,     \
                                   const T *b)                                                                       \
    {                                                                                                                \
        for (int64_t r = 0; r < c->rows; r++) {                                                                      \
            const T *xr = x + r * c->D;                                                                              \
            mean[r] = c->center ? loop_sum_##sfx(xr, c->D, NULL) / (double)c->D : 0.0;                               \
            rstd[r] = 1.0 / sqrt(loop_sum_##sfx(xr, c->D, &mean[r]) / (double)c->D + 1e-5);                          \
            const T mu = (T)mean[r], rs = (T)rstd[r];                                                                \
            for (int64_t j = 0; j < c->D; j++)                                                                       \
                y[r * c->D + j] = (xr[j] - mu) * rs * (w ? w[j] : (T)1) + (b ? b[j] : (T)0);                         \
        }                                                                                                            \
    }                                                                                                                \
                                                                                                                     \
    /* gx (+)= dx row by row; gw, gb = the rows' sums of dy xhat and dy in double, in row order                      \
     * (one task: rows x D below op_norm.c's block of work), rounded to the element type */                          \
    static void loop_backward_##sfx(const norm_case *c, T *gx, T *gw, T *gb, const T *gy, const T *x, const T *w,    \
                                    const double *mean, const double *rstd)                                          \
    {                                                                                                                \
        const int64_t D = c->D;                                                                                      \
        double *aw = calloc((size_t)D, sizeof *aw), *ab = calloc((size_t)D, sizeof *ab);                             \
        for (int64_t r = 0; r < c->rows; r++) {                                                                      \
            const T *g = gy + r * D, *xr = x + r * D, mu = (T)mean[r], rs = (T)rstd[r];                              \
            double pd[LANES] = {0}, pdx[LANES] = {0}, sd = 0, sdx = 0;                                               \
            int64_t j0 = D / LANES * LANES;                                                                          \
            for (int64_t j = 0; j < D; j++) {                                                                        \
                const T xhat = (xr[j] - mu) * rs, d = g[j] * (w ? w[j] : (T)1);                                      \
                aw[j] += (double)(g[j] * xhat);                                                                      \
                ab[j] += (double)g[j];                                                                               \
                if (j < j0)                                                                                          \
                    pd[j % LANES] += d, pdx[j % LANES] += d * xhat;                                                  \
                else                                                                                                 \
                    sd += d, sdx += d * xhat;                                                                        \
            }                                                                                                        \
            for (int l = 0; l < LANES; l++)                                                                          \
                sd += pd[l], sdx += pdx[l];                                                                          \
            const T md = c->center ? (T)(sd / (double)D) : (T)0, mdx = (T)(sdx / (double)D);                         \
            for (int64_t j = 0; j < D; j++) {                                                                        \
                const T t = rs * (g[j] * (w ? w[j] : (T)1) - md - (xr[j] - mu) * rs * mdx);                          \
                gx[r * D + j] = c->added ? gx[r * D + j] + t : t;                                                    \
            }                                                                                                        \
        }                                                                                                            \
        for (int64_t j = 0; j < D; j++)                                                                              \
            gw[j] = (T)0 + (T)aw[j], gb[j] = (T)0 + (T)ab[j];                                                        \
        free(aw);                                                                                                    \
        free(ab);                                                                                                    \
    }                                                                                                                \
                                                                                                                     \
    static void assert_bits_##sfx(const pg_tensor *got, const T *want, const char *what, const norm_case *c)         \
    {                                                                                                                \
        cr_assert(!memcmp(got->data, want, (size_t)got->numel * sizeof(T)),                                          \
                  "%s (" #T ") differs from the loops': rows %lld, D %lld, center %d, weight %d, "                   \
                  "bias %d, added %d", what,                                                                         \
                  (long long)c->rows, (long long)c->D, c->center, c->weight, c->bias, c->added);                     \
    }                                                                                                                \
                                                                                                                     \
    static void check_case_##sfx(const norm_case *c)                                                                 \
    {                                                                                                                \
        const int64_t n = c->rows * c->D;                                                                            \
        pg_rng r = pg_rng_init((uint64_t)(c->rows * 131 + c->D));                                                    \
        pg_tensor *x = pg_randn(NULL, DT, PG_SHAPE(c->rows, c->D), &r);                                              \
        pg_tensor *gy = pg_randn(NULL, DT, PG_SHAPE(c->rows, c->D), &r);                                             \
        pg_tensor *w = c->weight ? pg_randn(NULL, DT, PG_SHAPE(c->D), &r) : NULL;                                    \
        pg_tensor *b = c->bias ? pg_randn(NULL, DT, PG_SHAPE(c->D), &r) : NULL;                                      \
        pg_tensor *all[] = {x, gy, w, b};                                                                            \
        for (int i = 0; i < 4; i++)                                                                                  \
            if (all[i] && i != 1)                                                                                    \
                all[i]->requires_grad = true;                                                                        \
        T *y = malloc((size_t)n * sizeof *y), *gx = calloc((size_t)n, sizeof *gx);                                   \
        T *gw = malloc((size_t)c->D * sizeof *gw), *gb = malloc((size_t)c->D * sizeof *gb);                          \
        double *mean = malloc((size_t)c->rows * sizeof *mean), *rstd = malloc((size_t)c->rows * sizeof *rstd);       \
        pg_graph *g = pg_graph_new();                                                                                \
        if (c->added) { /* x's gradient first holds gy itself */                                                     \
            cr_assert_eq(pg_backward_with(g, pg_mul_scalar(g, x, 1.0), gy), 0, "%s", pg_graph_error(g));             \
            memcpy(gx, x->grad->data, (size_t)n * sizeof *gx);                                                       \
            pg_graph_reset(g);                                                                                       \
        }                                                                                                            \
        pg_tensor *out = c->center ? pg_layer_norm(g, x, 1, w, b, 1e-5) : pg_rms_norm(g, x, 1, w, 1e-5);             \
        cr_assert_not_null(out, "%s", pg_graph_error(g));                                                            \
        cr_assert_eq(pg_backward_with(g, out, gy), 0, "%s", pg_graph_error(g));                                      \
        /* rms: no bias */                                                                                           \
        loop_forward_##sfx(c, y, mean, rstd, x->data, w ? w->data : NULL, b && c->center ? b->data : NULL);          \
        loop_backward_##sfx(c, gx, gw, gb, gy->data, x->data, w ? w->data : NULL, mean, rstd);                       \
        assert_bits_##sfx(out, y, "y", c);                                                                           \
        assert_bits_##sfx(x->grad, gx, "x's gradient", c);                                                           \
        if (w)                                                                                                       \
            assert_bits_##sfx(w->grad, gw, "the weight's gradient", c);                                              \
        if (b && c->center)                                                                                          \
            assert_bits_##sfx(b->grad, gb, "the bias's gradient", c);                                                \
        pg_graph_free(g);                                                                                            \
        free_all(4, all);                                                                                            \
        free(y), free(gx), free(gw), free(gb), free(mean), free(rstd);                                               \
    }
DEFINE_NORM_REF(float, f32, PG_F32)
DEFINE_NORM_REF(double, f64, PG_F64)

/* shapes below 2 x 8192 elements (one task: the weight's and bias's gradients summed in row
 * order), D a multiple of 16 and not, rows a multiple of 8 and not */
static void all_cases(void *ctx)
{
    (void)ctx;
    static const int64_t shapes[][2] = {{37, 128}, {8, 16}, {9, 48}, {1, 16}, {300, 32}, {23, 100}, {5, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int k = 0; k < 16; k++) {
            norm_case c = {shapes[s][0], shapes[s][1], k & 1, k & 2, k & 4, k & 8};
            check_case_f32(&c);
            check_case_f64(&c);
        }
}

Test(norm_rows, same_bits_as_the_loops) { on_1_and_2_threads(all_cases, NULL); }
