/* Row sums kept in 16 lanes of double, their final sums several rows at a time (internal,
 * AVX-512 or AVX2): autograd/op_norm.c's norms (float and double) and autograd/op_loss.c's
 * float cross-entropy.
 *
 * Their loops sum a row in 16 lanes (lane l: elements l, l + 16, ... in order, in double)
 * and end with 0 + lane 0 + lane 1 + ... + lane 15, a chain of 16 dependent additions per
 * row. In vectors a row's lanes are PG_SUM_PARTS registers of doubles (2 of 8 with AVX-512, 4
 * of 4 with AVX2; pg_lo_pd and pg_hi_pd turn a vector of floats into its two halves in
 * double); pg_row_totals transposes PG_SUM_ROWS rows' registers (8 or 4) so that their final
 * chains run side by side in one vector, each row's additions in the same order: the same
 * bits. */
#ifndef PG_LANE_SUMS_H
#define PG_LANE_SUMS_H

#include "../tensor/simd_transpose.h"
#include "../tensor/vmath.h"

#if defined(PG_VEC)
#define PG_SUM_ROWS PG_VD_LANES          /* rows whose totals run side by side */
#define PG_SUM_PARTS (16 / PG_VD_LANES)  /* vectors of doubles of a row's 16 lane sums */
#define PG_SUM_FLOATS (16 / PG_VF_LANES) /* vectors of floats of 16 elements */

#if defined(__AVX512F__)
/* the 16 floats of v as doubles: lanes 0-7 and 8-15 */
static inline __m512d pg_lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d pg_hi_pd(__m512 v)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#define PG_SUM_TRANSPOSE transpose8_f64
#define PG_VF_TRANSPOSE transpose16_f32 /* a square of PG_VF_LANES rows */
#else
/* the 8 floats of v as doubles: lanes 0-3 and 4-7 */
static inline __m256d pg_lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
static inline __m256d pg_hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
#define PG_SUM_TRANSPOSE transpose4_f64_ymm
#define PG_VF_TRANSPOSE transpose8_f32_ymm
#endif

/* out[q] = 0 + lane 0 + ... + lane 15 of row q's lane sums, q < PG_SUM_ROWS: part[p][q] holds
 * row q's lanes from p PG_VD_LANES on; each part[p] is transposed in place */
static inline void pg_row_totals(double *out, pg_vd *const part[PG_SUM_PARTS])
{
    for (int p = 0; p < PG_SUM_PARTS; p++)
        PG_SUM_TRANSPOSE(part[p]);
    pg_vd s = PG_VD(setzero)();
    for (int p = 0; p < PG_SUM_PARTS; p++)
        for (int l = 0; l < PG_SUM_ROWS; l++)
            s = PG_VD(add)(s, part[p][l]);
    PG_VD(storeu)(out, s);
}
#endif

#endif
