/* Optimizer and schedule state as named tensors, for checkpoints.
 * Names and rules are in optim.h ("state for checkpoints"). */
#include "optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_FIELDS = 5 };
static const char *const FIELDS[N_FIELDS] = {"step", "momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
static const char SCHED_STEP[] = "sched.step";

/* Field f of a parameter's state (NULL when its settings do not use it). */
static pg_tensor *field(const pg_param_state *st, int f)
{
    pg_tensor *const t[N_FIELDS] = {st->step, st->momentum_buffer, st->exp_avg, st->exp_avg_sq,
                                    st->max_exp_avg_sq};
    return t[f];
}

static void entry_name(char *buf, size_t size, int i, int f)
{
    snprintf(buf, size, "optim.%d.%s", i, FIELDS[f]);
}

/* Drops the entries appended after the first n. */
static void truncate_list(pg_tensor_list *l, int n)
{
    while (l->n > n)
        free(l->names[--l->n]);
}

int pg_optim_state_export(const pg_optim *o, const pg_schedule *s, pg_tensor_list *out)
{
    const char *fn = "pg_optim_state_export";
    if (!o || !out) {
        pg_set_error("%s: %s is NULL", fn, o ? "the output list" : "optimizer");
        return -1;
    }
    int n0 = out->n;
    char name[64];
    for (int i = 0; i < o->n_params; i++) {
        for (int f = 0; f < N_FIELDS; f++) {
            pg_tensor *t = field(&o->state[i], f);
            if (!t)
                continue;
            entry_name(name, sizeof name, i, f);
            if (pg_tensor_list_push(out, name, t) != 0)
                goto oom;
        }
    }
    if (s && pg_tensor_list_push(out, SCHED_STEP, s->step) != 0)
        goto oom;
    return 0;
oom:
    truncate_list(out, n0);
    pg_set_error("%s: out of memory", fn);
    return -1;
}

/* ---- import ------------------------------------------------------------------------------- */

/* An I64 0-dim tensor holding a value >= 0. */
static bool valid_step(const pg_tensor *t)
{
    return t && t->dtype == PG_I64 && t->ndim == 0 && *pg_i64(t) >= 0;
}

/* state[name] matches dst (same dtype and shape; a valid step for steps). */
static bool check_entry(const char *fn, const pg_tensor_list *state, const char *name, const pg_tensor *dst,
                        bool is_step)
{
    char a[128], b[128];
    int k = pg_tensor_list_find(state, name);
    if (k < 0) {
        pg_set_error("%s: missing entry %s", fn, name);
        return false;
    }
    const pg_tensor *src = state->tensors[k];
    if (!src) {
        pg_set_error("%s: entry %s is NULL", fn, name);
        return false;
    }
    if (src->dtype != dst->dtype || !pg_same_shape(src, dst)) {
        pg_set_error("%s: entry %s is %s, expected %s", fn, name, pg_shape_str(a, sizeof a, src),
                     pg_shape_str(b, sizeof b, dst));
        return false;
    }
    if (is_step && !valid_step(src)) {
        pg_set_error("%s: entry %s holds %lld, expected a step >= 0", fn, name, (long long)*pg_i64(src));
        return false;
    }
    return true;
}

/* Whether name is "optim.<i>.<field>" for a buffer o has. */
static bool is_expected(const pg_optim *o, const char *name)
{
    const char *p = name + strlen("optim.");
    if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '.'))
        return false;
    long i = 0;
    while (*p >= '0' && *p <= '9' && i <= o->n_params)
        i = 10 * i + (*p++ - '0');
    if (*p++ != '.' || i >= o->n_params)
        return false;
    for (int f = 0; f < N_FIELDS; f++)
        if (!strcmp(p, FIELDS[f]))
            return field(&o->state[i], f) != NULL;
    return false;
}

/* Every entry o expects is there and matches; no other "optim." entry is. */
static bool check_state(const char *fn, const pg_optim *o, const pg_tensor_list *state)
{
    char name[64];
    int expected = 0, seen = 0;
    for (int i = 0; i < o->n_params; i++) {
        for (int f = 0; f < N_FIELDS; f++) {
            const pg_tensor *dst = field(&o->state[i], f);
            if (!dst)
                continue;
            entry_name(name, sizeof name, i, f);
            if (!check_entry(fn, state, name, dst, f == 0))
                return false;
            expected++;
        }
    }
    for (int k = 0; k < state->n; k++) {
        const char *nm = state->names[k];
        if (strncmp(nm, "optim.", 6) != 0)
            continue;
        if (!is_expected(o, nm)) {
            pg_set_error("%s: unexpected entry %s (the optimizer has %d parameters, %s)", fn, nm, o->n_params,
                         o->kind == PG_SGD ? "SGD" : o->kind == PG_ADAM ? "Adam" : "AdamW");
            return false;
        }
        seen++;
    }
    if (seen != expected) {
        pg_set_error("%s: %d optim entries for %d buffers: some name appears twice", fn, seen, expected);
        return false;
    }
    return true;
}

int pg_optim_state_import(pg_optim *o, pg_schedule *s, const pg_tensor_list *state)
{
    const char *fn = "pg_optim_state_import";
    if (!o || !state) {
        pg_set_error("%s: %s is NULL", fn, o ? "state" : "optimizer");
        return -1;
    }
    if (s && s->optim != o) {
        pg_set_error("%s: the schedule belongs to another optimizer", fn);
        return -1;
    }
    if (!check_state(fn, o, state) || (s && !check_entry(fn, state, SCHED_STEP, s->step, true)))
        return -1;
    char name[64];
    for (int i = 0; i < o->n_params; i++) {
        for (int f = 0; f < N_FIELDS; f++) {
            pg_tensor *dst = field(&o->state[i], f);
            if (!dst)
                continue;
            entry_name(name, sizeof name, i, f);
            const pg_tensor *src = state->tensors[pg_tensor_list_find(state, name)];
            memcpy(dst->data, src->data, (size_t)dst->numel * pg_dtype_size(dst->dtype));
        }
    }
    if (s)
        pg_schedule_set_step(s, *pg_i64(state->tensors[pg_tensor_list_find(state, SCHED_STEP)]));
    return 0;
}
