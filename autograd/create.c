/* Creation in a graph, detach, custom ops. (The storage ops copy, cast and
 * reshape are ops: autograd/op_copy.c.) */
#include "graph.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static pg_arena *arena_of(pg_graph *g) { return g ? pg_graph_arena(g) : NULL; }

/* A new tensor in g (g NULL: the heap) filled with value, naming fn in errors. */
static pg_tensor *full(pg_graph *g, const char *fn, pg_dtype dtype, int ndim, const int64_t *shape, double value)
{
    pg_tensor *t = pg_op_output(g, fn, dtype, ndim, shape);
    if (t)
        pg_fill(t, value);
    return t;
}

pg_tensor *pg_empty(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape)
{
    return pg_op_output(g, "pg_empty", dtype, ndim, shape);
}

pg_tensor *pg_full(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, double value)
{
    return full(g, "pg_full", dtype, ndim, shape, value);
}

pg_tensor *pg_zeros(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape)
{
    return full(g, "pg_zeros", dtype, ndim, shape, 0.0);
}

pg_tensor *pg_ones(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape)
{
    return full(g, "pg_ones", dtype, ndim, shape, 1.0);
}

pg_tensor *pg_arange(pg_graph *g, pg_dtype dtype, double start, double end, double step)
{
    if (step == 0.0 || !isfinite(start) || !isfinite(end) || !isfinite(step) || (end - start) / step > 1e15) {
        pg_graph_fail(g, "pg_arange: bad range start %g, end %g, step %g", start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    int64_t n = count > 0 ? (int64_t)count : 0;
    pg_tensor *t = pg_op_output(g, "pg_arange", dtype, 1, &n);
    if (t)
        pg_fill_arange(t, start, step);
    return t;
}

pg_tensor *pg_linspace(pg_graph *g, pg_dtype dtype, double start, double end, int64_t n)
{
    pg_tensor *t = pg_op_output(g, "pg_linspace", dtype, 1, &n);
    if (t)
        pg_fill_linspace(t, start, end);
    return t;
}

pg_tensor *pg_from_array(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, const void *values)
{
    if (!values) {
        pg_graph_fail(g, "pg_from_array: values is NULL");
        return NULL;
    }
    pg_tensor *t = pg_op_output(g, "pg_from_array", dtype, ndim, shape);
    if (t)
        memcpy(t->data, values, (size_t)t->numel * pg_dtype_size(dtype));
    return t;
}

/* The random creators: a generator, then a tensor for it to fill. */
static pg_tensor *random_output(pg_graph *g, const char *fn, pg_dtype dtype, int ndim, const int64_t *shape,
                                const pg_rng *r)
{
    if (!r) {
        pg_graph_fail(g, "%s: generator is NULL", fn);
        return NULL;
    }
    return pg_op_output(g, fn, dtype, ndim, shape);
}

pg_tensor *pg_rand(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, pg_rng *r)
{
    pg_tensor *t = random_output(g, "pg_rand", dtype, ndim, shape, r);
    if (t)
        pg_fill_uniform(t, r, 0.0, 1.0);
    return t;
}

pg_tensor *pg_randn(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, pg_rng *r)
{
    pg_tensor *t = random_output(g, "pg_randn", dtype, ndim, shape, r);
    if (t)
        pg_fill_normal(t, r, 0.0, 1.0);
    return t;
}

pg_tensor *pg_bernoulli(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, double p, pg_rng *r)
{
    if (!(p >= 0.0 && p <= 1.0)) {
        pg_graph_fail(g, "pg_bernoulli: p = %g outside [0, 1]", p);
        return NULL;
    }
    pg_tensor *t = random_output(g, "pg_bernoulli", dtype, ndim, shape, r);
    if (t)
        pg_fill_bernoulli(t, r, p);
    return t;
}

/* ---- detach ------------------------------------------------------------------------ */

static bool check_input(pg_graph *g, const char *fn, const pg_tensor *x)
{
    if (!x)
        pg_graph_fail(g, "%s: input is NULL", fn);
    return x != NULL;
}

pg_tensor *pg_detach(pg_graph *g, pg_tensor *x)
{
    if (!check_input(g, "pg_detach", x))
        return NULL;
    pg_tensor *out = pg_tensor_view(arena_of(g), x, x->ndim, x->shape);
    if (!out) {
        pg_graph_fail(g, "pg_detach: %s", pg_last_error());
        return NULL;
    }
    out->graph = g;
    return out;
}

/* ---- custom ops -------------------------------------------------------------------- */

typedef struct custom_ctx {
    const pg_custom_op *op;
    void *user;
} custom_ctx;

/* the op's own message (pg_set_error inside fwd/bwd) after "name: custom forward failed" */
static void custom_fail(pg_graph *g, const char *name, const char *what)
{
    const char *own = pg_last_error();
    char why[384] = "";
    if (own && own[0])
        snprintf(why, sizeof why, ": %s", own);
    pg_graph_fail(g, "%s: custom %s failed%s", name, what, why);
}

static int custom_backward(pg_graph *g, pg_node *n)
{
    custom_ctx *c = n->ctx;
    pg_tensor **grads = pg_graph_alloc(g, (size_t)n->n_in * sizeof *grads);
    if (!grads)
        return -1;
    for (int i = 0; i < n->n_in; i++) {
        grads[i] = NULL;
        if (n->in[i] && n->in[i]->requires_grad) {
            /* a fresh zeroed buffer, added to the input's grad afterwards, so
             * the user's backward may write or add */
            grads[i] = pg_tensor_full(pg_graph_arena(g), n->in[i]->dtype, n->in[i]->ndim, n->in[i]->shape, 0.0);
            if (!grads[i]) {
                pg_graph_fail(g, "%s: out of memory in backward", c->op->name);
                return -1;
            }
        }
    }
    pg_clear_error();
    if (c->op->backward(grads, n->out->grad, n->out, n->in, n->n_in, c->user) != 0) {
        custom_fail(g, c->op->name, "backward");
        return -1;
    }
    for (int i = 0; i < n->n_in; i++)
        if (grads[i] && pg_grad_accumulate(g, n->in[i], grads[i]) != 0)
            return -1;
    return 0;
}

static bool check_custom(pg_graph *g, const pg_custom_op *op, int n_in, pg_tensor *const *in, pg_dtype *dtype)
{
    if (!op || !op->forward || !op->backward || !op->name) {
        pg_graph_fail(g, "pg_custom: op must have a name, forward and backward");
        return false;
    }
    if (n_in < 1 || !in) {
        pg_graph_fail(g, "%s: needs at least one input, got %d", op->name, n_in);
        return false;
    }
    *dtype = PG_F64;
    bool found = false;
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) {
            pg_graph_fail(g, "%s: input %d is NULL", op->name, i);
            return false;
        }
        if (pg_dtype_is_float(in[i]->dtype)) {
            if (found && in[i]->dtype != *dtype) {
                pg_graph_fail(g, "%s: float inputs mix f32 and f64", op->name);
                return false;
            }
            *dtype = in[i]->dtype;
            found = true;
        }
    }
    if (!found) {
        pg_graph_fail(g, "%s: needs a float input", op->name);
        return false;
    }
    unsigned bit = *dtype == PG_F32 ? PG_CUSTOM_F32 : PG_CUSTOM_F64;
    if (op->dtypes && !(op->dtypes & bit)) {
        pg_graph_fail(g, "%s: the inputs are %s; the op handles only %s (pg_custom_op.dtypes)", op->name,
                      pg_dtype_name(*dtype), op->dtypes & PG_CUSTOM_F64 ? "f64" : "f32");
        return false;
    }
    return true;
}


pg_tensor *pg_custom(pg_graph *g, const pg_custom_op *op, int n_in, pg_tensor *const *in, int out_ndim,
                     const int64_t *out_shape, const void *ctx, size_t ctx_size)
{
    pg_dtype dtype;
    if (!check_custom(g, op, n_in, in, &dtype))
        return NULL;
    pg_tensor *out = pg_op_output(g, op->name, dtype, out_ndim, out_shape);
    if (!out)
        return NULL;
    void *user = NULL;
    if (ctx && ctx_size) {
        user = g ? pg_graph_alloc(g, ctx_size) : NULL;
        if (user)
            memcpy(user, ctx, ctx_size);
        else
            user = (void *)ctx; /* no graph: only forward runs, ctx is still alive */
    }
    pg_clear_error();
    if (op->forward(out, in, n_in, user) != 0) {
        custom_fail(g, op->name, "forward");
        pg_tensor_free(out);
        return NULL;
    }
    pg_node *n = pg_op_record(g, op->name, out, n_in, in, custom_backward);
    if (n) {
        custom_ctx *c = pg_graph_alloc(g, sizeof *c);
        if (!c)
            return NULL;
        c->op = op;
        c->user = user;
        n->ctx = c;
    }
    return out;
}
