/* xPos in the fused attention kernels (autograd/flash.h "xPos", docs/flash_attention.md
 * "xPos"): one thread's scaled copies of a block's queries and of a tile's keys.
 *
 * Internal: autograd/flash_kernels.h (included by autograd/op_flash.c) includes this
 * inside its kernels for one element type T (T, F(name), BQ, BK and F(transpose)
 * defined there), once per type, hence
 * no include guard.
 *
 * For the block of queries from i0, centre c0 = i0 + BQ / 2:
 *   Qx[r, e] = q[i0 + r, e] zeta_e^((r - BQ/2) / s)            (zq, a fixed table)
 *   Kx[c, e] = k[j0 + c, e] zeta_e^((c0 - j0 - c) / s)         (g_e zk[c, e], g_e per tile)
 * so Qx[r] . Kx[c] = sum_e q_e k_e zeta_e^((i - j) / s) for i = i0 + r, j = j0 + c.
 * The factors are products of doubles, rounded to T once with the scaled value. */

/* tables lz (D) = log(zeta) / s, zq (BQ, D), zk (BK, D) (xpos_tables, shared by the
 * threads); per thread g (D) and kf (BK, D) = the tile's key factors, Qx (BQ, D),
 * Kxr (BK, D) and Kx (D, BK) the tile's scaled keys (rows and transposed), dQx (BQ, D)
 * the block's gradient of Qx, dKx (BK, D) a tile's of Kxr; kh the head's keys (Lk, D; row
 * stride ldk). */
typedef struct F(xpos_tile) {
    const double *lz, *zq, *zk;
    double *g, *kf;
    T *Qx, *Kxr, *Kx, *dQx, *dKx;
    const T *kh;
    int64_t ldk;
} F(xpos_tile);

/* xt's pointers: the tables of d, the rest in the xpos_elems(d) elements at scratch */
static void F(xpos_init)(const flash_dims *d, F(xpos_tile) *xt, void *scratch)
{
    const int64_t D = d->D;
    xt->lz = d->xz;
    xt->zq = d->xz + D;
    xt->zk = xt->zq + BQ * D;
    xt->g = scratch;
    xt->kf = xt->g + D;
    xt->Qx = (T *)(void *)(xt->kf + BK * D);
    xt->Kxr = xt->Qx + BQ * D;
    xt->Kx = xt->Kxr + BK * D;
    xt->dQx = xt->Kx + D * BK;
    xt->dKx = xt->dQx + BQ * D;
}

/* Qx = the queries i0 .. i0 + bq - 1 of qh (Lq, D; row stride ldq) times zq */
static void F(xpos_queries)(const flash_dims *d, F(xpos_tile) *xt, const T *qh, int64_t ldq, int64_t i0, int64_t bq)
{
    const int64_t D = d->D;
    for (int64_t r = 0; r < bq; r++) {
        const T *restrict q = qh + (i0 + r) * ldq;
        const double *restrict z = xt->zq + r * D;
        T *restrict x = xt->Qx + r * D;
        for (int64_t e = 0; e < D; e++)
            x[e] = (T)((double)q[e] * z[e]);
    }
}

/* kf, Kxr and Kx for the keys j0 .. j0 + bk - 1 seen from the block at i0:
 * g_e = zeta_e^((c0 - j0) / s) = exp((c0 - j0) lz_e), kf[c] = g zk[c] */
static void F(xpos_keys)(const flash_dims *d, F(xpos_tile) *xt, int64_t i0, int64_t j0, int64_t bk)
{
    const int64_t D = d->D;
    const double t = (double)(i0 + BQ / 2 - j0);
    double *restrict g = xt->g;
    for (int64_t e = 0; e < D; e++)
        g[e] = pg_vexp(t * xt->lz[e]);
    for (int64_t c = 0; c < bk; c++) {
        const double *restrict z = xt->zk + c * D;
        double *restrict f = xt->kf + c * D;
        const T *restrict k = xt->kh + (j0 + c) * xt->ldk;
        T *restrict x = xt->Kxr + c * D;
        for (int64_t e = 0; e < D; e++) {
            f[e] = g[e] * z[e];
            x[e] = (T)((double)k[e] * f[e]);
        }
    }
    F(transpose)(xt->Kx, BK, xt->Kxr, D, bk, D);
}

/* rows [r0, r0 + n) of g (row stride ld) += the rows of x (n, D) times f (n, D) */
static void F(xpos_chain)(const flash_dims *d, T *g, int64_t ld, int64_t r0, int64_t n, const T *x, const double *f)
{
    const int64_t D = d->D;
    for (int64_t r = 0; r < n; r++) {
        T *restrict gr = g + (r0 + r) * ld;
        const T *restrict xr = x + r * D;
        const double *restrict fr = f + r * D;
        for (int64_t e = 0; e < D; e++)
            gr[e] += (T)((double)xr[e] * fr[e]);
    }
}

/* dk[j0 + c] += dKx[c] kf[c] for the tile's keys (the chain rule through Kxr = k kf; dkh's
 * row stride ld) */
static void F(xpos_dk)(const flash_dims *d, const F(xpos_tile) *xt, T *dkh, int64_t ld, int64_t j0, int64_t bk)
{
    F(xpos_chain)(d, dkh, ld, j0, bk, xt->dKx, xt->kf);
}

/* dq[i0 + r] += dQx[r] zq[r] for the block's queries (the chain rule through Qx = q zq; dqh's
 * row stride ld) */
static void F(xpos_dq)(const flash_dims *d, const F(xpos_tile) *xt, T *dqh, int64_t ld, int64_t i0, int64_t bq)
{
    F(xpos_chain)(d, dqh, ld, i0, bq, xt->dQx, xt->zq);
}
