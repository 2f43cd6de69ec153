/* NumPy broadcasting plans (see broadcast.h). */
#include "broadcast.h"

#include <stdio.h>
#include <string.h>

bool pg_bcast_shape(const char *fn, int n, const pg_tensor *const *ts, int *ndim, int64_t *shape)
{
    int nd = 0;
    for (int k = 0; k < n; k++)
        nd = ts[k]->ndim > nd ? ts[k]->ndim : nd;
    for (int d = 0; d < nd; d++) {
        int64_t size = 1;
        for (int k = 0; k < n; k++) {
            int kd = d - (nd - ts[k]->ndim);
            int64_t s = kd >= 0 ? ts[k]->shape[kd] : 1;
            if (s == 1)
                continue;
            if (size != 1 && s != size) {
                char msg[400] = "";
                size_t len = 0;
                for (int j = 0; j < n && len < sizeof msg; j++) {
                    char buf[96];
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", j ? ", " : "",
                                            pg_shape_str(buf, sizeof buf, ts[j]));
                }
                pg_set_error("%s: shapes do not broadcast: %s", fn, msg);
                return false;
            }
            size = s;
        }
        shape[d] = size;
    }
    *ndim = nd;
    return true;
}

void pg_bcast_plan(pg_bcast *p, int ndim, const int64_t *shape, int n, const pg_tensor *const *ts)
{
    int64_t st[PG_BCAST_MAX][PG_MAX_DIMS];
    for (int k = 0; k < n; k++) {
        int64_t s = 1;
        for (int d = ndim - 1; d >= 0; d--) {
            int kd = d - (ndim - ts[k]->ndim);
            int64_t size = kd >= 0 ? ts[k]->shape[kd] : 1;
            st[k][d] = size == 1 ? 0 : s;
            s *= size;
        }
    }
    /* drop size-1 dims and merge dims contiguous for every operand */
    p->n = n;
    p->ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1)
            continue;
        int m = p->ndim;
        bool merge = m > 0;
        for (int k = 0; k < n && merge; k++)
            merge = p->stride[k][m - 1] == st[k][d] * shape[d];
        if (merge) {
            p->shape[m - 1] *= shape[d];
            for (int k = 0; k < n; k++)
                p->stride[k][m - 1] = st[k][d];
        } else {
            p->shape[m] = shape[d];
            for (int k = 0; k < n; k++)
                p->stride[k][m] = st[k][d];
            p->ndim++;
        }
    }
    if (p->ndim == 0) { /* a scalar or all size-1 dims */
        p->shape[0] = 1;
        for (int k = 0; k < n; k++)
            p->stride[k][0] = 0;
        p->ndim = 1;
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) { /* empty: no iteration */
            p->inner = 0;
            p->outer = 0;
            for (int k = 0; k < n; k++)
                p->istride[k] = 0;
            return;
        }
    p->inner = p->shape[p->ndim - 1];
    for (int k = 0; k < n; k++)
        p->istride[k] = p->stride[k][p->ndim - 1];
    p->outer = 1;
    for (int d = 0; d < p->ndim - 1; d++)
        p->outer *= p->shape[d];
}

void pg_bcast_next(const pg_bcast *p, int64_t *idx, int64_t *off)
{
    for (int d = p->ndim - 2; d >= 0; d--) {
        idx[d]++;
        for (int k = 0; k < p->n; k++)
            off[k] += p->stride[k][d];
        if (idx[d] < p->shape[d])
            return;
        for (int k = 0; k < p->n; k++)
            off[k] -= p->stride[k][d] * p->shape[d];
        idx[d] = 0;
    }
}

void pg_bcast_seek(const pg_bcast *p, int64_t r, int64_t *idx, int64_t *off)
{
    for (int k = 0; k < p->n; k++)
        off[k] = 0;
    for (int d = 0; d < p->ndim - 1; d++)
        idx[d] = 0;
    for (int d = p->ndim - 2; d >= 0 && r > 0; d--) { /* r > 0: no dim is empty */
        idx[d] = r % p->shape[d];
        r /= p->shape[d];
        for (int k = 0; k < p->n; k++)
            off[k] += idx[d] * p->stride[k][d];
    }
}

#define SUM_TO(T)                                                                                  \
    do {                                                                                           \
        T *d = dst->data;                                                                          \
        const T *s = src->data;                                                                    \
        for (int64_t r = 0; r < p.outer; r++, pg_bcast_next(&p, idx, off)) {                       \
            if (p.istride[1] == 0) {                                                               \
                T acc = 0;                                                                         \
                for (int64_t i = 0; i < p.inner; i++)                                              \
                    acc += s[off[0] + i * p.istride[0]];                                           \
                d[off[1]] += acc;                                                                  \
            } else {                                                                               \
                for (int64_t i = 0; i < p.inner; i++)                                              \
                    d[off[1] + i * p.istride[1]] += s[off[0] + i * p.istride[0]];                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

void pg_sum_to_accumulate(pg_tensor *dst, const pg_tensor *src)
{
    pg_bcast p;
    int64_t idx[PG_MAX_DIMS] = {0}, off[PG_BCAST_MAX] = {0};
    pg_bcast_plan(&p, src->ndim, src->shape, 2, (const pg_tensor *[]){src, dst});
    if (dst->dtype == PG_F32)
        SUM_TO(float);
    else
        SUM_TO(double);
}
