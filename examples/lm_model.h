/* The model a train_lm file holds, shared by train_lm (which writes it) and
 * generate (which reads it back): the flags that shape the model and their
 * metadata pairs train_lm.<flag>, the vocabulary as hex bytes
 * (train_lm.vocab), and the one function that turns the flags into a
 * pg_lm_config, so that a loaded model is built exactly as it was trained.
 * (Its own header: lm_common.h is past the 800 lines a file may have.) */
#ifndef PG_EXAMPLES_LM_MODEL_H
#define PG_EXAMPLES_LM_MODEL_H

#include "lm_common.h"

/* The flags that shape the model, in the order messages list them; they are
 * stored in the files' metadata as train_lm.<flag>. The first
 * LM_N_CORE_FLAGS are always there; the --rope-* ones (rotary's frequencies,
 * no tensors) are "-" with --rope-scaling none (and in files written before
 * they were recorded), and messages leave a "-" out. */
enum { LM_N_CORE_FLAGS = 5, LM_N_MODEL_FLAGS = 11, LM_FLAG_CHARS = 32 };
static const char *const LM_MODEL_FLAGS[LM_N_MODEL_FLAGS] = {
    "pos", "layers", "dim", "heads", "seq", "rope-scaling", "rope-factor", "rope-orig-len", "rope-beta-fast",
    "rope-beta-slow", "rope-attn-factor"};

typedef struct lm_model_flags {
    const char *pos, *rope_scaling; /* rope_scaling NULL: none */
    int layers, dim, heads, seq;
    int rope_orig_len;              /* 0: seq */
    double rope_factor, rope_beta_fast, rope_beta_slow, rope_attn_factor;
} lm_model_flags;

/* The flags' values as the metadata holds them, in LM_MODEL_FLAGS order. */
static inline void lm_model_flag_values(const lm_model_flags *f, char v[LM_N_MODEL_FLAGS][LM_FLAG_CHARS])
{
    snprintf(v[0], LM_FLAG_CHARS, "%s", f->pos);
    snprintf(v[1], LM_FLAG_CHARS, "%d", f->layers);
    snprintf(v[2], LM_FLAG_CHARS, "%d", f->dim);
    snprintf(v[3], LM_FLAG_CHARS, "%d", f->heads);
    snprintf(v[4], LM_FLAG_CHARS, "%d", f->seq);
    bool none = !f->rope_scaling || !strcmp(f->rope_scaling, "none");
    snprintf(v[5], LM_FLAG_CHARS, "%s", none ? "none" : f->rope_scaling);
    const double rope[] = {f->rope_factor, f->rope_orig_len > 0 ? f->rope_orig_len : f->seq, f->rope_beta_fast,
                           f->rope_beta_slow, f->rope_attn_factor};
    for (int i = 0; i < 5; i++) {
        if (none)
            snprintf(v[6 + i], LM_FLAG_CHARS, "-");
        else
            snprintf(v[6 + i], LM_FLAG_CHARS, "%.15g", rope[i]);
    }
}

/* The flags recorded in info's metadata into v ("?" for a core flag that is
 * absent; a file written before the --rope-* flags were recorded had no
 * scaling: "none" and "-"). true when every core flag is there. */
static inline bool lm_model_flags_saved(const pg_checkpoint_info *info, char v[LM_N_MODEL_FLAGS][LM_FLAG_CHARS])
{
    bool recorded = true;
    for (int i = 0; i < LM_N_MODEL_FLAGS; i++) {
        char key[64];
        snprintf(key, sizeof key, "train_lm.%s", LM_MODEL_FLAGS[i]);
        const char *s = pg_checkpoint_info_get(info, key);
        if (!s && i >= LM_N_CORE_FLAGS)
            s = i == LM_N_CORE_FLAGS ? "none" : "-";
        recorded = recorded && s;
        snprintf(v[i], LM_FLAG_CHARS, "%s", s ? s : "?");
    }
    return recorded;
}

/* Parses saved values v (lm_model_flags_saved's) into f, whose strings point
 * into v. 0, or -1 with *bad set to the index of the first flag whose value
 * is not a number of its kind (integers >= 1; "-": the default). */
static inline int lm_model_flags_parse(char v[LM_N_MODEL_FLAGS][LM_FLAG_CHARS], lm_model_flags *f, int *bad)
{
    memset(f, 0, sizeof *f);
    f->pos = v[0];
    f->rope_scaling = v[5];
    f->rope_beta_fast = 32; /* pg_rotary_opts' defaults, as train_lm's flags */
    f->rope_beta_slow = 1;
    f->rope_attn_factor = 1;
    int *ints[] = {NULL, &f->layers, &f->dim, &f->heads, &f->seq};
    double *reals[] = {&f->rope_factor, NULL, &f->rope_beta_fast, &f->rope_beta_slow, &f->rope_attn_factor};
    for (int i = 1; i < LM_N_MODEL_FLAGS; i++) {
        char *end = NULL;
        errno = 0;
        if (i == 5 || (i > 5 && !strcmp(v[i], "-")))
            continue;
        double x = strtod(v[i], &end);
        bool integer = i < 5 || i == 7;
        if (errno != 0 || end == v[i] || *end != '\0' || !isfinite(x) ||
            (integer && (x != floor(x) || x < 1 || x > 1e9))) {
            *bad = i;
            return -1;
        }
        if (i < 5)
            *ints[i] = (int)x;
        else if (i == 7)
            f->rope_orig_len = (int)x;
        else
            *reals[i - 6] = x;
    }
    return 0;
}

/* --rope-scaling and its options into the rotary options *rope of c's layer
 * module (--pos rotary, xpos or local; docs/pos/rotary.md "Context
 * extension"), checked by building one. 0, or -1 after a message naming prog. */
static inline int lm_apply_rope_scaling(const lm_model_flags *f, const char *prog, pg_lm_config *c,
                                        pg_rotary_opts *rope)
{
    static const char *const NAMES[] = {"none", "linear", "ntk", "dynamic_ntk", "dynamic_linear", "yarn",
                                        "part_ntk", "dynamic_yarn"};
    int s = f->rope_scaling ? -1 : PG_ROPE_NONE; /* NULL: none */
    for (int i = 0; f->rope_scaling && i < (int)(sizeof NAMES / sizeof NAMES[0]); i++)
        if (!strcmp(f->rope_scaling, NAMES[i]))
            s = i; /* the order of pg_rope_scaling */
    if (s < 0) {
        fprintf(stderr, "%s: unknown --rope-scaling '%s' (choices: none linear ntk dynamic_ntk dynamic_linear "
                "yarn part_ntk dynamic_yarn)\n", prog, f->rope_scaling);
        return -1;
    }
    if (s == PG_ROPE_NONE)
        return 0;
    const pg_posmod_kind_info *k = lm_pos_info(f->pos);
    if (!k || !(k->props & PG_POS_ROTARY) || c->n_layer_pos != 1) {
        fprintf(stderr, "%s: --rope-scaling %s applies to --pos rotary, xpos or local, not %s\n", prog,
                f->rope_scaling, f->pos);
        return -1;
    }
    pg_posmod_spec *spec = &c->layer_pos[0];
    *rope = spec->opts ? *(const pg_rotary_opts *)spec->opts : pg_rotary_defaults();
    rope->scaling = (pg_rope_scaling)s;
    rope->rope_factor = f->rope_factor;
    rope->rope_orig_len = f->rope_orig_len > 0 ? f->rope_orig_len : f->seq;
    rope->yarn_beta_fast = f->rope_beta_fast;
    rope->yarn_beta_slow = f->rope_beta_slow;
    rope->yarn_attn_factor = f->rope_attn_factor;
    pg_posmod *probe = pg_rotary_new(f->dim / f->heads, rope, PG_F64); /* the options' errors, now */
    if (!probe) {
        fprintf(stderr,
                "%s: --rope-scaling %s --rope-factor %g --rope-orig-len %d --rope-beta-fast %g --rope-beta-slow "
                "%g --rope-attn-factor %g: %s\n",
                prog, f->rope_scaling, f->rope_factor, f->rope_orig_len, f->rope_beta_fast, f->rope_beta_slow,
                f->rope_attn_factor, pg_last_error());
        return -1;
    }
    pg_module_free(&probe->base);
    spec->opts = rope;
    return 0;
}

/* The model of flags f: pg_lm's defaults at f's width, heads and layers, the
 * scheme --pos (a banded "local" with window seq / 4, one back), the rotary
 * scaling (its options in *rope, which must outlive c) and max_len seq. The
 * caller sets vocab (and init_std, seed for a new model). 0, or -1 after a
 * message naming prog. */
static inline int lm_model_config(const lm_model_flags *f, const char *prog, pg_lm_config *c, pg_rotary_opts *rope)
{
    *c = pg_lm_defaults(0, f->dim, f->heads, f->layers);
    if (lm_config_pos(c, f->pos, f->seq / 4) != 0) { /* local: window seq / 4, one back */
        char choices[1024];
        fprintf(stderr, "%s: unknown --pos '%s' (choices: %s)\n", prog, f->pos, lm_pos_names(choices, sizeof choices));
        return -1;
    }
    if (lm_apply_rope_scaling(f, prog, c, rope) != 0)
        return -1;
    c->max_len = f->seq;
    return 0;
}

/* ---- the vocabulary --------------------------------------------------------------------------- */
/* c's characters as hex bytes ("0a2021..."), into hex (2 * vocab + 1 bytes). */
static inline void lm_vocab_hex(const lm_corpus *c, char *hex)
{
    hex[0] = '\0';
    for (int i = 0; i < c->vocab; i++)
        snprintf(hex + 2 * i, 3, "%02x", c->chars[i]);
}

/* A vocabulary from its hex (train_lm.vocab) into c's chars and id_of (no
 * text: c->ids NULL, n 0): 1 to 256 distinct bytes, ascending. 0, or -1. */
static inline int lm_vocab_from_hex(lm_corpus *c, const char *hex)
{
    memset(c, 0, sizeof *c);
    size_t n = strlen(hex);
    if (n == 0 || n % 2 != 0 || n > 512)
        return -1;
    for (int b = 0; b < 256; b++)
        c->id_of[b] = -1;
    for (size_t i = 0; i < n; i += 2) {
        char two[3] = {hex[i], hex[i + 1], '\0'}, *end = NULL;
        long b = strtol(two, &end, 16);
        if (*end != '\0' || !isxdigit((unsigned char)two[0]) || (c->vocab > 0 && b <= c->chars[c->vocab - 1]))
            return -1;
        c->id_of[b] = c->vocab;
        c->chars[c->vocab++] = (unsigned char)b;
    }
    return 0;
}

#endif
