/* The persistent thread pool (see threadpool.h).
 *
 * One job at a time: the caller publishes (fn, ctx, n) and then bumps the
 * generation (release), so a worker that sees the new generation (acquire)
 * sees the job; worker t runs tasks t, t + T, ...; the caller runs its own
 * share as thread 0 and then waits until every worker has counted itself out
 * of `pending`.
 *
 * Waking a thread blocked on a condition variable costs 10-45 us here, more
 * than many of the kernels' jobs take. So both sides first spin for a while
 * (SPIN_SECONDS of polling an atomic) and only then block: back-to-back jobs,
 * as in a training step, never sleep, nor do jobs a few hundred microseconds
 * of serial work apart (a training step has some ten such gaps between its
 * jobs, 40-300 us each). Sleeping and waking happen under the mutex, so no
 * wake-up is lost. */
#include "threadpool.h"

#include "tensor.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* How long a thread polls before it blocks: by the clock, not by a count of polls (a
 * pause instruction takes 19 ns on one x86 and 40 on another). 500 us covers nine in ten of
 * a training step's serial gaps; OpenMP's default spin is of the same order. */
#define SPIN_SECONDS 500e-6
#define SPIN_CHECK 64 /* polls between two readings of the clock */

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t threads[PG_MAX_THREADS];
    int n_workers;   /* threads besides the caller */
    int want;        /* the configured thread count (0: not yet decided) */
    _Atomic uint64_t generation;
    _Atomic int pending; /* workers still running the current job */
    atomic_bool stop;
    bool busy, exit_hook;
    void (*fn)(void *, int64_t, int);
    void *ctx;
    int64_t n;
    int T;
    uint64_t born[PG_MAX_THREADS + 1]; /* generation when worker t started: its first job is the next one */
} pool;

static pool P = {.mu = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* where thread t of T's consecutive tasks start (threadpool.h): n / T each, the first
 * n mod T threads one more (no product n t to overflow) */
static int64_t share_start(int64_t n, int t, int T)
{
    const int64_t q = n / T, r = n % T;
    return q * t + (t < r ? t : r);
}

static void run_share(void (*fn)(void *, int64_t, int), void *ctx, int64_t n, int t, int T)
{
    for (int64_t i = share_start(n, t, T); i < share_start(n, t + 1, T); i++)
        fn(ctx, i, t);
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One poll of a spin that began at `start`: a pause, and every SPIN_CHECK polls a look at
 * the clock. False once SPIN_SECONDS have passed (time to block). */
static bool spin_on(double start, int *polls)
{
    cpu_relax();
    return ++*polls % SPIN_CHECK != 0 || seconds_now() - start < SPIN_SECONDS;
}

/* The generation after `seen` (or `seen` itself once stopping): spin, then sleep. */
static uint64_t next_job(uint64_t seen)
{
    uint64_t g = seen;
    const double start = seconds_now();
    for (int polls = 0; g == seen && !atomic_load(&P.stop) && spin_on(start, &polls);)
        g = atomic_load_explicit(&P.generation, memory_order_acquire);
    if (g != seen || atomic_load(&P.stop))
        return g;
    pthread_mutex_lock(&P.mu);
    while (!atomic_load(&P.stop) && (g = atomic_load_explicit(&P.generation, memory_order_acquire)) == seen)
        pthread_cond_wait(&P.work, &P.mu);
    pthread_mutex_unlock(&P.mu);
    return g;
}

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg; /* 1 .. n_workers */
    uint64_t seen = P.born[t];  /* written before pthread_create */
    for (;;) {
        seen = next_job(seen);
        if (atomic_load(&P.stop))
            break;
        run_share(P.fn, P.ctx, P.n, t, P.T);
        if (atomic_fetch_sub(&P.pending, 1) == 1) { /* the last one out wakes a sleeping caller */
            pthread_mutex_lock(&P.mu);
            pthread_cond_signal(&P.done);
            pthread_mutex_unlock(&P.mu);
        }
    }
    return NULL;
}

/* Joins the workers (at exit, or before a new thread count). Caller holds no lock. */
static void stop_workers(void)
{
    pthread_mutex_lock(&P.mu);
    atomic_store(&P.stop, true);
    pthread_cond_broadcast(&P.work);
    int n = P.n_workers;
    pthread_mutex_unlock(&P.mu);
    for (int i = 0; i < n; i++)
        pthread_join(P.threads[i], NULL);
    pthread_mutex_lock(&P.mu);
    P.n_workers = 0;
    atomic_store(&P.stop, false);
    pthread_mutex_unlock(&P.mu);
}

/* In a child made by fork() the workers do not exist: start afresh. */
static void after_fork_child(void)
{
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.work, NULL);
    pthread_cond_init(&P.done, NULL);
    P.n_workers = 0;
    P.busy = false;
    atomic_store(&P.stop, false);
    atomic_store(&P.pending, 0);
}

/* PG_NUM_THREADS: its count, 0 when unset or empty, -1 when set to anything
 * but an integer in 1..PG_MAX_THREADS. */
static int env_threads(void)
{
    const char *env = getenv("PG_NUM_THREADS");
    if (!env || !*env)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(env, &end, 10);
    return errno == 0 && *end == '\0' && v >= 1 && v <= PG_MAX_THREADS ? (int)v : -1;
}

static int core_threads(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores < 1 ? 1 : cores > PG_MAX_THREADS ? PG_MAX_THREADS : (int)cores;
}

/* The count before any pg_set_num_threads: a valid PG_NUM_THREADS, else the cores. */
static int default_threads(void)
{
    int env = env_threads();
    return env > 0 ? env : core_threads();
}

int pg_num_threads(void)
{
    pthread_mutex_lock(&P.mu);
    if (P.want == 0)
        P.want = default_threads();
    int n = P.want;
    pthread_mutex_unlock(&P.mu);
    return n;
}

int pg_set_num_threads(int n)
{
    if (n < 1 || n > PG_MAX_THREADS) {
        pg_set_error("pg_set_num_threads: %d outside 1..%d", n, PG_MAX_THREADS);
        return -1;
    }
    stop_workers(); /* the next parallel call starts n - 1 of them */
    pthread_mutex_lock(&P.mu);
    P.want = n;
    pthread_mutex_unlock(&P.mu);
    return 0;
}

int pg_threads_init(int n)
{
    if (n < 0 || n > PG_MAX_THREADS) {
        pg_set_error("pg_threads_init: %d outside 0..%d (0: PG_NUM_THREADS or the online cores)", n,
                     PG_MAX_THREADS);
        return -1;
    }
    if (n > 0)
        return pg_set_num_threads(n);
    int env = env_threads();
    pg_set_num_threads(env > 0 ? env : core_threads()); /* in range: cannot fail */
    if (env < 0) {
        pg_set_error("pg_threads_init: PG_NUM_THREADS is '%s', not an integer in 1..%d", getenv("PG_NUM_THREADS"),
                     PG_MAX_THREADS);
        return -1;
    }
    return 0;
}

/* Starts the workers for the configured count; under the lock. False if none could start. */
static bool ensure_workers(void)
{
    if (P.want == 0)
        P.want = default_threads();
    if (!P.exit_hook) {
        P.exit_hook = true;
        atexit(stop_workers);
        pthread_atfork(NULL, NULL, after_fork_child);
    }
    while (P.n_workers < P.want - 1) {
        P.born[P.n_workers + 1] = atomic_load(&P.generation);
        if (pthread_create(&P.threads[P.n_workers], NULL, worker, (void *)(intptr_t)(P.n_workers + 1)) != 0)
            break;
        P.n_workers++;
    }
    return P.n_workers > 0;
}

void pg_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i, int thread), void *ctx)
{
    if (!fn) {
        pg_set_error("pg_parallel_for: fn is NULL");
        return;
    }
    if (n <= 0)
        return;
    pthread_mutex_lock(&P.mu);
    if (P.busy || n == 1 || !ensure_workers()) { /* nested, trivial, or no threads: serial */
        pthread_mutex_unlock(&P.mu);
        run_share(fn, ctx, n, 0, 1);
        return;
    }
    P.busy = true;
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.T = P.n_workers + 1;
    int T = P.T;
    atomic_store(&P.pending, P.n_workers);
    atomic_fetch_add_explicit(&P.generation, 1, memory_order_release); /* publishes the job */
    pthread_cond_broadcast(&P.work);
    pthread_mutex_unlock(&P.mu);
    run_share(fn, ctx, n, 0, T);
    const double start = seconds_now();
    for (int polls = 0; atomic_load(&P.pending) > 0 && spin_on(start, &polls);)
        continue;
    pthread_mutex_lock(&P.mu);
    while (atomic_load(&P.pending) > 0)
        pthread_cond_wait(&P.done, &P.mu);
    P.busy = false;
    pthread_mutex_unlock(&P.mu);
}

/* ---- slices sized to the threads' speeds --------------------------------------------
 *
 * The two virtual cores of a shared host do not always run at one speed: for seconds
 * at a time one can be 10-20% slower (bench core_skew), and an even split then waits
 * for it. So pg_parallel_slices times each thread's slice, and the next split gives
 * each thread a share of the items in proportion to its recent speed. Items per second
 * is a different number for every kernel, so a job only compares its threads with one
 * another: thread t's rate over the mean rate of the job's threads, averaged over jobs
 * (an exponential average, quicker for longer jobs, whose times say more).
 *
 * Nor do kernels see the same ratio between the cores: when one core is slowed, a
 * memory-bound pass loses more on it than a GEMM does (in one such stretch the second
 * thread ran a GEMM's slices at 0.92 of the first's rate, the fused attention's at 0.81,
 * elementwise ranges at 0.6-0.9). So each kind of job (its slice function and extent, a
 * "site") keeps its own estimates, starting from the pool-wide ones, which learn from
 * every job. */

#define SPEED_MIN_SECONDS 20e-6 /* shorter jobs' times are mostly noise: not counted */
#define SPEED_FULL_SECONDS 1e-3 /* a job this long moves the estimate by SPEED_STEP */
#define SPEED_STEP 0.25
#define SPEED_CLAMP 2.0 /* no thread's estimate strays more than 2x from the others' mean */
#define SPEED_QUANTUM 0.05 /* the slices follow the estimates in steps of 5%: a boundary does not
                            * move for the estimates' noise, and the ops on either side of it keep
                            * their rows in one core's cache */
#define SITES 256          /* kinds of job with their own estimates; more share the pool-wide ones */

typedef struct site {
    pg_slice_fn fn; /* NULL: a free entry */
    int64_t extent;
    double speed[PG_MAX_THREADS];
} site;

static struct {
    pthread_mutex_t mu;
    int T;                          /* the thread count (above 1) the estimates are for */
    double speed[PG_MAX_THREADS];   /* pool-wide relative speeds, mean 1 over the T threads */
    double single[PG_MAX_THREADS];  /* what one thread sees: 1 */
    site sites[SITES];              /* open addressing on (fn, extent) */
    pg_balance mode;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .mode = PG_BALANCE_MEASURED};

/* every site forgotten (its next job starts from the pool-wide estimates); under S.mu */
static void forget_sites(void)
{
    for (int i = 0; i < SITES; i++)
        S.sites[i].fn = NULL;
}

/* the estimates for T threads, reset to equal when T changed to another count above 1 (a
 * stretch on one thread, which has nothing to balance, keeps them); under S.mu */
static double *speeds_for(int T)
{
    if (T == 1) {
        S.single[0] = 1.0;
        return S.single;
    }
    if (S.T != T) {
        S.T = T;
        for (int t = 0; t < PG_MAX_THREADS; t++)
            S.speed[t] = 1.0;
        forget_sites();
    }
    return S.speed;
}

/* the estimates of the jobs of fn over extent (T threads): its site's, made from the
 * pool-wide ones when `make` and there is room, else the pool-wide ones; under S.mu */
static double *site_speeds(pg_slice_fn fn, int64_t extent, int T, bool make)
{
    double *pool_wide = speeds_for(T);
    if (!fn || T == 1)
        return pool_wide;
    uint64_t h = ((uint64_t)(uintptr_t)fn >> 4) * 0x9E3779B97F4A7C15u ^ (uint64_t)extent * 0xC2B2AE3D27D4EB4Fu;
    for (int probe = 0; probe < 8; probe++) {
        site *e = &S.sites[(h + (uint64_t)probe) % SITES];
        if (e->fn == fn && e->extent == extent)
            return e->speed;
        if (!e->fn) {
            if (!make)
                return pool_wide;
            e->fn = fn;
            e->extent = extent;
            for (int t = 0; t < PG_MAX_THREADS; t++)
                e->speed[t] = pool_wide[t];
            return e->speed;
        }
    }
    return pool_wide;
}

pg_balance pg_parallel_balance(pg_balance mode)
{
    pthread_mutex_lock(&S.mu);
    pg_balance was = S.mode;
    if (mode == PG_BALANCE_MEASURED || mode == PG_BALANCE_EVEN || mode == PG_BALANCE_FIXED)
        S.mode = mode;
    else
        pg_set_error("pg_parallel_balance: %d is not a pg_balance", (int)mode);
    pthread_mutex_unlock(&S.mu);
    return was;
}

int pg_parallel_speeds(double *out, int n)
{
    int T = pg_num_threads();
    if (!out && n > 0) {
        pg_set_error("pg_parallel_speeds: out is NULL");
        return -1;
    }
    pthread_mutex_lock(&S.mu);
    const double *s = speeds_for(T);
    for (int t = 0; t < n && t < T; t++)
        out[t] = s[t];
    pthread_mutex_unlock(&S.mu);
    return T;
}

int pg_parallel_set_speeds(const double *speeds, int n)
{
    if (!speeds) {
        pg_set_error("pg_parallel_set_speeds: speeds is NULL");
        return -1;
    }
    for (int t = 0; t < n; t++)
        if (!(speeds[t] > 0 && speeds[t] <= 1e6)) { /* also NaN */
            pg_set_error("pg_parallel_set_speeds: speeds[%d] is %g, not in (0, 1e6]", t, speeds[t]);
            return -1;
        }
    int T = pg_num_threads();
    pthread_mutex_lock(&S.mu);
    double *s = speeds_for(T);
    for (int t = 0; t < n && t < T; t++)
        s[t] = speeds[t];
    forget_sites(); /* every kind of job starts again from these */
    pthread_mutex_unlock(&S.mu);
    return 0;
}

void pg_split_bounds(int64_t extent, int64_t unit, int parts, const double *weight, int64_t *bounds)
{
    if (!bounds || parts < 1 || unit < 1 || extent < 0) {
        pg_set_error("pg_split_bounds: %s (extent %lld, unit %lld, parts %d)",
                     !bounds ? "bounds is NULL" : "needs extent >= 0, unit >= 1, parts >= 1", (long long)extent,
                     (long long)unit, parts);
        return;
    }
    double total = 0;
    for (int t = 0; t < parts; t++)
        total += weight ? weight[t] : 1.0;
    double cum = 0;
    bounds[0] = 0;
    for (int t = 1; t < parts; t++) {
        cum += weight ? weight[t - 1] : 1.0;
        double units = (double)extent / (double)unit * cum / total; /* where slice t starts, in units */
        int64_t b = unit * (int64_t)(units + 0.5);
        b = b < bounds[t - 1] ? bounds[t - 1] : b > extent ? extent : b;
        bounds[t] = b;
    }
    bounds[parts] = extent;
}

typedef struct slices_job {
    pg_slice_fn fn;
    void *ctx;
    const int64_t *bounds;
    double secs[PG_MAX_THREADS];
    _Atomic bool serial; /* a slice ran on another thread than its own: nothing to learn */
} slices_job;

static void slice_task(void *ctx, int64_t i, int thread)
{
    slices_job *j = ctx;
    if (thread != i)
        atomic_store_explicit(&j->serial, true, memory_order_relaxed);
    int64_t begin = j->bounds[i], end = j->bounds[i + 1];
    double t0 = seconds_now();
    if (begin < end)
        j->fn(j->ctx, begin, end, (int)i);
    j->secs[i] = seconds_now() - t0;
}

void pg_speeds_update(double *speed, int T, int parts, const int64_t *bounds, const double *secs)
{
    if (!speed || !bounds || !secs || T < 1 || T > PG_MAX_THREADS || parts < 1 || parts > T) {
        pg_set_error("pg_speeds_update: %s (T %d, parts %d)", !speed ? "speed is NULL" : !bounds ? "bounds is NULL"
                     : !secs ? "secs is NULL" : "parts not in 1..T <= 64", T, parts);
        return;
    }
    double rate[PG_MAX_THREADS], rate_sum = 0, longest = 0;
    for (int t = 0; t < parts; t++) {
        int64_t items = bounds[t + 1] - bounds[t];
        if (items <= 0 || !(secs[t] > 0))
            return;
        rate[t] = (double)items / secs[t];
        rate_sum += rate[t];
        longest = secs[t] > longest ? secs[t] : longest;
    }
    if (longest < SPEED_MIN_SECONDS)
        return;
    double step = SPEED_STEP * (longest < SPEED_FULL_SECONDS ? longest / SPEED_FULL_SECONDS : 1.0);
    double speed_sum = 0;
    for (int t = 0; t < parts; t++)
        speed_sum += speed[t];
    for (int t = 0; t < parts; t++) {
        double seen = rate[t] / rate_sum * speed_sum; /* on the estimates' scale */
        speed[t] += step * (seen - speed[t]);
    }
    double mean = 0;
    for (int t = 0; t < T; t++)
        mean += speed[t] / T;
    for (int t = 0; t < T; t++) /* mean 1, each within SPEED_CLAMP of it */
        speed[t] = fmax(1 / SPEED_CLAMP, fmin(SPEED_CLAMP, speed[t] / mean));
}

int pg_parallel_weights(int parts, double *weight, pg_slice_fn fn, int64_t extent)
{
    if (!weight) {
        pg_set_error("pg_parallel_weights: weight is NULL");
        return -1;
    }
    int T = pg_num_threads();
    parts = parts < 1 ? 1 : parts > T ? T : parts;
    pthread_mutex_lock(&S.mu);
    const double *s = S.mode == PG_BALANCE_FIXED ? speeds_for(T) : site_speeds(fn, extent, T, false);
    for (int t = 0; t < parts; t++) /* measured: in steps of SPEED_QUANTUM, 1 within +-QUANTUM / 2 */
        weight[t] = S.mode == PG_BALANCE_EVEN       ? 1.0
                    : S.mode == PG_BALANCE_MEASURED ? SPEED_QUANTUM * round(s[t] / SPEED_QUANTUM)
                                                    : s[t];
    pthread_mutex_unlock(&S.mu);
    return parts;
}

/* the thread count, or 0 with an error naming fn when parts is not in 1..it */
static int threads_for(const char *fn, int parts)
{
    int T = pg_num_threads();
    if (parts >= 1 && parts <= T)
        return T;
    pg_set_error("%s: %d slices for %d threads", fn, parts, T);
    return 0;
}

/* pg_parallel_learn with its arguments checked */
static void learn(pg_slice_fn fn, int T, int parts, const int64_t *bounds, const double *secs)
{
    pthread_mutex_lock(&S.mu);
    if (S.mode != PG_BALANCE_FIXED) { /* even slices measure as well */
        double *pool_wide = speeds_for(T);
        pg_speeds_update(pool_wide, T, parts, bounds, secs);
        double *own = site_speeds(fn, bounds[parts], T, true);
        if (own != pool_wide)
            pg_speeds_update(own, T, parts, bounds, secs);
    }
    pthread_mutex_unlock(&S.mu);
}

void pg_parallel_learn(pg_slice_fn fn, int parts, const int64_t *bounds, const double *secs)
{
    if (!bounds || !secs) {
        pg_set_error("pg_parallel_learn: %s is NULL", bounds ? "secs" : "bounds");
        return;
    }
    int T = threads_for("pg_parallel_learn", parts);
    if (T)
        learn(fn, T, parts, bounds, secs);
}

void pg_parallel_slices_at(int parts, const int64_t *bounds, pg_slice_fn fn, void *ctx)
{
    if (!fn || !bounds) {
        pg_set_error("pg_parallel_slices_at: %s is NULL", fn ? "bounds" : "fn");
        return;
    }
    int T = threads_for("pg_parallel_slices_at", parts);
    if (!T)
        return;
    for (int t = 0; t < parts; t++)
        if (bounds[t] < 0 || bounds[t] > bounds[t + 1]) {
            pg_set_error("pg_parallel_slices_at: bounds[%d..%d] = %lld, %lld: not 0 <= ascending", t, t + 1,
                         (long long)bounds[t], (long long)bounds[t + 1]);
            return;
        }
    slices_job j = {.fn = fn, .ctx = ctx, .bounds = bounds};
    if (parts == 1) {
        if (bounds[0] < bounds[1])
            fn(ctx, bounds[0], bounds[1], 0);
        return;
    }
    pg_parallel_for(parts, slice_task, &j);
    if (!atomic_load(&j.serial))
        learn(fn, T, parts, bounds, j.secs);
}

/* What pg_parallel_slices and pg_parallel_chunks start with: 0 (nothing to run) for an empty
 * extent, or for fn NULL with an error naming `who`; else the parts (at most one a unit of
 * *unit, which a value below 1 makes 1) and their weights */
static int sized_parts(const char *who, int64_t extent, int64_t *unit, int parts, pg_slice_fn fn, double *weight)
{
    if (!fn) {
        pg_set_error("%s: fn is NULL", who);
        return 0;
    }
    if (extent <= 0)
        return 0;
    *unit = *unit > 0 ? *unit : 1;
    int64_t units = (extent + *unit - 1) / *unit;
    return pg_parallel_weights(parts > units ? (int)units : parts, weight, fn, extent);
}

void pg_parallel_slices(int64_t extent, int64_t unit, int parts, pg_slice_fn fn, void *ctx)
{
    double weight[PG_MAX_THREADS];
    parts = sized_parts("pg_parallel_slices", extent, &unit, parts, fn, weight);
    if (parts == 0)
        return;
    int64_t bounds[PG_MAX_THREADS + 1];
    pg_split_bounds(extent, unit, parts, weight, bounds);
    pg_parallel_slices_at(parts, bounds, fn, ctx);
}

/* ---- chunks: sized slices whose ends are shared ----------------------------------------
 *
 * Sized slices end together only as far as the estimates foresee the job: when one core
 * slows down during it, the other waits at the end (in a 2-thread training step 3-10% of
 * the time, most of it in short jobs). pg_parallel_chunks starts from the same slices, but
 * each thread runs its own in chunks, every chunk half of what is left of it (at least a
 * unit), and a thread whose slice is done takes half of what is left of the slice with the
 * most left, from its end. The threads then end within about a unit of each other. */

typedef struct chunks_job {
    pg_slice_fn fn;
    void *ctx;
    int64_t unit, extent;
    int parts;
    _Atomic uint64_t left[PG_MAX_THREADS]; /* slice t's units not yet taken: first << 32 | end */
    int64_t items[PG_MAX_THREADS];         /* what task t ran, and for how long */
    double secs[PG_MAX_THREADS];
    _Atomic bool serial; /* a task ran on another thread than its own: nothing to learn */
} chunks_job;

/* Takes half (rounded up) of what is left of *left, from its front (the owner) or its end
 * (another thread): units [*u0, *u1). False when nothing is left. */
static bool take_half(_Atomic uint64_t *left, bool front, int64_t *u0, int64_t *u1)
{
    uint64_t was = atomic_load_explicit(left, memory_order_relaxed);
    for (;;) {
        uint32_t first = (uint32_t)(was >> 32), end = (uint32_t)was, half = (end - first + 1) / 2;
        if (first >= end)
            return false;
        uint64_t now = front ? (uint64_t)(first + half) << 32 | end : (uint64_t)first << 32 | (end - half);
        if (atomic_compare_exchange_weak_explicit(left, &was, now, memory_order_relaxed, memory_order_relaxed)) {
            *u0 = front ? first : end - half;
            *u1 = front ? first + half : end;
            return true;
        }
    }
}

/* the slice with the most units left (-1: none) */
static int most_left(chunks_job *j)
{
    int best = -1;
    uint32_t most = 0;
    for (int t = 0; t < j->parts; t++) {
        uint64_t v = atomic_load_explicit(&j->left[t], memory_order_relaxed);
        uint32_t first = (uint32_t)(v >> 32), end = (uint32_t)v, n = end > first ? end - first : 0;
        if (n > most)
            most = n, best = t;
    }
    return best;
}

/* task i: its own slice's chunks from the front, then others' from their ends */
static void chunk_task(void *ctx, int64_t i, int thread)
{
    chunks_job *j = ctx;
    if (thread != i)
        atomic_store_explicit(&j->serial, true, memory_order_relaxed);
    const double t0 = seconds_now();
    int64_t items = 0, u0, u1;
    for (int from = (int)i; from >= 0; from = most_left(j))
        while (take_half(&j->left[from], from == i, &u0, &u1)) {
            int64_t b = u0 * j->unit, e = u1 * j->unit < j->extent ? u1 * j->unit : j->extent;
            j->fn(j->ctx, b, e, (int)i);
            items += e - b;
        }
    j->items[i] = items;
    j->secs[i] = seconds_now() - t0;
}

void pg_parallel_chunks(int64_t extent, int64_t unit, int parts, pg_slice_fn fn, void *ctx)
{
    double weight[PG_MAX_THREADS];
    parts = sized_parts("pg_parallel_chunks", extent, &unit, parts, fn, weight);
    if (parts == 0)
        return;
    const int64_t units = (extent + unit - 1) / unit;
    if (units > UINT32_MAX / 2) { /* too many to count in 32 bits: fixed slices */
        pg_parallel_slices(extent, unit, parts, fn, ctx);
        return;
    }
    if (parts == 1) {
        fn(ctx, 0, extent, 0);
        return;
    }
    int64_t bounds[PG_MAX_THREADS + 1];
    pg_split_bounds(units, 1, parts, weight, bounds);
    chunks_job j = {.fn = fn, .ctx = ctx, .unit = unit, .extent = extent, .parts = parts};
    for (int t = 0; t < parts; t++)
        atomic_init(&j.left[t], (uint64_t)bounds[t] << 32 | (uint64_t)bounds[t + 1]);
    pg_parallel_for(parts, chunk_task, &j);
    if (atomic_load(&j.serial))
        return;
    int64_t done[PG_MAX_THREADS + 1] = {0}; /* what each task ran, as bounds of slices that size */
    for (int t = 0; t < parts; t++)
        done[t + 1] = done[t] + j.items[t];
    learn(fn, pg_num_threads(), parts, done, j.secs);
}

typedef struct range_job {
    void (*fn)(void *ctx, int64_t begin, int64_t end);
    void *ctx;
} range_job;

static void range_slice(void *ctx, int64_t begin, int64_t end, int slice)
{
    (void)slice;
    const range_job *j = ctx;
    j->fn(j->ctx, begin, end);
}

int64_t pg_parallel_tasks(int64_t work, int64_t grain)
{
    if (grain > 0 && work < 2 * grain) /* one task: no need to ask the pool */
        return 1;
    int64_t T = pg_num_threads(), most = grain > 0 ? work / grain : work;
    T = T < most ? T : most;
    return T < 1 ? 1 : T;
}

void pg_parallel_range(int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx)
{
    if (!fn) {
        pg_set_error("pg_parallel_range: fn is NULL");
        return;
    }
    if (n <= 0)
        return;
    int64_t T = pg_parallel_tasks(n, grain);
    if (T <= 1) {
        fn(ctx, 0, n);
        return;
    }
    range_job j = {fn, ctx};
    pg_parallel_chunks(n, n >= 16 * T ? 16 : 1, (int)T, range_slice, &j); /* few items: each a big one */
}
