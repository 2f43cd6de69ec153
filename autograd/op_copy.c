/* The storage ops copy, cast and reshape: the output holds x's values (cast,
 * or viewed in another shape) and the gradient is the identity. */
#include "op_util.h"

#include <string.h>

/* d(out)/d(x) is the identity (up to dtype and shape): add grad_out into x's grad. */
static int identity_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0];
    bool fresh;
    pg_tensor *gx = pg_grad_fresh(g, x, &fresh);
    if (!x->requires_grad)
        return 0;
    if (!gx)
        return -1;
    const pg_tensor *go = n->out->grad;
    size_t bytes = (size_t)gx->numel * pg_dtype_size(gx->dtype);
    if (fresh && go->dtype == gx->dtype) { /* the first contribution: a copy, not an add to zeros */
        op_copy_parallel(gx->data, go->data, bytes);
        return 0;
    }
    if (fresh)
        memset(gx->data, 0, bytes);
    if (go->dtype == PG_F64 && gx->dtype == PG_F64) {
        double *d = gx->data;
        const double *s = go->data;
        for (int64_t i = 0; i < gx->numel; i++)
            d[i] += s[i];
    } else if (go->dtype == PG_F32 && gx->dtype == PG_F32) {
        float *d = gx->data;
        const float *s = go->data;
        for (int64_t i = 0; i < gx->numel; i++)
            d[i] += s[i];
    } else {
        for (int64_t i = 0; i < gx->numel; i++)
            pg_set(gx, i, pg_get(gx, i) + pg_get(go, i));
    }
    return 0;
}

pg_tensor *pg_cast(pg_graph *g, pg_tensor *x, pg_dtype dtype)
{
    if (!arg_present(g, "pg_cast", "input", x))
        return NULL;
    if ((unsigned)dtype > PG_BOOL) {
        pg_graph_fail(g, "pg_cast: unknown dtype %d", (int)dtype);
        return NULL;
    }
    pg_tensor *out = pg_op_output(g, "pg_cast", dtype, x->ndim, x->shape);
    if (!out)
        return NULL;
    pg_copy_into(out, x);
    if (pg_dtype_is_float(dtype) && pg_dtype_is_float(x->dtype))
        pg_op_record(g, "pg_cast", out, 1, &x, identity_backward);
    return out;
}

pg_tensor *pg_copy(pg_graph *g, pg_tensor *x)
{
    return x ? pg_cast(g, x, x->dtype) : (arg_present(g, "pg_copy", "input", x), NULL);
}

pg_tensor *pg_reshape(pg_graph *g, pg_tensor *x, int ndim, const int64_t *shape)
{
    if (!arg_present(g, "pg_reshape", "input", x))
        return NULL;
    int64_t s[PG_MAX_DIMS];
    if (ndim < 0 || ndim > PG_MAX_DIMS || (ndim && !shape)) {
        pg_graph_fail(g, "pg_reshape: bad ndim %d", ndim);
        return NULL;
    }
    /* one entry may be -1: inferred from the others */
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0)
            infer = i;
        else if (s[i] >= 0) /* saturates: a product past int64 matches no tensor (pg_tensor_view says so) */
            known = s[i] && known > INT64_MAX / s[i] ? INT64_MAX : known * s[i];
        else {
            pg_graph_fail(g, "pg_reshape: bad size %lld in dim %d", (long long)s[i], i);
            return NULL;
        }
    }
    if (infer >= 0)
        s[infer] = known ? x->numel / known : 0;
    pg_tensor *out = pg_tensor_view(g ? pg_graph_arena(g) : NULL, x, ndim, s);
    if (!out) {
        char a[128];
        pg_graph_fail(g, "pg_reshape: cannot reshape %s to %d dims: %s", pg_shape_str(a, sizeof a, x), ndim,
                      pg_last_error());
        return NULL;
    }
    out->graph = g;
    pg_op_record(g, "pg_reshape", out, 1, &x, identity_backward);
    return out;
}
