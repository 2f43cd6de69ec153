/* posgrad nn: parameter initialisers (nn/init.c), as torch.nn.init.
 *
 * All fill a float tensor in place from a seeded generator. fan_in / fan_out
 * as torch: for a (out, in, ...) weight, fan_in = in * receptive field,
 * fan_out = out * receptive field. Return 0, or -1 with an error. They use the
 * tensor layer only. docs/nn.md "Init" has the table of distributions. */
#ifndef PG_NN_INIT_H
#define PG_NN_INIT_H

#include "../tensor/tensor.h"

typedef enum { PG_FAN_IN = 0, PG_FAN_OUT = 1 } pg_fan_mode;
int pg_init_uniform(pg_tensor *t, pg_rng *r, double low, double high);
int pg_init_normal(pg_tensor *t, pg_rng *r, double mean, double std);
/* normal(mean, std) redrawn until inside [a, b] */
int pg_init_trunc_normal(pg_tensor *t, pg_rng *r, double mean, double std, double a, double b);
int pg_init_xavier_uniform(pg_tensor *t, pg_rng *r, double gain);
int pg_init_xavier_normal(pg_tensor *t, pg_rng *r, double gain);
/* torch.nn.init.kaiming_*: gain = sqrt(2 / (1 + a^2)) (leaky_relu with slope a;
 * a = 0 is relu) */
int pg_init_kaiming_uniform(pg_tensor *t, pg_rng *r, double a, pg_fan_mode mode);
int pg_init_kaiming_normal(pg_tensor *t, pg_rng *r, double a, pg_fan_mode mode);
int pg_init_fans(const pg_tensor *t, int64_t *fan_in, int64_t *fan_out); /* -1 for any NULL */

#endif
