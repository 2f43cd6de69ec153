/* pg_cope_attention (autograd/ops.h): attention with CoPE's bias in one op, a block of
 * query rows at a time, forward and backward side by side (docs/pos/cope.md).
 *
 *   q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), E (D, n) (or (n, D))
 *   z_i = q_i E, the position logits;  s_ij = q_i . g_j, g = k, or v when the gates
 *   read the values (D = Dv)
 *   bias = pg_cope_interp(s, z, mask, causal, scale, out_scale)          (op_cope.c)
 *   out_i = sum_j P_ij v_j,  P_i = softmax_j(scale q_i . k_j + bias_ij), 0 where hidden
 *
 * The chain pg_matmul (z and s), pg_cope_interp and pg_flash_attention (the bias as
 * its pair_bias) in one op. A block of ROWS queries of one (b, h) holds its z, logits,
 * bias and probabilities (ROWS x n, ROWS x Lk, in its thread's scratch: memory linear
 * in L); the products go through pg_gemm, CoPE's row kernels between them
 * (autograd/cope_rows.h). Neither z nor anything of Lq x Lk is written to memory, and
 * under a causal mask a block's products stop at its last query's key. The forward
 * saves each row's logsumexp; the backward recomputes a block's z, s, bias and P, then
 *   dP = dO v^T,  dS = P (dP - rowsum(dO o))      (the gradient of logit and bias alike)
 *   dv += P^T dO;  CoPE's backward with dout = dS: ds (of s) and dz
 *   gates from k: dq += (scale dS + ds) k,  dk += (scale dS + ds)^T q
 *   gates from v: dq += scale dS k + ds v,  dk += scale dS^T q,  dv += ds^T q
 *   dq += dz E^T,  dE += q^T dz  (E's gradient a slice per head, summed in head order)
 * A head (b, h) is one task, its blocks in order: the same bits for any thread count.
 * The values are the chain's to rounding (P is normalised before P v, the chain's
 * accumulator after; the products' sums run in another order). */
#include "attn_check.h"
#include "cope_rows.h"
#include "exp_rows.h"
#include "op_util.h"

#include <stdlib.h>

#include "../tensor/gemm.h"
#include "../tensor/threadpool.h"

/* queries a block (a multiple of COPE_ROWS), and a chunk of blocks whose z is one product */
enum { ROWS = 32, CHUNK = 4 * ROWS };

typedef struct cattn_job {
    pg_dtype dt;
    int64_t H, Lq, Lk, D, Dv, n;
    const uint8_t *keep; /* (B, Lk), true: visible; NULL: no mask */
    bool causal, gates_v;
    double scale, out_scale;
    const void *q, *k, *v, *E;
    bool e_nd;                /* E stored (n, D) */
    void *out, *lse;          /* forward writes them; the backward reads them */
    const void *dout;         /* backward */
    void *dq, *dk, *dv, *dE;  /* backward, NULL when not wanted; dE: a (D, n) slice per head */
    void *dE_out;             /* E's gradient, the slices' sum */
    bool fresh[3];            /* dq, dk, dv: assign on first touch */
    char *scratch;
    size_t scr_bytes; /* per thread */
} cattn_job;

/* the keys a block of queries i0 .. i0 + nr - 1 may see: causal stops at its last query */
static int64_t block_keys(const cattn_job *j, int64_t i0, int64_t nr)
{
    return j->causal && i0 + nr < j->Lk ? i0 + nr : j->Lk;
}

/* the positions a chunk's rows may read: their sums x count at most the chunk's keys, and
 * (4) reads z at floor x + 1 at most; z's columns past it are never read */
static int64_t chunk_positions(const cattn_job *j, int64_t c0, int64_t cn)
{
    const int64_t reach = block_keys(j, c0, cn) + 2;
    return reach < j->n ? reach : j->n;
}

/* per thread: s, a (the attention's q . k when the gates read v), L (bias, logits, P),
 * dS, ds, the gates and their sums (ROWS, Lk) each, z and dz (CHUNK, n), rowsum(dO o)
 * (ROWS), then CoPE's backward's shares of a row (cope_ab_bytes) */
enum { MATS = 7 };
static size_t scratch_bytes(int64_t Lk, int64_t n, pg_dtype dt)
{
    size_t es = pg_dtype_size(dt), mats = ((size_t)MATS * ROWS * (size_t)Lk + 2 * CHUNK * (size_t)n + ROWS) * es;
    return (mats + 63) / 64 * 64 + cope_ab_bytes(Lk, dt);
}

#define DEFINE_COPE_ATTN(T, sfx)                                                                                    \
    /* one head's operands: bh = b H + h */                                                                         \
    typedef struct head_##sfx {                                                                                     \
        const T *q, *k, *v, *g;                                                                                     \
        const uint8_t *keep;                                                                                        \
    } head_##sfx;                                                                                                   \
    static head_##sfx head_at_##sfx(const cattn_job *j, int64_t bh)                                                 \
    {                                                                                                               \
        const T *k = (const T *)j->k + bh * j->Lk * j->D, *v = (const T *)j->v + bh * j->Lk * j->Dv;                \
        return (head_##sfx){(const T *)j->q + bh * j->Lq * j->D, k, v, j->gates_v ? v : k,                          \
                            j->keep ? j->keep + bh / j->H * j->Lk : NULL};                                          \
    }                                                                                                               \
    /* z (cn, nz) = q E[:, :nz] for the chunk of queries c0 .. c0 + cn - 1 */                                       \
    static void chunk_z_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t c0, int64_t cn, int64_t nz, T *Z)   \
    {                                                                                                               \
        const int64_t D = j->D;                                                                                     \
        pg_gemm_##sfx(false, j->e_nd, cn, nz, D, 1, hd->q + c0 * D, D, j->E, j->e_nd ? D : j->n, 0, Z, nz);         \
    }                                                                                                               \
    /* The block's s (nr, len) = q g^T, a = q k^T (a = s when the gates read k), and in L the                       \
     * logits scale a + bias (CoPE's interpolation adds scale a), -inf where hidden; rows of stride                 \
     * len; Zb: its rows of z (stride nz); G, X: where the gates and their sums are kept for the                    \
     * backward (NULL: not kept) */                                                                                 \
    static void block_logits_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t i0, int64_t nr, int64_t len,   \
                                   const T *Zb, int64_t nz, T *S, T *A, T *L, T *G, T *X)                           \
    {                                                                                                               \
        const int64_t D = j->D;                                                                                     \
        pg_gemm_##sfx(false, true, nr, len, D, 1, hd->q + i0 * D, D, hd->g, D, 0, S, len);                          \
        if (A != S)                                                                                                 \
            pg_gemm_##sfx(false, true, nr, len, D, 1, hd->q + i0 * D, D, hd->k, D, 0, A, len);                      \
        for (int64_t k0 = 0; k0 < nr; k0 += COPE_ROWS) {                                                            \
            const cope_rows r = {.i0 = i0 + k0, .m = len, .n = (int)nz,                                             \
                                 .nr = (int)(nr - k0 < COPE_ROWS ? nr - k0 : COPE_ROWS), .keep = hd->keep,          \
                                 .causal = j->causal, .fused = true};                                               \
            const T scale = (T)j->scale, *Ak = A + k0 * len;                                                        \
            if (G)                                                                                                  \
                cope_fwd_kept_##sfx(L + k0 * len, G + k0 * len, X + k0 * len, S + k0 * len, Zb + k0 * nz, &r,       \
                                    scale, (T)j->out_scale, Ak, scale);                                             \
            else                                                                                                    \
                cope_fwd_##sfx(L + k0 * len, S + k0 * len, Zb + k0 * nz, &r, scale, (T)j->out_scale, Ak, scale);    \
        }                                                                                                           \
        for (int64_t r = 0; hd->keep && r < nr; r++) {                                                              \
            T *l = L + r * len;                                                                                     \
            for (int64_t c = 0; c < len; c++)                                                                       \
                l[c] = hd->keep[c] ? l[c] : (T)-INFINITY;                                                           \
        }                                                                                                           \
    }                                                                                                               \
    /* P (nr, len) = softmax of the logits in L, in place, and the rows' lse; a row that sees                       \
     * no key: P 0, lse -inf */                                                                                     \
    static void block_softmax_##sfx(T *L, int64_t nr, int64_t len, T *lse)                                          \
    {                                                                                                               \
        for (int64_t r = 0; r < nr; r++) {                                                                          \
            T *p = L + r * len;                                                                                     \
            const T mx = row_max_##sfx(p, len);                                                                     \
            if (mx == -INFINITY) {                                                                                  \
                memset(p, 0, (size_t)len * sizeof(T));                                                              \
                lse[r] = (T)-INFINITY;                                                                              \
                continue;                                                                                           \
            }                                                                                                       \
            const T sum = exp_row_##sfx(p, mx, len), inv = (T)1 / sum;                                              \
            for (int64_t c = 0; c < len; c++)                                                                       \
                p[c] *= inv;                                                                                        \
            lse[r] = mx + (T)log((double)sum);                                                                      \
        }                                                                                                           \
    }                                                                                                               \
    /* forward of head bh: out (Lq, Dv) and lse (Lq), chunk by chunk, block by block */                             \
    static void fwd_head_##sfx(const cattn_job *j, int64_t bh, char *scratch)                                       \
    {                                                                                                               \
        const head_##sfx hd = head_at_##sfx(j, bh);                                                                 \
        const int64_t Lq = j->Lq, Lk = j->Lk, Dv = j->Dv;                                                           \
        T *S = (T *)scratch, *A = j->gates_v ? S + ROWS * Lk : S, *L = S + 2 * ROWS * Lk;                           \
        T *Z = S + MATS * ROWS * Lk;                                                                                \
        T *out = (T *)j->out + bh * Lq * Dv, *lse = (T *)j->lse + bh * Lq;                                          \
        for (int64_t c0 = 0; c0 < Lq; c0 += CHUNK) {                                                                \
            const int64_t cn = Lq - c0 < CHUNK ? Lq - c0 : CHUNK, nz = chunk_positions(j, c0, cn);                  \
            chunk_z_##sfx(j, &hd, c0, cn, nz, Z);                                                                   \
            for (int64_t i0 = c0; i0 < c0 + cn; i0 += ROWS) {                                                       \
                const int64_t nr = Lq - i0 < ROWS ? Lq - i0 : ROWS, len = block_keys(j, i0, nr);                    \
                block_logits_##sfx(j, &hd, i0, nr, len, Z + (i0 - c0) * nz, nz, S, A, L, NULL, NULL);               \
                block_softmax_##sfx(L, nr, len, lse + i0);                                                          \
                pg_gemm_##sfx(false, false, nr, Dv, len, 1, L, len, hd.v, Dv, 0, out + i0 * Dv, Dv);                \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
    /* P (nr, len) from the logits in L and the rows' lse; dS = P (dO v^T - rowsum(dO o)) */                        \
    static void block_dS_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t bh, int64_t i0, int64_t nr,        \
                               int64_t len, T *L, T *dS, T *Di)                                                     \
    {                                                                                                               \
        const int64_t Dv = j->Dv, at = bh * j->Lq + i0;                                                             \
        const T *lse = (const T *)j->lse + at, *o = (const T *)j->out + at * Dv;                                    \
        const T *go = (const T *)j->dout + at * Dv;                                                                 \
        for (int64_t r = 0; r < nr; r++) {                                                                          \
            if (lse[r] == -INFINITY)                                                                                \
                memset(L + r * len, 0, (size_t)len * sizeof(T));                                                    \
            else                                                                                                    \
                exp_row_##sfx(L + r * len, lse[r], len);                                                            \
            Di[r] = row_dot_##sfx(go + r * Dv, o + r * Dv, Dv);                                                     \
        }                                                                                                           \
        pg_gemm_##sfx(false, true, nr, len, Dv, 1, go, Dv, hd->v, Dv, 0, dS, len);                                  \
        for (int64_t r = 0; r < nr; r++) {                                                                          \
            T *restrict ds = dS + r * len;                                                                          \
            const T *restrict p = L + r * len;                                                                      \
            for (int64_t c = 0; c < len; c++)                                                                       \
                ds[c] = p[c] * (ds[c] - Di[r]);                                                                     \
        }                                                                                                           \
    }                                                                                                               \
    /* CoPE's backward of the block from its gates G and sums X (overwritten): C = ds (of s) and                    \
     * dZ (nr, nz) = dz, each NULL when not wanted */                                                               \
    static void block_cope_bwd_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t i0, int64_t nr,              \
                                     int64_t len, const T *Z, int64_t nz, const T *G, T *X, const T *dS, T *C,      \
                                     T *dZ, char *ab)                                                               \
    {                                                                                                               \
        for (int64_t k0 = 0; k0 < nr; k0 += COPE_ROWS) {                                                            \
            const cope_rows r = {.i0 = i0 + k0, .m = len, .n = (int)nz,                                             \
                                 .nr = (int)(nr - k0 < COPE_ROWS ? nr - k0 : COPE_ROWS), .keep = hd->keep,          \
                                 .causal = j->causal, .fused = true};                                               \
            const cope_grads io = {NULL, Z + k0 * nz, dS + k0 * len, C ? C + k0 * len : NULL,                       \
                                   dZ ? dZ + k0 * nz : NULL, true, true};                                           \
            cope_bwd_kept_##sfx(&io, &r, G + k0 * len, X + k0 * len, ab, (T)j->scale, (T)j->out_scale);             \
        }                                                                                                           \
    }                                                                                                               \
    /* dst (len, N) += alpha X^T Y, X (K, len) of stride len, Y (K, N): rows from `from` on                        \
     * assigned (a fresh gradient's rows no block reached before), the rows before added to */                      \
    static void keys_gemm_##sfx(int64_t len, int64_t N, int64_t K, T alpha, const T *X, const T *Y, int64_t from,    \
                                T *dst)                                                                             \
    {                                                                                                               \
        from = from < len ? from : len;                                                                             \
        if (from > 0)                                                                                               \
            pg_gemm_##sfx(true, false, from, N, K, alpha, X, len, Y, N, 1, dst, N);                                 \
        if (len > from)                                                                                             \
            pg_gemm_##sfx(true, false, len - from, N, K, alpha, X + from, len, Y, N, 0, dst + from * N, N);         \
    }                                                                                                               \
    /* the gradients of q and the keys from dS and C = ds; dq, dk, dv at the head; dq's rows of                     \
     * the block assigned when fresh, dk's from key dk_from on, dv added to */                                      \
    static void block_qk_grads_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t i0, int64_t nr,              \
                                     int64_t len, T *dS, T *C, T *dq, T *dk, int64_t dk_from, T *dv)                \
    {                                                                                                               \
        const int64_t D = j->D;                                                                                     \
        const T scale = (T)j->scale, *qb = hd->q + i0 * D, dq_beta = j->fresh[0] ? 0 : 1;                           \
        if (!j->gates_v) { /* C = scale dS + ds, the gradient of q k^T */                                           \
            for (int64_t e = 0; e < nr * len; e++)                                                                  \
                C[e] = scale * dS[e] + C[e];                                                                        \
            if (dq)                                                                                                 \
                pg_gemm_##sfx(false, false, nr, D, len, 1, C, len, hd->k, D, dq_beta, dq + i0 * D, D);              \
            if (dk)                                                                                                 \
                keys_gemm_##sfx(len, D, nr, 1, C, qb, dk_from, dk);                                                 \
            return;                                                                                                 \
        }                                                                                                           \
        if (dq) {                                                                                                   \
            pg_gemm_##sfx(false, false, nr, D, len, scale, dS, len, hd->k, D, dq_beta, dq + i0 * D, D);             \
            pg_gemm_##sfx(false, false, nr, D, len, 1, C, len, hd->v, D, 1, dq + i0 * D, D);                        \
        }                                                                                                           \
        if (dk)                                                                                                     \
            keys_gemm_##sfx(len, D, nr, scale, dS, qb, dk_from, dk);                                                \
        if (dv)                                                                                                     \
            pg_gemm_##sfx(true, false, len, D, nr, 1, C, len, qb, D, 1, dv, D);                                     \
    }                                                                                                               \
    /* the chunk's dq += dZ E[:, :nz]^T and E's slice of the head dEh[:, :nz] += q^T dZ, dZ (cn, nz)                \
     * (dq, dEh NULL when not wanted) */                                                                            \
    static void chunk_z_grads_##sfx(const cattn_job *j, const head_##sfx *hd, int64_t c0, int64_t cn, int64_t nz,   \
                                    const T *dZ, T *dq, T *dEh)                                                     \
    {                                                                                                               \
        const int64_t D = j->D, n = j->n, ldE = j->e_nd ? D : n;                                                    \
        const T *qc = hd->q + c0 * D;                                                                               \
        if (dq)                                                                                                     \
            pg_gemm_##sfx(false, !j->e_nd, cn, D, nz, 1, dZ, nz, j->E, ldE, 1, dq + c0 * D, D);                     \
        if (dEh && !j->e_nd)                                                                                        \
            pg_gemm_##sfx(true, false, D, nz, cn, 1, qc, D, dZ, nz, 1, dEh, n);                                     \
        else if (dEh)                                                                                               \
            pg_gemm_##sfx(true, false, nz, D, cn, 1, dZ, nz, qc, D, 1, dEh, D);                                     \
    }                                                                                                               \
    /* the rows k0 .. Lk - 1 of fresh dk and dv, which no block reached (their keys hidden from                    \
     * every query by the causal mask), zeroed */                                                                   \
    static void fresh_keys_left_##sfx(const cattn_job *j, T *dk, T *dv, int64_t k0)                                 \
    {                                                                                                               \
        if (dk && j->fresh[1] && j->Lk > k0)                                                                        \
            memset(dk + k0 * j->D, 0, (size_t)((j->Lk - k0) * j->D) * sizeof(T));                                   \
        if (dv && j->fresh[2] && j->Lk > k0)                                                                        \
            memset(dv + k0 * j->Dv, 0, (size_t)((j->Lk - k0) * j->Dv) * sizeof(T));                                 \
    }                                                                                                               \
    /* backward of head bh: its slices of dq, dk, dv (assigned where fresh) and of dE (zeroed here) */              \
    static void bwd_head_##sfx(const cattn_job *j, int64_t bh, char *scratch)                                       \
    {                                                                                                               \
        const head_##sfx hd = head_at_##sfx(j, bh);                                                                 \
        const int64_t Lq = j->Lq, Lk = j->Lk, D = j->D, Dv = j->Dv, M = ROWS * Lk;                                  \
        T *S = (T *)scratch, *A = j->gates_v ? S + M : S, *L = S + 2 * M, *dS = S + 3 * M, *C = S + 4 * M;          \
        T *G = S + 5 * M, *X = S + 6 * M, *Z = S + MATS * M, *dZ = Z + CHUNK * j->n, *Di = dZ + CHUNK * j->n;       \
        char *ab = scratch + scratch_bytes(Lk, j->n, j->dt) - cope_ab_bytes(Lk, j->dt);                             \
        T *dq = j->dq ? (T *)j->dq + bh * Lq * D : NULL, *dk = j->dk ? (T *)j->dk + bh * Lk * D : NULL;             \
        T *dv = j->dv ? (T *)j->dv + bh * Lk * Dv : NULL, *dEh = j->dE ? (T *)j->dE + bh * D * j->n : NULL;         \
        if (dEh)                                                                                                    \
            memset(dEh, 0, (size_t)(D * j->n) * sizeof(T));                                                         \
        int64_t fresh_keys = 0; /* dk, dv rows [0, fresh_keys) reached by a block */                                \
        const bool need_ds = dq || dk || (j->gates_v && dv), need_dz = dq || dEh;                                   \
        for (int64_t c0 = 0; c0 < Lq; c0 += CHUNK) {                                                                \
            const int64_t cn = Lq - c0 < CHUNK ? Lq - c0 : CHUNK, nz = chunk_positions(j, c0, cn);                  \
            chunk_z_##sfx(j, &hd, c0, cn, nz, Z);                                                                   \
            for (int64_t i0 = c0; i0 < c0 + cn; i0 += ROWS) {                                                       \
                const int64_t nr = Lq - i0 < ROWS ? Lq - i0 : ROWS, len = block_keys(j, i0, nr), zr = i0 - c0;      \
                const T *go = (const T *)j->dout + (bh * Lq + i0) * Dv;                                             \
                block_logits_##sfx(j, &hd, i0, nr, len, Z + zr * nz, nz, S, A, L, G, X);                            \
                block_dS_##sfx(j, &hd, bh, i0, nr, len, L, dS, Di);                                                 \
                if (dv) /* dv += P^T dO, its first product: the keys new to this block assigned when fresh */       \
                    keys_gemm_##sfx(len, Dv, nr, 1, L, go, j->fresh[2] ? fresh_keys : len, dv);                     \
                if (need_ds || need_dz)                                                                             \
                    block_cope_bwd_##sfx(j, &hd, i0, nr, len, Z + zr * nz, nz, G, X, dS, need_ds ? C : NULL,        \
                                         need_dz ? dZ + zr * nz : NULL, ab);                                        \
                if (need_ds)                                                                                        \
                    block_qk_grads_##sfx(j, &hd, i0, nr, len, dS, C, dq, dk, j->fresh[1] ? fresh_keys : len, dv);   \
                fresh_keys = len > fresh_keys ? len : fresh_keys;                                                   \
            }                                                                                                       \
            if (need_dz)                                                                                            \
                chunk_z_grads_##sfx(j, &hd, c0, cn, nz, dZ, dq, dEh);                                               \
        }                                                                                                           \
        fresh_keys_left_##sfx(j, dk, dv, fresh_keys);                                                               \
    }                                                                                                               \
    /* dE [begin, end) (+)= the heads' slices, in head order */                                                     \
    static void dE_sum_##sfx(T *restrict dE, const T *restrict slices, int64_t heads, int64_t size, int64_t begin,  \
                             int64_t end, bool fresh)                                                               \
    {                                                                                                               \
        for (int64_t e = begin; e < end; e++) {                                                                     \
            T acc = fresh ? (T)0 : dE[e];                                                                           \
            for (int64_t h = 0; h < heads; h++)                                                                     \
                acc += slices[h * size + e];                                                                        \
            dE[e] = acc;                                                                                            \
        }                                                                                                           \
    }
DEFINE_ROW_DOT(float, f32)
DEFINE_ROW_DOT(double, f64)
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

/* the heads over the pool, a run of consecutive heads a thread, sized to the cores' speeds */
static void cattn_run(cattn_job *j, int64_t B)
{
    op_parallel_for(B * j->H, B * j->H, 0, cattn_task, j);
}

/* dE (+)= the heads' slices: a range of E's entries a task */
typedef struct de_sum {
    const cattn_job *j;
    int64_t heads;
    bool fresh;
} de_sum;

static void de_sum_range(void *ctx, int64_t begin, int64_t end)
{
    const de_sum *x = ctx;
    const cattn_job *j = x->j;
    const int64_t size = j->D * j->n;
    if (j->dt == PG_F32)
        dE_sum_f32(j->dE_out, j->dE, x->heads, size, begin, end, x->fresh);
    else
        dE_sum_f64(j->dE_out, j->dE, x->heads, size, begin, end, x->fresh);
}

/* n, E's positions, from E (..., D, n) or (..., n, D) with unit leading dims; 0 when it is neither */
static int64_t emb_positions(const pg_tensor *E, int64_t D, bool e_nd)
{
    if (E->ndim < 2)
        return 0;
    for (int i = 0; i < E->ndim - 2; i++)
        if (E->shape[i] != 1)
            return 0;
    int64_t a = E->shape[E->ndim - 2], b = E->shape[E->ndim - 1];
    int64_t n = e_nd ? a : b, d = e_nd ? b : a;
    return d == D && n >= 1 && n <= INT32_MAX ? n : 0;
}

/* node: in {q, k, v, E}, saved lse, ctx the key mask (or NULL), p {scale, out_scale},
 * ip {causal, gates from v, E stored (n, D)} */
static int cattn_backward(pg_graph *g, pg_node *node)
{
    pg_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2], *E = node->in[3];
    const bool e_nd = node->ip[2] != 0;
    cattn_job j = {.dt = q->dtype, .H = q->shape[1], .Lq = q->shape[2], .Lk = k->shape[2], .D = q->shape[3],
                   .Dv = v->shape[3], .n = emb_positions(E, q->shape[3], e_nd),
                   .keep = node->ctx ? pg_bool(node->ctx) : NULL, .causal = node->ip[0] != 0,
                   .gates_v = node->ip[1] != 0, .scale = node->p[0], .out_scale = node->p[1], .q = q->data,
                   .k = k->data, .v = v->data, .E = E->data, .e_nd = e_nd, .out = node->out->data,
                   .lse = node->saved->data, .dout = node->out->grad->data};
    pg_tensor *in[3] = {q, k, v}, *grad;
    void **slot[3] = {&j.dq, &j.dk, &j.dv};
    for (int i = 0; i < 3; i++) {
        grad = in[i]->requires_grad ? pg_grad_fresh(g, in[i], &j.fresh[i]) : NULL;
        if (in[i]->requires_grad && !grad)
            return -1;
        *slot[i] = grad ? grad->data : NULL;
    }
    bool e_fresh = false;
    pg_tensor *dE = E->requires_grad ? pg_grad_fresh(g, E, &e_fresh) : NULL;
    const int64_t heads = q->shape[0] * j.H;
    if (E->requires_grad && !(dE && (j.dE = pg_graph_alloc(g, (size_t)(heads * j.D * j.n) * pg_dtype_size(j.dt)))))
        return -1;
    j.dE_out = dE ? dE->data : NULL;
    j.scr_bytes = scratch_bytes(j.Lk, j.n, j.dt);
    j.scratch = pg_graph_alloc(g, (size_t)pg_num_threads() * j.scr_bytes);
    if (!j.scratch)
        return -1;
    cattn_run(&j, q->shape[0]);
    if (dE)
        pg_parallel_range(j.D * j.n, 4096, de_sum_range, &(de_sum){&j, heads, e_fresh});
    return 0;
}

static bool cattn_args_ok(pg_graph *g, const char *fn, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *E,
                          const pg_cope_attn_opts *o)
{
    if (!o) {
        pg_graph_fail(g, "%s: opts is NULL", fn);
        return false;
    }
    const pg_attn_operands ops = {.layout = PG_ATTN_HEADS, .q = q, .k = k, .v = v, .mask = o->mask};
    if (pg_attn_check(g, fn, &ops) != 0)
        return false;
    if (!E) {
        pg_graph_fail(g, "%s: pos_emb is NULL", fn);
        return false;
    }
    const bool nd = o->emb_by_position;
    if (E->dtype != q->dtype || !emb_positions(E, q->shape[3], nd)) {
        pg_graph_fail(g, "%s: pos_emb is %s, expected %s %s = %s with 1 <= n <= 2^31 - 1 (leading dims 1) for q %s",
                      fn, PG_SHAPE_STR(E), pg_dtype_name(q->dtype), nd ? "(n, D)" : "(D, n)",
                      nd ? "(n, D of q)" : "(D of q, n)", PG_SHAPE_STR(q));
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
    j->scr_bytes = scratch_bytes(j->Lk, j->n, j->dt);
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

pg_tensor *pg_cope_attention(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *pos_emb,
                             const pg_cope_attn_opts *o)
{
    const char *fn = "pg_cope_attention";
    if (!cattn_args_ok(g, fn, q, k, v, pos_emb, o))
        return NULL;
    const int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    pg_tensor *out = pg_op_output(g, fn, q->dtype, PG_SHAPE(B, H, Lq, v->shape[3]));
    if (!out)
        return NULL;
    const double scale = o->scale != 0 ? o->scale : 1.0 / sqrt((double)D);
    cattn_job j = {.dt = q->dtype, .H = H, .Lq = Lq, .Lk = k->shape[2], .D = D, .Dv = v->shape[3],
                   .n = emb_positions(pos_emb, D, o->emb_by_position), .keep = o->mask ? pg_bool(o->mask) : NULL,
                   .causal = o->causal, .gates_v = o->gates_from_values, .scale = scale, .out_scale = o->out_scale,
                   .q = q->data, .k = k->data, .v = v->data, .E = pos_emb->data, .e_nd = o->emb_by_position,
                   .out = out->data};
    pg_tensor *ins[4] = {q, k, v, pos_emb}, *lse = NULL;
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
        n->ip[2] = o->emb_by_position;
    }
    return out;
}
