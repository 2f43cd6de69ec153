/* One positional module shared by every block of the LM (pg_lm_config.share_layer_pos,
 * pg_mha_borrow_pos; docs/attention.md "Sharing one positional module across layers"),
 * as x-transformers' AttentionLayers.rel_pos. The independent reference is an unshared
 * LM whose per-block modules are given the shared module's weights: the same logits and
 * loss, every other gradient the same, and the shared module's gradient the SUM of the
 * per-block ones (1e-12, f64), for DPB, T5 and ALiBi (learned divisor). Also: the fused
 * kernel is what runs (dist_bias called once per block, mod_bias never) and equals the
 * reference path; an f64 gradcheck through the shared parameters; names listed once; a
 * state-dict round trip; one Adam step moves a shared parameter once; the borrowed
 * module survives the attention that borrowed it; bad configurations refused. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../nn/pos_alibi.h"
#include "../nn/pos_dpb.h"
#include "../nn/state_dict.h"
#include "../optim/optim.h"
#include "testutil.h"

enum { VOCAB = 7, DIM = 8, HEADS = 2, LAYERS = 3 };

typedef enum { K_DPB, K_T5, K_ALIBI } kind_t;
static const char *const KIND_NAME[] = {"dpb", "t5", "alibi"};

static pg_dpb_opts DPB_XT;       /* x-transformers' DynamicPositionBias(depth 2) */
static pg_alibi_opts ALIBI_LEARN; /* a learned divisor, so ALiBi has a parameter */

static pg_lm_config lm_config(kind_t k, bool share, int64_t layers)
{
    DPB_XT = pg_dpb_xtransformers(2, false, false);
    ALIBI_LEARN = (pg_alibi_opts){.div = {.divide = 2.0, .learned = true}};
    pg_lm_config c = pg_lm_defaults(VOCAB, DIM, HEADS, layers);
    c.dtype = PG_F64;
    c.init_std = 0.3;
    c.seed = 3;
    c.n_layer_pos = 1;
    c.layer_pos[0] = (pg_posmod_spec){.kind = KIND_NAME[k],
                                      .opts = k == K_DPB ? (const void *)&DPB_XT
                                              : k == K_ALIBI ? (const void *)&ALIBI_LEARN
                                                             : NULL};
    c.share_layer_pos[0] = share;
    return c;
}

/* The LM in eval mode, its norms off 1 / 0 and its positional parameters drawn from
 * N(0, 0.5) (T5's table starts at zero), so that every term counts. */
static pg_lm *make_lm(pg_lm_config c)
{
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "pg_lm_new: %s", pg_last_error());
    pg_module_train(&lm->base, false);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_rng r = pg_rng_init(17);
    for (int i = 0; i < ps.n; i++)
        if (strstr(ps.names[i], "pos.") || strstr(ps.names[i], "norm"))
            pg_fill_normal(ps.tensors[i], &r, strstr(ps.names[i], "norm") ? 0.5 : 0.0, 0.5);
    pg_tensor_list_free(&ps);
    return lm;
}

/* The name in the shared LM of an unshared LM's parameter: "blocks.N.attn.pos.X" -> "rel_pos.X" */
static const char *shared_name(const char *name, char *buf, size_t cap)
{
    const char *at = strstr(name, ".attn.pos.");
    if (strncmp(name, "blocks.", 7) || !at)
        return name;
    snprintf(buf, cap, "rel_pos.%s", at + strlen(".attn.pos."));
    return buf;
}

/* Gives every parameter of the unshared u the value of its counterpart in the shared s. */
static void copy_weights(pg_lm *u, const pg_lm *s)
{
    pg_tensor_list ps = pg_module_parameters(&u->base);
    for (int i = 0; i < ps.n; i++) {
        char buf[256];
        pg_tensor *src = pg_module_find_param(&s->base, shared_name(ps.names[i], buf, sizeof buf));
        cr_assert_not_null(src, "the shared LM has no counterpart of %s", ps.names[i]);
        cr_assert_eq(src->numel, ps.tensors[i]->numel);
        memcpy(ps.tensors[i]->data, src->data, (size_t)src->numel * sizeof(double));
    }
    pg_tensor_list_free(&ps);
}

static pg_tensor *ids_of(int64_t B, int64_t L, uint64_t seed)
{
    pg_tensor *ids = pg_empty(NULL, PG_I64, PG_SHAPE(B, L));
    pg_rng r = pg_rng_init(seed);
    for (int64_t i = 0; i < B * L; i++)
        pg_i64(ids)[i] = (int64_t)(pg_rng_uniform(&r) * VOCAB) % VOCAB;
    return ids;
}

/* logits (heap) of ids; loss backward into the parameters' grads (zeroed first) */
static pg_tensor *run(pg_lm *lm, const pg_tensor *ids, const pg_tensor *targets, const pg_tensor *mask)
{
    pg_module_zero_grad(&lm->base);
    pg_graph *g = pg_graph_new();
    const pg_attn_args a = {.mask = (pg_tensor *)mask};
    pg_tensor *logits = pg_lm_forward(g, lm, (pg_tensor *)ids, &a);
    cr_assert_not_null(logits, "%s", pg_graph_error(g));
    pg_tensor *loss = pg_cross_entropy(g, logits, (pg_tensor *)targets, PG_LM_IGNORE, 0.0);
    cr_assert_eq(pg_backward(g, loss), 0, "%s", pg_graph_error(g));
    pg_tensor *out = pg_tensor_copy(NULL, logits);
    pg_graph_free(g);
    return out;
}

static double max_abs_diff(const pg_tensor *a, const pg_tensor *b)
{
    cr_assert_eq(a->numel, b->numel);
    double w = 0;
    for (int64_t i = 0; i < a->numel; i++) {
        double d = fabs(pg_get(a, i) - pg_get(b, i));
        w = d > w || isnan(d) ? d : w;
    }
    return w;
}

static double max_abs(const pg_tensor *a)
{
    double w = 0;
    for (int64_t i = 0; i < a->numel; i++)
        w = fmax(w, fabs(pg_get(a, i)));
    return w;
}

/* ---- the shared LM = the unshared LM with equal weights, gradients summed ------------------ */

static void check_against_unshared(kind_t k)
{
    pg_lm *s = make_lm(lm_config(k, true, LAYERS)), *u = make_lm(lm_config(k, false, LAYERS));
    copy_weights(u, s);
    pg_tensor *ids = ids_of(2, 6, 1), *tg = ids_of(2, 6, 2);
    pg_tensor *mask = TBOOL(PG_SHAPE(2, 6), 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1);
    pg_tensor *ls = run(s, ids, tg, mask), *lu = run(u, ids, tg, mask);
    double dl = max_abs_diff(ls, lu), worst = 0;
    cr_assert(dl <= 1e-12, "%s: shared vs unshared logits differ by %.3g", KIND_NAME[k], dl);
    pg_tensor_list ps = pg_module_parameters(&s->base);
    int n_shared = 0, n_nonzero = 0;
    for (int i = 0; i < ps.n; i++) {
        pg_tensor *gs = ps.tensors[i]->grad;
        cr_assert_not_null(gs, "%s has no gradient", ps.names[i]);
        if (strncmp(ps.names[i], "rel_pos.", 8)) {
            double d = max_abs_diff(gs, pg_module_find_param(&u->base, ps.names[i])->grad);
            worst = fmax(worst, d);
            cr_assert(d <= 1e-12, "%s: grad of %s differs by %.3g", KIND_NAME[k], ps.names[i], d);
            continue;
        }
        n_shared++;
        pg_tensor *sum = pg_zeros(NULL, PG_F64, gs->ndim, gs->shape);
        double one_block = 0;
        for (int b = 0; b < LAYERS; b++) {
            char name[256];
            snprintf(name, sizeof name, "blocks.%d.attn.pos.%s", b, ps.names[i] + 8);
            pg_tensor *gu = pg_module_find_param(&u->base, name)->grad;
            for (int64_t j = 0; j < gu->numel; j++)
                pg_set(sum, j, pg_get(sum, j) + pg_get(gu, j));
            if (b == 0)
                one_block = max_abs_diff(gs, gu);
        }
        double d = max_abs_diff(gs, sum);
        worst = fmax(worst, d);
        cr_assert(d <= 1e-12, "%s: grad of %s is not the sum over the blocks (%.3g)", KIND_NAME[k], ps.names[i], d);
        /* a gradient that is not zero (DPB's output bias is constant over the keys: zero) is
         * not any one block's */
        if (max_abs(gs) > 1e-9)
            cr_assert_gt(one_block, 1e-6, "%s: %s's grad equals one block's: nothing was summed", KIND_NAME[k],
                         ps.names[i]);
        n_nonzero += max_abs(gs) > 1e-9;
        pg_tensor_free(sum);
    }
    printf("shared_pos %s: logits %.3g, worst gradient difference %.3g over %d parameters (%d shared, %d with "
           "a nonzero gradient)\n", KIND_NAME[k], dl, worst, ps.n, n_shared, n_nonzero);
    cr_assert_gt(n_nonzero, 0, "%s: no shared parameter with a gradient (%d shared)", KIND_NAME[k], n_shared);
    pg_tensor_list_free(&ps);
    pg_tensor_free(ls);
    pg_tensor_free(lu);
    free_all(3, (pg_tensor *[]){ids, tg, mask});
    pg_module_free(&s->base);
    pg_module_free(&u->base);
}

Test(shared_pos, dpb_equals_unshared_reference) { check_against_unshared(K_DPB); }
Test(shared_pos, t5_equals_unshared_reference) { check_against_unshared(K_T5); }
Test(shared_pos, alibi_equals_unshared_reference) { check_against_unshared(K_ALIBI); }

/* ---- the fused kernel runs, and equals the reference path ------------------------------------- */

/* A DPB whose dist_bias / mod_bias calls are counted (the hooks are DPB's own). */
static pg_posmod_ops COUNTED;
static const pg_posmod_ops *DPB_OPS;
static int N_DIST, N_MOD;
static pg_tensor *counted_dist(pg_graph *g, pg_posmod *m, pg_tensor *d, const pg_pos_ctx *c)
{
    N_DIST++;
    m->ops = DPB_OPS; /* DPB checks its own table: its hook runs as DPB */
    pg_tensor *b = DPB_OPS->dist_bias(g, m, d, c);
    m->ops = &COUNTED;
    return b;
}
static pg_tensor *counted_mod(pg_graph *g, pg_posmod *m, pg_tensor *q, pg_tensor *k, pg_tensor *v,
                              const pg_pos_ctx *c)
{
    N_MOD++;
    m->ops = DPB_OPS;
    pg_tensor *b = DPB_OPS->mod_bias(g, m, q, k, v, c);
    m->ops = &COUNTED;
    return b;
}
static pg_posmod *make_counted_dpb(const pg_posmod_args *a)
{
    pg_posmod *p = pg_posmod_make_dpb(a);
    if (p) {
        DPB_OPS = p->ops;
        COUNTED = *p->ops;
        COUNTED.dist_bias = counted_dist;
        COUNTED.mod_bias = counted_mod;
        p->ops = &COUNTED;
    }
    return p;
}

static void set_unfused(pg_lm *lm, bool on)
{
    for (int64_t b = 0; b < lm->cfg.layers; b++)
        lm->blocks[b]->attn->cfg.unfused = on;
}

Test(shared_pos, fused_kernel_runs_and_equals_the_reference_path)
{
    for (int k = 0; k < 3; k++) {
        pg_lm_config c = lm_config((kind_t)k, true, LAYERS);
        if (k == K_DPB)
            c.layer_pos[0].make = make_counted_dpb;
        pg_lm *lm = make_lm(c);
        pg_tensor *ids = ids_of(2, 7, 5), *tg = ids_of(2, 7, 6);
        N_DIST = N_MOD = 0;
        pg_tensor *fused = run(lm, ids, tg, NULL);
        if (k == K_DPB) /* one bias table per block from the one module, never an L x L bias */
            cr_assert(N_DIST == LAYERS && N_MOD == 0, "fused: dist_bias %d, mod_bias %d calls", N_DIST, N_MOD);
        pg_tensor_list ps = pg_module_parameters(&lm->base);
        pg_tensor **gf = calloc((size_t)ps.n, sizeof *gf);
        for (int i = 0; i < ps.n; i++)
            gf[i] = pg_tensor_copy(NULL, ps.tensors[i]->grad);
        set_unfused(lm, true);
        N_DIST = N_MOD = 0;
        pg_tensor *ref = run(lm, ids, tg, NULL);
        if (k == K_DPB)
            cr_assert(N_DIST == 0 && N_MOD == LAYERS, "reference: dist_bias %d, mod_bias %d", N_DIST, N_MOD);
        double d = max_abs_diff(fused, ref), worst = 0;
        cr_assert(d <= 1e-12, "%s: fused vs reference logits %.3g", KIND_NAME[k], d);
        for (int i = 0; i < ps.n; i++) {
            double e = max_abs_diff(gf[i], ps.tensors[i]->grad);
            worst = fmax(worst, e);
            cr_assert(e <= 1e-12, "%s: fused vs reference grad of %s: %.3g", KIND_NAME[k], ps.names[i], e);
            pg_tensor_free(gf[i]);
        }
        printf("shared_pos %s: fused vs reference path: logits %.3g, gradients %.3g\n", KIND_NAME[k], d, worst);
        free(gf);
        pg_tensor_list_free(&ps);
        free_all(4, (pg_tensor *[]){ids, tg, fused, ref});
        pg_module_free(&lm->base);
    }
}

/* ---- gradcheck through the shared parameters -------------------------------------------------- */

typedef struct gc_case {
    pg_lm *lm;
    pg_tensor *ids;
} gc_case;

static pg_tensor *call_lm(pg_graph *g, pg_tensor *const *in, int n, void *ctx)
{
    (void)in, (void)n;
    const gc_case *c = ctx;
    return pg_lm_forward(g, c->lm, c->ids, NULL);
}

Test(shared_pos, gradcheck_every_parameter)
{
    for (int k = 0; k < 3; k++) {
        pg_lm *lm = make_lm(lm_config((kind_t)k, true, 2));
        gc_case c = {lm, ids_of(2, 4, 9)};
        pg_tensor *in[256];
        int n = with_params(in, 0, &lm->base);
        pg_tensor_list ps = pg_module_parameters(&lm->rel_pos[0]->base); /* the shared ones */
        int found = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < ps.n; j++)
                found += in[i] == ps.tensors[j];
        cr_assert(ps.n > 0 && found == ps.n, "%s: %d of %d shared parameters checked", KIND_NAME[k], found, ps.n);
        pg_tensor_list_free(&ps);
        pg_gradcheck_opts o = f64_only();
        assert_gradcheck(call_lm, n, in, &c, &o);
        pg_tensor_free(c.ids);
        pg_module_free(&lm->base);
    }
}

/* ---- names: listed once ---------------------------------------------------------------------- */

Test(shared_pos, parameters_listed_once)
{
    pg_lm *s = make_lm(lm_config(K_DPB, true, LAYERS)), *u = make_lm(lm_config(K_DPB, false, LAYERS));
    pg_tensor_list ps = pg_module_parameters(&s->base);
    int64_t shared_numel = 0;
    for (int i = 0; i < ps.n; i++) {
        cr_assert_null(strstr(ps.names[i], "attn.pos"), "%s: a block lists the shared module", ps.names[i]);
        for (int j = 0; j < i; j++)
            cr_assert_neq(ps.tensors[i], ps.tensors[j], "%s listed twice", ps.names[i]);
        if (!strncmp(ps.names[i], "rel_pos.", 8))
            shared_numel += ps.tensors[i]->numel;
    }
    cr_assert_not_null(pg_module_find_param(&s->base, "rel_pos.mlp.0.0.weight"), "x-transformers' name");
    cr_assert_gt(shared_numel, 0);
    cr_assert_eq(pg_module_num_elements(&u->base) - pg_module_num_elements(&s->base), (LAYERS - 1) * shared_numel);
    for (int b = 0; b < LAYERS; b++) { /* every block calls the same module */
        cr_assert_eq(s->blocks[b]->attn->n_pos, 1);
        cr_assert_eq(s->blocks[b]->attn->pos[0], s->rel_pos[0]);
    }
    pg_tensor_list_free(&ps);
    pg_module_free(&s->base);
    pg_module_free(&u->base);
}

/* Several shared modules are "rel_pos.N"; mixed with per-layer ones the call order is layer_pos'. */
Test(shared_pos, several_and_mixed)
{
    pg_lm_config c = lm_config(K_T5, true, LAYERS);
    c.n_layer_pos = 3;
    c.layer_pos[1] = (pg_posmod_spec){.kind = "xl"};
    c.layer_pos[2] = (pg_posmod_spec){.kind = "dpb"};
    c.share_layer_pos[1] = false;
    c.share_layer_pos[2] = true;
    pg_lm *lm = make_lm(c);
    cr_assert_not_null(pg_module_find_param(&lm->base, "rel_pos.0.relative_attention_bias.weight"));
    cr_assert_not_null(pg_module_find_param(&lm->base, "rel_pos.1.mlp.0.0.weight"));
    cr_assert_null(lm->rel_pos[1]);
    for (int b = 0; b < LAYERS; b++) {
        pg_mha *m = lm->blocks[b]->attn;
        cr_assert_eq(m->n_pos, 3);
        cr_assert(m->pos[0] == lm->rel_pos[0] && m->pos[2] == lm->rel_pos[2]);
        cr_assert_str_eq(m->pos[1]->base.type, lm->blocks[0]->attn->pos[1]->base.type);
        cr_assert(b == 0 || m->pos[1] != lm->blocks[0]->attn->pos[1], "xl is per layer");
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.attn.pos", b); /* the block's one own module: "pos" */
        pg_tensor_list ps = pg_module_parameters(&lm->base);
        bool found = false;
        for (int i = 0; i < ps.n; i++)
            found = found || !strncmp(ps.names[i], name, strlen(name));
        cr_assert(found, "%s.* missing", name);
        pg_tensor_list_free(&ps);
    }
    /* and it runs, fused path and reference alike */
    pg_tensor *ids = ids_of(1, 5, 3);
    pg_tensor *a = run(lm, ids, ids, NULL);
    set_unfused(lm, true);
    pg_tensor *r = run(lm, ids, ids, NULL);
    cr_assert_leq(max_abs_diff(a, r), 1e-12);
    free_all(3, (pg_tensor *[]){ids, a, r});
    pg_module_free(&lm->base);
}

/* ---- checkpoints and training ------------------------------------------------------------------ */

Test(shared_pos, state_dict_round_trip)
{
    pg_lm *s = make_lm(lm_config(K_T5, true, LAYERS));
    pg_lm_config c2 = lm_config(K_T5, true, LAYERS);
    c2.seed = 99;
    pg_lm *t = make_lm(c2);
    char path[64];
    snprintf(path, sizeof path, "/tmp/pg_shared_pos_%d.safetensors", (int)getpid());
    cr_assert_eq(pg_module_save(&s->base, path), 0, "%s", pg_last_error());
    pg_load_report rep = {0};
    cr_assert_eq(pg_module_load(&t->base, path, true, &rep), 0, "%s", pg_last_error());
    cr_assert(rep.n_missing == 0 && rep.n_unexpected == 0, "missing %d, unexpected %d", rep.n_missing,
              rep.n_unexpected);
    pg_load_report_free(&rep);
    remove(path);
    pg_tensor_list a = pg_module_parameters(&s->base), b = pg_module_parameters(&t->base);
    cr_assert_eq(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        cr_assert_str_eq(a.names[i], b.names[i]);
        cr_assert_eq(memcmp(a.tensors[i]->data, b.tensors[i]->data, (size_t)a.tensors[i]->numel * sizeof(double)),
                     0, "%s differs after the round trip", a.names[i]);
    }
    /* the loaded table is the one every block of t uses */
    pg_tensor *ids = ids_of(2, 5, 4);
    pg_tensor *la = run(s, ids, ids, NULL), *lb = run(t, ids, ids, NULL);
    cr_assert_eq(max_abs_diff(la, lb), 0.0);
    free_all(3, (pg_tensor *[]){ids, la, lb});
    pg_tensor_list_free(&a);
    pg_tensor_list_free(&b);
    pg_module_free(&s->base);
    pg_module_free(&t->base);
}

/* First Adam step (bias-corrected): p <- p - lr g / (|g| + eps) exactly once; stepped twice
 * (the tensor in the optimizer twice) it would move about 2 lr. */
Test(shared_pos, adam_steps_the_shared_parameters_once)
{
    pg_lm *lm = make_lm(lm_config(K_DPB, true, LAYERS));
    pg_tensor *ids = ids_of(2, 6, 8);
    pg_tensor *logits = run(lm, ids, ids, NULL);
    pg_tensor_list ps = pg_module_parameters(&lm->base);
    pg_tensor *w = pg_module_find_param(&lm->base, "rel_pos.mlp.0.0.weight");
    pg_tensor *before = pg_tensor_copy(NULL, w), *grad = pg_tensor_copy(NULL, w->grad);
    double lr = 1e-2, eps = 1e-8;
    pg_optim_hparams h = pg_adam_hparams(lr);
    pg_optim *opt = pg_optim_new(PG_ADAM, &h);
    cr_assert_geq(pg_optim_add_group(opt, ps.tensors, ps.n, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_optim_step(opt), 0, "%s", pg_last_error());
    double worst = 0;
    for (int64_t j = 0; j < w->numel; j++) {
        double g = pg_get(grad, j), want = pg_get(before, j) - lr * g / (fabs(g) + eps);
        worst = fmax(worst, fabs(pg_get(w, j) - want));
    }
    cr_assert(worst <= 1e-15, "the shared weight did not move by one Adam step: %.3g", worst);
    cr_assert_gt(max_abs_diff(w, before), 0.5 * lr, "it did not move");
    pg_optim_free(opt);
    pg_tensor_list_free(&ps);
    free_all(4, (pg_tensor *[]){ids, logits, before, grad});
    pg_module_free(&lm->base);
}

/* ---- ownership and bad input ----------------------------------------------------------------- */

/* Two attentions borrow one module: freeing them leaves it whole (ASan checks the
 * frees), and it still works afterwards; pg_mha_borrow_pos's refusals. */
Test(shared_pos, borrowed_module_outlives_the_attention)
{
    pg_posmod *p = test_rel_scheme(1, 2, 4);
    pg_mha *a = test_mha(8, 2, (test_mha_flags){.causal = true}, NULL, 0, 1);
    pg_mha *b = test_mha(8, 2, (test_mha_flags){.causal = true}, (pg_posmod *[]){test_rel_scheme(0, 2, 5)}, 1, 2);
    cr_assert_eq(pg_mha_borrow_pos(a, p, 0), 0, "%s", pg_last_error());
    cr_assert_eq(pg_mha_borrow_pos(b, p, 0), 0, "%s", pg_last_error()); /* before b's own ALiBi */
    cr_assert(b->n_pos == 2 && b->pos[0] == p && b->pos[1] != p);
    pg_tensor_list pb = pg_module_parameters(&b->base);
    for (int i = 0; i < pb.n; i++)
        cr_assert_null(strstr(pb.names[i], "mlp"), "%s: a borrowed module is no child", pb.names[i]);
    pg_tensor_list_free(&pb);
    ASSERT_RC_FAILS(pg_mha_borrow_pos(b, p, 1), "pg_mha_borrow_pos: the module (DynamicPositionBias) is already");
    ASSERT_RC_FAILS(pg_mha_borrow_pos(b, p, 3), "pg_mha_borrow_pos: index 3 is outside [0, 2]");
    ASSERT_RC_FAILS(pg_mha_borrow_pos(NULL, p, 0), "pg_mha_borrow_pos: module is NULL");
    ASSERT_RC_FAILS(pg_mha_borrow_pos(a, NULL, 0), "pg_mha_borrow_pos: positional module is NULL");
    cr_assert_eq(b->n_pos, 2);
    pg_tensor *x = randt(PG_SHAPE(1, 4, 8), 3, false);
    pg_tensor *ya = pg_mha_forward(NULL, a, x, NULL, NULL);
    cr_assert_not_null(ya, "%s", pg_last_error());
    pg_module_free(&a->base);
    pg_module_free(&b->base);
    pg_pos_ctx c = {.B = 1, .heads = 2, .head_dim = 4, .Lq = 4, .Lk = 4, .dtype = PG_F64, .self_attn = true};
    pg_tensor *t = pg_posmod_bias_table(NULL, p, &c);
    cr_assert_not_null(t, "the lent module after its borrowers were freed: %s", pg_last_error());
    free_all(3, (pg_tensor *[]){x, ya, t});
    pg_module_free(&p->base);
}

Test(shared_pos, bad_configs_refused)
{
    pg_lm_config c = lm_config(K_DPB, true, 2);
    c.share_layer_pos[2] = true; /* past n_layer_pos 1 */
    ASSERT_FAILS(pg_lm_new(&c), "pg_lm_new: share_layer_pos[2] is set but n_layer_pos is 1");
    c = lm_config(K_DPB, true, 2);
    c.layer_pos[0] = (pg_posmod_spec){.kind = "no_such_scheme"};
    ASSERT_FAILS(pg_lm_new(&c), "pg_lm_new: shared positional module layer_pos[0] (share_layer_pos): "
                                "pg_posmod_from_spec: unknown positional module kind");
    c = lm_config(K_DPB, true, 2);
    c.n_layer_pos = 0; /* the flag alone */
    ASSERT_FAILS(pg_lm_new(&c), "share_layer_pos[0] is set but n_layer_pos is 0");
}
