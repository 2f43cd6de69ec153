/* The registered positional schemes: one entry per kind, the only place a scheme
 * is listed. Every list of schemes elsewhere (the examples' --pos choices, the
 * benchmarks, the registry tests) is derived from it through pg_posmod_info /
 * pg_posmod_info_at (nn/posmod.h).
 *
 *   PG_POSMOD(kind, role, hooks, props, file, summary)
 *
 *   kind     the name models use (pg_posmod_spec.kind = "kind"); the constructor is
 *            pg_posmod *pg_posmod_make_<kind>(const pg_posmod_args *a), declared
 *            here and defined in `file`
 *   role     PG_POS_ROLE_INPUT (applied once to the token embeddings, mod_x) or
 *            PG_POS_ROLE_ATTENTION (per layer, inside attention)
 *   hooks    the pg_posmod_ops hooks its modules implement, PG_POS_HOOK_* or-ed:
 *            X (mod_x), QKV (mod_qkv), BIAS (mod_bias), TABLE (bias_table),
 *            DIST (dist_bias: the bias depends on the query-key distance only, so
 *            the fused kernel and LocalAttention's bands take it), BAND
 *            (band_bias: a bias that reads q/k on LocalAttention's window band),
 *            SEP (sep_bias: a bias a_i - e_j the fused kernel adds per tile),
 *            REL (rel_bias: relative keys), DIST_IF (dist_bias_if: a bias of the
 *            distance on the calls where it is one, for the fused kernel)
 *   props    PG_POS_* or-ed, or 0: NEEDS_QK (its hooks modify q/k or its bias
 *            reads them), MAX_LEN (a table of rows up to args.max_len),
 *            NEEDS_OPTS (no defaults: its options struct is required), VISION
 *            (from a computer-vision library: the text examples leave it out),
 *            NEEDS_X (its bias reads the attention's input, pg_pos_ctx.x)
 *   file     the source file that defines the constructor
 *   summary  one line: what it does, after whom
 *
 * tests/test_pos_registry.c checks every entry against the modules it builds
 * (role, hooks, NEEDS_QK, MAX_LEN, NEEDS_OPTS, NEEDS_X).
 *
 * Files holding more than one kind: nn/pos_learned.c (learned, continuous),
 * nn/pos_rotary.c (rotary, xpos: one module, xpos forces use_xpos),
 * nn/pos_rel.c (abs1d, rel1d, rel2d: one module with three forms).
 *
 * Included only by nn/posmod.c, with PG_POSMOD defined there; no include guard on
 * purpose. */
#ifdef PG_POSMOD
PG_POSMOD(sinusoidal, PG_POS_ROLE_INPUT, PG_POS_HOOK_X, 0, "nn/pos_sinusoidal.c",
          "fixed sines and cosines of the position added to the token embeddings (Vaswani et al. 2017)")
PG_POSMOD(learned, PG_POS_ROLE_INPUT, PG_POS_HOOK_X, PG_POS_MAX_LEN | PG_POS_BOUNDED, "nn/pos_learned.c",
          "a learned embedding per position (max_len rows) added to the token embeddings")
PG_POSMOD(continuous, PG_POS_ROLE_INPUT, PG_POS_HOOK_X, 0, "nn/pos_learned.c",
          "an MLP of the real-valued position added to the token embeddings (bio-attention)")
PG_POSMOD(rotary, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_QKV | PG_POS_HOOK_ROTATION, PG_POS_NEEDS_QK | PG_POS_ROTARY,
          "nn/pos_rotary.c",
          "rotates pairs of q and k channels by angles proportional to the position (RoPE, Su et al. 2021)")
PG_POSMOD(xpos, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_QKV | PG_POS_HOOK_ROTATION, PG_POS_NEEDS_QK | PG_POS_ROTARY,
          "nn/pos_rotary.c",
          "rotary plus a per-channel exponential decay of q . k with the distance (xPos, Sun et al. 2022)")
PG_POSMOD(alibi, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_TABLE | PG_POS_HOOK_DIST, 0,
          "nn/pos_alibi.c", "minus a fixed per-head slope times the query-key distance (ALiBi, Press et al. 2022)")
PG_POSMOD(dpb, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_TABLE | PG_POS_HOOK_DIST, 0, "nn/pos_dpb.c",
          "an MLP of the signed query-key distance gives each head's bias (dynamic position bias)")
PG_POSMOD(xl, PG_POS_ROLE_ATTENTION,
          PG_POS_HOOK_BIAS | PG_POS_HOOK_TABLE | PG_POS_HOOK_BAND | PG_POS_HOOK_REL | PG_POS_HOOK_REL_KEYS,
          PG_POS_NEEDS_QK, "nn/pos_xl.c",
          "(q + u).k + (q + v).r with r projected sinusoids of the distance (Transformer-XL, Dai et al. 2019)")
PG_POSMOD(t5, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_TABLE | PG_POS_HOOK_DIST, 0, "nn/pos_t5.c",
          "a learned per-head bias for log-spaced buckets of the distance (T5, Raffel et al. 2020)")
PG_POSMOD(abs1d, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS, PG_POS_NEEDS_QK | PG_POS_MAX_LEN | PG_POS_BOUNDED | PG_POS_VISION,
          "nn/pos_rel.c", "q . a learned embedding of the key's position (AI Summer's AbsPosEmb1D)")
PG_POSMOD(rel1d, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_REL | PG_POS_HOOK_REL_KEYS,
          PG_POS_NEEDS_QK | PG_POS_MAX_LEN | PG_POS_BOUNDED | PG_POS_VISION, "nn/pos_rel.c",
          "q . a learned embedding of the key-query distance (Shaw et al. 2018; AI Summer)")
PG_POSMOD(rel2d, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS, PG_POS_NEEDS_QK | PG_POS_NEEDS_OPTS | PG_POS_VISION,
          "nn/pos_rel.c", "q . learned row and column distance embeddings on an H x W map (AI Summer's RelPosEmb2D)")
PG_POSMOD(kerple, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_TABLE | PG_POS_HOOK_DIST, 0, "nn/pos_kerple.c",
          "minus a learned per-head log or power kernel of the query-key distance (KERPLE, Chi et al. 2022)")
PG_POSMOD(sandwich, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_TABLE | PG_POS_HOOK_DIST, 0, "nn/pos_sandwich.c",
          "the inner product of sinusoidal embeddings of two positions, minus its maximum, per-head scaled (Sandwich, Chi et al. 2023)")
PG_POSMOD(fire, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_TABLE | PG_POS_HOOK_BAND | PG_POS_HOOK_DIST_IF, 0, "nn/pos_fire.c",
          "an MLP of the log-distance normalised by the log of max(L, query position) (FIRE, Li et al. 2024)")
PG_POSMOD(cope, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_ATTEND, PG_POS_NEEDS_QK | PG_POS_MAX_LEN, "nn/pos_cope.c",
          "positions counted by sigmoid gates of q . k, interpolated learned embeddings dotted with q (CoPE, Golovneva et al. 2024)")
PG_POSMOD(fox, PG_POS_ROLE_ATTENTION, PG_POS_HOOK_BIAS | PG_POS_HOOK_SEP, PG_POS_NEEDS_X, "nn/pos_fox.c",
          "c_i - c_j, c the running sum of per-head log forget gates of the layer's input (FoX, Lin et al. 2025)")
#endif
