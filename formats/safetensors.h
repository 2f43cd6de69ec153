/* safetensors files: named tensors (and string metadata) on disk.
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
 * compile time). Module state dicts over these files: nn/state_dict.h. */
#ifndef PG_FORMATS_SAFETENSORS_H
#define PG_FORMATS_SAFETENSORS_H

#include "../tensor/tensor_list.h"

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

#endif
