/* The attention head layout ops, forward and backward side by side:
 *
 *   pg_split_heads: x (B, L, W) -> y (B, H, L, Dh), y[b, h, l, d] = x[b, l, off + h Dh + d]
 *   pg_merge_heads: x (B, H, L, Dh) -> y (B, L, H Dh), y[b, l, h Dh + d] = x[b, h, l, d]
 *
 * Each is one copy where narrow + reshape + permute (split) or permute + reshape (merge)
 * were two or three and a temporary, and each runs over the thread pool, one task per
 * (b, h): a task's rows are its own in both directions, so the result does not depend on
 * the split. A fresh gradient (pg_grad_fresh) is written, not zero-filled then added to:
 * merge's fully; split's in its own columns, the other columns of W zeroed (q, k and v
 * split one (B, L, 3 H Dh) projection: the first backward to run writes its third and
 * zeroes the rest, the other two add into theirs). */
#include "op_util.h"
#include "../tensor/threadpool.h"

#include <string.h>

typedef struct heads_job {
    int64_t B, H, L, Dh, W, off; /* the (B, L, W) side's width W and column offset */
    size_t es;
    char *dst;
    const char *src;
    bool to_heads; /* (B, L, W) -> (B, H, L, Dh); else back */
    bool add;      /* dst += src (float), else dst = src */
} heads_job;

static void add_row(void *dst, const void *src, int64_t n, size_t es)
{
    if (es == sizeof(float)) {
        float *restrict d = dst;
        const float *restrict s = src;
        for (int64_t i = 0; i < n; i++)
            d[i] += s[i];
    } else {
        double *restrict d = dst;
        const double *restrict s = src;
        for (int64_t i = 0; i < n; i++)
            d[i] += s[i];
    }
}

/* task t = b H + h: its L rows of Dh between (b, h, l, :) and (b, l, off + h Dh + :) */
static void heads_task(void *ctx, int64_t t, int thread)
{
    (void)thread;
    const heads_job *j = ctx;
    int64_t b = t / j->H, h = t % j->H;
    size_t row = (size_t)j->Dh * j->es;
    for (int64_t l = 0; l < j->L; l++) {
        size_t at_heads = (size_t)((t * j->L + l) * j->Dh) * j->es;
        size_t at_rows = (size_t)((b * j->L + l) * j->W + j->off + h * j->Dh) * j->es;
        char *d = j->dst + (j->to_heads ? at_heads : at_rows);
        const char *s = j->src + (j->to_heads ? at_rows : at_heads);
        if (j->add)
            add_row(d, s, j->Dh, j->es);
        else
            memcpy(d, s, row);
    }
}

/* rows [r0, r1) of the (B, L, W) buffer j->dst: columns outside [off, off + H Dh) zeroed */
static void zero_other_columns(void *ctx, int64_t r0, int64_t r1)
{
    const heads_job *j = ctx;
    int64_t used = j->H * j->Dh, rest = j->W - j->off - used;
    for (int64_t r = r0; r < r1; r++) {
        char *row = j->dst + (size_t)(r * j->W) * j->es;
        memset(row, 0, (size_t)j->off * j->es);
        memset(row + (size_t)(j->off + used) * j->es, 0, (size_t)rest * j->es);
    }
}

static void heads_run(heads_job *j, void *dst, const void *src, bool to_heads, bool add)
{
    j->dst = dst;
    j->src = src;
    j->to_heads = to_heads;
    j->add = add;
    op_parallel_for(j->B * j->H, j->B * j->H * j->L * j->Dh, 32768, heads_task, j); /* small: on the caller */
}

/* n->ctx: the heads_job of the forward; the gradient goes the other way (split: back to
 * the (B, L, W) rows, whose columns no split owns are zeroed when fresh; merge: back to
 * the heads) */
static int heads_backward(pg_graph *g, pg_node *n)
{
    heads_job j = *(const heads_job *)n->ctx;
    bool fresh, to_rows = j.to_heads;
    pg_tensor *gx = pg_grad_fresh(g, n->in[0], &fresh);
    if (!gx)
        return n->in[0]->requires_grad ? -1 : 0;
    if (fresh && to_rows && j.W > j.H * j.Dh) {
        j.dst = gx->data;
        pg_parallel_range(j.B * j.L, 32768 / j.W + 1, zero_other_columns, &j);
    }
    heads_run(&j, gx->data, n->out->grad->data, !to_rows, !fresh);
    return 0;
}

/* records backward with a copy of j as its ctx */
static pg_tensor *heads_record(pg_graph *g, const char *fn, pg_tensor *x, pg_tensor *y, const heads_job *j)
{
    if (!pg_dtype_is_float(x->dtype) || !pg_op_needs_grad(g, 1, &x))
        return y;
    heads_job *saved = pg_graph_alloc(g, sizeof *saved);
    if (!saved)
        return NULL;
    *saved = *j;
    pg_node *n = pg_op_record(g, fn, y, 1, &x, heads_backward);
    if (n)
        n->ctx = saved;
    return y;
}

pg_tensor *pg_split_heads(pg_graph *g, pg_tensor *x, int64_t offset, int64_t heads, int64_t head_dim)
{
    const char *fn = "pg_split_heads";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    if (x->ndim != 3 || heads < 1 || head_dim < 1 || offset < 0 || offset > x->shape[2] ||
        heads > (x->shape[2] - offset) / head_dim) {
        pg_graph_fail(g, "%s: x %s, offset %lld, heads %lld, head_dim %lld: needs x (B, L, W) with "
                         "0 <= offset and offset + heads x head_dim <= W, heads and head_dim >= 1",
                      fn, SHAPE(x), (long long)offset, (long long)heads, (long long)head_dim);
        return NULL;
    }
    int64_t B = x->shape[0], L = x->shape[1];
    pg_tensor *y = pg_op_output(g, fn, x->dtype, PG_SHAPE(B, heads, L, head_dim));
    if (!y)
        return NULL;
    heads_job j = {B, heads, L, head_dim, x->shape[2], offset, pg_dtype_size(x->dtype), NULL, NULL, false, false};
    heads_run(&j, y->data, x->data, true, false);
    return heads_record(g, fn, x, y, &j);
}

pg_tensor *pg_merge_heads(pg_graph *g, pg_tensor *x)
{
    const char *fn = "pg_merge_heads";
    if (!arg_present(g, fn, "x", x))
        return NULL;
    if (x->ndim != 4) {
        pg_graph_fail(g, "%s: x is %s, expected (B, H, L, Dh)", fn, SHAPE(x));
        return NULL;
    }
    int64_t B = x->shape[0], H = x->shape[1], L = x->shape[2], Dh = x->shape[3];
    pg_tensor *y = pg_op_output(g, fn, x->dtype, PG_SHAPE(B, L, H * Dh));
    if (!y)
        return NULL;
    heads_job j = {B, H, L, Dh, H * Dh, 0, pg_dtype_size(x->dtype), NULL, NULL, false, false};
    heads_run(&j, y->data, x->data, false, false);
    return heads_record(g, fn, x, y, &j);
}
