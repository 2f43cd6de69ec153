/* The fused attention's kernels for one element type T (autograd/flash.h,
 * docs/flash_attention.md "How it works"): the tile products, the logits of a
 * tile, the relative keys' band, the forward with the online softmax and the
 * FlashAttention-2 backward.
 *
 * Internal: autograd/op_flash.c includes this once per type with FLASH_T (float,
 * double) and FLASH_SFX (f32, f64) defined, after its type-free helpers (the band,
 * exp_row_*, exp_rows_*, row_max_*, MADD_*, RB_*, CB_*, scratch layout); no include guard. */

#define T FLASH_T
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define F(name) CAT(name, FLASH_SFX)
#define MADD CAT(MADD, FLASH_SFX)
#define RB CAT(RB, FLASH_SFX)
#define CB CAT(CB, FLASH_SFX)

/* One register block: C (RB, CB; row stride ldc) += alpha * A (RB, n) B (n, CB), or = with
 * `set`, A as in gemm_acc below; with AVX-512 or AVX2 op_flash.c's acc_block_vec */
#if defined(ACC_BLOCK_VEC_f32)
#define ACC_BLOCK CAT(ACC_BLOCK_VEC, FLASH_SFX)
#if defined(ACC_PAIR_VEC_f32)
#define ACC_PAIR CAT(ACC_PAIR_VEC, FLASH_SFX) /* a block of 2 rows */
#define ACC_QUAD CAT(ACC_QUAD_VEC, FLASH_SFX) /* a block of 4 rows (used where RB > 4) */
#endif
#else
#define ACC_BLOCK F(acc_block)
static inline void F(acc_block)(T *restrict C, int64_t ldc, const T *restrict A, int64_t ars, int64_t acs,
                                const T *restrict Bm, int64_t ldb, int64_t n, T alpha, bool set)
{
    T acc[RB][CB];
    memset(acc, 0, sizeof acc);
    for (int64_t c = 0; c < n; c++) {
        const T *restrict b = Bm + c * ldb;
        for (int i = 0; i < RB; i++) {
            const T a = A[i * ars + c * acs];
            for (int l = 0; l < CB; l++)
                acc[i][l] = MADD(a, b[l], acc[i][l]);
        }
    }
    for (int i = 0; i < RB; i++) {
        T *restrict cr = C + i * ldc;
        if (set)
            for (int l = 0; l < CB; l++)
                cr[l] = alpha * acc[i][l];
        else
            for (int l = 0; l < CB; l++)
                cr[l] += alpha * acc[i][l];
    }
}
#endif

/* C (rows, w; row stride ldc) += alpha * A (rows, n) B (n, w; row stride ldb),
 * or = with `set` (C is then not read), A[r, c] at A[r * ars + c * acs] (a
 * transposed A costs nothing: its entries are broadcast one at a time).
 * Blocks of RB rows x CB columns accumulate in registers. */
FLASH_NOINLINE
static void F(gemm_acc)(T *restrict C, int64_t ldc, const T *restrict A, int64_t ars, int64_t acs,
                        const T *restrict Bm, int64_t ldb, int64_t rows, int64_t n, int64_t w, T alpha, bool set)
{
    if (set) { /* only the edges accumulate in place: zero them */
        int64_t full_r = rows / RB * RB, full_w = w / CB * CB;
        for (int64_t r = 0; r < rows; r++) {
            int64_t from = r < full_r ? full_w : 0;
            if (from < w)
                memset(C + r * ldc + from, 0, (size_t)(w - from) * sizeof(T));
        }
    }
    int64_t r = 0;
    for (; r + RB <= rows; r += RB) {
        int64_t e0 = 0;
        for (; e0 + CB <= w; e0 += CB)
            ACC_BLOCK(C + r * ldc + e0, ldc, A + r * ars, ars, acs, Bm + e0, ldb, n, alpha, set);
        for (int i = 0; e0 < w && i < RB; i++) { /* the last w % CB columns */
            T *restrict cr = C + (r + i) * ldc;
            for (int64_t c = 0; c < n; c++) {
                const T a = alpha * A[(r + i) * ars + c * acs];
                const T *restrict b = Bm + c * ldb;
                for (int64_t e = e0; e < w; e++)
                    cr[e] = MADD(a, b[e], cr[e]);
            }
        }
    }
#if defined(ACC_PAIR)
    /* with AVX2 the blocks are 6 rows: the last 4 rows of 64 in a block of 4 (two blocks of 2
     * have half the independent multiply-adds: the fused float forward and backward took
     * 0.5-1.6% longer), the last 2 of 32 in a block of 2 */
    for (; RB > 4 && w % CB == 0 && r + 4 <= rows; r += 4)
        for (int64_t e0 = 0; e0 < w; e0 += CB)
            ACC_QUAD(C + r * ldc + e0, ldc, A + r * ars, ars, acs, Bm + e0, ldb, n, alpha, set);
    for (; w % CB == 0 && r + 2 <= rows; r += 2)
        for (int64_t e0 = 0; e0 < w; e0 += CB)
            ACC_PAIR(C + r * ldc + e0, ldc, A + r * ars, ars, acs, Bm + e0, ldb, n, alpha, set);
#endif
    for (; r < rows; r++) { /* the last rows % RB rows */
        T *restrict cr = C + r * ldc;
        for (int64_t c = 0; c < n; c++) {
            const T a = alpha * A[r * ars + c * acs];
            const T *restrict b = Bm + c * ldb;
            for (int64_t e = 0; e < w; e++)
                cr[e] = MADD(a, b[e], cr[e]);
        }
    }
}

/* X (n, w; row stride ldx) -> Xt (w, n; row stride ldt): the vector form's squares in
 * registers (op_flash.c, TRANSPOSE_VEC_*), the rest in strips of 16 rows of X (contiguous
 * stores) */
static void F(transpose)(T *restrict Xt, int64_t ldt, const T *restrict X, int64_t ldx, int64_t n, int64_t w)
{
    int64_t c0 = CAT(TRANSPOSE_VEC, FLASH_SFX)(Xt, ldt, X, ldx, n, w);
    for (; c0 + 16 <= n; c0 += 16)
        for (int64_t e = 0; e < w; e++)
            for (int l = 0; l < 16; l++)
                Xt[e * ldt + c0 + l] = X[(c0 + l) * ldx + e];
    for (; c0 < n; c0++)
        for (int64_t e = 0; e < w; e++)
            Xt[e * ldt + c0] = X[c0 * ldx + e];
}

#include "flash_xpos.h" /* xPos tiles: F(xpos_tile), F(xpos_keys), ... */

#ifndef FLASH_VISIBLE_COLS
#define FLASH_VISIBLE_COLS
/* A block's relative logits are computed in chunks of REL_ROWS queries, each over the
 * distances its own rows meet (causal: row r of the block needs i0 + r + 1 of them) */
#define REL_ROWS 32
#define REL_CHUNKS ((BQ + REL_ROWS - 1) / REL_ROWS)

/* the keys c < this count of row r of the tile (i0, j0, bk) can be visible (causal: j <= i) */
static int64_t visible_cols(const flash_dims *d, int64_t i0, int64_t r, int64_t j0, int64_t bk)
{
    if (!d->causal)
        return bk;
    int64_t n = i0 + r - j0 + 1;
    return n < 0 ? 0 : n < bk ? n : bk;
}
#endif

/* Causal tiles that cross the diagonal go in chunks of CUT_ROWS queries (or keys), each over
 * the keys its rows can see (or the queries that see its keys): of a 64 x 64 diagonal tile's
 * products a quarter is skipped, a tenth of all the tile products at L = 256. */
#ifndef FLASH_CUT_ROWS
#define FLASH_CUT_ROWS
#define CUT_ROWS 32
/* whether the tile (i0, j0, bk) hides a key from a row (causal: from its first row) */
static bool tile_cut(const flash_dims *d, int64_t i0, int64_t j0, int64_t bk)
{
    return d->causal && j0 + bk - 1 > i0;
}

/* the first row of the tile (i0, j0) that sees key c (causal: j <= i), at most bq */
static int64_t first_row(int64_t i0, int64_t j0, int64_t c, int64_t bq)
{
    const int64_t r = j0 + c - i0;
    return r < 0 ? 0 : r < bq ? r : bq;
}
#endif

/* C (bq, bk) = alpha A (bq, n) B (n, bk) over the tile's keys (A's entries at r * ars + c):
 * per chunk of rows the keys they can see rounded up to whole register blocks, the rest of
 * the chunk's rows zeroed (keys hidden from all of them) */
static void F(tile_cols)(const flash_dims *d, int64_t i0, int64_t j0, int64_t bk, T *C, int64_t ldc, const T *A,
                         int64_t ars, const T *Bm, int64_t ldb, int64_t bq, int64_t n, T alpha)
{
    if (!tile_cut(d, i0, j0, bk)) {
        F(gemm_acc)(C, ldc, A, ars, 1, Bm, ldb, bq, n, bk, alpha, true);
        return;
    }
    for (int64_t r0 = 0; r0 < bq; r0 += CUT_ROWS) {
        const int64_t r1 = r0 + CUT_ROWS < bq ? r0 + CUT_ROWS : bq, vis = visible_cols(d, i0, r1 - 1, j0, bk);
        const int64_t up = (vis + CB - 1) / CB * CB, w = up < bk ? up : bk;
        if (w > 0)
            F(gemm_acc)(C + r0 * ldc, ldc, A + r0 * ars, ars, 1, Bm, ldb, r1 - r0, n, w, alpha, true);
        for (int64_t r = r0; w < bk && r < r1; r++)
            memset(C + r * ldc + w, 0, (size_t)(bk - w) * sizeof(T));
    }
}

/* C (bq, w) (+)= alpha A (bq, bk) B (bk, w), the inner dimension the tile's keys (A's
 * entries at r * ars + c, 0 where hidden): per chunk of rows over the keys they can see */
static void F(tile_inner)(const flash_dims *d, int64_t i0, int64_t j0, int64_t bk, T *C, int64_t ldc, const T *A,
                          int64_t ars, const T *Bm, int64_t ldb, int64_t bq, int64_t w, T alpha, bool set)
{
    if (!tile_cut(d, i0, j0, bk)) {
        F(gemm_acc)(C, ldc, A, ars, 1, Bm, ldb, bq, bk, w, alpha, set);
        return;
    }
    for (int64_t r0 = 0; r0 < bq; r0 += CUT_ROWS) {
        const int64_t r1 = r0 + CUT_ROWS < bq ? r0 + CUT_ROWS : bq, vis = visible_cols(d, i0, r1 - 1, j0, bk);
        F(gemm_acc)(C + r0 * ldc, ldc, A + r0 * ars, ars, 1, Bm, ldb, r1 - r0, vis, w, alpha, set);
    }
}

/* One head's relative keys for the tiles: the head's queries of the term (Lq, D), its keys
 * rk (Lq + Lk - 1, D), the same transposed (Rt, D x r_stride), and for the current block
 * of queries the band of distance indices its tiles meet, from t_lo on, with the block's
 * relative logits tab (bq rows of stride r_stride, column t - t_lo) and in the backward
 * their gradient dtab; chunk h of REL_ROWS rows covers columns [off[h], off[h] + w[h]). */
typedef struct F(rel_head) {
    const T *q, *rk, *Rt;
    int64_t ldq; /* q's row stride: D, or with rq_self q's own (qkv_ld) */
    T *tab, *dtab;
    int64_t t_lo, off[REL_CHUNKS], w[REL_CHUNKS];
} F(rel_head);

/* The block of queries [i0, i0 + bq) against keys [jstart, jend): distance indices t =
 * i - j + Lk - 1 (causal: j <= i, so t >= Lk - 1), and per chunk of rows [r0, r1) tab =
 * rs q (rows, D) x Rt band (D, the chunk's distances rounded up to whole register blocks:
 * Rt's zero padding). One product a chunk where a product a tile would compute each tile's
 * bq + bk - 1 distances (1.4x the tiles' logits at L = 256, 64 x 64 tiles; the chunks
 * 0.9x). With grads (the backward) the chunks' bands of dtab zeroed. */
static void F(rel_block)(const flash_dims *d, F(rel_head) *rh, int64_t i0, int64_t bq, int64_t jstart, int64_t jend,
                         bool grads)
{
    const int64_t Lk = d->Lk, D = d->D, ld = r_stride(d), t_min = d->causal ? Lk - 1 : 0;
    const int64_t t_lo = i0 - (jend - 1) + Lk - 1 > t_min ? i0 - (jend - 1) + Lk - 1 : t_min;
    rh->t_lo = t_lo;
    for (int64_t h = 0, r0 = 0; h < REL_CHUNKS; h++, r0 += REL_ROWS) {
        const int64_t r1 = r0 + REL_ROWS < bq ? r0 + REL_ROWS : bq, hi = i0 + r1 - 1 - jstart + Lk - 1;
        const int64_t lo = i0 + r0 - (jend - 1) + Lk - 1 > t_lo ? i0 + r0 - (jend - 1) + Lk - 1 : t_lo;
        rh->off[h] = lo - t_lo;
        rh->w[h] = r0 < bq && hi >= lo ? hi - lo + 1 : 0;
        if (rh->w[h] == 0)
            continue;
        const int64_t wp = (rh->w[h] + CB - 1) / CB * CB; /* lo + wp <= r_stride */
        F(gemm_acc)(rh->tab + r0 * ld + rh->off[h], ld, rh->q + (i0 + r0) * rh->ldq, rh->ldq, 1, rh->Rt + lo, ld,
                    r1 - r0, D, wp, (T)d->rs, true);
        for (int64_t r = r0; grads && r < r1; r++)
            memset(rh->dtab + r * ld + rh->off[h], 0, (size_t)rh->w[h] * sizeof(T));
    }
}

/* S += rs q_i . rk[i - j + Lk - 1] over the tile (i0, j0, bk): row r takes its visible keys'
 * entries of the block's tab, c at t = i0 + r - j0 - c + Lk - 1 */
static void F(rel_tile)(const flash_dims *d, T *restrict S, const F(rel_head) *rh, int64_t i0, int64_t bq,
                        int64_t j0, int64_t bk)
{
    const int64_t ld = r_stride(d);
    for (int64_t r = 0; r < bq; r++) {
        T *restrict s = S + r * BK;
        const T *restrict tr = rh->tab + r * ld + (i0 + r - j0 + d->Lk - 1 - rh->t_lo);
        for (int64_t c = 0, cm = visible_cols(d, i0, r, j0, bk); c < cm; c++) /* the rest is hidden */
            s[c] += tr[-c];
    }
}

/* The tile's share of the block's dtab: dtab[r, t] = dS[r, c] for its visible keys (each
 * (r, t) is one key's, so assigned) */
static void F(rel_tile_grads)(const flash_dims *d, const T *restrict dS, const F(rel_head) *rh, int64_t i0,
                              int64_t bq, int64_t j0, int64_t bk)
{
    const int64_t ld = r_stride(d);
    for (int64_t r = 0; r < bq; r++) {
        T *restrict tr = rh->dtab + r * ld + (i0 + r - j0 + d->Lk - 1 - rh->t_lo);
        const T *restrict ds = dS + r * BK;
        for (int64_t c = 0, cm = visible_cols(d, i0, r, j0, bk); c < cm; c++)
            tr[-c] = ds[c];
    }
}

/* The block's relative gradients once its tiles are done, chunk by chunk: drq (rows, D; row
 * stride ldrq) += rs dtab rk band, drk band += rs dtab^T q */
static void F(rel_block_grads)(const flash_dims *d, const F(rel_head) *rh, T *drq, int64_t ldrq, T *drk, int64_t i0,
                               int64_t bq)
{
    const int64_t D = d->D, ld = r_stride(d);
    for (int64_t h = 0, r0 = 0; h < REL_CHUNKS && r0 < bq; h++, r0 += REL_ROWS) {
        const int64_t rows = r0 + REL_ROWS < bq ? REL_ROWS : bq - r0, w = rh->w[h], t0 = rh->t_lo + rh->off[h];
        const T *blk = rh->dtab + r0 * ld + rh->off[h];
        if (drq && w > 0)
            F(gemm_acc)(drq + (i0 + r0) * ldrq, ldrq, blk, ld, 1, rh->rk + t0 * D, D, rows, w, D, (T)d->rs, false);
        if (drk && w > 0)
            F(gemm_acc)(drk + t0 * D, D, blk, 1, ld, rh->q + (i0 + r0) * rh->ldq, rh->ldq, w, rows, D, (T)d->rs,
                        false);
    }
}

#ifndef FLASH_WBIAS_SPAN
#define FLASH_WBIAS_SPAN
/* The stream index of pair (i, j0) of row bh_i for the dropout mask, and the tile's
 * columns [*c0, *c1) that have one (flash.h: the (B, H, Lq, Lk) layout, or LocalAttention's
 * windows: slots from key (floor(i / w) - lb) w on, S of them). */
static uint64_t drop_row(const flash_dims *d, int64_t bh_i, int64_t i, int64_t j0, int64_t bk, int64_t *c0,
                         int64_t *c1)
{
    if (d->dw <= 0) {
        *c0 = 0, *c1 = bk;
        return (uint64_t)((bh_i * d->Lq + i) * d->Lk + j0);
    }
    const int64_t om = i / d->dw, first = (om - d->dlb) * d->dw, s0 = j0 - first;
    *c0 = s0 < 0 ? -s0 : 0;
    *c1 = d->dS - s0 < bk ? d->dS - s0 : bk;
    if (*c1 < *c0)
        *c1 = *c0;
    return (uint64_t)(((bh_i * d->dW + om) * d->dw + i % d->dw) * d->dS + s0); /* wraps for s0 < 0: c0 skips it */
}

/* The window bias's columns of query i in the tile (j0, bk): [*c0, *c1), column c at slot
 * *sl0 + c (flash.h window_bias: slots from key (floor(i / w) - lb) w on). */
static void wbias_span(const flash_dims *d, int64_t i, int64_t j0, int64_t bk, int64_t *c0, int64_t *c1,
                       int64_t *sl0)
{
    const int64_t first = (i / d->w - d->lb) * d->w; /* slot 0's key; (lb + lf + 1) w fits (checked) */
    *sl0 = j0 - first;
    *c0 = first > j0 ? first - j0 : 0;
    *c1 = first + d->wb_S - j0 < bk ? first + d->wb_S - j0 : bk;
}
#endif

/* One head's operands, bh_i = b H + h: its queries, keys, values and the biases' rows */
typedef struct F(head) {
    const T *q, *k, *v; /* (Lq, D), (Lk, D), (Lk, Dv); q's rows ldq apart, k's ldk, v's qkv_ld */
    int64_t ldq, ldk;   /* qkv_ld, or D for the head's own copies (rot_head, shift_head) */
    const T *bias;      /* dist_bias row (Lq + Lk - 1) or NULL */
    const T *wb;        /* window bias (w, NS) or NULL */
    const T *sep[2];    /* separable bias (Lq), (Lk) or NULL */
    const T *pair;      /* pair bias (Lq, Lk) or NULL */
    const uint8_t *mask; /* (Lk) or NULL */
} F(head);

static F(head) F(head_at)(const flash_dims *d, int64_t bh_i, const T *q, const T *k, const T *v, const T *bias)
{
    const int64_t Lq = d->Lq, Lk = d->Lk;
    F(head) hd = {q + qkv_at(d, bh_i, Lq, d->D), k + qkv_at(d, bh_i, Lk, d->D), v + qkv_at(d, bh_i, Lk, d->Dv),
                  qkv_ld(d, d->D), qkv_ld(d, d->D), bias ? bias + (bh_i % d->H) * (Lq + Lk - 1) : NULL,
                  d->wb ? (const T *)d->wb + (bh_i % d->wb_H) * d->w * d->wb_S : NULL,
                  {d->sq ? (const T *)d->sq + bh_i * Lq : NULL, d->sk ? (const T *)d->sk + bh_i * Lk : NULL},
                  d->pb ? (const T *)d->pb + (bh_i % d->pb_H) * Lq * Lk : NULL,
                  d->mask ? d->mask + (bh_i / d->H) * Lk : NULL};
    return hd;
}

/* S[r * BK + c] = logit of query i0 + r and key j0 + c for r < bq, c < bk
 * (-inf where hidden); Kt (D, Lk; row stride t_stride) holds the keys of the head transposed;
 * with xPos (xt) the block's scaled queries xt->Qx and the tile's keys scaled here instead. */
static void F(tile_logits)(const flash_dims *d, T *restrict S, const F(head) *hd, const T *restrict Kt,
                           const F(rel_head) *rh, F(xpos_tile) *xt, int64_t i0, int64_t bq, int64_t j0, int64_t bk)
{
    const int64_t D = d->D, Lk = d->Lk;
    const T *restrict qh = hd->q, *restrict bh = hd->bias, *restrict wbh = hd->wb, *restrict pbh = hd->pair;
    const T *const *sep = hd->sep;
    const uint8_t *restrict mk = hd->mask;
    if (xt) { /* S = scale Qx Kx */
        F(xpos_keys)(d, xt, i0, j0, bk);
        F(tile_cols)(d, i0, j0, bk, S, BK, xt->Qx, D, xt->Kx, BK, bq, D, (T)d->scale);
    } else {
        const int64_t ldq = hd->ldq;
        F(tile_cols)(d, i0, j0, bk, S, BK, qh + i0 * ldq, ldq, Kt + j0, t_stride(d), bq, D, (T)d->scale);
    }
    if (rh)
        F(rel_tile)(d, S, rh, i0, bq, j0, bk);
    /* the band test can be skipped for a tile every query of which sees every key */
    bool banded = false;
    if (d->w > 0) {
        int64_t lo_last, hi_last, lo_first, hi_first; /* lo and hi grow with i */
        band(d, i0, &lo_first, &hi_first);
        band(d, i0 + bq - 1, &lo_last, &hi_last);
        banded = lo_last > j0 || hi_first < j0 + bk - 1;
    }
    for (int64_t r = 0; r < bq; r++) {
        T *restrict s = S + r * BK;
        if (bh) { /* bias of distance i - j at index i - j + Lk - 1, decreasing with c */
            const T *restrict br = bh + (i0 + r - j0 + Lk - 1);
            for (int64_t c = 0; c < bk; c++)
                s[c] += br[-c];
        }
        if (pbh) { /* the pair bias: row i, keys j0 .. */
            const T *restrict pr = pbh + (i0 + r) * Lk + j0;
            for (int64_t c = 0; c < bk; c++)
                s[c] += pr[c];
        }
        if (wbh) { /* the window bias: row i mod w, the keys' slots */
            int64_t c0, c1, sl0;
            wbias_span(d, i0 + r, j0, bk, &c0, &c1, &sl0);
            const T *restrict wr = wbh + ((i0 + r) % d->w) * d->wb_S + sl0;
            for (int64_t c = c0; c < c1; c++)
                s[c] += wr[c];
        }
        if (sep[0] || sep[1]) { /* separable: + (sq[i] - sk[j]), a missing side 0, the difference first
                                 * (as the bias matrix has it) */
            const T a = sep[0] ? sep[0][i0 + r] : (T)0;
            const T *restrict sk = sep[1] ? sep[1] + j0 : NULL;
            for (int64_t c = 0; sk && c < bk; c++) /* two loops: no load from a NULL sk, not even masked */
                s[c] += a - sk[c];
            for (int64_t c = 0; !sk && c < bk; c++)
                s[c] += a;
        }
        if (mk)
            for (int64_t c = 0; c < bk; c++)
                s[c] = mk[j0 + c] ? s[c] : (T)-INFINITY;
        for (int64_t c = visible_cols(d, i0, r, j0, bk); c < bk; c++) /* causal: j > i */
            s[c] = (T)-INFINITY;
        if (banded) { /* outside the local band */
            int64_t lo, hi;
            band(d, i0 + r, &lo, &hi);
            for (int64_t c = 0; c < bk; c++)
                s[c] = j0 + c < lo || j0 + c > hi ? (T)-INFINITY : s[c];
        }
    }
}

/* rh for head bh_i (operands hd): its queries of the term (with rq_self the head's own, as
 * the tiles read them) and keys, the keys transposed into Rt (kept when the previous row was
 * of the same head h: the keys are the head's, not the row's; rh starts zeroed, so the first
 * row always transposes) */
static void F(rel_head_load)(const flash_dims *d, F(rel_head) *rh, T *Rt, const F(head) *hd, int64_t bh_i)
{
    const int64_t NB = d->Lq + d->Lk - 1;
    const T *rk = (const T *)d->rk + (bh_i % d->H) * NB * d->D;
    rh->q = d->rq_self ? hd->q : (const T *)d->rq + bh_i * d->Lq * d->D;
    rh->ldq = d->rq_self ? hd->ldq : d->D;
    if (rh->rk == rk)
        return;
    rh->rk = rk;
    const int64_t ldr = r_stride(d);
    F(transpose)(Rt, ldr, rh->rk, d->D, NB, d->D);
    for (int64_t e = 0; e < d->D; e++) /* the padding columns a tile's product may read */
        memset(Rt + e * ldr + NB, 0, (size_t)(ldr - NB) * sizeof(T));
    rh->Rt = Rt;
}

/* A thread's keys in Rt from its previous call of the job (chunks of a job, pg_parallel_chunks,
 * come one after another on a thread's scratch): which head's they are, so that a call going on
 * with that head does not transpose them again. rt_kept NULL: nothing kept. */
static void F(rel_head_resume)(F(rel_head) *rh, T *Rt, const void *const *rt_kept)
{
    if (rh && rt_kept && *rt_kept)
        rh->rk = *rt_kept, rh->Rt = Rt;
}

static void F(rel_head_keep)(const F(rel_head) *rh, const void **rt_kept)
{
    if (rh && rt_kept)
        *rt_kept = rh->rk;
}

/* Dropout of the tile's probabilities (flash.h "dropout"): pair (i, j) of head bh_i is
 * kept where its uniform number of the call's stream (drop_row) is < 1 - p (pg_dropout's
 * mask of the weights) and then scaled by 1 / (1 - p). With Z: the factors into Z
 * (bq x BK); without: applied to P in place. */
static void F(drop_tile)(const flash_dims *d, T *restrict P, T *restrict Z, int64_t bh_i, int64_t i0, int64_t bq,
                         int64_t j0, int64_t bk)
{
    const double keep = 1.0 - d->drop;
    const T sc = (T)(d->drop < 1 ? 1.0 / (1.0 - d->drop) : 0.0);
    double u[BK];
    for (int64_t r = 0; r < bq; r++) {
        int64_t c0, c1;
        uint64_t at = drop_row(d, bh_i, i0 + r, j0, bk, &c0, &c1);
        for (int64_t c = 0; c < bk; c++) /* no number for a key outside the slots: never visible */
            u[c] = 1.0;
        pg_rng_uniforms_at(&d->drop_rng, at + (uint64_t)c0, c1 - c0, u + c0);
        if (Z)
            for (int64_t c = 0; c < bk; c++)
                Z[r * BK + c] = u[c] < keep ? sc : (T)0;
        else
            for (int64_t c = 0; c < bk; c++)
                P[r * BK + c] = u[c] < keep ? P[r * BK + c] * sc : (T)0;
    }
}

/* A head's keys (hd's) for the tiles: transposed into Kt (row stride t_stride), or with xPos
 * left to the tiles (they scale them themselves); its relative keys into rh and Rt */
static void F(keys_load)(const flash_dims *d, F(xpos_tile) *xt, F(rel_head) *rh, T *Kt, T *Rt, const F(head) *hd,
                         int64_t bh_i)
{
    if (xt)
        xt->kh = hd->k, xt->ldk = hd->ldk;
    else
        F(transpose)(Kt, t_stride(d), hd->k, hd->ldk, d->Lk, d->D);
    if (rh)
        F(rel_head_load)(d, rh, Rt, hd, bh_i);
}

/* Rotation table i (0, 1: q's cos, sin; 2, 3: k's) at head bh_i's rows (L, rot_R) */
static const T *F(rot_table)(const flash_dims *d, int i, int64_t bh_i)
{
    const int64_t L = i < 2 ? d->Lq : d->Lk;
    return (const T *)d->rot[i] + (d->rot_batched[i / 2] ? bh_i / d->H : 0) * L * d->rot_R;
}

/* With the rotation or the queries' shift, a thread's last own_elems(d) elements of scratch
 * (NULL without): the rotation's part 0 the head's rotated queries Qr (Lq, D), 1 its keys Kr
 * (Lk, D), in the backward 2 and 3 their gradients dQr (Lq, D), dKr (Lk, D); the shift's
 * part 0 its shifted queries Qs (Lq, D), 2 their gradient dQs (parts 1 and 3 empty) */
static T *F(own_scratch)(const flash_dims *d, void *scratch)
{
    return d->rot[0] || d->qs ? (T *)scratch + scratch_elems(d) - own_elems(d) : NULL;
}
static T *F(own_part)(const flash_dims *d, T *own, int part)
{
    const int64_t q = d->Lq * d->D, k = d->rot[0] ? d->Lk * d->D : 0;
    return own + (part == 0 ? 0 : part == 1 ? q : part == 2 ? q + k : 2 * q + k);
}

/* With the rotation (flash.h rot_*): the head's queries and keys rotated into Qr and Kr of
 * the thread's rotation scratch, which its tiles then read (hd's rows D apart) */
static void F(rot_head)(const flash_dims *d, F(head) *hd, int64_t bh_i, T *rot)
{
    const int64_t D = d->D, R = d->rot_R;
    T *Qr = F(own_part)(d, rot, 0), *Kr = F(own_part)(d, rot, 1);
    F(rot_rows)(Qr, D, hd->q, hd->ldq, F(rot_table)(d, 0, bh_i), F(rot_table)(d, 1, bh_i), d->Lq, R, D,
                d->rot_interleaved);
    F(rot_rows)(Kr, D, hd->k, hd->ldk, F(rot_table)(d, 2, bh_i), F(rot_table)(d, 3, bh_i), d->Lk, R, D,
                d->rot_interleaved);
    hd->q = Qr, hd->k = Kr, hd->ldq = hd->ldk = D;
}

/* The chain rule through rot_head: dq (row stride qkv_ld) += the rotation's backward of the
 * head's dQr, dk of dKr, each assigned where `fresh` (bits 0, 1) says it is unwritten */
static void F(rot_head_grads)(const flash_dims *d, int64_t bh_i, T *dq, T *dk, T *rot, unsigned fresh)
{
    const int64_t D = d->D, R = d->rot_R, ld = qkv_ld(d, D);
    const T *dQr = F(own_part)(d, rot, 2), *dKr = F(own_part)(d, rot, 3);
    if (dq)
        F(rot_rows_back)(dq, ld, dQr, D, F(rot_table)(d, 0, bh_i), F(rot_table)(d, 1, bh_i), d->Lq, R, D,
                         d->rot_interleaved, fresh & 1u);
    if (dk)
        F(rot_rows_back)(dk, ld, dKr, D, F(rot_table)(d, 2, bh_i), F(rot_table)(d, 3, bh_i), d->Lk, R, D,
                         d->rot_interleaved, fresh & 2u);
}

/* With the queries' shift (flash.h q_shift): the head's queries plus its shift into Qs of
 * the thread's own scratch, which its tiles (and with rq_self the relative term) then read */
static void F(shift_head)(const flash_dims *d, F(head) *hd, int64_t bh_i, T *own)
{
    const int64_t D = d->D;
    T *Qs = F(own_part)(d, own, 0);
    const T *restrict sh = (const T *)d->qs + (bh_i % d->H) * D;
    for (int64_t i = 0; i < d->Lq; i++) {
        const T *restrict qi = hd->q + i * hd->ldq;
        T *restrict si = Qs + i * D;
        if (i + ROT_AHEAD < d->Lq) /* the projection's rows, far apart: as rot_rows (rotate_rows.h) */
            pg_prefetch_row(qi + ROT_AHEAD * hd->ldq, D * (int64_t)sizeof(T));
        for (int64_t e = 0; e < D; e++)
            si[e] = qi[e] + sh[e];
    }
    hd->q = Qs, hd->ldq = D;
}

/* The chain rule through shift_head: dq (row stride qkv_ld; NULL: not asked for) += the
 * head's dQs, assigned where `fresh` (bit 0) says it is unwritten; the shift's gradient dqs
 * (its head's D; NULL: not asked for) += each row of dQs in turn */
static void F(shift_head_grads)(const flash_dims *d, T *dq, T *dqs, T *own, unsigned fresh)
{
    const int64_t D = d->D, ld = qkv_ld(d, D);
    const bool assign = fresh & 1u;
    const T *dQs = F(own_part)(d, own, 2);
    for (int64_t i = 0; i < d->Lq; i++) {
        const T *restrict si = dQs + i * D;
        if (dq) {
            T *restrict gi = dq + i * ld;
            if (i + ROT_AHEAD < d->Lq) /* rows far apart, as shift_head's */
                pg_prefetch_row_for_write(gi + ROT_AHEAD * ld, D * (int64_t)sizeof(T));
            if (assign)
                memcpy(gi, si, (size_t)D * sizeof(T));
            else
                for (int64_t e = 0; e < D; e++)
                    gi[e] += si[e];
        }
        for (int64_t e = 0; dqs && e < D; e++)
            dqs[e] += si[e];
    }
}

/* The u-th row of a thread's walk over the B x H rows bh = b H + h: with relative keys
 * (shared by the batches of a head) head-major, h = u / B, so that a thread's consecutive
 * rows share their keys' transpose; else u itself. */
static inline int64_t F(row_at)(const flash_dims *d, int64_t u)
{
    return d->rq ? (u % d->B) * d->H + u / d->B : u;
}

/* Rows bh_i = row_at(u) for u in [u0, u1) of the B x H of them. */
static void F(flash_fwd)(const flash_dims *d, T *out, T *lse, const T *q, const T *k, const T *v, const T *bias,
                         void *scratch, const void **rt_kept, int64_t u0, int64_t u1)
{
    const int64_t Lq = d->Lq, D = d->D, Dv = d->Dv;
    const int64_t ldt = t_stride(d);
    T *Kt = (T *)scratch + xpos_elems(d), *S = Kt + D * ldt, *acc = S + BQ * BK, *m = acc + BQ * Dv, *l = m + BQ;
    F(rel_head) rel = {0}, *rh = d->rq ? &rel : NULL;
    T *Rt = l + BQ; /* with relative keys: Rt (D, r_stride), then the block's tab */
    rel.tab = Rt + D * r_stride(d);
    F(rel_head_resume)(rh, Rt, rt_kept);
    F(xpos_tile) xpos, *xt = d->xz ? &xpos : NULL;
    if (xt)
        F(xpos_init)(d, xt, scratch);
    T *const own = F(own_scratch)(d, scratch);
    for (int64_t u = u0; u < u1; u++) {
        const int64_t bh_i = F(row_at)(d, u);
        F(head) hd = F(head_at)(d, bh_i, q, k, v, bias);
        if (d->rot[0])
            F(rot_head)(d, &hd, bh_i, own);
        if (d->qs)
            F(shift_head)(d, &hd, bh_i, own);
        const T *qh = hd.q, *vh = hd.v;
        T *oh = out + out_at(d, bh_i), *lh = lse + bh_i * Lq;
        const int64_t ldo = out_ld(d), ldv = qkv_ld(d, Dv);
        F(keys_load)(d, xt, rh, Kt, Rt, &hd, bh_i);
        for (int64_t i0 = 0; i0 < Lq; i0 += BQ) {
            int64_t bq = Lq - i0 < BQ ? Lq - i0 : BQ;
            int64_t jstart, jend;
            key_range(d, i0, bq, &jstart, &jend);
            for (int64_t r = 0; r < bq; r++)
                m[r] = -INFINITY, l[r] = 0;
            memset(acc, 0, (size_t)(bq * Dv) * sizeof(T));
            if (xt && jstart < jend)
                F(xpos_queries)(d, xt, qh, hd.ldq, i0, bq);
            if (rh && jstart < jend)
                F(rel_block)(d, rh, i0, bq, jstart, jend, false);
            for (int64_t j0 = jstart; j0 < jend; j0 += BK) {
                int64_t bk = jend - j0 < BK ? jend - j0 : BK;
                F(tile_logits)(d, S, &hd, Kt, rh, xt, i0, bq, j0, bk);
                int64_t vis[BQ]; /* online softmax: S becomes P, -inf from vis on */
                T mn[BQ], sum[BQ];
                for (int64_t r = 0; r < bq; r++) {
                    vis[r] = visible_cols(d, i0, r, j0, bk);
                    const T mx = F(row_max)(S + r * BK, vis[r]);
                    mn[r] = mx > m[r] ? mx : m[r];
                    vis[r] = mn[r] == -INFINITY ? 0 : vis[r]; /* nothing visible yet: P = 0 */
                }
                F(exp_rows)(S, BK, mn, vis, bq, bk, sum);
                for (int64_t r = 0; r < bq; r++) {
                    if (mn[r] == -INFINITY)
                        continue;
                    /* exp(0) = 1 and exp(-inf) = 0 exactly: libm only where the max moved */
                    T alpha = m[r] == mn[r] ? (T)1 : m[r] == -INFINITY ? (T)0 : (T)exp((double)(m[r] - mn[r]));
                    l[r] = l[r] * alpha + sum[r];
                    m[r] = mn[r];
                    if (alpha != 1) {
                        T *restrict a = acc + r * Dv;
                        for (int64_t e = 0; e < Dv; e++)
                            a[e] *= alpha;
                    }
                }
                if (d->drop > 0) /* l keeps the undropped sum */
                    F(drop_tile)(d, S, NULL, bh_i, i0, bq, j0, bk);
                F(tile_inner)(d, i0, j0, bk, acc, Dv, S, BK, vh + j0 * ldv, ldv, bq, Dv, 1, false); /* acc += P v */
            }
            for (int64_t r = 0; r < bq; r++) {
                T *restrict o = oh + (i0 + r) * ldo;
                const T *restrict a = acc + r * Dv;
                if (l[r] == 0) {
                    for (int64_t e = 0; e < Dv; e++)
                        o[e] = 0;
                    lh[i0 + r] = -INFINITY;
                } else {
                    T inv = (T)1 / l[r];
                    for (int64_t e = 0; e < Dv; e++)
                        o[e] = a[e] * inv;
                    lh[i0 + r] = m[r] + (T)log((double)l[r]);
                }
            }
        }
    }
    F(rel_head_keep)(rh, rt_kept);
}

/* dsk[c] -= dS[r, c] for each row r in turn, SEP_COLS columns at a time held in registers
 * (through memory, each row's subtraction waited on the last one's store); the same
 * subtractions in the same order */
#ifndef SEP_COLS
#define SEP_COLS 16
#endif
static void F(sep_cols)(T *restrict dsk, const T *restrict dS, int64_t bq, int64_t bk)
{
    int64_t c0 = 0;
    for (; c0 + SEP_COLS <= bk; c0 += SEP_COLS) {
        T acc[SEP_COLS];
        for (int c = 0; c < SEP_COLS; c++)
            acc[c] = dsk[c0 + c];
        for (int64_t r = 0; r < bq; r++)
            for (int c = 0; c < SEP_COLS; c++)
                acc[c] -= dS[r * BK + c0 + c];
        for (int c = 0; c < SEP_COLS; c++)
            dsk[c0 + c] = acc[c];
    }
    for (int64_t r = 0; r < bq; r++)
        for (int64_t c = c0; c < bk; c++)
            dsk[c] -= dS[r * BK + c];
}

/* dS's row sums into dsq[i0 ..] and minus its column sums into dsk[j0 ..] (either may be NULL) */
static void F(sep_grads)(T *dsq, T *dsk, const T *restrict dS, int64_t i0, int64_t bq, int64_t j0, int64_t bk)
{
    T sums[BQ];
    const int64_t r_vec = dsq ? CAT(ROWS_SUM_VEC, FLASH_SFX)(sums, dS, bq, bk) : 0; /* op_flash.c */
    for (int64_t r = 0; r < r_vec; r++)
        dsq[i0 + r] += sums[r];
    for (int64_t r = r_vec; dsq && r < bq; r++)
        dsq[i0 + r] += F(row_sum)(dS + r * BK, bk);
    if (dsk)
        F(sep_cols)(dsk + j0, dS, bq, bk);
}

/* One head's slices of the gradients (NULL where not asked for): dq, dk, dv, dsq, dsk, drq
 * (with rq_self dq's own) of head bh_i of the B x H; db, drk, dqs of its head h (shared by
 * the batches); dwb, dpb of its share of the window and pair biases (their wb_H / pb_H heads).
 * With sh_rows the shared ones are the row's own copies, bh_i of them. The layouts are
 * head_at's. */
typedef struct F(head_grads) {
    T *dq, *dk, *dv, *dsq, *dsk, *drq, *db, *drk, *dwb, *dpb, *dqs;
} F(head_grads);

static F(head_grads) F(head_grads_at)(const flash_dims *d, int64_t bh_i, void *const *w, void *const *sh)
{
    const int64_t Lq = d->Lq, Lk = d->Lk, D = d->D, NB = Lq + Lk - 1;
    const int64_t h = d->sh_rows ? bh_i : bh_i % d->H; /* sh_rows: the row's own copies */
    T *dq = w[0], *dk = w[1], *dv = w[2], *dsq = w[3], *dsk = w[4], *drq = w[5];
    T *db = sh[0], *drk = sh[1], *dwb = sh[2], *dpb = w[6] ? w[6] : sh[3], *dqs = sh[4];
    T *dqh = dq ? dq + qkv_at(d, bh_i, Lq, D) : NULL;
    return (F(head_grads)){dqh,
                           dk ? dk + qkv_at(d, bh_i, Lk, D) : NULL,
                           dv ? dv + qkv_at(d, bh_i, Lk, d->Dv) : NULL,
                           dsq ? dsq + bh_i * Lq : NULL,
                           dsk ? dsk + bh_i * Lk : NULL,
                           d->rq_self ? dqh : drq ? drq + bh_i * Lq * D : NULL,
                           db ? db + h * NB : NULL,
                           drk ? drk + h * NB * D : NULL,
                           dwb ? dwb + (d->sh_rows ? bh_i : bh_i % d->wb_H) * d->w * d->wb_S : NULL,
                           dpb ? dpb + (d->sh_rows ? bh_i : bh_i % d->pb_H) * Lq * Lk : NULL,
                           dqs ? dqs + h * D : NULL};
}

/* sh_rows: the row's copies of the shared gradients zeroed before it adds to them (a shared
 * pair bias's; a pair bias per row, w[6], is the row's own gradient already) */
static void F(zero_row_shares)(const flash_dims *d, const F(head_grads) *g, bool pair_own)
{
    const int64_t NB = d->Lq + d->Lk - 1;
    T *const part[5] = {g->db, g->drk, g->dwb, pair_own ? NULL : g->dpb, g->dqs};
    const int64_t n[5] = {NB, NB * d->D, d->w * d->wb_S, d->Lq * d->Lk, d->D};
    for (int i = 0; i < 5; i++)
        if (part[i])
            memset(part[i], 0, (size_t)n[i] * sizeof(T));
}

/* Fresh gradients of q, k and v (bits 0, 1, 2 of `fresh`: made by pg_grad_fresh, not yet
 * written) are not zero-filled first: their first product assigns (keys_acc, zero_rows). With
 * xPos, dq and dk come through the tile's dQx and dKx and add; those two get their head's
 * slice zeroed here (row stride ld), just before the tiles, by the thread that adds to it. */
/* rows [r0, r1) of a gradient of row width w (row stride ld) zeroed when `fresh` (else left
 * alone) */
static void F(zero_rows)(T *g, int64_t ld, int64_t w, int64_t r0, int64_t r1, bool fresh)
{
    if (fresh && r1 > r0 && ld == w)
        memset(g + r0 * w, 0, (size_t)((r1 - r0) * w) * sizeof(T));
    else if (fresh)
        for (int64_t r = r0; r < r1; r++)
            memset(g + r * ld, 0, (size_t)w * sizeof(T));
}

static void F(zero_fresh)(const flash_dims *d, const F(head_grads) *g, int64_t ldq, int64_t ldk, unsigned fresh)
{
    F(zero_rows)(g->dq, ldq, d->D, 0, d->Lq, fresh & 1u);
    F(zero_rows)(g->dk, ldk, d->D, 0, d->Lk, fresh & 2u);
}

/* dst rows [j0, j0 + bk) (row width w, row stride ldd) += alpha A (bk, n) B (n, w), A as in
 * gemm_acc; with `fresh`, the rows from kfresh on (no product reached them yet) assigned instead */
static void F(keys_acc)(T *dst, int64_t ldd, int64_t w, const T *A, int64_t ars, int64_t acs, const T *Bm,
                        int64_t ldb, int64_t j0, int64_t bk, int64_t n, T alpha, int64_t kfresh, bool fresh)
{
    int64_t s = !fresh ? j0 + bk : kfresh < j0 ? j0 : kfresh > j0 + bk ? j0 + bk : kfresh;
    if (s > j0)
        F(gemm_acc)(dst + j0 * ldd, ldd, A, ars, acs, Bm, ldb, s - j0, n, w, alpha, false);
    if (j0 + bk > s)
        F(gemm_acc)(dst + s * ldd, ldd, A + (s - j0) * ars, ars, acs, Bm, ldb, j0 + bk - s, n, w, alpha, true);
}

/* keys_acc of the tile (i0, j0, bk) with A = a tile transposed (A[c + r BK], P or dS, 0 where
 * hidden) and Bm the block's rows (row stride ldb): a cut tile in chunks of CUT_ROWS keys,
 * each over the rows that see its first key on */
static void F(keys_acc_cut)(const flash_dims *d, int64_t i0, T *dst, int64_t ldd, int64_t w, const T *A,
                            const T *Bm, int64_t ldb, int64_t j0, int64_t bk, int64_t bq, T alpha, int64_t kfresh,
                            bool fresh)
{
    if (!tile_cut(d, i0, j0, bk)) {
        F(keys_acc)(dst, ldd, w, A, 1, BK, Bm, ldb, j0, bk, bq, alpha, kfresh, fresh);
        return;
    }
    for (int64_t c0 = 0; c0 < bk; c0 += CUT_ROWS) {
        const int64_t r0 = first_row(i0, j0, c0, bq), n = c0 + CUT_ROWS < bk ? CUT_ROWS : bk - c0;
        F(keys_acc)(dst, ldd, w, A + c0 + r0 * BK, 1, BK, Bm + r0 * ldb, ldb, j0 + c0, n, bq - r0, alpha, kfresh,
                    fresh);
    }
}

/* Whether any gradient but dv's is asked for (they all come from dS) */
static bool F(needs_ds)(const F(head_grads) *g)
{
    return g->dq || g->dk || g->dsq || g->dsk || g->drq || g->db || g->drk || g->dwb || g->dpb || g->dqs;
}

/* The biases' gradients of one tile from its dS (BQ, BK): the distance bias
 * (db[i - j + Lk - 1]), the pair bias (dpb[i, j]), the separable biases, the
 * relative keys and the window bias (dwb[i mod w, slot]), each where asked for. */
static void F(tile_bias_grads)(const flash_dims *d, const F(head_grads) *g, const F(rel_head) *rh,
                               const T *restrict dS, int64_t i0, int64_t bq, int64_t j0, int64_t bk)
{
    /* the distance bias: op_flash.c's vector form, else row by row */
    const bool db_vec = g->db && CAT(DIAG_SUMS_VEC, FLASH_SFX)(g->db + (i0 - j0 + d->Lk - 1), dS, bq, bk);
    for (int64_t r = 0; g->db && !db_vec && r < bq; r++) {
        T *restrict gb = g->db + (i0 + r - j0 + d->Lk - 1);
        const T *restrict ds = dS + r * BK;
        for (int64_t c = 0; c < bk; c++)
            gb[-c] += ds[c];
    }
    for (int64_t r = 0; g->dpb && r < bq; r++) {
        T *restrict gp = g->dpb + (i0 + r) * d->Lk + j0;
        const T *restrict ds = dS + r * BK;
        for (int64_t c = 0; c < bk; c++)
            gp[c] += ds[c];
    }
    if (g->dsq || g->dsk)
        F(sep_grads)(g->dsq, g->dsk, dS, i0, bq, j0, bk);
    if (g->drq || g->drk)
        F(rel_tile_grads)(d, dS, rh, i0, bq, j0, bk);
    for (int64_t r = 0; g->dwb && r < bq; r++) {
        int64_t c0, c1, sl0;
        wbias_span(d, i0 + r, j0, bk, &c0, &c1, &sl0);
        T *restrict gw = g->dwb + ((i0 + r) % d->w) * d->wb_S + sl0;
        const T *restrict ds = dS + r * BK;
        for (int64_t c = c0; c < c1; c++)
            gw[c] += ds[c];
    }
}

/* D_i = rowsum(dO O) (the softmax's backward, dS = P (dP - D_i)) of the rows r = b Lq + l in
 * [r0, r1) of every head, into di (B H, Lq) at bh Lq + l: one pass along the rows of out and
 * dout before the heads' backward (row (b, l) holds every head's when merged), where each
 * head's blocks had read its rows 512 bytes and more apart and waited on them (27-40% of
 * flash_bwd's own time in 1-thread profiles on the Zen 3). The products rounded, then added
 * in order: the same bits wherever it runs. */
static void F(rowsum_rows)(const flash_dims *d, const T *out, const T *dout, T *di, int64_t r0, int64_t r1)
{
    const int64_t Lq = d->Lq, Dv = d->Dv, ldo = out_ld(d);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / Lq, l = r % Lq;
        for (int64_t bh = b * d->H; bh < (b + 1) * d->H; bh++) {
            const T *restrict o = out + out_at(d, bh) + l * ldo, *restrict go = dout + out_at(d, bh) + l * ldo;
            T s = 0;
            for (int64_t e = 0; e < Dv; e++)
                s += go[e] * o[e];
            di[bh * Lq + l] = s;
        }
    }
}

/* Accumulates the gradients into dq, dk, dv, dsq, dsk, drq = w[0..6) and db, drk, dwb = sh[0..3)
 * (each may be NULL), the pair bias's into w[6] (one slice per head) or sh[3] (shared by heads),
 * the queries' shift's into sh[4];
 * where `fresh` says dq, dk or dv is unwritten, their first products assign (zero_fresh).
 * Heads bh_i = order[u] (order NULL: row_at(u)) for u in [u0, u1), in that order (the w slices
 * are theirs alone; sh is shared by the batches of a head, so the caller keeps the order in
 * which its rows reach it). */
static void F(flash_bwd)(const flash_dims *d, void *const *w, void *const *sh, unsigned fresh, const T *q,
                         const T *k, const T *v, const T *bias, const T *di_all, const T *dout, const T *lse,
                         void *scratch, const void **rt_kept, const int64_t *order, int64_t u0, int64_t u1)
{
    const int64_t Lq = d->Lq, Lk = d->Lk, D = d->D, Dv = d->Dv;
    const T scale = (T)d->scale;
    const int64_t ldt = t_stride(d);
    T *Kt = (T *)scratch + xpos_elems(d), *Vt = Kt + D * ldt, *P = Vt + Dv * ldt, *dS = P + BQ * BK;
    F(rel_head) rel = {0}, *rh = d->rq ? &rel : NULL;
    T *Rt = dS + BQ * BK; /* with relative keys: Rt (D, r_stride), then the block's tab and dtab */
    rel.tab = Rt + D * r_stride(d);
    F(rel_head_resume)(rh, Rt, rt_kept);
    rel.dtab = rel.tab + BQ * r_stride(d);
    T *Z = d->rq ? rel.dtab + BQ * r_stride(d) : Rt; /* with dropout: the tile's factors (BQ, BK) */
    F(xpos_tile) xpos, *xt = d->xz ? &xpos : NULL;
    if (xt)
        F(xpos_init)(d, xt, scratch);
    /* with the rotation: the head's rotated q and k, and their gradients, which the tiles write
     * (fresh) and rot_head_grads takes through the rotation into dq and dk at the head's end;
     * with the shift the same for its shifted q (shift_head_grads) */
    T *const own = F(own_scratch)(d, scratch);
    for (int64_t u = u0; u < u1; u++) {
        const int64_t bh_i = order ? order[u] : F(row_at)(d, u);
        F(head) hd = F(head_at)(d, bh_i, q, k, v, bias);
        F(head_grads) hg = F(head_grads_at)(d, bh_i, w, sh);
        if (d->sh_rows)
            F(zero_row_shares)(d, &hg, w[6] != NULL);
        T *const dq_out = hg.dq, *const dk_out = hg.dk;
        unsigned fr = fresh;
        if (d->rot[0]) {
            F(rot_head)(d, &hd, bh_i, own);
            hg.dq = hg.dq ? F(own_part)(d, own, 2) : NULL, hg.dk = hg.dk ? F(own_part)(d, own, 3) : NULL;
            fr |= 3u;
        }
        if (d->qs) { /* dQs is wanted for dq and for the shift's own gradient */
            F(shift_head)(d, &hd, bh_i, own);
            hg.dq = hg.dq || hg.dqs ? F(own_part)(d, own, 2) : NULL;
            hg.drq = d->rq_self ? hg.dq : hg.drq;
            fr |= 1u;
        }
        const T *qh = hd.q, *kh = hd.k, *vh = hd.v;
        const T *gh = dout + out_at(d, bh_i), *lh = lse + bh_i * Lq, *dih = di_all + bh_i * Lq;
        const int64_t ldo = out_ld(d), ldq = hd.ldq, ldk = hd.ldk, ldv = qkv_ld(d, Dv);
        T *dqh = hg.dq, *dkh = hg.dk, *dvh = hg.dv;
        const bool need_ds = F(needs_ds)(&hg);
        const unsigned zeroed = xt ? fr & 3u : 0u, assign = fr & ~zeroed; /* fresh: assigned, or zeroed */
        const bool q_new = assign & 1u, k_new = assign & 2u, v_new = assign & 4u;
        int64_t kf = 0; /* the rows [0, kf) of dk and dv are written */
        F(zero_fresh)(d, &hg, ldq, ldk, zeroed);
        F(keys_load)(d, xt, rh, Kt, Rt, &hd, bh_i);
        if (need_ds)
            F(transpose)(Vt, ldt, vh, ldv, Lk, Dv);
        for (int64_t i0 = 0; i0 < Lq; i0 += BQ) {
            int64_t bq = Lq - i0 < BQ ? Lq - i0 : BQ;
            int64_t jstart, jend;
            key_range(d, i0, bq, &jstart, &jend);
            bool any = false;
            for (int64_t r = 0; r < bq; r++) /* does a query of the block see a key */
                any = any || lh[i0 + r] != -INFINITY;
            bool dq_first = q_new; /* the block's first product into dq assigns (a block that sees a
                                    * key has a tile: every dq row gets written) */
            if (!any) { /* no query of the block sees a key: no gradient */
                F(zero_rows)(dqh, ldq, D, i0, i0 + bq, q_new);
                continue;
            }
            if (xt) { /* the block's scaled queries; dQx summed over its tiles */
                F(xpos_queries)(d, xt, qh, ldq, i0, bq);
                memset(xt->dQx, 0, (size_t)(bq * D) * sizeof(T));
            }
            const bool rel_grads = rh && (hg.drq || hg.drk);
            if (rh)
                F(rel_block)(d, rh, i0, bq, jstart, jend, rel_grads);
            for (int64_t j0 = jstart; j0 < jend; j0 += BK) {
                int64_t bk = jend - j0 < BK ? jend - j0 : BK;
                if (j0 > kf) { /* keys no block reached, which none will */
                    F(zero_rows)(dkh, ldk, D, kf, j0, k_new);
                    F(zero_rows)(dvh, ldv, Dv, kf, j0, v_new);
                }
                const int64_t kfresh = kf > j0 ? kf : j0; /* this tile's rows from kfresh on are new */
                kf = j0 + bk > kfresh ? j0 + bk : kfresh;
                F(tile_logits)(d, P, &hd, Kt, rh, xt, i0, bq, j0, bk);
                int64_t vis[BQ]; /* the keys from vis on are hidden: P = 0 */
                for (int64_t r = 0; r < bq; r++)
                    vis[r] = lh[i0 + r] == -INFINITY ? 0 : visible_cols(d, i0, r, j0, bk);
                F(exp_rows)(P, BK, lh + i0, vis, bq, bk, NULL);
                const bool drop = d->drop > 0;
                if (drop)
                    F(drop_tile)(d, NULL, Z, bh_i, i0, bq, j0, bk);
                if (dvh && drop) { /* dv += (P Z)^T dO, P Z made in dS before dS is due */
                    for (int64_t r = 0; r < bq; r++)
                        for (int64_t c = 0; c < bk; c++)
                            dS[r * BK + c] = P[r * BK + c] * Z[r * BK + c];
                    F(keys_acc_cut)(d, i0, dvh, ldv, Dv, dS, gh + i0 * ldo, ldo, j0, bk, bq, 1, kfresh, v_new);
                } else if (dvh) { /* dv += P^T dO */
                    F(keys_acc_cut)(d, i0, dvh, ldv, Dv, P, gh + i0 * ldo, ldo, j0, bk, bq, 1, kfresh, v_new);
                }
                if (!need_ds)
                    continue;
                F(tile_cols)(d, i0, j0, bk, dS, BK, gh + i0 * ldo, ldo, Vt + j0, ldt, bq, Dv, 1); /* dP = dO v^T */
                for (int64_t r = 0; r < bq; r++) { /* dS = P (dP - D_i), dP through the dropout: dP Z */
                    T *restrict ds = dS + r * BK;
                    const T *restrict p = P + r * BK, *restrict z = Z + r * BK;
                    const T di = dih[i0 + r]; /* D_i = rowsum(dO * O), from rowsum_rows */
                    if (drop)
                        for (int64_t c = 0; c < bk; c++)
                            ds[c] = p[c] * (ds[c] * z[c] - di);
                    else
                        for (int64_t c = 0; c < bk; c++)
                            ds[c] = p[c] * (ds[c] - di);
                }
                if (dqh && xt) /* dQx += scale dS Kx */
                    F(tile_inner)(d, i0, j0, bk, xt->dQx, D, dS, BK, xt->Kxr, D, bq, D, scale, false);
                else if (dqh) /* dq += scale dS k */
                    F(tile_inner)(d, i0, j0, bk, dqh + i0 * ldq, ldq, dS, BK, kh + j0 * ldk, ldk, bq, D, scale,
                                  dq_first);
                dq_first = false;
                if (dkh && xt) { /* dKx = scale dS^T Qx, dk += dKx kf */
                    for (int64_t c0 = 0; c0 < bk; c0 += CUT_ROWS) { /* keys c0 .. seen from row r0 on */
                        const int64_t r0 = tile_cut(d, i0, j0, bk) ? first_row(i0, j0, c0, bq) : 0;
                        F(gemm_acc)(xt->dKx + c0 * D, D, dS + c0 + r0 * BK, 1, BK, xt->Qx + r0 * D, D,
                                    c0 + CUT_ROWS < bk ? CUT_ROWS : bk - c0, bq - r0, D, scale, true);
                    }
                    F(xpos_dk)(d, xt, dkh, ldk, j0, bk);
                } else if (dkh) { /* dk += scale dS^T q */
                    F(keys_acc_cut)(d, i0, dkh, ldk, D, dS, qh + i0 * ldq, ldq, j0, bk, bq, scale, kfresh, k_new);
                }
                F(tile_bias_grads)(d, &hg, rh, dS, i0, bq, j0, bk);
            }
            if (dqh && xt) /* dq += dQx zq */
                F(xpos_dq)(d, xt, dqh, ldq, i0, bq);
            if (rel_grads)
                F(rel_block_grads)(d, rh, hg.drq, d->rq_self ? ldq : D, hg.drk, i0, bq);
        }
        F(zero_rows)(dkh, ldk, D, kf, Lk, k_new); /* the keys after the last reached */
        F(zero_rows)(dvh, ldv, Dv, kf, Lk, v_new);
        if (d->rot[0])
            F(rot_head_grads)(d, bh_i, dq_out, dk_out, own, fresh);
        if (d->qs)
            F(shift_head_grads)(d, dq_out, hg.dqs, own, fresh);
    }
    F(rel_head_keep)(rh, rt_kept);
}

#undef T
#undef F
#undef MADD
#undef RB
#undef CB
#undef ACC_BLOCK
#undef ACC_PAIR
#undef ACC_QUAD
#undef CAT
#undef CAT2
