/* Creation, fills, casts and the counter-based random generator. */
#include "tensor.h"
#include "threadpool.h"

#include <math.h>
#include <string.h>

/* ---- random numbers --------------------------------------------------------- */

#define TWO_PI 6.283185307179586476925286766559
#define GOLDEN 0x9E3779B97F4A7C15ULL

/* SplitMix64's output function (Steele, Lea, Flood 2014). */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* draw number i after the current counter, without advancing */
static uint64_t draw_at(const pg_rng *r, uint64_t i) { return mix64(r->seed + (r->counter + i + 1) * GOLDEN); }
static double u01(uint64_t bits) { return (double)(bits >> 11) * 0x1.0p-53; }

pg_rng pg_rng_init(uint64_t seed)
{
    pg_rng r = {mix64(seed), 0};
    return r;
}

static bool check_rng(const char *fn, const pg_rng *r)
{
    if (!r)
        pg_set_error("%s: generator is NULL", fn);
    return r != NULL;
}

uint64_t pg_rng_next_u64(pg_rng *r)
{
    if (!check_rng("pg_rng_next_u64", r))
        return 0;
    uint64_t v = draw_at(r, 0);
    r->counter++;
    return v;
}

double pg_rng_uniform_at(const pg_rng *r, uint64_t i)
{
    if (!check_rng("pg_rng_uniform_at", r))
        return NAN;
    return u01(draw_at(r, i));
}

void pg_rng_uniforms_at(const pg_rng *r, uint64_t i, int64_t n, double *u)
{
    if (!check_rng("pg_rng_uniforms_at", r))
        return;
    if (!u || n < 0) {
        pg_set_error("pg_rng_uniforms_at: %s", !u ? "u is NULL" : "n < 0");
        return;
    }
    const uint64_t seed = r->seed, base = r->counter + i + 1;
    for (int64_t k = 0; k < n; k++)
        u[k] = u01(mix64(seed + (base + (uint64_t)k) * GOLDEN));
}

double pg_rng_uniform(pg_rng *r)
{
    if (!check_rng("pg_rng_uniform", r))
        return NAN;
    return u01(pg_rng_next_u64(r));
}

/* Box-Muller on draws (2k, 2k+1) gives normals 2k and 2k+1 (cos and sin). */
static double normal_at(const pg_rng *r, uint64_t i)
{
    uint64_t k = i & ~(uint64_t)1;
    double u1 = 1.0 - u01(draw_at(r, k)); /* (0, 1]: log is finite */
    double u2 = u01(draw_at(r, k + 1));
    double rad = sqrt(-2.0 * log(u1));
    return (i & 1) ? rad * sin(TWO_PI * u2) : rad * cos(TWO_PI * u2);
}

double pg_rng_normal(pg_rng *r)
{
    if (!check_rng("pg_rng_normal", r))
        return NAN;
    double v = normal_at(r, 0);
    r->counter += 2;
    return v;
}

/* ---- fills ------------------------------------------------------------------ */

static bool check_fill(const char *fn, const pg_tensor *t)
{
    if (!t)
        pg_set_error("%s: tensor is NULL", fn);
    return t != NULL;
}

/* the random fills: a tensor and a generator */
static bool check_random_fill(const char *fn, const pg_tensor *t, const pg_rng *r)
{
    return check_fill(fn, t) && check_rng(fn, r);
}

typedef struct fill_job {
    pg_tensor *t;
    double value;
} fill_job;

/* float fills run over slices on the thread pool (gradient buffers are zeroed this way) */
static void fill_slice(void *ctx, int64_t i0, int64_t i1)
{
    const fill_job *j = ctx;
    if (j->t->dtype == PG_F32) {
        float *p = j->t->data, v = (float)j->value;
        for (int64_t i = i0; i < i1; i++)
            p[i] = v;
    } else {
        double *p = j->t->data;
        for (int64_t i = i0; i < i1; i++)
            p[i] = j->value;
    }
}

int pg_fill(pg_tensor *t, double value)
{
    if (!check_fill("pg_fill", t))
        return -1;
    if (t->dtype == PG_F32 || t->dtype == PG_F64) {
        fill_job j = {t, value};
        pg_parallel_range(t->numel, 16384, fill_slice, &j);
    } else {
        for (int64_t i = 0; i < t->numel; i++)
            pg_set(t, i, value);
    }
    return 0;
}

int pg_fill_arange(pg_tensor *t, double start, double step)
{
    if (!check_fill("pg_fill_arange", t))
        return -1;
    for (int64_t i = 0; i < t->numel; i++)
        pg_set(t, i, start + (double)i * step);
    return 0;
}

int pg_fill_linspace(pg_tensor *t, double start, double end)
{
    if (!check_fill("pg_fill_linspace", t))
        return -1;
    int64_t n = t->numel;
    double step = n > 1 ? (end - start) / (double)(n - 1) : 0.0;
    /* as torch.linspace: the second half counts back from `end` */
    for (int64_t i = 0; i < n; i++)
        pg_set(t, i, i < n / 2 ? start + step * (double)i : end - step * (double)(n - 1 - i));
    return 0;
}

int pg_fill_uniform(pg_tensor *t, pg_rng *r, double low, double high)
{
    if (!check_random_fill("pg_fill_uniform", t, r))
        return -1;
    for (int64_t i = 0; i < t->numel; i++)
        pg_set(t, i, low + (high - low) * u01(draw_at(r, (uint64_t)i)));
    r->counter += (uint64_t)t->numel;
    return 0;
}

int pg_fill_normal(pg_tensor *t, pg_rng *r, double mean, double std)
{
    if (!check_random_fill("pg_fill_normal", t, r))
        return -1;
    for (int64_t i = 0; i < t->numel; i++)
        pg_set(t, i, mean + std * normal_at(r, (uint64_t)i));
    r->counter += ((uint64_t)t->numel + 1) & ~(uint64_t)1;
    return 0;
}

int pg_fill_bernoulli(pg_tensor *t, pg_rng *r, double p)
{
    if (!check_random_fill("pg_fill_bernoulli", t, r))
        return -1;
    if (!(p >= 0.0 && p <= 1.0)) {
        pg_set_error("pg_fill_bernoulli: p = %g outside [0, 1]", p);
        return -1;
    }
    for (int64_t i = 0; i < t->numel; i++)
        pg_set(t, i, u01(draw_at(r, (uint64_t)i)) < p ? 1.0 : 0.0);
    r->counter += (uint64_t)t->numel;
    return 0;
}

int pg_copy_into(pg_tensor *dst, const pg_tensor *src)
{
    if (!dst || !src) {
        pg_set_error("pg_copy_into: %s is NULL", dst ? "src" : "dst");
        return -1;
    }
    if (dst->numel != src->numel) {
        char a[128], b[128];
        pg_set_error("pg_copy_into: element counts differ: dst is %s, src is %s",
                     pg_shape_str(a, sizeof a, dst), pg_shape_str(b, sizeof b, src));
        return -1;
    }
    if (dst->dtype == src->dtype) {
        if (dst->data != src->data)
            memmove(dst->data, src->data, (size_t)src->numel * pg_dtype_size(src->dtype));
    } else if (dst->dtype == PG_F32 && src->dtype == PG_F64) {
        float *d = dst->data;
        const double *s = src->data;
        for (int64_t i = 0; i < src->numel; i++)
            d[i] = (float)s[i];
    } else if (dst->dtype == PG_F64 && src->dtype == PG_F32) {
        double *d = dst->data;
        const float *s = src->data;
        for (int64_t i = 0; i < src->numel; i++)
            d[i] = s[i];
    } else {
        for (int64_t i = 0; i < src->numel; i++)
            pg_set(dst, i, pg_get(src, i));
    }
    return 0;
}

/* ---- creation ------------------------------------------------------------- */

pg_tensor *pg_tensor_full(pg_arena *a, pg_dtype dtype, int ndim, const int64_t *shape, double value)
{
    pg_tensor *t = pg_tensor_alloc(a, "pg_tensor_full", dtype, ndim, shape);
    if (t)
        pg_fill(t, value);
    return t;
}

pg_tensor *pg_tensor_from_array(pg_arena *a, pg_dtype dtype, int ndim, const int64_t *shape,
                                const void *values)
{
    if (!values) {
        pg_set_error("pg_tensor_from_array: values is NULL");
        return NULL;
    }
    pg_tensor *t = pg_tensor_alloc(a, "pg_tensor_from_array", dtype, ndim, shape);
    if (t)
        memcpy(t->data, values, (size_t)t->numel * pg_dtype_size(dtype));
    return t;
}

static pg_tensor *cast(pg_arena *a, const char *fn, const pg_tensor *src, pg_dtype dtype)
{
    if (!src) {
        pg_set_error("%s: source is NULL", fn);
        return NULL;
    }
    pg_tensor *t = pg_tensor_alloc(a, fn, dtype, src->ndim, src->shape);
    if (t)
        pg_copy_into(t, src);
    return t;
}

pg_tensor *pg_tensor_copy(pg_arena *a, const pg_tensor *src)
{
    return cast(a, "pg_tensor_copy", src, src ? src->dtype : PG_F32);
}

pg_tensor *pg_tensor_cast(pg_arena *a, const pg_tensor *src, pg_dtype dtype)
{
    return cast(a, "pg_tensor_cast", src, dtype);
}
