/* Named tensor lists: growth, lookup, freeing. */
#include "tensor_list.h"

#include <stdlib.h>
#include <string.h>

int pg_tensor_list_push(pg_tensor_list *l, const char *name, pg_tensor *t)
{
    if (!l || !name) {
        pg_set_error("pg_tensor_list_push: %s is NULL", l ? "name" : "list");
        return -1;
    }
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **names = realloc(l->names, (size_t)cap * sizeof *names);
        if (names)
            l->names = names;
        pg_tensor **ts = realloc(l->tensors, (size_t)cap * sizeof *ts);
        if (ts)
            l->tensors = ts;
        if (!names || !ts) {
            pg_set_error("pg_tensor_list_push: out of memory");
            return -1;
        }
        l->cap = cap;
    }
    size_t len = strlen(name);
    char *copy = malloc(len + 1);
    if (!copy) {
        pg_set_error("pg_tensor_list_push: out of memory");
        return -1;
    }
    memcpy(copy, name, len + 1);
    l->names[l->n] = copy;
    l->tensors[l->n++] = t;
    return 0;
}

int pg_tensor_list_find(const pg_tensor_list *l, const char *name)
{
    if (!l || !name) {
        pg_set_error("pg_tensor_list_find: %s is NULL", l ? "name" : "list");
        return -1;
    }
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->names[i], name))
            return i;
    return -1;
}

void pg_tensor_list_free(pg_tensor_list *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->tensors);
    *l = (pg_tensor_list){0, 0, NULL, NULL};
}

void pg_tensor_list_free_all(pg_tensor_list *l)
{
    for (int i = 0; l && i < l->n; i++)
        pg_tensor_free(l->tensors[i]);
    pg_tensor_list_free(l);
}
