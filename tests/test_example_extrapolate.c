/* Smoke test of examples/extrapolate.c: three schemes trained a few steps on a
 * tiny corpus, evaluated at the training length and twice it; the learned table
 * reports n/a past its rows; the markdown file and the figure (--plot) are
 * written; bad flags fail. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/extrapolate.c"

#include "testutil.h"

#include "example_png.h"
#include "example_run.h"

static const char CORPUS[] = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor "
                             "jugs. how vexingly quick daft zebras jump! ";

Test(example_extrapolate, trains_each_scheme_and_tabulates)
{
    char dir[64] = "/tmp/pg_extrapolate_XXXXXX", data[128], md[128], png[128];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/corpus.txt", dir);
    snprintf(md, sizeof md, "%s/table.md", dir);
    snprintf(png, sizeof png, "%s/table.png", dir);
    FILE *f = fopen(data, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 10; i++)
        fputs(CORPUS, f);
    fclose(f);

    extrapolate_opts o = extrapolate_defaults();
    o.schemes = "none,alibi,learned";
    o.eval_lens = "8,16";
    o.data = data;
    o.md = md;
    o.plot = png;
    o.train_len = 8;
    o.layers = 1;
    o.dim = 16;
    o.heads = 2;
    o.batch = 4;
    o.steps = 30;
    o.eval_tokens = 64;
    o.lr = 1e-2;
    o.quiet = true;
    extrapolate_result r;
    cr_assert_eq(extrapolate_run(&o, &r), 0);
    cr_assert_eq(r.n_schemes, 3);
    cr_assert_eq(r.n_lens, 2);
    for (int s = 0; s < 3; s++) {
        cr_assert(r.last_loss[s] < r.first_loss[s] - 0.5, "%s: %g -> %g", r.schemes[s], r.first_loss[s],
                  r.last_loss[s]);
        cr_assert(isfinite(r.loss[s][0]), "%s at 8", r.schemes[s]);
    }
    cr_assert(isfinite(r.loss[1][1]), "alibi at 16");
    cr_assert(isnan(r.loss[2][1]), "learned has no rows past 8");
    char line[256] = {0};
    f = fopen(md, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    cr_assert(strstr(line, "| scheme |") == line, "%s", line);
    ex_png p = ex_assert_png(png, 800, 520);
    cr_assert(p.width == 800 && p.height == 520, "%s is %lld x %lld", png, (long long)p.width, (long long)p.height);
    unlink(png);
    unlink(md);
    unlink(data);
    rmdir(dir);
}

Test(example_extrapolate, bad_flags_fail)
{
    cr_assert_not_null(freopen("/dev/null", "w", stdout));
    cr_assert_not_null(freopen("/dev/null", "w", stderr));
    char *bogus[] = {"extrapolate", "--bogus"};
    cr_assert_neq(extrapolate_main(2, bogus), 0);
    char *lens[] = {"extrapolate", "--eval-lens", "64,,128"};
    cr_assert_neq(extrapolate_main(3, lens), 0);
    char *scheme[] = {"extrapolate", "--schemes", "nope", "--steps", "1", "--data", "/nonexistent"};
    cr_assert_neq(extrapolate_main(7, scheme), 0);
    char *help[] = {"extrapolate", "--help"};
    cr_assert_eq(extrapolate_main(2, help), 0);
}

/* A temp dir with the corpus; the path of the corpus in data. */
static void write_corpus(char dir[64], char data[128])
{
    strcpy(dir, "/tmp/pg_extrapolate_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, 128, "%s/corpus.txt", dir);
    FILE *f = fopen(data, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 10; i++)
        fputs(CORPUS, f);
    fclose(f);
}

/* Every argument is checked before any work: an unknown scheme late in
 * --schemes fails before the first scheme trains (nothing on stdout), with one
 * line naming the flag, the bad name and the accepted ones. */
Test(example_extrapolate, unknown_scheme_rejected_before_training)
{
    char dir[64], data[128];
    write_corpus(dir, data);
    ex_run r;
    EX_RUN(&r, extrapolate_main, "extrapolate", "--schemes", "alibi,nope", "--data", data, "--train-len", "8",
           "--eval-lens", "8", "--layers", "1", "--dim", "8", "--heads", "2", "--batch", "2", "--steps", "2",
           "--eval-tokens", "16");
    cr_assert_eq(r.rc, 2, "rc %d, stdout:\n%s", r.rc, r.out);
    /* accepted: none, every registered kind but the vision ones in registry order, then rel and local */
    char want[1024] = "none";
    const pg_posmod_kind_info *k;
    for (int i = 0; (k = pg_posmod_info_at(i)); i++)
        if (!(k->props & PG_POS_VISION))
            snprintf(want + strlen(want), sizeof want - strlen(want), " %s", k->kind);
    snprintf(want + strlen(want), sizeof want - strlen(want), " rel local");
    cr_assert(strstr(want, " alibi dpb xl t5 kerple sandwich"), "registry order changed: %s", want);
    ex_assert_one_line(&r, "extrapolate: --schemes: unknown scheme 'nope'", want);
    EX_RUN(&r, extrapolate_main, "extrapolate", "--schemes", "alibi,,rotary", "--data", data);
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--schemes", "'alibi,,rotary'", "empty");
    EX_RUN(&r, extrapolate_main, "extrapolate", "--schemes", "alibi,rotary,alibi", "--data", data);
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--schemes", "'alibi' twice");
    unlink(data);
    rmdir(dir);
}

/* A bad --eval-lens is reported as a bad --eval-lens (not as --schemes), with
 * the bad entry and the accepted values; the corpus is not even opened. */
Test(example_extrapolate, bad_eval_lens_named_as_such)
{
    const char *cases[][2] = {
        {"64,,128", "--eval-lens: '64,,128' has an empty entry"},
        {"64,abc", "--eval-lens: 'abc' is not an integer in 2..65536"},
        {"1", "--eval-lens: '1' is not an integer in 2..65536"},
        {"64,100000", "--eval-lens: '100000' is not an integer in 2..65536"},
        {"8,16,24,32,40,48,56,64,72", "--eval-lens: 9 lengths, at most 8"},
        {"64,64", "--eval-lens lists '64' twice"},
    };
    for (int i = 0; i < 6; i++) {
        ex_run r;
        EX_RUN(&r, extrapolate_main, "extrapolate", "--eval-lens", (char *)cases[i][0], "--data", "/nonexistent");
        cr_assert_eq(r.rc, 2, "--eval-lens %s: rc %d", cases[i][0], r.rc);
        ex_assert_one_line(&r, cases[i][1]);
        cr_assert_null(strstr(r.err, "--schemes"), "%s", r.err);
    }
}

/* --help: the usage on stdout, status 0; what it does not understand: one
 * line on stderr, status 2. */
Test(example_extrapolate, help_and_bad_command_lines)
{
    ex_run r;
    EX_RUN(&r, extrapolate_main, "extrapolate", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: extrapolate [flags]") && strstr(r.out, "--eval-lens S"), "%s", r.out);
    cr_assert_str_empty(r.err);
    EX_RUN(&r, extrapolate_main, "extrapolate", "--bogus");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: unknown flag '--bogus'");
    EX_RUN(&r, extrapolate_main, "extrapolate", "--steps");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: --steps needs a value: an integer in 0..");
    EX_RUN(&r, extrapolate_main, "extrapolate", "--steps", "many");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: --steps wants an integer in 0..", "got 'many'");
    EX_RUN(&r, extrapolate_main, "extrapolate", "--lr", "0");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: --lr wants a number > 0", "got '0'");
    EX_RUN(&r, extrapolate_main, "extrapolate", "alibi");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: unexpected argument 'alibi'");
    EX_RUN(&r, extrapolate_main, "extrapolate", "--dim", "30", "--heads", "4", "--data", "/nonexistent");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: --dim 30 is not a multiple of --heads 4");
}

/* One rule for the thread count: --threads and PG_NUM_THREADS both want 1..64
 * (0 for the flag: the environment or the cores); either out of range is an
 * error naming it, before any work. */
Test(example_extrapolate, thread_counts_one_rule)
{
    ex_run r;
    EX_RUN(&r, extrapolate_main, "extrapolate", "--threads", "100000", "--data", "/nonexistent");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: --threads wants an integer in 0..64, got '100000'");
    cr_assert_eq(setenv("PG_NUM_THREADS", "1000", 1), 0);
    EX_RUN(&r, extrapolate_main, "extrapolate", "--data", "/nonexistent");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "extrapolate: pg_threads_init: PG_NUM_THREADS is '1000', not an integer in 1..64");
    EX_RUN(&r, extrapolate_main, "extrapolate", "--threads", "1", "--data", "/nonexistent");
    cr_assert_eq(r.rc, 1, "--threads wins over PG_NUM_THREADS: the missing corpus is what fails");
    ex_assert_one_line(&r, "cannot open corpus '/nonexistent'");
    unsetenv("PG_NUM_THREADS");
}

/* <scheme>+<scaling>: the rotary kinds (rotary, xpos, local) take a context
 * extension, evaluated on the model trained without it; "pi" is "linear". The
 * preset newer expands to its twelve rows. */
Test(example_extrapolate, scaling_suffixes_and_presets_parse)
{
    extrapolate_result r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(check_schemes("rotary,rotary+pi,rotary+ntk,rotary+dynamic_ntk,rotary+yarn,xpos+linear,local+part_ntk,"
                               "rotary+dynamic_linear,rotary+dynamic_yarn",
                               &r),
                 0);
    cr_assert_eq(r.n_schemes, 9);
    const int want[] = {PG_ROPE_NONE, PG_ROPE_LINEAR,         PG_ROPE_NTK,       PG_ROPE_DYNAMIC_NTK,
                        PG_ROPE_YARN, PG_ROPE_LINEAR,         PG_ROPE_PART_NTK,  PG_ROPE_DYNAMIC_LINEAR,
                        PG_ROPE_DYNAMIC_YARN};
    const char *base[] = {"rotary", "rotary", "rotary", "rotary", "rotary", "xpos", "local", "rotary", "rotary"};
    for (int s = 0; s < 9; s++) {
        cr_assert_eq(r.scaling[s], want[s], "%s", r.schemes[s]);
        cr_assert_str_eq(r.base[s], base[s], "%s", r.schemes[s]);
    }
    cr_assert_str_eq(r.schemes[4], "rotary+yarn");
    cr_assert_eq(check_schemes("newer", &r), 0);
    cr_assert_eq(r.n_schemes, 12);
    const char *newer[] = {"none", "alibi", "rotary", "kerple", "sandwich", "fire", "cope", "fox",
                           "rotary+pi", "rotary+ntk", "rotary+dynamic_ntk", "rotary+yarn"};
    for (int s = 0; s < 12; s++)
        cr_assert_str_eq(r.schemes[s], newer[s]);
    cr_assert_eq(check_schemes("classic", &r), 0);
    cr_assert_eq(r.n_schemes, 8);
    cr_assert_str_eq(r.schemes[7], "xl");
}

/* The preset newer has its own budget unless --steps / --eval-tokens are given. */
Test(example_extrapolate, preset_budget)
{
    extrapolate_opts o = extrapolate_defaults();
    extrapolate_opts res = extrapolate_resolve(&o);
    cr_assert_eq(res.steps, 1500);
    cr_assert_eq(res.eval_tokens, 32768);
    o.schemes = "newer";
    res = extrapolate_resolve(&o);
    cr_assert_eq(res.steps, 600);
    cr_assert_eq(res.eval_tokens, 16384);
    o.steps = 7;
    o.eval_tokens = 99;
    res = extrapolate_resolve(&o);
    cr_assert_eq(res.steps, 7);
    cr_assert_eq(res.eval_tokens, 99);
}

/* The factor each row uses: none at or below --train-len; past it PI, NTK,
 * YaRN with L / train_len from L0 = train_len, the dynamic ones their default
 * factor (0: 1), also from L0 = train_len. */
Test(example_extrapolate, scaling_factor_per_length)
{
    pg_posmod_spec rotary = {.kind = "rotary"};
    pg_rotary_opts ro = eval_rope(&rotary, PG_ROPE_YARN, 64, 64);
    cr_assert_eq(ro.scaling, PG_ROPE_NONE);
    ro = eval_rope(&rotary, PG_ROPE_YARN, 512, 64);
    cr_assert_eq(ro.scaling, PG_ROPE_YARN);
    cr_assert_eq(ro.rope_factor, 8.0);
    cr_assert_eq(ro.rope_orig_len, 64);
    ro = eval_rope(&rotary, PG_ROPE_LINEAR, 128, 64);
    cr_assert_eq(ro.rope_factor, 2.0);
    ro = eval_rope(&rotary, PG_ROPE_NTK, 256, 64);
    cr_assert_eq(ro.rope_factor, 4.0);
    ro = eval_rope(&rotary, PG_ROPE_DYNAMIC_NTK, 512, 64);
    cr_assert_eq(ro.scaling, PG_ROPE_DYNAMIC_NTK);
    cr_assert_eq(ro.rope_factor, 0.0);
    cr_assert_eq(ro.rope_orig_len, 64);
    pg_rotary_opts half = {.pairing = PG_ROTARY_HALF_SPLIT};
    pg_posmod_spec custom = {.kind = "rotary", .opts = &half};
    ro = eval_rope(&custom, PG_ROPE_NTK, 256, 64);
    cr_assert_eq(ro.pairing, PG_ROTARY_HALF_SPLIT, "the scheme's own options are kept");
}

/* FIRE's threshold L0 is train_len / 4 (below the training length); CoPE's
 * npos is train_len + 1 and it is evaluated past it (not a table). */
Test(example_extrapolate, fire_and_cope_options)
{
    extrapolate_opts o = extrapolate_defaults();
    o.train_len = 64;
    lm_corpus c;
    memset(&c, 0, sizeof c);
    c.vocab = 30;
    ex_pos_opts x;
    pg_lm_config cfg;
    bool table = true;
    cr_assert_eq(scheme_config(&o, &c, "fire", &x, &cfg, &table), 0);
    cr_assert_eq(cfg.layer_pos[0].opts, &x.fire);
    cr_assert_eq(x.fire.init_L, 16.0);
    cr_assert(!table);
    cr_assert_eq(cfg.max_len, 0);
    cr_assert_eq(scheme_config(&o, &c, "cope", &x, &cfg, &table), 0);
    cr_assert_eq(cfg.layer_pos[0].opts, &x.cope);
    cr_assert_eq(x.cope.npos, 65);
    cr_assert(!table);
    cr_assert_eq(scheme_config(&o, &c, "learned", &x, &cfg, &table), 0);
    cr_assert(table);
    cr_assert_eq(cfg.max_len, 64);
}

/* Every entry of the per-kind options table names a registered kind. */
Test(example_extrapolate, kind_options_name_registered_kinds)
{
    for (size_t i = 0; i < sizeof EX_KIND_OPTS / sizeof EX_KIND_OPTS[0]; i++)
        cr_assert_not_null(pg_posmod_lookup(EX_KIND_OPTS[i].kind), "%s is not a registered kind", EX_KIND_OPTS[i].kind);
}

/* A bad +suffix, a suffix on a scheme that is not rotary, a row listed twice
 * under two names: one line before any training (nothing on stdout). */
Test(example_extrapolate, bad_scaling_rejected_before_training)
{
    char dir[64], data[128];
    write_corpus(dir, data);
    const char *cases[][2] = {
        {"rotary,rotary+foo", "--schemes: 'rotary+foo': unknown scaling 'foo' (accepted after rotary, xpos or local: "
                              "pi linear ntk dynamic_ntk dynamic_linear yarn part_ntk dynamic_yarn)"},
        {"rotary+", "--schemes: 'rotary+': unknown scaling ''"},
        {"alibi,alibi+ntk", "--schemes: 'alibi+ntk': a +scaling applies to rotary, xpos or local only, not alibi"},
        {"fire+yarn", "not fire"},
        {"none+pi", "not none"},
        {"nope+yarn", "--schemes: unknown scheme 'nope'"},
        {"rotary+pi,rotary+linear", "--schemes lists 'rotary+linear' twice"},
        {"rotary+yarn+ntk", "unknown scaling 'yarn+ntk'"},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        ex_run r;
        EX_RUN(&r, extrapolate_main, "extrapolate", "--schemes", (char *)cases[i][0], "--data", data, "--steps", "1",
               "--train-len", "8", "--eval-lens", "8", "--dim", "8", "--heads", "2", "--layers", "1");
        cr_assert_eq(r.rc, 2, "%s: rc %d", cases[i][0], r.rc);
        ex_assert_one_line(&r, "extrapolate: ", cases[i][1]);
    }
    unlink(data);
    rmdir(dir);
}

/* A tiny sweep with the new rows: rotary and its YaRN and dynamic NTK rows share
 * one trained model (the same training losses, the same loss at the training
 * length, a different one past it); FIRE, CoPE and FoX give finite losses at
 * 4x the training length. */
Test(example_extrapolate, tiny_run_with_new_rows)
{
    char dir[64], data[128];
    write_corpus(dir, data);
    extrapolate_opts o = extrapolate_defaults();
    o.schemes = "rotary,fire,rotary+yarn,cope,fox,rotary+dynamic_ntk";
    o.eval_lens = "8,32";
    o.data = data;
    o.train_len = 8;
    o.layers = 1;
    o.dim = 16;
    o.heads = 2;
    o.batch = 4;
    o.steps = 20;
    o.eval_tokens = 64;
    o.lr = 1e-2;
    o.quiet = true;
    extrapolate_result r;
    cr_assert_eq(extrapolate_run(&o, &r), 0);
    cr_assert_eq(r.n_schemes, 6);
    for (int s = 0; s < 6; s++)
        for (int i = 0; i < 2; i++)
            cr_assert(isfinite(r.loss[s][i]) && r.loss[s][i] > 0, "%s at %lld: %g", r.schemes[s],
                      (long long)r.lens[i], r.loss[s][i]);
    for (int s = 2; s <= 5; s += 3) {
        cr_assert_eq(r.first_loss[s], r.first_loss[0], "%s shares rotary's training", r.schemes[s]);
        cr_assert_eq(r.last_loss[s], r.last_loss[0]);
        cr_assert_eq(r.loss[s][0], r.loss[0][0], "%s: unscaled at the training length", r.schemes[s]);
        cr_assert_neq(r.loss[s][1], r.loss[0][1], "%s: scaled past it", r.schemes[s]);
    }
    for (int s = 1; s <= 4; s += 3)
        cr_assert(r.last_loss[s] < r.first_loss[s], "%s trains", r.schemes[s]);
    unlink(data);
    rmdir(dir);
}
