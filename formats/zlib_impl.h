/* Private (not installed): the deflate constants shared by the compressor
 * (zlib_deflate.c) and the inflater (zlib_inflate.c), RFC 1951 section 3.2.5. */
#ifndef PG_FORMATS_ZLIB_IMPL_H
#define PG_FORMATS_ZLIB_IMPL_H

#include <stdint.h>

/* Length codes 257..285: base length and extra bits of code 257 + i. */
extern const uint16_t pg_zlib_len_base[29];
extern const uint8_t pg_zlib_len_extra[29];
/* Distance codes 0..29: base distance and extra bits. */
extern const uint16_t pg_zlib_dist_base[30];
extern const uint8_t pg_zlib_dist_extra[30];
/* The order code-length code lengths are sent in (section 3.2.7). */
extern const uint8_t pg_zlib_clen_order[19];

#define PG_ZLIB_WINDOW 32768 /* largest distance */
#define PG_ZLIB_MAX_BITS 15  /* longest lit/len or distance code */

#endif
