/* pg_attn_check (autograd/attn_check.h): the one check of an attention call's
 * operands, and one wording per mistake across the entry points that use it. */
#include "testutil.h"

static pg_tensor *Q, *K, *V, *MASK, *MASK_BAD, *POS;

static void setup(void)
{
    pg_rng r = pg_rng_init(3);
    Q = pg_randn(NULL, PG_F64, PG_SHAPE(2, 3, 4, 5), &r);
    K = pg_randn(NULL, PG_F64, PG_SHAPE(2, 3, 6, 5), &r);
    V = pg_randn(NULL, PG_F64, PG_SHAPE(2, 3, 6, 7), &r);
    MASK = pg_tensor_full(NULL, PG_BOOL, PG_SHAPE(2, 6), 1.0);
    MASK_BAD = pg_tensor_full(NULL, PG_BOOL, PG_SHAPE(2, 5), 1.0);
    POS = TI64(PG_SHAPE(2, 5), 0, 1, 2, 3, 4, 0, 1, 2, 3, 4);
}

static void teardown(void)
{
    free_all(6, (pg_tensor *[]){Q, K, V, MASK, MASK_BAD, POS});
}

/* pg_attn_check's result as a pointer, for ASSERT_FAILS */
static const void *check(const pg_attn_operands *a)
{
    return pg_attn_check(NULL, "my_fn", a) == 0 ? (const void *)a : NULL;
}

Test(attn_check, heads_layout, .init = setup, .fini = teardown)
{
    pg_attn_operands a = {.layout = PG_ATTN_HEADS, .q = Q, .k = K, .v = V, .mask = MASK};
    cr_assert_eq(pg_attn_check(NULL, "my_fn", &a), 0, "%s", pg_last_error());
    a.v = NULL;
    ASSERT_FAILS(check(&a), "my_fn: v is NULL");
    a.v = Q;
    ASSERT_FAILS(check(&a), "my_fn: expected q (B, H, Lq, Dh), k (B, H, Lk, Dh), v (B, H, Lk, Dv) of one float "
                            "dtype, all dims positive, got q f64[2,3,4,5], k f64[2,3,6,5], v f64[2,3,4,5]");
    a = (pg_attn_operands){.layout = PG_ATTN_HEADS, .q = Q, .k = K, .v = V, .mask = MASK_BAD};
    ASSERT_FAILS(check(&a), "my_fn: mask is bool[2,5], expected a bool key mask (B, Lk) = (2, 6)");
    pg_tensor *bias = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3, 4, 5), 0.0);
    a = (pg_attn_operands){.layout = PG_ATTN_HEADS, .q = Q, .k = K, .v = V, .bias = bias};
    ASSERT_FAILS(check(&a), "my_fn: bias is f64[3,4,5], expected f64 broadcastable to (B, H, Lq, Lk) = (2, 3, 4, 6)");
    a.bias_name = "the extra bias";
    ASSERT_FAILS(check(&a), "my_fn: the extra bias is f64[3,4,5]");
    a = (pg_attn_operands){.layout = PG_ATTN_HEADS, .q = Q, .k = K, .v = V, .dist_bias = bias};
    ASSERT_FAILS(check(&a), "my_fn: dist_bias is f64[3,4,5], expected f64 (H, Lq + Lk - 1) = (3, 9) for Lq 4, Lk 6");
    pg_tensor_free(bias);
}

Test(attn_check, same_and_sizes_layouts, .init = setup, .fini = teardown)
{
    pg_attn_operands a = {.layout = PG_ATTN_SAME, .q = K, .k = K, .v = K, .mask = MASK_BAD, .mask_packed = true};
    ASSERT_FAILS(check(&a), "my_fn: mask must be (B, 6) bool with B dividing the 6 packed rows, got bool[2,5] bool");
    a.mask = NULL;
    a.v = V;
    ASSERT_FAILS(check(&a), "my_fn: q, k, v must share one shape (B, L, d) or (B, H, L, d) and a float dtype");
    pg_tensor *e = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 0, 5), 0.0);
    a = (pg_attn_operands){.layout = PG_ATTN_SAME, .q = e, .k = e, .v = e};
    ASSERT_FAILS(check(&a), "my_fn: empty input f64[2,0,5]");
    pg_tensor_free(e);
    a = (pg_attn_operands){.layout = PG_ATTN_SIZES, .B = 2, .H = 3, .Lq = 0, .Lk = 5};
    ASSERT_FAILS(check(&a), "my_fn: bad sizes B 2, Lq 0, Lk 5, heads 3, head_dim 0");
    a = (pg_attn_operands){.layout = PG_ATTN_SIZES, .B = 2, .Lq = 4, .Lk = 6, .pos_k = POS};
    cr_assert_eq(pg_attn_check(NULL, "my_fn", &a), 0, "%s", pg_last_error());
    a.pos_q = POS;
    ASSERT_FAILS(check(&a), "my_fn: pos_q is i64[2,5], expected (B, Lp) = (2, <= 4) of f32, f64 or i64");
    a.self_attn = true;
    ASSERT_FAILS(check(&a), "my_fn: pos is i64[2,5]");
    a.layout = (pg_attn_layout)7;
    ASSERT_FAILS(check(&a), "my_fn: pg_attn_check: unknown layout 7");
    pg_clear_error();
    cr_assert_eq(pg_attn_check(NULL, NULL, &a), -1);
    cr_assert(strstr(pg_last_error(), "pg_attn_check: fn"), "%s", pg_last_error());
    cr_assert_eq(pg_attn_check(NULL, "my_fn", NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_attn_check: operands is NULL"), "%s", pg_last_error());
}

/* The same mistake (a key mask of the wrong length) reads the same from every entry point. */
Test(attn_check, one_wording_per_mistake, .init = setup, .fini = teardown)
{
    const char *tail = "mask is bool[2,5], expected a bool key mask (B, Lk) = (2, 6)";
    char want[160];
    snprintf(want, sizeof want, "pg_attention: %s", tail);
    ASSERT_FAILS(pg_attention(NULL, Q, K, V, &(pg_sdpa_opts){.mask = MASK_BAD}), want);
    snprintf(want, sizeof want, "pg_flash_attention: %s", tail);
    ASSERT_FAILS(pg_flash_attention(NULL, Q, K, V, &(pg_flash_opts){.mask = MASK_BAD}), want);
    pg_rng r = pg_rng_init(4);
    pg_mha_config c = pg_mha_defaults(8, 2);
    c.dtype = PG_F64;
    pg_mha *m = pg_mha_new(&c, NULL, 0, &r);
    pg_tensor *x = pg_randn(NULL, PG_F64, PG_SHAPE(2, 6, 8), &r);
    snprintf(want, sizeof want, "pg_mha_forward: %s", tail);
    ASSERT_FAILS(pg_mha_forward(NULL, m, x, NULL, &(pg_attn_args){.mask = MASK_BAD}), want);
    pg_pos_ctx ctx = {.self_attn = true, .B = 2, .Lq = 6, .Lk = 6, .mask = MASK_BAD, .dtype = PG_F64};
    snprintf(want, sizeof want, "pg_posmod_bias_table: %s", tail);
    pg_posmod *al = pg_alibi_new(2, NULL, PG_F64);
    ASSERT_FAILS(pg_posmod_bias_table(NULL, al, &ctx), want);
    pg_module_free(&al->base);
    pg_tensor_free(x);
    pg_module_free(&m->base);
}

/* The unchecked kernel entry refuses only what would crash: NULL operands. */
Test(attn_check, flash_unchecked_null, .init = setup, .fini = teardown)
{
    pg_flash_opts o = {0};
    ASSERT_FAILS(pg_flash_attention_unchecked(NULL, NULL, K, V, &o), "pg_flash_attention: q is NULL");
    ASSERT_FAILS(pg_flash_attention_unchecked(NULL, Q, K, V, NULL), "pg_flash_attention: opts is NULL");
    pg_tensor *a = pg_flash_attention_unchecked(NULL, Q, K, V, &o), *b = pg_flash_attention(NULL, Q, K, V, NULL);
    cr_assert(a && b, "%s", pg_last_error());
    cr_assert_eq(memcmp(a->data, b->data, (size_t)a->numel * sizeof(double)), 0);
    free_all(2, (pg_tensor *[]){a, b});
}
