/* fit_line: the smallest posgrad program that learns something.
 *
 * A two-layer tanh network fits y = sin(3x) on [-1, 1] by full-batch gradient
 * descent, written with nothing but tensors, autograd ops and a hand-written
 * update. The loss falls from about 0.7 to under 0.002. */
#include "posgrad.h"

#include <stdio.h>

enum { N = 256, HIDDEN = 32, STEPS = 3000 };

/* w -= lr * grad, then zero the grad */
static void sgd_step(pg_tensor *w, float lr)
{
    float *p = pg_f32(w), *gr = pg_f32(w->grad);
    for (int64_t i = 0; i < w->numel; i++)
        p[i] -= lr * gr[i];
    pg_zero_grad(w);
}

static pg_tensor *param(pg_rng *r, int64_t rows, int64_t cols, double scale)
{
    pg_tensor *t = pg_empty(NULL, PG_F32, PG_SHAPE(rows, cols));
    pg_fill_uniform(t, r, -scale, scale);
    pg_set_requires_grad(t, true);
    return t;
}

int main(void)
{
    pg_rng rng = pg_rng_init(0);
    /* data: x (N, 1) on a grid, target y = sin(3x) */
    pg_tensor *x = pg_linspace(NULL, PG_F32, -1, 1, N);
    pg_tensor *x2 = pg_reshape(NULL, x, PG_SHAPE(N, 1));
    pg_tensor *x3 = pg_mul_scalar(NULL, x2, 3.0);
    pg_tensor *y = pg_sin(NULL, x3);
    pg_tensor_free(x3);
    /* parameters: (1, H), (1, H), (H, 1), (1, 1) */
    pg_tensor *w1 = param(&rng, 1, HIDDEN, 1.0), *b1 = param(&rng, 1, HIDDEN, 1.0);
    pg_tensor *w2 = param(&rng, HIDDEN, 1, 0.3), *b2 = param(&rng, 1, 1, 0.3);
    pg_tensor *params[] = {w1, b1, w2, b2};

    pg_graph *g = pg_graph_new();
    for (int step = 0; step <= STEPS; step++) {
        pg_graph_reset(g);
        pg_tensor *h = pg_tanh(g, pg_add(g, pg_matmul(g, x2, w1, false, false), b1)); /* (N, H) */
        pg_tensor *pred = pg_add(g, pg_matmul(g, h, w2, false, false), b2);           /* (N, 1) */
        pg_tensor *loss = pg_mean(g, pg_square(g, pg_sub(g, pred, y)), 0, NULL, false);
        if (!loss || pg_backward(g, loss) != 0) {
            fprintf(stderr, "fit_line: %s\n", pg_graph_error(g));
            return 1;
        }
        if (step % 300 == 0)
            printf("step %4d  loss %.6f\n", step, pg_item(loss));
        for (int i = 0; i < 4; i++)
            sgd_step(params[i], 0.07f);
    }
    pg_graph_free(g);
    for (int i = 0; i < 4; i++)
        pg_tensor_free(params[i]);
    pg_tensor_free(y);
    /* x2 is a view of x's storage: free the view, then its owner */
    pg_tensor_free(x2);
    pg_tensor_free(x);
    return 0;
}
