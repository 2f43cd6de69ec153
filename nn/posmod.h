/* posgrad nn: the positional protocol (docs/design.md, "The positional protocol").
 *
 * A positional module is a pg_posmod: a module (parameters, children, names,
 * train mode) plus a table of hooks. It acts at up to three points of
 * attention (bio-attention's plugins, docs/semantics.md §1.2):
 *
 *   mod_x     x (B, L, dim) -> x'             the block input, before its pre-norm
 *                                              (the residual stream carries it)
 *   mod_qkv   q, k, v (B, H, L, Dh) -> q', k', v'   after the projections
 *   mod_bias  -> an additive logits bias broadcastable to (B, H, Lq, Lk)
 *
 * Five more hooks let banded and fused attention compute a bias on the pairs they
 * visit only, never as an L x L matrix: dist_bias (a bias that depends on the
 * distance alone: a (H, D) table over distances), dist_bias_if (the same for the
 * calls where a scheme's bias happens to depend on the distance alone), band_bias
 * (a bias that also needs q and k, on LocalAttention's band of windows), sep_bias (a bias
 * a_i - e_j of one vector per side, for the fused kernel) and rel_bias (a query
 * vector dotted with a key of the distance, Transformer-XL's term, for the fused
 * kernel; rel_keys its keys alone when the query vector is q). A layer that needs one of
 * them calls it without knowing the scheme: a module with dist_bias is biased
 * through it; one without dist_bias but with band_bias through that.
 *
 * A hook left NULL is not implemented. An attention layer with the module list
 * m[0..n-1] computes, for i = 0..n-1 IN ORDER,
 *
 *   (q, k, v) <- m[i].mod_qkv(q, k, v)
 *   bias      <- bias + m[i].mod_bias(q, k, v)    (q, k, v as m[i].mod_qkv left them;
 *                                                   the context's x is the layer's input, for
 *                                                   biases that read the tokens, as FoX's gate)
 *
 * and then softmax(q k^T * scale + bias + user bias + mask) v. mod_x is called
 * by whoever owns the residual stream: pg_block_forward (on its input, for its
 * attention's modules, in order) and pg_lm_forward (on the token embeddings,
 * for the model's input modules); pg_posmod_apply_x does it for you.
 *
 * Positions (pg_pos_ctx.pos_q / pos_k) are (B, Lp) tensors of f32, f64 or i64
 * with Lp <= L, or NULL for 0..L-1. Lp < L is left padding: the first L - Lp
 * tokens (e.g. CLS tokens) have no position; the LAST Lp tokens carry pos[0..Lp).
 * What an un-positioned token gets is the scheme's choice (docs/semantics.md
 * §7: no rotation, zero bias row and column; pg_pos_pad_bias helps). Positions are
 * data, except that a float position tensor that requires grad gets gradients
 * from the schemes that are differentiable in them (sinusoidal, continuous,
 * rotary, ALiBi, DPB, XL); pg_pos_resolve detaches.
 *
 * Adding a scheme: write nn/pos_<scheme>.c (its options struct and typed
 * constructors in nn/pos_<scheme>.h) defining a struct whose first member is a
 * pg_posmod, a static const pg_posmod_ops table, and
 *   pg_posmod *pg_posmod_make_<scheme>(const pg_posmod_args *a);
 * then add one entry to nn/posmod_list.h:
 *   PG_POSMOD(<scheme>, role, hooks, props, "nn/pos_<scheme>.c", "one-line summary")
 * Models name it by its kind string in a pg_posmod_spec ("<scheme>"); the
 * examples' --pos choices, the benchmarks and the registry tests pick it up from
 * the registry (pg_posmod_info_at), and tests/test_pos_registry.c checks the
 * entry against what the module does. A file may hold several related kinds
 * (the entry's file says which: nn/pos_rel.c holds abs1d, rel1d and rel2d). */
#ifndef PG_NN_POSMOD_H
#define PG_NN_POSMOD_H

#include "layers.h" /* the module base and the layers the schemes are built from */

typedef struct pg_posmod pg_posmod;

/* LocalAttention's band (nn/local_attention.h), as band_bias sees it. The
 * (padded) sequence of W w tokens is cut into W windows of w queries; window
 * omega sees the S = (lb + lf + 1) w key slots of windows omega - lb .. omega + lf:
 *
 *   query row r of window omega   token omega w + r                 (0 <= r < w)
 *   key slot s of window omega    token (omega - lb) w + s          (0 <= s < S)
 *   their distance                r + lb w - s  (query minus key, the same in every window)
 *
 * A slot whose token is outside 0 .. W w - 1 holds no key; attention hides it,
 * whatever bias it gets. lb, lf are already clamped to the windows that exist
 * (lb, lf <= W - 1). With explicit positions (pq / pk set) the distance is
 * pq[row, query token] - pk[row, key token] instead: a band_bias hook must read
 * them (pg_pos_band_positions gives both sides on the band's layout). */
typedef struct pg_pos_band {
    int64_t W, w;   /* windows, queries per window (>= 1) */
    int64_t lb, lf; /* windows looked at before / after each window (>= 0) */
    /* explicit positions (LocalAttention's pos_q / pos_k), or both NULL for the token
     * indices above: (b, W w) f64, one row per row of the hook's q and k */
    const pg_tensor *pq, *pk;
} pg_pos_band;

/* What a hook sees of one attention call. For mod_x the context describes x's
 * own tokens: Lq = Lk = L and pos_q = pos_k = x's positions. */
typedef struct pg_pos_ctx {
    pg_tensor *pos_q;  /* (B, Lpq) query positions, Lpq <= Lq; NULL: 0..Lq-1 */
    pg_tensor *pos_k;  /* (B, Lpk) key positions; self-attention: the same tensor as pos_q */
    pg_tensor *mask;   /* (B, Lk) bool key-padding mask, false = masked; NULL: none */
    bool self_attn;    /* queries and keys are the same tokens */
    bool causal;       /* key j is hidden from query i when j > i */
    int64_t B, heads, head_dim, Lq, Lk; /* heads, head_dim: 0 when unknown (mod_x outside attention) */
    double scale;      /* what the attention multiplies q k^T by; biases are added unscaled */
    pg_dtype dtype;    /* float dtype of x / q, k, v */
    pg_rng *rng;       /* the call's generator (may be NULL) */
    pg_tensor *x;      /* (B, Lq, dim) the attention's input (after the block's pre-norm), NULL when the
                          caller has none: MultiheadAttention fills it, LocalAttention (given q, k, v) and
                          mod_x leave it NULL; a scheme that reads it (PG_POS_NEEDS_X) fails without it */
} pg_pos_ctx;

/* A rel_bias hook's result: scale * q[b, h, i] . k[h, i - j + Lk - 1] - e[b, h, j]. A rel_keys
 * hook's: scale * (q_i + q_shift[h]) . k[h, i - j + Lk - 1] + dist[h, i - j + Lk - 1], with the
 * attention's own queries q_i + q_shift[h] in the content logits too. */
typedef struct pg_pos_rel {
    pg_tensor *q;       /* (B, H, Lq, Dh); NULL from rel_keys */
    pg_tensor *k;       /* (H, Lq + Lk - 1, Dh) */
    pg_tensor *e;       /* (B, H, Lk) or NULL; NULL from rel_keys */
    double scale;
    pg_tensor *q_shift; /* rel_keys only: (H, Dh) or NULL */
    pg_tensor *dist;    /* rel_keys only: (H, Lq + Lk - 1) or NULL */
} pg_pos_rel;

/* A rotation of q's and k's channel pairs as tables (the qk_rotation hook, for the fused
 * kernel's rot_cos_q .. rot_sin_k, autograd/flash.h): q's rows turned by cos_q / sin_q
 * (Bc, 1, Lq, R), k's by cos_k / sin_k (Bc, 1, Lk, R), Bc 1 or B, of the call's dtype,
 * 1 <= R <= Dh / 2, pairs interleaved or half-split as pg_rotate_pairs takes them. */
typedef struct pg_pos_rotation {
    pg_tensor *cos_q, *sin_q, *cos_k, *sin_k;
    bool interleaved;
} pg_pos_rotation;

/* The hooks; NULL = not implemented. Each records errors with pg_graph_fail
 * naming the scheme. Tensors handed in are not to be modified in place. */
typedef struct pg_posmod_ops {
    /* x (B, L, dim) -> a tensor of the same shape (usually x + pe) */
    pg_tensor *(*mod_x)(pg_graph *g, pg_posmod *m, pg_tensor *x, const pg_pos_ctx *c);
    /* *q (B, H, Lq, Dh), *k, *v (B, H, Lk, Dh): replace any of them by a modified
     * tensor of the same shape and dtype. 0, or -1 after pg_graph_fail. */
    int (*mod_qkv)(pg_graph *g, pg_posmod *m, pg_tensor **q, pg_tensor **k, pg_tensor **v, const pg_pos_ctx *c);
    /* additive logits bias broadcastable to (B, H, Lq, Lk), e.g. (H, Lq, Lk);
     * q, k, v are those after this module's own mod_qkv (§1.2 step 3) */
    pg_tensor *(*mod_bias)(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c);
    /* the bias as a function of the positions alone, (H, Lq, Lk) or (B, H, Lq, Lk),
     * for inspection (heatmaps); schemes whose bias needs q/k give their
     * position-only part or leave this NULL */
    pg_tensor *(*bias_table)(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c);
    /* the bias as a function of the signed distance alone: d (D) of f32/f64
     * holding query position minus key position -> (H, D) of d's dtype,
     * differentiable in the scheme's parameters (and in d where the scheme is).
     * Implemented by schemes whose bias is f_h(p_q - p_k) (ALiBi, DPB, T5);
     * LocalAttention and the fused attention use it to bias a window band or a
     * tile without ever building an L x L matrix. NULL: not such a scheme. */
    pg_tensor *(*dist_bias)(pg_graph *g, pg_posmod *m, pg_tensor *d, const pg_pos_ctx *c);
    /* dist_bias for one call: *b = the (H, D) table over d, as dist_bias, for a scheme
     * whose bias is f_h(p_q - p_k) on some calls only (FIRE while every query position
     * lies below its threshold L). 0; 1 when this call's bias is not such a function
     * (nothing recorded, no error: the caller takes mod_bias); -1 after pg_graph_fail.
     * MultiheadAttention's fused path calls it (default positions, Lq = Lk) for a
     * module without dist_bias; LocalAttention does not (band_bias serves it there).
     * NULL: not such a scheme. */
    int (*dist_bias_if)(pg_graph *g, pg_posmod *m, pg_tensor *d, const pg_pos_ctx *c, pg_tensor **b);
    /* the bias on LocalAttention's band, for schemes whose bias needs q and k
     * (Transformer-XL): q, k (b, W w, Dh) of one float dtype are the call's packed
     * rows (row r is head r mod heads of the scheme), as given to the attention
     * after autopad, before its scale, rotary and shared_qk; band the window layout
     * above -> (b, W, w, S) of q's dtype, entry [row, omega, r, s] the bias of query
     * row r of window omega and key slot s, added to the scaled logits (c->scale is
     * the attention's scale; c->B = b, c->Lq = c->Lk = W w, c->head_dim = Dh,
     * default positions). Differentiable in q, k and the scheme's parameters.
     * Called only for a module without dist_bias. NULL: not such a scheme. */
    pg_tensor *(*band_bias)(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, const pg_pos_band *band,
                            const pg_pos_ctx *c);
    /* the bias when it is separable, bias[b, h, i, j] = a[b, h, i] - e[b, h, j]
     * (the forgetting gate's c_i - c_j): *a (B, H, Lq) and *e (B, H, Lk) of
     * c->dtype, differentiable as mod_bias is. MultiheadAttention's fused kernel
     * adds it per tile (memory linear in L), calling this instead of mod_bias
     * when the call is fusable (default positions, Lq = Lk, no user bias).
     * 0, or -1 after pg_graph_fail. NULL: not such a scheme. */
    int (*sep_bias)(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_tensor **a, pg_tensor **e);
    /* the bias in Transformer-XL's form (autograd/flash.h, relative keys),
     *   bias[b, h, i, j] = r->scale * r->q[b, h, i] . r->k[h, i - j + Lk - 1] - r->e[b, h, j]
     * with r->q (B, H, Lq, Dh), r->k (H, Lq + Lk - 1, Dh) (index t: distance
     * t - (Lk - 1) at default positions), r->e (B, H, Lk) or NULL, of c->dtype,
     * differentiable as mod_bias is; q, k (B, H, L, Dh) as for mod_bias. The fused
     * kernel adds it per tile (memory linear in L): MultiheadAttention calls this
     * instead of mod_bias when the call is fusable, LocalAttention on its fused
     * band (with c->Lq = c->Lk, c->heads and c->head_dim 0). 0; 1 when q, k are not of the
     * module's heads and width, or positions are given (nothing recorded, no error:
     * LocalAttention then takes its band of ops);
     * -1 after pg_graph_fail. NULL: not such a scheme. */
    int (*rel_bias)(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, const pg_pos_ctx *c, pg_pos_rel *r);
    /* rel_bias's work for a scheme whose relative queries are q itself (Shaw's q_i . R[j - i])
     * or q plus a vector per head, from the context alone: r->k and r->scale as rel_bias gives
     * them, r->q and r->e NULL, and for the second kind r->q_shift (H, Dh), which the
     * attention adds to its queries in the content logits and the relative term alike, with
     * r->dist (H, Lq + Lk - 1) a bias over distance to even out what that adds where the
     * scheme wants another vector (Transformer-XL: s (q + u) . k_j + rs (q + u) . R_t
     * + rs (v - u) . R_t is Dai et al.'s s u . k_j + s q . k_j + rs (q + v) . R_t). Either
     * may be NULL. MultiheadAttention's fused path calls it instead of rel_bias when q is
     * still in the projection and no module changes q (a mod_qkv or a rotation), and the
     * kernel reads q's own rows for the term (autograd/flash.h rel_q_is_q, q_shift): q, k and
     * v are never split or copied. 0; 1 when this call is not the hook's (positions, Lq !=
     * Lk: nothing recorded, no error, the caller takes rel_bias); -1 after pg_graph_fail.
     * NULL: not such a scheme. */
    int (*rel_keys)(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rel *r);
    /* the whole attention, for a scheme whose bias needs every row of the logits (CoPE's
     * gates): *out (B, H, Lq, Dv) = softmax(q k^T c->scale + bias, hidden entries -inf) v
     * with this module's bias, as mod_bias's bias would give it, computed without an
     * Lq x Lk tensor. MultiheadAttention calls it instead of mod_bias when the call is
     * fusable and this module is its only positional module, without attention dropout
     * or a band. 0; 1 when the scheme does not take this call (nothing recorded, no
     * error: the caller takes mod_bias); -1 after pg_graph_fail. NULL: not such a scheme. */
    int (*attend)(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_pos_ctx *c,
                  pg_tensor **out);
    /* mod_qkv's work as tables, for a scheme whose mod_qkv rotates the channel pairs of q and
     * k and leaves v alone (rotary, xPos): *r such that pg_rotate_pairs(q, r->cos_q, r->sin_q,
     * r->interleaved) is the q mod_qkv gives, and the same for k, with tables that do not
     * require grad. MultiheadAttention's fused path calls it instead of mod_qkv when no later
     * module reads q or k, and hands the tables to the kernel, which rotates each head in its
     * scratch: q, k and v stay in the projection, never split or copied rotated. 0; 1 when
     * this call's rotation is not constant (a learned divisor, positions that require grad)
     * or not the module's to give (nothing recorded, no error: the caller takes mod_qkv); -1
     * after pg_graph_fail. NULL: not such a scheme. */
    int (*qk_rotation)(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c, pg_pos_rotation *r);
} pg_posmod_ops;

struct pg_posmod {
    pg_module base;          /* first: &pm->base is the module */
    const pg_posmod_ops *ops; /* static, never NULL */
};

/* Initialises the base (pg_module_init) and sets the hooks. m NULL: an error;
 * ops NULL: an error, and a table without hooks (ops is never NULL). */
void pg_posmod_init(pg_posmod *m, const char *type, const pg_posmod_ops *ops, void (*destroy)(pg_module *));
/* A new zeroed scheme struct of `size` bytes (its FIRST member the pg_posmod)
 * with pg_posmod_init(m, type, ops, destroy) done, for constructors:
 *   my_scheme *m = pg_posmod_alloc(sizeof *m, "MyScheme", &MY_OPS, NULL, "my_new");
 * NULL with "fn: out of memory" when calloc fails; NULL and an error for a
 * NULL type, ops or fn, or a size below sizeof(pg_posmod) (pg_module_alloc). */
void *pg_posmod_alloc(size_t size, const char *type, const pg_posmod_ops *ops, void (*destroy)(pg_module *),
                      const char *fn);

/* Frees pos[from..n), each distinct module once: for a constructor that
 * promised to take ownership of a module list and fails. */
void pg_posmod_free_list(pg_posmod *const *pos, int from, int n);
/* Registers pos[0..n) under parent: one module as child "pos", several as
 * "pos.0", "pos.1", ... Takes ownership of all of them, also on failure
 * (parent, pos or an entry NULL: -1). 0 or -1. */
int pg_posmod_adopt(pg_module *parent, pg_posmod *const *pos, int n);

/* Applies mod_x of mods[0..n) in order to x (B, L, dim). pos (B, Lp) or NULL,
 * mask (B, L) bool or NULL: both are checked here. heads / head_dim go into the
 * context (0 if unknown). Returns x itself when no module has mod_x. A NULL
 * entry in mods is an error. */
pg_tensor *pg_posmod_apply_x(pg_graph *g, pg_posmod *const *mods, int n, pg_tensor *x, pg_tensor *pos,
                             pg_tensor *mask, int64_t heads, int64_t head_dim, pg_rng *rng);

/* The module's bias_table for the context c (checked as by attention);
 * fails if the module has no bias_table hook. */
pg_tensor *pg_posmod_bias_table(pg_graph *g, pg_posmod *m, const pg_pos_ctx *c);

/* What m's mod_x adds for L tokens of width dim: mod_x applied to zeros
 * (1, L, dim) at positions pos ((1, Lp) or NULL), as (L, dim); for the
 * heatmaps of additive schemes (in the dtype of m's parameters; f64 for a
 * module without any). Fails if m has no mod_x. */
pg_tensor *pg_posmod_x_table(pg_graph *g, pg_posmod *m, int64_t L, int64_t dim, pg_tensor *pos);

/* Checks a context's sizes, mask and positions, naming fn, with the attention
 * check (pg_attn_check, autograd/attn_check.h: its messages): B, Lq, Lk >= 1,
 * heads, head_dim >= 0; mask (B, Lk) bool; pos_q (B, Lpq) with Lpq <= Lq, pos_k
 * (B, Lpk) with Lpk <= Lk, f32/f64/i64. 0, or -1 after pg_graph_fail. */
int pg_pos_ctx_check(pg_graph *g, const char *fn, const pg_pos_ctx *c);

/* ---- helpers for schemes ------------------------------------------------------------ */
/* x (b, W, w, c), one row per token of the band's W w -> (b, W, S, c): slot s of
 * window omega holds the row of token (omega - lb) w + s, zero where there is no
 * such token (the layout of pg_pos_band). For band_bias hooks (keys' terms on the
 * band) and LocalAttention (keys, values, mask). Differentiable in x. */
pg_tensor *pg_pos_band_slots(pg_graph *g, pg_tensor *x, const pg_pos_band *band);

/* The positions a band_bias hook sees for b rows: queries *pq (b, W, w) and key slots
 * *pk (b, W, S), of dtype, from band->pq / pk or the token indices when NULL; a slot
 * without a token gets its window's first query position (finite; attention hides
 * it). 0, or -1 after pg_graph_fail. */
int pg_pos_band_positions(pg_graph *g, const pg_pos_band *band, int64_t b, pg_dtype dtype, pg_tensor **pq,
                          pg_tensor **pk);
/* t (b, H, ...) -> (b, ...): row r keeps head r mod H (the band's rows are batch x heads,
 * heads fastest). Differentiable in t. */
pg_tensor *pg_pos_head_of_row(pg_graph *g, pg_tensor *t);

/* Positions of one side as a (B, Lp) tensor of `dtype` (cast from f32/f64/i64;
 * no gradient); pos NULL gives 0..L-1 as (B, L). */
pg_tensor *pg_pos_resolve(pg_graph *g, pg_tensor *pos, int64_t B, int64_t L, pg_dtype dtype);
/* delta[b, i, j] = pos_q[b, i] - pos_k[b, j] over the positioned tokens:
 * (B, Lpq, Lpk) of `dtype`. */
pg_tensor *pg_pos_delta(pg_graph *g, const pg_pos_ctx *c, pg_dtype dtype);
/* bias (..., Lpq, Lpk) left/top-padded with zeros to (..., Lq, Lk): tokens without
 * a position get a zero bias row and column (docs/semantics.md §7). */
pg_tensor *pg_pos_pad_bias(pg_graph *g, pg_tensor *bias, int64_t Lq, int64_t Lk);

/* The skeleton of a table of positions alone (ALiBi, T5, KERPLE, Sandwich: a
 * bias_table / mod_bias that maps query and key positions to (H, Lq, Lk)):
 *
 *   if (pg_pos_table_check(g, "myscheme", c, m->heads) != 0) return NULL;
 *   pg_tensor *pq = pg_pos_side(g, c->pos_q, c->Lq, c->Lk - c->Lq, dt, false);
 *   pg_tensor *pk = pg_pos_side(g, c->pos_k, c->Lk, 0, dt, false);
 *   pg_tensor *delta = pg_pos_delta_sides(g, pq, pk);          (Bo, 1, Lpq, Lpk)
 *   ... the scheme's function of delta, (Bo, H, Lpq, Lpk) ...
 *   return pg_pos_table_finish(g, "myscheme", bias, c, m->heads);
 *
 * pg_pos_table_check: the context (pg_pos_ctx_check), c->heads 0 or `heads`, a
 * float c->dtype. 0, or -1 after pg_graph_fail naming fn. */
int pg_pos_table_check(pg_graph *g, const char *fn, const pg_pos_ctx *c, int64_t heads);
/* As pg_pos_table_check, for a module that computes in its parameters' dtype:
 * c->dtype must be `dtype`. */
int pg_pos_module_check(pg_graph *g, const char *fn, const pg_pos_ctx *c, int64_t heads, pg_dtype dtype);
/* One side's positions as (Bp, Lp) of dtype: the caller's pos (Bp = B) cast,
 * keeping its gradient when keep_grad (schemes differentiable in positions)
 * and detached otherwise (pg_pos_resolve); pos NULL gives (1, L) holding
 * start, start + 1, ... (queries usually start at Lk - Lq: end-aligned). */
pg_tensor *pg_pos_side(pg_graph *g, pg_tensor *pos, int64_t L, double start, pg_dtype dtype, bool keep_grad);
/* pq (Bq, Lpq), pk (Bk, Lpk) -> pq[b, i] - pk[b, j] as (max(Bq, Bk), 1, Lpq, Lpk);
 * NULL if either is NULL. */
pg_tensor *pg_pos_delta_sides(pg_graph *g, pg_tensor *pq, pg_tensor *pk);
/* bias (Bo, H, Lpq, Lpk) -> padded to (Bo, H, Lq, Lk) (pg_pos_pad_bias), viewed as
 * (H, Lq, Lk) when neither side has explicit positions. bias NULL: NULL, with
 * "fn: failed for positions ..." unless the graph already holds an error. */
pg_tensor *pg_pos_table_finish(pg_graph *g, const char *fn, pg_tensor *bias, const pg_pos_ctx *c, int64_t heads);
/* A dist_bias hook's argument: d (D) of f32/f64. 0, or -1 after pg_graph_fail
 * naming fn. */
int pg_pos_dist_check(pg_graph *g, const char *fn, const pg_tensor *d);
/* A per-head constructor's count: opts.heads (opt_heads) 0 or equal to heads,
 * and 1 <= heads <= PG_MAX_TENSOR_BYTES / 8. 0, or -1 with pg_set_error naming fn. */
int pg_pos_heads_check(const char *fn, int64_t opt_heads, int64_t heads);

/* The `divide` / `learned_div` option of every scheme that has one
 * (docs/semantics.md §1.1, corrected per §7 so that it works for all):
 * the effective divisor is the constant `divide`, or, learned, max(exp(div), 1e-8)
 * with a 0-dim parameter "div" initialised to log(divide). Division applies to
 * the product fed to sin/cos or the MLP: (p * f) / divisor. */
typedef struct pg_pos_divide {
    double divide;  /* > 0; 1 = no division */
    bool learned;
} pg_pos_divide;
/* Registers "div" on m when d.learned (returned), else returns NULL without
 * error; -1-style failure (NULL and *ok = false, "Type: divide must be a
 * finite number > 0, got ...") for divide <= 0, NaN or infinite. This is the
 * one check of the option: ALiBi's options embed a pg_pos_divide; sinusoidal,
 * continuous, rotary, DPB and XL keep the fields `divide` / `learned_div`
 * (their 0 means 1) and pass {divide, learned_div} here unchecked. */
pg_tensor *pg_pos_div_param(pg_posmod *m, pg_pos_divide d, pg_dtype dtype, bool *ok);
/* t / divisor, with div the parameter from pg_pos_div_param (or NULL: the constant). */
pg_tensor *pg_pos_divide_by(pg_graph *g, pg_tensor *t, pg_tensor *div, double divide);

/* ---- building modules by name --------------------------------------------------------- */
/* What a model tells a scheme's constructor. */
typedef struct pg_posmod_args {
    int64_t dim;        /* model width (mod_x acts on (B, L, dim)) */
    int64_t heads;      /* attention heads (0 for input modules) */
    int64_t head_dim;   /* the attention's head width: dim_head, by default dim / heads (0 for input modules) */
    int64_t max_len;    /* longest sequence (for learned tables), 0 if unbounded */
    int layer;          /* -1: the model input; 0, 1, ...: block index */
    pg_dtype dtype;
    pg_rng *rng;        /* for the initial parameters */
    const void *opts;   /* the scheme's own options struct, NULL: its defaults */
} pg_posmod_args;

typedef pg_posmod *(*pg_posmod_make_fn)(const pg_posmod_args *a);

/* The head count a per-head scheme's constructor fn should use: opt_heads
 * (its options' own count) if set, else a->heads. 0 with an error naming fn
 * when neither is >= 1 ("<what> acts inside attention and needs heads >= 1")
 * or when both are set and differ. */
int64_t pg_posmod_heads(const char *fn, const char *what, int64_t opt_heads, const pg_posmod_args *a);
/* A constructor's args present: false with "fn: args is NULL" otherwise. */
bool pg_posmod_args_ok(const char *fn, const pg_posmod_args *a);
/* pg_posmod_heads for a constructor whose options struct T has a heads field
 * (a NULL a or a->opts is fine):
 *   int64_t heads = PG_POSMOD_HEADS("pg_posmod_make_x", "X", pg_x_opts, a); */
#define PG_POSMOD_HEADS(fn, what, T, a) \
    pg_posmod_heads((fn), (what), (a) && (a)->opts ? ((const T *)(a)->opts)->heads : 0, (a))

/* One positional module of a model config: a registered kind ("alibi") or a
 * constructor of your own (make, which wins when set), and the scheme's options. */
typedef struct pg_posmod_spec {
    const char *kind;
    pg_posmod_make_fn make;
    const void *opts;
} pg_posmod_spec;

/* ---- the registry (nn/posmod_list.h): every kind with what it is --------------------- */
typedef enum pg_pos_role {
    PG_POS_ROLE_INPUT,     /* applied once to the token embeddings (mod_x): pg_lm_config.input_pos */
    PG_POS_ROLE_ATTENTION, /* per layer, inside attention: pg_lm_config.layer_pos */
} pg_pos_role;

/* The hooks a kind's modules implement (bits of pg_posmod_kind_info.hooks). */
enum {
    PG_POS_HOOK_X = 1 << 0,       /* mod_x */
    PG_POS_HOOK_QKV = 1 << 1,     /* mod_qkv */
    PG_POS_HOOK_BIAS = 1 << 2,    /* mod_bias */
    PG_POS_HOOK_TABLE = 1 << 3,   /* bias_table */
    PG_POS_HOOK_DIST = 1 << 4,    /* dist_bias */
    PG_POS_HOOK_BAND = 1 << 5,    /* band_bias */
    PG_POS_HOOK_SEP = 1 << 6,     /* sep_bias */
    PG_POS_HOOK_REL = 1 << 7,     /* rel_bias */
    PG_POS_HOOK_DIST_IF = 1 << 8, /* dist_bias_if */
    PG_POS_HOOK_ATTEND = 1 << 9,  /* attend */
    PG_POS_HOOK_ROTATION = 1 << 10, /* qk_rotation */
    PG_POS_HOOK_REL_KEYS = 1 << 11, /* rel_keys */
};

/* What else a kind is (bits of pg_posmod_kind_info.props). */
enum {
    PG_POS_NEEDS_QK = 1 << 0,   /* its mod_qkv modifies q/k, or its bias reads q or k */
    PG_POS_MAX_LEN = 1 << 1,    /* sized by args.max_len (a row per position or per counted
                                   position): without a size in its options it needs max_len >= 1 */
    PG_POS_NEEDS_OPTS = 1 << 2, /* no defaults: the constructor needs its options struct */
    PG_POS_VISION = 1 << 3,     /* from a computer-vision library (AI Summer's self-attention-cv);
                                   the text examples offer it only under a name of their own */
    PG_POS_NEEDS_X = 1 << 4,    /* its bias reads the attention's input (pg_pos_ctx.x): it works in
                                   MultiheadAttention, not where x is unknown (LocalAttention) */
    PG_POS_BOUNDED = 1 << 5,    /* refuses sequences longer than its size (max_len): nothing is
                                   defined past its rows (a learned absolute table) */
    PG_POS_ROTARY = 1 << 6,     /* its options are a pg_rotary_opts (nn/pos_rotary.h): rotary
                                   scaling (PI, NTK, YaRN, ...) applies to it */
};

/* One registry entry. */
typedef struct pg_posmod_kind_info {
    const char *kind;       /* "alibi" */
    pg_posmod_make_fn make; /* pg_posmod_make_alibi */
    const char *file;       /* where the constructor is: "nn/pos_alibi.c" */
    pg_pos_role role;
    unsigned hooks;         /* PG_POS_HOOK_* */
    unsigned props;         /* PG_POS_* */
    bool dist_only;         /* the bias is f_h(p_q - p_k) (hooks has PG_POS_HOOK_DIST): the
                               fused kernel and LocalAttention's bands take it */
    bool needs_qk;          /* props has PG_POS_NEEDS_QK */
    const char *summary;    /* one line */
} pg_posmod_kind_info;

/* The entry of `kind`; NULL and an error naming the registered kinds for an
 * unknown kind or NULL. */
const pg_posmod_kind_info *pg_posmod_info(const char *kind);
/* Entry i in registry order, for i = 0, 1, ...; NULL past the last one (no
 * error), NULL and an error for i < 0:
 *   for (int i = 0; (k = pg_posmod_info_at(i)); i++) ... */
const pg_posmod_kind_info *pg_posmod_info_at(int i);

/* The constructor registered as `kind` (nn/posmod_list.h), or NULL (an error for kind NULL). */
pg_posmod_make_fn pg_posmod_lookup(const char *kind);
/* Writes up to max registered kind names into names; returns how many exist
 * (names may be NULL with max 0, to count; -1 for names NULL and max > 0). */
int pg_posmod_kinds(const char **names, int max);
/* Builds the module a spec describes with a->opts = spec->opts; NULL + error
 * (unknown kind, or the constructor's own). */
pg_posmod *pg_posmod_from_spec(const pg_posmod_spec *s, const pg_posmod_args *a);

#endif
