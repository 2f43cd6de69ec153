/* Non-finite gradients (issue 11, item 6): pg_grad_find_nonfinite, clipping
 * with error_if_nonfinite (pg_clip_grad_norm_ex), and optimizer steps that
 * refuse NaN / inf gradients (pg_optim.check_finite) leaving the parameters
 * and the whole state as they were. Without the options behaviour is
 * torch's: the non-finite values flow through. */
#include "testutil.h"

static const pg_dtype DTYPES[2] = {PG_F32, PG_F64};
static const double BAD[3] = {NAN, INFINITY, -INFINITY};

/* A heap tensor of dtype with values v0 + k * dv. */
static pg_tensor *ramp(pg_dtype dt, int ndim, const int64_t *shape, double v0, double dv)
{
    pg_tensor *t = pg_tensor_empty(NULL, dt, ndim, shape);
    for (int64_t k = 0; k < t->numel; k++)
        pg_set(t, k, v0 + (double)k * dv);
    return t;
}

/* Bitwise equality of two tensors of one dtype and size (NaN == NaN). */
static bool same_bits(const pg_tensor *a, const pg_tensor *b)
{
    return a && b && a->dtype == b->dtype && a->numel == b->numel &&
           !memcmp(a->data, b->data, (size_t)a->numel * pg_dtype_size(a->dtype));
}

/* Three parameters (3), (2,3), (4) of dtype dt with grads; the caller frees. */
static void three_params(pg_dtype dt, pg_tensor **p)
{
    p[0] = ramp(dt, PG_SHAPE(3), 0.5, 0.25);
    p[1] = ramp(dt, PG_SHAPE(2, 3), -1.0, 0.3);
    p[2] = ramp(dt, PG_SHAPE(4), 2.0, -0.7);
    for (int i = 0; i < 3; i++)
        p[i]->grad = ramp(dt, p[i]->ndim, p[i]->shape, 0.1 * (i + 1), -0.05);
}

static void free_params(int n, pg_tensor **p)
{
    for (int i = 0; i < n; i++)
        pg_tensor_free(p[i]); /* frees the grad too */
}

/* ---- finding the first non-finite element ----------------------------------------------- */

Test(nonfinite, find_first_in_order_f32_f64)
{
    for (int d = 0; d < 2; d++) {
        pg_tensor *p[3];
        three_params(DTYPES[d], p);
        pg_nonfinite w = {7, 7, 7};
        cr_assert_eq(pg_grad_find_nonfinite(p, 3, &w), 0, "%s", pg_last_error());
        cr_assert_eq(w.param, -1);
        for (int b = 0; b < 3; b++) {
            pg_set(p[1]->grad, 4, BAD[b]);
            pg_set(p[2]->grad, 0, NAN); /* a later one is not reported */
            cr_assert_eq(pg_grad_find_nonfinite(p, 3, &w), 1);
            cr_assert(w.param == 1 && w.index == 4, "found %d/%lld", w.param, (long long)w.index);
            cr_assert(isnan(BAD[b]) ? isnan(w.value) : w.value == BAD[b], "value %g", w.value);
            pg_set(p[1]->grad, 4, 0.5);
        }
        /* a NULL grad is skipped */
        pg_tensor_free(p[1]->grad);
        p[1]->grad = NULL;
        cr_assert_eq(pg_grad_find_nonfinite(p, 3, &w), 1);
        cr_assert(w.param == 2 && w.index == 0 && isnan(w.value));
        /* the largest finite values are finite; denormals too */
        pg_set(p[2]->grad, 0, DTYPES[d] == PG_F32 ? -3.4028234663852886e38 : -1.7976931348623157e308);
        pg_set(p[2]->grad, 1, DTYPES[d] == PG_F32 ? 1e-45 : 5e-324);
        cr_assert_eq(pg_grad_find_nonfinite(p, 3, &w), 0);
        free_params(3, p);
    }
}

Test(nonfinite, find_in_large_grads_on_the_thread_pool)
{
    /* 3e5 elements: several tasks; the first bad element wins over later tasks' */
    for (int d = 0; d < 2; d++) {
        pg_tensor *p = pg_tensor_full(NULL, DTYPES[d], PG_SHAPE(300001), 1.0);
        p->grad = pg_tensor_full(NULL, DTYPES[d], PG_SHAPE(300001), -2.0);
        pg_nonfinite w;
        cr_assert_eq(pg_grad_find_nonfinite(&p, 1, &w), 0);
        int64_t at[4] = {300000, 299999, 150007, 3};
        for (int k = 0; k < 4; k++) {
            pg_set(p->grad, at[k], k % 2 ? -INFINITY : NAN);
            cr_assert_eq(pg_grad_find_nonfinite(&p, 1, &w), 1);
            cr_assert_eq(w.index, at[k], "found %lld, expected %lld", (long long)w.index, (long long)at[k]);
        }
        pg_tensor_free(p);
    }
}

Test(nonfinite, find_bad_arguments)
{
    pg_tensor *p[3];
    three_params(PG_F64, p);
    pg_nonfinite w;
    pg_clear_error();
    cr_assert_eq(pg_grad_find_nonfinite(p, 3, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_grad_find_nonfinite: where is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_grad_find_nonfinite(NULL, 2, &w), -1);
    cr_assert(strstr(pg_last_error(), "pg_grad_find_nonfinite: bad parameter array"), "%s", pg_last_error());
    cr_assert_eq(pg_grad_find_nonfinite((pg_tensor *[]){p[0], NULL}, 2, &w), -1);
    cr_assert(strstr(pg_last_error(), "pg_grad_find_nonfinite: parameter 1 is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_grad_find_nonfinite(NULL, 0, &w), 0);
    cr_assert_eq(w.param, -1);
    free_params(3, p);
}

/* ---- clipping ----------------------------------------------------------------------------- */

/* copies of the grads, to compare after a refused clip */
static void snapshot_grads(int n, pg_tensor **p, pg_tensor **out)
{
    for (int i = 0; i < n; i++)
        out[i] = p[i]->grad ? pg_tensor_copy(NULL, p[i]->grad) : NULL;
}

Test(nonfinite, clip_error_if_nonfinite_refuses_and_leaves_grads)
{
    const double norms[3] = {2.0, 1.0, INFINITY};
    for (int d = 0; d < 2; d++)
        for (int b = 0; b < 3; b++)
            for (int k = 0; k < 3; k++) {
                pg_tensor *p[3], *before[3];
                three_params(DTYPES[d], p);
                pg_set(p[1]->grad, 2, BAD[b]);
                snapshot_grads(3, p, before);
                pg_clip_opts o = {.max_norm = 0.5, .norm_type = norms[k], .error_if_nonfinite = true};
                double total = 123;
                pg_clear_error();
                cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), PG_NONFINITE, "dtype %d bad %g norm %g", d,
                             BAD[b], norms[k]);
                /* the total is reported: NaN for a NaN, inf for +-inf */
                cr_assert(isnan(BAD[b]) ? isnan(total) : total == INFINITY, "total %g", total);
                for (int i = 0; i < 3; i++)
                    cr_assert(same_bits(p[i]->grad, before[i]), "grad %d changed", i);
                char want[160];
                snprintf(want, sizeof want,
                         "pg_clip_grad_norm_ex: total gradient norm is %s (first non-finite in parameter 1, "
                         "%s[2,3]: element 2 is %s)",
                         isnan(BAD[b]) ? "nan" : "inf", d ? "f64" : "f32",
                         isnan(BAD[b]) ? "nan" : BAD[b] > 0 ? "inf" : "-inf");
                cr_assert(strstr(pg_last_error(), want), "error \"%s\" lacks \"%s\"", pg_last_error(), want);
                free_params(3, p);
                free_all(3, before);
            }
}

Test(nonfinite, clip_error_on_overflow_of_finite_grads)
{
    /* every element finite, but the 2-norm of 1e200s overflows double */
    pg_tensor *p[3], *before[3];
    three_params(PG_F64, p);
    pg_set(p[2]->grad, 1, 1e200);
    pg_set(p[2]->grad, 2, -1e200);
    snapshot_grads(3, p, before);
    pg_clip_opts o = {.max_norm = 1.0, .error_if_nonfinite = true};
    double total = 0;
    cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), PG_NONFINITE);
    cr_assert_eq(total, INFINITY);
    cr_assert(strstr(pg_last_error(), "pg_clip_grad_norm_ex: total gradient norm is inf (every element is finite"),
              "%s", pg_last_error());
    for (int i = 0; i < 3; i++)
        cr_assert(same_bits(p[i]->grad, before[i]));
    /* the max norm of the same grads is finite: clipped */
    o.norm_type = INFINITY;
    cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), 0, "%s", pg_last_error());
    cr_assert_eq(total, 1e200);
    free_params(3, p);
    free_all(3, before);
}

Test(nonfinite, clip_without_the_option_is_torchs)
{
    /* error_if_nonfinite off: as pg_clip_grad_norm_p and torch, the non-finite
     * total makes the coefficient NaN (NaN total) or 0 (inf total) */
    for (int d = 0; d < 2; d++)
        for (int b = 0; b < 3; b++) {
            pg_tensor *p[3], *q[3];
            three_params(DTYPES[d], p);
            three_params(DTYPES[d], q);
            pg_set(p[0]->grad, 1, BAD[b]);
            pg_set(q[0]->grad, 1, BAD[b]);
            pg_clip_opts o = {.max_norm = 1.0};
            double total = 0;
            cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), 0);
            double old = pg_clip_grad_norm(q, 3, 1.0);
            cr_assert(isnan(BAD[b]) ? isnan(total) && isnan(old) : total == INFINITY && old == INFINITY);
            for (int i = 0; i < 3; i++)
                cr_assert(same_bits(p[i]->grad, q[i]->grad), "grad %d differs from pg_clip_grad_norm's", i);
            /* NaN total: every grad element NaN; inf total: 0 except the inf itself (inf * 0) */
            for (int64_t k = 0; k < p[1]->grad->numel; k++)
                cr_assert(isnan(BAD[b]) ? isnan(pg_get(p[1]->grad, k)) : pg_get(p[1]->grad, k) == 0.0);
            cr_assert(isnan(pg_get(p[0]->grad, 1)));
            free_params(3, p);
            free_params(3, q);
        }
}

Test(nonfinite, clip_ex_finite_grads_match_clip_grad_norm_p)
{
    const double norms[4] = {0.0, 2.0, 3.0, INFINITY};
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < 4; k++)
            for (int e = 0; e < 2; e++) {
                pg_tensor *p[3], *q[3];
                three_params(DTYPES[d], p);
                three_params(DTYPES[d], q);
                pg_clip_opts o = {.max_norm = 0.3, .norm_type = norms[k], .error_if_nonfinite = e};
                double total = -5;
                cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), 0, "%s", pg_last_error());
                double want = pg_clip_grad_norm_p(q, 3, 0.3, norms[k] == 0 ? 2.0 : norms[k]);
                cr_assert_eq(total, want);
                for (int i = 0; i < 3; i++)
                    cr_assert(same_bits(p[i]->grad, q[i]->grad));
                /* total_norm may be NULL */
                cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, NULL), 0);
                free_params(3, p);
                free_params(3, q);
            }
}

Test(nonfinite, clip_ex_bad_arguments)
{
    pg_tensor *p[3];
    three_params(PG_F64, p);
    double total = 42;
    pg_clip_opts o = {.max_norm = 1.0, .error_if_nonfinite = true};
    pg_clear_error();
    cr_assert_eq(pg_clip_grad_norm_ex(p, 3, NULL, &total), -1);
    cr_assert(strstr(pg_last_error(), "pg_clip_grad_norm_ex: opts is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_clip_grad_norm_ex((pg_tensor *[]){p[0], NULL}, 2, &o, &total), -1);
    cr_assert(strstr(pg_last_error(), "pg_clip_grad_norm_ex: parameter 1 is NULL"), "%s", pg_last_error());
    o.max_norm = -1;
    cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), -1);
    cr_assert(strstr(pg_last_error(), "pg_clip_grad_norm_ex: max_norm must be >= 0, got -1"), "%s", pg_last_error());
    o.max_norm = 1;
    o.norm_type = -2;
    cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), -1);
    cr_assert(strstr(pg_last_error(), "pg_clip_grad_norm_ex: norm type must be > 0"), "%s", pg_last_error());
    o.norm_type = NAN;
    cr_assert_eq(pg_clip_grad_norm_ex(p, 3, &o, &total), -1);
    cr_assert_eq(total, 42, "total_norm untouched on bad arguments");
    /* the old functions: -1 is never a norm (norms are >= 0 or NaN) */
    cr_assert(pg_clip_grad_norm(NULL, 1, 1.0) < 0);
    free_params(3, p);
}

/* ---- optimizer steps --------------------------------------------------------------------------- */

typedef struct opt_case {
    pg_optim_kind kind;
    pg_optim_hparams h;
    const char *what;
} opt_case;

static int opt_cases(opt_case *c)
{
    pg_optim_hparams sgd = pg_sgd_hparams(0.1), sgdm = pg_sgd_hparams(0.1);
    sgdm.momentum = 0.9;
    sgdm.weight_decay = 0.01;
    pg_optim_hparams adam = pg_adam_hparams(0.01), ams = pg_adam_hparams(0.01), adamw = pg_adamw_hparams(0.01);
    ams.amsgrad = true;
    ams.weight_decay = 0.1;
    int n = 0;
    c[n++] = (opt_case){PG_SGD, sgd, "SGD"};
    c[n++] = (opt_case){PG_SGD, sgdm, "SGD momentum"};
    c[n++] = (opt_case){PG_ADAM, adam, "Adam"};
    c[n++] = (opt_case){PG_ADAM, ams, "Adam amsgrad"};
    c[n++] = (opt_case){PG_ADAMW, adamw, "AdamW"};
    return n;
}

/* copies of every parameter and state buffer of o */
typedef struct snap {
    int n;
    pg_tensor *t[64];
} snap;

static snap take_snapshot(const pg_optim *o)
{
    snap s = {0, {0}};
    for (int i = 0; i < o->n_params; i++) {
        const pg_param_state *st = &o->state[i];
        pg_tensor *const f[6] = {st->param, st->step, st->momentum_buffer, st->exp_avg, st->exp_avg_sq,
                                 st->max_exp_avg_sq};
        for (int k = 0; k < 6; k++)
            s.t[s.n++] = f[k] ? pg_tensor_copy(NULL, f[k]) : NULL;
    }
    return s;
}

static void assert_unchanged(const pg_optim *o, const snap *s, const char *what)
{
    int j = 0;
    for (int i = 0; i < o->n_params; i++) {
        const pg_param_state *st = &o->state[i];
        pg_tensor *const f[6] = {st->param, st->step, st->momentum_buffer, st->exp_avg, st->exp_avg_sq,
                                 st->max_exp_avg_sq};
        static const char *names[6] = {"param", "step", "momentum_buffer", "exp_avg", "exp_avg_sq",
                                       "max_exp_avg_sq"};
        for (int k = 0; k < 6; k++, j++) {
            cr_assert_eq(f[k] == NULL, s->t[j] == NULL);
            if (f[k])
                cr_assert(same_bits(f[k], s->t[j]), "%s: %s of parameter %d changed", what, names[k], i);
        }
    }
}

static void snapshot_free(snap *s)
{
    free_all(s->n, s->t);
}

/* Two good steps, then a step with grad[1][4] = bad: refused with PG_NONFINITE
 * and nothing changes; then the grad is repaired and the run continues exactly
 * as a run that never saw the bad step. */
static void refused_step(const opt_case *c, pg_dtype dt, double bad)
{
    char what[128];
    snprintf(what, sizeof what, "%s %s grad %g", c->what, pg_dtype_name(dt), bad);
    pg_tensor *p[3], *q[3];
    three_params(dt, p);
    three_params(dt, q);
    pg_optim *o = pg_optim_new(c->kind, &c->h), *r = pg_optim_new(c->kind, &c->h);
    cr_assert_eq(pg_optim_add_group(o, p, 3, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_add_group(r, q, 3, NULL), 0, "%s", pg_last_error());
    cr_assert(!o->check_finite, "off by default");
    o->check_finite = true;
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(pg_optim_step(o), 0, "%s: %s", what, pg_last_error());
        cr_assert_eq(pg_optim_step(r), 0);
    }
    snap s = take_snapshot(o);
    double good = pg_get(p[1]->grad, 4);
    pg_set(p[1]->grad, 4, bad);
    pg_clear_error();
    cr_assert_eq(pg_optim_step(o), PG_NONFINITE, "%s", what);
    assert_unchanged(o, &s, what);
    cr_assert_eq(*pg_i64(o->state[1].step), 2, "%s: step counted", what);
    char want[160];
    snprintf(want, sizeof want,
             "pg_optim_step: the gradient of parameter 1 (%s[2,3]) is not finite: element 4 is %s; nothing was "
             "updated",
             pg_dtype_name(dt), isnan(bad) ? "nan" : bad > 0 ? "inf" : "-inf");
    cr_assert(strstr(pg_last_error(), want), "error \"%s\" lacks \"%s\"", pg_last_error(), want);
    /* the grad is left as it was, too */
    cr_assert(isnan(bad) ? isnan(pg_get(p[1]->grad, 4)) : pg_get(p[1]->grad, 4) == bad);
    pg_set(p[1]->grad, 4, good);
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(pg_optim_step(o), 0, "%s", pg_last_error());
        cr_assert_eq(pg_optim_step(r), 0);
    }
    for (int i = 0; i < 3; i++)
        cr_assert(same_bits(p[i], q[i]), "%s: parameter %d differs from the run without the bad step", what, i);
    snapshot_free(&s);
    pg_optim_free(o);
    pg_optim_free(r);
    free_params(3, p);
    free_params(3, q);
}

Test(nonfinite, step_refuses_nan_and_inf_grads_and_changes_nothing)
{
    opt_case c[8];
    int n = opt_cases(c);
    for (int k = 0; k < n; k++)
        for (int d = 0; d < 2; d++)
            for (int b = 0; b < 3; b++)
                refused_step(&c[k], DTYPES[d], BAD[b]);
}

Test(nonfinite, step_without_the_check_is_torchs)
{
    /* check_finite off (the default): a NaN grad reaches the update as in torch.
     * SGD: p - lr * NaN = NaN at that element only; Adam / AdamW: NaN there, and
     * the moments are NaN there */
    opt_case c[8];
    int n = opt_cases(c);
    for (int k = 0; k < n; k++)
        for (int d = 0; d < 2; d++) {
            pg_tensor *p[3];
            three_params(DTYPES[d], p);
            pg_optim *o = pg_optim_new(c[k].kind, &c[k].h);
            pg_optim_add_group(o, p, 3, NULL);
            pg_set(p[1]->grad, 4, NAN);
            cr_assert_eq(pg_optim_step(o), 0, "%s", c[k].what);
            for (int64_t i = 0; i < 6; i++)
                cr_assert_eq(isnan(pg_get(p[1], i)), i == 4, "%s: element %lld", c[k].what, (long long)i);
            if (o->state[1].exp_avg)
                cr_assert(isnan(pg_get(o->state[1].exp_avg, 4)) && isnan(pg_get(o->state[1].exp_avg_sq, 4)));
            cr_assert_eq(*pg_i64(o->state[1].step), 1);
            pg_optim_free(o);
            free_params(3, p);
        }
}

Test(nonfinite, step_message_names_the_parameter)
{
    /* names come from pg_optim_add_group_named and pg_optim_add_decay_groups */
    pg_tensor *p[3];
    three_params(PG_F32, p);
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor_list_push(&l, "blocks.0.ff.bias", p[0]);
    pg_tensor_list_push(&l, "blocks.0.ff.weight", p[1]);
    pg_tensor_list_push(&l, "head.scale", p[2]);
    pg_optim *o = pg_optim_new(PG_ADAMW, NULL);
    cr_assert_eq(pg_optim_add_group_named(o, &l, NULL), 0, "%s", pg_last_error());
    cr_assert_str_eq(o->state[1].name, "blocks.0.ff.weight");
    o->check_finite = true;
    pg_set(p[1]->grad, 5, -INFINITY);
    cr_assert_eq(pg_optim_step(o), PG_NONFINITE);
    cr_assert(strstr(pg_last_error(), "pg_optim_step: the gradient of parameter 1 (blocks.0.ff.weight, f32[2,3]) "
                                      "is not finite: element 5 is -inf; nothing was updated"),
              "%s", pg_last_error());
    pg_optim_free(o);

    /* decay groups: the decaying matrix first, then the vectors */
    o = pg_optim_new(PG_ADAMW, NULL);
    cr_assert_eq(pg_optim_add_decay_groups(o, &l, pg_no_decay_default, NULL, 1e-3, 0.1), 0, "%s", pg_last_error());
    cr_assert_str_eq(o->state[0].name, "blocks.0.ff.weight");
    cr_assert_str_eq(o->state[2].name, "head.scale");
    o->check_finite = true;
    cr_assert_eq(pg_optim_step(o), PG_NONFINITE);
    cr_assert(strstr(pg_last_error(), "parameter 0 (blocks.0.ff.weight, f32[2,3])"), "%s", pg_last_error());
    pg_optim_free(o);

    /* unnamed: the index and the shape */
    o = pg_optim_new(PG_SGD, NULL);
    pg_optim_add_group(o, p, 3, NULL);
    cr_assert_null(o->state[1].name);
    o->check_finite = true;
    cr_assert_eq(pg_optim_step(o), PG_NONFINITE);
    cr_assert(strstr(pg_last_error(), "parameter 1 (f32[2,3]) is not finite: element 5 is -inf"), "%s",
              pg_last_error());
    /* a bad grad shape is still -1, and is reported before any finiteness */
    pg_tensor_free(p[0]->grad);
    p[0]->grad = pg_tensor_full(NULL, PG_F32, PG_SHAPE(5), 0);
    cr_assert_eq(pg_optim_step(o), -1);
    cr_assert(strstr(pg_last_error(), "pg_optim_step: parameter 0 is f32[3] but its grad is f32[5]"), "%s",
              pg_last_error());
    pg_optim_free(o);
    pg_tensor_list_free(&l);
    free_params(3, p);
}

Test(nonfinite, add_group_named_bad_input_and_rollback)
{
    pg_tensor *p[3];
    three_params(PG_F64, p);
    pg_optim *o = pg_optim_new(PG_ADAM, NULL);
    pg_clear_error();
    cr_assert_eq(pg_optim_add_group_named(o, NULL, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_optim_add_group_named: params is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_optim_add_group_named(NULL, NULL, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_optim_add_group_named: optimizer is NULL"), "%s", pg_last_error());
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor_list_push(&l, "a", p[0]);
    pg_tensor_list_push(&l, "b", p[0]); /* twice: the group is refused, o unchanged */
    cr_assert_eq(pg_optim_add_group_named(o, &l, NULL), -1);
    cr_assert(strstr(pg_last_error(), "appears twice"), "%s", pg_last_error());
    cr_assert_eq(o->n_params, 0);
    cr_assert_eq(o->n_groups, 0);
    pg_tensor_list_free(&l);
    pg_optim_free(o);
    free_params(3, p);
}

Test(nonfinite, large_parameter_checked_on_the_thread_pool)
{
    /* 2^18 + 3 elements: the check is split over tasks; a finite grad steps
     * exactly as without the check */
    for (int d = 0; d < 2; d++) {
        int64_t n = (1 << 18) + 3;
        pg_tensor *p = ramp(DTYPES[d], PG_SHAPE(n), -1, 1e-5), *q = ramp(DTYPES[d], PG_SHAPE(n), -1, 1e-5);
        p->grad = ramp(DTYPES[d], PG_SHAPE(n), 0.5, -3e-6);
        q->grad = ramp(DTYPES[d], PG_SHAPE(n), 0.5, -3e-6);
        pg_optim *o = pg_optim_new(PG_ADAMW, NULL), *r = pg_optim_new(PG_ADAMW, NULL);
        pg_optim_add_group(o, &p, 1, NULL);
        pg_optim_add_group(r, &q, 1, NULL);
        o->check_finite = true;
        cr_assert_eq(pg_optim_step(o), 0, "%s", pg_last_error());
        cr_assert_eq(pg_optim_step(r), 0);
        cr_assert(same_bits(p, q));
        pg_set(p->grad, n - 1, NAN);
        cr_assert_eq(pg_optim_step(o), PG_NONFINITE);
        cr_assert(strstr(pg_last_error(), "element 262146 is nan"), "%s", pg_last_error());
        cr_assert(same_bits(p, q));
        pg_optim_free(o);
        pg_optim_free(r);
        pg_tensor_free(p);
        pg_tensor_free(q);
    }
}
