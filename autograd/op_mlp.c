/* pg_scalar_mlp (autograd/ops.h): a two-layer ReLU MLP applied to every scalar of u,
 * forward and backward side by side (FIRE's MLP, docs/pos/fire.md (3)).
 *
 *   u (B, R), w0 (F, 1), b0 (F) or NULL, w2 (H, F), b2 (H) or NULL; out (B, H, R):
 *   a_k = w0_k u + b0_k,  h_k = relu(a_k),  out_h = sum_{k = 0}^{F - 1} w2_hk h_k + b2_h
 *
 * Backward, d_h = dout[b, h, r]:
 *   da_k = [a_k > 0] sum_h d_h w2_hk           (relu's gradient, 0 at a_k <= 0)
 *   dw2_hk += d_h h_k,  db2_h += d_h,  dw0_k += da_k u,  db0_k += da_k,  du = sum_k da_k w0_k
 *
 * It is the chain pg_affine, pg_relu, pg_affine and a permute to (B, H, R) in one pass:
 * the activations a and h are recomputed 16 entries at a time in registers and never
 * stored, where the chain writes and reads (B, R, F) tensors four times (FIRE's are
 * (1, L^2, 32): 8 MiB at L = 256) and runs GEMMs with K = 1 and N = 4. The sums go in
 * a fixed order, not the GEMM's: the chain's values to rounding, not its bits
 * (tests/test_scalar_mlp.c).
 *
 * Each row of u is cut into chunks whose length follows from R alone (mlp_chunk), rows
 * shorter than MLP_MIN_CHUNK going several to a task (so that the slots below stay a
 * small part of the data); a task is one chunk of a block of rows. The weights'
 * gradients sum a task's entries in 16 lanes (entry r of a row in lane r mod 16, row
 * after row), the lanes in order into the task's slot, and the slots in task order into
 * the gradient: the same bits for any thread count. */
#include "op_util.h"

#include <stdint.h>

enum { MLP_LANES = 16, MLP_HEADS = 8, MLP_MIN_CHUNK = 512, MLP_MAX_CHUNKS = 32 };

typedef struct mlp_job {
    pg_dtype dt;
    int64_t B, R, F, H, chunk, chunks; /* chunks per row of u */
    int64_t rows;                      /* rows of u per task (rows shorter than a chunk go together) */
    const void *u, *w0, *b0, *w2, *b2; /* b0, b2 NULL: zero */
    const void *dout;                  /* NULL: forward */
    void *out;                         /* forward: (B, H, R) */
    void *du;                          /* backward: (B, R) or NULL; du_fresh: assign */
    bool du_fresh;
    void *slots;   /* backward: task t's weight gradient sums at t * mlp_slot_len */
    char *scratch; /* backward: mlp_scratch_bytes per thread */
} mlp_job;

/* a task's weight gradient sums: dw2 (H F), dw0 (F), db0 (F), db2 (H) */
static int64_t mlp_slot_len(const mlp_job *j)
{
    return j->H * j->F + 2 * j->F + j->H;
}

/* the backward's scratch per thread: the upstream gradient (H vectors of 16) and the
 * slot's sums in lanes (slot_len vectors), in bytes rounded up to 64 */
static size_t mlp_scratch_bytes(const mlp_job *j)
{
    size_t lanes = (size_t)(j->H + mlp_slot_len(j)) * MLP_LANES * pg_dtype_size(j->dt);
    return (lanes + 63) / 64 * 64;
}

/* the tasks: chunks of blocks of rows */
static int64_t mlp_tasks(const mlp_job *j)
{
    return (j->B + j->rows - 1) / j->rows * j->chunks;
}

/* entries of a chunk: R / MLP_MAX_CHUNKS rounded up to 16, at least MLP_MIN_CHUNK */
static int64_t mlp_chunk(int64_t R)
{
    int64_t c = ((R + MLP_MAX_CHUNKS - 1) / MLP_MAX_CHUNKS + MLP_LANES - 1) / MLP_LANES * MLP_LANES;
    return c > MLP_MIN_CHUNK ? c : MLP_MIN_CHUNK;
}

/* 16 entries in one vector (GCC / clang vector extensions: AVX-512 registers here, two
 * or four narrower ones on other builds); aligned as their elements, so any address */
typedef float mlp_vf32 __attribute__((vector_size(16 * sizeof(float)), aligned(sizeof(float)), may_alias));
typedef int32_t mlp_vi32 __attribute__((vector_size(16 * sizeof(int32_t)), aligned(sizeof(int32_t)), may_alias));
typedef double mlp_vf64 __attribute__((vector_size(16 * sizeof(double)), aligned(sizeof(double)), may_alias));
typedef int64_t mlp_vi64 __attribute__((vector_size(16 * sizeof(int64_t)), aligned(sizeof(int64_t)), may_alias));

/* relu as pg_relu (NaN stays NaN) and its gradient's mask [a > 0] as 1 or 0, for a vector
 * a of type V (VI: its integer twin); macros, not functions: a vector wider than the build's
 * registers passed by value would change the ABI (gcc's -Wpsabi) */
#define MLP_RELU(V, VI, a) ((V)((VI)(a) & (((a) > 0) | ((a) != (a)))))
#define MLP_STEP(V, a) __builtin_convertvector(-((a) > 0), V)
/* v = n <= 16 entries of x, the rest 0; and n entries of v to x. A whole vector is read
 * and written in place (the types are may_alias, aligned as their elements); a part goes
 * through a copy, which keeps v itself out of memory. */
#define MLP_LOAD(V, v, x, n)                                                                                   \
    V v;                                                                                                       \
    if ((n) == MLP_LANES) {                                                                                    \
        v = *(const V *)(const void *)(x);                                                                     \
    } else {                                                                                                   \
        V part_ = {0};                                                                                         \
        memcpy(&part_, (x), (size_t)(n) * sizeof part_[0]);                                                    \
        v = part_;                                                                                             \
    }
#define MLP_STORE(V, x, v, n)                                                                                  \
    do {                                                                                                       \
        if ((n) == MLP_LANES) {                                                                                \
            *(V *)(void *)(x) = (v);                                                                           \
        } else {                                                                                               \
            const V part_ = (v);                                                                               \
            memcpy((x), &part_, (size_t)(n) * sizeof part_[0]);                                                \
        }                                                                                                      \
    } while (0)

#define DEFINE_MLP(T, sfx, V, VI)                                                                              \
    /* 16 entries of u (n <= 16 real): out (H rows R apart). The heads go MLP_HEADS at a                       \
     * time, their sums in registers (each k's h_k recomputed per block of heads). */                          \
    static void mlp_fwd16_##sfx(T *out, const T *u, int n, const mlp_job *j)                                   \
    {                                                                                                          \
        const T *w0 = j->w0, *b0 = j->b0, *w2 = j->w2, *b2 = j->b2;                                            \
        const int64_t F = j->F, H = j->H, R = j->R;                                                            \
        MLP_LOAD(V, uu, u, n);                                                                                 \
        for (int64_t h0 = 0; h0 < H; h0 += MLP_HEADS) {                                                        \
            V acc[MLP_HEADS] = {{0}};                                                                          \
            for (int64_t k = 0; k < F; k++) {                                                                  \
                const V a = w0[k] * uu + (b0 ? b0[k] : (T)0), hk = MLP_RELU(V, VI, a);                         \
                for (int i = 0; i < MLP_HEADS; i++)                                                            \
                    if (h0 + i < H)                                                                            \
                        acc[i] += w2[(h0 + i) * F + k] * hk;                                                   \
            }                                                                                                  \
            for (int i = 0; i < MLP_HEADS && h0 + i < H; i++) {                                                \
                const V o = acc[i] + (b2 ? b2[h0 + i] : (T)0);                                                 \
                MLP_STORE(V, out + (h0 + i) * R, o, n);                                                        \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    /* 16 entries' backward: du (n entries; NULL: not wanted), and the weight gradients' sums                  \
     * in lanes, sums = sw2 (H F vectors), sw0, sb0 (F each), sb2 (H); dd: H vectors of scratch */             \
    static void mlp_bwd16_##sfx(T *du, const T *dout, const T *u, int n, const mlp_job *j, V *restrict dd,     \
                                V *restrict sums)                                                              \
    {                                                                                                          \
        const T *w0 = j->w0, *b0 = j->b0, *w2 = j->w2;                                                         \
        const int64_t F = j->F, H = j->H, R = j->R;                                                            \
        V *sw2 = sums, *sw0 = sw2 + H * F, *sb0 = sw0 + F, *sb2 = sb0 + F, dul = {0};                          \
        MLP_LOAD(V, uu, u, n);                                                                                 \
        for (int64_t h = 0; h < H; h++) {                                                                      \
            MLP_LOAD(V, dv, dout + h * R, n);                                                                  \
            dd[h] = dv;                                                                                        \
            sb2[h] += dd[h];                                                                                   \
        }                                                                                                      \
        for (int64_t k = 0; k < F; k++) {                                                                      \
            const V a = w0[k] * uu + (b0 ? b0[k] : (T)0), hk = MLP_RELU(V, VI, a);                             \
            V dh = {0};                                                                                        \
            for (int64_t h = 0; h < H; h++) {                                                                  \
                dh += dd[h] * w2[h * F + k];                                                                   \
                sw2[h * F + k] += dd[h] * hk;                                                                  \
            }                                                                                                  \
            const V da = dh * MLP_STEP(V, a);                                                                  \
            sw0[k] += da * uu;                                                                                 \
            sb0[k] += da;                                                                                      \
            dul += da * w0[k];                                                                                 \
        }                                                                                                      \
        if (!du)                                                                                               \
            return;                                                                                            \
        MLP_LOAD(V, old, du, j->du_fresh ? 0 : n);                                                             \
        V sum = dul;                                                                                           \
        if (!j->du_fresh)                                                                                      \
            sum = old + sum;                                                                                   \
        MLP_STORE(V, du, sum, n);                                                                              \
    }                                                                                                          \
    /* task t: chunk t mod chunks of the rows of block t / chunks */                                           \
    static void mlp_part_##sfx(const mlp_job *j, int64_t t, char *scratch)                                     \
    {                                                                                                          \
        const int64_t R = j->R, H = j->H, c = t % j->chunks, b0 = t / j->chunks * j->rows;                     \
        const int64_t b1 = b0 + j->rows < j->B ? b0 + j->rows : j->B;                                          \
        const int64_t r0 = c * j->chunk, r1 = r0 + j->chunk < R ? r0 + j->chunk : R;                           \
        if (!j->dout) {                                                                                        \
            for (int64_t b = b0; b < b1; b++)                                                                  \
                for (int64_t r = r0; r < r1; r += MLP_LANES)                                                   \
                    mlp_fwd16_##sfx((T *)j->out + b * H * R + r, (const T *)j->u + b * R + r,                  \
                                    (int)(r1 - r < MLP_LANES ? r1 - r : MLP_LANES), j);                        \
            return;                                                                                            \
        }                                                                                                      \
        const int64_t S = mlp_slot_len(j);                                                                     \
        V *dd = (V *)(void *)scratch, *sums = dd + H;                                                          \
        T *slot = (T *)j->slots + t * S;                                                                       \
        for (int64_t i = 0; i < S; i++)                                                                        \
            sums[i] = (V){0};                                                                                  \
        for (int64_t b = b0; b < b1; b++)                                                                      \
            for (int64_t r = r0; r < r1; r += MLP_LANES)                                                       \
                mlp_bwd16_##sfx(j->du ? (T *)j->du + b * R + r : NULL, (const T *)j->dout + b * H * R + r,     \
                                (const T *)j->u + b * R + r, (int)(r1 - r < MLP_LANES ? r1 - r : MLP_LANES),   \
                                j, dd, sums);                                                                  \
        for (int64_t i = 0; i < S; i++) { /* the lanes in order */                                             \
            T s = sums[i][0];                                                                                  \
            for (int l = 1; l < MLP_LANES; l++)                                                                \
                s += sums[i][l];                                                                               \
            slot[i] = s;                                                                                       \
        }                                                                                                      \
    }                                                                                                          \
    /* grad[i] += the slots' entry `at + i`, task after task (NULL grad: not wanted) */                        \
    static void mlp_add_slots_##sfx(T *grad, const mlp_job *j, int64_t at, int64_t len)                        \
    {                                                                                                          \
        const int64_t S = mlp_slot_len(j), n = mlp_tasks(j);                                                   \
        const T *slots = (const T *)j->slots + at;                                                             \
        for (int64_t i = 0; grad && i < len; i++) {                                                            \
            T s = slots[i];                                                                                    \
            for (int64_t c = 1; c < n; c++)                                                                    \
                s += slots[c * S + i];                                                                         \
            grad[i] += s;                                                                                      \
        }                                                                                                      \
    }
DEFINE_MLP(float, f32, mlp_vf32, mlp_vi32)
DEFINE_MLP(double, f64, mlp_vf64, mlp_vi64)

static void mlp_task(void *ctx, int64_t t, int thread)
{
    const mlp_job *j = ctx;
    char *scratch = j->dout ? j->scratch + (size_t)thread * mlp_scratch_bytes(j) : NULL;
    if (j->dt == PG_F32)
        mlp_part_f32(j, t, scratch);
    else
        mlp_part_f64(j, t, scratch);
}

/* the tasks on the pool */
static void mlp_run(mlp_job *j)
{
    op_parallel_for(mlp_tasks(j), j->B * j->R * j->F * j->H, 16384, mlp_task, j);
}

static mlp_job mlp_job_of(pg_tensor *const *in)
{
    const pg_tensor *u = in[0], *w2 = in[3];
    mlp_job j = {.dt = u->dtype, .B = u->shape[0], .R = u->shape[1], .F = w2->shape[1], .H = w2->shape[0],
                 .u = u->data, .w0 = in[1]->data, .b0 = in[2] ? in[2]->data : NULL, .w2 = w2->data,
                 .b2 = in[4] ? in[4]->data : NULL};
    j.chunk = mlp_chunk(j.R);
    j.chunks = (j.R + j.chunk - 1) / j.chunk;
    j.rows = j.R >= MLP_MIN_CHUNK ? 1 : MLP_MIN_CHUNK / (j.R > 0 ? j.R : 1);
    return j;
}

/* a parameter's gradient buffer, NULL when it is absent or wants none; *bad on failure */
static void *mlp_grad(pg_graph *g, pg_tensor *x, bool *bad)
{
    if (!x || !x->requires_grad)
        return NULL;
    pg_tensor *d = pg_grad_of(g, x);
    *bad = *bad || !d;
    return d ? d->data : NULL;
}

/* node: in {u, w0, w2, then b0 and b2 where given}, ip[0], ip[1]: b0, b2 given */
static int mlp_backward(pg_graph *g, pg_node *node)
{
    pg_tensor *b0 = node->ip[0] ? node->in[3] : NULL, *b2 = node->ip[1] ? node->in[3 + (b0 != NULL)] : NULL;
    pg_tensor *in[5] = {node->in[0], node->in[1], b0, node->in[2], b2}, *u = in[0];
    mlp_job j = mlp_job_of(in);
    j.dout = node->out->grad->data;
    pg_tensor *du = u->requires_grad ? pg_grad_fresh(g, u, &j.du_fresh) : NULL;
    if (u->requires_grad && !du)
        return -1;
    j.du = du ? du->data : NULL;
    bool bad = false;
    void *dw0 = mlp_grad(g, in[1], &bad), *db0 = mlp_grad(g, b0, &bad);
    void *dw2 = mlp_grad(g, in[3], &bad), *db2 = mlp_grad(g, b2, &bad);
    int64_t S = mlp_slot_len(&j), tasks = mlp_tasks(&j);
    j.slots = bad ? NULL : pg_graph_alloc(g, (size_t)(tasks * S) * pg_dtype_size(j.dt));
    j.scratch = j.slots ? pg_graph_alloc(g, (size_t)pg_num_threads() * mlp_scratch_bytes(&j)) : NULL;
    if (!j.scratch)
        return -1;
    mlp_run(&j);
    int64_t H = j.H, F = j.F;
    if (j.dt == PG_F32) {
        mlp_add_slots_f32(dw2, &j, 0, H * F), mlp_add_slots_f32(dw0, &j, H * F, F);
        mlp_add_slots_f32(db0, &j, H * F + F, F), mlp_add_slots_f32(db2, &j, H * F + 2 * F, H);
    } else {
        mlp_add_slots_f64(dw2, &j, 0, H * F), mlp_add_slots_f64(dw0, &j, H * F, F);
        mlp_add_slots_f64(db0, &j, H * F + F, F), mlp_add_slots_f64(db2, &j, H * F + 2 * F, H);
    }
    return 0;
}

/* the five inputs' dtypes and shapes; in[2], in[4] may be NULL */
static bool mlp_args_ok(pg_graph *g, const char *fn, pg_tensor *const *in)
{
    static const char *const names[5] = {"u", "w0", "b0", "w2", "b2"};
    for (int i = 0; i < 5; i++) {
        if ((i == 2 || i == 4) && !in[i])
            continue;
        if (!arg_float(g, fn, names[i], in[i]))
            return false;
    }
    const pg_tensor *u = in[0], *w0 = in[1], *b0 = in[2], *w2 = in[3], *b2 = in[4];
    bool dtypes = w0->dtype == u->dtype && w2->dtype == u->dtype && (!b0 || b0->dtype == u->dtype) &&
                  (!b2 || b2->dtype == u->dtype);
    bool shapes = u->ndim == 2 && w0->ndim == 2 && w0->shape[1] == 1 && w0->shape[0] >= 1 && w2->ndim == 2 &&
                  w2->shape[0] >= 1 && w2->shape[1] == w0->shape[0] &&
                  (!b0 || (b0->ndim == 1 && b0->shape[0] == w0->shape[0])) &&
                  (!b2 || (b2->ndim == 1 && b2->shape[0] == w2->shape[0]));
    if (!dtypes || !shapes) {
        pg_graph_fail(g, "%s: u is %s, w0 %s, b0 %s, w2 %s, b2 %s: expected u (B, R), w0 (F, 1), b0 (F) or NULL, "
                         "w2 (H, F), b2 (H) or NULL, F, H >= 1, of one float dtype",
                      fn, SHAPE(u), SHAPE(w0), b0 ? SHAPE(b0) : "NULL", SHAPE(w2), b2 ? SHAPE(b2) : "NULL");
        return false;
    }
    return true;
}

pg_tensor *pg_scalar_mlp(pg_graph *g, pg_tensor *u, pg_tensor *w0, pg_tensor *b0, pg_tensor *w2, pg_tensor *b2)
{
    const char *fn = "pg_scalar_mlp";
    pg_tensor *in[5] = {u, w0, b0, w2, b2};
    if (!mlp_args_ok(g, fn, in))
        return NULL;
    mlp_job j = mlp_job_of(in);
    pg_tensor *out = pg_op_output(g, fn, u->dtype, PG_SHAPE(j.B, j.H, j.R));
    if (!out)
        return NULL;
    j.out = out->data;
    if (out->numel > 0)
        mlp_run(&j);
    /* recorded as {u, w0, w2, then b0 and b2 where given}; ip[0], ip[1]: b0, b2 given */
    pg_tensor *rec[5] = {u, w0, w2, b0 ? b0 : b2, b2};
    pg_node *node = pg_op_record(g, fn, out, 3 + (b0 != NULL) + (b2 != NULL), rec, mlp_backward);
    if (node) {
        node->ip[0] = b0 != NULL;
        node->ip[1] = b2 != NULL;
    }
    return out;
}
