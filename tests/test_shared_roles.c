/* One tensor given to an op in two or three roles (x x^T, x * x, attention with q = k = v,
 * forgetting gates' c_i - c_j with sep_q = sep_k = c): it has one gradient buffer, fresh
 * for the first role only (pg_grad_fresh), and its gradient is the sum of its roles'.
 * Every op of more than one float input is gradchecked so, causal and not where it has a
 * mask: a backward that assigns one role's share piece by piece while another adds into
 * the same buffer fails here unless the tape zero-fills such a buffer first (the fused CoPE
 * ops did: autograd/graph.c, zero_shared_inputs). */
#include "testutil.h"

#include "../autograd/flash.h"

typedef enum role_op {
    ROLE_MATMUL_NT, ROLE_MATMUL_TN, ROLE_MATMUL, ROLE_AFFINE, ROLE_MUL, ROLE_DIV, ROLE_SUB, ROLE_POW,
    ROLE_MAXIMUM, ROLE_WHERE, ROLE_CONCAT, ROLE_BCE, ROLE_FLASH, ROLE_FLASH_XPOS, ROLE_FLASH_SEP,
    ROLE_FLASH_LOCAL_SEP, ROLE_COPE_INTERP, ROLE_COPE_ATTN, ROLE_COPE_ATTN_GATES_V, ROLE_OPS
} role_op;

static const char *const ROLE_NAMES[ROLE_OPS] = {
    "matmul x x^T", "matmul x^T x", "matmul x x", "affine x x", "mul x x", "div x x", "sub x x", "pow x x",
    "maximum x x", "where x x", "concat x x", "bce_with_logits x x", "flash q = k = v", "flash xPos q = k = v",
    "flash sep_q = sep_k", "flash local sep_q = sep_k", "cope_interp logits = z", "cope_attention q = k = v",
    "cope_attention q = k = v, gates from v"};

typedef struct role_case {
    role_op op;
    bool causal;
} role_case;

/* in[0]: the shared tensor; in[1]: q = k = v where the shared one is sep_q = sep_k */
static pg_tensor *role_fn(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)n;
    const role_case *c = ctx;
    pg_tensor *x = in[0];
    switch (c->op) {
    case ROLE_MATMUL_NT: return pg_matmul(g, x, x, false, true);
    case ROLE_MATMUL_TN: return pg_matmul(g, x, x, true, false);
    case ROLE_MATMUL: return pg_matmul(g, x, x, false, false);
    case ROLE_AFFINE: return pg_affine(g, x, x, NULL);
    case ROLE_MUL: return pg_mul(g, x, x);
    case ROLE_DIV: return pg_div(g, x, pg_add_scalar(g, pg_square(g, x), 1)); /* x only as a numerator: x / x is 1 */
    case ROLE_SUB: return pg_sub(g, x, pg_mul_scalar(g, x, 0.5));
    case ROLE_POW: { /* a^a with a = x^2 + 1/2 > 0 */
        pg_tensor *a = pg_add_scalar(g, pg_square(g, x), 0.5);
        return pg_pow(g, a, a);
    }
    case ROLE_MAXIMUM: return pg_maximum(g, x, pg_mul_scalar(g, x, -0.5));
    case ROLE_WHERE: return pg_where(g, pg_gt(g, x, pg_mul_scalar(g, x, 0.5)), x, x);
    case ROLE_CONCAT: return pg_concat(g, 2, (pg_tensor *const[]){x, x}, 1);
    case ROLE_BCE: return pg_bce_with_logits(g, x, pg_sigmoid(g, x), NULL, NULL, PG_REDUCE_SUM);
    case ROLE_FLASH: return pg_flash_attention(g, x, x, x, &(pg_flash_opts){.causal = c->causal});
    case ROLE_FLASH_XPOS:
        return pg_flash_attention(g, x, x, x, &(pg_flash_opts){.causal = c->causal, .xpos_scale_base = 64});
    case ROLE_FLASH_SEP:
        return pg_flash_attention(g, in[1], in[1], in[1], &(pg_flash_opts){.causal = c->causal, .sep_q = x, .sep_k = x});
    case ROLE_FLASH_LOCAL_SEP:
        return pg_flash_attention(g, in[1], in[1], in[1],
                                  &(pg_flash_opts){.causal = c->causal, .window = 8, .look_backward = 1,
                                                   .look_forward = c->causal ? 0 : 1, .sep_q = x, .sep_k = x});
    case ROLE_COPE_INTERP: return pg_cope_interp(g, x, x, NULL, c->causal, 0.7, 1.0);
    case ROLE_COPE_ATTN:
    case ROLE_COPE_ATTN_GATES_V:
        return pg_cope_attention(g, x, x, x, in[1],
                                 &(pg_cope_attn_opts){.scale = 0.4, .out_scale = 1, .causal = c->causal,
                                                      .gates_from_values = c->op == ROLE_COPE_ATTN_GATES_V});
    case ROLE_OPS: break;
    }
    return NULL;
}

static bool has_mask(role_op op)
{
    return op >= ROLE_FLASH;
}

/* the shared tensor's shape: attention's (B, H, L, D) over two blocks of 32 queries, the
 * gates' (B, H, L), the bias's square (B, H, L, L), a square matrix, else (5, 3) */
static pg_tensor *shared_input(role_op op, uint64_t seed)
{
    if (op == ROLE_FLASH || op == ROLE_FLASH_XPOS || op == ROLE_COPE_ATTN || op == ROLE_COPE_ATTN_GATES_V)
        return randt(PG_SHAPE(1, 2, 40, 4), seed, true);
    if (op == ROLE_FLASH_SEP || op == ROLE_FLASH_LOCAL_SEP)
        return randt(PG_SHAPE(1, 2, 40), seed, true);
    if (op == ROLE_COPE_INTERP)
        return randt(PG_SHAPE(1, 2, 6, 6), seed, true);
    if (op == ROLE_MATMUL || op == ROLE_AFFINE)
        return randt(PG_SHAPE(4, 4), seed, true);
    return randt(PG_SHAPE(5, 3), seed, true);
}

/* the second input: q = k = v of the gates' attention, CoPE's E (D, n) */
static pg_tensor *other_input(role_op op, uint64_t seed)
{
    if (op == ROLE_FLASH_SEP || op == ROLE_FLASH_LOCAL_SEP)
        return randt(PG_SHAPE(1, 2, 40, 4), seed, true);
    if (op == ROLE_COPE_ATTN || op == ROLE_COPE_ATTN_GATES_V)
        return randt(PG_SHAPE(4, 9), seed, true);
    return NULL;
}

Test(shared_roles, every_op_of_several_inputs_sums_its_roles)
{
    for (int op = 0; op < ROLE_OPS; op++)
        for (int causal = 0; causal <= (int)has_mask((role_op)op); causal++) {
            role_case c = {(role_op)op, causal != 0};
            pg_tensor *in[2] = {shared_input(c.op, 10 + (uint64_t)op), other_input(c.op, 50 + (uint64_t)op)};
            pg_gradcheck_result r = pg_gradcheck(role_fn, in[1] ? 2 : 1, in, &c, NULL);
            cr_expect(r.ok && r.checked > 0, "%s%s: %s (max abs err %.3g)", ROLE_NAMES[op],
                      causal ? ", causal" : "", r.message, r.max_abs_err);
            free_all(2, in);
        }
}
