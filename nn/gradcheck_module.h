/* posgrad nn: gradcheck of a module (nn/gradcheck_module.c): the analytic
 * gradients of a module's output with respect to its inputs AND every parameter,
 * against central differences (autograd/gradcheck.h), reported per tensor by
 * name. docs/autograd.md "Checking a module". */
#ifndef PG_NN_GRADCHECK_MODULE_H
#define PG_NN_GRADCHECK_MODULE_H

#include <stdio.h>

#include "../autograd/gradcheck.h"
#include "module.h"

/* builds the module's output in g from its inputs (as pg_gradcheck_fn, with the module) */
typedef pg_tensor *(*pg_module_check_fn)(pg_graph *g, pg_module *m, pg_tensor *const *inputs, int n_inputs,
                                         void *ctx);

/* One checked tensor: "input i" or the parameter's full name, its shape, its stat. */
typedef struct pg_gradcheck_entry {
    char name[160];
    char shape[96];
    pg_gradcheck_stat stat;
} pg_gradcheck_entry;

typedef struct pg_module_gradcheck {
    pg_gradcheck_result all; /* over everything; all.message names a failing tensor and element */
    int n;                   /* entries: the inputs that require grad, then every parameter */
    pg_gradcheck_entry *entries;
} pg_module_gradcheck;

/* Checks fn(m, inputs) w.r.t. the inputs that require grad (f64) and every
 * parameter of m (which must be f64: a module in f32 is refused, naming the
 * first f32 parameter). A failure is named as
 *   "blocks.0.attn.pos.mlp.0.weight[3,1]: analytic 0.412, numeric 0.398".
 * The f32 leg of opts (check_f32) is not run (all.note says so): the module's
 * weights stay f64. Free the result with pg_module_gradcheck_free. */
pg_module_gradcheck pg_gradcheck_module(pg_module_check_fn fn, pg_module *m, int n_inputs,
                                        pg_tensor *const *inputs, void *ctx, const pg_gradcheck_opts *opts);
void pg_module_gradcheck_free(pg_module_gradcheck *r); /* NULL: no-op */
/* One line per entry (name, shape, elements, worst absolute / relative error,
 * where, pass / FAIL), then the verdict; f NULL: an error. */
int pg_module_gradcheck_print(FILE *f, const pg_module_gradcheck *r);

#endif
