/* Private (not installed, not in posgrad.h): the JSON pieces the safetensors
 * header needs, shared by formats/safetensors_schema.c (reading) and
 * formats/safetensors_write.c (writing).
 *
 * The reader is strict: one value (objects, arrays, strings, integers that
 * fit int64, true, false, null), then only whitespace; UTF-8 is checked,
 * \u escapes are decoded (surrogate pairs joined, \u0000 refused),
 * fractions, exponents, duplicate keys and nesting past 64 levels are
 * errors. Its messages speak of "the header", its only user. */
#ifndef PG_FORMATS_JSON_H
#define PG_FORMATS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- UTF-8 ---------------------------------------------------------------------- */
/* Decodes one UTF-8 sequence at s (n bytes available) into *cp; returns its
 * length, or 0 if it is malformed (overlong, surrogate, > U+10FFFF, cut). */
size_t pg_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* s (NUL-terminated) is well-formed UTF-8. */
bool pg_utf8_valid(const char *s);

/* ---- a growable byte buffer ------------------------------------------------------
 * Starts zeroed ({0}); p stays NUL-terminated. An allocation failure sets
 * oom and makes every later put a no-op; the owner frees p. */
typedef struct pg_json_buf {
    char *p;
    size_t n, cap;
    bool oom;
} pg_json_buf;
void pg_json_buf_put(pg_json_buf *b, const char *s, size_t n);
void pg_json_buf_str(pg_json_buf *b, const char *s);
void pg_json_buf_chr(pg_json_buf *b, char c);
void pg_json_buf_int(pg_json_buf *b, long long v); /* decimal */

/* ---- reading: a tree of values -------------------------------------------------- */
typedef enum { PG_JSON_NULL, PG_JSON_BOOL, PG_JSON_INT, PG_JSON_STR, PG_JSON_ARR, PG_JSON_OBJ } pg_json_type;

typedef struct pg_json_value {
    pg_json_type type;
    size_t pos;                  /* byte offset of the value in the text */
    int64_t num;                 /* PG_JSON_INT, PG_JSON_BOOL */
    char *str;                   /* PG_JSON_STR: NUL-terminated UTF-8 (no NUL inside) */
    int n, cap;                  /* PG_JSON_ARR, PG_JSON_OBJ: number of items */
    struct pg_json_value *items; /* PG_JSON_ARR, PG_JSON_OBJ: the values */
    char **keys;                 /* PG_JSON_OBJ: the keys, in text order */
} pg_json_value;

/* Set s and len, the rest zero: {.s = text, .len = n}. After a failure, err
 * holds the first problem and err_pos the byte offset where it was found. */
typedef struct pg_json_parser {
    const char *s;
    size_t len, pos;
    bool failed;
    size_t err_pos;
    char err[200];
} pg_json_parser;

/* The whole text as one value into *root (freed with pg_json_free). 0, or -1
 * with p->err set and *root empty. */
int pg_json_parse(pg_json_parser *p, pg_json_value *root);
/* Frees what v holds (not v itself) and zeroes it. NULL: no-op. */
void pg_json_free(pg_json_value *v);

/* ---- writing -------------------------------------------------------------------- */
/* Appends s as a JSON string as Python's json.dumps writes it (ensure_ascii):
 * ", \ and \b \f \n \r \t escaped by letter, other bytes outside 0x20..0x7E
 * and every non-ASCII code point as \uxxxx (lowercase; surrogate pairs above
 * U+FFFF). -1 if s is not valid UTF-8. */
int pg_json_put_string(pg_json_buf *b, const char *s);

#endif
