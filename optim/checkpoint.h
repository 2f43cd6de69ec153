/* Training checkpoints: everything a run needs to continue bit-identically.
 *
 * One safetensors file (written atomically, see nn/safetensors.h) holding
 *   <param names>        the model's parameters, as pg_module_save writes them;
 *   optim.<i>.*          the optimizer's per-parameter state (optim/optim.h);
 *   sched.step           the schedule's step;
 *   rng.state            I64 [2]: the generator's seed and counter (bit patterns);
 * and the metadata {"format": "posgrad-checkpoint-1"}. A run of N steps and a
 * run of N/2 steps + save + load + N/2 steps end with identical parameters
 * (tests/test_checkpoint.c). */
#ifndef PG_OPTIM_CHECKPOINT_H
#define PG_OPTIM_CHECKPOINT_H

#include "optim.h"

/* o, s and rng may be NULL (not saved). 0 or -1 with pg_last_error. */
int pg_checkpoint_save(const char *path, const pg_module *model, const pg_optim *o, const pg_schedule *s,
                       const pg_rng *rng);
/* Restores what is non-NULL among model, o, s, rng (each must be in the file;
 * the model strictly: every parameter, no unknown names). On any failure
 * nothing is changed: the file is fully validated first. 0 or -1. */
int pg_checkpoint_load(const char *path, pg_module *model, pg_optim *o, pg_schedule *s, pg_rng *rng);

#endif
