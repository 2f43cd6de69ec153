/* Training checkpoints: everything a run needs to continue bit-identically.
 *
 * One safetensors file (written atomically, see formats/safetensors.h) holding
 *   <param names>        the model's parameters, as pg_module_save writes them;
 *   optim.<i>.*          the optimizer's per-parameter state (optim/optim.h);
 *   sched.step           the schedule's step;
 *   rng.state            I64 [2]: the generator's seed and counter (bit patterns);
 * and the metadata {"format": "posgrad-checkpoint-1"} followed by the caller's
 * own string pairs, if any (pg_checkpoint_save_meta: e.g. the settings that
 * shaped the model, so that a program can check them before loading). A run
 * of N steps and a run of N/2 steps + save + load + N/2 steps end with
 * identical parameters (tests/test_checkpoint.c). */
#ifndef PG_OPTIM_CHECKPOINT_H
#define PG_OPTIM_CHECKPOINT_H

#include "../nn/module.h" /* a checkpoint holds a model */
#include "optim.h"

#define PG_CHECKPOINT_FORMAT "posgrad-checkpoint-1"

/* o, s and rng may be NULL (not saved). 0 or -1 with pg_last_error. */
int pg_checkpoint_save(const char *path, const pg_module *model, const pg_optim *o, const pg_schedule *s,
                       const pg_rng *rng);
/* pg_checkpoint_save plus n_meta metadata pairs (UTF-8 strings; keys unique,
 * non-empty and not "format", which the file's kind takes). keys and values
 * may be NULL when n_meta is 0. Nothing is written on bad arguments. 0 or -1. */
int pg_checkpoint_save_meta(const char *path, const pg_module *model, const pg_optim *o, const pg_schedule *s,
                            const pg_rng *rng, int n_meta, const char *const *keys, const char *const *values);
/* Restores what is non-NULL among model, o, s, rng (each must be in the file;
 * the model strictly: every parameter, no unknown names). A safetensors file
 * without the checkpoint format (a state dict from pg_module_save, say) is
 * refused as such. On any failure nothing is changed: the file is fully
 * validated first. 0 or -1. */
int pg_checkpoint_load(const char *path, pg_module *model, pg_optim *o, pg_schedule *s, pg_rng *rng);

/* What a safetensors file holds, read without touching any model or optimizer
 * (the file is read and validated whole, as by pg_checkpoint_load). */
typedef struct pg_checkpoint_info {
    bool is_checkpoint;       /* metadata "format" is PG_CHECKPOINT_FORMAT */
    bool has_optim;           /* optim.* entries */
    bool has_rng;             /* a rng.state entry */
    int64_t step;             /* sched.step (I64 0-dim), -1 when absent */
    int n_tensors;            /* every tensor */
    int n_model;              /* the tensors that are not training state (the parameters) */
    int n_meta;               /* metadata pairs other than "format", in file order */
    char **keys, **values;    /* n_meta malloc'd strings each (NULL when none) */
} pg_checkpoint_info;
/* Fills *info for any valid safetensors file: a checkpoint or not (look at
 * is_checkpoint and has_optim). 0, or -1 with pg_last_error for a missing,
 * unreadable or invalid file (*info is then empty). Free with
 * pg_checkpoint_info_free. */
int pg_checkpoint_info_read(const char *path, pg_checkpoint_info *info);
void pg_checkpoint_info_free(pg_checkpoint_info *info);
/* The value of key among info's metadata pairs, NULL when absent. */
const char *pg_checkpoint_info_get(const pg_checkpoint_info *info, const char *key);

#endif
