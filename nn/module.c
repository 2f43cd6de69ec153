/* The module base: registration, full names, iteration, modes, weight-decay
 * marks, freeing; the scratch-graph helpers. */
#include "module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pg_module_init(pg_module *m, const char *type, void (*destroy)(pg_module *))
{
    if (!m) {
        pg_set_error("pg_module_init: module is NULL");
        return;
    }
    if (!type)
        pg_set_error("pg_module_init: type is NULL (the module is named \"Module\")");
    memset(m, 0, sizeof *m);
    m->type = type ? type : "Module";
    m->training = true;
    m->destroy = destroy;
}

void *pg_module_alloc(size_t size, const char *type, void (*destroy)(pg_module *), const char *fn)
{
    if (!type || !fn || size < sizeof(pg_module)) {
        pg_set_error("pg_module_alloc: %s", !type ? "type is NULL"
                                            : !fn ? "fn is NULL"
                                                  : "size is smaller than a pg_module");
        return NULL;
    }
    pg_module *m = calloc(1, size);
    if (!m) {
        pg_set_error("%s: out of memory", fn);
        return NULL;
    }
    pg_module_init(m, type, destroy);
    return m;
}

pg_module *pg_module_new_container(const char *type, const char *fn)
{
    if (!type || !fn) {
        pg_set_error("pg_module_new_container: %s is NULL", !type ? "type" : "fn");
        return NULL;
    }
    return pg_module_alloc(sizeof(pg_module), type, NULL, fn);
}

/* Appends (name, ptr) to a growable entry array. */
static int entry_push(pg_module_entry **arr, int *n, int *cap, const char *name, void *ptr, bool owned)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 4;
        pg_module_entry *a = realloc(*arr, (size_t)c * sizeof *a);
        if (!a)
            return -1;
        *arr = a;
        *cap = c;
    }
    size_t len = strlen(name);
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, name, len + 1);
    (*arr)[(*n)++] = (pg_module_entry){copy, ptr, owned};
    return 0;
}

static bool valid_name(const char *fn, const pg_module *m, const char *name)
{
    if (!m || !name || !name[0] || strchr(name, '.')) {
        pg_set_error("%s: bad module or name \"%s\" (names are non-empty, without dots)", fn, name ? name : "(null)");
        return false;
    }
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) {
            pg_set_error("%s: %s already has a parameter \"%s\"", fn, m->type, name);
            return false;
        }
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, name)) {
            pg_set_error("%s: %s already has a child \"%s\"", fn, m->type, name);
            return false;
        }
    return true;
}

static int add_param(const char *fn, pg_module *m, const char *name, pg_tensor *t, bool owned)
{
    if (!t) {
        pg_set_error("%s: tensor for \"%s\" is NULL", fn, name ? name : "(null)");
        return -1;
    }
    if (!valid_name(fn, m, name))
        return -1;
    if (entry_push(&m->params, &m->n_params, &m->cap_params, name, t, owned) != 0) {
        pg_set_error("%s: out of memory", fn);
        return -1;
    }
    return 0;
}

int pg_module_add_param(pg_module *m, const char *name, pg_tensor *t, bool owned)
{
    return add_param("pg_module_add_param", m, name, t, owned);
}

/* pg_module_new_param(_ex), naming fn in errors */
static pg_tensor *new_param(const char *fn, pg_module *m, const char *name, pg_dtype dtype, int ndim,
                            const int64_t *shape, unsigned flags)
{
    if (flags & ~(unsigned)PG_PARAM_NO_DECAY) {
        pg_set_error("%s: unknown flags 0x%x for \"%s\"", fn, flags, name ? name : "(null)");
        return NULL;
    }
    if (!pg_dtype_is_float(dtype)) {
        pg_set_error("%s: parameter \"%s\" must be f32 or f64", fn, name ? name : "(null)");
        return NULL;
    }
    if (!valid_name(fn, m, name))
        return NULL;
    pg_tensor *t = pg_tensor_alloc(NULL, fn, dtype, ndim, shape);
    if (!t)
        return NULL;
    pg_fill(t, 0.0);
    t->requires_grad = true;
    t->no_decay = flags & PG_PARAM_NO_DECAY;
    if (add_param(fn, m, name, t, true) != 0) {
        pg_tensor_free(t);
        return NULL;
    }
    return t;
}

pg_tensor *pg_module_new_param(pg_module *m, const char *name, pg_dtype dtype, int ndim, const int64_t *shape)
{
    return new_param("pg_module_new_param", m, name, dtype, ndim, shape, 0);
}

pg_tensor *pg_module_new_param_ex(pg_module *m, const char *name, pg_dtype dtype, int ndim, const int64_t *shape,
                                  unsigned flags)
{
    return new_param("pg_module_new_param_ex", m, name, dtype, ndim, shape, flags);
}

int pg_module_add_child(pg_module *m, const char *name, pg_module *child)
{
    if (!child) {
        pg_set_error("pg_module_add_child: child \"%s\" is NULL", name ? name : "(null)");
        return -1;
    }
    if (!valid_name("pg_module_add_child", m, name) ||
        entry_push(&m->children, &m->n_children, &m->cap_children, name, child, true) != 0) {
        pg_module_free(child);
        return -1;
    }
    return 0;
}

bool pg_module_dtype_ok(const char *fn, pg_dtype dtype)
{
    if (pg_dtype_is_float(dtype))
        return true;
    pg_set_error("%s: dtype must be f32 or f64, got %s", fn ? fn : "pg_module_dtype_ok", pg_dtype_name(dtype));
    return false;
}

void *pg_module_fail(pg_module *m, const char *fn)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", pg_last_error());
    pg_module_free(m);
    if (fn)
        pg_set_error("%s: %s", fn, msg);
    else
        pg_set_error("%s", msg);
    return NULL;
}

void pg_module_free(pg_module *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_params; i++) {
        if (m->params[i].owned)
            pg_tensor_free(m->params[i].ptr);
        free(m->params[i].name);
    }
    for (int i = 0; i < m->n_children; i++) {
        pg_module_free(m->children[i].ptr);
        free(m->children[i].name);
    }
    free(m->params);
    free(m->children);
    if (m->destroy)
        m->destroy(m);
    else
        free(m);
}

/* ---- iteration ---------------------------------------------------------------------- */

typedef void (*visit_fn)(const char *full_name, pg_tensor *t, void *ctx);

/* Calls visit for every parameter with its full name (prefix + local path). */
static void visit_params(const pg_module *m, char *prefix, size_t len, size_t cap, visit_fn visit, void *ctx)
{
    for (int i = 0; i < m->n_params; i++) {
        snprintf(prefix + len, cap - len, "%s", m->params[i].name);
        visit(prefix, m->params[i].ptr, ctx);
    }
    for (int i = 0; i < m->n_children; i++) {
        int k = snprintf(prefix + len, cap - len, "%s.", m->children[i].name);
        size_t next = len + (size_t)k < cap ? len + (size_t)k : cap - 1;
        visit_params(m->children[i].ptr, prefix, next, cap, visit, ctx);
    }
    prefix[len] = '\0';
}

typedef struct collect_ctx {
    pg_tensor_list *list;
    bool failed;
} collect_ctx;

static void collect(const char *full_name, pg_tensor *t, void *p)
{
    collect_ctx *c = p;
    for (int i = 0; i < c->list->n; i++)
        if (c->list->tensors[i] == t)
            return; /* shared: listed once */
    if (!c->failed && pg_tensor_list_push(c->list, full_name, t) != 0)
        c->failed = true;
}

pg_tensor_list pg_module_parameters(const pg_module *m)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    if (!m) {
        pg_set_error("pg_module_parameters: module is NULL");
        return l;
    }
    char prefix[1024] = "";
    collect_ctx c = {&l, false};
    visit_params(m, prefix, 0, sizeof prefix, collect, &c);
    if (c.failed)
        pg_tensor_list_free(&l);
    return l;
}

pg_tensor *pg_module_find_param(const pg_module *m, const char *full_name)
{
    if (!m || !full_name) {
        pg_set_error("pg_module_find_param: %s is NULL", m ? "full_name" : "module");
        return NULL;
    }
    const char *dot = strchr(full_name, '.');
    if (!dot) {
        for (int i = 0; i < m->n_params; i++)
            if (!strcmp(m->params[i].name, full_name))
                return m->params[i].ptr;
        return NULL;
    }
    size_t len = (size_t)(dot - full_name);
    for (int i = 0; i < m->n_children; i++)
        if (strlen(m->children[i].name) == len && !strncmp(m->children[i].name, full_name, len))
            return pg_module_find_param(m->children[i].ptr, dot + 1);
    return NULL;
}

/* The parameter named full_name, or NULL with an error naming fn. */
static pg_tensor *param_by_name(const char *fn, const pg_module *m, const char *full_name)
{
    if (!m || !full_name) {
        pg_set_error("%s: %s is NULL", fn, m ? "full_name" : "module");
        return NULL;
    }
    pg_tensor *t = pg_module_find_param(m, full_name);
    if (!t)
        pg_set_error("%s: %s has no parameter \"%s\"", fn, m->type, full_name);
    return t;
}

int pg_module_param_set_no_decay(pg_module *m, const char *full_name, bool no_decay)
{
    pg_tensor *t = param_by_name("pg_module_param_set_no_decay", m, full_name);
    if (!t)
        return -1;
    t->no_decay = no_decay;
    return 0;
}

bool pg_module_param_no_decay(const pg_module *m, const char *full_name)
{
    const pg_tensor *t = param_by_name("pg_module_param_no_decay", m, full_name);
    return t && t->no_decay;
}

int64_t pg_module_num_elements(const pg_module *m)
{
    if (!m) {
        pg_set_error("pg_module_num_elements: module is NULL");
        return 0;
    }
    pg_tensor_list l = pg_module_parameters(m);
    int64_t n = 0;
    for (int i = 0; i < l.n; i++)
        n += l.tensors[i]->numel;
    pg_tensor_list_free(&l);
    return n;
}

void pg_module_zero_grad(pg_module *m)
{
    if (!m) {
        pg_set_error("pg_module_zero_grad: module is NULL");
        return;
    }
    for (int i = 0; i < m->n_params; i++)
        pg_zero_grad(m->params[i].ptr);
    for (int i = 0; i < m->n_children; i++)
        pg_module_zero_grad(m->children[i].ptr);
}

void pg_module_train(pg_module *m, bool on)
{
    if (!m) {
        pg_set_error("pg_module_train: module is NULL");
        return;
    }
    m->training = on;
    for (int i = 0; i < m->n_children; i++)
        pg_module_train(m->children[i].ptr, on);
}

/* ---- g == NULL ---------------------------------------------------------------------------- */

pg_graph *pg_nn_scratch_begin(const char *fn)
{
    if (!fn) {
        pg_set_error("pg_nn_scratch_begin: fn is NULL");
        return NULL;
    }
    pg_graph *s = pg_graph_new();
    if (!s)
        pg_set_error("%s: out of memory for a scratch graph", fn);
    else
        pg_no_grad_begin(s);
    return s;
}

pg_tensor *pg_nn_scratch_end(pg_graph *s, pg_tensor *out)
{
    if (!s)
        return NULL;
    pg_tensor *r = out ? pg_tensor_copy(NULL, out) : NULL;
    if (!out && pg_graph_error(s))
        pg_set_error("%s", pg_graph_error(s));
    pg_graph_free(s);
    return r;
}
