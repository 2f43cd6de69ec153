/* The float cross-entropy's rows in whole vectors (autograd/op_loss.c, ce_fwd_vec_f32 with
 * AVX-512 or AVX2, C a multiple of 16) against the loop's arithmetic written out here: the
 * loss and the logits' gradient (which reads the saved log-sum-exp) bit for bit, with
 * ignored targets, label smoothing, rows a multiple of 16 and 8 and not. Without either, and
 * for other C, op_loss.c runs that loop itself, which this checks the same way. */
#include "testutil.h"

#include "../tensor/vmath.h"

#include <string.h>

#define LANES 16

/* op_loss.c's float exp: pg_vexpf where fmas are instructions, else through double */
static float exp_f(float x)
{
#if defined(__FMA__) || defined(__aarch64__)
    return pg_vexpf(x);
#else
    return (float)pg_vexp((double)x);
#endif
}

/* log sum exp of a row and, through *xsum, its sum, as lse_row_f32: 16 lane maxima, the
 * maximum x[0] then lane by lane; 16 lane sums in double of exp_f(x - m) and of x, 0 + lane
 * 0 + ... + lane 15, then the last C mod 16 elements */
static float loop_lse(const float *x, int64_t C, double *xsum)
{
    float mp[LANES];
    double sp[LANES] = {0}, xp[LANES] = {0}, sum = 0, xs = 0;
    int64_t c0 = C / LANES * LANES;
    for (int l = 0; l < LANES; l++)
        mp[l] = -INFINITY;
    for (int64_t c = 0; c < c0; c++)
        mp[c % LANES] = x[c] > mp[c % LANES] ? x[c] : mp[c % LANES];
    float m = x[0];
    for (int l = 0; l < LANES; l++)
        m = mp[l] > m ? mp[l] : m;
    for (int64_t c = c0; c < C; c++)
        m = x[c] > m ? x[c] : m;
    for (int64_t c = 0; c < c0; c++)
        sp[c % LANES] += (double)exp_f(x[c] - m), xp[c % LANES] += (double)x[c];
    for (int l = 0; l < LANES; l++)
        sum += sp[l], xs += xp[l];
    for (int64_t c = c0; c < C; c++)
        sum += (double)exp_f(x[c] - m), xs += (double)x[c];
    *xsum = xs;
    return (float)((double)m + log(sum));
}

typedef struct ce_case {
    int64_t rows, C;
    float smooth;
    bool ignore; /* every fifth target the ignored class */
} ce_case;

/* the loss and the gradient of the mean loss, as the loop and the (unchanged) backward
 * compute them; one block of rows (rows x C below op_loss.c's block of work) */
static float loop_ce(const ce_case *c, float *gx, const float *x, const int64_t *tg)
{
    double total = 0, count = 0;
    float *lse = malloc((size_t)c->rows * sizeof *lse);
    for (int64_t r = 0; r < c->rows; r++) {
        if (tg[r] == -100)
            continue;
        double xsum;
        const float l = lse[r] = loop_lse(x + r * c->C, c->C, &xsum);
        float loss = (1.0f - c->smooth) * (l - x[r * c->C + tg[r]]);
        if (c->smooth > 0)
            loss += c->smooth * (l - (float)xsum / (float)c->C);
        total += loss, count++;
    }
    const float up = (float)(1.0 / count), off = c->smooth / (float)c->C;
    for (int64_t r = 0; r < c->rows; r++) {
        float *g = gx + r * c->C;
        for (int64_t k = 0; k < c->C; k++)
            g[k] = tg[r] == -100 ? 0.0f : up * (exp_f(x[r * c->C + k] - lse[r]) - off);
        if (tg[r] != -100)
            g[tg[r]] -= up * (1.0f - c->smooth);
    }
    free(lse);
    return (float)(total / count);
}

static void check_case(const ce_case *c)
{
    pg_rng r = pg_rng_init((uint64_t)(c->rows * 7 + c->C));
    pg_tensor *x = pg_randn(NULL, PG_F32, PG_SHAPE(c->rows, c->C), &r), *tg = pg_empty(NULL, PG_I64, PG_SHAPE(c->rows));
    float *xs = x->data;
    for (int64_t i = 0; i < x->numel; i++)
        xs[i] *= 4.0f; /* logits a few units apart: the maxima and sums matter */
    int64_t *t = tg->data;
    for (int64_t i = 0; i < c->rows; i++)
        t[i] = c->ignore && i % 5 == 2 ? -100 : (i * 37 + 11) % c->C;
    x->requires_grad = true;
    float *gx = malloc((size_t)x->numel * sizeof *gx);
    const float want = loop_ce(c, gx, xs, t);
    pg_graph *g = pg_graph_new();
    pg_tensor *loss = pg_cross_entropy(g, x, tg, -100, c->smooth);
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    const float got = *(const float *)loss->data;
    cr_assert(!memcmp(&got, &want, sizeof got),
              "loss %.9g, the loop's %.9g: rows %lld, C %lld, smoothing %g, ignore %d", got, want,
              (long long)c->rows, (long long)c->C, c->smooth, c->ignore);
    cr_assert(!memcmp(x->grad->data, gx, (size_t)x->numel * sizeof *gx),
              "the logits' gradient differs from the loop's: rows %lld, C %lld, smoothing %g, ignore %d",
              (long long)c->rows, (long long)c->C, c->smooth, c->ignore);
    pg_graph_free(g);
    free_all(2, (pg_tensor *[]){x, tg});
    free(gx);
}

/* shapes below 2 x 4096 logits (one block: the losses added in row order) */
static void all_cases(void *ctx)
{
    (void)ctx;
    static const int64_t shapes[][2] = {{31, 256}, {16, 64}, {5, 16}, {1, 32}, {40, 48}, {23, 100}, {9, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int k = 0; k < 4; k++) {
            ce_case c = {shapes[s][0], shapes[s][1], k & 1 ? 0.1f : 0.0f, k & 2};
            check_case(&c);
        }
}

Test(loss_rows, cross_entropy_same_bits_as_the_loop) { on_1_and_2_threads(all_cases, NULL); }
