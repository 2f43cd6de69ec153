/* Training checkpoints: model + optimizer + schedule + RNG in one file. */
#include "checkpoint.h"

#include "../nn/safetensors.h"

#include <stdio.h>
#include <string.h>

#define RNG_NAME "rng.state"

static bool is_training_state(const char *name)
{
    return !strncmp(name, "optim.", 6) || !strncmp(name, "sched.", 6) || !strcmp(name, RNG_NAME);
}

int pg_checkpoint_save(const char *path, const pg_module *model, const pg_optim *o, const pg_schedule *s,
                       const pg_rng *rng)
{
    if (!path || !model) {
        pg_set_error("pg_checkpoint_save: %s is NULL", path ? "model" : "path");
        return -1;
    }
    pg_tensor_list l = pg_module_parameters(model);
    pg_tensor *rs = NULL;
    int rc = -1;
    if (o && pg_optim_state_export(o, s, &l) != 0)
        goto done;
    if (rng) {
        int64_t bits[2];
        memcpy(&bits[0], &rng->seed, sizeof bits[0]);
        memcpy(&bits[1], &rng->counter, sizeof bits[1]);
        rs = pg_tensor_from_array(NULL, PG_I64, PG_SHAPE(2), bits);
        if (!rs || pg_tensor_list_push(&l, RNG_NAME, rs) != 0)
            goto done;
    }
    rc = pg_safetensors_save(path, &l, 1, (const char *[]){"format"}, (const char *[]){"posgrad-checkpoint-1"});
done:
    pg_tensor_list_free(&l);
    pg_tensor_free(rs);
    return rc;
}

/* Deep copy of the optimizer's current state, to put back if a later part of
 * the load fails. */
static int snapshot(const pg_optim *o, const pg_schedule *s, pg_tensor_list *copy)
{
    pg_tensor_list live = {0, 0, NULL, NULL};
    int rc = pg_optim_state_export(o, s, &live);
    for (int i = 0; rc == 0 && i < live.n; i++) {
        pg_tensor *t = pg_tensor_copy(NULL, live.tensors[i]);
        if (!t || pg_tensor_list_push(copy, live.names[i], t) != 0) {
            pg_tensor_free(t);
            rc = -1;
        }
    }
    pg_tensor_list_free(&live);
    return rc;
}

static int check_rng(const char *path, const pg_tensor_list *file, pg_rng *out)
{
    int i = pg_tensor_list_find(file, RNG_NAME);
    const pg_tensor *t = i >= 0 ? file->tensors[i] : NULL;
    if (!t || t->dtype != PG_I64 || t->ndim != 1 || t->shape[0] != 2) {
        pg_set_error("pg_checkpoint_load: %s: no valid \"%s\" (I64 [2])", path, RNG_NAME);
        return -1;
    }
    memcpy(&out->seed, &pg_i64(t)[0], sizeof out->seed);
    memcpy(&out->counter, &pg_i64(t)[1], sizeof out->counter);
    return 0;
}

/* The file's entries that belong to the model (borrowed). */
static int model_entries(const pg_tensor_list *file, pg_tensor_list *out)
{
    for (int i = 0; i < file->n; i++)
        if (!is_training_state(file->names[i]) && pg_tensor_list_push(out, file->names[i], file->tensors[i]) != 0)
            return -1;
    return 0;
}

int pg_checkpoint_load(const char *path, pg_module *model, pg_optim *o, pg_schedule *s, pg_rng *rng)
{
    if (!path || !model) {
        pg_set_error("pg_checkpoint_load: %s is NULL", path ? "model" : "path");
        return -1;
    }
    pg_tensor_list file = {0, 0, NULL, NULL}, params = {0, 0, NULL, NULL}, before = {0, 0, NULL, NULL};
    pg_rng r = {0, 0};
    int rc = -1;
    if (pg_safetensors_load(path, &file) != 0 || (rng && check_rng(path, &file, &r) != 0) ||
        model_entries(&file, &params) != 0)
        goto done;
    /* optimizer first (it validates before writing), then the model; if the
     * model fails, the optimizer gets its old state back */
    if (o && (snapshot(o, s, &before) != 0 || pg_optim_state_import(o, s, &file) != 0))
        goto done;
    if (pg_module_load_state(model, &params, true, NULL) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "pg_checkpoint_load: %s: %s", path, pg_last_error());
        if (o)
            pg_optim_state_import(o, s, &before);
        pg_set_error("%s", msg);
        goto done;
    }
    if (rng)
        *rng = r;
    rc = 0;
done:
    pg_tensor_list_free_all(&file);
    pg_tensor_list_free(&params);
    pg_tensor_list_free_all(&before);
    return rc;
}
