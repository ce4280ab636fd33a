/* Score outputs, read through plain HDF5, and the parts of input shards that evaluation and
 * rendering need, through io/shard.h. Strings may be variable- or fixed-length (h5py writes
 * the former, many tools the latter); HDF5 converts numbers to the native type asked for. */
#include "pipeline/eval/evalio.h"

#include "io/h5util.h"
#include "io/shard.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#define MS_H5CK(call, ...)                                                             \
    do {                                                                               \
        if ((call) < 0)                                                                \
            MS_FAIL(MS_EFORMAT, __VA_ARGS__);                                          \
    } while (0)

/* Opening, existence and shapes go through io/h5util (file locking off for Lustre and NFS,
 * HDF5's own error printing silenced); strings and attributes are read here because score
 * files from other tools may hold class names as one separated string. */
static int exists(hid_t f, const char *path) { return ms_h5_exists(f, path); }

static ms_status_t dims_of(hid_t f, const char *file, const char *name, int *rank,
                           hsize_t dims[4])
{
    hsize_t d[8];
    ms_status_t st = ms_h5_dims(f, name, rank, d);
    if (st)
        return st;
    if (*rank < 1 || *rank > 4)
        return MS_ERR(MS_EFORMAT, "%s: %s has rank %d (expected 1 to 4)", file, name, *rank);
    memcpy(dims, d, sizeof(hsize_t) * (size_t)*rank);
    return MS_OK;
}

/* Reads a whole numeric dataset converted to mtype into a new buffer of `count` elements
 * (the caller has checked the shape). */
static ms_status_t read_all(hid_t f, const char *file, const char *name, hid_t mtype,
                            size_t elem, size_t count, void **out)
{
    ms_status_t st = MS_OK;
    hid_t d = -1;
    *out = calloc(count ? count : 1, elem);
    if (!*out)
        MS_FAIL(MS_ENOMEM, "out of memory reading %s from %s", name, file);
    MS_H5CK(d = H5Dopen2(f, name, H5P_DEFAULT), "%s: cannot open dataset %s", file, name);
    MS_H5CK(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out),
            "%s: cannot read %s as %s", file, name, mtype == H5T_NATIVE_FLOAT ? "float" : "int");
done:
    if (d >= 0)
        H5Dclose(d);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

static void free_strings(char **s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

/* n strings from a dataset (is_attr 0) or an attribute (1) of type ftype, variable- or
 * fixed-length, into malloc'd C strings. */
static ms_status_t read_strings(hid_t obj, int is_attr, hid_t ftype, size_t n, const char *what,
                                char ***out)
{
    ms_status_t st = MS_OK;
    hid_t mt = -1;
    char **res = NULL, **vl = NULL, *fixed = NULL;
    MS_ALLOC(res, n, what);
    int vlen = H5Tis_variable_str(ftype) > 0;
    MS_H5CK(mt = H5Tcopy(H5T_C_S1), "%s: string type", what);
    /* HDF5 does not convert between ASCII and UTF-8 (h5py writes UTF-8): read as stored. */
    MS_H5CK(H5Tset_cset(mt, H5Tget_cset(ftype)), "%s: string type", what);
    if (vlen) {
        MS_H5CK(H5Tset_size(mt, H5T_VARIABLE), "%s: string type", what);
        MS_ALLOC(vl, n, what);
        MS_H5CK(is_attr ? H5Aread(obj, mt, vl)
                        : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, vl),
                "cannot read the strings of %s", what);
        for (size_t i = 0; i < n; i++) {
            res[i] = strdup(vl[i] ? vl[i] : "");
            if (!res[i])
                MS_FAIL(MS_ENOMEM, "out of memory reading %s", what);
        }
    } else {
        size_t len = H5Tget_size(ftype);
        MS_H5CK(H5Tset_size(mt, len + 1), "%s: string type", what);
        MS_H5CK(H5Tset_strpad(mt, H5T_STR_NULLTERM), "%s: string type", what);
        MS_ALLOC(fixed, n * (len + 1), what);
        MS_H5CK(is_attr ? H5Aread(obj, mt, fixed)
                        : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, fixed),
                "cannot read the strings of %s", what);
        for (size_t i = 0; i < n; i++) {
            res[i] = strndup(fixed + i * (len + 1), len);
            if (!res[i])
                MS_FAIL(MS_ENOMEM, "out of memory reading %s", what);
        }
    }
    *out = res;
    res = NULL;
done:
    if (vl) {
        hid_t sp = H5Screate_simple(1, (hsize_t[]){n}, NULL);
        H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, vl);
        H5Sclose(sp);
        free(vl);
    }
    free(fixed);
    free_strings(res, n);
    if (mt >= 0)
        H5Tclose(mt);
    return st;
}

static ms_status_t dataset_strings(hid_t f, const char *file, const char *name, size_t n,
                                   char ***out)
{
    ms_status_t st = MS_OK;
    hid_t d = -1, t = -1;
    char what[512];
    snprintf(what, sizeof what, "%s in %s", name, file);
    MS_H5CK(d = H5Dopen2(f, name, H5P_DEFAULT), "%s: cannot open dataset %s", file, name);
    MS_H5CK(t = H5Dget_type(d), "%s: type", what);
    if (H5Tget_class(t) != H5T_STRING)
        MS_FAIL(MS_EFORMAT, "%s: expected strings", what);
    MS_TRY(read_strings(d, 0, t, n, what, out));
done:
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    return st;
}

/* A string attribute of the root: *n (optional) gets the count of an array attribute. NULL
 * when absent. */
static ms_status_t attr_strings(hid_t f, const char *file, const char *name, char ***out,
                                size_t *n)
{
    ms_status_t st = MS_OK;
    hid_t a = -1, t = -1, sp = -1;
    char what[512];
    *out = NULL;
    if (n)
        *n = 0;
    if (H5Aexists(f, name) <= 0)
        return MS_OK;
    snprintf(what, sizeof what, "attribute %s of %s", name, file);
    MS_H5CK(a = H5Aopen(f, name, H5P_DEFAULT), "cannot open %s", what);
    MS_H5CK(t = H5Aget_type(a), "%s: type", what);
    MS_H5CK(sp = H5Aget_space(a), "%s: dataspace", what);
    if (H5Tget_class(t) != H5T_STRING)
        MS_FAIL(MS_EFORMAT, "%s: expected text", what);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    if (cnt < 1)
        goto done;
    MS_TRY(read_strings(a, 1, t, (size_t)cnt, what, out));
    if (n)
        *n = (size_t)cnt;
done:
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return st;
}

static ms_status_t attr_string(hid_t f, const char *file, const char *name, char **out)
{
    char **v = NULL;
    size_t n = 0;
    ms_status_t st = attr_strings(f, file, name, &v, &n);
    *out = NULL;
    if (st == MS_OK && n) {
        *out = v[0];
        v[0] = NULL;
    }
    free_strings(v, n);
    return st;
}

static ms_status_t attr_long(hid_t f, const char *file, const char *name, long *out, int *found)
{
    ms_status_t st = MS_OK;
    hid_t a = -1;
    *found = 0;
    if (H5Aexists(f, name) <= 0)
        return MS_OK;
    MS_H5CK(a = H5Aopen(f, name, H5P_DEFAULT), "%s: cannot open attribute %s", file, name);
    MS_H5CK(H5Aread(a, H5T_NATIVE_LONG, out), "%s: attribute %s is not a number", file, name);
    *found = 1;
done:
    if (a >= 0)
        H5Aclose(a);
    return st;
}

static ms_status_t open_file(const char *path, hid_t *f) { return ms_h5_open(f, path); }

ms_status_t ms_scores_open(ms_scores_t *s, const char *path)
{
    ms_status_t st = MS_OK;
    hid_t f = -1;
    int rank, found;
    hsize_t d[4];
    char *fmt = NULL;
    memset(s, 0, sizeof *s);
    s->file = -1;
    MS_TRY(open_file(path, &f));
    s->file = f;
    s->path = strdup(path);
    MS_TRY(attr_string(f, path, "format", &fmt));
    if (!fmt || strcmp(fmt, "milscreen-scores"))
        MS_FAIL(MS_EFORMAT, "%s: not a milscreen score file (format attribute '%s', expected "
                "'milscreen-scores')", path, fmt ? fmt : "(none)");
    long version = 0;
    MS_TRY(attr_long(f, path, "format_version", &version, &found));
    if (!found || version != 1)
        MS_FAIL(MS_EFORMAT, "%s: score format version %ld; this milscreen reads version 1",
                path, found ? version : -1L);
    MS_TRY(dims_of(f, path, "/mil_prob", &rank, d));
    if (rank != 2 || d[1] < 1)
        MS_FAIL(MS_EFORMAT, "%s: /mil_prob must be (N, K)", path);
    s->N = (size_t)d[0];
    s->K = (int)d[1];
    size_t NK = s->N * (size_t)s->K;
    MS_TRY(read_all(f, path, "/mil_prob", H5T_NATIVE_FLOAT, sizeof(float), NK,
                    (void **)&s->mil_prob));
    if (exists(f, "/fc_prob")) {
        MS_TRY(dims_of(f, path, "/fc_prob", &rank, d));
        if (rank != 2 || d[0] != s->N || d[1] != (hsize_t)s->K)
            MS_FAIL(MS_EFORMAT, "%s: /fc_prob is not (%zu, %d) like /mil_prob", path, s->N,
                    s->K);
        MS_TRY(read_all(f, path, "/fc_prob", H5T_NATIVE_FLOAT, sizeof(float), NK,
                        (void **)&s->fc_prob));
    }
    if (exists(f, "/pred")) {
        MS_TRY(dims_of(f, path, "/pred", &rank, d));
        if (rank != 1 || d[0] != s->N)
            MS_FAIL(MS_EFORMAT, "%s: /pred is not (%zu)", path, s->N);
        MS_TRY(read_all(f, path, "/pred", H5T_NATIVE_INT, sizeof(int), s->N,
                        (void **)&s->pred));
    }
    if (exists(f, "/image_id"))
        MS_TRY(dataset_strings(f, path, "/image_id", s->N, &s->image_id));
    if (exists(f, "/maps")) {
        MS_TRY(dims_of(f, path, "/maps", &rank, d));
        if (rank != 4 || d[0] != s->N || d[1] != (hsize_t)s->K)
            MS_FAIL(MS_EFORMAT, "%s: /maps is not (%zu, %d, h, w)", path, s->N, s->K);
        s->map_h = (int)d[2];
        s->map_w = (int)d[3];
    }
    if (exists(f, "/masks")) {
        MS_TRY(dims_of(f, path, "/masks", &rank, d));
        if (rank != 3 || d[0] != s->N)
            MS_FAIL(MS_EFORMAT, "%s: /masks is not (%zu, H, W)", path, s->N);
        s->mask_h = (int)d[1];
        s->mask_w = (int)d[2];
    }
    if (exists(f, "/cells/prob")) {
        MS_TRY(dims_of(f, path, "/cells/prob", &rank, d));
        if (rank != 2 || d[1] != (hsize_t)s->K)
            MS_FAIL(MS_EFORMAT, "%s: /cells/prob is not (M, %d)", path, s->K);
        s->M = (size_t)d[0];
        MS_TRY(read_all(f, path, "/cells/prob", H5T_NATIVE_FLOAT, sizeof(float),
                        s->M * (size_t)s->K, (void **)&s->cell_prob));
        if (!exists(f, "/cells/image_index"))
            MS_FAIL(MS_EFORMAT, "%s: /cells/prob without /cells/image_index", path);
        MS_TRY(dims_of(f, path, "/cells/image_index", &rank, d));
        if (rank != 1 || d[0] != s->M)
            MS_FAIL(MS_EFORMAT, "%s: /cells/image_index is not (%zu)", path, s->M);
        MS_TRY(read_all(f, path, "/cells/image_index", H5T_NATIVE_INT, sizeof(int), s->M,
                        (void **)&s->cell_image));
    }
    MS_TRY(attr_string(f, path, "source", &s->source));
    MS_TRY(attr_string(f, path, "config", &s->config));
    char **names = NULL;
    size_t nn = 0;
    MS_TRY(attr_strings(f, path, "class_names", &names, &nn));
    if (nn == 1 && s->K > 1) {
        /* One string: names separated by commas or newlines. */
        char *all = names[0];
        free(names);
        names = calloc((size_t)s->K, sizeof *names);
        nn = 0;
        for (char *tok = strtok(all, ",\n"); tok && names && nn < (size_t)s->K;
             tok = strtok(NULL, ",\n"))
            names[nn++] = strdup(tok);
        free(all);
        if (!names)
            MS_FAIL(MS_ENOMEM, "out of memory reading class names");
    }
    if (names && nn == (size_t)s->K) {
        s->class_names = names;
        s->named = 1;
    } else {
        free_strings(names, nn);
        MS_ALLOC(s->class_names, s->K, "class names");
        for (int k = 0; k < s->K; k++) {
            char b[16];
            snprintf(b, sizeof b, "%d", k);
            s->class_names[k] = strdup(b);
        }
    }
done:
    free(fmt);
    if (st)
        ms_scores_close(s);
    return st;
}

void ms_scores_close(ms_scores_t *s)
{
    if (s->file >= 0 && s->path)
        H5Fclose((hid_t)s->file);
    free(s->path);
    free_strings(s->image_id, s->N);
    free(s->mil_prob);
    free(s->fc_prob);
    free(s->pred);
    free(s->cell_prob);
    free(s->cell_image);
    free(s->source);
    free(s->config);
    free_strings(s->class_names, (size_t)s->K);
    memset(s, 0, sizeof *s);
    s->file = -1;
}

/* Reads one block [start, start + count) of an n-dimensional dataset. */
static ms_status_t read_block(hid_t f, const char *file, const char *name, int rank,
                              const hsize_t *start, const hsize_t *count, hid_t mtype, void *out)
{
    ms_status_t st = MS_OK;
    hid_t d = -1, fs = -1, ms = -1;
    hsize_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= count[i];
    MS_H5CK(d = H5Dopen2(f, name, H5P_DEFAULT), "%s: cannot open dataset %s", file, name);
    MS_H5CK(fs = H5Dget_space(d), "%s: %s: dataspace", file, name);
    MS_H5CK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL),
            "%s: %s: selecting a block", file, name);
    MS_H5CK(ms = H5Screate_simple(1, &n, NULL), "%s: %s: memory space", file, name);
    MS_H5CK(H5Dread(d, mtype, ms, fs, H5P_DEFAULT, out), "%s: cannot read a block of %s", file,
            name);
done:
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    if (d >= 0)
        H5Dclose(d);
    return st;
}

ms_status_t ms_scores_read_map(const ms_scores_t *s, size_t i, int k, float *out)
{
    if (!s->map_h)
        return MS_ERR(MS_EFORMAT, "%s has no /maps", s->path);
    if (i >= s->N || k < 0 || k >= s->K)
        return MS_ERR(MS_EARG, "%s: map of image %zu class %d out of range (%zu images, %d "
                      "classes)", s->path, i, k, s->N, s->K);
    hsize_t start[4] = {i, (hsize_t)k, 0, 0}, count[4] = {1, 1, s->map_h, s->map_w};
    return read_block(s->file, s->path, "/maps", 4, start, count, H5T_NATIVE_FLOAT, out);
}

ms_status_t ms_scores_read_mask(const ms_scores_t *s, size_t i, uint8_t *out)
{
    if (!s->mask_h)
        return MS_ERR(MS_EFORMAT, "%s has no /masks", s->path);
    if (i >= s->N)
        return MS_ERR(MS_EARG, "%s: mask of image %zu out of range (%zu images)", s->path, i,
                      s->N);
    hsize_t start[3] = {i, 0, 0}, count[3] = {1, s->mask_h, s->mask_w};
    ms_status_t st = read_block(s->file, s->path, "/masks", 3, start, count, H5T_NATIVE_UINT8,
                                out);
    for (size_t j = 0; st == MS_OK && j < (size_t)s->mask_h * s->mask_w; j++)
        out[j] = out[j] != 0;
    return st;
}

ms_status_t ms_shard_view_open(ms_shard_view_t *v, const char *path)
{
    ms_status_t st = MS_OK;
    memset(v, 0, sizeof *v);
    MS_TRY(ms_shard_open(&v->shard, path));
    ms_shard_t *sh = v->shard;
    if (!(v->path = strdup(path)))
        MS_FAIL(MS_ENOMEM, "out of memory opening %s", path);
    v->N = (size_t)ms_shard_count(sh);
    v->C = ms_shard_channels(sh);
    v->H = ms_shard_height(sh);
    v->W = ms_shard_width(sh);
    v->K = ms_shard_classes(sh);
    const int K = v->K;
    MS_ALLOC(v->image_id, v->N, "image ids");
    MS_ALLOC(v->treatment, v->N, "treatments");
    MS_ALLOC(v->replicate, v->N, "replicates");
    if (ms_shard_multi_label(sh))
        MS_ALLOC(v->labels, v->N * K, "labels");
    else
        MS_ALLOC(v->label, v->N, "labels");
    for (size_t i = 0; i < v->N; i++) {
        const ms_image_meta_t *m = ms_shard_meta(sh, (int)i);
        v->image_id[i] = strdup(m->image_id ? m->image_id : "");
        v->treatment[i] = strdup(m->treatment ? m->treatment : "");
        v->replicate[i] = m->replicate;
        if (!v->image_id[i] || !v->treatment[i])
            MS_FAIL(MS_ENOMEM, "out of memory reading %s", path);
        if (v->label) {
            v->label[i] = ms_shard_label(sh, (int)i);
        } else {
            int known = ms_shard_labelled(sh, (int)i);
            const uint8_t *row = ms_shard_labels(sh, (int)i);
            for (int k = 0; k < K; k++)
                v->labels[i * K + k] = known ? row[k] : -1;
        }
    }
    if (ms_shard_has_cells(sh)) {
        ms_cells_t c;
        MS_TRY(ms_shard_cells(sh, &c));
        v->M = (size_t)c.n;
        MS_ALLOC(v->cell_image, v->M, "cells");
        MS_ALLOC(v->cell_label, v->M, "cells");
        for (size_t j = 0; j < v->M; j++) {
            v->cell_image[j] = c.image_index[j];
            v->cell_label[j] = c.label ? c.label[j] : -1;
        }
    }
    v->has_masks = ms_shard_has_masks(sh);
    MS_ALLOC(v->class_names, K, "class names");
    for (int k = 0; k < K; k++)
        if (!(v->class_names[k] = strdup(ms_shard_class_name(sh, k))))
            MS_FAIL(MS_ENOMEM, "out of memory reading %s", path);
    MS_ALLOC(v->channel_names, v->C, "channel names");
    for (int c = 0; c < v->C; c++) {
        const char *name = ms_shard_channel_name(sh, c);
        if (!(v->channel_names[c] = strdup(name ? name : "")))
            MS_FAIL(MS_ENOMEM, "out of memory reading %s", path);
    }
done:
    if (st)
        ms_shard_view_close(v);
    return st;
}

void ms_shard_view_close(ms_shard_view_t *v)
{
    if (v->shard)
        ms_shard_close(v->shard);
    free(v->path);
    free_strings(v->image_id, v->N);
    free_strings(v->treatment, v->N);
    free(v->replicate);
    free(v->label);
    free(v->labels);
    free(v->cell_image);
    free(v->cell_label);
    free_strings(v->channel_names, (size_t)v->C);
    free_strings(v->class_names, (size_t)v->K);
    memset(v, 0, sizeof *v);
}

ms_status_t ms_shard_view_image(const ms_shard_view_t *v, size_t i, float *out)
{
    ms_status_t st = MS_OK;
    uint16_t *pix = NULL; /* (C, H, W) */
    if (i >= v->N)
        MS_FAIL(MS_EARG, "%s: image %zu out of range (%zu images)", v->path, i, v->N);
    size_t n = (size_t)v->C * v->H * v->W;
    MS_ALLOC(pix, n, "image");
    MS_TRY(ms_shard_read(v->shard, (int)i, pix));
    for (size_t j = 0; j < n; j++)
        out[j] = pix[j];
done:
    free(pix);
    return st;
}

ms_status_t ms_shard_view_mask(const ms_shard_view_t *v, size_t i, uint8_t *out)
{
    ms_status_t st = MS_OK;
    uint16_t *lab = NULL; /* (H, W) cell ids */
    if (!v->has_masks)
        MS_FAIL(MS_EFORMAT, "%s has no /masks", v->path);
    if (i >= v->N)
        MS_FAIL(MS_EARG, "%s: mask %zu out of range (%zu images)", v->path, i, v->N);
    size_t hw = (size_t)v->H * v->W;
    MS_ALLOC(lab, hw, "true mask");
    MS_TRY(ms_shard_read_mask(v->shard, (int)i, lab));
    for (size_t j = 0; j < hw; j++)
        out[j] = lab[j] != 0;
done:
    free(lab);
    return st;
}
