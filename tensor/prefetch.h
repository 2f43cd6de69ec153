/* Software prefetch of rows far apart (internal): tensor/gemm.c's row packs and
 * autograd/rotate_rows.h's rotations read rows a kilobyte or more apart, where the hardware
 * prefetchers lose the stream at every page boundary; they ask for a row some rows ahead
 * while the current one is read. */
#ifndef PG_PREFETCH_H
#define PG_PREFETCH_H

#include <stdint.h>

/* every 64-byte line of the `bytes` from row */
static inline void pg_prefetch_row(const void *row, int64_t bytes)
{
#if defined(__GNUC__)
    for (int64_t b = 0; b < bytes; b += 64)
        __builtin_prefetch((const char *)row + b);
#else
    (void)row, (void)bytes;
#endif
}

/* the same for rows about to be written (a prefetch with write intent) */
static inline void pg_prefetch_row_for_write(void *row, int64_t bytes)
{
#if defined(__GNUC__)
    for (int64_t b = 0; b < bytes; b += 64)
        __builtin_prefetch((char *)row + b, 1);
#else
    (void)row, (void)bytes;
#endif
}

#endif
