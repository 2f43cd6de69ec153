/* SGD, Adam and AdamW over parameter groups: construction, validation, the
 * update kernels and the decay / no-decay split.
 *
 * The kernels follow torch.optim (PyTorch 1.13) single-tensor paths in the
 * same order of operations. Scalars (1 - beta1, lr / (1 - beta1^step), ...)
 * are computed in double as torch computes them in Python, then cast to the
 * parameter's dtype as torch casts a Python scalar; the elementwise work runs
 * in that dtype. The only difference left is that torch's AVX2 kernels fuse
 * some multiply-adds (a + alpha * b) that C11 rounds twice: about one ulp. */
#include "optim.h"

#include "../autograd/graph.h" /* pg_zero_grad */
#include "../tensor/threadpool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pg_optim_hparams pg_sgd_hparams(double lr)
{
    return (pg_optim_hparams){.lr = lr};
}

pg_optim_hparams pg_adam_hparams(double lr)
{
    return (pg_optim_hparams){.lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

pg_optim_hparams pg_adamw_hparams(double lr)
{
    return (pg_optim_hparams){.lr = lr, .weight_decay = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

static const char *kind_name(pg_optim_kind k)
{
    return k == PG_SGD ? "SGD" : k == PG_ADAM ? "Adam" : k == PG_ADAMW ? "AdamW" : "?";
}

/* The checks of torch's constructors (written so that NaN fails them too). */
static bool check_hparams(const char *fn, pg_optim_kind kind, const pg_optim_hparams *h)
{
    const char *k = kind_name(kind), *what = NULL, *need = NULL;
    double v = 0;
    bool sgd = kind == PG_SGD;
    if (!(h->lr >= 0))
        what = "lr", need = ">= 0", v = h->lr;
    else if (!(h->weight_decay >= 0))
        what = "weight_decay", need = ">= 0", v = h->weight_decay;
    else if (sgd && !(h->momentum >= 0))
        what = "momentum", need = ">= 0", v = h->momentum;
    else if (sgd && isnan(h->dampening))
        what = "dampening", need = "a number", v = h->dampening;
    else if (!sgd && !(h->beta1 >= 0 && h->beta1 < 1))
        what = "beta1", need = "in [0, 1)", v = h->beta1;
    else if (!sgd && !(h->beta2 >= 0 && h->beta2 < 1))
        what = "beta2", need = "in [0, 1)", v = h->beta2;
    else if (!sgd && !(h->eps >= 0))
        what = "eps", need = ">= 0", v = h->eps;
    if (what) {
        pg_set_error("%s: %s %s must be %s, got %g", fn, k, what, need, v);
        return false;
    }
    if (sgd && h->nesterov && !(h->momentum > 0 && h->dampening == 0)) {
        pg_set_error("%s: SGD nesterov needs momentum > 0 and dampening 0, got momentum %g, dampening %g", fn,
                     h->momentum, h->dampening);
        return false;
    }
    return true;
}

pg_optim *pg_optim_new(pg_optim_kind kind, const pg_optim_hparams *defaults)
{
    const char *fn = "pg_optim_new";
    if (kind != PG_SGD && kind != PG_ADAM && kind != PG_ADAMW) {
        pg_set_error("%s: unknown optimizer kind %d", fn, (int)kind);
        return NULL;
    }
    pg_optim_hparams h = defaults ? *defaults
                         : kind == PG_SGD ? pg_sgd_hparams(1e-3)
                         : kind == PG_ADAM ? pg_adam_hparams(1e-3)
                                           : pg_adamw_hparams(1e-3);
    if (!check_hparams(fn, kind, &h))
        return NULL;
    pg_optim *o = calloc(1, sizeof *o);
    if (!o) {
        pg_set_error("%s: out of memory", fn);
        return NULL;
    }
    o->kind = kind;
    o->defaults = h;
    return o;
}

static void state_free(pg_param_state *st)
{
    pg_tensor_free(st->step);
    pg_tensor_free(st->momentum_buffer);
    pg_tensor_free(st->exp_avg);
    pg_tensor_free(st->exp_avg_sq);
    pg_tensor_free(st->max_exp_avg_sq);
    free(st->name);
    memset(st, 0, sizeof *st);
}

void pg_optim_free(pg_optim *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n_params; i++)
        state_free(&o->state[i]);
    free(o->state);
    free(o->groups);
    free(o);
}

/* ---- adding groups ---------------------------------------------------------------------- */

static bool known_param(const pg_optim *o, pg_tensor *const *params, int upto, const pg_tensor *t)
{
    for (int i = 0; i < o->n_params; i++)
        if (o->state[i].param == t)
            return true;
    for (int i = 0; i < upto; i++)
        if (params[i] == t)
            return true;
    return false;
}

static bool check_params(const char *fn, const pg_optim *o, pg_tensor *const *params, int n)
{
    char s[128];
    if (n < 0 || (n > 0 && !params)) {
        pg_set_error("%s: bad parameter array (%d params, array %s)", fn, n, params ? "set" : "NULL");
        return false;
    }
    for (int i = 0; i < n; i++) {
        const pg_tensor *t = params[i];
        if (!t) {
            pg_set_error("%s: parameter %d is NULL", fn, i);
            return false;
        }
        if (!pg_dtype_is_float(t->dtype) || t->in_arena) {
            pg_set_error("%s: parameter %d is %s%s; parameters are f32 or f64 heap tensors", fn, i,
                         pg_shape_str(s, sizeof s, t), t->in_arena ? " in a graph arena" : "");
            return false;
        }
        if (known_param(o, params, i, t)) {
            pg_set_error("%s: parameter %d (%s) appears twice in the optimizer", fn, i,
                         pg_shape_str(s, sizeof s, t));
            return false;
        }
    }
    return true;
}

/* Zeroed buffer shaped like p (NULL on OOM, error set). */
static pg_tensor *zeros_like(const pg_tensor *p)
{
    return pg_tensor_full(NULL, p->dtype, p->ndim, p->shape, 0.0);
}

/* Allocates the state this group's settings use (and a copy of the name, if
 * any). 0, or -1 with st freed. */
static int state_init(pg_param_state *st, pg_tensor *p, const char *name, pg_optim_kind kind,
                      const pg_optim_hparams *h)
{
    memset(st, 0, sizeof *st);
    st->param = p;
    st->step = pg_tensor_full(NULL, PG_I64, 0, NULL, 0.0);
    bool ok = st->step != NULL;
    if (name)
        ok = ok && (st->name = strdup(name)) != NULL;
    if (kind == PG_SGD && h->momentum > 0)
        ok = ok && (st->momentum_buffer = zeros_like(p)) != NULL;
    if (kind != PG_SGD) {
        ok = ok && (st->exp_avg = zeros_like(p)) != NULL;
        ok = ok && (st->exp_avg_sq = zeros_like(p)) != NULL;
        if (h->amsgrad)
            ok = ok && (st->max_exp_avg_sq = zeros_like(p)) != NULL;
    }
    if (!ok)
        state_free(st);
    return ok ? 0 : -1;
}

/* Room for one more group and n more params. */
static int reserve(pg_optim *o, int n)
{
    if (o->n_groups == o->cap_groups) {
        int cap = o->cap_groups ? 2 * o->cap_groups : 4;
        pg_param_group *g = realloc(o->groups, (size_t)cap * sizeof *g);
        if (!g)
            return -1;
        o->groups = g;
        o->cap_groups = cap;
    }
    if (o->n_params + n > o->cap_params) {
        int cap = o->cap_params ? o->cap_params : 8;
        while (cap < o->n_params + n)
            cap *= 2;
        pg_param_state *s = realloc(o->state, (size_t)cap * sizeof *s);
        if (!s)
            return -1;
        o->state = s;
        o->cap_params = cap;
    }
    return 0;
}

/* pg_optim_add_group with the parameters' names (names may be NULL, and so may its entries) */
static int add_group(const char *fn, pg_optim *o, pg_tensor *const *params, char *const *names, int n,
                     const pg_optim_hparams *h)
{
    if (!o) {
        pg_set_error("%s: optimizer is NULL", fn);
        return -1;
    }
    pg_optim_hparams hp = h ? *h : o->defaults;
    if (!check_hparams(fn, o->kind, &hp) || !check_params(fn, o, params, n))
        return -1;
    if (reserve(o, n) != 0) {
        pg_set_error("%s: out of memory", fn);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (state_init(&o->state[o->n_params + i], params[i], names ? names[i] : NULL, o->kind, &hp) != 0) {
            while (i-- > 0)
                state_free(&o->state[o->n_params + i]);
            pg_set_error("%s: out of memory for the state of %d parameters", fn, n);
            return -1;
        }
    }
    o->groups[o->n_groups] = (pg_param_group){hp, hp.lr, o->n_params, n};
    o->n_params += n;
    return o->n_groups++;
}

int pg_optim_add_group(pg_optim *o, pg_tensor *const *params, int n, const pg_optim_hparams *h)
{
    return add_group("pg_optim_add_group", o, params, NULL, n, h);
}

int pg_optim_add_group_named(pg_optim *o, const pg_tensor_list *params, const pg_optim_hparams *h)
{
    const char *fn = "pg_optim_add_group_named";
    if (o && !params) {
        pg_set_error("%s: params is NULL", fn);
        return -1;
    }
    return add_group(fn, o, params ? params->tensors : NULL, params ? params->names : NULL, params ? params->n : 0,
                     h);
}

/* o->defaults with this lr and weight decay */
static pg_optim_hparams defaults_lr(const pg_optim *o, double lr, double weight_decay)
{
    pg_optim_hparams h = o->defaults;
    h.lr = lr;
    h.weight_decay = weight_decay;
    return h;
}

int pg_optim_add_group_lr(pg_optim *o, pg_tensor *const *params, int n, double lr, double weight_decay)
{
    if (!o) {
        pg_set_error("pg_optim_add_group_lr: optimizer is NULL");
        return -1;
    }
    pg_optim_hparams h = defaults_lr(o, lr, weight_decay);
    return pg_optim_add_group(o, params, n, &h);
}

/* ---- update kernels ------------------------------------------------------------------------
 * One instance per float type T. Each mirrors a torch single-tensor loop
 * body, in torch's order; comments give the torch line. */

/* torch._single_tensor_sgd:
 *   d = g + wd * p                                  (if wd != 0)
 *   buf = d on the first step, else buf * momentum + (1 - dampening) * d
 *   d = nesterov ? d + momentum * buf : buf         (if momentum != 0)
 *   p = p - lr * d
 * With and without a buffer in two loops (not one testing buf per element: see ADAM_BODY). */
#define SGD_BODY(T, BUF_STEP)                                                                                  \
    for (int64_t i = 0; i < n; i++) {                                                                          \
        T d = g[i];                                                                                            \
        if (decay)                                                                                             \
            d = d + wd * p[i];                                                                                 \
        BUF_STEP                                                                                               \
        p[i] = p[i] + neg_lr * d;                                                                              \
    }
#define SGD_BUF                                                                                                \
    buf[i] = first ? d : buf[i] * mom + keep * d;                                                              \
    d = nesterov ? d + mom * buf[i] : buf[i];
#define DEFINE_SGD(NAME, T)                                                                                    \
    static void NAME(T *restrict p, const T *restrict g, T *restrict buf, int64_t n, const pg_optim_hparams *h, \
                     bool first)                                                                               \
    {                                                                                                          \
        const T wd = (T)h->weight_decay, mom = (T)h->momentum, keep = (T)(1.0 - h->dampening);                 \
        const T neg_lr = (T)(-h->lr);                                                                          \
        const bool decay = h->weight_decay != 0, nesterov = h->nesterov;                                       \
        if (buf) {                                                                                             \
            SGD_BODY(T, SGD_BUF)                                                                               \
        } else {                                                                                               \
            SGD_BODY(T, )                                                                                      \
        }                                                                                                      \
    }
DEFINE_SGD(sgd_f32, float)
DEFINE_SGD(sgd_f64, double)

/* Scalars of one Adam / AdamW update of one parameter, in double. */
typedef struct adam_coef {
    double decay;         /* AdamW: p *= 1 - lr * wd (1: none) */
    double wd;            /* Adam: g += wd * p (0: none) */
    double beta1, beta2, keep1, keep2; /* keep = 1 - beta */
    double bc2_sqrt;      /* sqrt(1 - beta2^step) */
    double neg_step_size; /* -lr / (1 - beta1^step) */
    double eps;
} adam_coef;

/* torch._single_tensor_adam / _adamw (amsgrad as vmax != NULL):
 *   p = p * (1 - lr * wd)                           (AdamW)
 *   g = g + wd * p                                  (Adam, if wd != 0)
 *   m = m * beta1 + (1 - beta1) * g
 *   v = v * beta2 + ((1 - beta2) * g) * g
 *   vmax = maximum(vmax, v), NaN-propagating        (amsgrad; then v -> vmax below)
 *   p = p + (-step_size * m) / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * The amsgrad loop is apart: one loop testing vmax per element is if-converted into masked
 * loads from vmax + i even when vmax is NULL, and a masked load from an unmapped page is
 * ~30x slower than the whole update on some CPUs (measured on a 2-core EPYC: 6.5 -> 0.2 ns
 * per element). */
#define ADAM_BODY(T, SQRT, VMAX_STEP)                                                                          \
    for (int64_t i = 0; i < n; i++) {                                                                          \
        T gi = g[i];                                                                                           \
        if (do_decay)                                                                                          \
            p[i] = p[i] * decay;                                                                               \
        if (do_wd)                                                                                             \
            gi = gi + wd * p[i];                                                                               \
        m[i] = m[i] * b1 + k1 * gi;                                                                            \
        v[i] = v[i] * b2 + (k2 * gi) * gi;                                                                     \
        T vi = v[i];                                                                                           \
        VMAX_STEP                                                                                              \
        p[i] = p[i] + (nss * m[i]) / (SQRT(vi) / bc2 + eps);                                                   \
    }
/* vmax = maximum(vmax, v), NaN-propagating; v -> vmax */
#define ADAM_VMAX                                                                                              \
    if (!(vmax[i] >= vi || vmax[i] != vmax[i]))                                                                \
        vmax[i] = vi;                                                                                          \
    vi = vmax[i];
#define DEFINE_ADAM(NAME, T, SQRT)                                                                             \
    static void NAME(T *restrict p, const T *restrict g, T *restrict m, T *restrict v, T *restrict vmax,       \
                     int64_t n, const adam_coef *c)                                                            \
    {                                                                                                          \
        const T decay = (T)c->decay, wd = (T)c->wd, b1 = (T)c->beta1, b2 = (T)c->beta2;                        \
        const T k1 = (T)c->keep1, k2 = (T)c->keep2, bc2 = (T)c->bc2_sqrt;                                      \
        const T nss = (T)c->neg_step_size, eps = (T)c->eps;                                                    \
        const bool do_decay = c->decay != 1.0, do_wd = c->wd != 0.0;                                           \
        if (vmax) {                                                                                            \
            ADAM_BODY(T, SQRT, ADAM_VMAX)                                                                      \
        } else {                                                                                               \
            ADAM_BODY(T, SQRT, )                                                                               \
        }                                                                                                      \
    }
DEFINE_ADAM(adam_f32, float, sqrtf)
DEFINE_ADAM(adam_f64, double, sqrt)

static void *data_or_null(pg_tensor *t)
{
    return t ? t->data : NULL;
}

static void sgd_update(pg_param_state *st, const pg_optim_hparams *h, int64_t step)
{
    pg_tensor *p = st->param;
    bool first = step == 1;
    if (p->dtype == PG_F32)
        sgd_f32(p->data, p->grad->data, data_or_null(st->momentum_buffer), p->numel, h, first);
    else
        sgd_f64(p->data, p->grad->data, data_or_null(st->momentum_buffer), p->numel, h, first);
}

/* elements [i0, i1) of one parameter: the update is elementwise, so the slices
 * may run on the thread pool */
typedef struct adam_job {
    pg_param_state *st;
    const adam_coef *c;
} adam_job;

static void adam_slice(void *ctx, int64_t i0, int64_t i1)
{
    const adam_job *j = ctx;
    const pg_param_state *st = j->st;
    const pg_tensor *p = st->param;
    int64_t n = i1 - i0;
    if (p->dtype == PG_F32) {
        float *vmax = st->max_exp_avg_sq ? (float *)st->max_exp_avg_sq->data + i0 : NULL;
        adam_f32((float *)p->data + i0, (const float *)p->grad->data + i0, (float *)st->exp_avg->data + i0,
                 (float *)st->exp_avg_sq->data + i0, vmax, n, j->c);
    } else {
        double *vmax = st->max_exp_avg_sq ? (double *)st->max_exp_avg_sq->data + i0 : NULL;
        adam_f64((double *)p->data + i0, (const double *)p->grad->data + i0, (double *)st->exp_avg->data + i0,
                 (double *)st->exp_avg_sq->data + i0, vmax, n, j->c);
    }
}

static adam_coef adam_coefs(const pg_optim_hparams *h, int64_t step, bool decoupled)
{
    /* torch: bias_correction1 = 1 - beta1 ** step, step_size = lr / bias_correction1,
     * bias_correction2_sqrt = math.sqrt(1 - beta2 ** step), all Python floats */
    double bc1 = 1.0 - pow(h->beta1, (double)step);
    double bc2 = 1.0 - pow(h->beta2, (double)step);
    adam_coef c = {
        .decay = decoupled ? 1.0 - h->lr * h->weight_decay : 1.0,
        .wd = decoupled ? 0.0 : h->weight_decay,
        .beta1 = h->beta1,
        .beta2 = h->beta2,
        .keep1 = 1.0 - h->beta1,
        .keep2 = 1.0 - h->beta2,
        .bc2_sqrt = sqrt(bc2),
        .neg_step_size = -(h->lr / bc1),
        .eps = h->eps,
    };
    return c;
}

/* ---- one pass over every parameter's elements, split over the threads ---------------------
 * The elements of the n parameters laid end to end, [0, total), cut into one slice per
 * thread (boundaries multiples of 16 elements, sizes following the cores' speeds:
 * pg_parallel_range), whatever parameters a slice crosses. Elementwise work, so any split
 * gives the same bits; many small parameters share a thread instead of each running on
 * the caller. */
typedef struct flat_job {
    pg_param_state **st; /* n parameters */
    adam_coef *coef;     /* n, or NULL (zeroing) */
    int64_t *start;      /* n + 1 prefix sums of the element counts */
    int n;
    void (*slice)(const struct flat_job *j, int k, int64_t i0, int64_t i1); /* parameter k, its elements [i0, i1) */
} flat_job;

/* the elements [lo, hi) of the parameters laid end to end */
static void flat_range(void *ctx, int64_t lo, int64_t hi)
{
    const flat_job *j = ctx;
    for (int k = 0; k < j->n && lo < hi; k++) {
        int64_t a = j->start[k], b = j->start[k + 1];
        if (b <= lo)
            continue;
        int64_t i0 = lo - a, i1 = (hi < b ? hi : b) - a;
        j->slice(j, k, i0, i1);
        lo = a + i1;
    }
}

/* runs j over its parameters: on the pool above 65536 elements in all */
static void flat_run(flat_job *j)
{
    j->start[0] = 0;
    for (int k = 0; k < j->n; k++)
        j->start[k + 1] = j->start[k] + j->st[k]->param->numel;
    pg_parallel_range(j->start[j->n], 65536, flat_range, j);
}

static void adam_flat_slice(const flat_job *j, int k, int64_t i0, int64_t i1)
{
    adam_job a = {j->st[k], &j->coef[k]};
    adam_slice(&a, i0, i1);
}

static void zero_flat_slice(const flat_job *j, int k, int64_t i0, int64_t i1)
{
    const pg_tensor *g = j->st[k]->param->grad;
    size_t es = pg_dtype_size(g->dtype);
    memset((char *)g->data + (size_t)i0 * es, 0, (size_t)(i1 - i0) * es);
}

/* A flat job's arrays for up to n parameters (one allocation at j->start: free(j->start)), or false. */
static bool flat_alloc(flat_job *j, int n, bool coefs)
{
    size_t coef_bytes = coefs ? (size_t)n * sizeof *j->coef : 0;
    size_t bytes = (size_t)n * sizeof *j->st + (size_t)(n + 1) * sizeof *j->start + coef_bytes;
    char *mem = malloc(bytes ? bytes : 1);
    if (!mem)
        return false;
    j->start = (int64_t *)mem;
    j->coef = coefs ? (adam_coef *)(mem + (size_t)(n + 1) * sizeof *j->start) : NULL;
    j->st = (pg_param_state **)(mem + (size_t)(n + 1) * sizeof *j->start + coef_bytes);
    j->n = 0;
    return true;
}

/* Every grad matches its parameter. */
static bool check_grads(const pg_optim *o)
{
    char a[128], b[128];
    for (int i = 0; i < o->n_params; i++) {
        const pg_tensor *p = o->state[i].param, *g = p->grad;
        if (g && (g->dtype != p->dtype || g->numel != p->numel || !g->data)) {
            pg_set_error("pg_optim_step: parameter %d is %s but its grad is %s", i, pg_shape_str(a, sizeof a, p),
                         pg_shape_str(b, sizeof b, g));
            return false;
        }
    }
    return true;
}

/* Every grad is finite (check_finite), else the error names the first bad element. */
static bool check_finite(const pg_optim *o)
{
    for (int i = 0; i < o->n_params; i++) {
        const pg_param_state *st = &o->state[i];
        pg_nonfinite w;
        /* one parameter at a time (no array to build); its grad's dtype and size
         * were checked, so this returns 0 or 1 */
        if (pg_grad_find_nonfinite(&st->param, 1, &w) == 1) {
            char s[128], who[384];
            pg_shape_str(s, sizeof s, st->param);
            if (st->name)
                snprintf(who, sizeof who, "%s, %s", st->name, s);
            else
                snprintf(who, sizeof who, "%s", s);
            pg_set_error("pg_optim_step: the gradient of parameter %d (%s) is not finite: element %lld is %s; "
                         "nothing was updated", i, who, (long long)w.index,
                         isnan(w.value) ? "nan" : w.value > 0 ? "inf" : "-inf");
            return false;
        }
    }
    return true;
}

int pg_optim_step(pg_optim *o)
{
    if (!o) {
        pg_set_error("pg_optim_step: optimizer is NULL");
        return -1;
    }
    if (!check_grads(o))
        return -1;
    if (o->check_finite && !check_finite(o))
        return PG_NONFINITE;
    /* Adam: every parameter's coefficients first, then one pass over all their elements */
    flat_job j;
    bool flat = o->kind != PG_SGD && flat_alloc(&j, o->n_params, true);
    for (int gi = 0; gi < o->n_groups; gi++) {
        const pg_param_group *grp = &o->groups[gi];
        for (int i = grp->first; i < grp->first + grp->n; i++) {
            pg_param_state *st = &o->state[i];
            if (!st->param->grad)
                continue; /* torch skips params whose grad is None */
            int64_t step = ++*pg_i64(st->step);
            if (o->kind == PG_SGD) {
                sgd_update(st, &grp->h, step);
                continue;
            }
            adam_coef c = adam_coefs(&grp->h, step, o->kind == PG_ADAMW);
            if (flat) {
                j.st[j.n] = st;
                j.coef[j.n++] = c;
            } else { /* no memory for the list: parameter by parameter */
                adam_job a = {st, &c};
                pg_parallel_range(st->param->numel, 32768, adam_slice, &a);
            }
        }
    }
    if (flat) {
        j.slice = adam_flat_slice;
        flat_run(&j);
        free(j.start);
    }
    return 0;
}

void pg_optim_zero_grad(pg_optim *o)
{
    if (!o) {
        pg_set_error("pg_optim_zero_grad: optimizer is NULL");
        return;
    }
    flat_job j;
    if (!flat_alloc(&j, o->n_params, false)) { /* no memory for the list: one at a time */
        for (int i = 0; i < o->n_params; i++)
            pg_zero_grad(o->state[i].param);
        return;
    }
    for (int i = 0; i < o->n_params; i++)
        if (o->state[i].param->grad)
            j.st[j.n++] = &o->state[i];
    j.slice = zero_flat_slice;
    flat_run(&j);
    free(j.start);
}

/* ---- decay / no-decay split ----------------------------------------------------------------- */

bool pg_no_decay_default(const char *name, const pg_tensor *t, void *ctx)
{
    (void)ctx;
    if (!name || !t) {
        pg_set_error("pg_no_decay_default: %s is NULL", !name ? "name" : "t");
        return false;
    }
    if (t->no_decay || t->ndim < 2)
        return true;
    /* the parameter's own name: the last dotted component */
    const char *dot = strrchr(name, '.');
    const char *own = dot ? dot + 1 : name;
    return !strcmp(own, "bias") || !strcmp(own, "div");
}

int pg_split_decay(const pg_tensor_list *params, pg_param_pred no_decay, void *ctx, pg_tensor_list *decay,
                   pg_tensor_list *no_decay_out)
{
    const char *fn = "pg_split_decay";
    if (!params || !no_decay || !decay || !no_decay_out || decay == no_decay_out) {
        pg_set_error("%s: NULL or repeated argument", fn);
        return -1;
    }
    if (decay->n || no_decay_out->n) {
        pg_set_error("%s: the output lists must start empty", fn);
        return -1;
    }
    for (int i = 0; i < params->n; i++) {
        const char *name = params->names[i];
        pg_tensor *t = params->tensors[i];
        if (pg_tensor_list_push(no_decay(name, t, ctx) ? no_decay_out : decay, name, t) != 0) {
            pg_tensor_list_free(decay);
            pg_tensor_list_free(no_decay_out);
            pg_set_error("%s: out of memory", fn);
            return -1;
        }
    }
    return 0;
}

int pg_optim_add_decay_groups(pg_optim *o, const pg_tensor_list *params, pg_param_pred no_decay, void *ctx,
                              double lr, double weight_decay)
{
    const char *fn = "pg_optim_add_decay_groups";
    if (!o) {
        pg_set_error("%s: optimizer is NULL", fn);
        return -1;
    }
    if (!params || !no_decay) {
        pg_set_error("%s: %s is NULL", fn, !params ? "params" : "no_decay");
        return -1;
    }
    pg_tensor_list dec = {0, 0, NULL, NULL}, nodec = {0, 0, NULL, NULL};
    if (pg_split_decay(params, no_decay, ctx, &dec, &nodec) != 0)
        return -1;
    int n_groups = o->n_groups, n_params = o->n_params;
    pg_optim_hparams hd = defaults_lr(o, lr, weight_decay), hn = defaults_lr(o, lr, 0.0);
    int first = add_group(fn, o, dec.tensors, dec.names, dec.n, &hd);
    if (first >= 0 && add_group(fn, o, nodec.tensors, nodec.names, nodec.n, &hn) < 0) {
        /* roll the first group back: o unchanged */
        for (int i = n_params; i < o->n_params; i++)
            state_free(&o->state[i]);
        o->n_params = n_params;
        o->n_groups = n_groups;
        first = -1;
    }
    pg_tensor_list_free(&dec);
    pg_tensor_list_free(&nodec);
    return first;
}

