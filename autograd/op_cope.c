/* pg_cope_interp (autograd/ops.h): CoPE's position bias from the attention logits,
 * forward and backward side by side (docs/pos/cope.md (1), (2), (4)).
 *
 *   s (B, H, Lq, Lk) logits, z (B, H, Lq, n) position logits, keep (B, Lk) key mask or NULL
 *   g_ij = 0 where key j is hidden from query i (keep[b, j] false, or causal and j > i),
 *          else sigmoid(in_scale s_ij)                                           (1)
 *   x_ij = sum_{t >= j} g_it,  p_ij = min(x_ij, n - 1)                             (2)
 *   out_ij = out_scale (z_i[f] + w (z_i[c] - z_i[f])), f = floor p, w = p - f,
 *            c = min(f + 1, n - 1)                                               (4)
 *
 * Backward, d = out_scale dout:
 *   dz_i[f] += d (1 - w),  dz_i[c] += d w
 *   dx_ij = d (z_i[c] - z_i[f])   (0 where the clamp holds x: there p = n - 1 and c = f,
 *                                  so the clamp's mask of the gradient is not needed)
 *   dg_it = sum_{j <= t} dx_ij                       (x_ij sums g_it over t >= j)
 *   ds_it = in_scale dg_it g_it (1 - g_it), 0 where hidden
 *
 * It is the chain mul_scalar, sigmoid, masked_fill, cumsum_reverse, clamp,
 * gather_lerp, mul_scalar in one op: the same operations in the same order with
 * the same roundings (sums in double, rounded once per element), so the same
 * bits for finite logits (tests/test_cope_interp.c), while the (B, H, Lq, Lk)
 * tensors are read and written once instead of once per op. A NaN logit of a
 * visible key makes x NaN at it and at the keys before it in its row, and the
 * bias there NaN (the chain stopped with an error at the gather instead). The
 * rows of one (b, h) go in groups of COPE_ROWS (below); the groups run on the
 * thread pool, each writing its own rows of out, ds and dz. */
#include "cope_rows.h"

typedef struct cope_job {
    pg_dtype dt;
    int64_t H, Lq, Lk, n, groups; /* groups: ceil(Lq / COPE_ROWS) per (b, h) */
    const uint8_t *keep;          /* (B, Lk), true: visible; NULL: no mask */
    bool causal, ds_fresh, dz_fresh;
    double in_scale, out_scale;
    const void *s, *z, *dout;     /* dout NULL: forward */
    void *out, *ds, *dz;          /* ds, dz NULL: not wanted */
    char *scratch;                /* backward: cope_scratch bytes per thread */
} cope_job;

static void cope_group(void *ctx, int64_t u, int thread)
{
    const cope_job *jb = ctx;
    const int64_t bh = u / jb->groups, i0 = (u % jb->groups) * COPE_ROWS, left = jb->Lq - i0;
    const int64_t b = bh / jb->H, at_s = (bh * jb->Lq + i0) * jb->Lk, at_z = (bh * jb->Lq + i0) * jb->n;
    const size_t es = pg_dtype_size(jb->dt);
    cope_rows r = {.i0 = i0, .m = jb->Lk, .n = (int)jb->n, .nr = (int)(left < COPE_ROWS ? left : COPE_ROWS),
                   .keep = jb->keep ? jb->keep + b * jb->Lk : NULL, .causal = jb->causal};
    const char *s = (const char *)jb->s + at_s * es, *z = (const char *)jb->z + at_z * es;
    if (!jb->dout) {
        char *out = (char *)jb->out + at_s * es;
        if (jb->dt == PG_F32)
            cope_fwd_f32((float *)out, (const float *)s, (const float *)z, &r, (float)jb->in_scale,
                         (float)jb->out_scale, NULL, 0);
        else
            cope_fwd_f64((double *)out, (const double *)s, (const double *)z, &r, jb->in_scale, jb->out_scale,
                         NULL, 0);
        return;
    }
    const cope_grads io = {s, z, (const char *)jb->dout + at_s * es, jb->ds ? (char *)jb->ds + at_s * es : NULL,
                           jb->dz ? (char *)jb->dz + at_z * es : NULL, jb->ds_fresh, jb->dz_fresh};
    char *scr = jb->scratch + (size_t)thread * cope_scratch(jb->Lk, jb->dt);
    if (jb->dt == PG_F32)
        cope_bwd_f32(&io, &r, scr, (float)jb->in_scale, (float)jb->out_scale);
    else
        cope_bwd_f64(&io, &r, scr, jb->in_scale, jb->out_scale);
}

static void cope_run(cope_job *j, int64_t B)
{
    int64_t units = B * j->H * j->groups;
    op_parallel_for(units, units * COPE_ROWS * j->Lk, 32768, cope_group, j);
}

static cope_job cope_job_of(const pg_tensor *s, const pg_tensor *z, const pg_tensor *keep, bool causal,
                            double in_scale, double out_scale)
{
    int64_t Lq = s->shape[2];
    return (cope_job){.dt = s->dtype, .H = s->shape[1], .Lq = Lq, .Lk = s->shape[3], .n = z->shape[3],
                      .groups = (Lq + COPE_ROWS - 1) / COPE_ROWS, .keep = keep ? pg_bool(keep) : NULL,
                      .causal = causal, .in_scale = in_scale, .out_scale = out_scale, .s = s->data, .z = z->data};
}

/* node: in {s, z}, saved the key mask, p {in_scale, out_scale}, ip[0] causal */
static int cope_backward(pg_graph *g, pg_node *node)
{
    pg_tensor *s = node->in[0], *z = node->in[1];
    cope_job j = cope_job_of(s, z, node->saved, node->ip[0] != 0, node->p[0], node->p[1]);
    pg_tensor *ds = s->requires_grad ? pg_grad_fresh(g, s, &j.ds_fresh) : NULL;
    pg_tensor *dz = z->requires_grad ? pg_grad_fresh(g, z, &j.dz_fresh) : NULL;
    if ((s->requires_grad && !ds) || (z->requires_grad && !dz))
        return -1;
    if (s->numel == 0) { /* no keys (Lk 0): nothing reaches z */
        if (dz && j.dz_fresh)
            memset(dz->data, 0, (size_t)dz->numel * pg_dtype_size(dz->dtype));
        return 0;
    }
    j.ds = ds ? ds->data : NULL;
    j.dz = dz ? dz->data : NULL;
    j.dout = node->out->grad->data;
    j.scratch = pg_graph_alloc(g, (size_t)pg_num_threads() * cope_scratch(j.Lk, s->dtype));
    if (!j.scratch)
        return -1;
    cope_run(&j, s->shape[0]);
    return 0;
}

static bool cope_args_ok(pg_graph *g, const char *fn, const pg_tensor *s, const pg_tensor *z, const pg_tensor *keep,
                         double in_scale, double out_scale)
{
    if (!arg_float(g, fn, "logits", s) || !arg_float(g, fn, "z", z))
        return false;
    if (s->ndim != 4 || z->ndim != 4 || z->dtype != s->dtype || z->shape[0] != s->shape[0] ||
        z->shape[1] != s->shape[1] || z->shape[2] != s->shape[2] || z->shape[3] < 1 || z->shape[3] > INT32_MAX) {
        pg_graph_fail(g, "%s: logits is %s, z is %s: expected logits (B, H, Lq, Lk) and z (B, H, Lq, n), "
                         "1 <= n <= 2^31 - 1, of one float dtype", fn, SHAPE(s), SHAPE(z));
        return false;
    }
    if (keep && (keep->dtype != PG_BOOL || keep->ndim != 2 || keep->shape[0] != s->shape[0] ||
                 keep->shape[1] != s->shape[3])) {
        pg_graph_fail(g, "%s: the key mask is %s, expected bool (B, Lk) = (%lld, %lld) for logits %s", fn, SHAPE(keep),
                      (long long)s->shape[0], (long long)s->shape[3], SHAPE(s));
        return false;
    }
    if (!isfinite(in_scale) || !isfinite(out_scale)) {
        pg_graph_fail(g, "%s: the scales must be finite, got in_scale %g, out_scale %g", fn, in_scale, out_scale);
        return false;
    }
    return true;
}

pg_tensor *pg_cope_interp(pg_graph *g, pg_tensor *logits, pg_tensor *z, pg_tensor *key_mask, bool causal,
                          double in_scale, double out_scale)
{
    const char *fn = "pg_cope_interp";
    if (!cope_args_ok(g, fn, logits, z, key_mask, in_scale, out_scale))
        return NULL;
    pg_tensor *out = pg_op_output(g, fn, logits->dtype, logits->ndim, logits->shape);
    if (!out)
        return NULL;
    cope_job j = cope_job_of(logits, z, key_mask, causal, in_scale, out_scale);
    j.out = out->data;
    if (out->numel > 0)
        cope_run(&j, logits->shape[0]);
    pg_node *n = pg_op_record(g, fn, out, 2, (pg_tensor *[]){logits, z}, cope_backward);
    if (n) {
        n->saved = key_mask;
        n->p[0] = in_scale;
        n->p[1] = out_scale;
        n->ip[0] = causal;
    }
    return out;
}
