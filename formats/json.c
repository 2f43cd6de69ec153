/* A strict JSON reader and the pieces of a JSON writer, for the safetensors
 * header (formats/safetensors*.c); declared in json.h (private).
 *
 * Reading: objects, arrays, strings with escapes, integers, true/false/null
 * into a small tree (pg_json_value); UTF-8 is checked, duplicate keys,
 * fractions, exponents and nesting past JSON_MAX_DEPTH are refused, and the
 * first error is kept with its byte offset. Writing: a growable byte buffer
 * and strings escaped as Python's json.dumps does (ensure_ascii). */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt_util.h"

#define JSON_MAX_DEPTH 64 /* a safetensors header needs 3 */

/* ================================================================================ */
/* UTF-8                                                                             */
/* ================================================================================ */

/* Decodes one UTF-8 sequence at s (n bytes available) into *cp; returns its
 * length, or 0 if it is malformed (overlong, surrogate, > U+10FFFF, cut). */
size_t pg_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len;
    uint32_t c, min;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2, c = s[0] & 0x1Fu, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3, c = s[0] & 0x0Fu, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4, c = s[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3Fu);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool pg_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t k = pg_utf8_decode(p + i, n - i, &cp);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* ================================================================================ */
/* growable byte buffer                                                              */
/* ================================================================================ */

void pg_json_buf_put(pg_json_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void pg_json_buf_str(pg_json_buf *b, const char *s) { pg_json_buf_put(b, s, strlen(s)); }
void pg_json_buf_chr(pg_json_buf *b, char c) { pg_json_buf_put(b, &c, 1); }

void pg_json_buf_int(pg_json_buf *b, long long v)
{
    char tmp[32];
    pg_json_buf_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%lld", v));
}

/* ================================================================================ */
/* JSON: a strict parser into a small tree                                           */
/* ================================================================================ */

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void jfail(pg_json_parser *p, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    p->err_pos = p->pos;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
}

void pg_json_free(pg_json_value *v)
{
    if (!v)
        return;
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        pg_json_free(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static void skip_ws(pg_json_parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        p->pos++;
    }
}

static int hex4(pg_json_parser *p, uint32_t *out)
{
    if (p->len - p->pos < 4) {
        jfail(p, "truncated \\u escape");
        return -1;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t)i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) {
            jfail(p, "bad hex digit in \\u escape");
            return -1;
        }
        v = v * 16 + (uint32_t)d;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

/* After the backslash of "\uXXXX" (pos at 'u'): a code point, joining surrogate pairs. */
static int unicode_escape(pg_json_parser *p, uint32_t *cp)
{
    p->pos++; /* 'u' */
    if (hex4(p, cp) != 0)
        return -1;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
        jfail(p, "lone low surrogate in \\u escape");
        return -1;
    }
    if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        uint32_t lo;
        if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
            jfail(p, "high surrogate not followed by a \\u escape");
            return -1;
        }
        p->pos += 2;
        if (hex4(p, &lo) != 0)
            return -1;
        if (lo < 0xDC00 || lo > 0xDFFF) {
            jfail(p, "high surrogate not followed by a low surrogate");
            return -1;
        }
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (*cp == 0) {
        jfail(p, "\\u0000 in a string is not supported");
        return -1;
    }
    return 0;
}

/* One escape after a backslash (pos at the escape letter), appended to b. */
static int parse_escape(pg_json_parser *p, pg_json_buf *b)
{
    if (p->pos >= p->len) {
        jfail(p, "unterminated string");
        return -1;
    }
    char c = p->s[p->pos], out;
    switch (c) {
    case '"': out = '"'; break;
    case '\\': out = '\\'; break;
    case '/': out = '/'; break;
    case 'b': out = '\b'; break;
    case 'f': out = '\f'; break;
    case 'n': out = '\n'; break;
    case 'r': out = '\r'; break;
    case 't': out = '\t'; break;
    case 'u': {
        uint32_t cp;
        char u[4];
        if (unicode_escape(p, &cp) != 0)
            return -1;
        pg_json_buf_put(b, u, utf8_encode(cp, u));
        return 0;
    }
    default: jfail(p, "invalid escape '\\%c'", c >= 0x20 && c < 0x7F ? c : '?'); return -1;
    }
    p->pos++;
    pg_json_buf_chr(b, out);
    return 0;
}

/* A string starting at the opening quote; *out is malloc'd. */
static int parse_string(pg_json_parser *p, char **out)
{
    pg_json_buf b = {0};
    p->pos++; /* opening quote */
    pg_json_buf_put(&b, "", 0);
    for (;;) {
        if (p->pos >= p->len) {
            jfail(p, "unterminated string");
            break;
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            if (b.oom)
                jfail(p, "out of memory");
            break;
        }
        if (c == '\\') {
            p->pos++;
            if (parse_escape(p, &b) != 0)
                break;
        } else if (c < 0x20) {
            jfail(p, "control character 0x%02x in a string", c);
            break;
        } else {
            uint32_t cp;
            size_t k = pg_utf8_decode((const unsigned char *)p->s + p->pos, p->len - p->pos, &cp);
            if (!k) {
                jfail(p, "invalid UTF-8 in a string");
                break;
            }
            pg_json_buf_put(&b, p->s + p->pos, k);
            p->pos += k;
        }
    }
    if (p->failed || b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    return 0;
}

/* An integer: -?(0|[1-9][0-9]*), fitting in int64; fractions and exponents are rejected. */
static int parse_int(pg_json_parser *p, int64_t *out)
{
    bool neg = p->s[p->pos] == '-';
    if (neg)
        p->pos++;
    size_t start = p->pos;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        uint64_t d = (uint64_t)(p->s[p->pos] - '0');
        if (v > (limit - d) / 10) {
            jfail(p, "integer overflows 64 bits");
            return -1;
        }
        v = v * 10 + d;
        p->pos++;
    }
    if (p->pos == start) {
        jfail(p, "'-' without digits");
        return -1;
    }
    if (p->s[start] == '0' && p->pos - start > 1) {
        p->pos = start;
        jfail(p, "number with a leading zero");
        return -1;
    }
    if (p->pos < p->len && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        jfail(p, "non-integer number (a safetensors header holds integers only)");
        return -1;
    }
    *out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return 0;
}

static int parse_literal(pg_json_parser *p, pg_json_value *v)
{
    static const struct {
        const char *word;
        pg_json_type type;
        int64_t num;
    } lits[] = {{"true", PG_JSON_BOOL, 1}, {"false", PG_JSON_BOOL, 0}, {"null", PG_JSON_NULL, 0}};
    for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++) {
        size_t n = strlen(lits[i].word);
        if (p->len - p->pos >= n && !memcmp(p->s + p->pos, lits[i].word, n)) {
            v->type = lits[i].type;
            v->num = lits[i].num;
            p->pos += n;
            return 0;
        }
    }
    jfail(p, "invalid literal");
    return -1;
}

static int parse_value(pg_json_parser *p, pg_json_value *v, int depth);

/* Makes room for one more item (and key) in an array or object. */
static int grow(pg_json_parser *p, pg_json_value *v)
{
    if (v->n < v->cap)
        return 0;
    if (v->cap >= (1 << 29)) {
        jfail(p, "too many items");
        return -1;
    }
    int cap = v->cap ? 2 * v->cap : 4;
    pg_json_value *items = realloc(v->items, (size_t)cap * sizeof *items);
    if (items)
        v->items = items;
    if (v->type == PG_JSON_OBJ) {
        char **keys = realloc(v->keys, (size_t)cap * sizeof *keys);
        if (keys)
            v->keys = keys;
        if (!keys)
            items = NULL;
    }
    if (!items) {
        jfail(p, "out of memory");
        return -1;
    }
    v->cap = cap;
    memset(&v->items[v->n], 0, (size_t)(cap - v->n) * sizeof *items);
    return 0;
}

/* After an item: ',' (more follow) returns 1, the closing bracket returns 0. */
static int next_item(pg_json_parser *p, char close)
{
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        return 1;
    }
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    jfail(p, p->pos < p->len ? "expected ',' or '%c'" : "unexpected end of header, expected ',' or '%c'", close);
    return -1;
}

/* Rejects an object with two equal keys (sorting a copy of the key pointers). */
static int check_duplicates(pg_json_parser *p, const pg_json_value *v)
{
    if (v->n < 2)
        return 0;
    char **sorted = malloc((size_t)v->n * sizeof *sorted);
    if (!sorted) {
        jfail(p, "out of memory");
        return -1;
    }
    memcpy(sorted, v->keys, (size_t)v->n * sizeof *sorted);
    qsort(sorted, (size_t)v->n, sizeof *sorted, pg_fmt_cmp_str);
    int rc = 0;
    for (int i = 1; i < v->n && rc == 0; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) {
            char s[PG_FMT_NAME_SHOW + 8];
            p->pos = v->pos;
            jfail(p, "duplicate key \"%s\" in an object", pg_fmt_show(sorted[i], s, sizeof s));
            rc = -1;
        }
    free(sorted);
    return rc;
}

static int parse_object(pg_json_parser *p, pg_json_value *v, int depth)
{
    v->type = PG_JSON_OBJ;
    p->pos++; /* '{' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != '"') {
            jfail(p, "expected a string key");
            return -1;
        }
        char *key = NULL;
        if (grow(p, v) != 0 || parse_string(p, &key) != 0)
            return -1;
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') {
            free(key);
            jfail(p, "expected ':' after a key");
            return -1;
        }
        p->pos++;
        if (parse_value(p, &v->items[v->n], depth + 1) != 0) {
            pg_json_free(&v->items[v->n]);
            free(key);
            return -1;
        }
        v->keys[v->n++] = key;
        int more = next_item(p, '}');
        if (more < 0)
            return -1;
        if (!more)
            return check_duplicates(p, v);
    }
}

static int parse_array(pg_json_parser *p, pg_json_value *v, int depth)
{
    v->type = PG_JSON_ARR;
    p->pos++; /* '[' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (grow(p, v) != 0)
            return -1;
        if (parse_value(p, &v->items[v->n], depth + 1) != 0) {
            pg_json_free(&v->items[v->n]);
            return -1;
        }
        v->n++;
        int more = next_item(p, ']');
        if (more <= 0)
            return more;
    }
}

/* Any value; v is zeroed and stays freeable with pg_json_free on failure. */
static int parse_value(pg_json_parser *p, pg_json_value *v, int depth)
{
    memset(v, 0, sizeof *v);
    skip_ws(p);
    v->pos = p->pos;
    if (depth > JSON_MAX_DEPTH) {
        jfail(p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
        return -1;
    }
    if (p->pos >= p->len) {
        jfail(p, "unexpected end of header, expected a value");
        return -1;
    }
    char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_object(p, v, depth);
    case '[': return parse_array(p, v, depth);
    case '"': v->type = PG_JSON_STR; return parse_string(p, &v->str);
    case 't':
    case 'f':
    case 'n': return parse_literal(p, v);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            v->type = PG_JSON_INT;
            return parse_int(p, &v->num);
        }
        if (c >= 0x20 && c < 0x7F)
            jfail(p, "unexpected character '%c'", c);
        else
            jfail(p, "unexpected byte 0x%02x", (unsigned char)c);
        return -1;
    }
}

/* The whole text must be one value, then only whitespace (the padding). */
int pg_json_parse(pg_json_parser *p, pg_json_value *root)
{
    if (parse_value(p, root, 1) != 0) {
        pg_json_free(root);
        return -1;
    }
    skip_ws(p);
    if (p->pos != p->len) {
        jfail(p, "trailing characters after the JSON value");
        pg_json_free(root);
        return -1;
    }
    return 0;
}

/* ================================================================================ */
/* JSON: writing                                                                    */
/* ================================================================================ */

/* A JSON string as Python's json.dumps writes it (ensure_ascii): ", \ and
 * \b \f \n \r \t escaped by letter, other bytes outside 0x20..0x7E and every
 * non-ASCII code point as \uxxxx (lowercase; surrogate pairs above U+FFFF).
 * -1 if s is not valid UTF-8. */
int pg_json_put_string(pg_json_buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    pg_json_buf_chr(b, '"');
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = pg_utf8_decode(p + i, n - i, &cp);
        if (!k)
            return -1;
        i += k;
        const char *esc = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\b' ? "\\b" : cp == '\f' ? "\\f"
                        : cp == '\n' ? "\\n" : cp == '\r' ? "\\r" : cp == '\t' ? "\\t" : NULL;
        char tmp[16];
        if (esc) {
            pg_json_buf_str(b, esc);
        } else if (cp >= 0x20 && cp < 0x7F) {
            pg_json_buf_chr(b, (char)cp);
        } else if (cp < 0x10000) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            pg_json_buf_str(b, tmp);
        } else {
            uint32_t v = cp - 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", (unsigned)(0xD800 + (v >> 10)), (unsigned)(0xDC00 + (v & 0x3FF)));
            pg_json_buf_str(b, tmp);
        }
    }
    pg_json_buf_chr(b, '"');
    return 0;
}
