/* Binary elementwise ops with NumPy broadcasting, forward and backward side by
 * side. Each op is one row of BINARY_OPS: y = f(a, b), dy/da and dy/db in
 * terms of a, b and y. The backward walks the broadcast plan with each
 * input's own strides, so a broadcast input's gradient sums up in place. */
#include "op_util.h"
#include "../tensor/threadpool.h"

#include <string.h>
#include <tgmath.h>

/* maximum / minimum: NaN wins; a tie gives each side half the gradient, and
 * where either side is NaN both get all of it (torch) */
#define MAXIMUM(a, b) ((a) != (a) || (b) != (b) ? (a) + (b) : (a) > (b) ? (a) : (b))
#define MINIMUM(a, b) ((a) != (a) || (b) != (b) ? (a) + (b) : (a) < (b) ? (a) : (b))
#define WINS(a, b) ((a) < (b) ? (T)0 : (a) == (b) ? (T)0.5 : (T)1)

/*  name      forward          dy/da                                 dy/db                                 */
#define BINARY_OPS(X)                                                                                          \
    X(add, a + b, (T)1, (T)1)                                                                                  \
    X(sub, a - b, (T)1, (T)-1)                                                                                 \
    X(mul, a * b, b, a)                                                                                        \
    X(div, a / b, (T)1 / b, -a / (b * b))                                                                      \
    X(maximum, MAXIMUM(a, b), WINS(a, b), WINS(b, a))                                                          \
    X(minimum, MINIMUM(a, b), WINS(b, a), WINS(a, b))                                                          \
    /* torch: d/da is 0 where b == 0; d/db is 0 where a == 0 and b >= 0 */                                     \
    X(pow, pow(a, b), b == 0 ? (T)0 : b * pow(a, b - (T)1), (a == 0 && b >= 0) ? (T)0 : y * log(a))

/* Kernels over the inner loops [r0, r1) of the plan of (out, a, b) (PLAN_LOOP_ROWS,
 * op_util.h: PLAN_AT(0), PLAN_AT(1), PLAN_AT(2) index y, a and b) */
#define DEFINE_BINARY(name, fwd, da, db)                                                                       \
    DEFINE_BINARY_T(name, fwd, da, db, float, f32)                                                             \
    DEFINE_BINARY_T(name, fwd, da, db, double, f64)

#define DEFINE_BINARY_T(name, fwd, da, db, TY, sfx)                                                            \
    static void name##_fwd_##sfx(const pg_bcast *p, int64_t r0, int64_t r1, TY *ys, const TY *as,              \
                                 const TY *bs)                                                                 \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        PLAN_LOOP_ROWS(r0, r1, {                                                                               \
            T a = as[PLAN_AT(1)], b = bs[PLAN_AT(2)];                                                          \
            ys[PLAN_AT(0)] = fwd;                                                                              \
        });                                                                                                    \
    }                                                                                                          \
    /* ga, gb may be NULL; they have the inputs' (broadcast) strides */                                        \
    static void name##_bwd_##sfx(const pg_bcast *p, int64_t r0, int64_t r1, TY *ga, TY *gb, const TY *gy,      \
                                 const TY *ys, const TY *as, const TY *bs)                                     \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        PLAN_LOOP_ROWS(r0, r1, {                                                                               \
            T a = as[PLAN_AT(1)], b = bs[PLAN_AT(2)], y = ys[PLAN_AT(0)];                                      \
            (void)y, (void)a, (void)b;                                                                         \
            if (ga)                                                                                            \
                ga[PLAN_AT(1)] += gy[PLAN_AT(0)] * (da);                                                       \
            if (gb)                                                                                            \
                gb[PLAN_AT(2)] += gy[PLAN_AT(0)] * (db);                                                       \
        });                                                                                                    \
    }                                                                                                          \
    /* same shapes, elements [0, n): as above, a gradient with set_* starting from 0 (0 + t: the               \
     * bits of a zero-filled buffer added to, -0 included) instead of its contents */                          \
    static void name##_flat_##sfx(int64_t n, TY *ga, TY *gb, const TY *gy, const TY *ys, const TY *as,         \
                                  const TY *bs, bool set_a, bool set_b)                                        \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                                      \
            T a = as[i], b = bs[i], y = ys[i];                                                                 \
            (void)y, (void)a, (void)b;                                                                         \
            if (ga)                                                                                            \
                ga[i] = (set_a ? (T)0 : ga[i]) + gy[i] * (da);                                                 \
            if (gb)                                                                                            \
                gb[i] = (set_b ? (T)0 : gb[i]) + gy[i] * (db);                                                 \
        }                                                                                                      \
    }

BINARY_OPS(DEFINE_BINARY)

typedef struct binary_kind {
    const char *name;
    void (*f32)(const pg_bcast *, int64_t, int64_t, float *, const float *, const float *);
    void (*f64)(const pg_bcast *, int64_t, int64_t, double *, const double *, const double *);
    void (*b32)(const pg_bcast *, int64_t, int64_t, float *, float *, const float *, const float *, const float *,
                const float *);
    void (*b64)(const pg_bcast *, int64_t, int64_t, double *, double *, const double *, const double *,
                const double *, const double *);
    void (*flat32)(int64_t, float *, float *, const float *, const float *, const float *, const float *, bool, bool);
    void (*flat64)(int64_t, double *, double *, const double *, const double *, const double *, const double *, bool,
                   bool);
} binary_kind;

#define DEFINE_KIND(name, fwd, da, db)                                                                         \
    static const binary_kind name##_kind = {"pg_" #name, name##_fwd_f32, name##_fwd_f64, name##_bwd_f32,       \
                                            name##_bwd_f64, name##_flat_f32, name##_flat_f64};
BINARY_OPS(DEFINE_KIND)

/* ---- on the thread pool ---------------------------------------------------------------
 * When a, b and y have one shape (the residual adds, the gates), the plan is one flat
 * loop, cut into slices: element i's result never depends on the split. A fresh gradient
 * (pg_grad_fresh) is written as 0 + its term by the flat kernels, never zero-filled.
 * With broadcasting, slices of the plan's inner loops: always forward (each writes its
 * own rows of y), and backward for a gradient no two of whose loops add into one element
 * (pg_bcast_rows_own); the other's (a reduction: FIRE's |c| times d, XL's u broadcast
 * over batch and length) runs on the calling thread. Either way an element's terms add
 * in the serial order: the same bits for any thread count. */
#define BINARY_GRAIN 32768

typedef struct binary_job {
    const binary_kind *k;
    bool f32, backward, fresh_a, fresh_b;
    void *y, *ga, *gb;
    const void *a, *b, *gy;
    const pg_bcast *p; /* broadcasting: the plan whose inner loops are sliced */
} binary_job;

/* the kernel over the inner loops [r0, r1) of p, the operands offset by o bytes */
static void binary_call(const binary_job *j, const pg_bcast *p, int64_t r0, int64_t r1, size_t o, void *ga, void *gb)
{
    const char *y = j->y, *a = j->a, *b = j->b, *gy = j->gy;
    if (!j->backward && j->f32)
        j->k->f32(p, r0, r1, (float *)(y + o), (const float *)(a + o), (const float *)(b + o));
    else if (!j->backward)
        j->k->f64(p, r0, r1, (double *)(y + o), (const double *)(a + o), (const double *)(b + o));
    else if (j->f32)
        j->k->b32(p, r0, r1, ga, gb, (const float *)(gy + o), (const float *)(y + o), (const float *)(a + o),
                  (const float *)(b + o));
    else
        j->k->b64(p, r0, r1, ga, gb, (const double *)(gy + o), (const double *)(y + o), (const double *)(a + o),
                  (const double *)(b + o));
}

/* same shapes: elements i0 .. i1 - 1 as one inner loop; backward, a fresh gradient
 * written rather than zeroed and added to (the flat kernels) */
static void binary_slice(void *ctx, int64_t i0, int64_t i1)
{
    const binary_job *j = ctx;
    size_t es = j->f32 ? sizeof(float) : sizeof(double), o = (size_t)i0 * es;
    if (!j->backward) {
        pg_bcast p = {.ndim = 1, .n = 3, .shape = {i1 - i0}, .inner = i1 - i0, .istride = {1, 1, 1}, .outer = 1};
        binary_call(j, &p, 0, 1, o, NULL, NULL);
        return;
    }
    char *ga = j->ga, *gb = j->gb;
    const char *y = j->y, *a = j->a, *b = j->b, *gy = j->gy;
    if (j->f32)
        j->k->flat32(i1 - i0, ga ? (float *)(ga + o) : NULL, gb ? (float *)(gb + o) : NULL, (const float *)(gy + o),
                     (const float *)(y + o), (const float *)(a + o), (const float *)(b + o), j->fresh_a, j->fresh_b);
    else
        j->k->flat64(i1 - i0, ga ? (double *)(ga + o) : NULL, gb ? (double *)(gb + o) : NULL,
                     (const double *)(gy + o), (const double *)(y + o), (const double *)(a + o),
                     (const double *)(b + o), j->fresh_a, j->fresh_b);
}

/* broadcasting: inner loops r0 .. r1 - 1 of the plan */
static void bcast_slice(void *ctx, int64_t r0, int64_t r1)
{
    const binary_job *j = ctx;
    binary_call(j, j->p, r0, r1, 0, j->ga, j->gb);
}

static void bcast_run(const binary_job *j, bool parallel)
{
    const pg_bcast *p = j->p;
    if (parallel)
        pg_parallel_range(p->outer, BINARY_GRAIN / (p->inner ? p->inner : 1), bcast_slice, (void *)j);
    else
        bcast_slice((void *)j, 0, p->outer);
}

static bool same_shapes(const pg_tensor *y, const pg_tensor *a, const pg_tensor *b)
{
    return a->numel == y->numel && b->numel == y->numel;
}

/* A gradient summed over broadcast loops (XL's v over batch and length, FIRE's |c| d): the
 * loops cut into op_sum_blocks' blocks (fixed by the shape), each block summed into its own
 * zeroed partial gradient on the pool, the partials then added to the gradient in block
 * order: the same bits for any thread count. */
typedef struct bcast_sum_job {
    binary_job j;   /* its ga / gb: the summed gradients (either may be NULL) */
    int64_t blocks;
    char *part[2];  /* per gradient, `blocks` partial gradients of bytes[i] each */
    size_t bytes[2];
} bcast_sum_job;

static void bcast_sum_task(void *ctx, int64_t k, int thread)
{
    (void)thread;
    const bcast_sum_job *s = ctx;
    binary_job j = s->j;
    void **gr[2] = {&j.ga, &j.gb};
    for (int i = 0; i < 2; i++)
        if (*gr[i]) {
            *gr[i] = s->part[i] + (size_t)k * s->bytes[i];
            memset(*gr[i], 0, s->bytes[i]);
        }
    const int64_t outer = j.p->outer;
    binary_call(&j, j.p, outer * k / s->blocks, outer * (k + 1) / s->blocks, 0, j.ga, j.gb);
}

/* the reduction of rest (the summed gradients gr[0], gr[1], NULL where none) over `work`
 * elements: in blocks when the partials are small beside the work, else on this thread */
static int bcast_sum(pg_graph *g, const char *name, const binary_job *rest, int64_t work,
                     const pg_tensor *const gr[2])
{
    bcast_sum_job s = {*rest, op_sum_blocks(rest->p->outer, work, BINARY_GRAIN), {NULL, NULL}, {0, 0}};
    int64_t size = (gr[0] ? gr[0]->numel : 0) + (gr[1] ? gr[1]->numel : 0);
    if (!op_partials_worth(s.blocks, size, work)) {
        bcast_run(rest, false);
        return 0;
    }
    for (int i = 0; i < 2; i++) {
        if (!gr[i])
            continue;
        s.bytes[i] = (size_t)gr[i]->numel * pg_dtype_size(gr[i]->dtype);
        if (!(s.part[i] = op_partials(g, name, gr[i], s.blocks)))
            return -1;
    }
    op_parallel_for(s.blocks, work, 0, bcast_sum_task, &s);
    for (int i = 0; i < 2; i++)
        if (gr[i])
            op_add_partials(gr[i], s.part[i], s.blocks);
    return 0;
}

static int binary_backward(pg_graph *g, pg_node *n)
{
    const binary_kind *k = n->ctx;
    pg_tensor *a = n->in[0], *b = n->in[1], *y = n->out;
    bool fresh_a = false, fresh_b = false;
    pg_tensor *ga = pg_grad_fresh(g, a, &fresh_a), *gb = a == b ? NULL : pg_grad_fresh(g, b, &fresh_b);
    if (a == b) /* x op x: both contributions go to one gradient, added in turn */
        gb = ga;
    if ((a->requires_grad && !ga) || (b->requires_grad && !gb))
        return -1;
    binary_job j = {k, y->dtype == PG_F32, true, fresh_a, fresh_b, y->data, ga ? ga->data : NULL,
                    gb ? gb->data : NULL, a->data, b->data, y->grad->data, NULL};
    if (same_shapes(y, a, b) && a != b) {
        pg_parallel_range(y->numel, BINARY_GRAIN, binary_slice, &j);
        return 0;
    }
    if (fresh_a) /* broadcast, or x op x: contributions add up in place (zeroed on the pool) */
        pg_fill(ga, 0.0);
    if (fresh_b)
        pg_fill(gb, 0.0);
    pg_bcast p;
    pg_bcast_plan(&p, y->ndim, y->shape, 3, (const pg_tensor *[]){y, a, b});
    j.p = &p; /* x op x: one gradient, its two terms per element added in one loop */
    bool own_a = !ga || pg_bcast_rows_own(&p, 1), own_b = !gb || pg_bcast_rows_own(&p, 2);
    if (own_a && own_b) {
        bcast_run(&j, true);
        return 0;
    }
    binary_job own = j, rest = j; /* the owned gradient on the pool, the reduction in blocks */
    own.ga = own_a ? j.ga : NULL, own.gb = own_b ? j.gb : NULL;
    rest.ga = own_a ? NULL : j.ga, rest.gb = own_b ? NULL : j.gb;
    if (own.ga || own.gb)
        bcast_run(&own, true);
    return bcast_sum(g, n->name, &rest, y->numel, (const pg_tensor *[]){own_a ? NULL : ga, own_b ? NULL : gb});
}

static pg_tensor *binary(pg_graph *g, const binary_kind *k, pg_tensor *a, pg_tensor *b)
{
    int ndim;
    int64_t shape[PG_MAX_DIMS];
    if (!args_float_pair(g, k->name, a, b) ||
        !broadcast_shape(g, k->name, 2, (const pg_tensor *[]){a, b}, &ndim, shape))
        return NULL;
    pg_tensor *y = pg_op_output(g, k->name, a->dtype, ndim, shape);
    if (!y)
        return NULL;
    binary_job j = {k, y->dtype == PG_F32, false, false, false, y->data, NULL, NULL, a->data, b->data, NULL, NULL};
    if (same_shapes(y, a, b)) {
        pg_parallel_range(y->numel, BINARY_GRAIN, binary_slice, &j);
    } else {
        pg_bcast p;
        pg_bcast_plan(&p, ndim, shape, 3, (const pg_tensor *[]){y, a, b});
        j.p = &p;
        bcast_run(&j, true);
    }
    pg_node *n = pg_op_record(g, k->name, y, 2, (pg_tensor *[]){a, b}, binary_backward);
    if (n)
        n->ctx = (void *)k;
    return y;
}

#define PUBLIC(name, fwd, da, db)                                                                              \
    pg_tensor *pg_##name(pg_graph *g, pg_tensor *a, pg_tensor *b) { return binary(g, &name##_kind, a, b); }
BINARY_OPS(PUBLIC)

/* ---- broadcast_to ------------------------------------------------------------------ */

static int broadcast_to_backward(pg_graph *g, pg_node *n)
{
    return pg_grad_accumulate(g, n->in[0], n->out->grad);
}

typedef struct broadcast_job {
    const pg_bcast *p; /* of (y, x) */
    char *dst;
    const char *src;
    size_t es;
} broadcast_job;

/* y's inner loops r0 .. r1 - 1 from x: a run that x holds contiguously in one copy (the
 * rows of a table repeated over heads), else element by element (a broadcast inner dim) */
static void broadcast_slice(void *ctx, int64_t r0, int64_t r1)
{
    const broadcast_job *j = ctx;
    const pg_bcast *p = j->p;
    const size_t es = j->es;
    int64_t idx[PG_MAX_DIMS], off[PG_BCAST_MAX];
    pg_bcast_seek(p, r0, idx, off);
    for (int64_t r = r0; r < r1; r++, pg_bcast_next(p, idx, off)) {
        char *d = j->dst + (size_t)off[0] * es;
        const char *s = j->src + (size_t)off[1] * es;
        if (p->istride[0] == 1 && p->istride[1] == 1)
            memcpy(d, s, (size_t)p->inner * es);
        else
            for (int64_t i = 0; i < p->inner; i++)
                memcpy(d + (size_t)(i * p->istride[0]) * es, s + (size_t)(i * p->istride[1]) * es, es);
    }
}

pg_tensor *pg_broadcast_to(pg_graph *g, pg_tensor *x, int ndim, const int64_t *shape)
{
    const char *fn = "pg_broadcast_to";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    if (ndim < x->ndim || ndim > PG_MAX_DIMS || (ndim && !shape)) {
        pg_graph_fail(g, "%s: cannot broadcast %s to %d dims", fn, SHAPE(x), ndim);
        return NULL;
    }
    for (int d = 0; d < x->ndim; d++) {
        int64_t s = x->shape[d], t = shape[d + ndim - x->ndim];
        if (s != 1 && s != t) {
            pg_graph_fail(g, "%s: %s does not broadcast to dim %d of size %lld", fn, SHAPE(x), d + ndim - x->ndim,
                          (long long)t);
            return NULL;
        }
    }
    pg_tensor *y = pg_op_output(g, fn, x->dtype, ndim, shape);
    if (!y)
        return NULL;
    pg_bcast p;
    pg_bcast_plan(&p, ndim, shape, 2, (const pg_tensor *[]){y, x});
    broadcast_job j = {&p, y->data, x->data, pg_dtype_size(x->dtype)};
    pg_parallel_range(p.outer, BINARY_GRAIN / (p.inner ? p.inner : 1) + 1, broadcast_slice, &j);
    if (pg_dtype_is_float(x->dtype))
        pg_op_record(g, fn, y, 1, &x, broadcast_to_backward);
    return y;
}
