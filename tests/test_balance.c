/* Slices sized to the threads' speeds (pg_parallel_slices, threadpool.h): where
 * the boundaries fall for given speeds, how one job's times move the estimates,
 * bad input, and that no split changes a bit of a forward and backward pass
 * through every kernel that takes sized slices (GEMM with its split-K halves, an
 * elementwise range, the norm, the fused attention with and without shared
 * gradients, op_parallel_for's tasks), nor of the losses' block sums, nor of the gathers
 * and block sums of broadcast gradients. */
#include "testutil.h"

#include "../tensor/threadpool.h"

#include <stdatomic.h>
#include <time.h>

static void assert_bounds(int64_t extent, int64_t unit, int parts, const double *w, const int64_t *want)
{
    int64_t b[PG_MAX_THREADS + 1];
    pg_split_bounds(extent, unit, parts, w, b);
    for (int t = 0; t <= parts; t++)
        cr_assert_eq(b[t], want[t], "extent %lld unit %lld parts %d: bound %d is %lld, not %lld", (long long)extent,
                     (long long)unit, parts, t, (long long)b[t], (long long)want[t]);
}

Test(balance, split_bounds)
{
    assert_bounds(1000, 1, 2, NULL, (const int64_t[]){0, 500, 1000});
    assert_bounds(1000, 1, 2, (const double[]){1, 3}, (const int64_t[]){0, 250, 1000});
    /* 250 and 500 to the nearest multiple of 16: 256, 496 (31.25 units) */
    assert_bounds(1000, 16, 3, (const double[]){1, 1, 2}, (const int64_t[]){0, 256, 496, 1000});
    /* GEMM's rows: 512 by MR 14 evenly, 252 + 260 (18.3 units) */
    assert_bounds(512, 14, 2, NULL, (const int64_t[]){0, 252, 512});
    /* a weight too small for one unit gives an empty slice, never a bound past extent */
    assert_bounds(100, 32, 3, (const double[]){0.01, 0.01, 10}, (const int64_t[]){0, 0, 0, 100});
    assert_bounds(100, 32, 2, (const double[]){10, 0.01}, (const int64_t[]){0, 96, 100});
    assert_bounds(7, 1, 1, NULL, (const int64_t[]){0, 7});
    assert_bounds(0, 16, 2, NULL, (const int64_t[]){0, 0, 0});
}

Test(balance, speeds_update)
{
    /* two slices of 100 items, 1 ms and 2 ms: rates 2:1, seen 4/3 and 2/3; a 2 ms job takes the whole step (1/4) */
    double s[2] = {1, 1};
    pg_speeds_update(s, 2, 2, (const int64_t[]){0, 100, 200}, (const double[]){1e-3, 2e-3});
    cr_assert_float_eq(s[0], 1 + 0.25 / 3, 1e-12, "%.17g", s[0]);
    cr_assert_float_eq(s[1], 1 - 0.25 / 3, 1e-12, "%.17g", s[1]);
    /* a 0.5 ms job moves them half as far; mean 1 kept */
    double h[2] = {1, 1};
    pg_speeds_update(h, 2, 2, (const int64_t[]){0, 100, 200}, (const double[]){0.25e-3, 0.5e-3});
    cr_assert_float_eq(h[0], 1 + 0.125 / 3, 1e-12);
    cr_assert_float_eq(h[1], 1 - 0.125 / 3, 1e-12);
    /* too short to say anything, or an empty slice: unchanged */
    double u[2] = {1.2, 0.8};
    pg_speeds_update(u, 2, 2, (const int64_t[]){0, 100, 200}, (const double[]){1e-6, 9e-6});
    pg_speeds_update(u, 2, 2, (const int64_t[]){0, 0, 200}, (const double[]){1e-3, 2e-3});
    cr_assert(u[0] == 1.2 && u[1] == 0.8);
    /* a thread stalled for a long job: at most 2x from the mean */
    double c[2] = {1.9, 0.1};
    pg_speeds_update(c, 2, 2, (const int64_t[]){0, 100, 200}, (const double[]){1e-3, 1.0});
    cr_assert(c[0] <= 2.0 && c[1] >= 0.5, "%g %g", c[0], c[1]);
    /* three threads, two in the job: the third keeps its estimate but for the rescale to mean 1 */
    double t3[3] = {1, 1, 1};
    pg_speeds_update(t3, 3, 2, (const int64_t[]){0, 100, 200}, (const double[]){1e-3, 1e-3});
    cr_assert(t3[0] == 1 && t3[1] == 1 && t3[2] == 1);
    pg_clear_error();
    pg_speeds_update(NULL, 2, 2, (const int64_t[]){0, 1, 2}, (const double[]){1, 1});
    cr_assert_not_null(strstr(pg_last_error(), "pg_speeds_update: speed is NULL"), "%s", pg_last_error());
    pg_speeds_update(c, 2, 3, (const int64_t[]){0, 1, 2, 3}, (const double[]){1, 1, 1});
    cr_assert_not_null(strstr(pg_last_error(), "parts not in 1..T"), "%s", pg_last_error());
}

typedef struct seen {
    int64_t begin[PG_MAX_THREADS], end[PG_MAX_THREADS];
    int runs[1000];
} seen;

static void note_slice(void *ctx, int64_t begin, int64_t end, int slice)
{
    seen *s = ctx;
    s->begin[slice] = begin;
    s->end[slice] = end;
    for (int64_t i = begin; i < end; i++)
        s->runs[i]++;
}

/* T threads splitting to `speeds` (PG_BALANCE_FIXED), or to measured speeds when speeds is
 * NULL; returns the mode before, for the caller to put back */
static pg_balance split_with(int T, const double *speeds)
{
    cr_assert_eq(pg_set_num_threads(T), 0);
    if (speeds)
        cr_assert_eq(pg_parallel_set_speeds(speeds, T), 0, "%s", pg_last_error());
    return pg_parallel_balance(speeds ? PG_BALANCE_FIXED : PG_BALANCE_MEASURED);
}

static void assert_slices(int T, const double *speeds, pg_balance mode, int64_t unit, const int64_t *want)
{
    cr_assert_eq(pg_set_num_threads(T), 0);
    cr_assert_eq(pg_parallel_set_speeds(speeds, T), 0, "%s", pg_last_error());
    pg_balance was = pg_parallel_balance(mode);
    seen *s = calloc(1, sizeof *s);
    pg_parallel_slices(1000, unit, T, note_slice, s);
    pg_parallel_balance(was);
    for (int t = 0; t < T; t++) {
        cr_assert_eq(s->begin[t], want[t], "T %d: slice %d begins at %lld, not %lld", T, t, (long long)s->begin[t],
                     (long long)want[t]);
        cr_assert_eq(s->end[t], want[t + 1], "T %d: slice %d ends at %lld", T, t, (long long)s->end[t]);
    }
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(s->runs[i], 1, "item %d ran %d times", i, s->runs[i]);
    free(s);
}

Test(balance, slices_follow_the_speeds)
{
    int saved = pg_num_threads();
    assert_slices(2, (const double[]){1, 3}, PG_BALANCE_FIXED, 1, (const int64_t[]){0, 250, 1000});
    assert_slices(2, (const double[]){1, 3}, PG_BALANCE_EVEN, 1, (const int64_t[]){0, 500, 1000});
    assert_slices(3, (const double[]){1, 1, 2}, PG_BALANCE_FIXED, 16, (const int64_t[]){0, 256, 496, 1000});
    /* measured: the job uses the speeds given, then learns at most a quarter of the way */
    assert_slices(2, (const double[]){3, 1}, PG_BALANCE_MEASURED, 1, (const int64_t[]){0, 750, 1000});
    double sp[PG_MAX_THREADS];
    cr_assert_eq(pg_parallel_speeds(sp, PG_MAX_THREADS), 2);
    cr_assert(sp[0] > sp[1], "%g %g", sp[0], sp[1]);
    /* a new thread count starts from equal speeds */
    cr_assert_eq(pg_set_num_threads(3), 0);
    cr_assert_eq(pg_parallel_speeds(sp, PG_MAX_THREADS), 3);
    cr_assert(sp[0] == 1 && sp[1] == 1 && sp[2] == 1, "%g %g %g", sp[0], sp[1], sp[2]);
    pg_set_num_threads(saved);
}

/* pieces of one job of pg_parallel_chunks (or pg_parallel_range): how often each item ran,
 * how many items each slice index ran, pieces off the unit's multiples; a slice index that
 * sleeps 10 ms on each call (a slowed core; the others then 50 us, time enough for a worker
 * to wake and take its first chunk), -1 none */
typedef struct pieces {
    _Atomic int runs[1000];
    _Atomic int64_t by_slice[PG_MAX_THREADS];
    _Atomic int calls, misplaced;
    int64_t unit, extent;
    int slow;
} pieces;

static void note_piece(void *ctx, int64_t begin, int64_t end, int slice)
{
    pieces *p = ctx;
    atomic_fetch_add(&p->calls, 1);
    if (begin >= end || begin % p->unit || (end % p->unit && end != p->extent))
        atomic_fetch_add(&p->misplaced, 1);
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&p->runs[i], 1);
    atomic_fetch_add(&p->by_slice[slice], end - begin);
    if (p->slow >= 0)
        nanosleep(&(struct timespec){0, slice == p->slow ? 10000000 : 50000}, NULL);
}

static void note_range_piece(void *ctx, int64_t begin, int64_t end) { note_piece(ctx, begin, end, 0); }

static pieces *pieces_new(int64_t extent, int64_t unit, int slow)
{
    pieces *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    p->unit = unit, p->extent = extent, p->slow = slow;
    return p;
}

static pieces *chunks_of(int64_t extent, int64_t unit, int parts, int slow)
{
    pieces *p = pieces_new(extent, unit, slow);
    pg_parallel_chunks(extent, unit, parts, note_piece, p);
    return p;
}

static void assert_each_item_once(const pieces *p, const char *what)
{
    cr_assert_eq(atomic_load(&p->misplaced), 0, "%s: %d pieces empty or not at multiples of %lld", what,
                 atomic_load(&p->misplaced), (long long)p->unit);
    for (int64_t i = 0; i < p->extent; i++)
        cr_assert_eq(atomic_load(&p->runs[i]), 1, "%s: item %lld ran %d times", what, (long long)i,
                     atomic_load(&p->runs[i]));
}

/* pg_parallel_range cuts at multiples of 16 items, but for fewer than 16 items a slice (each
 * a large one, as a table's copy per head) at any item: 4 items on 2 threads in pieces of
 * one, where a 16-item unit left them all to one call */
Test(balance, range_splits_few_large_items)
{
    int saved = pg_num_threads();
    pg_balance was = split_with(2, (const double[]){1, 1});
    const int64_t n[2] = {4, 1000}, unit[2] = {1, 16};
    for (int c = 0; c < 2; c++) {
        pieces *p = pieces_new(n[c], unit[c], -1);
        pg_parallel_range(n[c], 1, note_range_piece, p);
        assert_each_item_once(p, n[c] == 4 ? "4 items" : "1000 items");
        cr_assert(atomic_load(&p->calls) >= 2, "%lld items in %d pieces", (long long)n[c], atomic_load(&p->calls));
        free(p);
    }
    pg_parallel_balance(was);
    pg_set_num_threads(saved);
}

/* Chunks cover every item once, in pieces at the unit's multiples, on 2 and 3 threads, for
 * extents that are and are not multiples of the unit, and fewer items than threads */
Test(balance, chunks_cover_every_item_once)
{
    int saved = pg_num_threads();
    const int64_t case_of[][2] = {{1000, 1}, {1000, 16}, {999, 16}, {37, 5}, {2, 1}, {1, 1}};
    for (int T = 2; T <= 3; T++) {
        pg_balance was = split_with(T, NULL);
        for (int c = 0; c < 6; c++)
            for (int rep = 0; rep < 20; rep++) {
                pieces *p = chunks_of(case_of[c][0], case_of[c][1], T, -1);
                char what[64];
                snprintf(what, sizeof what, "%d threads, extent %lld unit %lld", T, (long long)case_of[c][0],
                         (long long)case_of[c][1]);
                assert_each_item_once(p, what);
                free(p);
            }
        pg_parallel_balance(was);
    }
    pg_set_num_threads(saved);
}

/* A thread whose slice is done takes what is left of a slower one's: thread 1 sleeping 10 ms
 * a call, thread 0 runs far more than its half of 1000 items. The job teaches the estimates
 * that thread 0 is the faster. */
Test(balance, chunks_let_a_done_thread_take_a_slow_ones_items)
{
    int saved = pg_num_threads();
    pg_balance was = split_with(2, (const double[]){1, 1});
    pieces *p = chunks_of(1000, 1, 2, 1);
    assert_each_item_once(p, "slow thread 1");
    cr_assert(atomic_load(&p->by_slice[0]) >= 700, "thread 0 ran %lld of 1000 items, thread 1 %lld",
              (long long)atomic_load(&p->by_slice[0]), (long long)atomic_load(&p->by_slice[1]));
    free(p);
    /* a job learns when each thread ran some items (not when the worker woke too late for any) */
    pg_parallel_balance(PG_BALANCE_MEASURED);
    double sp[2] = {1, 1};
    for (int i = 0; i < 20 && !(sp[0] > sp[1]); i++) {
        free(chunks_of(1000, 1, 2, 1));
        pg_parallel_speeds(sp, 2);
    }
    cr_assert(sp[0] > sp[1], "after a slow thread 1: speeds %g %g", sp[0], sp[1]);
    pg_parallel_balance(was);
    pg_set_num_threads(saved);
}

static void chunks_inside(void *ctx, int64_t i, int thread)
{
    (void)thread;
    if (i == 0)
        pg_parallel_chunks(1000, 16, 2, note_piece, ctx);
}

/* Nested in another parallel call, every piece runs on the caller as slice 0 */
Test(balance, chunks_nested_run_on_the_caller)
{
    int saved = pg_num_threads();
    pg_balance was = split_with(2, (const double[]){1, 1});
    pieces *p = pieces_new(1000, 16, -1);
    pg_parallel_for(2, chunks_inside, p);
    assert_each_item_once(p, "nested");
    cr_assert_eq(atomic_load(&p->by_slice[0]), 1000, "nested: slice 0 ran %lld",
                 (long long)atomic_load(&p->by_slice[0]));
    free(p);
    pg_parallel_balance(was);
    pg_set_num_threads(saved);
}

static void slice_a(void *ctx, int64_t begin, int64_t end, int slice) { note_slice(ctx, begin, end, slice); }
static void slice_b(void *ctx, int64_t begin, int64_t end, int slice) { note_slice(ctx, begin, end, slice); }

/* Each kind of job (slice function and extent) learns its own estimates: jobs of slice_a
 * over 200 where thread 1 takes twice as long, of slice_b over 200 where both take as
 * long, and of slice_a over 400 never seen; a new thread count or pg_parallel_set_speeds
 * starts every kind again from the pool-wide estimates. */
Test(balance, each_kind_of_job_learns_its_own_speeds)
{
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(2), 0);
    cr_assert_eq(pg_parallel_set_speeds((const double[]){1, 1}, 2), 0);
    pg_balance was = pg_parallel_balance(PG_BALANCE_MEASURED);
    const int64_t b[3] = {0, 100, 200};
    for (int i = 0; i < 40; i++) {
        pg_parallel_learn(slice_a, 2, b, (const double[]){1e-3, 2e-3});
        pg_parallel_learn(slice_b, 2, b, (const double[]){1e-3, 1e-3});
    }
    double wa[2], wb[2], wn[2], pool[2];
    cr_assert_eq(pg_parallel_weights(2, wa, slice_a, 200), 2);
    cr_assert_eq(pg_parallel_weights(2, wb, slice_b, 200), 2);
    pg_parallel_weights(2, wn, slice_a, 400);
    pg_parallel_speeds(pool, 2);
    /* slice_a: rates 2:1, estimates 4/3 : 2/3; slice_b: equal; the pool-wide in between */
    cr_assert(fabs(wa[0] - 1.35) < 1e-9 && fabs(wa[1] - 0.65) < 1e-9, "slice_a weights %g %g", wa[0], wa[1]);
    cr_assert(wb[0] == 1 && wb[1] == 1, "slice_b weights %g %g", wb[0], wb[1]);
    cr_assert(pool[0] > 1.05 && pool[0] < 1.3 && pool[1] < 0.95, "pool-wide %g %g", pool[0], pool[1]);
    cr_assert(fabs(wn[0] - 0.05 * round(pool[0] / 0.05)) < 1e-9, "an unseen kind %g, pool-wide %g", wn[0], pool[0]);
    /* the slices of slice_a follow its weights */
    seen *s = calloc(1, sizeof *s);
    pg_parallel_slices(200, 1, 2, slice_a, s);
    cr_assert(s->end[0] == 135 && s->begin[1] == 135, "slice_a cut at %lld", (long long)s->end[0]);
    free(s);
    /* a stretch on one thread keeps them; another count above 1 starts again. The slices
     * above may have taught them their own times, when slow enough to be timed (under
     * valgrind, where a thread can wait milliseconds for the other, even to equal
     * estimates): taught 2:1 again first, so that what the stretch must keep is known */
    for (int i = 0; i < 40; i++)
        pg_parallel_learn(slice_a, 2, b, (const double[]){1e-3, 2e-3});
    double before[2];
    pg_parallel_weights(2, before, slice_a, 200);
    cr_assert(fabs(before[0] - 1.35) < 1e-9 && fabs(before[1] - 0.65) < 1e-9, "slice_a's estimates before the "
              "stretch: %g %g", before[0], before[1]);
    cr_assert_eq(pg_set_num_threads(1), 0);
    double w1;
    cr_assert_eq(pg_parallel_weights(1, &w1, slice_a, 200), 1);
    cr_assert(w1 == 1, "one thread's weight %g", w1);
    pg_parallel_learn(slice_a, 1, (const int64_t[]){0, 200}, (const double[]){1e-3});
    cr_assert_eq(pg_set_num_threads(2), 0);
    pg_parallel_weights(2, wa, slice_a, 200);
    cr_assert(wa[0] == before[0] && wa[1] == before[1], "after 1 thread: %g %g, before %g %g", wa[0], wa[1],
              before[0], before[1]);
    cr_assert_eq(pg_set_num_threads(3), 0);
    pg_parallel_weights(2, wa, slice_a, 200);
    cr_assert_eq(pg_set_num_threads(2), 0);
    pg_parallel_weights(2, wb, slice_a, 200);
    cr_assert(wa[0] == 1 && wa[1] == 1 && wb[0] == 1 && wb[1] == 1, "after 3 threads: %g %g, %g %g", wa[0], wa[1],
              wb[0], wb[1]);
    /* set_speeds: every kind starts again from them */
    cr_assert_eq(pg_parallel_set_speeds((const double[]){1, 1}, 2), 0);
    pg_parallel_weights(2, wa, slice_a, 200);
    cr_assert(wa[0] == 1 && wa[1] == 1, "after set_speeds %g %g", wa[0], wa[1]);
    /* FIXED: nothing learnt */
    pg_parallel_balance(PG_BALANCE_FIXED);
    pg_parallel_learn(slice_a, 2, b, (const double[]){1e-3, 2e-3});
    pg_parallel_balance(PG_BALANCE_MEASURED);
    pg_parallel_weights(2, wa, slice_a, 200);
    cr_assert(wa[0] == 1 && wa[1] == 1, "learnt in FIXED mode: %g %g", wa[0], wa[1]);
    pg_clear_error();
    pg_parallel_learn(slice_a, 3, (const int64_t[]){0, 1, 2, 3}, (const double[]){1, 1, 1});
    cr_assert_not_null(strstr(pg_last_error(), "pg_parallel_learn: 3 slices for 2 threads"), "%s", pg_last_error());
    pg_parallel_balance(was);
    pg_set_num_threads(saved);
}

Test(balance, bad_input)
{
    int saved = pg_num_threads();
    cr_assert_eq(pg_set_num_threads(2), 0);
    cr_assert_eq(pg_parallel_set_speeds((const double[]){1, 2}, 2), 0);
    const double bad[][2] = {{0, 1}, {-1, 1}, {1, NAN}, {1, INFINITY}};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(pg_parallel_set_speeds(bad[i], 2), -1);
        cr_assert_not_null(strstr(pg_last_error(), "pg_parallel_set_speeds: speeds["), "%s", pg_last_error());
    }
    double sp[2];
    pg_parallel_speeds(sp, 2);
    cr_assert(sp[0] == 1 && sp[1] == 2, "a rejected call changed the speeds: %g %g", sp[0], sp[1]);
    pg_balance was = pg_parallel_balance(PG_BALANCE_FIXED);
    cr_assert_eq(pg_parallel_balance((pg_balance)7), PG_BALANCE_FIXED);
    cr_assert_not_null(strstr(pg_last_error(), "pg_parallel_balance: 7 is not a pg_balance"), "%s", pg_last_error());
    cr_assert_eq(pg_parallel_balance(was), PG_BALANCE_FIXED, "a rejected mode was kept");
    pg_parallel_slices_at(2, (const int64_t[]){0, 5, 3}, note_slice, NULL);
    cr_assert_not_null(strstr(pg_last_error(), "pg_parallel_slices_at: bounds[1..2] = 5, 3: not 0 <= ascending"),
                       "%s", pg_last_error());
    pg_parallel_slices_at(3, (const int64_t[]){0, 1, 2, 3}, note_slice, NULL);
    cr_assert_not_null(strstr(pg_last_error(), "pg_parallel_slices_at: 3 slices for 2 threads"), "%s",
                       pg_last_error());
    pg_clear_error();
    pg_parallel_chunks(10, 1, 2, NULL, NULL);
    cr_assert_not_null(strstr(pg_last_error(), "pg_parallel_chunks: fn is NULL"), "%s", pg_last_error());
    pieces *p = pieces_new(0, 1, -1);
    pg_parallel_chunks(0, 1, 2, note_piece, p);
    pg_parallel_chunks(-5, 1, 2, note_piece, p);
    cr_assert_eq(atomic_load(&p->calls), 0, "an empty extent called fn");
    free(p);
    int64_t b[3] = {-1, -1, -1};
    pg_split_bounds(10, 0, 2, NULL, b);
    cr_assert_not_null(strstr(pg_last_error(), "pg_split_bounds: needs extent >= 0, unit >= 1"), "%s",
                       pg_last_error());
    cr_assert(b[0] == -1 && b[1] == -1 && b[2] == -1, "bounds written on bad input");
    pg_set_num_threads(saved);
}

/* x (1024, 64) @ w (64, 128) -> gelu -> layer norm; the rows as (2, 4, 128, 128)
 * queries, keys and values of a causal fused attention; the heads merged back
 * and a squared-error loss. The GEMMs split rows (x w, dy w^T) and K (x^T dy: two
 * halves side by side); gelu is an elementwise range; the norm's forward and the
 * attention's rows take sized slices, the head merge op_parallel_for's tasks.
 * Results: y, dx, dw, dln_w, dln_b. */
enum { N_RES = 5 };

static void pass_with(int T, const double *speeds, pg_tensor **res)
{
    pg_balance was = split_with(T, speeds);
    pg_rng r = pg_rng_init(31);
    pg_tensor *x = pg_randn(NULL, PG_F32, PG_SHAPE(1024, 64), &r), *w = pg_randn(NULL, PG_F32, PG_SHAPE(64, 128), &r);
    pg_tensor *lw = pg_randn(NULL, PG_F32, PG_SHAPE(128), &r), *lb = pg_randn(NULL, PG_F32, PG_SHAPE(128), &r);
    pg_tensor *target = pg_randn(NULL, PG_F32, PG_SHAPE(8, 128, 128), &r);
    pg_tensor *leaves[] = {x, w, lw, lb};
    for (int i = 0; i < 4; i++)
        pg_set_requires_grad(leaves[i], true);
    pg_graph *g = pg_graph_new();
    pg_tensor *h = pg_layer_norm(g, pg_gelu(g, pg_matmul(g, x, w, false, false)), 1, lw, lb, 1e-5);
    pg_tensor *qkv = pg_split_heads(g, pg_reshape(g, h, PG_SHAPE(8, 128, 128)), 0, 4, 32);
    pg_flash_opts o = {.causal = true};
    pg_tensor *y = pg_merge_heads(g, pg_flash_attention(g, qkv, qkv, qkv, &o));
    pg_tensor *loss = pg_mse_loss(g, y, target, PG_REDUCE_SUM);
    cr_assert_not_null(loss, "%s", pg_graph_error(g));
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    res[0] = pg_tensor_copy(NULL, y);
    for (int i = 0; i < 4; i++)
        res[1 + i] = pg_tensor_copy(NULL, leaves[i]->grad);
    pg_graph_free(g);
    free_all(4, leaves);
    pg_tensor_free(target);
    pg_parallel_balance(was);
}

Test(balance, uneven_slices_give_the_same_bits)
{
    int saved = pg_num_threads();
    static const char *what[N_RES] = {"y", "dx", "dw", "d layer-norm weight", "d layer-norm bias"};
    pg_tensor *even[N_RES], *other[N_RES];
    pass_with(2, (const double[]){1, 1}, even);
    const double *speeds[] = {(const double[]){0.3, 1.7}, (const double[]){1.7, 0.3}, NULL};
    for (int c = 0; c < 3; c++) {
        pass_with(2, speeds[c], other);
        for (int i = 0; i < N_RES; i++)
            cr_assert_eq(memcmp(even[i]->data, other[i]->data, (size_t)even[i]->numel * sizeof(float)), 0,
                         "%s differs between even slices and case %d", what[i], c);
        free_all(N_RES, other);
    }
    /* against one thread (the layer norm's parameter sums aside: see test_threadpool.c) and three */
    pg_tensor *one[N_RES], *three[N_RES];
    pass_with(1, NULL, one);
    pass_with(3, (const double[]){0.5, 1.5, 1}, three);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(memcmp(even[i]->data, one[i]->data, (size_t)even[i]->numel * sizeof(float)), 0,
                     "%s differs between 1 and 2 threads", what[i]);
        cr_assert_eq(memcmp(three[i]->data, one[i]->data, (size_t)even[i]->numel * sizeof(float)), 0,
                     "%s differs between 1 and 3 threads", what[i]);
    }
    free_all(N_RES, even);
    free_all(N_RES, one);
    free_all(N_RES, three);
    pg_set_num_threads(saved);
}

/* The fused attention's backward with gradients shared by the batches of a head (a
 * distance bias (H, 2L - 1) and relative keys (H, 2L - 1, D), as Transformer-XL's), which
 * it takes one of three ways (op_flash.c flash_backward_into), each tested here:
 * - with the relative keys' gradient not asked for: a copy of the bias's per row, summed
 *   after in row order, the rows in chunks on any split. B 4, H 4, L 64, D 16.
 * - with it, the copies do not fit (127 x 17 a row, over a quarter of q, k and v): region by
 *   region (bh mod H), a split that cuts a region having the next thread finish it after the
 *   first (flash_bwd_regions). 4 rows a region, so 0.3 : 1.7 cuts region 0 after 2 rows,
 *   1.7 : 0.3 region 3, 0.5 : 1.5 : 1 regions 0 and 2, and 0.9 : 1e-6 : 1.1 region 1 between
 *   threads 0 and 2, thread 1 having no rows.
 * - the same with one head (L 128, work enough for two threads): fewer regions than threads,
 *   a buffer per thread added in thread order (bits that depend on the thread count: compared
 *   with one thread's within 1e-13).
 * Results: out, dq, dk, dv, d rel_q, d bias and (but for the first way) d rel_k. */
enum { N_SHARED_RES = 7 };

typedef enum shared_way { SHARED_ROW_COPIES, SHARED_REGIONS, SHARED_THREAD_BUFFERS } shared_way;

static void shared_pass_with(int T, const double *speeds, shared_way way, pg_tensor **res)
{
    pg_balance was = split_with(T, speeds);
    const bool one_head = way == SHARED_THREAD_BUFFERS;
    const int64_t H = one_head ? 1 : 4, L = one_head ? 128 : 64; /* one head: enough work for the pool */
    pg_tensor *q = randt(PG_SHAPE(4, H, L, 16), 1, true), *k = randt(PG_SHAPE(4, H, L, 16), 2, true);
    pg_tensor *v = randt(PG_SHAPE(4, H, L, 16), 3, true), *rq = randt(PG_SHAPE(4, H, L, 16), 4, true);
    pg_tensor *db = randt(PG_SHAPE(H, 2 * L - 1), 5, true);
    pg_tensor *rk = randt(PG_SHAPE(H, 2 * L - 1, 16), 6, way != SHARED_ROW_COPIES);
    pg_graph *g = pg_graph_new();
    pg_flash_opts o = {.causal = true, .dist_bias = db, .rel_q = rq, .rel_k = rk, .rel_scale = 0.5};
    pg_tensor *y = pg_flash_attention(g, q, k, v, &o);
    pg_rng r = pg_rng_init(8);
    cr_assert_eq(pg_backward_with(g, y, pg_randn(g, PG_F64, y->ndim, y->shape, &r)), 0, "%s", pg_graph_error(g));
    pg_tensor *in[] = {q, k, v, rq, db, rk};
    res[0] = pg_tensor_copy(NULL, y);
    for (int i = 0; i < 6; i++)
        res[1 + i] = in[i]->grad ? pg_tensor_copy(NULL, in[i]->grad) : NULL;
    pg_graph_free(g);
    free_all(6, in);
    pg_parallel_balance(was);
}

static void assert_same_results(pg_tensor *const *one, pg_tensor *const *other, double tol, const char *how)
{
    static const char *what[N_SHARED_RES] = {"out", "dq", "dk", "dv", "d rel_q", "d bias", "d rel_k"};
    for (int i = 0; i < N_SHARED_RES && one[i]; i++) {
        const double *a = pg_f64(one[i]), *b = pg_f64(other[i]);
        for (int64_t e = 0; e < one[i]->numel; e++)
            cr_assert(tol == 0 ? !memcmp(&a[e], &b[e], sizeof a[e]) : fabs(a[e] - b[e]) <= tol * (1 + fabs(a[e])),
                      "%s[%lld] %.17g on 1 thread, %.17g %s", what[i], (long long)e, a[e], b[e], how);
    }
}

Test(balance, shared_gradients_same_bits_on_any_split)
{
    int saved = pg_num_threads();
    const int T[] = {2, 2, 2, 3, 3, 3};
    const double *speeds[] = {(const double[]){1, 1},       (const double[]){0.3, 1.7},
                              (const double[]){1.7, 0.3},   (const double[]){0.5, 1.5, 1},
                              (const double[]){1, 1, 1},    (const double[]){0.9, 1e-6, 1.1}};
    static const char *way_name[3] = {"row copies", "regions", "thread buffers"};
    for (shared_way way = SHARED_ROW_COPIES; way <= SHARED_THREAD_BUFFERS; way++) {
        pg_tensor *one[N_SHARED_RES], *other[N_SHARED_RES];
        shared_pass_with(1, (const double[]){1}, way, one);
        for (int c = 0; c < 6; c++) {
            shared_pass_with(T[c], speeds[c], way, other);
            char how[96];
            snprintf(how, sizeof how, "on %d threads (case %d, %s)", T[c], c, way_name[way]);
            assert_same_results(one, other, way == SHARED_THREAD_BUFFERS ? 1e-13 : 0, how);
            free_all(N_SHARED_RES, other);
        }
        free_all(N_SHARED_RES, one);
    }
    pg_set_num_threads(saved);
}

/* The losses sum over elements or rows in blocks fixed by the size alone, added in block
 * order (pg_cross_entropy, the regression losses and pg_bce_with_logits): the same bits for
 * any thread count and split. x, y (600, 500) f64 (float32 terms summed in double would come
 * out exact in any grouping): 300000 elements, 64 blocks. */
static void losses_with(int T, const double *speeds, double *out)
{
    pg_balance was = split_with(T, speeds);
    pg_rng r = pg_rng_init(41);
    pg_tensor *x = pg_randn(NULL, PG_F64, PG_SHAPE(600, 500), &r), *y = pg_rand(NULL, PG_F64, PG_SHAPE(600, 500), &r);
    pg_tensor *tg = pg_empty(NULL, PG_I64, PG_SHAPE(600));
    for (int i = 0; i < 600; i++)
        pg_i64(tg)[i] = (i * 37) % 500;
    pg_graph *g = pg_graph_new();
    pg_tensor *l[5] = {pg_cross_entropy(g, x, tg, -100, 0.1), pg_mse_loss(g, x, y, PG_REDUCE_SUM),
                       pg_l1_loss(g, x, y, PG_REDUCE_MEAN), pg_smooth_l1_loss(g, x, y, 0.5, PG_REDUCE_SUM),
                       pg_bce_with_logits(g, x, y, NULL, NULL, PG_REDUCE_MEAN)};
    for (int i = 0; i < 5; i++) {
        cr_assert_not_null(l[i], "%s", pg_graph_error(g));
        out[i] = pg_get(l[i], 0);
    }
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_tensor_free(y);
    pg_tensor_free(tg);
    pg_parallel_balance(was);
}

Test(balance, losses_same_bits_for_any_thread_count)
{
    int saved = pg_num_threads();
    static const char *what[5] = {"cross-entropy", "mse", "l1", "smooth l1", "bce with logits"};
    double one[5], other[5];
    losses_with(1, (const double[]){1}, one);
    const int T[] = {2, 2, 3};
    const double *speeds[] = {(const double[]){1, 1}, (const double[]){0.3, 1.7}, (const double[]){0.5, 1.5, 1}};
    for (int c = 0; c < 3; c++) {
        losses_with(T[c], speeds[c], other);
        for (int i = 0; i < 5; i++)
            cr_assert(memcmp(&one[i], &other[i], sizeof(double)) == 0, "%s: %.17g on 1 thread, %.17g in case %d",
                      what[i], one[i], other[i], c);
    }
    pg_set_num_threads(saved);
}

/* Ops whose serial pieces went to the pool, at sizes that take it: an embedding (its rows
 * gathered in slices, its table's gradient summed by columns), a table broadcast over heads
 * and permuted (2^16 elements), a bias broadcast over batch and length (its gradient summed
 * in fixed blocks of the loops, more than one term per block), a product whose one operand
 * is broadcast over all 32 batches (its gradient summed in fixed blocks of batches, the
 * other's on the pool), and a Linear layer whose weight gradient is a split-K product with
 * its halves added on the pool. Results: the five outputs, then the gradients of table, r,
 * v, u, k, w. */
enum { N_POOLED = 11 };

static void pooled_pass_with(int T, const double *speeds, pg_tensor **res, pg_tensor **in)
{
    pg_balance was = split_with(T, speeds);
    pg_tensor *table = randt(PG_SHAPE(50, 128), 11, true), *r = randt(PG_SHAPE(1, 511, 32), 12, true);
    pg_tensor *q = randt(PG_SHAPE(8, 4, 256, 32), 13, false), *v = randt(PG_SHAPE(4, 1, 32), 14, true);
    pg_tensor *u = randt(PG_SHAPE(1, 1, 32), 15, true), *k = randt(PG_SHAPE(8, 4, 256, 32), 16, true);
    pg_tensor *x = randt(PG_SHAPE(2048, 128), 17, false), *w = randt(PG_SHAPE(128, 128), 18, true);
    pg_tensor *ids = pg_empty(NULL, PG_I64, PG_SHAPE(16, 256));
    for (int64_t i = 0; i < ids->numel; i++)
        pg_i64(ids)[i] = (i * 7 + i / 5) % 50; /* every row of the table many times */
    pg_graph *g = pg_graph_new();
    pg_tensor *y[5] = {pg_embedding(g, table, ids), pg_broadcast_to(g, r, PG_SHAPE(4, 511, 32)), pg_add(g, q, v),
                       pg_matmul(g, u, k, false, true), pg_affine(g, x, w, NULL)};
    y[1] = pg_permute(g, y[1], (const int[]){1, 0, 2});
    pg_tensor *loss = NULL;
    for (int i = 0; i < 5; i++) { /* sum_i <y_i, G_i> with fixed random G_i */
        pg_rng rr = pg_rng_init(40 + (uint64_t)i);
        cr_assert_not_null(y[i], "%s", pg_graph_error(g));
        pg_tensor *t = pg_sum(g, pg_mul(g, y[i], pg_randn(g, PG_F64, y[i]->ndim, y[i]->shape, &rr)), 0, NULL, false);
        loss = loss ? pg_add(g, loss, t) : t;
    }
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor *leaves[6] = {table, r, v, u, k, w};
    for (int i = 0; i < 5; i++)
        res[i] = pg_tensor_copy(NULL, y[i]);
    for (int i = 0; i < 6; i++)
        res[5 + i] = pg_tensor_copy(NULL, leaves[i]->grad);
    pg_graph_free(g);
    pg_tensor *kept[] = {table, r, q, v, u, k, x, w, ids};
    if (in) { /* the caller checks values against them */
        for (int i = 0; i < 9; i++)
            in[i] = kept[i];
    } else {
        free_all(9, kept);
    }
    pg_parallel_balance(was);
}

Test(balance, pooled_gathers_and_sums_give_the_same_bits)
{
    int saved = pg_num_threads();
    static const char *what[N_POOLED] = {"embedding", "broadcast + permute", "q + v", "u k^T", "x w^T",
                                         "d table", "d r", "d v", "d u", "d k", "d w"};
    pg_tensor *one[N_POOLED], *in[9];
    pooled_pass_with(1, NULL, one, in);
    const int T[] = {2, 2, 3};
    const double *speeds[] = {(const double[]){1, 1}, (const double[]){0.3, 1.7}, (const double[]){0.5, 1.5, 1}};
    for (int c = 0; c < 3; c++) {
        pg_tensor *other[N_POOLED], *ref[N_POOLED];
        pooled_pass_with(T[c], speeds[c], other, NULL);
        for (int i = 0; i < N_POOLED; i++)
            ref[i] = pg_tensor_copy(NULL, one[i]);
        assert_same_bits_free(ref, other, N_POOLED, what);
    }
    /* values, on one thread, against sums taken here: d v[h, d] = sum over (b, l) of G_2;
     * d u; d table[t, c] = sum of G_0 over the positions holding id t; the embedding's rows */
    pg_rng r2 = pg_rng_init(42), r0 = pg_rng_init(40);
    pg_tensor *G2 = pg_randn(NULL, PG_F64, PG_SHAPE(8, 4, 256, 32), &r2);
    pg_tensor *G0 = pg_randn(NULL, PG_F64, PG_SHAPE(16, 256, 128), &r0);
    for (int64_t h = 0; h < 4; h++)
        for (int64_t d = 0; d < 32; d++) {
            double s = 0;
            for (int64_t b = 0; b < 8; b++)
                for (int64_t l = 0; l < 256; l++)
                    s += pg_f64(G2)[((b * 4 + h) * 256 + l) * 32 + d];
            double got = pg_f64(one[7])[h * 32 + d];
            cr_assert(fabs(got - s) <= 1e-12 * (1 + fabs(s)), "d v[%lld, %lld] %.17g, summed here %.17g", (long long)h,
                      (long long)d, got, s);
        }
    pg_rng r3 = pg_rng_init(43); /* d u[d] = sum over (b, h, l) of G_3[b, h, 0, l] k[b, h, l, d] */
    pg_tensor *G3 = pg_randn(NULL, PG_F64, PG_SHAPE(8, 4, 1, 256), &r3);
    for (int64_t d = 0; d < 32; d++) {
        double s = 0;
        for (int64_t bh = 0; bh < 32; bh++)
            for (int64_t l = 0; l < 256; l++)
                s += pg_f64(G3)[bh * 256 + l] * pg_f64(in[5])[(bh * 256 + l) * 32 + d];
        double got = pg_f64(one[8])[d];
        cr_assert(fabs(got - s) <= 1e-12 * (1 + fabs(s)), "d u[%lld] %.17g, summed here %.17g", (long long)d, got, s);
    }
    pg_tensor_free(G3);
    for (int64_t t = 0; t < 50; t++)
        for (int64_t c = 0; c < 128; c += 17) {
            double s = 0;
            for (int64_t p = 0; p < 16 * 256; p++)
                if (pg_i64(in[8])[p] == t)
                    s += pg_f64(G0)[p * 128 + c];
            double got = pg_f64(one[5])[t * 128 + c];
            cr_assert(fabs(got - s) <= 1e-12 * (1 + fabs(s)), "d table[%lld, %lld] %.17g, summed here %.17g",
                      (long long)t, (long long)c, got, s);
        }
    for (int64_t p = 0; p < 16 * 256; p += 97)
        cr_assert(pg_f64(one[0])[p * 128 + 5] == pg_f64(in[0])[pg_i64(in[8])[p] * 128 + 5], "embedding row %lld",
                  (long long)p);
    pg_tensor_free(G0);
    pg_tensor_free(G2);
    free_all(N_POOLED, one);
    free_all(9, in);
    pg_set_num_threads(saved);
}
