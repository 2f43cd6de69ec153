/* Binary elementwise ops with NumPy broadcasting, forward and backward side by
 * side. Each op is one row of BINARY_OPS: y = f(a, b), dy/da and dy/db in
 * terms of a, b and y. The backward walks the broadcast plan with each
 * input's own strides, so a broadcast input's gradient sums up in place. */
#include "op_util.h"

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

/* Loops over the plan of (out, a, b) with offsets off[0..2]; BODY sees the
 * element indices io, ia, ib. */
#define PLAN_LOOP(p, ...)                                                                                      \
    do {                                                                                                       \
        int64_t idx_[PG_MAX_DIMS] = {0}, off[PG_BCAST_MAX] = {0};                                              \
        bool unit_ = (p).istride[0] == 1 && (p).istride[1] == 1 && (p).istride[2] == 1;                        \
        for (int64_t r_ = 0; r_ < (p).outer; r_++, pg_bcast_next(&(p), idx_, off)) {                           \
            if (unit_) { /* the common case, a loop the compiler vectorises */                                 \
                for (int64_t i_ = 0; i_ < (p).inner; i_++) {                                                   \
                    int64_t io = off[0] + i_, ia = off[1] + i_, ib = off[2] + i_;                              \
                    __VA_ARGS__;                                                                               \
                }                                                                                              \
            } else {                                                                                           \
                for (int64_t i_ = 0; i_ < (p).inner; i_++) {                                                   \
                    int64_t io = off[0] + i_ * (p).istride[0];                                                 \
                    int64_t ia = off[1] + i_ * (p).istride[1];                                                 \
                    int64_t ib = off[2] + i_ * (p).istride[2];                                                 \
                    __VA_ARGS__;                                                                               \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

#define DEFINE_BINARY(name, fwd, da, db)                                                                       \
    DEFINE_BINARY_T(name, fwd, da, db, float, f32)                                                             \
    DEFINE_BINARY_T(name, fwd, da, db, double, f64)

#define DEFINE_BINARY_T(name, fwd, da, db, TY, sfx)                                                            \
    static void name##_fwd_##sfx(const pg_bcast *p, TY *ys, const TY *as, const TY *bs)                        \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        PLAN_LOOP(*p, {                                                                                        \
            T a = as[ia], b = bs[ib];                                                                          \
            ys[io] = fwd;                                                                                      \
        });                                                                                                    \
    }                                                                                                          \
    /* ga, gb may be NULL; they have the inputs' (broadcast) strides */                                        \
    static void name##_bwd_##sfx(const pg_bcast *p, TY *ga, TY *gb, const TY *gy, const TY *ys, const TY *as,  \
                                 const TY *bs)                                                                 \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        PLAN_LOOP(*p, {                                                                                        \
            T a = as[ia], b = bs[ib], y = ys[io];                                                              \
            (void)y, (void)a, (void)b;                                                                         \
            if (ga)                                                                                            \
                ga[ia] += gy[io] * (da);                                                                       \
            if (gb)                                                                                            \
                gb[ib] += gy[io] * (db);                                                                       \
        });                                                                                                    \
    }

BINARY_OPS(DEFINE_BINARY)

typedef struct binary_kind {
    const char *name;
    void (*f32)(const pg_bcast *, float *, const float *, const float *);
    void (*f64)(const pg_bcast *, double *, const double *, const double *);
    void (*b32)(const pg_bcast *, float *, float *, const float *, const float *, const float *, const float *);
    void (*b64)(const pg_bcast *, double *, double *, const double *, const double *, const double *,
                const double *);
} binary_kind;

#define DEFINE_KIND(name, fwd, da, db)                                                                         \
    static const binary_kind name##_kind = {"pg_" #name, name##_fwd_f32, name##_fwd_f64, name##_bwd_f32,       \
                                            name##_bwd_f64};
BINARY_OPS(DEFINE_KIND)

static int binary_backward(pg_graph *g, pg_node *n)
{
    const binary_kind *k = n->ctx;
    pg_tensor *a = n->in[0], *b = n->in[1], *y = n->out;
    pg_tensor *ga = pg_grad_of(g, a), *gb = pg_grad_of(g, b);
    if ((a->requires_grad && !ga) || (b->requires_grad && !gb))
        return -1;
    pg_bcast p;
    pg_bcast_plan(&p, y->ndim, y->shape, 3, (const pg_tensor *[]){y, a, b});
    void *da = ga ? ga->data : NULL, *db = gb ? gb->data : NULL;
    if (y->dtype == PG_F32)
        k->b32(&p, da, db, y->grad->data, y->data, a->data, b->data);
    else
        k->b64(&p, da, db, y->grad->data, y->data, a->data, b->data);
    return 0;
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
    pg_bcast p;
    pg_bcast_plan(&p, ndim, shape, 3, (const pg_tensor *[]){y, a, b});
    if (y->dtype == PG_F32)
        k->f32(&p, y->data, a->data, b->data);
    else
        k->f64(&p, y->data, a->data, b->data);
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
    size_t es = pg_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = y->data;
    int64_t idx[PG_MAX_DIMS] = {0}, off[PG_BCAST_MAX] = {0};
    for (int64_t r = 0; r < p.outer; r++, pg_bcast_next(&p, idx, off))
        for (int64_t i = 0; i < p.inner; i++)
            memcpy(dst + (size_t)(off[0] + i * p.istride[0]) * es, src + (size_t)(off[1] + i * p.istride[1]) * es,
                   es);
    if (pg_dtype_is_float(x->dtype))
        pg_op_record(g, fn, y, 1, &x, broadcast_to_backward);
    return y;
}
