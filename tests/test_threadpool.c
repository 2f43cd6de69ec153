/* The thread pool: every task runs once on its fixed thread, nested calls run
 * serially, and the fused attention gives the same numbers for any thread
 * count. (A forked child starting its own pool is exercised by make bench,
 * which runs each attention case in a child; forking inside a Criterion test
 * would make valgrind report the runner's state in the child.) */
#include "testutil.h"

#include "../tensor/threadpool.h"

#include <unistd.h>


typedef struct count_ctx {
    int runs[1000];
    int thread_of[1000];
    int T;
    int nested_ok;
} count_ctx;

static void count(void *p, int64_t i, int thread)
{
    count_ctx *c = p;
    c->runs[i]++;
    c->thread_of[i] = thread;
}

Test(threadpool, every_task_once_on_its_thread)
{
    for (int T = 1; T <= 5; T++) {
        cr_assert_eq(pg_set_num_threads(T), 0);
        cr_assert_eq(pg_num_threads(), T);
        count_ctx *c = calloc(1, sizeof *c);
        pg_parallel_for(1000, count, c);
        for (int i = 0, t = 0, end = 1000 / T + (1000 % T > 0); i < 1000; i++) {
            while (i >= end) /* thread t's share: 1000 / T tasks, one more for t < 1000 mod T */
                end += 1000 / T + (1000 % T > ++t);
            cr_assert_eq(c->runs[i], 1, "T %d: task %d ran %d times", T, i, c->runs[i]);
            cr_assert_eq(c->thread_of[i], t, "T %d: task %d on thread %d, not %d", T, i, c->thread_of[i], t);
        }
        free(c);
    }
}

/* Back-to-back jobs (the workers spin between them rather than sleep), with the
 * thread count changed every 25 jobs and jobs of different sizes: every task of
 * every job runs exactly once, on its thread. */
typedef struct stamp_ctx {
    int runs[64];
    int job;
} stamp_ctx;

static void stamp(void *p, int64_t i, int thread)
{
    stamp_ctx *c = p;
    (void)thread;
    c->runs[i] += c->job;
}

Test(threadpool, back_to_back_jobs_and_count_changes)
{
    int saved = pg_num_threads();
    stamp_ctx c = {{0}, 0};
    for (int job = 1; job <= 200; job++) {
        if (job % 25 == 1)
            cr_assert_eq(pg_set_num_threads(1 + (job / 25) % 3), 0);
        int64_t n = 1 + job % 64;
        memset(c.runs, 0, sizeof c.runs);
        c.job = job;
        pg_parallel_for(n, stamp, &c);
        for (int64_t i = 0; i < 64; i++)
            cr_assert_eq(c.runs[i], i < n ? job : 0, "job %d (%lld tasks): task %lld got %d", job, (long long)n,
                         (long long)i, c.runs[i]);
    }
    pg_set_num_threads(saved);
}

static void inner(void *p, int64_t i, int thread)
{
    (void)i;
    count_ctx *c = p;
    if (thread == 0)
        c->nested_ok++;
}

static void outer(void *p, int64_t i, int thread)
{
    (void)i, (void)thread;
    count_ctx local = {0};
    pg_parallel_for(4, inner, &local); /* serial: all on thread 0 */
    count_ctx *c = p;
    __atomic_add_fetch(&c->nested_ok, local.nested_ok, __ATOMIC_SEQ_CST);
}

Test(threadpool, nested_calls_run_serially)
{
    cr_assert_eq(pg_set_num_threads(2), 0);
    count_ctx *c = calloc(1, sizeof *c);
    pg_parallel_for(6, outer, c);
    cr_assert_eq(c->nested_ok, 24);
    free(c);
}

Test(threadpool, bad_input)
{
    cr_assert_eq(pg_set_num_threads(0), -1);
    cr_assert(strstr(pg_last_error(), "pg_set_num_threads: 0 outside 1..64"));
    cr_assert_eq(pg_set_num_threads(65), -1);
    pg_parallel_for(0, count, NULL); /* nothing to do */
}

/* fused attention forward + backward (B 2, H 3, L 40, causal, mask, distance bias)
 * with T threads: copies of out, dq, dk, dv, dbias */
static void flash_with(int T, pg_tensor **res)
{
    cr_assert_eq(pg_set_num_threads(T), 0);
    pg_tensor *q = randt(PG_SHAPE(2, 3, 40, 8), 1, true), *k = randt(PG_SHAPE(2, 3, 40, 8), 2, true);
    pg_tensor *v = randt(PG_SHAPE(2, 3, 40, 8), 3, true), *db = randt(PG_SHAPE(3, 79), 4, true);
    pg_tensor *mask = pg_ones(NULL, PG_BOOL, PG_SHAPE(2, 40));
    pg_bool(mask)[45] = 0;
    pg_graph *g = pg_graph_new();
    pg_flash_opts o = {.causal = true, .mask = mask, .dist_bias = db};
    pg_tensor *y = pg_flash_attention(g, q, k, v, &o);
    pg_rng r = pg_rng_init(6);
    cr_assert_eq(pg_backward_with(g, y, pg_randn(g, PG_F64, y->ndim, y->shape, &r)), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, y);
    res[1] = pg_tensor_copy(NULL, q->grad);
    res[2] = pg_tensor_copy(NULL, k->grad);
    res[3] = pg_tensor_copy(NULL, v->grad);
    res[4] = pg_tensor_copy(NULL, db->grad);
    pg_graph_free(g);
    pg_tensor *ts[] = {q, k, v, db, mask};
    free_all(5, ts);
}

Test(threadpool, fused_attention_same_for_any_thread_count)
{
    pg_tensor *one[5], *two[5], *two_again[5], *three[5];
    flash_with(1, one);
    flash_with(2, two);
    flash_with(2, two_again);
    flash_with(3, three);
    for (int i = 0; i < 5; i++) {
        size_t bytes = (size_t)one[i]->numel * sizeof(double);
        cr_assert_eq(memcmp(two[i]->data, two_again[i]->data, bytes), 0, "result %d differs between runs", i);
        if (i < 4) { /* each head is one thread's: bit-identical for any count */
            cr_assert_eq(memcmp(one[i]->data, two[i]->data, bytes), 0, "result %d differs with 2 threads", i);
            cr_assert_eq(memcmp(one[i]->data, three[i]->data, bytes), 0, "result %d differs with 3 threads", i);
        } else { /* the bias gradient sums per-thread parts */
            assert_close(two[i], one[i], 1e-14, "dbias, 2 threads");
            assert_close(three[i], one[i], 1e-14, "dbias, 3 threads");
        }
    }
    free_all(5, one);
    free_all(5, two);
    free_all(5, two_again);
    free_all(5, three);
}

/* GELU, LayerNorm and cross-entropy split rows / elements over the pool when
 * the tensor is large: x (64, 1024) f32 is above every grain. Every result is
 * bit-identical for any thread count: forward values and input gradients are
 * per element or row, and the sums over rows (the LayerNorm weight and bias
 * gradients, the loss) are taken per block of rows, blocks fixed by the size
 * alone, and added in block order. Results: y, loss, dx, dw, db of gelu ->
 * layer_norm -> cross_entropy. */
static void row_ops_with(int threads, pg_tensor *out[5])
{
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(threads), 0);
    pg_rng r = pg_rng_init(21);
    pg_tensor *x = pg_randn(NULL, PG_F32, PG_SHAPE(64, 1024), &r), *w = pg_randn(NULL, PG_F32, PG_SHAPE(1024), &r);
    pg_tensor *b = pg_randn(NULL, PG_F32, PG_SHAPE(1024), &r), *tg = pg_empty(NULL, PG_I64, PG_SHAPE(64));
    for (int i = 0; i < 64; i++)
        pg_i64(tg)[i] = (i * 37) % 1024;
    pg_tensor *leaves[] = {x, w, b};
    for (int i = 0; i < 3; i++)
        pg_set_requires_grad(leaves[i], true);
    pg_graph *g = pg_graph_new();
    pg_tensor *h = pg_layer_norm(g, pg_gelu(g, x), 1, w, b, 1e-5);
    pg_tensor *loss = pg_cross_entropy(g, h, tg, -100, 0.1);
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    out[0] = pg_tensor_copy(NULL, h);
    out[1] = pg_tensor_copy(NULL, loss);
    for (int i = 0; i < 3; i++)
        out[2 + i] = pg_tensor_copy(NULL, leaves[i]->grad);
    pg_graph_free(g);
    free_all(3, leaves);
    pg_tensor_free(tg);
    pg_set_num_threads(saved);
}

Test(threadpool, row_ops_same_for_any_thread_count)
{
    pg_tensor *one[5], *two[5], *three[5];
    row_ops_with(1, one);
    row_ops_with(2, two);
    row_ops_with(3, three);
    for (int i = 0; i < 5; i++) {
        size_t bytes = (size_t)one[i]->numel * sizeof(float);
        cr_assert_eq(memcmp(one[i]->data, two[i]->data, bytes), 0, "result %d differs with 2 threads", i);
        cr_assert_eq(memcmp(one[i]->data, three[i]->data, bytes), 0, "result %d differs with 3 threads", i);
    }
    free_all(5, one);
    free_all(5, two);
    free_all(5, three);
}

/* pg_threads_init: the one rule for a thread count from a flag or from
 * PG_NUM_THREADS (1..PG_MAX_THREADS). A bad PG_NUM_THREADS is not silently
 * ignored: the pool falls back to the online cores and pg_threads_init returns
 * -1 with a message naming the variable, its value and the accepted range. */
Test(threadpool, threads_init_reads_the_environment)
{
    cr_assert_eq(setenv("PG_NUM_THREADS", "3", 1), 0);
    cr_assert_eq(pg_threads_init(0), 0, "%s", pg_last_error());
    cr_assert_eq(pg_num_threads(), 3);
    cr_assert_eq(pg_threads_init(2), 0, "an explicit count wins over the environment");
    cr_assert_eq(pg_num_threads(), 2);
    cr_assert_eq(unsetenv("PG_NUM_THREADS"), 0);
    cr_assert_eq(pg_threads_init(0), 0, "%s", pg_last_error());
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_eq(pg_num_threads(), cores < 1 ? 1 : cores > PG_MAX_THREADS ? PG_MAX_THREADS : (int)cores);
    cr_assert_eq(setenv("PG_NUM_THREADS", "", 1), 0);
    cr_assert_eq(pg_threads_init(0), 0, "an empty PG_NUM_THREADS counts as unset");
}

Test(threadpool, threads_init_rejects_a_bad_environment)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int fallback = cores < 1 ? 1 : cores > PG_MAX_THREADS ? PG_MAX_THREADS : (int)cores;
    const char *bad[] = {"1000", "0", "-2", "four", "4x", "65"};
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(setenv("PG_NUM_THREADS", bad[i], 1), 0);
        pg_clear_error();
        cr_assert_eq(pg_threads_init(0), -1, "PG_NUM_THREADS=%s", bad[i]);
        char want[128];
        snprintf(want, sizeof want, "PG_NUM_THREADS is '%s', not an integer in 1..%d", bad[i], PG_MAX_THREADS);
        cr_assert(strstr(pg_last_error(), want), "PG_NUM_THREADS=%s: '%s'", bad[i], pg_last_error());
        cr_assert_eq(pg_num_threads(), fallback, "PG_NUM_THREADS=%s: the pool uses the cores", bad[i]);
    }
    cr_assert_eq(setenv("PG_NUM_THREADS", "1000", 1), 0);
    cr_assert_eq(pg_threads_init(4), 0, "an explicit count does not read the environment");
    cr_assert_eq(pg_num_threads(), 4);
    cr_assert_eq(pg_threads_init(-1), -1);
    cr_assert(strstr(pg_last_error(), "pg_threads_init: -1 outside 0..64"), "%s", pg_last_error());
    cr_assert_eq(pg_threads_init(PG_MAX_THREADS + 1), -1);
    cr_assert(strstr(pg_last_error(), "pg_threads_init: 65 outside 0..64"), "%s", pg_last_error());
    cr_assert_eq(pg_num_threads(), 4, "a rejected count changes nothing");
    unsetenv("PG_NUM_THREADS");
}
