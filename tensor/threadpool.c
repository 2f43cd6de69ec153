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
 * (SPIN polls of an atomic, a few tens of microseconds) and only then block:
 * back-to-back jobs, as in a training step, never sleep. Sleeping and waking
 * happen under the mutex, so no wake-up is lost. */
#include "threadpool.h"

#include "tensor.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN 4000

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

/* The generation after `seen` (or `seen` itself once stopping): spin, then sleep. */
static uint64_t next_job(uint64_t seen)
{
    uint64_t g = seen;
    for (int s = 0; s < SPIN && g == seen && !atomic_load(&P.stop); s++) {
        cpu_relax();
        g = atomic_load_explicit(&P.generation, memory_order_acquire);
    }
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
    for (int s = 0; s < SPIN && atomic_load(&P.pending) > 0; s++)
        cpu_relax();
    pthread_mutex_lock(&P.mu);
    while (atomic_load(&P.pending) > 0)
        pthread_cond_wait(&P.done, &P.mu);
    P.busy = false;
    pthread_mutex_unlock(&P.mu);
}

typedef struct range_job {
    void (*fn)(void *ctx, int64_t begin, int64_t end);
    void *ctx;
    int64_t n, slice;
} range_job;

static void range_task(void *ctx, int64_t i, int thread)
{
    (void)thread;
    const range_job *j = ctx;
    int64_t begin = i * j->slice, end = begin + j->slice < j->n ? begin + j->slice : j->n;
    if (begin < end)
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
    int64_t slice = (n + T - 1) / T;
    slice = (slice + 15) / 16 * 16;
    range_job j = {fn, ctx, n, slice};
    pg_parallel_for((n + slice - 1) / slice, range_task, &j);
}
