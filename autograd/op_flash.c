/* Fused attention (autograd/flash.h): tiled forward with the online softmax
 * and a FlashAttention-2 backward, side by side.
 *
 * The kernels are written once for an element type T in autograd/flash_kernels.h,
 * which this file includes twice, with FLASH_T float / double.
 *
 * Per (batch, head) and block of BQ queries, the key blocks of BK keys are
 * visited in order (with causal, only up to the block's last query). For each
 * tile:
 *   S = (q k^T) * scale + bias[i - j + Lk - 1] + (sq[i] - sk[j]) + rs rq_i . rk[i - j + Lk - 1],
 *       hidden entries -inf   (BQ x BK)
 *   forward:  m' = max(m, rowmax S); P = exp(S - m'); l = l e^(m - m') + rowsum P;
 *             acc = acc e^(m - m') + P v;   at the end out = acc / l, lse = m + log l
 *   backward: P = exp(S - lse); dv += P^T dO; dP = dO v^T; dS = P (dP - D_i)
 *             with D_i = rowsum(dO * O); dq += scale dS k; dk += scale dS^T q;
 *             dbias[i - j + Lk - 1] += dS; dsq[i] += sum_j dS; dsk[j] -= sum_i dS;
 *             relative keys through the tile's band of distances (rel_tile, rel_grads).
 * Rows whose every key is hidden have l = 0: out 0, lse -inf, P = 0 in the
 * backward (hence no gradient anywhere), never NaN.
 *
 * Every product is one small GEMM (gemm_acc) accumulating register blocks;
 * the logits and dP read the head's keys and values transposed once per
 * (batch, head), so the inner loops run over contiguous memory without
 * reductions and vectorise without -ffast-math. f32 uses a vectorisable exp
 * (Cody-Waite reduction and a degree-7 polynomial, within 1.2e-7 of exp); f64
 * uses tensor/vmath.h's (relative error < 1e-15), so f64 matches the unfused
 * ops to rounding. */

#include "flash.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "exp_rows.h"
#include "op_util.h"
#include "rotate_rows.h"

#include "../tensor/simd_transpose.h"
#include "../tensor/threadpool.h"
#include "../tensor/vmath.h"

#define BQ PG_FLASH_BQ
#define BK PG_FLASH_BK

typedef struct flash_dims {
    int64_t B, H, Lq, Lk, D, Dv;
    double scale;
    bool causal;
    const uint8_t *mask; /* (B, Lk) or NULL */
    int64_t w, lb, lf;   /* local band (w 0: none) */
    bool exact;
    const void *sq, *sk; /* separable bias (B, H, Lq), (B, H, Lk) of the element type, or NULL */
    const void *rq, *rk; /* relative keys (B, H, Lq, D), (H, Lq + Lk - 1, D), or NULL */
    double rs;           /* their factor */
    const double *xz;    /* xPos tables lz, zq, zk (xpos_tables), or NULL: no xPos */
    const void *wb;      /* window bias (Hb, w, NS) of the element type, or NULL */
    int64_t wb_H, wb_S;  /* its Hb and NS = (lb + lf + 1) w */
    double drop;         /* dropout probability (0: none) */
    pg_rng drop_rng;     /* the stream's state at the call */
    int64_t dw, dW, dS, dlb; /* the mask's band layout (flash.h dropout_window ...; dw 0: (B, H, Lq, Lk)) */
    const void *pb;          /* pair bias (pb_H, Lq, Lk), pb_H = H or B H, of the element type, or NULL */
    int64_t pb_H;
    bool merged;             /* out (and its gradient) (B, Lq, H Dv), else (B, H, Lq, Dv) */
    int64_t qkv_ld;          /* 0: q, k, v and their gradients (B, H, L, D); else rows of one (B, L, qkv_ld)
                              * projection, head h at columns h D of each one's start (pg_flash_attention_qkv) */
    const void *rot[4];      /* rotation tables cos_q, sin_q (Bc, 1, Lq, R), cos_k, sin_k (Bc, 1, Lk, R), or NULL */
    int64_t rot_R;
    bool rot_batched[2];     /* q's, k's tables per batch (Bc = B), else shared (Bc = 1) */
    bool rot_interleaved;
    bool rq_self;            /* the relative keys' queries are q's own rows: rq is q's data, in q's
                              * layout (qkv_at), and their gradient goes into dq (rel_q_is_q) */
    const void *qs;          /* the queries' shift (H, D) of the element type (q_shift), or NULL */
    bool sh_rows;            /* backward: each row bh adds to its own copy bh of the shared gradients'
                              * head parts, summed into them after (flash_backward_into) */
} flash_dims;

/* where row 0 of head bh = b H + h of out (or of its gradient) starts, and their row stride */
static int64_t out_at(const flash_dims *d, int64_t bh)
{
    return d->merged ? ((bh / d->H) * d->Lq * d->H + bh % d->H) * d->Dv : bh * d->Lq * d->Dv;
}
static int64_t out_ld(const flash_dims *d) { return d->merged ? d->H * d->Dv : d->Dv; }

/* the same for q, k or v (and their gradients) of L rows of width w */
static int64_t qkv_at(const flash_dims *d, int64_t bh, int64_t L, int64_t w)
{
    return d->qkv_ld ? (bh / d->H) * L * d->qkv_ld + (bh % d->H) * w : bh * L * w;
}
static int64_t qkv_ld(const flash_dims *d, int64_t w) { return d->qkv_ld ? d->qkv_ld : w; }

/* a + b and a * b for a, b >= 0, INT64_MAX when the result is not representable */
static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }
static int64_t sat_mul(int64_t a, int64_t b) { return b != 0 && a > INT64_MAX / b ? INT64_MAX : a * b; }

/* The keys query i may see, [*lo, *hi] (before causal and mask), for a band
 * w > 0, lb, lf >= 0 (else all Lk keys). A band edge past either end of the
 * sequence saturates: exact_window i - w lb (0 when w lb >= i) .. i + w lf;
 * windows (i/w - lb) w (0 when lb >= i/w) .. (i/w + lf + 1) w - 1. */
static void band_keys(int64_t w, int64_t lb, int64_t lf, bool exact, int64_t i, int64_t Lk, int64_t *lo,
                      int64_t *hi)
{
    *lo = 0;
    *hi = Lk - 1;
    if (w <= 0)
        return;
    int64_t first, last;
    if (exact) {
        int64_t back = sat_mul(w, lb);
        first = back >= i ? 0 : i - back;
        last = sat_add(i, sat_mul(w, lf));
    } else {
        int64_t win = i / w;
        first = lb >= win ? 0 : (win - lb) * w;
        last = sat_mul(sat_add(sat_add(win, lf), 1), w) - 1;
    }
    *lo = first;
    *hi = last < Lk - 1 ? last : Lk - 1;
}

void pg_flash_band(const pg_flash_opts *o, int64_t i, int64_t Lk, int64_t *lo, int64_t *hi)
{
    if (!o)
        band_keys(0, 0, 0, false, i, Lk, lo, hi);
    else /* negative look_backward / look_forward (refused by the op) count as 0 */
        band_keys(o->window, o->look_backward > 0 ? o->look_backward : 0, o->look_forward > 0 ? o->look_forward : 0,
                  o->exact_window, i, Lk, lo, hi);
}

static void band(const flash_dims *d, int64_t i, int64_t *lo, int64_t *hi)
{
    band_keys(d->w, d->lb, d->lf, d->exact, i, d->Lk, lo, hi);
}

/* The key range [*j_start, *j_end) a block of queries i0 .. i0 + bq - 1 visits. */
static void key_range(const flash_dims *d, int64_t i0, int64_t bq, int64_t *j_start, int64_t *j_end)
{
    int64_t lo, hi, lo2, hi2;
    band(d, i0, &lo, &hi);
    band(d, i0 + bq - 1, &lo2, &hi2);
    *j_start = lo;
    *j_end = hi2 + 1;
    if (d->causal && i0 + bq < *j_end) /* j > i is hidden */
        *j_end = i0 + bq;
    if (*j_end < *j_start)
        *j_end = *j_start;
}

/* Row stride of the transposed keys and values (Kt, Vt): Lk padded so that
 * consecutive rows fall in different L1 sets (a power-of-two stride such as
 * Lk = 16384 floats would map every row of a tile to the same few sets). */
static int64_t t_stride(const flash_dims *d)
{
    return (d->Lk + 15) / 16 * 16 + 16;
}

/* Row stride of a head's relative keys transposed (Rt, D x (Lq + Lk - 1)) and of a query
 * block's relative logits (tab, dtab), padded as above and by CB_* - 1 zero columns more: a
 * chunk's product runs over whole register blocks. */
static int64_t r_stride(const flash_dims *d)
{
    return (d->Lq + d->Lk - 1 + 15) / 16 * 16 + 48;
}

/* A register block of gemm_acc (below): CB_f32 or CB_f64 columns, RB_f32 or RB_f64 rows.
 * With AVX-512, 16 vector accumulators (8 x 32 floats, 4 x 32 doubles); with AVX2, whose 16
 * registers also hold B's row and A's entry, 12 (6 x 16 floats, 6 x 8 doubles: two vectors
 * a row, as the GEMM's kernels; 2 x 16 doubles, 8 accumulators and four of B's vectors, had
 * left the float64 step's tile products at 2.7 times the float ones' time) */
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define CB_f32 16
#define CB_f64 8
#define RB_f32 6
#define RB_f64 6
#else
#define CB_f32 32
#define CB_f64 32
#define RB_f32 8
#define RB_f64 4
#endif


/* With xPos, the first elements of a thread's scratch (flash_xpos.h): g, kf in
 * double (counted as two elements each), Qx, Kxr, Kx, dQx, dKx; else none. */
static size_t xpos_elems(const flash_dims *d)
{
    return d->xz ? 2 * (size_t)d->D * (1 + BK) + (size_t)d->D * (2 * BQ + 3 * BK) : 0;
}

/* With the rotation, the last elements of a thread's scratch: one head's rotated queries
 * and keys, (Lq, D) and (Lk, D), and in the backward their gradients; with the queries' shift
 * (never with the rotation) its shifted queries and their gradient; else none. */
static size_t own_elems(const flash_dims *d)
{
    return d->rot[0] ? 2 * (size_t)(d->Lq + d->Lk) * (size_t)d->D : d->qs ? 2 * (size_t)d->Lq * (size_t)d->D : 0;
}

/* Scratch of one call, in elements of T: forward Kt (one head's keys
 * transposed), S, acc, m, l; backward Kt, Vt, P, dS; with relative keys
 * also Rt and a block's two (BQ, r_stride) tables; with xPos its tiles first (whole slices
 * a multiple of 16 elements: the doubles stay aligned); with the rotation or the shift the
 * head's own copies last.
 * Linear in Lq + Lk. */
static size_t scratch_elems(const flash_dims *d)
{
    size_t rel = d->rq ? (size_t)(d->D + 2 * BQ) * (size_t)r_stride(d) : 0;
    size_t drop = d->drop > 0 ? (size_t)BQ * BK : 0; /* the backward's kept-and-scaled tile */
    size_t n = (size_t)(d->D + d->Dv) * (size_t)t_stride(d) + 2 * (size_t)BQ * BK + (size_t)BQ * (size_t)d->Dv +
               2 * (size_t)BQ + rel + drop;
    return (d->xz ? (n + xpos_elems(d) + 15) / 16 * 16 : n) + own_elems(d);
}

/* xPos tables (flash.h), n_xpos doubles: lz[e] = log(zeta_e) / s, zeta_e = (2 f + 0.4 D) / (1.4 D),
 * f = e mod (D / 2); zq[r, e] = exp((r - BQ / 2) lz[e]), r < BQ; zk[c, e] = exp(-c lz[e]), c < BK */
static size_t n_xpos(int64_t D) { return (size_t)D * (1 + BQ + BK); }

static void xpos_tables(double *xz, int64_t D, double s)
{
    int64_t half = D / 2 > 0 ? D / 2 : 1; /* D even (checked); no division by zero regardless */
    double *zq = xz + D, *zk = zq + BQ * D;
    for (int64_t e = 0; e < D; e++)
        xz[e] = log((2.0 * (double)(e % half) + 0.4 * (double)D) / (1.4 * (double)D)) / s;
    for (int64_t r = 0; r < BQ; r++)
        for (int64_t e = 0; e < D; e++)
            zq[r * D + e] = exp((double)(r - BQ / 2) * xz[e]);
    for (int64_t c = 0; c < BK; c++)
        for (int64_t e = 0; e < D; e++)
            zk[c * D + e] = exp(-(double)c * xz[e]);
}

/* a * b + c, fused where the target has FMA (C11 does not contract a * b + c
 * by itself); the products then round once. */
#if defined(__FMA__) || defined(__aarch64__)
#define MADD_f32(a, b, c) fmaf(a, b, c)
#define MADD_f64(a, b, c) fma(a, b, c)
#else
#define MADD_f32(a, b, c) ((a) * (b) + (c))
#define MADD_f64(a, b, c) ((a) * (b) + (c))
#endif

/* gemm_acc stays a function of its own: `make profile` counts its samples as the tile
 * products (inlined, they counted as their caller's) */
#if defined(__GNUC__)
#define FLASH_NOINLINE __attribute__((noinline))
#else
#define FLASH_NOINLINE
#endif

/* row sums of a tile's dS for the separable bias (exp_rows.h has the float one without
 * vectors only): 16 lanes of partial sums, where one running sum waits on every addition */
#if defined(PG_VEC)
DEFINE_ROW_SUM(float, f32)
#endif

/* The keys' and values' transposes (flash_kernels.h's transpose: X (n, w; row stride ldx) ->
 * Xt (w, n; row stride ldt)) with AVX-512: the strips of whole blocks of rows of X (16 floats, 8
 * doubles) go a square in registers at a time, the last columns loaded masked; each
 * returns the rows it did, the scalar loop does the rest. Data moved, nothing computed. */
#if defined(__AVX512F__)
/* transpose_vec_<sfx>: strips of N rows of X, N columns a square (the last masked) */
#define DEFINE_TRANSPOSE_VEC(sfx, T, V, N, MASK, LOADZ, STORE, SQUARE)                                         \
    static int64_t transpose_vec_##sfx(T *restrict Xt, int64_t ldt, const T *restrict X, int64_t ldx, int64_t n, \
                                       int64_t w)                                                              \
    {                                                                                                          \
        int64_t c0 = 0;                                                                                        \
        for (; c0 + N <= n; c0 += N)                                                                           \
            for (int64_t e0 = 0; e0 < w; e0 += N) {                                                            \
                const int64_t cols = w - e0 < N ? w - e0 : N;                                                  \
                const MASK m = (MASK)((1u << cols) - 1);                                                       \
                V r[N];                                                                                        \
                for (int l = 0; l < N; l++)                                                                    \
                    r[l] = LOADZ(m, X + (c0 + l) * ldx + e0);                                                  \
                SQUARE(r);                                                                                     \
                for (int j = 0; j < N; j++)                                                                    \
                    if (j < cols)                                                                              \
                        STORE(Xt + (e0 + j) * ldt + c0, r[j]);                                                 \
            }                                                                                                  \
        return c0;                                                                                             \
    }
DEFINE_TRANSPOSE_VEC(f32, float, __m512, 16, __mmask16, _mm512_maskz_loadu_ps, _mm512_storeu_ps, transpose16_f32)
DEFINE_TRANSPOSE_VEC(f64, double, __m512d, 8, __mmask8, _mm512_maskz_loadu_pd, _mm512_storeu_pd, transpose8_f64)
#define TRANSPOSE_VEC_f32 transpose_vec_f32
#define TRANSPOSE_VEC_f64 transpose_vec_f64

/* row_sum_f32 of 16 rows at once (x's rows BK apart, n columns) into sums[0 .. 16): each
 * row's 16 lane sums as row_sum's, the 16 x 16 of them transposed in registers, and the
 * rows' final sums over their lanes side by side in row_sum's order (0 + lane 0 + lane 1 +
 * ...), where each row's had waited on all 16 additions of its own; then each row's last n
 * mod 16 columns. The same sums in the same order: the same bits. Returns the rows done
 * (a multiple of 16); the caller's row_sum does the rest. */
static int64_t rows_sum_vec_f32(float *restrict sums, const float *x, int64_t rows, int64_t n)
{
    int64_t r0 = 0;
    const int64_t whole = n / 16 * 16;
    for (; r0 + 16 <= rows; r0 += 16) {
        __m512 part[16];
        for (int r = 0; r < 16; r++) {
            part[r] = _mm512_setzero_ps();
            for (int64_t c = 0; c < whole; c += 16)
                part[r] = _mm512_add_ps(part[r], _mm512_loadu_ps(x + (r0 + r) * BK + c));
        }
        transpose16_f32(part);
        __m512 s = _mm512_setzero_ps();
        for (int l = 0; l < 16; l++)
            s = _mm512_add_ps(s, part[l]);
        _mm512_storeu_ps(sums + r0, s);
        for (int64_t r = r0; r < r0 + 16; r++)
            for (int64_t c = whole; c < n; c++)
                sums[r] += x[r * BK + c];
    }
    return r0;
}
#define ROWS_SUM_VEC_f32 rows_sum_vec_f32
#define ROWS_SUM_VEC_f64 OP_NO_VECTOR_FORM

/* The distance bias's gradient from a tile of full width (flash_kernels.h tile_bias_grads):
 * db[r - c] += dS[r, c] for r < bq, c < BK, db at the tile's diagonal t0 = i0 - j0 + Lk - 1.
 * Row r meets the BK diagonals from r - BK + 1 to r, row r + 1 the same shifted by one; so
 * they stay in registers, lane j the diagonal lo + r + j (lo = 1 - BK), each row's dS added
 * reversed; then the window slides by a lane: out goes the diagonal no later row meets
 * (stored), in the next one (loaded). The loop it replaces stored a row's BK sums and
 * loaded them back one element further on, a load that store forwarding cannot serve: the
 * gradient took 0.22 ms of a 2.9 ms fused causal backward (B 8, H 4, L 256, D 32, float,
 * 1 thread). Each diagonal's additions in row order, as that loop's: the same bits. Returns
 * whether it did the tile (a narrower one goes through the loop). */
#define DEFINE_DIAG_SUMS_VEC(sfx, T, V, LANES, REVERSED, LOADU, STOREU, ADD, PERM, ALIGNR, SET1, FIRST)               \
    static int64_t diag_sums_vec_##sfx(T *restrict db, const T *restrict dS, int64_t bq, int64_t bk)                   \
    {                                                                                                                  \
        enum { N = BK / LANES };                                                                                       \
        if (bk != BK)                                                                                                  \
            return 0;                                                                                                  \
        const __m512i rev = REVERSED;                                                                                  \
        T *restrict lo = db + 1 - BK;                                                                                  \
        V w[N];                                                                                                        \
        for (int k = 0; k < N; k++)                                                                                    \
            w[k] = LOADU(lo + k * LANES);                                                                              \
        for (int64_t r = 0;; r++) { /* lane k LANES + l: column BK - 1 - k LANES - l */                               \
            for (int k = 0; k < N; k++)                                                                                \
                w[k] = ADD(w[k], PERM(rev, LOADU(dS + r * BK + BK - (k + 1) * LANES)));                                \
            if (r + 1 == bq)                                                                                           \
                break;                                                                                                 \
            lo[r] = FIRST(w[0]); /* diagonal lo + r: done */                                                           \
            for (int k = 0; k + 1 < N; k++)                                                                            \
                w[k] = ALIGNR(w[k + 1], w[k]);                                                                         \
            w[N - 1] = ALIGNR(SET1(lo[r + BK]), w[N - 1]); /* diagonal lo + r + BK: new to row r + 1 */                \
        }                                                                                                              \
        for (int k = 0; k < N; k++)                                                                                    \
            STOREU(lo + bq - 1 + k * LANES, w[k]);                                                                     \
        return 1;                                                                                                      \
    }
/* a and b's lanes as one vector shifted down by one: b's lanes 1.., then a's lane 0 */
static inline __m512 shift_in_f32(__m512 a, __m512 b)
{
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b), 1));
}
static inline __m512d shift_in_f64(__m512d a, __m512d b)
{
    return _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(a), _mm512_castpd_si512(b), 1));
}
DEFINE_DIAG_SUMS_VEC(f32, float, __m512, 16, _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                     _mm512_loadu_ps, _mm512_storeu_ps, _mm512_add_ps, _mm512_permutexvar_ps, shift_in_f32,
                     _mm512_set1_ps, _mm512_cvtss_f32)
DEFINE_DIAG_SUMS_VEC(f64, double, __m512d, 8, _mm512_set_epi64(0, 1, 2, 3, 4, 5, 6, 7), _mm512_loadu_pd,
                     _mm512_storeu_pd, _mm512_add_pd, _mm512_permutexvar_pd, shift_in_f64, _mm512_set1_pd,
                     _mm512_cvtsd_f64)
#define DIAG_SUMS_VEC_f32 diag_sums_vec_f32
#define DIAG_SUMS_VEC_f64 diag_sums_vec_f64
#else
#if defined(__AVX2__)
/* transpose_vec_<sfx> with AVX2: strips of N rows of X (8 floats, 4 doubles), whole N x N squares
 * in registers; a width w not a multiple of N is left to the scalar strips. The rows ROT_AHEAD on
 * are asked for at each strip (the keys and values are the projection's rows, 1.5 KiB apart in
 * the toy model): the fused forward and backward from a packed projection 0.98 as long (paired
 * calls, Zen 3). The AVX-512 form above has no prefetch (not measured there). */
#define DEFINE_TRANSPOSE_YMM(sfx, T, V, N, LOAD, STORE, SQUARE)                                                   \
    static int64_t transpose_vec_##sfx(T *restrict Xt, int64_t ldt, const T *restrict X, int64_t ldx, int64_t n, \
                                       int64_t w)                                                              \
    {                                                                                                          \
        int64_t c0 = 0;                                                                                        \
        for (; w % N == 0 && c0 + N <= n; c0 += N) {                                                           \
            for (int64_t l = c0 + ROT_AHEAD; l < c0 + ROT_AHEAD + N && l < n; l++) /* rows far apart */        \
                pg_prefetch_row(X + l * ldx, w * (int64_t)sizeof(T));                                          \
            for (int64_t e0 = 0; e0 < w; e0 += N) {                                                            \
                V r[N];                                                                                        \
                for (int l = 0; l < N; l++)                                                                    \
                    r[l] = LOAD(X + (c0 + l) * ldx + e0);                                                      \
                SQUARE(r);                                                                                     \
                for (int j = 0; j < N; j++)                                                                    \
                    STORE(Xt + (e0 + j) * ldt + c0, r[j]);                                                     \
            }                                                                                                  \
        }                                                                                                      \
        return c0;                                                                                             \
    }
DEFINE_TRANSPOSE_YMM(f32, float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, transpose8_f32_ymm)
DEFINE_TRANSPOSE_YMM(f64, double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd, transpose4_f64_ymm)
#define TRANSPOSE_VEC_f32 transpose_vec_f32
#define TRANSPOSE_VEC_f64 transpose_vec_f64
#else
#define TRANSPOSE_VEC_f32 OP_NO_VECTOR_FORM
#define TRANSPOSE_VEC_f64 OP_NO_VECTOR_FORM
#endif
#define ROWS_SUM_VEC_f32 OP_NO_VECTOR_FORM
#define ROWS_SUM_VEC_f64 OP_NO_VECTOR_FORM
#define DIAG_SUMS_VEC_f32 OP_NO_VECTOR_FORM
#define DIAG_SUMS_VEC_f64 OP_NO_VECTOR_FORM
#endif

/* gemm_acc's whole register blocks in vectors (flash_kernels.h acc_block): RB rows x NV
 * vectors of C, A's entries broadcast one at a time, the accumulators in registers from
 * the first multiply-add to the store (gcc spilled the generic loop's to the stack for the
 * store and cleared them with a memset call, block after block: the tile products of a
 * fused forward and backward took 12% less time without). The same operations in the same
 * order as the generic loop: the same bits. UNROLL_ALL unrolls the loops over registers
 * before gcc places the accumulators (else they live on the stack). PIN holds B's row in
 * registers: for the double block (4 rows x 4 vectors) gcc folded B's loads into the
 * multiply-adds, 16 loads of B a step where 4 do, and the block waited on loads (an empty asm
 * that takes the vector in a register keeps it there). A fused causal forward and backward,
 * B 8 H 4 L 256 D 32, 1 thread, full-width AVX-512 EPYC: float64 11.2 -> 9.7 ms; the float
 * block, whose loads gcc already kept, lost 3-6% with it and goes without.
 * With AVX2 (16 registers of 8 floats) a block is 6 rows x 2 vectors, of floats or of doubles
 * (the last 4 rows of 64 in a block of 4, the last 2 of 32 in a block of 2), B's row pinned in
 * all: the generic 8 x 32 block had 32 accumulators and lived on the stack. The same call on a
 * Zen 3 EPYC (AVX2 only), medians of alternated runs: float 21.8 -> 16.4 ms at 1 thread with
 * blocks of 4 x 2, 11.2 -> 8.0 at 2; blocks of 6 x 2 a further 11-12% (paired calls in one
 * process); double 45.1 -> 27.7 at 1 with blocks of 2 x 4 (33.4 unpinned), whose tile
 * products then took 17.5% of a 1-thread float64 step, 14.4% with 6 x 2; the last 4 rows in a
 * block of 4 rather than two of 2, 0.5-1.6%. */
#if defined(__GNUC__)
#define UNROLL_ALL _Pragma("GCC unroll 16")
#define IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define UNROLL_ALL
#define IN_REGISTER(v) (void)(v)
#endif
#define DEFINE_ACC_BLOCK_VEC(name, T, V, RBN, NV, LANES, SET1, LOADU, STOREU, FMADD, MUL, ADD, ZERO, PIN)             \
    static inline void name(T *restrict C, int64_t ldc, const T *restrict A, int64_t ars, int64_t acs,               \
                            const T *restrict Bm, int64_t ldb, int64_t n, T alpha, bool set)                          \
    {                                                                                                                 \
        V acc[RBN][NV];                                                                                               \
        UNROLL_ALL                                                                                                    \
        for (int i = 0; i < RBN; i++)                                                                                 \
            UNROLL_ALL                                                                                                \
            for (int v = 0; v < NV; v++)                                                                              \
                acc[i][v] = ZERO();                                                                                   \
        for (int64_t c = 0; c < n; c++) {                                                                             \
            V b[NV];                                                                                                  \
            UNROLL_ALL                                                                                                \
            for (int v = 0; v < NV; v++)                                                                              \
            {                                                                                                         \
                b[v] = LOADU(Bm + c * ldb + v * LANES);                                                               \
                PIN(b[v]);                                                                                            \
            }                                                                                                         \
            UNROLL_ALL                                                                                                \
            for (int i = 0; i < RBN; i++) {                                                                           \
                const V a = SET1(A[i * ars + c * acs]);                                                               \
                UNROLL_ALL                                                                                            \
                for (int v = 0; v < NV; v++)                                                                          \
                    acc[i][v] = FMADD(a, b[v], acc[i][v]);                                                            \
            }                                                                                                         \
        }                                                                                                             \
        const V va = SET1(alpha);                                                                                     \
        UNROLL_ALL                                                                                                    \
        for (int i = 0; i < RBN; i++)                                                                                 \
            UNROLL_ALL                                                                                                \
            for (int v = 0; v < NV; v++) {                                                                            \
                T *restrict cr = C + i * ldc + v * LANES;                                                             \
                const V p = MUL(va, acc[i][v]);                                                                       \
                STOREU(cr, set ? p : ADD(LOADU(cr), p));                                                              \
            }                                                                                                         \
    }
#if defined(__AVX512F__)
DEFINE_ACC_BLOCK_VEC(acc_block_vec_f32, float, __m512, RB_f32, CB_f32 / 16, 16, _mm512_set1_ps, _mm512_loadu_ps,
                     _mm512_storeu_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_setzero_ps, (void))
DEFINE_ACC_BLOCK_VEC(acc_block_vec_f64, double, __m512d, RB_f64, CB_f64 / 8, 8, _mm512_set1_pd, _mm512_loadu_pd,
                     _mm512_storeu_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_add_pd, _mm512_setzero_pd, IN_REGISTER)
#define ACC_BLOCK_VEC_f32 acc_block_vec_f32
#define ACC_BLOCK_VEC_f64 acc_block_vec_f64
#elif defined(__AVX2__) && defined(__FMA__)
/* the AVX2 blocks of rows, one text for both types (T, V, the intrinsics' suffix ps / pd) */
#define DEFINE_ACC_BLOCK_YMM(name, T, V, RBN, CBN, LANES, sfx)                                                        \
    DEFINE_ACC_BLOCK_VEC(name, T, V, RBN, CBN / LANES, LANES, _mm256_set1_##sfx, _mm256_loadu_##sfx,                 \
                         _mm256_storeu_##sfx, _mm256_fmadd_##sfx, _mm256_mul_##sfx, _mm256_add_##sfx,                \
                         _mm256_setzero_##sfx, IN_REGISTER)
DEFINE_ACC_BLOCK_YMM(acc_block_vec_f32, float, __m256, RB_f32, CB_f32, 8, ps)
DEFINE_ACC_BLOCK_YMM(acc_quad_vec_f32, float, __m256, 4, CB_f32, 8, ps)
DEFINE_ACC_BLOCK_YMM(acc_pair_vec_f32, float, __m256, 2, CB_f32, 8, ps)
DEFINE_ACC_BLOCK_YMM(acc_block_vec_f64, double, __m256d, RB_f64, CB_f64, 4, pd)
DEFINE_ACC_BLOCK_YMM(acc_quad_vec_f64, double, __m256d, 4, CB_f64, 4, pd)
DEFINE_ACC_BLOCK_YMM(acc_pair_vec_f64, double, __m256d, 2, CB_f64, 4, pd)
#define ACC_BLOCK_VEC_f32 acc_block_vec_f32
#define ACC_BLOCK_VEC_f64 acc_block_vec_f64
#define ACC_PAIR_VEC_f32 acc_pair_vec_f32
#define ACC_PAIR_VEC_f64 acc_pair_vec_f64
#define ACC_QUAD_VEC_f32 acc_quad_vec_f32
#define ACC_QUAD_VEC_f64 acc_quad_vec_f64
#endif

#define FLASH_T float
#define FLASH_SFX f32
#include "flash_kernels.h"
#undef FLASH_T
#undef FLASH_SFX
#define FLASH_T double
#define FLASH_SFX f64
#include "flash_kernels.h"
#undef FLASH_T
#undef FLASH_SFX

/* ---- threads: heads spread over the pool, thread t takes consecutive rows bh (the backward
 * with shared gradients: consecutive rows of their regions, flash_backward) ------------------ */

enum { N_SHARED = 5 }; /* gradients summed over rows that different threads handle */

typedef struct flash_job {
    const flash_dims *d;
    pg_dtype dtype;
    int T;             /* tasks = threads used */
    void *scratch;     /* T slices of scr_bytes */
    size_t scr_bytes;
    void *w[7];        /* forward: out, lse; backward: dq, dk, dv, dsq, dsk, drq, dpair (one per head) */
    const void *r[7];  /* q, k, v, bias; backward also rowsum(dO O) (rowsums), dout, lse */
    void *shared[N_SHARED]; /* backward: dbias, drk, dwb, dpair, dshift (shared by batches): the grads
                             * themselves, or T slices each when `sliced` */
    size_t shared_bytes[N_SHARED];
    bool sliced;
    unsigned fresh;             /* backward: bits 0, 1, 2: dq, dk, dv fresh (zeroed head by head) */
    const int64_t *order;       /* backward by regions: the rows bh region by region (NULL: row_at's order) */
    int64_t region;             /* rows per region */
    _Atomic int64_t *rows_done; /* per region: how many of its first rows are done */
    const void **rt_kept;       /* per slice: whose relative keys its scratch holds (flash_kernels.h) */
} flash_job;

/* tasks: one per thread, at most one per head, and one alone below ~2^20 multiply-adds
 * (B H Lq Lk (D + Dv)), where a hand-off to the pool costs more than it saves */
static int flash_threads(const flash_dims *d)
{
    int64_t heads = d->B * d->H, T = pg_num_threads();
    double work = (double)heads * (double)d->Lq * (double)d->Lk * (double)(d->D + d->Dv);
    if (work < (double)(1 << 20))
        return 1;
    return (int)(heads < T ? heads : T);
}

/* rows u0 .. u1 - 1 of the B x H (row_at's order) on slice t's scratch */
static void flash_fwd_slice(void *ctx, int64_t u0, int64_t u1, int t)
{
    const flash_job *j = ctx;
    void *scr = (char *)j->scratch + (size_t)t * j->scr_bytes;
    if (j->dtype == PG_F32)
        flash_fwd_f32(j->d, j->w[0], j->w[1], j->r[0], j->r[1], j->r[2], j->r[3], scr, j->rt_kept + t, u0, u1);
    else
        flash_fwd_f64(j->d, j->w[0], j->w[1], j->r[0], j->r[1], j->r[2], j->r[3], scr, j->rt_kept + t, u0, u1);
}

/* the backward over rows u0 .. u1 - 1 of j->order (or of row_at's order), on slice t's scratch
 * and (sliced) its own buffers of the shared gradients */
static void flash_bwd_rows(const flash_job *j, int64_t u0, int64_t u1, int t)
{
    void *scr = (char *)j->scratch + (size_t)t * j->scr_bytes;
    void *sh[N_SHARED];
    for (int i = 0; i < N_SHARED; i++)
        sh[i] = j->shared[i] && j->sliced ? (char *)j->shared[i] + (size_t)t * j->shared_bytes[i] : j->shared[i];
    if (j->dtype == PG_F32)
        flash_bwd_f32(j->d, j->w, sh, j->fresh, j->r[0], j->r[1], j->r[2], j->r[3], j->r[4], j->r[5], j->r[6], scr,
                      j->rt_kept + t, j->order, u0, u1);
    else
        flash_bwd_f64(j->d, j->w, sh, j->fresh, j->r[0], j->r[1], j->r[2], j->r[3], j->r[4], j->r[5], j->r[6], scr,
                      j->rt_kept + t, j->order, u0, u1);
}

/* no shared gradients: any split of the rows gives the same bits */
static void flash_bwd_slice(void *ctx, int64_t u0, int64_t u1, int t) { flash_bwd_rows(ctx, u0, u1, t); }

/* D_i = rowsum(dO O) of every row before the heads' backward (flash_kernels.h rowsum_rows):
 * rows (b, l) of out and its gradient a range at a time */
typedef struct rowsum_job {
    const flash_dims *d;
    pg_dtype dtype;
    const void *out, *dout;
    void *di; /* (B H, Lq) */
} rowsum_job;

static void rowsum_range(void *ctx, int64_t r0, int64_t r1)
{
    const rowsum_job *x = ctx;
    if (x->dtype == PG_F32)
        rowsum_rows_f32(x->d, x->out, x->dout, x->di, r0, r1);
    else
        rowsum_rows_f64(x->d, x->out, x->dout, x->di, r0, r1);
}

/* di = rowsum_rows of the node's out and its gradient, in the graph's memory; NULL: out of memory */
static void *rowsums(pg_graph *g, const flash_dims *d, const pg_tensor *out)
{
    void *di = pg_graph_alloc(g, (size_t)(d->B * d->H * d->Lq) * pg_dtype_size(out->dtype));
    if (di) {
        rowsum_job x = {d, out->dtype, out->data, out->grad->data, di};
        pg_parallel_range(d->B * d->Lq, 16384 / (d->H * d->Dv) + 1, rowsum_range, &x);
    }
    return di;
}

/* sliced: thread t of T, an even run of rows into its own buffers (zeroed here) */
static void flash_bwd_task(void *ctx, int64_t t, int thread)
{
    (void)thread;
    const flash_job *j = ctx;
    for (int i = 0; i < N_SHARED; i++)
        if (j->shared[i])
            memset((char *)j->shared[i] + (size_t)t * j->shared_bytes[i], 0, j->shared_bytes[i]);
    const int64_t n = j->d->B * j->d->H;
    flash_bwd_rows(j, n * t / j->T, n * (t + 1) / j->T, (int)t);
}

/* By regions: slice t of j->order, [u0, u1), sized to the speeds. Each region's rows must
 * reach the shared gradients in order, so a region cut between slices is begun by one
 * thread, first thing, and finished by the next with rows of it (slices may be empty), last
 * thing, once the rows before its own are counted done: the lead [u0, lead) goes on with a
 * region begun before u0, the trail [trail, u1) begins a region that goes on after u1, the
 * regions between are whole. */
static void flash_bwd_regions(void *ctx, int64_t u0, int64_t u1, int t)
{
    const flash_job *j = ctx;
    const int64_t R = j->region;
    const int64_t lead = u0 % R ? (u0 / R + 1) * R < u1 ? (u0 / R + 1) * R : u1 : u0;
    const int64_t trail = u1 % R == 0 ? u1 : u1 / R * R > lead ? u1 / R * R : lead;
    flash_bwd_rows(j, trail, u1, t);
    if (trail < u1)
        atomic_store_explicit(&j->rows_done[trail / R], u1 - trail, memory_order_release);
    flash_bwd_rows(j, lead, trail, t);
    if (u0 < lead) {
        _Atomic int64_t *done = &j->rows_done[u0 / R];
        for (int spins = 0; atomic_load_explicit(done, memory_order_acquire) < u0 % R; spins++)
            if (spins > 1000)
                sched_yield(); /* the thread before descheduled (or valgrind: one thread at a time) */
        flash_bwd_rows(j, u0, lead, t);
        atomic_store_explicit(done, lead - u0 / R * R, memory_order_release);
    }
}

/* the rows bh of the B x H, region by region (bh mod g), each region's in row_at's order */
static void region_order(const flash_dims *d, int64_t g, int64_t *order)
{
    const int64_t n = d->B * d->H;
    int64_t k = 0;
    for (int64_t r = 0; r < g; r++)
        for (int64_t u = 0; u < n; u++)
            if (row_at_f32(d, u) % g == r)
                order[k++] = row_at_f32(d, u);
}

/* A shared gradient (`period` head parts of `region` elements) += copies of them, element k of
 * part r adding those of copies r, r + period, r + 2 period, ... in that order, elements split
 * over the pool (the same bits for any split). sh_rows: a copy per row of its head part; the
 * per-thread buffers: period 1, a whole copy per thread, added in thread order. */
typedef struct copies_job {
    void *dst;
    const char *copies;
    int64_t region, period, count; /* count: copies of a part times period */
    bool f32;
} copies_job;

static void add_copies_range(void *ctx, int64_t lo, int64_t hi)
{
    const copies_job *j = ctx;
    const size_t esz = j->f32 ? sizeof(float) : sizeof(double);
    for (int64_t e0 = lo; e0 < hi;) { /* [e0, e1): within part r */
        const int64_t r = e0 / j->region, k0 = e0 % j->region;
        const int64_t e1 = (r + 1) * j->region < hi ? (r + 1) * j->region : hi, n = e1 - e0;
        for (int64_t u = r; u < j->count; u += j->period) {
            const char *src = j->copies + (size_t)(u * j->region + k0) * esz;
            if (j->f32) {
                float *restrict a = (float *)j->dst + e0;
                const float *restrict b = (const float *)(const void *)src;
                for (int64_t i = 0; i < n; i++)
                    a[i] += b[i];
            } else {
                double *restrict a = (double *)j->dst + e0;
                const double *restrict b = (const double *)(const void *)src;
                for (int64_t i = 0; i < n; i++)
                    a[i] += b[i];
            }
        }
        e0 = e1;
    }
}

static void add_copies(pg_tensor *dst, const void *copies, int64_t period, int64_t count)
{
    copies_job j = {dst->data, copies, dst->numel / period, period, count, dst->dtype == PG_F32};
    pg_parallel_range(dst->numel, 32768, add_copies_range, &j);
}

/* ---- the op --------------------------------------------------------------------------------- */

typedef struct flash_saved {
    flash_dims d;
    pg_tensor *lse;  /* (B, H, Lq) */
    pg_tensor *bias; /* dist_bias or NULL */
    pg_tensor *mask;
    pg_tensor *sep_q, *sep_k; /* or NULL */
    pg_tensor *rel_q, *rel_k; /* or NULL */
    pg_tensor *wbias;         /* or NULL */
    pg_tensor *pair;          /* or NULL */
    pg_tensor *shift;         /* q_shift or NULL */
} flash_saved;

/* the head periods of the shared gradients (db, drk, dshift: H; dwb: wb_H; a shared dpair: pb_H) */
static void shared_periods(const flash_dims *d, int64_t period[N_SHARED])
{
    const int64_t p[N_SHARED] = {d->H, d->H, d->wb_H, d->pb_H, d->H};
    memcpy(period, p, sizeof p);
}

/* Whether a copy of the shared gradients' head parts for every row (sh_rows) costs no more than
 * a quarter of q, k and v: a distance bias's (2 L - 1 a row) or the shift's (D) do; relative
 * keys' (2 L - 1 distances of D a row, two thirds of q, k and v) do not: zeroing and adding up
 * that much (2 MB a layer of the toy model's Transformer-XL) cost more than the balance gains
 * (a 2-thread step 1% slower), nor does a pair bias shared by the batches (Lq Lk a row) */
static bool row_copies_fit(const flash_dims *d, pg_tensor *const *shared)
{
    int64_t period[N_SHARED], rows = d->B * d->H;
    shared_periods(d, period);
    double copies = 0, qkv = (double)rows * (double)(d->Lq * d->D + d->Lk * (d->D + d->Dv));
    for (int i = 0; i < N_SHARED; i++)
        if (shared[i])
            copies += (double)(rows / period[i]) * (double)shared[i]->numel;
    return 4 * copies <= qkv;
}

/* the gcd of the head periods of the shared gradients present, 0 when none */
static int64_t shared_group(const flash_dims *d, pg_tensor *const *shared)
{
    int64_t period[N_SHARED];
    shared_periods(d, period);
    int64_t g = 0;
    for (int i = 0; i < N_SHARED; i++)
        if (shared[i])
            g = pg_gcd64(g, period[i]);
    return g;
}

/* The gradient of t (NULL when t is NULL or needs none); *fail when t needs one and none came. */
static pg_tensor *grad_if(pg_graph *g, pg_tensor *t, bool *fail)
{
    pg_tensor *gt = t ? pg_grad_of(g, t) : NULL;
    *fail = *fail || (t && t->requires_grad && !gt);
    return gt;
}

/* grad_if without the zero-fill: a fresh buffer sets `bit` in *fresh (zeroed head by head in
 * the kernel, zero_fresh) */
static pg_tensor *grad_fresh_if(pg_graph *g, pg_tensor *t, bool *fail, unsigned *fresh, unsigned bit)
{
    bool is_fresh = false;
    pg_tensor *gt = t && t->requires_grad ? pg_grad_fresh(g, t, &is_fresh) : NULL;
    *fail = *fail || (t && t->requires_grad && !gt);
    *fresh |= is_fresh ? bit : 0u;
    return gt;
}

/* q, k and v's data (or their gradients'): t[0 .. 3), or the heads of the one projection t[0]
 * (B, L, 3 H D) at columns 0, H D and 2 H D (flash_dims.qkv_ld); NULL where t is NULL */
static void qkv_data(const flash_dims *d, pg_tensor *const *t, void *p[3])
{
    for (int i = 0; i < 3; i++) {
        pg_tensor *ti = d->qkv_ld ? t[0] : t[i];
        size_t at = d->qkv_ld ? (size_t)(i * d->H * d->D) * pg_dtype_size(ti ? ti->dtype : PG_F32) : 0;
        p[i] = ti ? (char *)ti->data + at : NULL;
    }
}

/* the backward into dq, dk, dv (NULL where not asked for; `fresh` says which are unwritten) */
static int flash_backward_into(pg_graph *g, pg_node *node, void *const dqkv[3], unsigned fresh)
{
    const flash_saved *s = node->ctx;
    pg_tensor *out = node->out;
    void *r[3];
    qkv_data(&s->d, node->in, r);
    bool fail = false;
    pg_tensor *dsq = grad_if(g, s->sep_q, &fail), *dsk = grad_if(g, s->sep_k, &fail);
    pg_tensor *drq = grad_if(g, s->rel_q, &fail), *dpair = grad_if(g, s->pair, &fail);
    bool pair_own = s->d.pb_H == s->d.B * s->d.H; /* a slice per head: written by its thread alone */
    pg_tensor *shared[N_SHARED] = {grad_if(g, s->bias, &fail), grad_if(g, s->rel_k, &fail),
                                   grad_if(g, s->wbias, &fail), pair_own ? NULL : dpair,
                                   grad_if(g, s->shift, &fail)}; /* db, drk, dwb, dpair, dshift */
    if (fail)
        return -1;
    flash_dims d = s->d;
    if (d.rq_self)
        d.rq = r[0]; /* q's rows, as in the forward */
    flash_job j = {.d = &d, .dtype = out->dtype, .T = flash_threads(&s->d), .fresh = fresh,
                   .scr_bytes = scratch_elems(&s->d) * pg_dtype_size(out->dtype),
                   .w = {dqkv[0], dqkv[1], dqkv[2], dsq ? dsq->data : NULL, dsk ? dsk->data : NULL,
                         drq ? drq->data : NULL, dpair && pair_own ? dpair->data : NULL},
                   .r = {r[0], r[1], r[2], s->bias ? s->bias->data : NULL, rowsums(g, &d, out), out->grad->data,
                         s->lse->data}};
    j.scratch = pg_graph_alloc(g, j.scr_bytes * (size_t)j.T);
    if (!j.scratch || !j.r[4])
        return -1;
    /* dbias, drk, dwb, a shared dpair and dshift sum over rows bh: head part bh mod G of each (G = H,
     * wb_H, pb_H) takes the rows congruent mod G. Three ways:
     * - sh_rows, when copies for every row fit (row_copies_fit): each row adds to its own copy of
     *   its head parts (zeroed first, by its thread), the rows go in chunks as a product's with
     *   no shared gradient, and after the join each gradient adds its rows' copies in row order
     *   (add_copies): the same bits for any split and thread count.
     * - else, with g = gcd of the Gs at least T, region by region (region_order), cut into slices
     *   sized to the threads' speeds, each region's rows reaching the gradients in one order on
     *   any split (flash_bwd_regions), straight into the gradients: the same bits for any
     *   thread count.
     * - else (fewer regions than threads: a window bias shared by every head, or one head): one
     *   buffer per thread, each thread taking an even run of consecutive rows, added up in
     *   thread order after the join (bits that depend on T). */
    const int64_t group = shared_group(&s->d, shared), rows = d.B * d.H;
    int64_t period[N_SHARED];
    shared_periods(&d, period);
    d.sh_rows = group > 0 && row_copies_fit(&d, shared);
    j.sliced = !d.sh_rows && j.T > 1 && group > 0 && group < j.T;
    if (group > 0 && !d.sh_rows && !j.sliced) {
        int64_t *order = pg_graph_alloc(g, (size_t)rows * sizeof *order);
        if (!order)
            return -1;
        region_order(&d, group, order);
        j.order = order;
        j.region = rows / group;
        j.rows_done = pg_graph_alloc(g, (size_t)group * sizeof *j.rows_done);
        if (!j.rows_done)
            return -1;
        for (int64_t r = 0; r < group; r++)
            atomic_init(&j.rows_done[r], 0);
    }
    for (int i = 0; i < N_SHARED; i++) {
        if (!shared[i])
            continue;
        j.shared_bytes[i] = (size_t)shared[i]->numel * pg_dtype_size(out->dtype);
        j.shared[i] = shared[i]->data;
        if (j.sliced || d.sh_rows) { /* zeroed in flash_bwd_task, or row by row in the kernel */
            j.shared[i] = pg_graph_alloc(g, j.shared_bytes[i] * (size_t)(d.sh_rows ? rows / period[i] : j.T));
            if (!j.shared[i])
                return -1;
        }
    }
    const void *rt_kept[PG_MAX_THREADS] = {0};
    j.rt_kept = rt_kept;
    if (j.sliced)
        pg_parallel_for(j.T, flash_bwd_task, &j);
    else if (j.order) /* a region's rows in order: a slice each */
        pg_parallel_slices(rows, 1, j.T, flash_bwd_regions, &j);
    else
        pg_parallel_chunks(rows, 1, j.T, flash_bwd_slice, &j);
    for (int i = 0; i < N_SHARED; i++)
        if (shared[i] && j.sliced)
            add_copies(shared[i], j.shared[i], 1, j.T);
        else if (shared[i] && d.sh_rows)
            add_copies(shared[i], j.shared[i], period[i], rows);
    return 0;
}

/* the gradients of q, k, v: three inputs, or one projection's (whose fresh gradient sets the
 * three bits: the kernel writes every column of it) */
static int flash_backward(pg_graph *g, pg_node *node)
{
    const flash_saved *s = node->ctx;
    const int n = s->d.qkv_ld ? 1 : 3;
    bool fail = false;
    unsigned fresh = 0, bit[3] = {n == 1 ? 7u : 1u, 2u, 4u}; /* the fresh bits of input i */
    pg_tensor *d[3] = {NULL, NULL, NULL};
    for (int i = 0; i < n; i++)
        d[i] = grad_fresh_if(g, node->in[i], &fail, &fresh, bit[i]);
    void *dqkv[3];
    qkv_data(&s->d, d, dqkv);
    if (!fail && flash_backward_into(g, node, dqkv, fresh) == 0)
        return 0;
    for (int i = 0; i < n; i++) /* a gradient is never left unwritten */
        if (d[i] && (fresh & bit[i]))
            memset(d[i]->data, 0, (size_t)d[i]->numel * pg_dtype_size(d[i]->dtype));
    return -1;
}

/* window_bias (Hb, w, (lb + lf + 1) w) of q's dtype with Hb dividing B H, and a band w > 0 */
static bool window_bias_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_flash_opts *o)
{
    const pg_tensor *wb = o->window_bias;
    int64_t w = o->window, lb = o->look_backward, lf = o->look_forward, rows = q->shape[0] * q->shape[1];
    int64_t NS = w > 0 && lb >= 0 && lf >= 0 ? sat_mul(sat_add(sat_add(lb, lf), 1), w) : -1;
    if (NS < 0 || NS == INT64_MAX || wb->ndim != 3 || wb->dtype != q->dtype || wb->shape[0] < 1 ||
        rows % wb->shape[0] != 0 || wb->shape[1] != w || wb->shape[2] != NS) {
        pg_graph_fail(g, "%s: window_bias is %s, expected %s (Hb, window, (look_backward + look_forward + 1) window) "
                         "= (Hb, %lld, %lld) with Hb dividing B H = %lld, and a band (window %lld > 0)",
                      fn, PG_SHAPE_STR(wb), pg_dtype_name(q->dtype), (long long)w, (long long)NS, (long long)rows,
                      (long long)w);
        return false;
    }
    return true;
}

/* pair_bias (Bb, H, Lq, Lk) of q's dtype with Bb 1 or B */
static bool pair_bias_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_tensor *k, const pg_tensor *pb)
{
    const int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], Lk = k->shape[2];
    if (pb->ndim == 4 && pb->dtype == q->dtype && (pb->shape[0] == 1 || pb->shape[0] == B) && pb->shape[1] == H &&
        pb->shape[2] == Lq && pb->shape[3] == Lk)
        return true;
    pg_graph_fail(g, "%s: pair_bias is %s, expected %s (1 or B, H, Lq, Lk) = (1 or %lld, %lld, %lld, %lld)", fn,
                  PG_SHAPE_STR(pb), pg_dtype_name(q->dtype), (long long)B, (long long)H, (long long)Lq, (long long)Lk);
    return false;
}

/* dropout_window w > 0, W w >= Lq, S >= 1, lb >= 0 and B H W w S representable */
static bool drop_layout_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_flash_opts *o)
{
    int64_t w = o->dropout_window, W = o->dropout_windows, S = o->dropout_slots, lb = o->dropout_look_backward;
    int64_t rows = q->shape[0] * q->shape[1];
    bool ok = w > 0 && W > 0 && S > 0 && lb >= 0 && lb < W && sat_mul(W, w) >= q->shape[2] &&
              sat_mul(sat_mul(sat_mul(rows, W), w), S) < INT64_MAX;
    if (!ok)
        pg_graph_fail(g, "%s: dropout layout window %lld, windows %lld, slots %lld, look_backward %lld: need "
                         "window, windows, slots >= 1, 0 <= look_backward < windows, windows x window >= Lq = %lld "
                         "and B H windows window slots < 2^63", fn, (long long)w, (long long)W, (long long)S, (long long)lb,
                      (long long)q->shape[2]);
    return ok;
}

/* one side's rotation tables C, S (Bc, 1, L, R) of q's dtype, Bc 1 or B, 1 <= R <= D / 2, R as R0's
 * (R0 0: any) */
static bool rot_side_ok(const pg_tensor *C, const pg_tensor *S, const pg_tensor *q, int64_t L, int64_t R0)
{
    const int64_t B = q->shape[0], D = q->shape[3];
    const pg_tensor *t[2] = {C, S};
    for (int i = 0; i < 2; i++)
        if (!t[i] || t[i]->ndim != 4 || t[i]->dtype != q->dtype ||
            !(t[i]->shape[0] == 1 || t[i]->shape[0] == B) || t[i]->shape[1] != 1 || t[i]->shape[2] != L ||
            t[i]->shape[3] < 1 || t[i]->shape[3] > D / 2 || t[i]->shape[3] != t[0]->shape[3] ||
            t[i]->shape[0] != t[0]->shape[0] || (R0 && t[i]->shape[3] != R0))
            return false;
    return true;
}

/* the rotation's tables: none, or all four as rot_side_ok says for q's (Lq) and k's (Lk), none
 * requiring grad */
static bool rot_tables_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_tensor *k, const pg_flash_opts *o)
{
    const pg_tensor *t[4] = {o->rot_cos_q, o->rot_sin_q, o->rot_cos_k, o->rot_sin_k};
    static const char *const name[4] = {"rot_cos_q", "rot_sin_q", "rot_cos_k", "rot_sin_k"};
    if (!t[0] && !t[1] && !t[2] && !t[3])
        return true;
    for (int i = 0; i < 4; i++)
        if (t[i] && t[i]->requires_grad) {
            pg_graph_fail(g, "%s: %s %s requires grad: the kernel takes the rotation's tables as constants "
                             "(pg_rotate_pairs on q and k differentiates them)",
                          fn, name[i], PG_SHAPE_STR(t[i]));
            return false;
        }
    if (rot_side_ok(t[0], t[1], q, q->shape[2], 0) && rot_side_ok(t[2], t[3], q, k->shape[2], t[0]->shape[3]))
        return true;
    pg_graph_fail(g, "%s: rotation tables rot_cos_q %s, rot_sin_q %s, rot_cos_k %s, rot_sin_k %s: expected all four "
                     "or none, of q's dtype %s, q's (1 or B, 1, Lq, R) and k's (1 or B, 1, Lk, R) = (1 or %lld, 1, "
                     "%lld, R) and (1 or %lld, 1, %lld, R), one R with 1 <= R <= D / 2 = %lld, each side's cos and sin "
                     "alike",
                  fn, PG_SHAPE_STR(t[0]), PG_SHAPE_STR(t[1]), PG_SHAPE_STR(t[2]), PG_SHAPE_STR(t[3]),
                  pg_dtype_name(q->dtype), (long long)q->shape[0], (long long)q->shape[2], (long long)q->shape[0],
                  (long long)k->shape[2], (long long)(q->shape[3] / 2));
    return false;
}

int pg_flash_rotation_check(pg_graph *g, const char *fn, const pg_tensor *q, const pg_tensor *k,
                            const pg_flash_opts *o)
{
    if (!q || !k || !o) {
        pg_graph_fail(g, "%s: %s is NULL", fn ? fn : "pg_flash_rotation_check", !q ? "q" : !k ? "k" : "opts");
        return -1;
    }
    return rot_tables_ok(g, fn ? fn : "pg_flash_rotation_check", q, k, o) ? 0 : -1;
}

/* q_shift (H, D) of q's dtype, without the rotation tables or xPos */
static bool q_shift_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_flash_opts *o)
{
    const pg_tensor *s = o->q_shift;
    if (s->ndim == 2 && s->dtype == q->dtype && s->shape[0] == q->shape[1] && s->shape[1] == q->shape[3] &&
        !o->rot_cos_q && !o->rot_sin_q && !o->rot_cos_k && !o->rot_sin_k && o->xpos_scale_base == 0)
        return true;
    pg_graph_fail(g, "%s: q_shift is %s, expected %s (H, D) = (%lld, %lld) for q %s, and neither the rotation "
                     "tables nor xPos (rotation %s, xpos_scale_base %g)",
                  fn, PG_SHAPE_STR(s), pg_dtype_name(q->dtype), (long long)q->shape[1],
                  (long long)q->shape[3], PG_SHAPE_STR(q), o->rot_cos_q || o->rot_sin_q || o->rot_cos_k ||
                  o->rot_sin_k ? "set" : "none", o->xpos_scale_base);
    return false;
}

/* The operands (pg_attn_check), the band and the scale. */
static bool flash_args_ok(pg_graph *g, const char *fn, const pg_tensor *q, const pg_tensor *k, const pg_tensor *v,
                          const pg_flash_opts *o)
{
    if (o->rel_q_is_q && (o->rel_q || !o->rel_k || o->rot_cos_q || o->xpos_scale_base != 0)) {
        pg_graph_fail(g, "%s: rel_q_is_q takes q's rows as the relative keys' queries: it wants rel_k and no rel_q, "
                         "and neither the rotation tables nor xPos; got rel_q %s, rel_k %s, rotation %s, "
                         "xpos_scale_base %g", fn, o->rel_q ? PG_SHAPE_STR(o->rel_q) : "NULL",
                      o->rel_k ? PG_SHAPE_STR(o->rel_k) : "NULL", o->rot_cos_q ? "set" : "none", o->xpos_scale_base);
        return false;
    }
    if (o->q_shift && !q_shift_ok(g, fn, q, o))
        return false;
    const pg_attn_operands ops = {.layout = PG_ATTN_HEADS, .q = q, .k = k, .v = v, .mask = o->mask,
                                  .dist_bias = o->dist_bias, .sep_q = o->sep_q, .sep_k = o->sep_k,
                                  .rel_q = o->rel_q_is_q ? q : o->rel_q, .rel_k = o->rel_k};
    if (pg_attn_check(g, fn, &ops) != 0)
        return false;
    if (o->window < 0 || (o->window > 0 && (o->look_backward < 0 || o->look_forward < 0))) {
        pg_graph_fail(g, "%s: bad local band: window %lld, look_backward %lld, look_forward %lld", fn,
                      (long long)o->window, (long long)o->look_backward, (long long)o->look_forward);
        return false;
    }
    if (!isfinite(o->scale) || !isfinite(o->rel_scale)) {
        pg_graph_fail(g, "%s: scale and rel_scale must be finite, got %g, %g", fn, o->scale, o->rel_scale);
        return false;
    }
    if (o->window_bias && !window_bias_ok(g, fn, q, o))
        return false;
    if (o->pair_bias && !pair_bias_ok(g, fn, q, k, o->pair_bias))
        return false;
    if (o->dropout_window != 0 && !drop_layout_ok(g, fn, q, o))
        return false;
    if (!(o->dropout >= 0 && o->dropout <= 1) || (o->dropout > 0 && !o->rng)) {
        pg_graph_fail(g, "%s: dropout must be in [0, 1] and > 0 needs a generator (rng), got %g and rng %s", fn,
                      o->dropout, o->rng ? "set" : "NULL");
        return false;
    }
    if (!(o->xpos_scale_base >= 0) || !isfinite(o->xpos_scale_base) ||
        (o->xpos_scale_base > 0 && q->shape[3] % 2 != 0)) {
        pg_graph_fail(g, "%s: xpos_scale_base must be finite and >= 0 (0: off), and > 0 needs an even head dim; "
                      "got %g with q %s", fn, o->xpos_scale_base, PG_SHAPE_STR(q));
        return false;
    }
    return rot_tables_ok(g, fn, q, k, o);
}

pg_tensor *pg_flash_attention(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v, const pg_flash_opts *o)
{
    const pg_flash_opts none = {0};
    if (!o)
        o = &none;
    if (!flash_args_ok(g, "pg_flash_attention", q, k, v, o))
        return NULL;
    return pg_flash_attention_unchecked(g, q, k, v, o);
}

/* The op over q, k, v (B, H, L, D), or with qkv over its heads in place (q, k, v then headers
 * that give the heads' shapes alone, pg_flash_attention_qkv); fn names it on the tape */
static pg_tensor *flash_op(pg_graph *g, const char *fn, pg_tensor *q, pg_tensor *k, pg_tensor *v, pg_tensor *qkv,
                           const pg_flash_opts *o)
{
    flash_dims d = {q->shape[0], q->shape[1], q->shape[2], k->shape[2], q->shape[3], v->shape[3],
                    o->scale != 0 ? o->scale : 1.0 / sqrt((double)q->shape[3]), o->causal,
                    o->mask ? pg_bool(o->mask) : NULL, o->window, o->look_backward, o->look_forward,
                    o->exact_window, o->sep_q ? o->sep_q->data : NULL, o->sep_k ? o->sep_k->data : NULL,
                    o->rel_q ? o->rel_q->data : o->rel_q_is_q ? (qkv ? qkv : q)->data : NULL,
                    o->rel_k ? o->rel_k->data : NULL,
                    o->rel_scale != 0 ? o->rel_scale : 1.0, NULL, o->window_bias ? o->window_bias->data : NULL,
                    o->window_bias ? o->window_bias->shape[0] : 0, o->window_bias ? o->window_bias->shape[2] : 0,
                    o->dropout > 0 && o->rng ? o->dropout : 0, o->rng ? *o->rng : (pg_rng){0, 0},
                    o->dropout_window, o->dropout_windows, o->dropout_slots, o->dropout_look_backward,
                    o->pair_bias ? o->pair_bias->data : NULL, /* (Bb, H, Lq, Lk), Bb 1 or B: H or B H rows */
                    o->pair_bias ? o->pair_bias->shape[0] * q->shape[1] : 0, o->merge_heads,
                    qkv ? qkv->shape[2] : 0, {NULL, NULL, NULL, NULL}, 0, {false, false}, false, o->rel_q_is_q,
                    o->q_shift ? o->q_shift->data : NULL, false};
    pg_tensor *out = o->merge_heads ? pg_op_output(g, fn, q->dtype, PG_SHAPE(d.B, d.Lq, d.H * d.Dv))
                                    : pg_op_output(g, fn, q->dtype, PG_SHAPE(d.B, d.H, d.Lq, d.Dv));
    if (!out)
        return NULL;
    double *xz = NULL; /* xPos tables: in the graph (the backward reads them), else freed below */
    if (o->xpos_scale_base > 0) {
        size_t xb = n_xpos(d.D) * sizeof(double);
        if (!(xz = g ? pg_graph_alloc(g, xb) : malloc(xb))) {
            if (!g) {
                pg_tensor_free(out);
                pg_set_error("%s: out of memory", fn);
            }
            return NULL;
        }
        xpos_tables(xz, d.D, o->xpos_scale_base);
        d.xz = xz;
    }
    if (o->rot_cos_q) { /* the rotation (checked: all four tables, one R) */
        pg_tensor *rt[4] = {o->rot_cos_q, o->rot_sin_q, o->rot_cos_k, o->rot_sin_k};
        for (int i = 0; i < 4; i++)
            d.rot[i] = rt[i]->data;
        d.rot_R = rt[0]->shape[3];
        d.rot_batched[0] = rt[0]->shape[0] > 1, d.rot_batched[1] = rt[2]->shape[0] > 1;
        d.rot_interleaved = o->rot_interleaved;
    }
    pg_tensor *bias = o->dist_bias, *sq = o->sep_q, *sk = o->sep_k; /* either may be NULL */
    pg_tensor *ins[11] = {q, k, v, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    int n_in = 3;
    if (qkv) /* the one projection, then the extras */
        ins[0] = qkv, n_in = 1;
    pg_tensor *extra[8] = {bias, sq, sk, o->rel_q, o->rel_k, o->window_bias, o->pair_bias, o->q_shift};
    for (int i = 0; i < 8; i++)
        if (extra[i])
            ins[n_in++] = extra[i];
    bool rec = g && pg_op_needs_grad(g, n_in, ins);
    int T = flash_threads(&d);
    size_t esz = pg_dtype_size(q->dtype), scr_bytes = scratch_elems(&d) * esz * (size_t)T;
    /* lse: saved in the graph when recording, else scratch */
    pg_tensor *lse = NULL;
    void *scr = NULL, *lse_data = NULL;
    if (g) {
        scr = pg_graph_alloc(g, scr_bytes);
        if (rec) {
            lse = pg_op_output(g, fn, q->dtype, PG_SHAPE(d.B, d.H, d.Lq));
            lse_data = lse ? lse->data : NULL;
        } else {
            lse_data = pg_graph_alloc(g, (size_t)(d.B * d.H * d.Lq) * esz);
        }
    } else {
        scr = malloc(scr_bytes);
        lse_data = malloc((size_t)(d.B * d.H * d.Lq) * esz);
    }
    if (!scr || !lse_data) {
        if (!g) {
            free(scr);
            free(lse_data);
            free(xz);
            pg_tensor_free(out);
            pg_set_error("%s: out of memory", fn);
        } else if (!pg_graph_error(g)) {
            pg_graph_fail(g, "%s: out of memory", fn);
        }
        return NULL;
    }
    flash_job j = {.d = &d, .dtype = q->dtype, .T = T, .scratch = scr, .scr_bytes = scratch_elems(&d) * esz,
                   .w = {out->data, lse_data, NULL, NULL}, .r = {NULL, NULL, NULL, bias ? bias->data : NULL}};
    void *r[3];
    qkv_data(&d, ins, r);
    for (int i = 0; i < 3; i++)
        j.r[i] = r[i];
    const void *rt_kept[PG_MAX_THREADS] = {0};
    j.rt_kept = rt_kept;
    pg_parallel_chunks(d.B * d.H, 1, T, flash_fwd_slice, &j);
    if (d.drop > 0) /* the stream moves on as pg_dropout's fill of the weights would */
        o->rng->counter += d.dw > 0 ? (uint64_t)(d.B * d.H * d.dW * d.dw * d.dS) : (uint64_t)(d.B * d.H * d.Lq * d.Lk);
    if (!g) {
        free(scr);
        free(lse_data);
        free(xz);
        return out;
    }
    if (rec) {
        pg_node *n = pg_op_record(g, fn, out, n_in, ins, flash_backward);
        flash_saved *s = n ? pg_graph_alloc(g, sizeof *s) : NULL;
        if (!s) {
            if (!pg_graph_error(g))
                pg_graph_fail(g, "%s: out of memory recording the op", fn);
            return NULL;
        }
        *s = (flash_saved){d, lse, bias, o->mask, sq, sk, o->rel_q, o->rel_k, o->window_bias, o->pair_bias,
                           o->q_shift};
        n->ctx = s;
        n->saved = lse;
    }
    return out;
}

pg_tensor *pg_flash_attention_unchecked(pg_graph *g, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                                        const pg_flash_opts *o)
{
    const char *fn = "pg_flash_attention"; /* the op's name on the tape and in messages */
    if (!q || !k || !v || !o) {
        pg_graph_fail(g, "%s: %s is NULL", fn, !q ? "q" : !k ? "k" : !v ? "v" : "opts");
        return NULL;
    }
    return flash_op(g, fn, q, k, v, NULL, o);
}

/* headers (shape and dtype, no data) of the heads of qkv (B, L, 3 H D): q, k, v (B, H, L, D) */
static void qkv_heads(const pg_tensor *qkv, int64_t H, pg_tensor heads[3])
{
    const int64_t D = qkv->shape[2] / (3 * H);
    for (int i = 0; i < 3; i++)
        heads[i] = (pg_tensor){.dtype = qkv->dtype, .ndim = 4, .shape = {qkv->shape[0], H, qkv->shape[1], D},
                               .numel = qkv->numel / 3};
}

pg_tensor *pg_flash_attention_qkv(pg_graph *g, pg_tensor *qkv, int64_t heads, const pg_flash_opts *o)
{
    const char *fn = "pg_flash_attention_qkv";
    const pg_flash_opts none = {0};
    o = o ? o : &none;
    if (!qkv || qkv->ndim != 3 || !pg_dtype_is_float(qkv->dtype) || heads < 1 || heads > qkv->shape[2] / 3 ||
        qkv->shape[2] % (3 * heads) != 0 || qkv->numel == 0) { /* heads <= W / 3: 3 heads does not overflow */
        pg_graph_fail(g, "%s: qkv is %s with heads %lld, expected f32 or f64 (B, L, 3 heads D), B, L, D, heads >= 1",
                      fn, qkv ? PG_SHAPE_STR(qkv) : "NULL", (long long)heads);
        return NULL;
    }
    pg_tensor h[3];
    qkv_heads(qkv, heads, h);
    if (!flash_args_ok(g, fn, &h[0], &h[1], &h[2], o))
        return NULL;
    return flash_op(g, fn, &h[0], &h[1], &h[2], qkv, o);
}

pg_tensor *pg_flash_attention_qkv_unchecked(pg_graph *g, pg_tensor *qkv, int64_t heads, const pg_flash_opts *o)
{
    const char *fn = "pg_flash_attention_qkv";
    if (!qkv || !o) {
        pg_graph_fail(g, "%s: %s is NULL", fn, !qkv ? "qkv" : "opts");
        return NULL;
    }
    pg_tensor h[3];
    qkv_heads(qkv, heads, h);
    return flash_op(g, fn, &h[0], &h[1], &h[2], qkv, o);
}
