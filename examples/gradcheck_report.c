/* gradcheck_report (`make gradcheck`): one table of float64 finite-difference
 * gradchecks over everything that differentiates: every op of autograd/ops.h
 * (examples/gradcheck_report_ops.h), every registered positional scheme with its
 * main options, MultiheadAttention on the reference and the fused path,
 * LocalAttention, a TransformerBlock and a small LM (examples/gradcheck_report_nn.h).
 *
 *   what  elements  worst abs err  time (ms)  result  kinks
 *
 * then a summary line. --markdown prints the same rows as a Markdown table without the
 * time column (what docs/ops.md and the scheme pages embed: tests/gen_docs_gradcheck.sh).
 * Exit status 0 when every row passes, 1 otherwise, 2 for a
 * bad command line (or a --filter that matches no row). docs/autograd.md
 * "The report: make gradcheck". */
#include "../posgrad.h" /* relative to this file: also found when a test includes it */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The run: options, then what has been seen. A first pass with count_only counts
 * the rows the filter keeps (none: a usage error before any work). */
typedef struct gc_report {
    const char *filter;
    bool fast, count_only, markdown;
    int matched, rows, failed;
    FILE *out;
} gc_report;

static double gc_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Whether the row `what` runs now (the filter keeps it and this is not the counting pass). */
static bool gc_want(gc_report *r, const char *what)
{
    if (r->filter && !strstr(what, r->filter))
        return false;
    if (r->count_only) {
        r->matched++;
        return false;
    }
    return true;
}

/* The options of every check: float64 only, the defaults otherwise; fast when asked. */
static pg_gradcheck_opts gc_opts(const gc_report *r, bool fast)
{
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.check_f32 = false;
    o.fast = fast || r->fast;
    return o;
}

/* --markdown's header: no time column (the rows are bit-stable for a build, the times are not) */
static void gc_header_markdown(FILE *f)
{
    fprintf(f, "| what | elements | worst abs err | result | kinks |\n|---|--:|--:|---|--:|\n");
}

static void gc_header(FILE *f)
{
    fprintf(f, "%-34s %9s %13s %10s  %-6s %5s\n", "what", "elements", "worst abs err", "time (ms)", "result",
            "kinks");
}

/* One row of the table; a failure's message follows on stderr. */
static void gc_row(gc_report *r, const char *what, const pg_gradcheck_result *res, double ms)
{
    r->rows++;
    r->failed += !res->ok;
    if (r->markdown)
        fprintf(r->out, "| %s | %d | %.2e | %s | %d |\n", what, res->checked, res->max_abs_err,
                res->ok ? "pass" : "FAIL", res->kinks);
    else
        fprintf(r->out, "%-34s %9d %13.2e %10.1f  %-6s %5d\n", what, res->checked, res->max_abs_err, ms,
                res->ok ? "pass" : "FAIL", res->kinks);
    if (!res->ok)
        fprintf(stderr, "gradcheck_report: %s: %s\n", what, res->message[0] ? res->message : pg_last_error());
}

/* A row whose setup failed before anything was checked. */
static void gc_row_setup_failed(gc_report *r, const char *what)
{
    pg_gradcheck_result res = {.ok = false, .worst_input = -1};
    snprintf(res.message, sizeof res.message, "setup failed: %s", pg_last_error());
    gc_row(r, what, &res, 0);
}

#include "gradcheck_report_ops.h"
#include "gradcheck_report_nn.h"

/* Every row, in table order. */
static void gc_run_all(gc_report *r)
{
    gc_run_ops(r);
    gc_run_pos(r);
    gc_run_modules(r);
}

/* Runs the report to out (a Markdown table with markdown); returns the exit status (0 all pass, 1 a
 * failure, 2 no row matched). */
int gradcheck_report_run_ex(const char *filter, bool fast, bool markdown, FILE *out)
{
    gc_report r = {.filter = filter, .fast = fast, .count_only = true, .markdown = markdown, .out = out};
    gc_run_all(&r);
    if (r.matched == 0) {
        fprintf(stderr, "gradcheck_report: --filter '%s' matches no row\n", filter ? filter : "");
        return CLI_EXIT_USAGE;
    }
    r.count_only = false;
    double t0 = gc_now_ms();
    if (markdown)
        gc_header_markdown(out);
    else
        gc_header(out);
    gc_run_all(&r);
    double s = (gc_now_ms() - t0) / 1e3;
    if (markdown)
        fprintf(out, "\n%d checks, %d failures%s\n", r.rows, r.failed, fast ? " (fast mode)" : "");
    else if (r.failed == 0)
        fprintf(out, "%d checks, all pass, %.1f s%s\n", r.rows, s, fast ? " (fast mode)" : "");
    else
        fprintf(out, "%d checks, %d failures, %.1f s%s\n", r.rows, r.failed, s, fast ? " (fast mode)" : "");
    return r.failed == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

int gradcheck_report_run(const char *filter, bool fast, FILE *out)
{
    return gradcheck_report_run_ex(filter, fast, false, out);
}

int gradcheck_report_main(int argc, char **argv)
{
    bool fast = false, markdown = false;
    const char *filter = NULL;
    const cli_flag flags[] = {
        {"fast", CLI_SWITCH, &fast, .help = "fast mode everywhere (one random direction per tensor)"},
        {"filter", CLI_STR, &filter, .help = "only the rows whose name contains this text"},
        {"markdown", CLI_SWITCH, &markdown, .help = "a Markdown table without the time column (for docs/)"}};
    int p = cli_parse("gradcheck_report", argc, argv, flags, 3,
                      "Float64 gradchecks of every op, positional scheme and attention module, as one table.\n"
                      "Exit status 0 when every row passes, 1 when one fails, 2 for a bad argument\n"
                      "(or a --filter that matches no row).");
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (cli_threads("gradcheck_report", 0) != 0)
        return CLI_EXIT_USAGE;
    return gradcheck_report_run_ex(filter, fast, markdown, stdout);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return gradcheck_report_main(argc, argv); }
#endif
