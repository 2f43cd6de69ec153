/* Reading safetensors files (the format: safetensors.h). The file is
 * untrusted, so nothing is allocated for a tensor before the whole header has
 * passed: a small strict JSON parser (json.c) builds a tree of the header;
 * the tree is checked against the safetensors schema (dtype, shape,
 * data_offsets, nothing else); the data layout is checked (offsets in range,
 * sizes matching shapes, no overlap, no hole, as the reference implementation
 * demands); only then are tensors allocated and filled (BOOL bytes must be 0
 * or 1). The caller's list is appended to only when everything succeeded. */
#include "safetensors_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

const char *pg_st_dtype_name(pg_dtype d)
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
    uint64_t begin, end; /* data_offsets, relative to the end of the header */
} st_entry;

typedef struct st_header {
    pg_json_value root;
    int n;
    st_entry *e;               /* in header order */
    const pg_json_value *meta; /* the __metadata__ object or NULL */
} st_header;

static void header_free(st_header *h)
{
    pg_json_free(&h->root);
    free(h->e);
    memset(h, 0, sizeof *h);
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

static int entry_dtype(const pg_fmt_ctx *c, const char *nm, const pg_json_value *v, st_entry *e)
{
    if (v->type != PG_JSON_STR) {
        pg_fmt_fail(c, "tensor \"%s\": dtype is not a string", nm);
        return -1;
    }
    for (size_t i = 0; i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++)
        if (!strcmp(v->str, ST_DTYPES[i].name)) {
            e->dtype = ST_DTYPES[i].dtype;
            return 0;
        }
    for (size_t i = 0; i < sizeof ST_OTHER_DTYPES / sizeof ST_OTHER_DTYPES[0]; i++)
        if (!strcmp(v->str, ST_OTHER_DTYPES[i])) {
            pg_fmt_fail(c, "tensor \"%s\": unsupported dtype %s (posgrad reads F32, F64, I64 and BOOL)", nm, v->str);
            return -1;
        }
    char s[PG_FMT_NAME_SHOW + 8];
    pg_fmt_fail(c, "tensor \"%s\": unknown dtype \"%s\"", nm, pg_fmt_show(v->str, s, sizeof s));
    return -1;
}

/* numel as pg_tensor_empty computes it; rejects shapes whose nonzero sizes
 * multiply past INT64_MAX / 16 (whatever their order), so no later
 * multiplication by a dtype size can overflow. */
static int entry_shape(const pg_fmt_ctx *c, const char *nm, const pg_json_value *v, st_entry *e)
{
    if (v->type != PG_JSON_ARR) {
        pg_fmt_fail(c, "tensor \"%s\": shape is not an array", nm);
        return -1;
    }
    if (v->n > PG_MAX_DIMS) {
        pg_fmt_fail(c, "tensor \"%s\": shape has %d dims, posgrad supports at most %d", nm, v->n, PG_MAX_DIMS);
        return -1;
    }
    int64_t nonzero = 1, numel = 1;
    for (int i = 0; i < v->n; i++) {
        const pg_json_value *d = &v->items[i];
        if (d->type != PG_JSON_INT || d->num < 0) {
            pg_fmt_fail(c, "tensor \"%s\": shape entry %d is not a non-negative integer", nm, i);
            return -1;
        }
        if (d->num > 0 && nonzero > INT64_MAX / 16 / d->num) {
            pg_fmt_fail(c, "tensor \"%s\": shape is too large (more than 2^59 elements)", nm);
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

static int entry_offsets(const pg_fmt_ctx *c, const char *nm, const pg_json_value *v, st_entry *e, uint64_t data_size)
{
    if (v->type != PG_JSON_ARR || v->n != 2 || v->items[0].type != PG_JSON_INT || v->items[1].type != PG_JSON_INT ||
        v->items[0].num < 0 || v->items[1].num < 0) {
        pg_fmt_fail(c, "tensor \"%s\": data_offsets is not [begin, end] with non-negative integers", nm);
        return -1;
    }
    e->begin = (uint64_t)v->items[0].num;
    e->end = (uint64_t)v->items[1].num;
    if (e->begin > e->end) {
        pg_fmt_fail(c, "tensor \"%s\": data_offsets [%llu, %llu] end before they begin", nm,
                    (unsigned long long)e->begin, (unsigned long long)e->end);
        return -1;
    }
    if (e->end > data_size) {
        pg_fmt_fail(c, "tensor \"%s\": data_offsets [%llu, %llu] run past the %llu bytes of data", nm,
                    (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)data_size);
        return -1;
    }
    return 0;
}

/* One tensor entry {"dtype": .., "shape": [..], "data_offsets": [b, e]}, nothing else. */
static int parse_entry(const pg_fmt_ctx *c, const char *name, const pg_json_value *v, st_entry *e, uint64_t data_size)
{
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    char nm[PG_FMT_NAME_SHOW + 8];
    pg_fmt_show(name, nm, sizeof nm);
    if (!name[0]) {
        pg_fmt_fail(c, "a tensor has an empty name");
        return -1;
    }
    if (v->type != PG_JSON_OBJ) {
        pg_fmt_fail(c, "tensor \"%s\": entry is not an object", nm);
        return -1;
    }
    const pg_json_value *f[3] = {NULL, NULL, NULL};
    for (int i = 0; i < v->n; i++) {
        int k = 0;
        while (k < 3 && strcmp(v->keys[i], fields[k]))
            k++;
        if (k == 3) {
            char s[PG_FMT_NAME_SHOW + 8];
            pg_fmt_fail(c, "tensor \"%s\": unknown field \"%s\" (expected dtype, shape, data_offsets)", nm,
                        pg_fmt_show(v->keys[i], s, sizeof s));
            return -1;
        }
        f[k] = &v->items[i];
    }
    for (int k = 0; k < 3; k++)
        if (!f[k]) {
            pg_fmt_fail(c, "tensor \"%s\": missing field \"%s\"", nm, fields[k]);
            return -1;
        }
    e->name = name;
    if (entry_dtype(c, nm, f[0], e) != 0 || entry_shape(c, nm, f[1], e) != 0 ||
        entry_offsets(c, nm, f[2], e, data_size) != 0)
        return -1;
    uint64_t need = (uint64_t)e->numel * pg_dtype_size(e->dtype);
    if (e->end - e->begin != need) {
        char s[200];
        pg_fmt_fail(c, "tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, shape %s of %s needs %llu", nm,
                    (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)(e->end - e->begin),
                    shape_str(e->ndim, e->shape, s, sizeof s), f[0]->str, (unsigned long long)need);
        return -1;
    }
    return 0;
}

static int check_metadata(const pg_fmt_ctx *c, const pg_json_value *v)
{
    if (v->type != PG_JSON_OBJ) {
        pg_fmt_fail(c, "__metadata__ is not an object of strings");
        return -1;
    }
    for (int i = 0; i < v->n; i++)
        if (v->items[i].type != PG_JSON_STR) {
            char s[PG_FMT_NAME_SHOW + 8];
            pg_fmt_fail(c, "__metadata__ value of \"%s\" is not a string", pg_fmt_show(v->keys[i], s, sizeof s));
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
static int check_layout(const pg_fmt_ctx *c, const st_header *h, uint64_t data_size)
{
    const st_entry **sorted = malloc((size_t)(h->n ? h->n : 1) * sizeof *sorted);
    if (!sorted) {
        pg_fmt_fail(c, "out of memory");
        return -1;
    }
    for (int i = 0; i < h->n; i++)
        sorted[i] = &h->e[i];
    qsort(sorted, (size_t)h->n, sizeof *sorted, cmp_entry);
    uint64_t at = 0;
    int rc = 0;
    for (int i = 0; i < h->n && rc == 0; i++) {
        char a[PG_FMT_NAME_SHOW + 8], b[PG_FMT_NAME_SHOW + 8];
        const st_entry *e = sorted[i];
        if (e->begin < at) {
            const st_entry *p = sorted[i - 1];
            pg_fmt_fail(c, "tensors \"%s\" [%llu, %llu] and \"%s\" [%llu, %llu] overlap",
                        pg_fmt_show(p->name, a, sizeof a), (unsigned long long)p->begin, (unsigned long long)p->end,
                        pg_fmt_show(e->name, b, sizeof b), (unsigned long long)e->begin, (unsigned long long)e->end);
            rc = -1;
        } else if (e->begin > at) {
            pg_fmt_fail(c, "bytes [%llu, %llu) of the data belong to no tensor (safetensors forbids holes)",
                        (unsigned long long)at, (unsigned long long)e->begin);
            rc = -1;
        }
        at = e->end;
    }
    if (rc == 0 && at != data_size) {
        pg_fmt_fail(c, "the tensors end at byte %llu of the data, but the data has %llu bytes", (unsigned long long)at,
                    (unsigned long long)data_size);
        rc = -1;
    }
    free(sorted);
    return rc;
}

/* Parses and checks the header text (len bytes) against a data section of data_size bytes. */
static int header_parse(const pg_fmt_ctx *c, const char *text, size_t len, uint64_t data_size, st_header *h)
{
    memset(h, 0, sizeof *h);
    if (len == 0 || text[0] != '{') {
        pg_fmt_fail(c, "the header does not start with '{'");
        return -1;
    }
    pg_json_parser p = {.s = text, .len = len};
    if (pg_json_parse(&p, &h->root) != 0) {
        pg_fmt_fail(c, "header JSON: %s at byte %zu of the header", p.err, p.err_pos);
        return -1;
    }
    const pg_json_value *root = &h->root;
    h->e = malloc((size_t)(root->n ? root->n : 1) * sizeof *h->e);
    if (!h->e) {
        pg_fmt_fail(c, "out of memory");
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

static int src_read(const pg_fmt_ctx *c, const st_src *s, uint64_t off, void *dst, uint64_t n)
{
    if (n == 0)
        return 0;
    if (s->buf) {
        memcpy(dst, s->buf + off, (size_t)n);
        return 0;
    }
    if (off > (uint64_t)INT64_MAX || fseeko(s->f, (off_t)off, SEEK_SET) != 0 || fread(dst, 1, (size_t)n, s->f) != n) {
        pg_fmt_fail(c, "read failed at byte %llu: %s", (unsigned long long)off,
                    ferror(s->f) ? strerror(errno) : "the file is shorter than when it was opened");
        return -1;
    }
    return 0;
}

/* Copies the metadata pairs into malloc'd arrays. */
static int copy_meta(const pg_fmt_ctx *c, const pg_json_value *meta, int *n, char ***keys, char ***values)
{
    int m = meta ? meta->n : 0;
    char **k = NULL, **v = NULL;
    if (m > 0) {
        k = calloc((size_t)m, sizeof *k);
        v = calloc((size_t)m, sizeof *v);
        bool ok = k && v;
        for (int i = 0; ok && i < m; i++) {
            k[i] = pg_fmt_strdup(meta->keys[i]);
            v[i] = pg_fmt_strdup(meta->items[i].str);
            ok = k[i] && v[i];
        }
        if (!ok) {
            pg_fmt_free_strings(m, k);
            pg_fmt_free_strings(m, v);
            pg_fmt_fail(c, "out of memory");
            return -1;
        }
    }
    *n = m;
    *keys = k;
    *values = v;
    return 0;
}

/* Reads one checked entry into a new heap tensor. */
static pg_tensor *read_tensor(const pg_fmt_ctx *c, const st_src *s, uint64_t data_start, const st_entry *e)
{
    char nm[PG_FMT_NAME_SHOW + 8];
    pg_tensor *t = pg_tensor_empty(NULL, e->dtype, e->ndim, e->shape);
    if (!t) {
        pg_fmt_fail(c, "tensor \"%s\": %s", pg_fmt_show(e->name, nm, sizeof nm), pg_last_error());
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
                pg_fmt_fail(c, "tensor \"%s\": BOOL element %lld is %u, not 0 or 1",
                            pg_fmt_show(e->name, nm, sizeof nm), (long long)i, b[i]);
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
static int read_tensors(const pg_fmt_ctx *c, const st_src *s, uint64_t data_start, const st_header *h,
                        pg_tensor_list *l)
{
    for (int i = 0; i < h->n; i++) {
        pg_tensor *t = read_tensor(c, s, data_start, &h->e[i]);
        if (!t)
            return -1;
        if (pg_tensor_list_push(l, h->e[i].name, t) != 0) {
            pg_tensor_free(t);
            pg_fmt_fail(c, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* The whole load: length, header, checks, tensors, metadata; out is appended
 * to only when everything succeeded. keys may be NULL (no metadata wanted). */
static int st_read(const pg_fmt_ctx *c, const st_src *s, pg_tensor_list *out, int *n_meta, char ***keys, char ***values)
{
    if (!out) {
        pg_fmt_fail(c, "output list is NULL");
        return -1;
    }
    if (s->size < 8) {
        pg_fmt_fail(c, "%llu bytes is too short for the 8-byte header length", (unsigned long long)s->size);
        return -1;
    }
    unsigned char len8[8];
    if (src_read(c, s, 0, len8, 8) != 0)
        return -1;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | len8[i]; /* little-endian */
    if (hlen > s->size - 8) {
        pg_fmt_fail(c, "header length %llu exceeds the %llu bytes after the length field", (unsigned long long)hlen,
                    (unsigned long long)(s->size - 8));
        return -1;
    }
    if (hlen > PG_ST_MAX_HEADER) {
        pg_fmt_fail(c, "header length %llu exceeds the limit of %llu bytes", (unsigned long long)hlen,
                    PG_ST_MAX_HEADER);
        return -1;
    }
    const char *text = s->buf ? (const char *)s->buf + 8 : NULL;
    char *copy = NULL;
    if (!s->buf) {
        text = copy = malloc(hlen ? (size_t)hlen : 1);
        if (!copy) {
            pg_fmt_fail(c, "out of memory for a %llu-byte header", (unsigned long long)hlen);
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
        pg_fmt_fail(c, "out of memory");
        pg_fmt_free_strings(nm, k);
        pg_fmt_free_strings(nm, v);
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
int pg_st_read_file(const pg_fmt_ctx *c, const char *path, pg_tensor_list *out, int *n_meta, char ***keys,
                    char ***values)
{
    if (!path) {
        pg_fmt_fail(c, "path is NULL");
        return -1;
    }
    /* O_NONBLOCK: a FIFO or device is refused below instead of blocking the open */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        pg_fmt_fail(c, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    FILE *f = NULL;
    int rc = -1;
    if (fstat(fd, &st) != 0)
        pg_fmt_fail(c, "cannot stat: %s", strerror(errno));
    else if (!S_ISREG(st.st_mode))
        pg_fmt_fail(c, "not a regular file");
    else if (!(f = fdopen(fd, "rb")))
        pg_fmt_fail(c, "cannot open: %s", strerror(errno));
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
    pg_fmt_ctx c = {"pg_safetensors_load", path ? path : "(null)"};
    return pg_st_read_file(&c, path, out, NULL, NULL, NULL);
}

int pg_safetensors_load_meta(const char *path, pg_tensor_list *out, int *n_meta, char ***keys, char ***values)
{
    pg_fmt_ctx c = {"pg_safetensors_load_meta", path ? path : "(null)"};
    if (!n_meta || !keys || !values) {
        pg_fmt_fail(&c, "n_meta, keys or values is NULL");
        return -1;
    }
    *n_meta = 0;
    *keys = *values = NULL;
    return pg_st_read_file(&c, path, out, n_meta, keys, values);
}

int pg_safetensors_parse(const void *data, size_t size, pg_tensor_list *out)
{
    pg_fmt_ctx c = {"pg_safetensors_parse", "<buffer>"};
    if (!data && size) {
        pg_fmt_fail(&c, "data is NULL");
        return -1;
    }
    st_src s = {data ? data : (const void *)"", NULL, size};
    return st_read(&c, &s, out, NULL, NULL, NULL);
}
