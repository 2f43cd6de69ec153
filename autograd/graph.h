/* posgrad autograd: the core. One header for two files:
 *   autograd/graph.c   the graph (arena + tape), errors, grad mode, leaves and
 *                      gradients, backward, and what ops are written with
 *   autograd/create.c  creation in a graph, detach, custom ops
 * The differentiable ops are autograd/ops.h, gradcheck autograd/gradcheck.h.
 *
 * A pg_graph holds every tensor made while running a model (in its arena) and
 * the tape of recorded ops. pg_graph_reset frees them all at once and keeps the
 * memory, so a training loop allocates nothing after its first step.
 *
 * Ops record a node when grad mode is on and any input requires grad; the
 * output then requires grad too. pg_backward walks the tape in reverse and
 * accumulates gradients into `t->grad` of every tensor that requires grad:
 * heap leaves (parameters) keep theirs across steps until pg_zero_grad;
 * tensors in the graph lose theirs at reset.
 *
 * g NULL means "no graph" throughout: creators and ops return heap tensors and
 * record nothing, pg_graph_arena(NULL) is NULL (the heap), pg_graph_num_nodes
 * 0, pg_graph_node and pg_graph_error NULL, pg_grad_enabled false, and
 * pg_no_grad_begin/end do nothing. Functions that need a graph (pg_backward,
 * pg_graph_reset, pg_graph_alloc) fail on NULL with a message. */
#ifndef PG_GRAPH_H
#define PG_GRAPH_H

#include "../tensor/tensor.h"

typedef struct pg_graph pg_graph;
typedef struct pg_node pg_node;

/* A backward rule: read node->out->grad, accumulate into the inputs' grads
 * (pg_grad_of / pg_grad_accumulate). Returns 0, or -1 after pg_graph_fail. */
typedef int (*pg_backward_fn)(pg_graph *g, pg_node *node);

#define PG_NODE_PARAMS 8

struct pg_node {
    const char *name;        /* op name, e.g. "pg_add" */
    pg_backward_fn backward;
    pg_tensor *out;
    int n_in;
    pg_tensor **in;          /* n_in inputs (entries may be non-differentiable) */
    double p[PG_NODE_PARAMS];   /* small scalar parameters of the op */
    int64_t ip[PG_NODE_PARAMS]; /* small integer parameters (axes, flags) */
    void *ctx;               /* larger saved state, in the graph's arena */
    pg_tensor *saved;        /* a saved tensor (e.g. softmax output, a mask) */
};

/* ---- graph lifetime ---------------------------------------------------------- */
pg_graph *pg_graph_new(void);
void pg_graph_free(pg_graph *g);
/* Frees every tensor of the graph, empties the tape, clears the error; keeps
 * memory. NULL: an error (pg_last_error), nothing done. */
void pg_graph_reset(pg_graph *g);
pg_arena *pg_graph_arena(pg_graph *g);
int pg_graph_num_nodes(const pg_graph *g);
const pg_node *pg_graph_node(const pg_graph *g, int i);

/* ---- errors ------------------------------------------------------------------ */
/* The first error recorded on this graph since its reset, or NULL. */
const char *pg_graph_error(const pg_graph *g);
/* Records an error (the graph keeps the first; pg_last_error gets each). g
 * NULL: pg_last_error only. fmt NULL records "pg_graph_fail: fmt is NULL". */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void pg_graph_fail(pg_graph *g, const char *fmt, ...);

/* ---- grad mode --------------------------------------------------------------- */
/* Nested scope in which nothing is recorded (inference, optimizer updates). */
void pg_no_grad_begin(pg_graph *g);
void pg_no_grad_end(pg_graph *g);
bool pg_grad_enabled(const pg_graph *g);

/* ---- leaves and gradients ----------------------------------------------------- */
void pg_set_requires_grad(pg_tensor *t, bool on); /* t NULL: an error */
/* Sets every element of t->grad to zero (keeps the buffer); no-op without
 * grad; t NULL: an error. */
void pg_zero_grad(pg_tensor *t);
/* A tensor in g sharing x's data that does not require grad. */
pg_tensor *pg_detach(pg_graph *g, pg_tensor *x);

/* Backward from a scalar (numel 1) loss with upstream gradient 1. 0 or -1.
 *
 * The output must have been recorded on g (since g's last reset), or be a
 * heap leaf: an output of another graph, or of g before a reset, is an error
 * ("pg_backward: output f64[] was not recorded on this graph ...") and
 * nothing is computed.
 *
 * Calling backward again on the same graph (from the same output or another)
 * is allowed and ACCUMULATES, as PyTorch's backward(retain_graph=True): the
 * tape is not consumed, each call computes the same gradient and adds it to
 * the leaves' grads (zero them between calls if you want only the latest).
 * The graph's own tensors' grads restart from zero on each call and hold the
 * latest call's gradient only. docs/autograd.md "Recording and backward". */
int pg_backward(pg_graph *g, pg_tensor *loss);
/* Backward from `out` with upstream gradient `grad_out` (same shape and
 * dtype). 0 or -1. Same rules as pg_backward. */
int pg_backward_with(pg_graph *g, pg_tensor *out, const pg_tensor *grad_out);

/* ---- creation in a graph (g NULL: a heap tensor the caller frees) --------------- */
pg_tensor *pg_empty(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape);
pg_tensor *pg_zeros(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape);
pg_tensor *pg_ones(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape);
pg_tensor *pg_full(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, double value);
pg_tensor *pg_arange(pg_graph *g, pg_dtype dtype, double start, double end, double step);
pg_tensor *pg_linspace(pg_graph *g, pg_dtype dtype, double start, double end, int64_t n);
pg_tensor *pg_from_array(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, const void *values);
pg_tensor *pg_rand(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, pg_rng *r);  /* U[0,1) */
pg_tensor *pg_randn(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, pg_rng *r); /* N(0,1) */
pg_tensor *pg_bernoulli(pg_graph *g, pg_dtype dtype, int ndim, const int64_t *shape, double p, pg_rng *r);

/* ---- writing ops ---------------------------------------------------------------
 * How every built-in op is made, and what a fused kernel of nn/ uses:
 *   out = pg_op_output(g, "pg_myop", dtype, ndim, shape);   // in g's arena
 *   ... compute out ...
 *   pg_node *n = pg_op_record(g, "pg_myop", out, 2, (pg_tensor *[]){a, b}, myop_backward);
 *   if (n) { n->p[0] = alpha; n->saved = something; }
 * pg_op_record returns NULL (not an error) when nothing needs recording, and
 * NULL with an error when fn, out or backward is NULL, or in is NULL for
 * n_in > 0. pg_op_output's errors (a bad or too large shape, out of memory)
 * name fn (tensor/tensor.h, "Size rule"). */
pg_tensor *pg_op_output(pg_graph *g, const char *fn, pg_dtype dtype, int ndim, const int64_t *shape);
pg_node *pg_op_record(pg_graph *g, const char *fn, pg_tensor *out, int n_in, pg_tensor *const *in,
                      pg_backward_fn backward);
/* true when grad mode is on and any input requires grad */
bool pg_op_needs_grad(const pg_graph *g, int n_in, pg_tensor *const *in);
/* Gradient buffer of x, allocated zeroed on first use (in g's arena for a
 * tensor of g, so g must then be given); NULL if x is NULL or needs no grad. */
pg_tensor *pg_grad_of(pg_graph *g, pg_tensor *x);
/* The same for a backward rule that writes every entry of x's gradient: on
 * first use the buffer is not zeroed and *fresh is set, and the rule must then
 * assign (=) rather than add (+=); otherwise *fresh is false. */
pg_tensor *pg_grad_fresh(pg_graph *g, pg_tensor *x, bool *fresh);
/* x->grad += delta, where delta has the broadcast (larger) shape of x: summed
 * over broadcast dims. No-op if x needs no grad. 0 or -1 (delta NULL: -1). */
int pg_grad_accumulate(pg_graph *g, pg_tensor *x, const pg_tensor *delta);
/* Scratch memory in the graph's arena, valid until reset; NULL + error for g NULL or OOM. */
void *pg_graph_alloc(pg_graph *g, size_t bytes);

/* ---- custom ops -------------------------------------------------------------------
 * A user-supplied forward/backward pair recorded like a built-in op.
 * forward: fill `out` (allocated with out_shape and the inputs' float dtype).
 * backward: add d(loss)/d(in[i]) into grad_in[i] (zeroed buffers shaped like
 *   in[i]; NULL where in[i] needs no gradient), given grad_out.
 * ctx is copied (ctx_size bytes) into the graph, so it may live on the stack.
 * Both return 0, or nonzero for failure (then pg_custom returns NULL; a message
 * the function set with pg_set_error is kept after the op's name).
 * dtypes: the float dtypes forward and backward handle (PG_CUSTOM_F32 |
 * PG_CUSTOM_F64; 0: both); pg_custom refuses inputs of another, so an op that
 * reads pg_f64 declares PG_CUSTOM_F64 and is never handed f32 data (pg_gradcheck
 * then skips its f32 leg, with a note). */
enum { PG_CUSTOM_F32 = 1u << 0, PG_CUSTOM_F64 = 1u << 1 };
typedef struct pg_custom_op {
    const char *name;
    int (*forward)(pg_tensor *out, pg_tensor *const *in, int n_in, void *ctx);
    int (*backward)(pg_tensor *const *grad_in, const pg_tensor *grad_out, const pg_tensor *out,
                    pg_tensor *const *in, int n_in, void *ctx);
    unsigned dtypes;
} pg_custom_op;

pg_tensor *pg_custom(pg_graph *g, const pg_custom_op *op, int n_in, pg_tensor *const *in,
                     int out_ndim, const int64_t *out_shape, const void *ctx, size_t ctx_size);

#endif
