/* safetensors files and state dicts.
 *
 * Format (https://huggingface.co/docs/safetensors): 8-byte little-endian
 * header length N, N bytes of JSON {"name": {"dtype": "F32", "shape": [..],
 * "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}, then the
 * raw little-endian data; offsets are relative to the end of the header.
 * posgrad reads and writes F32, F64, I64 and BOOL.
 *
 * Loading treats the file as untrusted: every check (header length, JSON
 * syntax, dtypes, shapes against data_offsets, overlapping or out-of-range
 * offsets, file size) happens before anything is returned or any model is
 * touched. Failures return -1 with a message in pg_last_error naming the
 * file and the problem. Saving writes PATH.tmp, flushes and fsyncs it, then
 * renames it over PATH: a crash mid-save leaves the previous file intact. */
#ifndef PG_NN_SAFETENSORS_H
#define PG_NN_SAFETENSORS_H

#include "module.h"

/* Writes the tensors of l (names unique) and optional metadata key/value
 * string pairs (n_meta pairs, may be 0). 0 or -1. */
int pg_safetensors_save(const char *path, const pg_tensor_list *l, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values);
/* Reads every tensor into heap tensors appended to *out (which the caller
 * frees with pg_tensor_list_free_all). On failure *out is left as it was. */
int pg_safetensors_load(const char *path, pg_tensor_list *out);
/* The same from memory (the fuzz target uses this). */
int pg_safetensors_parse(const void *data, size_t size, pg_tensor_list *out);
/* pg_safetensors_load that also returns the metadata pairs (*keys and
 * *values: n_meta malloc'd strings each, in arrays the caller frees). */
int pg_safetensors_load_meta(const char *path, pg_tensor_list *out, int *n_meta, char ***keys, char ***values);

/* ---- state dicts ----------------------------------------------------------------- */
/* Saves every parameter of m under its full name, in its own dtype. */
int pg_module_save(const pg_module *m, const char *path);

typedef struct pg_load_report {
    int n_missing, n_unexpected;
    char **missing;    /* parameter names absent from the file */
    char **unexpected; /* file names that are no parameter */
} pg_load_report;
void pg_load_report_free(pg_load_report *r);

/* Copies the state into m's parameters, casting f32 <-> f64 where needed. A
 * shape mismatch, a non-float entry for a parameter, or (strict) any missing
 * or unexpected key fails and leaves m untouched. report may be NULL; it is
 * filled in either case. */
int pg_module_load_state(pg_module *m, const pg_tensor_list *state, bool strict, pg_load_report *report);
int pg_module_load(pg_module *m, const char *path, bool strict, pg_load_report *report);

#endif
