/* posgrad nn: the basic layers, one header for two files:
 *   nn/layers.c     Linear, Embedding, LayerNorm, the norm options
 *   nn/layers_ff.c  RMSNorm, Dropout, FeedForward and the activation switch
 * Each is a module (nn/module.h) with torch's parameter names and default
 * init; docs/nn.md has their equations and torch counterparts. */
#ifndef PG_NN_LAYERS_H
#define PG_NN_LAYERS_H

#include "module.h"

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
    bool l2norm; /* forward gives pg_l2_normalize(row, 1e-12) (x-transformers' TokenEmbedding
                    l2norm_embed); default false. Set after pg_embed_new. */
} pg_embed;
pg_embed *pg_embed_new(int64_t num, int64_t dim, pg_dtype dtype, pg_rng *r);
/* ids: any shape, PG_I64 -> ids.shape + (dim) (the op pg_embedding on e->weight) */
pg_tensor *pg_embed_forward(pg_graph *g, pg_embed *e, pg_tensor *ids);

/* ---- norm options (LayerNorm and RMSNorm; docs/nn.md "Norm conventions") -------------------
 * The RMSNorm form:
 *   PG_RMS_MEAN  y = x / sqrt(mean(x^2) + eps) * gain            torch.nn.RMSNorm, LLaMA (eps inside)
 *   PG_RMS_L2    y = x / max(||x||_2, eps) * sqrt(dim) * gain     x-transformers' RMSNorm:
 *                F.normalize(x, dim=-1) * dim ** 0.5 * g, F.normalize's eps 1e-12 (a clamp on the norm)
 * gain = weight, or weight + 1 with unit_offset (x-transformers' unit_offset = True: the stored
 * "weight" is their gamma / g, initialised at 0). The parameter keeps posgrad's name "weight". */
typedef enum { PG_RMS_MEAN = 0, PG_RMS_L2 = 1 } pg_rms_form;
typedef struct pg_norm_opts {
    double eps;       /* >= 0 (PG_RMS_L2: > 0); finite */
    bool affine;      /* a gain parameter "weight" (dim) */
    bool bias;        /* LayerNorm only: parameter "bias" (dim), initialised at 0 (needs affine) */
    bool unit_offset; /* gain = weight + 1, weight initialised at 0 (else weight initialised at 1) */
    pg_rms_form form; /* RMSNorm only */
} pg_norm_opts;
/* {eps 1e-5, affine, bias, no unit offset, PG_RMS_MEAN}: torch.nn.LayerNorm / RMSNorm(eps=1e-5) */
pg_norm_opts pg_norm_defaults(void);
/* x / max(||x||_2, eps) over the last dim (torch.nn.functional.normalize(x, dim=-1, eps=eps)); eps > 0.
 * Computed as x / sqrt(max(sum(x^2), eps^2)): a zero row gives 0 with torch's gradient 1 / eps (not NaN). */
pg_tensor *pg_l2_normalize(pg_graph *g, pg_tensor *x, double eps);
/* shared by the norms and nn/transformer.c: the options' checks (message "fn: why (...)"; layernorm:
 * the options are a LayerNorm's) and the gain weight (+ 1 with unit_offset; NULL without weight) */
bool pg_norm_opts_ok(const char *fn, int64_t dim, const pg_norm_opts *o, bool layernorm);
pg_tensor *pg_norm_gain(pg_graph *g, pg_tensor *weight, bool unit_offset);

/* ---- LayerNorm over the last dim; weight 1, bias 0 (either may be disabled) ---------- */
typedef struct pg_layernorm {
    pg_module base;
    int64_t dim;
    double eps;
    bool unit_offset; /* gain = weight + 1 */
    pg_tensor *weight, *bias;
} pg_layernorm;
pg_layernorm *pg_layernorm_new(int64_t dim, double eps, bool affine, bool bias, pg_dtype dtype);
/* o NULL: pg_norm_defaults(); o->form must be PG_RMS_MEAN (unused) */
pg_layernorm *pg_layernorm_new_opts(int64_t dim, const pg_norm_opts *o, pg_dtype dtype);
pg_tensor *pg_layernorm_forward(pg_graph *g, pg_layernorm *n, pg_tensor *x);

/* ---- RMSNorm over the last dim, form PG_RMS_MEAN or PG_RMS_L2 (nn/layers_ff.c) ---------- */
typedef struct pg_rmsnorm {
    pg_module base;
    int64_t dim;
    double eps;
    bool unit_offset;  /* gain = weight + 1 */
    pg_rms_form form;
    pg_tensor *weight; /* NULL when not affine */
} pg_rmsnorm;
/* PG_RMS_MEAN, no unit offset */
pg_rmsnorm *pg_rmsnorm_new(int64_t dim, double eps, bool affine, pg_dtype dtype);
/* o NULL: pg_norm_defaults(); o->bias must be false (RMSNorm has none) */
pg_rmsnorm *pg_rmsnorm_new_opts(int64_t dim, const pg_norm_opts *o, pg_dtype dtype);
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
