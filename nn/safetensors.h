/* safetensors files and state dicts.
 *
 * Format (https://huggingface.co/docs/safetensors): 8-byte little-endian
 * header length N, N bytes of JSON {"name": {"dtype": "F32", "shape": [..],
 * "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}, then the
 * raw little-endian data; offsets are relative to the end of the header.
 * posgrad reads and writes F32, F64, I64 and BOOL.
 *
 * Loading treats the file as untrusted: every check happens before anything
 * is returned or any model is touched. The header length must fit the file
 * and 100 MB; the header is strict JSON (UTF-8, no duplicate keys, integers
 * only, nesting <= 64, only whitespace after the object); each entry has
 * exactly dtype (F32, F64, I64 or BOOL; other safetensors dtypes are
 * "unsupported"), shape (<= 8 non-negative sizes) and data_offsets [begin,
 * end] with end - begin = numel * dtype size (overflow-checked); names are
 * unique and non-empty; "__metadata__" maps strings to strings; sorted by
 * offset the tensors tile the data exactly (no overlap, no hole, no trailing
 * bytes, as the reference implementation requires); BOOL bytes are 0 or 1.
 * Failures return -1 with a message in pg_last_error naming the function,
 * the file ("<buffer>" for pg_safetensors_parse), the tensor and the problem:
 *   pg_safetensors_load: model.st: tensor "w": data_offsets [0, 12] hold 12
 *   bytes, shape [2,3] of F32 needs 24
 *
 * Saving writes the header as Python's json.dumps(separators=(",", ":"))
 * does (tensors in list order, then __metadata__; non-ASCII as \uXXXX),
 * padded with spaces to a multiple of 8, then the data in list order (BOOL
 * written as 0/1). It writes PATH.tmp (replacing a stale one; a symlink
 * there is refused), fsyncs it and renames it over PATH, then fsyncs the
 * directory: a crash or error mid-save leaves the previous file intact, and
 * a failed save removes PATH.tmp. Little-endian machines only (checked at
 * compile time). */
#ifndef PG_NN_SAFETENSORS_H
#define PG_NN_SAFETENSORS_H

#include "module.h"

/* Writes the tensors of l (names unique, non-empty UTF-8, not
 * "__metadata__") and optional metadata key/value UTF-8 string pairs (n_meta
 * pairs, may be 0; keys unique). 0 or -1 (nothing written on bad arguments). */
int pg_safetensors_save(const char *path, const pg_tensor_list *l, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values);
/* Reads every tensor into heap tensors appended to *out (which the caller
 * frees with pg_tensor_list_free_all). On failure *out is left as it was. */
int pg_safetensors_load(const char *path, pg_tensor_list *out);
/* The same from memory (the fuzz target uses this). */
int pg_safetensors_parse(const void *data, size_t size, pg_tensor_list *out);
/* pg_safetensors_load that also returns the metadata pairs in file order
 * (*keys and *values: n_meta malloc'd strings each, in arrays the caller
 * frees; NULL when there are none). On failure *n_meta = 0 and the arrays
 * are NULL. */
int pg_safetensors_load_meta(const char *path, pg_tensor_list *out, int *n_meta, char ***keys, char ***values);

/* ---- state dicts ----------------------------------------------------------------- */
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
