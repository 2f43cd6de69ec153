/* Internal: the library's short name for PG_SHAPE_STR (tensor/tensor.h) in
 * error messages, and a helper on extents. Not part of the public API, never
 * installed. */
#ifndef PG_TENSOR_SHAPE_UTIL_H
#define PG_TENSOR_SHAPE_UTIL_H

#include "tensor.h"

/* Formats a tensor's dtype and shape ("f32[2,3]") into a local buffer. */
#define SHAPE(t) PG_SHAPE_STR(t)

/* The greatest common divisor of two extents >= 0 (gcd(0, b) = b): the period of two
 * broadcast or repeating dims together (nn/local_attention.c, autograd/op_flash.c) */
static inline int64_t pg_gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

#endif
