/* Learning-rate schedules: lr = base_lr * factor(step) for every group.
 * The factors and the torch schedulers they match are in optim.h. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>

static const double PI = 3.14159265358979323846; /* M_PI is not C11 */

pg_sched_cfg pg_sched_constant(void)
{
    return (pg_sched_cfg){.kind = PG_SCHED_CONSTANT, .start_factor = 1.0, .min_factor = 1.0, .gamma = 1.0};
}

pg_sched_cfg pg_sched_linear_warmup(int64_t warmup_steps, double start_factor)
{
    pg_sched_cfg c = pg_sched_constant();
    c.kind = PG_SCHED_LINEAR_WARMUP;
    c.warmup_steps = warmup_steps;
    c.start_factor = start_factor;
    return c;
}

pg_sched_cfg pg_sched_warmup_cosine(int64_t warmup_steps, double start_factor, int64_t total_steps,
                                    double min_factor)
{
    pg_sched_cfg c = pg_sched_linear_warmup(warmup_steps, start_factor);
    c.kind = PG_SCHED_WARMUP_COSINE;
    c.total_steps = total_steps;
    c.min_factor = min_factor;
    return c;
}

pg_sched_cfg pg_sched_step(int64_t step_size, double gamma)
{
    pg_sched_cfg c = pg_sched_constant();
    c.kind = PG_SCHED_STEP;
    c.step_size = step_size;
    c.gamma = gamma;
    return c;
}

static bool check_cfg(const char *fn, const pg_sched_cfg *c)
{
    bool warm = c->kind == PG_SCHED_LINEAR_WARMUP || c->kind == PG_SCHED_WARMUP_COSINE;
    if (c->kind < PG_SCHED_CONSTANT || c->kind > PG_SCHED_STEP) {
        pg_set_error("%s: unknown schedule kind %d", fn, (int)c->kind);
        return false;
    }
    if (warm && (c->warmup_steps < 0 || !(c->start_factor >= 0 && c->start_factor <= 1))) {
        pg_set_error("%s: warmup needs warmup_steps >= 0 and start_factor in [0, 1], got %lld, %g", fn,
                     (long long)c->warmup_steps, c->start_factor);
        return false;
    }
    if (c->kind == PG_SCHED_WARMUP_COSINE &&
        (c->total_steps <= c->warmup_steps || !(c->min_factor >= 0 && c->min_factor <= 1))) {
        pg_set_error("%s: cosine needs total_steps > warmup_steps and min_factor in [0, 1], got total %lld, "
                     "warmup %lld, min_factor %g",
                     fn, (long long)c->total_steps, (long long)c->warmup_steps, c->min_factor);
        return false;
    }
    if (c->kind == PG_SCHED_STEP && (c->step_size < 1 || !(c->gamma >= 0) || isinf(c->gamma))) {
        pg_set_error("%s: step decay needs step_size >= 1 and finite gamma >= 0, got %lld, %g", fn,
                     (long long)c->step_size, c->gamma);
        return false;
    }
    return true;
}

/* LinearLR's closed form: start + (end - start) * min(s, W) / W with end = 1 */
static double warmup_factor(const pg_sched_cfg *c, int64_t s)
{
    if (c->warmup_steps == 0)
        return 1.0;
    int64_t k = s < c->warmup_steps ? s : c->warmup_steps;
    return c->start_factor + (1.0 - c->start_factor) * (double)k / (double)c->warmup_steps;
}

/* CosineAnnealingLR's closed form relative to base_lr, with eta_min = min * base_lr:
 * min + (1 - min) * (1 + cos(pi * t / T_max)) / 2, t = s - W, T_max = T - W */
static double cosine_factor(const pg_sched_cfg *c, int64_t s)
{
    if (s < c->warmup_steps)
        return warmup_factor(c, s);
    if (s >= c->total_steps)
        return c->min_factor;
    double t = (double)(s - c->warmup_steps), tmax = (double)(c->total_steps - c->warmup_steps);
    return c->min_factor + (1.0 - c->min_factor) * (1.0 + cos(PI * t / tmax)) / 2.0;
}

double pg_sched_factor(pg_sched_cfg cfg, int64_t step)
{
    if (step < 0)
        step = 0;
    switch (cfg.kind) {
    case PG_SCHED_CONSTANT:
        return 1.0;
    case PG_SCHED_LINEAR_WARMUP:
        return warmup_factor(&cfg, step);
    case PG_SCHED_WARMUP_COSINE:
        return cosine_factor(&cfg, step);
    case PG_SCHED_STEP:
        /* StepLR's closed form: gamma ** (s // step_size) */
        return pow(cfg.gamma, (double)(step / cfg.step_size));
    }
    return NAN;
}

static void apply(pg_schedule *s)
{
    double f = pg_sched_factor(s->cfg, *pg_i64(s->step));
    for (int j = 0; j < s->optim->n_groups; j++)
        s->optim->groups[j].h.lr = s->optim->groups[j].base_lr * f;
}

pg_schedule *pg_schedule_new(pg_optim *o, pg_sched_cfg cfg)
{
    const char *fn = "pg_schedule_new";
    if (!o) {
        pg_set_error("%s: optimizer is NULL", fn);
        return NULL;
    }
    if (!check_cfg(fn, &cfg))
        return NULL;
    pg_schedule *s = calloc(1, sizeof *s);
    pg_tensor *step = pg_tensor_full(NULL, PG_I64, 0, NULL, 0.0);
    if (!s || !step) {
        free(s);
        pg_tensor_free(step);
        pg_set_error("%s: out of memory", fn);
        return NULL;
    }
    s->cfg = cfg;
    s->optim = o;
    s->step = step;
    apply(s);
    return s;
}

void pg_schedule_free(pg_schedule *s)
{
    if (!s)
        return;
    pg_tensor_free(s->step);
    free(s);
}

int pg_schedule_set_step(pg_schedule *s, int64_t step)
{
    if (!s || step < 0) {
        pg_set_error("pg_schedule_set_step: %s", s ? "step must be >= 0" : "schedule is NULL");
        return -1;
    }
    *pg_i64(s->step) = step;
    apply(s);
    return 0;
}

int pg_schedule_step(pg_schedule *s)
{
    if (!s) {
        pg_set_error("pg_schedule_step: schedule is NULL");
        return -1;
    }
    return pg_schedule_set_step(s, *pg_i64(s->step) + 1);
}

int64_t pg_schedule_get_step(const pg_schedule *s)
{
    if (!s) {
        pg_set_error("pg_schedule_get_step: schedule is NULL");
        return -1;
    }
    return *pg_i64(s->step);
}
