/* pg_cumsum, pg_cumsum_reverse: the running sum along one axis (from the end
 * for the reverse: the suffix sums), forward and backward. x is seen
 * as (outer, n, inner) with n the scanned axis (the reductions' layout,
 * op_reduce.h); sums accumulate in double, CHUNK columns (or ROWS rows) at a
 * time, and are rounded to the dtype once per element. The gradient is the reversed cumsum
 * of the upstream gradient. */
#include "op_reduce.h"
#include "op_util.h"

#include "../tensor/simd_transpose.h"

#define CHUNK 64 /* columns scanned together when the axis is not innermost */
#define ROWS 8   /* rows scanned together when it is */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ROWS = 8 float rows with AVX-512 or AVX2: 8 keys of the 8 rows loaded, transposed so that
 * a register holds one key of every row, widened to double and added to the 8 rows' sums
 * (one lane a row: each row's additions in the same order as the scalar loop's), each
 * sum rounded to float, transposed back and stored. Returns the keys done (whole blocks of
 * 8, in scan order); acc: the rows' sums so far, for the scalar loop to go on from. The 8
 * sums are one zmm of doubles with AVX-512, two ymm (rows 0-3, 4-7) with AVX2: sums8. On
 * the AVX2 Zen 3, 8 rows of 256 keys (CoPE's sums of gates, autograd/cope_rows.h): 0.92 as
 * long as the loop forward, 0.74 reversed (its shuffles and conversions bound it there). */
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>

_Static_assert(ROWS == 8, "scan8_f32 takes 8 rows, one a lane");

#if defined(__AVX512F__)
typedef __m512d sums8;
static inline sums8 sums8_zero(void) { return _mm512_setzero_pd(); }
/* the sums + key (a float a row), rounded to float */
static inline __m256 sums8_add(sums8 *s, __m256 key)
{
    *s = _mm512_add_pd(*s, _mm512_cvtps_pd(key));
    return _mm512_cvtpd_ps(*s);
}
static inline void sums8_store(double acc[8], sums8 s) { _mm512_storeu_pd(acc, s); }
#else
typedef struct sums8 {
    __m256d lo, hi; /* rows 0-3, 4-7 */
} sums8;
static inline sums8 sums8_zero(void) { return (sums8){_mm256_setzero_pd(), _mm256_setzero_pd()}; }
static inline __m256 sums8_add(sums8 *s, __m256 key)
{
    s->lo = _mm256_add_pd(s->lo, _mm256_cvtps_pd(_mm256_castps256_ps128(key)));
    s->hi = _mm256_add_pd(s->hi, _mm256_cvtps_pd(_mm256_extractf128_ps(key, 1)));
    return _mm256_set_m128(_mm256_cvtpd_ps(s->hi), _mm256_cvtpd_ps(s->lo));
}
static inline void sums8_store(double acc[8], sums8 s)
{
    _mm256_storeu_pd(acc, s.lo);
    _mm256_storeu_pd(acc + 4, s.hi);
}
#endif

static inline __attribute__((always_inline)) int64_t scan8_f32(const float *x, float *y, int64_t stride,
                                                               int64_t len, bool reverse, bool add, double acc[8])
{
    sums8 sum = sums8_zero();
    int64_t k = 0;
    for (; k + 8 <= len; k += 8) {
        const int64_t p = reverse ? len - 8 - k : k; /* the block's first key */
        __m256 v[8], w[8];
        for (int r = 0; r < 8; r++)
            v[r] = _mm256_loadu_ps(x + r * stride + p);
        transpose8_f32_ymm(v); /* v[c]: key p + c of every row */
        if (add) {
            for (int r = 0; r < 8; r++)
                w[r] = _mm256_loadu_ps(y + r * stride + p);
            transpose8_f32_ymm(w);
        }
        for (int i = 0; i < 8; i++) {
            const int c = reverse ? 7 - i : i;
            const __m256 s = sums8_add(&sum, v[c]);
            v[c] = add ? _mm256_add_ps(w[c], s) : s;
        }
        transpose8_f32_ymm(v);
        for (int r = 0; r < 8; r++)
            _mm256_storeu_ps(y + r * stride + p, v[r]);
    }
    sums8_store(acc, sum);
    return k;
}
#define SCAN8_F32 scan8_f32
#else
#define SCAN8_F32 OP_NO_VECTOR_FORM
#endif

/* pg_scan_rows (op_reduce.h): ROWS rows at once, so their sums' add latencies
 * overlap (their first keys 8 at a time by SCAN8 where it has a vector form), then
 * the rest one by one; y may be x. The body is inlined for each (reverse, add), so
 * that neither is tested per element. */
#define DEFINE_SCAN_ROWS(T, sfx, SCAN8)                                                                        \
    static inline __attribute__((always_inline)) void scan_rows_##sfx(const T *x, T *y, int64_t rows,           \
                                                                      int64_t stride, int64_t len,              \
                                                                      bool reverse, bool add)                   \
    {                                                                                                          \
        int64_t o = 0;                                                                                         \
        for (; o + ROWS <= rows; o += ROWS) {                                                                  \
            double acc[ROWS] = {0};                                                                            \
            const int64_t k0 = SCAN8(x + o * stride, y + o * stride, stride, len, reverse, add, acc);          \
            for (int64_t k = k0; k < len; k++) {                                                               \
                int64_t at = o * stride + (reverse ? len - 1 - k : k);                                         \
                for (int r = 0; r < ROWS; r++, at += stride) {                                                 \
                    acc[r] += x[at];                                                                           \
                    y[at] = add ? y[at] + (T)acc[r] : (T)acc[r];                                               \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        for (; o < rows; o++) {                                                                                \
            double acc = 0;                                                                                    \
            for (int64_t k = 0; k < len; k++) {                                                                \
                int64_t at = o * stride + (reverse ? len - 1 - k : k);                                         \
                acc += x[at];                                                                                  \
                y[at] = add ? y[at] + (T)acc : (T)acc;                                                         \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    void pg_scan_rows_##sfx(const T *x, T *y, int64_t rows, int64_t stride, int64_t len, bool reverse, bool add) \
    {                                                                                                          \
        if (reverse && add)                                                                                    \
            scan_rows_##sfx(x, y, rows, stride, len, true, true);                                              \
        else if (reverse)                                                                                      \
            scan_rows_##sfx(x, y, rows, stride, len, true, false);                                             \
        else if (add)                                                                                          \
            scan_rows_##sfx(x, y, rows, stride, len, false, true);                                             \
        else                                                                                                   \
            scan_rows_##sfx(x, y, rows, stride, len, false, false);                                            \
    }
DEFINE_SCAN_ROWS(float, f32, SCAN8_F32)
DEFINE_SCAN_ROWS(double, f64, OP_NO_VECTOR_FORM)

/* x, y: (outer, n, inner). y[o, r, i] = sum over r' <= r (reverse: r' >= r) of
 * x[o, r', i], accumulated in double; add: y += that instead. The scanned axis
 * innermost: pg_scan_rows; else CHUNK columns at a time. */
#define DEFINE_CUMSUM(T, sfx)                                                                                  \
    static void cumsum_##sfx(const T *x, T *y, int64_t outer, int64_t n, int64_t inner, bool reverse, bool add) \
    {                                                                                                          \
        if (inner == 1) {                                                                                      \
            pg_scan_rows_##sfx(x, y, outer, n, n, reverse, add);                                               \
            return;                                                                                            \
        }                                                                                                      \
        for (int64_t o = 0; o < outer; o++)                                                                    \
            for (int64_t i0 = 0; i0 < inner; i0 += CHUNK) {                                                    \
                int64_t w = min64(CHUNK, inner - i0);                                                          \
                double acc[CHUNK] = {0};                                                                       \
                for (int64_t k = 0; k < n; k++) {                                                              \
                    int64_t at = (o * n + (reverse ? n - 1 - k : k)) * inner + i0;                             \
                    const T *xr = x + at;                                                                      \
                    T *yr = y + at;                                                                            \
                    for (int64_t i = 0; i < w; i++) {                                                          \
                        acc[i] += xr[i];                                                                       \
                        yr[i] = add ? yr[i] + (T)acc[i] : (T)acc[i];                                           \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
    }
DEFINE_CUMSUM(float, f32)
DEFINE_CUMSUM(double, f64)

/* The (outer) rows are independent: slices of them run on the thread pool, each
 * row's sums in the same order whatever the split. */
typedef struct cumsum_job {
    bool f32, reverse, add;
    const void *x;
    void *y;
    int64_t n, inner;
} cumsum_job;

static void cumsum_slice(void *ctx, int64_t o0, int64_t o1)
{
    const cumsum_job *j = ctx;
    size_t at = (size_t)(o0 * j->n * j->inner);
    if (j->f32)
        cumsum_f32((const float *)j->x + at, (float *)j->y + at, o1 - o0, j->n, j->inner, j->reverse, j->add);
    else
        cumsum_f64((const double *)j->x + at, (double *)j->y + at, o1 - o0, j->n, j->inner, j->reverse, j->add);
}

static void cumsum_run(const cumsum_job *j, int64_t outer)
{
    int64_t row = j->n * j->inner > 0 ? j->n * j->inner : 1;
    pg_parallel_range(outer, 32768 / row + 1, cumsum_slice, (void *)j);
}

/* ip[0]: mask of the axis, ip[1]: reverse. The gradient is the cumsum of gy in the
 * other direction, written into a fresh gradient (pg_grad_fresh), added to one that
 * has a value. */
static int cumsum_backward(pg_graph *g, pg_node *n)
{
    bool fresh;
    pg_tensor *x = n->in[0], *gx = pg_grad_fresh(g, x, &fresh);
    if (!gx)
        return -1;
    rplan p;
    pg_reduce_plan(&p, x, (uint32_t)n->ip[0]);
    cumsum_job j = {x->dtype == PG_F32, n->ip[1] == 0, !fresh, n->out->grad->data, gx->data, p.n, p.inner};
    cumsum_run(&j, p.outer);
    return 0;
}

static pg_tensor *cumsum_op(pg_graph *g, const char *fn, pg_tensor *x, int axis, bool reverse)
{
    uint32_t mask;
    if (!arg_float(g, fn, "x", x) || !pg_reduce_axes(g, fn, x, 1, &axis, &mask))
        return NULL;
    rplan p;
    pg_reduce_plan(&p, x, mask);
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    cumsum_job j = {x->dtype == PG_F32, reverse, false, x->data, y->data, p.n, p.inner};
    cumsum_run(&j, p.outer);
    pg_node *n = pg_op_record(g, fn, y, 1, &x, cumsum_backward);
    if (n) {
        n->ip[0] = mask;
        n->ip[1] = reverse;
    }
    return y;
}

pg_tensor *pg_cumsum(pg_graph *g, pg_tensor *x, int axis) { return cumsum_op(g, "pg_cumsum", x, axis, false); }

pg_tensor *pg_cumsum_reverse(pg_graph *g, pg_tensor *x, int axis)
{
    return cumsum_op(g, "pg_cumsum_reverse", x, axis, true);
}
