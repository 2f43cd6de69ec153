/* Smoke test of examples/convert.c: the nanoGPT fixture (gen_interop_nanogpt.py)
 * and the x-transformers fixtures (gen_interop_xtransformers.py) to posgrad's names
 * and back give the same tensors bit for bit (x-transformers' rotary inv_freq buffer
 * included), the config carried in the metadata; a nanoGPT bias=False model made
 * here goes out and back; flags override the metadata; --help, bad command lines
 * (exit 2) and bad files (exit 1, naming the tensor). */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/convert.c"

#include "testutil.h"

#include "example_run.h"

#define NANO "tests/fixtures/interop_nanogpt.safetensors"
#define XT "tests/fixtures/interop_xt_"

static void assert_same_tensors(const char *a, const char *b)
{
    pg_tensor_list x = {0, 0, NULL, NULL}, y = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(a, &x), 0, "%s", pg_last_error());
    cr_assert_eq(pg_safetensors_load(b, &y), 0, "%s", pg_last_error());
    cr_assert_eq(x.n, y.n);
    for (int i = 0; i < x.n; i++) {
        int j = pg_tensor_list_find(&y, x.names[i]);
        cr_assert_geq(j, 0, "%s", x.names[i]);
        cr_assert(pg_same_shape(x.tensors[i], y.tensors[j]) && x.tensors[i]->dtype == y.tensors[j]->dtype);
        cr_assert_eq(memcmp(x.tensors[i]->data, y.tensors[j]->data, (size_t)x.tensors[i]->numel * 8), 0, "%s",
                     x.names[i]);
    }
    pg_tensor_list_free_all(&x);
    pg_tensor_list_free_all(&y);
}

Test(example_convert, nanogpt_to_posgrad_and_back)
{
    char pg[] = "build/tests/convert_pg.safetensors", back[] = "build/tests/convert_back.safetensors";
    ex_run r;
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", NANO, pg);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "block_size 8, vocab_size 13, n_layer 2, n_head 2, n_embd 8, bias True, f64"), "%s", r.out);
    /* posgrad's file has posgrad's names and loads strictly into the matching pg_lm */
    pg_lm_config c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, true, PG_F64);
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_eq(pg_module_load(&lm->base, pg, true, NULL), 0, "%s", pg_last_error());
    pg_module_free(&lm->base);
    /* back: no flags needed, the config is in the metadata */
    EX_RUN(&r, convert_main, "convert", "--from=posgrad", "--to=nanogpt", pg, back);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    assert_same_tensors(NANO, back);
    /* a flag overrides the metadata: 3 layers, and the file has 2 */
    EX_RUN(&r, convert_main, "convert", "--from", "posgrad", "--to", "nanogpt", "--n_layer", "3", pg, back);
    cr_assert_eq(r.rc, 1);
    ex_assert_one_line(&r, "convert: pg_module_load: ", "blocks.2.norm1.weight");
    remove(pg);
    remove(back);
}

Test(example_convert, help_and_bad_command_lines)
{
    ex_run r;
    EX_RUN(&r, convert_main, "convert", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: convert [flags]") && strstr(r.out, "--n_embd N"), "%s", r.out);
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "wants IN and OUT as the last two arguments");
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", NANO); /* OUT forgotten */
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--to needs a value");
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "xtransformers", NANO, "build/tests/x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--from 'nanogpt' --to 'xtransformers': posgrad on one side");
    EX_RUN(&r, convert_main, "convert", "--from", "xtransformers", "--to", "posgrad", NANO, "build/tests/x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "has no num_tokens in its metadata: give --num_tokens");
    EX_RUN(&r, convert_main, "convert", "--from", "xtransformers", "--to", "posgrad", "--positions", "fire", XT "abs"
           ".safetensors", "build/tests/x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--positions 'fire': one of absolute");
    EX_RUN(&r, convert_main, "convert", "--from", "xtransformers", "--to", "posgrad", "--kwargs", "attn_qk_norm=maybe",
           XT "abs.safetensors", "build/tests/x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--kwargs 'attn_qk_norm=maybe': pg_xt_config_set: attn_qk_norm = \"maybe\" is not a bool");
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", "--bias", "maybe", NANO, "build/tests/x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "bias 'maybe' is neither true nor false");
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", "--n_head", "x", NANO, "build/tests/x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "--n_head");
}

Test(example_convert, bad_files_fail_naming_the_problem)
{
    ex_run r;
    /* a posgrad file read as nanoGPT's */
    char pg[] = "build/tests/convert_bad.safetensors";
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", NANO, pg);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", pg, "build/tests/never.safetensors");
    cr_assert_eq(r.rc, 1);
    ex_assert_one_line(&r, "nanogpt: missing \"transformer.wte.weight\" (for tok_emb.weight)");
    remove(pg);
    /* no file; a file without the config in its metadata */
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", "build/tests/none.st", "build/tests/x");
    cr_assert_eq(r.rc, 1);
    ex_assert_one_line(&r, "build/tests/none.st");
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", "tests/fixtures/interop_nanogpt_io.safetensors",
           "build/tests/x");
    cr_assert_eq(r.rc, 2);
    ex_assert_one_line(&r, "has no block_size in its metadata: give --block_size");
}

/* x-transformers' files to posgrad and back: every tensor bit for bit, inv_freq included. */
Test(example_convert, xtransformers_to_posgrad_and_back)
{
    static char abs_[] = XT "abs.safetensors", rot[] = XT "rot.safetensors", dpb[] = XT "dpb.safetensors",
                t5[] = XT "t5.safetensors";
    char *cases[] = {abs_, rot, dpb, t5};
    char pg[] = "build/tests/convert_xt_pg.safetensors", back[] = "build/tests/convert_xt_back.safetensors";
    for (int k = 0; k < 4; k++) {
        ex_run r;
        EX_RUN(&r, convert_main, "convert", "--from", "xtransformers", "--to", "posgrad", cases[k], pg);
        cr_assert_eq(r.rc, 0, "%s", r.err);
        cr_assert(strstr(r.out, "TransformerWrapper(Decoder) with num_tokens=13, max_seq_len=8, dim=8, depth=2"), "%s",
                  r.out);
        EX_RUN(&r, convert_main, "convert", "--from", "posgrad", "--to", "xtransformers", pg, back);
        cr_assert_eq(r.rc, 0, "%s", r.err);
        pg_tensor_list a = {0, 0, NULL, NULL}, b = {0, 0, NULL, NULL};
        cr_assert_eq(pg_safetensors_load(cases[k], &a), 0, "%s", pg_last_error());
        cr_assert_eq(pg_safetensors_load(back, &b), 0, "%s", pg_last_error());
        cr_assert_eq(b.n, a.n, "%s: %d tensors back of %d", cases[k], b.n, a.n);
        for (int i = 0; i < b.n; i++) {
            int j = pg_tensor_list_find(&a, b.names[i]);
            cr_assert_geq(j, 0, "%s", b.names[i]);
            const pg_tensor *x = a.tensors[j], *y = b.tensors[i];
            cr_assert(x->dtype == y->dtype && pg_same_shape(x, y), "%s", b.names[i]);
            cr_assert_eq(memcmp(x->data, y->data, (size_t)x->numel * pg_dtype_size(x->dtype)), 0, "%s", b.names[i]);
        }
        pg_tensor_list_free_all(&a);
        pg_tensor_list_free_all(&b);
    }
    /* flags instead of metadata: rotary on a file with absolute positions leaves pos_emb unused */
    ex_run r;
    EX_RUN(&r, convert_main, "convert", "--from", "xtransformers", "--to", "posgrad", "--positions", "rotary",
           cases[0], pg);
    cr_assert_eq(r.rc, 1);
    ex_assert_one_line(&r, "xtransformers: 1 unexpected: \"pos_emb.emb.weight\"");
    remove(pg);
    remove(back);
}

/* nanoGPT bias=False: a posgrad model of that config out to nanoGPT's names and back. */
Test(example_convert, nanogpt_bias_false_out_and_back)
{
    pg_lm_config c = pg_lm_config_nanogpt(8, 13, 2, 2, 8, false, PG_F64);
    c.seed = 5;
    pg_lm *lm = pg_lm_new(&c);
    cr_assert_not_null(lm, "%s", pg_last_error());
    char pg[] = "build/tests/convert_nb_pg.safetensors", nano[] = "build/tests/convert_nb_nano.safetensors",
         back[] = "build/tests/convert_nb_back.safetensors";
    cr_assert_eq(pg_module_save(&lm->base, pg), 0, "%s", pg_last_error());
    pg_module_free(&lm->base);
    ex_run r;
    EX_RUN(&r, convert_main, "convert", "--from", "posgrad", "--to", "nanogpt", "--block_size", "8", "--vocab_size",
           "13", "--n_layer", "2", "--n_head", "2", "--n_embd", "8", "--bias", "false", pg, nano);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "bias False, f64"), "%s", r.out);
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(nano, &l), 0, "%s", pg_last_error());
    cr_assert_eq(l.n, 3 + 6 * 2 + 1, "%d tensors: no biases, both tied names", l.n); /* wte, lm_head, wpe, ln_f */
    cr_assert_lt(pg_tensor_list_find(&l, "transformer.h.0.attn.c_attn.bias"), 0);
    pg_tensor_list_free_all(&l);
    EX_RUN(&r, convert_main, "convert", "--from", "nanogpt", "--to", "posgrad", nano, back); /* bias from metadata */
    cr_assert_eq(r.rc, 0, "%s", r.err);
    assert_same_tensors(pg, back);
    remove(pg);
    remove(nano);
    remove(back);
}
