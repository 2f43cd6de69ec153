/* fit_line: autograd fitting a line, the smallest posgrad program that learns.
 *
 * The data: --n points x uniform in [-1, 1] and y = a x + b + noise, with a
 * and b chosen by --a and --b and Gaussian noise of standard deviation --noise.
 * The model: the line  pred = w x + c,  two parameters starting at 0. Each
 * step records the mean squared error on the graph, pg_backward fills w.grad
 * and c.grad, and a hand-written gradient-descent update moves w and c.
 *
 * At the end it prints the learned w and c next to the true a and b, and next
 * to the least-squares line from the closed form (the best any line can do on
 * these noisy points, which gradient descent converges to):
 *
 *   a_ls = cov(x, y) / var(x),   b_ls = mean(y) - a_ls mean(x)
 *
 * The loss is a quadratic in (w, c) with curvature matrix
 * H = 2 [[mean(x^2), mean(x)], [mean(x), 1]]: gradient descent converges for
 * a learning rate below 2 / (H's largest eigenvalue), about 1 here, and
 * diverges above it (try --lr 5). */
#include "../posgrad.h" /* relative to this file: also found when a test includes it */
#include "cli.h"

#include <math.h>
#include <stdio.h>

typedef struct fit_line_opts {
    double a, b;  /* the true line */
    double noise; /* standard deviation of the noise added to y */
    int n;        /* points */
    int steps;
    double lr;
    uint64_t seed;
} fit_line_opts;

typedef struct fit_line_result {
    double a, b;                  /* learned: w and c after the last step */
    double ls_a, ls_b;            /* the least-squares line of the points */
    double first_loss, last_loss; /* before the first update and after the last */
    double lr_limit;              /* gradient descent converges for lr < lr_limit */
} fit_line_result;

static fit_line_opts fit_line_defaults(void)
{
    return (fit_line_opts){.a = 2, .b = 0.5, .noise = 0.1, .n = 100, .steps = 100, .lr = 0.5, .seed = 0};
}

/* a scalar parameter (shape (1)) starting at 0 */
static pg_tensor *param(void)
{
    pg_tensor *t = pg_zeros(NULL, PG_F64, PG_SHAPE(1));
    pg_set_requires_grad(t, true);
    return t;
}

/* Gradient descent; r gets the figures. 0, or -1 after one line on stderr (the
 * loss diverged). verbose: print the loss every steps / 10 steps. */
static int fit_line_run(const fit_line_opts *o, fit_line_result *r, bool verbose)
{
    *r = (fit_line_result){0};
    /* the data, x (n) and y (n), and the statistics of the closed form */
    pg_rng rng = pg_rng_init(o->seed);
    pg_tensor *x = pg_empty(NULL, PG_F64, PG_SHAPE(o->n)), *y = pg_empty(NULL, PG_F64, PG_SHAPE(o->n));
    double mx = 0, my = 0, mxx = 0, mxy = 0;
    for (int i = 0; i < o->n; i++) {
        double xi = 2 * pg_rng_uniform(&rng) - 1, yi = o->a * xi + o->b + o->noise * pg_rng_normal(&rng);
        pg_f64(x)[i] = xi;
        pg_f64(y)[i] = yi;
        mx += xi / o->n, my += yi / o->n, mxx += xi * xi / o->n, mxy += xi * yi / o->n;
    }
    r->ls_a = (mxy - mx * my) / (mxx - mx * mx);
    r->ls_b = my - r->ls_a * mx;
    double tr = 2 * (mxx + 1), det = 4 * (mxx - mx * mx); /* of H, see the top of the file */
    r->lr_limit = 2 / ((tr + sqrt(tr * tr - 4 * det)) / 2);

    pg_tensor *w = param(), *c = param(), *params[] = {w, c};
    pg_graph *g = pg_graph_new();
    int rc = 0;
    for (int step = 0; step <= o->steps; step++) {
        pg_graph_reset(g);
        pg_tensor *pred = pg_add(g, pg_mul(g, x, w), c); /* (n): w and c broadcast */
        pg_tensor *loss = pg_mean(g, pg_square(g, pg_sub(g, pred, y)), 0, NULL, false);
        if (!loss || pg_backward(g, loss) != 0) {
            fprintf(stderr, "fit_line: %s\n", pg_graph_error(g));
            rc = -1;
            break;
        }
        r->last_loss = pg_item(loss);
        if (step == 0)
            r->first_loss = r->last_loss;
        if (verbose && (step % (o->steps / 10 > 0 ? o->steps / 10 : 1) == 0 || step == o->steps))
            printf("step %4d  loss %-10.6g  a %-10.6g  b %.6g\n", step, r->last_loss, pg_f64(w)[0], pg_f64(c)[0]);
        if (step == o->steps)
            break; /* the last loop only measures the loss of the final line */
        for (int i = 0; i < 2; i++) { /* p -= lr * dLoss/dp, then clear the gradient */
            pg_f64(params[i])[0] -= o->lr * pg_f64(params[i]->grad)[0];
            pg_zero_grad(params[i]);
        }
    }
    r->a = pg_f64(w)[0];
    r->b = pg_f64(c)[0];
    if (rc == 0 && !(r->last_loss <= r->first_loss)) {
        fflush(stdout); /* the steps above first, when both go to one pipe */
        fprintf(stderr,
                "fit_line: the loss diverged (%.4g at step 0, %.4g at step %d): --lr %g is too large for these "
                "points (gradient descent converges for lr < %.4g)\n",
                r->first_loss, r->last_loss, o->steps, o->lr, r->lr_limit);
        rc = -1;
    }
    pg_graph_free(g);
    pg_tensor_free(w);
    pg_tensor_free(c);
    pg_tensor_free(x);
    pg_tensor_free(y);
    return rc;
}

int fit_line_main(int argc, char **argv)
{
    fit_line_opts o = fit_line_defaults();
    const cli_flag flags[] = {
        {"a", CLI_DOUBLE, &o.a, "slope of the true line", .min = -1e6, .max = 1e6},
        {"b", CLI_DOUBLE, &o.b, "intercept of the true line", .min = -1e6, .max = 1e6},
        {"noise", CLI_DOUBLE, &o.noise, "standard deviation of the noise on y", .min = 0, .max = 1e6},
        {"n", CLI_INT, &o.n, "points, x uniform in [-1, 1]", .min = 2, .max = 1e7},
        {"steps", CLI_INT, &o.steps, "gradient-descent steps", .min = 1, .max = 1e7},
        {"lr", CLI_DOUBLE, &o.lr, "learning rate", .min = 0, .max = INFINITY, .above_min = true},
        {"seed", CLI_U64, &o.seed, .help = "seed of the points and the noise"},
    };
    int p = cli_parse("fit_line", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]),
                      "Fits a line w x + c to noisy points from y = a x + b by gradient descent through autograd\n"
                      "and prints the learned w, c against the true a, b and the least-squares line.\n"
                      "A bad argument is one line on stderr and exit status 2; a diverging fit is status 1.");
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (cli_threads("fit_line", 0) != 0)
        return CLI_EXIT_USAGE;
    printf("fit_line: y = %g x %c %g + noise (sd %g) at %d points; fitting w x + c from 0, %d steps of lr %g\n", o.a,
           o.b < 0 ? '-' : '+', fabs(o.b), o.noise, o.n, o.steps, o.lr);
    fit_line_result r;
    if (fit_line_run(&o, &r, true) != 0)
        return CLI_EXIT_FAIL;
    printf("\nlearned:       a = %.6f, b = %.6f\n", r.a, r.b);
    printf("least squares: a = %.6f, b = %.6f   (closed form: the best line through these noisy points)\n", r.ls_a,
           r.ls_b);
    printf("true:          a = %g, b = %g\n", o.a, o.b);
    return CLI_EXIT_OK;
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return fit_line_main(argc, argv); }
#endif
