/* Batched matrix product with transpose flags and NumPy-broadcast batch dims,
 * forward and backward on the GEMM kernels of tensor/gemm.h.
 *
 * out[z] = op(a[za]) op(b[zb]) for every output batch index z, where za and zb
 * are z with broadcast dims pinned to 0. With G = d out[z] (M x N):
 *   d op(A) = G op(B)^T   (M x K)        d op(B) = op(A)^T G   (K x N)
 * and a transposed operand gets the transpose of that, so every gradient is
 * one GEMM written straight into the stored layout. Gradients of a broadcast
 * operand accumulate (beta = 1) into its one slot, batch after batch. */
#include "op_util.h"

#include "../tensor/gemm.h"
#include "../tensor/threadpool.h"

#include <string.h>

/* Shapes of one matmul: matrices M x K times K x N over a broadcast batch. */
typedef struct mm_plan {
    int64_t M, N, K;
    int64_t lda, ldb;                /* row strides of a and b as stored */
    int nb;                          /* batch dims of the output */
    int64_t bshape[PG_MAX_DIMS];     /* output batch shape */
    int64_t astr[PG_MAX_DIMS];       /* a's matrix-index stride per batch dim (0: broadcast) */
    int64_t bstr[PG_MAX_DIMS];
    int64_t nbatch;                  /* matrices in the output */
} mm_plan;

/* Matrix-index strides of t's batch dims aligned right to nb output dims. */
static void batch_strides(const pg_tensor *t, int nb, const int64_t *bshape, int64_t *str)
{
    int tb = t->ndim - 2;
    int64_t s = 1;
    for (int d = nb - 1; d >= 0; d--) {
        int td = d - (nb - tb);
        int64_t size = td >= 0 ? t->shape[td] : 1;
        str[d] = size == 1 && bshape[d] != 1 ? 0 : s;
        s *= size;
    }
}

/* Validates the operands and fills the plan and the output shape; false with
 * a message on g otherwise. */
static bool plan_matmul(pg_graph *g, const pg_tensor *a, const pg_tensor *b, bool ta, bool tb, mm_plan *p,
                        int64_t *out_shape)
{
    const char *fn = "pg_matmul";
    if (!args_float_pair(g, fn, a, b))
        return false;
    if (a->ndim < 2 || b->ndim < 2) {
        pg_graph_fail(g, "%s: both operands must be at least 2-D: a is %s, b is %s", fn, SHAPE(a), SHAPE(b));
        return false;
    }
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    p->M = ta ? ac : ar;
    p->K = ta ? ar : ac;
    p->N = tb ? br : bc;
    p->lda = ac;
    p->ldb = bc;
    if ((tb ? bc : br) != p->K) {
        pg_graph_fail(g, "%s: inner dims differ: a is %s%s, b is %s%s", fn, SHAPE(a), ta ? " transposed" : "",
                      SHAPE(b), tb ? " transposed" : "");
        return false;
    }
    int na = a->ndim - 2, nbb = b->ndim - 2;
    p->nb = na > nbb ? na : nbb;
    p->nbatch = 1;
    for (int d = 0; d < p->nb; d++) {
        int da = d - (p->nb - na), db = d - (p->nb - nbb);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            pg_graph_fail(g, "%s: batch dims do not broadcast: a is %s, b is %s", fn, SHAPE(a), SHAPE(b));
            return false;
        }
        p->bshape[d] = sa == 1 ? sb : sa;
        p->nbatch *= p->bshape[d];
        out_shape[d] = p->bshape[d];
    }
    out_shape[p->nb] = p->M;
    out_shape[p->nb + 1] = p->N;
    batch_strides(a, p->nb, p->bshape, p->astr);
    batch_strides(b, p->nb, p->bshape, p->bstr);
    return true;
}

static int64_t batch_count(const pg_tensor *t)
{
    int64_t c = 1;
    for (int d = 0; d < t->ndim - 2; d++)
        c *= t->shape[d];
    return c;
}

/* a (..., M, K) with a full batch (no transpose, nothing broadcast) times a
 * single matrix b: the batch folds into the rows, one GEMM of
 * (nbatch * M) x N, so b is packed once (the Linear-layer case). */
static void fold_batch(mm_plan *p, bool ta, const pg_tensor *a, const pg_tensor *b)
{
    if (ta || p->nb == 0 || batch_count(b) != 1 || batch_count(a) != p->nbatch)
        return;
    p->M *= p->nbatch;
    p->nbatch = 1;
    p->nb = 0;
}

/* Advances the output batch multi-index idx and the matrix indices of a and b. */
static void batch_next(const mm_plan *p, int64_t *idx, int64_t *za, int64_t *zb)
{
    for (int d = p->nb - 1; d >= 0; d--) {
        *za += p->astr[d];
        *zb += p->bstr[d];
        if (++idx[d] < p->bshape[d])
            return;
        *za -= p->astr[d] * p->bshape[d];
        *zb -= p->bstr[d] * p->bshape[d];
        idx[d] = 0;
    }
}

/* C = op(A) op(B) + beta C on element offsets of float or double buffers. */
static void gemm(pg_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t ia,
                 int64_t lda, const void *B, int64_t ib, int64_t ldb, double beta, void *C, int64_t ic, int64_t ldc)
{
    if (dt == PG_F32)
        pg_gemm_f32(ta, tb, M, N, K, 1.0f, (const float *)A + ia, lda, (const float *)B + ib, ldb, (float)beta,
                    (float *)C + ic, ldc);
    else
        pg_gemm_f64(ta, tb, M, N, K, 1.0, (const double *)A + ia, lda, (const double *)B + ib, ldb, beta,
                    (double *)C + ic, ldc);
}

/* One output batch z's products (a, b at matrix indices za, zb). Forward: out[z] = op(a)
 * op(b). Backward (G = d out): the gradients into ga, gb (either may be NULL). */
typedef struct mm_job {
    const mm_plan *p;
    pg_dtype dt;
    bool ta, tb;
    const void *a, *b, *G; /* G NULL: the forward */
    void *out, *ga, *gb;
    double beta_a, beta_b;
} mm_job;

static void mm_batch(const mm_job *j, int64_t z, int64_t za, int64_t zb)
{
    const mm_plan *p = j->p;
    const int64_t M = p->M, N = p->N, K = p->K, oa = za * M * K, ob = zb * K * N, oc = z * M * N;
    if (!j->G) {
        gemm(j->dt, j->ta, j->tb, M, N, K, j->a, oa, p->lda, j->b, ob, p->ldb, 0.0, j->out, oc, N);
        return;
    }
    if (j->ga) {
        if (!j->ta) /* dA (M x K) = G op(B)^T */
            gemm(j->dt, false, !j->tb, M, K, N, j->G, oc, N, j->b, ob, p->ldb, j->beta_a, j->ga, oa, K);
        else /* dA stored (K x M) = op(B) G^T */
            gemm(j->dt, j->tb, true, K, M, N, j->b, ob, p->ldb, j->G, oc, N, j->beta_a, j->ga, oa, M);
    }
    if (j->gb) {
        if (!j->tb) /* dB (K x N) = op(A)^T G */
            gemm(j->dt, !j->ta, false, K, N, M, j->a, oa, p->lda, j->G, oc, N, j->beta_b, j->gb, ob, N);
        else /* dB stored (N x K) = G^T op(A) */
            gemm(j->dt, true, j->ta, N, K, M, j->G, oc, N, j->a, oa, p->lda, j->beta_b, j->gb, ob, K);
    }
}

/* za, zb of output batch z, as batch_next reaches them */
static void batch_at(const mm_plan *p, int64_t z, int64_t *za, int64_t *zb)
{
    *za = *zb = 0;
    for (int d = p->nb - 1; d >= 0; d--) {
        const int64_t i = z % p->bshape[d];
        z /= p->bshape[d];
        *za += i * p->astr[d];
        *zb += i * p->bstr[d];
    }
}

/* task z: output batch z (each thread takes a run of consecutive batches) */
static void mm_task(void *ctx, int64_t z, int thread)
{
    (void)thread;
    int64_t za, zb;
    batch_at(((const mm_job *)ctx)->p, z, &za, &zb);
    mm_batch(ctx, z, za, zb);
}

/* Every batch's products. Many of them (CoPE's (B, H) logits, 256 x 32 x 256 each) go over
 * the pool a batch to a thread, each product then on one thread, where each had been cut
 * across the threads, both packing its op(B) and meeting at a barrier a product (CoPE's
 * 2-thread step 1.83x of 1 thread). When no gradient slot is shared by batches (shared:
 * a broadcast operand's gradient, summed batch after batch) and the batches share out
 * evenly or the products are too small for the pool anyway. The same result: a product's
 * bits do not depend on the thread it runs on. */
static void mm_run(const mm_job *j, bool shared)
{
    const mm_plan *p = j->p;
    const int64_t T = pg_num_threads();
    const double flops = 2.0 * (double)p->M * (double)p->N * (double)p->K;
    if (!shared && T > 1 && p->nbatch >= 2 && (p->nbatch % T == 0 || p->nbatch >= 4 * T || flops < (1 << 22))) {
        op_parallel_for(p->nbatch, p->nbatch, 0, mm_task, (void *)j); /* runs sized to the cores' speeds */
        return;
    }
    int64_t idx[PG_MAX_DIMS] = {0}, za = 0, zb = 0;
    for (int64_t z = 0; z < p->nbatch; z++, batch_next(p, idx, &za, &zb))
        mm_batch(j, z, za, zb);
}

/* A gradient summed over batches (its operand broadcast over them: XL's u over the batch):
 * the batches cut into op_sum_blocks' blocks (fixed by the shape), each block's products
 * summed into its own zeroed partial gradient on the pool, the partials then added to the
 * gradient in block order: the same bits for any thread count. */
#define MM_SUM_GRAIN 32768 /* multiply-adds a block of batches takes at least */

typedef struct mm_sum_job {
    const mm_job *j; /* its one gradient (ga or gb) is the summed one */
    int64_t blocks;
    char *part;      /* `blocks` partial gradients of `bytes` each */
    size_t bytes;
} mm_sum_job;

static void mm_sum_task(void *ctx, int64_t k, int thread)
{
    (void)thread;
    const mm_sum_job *s = ctx;
    mm_job j = *s->j;
    char *part = s->part + (size_t)k * s->bytes;
    memset(part, 0, s->bytes);
    *(j.ga ? &j.ga : &j.gb) = part;
    const int64_t nb = j.p->nbatch;
    for (int64_t z = nb * k / s->blocks; z < nb * (k + 1) / s->blocks; z++) {
        int64_t za, zb;
        batch_at(j.p, z, &za, &zb);
        mm_batch(&j, z, za, zb);
    }
}

/* j's one gradient gr, summed over the batches: in blocks when the partials are small beside
 * the products, else batch after batch on this thread */
static int mm_sum(pg_graph *g, const char *name, const mm_job *j, const pg_tensor *gr)
{
    const mm_plan *p = j->p;
    const int64_t work = p->nbatch * p->M * p->N * p->K;
    mm_sum_job s = {j, op_sum_blocks(p->nbatch, work, MM_SUM_GRAIN), NULL, 0};
    if (!op_partials_worth(s.blocks, gr->numel, work)) {
        mm_run(j, true);
        return 0;
    }
    s.bytes = (size_t)gr->numel * pg_dtype_size(gr->dtype);
    if (!(s.part = op_partials(g, name, gr, s.blocks)))
        return -1;
    op_parallel_for(s.blocks, work, 0, mm_sum_task, &s);
    op_add_partials(gr, s.part, s.blocks);
    return 0;
}

static int matmul_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *a = n->in[0], *b = n->in[1];
    bool ta = n->ip[0], tb = n->ip[1];
    bool fresh_a, fresh_b; /* a new gradient buffer that each batch's GEMM overwrites */
    pg_tensor *ga = pg_grad_fresh(g, a, &fresh_a), *gb = pg_grad_fresh(g, b, &fresh_b);
    if ((a->requires_grad && !ga) || (b->requires_grad && !gb))
        return -1;
    mm_plan p;
    int64_t shape[PG_MAX_DIMS];
    if (!plan_matmul(g, a, b, ta, tb, &p, shape))
        return -1;
    fold_batch(&p, ta, a, b);
    int64_t msize_a = p.M * p.K, msize_b = p.K * p.N;
    /* one slot a batch when the operand has as many matrices as the output (no broadcast):
     * beta 0 for a fresh buffer; else zero it and accumulate */
    bool own_a = a->numel / (msize_a ? msize_a : 1) == p.nbatch, own_b = b->numel / (msize_b ? msize_b : 1) == p.nbatch;
    double beta_a = fresh_a && own_a ? 0.0 : 1.0, beta_b = fresh_b && own_b ? 0.0 : 1.0;
    if (fresh_a && beta_a == 1.0)
        pg_fill(ga, 0.0);
    if (fresh_b && beta_b == 1.0)
        pg_fill(gb, 0.0);
    mm_job j = {&p, a->dtype, ta, tb, a->data, b->data, n->out->grad->data, NULL, ga ? ga->data : NULL,
                gb ? gb->data : NULL, beta_a, beta_b};
    bool shared_a = ga && !own_a, shared_b = gb && !own_b;
    if (shared_a != shared_b) { /* one gradient a batch's own (on the pool), the other summed over batches */
        mm_job own = j, sum = j;
        *(shared_a ? &own.ga : &own.gb) = NULL;
        *(shared_a ? &sum.gb : &sum.ga) = NULL;
        mm_run(&own, false);
        return mm_sum(g, n->name, &sum, shared_a ? ga : gb);
    }
    mm_run(&j, shared_a || shared_b);
    return 0;
}

pg_tensor *pg_matmul(pg_graph *g, pg_tensor *a, pg_tensor *b, bool trans_a, bool trans_b)
{
    mm_plan p;
    int64_t shape[PG_MAX_DIMS];
    if (!plan_matmul(g, a, b, trans_a, trans_b, &p, shape))
        return NULL;
    int ndim = p.nb + 2;
    pg_tensor *out = pg_op_output(g, "pg_matmul", a->dtype, ndim, shape);
    if (!out)
        return NULL;
    fold_batch(&p, trans_a, a, b);
    mm_job j = {&p, a->dtype, trans_a, trans_b, a->data, b->data, NULL, out->data, NULL, NULL, 0.0, 0.0};
    mm_run(&j, false);
    pg_node *n = pg_op_record(g, "pg_matmul", out, 2, (pg_tensor *[]){a, b}, matmul_backward);
    if (n) {
        n->ip[0] = trans_a;
        n->ip[1] = trans_b;
    }
    return out;
}

/* ---- the Linear layer's product as one op -----------------------------------------------
 * y = x W^T + b: x (..., K) viewed as (M, K), W (N, K), b (N) or NULL, y (..., N).
 * Forward: the bias rows are written into y and one GEMM adds x W^T (beta 1).
 * Backward: dx (M, K) = dy W, dW (N, K) += dy^T x, db (N) += the rows of dy
 * summed in row order. A fresh gradient buffer is written with beta 0 (no
 * zero fill). Against pg_matmul + pg_add this saves the bias pass, the two
 * reshapes' gradient copies and the add's backward. */

static int linear_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    bool fx, fw;
    pg_tensor *gx = pg_grad_fresh(g, x, &fx), *gw = pg_grad_fresh(g, w, &fw);
    if ((x->requires_grad && !gx) || (w->requires_grad && !gw))
        return -1;
    int64_t N = w->shape[0], K = w->shape[1], M = n->ip[0];
    pg_dtype dt = x->dtype;
    const void *G = n->out->grad->data;
    if (gx) /* dx (M, K) = dy (M, N) W (N, K) */
        gemm(dt, false, false, M, K, N, G, 0, N, w->data, 0, K, fx ? 0.0 : 1.0, gx->data, 0, K);
    if (gw) /* dW (N, K) = dy^T (N, M) x (M, K) */
        gemm(dt, true, false, N, K, M, G, 0, N, x->data, 0, K, fw ? 0.0 : 1.0, gw->data, 0, K);
    return b ? pg_grad_accumulate(g, b, n->out->grad) : 0; /* db += dy summed over its rows */
}

static bool linear_args_ok(pg_graph *g, const char *fn, const pg_tensor *x, const pg_tensor *w, const pg_tensor *b)
{
    if (!arg_float(g, fn, "x", x) || !arg_present(g, fn, "weight", w))
        return false;
    bool ok = x->ndim >= 1 && w->ndim == 2 && w->dtype == x->dtype && x->shape[x->ndim - 1] == w->shape[1] &&
              (!b || (b->ndim == 1 && b->dtype == x->dtype && b->shape[0] == w->shape[0]));
    if (!ok)
        pg_graph_fail(g, "%s: expected x (..., K), weight (N, K) and bias (N) or NULL of one float dtype, got x %s, "
                      "weight %s, bias %s", fn, SHAPE(x), SHAPE(w), b ? SHAPE(b) : "NULL");
    return ok;
}

pg_tensor *pg_affine(pg_graph *g, pg_tensor *x, pg_tensor *weight, pg_tensor *bias)
{
    const char *fn = "pg_affine";
    if (!linear_args_ok(g, fn, x, weight, bias))
        return NULL;
    int64_t N = weight->shape[0], K = weight->shape[1], M = 1, shape[PG_MAX_DIMS];
    for (int d = 0; d < x->ndim - 1; d++)
        M *= shape[d] = x->shape[d];
    shape[x->ndim - 1] = N;
    pg_tensor *y = pg_op_output(g, fn, x->dtype, x->ndim, shape);
    if (!y)
        return NULL;
    if (!bias) /* y = x W^T */
        gemm(x->dtype, false, true, M, N, K, x->data, 0, K, weight->data, 0, K, 0.0, y->data, 0, N);
    else if (x->dtype == PG_F32) /* + b in every row, added as the GEMM writes y */
        pg_gemm_bias_f32(false, true, M, N, K, 1.0f, x->data, K, weight->data, K, bias->data, y->data, N);
    else
        pg_gemm_bias_f64(false, true, M, N, K, 1.0, x->data, K, weight->data, K, bias->data, y->data, N);
    pg_node *n = pg_op_record(g, fn, y, bias ? 3 : 2, (pg_tensor *[]){x, weight, bias}, linear_backward);
    if (n)
        n->ip[0] = M;
    return y;
}
