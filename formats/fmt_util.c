/* Helpers shared by the file formats (formats/) and the state dicts
 * (nn/state_dict.c): "fn: file: problem" messages, printable copies of
 * untrusted names, string arrays. Declared in fmt_util.h (private). */
#include "fmt_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pg_fmt_fail(const pg_fmt_ctx *c, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->where)
        pg_set_error("%s: %s: %s", c->fn, c->where, msg);
    else
        pg_set_error("%s: %s", c->fn, msg);
}

/* A printable, bounded copy of an untrusted name for messages. */
const char *pg_fmt_show(const char *name, char *buf, size_t size)
{
    size_t len = strlen(name), k = len < PG_FMT_NAME_SHOW ? len : PG_FMT_NAME_SHOW;
    while (k < len && k > 0 && ((unsigned char)name[k] & 0xC0) == 0x80)
        k--; /* do not cut a UTF-8 sequence */
    size_t j = 0;
    for (size_t i = 0; i < k && j + 4 < size; i++) {
        unsigned char ch = (unsigned char)name[i];
        buf[j++] = (ch < 0x20 || ch == 0x7F) ? '?' : (char)ch;
    }
    if (k < len && j + 4 < size) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    buf[j] = '\0';
    return buf;
}

void pg_fmt_free_strings(int n, char **a)
{
    for (int i = 0; a && i < n; i++)
        free(a[i]);
    free(a);
}

char *pg_fmt_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int pg_fmt_cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Index of a name that equals an earlier one (in sorted order), or -1; -2 when out of memory. */
int pg_fmt_find_duplicate(int n, const char *const *names)
{
    if (n < 2)
        return -1;
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted)
        return -2;
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, pg_fmt_cmp_str);
    int dup = -1;
    for (int i = 1; i < n && dup == -1; i++)
        if (!strcmp(sorted[i - 1], sorted[i]))
            for (int k = 0; k < n && dup == -1; k++)
                if (names[k] == sorted[i] || !strcmp(names[k], sorted[i]))
                    dup = k;
    free(sorted);
    return dup;
}


bool pg_fmt_names_ok(const pg_fmt_ctx *c, int n, char *const *names)
{
    for (int i = 0; i < n; i++)
        if (!names[i]) {
            pg_fmt_fail(c, "state name %d is NULL", i);
            return false;
        }
    char s[PG_FMT_NAME_SHOW + 8];
    int dup = pg_fmt_find_duplicate(n, (const char *const *)names);
    if (dup == -2)
        pg_fmt_fail(c, "out of memory");
    else if (dup >= 0)
        pg_fmt_fail(c, "state name \"%s\" appears twice", pg_fmt_show(names[dup], s, sizeof s));
    return dup == -1;
}
