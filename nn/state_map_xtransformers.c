/* The x-transformers table of state maps (state_map.h; docs/interop.md "x-transformers").
 *
 * Read from lucidrains/x-transformers v2.26.4 (x_transformers/x_transformers.py):
 * TransformerWrapper(num_tokens, max_seq_len, attn_layers = Decoder(dim, depth, heads, ...))
 * has these state_dict names (torch_einops_utils' Sequential drops its None entries, so the
 * indices below count only the modules that exist):
 *   token_emb.emb.weight                      TokenEmbedding (l2norm_embed: F.normalize of the row)
 *   pos_emb.emb.weight                        AbsolutePositionalEmbedding, used times dim^-0.5
 *                                             (1 and l2norm with l2norm_embed); posgrad stores it
 *                                             unscaled too (pg_learned_opts.scale): a rename
 *   pos_emb.scale                             ScaledSinusoidalEmbedding's learned scalar
 *   attn_layers.layers.{2i}.0.0.gamma / .g    the attention's pre-norm: LayerNorm (no bias) or
 *                                             RMSNorm; with norm_add_unit_offset (default True)
 *                                             the gain is gamma + 1 and gamma is stored, exactly
 *                                             as posgrad's norm_unit_offset stores weight: a rename
 *   attn_layers.layers.{2i}.1.to_q / to_k / to_v / to_out.weight   LinearNoBias; posgrad's to_qkv
 *                                             is their row concatenation (q: heads * dim_head rows,
 *                                             k and v: kv_heads * dim_head each): PG_MAP_SPLIT
 *   attn_layers.layers.{2i}.1.qk_norm_q_scale / qk_norm_k_scale    with attn_qk_norm_dim_scale
 *   attn_layers.layers.{2i+1}.0.0.gamma / .g  the feed-forward's pre-norm
 *   attn_layers.layers.{2i+1}.1.ff.0.0.{weight,bias}  FeedForward's Linear(dim, inner) (GLU:
 *                                             ff.0.proj, Linear(dim, 2 inner), x then gate)
 *   attn_layers.layers.{2i+1}.1.ff.2.{weight,bias}    Linear(inner, dim) (after the Dropout, ff.1)
 *   attn_layers.final_norm.gamma / .g
 *   attn_layers.rel_pos.relative_attention_bias.weight   T5 (rel_pos_bias), one for all layers
 *   attn_layers.rel_pos.mlp.*                 DynamicPositionBias, one for all layers
 *   attn_layers.rotary_pos_emb.inv_freq (.scale with xPos)   persistent buffers: dropped
 *   to_logits.weight                          LinearNoBias; absent with tie_embedding
 * The residuals have no parameters; ALiBi and the sinusoid keep non-persistent buffers. */
#include "state_map.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pg_lm_config pg_lm_config_xtransformers(pg_xt_config *x)
{
    if (!x) { /* a config pg_lm_new refuses */
        pg_set_error("pg_lm_config_xtransformers: x is NULL");
        return pg_lm_defaults(0, 0, 0, 0);
    }
    pg_lm_config c = pg_lm_defaults(x->num_tokens, x->dim, x->heads, x->depth);
    int64_t dh = x->attn_dim_head ? x->attn_dim_head : 64;
    c.dtype = x->dtype;
    c.max_len = x->max_seq_len;
    c.dim_head = dh;
    c.kv_heads = x->attn_kv_heads;
    c.qk_norm = x->attn_qk_norm;
    c.qk_norm_dim_scale = x->attn_qk_norm_dim_scale;
    c.qk_norm_groups = x->attn_qk_norm_groups;
    c.qk_norm_scale = x->attn_qk_norm_scale;
    /* LayerNorm(dim): nn.LayerNorm(elementwise_affine = False), eps 1e-5, times gamma; RMSNorm:
     * F.normalize (eps 1e-12) * sqrt(dim) * g, posgrad's PG_RMS_L2 (its default eps 1e-12) */
    c.norm = x->use_rmsnorm ? PG_NORM_RMS : PG_NORM_LAYER;
    c.rms_form = x->use_rmsnorm ? PG_RMS_L2 : PG_RMS_MEAN;
    c.norm_eps = x->use_rmsnorm ? 0 : 1e-5;
    c.norm_unit_offset = !x->no_norm_unit_offset;
    c.bias = true;
    c.attn_bias = PG_BIAS_OFF;
    c.norm_bias = PG_BIAS_OFF;
    c.ff_bias = x->ff_no_bias ? PG_BIAS_OFF : PG_BIAS_ON;
    c.ff_kind = x->ff_glu ? PG_FF_GLU : PG_FF_MLP;
    c.ff_act = x->ff_swish ? PG_ACT_SILU : PG_ACT_GELU;
    c.ff_hidden = (int64_t)((double)x->dim * (x->ff_mult > 0 ? x->ff_mult : 4.0)); /* int(dim * mult) */
    c.tie_weights = x->tie_embedding;
    c.tok_l2norm = x->l2norm_embed;
    /* the absolute embedding: on unless turned off, rotary or T5 (disable_abs_pos_emb) */
    bool abs = x->abs_pos_emb > 0 || (x->abs_pos_emb == 0 && !x->rotary_pos_emb && !x->rotary_xpos && !x->rel_pos_bias);
    if (abs && x->max_seq_len > 0 && x->scaled_sinu_pos_emb) {
        x->sinu = pg_scaled_sinusoidal_defaults();
        c.input_pos[c.n_input_pos++] = (pg_posmod_spec){"sinusoidal", NULL, &x->sinu};
    } else if (abs && x->max_seq_len > 0) {
        x->learned = (pg_learned_opts){.max_seq_len = x->max_seq_len, .l2norm = x->l2norm_embed,
                                       .scale = x->l2norm_embed ? 1.0 : pow((double)x->dim, -0.5)};
        c.input_pos[c.n_input_pos++] = (pg_posmod_spec){"learned", NULL, &x->learned};
    }
    if (x->rotary_pos_emb || x->rotary_xpos) { /* RotaryEmbedding(rotary_emb_dim), interleaved pairs */
        int64_t rd = x->rotary_emb_dim ? x->rotary_emb_dim : dh / 2;
        x->rotary = (pg_rotary_opts){.n_dims = rd, .freq_dim = rd, .use_xpos = x->rotary_xpos};
        c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){"rotary", NULL, &x->rotary};
    }
    /* the relative biases: AttentionLayers.rel_pos, one module for every layer, end-aligned */
    if (x->alibi_pos_bias) {
        x->alibi = (pg_alibi_opts){.align = PG_ALIBI_ALIGN_END};
        c.share_layer_pos[c.n_layer_pos] = true;
        c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){"alibi", NULL, &x->alibi};
    }
    if (x->rel_pos_bias) { /* scale dim_head^0.5: pg_t5_opts.scale 0 with the attention's head width */
        x->t5 = (pg_t5_opts){.num_buckets = x->rel_pos_num_buckets, .max_distance = x->rel_pos_max_distance,
                             .causal = true, .align = PG_T5_ALIGN_END};
        c.share_layer_pos[c.n_layer_pos] = true;
        c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){"t5", NULL, &x->t5};
    }
    if (x->dynamic_pos_bias) { /* DynamicPositionBias(dim // 4, depth 2) */
        x->dpb = pg_dpb_xtransformers(x->dynamic_pos_bias_mlp_depth ? x->dynamic_pos_bias_mlp_depth : 2,
                                      x->dynamic_pos_bias_log_distance, x->dynamic_pos_bias_norm);
        c.share_layer_pos[c.n_layer_pos] = true;
        c.layer_pos[c.n_layer_pos++] = (pg_posmod_spec){"dpb", NULL, &x->dpb};
    }
    return c;
}

/* ---- the problem check -------------------------------------------------------------------------- */

static bool spec_is(const pg_posmod_spec *s, const char *kind)
{
    return s->kind && !s->make && strcmp(s->kind, kind) == 0;
}

static bool bias_on(pg_bias_switch s, bool dflt) { return s == PG_BIAS_ON || (s == PG_BIAS_DEFAULT && dflt); }

/* Why the input positions of c are not TransformerWrapper's pos_emb, or NULL. */
static const char *xt_input_problem(const pg_lm_config *c)
{
    if (c->n_input_pos == 0)
        return NULL;
    const pg_posmod_spec *s = &c->input_pos[0];
    if (c->n_input_pos > 1 || c->max_len <= 0)
        return "has at most one input positional module (pos_emb) and needs max_len = max_seq_len > 0 with it";
    if (spec_is(s, "sinusoidal")) {
        const pg_sinusoidal_opts *o = s->opts;
        bool ok = o && o->cat_halves && o->learned_scale && (o->base == 0 || o->base == 10000) && !o->learned_div &&
                  (o->divide == 0 || o->divide == 1);
        return ok ? NULL : "has the sinusoid only as ScaledSinusoidalEmbedding (pg_scaled_sinusoidal_defaults())";
    }
    const pg_learned_opts *o = s->opts;
    if (!spec_is(s, "learned") || !o)
        return "has a \"learned\" (AbsolutePositionalEmbedding) or scaled \"sinusoidal\" input position only";
    double want = o->l2norm ? 1.0 : pow((double)c->dim, -0.5);
    if ((o->scale == 0 ? 1.0 : o->scale) != want || o->l2norm != c->tok_l2norm ||
        (o->max_seq_len != 0 && o->max_seq_len != c->max_len))
        return "scales AbsolutePositionalEmbedding by dim^-0.5 (pg_learned_opts.scale), or l2-normalises it "
               "and the token embedding together (l2norm_embed: .l2norm = tok_l2norm, scale 1), max_seq_len rows";
    return NULL;
}

static const char *xt_rotary_problem(const pg_rotary_opts *o, int64_t dh)
{
    if (!o || o->n_dims <= 0 || o->n_dims > dh || o->freq_dim != o->n_dims || o->pairing != PG_ROTARY_INTERLEAVED ||
        (o->base != 0 && o->base != 10000) || (o->divide != 0 && o->divide != 1) || o->learned_div || o->scaling != PG_ROPE_NONE ||
        o->xpos_fixed_centre || (o->scale_base != 0 && o->scale_base != 512) || (o->head_dim != 0 && o->head_dim != dh))
        return "has RotaryEmbedding(rotary_emb_dim) only as pg_rotary_opts{.n_dims = .freq_dim = rotary_emb_dim "
               "<= dim_head, interleaved, base 10000, no divide or scaling, (use_xpos)}";
    return NULL;
}

static const char *xt_bias_problem(const pg_posmod_spec *s)
{
    if (spec_is(s, "alibi")) {
        const pg_alibi_opts *o = s->opts;
        return o && !o->slopes && !o->asymmetric && o->align == PG_ALIBI_ALIGN_END && !o->div.learned &&
                       (o->div.divide == 0 || o->div.divide == 1)
                   ? NULL
                   : "has AlibiPositionalBias as pg_alibi_opts{.align = PG_ALIBI_ALIGN_END} (slopes of its recipe)";
    }
    if (spec_is(s, "t5")) {
        const pg_t5_opts *o = s->opts;
        return o && o->causal && o->align == PG_T5_ALIGN_END && o->scale == 0
                   ? NULL
                   : "has a causal, end-aligned T5 bias scaled by sqrt(dim_head) (pg_t5_opts)";
    }
    if (spec_is(s, "dpb")) {
        const pg_dpb_opts *o = s->opts;
        return o && o->layout == PG_DPB_LAYOUT_XT && o->sign == PG_DPB_ADD && o->end_aligned && o->hidden == 0 &&
                       o->distance != PG_DPB_ABS && (o->divide == 0 || o->divide == 1) && !o->learned_div
                   ? NULL
                   : "has DynamicPositionBias as pg_dpb_xtransformers(depth, log_distance, norm)";
    }
    return "has no positional module of that kind inside attention (rotary, xpos, alibi, t5 or dpb only)";
}

/* Why the layer positions of c are not AttentionLayers' rotary_pos_emb / rel_pos, or NULL. */
static const char *xt_layer_problem(const pg_lm_config *c)
{
    int n_rot = 0, n_bias = 0;
    int64_t dh = c->dim_head ? c->dim_head : c->dim / c->heads;
    for (int k = 0; k < c->n_layer_pos; k++) {
        const pg_posmod_spec *s = &c->layer_pos[k];
        const char *bad;
        if (spec_is(s, "rotary") || spec_is(s, "xpos")) {
            n_rot++;
            bad = xt_rotary_problem(s->opts, dh);
        } else {
            n_bias++;
            bad = xt_bias_problem(s);
            if (!bad && !c->share_layer_pos[k])
                bad = "shares its relative bias across layers (share_layer_pos) as rel_pos";
        }
        if (bad)
            return bad;
    }
    return n_rot > 1 || n_bias > 1 ? "has at most one rotary and one relative bias (alibi, t5 or dpb)" : NULL;
}

/* Why x-transformers cannot express c, or NULL. */
static const char *xt_problem(const pg_lm_config *c)
{
    const char *bad = xt_input_problem(c);
    if (!bad)
        bad = xt_layer_problem(c);
    if (bad)
        return bad;
    if (bias_on(c->attn_bias, c->bias) || (c->norm == PG_NORM_LAYER && c->norm_bias != PG_BIAS_OFF))
        return "has no attention biases and no LayerNorm bias (attn_bias, norm_bias PG_BIAS_OFF)";
    if (c->norm == PG_NORM_LAYER ? c->norm_eps != 0 && c->norm_eps != 1e-5
                                 : c->rms_form != PG_RMS_L2 || (c->norm_eps != 0 && c->norm_eps != 1e-12))
        return "has LayerNorm with eps 1e-5 or RMSNorm of F.normalize (PG_RMS_L2, eps 1e-12)";
    if (c->ff_act != PG_ACT_GELU && c->ff_act != PG_ACT_SILU)
        return "has FeedForward activations GELU (exact) and SiLU (ff_swish) here";
    if (c->band.window != 0)
        return "has full causal attention only here (no band)";
    if (c->heads < 2)
        return "drops to_out for one head (Attention's project_out): heads >= 2 here";
    return NULL;
}

/* ---- the table ---------------------------------------------------------------------------------- */

static int xt_rename(pg_state_map *m, const char *ours, const char *theirs, const char *tail)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s%s", theirs, tail);
    return pg_state_map_rename(m, ours, buf);
}

/* the block's entries: norms, q / k / v split, to_out, qk scales, the feed-forward */
static int xt_blocks(pg_state_map *m, const pg_lm_config *c)
{
    const char *g = c->norm == PG_NORM_RMS ? ".g" : ".gamma";
    int64_t dh = c->dim_head ? c->dim_head : c->dim / c->heads, kv = c->kv_heads ? c->kv_heads : c->heads;
    pg_map_entry qkv = {PG_MAP_SPLIT, "blocks.{i}.attn.to_qkv.weight", 3,
                        {"attn_layers.layers.{2i}.1.to_q.weight", "attn_layers.layers.{2i}.1.to_k.weight",
                         "attn_layers.layers.{2i}.1.to_v.weight"},
                        {c->heads * dh, kv * dh, kv * dh}, 0, 0};
    const char *in = c->ff_kind == PG_FF_GLU ? "attn_layers.layers.{2i+1}.1.ff.0.proj"
                                             : "attn_layers.layers.{2i+1}.1.ff.0.0";
    bool ffb = bias_on(c->ff_bias, c->bias);
    int rc = xt_rename(m, "blocks.{i}.norm1.weight", "attn_layers.layers.{2i}.0.0", g);
    rc = rc ? rc : pg_state_map_add(m, &qkv);
    rc = rc ? rc : pg_state_map_rename(m, "blocks.{i}.attn.to_out.weight", "attn_layers.layers.{2i}.1.to_out.weight");
    if (c->qk_norm && c->qk_norm_dim_scale) {
        rc = rc ? rc : pg_state_map_rename(m, "blocks.{i}.attn.qk_norm_q_scale", "attn_layers.layers.{2i}.1.qk_norm_q_scale");
        rc = rc ? rc : pg_state_map_rename(m, "blocks.{i}.attn.qk_norm_k_scale", "attn_layers.layers.{2i}.1.qk_norm_k_scale");
    }
    rc = rc ? rc : xt_rename(m, "blocks.{i}.norm2.weight", "attn_layers.layers.{2i+1}.0.0", g);
    rc = rc ? rc : xt_rename(m, "blocks.{i}.ff.proj_in.weight", in, ".weight");
    rc = rc ? rc : pg_state_map_rename(m, "blocks.{i}.ff.proj_out.weight", "attn_layers.layers.{2i+1}.1.ff.2.weight");
    if (ffb) {
        rc = rc ? rc : xt_rename(m, "blocks.{i}.ff.proj_in.bias", in, ".bias");
        rc = rc ? rc : pg_state_map_rename(m, "blocks.{i}.ff.proj_out.bias", "attn_layers.layers.{2i+1}.1.ff.2.bias");
    }
    return rc;
}

/* the shared DynamicPositionBias: mlp.0 = (Linear(1, d), [LayerNorm(d) gamma], SiLU), mlp.l =
 * (Linear(d, d), [nn.LayerNorm(d)], SiLU), mlp.depth = Linear(d, heads) (nn/pos_dpb.h, XT layout) */
static int xt_dpb(pg_state_map *m, const pg_dpb_opts *o)
{
    int depth = o->depth ? o->depth : 2, rc = 0;
    for (int l = 0; rc == 0 && l <= depth; l++) {
        const char *hidden[] = {"0.weight", "0.bias", l == 0 ? "1.gamma" : "1.weight", "1.bias"};
        const char *last[] = {"weight", "bias"};
        int n = l == depth ? 2 : !o->norm ? 2 : l == 0 ? 3 : 4;
        for (int k = 0; rc == 0 && k < n; k++) {
            char ours[96], theirs[128];
            snprintf(ours, sizeof ours, "rel_pos.mlp.%d.%s", l, l == depth ? last[k] : hidden[k]);
            snprintf(theirs, sizeof theirs, "attn_layers.%s", ours);
            rc = pg_state_map_rename(m, ours, theirs);
        }
    }
    return rc;
}

static int xt_positions(pg_state_map *m, const pg_lm_config *c)
{
    int rc = 0;
    if (c->n_input_pos == 1)
        rc = spec_is(&c->input_pos[0], "sinusoidal") ? pg_state_map_rename(m, "pos.scale", "pos_emb.scale")
                                                     : pg_state_map_rename(m, "pos.emb.weight", "pos_emb.emb.weight");
    for (int k = 0; rc == 0 && k < c->n_layer_pos; k++) {
        const pg_posmod_spec *s = &c->layer_pos[k];
        if (spec_is(s, "t5"))
            rc = pg_state_map_rename(m, "rel_pos.relative_attention_bias.weight",
                                     "attn_layers.rel_pos.relative_attention_bias.weight");
        else if (spec_is(s, "dpb"))
            rc = xt_dpb(m, s->opts);
        else if (!spec_is(s, "alibi")) { /* rotary: RotaryEmbedding's persistent buffers */
            rc = pg_state_map_drop(m, "attn_layers.rotary_pos_emb.inv_freq");
            rc = rc ? rc : pg_state_map_drop(m, "attn_layers.rotary_pos_emb.scale");
        }
    }
    return rc;
}

pg_state_map *pg_state_map_xtransformers(const pg_lm_config *c)
{
    if (!c) {
        pg_set_error("pg_state_map_xtransformers: config is NULL");
        return NULL;
    }
    const char *bad = xt_problem(c);
    if (bad) {
        pg_set_error("pg_state_map_xtransformers: x-transformers' TransformerWrapper(Decoder) %s", bad);
        return NULL;
    }
    pg_state_map *m = pg_state_map_new("xtransformers");
    const char *g = c->norm == PG_NORM_RMS ? ".g" : ".gamma";
    int rc = m ? pg_state_map_rename(m, "tok_emb.weight", "token_emb.emb.weight") : -1;
    rc = rc ? rc : xt_rename(m, "norm.weight", "attn_layers.final_norm", g);
    if (!c->tie_weights)
        rc = rc ? rc : pg_state_map_rename(m, "head.weight", "to_logits.weight");
    rc = rc ? rc : xt_blocks(m, c);
    rc = rc ? rc : xt_positions(m, c);
    if (rc != 0) {
        pg_state_map_free(m);
        return NULL;
    }
    return m;
}

/* ---- keyword arguments as strings (metadata, command lines) --------------------------------------- */

typedef enum { XT_INT, XT_BOOL, XT_NOT, XT_REAL, XT_ONE_KV, XT_ABS, XT_DISABLE } xt_kind;
typedef struct {
    const char *key;
    xt_kind kind;
    size_t off;
} xt_field;

#define XT_F(key, kind, field) {key, kind, offsetof(pg_xt_config, field)}
static const xt_field XT_FIELDS[] = {
    XT_F("num_tokens", XT_INT, num_tokens), XT_F("max_seq_len", XT_INT, max_seq_len), XT_F("dim", XT_INT, dim),
    XT_F("depth", XT_INT, depth), XT_F("heads", XT_INT, heads), XT_F("attn_dim_head", XT_INT, attn_dim_head),
    XT_F("attn_kv_heads", XT_INT, attn_kv_heads), XT_F("attn_one_kv_head", XT_ONE_KV, attn_kv_heads),
    XT_F("attn_qk_norm", XT_BOOL, attn_qk_norm), XT_F("attn_qk_norm_dim_scale", XT_BOOL, attn_qk_norm_dim_scale),
    XT_F("attn_qk_norm_groups", XT_INT, attn_qk_norm_groups), XT_F("attn_qk_norm_scale", XT_REAL, attn_qk_norm_scale),
    XT_F("use_rmsnorm", XT_BOOL, use_rmsnorm), XT_F("norm_add_unit_offset", XT_NOT, no_norm_unit_offset),
    XT_F("rotary_pos_emb", XT_BOOL, rotary_pos_emb), XT_F("rotary_xpos", XT_BOOL, rotary_xpos),
    XT_F("rotary_emb_dim", XT_INT, rotary_emb_dim), XT_F("alibi_pos_bias", XT_BOOL, alibi_pos_bias),
    XT_F("rel_pos_bias", XT_BOOL, rel_pos_bias), XT_F("rel_pos_num_buckets", XT_INT, rel_pos_num_buckets),
    XT_F("rel_pos_max_distance", XT_INT, rel_pos_max_distance), XT_F("dynamic_pos_bias", XT_BOOL, dynamic_pos_bias),
    XT_F("dynamic_pos_bias_log_distance", XT_BOOL, dynamic_pos_bias_log_distance),
    XT_F("dynamic_pos_bias_norm", XT_BOOL, dynamic_pos_bias_norm), XT_F("ff_mult", XT_REAL, ff_mult),
    XT_F("ff_glu", XT_BOOL, ff_glu), XT_F("ff_swish", XT_BOOL, ff_swish), XT_F("ff_no_bias", XT_BOOL, ff_no_bias),
    XT_F("tie_embedding", XT_BOOL, tie_embedding), XT_F("l2norm_embed", XT_BOOL, l2norm_embed),
    XT_F("scaled_sinu_pos_emb", XT_BOOL, scaled_sinu_pos_emb), XT_F("use_abs_pos_emb", XT_ABS, abs_pos_emb),
    XT_F("disable_abs_pos_emb", XT_DISABLE, abs_pos_emb),
};

/* "True" / "true" / "1" and "False" / "false" / "0" (Python's str() of a bool, and C's) */
static int xt_parse_bool(const char *v)
{
    if (!strcmp(v, "True") || !strcmp(v, "true") || !strcmp(v, "1"))
        return 1;
    return !strcmp(v, "False") || !strcmp(v, "false") || !strcmp(v, "0") ? 0 : -1;
}

static int xt_store(pg_xt_config *x, const xt_field *f, const char *v)
{
    char *end = NULL;
    char *p = (char *)x + f->off;
    if (f->kind == XT_INT) {
        long long n = strtoll(v, &end, 10);
        if (end == v || *end || n < 0)
            return -1;
        memcpy(p, &(int64_t){n}, sizeof(int64_t));
        return 0;
    }
    if (f->kind == XT_REAL) {
        double d = strtod(v, &end);
        if (end == v || *end || !(d >= 0) || !isfinite(d))
            return -1;
        memcpy(p, &d, sizeof d);
        return 0;
    }
    int b = xt_parse_bool(v);
    if (b < 0)
        return -1;
    if (f->kind == XT_ONE_KV) {
        if (b)
            x->attn_kv_heads = 1;
    } else if (f->kind == XT_ABS) { /* TransformerWrapper: True keeps the rule, False turns it off */
        x->abs_pos_emb = b ? x->abs_pos_emb : -1;
    } else if (f->kind == XT_DISABLE) { /* Decoder: overrides the rule (on unless rotary or T5) */
        x->abs_pos_emb = b ? -1 : 1;
    } else {
        bool v2 = f->kind == XT_NOT ? !b : b;
        memcpy(p, &v2, sizeof v2);
    }
    return 0;
}

int pg_xt_config_set(pg_xt_config *x, const char *key, const char *value)
{
    if (!x || !key || !value) {
        pg_set_error("pg_xt_config_set: NULL argument (x %p, key %s, value %s)", (void *)x, key ? key : "NULL",
                     value ? value : "NULL");
        return -1;
    }
    for (size_t k = 0; k < sizeof XT_FIELDS / sizeof XT_FIELDS[0]; k++) {
        if (strcmp(XT_FIELDS[k].key, key) != 0)
            continue;
        if (xt_store(x, &XT_FIELDS[k], value) == 0)
            return 0;
        pg_set_error("pg_xt_config_set: %s = \"%s\" is not a%s", key, value,
                     XT_FIELDS[k].kind == XT_INT    ? " non-negative integer"
                     : XT_FIELDS[k].kind == XT_REAL ? " non-negative number"
                                                    : " bool (True / False)");
        return -1;
    }
    return 1;
}

/* one field as its keyword argument, or "" where it has x-transformers' default */
static void xt_format(const pg_xt_config *x, const xt_field *f, char *out, size_t cap)
{
    const char *p = (const char *)x + f->off;
    int64_t i;
    double d;
    bool b;
    out[0] = 0;
    if (f->kind == XT_INT && (memcpy(&i, p, sizeof i), i != 0))
        snprintf(out, cap, "%lld", (long long)i);
    else if (f->kind == XT_REAL && (memcpy(&d, p, sizeof d), d != 0))
        snprintf(out, cap, "%.17g", d);
    else if (f->kind == XT_BOOL && (memcpy(&b, p, sizeof b), b))
        snprintf(out, cap, "True");
    else if (f->kind == XT_NOT && (memcpy(&b, p, sizeof b), b))
        snprintf(out, cap, "False");
    else if (f->kind == XT_DISABLE && x->abs_pos_emb != 0)
        snprintf(out, cap, "%s", x->abs_pos_emb < 0 ? "True" : "False");
}

int pg_xt_config_write(const pg_xt_config *x, int cap, char (*keys)[PG_XT_KEY_MAX], char (*values)[PG_XT_VALUE_MAX])
{
    if (!x || !keys || !values || cap < 0) {
        pg_set_error("pg_xt_config_write: NULL argument or cap %d < 0 (x %p, keys %p, values %p)", cap,
                     (const void *)x, (void *)keys, (void *)values);
        return -1;
    }
    int n = 0;
    for (size_t k = 0; k < sizeof XT_FIELDS / sizeof XT_FIELDS[0] && n < cap; k++) {
        xt_format(x, &XT_FIELDS[k], values[n], PG_XT_VALUE_MAX);
        if (values[n][0]) {
            snprintf(keys[n], PG_XT_KEY_MAX, "%s", XT_FIELDS[k].key);
            n++;
        }
    }
    return n;
}

/* ---- persistent buffers ------------------------------------------------------------------------- */

/* RotaryEmbedding(r): inv_freq[k] = 1 / base'^(2k / r), base' = base * base_rescale_factor^(r / (r - 2));
 * with xPos scale[k] = (2k + 0.4 r) / (1.4 r); float32 as torch keeps them (computed in double,
 * rounded once). */
static int xt_rotary_buffers(const pg_rotary_opts *o, bool xpos, pg_tensor_list *out)
{
    int64_t r = o->n_dims, half = r / 2;
    double base = (o->base > 0 ? o->base : 10000.0) *
                  (o->base_rescale_factor > 0 && o->base_rescale_factor != 1
                       ? pow(o->base_rescale_factor, (double)r / (double)(r - 2))
                       : 1.0);
    const char *names[2] = {"attn_layers.rotary_pos_emb.inv_freq", "attn_layers.rotary_pos_emb.scale"};
    for (int b = 0; b < (xpos ? 2 : 1); b++) {
        pg_tensor *t = pg_tensor_empty(NULL, PG_F32, 1, &half);
        if (!t || pg_tensor_list_push(out, names[b], t) != 0) {
            pg_tensor_free(t);
            return -1;
        }
        for (int64_t k = 0; k < half; k++)
            ((float *)t->data)[k] = (float)(b == 0 ? 1.0 / pow(base, (double)(2 * k) / (double)r)
                                                   : ((double)(2 * k) + 0.4 * (double)r) / (1.4 * (double)r));
    }
    return 0;
}

int pg_xt_buffers(const pg_lm_config *c, pg_tensor_list *out)
{
    if (!c || !out) {
        pg_set_error("pg_xt_buffers: NULL argument (c %p, out %p)", (const void *)c, (void *)out);
        return -1;
    }
    int n0 = out->n;
    for (int k = 0; k < c->n_layer_pos; k++) {
        const pg_posmod_spec *s = &c->layer_pos[k];
        const pg_rotary_opts *o = s->opts;
        if (!(spec_is(s, "rotary") || spec_is(s, "xpos")) || !o)
            continue;
        if (xt_rotary_buffers(o, o->use_xpos || spec_is(s, "xpos"), out) != 0) {
            while (out->n > n0) { /* out as it was */
                out->n--;
                free(out->names[out->n]);
                pg_tensor_free(out->tensors[out->n]);
            }
            return -1;
        }
        return 1 + (o->use_xpos || spec_is(s, "xpos"));
    }
    return 0;
}
