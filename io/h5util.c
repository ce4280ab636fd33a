/* HDF5 helpers: atomic files, typed datasets and attributes, errors as ms_status_t naming the
 * file and object. HDF5's own error printing is switched off per thread. */
#include "io/h5util.h"

#include <hdf5_hl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Thread_local int quiet_done;

void ms_h5_quiet(void)
{
    if (!quiet_done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        quiet_done = 1;
    }
}

/* The innermost HDF5 error description, appended to our messages. */
static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0 && e->desc)
        snprintf((char *)data, 256, "%s", e->desc);
    return 0;
}

static const char *h5_reason(void)
{
    static _Thread_local char buf[256];
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, buf);
    return buf[0] ? buf : "HDF5 error";
}

hid_t ms_h5_fapl(void)
{
    ms_h5_quiet();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    H5Pset_file_locking(fapl, 0, 1);
#else
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
#endif
    return fapl;
}

const char *ms_h5_where(hid_t loc, const char *name)
{
    static _Thread_local char buf[1024];
    char file[600] = "?";
    char obj[300] = "";
    if (loc >= 0) {
        H5Fget_name(loc, file, sizeof file);
        H5Iget_name(loc, obj, sizeof obj);
    }
    if (!strcmp(obj, "/"))
        obj[0] = 0;
    if (name)
        snprintf(buf, sizeof buf, "%s:%s/%s", file, obj, name);
    else
        snprintf(buf, sizeof buf, "%s:%s", file, obj[0] ? obj : "/");
    return buf;
}

ms_status_t ms_h5_create(ms_h5file_t *f, const char *path)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    memset(f, 0, sizeof *f);
    f->id = H5I_INVALID_HID;
    size_t n = strlen(path);
    f->path = strdup(path);
    f->tmp = malloc(n + 48);
    if (!f->path || !f->tmp)
        MS_FAIL(MS_ENOMEM, "out of memory creating %s", path);
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path + 1) : 0;
    snprintf(f->tmp, n + 48, "%.*s.%s.tmp.%ld", (int)dirlen, path, path + dirlen, (long)getpid());
    hid_t fapl = ms_h5_fapl();
    f->id = H5Fcreate(f->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f->id < 0)
        MS_FAIL(MS_EIO, "cannot create %s (temporary name %s): %s", path, f->tmp, h5_reason());
done:
    if (st != MS_OK) {
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
    }
    return st;
}

ms_status_t ms_h5_commit(ms_h5file_t *f)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    if (!f->tmp)
        return MS_ERR(MS_EINTERNAL, "commit of a file that is not open");
    if (H5Fflush(f->id, H5F_SCOPE_GLOBAL) < 0 || H5Fclose(f->id) < 0) {
        f->id = H5I_INVALID_HID;
        MS_FAIL(MS_EIO, "cannot write %s: %s", f->path, h5_reason());
    }
    f->id = H5I_INVALID_HID;
    if (rename(f->tmp, f->path) != 0)
        MS_FAIL(MS_EIO, "cannot rename %s to %s: %m", f->tmp, f->path);
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
done:
    if (st != MS_OK)
        ms_h5_abort(f);
    return st;
}

void ms_h5_abort(ms_h5file_t *f)
{
    ms_h5_quiet();
    if (f->id > 0)
        H5Fclose(f->id);
    f->id = H5I_INVALID_HID;
    if (f->tmp)
        unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
}

ms_status_t ms_h5_open(hid_t *fid, const char *path)
{
    ms_h5_quiet();
    if (access(path, R_OK) != 0)
        return MS_ERR(MS_EIO, "cannot read %s: %m", path);
    if (H5Fis_hdf5(path) <= 0)
        return MS_ERR(MS_EFORMAT, "%s is not an HDF5 file (or it is truncated)", path);
    hid_t fapl = ms_h5_fapl();
    *fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (*fid < 0)
        return MS_ERR(MS_EFORMAT, "cannot open %s: %s", path, h5_reason());
    return MS_OK;
}

int ms_h5_exists(hid_t loc, const char *path)
{
    ms_h5_quiet();
    /* H5Lexists fails on a missing intermediate group: check each prefix. */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + (buf[0] == '/'); ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
                return 0;
            if (!c)
                return 1;
            *p = c;
        }
    }
}

ms_status_t ms_h5_write(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t *dims,
                        const void *data, const hsize_t *chunk, int deflate)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    hid_t space = H5I_INVALID_HID, dcpl = H5I_INVALID_HID, lcpl = H5I_INVALID_HID;
    hid_t ds = H5I_INVALID_HID;
    space = H5Screate_simple(rank, dims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0); /* no timestamps: same content, same bytes */
    lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (space < 0 || dcpl < 0 || lcpl < 0)
        MS_FAIL(MS_EIO, "cannot prepare %s: %s", ms_h5_where(loc, name), h5_reason());
    H5Pset_create_intermediate_group(lcpl, 1);
    hsize_t total = 1;
    for (int d = 0; d < rank; d++)
        total *= dims[d];
    if (chunk && total > 0) {
        if (H5Pset_chunk(dcpl, rank, chunk) < 0)
            MS_FAIL(MS_EARG, "bad chunk shape for %s", ms_h5_where(loc, name));
        if (deflate > 0) {
            H5Pset_shuffle(dcpl);
            H5Pset_deflate(dcpl, (unsigned)deflate);
        }
    }
    ds = H5Dcreate2(loc, name, memtype, space, lcpl, dcpl, H5P_DEFAULT);
    if (ds < 0)
        MS_FAIL(MS_EIO, "cannot create %s: %s", ms_h5_where(loc, name), h5_reason());
    if (total > 0 && H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        MS_FAIL(MS_EIO, "cannot write %s: %s", ms_h5_where(loc, name), h5_reason());
done:
    if (ds >= 0)
        H5Dclose(ds);
    if (space >= 0)
        H5Sclose(space);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    return st;
}

ms_status_t ms_h5_dims(hid_t loc, const char *name, int *rank, hsize_t *dims)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    hid_t ds = H5I_INVALID_HID, space = H5I_INVALID_HID;
    if (!ms_h5_exists(loc, name))
        MS_FAIL(MS_EFORMAT, "%s is missing", ms_h5_where(loc, name));
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        MS_FAIL(MS_EFORMAT, "cannot open %s: %s", ms_h5_where(loc, name), h5_reason());
    space = H5Dget_space(ds);
    int r = H5Sget_simple_extent_ndims(space);
    if (r < 0 || r > 8)
        MS_FAIL(MS_EFORMAT, "%s has rank %d (at most 8 expected)", ms_h5_where(loc, name), r);
    H5Sget_simple_extent_dims(space, dims, NULL);
    *rank = r;
done:
    if (space >= 0)
        H5Sclose(space);
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

static void dims_text(char *buf, size_t n, int rank, const hsize_t *dims)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int d = 0; d < rank && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%llu", d ? ", " : "",
                              (unsigned long long)dims[d]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

ms_status_t ms_h5_read(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t *dims,
                       void *buf)
{
    ms_status_t st = MS_OK;
    hid_t ds = H5I_INVALID_HID;
    int r;
    hsize_t have[8];
    MS_TRY(ms_h5_dims(loc, name, &r, have));
    int same = r == rank;
    for (int d = 0; same && d < rank; d++)
        same = have[d] == dims[d];
    if (!same) {
        char a[128], b[128];
        dims_text(a, sizeof a, r, have);
        dims_text(b, sizeof b, rank, dims);
        MS_FAIL(MS_ESHAPE, "%s has shape %s, expected %s", ms_h5_where(loc, name), a, b);
    }
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0 || H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        MS_FAIL(MS_EFORMAT, "cannot read %s: %s", ms_h5_where(loc, name), h5_reason());
done:
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

ms_status_t ms_h5_label_dims(hid_t loc, const char *name, const char *const *labels)
{
    ms_status_t st = MS_OK;
    int rank;
    hsize_t dims[8];
    hid_t ds = H5I_INVALID_HID;
    MS_TRY(ms_h5_dims(loc, name, &rank, dims));
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        MS_FAIL(MS_EIO, "cannot open %s: %s", ms_h5_where(loc, name), h5_reason());
    for (int d = 0; d < rank; d++)
        if (H5DSset_label(ds, (unsigned)d, labels[d]) < 0)
            MS_FAIL(MS_EIO, "cannot label dimension %d of %s: %s", d, ms_h5_where(loc, name),
                    h5_reason());
done:
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

/* A fixed-length UTF-8 string type wide enough for every string (at least 1 byte). */
static hid_t fixed_str_type(size_t n, const char *const *s)
{
    size_t w = 1;
    for (size_t i = 0; i < n; i++) {
        size_t l = s[i] ? strlen(s[i]) + 1 : 1;
        if (l > w)
            w = l;
    }
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, w);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* Packs strings into a fixed-width buffer for writing. */
static char *pack_strings(size_t n, const char *const *s, size_t w)
{
    char *buf = calloc(n ? n : 1, w);
    if (buf)
        for (size_t i = 0; i < n; i++)
            if (s[i])
                memcpy(buf + i * w, s[i], strlen(s[i]));
    return buf;
}

ms_status_t ms_h5_write_strings(hid_t loc, const char *name, size_t n, const char *const *s)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    hid_t t = fixed_str_type(n, s);
    char *buf = pack_strings(n, s, H5Tget_size(t));
    if (!buf)
        MS_FAIL(MS_ENOMEM, "out of memory writing %s", name);
    hsize_t dims[1] = {n};
    MS_TRY(ms_h5_write(loc, name, t, 1, dims, buf, NULL, 0));
done:
    free(buf);
    H5Tclose(t);
    return st;
}

/* Reads n strings from a dataset or attribute whose type is ftype, via rd(memtype, buf). */
typedef herr_t (*read_fn)(hid_t obj, hid_t memtype, void *buf);
static herr_t dread(hid_t obj, hid_t mt, void *buf)
{
    return H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}
static herr_t aread(hid_t obj, hid_t mt, void *buf) { return H5Aread(obj, mt, buf); }

static ms_status_t read_strings_obj(hid_t obj, hid_t ftype, hid_t space, read_fn rd, size_t n,
                                    const char *what, char ***out)
{
    ms_status_t st = MS_OK;
    char **res = NULL;
    char *raw = NULL;
    hid_t mt = H5I_INVALID_HID;
    if (H5Tget_class(ftype) != H5T_STRING)
        MS_FAIL(MS_EFORMAT, "%s is not a string", what);
    MS_ALLOC(res, n ? n : 1, "strings");
    if (H5Tis_variable_str(ftype) > 0) {
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ftype));
        char **v = NULL;
        MS_ALLOC(v, n ? n : 1, "strings");
        if (rd(obj, mt, v) < 0) {
            free(v);
            MS_FAIL(MS_EFORMAT, "cannot read %s: %s", what, h5_reason());
        }
        for (size_t i = 0; i < n; i++)
            res[i] = strdup(v[i] ? v[i] : "");
        H5Dvlen_reclaim(mt, space, H5P_DEFAULT, v);
        free(v);
    } else {
        size_t w = H5Tget_size(ftype);
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, w + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        H5Tset_cset(mt, H5Tget_cset(ftype));
        MS_ALLOC(raw, (n ? n : 1) * (w + 1), "strings");
        if (rd(obj, mt, raw) < 0)
            MS_FAIL(MS_EFORMAT, "cannot read %s: %s", what, h5_reason());
        for (size_t i = 0; i < n; i++)
            res[i] = strndup(raw + i * (w + 1), w);
    }
    for (size_t i = 0; i < n; i++)
        if (!res[i])
            MS_FAIL(MS_ENOMEM, "out of memory reading %s", what);
    *out = res;
    res = NULL;
done:
    if (res)
        ms_h5_free_strings(res, n);
    free(raw);
    if (mt >= 0)
        H5Tclose(mt);
    return st;
}

ms_status_t ms_h5_read_strings(hid_t loc, const char *name, size_t n, char ***out)
{
    ms_status_t st = MS_OK;
    hid_t ds = H5I_INVALID_HID, ft = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    int r;
    hsize_t dims[8];
    MS_TRY(ms_h5_dims(loc, name, &r, dims));
    if (r != 1 || dims[0] != n)
        MS_FAIL(MS_ESHAPE, "%s has %s%llu entries, expected %zu", ms_h5_where(loc, name),
                r != 1 ? "rank != 1 or " : "", (unsigned long long)dims[0], n);
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    ft = H5Dget_type(ds);
    sp = H5Dget_space(ds);
    MS_TRY(read_strings_obj(ds, ft, sp, dread, n, ms_h5_where(loc, name), out));
done:
    if (sp >= 0)
        H5Sclose(sp);
    if (ft >= 0)
        H5Tclose(ft);
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

void ms_h5_free_strings(char **s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

/* Creates (replacing) attribute name of type t and shape space, writes buf. */
static ms_status_t attr_write(hid_t loc, const char *name, hid_t t, hid_t space, const void *buf)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    if (H5Aexists(loc, name) > 0)
        H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, t, buf) < 0)
        st = MS_ERR(MS_EIO, "cannot write attribute %s: %s", ms_h5_where(loc, name),
                    h5_reason());
    if (a >= 0)
        H5Aclose(a);
    return st;
}

ms_status_t ms_h5_attr_set_str(hid_t loc, const char *name, const char *value)
{
    const char *v[1] = {value};
    hid_t t = fixed_str_type(1, v);
    hid_t sp = H5Screate(H5S_SCALAR);
    char *buf = pack_strings(1, v, H5Tget_size(t));
    ms_status_t st = buf ? attr_write(loc, name, t, sp, buf)
                         : MS_ERR(MS_ENOMEM, "out of memory writing %s", name);
    free(buf);
    H5Sclose(sp);
    H5Tclose(t);
    return st;
}

ms_status_t ms_h5_attr_set_strings(hid_t loc, const char *name, size_t n, const char *const *s)
{
    hid_t t = fixed_str_type(n, s);
    hsize_t dims[1] = {n};
    hid_t sp = n ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_NULL);
    char *buf = pack_strings(n, s, H5Tget_size(t));
    ms_status_t st = buf ? attr_write(loc, name, t, sp, buf)
                         : MS_ERR(MS_ENOMEM, "out of memory writing %s", name);
    free(buf);
    H5Sclose(sp);
    H5Tclose(t);
    return st;
}

ms_status_t ms_h5_attr_set_int(hid_t loc, const char *name, long long value)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    ms_status_t st = attr_write(loc, name, H5T_NATIVE_LLONG, sp, &value);
    H5Sclose(sp);
    return st;
}

ms_status_t ms_h5_attr_set_double(hid_t loc, const char *name, double value)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    ms_status_t st = attr_write(loc, name, H5T_NATIVE_DOUBLE, sp, &value);
    H5Sclose(sp);
    return st;
}

int ms_h5_attr_exists(hid_t loc, const char *name)
{
    ms_h5_quiet();
    return H5Aexists(loc, name) > 0;
}

/* Opens attribute name; *npoints its element count. */
static ms_status_t attr_open(hid_t loc, const char *name, hid_t *a, hid_t *t, hid_t *sp,
                             size_t *npoints)
{
    ms_h5_quiet();
    if (H5Aexists(loc, name) <= 0)
        return MS_ERR(MS_EFORMAT, "attribute %s is missing", ms_h5_where(loc, name));
    *a = H5Aopen(loc, name, H5P_DEFAULT);
    if (*a < 0)
        return MS_ERR(MS_EFORMAT, "cannot open attribute %s: %s", ms_h5_where(loc, name),
                      h5_reason());
    *t = H5Aget_type(*a);
    *sp = H5Aget_space(*a);
    hssize_t np = H5Sget_simple_extent_npoints(*sp);
    *npoints = np > 0 ? (size_t)np : 0;
    return MS_OK;
}

static void attr_close(hid_t a, hid_t t, hid_t sp)
{
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
}

ms_status_t ms_h5_attr_get_strings(hid_t loc, const char *name, size_t *n, char ***out)
{
    ms_status_t st = MS_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    size_t np = 0;
    MS_TRY(attr_open(loc, name, &a, &t, &sp, &np));
    if (H5Sget_simple_extent_type(sp) == H5S_NULL)
        np = 0;
    char what[1024];
    snprintf(what, sizeof what, "attribute %s", ms_h5_where(loc, name));
    MS_TRY(read_strings_obj(a, t, sp, aread, np, what, out));
    *n = np;
done:
    attr_close(a, t, sp);
    return st;
}

ms_status_t ms_h5_attr_get_str(hid_t loc, const char *name, char **out)
{
    ms_status_t st = MS_OK;
    char **s = NULL;
    size_t n = 0;
    MS_TRY(ms_h5_attr_get_strings(loc, name, &n, &s));
    if (n != 1)
        MS_FAIL(MS_EFORMAT, "attribute %s has %zu strings, expected one",
                ms_h5_where(loc, name), n);
    *out = s[0];
    s[0] = NULL;
done:
    ms_h5_free_strings(s, n);
    return st;
}

static ms_status_t attr_get_num(hid_t loc, const char *name, hid_t mt, void *out)
{
    ms_status_t st = MS_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    size_t np = 0;
    MS_TRY(attr_open(loc, name, &a, &t, &sp, &np));
    H5T_class_t c = H5Tget_class(t);
    if (np != 1 || (c != H5T_INTEGER && c != H5T_FLOAT))
        MS_FAIL(MS_EFORMAT, "attribute %s is not a single number", ms_h5_where(loc, name));
    if (H5Aread(a, mt, out) < 0)
        MS_FAIL(MS_EFORMAT, "cannot read attribute %s: %s", ms_h5_where(loc, name),
                h5_reason());
done:
    attr_close(a, t, sp);
    return st;
}

ms_status_t ms_h5_attr_get_int(hid_t loc, const char *name, long long *out)
{
    return attr_get_num(loc, name, H5T_NATIVE_LLONG, out);
}

ms_status_t ms_h5_attr_get_double(hid_t loc, const char *name, double *out)
{
    return attr_get_num(loc, name, H5T_NATIVE_DOUBLE, out);
}

ms_status_t ms_h5_attr_get_doubles(hid_t loc, const char *name, size_t n, double *out)
{
    ms_status_t st = MS_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    size_t np = 0;
    MS_TRY(attr_open(loc, name, &a, &t, &sp, &np));
    H5T_class_t c = H5Tget_class(t);
    if (np != n || (c != H5T_INTEGER && c != H5T_FLOAT))
        MS_FAIL(MS_EFORMAT, "attribute %s holds %zu values%s; expected %zu numbers",
                ms_h5_where(loc, name), np,
                c == H5T_INTEGER || c == H5T_FLOAT ? "" : ", not numbers", n);
    if (H5Aread(a, H5T_NATIVE_DOUBLE, out) < 0)
        MS_FAIL(MS_EFORMAT, "cannot read attribute %s: %s", ms_h5_where(loc, name),
                h5_reason());
done:
    attr_close(a, t, sp);
    return st;
}
