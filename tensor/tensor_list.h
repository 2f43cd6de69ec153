/* posgrad tensor layer: named tensor lists (tensor/tensor_list.c).
 *
 * An ordered list of (name, tensor) pairs: a module's parameters
 * (pg_module_parameters), a state dict, an optimizer's state, a file's
 * contents. It lives in the tensor layer, below autograd, nn and optim, so that
 * each of them can hand such lists around without depending on the others.
 * Start from an empty list ({0, 0, NULL, NULL}) and grow it with
 * pg_tensor_list_push. */
#ifndef PG_TENSOR_LIST_H
#define PG_TENSOR_LIST_H

#include "tensor.h"

typedef struct pg_tensor_list {
    int n, cap;
    char **names;        /* owned copies */
    pg_tensor **tensors; /* borrowed unless the producer says otherwise */
} pg_tensor_list;
/* Appends (a copy of) name and t (t may be NULL: a missing entry). 0, or -1
 * for l or name NULL or out of memory. */
int pg_tensor_list_push(pg_tensor_list *l, const char *name, pg_tensor *t);
/* Index of name, or -1 (also, with an error, for l or name NULL). */
int pg_tensor_list_find(const pg_tensor_list *l, const char *name);
/* Frees the names and arrays, not the tensors; leaves an empty list. */
void pg_tensor_list_free(pg_tensor_list *l);
/* Also frees the tensors (for lists that own them, e.g. a loaded file). */
void pg_tensor_list_free_all(pg_tensor_list *l);

#endif
