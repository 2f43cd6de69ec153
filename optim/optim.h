/* posgrad optim: SGD, Adam and AdamW over parameter groups, gradient
 * clipping, learning-rate schedules, and optimizer state for checkpoints.
 *
 * Updates follow torch.optim of PyTorch 1.13 (the single-tensor code paths of
 * sgd.py, adam.py, adamw.py) formula for formula and in the same order of
 * floating-point operations, so float64 runs agree with PyTorch within a few
 * ulps (docs/optim.md lists the formulas and the measured tolerances).
 *
 * Typical use:
 *
 *   pg_tensor_list ps = pg_module_parameters(&model->base);
 *   pg_optim_hparams h = pg_adamw_hparams(3e-4);            // torch defaults + lr
 *   pg_optim *opt = pg_optim_new(PG_ADAMW, &h);
 *   pg_optim_add_decay_groups(opt, &ps, pg_no_decay_default, NULL, 3e-4, 0.1);
 *   pg_schedule *sched = pg_schedule_new(opt, pg_sched_warmup_cosine(100, 0.0, 5000, 0.1));
 *   for (...) {
 *       ... forward, pg_backward ...
 *       pg_clip_grad_norm(ps.tensors, ps.n, 1.0);
 *       pg_optim_step(opt);
 *       pg_schedule_step(sched);
 *       pg_optim_zero_grad(opt);
 *   }
 *   pg_schedule_free(sched); pg_optim_free(opt); pg_tensor_list_free(&ps);
 *
 * Memory: the optimizer borrows the parameters (they must outlive it) and
 * owns its state, allocated once when a group is added; pg_optim_step
 * allocates nothing. Errors: functions return NULL or -1 and record a
 * message naming the function (pg_last_error); they never abort or print.
 * The two checks for non-finite gradients (opt->check_finite and
 * pg_clip_grad_norm_ex's error_if_nonfinite) return PG_NONFINITE instead.
 *
 * Non-finite gradients: by default a NaN or inf gradient flows into the
 * update as in torch (the parameters become NaN). To refuse such a step:
 *
 *   opt->check_finite = true;
 *   pg_clip_opts co = {.max_norm = 1.0, .error_if_nonfinite = true};
 *   double norm;
 *   int rc = pg_clip_grad_norm_ex(ps.tensors, ps.n, &co, &norm);
 *   if (rc == 0)
 *       rc = pg_optim_step(opt);
 *   if (rc == PG_NONFINITE)  // grads, parameters and state untouched; message in pg_last_error()
 *       ... skip this batch, lower the lr, or stop ... */
#ifndef PG_OPTIM_H
#define PG_OPTIM_H

#include "../tensor/tensor_list.h"

typedef enum { PG_SGD = 0, PG_ADAM = 1, PG_ADAMW = 2 } pg_optim_kind;

/* Returned (instead of -1, which means bad arguments) by pg_optim_step with
 * check_finite on and by pg_clip_grad_norm_ex with error_if_nonfinite when a
 * gradient holds NaN or inf: nothing was changed. */
enum { PG_NONFINITE = -2 };

/* ---- hyperparameters --------------------------------------------------------------
 * One struct for all three optimizers; each reads only its own fields.
 * A parameter group carries a full copy, so any field may differ per group. */
typedef struct pg_optim_hparams {
    double lr;           /* >= 0; the lr of the next step (schedules overwrite it) */
    double weight_decay; /* >= 0; SGD and Adam: g += wd * p; AdamW: p *= 1 - lr * wd */
    /* SGD */
    double momentum;     /* >= 0; 0 is plain SGD (no momentum buffer) */
    double dampening;    /* any; buf = momentum * buf + (1 - dampening) * g */
    bool nesterov;       /* needs momentum > 0 and dampening == 0 (as torch) */
    /* Adam and AdamW */
    double beta1, beta2; /* each in [0, 1) */
    double eps;          /* >= 0 */
    bool amsgrad;        /* normalise by the running max of exp_avg_sq */
} pg_optim_hparams;

/* torch's defaults with the given lr:
 *   SGD:   momentum 0, dampening 0, weight_decay 0, nesterov off
 *   Adam:  betas (0.9, 0.999), eps 1e-8, weight_decay 0,    amsgrad off
 *   AdamW: betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2, amsgrad off */
pg_optim_hparams pg_sgd_hparams(double lr);
pg_optim_hparams pg_adam_hparams(double lr);
pg_optim_hparams pg_adamw_hparams(double lr);

/* ---- the optimizer ------------------------------------------------------------------ */

/* State of one parameter, as torch's optimizer.state[p]. Buffers have the
 * parameter's shape and dtype and start at zero; NULL where the group's
 * settings do not use them. */
typedef struct pg_param_state {
    pg_tensor *param;          /* borrowed */
    pg_tensor *step;           /* I64, 0-dim (*pg_i64(step)): updates applied to this
                                * parameter (steps where its grad was non-NULL), torch's
                                * state['step'] */
    pg_tensor *momentum_buffer; /* SGD with momentum > 0 */
    pg_tensor *exp_avg;        /* Adam, AdamW: first moment m */
    pg_tensor *exp_avg_sq;     /* Adam, AdamW: second moment v */
    pg_tensor *max_exp_avg_sq; /* amsgrad: running max of v */
    char *name;                /* the parameter's name (owned copy) when it was added with one
                                * (pg_optim_add_group_named, pg_optim_add_decay_groups), else
                                * NULL; only used in messages */
} pg_param_state;

typedef struct pg_param_group {
    pg_optim_hparams h; /* this group's settings; h.lr is what the next step uses */
    double base_lr;     /* h.lr when the group was added: schedules set h.lr = base_lr * factor */
    int first, n;       /* its parameters are state[first .. first + n) */
} pg_param_group;

typedef struct pg_optim {
    pg_optim_kind kind;
    pg_optim_hparams defaults; /* for groups added without their own hparams */
    int n_groups, cap_groups;
    pg_param_group *groups;
    int n_params, cap_params;
    pg_param_state *state;     /* every parameter, in group order: index i is "optim.<i>" */
    /* Off by default (as torch). On: pg_optim_step first scans every grad and,
     * if one holds NaN or inf, returns PG_NONFINITE with a message naming the
     * parameter (index, name, shape) and the first such element, and changes
     * nothing (parameters, moments, step counts). The scan reads each grad
     * once (vectorised, large grads on the thread pool): about 1% of an Adam
     * step, which reads and writes four buffers (docs/optim.md). */
    bool check_finite;
} pg_optim;

/* A new optimizer without parameters. defaults: validated as for a group
 * (NULL: torch's defaults for kind with lr 1e-3). NULL on error. */
pg_optim *pg_optim_new(pg_optim_kind kind, const pg_optim_hparams *defaults);
/* Frees the state (not the parameters). NULL: no-op. */
void pg_optim_free(pg_optim *o);

/* Adds a group of n parameters (f32 or f64 heap tensors, each at most once
 * in the whole optimizer) with hyperparameters h (NULL: o->defaults) and
 * allocates their state. n == 0 adds an empty group. Returns the group's
 * index, or -1 with o unchanged. */
int pg_optim_add_group(pg_optim *o, pg_tensor *const *params, int n, const pg_optim_hparams *h);
/* The same with o->defaults except lr and weight_decay. */
int pg_optim_add_group_lr(pg_optim *o, pg_tensor *const *params, int n, double lr, double weight_decay);
/* pg_optim_add_group over a named list (e.g. pg_module_parameters): the names
 * are kept (state[i].name) for messages. */
int pg_optim_add_group_named(pg_optim *o, const pg_tensor_list *params, const pg_optim_hparams *h);

/* One update of every parameter whose grad is non-NULL (others are skipped
 * and their step is not counted, as torch). Every grad is checked (same
 * dtype and numel as its parameter; finite, if o->check_finite) before
 * anything changes. 0, -1 (bad arguments) or PG_NONFINITE. */
int pg_optim_step(pg_optim *o);
/* Zeroes every parameter's grad (keeps the buffers; torch's zero_grad(set_to_none=False)). */
void pg_optim_zero_grad(pg_optim *o);

/* ---- decay / no-decay split ----------------------------------------------------------
 * A predicate on a parameter's full name and tensor; true means "no weight
 * decay for this one". */
typedef bool (*pg_param_pred)(const char *name, const pg_tensor *t, void *ctx);
/* The default groups (docs/optim.md has the table, parameter by parameter).
 * No decay for
 *   - a tensor its module marked (t->no_decay: pg_module_new_param_ex with
 *     PG_PARAM_NO_DECAY, or pg_module_param_set_no_decay; XL's u and v);
 *   - a tensor of fewer than 2 dims: biases, norm gains, scalars;
 *   - a parameter whose own name (the last dotted component) is "bias" or
 *     "div" (a learned positional divisor), whatever its shape.
 * Everything else decays: weight matrices and embedding tables, including
 * T5's bucket table and the learned position tables (nanoGPT's rule: every
 * tensor of 2 or more dims). ctx unused. */
bool pg_no_decay_default(const char *name, const pg_tensor *t, void *ctx);
/* Splits params (e.g. pg_module_parameters) into *decay and *no_decay, in
 * order, names copied, tensors borrowed (free both with pg_tensor_list_free).
 * Both lists must start empty. 0 or -1 (both left empty). */
int pg_split_decay(const pg_tensor_list *params, pg_param_pred no_decay, void *ctx, pg_tensor_list *decay,
                   pg_tensor_list *no_decay_out);
/* Adds two groups with o->defaults and this lr: the decaying parameters with
 * weight_decay, then the others with 0 (either may be empty). Returns the
 * index of the first group, or -1 with o unchanged. */
int pg_optim_add_decay_groups(pg_optim *o, const pg_tensor_list *params, pg_param_pred no_decay, void *ctx,
                              double lr, double weight_decay);

/* ---- gradient clipping (optim/clip.c) ------------------------------------------------
 * As torch.nn.utils.clip_grad_norm_: over the params whose grad is non-NULL,
 *   per-tensor norms n_t = ||g_t||_p, total = ||(n_1, ..., n_k)||_p
 *   (p = INFINITY: max |g|), coef = max_norm / (total + 1e-6), clamped to <= 1,
 *   and every grad is multiplied by coef (a coef of 1 leaves them unchanged).
 * Norms are accumulated in double for f32 grads too. Returns the total norm
 * before clipping (0 when no grad), or -1 on bad arguments (params NULL
 * with n > 0, a NULL entry, max_norm < 0 or NaN, p <= 0 or NaN). A norm is
 * >= 0 or NaN, so `total < 0` (false for NaN) tells an error from a norm; or
 * use pg_clip_grad_norm_ex, which returns a status and the norm apart.
 * A non-finite total passes through as in torch: NaN makes coef NaN and every
 * grad NaN; inf makes coef 0, so the grads become 0 and their inf elements NaN. */
double pg_clip_grad_norm(pg_tensor *const *params, int n, double max_norm);
double pg_clip_grad_norm_p(pg_tensor *const *params, int n, double max_norm, double p);
/* The total p-norm of the grads without changing them (-1 on bad arguments). */
double pg_grad_norm(pg_tensor *const *params, int n, double p);

/* Options of pg_clip_grad_norm_ex; a zeroed struct with max_norm set is
 * torch's clip_grad_norm_(params, max_norm). */
typedef struct pg_clip_opts {
    double max_norm;         /* >= 0 */
    double norm_type;        /* p > 0 or INFINITY; 0 means 2 (the default) */
    bool error_if_nonfinite; /* torch's error_if_nonfinite=True: a total norm of NaN
                              * or inf is an error and the grads stay as they are */
} pg_clip_opts;
/* pg_clip_grad_norm_p with options, status and norm apart. *total_norm (if
 * total_norm is non-NULL) receives the total norm before clipping, also when
 * it is not finite; it is left alone on bad arguments. Returns
 *   0             clipped (or nothing to clip);
 *   -1            bad arguments (opts NULL, or as pg_clip_grad_norm_p): grads untouched;
 *   PG_NONFINITE  error_if_nonfinite and the total is NaN or inf: grads untouched,
 *                 and pg_last_error() names the first parameter (index, shape)
 *                 and element holding NaN or inf (or says that the elements are
 *                 finite and their norm overflowed). */
int pg_clip_grad_norm_ex(pg_tensor *const *params, int n, const pg_clip_opts *opts, double *total_norm);

/* The first NaN or +-inf gradient element. */
typedef struct pg_nonfinite {
    int param;     /* index in the array searched; -1 when every element is finite */
    int64_t index; /* flat index of the element in that parameter's grad */
    double value;  /* the element: NaN, INFINITY or -INFINITY */
} pg_nonfinite;
/* Scans the grads of params in order (NULL grads skipped; f32 or f64) for the
 * first element that is NaN or infinite. 1 (found, *where set), 0 (all finite,
 * where->param = -1) or -1 (bad arguments; where NULL is one). Reads each grad
 * once with a vectorised test of the exponent bits; large grads are split
 * over the thread pool. */
int pg_grad_find_nonfinite(pg_tensor *const *params, int n, pg_nonfinite *where);
/* As torch.nn.utils.clip_grad_value_: clamps every grad element to
 * [-clip_value, clip_value] (clip_value >= 0). 0 or -1. */
int pg_clip_grad_value(pg_tensor *const *params, int n, double clip_value);

/* ---- learning-rate schedules (optim/schedule.c) ---------------------------------------
 * A schedule sets every group's lr = base_lr * factor(step), where step
 * counts pg_schedule_step calls (torch's last_epoch). Call pg_schedule_step
 * after pg_optim_step, as torch. Factors, with W = warmup_steps,
 * T = total_steps, s = step:
 *
 *   CONSTANT       1
 *   LINEAR_WARMUP  start + (1 - start) * min(s, W) / W        (1 when W == 0)
 *                  = LinearLR(start_factor=start, end_factor=1, total_iters=W)
 *   WARMUP_COSINE  s <  W:       start + (1 - start) * s / W
 *                  W <= s <= T:  min + (1 - min) * (1 + cos(pi * (s - W) / (T - W))) / 2
 *                  s >  T:       min
 *                  = SequentialLR([LinearLR(start, 1, W), CosineAnnealingLR(T_max=T-W,
 *                    eta_min=min*base_lr)], milestones=[W]) for s <= T
 *                    (torch's cosine then rises again; this one stays at min)
 *   STEP           gamma ^ floor(s / step_size)  = StepLR(step_size, gamma) */
typedef enum {
    PG_SCHED_CONSTANT = 0,
    PG_SCHED_LINEAR_WARMUP = 1,
    PG_SCHED_WARMUP_COSINE = 2,
    PG_SCHED_STEP = 3
} pg_sched_kind;

typedef struct pg_sched_cfg {
    pg_sched_kind kind;
    int64_t warmup_steps; /* W >= 0 */
    double start_factor;  /* factor at step 0 of the warmup, in [0, 1] */
    int64_t total_steps;  /* T > W (cosine) */
    double min_factor;    /* final factor of the cosine, in [0, 1] */
    int64_t step_size;    /* >= 1 (STEP) */
    double gamma;         /* >= 0 (STEP) */
} pg_sched_cfg;

pg_sched_cfg pg_sched_constant(void);
pg_sched_cfg pg_sched_linear_warmup(int64_t warmup_steps, double start_factor);
pg_sched_cfg pg_sched_warmup_cosine(int64_t warmup_steps, double start_factor, int64_t total_steps,
                                    double min_factor);
pg_sched_cfg pg_sched_step(int64_t step_size, double gamma);

typedef struct pg_schedule {
    pg_sched_cfg cfg;
    pg_optim *optim; /* borrowed */
    pg_tensor *step; /* I64, 0-dim: pg_schedule_step calls so far */
} pg_schedule;

/* Validates cfg, starts at step 0 and sets every group's lr to base_lr *
 * factor(0). Add the groups first: a group added later keeps its lr until
 * the next pg_schedule_step. NULL on error. */
pg_schedule *pg_schedule_new(pg_optim *o, pg_sched_cfg cfg);
void pg_schedule_free(pg_schedule *s);
/* step += 1, then every group's lr = base_lr * factor(step). 0 or -1. */
int pg_schedule_step(pg_schedule *s);
/* Jumps to a step (>= 0) and applies its factor. 0 or -1. */
int pg_schedule_set_step(pg_schedule *s, int64_t step);
int64_t pg_schedule_get_step(const pg_schedule *s); /* -1 for NULL */
/* factor(step) of a config (no validation; NaN for an unknown kind). */
double pg_sched_factor(pg_sched_cfg cfg, int64_t step);

/* ---- state for checkpoints (optim/state.c) ---------------------------------------------
 * The full state as named tensors, i = the parameter's index in o->state
 * (group order, as torch's state_dict numbers them):
 *   optim.<i>.step             I64, 0-dim   every parameter
 *   optim.<i>.momentum_buffer  param's shape and dtype   SGD groups with momentum > 0
 *   optim.<i>.exp_avg          "             Adam, AdamW
 *   optim.<i>.exp_avg_sq       "             Adam, AdamW
 *   optim.<i>.max_exp_avg_sq   "             Adam, AdamW groups with amsgrad
 *   sched.step                 I64, 0-dim   when a schedule is given
 * Hyperparameters are configuration, not state: rebuild the optimizer with
 * the same groups and settings, then import. */

/* Appends the entries above to *out (which may already hold e.g. the model's
 * parameters). The tensors are the optimizer's own buffers, borrowed: valid
 * until the optimizer (schedule) is freed, current until its next step; free
 * the list with pg_tensor_list_free. s may be NULL. 0, or -1 with *out as it was. */
int pg_optim_state_export(const pg_optim *o, const pg_schedule *s, pg_tensor_list *out);
/* Copies a state (e.g. loaded with pg_safetensors_load) into o and s (s may
 * be NULL: then sched.* entries are ignored). Every entry listed above must
 * be present with the buffer's exact shape and dtype (steps: I64 0-dim,
 * >= 0), and no other "optim." entry may be; other names are ignored. All is
 * checked before anything is written: on error o and s are untouched. On
 * success the schedule's factor for the imported step is applied. 0 or -1. */
int pg_optim_state_import(pg_optim *o, pg_schedule *s, const pg_tensor_list *state);

#endif
