/* pg_tensor: errors, dtypes, allocation (heap or arena), element access. */
#include "tensor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------------- */

static _Thread_local char last_error[512];

const char *pg_last_error(void) { return last_error; }
void pg_clear_error(void) { last_error[0] = '\0'; }

void pg_set_error(const char *fmt, ...)
{
    if (!fmt) {
        snprintf(last_error, sizeof last_error, "pg_set_error: fmt is NULL");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

/* ---- dtypes and shapes ----------------------------------------------------- */

const char *pg_dtype_name(pg_dtype dtype)
{
    switch (dtype) {
    case PG_F32: return "f32";
    case PG_F64: return "f64";
    case PG_I64: return "i64";
    case PG_BOOL: return "bool";
    }
    return "?";
}

size_t pg_dtype_size(pg_dtype dtype)
{
    switch (dtype) {
    case PG_F32: return sizeof(float);
    case PG_F64: return sizeof(double);
    case PG_I64: return sizeof(int64_t);
    case PG_BOOL: return sizeof(uint8_t);
    }
    return 0;
}

bool pg_dtype_is_float(pg_dtype dtype) { return dtype == PG_F32 || dtype == PG_F64; }

/* "[2,3]" into buf (size >= 1), truncated to fit. */
static char *dims_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
    return buf;
}

char *pg_shape_str(char *buf, size_t size, const pg_tensor *t)
{
    if (!buf || !size) {
        pg_set_error("pg_shape_str: buf is %s", buf ? "empty (size 0)" : "NULL");
        return NULL;
    }
    if (!t) {
        snprintf(buf, size, "NULL");
        return buf;
    }
    size_t n = (size_t)snprintf(buf, size, "%s", pg_dtype_name(t->dtype));
    if (n < size)
        dims_str(buf + n, size - n, t->ndim, t->shape);
    return buf;
}

bool pg_same_shape(const pg_tensor *a, const pg_tensor *b)
{
    if (!a || !b) {
        pg_set_error("pg_same_shape: %s is NULL", a ? "b" : "a");
        return false;
    }
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

int pg_axis(const char *fn, int axis, int ndim)
{
    if (!fn) {
        pg_set_error("pg_axis: fn is NULL");
        return -1;
    }
    int a = axis < 0 ? axis + ndim : axis;
    if (a < 0 || a >= ndim) {
        pg_set_error("%s: axis %d out of range for a tensor of %d dims", fn, axis, ndim);
        return -1;
    }
    return a;
}

/* ---- arena ------------------------------------------------------------------ */

#define ARENA_ALIGN 64

typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    unsigned char *mem;
} chunk;

struct pg_arena {
    chunk *head;        /* current chunk (newest) */
    size_t total_used;  /* bytes handed out since the last reset, all chunks */
    size_t chunk_allocs;
};

static chunk *chunk_new(size_t size)
{
    chunk *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    c->mem = aligned_alloc(ARENA_ALIGN, size);
    if (!c->mem) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->used = 0;
    c->next = NULL;
    return c;
}

static void chunks_free(chunk *c)
{
    while (c) {
        chunk *next = c->next;
        free(c->mem);
        free(c);
        c = next;
    }
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* false (and an error naming fn) for a request no tensor could need */
static bool arena_size_ok(const char *fn, size_t bytes)
{
    if (bytes > (size_t)PG_MAX_TENSOR_BYTES) {
        pg_set_error("%s: %zu bytes is more than PG_MAX_TENSOR_BYTES (%lld)", fn, bytes,
                     (long long)PG_MAX_TENSOR_BYTES);
        return false;
    }
    return true;
}

/* true for a non-NULL arena; else an error naming fn */
static bool arena_given(const char *fn, const pg_arena *a)
{
    if (!a)
        pg_set_error("%s: arena is NULL", fn);
    return a != NULL;
}

pg_arena *pg_arena_new(size_t initial_bytes)
{
    if (!arena_size_ok("pg_arena_new", initial_bytes))
        return NULL;
    pg_arena *a = calloc(1, sizeof *a);
    if (a && initial_bytes) {
        a->head = chunk_new(round_up(initial_bytes, ARENA_ALIGN));
        a->chunk_allocs = 1;
        if (!a->head) {
            free(a);
            a = NULL;
        }
    }
    if (!a)
        pg_set_error("pg_arena_new: out of memory for %zu bytes", initial_bytes);
    return a;
}

void pg_arena_free(pg_arena *a)
{
    if (!a)
        return;
    chunks_free(a->head);
    free(a);
}

void *pg_arena_alloc(pg_arena *a, size_t bytes)
{
    if (!arena_given("pg_arena_alloc", a) || !arena_size_ok("pg_arena_alloc", bytes))
        return NULL;
    bytes = round_up(bytes ? bytes : 1, ARENA_ALIGN);
    if (!a->head || a->head->size - a->head->used < bytes) {
        size_t last = a->head ? a->head->size : 0;
        size_t size = 2 * last > bytes ? 2 * last : bytes;
        if (size > (size_t)PG_MAX_TENSOR_BYTES)
            size = bytes; /* doubling stops at the cap */
        if (size < ((size_t)1 << 20))
            size = (size_t)1 << 20;
        chunk *c = chunk_new(size);
        if (!c) {
            pg_set_error("pg_arena_alloc: out of memory for a chunk of %zu bytes", size);
            return NULL;
        }
        c->next = a->head;
        a->head = c;
        a->chunk_allocs++;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += bytes;
    a->total_used += bytes;
    return p;
}

void pg_arena_reset(pg_arena *a)
{
    if (!arena_given("pg_arena_reset", a))
        return;
    if (a->head && a->head->next) {
        /* several chunks: replace them by one that holds a whole step */
        size_t need = 0;
        for (chunk *c = a->head; c; c = c->next)
            need += c->size;
        chunks_free(a->head);
        a->head = chunk_new(need < (size_t)PG_MAX_TENSOR_BYTES ? need : (size_t)PG_MAX_TENSOR_BYTES);
        a->chunk_allocs += a->head != NULL; /* if it failed, the next alloc starts a chunk */
    }
    if (a->head)
        a->head->used = 0;
    a->total_used = 0;
}

size_t pg_arena_used(const pg_arena *a) { return arena_given("pg_arena_used", a) ? a->total_used : 0; }

size_t pg_arena_capacity(const pg_arena *a)
{
    size_t n = 0;
    for (chunk *c = arena_given("pg_arena_capacity", a) ? a->head : NULL; c; c = c->next)
        n += c->size;
    return n;
}

size_t pg_arena_chunk_allocs(const pg_arena *a)
{
    return arena_given("pg_arena_chunk_allocs", a) ? a->chunk_allocs : 0;
}

/* ---- tensors ---------------------------------------------------------------- */

static bool check_dtype(const char *fn, pg_dtype dtype)
{
    if ((unsigned)dtype > PG_BOOL) {
        pg_set_error("%s: unknown dtype %d", fn, (int)dtype);
        return false;
    }
    return true;
}

/* Validates a shape for a tensor of dtype and gives its element count. The
 * product of the nonzero sizes times the element size must stay within
 * PG_MAX_TENSOR_BYTES, so every byte count, stride and offset of the tensor
 * fits in int64 (and size_t) without overflow. It is checked as
 * span <= cap / size per dim, which cannot itself overflow. */
static bool check_shape(const char *fn, pg_dtype dtype, int ndim, const int64_t *shape, int64_t *numel)
{
    char s[256];
    if (!check_dtype(fn, dtype))
        return false;
    if (ndim < 0 || ndim > PG_MAX_DIMS) {
        pg_set_error("%s: ndim %d outside 0..%d", fn, ndim, PG_MAX_DIMS);
        return false;
    }
    if (ndim > 0 && !shape) {
        pg_set_error("%s: shape is NULL for ndim %d", fn, ndim);
        return false;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            pg_set_error("%s: negative size %lld in dim %d of shape %s", fn, (long long)shape[i], i,
                         dims_str(s, sizeof s, ndim, shape));
            return false;
        }
    const int64_t esize = (int64_t)pg_dtype_size(dtype), cap = PG_MAX_TENSOR_BYTES / esize;
    int64_t span = 1; /* product of the nonzero sizes */
    bool empty = false;
    for (int i = 0; i < ndim; i++) {
        empty = empty || shape[i] == 0;
        if (shape[i] > 0 && span > cap / shape[i]) {
            pg_set_error("%s: shape %s of %s is too large (more than %lld elements of %lld bytes: a tensor holds "
                         "at most PG_MAX_TENSOR_BYTES = %lld bytes)",
                         fn, dims_str(s, sizeof s, ndim, shape), pg_dtype_name(dtype), (long long)cap,
                         (long long)esize, (long long)PG_MAX_TENSOR_BYTES);
            return false;
        }
        span *= shape[i] > 0 ? shape[i] : 1;
    }
    *numel = empty ? 0 : span;
    return true;
}

static pg_tensor *header_new(pg_arena *a, pg_dtype dtype, int ndim, const int64_t *shape, int64_t numel)
{
    pg_tensor *t = a ? pg_arena_alloc(a, sizeof *t) : malloc(sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->numel = numel;
    t->in_arena = a != NULL;
    return t;
}

pg_tensor *pg_tensor_alloc(pg_arena *a, const char *fn, pg_dtype dtype, int ndim, const int64_t *shape)
{
    int64_t numel;
    if (!fn) {
        pg_set_error("pg_tensor_alloc: fn is NULL");
        return NULL;
    }
    if (!check_shape(fn, dtype, ndim, shape, &numel))
        return NULL;
    pg_tensor *t = header_new(a, dtype, ndim, shape, numel);
    if (!t) {
        pg_set_error("%s: out of memory for a tensor header", fn);
        return NULL;
    }
    /* numel * size <= PG_MAX_TENSOR_BYTES: no overflow, and round_up cannot wrap */
    size_t bytes = (size_t)numel * pg_dtype_size(dtype);
    if (a) {
        t->data = pg_arena_alloc(a, bytes);
    } else {
        t->data = aligned_alloc(ARENA_ALIGN, round_up(bytes ? bytes : 1, ARENA_ALIGN));
        t->owns_data = true;
    }
    if (!t->data) {
        char s[128];
        if (!a)
            free(t);
        pg_set_error("%s: out of memory for %s (%zu bytes)", fn, dims_str(s, sizeof s, ndim, shape), bytes);
        return NULL;
    }
    return t;
}

pg_tensor *pg_tensor_empty(pg_arena *a, pg_dtype dtype, int ndim, const int64_t *shape)
{
    return pg_tensor_alloc(a, "pg_tensor_empty", dtype, ndim, shape);
}

pg_tensor *pg_tensor_view(pg_arena *a, const pg_tensor *src, int ndim, const int64_t *shape)
{
    int64_t numel;
    if (!src) {
        pg_set_error("pg_tensor_view: source is NULL");
        return NULL;
    }
    if (!check_shape("pg_tensor_view", src->dtype, ndim, shape, &numel))
        return NULL;
    if (numel != src->numel) {
        char s[128];
        pg_set_error("pg_tensor_view: %lld elements cannot view %s", (long long)numel,
                     pg_shape_str(s, sizeof s, src));
        return NULL;
    }
    pg_tensor *t = header_new(a, src->dtype, ndim, shape, numel);
    if (!t) {
        pg_set_error("pg_tensor_view: out of memory");
        return NULL;
    }
    t->data = src->data;
    return t;
}

void pg_tensor_free(pg_tensor *t)
{
    if (!t || t->in_arena)
        return;
    if (t->grad && t->grad != t)
        pg_tensor_free(t->grad);
    if (t->owns_data)
        free(t->data);
    free(t);
}

/* t's data if t has dtype; NULL otherwise (an error for t NULL) */
static void *typed(const char *fn, const pg_tensor *t, pg_dtype dtype)
{
    if (!t)
        pg_set_error("%s: tensor is NULL", fn);
    return t && t->dtype == dtype ? t->data : NULL;
}

float *pg_f32(const pg_tensor *t) { return typed("pg_f32", t, PG_F32); }
double *pg_f64(const pg_tensor *t) { return typed("pg_f64", t, PG_F64); }
int64_t *pg_i64(const pg_tensor *t) { return typed("pg_i64", t, PG_I64); }
uint8_t *pg_bool(const pg_tensor *t) { return typed("pg_bool", t, PG_BOOL); }

double pg_get(const pg_tensor *t, int64_t i)
{
    if (!t) {
        pg_set_error("pg_get: tensor is NULL");
        return NAN;
    }
    switch (t->dtype) {
    case PG_F32: return ((const float *)t->data)[i];
    case PG_F64: return ((const double *)t->data)[i];
    case PG_I64: return (double)((const int64_t *)t->data)[i];
    case PG_BOOL: return ((const uint8_t *)t->data)[i];
    }
    return NAN;
}

/* A double to the int64 range without undefined behaviour (NaN -> 0). */
static int64_t to_i64(double v)
{
    if (v != v)
        return 0;
    if (v >= 9.2233720368547758e18)
        return INT64_MAX;
    if (v <= -9.2233720368547758e18)
        return INT64_MIN;
    return (int64_t)v;
}

void pg_set(pg_tensor *t, int64_t i, double v)
{
    if (!t) {
        pg_set_error("pg_set: tensor is NULL");
        return;
    }
    switch (t->dtype) {
    case PG_F32: ((float *)t->data)[i] = (float)v; break;
    case PG_F64: ((double *)t->data)[i] = v; break;
    case PG_I64: ((int64_t *)t->data)[i] = to_i64(v); break;
    case PG_BOOL: ((uint8_t *)t->data)[i] = v != 0; break;
    }
}

double pg_item(const pg_tensor *t)
{
    if (!t || t->numel != 1) {
        char s[128];
        pg_set_error("pg_item: need exactly one element, got %s", pg_shape_str(s, sizeof s, t));
        return NAN;
    }
    return pg_get(t, 0);
}
