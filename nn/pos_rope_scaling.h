/* posgrad nn: RoPE context extension, the frequency computation behind pg_rotary_opts.scaling
 * (a helper of nn/pos_rotary.c, not a registered kind; docs/pos/rotary.md "Context extension").
 *
 * theta_k = base^(-2k / F), k = 0 .. R-1 (F = freq_dim, R = n_dims / 2), s = rope_factor,
 * L = rope_orig_len, len = the call's length (largest position + 1):
 *
 *   none:            theta'_k = theta_k (with base_rescale_factor as before)
 *   linear (PI):     theta'_k = theta_k / s                       (positions m -> m / s)
 *   ntk:             theta'_k = (base s^(F / (F - 2)))^(-2k / F)
 *   dynamic_ntk:     len > L: theta'_k = (base (s len / L - (s - 1))^(F / (F - 2)))^(-2k / F),
 *                    else theta_k                                  (s plays the reference's ntk)
 *   dynamic_linear:  len > L: theta'_k = theta_k L / len, else theta_k
 *   yarn:            theta'_k = (1 - gamma_k) theta_k / s + gamma_k theta_k, with
 *     ramp index (the code's):  lo = max(floor(F ln(L / (2 pi beta_fast)) / (2 ln base)), 0),
 *                               hi = min(ceil(F ln(L / (2 pi beta_slow)) / (2 ln base)), F - 1),
 *                               hi += 0.001 when lo == hi,
 *                               gamma_k = (1 - clamp((k - lo) / (hi - lo), 0, 1)) * e
 *     ramp ratio (the paper's): r_k = L theta_k / (2 pi),
 *                               gamma_k = clamp((r_k - beta_slow) / (beta_fast - beta_slow), 0, 1) * e
 *     e = yarn_extrapolation_factor; attention factor on q and k (cos and sin):
 *     mscale = (s > 1 ? 0.1 ln s + 1 : 1) * yarn_attn_factor   (yarn_no_mscale: yarn_attn_factor)
 *   dynamic_yarn:    yarn (ramp from L) with s = len / D when len > M, else s = M / L (yarn_finetuned)
 *                    or 1; M = rope_max_len, D = M (yarn_dynamic_by_max) or L
 *   part_ntk:        m(a, b)_k = 1 - clamp((k - lo) / (hi - lo), 0, 1) with the index ramp's lo, hi
 *                    for beta_fast = a, beta_slow = b; theta_ntk from base s^(F / (F - 2));
 *                    m1 = m(1.25, 0.75) yarn_ntk_factor, t1 = theta / s (1 - m1) + theta_ntk m1,
 *                    m2 = m(16, 2) e, theta'_k = t1 (1 - m2) + theta m2; no mscale
 */
#ifndef PG_NN_POS_ROPE_SCALING_H
#define PG_NN_POS_ROPE_SCALING_H

#include "pos_rotary.h"

/* Checks the scaling fields of o (already resolved otherwise: base, freq_dim, n_dims) and fills
 * their defaults. false + pg_set_error naming fn for a bad option. */
bool pg_rope_scaling_resolve(const char *fn, pg_rotary_opts *o);

/* theta'_k for k < R into out (the module's frequencies before the divisor and
 * interpolation_factor); len is read by the dynamic options only */
void pg_rope_inv_freq(const pg_rotary_opts *o, int64_t R, double len, double *out);

/* the attention factor on q and on k for a call of length len (1 except for yarn, dynamic_yarn) */
double pg_rope_mscale(const pg_rotary_opts *o, double len);

/* does the frequency table depend on the call's length? */
bool pg_rope_is_dynamic(const pg_rotary_opts *o);

#endif
