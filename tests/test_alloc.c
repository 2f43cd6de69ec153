/* Allocation limits (issue 11, item 5): a shape no machine could hold is
 * refused before anything is allocated, with a message naming the function
 * and the shape, on every path that makes a tensor; and a request that malloc
 * really refuses is an error too, never a crash. These run under the default
 * AddressSanitizer options (no allocator_may_return_null): a huge request
 * reaching malloc would abort the run. */
#include "testutil.h"

#include <sys/resource.h>
#include <unistd.h>

#define HUGE2 PG_SHAPE((int64_t)1 << 40, (int64_t)1 << 40) /* 2^80 elements */
#define INT64_MAX1 PG_SHAPE(INT64_MAX)
#define OVER_F64 PG_SHAPE(((int64_t)1 << 44) + 1) /* one f64 more than 2^47 bytes */

/* The call fails with a message starting "fn: shape <shape> " and saying "too large". */
static void assert_too_large(const void *r, const char *fn, const char *shape, const char *call)
{
    const char *e = pg_last_error();
    char head[256];
    snprintf(head, sizeof head, "%s: shape %s ", fn, shape);
    cr_assert_null(r, "%s should fail", call);
    cr_assert(strncmp(e, head, strlen(head)) == 0 && strstr(e, "is too large"), "%s: error \"%s\"", call, e);
}
#define TOO_LARGE(fn, shape, expr)                                                                             \
    do {                                                                                                       \
        pg_clear_error();                                                                                      \
        assert_too_large((expr), fn, shape, #expr);                                                            \
    } while (0)

Test(alloc, huge_shapes_are_refused_by_every_creator)
{
    pg_graph *g = pg_graph_new();
    pg_rng r = pg_rng_init(1);
    double v = 0;
    for (int in_graph = 0; in_graph < 2; in_graph++) {
        pg_graph *gg = in_graph ? g : NULL;
        TOO_LARGE("pg_zeros", "[1099511627776,1099511627776]", pg_zeros(gg, PG_F32, HUGE2));
        TOO_LARGE("pg_ones", "[9223372036854775807]", pg_ones(gg, PG_F64, INT64_MAX1));
        TOO_LARGE("pg_full", "[17592186044417]", pg_full(gg, PG_F64, OVER_F64, 1.0));
        TOO_LARGE("pg_empty", "[17592186044417]", pg_empty(gg, PG_I64, OVER_F64));
        TOO_LARGE("pg_rand", "[1099511627776,1099511627776]", pg_rand(gg, PG_F32, HUGE2, &r));
        TOO_LARGE("pg_randn", "[9223372036854775807]", pg_randn(gg, PG_F64, INT64_MAX1, &r));
        TOO_LARGE("pg_bernoulli", "[9223372036854775807]", pg_bernoulli(gg, PG_BOOL, INT64_MAX1, 0.5, &r));
        TOO_LARGE("pg_from_array", "[9223372036854775807]", pg_from_array(gg, PG_F64, INT64_MAX1, &v));
        TOO_LARGE("pg_linspace", "[9223372036854775807]", pg_linspace(gg, PG_F64, 0, 1, INT64_MAX));
        TOO_LARGE("pg_arange", "[999999999999999]", pg_arange(gg, PG_F64, 0, 999999999999999.0, 1));
        TOO_LARGE("pg_tensor_empty", "[1099511627776,1099511627776]",
                  pg_tensor_empty(pg_graph_arena(gg), PG_F32, HUGE2));
        TOO_LARGE("pg_tensor_full", "[17592186044417]", pg_tensor_full(pg_graph_arena(gg), PG_F64, OVER_F64, 0));
        TOO_LARGE("pg_tensor_from_array", "[9223372036854775807]",
                  pg_tensor_from_array(pg_graph_arena(gg), PG_F64, INT64_MAX1, &v));
    }
    /* the product of the nonzero sizes counts even when another size is 0 */
    TOO_LARGE("pg_zeros", "[0,1099511627776,1099511627776]", pg_zeros(NULL, PG_F32, PG_SHAPE(0, 1LL << 40, 1LL << 40)));
    /* an empty tensor whose other sizes stay within the cap is fine */
    pg_tensor *e = pg_zeros(g, PG_F64, PG_SHAPE(0, 1LL << 44));
    cr_assert_not_null(e, "%s", pg_last_error());
    cr_assert_eq(e->numel, 0);
    pg_graph_free(g);
}

Test(alloc, negative_sizes_name_the_function_and_shape)
{
    ASSERT_FAILS(pg_zeros(NULL, PG_F32, PG_SHAPE(2, -3)), "pg_zeros: negative size -3 in dim 1 of shape [2,-3]");
    ASSERT_FAILS(pg_empty(NULL, PG_F32, PG_SHAPE(-1)), "pg_empty: negative size -1 in dim 0 of shape [-1]");
    ASSERT_FAILS(pg_linspace(NULL, PG_F32, 0, 1, -5), "pg_linspace: negative size -5 in dim 0 of shape [-5]");
    ASSERT_FAILS(pg_tensor_empty(NULL, PG_F32, PG_SHAPE(INT64_MIN, 2)),
                 "pg_tensor_empty: negative size -9223372036854775808 in dim 0");
}

/* Ops whose output shape comes from their arguments: the output is checked like any tensor. */
Test(alloc, op_outputs_are_checked)
{
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_zeros(g, PG_F32, PG_SHAPE(1LL << 24, 0)), *b = pg_zeros(g, PG_F32, PG_SHAPE(0, 1LL << 24));
    cr_assert(a && b, "%s", pg_last_error());
    TOO_LARGE("pg_matmul", "[16777216,16777216]", pg_matmul(g, a, b, false, false)); /* 2^50 bytes out of nothing */
    pg_tensor *x = pg_ones(g, PG_F32, PG_SHAPE(1, 1));
    TOO_LARGE("pg_broadcast_to", "[1099511627776,1099511627776]", pg_broadcast_to(g, x, HUGE2));
    TOO_LARGE("pg_pad", "[1,1125899906842625]", pg_pad(g, x, 1, 0, 1LL << 50, 0.0));
    cr_assert_null(pg_reshape(g, x, HUGE2));
    cr_assert(strstr(pg_last_error(), "pg_reshape: cannot reshape f32[1,1]"), "%s", pg_last_error());
    cr_assert_null(pg_reshape(g, x, PG_SHAPE(1LL << 40, 1LL << 40, -1)), "an inferred size after an overflow");
    cr_assert(strstr(pg_last_error(), "pg_reshape: "), "%s", pg_last_error());
    pg_graph_free(g);
}

Test(alloc, modules_and_arenas_refuse_absurd_sizes)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_linear_new(1LL << 40, 1LL << 40, true, PG_F32, &r), "is too large");
    ASSERT_FAILS(pg_embed_new(INT64_MAX, 8, PG_F32, &r), "is too large");
    ASSERT_FAILS(pg_alibi_new(INT64_MAX, NULL, PG_F32), "pg_alibi_new: need 1 <= heads <= ");
    ASSERT_FAILS(pg_arena_new(SIZE_MAX), "pg_arena_new: 18446744073709551615 bytes is more than PG_MAX_TENSOR_BYTES");
    pg_arena *a = pg_arena_new(0);
    ASSERT_FAILS(pg_arena_alloc(a, SIZE_MAX - 8), "pg_arena_alloc: ");
    pg_arena_free(a);
    pg_graph *g = pg_graph_new();
    ASSERT_FAILS(pg_graph_alloc(g, SIZE_MAX), "pg_graph_alloc: out of memory");
    pg_graph_free(g);
    pg_lm_config c = pg_lm_defaults(5, 8, 2, 1);
    pg_lm *lm = pg_lm_new(&c);
    pg_tensor *prompt = TI64(PG_SHAPE(1, 2), 1, 2);
    ASSERT_FAILS(pg_lm_generate(lm, prompt, INT64_MAX, 0, 0, NULL),
                 "pg_lm_generate: n_new 9223372036854775807 is too large");
    ASSERT_FAILS(pg_lm_generate(lm, prompt, INT64_MAX / 2, 0, 0, NULL),
                 "pg_lm_generate: shape [1,4611686018427387905] of i64 is too large");
    pg_tensor_free(prompt);
    pg_module_free(&lm->base);
}

/* A request under the cap that malloc refuses: an address-space limit in this
 * test's own (forked) process makes it fail on any machine. AddressSanitizer
 * aborts on a failed allocation by design, so that build skips this test. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifndef UNDER_ASAN
/* Limits the address space to what the process maps now plus `extra` bytes. */
static bool limit_address_space(size_t extra)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    bool ok = f && fscanf(f, "%lu", &pages) == 1;
    if (f)
        fclose(f);
    struct rlimit rl = {(rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + extra, RLIM_INFINITY};
    return ok && setrlimit(RLIMIT_AS, &rl) == 0;
}
#endif

Test(alloc, malloc_failure_is_an_error)
{
#ifdef UNDER_ASAN
    cr_skip_test("AddressSanitizer aborts on a failed allocation");
#else
    pg_graph *g = pg_graph_new();
    pg_rng r = pg_rng_init(1);
    pg_tensor *small = pg_zeros(g, PG_F32, PG_SHAPE(4)); /* the graph's first chunk */
    cr_assert_not_null(small);
    if (!limit_address_space((size_t)256 << 20))
        cr_skip_test("no /proc/self/statm or setrlimit");
    int64_t n = (int64_t)1 << 37; /* 1 TiB of f64: under the cap, over the limit */
    ASSERT_FAILS(pg_zeros(NULL, PG_F64, PG_SHAPE(n)),
                 "pg_zeros: out of memory for [137438953472] (1099511627776 bytes)");
    ASSERT_FAILS(pg_zeros(g, PG_F64, PG_SHAPE(n)), "pg_zeros: out of memory for [137438953472]");
    cr_assert(strstr(pg_graph_error(g), "pg_zeros: "), "the graph keeps it: %s", pg_graph_error(g));
    ASSERT_FAILS(pg_tensor_empty(NULL, PG_F32, PG_SHAPE(n)), "pg_tensor_empty: out of memory");
    ASSERT_FAILS(pg_arena_new((size_t)1 << 40), "pg_arena_new: out of memory for 1099511627776 bytes");
    ASSERT_FAILS(pg_linear_new(1 << 19, 1 << 19, false, PG_F64, &r), "out of memory");
    /* the library still works after the failures */
    pg_tensor *y = pg_add(g, small, small);
    cr_assert_not_null(y, "%s", pg_last_error());
    pg_graph_free(g);
#endif
}
