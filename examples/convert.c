/* convert: a model's safetensors state dict from one library's names to
 * another's, through the state maps of nn/state_map.h (docs/interop.md).
 *
 *   ./examples/convert --from nanogpt --to posgrad ckpt.safetensors model.safetensors
 *   ./examples/convert --from posgrad --to nanogpt model.safetensors ckpt.safetensors
 *   ./examples/convert --from xtransformers --to posgrad xt.safetensors model.safetensors
 *   ./examples/convert --from posgrad --to xtransformers model.safetensors xt.safetensors
 *
 * One side is posgrad, the other nanogpt or xtransformers. The model's shape is that
 * library's constructor arguments: nanoGPT's GPTConfig (--block_size, --vocab_size,
 * --n_layer, --n_head, --n_embd, --bias) or x-transformers' TransformerWrapper /
 * Decoder keyword arguments (--num_tokens, --max_seq_len, --dim, --depth, --heads,
 * --dim_head, --kv_heads, --positions, --norm, --tie, and any other as
 * --kwargs "key=value,..."), each from the flag when given, else from IN's metadata
 * (the arguments as strings, which this program also writes into OUT, so the way back
 * needs no flags). The state is loaded strictly into a pg_lm of that config (every
 * name used, every parameter present, shapes checked) in the dtype of IN's tensors,
 * and saved under the other names: nothing is rounded. Exit status 0, 1 when the
 * conversion fails (a message naming the file and the tensor), 2 for a bad command
 * line (examples/cli.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CONVERT_N_FIELDS 5
static const char *const CONVERT_FIELDS[CONVERT_N_FIELDS + 1] = {"block_size", "vocab_size", "n_layer", "n_head",
                                                                 "n_embd", "bias"};
#define XT_N_SIZES 5
static const char *const XT_SIZES[XT_N_SIZES] = {"num_tokens", "max_seq_len", "dim", "depth", "heads"};
#define CONVERT_MAX_META 48

typedef struct convert_opts {
    const char *from, *to, *in, *out;
    int field[CONVERT_N_FIELDS]; /* nanoGPT; 0: from IN's metadata */
    const char *bias;            /* "true" / "false"; "": IN's metadata, else True */
    int xt[XT_N_SIZES];          /* x-transformers' sizes; 0: IN's metadata */
    int dim_head, kv_heads;
    const char *positions, *norm, *kwargs;
    bool tie;
} convert_opts;

static const char CONVERT_SUMMARY[] =
    "Converts a model's safetensors state dict between libraries' names:\n"
    "  convert --from nanogpt --to posgrad IN OUT        (and --from posgrad --to nanogpt)\n"
    "  convert --from xtransformers --to posgrad IN OUT  (and --from posgrad --to xtransformers)\n"
    "IN and OUT are the last two arguments. The constructor arguments come from the flags, else\n"
    "from IN's metadata; OUT gets them as metadata. nanoGPT: GPTConfig (tied weights, bias=True or\n"
    "False); x-transformers: TransformerWrapper(Decoder(...)) keyword arguments.";

/* The libraries a side may name: posgrad's own names, or a table of nn/state_map.h. */
static bool convert_side_ok(const char *s)
{
    return s && (!strcmp(s, "posgrad") || !strcmp(s, "nanogpt") || !strcmp(s, "xtransformers"));
}

/* The file's tensors' dtype and its metadata pairs; CLI_EXIT_OK or CLI_EXIT_FAIL. */
typedef struct convert_meta {
    int n;
    char **keys, **values;
    pg_dtype dtype;
} convert_meta;

static int convert_read_meta(const char *in, convert_meta *m)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    *m = (convert_meta){0, NULL, NULL, PG_F32};
    if (pg_safetensors_load_meta(in, &l, &m->n, &m->keys, &m->values) != 0) {
        fprintf(stderr, "convert: %s\n", pg_last_error());
        return CLI_EXIT_FAIL;
    }
    m->dtype = l.n > 0 && l.tensors[0]->dtype == PG_F64 ? PG_F64 : PG_F32;
    pg_tensor_list_free_all(&l);
    return CLI_EXIT_OK;
}

static void convert_meta_free(convert_meta *m)
{
    for (int k = 0; k < m->n; k++) {
        free(m->keys[k]);
        free(m->values[k]);
    }
    free(m->keys);
    free(m->values);
}

static const char *convert_meta_get(const convert_meta *m, const char *key)
{
    for (int k = 0; k < m->n; k++)
        if (!strcmp(m->keys[k], key))
            return m->values[k];
    return NULL;
}

/* An integer field: the flag's value, else the metadata's; CLI_EXIT_OK or CLI_EXIT_USAGE. */
static int convert_int(const convert_opts *o, const convert_meta *m, const char *key, int *v)
{
    const char *s = *v ? NULL : convert_meta_get(m, key);
    if (s) {
        char *end;
        long x = strtol(s, &end, 10);
        if (*end || end == s || x < 1 || x > 1000000) {
            fprintf(stderr, "convert: %s: metadata %s = '%s' is not an integer in 1..1000000\n", o->in, key, s);
            return CLI_EXIT_USAGE;
        }
        *v = (int)x;
    }
    if (*v == 0) {
        fprintf(stderr, "convert: %s has no %s in its metadata: give --%s\n", o->in, key, key);
        return CLI_EXIT_USAGE;
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

/* Saves lm under map's names (NULL: posgrad's, as pg_module_save) with the metadata pairs and,
 * when given, the library's buffers (x-transformers' rotary inv_freq: pg_xt_buffers). */
typedef int (*convert_buffers_fn)(const pg_lm_config *c, pg_tensor_list *out);
static int convert_save(const pg_lm *lm, const pg_state_map *map, convert_buffers_fn buffers, const char *out, int n,
                        const char *const *k, const char *const *v)
{
    pg_tensor_list l = pg_module_parameters(&lm->base), theirs = {0, 0, NULL, NULL};
    int rc = 0;
    if (map) {
        rc = pg_state_map_to_theirs(map, &l, &theirs);
        if (rc == 0 && buffers)
            rc = buffers(&lm->cfg, &theirs) < 0 ? -1 : 0;
    }
    if (rc == 0)
        rc = pg_safetensors_save(out, map ? &theirs : &l, n, k, v);
    pg_tensor_list_free_all(&theirs);
    pg_tensor_list_free(&l);
    return rc;
}

/* The conversion of a config c and its map: load through the library's names or
 * posgrad's, save through the other; CLI_EXIT_OK or CLI_EXIT_FAIL. */
static int convert_lm(const convert_opts *o, const pg_lm_config *c, pg_state_map *(*table)(const pg_lm_config *),
                      convert_buffers_fn buffers, int n, const char *const *k, const char *const *v)
{
    pg_lm *lm = pg_lm_new(c);
    pg_state_map *map = lm ? table(c) : NULL;
    bool from_lib = strcmp(o->from, "posgrad") != 0;
    int rc = map ? convert_load(lm, from_lib ? map : NULL, o->in) : -1;
    if (rc == 0)
        rc = convert_save(lm, from_lib ? NULL : map, buffers, o->out, n, k, v);
    if (rc != 0)
        fprintf(stderr, "convert: %s\n", pg_last_error());
    pg_state_map_free(map);
    if (lm)
        pg_module_free(&lm->base);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ---- nanoGPT ---------------------------------------------------------------------------------- */

static int convert_nanogpt(convert_opts *o, const convert_meta *m)
{
    int rc = CLI_EXIT_OK;
    for (int f = 0; f < CONVERT_N_FIELDS && rc == CLI_EXIT_OK; f++)
        rc = convert_int(o, m, CONVERT_FIELDS[f], &o->field[f]);
    if (rc != CLI_EXIT_OK)
        return rc;
    const char *b = o->bias[0] ? o->bias : convert_meta_get(m, "bias"); /* GPTConfig's default: True */
    bool bias = !b || !strcmp(b, "True") || !strcmp(b, "true");
    if (b && !bias && strcmp(b, "False") != 0 && strcmp(b, "false") != 0) {
        fprintf(stderr, "convert: bias '%s' is neither true nor false\n", b);
        return CLI_EXIT_USAGE;
    }
    const int *f = o->field;
    pg_lm_config c = pg_lm_config_nanogpt(f[0], f[1], f[2], f[3], f[4], bias, m->dtype);
    char vals[CONVERT_N_FIELDS][16];
    const char *v[CONVERT_N_FIELDS + 1];
    for (int k = 0; k < CONVERT_N_FIELDS; k++) {
        snprintf(vals[k], sizeof vals[k], "%d", f[k]);
        v[k] = vals[k];
    }
    v[CONVERT_N_FIELDS] = bias ? "True" : "False";
    rc = convert_lm(o, &c, pg_state_map_nanogpt, NULL, CONVERT_N_FIELDS + 1, CONVERT_FIELDS, v);
    if (rc == CLI_EXIT_OK)
        printf("convert: %s (%s) -> %s (%s): GPT with block_size %d, vocab_size %d, n_layer %d, n_head %d, "
               "n_embd %d, bias %s, %s\n",
               o->in, o->from, o->out, o->to, f[0], f[1], f[2], f[3], f[4], bias ? "True" : "False",
               pg_dtype_name(m->dtype));
    return rc;
}

/* ---- x-transformers --------------------------------------------------------------------------- */

/* --positions: which of TransformerWrapper's / Decoder's position arguments are on */
static int convert_positions(pg_xt_config *x, const char *p)
{
    static const char *const names[] = {"absolute", "sinusoidal", "rotary", "xpos", "alibi", "t5", "dpb", "none"};
    int k = 0;
    while (k < 8 && strcmp(p, names[k]) != 0)
        k++;
    if (k == 8) {
        fprintf(stderr, "convert: --positions '%s': one of absolute, sinusoidal, rotary, xpos, alibi, t5, dpb, none\n",
                p);
        return CLI_EXIT_USAGE;
    }
    x->scaled_sinu_pos_emb = k == 1;
    x->rotary_pos_emb = k == 2 || k == 3;
    x->rotary_xpos = k == 3;
    x->alibi_pos_bias = k == 4;
    x->rel_pos_bias = k == 5;
    x->dynamic_pos_bias = k == 6;
    x->abs_pos_emb = k == 7 ? -1 : 0; /* else x-transformers' rule: pos_emb unless rotary or t5 */
    return CLI_EXIT_OK;
}

/* --kwargs "key=value,key=value" through pg_xt_config_set */
static int convert_kwargs(pg_xt_config *x, const char *kw)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", kw);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        int r = eq ? (*eq = 0, pg_xt_config_set(x, item, eq + 1)) : 1;
        if (r != 0) {
            if (eq)
                *eq = '=';
            fprintf(stderr, "convert: --kwargs '%s': %s\n", item,
                    r < 0 ? pg_last_error() : "not key=value of a keyword argument convert knows");
            return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

/* IN's metadata, then the flags over it */
static int convert_xt_config(convert_opts *o, const convert_meta *m, pg_xt_config *x)
{
    for (int k = 0; k < m->n; k++)
        if (pg_xt_config_set(x, m->keys[k], m->values[k]) < 0) {
            fprintf(stderr, "convert: %s: metadata: %s\n", o->in, pg_last_error());
            return CLI_EXIT_USAGE;
        }
    int64_t *sizes[XT_N_SIZES] = {&x->num_tokens, &x->max_seq_len, &x->dim, &x->depth, &x->heads};
    for (int k = 0; k < XT_N_SIZES; k++) {
        if (o->xt[k])
            *sizes[k] = o->xt[k];
        if (*sizes[k] == 0 && k != 1) { /* max_seq_len may be 0 (no absolute positions) */
            fprintf(stderr, "convert: %s has no %s in its metadata: give --%s\n", o->in, XT_SIZES[k], XT_SIZES[k]);
            return CLI_EXIT_USAGE;
        }
    }
    x->attn_dim_head = o->dim_head ? o->dim_head : x->attn_dim_head;
    x->attn_kv_heads = o->kv_heads ? o->kv_heads : x->attn_kv_heads;
    x->tie_embedding = x->tie_embedding || o->tie;
    if (o->norm[0] && strcmp(o->norm, "layernorm") != 0 && strcmp(o->norm, "rmsnorm") != 0) {
        fprintf(stderr, "convert: --norm '%s': layernorm or rmsnorm\n", o->norm);
        return CLI_EXIT_USAGE;
    }
    x->use_rmsnorm = o->norm[0] ? !strcmp(o->norm, "rmsnorm") : x->use_rmsnorm;
    int rc = o->positions[0] ? convert_positions(x, o->positions) : CLI_EXIT_OK;
    return rc == CLI_EXIT_OK && o->kwargs[0] ? convert_kwargs(x, o->kwargs) : rc;
}

static int convert_xtransformers(convert_opts *o, const convert_meta *m)
{
    pg_xt_config x = {.dtype = m->dtype};
    int rc = convert_xt_config(o, m, &x);
    if (rc != CLI_EXIT_OK)
        return rc;
    pg_lm_config c = pg_lm_config_xtransformers(&x);
    char keys[CONVERT_MAX_META][PG_XT_KEY_MAX], values[CONVERT_MAX_META][PG_XT_VALUE_MAX];
    const char *k[CONVERT_MAX_META], *v[CONVERT_MAX_META];
    int n = pg_xt_config_write(&x, CONVERT_MAX_META, keys, values);
    char line[1024] = "";
    for (int i = 0; i < n; i++) {
        k[i] = keys[i];
        v[i] = values[i];
        size_t len = strlen(line);
        snprintf(line + len, sizeof line - len, "%s%s=%s", i ? ", " : "", keys[i], values[i]);
    }
    rc = convert_lm(o, &c, pg_state_map_xtransformers, pg_xt_buffers, n, k, v);
    if (rc == CLI_EXIT_OK)
        printf("convert: %s (%s) -> %s (%s): TransformerWrapper(Decoder) with %s, %s\n", o->in, o->from, o->out,
               o->to, line, pg_dtype_name(m->dtype));
    return rc;
}

/* IN's dtype and metadata, then the conversion. */
static int convert_file(convert_opts *o)
{
    convert_meta m;
    int rc = convert_read_meta(o->in, &m);
    if (rc != CLI_EXIT_OK)
        return rc;
    bool xt = !strcmp(o->from, "xtransformers") || !strcmp(o->to, "xtransformers");
    rc = xt ? convert_xtransformers(o, &m) : convert_nanogpt(o, &m);
    convert_meta_free(&m);
    return rc;
}

int convert_main(int argc, char **argv)
{
    convert_opts o = {.from = "", .to = "", .bias = "", .positions = "", .norm = "", .kwargs = ""};
    cli_flag flags[] = {
        {"from", CLI_STR, &o.from, .help = "IN's names: nanogpt, xtransformers or posgrad"},
        {"to", CLI_STR, &o.to, .help = "OUT's names: posgrad, nanogpt or xtransformers"},
        {"block_size", CLI_INT, &o.field[0], "nanoGPT: positions (rows of transformer.wpe); 0: IN's metadata", .min = 0, .max = 1e6},
        {"vocab_size", CLI_INT, &o.field[1], "nanoGPT: vocabulary; 0: IN's metadata", .min = 0, .max = 1e6},
        {"n_layer", CLI_INT, &o.field[2], "nanoGPT: blocks; 0: IN's metadata", .min = 0, .max = 1e6},
        {"n_head", CLI_INT, &o.field[3], "nanoGPT: attention heads; 0: IN's metadata", .min = 0, .max = 1e6},
        {"n_embd", CLI_INT, &o.field[4], "nanoGPT: model width; 0: IN's metadata", .min = 0, .max = 1e6},
        {"bias", CLI_STR, &o.bias, .help = "nanoGPT: true or false (bias=False: no bias anywhere); IN's metadata, else true"},
        {"num_tokens", CLI_INT, &o.xt[0], "x-transformers: vocabulary; 0: IN's metadata", .min = 0, .max = 1e6},
        {"max_seq_len", CLI_INT, &o.xt[1], "x-transformers: rows of pos_emb; 0: IN's metadata", .min = 0, .max = 1e6},
        {"dim", CLI_INT, &o.xt[2], "x-transformers: model width; 0: IN's metadata", .min = 0, .max = 1e6},
        {"depth", CLI_INT, &o.xt[3], "x-transformers: blocks; 0: IN's metadata", .min = 0, .max = 1e6},
        {"heads", CLI_INT, &o.xt[4], "x-transformers: attention heads; 0: IN's metadata", .min = 0, .max = 1e6},
        {"dim_head", CLI_INT, &o.dim_head, "x-transformers: attn_dim_head; 0: IN's metadata, else 64", .min = 0, .max = 1e6},
        {"kv_heads", CLI_INT, &o.kv_heads, "x-transformers: attn_kv_heads; 0: IN's metadata, else heads", .min = 0, .max = 1e6},
        {"positions", CLI_STR, &o.positions, .help = "x-transformers: absolute, sinusoidal, rotary, xpos, alibi, t5, dpb or none"},
        {"norm", CLI_STR, &o.norm, .help = "x-transformers: layernorm or rmsnorm (use_rmsnorm)"},
        {"tie", CLI_SWITCH, &o.tie, .help = "x-transformers: tie_embedding"},
        {"kwargs", CLI_STR, &o.kwargs, .help = "x-transformers: more keyword arguments, \"key=value,...\""},
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
    if (!convert_side_ok(o.from) || !convert_side_ok(o.to) || (strcmp(o.from, "posgrad") != 0) == (strcmp(o.to, "posgrad") != 0)) {
        fprintf(stderr, "convert: --from '%s' --to '%s': posgrad on one side, nanogpt or xtransformers on the other\n",
                o.from, o.to);
        return CLI_EXIT_USAGE;
    }
    return convert_file(&o);
}

#ifndef PG_EXAMPLE_NO_MAIN
int main(int argc, char **argv) { return convert_main(argc, argv); }
#endif
