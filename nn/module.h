/* posgrad nn: the module base (nn/module.c): registration, full names,
 * iteration, train/eval mode, weight-decay marks, freeing, and the scratch-graph
 * helpers of forwards run without a graph. Init is nn/init.h, the basic
 * layers nn/layers.h.
 *
 * A module is a struct whose first member is a pg_module. The base keeps the
 * module's own parameters and its child modules under local names; full names
 * are the dotted paths PyTorch uses ("blocks.0.attn.to_qkv.weight").
 * A module owns its parameters (heap tensors that require grad) and its
 * children: pg_module_free releases the whole tree. Forwards are made of the
 * ops, so this header brings autograd/ops.h with it. */
#ifndef PG_NN_MODULE_H
#define PG_NN_MODULE_H

#include "../autograd/ops.h"
#include "../tensor/tensor_list.h"

typedef struct pg_module pg_module;

typedef struct pg_module_entry {
    char *name;       /* local name: "weight", "0", "attn" */
    void *ptr;        /* pg_tensor * (params) or pg_module * (children) */
    bool owned;       /* false for a shared (tied) parameter */
} pg_module_entry;

struct pg_module {
    const char *type;  /* "Linear", "LayerNorm", ... */
    bool training;     /* train mode (dropout on); modules start in train mode */
    int n_params, cap_params;
    pg_module_entry *params;
    int n_children, cap_children;
    pg_module_entry *children;
    /* frees the struct that embeds this base (NULL: free(m)); the base frees
     * params and children itself */
    void (*destroy)(pg_module *m);
};

/* ---- building a module ----------------------------------------------------------
 * m NULL: an error, nothing done; type NULL: an error, and the type "Module". */
void pg_module_init(pg_module *m, const char *type, void (*destroy)(pg_module *));
/* A new zeroed module struct of `size` bytes with its base initialised
 * (pg_module_init(m, type, destroy)), for constructors:
 *   my_module *m = pg_module_alloc(sizeof *m, "MyModule", my_destroy, "my_new");
 * The struct's FIRST member must be the pg_module (or a struct that starts with
 * one, like pg_posmod), so that the result is also a pg_module *; size may
 * exceed the struct for a trailing array. NULL with "fn: out of memory" when
 * calloc fails; NULL and an error for a NULL type or fn, or a size below
 * sizeof(pg_module). Free it with pg_module_free. */
void *pg_module_alloc(size_t size, const char *type, void (*destroy)(pg_module *), const char *fn);
/* A new parameter-free container (a bare pg_module) of this type, such as
 * "Sequential" or "ModuleList": it only names children (PyTorch's naming).
 * pg_module_alloc(sizeof(pg_module), type, NULL, fn). */
pg_module *pg_module_new_container(const char *type, const char *fn);
/* A new zeroed parameter (heap, requires grad) registered as `name`; NULL on error. */
pg_tensor *pg_module_new_param(pg_module *m, const char *name, pg_dtype dtype, int ndim, const int64_t *shape);
/* Flags of pg_module_new_param_ex (or-ed). */
enum {
    PG_PARAM_NO_DECAY = 1u /* no weight decay: optim's default groups leave it out (docs/optim.md) */
};
/* pg_module_new_param with flags (0: the same as pg_module_new_param); an
 * unknown flag is an error. */
pg_tensor *pg_module_new_param_ex(pg_module *m, const char *name, pg_dtype dtype, int ndim, const int64_t *shape,
                                  unsigned flags);
/* Registers t as a parameter owned by m (owned) or shared with another module
 * (not owned: weight tying). 0 or -1. */
int pg_module_add_param(pg_module *m, const char *name, pg_tensor *t, bool owned);
/* Registers child under `name`; m owns it from then on (even on failure). 0 or -1. */
int pg_module_add_child(pg_module *m, const char *name, pg_module *child);
/* Frees params, children and the module itself. NULL: no-op. */
void pg_module_free(pg_module *m);
/* For a constructor that fails after allocating: frees m (pg_module_free) and
 * keeps the error recorded before, prefixed with "fn: " when fn is not NULL.
 * Returns NULL, so a constructor can `return pg_module_fail(&m->base, fn);`. */
void *pg_module_fail(pg_module *m, const char *fn);
/* A module constructor's dtype: f32 or f64. false with "fn: dtype must be f32 or
 * f64, got <dtype>" otherwise. */
bool pg_module_dtype_ok(const char *fn, pg_dtype dtype);

/* ---- using a module ----------------------------------------------------------------- */
/* Parameters with full names, depth first in registration order (children
 * after the module's own params, as PyTorch); a tensor shared under two names
 * is listed once, under the first. Tensors are borrowed: pg_tensor_list_free.
 * m NULL: an empty list and an error. */
pg_tensor_list pg_module_parameters(const pg_module *m);
/* The parameter with this full name, or NULL (with an error for NULL arguments). */
pg_tensor *pg_module_find_param(const pg_module *m, const char *full_name);
/* Total number of parameter elements (shared tensors counted once); 0 (and an error) for m NULL. */
int64_t pg_module_num_elements(const pg_module *m);
void pg_module_zero_grad(pg_module *m); /* m NULL: an error, nothing done */
/* Train (true) or eval (false) mode for m and every descendant (m NULL: an error). */
void pg_module_train(pg_module *m, bool on);

/* ---- weight-decay marks -------------------------------------------------------------
 * A module marks a parameter that must not be weight-decayed (a bias that is
 * not a vector, say) when it registers it (PG_PARAM_NO_DECAY), or later by
 * full name. The mark is kept on the tensor itself (t->no_decay, so a tied
 * tensor carries it under every name) and is what pg_no_decay_default (optim/)
 * reads first. 0, or -1 (NULL arguments, or no parameter of that name). */
int pg_module_param_set_no_decay(pg_module *m, const char *full_name, bool no_decay);
/* The mark of the parameter with this full name; false (and an error) for
 * NULL arguments or an unknown name. */
bool pg_module_param_no_decay(const pg_module *m, const char *full_name);

/* ---- running without a graph ------------------------------------------------------------
 * Module forwards accept g == NULL like the ops do: they run in a scratch graph without recording and return a heap
 * tensor the caller frees (a new one, even where with a graph x itself would come
 * back). These two functions do that:
 *   if (!g) { pg_graph *s = pg_nn_scratch_begin(fn);
 *             return pg_nn_scratch_end(s, s ? my_forward(s, ...) : NULL); }
 * scratch_end copies out to the heap, keeps the graph's FIRST error in
 * pg_last_error (not a later "x is NULL" of the chain) and frees the graph.
 * begin(NULL) fails; end(NULL, ...) returns NULL and leaves begin's error. */
pg_graph *pg_nn_scratch_begin(const char *fn);
pg_tensor *pg_nn_scratch_end(pg_graph *s, pg_tensor *out);
/* PG_NN_SCRATCH(g, fn, call): the idiom above as one statement, first in a
 * forward that returns pg_tensor *. When g is NULL it points g (a modifiable
 * pg_graph * variable, normally the parameter) at a scratch graph, evaluates
 * call (which uses g: usually the function calling itself) and returns call's
 * result copied to the heap; with g given it does nothing.
 *   pg_tensor *my_forward(pg_graph *g, my_module *m, pg_tensor *x)
 *   {
 *       PG_NN_SCRATCH(g, "my_forward", my_forward(g, m, x));
 *       ... ops on g ...
 *   } */
#define PG_NN_SCRATCH(g, fn, call)                                                                                     \
    do {                                                                                                               \
        if (!(g)) {                                                                                                    \
            (g) = pg_nn_scratch_begin(fn);                                                                             \
            return pg_nn_scratch_end((g), (g) ? (call) : NULL);                                                        \
        }                                                                                                              \
    } while (0)

#endif
