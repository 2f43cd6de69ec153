/* State maps (state_map.h): patterns with a layer index, the transforms of
 * one entry in both directions, the strict mapped load and the mapped save.
 * The library tables are nn/state_map_tables.c. Messages name the public
 * function, the file where there is one, and the map's library. */
#include "state_map.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/safetensors_impl.h"

#define NAME_CAP 512

/* A message into an error buffer (truncated to fit). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void say(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

/* ---- patterns: at most one index token, "{i}" or an affine "{Ai+B}" ("{2i}", "{2i+1}":
 * x-transformers interleaves attention and feed-forward layers), which stands for
 * the decimal A i + B without leading zeros ---------------------------------------------- */

typedef struct idx_tok {
    const char *at; /* the '{', or NULL: no token */
    size_t len;     /* of the token, braces included */
    long a, b;
} idx_tok;

static long parse_small(const char **s)
{
    long v = 0;
    while (**s >= '0' && **s <= '9' && v < 100000)
        v = v * 10 + (*(*s)++ - '0');
    return v;
}

/* The first token of p; false when a '{' starts no well-formed token. */
static bool find_tok(const char *p, idx_tok *t)
{
    t->at = strchr(p, '{');
    t->a = 1;
    t->b = 0;
    if (!t->at)
        return true;
    const char *s = t->at + 1;
    if (*s >= '1' && *s <= '9')
        t->a = parse_small(&s);
    if (*s++ != 'i')
        return false;
    if (*s == '+') {
        s++;
        if (*s < '0' || *s > '9')
            return false;
        t->b = parse_small(&s);
    }
    if (*s != '}')
        return false;
    t->len = (size_t)(s + 1 - t->at);
    return true;
}

/* Index tokens in p (0 or 1), or -1 for a malformed or second one. */
static int count_index(const char *p)
{
    idx_tok t, u;
    if (!find_tok(p, &t))
        return -1;
    if (!t.at)
        return 0;
    return find_tok(t.at + t.len, &u) && !u.at ? 1 : -1;
}

/* true when name matches pat; *i the index (-1 without a token). */
static bool pat_match(const char *pat, const char *name, long *i)
{
    *i = -1;
    idx_tok t;
    find_tok(pat, &t);
    if (!t.at)
        return strcmp(pat, name) == 0;
    size_t pre = (size_t)(t.at - pat);
    if (strncmp(pat, name, pre) != 0)
        return false;
    const char *d = name + pre, *e = d;
    long v = 0;
    while (*e >= '0' && *e <= '9' && v < INT_MAX / 10)
        v = v * 10 + (*e++ - '0');
    if (e == d || (*d == '0' && e - d > 1) || (*e >= '0' && *e <= '9') || v < t.b || (v - t.b) % t.a != 0)
        return false;
    *i = (v - t.b) / t.a;
    return strcmp(t.at + t.len, e) == 0;
}

/* pat with its token replaced by A i + B; false if it does not fit. */
static bool pat_expand(const char *pat, long i, char *buf, size_t size)
{
    idx_tok t;
    find_tok(pat, &t);
    int k = t.at ? snprintf(buf, size, "%.*s%ld%s", (int)(t.at - pat), pat, t.a * i + t.b, t.at + t.len)
                 : snprintf(buf, size, "%s", pat);
    return k >= 0 && (size_t)k < size;
}

/* ---- building maps ------------------------------------------------------------------------- */

pg_state_map *pg_state_map_new(const char *library)
{
    pg_state_map *m = calloc(1, sizeof *m);
    if (m)
        m->library = pg_fmt_strdup(library ? library : "map");
    if (!m || !m->library) {
        free(m);
        pg_set_error("pg_state_map_new: out of memory");
        return NULL;
    }
    return m;
}

static void entry_free(pg_map_entry *e)
{
    free((char *)e->ours);
    for (int k = 0; k < e->n_theirs; k++)
        free((char *)e->theirs[k]);
}

void pg_state_map_free(pg_state_map *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n; i++)
        entry_free(&m->entries[i]);
    free(m->entries);
    free(m->library);
    free(m);
}

/* NULL when e is well formed, else what is wrong. */
static const char *entry_problem(const pg_map_entry *e)
{
    bool one = e->op == PG_MAP_RENAME || e->op == PG_MAP_TRANSPOSE;
    if (e->op < PG_MAP_RENAME || e->op > PG_MAP_DROP)
        return "unknown op";
    if (e->n_theirs < 1 || e->n_theirs > PG_MAP_MAX_PARTS || (one && e->n_theirs != 1))
        return "n_theirs does not fit the op (1 for rename/transpose, 1..4 otherwise)";
    if ((e->op == PG_MAP_DROP) != (e->ours == NULL))
        return "ours must be NULL exactly for a drop";
    int want = e->ours ? count_index(e->ours) : -2;
    if (want == -1)
        return "a malformed or second index token in ours (one {i} or {Ai+B})";
    for (int k = 0; k < e->n_theirs; k++) {
        if (!e->theirs[k])
            return "a foreign name is NULL";
        int c = count_index(e->theirs[k]);
        if (c < 0)
            return "a malformed or second index token in a foreign name (one {i} or {Ai+B})";
        if (want >= 0 && c != want)
            return "ours and every foreign name must all carry one index token or none";
        if (e->op == PG_MAP_SPLIT && e->rows[k] < 0)
            return "negative rows";
    }
    return NULL;
}

static int add_entry(const char *fn, pg_state_map *m, const pg_map_entry *e)
{
    if (!m || !e) {
        pg_set_error("%s: map or entry is NULL", fn);
        return -1;
    }
    const char *bad = entry_problem(e);
    if (bad) {
        pg_set_error("%s: %s: entry for \"%s\": %s", fn, m->library,
                     e->ours ? e->ours : (e->n_theirs > 0 && e->theirs[0]) ? e->theirs[0] : "?", bad);
        return -1;
    }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        pg_map_entry *grown = realloc(m->entries, (size_t)cap * sizeof *grown);
        if (!grown) {
            pg_set_error("%s: out of memory", fn);
            return -1;
        }
        m->entries = grown;
        m->cap = cap;
    }
    pg_map_entry c = *e;
    bool ok = !e->ours || (c.ours = pg_fmt_strdup(e->ours)) != NULL;
    for (int k = 0; k < e->n_theirs; k++)
        c.theirs[k] = ok ? pg_fmt_strdup(e->theirs[k]) : NULL;
    for (int k = 0; ok && k < e->n_theirs; k++)
        ok = c.theirs[k] != NULL;
    if (!ok) {
        c.ours = e->ours && c.ours != e->ours ? c.ours : NULL;
        entry_free(&c);
        pg_set_error("%s: out of memory", fn);
        return -1;
    }
    m->entries[m->n++] = c;
    return 0;
}

int pg_state_map_add(pg_state_map *m, const pg_map_entry *e) { return add_entry("pg_state_map_add", m, e); }

int pg_state_map_rename(pg_state_map *m, const char *ours, const char *theirs)
{
    pg_map_entry e = {PG_MAP_RENAME, ours, 1, {theirs}, {0}, 0, 0};
    return add_entry("pg_state_map_rename", m, &e);
}

int pg_state_map_drop(pg_state_map *m, const char *theirs)
{
    pg_map_entry e = {PG_MAP_DROP, NULL, 1, {theirs}, {0}, 0, 0};
    return add_entry("pg_state_map_drop", m, &e);
}

/* The entry whose ours pattern matches name (and its index), or -1. */
static int find_entry(const pg_state_map *map, const char *name, long *i)
{
    for (int k = 0; k < map->n; k++)
        if (map->entries[k].ours && pat_match(map->entries[k].ours, name, i))
            return k;
    return -1;
}

static double mul_of(const pg_map_entry *e) { return e->mul != 0 ? e->mul : 1.0; }

/* ---- ours -> theirs ------------------------------------------------------------------------ */

/* Rows of each part of a SPLIT of a tensor with `rows` rows; false if they do not add up. */
static bool split_rows(const pg_map_entry *e, int64_t rows, int64_t *out)
{
    int64_t sum = 0;
    bool equal = true;
    for (int k = 0; k < e->n_theirs; k++)
        equal = equal && e->rows[k] == 0;
    for (int k = 0; k < e->n_theirs; k++) {
        out[k] = equal ? rows / e->n_theirs : e->rows[k];
        sum += out[k];
    }
    return sum == rows;
}

/* One foreign tensor from t: rows [r0, r0 + nrows) (all of them for a transpose), transformed. */
static pg_tensor *make_theirs(const pg_map_entry *e, const pg_tensor *t, int64_t r0, int64_t nrows)
{
    int64_t shape[PG_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    int64_t inner = t->ndim ? (t->shape[0] ? t->numel / t->shape[0] : 0) : 1;
    if (e->op == PG_MAP_TRANSPOSE) {
        shape[0] = t->shape[1];
        shape[1] = t->shape[0];
    } else if (t->ndim)
        shape[0] = nrows;
    pg_tensor *o = pg_tensor_empty(NULL, t->dtype, t->ndim, shape);
    if (!o)
        return NULL;
    double mul = mul_of(e);
    for (int64_t j = 0; j < o->numel; j++) {
        int64_t src = e->op == PG_MAP_TRANSPOSE ? (j % shape[1]) * shape[0] + j / shape[1] : r0 * inner + j;
        pg_set(o, j, pg_get(t, src) * mul + e->add); /* theirs = ours * mul + add */
    }
    return o;
}

static int push_owned(pg_tensor_list *l, const char *name, pg_tensor *t)
{
    if (t && pg_tensor_list_push(l, name, t) == 0)
        return 0;
    pg_tensor_free(t);
    return -1;
}

/* Appends the foreign tensors of one ours tensor; message in err on failure. */
static int one_to_theirs(const pg_map_entry *e, long i, const char *name, const pg_tensor *t, pg_tensor_list *out,
                         char *err, size_t esz)
{
    int64_t rows[PG_MAP_MAX_PARTS], r0 = 0;
    if (!t || !pg_dtype_is_float(t->dtype) || (e->op == PG_MAP_TRANSPOSE && t->ndim != 2) ||
        (e->op == PG_MAP_SPLIT && (t->ndim < 1 || !split_rows(e, t->shape[0], rows)))) {
        say(err, esz, "\"%s\" %s does not fit its %s entry", name, t ? PG_SHAPE_STR(t) : "NULL",
                 e->op == PG_MAP_SPLIT ? "split" : e->op == PG_MAP_TRANSPOSE ? "transpose" : "");
        return -1;
    }
    for (int k = 0; k < e->n_theirs; k++) {
        char fn[NAME_CAP];
        int64_t n = e->op == PG_MAP_SPLIT ? rows[k] : (t->ndim ? t->shape[0] : 1);
        if (!pat_expand(e->theirs[k], i, fn, sizeof fn) || push_owned(out, fn, make_theirs(e, t, r0, n)) != 0) {
            say(err, esz, "out of memory or a name longer than %d bytes", NAME_CAP - 1);
            return -1;
        }
        r0 += e->op == PG_MAP_SPLIT ? rows[k] : 0;
    }
    return 0;
}

static int to_theirs(const pg_fmt_ctx *c, const pg_state_map *map, const pg_tensor_list *ours, pg_tensor_list *out)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    char err[300] = "";
    for (int s = 0; s < ours->n && !err[0]; s++) {
        long i;
        int k = find_entry(map, ours->names[s], &i);
        if (k < 0)
            say(err, sizeof err, "\"%s\" has no entry in the map", ours->names[s]);
        else
            one_to_theirs(&map->entries[k], i, ours->names[s], ours->tensors[s], &l, err, sizeof err);
    }
    int old = out->n;
    for (int s = 0; s < l.n && !err[0]; s++)
        if (pg_tensor_list_push(out, l.names[s], l.tensors[s]) != 0)
            say(err, sizeof err, "out of memory");
    if (err[0]) {
        for (int s = old; s < out->n; s++) /* out as it was */
            free(out->names[s]);
        out->n = old;
        pg_tensor_list_free_all(&l);
        pg_fmt_fail(c, "%s: %s", map->library, err);
        return -1;
    }
    pg_tensor_list_free(&l);
    return 0;
}

int pg_state_map_to_theirs(const pg_state_map *map, const pg_tensor_list *ours, pg_tensor_list *out)
{
    pg_fmt_ctx c = {"pg_state_map_to_theirs", NULL};
    if (!map || !ours || !out || (ours->n > 0 && (!ours->names || !ours->tensors))) {
        pg_fmt_fail(&c, "map, list or output is NULL");
        return -1;
    }
    return to_theirs(&c, map, ours, out);
}

/* ---- theirs -> ours: the strict mapped load ------------------------------------------------ */

typedef struct load_ctx {
    const pg_state_map *map;
    const pg_tensor_list *theirs;
    bool *used; /* theirs index -> taken by an entry */
    char err[400];
} load_ctx;

/* Shape part k of entry e must have for parameter p (rows[] from split_rows). */
static void part_shape(const pg_map_entry *e, const pg_tensor *p, const int64_t *rows, int k, int64_t *shape)
{
    memcpy(shape, p->shape, sizeof p->shape);
    if (e->op == PG_MAP_TRANSPOSE) {
        shape[0] = p->shape[1];
        shape[1] = p->shape[0];
    } else if (e->op == PG_MAP_SPLIT)
        shape[0] = rows[k];
}

static bool shape_is(const pg_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim)
        return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d])
            return false;
    return true;
}

/* Finds and checks the foreign tensors of parameter `name`: src[k] their
 * indices (-1: absent, only for TIED); false with L->err set. */
static bool find_parts(load_ctx *L, const pg_map_entry *e, long i, const char *name, const pg_tensor *p, int *src)
{
    int64_t rows[PG_MAP_MAX_PARTS], shape[PG_MAX_DIMS];
    char fn[PG_MAP_MAX_PARTS][NAME_CAP], a[128];
    int found = 0;
    if ((e->op == PG_MAP_TRANSPOSE && p->ndim != 2) ||
        (e->op == PG_MAP_SPLIT && (p->ndim < 1 || !split_rows(e, p->shape[0], rows)))) {
        say(L->err, sizeof L->err, "parameter \"%s\" %s does not fit its entry", name, PG_SHAPE_STR(p));
        return false;
    }
    for (int k = 0; k < e->n_theirs; k++) {
        src[k] = pat_expand(e->theirs[k], i, fn[k], NAME_CAP) ? pg_tensor_list_find(L->theirs, fn[k]) : -1;
        if (src[k] < 0 && e->op != PG_MAP_TIED) {
            say(L->err, sizeof L->err, "missing \"%s\" (for %s)", fn[k], name);
            return false;
        }
        if (src[k] < 0)
            continue;
        found++;
        L->used[src[k]] = true;
        const pg_tensor *t = L->theirs->tensors[src[k]];
        part_shape(e, p, rows, k, shape);
        pg_tensor want = {.dtype = p->dtype, .ndim = p->ndim};
        memcpy(want.shape, shape, sizeof shape);
        if (!t || !pg_dtype_is_float(t->dtype) || !shape_is(t, p->ndim, shape)) {
            say(L->err, sizeof L->err, "\"%s\" is %s, %s needs %s%s (for %s %s)", fn[k],
                     t ? pg_shape_str(a, sizeof a, t) : "NULL", e->op == PG_MAP_SPLIT ? "its part of the split" : "it",
                     PG_SHAPE_STR(&want), t && !pg_dtype_is_float(t->dtype) ? " as F32 or F64" : "", name,
                     PG_SHAPE_STR(p));
            return false;
        }
    }
    if (!found) {
        say(L->err, sizeof L->err, "missing \"%s\" (for %s)", fn[0], name);
        return false;
    }
    return true;
}

/* Tied copies must agree bit for bit (the same dtype and values). */
static bool tied_equal(load_ctx *L, const pg_map_entry *e, long i, const int *src)
{
    const pg_tensor *first = NULL;
    int f = -1;
    for (int k = 0; k < e->n_theirs; k++) {
        if (src[k] < 0)
            continue;
        const pg_tensor *t = L->theirs->tensors[src[k]];
        if (!first) {
            first = t;
            f = src[k];
            continue;
        }
        bool same = t->dtype == first->dtype;
        for (int64_t j = 0; same && j < t->numel; j++) {
            double x = pg_get(t, j), y = pg_get(first, j);
            same = memcmp(&x, &y, sizeof x) == 0;
        }
        if (!same) {
            char fn[NAME_CAP];
            pat_expand(e->theirs[k], i, fn, sizeof fn);
            say(L->err, sizeof L->err, "tied copies \"%s\" and \"%s\" differ", L->theirs->names[f], fn);
            return false;
        }
    }
    return true;
}

/* The parameter's new value from its foreign tensor(s), in its dtype; NULL with L->err set. */
static pg_tensor *one_to_ours(load_ctx *L, const char *name, const pg_tensor *p)
{
    long i;
    int k = find_entry(L->map, name, &i), src[PG_MAP_MAX_PARTS];
    if (k < 0) {
        say(L->err, sizeof L->err, "parameter \"%s\" has no entry in the map", name);
        return NULL;
    }
    const pg_map_entry *e = &L->map->entries[k];
    if (!find_parts(L, e, i, name, p, src) || (e->op == PG_MAP_TIED && !tied_equal(L, e, i, src)))
        return NULL;
    pg_tensor *o = pg_tensor_empty(NULL, p->dtype, p->ndim, p->shape);
    if (!o) {
        say(L->err, sizeof L->err, "out of memory");
        return NULL;
    }
    double mul = mul_of(e);
    int64_t j = 0, cols = p->ndim == 2 ? p->shape[1] : 0;
    for (int q = 0; q < e->n_theirs; q++) {
        if (src[q] < 0)
            continue;
        const pg_tensor *t = L->theirs->tensors[src[q]];
        for (int64_t s = 0; s < t->numel; s++, j++) { /* ours = (theirs - add) / mul */
            int64_t from = e->op == PG_MAP_TRANSPOSE ? (j % cols) * p->shape[0] + j / cols : s;
            pg_set(o, j, (pg_get(t, from) - e->add) / mul);
        }
        if (e->op != PG_MAP_SPLIT) /* one copy is the whole parameter */
            break;
    }
    return o;
}

/* Foreign names neither used nor dropped: a strict load fails naming them. */
static void check_unexpected(load_ctx *L)
{
    int n = 0;
    size_t j = 0;
    char list[240] = "";
    for (int s = 0; s < L->theirs->n; s++) {
        bool dropped = L->used[s];
        for (int k = 0; !dropped && k < L->map->n; k++)
            for (int q = 0; !dropped && L->map->entries[k].op == PG_MAP_DROP && q < L->map->entries[k].n_theirs; q++) {
                long i;
                dropped = pat_match(L->map->entries[k].theirs[q], L->theirs->names[s], &i);
            }
        if (dropped)
            continue;
        char sh[PG_FMT_NAME_SHOW + 8];
        if (n < 3 && j < sizeof list)
            j += (size_t)snprintf(list + j, sizeof list - j, "%s\"%s\"", n ? ", " : "",
                                  pg_fmt_show(L->theirs->names[s], sh, sizeof sh));
        n++;
    }
    if (n)
        say(L->err, sizeof L->err, "%d unexpected: %s%s (no entry uses them and none drops them)", n, list,
                 n > 3 ? " and more" : "");
}

static bool theirs_ok(const pg_fmt_ctx *c, const pg_module *m, const pg_state_map *map, const pg_tensor_list *l)
{
    if (!m || !map || !l || (l->n > 0 && (!l->names || !l->tensors))) {
        pg_fmt_fail(c, "module, map or state is NULL");
        return false;
    }
    return pg_fmt_names_ok(c, l->n, l->names);
}

static int load_mapped(const pg_fmt_ctx *c, pg_module *m, const pg_state_map *map, const pg_tensor_list *theirs)
{
    if (!theirs_ok(c, m, map, theirs))
        return -1;
    pg_tensor_list params = pg_module_parameters(m), ours = {0, 0, NULL, NULL};
    load_ctx L = {map, theirs, calloc((size_t)theirs->n + 1, sizeof(bool)), ""};
    if (!L.used)
        snprintf(L.err, sizeof L.err, "out of memory");
    for (int s = 0; s < params.n && !L.err[0]; s++)
        if (push_owned(&ours, params.names[s], one_to_ours(&L, params.names[s], params.tensors[s])) != 0 &&
            !L.err[0])
            snprintf(L.err, sizeof L.err, "out of memory");
    if (!L.err[0])
        check_unexpected(&L);
    for (int s = 0; s < params.n && !L.err[0]; s++)
        pg_copy_into(params.tensors[s], ours.tensors[s]); /* checked: same shape and dtype */
    if (L.err[0])
        pg_fmt_fail(c, "%s: %s", map->library, L.err);
    free(L.used);
    pg_tensor_list_free_all(&ours);
    pg_tensor_list_free(&params);
    return L.err[0] ? -1 : 0;
}

int pg_module_load_state_mapped(pg_module *m, const pg_state_map *map, const pg_tensor_list *theirs)
{
    pg_fmt_ctx c = {"pg_module_load_state_mapped", NULL};
    return load_mapped(&c, m, map, theirs);
}

int pg_module_load_mapped(pg_module *m, const pg_state_map *map, const char *path)
{
    pg_fmt_ctx c = {"pg_module_load_mapped", path ? path : "(null)"};
    if (!m || !map) {
        pg_fmt_fail(&c, "module or map is NULL");
        return -1;
    }
    pg_tensor_list l = {0, 0, NULL, NULL};
    if (pg_st_read_file(&c, path, &l, NULL, NULL, NULL) != 0)
        return -1;
    int rc = load_mapped(&c, m, map, &l);
    pg_tensor_list_free_all(&l);
    return rc;
}

int pg_module_save_mapped(const pg_module *m, const pg_state_map *map, const char *path, int n_meta,
                          const char *const *meta_keys, const char *const *meta_values)
{
    pg_fmt_ctx c = {"pg_module_save_mapped", path ? path : "(null)"};
    if (!m || !map || !path) {
        pg_fmt_fail(&c, "module, map or path is NULL");
        return -1;
    }
    pg_tensor_list params = pg_module_parameters(m), out = {0, 0, NULL, NULL};
    int rc = to_theirs(&c, map, &params, &out);
    if (rc == 0)
        rc = pg_st_save(&c, path, &out, n_meta, meta_keys, meta_values);
    pg_tensor_list_free_all(&out);
    pg_tensor_list_free(&params);
    return rc;
}
