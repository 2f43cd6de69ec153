/* The registry (nn/posmod_list.h): every kind is listed once and found by name,
 * builds from a spec inside a model's context, and its entry (role, hooks,
 * properties, file) says what its modules actually do. Every loop here runs
 * over the registry itself, so a new entry is checked without editing this file. */
#include "testutil.h"

#include <stdio.h>

/* Options for the kinds that have no defaults (PG_POS_NEEDS_OPTS): how this test
 * builds them. The one place a scheme's name appears in this file. */
static const pg_rel2d_opts REL2D_MAP = {.height = 2, .width = 3};
static const struct {
    const char *kind;
    const void *opts;
} NEEDED_OPTS[] = {{"rel2d", &REL2D_MAP}};

static const void *needed_opts(const pg_posmod_kind_info *k)
{
    for (size_t i = 0; i < sizeof NEEDED_OPTS / sizeof NEEDED_OPTS[0]; i++)
        if (!strcmp(NEEDED_OPTS[i].kind, k->kind))
            return NEEDED_OPTS[i].opts;
    cr_assert_fail("%s needs options (PG_POS_NEEDS_OPTS): give this test some in NEEDED_OPTS", k->kind);
    return NULL;
}

static int n_kinds(void)
{
    int n = 0;
    while (pg_posmod_info_at(n))
        n++;
    return n;
}

Test(pos_registry, every_kind_is_registered)
{
    const char *names[64];
    int n = pg_posmod_kinds(names, 64);
    cr_assert_eq(n, n_kinds(), "%d kinds registered", n);
    cr_assert(n >= 1 && n <= 64);
    for (int i = 0; i < n; i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        cr_assert_not_null(pg_posmod_lookup(k->kind), "%s is not registered", k->kind);
        cr_assert_eq(pg_posmod_lookup(k->kind), k->make, "%s", k->kind);
        cr_assert_eq(pg_posmod_info(k->kind), k, "%s", k->kind);
        cr_assert_str_eq(names[i], k->kind, "pg_posmod_kinds and pg_posmod_info_at list the same order");
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(names[j], k->kind, "%s is listed twice", k->kind);
    }
}

Test(pos_registry, every_entry_is_filled_in)
{
    for (int i = 0; i < n_kinds(); i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        cr_assert(k->kind && *k->kind && k->make && k->summary && strlen(k->summary) > 10, "entry %d", i);
        cr_assert(k->role == PG_POS_ROLE_INPUT || k->role == PG_POS_ROLE_ATTENTION, "%s", k->kind);
        cr_assert_neq(k->hooks, 0u, "%s implements no hook", k->kind);
        cr_assert_eq(k->dist_only, (k->hooks & PG_POS_HOOK_DIST) != 0, "%s", k->kind);
        cr_assert_eq(k->needs_qk, (k->props & PG_POS_NEEDS_QK) != 0, "%s", k->kind);
        cr_assert_null(strchr(k->summary, '\n'), "%s: one line", k->kind);
    }
}

/* The entry's file defines the constructor (the tests run from the repository root). */
Test(pos_registry, the_file_holds_the_constructor)
{
    for (int i = 0; i < n_kinds(); i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        FILE *f = fopen(k->file, "rb");
        cr_assert_not_null(f, "%s: cannot open %s", k->kind, k->file);
        static char text[1 << 20];
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        char def[128];
        snprintf(def, sizeof def, "pg_posmod *pg_posmod_make_%s(const pg_posmod_args *a)", k->kind);
        cr_assert_not_null(strstr(text, def), "%s does not define %s", k->file, def);
    }
}

Test(pos_registry, lookups_by_bad_names_fail_cleanly)
{
    int n = n_kinds();
    pg_clear_error();
    cr_assert_null(pg_posmod_info_at(n));
    cr_assert_str_empty(pg_last_error(), "the end of the registry is not an error");
    ASSERT_FAILS(pg_posmod_info_at(-1), "pg_posmod_info_at: index -1");
    ASSERT_FAILS(pg_posmod_info("no_such_scheme"), "pg_posmod_info: unknown positional module kind \"no_such_scheme\"");
    cr_assert(strstr(pg_last_error(), pg_posmod_info_at(0)->kind), "the message lists the kinds: %s", pg_last_error());
    ASSERT_FAILS(pg_posmod_info(NULL), "pg_posmod_info: kind is NULL");
}

Test(pos_registry, every_kind_trains_in_a_one_block_lm)
{
    for (int i = 0; i < n_kinds(); i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        pg_lm_config c = pg_lm_defaults(11, 8, 2, 1);
        c.dtype = PG_F64;
        c.max_len = 16;
        if (k->props & PG_POS_NEEDS_OPTS)
            continue; /* e.g. a map size: their own suites train them (pos_rel_lm::one_block_adam_step) */
        bool input = k->role == PG_POS_ROLE_INPUT;
        pg_posmod_spec spec = {k->kind, NULL, NULL};
        if (input) {
            c.n_input_pos = 1;
            c.input_pos[0] = spec;
        } else {
            c.n_layer_pos = 1;
            c.layer_pos[0] = spec;
        }
        pg_lm *lm = pg_lm_new(&c);
        cr_assert_not_null(lm, "%s: %s", k->kind, pg_last_error());
        pg_graph *g = pg_graph_new();
        pg_tensor *ids = TI64(PG_SHAPE(2, 6), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1);
        pg_tensor *loss = pg_lm_loss(g, lm, ids, ids, NULL);
        cr_assert_not_null(loss, "%s: %s", k->kind, pg_graph_error(g));
        cr_assert(isfinite(pg_item(loss)), "%s: loss %g", k->kind, pg_item(loss));
        cr_assert_eq(pg_backward(g, loss), 0, "%s: %s", k->kind, pg_graph_error(g));
        pg_graph_free(g);
        pg_tensor_free(ids);
        pg_module_free(&lm->base);
    }
}

/* ---- the entry against the module ------------------------------------------------------------ */

enum { DIM = 8, HEADS = 2, HEAD_DIM = 4, L = 5 };

/* What pg_lm gives a module of k's role, with max_len rows and the options opts. */
static pg_posmod *build(const pg_posmod_kind_info *k, int64_t max_len, const void *opts, pg_rng *r)
{
    bool attn = k->role == PG_POS_ROLE_ATTENTION;
    pg_posmod_args a = {DIM, attn ? HEADS : 0, attn ? HEAD_DIM : 0, max_len, attn ? 0 : -1, PG_F64, r, NULL};
    return pg_posmod_from_spec(&(pg_posmod_spec){k->kind, NULL, opts}, &a);
}

static unsigned hooks_of(const pg_posmod *m)
{
    const pg_posmod_ops *o = m->ops;
    return (o->mod_x ? PG_POS_HOOK_X : 0u) | (o->mod_qkv ? PG_POS_HOOK_QKV : 0u) |
           (o->mod_bias ? PG_POS_HOOK_BIAS : 0u) | (o->bias_table ? PG_POS_HOOK_TABLE : 0u) |
           (o->dist_bias ? PG_POS_HOOK_DIST : 0u) | (o->band_bias ? PG_POS_HOOK_BAND : 0u) |
           (o->sep_bias ? PG_POS_HOOK_SEP : 0u) | (o->rel_bias ? PG_POS_HOOK_REL : 0u) |
           (o->dist_bias_if ? PG_POS_HOOK_DIST_IF : 0u) | (o->attend ? PG_POS_HOOK_ATTEND : 0u) |
           (o->qk_rotation ? PG_POS_HOOK_ROTATION : 0u) | (o->rel_keys ? PG_POS_HOOK_REL_KEYS : 0u);
}

/* m's mod_bias for q, k, v drawn from seed and the layer input x (1, L, DIM) drawn
 * from xseed (0: no x), causal, (.., L, L) as f64 values (caller frees); NULL
 * when the hook fails (graph error in *err when err is given) */
static pg_tensor *bias_for(pg_posmod *m, uint64_t seed, uint64_t xseed, char *err, size_t n_err)
{
    int64_t shape[4] = {1, HEADS, L, HEAD_DIM};
    pg_tensor *qkv[4] = {NULL, NULL, NULL, xseed ? randt(PG_SHAPE(1, L, DIM), xseed, false) : NULL};
    for (int i = 0; i < 3; i++)
        qkv[i] = randt(4, shape, seed + (uint64_t)i, false);
    pg_pos_ctx c = {.self_attn = true, .causal = true, .B = 1, .heads = HEADS, .head_dim = HEAD_DIM, .Lq = L,
                    .Lk = L, .scale = 0.5, .dtype = PG_F64, .x = qkv[3]};
    pg_graph *g = pg_graph_new();
    pg_tensor *b = m->ops->mod_bias(g, m, qkv[0], qkv[1], qkv[2], &c), *out = NULL;
    if (!b && err)
        snprintf(err, n_err, "%s", pg_graph_error(g) ? pg_graph_error(g) : "(no message)");
    if (b) {
        b = pg_broadcast_to(g, b, PG_SHAPE(1, HEADS, L, L));
        out = pg_tensor_empty(NULL, PG_F64, 4, (int64_t[]){1, HEADS, L, L});
        for (int64_t i = 0; i < out->numel; i++)
            pg_f64(out)[i] = pg_get(b, i);
    }
    pg_graph_free(g);
    free_all(4, qkv);
    return out;
}

/* Does m's bias change when q, k, v do (x_seed: 0, or the layer input's, for NEEDS_X kinds)? Or when x does? */
static bool bias_changes(pg_posmod *m, uint64_t s1, uint64_t x1, uint64_t s2, uint64_t x2)
{
    pg_tensor *a = bias_for(m, s1, x1, NULL, 0), *b = bias_for(m, s2, x2, NULL, 0);
    cr_assert(a && b, "%s: %s", m->base.type, pg_last_error());
    double diff = max_err(a, b);
    pg_tensor_free(a);
    pg_tensor_free(b);
    return diff > 1e-12;
}

/* Parameters that start at zero (CoPE's pos_emb) would hide whether the bias reads
 * q / k: give every all-zero parameter of m distinct nonzero values. */
static void unzero_params(pg_module *m)
{
    pg_tensor_list p = pg_module_parameters(m);
    for (int i = 0; i < p.n; i++) {
        bool zero = true;
        for (int64_t j = 0; zero && j < p.tensors[i]->numel; j++)
            zero = pg_get(p.tensors[i], j) == 0.0;
        for (int64_t j = 0; zero && j < p.tensors[i]->numel; j++)
            pg_set(p.tensors[i], j, 0.1 + 0.05 * (double)(j % 7));
    }
    pg_tensor_list_free(&p);
}

/* NEEDS_X <=> mod_bias fails without the layer input, naming pg_pos_ctx.x, and changes with it */
static void check_needs_x(const pg_posmod_kind_info *k, pg_posmod *m)
{
    bool needs_x = (k->props & PG_POS_NEEDS_X) != 0;
    cr_assert(!needs_x || m->ops->mod_bias, "%s: NEEDS_X without mod_bias", k->kind);
    if (!m->ops->mod_bias)
        return;
    char err[512] = "";
    pg_tensor *bare = bias_for(m, 1, 0, err, sizeof err);
    cr_assert_eq(bare == NULL, needs_x, "%s: mod_bias without x %s (NEEDS_X %d) %s", k->kind,
                 bare ? "works" : "fails", needs_x, err);
    cr_assert(!needs_x || strstr(err, "pg_pos_ctx.x"), "%s: the message names pg_pos_ctx.x: %s", k->kind, err);
    pg_tensor_free(bare);
    if (needs_x)
        cr_assert(bias_changes(m, 1, 21, 1, 31), "%s: NEEDS_X but the bias does not change with x", k->kind);
}

static void check_entry(const pg_posmod_kind_info *k, const void *opts)
{
    pg_rng r = pg_rng_init(3);
    pg_posmod *m = build(k, 6, opts, &r);
    cr_assert_not_null(m, "%s: %s", k->kind, pg_last_error());
    unsigned hooks = hooks_of(m);
    cr_assert_eq(k->hooks, hooks, "%s: the entry says hooks %#x, the module has %#x", k->kind, k->hooks, hooks);
    cr_assert_eq(k->role == PG_POS_ROLE_INPUT, m->ops->mod_x != NULL, "%s: input role <=> mod_x", k->kind);
    cr_assert_eq(k->dist_only, m->ops->dist_bias != NULL, "%s: distance-only <=> dist_bias", k->kind);
    unzero_params(&m->base);
    uint64_t xs = k->props & PG_POS_NEEDS_X ? 21 : 0;
    bool qk = m->ops->mod_qkv != NULL || (m->ops->mod_bias && bias_changes(m, 1, xs, 11, xs));
    cr_assert_eq(k->needs_qk, qk, "%s: needs q/k %d, the module %s", k->kind, k->needs_qk,
                 qk ? "modifies or reads them" : "never touches them");
    check_needs_x(k, m);
    pg_module_free(&m->base);
}

Test(pos_registry, each_entry_says_what_its_module_does)
{
    for (int i = 0; i < n_kinds(); i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        bool needs_opts = (k->props & PG_POS_NEEDS_OPTS) != 0;
        pg_rng r = pg_rng_init(3);
        pg_clear_error();
        pg_posmod *bare = build(k, 6, NULL, &r);
        cr_assert_eq(bare == NULL, needs_opts, "%s: built without options: %s (NEEDS_OPTS %d)", k->kind,
                     bare ? "yes" : pg_last_error(), needs_opts);
        if (bare)
            pg_module_free(&bare->base);
        check_entry(k, needs_opts ? needed_opts(k) : NULL);
    }
}

/* MAX_LEN <=> the module cannot be built without a length, and grows a row per position. */
Test(pos_registry, max_len_marks_the_tables_sized_by_max_len)
{
    for (int i = 0; i < n_kinds(); i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        const void *opts = k->props & PG_POS_NEEDS_OPTS ? needed_opts(k) : NULL;
        bool max_len = (k->props & PG_POS_MAX_LEN) != 0;
        pg_rng r = pg_rng_init(3);
        int64_t n[2];
        for (int j = 0; j < 2; j++) {
            pg_posmod *m = build(k, 2 + j, opts, &r);
            cr_assert_not_null(m, "%s: %s", k->kind, pg_last_error());
            n[j] = pg_module_num_elements(&m->base);
            pg_module_free(&m->base);
        }
        cr_assert_eq(n[1] > n[0], max_len, "%s: %lld then %lld parameters at max_len 2, 3 (MAX_LEN %d)", k->kind,
                     (long long)n[0], (long long)n[1], max_len);
        pg_posmod *unbounded = build(k, 0, opts, &r);
        cr_assert_eq(unbounded == NULL, max_len, "%s at max_len 0: %s", k->kind,
                     unbounded ? "built" : pg_last_error());
        if (unbounded)
            pg_module_free(&unbounded->base);
    }
}

/* BOUNDED <=> built for max_len 4, the module refuses 5 tokens (and takes 4). */
static bool takes_len(pg_posmod *m, const pg_posmod_kind_info *k, int64_t len)
{
    pg_graph *g = pg_graph_new();
    bool ok;
    if (m->ops->mod_x) {
        pg_tensor *x = randt(PG_SHAPE(1, len, DIM), 5, false);
        ok = pg_posmod_apply_x(g, &m, 1, x, NULL, NULL, 0, 0, NULL) != NULL;
        pg_tensor_free(x);
    } else {
        cr_assert_eq(len, L, "bias_for works at L tokens");
        pg_tensor *b = bias_for(m, 1, k->props & PG_POS_NEEDS_X ? 21 : 0, NULL, 0);
        ok = b != NULL;
        pg_tensor_free(b);
    }
    pg_graph_free(g);
    return ok;
}

Test(pos_registry, bounded_marks_the_kinds_that_refuse_longer_sequences)
{
    for (int i = 0; i < n_kinds(); i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        bool bounded = (k->props & PG_POS_BOUNDED) != 0;
        pg_rng r = pg_rng_init(3);
        const void *opts = k->props & PG_POS_NEEDS_OPTS ? needed_opts(k) : NULL;
        pg_posmod *small = build(k, L - 1, opts, &r), *exact = build(k, L, opts, &r);
        cr_assert(small && exact, "%s: %s", k->kind, pg_last_error());
        if (!small->ops->mod_x && !small->ops->mod_bias)
            cr_assert(!bounded, "%s: BOUNDED without mod_x or mod_bias", k->kind);
        else {
            cr_assert_eq(!takes_len(small, k, L), bounded, "%s built for %d tokens %s %d (BOUNDED %d)", k->kind,
                         L - 1, bounded ? "takes" : "refuses", L, bounded);
            cr_assert(takes_len(exact, k, L), "%s refuses as many tokens as it was built for", k->kind);
        }
        pg_module_free(&small->base);
        pg_module_free(&exact->base);
    }
}

/* ROTARY <=> the kind takes a pg_rotary_opts, and its scaling changes what it does to q. */
Test(pos_registry, rotary_marks_the_kinds_that_take_rotary_options)
{
    for (int i = 0; i < n_kinds(); i++) {
        const pg_posmod_kind_info *k = pg_posmod_info_at(i);
        if (!(k->props & PG_POS_ROTARY))
            continue;
        cr_assert(k->hooks & PG_POS_HOOK_QKV, "%s: ROTARY without mod_qkv", k->kind);
        pg_rotary_opts o = pg_rotary_defaults();
        o.scaling = PG_ROPE_LINEAR;
        o.rope_factor = 4;
        pg_rng r = pg_rng_init(3);
        pg_posmod *plain = build(k, 8, NULL, &r), *scaled = build(k, 8, &o, &r);
        cr_assert(plain && scaled, "%s: %s", k->kind, pg_last_error());
        pg_pos_ctx c = {.self_attn = true, .B = 1, .heads = HEADS, .head_dim = HEAD_DIM, .Lq = L, .Lk = L,
                        .scale = 0.5, .dtype = PG_F64};
        pg_tensor *q0 = randt(PG_SHAPE(1, HEADS, L, HEAD_DIM), 7, false);
        pg_graph *g = pg_graph_new();
        pg_tensor *q[2] = {q0, q0}, *kk[2] = {q0, q0}, *v[2] = {q0, q0};
        cr_assert_eq(plain->ops->mod_qkv(g, plain, &q[0], &kk[0], &v[0], &c), 0, "%s", pg_graph_error(g));
        cr_assert_eq(scaled->ops->mod_qkv(g, scaled, &q[1], &kk[1], &v[1], &c), 0, "%s", pg_graph_error(g));
        cr_assert_gt(max_err(q[0], q[1]), 1e-6, "%s: scaling changes nothing", k->kind);
        pg_graph_free(g);
        pg_tensor_free(q0);
        pg_module_free(&plain->base);
        pg_module_free(&scaled->base);
    }
}
