/* Smoke test of examples/gradcheck_report.c (`make gradcheck`): a few rows
 * through --filter (the header, one passing row each, the summary, status 0),
 * --fast, a failing row as the table shows it, a --filter that matches nothing
 * (one line on stderr, status 2), --help, and --markdown (the table docs/ embeds:
 * tests/gen_docs_gradcheck.sh). */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/gradcheck_report.c"

#include "testutil.h"

#include "example_run.h"

/* The table's lines in r->out: header first, summary last, every row between passing. */
static void assert_table(const ex_run *r, int rows, const char *const *names, const char *summary)
{
    cr_assert_eq(r->rc, 0, "rc %d, stderr:\n%s", r->rc, r->err);
    cr_assert_str_empty(r->err);
    cr_assert_eq(ex_lines(r->out), rows + 2, "want %d rows, got:\n%s", rows, r->out);
    cr_assert(!strncmp(r->out, "what ", 5) && strstr(r->out, "elements") && strstr(r->out, "worst abs err") &&
                  strstr(r->out, "time (ms)") && strstr(r->out, "result") && strstr(r->out, "kinks"),
              "header: %s", r->out);
    for (int i = 0; names[i]; i++) {
        const char *at = strstr(r->out, names[i]);
        cr_assert(at, "no row '%s' in:\n%s", names[i], r->out);
        char line[128];
        snprintf(line, sizeof line, "%.*s", (int)strcspn(at, "\n"), at);
        cr_assert(strstr(line, " pass "), "row '%s' does not pass:\n%s", names[i], r->out);
    }
    cr_assert(strstr(r->out, summary), "summary '%s' missing:\n%s", summary, r->out);
}

Test(example_gradcheck_report, filtered_rows_pass)
{
    ex_run *r = malloc(sizeof *r);
    cr_assert_not_null(r);
    EX_RUN(r, gradcheck_report_main, "gradcheck_report", "--filter", "binary/");
    assert_table(r, 8, (const char *[]){"binary/add (2,3)+(3)", "binary/pow (2,3)^(3)", "binary/broadcast_to", NULL},
                 "8 checks, all pass");
    EX_RUN(r, gradcheck_report_main, "gradcheck_report", "--filter", "pos/kerple");
    assert_table(r, 4, (const char *[]){"pos/kerple ", "pos/kerple power", "pos/kerple nemo", "pos/kerple fused", NULL},
                 "4 checks, all pass");
    EX_RUN(r, gradcheck_report_main, "gradcheck_report", "--filter", "attn/mha");
    assert_table(r, 2, (const char *[]){"attn/mha reference", "attn/mha fused", NULL}, "2 checks, all pass");
    free(r);
}

/* --fast: the same rows in fast mode, said in the summary. */
Test(example_gradcheck_report, fast_mode)
{
    ex_run *r = malloc(sizeof *r);
    cr_assert_not_null(r);
    EX_RUN(r, gradcheck_report_main, "gradcheck_report", "--fast", "--filter", "model/");
    assert_table(r, 3, (const char *[]){"model/transformer block", "model/lm loss", "model/lm loss fast mode", NULL},
                 "3 checks, all pass");
    cr_assert(strstr(r->out, "(fast mode)"), "%s", r->out);
    free(r);
}

/* Every registered scheme has at least one row. */
Test(example_gradcheck_report, every_scheme_has_a_row)
{
    const pg_posmod_kind_info *k;
    for (int i = 0; (k = pg_posmod_info_at(i)) != NULL; i++) {
        char name[64];
        snprintf(name, sizeof name, "pos/%s", k->kind);
        gc_report rep = {.filter = name, .count_only = true};
        gc_run_all(&rep);
        cr_assert_geq(rep.matched, 1, "no row for '%s'", k->kind);
    }
}

/* A failing row reads FAIL, its message goes to stderr, the summary counts it. */
static int failing_table(int argc, char **argv)
{
    (void)argc, (void)argv;
    gc_report rep = {.out = stdout};
    pg_gradcheck_result ok = {.ok = true, .checked = 3}, bad = {.ok = false, .checked = 5, .max_abs_err = 0.25};
    snprintf(bad.message, sizeof bad.message, "planted: analytic 1, numeric 0.75");
    gc_header(stdout);
    gc_row(&rep, "planted/good", &ok, 1);
    gc_row(&rep, "planted/bad", &bad, 1);
    return rep.rows == 2 && rep.failed == 1 ? 0 : 1;
}

Test(example_gradcheck_report, a_failure_is_shown)
{
    ex_run r;
    EX_RUN(&r, failing_table, "x");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "planted/bad") && strstr(r.out, "2.50e-01") && strstr(r.out, "FAIL"), "%s", r.out);
    cr_assert(strstr(r.err, "gradcheck_report: planted/bad: planted: analytic 1, numeric 0.75"), "%s", r.err);
}

Test(example_gradcheck_report, no_match_help_and_bad_flags)
{
    ex_run r;
    EX_RUN(&r, gradcheck_report_main, "gradcheck_report", "--filter", "no such row");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "gradcheck_report: --filter 'no such row' matches no row");
    EX_RUN(&r, gradcheck_report_main, "gradcheck_report", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: gradcheck_report [flags]") && strstr(r.out, "--filter") && strstr(r.out, "--fast"),
              "%s", r.out);
    EX_RUN(&r, gradcheck_report_main, "gradcheck_report", "--nope");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "gradcheck_report: unknown flag '--nope'");
    EX_RUN(&r, gradcheck_report_main, "gradcheck_report", "--filter");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--filter needs a value");
}

/* --markdown: a Markdown table of the same rows, no time column, bit-identical from run to run (what
 * tests/gen_docs_gradcheck.sh compares with the committed blocks of docs/). */
Test(example_gradcheck_report, markdown_rows_are_stable)
{
    ex_run *r = malloc(sizeof *r), *again = malloc(sizeof *again);
    cr_assert(r && again);
    EX_RUN(r, gradcheck_report_main, "gradcheck_report", "--markdown", "--filter", "pos/cope");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(!strncmp(r->out, "| what | elements | worst abs err | result | kinks |\n|---|--:|--:|---|--:|\n", 74),
              "%s", r->out);
    cr_assert(!strstr(r->out, "time"), "no time column: %s", r->out);
    cr_assert(strstr(r->out, "\n| pos/cope | 356 | ") && strstr(r->out, "\n| pos/cope soft onehot | 356 | ") &&
                  strstr(r->out, "\n| pos/cope fused | 356 | "),
              "%s",
              r->out);
    cr_assert(strstr(r->out, " | pass | 0 |\n") && strstr(r->out, "\n5 checks, 0 failures\n"), "%s", r->out);
    EX_RUN(again, gradcheck_report_main, "gradcheck_report", "--markdown", "--filter", "pos/cope");
    cr_assert_str_eq(r->out, again->out, "the digits differ between two runs");
    free(r);
    free(again);
}
