/* Training checkpoints: resuming is bit-identical; bad files change nothing. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* A two-layer model (Linear 4->8, dropout, tanh, Linear 8->3) with Adam,
 * a warmup-cosine schedule and a generator that draws the data and the
 * dropout masks, so every piece of state matters for the next step. */
typedef struct run {
    pg_module *model;
    pg_linear *l1, *l2;
    pg_optim *opt;
    pg_schedule *sched;
    pg_rng rng;
    pg_graph *g;
} run;

static run run_new(uint64_t init_seed)
{
    run r;
    pg_rng init = pg_rng_init(init_seed);
    r.model = calloc(1, sizeof *r.model);
    pg_module_init(r.model, "Model", NULL);
    r.l1 = pg_linear_new(4, 8, true, PG_F64, &init);
    r.l2 = pg_linear_new(8, 3, true, PG_F64, &init);
    cr_assert_eq(pg_module_add_child(r.model, "l1", &r.l1->base), 0);
    cr_assert_eq(pg_module_add_child(r.model, "l2", &r.l2->base), 0);
    pg_tensor_list p = pg_module_parameters(r.model);
    r.opt = pg_optim_new(PG_ADAM, NULL);
    cr_assert_geq(pg_optim_add_group(r.opt, p.tensors, p.n, NULL), 0);
    pg_tensor_list_free(&p);
    r.sched = pg_schedule_new(r.opt, pg_sched_warmup_cosine(3, 0.1, 20, 0.1));
    cr_assert_not_null(r.sched, "%s", pg_last_error());
    r.rng = pg_rng_init(99);
    r.g = pg_graph_new();
    return r;
}

static void run_free(run *r)
{
    pg_graph_free(r->g);
    pg_schedule_free(r->sched);
    pg_optim_free(r->opt);
    pg_module_free(r->model);
}

static void train(run *r, int steps)
{
    for (int s = 0; s < steps; s++) {
        pg_graph_reset(r->g);
        pg_tensor *x = pg_randn(r->g, PG_F64, PG_SHAPE(5, 4), &r->rng);
        pg_tensor *y = pg_randn(r->g, PG_F64, PG_SHAPE(5, 3), &r->rng);
        pg_tensor *h = pg_tanh(r->g, pg_dropout(r->g, pg_linear_forward(r->g, r->l1, x), 0.3, true, &r->rng));
        pg_tensor *d = pg_sub(r->g, pg_linear_forward(r->g, r->l2, h), y);
        pg_tensor *loss = pg_mean(r->g, pg_square(r->g, d), 0, NULL, false);
        cr_assert_eq(pg_backward(r->g, loss), 0, "%s", pg_graph_error(r->g));
        cr_assert_eq(pg_optim_step(r->opt), 0, "%s", pg_last_error());
        pg_optim_zero_grad(r->opt);
        cr_assert_eq(pg_schedule_step(r->sched), 0);
    }
}

static void assert_same_params(const run *a, const run *b)
{
    pg_tensor_list pa = pg_module_parameters(a->model);
    for (int i = 0; i < pa.n; i++) {
        pg_tensor *tb = pg_module_find_param(b->model, pa.names[i]);
        cr_assert_not_null(tb, "%s missing", pa.names[i]);
        cr_assert_eq(memcmp(pa.tensors[i]->data, tb->data, (size_t)tb->numel * sizeof(double)), 0, "%s differs",
                     pa.names[i]);
    }
    pg_tensor_list_free(&pa);
}

static char *tmp_path(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/tmp/pg_ckpt_%s_%d.safetensors", tag, (int)getpid());
    return buf;
}

Test(checkpoint, resume_is_bit_identical)
{
    char path[128];
    tmp_path(path, sizeof path, "resume");
    run full = run_new(1), half = run_new(1);
    train(&full, 10);
    train(&half, 5);
    cr_assert_eq(pg_checkpoint_save(path, half.model, half.opt, half.sched, &half.rng), 0, "%s", pg_last_error());
    run resumed = run_new(2); /* different init: everything must come from the file */
    cr_assert_eq(pg_checkpoint_load(path, resumed.model, resumed.opt, resumed.sched, &resumed.rng), 0, "%s",
                 pg_last_error());
    cr_assert_eq(pg_schedule_get_step(resumed.sched), 5);
    cr_assert_eq(resumed.rng.counter, half.rng.counter);
    train(&resumed, 5);
    assert_same_params(&full, &resumed);
    remove(path);
    run_free(&full);
    run_free(&half);
    run_free(&resumed);
}

Test(checkpoint, bad_files_change_nothing)
{
    char path[128], other[128];
    tmp_path(path, sizeof path, "bad");
    tmp_path(other, sizeof other, "other");
    run a = run_new(1), b = run_new(3), ref = run_new(3);
    train(&a, 2);
    cr_assert_eq(pg_checkpoint_save(path, a.model, a.opt, a.sched, &a.rng), 0);
    /* a model whose second layer has another shape: the optimizer state fits
     * nothing either, and b must come out exactly as it was */
    pg_rng init = pg_rng_init(5);
    pg_module *m = calloc(1, sizeof *m);
    pg_module_init(m, "Model", NULL);
    pg_module_add_child(m, "l1", &pg_linear_new(4, 8, true, PG_F64, &init)->base);
    pg_module_add_child(m, "l2", &pg_linear_new(8, 2, true, PG_F64, &init)->base);
    cr_assert_eq(pg_checkpoint_save(other, m, NULL, NULL, NULL), 0);
    pg_module_free(m);
    cr_assert_eq(pg_checkpoint_load(other, b.model, b.opt, b.sched, &b.rng), -1);
    cr_assert(strstr(pg_last_error(), "rng.state"), "%s", pg_last_error());
    cr_assert_eq(pg_checkpoint_load(other, b.model, NULL, NULL, NULL), -1);
    cr_assert(strstr(pg_last_error(), "l2.weight"), "%s", pg_last_error());
    /* a truncated checkpoint */
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(ftruncate(fileno(f), 100), 0);
    fclose(f);
    cr_assert_eq(pg_checkpoint_load(path, b.model, b.opt, b.sched, &b.rng), -1);
    cr_assert_eq(pg_checkpoint_load("/nonexistent/x.safetensors", b.model, b.opt, b.sched, &b.rng), -1);
    cr_assert_eq(pg_checkpoint_load(NULL, b.model, NULL, NULL, NULL), -1);
    cr_assert(strstr(pg_last_error(), "pg_checkpoint_load: path is NULL"));
    /* b still trains exactly like an untouched twin */
    train(&b, 2);
    train(&ref, 2);
    assert_same_params(&b, &ref);
    remove(path);
    remove(other);
    run_free(&a);
    run_free(&b);
    run_free(&ref);
}

Test(checkpoint, model_failure_restores_the_optimizer)
{
    char path[128];
    tmp_path(path, sizeof path, "restore");
    run a = run_new(1), b = run_new(3), ref = run_new(3);
    train(&a, 3);
    train(&b, 1);
    train(&ref, 1);
    cr_assert_eq(pg_checkpoint_save(path, a.model, a.opt, a.sched, &a.rng), 0);
    /* b's model gets an extra parameter: strict loading fails after the
     * optimizer state was already imported, which must be put back */
    pg_tensor *extra = pg_module_new_param(b.model, "extra", PG_F64, PG_SHAPE(2));
    cr_assert_not_null(extra);
    cr_assert_eq(pg_checkpoint_load(path, b.model, b.opt, b.sched, &b.rng), -1);
    cr_assert(strstr(pg_last_error(), "extra"), "%s", pg_last_error());
    cr_assert_eq(pg_schedule_get_step(b.sched), 1);
    train(&b, 2);
    train(&ref, 2);
    assert_same_params(&ref, &b);
    remove(path);
    run_free(&a);
    run_free(&b);
    run_free(&ref);
}

Test(checkpoint, metadata_pairs_round_trip_and_describe_the_file)
{
    char path[128], model_path[128];
    tmp_path(path, sizeof path, "meta");
    tmp_path(model_path, sizeof model_path, "meta_model");
    run a = run_new(1);
    train(&a, 5);
    const char *keys[] = {"app.pos", "app.dim"}, *values[] = {"dpb", "128"};
    cr_assert_eq(pg_checkpoint_save_meta(path, a.model, a.opt, a.sched, &a.rng, 2, keys, values), 0, "%s",
                 pg_last_error());
    pg_checkpoint_info info;
    cr_assert_eq(pg_checkpoint_info_read(path, &info), 0, "%s", pg_last_error());
    cr_assert(info.is_checkpoint);
    cr_assert(info.has_optim);
    cr_assert(info.has_rng);
    cr_assert_eq(info.step, 5);
    cr_assert_eq(info.n_model, 4); /* l1.weight, l1.bias, l2.weight, l2.bias */
    cr_assert_eq(info.n_meta, 2);  /* "format" is not listed */
    cr_assert_str_eq(info.keys[0], "app.pos");
    cr_assert_str_eq(pg_checkpoint_info_get(&info, "app.dim"), "128");
    cr_assert_null(pg_checkpoint_info_get(&info, "format"));
    cr_assert_null(pg_checkpoint_info_get(&info, "app.seq"));
    pg_checkpoint_info_free(&info);
    pg_checkpoint_info_free(&info); /* twice is harmless */
    /* the file still loads as a checkpoint, and resumes exactly */
    run full = run_new(1), resumed = run_new(2);
    train(&full, 10);
    cr_assert_eq(pg_checkpoint_load(path, resumed.model, resumed.opt, resumed.sched, &resumed.rng), 0, "%s",
                 pg_last_error());
    train(&resumed, 5);
    assert_same_params(&full, &resumed);
    /* "format" is the file's own key; a NULL value or an empty key is refused; nothing is written */
    remove(path);
    const char *fmt[] = {"format"}, *v1[] = {"x"}, *empty[] = {""}, *null_value[] = {NULL};
    cr_assert_eq(pg_checkpoint_save_meta(path, a.model, a.opt, a.sched, &a.rng, 1, fmt, v1), -1);
    cr_assert(strstr(pg_last_error(), "\"format\" is reserved"), "%s", pg_last_error());
    cr_assert_eq(pg_checkpoint_save_meta(path, a.model, a.opt, a.sched, &a.rng, 1, empty, v1), -1);
    cr_assert_eq(pg_checkpoint_save_meta(path, a.model, a.opt, a.sched, &a.rng, 1, keys, null_value), -1);
    cr_assert_eq(pg_checkpoint_save_meta(path, a.model, a.opt, a.sched, &a.rng, 1, NULL, NULL), -1);
    cr_assert_eq(access(path, F_OK), -1, "a refused save wrote %s", path);
    /* a checkpoint without pairs, and a weights-only state dict */
    cr_assert_eq(pg_checkpoint_save(path, a.model, a.opt, NULL, NULL), 0);
    cr_assert_eq(pg_checkpoint_info_read(path, &info), 0);
    cr_assert(info.is_checkpoint && info.has_optim && !info.has_rng);
    cr_assert_eq(info.step, -1);
    cr_assert_eq(info.n_meta, 0);
    cr_assert_null(info.keys);
    pg_checkpoint_info_free(&info);
    cr_assert_eq(pg_module_save(a.model, model_path), 0);
    cr_assert_eq(pg_checkpoint_info_read(model_path, &info), 0);
    cr_assert(!info.is_checkpoint && !info.has_optim && !info.has_rng);
    cr_assert_eq(info.n_model, 4);
    pg_checkpoint_info_free(&info);
    cr_assert_eq(pg_checkpoint_load(model_path, resumed.model, resumed.opt, resumed.sched, &resumed.rng), -1);
    cr_assert(strstr(pg_last_error(), "is not a training checkpoint"), "%s", pg_last_error());
    cr_assert(strstr(pg_last_error(), "no optimizer state"), "%s", pg_last_error());
    /* unreadable files fail with a message and leave info empty */
    cr_assert_eq(pg_checkpoint_info_read("/nonexistent/x.safetensors", &info), -1);
    cr_assert(strstr(pg_last_error(), "/nonexistent/x.safetensors"), "%s", pg_last_error());
    cr_assert_eq(info.n_meta, 0);
    cr_assert_eq(info.step, -1);
    cr_assert_eq(pg_checkpoint_info_read(NULL, &info), -1);
    cr_assert_eq(pg_checkpoint_info_read(path, NULL), -1);
    remove(path);
    remove(model_path);
    run_free(&a);
    run_free(&full);
    run_free(&resumed);
}
