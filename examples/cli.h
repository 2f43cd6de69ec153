/* Command-line flags for the small examples (tiny_lm, fit_line, extrapolate,
 * bias_lab, gradcheck_custom_op): one table of flags, each with its type, where
 * its value goes, a line of help and the values it accepts.
 *
 *   cli_flag flags[] = {
 *       {"steps", CLI_INT, &o.steps, "optimizer steps", .min = 1, .max = 1e6},
 *       {"lr", CLI_DOUBLE, &o.lr, "learning rate", .min = 0, .max = 10, .above_min = true},
 *       {"out", CLI_STR, &o.out, .help = "where the checkpoint goes"},
 *       {"quiet", CLI_SWITCH, &o.quiet, .help = "only the summary"},
 *   };
 *   int p = cli_parse("tiny_lm", argc, argv, flags, 4, SUMMARY);
 *   if (p != CLI_RUN)
 *       return p == CLI_HELP ? 0 : CLI_EXIT_USAGE;
 *
 * (A flag without a range names .help, so that -Wextra sees a designated
 * initializer and does not ask for min and max.)
 *
 * The rules, the same in every example:
 * - "--name value" and "--name=value"; a switch takes no value; a later
 *   occurrence of a flag replaces an earlier one;
 * - --help (or -h) prints the usage to stdout: the caller exits with status 0;
 * - an unknown flag, a stray argument, a missing value, a value that is not a
 *   number of the flag's kind or outside its range: one line on stderr that
 *   names the flag, the value and what is accepted, and the caller exits with
 *   status 2 (CLI_EXIT_USAGE), before doing any work. A value that begins with
 *   "--" is taken as the next flag, not as a value (write --name=--x for that).
 * Exit status 1 (CLI_EXIT_FAIL) is left for failures while running.
 *
 * Static inline, like lm_common.h, so that an example (or a test that includes
 * one) pays only for what it uses. */
#ifndef PG_EXAMPLES_CLI_H
#define PG_EXAMPLES_CLI_H

#include "../posgrad.h" /* relative to this file: also found when a test includes it */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };
enum { CLI_RUN = 0, CLI_HELP = 1, CLI_ERROR = -1 }; /* what cli_parse returns */

typedef enum {
    CLI_INT,    /* int *: an integer in [min, max] */
    CLI_U64,    /* uint64_t *: 0 .. 2^64 - 1 (seeds) */
    CLI_DOUBLE, /* double *: a finite number in [min, max] ((min, max] with above_min) */
    CLI_STR,    /* const char **: any text (the caller checks what it means) */
    CLI_SWITCH, /* bool *: set to true, no value */
} cli_type;

typedef struct cli_flag {
    const char *name; /* without the leading "--" */
    cli_type type;
    void *dst;
    const char *help;
    double min, max;  /* CLI_INT, CLI_DOUBLE: the accepted range (every numeric flag states one;
                         max may be INFINITY for a number) */
    bool above_min;   /* CLI_DOUBLE: min itself is not accepted */
} cli_flag;

/* What f accepts, as a phrase: "an integer in 1..1000", "a number > 0 and <= 10". */
static inline const char *cli_accepts(const cli_flag *f, char *buf, size_t n)
{
    switch (f->type) {
    case CLI_INT:
        snprintf(buf, n, "an integer in %.0f..%.0f", f->min, f->max);
        break;
    case CLI_U64:
        snprintf(buf, n, "an integer in 0..%" PRIu64, UINT64_MAX);
        break;
    case CLI_DOUBLE:
        if (isinf(f->max))
            snprintf(buf, n, "a number %s %g", f->above_min ? ">" : ">=", f->min);
        else if (f->above_min)
            snprintf(buf, n, "a number > %g and <= %g", f->min, f->max);
        else
            snprintf(buf, n, "a number in %g..%g", f->min, f->max);
        break;
    default:
        snprintf(buf, n, "a value");
    }
    return buf;
}

static inline void cli_usage(FILE *out, const char *prog, const char *summary, const cli_flag *flags, int n)
{
    fprintf(out, "usage: %s [flags]\n%s\n\nflags:\n", prog, summary);
    for (int i = 0; i < n; i++) {
        const cli_flag *f = &flags[i];
        static const char *const META[] = {" N", " N", " X", " S", ""};
        char left[64];
        snprintf(left, sizeof left, "--%s%s", f->name, META[f->type]);
        fprintf(out, "  %-20s %s", left, f->help);
        if (f->type == CLI_INT)
            fprintf(out, " (default %d)", *(const int *)f->dst);
        else if (f->type == CLI_U64)
            fprintf(out, " (default %" PRIu64 ")", *(const uint64_t *)f->dst);
        else if (f->type == CLI_DOUBLE)
            fprintf(out, " (default %g)", *(const double *)f->dst);
        else if (f->type == CLI_STR && *(const char *const *)f->dst && **(const char *const *)f->dst)
            fprintf(out, " (default %s)", *(const char *const *)f->dst);
        fputc('\n', out);
    }
    fprintf(out, "  %-20s %s\n", "--help", "this list");
}

/* Stores value in f's destination. 0, or -1 after one line on stderr. */
static inline int cli_set(const char *prog, const cli_flag *f, const char *value)
{
    char *end = NULL, what[96];
    bool ok = false;
    errno = 0;
    if (f->type == CLI_STR) {
        *(const char **)f->dst = value;
        return 0;
    }
    if (f->type == CLI_INT) {
        long v = strtol(value, &end, 10);
        ok = errno == 0 && end != value && *end == '\0' && v >= f->min && v <= f->max;
        if (ok)
            *(int *)f->dst = (int)v;
    } else if (f->type == CLI_U64) {
        unsigned long long v = strtoull(value, &end, 10);
        ok = errno == 0 && end != value && *end == '\0' && value[strspn(value, " \t")] != '-';
        if (ok)
            *(uint64_t *)f->dst = (uint64_t)v;
    } else if (f->type == CLI_DOUBLE) {
        double v = strtod(value, &end);
        ok = errno == 0 && end != value && *end == '\0' && isfinite(v) && (f->above_min ? v > f->min : v >= f->min) &&
             v <= f->max;
        if (ok)
            *(double *)f->dst = v;
    }
    if (!ok)
        fprintf(stderr, "%s: --%s wants %s, got '%s'\n", prog, f->name, cli_accepts(f, what, sizeof what), value);
    return ok ? 0 : -1;
}

/* The same ranges for options set in code rather than parsed (the smoke tests
 * fill an example's options struct and call its run function): every numeric
 * flag's current value is checked. 0, or -1 after one line on stderr. */
static inline int cli_check(const char *prog, const cli_flag *flags, int n)
{
    for (int i = 0; i < n; i++) {
        const cli_flag *f = &flags[i];
        char what[96], got[64];
        bool ok = true;
        if (f->type == CLI_INT) {
            int v = *(const int *)f->dst;
            ok = v >= f->min && v <= f->max;
            snprintf(got, sizeof got, "%d", v);
        } else if (f->type == CLI_DOUBLE) {
            double v = *(const double *)f->dst;
            ok = isfinite(v) && (f->above_min ? v > f->min : v >= f->min) && v <= f->max;
            snprintf(got, sizeof got, "%g", v);
        }
        if (!ok) {
            fprintf(stderr, "%s: --%s wants %s, got %s\n", prog, f->name, cli_accepts(f, what, sizeof what), got);
            return -1;
        }
    }
    return 0;
}

/* Parses argv[1..argc) into the flags' destinations (prog names the program in
 * messages and the usage). CLI_RUN: parsed; CLI_HELP: the usage went to stdout;
 * CLI_ERROR: one line went to stderr. */
static inline int cli_parse(const char *prog, int argc, char **argv, const cli_flag *flags, int n,
                            const char *summary)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_usage(stdout, prog, summary, flags, n);
            return CLI_HELP;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            fprintf(stderr, "%s: unexpected argument '%s': every argument is a flag (%s --help lists them)\n", prog,
                    a, prog);
            return CLI_ERROR;
        }
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        const cli_flag *f = NULL;
        for (int j = 0; j < n && !f; j++)
            if (strlen(flags[j].name) == len && !strncmp(flags[j].name, a + 2, len))
                f = &flags[j];
        if (!f) {
            fprintf(stderr, "%s: unknown flag '%.*s' (%s --help lists the flags)\n", prog, (int)len + 2, a, prog);
            return CLI_ERROR;
        }
        if (f->type == CLI_SWITCH) {
            if (eq) {
                fprintf(stderr, "%s: --%s takes no value, got '%s'\n", prog, f->name, a);
                return CLI_ERROR;
            }
            *(bool *)f->dst = true;
            continue;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            value = argv[++i];
        if (!value) {
            char what[96];
            if (f->type == CLI_STR)
                fprintf(stderr, "%s: --%s needs a value\n", prog, f->name);
            else
                fprintf(stderr, "%s: --%s needs a value: %s\n", prog, f->name, cli_accepts(f, what, sizeof what));
            return CLI_ERROR;
        }
        if (cli_set(prog, f, value) != 0)
            return CLI_ERROR;
    }
    return CLI_RUN;
}

/* The thread count of a --threads flag (0: PG_NUM_THREADS or the cores) through
 * pg_threads_init (tensor/threadpool.h), which applies the same rule to both.
 * CLI_EXIT_OK, or CLI_EXIT_USAGE after one line on stderr (e.g. PG_NUM_THREADS=1000). */
static inline int cli_threads(const char *prog, int threads)
{
    if (pg_threads_init(threads) == 0)
        return CLI_EXIT_OK;
    fprintf(stderr, "%s: %s\n", prog, pg_last_error());
    return CLI_EXIT_USAGE;
}

#endif
