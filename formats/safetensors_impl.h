/* Private (not installed, not in posgrad.h): what the safetensors files share
 * with each other and with nn/state_dict.c: safetensors.c checks and reads,
 * safetensors_write.c writes. */
#ifndef PG_FORMATS_SAFETENSORS_IMPL_H
#define PG_FORMATS_SAFETENSORS_IMPL_H

#include "fmt_util.h"
#include "json.h"
#include "safetensors.h"

/* The data section is the tensors' memory as is: only little-endian machines. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "formats/safetensors*.c use tensor memory as little-endian data: big-endian machines are not supported"
#endif

#define PG_ST_MAX_HEADER 100000000ULL /* the reference implementation's limit */

/* ---- the dtypes of the format (safetensors.c) ------------------------------------ */
/* "F32", "F64", "I64", "BOOL", or NULL for a dtype safetensors files of
 * posgrad cannot hold. */
const char *pg_st_dtype_name(pg_dtype d);

/* ---- whole files, with the caller's function name in messages -------------------- */
/* pg_safetensors_load_meta's work (safetensors.c); keys NULL: no metadata
 * wanted (n_meta and values are then unused). */
int pg_st_read_file(const pg_fmt_ctx *c, const char *path, pg_tensor_list *out, int *n_meta, char ***keys,
                    char ***values);
/* pg_safetensors_save's work (safetensors_write.c). */
int pg_st_save(const pg_fmt_ctx *c, const char *path, const pg_tensor_list *l, int n_meta, const char *const *mk,
               const char *const *mv);

#endif
