/* pg_rotate_pairs: rotary embedding's rotation of channel pairs as one op,
 * forward and backward side by side (the composite of narrow / mul / sub / add /
 * concat it replaces made ~10 passes over q and k and as many in backward).
 *
 * t (B, H, L, Dh); C, S (Bc, 1, L, R) with Bc 1 or B; pair i of R is
 * (a, b) = (i, R + i) (half-split) or (2i, 2i + 1) (interleaved):
 *   y_a = x_a C - x_b S,   y_b = x_b C + x_a S,   channels 2R .. Dh-1 copied.
 * Backward:
 *   dx_a = dy_a C + dy_b S,   dx_b = dy_b C - dy_a S,   the rest dx = dy;
 *   dC = sum over the broadcast (b, h) of dy_a x_a + dy_b x_b,
 *   dS = sum over the broadcast (b, h) of dy_b x_a - dy_a x_b.
 * The products are rounded as the composite rounds them (no contraction), so
 * the two agree bit for bit; the rows' rotation is autograd/rotate_rows.h's, which the
 * fused attention's in-kernel rotation runs too. Slabs (b, h) run on the thread pool in the
 * forward and in the backward for t; dC and dS are summed serially. */
#include "op_util.h"
#include "rotate_rows.h"

#include "../tensor/threadpool.h"

#define ROT_GRAIN 32768 /* elements of t below which the rotation stays on the caller */

typedef struct rot_job {
    bool f32, interleaved;
    int64_t B, H, L, Dh, R, Bc;
    const void *x, *C, *S, *gy;
    void *out;  /* y, or dx */
    bool fresh; /* dx is a fresh gradient: each task assigns its slab (no zero pass) */
} rot_job;

#define DEFINE_ROT(T, sfx)                                                                                     \
    /* gC, gS (L, R) += the slab's contribution */                                                             \
    static void rot_bwd_cs_##sfx(const rot_job *j, T *restrict gC, T *restrict gS, const T *restrict gy,       \
                                 const T *restrict x)                                                          \
    {                                                                                                          \
        const bool interleaved = j->interleaved; /* for ROT_PAIR_A / B (rotate_rows.h) */                      \
        const int64_t R = j->R;                                                                                \
        for (int64_t l = 0; l < j->L; l++, gy += j->Dh, x += j->Dh) {                                          \
            T *restrict gc = gC ? gC + l * R : NULL, *restrict gs = gS ? gS + l * R : NULL;                    \
            for (int64_t i = 0; i < R; i++) {                                                                  \
                const T ga = gy[ROT_PAIR_A(i)], gb = gy[ROT_PAIR_B(i)];                                        \
                const T xa = x[ROT_PAIR_A(i)], xb = x[ROT_PAIR_B(i)];                                          \
                if (gc)                                                                                        \
                    gc[i] += ga * xa + gb * xb;                                                                \
                if (gs)                                                                                        \
                    gs[i] += gb * xa - ga * xb;                                                                \
            }                                                                                                  \
        }                                                                                                      \
    }
DEFINE_ROT(float, f32)
DEFINE_ROT(double, f64)

/* offsets of slab s = b H + h: its (L, Dh) block of t and its (L, R) block of C, S */
static int64_t slab_x(const rot_job *j, int64_t s) { return s * j->L * j->Dh; }
static int64_t slab_cs(const rot_job *j, int64_t s) { return (j->Bc == 1 ? 0 : s / j->H) * j->L * j->R; }

static void rot_fwd_task(void *ctx, int64_t s, int thread)
{
    (void)thread;
    const rot_job *j = ctx;
    int64_t ox = slab_x(j, s), oc = slab_cs(j, s);
    if (j->f32)
        rot_rows_f32((float *)j->out + ox, j->Dh, (const float *)j->x + ox, j->Dh, (const float *)j->C + oc,
                     (const float *)j->S + oc, j->L, j->R, j->Dh, j->interleaved);
    else
        rot_rows_f64((double *)j->out + ox, j->Dh, (const double *)j->x + ox, j->Dh, (const double *)j->C + oc,
                     (const double *)j->S + oc, j->L, j->R, j->Dh, j->interleaved);
}

static void rot_bwd_task(void *ctx, int64_t s, int thread)
{
    (void)thread;
    const rot_job *j = ctx;
    int64_t ox = slab_x(j, s), oc = slab_cs(j, s);
    if (j->f32)
        rot_rows_back_f32((float *)j->out + ox, j->Dh, (const float *)j->gy + ox, j->Dh, (const float *)j->C + oc,
                          (const float *)j->S + oc, j->L, j->R, j->Dh, j->interleaved, j->fresh);
    else
        rot_rows_back_f64((double *)j->out + ox, j->Dh, (const double *)j->gy + ox, j->Dh,
                          (const double *)j->C + oc, (const double *)j->S + oc, j->L, j->R, j->Dh, j->interleaved,
                          j->fresh);
}

/* n->in: t, C, S; n->ip[0]: R, n->ip[1]: interleaved */
static int rotate_backward(pg_graph *g, pg_node *n)
{
    pg_tensor *t = n->in[0], *C = n->in[1], *S = n->in[2], *y = n->out;
    bool fresh;
    pg_tensor *gt = pg_grad_fresh(g, t, &fresh), *gC = pg_grad_of(g, C), *gS = pg_grad_of(g, S);
    if ((t->requires_grad && !gt) || (C->requires_grad && !gC) || (S->requires_grad && !gS))
        return -1;
    rot_job j = {t->dtype == PG_F32, n->ip[1] != 0, t->shape[0], t->shape[1], t->shape[2], t->shape[3],
                 n->ip[0], C->shape[0], t->data, C->data, S->data, y->grad->data, gt ? gt->data : NULL, fresh};
    if (gt)
        op_parallel_for(j.B * j.H, t->numel, ROT_GRAIN, rot_bwd_task, &j);
    for (int64_t s = 0; (gC || gS) && s < j.B * j.H; s++) {
        int64_t ox = slab_x(&j, s), oc = slab_cs(&j, s);
        if (j.f32)
            rot_bwd_cs_f32(&j, gC ? pg_f32(gC) + oc : NULL, gS ? pg_f32(gS) + oc : NULL, pg_f32(y->grad) + ox,
                           pg_f32(t) + ox);
        else
            rot_bwd_cs_f64(&j, gC ? pg_f64(gC) + oc : NULL, gS ? pg_f64(gS) + oc : NULL, pg_f64(y->grad) + ox,
                           pg_f64(t) + ox);
    }
    return 0;
}

static bool rotate_args_ok(pg_graph *g, const char *fn, const pg_tensor *t, const pg_tensor *C, const pg_tensor *S,
                           int64_t R)
{
    if (!arg_float(g, fn, "t", t) || !arg_present(g, fn, "cos", C) || !arg_present(g, fn, "sin", S))
        return false;
    bool ok = t->ndim == 4 && C->ndim == 4 && C->dtype == t->dtype && R >= 1 && 2 * R <= t->shape[3] &&
              (C->shape[0] == 1 || C->shape[0] == t->shape[0]) && C->shape[1] == 1 && C->shape[2] == t->shape[2] &&
              C->shape[3] == R;
    for (int d = 0; ok && d < 4; d++)
        ok = S->shape[d] == C->shape[d];
    ok = ok && S->ndim == 4 && S->dtype == t->dtype;
    if (!ok) {
        pg_graph_fail(g,
                      "%s: expected t (B, H, L, Dh) and cos, sin (1 or B, 1, L, R) of t's dtype with 1 <= R <= Dh / 2, "
                      "got t %s, cos %s, sin %s, R %lld",
                      fn, SHAPE(t), SHAPE(C), SHAPE(S), (long long)R);
        return false;
    }
    return true;
}

pg_tensor *pg_rotate_pairs(pg_graph *g, pg_tensor *t, pg_tensor *C, pg_tensor *S, bool interleaved)
{
    const char *fn = "pg_rotate_pairs";
    int64_t R = C ? C->shape[C->ndim > 0 ? C->ndim - 1 : 0] : 0;
    if (!rotate_args_ok(g, fn, t, C, S, R))
        return NULL;
    pg_tensor *y = pg_op_output(g, fn, t->dtype, t->ndim, t->shape);
    if (!y)
        return NULL;
    rot_job j = {t->dtype == PG_F32, interleaved, t->shape[0], t->shape[1], t->shape[2], t->shape[3],
                 R, C->shape[0], t->data, C->data, S->data, NULL, y->data, false};
    op_parallel_for(j.B * j.H, t->numel, ROT_GRAIN, rot_fwd_task, &j);
    pg_node *n = pg_op_record(g, fn, y, 3, (pg_tensor *[]){t, C, S}, rotate_backward);
    if (n) {
        n->ip[0] = R;
        n->ip[1] = interleaved;
    }
    return y;
}
