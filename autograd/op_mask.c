/* Masks: comparisons and logical ops giving PG_BOOL, where, masked_fill and
 * tril / triu, forward and backward side by side.
 *
 * Comparisons take two tensors of one dtype (f32, f64, i64, or bool) and
 * follow IEEE: NaN compares unequal to everything, so ne is true and the
 * others false. They and the logical ops produce no gradient. where and
 * masked_fill take float, i64 or bool data (gradients for float only);
 * tril and triu take any dtype (gradients for float only). */
#include "op_util.h"

#include "../tensor/threadpool.h"

#include <string.h>

#define PLAN_LOOP(...) PLAN_LOOP_ROWS(0, p->outer, __VA_ARGS__) /* every inner loop (op_util.h) */

/* the element types, indexed by pg_dtype (PG_F32, PG_F64, PG_I64, PG_BOOL) */
#define ALL_TYPES(X, ...)                                                                                       \
    X(float, f32, __VA_ARGS__) X(double, f64, __VA_ARGS__) X(int64_t, i64, __VA_ARGS__) X(uint8_t, b8, __VA_ARGS__)
#define FLOAT_TYPES(X, ...) X(float, f32, __VA_ARGS__) X(double, f64, __VA_ARGS__)

static bool arg_bool(pg_graph *g, const char *fn, const char *name, const pg_tensor *x)
{
    if (!arg_present(g, fn, name, x))
        return false;
    if (x->dtype != PG_BOOL) {
        pg_graph_fail(g, "%s: %s must be bool, got %s", fn, name, SHAPE(x));
        return false;
    }
    return true;
}

static bool same_dtype(pg_graph *g, const char *fn, const pg_tensor *a, const pg_tensor *b)
{
    if (a->dtype != b->dtype) {
        pg_graph_fail(g, "%s: dtypes differ: a is %s, b is %s", fn, SHAPE(a), SHAPE(b));
        return false;
    }
    return true;
}

/* ---- comparisons and logical ops: y (bool) = a OP b, broadcasting ------------------------- */

typedef void (*pair_kernel)(const pg_bcast *p, uint8_t *restrict y, const void *a, const void *b);

#define CMP_OPS(X) X(eq, ==) X(ne, !=) X(lt, <) X(le, <=) X(gt, >) X(ge, >=)

/* plan operands: (y, a, b) */
#define DEFINE_CMP_T(T, sfx, name, op)                                                                          \
    static void name##_##sfx(const pg_bcast *p, uint8_t *restrict y, const void *av, const void *bv)            \
    {                                                                                                           \
        const T *a = av, *b = bv;                                                                               \
        PLAN_LOOP(y[PLAN_AT(0)] = a[PLAN_AT(1)] op b[PLAN_AT(2)]);                                              \
    }
#define DEFINE_CMP(name, op)                                                                                    \
    ALL_TYPES(DEFINE_CMP_T, name, op)                                                                           \
    static const pair_kernel name##_kernels[4] = {name##_f32, name##_f64, name##_i64, name##_b8};
CMP_OPS(DEFINE_CMP)

static void and_kernel(const pg_bcast *p, uint8_t *restrict y, const void *av, const void *bv)
{
    const uint8_t *a = av, *b = bv;
    PLAN_LOOP(y[PLAN_AT(0)] = (a[PLAN_AT(1)] != 0) & (b[PLAN_AT(2)] != 0));
}

static void or_kernel(const pg_bcast *p, uint8_t *restrict y, const void *av, const void *bv)
{
    const uint8_t *a = av, *b = bv;
    PLAN_LOOP(y[PLAN_AT(0)] = (a[PLAN_AT(1)] != 0) | (b[PLAN_AT(2)] != 0));
}

/* Checked (a, b) of one dtype -> broadcast bool result of kernel. */
static pg_tensor *pairwise_bool(pg_graph *g, const char *fn, pair_kernel kernel, pg_tensor *a, pg_tensor *b)
{
    int ndim;
    int64_t shape[PG_MAX_DIMS];
    if (!broadcast_shape(g, fn, 2, (const pg_tensor *[]){a, b}, &ndim, shape))
        return NULL;
    pg_tensor *y = pg_op_output(g, fn, PG_BOOL, ndim, shape);
    if (!y)
        return NULL;
    pg_bcast p;
    pg_bcast_plan(&p, ndim, shape, 3, (const pg_tensor *[]){y, a, b});
    kernel(&p, y->data, a->data, b->data);
    return y; /* no gradient: nothing recorded */
}

static pg_tensor *compare(pg_graph *g, const char *fn, const pair_kernel *kernels, pg_tensor *a, pg_tensor *b)
{
    if (!arg_present(g, fn, "a", a) || !arg_present(g, fn, "b", b) || !same_dtype(g, fn, a, b))
        return NULL;
    return pairwise_bool(g, fn, kernels[a->dtype], a, b);
}

#define PUBLIC_CMP(name, op)                                                                                    \
    pg_tensor *pg_##name(pg_graph *g, pg_tensor *a, pg_tensor *b) { return compare(g, "pg_" #name, name##_kernels, a, b); }
CMP_OPS(PUBLIC_CMP)

pg_tensor *pg_logical_and(pg_graph *g, pg_tensor *a, pg_tensor *b)
{
    const char *fn = "pg_logical_and";
    if (!arg_bool(g, fn, "a", a) || !arg_bool(g, fn, "b", b))
        return NULL;
    return pairwise_bool(g, fn, and_kernel, a, b);
}

pg_tensor *pg_logical_or(pg_graph *g, pg_tensor *a, pg_tensor *b)
{
    const char *fn = "pg_logical_or";
    if (!arg_bool(g, fn, "a", a) || !arg_bool(g, fn, "b", b))
        return NULL;
    return pairwise_bool(g, fn, or_kernel, a, b);
}

pg_tensor *pg_logical_not(pg_graph *g, pg_tensor *a)
{
    const char *fn = "pg_logical_not";
    if (!arg_bool(g, fn, "a", a))
        return NULL;
    pg_tensor *y = pg_op_output(g, fn, PG_BOOL, a->ndim, a->shape);
    if (!y)
        return NULL;
    uint8_t *restrict ys = y->data;
    const uint8_t *as = a->data;
    for (int64_t i = 0; i < a->numel; i++)
        ys[i] = as[i] == 0;
    return y;
}

/* ---- where: y = cond ? a : b, all three broadcasting ------------------------------------------- */

typedef void (*where_kernel)(const pg_bcast *p, void *y, const uint8_t *c, const void *a, const void *b);

/* plan operands: (y, cond, a, b) */
#define DEFINE_WHERE_T(T, sfx, unused)                                                                          \
    static void where_##sfx(const pg_bcast *p, void *yv, const uint8_t *c, const void *av, const void *bv)       \
    {                                                                                                           \
        T *restrict y = yv;                                                                                     \
        const T *a = av, *b = bv;                                                                               \
        PLAN_LOOP(y[PLAN_AT(0)] = c[PLAN_AT(1)] ? a[PLAN_AT(2)] : b[PLAN_AT(3)]);                               \
    }
ALL_TYPES(DEFINE_WHERE_T, 0)
static const where_kernel where_kernels[4] = {where_f32, where_f64, where_i64, where_b8};

/* ga += gy where cond, gb += gy elsewhere; ga / gb (NULL: skipped) have the
 * inputs' broadcast strides, so a broadcast input's gradient sums in place. */
#define DEFINE_WHERE_BWD_T(T, sfx, unused)                                                                      \
    static void where_bwd_##sfx(const pg_bcast *p, T *ga, T *gb, const T *gy, const uint8_t *c)                 \
    {                                                                                                           \
        if (ga)                                                                                                 \
            PLAN_LOOP(ga[PLAN_AT(2)] += c[PLAN_AT(1)] ? gy[PLAN_AT(0)] : (T)0);                                 \
        if (gb)                                                                                                 \
            PLAN_LOOP(gb[PLAN_AT(3)] += c[PLAN_AT(1)] ? (T)0 : gy[PLAN_AT(0)]);                                 \
    }
FLOAT_TYPES(DEFINE_WHERE_BWD_T, 0)

static int where_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *c = n->in[0], *a = n->in[1], *b = n->in[2], *y = n->out;
    pg_tensor *ga = pg_grad_of(g, a), *gb = pg_grad_of(g, b);
    if ((a->requires_grad && !ga) || (b->requires_grad && !gb))
        return -1;
    pg_bcast p;
    pg_bcast_plan(&p, y->ndim, y->shape, 4, (const pg_tensor *[]){y, c, a, b});
    if (y->dtype == PG_F32)
        where_bwd_f32(&p, ga ? ga->data : NULL, gb ? gb->data : NULL, y->grad->data, c->data);
    else
        where_bwd_f64(&p, ga ? ga->data : NULL, gb ? gb->data : NULL, y->grad->data, c->data);
    return 0;
}

pg_tensor *pg_where(pg_graph *g, pg_tensor *cond, pg_tensor *a, pg_tensor *b)
{
    const char *fn = "pg_where";
    int ndim;
    int64_t shape[PG_MAX_DIMS];
    if (!arg_bool(g, fn, "cond", cond) || !arg_present(g, fn, "a", a) || !arg_present(g, fn, "b", b) ||
        !same_dtype(g, fn, a, b) ||
        !broadcast_shape(g, fn, 3, (const pg_tensor *[]){cond, a, b}, &ndim, shape))
        return NULL;
    pg_tensor *y = pg_op_output(g, fn, a->dtype, ndim, shape);
    if (!y)
        return NULL;
    const pg_tensor *ops[4] = {y, cond, a, b};
    pg_bcast p;
    pg_bcast_plan(&p, ndim, shape, 4, ops);
    where_kernels[a->dtype](&p, y->data, cond->data, a->data, b->data);
    if (pg_dtype_is_float(a->dtype))
        pg_op_record(g, fn, y, 3, (pg_tensor *[]){cond, a, b}, where_backward);
    return y;
}

/* ---- masked_fill: y = mask ? value : x, mask broadcast to x ------------------------------------ */

/* One job, forward (y = mask ? value : x) or backward (gx += gy where the mask is false),
 * over a slice [r0, r1) of the plan's inner loops: every element is written by one slice,
 * so the thread pool's split never changes a result. */
typedef struct fill_job {
    const pg_bcast *p;
    pg_dtype dtype;
    bool backward;
    void *out;              /* y, or gx */
    const void *in;         /* x, or gy */
    const uint8_t *m;
    const void *value;
} fill_job;

typedef void (*fill_kernel)(const fill_job *j, int64_t r0, int64_t r1);

/* plan operands: (x, mask); y shares x's layout */
#define DEFINE_FILL_T(T, sfx, unused)                                                                           \
    static void fill_##sfx(const fill_job *j, int64_t r0, int64_t r1)                                           \
    {                                                                                                           \
        const pg_bcast *p = j->p;                                                                               \
        const uint8_t *m = j->m;                                                                                \
        T *restrict y = j->out;                                                                                 \
        const T *x = j->in, v = *(const T *)j->value;                                                           \
        PLAN_LOOP_ROWS(r0, r1, y[PLAN_AT(0)] = m[PLAN_AT(1)] ? v : x[PLAN_AT(0)]);                              \
    }
ALL_TYPES(DEFINE_FILL_T, 0)
static const fill_kernel fill_kernels[4] = {fill_f32, fill_f64, fill_i64, fill_b8};

/* gx += gy where the mask is false */
#define DEFINE_FILL_BWD_T(T, sfx, unused)                                                                       \
    static void fill_bwd_##sfx(const fill_job *j, int64_t r0, int64_t r1)                                       \
    {                                                                                                           \
        const pg_bcast *p = j->p;                                                                               \
        const uint8_t *m = j->m;                                                                                \
        T *restrict gx = j->out;                                                                                \
        const T *gy = j->in;                                                                                    \
        PLAN_LOOP_ROWS(r0, r1, gx[PLAN_AT(0)] += m[PLAN_AT(1)] ? (T)0 : gy[PLAN_AT(0)]);                        \
    }
FLOAT_TYPES(DEFINE_FILL_BWD_T, 0)

static void fill_slice(void *ctx, int64_t r0, int64_t r1)
{
    const fill_job *j = ctx;
    if (j->backward)
        (j->dtype == PG_F32 ? fill_bwd_f32 : fill_bwd_f64)(j, r0, r1);
    else
        fill_kernels[j->dtype](j, r0, r1);
}

/* the job's inner loops on the pool, slices of at least ~32768 elements */
static void fill_run(const fill_job *j)
{
    pg_parallel_range(j->p->outer, 32768 / (j->p->inner ? j->p->inner : 1) + 1, fill_slice, (void *)j);
}

static int masked_fill_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *m = n->in[1], *y = n->out;
    pg_tensor *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    pg_bcast p;
    pg_bcast_plan(&p, x->ndim, x->shape, 2, (const pg_tensor *[]){x, m});
    fill_run(&(fill_job){&p, x->dtype, true, gx->data, y->grad->data, m->data, NULL});
    return 0;
}

/* mask's shape broadcasts to x's (x's shape is the result's) */
static bool mask_fits(pg_graph *g, const char *fn, const pg_tensor *x, const pg_tensor *m)
{
    bool ok = m->ndim <= x->ndim;
    for (int d = 0; ok && d < m->ndim; d++) {
        int64_t s = m->shape[d], t = x->shape[d + x->ndim - m->ndim];
        ok = s == 1 || s == t;
    }
    if (!ok)
        pg_graph_fail(g, "%s: mask %s does not broadcast to x %s", fn, SHAPE(m), SHAPE(x));
    return ok;
}

pg_tensor *pg_masked_fill(pg_graph *g, pg_tensor *x, pg_tensor *mask, double value)
{
    const char *fn = "pg_masked_fill";
    if (!arg_present(g, fn, "x", x) || !arg_bool(g, fn, "mask", mask) || !mask_fits(g, fn, x, mask))
        return NULL;
    union {
        float f32;
        double f64;
        int64_t i64;
        uint8_t b8;
    } v;
    switch (x->dtype) {
    case PG_F32: v.f32 = (float)value; break;
    case PG_F64: v.f64 = value; break;
    case PG_I64:
        /* the cast is defined only for values in range (2^63 = 9.223372036854775808e18) */
        if (!(value >= -9.223372036854775808e18 && value < 9.223372036854775808e18)) {
            pg_graph_fail(g, "%s: value %g does not fit x %s", fn, value, SHAPE(x));
            return NULL;
        }
        v.i64 = (int64_t)value;
        break;
    case PG_BOOL: v.b8 = value != 0; break;
    }
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    pg_bcast p;
    pg_bcast_plan(&p, x->ndim, x->shape, 2, (const pg_tensor *[]){x, mask});
    fill_run(&(fill_job){&p, x->dtype, false, y->data, x->data, mask->data, &v});
    if (pg_dtype_is_float(x->dtype))
        pg_op_record(g, fn, y, 2, (pg_tensor *[]){x, mask}, masked_fill_backward);
    return y;
}

/* ---- tril / triu over the last two dims ------------------------------------------------------
 * x: (batch, R, C). tril keeps entries with j - i <= k, triu those with
 * j - i >= k (torch.tril / torch.triu); the rest become 0. In row i the kept
 * columns are one range [lo, hi). */

typedef struct tri_geom {
    int64_t batch, rows, cols, k;
    bool lower;
} tri_geom;

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

static void kept_cols(const tri_geom *t, int64_t i, int64_t *lo, int64_t *hi)
{
    *lo = t->lower ? 0 : clamp64(i + t->k, 0, t->cols);
    *hi = t->lower ? clamp64(i + t->k + 1, 0, t->cols) : t->cols;
}

/* any dtype: zero bytes are 0, 0.0 and false */
static void tri_forward(const tri_geom *t, char *y, const char *x, size_t es)
{
    for (int64_t r = 0; r < t->batch * t->rows; r++) {
        int64_t lo, hi;
        kept_cols(t, r % t->rows, &lo, &hi);
        size_t row = (size_t)(r * t->cols) * es;
        memset(y + row, 0, (size_t)lo * es);
        memcpy(y + row + (size_t)lo * es, x + row + (size_t)lo * es, (size_t)(hi - lo) * es);
        memset(y + row + (size_t)hi * es, 0, (size_t)(t->cols - hi) * es);
    }
}

/* gx += gy on the kept entries */
#define DEFINE_TRI_BWD_T(T, sfx, unused)                                                                        \
    static void tri_bwd_##sfx(const tri_geom *t, T *restrict gx, const T *restrict gy)                          \
    {                                                                                                           \
        for (int64_t r = 0; r < t->batch * t->rows; r++) {                                                      \
            int64_t lo, hi;                                                                                     \
            kept_cols(t, r % t->rows, &lo, &hi);                                                                \
            T *gxr = gx + r * t->cols;                                                                          \
            const T *gyr = gy + r * t->cols;                                                                    \
            for (int64_t j = lo; j < hi; j++)                                                                   \
                gxr[j] += gyr[j];                                                                               \
        }                                                                                                       \
    }
FLOAT_TYPES(DEFINE_TRI_BWD_T, 0)

static tri_geom tri_geometry(const pg_tensor *x, int64_t k, bool lower)
{
    tri_geom t = {1, x->shape[x->ndim - 2], x->shape[x->ndim - 1], 0, lower};
    for (int d = 0; d < x->ndim - 2; d++)
        t.batch *= x->shape[d];
    /* beyond these bounds every k gives the same result; clamping avoids overflow */
    t.k = clamp64(k, -t.rows - 1, t.cols + 1);
    return t;
}

static int tri_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0];
    pg_tensor *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    tri_geom t = tri_geometry(x, n->ip[0], n->ip[1] != 0);
    if (x->dtype == PG_F32)
        tri_bwd_f32(&t, gx->data, n->out->grad->data);
    else
        tri_bwd_f64(&t, gx->data, n->out->grad->data);
    return 0;
}

static pg_tensor *tri(pg_graph *g, const char *fn, pg_tensor *x, int64_t k, bool lower)
{
    if (!arg_present(g, fn, "x", x))
        return NULL;
    if (x->ndim < 2) {
        pg_graph_fail(g, "%s: x must have at least 2 dims, got %s", fn, SHAPE(x));
        return NULL;
    }
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    tri_geom t = tri_geometry(x, k, lower);
    tri_forward(&t, y->data, x->data, pg_dtype_size(x->dtype));
    if (pg_dtype_is_float(x->dtype)) {
        pg_node *n = pg_op_record(g, fn, y, 1, &x, tri_backward);
        if (n) {
            n->ip[0] = t.k;
            n->ip[1] = lower;
        }
    }
    return y;
}

pg_tensor *pg_tril(pg_graph *g, pg_tensor *x, int64_t k) { return tri(g, "pg_tril", x, k, true); }
pg_tensor *pg_triu(pg_graph *g, pg_tensor *x, int64_t k) { return tri(g, "pg_triu", x, k, false); }
