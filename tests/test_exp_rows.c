/* The fused attention's softmax rows (autograd/exp_rows.h, exp_rows_f32 with AVX-512 or AVX2):
 * four chunks of a vector (16 or 8 floats) at a time through exp_vec_n side by side (whole
 * visible ones first, without masks), against each chunk alone, its masks written out as
 * scalar loops: its exponentials those of exp_vec on that chunk (or expf lane by lane
 * where the chunk holds a value above 1 or NaN), zeros from n[r] to the width, and each row's
 * sum the chunks' vectors added in order then reduced. Rows of every width from 1 to 80,
 * every visible count, a value above the maximum (expf's path) next to chunks that take
 * exp_vec, -inf and NaN. Without either the file checks the maxima only: exp_rows is
 * exp_row's loop there. */
#include "testutil.h"

#include "../autograd/exp_rows.h"

#if defined(PG_VEC)
enum { CH = PG_VF_LANES };

/* row y (width w, n visible) as each chunk alone takes it: exponentials into want, the sum */
static float chunk_by_chunk(float *want, const float *y, float m, int64_t n, int64_t w)
{
    pg_vf sum = PG_VF(setzero)();
    for (int64_t c = 0; c < w; c += CH) {
        const int64_t left = n - c < CH ? n - c : CH, live = left > 0 ? left : 0; /* n <= w */
        float tv[CH], ev[CH];
        for (int l = 0; l < CH; l++)
            tv[l] = (l < live ? y[c + l] : 0.0f) - m;
        PG_VF(storeu)(ev, exp_vec(PG_VF(loadu)(tv)));
        bool small = true;
        for (int l = 0; l < live; l++)
            small = small && tv[l] <= 1.0f;
        for (int l = 0; l < CH; l++)
            ev[l] = l >= live ? 0.0f : small ? ev[l] : expf(tv[l]);
        for (int64_t l = 0; l < CH && c + l < w; l++)
            want[c + l] = ev[l];
        if (live)
            sum = PG_VF(add)(sum, PG_VF(loadu)(ev));
    }
    return PG_VF_SUM(sum);
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

/* exp_vec's own values: within 1.2e-7 relative of expf's from -87 to 1, 0 below 2^-126 */
Test(exp_rows, exp_vec_within_its_bound)
{
    float t[4 * CH], e[4 * CH];
    pg_vf tv[4], ev[4];
    for (float base = -100.0f; base < 1.0f; base += 0.37f) {
        for (int l = 0; l < 4 * CH; l++)
            t[l] = fminf(base + 0.0057f * (float)l, 1.0f);
        for (int k = 0; k < 4; k++)
            tv[k] = PG_VF(loadu)(t + CH * k);
        exp_vec_n(ev, tv, 4);
        for (int k = 0; k < 4; k++)
            PG_VF(storeu)(e + CH * k, ev[k]);
        for (int l = 0; l < 4 * CH; l++) {
            const double ref = exp((double)t[l]);
            if (ref < 0x1p-126)
                cr_assert(e[l] == 0.0f || fabs(e[l] - ref) <= 1.2e-7 * ref, "exp_vec(%a) = %a", t[l], e[l]);
            else
                cr_assert_leq(fabs(e[l] - ref), 1.2e-7 * ref, "exp_vec(%a) = %a, exp %a", t[l], e[l], ref);
        }
    }
}
#endif

/* the rows' maxima that set m: NaN ignored, -inf for none (the float form in vectors with
 * AVX-512 or AVX2, the double form op_util.h's) */
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
