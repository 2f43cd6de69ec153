/* Smoke test of examples/bias_lab.c: a step or two of every scheme writes one
 * valid PNG per epoch (and one before training), a few steps lower the loss,
 * bad flags and schemes fail cleanly. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/bias_lab.c"

#include <unistd.h>

#include "testutil.h"
#include <criterion/redirect.h>

static bool is_png(const char *path)
{
    static const unsigned char SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    unsigned char buf[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    size_t n = fread(buf, 1, 8, f);
    fclose(f);
    return n == 8 && memcmp(buf, SIG, 8) == 0;
}

/* A tiny run: 2 epochs of `steps` steps on a batch of 4. */
static bias_lab_opts tiny_opts(const char *scheme, int steps, const char *dir)
{
    bias_lab_opts o = bias_lab_defaults();
    o.scheme = scheme;
    o.epochs = 2;
    o.steps = steps;
    o.batch = 4;
    o.probe = 16;
    o.out_dir = dir;
    o.verbose = 0;
    o.threads = 1;
    return o;
}

Test(example_bias_lab, every_scheme_writes_heatmaps)
{
    char dir[] = "/tmp/pg_bias_lab_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    bias_lab_opts o = tiny_opts("all", 1, dir);
    bias_lab_result r;
    cr_assert_eq(bias_lab_run(&o, &r), 0);
    cr_assert_eq(r.n, BL_MAX_SCHEMES);
    for (int i = 0; i < r.n; i++) {
        const bias_lab_scheme_result *s = &r.s[i];
        cr_assert_str_eq(s->scheme, BL_SCHEMES[i]);
        cr_assert_eq(s->pngs, 3, "epoch 0 and one per epoch");
        cr_assert(isfinite(s->probe_loss_before) && isfinite(s->probe_loss_after));
        cr_assert(s->accuracy >= 0 && s->accuracy <= 1);
        for (int h = 0; h < BL_HEADS; h++)
            cr_assert(s->peak[h] >= 0 && s->peak[h] < BL_SEQ);
        cr_assert_eq(s->has_divisor, strcmp(s->scheme, "alibi") == 0);
        for (int e = 0; e <= 2; e++) {
            char path[128];
            snprintf(path, sizeof path, "%s/bias_%s_epoch%d.png", dir, s->scheme, e);
            cr_assert(is_png(path), "%s", path);
            cr_assert_eq(remove(path), 0);
        }
    }
    cr_assert_eq(rmdir(dir), 0, "only the heatmaps were written");
}

Test(example_bias_lab, loss_falls)
{
    /* rel1d learns fastest; 16 steps lower the probe loss by about 0.09 */
    bias_lab_opts o = tiny_opts("rel1d", 8, NULL);
    bias_lab_result r;
    cr_assert_eq(bias_lab_run(&o, &r), 0);
    cr_assert_eq(r.n, 1);
    const bias_lab_scheme_result *s = &r.s[0];
    cr_assert_eq(s->pngs, 0, "no --out, no pictures");
    cr_assert_lt(s->probe_loss_after, s->probe_loss_before - 0.03, "probe loss %g -> %g", s->probe_loss_before,
                 s->probe_loss_after);
    cr_assert(isfinite(s->first_loss) && isfinite(s->last_loss));
}

Test(example_bias_lab, flags_and_bad_input)
{
    cr_redirect_stdout();
    cr_redirect_stderr();
    char *help[] = {"bias_lab", "--help", NULL};
    char *bad_flag[] = {"bias_lab", "--frobnicate", "3", NULL};
    char *missing[] = {"bias_lab", "--steps", NULL};
    char *bad_scheme[] = {"bias_lab", "--scheme", "rotary", "--epochs", "1", "--steps", "1", "--quiet", NULL};
    char *zero_steps[] = {"bias_lab", "--steps", "0", NULL};
    cr_assert_eq(bias_lab_main(2, help), 0);
    cr_assert_eq(bias_lab_main(3, bad_flag), 2);
    cr_assert_eq(bias_lab_main(2, missing), 2);
    cr_assert_eq(bias_lab_main(8, bad_scheme), 1);
    cr_assert_eq(bias_lab_main(3, zero_steps), 1);
    bias_lab_opts o = bias_lab_defaults();
    o.out_dir = "/nonexistent-dir/sub";
    o.verbose = 0;
    bias_lab_result r;
    cr_assert_eq(bias_lab_run(&o, &r), -1);
}
