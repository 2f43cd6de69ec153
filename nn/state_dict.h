/* Module state dicts: a module's parameters, under their full PyTorch-style
 * names ("blocks.0.attn.to_qkv.weight"), to and from a named tensor list or
 * a safetensors file (formats/safetensors.h), so a model trained here opens
 * in Python and back. Loading checks everything before it copies anything. */
#ifndef PG_NN_STATE_DICT_H
#define PG_NN_STATE_DICT_H

#include "../formats/safetensors.h"
#include "module.h"

/* Saves every parameter of m under its full name, in its own dtype, in
 * pg_module_parameters order; a tied (shared) tensor is saved once, under its
 * first name, as the safetensors reference does with shared tensors. */
int pg_module_save(const pg_module *m, const char *path);

typedef struct pg_load_report {
    int n_missing, n_unexpected;
    char **missing;    /* parameter names absent from the file */
    char **unexpected; /* file names that are no parameter */
} pg_load_report;
void pg_load_report_free(pg_load_report *r);

/* Copies the state into m's parameters, casting f32 <-> f64 where needed. A
 * shape mismatch, a non-float or NULL entry for a parameter, a name twice in
 * the state, or (strict) any missing or unexpected key fails and leaves m
 * untouched: every entry is checked before anything is copied. A tied
 * parameter may be named by any of its names (PyTorch's state_dict lists
 * them all); it is missing only when none is present, and its first name
 * wins when several are. report may be NULL; it is filled in either case
 * (empty when the state could not be matched at all, e.g. an unreadable
 * file) and freed with pg_load_report_free. */
int pg_module_load_state(pg_module *m, const pg_tensor_list *state, bool strict, pg_load_report *report);
int pg_module_load(pg_module *m, const char *path, bool strict, pg_load_report *report);

#endif
