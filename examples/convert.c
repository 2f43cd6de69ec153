/* convert: a model's safetensors state dict from one library's names to
 * another's, through the state maps of nn/state_map.h (docs/interop.md).
 *
 *   ./examples/convert --from nanogpt --to posgrad ckpt.safetensors model.safetensors
 *   ./examples/convert --from posgrad --to nanogpt model.safetensors ckpt.safetensors
 *
 * The model's shape is nanoGPT's GPTConfig: --block_size, --vocab_size, --n_layer,
 * --n_head, --n_embd, each from the flag when given, else from IN's metadata (the
 * GPTConfig fields as strings, which this program also writes into OUT, so the way
 * back needs no flags). The state is loaded strictly into a pg_lm of that config
 * (every name used, every parameter present, shapes checked) in the dtype of IN's
 * tensors, and saved under the other names: nothing is rounded. Exit status 0, 1 when
 * the conversion fails (a message naming the file and the tensor), 2 for a bad
 * command line (examples/cli.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CONVERT_N_FIELDS 5
static const char *const CONVERT_FIELDS[CONVERT_N_FIELDS] = {"block_size", "vocab_size", "n_layer", "n_head",
                                                             "n_embd"};

typedef struct convert_opts {
    const char *from, *to, *in, *out;
    int field[CONVERT_N_FIELDS]; /* 0: from IN's metadata */
} convert_opts;

static const char CONVERT_SUMMARY[] =
    "Converts a model's safetensors state dict between libraries' names:\n"
    "  convert --from nanogpt --to posgrad IN OUT     (and --from posgrad --to nanogpt)\n"
    "IN and OUT are the last two arguments. The GPTConfig fields come from the flags, else\n"
    "from IN's metadata; OUT gets them as metadata. nanoGPT models: bias=True, tied weights.";

/* The libraries a side may name: posgrad's own names, or a table of nn/state_map.h. */
static bool convert_side_ok(const char *s) { return s && (!strcmp(s, "posgrad") || !strcmp(s, "nanogpt")); }

/* Fills the 0 fields from the metadata; CLI_EXIT_OK or CLI_EXIT_USAGE after a message. */
static int convert_fields(convert_opts *o, int n_meta, char **keys, char **values)
{
    for (int f = 0; f < CONVERT_N_FIELDS; f++) {
        for (int k = 0; k < n_meta && o->field[f] == 0; k++) {
            char *end;
            long v = strtol(values[k], &end, 10);
            if (strcmp(keys[k], CONVERT_FIELDS[f]) != 0)
                continue;
            if (*end || end == values[k] || v < 1 || v > 1000000) {
                fprintf(stderr, "convert: %s: metadata %s = '%s' is not an integer in 1..1000000\n", o->in,
                        keys[k], values[k]);
                return CLI_EXIT_USAGE;
            }
            o->field[f] = (int)v;
        }
        if (o->field[f] == 0) {
            fprintf(stderr, "convert: %s has no %s in its metadata: give --%s\n", o->in, CONVERT_FIELDS[f],
                    CONVERT_FIELDS[f]);
            return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

/* Loads IN into lm through map (NULL: posgrad's names), strictly. */
static int convert_load(pg_lm *lm, const pg_state_map *map, const char *in)
{
    pg_load_report r;
    int rc = map ? pg_module_load_mapped(&lm->base, map, in) : pg_module_load(&lm->base, in, true, &r);
    if (!map)
        pg_load_report_free(&r);
    return rc;
}

/* Saves lm under map's names (NULL: posgrad's, as pg_module_save) with the GPTConfig metadata. */
static int convert_save(const pg_lm *lm, const pg_state_map *map, const char *out, const char *const *v)
{
    if (map)
        return pg_module_save_mapped(&lm->base, map, out, CONVERT_N_FIELDS, CONVERT_FIELDS, v);
    pg_tensor_list l = pg_module_parameters(&lm->base);
    int rc = pg_safetensors_save(out, &l, CONVERT_N_FIELDS, CONVERT_FIELDS, v);
    pg_tensor_list_free(&l);
    return rc;
}

/* The conversion once the options are complete: CLI_EXIT_OK or CLI_EXIT_FAIL. */
static int convert_run(const convert_opts *o, pg_dtype dtype)
{
    const int *f = o->field;
    pg_lm_config c = pg_lm_config_nanogpt(f[0], f[1], f[2], f[3], f[4], true, dtype);
    pg_lm *lm = pg_lm_new(&c);
    pg_state_map *map = lm ? pg_state_map_nanogpt(&c) : NULL;
    char vals[CONVERT_N_FIELDS][16];
    const char *v[CONVERT_N_FIELDS];
    for (int k = 0; k < CONVERT_N_FIELDS; k++) {
        snprintf(vals[k], sizeof vals[k], "%d", f[k]);
        v[k] = vals[k];
    }
    bool from_nano = !strcmp(o->from, "nanogpt"), to_nano = !strcmp(o->to, "nanogpt");
    int rc = map ? convert_load(lm, from_nano ? map : NULL, o->in) : -1;
    if (rc == 0)
        rc = convert_save(lm, to_nano ? map : NULL, o->out, v);
    if (rc != 0)
        fprintf(stderr, "convert: %s\n", pg_last_error());
    else
        printf("convert: %s (%s) -> %s (%s): GPT with block_size %d, vocab_size %d, n_layer %d, n_head %d, "
               "n_embd %d, %s\n",
               o->in, o->from, o->out, o->to, f[0], f[1], f[2], f[3], f[4], pg_dtype_name(dtype));
    pg_state_map_free(map);
    if (lm)
        pg_module_free(&lm->base);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* IN's dtype and metadata, then the conversion. */
static int convert_file(convert_opts *o)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    int n_meta = 0;
    char **keys = NULL, **values = NULL;
    if (pg_safetensors_load_meta(o->in, &l, &n_meta, &keys, &values) != 0) {
        fprintf(stderr, "convert: %s\n", pg_last_error());
        return CLI_EXIT_FAIL;
    }
    pg_dtype dtype = l.n > 0 && l.tensors[0]->dtype == PG_F64 ? PG_F64 : PG_F32;
    pg_tensor_list_free_all(&l);
    int rc = convert_fields(o, n_meta, keys, values);
    for (int k = 0; k < n_meta; k++) {
        free(keys[k]);
        free(values[k]);
    }
    free(keys);
    free(values);
    return rc == CLI_EXIT_OK ? convert_run(o, dtype) : rc;
}

int convert_main(int argc, char **argv)
{
    convert_opts o = {.from = "", .to = ""};
    cli_flag flags[] = {
        {"from", CLI_STR, &o.from, .help = "IN's names: nanogpt or posgrad"},
        {"to", CLI_STR, &o.to, .help = "OUT's names: posgrad or nanogpt"},
        {"block_size", CLI_INT, &o.field[0], "positions (rows of transformer.wpe); 0: IN's metadata", .min = 0, .max = 1e6},
        {"vocab_size", CLI_INT, &o.field[1], "vocabulary; 0: IN's metadata", .min = 0, .max = 1e6},
        {"n_layer", CLI_INT, &o.field[2], "blocks; 0: IN's metadata", .min = 0, .max = 1e6},
        {"n_head", CLI_INT, &o.field[3], "attention heads; 0: IN's metadata", .min = 0, .max = 1e6},
        {"n_embd", CLI_INT, &o.field[4], "model width; 0: IN's metadata", .min = 0, .max = 1e6},
    };
    int n = (int)(sizeof flags / sizeof flags[0]), fa = argc;
    bool help = false;
    for (int i = 1; i < argc; i++)
        help = help || !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
    if (!help) { /* IN OUT: the last two arguments, neither a flag */
        if (argc < 3 || !strncmp(argv[argc - 1], "--", 2) || !strncmp(argv[argc - 2], "--", 2)) {
            fprintf(stderr, "convert: wants IN and OUT as the last two arguments (convert --help)\n");
            return CLI_EXIT_USAGE;
        }
        o.in = argv[argc - 2];
        o.out = argv[argc - 1];
        fa = argc - 2;
    }
    int p = cli_parse("convert", fa, argv, flags, n, CONVERT_SUMMARY);
    if (p != CLI_RUN)
        return p == CLI_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (!convert_side_ok(o.from) || !convert_side_ok(o.to) || !strcmp(o.from, o.to)) {
        fprintf(stderr, "convert: --from '%s' --to '%s': give one of nanogpt and posgrad to each, not the same\n",
                o.from, o.to);
        return CLI_EXIT_USAGE;
    }
    return convert_file(&o);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return convert_main(argc, argv); }
#endif
