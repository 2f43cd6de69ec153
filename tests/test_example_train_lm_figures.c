/* train_lm's figures (examples/lm_figures.h): which files a scheme gets (from
 * its registry entry), that each is a PNG of the size asked for, that every
 * evaluation redraws them (atomically: no temporary file is left), and
 * --figures 0. Tiny models on a tiny corpus; test_example_train_lm.c has the
 * rest of train_lm. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/train_lm.c"

#include <dirent.h>

#include "testutil.h"
#include "example_png.h"
#include "example_run.h"

/* A temp dir with corpus.txt (a short text repeated) and the path of out/ in it. */
static void workdir(char dir[64], char out[128], char data[128])
{
    ex_corpus_workdir(dir, "/tmp/pg_train_lm_figs_XXXXXX",
                      "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the "
                      "slings and arrows of outrageous fortune, or to take arms against a sea of troubles. ",
                      out, data);
}

/* Removes the files of dir/out, dir/out and dir's own files, then dir. */
static void clean(const char *dir)
{
    char sub[128];
    snprintf(sub, sizeof sub, "%s/out", dir);
    const char *dirs[] = {sub, dir};
    for (int k = 0; k < 2; k++) {
        DIR *d = opendir(dirs[k]);
        for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dirs[k], e->d_name);
            if (e->d_name[0] != '.')
                unlink(path);
        }
        if (d)
            closedir(d);
        rmdir(dirs[k]);
    }
}

/* How many names in dir end with suffix. */
static int count_suffix(const char *dir, const char *suffix)
{
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        n += l >= s && !strcmp(e->d_name + l - s, suffix);
    }
    if (d)
        closedir(d);
    return n;
}

static ex_png png_in(const char *dir, const char *name, int64_t min_w, int64_t min_h)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return ex_assert_png(path, min_w, min_h);
}

#define FLAGS "--layers", "2", "--dim", "16", "--heads", "2", "--seq", "16", "--batch", "4", "--eval-windows", "4", \
              "--sample", "0", "--lr", "1e-2", "--steps", "4", "--eval-every", "2"

Test(example_train_lm_figures, alibi_gets_every_figure)
{
    char dir[64], out[128], data[128], want[512];
    workdir(dir, out, data);
    ex_run *r = malloc(sizeof *r);
    EX_RUN(r, train_lm_main, "train_lm", FLAGS, "--pos", "alibi", "--data", data, "--out", out);
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert_str_empty(r->err);
    snprintf(want, sizeof want, "figures in %s/, redrawn at each evaluation: loss.png, pos_layer0..1.png, "
             "bias_vs_distance.png, attn_layer0..1.png\n", out);
    cr_assert(strstr(r->out, want), "want '%s' in:\n%s", want, r->out);
    snprintf(want, sizeof want, "figures: 6 files in %s/, drawn at each of 2 evaluations: loss.png", out);
    cr_assert(strstr(r->out, want), "want '%s' in:\n%s", want, r->out);
    ex_png loss = png_in(out, "loss.png", 800, 480);
    cr_assert(loss.width == 800 && loss.height == 480, "loss.png %lld x %lld", (long long)loss.width,
              (long long)loss.height);
    for (int l = 0; l < 2; l++) {
        char name[32];
        snprintf(name, sizeof name, "pos_layer%d.png", l);
        png_in(out, name, 2 * 400, 400); /* two heads, each panel at least 400 pixels */
        snprintf(name, sizeof name, "attn_layer%d.png", l);
        png_in(out, name, 2 * 400, 400);
    }
    ex_png d = png_in(out, "bias_vs_distance.png", 2 * 560, 40 + 400); /* a panel per layer, two a row */
    cr_assert(d.width == 2 * 560 && d.height == 40 + 400, "%lld x %lld", (long long)d.width, (long long)d.height);
    cr_assert_eq(count_suffix(out, ".png"), 6);
    cr_assert_eq(count_suffix(out, ".tmp"), 0, "a temporary file was left");
    free(r);
    clean(dir);
}

/* Which figures from the registry entry: an input scheme its table and similarity; a bias_table that is not
 * a function of distance alone no bias_vs_distance; no bias: the loss and the attention maps. */
Test(example_train_lm_figures, each_kind_of_scheme)
{
    char dir[64], out[128], data[128];
    workdir(dir, out, data);
    const char *table_not_dist = NULL;
    const pg_posmod_kind_info *k;
    for (int i = 0; (k = pg_posmod_info_at(i)) && !table_not_dist; i++)
        if ((k->hooks & PG_POS_HOOK_TABLE) && !k->dist_only && lm_pos_find(k->kind) && !lm_scheme_is_input(k->kind))
            table_not_dist = k->kind;
    const char *pos[] = {"sinusoidal", "rotary", table_not_dist};
    ex_run *r = malloc(sizeof *r);
    for (int i = 0; i < 3 && pos[i]; i++) {
        EX_RUN(r, train_lm_main, "train_lm", FLAGS, "--pos", (char *)pos[i], "--data", data, "--out", out);
        cr_assert_eq(r->rc, 0, "--pos %s: %s", pos[i], r->err);
        png_in(out, "loss.png", 800, 480);
        png_in(out, "attn_layer1.png", 800, 400);
        if (i == 0) {
            png_in(out, "pos_input.png", 400, 400);
            png_in(out, "pos_input_similarity.png", 400, 400);
        }
        if (i == 2)
            png_in(out, "pos_layer1.png", 800, 400);
        int n = i == 0 ? 5 : i == 1 ? 3 : 5;
        cr_assert_eq(count_suffix(out, ".png"), n, "--pos %s: %d figures", pos[i], count_suffix(out, ".png"));
        clean(dir);
        workdir(dir, out, data);
    }
    free(r);
    clean(dir);
}

/* Each evaluation redraws: the loss curve gets the new rows of the log, the
 * attention maps the trained weights. */
Test(example_train_lm_figures, redrawn_at_each_evaluation)
{
    char dir[64], out[128], data[128], loss[256], attn[256];
    workdir(dir, out, data);
    train_lm_opts o = train_lm_defaults();
    o.pos = "dpb", o.data = data, o.out = out, o.layers = 1, o.dim = 16, o.heads = 2, o.seq = 16, o.batch = 4;
    o.steps = 10, o.lr = 1e-2;
    trainer t;
    cr_assert(freopen("/dev/null", "w", stdout)); /* trainer_init's lines */
    cr_assert_eq(trainer_init(&t, &o), 0);
    t.figs = (lm_figs){.dir = out, .pos = o.pos, .L = o.seq};
    cr_assert_eq(lm_make_dir(out), 0);
    cr_assert_eq(open_log(&t), 0);
    snprintf(loss, sizeof loss, "%s/loss.png", out);
    snprintf(attn, sizeof attn, "%s/attn_layer0.png", out);
    uint8_t *before[2] = {NULL, NULL};
    size_t n_before[2] = {0, 0};
    for (int round = 0; round < 2; round++) {
        for (int s = 1; s <= 3; s++) {
            double l;
            cr_assert_eq(train_step(&t, &l), 0);
            log_row(&t, 3 * round + s, l, s == 3 ? l + 0.1 : NAN, o.lr, 1000);
        }
        cr_assert_eq(lm_figs_draw(&t.figs, t.g, t.lm, &t.corpus, t.log_path), 0, "%s", pg_last_error());
        cr_assert_eq(t.figs.rounds, round + 1);
        cr_assert_eq(t.figs.files, 4, "loss, pos_layer0, bias_vs_distance, attn_layer0: %s", t.figs.list);
        const char *paths[2] = {loss, attn};
        for (int k = 0; k < 2; k++) {
            size_t n;
            uint8_t *now = ex_read_file(paths[k], &n);
            if (round == 1)
                cr_assert(n != n_before[k] || memcmp(now, before[k], n) != 0, "%s was not redrawn", paths[k]);
            free(before[k]);
            before[k] = now;
            n_before[k] = n;
        }
    }
    cr_assert_eq(count_suffix(out, ".tmp"), 0, "a temporary file was left");
    free(before[0]);
    free(before[1]);
    trainer_free(&t);
    clean(dir);
}

Test(example_train_lm_figures, figures_off_and_a_bad_value)
{
    char dir[64], out[128], data[128];
    workdir(dir, out, data);
    ex_run *r = malloc(sizeof *r);
    EX_RUN(r, train_lm_main, "train_lm", FLAGS, "--pos", "alibi", "--data", data, "--out", out, "--figures", "0");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert_eq(count_suffix(out, ".png"), 0);
    cr_assert(!strstr(r->out, "figures"), "%s", r->out);
    EX_RUN(r, train_lm_main, "train_lm", "--figures", "2", "--data", data, "--out", out);
    cr_assert_eq(r->rc, 1);
    cr_assert(strstr(r->err, "train_lm: --figures must be 0 (none) or 1 (redrawn at each evaluation)"), "%s", r->err);
    free(r);
    clean(dir);
}
