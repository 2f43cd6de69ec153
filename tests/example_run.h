/* For the examples' smoke tests: run an example's main with its stdout and
 * stderr captured (to unlinked temporary files, through the file descriptors,
 * so printf and fprintf(stderr) are both caught), then look at what it printed.
 *
 *   ex_run r;
 *   EX_RUN(&r, tiny_lm_main, "tiny_lm", "--steps", "abc");
 *   cr_assert_eq(r.rc, 2);
 *   ex_assert_one_line(&r, "--steps wants an integer in 1..");
 *
 * Each Criterion test runs in its own process, so a test may also chdir or
 * setenv freely. (Included after testutil.h.) */
#ifndef PG_TESTS_EXAMPLE_RUN_H
#define PG_TESTS_EXAMPLE_RUN_H

#include <dirent.h>
#include <unistd.h>

typedef struct ex_run {
    int rc;
    char out[16384], err[16384]; /* truncated if longer */
} ex_run;

static inline void ex_read(FILE *f, char *buf, size_t n)
{
    rewind(f);
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = '\0';
    fclose(f);
}

/* argv is NULL-terminated. */
static inline void ex_capture(ex_run *r, int (*main_fn)(int, char **), char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    FILE *out = tmpfile(), *err = tmpfile();
    cr_assert(out && err, "tmpfile failed");
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    cr_assert(saved_out >= 0 && saved_err >= 0);
    dup2(fileno(out), 1);
    dup2(fileno(err), 2);
    r->rc = main_fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    ex_read(out, r->out, sizeof r->out);
    ex_read(err, r->err, sizeof r->err);
}

#define EX_RUN(r, main_fn, ...) ex_capture((r), (main_fn), (char *[]){__VA_ARGS__, NULL})

/* Lines in s (a last line without '\n' counts). */
static inline int ex_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n' || (s[1] == '\0');
    return n;
}

/* Nothing on stdout, exactly one line on stderr, and it contains each of the
 * given fragments (NULL-terminated). */
#define ex_assert_one_line(r, ...) ex_assert_one_line_((r), (const char *[]){__VA_ARGS__, NULL})
static inline void ex_assert_one_line_(const ex_run *r, const char *const *fragments)
{
    cr_assert_eq(ex_lines(r->err), 1, "want one line on stderr, got:\n%s", r->err);
    cr_assert_str_empty(r->out, "want nothing on stdout, got:\n%s", r->out);
    for (; *fragments; fragments++)
        cr_assert(strstr(r->err, *fragments), "stderr '%s' lacks '%s'", r->err, *fragments);
}

/* A bad command line: prog with flag (and value, unless NULL) exits 2 with
 * one line on stderr that contains message, and nothing on stdout. */
typedef struct ex_bad_arg {
    const char *flag, *value, *message;
} ex_bad_arg;

static inline void ex_assert_bad_args(int (*main_fn)(int, char **), const char *prog, const ex_bad_arg *cases, int n)
{
    ex_run *r = malloc(sizeof *r);
    cr_assert_not_null(r);
    for (int i = 0; i < n; i++) {
        char *argv[] = {(char *)prog, (char *)cases[i].flag, (char *)cases[i].value, NULL};
        ex_capture(r, main_fn, argv);
        cr_assert_eq(r->rc, 2, "%s %s: rc %d", cases[i].flag, cases[i].value ? cases[i].value : "", r->rc);
        ex_assert_one_line(r, cases[i].message);
    }
    free(r);
}
#define EX_ASSERT_BAD_ARGS(main_fn, prog, cases) ex_assert_bad_args((main_fn), (prog), (cases), (int)(sizeof(cases) / sizeof((cases)[0])))

/* A new temp dir (template: "/tmp/pg_<name>_XXXXXX", at most 63 chars) holding
 * corpus.txt, text repeated 12 times, and the path of out/ in it: the LM
 * examples' tests train on it. */
static inline void ex_corpus_workdir(char dir[64], const char *tmpl, const char *text, char out[128], char data[128])
{
    snprintf(dir, 64, "%s", tmpl);
    cr_assert_not_null(mkdtemp(dir));
    snprintf(out, 128, "%s/out", dir);
    snprintf(data, 128, "%s/corpus.txt", dir);
    FILE *f = fopen(data, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 12; i++)
        fputs(text, f);
    fclose(f);
}

/* Removes dir and everything under it (files and directories). */
static inline void ex_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int k = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (k > 0 && k < (int)sizeof path && unlink(path) != 0)
            ex_remove_tree(path);
    }
    closedir(d);
    rmdir(dir);
}

#endif
