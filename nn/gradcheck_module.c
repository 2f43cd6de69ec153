/* Gradcheck of a module by named tensor (nn/gradcheck_module.h). */
#include "gradcheck_module.h"

#include <stdlib.h>
#include <string.h>

#include "../tensor/shape_util.h"

typedef struct wrap {
    pg_module_check_fn fn;
    pg_module *m;
    int n_in; /* the caller's inputs come first in the combined list */
    void *ctx;
} wrap;

/* the combined list (inputs, then parameters) -> the caller's fn on the inputs */
static pg_tensor *wrapped(pg_graph *g, pg_tensor *const *all, int n, void *vctx)
{
    (void)n;
    const wrap *w = vctx;
    return w->fn(g, w->m, all, w->n_in, w->ctx);
}

/* "[i, j, ...]" of flat index k in t */
static void index_str(char *buf, size_t size, const pg_tensor *t, int64_t k)
{
    int64_t idx[PG_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] > 0 ? k % t->shape[d] : 0;
        k = t->shape[d] > 0 ? k / t->shape[d] : 0;
    }
    size_t at = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && at < size; d++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", d ? "," : "", (long long)idx[d]);
    if (at < size)
        snprintf(buf + at, size - at, "]");
}

static pg_module_gradcheck refuse(const char *fmt, const char *detail)
{
    pg_module_gradcheck r = {0};
    r.all.worst_input = -1;
    snprintf(r.all.message, sizeof r.all.message, fmt, detail);
    pg_set_error("%s", r.all.message);
    return r;
}

/* the entries of the tensors that were checked, named */
static int fill_entries(pg_module_gradcheck *r, pg_tensor *const *all, int n_all, int n_in, const pg_tensor_list *ps,
                        const pg_gradcheck_stat *st)
{
    r->entries = calloc((size_t)n_all, sizeof *r->entries);
    if (!r->entries)
        return -1;
    for (int i = 0; i < n_all; i++) {
        if (!all[i]->requires_grad)
            continue;
        pg_gradcheck_entry *e = &r->entries[r->n++];
        if (i < n_in)
            snprintf(e->name, sizeof e->name, "input %d", i);
        else
            snprintf(e->name, sizeof e->name, "%s", ps->names[i - n_in]);
        pg_shape_str(e->shape, sizeof e->shape, all[i]);
        e->stat = st[i];
    }
    return 0;
}

/* all.message: the first failing tensor by name and element, when there is one */
static void name_failure(pg_module_gradcheck *r, pg_tensor *const *all, int n_all)
{
    for (int i = 0, k = 0; i < n_all && r->all.ok == false; i++) {
        if (!all[i]->requires_grad)
            continue;
        const pg_gradcheck_entry *e = &r->entries[k++];
        if (e->stat.ok)
            continue;
        char at[128];
        index_str(at, sizeof at, all[i], e->stat.first_bad);
        snprintf(r->all.message, sizeof r->all.message, "pg_gradcheck_module: %s%s: analytic %.6g, numeric %.6g",
                 e->name, at, e->stat.bad_analytic, e->stat.bad_numeric);
        pg_set_error("%s", r->all.message);
        return;
    }
}

pg_module_gradcheck pg_gradcheck_module(pg_module_check_fn fn, pg_module *m, int n_in, pg_tensor *const *in,
                                        void *ctx, const pg_gradcheck_opts *opts)
{
    if (!fn || !m || n_in < 0 || (n_in > 0 && !in))
        return refuse("pg_gradcheck_module: %s", !fn ? "fn is NULL" : !m ? "module is NULL" : "inputs are NULL");
    for (int i = 0; i < n_in; i++)
        if (!in[i]) {
            char d[32];
            snprintf(d, sizeof d, "%d", i);
            return refuse("pg_gradcheck_module: input %s is NULL", d);
        }
    pg_tensor_list ps = pg_module_parameters(m);
    for (int i = 0; i < ps.n; i++)
        if (ps.tensors[i]->dtype != PG_F64) {
            char d[256];
            snprintf(d, sizeof d, "parameter %s is %s; check the module in f64 (build it with dtype PG_F64)",
                     ps.names[i], PG_SHAPE_STR(ps.tensors[i]));
            pg_tensor_list_free(&ps);
            return refuse("pg_gradcheck_module: %s", d);
        }
    int n_all = n_in + ps.n;
    pg_tensor **all = calloc((size_t)(n_all > 0 ? n_all : 1), sizeof *all);
    pg_gradcheck_stat *st = calloc((size_t)(n_all > 0 ? n_all : 1), sizeof *st);
    pg_module_gradcheck r = {0};
    if (!all || !st) {
        free(all), free(st), pg_tensor_list_free(&ps);
        return refuse("pg_gradcheck_module: out of memory%s", "");
    }
    for (int i = 0; i < n_all; i++)
        all[i] = i < n_in ? in[i] : ps.tensors[i - n_in];
    wrap w = {fn, m, n_in, ctx};
    pg_gradcheck_opts o = opts ? *opts : pg_gradcheck_defaults();
    bool asked_f32 = o.check_f32;
    o.check_f32 = false; /* the weights stay f64: an f32 leg would compare f64 with itself */
    r.all = pg_gradcheck_ex(wrapped, n_all, all, &w, &o, st);
    if (asked_f32 && !r.all.note[0])
        snprintf(r.all.note, sizeof r.all.note, "f32 leg not run: the module's weights stay f64");
    if (fill_entries(&r, all, n_all, n_in, &ps, st) != 0)
        snprintf(r.all.message, sizeof r.all.message, "pg_gradcheck_module: out of memory"), r.all.ok = false;
    else
        name_failure(&r, all, n_all);
    free(all), free(st), pg_tensor_list_free(&ps);
    return r;
}

void pg_module_gradcheck_free(pg_module_gradcheck *r)
{
    if (!r)
        return;
    free(r->entries);
    r->entries = NULL;
    r->n = 0;
}

int pg_module_gradcheck_print(FILE *f, const pg_module_gradcheck *r)
{
    if (!f || !r) {
        pg_set_error("pg_module_gradcheck_print: %s is NULL", !f ? "f" : "r");
        return -1;
    }
    fprintf(f, "%-40s %-16s %9s %10s %10s %8s  %s\n", "tensor", "shape", "elements", "max abs", "max rel", "worst",
            "result");
    for (int i = 0; i < r->n; i++) {
        const pg_gradcheck_entry *e = &r->entries[i];
        fprintf(f, "%-40s %-16s %9lld %10.2e %10.2e %8lld  %s\n", e->name, e->shape, (long long)e->stat.checked,
                e->stat.max_abs_err, e->stat.max_rel_err, (long long)e->stat.worst_index,
                e->stat.ok ? "pass" : "FAIL");
    }
    fprintf(f, "%s: %d elements%s%s\n", r->all.ok ? "pass" : "FAIL", r->all.checked,
            r->all.ok ? "" : "; ", r->all.ok ? "" : r->all.message);
    if (r->all.note[0])
        fprintf(f, "note: %s\n", r->all.note);
    return 0;
}
