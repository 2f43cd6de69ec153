/* The fused attention's softmax rows (autograd/exp_rows.h, exp_rows_f32 with AVX-512): four
 * chunks of 16 at a time through exp16_n side by side, against each chunk alone: its
 * exponentials those of exp16 on that chunk (or expf lane by lane where the chunk holds a
 * value above 1 or NaN), zeros from n[r] to the width, and each row's sum the chunks' vectors
 * added in order then reduced. Rows of every width from 1 to 80, every visible count, a value
 * above the maximum (expf's path) next to chunks that take exp16, -inf and NaN. Without
 * AVX-512 the file checks nothing: exp_rows is exp_row's loop there. */
#include "testutil.h"

#include "../autograd/exp_rows.h"

#if defined(__AVX512F__)
/* row y (width w, n visible) as each chunk alone takes it: exponentials into want, the sum */
static float chunk_by_chunk(float *want, const float *y, float m, int64_t n, int64_t w)
{
    const __m512 vm = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < w; c += 16) {
        const __mmask16 live = c < n ? lanes_from(c, n) & lanes_from(c, w) : 0;
        const __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, y + c), vm);
        float tv[16], ev[16];
        _mm512_storeu_ps(tv, t);
        _mm512_storeu_ps(ev, exp16(t));
        const bool small = (_mm512_cmp_ps_mask(t, _mm512_set1_ps(1.0f), _CMP_LE_OQ) & live) == live;
        for (int l = 0; l < 16; l++)
            ev[l] = !(live >> l & 1) ? 0.0f : small ? ev[l] : expf(tv[l]);
        for (int64_t l = 0; l < 16 && c + l < w; l++)
            want[c + l] = ev[l];
        if (live)
            sum = _mm512_add_ps(sum, _mm512_loadu_ps(ev));
    }
    return _mm512_reduce_add_ps(sum);
}

Test(exp_rows, four_chunks_at_once_same_bits_as_one_at_a_time)
{
    enum { LD = 80 };
    pg_rng r = pg_rng_init(5);
    float y[LD], got[LD], want[LD];
    for (int64_t w = 1; w <= LD; w++)
        for (int64_t n = 0; n <= w; n++)
            for (int kind = 0; kind < 4; kind++) { /* plain, one value above the max, -inf, NaN */
                float m = -INFINITY;
                for (int64_t c = 0; c < w; c++) {
                    y[c] = (float)(8.0 * pg_rng_uniform(&r) - 6.0);
                    m = c < n && y[c] > m ? y[c] : m;
                }
                m = n == 0 ? 0.0f : m;
                const int64_t at = (n * 7 + kind) % (n > 0 ? n : 1);
                if (n > 0 && kind > 0)
                    y[at] = kind == 1 ? m + 3.0f : kind == 2 ? -INFINITY : NAN;
                memcpy(got, y, sizeof y);
                float sum, want_sum = chunk_by_chunk(want, y, m, n, w);
                exp_rows_f32(got, LD, &m, &n, 1, w, &sum);
                for (int64_t c = 0; c < w; c++)
                    cr_assert(!memcmp(&got[c], &want[c], sizeof(float)),
                              "width %lld, %lld visible, kind %d: element %lld is %a, one chunk at a time %a",
                              (long long)w, (long long)n, kind, (long long)c, got[c], want[c]);
                cr_assert(!memcmp(&sum, &want_sum, sizeof sum), "width %lld, %lld visible, kind %d: sum %a, %a",
                          (long long)w, (long long)n, kind, sum, want_sum);
            }
}

/* exp16's own values: within 1.2e-7 relative of expf's from -87 to 1, 0 below 2^-126 */
Test(exp_rows, exp16_within_its_bound)
{
    float t[64], e[64];
    __m512 tv[4], ev[4];
    for (float base = -100.0f; base < 1.0f; base += 0.37f) {
        for (int l = 0; l < 64; l++)
            t[l] = fminf(base + 0.0057f * (float)l, 1.0f);
        for (int k = 0; k < 4; k++)
            tv[k] = _mm512_loadu_ps(t + 16 * k);
        exp16_n(ev, tv, 4);
        for (int k = 0; k < 4; k++)
            _mm512_storeu_ps(e + 16 * k, ev[k]);
        for (int l = 0; l < 64; l++) {
            const double ref = exp((double)t[l]);
            if (ref < 0x1p-126)
                cr_assert(e[l] == 0.0f || fabs(e[l] - ref) <= 1.2e-7 * ref, "exp16(%a) = %a", t[l], e[l]);
            else
                cr_assert_leq(fabs(e[l] - ref), 1.2e-7 * ref, "exp16(%a) = %a, exp %a", t[l], e[l], ref);
        }
    }
}
#endif

/* the rows' maxima that set m: NaN ignored, -inf for none (the float form in vectors with
 * AVX-512, the double form op_util.h's) */
Test(exp_rows, row_max_ignores_nan)
{
    const float xf[21] = {1, NAN, 3, -2, NAN, 7.5f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NAN, 7.25f, -INFINITY};
    const double xd[5] = {NAN, -1, NAN, 2.5, NAN};
    cr_assert_eq(row_max_f32(xf, 21), 7.5f);
    cr_assert_eq(row_max_f32(xf + 18, 3), 7.25f);
    cr_assert_eq(row_max_f32(xf + 1, 1), -INFINITY);
    cr_assert_eq(row_max_f32(xf, 0), -INFINITY);
    cr_assert_eq(row_max_f64(xd, 5), 2.5);
    cr_assert_eq(row_max_f64(xd, 1), -INFINITY);
}
