/* Training checkpoints: model + optimizer + schedule + RNG in one file. */
#include "checkpoint.h"

#include "../nn/state_dict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RNG_NAME "rng.state"

static bool is_training_state(const char *name)
{
    return !strncmp(name, "optim.", 6) || !strncmp(name, "sched.", 6) || !strcmp(name, RNG_NAME);
}

static void free_strings(int n, char **s)
{
    for (int i = 0; s && i < n; i++)
        free(s[i]);
    free(s);
}

int pg_checkpoint_save(const char *path, const pg_module *model, const pg_optim *o, const pg_schedule *s,
                       const pg_rng *rng)
{
    return pg_checkpoint_save_meta(path, model, o, s, rng, 0, NULL, NULL);
}

int pg_checkpoint_save_meta(const char *path, const pg_module *model, const pg_optim *o, const pg_schedule *s,
                            const pg_rng *rng, int n_meta, const char *const *keys, const char *const *values)
{
    const char *fn = "pg_checkpoint_save_meta";
    if (!path || !model) {
        pg_set_error("%s: %s is NULL", n_meta ? fn : "pg_checkpoint_save", path ? "model" : "path");
        return -1;
    }
    if (n_meta < 0 || (n_meta > 0 && (!keys || !values))) {
        pg_set_error("%s: %s: n_meta is %d with keys %s and values %s", fn, path, n_meta, keys ? "set" : "NULL",
                     values ? "set" : "NULL");
        return -1;
    }
    for (int i = 0; i < n_meta; i++)
        if (!keys[i] || !values[i] || !keys[i][0] || !strcmp(keys[i], "format")) {
            pg_set_error("%s: %s: metadata pair %d: %s", fn, path, i,
                         !keys[i] || !values[i] ? "key or value is NULL"
                         : !keys[i][0]          ? "empty key"
                                                : "\"format\" is reserved for the file's kind");
            return -1;
        }
    const char **mk = malloc(((size_t)n_meta + 1) * sizeof *mk), **mv = malloc(((size_t)n_meta + 1) * sizeof *mv);
    if (!mk || !mv) {
        free(mk);
        free(mv);
        pg_set_error("%s: out of memory", fn);
        return -1;
    }
    mk[0] = "format";
    mv[0] = PG_CHECKPOINT_FORMAT;
    for (int i = 0; i < n_meta; i++) {
        mk[i + 1] = keys[i];
        mv[i + 1] = values[i];
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
    rc = pg_safetensors_save(path, &l, n_meta + 1, mk, mv);
done:
    pg_tensor_list_free(&l);
    pg_tensor_free(rs);
    free(mk);
    free(mv);
    return rc;
}

static bool is_checkpoint(int n_meta, char **keys, char **values)
{
    for (int i = 0; i < n_meta; i++)
        if (!strcmp(keys[i], "format"))
            return !strcmp(values[i], PG_CHECKPOINT_FORMAT);
    return false;
}

static bool has_training_state(const pg_tensor_list *file)
{
    for (int i = 0; i < file->n; i++)
        if (is_training_state(file->names[i]))
            return true;
    return false;
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
    int rc = -1, n_meta = 0;
    char **keys = NULL, **values = NULL;
    if (pg_safetensors_load_meta(path, &file, &n_meta, &keys, &values) != 0)
        goto done;
    if (!is_checkpoint(n_meta, keys, values)) {
        pg_set_error("pg_checkpoint_load: %s is not a training checkpoint (no \"format\": \"%s\" in its metadata)%s",
                     path, PG_CHECKPOINT_FORMAT,
                     has_training_state(&file) ? ""
                                               : ": it holds no optimizer state, schedule step or generator state, "
                                                 "as a state dict from pg_module_save (pg_module_load reads those)");
        goto done;
    }
    if ((rng && check_rng(path, &file, &r) != 0) || model_entries(&file, &params) != 0)
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
    free_strings(n_meta, keys);
    free_strings(n_meta, values);
    return rc;
}

int pg_checkpoint_info_read(const char *path, pg_checkpoint_info *info)
{
    if (!info) {
        pg_set_error("pg_checkpoint_info_read: info is NULL");
        return -1;
    }
    memset(info, 0, sizeof *info);
    info->step = -1;
    if (!path) {
        pg_set_error("pg_checkpoint_info_read: path is NULL");
        return -1;
    }
    pg_tensor_list file = {0, 0, NULL, NULL};
    int n_meta = 0;
    char **keys = NULL, **values = NULL;
    if (pg_safetensors_load_meta(path, &file, &n_meta, &keys, &values) != 0)
        return -1;
    info->is_checkpoint = is_checkpoint(n_meta, keys, values);
    info->n_tensors = file.n;
    for (int i = 0; i < file.n; i++) {
        const char *name = file.names[i];
        const pg_tensor *t = file.tensors[i];
        info->has_optim = info->has_optim || !strncmp(name, "optim.", 6);
        info->has_rng = info->has_rng || !strcmp(name, RNG_NAME);
        info->n_model += !is_training_state(name);
        if (!strcmp(name, "sched.step") && t->dtype == PG_I64 && t->ndim == 0)
            info->step = pg_i64(t)[0];
    }
    pg_tensor_list_free_all(&file);
    /* the pairs other than "format", moved over */
    for (int i = 0; i < n_meta; i++)
        if (strcmp(keys[i], "format") != 0) {
            keys[info->n_meta] = keys[i];
            values[info->n_meta] = values[i];
            info->n_meta++;
        } else {
            free(keys[i]);
            free(values[i]);
        }
    if (info->n_meta > 0) {
        info->keys = keys;
        info->values = values;
    } else {
        free(keys);
        free(values);
    }
    return 0;
}

void pg_checkpoint_info_free(pg_checkpoint_info *info)
{
    if (!info)
        return;
    free_strings(info->n_meta, info->keys);
    free_strings(info->n_meta, info->values);
    info->keys = info->values = NULL;
    info->n_meta = 0;
}

const char *pg_checkpoint_info_get(const pg_checkpoint_info *info, const char *key)
{
    for (int i = 0; info && key && i < info->n_meta; i++)
        if (!strcmp(info->keys[i], key))
            return info->values[i];
    return NULL;
}
