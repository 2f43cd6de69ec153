/* One process that runs the suites one test after another, for memcheck (`make valgrind`).
 *
 *   memcheck_tests [--skip FILE] [--shard K/N] [--filter GLOB]... [--list] [--verbose]
 *
 * The test files are built against tests/memcheck/criterion/criterion.h, which registers
 * each Test() here. Tests run sorted by suite/name; --skip FILE leaves out the tests its
 * lines match (fnmatch globs on "suite/name", '#' comments; a line that matches no test is
 * an error, so the file cannot go stale); --shard K/N runs every N-th of the rest from the
 * K-th (0 <= K < N), so that N valgrinds share the suites. Each test starts as Criterion's
 * would in a fresh process: the thread pool at its default size, no error message pending,
 * the resource limits and signal dispositions the runner began with (tests lower
 * RLIMIT_AS or RLIMIT_FSIZE and install crash handlers, counting on their process ending).
 * Under valgrind the runner asks memcheck after every test for its error count and a leak
 * search of what the test added: a test that raised either fails by name, with memcheck's
 * report above it. Exit status 0 when every test passed, 1 otherwise, 2 on a bad argument. */
#define _DEFAULT_SOURCE /* fnmatch */
#include <criterion/criterion.h>

#include <fnmatch.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "posgrad.h"

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define MC_HAVE_VALGRIND 1
#endif
#endif
#ifndef MC_HAVE_VALGRIND
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_COUNT_ERRORS 0u
#define VALGRIND_DO_ADDED_LEAK_CHECK
#define VALGRIND_COUNT_LEAKS(leaked, dubious, reachable, suppressed) ((leaked) = 0, (void)(dubious), (void)(reachable))
#endif

/* ---- the registry: Test() adds itself before main ------------------------------------------------- */
static const char *PROGRAM = "memcheck_tests"; /* argv[0]'s last part, in messages */
static const mc_test **TESTS;
static size_t N_TESTS, CAP_TESTS;

void mc_register(const mc_test *t)
{
    if (N_TESTS == CAP_TESTS) {
        size_t cap = CAP_TESTS ? 2 * CAP_TESTS : 256;
        const mc_test **grown = realloc(TESTS, cap * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "%s: out of memory registering %s/%s\n", PROGRAM, t->suite, t->name);
            exit(2);
        }
        TESTS = grown, CAP_TESTS = cap;
    }
    TESTS[N_TESTS++] = t;
}

/* ---- the running test: its checks end it by longjmp -------------------------------------------------- */
enum { MC_PASSED, MC_FAILED, MC_SKIPPED };
static jmp_buf TEST_EXIT;
static pthread_t RUNNER;
static const mc_test *CURRENT;
static int OUTCOME;

/* "[TAG] suite/name: " on stderr, after what the test printed */
static void begin_line(const char *tag, const mc_test *t)
{
    fflush(stdout);
    fprintf(stderr, "[%s] %s/%s: ", tag, t->suite, t->name);
}

/* "[TAG] suite/name: message" */
static void say(const char *tag, const char *fmt, va_list ap)
{
    begin_line(tag, CURRENT);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void mc_check(bool ok, bool fatal, const char *file, int line, const char *what, const char *fmt, ...)
{
    if (ok)
        return;
    OUTCOME = MC_FAILED;
    begin_line("FAIL", CURRENT);
    fprintf(stderr, "%s:%d: %s is false%s", file, line, what, *fmt ? ": " : "");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    /* a check on another thread (a pool worker) marks the test failed but cannot end it */
    if (fatal && pthread_equal(pthread_self(), RUNNER))
        longjmp(TEST_EXIT, 1);
}

void mc_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say("SKIP", fmt, ap);
    va_end(ap);
    OUTCOME = MC_SKIPPED;
    longjmp(TEST_EXIT, 1);
}

void mc_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say("LOG ", fmt, ap);
    va_end(ap);
}

/* Criterion's cr_assert_float_eq: expected - eps <= actual <= expected + eps (NaN fails) */
bool mc_float_eq(double actual, double expected, double eps)
{
    return expected - eps <= actual && actual <= expected + eps;
}

bool mc_str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

bool mc_str_neq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) != 0;
}

bool mc_arr_eq(const void *a, const void *b, size_t size)
{
    return a && b && memcmp(a, b, size) == 0;
}

/* ---- one test ---------------------------------------------------------------------------------------- */
static unsigned long leaked_bytes(void)
{
    unsigned long leaked = 0, dubious = 0, reachable = 0, suppressed = 0;
    VALGRIND_DO_ADDED_LEAK_CHECK;
    VALGRIND_COUNT_LEAKS(leaked, dubious, reachable, suppressed);
    (void)dubious, (void)reachable, (void)suppressed;
    return leaked;
}

/* init, body, fini; a fatal check or a skip returns here by longjmp (no locals of the
 * caller live across it) */
static void run_body(const mc_test *t)
{
    volatile bool inited = false;
    if (setjmp(TEST_EXIT) == 0) {
        if (t->init)
            t->init();
        inited = true;
        t->body();
    }
    if (inited && t->fini && setjmp(TEST_EXIT) == 0)
        t->fini();
}

/* what a test may change that its own process would have taken with it */
static const int LIMITS[] = {RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_DATA};
static const int SIGNALS[] = {SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGILL, SIGXFSZ, SIGPIPE};
enum { N_LIMITS = sizeof LIMITS / sizeof *LIMITS, N_SIGNALS = sizeof SIGNALS / sizeof *SIGNALS };
typedef struct process_state {
    struct rlimit limits[N_LIMITS];
    struct sigaction actions[N_SIGNALS];
    int threads; /* the pool's default size */
} process_state;

static void save_state(process_state *s)
{
    s->threads = pg_num_threads();
    for (int i = 0; i < N_LIMITS; i++)
        getrlimit(LIMITS[i], &s->limits[i]);
    for (int i = 0; i < N_SIGNALS; i++)
        sigaction(SIGNALS[i], NULL, &s->actions[i]);
}

static void restore_state(const process_state *s)
{
    for (int i = 0; i < N_LIMITS; i++)
        setrlimit(LIMITS[i], &s->limits[i]);
    for (int i = 0; i < N_SIGNALS; i++)
        sigaction(SIGNALS[i], &s->actions[i], NULL);
}

/* runs t as a fresh process would start it; its outcome, memcheck's findings included.
 * *leaks: the definitely and indirectly lost bytes before it, updated */
static int run_one(const mc_test *t, const process_state *start, bool verbose, unsigned long *leaks)
{
    if (verbose)
        fprintf(stderr, "[RUN ] %s/%s\n", t->suite, t->name);
    restore_state(start);
    if (pg_num_threads() != start->threads) /* the default pool, as in a new process */
        pg_set_num_threads(start->threads);
    pg_clear_error();
    const unsigned errors = VALGRIND_COUNT_ERRORS;
    CURRENT = t;
    OUTCOME = MC_PASSED;
    run_body(t);
    fflush(stdout); /* the test's output before memcheck's report of it */
    const unsigned long after = RUNNING_ON_VALGRIND ? leaked_bytes() : 0;
    const bool leaked = after > *leaks;
    *leaks = after;
    if (VALGRIND_COUNT_ERRORS != errors || leaked) {
        begin_line("FAIL", t);
        fputs("memcheck reported errors or leaks (above)\n", stderr);
        OUTCOME = MC_FAILED;
    }
    return OUTCOME;
}

/* ---- choosing the tests ------------------------------------------------------------------------------ */
static int by_name(const void *a, const void *b)
{
    const mc_test *x = *(const mc_test *const *)a, *y = *(const mc_test *const *)b;
    int c = strcmp(x->suite, y->suite);
    return c ? c : strcmp(x->name, y->name);
}

static bool name_matches(const char *glob, const mc_test *t)
{
    char name[512];
    snprintf(name, sizeof name, "%s/%s", t->suite, t->name);
    return fnmatch(glob, name, 0) == 0;
}

/* marks skip[i] for the tests FILE's patterns match; false (said) on a bad or stale file */
static bool read_skips(const char *path, bool *skip)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: --skip %s: cannot open it\n", PROGRAM, path);
        return false;
    }
    char line[512];
    bool ok = true;
    for (int no = 1; fgets(line, sizeof line, f); no++) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        bool hit = false;
        for (size_t i = 0; i < N_TESTS; i++)
            if (name_matches(line, TESTS[i]))
                skip[i] = hit = true;
        if (!hit) {
            fprintf(stderr, "%s: %s:%d: '%s' matches no test\n", PROGRAM, path, no, line);
            ok = false;
        }
    }
    fclose(f);
    return ok;
}

enum { MAX_FILTERS = 64 };
typedef struct options {
    const char *skip_file, *filters[MAX_FILTERS]; /* a test runs if it matches any (or there are none) */
    int n_filters;
    long shard, shards;
    bool list, verbose;
} options;

static bool parse_shard(const char *s, options *o)
{
    char *end;
    o->shard = strtol(s, &end, 10);
    if (end == s || *end != '/')
        return false;
    const char *rest = end + 1;
    o->shards = strtol(rest, &end, 10);
    return end != rest && *end == '\0' && o->shards >= 1 && o->shard >= 0 && o->shard < o->shards;
}

static bool parse_args(int argc, char **argv, options *o)
{
    *o = (options){.shards = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--list"))
            o->list = true;
        else if (!strcmp(a, "--verbose"))
            o->verbose = true;
        else if (!strcmp(a, "--skip") && next)
            o->skip_file = argv[++i];
        else if (!strcmp(a, "--filter") && next && o->n_filters == MAX_FILTERS) {
            fprintf(stderr, "%s: more than %d --filter patterns\n", PROGRAM, MAX_FILTERS);
            return false;
        } else if (!strcmp(a, "--filter") && next)
            o->filters[o->n_filters++] = argv[++i];
        else if (!strcmp(a, "--shard") && next) {
            if (!parse_shard(argv[++i], o)) {
                fprintf(stderr, "%s: --shard '%s': want K/N with 0 <= K < N\n", PROGRAM, argv[i]);
                return false;
            }
        } else {
            fprintf(stderr, "%s: unknown or incomplete argument '%s'\n"
                            "usage: %s [--skip FILE] [--shard K/N] [--filter GLOB]... [--list] [--verbose]\n",
                    PROGRAM, a, argv[0]);
            return false;
        }
    }
    return true;
}

static bool chosen_by_filters(const options *o, const mc_test *t)
{
    for (int f = 0; f < o->n_filters; f++)
        if (name_matches(o->filters[f], t))
            return true;
    return o->n_filters == 0;
}

int main(int argc, char **argv)
{
    if (argc > 0 && argv[0][0])
        PROGRAM = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    options o;
    if (!parse_args(argc, argv, &o))
        return 2;
    qsort(TESTS, N_TESTS, sizeof *TESTS, by_name);
    bool *skip = calloc(N_TESTS ? N_TESTS : 1, sizeof *skip);
    if (!skip || (o.skip_file && !read_skips(o.skip_file, skip))) {
        free(skip), free(TESTS);
        return 2;
    }
    RUNNER = pthread_self();
    process_state start;
    save_state(&start);
    unsigned long leaks = RUNNING_ON_VALGRIND && !o.list ? leaked_bytes() : 0; /* the baseline */
    size_t chosen = 0, counts[3] = {0};
    for (size_t i = 0; i < N_TESTS; i++) {
        if (skip[i] || !chosen_by_filters(&o, TESTS[i]))
            continue;
        if (chosen++ % (size_t)o.shards != (size_t)o.shard)
            continue;
        if (o.list)
            printf("%s/%s\n", TESTS[i]->suite, TESTS[i]->name);
        else
            counts[run_one(TESTS[i], &start, o.verbose, &leaks)]++;
    }
    free(skip), free(TESTS);
    if (o.list)
        return 0;
    fprintf(stderr, "%s (shard %ld/%ld): %zu passed, %zu failed, %zu skipped\n", PROGRAM, o.shard, o.shards,
            counts[MC_PASSED], counts[MC_FAILED], counts[MC_SKIPPED]);
    return counts[MC_FAILED] ? 1 : 0;
}
