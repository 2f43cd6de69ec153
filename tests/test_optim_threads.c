/* Adam / AdamW / SGD and zero_grad over all parameters at once, split evenly over the
 * threads (optim/optim.c, flat_job): the same bits for 1, 2 and 3 threads, every
 * element updated once (against a serial re-computation of torch's formula), grads
 * zeroed, a parameter without a grad skipped. */
#include "testutil.h"

#include "../optim/optim.h"
#include "../tensor/threadpool.h"

#include <string.h>

enum { NP = 7 };
static const int64_t SIZES[NP] = {3, 70001, 17, 40000, 1, 65536, 5};

typedef struct model {
    pg_tensor *p[NP];
} model;

static model make_model(pg_dtype dt, bool grad_of_4)
{
    model m;
    for (int i = 0; i < NP; i++) {
        m.p[i] = randt(PG_SHAPE(SIZES[i]), 10 + (uint64_t)i, true);
        if (dt == PG_F32) {
            pg_tensor *c = pg_tensor_cast(NULL, m.p[i], PG_F32);
            pg_tensor_free(m.p[i]);
            m.p[i] = c;
            c->requires_grad = true;
        }
        if (i != 4 || grad_of_4)
            m.p[i]->grad = pg_tensor_empty(NULL, dt, 1, &SIZES[i]);
    }
    return m;
}

static void fill_grads(model *m, int step)
{
    for (int i = 0; i < NP; i++)
        for (int64_t e = 0; m->p[i]->grad && e < SIZES[i]; e++)
            pg_set(m->p[i]->grad, e, sin(0.37 * (double)e + 1.3 * i + 0.71 * step));
}

static void free_model(model *m)
{
    for (int i = 0; i < NP; i++)
        pg_tensor_free(m->p[i]);
}

/* three steps of kind at T threads; the parameters after them */
static model train(pg_optim_kind kind, pg_dtype dt, int T)
{
    cr_assert_eq(pg_set_num_threads(T), 0);
    model m = make_model(dt, false);
    pg_optim_hparams h = kind == PG_SGD ? pg_sgd_hparams(0.1) : pg_adam_hparams(0.01);
    h.weight_decay = 0.05;
    pg_optim *o = pg_optim_new(kind, &h);
    cr_assert_not_null(o, "%s", pg_last_error());
    cr_assert_geq(pg_optim_add_group(o, m.p, NP, NULL), 0, "%s", pg_last_error());
    for (int s = 0; s < 3; s++) {
        fill_grads(&m, s);
        cr_assert_eq(pg_optim_step(o), 0, "%s", pg_last_error());
        pg_optim_zero_grad(o);
        for (int i = 0; i < NP; i++)
            for (int64_t e = 0; m.p[i]->grad && e < SIZES[i]; e++)
                cr_assert_eq(pg_get(m.p[i]->grad, e), 0.0, "grad %d[%lld] not zeroed", i, (long long)e);
    }
    pg_optim_free(o);
    return m;
}

/* torch's Adam (weight decay added to the gradient), three steps, in double: the reference */
static double adam_ref(double p, int i, int64_t e)
{
    double m = 0, v = 0;
    for (int s = 0; s < 3; s++) {
        double g = sin(0.37 * (double)e + 1.3 * i + 0.71 * s) + 0.05 * p;
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        double bc1 = 1 - pow(0.9, s + 1), bc2 = 1 - pow(0.999, s + 1);
        p = p - 0.01 / bc1 * m / (sqrt(v) / sqrt(bc2) + 1e-8);
    }
    return p;
}

Test(optim_threads, same_bits_for_any_thread_count)
{
    int saved = pg_num_threads();
    const pg_optim_kind kinds[] = {PG_ADAM, PG_ADAMW, PG_SGD};
    const pg_dtype dts[] = {PG_F32, PG_F64};
    for (int k = 0; k < 3; k++)
        for (int d = 0; d < 2; d++) {
            model a = train(kinds[k], dts[d], 1);
            for (int T = 2; T <= 3; T++) {
                model b = train(kinds[k], dts[d], T);
                for (int i = 0; i < NP; i++)
                    cr_assert_eq(memcmp(a.p[i]->data, b.p[i]->data, (size_t)SIZES[i] * pg_dtype_size(dts[d])), 0,
                                 "kind %d %s: parameter %d differs between 1 and %d threads", kinds[k],
                                 pg_dtype_name(dts[d]), i, T);
                free_model(&b);
            }
            free_model(&a);
        }
    pg_set_num_threads(saved);
}

Test(optim_threads, every_element_updated_once)
{
    int saved = pg_num_threads();
    model init = make_model(PG_F64, false);
    model m = train(PG_ADAM, PG_F64, 2);
    for (int i = 0; i < NP; i++)
        for (int64_t e = 0; e < SIZES[i]; e++) {
            double p0 = pg_get(init.p[i], e), want = i == 4 ? p0 : adam_ref(p0, i, e);
            cr_assert_float_eq(pg_get(m.p[i], e), want, 1e-12, "parameter %d[%lld]: %.17g, want %.17g", i,
                               (long long)e, pg_get(m.p[i], e), want);
        }
    free_model(&init);
    free_model(&m);
    pg_set_num_threads(saved);
}
