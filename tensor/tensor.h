/* posgrad tensor layer: the pg_tensor type, dtypes, shapes, memory (heap or
 * arena), errors, the seeded random generator and creation functions.
 * This layer knows nothing of gradients; autograd/ builds on it. */
#ifndef PG_TENSOR_H
#define PG_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_MAX_DIMS 8

typedef enum {
    PG_F32 = 0, /* float, for speed */
    PG_F64 = 1, /* double, for gradient checking and parity */
    PG_I64 = 2, /* int64_t: token ids, indices, integer positions */
    PG_BOOL = 3 /* uint8_t 0/1: masks made by comparisons */
} pg_dtype;

struct pg_node;  /* autograd: the recorded op that produced a tensor */
struct pg_graph; /* autograd: arena + tape */
typedef struct pg_arena pg_arena;

/* A contiguous row-major tensor. Shape entries are >= 0; ndim 0 is a scalar. */
typedef struct pg_tensor {
    pg_dtype dtype;
    int ndim;
    int64_t shape[PG_MAX_DIMS];
    int64_t numel;
    void *data;
    /* autograd bookkeeping (owned by autograd/, zero for plain tensors) */
    bool requires_grad;
    struct pg_tensor *grad;   /* accumulated gradient, same shape and dtype */
    struct pg_node *node;     /* op that produced this tensor, NULL for leaves */
    struct pg_graph *graph;   /* graph whose arena holds it, NULL on the heap */
    /* memory */
    bool in_arena;  /* struct and data live in an arena: freed by its reset */
    bool owns_data; /* heap tensor whose data this struct frees */
    /* a module registered it as a parameter without weight decay (nn/module.h);
     * optim's default decay groups read it */
    bool no_decay;
} pg_tensor;

/* ---- errors ---------------------------------------------------------------
 * posgrad never aborts, exits or prints on bad input. A failing call records a
 * message naming the function and the shapes and returns NULL or an error
 * code. The last message of the calling thread is pg_last_error(); graphs also
 * keep their first (autograd/graph.h).
 *
 * NULL: every public function given NULL where it needs an object fails that
 * way (NULL, -1, NaN for a number, false for a predicate, 0 for a count or
 * checksum), and a function without a result records the message and does
 * nothing. The exceptions are documented where they are declared: the *_free
 * functions (NULL is a no-op), g NULL for "no graph" (autograd/graph.h), and
 * optional arguments (options, biases, generators) whose NULL means "none" or
 * "the defaults". tests/test_null_args.c calls every public function with
 * NULL in every pointer position. */
const char *pg_last_error(void);
void pg_clear_error(void);
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
void pg_set_error(const char *fmt, ...);

/* Writes "f32[2,3]" ("NULL" for t NULL) into buf (always NUL-terminated);
 * returns buf, or NULL for buf NULL or size 0. */
char *pg_shape_str(char *buf, size_t size, const pg_tensor *t);
/* PG_SHAPE_STR(t): pg_shape_str into a fresh 128-byte buffer (a compound
 * literal, alive until the end of the enclosing block), for message
 * arguments: pg_set_error("f: x is %s", PG_SHAPE_STR(x)). Longer shapes are
 * truncated. */
#define PG_SHAPE_STR(t) pg_shape_str((char[128]){0}, 128, (t))
/* Short dtype name: "f32", "f64", "i64", "bool". */
const char *pg_dtype_name(pg_dtype dtype);
size_t pg_dtype_size(pg_dtype dtype);
bool pg_dtype_is_float(pg_dtype dtype);

/* ---- shapes --------------------------------------------------------------- */
/* PG_SHAPE(2, 3) expands to the two arguments `2, (const int64_t[]){2, 3}`. */
#define PG_SHAPE(...)                                                          \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),                 \
        (const int64_t[]) { __VA_ARGS__ }
bool pg_same_shape(const pg_tensor *a, const pg_tensor *b); /* false (and an error) for NULL */
/* Normalises a possibly negative axis; -1 (and an error naming fn) if out of range. */
int pg_axis(const char *fn, int axis, int ndim);

/* ---- arena: bump allocator for everything one step of a model makes --------
 * Chunks are kept across resets; a reset after growth merges them into one
 * chunk, so a loop of identical steps allocates nothing after its first. */
pg_arena *pg_arena_new(size_t initial_bytes); /* NULL + error on OOM or beyond PG_MAX_TENSOR_BYTES */
void pg_arena_free(pg_arena *a);                /* NULL: no-op */
void *pg_arena_alloc(pg_arena *a, size_t bytes); /* 64-byte aligned; NULL + error on OOM or beyond the cap */
void pg_arena_reset(pg_arena *a);
/* The getters return 0 (and record an error) for a NULL arena. */
size_t pg_arena_used(const pg_arena *a);
size_t pg_arena_capacity(const pg_arena *a);
size_t pg_arena_chunk_allocs(const pg_arena *a); /* malloc calls so far */

/* ---- allocation -----------------------------------------------------------
 * `arena` NULL: the tensor lives on the heap and its owner frees it with
 * pg_tensor_free. Otherwise it lives in the arena until the arena's reset.
 *
 * Size rule: sizes are >= 0, and the product of the nonzero sizes times the
 * element size is at most PG_MAX_TENSOR_BYTES. 2^47 bytes (128 TiB) is the
 * user address space Linux gives a process on x86-64 and AArch64, so no
 * machine posgrad runs on could hold more (PTRDIFF_MAX where that is smaller,
 * on 32-bit machines). A shape beyond it is refused before anything is
 * allocated, with a message naming the function and the shape:
 *   pg_zeros: shape [4611686018427387903,4] of f32 is too large (...)
 * so every element count, byte count and offset of a tensor fits in int64
 * and size_t. A smaller request that malloc cannot satisfy fails with
 * "<fn>: out of memory for [..] (N bytes)". (Under AddressSanitizer, whose
 * allocator refuses more than 1 TiB by aborting, requests between its limit
 * and this one still abort unless ASAN_OPTIONS=allocator_may_return_null=1.) */
#define PG_MAX_TENSOR_BYTES                                                                                    \
    ((int64_t)PTRDIFF_MAX < (INT64_C(1) << 47) ? (int64_t)PTRDIFF_MAX : (INT64_C(1) << 47))
pg_tensor *pg_tensor_empty(pg_arena *arena, pg_dtype dtype, int ndim, const int64_t *shape);
/* pg_tensor_empty whose errors name fn instead (for functions built on it). */
pg_tensor *pg_tensor_alloc(pg_arena *arena, const char *fn, pg_dtype dtype, int ndim, const int64_t *shape);
void pg_tensor_free(pg_tensor *t); /* heap tensors and their grad; NULL and arena tensors: no-op */
/* A tensor header sharing `data` (not owned). */
pg_tensor *pg_tensor_view(pg_arena *arena, const pg_tensor *src, int ndim, const int64_t *shape);

/* typed data access: NULL when the dtype differs (or t is NULL: an error) */
float *pg_f32(const pg_tensor *t);
double *pg_f64(const pg_tensor *t);
int64_t *pg_i64(const pg_tensor *t);
uint8_t *pg_bool(const pg_tensor *t);
/* element i of the flat data as a double (any dtype); no bounds check; NaN for t NULL */
double pg_get(const pg_tensor *t, int64_t i);
void pg_set(pg_tensor *t, int64_t i, double v); /* i64: truncates, saturates, NaN -> 0 */
/* the single element of a tensor with numel 1 (NaN and an error otherwise) */
double pg_item(const pg_tensor *t);

/* ---- random numbers -------------------------------------------------------
 * SplitMix64 used as a counter-based generator: draw number i of a stream is
 * mix(seed + (counter + i + 1) * golden), so a fill gives the same numbers
 * whatever the thread count, and the state is just (seed, counter). */
typedef struct pg_rng {
    uint64_t seed;
    uint64_t counter;
} pg_rng;
pg_rng pg_rng_init(uint64_t seed);
uint64_t pg_rng_next_u64(pg_rng *r); /* r NULL: 0 and an error */
double pg_rng_uniform(pg_rng *r); /* [0, 1), 53 random bits; r NULL: NaN and an error */
double pg_rng_normal(pg_rng *r);  /* N(0, 1); r NULL: NaN and an error */
/* The uniform [0, 1) that draw i from r's position would give (i = 0: what pg_rng_uniform
 * returns next), without advancing r: pg_fill_bernoulli(t, r, p) sets element i to
 * pg_rng_uniform_at(r, i) < p. For kernels that regenerate a stream's values in any
 * order (the fused attention's dropout). r NULL: NaN and an error. */
double pg_rng_uniform_at(const pg_rng *r, uint64_t i);
/* u[k] = pg_rng_uniform_at(r, i + k) for k < n (a loop that vectorises); r or u NULL,
 * n < 0: nothing written and an error. */
void pg_rng_uniforms_at(const pg_rng *r, uint64_t i, int64_t n, double *u);

/* ---- creation on an arena (NULL: heap) -------------------------------------
 * autograd/ wraps these as pg_zeros(g, ...) etc.; most code uses those. */
pg_tensor *pg_tensor_full(pg_arena *a, pg_dtype dtype, int ndim, const int64_t *shape, double value);
pg_tensor *pg_tensor_from_array(pg_arena *a, pg_dtype dtype, int ndim, const int64_t *shape,
                                const void *values); /* values: numel elements of dtype */
pg_tensor *pg_tensor_copy(pg_arena *a, const pg_tensor *src);
pg_tensor *pg_tensor_cast(pg_arena *a, const pg_tensor *src, pg_dtype dtype);

/* ---- fills (any dtype; return 0, or -1 with an error) ----------------------- */
int pg_fill(pg_tensor *t, double value);
int pg_fill_arange(pg_tensor *t, double start, double step);        /* t[i] = start + i*step */
int pg_fill_linspace(pg_tensor *t, double start, double end);       /* numel points, ends included */
int pg_fill_uniform(pg_tensor *t, pg_rng *r, double low, double high);
int pg_fill_normal(pg_tensor *t, pg_rng *r, double mean, double std);
int pg_fill_bernoulli(pg_tensor *t, pg_rng *r, double p);           /* 1 with probability p */
int pg_copy_into(pg_tensor *dst, const pg_tensor *src);             /* same numel, casts dtype */

#endif
