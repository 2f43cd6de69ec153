/* CoPE's row kernels (internal), shared by pg_cope_interp (autograd/op_cope.c) and the
 * fused CoPE attention (autograd/op_cope_attn.c): the gates, running sums, interpolation
 * and their backward for a group of at most COPE_ROWS rows of one (b, h), each row a run
 * of m keys (m is also the row stride). The math is op_cope.c's header's (1), (2), (4). */
#ifndef PG_COPE_ROWS_H
#define PG_COPE_ROWS_H

#include "op_reduce.h"
#include "op_util.h"

#include <math.h>
#include <string.h>

#include "../tensor/vmath.h"

enum { COPE_ROWS = 8 };

/* (4) 16 keys at a time, float with AVX-512: a row's sums fall along it (gates >= 0) by at
 * most 1 a key (gates <= 1), so the floors f and the c = min(f + 1, n - 1) of 16 keys lie
 * within 18 consecutive entries of z, and two permutes of a 32-entry window of z read z[f]
 * and z[c] where 32 scalar loads did (gathers measured slower than those). Each function
 * returns how many keys of [0, vis) it did, blocks from the start (the last one short of 16
 * keys when vis is not a multiple), stopping at a NaN p or a block whose window does not
 * hold its f and c; the scalar loop does the rest. The
 * arithmetic is the scalar loop's, operation by operation (no fma): the same bits. */
#if defined(__AVX512F__)
#include <immintrin.h>

typedef struct cope_v16 {
    __m512 p, w, zf, zc; /* p = min(x, n - 1), w = p - floor p, z[f], z[c] */
    __m512i f;
} cope_v16;

/* the lanes' numbers, 0 .. 15 */
static inline __m512i cope_lanes(void)
{
    return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}

/* the first `keys` of 16 lanes (all 16 from 16 on) */
static inline __mmask16 cope_live(int64_t keys)
{
    return keys >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << keys) - 1);
}

/* the 16 keys at x (sums) reading z (n >= 32 entries), the lanes of `live` (the others read as
 * a sum of 0); false: the scalar loop takes them */
static inline bool cope_v16_at(cope_v16 *v, const float *x, const float *z, int n, __mmask16 live)
{
    const __m512 top = _mm512_set1_ps((float)(n - 1)), xv = _mm512_maskz_loadu_ps(live, x);
    v->p = _mm512_mask_mov_ps(xv, _mm512_cmp_ps_mask(xv, top, _CMP_GT_OQ), top);
    if (_mm512_cmp_ps_mask(v->p, v->p, _CMP_UNORD_Q))
        return false;
    const __m512 fl = _mm512_roundscale_ps(v->p, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    v->w = _mm512_sub_ps(v->p, fl);
    v->f = _mm512_cvttps_epi32(fl);
    const __m512i c = _mm512_min_epi32(_mm512_add_epi32(v->f, _mm512_set1_epi32(1)), _mm512_set1_epi32(n - 1));
    const int last = _mm_extract_epi32(_mm512_extracti32x4_epi32(v->f, 3), 3); /* the smallest f */
    const int base = last < n - 32 ? last : n - 32;
    const __m512i b = _mm512_set1_epi32(base), fi = _mm512_sub_epi32(v->f, b), ci = _mm512_sub_epi32(c, b);
    const __m512i top_i = _mm512_set1_epi32(31); /* unsigned: a negative index fails too */
    if (base < 0 || _mm512_cmpgt_epu32_mask(fi, top_i) || _mm512_cmpgt_epu32_mask(ci, top_i))
        return false;
    const __m512 lo = _mm512_loadu_ps(z + base), hi = _mm512_loadu_ps(z + base + 16);
    v->zf = _mm512_permutex2var_ps(lo, fi, hi);
    v->zc = _mm512_permutex2var_ps(lo, ci, hi);
    return true;
}

/* forward: o = out_scale (z[f] + w (z[c] - z[f])) from the sums x (o may be x), plus a_scale a
 * (the attention's logits) where a is not NULL */
static int64_t cope_lerp_vec_f32(float *o, const float *x, const float *z, const float *a, float a_scale,
                                 int64_t vis, int n, float out_scale)
{
    int64_t j = 0;
    const __m512 os = _mm512_set1_ps(out_scale), as = _mm512_set1_ps(a_scale);
    cope_v16 v;
    for (; n >= 32 && j < vis; j += 16) {
        const __mmask16 live = cope_live(vis - j);
        if (!cope_v16_at(&v, x + j, z, n, live))
            return j;
        const __m512 at = _mm512_add_ps(v.zf, _mm512_mul_ps(v.w, _mm512_sub_ps(v.zc, v.zf)));
        __m512 bias = _mm512_mul_ps(at, os);
        if (a)
            bias = _mm512_add_ps(_mm512_mul_ps(as, _mm512_maskz_loadu_ps(live, a + j)), bias);
        _mm512_mask_storeu_ps(o + j, live, bias);
    }
    return j < vis ? j : vis;
}

/* backward: x = d (z[c] - z[f]) in place of the sums; a = d - w d, b = w d, fo = f */
static int64_t cope_lerp_bwd_vec_f32(float *x, float *a, float *b, int *fo, const float *dout, const float *z,
                                     int64_t vis, int n, float out_scale)
{
    int64_t j = 0;
    const __m512 os = _mm512_set1_ps(out_scale);
    cope_v16 v;
    for (; n >= 32 && j < vis; j += 16) {
        const __mmask16 live = cope_live(vis - j);
        if (!cope_v16_at(&v, x + j, z, n, live))
            return j;
        const __m512 d = _mm512_mul_ps(_mm512_maskz_loadu_ps(live, dout + j), os), wd = _mm512_mul_ps(v.w, d);
        _mm512_mask_storeu_ps(x + j, live, _mm512_mul_ps(d, _mm512_sub_ps(v.zc, v.zf)));
        _mm512_mask_storeu_ps(a + j, live, _mm512_sub_ps(d, wd));
        _mm512_mask_storeu_ps(b + j, live, wd);
        _mm512_mask_storeu_epi32(fo + j, live, v.f);
    }
    return j < vis ? j : vis;
}

/* The runs of one row's visible keys in place, 16 keys at a time (the fused attention's
 * rows only, cope_rows.fused): within the 16, a segmented scan (log2 16 steps, each lane
 * adding the partial sum s lanes before it where that lane has its f) leaves each run's
 * total at its last lane, and the totals are appended with their f (a run from the last
 * block adding its record to its first). Records never pass the keys read (at most 16 for
 * 16), so the full-width stores land on keys already read. Returns the keys done, whole
 * blocks from the start, stopping at a block holding a NaN's f = -1; *k: the records. */
static int64_t cope_runs_vec_f32(float *a, float *b, int *fo, int64_t vis, int64_t *k)
{
    const __m512i lane = cope_lanes();
    const __m512i next = _mm512_min_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(1)), _mm512_set1_epi32(15));
    int64_t j = 0, at = 0;
    int last_f = -1; /* the last record's f, a and b (a, b in every lane) */
    __m512 last_a = _mm512_setzero_ps(), last_b = _mm512_setzero_ps();
    for (; j + 16 <= vis; j += 16) {
        const __m512i f = _mm512_loadu_si512(fo + j);
        if (_mm512_cmplt_epi32_mask(f, _mm512_setzero_si512()))
            break;
        __m512 av = _mm512_loadu_ps(a + j), bv = _mm512_loadu_ps(b + j);
        for (int s = 1; s < 16; s *= 2) {
            const __m512i from = _mm512_sub_epi32(lane, _mm512_set1_epi32(s)); /* lanes < s: masked off */
            const __mmask16 same =
                _mm512_mask_cmpeq_epi32_mask((__mmask16)(0xFFFFu << s), f, _mm512_permutexvar_epi32(from, f));
            av = _mm512_mask_add_ps(av, same, av, _mm512_permutexvar_ps(from, av));
            bv = _mm512_mask_add_ps(bv, same, bv, _mm512_permutexvar_ps(from, bv));
        }
        const __mmask16 ends = _mm512_cmpneq_epi32_mask(f, _mm512_permutexvar_epi32(next, f)) | 0x8000u;
        const int runs = __builtin_popcount(ends), goes_on = _mm512_cvtsi512_si32(f) == last_f;
        const __m512i fr = _mm512_maskz_compress_epi32(ends, f);
        __m512 ar = _mm512_maskz_compress_ps(ends, av), br = _mm512_maskz_compress_ps(ends, bv);
        /* the last block's last run goes on: its record joins this block's first (no branch) */
        at -= goes_on;
        ar = _mm512_mask_add_ps(ar, (__mmask16)goes_on, ar, last_a);
        br = _mm512_mask_add_ps(br, (__mmask16)goes_on, br, last_b);
        _mm512_storeu_ps(a + at, ar);
        _mm512_storeu_ps(b + at, br);
        _mm512_storeu_si512(fo + at, fr);
        at += runs;
        const __m512i lastv = _mm512_set1_epi32(runs - 1);
        last_a = _mm512_permutexvar_ps(lastv, ar), last_b = _mm512_permutexvar_ps(lastv, br);
        last_f = _mm_extract_epi32(_mm512_extracti32x4_epi32(f, 3), 3);
    }
    *k = at;
    return j;
}

/* pg_vsigmoidf of 16 floats, operation by operation (the same bits): e = e^-|x| by
 * tensor/vmath.h's pg_vexpf_v, then 1 / (1 + e) or e / (1 + e). The compiler's loop over
 * pg_vsigmoidf left a scalar tail in each row: pg_cope_attention 2-3% slower. */
static inline __m512 cope_sigmoid16(__m512 x)
{
    const __m512 nx = _mm512_min_ps(x, _mm512_sub_ps(_mm512_setzero_ps(), x)); /* -|x|; NaN stays */
    const __m512 e = pg_vexpf_v(nx);
    const __m512 one = _mm512_set1_ps(1.0f), d = _mm512_add_ps(one, e);
    const __m512 inv = _mm512_div_ps(one, d);
    const __mmask16 below = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NGE_UQ); /* x < 0 or NaN */
    return _mm512_mask_mul_ps(inv, below, e, inv);
}

/* the gates g = pg_vsigmoidf(in_scale s) of a row's keys [0, vis), the last block masked */
static int64_t cope_gates_vec_f32(float *g, const float *s, int64_t vis, float in_scale)
{
    const __m512 scale = _mm512_set1_ps(in_scale);
    for (int64_t j = 0; j < vis; j += 16) {
        const __mmask16 live = cope_live(vis - j);
        _mm512_mask_storeu_ps(g + j, live, cope_sigmoid16(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, s + j), scale)));
    }
    return vis;
}

/* cope_dz_runs from record k on, 16 records at a time while their floors step down by 1
 * from the pending bin's (the usual case: p falls by at most 1 a key, so a row's floors
 * are consecutive): bin pf gets its last share b_k, bins f_k .. f_k - 14 their own a and
 * then the next record's b, as the scalar loop adds them (the same bits), and bin f_k - 15
 * its a, pending. Returns the records done (0 where the next 16 are not such a run). */
static int64_t cope_dz_runs_vec_f32(float *dz, const int *fo, const float *sum_a, const float *sum_b, int64_t k,
                                    int64_t runs, int *pf, float *pend)
{
    const __m512i lane = cope_lanes();
    const __m512i rev = _mm512_sub_epi32(_mm512_set1_epi32(15), lane);
    const int64_t k0 = k;
    for (; k + 16 <= runs; k += 16) {
        const int fk = *pf - 1; /* record k + i has f = fk - i */
        if (_mm512_cmpneq_epi32_mask(_mm512_loadu_si512(fo + k), _mm512_sub_epi32(_mm512_set1_epi32(fk), lane)))
            break;
        /* lane u: bin fk - 15 + u, record i = 15 - u: a_i, then b_(i+1) but in lane 0 */
        const __m512 a = _mm512_permutexvar_ps(rev, _mm512_loadu_ps(sum_a + k));
        const __m512 b = _mm512_permutexvar_ps(rev, _mm512_maskz_loadu_ps(0x7FFF, sum_b + k + 1));
        dz[*pf] = *pend + sum_b[k];
        const __m512 with_a = _mm512_add_ps(_mm512_loadu_ps(dz + fk - 15), a);
        _mm512_mask_storeu_ps(dz + fk - 15, 0xFFFE, _mm512_add_ps(with_a, b));
        *pend = _mm512_cvtss_f32(with_a);
        *pf = fk - 15;
    }
    return k - k0;
}

/* the vector forms by name and suffix (DEFINE_COPE pastes COPE_<NAME>_<sfx>): AVX-512 float's,
 * or none (OP_NO_VECTOR_FORM: 0 keys or records done) */
#define COPE_GATES_VEC_f32 cope_gates_vec_f32
#define COPE_LERP_VEC_f32 cope_lerp_vec_f32
#define COPE_LERP_BWD_VEC_f32 cope_lerp_bwd_vec_f32
#define COPE_RUNS_VEC_f32 cope_runs_vec_f32
#define COPE_RUNS_VEC_ON_f32 true
#define COPE_DZ_RUNS_VEC_f32 cope_dz_runs_vec_f32
#else
#define COPE_GATES_VEC_f32 OP_NO_VECTOR_FORM
#define COPE_LERP_VEC_f32 OP_NO_VECTOR_FORM
#define COPE_LERP_BWD_VEC_f32 OP_NO_VECTOR_FORM
#define COPE_RUNS_VEC_f32 OP_NO_VECTOR_FORM
#define COPE_RUNS_VEC_ON_f32 false
#define COPE_DZ_RUNS_VEC_f32 OP_NO_VECTOR_FORM
#endif
#define COPE_GATES_VEC_f64 OP_NO_VECTOR_FORM
#define COPE_LERP_VEC_f64 OP_NO_VECTOR_FORM
#define COPE_LERP_BWD_VEC_f64 OP_NO_VECTOR_FORM
#define COPE_RUNS_VEC_f64 OP_NO_VECTOR_FORM
#define COPE_RUNS_VEC_ON_f64 false
#define COPE_DZ_RUNS_VEC_f64 OP_NO_VECTOR_FORM

/* *sa = (fresh ? 0 : *sa) + a, and *sb likewise: C's select became a branch; with AVX-512
 * a zero-masking move keeps it in the adder's registers (one cycle on the sums' chain) */
#if defined(__AVX512F__) && defined(__AVX512VL__)
static inline void cope_restart_f32(float *sa, float *sb, bool fresh, float a, float b)
{
    const __mmask8 keep = _cvtu32_mask8(!fresh);
    *sa = _mm_cvtss_f32(_mm_add_ss(_mm_maskz_mov_ps(keep, _mm_set_ss(*sa)), _mm_set_ss(a)));
    *sb = _mm_cvtss_f32(_mm_add_ss(_mm_maskz_mov_ps(keep, _mm_set_ss(*sb)), _mm_set_ss(b)));
}
#else
static inline void cope_restart_f32(float *sa, float *sb, bool fresh, float a, float b)
{
    *sa = (fresh ? 0.0f : *sa) + a;
    *sb = (fresh ? 0.0f : *sb) + b;
}
#endif
static inline void cope_restart_f64(double *sa, double *sb, bool fresh, double a, double b)
{
    *sa = (fresh ? 0.0 : *sa) + a;
    *sb = (fresh ? 0.0 : *sb) + b;
}

/* the group of rows i0 .. i0 + nr - 1 of one (b, h) */
typedef struct cope_rows {
    int64_t i0, m; /* the first row's query; m: the keys of a row, and its stride */
    int n, nr;
    const uint8_t *keep; /* this batch's row of the key mask, or NULL */
    bool causal;
    bool fused; /* pg_cope_attention's rows, not bound to the chain's bits: in float with AVX-512
                   dz's additions by cope_runs_vec_f32; false: in the chain's order (pg_cope_interp) */
} cope_rows;

/* The backward's operands and results at the group's first row: s, dout and ds (nr, m),
 * z and dz (nr, n); ds, dz NULL when not wanted, assigned (not added to) when fresh */
typedef struct cope_grads {
    const void *s, *z, *dout;
    void *ds, *dz;
    bool ds_fresh, dz_fresh;
} cope_grads;

/* row k may see keys 0 .. visible - 1 (causal: j <= i), less those the key mask hides */
static inline int64_t cope_visible(const cope_rows *r, int k)
{
    const int64_t last = r->i0 + k + 1;
    return r->causal && last < r->m ? last : r->m;
}

/* Each step is a loop along a row (the gates' and ds's vectorised), but for the running
 * sums, which go COPE_ROWS rows at a time so that their additions' latencies overlap
 * (pg_scan_rows, pg_cumsum's). Under a causal mask the keys after a row's query
 * (j >= visible) have sum 0: the bias there is the constant z[0] + 0 (z[c] - z[0])
 * and ds 0, so the scans stop at the group's last visible key and only the gradient
 * to z walks the rest. */
#define DEFINE_COPE(T, sfx, SIGMOID, FLOOR)                                                                    \
    /* (1): g (nr, len) from s (nr, m), 0 where hidden; len: the group's last visible key + 1.                 \
     * COPE_GATES_VEC takes a row's visible keys where there is one (float, AVX-512); else 16 keys             \
     * a step up to the visible ones rounded up to 16 where the row has them (the extra gates                  \
     * are then overwritten by 0, or lie past len), and the scalar tail where it has not. */                   \
    static void cope_gates_##sfx(T *restrict g, const T *restrict s, const cope_rows *r, int64_t len, T in_scale) \
    {                                                                                                          \
        for (int k = 0; k < r->nr; k++) {                                                                      \
            T *gk = g + k * r->m;                                                                              \
            const T *sk = s + k * r->m;                                                                        \
            const int64_t vis = cope_visible(r, k), up = (vis + 15) / 16 * 16;                                 \
            int64_t j = COPE_GATES_VEC_##sfx(gk, sk, vis, in_scale); /* vis, or 0: no vector form */           \
            const int64_t end = j == vis || up > r->m ? vis : up;                                              \
            for (; j + 16 <= end; j += 16)                                                                     \
                for (int i = 0; i < 16; i++)                                                                   \
                    gk[j + i] = SIGMOID(sk[j + i] * in_scale);                                                 \
            for (; j < end; j++)                                                                               \
                gk[j] = SIGMOID(sk[j] * in_scale);                                                             \
            if (r->keep)                                                                                       \
                for (j = 0; j < vis; j++)                                                                      \
                    gk[j] = r->keep[j] ? gk[j] : (T)0;                                                         \
            for (j = vis; j < len; j++)                                                                        \
                gk[j] = 0;                                                                                     \
        }                                                                                                      \
    }                                                                                                          \
    /* (4) along a row: the sums x -> o = out_scale z read at p = min(x, n - 1) (o may be x); NaN              \
     * stays NaN (COPE_LERP_VEC first: 16 keys at a time with AVX-512 in float, cope_lerp_vec_f32).            \
     * With a (the attention's a = q k^T row): a_scale a + that where visible, -inf after. */                  \
    static void cope_lerp_row_##sfx(T *o, const T *x, const T *restrict z, const T *restrict a, T a_scale,     \
                                    int64_t vis, int64_t m, int n, T out_scale)                                \
    {                                                                                                          \
        const T top = (T)(n - 1), at0 = (z[0] + (T)0 * (z[n > 1] - z[0])) * out_scale; /* p = 0 */             \
        for (int64_t j = vis; j < m; j++)                                                                      \
            o[j] = a ? (T)-INFINITY : at0;                                                                     \
        for (int64_t j = COPE_LERP_VEC_##sfx(o, x, z, a, a_scale, vis, n, out_scale); j < vis; j++) {          \
            const T p = x[j] > top ? top : x[j];                                                               \
            if (p != p) {                                                                                      \
                o[j] = p;                                                                                      \
                continue;                                                                                      \
            }                                                                                                  \
            const T fl = FLOOR(p);                                                                             \
            const int f = (int)fl, c = f + 1 < n ? f + 1 : f;                                                  \
            const T bias = (z[f] + (p - fl) * (z[c] - z[f])) * out_scale;                                      \
            o[j] = a ? a_scale * a[j] + bias : bias;                                                           \
        }                                                                                                      \
    }                                                                                                          \
    /* (4) backward along a row's visible keys, x in place: dx = d (z[c] - z[f]), d = out_scale                \
     * dout, and each key's shares of dz, a = d - w d for dz[f] and b = w d for dz[c], with f                  \
     * in fo; a NaN p passes nothing (dx 0, fo -1). A hidden key's dx would reach only its own                 \
     * ds (0). */                                                                                              \
    static void cope_lerp_bwd_keys_##sfx(T *restrict x, T *restrict a, T *restrict b, int *restrict fo,        \
                                         const T *restrict dout, const T *restrict z, int64_t vis, int n,      \
                                         T out_scale)                                                          \
    {                                                                                                          \
        const T top = (T)(n - 1);                                                                              \
        for (int64_t j = COPE_LERP_BWD_VEC_##sfx(x, a, b, fo, dout, z, vis, n, out_scale); j < vis; j++) {     \
            const T p = x[j] > top ? top : x[j], d = dout[j] * out_scale;                                      \
            if (p != p) {                                                                                      \
                x[j] = 0, fo[j] = -1;                                                                          \
                continue;                                                                                      \
            }                                                                                                  \
            const T fl = FLOOR(p), w = p - fl;                                                                 \
            const int f = (int)fl, c = f + 1 < n ? f + 1 : f;                                                  \
            x[j] = d * (z[c] - z[f]);                                                                          \
            a[j] = d - w * d;                                                                                  \
            b[j] = w * d;                                                                                      \
            fo[j] = f;                                                                                         \
        }                                                                                                      \
    }                                                                                                          \
    /* The shares summed per run of keys with one f (p falls along a row: one run per f), each                 \
     * run's keys in order from 0, as pg_gather_lerp's backward sums them. Without a branch per                \
     * key (it would be mispredicted at every new run): each key rewrites its run's record k                   \
     * in place (k <= the key), a fresh run's sums restarting from +0 (cope_restart). Four                     \
     * rows (a, b, fo + q m, q < nr4 <= 4) step together, their chains of additions                            \
     * overlapping; each row's additions in its own order, as alone. runs[q]: row q's runs. */                 \
    static void cope_runs4_##sfx(T *a, T *b, int *fo, int64_t m, const int64_t *vis, int nr4, int64_t *runs)   \
    {                                                                                                          \
        int64_t k[4] = {-1, -1, -1, -1}, v[4] = {0, 0, 0, 0}, vmax = 0;                                        \
        int cur[4] = {-1, -1, -1, -1};                                                                         \
        T sa[4] = {0, 0, 0, 0}, sb[4] = {0, 0, 0, 0};                                                          \
        for (int q = 0; q < nr4; q++)                                                                          \
            v[q] = vis[q], vmax = vis[q] > vmax ? vis[q] : vmax;                                               \
        for (int64_t j = 0; j < vmax; j++)                                                                     \
            for (int q = 0; q < 4; q++) {                                                                      \
                const int64_t at = q * m + j;                                                                  \
                const int f = j < v[q] ? fo[at] : -1;                                                          \
                if (f < 0)                                                                                     \
                    continue;                                                                                  \
                const bool fresh = f != cur[q];                                                                \
                k[q] += fresh;                                                                                 \
                cur[q] = f;                                                                                    \
                cope_restart_##sfx(&sa[q], &sb[q], fresh, a[at], b[at]);                                       \
                a[q * m + k[q]] = sa[q], b[q * m + k[q]] = sb[q], fo[q * m + k[q]] = f;                        \
            }                                                                                                  \
        for (int q = 0; q < nr4; q++)                                                                          \
            runs[q] = k[q] + 1;                                                                                \
    }                                                                                                          \
    /* One row's runs as cope_runs4 leaves them, in the fused order: COPE_RUNS_VEC's 16 at a time, then key    \
     * by key (a run's keys joining its last record when they share its f). Returns the records. */            \
    static int64_t cope_runs_row_##sfx(T *a, T *b, int *fo, int64_t vis)                                       \
    {                                                                                                          \
        int64_t k = 0, j = COPE_RUNS_VEC_##sfx(a, b, fo, vis, &k);                                             \
        int cur = k ? fo[k - 1] : -1;                                                                          \
        T sa = k ? a[k - 1] : 0, sb = k ? b[k - 1] : 0;                                                        \
        for (; j < vis; j++) {                                                                                 \
            const int f = fo[j];                                                                               \
            if (f < 0)                                                                                         \
                continue;                                                                                      \
            const bool fresh = f != cur;                                                                       \
            k += fresh;                                                                                        \
            cur = f;                                                                                           \
            cope_restart_##sfx(&sa, &sb, fresh, a[j], b[j]);                                                   \
            a[k - 1] = sa, b[k - 1] = sb, fo[k - 1] = f;                                                       \
        }                                                                                                      \
        return k;                                                                                              \
    }                                                                                                          \
    /* The keys after the query (p = 0: f = 0, w = 0) add a = d - 0 d and b = 0 d to the run                   \
     * of f = 0, in order. When every d is zero (attention's gradient at the keys it hides),                   \
     * every a and b is a zero, and adding zeros changes nothing: a sum started from +0 is                     \
     * never -0 (x + y is -0 only when both are), so the chain of additions is skipped. */                     \
    static void cope_trail_##sfx(T *sa, T *sb, const T *restrict dout, int64_t vis, int64_t m, T out_scale)    \
    {                                                                                                          \
        int zero = 1;                                                                                          \
        for (int64_t j = vis; j < m; j++)                                                                      \
            zero &= dout[j] * out_scale == 0;                                                                  \
        for (int64_t j = vis; !zero && j < m; j++) {                                                           \
            const T d = dout[j] * out_scale;                                                                   \
            *sa += d - (T)0 * d;                                                                               \
            *sb += (T)0 * d;                                                                                   \
        }                                                                                                      \
    }                                                                                                          \
    /* dz[f] += sum_a, then dz[c] += sum_b, run by run (f falls from run to run), without                      \
     * reading back through memory what the last run stored: dz[f] is kept in a register until                 \
     * the next run's sum_b (c = f + 1 there, but where the first run's f = n - 1) has joined                  \
     * it. The same additions in the same order as run by run. */                                              \
    static void cope_dz_runs_##sfx(T *dz, const int *fo, const T *sum_a, const T *sum_b, int64_t runs, int n)  \
    {                                                                                                          \
        if (runs == 0)                                                                                         \
            return;                                                                                            \
        int pf = fo[0];                                                                                        \
        T pend = dz[pf] + sum_a[0];                                                                            \
        if (pf + 1 < n)                                                                                        \
            dz[pf + 1] += sum_b[0];                                                                            \
        else                                                                                                   \
            pend += sum_b[0];                                                                                  \
        for (int64_t k = 1; k < runs; k++) {                                                                   \
            k += COPE_DZ_RUNS_VEC_##sfx(dz, fo, sum_a, sum_b, k, runs, &pf, &pend);                            \
            if (k == runs)                                                                                     \
                break;                                                                                         \
            const int f = fo[k];                                                                               \
            if (f + 1 == pf) {                                                                                 \
                dz[pf] = pend + sum_b[k];                                                                      \
            } else {                                                                                           \
                dz[pf] = pend;                                                                                 \
                dz[f + 1] += sum_b[k];                                                                         \
            }                                                                                                  \
            pend = dz[f] + sum_a[k];                                                                           \
            pf = f;                                                                                            \
        }                                                                                                      \
        dz[pf] = pend;                                                                                         \
    }                                                                                                          \
    /* (4) backward along the group's rows: dx into x (nr, m), and dz (nr, n; NULL: not wanted)                \
     * += the runs' sums; a, b, fo: (nr, m) each */                                                            \
    static void cope_lerp_bwd_rows_##sfx(T *restrict dz, T *restrict x, const T *restrict dout,                \
                                         const T *restrict z, T *a, T *b, int *fo, const cope_rows *r,         \
                                         T out_scale)                                                          \
    {                                                                                                          \
        const int64_t m = r->m, n = r->n;                                                                      \
        int64_t vis[COPE_ROWS], runs[COPE_ROWS];                                                               \
        for (int k = 0; k < r->nr; k++) {                                                                      \
            vis[k] = cope_visible(r, k);                                                                       \
            cope_lerp_bwd_keys_##sfx(x + k * m, a + k * m, b + k * m, fo + k * m, dout + k * m, z + k * n,     \
                                     vis[k], r->n, out_scale);                                                 \
        }                                                                                                      \
        if (!dz)                                                                                               \
            return;                                                                                            \
        const bool by_vector = r->fused && COPE_RUNS_VEC_ON_##sfx;                                             \
        for (int k = 0; by_vector && k < r->nr; k++)                                                           \
            runs[k] = cope_runs_row_##sfx(a + k * m, b + k * m, fo + k * m, vis[k]);                           \
        for (int k = 0; !by_vector && k < r->nr; k += 4)                                                       \
            cope_runs4_##sfx(a + k * m, b + k * m, fo + k * m, m, vis + k, r->nr - k < 4 ? r->nr - k : 4,      \
                             runs + k);                                                                        \
        for (int k = 0; k < r->nr; k++) {                                                                      \
            T *ak = a + k * m, *bk = b + k * m, *dzk = dz + k * n;                                             \
            int *fk = fo + k * m;                                                                              \
            if (vis[k] < m) {                                                                                  \
                if (runs[k] == 0 || fk[runs[k] - 1] != 0)                                                      \
                    ak[runs[k]] = 0, bk[runs[k]] = 0, fk[runs[k]] = 0, runs[k]++;                              \
                cope_trail_##sfx(&ak[runs[k] - 1], &bk[runs[k] - 1], dout + k * m, vis[k], m, out_scale);      \
            }                                                                                                  \
            cope_dz_runs_##sfx(dzk, fk, ak, bk, runs[k], (int)n);                                              \
        }                                                                                                      \
    }                                                                                                          \
    /* (1) backward along row k: ds (+)= dg g (1 - g) in_scale; where hidden, the chain's                      \
     * 0 g (1 - g) in_scale = 0 in_scale */                                                                    \
    static void cope_ds_row_##sfx(T *restrict ds, bool fresh, const T *restrict dg, const T *restrict g,       \
                                  const cope_rows *r, int k, T in_scale)                                       \
    {                                                                                                          \
        const int64_t vis = cope_visible(r, k);                                                                \
        const T hid = (T)0 * in_scale;                                                                         \
        for (int64_t j = 0; j < vis; j++) {                                                                    \
            const T v = dg[j] * (g[j] * ((T)1 - g[j])) * in_scale, w = r->keep && !r->keep[j] ? hid : v;       \
            ds[j] = fresh ? w : ds[j] + w;                                                                     \
        }                                                                                                      \
        for (int64_t j = vis; j < r->m; j++)                                                                   \
            ds[j] = fresh ? hid : ds[j] + hid;                                                                 \
    }                                                                                                          \
    /* out (nr, m): gates, then sums, then the bias, in place; with a (nr, m; the attention's                  \
     * q k^T), the logits a_scale a + bias, -inf after each row's visible keys */                              \
    static void cope_fwd_##sfx(T *out, const T *s, const T *z, const cope_rows *r, T in_scale, T out_scale,    \
                               const T *a, T a_scale)                                                          \
    {                                                                                                          \
        const int64_t len = cope_visible(r, r->nr - 1);                                                        \
        cope_gates_##sfx(out, s, r, len, in_scale);                                                            \
        pg_scan_rows_##sfx(out, out, r->nr, r->m, len, true, false);                                           \
        for (int k = 0; k < r->nr; k++)                                                                        \
            cope_lerp_row_##sfx(out + k * r->m, out + k * r->m, z + k * r->n, a ? a + k * r->m : NULL,         \
                                a_scale, cope_visible(r, k), r->m, r->n, out_scale);                           \
    }                                                                                                          \
    /* cope_fwd keeping the gates in g and the sums in x (nr, m) for cope_bwd_kept */                          \
    static inline void cope_fwd_kept_##sfx(T *out, T *g, T *x, const T *s, const T *z, const cope_rows *r,     \
                                           T in_scale, T out_scale, const T *a, T a_scale)                     \
    {                                                                                                          \
        const int64_t len = cope_visible(r, r->nr - 1);                                                        \
        cope_gates_##sfx(g, s, r, len, in_scale);                                                              \
        pg_scan_rows_##sfx(g, x, r->nr, r->m, len, true, false);                                               \
        for (int k = 0; k < r->nr; k++)                                                                        \
            cope_lerp_row_##sfx(out + k * r->m, x + k * r->m, z + k * r->n, a ? a + k * r->m : NULL, a_scale,  \
                                cope_visible(r, k), r->m, r->n, out_scale);                                    \
    }                                                                                                          \
    /* the backward from the gates g and sums x (nr, m; x is overwritten); ab: the rows' shares                \
     * a, b and floors fo (COPE_ROWS, m) each; io's ds (nr, m) and dz (nr, n) NULL when not wanted */          \
    static inline void cope_bwd_kept_##sfx(const cope_grads *io, const cope_rows *r, const T *g, T *x,         \
                                           char *ab, T in_scale, T out_scale)                                  \
    {                                                                                                          \
        const T *z = io->z, *dout = io->dout;                                                                  \
        T *ds = io->ds, *dz = io->dz;                                                                          \
        const int64_t m = r->m, n = r->n, len = cope_visible(r, r->nr - 1);                                    \
        T *a = (T *)ab, *b = a + COPE_ROWS * m;                                                                \
        int *fo = (int *)(b + COPE_ROWS * m);                                                                  \
        if (dz && io->dz_fresh)                                                                                \
            memset(dz, 0, (size_t)(r->nr * n) * sizeof(T));                                                    \
        cope_lerp_bwd_rows_##sfx(dz, x, dout, z, a, b, fo, r, out_scale);                                      \
        pg_scan_rows_##sfx(x, x, r->nr, m, len, false, false); /* dg */                                        \
        for (int k = 0; ds && k < r->nr; k++)                                                                  \
            cope_ds_row_##sfx(ds + k * m, io->ds_fresh, x + k * m, g + k * m, r, k, in_scale);                 \
    }                                                                                                          \
    /* scratch: g, x (nr, m) each, then cope_bwd_kept's ab, as cope_scratch lays them out */                   \
    static inline void cope_bwd_##sfx(const cope_grads *io, const cope_rows *r, char *scratch, T in_scale,     \
                                      T out_scale)                                                             \
    {                                                                                                          \
        const int64_t m = r->m, len = cope_visible(r, r->nr - 1);                                              \
        T *g = (T *)scratch, *x = g + COPE_ROWS * m;                                                           \
        cope_gates_##sfx(g, io->s, r, len, in_scale);                                                          \
        pg_scan_rows_##sfx(g, x, r->nr, m, len, true, false);                                                  \
        cope_bwd_kept_##sfx(io, r, g, x, (char *)(x + COPE_ROWS * m), in_scale, out_scale);                    \
    }
DEFINE_COPE(float, f32, pg_vsigmoidf, floorf)
DEFINE_COPE(double, f64, pg_sigmoid_d, floor)

/* one thread's backward scratch: g and x (COPE_ROWS, Lk), then cope_bwd_kept's ab: a, b
 * (COPE_ROWS, Lk) and fo (COPE_ROWS, Lk ints), in bytes rounded up to 64 (each thread's
 * slice starts aligned) */
static inline size_t cope_ab_bytes(int64_t Lk, pg_dtype dt)
{
    return (size_t)COPE_ROWS * (size_t)Lk * (2 * pg_dtype_size(dt) + sizeof(int));
}
static inline size_t cope_scratch(int64_t Lk, pg_dtype dt)
{
    size_t bytes = (size_t)Lk * 2 * COPE_ROWS * pg_dtype_size(dt) + cope_ab_bytes(Lk, dt);
    return (bytes + 63) / 64 * 64;
}

#endif
