/* gradcheck_eps.h: how the error of a finite difference depends on its step
 * (examples/gradcheck_custom_op.c --eps-plot FILE; docs/teaching.md "Finite
 * differences"). Included by gradcheck_custom_op.c.
 *
 * The function is a small posgrad op, L(x) = sum_i v_i softmax(x)_i over
 * x (6), evaluated in float64 or float32. For each step eps on a log grid the
 * numeric derivative of every x_j by the central difference
 * (L(x+eps) - L(x-eps)) / 2eps and by Richardson's 4-point difference
 * (-L(x+2eps) + 8L(x+eps) - 8L(x-eps) + L(x-2eps)) / 12eps is compared with the
 * analytic gradient (one float64 backward): the worst |numeric - analytic|
 * over j is the error at that eps. */
#ifndef GRADCHECK_EPS_H
#define GRADCHECK_EPS_H

enum { EPS_N = 49, EPS_X = 6 }; /* eps = 10^(-k/4), k = 0..48: 1 down to 1e-12 */
enum { EPS_F64_CENTRAL, EPS_F64_RICHARDSON, EPS_F32_CENTRAL, EPS_F32_RICHARDSON, EPS_SERIES };

typedef struct eps_study {
    double eps[EPS_N];
    double err[EPS_SERIES][EPS_N];
    double best_eps[EPS_SERIES], best_err[EPS_SERIES]; /* the minimum of each curve */
} eps_study;

static const double EPS_XV[2][EPS_X] = {{0.3, -1.2, 0.8, 0.05, -0.4, 1.1}, {0.7, -0.2, 0.4, -0.9, 0.5, 0.1}};

/* L(x + t e_j) in dtype (x and the softmax in that dtype; the sum v . out in double) */
static double eps_loss(pg_dtype dt, int64_t j, double t)
{
    pg_tensor *x = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){EPS_X}, EPS_XV[0]);
    if (!x)
        return NAN;
    pg_tensor *xd = pg_tensor_cast(NULL, x, dt);
    double l = NAN;
    if (xd) {
        pg_set(xd, j, pg_get(xd, j) + t); /* x_j + t, rounded to dt */
        pg_tensor *out = pg_softmax(NULL, xd, -1);
        l = 0;
        for (int64_t i = 0; out && i < EPS_X; i++)
            l += EPS_XV[1][i] * pg_get(out, i);
        if (!out)
            l = NAN;
        pg_tensor_free(out);
    }
    pg_tensor_free(xd);
    pg_tensor_free(x);
    return l;
}

/* the analytic gradient of L in float64: one backward with upstream v */
static int eps_analytic(double ana[EPS_X])
{
    pg_tensor *x = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){EPS_X}, EPS_XV[0]);
    pg_tensor *v = pg_from_array(NULL, PG_F64, 1, (const int64_t[]){EPS_X}, EPS_XV[1]);
    pg_graph *g = pg_graph_new();
    int rc = -1;
    if (x && v && g) {
        pg_set_requires_grad(x, true);
        pg_tensor *out = pg_softmax(g, x, -1);
        if (out && pg_backward_with(g, out, v) == 0 && x->grad) {
            for (int j = 0; j < EPS_X; j++)
                ana[j] = pg_get(x->grad, j);
            rc = 0;
        }
    }
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(v);
    return rc;
}

/* fills s; 0, or -1 after a message */
static int eps_study_run(eps_study *s)
{
    double ana[EPS_X];
    if (eps_analytic(ana) != 0) {
        fprintf(stderr, "gradcheck_custom_op: the eps study's backward failed: %s\n", pg_last_error());
        return -1;
    }
    for (int k = 0; k < EPS_N; k++) {
        double e = pow(10.0, -k / 4.0);
        s->eps[k] = e;
        for (int series = 0; series < EPS_SERIES; series++) {
            pg_dtype dt = series < EPS_F32_CENTRAL ? PG_F64 : PG_F32;
            bool rich = series == EPS_F64_RICHARDSON || series == EPS_F32_RICHARDSON;
            double worst = 0;
            for (int64_t j = 0; j < EPS_X; j++) {
                double lp = eps_loss(dt, j, e), lm = eps_loss(dt, j, -e), num = (lp - lm) / (2 * e);
                if (rich)
                    num = (-eps_loss(dt, j, 2 * e) + 8 * lp - 8 * lm + eps_loss(dt, j, -2 * e)) / (12 * e);
                worst = fmax(worst, fabs(num - ana[j]));
            }
            s->err[series][k] = worst;
            if (k == 0 || worst < s->best_err[series])
                s->best_err[series] = worst, s->best_eps[series] = e;
        }
    }
    return 0;
}

/* the log-log figure; 0, or -1 after a message */
static int eps_plot(const char *path, const eps_study *s)
{
    static const char *const names[EPS_SERIES] = {"float64, central", "float64, Richardson (4-point)",
                                                  "float32, central", "float32, Richardson (4-point)"};
    pg_series ser[EPS_SERIES];
    for (int k = 0; k < EPS_SERIES; k++)
        ser[k] = (pg_series){.label = names[k], .x = s->eps, .y = s->err[k], .n = EPS_N,
                             .style = PG_PLOT_STYLE_LINE_POINTS, .color = k};
    pg_lineplot_opts o = {.title = "numeric gradient of sum(v * softmax(x)): error against eps",
                          .xlabel = "step eps", .ylabel = "worst |numeric - analytic|", .width = 760,
                          .height = 520, .log_x = true, .log_y = true};
    if (pg_plot_lines(path, ser, EPS_SERIES, &o) != 0) {
        fprintf(stderr, "gradcheck_custom_op: cannot draw '%s': %s\n", path, pg_last_error());
        return -1;
    }
    return 0;
}

static void eps_print(const eps_study *s)
{
    static const char *const names[EPS_SERIES] = {"float64 central", "float64 Richardson", "float32 central",
                                                  "float32 Richardson"};
    printf("\nthe step eps: error of the numeric gradient of sum(v * softmax(x)), x (6)\n");
    printf("  %-20s %12s %12s %12s %12s\n", "", "best eps", "best error", "error at 1e-6", "error at 1e-2");
    for (int k = 0; k < EPS_SERIES; k++) /* eps = 1e-6: k = 24; 1e-2: k = 8 */
        printf("  %-20s %12.1e %12.2e %12.2e %12.2e\n", names[k], s->best_eps[k], s->best_err[k], s->err[k][24],
               s->err[k][8]);
}

#endif
