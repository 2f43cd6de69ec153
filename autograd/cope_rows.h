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

/* (4) a vector of keys at a time (PG_VF_LANES: 16 floats with AVX-512, 8 with AVX2): a row's
 * sums fall along it (gates >= 0) by at most 1 a key (gates <= 1), so the floors f and the
 * c = min(f + 1, n - 1) of a vector's keys lie within LANES + 2 consecutive entries of z,
 * and a window of COPE_WINDOW = 2 LANES entries of z, read by permutes, gives z[f] and z[c]
 * where scalar loads did (gathers measured slower than those with AVX-512). Each function
 * returns how many keys of [0, vis) it did, vectors from the start (the last one short when
 * vis is not a multiple), stopping at a NaN p or a vector whose window does not hold its f
 * and c; the scalar loop does the rest. The arithmetic is the scalar loop's, operation by
 * operation (no fma): the same bits. */
#if defined(PG_VEC)
#define COPE_WINDOW (2 * PG_VF_LANES)

typedef struct cope_vec {
    pg_vf p, w, zf, zc; /* p = min(x, n - 1), w = p - floor p, z[f], z[c] */
    pg_vi f;
} cope_vec;

#if defined(__AVX512F__)
/* the window lo:hi (32 entries) at idx (0 .. 31) */
static inline __m512 cope_window_at(__m512 lo, __m512i idx, __m512 hi) { return _mm512_permutex2var_ps(lo, idx, hi); }
static inline int cope_last_lane(__m512i v) { return _mm_extract_epi32(_mm512_extracti32x4_epi32(v, 3), 3); }
/* whether a lane of v has a bit of `bits` */
static inline bool cope_any_bits(__m512i v, int bits) { return _mm512_test_epi32_mask(v, _mm512_set1_epi32(bits)); }
static inline void cope_store_ints(int *p, int64_t count, __m512i v)
{
    _mm512_mask_storeu_epi32(p, pg_vf_first(count), v);
}
#else
/* the window lo:hi (16 entries) at idx (0 .. 15): each half permuted by idx's low 3 bits, the
 * high half's lanes where idx has bit 3 (shifted into the sign bit, which the blend reads) */
static inline __m256 cope_window_at(__m256 lo, __m256i idx, __m256 hi)
{
    const __m256 from_hi = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), from_hi);
}
static inline int cope_last_lane(__m256i v) { return _mm256_extract_epi32(v, 7); }
static inline bool cope_any_bits(__m256i v, int bits) { return !_mm256_testz_si256(v, _mm256_set1_epi32(bits)); }
static inline void cope_store_ints(int *p, int64_t count, __m256i v)
{
    if (count >= 8)
        _mm256_storeu_si256((__m256i *)p, v);
    else
        _mm256_maskstore_epi32(p, _mm256_castps_si256(pg_vf_first(count)), v);
}
#endif

/* the keys at x (sums) reading z (n >= COPE_WINDOW entries), the first `live` lanes (the
 * others read as a sum of 0); false: the scalar loop takes them */
static inline bool cope_vec_at(cope_vec *v, const float *x, const float *z, int n, int64_t live)
{
    const pg_vf top = PG_VF(set1)((float)(n - 1)), xv = pg_vf_loadn(x, live);
    v->p = PG_VF_SELECT(PG_VF_CMP(xv, top, _CMP_GT_OQ), xv, top);
    if (PG_VF_MASK_BITS(PG_VF_CMP(v->p, v->p, _CMP_UNORD_Q)))
        return false;
    const pg_vf fl = PG_VF_FLOOR(v->p);
    v->w = PG_VF(sub)(v->p, fl);
    v->f = PG_VI(cvttps_epi32)(fl);
    const pg_vi c = PG_VI(min_epi32)(PG_VI(add_epi32)(v->f, PG_VI(set1_epi32)(1)), PG_VI(set1_epi32)(n - 1));
    const int last = cope_last_lane(v->f); /* the smallest f */
    const int base = last < n - COPE_WINDOW ? last : n - COPE_WINDOW;
    const pg_vi b = PG_VI(set1_epi32)(base), fi = PG_VI(sub_epi32)(v->f, b), ci = PG_VI(sub_epi32)(c, b);
    /* an index outside 0 .. COPE_WINDOW - 1 (a negative one too) has a bit above them */
    if (base < 0 || cope_any_bits(PG_VI_BITS(or)(fi, ci), ~(COPE_WINDOW - 1)))
        return false;
    const pg_vf lo = PG_VF(loadu)(z + base), hi = PG_VF(loadu)(z + base + PG_VF_LANES);
    v->zf = cope_window_at(lo, fi, hi);
    v->zc = cope_window_at(lo, ci, hi);
    return true;
}

/* forward: o = out_scale (z[f] + w (z[c] - z[f])) from the sums x (o may be x), plus a_scale a
 * (the attention's logits) where a is not NULL */
static int64_t cope_lerp_vec_f32(float *o, const float *x, const float *z, const float *a, float a_scale,
                                 int64_t vis, int n, float out_scale)
{
    int64_t j = 0;
    const pg_vf os = PG_VF(set1)(out_scale), as = PG_VF(set1)(a_scale);
    cope_vec v;
    for (; n >= COPE_WINDOW && j < vis; j += PG_VF_LANES) {
        if (!cope_vec_at(&v, x + j, z, n, vis - j))
            return j;
        const pg_vf at = PG_VF(add)(v.zf, PG_VF(mul)(v.w, PG_VF(sub)(v.zc, v.zf)));
        pg_vf bias = PG_VF(mul)(at, os);
        if (a)
            bias = PG_VF(add)(PG_VF(mul)(as, pg_vf_loadn(a + j, vis - j)), bias);
        pg_vf_storen(o + j, vis - j, bias);
    }
    return j < vis ? j : vis;
}

/* backward: x = d (z[c] - z[f]) in place of the sums; a = d - w d, b = w d, fo = f */
static int64_t cope_lerp_bwd_vec_f32(float *x, float *a, float *b, int *fo, const float *dout, const float *z,
                                     int64_t vis, int n, float out_scale)
{
    int64_t j = 0;
    const pg_vf os = PG_VF(set1)(out_scale);
    cope_vec v;
    for (; n >= COPE_WINDOW && j < vis; j += PG_VF_LANES) {
        const int64_t live = vis - j;
        if (!cope_vec_at(&v, x + j, z, n, live))
            return j;
        const pg_vf d = PG_VF(mul)(pg_vf_loadn(dout + j, live), os), wd = PG_VF(mul)(v.w, d);
        pg_vf_storen(x + j, live, PG_VF(mul)(d, PG_VF(sub)(v.zc, v.zf)));
        pg_vf_storen(a + j, live, PG_VF(sub)(d, wd));
        pg_vf_storen(b + j, live, wd);
        cope_store_ints(fo + j, live, v.f);
    }
    return j < vis ? j : vis;
}

/* pg_vsigmoidf of n vectors (1 to 4, the ..._n functions' convention in tensor/vmath.h),
 * operation by operation (the same bits): e = e^-|x| by pg_vexpf_n, then 1 / (1 + e) or
 * e / (1 + e). With AVX-512 the compiler's loop over pg_vsigmoidf had left a scalar tail in
 * each row: pg_cope_attention 2-3% slower. */
PG_ALWAYS_INLINE void cope_sigmoid_n(pg_vf *y, const pg_vf *x, int n)
{
    const pg_vf zero = PG_VF(setzero)(), one = PG_VF(set1)(1.0f);
    pg_vf e[4];
    PG_VLANES(k, n) e[k] = PG_VF(min)(x[k], PG_VF(sub)(zero, x[k])); /* -|x|; NaN stays */
    pg_vexpf_n(e, e, n);
    PG_VLANES(k, n)
    {
        const pg_vf inv = PG_VF(div)(one, PG_VF(add)(one, e[k]));
        const pg_vf_mask below = PG_VF_CMP(x[k], zero, _CMP_NGE_UQ); /* x < 0 or NaN */
        y[k] = PG_VF_SELECT(below, inv, PG_VF(mul)(e[k], inv));
    }
}

/* the gates g = pg_vsigmoidf(in_scale s) of a row's keys [0, vis), four vectors at a time,
 * the last vector partial */
static int64_t cope_gates_vec_f32(float *g, const float *s, int64_t vis, float in_scale)
{
    const pg_vf scale = PG_VF(set1)(in_scale);
    int64_t j = 0;
    for (; j + 4 * PG_VF_LANES <= vis; j += 4 * PG_VF_LANES) {
        pg_vf x[4];
        PG_VLANES(k, 4) x[k] = PG_VF(mul)(PG_VF(loadu)(s + j + k * PG_VF_LANES), scale);
        cope_sigmoid_n(x, x, 4);
        PG_VLANES(k, 4) PG_VF(storeu)(g + j + k * PG_VF_LANES, x[k]);
    }
    for (; j < vis; j += PG_VF_LANES) {
        pg_vf x = PG_VF(mul)(pg_vf_loadn(s + j, vis - j), scale);
        cope_sigmoid_n(&x, &x, 1);
        pg_vf_storen(g + j, vis - j, x);
    }
    return vis;
}
#endif

#if defined(__AVX512F__)
/* the lanes' numbers, 0 .. 15 */
static inline __m512i cope_lanes(void)
{
    return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
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
        last_f = cope_last_lane(f);
    }
    *k = at;
    return j;
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

#elif defined(__AVX2__) && defined(__FMA__)
/* The AVX-512 forms above with 8 lanes (AVX2 has no compress and no lane masks): the
 * compress a permute by the indices of the mask's set lanes (cope_compress_lut), the masked
 * additions blends of the sums. */

/* the popcount of a byte, and lane i's place among the set lanes of m: constant expressions */
#define COPE_POP8(x)                                                                                           \
    (((x) & 1u) + ((x) >> 1 & 1u) + ((x) >> 2 & 1u) + ((x) >> 3 & 1u) + ((x) >> 4 & 1u) + ((x) >> 5 & 1u) +  \
     ((x) >> 6 & 1u) + ((x) >> 7 & 1u))
#define COPE_SLOT(m, i) (((m) >> (i) & 1u) * ((unsigned)(i) << 4 * COPE_POP8((m) & ((1u << (i)) - 1))))
#define COPE_PACKED(m)                                                                                         \
    (COPE_SLOT(m, 0) | COPE_SLOT(m, 1) | COPE_SLOT(m, 2) | COPE_SLOT(m, 3) | COPE_SLOT(m, 4) |                 \
     COPE_SLOT(m, 5) | COPE_SLOT(m, 6) | COPE_SLOT(m, 7))
#define COPE_P4(m) COPE_PACKED(m), COPE_PACKED(m + 1u), COPE_PACKED(m + 2u), COPE_PACKED(m + 3u)
#define COPE_P16(m) COPE_P4(m), COPE_P4(m + 4u), COPE_P4(m + 8u), COPE_P4(m + 12u)
#define COPE_P64(m) COPE_P16(m), COPE_P16(m + 16u), COPE_P16(m + 32u), COPE_P16(m + 48u)
/* entry m: the lanes set in m, lowest first, 4 bits each (the k-th set lane in bits 4k ..
 * 4k + 2; the slots past them 0) */
static const uint32_t cope_compress_lut[256] = {COPE_P64(0u), COPE_P64(64u), COPE_P64(128u), COPE_P64(192u)};

/* the permute indices that move the lanes set in m (8 bits) to the front, in order */
static inline __m256i cope_compress_idx(unsigned m)
{
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    return _mm256_srlv_epi32(_mm256_set1_epi32((int)cope_compress_lut[m]), shifts);
}

/* the lanes' numbers, 0 .. 7 */
static inline __m256i cope_lanes(void) { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }

/* cope_runs_vec_f32 8 keys at a time: the segmented scan in 3 steps */
static int64_t cope_runs_vec_f32(float *a, float *b, int *fo, int64_t vis, int64_t *k)
{
    const __m256i lane = cope_lanes();
    const __m256i next = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
    const __m256 first = _mm256_castsi256_ps(_mm256_setr_epi32(-1, 0, 0, 0, 0, 0, 0, 0));
    int64_t j = 0, at = 0;
    int last_f = -1; /* the last record's f, a and b (a, b in every lane) */
    __m256 last_a = _mm256_setzero_ps(), last_b = _mm256_setzero_ps();
    for (; j + 8 <= vis; j += 8) {
        const __m256i f = _mm256_loadu_si256((const __m256i *)(fo + j));
        if (_mm256_movemask_ps(_mm256_castsi256_ps(f)))
            break;
        __m256 av = _mm256_loadu_ps(a + j), bv = _mm256_loadu_ps(b + j);
        for (int s = 1; s < 8; s *= 2) {
            const __m256i from = _mm256_sub_epi32(lane, _mm256_set1_epi32(s)); /* lanes < s: not added to */
            const __m256i past = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(s - 1));
            const __m256i f_from = _mm256_permutevar8x32_epi32(f, from);
            const __m256 same = _mm256_castsi256_ps(_mm256_and_si256(past, _mm256_cmpeq_epi32(f, f_from)));
            av = _mm256_blendv_ps(av, _mm256_add_ps(av, _mm256_permutevar8x32_ps(av, from)), same);
            bv = _mm256_blendv_ps(bv, _mm256_add_ps(bv, _mm256_permutevar8x32_ps(bv, from)), same);
        }
        const __m256i f_next = _mm256_permutevar8x32_epi32(f, next);
        const unsigned ends = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(f, f_next))) ^ 0x7Fu;
        const int runs = __builtin_popcount(ends), goes_on = _mm256_extract_epi32(f, 0) == last_f;
        const __m256i idx = cope_compress_idx(ends);
        const __m256i fr = _mm256_permutevar8x32_epi32(f, idx);
        __m256 ar = _mm256_permutevar8x32_ps(av, idx), br = _mm256_permutevar8x32_ps(bv, idx);
        /* the last block's last run goes on: its record joins this block's first (no branch) */
        const __m256 join = _mm256_and_ps(first, _mm256_castsi256_ps(_mm256_set1_epi32(-goes_on)));
        at -= goes_on;
        ar = _mm256_blendv_ps(ar, _mm256_add_ps(ar, last_a), join);
        br = _mm256_blendv_ps(br, _mm256_add_ps(br, last_b), join);
        _mm256_storeu_ps(a + at, ar);
        _mm256_storeu_ps(b + at, br);
        _mm256_storeu_si256((__m256i *)(fo + at), fr);
        at += runs;
        const __m256i lastv = _mm256_set1_epi32(runs - 1);
        last_a = _mm256_permutevar8x32_ps(ar, lastv), last_b = _mm256_permutevar8x32_ps(br, lastv);
        last_f = cope_last_lane(f);
    }
    *k = at;
    return j;
}

/* cope_dz_runs_vec_f32 8 records at a time: bins f_k .. f_k - 6 take their a and then
 * the next record's b, bin f_k - 7 its a, pending (lane 0 stored back as it was read) */
static int64_t cope_dz_runs_vec_f32(float *dz, const int *fo, const float *sum_a, const float *sum_b, int64_t k,
                                    int64_t runs, int *pf, float *pend)
{
    const __m256i lane = cope_lanes(), rev = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    const __m256 first = _mm256_castsi256_ps(_mm256_setr_epi32(-1, 0, 0, 0, 0, 0, 0, 0));
    const int64_t k0 = k;
    for (; k + 8 <= runs; k += 8) {
        const int fk = *pf - 1; /* record k + i has f = fk - i */
        const __m256i want = _mm256_sub_epi32(_mm256_set1_epi32(fk), lane);
        const __m256i got = _mm256_loadu_si256((const __m256i *)(fo + k));
        if (_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(got, want))) != 0xFF)
            break;
        /* lane u: bin fk - 7 + u, record i = 7 - u: a_i, then b_(i+1) but in lane 0 */
        const __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sum_a + k), rev);
        const __m256 b = _mm256_permutevar8x32_ps(pg_vf_loadn(sum_b + k + 1, 7), rev);
        dz[*pf] = *pend + sum_b[k];
        const __m256 old = _mm256_loadu_ps(dz + fk - 7), with_a = _mm256_add_ps(old, a);
        _mm256_storeu_ps(dz + fk - 7, _mm256_blendv_ps(_mm256_add_ps(with_a, b), old, first));
        *pend = _mm256_cvtss_f32(with_a);
        *pf = fk - 7;
    }
    return k - k0;
}
#endif

/* the vector forms by name and suffix (DEFINE_COPE pastes COPE_<NAME>_<sfx>): float's with
 * AVX-512 or AVX2, or none (OP_NO_VECTOR_FORM: 0 keys or records done) */
#if defined(PG_VEC)
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

/* *sa = (fresh ? 0 : *sa) + a, and *sb likewise: C's select became a branch, mispredicted
 * wherever runs are short; with AVX-512 a zero-masking move keeps it in the adder's
 * registers (one cycle on the sums' chain), with SSE2 an AND with all ones or zeros (+0) */
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512VL__)
static inline void cope_restart_f32(float *sa, float *sb, bool fresh, float a, float b)
{
    const __mmask8 keep = _cvtu32_mask8(!fresh);
    *sa = _mm_cvtss_f32(_mm_add_ss(_mm_maskz_mov_ps(keep, _mm_set_ss(*sa)), _mm_set_ss(a)));
    *sb = _mm_cvtss_f32(_mm_add_ss(_mm_maskz_mov_ps(keep, _mm_set_ss(*sb)), _mm_set_ss(b)));
}
#elif defined(__SSE2__)
static inline void cope_restart_f32(float *sa, float *sb, bool fresh, float a, float b)
{
    const __m128 keep = _mm_castsi128_ps(_mm_cvtsi32_si128(-(int)!fresh));
    *sa = _mm_cvtss_f32(_mm_add_ss(_mm_and_ps(keep, _mm_set_ss(*sa)), _mm_set_ss(a)));
    *sb = _mm_cvtss_f32(_mm_add_ss(_mm_and_ps(keep, _mm_set_ss(*sb)), _mm_set_ss(b)));
}
#else
static inline void cope_restart_f32(float *sa, float *sb, bool fresh, float a, float b)
{
    *sa = (fresh ? 0.0f : *sa) + a;
    *sb = (fresh ? 0.0f : *sb) + b;
}
#endif
#if defined(__SSE2__)
static inline void cope_restart_f64(double *sa, double *sb, bool fresh, double a, double b)
{
    const __m128d keep = _mm_castsi128_pd(_mm_set1_epi64x(-(long long)!fresh));
    *sa = _mm_cvtsd_f64(_mm_add_sd(_mm_and_pd(keep, _mm_set_sd(*sa)), _mm_set_sd(a)));
    *sb = _mm_cvtsd_f64(_mm_add_sd(_mm_and_pd(keep, _mm_set_sd(*sb)), _mm_set_sd(b)));
}
#else
static inline void cope_restart_f64(double *sa, double *sb, bool fresh, double a, double b)
{
    *sa = (fresh ? 0.0 : *sa) + a;
    *sb = (fresh ? 0.0 : *sb) + b;
}
#endif

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
