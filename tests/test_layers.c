/* The module system and the basic layers: module tree names, iteration, modes
 * and tying; init functions; Linear, Embedding, LayerNorm, RMSNorm, Dropout and
 * FeedForward against torch.nn (f64 fixtures written by
 * tests/fixtures/gen_layers.py), gradchecks w.r.t. inputs and every parameter,
 * f32 against f64, default inits and bad input. */
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"

/* ===================================================================================
 * helpers
 * =================================================================================== */

static pg_tensor_list load_fixture(const char *area)
{
    char file[128];
    snprintf(file, sizeof file, "layers_%s.safetensors", area);
    return fixture(file);
}

static bool fx_has(const pg_tensor_list *l, const char *c, const char *key)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", c, key);
    return pg_tensor_list_find(l, name) >= 0;
}

/* the entries "c.<prefix>rest" as a borrowed list named "rest" */
static pg_tensor_list sub_list(const pg_tensor_list *l, const char *c, const char *prefix)
{
    char head[256];
    snprintf(head, sizeof head, "%s.%s", c, prefix);
    size_t n = strlen(head);
    pg_tensor_list out = {0, 0, NULL, NULL};
    for (int i = 0; i < l->n; i++)
        if (!strncmp(l->names[i], head, n))
            cr_assert_eq(pg_tensor_list_push(&out, l->names[i] + n, l->tensors[i]), 0);
    return out;
}

/* copies the fixture's "c.state.*" into m (strict: every name matches) */
static void load_case_state(pg_module *m, const pg_tensor_list *l, const char *c)
{
    pg_tensor_list st = sub_list(l, c, "state.");
    cr_assert_eq(pg_module_load_state(m, &st, true, NULL), 0, "%s", pg_last_error());
    pg_tensor_list_free(&st);
}

/* A layer behind one signature: forward(g, module, input, rng). */
typedef pg_tensor *(*fwd_fn)(pg_graph *g, void *m, pg_tensor *x, pg_rng *r);

static pg_tensor *fwd_linear(pg_graph *g, void *m, pg_tensor *x, pg_rng *r)
{
    (void)r;
    return pg_linear_forward(g, m, x);
}
static pg_tensor *fwd_embed(pg_graph *g, void *m, pg_tensor *ids, pg_rng *r)
{
    (void)r;
    return pg_embed_forward(g, m, ids);
}
static pg_tensor *fwd_layernorm(pg_graph *g, void *m, pg_tensor *x, pg_rng *r)
{
    (void)r;
    return pg_layernorm_forward(g, m, x);
}
static pg_tensor *fwd_rmsnorm(pg_graph *g, void *m, pg_tensor *x, pg_rng *r)
{
    (void)r;
    return pg_rmsnorm_forward(g, m, x);
}
static pg_tensor *fwd_ff(pg_graph *g, void *m, pg_tensor *x, pg_rng *r)
{
    return pg_feedforward_forward(g, m, x, r);
}
static pg_tensor *fwd_dropout(pg_graph *g, void *m, pg_tensor *x, pg_rng *r)
{
    return pg_dropout_forward(g, m, x, r);
}

/* Forward and backward of case c against the fixture: output within 1e-10,
 * gradients (input and every parameter) within 1e-9, relative to 1 + |value|.
 * m (whose base is `base`) is f64 and gets the fixture's parameters. */
static void check_parity(pg_module *base, void *m, fwd_fn f, const pg_tensor_list *l, const char *c)
{
    load_case_state(base, l, c);
    pg_module_zero_grad(base);
    bool has_x = fx_has(l, c, "x");
    pg_tensor *in = has_x ? pg_tensor_copy(NULL, fx(l, "%s.%s", c, "x")) : fx(l, "%s.%s", c, "ids");
    if (has_x)
        in->requires_grad = true;
    pg_graph *g = pg_graph_new();
    pg_tensor *y = f(g, m, in, NULL);
    cr_assert_not_null(y, "%s: %s", c, pg_graph_error(g));
    cr_assert_eq(y->dtype, PG_F64);
    assert_close(y, fx(l, "%s.%s", c, "y"), 1e-10, c);
    cr_assert_eq(pg_backward_with(g, y, fx(l, "%s.%s", c, "up")), 0, "%s", pg_graph_error(g));
    if (has_x)
        assert_close(in->grad, fx(l, "%s.%s", c, "dx"), 1e-9, "d/dx");
    pg_tensor_list ps = pg_module_parameters(base), grads = sub_list(l, c, "grad.");
    cr_assert_eq(ps.n, grads.n, "%s: %d parameters, %d fixture gradients", c, ps.n, grads.n);
    for (int i = 0; i < ps.n; i++) {
        int k = pg_tensor_list_find(&grads, ps.names[i]);
        cr_assert_geq(k, 0, "%s: no fixture gradient for %s", c, ps.names[i]);
        assert_close(ps.tensors[i]->grad, grads.tensors[k], 1e-9, ps.names[i]);
    }
    pg_tensor_list_free(&ps);
    pg_tensor_list_free(&grads);
    pg_graph_free(g);
    if (has_x)
        pg_tensor_free(in);
}

/* The same forward with an f32 module (fixture parameters cast) on the input
 * cast to f32 matches the f64 reference within tol. */
static void check_f32(pg_module *base32, void *m32, fwd_fn f, const pg_tensor_list *l, const char *c, double tol)
{
    load_case_state(base32, l, c);
    bool has_x = fx_has(l, c, "x");
    pg_tensor *in = has_x ? pg_tensor_cast(NULL, fx(l, "%s.%s", c, "x"), PG_F32) : fx(l, "%s.%s", c, "ids");
    pg_graph *g = pg_graph_new();
    pg_tensor *y = f(g, m32, in, NULL);
    cr_assert_not_null(y, "%s: %s", c, pg_graph_error(g));
    cr_assert_eq(y->dtype, PG_F32);
    assert_close(y, fx(l, "%s.%s", c, "y"), tol, c);
    pg_graph_free(g);
    if (has_x)
        pg_tensor_free(in);
}

/* gradcheck: inputs are x (when float) followed by every parameter of the module */
typedef struct gc_ctx {
    void *m;
    fwd_fn f;
    pg_tensor *ids; /* the input when it is not differentiable */
    pg_rng rng;     /* copied per call: dropout draws the same mask every time */
} gc_ctx;

static pg_tensor *gc_call(pg_graph *g, pg_tensor *const *in, int n, void *p)
{
    (void)n;
    gc_ctx *c = p;
    pg_rng r = c->rng;
    return c->f(g, c->m, c->ids ? c->ids : in[0], &r);
}

static void gradcheck_module(pg_module *base, void *m, fwd_fn f, pg_tensor *x, pg_rng rng)
{
    pg_tensor_list ps = pg_module_parameters(base);
    pg_tensor *in[16];
    int n = 0;
    bool has_x = pg_dtype_is_float(x->dtype);
    if (has_x) {
        in[n] = pg_tensor_copy(NULL, x);
        in[n++]->requires_grad = true;
    }
    for (int i = 0; i < ps.n && n < 16; i++)
        in[n++] = ps.tensors[i];
    gc_ctx c = {m, f, has_x ? NULL : x, rng};
    pg_gradcheck_opts o = pg_gradcheck_defaults();
    o.check_f32 = false; /* the module's own weights stay f64 (check_f32 below does f32) */
    pg_gradcheck_result r = pg_gradcheck(gc_call, n, in, &c, &o);
    cr_assert(r.ok, "%s (max abs err %.3g)", r.message, r.max_abs_err);
    int64_t expected = pg_module_num_elements(base) + (has_x ? x->numel : 0);
    cr_assert_eq(r.checked, expected, "checked %d of %lld elements", r.checked, (long long)expected);
    if (has_x)
        pg_tensor_free(in[0]);
    pg_tensor_list_free(&ps);
}

/* names of m's parameters, in order, equal `names` (n of them) */
static void assert_param_names(const pg_module *m, int n, const char *const *names)
{
    pg_tensor_list l = pg_module_parameters(m);
    cr_assert_eq(l.n, n, "%d parameters, expected %d", l.n, n);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(l.names[i], names[i]);
    pg_tensor_list_free(&l);
}

/* mean, standard deviation (biased), min and max of t's elements */
typedef struct stats {
    double mean, std, min, max;
} stats;

static stats stats_of(const pg_tensor *t)
{
    stats s = {0, 0, INFINITY, -INFINITY};
    for (int64_t i = 0; i < t->numel; i++) {
        double v = pg_get(t, i);
        s.mean += v;
        s.min = fmin(s.min, v);
        s.max = fmax(s.max, v);
    }
    s.mean /= (double)t->numel;
    for (int64_t i = 0; i < t->numel; i++)
        s.std += (pg_get(t, i) - s.mean) * (pg_get(t, i) - s.mean);
    s.std = sqrt(s.std / (double)t->numel);
    return s;
}

/* mean within 5 standard errors and std within 3% of (mean, std) */
static void assert_moments(const pg_tensor *t, double mean, double std, const char *what)
{
    stats s = stats_of(t);
    double se = std / sqrt((double)t->numel);
    cr_assert(fabs(s.mean - mean) <= 5 * se, "%s: mean %g, expected %g (se %g)", what, s.mean, mean, se);
    cr_assert(fabs(s.std - std) <= 0.03 * std, "%s: std %g, expected %g", what, s.std, std);
}

/* A bare module (no fields beyond the base), freed by pg_module_free. */
static pg_module *bare(const char *type)
{
    pg_module *m = malloc(sizeof *m);
    cr_assert_not_null(m);
    pg_module_init(m, type, NULL);
    return m;
}

/* ===================================================================================
 * module: names, iteration, modes, tying
 * =================================================================================== */

/* Model
 *   scale (3)
 *   blocks: ModuleList { 0: Block { attn: Linear(4, 4), norm: LayerNorm(4) }, 1: same }
 *   embed: Embedding(10, 4)
 *   head:  weight = embed.weight (tied, not owned), bias (10) */
typedef struct tree {
    pg_module *root, *blocks, *block[2], *head;
    pg_linear *attn[2];
    pg_layernorm *norm[2];
    pg_embed *embed;
    pg_tensor *scale, *head_bias;
} tree;

static tree make_tree(void)
{
    pg_rng r = pg_rng_init(7);
    tree t;
    t.root = bare("Model");
    t.scale = pg_module_new_param(t.root, "scale", PG_F64, PG_SHAPE(3));
    cr_assert_not_null(t.scale);
    t.blocks = bare("ModuleList");
    for (int i = 0; i < 2; i++) {
        t.block[i] = bare("Block");
        t.attn[i] = pg_linear_new(4, 4, true, PG_F64, &r);
        t.norm[i] = pg_layernorm_new(4, 1e-5, true, true, PG_F64);
        cr_assert_eq(pg_module_add_child(t.block[i], "attn", &t.attn[i]->base), 0);
        cr_assert_eq(pg_module_add_child(t.block[i], "norm", &t.norm[i]->base), 0);
        cr_assert_eq(pg_module_add_child(t.blocks, i ? "1" : "0", t.block[i]), 0);
    }
    cr_assert_eq(pg_module_add_child(t.root, "blocks", t.blocks), 0);
    t.embed = pg_embed_new(10, 4, PG_F64, &r);
    cr_assert_eq(pg_module_add_child(t.root, "embed", &t.embed->base), 0);
    t.head = bare("Head");
    cr_assert_eq(pg_module_add_param(t.head, "weight", t.embed->weight, false), 0);
    t.head_bias = pg_module_new_param(t.head, "bias", PG_F64, PG_SHAPE(10));
    cr_assert_eq(pg_module_add_child(t.root, "head", t.head), 0);
    return t;
}

static const char *const TREE_NAMES[] = {
    "scale",
    "blocks.0.attn.weight", "blocks.0.attn.bias", "blocks.0.norm.weight", "blocks.0.norm.bias",
    "blocks.1.attn.weight", "blocks.1.attn.bias", "blocks.1.norm.weight", "blocks.1.norm.bias",
    "embed.weight", "head.bias"};

Test(module, hierarchical_names_in_registration_order)
{
    tree t = make_tree();
    /* own params first, then children depth first; the tied head.weight is listed once, as embed.weight */
    assert_param_names(t.root, 11, TREE_NAMES);
    pg_tensor_list l = pg_module_parameters(t.root);
    cr_assert_eq(l.tensors[1], t.attn[0]->weight);
    cr_assert_eq(l.tensors[8], t.norm[1]->bias);
    cr_assert_eq(l.tensors[9], t.embed->weight);
    for (int i = 0; i < l.n; i++)
        cr_assert(l.tensors[i]->requires_grad && !l.tensors[i]->in_arena, "%s", l.names[i]);
    pg_tensor_list_free(&l);
    /* a subtree names from itself */
    assert_param_names(t.block[1], 4, (const char *const[]){"attn.weight", "attn.bias", "norm.weight", "norm.bias"});
    cr_assert_str_eq(t.block[0]->type, "Block");
    cr_assert_str_eq(t.attn[0]->base.type, "Linear");
    pg_module_free(t.root);
}

Test(module, find_param)
{
    tree t = make_tree();
    cr_assert_eq(pg_module_find_param(t.root, "scale"), t.scale);
    cr_assert_eq(pg_module_find_param(t.root, "blocks.1.attn.bias"), t.attn[1]->bias);
    cr_assert_eq(pg_module_find_param(t.root, "blocks.0.norm.weight"), t.norm[0]->weight);
    cr_assert_eq(pg_module_find_param(t.root, "head.weight"), t.embed->weight, "the tied name finds the tensor");
    cr_assert_eq(pg_module_find_param(t.root, "head.bias"), t.head_bias);
    cr_assert_eq(pg_module_find_param(t.block[0], "attn.weight"), t.attn[0]->weight);
    const char *absent[] = {"blocks.2.attn.weight", "blocks", "blocks.0", "blocks.0.attn", "scale.x", "",
                            "blocks.0.attn.weight.", ".scale", "blocks..0.attn.weight", "Scale"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++)
        cr_assert_null(pg_module_find_param(t.root, absent[i]), "\"%s\" should not be found", absent[i]);
    cr_assert_null(pg_module_find_param(t.root, NULL));
    cr_assert_null(pg_module_find_param(NULL, "scale"));
    pg_module_free(t.root);
}

Test(module, num_elements_counts_tied_once)
{
    tree t = make_tree();
    /* 3 + 2 * (16 + 4 + 4 + 4) + 40 (embed, shared with head) + 10 */
    cr_assert_eq(pg_module_num_elements(t.root), 109);
    cr_assert_eq(pg_module_num_elements(t.head), 50, "head alone: its borrowed weight and its bias");
    cr_assert_eq(pg_module_num_elements(&t.attn[0]->base), 20);
    cr_assert_eq(pg_module_num_elements(NULL), 0);
    pg_module_free(t.root);
}

Test(module, zero_grad_keeps_buffers)
{
    tree t = make_tree();
    pg_tensor_list l = pg_module_parameters(t.root);
    pg_graph *g = pg_graph_new();
    /* loss = sum over parameters of sum(2 p): every gradient is 2 */
    pg_tensor *loss = NULL;
    for (int i = 0; i < l.n; i++) {
        pg_tensor *s = pg_sum(g, pg_mul_scalar(g, l.tensors[i], 2.0), 0, NULL, false);
        loss = loss ? pg_add(g, loss, s) : s;
    }
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    for (int i = 0; i < l.n; i++) {
        cr_assert_not_null(l.tensors[i]->grad, "%s", l.names[i]);
        cr_assert_eq(pg_get(l.tensors[i]->grad, 0), 2.0, "%s", l.names[i]);
    }
    pg_module_zero_grad(t.root);
    for (int i = 0; i < l.n; i++) {
        cr_assert_not_null(l.tensors[i]->grad, "%s: buffer kept", l.names[i]);
        for (int64_t k = 0; k < l.tensors[i]->numel; k++)
            cr_assert_eq(pg_get(l.tensors[i]->grad, k), 0.0, "%s", l.names[i]);
    }
    pg_module_zero_grad(NULL); /* no-op */
    pg_graph_free(g);
    pg_tensor_list_free(&l);
    pg_module_free(t.root);
}

Test(module, train_eval_recurses)
{
    tree t = make_tree();
    pg_module *all[] = {t.root, t.blocks, t.block[0], t.block[1], &t.attn[0]->base, &t.attn[1]->base,
                        &t.norm[0]->base, &t.norm[1]->base, &t.embed->base, t.head};
    for (int i = 0; i < 10; i++)
        cr_assert(all[i]->training, "modules start in train mode");
    pg_module_train(t.root, false);
    for (int i = 0; i < 10; i++)
        cr_assert(!all[i]->training);
    pg_module_train(t.block[1], true); /* a subtree only */
    cr_assert(t.block[1]->training && t.attn[1]->base.training && t.norm[1]->base.training);
    cr_assert(!t.root->training && !t.block[0]->training && !t.attn[0]->base.training);
    pg_module_train(t.root, true);
    for (int i = 0; i < 10; i++)
        cr_assert(all[i]->training);
    pg_module_train(NULL, false); /* no-op */
    pg_module_free(t.root);
}

/* pg_module_alloc / pg_module_new_container: zeroed structs with the base initialised */
typedef struct counted {
    pg_module base;
    int64_t n;
    double tail[]; /* size may exceed the struct */
} counted;
static int N_DESTROYED;
static void counted_destroy(pg_module *m)
{
    N_DESTROYED++;
    free(m);
}

Test(module, alloc_initialises_the_base)
{
    counted *c = pg_module_alloc(sizeof *c + 4 * sizeof(double), "Counted", counted_destroy, "test");
    cr_assert_not_null(c, "%s", pg_last_error());
    cr_assert_str_eq(c->base.type, "Counted");
    cr_assert(c->base.training && c->n == 0 && c->tail[3] == 0.0);
    pg_module *box = pg_module_new_container("ModuleList", "test");
    cr_assert_not_null(box, "%s", pg_last_error());
    cr_assert_str_eq(box->type, "ModuleList");
    cr_assert_eq(box->n_params, 0);
    cr_assert_eq(pg_module_add_child(box, "0", &c->base), 0);
    N_DESTROYED = 0;
    pg_module_free(box);
    cr_assert_eq(N_DESTROYED, 1, "the child's destroy ran");
    pg_clear_error();
    cr_assert_null(pg_module_alloc(sizeof(int), "T", NULL, "test"));
    cr_assert_str_eq(pg_last_error(), "pg_module_alloc: size is smaller than a pg_module");
}

Test(module, tied_parameter_listed_once_freed_once)
{
    /* the borrowing module comes first: the shared tensor takes the first name */
    pg_rng r = pg_rng_init(3);
    pg_module *root = bare("LM");
    pg_module *head = bare("Head");
    pg_embed *emb = pg_embed_new(5, 2, PG_F32, &r);
    cr_assert_eq(pg_module_add_param(head, "weight", emb->weight, false), 0);
    cr_assert_eq(pg_module_add_child(root, "head", head), 0);
    cr_assert_eq(pg_module_add_child(root, "tok", &emb->base), 0);
    assert_param_names(root, 1, (const char *const[]){"head.weight"});
    cr_assert_eq(pg_module_find_param(root, "tok.weight"), pg_module_find_param(root, "head.weight"));
    cr_assert_eq(pg_module_num_elements(root), 10);
    /* the same tensor twice inside one module is listed once too */
    cr_assert_eq(pg_module_add_param(head, "alias", emb->weight, false), 0);
    assert_param_names(root, 1, (const char *const[]){"head.weight"});
    pg_module_free(root); /* frees emb->weight once (ASan / valgrind check the rest) */
}

Test(module, bad_registration)
{
    pg_module *m = bare("M");
    cr_assert_not_null(pg_module_new_param(m, "w", PG_F64, PG_SHAPE(2)));
    cr_assert_eq(pg_module_add_child(m, "sub", bare("Sub")), 0);
    ASSERT_FAILS(pg_module_new_param(m, "w", PG_F64, PG_SHAPE(2)),
                 "pg_module_new_param: M already has a parameter \"w\"");
    ASSERT_FAILS(pg_module_new_param(m, "sub", PG_F64, PG_SHAPE(2)), "M already has a child \"sub\"");
    ASSERT_FAILS(pg_module_new_param(m, "a.b", PG_F64, PG_SHAPE(2)), "bad module or name \"a.b\"");
    ASSERT_FAILS(pg_module_new_param(m, "", PG_F64, PG_SHAPE(2)), "bad module or name \"\"");
    ASSERT_FAILS(pg_module_new_param(m, NULL, PG_F64, PG_SHAPE(2)), "bad module or name \"(null)\"");
    ASSERT_FAILS(pg_module_new_param(m, "ids", PG_I64, PG_SHAPE(2)),
                 "pg_module_new_param: parameter \"ids\" must be f32 or f64");
    ASSERT_FAILS(pg_module_new_param(NULL, "x", PG_F64, PG_SHAPE(2)), "bad module or name");
    /* a duplicate child is rejected and freed (ownership passes even on failure) */
    pg_clear_error();
    cr_assert_eq(pg_module_add_child(m, "sub", bare("Sub2")), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_add_child: M already has a child \"sub\""), "%s", pg_last_error());
    cr_assert_eq(pg_module_add_child(m, "w", bare("Sub3")), -1);
    cr_assert(strstr(pg_last_error(), "M already has a parameter \"w\""), "%s", pg_last_error());
    cr_assert_eq(pg_module_add_child(m, "x.y", bare("Sub4")), -1);
    cr_assert_eq(pg_module_add_child(NULL, "x", bare("Sub5")), -1);
    cr_assert_eq(pg_module_add_child(m, "nothing", NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_add_child: child \"nothing\" is NULL"), "%s", pg_last_error());
    pg_tensor *t = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2), 0.0);
    cr_assert_eq(pg_module_add_param(m, "w", t, true), -1, "duplicate: the caller keeps t");
    cr_assert_eq(pg_module_add_param(m, "nul", NULL, true), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_add_param: tensor for \"nul\" is NULL"), "%s", pg_last_error());
    pg_tensor_free(t);
    assert_param_names(m, 1, (const char *const[]){"w"});
    cr_assert_eq(m->n_children, 1);
    pg_module_free(m);
    pg_module_free(NULL);
    pg_tensor_list l = pg_module_parameters(NULL);
    cr_assert_eq(l.n, 0);
}

Test(module, tensor_list)
{
    pg_tensor *a = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2), 1.0), *b = pg_tensor_full(NULL, PG_F32, PG_SHAPE(3), 2.0);
    pg_tensor_list l = {0, 0, NULL, NULL};
    for (int i = 0; i < 40; i++) { /* grows past its first capacity */
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        cr_assert_eq(pg_tensor_list_push(&l, name, i % 2 ? b : a), 0);
    }
    cr_assert_eq(l.n, 40);
    cr_assert_eq(pg_tensor_list_find(&l, "t0"), 0);
    cr_assert_eq(pg_tensor_list_find(&l, "t39"), 39);
    cr_assert_eq(l.tensors[39], b);
    cr_assert_eq(pg_tensor_list_find(&l, "t40"), -1);
    cr_assert_eq(pg_tensor_list_find(&l, NULL), -1);
    cr_assert_eq(pg_tensor_list_find(NULL, "t0"), -1);
    pg_tensor_list_free(&l);
    cr_assert_eq(l.n, 0);
    cr_assert_null(l.names);
    /* free_all frees the tensors too */
    cr_assert_eq(pg_tensor_list_push(&l, "a", a), 0);
    cr_assert_eq(pg_tensor_list_push(&l, "b", b), 0);
    pg_tensor_list_free_all(&l);
    cr_assert_eq(l.n, 0);
    pg_tensor_list_free_all(NULL);
}

/* ===================================================================================
 * init
 * =================================================================================== */

static pg_tensor *big(pg_dtype dtype, int ndim, const int64_t *shape)
{
    pg_tensor *t = pg_tensor_empty(NULL, dtype, ndim, shape);
    cr_assert_not_null(t);
    return t;
}

Test(init, uniform_and_normal_moments)
{
    pg_rng r = pg_rng_init(11);
    pg_tensor *t = big(PG_F64, PG_SHAPE(200, 300));
    cr_assert_eq(pg_init_uniform(t, &r, -0.5, 2.5), 0);
    assert_moments(t, 1.0, 3.0 / sqrt(12.0), "uniform");
    stats s = stats_of(t);
    cr_assert(s.min >= -0.5 && s.max < 2.5 && s.min < -0.49 && s.max > 2.49, "range [%g, %g]", s.min, s.max);
    cr_assert_eq(pg_init_normal(t, &r, -1.5, 0.25), 0);
    assert_moments(t, -1.5, 0.25, "normal");
    pg_tensor *t32 = big(PG_F32, PG_SHAPE(60000));
    cr_assert_eq(pg_init_normal(t32, &r, 0.0, 2.0), 0);
    assert_moments(t32, 0.0, 2.0, "normal f32");
    pg_tensor_free(t);
    pg_tensor_free(t32);
}

/* standard normal density and distribution */
static double phi(double z) { return exp(-0.5 * z * z) / 2.5066282746310002; /* sqrt(2 pi) */ }
static double Phi(double z) { return 0.5 * (1 + erf(z / sqrt(2.0))); }

Test(init, trunc_normal_in_bounds_with_truncated_moments)
{
    struct { double mean, std, a, b; } cases[] = {{0, 1, -2, 2}, {0, 1, -1, 2}, {0.5, 2, 0, 1}, {0, 0.02, -0.04, 0.04}};
    pg_rng r = pg_rng_init(12);
    pg_tensor *t = big(PG_F64, PG_SHAPE(100, 500));
    for (int c = 0; c < 4; c++) {
        double mu = cases[c].mean, sd = cases[c].std, a = cases[c].a, b = cases[c].b;
        cr_assert_eq(pg_init_trunc_normal(t, &r, mu, sd, a, b), 0);
        stats s = stats_of(t);
        cr_assert(s.min >= a && s.max <= b, "case %d: range [%g, %g] outside [%g, %g]", c, s.min, s.max, a, b);
        /* moments of N(mu, sd^2) truncated to [a, b] (alpha, beta standardised bounds) */
        double al = (a - mu) / sd, be = (b - mu) / sd, z = Phi(be) - Phi(al);
        double m = mu + sd * (phi(al) - phi(be)) / z;
        double v = sd * sd * (1 + (al * phi(al) - be * phi(be)) / z - pow((phi(al) - phi(be)) / z, 2));
        assert_moments(t, m, sqrt(v), "trunc normal");
    }
    pg_tensor_free(t);
}

Test(init, fans_2d_3d_4d)
{
    int64_t fi = -1, fo = -1;
    pg_tensor *w2 = big(PG_F64, PG_SHAPE(5, 7)), *w3 = big(PG_F64, PG_SHAPE(4, 6, 5));
    pg_tensor *w4 = big(PG_F32, PG_SHAPE(8, 3, 2, 5)), *w1 = big(PG_F64, PG_SHAPE(9));
    cr_assert_eq(pg_init_fans(w2, &fi, &fo), 0);
    cr_assert(fi == 7 && fo == 5, "fans %lld %lld", (long long)fi, (long long)fo);
    cr_assert_eq(pg_init_fans(w3, &fi, &fo), 0);
    cr_assert(fi == 30 && fo == 20, "fans %lld %lld", (long long)fi, (long long)fo);
    cr_assert_eq(pg_init_fans(w4, &fi, &fo), 0);
    cr_assert(fi == 30 && fo == 80, "fans %lld %lld", (long long)fi, (long long)fo);
    pg_clear_error();
    cr_assert_eq(pg_init_fans(w1, &fi, &fo), -1);
    cr_assert(strstr(pg_last_error(), "pg_init_fans: fans need at least 2 dims, got f64[9]"), "%s", pg_last_error());
    cr_assert_eq(pg_init_fans(NULL, &fi, &fo), -1);
    pg_tensor *all[] = {w2, w3, w4, w1};
    free_all(4, all);
}

Test(init, xavier_and_kaiming_scales)
{
    pg_rng r = pg_rng_init(13);
    /* conv-shaped: fan_in = 32 * 25 = 800, fan_out = 64 * 25 = 1600 */
    pg_tensor *w = big(PG_F64, PG_SHAPE(64, 32, 5, 5));
    double fi = 800, fo = 1600;
    double bound = 2.0 * sqrt(6.0 / (fi + fo));
    cr_assert_eq(pg_init_xavier_uniform(w, &r, 2.0), 0);
    stats s = stats_of(w);
    cr_assert(s.min >= -bound && s.max <= bound && s.max > 0.99 * bound, "[%g, %g] vs %g", s.min, s.max, bound);
    assert_moments(w, 0, bound / sqrt(3.0), "xavier uniform");
    cr_assert_eq(pg_init_xavier_normal(w, &r, 0.5), 0);
    assert_moments(w, 0, 0.5 * sqrt(2.0 / (fi + fo)), "xavier normal");
    /* torch's Linear default: kaiming_uniform(a = sqrt 5, fan_in) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    cr_assert_eq(pg_init_kaiming_uniform(w, &r, sqrt(5.0), PG_FAN_IN), 0);
    s = stats_of(w);
    cr_assert(s.max <= 1 / sqrt(fi) && s.min >= -1 / sqrt(fi) && s.max > 0.99 / sqrt(fi), "max %g", s.max);
    assert_moments(w, 0, 1 / sqrt(3 * fi), "kaiming uniform a=sqrt5 fan_in");
    cr_assert_eq(pg_init_kaiming_uniform(w, &r, 0.0, PG_FAN_OUT), 0); /* relu gain sqrt 2 */
    s = stats_of(w);
    cr_assert(s.max <= sqrt(6 / fo) && s.max > 0.99 * sqrt(6 / fo), "max %g", s.max);
    cr_assert_eq(pg_init_kaiming_normal(w, &r, 0.0, PG_FAN_OUT), 0);
    assert_moments(w, 0, sqrt(2.0 / fo), "kaiming normal relu fan_out");
    cr_assert_eq(pg_init_kaiming_normal(w, &r, 1.0, PG_FAN_IN), 0); /* leaky slope 1: gain 1 */
    assert_moments(w, 0, 1 / sqrt(fi), "kaiming normal a=1 fan_in");
    /* 2-D: (out 300, in 200) */
    pg_tensor *w2 = big(PG_F32, PG_SHAPE(300, 200));
    cr_assert_eq(pg_init_kaiming_normal(w2, &r, 0.0, PG_FAN_IN), 0);
    assert_moments(w2, 0, sqrt(2.0 / 200), "kaiming normal 2-D fan_in");
    cr_assert_eq(pg_init_xavier_normal(w2, &r, 1.0), 0);
    assert_moments(w2, 0, sqrt(2.0 / 500), "xavier normal 2-D");
    pg_tensor_free(w);
    pg_tensor_free(w2);
}

/* runs init kind k on t from seed */
static int run_init(int k, pg_tensor *t, uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    switch (k) {
    case 0: return pg_init_uniform(t, &r, -1, 1);
    case 1: return pg_init_normal(t, &r, 0, 1);
    case 2: return pg_init_trunc_normal(t, &r, 0, 1, -1, 1);
    case 3: return pg_init_xavier_uniform(t, &r, 1);
    case 4: return pg_init_xavier_normal(t, &r, 1);
    case 5: return pg_init_kaiming_uniform(t, &r, 0, PG_FAN_IN);
    default: return pg_init_kaiming_normal(t, &r, 0, PG_FAN_OUT);
    }
}

Test(init, same_seed_same_values)
{
    for (int k = 0; k < 7; k++) {
        pg_tensor *a = big(PG_F64, PG_SHAPE(6, 7)), *b = big(PG_F64, PG_SHAPE(6, 7)), *c = big(PG_F64, PG_SHAPE(6, 7));
        cr_assert_eq(run_init(k, a, 99), 0);
        cr_assert_eq(run_init(k, b, 99), 0);
        cr_assert_eq(run_init(k, c, 100), 0);
        cr_assert_eq(memcmp(a->data, b->data, 42 * sizeof(double)), 0, "init %d: same seed, same values", k);
        cr_assert_neq(memcmp(a->data, c->data, 42 * sizeof(double)), 0, "init %d: another seed differs", k);
        pg_tensor *all[] = {a, b, c};
        free_all(3, all);
    }
}


Test(init, bad_input)
{
    pg_rng r = pg_rng_init(1);
    pg_tensor *w = big(PG_F64, PG_SHAPE(4, 4)), *v = big(PG_F64, PG_SHAPE(4)), *ids = big(PG_I64, PG_SHAPE(4, 4));
    ASSERT_RC_FAILS(pg_init_uniform(NULL, &r, 0, 1), "pg_init_uniform: tensor is NULL");
    ASSERT_RC_FAILS(pg_init_normal(w, NULL, 0, 1), "pg_init_normal: generator is NULL");
    ASSERT_RC_FAILS(pg_init_uniform(ids, &r, 0, 1), "pg_init_uniform: need a float tensor, got i64[4,4]");
    ASSERT_RC_FAILS(pg_init_kaiming_normal(ids, &r, 0, PG_FAN_IN), "pg_init_kaiming_normal: need a float tensor");
    ASSERT_RC_FAILS(pg_init_xavier_uniform(v, &r, 1), "pg_init_xavier_uniform: fans need at least 2 dims, got f64[4]");
    ASSERT_RC_FAILS(pg_init_xavier_normal(v, &r, 1), "pg_init_xavier_normal: fans need at least 2 dims");
    ASSERT_RC_FAILS(pg_init_kaiming_uniform(v, &r, 0, PG_FAN_IN), "pg_init_kaiming_uniform: fans need at least 2 dims");
    ASSERT_RC_FAILS(pg_init_kaiming_normal(v, &r, 0, PG_FAN_OUT), "pg_init_kaiming_normal: fans need at least 2 dims");
    ASSERT_RC_FAILS(pg_init_trunc_normal(w, &r, 0, 1, 1, -1), "pg_init_trunc_normal: [1, -1] is empty");
    ASSERT_RC_FAILS(pg_init_trunc_normal(w, &r, 0, 0, -1, 1),
                    "pg_init_trunc_normal: [-1, 1] is empty or far outside N(0, 0^2)");
    ASSERT_RC_FAILS(pg_init_trunc_normal(w, &r, 0, 1, 20, 30),
                    "pg_init_trunc_normal: [20, 30] is empty or far outside");
    ASSERT_RC_FAILS(pg_init_trunc_normal(w, &r, 0, 1, NAN, 1), "pg_init_trunc_normal: [nan, 1]");
    ASSERT_RC_FAILS(pg_init_trunc_normal(ids, &r, 0, 1, -1, 1), "pg_init_trunc_normal: need a float tensor");
    pg_tensor *all[] = {w, v, ids};
    free_all(3, all);
}

/* ===================================================================================
 * Linear
 * =================================================================================== */

Test(linear, parity_with_torch)
{
    pg_tensor_list l = load_fixture("linear");
    pg_rng r = pg_rng_init(1);
    pg_linear *a = pg_linear_new(4, 5, true, PG_F64, &r), *b = pg_linear_new(3, 2, false, PG_F64, &r);
    check_parity(&a->base, a, fwd_linear, &l, "bias");
    check_parity(&b->base, b, fwd_linear, &l, "nobias");
    pg_module_free(&a->base);
    pg_module_free(&b->base);
    pg_tensor_list_free_all(&l);
}

Test(linear, gradcheck)
{
    pg_tensor_list l = load_fixture("linear");
    pg_rng r = pg_rng_init(1);
    pg_linear *a = pg_linear_new(4, 5, true, PG_F64, &r), *b = pg_linear_new(3, 2, false, PG_F64, &r);
    load_case_state(&a->base, &l, "bias");
    load_case_state(&b->base, &l, "nobias");
    gradcheck_module(&a->base, a, fwd_linear, fx(&l, "%s.%s", "bias", "x"), r);
    gradcheck_module(&b->base, b, fwd_linear, fx(&l, "%s.%s", "nobias", "x"), r);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
    pg_tensor_list_free_all(&l);
}

Test(linear, f32_matches_f64)
{
    pg_tensor_list l = load_fixture("linear");
    pg_rng r = pg_rng_init(1);
    pg_linear *a = pg_linear_new(4, 5, true, PG_F32, &r), *b = pg_linear_new(3, 2, false, PG_F32, &r);
    check_f32(&a->base, a, fwd_linear, &l, "bias", 1e-5);
    check_f32(&b->base, b, fwd_linear, &l, "nobias", 1e-5);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
    pg_tensor_list_free_all(&l);
}

Test(linear, one_dim_input_and_names)
{
    pg_rng r = pg_rng_init(5);
    pg_linear *a = pg_linear_new(3, 2, true, PG_F64, &r);
    assert_param_names(&a->base, 2, (const char *const[]){"weight", "bias"});
    assert_shape(a->weight, 2, (int64_t[]){2, 3});
    assert_shape(a->bias, 1, (int64_t[]){2});
    pg_tensor *x = T64(PG_SHAPE(3), 1.0, -2.0, 0.5);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_linear_forward(g, a, x); /* (3) -> (2): W x + b */
    assert_shape(y, 1, (int64_t[]){2});
    for (int o = 0; o < 2; o++) {
        double e = pg_get(a->bias, o);
        for (int i = 0; i < 3; i++)
            e += pg_get(a->weight, o * 3 + i) * pg_get(x, i);
        cr_assert(fabs(pg_get(y, o) - e) < 1e-15);
    }
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&a->base);
}

Test(linear, default_init_as_torch)
{
    /* torch: W, b ~ U(-1/sqrt(in), 1/sqrt(in)) */
    pg_rng r = pg_rng_init(21), r2 = pg_rng_init(21);
    pg_linear *a = pg_linear_new(400, 300, true, PG_F64, &r), *b = pg_linear_new(400, 300, true, PG_F64, &r2);
    double bound = 1 / sqrt(400.0);
    stats s = stats_of(a->weight);
    cr_assert(s.min >= -bound && s.max <= bound && s.max > 0.99 * bound);
    assert_moments(a->weight, 0, bound / sqrt(3.0), "linear weight");
    s = stats_of(a->bias);
    cr_assert(s.min >= -bound && s.max <= bound && s.max > 0.9 * bound);
    cr_assert_eq(memcmp(a->weight->data, b->weight->data, 120000 * sizeof(double)), 0, "same seed, same weights");
    cr_assert_eq(memcmp(a->bias->data, b->bias->data, 300 * sizeof(double)), 0);
    pg_module_free(&a->base);
    pg_module_free(&b->base);
}

Test(linear, bad_input)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_linear_new(0, 3, true, PG_F64, &r), "pg_linear_new: features must be >= 1, got in 0, out 3");
    ASSERT_FAILS(pg_linear_new(3, -1, true, PG_F64, &r), "pg_linear_new: features must be >= 1, got in 3, out -1");
    ASSERT_FAILS(pg_linear_new(3, 3, true, PG_I64, &r), "pg_linear_new: dtype must be f32 or f64, got i64");
    ASSERT_FAILS(pg_linear_new(3, 3, true, PG_F64, NULL), "pg_linear_new: generator is NULL");
    pg_linear *a = pg_linear_new(4, 2, true, PG_F64, &r);
    pg_graph *g = pg_graph_new();
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 3), 1.0);
    pg_tensor *x32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(2, 4), 1.0);
    pg_tensor *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(2, 4), 1.0);
    pg_tensor *s = pg_tensor_full(NULL, PG_F64, 0, NULL, 1.0);
    ASSERT_FAILS(pg_linear_forward(g, a, NULL), "pg_linear_forward: x is NULL");
    ASSERT_FAILS(pg_linear_forward(g, NULL, x32), "pg_linear_forward: module is NULL");
    pg_tensor *xok = pg_tensor_full(NULL, PG_F64, PG_SHAPE(3, 4), 1.0);
    pg_tensor *heap = pg_linear_forward(NULL, a, xok); /* no graph: a heap result the caller frees */
    assert_shape(heap, PG_SHAPE(3, 2));
    cr_assert(!heap->in_arena);
    pg_tensor_free(heap);
    pg_tensor_free(xok);
    ASSERT_FAILS(pg_linear_forward(NULL, a, x), "pg_linear_forward: x is f64[2,3], expected (..., 4)");
    ASSERT_FAILS(pg_linear_forward(g, a, x),
                 "pg_linear_forward: x is f64[2,3], expected (..., 4) of the weight's dtype (weight f64[2,4])");
    ASSERT_FAILS(pg_linear_forward(g, a, x32), "pg_linear_forward: x is f32[2,4], expected (..., 4)");
    ASSERT_FAILS(pg_linear_forward(g, a, ids), "pg_linear_forward: x is i64[2,4]");
    ASSERT_FAILS(pg_linear_forward(g, a, s), "pg_linear_forward: x is f64[], expected (..., 4)");
    cr_assert_str_eq(pg_graph_error(g), "pg_linear_forward: x is NULL", "the graph keeps the first error");
    pg_tensor *all[] = {x, x32, ids, s};
    free_all(4, all);
    pg_graph_free(g);
    pg_module_free(&a->base);
}

/* ===================================================================================
 * Embedding
 * =================================================================================== */

Test(embed, parity_with_torch)
{
    pg_tensor_list l = load_fixture("embed");
    pg_rng r = pg_rng_init(1);
    pg_embed *e = pg_embed_new(7, 3, PG_F64, &r);
    check_parity(&e->base, e, fwd_embed, &l, "emb"); /* repeated ids accumulate into one row */
    pg_module_free(&e->base);
    pg_tensor_list_free_all(&l);
}

Test(embed, gradcheck)
{
    pg_tensor_list l = load_fixture("embed");
    pg_rng r = pg_rng_init(1);
    pg_embed *e = pg_embed_new(7, 3, PG_F64, &r);
    load_case_state(&e->base, &l, "emb");
    gradcheck_module(&e->base, e, fwd_embed, fx(&l, "%s.%s", "emb", "ids"), r);
    pg_module_free(&e->base);
    pg_tensor_list_free_all(&l);
}

Test(embed, f32_matches_f64)
{
    pg_tensor_list l = load_fixture("embed");
    pg_rng r = pg_rng_init(1);
    pg_embed *e = pg_embed_new(7, 3, PG_F32, &r);
    check_f32(&e->base, e, fwd_embed, &l, "emb", 1e-6);
    pg_module_free(&e->base);
    pg_tensor_list_free_all(&l);
}

Test(embed, default_init_as_torch)
{
    pg_rng r = pg_rng_init(22), r2 = pg_rng_init(22);
    pg_embed *e = pg_embed_new(1000, 64, PG_F64, &r), *e2 = pg_embed_new(1000, 64, PG_F64, &r2);
    assert_param_names(&e->base, 1, (const char *const[]){"weight"});
    assert_shape(e->weight, 2, (int64_t[]){1000, 64});
    assert_moments(e->weight, 0, 1, "embedding N(0, 1)");
    cr_assert_eq(memcmp(e->weight->data, e2->weight->data, 64000 * sizeof(double)), 0);
    cr_assert_str_eq(e->base.type, "Embedding");
    pg_module_free(&e->base);
    pg_module_free(&e2->base);
}

Test(embed, bad_input)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_embed_new(0, 3, PG_F64, &r), "pg_embed_new: num and dim must be >= 1, got 0, 3");
    ASSERT_FAILS(pg_embed_new(3, 0, PG_F64, &r), "pg_embed_new: num and dim must be >= 1, got 3, 0");
    ASSERT_FAILS(pg_embed_new(3, 3, PG_BOOL, &r), "pg_embed_new: dtype must be f32 or f64, got bool");
    ASSERT_FAILS(pg_embed_new(3, 3, PG_F32, NULL), "pg_embed_new: generator is NULL");
    pg_embed *e = pg_embed_new(7, 3, PG_F64, &r);
    pg_graph *g = pg_graph_new();
    pg_tensor *hi = TI64(PG_SHAPE(3), 0, 7, 1), *neg = TI64(PG_SHAPE(2, 1), -1, 2);
    pg_tensor *fl = T64(PG_SHAPE(2), 0.0, 1.0);
    ASSERT_FAILS(pg_embed_forward(g, e, NULL), "pg_embed_forward: ids is NULL");
    ASSERT_FAILS(pg_embed_forward(g, NULL, hi), "pg_embed_forward: module is NULL");
    ASSERT_FAILS(pg_embed_forward(g, e, hi), "pg_embedding: id 7 out of range for a table of 7 rows");
    ASSERT_FAILS(pg_embed_forward(g, e, neg), "pg_embedding: id -1 out of range for a table of 7 rows");
    ASSERT_FAILS(pg_embed_forward(g, e, fl), "pg_embedding: ids must be i64");
    pg_tensor *all[] = {hi, neg, fl};
    free_all(3, all);
    pg_graph_free(g);
    pg_module_free(&e->base);
}

/* ===================================================================================
 * LayerNorm
 * =================================================================================== */

static void layernorms(pg_dtype dtype, pg_layernorm **ln)
{
    ln[0] = pg_layernorm_new(6, 1e-5, true, true, dtype);   /* "affine" */
    ln[1] = pg_layernorm_new(6, 1e-5, true, false, dtype);  /* "nobias" */
    ln[2] = pg_layernorm_new(6, 1e-5, false, false, dtype); /* "noaffine" */
}
static const char *const LN_CASES[] = {"affine", "nobias", "noaffine"};

Test(layernorm, parity_with_torch)
{
    pg_tensor_list l = load_fixture("layernorm");
    pg_layernorm *ln[3];
    layernorms(PG_F64, ln);
    for (int i = 0; i < 3; i++) {
        check_parity(&ln[i]->base, ln[i], fwd_layernorm, &l, LN_CASES[i]);
        pg_module_free(&ln[i]->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(layernorm, gradcheck)
{
    pg_tensor_list l = load_fixture("layernorm");
    pg_layernorm *ln[3];
    layernorms(PG_F64, ln);
    for (int i = 0; i < 3; i++) {
        load_case_state(&ln[i]->base, &l, LN_CASES[i]);
        gradcheck_module(&ln[i]->base, ln[i], fwd_layernorm, fx(&l, "%s.%s", LN_CASES[i], "x"), pg_rng_init(0));
        pg_module_free(&ln[i]->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(layernorm, f32_matches_f64)
{
    pg_tensor_list l = load_fixture("layernorm");
    pg_layernorm *ln[3];
    layernorms(PG_F32, ln);
    for (int i = 0; i < 3; i++) {
        check_f32(&ln[i]->base, ln[i], fwd_layernorm, &l, LN_CASES[i], 1e-5);
        pg_module_free(&ln[i]->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(layernorm, default_init_and_names)
{
    pg_layernorm *ln[3];
    layernorms(PG_F64, ln);
    assert_param_names(&ln[0]->base, 2, (const char *const[]){"weight", "bias"});
    assert_param_names(&ln[1]->base, 1, (const char *const[]){"weight"});
    assert_param_names(&ln[2]->base, 0, NULL);
    cr_assert_null(ln[1]->bias);
    cr_assert(ln[2]->weight == NULL && ln[2]->bias == NULL);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(pg_get(ln[0]->weight, i), 1.0);
        cr_assert_eq(pg_get(ln[0]->bias, i), 0.0);
    }
    cr_assert_eq(ln[0]->eps, 1e-5);
    for (int i = 0; i < 3; i++)
        pg_module_free(&ln[i]->base);
}

Test(layernorm, bad_input)
{
    ASSERT_FAILS(pg_layernorm_new(0, 1e-5, true, true, PG_F64),
                 "pg_layernorm_new: need dim >= 1 and finite eps >= 0, got 0");
    ASSERT_FAILS(pg_layernorm_new(4, -1e-5, true, true, PG_F64), "pg_layernorm_new: need dim >= 1");
    ASSERT_FAILS(pg_layernorm_new(4, NAN, true, true, PG_F64), "got 4, nan");
    ASSERT_FAILS(pg_layernorm_new(4, INFINITY, true, true, PG_F64), "got 4, inf");
    ASSERT_FAILS(pg_layernorm_new(4, 1e-5, true, true, PG_I64), "pg_layernorm_new: dtype must be f32 or f64, got i64");
    pg_layernorm *a = pg_layernorm_new(4, 1e-5, true, true, PG_F64);
    pg_layernorm *p = pg_layernorm_new(4, 1e-5, false, false, PG_F64);
    pg_graph *g = pg_graph_new();
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 5), 1.0);
    pg_tensor *x32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(2, 4), 1.0);
    pg_tensor *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(2, 4), 1.0);
    ASSERT_FAILS(pg_layernorm_forward(g, NULL, x), "pg_layernorm_forward: module is NULL");
    ASSERT_FAILS(pg_layernorm_forward(g, a, NULL), "pg_layernorm_forward: x is NULL");
    ASSERT_FAILS(pg_layernorm_forward(g, a, x), "pg_layernorm_forward: x is f64[2,5], expected (..., 4)");
    ASSERT_FAILS(pg_layernorm_forward(g, p, x), "pg_layernorm_forward: x is f64[2,5], expected (..., 4)");
    ASSERT_FAILS(pg_layernorm_forward(g, a, x32), "pg_layer_norm: dtypes differ: x is f32[2,4], weight is f64[4]");
    ASSERT_FAILS(pg_layernorm_forward(g, p, ids), "pg_layer_norm: x must be f32 or f64, got i64[2,4]");
    /* without weight, any float dtype works (torch's elementwise_affine=False) */
    pg_tensor *y = pg_layernorm_forward(g, p, x32);
    cr_assert(y && y->dtype == PG_F32);
    pg_tensor *all[] = {x, x32, ids};
    free_all(3, all);
    pg_graph_free(g);
    pg_module_free(&a->base);
    pg_module_free(&p->base);
}

/* ===================================================================================
 * RMSNorm
 * =================================================================================== */

static void rmsnorms(pg_dtype dtype, pg_rmsnorm **n)
{
    n[0] = pg_rmsnorm_new(6, 1e-6, true, dtype);  /* "affine" */
    n[1] = pg_rmsnorm_new(6, 1e-6, false, dtype); /* "noaffine" */
    n[2] = pg_rmsnorm_new(5, 0.1, true, dtype);   /* "eps": eps comparable to mean(x^2) */
}
static const char *const RMS_CASES[] = {"affine", "noaffine", "eps"};

Test(rmsnorm, parity_with_torch)
{
    pg_tensor_list l = load_fixture("rmsnorm");
    pg_rmsnorm *n[3];
    rmsnorms(PG_F64, n);
    for (int i = 0; i < 3; i++) {
        check_parity(&n[i]->base, n[i], fwd_rmsnorm, &l, RMS_CASES[i]);
        pg_module_free(&n[i]->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(rmsnorm, gradcheck)
{
    pg_tensor_list l = load_fixture("rmsnorm");
    pg_rmsnorm *n[3];
    rmsnorms(PG_F64, n);
    for (int i = 0; i < 3; i++) {
        load_case_state(&n[i]->base, &l, RMS_CASES[i]);
        gradcheck_module(&n[i]->base, n[i], fwd_rmsnorm, fx(&l, "%s.%s", RMS_CASES[i], "x"), pg_rng_init(0));
        pg_module_free(&n[i]->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(rmsnorm, f32_matches_f64)
{
    pg_tensor_list l = load_fixture("rmsnorm");
    pg_rmsnorm *n[3];
    rmsnorms(PG_F32, n);
    for (int i = 0; i < 3; i++) {
        check_f32(&n[i]->base, n[i], fwd_rmsnorm, &l, RMS_CASES[i], 1e-5);
        pg_module_free(&n[i]->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(rmsnorm, default_init_and_names)
{
    pg_rmsnorm *n[3];
    rmsnorms(PG_F64, n);
    cr_assert_str_eq(n[0]->base.type, "RMSNorm");
    assert_param_names(&n[0]->base, 1, (const char *const[]){"weight"});
    assert_param_names(&n[1]->base, 0, NULL);
    cr_assert_null(n[1]->weight);
    assert_shape(n[0]->weight, 1, (int64_t[]){6});
    cr_assert(n[0]->weight->requires_grad);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(pg_get(n[0]->weight, i), 1.0);
    cr_assert(n[0]->dim == 6 && n[0]->eps == 1e-6);
    /* weight 1: the same as no weight */
    pg_tensor *x = rand_param(PG_SHAPE(3, 6), -2, 2, 4);
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_rmsnorm_forward(g, n[0], x), *b = pg_rmsnorm_forward(g, n[1], x);
    cr_assert_eq(max_err(a, b), 0.0);
    pg_graph_free(g);
    pg_tensor_free(x);
    for (int i = 0; i < 3; i++)
        pg_module_free(&n[i]->base);
}

Test(rmsnorm, bad_input)
{
    ASSERT_FAILS(pg_rmsnorm_new(0, 1e-6, true, PG_F64),
                 "pg_rmsnorm_new: need dim >= 1 and finite eps >= 0, got 0, 1e-06");
    ASSERT_FAILS(pg_rmsnorm_new(4, -1, true, PG_F64), "pg_rmsnorm_new: need dim >= 1 and finite eps >= 0, got 4, -1");
    ASSERT_FAILS(pg_rmsnorm_new(4, NAN, false, PG_F64), "got 4, nan");
    ASSERT_FAILS(pg_rmsnorm_new(4, 1e-6, true, PG_BOOL), "pg_rmsnorm_new: dtype must be f32 or f64, got bool");
    ASSERT_FAILS(pg_rmsnorm_new(4, 1e-6, false, PG_I64), "pg_rmsnorm_new: dtype must be f32 or f64, got i64");
    pg_rmsnorm *a = pg_rmsnorm_new(4, 1e-6, true, PG_F64), *p = pg_rmsnorm_new(4, 1e-6, false, PG_F64);
    pg_graph *g = pg_graph_new();
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 5), 1.0);
    pg_tensor *x32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(2, 4), 1.0);
    pg_tensor *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(2, 4), 1.0);
    pg_tensor *s = pg_tensor_full(NULL, PG_F64, 0, NULL, 1.0);
    ASSERT_FAILS(pg_rmsnorm_forward(g, a, NULL), "pg_rmsnorm_forward: x is NULL");
    ASSERT_FAILS(pg_rmsnorm_forward(g, NULL, x), "pg_rmsnorm_forward: module is NULL");
    ASSERT_FAILS(pg_rmsnorm_forward(g, a, x), "pg_rmsnorm_forward: x is f64[2,5], expected a float tensor (..., 4)");
    ASSERT_FAILS(pg_rmsnorm_forward(g, p, x), "pg_rmsnorm_forward: x is f64[2,5], expected a float tensor (..., 4)");
    ASSERT_FAILS(pg_rmsnorm_forward(g, a, s), "pg_rmsnorm_forward: x is f64[], expected");
    ASSERT_FAILS(pg_rmsnorm_forward(g, a, ids), "pg_rmsnorm_forward: x is i64[2,4], expected a float tensor");
    ASSERT_FAILS(pg_rmsnorm_forward(g, a, x32),
                 "pg_rmsnorm_forward: x is f32[2,4], the weight is f64[4]: dtypes differ");
    cr_assert_str_eq(pg_graph_error(g), "pg_rmsnorm_forward: x is NULL");
    pg_tensor *y = pg_rmsnorm_forward(g, p, x32); /* no weight: any float dtype */
    cr_assert(y && y->dtype == PG_F32);
    pg_tensor *all[] = {x, x32, ids, s};
    free_all(4, all);
    pg_graph_free(g);
    pg_module_free(&a->base);
    pg_module_free(&p->base);
}

/* ===================================================================================
 * Dropout
 * =================================================================================== */

Test(dropout_layer, eval_mode_and_p0_are_identity)
{
    pg_dropout_mod *d = pg_dropout_new(0.5), *d0 = pg_dropout_new(0.0);
    cr_assert_str_eq(d->base.type, "Dropout");
    cr_assert_eq(d->base.n_params, 0);
    cr_assert_eq(d->p, 0.5);
    pg_tensor *x = rand_param(PG_SHAPE(4, 5), -1, 1, 8);
    pg_graph *g = pg_graph_new();
    pg_module_train(&d->base, false);
    pg_tensor *y = pg_dropout_forward(g, d, x, NULL); /* eval: no generator needed */
    cr_assert_not_null(y, "%s", pg_graph_error(g));
    cr_assert_eq(max_err(y, x), 0.0);
    pg_rng r = pg_rng_init(3), r_before = r;
    y = pg_dropout_forward(g, d, x, &r);
    cr_assert_eq(max_err(y, x), 0.0);
    cr_assert_eq(r.counter, r_before.counter, "eval mode draws nothing");
    cr_assert(d0->base.training);
    y = pg_dropout_forward(g, d0, x, NULL); /* p == 0 in train mode */
    cr_assert_eq(max_err(y, x), 0.0);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&d->base);
    pg_module_free(&d0->base);
}

Test(dropout_layer, train_mode_statistics)
{
    const double p = 0.3;
    pg_dropout_mod *d = pg_dropout_new(p);
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(100, 200), 1.0);
    pg_rng r = pg_rng_init(17);
    pg_graph *g = pg_graph_new();
    pg_tensor *y = pg_dropout_forward(g, d, x, &r);
    int64_t zeros = 0;
    for (int64_t i = 0; i < y->numel; i++) {
        double v = pg_get(y, i);
        cr_assert(v == 0.0 || fabs(v - 1 / (1 - p)) < 1e-15, "kept entries scale by 1/(1-p): %g", v);
        zeros += v == 0.0;
    }
    double frac = (double)zeros / (double)y->numel, se = sqrt(p * (1 - p) / (double)y->numel);
    cr_assert(fabs(frac - p) < 5 * se, "dropped fraction %g, expected %g", frac, p);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&d->base);
}

Test(dropout_layer, same_generator_same_mask_and_gradient)
{
    pg_dropout_mod *d = pg_dropout_new(0.5);
    pg_tensor *x = rand_param(PG_SHAPE(6, 7), 0.5, 1.5, 9); /* nonzero, so y == 0 marks a dropped entry */
    pg_rng r = pg_rng_init(5), r2 = r;
    pg_graph *g = pg_graph_new();
    pg_tensor *a = pg_dropout_forward(g, d, x, &r), *b = pg_dropout_forward(g, d, x, &r2);
    cr_assert_eq(max_err(a, b), 0.0, "same generator state, same mask");
    cr_assert_eq(r.counter, r2.counter);
    pg_tensor *c = pg_dropout_forward(g, d, x, &r);
    cr_assert_gt(max_err(a, c), 0.0, "the generator advanced: a new mask");
    /* d sum(a) / dx = mask / (1 - p) = a / x */
    pg_tensor *up = pg_ones(g, PG_F64, PG_SHAPE(6, 7));
    cr_assert_eq(pg_backward_with(g, a, up), 0, "%s", pg_graph_error(g));
    for (int64_t i = 0; i < x->numel; i++)
        cr_assert(fabs(pg_get(x->grad, i) - pg_get(a, i) / pg_get(x, i)) < 1e-14);
    pg_graph_free(g);
    pg_tensor_free(x);
    pg_module_free(&d->base);
}

Test(dropout_layer, gradcheck)
{
    pg_dropout_mod *d = pg_dropout_new(0.4);
    pg_tensor *x = rand_param(PG_SHAPE(3, 5), -1, 1, 10);
    gc_ctx c = {d, fwd_dropout, NULL, pg_rng_init(6)};
    assert_gradcheck(gc_call, 1, &x, &c, NULL); /* f32 leg too: no parameters */
    pg_tensor_free(x);
    pg_module_free(&d->base);
}

Test(dropout_layer, bad_input)
{
    ASSERT_FAILS(pg_dropout_new(-0.1), "pg_dropout_new: p must be in [0, 1), got -0.1");
    ASSERT_FAILS(pg_dropout_new(1.0), "pg_dropout_new: p must be in [0, 1), got 1");
    ASSERT_FAILS(pg_dropout_new(NAN), "pg_dropout_new: p must be in [0, 1), got nan");
    pg_dropout_mod *d = pg_dropout_new(0.2);
    pg_graph *g = pg_graph_new();
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 3), 1.0), *ids = TI64(PG_SHAPE(2), 1, 2);
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_dropout_forward(g, d, NULL, &r), "pg_dropout_forward: x is NULL");
    ASSERT_FAILS(pg_dropout_forward(g, NULL, x, &r), "pg_dropout_forward: module is NULL");
    ASSERT_FAILS(pg_dropout_forward(g, d, ids, &r), "pg_dropout_forward: x must be f32 or f64, got i64[2]");
    ASSERT_FAILS(pg_dropout_forward(g, d, x, NULL), "pg_dropout_forward: generator is NULL in train mode (p = 0.2)");
    pg_tensor *all[] = {x, ids};
    free_all(2, all);
    pg_graph_free(g);
    pg_module_free(&d->base);
}

/* ===================================================================================
 * FeedForward
 * =================================================================================== */

typedef struct ff_case {
    const char *name;
    pg_ff_kind kind;
    pg_activation act;
    bool bias;
} ff_case;
static const ff_case FF_CASES[] = {{"mlp_gelu", PG_FF_MLP, PG_ACT_GELU, true},
                                   {"mlp_relu_nobias", PG_FF_MLP, PG_ACT_RELU, false},
                                   {"glu_silu", PG_FF_GLU, PG_ACT_SILU, true},
                                   {"glu_gelu_tanh_nobias", PG_FF_GLU, PG_ACT_GELU_TANH, false}};

/* dim 4, hidden 6, dropout 0.1 (the fixtures run in eval mode) */
static pg_feedforward *ff_of(const ff_case *c, pg_dtype dtype)
{
    pg_rng r = pg_rng_init(2);
    pg_feedforward *f = pg_feedforward_new(4, 6, c->kind, c->act, 0.1, c->bias, dtype, &r);
    cr_assert_not_null(f, "%s", pg_last_error());
    pg_module_train(&f->base, false);
    return f;
}

Test(feedforward, parity_with_torch)
{
    pg_tensor_list l = load_fixture("ff");
    for (int i = 0; i < 4; i++) {
        pg_feedforward *f = ff_of(&FF_CASES[i], PG_F64);
        check_parity(&f->base, f, fwd_ff, &l, FF_CASES[i].name);
        pg_module_free(&f->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(feedforward, gradcheck)
{
    pg_tensor_list l = load_fixture("ff");
    for (int i = 0; i < 4; i++) {
        pg_feedforward *f = ff_of(&FF_CASES[i], PG_F64);
        load_case_state(&f->base, &l, FF_CASES[i].name);
        gradcheck_module(&f->base, f, fwd_ff, fx(&l, "%s.%s", FF_CASES[i].name, "x"), pg_rng_init(0));
        pg_module_train(&f->base, true); /* with dropout: the same mask on every call */
        gradcheck_module(&f->base, f, fwd_ff, fx(&l, "%s.%s", FF_CASES[i].name, "x"), pg_rng_init(31));
        pg_module_free(&f->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(feedforward, f32_matches_f64)
{
    pg_tensor_list l = load_fixture("ff");
    for (int i = 0; i < 4; i++) {
        pg_feedforward *f = ff_of(&FF_CASES[i], PG_F32);
        check_f32(&f->base, f, fwd_ff, &l, FF_CASES[i].name, 1e-5);
        pg_module_free(&f->base);
    }
    pg_tensor_list_free_all(&l);
}

Test(feedforward, names_shapes_and_default_init)
{
    pg_feedforward *mlp = ff_of(&FF_CASES[0], PG_F64), *glu = ff_of(&FF_CASES[3], PG_F64);
    const char *const full[] = {"proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias"};
    assert_param_names(&mlp->base, 4, full);
    assert_param_names(&glu->base, 2, (const char *const[]){"proj_in.weight", "proj_out.weight"});
    cr_assert_str_eq(mlp->base.type, "FeedForward");
    cr_assert_eq(mlp->base.n_children, 3);
    cr_assert_str_eq(mlp->base.children[0].name, "proj_in");
    cr_assert_str_eq(mlp->base.children[1].name, "dropout");
    cr_assert_str_eq(mlp->base.children[2].name, "proj_out");
    cr_assert_eq(mlp->base.children[1].ptr, &mlp->dropout->base);
    cr_assert_eq(mlp->dropout->p, 0.1);
    assert_shape(mlp->proj_in->weight, 2, (int64_t[]){6, 4});
    assert_shape(mlp->proj_out->weight, 2, (int64_t[]){4, 6});
    assert_shape(glu->proj_in->weight, 2, (int64_t[]){12, 4}); /* (2 hidden, dim): a rows, then gate rows */
    assert_shape(glu->proj_out->weight, 2, (int64_t[]){4, 6});
    cr_assert_eq(pg_module_num_elements(&mlp->base), 6 * 4 + 6 + 4 * 6 + 4);
    /* torch's Linear init: U(+-1/sqrt(fan_in)) per Linear */
    cr_assert(stats_of(glu->proj_in->weight).max <= 0.5 && stats_of(glu->proj_in->weight).min >= -0.5);
    cr_assert(stats_of(glu->proj_out->weight).max <= 1 / sqrt(6.0));
    /* eval mode reached the dropout child */
    cr_assert(!mlp->dropout->base.training);
    pg_module_free(&mlp->base);
    pg_module_free(&glu->base);
}

/* x: (..., 4) -> reference built from ops: proj_out(dropout(act-part(proj_in(x)))) with the same generator */
static pg_tensor *ff_by_hand(pg_graph *g, pg_feedforward *f, pg_tensor *x, pg_rng *r)
{
    pg_tensor *h = pg_linear_forward(g, f->proj_in, x);
    if (f->kind == PG_FF_GLU) {
        pg_tensor *a = pg_slice(g, h, 2, 0, f->hidden, 1), *gate = pg_slice(g, h, 2, f->hidden, 2 * f->hidden, 1);
        h = pg_mul(g, a, pg_activation_apply(g, f->act, gate));
    } else {
        h = pg_activation_apply(g, f->act, h);
    }
    h = pg_dropout(g, h, f->dropout->p, f->base.training, r);
    return pg_linear_forward(g, f->proj_out, h);
}

Test(feedforward, train_mode_dropout_uses_the_generator)
{
    for (int i = 0; i < 4; i++) {
        pg_rng r0 = pg_rng_init(2);
        pg_feedforward *f = pg_feedforward_new(4, 6, FF_CASES[i].kind, FF_CASES[i].act, 0.5, true, PG_F64, &r0);
        pg_tensor *x = rand_param(PG_SHAPE(2, 3, 4), -1, 1, 40 + (uint64_t)i);
        pg_graph *g = pg_graph_new();
        pg_rng r = pg_rng_init(77), r2 = r;
        pg_tensor *y = pg_feedforward_forward(g, f, x, &r), *e = ff_by_hand(g, f, x, &r2);
        cr_assert_not_null(y, "%s", pg_graph_error(g));
        cr_assert_eq(max_err(y, e), 0.0, "%s", FF_CASES[i].name);
        cr_assert_eq(r.counter, r2.counter);
        pg_module_train(&f->base, false);
        pg_tensor *y_eval = pg_feedforward_forward(g, f, x, NULL);
        e = ff_by_hand(g, f, x, NULL);
        cr_assert_eq(max_err(y_eval, e), 0.0);
        cr_assert_gt(max_err(y_eval, y), 0.0, "dropout changed the train-mode output");
        pg_graph_free(g);
        pg_tensor_free(x);
        pg_module_free(&f->base);
    }
}

Test(feedforward, activation_apply)
{
    pg_tensor *x = T64(PG_SHAPE(4), -1.5, -0.2, 0.3, 2.0);
    pg_graph *g = pg_graph_new();
    pg_tensor *(*ops[])(pg_graph *, pg_tensor *) = {pg_gelu, pg_gelu_tanh, pg_relu, pg_silu};
    pg_activation acts[] = {PG_ACT_GELU, PG_ACT_GELU_TANH, PG_ACT_RELU, PG_ACT_SILU};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(max_err(pg_activation_apply(g, acts[i], x), ops[i](g, x)), 0.0, "activation %d", i);
    ASSERT_FAILS(pg_activation_apply(g, (pg_activation)9, x), "pg_activation_apply: unknown activation 9");
    ASSERT_FAILS(pg_activation_apply(g, PG_ACT_GELU, NULL), "x is NULL");
    pg_graph_free(g);
    pg_tensor_free(x);
}

Test(feedforward, bad_input)
{
    pg_rng r = pg_rng_init(1);
    ASSERT_FAILS(pg_feedforward_new(0, 6, PG_FF_MLP, PG_ACT_GELU, 0, true, PG_F64, &r),
                 "pg_feedforward_new: need dim, hidden >= 1 and a known kind and activation, got dim 0, hidden 6");
    ASSERT_FAILS(pg_feedforward_new(4, 0, PG_FF_GLU, PG_ACT_GELU, 0, true, PG_F64, &r), "got dim 4, hidden 0");
    ASSERT_FAILS(pg_feedforward_new(4, 6, (pg_ff_kind)5, PG_ACT_GELU, 0, true, PG_F64, &r), "kind 5, act 0");
    ASSERT_FAILS(pg_feedforward_new(4, 6, PG_FF_MLP, (pg_activation)-1, 0, true, PG_F64, &r), "kind 0, act -1");
    ASSERT_FAILS(pg_feedforward_new(4, 6, PG_FF_MLP, PG_ACT_GELU, 1.0, true, PG_F64, &r),
                 "pg_feedforward_new: dropout must be in [0, 1), got 1");
    ASSERT_FAILS(pg_feedforward_new(4, 6, PG_FF_MLP, PG_ACT_GELU, -0.5, true, PG_F64, &r), "got -0.5");
    ASSERT_FAILS(pg_feedforward_new(4, 6, PG_FF_MLP, PG_ACT_GELU, 0, true, PG_I64, &r),
                 "pg_feedforward_new: need a float dtype and a generator, got i64 and a generator");
    ASSERT_FAILS(pg_feedforward_new(4, 6, PG_FF_MLP, PG_ACT_GELU, 0, true, PG_F32, NULL), "got f32 and NULL");
    pg_feedforward *f = ff_of(&FF_CASES[2], PG_F64);
    pg_graph *g = pg_graph_new();
    pg_tensor *x = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 6), 1.0);
    pg_tensor *x32 = pg_tensor_full(NULL, PG_F32, PG_SHAPE(2, 4), 1.0);
    pg_tensor *ids = pg_tensor_full(NULL, PG_I64, PG_SHAPE(2, 4), 1.0);
    pg_tensor *ok = pg_tensor_full(NULL, PG_F64, PG_SHAPE(2, 4), 1.0);
    ASSERT_FAILS(pg_feedforward_forward(g, f, NULL, NULL), "pg_feedforward_forward: x is NULL");
    ASSERT_FAILS(pg_feedforward_forward(g, NULL, x, NULL), "pg_feedforward_forward: module is NULL");
    ASSERT_FAILS(pg_feedforward_forward(g, f, x, NULL),
                 "pg_feedforward_forward: x is f64[2,6], expected a float tensor (..., 4)");
    ASSERT_FAILS(pg_feedforward_forward(g, f, ids, NULL), "pg_feedforward_forward: x is i64[2,4]");
    ASSERT_FAILS(pg_feedforward_forward(g, f, x32, NULL),
                 "pg_feedforward_forward: x is f32[2,4], the weight is f64[12,4]: dtypes differ");
    cr_assert_str_eq(pg_graph_error(g), "pg_feedforward_forward: x is NULL");
    /* train mode without a generator: the dropout child's message is the graph's first */
    pg_module_train(&f->base, true);
    pg_graph_reset(g);
    cr_assert_null(pg_feedforward_forward(g, f, ok, NULL));
    cr_assert_str_eq(pg_graph_error(g), "pg_dropout_forward: generator is NULL in train mode (p = 0.1)");
    pg_tensor *all[] = {x, x32, ids, ok};
    free_all(4, all);
    pg_graph_free(g);
    pg_module_free(&f->base);
}
