/* Module state dicts (state_dict.h): full parameter names, tied aliases,
 * matching a state against the parameters, and the file round trip through
 * formats/safetensors. Messages name the public function and, for files,
 * the path, through the formats' private helpers (fmt_util.h). */
#include "state_dict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/safetensors_impl.h"

/* Every full parameter name, tied aliases included (pg_module_parameters
 * lists a shared tensor once); -1 if a name does not fit the buffer. */
static int walk_names(const pg_module *m, char *prefix, size_t len, size_t cap, pg_tensor_list *all)
{
    for (int i = 0; i < m->n_params; i++) {
        if ((size_t)snprintf(prefix + len, cap - len, "%s", m->params[i].name) >= cap - len ||
            pg_tensor_list_push(all, prefix, m->params[i].ptr) != 0)
            return -1;
    }
    for (int i = 0; i < m->n_children; i++) {
        size_t k = (size_t)snprintf(prefix + len, cap - len, "%s.", m->children[i].name);
        if (k >= cap - len || walk_names(m->children[i].ptr, prefix, len + k, cap, all) != 0)
            return -1;
    }
    prefix[len] = '\0';
    return 0;
}

int pg_module_save(const pg_module *m, const char *path)
{
    pg_fmt_ctx c = {"pg_module_save", path ? path : "(null)"};
    if (!m) {
        pg_fmt_fail(&c, "module is NULL");
        return -1;
    }
    pg_tensor_list all = {0, 0, NULL, NULL}, l = {0, 0, NULL, NULL};
    char prefix[4096];
    prefix[0] = '\0';
    int rc = walk_names(m, prefix, 0, sizeof prefix, &all);
    for (int i = 0; rc == 0 && i < all.n; i++) {
        bool first = true; /* a tied tensor is saved once, under its first name (as pg_module_parameters) */
        for (int k = 0; k < i && first; k++)
            first = all.tensors[k] != all.tensors[i];
        if (first)
            rc = pg_tensor_list_push(&l, all.names[i], all.tensors[i]);
    }
    if (rc != 0)
        pg_fmt_fail(&c, "out of memory or a parameter name longer than 4095 bytes");
    else
        rc = pg_st_save(&c, path, &l, 0, NULL, NULL);
    pg_tensor_list_free(&all);
    pg_tensor_list_free(&l);
    return rc;
}

void pg_load_report_free(pg_load_report *r)
{
    if (!r)
        return;
    pg_fmt_free_strings(r->n_missing, r->missing);
    pg_fmt_free_strings(r->n_unexpected, r->unexpected);
    memset(r, 0, sizeof *r);
}

typedef struct name_ix {
    const char *name;
    int ix;
} name_ix;

static int cmp_name_ix(const void *a, const void *b) { return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name); }

/* The matching of a state against the parameters: for every parameter name
 * (aliases included) the state entry naming it or -1, and the first error. */
typedef struct match {
    pg_tensor_list all; /* full names, borrowed tensors */
    int *canon;         /* all index -> index of the first name of the same tensor */
    int *src;           /* all index -> state index or -1 */
    bool *known;        /* state index -> names a parameter */
    char err[400];
} match;

static void match_free(match *mt)
{
    pg_tensor_list_free(&mt->all);
    free(mt->canon);
    free(mt->src);
    free(mt->known);
}

/* A state entry for a parameter must be a float tensor of the same shape. */
static void check_entry(match *mt, const char *name, const pg_tensor *st, const pg_tensor *param)
{
    if (mt->err[0])
        return;
    char a[128], b[128], s[PG_FMT_NAME_SHOW + 8];
    if (!st)
        snprintf(mt->err, sizeof mt->err, "\"%s\": the state's tensor is NULL", pg_fmt_show(name, s, sizeof s));
    else if (!pg_dtype_is_float(st->dtype) || !pg_same_shape(st, param))
        snprintf(mt->err, sizeof mt->err, "\"%s\": the state has %s, the parameter is %s%s",
                 pg_fmt_show(name, s, sizeof s), pg_shape_str(a, sizeof a, st), pg_shape_str(b, sizeof b, param),
                 pg_dtype_is_float(st->dtype) ? "" : " (a parameter needs F32 or F64)");
}

/* Fills mt; -1 only when out of memory or a name is too long. */
static int match_state(const pg_module *m, const pg_tensor_list *state, match *mt)
{
    char prefix[4096];
    prefix[0] = '\0';
    memset(mt, 0, sizeof *mt);
    if (walk_names(m, prefix, 0, sizeof prefix, &mt->all) != 0)
        return -1;
    int n = mt->all.n;
    mt->canon = malloc((size_t)(n + 1) * sizeof *mt->canon);
    mt->src = malloc((size_t)(n + 1) * sizeof *mt->src);
    mt->known = calloc((size_t)state->n + 1, sizeof *mt->known);
    name_ix *sorted = malloc((size_t)(n + 1) * sizeof *sorted);
    if (!mt->canon || !mt->src || !mt->known || !sorted) {
        free(sorted);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (mt->all.tensors[k] != mt->all.tensors[i])
            k++;
        mt->canon[i] = k;
        mt->src[i] = -1;
        sorted[i] = (name_ix){mt->all.names[i], i};
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_name_ix);
    for (int s = 0; s < state->n; s++) {
        name_ix key = {state->names[s], 0};
        const name_ix *hit = n ? bsearch(&key, sorted, (size_t)n, sizeof *sorted, cmp_name_ix) : NULL;
        if (!hit)
            continue;
        mt->known[s] = true;
        mt->src[hit->ix] = s;
        check_entry(mt, state->names[s], state->tensors[s], mt->all.tensors[hit->ix]);
    }
    free(sorted);
    return 0;
}

/* The state entry that feeds the tensor whose first name is all[i]: its own
 * name if present, else the first alias present; -1 if none. */
static int source_of(const match *mt, int i)
{
    for (int j = i; j < mt->all.n; j++)
        if (mt->canon[j] == i && mt->src[j] >= 0)
            return mt->src[j];
    return -1;
}

/* Report lists (malloc'd copies). */
static int fill_report(const match *mt, const pg_tensor_list *state, pg_load_report *r)
{
    for (int i = 0; i < mt->all.n; i++)
        if (mt->canon[i] == i && source_of(mt, i) < 0)
            r->n_missing++;
    for (int s = 0; s < state->n; s++)
        r->n_unexpected += !mt->known[s];
    r->missing = calloc((size_t)r->n_missing + 1, sizeof *r->missing);
    r->unexpected = calloc((size_t)r->n_unexpected + 1, sizeof *r->unexpected);
    if (!r->missing || !r->unexpected)
        return -1;
    int a = 0, b = 0;
    for (int i = 0; i < mt->all.n; i++)
        if (mt->canon[i] == i && source_of(mt, i) < 0 && !(r->missing[a++] = pg_fmt_strdup(mt->all.names[i])))
            return -1;
    for (int s = 0; s < state->n; s++)
        if (!mt->known[s] && !(r->unexpected[b++] = pg_fmt_strdup(state->names[s])))
            return -1;
    return 0;
}

/* "a, b, c and 2 more" */
static void list_names(char *buf, size_t size, int n, char *const *names)
{
    size_t j = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && i < 3 && j < size; i++) {
        char s[PG_FMT_NAME_SHOW + 8];
        j += (size_t)snprintf(buf + j, size - j, "%s%s", i ? ", " : "", pg_fmt_show(names[i], s, sizeof s));
    }
    if (n > 3 && j < size)
        snprintf(buf + j, size - j, " and %d more", n - 3);
}

static bool state_ok(const pg_fmt_ctx *c, const pg_module *m, const pg_tensor_list *state)
{
    if (!m || !state || (state->n > 0 && (!state->names || !state->tensors))) {
        pg_fmt_fail(c, "module or state is NULL");
        return false;
    }
    return pg_fmt_names_ok(c, state->n, state->names);
}

static int load_state(const pg_fmt_ctx *c, pg_module *m, const pg_tensor_list *state, bool strict,
                      pg_load_report *report)
{
    pg_load_report r = {0, 0, NULL, NULL};
    if (!state_ok(c, m, state))
        return -1;
    match mt;
    if (match_state(m, state, &mt) != 0 || fill_report(&mt, state, &r) != 0) {
        match_free(&mt);
        pg_load_report_free(&r);
        pg_fmt_fail(c, "out of memory or a parameter name longer than 4095 bytes");
        return -1;
    }
    int rc = 0;
    if (mt.err[0]) {
        pg_fmt_fail(c, "%s", mt.err);
        rc = -1;
    } else if (strict && (r.n_missing || r.n_unexpected)) {
        char a[200], b[200];
        list_names(a, sizeof a, r.n_missing, r.missing);
        list_names(b, sizeof b, r.n_unexpected, r.unexpected);
        pg_fmt_fail(c, "strict load: %d missing (%s), %d unexpected (%s)", r.n_missing, a, r.n_unexpected, b);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < mt.all.n; i++) {
        int s = mt.canon[i] == i ? source_of(&mt, i) : -1;
        if (s >= 0)
            pg_copy_into(mt.all.tensors[i], state->tensors[s]); /* checked: same numel, float */
    }
    match_free(&mt);
    if (report)
        *report = r;
    else
        pg_load_report_free(&r);
    return rc;
}

int pg_module_load_state(pg_module *m, const pg_tensor_list *state, bool strict, pg_load_report *report)
{
    pg_fmt_ctx c = {"pg_module_load_state", NULL};
    if (report)
        memset(report, 0, sizeof *report);
    return load_state(&c, m, state, strict, report);
}

int pg_module_load(pg_module *m, const char *path, bool strict, pg_load_report *report)
{
    pg_fmt_ctx c = {"pg_module_load", path ? path : "(null)"};
    if (report)
        memset(report, 0, sizeof *report);
    if (!m) {
        pg_fmt_fail(&c, "module is NULL");
        return -1;
    }
    pg_tensor_list l = {0, 0, NULL, NULL};
    if (pg_st_read_file(&c, path, &l, NULL, NULL, NULL) != 0)
        return -1;
    int rc = load_state(&c, m, &l, strict, report);
    pg_tensor_list_free_all(&l);
    return rc;
}
