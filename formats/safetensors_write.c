/* Writing safetensors files (the format: safetensors.h). The header is
 * produced in the same compact form as Python's json.dumps(...,
 * separators=(",", ":")) (non-ASCII escaped as \uXXXX), padded with spaces to
 * a multiple of 8, and written with the data to PATH.tmp, which is fsynced
 * and renamed over PATH; the directory is fsynced after the rename. */
#include "safetensors_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Names must be unique; tensor names must also be non-empty UTF-8 other than
 * __metadata__, metadata keys UTF-8. */
static int check_names(const pg_fmt_ctx *c, const char *what, int n, const char *const *names, bool tensors)
{
    char s[PG_FMT_NAME_SHOW + 8];
    for (int i = 0; i < n; i++) {
        if (!names[i] || !pg_utf8_valid(names[i]) || (tensors && (!names[i][0] || !strcmp(names[i], "__metadata__")))) {
            pg_fmt_fail(c, "%s %d (\"%s\") is %s", what, i, names[i] ? pg_fmt_show(names[i], s, sizeof s) : "(null)",
                        tensors ? "NULL, empty, not UTF-8 or the reserved __metadata__" : "NULL or not UTF-8");
            return -1;
        }
    }
    int dup = pg_fmt_find_duplicate(n, names);
    if (dup == -2)
        pg_fmt_fail(c, "out of memory");
    else if (dup >= 0)
        pg_fmt_fail(c, "%s \"%s\" appears twice", what, pg_fmt_show(names[dup], s, sizeof s));
    return dup == -1 ? 0 : -1;
}

static int check_save_args(const pg_fmt_ctx *c, const pg_tensor_list *l, int n_meta, const char *const *mk,
                           const char *const *mv)
{
    if (!l || (l->n > 0 && (!l->names || !l->tensors))) {
        pg_fmt_fail(c, "tensor list is NULL");
        return -1;
    }
    if (n_meta < 0 || (n_meta > 0 && (!mk || !mv))) {
        pg_fmt_fail(c, "bad metadata: n_meta %d with keys %p and values %p", n_meta, (const void *)mk,
                    (const void *)mv);
        return -1;
    }
    for (int i = 0; i < l->n; i++) {
        const pg_tensor *t = l->tensors[i];
        if (!t || (!t->data && t->numel > 0) || !pg_st_dtype_name(t->dtype)) {
            pg_fmt_fail(c, "tensor %d is NULL or has no data", i);
            return -1;
        }
    }
    for (int i = 0; i < n_meta; i++)
        if (!mv[i] || !pg_utf8_valid(mv[i])) {
            pg_fmt_fail(c, "metadata value %d is NULL or not UTF-8", i);
            return -1;
        }
    if (check_names(c, "tensor name", l->n, (const char *const *)l->names, true) != 0)
        return -1;
    return check_names(c, "metadata key", n_meta, mk, false);
}

/* The JSON header (unpadded), in st_io.save's order: tensors, then __metadata__. */
static int build_header(const pg_tensor_list *l, int n_meta, const char *const *mk, const char *const *mv,
                        pg_json_buf *b)
{
    uint64_t off = 0;
    pg_json_buf_chr(b, '{');
    for (int i = 0; i < l->n; i++) {
        const pg_tensor *t = l->tensors[i];
        uint64_t bytes = (uint64_t)t->numel * pg_dtype_size(t->dtype);
        if (i)
            pg_json_buf_chr(b, ',');
        pg_json_put_string(b, l->names[i]);
        pg_json_buf_str(b, ":{\"dtype\":\"");
        pg_json_buf_str(b, pg_st_dtype_name(t->dtype));
        pg_json_buf_str(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d)
                pg_json_buf_chr(b, ',');
            pg_json_buf_int(b, (long long)t->shape[d]);
        }
        pg_json_buf_str(b, "],\"data_offsets\":[");
        pg_json_buf_int(b, (long long)off);
        pg_json_buf_chr(b, ',');
        pg_json_buf_int(b, (long long)(off + bytes));
        pg_json_buf_str(b, "]}");
        off += bytes;
    }
    if (n_meta > 0) {
        pg_json_buf_str(b, l->n ? ",\"__metadata__\":{" : "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i)
                pg_json_buf_chr(b, ',');
            pg_json_put_string(b, mk[i]);
            pg_json_buf_chr(b, ':');
            pg_json_put_string(b, mv[i]);
        }
        pg_json_buf_chr(b, '}');
    }
    pg_json_buf_chr(b, '}');
    while (b->n % 8)
        pg_json_buf_chr(b, ' '); /* padding, as the reference writer does */
    return b->oom ? -1 : 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The length, the header and every tensor's bytes (BOOL normalised to 0/1). */
static int write_body(int fd, const pg_tensor_list *l, const pg_json_buf *hdr)
{
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hdr->n >> (8 * i));
    if (write_all(fd, len8, 8) != 0 || write_all(fd, hdr->p, hdr->n) != 0)
        return -1;
    for (int i = 0; i < l->n; i++) {
        const pg_tensor *t = l->tensors[i];
        if (t->dtype != PG_BOOL) {
            if (write_all(fd, t->data, (size_t)t->numel * pg_dtype_size(t->dtype)) != 0)
                return -1;
            continue;
        }
        const uint8_t *src = t->data;
        unsigned char chunk[4096];
        for (int64_t at = 0; at < t->numel;) {
            size_t k = 0;
            for (; k < sizeof chunk && at < t->numel; k++, at++)
                chunk[k] = src[at] != 0;
            if (write_all(fd, chunk, k) != 0)
                return -1;
        }
    }
    return 0;
}

/* Makes a rename durable: fsync of the directory holding path (best effort:
 * some file systems refuse it, and the data itself is already synced). */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? malloc((size_t)(slash - path) + 2) : pg_fmt_strdup(".");
    if (!dir)
        return;
    if (slash) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Writes PATH.tmp, fsyncs it and renames it over PATH; removes it on failure. */
static int write_atomic(const pg_fmt_ctx *c, const char *path, const pg_tensor_list *l, const pg_json_buf *hdr)
{
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) {
        pg_fmt_fail(c, "out of memory");
        return -1;
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    /* a stale PATH.tmp (an earlier crash) is replaced; a symlink there is refused */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) {
        pg_fmt_fail(c, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    const char *step = NULL;
    errno = 0;
    if (write_body(fd, l, hdr) != 0)
        step = "cannot write";
    else if (fsync(fd) != 0)
        step = "cannot sync";
    int err = errno ? errno : EIO;
    if (close(fd) != 0 && !step) {
        step = "cannot close";
        err = errno;
    }
    if (!step && rename(tmp, path) != 0) {
        step = "cannot rename over the target";
        err = errno;
    }
    if (step) {
        pg_fmt_fail(c, "%s %s: %s", step, tmp, strerror(err));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    sync_dir(path);
    return 0;
}

int pg_st_save(const pg_fmt_ctx *c, const char *path, const pg_tensor_list *l, int n_meta, const char *const *mk,
               const char *const *mv)
{
    if (!path || !path[0]) {
        pg_fmt_fail(c, "path is NULL or empty");
        return -1;
    }
    if (check_save_args(c, l, n_meta, mk, mv) != 0)
        return -1;
    pg_json_buf hdr = {0};
    if (build_header(l, n_meta, mk, mv, &hdr) != 0) {
        free(hdr.p);
        pg_fmt_fail(c, "out of memory for the header");
        return -1;
    }
    if (hdr.n > PG_ST_MAX_HEADER) {
        pg_fmt_fail(c, "the header would have %zu bytes, more than the %llu a reader accepts", hdr.n, PG_ST_MAX_HEADER);
        free(hdr.p);
        return -1;
    }
    int rc = write_atomic(c, path, l, &hdr);
    free(hdr.p);
    return rc;
}

int pg_safetensors_save(const char *path, const pg_tensor_list *l, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values)
{
    pg_fmt_ctx c = {"pg_safetensors_save", path ? path : "(null)"};
    return pg_st_save(&c, path, l, n_meta, meta_keys, meta_values);
}
