/* examples/generate: a tiny model trained by train_lm in a temp dir, then
 * continued from its model file and its checkpoint: the greedy text equals
 * train_lm's own greedy sample, both files give the same text, a seed repeats
 * its text, and every bad input gets one clear line and its exit code. */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/train_lm.c"
#include "../examples/generate.c"

#include "testutil.h"
#include "example_run.h"

#define TRAIN_FLAGS "--layers", "1", "--dim", "16", "--heads", "2", "--seq", "32", "--batch", "4", "--eval-windows", \
                    "4", "--steps", "20", "--figures", "0", "--prompt", "to be", "--sample", "40", "--temperature", "0"

typedef struct workdir {
    char dir[64], out[128], data[128];
    char sample[256]; /* train_lm's greedy sample: the prompt and 40 characters */
} workdir;

/* A temp dir with a model trained by train_lm in dir/out (--pos dpb, or rotary
 * with YaRN's scaling); w->sample its greedy sample. */
static void train_pos(workdir *w, ex_run *r, bool rotary)
{
    ex_corpus_workdir(w->dir, "/tmp/pg_generate_XXXXXX", "to be, or not to be, that is the question. ", w->out,
                      w->data);
    if (rotary)
        EX_RUN(r, train_lm_main, "train_lm", TRAIN_FLAGS, "--data", w->data, "--out", w->out, "--pos", "rotary",
               "--rope-scaling", "yarn", "--rope-factor", "2", "--rope-orig-len", "8");
    else
        EX_RUN(r, train_lm_main, "train_lm", TRAIN_FLAGS, "--data", w->data, "--out", w->out);
    cr_assert_eq(r->rc, 0, "%s", r->err);
    const char *h = "---- sample (temperature 0, top-k 0, top-p 1) ----\n", *s = strstr(r->out, h);
    cr_assert_not_null(s, "%s", r->out);
    s += strlen(h);
    size_t n = strcspn(s, "\n");
    cr_assert(n == 45 && n < sizeof w->sample, "the prompt and 40 characters: %.*s", (int)n, s);
    memcpy(w->sample, s, n);
    w->sample[n] = '\0';
}

static void train(workdir *w, ex_run *r) { train_pos(w, r, false); }

static ex_run *new_run(void)
{
    ex_run *r = malloc(sizeof *r);
    cr_assert_not_null(r);
    return r;
}

/* generate's stdout without its final newline (a static copy) */
static const char *text_of(const ex_run *r)
{
    static char text[sizeof r->out];
    cr_assert_eq(r->rc, 0, "generate failed: %s", r->err);
    size_t n = strlen(r->out);
    cr_assert(n > 0 && r->out[n - 1] == '\n', "stdout ends with a newline: '%s'", r->out);
    memcpy(text, r->out, n - 1);
    text[n - 1] = '\0';
    return text;
}

Test(example_generate, greedy_equals_train_lms_sample)
{
    workdir w;
    ex_run *r = new_run();
    train(&w, r);
    char file[160];
    snprintf(file, sizeof file, "%s/model.safetensors", w.out);
    EX_RUN(r, generate_main, "generate", file, "--prompt", "to be", "--tokens", "40", "--temperature", "0");
    cr_assert_str_eq(text_of(r), w.sample, "generate from the model file, greedy, as train_lm's own sample");
    cr_assert_eq(ex_lines(r->err), 1, "one summary line: %s", r->err);
    cr_assert(strstr(r->err, "generate: 40 tokens in ") && strstr(r->err, "model.safetensors (--pos dpb, --seq 32)"),
              "%s", r->err);
    cr_assert(strstr(r->err, "KV cache: used for 28, then full forwards of the last 32; greedy"), "%s", r->err);
    /* the flags after MODEL or before it; 27 tokens fit --seq 32 whole: all through the cache, the same start */
    EX_RUN(r, generate_main, "generate", "--tokens", "27", "--temperature", "0", w.out, "--prompt=to be");
    cr_assert_eq(strncmp(text_of(r), w.sample, 32), 0, "'%s' starts '%s'", text_of(r), w.sample);
    cr_assert_eq(strlen(text_of(r)), 32);
    cr_assert(strstr(r->err, "KV cache: used for all 27"), "%s", r->err);
    free(r);
    ex_remove_tree(w.dir);
}

/* the --rope-* flags come back from the metadata: the same rotary frequencies, the same text */
Test(example_generate, rotary_yarn_equals_train_lms_sample)
{
    workdir w;
    ex_run *r = new_run();
    train_pos(&w, r, true);
    EX_RUN(r, generate_main, "generate", w.out, "--prompt", "to be", "--tokens", "40", "--temperature", "0");
    cr_assert_str_eq(text_of(r), w.sample, "rotary + yarn, greedy, as train_lm's own sample");
    cr_assert(strstr(r->err, "(--pos rotary, --seq 32); KV cache: used for 28"), "%s", r->err);
    free(r);
    ex_remove_tree(w.dir);
}

Test(example_generate, checkpoint_equals_model_file)
{
    workdir w;
    ex_run *r = new_run();
    train(&w, r);
    char model[160], ckpt[160], a[256];
    snprintf(model, sizeof model, "%s/model.safetensors", w.out);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", w.out);
    EX_RUN(r, generate_main, "generate", ckpt, "--prompt", "to be", "--tokens", "40", "--temperature", "0");
    cr_assert_str_eq(text_of(r), w.sample, "greedy from the checkpoint");
    cr_assert(strstr(r->err, "checkpoint.safetensors"), "%s", r->err);
    EX_RUN(r, generate_main, "generate", model, "--tokens", "40", "--temperature", "1", "--seed", "7");
    snprintf(a, sizeof a, "%s", text_of(r));
    EX_RUN(r, generate_main, "generate", ckpt, "--tokens", "40", "--temperature", "1", "--seed", "7");
    cr_assert_str_eq(text_of(r), a, "sampled from the checkpoint as from the model file");
    EX_RUN(r, generate_main, "generate", w.out, "--tokens", "40", "--temperature", "1", "--seed", "7");
    cr_assert_str_eq(text_of(r), a, "a directory");
    cr_assert(strstr(r->err, "model.safetensors"), "the directory's model.safetensors first: %s", r->err);
    cr_assert_eq(unlink(model), 0);
    EX_RUN(r, generate_main, "generate", w.out, "--tokens", "40", "--temperature", "1", "--seed", "7");
    cr_assert_str_eq(text_of(r), a, "a directory with the checkpoint alone");
    cr_assert(strstr(r->err, "checkpoint.safetensors"), "%s", r->err);
    free(r);
    ex_remove_tree(w.dir);
}

Test(example_generate, seeded_is_reproducible)
{
    workdir w;
    ex_run *r = new_run();
    train(&w, r);
    char a[256];
    EX_RUN(r, generate_main, "generate", w.out, "--prompt", "to", "--tokens", "40", "--temperature", "1.5", "--seed",
           "5", "--threads", "1");
    snprintf(a, sizeof a, "%s", text_of(r));
    cr_assert_eq(strlen(a), 42);
    cr_assert(strstr(r->err, "; seed 5\n"), "%s", r->err);
    EX_RUN(r, generate_main, "generate", w.out, "--prompt", "to", "--tokens", "40", "--temperature", "1.5", "--seed",
           "5", "--threads", "2");
    cr_assert_str_eq(text_of(r), a, "the same seed, the same text");
    EX_RUN(r, generate_main, "generate", w.out, "--prompt", "to", "--tokens", "40", "--temperature", "1.5", "--seed",
           "6");
    cr_assert_str_neq(text_of(r), a, "another seed, another text");
    EX_RUN(r, generate_main, "generate", w.out, "--tokens", "5", "--temperature", "0");
    cr_assert_eq(text_of(r)[0], ' ', "no --prompt: the vocabulary's first character ' ': '%s'", text_of(r));
    cr_assert_eq(strlen(text_of(r)), 6);
    free(r);
    ex_remove_tree(w.dir);
}

/* a copy of src's tensors and metadata into dst: without the tensor named
 * drop (NULL: none), with an extra tensor named add (NULL: none), and with
 * metadata key set_key (NULL: none) set to set_value */
static void rewrite(const char *src, const char *dst, const char *drop, const char *add, const char *set_key,
                    const char *set_value)
{
    pg_tensor_list l = {0}, kept = {0};
    int n_meta = 0;
    char **keys = NULL, **values = NULL;
    cr_assert_eq(pg_safetensors_load_meta(src, &l, &n_meta, &keys, &values), 0, "%s", pg_last_error());
    for (int i = 0; i < l.n; i++)
        if (!drop || strcmp(l.names[i], drop))
            cr_assert_eq(pg_tensor_list_push(&kept, l.names[i], l.tensors[i]), 0);
    pg_tensor *extra = pg_tensor_full(NULL, PG_F32, 1, (const int64_t[]){3}, 0.0);
    if (add)
        cr_assert_eq(pg_tensor_list_push(&kept, add, extra), 0);
    for (int i = 0; set_key && i < n_meta; i++)
        if (!strcmp(keys[i], set_key)) {
            free(values[i]);
            values[i] = strdup(set_value);
        }
    cr_assert_eq(pg_safetensors_save(dst, &kept, n_meta, (const char *const *)keys, (const char *const *)values), 0,
                 "%s", pg_last_error());
    for (int i = 0; i < n_meta; i++) {
        free(keys[i]);
        free(values[i]);
    }
    free(keys);
    free(values);
    pg_tensor_free(extra);
    pg_tensor_list_free(&kept);
    pg_tensor_list_free_all(&l);
}

/* generate on MODEL exits rc with one line on stderr holding the fragments */
#define GEN_ASSERT_FAILS(r, rc_want, model, ...)                                                                          \
    do {                                                                                                             \
        EX_RUN((r), generate_main, "generate", (char *)(model), "--prompt", "to be", "--tokens", "4");             \
        cr_assert_eq((r)->rc, (rc_want), "%s: rc %d, %s", (model), (r)->rc, (r)->err);                            \
        ex_assert_one_line((r), __VA_ARGS__);                                                                       \
    } while (0)

Test(example_generate, bad_models_fail_clearly)
{
    workdir w;
    ex_run *r = new_run();
    train(&w, r);
    char model[160], path[200], empty[160];
    snprintf(model, sizeof model, "%s/model.safetensors", w.out);
    snprintf(path, sizeof path, "%s/nowhere.safetensors", w.dir);
    GEN_ASSERT_FAILS(r, 1, path, "cannot open model", "nowhere.safetensors", "No such file");
    snprintf(empty, sizeof empty, "%s/empty", w.dir);
    cr_assert_eq(mkdir(empty, 0777), 0);
    GEN_ASSERT_FAILS(r, 1, empty, "'", "/empty' holds neither model.safetensors nor checkpoint.safetensors");
    /* a state dict that train_lm did not write: no train_lm.* metadata */
    pg_lm_config c = pg_lm_defaults(5, 8, 2, 1);
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm);
    snprintf(path, sizeof path, "%s/plain.safetensors", w.dir);
    cr_assert_eq(pg_module_save(&lm->base, path), 0);
    pg_module_free(&lm->base);
    GEN_ASSERT_FAILS(r, 1, path, "plain.safetensors' is not a train_lm model", "no train_lm.* entries");
    /* a corrupt file: the model file cut in half */
    FILE *in = fopen(model, "rb");
    cr_assert_not_null(in);
    static char bytes[1 << 20];
    size_t n = fread(bytes, 1, sizeof bytes, in);
    fclose(in);
    snprintf(path, sizeof path, "%s/cut.safetensors", w.dir);
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(bytes, 1, n / 2, f) == n / 2);
    fclose(f);
    GEN_ASSERT_FAILS(r, 1, path, "generate: cannot read '", "cut.safetensors");
    /* strict loading: a missing and an unexpected tensor are named, with the file */
    snprintf(path, sizeof path, "%s/missing.safetensors", w.dir);
    rewrite(model, path, "blocks.0.attn.to_out.weight", NULL, NULL, NULL);
    GEN_ASSERT_FAILS(r, 1, path, "cannot load the weights of '", "missing.safetensors", "blocks.0.attn.to_out.weight");
    snprintf(path, sizeof path, "%s/extra.safetensors", w.dir);
    rewrite(model, path, NULL, "extra.weight", NULL, NULL);
    GEN_ASSERT_FAILS(r, 1, path, "cannot load the weights of '", "extra.safetensors", "extra.weight");
    /* recorded flags that make no sense, or another model's shape */
    snprintf(path, sizeof path, "%s/bad_layers.safetensors", w.dir);
    rewrite(model, path, NULL, NULL, "train_lm.layers", "two");
    GEN_ASSERT_FAILS(r, 1, path, "bad_layers.safetensors' has train_lm.layers 'two'");
    snprintf(path, sizeof path, "%s/bad_pos.safetensors", w.dir);
    rewrite(model, path, NULL, NULL, "train_lm.pos", "zigzag");
    GEN_ASSERT_FAILS(r, 1, path, "was trained with --pos zigzag, which this build does not know");
    snprintf(path, sizeof path, "%s/bad_vocab.safetensors", w.dir);
    rewrite(model, path, NULL, NULL, "train_lm.vocab", "2020");
    GEN_ASSERT_FAILS(r, 1, path, "bad_vocab.safetensors' has an invalid train_lm.vocab");
    snprintf(path, sizeof path, "%s/wide.safetensors", w.dir);
    rewrite(model, path, NULL, NULL, "train_lm.dim", "32");
    GEN_ASSERT_FAILS(r, 1, path, "cannot load the weights of '", "wide.safetensors", "\"tok_emb.weight\": the state has f32[15,16], the parameter is f32[15,32]");
    free(r);
    ex_remove_tree(w.dir);
}

Test(example_generate, bad_prompts_and_flags_fail_clearly)
{
    workdir w;
    ex_run *r = new_run();
    train(&w, r);
    EX_RUN(r, generate_main, "generate", w.out, "--prompt", "to bez", "--tokens", "4");
    cr_assert_eq(r->rc, 2);
    ex_assert_one_line(r, "--prompt character 'z' (byte 0x7a) at position 5 (0-based) is not in the vocabulary of",
                       "model.safetensors (15 characters)");
    EX_RUN(r, generate_main, "generate", w.out, "--prompt", "to\tbe");
    cr_assert_eq(r->rc, 2);
    ex_assert_one_line(r, "--prompt character byte 0x09 at position 2");
    EX_RUN(r, generate_main, "generate", "--tokens", "4");
    cr_assert_eq(r->rc, 2);
    ex_assert_one_line(r, "generate: no MODEL given");
    const char *range[][2] = {{"--top-p", "0"}, {"--top-p", "1.5"}, {"--temperature", "-1"}, {"--top-k", "-1"},
                              {"--tokens", "-1"}, {"--seed", "-2"}, {"--threads", "-1"}};
    for (int i = 0; i < 7; i++) {
        EX_RUN(r, generate_main, "generate", w.out, (char *)range[i][0], (char *)range[i][1]);
        cr_assert_eq(r->rc, 2, "%s %s", range[i][0], range[i][1]);
        ex_assert_one_line(r, "generate: --");
    }
    /* what lm_parse_flags refuses: the message, then the usage */
    const char *parse[][3] = {{"--tokens", "x", "--tokens wants an integer, got 'x'"},
                              {"--bogus", "1", "unknown argument '--bogus'"},
                              {"--temperature", "hot", "--temperature wants a number, got 'hot'"}};
    for (int i = 0; i < 3; i++) {
        EX_RUN(r, generate_main, "generate", w.out, (char *)parse[i][0], (char *)parse[i][1]);
        cr_assert_eq(r->rc, 2, "%s", parse[i][0]);
        cr_assert_str_empty(r->out);
        cr_assert(!strncmp(r->err, "generate: ", 10) && strstr(r->err, parse[i][2]) < strchr(r->err, '\n') &&
                      strstr(r->err, parse[i][2]),
                  "the first line names the flag: %s", r->err);
        cr_assert(strstr(r->err, "usage: generate [flags]"), "%s", r->err);
    }
    EX_RUN(r, generate_main, "generate", "--help");
    cr_assert_eq(r->rc, 0);
    cr_assert(strstr(r->out, "MODEL") && strstr(r->out, "--top-p X") && strstr(r->out, "(default 0.8)"), "%s",
              r->out);
    free(r);
    ex_remove_tree(w.dir);
}
