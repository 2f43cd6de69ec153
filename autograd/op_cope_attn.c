/* pg_cope_attention (autograd/ops.h): attention with CoPE's bias in one op, a block of
 * query rows at a time, forward and backward side by side (docs/pos/cope.md).
 *
 *   q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), z (B, H, Lq, n)
 *   s_ij = q_i . g_j, unscaled; g = k, or v when the gates read the values (D = Dv)
 *   bias = pg_cope_interp(s, z, mask, causal, scale, out_scale)          (op_cope.c)
 *   out_i = sum_j P_ij v_j,  P_i = softmax_j(scale q_i . k_j + bias_ij), 0 where hidden
 *
 * The chain pg_matmul (s), pg_cope_interp and pg_flash_attention (the bias as its
 * pair_bias) in one op. A block of ROWS queries of one (b, h) holds its logits, bias and
 * probabilities over the keys it may see (ROWS x Lk each, in its thread's scratch: memory
 * linear in L); the products go through pg_gemm, CoPE's row kernels between them
 * (autograd/cope_rows.h). Nothing of Lq x Lk is written to memory, and under a causal
 * mask a block's products stop at its last query's key. The forward saves each row's
 * logsumexp; the backward recomputes a block's s, bias and P from it, then
 *   dP = dO v^T,  dS = P (dP - rowsum(dO o))      (the gradient of logit and bias alike)
 *   dv += P^T dO;  CoPE's backward with dout = dS: ds (of s) and dz
 *   gates from k: dq += (scale dS + ds) k,  dk += (scale dS + ds)^T q
 *   gates from v: dq += scale dS k + ds v,  dk += scale dS^T q,  dv += ds^T q
 * A head (b, h) is one task, its blocks in order: the same bits for any thread count.
 * The values are the chain's to rounding (P is normalised before P v, the chain's
 * accumulator after; the products' sums run in another order). */
#include "attn_check.h"
#include "cope_rows.h"
#include "exp_rows.h"

#include <stdlib.h>

#include "../tensor/gemm.h"
#include "../tensor/threadpool.h"

enum { ROWS = 32 }; /* queries a block, a multiple of COPE_ROWS */

typedef struct cattn_job {
    pg_dtype dt;
    int64_t H, Lq, Lk, D, Dv, n;
    const uint8_t *keep; /* (B, Lk), true: visible; NULL: no mask */
    bool causal, gates_v;
    double scale, out_scale;
    const void *q, *k, *v, *z;
    void *out, *lse;          /* forward writes them; the backward reads them */
    const void *dout;         /* backward */
    void *dq, *dk, *dv, *dz;  /* backward, NULL when not wanted */
    bool fresh[4];            /* dq, dk, dv, dz: assign on first touch */
    char *scratch;
    size_t scr_bytes; /* per thread */
} cattn_job;

/* the keys a block of queries i0 .. i0 + nr - 1 may see: causal stops at its last query */
static int64_t block_keys(const cattn_job *j, int64_t i0, int64_t nr)
{
    return j->causal && i0 + nr < j->Lk ? i0 + nr : j->Lk;
}

/* per thread: s, a (the attention's q . k when the gates read v), L (bias, logits, P),
 * dS and ds (ROWS, Lk) each, rowsum(dO o) (ROWS), then CoPE's backward scratch */
static size_t scratch_bytes(int64_t Lk, pg_dtype dt)
{
    size_t es = pg_dtype_size(dt), mats = ((size_t)5 * ROWS * (size_t)Lk + ROWS) * es;
    return (mats + 63) / 64 * 64 + cope_scratch(Lk, dt);
}

#define DEFINE_COPE_ATTN(T, sfx)                                                                                   \
    /* one head's operands: bh = b H + h */                                                                         \
    typedef struct head_##sfx {                                                                                     \
        const T *q, *k, *v, *g, *z;                                                                                 \
        const uint8_t *keep;                                                                                        \
    } head_##sfx;                                                                                                   \
    static head_##sfx head_at_##sfx(const cattn_job *j, int64_t bh)                                                 \
    {                                                                                                               \
        const T *k = (const T *)j->k + bh * j->Lk * j->D, *v = (const T *)j->v + bh * j->Lk * j->Dv;                \
        return (head_##sfx){(const T *)j->q + bh * j->Lq * j->D, k, v, j->gates_v ? v : k,                          \
                            (const T *)j->z + bh * j->Lq * j->n, j->keep ? j->keep + bh / j->H * j->Lk : NULL};     \
    }                                                                                                               \
    /* The block's s (nr, len) = q g^T, a = q k^T (a = s when the gates read k), and in L                           \
     * the logits scale a + bias, -inf where hidden; rows of stride len. */                                         \
    static void block_logits_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t i0, int64_t nr, int64_t len,   \
                                   T *S, T *A, T *L)                                                                \
    {                                                                                                               \
        const int64_t D = j->D;                                                                                     \
        pg_gemm_##sfx(false, true, nr, len, D, 1, hd->q + i0 * D, D, hd->g, D, 0, S, len);                          \
        if (A != S)                                                                                                 \
            pg_gemm_##sfx(false, true, nr, len, D, 1, hd->q + i0 * D, D, hd->k, D, 0, A, len);                      \
        for (int64_t k0 = 0; k0 < nr; k0 += COPE_ROWS) {                                                            \
            const cope_rows r = {.i0 = i0 + k0, .m = len, .n = (int)j->n,                                           \
                                 .nr = (int)(nr - k0 < COPE_ROWS ? nr - k0 : COPE_ROWS), .keep = hd->keep,          \
                                 .causal = j->causal};                                                              \
            cope_fwd_##sfx(L + k0 * len, S + k0 * len, hd->z + (i0 + k0) * j->n, &r, (T)j->scale,                   \
                           (T)j->out_scale);                                                                        \
        }                                                                                                           \
        const T scale = (T)j->scale;                                                                                \
        for (int64_t r = 0; r < nr; r++) {                                                                          \
            T *restrict l = L + r * len;                                                                            \
            const T *restrict a = A + r * len;                                                                      \
            const int64_t vis = j->causal && i0 + r + 1 < len ? i0 + r + 1 : len;                                   \
            for (int64_t c = 0; c < vis; c++)                                                                       \
                l[c] = scale * a[c] + l[c];                                                                         \
            for (int64_t c = 0; hd->keep && c < vis; c++)                                                           \
                l[c] = hd->keep[c] ? l[c] : (T)-INFINITY;                                                           \
            for (int64_t c = vis; c < len; c++)                                                                     \
                l[c] = (T)-INFINITY;                                                                                \
        }                                                                                                           \
    }                                                                                                               \
    /* forward of head bh: out (Lq, Dv) and lse (Lq) */                                                             \
    static void fwd_head_##sfx(const cattn_job *j, int64_t bh, char *scratch)                                       \
    {                                                                                                               \
        const head_##sfx hd = head_at_##sfx(j, bh);                                                                 \
        const int64_t Lk = j->Lk, Dv = j->Dv;                                                                       \
        T *S = (T *)scratch, *A = j->gates_v ? S + ROWS * Lk : S, *L = S + 2 * ROWS * Lk;                           \
        T *out = (T *)j->out + bh * j->Lq * Dv, *lse = (T *)j->lse + bh * j->Lq;                                    \
        for (int64_t i0 = 0; i0 < j->Lq; i0 += ROWS) {                                                              \
            const int64_t nr = j->Lq - i0 < ROWS ? j->Lq - i0 : ROWS, len = block_keys(j, i0, nr);                  \
            block_logits_##sfx(j, &hd, i0, nr, len, S, A, L);                                                       \
            for (int64_t r = 0; r < nr; r++) { /* P = softmax, a row that sees no key 0 */                          \
                T *p = L + r * len;                                                                                 \
                const T mx = row_max_##sfx(p, len);                                                                 \
                if (mx == -INFINITY) {                                                                              \
                    memset(p, 0, (size_t)len * sizeof(T));                                                          \
                    lse[i0 + r] = (T)-INFINITY;                                                                     \
                    continue;                                                                                       \
                }                                                                                                   \
                const T sum = exp_row_##sfx(p, mx, len), inv = (T)1 / sum;                                          \
                for (int64_t c = 0; c < len; c++)                                                                   \
                    p[c] *= inv;                                                                                    \
                lse[i0 + r] = mx + (T)log((double)sum);                                                             \
            }                                                                                                       \
            pg_gemm_##sfx(false, false, nr, Dv, len, 1, L, len, hd.v, Dv, 0, out + i0 * Dv, Dv);                    \
        }                                                                                                           \
    }                                                                                                               \
    /* P (nr, len) from the logits in L and the rows' lse; dS = P (dO v^T - rowsum(dO o)) */                        \
    static void block_dS_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t bh, int64_t i0, int64_t nr,        \
                               int64_t len, T *L, T *dS, T *Di)                                                     \
    {                                                                                                               \
        const int64_t Dv = j->Dv, at = bh * j->Lq + i0;                                                             \
        const T *lse = (const T *)j->lse + at, *o = (const T *)j->out + at * Dv, *go = (const T *)j->dout + at * Dv; \
        for (int64_t r = 0; r < nr; r++) {                                                                          \
            if (lse[r] == -INFINITY)                                                                                \
                memset(L + r * len, 0, (size_t)len * sizeof(T));                                                    \
            else                                                                                                    \
                exp_row_##sfx(L + r * len, lse[r], len);                                                            \
            T s = 0;                                                                                                \
            for (int64_t e = 0; e < Dv; e++)                                                                        \
                s += go[r * Dv + e] * o[r * Dv + e];                                                                \
            Di[r] = s;                                                                                              \
        }                                                                                                           \
        pg_gemm_##sfx(false, true, nr, len, Dv, 1, go, Dv, hd->v, Dv, 0, dS, len);                                  \
        for (int64_t r = 0; r < nr; r++) {                                                                          \
            T *restrict ds = dS + r * len;                                                                          \
            const T *restrict p = L + r * len;                                                                      \
            for (int64_t c = 0; c < len; c++)                                                                       \
                ds[c] = p[c] * (ds[c] - Di[r]);                                                                     \
        }                                                                                                           \
    }                                                                                                               \
    /* CoPE's backward of the block: C = ds (of s), dz rows of the head (dz NULL: not wanted) */                    \
    static void block_cope_bwd_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t i0, int64_t nr,              \
                                     int64_t len, const T *S, const T *dS, T *C, T *dz, char *cope_scr)             \
    {                                                                                                               \
        for (int64_t k0 = 0; k0 < nr; k0 += COPE_ROWS) {                                                            \
            const cope_rows r = {.i0 = i0 + k0, .m = len, .n = (int)j->n,                                           \
                                 .nr = (int)(nr - k0 < COPE_ROWS ? nr - k0 : COPE_ROWS), .keep = hd->keep,          \
                                 .causal = j->causal};                                                              \
            const cope_grads io = {S + k0 * len, hd->z + (i0 + k0) * j->n, dS + k0 * len, C ? C + k0 * len : NULL,  \
                                   dz ? dz + (i0 + k0) * j->n : NULL, true, j->fresh[3]};                           \
            cope_bwd_##sfx(&io, &r, cope_scr, (T)j->scale, (T)j->out_scale);                                        \
        }                                                                                                           \
    }                                                                                                               \
    /* the gradients of q and the keys from dS and C = ds; dq, dk, dv at the head */                                \
    static void block_qk_grads_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t i0, int64_t nr,              \
                                     int64_t len, T *dS, T *C, T *dq, T *dk, T *dv)                                 \
    {                                                                                                               \
        const int64_t D = j->D;                                                                                     \
        const T scale = (T)j->scale, *qb = hd->q + i0 * D;                                                          \
        if (!j->gates_v) { /* C = scale dS + ds, the gradient of q k^T */                                           \
            for (int64_t e = 0; e < nr * len; e++)                                                                  \
                C[e] = scale * dS[e] + C[e];                                                                        \
            if (dq)                                                                                                 \
                pg_gemm_##sfx(false, false, nr, D, len, 1, C, len, hd->k, D, 1, dq + i0 * D, D);                    \
            if (dk)                                                                                                 \
                pg_gemm_##sfx(true, false, len, D, nr, 1, C, len, qb, D, 1, dk, D);                                 \
            return;                                                                                                 \
        }                                                                                                           \
        if (dq) {                                                                                                   \
            pg_gemm_##sfx(false, false, nr, D, len, scale, dS, len, hd->k, D, 1, dq + i0 * D, D);                   \
            pg_gemm_##sfx(false, false, nr, D, len, 1, C, len, hd->v, D, 1, dq + i0 * D, D);                        \
        }                                                                                                           \
        if (dk)                                                                                                     \
            pg_gemm_##sfx(true, false, len, D, nr, scale, dS, len, qb, D, 1, dk, D);                                \
        if (dv)                                                                                                     \
            pg_gemm_##sfx(true, false, len, D, nr, 1, C, len, qb, D, 1, dv, D);                                     \
    }                                                                                                               \
    /* backward of head bh: its slices of dq, dk, dv, dz (assigned where fresh) */                                 \
    static void bwd_head_##sfx(const cattn_job *j, int64_t bh, char *scratch)                                       \
    {                                                                                                               \
        const head_##sfx hd = head_at_##sfx(j, bh);                                                                 \
        const int64_t Lq = j->Lq, Lk = j->Lk, D = j->D, Dv = j->Dv, M = ROWS * Lk;                                  \
        T *S = (T *)scratch, *A = j->gates_v ? S + M : S, *L = S + 2 * M, *dS = S + 3 * M, *C = S + 4 * M;          \
        T *Di = S + 5 * M;                                                                                          \
        char *cope_scr = scratch + scratch_bytes(Lk, j->dt) - cope_scratch(Lk, j->dt);                              \
        T *dq = j->dq ? (T *)j->dq + bh * Lq * D : NULL, *dk = j->dk ? (T *)j->dk + bh * Lk * D : NULL;             \
        T *dv = j->dv ? (T *)j->dv + bh * Lk * Dv : NULL, *dz = j->dz ? (T *)j->dz + bh * Lq * j->n : NULL;         \
        T *const zero[3] = {j->fresh[0] ? dq : NULL, j->fresh[1] ? dk : NULL, j->fresh[2] ? dv : NULL};             \
        const int64_t numel[3] = {Lq * D, Lk * D, Lk * Dv};                                                         \
        for (int i = 0; i < 3; i++)                                                                                 \
            if (zero[i])                                                                                            \
                memset(zero[i], 0, (size_t)numel[i] * sizeof(T));                                                   \
        const bool need_ds = dq || dk || (j->gates_v && dv);                                                        \
        for (int64_t i0 = 0; i0 < Lq; i0 += ROWS) {                                                                 \
            const int64_t nr = Lq - i0 < ROWS ? Lq - i0 : ROWS, len = block_keys(j, i0, nr);                        \
            const T *go = (const T *)j->dout + (bh * Lq + i0) * Dv;                                                 \
            block_logits_##sfx(j, &hd, i0, nr, len, S, A, L);                                                       \
            block_dS_##sfx(j, &hd, bh, i0, nr, len, L, dS, Di);                                                     \
            if (dv) /* dv += P^T dO */                                                                              \
                pg_gemm_##sfx(true, false, len, Dv, nr, 1, L, len, go, Dv, 1, dv, Dv);                              \
            if (need_ds || dz)                                                                                      \
                block_cope_bwd_##sfx(j, &hd, i0, nr, len, S, dS, need_ds ? C : NULL, dz, cope_scr);                 \
            if (need_ds)                                                                                            \
                block_qk_grads_##sfx(j, &hd, i0, nr, len, dS, C, dq, dk, dv);                                       \
        }                                                                                                           \
    }
DEFINE_COPE_ATTN(float, f32)
DEFINE_COPE_ATTN(double, f64)

static void cattn_task(void *ctx, int64_t bh, int thread)
{
    const cattn_job *j = ctx;
    char *scr = j->scratch + (size_t)thread * j->scr_bytes;
    if (j->dout)
        (j->dt == PG_F32 ? bwd_head_f32 : bwd_head_f64)(j, bh, scr);
    else
        (j->dt == PG_F32 ? fwd_head_f32 : fwd_head_f64)(j, bh, scr);
}

static void cattn_run(cattn_job *j, int64_t B)
{
    pg_parallel_for(B * j->H, cattn_task, j);
}

/* node: in {q, k, v, z}, saved lse, ctx the key mask (or NULL), p {scale, out_scale},
 * ip {causal, gates from v} */
static int cattn_backward(pg_graph *g, pg_node *node)
{
    pg_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2], *z = node->in[3];
    cattn_job j = {.dt = q->dtype, .H = q->shape[1], .Lq = q->shape[2], .Lk = k->shape[2], .D = q->shape[3],
                   .Dv = v->shape[3], .n = z->shape[3], .keep = node->ctx ? pg_bool(node->ctx) : NULL,
                   .causal = node->ip[0] != 0, .gates_v = node->ip[1] != 0, .scale = node->p[0],
                   .out_scale = node->p[1], .q = q->data, .k = k->data, .v = v->data, .z = z->data,
                   .out = node->out->data, .lse = node->saved->data, .dout = node->out->grad->data};
    pg_tensor *in[4] = {q, k, v, z}, *grad[4];
    void **slot[4] = {&j.dq, &j.dk, &j.dv, &j.dz};
    for (int i = 0; i < 4; i++) {
        grad[i] = in[i]->requires_grad ? pg_grad_fresh(g, in[i], &j.fresh[i]) : NULL;
        if (in[i]->requires_grad && !grad[i])
            return -1;
        *slot[i] = grad[i] ? grad[i]->data : NULL;
    }
    j.scr_bytes = scratch_bytes(j.Lk, j.dt);
    j.scratch = pg_graph_alloc(g, (size_t)pg_num_threads() * j.scr_bytes);
    if (!j.scratch)
        return -1;
    cattn_run(&j, q->shape[0]);
    return 0;
}

static bool cattn_args_ok(pg_graph *g, const char *fn, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *z,
                          const pg_cope_attn_opts *o)
{
    if (!o) {
        pg_graph_fail(g, "%s: opts is NULL", fn);
        return false;
    }
    const pg_attn_operands ops = {.layout = PG_ATTN_HEADS, .q = q, .k = k, .v = v, .mask = o->mask};
    if (pg_attn_check(g, fn, &ops) != 0)
        return false;
    if (!z) {
        pg_graph_fail(g, "%s: z is NULL", fn);
        return false;
    }
    if (z->ndim != 4 || z->dtype != q->dtype || z->shape[0] != q->shape[0] || z->shape[1] != q->shape[1] ||
        z->shape[2] != q->shape[2] || z->shape[3] > INT32_MAX) {
        pg_graph_fail(g, "%s: z is %s, expected %s (B, H, Lq, n) = (%lld, %lld, %lld, n), 1 <= n <= 2^31 - 1", fn,
                      PG_SHAPE_STR(z), pg_dtype_name(q->dtype), (long long)q->shape[0], (long long)q->shape[1],
                      (long long)q->shape[2]);
        return false;
    }
    if (o->gates_from_values && v->shape[3] != q->shape[3]) {
        pg_graph_fail(g, "%s: gates from the values need v's head dim %lld to be q's %lld", fn,
                      (long long)v->shape[3], (long long)q->shape[3]);
        return false;
    }
    if (!isfinite(o->scale) || !isfinite(o->out_scale)) {
        pg_graph_fail(g, "%s: the scales must be finite, got scale %g, out_scale %g", fn, o->scale, o->out_scale);
        return false;
    }
    return true;
}

/* the forward's scratch and, with a graph, the lse to save; g NULL: malloc'd, freed below */
static bool cattn_buffers(pg_graph *g, cattn_job *j, int64_t rows, bool rec, pg_tensor **lse)
{
    size_t T = (size_t)pg_num_threads(), lse_bytes = (size_t)rows * pg_dtype_size(j->dt);
    j->scr_bytes = scratch_bytes(j->Lk, j->dt);
    if (!g) {
        j->scratch = malloc(T * j->scr_bytes);
        j->lse = malloc(lse_bytes);
        return j->scratch && j->lse;
    }
    j->scratch = pg_graph_alloc(g, T * j->scr_bytes);
    *lse = rec ? pg_op_output(g, "pg_cope_attention", j->dt, PG_SHAPE(rows)) : NULL;
    j->lse = rec ? (*lse ? (*lse)->data : NULL) : pg_graph_alloc(g, lse_bytes);
    return j->scratch && j->lse;
}

pg_tensor *pg_cope_attention(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *z,
                             const pg_cope_attn_opts *o)
{
    const char *fn = "pg_cope_attention";
    if (!cattn_args_ok(g, fn, q, k, v, z, o))
        return NULL;
    const int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2];
    pg_tensor *out = pg_op_output(g, fn, q->dtype, PG_SHAPE(B, H, Lq, v->shape[3]));
    if (!out)
        return NULL;
    const double scale = o->scale != 0 ? o->scale : 1.0 / sqrt((double)q->shape[3]);
    cattn_job j = {.dt = q->dtype, .H = H, .Lq = Lq, .Lk = k->shape[2], .D = q->shape[3], .Dv = v->shape[3],
                   .n = z->shape[3], .keep = o->mask ? pg_bool(o->mask) : NULL, .causal = o->causal,
                   .gates_v = o->gates_from_values, .scale = scale, .out_scale = o->out_scale, .q = q->data,
                   .k = k->data, .v = v->data, .z = z->data, .out = out->data};
    pg_tensor *ins[4] = {q, k, v, z}, *lse = NULL;
    const bool rec = g && pg_op_needs_grad(g, 4, ins);
    if (!cattn_buffers(g, &j, B * H * Lq, rec, &lse)) {
        if (!g) {
            free(j.scratch);
            free(j.lse);
            pg_tensor_free(out);
            pg_set_error("%s: out of memory", fn);
        } else if (!pg_graph_error(g)) {
            pg_graph_fail(g, "%s: out of memory", fn);
        }
        return NULL;
    }
    cattn_run(&j, B);
    if (!g) {
        free(j.scratch);
        free(j.lse);
        return out;
    }
    pg_node *n = rec ? pg_op_record(g, fn, out, 4, ins, cattn_backward) : NULL;
    if (n) {
        n->saved = lse;
        n->ctx = o->mask;
        n->p[0] = scale;
        n->p[1] = o->out_scale;
        n->ip[0] = o->causal;
        n->ip[1] = o->gates_from_values;
    }
    return out;
}
