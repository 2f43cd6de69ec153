/* The attention head layout ops, forward and backward side by side:
 *
 *   pg_split_heads: x (B, L, W) -> y (B, H, L, Dh), y[b, h, l, d] = x[b, l, off + h Dh + d]
 *   pg_merge_heads: x (B, H, L, Dh) -> y (B, L, H Dh), y[b, l, h Dh + d] = x[b, h, l, d]
 *
 * Each is one copy where narrow + reshape + permute (split) or permute + reshape (merge)
 * were two or three and a temporary, and each runs over the thread pool, one task per
 * (b, h): a task's rows are its own in both directions, so the result does not depend on
 * the split. A fresh gradient (pg_grad_fresh) is written, not zero-filled then added to:
 * merge's fully; split's in the columns its outputs take, the others zeroed.
 *
 * Splits of one x recorded one right after another (q, k and v of one (B, L, 3 H Dh)
 * projection) form a group whose gradients go back together: every consumer of any of
 * them was recorded after the last, so when the first of their backwards runs (that of
 * the last split a gradient reached) all their gradients are complete. That backward
 * writes them all, each into its columns, and zeroes only the columns none of them
 * takes; the others find the work done. (Alone, the first to run zeroed the two thirds
 * it did not own and the other two added to theirs.) */
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

/* A split's record: its job, and its group (splits of one x recorded back to back) */
enum { HEADS_GROUP_MAX = 8 };
typedef struct heads_saved {
    heads_job j;
    pg_node *first, *next; /* the group's first split, and the split recorded after this one */
} heads_saved;

/* The columns of the (B, L, W) rows the group's gradients cover: ranges [lo, hi), sorted */
typedef struct heads_cover {
    const heads_job *j;
    char *dst;
    int n;
    int64_t lo[HEADS_GROUP_MAX], hi[HEADS_GROUP_MAX];
} heads_cover;

/* rows [r0, r1) of the (B, L, W) buffer c->dst: the columns outside the covered ranges zeroed */
static void zero_uncovered(void *ctx, int64_t r0, int64_t r1)
{
    const heads_cover *c = ctx;
    const size_t es = c->j->es;
    for (int64_t r = r0; r < r1; r++) {
        char *row = c->dst + (size_t)(r * c->j->W) * es;
        for (int i = 0; i <= c->n; i++) {
            int64_t from = i > 0 ? c->hi[i - 1] : 0, to = i < c->n ? c->lo[i] : c->j->W;
            if (to > from)
                memset(row + (size_t)from * es, 0, (size_t)(to - from) * es);
        }
    }
}

/* adds [lo, hi) to the sorted ranges of c; false when it overlaps one */
static bool cover_add(heads_cover *c, int64_t lo, int64_t hi)
{
    int i = c->n;
    while (i > 0 && c->lo[i - 1] > lo)
        i--;
    if ((i > 0 && c->hi[i - 1] > lo) || (i < c->n && c->lo[i] < hi))
        return false;
    memmove(c->lo + i + 1, c->lo + i, (size_t)(c->n - i) * sizeof *c->lo);
    memmove(c->hi + i + 1, c->hi + i, (size_t)(c->n - i) * sizeof *c->hi);
    c->lo[i] = lo, c->hi[i] = hi, c->n++;
    return true;
}

static void heads_run(heads_job *j, void *dst, const void *src, bool to_heads, bool add)
{
    j->dst = dst;
    j->src = src;
    j->to_heads = to_heads;
    j->add = add;
    op_parallel_for(j->B * j->H, j->B * j->H * j->L * j->Dh, 32768, heads_task, j); /* small: on the caller */
}

/* merge's backward: the gradient back to the heads, written when fresh */
static int merge_backward(pg_graph *g, pg_node *n)
{
    heads_job j = ((const heads_saved *)n->ctx)->j;
    bool fresh;
    pg_tensor *gx = pg_grad_fresh(g, n->in[0], &fresh);
    if (!gx)
        return n->in[0]->requires_grad ? -1 : 0;
    heads_run(&j, gx->data, n->out->grad->data, true, !fresh);
    return 0;
}

static const heads_saved *saved_of(const pg_node *n) { return n->ctx; }

/* split's backward: the group's gradients back to the (B, L, W) rows of x, by the first of
 * the group's backwards to run (the header); fresh and the group's columns apart, each
 * written into its columns and the rest zeroed, else all added (into zeros when fresh) */
static int split_backward(pg_graph *g, pg_node *n)
{
    const heads_saved *self = saved_of(n);
    for (const pg_node *later = self->next; later; later = saved_of(later)->next)
        if (later->out->grad)
            return 0; /* its backward ran first and did the group's */
    bool fresh;
    pg_tensor *gx = pg_grad_fresh(g, n->in[0], &fresh);
    if (!gx)
        return n->in[0]->requires_grad ? -1 : 0;
    heads_cover c = {&self->j, gx->data, 0, {0}, {0}};
    bool apart = true;
    for (const pg_node *m = self->first; m && apart; m = saved_of(m)->next) {
        const heads_job *mj = &saved_of(m)->j;
        if (m->out->grad)
            apart = cover_add(&c, mj->off, mj->off + mj->H * mj->Dh);
    }
    if (!apart) /* columns taken twice: every split adds, into zeros when fresh */
        c.n = 0;
    bool assign = fresh && apart;
    if (fresh)
        pg_parallel_range(self->j.B * self->j.L, 32768 / self->j.W + 1, zero_uncovered, &c);
    for (const pg_node *m = self->first; m; m = saved_of(m)->next)
        if (m->out->grad) {
            heads_job mj = saved_of(m)->j;
            heads_run(&mj, gx->data, m->out->grad->data, false, !assign);
        }
    return 0;
}

/* the split recorded last on g when it is one of x with room in its group, else NULL */
static heads_saved *group_before(pg_graph *g, const pg_tensor *x)
{
    int last = pg_graph_num_nodes(g) - 1;
    const pg_node *prev = last >= 0 ? pg_graph_node(g, last) : NULL;
    if (!prev || prev->backward != split_backward || prev->in[0] != x)
        return NULL;
    int size = 0;
    for (const pg_node *m = saved_of(prev)->first; m; m = saved_of(m)->next)
        size++;
    return size < HEADS_GROUP_MAX ? prev->ctx : NULL;
}

/* records the backward with a copy of j; a split joins the group of the split recorded just
 * before it when that one is of the same x */
static pg_tensor *heads_record(pg_graph *g, const char *fn, pg_tensor *x, pg_tensor *y, const heads_job *j)
{
    if (!pg_dtype_is_float(x->dtype) || !pg_op_needs_grad(g, 1, &x))
        return y;
    heads_saved *saved = pg_graph_alloc(g, sizeof *saved);
    if (!saved)
        return NULL;
    heads_saved *prev = j->to_heads ? group_before(g, x) : NULL;
    pg_node *n = pg_op_record(g, fn, y, 1, &x, j->to_heads ? split_backward : merge_backward);
    if (n) {
        *saved = (heads_saved){*j, prev ? prev->first : n, NULL};
        n->ctx = saved;
        if (prev)
            prev->next = n;
    }
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
