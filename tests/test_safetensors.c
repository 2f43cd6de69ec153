/* safetensors files and state dicts: round trips of every dtype, files written
 * on the PyTorch side (tests/fixtures/gen_safetensors.py), byte-exact writer
 * output, every prefix of a valid file, bad JSON, bad schema, bad layouts,
 * absurd sizes, atomic saves, and loading state dicts into module trees
 * (strict / non-strict, reports, casts, tied parameters, untouched models). */
#include "testutil.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------- */

/* A fresh directory under /tmp (removed with rm_tree). */
static void make_tmpdir(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/pg_st_XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_tree(sub);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* Asserts the file holds exactly these bytes. */
static void assert_file_is(const char *path, const void *data, size_t n)
{
    size_t m;
    unsigned char *b = read_all(path, &m);
    cr_assert(m == n && !memcmp(b, data, n), "%s changed (%zu bytes, expected %zu)", path, m, n);
    free(b);
}

/* 8-byte little-endian length + header (hlen bytes) + data. */
static unsigned char *blob_n(const char *header, size_t hlen, const void *data, size_t n, size_t *size)
{
    unsigned char *b = malloc(8 + hlen + n + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, header, hlen);
    if (n)
        memcpy(b + 8 + hlen, data, n);
    *size = 8 + hlen + n;
    return b;
}

static unsigned char *blob(const char *header, const void *data, size_t n, size_t *size)
{
    return blob_n(header, strlen(header), data, n, size);
}

/* pg_safetensors_parse fails on buf with a message containing needle, and
 * leaves the output list as it was. */
static void parse_fails(const void *buf, size_t size, const char *needle, const char *what)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_clear_error();
    int rc = pg_safetensors_parse(buf, size, &l);
    const char *err = pg_last_error();
    cr_assert_eq(rc, -1, "%s: parse should fail", what);
    cr_assert(l.n == 0 && l.names == NULL && l.tensors == NULL, "%s: output list touched", what);
    cr_assert(strncmp(err, "pg_safetensors_parse: <buffer>: ", 32) == 0, "%s: error \"%s\" lacks the prefix", what, err);
    cr_assert(strstr(err, needle) != NULL, "%s: error \"%s\" lacks \"%s\"", what, err, needle);
}

/* A header (with n bytes of zero data) that must fail with needle. */
static void header_fails(const char *header, size_t n, const char *needle)
{
    unsigned char *zeros = calloc(n + 1, 1);
    size_t size;
    unsigned char *b = blob(header, zeros, n, &size);
    parse_fails(b, size, needle, header);
    free(b);
    free(zeros);
}

/* A header (with n bytes of zero data) that must parse. */
static void header_ok(const char *header, size_t n, int n_tensors)
{
    unsigned char *zeros = calloc(n + 1, 1);
    size_t size;
    unsigned char *b = blob(header, zeros, n, &size);
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_parse(b, size, &l), 0, "%s: %s", header, pg_last_error());
    cr_assert_eq(l.n, n_tensors, "%s", header);
    pg_tensor_list_free_all(&l);
    free(b);
    free(zeros);
}

static void assert_same_tensor(const pg_tensor *a, const pg_tensor *b, const char *name)
{
    cr_assert_not_null(a, "%s: NULL", name);
    cr_assert_eq(a->dtype, b->dtype, "%s: dtype %d vs %d", name, a->dtype, b->dtype);
    cr_assert(pg_same_shape(a, b), "%s: shapes differ", name);
    cr_assert(!memcmp(a->data, b->data, (size_t)a->numel * pg_dtype_size(a->dtype)), "%s: bytes differ", name);
}

/* Heap copies of every parameter, to prove a failed load left the model alone. */
static pg_tensor_list snapshot(const pg_module *m)
{
    pg_tensor_list p = pg_module_parameters(m), s = {0, 0, NULL, NULL};
    for (int i = 0; i < p.n; i++)
        pg_tensor_list_push(&s, p.names[i], pg_tensor_copy(NULL, p.tensors[i]));
    pg_tensor_list_free(&p);
    return s;
}

static void assert_unchanged(const pg_module *m, pg_tensor_list *snap)
{
    pg_tensor_list p = pg_module_parameters(m);
    cr_assert_eq(p.n, snap->n);
    for (int i = 0; i < p.n; i++)
        assert_same_tensor(p.tensors[i], snap->tensors[i], p.names[i]);
    pg_tensor_list_free(&p);
    pg_tensor_list_free_all(snap);
}

/* A container module (a bare base, freed by pg_module_free). */
static pg_module *container(const char *type)
{
    pg_module *m = malloc(sizeof *m);
    pg_module_init(m, type, NULL);
    return m;
}

/* proj = Linear(3, 4), norm = LayerNorm(4), f32: the model of gen_safetensors.py */
static pg_module *torch_model(uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_module *m = container("Model");
    cr_assert_eq(pg_module_add_child(m, "proj", &pg_linear_new(3, 4, true, PG_F32, &r)->base), 0);
    cr_assert_eq(pg_module_add_child(m, "norm", &pg_layernorm_new(4, 1e-5, true, true, PG_F32)->base), 0);
    return m;
}

/* blocks.0 = Linear(4, 4, f64), blocks.1 = Linear(4, 2, no bias, f32), norm = LayerNorm(4, f64) */
static pg_module *tree(uint64_t seed)
{
    pg_rng r = pg_rng_init(seed);
    pg_module *m = container("Model"), *blocks = container("ModuleList");
    cr_assert_eq(pg_module_add_child(blocks, "0", &pg_linear_new(4, 4, true, PG_F64, &r)->base), 0);
    cr_assert_eq(pg_module_add_child(blocks, "1", &pg_linear_new(4, 2, false, PG_F32, &r)->base), 0);
    cr_assert_eq(pg_module_add_child(m, "blocks", blocks), 0);
    pg_layernorm *n = pg_layernorm_new(4, 1e-5, true, true, PG_F64);
    pg_fill_uniform(n->weight, &r, 0.5, 1.5);
    pg_fill_uniform(n->bias, &r, -0.5, 0.5);
    cr_assert_eq(pg_module_add_child(m, "norm", &n->base), 0);
    return m;
}

/* (i / scale - shift) in double, as gen_safetensors.py's ramp() */
static double ramp(int64_t i, double scale, double shift) { return (double)i / scale - shift; }

static pg_tensor *ramp_tensor(pg_dtype dt, int ndim, const int64_t *shape, double scale, double shift)
{
    pg_tensor *t = pg_tensor_empty(NULL, dt, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) {
        if (dt == PG_F32)
            pg_f32(t)[i] = (float)ramp(i, scale, shift);
        else
            pg_f64(t)[i] = ramp(i, scale, shift);
    }
    return t;
}

static const int64_t I64_VALUES[7] = {INT64_MIN, -(INT64_C(1) << 62), -1, 0, 1, (INT64_C(1) << 53) + 1, INT64_MAX};
static const uint8_t BOOL_VALUES[5] = {1, 0, 1, 1, 0};

/* ---- round trips ---------------------------------------------------------------- */

Test(safetensors, roundtrip_every_dtype_with_metadata)
{
    char dir[64], path[128], tmp[140];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor_list_push(&l, "f32", T32(PG_SHAPE(2, 3), 1.5f, -0.0f, NAN, -INFINITY, 1e-45f, 3.4e38f));
    pg_tensor_list_push(&l, "f64", T64(PG_SHAPE(4), NAN, INFINITY, -0.0, 5e-324));
    pg_tensor_list_push(&l, "i64", TI64(PG_SHAPE(3), INT64_MIN, INT64_MAX, 0));
    pg_tensor_list_push(&l, "bool", TBOOL(PG_SHAPE(2, 2), 1, 0, 0, 1));
    pg_tensor_list_push(&l, "scalar_f64", pg_tensor_from_array(NULL, PG_F64, 0, NULL, (const double[]){2.5}));
    pg_tensor_list_push(&l, "scalar_i64", pg_tensor_full(NULL, PG_I64, 0, NULL, -3));
    pg_tensor_list_push(&l, "empty_f32", pg_tensor_empty(NULL, PG_F32, PG_SHAPE(0)));
    pg_tensor_list_push(&l, "empty_f64", pg_tensor_empty(NULL, PG_F64, PG_SHAPE(2, 0, 3)));
    pg_tensor_list_push(&l, "empty_i64", pg_tensor_empty(NULL, PG_I64, PG_SHAPE(0, 5)));
    pg_tensor_list_push(&l, "empty_bool", pg_tensor_empty(NULL, PG_BOOL, PG_SHAPE(0)));
    pg_tensor_list_push(&l, "scalar_bool", pg_tensor_from_array(NULL, PG_BOOL, 0, NULL, (const uint8_t[]){1}));
    const char *keys[] = {"format", "step"}, *values[] = {"pt", "42"};
    cr_assert_eq(pg_safetensors_save(path, &l, 2, keys, values), 0, "%s", pg_last_error());
    cr_assert(!exists(tmp), "the .tmp file is left behind");

    /* header length is a multiple of 8, padded with spaces */
    size_t size;
    unsigned char *bytes = read_all(path, &size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | bytes[i];
    cr_assert_eq(hlen % 8, 0);
    cr_assert_eq(bytes[8], '{');
    free(bytes);

    pg_tensor_list in = {0, 0, NULL, NULL};
    int n_meta = -1;
    char **mk = NULL, **mv = NULL;
    cr_assert_eq(pg_safetensors_load_meta(path, &in, &n_meta, &mk, &mv), 0, "%s", pg_last_error());
    cr_assert_eq(in.n, l.n);
    for (int i = 0; i < l.n; i++) {
        cr_assert_str_eq(in.names[i], l.names[i]);
        assert_same_tensor(in.tensors[i], l.tensors[i], l.names[i]);
        cr_assert(!in.tensors[i]->requires_grad && in.tensors[i]->owns_data);
    }
    cr_assert_eq(n_meta, 2);
    cr_assert_str_eq(mk[0], "format");
    cr_assert_str_eq(mv[0], "pt");
    cr_assert_str_eq(mk[1], "step");
    cr_assert_str_eq(mv[1], "42");
    for (int i = 0; i < n_meta; i++) {
        free(mk[i]);
        free(mv[i]);
    }
    free(mk);
    free(mv);
    pg_tensor_list_free_all(&in);
    pg_tensor_list_free_all(&l);
    rm_tree(dir);
}

Test(safetensors, save_normalises_bool_and_empty_list)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    pg_tensor_list l = {0, 0, NULL, NULL};
    /* no tensors, no metadata: "{}" padded */
    cr_assert_eq(pg_safetensors_save(path, &l, 0, NULL, NULL), 0, "%s", pg_last_error());
    assert_file_is(path, "\x08\0\0\0\0\0\0\0{}      ", 16);
    pg_tensor_list in = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &in), 0, "%s", pg_last_error());
    cr_assert_eq(in.n, 0);
    /* a bool tensor holding 7 is written as 1 */
    pg_tensor_list_push(&l, "m", TBOOL(PG_SHAPE(3), 7, 0, 1));
    cr_assert_eq(pg_safetensors_save(path, &l, 0, NULL, NULL), 0, "%s", pg_last_error());
    cr_assert_eq(pg_safetensors_load(path, &in), 0, "%s", pg_last_error());
    cr_assert_eq(in.n, 1);
    cr_assert(pg_bool(in.tensors[0])[0] == 1 && pg_bool(in.tensors[0])[1] == 0 && pg_bool(in.tensors[0])[2] == 1);
    pg_tensor_list_free_all(&in);
    pg_tensor_list_free_all(&l);
    rm_tree(dir);
}

Test(safetensors, parse_from_memory_matches_load)
{
    const char *path = "tests/fixtures/st_from_torch.safetensors";
    size_t size;
    unsigned char *bytes = read_all(path, &size);
    pg_tensor_list a = {0, 0, NULL, NULL}, b = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &a), 0, "%s", pg_last_error());
    cr_assert_eq(pg_safetensors_parse(bytes, size, &b), 0, "%s", pg_last_error());
    cr_assert_eq(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        cr_assert_str_eq(a.names[i], b.names[i]);
        assert_same_tensor(a.tensors[i], b.tensors[i], a.names[i]);
    }
    pg_tensor_list_free_all(&a);
    pg_tensor_list_free_all(&b);
    free(bytes);
}

Test(safetensors, load_appends_and_failure_leaves_the_list)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor *mine = T64(PG_SHAPE(1), 9.0);
    pg_tensor_list_push(&l, "mine", mine);
    char **names = l.names;
    pg_tensor **ts = l.tensors;
    cr_assert_eq(pg_safetensors_load("tests/fixtures/does_not_exist.safetensors", &l), -1);
    cr_assert(l.n == 1 && l.names == names && l.tensors == ts && l.tensors[0] == mine);
    cr_assert_eq(pg_safetensors_load("tests/fixtures/st_expected.safetensors", &l), 0, "%s", pg_last_error());
    cr_assert_eq(l.n, 8);
    cr_assert_str_eq(l.names[0], "mine");
    cr_assert_eq(l.tensors[0], mine);
    cr_assert_str_eq(l.names[1], "a.weight");
    pg_tensor_list_free_all(&l);
}

/* ---- PyTorch interop (fixtures from gen_safetensors.py) -------------------------- */

/* The tensors and metadata of st_expected.safetensors (gen_safetensors.py's expected_tensors()). */
static pg_tensor_list expected_tensors(void)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor_list_push(&l, "a.weight", ramp_tensor(PG_F32, PG_SHAPE(2, 3), 7.0, 0.0));
    pg_tensor_list_push(&l, "b.f64", ramp_tensor(PG_F64, PG_SHAPE(5), 7.0, 0.5));
    pg_tensor_list_push(&l, "ids", pg_tensor_from_array(NULL, PG_I64, PG_SHAPE(7, 1), I64_VALUES));
    pg_tensor_list_push(&l, "mask", pg_tensor_from_array(NULL, PG_BOOL, PG_SHAPE(5), BOOL_VALUES));
    pg_tensor_list_push(&l, "scalar", pg_tensor_from_array(NULL, PG_F64, 0, NULL, (const double[]){-0.5}));
    pg_tensor_list_push(&l, "empty", pg_tensor_empty(NULL, PG_F32, PG_SHAPE(3, 0)));
    pg_tensor_list_push(&l, "quo\"te\\name\n\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", T32(PG_SHAPE(1), 1.5f));
    return l;
}
static const char *const EXPECTED_KEYS[3] = {"format", "note", ""};
static const char *const EXPECTED_VALUES[3] = {"pt", "line\nbreak \"quoted\" caf\xc3\xa9 \xf0\x9f\x98\x80", "empty key"};

Test(safetensors, writer_reproduces_the_python_writer_bytes)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/mine.safetensors", dir);
    pg_tensor_list l = expected_tensors();
    cr_assert_eq(pg_safetensors_save(path, &l, 3, EXPECTED_KEYS, EXPECTED_VALUES), 0, "%s", pg_last_error());
    size_t n;
    unsigned char *ref = read_all("tests/fixtures/st_expected.safetensors", &n);
    assert_file_is(path, ref, n);
    free(ref);

    /* and it reads back: names (escapes, non-ASCII), values, metadata */
    pg_tensor_list in = {0, 0, NULL, NULL};
    int n_meta;
    char **mk, **mv;
    cr_assert_eq(pg_safetensors_load_meta("tests/fixtures/st_expected.safetensors", &in, &n_meta, &mk, &mv), 0, "%s",
                 pg_last_error());
    cr_assert_eq(in.n, l.n);
    for (int i = 0; i < l.n; i++) {
        cr_assert_str_eq(in.names[i], l.names[i]);
        assert_same_tensor(in.tensors[i], l.tensors[i], l.names[i]);
    }
    cr_assert_eq(n_meta, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(mk[i], EXPECTED_KEYS[i]);
        cr_assert_str_eq(mv[i], EXPECTED_VALUES[i]);
        free(mk[i]);
        free(mv[i]);
    }
    free(mk);
    free(mv);
    pg_tensor_list_free_all(&in);
    pg_tensor_list_free_all(&l);
    rm_tree(dir);
}

static void check_t(const pg_tensor_list *l, int i, const char *name, pg_dtype dt, int ndim, const int64_t *shape)
{
    cr_assert_str_eq(l->names[i], name);
    cr_assert_eq(l->tensors[i]->dtype, dt, "%s dtype", name);
    assert_shape(l->tensors[i], ndim, shape);
}

Test(safetensors, file_written_by_pytorch_loads)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    int n_meta;
    char **mk, **mv;
    cr_assert_eq(pg_safetensors_load_meta("tests/fixtures/st_from_torch.safetensors", &l, &n_meta, &mk, &mv), 0, "%s",
                 pg_last_error());
    cr_assert_eq(l.n, 12);
    check_t(&l, 0, "proj.weight", PG_F32, PG_SHAPE(4, 3));
    check_t(&l, 1, "proj.bias", PG_F32, PG_SHAPE(4));
    check_t(&l, 2, "norm.weight", PG_F32, PG_SHAPE(4));
    check_t(&l, 3, "norm.bias", PG_F32, PG_SHAPE(4));
    check_t(&l, 4, "extra.f64", PG_F64, PG_SHAPE(2, 3));
    check_t(&l, 5, "extra.i64", PG_I64, PG_SHAPE(7));
    check_t(&l, 6, "extra.bool", PG_BOOL, PG_SHAPE(5));
    check_t(&l, 7, "extra.scalar_f64", PG_F64, 0, NULL);
    check_t(&l, 8, "extra.scalar_i64", PG_I64, 0, NULL);
    check_t(&l, 9, "extra.empty_f32", PG_F32, PG_SHAPE(0));
    check_t(&l, 10, "extra.empty_f64", PG_F64, PG_SHAPE(2, 0, 3));
    check_t(&l, 11, "extra.empty_bool", PG_BOOL, PG_SHAPE(0));
    for (int64_t i = 0; i < 12; i++)
        cr_assert_eq(pg_f32(l.tensors[0])[i], (float)ramp(i, 7.0, 0.5));
    for (int64_t i = 0; i < 4; i++) {
        cr_assert_eq(pg_f32(l.tensors[1])[i], (float)ramp(i, 3.0, 1.0));
        cr_assert_eq(pg_f32(l.tensors[2])[i], (float)ramp(i, 5.0, -1.0));
        cr_assert_eq(pg_f32(l.tensors[3])[i], (float)ramp(i, 9.0, 0.25));
    }
    for (int64_t i = 0; i < 6; i++)
        cr_assert_eq(pg_f64(l.tensors[4])[i], ramp(i, 7.0, 1.0));
    cr_assert(!memcmp(pg_i64(l.tensors[5]), I64_VALUES, sizeof I64_VALUES));
    cr_assert(!memcmp(pg_bool(l.tensors[6]), BOOL_VALUES, sizeof BOOL_VALUES));
    cr_assert_eq(pg_f64(l.tensors[7])[0], 3.25);
    cr_assert_eq(pg_i64(l.tensors[8])[0], -7);
    cr_assert_eq(n_meta, 2);
    cr_assert_str_eq(mk[0], "format");
    cr_assert_str_eq(mv[0], "pt");
    cr_assert_str_eq(mk[1], "source");
    cr_assert_str_eq(mv[1], "gen_safetensors.py");
    for (int i = 0; i < n_meta; i++) {
        free(mk[i]);
        free(mv[i]);
    }
    free(mk);
    free(mv);
    pg_tensor_list_free_all(&l);
}

/* PyTorch state_dict -> posgrad module -> pg_module_save == the state_dict file torch loads strictly */
Test(safetensors, pytorch_state_dict_into_module_and_back)
{
    const char *src = "tests/fixtures/st_from_torch.safetensors";
    pg_module *m = torch_model(1);
    pg_tensor_list snap = snapshot(m);
    pg_load_report r;
    pg_clear_error();
    cr_assert_eq(pg_module_load(m, src, true, &r), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_load: tests/fixtures/st_from_torch.safetensors: strict load: 0 missing "
                                      "(), 8 unexpected (extra.f64, extra.i64, extra.bool and 5 more)") != NULL,
              "%s", pg_last_error());
    cr_assert_eq(r.n_missing, 0);
    cr_assert_eq(r.n_unexpected, 8);
    cr_assert_str_eq(r.unexpected[0], "extra.f64");
    cr_assert_str_eq(r.unexpected[7], "extra.empty_bool");
    pg_load_report_free(&r);
    cr_assert(r.n_unexpected == 0 && r.unexpected == NULL);
    assert_unchanged(m, &snap);

    cr_assert_eq(pg_module_load(m, src, false, &r), 0, "%s", pg_last_error());
    cr_assert_eq(r.n_unexpected, 8);
    pg_load_report_free(&r);
    pg_tensor *w = pg_module_find_param(m, "proj.weight");
    for (int64_t i = 0; i < 12; i++)
        cr_assert_eq(pg_f32(w)[i], (float)ramp(i, 7.0, 0.5));
    pg_tensor *nb = pg_module_find_param(m, "norm.bias");
    for (int64_t i = 0; i < 4; i++)
        cr_assert_eq(pg_f32(nb)[i], (float)ramp(i, 9.0, 0.25));

    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(pg_module_save(m, path), 0, "%s", pg_last_error());
    size_t n;
    unsigned char *ref = read_all("tests/fixtures/st_module_expected.safetensors", &n);
    assert_file_is(path, ref, n);
    free(ref);
    pg_module_free(m);
    rm_tree(dir);
}

/* ---- untrusted input ------------------------------------------------------------- */

Test(safetensors, every_prefix_of_a_valid_file_fails_cleanly)
{
    const char *files[2] = {"tests/fixtures/st_expected.safetensors", "tests/fixtures/st_from_torch.safetensors"};
    for (int f = 0; f < 2; f++) {
        size_t size;
        unsigned char *bytes = read_all(files[f], &size);
        for (size_t n = 0; n < size; n++) {
            unsigned char *copy = malloc(n + 1); /* exact size: ASan sees any overread */
            memcpy(copy, bytes, n);
            char what[64];
            snprintf(what, sizeof what, "prefix %zu of %s", n, files[f]);
            parse_fails(copy, n, "", what);
            free(copy);
        }
        /* one byte too many is as wrong */
        unsigned char *longer = malloc(size + 1);
        memcpy(longer, bytes, size);
        longer[size] = 0;
        parse_fails(longer, size + 1, "but the data has", "one extra byte");
        free(longer);
        free(bytes);
    }
    parse_fails(NULL, 0, "too short for the 8-byte header length", "NULL");
}

Test(safetensors, bad_json_is_rejected)
{
    static const struct {
        const char *header, *needle;
    } cases[] = {
        {"", "does not start with '{'"},
        {"[]", "does not start with '{'"},
        {" {}", "does not start with '{'"},
        {"{", "expected a string key"},
        {"{}x", "trailing characters after the JSON value at byte 2"},
        {"{} {}", "trailing characters"},
        {"{\"a\"}", "expected ':' after a key"},
        {"{\"a\":}", "unexpected character '}'"},
        {"{\"a\":1,}", "expected a string key"},
        {"{'a':1}", "expected a string key"},
        {"{a:1}", "expected a string key"},
        {"{\"a\":1 \"b\":2}", "expected ',' or '}'"},
        {"{\"a\":[1,]}", "unexpected character ']'"},
        {"{\"a\":[1 2]}", "expected ',' or ']'"},
        {"{\"a\":[1", "unexpected end of header, expected ',' or ']'"},
        {"{\"a", "unterminated string"},
        {"{\"a\\", "unterminated string"},
        {"{\"a\\x\":1}", "invalid escape '\\x'"},
        {"{\"a\\u12\":1}", "bad hex digit"},
        {"{\"a\\u12", "truncated \\u escape"},
        {"{\"\\udc00\":1}", "lone low surrogate"},
        {"{\"\\ud800\":1}", "high surrogate not followed by a \\u escape"},
        {"{\"\\ud800\\u0041\":1}", "not followed by a low surrogate"},
        {"{\"\\u0000\":1}", "\\u0000 in a string is not supported"},
        {"{\"a\nb\":1}", "control character 0x0a in a string"},
        {"{\"\xff\":1}", "invalid UTF-8"},
        {"{\"\xc0\xaf\":1}", "invalid UTF-8"},         /* overlong '/' */
        {"{\"\xed\xa0\x80\":1}", "invalid UTF-8"},     /* encoded surrogate */
        {"{\"\xf4\x90\x80\x80\":1}", "invalid UTF-8"}, /* > U+10FFFF */
        {"{\"\xe4\xb8\":1}", "invalid UTF-8"},         /* cut sequence */
        {"{\"a\":01}", "leading zero"},
        {"{\"a\":1.5}", "non-integer number"},
        {"{\"a\":1e3}", "non-integer number"},
        {"{\"a\":-}", "'-' without digits"},
        {"{\"a\":+1}", "unexpected character '+'"},
        {"{\"a\":9223372036854775808}", "integer overflows 64 bits"},
        {"{\"a\":-9223372036854775809}", "integer overflows 64 bits"},
        {"{\"a\":99999999999999999999999}", "integer overflows 64 bits"},
        {"{\"a\":tru}", "invalid literal"},
        {"{\"a\":nul}", "invalid literal"},
        {"{\"a\":\x01}", "unexpected byte 0x01"},
        {"{\"a\":1,\"a\":2}", "duplicate key \"a\""},
        {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", "duplicate key \"k\""},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", "duplicate key \"__metadata__\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        header_fails(cases[i].header, 0, cases[i].needle);
    /* a header with an embedded NUL inside a string */
    size_t size;
    unsigned char *b = blob_n("{\"a\0\":1}", 8, NULL, 0, &size);
    parse_fails(b, size, "control character 0x00", "NUL in a key");
    free(b);
    b = blob_n("{}\0", 3, NULL, 0, &size);
    parse_fails(b, size, "trailing characters", "NUL padding");
    free(b);
}

Test(safetensors, json_nesting_and_valid_corners)
{
    /* 100 nested arrays inside the metadata: too deep, rejected before any stack trouble */
    char deep[512] = "{\"__metadata__\":";
    for (int i = 0; i < 100; i++)
        strcat(deep, "[");
    strcat(deep, "}");
    header_fails(deep, 0, "nesting deeper than 64 levels");
    /* 60 levels parse (then fail the schema) */
    char ok[512] = "{\"__metadata__\":";
    for (int i = 0; i < 60; i++)
        strcat(ok, "[");
    for (int i = 0; i < 60; i++)
        strcat(ok, "]");
    strcat(ok, "}");
    header_fails(ok, 0, "__metadata__ is not an object of strings");
    /* whitespace everywhere, escapes of every kind, padding with every JSON space */
    header_ok("{ \"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\" :\n{\"shape\" : [ 2 ] ,\t\"dtype\":\"F32\","
              "\"data_offsets\":[0,8]} , \"__metadata__\" : { \"k\" : \"\" } }\t\r\n ",
              8, 1);
    header_ok("{}", 0, 0);
    header_ok("{\"__metadata__\":{}}", 0, 0);
    header_ok("{\"z\":{\"dtype\":\"I64\",\"shape\":[0,0],\"data_offsets\":[0,0]}}", 0, 1);
}

Test(safetensors, schema_violations_are_rejected)
{
    static const struct {
        const char *header;
        size_t data;
        const char *needle;
    } cases[] = {
        {"{\"a\":null}", 0, "tensor \"a\": entry is not an object"},
        {"{\"a\":[]}", 0, "tensor \"a\": entry is not an object"},
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "a tensor has an empty name"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4,
         "tensor \"a\": unknown field \"extra\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor \"a\": missing field \"data_offsets\""},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing field \"dtype\""},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing field \"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "duplicate key \"dtype\""},
        {"{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor \"a\": dtype is not a string"},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
         "tensor \"a\": unsupported dtype F16 (posgrad reads F32, F64, I64 and BOOL)"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "unsupported dtype BF16"},
        {"{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unsupported dtype I32"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "unsupported dtype U8"},
        {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor \"a\": unknown dtype \"f32\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16, "shape is not an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", 16,
         "shape entry 1 is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "shape entry 0 is not"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "shape has 9 dims, posgrad supports at most 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets is not [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}", 4, "data_offsets is not [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets is not [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, "data_offsets is not [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "data_offsets [4, 0] end before they begin"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12,
         "tensor \"a\": data_offsets [0, 12] hold 12 bytes, shape [2,3] of F32 needs 24"},
        {"{\"a\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[0,0]}}", 0, "hold 0 bytes, shape [] of BOOL needs 1"},
        {"{\"a\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[0,8]}}", 8, "hold 8 bytes, shape [0] of I64 needs 0"},
        {"{\"__metadata__\":[]}", 0, "__metadata__ is not an object of strings"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of \"k\" is not a string"},
        {"{\"__metadata__\":{\"k\":{}}}", 0, "__metadata__ value of \"k\" is not a string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        header_fails(cases[i].header, cases[i].data, cases[i].needle);
}

Test(safetensors, message_names_the_file_and_the_tensor)
{
    char dir[64], path[128], expected[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.st", dir);
    size_t size;
    unsigned char zeros[12] = {0};
    unsigned char *b = blob("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", zeros, 12, &size);
    write_bytes(path, b, size);
    free(b);
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &l), -1);
    snprintf(expected, sizeof expected,
             "pg_safetensors_load: %s: tensor \"w\": data_offsets [0, 12] hold 12 bytes, shape [2,3] of F32 needs 24",
             path);
    cr_assert_str_eq(pg_last_error(), expected);
    cr_assert_eq(l.n, 0);
    /* long or control-character names are shown bounded and printable */
    char header[600];
    snprintf(header, sizeof header, "{\"%s\\n\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    header_fails(header, 0, "aaaa...\": unknown dtype \"X\"");
    header_fails("{\"a\\tb\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}", 0, "tensor \"a?b\"");
    rm_tree(dir);
}

Test(safetensors, bad_layouts_are_rejected)
{
    /* out of range */
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                 "tensor \"a\": data_offsets [0, 8] run past the 4 bytes of data");
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[9,9]}}", 4, "run past the 4 bytes");
    /* overlapping */
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 12, "tensors \"a\" [0, 8] and \"b\" [4, 12] overlap");
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                 8, "overlap");
    header_fails("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 16, "overlap");
    /* a hole between tensors, data before the first, data after the last */
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                 12, "bytes [4, 8) of the data belong to no tensor");
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "bytes [0, 4) of the data");
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                 "the tensors end at byte 4 of the data, but the data has 8 bytes");
    header_fails("{}", 1, "the tensors end at byte 0 of the data, but the data has 1 bytes");
    /* out of order in the header is fine */
    header_ok("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              8, 2);
}

Test(safetensors, absurd_sizes_are_rejected)
{
    unsigned char b[16] = {0};
    /* header length 2^63 */
    b[7] = 0x80;
    parse_fails(b, 16, "header length 9223372036854775808 exceeds the 8 bytes after the length field", "2^63");
    memset(b, 0xFF, 8); /* 2^64 - 1 */
    parse_fails(b, 16, "header length 18446744073709551615 exceeds", "2^64-1");
    /* 200 MB claimed: past the file and the limit */
    memset(b, 0, 8);
    uint64_t n = 200000000;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(n >> (8 * i));
    parse_fails(b, 16, "exceeds the 8 bytes", "200 MB");
    /* a header over the 100 MB limit that the file does hold (sparse buffer) */
    size_t big = 8 + 100000001;
    unsigned char *huge = calloc(big, 1);
    n = 100000001;
    for (int i = 0; i < 8; i++)
        huge[i] = (unsigned char)(n >> (8 * i));
    parse_fails(huge, big, "header length 100000001 exceeds the limit of 100000000 bytes", "over limit");
    free(huge);
    /* shapes whose element count overflows, in any order */
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]}}", 0,
                 "shape is too large");
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,1099511627776,1099511627776],\"data_offsets\":[0,0]}}", 0,
                 "shape is too large");
    header_fails("{\"a\":{\"dtype\":\"F64\",\"shape\":[9223372036854775807],\"data_offsets\":[0,0]}}", 0,
                 "shape is too large");
    header_fails("{\"a\":{\"dtype\":\"F64\",\"shape\":[576460752303423487],\"data_offsets\":[0,8]}}", 8,
                 "hold 8 bytes, shape [576460752303423487] of F64 needs 4611686018427387896");
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,9223372036854775807]}}", 16,
                 "run past the 16 bytes of data");
    header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,18446744073709551616]}}", 16,
                 "integer overflows 64 bits");
}

Test(safetensors, bool_bytes_must_be_0_or_1)
{
    size_t size;
    unsigned char *b = blob("{\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}", "\x01\x02\x00", 3, &size);
    parse_fails(b, size, "tensor \"m\": BOOL element 1 is 2, not 0 or 1", "bool 2");
    free(b);
}

Test(safetensors, missing_files_and_bad_arguments)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load("tests/fixtures/no_such.safetensors", &l), -1);
    cr_assert(strstr(pg_last_error(), "pg_safetensors_load: tests/fixtures/no_such.safetensors: cannot open: No such file") ==
                  pg_last_error(),
              "%s", pg_last_error());
    cr_assert_eq(pg_safetensors_load("tests/fixtures", &l), -1);
    cr_assert(strstr(pg_last_error(), "tests/fixtures: not a regular file") != NULL, "%s", pg_last_error());
    char dir[64], fifo[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(pg_safetensors_load(fifo, &l), -1); /* refused, not blocked on */
    cr_assert(strstr(pg_last_error(), "not a regular file") != NULL, "%s", pg_last_error());
    rm_tree(dir);
    cr_assert_eq(pg_safetensors_load(NULL, &l), -1);
    cr_assert(strstr(pg_last_error(), "path is NULL") != NULL);
    cr_assert_eq(pg_safetensors_load("tests/fixtures/st_expected.safetensors", NULL), -1);
    cr_assert(strstr(pg_last_error(), "output list is NULL") != NULL);
    cr_assert_eq(pg_safetensors_parse(NULL, 5, &l), -1);
    cr_assert(strstr(pg_last_error(), "data is NULL") != NULL);
    int n;
    char **k, **v;
    cr_assert_eq(pg_safetensors_load_meta("tests/fixtures/st_expected.safetensors", &l, NULL, &k, &v), -1);
    n = 5;
    k = v = (char **)&l; /* set to empty on failure */
    cr_assert_eq(pg_safetensors_load_meta("tests/fixtures/no_such.safetensors", &l, &n, &k, &v), -1);
    cr_assert(n == 0 && k == NULL && v == NULL);
    cr_assert_eq(l.n, 0);
}

/* ---- saving ----------------------------------------------------------------------- */

#define SAVE_FAILS(path, l, nm, mk, mv, needle)                                                                  \
    do {                                                                                                           \
        pg_clear_error();                                                                                          \
        cr_assert_eq(pg_safetensors_save((path), (l), (nm), (mk), (mv)), -1, "save should fail");                  \
        cr_assert(strstr(pg_last_error(), (needle)) != NULL, "error \"%s\" lacks \"%s\"", pg_last_error(), (needle)); \
    } while (0)

Test(safetensors, save_rejects_bad_lists_and_writes_nothing)
{
    char dir[64], path[128], tmp[140];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    pg_tensor *a = T32(PG_SHAPE(1), 1.0f);
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor_list_push(&l, "w", a);
    pg_tensor_list_push(&l, "b", a);
    pg_tensor_list_push(&l, "w", a);
    SAVE_FAILS(path, &l, 0, NULL, NULL, "pg_safetensors_save: ");
    SAVE_FAILS(path, &l, 0, NULL, NULL, "tensor name \"w\" appears twice");
    pg_tensor_list_free(&l);
    pg_tensor_list_push(&l, "", a);
    SAVE_FAILS(path, &l, 0, NULL, NULL, "tensor name 0 (\"\") is NULL, empty");
    pg_tensor_list_free(&l);
    pg_tensor_list_push(&l, "__metadata__", a);
    SAVE_FAILS(path, &l, 0, NULL, NULL, "reserved __metadata__");
    pg_tensor_list_free(&l);
    pg_tensor_list_push(&l, "bad\xff", a);
    SAVE_FAILS(path, &l, 0, NULL, NULL, "not UTF-8");
    pg_tensor_list_free(&l);
    pg_tensor_list_push(&l, "w", NULL);
    SAVE_FAILS(path, &l, 0, NULL, NULL, "tensor 0 is NULL");
    pg_tensor_list_free(&l);
    pg_tensor_list_push(&l, "w", a);
    const char *keys[2] = {"k", "k"}, *values[2] = {"1", "2"}, *nullv[1] = {NULL};
    SAVE_FAILS(path, &l, 2, keys, values, "metadata key \"k\" appears twice");
    SAVE_FAILS(path, &l, 1, keys, nullv, "metadata value 0 is NULL");
    SAVE_FAILS(path, &l, 1, NULL, values, "bad metadata");
    SAVE_FAILS(path, &l, -1, keys, values, "bad metadata");
    SAVE_FAILS(path, NULL, 0, NULL, NULL, "tensor list is NULL");
    SAVE_FAILS(NULL, &l, 0, NULL, NULL, "path is NULL");
    SAVE_FAILS("", &l, 0, NULL, NULL, "path is NULL or empty");
    cr_assert(!exists(path) && !exists(tmp), "a failed save wrote a file");
    pg_tensor_list_free(&l);
    pg_tensor_free(a);
    rm_tree(dir);
}

/* A directory with PATH holding known old bytes. */
static pg_tensor_list one_tensor(int64_t n)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_tensor *t = pg_tensor_empty(NULL, PG_F64, PG_SHAPE(n));
    pg_fill_arange(t, 0.0, 1.0);
    pg_tensor_list_push(&l, "t", t);
    return l;
}

Test(safetensors, save_replaces_an_existing_file)
{
    char dir[64], path[128], tmp[140];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    write_bytes(path, "old", 3);
    write_bytes(tmp, "stale tmp from a crash", 22);
    pg_tensor_list l = one_tensor(5), in = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_save(path, &l, 0, NULL, NULL), 0, "%s", pg_last_error());
    cr_assert(!exists(tmp));
    cr_assert_eq(pg_safetensors_load(path, &in), 0, "%s", pg_last_error());
    assert_same_tensor(in.tensors[0], l.tensors[0], "t");
    pg_tensor_list_free_all(&in);
    pg_tensor_list_free_all(&l);
    rm_tree(dir);
}

Test(safetensors, failed_saves_leave_the_old_file_and_no_tmp)
{
    char dir[64], path[128], tmp[140], sub[160], missing[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    write_bytes(path, "old checkpoint", 14);
    pg_tensor_list l = one_tensor(4);

    /* PATH.tmp cannot be created (a directory is in the way): fails, PATH intact, the directory not ours to remove */
    cr_assert_eq(mkdir(tmp, 0700), 0);
    SAVE_FAILS(path, &l, 0, NULL, NULL, "cannot create");
    assert_file_is(path, "old checkpoint", 14);
    cr_assert_eq(rmdir(tmp), 0);

    /* the rename fails (PATH is a non-empty directory): the written tmp is removed */
    snprintf(sub, sizeof sub, "%s/dir.safetensors", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    char inner[200], subtmp[200];
    snprintf(inner, sizeof inner, "%s/keep", sub);
    write_bytes(inner, "x", 1);
    SAVE_FAILS(sub, &l, 0, NULL, NULL, "cannot rename over the target");
    snprintf(subtmp, sizeof subtmp, "%s.tmp", sub);
    cr_assert(!exists(subtmp), "tmp left behind after a failed rename");
    assert_file_is(inner, "x", 1);

    /* PATH.tmp is a symlink (to a file someone else owns): refused, the target untouched */
    char victim[160];
    snprintf(victim, sizeof victim, "%s/victim", dir);
    write_bytes(victim, "victim", 6);
    cr_assert_eq(symlink(victim, tmp), 0);
    SAVE_FAILS(path, &l, 0, NULL, NULL, "cannot create");
    assert_file_is(victim, "victim", 6);
    assert_file_is(path, "old checkpoint", 14);
    cr_assert_eq(unlink(tmp), 0);

    /* the directory does not exist */
    snprintf(missing, sizeof missing, "%s/no/such/dir/ckpt.safetensors", dir);
    SAVE_FAILS(missing, &l, 0, NULL, NULL, "cannot create");
    cr_assert(!exists(tmp));
    assert_file_is(path, "old checkpoint", 14);
    pg_tensor_list_free_all(&l);
    rm_tree(dir);
}

/* A write that fails midway (file size limit, as a full disk would): old file intact, tmp removed. */
Test(safetensors, write_failure_midway_leaves_the_old_file)
{
    char dir[64], path[128], tmp[140];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    write_bytes(path, "old checkpoint", 14);
    pg_tensor_list l = one_tensor(100000); /* 800 KB */

    struct rlimit old;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    struct rlimit lim = {65536, old.rlim_max};
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    pg_clear_error();
    int rc = pg_safetensors_save(path, &l, 0, NULL, NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(pg_last_error(), "cannot write") != NULL, "%s", pg_last_error());
    cr_assert(!exists(tmp), "tmp left behind");
    assert_file_is(path, "old checkpoint", 14);
    pg_tensor_list_free_all(&l);
    rm_tree(dir);
}

/* ---- state dicts ------------------------------------------------------------------ */

Test(safetensors, module_tree_roundtrip_is_bit_identical)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tree.safetensors", dir);
    pg_module *a = tree(1), *b = tree(2);
    cr_assert_eq(pg_module_save(a, path), 0, "%s", pg_last_error());

    pg_tensor_list file = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &file), 0, "%s", pg_last_error());
    static const char *names[5] = {"blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "norm.weight", "norm.bias"};
    cr_assert_eq(file.n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_str_eq(file.names[i], names[i]);
    cr_assert_eq(file.tensors[2]->dtype, PG_F32);
    cr_assert_eq(file.tensors[0]->dtype, PG_F64);
    pg_tensor_list_free_all(&file);

    pg_load_report r = {7, 7, NULL, NULL};
    cr_assert_eq(pg_module_load(b, path, true, &r), 0, "%s", pg_last_error());
    cr_assert(r.n_missing == 0 && r.n_unexpected == 0);
    pg_load_report_free(&r);
    pg_tensor_list pa = pg_module_parameters(a), pb = pg_module_parameters(b);
    for (int i = 0; i < pa.n; i++)
        assert_same_tensor(pb.tensors[i], pa.tensors[i], pa.names[i]);
    pg_tensor_list_free(&pa);
    pg_tensor_list_free(&pb);
    cr_assert_eq(pg_module_load(b, path, true, NULL), 0, "%s", pg_last_error()); /* report optional */
    pg_module_free(a);
    pg_module_free(b);
    rm_tree(dir);
}

Test(safetensors, strict_and_non_strict_report_missing_and_unexpected)
{
    pg_module *m = torch_model(3);
    pg_tensor *w = ramp_tensor(PG_F32, PG_SHAPE(4, 3), 2.0, 0.0);
    pg_tensor *bogus = T64(PG_SHAPE(1), 1.0);
    pg_tensor_list state = {0, 0, NULL, NULL};
    pg_tensor_list_push(&state, "proj.weight", w);
    pg_tensor_list_push(&state, "bogus", bogus);

    pg_tensor_list snap = snapshot(m);
    pg_load_report r;
    pg_clear_error();
    cr_assert_eq(pg_module_load_state(m, &state, true, &r), -1);
    cr_assert_str_eq(pg_last_error(), "pg_module_load_state: strict load: 3 missing (proj.bias, norm.weight, "
                                      "norm.bias), 1 unexpected (bogus)");
    cr_assert_eq(r.n_missing, 3);
    cr_assert_str_eq(r.missing[0], "proj.bias");
    cr_assert_str_eq(r.missing[1], "norm.weight");
    cr_assert_str_eq(r.missing[2], "norm.bias");
    cr_assert_eq(r.n_unexpected, 1);
    cr_assert_str_eq(r.unexpected[0], "bogus");
    pg_load_report_free(&r);
    assert_unchanged(m, &snap);

    pg_tensor *bias = pg_module_find_param(m, "proj.bias");
    pg_tensor *bias_before = pg_tensor_copy(NULL, bias);
    cr_assert_eq(pg_module_load_state(m, &state, false, &r), 0, "%s", pg_last_error());
    cr_assert(r.n_missing == 3 && r.n_unexpected == 1);
    pg_load_report_free(&r);
    assert_same_tensor(pg_module_find_param(m, "proj.weight"), w, "proj.weight");
    assert_same_tensor(bias, bias_before, "proj.bias untouched");
    pg_tensor_free(bias_before);

    pg_tensor_list_free_all(&state);
    pg_module_free(m);
}

Test(safetensors, bad_entries_leave_the_model_untouched)
{
    pg_module *m = torch_model(4);
    pg_tensor_list state = {0, 0, NULL, NULL};
    pg_tensor_list_push(&state, "proj.weight", ramp_tensor(PG_F32, PG_SHAPE(4, 3), 2.0, 0.0)); /* fine */
    pg_tensor_list_push(&state, "proj.bias", T32(PG_SHAPE(4), 1, 2, 3, 4));                    /* fine */
    pg_tensor_list_push(&state, "norm.weight", T32(PG_SHAPE(5), 1, 2, 3, 4, 5));               /* wrong shape */
    pg_tensor_list_push(&state, "norm.bias", T32(PG_SHAPE(4), 1, 2, 3, 4));
    for (int strict = 0; strict < 2; strict++) {
        pg_tensor_list snap = snapshot(m);
        pg_load_report r;
        cr_assert_eq(pg_module_load_state(m, &state, strict, &r), -1);
        cr_assert_str_eq(pg_last_error(),
                         "pg_module_load_state: \"norm.weight\": the state has f32[5], the parameter is f32[4]");
        cr_assert(r.n_missing == 0 && r.n_unexpected == 0); /* filled in either case */
        pg_load_report_free(&r);
        assert_unchanged(m, &snap);
    }
    /* (4, 3) vs (3, 4): same numel is not enough */
    pg_tensor_free(state.tensors[2]);
    state.tensors[2] = T32(PG_SHAPE(4), 1, 2, 3, 4);
    pg_tensor_free(state.tensors[0]);
    state.tensors[0] = ramp_tensor(PG_F32, PG_SHAPE(3, 4), 2.0, 0.0);
    pg_tensor_list snap = snapshot(m);
    cr_assert_eq(pg_module_load_state(m, &state, false, NULL), -1);
    cr_assert(strstr(pg_last_error(), "\"proj.weight\": the state has f32[3,4], the parameter is f32[4,3]") != NULL,
              "%s", pg_last_error());
    assert_unchanged(m, &snap);
    /* an integer tensor for a parameter */
    pg_tensor_free(state.tensors[0]);
    state.tensors[0] = pg_tensor_full(NULL, PG_I64, PG_SHAPE(4, 3), 1.0);
    snap = snapshot(m);
    cr_assert_eq(pg_module_load_state(m, &state, false, NULL), -1);
    cr_assert(strstr(pg_last_error(), "the state has i64[4,3], the parameter is f32[4,3] (a parameter needs F32 or F64)"),
              "%s", pg_last_error());
    /* a NULL tensor, duplicate names */
    pg_tensor_free(state.tensors[0]);
    state.tensors[0] = NULL;
    cr_assert_eq(pg_module_load_state(m, &state, false, NULL), -1);
    cr_assert(strstr(pg_last_error(), "\"proj.weight\": the state's tensor is NULL"), "%s", pg_last_error());
    state.tensors[0] = ramp_tensor(PG_F32, PG_SHAPE(4, 3), 2.0, 0.0);
    pg_tensor_list_push(&state, "proj.bias", state.tensors[1]);
    cr_assert_eq(pg_module_load_state(m, &state, false, NULL), -1);
    cr_assert(strstr(pg_last_error(), "state name \"proj.bias\" appears twice"), "%s", pg_last_error());
    free(state.names[--state.n]); /* drop the duplicate again (its tensor is tensors[1]) */
    assert_unchanged(m, &snap);
    cr_assert_eq(pg_module_load_state(NULL, &state, false, NULL), -1);
    cr_assert_eq(pg_module_load_state(m, NULL, false, NULL), -1);
    pg_tensor_list_free_all(&state);
    pg_module_free(m);
}

Test(safetensors, load_casts_between_f32_and_f64)
{
    pg_module *m = tree(5); /* blocks.0 f64, blocks.1 f32, norm f64 */
    pg_tensor_list state = {0, 0, NULL, NULL};
    pg_tensor_list_push(&state, "blocks.0.weight", ramp_tensor(PG_F32, PG_SHAPE(4, 4), 3.0, 0.0));
    pg_tensor_list_push(&state, "blocks.1.weight", ramp_tensor(PG_F64, PG_SHAPE(2, 4), 3.0, 0.0));
    cr_assert_eq(pg_module_load_state(m, &state, false, NULL), 0, "%s", pg_last_error());
    pg_tensor *w0 = pg_module_find_param(m, "blocks.0.weight"), *w1 = pg_module_find_param(m, "blocks.1.weight");
    cr_assert_eq(w0->dtype, PG_F64);
    cr_assert_eq(w1->dtype, PG_F32);
    for (int64_t i = 0; i < 16; i++)
        cr_assert_eq(pg_f64(w0)[i], (double)(float)ramp(i, 3.0, 0.0));
    for (int64_t i = 0; i < 8; i++)
        cr_assert_eq(pg_f32(w1)[i], (float)ramp(i, 3.0, 0.0));
    pg_tensor_list_free_all(&state);
    pg_module_free(m);
}

/* emb.weight shared as head.weight (weight tying): saved once, loadable under either name */
Test(safetensors, tied_parameters_save_once_and_load_by_alias)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tied.safetensors", dir);
    pg_rng r = pg_rng_init(6);
    pg_module *m = container("LM");
    pg_linear *emb = pg_linear_new(3, 4, false, PG_F64, &r);
    pg_module *head = container("Head");
    cr_assert_eq(pg_module_add_param(head, "weight", emb->weight, false), 0);
    cr_assert_eq(pg_module_add_child(m, "emb", &emb->base), 0);
    cr_assert_eq(pg_module_add_child(m, "head", head), 0);
    cr_assert_eq(pg_module_save(m, path), 0, "%s", pg_last_error());
    pg_tensor_list file = {0, 0, NULL, NULL};
    cr_assert_eq(pg_safetensors_load(path, &file), 0, "%s", pg_last_error());
    cr_assert_eq(file.n, 1);
    cr_assert_str_eq(file.names[0], "emb.weight");
    pg_tensor_list_free_all(&file);

    /* a state_dict naming only the alias (PyTorch keeps both names) loads strictly */
    pg_tensor_list state = {0, 0, NULL, NULL};
    pg_tensor *v = ramp_tensor(PG_F64, PG_SHAPE(4, 3), 5.0, 1.0);
    pg_tensor_list_push(&state, "head.weight", v);
    pg_load_report rep;
    cr_assert_eq(pg_module_load_state(m, &state, true, &rep), 0, "%s", pg_last_error());
    cr_assert(rep.n_missing == 0 && rep.n_unexpected == 0);
    pg_load_report_free(&rep);
    assert_same_tensor(emb->weight, v, "emb.weight via head.weight");
    /* both names: the first name wins; a wrong shape under the alias still fails */
    pg_tensor *u = ramp_tensor(PG_F64, PG_SHAPE(4, 3), 9.0, 0.0);
    pg_tensor_list_push(&state, "emb.weight", u);
    cr_assert_eq(pg_module_load_state(m, &state, true, NULL), 0, "%s", pg_last_error());
    assert_same_tensor(emb->weight, u, "emb.weight");
    pg_tensor_free(state.tensors[0]);
    state.tensors[0] = T64(PG_SHAPE(1), 0.0);
    cr_assert_eq(pg_module_load_state(m, &state, false, NULL), -1);
    cr_assert(strstr(pg_last_error(), "\"head.weight\": the state has f64[1]"), "%s", pg_last_error());
    pg_tensor_list_free_all(&state);
    pg_module_free(m);
    rm_tree(dir);
}

Test(safetensors, module_load_errors_leave_the_model_untouched)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    pg_module *m = torch_model(7);
    pg_tensor_list snap = snapshot(m);
    pg_load_report r = {1, 1, NULL, NULL};
    cr_assert_eq(pg_module_load(m, "tests/fixtures/no_such.safetensors", false, &r), -1);
    cr_assert(strstr(pg_last_error(), "pg_module_load: tests/fixtures/no_such.safetensors: cannot open") ==
                  pg_last_error(),
              "%s", pg_last_error());
    cr_assert(r.n_missing == 0 && r.n_unexpected == 0 && r.missing == NULL);
    /* a truncated copy of a good file */
    size_t size;
    unsigned char *bytes = read_all("tests/fixtures/st_module_expected.safetensors", &size);
    write_bytes(path, bytes, size - 1);
    free(bytes);
    cr_assert_eq(pg_module_load(m, path, false, &r), -1);
    cr_assert(strstr(pg_last_error(), "run past the 95 bytes of data") != NULL, "%s", pg_last_error());
    cr_assert_eq(pg_module_load(NULL, path, false, &r), -1);
    cr_assert(strstr(pg_last_error(), "module is NULL") != NULL);
    cr_assert_eq(pg_module_save(NULL, path), -1);
    assert_unchanged(m, &snap);
    pg_module_free(m);
    rm_tree(dir);
}
