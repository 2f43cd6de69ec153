/* Smoke test of examples/bias_lab.c: a step or two of every scheme writes one
 * heatmap and one profile PNG per epoch (and before training), a few steps
 * lower the loss, several seeds give rates and a self-contained report.html,
 * bad flags and schemes fail cleanly. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/bias_lab.c"

#include <unistd.h>

#include "testutil.h"
#include <criterion/redirect.h>

#include "example_png.h"
#include "example_run.h"

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
        /* biases that fall with the distance whatever their parameters: the peak stays at 0 */
        bool monotone = !strcmp(s->scheme, "alibi") || !strcmp(s->scheme, "kerple") || !strcmp(s->scheme, "fox");
        for (int h = 0; monotone && h < BL_HEADS; h++)
            cr_assert_eq(s->peak[h], 0, "%s head %d", s->scheme, h);
        for (int e = 0; e <= 2; e++)
            for (int k = 0; k < 2; k++) {
                char path[128];
                snprintf(path, sizeof path, "%s/%s_%s_epoch%d.png", dir, k ? "profile" : "bias", s->scheme, e);
                ex_assert_png(path, 400, 300); /* read back by pg_png_read, not blank */
                cr_assert_eq(remove(path), 0);
            }
    }
    cr_assert_eq(rmdir(dir), 0, "only the figures were written (the report is bias_lab_seeds_run's)");
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
    cr_assert_eq(bias_lab_main(8, bad_scheme), 2); /* a bad argument: status 2, as every example */
    cr_assert_eq(bias_lab_main(3, zero_steps), 2);
    bias_lab_opts o = bias_lab_defaults();
    o.out_dir = "/nonexistent-dir/sub";
    o.verbose = 0;
    bias_lab_result r;
    cr_assert_eq(bias_lab_run(&o, &r), -1);
}

/* A bad argument is found before any work: the default --out directory is not
 * created (this is what left an empty bias_lab_out/ in the repository root
 * after make test). Run in an empty temporary working directory, which must
 * stay empty. */
Test(example_bias_lab, bad_arguments_create_nothing)
{
    char dir[] = "/tmp/pg_bias_lab_cwd_XXXXXX", old[4096];
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_not_null(getcwd(old, sizeof old));
    cr_assert_eq(chdir(dir), 0);
    ex_run r;
    EX_RUN(&r, bias_lab_main, "bias_lab", "--scheme", "rotary", "--epochs", "1", "--steps", "1", "--quiet");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "bias_lab: --scheme: unknown scheme 'rotary' (accepted: dpb alibi t5 xl rel1d kerple fire cope fox all)");
    EX_RUN(&r, bias_lab_main, "bias_lab", "--steps", "0");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "bias_lab: --steps wants an integer in 1..", "got '0'");
    cr_assert_eq(chdir(old), 0);
    cr_assert_eq(rmdir(dir), 0, "the working directory stayed empty");
}

/* --help on stdout (status 0); an unknown flag, a missing value, a value that
 * is not a number (atoi used to read "abc" as 0): one line on stderr, status 2. */
Test(example_bias_lab, help_and_bad_command_lines)
{
    ex_run r;
    EX_RUN(&r, bias_lab_main, "bias_lab", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: bias_lab [flags]") && strstr(r.out, "--scheme S") && strstr(r.out, "--quiet"),
              "%s", r.out);
    cr_assert_str_empty(r.err);
    const ex_bad_arg cases[] = {
        {"--frobnicate", "3", "bias_lab: unknown flag '--frobnicate'"},
        {"--steps", "abc", "bias_lab: --steps wants an integer in 1..1000000, got 'abc'"},
        {"--lr", "fast", "bias_lab: --lr wants a number > 0, got 'fast'"},
        {"--seed", "x", "bias_lab: --seed wants an integer in 0..18446744073709551615, got 'x'"},
        {"--seed", "-1", "bias_lab: --seed wants an integer in 0..18446744073709551615, got '-1'"},
        {"--quiet=1", NULL, "bias_lab: --quiet takes no value, got '--quiet=1'"},
        {"--epochs", NULL, "bias_lab: --epochs needs a value: an integer in 1..1000"},
        {"--threads", "100000", "bias_lab: --threads wants an integer in 0..64, got '100000'"},
    };
    EX_ASSERT_BAD_ARGS(bias_lab_main, "bias_lab", cases);
}

/* PG_NUM_THREADS out of range is an error like --threads out of range. */
Test(example_bias_lab, bad_pg_num_threads)
{
    cr_assert_eq(setenv("PG_NUM_THREADS", "1000", 1), 0);
    ex_run r;
    EX_RUN(&r, bias_lab_main, "bias_lab", "--out", "", "--quiet");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "bias_lab: pg_threads_init: PG_NUM_THREADS is '1000', not an integer in 1..64");
    unsetenv("PG_NUM_THREADS");
}

/* --out '' writes no pictures: a tiny run through main, quiet, prints its table. */
Test(example_bias_lab, main_without_pictures)
{
    char dir[] = "/tmp/pg_bias_lab_cwd_XXXXXX", old[4096];
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_not_null(getcwd(old, sizeof old));
    cr_assert_eq(chdir(dir), 0);
    ex_run r;
    EX_RUN(&r, bias_lab_main, "bias_lab", "--scheme", "t5", "--epochs", "1", "--steps", "1", "--batch", "2",
           "--probe", "2", "--threads", "1", "--out", "", "--quiet");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "| t5 |") && strstr(r.out, "1 scheme(s) x 5 seed(s)") && strstr(r.out, "no figures (--out '')"),
              "%s", r.out);
    cr_assert(strstr(r.out, "Over 5 runs (seeds 1, 2, 3, 4, 5):") && strstr(r.out, "| t5 | "), "the rate table: %s", r.out);
    EX_RUN(&r, bias_lab_main, "bias_lab", "--scheme", "t5", "--epochs", "1", "--steps", "1", "--batch", "2",
           "--probe", "2", "--threads", "1", "--out", "", "--quiet", "--seed", "5");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "1 scheme(s) x 1 seed(s)") && !strstr(r.out, "Over "), "--seed: one run, no rates: %s", r.out);
    cr_assert_eq(chdir(old), 0);
    cr_assert_eq(rmdir(dir), 0, "nothing written");
}

/* RFC 4648 section 10's test vectors. */
Test(example_bias_lab, base64_rfc4648_vectors)
{
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);
        cr_assert_not_null(f);
        bl_base64(f, (const uint8_t *)in[i], strlen(in[i]));
        cr_assert_eq(fclose(f), 0);
        cr_assert_str_eq(buf, out[i], "base64(\"%s\")", in[i]);
        free(buf);
    }
}

Test(example_bias_lab, seeds_lists)
{
    uint64_t seeds[BL_MAX_SEEDS];
    int n;
    char why[128];
    cr_assert_eq(bl_parse_seeds("3", seeds, &n, why, sizeof why), 0);
    cr_assert(n == 3 && seeds[0] == 1 && seeds[1] == 2 && seeds[2] == 3);
    cr_assert_eq(bl_parse_seeds("11,2,18446744073709551615", seeds, &n, why, sizeof why), 0);
    cr_assert(n == 3 && seeds[0] == 11 && seeds[1] == 2 && seeds[2] == UINT64_MAX);
    const char *bad[] = {"", "0", "65", "x", "3x", "1,,2", "1,", ",1", "1,1", "-1,2", "1, 2", "1,18446744073709551616"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(bl_parse_seeds(bad[i], seeds, &n, why, sizeof why), -1, "'%s'", bad[i]);
    cr_assert_eq(bl_parse_seeds("1,1", seeds, &n, why, sizeof why), -1);
    cr_assert_str_eq(why, "seed 1 is listed twice");
    ex_run r;
    EX_RUN(&r, bias_lab_main, "bias_lab", "--seeds", "0");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "bias_lab: --seeds wants a count in 1..64 or a list like 1,2,3, got '0'");
    EX_RUN(&r, bias_lab_main, "bias_lab", "--seed", "4", "--seeds=1,2");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "bias_lab: --seed (one run) and --seeds (several) exclude each other");
}

/* The rate keeps the most accurate run that missed: the instructive one. */
Test(example_bias_lab, rate_keeps_the_most_accurate_miss)
{
    bias_lab_scheme_rate q = {0};
    bias_lab_scheme_result a = {.scheme = "dpb", .seed = 1, .accuracy = 1.0, .peaks_ok = true};
    bias_lab_scheme_result b = {.scheme = "dpb", .seed = 2, .accuracy = 0.4, .peaks_ok = false};
    bias_lab_scheme_result c = {.scheme = "dpb", .seed = 3, .accuracy = 0.9, .peaks_ok = false};
    bl_rate_add(&q, &a);
    cr_assert_not(q.has_miss);
    bl_rate_add(&q, &b);
    bl_rate_add(&q, &c);
    cr_assert(q.runs == 3 && q.recovered == 1 && q.has_miss && q.miss.seed == 3);
    cr_assert_float_eq(q.acc_mean, 2.3 / 3, 1e-12);
    cr_assert(q.acc_min == 0.4 && q.acc_max == 1.0);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_of(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

/* Two seeds of two schemes: rates over both, the figures of the first, and a
 * report.html with every figure embedded, a slider per scheme and nothing
 * fetched from elsewhere. (make browser-check opens it in Chromium.) */
Test(example_bias_lab, seeds_and_report)
{
    char dir[] = "/tmp/pg_bias_lab_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    bias_lab_opts o = tiny_opts("t5", 2, dir);
    o.seeds = "4,9";
    bias_lab_seeds_result r;
    cr_assert_eq(bias_lab_seeds_run(&o, &r), 0);
    cr_assert(r.n_seeds == 2 && r.seeds[0] == 4 && r.seeds[1] == 9 && r.n == 1);
    cr_assert(r.first.n == 1 && r.first.s[0].seed == 4 && r.first.s[0].pngs == 3);
    const bias_lab_scheme_rate *q = &r.rate[0];
    cr_assert(q->runs == 2 && q->recovered >= 0 && q->recovered <= 2 && q->has_miss == (q->recovered < 2));
    cr_assert(q->acc_min <= q->acc_mean && q->acc_mean <= q->acc_max);
    char path[256];
    snprintf(path, sizeof path, "%s/report.html", dir);
    char *html = read_all(path);
    cr_assert_not_null(html);
    int figures = 2 * 3 + q->has_miss; /* heatmap and profile per epoch 0..2, the miss's profile */
    cr_assert_eq(count_of(html, "<img "), figures);
    cr_assert_eq(count_of(html, "src=\"data:image/png;base64,iVBORw0KGgo"), figures, "PNGs, embedded");
    cr_assert_eq(count_of(html, "<input type=\"range\" min=\"0\" max=\"2\""), 1);
    cr_assert(strstr(html, "id=\"s-t5\"") && strstr(html, "Over 2 runs (seeds 4, 9)") && strstr(html, "#selftest"));
    cr_assert_null(strstr(html, "http"), "no external resource");
    free(html);
    cr_assert_eq(remove(path), 0);
    if (q->has_miss) {
        snprintf(path, sizeof path, "%s/missed_t5_seed%" PRIu64 ".png", dir, q->miss.seed);
        ex_assert_png(path, 400, 300);
        cr_assert_eq(remove(path), 0);
    }
    for (int e = 0; e <= 2; e++)
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof path, "%s/%s_t5_epoch%d.png", dir, k ? "profile" : "bias", e);
            cr_assert_eq(remove(path), 0, "%s", path);
        }
    cr_assert_eq(rmdir(dir), 0, "the figures of seed 4 and the report, nothing else");
}

/* Seeds after the first train in parallel lanes when the pool has threads:
 * the rates are those of one lane, seed by seed, and the pool's size comes
 * back as it was. */
Test(example_bias_lab, lanes_give_the_rates_of_one_lane)
{
    bias_lab_seeds_result one, two;
    bias_lab_opts o = tiny_opts("dpb", 3, NULL);
    o.seeds = "3,4,5,6";
    cr_assert_eq(bias_lab_seeds_run(&o, &one), 0);
    o.threads = 2;
    cr_assert_eq(bias_lab_seeds_run(&o, &two), 0);
    cr_assert_eq(pg_num_threads(), 2, "the pool is given back its 2 threads");
    const bias_lab_scheme_rate *a = &one.rate[0], *b = &two.rate[0];
    cr_assert(a->runs == 4 && b->runs == 4 && a->recovered == b->recovered);
    cr_assert(a->acc_mean == b->acc_mean && a->acc_min == b->acc_min && a->acc_max == b->acc_max);
    cr_assert(a->has_miss == b->has_miss && (!a->has_miss || a->miss.seed == b->miss.seed));
    cr_assert(a->has_miss || a->recovered == 4);
    if (a->has_miss)
        cr_assert(memcmp(a->miss.profile, b->miss.profile, sizeof a->miss.profile) == 0,
                  "the missed run's profile, bit for bit");
}
