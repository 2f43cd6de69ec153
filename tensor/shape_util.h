/* Internal: the library's short name for PG_SHAPE_STR (tensor/tensor.h) in
 * error messages. Not part of the public API, never installed. */
#ifndef PG_TENSOR_SHAPE_UTIL_H
#define PG_TENSOR_SHAPE_UTIL_H

#include "tensor.h"

/* Formats a tensor's dtype and shape ("f32[2,3]") into a local buffer. */
#define SHAPE(t) PG_SHAPE_STR(t)

#endif
