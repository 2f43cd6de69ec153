/* safetensors files and state dicts.
 *
 * Reading: a small strict JSON parser (objects, arrays, strings with escapes,
 * integers, true/false/null) builds a tree of the header; the tree is checked
 * against the safetensors schema; the data layout is checked (offsets in
 * range, sizes matching shapes, no overlap, no hole, as the reference
 * implementation demands); only then are tensors allocated and filled.
 * Writing: the header is produced in the same compact form as Python's
 * json.dumps(..., separators=(",", ":")) (non-ASCII escaped as \uXXXX), padded
 * with spaces to a multiple of 8, and written to PATH.tmp, which is fsynced and
 * renamed over PATH. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The data section is the tensors' memory as is: only little-endian machines. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "nn/safetensors.c writes tensor memory as little-endian data: big-endian machines are not supported"
#endif

#define ST_MAX_HEADER 100000000ULL /* the reference implementation's limit */
#define JSON_MAX_DEPTH 64          /* a safetensors header needs 3 */
#define NAME_SHOW 64               /* bytes of a tensor name shown in messages */

/* ================================================================================ */
/* errors                                                                            */
/* ================================================================================ */

/* "fn: where" prefix of every message of one call */
typedef struct st_ctx {
    const char *fn;
    const char *where; /* file name, "<buffer>", or NULL */
} st_ctx;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void st_fail(const st_ctx *c, const char *fmt, ...)
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
static const char *show(const char *name, char *buf, size_t size)
{
    size_t len = strlen(name), k = len < NAME_SHOW ? len : NAME_SHOW;
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

/* "[2,3]" */
static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t j = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && j < size; i++)
        j += (size_t)snprintf(buf + j, size - j, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (j < size)
        snprintf(buf + j, size - j, "]");
    return buf;
}

/* ================================================================================ */
/* UTF-8                                                                             */
/* ================================================================================ */

/* Decodes one UTF-8 sequence at s (n bytes available) into *cp; returns its
 * length, or 0 if it is malformed (overlong, surrogate, > U+10FFFF, cut). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
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

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_decode(p + i, n - i, &cp);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* ================================================================================ */
/* growable byte buffer                                                              */
/* ================================================================================ */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
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

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_chr(sbuf *b, char c) { sb_put(b, &c, 1); }

static void sb_int(sbuf *b, long long v)
{
    char tmp[32];
    sb_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%lld", v));
}

/* ================================================================================ */
/* JSON: a strict parser into a small tree                                           */
/* ================================================================================ */

typedef enum { J_NULL, J_BOOL, J_INT, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
    jtype type;
    size_t pos;         /* byte offset of the value in the header */
    int64_t num;        /* J_INT, J_BOOL */
    char *str;          /* J_STR: NUL-terminated UTF-8 (no NUL inside) */
    int n, cap;         /* J_ARR, J_OBJ: number of items */
    struct jval *items; /* J_ARR, J_OBJ: the values */
    char **keys;        /* J_OBJ: the keys */
} jval;

typedef struct jparser {
    const char *s;
    size_t len, pos;
    bool failed;
    size_t err_pos;
    char err[200];
} jparser;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void jfail(jparser *p, const char *fmt, ...)
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

static void jfree(jval *v)
{
    if (!v)
        return;
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        jfree(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static void skip_ws(jparser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        p->pos++;
    }
}

static int hex4(jparser *p, uint32_t *out)
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
static int unicode_escape(jparser *p, uint32_t *cp)
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
static int parse_escape(jparser *p, sbuf *b)
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
        sb_put(b, u, utf8_encode(cp, u));
        return 0;
    }
    default: jfail(p, "invalid escape '\\%c'", c >= 0x20 && c < 0x7F ? c : '?'); return -1;
    }
    p->pos++;
    sb_chr(b, out);
    return 0;
}

/* A string starting at the opening quote; *out is malloc'd. */
static int parse_string(jparser *p, char **out)
{
    sbuf b = {0};
    p->pos++; /* opening quote */
    sb_put(&b, "", 0);
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
            size_t k = utf8_decode((const unsigned char *)p->s + p->pos, p->len - p->pos, &cp);
            if (!k) {
                jfail(p, "invalid UTF-8 in a string");
                break;
            }
            sb_put(&b, p->s + p->pos, k);
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
static int parse_int(jparser *p, int64_t *out)
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

static int parse_literal(jparser *p, jval *v)
{
    static const struct {
        const char *word;
        jtype type;
        int64_t num;
    } lits[] = {{"true", J_BOOL, 1}, {"false", J_BOOL, 0}, {"null", J_NULL, 0}};
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

static int parse_value(jparser *p, jval *v, int depth);

/* Makes room for one more item (and key) in an array or object. */
static int grow(jparser *p, jval *v)
{
    if (v->n < v->cap)
        return 0;
    if (v->cap >= (1 << 29)) {
        jfail(p, "too many items");
        return -1;
    }
    int cap = v->cap ? 2 * v->cap : 4;
    jval *items = realloc(v->items, (size_t)cap * sizeof *items);
    if (items)
        v->items = items;
    if (v->type == J_OBJ) {
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
static int next_item(jparser *p, char close)
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

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Rejects an object with two equal keys (sorting a copy of the key pointers). */
static int check_duplicates(jparser *p, const jval *v)
{
    if (v->n < 2)
        return 0;
    char **sorted = malloc((size_t)v->n * sizeof *sorted);
    if (!sorted) {
        jfail(p, "out of memory");
        return -1;
    }
    memcpy(sorted, v->keys, (size_t)v->n * sizeof *sorted);
    qsort(sorted, (size_t)v->n, sizeof *sorted, cmp_str);
    int rc = 0;
    for (int i = 1; i < v->n && rc == 0; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) {
            char s[NAME_SHOW + 8];
            p->pos = v->pos;
            jfail(p, "duplicate key \"%s\" in an object", show(sorted[i], s, sizeof s));
            rc = -1;
        }
    free(sorted);
    return rc;
}

static int parse_object(jparser *p, jval *v, int depth)
{
    v->type = J_OBJ;
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
            jfree(&v->items[v->n]);
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

static int parse_array(jparser *p, jval *v, int depth)
{
    v->type = J_ARR;
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
            jfree(&v->items[v->n]);
            return -1;
        }
        v->n++;
        int more = next_item(p, ']');
        if (more <= 0)
            return more;
    }
}

/* Any value; v is zeroed and stays freeable with jfree on failure. */
static int parse_value(jparser *p, jval *v, int depth)
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
    case '"': v->type = J_STR; return parse_string(p, &v->str);
    case 't':
    case 'f':
    case 'n': return parse_literal(p, v);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            v->type = J_INT;
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
static int json_parse(jparser *p, jval *root)
{
    if (parse_value(p, root, 1) != 0) {
        jfree(root);
        return -1;
    }
    skip_ws(p);
    if (p->pos != p->len) {
        jfail(p, "trailing characters after the JSON value");
        jfree(root);
        return -1;
    }
    return 0;
}

/* ================================================================================ */
/* the header schema                                                                 */
/* ================================================================================ */

static const struct {
    const char *name;
    pg_dtype dtype;
} ST_DTYPES[] = {{"F32", PG_F32}, {"F64", PG_F64}, {"I64", PG_I64}, {"BOOL", PG_BOOL}};

/* safetensors dtypes posgrad does not hold */
static const char *const ST_OTHER_DTYPES[] = {"F16",     "BF16",    "I8",      "U8",      "I16", "U16",
                                              "I32",     "U32",     "U64",     "F8_E4M3", "F8_E5M2",
                                              "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",      "C64"};

static const char *st_dtype_name(pg_dtype d)
{
    for (size_t i = 0; i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++)
        if (ST_DTYPES[i].dtype == d)
            return ST_DTYPES[i].name;
    return NULL;
}

typedef struct st_entry {
    const char *name; /* borrowed from the JSON tree */
    pg_dtype dtype;
    int ndim;
    int64_t shape[PG_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;
} st_entry;

typedef struct st_header {
    jval root;
    int n;
    st_entry *e;           /* in header order */
    const jval *meta;      /* the __metadata__ object or NULL */
} st_header;

static void header_free(st_header *h)
{
    jfree(&h->root);
    free(h->e);
    memset(h, 0, sizeof *h);
}

static int entry_dtype(const st_ctx *c, const char *nm, const jval *v, st_entry *e)
{
    if (v->type != J_STR) {
        st_fail(c, "tensor \"%s\": dtype is not a string", nm);
        return -1;
    }
    for (size_t i = 0; i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++)
        if (!strcmp(v->str, ST_DTYPES[i].name)) {
            e->dtype = ST_DTYPES[i].dtype;
            return 0;
        }
    for (size_t i = 0; i < sizeof ST_OTHER_DTYPES / sizeof ST_OTHER_DTYPES[0]; i++)
        if (!strcmp(v->str, ST_OTHER_DTYPES[i])) {
            st_fail(c, "tensor \"%s\": unsupported dtype %s (posgrad reads F32, F64, I64 and BOOL)", nm, v->str);
            return -1;
        }
    char s[NAME_SHOW + 8];
    st_fail(c, "tensor \"%s\": unknown dtype \"%s\"", nm, show(v->str, s, sizeof s));
    return -1;
}

/* numel as pg_tensor_empty computes it; rejects shapes whose nonzero sizes
 * multiply past INT64_MAX / 16 (whatever their order), so no later
 * multiplication by a dtype size can overflow. */
static int entry_shape(const st_ctx *c, const char *nm, const jval *v, st_entry *e)
{
    if (v->type != J_ARR) {
        st_fail(c, "tensor \"%s\": shape is not an array", nm);
        return -1;
    }
    if (v->n > PG_MAX_DIMS) {
        st_fail(c, "tensor \"%s\": shape has %d dims, posgrad supports at most %d", nm, v->n, PG_MAX_DIMS);
        return -1;
    }
    int64_t nonzero = 1, numel = 1;
    for (int i = 0; i < v->n; i++) {
        const jval *d = &v->items[i];
        if (d->type != J_INT || d->num < 0) {
            st_fail(c, "tensor \"%s\": shape entry %d is not a non-negative integer", nm, i);
            return -1;
        }
        if (d->num > 0 && nonzero > INT64_MAX / 16 / d->num) {
            st_fail(c, "tensor \"%s\": shape is too large (more than 2^59 elements)", nm);
            return -1;
        }
        if (d->num > 0)
            nonzero *= d->num;
        numel *= d->num;
        e->shape[i] = d->num;
    }
    e->ndim = v->n;
    e->numel = numel;
    return 0;
}

static int entry_offsets(const st_ctx *c, const char *nm, const jval *v, st_entry *e, uint64_t data_size)
{
    if (v->type != J_ARR || v->n != 2 || v->items[0].type != J_INT || v->items[1].type != J_INT ||
        v->items[0].num < 0 || v->items[1].num < 0) {
        st_fail(c, "tensor \"%s\": data_offsets is not [begin, end] with non-negative integers", nm);
        return -1;
    }
    e->begin = (uint64_t)v->items[0].num;
    e->end = (uint64_t)v->items[1].num;
    if (e->begin > e->end) {
        st_fail(c, "tensor \"%s\": data_offsets [%llu, %llu] end before they begin", nm,
                (unsigned long long)e->begin, (unsigned long long)e->end);
        return -1;
    }
    if (e->end > data_size) {
        st_fail(c, "tensor \"%s\": data_offsets [%llu, %llu] run past the %llu bytes of data", nm,
                (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)data_size);
        return -1;
    }
    return 0;
}

/* One tensor entry {"dtype": .., "shape": [..], "data_offsets": [b, e]}, nothing else. */
static int parse_entry(const st_ctx *c, const char *name, const jval *v, st_entry *e, uint64_t data_size)
{
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    char nm[NAME_SHOW + 8];
    show(name, nm, sizeof nm);
    if (!name[0]) {
        st_fail(c, "a tensor has an empty name");
        return -1;
    }
    if (v->type != J_OBJ) {
        st_fail(c, "tensor \"%s\": entry is not an object", nm);
        return -1;
    }
    const jval *f[3] = {NULL, NULL, NULL};
    for (int i = 0; i < v->n; i++) {
        int k = 0;
        while (k < 3 && strcmp(v->keys[i], fields[k]))
            k++;
        if (k == 3) {
            char s[NAME_SHOW + 8];
            st_fail(c, "tensor \"%s\": unknown field \"%s\" (expected dtype, shape, data_offsets)", nm,
                    show(v->keys[i], s, sizeof s));
            return -1;
        }
        f[k] = &v->items[i];
    }
    for (int k = 0; k < 3; k++)
        if (!f[k]) {
            st_fail(c, "tensor \"%s\": missing field \"%s\"", nm, fields[k]);
            return -1;
        }
    e->name = name;
    if (entry_dtype(c, nm, f[0], e) != 0 || entry_shape(c, nm, f[1], e) != 0 ||
        entry_offsets(c, nm, f[2], e, data_size) != 0)
        return -1;
    uint64_t need = (uint64_t)e->numel * pg_dtype_size(e->dtype);
    if (e->end - e->begin != need) {
        char s[200];
        st_fail(c, "tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, shape %s of %s needs %llu", nm,
                (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)(e->end - e->begin),
                shape_str(e->ndim, e->shape, s, sizeof s), f[0]->str, (unsigned long long)need);
        return -1;
    }
    return 0;
}

static int check_metadata(const st_ctx *c, const jval *v)
{
    if (v->type != J_OBJ) {
        st_fail(c, "__metadata__ is not an object of strings");
        return -1;
    }
    for (int i = 0; i < v->n; i++)
        if (v->items[i].type != J_STR) {
            char s[NAME_SHOW + 8];
            st_fail(c, "__metadata__ value of \"%s\" is not a string", show(v->keys[i], s, sizeof s));
            return -1;
        }
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorted by offsets, the tensors must tile the data exactly: no overlap, no
 * hole, nothing after the last one (the reference implementation's rule). */
static int check_layout(const st_ctx *c, const st_header *h, uint64_t data_size)
{
    const st_entry **sorted = malloc((size_t)(h->n ? h->n : 1) * sizeof *sorted);
    if (!sorted) {
        st_fail(c, "out of memory");
        return -1;
    }
    for (int i = 0; i < h->n; i++)
        sorted[i] = &h->e[i];
    qsort(sorted, (size_t)h->n, sizeof *sorted, cmp_entry);
    uint64_t at = 0;
    int rc = 0;
    for (int i = 0; i < h->n && rc == 0; i++) {
        char a[NAME_SHOW + 8], b[NAME_SHOW + 8];
        const st_entry *e = sorted[i];
        if (e->begin < at) {
            const st_entry *p = sorted[i - 1];
            st_fail(c, "tensors \"%s\" [%llu, %llu] and \"%s\" [%llu, %llu] overlap", show(p->name, a, sizeof a),
                    (unsigned long long)p->begin, (unsigned long long)p->end, show(e->name, b, sizeof b),
                    (unsigned long long)e->begin, (unsigned long long)e->end);
            rc = -1;
        } else if (e->begin > at) {
            st_fail(c, "bytes [%llu, %llu) of the data belong to no tensor (safetensors forbids holes)",
                    (unsigned long long)at, (unsigned long long)e->begin);
            rc = -1;
        }
        at = e->end;
    }
    if (rc == 0 && at != data_size) {
        st_fail(c, "the tensors end at byte %llu of the data, but the data has %llu bytes", (unsigned long long)at,
                (unsigned long long)data_size);
        rc = -1;
    }
    free(sorted);
    return rc;
}

/* Parses and checks the header text (len bytes) against a data section of data_size bytes. */
static int header_parse(const st_ctx *c, const char *text, size_t len, uint64_t data_size, st_header *h)
{
    memset(h, 0, sizeof *h);
    if (len == 0 || text[0] != '{') {
        st_fail(c, "the header does not start with '{'");
        return -1;
    }
    jparser p = {.s = text, .len = len};
    if (json_parse(&p, &h->root) != 0) {
        st_fail(c, "header JSON: %s at byte %zu of the header", p.err, p.err_pos);
        return -1;
    }
    const jval *root = &h->root;
    h->e = malloc((size_t)(root->n ? root->n : 1) * sizeof *h->e);
    if (!h->e) {
        st_fail(c, "out of memory");
        header_free(h);
        return -1;
    }
    for (int i = 0; i < root->n; i++) {
        int rc;
        if (!strcmp(root->keys[i], "__metadata__")) {
            h->meta = &root->items[i];
            rc = check_metadata(c, h->meta);
        } else {
            rc = parse_entry(c, root->keys[i], &root->items[i], &h->e[h->n], data_size);
            h->n += rc == 0;
        }
        if (rc != 0) {
            header_free(h);
            return -1;
        }
    }
    if (check_layout(c, h, data_size) != 0) {
        header_free(h);
        return -1;
    }
    return 0;
}

/* ================================================================================ */
/* reading                                                                           */
/* ================================================================================ */

/* Where the bytes come from: a buffer or an open file. */
typedef struct st_src {
    const unsigned char *buf;
    FILE *f;
    uint64_t size;
} st_src;

static int src_read(const st_ctx *c, const st_src *s, uint64_t off, void *dst, uint64_t n)
{
    if (n == 0)
        return 0;
    if (s->buf) {
        memcpy(dst, s->buf + off, (size_t)n);
        return 0;
    }
    if (off > (uint64_t)INT64_MAX || fseeko(s->f, (off_t)off, SEEK_SET) != 0 || fread(dst, 1, (size_t)n, s->f) != n) {
        st_fail(c, "read failed at byte %llu: %s", (unsigned long long)off,
                ferror(s->f) ? strerror(errno) : "the file is shorter than when it was opened");
        return -1;
    }
    return 0;
}

/* Frees what a list owns and the strings of two metadata arrays. */
static void free_strings(int n, char **a)
{
    for (int i = 0; a && i < n; i++)
        free(a[i]);
    free(a);
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Copies the metadata pairs into malloc'd arrays. */
static int copy_meta(const st_ctx *c, const jval *meta, int *n, char ***keys, char ***values)
{
    int m = meta ? meta->n : 0;
    char **k = NULL, **v = NULL;
    if (m > 0) {
        k = calloc((size_t)m, sizeof *k);
        v = calloc((size_t)m, sizeof *v);
        bool ok = k && v;
        for (int i = 0; ok && i < m; i++) {
            k[i] = dup_str(meta->keys[i]);
            v[i] = dup_str(meta->items[i].str);
            ok = k[i] && v[i];
        }
        if (!ok) {
            free_strings(m, k);
            free_strings(m, v);
            st_fail(c, "out of memory");
            return -1;
        }
    }
    *n = m;
    *keys = k;
    *values = v;
    return 0;
}

/* Reads one checked entry into a new heap tensor. */
static pg_tensor *read_tensor(const st_ctx *c, const st_src *s, uint64_t data_start, const st_entry *e)
{
    char nm[NAME_SHOW + 8];
    pg_tensor *t = pg_tensor_empty(NULL, e->dtype, e->ndim, e->shape);
    if (!t) {
        st_fail(c, "tensor \"%s\": %s", show(e->name, nm, sizeof nm), pg_last_error());
        return NULL;
    }
    if (src_read(c, s, data_start + e->begin, t->data, e->end - e->begin) != 0) {
        pg_tensor_free(t);
        return NULL;
    }
    if (e->dtype == PG_BOOL) {
        const uint8_t *b = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            if (b[i] > 1) {
                st_fail(c, "tensor \"%s\": BOOL element %lld is %u, not 0 or 1", show(e->name, nm, sizeof nm),
                        (long long)i, b[i]);
                pg_tensor_free(t);
                return NULL;
            }
    }
    return t;
}

/* Moves every entry of src to the end of dst; fails (dst unchanged) only on OOM. */
static int list_append_move(pg_tensor_list *dst, pg_tensor_list *src)
{
    if (src->n > INT32_MAX - dst->n)
        return -1;
    int need = dst->n + src->n;
    if (need > dst->cap) {
        char **names = realloc(dst->names, (size_t)need * sizeof *names);
        if (names)
            dst->names = names;
        pg_tensor **ts = realloc(dst->tensors, (size_t)need * sizeof *ts);
        if (ts)
            dst->tensors = ts;
        if (!names || !ts)
            return -1;
        dst->cap = need;
    }
    for (int i = 0; i < src->n; i++) {
        dst->names[dst->n + i] = src->names[i];
        dst->tensors[dst->n + i] = src->tensors[i];
    }
    dst->n = need;
    free(src->names);
    free(src->tensors);
    *src = (pg_tensor_list){0, 0, NULL, NULL};
    return 0;
}

/* Every tensor of a checked header, in header order, into a new list. */
static int read_tensors(const st_ctx *c, const st_src *s, uint64_t data_start, const st_header *h,
                        pg_tensor_list *l)
{
    for (int i = 0; i < h->n; i++) {
        pg_tensor *t = read_tensor(c, s, data_start, &h->e[i]);
        if (!t)
            return -1;
        if (pg_tensor_list_push(l, h->e[i].name, t) != 0) {
            pg_tensor_free(t);
            st_fail(c, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* The whole load: length, header, checks, tensors, metadata; out is appended
 * to only when everything succeeded. keys may be NULL (no metadata wanted). */
static int st_read(const st_ctx *c, const st_src *s, pg_tensor_list *out, int *n_meta, char ***keys, char ***values)
{
    if (!out) {
        st_fail(c, "output list is NULL");
        return -1;
    }
    if (s->size < 8) {
        st_fail(c, "%llu bytes is too short for the 8-byte header length", (unsigned long long)s->size);
        return -1;
    }
    unsigned char len8[8];
    if (src_read(c, s, 0, len8, 8) != 0)
        return -1;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | len8[i]; /* little-endian */
    if (hlen > s->size - 8) {
        st_fail(c, "header length %llu exceeds the %llu bytes after the length field", (unsigned long long)hlen,
                (unsigned long long)(s->size - 8));
        return -1;
    }
    if (hlen > ST_MAX_HEADER) {
        st_fail(c, "header length %llu exceeds the limit of %llu bytes", (unsigned long long)hlen, ST_MAX_HEADER);
        return -1;
    }
    const char *text = s->buf ? (const char *)s->buf + 8 : NULL;
    char *copy = NULL;
    if (!s->buf) {
        text = copy = malloc(hlen ? (size_t)hlen : 1);
        if (!copy) {
            st_fail(c, "out of memory for a %llu-byte header", (unsigned long long)hlen);
            return -1;
        }
        if (src_read(c, s, 8, copy, hlen) != 0) {
            free(copy);
            return -1;
        }
    }
    st_header h;
    uint64_t data_start = 8 + hlen;
    int rc = header_parse(c, text, (size_t)hlen, s->size - data_start, &h);
    free(copy);
    if (rc != 0)
        return -1;
    pg_tensor_list l = {0, 0, NULL, NULL};
    int nm = 0;
    char **k = NULL, **v = NULL;
    rc = read_tensors(c, s, data_start, &h, &l);
    if (rc == 0 && keys)
        rc = copy_meta(c, h.meta, &nm, &k, &v);
    if (rc == 0 && list_append_move(out, &l) != 0) {
        st_fail(c, "out of memory");
        free_strings(nm, k);
        free_strings(nm, v);
        rc = -1;
    }
    pg_tensor_list_free_all(&l);
    header_free(&h);
    if (rc == 0 && keys) {
        *n_meta = nm;
        *keys = k;
        *values = v;
    }
    return rc;
}

/* Opens path as a regular file and reads it. */
static int st_read_file(const st_ctx *c, const char *path, pg_tensor_list *out, int *n_meta, char ***keys,
                        char ***values)
{
    if (!path) {
        st_fail(c, "path is NULL");
        return -1;
    }
    /* O_NONBLOCK: a FIFO or device is refused below instead of blocking the open */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        st_fail(c, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    FILE *f = NULL;
    int rc = -1;
    if (fstat(fd, &st) != 0)
        st_fail(c, "cannot stat: %s", strerror(errno));
    else if (!S_ISREG(st.st_mode))
        st_fail(c, "not a regular file");
    else if (!(f = fdopen(fd, "rb")))
        st_fail(c, "cannot open: %s", strerror(errno));
    else {
        st_src s = {NULL, f, (uint64_t)st.st_size};
        rc = st_read(c, &s, out, n_meta, keys, values);
    }
    if (f)
        fclose(f);
    else
        close(fd);
    return rc;
}

int pg_safetensors_load(const char *path, pg_tensor_list *out)
{
    st_ctx c = {"pg_safetensors_load", path ? path : "(null)"};
    return st_read_file(&c, path, out, NULL, NULL, NULL);
}

int pg_safetensors_load_meta(const char *path, pg_tensor_list *out, int *n_meta, char ***keys, char ***values)
{
    st_ctx c = {"pg_safetensors_load_meta", path ? path : "(null)"};
    if (!n_meta || !keys || !values) {
        st_fail(&c, "n_meta, keys or values is NULL");
        return -1;
    }
    *n_meta = 0;
    *keys = *values = NULL;
    return st_read_file(&c, path, out, n_meta, keys, values);
}

int pg_safetensors_parse(const void *data, size_t size, pg_tensor_list *out)
{
    st_ctx c = {"pg_safetensors_parse", "<buffer>"};
    if (!data && size) {
        st_fail(&c, "data is NULL");
        return -1;
    }
    st_src s = {data ? data : (const void *)"", NULL, size};
    return st_read(&c, &s, out, NULL, NULL, NULL);
}

/* ================================================================================ */
/* writing                                                                           */
/* ================================================================================ */

/* A JSON string as Python's json.dumps writes it (ensure_ascii): ", \ and
 * \b \f \n \r \t escaped by letter, other bytes outside 0x20..0x7E and every
 * non-ASCII code point as \uxxxx (lowercase; surrogate pairs above U+FFFF).
 * -1 if s is not valid UTF-8. */
static int json_put_string(sbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    sb_chr(b, '"');
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_decode(p + i, n - i, &cp);
        if (!k)
            return -1;
        i += k;
        const char *esc = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\b' ? "\\b" : cp == '\f' ? "\\f"
                        : cp == '\n' ? "\\n" : cp == '\r' ? "\\r" : cp == '\t' ? "\\t" : NULL;
        char tmp[16];
        if (esc) {
            sb_str(b, esc);
        } else if (cp >= 0x20 && cp < 0x7F) {
            sb_chr(b, (char)cp);
        } else if (cp < 0x10000) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            sb_str(b, tmp);
        } else {
            uint32_t v = cp - 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", (unsigned)(0xD800 + (v >> 10)), (unsigned)(0xDC00 + (v & 0x3FF)));
            sb_str(b, tmp);
        }
    }
    sb_chr(b, '"');
    return 0;
}

/* Index of a name that equals an earlier one (in sorted order), or -1; -2 when out of memory. */
static int find_duplicate(int n, const char *const *names)
{
    if (n < 2)
        return -1;
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted)
        return -2;
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
    int dup = -1;
    for (int i = 1; i < n && dup == -1; i++)
        if (!strcmp(sorted[i - 1], sorted[i]))
            for (int k = 0; k < n && dup == -1; k++)
                if (names[k] == sorted[i] || !strcmp(names[k], sorted[i]))
                    dup = k;
    free(sorted);
    return dup;
}

/* Names must be unique; tensor names must also be non-empty UTF-8 other than
 * __metadata__, metadata keys UTF-8. */
static int check_names(const st_ctx *c, const char *what, int n, const char *const *names, bool tensors)
{
    char s[NAME_SHOW + 8];
    for (int i = 0; i < n; i++) {
        if (!names[i] || !utf8_valid(names[i]) || (tensors && (!names[i][0] || !strcmp(names[i], "__metadata__")))) {
            st_fail(c, "%s %d (\"%s\") is %s", what, i, names[i] ? show(names[i], s, sizeof s) : "(null)",
                    tensors ? "NULL, empty, not UTF-8 or the reserved __metadata__" : "NULL or not UTF-8");
            return -1;
        }
    }
    int dup = find_duplicate(n, names);
    if (dup == -2)
        st_fail(c, "out of memory");
    else if (dup >= 0)
        st_fail(c, "%s \"%s\" appears twice", what, show(names[dup], s, sizeof s));
    return dup == -1 ? 0 : -1;
}

static int check_save_args(const st_ctx *c, const pg_tensor_list *l, int n_meta, const char *const *mk,
                           const char *const *mv)
{
    if (!l || (l->n > 0 && (!l->names || !l->tensors))) {
        st_fail(c, "tensor list is NULL");
        return -1;
    }
    if (n_meta < 0 || (n_meta > 0 && (!mk || !mv))) {
        st_fail(c, "bad metadata: n_meta %d with keys %p and values %p", n_meta, (const void *)mk, (const void *)mv);
        return -1;
    }
    for (int i = 0; i < l->n; i++) {
        const pg_tensor *t = l->tensors[i];
        if (!t || (!t->data && t->numel > 0) || !st_dtype_name(t->dtype)) {
            st_fail(c, "tensor %d is NULL or has no data", i);
            return -1;
        }
    }
    for (int i = 0; i < n_meta; i++)
        if (!mv[i] || !utf8_valid(mv[i])) {
            st_fail(c, "metadata value %d is NULL or not UTF-8", i);
            return -1;
        }
    if (check_names(c, "tensor name", l->n, (const char *const *)l->names, true) != 0)
        return -1;
    return check_names(c, "metadata key", n_meta, mk, false);
}

/* The JSON header (unpadded), in st_io.save's order: tensors, then __metadata__. */
static int build_header(const pg_tensor_list *l, int n_meta, const char *const *mk, const char *const *mv, sbuf *b)
{
    uint64_t off = 0;
    sb_chr(b, '{');
    for (int i = 0; i < l->n; i++) {
        const pg_tensor *t = l->tensors[i];
        uint64_t bytes = (uint64_t)t->numel * pg_dtype_size(t->dtype);
        if (i)
            sb_chr(b, ',');
        json_put_string(b, l->names[i]);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, st_dtype_name(t->dtype));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d)
                sb_chr(b, ',');
            sb_int(b, (long long)t->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_int(b, (long long)off);
        sb_chr(b, ',');
        sb_int(b, (long long)(off + bytes));
        sb_str(b, "]}");
        off += bytes;
    }
    if (n_meta > 0) {
        sb_str(b, l->n ? ",\"__metadata__\":{" : "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i)
                sb_chr(b, ',');
            json_put_string(b, mk[i]);
            sb_chr(b, ':');
            json_put_string(b, mv[i]);
        }
        sb_chr(b, '}');
    }
    sb_chr(b, '}');
    while (b->n % 8)
        sb_chr(b, ' '); /* padding, as the reference writer does */
    return b->oom ? -1 : 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The length, the header and every tensor's bytes (BOOL normalised to 0/1). */
static int write_body(int fd, const pg_tensor_list *l, const sbuf *hdr)
{
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hdr->n >> (8 * i));
    if (write_all(fd, len8, 8) != 0 || write_all(fd, hdr->p, hdr->n) != 0)
        return -1;
    for (int i = 0; i < l->n; i++) {
        const pg_tensor *t = l->tensors[i];
        if (t->dtype != PG_BOOL) {
            if (write_all(fd, t->data, (size_t)t->numel * pg_dtype_size(t->dtype)) != 0)
                return -1;
            continue;
        }
        const uint8_t *src = t->data;
        unsigned char chunk[4096];
        for (int64_t at = 0; at < t->numel;) {
            size_t k = 0;
            for (; k < sizeof chunk && at < t->numel; k++, at++)
                chunk[k] = src[at] != 0;
            if (write_all(fd, chunk, k) != 0)
                return -1;
        }
    }
    return 0;
}

/* Makes a rename durable: fsync of the directory holding path (best effort:
 * some file systems refuse it, and the data itself is already synced). */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? malloc((size_t)(slash - path) + 2) : dup_str(".");
    if (!dir)
        return;
    if (slash) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Writes PATH.tmp, fsyncs it and renames it over PATH; removes it on failure. */
static int write_atomic(const st_ctx *c, const char *path, const pg_tensor_list *l, const sbuf *hdr)
{
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) {
        st_fail(c, "out of memory");
        return -1;
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    /* a stale PATH.tmp (an earlier crash) is replaced; a symlink there is refused */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) {
        st_fail(c, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    const char *step = NULL;
    errno = 0;
    if (write_body(fd, l, hdr) != 0)
        step = "cannot write";
    else if (fsync(fd) != 0)
        step = "cannot sync";
    int err = errno ? errno : EIO;
    if (close(fd) != 0 && !step) {
        step = "cannot close";
        err = errno;
    }
    if (!step && rename(tmp, path) != 0) {
        step = "cannot rename over the target";
        err = errno;
    }
    if (step) {
        st_fail(c, "%s %s: %s", step, tmp, strerror(err));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    sync_dir(path);
    return 0;
}

static int st_save(const st_ctx *c, const char *path, const pg_tensor_list *l, int n_meta, const char *const *mk,
                   const char *const *mv)
{
    if (!path || !path[0]) {
        st_fail(c, "path is NULL or empty");
        return -1;
    }
    if (check_save_args(c, l, n_meta, mk, mv) != 0)
        return -1;
    sbuf hdr = {0};
    if (build_header(l, n_meta, mk, mv, &hdr) != 0) {
        free(hdr.p);
        st_fail(c, "out of memory for the header");
        return -1;
    }
    if (hdr.n > ST_MAX_HEADER) {
        st_fail(c, "the header would have %zu bytes, more than the %llu a reader accepts", hdr.n, ST_MAX_HEADER);
        free(hdr.p);
        return -1;
    }
    int rc = write_atomic(c, path, l, &hdr);
    free(hdr.p);
    return rc;
}

int pg_safetensors_save(const char *path, const pg_tensor_list *l, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values)
{
    st_ctx c = {"pg_safetensors_save", path ? path : "(null)"};
    return st_save(&c, path, l, n_meta, meta_keys, meta_values);
}

/* ================================================================================ */
/* state dicts                                                                       */
/* ================================================================================ */

/* Every full parameter name, tied aliases included (pg_module_parameters
 * lists a shared tensor once); -1 if a name does not fit the buffer. */
static int walk_names(const pg_module *m, char *prefix, size_t len, size_t cap, pg_tensor_list *all)
{
    for (int i = 0; i < m->n_params; i++) {
        if ((size_t)snprintf(prefix + len, cap - len, "%s", m->params[i].name) >= cap - len ||
            pg_tensor_list_push(all, prefix, m->params[i].ptr) != 0)
            return -1;
    }
    for (int i = 0; i < m->n_children; i++) {
        size_t k = (size_t)snprintf(prefix + len, cap - len, "%s.", m->children[i].name);
        if (k >= cap - len || walk_names(m->children[i].ptr, prefix, len + k, cap, all) != 0)
            return -1;
    }
    prefix[len] = '\0';
    return 0;
}

int pg_module_save(const pg_module *m, const char *path)
{
    st_ctx c = {"pg_module_save", path ? path : "(null)"};
    if (!m) {
        st_fail(&c, "module is NULL");
        return -1;
    }
    pg_tensor_list all = {0, 0, NULL, NULL}, l = {0, 0, NULL, NULL};
    char prefix[4096];
    prefix[0] = '\0';
    int rc = walk_names(m, prefix, 0, sizeof prefix, &all);
    for (int i = 0; rc == 0 && i < all.n; i++) {
        bool first = true; /* a tied tensor is saved once, under its first name (as pg_module_parameters) */
        for (int k = 0; k < i && first; k++)
            first = all.tensors[k] != all.tensors[i];
        if (first)
            rc = pg_tensor_list_push(&l, all.names[i], all.tensors[i]);
    }
    if (rc != 0)
        st_fail(&c, "out of memory or a parameter name longer than 4095 bytes");
    else
        rc = st_save(&c, path, &l, 0, NULL, NULL);
    pg_tensor_list_free(&all);
    pg_tensor_list_free(&l);
    return rc;
}

void pg_load_report_free(pg_load_report *r)
{
    if (!r)
        return;
    free_strings(r->n_missing, r->missing);
    free_strings(r->n_unexpected, r->unexpected);
    memset(r, 0, sizeof *r);
}

typedef struct name_ix {
    const char *name;
    int ix;
} name_ix;

static int cmp_name_ix(const void *a, const void *b) { return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name); }

/* The matching of a state against the parameters: for every parameter name
 * (aliases included) the state entry naming it or -1, and the first error. */
typedef struct match {
    pg_tensor_list all; /* full names, borrowed tensors */
    int *canon;         /* all index -> index of the first name of the same tensor */
    int *src;           /* all index -> state index or -1 */
    bool *known;        /* state index -> names a parameter */
    char err[400];
} match;

static void match_free(match *mt)
{
    pg_tensor_list_free(&mt->all);
    free(mt->canon);
    free(mt->src);
    free(mt->known);
}

/* A state entry for a parameter must be a float tensor of the same shape. */
static void check_entry(match *mt, const char *name, const pg_tensor *st, const pg_tensor *param)
{
    if (mt->err[0])
        return;
    char a[128], b[128], s[NAME_SHOW + 8];
    if (!st)
        snprintf(mt->err, sizeof mt->err, "\"%s\": the state's tensor is NULL", show(name, s, sizeof s));
    else if (!pg_dtype_is_float(st->dtype) || !pg_same_shape(st, param))
        snprintf(mt->err, sizeof mt->err, "\"%s\": the state has %s, the parameter is %s%s", show(name, s, sizeof s),
                 pg_shape_str(a, sizeof a, st), pg_shape_str(b, sizeof b, param),
                 pg_dtype_is_float(st->dtype) ? "" : " (a parameter needs F32 or F64)");
}

/* Fills mt; -1 only when out of memory or a name is too long. */
static int match_state(const pg_module *m, const pg_tensor_list *state, match *mt)
{
    char prefix[4096];
    prefix[0] = '\0';
    memset(mt, 0, sizeof *mt);
    if (walk_names(m, prefix, 0, sizeof prefix, &mt->all) != 0)
        return -1;
    int n = mt->all.n;
    mt->canon = malloc((size_t)(n + 1) * sizeof *mt->canon);
    mt->src = malloc((size_t)(n + 1) * sizeof *mt->src);
    mt->known = calloc((size_t)state->n + 1, sizeof *mt->known);
    name_ix *sorted = malloc((size_t)(n + 1) * sizeof *sorted);
    if (!mt->canon || !mt->src || !mt->known || !sorted) {
        free(sorted);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (mt->all.tensors[k] != mt->all.tensors[i])
            k++;
        mt->canon[i] = k;
        mt->src[i] = -1;
        sorted[i] = (name_ix){mt->all.names[i], i};
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_name_ix);
    for (int s = 0; s < state->n; s++) {
        name_ix key = {state->names[s], 0};
        const name_ix *hit = n ? bsearch(&key, sorted, (size_t)n, sizeof *sorted, cmp_name_ix) : NULL;
        if (!hit)
            continue;
        mt->known[s] = true;
        mt->src[hit->ix] = s;
        check_entry(mt, state->names[s], state->tensors[s], mt->all.tensors[hit->ix]);
    }
    free(sorted);
    return 0;
}

/* The state entry that feeds the tensor whose first name is all[i]: its own
 * name if present, else the first alias present; -1 if none. */
static int source_of(const match *mt, int i)
{
    for (int j = i; j < mt->all.n; j++)
        if (mt->canon[j] == i && mt->src[j] >= 0)
            return mt->src[j];
    return -1;
}

/* Report lists (malloc'd copies). */
static int fill_report(const match *mt, const pg_tensor_list *state, pg_load_report *r)
{
    for (int i = 0; i < mt->all.n; i++)
        if (mt->canon[i] == i && source_of(mt, i) < 0)
            r->n_missing++;
    for (int s = 0; s < state->n; s++)
        r->n_unexpected += !mt->known[s];
    r->missing = calloc((size_t)r->n_missing + 1, sizeof *r->missing);
    r->unexpected = calloc((size_t)r->n_unexpected + 1, sizeof *r->unexpected);
    if (!r->missing || !r->unexpected)
        return -1;
    int a = 0, b = 0;
    for (int i = 0; i < mt->all.n; i++)
        if (mt->canon[i] == i && source_of(mt, i) < 0 && !(r->missing[a++] = dup_str(mt->all.names[i])))
            return -1;
    for (int s = 0; s < state->n; s++)
        if (!mt->known[s] && !(r->unexpected[b++] = dup_str(state->names[s])))
            return -1;
    return 0;
}

/* "a, b, c and 2 more" */
static void list_names(char *buf, size_t size, int n, char *const *names)
{
    size_t j = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && i < 3 && j < size; i++) {
        char s[NAME_SHOW + 8];
        j += (size_t)snprintf(buf + j, size - j, "%s%s", i ? ", " : "", show(names[i], s, sizeof s));
    }
    if (n > 3 && j < size)
        snprintf(buf + j, size - j, " and %d more", n - 3);
}

static bool state_ok(const st_ctx *c, const pg_module *m, const pg_tensor_list *state)
{
    if (!m || !state || (state->n > 0 && (!state->names || !state->tensors))) {
        st_fail(c, "module or state is NULL");
        return false;
    }
    for (int i = 0; i < state->n; i++)
        if (!state->names[i]) {
            st_fail(c, "state name %d is NULL", i);
            return false;
        }
    char s[NAME_SHOW + 8];
    int dup = find_duplicate(state->n, (const char *const *)state->names);
    if (dup == -2)
        st_fail(c, "out of memory");
    else if (dup >= 0)
        st_fail(c, "state name \"%s\" appears twice", show(state->names[dup], s, sizeof s));
    return dup == -1;
}

static int load_state(const st_ctx *c, pg_module *m, const pg_tensor_list *state, bool strict, pg_load_report *report)
{
    pg_load_report r = {0, 0, NULL, NULL};
    if (!state_ok(c, m, state))
        return -1;
    match mt;
    if (match_state(m, state, &mt) != 0 || fill_report(&mt, state, &r) != 0) {
        match_free(&mt);
        pg_load_report_free(&r);
        st_fail(c, "out of memory or a parameter name longer than 4095 bytes");
        return -1;
    }
    int rc = 0;
    if (mt.err[0]) {
        st_fail(c, "%s", mt.err);
        rc = -1;
    } else if (strict && (r.n_missing || r.n_unexpected)) {
        char a[200], b[200];
        list_names(a, sizeof a, r.n_missing, r.missing);
        list_names(b, sizeof b, r.n_unexpected, r.unexpected);
        st_fail(c, "strict load: %d missing (%s), %d unexpected (%s)", r.n_missing, a, r.n_unexpected, b);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < mt.all.n; i++) {
        int s = mt.canon[i] == i ? source_of(&mt, i) : -1;
        if (s >= 0)
            pg_copy_into(mt.all.tensors[i], state->tensors[s]); /* checked: same numel, float */
    }
    match_free(&mt);
    if (report)
        *report = r;
    else
        pg_load_report_free(&r);
    return rc;
}

int pg_module_load_state(pg_module *m, const pg_tensor_list *state, bool strict, pg_load_report *report)
{
    st_ctx c = {"pg_module_load_state", NULL};
    if (report)
        memset(report, 0, sizeof *report);
    return load_state(&c, m, state, strict, report);
}

int pg_module_load(pg_module *m, const char *path, bool strict, pg_load_report *report)
{
    st_ctx c = {"pg_module_load", path ? path : "(null)"};
    if (report)
        memset(report, 0, sizeof *report);
    if (!m) {
        st_fail(&c, "module is NULL");
        return -1;
    }
    pg_tensor_list l = {0, 0, NULL, NULL};
    if (st_read_file(&c, path, &l, NULL, NULL, NULL) != 0)
        return -1;
    int rc = load_state(&c, m, &l, strict, report);
    pg_tensor_list_free_all(&l);
    return rc;
}
