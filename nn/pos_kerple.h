/* posgrad nn: KERPLE, kernelized relative positional biases (Chi et al. 2022).
 * docs/pos/kerple.md has the whole story.
 *
 * A distance-only logits bias: for heads h = 0..H-1, query i and key j, with
 * delta = pos_q[i] - pos_k[j] and the distance
 *
 *   d = |delta|              (dist ABS, the default: keys after the query too)
 *   d = max(delta, 0)        (dist TRIL: the reference's tril, 0 for keys after the query)
 *
 * the bias is (docs/pos/kerple.md, equations (1)-(3))
 *
 *   log:    b_h(d) = -r1_h log(1 + r2_h d)          r1 = "bias_p", r2 = "bias_a"
 *   power:  b_h(d) = -r1_h d^(r2_h)                 r1 = "bias_a", r2 = "bias_p"
 *   nemo:   b_h(d) = -b_h log(1 + a_h d^(p_h))      "kerple_b", "kerple_a", "kerple_p"
 *
 * (the names are the reference implementations' state-dict names: note that
 * bias_p / bias_a swap meanings between log and power). d^p at d = 0 is 0 and
 * its derivative in p is 0 there (as torch's pow).
 *
 * Parameters: log and power (H) each, initialised (from the constructor's rng)
 * log: bias_p ~ U(0, 2), bias_a ~ U(0, 1); power: bias_a ~ U(0, 1),
 * bias_p ~ U(0, 2). nemo (H, 1, 1) each: kerple_b = ALiBi's slopes,
 * kerple_a = kerple_p = 1 (with p = 1 it is the log form). All without weight
 * decay (PG_PARAM_NO_DECAY).
 *
 * Constraints, by projection: every scale / inner parameter >= eps, the exponent
 * in [eps, p_max]. Where: `project` (FORWARD: at the start of each forward, in
 * place, outside autograd, as the reference: the gradient is that at the
 * clamped value; STEP: only when you call pg_kerple_project, after each
 * optimizer step; NONE: never). The default is FORWARD for log and power, NONE
 * for nemo (NeMo has no clamps).
 *
 * Positions are data here (not differentiable). Default positions: queries
 * Lk-Lq..Lk-1, keys 0..Lk-1 (end-aligned: one query over a cache is the last
 * position). Positions shorter than the sequence: zero bias rows and columns for
 * the un-positioned tokens. Output of mod_bias / bias_table: (H, Lq, Lk) with
 * default positions on both sides, else (B, H, Lq, Lk); dist_bias: (H, D). */
#ifndef PG_NN_POS_KERPLE_H
#define PG_NN_POS_KERPLE_H

#include "posmod.h"

typedef enum {
    PG_KERPLE_LOG = 0,   /* -r1 log(1 + r2 d) (the default; chijames/KERPLE ParallelKerpleLog) */
    PG_KERPLE_POWER = 1, /* -r1 d^r2 (ParallelKerplePower, pos_emb kerple_power_ap_) */
    PG_KERPLE_NEMO = 2   /* -b log(1 + a d^p), all three learned (NeMo KERPLERelativePositionEmbedding) */
} pg_kerple_variant;

typedef enum {
    PG_KERPLE_PROJECT_DEFAULT = 0, /* FORWARD for log / power, NONE for nemo */
    PG_KERPLE_PROJECT_FORWARD = 1, /* clamp in place at the start of every forward (the reference) */
    PG_KERPLE_PROJECT_STEP = 2,    /* clamp only in pg_kerple_project (call it after each optimizer step) */
    PG_KERPLE_PROJECT_NONE = 3     /* never clamp */
} pg_kerple_project_mode;

typedef enum {
    PG_KERPLE_DIST_ABS = 0, /* d = |pos_q - pos_k| (NeMo bidirectional; the reference on every unmasked causal pair) */
    PG_KERPLE_DIST_TRIL = 1 /* d = max(pos_q - pos_k, 0): 0 for keys after the query (the reference's tril) */
} pg_kerple_dist;

/* All-zero is the default: log, projection in forward, eps 1e-2, p_max 2, |d|. */
typedef struct pg_kerple_opts {
    int64_t heads;                  /* H; 0: the attention's (args.heads) */
    pg_kerple_variant variant;
    pg_kerple_project_mode project;
    double eps;                     /* lower clamp of every parameter, > 0; 0 means 1e-2 */
    double p_max;                   /* upper clamp of the exponent (power's bias_p, nemo's kerple_p), >= eps; 0 means 2 */
    pg_kerple_dist dist;
} pg_kerple_opts;

typedef struct pg_kerple {
    pg_posmod pm; /* first: &k->pm.base is the module */
    int64_t heads;
    pg_kerple_variant variant;
    pg_kerple_project_mode project; /* resolved: FORWARD, STEP or NONE */
    double eps, p_max;
    pg_kerple_dist dist;
    pg_tensor *scale; /* r1 / b: log bias_p, power bias_a, nemo kerple_b */
    pg_tensor *inner; /* r2 / a: log bias_a, nemo kerple_a; NULL for power */
    pg_tensor *power; /* the exponent: power bias_p, nemo kerple_p; NULL for log */
} pg_kerple;

/* KERPLE for `heads` heads (o->heads, when nonzero, must agree); o NULL:
 * defaults. dtype: of the parameters; r: their initial values (NULL is an
 * error for log and power). NULL + error on bad options. */
pg_posmod *pg_kerple_new(int64_t heads, const pg_kerple_opts *o, pg_dtype dtype, pg_rng *r);
/* The registered constructor ("kerple"): heads from o->heads or a->heads,
 * dtype a->dtype, initial values from a->rng. */
pg_posmod *pg_posmod_make_kerple(const pg_posmod_args *a);

/* Projects m's parameters onto the constraints (in place, outside autograd):
 * scale, inner >= eps, exponent in [eps, p_max]; whatever m->project is. Call
 * it after each optimizer step with PG_KERPLE_PROJECT_STEP. 0, or -1 with an
 * error when m is not a KERPLE module. */
int pg_kerple_project(pg_posmod *m);

#endif
