/* Reductions (sum, mean, max, min, logsumexp, var, argmax), forward and
 * backward side by side (cumsum, a scan over the same layout: op_cumsum.c).
 *
 * Layout. The reduced axes are brought last: dims of size 1 are dropped and
 * neighbouring dims that are both reduced (or both kept) merge into one block.
 * When the reduced dims form a single block, x already is (outer, n, inner)
 * with n the reduced count and nothing is copied; otherwise a permuting copy
 * puts the kept blocks first and the reduced ones last, giving (outer, n, 1).
 * Kernels then reduce contiguous rows (inner == 1) or, when the reduced block
 * is not innermost, CHUNK contiguous columns at a time.
 *
 * Accuracy. Sums accumulate in double for both dtypes: rows pairwise (NumPy's
 * scheme, LANES partial sums in each base case of BLOCK elements), columns in
 * blocks of BLOCK rows added into a running total. The output is rounded to
 * the tensor's dtype once.
 *
 * Backward broadcasts the upstream gradient (viewed with keepdim shape) back
 * over x with a pg_bcast plan, so it needs no permutation; max / min scatter
 * it to the saved flat index of the chosen element.
 *
 * Edge cases (as PyTorch unless said):
 *   - max / min / argmax: NaN counts as extremal (first NaN wins); ties go to
 *     the first extremal element in row-major order within the reduced axes,
 *     which takes the whole gradient. Reducing zero elements is an error.
 *   - sum of nothing is 0, mean of nothing NaN, logsumexp of nothing -inf.
 *   - logsumexp is max-shifted: y = m + log(s), s = sum exp(x - m), and its
 *     gradient exp(x - m) / s uses the saved m and 1/s rather than y. A row
 *     whose max is -inf (all -inf) gives -inf and zero gradient (torch: NaN);
 *     a row holding +inf gives +inf, and its gradient is NaN at the +inf
 *     entries and 0 elsewhere (as torch).
 *   - var divides by d = n - correction and needs 0 <= correction < n (at
 *     least one degree of freedom); anything else is an error naming the
 *     correction and n. (torch warns and returns inf or NaN for correction
 *     >= n, and its backward then uses n - correction unclamped, giving
 *     finite gradients that belong to no forward value.) Reducing nothing
 *     (n == 0) gives NaN, as mean does, whatever the correction >= 0.
 *   - a 0-dim x accepts axis 0 and -1 (as torch) and reduces nothing. */
#include "op_reduce.h"
#include "op_util.h"

#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#define BLOCK 128 /* pairwise-summation base case and column block */
#define LANES 8   /* independent partial sums in a base case, so it vectorises */
#define CHUNK 64  /* columns reduced together when the reduced axes are not innermost */
_Static_assert(LANES == 8, "the row kernels add 8 partial sums");

static inline bool nan_f32(float v) { return v != v; }
static inline bool nan_f64(double v) { return v != v; }
static inline bool nan_i64(int64_t v) { return (void)v, false; }
#define IS_NAN(v) _Generic((v), float: nan_f32, double: nan_f64, int64_t: nan_i64)(v)

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- the plan: x as (outer, n, inner) --------------------------------------------- */

/* mask: bit d set when axis d of x is reduced (op_reduce.h) */
void pg_reduce_plan(rplan *p, const pg_tensor *x, uint32_t mask)
{
    p->nb = 0;
    for (int d = 0; d < x->ndim; d++) {
        bool r = mask >> d & 1u;
        if (x->shape[d] == 1)
            continue;
        if (p->nb > 0 && p->red[p->nb - 1] == r) {
            p->size[p->nb - 1] *= x->shape[d];
        } else {
            p->size[p->nb] = x->shape[d];
            p->red[p->nb++] = r;
        }
    }
    int64_t s = 1;
    int n_red = 0, first_red = -1; /* none reduced: everything is inner */
    for (int b = p->nb - 1; b >= 0; b--) {
        p->stride[b] = s;
        s *= p->size[b];
        if (p->red[b]) {
            n_red++;
            first_red = b;
        }
    }
    p->permute = n_red > 1;
    p->outer = p->n = p->inner = 1;
    for (int b = 0; b < p->nb; b++) {
        if (p->red[b])
            p->n *= p->size[b];
        else if (b < first_red || p->permute)
            p->outer *= p->size[b];
        else
            p->inner *= p->size[b];
    }
}

/* Flat index in x of element (o, r, i) of the plan's (outer, n, inner) view. */
static int64_t x_offset(const rplan *p, int64_t o, int64_t r, int64_t i)
{
    if (!p->permute)
        return (o * p->n + r) * p->inner + i;
    int64_t off = 0;
    for (int b = p->nb - 1; b >= 0; b--) {
        int64_t *q = p->red[b] ? &r : &o;
        off += *q % p->size[b] * p->stride[b];
        *q /= p->size[b];
    }
    return off;
}

/* dst (outer, n) = x's kept blocks first, then its reduced blocks, in order */
#define DEFINE_GATHER(T, sfx)                                                                                  \
    static void gather_##sfx(T *restrict dst, const T *restrict src, const rplan *p)                            \
    {                                                                                                          \
        int nb = 0;                                                                                            \
        int64_t size[PG_MAX_DIMS], stride[PG_MAX_DIMS], idx[PG_MAX_DIMS] = {0}, off = 0;                       \
        for (int pass = 0; pass < 2; pass++)                                                                   \
            for (int b = 0; b < p->nb; b++)                                                                    \
                if (p->red[b] == (pass == 1)) {                                                                \
                    size[nb] = p->size[b];                                                                     \
                    stride[nb++] = p->stride[b];                                                               \
                }                                                                                              \
        int64_t len = size[nb - 1], step = stride[nb - 1], total = p->outer * p->n;                            \
        for (int64_t j = 0; j < total; j += len) {                                                             \
            for (int64_t l = 0; l < len; l++)                                                                  \
                dst[j + l] = src[off + l * step];                                                              \
            for (int d = nb - 2; d >= 0; d--) {                                                                \
                off += stride[d];                                                                              \
                if (++idx[d] < size[d])                                                                        \
                    break;                                                                                     \
                off -= stride[d] * size[d];                                                                    \
                idx[d] = 0;                                                                                    \
            }                                                                                                  \
        }                                                                                                      \
    }
DEFINE_GATHER(float, f32)
DEFINE_GATHER(double, f64)

/* Forward scratch: the graph's arena (freed by its reset), or the heap without a graph. */
static void *scratch(pg_graph *g, const char *fn, size_t bytes)
{
    void *p = g ? pg_arena_alloc(pg_graph_arena(g), bytes) : malloc(bytes ? bytes : 1);
    if (!p)
        pg_graph_fail(g, "%s: out of memory for %zu bytes of scratch", fn, bytes);
    return p;
}
static void scratch_free(pg_graph *g, void *p)
{
    if (!g)
        free(p);
}

/* x's data as the plan's (outer, n, inner) array; *tmp gets the copy to free, if any. */
static const void *plan_input(pg_graph *g, const char *fn, const rplan *p, const pg_tensor *x, void **tmp)
{
    *tmp = NULL;
    if (!p->permute)
        return x->data;
    *tmp = scratch(g, fn, (size_t)x->numel * pg_dtype_size(x->dtype));
    if (*tmp && x->dtype == PG_F32)
        gather_f32(*tmp, x->data, p);
    else if (*tmp)
        gather_f64(*tmp, x->data, p);
    return *tmp;
}

/* ---- argument checks and shapes ----------------------------------------------------- */

typedef struct reduction {
    uint32_t mask; /* reduced axes of x */
    int out_ndim;
    int64_t out_shape[PG_MAX_DIMS];
    rplan p;
} reduction;

/* A 0-dim x accepts axes 0 and -1, as torch; they reduce nothing (op_reduce.h). */
bool pg_reduce_axes(pg_graph *g, const char *fn, const pg_tensor *x, int n_axes, const int *axes, uint32_t *mask)
{
    int nd = x->ndim ? x->ndim : 1;
    uint32_t seen = 0;
    if (n_axes < 0 || (n_axes > 0 && !axes)) {
        pg_graph_fail(g, "%s: bad axes (n_axes %d, axes %s) for %s", fn, n_axes, axes ? "given" : "NULL", SHAPE(x));
        return false;
    }
    for (int k = 0; k < n_axes; k++) {
        int a = axis_arg(g, fn, axes[k], nd, x);
        if (a < 0)
            return false;
        if (seen >> a & 1u) {
            pg_graph_fail(g, "%s: axis %d repeated in axes for %s", fn, axes[k], SHAPE(x));
            return false;
        }
        seen |= 1u << a;
    }
    *mask = n_axes == 0 ? (1u << x->ndim) - 1u : seen & ((1u << x->ndim) - 1u);
    return true;
}

static void shape_out(reduction *r, const pg_tensor *x, bool keepdim)
{
    r->out_ndim = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!(r->mask >> d & 1u))
            r->out_shape[r->out_ndim++] = x->shape[d];
        else if (keepdim)
            r->out_shape[r->out_ndim++] = 1;
    }
}

/* Validates a float reduction (nonempty: over at least one element) and
 * allocates its output; NULL on error. */
static pg_tensor *reduce_setup(pg_graph *g, const char *fn, pg_tensor *x, int n_axes, const int *axes, bool keepdim,
                               bool nonempty, reduction *r)
{
    if (!arg_float(g, fn, "x", x) || !pg_reduce_axes(g, fn, x, n_axes, axes, &r->mask))
        return NULL;
    pg_reduce_plan(&r->p, x, r->mask);
    if (nonempty && r->p.n == 0) {
        pg_graph_fail(g, "%s: cannot reduce zero elements of %s", fn, SHAPE(x));
        return NULL;
    }
    shape_out(r, x, keepdim);
    return pg_op_output(g, fn, x->dtype, r->out_ndim, r->out_shape);
}

/* A header for t's data with x's ndim and size 1 on the reduced axes. */
static pg_tensor keep_view(const pg_tensor *t, const pg_tensor *x, uint32_t mask)
{
    pg_tensor v = *t;
    v.ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++)
        v.shape[d] = mask >> d & 1u ? 1 : x->shape[d];
    return v;
}

/* ---- summing kernels: y[o, i] = FIN(sum_r E(x[o, r, i], m[o, i])) ------------------------
 * E is the summand (m: a per-output shift, NULL for plain sums), FIN finishes
 * the double sum s into the output value; div is a divisor for FIN. */

#define SUM_E(v, m) (double)(v)
#define SQDEV_E(v, m) (((double)(v) - (double)(m)) * ((double)(v) - (double)(m)))
#define EXP_E(v, m) (double)exp((v) - (m)) /* in T: tgmath picks expf for float */

#define DIV_FIN(s, m, div) ((s) / (div))

#define DEFINE_SUMMER(name, E, FIN)                                                                            \
    DEFINE_SUMMER_T(name, E, FIN, float, f32)                                                                  \
    DEFINE_SUMMER_T(name, E, FIN, double, f64)

#define DEFINE_SUMMER_T(name, E, FIN, T, sfx)                                                                  \
    /* sum_i E(x[i], m) for a contiguous row, pairwise */                                                      \
    static double name##_row_##sfx(const T *restrict x, int64_t n, T m)                                        \
    {                                                                                                          \
        (void)m;                                                                                               \
        if (n > BLOCK) {                                                                                       \
            int64_t h = n / 2 / LANES * LANES;                                                                 \
            return name##_row_##sfx(x, h, m) + name##_row_##sfx(x + h, n - h, m);                              \
        }                                                                                                      \
        double acc[LANES] = {0}, s = 0;                                                                        \
        int64_t i = 0;                                                                                         \
        for (; i + LANES <= n; i += LANES)                                                                     \
            for (int l = 0; l < LANES; l++)                                                                    \
                acc[l] += E(x[i + l], m);                                                                      \
        for (; i < n; i++)                                                                                     \
            s += E(x[i], m);                                                                                   \
        return s + (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));        \
    }                                                                                                          \
    /* out[i] = sum_r E(x[r * inner + i], m[i]) for i < w (w <= CHUNK columns) */                              \
    static void name##_cols_##sfx(const T *restrict x, int64_t n, int64_t inner, int64_t w, const T *restrict m, \
                                  double *restrict out)                                                        \
    {                                                                                                          \
        (void)m;                                                                                               \
        for (int64_t i = 0; i < w; i++)                                                                        \
            out[i] = 0;                                                                                        \
        for (int64_t r0 = 0; r0 < n; r0 += BLOCK) {                                                            \
            double blk[CHUNK] = {0};                                                                           \
            for (int64_t r = r0; r < min64(n, r0 + BLOCK); r++) {                                              \
                const T *row = x + r * inner;                                                                  \
                for (int64_t i = 0; i < w; i++)                                                                \
                    blk[i] += E(row[i], m[i]);                                                                 \
            }                                                                                                  \
            for (int64_t i = 0; i < w; i++)                                                                    \
                out[i] += blk[i];                                                                              \
        }                                                                                                      \
    }                                                                                                          \
    /* x: (outer, n, inner); m, y: (outer, inner) */                                                           \
    static void name##_##sfx(const void *xv, int64_t outer, int64_t n, int64_t inner, const void *mv, void *yv, \
                             double div)                                                                       \
    {                                                                                                          \
        const T *x = xv, *m = mv;                                                                              \
        T *y = yv;                                                                                             \
        (void)div;                                                                                             \
        if (inner == 1) {                                                                                      \
            for (int64_t o = 0; o < outer; o++) {                                                              \
                T mo = m ? m[o] : (T)0;                                                                        \
                y[o] = (T)FIN(name##_row_##sfx(x + o * n, n, mo), mo, div);                                    \
            }                                                                                                  \
            return;                                                                                            \
        }                                                                                                      \
        double acc[CHUNK];                                                                                     \
        for (int64_t o = 0; o < outer; o++)                                                                    \
            for (int64_t i0 = 0; i0 < inner; i0 += CHUNK) {                                                    \
                int64_t w = min64(CHUNK, inner - i0);                                                          \
                const T *mo = m ? m + o * inner + i0 : NULL;                                                   \
                name##_cols_##sfx(x + o * n * inner + i0, n, inner, w, mo, acc);                               \
                for (int64_t i = 0; i < w; i++)                                                                \
                    y[o * inner + i0 + i] = (T)FIN(acc[i], mo ? mo[i] : (T)0, div);                            \
            }                                                                                                  \
    }

DEFINE_SUMMER(sum, SUM_E, DIV_FIN)     /* sum, mean, the mean inside var */
DEFINE_SUMMER(sqdev, SQDEV_E, DIV_FIN) /* var: sum (x - mean)^2 / d */
DEFINE_SUMMER(expsum, EXP_E, DIV_FIN)  /* logsumexp: sum exp(x - max) */

typedef void (*summer_fn)(const void *, int64_t, int64_t, int64_t, const void *, void *, double);
#define SUMMER(t, name) ((t)->dtype == PG_F32 ? name##_f32 : name##_f64)

/* ---- extremum kernels: value and first index ------------------------------------------- */

/* v beats the current best b: strictly more extreme, or the first NaN */
#define BETTER(OP, v, b) ((v) OP (b) || (IS_NAN(v) && !IS_NAN(b)))

/* x: (outer, n, inner), n >= 1; y (may be NULL) and ri (may be NULL): (outer, inner).
 * y = the extremum over r, ri = the first r holding it. OP is > or <. */
#define DEFINE_EXTREMUM(name, OP, T, sfx)                                                                      \
    /* first index of the extremum of a contiguous row: the value in LANES                          \
     * independent lanes (vectorises), then a scan for its first occurrence */                                 \
    static int64_t name##_row_##sfx(const T *restrict row, int64_t n)                                          \
    {                                                                                                          \
        T b[LANES];                                                                                            \
        bool nan = false;                                                                                      \
        int64_t i = 0;                                                                                         \
        for (int l = 0; l < LANES; l++)                                                                        \
            b[l] = row[0];                                                                                     \
        for (; i + LANES <= n; i += LANES)                                                                     \
            for (int l = 0; l < LANES; l++) {                                                                  \
                T v = row[i + l];                                                                              \
                nan |= IS_NAN(v);                                                                              \
                b[l] = v OP b[l] ? v : b[l];                                                                   \
            }                                                                                                  \
        for (; i < n; i++) {                                                                                   \
            nan |= IS_NAN(row[i]);                                                                             \
            b[0] = row[i] OP b[0] ? row[i] : b[0];                                                             \
        }                                                                                                      \
        for (int l = 1; l < LANES; l++)                                                                        \
            b[0] = b[l] OP b[0] ? b[l] : b[0];                                                                 \
        for (i = 0; i < n - 1; i++)                                                                            \
            if (nan ? IS_NAN(row[i]) : row[i] == b[0])                                                         \
                break;                                                                                         \
        return i;                                                                                              \
    }                                                                                                          \
    static void name##_##sfx(const void *xv, int64_t outer, int64_t n, int64_t inner, void *yv, int64_t *ri)   \
    {                                                                                                          \
        const T *x = xv;                                                                                       \
        T *y = yv;                                                                                             \
        if (inner == 1) {                                                                                      \
            for (int64_t o = 0; o < outer; o++) {                                                              \
                int64_t k = name##_row_##sfx(x + o * n, n);                                                    \
                if (y)                                                                                         \
                    y[o] = x[o * n + k];                                                                       \
                if (ri)                                                                                        \
                    ri[o] = k;                                                                                 \
            }                                                                                                  \
            return;                                                                                            \
        }                                                                                                      \
        T b[CHUNK];                                                                                            \
        int64_t k[CHUNK];                                                                                      \
        for (int64_t o = 0; o < outer; o++)                                                                    \
            for (int64_t i0 = 0; i0 < inner; i0 += CHUNK) {                                                    \
                int64_t w = min64(CHUNK, inner - i0);                                                          \
                const T *base = x + o * n * inner + i0;                                                        \
                for (int64_t i = 0; i < w; i++) {                                                              \
                    b[i] = base[i];                                                                            \
                    k[i] = 0;                                                                                  \
                }                                                                                              \
                for (int64_t r = 1; r < n; r++) {                                                              \
                    const T *row = base + r * inner;                                                           \
                    for (int64_t i = 0; i < w; i++) {                                                          \
                        bool take = BETTER(OP, row[i], b[i]);                                                      \
                        b[i] = take ? row[i] : b[i];                                                           \
                        k[i] = take ? r : k[i];                                                                \
                    }                                                                                          \
                }                                                                                              \
                for (int64_t i = 0; i < w; i++) {                                                              \
                    if (y)                                                                                     \
                        y[o * inner + i0 + i] = b[i];                                                          \
                    if (ri)                                                                                    \
                        ri[o * inner + i0 + i] = k[i];                                                         \
                }                                                                                              \
            }                                                                                                  \
    }

DEFINE_EXTREMUM(max, >, float, f32)
DEFINE_EXTREMUM(max, >, double, f64)
DEFINE_EXTREMUM(max, >, int64_t, i64)
DEFINE_EXTREMUM(min, <, float, f32)
DEFINE_EXTREMUM(min, <, double, f64)

typedef void (*extremum_fn)(const void *, int64_t, int64_t, int64_t, void *, int64_t *);

/* ---- backward kernels over a broadcast plan ---------------------------------------------
 * p iterates x's shape; operand 0 is gx, the others are keepdim views. */

#define PLAN_LOOP(p, ...)                                                                                      \
    do {                                                                                                       \
        int64_t idx_[PG_MAX_DIMS] = {0}, off[PG_BCAST_MAX] = {0};                                              \
        for (int64_t r_ = 0; r_ < (p)->outer; r_++, pg_bcast_next((p), idx_, off))                             \
            for (int64_t i_ = 0; i_ < (p)->inner; i_++) {                                                      \
                int64_t i0 = off[0] + i_ * (p)->istride[0], i1 = off[1] + i_ * (p)->istride[1];                \
                int64_t i2 = off[2] + i_ * (p)->istride[2], i3 = off[3] + i_ * (p)->istride[3];                \
                (void)i2, (void)i3;                                                                            \
                __VA_ARGS__;                                                                                   \
            }                                                                                                  \
    } while (0)

#define DEFINE_BACKWARD_KERNELS(T, sfx)                                                                        \
    /* sum, mean: gx += gy * scale; operands (gx, gy) */                                                       \
    static void spread_##sfx(const pg_bcast *p, T *gx, const T *gy, double scale)                              \
    {                                                                                                          \
        T c = (T)scale;                                                                                        \
        PLAN_LOOP(p, gx[i0] += gy[i1] * c);                                                                    \
    }                                                                                                          \
    /* var: gx += gy * 2 (x - mean) / d; operands (gx, gy, x, mean) */                                         \
    static void var_bwd_##sfx(const pg_bcast *p, T *gx, const T *gy, const T *x, const T *mean, double d)      \
    {                                                                                                          \
        T c = (T)(2.0 / d);                                                                                    \
        PLAN_LOOP(p, gx[i0] += gy[i1] * c * (x[i2] - mean[i3]));                                               \
    }                                                                                                          \
    /* logsumexp: gx += w * exp(x - m) with w = gy / s, the softmax times gy; 0 where the    \
     * max m is -inf; operands (gx, w, x, m) */                                                                \
    static void lse_bwd_##sfx(const pg_bcast *p, T *gx, const T *w, const T *x, const T *m)                    \
    {                                                                                                          \
        PLAN_LOOP(p, gx[i0] += m[i3] == (T)-INFINITY ? (T)0 : w[i1] * exp(x[i2] - m[i3]));                     \
    }                                                                                                          \
    /* w = gy * r elementwise */                                                                               \
    static void scale_##sfx(T *w, const T *gy, const T *r, int64_t n)                                          \
    {                                                                                                          \
        for (int64_t j = 0; j < n; j++)                                                                        \
            w[j] = gy[j] * r[j];                                                                               \
    }                                                                                                          \
    /* logsumexp from the max m and r = s = sum exp(x - m): y = m + log s (just m                       \
     * when m is infinite: no inf - inf), and r becomes 1 / s (1 where m is infinite) */                       \
    static void lse_finish_##sfx(T *y, const T *m, T *r, int64_t n)                                            \
    {                                                                                                          \
        for (int64_t j = 0; j < n; j++) {                                                                      \
            bool inf = isinf(m[j]);                                                                            \
            y[j] = inf ? m[j] : (T)((double)m[j] + log((double)r[j]));                                         \
            r[j] = inf ? (T)1 : (T)(1.0 / r[j]);                                                               \
        }                                                                                                      \
    }                                                                                                          \
    /* max, min: gx[idx[j]] += gy[j] */                                                                        \
    static void scatter_##sfx(T *gx, const T *gy, const int64_t *idx, int64_t n)                               \
    {                                                                                                          \
        for (int64_t j = 0; j < n; j++)                                                                        \
            gx[idx[j]] += gy[j];                                                                               \
    }

DEFINE_BACKWARD_KERNELS(float, f32)
DEFINE_BACKWARD_KERNELS(double, f64)

/* Plan over x's shape for gx and up to three keepdim views. */
static void backward_plan(pg_bcast *p, const pg_tensor *gx, int n, const pg_tensor *views)
{
    const pg_tensor *ts[PG_BCAST_MAX] = {gx, &views[0], n > 2 ? &views[1] : gx, n > 3 ? &views[2] : gx};
    memset(p, 0, sizeof *p); /* unused operands get stride 0 */
    pg_bcast_plan(p, gx->ndim, gx->shape, n, ts);
}

/* ---- sum and mean -------------------------------------------------------------------- */

/* ip[0]: mask; p[0]: the gradient's scale (1, or 1/count for mean) */
static int spread_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    pg_tensor v[1] = {keep_view(n->out->grad, x, (uint32_t)n->ip[0])};
    pg_bcast p;
    backward_plan(&p, gx, 2, v);
    if (x->dtype == PG_F32)
        spread_f32(&p, gx->data, v[0].data, n->p[0]);
    else
        spread_f64(&p, gx->data, v[0].data, n->p[0]);
    return 0;
}

static pg_tensor *sum_or_mean(pg_graph *g, const char *fn, pg_tensor *x, int n_axes, const int *axes, bool keepdim,
                              bool mean)
{
    reduction r;
    pg_tensor *y = reduce_setup(g, fn, x, n_axes, axes, keepdim, false, &r);
    if (!y)
        return NULL;
    void *tmp;
    const void *xd = plan_input(g, fn, &r.p, x, &tmp);
    if (!xd) {
        pg_tensor_free(y); /* heap result only; arena tensors go at reset */
        return NULL;
    }
    double div = mean ? (double)r.p.n : 1.0; /* mean of nothing: 0 / 0 = NaN */
    SUMMER(x, sum)(xd, r.p.outer, r.p.n, r.p.inner, NULL, y->data, div);
    scratch_free(g, tmp);
    pg_node *n = pg_op_record(g, fn, y, 1, &x, spread_backward);
    if (n) {
        n->ip[0] = r.mask;
        n->p[0] = 1.0 / div;
    }
    return y;
}

pg_tensor *pg_sum(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim)
{
    return sum_or_mean(g, "pg_sum", x, n_axes, axes, keepdim, false);
}

pg_tensor *pg_mean(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim)
{
    return sum_or_mean(g, "pg_mean", x, n_axes, axes, keepdim, true);
}

/* ---- max and min ------------------------------------------------------------------------- */

/* ctx: for each output element the flat index in x of the chosen element */
static int scatter_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *gx = pg_grad_of(g, n->in[0]), *gy = n->out->grad;
    if (!gx)
        return -1;
    if (gx->dtype == PG_F32)
        scatter_f32(gx->data, gy->data, n->ctx, gy->numel);
    else
        scatter_f64(gx->data, gy->data, n->ctx, gy->numel);
    return 0;
}

static pg_tensor *extremum(pg_graph *g, const char *fn, pg_tensor *x, int n_axes, const int *axes, bool keepdim,
                           extremum_fn k32, extremum_fn k64)
{
    reduction r;
    pg_tensor *y = reduce_setup(g, fn, x, n_axes, axes, keepdim, true, &r);
    if (!y)
        return NULL;
    void *tmp;
    const void *xd = plan_input(g, fn, &r.p, x, &tmp);
    int64_t *ri = xd ? scratch(g, fn, (size_t)y->numel * sizeof *ri) : NULL;
    if (!ri) {
        scratch_free(g, tmp);
        pg_tensor_free(y);
        return NULL;
    }
    (x->dtype == PG_F32 ? k32 : k64)(xd, r.p.outer, r.p.n, r.p.inner, y->data, ri);
    scratch_free(g, tmp);
    pg_node *n = pg_op_record(g, fn, y, 1, &x, scatter_backward);
    if (n) { /* r index -> flat index in x, kept in the arena for backward */
        for (int64_t j = 0; j < y->numel; j++)
            ri[j] = x_offset(&r.p, j / r.p.inner, ri[j], j % r.p.inner);
        n->ctx = ri;
    } else {
        scratch_free(g, ri);
    }
    return y;
}

pg_tensor *pg_max(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim)
{
    return extremum(g, "pg_max", x, n_axes, axes, keepdim, max_f32, max_f64);
}

pg_tensor *pg_min(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim)
{
    return extremum(g, "pg_min", x, n_axes, axes, keepdim, min_f32, min_f64);
}

/* ---- logsumexp ---------------------------------------------------------------------------- */

/* ip[0]: mask; ctx: m then 1/s, each (outer, inner), see lse_finish.
 * The gradient is gy * softmax = gy / s * exp(x - m): both factors are
 * accurate where exp(x - y) with y rounded to the dtype is not (y = 1000.69 in
 * f32 is off by 3e-5). */
static int lse_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *gx = pg_grad_of(g, x), *gy = n->out->grad;
    size_t es = pg_dtype_size(x->dtype);
    void *w = pg_graph_alloc(g, (size_t)gy->numel * es);
    if (!gx || !w)
        return -1;
    uint32_t mask = (uint32_t)n->ip[0];
    const char *m = n->ctx, *inv_s = m + (size_t)gy->numel * es;
    pg_tensor v[3] = {keep_view(gy, x, mask), *x, keep_view(gy, x, mask)};
    v[0].data = w;
    v[2].data = (void *)m;
    pg_bcast p;
    backward_plan(&p, gx, 4, v);
    if (x->dtype == PG_F32) {
        scale_f32(w, gy->data, (const float *)inv_s, gy->numel);
        lse_bwd_f32(&p, gx->data, w, x->data, (const float *)m);
    } else {
        scale_f64(w, gy->data, (const double *)inv_s, gy->numel);
        lse_bwd_f64(&p, gx->data, w, x->data, (const double *)m);
    }
    return 0;
}

pg_tensor *pg_logsumexp(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, bool keepdim)
{
    const char *fn = "pg_logsumexp";
    reduction r;
    pg_tensor *y = reduce_setup(g, fn, x, n_axes, axes, keepdim, false, &r);
    if (!y)
        return NULL;
    /* saved: the max m, then 1/s; empty rows: m = -inf */
    size_t es = pg_dtype_size(x->dtype), out_bytes = (size_t)y->numel * es;
    void *tmp = NULL;
    const void *xd = plan_input(g, fn, &r.p, x, &tmp);
    char *m = xd ? scratch(g, fn, 2 * out_bytes) : NULL;
    if (!m) {
        scratch_free(g, tmp);
        pg_tensor_free(y);
        return NULL;
    }
    pg_tensor mt = *y;
    mt.data = m;
    if (r.p.n == 0)
        pg_fill(&mt, -INFINITY);
    else
        (x->dtype == PG_F32 ? max_f32 : max_f64)(xd, r.p.outer, r.p.n, r.p.inner, m, NULL);
    SUMMER(x, expsum)(xd, r.p.outer, r.p.n, r.p.inner, m, m + out_bytes, 1.0);
    if (x->dtype == PG_F32)
        lse_finish_f32(y->data, (const float *)m, (float *)(m + out_bytes), y->numel);
    else
        lse_finish_f64(y->data, (const double *)m, (double *)(m + out_bytes), y->numel);
    scratch_free(g, tmp);
    pg_node *n = pg_op_record(g, fn, y, 1, &x, lse_backward);
    if (n) {
        n->ip[0] = r.mask;
        n->ctx = m;
    } else {
        scratch_free(g, m);
    }
    return y;
}

/* ---- var ------------------------------------------------------------------------------------ */

/* ip[0]: mask; p[0]: the divisor d; ctx: the mean, (outer, inner) */
static int var_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *gx = pg_grad_of(g, x);
    if (!gx)
        return -1;
    uint32_t mask = (uint32_t)n->ip[0];
    pg_tensor v[3] = {keep_view(n->out->grad, x, mask), *x, keep_view(n->out, x, mask)};
    v[2].data = n->ctx;
    pg_bcast p;
    backward_plan(&p, gx, 4, v);
    if (x->dtype == PG_F32)
        var_bwd_f32(&p, gx->data, v[0].data, x->data, v[2].data, n->p[0]);
    else
        var_bwd_f64(&p, gx->data, v[0].data, x->data, v[2].data, n->p[0]);
    return 0;
}

/* 0 <= correction < n (n reduced elements), or n == 0 */
static bool var_correction_ok(pg_graph *g, const pg_tensor *x, int64_t n, int correction)
{
    if (correction < 0) {
        pg_graph_fail(g, "pg_var: correction must be >= 0, got %d (x is %s)", correction, SHAPE(x));
        return false;
    }
    if (n > 0 && correction >= n) {
        pg_graph_fail(g, "pg_var: correction %d leaves no degrees of freedom: it reduces %lld elements of %s "
                      "(need 0 <= correction < %lld)",
                      correction, (long long)n, SHAPE(x), (long long)n);
        return false;
    }
    return true;
}

pg_tensor *pg_var(pg_graph *g, pg_tensor *x, int n_axes, const int *axes, int correction, bool keepdim)
{
    const char *fn = "pg_var";
    reduction r;
    pg_tensor *y = reduce_setup(g, fn, x, n_axes, axes, keepdim, false, &r);
    if (!y || !var_correction_ok(g, x, r.p.n, correction)) {
        pg_tensor_free(y);
        return NULL;
    }
    void *tmp;
    const void *xd = plan_input(g, fn, &r.p, x, &tmp);
    void *mean = xd ? scratch(g, fn, (size_t)y->numel * pg_dtype_size(x->dtype)) : NULL;
    if (!mean) {
        scratch_free(g, tmp);
        pg_tensor_free(y);
        return NULL;
    }
    /* two passes: the mean, then squared deviations from it; n == 0 gives 0 / 0 = NaN */
    double d = r.p.n > 0 ? (double)(r.p.n - correction) : 0.0;
    SUMMER(x, sum)(xd, r.p.outer, r.p.n, r.p.inner, NULL, mean, (double)r.p.n);
    SUMMER(x, sqdev)(xd, r.p.outer, r.p.n, r.p.inner, mean, y->data, d);
    scratch_free(g, tmp);
    pg_node *n = pg_op_record(g, fn, y, 1, &x, var_backward);
    if (n) {
        n->ip[0] = r.mask;
        n->p[0] = d;
        n->ctx = mean;
    } else {
        scratch_free(g, mean);
    }
    return y;
}

/* ---- argmax ------------------------------------------------------------------------------------ */

pg_tensor *pg_argmax(pg_graph *g, pg_tensor *x, int axis, bool keepdim)
{
    const char *fn = "pg_argmax";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    if (x->dtype != PG_F32 && x->dtype != PG_F64 && x->dtype != PG_I64) {
        pg_graph_fail(g, "%s: x must be f32, f64 or i64, got %s", fn, SHAPE(x));
        return NULL;
    }
    reduction r;
    if (!pg_reduce_axes(g, fn, x, 1, &axis, &r.mask))
        return NULL;
    pg_reduce_plan(&r.p, x, r.mask);
    if (r.p.n == 0) {
        pg_graph_fail(g, "%s: axis %d of %s is empty", fn, axis, SHAPE(x));
        return NULL;
    }
    shape_out(&r, x, keepdim);
    pg_tensor *y = pg_op_output(g, fn, PG_I64, r.out_ndim, r.out_shape);
    if (!y)
        return NULL;
    extremum_fn k = x->dtype == PG_F32 ? max_f32 : x->dtype == PG_F64 ? max_f64 : max_i64;
    k(x->data, r.p.outer, r.p.n, r.p.inner, NULL, y->data);
    return y; /* no gradient */
}
