/* Row sums kept in 16 lanes of double, their final sums 8 rows at a time (internal, AVX-512):
 * autograd/op_norm.c's float norms and autograd/op_loss.c's float cross-entropy.
 *
 * Their loops sum a row in 16 lanes (lane l: elements l, l + 16, ... in order, in double)
 * and end with 0 + lane 0 + lane 1 + ... + lane 15, a chain of 16 dependent additions per
 * row. In vectors a row's lanes are two registers of 8 doubles (pg_lo_pd, pg_hi_pd of each
 * 16 floats); pg_row_totals8 transposes 8 rows' registers so that their final chains run
 * side by side in one vector, each row's additions in the same order: the same bits. */
#ifndef PG_LANE_SUMS_H
#define PG_LANE_SUMS_H

#if defined(__AVX512F__)
#include <immintrin.h>

#include "../tensor/simd_transpose.h"

/* the 16 floats of v as doubles: lanes 0-7 and 8-15 */
static inline __m512d pg_lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d pg_hi_pd(__m512 v)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* out[q] = 0 + lane 0 + ... + lane 15 of row q's lane sums (lo[q]: lanes 0-7, hi[q]: 8-15),
 * q < 8; lo and hi are transposed in place */
static inline void pg_row_totals8(double *out, __m512d lo[8], __m512d hi[8])
{
    transpose8_f64(lo);
    transpose8_f64(hi);
    __m512d s = _mm512_setzero_pd();
    for (int l = 0; l < 8; l++)
        s = _mm512_add_pd(s, lo[l]);
    for (int l = 0; l < 8; l++)
        s = _mm512_add_pd(s, hi[l]);
    _mm512_storeu_pd(out, s);
}
#endif

#endif
