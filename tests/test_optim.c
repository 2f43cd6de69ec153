/* optim/: SGD, Adam and AdamW against torch.optim (PyTorch 1.13, f64 fixtures
 * written by tests/fixtures/gen_optim.py: 12 steps over 4 parameters, one of
 * which never has a grad and one of which skips every third step), parameter
 * groups, f32 runs against torch's f32 runs, clip_grad_norm_, the LR schedules
 * against torch's schedulers, state export / import (round trips, names, bad
 * states leaving the optimizer untouched), the decay split, bad input. */
#include "testutil.h"

#include "../optim/optim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NP 4     /* parameters in the fixtures: (3,4), (4), (2,3), (5) */
#define STEPS 12 /* steps per case */

/* ---- fixtures ------------------------------------------------------------------------- */

static pg_tensor_list load_fx(const char *area)
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/optim_%s.safetensors", area);
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &l), 0, "%s", pg_last_error());
    return l;
}

/* The entry named by the printf-style format, or NULL. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static pg_tensor *fx_get(const pg_tensor_list *l, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int i = pg_tensor_list_find(l, name);
    return i < 0 ? NULL : l->tensors[i];
}

/* Worst |a - e| / max_j |e_j| over the elements (the error relative to the
 * tensor's scale: elements that cancel to near zero are not held to a relative
 * precision their inputs never had); asserts it is <= rtol. */
static double assert_close_scaled(const pg_tensor *a, const pg_tensor *e, double rtol, const char *what)
{
    cr_assert_not_null(a, "%s: result missing", what);
    cr_assert_not_null(e, "%s: expected value missing", what);
    cr_assert_eq(a->numel, e->numel, "%s: numel %lld vs %lld", what, (long long)a->numel, (long long)e->numel);
    double scale = 1e-300, worst = 0;
    for (int64_t i = 0; i < e->numel; i++)
        scale = fmax(scale, fabs(pg_get(e, i)));
    for (int64_t i = 0; i < a->numel; i++) {
        double x = pg_get(a, i), y = pg_get(e, i), err = fabs(x - y) / scale;
        cr_assert(err <= rtol, "%s[%lld]: %.17g, expected %.17g (err %.3g of max |e| %.3g > %.3g)", what,
                  (long long)i, x, y, err, scale, rtol);
        worst = fmax(worst, err);
    }
    return worst;
}

/* Hyperparameters from a fixture vector [lr, wd, momentum, dampening, nesterov,
 * beta1, beta2, eps, amsgrad]. */
static pg_optim_hparams hparams_from(const pg_tensor *v)
{
    cr_assert_not_null(v);
    cr_assert_eq(v->numel, 9);
    return (pg_optim_hparams){.lr = pg_get(v, 0),
                              .weight_decay = pg_get(v, 1),
                              .momentum = pg_get(v, 2),
                              .dampening = pg_get(v, 3),
                              .nesterov = pg_get(v, 4) != 0,
                              .beta1 = pg_get(v, 5),
                              .beta2 = pg_get(v, 6),
                              .eps = pg_get(v, 7),
                              .amsgrad = pg_get(v, 8) != 0};
}

/* [kind, warmup, start, total, min, step_size, gamma] */
static pg_sched_cfg sched_from(const pg_tensor *v)
{
    cr_assert_not_null(v);
    cr_assert_eq(v->numel, 7);
    return (pg_sched_cfg){.kind = (pg_sched_kind)pg_get(v, 0),
                          .warmup_steps = (int64_t)pg_get(v, 1),
                          .start_factor = pg_get(v, 2),
                          .total_steps = (int64_t)pg_get(v, 3),
                          .min_factor = pg_get(v, 4),
                          .step_size = (int64_t)pg_get(v, 5),
                          .gamma = pg_get(v, 6)};
}

/* ---- a run of one fixture case ------------------------------------------------------------ */

typedef struct run {
    pg_tensor *p[NP]; /* parameters (heap, require grad) */
    pg_tensor *g[NP]; /* their grad buffers, attached at each step when the fixture has one */
    pg_optim *o;
    pg_schedule *s;
} run;

/* Parameters from init.<k> in dtype dt; the optimizer (and schedule) of case c. */
static void run_init(run *r, const pg_tensor_list *fx, const char *c, pg_dtype dt)
{
    memset(r, 0, sizeof *r);
    for (int k = 0; k < NP; k++) {
        r->p[k] = pg_tensor_cast(NULL, fx_get(fx, "init.%d", k), dt);
        cr_assert_not_null(r->p[k]);
        r->p[k]->requires_grad = true;
        r->g[k] = pg_tensor_empty(NULL, dt, r->p[k]->ndim, r->p[k]->shape);
    }
    pg_tensor *kind = fx_get(fx, "%s.kind", c);
    cr_assert_not_null(kind, "case %s missing", c);
    r->o = pg_optim_new((pg_optim_kind)pg_item(kind), NULL);
    cr_assert_not_null(r->o, "%s", pg_last_error());
    for (int j = 0;; j++) {
        pg_tensor *hp = fx_get(fx, "%s.g%d.hp", c, j), *idx = fx_get(fx, "%s.g%d.idx", c, j);
        if (!hp)
            break;
        pg_tensor *ps[NP];
        for (int64_t i = 0; i < idx->numel; i++)
            ps[i] = r->p[pg_i64(idx)[i]];
        pg_optim_hparams h = hparams_from(hp);
        cr_assert_eq(pg_optim_add_group(r->o, ps, (int)idx->numel, &h), j, "%s", pg_last_error());
    }
    pg_tensor *sc = fx_get(fx, "%s.sched", c);
    if (sc) {
        r->s = pg_schedule_new(r->o, sched_from(sc));
        cr_assert_not_null(r->s, "%s", pg_last_error());
    }
}

/* Attaches step t's gradients (NULL where the fixture has none) and steps. */
static void run_step(run *r, const pg_tensor_list *fx, int t)
{
    for (int k = 0; k < NP; k++) {
        pg_tensor *g = fx_get(fx, "grad.%d.%d", t, k);
        if (g)
            pg_copy_into(r->g[k], g);
        r->p[k]->grad = g ? r->g[k] : NULL;
    }
    cr_assert_eq(pg_optim_step(r->o), 0, "%s", pg_last_error());
    if (r->s)
        cr_assert_eq(pg_schedule_step(r->s), 0);
}

static void run_free(run *r)
{
    for (int k = 0; k < NP; k++) {
        r->p[k]->grad = NULL;
        pg_tensor_free(r->p[k]);
        pg_tensor_free(r->g[k]);
    }
    pg_schedule_free(r->s);
    pg_optim_free(r->o);
}

/* Our exported state against torch's state_dict entries C.final.optim.<i>.<f>
 * (none for SGD without momentum); returns the number compared. */
static int check_final_state(const pg_tensor_list *fx, const char *c, const run *r, double rtol, double *worst)
{
    pg_tensor_list st = {0, 0, NULL, NULL};
    cr_assert_eq(pg_optim_state_export(r->o, r->s, &st), 0, "%s", pg_last_error());
    char prefix[128];
    int n = snprintf(prefix, sizeof prefix, "%s.final.", c), compared = 0;
    for (int k = 0; k < fx->n; k++) {
        if (strncmp(fx->names[k], prefix, (size_t)n) != 0)
            continue;
        const char *name = fx->names[k] + n;
        int i = pg_tensor_list_find(&st, name);
        cr_assert_geq(i, 0, "%s: we export no %s", c, name);
        if (strstr(name, ".step"))
            cr_assert_eq(*pg_i64(st.tensors[i]), *pg_i64(fx->tensors[k]), "%s: %s", c, name);
        else
            *worst = fmax(*worst, assert_close_scaled(st.tensors[i], fx->tensors[k], rtol, name));
        compared++;
    }
    pg_tensor_list_free(&st);
    return compared;
}

/* Runs case c in f64 against every step of torch's f64 run and its final state
 * (*n_state: state entries compared). Returns the worst error. */
static double check_case(const pg_tensor_list *fx, const char *c, double rtol, int *n_state)
{
    run r;
    run_init(&r, fx, c, PG_F64);
    double worst = 0;
    char what[128];
    for (int t = 0; t < STEPS; t++) {
        run_step(&r, fx, t);
        for (int k = 0; k < NP; k++) {
            snprintf(what, sizeof what, "%s step %d param %d", c, t, k);
            worst = fmax(worst, assert_close_scaled(r.p[k], fx_get(fx, "%s.out.%d.%d", c, t, k), rtol, what));
        }
    }
    *n_state += check_final_state(fx, c, &r, rtol, &worst);
    run_free(&r);
    return worst;
}

/* Runs case c in f32 against torch's f32 run (last step). */
static double check_case_f32(const pg_tensor_list *fx, const char *c, double rtol)
{
    run r;
    run_init(&r, fx, c, PG_F32);
    for (int t = 0; t < STEPS; t++)
        run_step(&r, fx, t);
    double worst = 0;
    char what[128];
    for (int k = 0; k < NP; k++) {
        cr_assert_eq(r.p[k]->dtype, PG_F32);
        snprintf(what, sizeof what, "%s f32 param %d", c, k);
        worst = fmax(worst, assert_close_scaled(r.p[k], fx_get(fx, "%s.f32.%d", c, k), rtol, what));
    }
    run_free(&r);
    return worst;
}

/* Over 12 steps, f64 runs agree with torch's f64 runs within 1e-14 of each
 * tensor's scale (measured: <= 5e-16, i.e. a few ulps: torch fuses some
 * multiply-adds), f32 runs with torch's f32 runs within 1e-6 (measured <= 2e-7,
 * several cases bit for bit). */
#define RTOL64 1e-14
#define RTOL32 1e-6

static void check_file(const char *area, const char *const *cases, int n)
{
    pg_tensor_list fx = load_fx(area);
    int n_state = 0;
    for (int i = 0; i < n; i++) {
        check_case(&fx, cases[i], RTOL64, &n_state);
        check_case_f32(&fx, cases[i], RTOL32);
    }
    cr_assert_gt(n_state, 0, "%s: no optimizer state compared", area);
    pg_tensor_list_free_all(&fx);
}

/* ---- parity ------------------------------------------------------------------------------- */

Test(optim, sgd_parity)
{
    const char *cases[] = {"sgd_plain", "sgd_wd", "sgd_momentum", "sgd_dampening", "sgd_nesterov"};
    check_file("sgd", cases, 5);
}

Test(optim, adam_parity)
{
    const char *cases[] = {"adam", "adam_wd", "adam_amsgrad"};
    check_file("adam", cases, 3);
}

Test(optim, adamw_parity)
{
    const char *cases[] = {"adamw", "adamw_wd", "adamw_amsgrad"};
    check_file("adamw", cases, 3);
}

Test(optim, groups_parity)
{
    /* two groups with their own lr, weight decay, momentum / betas / eps / amsgrad */
    const char *cases[] = {"sgd_groups", "adam_groups", "adamw_groups"};
    check_file("groups", cases, 3);
}

Test(optim, schedule_with_optimizer_parity)
{
    /* AdamW + warmup-cosine, SGD + StepLR, Adam + LinearLR, lr changing every step */
    const char *cases[] = {"adamw_cosine", "sgd_step", "adam_warmup"};
    check_file("sched", cases, 3);
}

Test(optim, grad_none_is_skipped_and_steps_count_per_parameter)
{
    pg_tensor_list fx = load_fx("adam");
    run r;
    run_init(&r, &fx, "adam", PG_F64);
    pg_tensor *p3 = pg_tensor_copy(NULL, r.p[3]);
    for (int t = 0; t < STEPS; t++)
        run_step(&r, &fx, t);
    /* parameter 3 never had a grad: unchanged, step 0, moments 0 */
    for (int64_t i = 0; i < p3->numel; i++)
        cr_assert_eq(pg_get(r.p[3], i), pg_get(p3, i));
    cr_assert_eq(*pg_i64(r.o->state[3].step), 0);
    for (int64_t i = 0; i < p3->numel; i++)
        cr_assert_eq(pg_get(r.o->state[3].exp_avg, i), 0.0);
    /* parameter 2 has no grad at t = 1, 4, 7, 10 */
    cr_assert_eq(*pg_i64(r.o->state[2].step), STEPS - 4);
    cr_assert_eq(*pg_i64(r.o->state[0].step), STEPS);
    pg_tensor_free(p3);
    run_free(&r);
    pg_tensor_list_free_all(&fx);
}

Test(optim, state_allocated_once_at_add_group)
{
    pg_tensor_list fx = load_fx("adam");
    run r;
    run_init(&r, &fx, "adam_amsgrad", PG_F64);
    pg_tensor *bufs[NP][3];
    for (int i = 0; i < NP; i++) {
        pg_param_state *st = &r.o->state[i];
        cr_assert(st->exp_avg && st->exp_avg_sq && st->max_exp_avg_sq && !st->momentum_buffer);
        bufs[i][0] = st->exp_avg;
        bufs[i][1] = st->exp_avg_sq;
        bufs[i][2] = st->max_exp_avg_sq;
    }
    for (int t = 0; t < STEPS; t++) {
        run_step(&r, &fx, t);
        for (int i = 0; i < NP; i++) {
            pg_param_state *st = &r.o->state[i];
            cr_assert(st->exp_avg == bufs[i][0] && st->exp_avg_sq == bufs[i][1] && st->max_exp_avg_sq == bufs[i][2]);
        }
    }
    run_free(&r);
    pg_tensor_list_free_all(&fx);
}

Test(optim, zero_grad)
{
    pg_tensor *p = T64(PG_SHAPE(3), 1, 2, 3), *q = T32(PG_SHAPE(2), 1, 2);
    p->grad = T64(PG_SHAPE(3), 4, 5, 6);
    pg_optim *o = pg_optim_new(PG_SGD, NULL);
    cr_assert_eq(pg_optim_add_group(o, (pg_tensor *[]){p, q}, 2, NULL), 0);
    pg_optim_zero_grad(o); /* q has no grad: fine */
    ASSERT_VALUES(p->grad, 0, 0, 0, 0);
    cr_assert_null(q->grad);
    pg_optim_zero_grad(NULL);
    pg_optim_free(o);
    pg_tensor_free(p);
    pg_tensor_free(q);
}

/* ---- clipping ------------------------------------------------------------------------------- */

Test(optim, clip_grad_norm_parity)
{
    pg_tensor_list fx = load_fx("clip");
    for (int c = 0;; c++) {
        pg_tensor *cfg = fx_get(&fx, "clip.%d.cfg", c);
        if (!cfg)
            break;
        pg_tensor *ps[NP];
        for (int k = 0; k < NP; k++) {
            pg_tensor *g = fx_get(&fx, "clip.grad.%d", k);
            ps[k] = pg_tensor_full(NULL, PG_F64, PG_SHAPE(1), 0); /* only the grads matter */
            ps[k]->grad = g ? pg_tensor_copy(NULL, g) : NULL;
        }
        double max_norm = pg_get(cfg, 0), p = pg_get(cfg, 1);
        double norm0 = pg_grad_norm(ps, NP, p);
        double total = p == 2.0 ? pg_clip_grad_norm(ps, NP, max_norm) : pg_clip_grad_norm_p(ps, NP, max_norm, p);
        double want = pg_item(fx_get(&fx, "clip.%d.total", c));
        cr_assert(fabs(total - want) <= 1e-14 * want, "case %d: total %.17g, torch %.17g", c, total, want);
        cr_assert_eq(norm0, total, "pg_grad_norm agrees with the clip's return");
        for (int k = 0; k < 3; k++) {
            char what[64];
            snprintf(what, sizeof what, "clip case %d grad %d", c, k);
            assert_close_scaled(ps[k]->grad, fx_get(&fx, "clip.%d.out.%d", c, k), 1e-14, what);
        }
        cr_assert_null(ps[3]->grad);
        free_all(NP, ps);
    }
    pg_tensor_list_free_all(&fx);
}

Test(optim, clip_edge_cases)
{
    pg_tensor *a = T64(PG_SHAPE(2), 1, 2), *b = T32(PG_SHAPE(2), 0, 0);
    /* no grads at all: total 0, nothing to do (torch returns tensor(0.)) */
    cr_assert_eq(pg_clip_grad_norm((pg_tensor *[]){a, b}, 2, 1.0), 0.0);
    cr_assert_eq(pg_clip_grad_norm(NULL, 0, 1.0), 0.0);
    /* f32 and f64 grads together: norm of (3, 4) and (0, 12) is 13 */
    a->grad = T64(PG_SHAPE(2), 3, 4);
    b->grad = T32(PG_SHAPE(2), 0, -12);
    cr_assert_eq(pg_grad_norm((pg_tensor *[]){a, b}, 2, 2.0), 13.0);
    cr_assert_eq(pg_grad_norm((pg_tensor *[]){a, b}, 2, INFINITY), 12.0);
    cr_assert_eq(pg_clip_grad_norm((pg_tensor *[]){a, b}, 2, 1e9), 13.0);
    ASSERT_VALUES(a->grad, 0, 3, 4); /* coef clamped to 1: unchanged */
    double coef = 6.5 / (13.0 + 1e-6);
    cr_assert_eq(pg_clip_grad_norm((pg_tensor *[]){a, b}, 2, 6.5), 13.0);
    ASSERT_VALUES(a->grad, 1e-15, 3 * coef, 4 * coef);
    ASSERT_VALUES(b->grad, 1e-7, 0, -12 * coef);
    /* clip by value */
    pg_set(a->grad, 0, -5);
    pg_set(a->grad, 1, 0.5);
    cr_assert_eq(pg_clip_grad_value((pg_tensor *[]){a}, 1, 1.0), 0);
    ASSERT_VALUES(a->grad, 0, -1, 0.5);
    /* non-finite grads pass through as torch: the norm is inf, coef 0 */
    pg_set(a->grad, 0, INFINITY);
    cr_assert(isinf(pg_clip_grad_norm((pg_tensor *[]){a}, 1, 1.0)));
    cr_assert(isnan(pg_get(a->grad, 0)) && pg_get(a->grad, 1) == 0.0);
    /* bad arguments */
    pg_clear_error();
    cr_assert_eq(pg_clip_grad_norm((pg_tensor *[]){a, NULL}, 2, 1.0), -1.0);
    cr_assert(strstr(pg_last_error(), "pg_clip_grad_norm: parameter 1 is NULL"));
    cr_assert_eq(pg_clip_grad_norm(NULL, 2, 1.0), -1.0);
    cr_assert_eq(pg_clip_grad_norm((pg_tensor *[]){a}, 1, -1.0), -1.0);
    cr_assert(strstr(pg_last_error(), "max_norm must be >= 0"));
    cr_assert_eq(pg_clip_grad_norm((pg_tensor *[]){a}, 1, NAN), -1.0);
    cr_assert_eq(pg_clip_grad_norm_p((pg_tensor *[]){a}, 1, 1.0, 0.0), -1.0);
    cr_assert(strstr(pg_last_error(), "norm type must be > 0"));
    cr_assert_eq(pg_grad_norm((pg_tensor *[]){a}, 1, -2.0), -1.0);
    cr_assert_eq(pg_clip_grad_value((pg_tensor *[]){a}, 1, -1.0), -1);
    pg_tensor_free(a);
    pg_tensor_free(b);
}

/* ---- schedules ------------------------------------------------------------------------------ */

Test(optim, schedule_lr_sequences_match_torch)
{
    pg_tensor_list fx = load_fx("sched");
    const char *names[] = {"const", "warmup", "warmup1", "cosine", "cosine_nowarm", "step", "step1"};
    for (int c = 0; c < 7; c++) {
        pg_tensor *cfg = fx_get(&fx, "%s.cfg", names[c]), *base = fx_get(&fx, "%s.base", names[c]);
        pg_tensor *lr = fx_get(&fx, "%s.lr", names[c]);
        cr_assert(cfg && base && lr, "%s missing", names[c]);
        int G = (int)base->numel;
        int64_t S = lr->shape[0];
        pg_tensor *p[2] = {T64(PG_SHAPE(1), 0), T64(PG_SHAPE(1), 0)};
        pg_optim *o = pg_optim_new(PG_SGD, NULL);
        for (int j = 0; j < G; j++)
            cr_assert_eq(pg_optim_add_group_lr(o, &p[j], 1, pg_get(base, j), 0.0), j);
        pg_schedule *s = pg_schedule_new(o, sched_from(cfg));
        cr_assert_not_null(s, "%s: %s", names[c], pg_last_error());
        for (int64_t t = 0; t < S; t++) {
            cr_assert_eq(pg_schedule_get_step(s), t);
            for (int j = 0; j < G; j++) {
                double want = pg_get(lr, t * G + j), got = o->groups[j].h.lr;
                cr_assert(fabs(got - want) <= 1e-14 * want, "%s step %lld group %d: lr %.17g, torch %.17g",
                          names[c], (long long)t, j, got, want);
                cr_assert_eq(o->groups[j].base_lr, pg_get(base, j));
            }
            cr_assert_eq(pg_schedule_step(s), 0);
        }
        pg_schedule_free(s);
        pg_optim_free(o);
        free_all(2, p);
    }
    pg_tensor_list_free_all(&fx);
}

Test(optim, schedule_formulas)
{
    /* warmup from 0 (torch's LinearLR needs start_factor > 0): s / W, then 1 */
    pg_sched_cfg w = pg_sched_linear_warmup(4, 0.0);
    for (int s = 0; s < 10; s++)
        cr_assert_eq(pg_sched_factor(w, s), s < 4 ? s / 4.0 : 1.0);
    cr_assert_eq(pg_sched_factor(pg_sched_linear_warmup(0, 0.0), 0), 1.0);
    /* cosine: halfway is the mean of 1 and min; after T it stays at min */
    pg_sched_cfg c = pg_sched_warmup_cosine(2, 0.0, 12, 0.2);
    cr_assert_eq(pg_sched_factor(c, 0), 0.0);
    cr_assert_eq(pg_sched_factor(c, 1), 0.5);
    cr_assert_eq(pg_sched_factor(c, 2), 1.0);
    cr_assert(fabs(pg_sched_factor(c, 7) - 0.6) < 1e-15);
    cr_assert(fabs(pg_sched_factor(c, 12) - 0.2) < 1e-15);
    for (int s = 13; s < 40; s++)
        cr_assert_eq(pg_sched_factor(c, s), 0.2);
    /* step decay */
    pg_sched_cfg st = pg_sched_step(3, 0.1);
    cr_assert_eq(pg_sched_factor(st, 2), 1.0);
    cr_assert_eq(pg_sched_factor(st, 3), 0.1);
    cr_assert_eq(pg_sched_factor(st, 7), pow(0.1, 2));
    cr_assert_eq(pg_sched_factor(pg_sched_constant(), 1000), 1.0);
    /* set_step jumps; the group's lr follows */
    pg_tensor *p = T64(PG_SHAPE(1), 0);
    pg_optim *o = pg_optim_new(PG_ADAM, NULL);
    pg_optim_add_group_lr(o, &p, 1, 0.5, 0.0);
    pg_schedule *s = pg_schedule_new(o, c);
    cr_assert_eq(o->groups[0].h.lr, 0.0);
    cr_assert_eq(pg_schedule_set_step(s, 2), 0);
    cr_assert_eq(o->groups[0].h.lr, 0.5);
    cr_assert_eq(pg_schedule_set_step(s, 100), 0);
    cr_assert_eq(o->groups[0].h.lr, 0.5 * 0.2);
    pg_schedule_free(s);
    pg_optim_free(o);
    pg_tensor_free(p);
}

Test(optim, schedule_bad_input)
{
    pg_tensor *p = T64(PG_SHAPE(1), 0);
    pg_optim *o = pg_optim_new(PG_SGD, NULL);
    pg_optim_add_group(o, &p, 1, NULL);
    ASSERT_FAILS(pg_schedule_new(NULL, pg_sched_constant()), "pg_schedule_new: optimizer is NULL");
    ASSERT_FAILS(pg_schedule_new(o, pg_sched_linear_warmup(-1, 0.5)), "warmup_steps >= 0");
    ASSERT_FAILS(pg_schedule_new(o, pg_sched_linear_warmup(3, 1.5)), "start_factor in [0, 1]");
    ASSERT_FAILS(pg_schedule_new(o, pg_sched_warmup_cosine(5, 0.0, 5, 0.1)), "total_steps > warmup_steps");
    ASSERT_FAILS(pg_schedule_new(o, pg_sched_warmup_cosine(5, 0.0, 10, -0.1)), "min_factor in [0, 1]");
    ASSERT_FAILS(pg_schedule_new(o, pg_sched_step(0, 0.5)), "step_size >= 1");
    ASSERT_FAILS(pg_schedule_new(o, pg_sched_step(2, NAN)), "gamma >= 0");
    pg_sched_cfg bad = pg_sched_constant();
    bad.kind = (pg_sched_kind)9;
    ASSERT_FAILS(pg_schedule_new(o, bad), "unknown schedule kind 9");
    cr_assert_eq(pg_schedule_step(NULL), -1);
    cr_assert_eq(pg_schedule_get_step(NULL), -1);
    pg_schedule *s = pg_schedule_new(o, pg_sched_constant());
    cr_assert_eq(pg_schedule_set_step(s, -1), -1);
    cr_assert(strstr(pg_last_error(), "step must be >= 0"));
    pg_schedule_free(s);
    pg_schedule_free(NULL);
    pg_optim_free(o);
    pg_tensor_free(p);
}

/* ---- state export / import ------------------------------------------------------------------------ */

/* Names of a list, joined with spaces. */
static void joined(const pg_tensor_list *l, char *buf, size_t size)
{
    buf[0] = '\0';
    for (int i = 0; i < l->n; i++) {
        strncat(buf, l->names[i], size - strlen(buf) - 1);
        strncat(buf, " ", size - strlen(buf) - 1);
    }
}

Test(optim, state_export_names)
{
    pg_tensor *a = T64(PG_SHAPE(2), 1, 2), *b = T32(PG_SHAPE(1), 3);
    char buf[1024];
    pg_optim_hparams h = pg_adam_hparams(0.1);
    pg_optim *o = pg_optim_new(PG_ADAM, &h);
    pg_optim_add_group(o, &a, 1, NULL);
    h.amsgrad = true;
    pg_optim_add_group(o, &b, 1, &h);
    pg_schedule *s = pg_schedule_new(o, pg_sched_constant());
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor_list_push(&l, "model.weight", a); /* appends after what is there */
    cr_assert_eq(pg_optim_state_export(o, s, &l), 0);
    joined(&l, buf, sizeof buf);
    cr_assert_str_eq(buf, "model.weight optim.0.step optim.0.exp_avg optim.0.exp_avg_sq optim.1.step optim.1.exp_avg "
                          "optim.1.exp_avg_sq optim.1.max_exp_avg_sq sched.step ");
    /* borrowed, live buffers with the parameter's dtype; steps I64 0-dim */
    cr_assert_eq(l.tensors[2], o->state[0].exp_avg);
    cr_assert_eq(l.tensors[7]->dtype, PG_F32);
    cr_assert(l.tensors[1]->dtype == PG_I64 && l.tensors[1]->ndim == 0);
    cr_assert_eq(l.tensors[8], s->step);
    pg_tensor_list_free(&l);
    pg_schedule_free(s);
    pg_optim_free(o);

    /* SGD: a step per parameter, a momentum buffer only with momentum */
    pg_optim *sgd = pg_optim_new(PG_SGD, NULL);
    pg_optim_add_group_lr(sgd, &a, 1, 0.1, 0.0);
    h = pg_sgd_hparams(0.1);
    h.momentum = 0.9;
    pg_optim_add_group(sgd, &b, 1, &h);
    cr_assert_eq(pg_optim_state_export(sgd, NULL, &l), 0);
    joined(&l, buf, sizeof buf);
    cr_assert_str_eq(buf, "optim.0.step optim.1.step optim.1.momentum_buffer ");
    pg_tensor_list_free(&l);
    cr_assert_eq(pg_optim_state_export(NULL, NULL, &l), -1);
    cr_assert_eq(pg_optim_state_export(sgd, NULL, NULL), -1);
    pg_optim_free(sgd);
    pg_tensor_free(a);
    pg_tensor_free(b);
}

/* Runs steps [from, to) of the fixture on r. */
static void run_steps(run *r, const pg_tensor_list *fx, int from, int to)
{
    for (int t = from; t < to; t++)
        run_step(r, fx, t);
}

static void assert_same_params(const run *a, const run *b)
{
    for (int k = 0; k < NP; k++)
        cr_assert_eq(memcmp(a->p[k]->data, b->p[k]->data, (size_t)a->p[k]->numel * pg_dtype_size(a->p[k]->dtype)),
                     0, "parameter %d differs", k);
}

/* 12 steps in one run == 6 steps, export, a fresh optimizer on copies of the
 * parameters, import, 6 steps: bit for bit, for every case of a fixture. */
static void roundtrip_case(const pg_tensor_list *fx, const char *c, pg_dtype dt, const char *via_file)
{
    run full, first, second;
    run_init(&full, fx, c, dt);
    run_steps(&full, fx, 0, STEPS);
    run_init(&first, fx, c, dt);
    run_steps(&first, fx, 0, STEPS / 2);
    run_init(&second, fx, c, dt);
    for (int k = 0; k < NP; k++)
        pg_copy_into(second.p[k], first.p[k]);
    pg_tensor_list st = {0, 0, NULL, NULL};
    cr_assert_eq(pg_optim_state_export(first.o, first.s, &st), 0);
    if (via_file) {
        cr_assert_eq(pg_safetensors_save(via_file, &st, 0, NULL, NULL), 0, "%s", pg_last_error());
        pg_tensor_list_free(&st);
        cr_assert_eq(pg_safetensors_load(via_file, &st), 0, "%s", pg_last_error());
    }
    cr_assert_eq(pg_optim_state_import(second.o, second.s, &st), 0, "%s", pg_last_error());
    if (via_file)
        pg_tensor_list_free_all(&st);
    else
        pg_tensor_list_free(&st);
    if (second.s) /* the imported schedule step set the lr of step 6 */
        cr_assert_eq(second.o->groups[0].h.lr, first.o->groups[0].h.lr);
    run_steps(&second, fx, STEPS / 2, STEPS);
    assert_same_params(&full, &second);
    run_free(&full);
    run_free(&first);
    run_free(&second);
}

Test(optim, state_roundtrip_gives_identical_updates)
{
    const char *areas[] = {"sgd", "adam", "adamw", "groups", "sched"};
    const char *cases[][5] = {{"sgd_momentum", "sgd_dampening", "sgd_nesterov", NULL},
                              {"adam", "adam_amsgrad", NULL},
                              {"adamw_amsgrad", NULL},
                              {"sgd_groups", "adam_groups", "adamw_groups", NULL},
                              {"adamw_cosine", "sgd_step", "adam_warmup", NULL}};
    for (int a = 0; a < 5; a++) {
        pg_tensor_list fx = load_fx(areas[a]);
        for (int c = 0; cases[a][c]; c++) {
            roundtrip_case(&fx, cases[a][c], PG_F64, NULL);
            roundtrip_case(&fx, cases[a][c], PG_F32, NULL);
        }
        pg_tensor_list_free_all(&fx);
    }
}

Test(optim, state_roundtrip_through_a_safetensors_file)
{
    char path[] = "/tmp/pg_optim_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    pg_tensor_list fx = load_fx("sched");
    roundtrip_case(&fx, "adamw_cosine", PG_F64, path);
    roundtrip_case(&fx, "sgd_step", PG_F32, path);
    pg_tensor_list_free_all(&fx);
    unlink(path);
}

/* A small Adam (amsgrad) optimizer with a schedule after 2 steps, for the bad-import tests. */
typedef struct small {
    pg_tensor *a, *b;
    pg_optim *o;
    pg_schedule *s;
} small;

static small small_new(bool amsgrad)
{
    small m;
    m.a = T64(PG_SHAPE(2, 2), 1, 2, 3, 4);
    m.b = T64(PG_SHAPE(3), 5, 6, 7);
    m.a->grad = T64(PG_SHAPE(2, 2), 0.1, -0.2, 0.3, 0.4);
    m.b->grad = T64(PG_SHAPE(3), 1, 2, 3);
    pg_optim_hparams h = pg_adam_hparams(0.1);
    h.amsgrad = amsgrad;
    m.o = pg_optim_new(PG_ADAM, &h);
    pg_optim_add_group(m.o, (pg_tensor *[]){m.a, m.b}, 2, NULL);
    m.s = pg_schedule_new(m.o, pg_sched_step(1, 0.5));
    pg_optim_step(m.o);
    pg_schedule_step(m.s);
    pg_optim_step(m.o);
    pg_schedule_step(m.s);
    return m;
}

static void small_free(small *m)
{
    pg_schedule_free(m->s);
    pg_optim_free(m->o);
    pg_tensor_free(m->a);
    pg_tensor_free(m->b);
}

/* A deep copy of m's exported state (so the tests may edit it). */
static pg_tensor_list small_state(const small *m)
{
    pg_tensor_list l = {0, 0, NULL, NULL}, copy = {0, 0, NULL, NULL};
    cr_assert_eq(pg_optim_state_export(m->o, m->s, &l), 0);
    for (int i = 0; i < l.n; i++)
        pg_tensor_list_push(&copy, l.names[i], pg_tensor_copy(NULL, l.tensors[i]));
    pg_tensor_list_free(&l);
    return copy;
}

/* Asserts importing st into a fresh optimizer fails with `needle` and leaves it as it was. */
static void assert_import_fails(pg_tensor_list *st, bool amsgrad, const char *needle)
{
    small m = small_new(amsgrad);
    pg_tensor_list before = small_state(&m);
    double lr = m.o->groups[0].h.lr;
    pg_clear_error();
    cr_assert_eq(pg_optim_state_import(m.o, m.s, st), -1, "import should fail (%s)", needle);
    cr_assert(strstr(pg_last_error(), needle), "error \"%s\" lacks \"%s\"", pg_last_error(), needle);
    pg_tensor_list after = small_state(&m);
    cr_assert_eq(before.n, after.n);
    for (int i = 0; i < before.n; i++)
        cr_assert_eq(memcmp(before.tensors[i]->data, after.tensors[i]->data,
                            (size_t)before.tensors[i]->numel * pg_dtype_size(before.tensors[i]->dtype)),
                     0, "%s changed", before.names[i]);
    cr_assert_eq(m.o->groups[0].h.lr, lr);
    pg_tensor_list_free_all(&before);
    pg_tensor_list_free_all(&after);
    small_free(&m);
}

/* A state taken after 5 steps of an amsgrad optimizer (so it differs from the target's). */
static pg_tensor_list other_state(bool amsgrad)
{
    small m = small_new(amsgrad);
    for (int i = 0; i < 3; i++) {
        pg_optim_step(m.o);
        pg_schedule_step(m.s);
    }
    pg_tensor_list st = small_state(&m);
    small_free(&m);
    return st;
}

static void replace(pg_tensor_list *l, const char *name, pg_tensor *t)
{
    int i = pg_tensor_list_find(l, name);
    cr_assert_geq(i, 0, "%s", name);
    pg_tensor_free(l->tensors[i]);
    l->tensors[i] = t;
}

Test(optim, state_import_bad_states_leave_optimizer_untouched)
{
    /* a good import works and copies the values */
    small m = small_new(true);
    pg_tensor_list good = other_state(true);
    cr_assert_eq(pg_optim_state_import(m.o, m.s, &good), 0, "%s", pg_last_error());
    cr_assert_eq(*pg_i64(m.o->state[1].step), 5);
    cr_assert_eq(pg_schedule_get_step(m.s), 5);
    cr_assert_eq(m.o->groups[0].h.lr, 0.1 * pow(0.5, 5));
    small_free(&m);
    /* unrelated names are ignored */
    pg_tensor_list_push(&good, "model.weight", pg_tensor_full(NULL, PG_F32, PG_SHAPE(7), 0));
    m = small_new(true);
    cr_assert_eq(pg_optim_state_import(m.o, m.s, &good), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_state_import(m.o, NULL, &good), 0, "without a schedule: sched.step ignored");
    small_free(&m);
    pg_tensor_list_free_all(&good);

    pg_tensor_list st;
    /* a missing entry */
    st = other_state(true);
    pg_tensor_list bad = {0, 0, NULL, NULL};
    for (int i = 0; i < st.n; i++)
        if (strcmp(st.names[i], "optim.1.exp_avg_sq"))
            pg_tensor_list_push(&bad, st.names[i], st.tensors[i]);
    assert_import_fails(&bad, true, "missing entry optim.1.exp_avg_sq");
    pg_tensor_list_free(&bad);
    for (int i = 0; i < st.n; i++)
        if (strcmp(st.names[i], "sched.step"))
            pg_tensor_list_push(&bad, st.names[i], st.tensors[i]);
    assert_import_fails(&bad, true, "missing entry sched.step");
    pg_tensor_list_free(&bad);
    pg_tensor_list_free_all(&st);
    /* a state without amsgrad into an amsgrad optimizer, and the reverse */
    st = other_state(false);
    assert_import_fails(&st, true, "missing entry optim.0.max_exp_avg_sq");
    pg_tensor_list_free_all(&st);
    st = other_state(true);
    assert_import_fails(&st, false, "unexpected entry optim.0.max_exp_avg_sq");
    pg_tensor_list_free_all(&st);
    /* wrong shape, wrong dtype */
    st = other_state(true);
    replace(&st, "optim.0.exp_avg", pg_tensor_full(NULL, PG_F64, PG_SHAPE(4), 0));
    assert_import_fails(&st, true, "optim.0.exp_avg is f64[4], expected f64[2,2]");
    pg_tensor_list_free_all(&st);
    st = other_state(true);
    replace(&st, "optim.1.exp_avg", pg_tensor_full(NULL, PG_F32, PG_SHAPE(3), 0));
    assert_import_fails(&st, true, "optim.1.exp_avg is f32[3], expected f64[3]");
    pg_tensor_list_free_all(&st);
    /* bad steps: negative, not I64, not 0-dim; and the schedule's */
    st = other_state(true);
    replace(&st, "optim.1.step", pg_tensor_full(NULL, PG_I64, 0, NULL, -3));
    assert_import_fails(&st, true, "optim.1.step holds -3");
    pg_tensor_list_free_all(&st);
    st = other_state(true);
    replace(&st, "optim.0.step", pg_tensor_full(NULL, PG_F64, 0, NULL, 2));
    assert_import_fails(&st, true, "optim.0.step is f64[], expected i64[]");
    pg_tensor_list_free_all(&st);
    st = other_state(true);
    replace(&st, "sched.step", pg_tensor_full(NULL, PG_I64, PG_SHAPE(1), 2));
    assert_import_fails(&st, true, "sched.step is i64[1], expected i64[]");
    pg_tensor_list_free_all(&st);
    /* extra entries: a parameter the optimizer does not have, a field it does not use, junk */
    const char *extra[] = {"optim.2.step", "optim.0.momentum_buffer", "optim.x.step", "optim.00.step",
                           "optim.0.steps", "optim.99999999999999999999.step"};
    for (int e = 0; e < 6; e++) {
        st = other_state(true);
        pg_tensor_list_push(&st, extra[e], pg_tensor_full(NULL, PG_I64, 0, NULL, 1));
        char needle[128];
        snprintf(needle, sizeof needle, "unexpected entry %s", extra[e]);
        assert_import_fails(&st, true, needle);
        pg_tensor_list_free_all(&st);
    }
    /* a name twice */
    st = other_state(true);
    pg_tensor_list_push(&st, "optim.0.step", pg_tensor_full(NULL, PG_I64, 0, NULL, 1));
    assert_import_fails(&st, true, "appears twice");
    pg_tensor_list_free_all(&st);
    /* an Adam state into SGD with momentum */
    st = other_state(true);
    pg_optim_hparams h = pg_sgd_hparams(0.1);
    h.momentum = 0.9;
    pg_optim *sgd = pg_optim_new(PG_SGD, &h);
    pg_tensor *p[2] = {T64(PG_SHAPE(2, 2), 0, 0, 0, 0), T64(PG_SHAPE(3), 0, 0, 0)};
    pg_optim_add_group(sgd, p, 2, NULL);
    cr_assert_eq(pg_optim_state_import(sgd, NULL, &st), -1);
    cr_assert(strstr(pg_last_error(), "missing entry optim.0.momentum_buffer"), "%s", pg_last_error());
    /* NULLs, a schedule of another optimizer */
    m = small_new(true);
    cr_assert_eq(pg_optim_state_import(NULL, NULL, &st), -1);
    cr_assert_eq(pg_optim_state_import(m.o, NULL, NULL), -1);
    cr_assert_eq(pg_optim_state_import(sgd, m.s, &st), -1);
    cr_assert(strstr(pg_last_error(), "the schedule belongs to another optimizer"));
    small_free(&m);
    pg_optim_free(sgd);
    free_all(2, p);
    pg_tensor_list_free_all(&st);
}

/* ---- decay split ------------------------------------------------------------------------------ */

/* Model: proj (Linear 3 -> 2), norm (LayerNorm 2), div (2, 2) */
static pg_module *small_model(void)
{
    pg_rng r = pg_rng_init(3);
    pg_module *root = malloc(sizeof *root);
    pg_module_init(root, "Model", NULL);
    pg_module_add_child(root, "proj", &pg_linear_new(3, 2, true, PG_F64, &r)->base);
    pg_module_add_child(root, "norm", &pg_layernorm_new(2, 1e-5, true, true, PG_F64)->base);
    pg_tensor *div = pg_module_new_param(root, "div", PG_F64, PG_SHAPE(2, 2));
    pg_fill(div, 2.0);
    return root;
}

static bool only_weights(const char *name, const pg_tensor *t, void *ctx)
{
    (void)t;
    ++*(int *)ctx;
    return strstr(name, "weight") == NULL;
}

Test(optim, decay_split)
{
    pg_module *m = small_model();
    pg_tensor_list ps = pg_module_parameters(m), dec = {0, 0, NULL, NULL}, nodec = {0, 0, NULL, NULL};
    char buf[512];
    cr_assert_eq(pg_split_decay(&ps, pg_no_decay_default, NULL, &dec, &nodec), 0);
    joined(&dec, buf, sizeof buf);
    cr_assert_str_eq(buf, "proj.weight ");
    joined(&nodec, buf, sizeof buf);
    cr_assert_str_eq(buf, "div proj.bias norm.weight norm.bias ");
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);
    /* the user's predicate, with its context */
    int calls = 0;
    cr_assert_eq(pg_split_decay(&ps, only_weights, &calls, &dec, &nodec), 0);
    cr_assert_eq(calls, 5);
    joined(&dec, buf, sizeof buf);
    cr_assert_str_eq(buf, "proj.weight norm.weight ");
    /* the outputs must start empty; NULLs */
    cr_assert_eq(pg_split_decay(&ps, only_weights, &calls, &dec, &nodec), -1);
    cr_assert(strstr(pg_last_error(), "must start empty"));
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);
    cr_assert_eq(pg_split_decay(&ps, NULL, NULL, &dec, &nodec), -1);
    cr_assert_eq(pg_split_decay(&ps, pg_no_decay_default, NULL, &dec, &dec), -1);

    /* AdamW over the two groups with zero grads: only decay moves the weights */
    pg_optim *o = pg_optim_new(PG_ADAMW, NULL);
    cr_assert_eq(pg_optim_add_decay_groups(o, &ps, pg_no_decay_default, NULL, 0.1, 0.5), 0);
    cr_assert_eq(o->n_groups, 2);
    cr_assert(o->groups[0].n == 1 && o->groups[1].n == 4);
    cr_assert(o->groups[0].h.weight_decay == 0.5 && o->groups[1].h.weight_decay == 0.0);
    cr_assert(o->groups[0].h.lr == 0.1 && o->groups[1].h.lr == 0.1);
    pg_tensor_list before = {0, 0, NULL, NULL};
    for (int i = 0; i < ps.n; i++) {
        pg_tensor_list_push(&before, ps.names[i], pg_tensor_copy(NULL, ps.tensors[i]));
        ps.tensors[i]->grad = pg_tensor_full(NULL, PG_F64, ps.tensors[i]->ndim, ps.tensors[i]->shape, 0);
    }
    cr_assert_eq(pg_optim_step(o), 0);
    for (int i = 0; i < ps.n; i++) {
        double f = !strcmp(ps.names[i], "proj.weight") ? 1.0 - 0.1 * 0.5 : 1.0;
        for (int64_t j = 0; j < ps.tensors[i]->numel; j++)
            cr_assert_eq(pg_get(ps.tensors[i], j), pg_get(before.tensors[i], j) * f, "%s", ps.names[i]);
    }
    /* adding them again fails (each parameter once) and leaves o as it was */
    cr_assert_eq(pg_optim_add_decay_groups(o, &ps, pg_no_decay_default, NULL, 0.1, 0.5), -1);
    cr_assert(strstr(pg_last_error(), "appears twice"));
    cr_assert(o->n_groups == 2 && o->n_params == 5);
    pg_tensor_list_free_all(&before);
    pg_optim_free(o);
    pg_tensor_list_free(&ps);
    pg_module_free(m);
}

Test(optim, add_decay_groups_rolls_back_on_failure)
{
    /* the second (no-decay) group fails: the first is removed again */
    pg_tensor *w = T64(PG_SHAPE(2, 2), 1, 2, 3, 4), *b = T64(PG_SHAPE(2), 1, 2);
    pg_optim *o = pg_optim_new(PG_ADAM, NULL);
    cr_assert_eq(pg_optim_add_group(o, &b, 1, NULL), 0);
    pg_tensor_list ps = {0, 0, NULL, NULL};
    pg_tensor_list_push(&ps, "w", w);
    pg_tensor_list_push(&ps, "b", b);
    cr_assert_eq(pg_optim_add_decay_groups(o, &ps, pg_no_decay_default, NULL, 0.1, 0.1), -1);
    cr_assert(o->n_groups == 1 && o->n_params == 1);
    cr_assert_eq(pg_optim_add_decay_groups(NULL, &ps, pg_no_decay_default, NULL, 0.1, 0.1), -1);
    pg_tensor_list_free(&ps);
    pg_optim_free(o);
    pg_tensor_free(w);
    pg_tensor_free(b);
}

/* ---- bad input ------------------------------------------------------------------------------------ */

Test(optim, bad_hparams)
{
    pg_optim_hparams h = pg_adam_hparams(-0.1);
    ASSERT_FAILS(pg_optim_new(PG_ADAM, &h), "pg_optim_new: Adam lr must be >= 0, got -0.1");
    h = pg_adam_hparams(NAN);
    ASSERT_FAILS(pg_optim_new(PG_ADAM, &h), "lr must be >= 0");
    h = pg_adamw_hparams(0.1);
    h.beta1 = 1.0;
    ASSERT_FAILS(pg_optim_new(PG_ADAMW, &h), "AdamW beta1 must be in [0, 1), got 1");
    h.beta1 = 0.9;
    h.beta2 = -0.1;
    ASSERT_FAILS(pg_optim_new(PG_ADAMW, &h), "beta2 must be in [0, 1), got -0.1");
    h.beta2 = 0.999;
    h.eps = -1e-8;
    ASSERT_FAILS(pg_optim_new(PG_ADAMW, &h), "eps must be >= 0");
    h.eps = 1e-8;
    h.weight_decay = -1;
    ASSERT_FAILS(pg_optim_new(PG_ADAMW, &h), "weight_decay must be >= 0");
    h = pg_sgd_hparams(0.1);
    h.momentum = -0.5;
    ASSERT_FAILS(pg_optim_new(PG_SGD, &h), "SGD momentum must be >= 0");
    h.momentum = 0;
    h.nesterov = true;
    ASSERT_FAILS(pg_optim_new(PG_SGD, &h), "nesterov needs momentum > 0 and dampening 0");
    h.momentum = 0.9;
    h.dampening = 0.1;
    ASSERT_FAILS(pg_optim_new(PG_SGD, &h), "nesterov needs momentum > 0 and dampening 0");
    ASSERT_FAILS(pg_optim_new((pg_optim_kind)7, NULL), "unknown optimizer kind 7");
    /* SGD ignores the Adam fields (betas 0, eps 0 are fine) */
    h = pg_sgd_hparams(0.1);
    pg_optim *o = pg_optim_new(PG_SGD, &h);
    cr_assert_not_null(o);
    /* a group with its own bad hparams */
    pg_tensor *p = T64(PG_SHAPE(1), 1);
    h.lr = -1;
    pg_clear_error();
    cr_assert_eq(pg_optim_add_group(o, &p, 1, &h), -1);
    cr_assert(strstr(pg_last_error(), "pg_optim_add_group: SGD lr must be >= 0, got -1"));
    cr_assert_eq(pg_optim_add_group_lr(o, &p, 1, 0.1, -0.5), -1);
    cr_assert(strstr(pg_last_error(), "weight_decay must be >= 0, got -0.5"));
    cr_assert_eq(o->n_groups, 0);
    pg_optim_free(o);
    pg_optim_free(NULL);
    pg_tensor_free(p);
}

Test(optim, bad_groups)
{
    pg_optim *o = pg_optim_new(PG_ADAM, NULL);
    pg_tensor *a = T64(PG_SHAPE(2), 1, 2), *b = T32(PG_SHAPE(2), 1, 2), *i = TI64(PG_SHAPE(2), 1, 2);
    pg_graph *g = pg_graph_new();
    pg_tensor *in_graph = pg_zeros(g, PG_F64, PG_SHAPE(2));
    cr_assert_eq(pg_optim_add_group(NULL, &a, 1, NULL), -1);
    cr_assert(strstr(pg_last_error(), "optimizer is NULL"));
    cr_assert_eq(pg_optim_add_group(o, NULL, 2, NULL), -1);
    cr_assert(strstr(pg_last_error(), "bad parameter array"));
    cr_assert_eq(pg_optim_add_group(o, &a, -1, NULL), -1);
    cr_assert_eq(pg_optim_add_group(o, (pg_tensor *[]){a, NULL}, 2, NULL), -1);
    cr_assert(strstr(pg_last_error(), "parameter 1 is NULL"));
    cr_assert_eq(pg_optim_add_group(o, &i, 1, NULL), -1);
    cr_assert(strstr(pg_last_error(), "parameter 0 is i64[2]; parameters are f32 or f64 heap tensors"));
    cr_assert_eq(pg_optim_add_group(o, &in_graph, 1, NULL), -1);
    cr_assert(strstr(pg_last_error(), "in a graph arena"));
    cr_assert_eq(pg_optim_add_group(o, (pg_tensor *[]){a, b, a}, 3, NULL), -1);
    cr_assert(strstr(pg_last_error(), "parameter 2 (f64[2]) appears twice"));
    cr_assert_eq(o->n_groups, 0);
    cr_assert_eq(o->n_params, 0);
    /* an empty group is fine; the same parameter in two groups is not */
    cr_assert_eq(pg_optim_add_group(o, NULL, 0, NULL), 0);
    cr_assert_eq(pg_optim_add_group(o, (pg_tensor *[]){a, b}, 2, NULL), 1);
    cr_assert_eq(pg_optim_add_group(o, &b, 1, NULL), -1);
    cr_assert(strstr(pg_last_error(), "appears twice"));
    cr_assert_eq(o->n_groups, 2);
    cr_assert_eq(pg_optim_step(o), 0, "no grads: nothing to do");
    cr_assert_eq(*pg_i64(o->state[0].step), 0);
    pg_graph_free(g);
    pg_optim_free(o);
    pg_tensor_free(a);
    pg_tensor_free(b);
    pg_tensor_free(i);
}

Test(optim, step_checks_every_grad_first)
{
    pg_tensor *a = T64(PG_SHAPE(2), 1, 2), *b = T64(PG_SHAPE(2), 3, 4);
    a->grad = T64(PG_SHAPE(2), 1, 1);
    b->grad = T32(PG_SHAPE(2), 1, 1); /* wrong dtype */
    pg_optim *o = pg_optim_new(PG_SGD, NULL);
    pg_optim_add_group(o, (pg_tensor *[]){a, b}, 2, NULL);
    pg_clear_error();
    cr_assert_eq(pg_optim_step(o), -1);
    cr_assert(strstr(pg_last_error(), "pg_optim_step: parameter 1 is f64[2] but its grad is f32[2]"), "%s",
              pg_last_error());
    ASSERT_VALUES(a, 0, 1, 2); /* a was not updated either */
    cr_assert_eq(*pg_i64(o->state[0].step), 0);
    pg_tensor_free(b->grad);
    b->grad = T64(PG_SHAPE(3), 1, 1, 1); /* wrong size */
    cr_assert_eq(pg_optim_step(o), -1);
    cr_assert(strstr(pg_last_error(), "but its grad is f64[3]"));
    cr_assert_eq(pg_optim_step(NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_optim_step: optimizer is NULL"));
    pg_optim_free(o);
    pg_tensor_free(a);
    pg_tensor_free(b);
}

Test(optim, defaults_are_torchs)
{
    pg_optim_hparams s = pg_sgd_hparams(0.1), a = pg_adam_hparams(1e-3), w = pg_adamw_hparams(1e-3);
    cr_assert(s.lr == 0.1 && s.momentum == 0 && s.dampening == 0 && s.weight_decay == 0 && !s.nesterov);
    cr_assert(a.beta1 == 0.9 && a.beta2 == 0.999 && a.eps == 1e-8 && a.weight_decay == 0 && !a.amsgrad);
    cr_assert(w.beta1 == 0.9 && w.beta2 == 0.999 && w.eps == 1e-8 && w.weight_decay == 1e-2 && !w.amsgrad);
    pg_optim *o = pg_optim_new(PG_ADAMW, NULL);
    cr_assert(o->defaults.lr == 1e-3 && o->defaults.weight_decay == 1e-2);
    pg_optim_free(o);
}
