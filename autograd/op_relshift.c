/* pg_rel_shift: the relative-to-absolute shift of Transformer-XL's position
 * term, forward and backward side by side.
 *
 * x (..., Lq, N) holds, for query a, scores against the N = Lq + Lk - 1
 * distances d = t - (Lk - 1), t = 0 .. N - 1 (Lk - 1 back to Lq - 1 ahead);
 * y (..., Lq, Lk) puts each at its key, distance a - b:
 *   y[..., a, b] = x[..., a, a - b + Lk - 1]
 * so row a of y is x's row a read backwards from column a + Lk - 1 down to a.
 * Backward: dx[..., a, a - b + Lk - 1] += dy[..., a, b] (each x entry is read
 * at most once per row, so no two b meet). Rows run on the thread pool. It
 * replaces a pg_gather with an index tensor as large as y. */
#include "op_util.h"

#include "../tensor/threadpool.h"

typedef struct shift_job {
    bool f32, backward;
    int64_t Lq, Lk, N;
    void *dst;
    const void *src;
} shift_job;

#define DEFINE_SHIFT(T, sfx)                                                                                   \
    /* rows [r0, r1) of the (rows, Lq) view; row r is query a = r % Lq */                                     \
    static void shift_rows_##sfx(const shift_job *j, int64_t r0, int64_t r1)                                   \
    {                                                                                                          \
        for (int64_t r = r0; r < r1; r++) {                                                                    \
            const int64_t a = r % j->Lq;                                                                       \
            if (!j->backward) {                                                                                \
                T *restrict y = (T *)j->dst + r * j->Lk;                                                       \
                const T *restrict x = (const T *)j->src + r * j->N + a + j->Lk - 1;                            \
                for (int64_t b = 0; b < j->Lk; b++)                                                            \
                    y[b] = x[-b];                                                                              \
            } else {                                                                                           \
                T *restrict gx = (T *)j->dst + r * j->N + a + j->Lk - 1;                                       \
                const T *restrict gy = (const T *)j->src + r * j->Lk;                                          \
                for (int64_t b = 0; b < j->Lk; b++)                                                            \
                    gx[-b] += gy[b];                                                                           \
            }                                                                                                  \
        }                                                                                                      \
    }
DEFINE_SHIFT(float, f32)
DEFINE_SHIFT(double, f64)

static void shift_slice(void *ctx, int64_t r0, int64_t r1)
{
    const shift_job *j = ctx;
    if (j->f32)
        shift_rows_f32(j, r0, r1);
    else
        shift_rows_f64(j, r0, r1);
}

static void shift_run(shift_job *j, int64_t rows)
{
    int64_t grain = 32768 / (j->Lk > 0 ? j->Lk : 1);
    pg_parallel_range(rows, grain > 0 ? grain : 1, shift_slice, j);
}

static int rel_shift_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *y = n->out;
    pg_tensor *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    int64_t Lq = y->shape[y->ndim - 2], Lk = y->shape[y->ndim - 1];
    shift_job j = {x->dtype == PG_F32, true, Lq, Lk, x->shape[x->ndim - 1], gx->data, y->grad->data};
    shift_run(&j, Lq ? y->numel / Lk : 0);
    return 0;
}

pg_tensor *pg_rel_shift(pg_graph *g, pg_tensor *x, int64_t Lk)
{
    const char *fn = "pg_rel_shift";
    if (!arg_float(g, fn, "x", x))
        return NULL;
    int nd = x->ndim;
    int64_t Lq = nd >= 2 ? x->shape[nd - 2] : 0;
    /* N = Lq + Lk - 1 checked as Lk = N - Lq + 1: Lk may be anything, even INT64_MAX */
    if (nd < 2 || Lk < 1 || Lq < 1 || Lk != x->shape[nd - 1] - Lq + 1) {
        pg_graph_fail(g, "%s: expected x (..., Lq, Lq + Lk - 1) with Lq, Lk >= 1, got x %s and Lk %lld", fn,
                      SHAPE(x), (long long)Lk);
        return NULL;
    }
    int64_t shape[PG_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        shape[d] = x->shape[d];
    shape[nd - 1] = Lk;
    pg_tensor *y = pg_op_output(g, fn, x->dtype, nd, shape);
    if (!y)
        return NULL;
    shift_job j = {x->dtype == PG_F32, false, Lq, Lk, x->shape[nd - 1], y->data, x->data};
    shift_run(&j, y->numel / Lk);
    pg_op_record(g, fn, y, 1, &x, rel_shift_backward);
    return y;
}
