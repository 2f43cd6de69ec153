/* layer_norm and rms_norm over the last norm_ndim dims, forward and backward
 * side by side. x is viewed as (rows, D), D the product of the normalised dims;
 * weight and bias, when given, have exactly the shape of those dims.
 *
 * Both are one kernel: rms_norm is layer_norm without centring.
 *   layer_norm: mean = mean(x), var = mean((x - mean)^2) (biased, as torch)
 *   rms_norm:   mean = 0,       var = mean(x^2)
 *   rstd = 1 / sqrt(var + eps), xhat = (x - mean) * rstd, y = xhat * w + b
 * Row statistics are accumulated in double for both dtypes (two passes, no
 * cancellation) and saved per row in the graph arena for the backward.
 *
 * Backward, with dxhat = dy * w (w = 1 without weight), means over the row:
 *   layer_norm: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *   rms_norm:   dx = rstd * (dxhat - xhat * mean(dxhat * xhat))
 *   dw = sum over rows of dy * xhat,  db = sum over rows of dy.
 * (Differentiate xhat through mean and rstd: d rstd / dx_i = -rstd^3 (x_i -
 * mean) / D; the mean(dxhat) term comes from d mean / dx_i = 1 / D.) */
#include "op_util.h"

#include "../tensor/threadpool.h"
#include "../tensor/vmath.h" /* PG_VEC: the rows in vectors below */

#include <tgmath.h>

/* Per-row statistics saved for the backward: stats[2r] = mean, stats[2r+1] = rstd. */
typedef struct norm_ctx {
    double *stats;
    bool center;
} norm_ctx;

/* Row sums in double over 16 partial sums, so that the loops vectorise (one sum
 * in order is a chain of dependent adds: the backward's two took 45% of its time):
 * sum_x(x): sum of x[j]; sum_sq(x, mean): sum of (x[j] - mean)^2; grad_sums below. */
#define NORM_LANES 16
#define DEFINE_ROW_SUMS(TY, sfx)                                                                               \
    static double sum_x_##sfx(const TY *x, int64_t D)                                                          \
    {                                                                                                          \
        double part[NORM_LANES] = {0}, s = 0;                                                                  \
        int64_t j0 = D / NORM_LANES * NORM_LANES;                                                              \
        for (int64_t j = 0; j < j0; j += NORM_LANES)                                                           \
            for (int l = 0; l < NORM_LANES; l++)                                                               \
                part[l] += (double)x[j + l];                                                                   \
        for (int64_t j = j0; j < D; j++)                                                                       \
            s += (double)x[j];                                                                                 \
        for (int l = 0; l < NORM_LANES; l++)                                                                   \
            s += part[l];                                                                                      \
        return s;                                                                                              \
    }                                                                                                          \
    static double sum_sq_##sfx(const TY *x, int64_t D, double mean)                                            \
    {                                                                                                          \
        double part[NORM_LANES] = {0}, s = 0;                                                                  \
        int64_t j0 = D / NORM_LANES * NORM_LANES;                                                              \
        for (int64_t j = 0; j < j0; j += NORM_LANES)                                                           \
            for (int l = 0; l < NORM_LANES; l++)                                                               \
                part[l] += ((double)x[j + l] - mean) * ((double)x[j + l] - mean);                              \
        for (int64_t j = j0; j < D; j++)                                                                       \
            s += ((double)x[j] - mean) * ((double)x[j] - mean);                                                \
        for (int l = 0; l < NORM_LANES; l++)                                                                   \
            s += part[l];                                                                                      \
        return s;                                                                                              \
    }                                                                                                          \
    /* the backward's: *sd = sum of dxhat, *sdx = sum of dxhat * xhat (dxhat = gy w, xhat = (x - mu) rs) */  \
    static void grad_sums_##sfx(double *sd, double *sdx, const TY *gy, const TY *x, const TY *w, int64_t D,      \
                                TY mu, TY rs)                                                                  \
    {                                                                                                          \
        double pd[NORM_LANES] = {0}, pdx[NORM_LANES] = {0}, s = 0, sx = 0;                                     \
        int64_t j0 = D / NORM_LANES * NORM_LANES;                                                              \
        for (int64_t j = 0; j < j0; j += NORM_LANES)                                                           \
            for (int l = 0; l < NORM_LANES; l++) {                                                             \
                TY d = gy[j + l] * (w ? w[j + l] : (TY)1);                                                     \
                pd[l] += d;                                                                                    \
                pdx[l] += d * ((x[j + l] - mu) * rs);                                                          \
            }                                                                                                  \
        for (int64_t j = j0; j < D; j++) {                                                                     \
            TY d = gy[j] * (w ? w[j] : (TY)1);                                                                 \
            s += d;                                                                                            \
            sx += d * ((x[j] - mu) * rs);                                                                      \
        }                                                                                                      \
        for (int l = 0; l < NORM_LANES; l++)                                                                   \
            s += pd[l], sx += pdx[l];                                                                          \
        *sd = s, *sdx = sx;                                                                                    \
    }
DEFINE_ROW_SUMS(float, f32)
DEFINE_ROW_SUMS(double, f64)

#define DEFINE_NORM(TY, sfx)                                                                                   \
    /* x, y: (rows, D); w, b: (D) or NULL; stats: (rows, 2) or NULL */                                         \
    static void norm_fwd_##sfx(TY *restrict y, const TY *restrict x, const TY *restrict w,                       \
                               const TY *restrict b, double *restrict stats, int64_t rows, int64_t D,              \
                               double eps, bool center)                                                        \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        for (int64_t r = 0; r < rows; r++, x += D, y += D) {                                                   \
            double mean = center ? sum_x_##sfx(x, D) / (double)D : 0.0;                                        \
            double var = sum_sq_##sfx(x, D, mean);                                                             \
            double rstd = 1.0 / sqrt(var / (double)D + eps);                                                   \
            if (stats)                                                                                         \
                stats[2 * r] = mean, stats[2 * r + 1] = rstd;                                                  \
            T mu = (T)mean, rs = (T)rstd;                                                                      \
            for (int64_t j = 0; j < D; j++)                                                                    \
                y[j] = (x[j] - mu) * rs * (w ? w[j] : (T)1) + (b ? b[j] : (T)0);                               \
        }                                                                                                      \
    }                                                                                                          \
    /* gx (rows, D) += dx (= with assign), or NULL; aw, ab (D) += dw, db in double, or NULL */                 \
    static void norm_bwd_##sfx(TY *restrict gx, double *restrict aw, double *restrict ab, const TY *restrict gy,   \
                               const TY *restrict x, const TY *restrict w, const double *restrict stats,         \
                               int64_t rows, int64_t D, bool center, bool assign)                              \
    {                                                                                                          \
        typedef TY T;                                                                                          \
        for (int64_t r = 0; r < rows; r++, x += D, gy += D) {                                                  \
            T mu = (T)stats[2 * r], rs = (T)stats[2 * r + 1];                                                  \
            if (aw || ab)                                                                                      \
                for (int64_t j = 0; j < D; j++) {                                                              \
                    if (aw)                                                                                    \
                        aw[j] += (double)(gy[j] * ((x[j] - mu) * rs));                                         \
                    if (ab)                                                                                    \
                        ab[j] += (double)gy[j];                                                                \
                }                                                                                              \
            if (!gx)                                                                                           \
                continue;                                                                                      \
            double sd, sdx;                                                                                    \
            grad_sums_##sfx(&sd, &sdx, gy, x, w, D, mu, rs);                                                   \
            T md = center ? (T)(sd / (double)D) : (T)0, mdx = (T)(sdx / (double)D);                           \
            if (assign) /* the same expression, once assigned, once added */                                   \
                for (int64_t j = 0; j < D; j++)                                                                \
                    gx[j] = rs * (gy[j] * (w ? w[j] : (T)1) - md - (x[j] - mu) * rs * mdx);                    \
            else                                                                                               \
                for (int64_t j = 0; j < D; j++)                                                                \
                    gx[j] += rs * (gy[j] * (w ? w[j] : (T)1) - md - (x[j] - mu) * rs * mdx);                   \
            gx += D;                                                                                           \
        }                                                                                                      \
    }

DEFINE_NORM(float, f32)
DEFINE_NORM(double, f64)

/* ---- rows of whole vectors (AVX-512 or AVX2): the same arithmetic, several rows at a time
 * The loops above end each row's sums in a chain of 16 dependent additions, and gcc keeps
 * their partial sums on the stack: a (2048, 128) float layer norm took 0.09-0.12 ms forward
 * and 0.14-0.19 backward (1 thread, full-width AVX-512 EPYC), here 0.06-0.08 and 0.10-0.14;
 * five of them are in a step of the toy model. Here PG_SUM_ROWS rows' final sums (8 with
 * AVX-512, 4 with AVX2) run side by side in one vector (autograd/lane_sums.h). Every other
 * operation is the loops' own, element by element (no fma where they have none): the same
 * bits (tests/test_norm_rows.c). D a multiple of 16. One text for float and double: a
 * vector of the element type (pg_vf or pg_vd, VOP its intrinsics) becomes DPV_<sfx>
 * vectors of doubles for the sums (a float vector's two halves, a double vector itself). */
#if defined(PG_VEC)
#include "lane_sums.h"

enum { NORM_ROWS = PG_SUM_ROWS, NORM_PARTS = PG_SUM_PARTS };

#define DPV_f32 2 /* vectors of doubles in one of floats */
#define DPV_f64 1
static inline void doubles_f32(pg_vd out[DPV_f32], pg_vf v) { out[0] = pg_lo_pd(v), out[1] = pg_hi_pd(v); }
static inline void doubles_f64(pg_vd out[DPV_f64], pg_vd v) { out[0] = v; }

/* out[q] = the total of row q's partial sums (pg_row_totals over part's registers) */
static void row_totals(double *out, pg_vd part[NORM_PARTS][NORM_ROWS])
{
    pg_vd *rows[NORM_PARTS];
    for (int p = 0; p < NORM_PARTS; p++)
        rows[p] = part[p];
    pg_row_totals(out, rows);
}

/* TY, V: the element type and its vector; VOP: PG_VF or PG_VD; VL: V's lanes */
#define DEFINE_NORM_VEC(TY, sfx, V, VOP, VL)                                                                  \
    /* 16 elements at x as NORM_PARTS vectors of doubles: lane l of vector p, element p PG_VD_LANES + l */   \
    static inline void parts_##sfx(pg_vd v[NORM_PARTS], const TY *x)                                          \
    {                                                                                                         \
        for (int f = 0; f < 16 / VL; f++)                                                                     \
            doubles_##sfx(v + DPV_##sfx * f, VOP(loadu)(x + f * VL));                                         \
    }                                                                                                         \
    /* the partial sums of rows q < n of x (rows of D): of x, or with mean of (x - mean[q])^2;               \
     * rows n .. NORM_ROWS - 1 zero. part[p][q]: row q's lanes from p PG_VD_LANES on */                      \
    static void row_parts_##sfx(pg_vd part[NORM_PARTS][NORM_ROWS], const TY *x, int64_t D, int n,             \
                                const double *mean)                                                           \
    {                                                                                                         \
        for (int q = 0; q < NORM_ROWS; q++) {                                                                 \
            pg_vd a[NORM_PARTS];                                                                              \
            for (int p = 0; p < NORM_PARTS; p++)                                                              \
                a[p] = PG_VD(setzero)();                                                                      \
            const pg_vd m = PG_VD(set1)(mean && q < n ? mean[q] : 0.0);                                       \
            for (int64_t j = 0; q < n && j < D; j += 16) {                                                    \
                pg_vd v[NORM_PARTS];                                                                          \
                parts_##sfx(v, x + q * D + j);                                                                \
                for (int p = 0; p < NORM_PARTS; p++) {                                                        \
                    if (mean)                                                                                 \
                        v[p] = PG_VD(sub)(v[p], m), v[p] = PG_VD(mul)(v[p], v[p]);                            \
                    a[p] = PG_VD(add)(a[p], v[p]);                                                            \
                }                                                                                             \
            }                                                                                                 \
            for (int p = 0; p < NORM_PARTS; p++)                                                              \
                part[p][q] = a[p];                                                                            \
        }                                                                                                     \
    }                                                                                                         \
    /* norm_fwd for D a multiple of 16; false (nothing done) for another D */                                 \
    static bool norm_fwd_vec_##sfx(TY *restrict y, const TY *restrict x, const TY *restrict w,                \
                                   const TY *restrict b, double *restrict stats, int64_t rows, int64_t D,     \
                                   double eps, bool center)                                                   \
    {                                                                                                         \
        if (D % 16 != 0)                                                                                      \
            return false;                                                                                     \
        for (int64_t r0 = 0; r0 < rows; r0 += NORM_ROWS) {                                                    \
            const int n = rows - r0 < NORM_ROWS ? (int)(rows - r0) : NORM_ROWS;                               \
            const TY *xb = x + r0 * D;                                                                        \
            pg_vd part[NORM_PARTS][NORM_ROWS];                                                                \
            double mean[NORM_ROWS] = {0}, var[NORM_ROWS];                                                     \
            if (center) {                                                                                     \
                row_parts_##sfx(part, xb, D, n, NULL);                                                        \
                row_totals(mean, part);                                                                       \
                for (int q = 0; q < NORM_ROWS; q++)                                                           \
                    mean[q] /= (double)D;                                                                     \
            }                                                                                                 \
            row_parts_##sfx(part, xb, D, n, mean);                                                            \
            row_totals(var, part);                                                                            \
            for (int q = 0; q < n; q++) {                                                                     \
                const double rstd = 1.0 / sqrt(var[q] / (double)D + eps);                                     \
                if (stats)                                                                                    \
                    stats[2 * (r0 + q)] = mean[q], stats[2 * (r0 + q) + 1] = rstd;                            \
                const V mu = VOP(set1)((TY)mean[q]), rs = VOP(set1)((TY)rstd);                                \
                for (int64_t j = 0; j < D; j += VL) { /* (x - mu) rs w + b; w = 1, b = 0 when absent */       \
                    V t = VOP(mul)(VOP(sub)(VOP(loadu)(xb + q * D + j), mu), rs);                             \
                    t = VOP(mul)(t, w ? VOP(loadu)(w + j) : VOP(set1)((TY)1));                                \
                    t = VOP(add)(t, b ? VOP(loadu)(b + j) : VOP(setzero)());                                  \
                    VOP(storeu)(y + (r0 + q) * D + j, t);                                                     \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        return true;                                                                                          \
    }                                                                                                         \
    /* a[j ..] += v in double (v's DPV_<sfx> vectors of doubles) */                                           \
    static inline void add_doubles_##sfx(double *restrict a, V v)                                             \
    {                                                                                                         \
        pg_vd d[DPV_##sfx];                                                                                   \
        doubles_##sfx(d, v);                                                                                  \
        for (int k = 0; k < DPV_##sfx; k++)                                                                   \
            PG_VD(storeu)(a + k * PG_VD_LANES, PG_VD(add)(PG_VD(loadu)(a + k * PG_VD_LANES), d[k]));         \
    }                                                                                                         \
    /* One row of the backward (gy, x: its D values; mu, rs: its statistics): aw += dy xhat and               \
     * ab += dy (each NULL when not asked for) and, with sums, its lane sums into part[k][q]:                 \
     * k < NORM_PARTS those of dxhat, from NORM_PARTS on those of dxhat xhat (summed in locals:               \
     * through part, which may alias aw and ab, every addition went by memory and waited on the               \
     * last one's store, and the float backward took 0.16 ms instead of 0.10) */                             \
    static void row_grad_parts_##sfx(pg_vd part[2 * NORM_PARTS][NORM_ROWS], int q, double *restrict aw,      \
                                     double *restrict ab, const TY *restrict gy, const TY *restrict x,        \
                                     const TY *restrict w, int64_t D, TY mu, TY rs, bool sums)                \
    {                                                                                                         \
        const V vmu = VOP(set1)(mu), vrs = VOP(set1)(rs);                                                     \
        pg_vd d[NORM_PARTS], dx[NORM_PARTS];                                                                  \
        for (int p = 0; p < NORM_PARTS; p++)                                                                  \
            d[p] = dx[p] = PG_VD(setzero)();                                                                  \
        for (int64_t j = 0; j < D; j += 16)                                                                   \
            for (int f = 0; f < 16 / VL; f++) {                                                               \
                const V g = VOP(loadu)(gy + j + f * VL);                                                      \
                const V xhat = VOP(mul)(VOP(sub)(VOP(loadu)(x + j + f * VL), vmu), vrs);                      \
                if (aw)                                                                                       \
                    add_doubles_##sfx(aw + j + f * VL, VOP(mul)(g, xhat));                                    \
                if (ab)                                                                                       \
                    add_doubles_##sfx(ab + j + f * VL, g);                                                    \
                if (!sums)                                                                                    \
                    continue;                                                                                 \
                const V dv = w ? VOP(mul)(g, VOP(loadu)(w + j + f * VL)) : g, dxv = VOP(mul)(dv, xhat);       \
                pg_vd dd[DPV_##sfx], ddx[DPV_##sfx];                                                          \
                doubles_##sfx(dd, dv), doubles_##sfx(ddx, dxv);                                               \
                for (int k = 0; k < DPV_##sfx; k++) {                                                         \
                    const int p = DPV_##sfx * f + k;                                                          \
                    d[p] = PG_VD(add)(d[p], dd[k]), dx[p] = PG_VD(add)(dx[p], ddx[k]);                        \
                }                                                                                             \
            }                                                                                                 \
        for (int p = 0; p < NORM_PARTS; p++)                                                                  \
            part[p][q] = d[p], part[NORM_PARTS + p][q] = dx[p];                                               \
    }                                                                                                         \
    /* gx's row (+)= rs (dy w - md - (x - mu) rs mdx) */                                                      \
    static void row_dx_##sfx(TY *restrict gx, const TY *restrict gy, const TY *restrict x,                    \
                             const TY *restrict w, int64_t D, TY mu, TY rs, TY md, TY mdx, bool assign)       \
    {                                                                                                         \
        const V vmu = VOP(set1)(mu), vrs = VOP(set1)(rs), vmd = VOP(set1)(md), vmdx = VOP(set1)(mdx);         \
        for (int64_t j = 0; j < D; j += VL) {                                                                 \
            const V g = VOP(loadu)(gy + j);                                                                   \
            const V d = w ? VOP(mul)(g, VOP(loadu)(w + j)) : g;                                               \
            const V xhat = VOP(mul)(VOP(sub)(VOP(loadu)(x + j), vmu), vrs);                                   \
            const V t = VOP(mul)(vrs, VOP(sub)(VOP(sub)(d, vmd), VOP(mul)(xhat, vmdx)));                      \
            VOP(storeu)(gx + j, assign ? t : VOP(add)(VOP(loadu)(gx + j), t));                                \
        }                                                                                                     \
    }                                                                                                         \
    /* norm_bwd for D a multiple of 16; false (nothing done) for another D */                                 \
    static bool norm_bwd_vec_##sfx(TY *restrict gx, double *restrict aw, double *restrict ab,                 \
                                   const TY *restrict gy, const TY *restrict x, const TY *restrict w,         \
                                   const double *restrict stats, int64_t rows, int64_t D, bool center,        \
                                   bool assign)                                                               \
    {                                                                                                         \
        if (D % 16 != 0)                                                                                      \
            return false;                                                                                     \
        for (int64_t r0 = 0; r0 < rows; r0 += NORM_ROWS) {                                                    \
            const int n = rows - r0 < NORM_ROWS ? (int)(rows - r0) : NORM_ROWS;                               \
            pg_vd part[2 * NORM_PARTS][NORM_ROWS]; /* rows n .. NORM_ROWS - 1 zero */                         \
            TY mu[NORM_ROWS], rs[NORM_ROWS];                                                                  \
            for (int q = 0; q < NORM_ROWS; q++) {                                                             \
                for (int k = 0; k < 2 * NORM_PARTS; k++)                                                      \
                    part[k][q] = PG_VD(setzero)();                                                            \
                if (q >= n)                                                                                   \
                    continue;                                                                                 \
                mu[q] = (TY)stats[2 * (r0 + q)], rs[q] = (TY)stats[2 * (r0 + q) + 1];                         \
                row_grad_parts_##sfx(part, q, aw, ab, gy + (r0 + q) * D, x + (r0 + q) * D, w, D, mu[q],       \
                                     rs[q], gx != NULL);                                                      \
            }                                                                                                 \
            if (!gx)                                                                                          \
                continue;                                                                                     \
            double sd[NORM_ROWS], sdx[NORM_ROWS];                                                             \
            row_totals(sd, part);                                                                             \
            row_totals(sdx, part + NORM_PARTS);                                                               \
            for (int q = 0; q < n; q++)                                                                       \
                row_dx_##sfx(gx + (r0 + q) * D, gy + (r0 + q) * D, x + (r0 + q) * D, w, D, mu[q], rs[q],      \
                             center ? (TY)(sd[q] / (double)D) : (TY)0, (TY)(sdx[q] / (double)D), assign);     \
        }                                                                                                     \
        return true;                                                                                          \
    }
DEFINE_NORM_VEC(float, f32, pg_vf, PG_VF, PG_VF_LANES)
DEFINE_NORM_VEC(double, f64, pg_vd, PG_VD, PG_VD_LANES)
#else
#define norm_fwd_vec_f32(...) false
#define norm_bwd_vec_f32(...) false
#define norm_fwd_vec_f64(...) false
#define norm_bwd_vec_f64(...) false
#endif

/* ---- drivers --------------------------------------------------------------------- */

/* gw += acc (double) */
static void add_acc(pg_tensor *gw, const double *acc)
{
    if (gw->dtype == PG_F32) {
        float *p = gw->data;
        for (int64_t j = 0; j < gw->numel; j++)
            p[j] += (float)acc[j];
    } else {
        double *p = gw->data;
        for (int64_t j = 0; j < gw->numel; j++)
            p[j] += acc[j];
    }
}

/* zeroed double scratch of D entries in the graph arena, or NULL when not needed */
static bool acc_for(pg_graph *g, const pg_tensor *grad, int64_t D, double **acc)
{
    *acc = NULL;
    if (!grad)
        return true;
    *acc = pg_graph_alloc(g, (size_t)(D ? D : 1) * sizeof(double));
    if (!*acc)
        return false;
    for (int64_t j = 0; j < D; j++)
        (*acc)[j] = 0.0;
    return true;
}

/* ---- rows over the thread pool: task t of T takes rows [t rows / T, (t + 1) rows / T);
 * the backward's dw, db are summed per task and then over tasks in task order ---------- */
#define NORM_GRAIN 32768 /* elements per task at least */

/* The backward's task count: from the shape alone (op_sum_blocks, about NORM_GRAIN / 4
 * elements a task), so that dw and db, sums over rows grouped by task, have the same bits
 * for any thread count (grouped by thread, float64's showed it) */
static int64_t norm_blocks(int64_t rows, int64_t D) { return op_sum_blocks(rows, rows * D, NORM_GRAIN / 4); }

typedef struct norm_job {
    bool f32, center, assign; /* assign: the backward's gx is fresh (pg_grad_fresh) */
    int64_t rows, D, T;
    double eps;
    void *y_or_gx;
    const void *x, *w, *b, *gy;
    double *stats;
    double *aw, *ab; /* backward: T slices of D each, or NULL */
} norm_job;

/* rows r0 .. r1 - 1; the backward's weight and bias sums into slice t of aw, ab */
static void norm_rows(const norm_job *j, int64_t r0, int64_t r1, int64_t t, bool backward)
{
    int64_t off = r0 * j->D, n = r1 - r0;
    size_t es = j->f32 ? sizeof(float) : sizeof(double);
    void *out = j->y_or_gx ? (char *)j->y_or_gx + (size_t)off * es : NULL;
    const void *x = (const char *)j->x + (size_t)off * es;
    double *stats = j->stats ? j->stats + 2 * r0 : NULL;
    if (!backward) {
        if (!j->f32) {
            if (!norm_fwd_vec_f64(out, x, j->w, j->b, stats, n, j->D, j->eps, j->center))
                norm_fwd_f64(out, x, j->w, j->b, stats, n, j->D, j->eps, j->center);
        } else if (!norm_fwd_vec_f32(out, x, j->w, j->b, stats, n, j->D, j->eps, j->center))
            norm_fwd_f32(out, x, j->w, j->b, stats, n, j->D, j->eps, j->center);
        return;
    }
    const void *gy = (const char *)j->gy + (size_t)off * es;
    double *aw = j->aw ? j->aw + t * j->D : NULL, *ab = j->ab ? j->ab + t * j->D : NULL;
    if (!j->f32) {
        if (!norm_bwd_vec_f64(out, aw, ab, gy, x, j->w, stats, n, j->D, j->center, j->assign))
            norm_bwd_f64(out, aw, ab, gy, x, j->w, stats, n, j->D, j->center, j->assign);
    } else if (!norm_bwd_vec_f32(out, aw, ab, gy, x, j->w, stats, n, j->D, j->center, j->assign))
        norm_bwd_f32(out, aw, ab, gy, x, j->w, stats, n, j->D, j->center, j->assign);
}

/* the forward: each row alone, so any split */
static void norm_fwd_slice(void *ctx, int64_t r0, int64_t r1, int t) { norm_rows(ctx, r0, r1, t, false); }
/* the backward: task t of T, an even share of the rows (its sums in slice t) */
static void norm_bwd_task(void *ctx, int64_t t, int thread)
{
    (void)thread;
    const norm_job *j = ctx;
    norm_rows(j, t * j->rows / j->T, (t + 1) * j->rows / j->T, t, true);
}

/* gw += the T per-task sums of acc (T slices of D), added in task order */
static void add_task_sums(pg_tensor *gw, double *acc, int64_t T, int64_t D)
{
    for (int64_t t = 1; t < T; t++)
        for (int64_t j = 0; j < D; j++)
            acc[j] += acc[t * D + j];
    add_acc(gw, acc);
}

/* n->in: x, weight, bias (the last two may be NULL); n->ip: rows, D; n->ctx: norm_ctx */
static int norm_backward(pg_graph *g, pg_node *n)
{
    const norm_ctx *c = n->ctx;
    pg_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    bool fresh = false;
    pg_tensor *gx = pg_grad_fresh(g, x, &fresh), *gw = pg_grad_of(g, w), *gb = pg_grad_of(g, b);
    if ((x->requires_grad && !gx) || (w && w->requires_grad && !gw) || (b && b->requires_grad && !gb))
        return -1;
    int64_t rows = n->ip[0], D = n->ip[1], T = norm_blocks(rows, D);
    double *aw, *ab;
    if (!acc_for(g, gw, T * D, &aw) || !acc_for(g, gb, T * D, &ab))
        return -1;
    norm_job j = {x->dtype == PG_F32, c->center, fresh, rows, D, T, 0.0, gx ? gx->data : NULL, x->data,
                  w ? w->data : NULL, NULL, y->grad->data, c->stats, aw, ab};
    op_parallel_for(T, rows * D, 2 * NORM_GRAIN, norm_bwd_task, &j); /* small: on the caller */
    if (gw)
        add_task_sums(gw, aw, T, D);
    if (gb)
        add_task_sums(gb, ab, T, D);
    return 0;
}

static bool affine_arg(pg_graph *g, const char *fn, const char *name, const pg_tensor *p, const pg_tensor *x,
                       int norm_ndim)
{
    if (!p)
        return true;
    if (!arg_float(g, fn, name, p))
        return false;
    if (p->dtype != x->dtype) {
        pg_graph_fail(g, "%s: dtypes differ: x is %s, %s is %s", fn, SHAPE(x), name, SHAPE(p));
        return false;
    }
    bool same = p->ndim == norm_ndim;
    for (int d = 0; same && d < norm_ndim; d++)
        same = p->shape[d] == x->shape[x->ndim - norm_ndim + d];
    if (!same)
        pg_graph_fail(g, "%s: %s must have the shape of the last %d dims of x: x is %s, %s is %s", fn, name,
                      norm_ndim, SHAPE(x), name, SHAPE(p));
    return same;
}

static pg_tensor *norm_op(pg_graph *g, const char *fn, pg_tensor *x, int norm_ndim, pg_tensor *w, pg_tensor *b,
                          double eps, bool center)
{
    if (!arg_float(g, fn, "x", x))
        return NULL;
    if (norm_ndim < 1 || norm_ndim > x->ndim) {
        pg_graph_fail(g, "%s: norm_ndim %d out of range for x %s (1..%d)", fn, norm_ndim, SHAPE(x), x->ndim);
        return NULL;
    }
    if (!(eps >= 0) || isinf(eps)) {
        pg_graph_fail(g, "%s: eps must be finite and >= 0, got %g", fn, eps);
        return NULL;
    }
    if (!affine_arg(g, fn, "weight", w, x, norm_ndim) || !affine_arg(g, fn, "bias", b, x, norm_ndim))
        return NULL;
    int64_t rows = 1, D = 1;
    for (int d = 0; d < x->ndim; d++)
        *(d < x->ndim - norm_ndim ? &rows : &D) *= x->shape[d];
    pg_tensor *in[3] = {x, w, b};
    norm_ctx *c = NULL;
    if (pg_op_needs_grad(g, 3, in)) {
        c = pg_graph_alloc(g, sizeof *c);
        double *stats = pg_graph_alloc(g, (size_t)(rows ? 2 * rows : 1) * sizeof(double));
        if (!c || !stats)
            return NULL;
        c->stats = stats;
        c->center = center;
    }
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    norm_job j = {x->dtype == PG_F32, center, false, rows, D, pg_parallel_tasks(rows * D, NORM_GRAIN), eps,
                  y->data, x->data, w ? w->data : NULL, b ? b->data : NULL, NULL, c ? c->stats : NULL, NULL, NULL};
    pg_parallel_chunks(rows, 1, (int)j.T, norm_fwd_slice, &j);
    pg_node *n = pg_op_record(g, fn, y, 3, in, norm_backward);
    if (n) {
        n->ctx = c;
        n->ip[0] = rows;
        n->ip[1] = D;
        n->p[0] = eps;
    }
    return y;
}

pg_tensor *pg_layer_norm(pg_graph *g, pg_tensor *x, int norm_ndim, pg_tensor *weight, pg_tensor *bias,
                         double eps)
{
    return norm_op(g, "pg_layer_norm", x, norm_ndim, weight, bias, eps, true);
}

pg_tensor *pg_rms_norm(pg_graph *g, pg_tensor *x, int norm_ndim, pg_tensor *weight, double eps)
{
    return norm_op(g, "pg_rms_norm", x, norm_ndim, weight, NULL, eps, false);
}
