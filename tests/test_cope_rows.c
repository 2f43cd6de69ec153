/* CoPE's row kernels (autograd/cope_rows.h) against their plainest forms: the runs of a
 * row's keys (cope_runs_row, the fused attention's: a vector of keys at a time with AVX-512
 * or AVX2, then key by key) against cope_runs4's key-by-key records, and the gradient to z
 * from the runs (cope_dz_runs, a vector of records at a time where the floors step down by
 * 1) against dz[f] += a, dz[c] += b record by record. Without AVX-512 or AVX2 both are the
 * key-by-key loops, and the tests check those. */
#include "testutil.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../autograd/cope_rows.h"
#pragma GCC diagnostic pop

enum { KEYS = 200 };

/* one row's floors, falling by 0 or 1 a key from `top` (never below 0), a NaN's -1 at
 * `nan_at` (none if negative), and shares a, b in [-1, 1) */
static void make_row(int *fo, float *a, float *b, int64_t vis, int top, int64_t nan_at, pg_rng *r)
{
    int f = top;
    for (int64_t j = 0; j < vis; j++) {
        if (j > 0 && f > 0 && pg_rng_uniform(r) < 0.55)
            f--;
        fo[j] = j == nan_at ? -1 : f;
        a[j] = (float)(2 * pg_rng_uniform(r) - 1);
        b[j] = (float)(2 * pg_rng_uniform(r) - 1);
    }
}

Test(cope_rows, runs_by_vector_as_key_by_key)
{
    static int fo[KEYS], fo4[4 * KEYS];
    static float a[KEYS], b[KEYS], a4[4 * KEYS], b4[4 * KEYS];
    pg_rng r = pg_rng_init(17);
    int cases = 0;
    for (int64_t vis = 0; vis <= 100; vis++)
        for (int nan = 0; nan < 2; nan++) {
            const int top = (int)(pg_rng_uniform(&r) * 60);
            const int64_t nan_at = nan && vis ? (int64_t)(pg_rng_uniform(&r) * (double)vis) : -1;
            make_row(fo, a, b, vis, top, nan_at, &r);
            memcpy(fo4, fo, sizeof fo), memcpy(a4, a, sizeof a), memcpy(b4, b, sizeof b);
            int64_t runs4[4] = {0}, vis4[4] = {vis, 0, 0, 0};
            cope_runs4_f32(a4, b4, fo4, KEYS, vis4, 1, runs4);
            const int64_t runs = cope_runs_row_f32(a, b, fo, vis);
            cr_assert_eq(runs, runs4[0], "vis %lld: %lld runs against %lld", (long long)vis, (long long)runs,
                         (long long)runs4[0]);
            for (int64_t k = 0; k < runs; k++) {
                cr_assert_eq(fo[k], fo4[k], "vis %lld, run %lld: f %d against %d", (long long)vis, (long long)k,
                             fo[k], fo4[k]);
                /* the same shares, summed in another order: at most a few ulps of the run's size */
                cr_assert_float_eq(a[k], a4[k], 2e-6f * 60, "vis %lld, run %lld: a", (long long)vis, (long long)k);
                cr_assert_float_eq(b[k], b4[k], 2e-6f * 60, "vis %lld, run %lld: b", (long long)vis, (long long)k);
            }
            cases++;
        }
    cr_assert_eq(cases, 202);
}

/* dz[f] += a, then dz[c] += b (c = min(f + 1, n - 1)), record by record */
static void dz_by_record(float *dz, const int *fo, const float *sa, const float *sb, int64_t runs, int n)
{
    for (int64_t k = 0; k < runs; k++) {
        dz[fo[k]] += sa[k];
        dz[fo[k] + 1 < n ? fo[k] + 1 : fo[k]] += sb[k];
    }
}

Test(cope_rows, dz_by_vector_same_bits_as_record_by_record)
{
    enum { N = 80 };
    static int fo[KEYS];
    static float sa[KEYS], sb[KEYS], dz[N], want[N];
    pg_rng r = pg_rng_init(23);
    for (int64_t runs = 0; runs <= 70; runs++)
        for (int jumps = 0; jumps < 2; jumps++) {
            /* floors falling by 1 from n - 1 or below (the vector's case), or by 1 or 2 */
            int f = (int)(N - 1 - pg_rng_uniform(&r) * 4);
            for (int64_t k = 0; k < runs; k++) {
                fo[k] = f;
                f -= jumps && pg_rng_uniform(&r) < 0.1 ? 2 : 1;
                f = f < 0 ? 0 : f;
                sa[k] = (float)(2 * pg_rng_uniform(&r) - 1);
                sb[k] = (float)(2 * pg_rng_uniform(&r) - 1);
            }
            for (int i = 0; i < N; i++)
                dz[i] = want[i] = (float)pg_rng_uniform(&r);
            int64_t kept = runs; /* floors strictly falling: a record each */
            for (int64_t k = 1; k < runs; k++)
                if (fo[k] == fo[k - 1])
                    kept = k, k = runs;
            cope_dz_runs_f32(dz, fo, sa, sb, kept, N);
            dz_by_record(want, fo, sa, sb, kept, N);
            for (int i = 0; i < N; i++)
                cr_assert(!memcmp(&dz[i], &want[i], sizeof(float)), "%lld runs (jumps %d), bin %d: %.9g against %.9g",
                          (long long)kept, jumps, i, dz[i], want[i]);
        }
}

#if defined(__AVX2__) && !defined(__AVX512F__)
/* AVX2's compress: entry m lists the lanes set in m, lowest first, 4 bits each */
Test(cope_rows, compress_table_lists_the_set_lanes)
{
    for (unsigned m = 0; m < 256; m++) {
        uint32_t want = 0;
        for (unsigned i = 0, slot = 0; i < 8; i++)
            if (m >> i & 1u)
                want |= i << 4 * slot++;
        cr_assert_eq(cope_compress_lut[m], want, "mask 0x%02x: 0x%08x against 0x%08x", m, cope_compress_lut[m], want);
    }
}
#endif
