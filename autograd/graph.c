/* The graph: arena, tape, errors, grad mode, recording and backward. */
#include "graph.h"

#include "../tensor/broadcast.h"
#include "op_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pg_graph {
    pg_arena *arena;
    pg_node **tape; /* heap array, kept across resets */
    int n_nodes, cap_nodes;
    int no_grad_depth;
    bool has_error;
    char error[512];
};

/* ---- lifetime -------------------------------------------------------------- */

pg_graph *pg_graph_new(void)
{
    pg_graph *g = calloc(1, sizeof *g);
    if (!g) {
        pg_set_error("pg_graph_new: out of memory");
        return NULL;
    }
    g->arena = pg_arena_new(0);
    if (!g->arena) {
        free(g);
        pg_set_error("pg_graph_new: out of memory");
        return NULL;
    }
    return g;
}

void pg_graph_free(pg_graph *g)
{
    if (!g)
        return;
    pg_arena_free(g->arena);
    free(g->tape);
    free(g);
}

void pg_graph_reset(pg_graph *g)
{
    if (!g) {
        pg_set_error("pg_graph_reset: graph is NULL");
        return;
    }
    pg_arena_reset(g->arena);
    g->n_nodes = 0;
    g->has_error = false;
    g->error[0] = '\0';
}

pg_arena *pg_graph_arena(pg_graph *g) { return g ? g->arena : NULL; }
int pg_graph_num_nodes(const pg_graph *g) { return g ? g->n_nodes : 0; }
const pg_node *pg_graph_node(const pg_graph *g, int i)
{
    return g && i >= 0 && i < g->n_nodes ? g->tape[i] : NULL;
}

void *pg_graph_alloc(pg_graph *g, size_t bytes)
{
    if (!g) {
        pg_set_error("pg_graph_alloc: graph is NULL");
        return NULL;
    }
    void *p = pg_arena_alloc(g->arena, bytes);
    if (!p)
        pg_graph_fail(g, "pg_graph_alloc: out of memory for %zu bytes", bytes);
    return p;
}

/* ---- errors ------------------------------------------------------------------ */

const char *pg_graph_error(const pg_graph *g) { return g && g->has_error ? g->error : NULL; }

void pg_graph_fail(pg_graph *g, const char *fmt, ...)
{
    char msg[512] = "pg_graph_fail: fmt is NULL";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    pg_set_error("%s", msg);
    if (g && !g->has_error) {
        memcpy(g->error, msg, sizeof msg);
        g->has_error = true;
    }
}

/* ---- grad mode --------------------------------------------------------------- */

void pg_no_grad_begin(pg_graph *g)
{
    if (g)
        g->no_grad_depth++;
}

void pg_no_grad_end(pg_graph *g)
{
    if (g && g->no_grad_depth > 0)
        g->no_grad_depth--;
}

bool pg_grad_enabled(const pg_graph *g) { return g && g->no_grad_depth == 0; }

void pg_set_requires_grad(pg_tensor *t, bool on)
{
    if (!t)
        pg_set_error("pg_set_requires_grad: tensor is NULL");
    else
        t->requires_grad = on;
}

void pg_zero_grad(pg_tensor *t)
{
    if (!t)
        pg_set_error("pg_zero_grad: tensor is NULL");
    else if (t->grad)
        memset(t->grad->data, 0, (size_t)t->grad->numel * pg_dtype_size(t->grad->dtype));
}

/* ---- recording ------------------------------------------------------------------- */

pg_tensor *pg_op_output(pg_graph *g, const char *fn, pg_dtype dtype, int ndim, const int64_t *shape)
{
    pg_tensor *t = fn ? pg_tensor_alloc(g ? g->arena : NULL, fn, dtype, ndim, shape) : NULL;
    if (!t) {
        pg_graph_fail(g, "%s", fn ? pg_last_error() : "pg_op_output: fn is NULL");
        return NULL;
    }
    t->graph = g;
    return t;
}

bool pg_op_needs_grad(const pg_graph *g, int n_in, pg_tensor *const *in)
{
    if (!in && n_in > 0) {
        pg_set_error("pg_op_needs_grad: in is NULL for %d inputs", n_in);
        return false;
    }
    if (!pg_grad_enabled(g))
        return false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad)
            return true;
    return false;
}

static bool tape_push(pg_graph *g, pg_node *n)
{
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? 2 * g->cap_nodes : 256;
        pg_node **t = realloc(g->tape, (size_t)cap * sizeof *t);
        if (!t)
            return false;
        g->tape = t;
        g->cap_nodes = cap;
    }
    g->tape[g->n_nodes++] = n;
    return true;
}

pg_node *pg_op_record(pg_graph *g, const char *fn, pg_tensor *out, int n_in, pg_tensor *const *in,
                      pg_backward_fn backward)
{
    const char *null = !fn ? "fn" : !out ? "out" : !in && n_in > 0 ? "in" : !backward ? "backward" : NULL;
    if (null || n_in < 0) {
        pg_graph_fail(g, "pg_op_record: %s%s", null ? null : "n_in < 0", null ? " is NULL" : "");
        return NULL;
    }
    if (!pg_op_needs_grad(g, n_in, in))
        return NULL;
    pg_node *n = pg_arena_alloc(g->arena, sizeof *n);
    pg_tensor **ins = pg_arena_alloc(g->arena, (size_t)(n_in ? n_in : 1) * sizeof *ins);
    if (!n || !ins || !tape_push(g, n)) {
        pg_graph_fail(g, "%s: out of memory recording the op", fn);
        return NULL;
    }
    memset(n, 0, sizeof *n);
    memcpy(ins, in, (size_t)n_in * sizeof *ins);
    n->name = fn;
    n->backward = backward;
    n->out = out;
    n->n_in = n_in;
    n->in = ins;
    out->node = n;
    out->requires_grad = true;
    return n;
}

/* ---- gradients ------------------------------------------------------------------- */

/* x's gradient lives where x does: an arena tensor's in g's arena. */
static bool grad_home_ok(const char *fn, const pg_graph *g, const pg_tensor *x)
{
    if (x->in_arena && !g)
        pg_set_error("%s: x lives in a graph's arena but g is NULL", fn);
    return g || !x->in_arena;
}

pg_tensor *pg_grad_fresh(pg_graph *g, pg_tensor *x, bool *fresh)
{
    if (!fresh) {
        pg_graph_fail(g, "pg_grad_fresh: fresh is NULL");
        return NULL;
    }
    *fresh = false;
    if (!x || !x->requires_grad || !grad_home_ok("pg_grad_fresh", g, x))
        return NULL;
    if (!x->grad) {
        pg_tensor *gr = pg_tensor_empty(x->in_arena ? g->arena : NULL, x->dtype, x->ndim, x->shape);
        if (!gr) {
            pg_graph_fail(g, "backward: out of memory for a gradient");
            return NULL;
        }
        x->grad = gr;
        *fresh = true;
    }
    return x->grad;
}

pg_tensor *pg_grad_of(pg_graph *g, pg_tensor *x)
{
    if (!x || !x->requires_grad || !grad_home_ok("pg_grad_of", g, x))
        return NULL;
    if (!x->grad) {
        pg_tensor *gr = pg_tensor_full(x->in_arena ? g->arena : NULL, x->dtype, x->ndim, x->shape, 0.0);
        if (!gr) {
            pg_graph_fail(g, "backward: out of memory for a gradient");
            return NULL;
        }
        x->grad = gr;
    }
    return x->grad;
}

int pg_grad_accumulate(pg_graph *g, pg_tensor *x, const pg_tensor *delta)
{
    if (!delta) {
        pg_graph_fail(g, "pg_grad_accumulate: delta is NULL");
        return -1;
    }
    if (!x || !x->requires_grad)
        return 0;
    bool fresh;
    pg_tensor *gr = pg_grad_fresh(g, x, &fresh);
    if (!gr)
        return -1;
    if (delta->dtype != gr->dtype) {
        if (fresh) /* a gradient is never left unwritten */
            memset(gr->data, 0, (size_t)gr->numel * pg_dtype_size(gr->dtype));
        pg_graph_fail(g, "backward: gradient dtype %s for a %s tensor", pg_dtype_name(delta->dtype),
                      pg_dtype_name(gr->dtype));
        return -1;
    }
    if (fresh && delta->numel == gr->numel) /* same shape: the first contribution is a copy */
        op_copy_parallel(gr->data, delta->data, (size_t)gr->numel * pg_dtype_size(gr->dtype));
    else {
        if (fresh)
            pg_fill(gr, 0.0);
        pg_sum_to_accumulate(gr, delta);
    }
    return 0;
}

/* ---- backward -------------------------------------------------------------------- */

/* An input given to an op in two roles (pg_mul(g, x, x), attention with q = k) has one
 * gradient buffer. Made zeroed before the op's backward runs, every role adds to it: a rule
 * that assigns a fresh gradient piece by piece (pg_grad_fresh) would otherwise let one
 * role's assignments wipe what the other had added (tests/test_shared_roles.c). */
static int zero_shared_inputs(pg_graph *g, const pg_node *n)
{
    for (int i = 0; i < n->n_in; i++) {
        pg_tensor *x = n->in[i];
        for (int k = i + 1; x && x->requires_grad && !x->grad && k < n->n_in; k++)
            if (n->in[k] == x && !pg_grad_of(g, x))
                return -1;
    }
    return 0;
}

static int run_tape(pg_graph *g)
{
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        pg_node *n = g->tape[i];
        if (!n->out->grad)
            continue; /* no gradient reached this op */
        if (zero_shared_inputs(g, n) != 0 || n->backward(g, n) != 0) {
            if (!g->has_error)
                pg_graph_fail(g, "pg_backward: backward of %s failed", n->name);
            return -1;
        }
    }
    return 0;
}

/* true when `out` was made in g: an op output recorded on g's tape (since its
 * last reset), or a leaf that lives on the heap or in g's arena. */
static bool made_in(const pg_graph *g, const pg_tensor *out)
{
    if (out->graph && out->graph != g)
        return false;
    if (!out->node)
        return true;
    for (int i = g->n_nodes - 1; i >= 0; i--)
        if (g->tape[i] == out->node)
            return true;
    return false;
}

/* What pg_backward and pg_backward_with check of the output before anything
 * is allocated or computed, naming fn. */
static bool backward_output_ok(pg_graph *g, const char *fn, const pg_tensor *out)
{
    char a[128];
    if (!out->requires_grad) {
        pg_graph_fail(g, "%s: output %s does not require grad", fn, pg_shape_str(a, sizeof a, out));
        return false;
    }
    if (!made_in(g, out)) {
        pg_graph_fail(g, "%s: output %s was not recorded on this graph (it belongs to another graph, or to this "
                      "one before its last reset): call backward on the graph that made it",
                      fn, pg_shape_str(a, sizeof a, out));
        return false;
    }
    return true;
}

/* Seeds out's gradient with grad_out and runs the tape. */
static int backward_run(pg_graph *g, pg_tensor *out, const pg_tensor *grad_out)
{
    /* gradients of the graph's own op outputs start from zero on each backward;
     * leaves keep theirs, so a second backward adds to them (graph.h) */
    for (int i = 0; i < g->n_nodes; i++)
        g->tape[i]->out->grad = NULL;
    if (pg_grad_accumulate(g, out, grad_out) != 0)
        return -1;
    return run_tape(g);
}

int pg_backward_with(pg_graph *g, pg_tensor *out, const pg_tensor *grad_out)
{
    const char *fn = "pg_backward_with";
    char a[128], b[128];
    if (!g || !out || !grad_out) {
        pg_graph_fail(g, "%s: %s is NULL", fn, !g ? "graph" : !out ? "output" : "upstream gradient");
        return -1;
    }
    if (!backward_output_ok(g, fn, out))
        return -1;
    if (!pg_same_shape(out, grad_out) || grad_out->dtype != out->dtype) {
        pg_graph_fail(g, "%s: upstream gradient %s does not match output %s", fn,
                      pg_shape_str(a, sizeof a, grad_out), pg_shape_str(b, sizeof b, out));
        return -1;
    }
    return backward_run(g, out, grad_out);
}

int pg_backward(pg_graph *g, pg_tensor *loss)
{
    const char *fn = "pg_backward";
    char a[128];
    if (!g || !loss) {
        pg_graph_fail(g, "%s: %s is NULL", fn, g ? "loss" : "graph");
        return -1;
    }
    if (loss->numel != 1 || !pg_dtype_is_float(loss->dtype)) {
        pg_graph_fail(g, "%s: loss must be one float element, got %s", fn, pg_shape_str(a, sizeof a, loss));
        return -1;
    }
    if (!backward_output_ok(g, fn, loss))
        return -1;
    pg_tensor *one = pg_tensor_alloc(g->arena, fn, loss->dtype, loss->ndim, loss->shape);
    if (!one) {
        pg_graph_fail(g, "%s", pg_last_error());
        return -1;
    }
    pg_fill(one, 1.0);
    return backward_run(g, loss, one);
}
