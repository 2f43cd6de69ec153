/* posgrad nn: the module base, parameter naming, init and the basic layers.
 *
 * A module is a struct whose first member is a pg_module. The base keeps the
 * module's own parameters and its child modules under local names; full names
 * are the dotted paths PyTorch uses ("blocks.0.attn.to_qkv.weight").
 * A module owns its parameters (heap tensors that require grad) and its
 * children: pg_module_free releases the whole tree. */
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
/* A new zeroed parameter (heap, requires grad) registered as `name`; NULL on error. */
pg_tensor *pg_module_new_param(pg_module *m, const char *name, pg_dtype dtype, int ndim, const int64_t *shape);
/* Registers t as a parameter owned by m (owned) or shared with another module
 * (not owned: weight tying). 0 or -1. */
int pg_module_add_param(pg_module *m, const char *name, pg_tensor *t, bool owned);
/* Registers child under `name`; m owns it from then on (even on failure). 0 or -1. */
int pg_module_add_child(pg_module *m, const char *name, pg_module *child);
/* Frees params, children and the module itself. NULL: no-op. */
void pg_module_free(pg_module *m);

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

/* ---- init (nn/init.c), all from a seeded generator, in place ---------------------
 * fan_in / fan_out as torch: for a (out, in, ...) weight, fan_in = in * receptive
 * field, fan_out = out * receptive field. Return 0, or -1 with an error. */
typedef enum { PG_FAN_IN = 0, PG_FAN_OUT = 1 } pg_fan_mode;
int pg_init_uniform(pg_tensor *t, pg_rng *r, double low, double high);
int pg_init_normal(pg_tensor *t, pg_rng *r, double mean, double std);
/* normal(mean, std) redrawn until inside [a, b] */
int pg_init_trunc_normal(pg_tensor *t, pg_rng *r, double mean, double std, double a, double b);
int pg_init_xavier_uniform(pg_tensor *t, pg_rng *r, double gain);
int pg_init_xavier_normal(pg_tensor *t, pg_rng *r, double gain);
/* torch.nn.init.kaiming_*: gain = sqrt(2 / (1 + a^2)) (leaky_relu with slope a;
 * a = 0 is relu) */
int pg_init_kaiming_uniform(pg_tensor *t, pg_rng *r, double a, pg_fan_mode mode);
int pg_init_kaiming_normal(pg_tensor *t, pg_rng *r, double a, pg_fan_mode mode);
int pg_init_fans(const pg_tensor *t, int64_t *fan_in, int64_t *fan_out); /* -1 for any NULL */

/* ---- Linear: y = x W^T + b, W (out, in), b (out); torch's default init --------------- */
typedef struct pg_linear {
    pg_module base;
    int64_t in_features, out_features;
    pg_tensor *weight, *bias; /* bias NULL when disabled */
} pg_linear;
pg_linear *pg_linear_new(int64_t in_features, int64_t out_features, bool bias, pg_dtype dtype, pg_rng *r);
/* x: (..., in) -> (..., out) */
pg_tensor *pg_linear_forward(pg_graph *g, pg_linear *l, pg_tensor *x);

/* ---- Embedding: rows of a (num, dim) table, N(0, 1) init ---------------------------- */
typedef struct pg_embed {
    pg_module base;
    int64_t num, dim;
    pg_tensor *weight;
} pg_embed;
pg_embed *pg_embed_new(int64_t num, int64_t dim, pg_dtype dtype, pg_rng *r);
/* ids: any shape, PG_I64 -> ids.shape + (dim) (the op pg_embedding on e->weight) */
pg_tensor *pg_embed_forward(pg_graph *g, pg_embed *e, pg_tensor *ids);

/* ---- LayerNorm over the last dim; weight 1, bias 0 (either may be disabled) ---------- */
typedef struct pg_layernorm {
    pg_module base;
    int64_t dim;
    double eps;
    pg_tensor *weight, *bias;
} pg_layernorm;
pg_layernorm *pg_layernorm_new(int64_t dim, double eps, bool affine, bool bias, pg_dtype dtype);
pg_tensor *pg_layernorm_forward(pg_graph *g, pg_layernorm *n, pg_tensor *x);

/* ---- RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * weight (nn/layers_ff.c) ---- */
typedef struct pg_rmsnorm {
    pg_module base;
    int64_t dim;
    double eps;
    pg_tensor *weight; /* NULL when not affine */
} pg_rmsnorm;
pg_rmsnorm *pg_rmsnorm_new(int64_t dim, double eps, bool affine, pg_dtype dtype);
pg_tensor *pg_rmsnorm_forward(pg_graph *g, pg_rmsnorm *n, pg_tensor *x);

/* ---- Dropout: active in train mode only; the mask comes from r ---------------------- */
typedef struct pg_dropout_mod {
    pg_module base;
    double p;
} pg_dropout_mod;
pg_dropout_mod *pg_dropout_new(double p);
/* r may be NULL in eval mode or when p == 0 */
pg_tensor *pg_dropout_forward(pg_graph *g, pg_dropout_mod *d, pg_tensor *x, pg_rng *r);

/* ---- FeedForward -------------------------------------------------------------------------
 * PG_FF_MLP: proj_in = Linear(dim, hidden) -> activation -> Dropout -> proj_out = Linear(hidden, dim).
 * PG_FF_GLU: bio-attention's GLU: a, gate = chunk(proj_in(x), 2) with proj_in = Linear(dim, 2 hidden)
 *   (a the first half, gate the second), h = a * act(gate) -> Dropout -> proj_out = Linear(hidden, dim).
 *   With PG_ACT_SILU this is SwiGLU.
 * Children "proj_in", "dropout", "proj_out" (as a PyTorch module with those attributes; the
 * class is spelled out in nn/layers_ff.c): parameters "proj_in.weight", "proj_in.bias",
 * "proj_out.weight", "proj_out.bias". `bias` applies to both Linears; torch's default init. */
typedef enum { PG_FF_MLP = 0, PG_FF_GLU = 1 } pg_ff_kind;
typedef enum { PG_ACT_GELU = 0, PG_ACT_GELU_TANH, PG_ACT_RELU, PG_ACT_SILU } pg_activation;
typedef struct pg_feedforward {
    pg_module base;
    pg_ff_kind kind;
    pg_activation act;
    int64_t dim, hidden;
    pg_linear *proj_in, *proj_out;
    pg_dropout_mod *dropout;
} pg_feedforward;
pg_feedforward *pg_feedforward_new(int64_t dim, int64_t hidden, pg_ff_kind kind, pg_activation act, double dropout,
                                   bool bias, pg_dtype dtype, pg_rng *r);
/* x: (..., dim) -> (..., dim); r for dropout (may be NULL in eval or p == 0) */
pg_tensor *pg_feedforward_forward(pg_graph *g, pg_feedforward *f, pg_tensor *x, pg_rng *r);
/* the activation as an op */
pg_tensor *pg_activation_apply(pg_graph *g, pg_activation act, pg_tensor *x);

#endif
