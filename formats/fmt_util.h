/* Private (not installed, not in posgrad.h): helpers shared by the file
 * formats (the .c files of formats/) and the state dicts (nn/state_dict.c). */
#ifndef PG_FORMATS_FMT_UTIL_H
#define PG_FORMATS_FMT_UTIL_H

#include "../tensor/tensor.h"

/* Bytes of an untrusted name shown in messages; a buffer for pg_fmt_show
 * needs PG_FMT_NAME_SHOW + 8 bytes. */
#define PG_FMT_NAME_SHOW 64

/* The "fn: where: " prefix of every message of one call; where is the file
 * name, "<buffer>", or NULL (no second part). */
typedef struct pg_fmt_ctx {
    const char *fn;
    const char *where;
} pg_fmt_ctx;

/* pg_set_error("fn: where: <message>"); the message is cut at 400 bytes. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void pg_fmt_fail(const pg_fmt_ctx *c, const char *fmt, ...);

/* A printable, bounded copy of an untrusted name into buf (control bytes as
 * '?', cut after PG_FMT_NAME_SHOW bytes at a UTF-8 boundary, "..." marks the
 * cut); returns buf. */
const char *pg_fmt_show(const char *name, char *buf, size_t size);

/* A malloc'd copy of s, or NULL. */
char *pg_fmt_strdup(const char *s);
/* Frees the n strings of a and a itself (a may be NULL). */
void pg_fmt_free_strings(int n, char **a);

/* qsort comparison of two char * by strcmp. */
int pg_fmt_cmp_str(const void *a, const void *b);
/* Index of a name that equals an earlier one (in sorted order), or -1; -2
 * when out of memory. */
int pg_fmt_find_duplicate(int n, const char *const *names);
/* A state's n names (names non-NULL when n > 0): none NULL, none twice; else
 * false after pg_fmt_fail naming the first bad one ("state name 3 is NULL",
 * "state name \"w\" appears twice"). */
bool pg_fmt_names_ok(const pg_fmt_ctx *c, int n, char *const *names);

#endif
