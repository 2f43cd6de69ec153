/* pg_gather_lerp (autograd/ops.h): a row of values read at fractional positions by
 * linear interpolation, forward and backward side by side.
 *
 *   z (..., n), p (..., m), the same leading dims, every p in [0, n - 1]:
 *   out[..., j] = z[f] + w (z[c] - z[f]),  f = floor p_j, c = min(f + 1, n - 1), w = p_j - f
 *
 * (CoPE's interpolation of the position logits, docs/pos/cope.md (4), in one pass
 * instead of floor, two gathers and four elementwise ops.) Gradients, as that chain
 * of ops gives them (floor passes none):
 *   dz[f] += dout (1 - w),  dz[c] += dout w,  dp = dout (z[c] - z[f]).
 * At an integer p the upper index is f + 1, so dp is the right-hand slope
 * z[f + 1] - z[f]; at p = n - 1, c = f and dp = 0. Rows run on the thread pool:
 * a row's gradient touches only its own row of dz. */
#include "ops.h"

#include <math.h>

#include "op_util.h"

typedef struct lerp_job {
    pg_dtype dt;
    int64_t n, m;
    const void *z, *p, *dout;
    void *out, *dz, *dp;
    uint8_t *bad; /* forward: per row, 1 when a p of the row is outside [0, n - 1] or NaN (the row is skipped) */
} lerp_job;

#define DEFINE_LERP(T, sfx, FLOOR)                                                                                    \
    static bool lerp_row_ok_##sfx(const T *restrict p, int64_t n, int64_t m)                                   \
    {                                                                                                          \
        int64_t outside = 0;                                                                                   \
        for (int64_t j = 0; j < m; j++)                                                                        \
            outside += !(p[j] >= 0 && p[j] <= (T)(n - 1));                                                     \
        return outside == 0;                                                                                   \
    }                                                                                                          \
    static void lerp_fwd_##sfx(T *restrict out, const T *restrict z, const T *restrict p, int64_t n, int64_t m) \
    {                                                                                                          \
        for (int64_t j = 0; j < m; j++) {                                                                      \
            const T fl = FLOOR(p[j]);                                                                          \
            const int64_t f = (int64_t)fl, c = f + 1 < n ? f + 1 : f;                                          \
            out[j] = z[f] + (p[j] - fl) * (z[c] - z[f]);                                                       \
        }                                                                                                      \
    }                                                                                                          \
    static void lerp_bwd_##sfx(T *restrict dz, T *restrict dp, const T *restrict z, const T *restrict p,       \
                               const T *restrict dout, int64_t n, int64_t m)                                   \
    {                                                                                                          \
        /* dz[f] and dz[c] gather in registers while f stays (CoPE's p falls along a row) */                  \
        int64_t cur_f = -1, cur_c = -1;                                                                        \
        T acc_f = 0, acc_c = 0;                                                                                \
        for (int64_t j = 0; j < m; j++) {                                                                      \
            const T fl = FLOOR(p[j]), w = p[j] - fl, g = dout[j];                                              \
            const int64_t f = (int64_t)fl, c = f + 1 < n ? f + 1 : f;                                          \
            if (dz && f != cur_f) {                                                                            \
                if (cur_f >= 0)                                                                                \
                    dz[cur_f] += acc_f, dz[cur_c] += acc_c;                                                    \
                cur_f = f, cur_c = c, acc_f = 0, acc_c = 0;                                                    \
            }                                                                                                  \
            acc_f += g - w * g; /* dout to z[f], less (z[c] - z[f]) w's share */                               \
            acc_c += w * g;                                                                                    \
            if (dp)                                                                                            \
                dp[j] += g * (z[c] - z[f]);                                                                    \
        }                                                                                                      \
        if (dz && cur_f >= 0)                                                                                  \
            dz[cur_f] += acc_f, dz[cur_c] += acc_c;                                                            \
    }
DEFINE_LERP(float, f32, floorf)
DEFINE_LERP(double, f64, floor)

/* row r: forward when dout is NULL, else backward */
static void lerp_rows(void *ctx, int64_t r, int thread)
{
    (void)thread;
    const lerp_job *j = ctx;
    const int64_t n = j->n, m = j->m;
    size_t es = pg_dtype_size(j->dt);
#define AT(ptr, len) ((ptr) ? (void *)((char *)(ptr) + (size_t)(r * (len)) * es) : NULL)
    if (!j->dout) { /* forward: a row with a p outside [0, n - 1] is flagged, not read */
        bool ok = j->dt == PG_F32 ? lerp_row_ok_f32(AT(j->p, m), n, m) : lerp_row_ok_f64(AT(j->p, m), n, m);
        j->bad[r] = !ok;
        if (!ok)
            return;
    }
    if (j->dt == PG_F32) {
        if (!j->dout)
            lerp_fwd_f32(AT(j->out, m), AT(j->z, n), AT(j->p, m), n, m);
        else
            lerp_bwd_f32(AT(j->dz, n), AT(j->dp, m), AT(j->z, n), AT(j->p, m), AT(j->dout, m), n, m);
    } else {
        if (!j->dout)
            lerp_fwd_f64(AT(j->out, m), AT(j->z, n), AT(j->p, m), n, m);
        else
            lerp_bwd_f64(AT(j->dz, n), AT(j->dp, m), AT(j->z, n), AT(j->p, m), AT(j->dout, m), n, m);
    }
#undef AT
}

static void lerp_run(lerp_job *j, int64_t rows)
{
    op_parallel_for(rows, rows * j->m, 32768, lerp_rows, j);
}

static int lerp_backward(pg_graph *g, pg_node *node)
{
    pg_tensor *z = node->in[0], *p = node->in[1];
    pg_tensor *dz = z->requires_grad ? pg_grad_of(g, z) : NULL, *dp = p->requires_grad ? pg_grad_of(g, p) : NULL;
    if ((z->requires_grad && !dz) || (p->requires_grad && !dp))
        return -1;
    int64_t n = z->shape[z->ndim - 1], m = p->shape[p->ndim - 1];
    lerp_job j = {.dt = z->dtype, .n = n, .m = m, .z = z->data, .p = p->data, .dout = node->out->grad->data,
                  .dz = dz ? dz->data : NULL, .dp = dp ? dp->data : NULL};
    lerp_run(&j, p->numel / m);
    return 0;
}

/* the first element of p outside [0, n - 1] (or NaN) in the first flagged row, or -1 */
static int64_t first_outside(const pg_tensor *p, int64_t n, const uint8_t *bad, int64_t rows, int64_t m)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = r * m; bad[r] && i < (r + 1) * m; i++) {
            double v = pg_get(p, i);
            if (!(v >= 0 && v <= (double)(n - 1)))
                return i;
        }
    return -1;
}

pg_tensor *pg_gather_lerp(pg_graph *g, pg_tensor *z, pg_tensor *p)
{
    const char *fn = "pg_gather_lerp";
    if (!arg_float(g, fn, "z", z) || !arg_float(g, fn, "p", p))
        return NULL;
    bool ok = z->dtype == p->dtype && z->ndim == p->ndim && z->ndim >= 1 && z->shape[z->ndim - 1] >= 1;
    for (int d = 0; ok && d < z->ndim - 1; d++)
        ok = z->shape[d] == p->shape[d];
    if (!ok) {
        pg_graph_fail(g, "%s: z is %s, p is %s: expected z (..., n) and p (..., m) of one float dtype with the "
                         "same leading dims, n >= 1", fn, SHAPE(z), SHAPE(p));
        return NULL;
    }
    int64_t n = z->shape[z->ndim - 1], m = p->shape[p->ndim - 1], rows = m > 0 ? p->numel / m : 0;
    pg_tensor *out = pg_op_output(g, fn, z->dtype, p->ndim, p->shape);
    pg_tensor *bad = out ? pg_op_output(g, fn, PG_BOOL, 1, (int64_t[]){rows}) : NULL;
    if (!bad) {
        if (!g)
            pg_tensor_free(out);
        return NULL;
    }
    lerp_job j = {z->dtype, n, m, z->data, p->data, NULL, out->data, NULL, NULL, bad->data};
    if (rows > 0)
        lerp_run(&j, rows);
    int64_t at = first_outside(p, n, bad->data, rows, m);
    if (!g)
        pg_tensor_free(bad);
    if (at >= 0) {
        if (!g)
            pg_tensor_free(out);
        pg_graph_fail(g, "%s: p[%lld] = %g is outside [0, %lld] (z has %lld values per row)", fn, (long long)at,
                      pg_get(p, at), (long long)(n - 1), (long long)n);
        return NULL;
    }
    pg_op_record(g, fn, out, 2, (pg_tensor *[]){z, p}, lerp_backward);
    return out;
}
