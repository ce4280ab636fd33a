/* Shard reader and writer. Pixels are written as pre-compressed chunks (shuffle + libdeflate's
 * zlib stream, exactly what HDF5's shuffle and deflate filters produce, so h5py reads them) and
 * read back by pread of the chunk's bytes at the address HDF5 reports, then inflated and
 * unshuffled in the calling thread: HDF5 is only asked where a chunk lies. */
#include "io/shard.h"

#include <fcntl.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/h5util.h"

struct ms_shard {
    char *path;
    hid_t file, images, masks;
    int fd;
    hsize_t userblock;
    int n, c, h, w, k, multi;
    ms_pixel_t dtype;
    ms_comp_t comp;
    int shuffle;
    int raw_ok; /* chunked (1, C, th, tw) with no filters or shuffle+deflate / deflate only,
                 * little-endian */
    int th, tw; /* chunk tile */
    char **class_names, **channel_names;
    ms_image_meta_t *meta; /* (N) */
    uint8_t *labels;       /* (N, K) */
    uint8_t *known;        /* (N) */
    int has_cells;
    ms_cells_t cells;
    int32_t *cell_buf[3];
    float *cell_xy[2];
};

/* An HDF5 built without --enable-threadsafe (Debian's is threadsafe) must not be entered by
 * two threads at once: then the raw read path takes this lock around its one HDF5 call.
 * Other HDF5 calls (open, H5Dread) happen on the caller's thread only. */
static int h5_threadsafe;
static pthread_once_t ts_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t h5_mu = PTHREAD_MUTEX_INITIALIZER;
static void check_threadsafe(void)
{
    hbool_t ts = 0;
    h5_threadsafe = H5is_library_threadsafe(&ts) >= 0 && ts;
}

int ms_hdf5_threadsafe(void)
{
    pthread_once(&ts_once, check_threadsafe);
    return h5_threadsafe;
}

/* Time spent inside HDF5 (behind its global lock) on the raw read path, for bench --io. */
static _Atomic uint64_t locked_ns;
double ms_shard_hdf5_seconds(void) { return 1e-9 * (double)atomic_load(&locked_ns); }

/* ------------------------------------------------------------------ per-thread scratch */

typedef struct {
    uint8_t *a, *b; /* compressed bytes, decoded chunk */
    size_t na, nb;
    struct libdeflate_decompressor *dec;
} scratch_t;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    scratch_t *s = p;
    if (!s)
        return;
    free(s->a);
    free(s->b);
    if (s->dec)
        libdeflate_free_decompressor(s->dec);
    free(s);
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

static scratch_t *scratch_get(size_t na, size_t nb)
{
    pthread_once(&scratch_once, scratch_init);
    scratch_t *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        s->dec = libdeflate_alloc_decompressor();
        pthread_setspecific(scratch_key, s);
        if (!s->dec)
            return NULL;
    }
    if (s->na < na) {
        free(s->a);
        s->a = malloc(na);
        s->na = s->a ? na : 0;
        if (!s->a)
            return NULL;
    }
    if (s->nb < nb) {
        free(s->b);
        s->b = malloc(nb);
        s->nb = s->b ? nb : 0;
        if (!s->b)
            return NULL;
    }
    return s;
}

/* HDF5's shuffle filter: byte j of element i goes to j * n + i. */
static void shuffle2(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[2 * i];
        dst[n + i] = src[2 * i + 1];
    }
}

static void unshuffle2(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = src[i];
        dst[2 * i + 1] = src[n + i];
    }
}

/* ------------------------------------------------------------------ limits */

static _Atomic uint64_t max_image_pixels = MS_MAX_IMAGE_PIXELS_DEFAULT;

void ms_io_set_max_image_pixels(uint64_t n) { atomic_store(&max_image_pixels, n); }
uint64_t ms_io_max_image_pixels(void) { return atomic_load(&max_image_pixels); }

ms_status_t ms_io_check_image_size(const char *path, uint64_t c, uint64_t h, uint64_t w,
                                   unsigned bytes_per_sample)
{
    uint64_t lim = ms_io_max_image_pixels();
    if (!c || !h || !w)
        return MS_ERR(MS_EFORMAT, "%s: declares an empty image (%llu x %llu pixels, %llu "
                      "channels)", path, (unsigned long long)w, (unsigned long long)h,
                      (unsigned long long)c);
    if (h > lim || w > lim || h * w > lim) {
        double gib = (double)c * (double)h * (double)w * bytes_per_sample / (1024.0 * 1024 * 1024);
        return MS_ERR(MS_EFORMAT, "%s: declares %llu x %llu pixels x %llu channels (%.1f GiB "
                      "per image), over the limit of %llu pixels per plane; if the file is "
                      "right, raise it with --max-image-pixels", path, (unsigned long long)w,
                      (unsigned long long)h, (unsigned long long)c, gib,
                      (unsigned long long)lim);
    }
    /* under the plane limit, many channels can still ask for more than the machine has */
    return ms_io_check_memory(path, "one image", (double)c * (double)h * (double)w *
                                                     bytes_per_sample);
}

/* ------------------------------------------------------------------ opening */

static void meta_free(ms_image_meta_t *m, int n)
{
    if (!m)
        return;
    for (int i = 0; i < n; i++) {
        free(m[i].image_id);
        free(m[i].plate);
        free(m[i].well);
        free(m[i].treatment);
    }
    free(m);
}

void ms_shard_close(ms_shard_t *s)
{
    if (!s)
        return;
    ms_h5_quiet();
    if (s->masks > 0)
        H5Dclose(s->masks);
    if (s->images > 0)
        H5Dclose(s->images);
    if (s->file > 0)
        H5Fclose(s->file);
    if (s->fd >= 0)
        close(s->fd);
    for (int k = 0; k < s->k && s->class_names; k++)
        free(s->class_names[k]);
    free(s->class_names);
    for (int c = 0; c < s->c && s->channel_names; c++)
        free(s->channel_names[c]);
    free(s->channel_names);
    meta_free(s->meta, s->n);
    free(s->labels);
    free(s->known);
    for (int j = 0; j < 3; j++)
        free(s->cell_buf[j]);
    free(s->cell_xy[0]);
    free(s->cell_xy[1]);
    free(s->path);
    free(s);
}

/* Reads the compression pipeline of /images and decides whether the raw path applies. */
static ms_status_t probe_layout(ms_shard_t *s)
{
    ms_status_t st = MS_OK;
    hid_t dcpl = H5Dget_create_plist(s->images);
    s->comp = MS_COMP_NONE;
    s->raw_ok = 0;
    s->th = s->h;
    s->tw = s->w;
    if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t ch[4];
        if (H5Pget_chunk(dcpl, 4, ch) != 4)
            MS_FAIL(MS_EFORMAT, "%s: /images has a chunk rank other than 4", s->path);
        int nf = H5Pget_nfilters(dcpl);
        int ok = ch[0] == 1 && (int)ch[1] == s->c;
        int deflate = 0, shuffle = 0;
        for (int f = 0; f < nf; f++) {
            unsigned flags, cd[8];
            size_t ncd = 8;
            unsigned cfg;
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)f, &flags, &ncd, cd, 0, NULL, &cfg);
            if (id == H5Z_FILTER_DEFLATE && !deflate)
                deflate = f + 1;
            else if (id == H5Z_FILTER_SHUFFLE && !shuffle && !deflate)
                shuffle = f + 1;
            else
                ok = 0; /* another filter: let HDF5 decode */
        }
        if (shuffle && !deflate)
            ok = 0;
        s->comp = deflate ? MS_COMP_DEFLATE : MS_COMP_NONE;
        s->shuffle = shuffle != 0;
        s->raw_ok = ok;
        s->th = (int)ch[2];
        s->tw = (int)ch[3];
    }
done:
    H5Pclose(dcpl);
    return st;
}

static ms_status_t read_ints(hid_t f, const char *name, int n, int *out)
{
    hsize_t d[1] = {(hsize_t)n};
    return ms_h5_read(f, name, H5T_NATIVE_INT, 1, d, out);
}

static ms_status_t load_cells(ms_shard_t *s)
{
    ms_status_t st = MS_OK;
    int r;
    hsize_t d[8];
    MS_TRY(ms_h5_dims(s->file, "cells/image_index", &r, d));
    if (r != 1)
        MS_FAIL(MS_EFORMAT, "%s: /cells/image_index is not 1-D", s->path);
    if (d[0] > 1u << 30)
        MS_FAIL(MS_EFORMAT, "%s: /cells/image_index declares %llu cells (at most 2^30)", s->path,
                (unsigned long long)d[0]);
    /* the count sizes five arrays: it must be backed by stored data */
    static const char *const cn[] = {"cells/image_index", "cells/label", "cells/x", "cells/y"};
    for (int j = 0; j < 4; j++)
        MS_TRY(ms_h5_check_stored(s->file, cn[j]));
    int n = (int)d[0];
    MS_ALLOC(s->cell_buf[0], n + 1, "cells");
    MS_ALLOC(s->cell_buf[1], n + 1, "cells");
    MS_ALLOC(s->cell_buf[2], n + 1, "cells");
    MS_ALLOC(s->cell_xy[0], n + 1, "cells");
    MS_ALLOC(s->cell_xy[1], n + 1, "cells");
    MS_TRY(ms_h5_read(s->file, "cells/image_index", H5T_NATIVE_INT32, 1, d, s->cell_buf[0]));
    MS_TRY(ms_h5_read(s->file, "cells/label", H5T_NATIVE_INT32, 1, d, s->cell_buf[1]));
    MS_TRY(ms_h5_read(s->file, "cells/x", H5T_NATIVE_FLOAT, 1, d, s->cell_xy[0]));
    MS_TRY(ms_h5_read(s->file, "cells/y", H5T_NATIVE_FLOAT, 1, d, s->cell_xy[1]));
    if (ms_h5_exists(s->file, "cells/mask_id"))
        MS_TRY(ms_h5_read(s->file, "cells/mask_id", H5T_NATIVE_INT32, 1, d, s->cell_buf[2]));
    for (int j = 0; j < n; j++)
        if (s->cell_buf[0][j] < 0 || s->cell_buf[0][j] >= s->n)
            MS_FAIL(MS_EFORMAT, "%s: /cells/image_index[%d] = %d is not an image index", s->path,
                    j, s->cell_buf[0][j]);
    s->cells = (ms_cells_t){n, s->cell_buf[0], s->cell_xy[0], s->cell_xy[1], s->cell_buf[1],
                            s->cell_buf[2]};
    s->has_cells = 1;
done:
    return st;
}

ms_status_t ms_shard_open(ms_shard_t **out, const char *path)
{
    ms_status_t st = MS_OK;
    ms_shard_t *s = NULL;
    char *fmt = NULL;
    char **strs[4] = {0};
    int *ints = NULL;
    hid_t space = H5I_INVALID_HID, type = H5I_INVALID_HID, fcpl = H5I_INVALID_HID;
    *out = NULL;
    MS_ALLOC(s, 1, "shard");
    s->fd = -1;
    s->file = s->images = s->masks = H5I_INVALID_HID;
    s->path = strdup(path);
    if (!s->path)
        MS_FAIL(MS_ENOMEM, "out of memory opening %s", path);
    MS_TRY(ms_h5_open(&s->file, path));
    if (!ms_h5_attr_exists(s->file, "format"))
        MS_FAIL(MS_EFORMAT, "%s is not a milscreen shard (no 'format' attribute; expected "
                "format '%s' version %d)", path, MS_SHARD_FORMAT, MS_SHARD_VERSION);
    MS_TRY(ms_h5_attr_get_str(s->file, "format", &fmt));
    if (strcmp(fmt, MS_SHARD_FORMAT))
        MS_FAIL(MS_EFORMAT, "%s has format '%s', expected '%s'", path, fmt, MS_SHARD_FORMAT);
    long long ver;
    MS_TRY(ms_h5_attr_get_int(s->file, "format_version", &ver));
    if (ver != MS_SHARD_VERSION)
        MS_FAIL(MS_EFORMAT, "%s has shard format version %lld; this milscreen reads version %d",
                path, ver, MS_SHARD_VERSION);

    /* /images */
    int r;
    hsize_t d[8];
    MS_TRY(ms_h5_dims(s->file, "images", &r, d));
    if (r != 4)
        MS_FAIL(MS_EFORMAT, "%s: /images has rank %d, expected 4 [N, C, H, W]", path, r);
    if (d[0] > 1u << 30 || d[1] > 1024)
        MS_FAIL(MS_EFORMAT, "%s: /images has an implausible shape [%llu, %llu, ...] (at most "
                "2^30 images of 1024 channels)", path, (unsigned long long)d[0],
                (unsigned long long)d[1]);
    MS_TRY(ms_io_check_image_size(path, d[1], d[2], d[3], 2));
    /* every image's chunks exist: nothing reads as fill values, and N (which sizes the
     * metadata arrays below) is backed by that many chunks on disk */
    MS_TRY(ms_h5_check_stored(s->file, "images"));
    s->n = (int)d[0];
    s->c = (int)d[1];
    s->h = (int)d[2];
    s->w = (int)d[3];
    s->images = H5Dopen2(s->file, "images", H5P_DEFAULT);
    type = H5Dget_type(s->images);
    if (H5Tget_class(type) != H5T_INTEGER || H5Tget_sign(type) != H5T_SGN_NONE ||
        (H5Tget_size(type) != 1 && H5Tget_size(type) != 2))
        MS_FAIL(MS_EFORMAT, "%s: /images must be uint8 or uint16", path);
    s->dtype = H5Tget_size(type) == 1 ? MS_DTYPE_U8 : MS_DTYPE_U16;
    MS_TRY(probe_layout(s));
    /* the fast decoder copies stored bytes as little-endian uint16: a big-endian /images
     * (another tool's file) is converted by HDF5 instead, never read byte-swapped */
    if (s->dtype == MS_DTYPE_U16 && H5Tget_order(type) != H5T_ORDER_LE)
        s->raw_ok = 0;
    fcpl = H5Fget_create_plist(s->file);
    H5Pget_userblock(fcpl, &s->userblock);
    if (s->raw_ok) {
        s->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0)
            MS_FAIL(MS_EIO, "cannot open %s: %m", path);
    }

    /* names */
    size_t nn = 0;
    MS_TRY(ms_h5_attr_get_strings(s->file, "channel_names", &nn, &s->channel_names));
    if ((int)nn != s->c) {
        for (size_t j = 0; j < nn; j++)
            free(s->channel_names[j]);
        free(s->channel_names);
        s->channel_names = NULL;
        MS_FAIL(MS_EFORMAT, "%s: %zu channel names for %d channels", path, nn, s->c);
    }
    MS_TRY(ms_h5_attr_get_strings(s->file, "class_names", &nn, &s->class_names));
    s->k = (int)nn;
    long long ml = 0;
    MS_TRY(ms_h5_attr_get_int(s->file, "multi_label", &ml));
    s->multi = ml != 0;

    /* metadata */
    int n = s->n;
    MS_ALLOC(s->meta, n + 1, "metadata");
    MS_ALLOC(ints, n + 1, "metadata");
    MS_ALLOC(s->labels, (size_t)n * (s->k ? s->k : 1) + 1, "labels");
    MS_ALLOC(s->known, n + 1, "labels");
    const char *sn[4] = {"meta/image_id", "meta/plate", "meta/well", "meta/treatment"};
    for (int j = 0; j < 4; j++)
        MS_TRY(ms_h5_read_strings(s->file, sn[j], (size_t)n, &strs[j]));
    for (int i = 0; i < n; i++) {
        s->meta[i].image_id = strs[0][i];
        s->meta[i].plate = strs[1][i];
        s->meta[i].well = strs[2][i];
        s->meta[i].treatment = strs[3][i];
        strs[0][i] = strs[1][i] = strs[2][i] = strs[3][i] = NULL;
    }
    MS_TRY(read_ints(s->file, "meta/site", n, ints));
    for (int i = 0; i < n; i++)
        s->meta[i].site = ints[i];
    MS_TRY(read_ints(s->file, "meta/replicate", n, ints));
    for (int i = 0; i < n; i++)
        s->meta[i].replicate = ints[i];
    if (s->multi) {
        hsize_t ld[2] = {(hsize_t)n, (hsize_t)s->k};
        MS_TRY(ms_h5_read(s->file, "meta/labels", H5T_NATIVE_UINT8, 2, ld, s->labels));
        for (int i = 0; i < n; i++) {
            uint8_t *row = s->labels + (size_t)i * s->k;
            int unknown = s->k > 0, first = -1;
            for (int k = 0; k < s->k; k++) {
                unknown &= row[k] == 255;
                if (row[k] != 0 && row[k] != 1 && row[k] != 255)
                    MS_FAIL(MS_EFORMAT, "%s: /meta/labels[%d, %d] = %d (0, 1, or a row of 255 "
                            "for unknown)", path, i, k, row[k]);
                if (row[k] == 1 && first < 0)
                    first = k;
            }
            int some_unknown = 0;
            for (int k = 0; k < s->k; k++)
                some_unknown |= row[k] == 255;
            if (some_unknown && !unknown)
                MS_FAIL(MS_EFORMAT, "%s: /meta/labels row %d mixes 255 (unknown) with known "
                        "values: a row is wholly known (0/1) or wholly unknown (255)", path, i);
            s->known[i] = !unknown;
            if (unknown)
                memset(row, 0, (size_t)s->k);
            s->meta[i].label = unknown ? -1 : first;
        }
    } else {
        MS_TRY(read_ints(s->file, "meta/label", n, ints));
        for (int i = 0; i < n; i++) {
            if (ints[i] < -1 || ints[i] >= s->k)
                MS_FAIL(MS_EFORMAT, "%s: /meta/label[%d] = %d is not -1 or a class 0..%d", path,
                        i, ints[i], s->k - 1);
            s->meta[i].label = ints[i];
            s->known[i] = ints[i] >= 0;
            if (ints[i] >= 0)
                s->labels[(size_t)i * s->k + ints[i]] = 1;
        }
    }
    if (ms_h5_exists(s->file, "cells/image_index"))
        MS_TRY(load_cells(s));
    if (ms_h5_exists(s->file, "masks")) {
        MS_TRY(ms_h5_dims(s->file, "masks", &r, d));
        if (r != 3 || (int)d[0] != s->n || (int)d[1] != s->h || (int)d[2] != s->w)
            MS_FAIL(MS_EFORMAT, "%s: /masks must be [N, H, W] = [%d, %d, %d]", path, s->n, s->h,
                    s->w);
        MS_TRY(ms_h5_check_stored(s->file, "masks"));
        s->masks = H5Dopen2(s->file, "masks", H5P_DEFAULT);
    }
    *out = s;
    s = NULL;
done:
    for (int j = 0; j < 4; j++)
        ms_h5_free_strings(strs[j], strs[j] ? (size_t)(s ? s->n : 0) : 0);
    free(fmt);
    free(ints);
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (fcpl >= 0)
        H5Pclose(fcpl);
    ms_shard_close(s);
    return st;
}

const char *ms_shard_path(const ms_shard_t *s) { return s->path; }
int ms_shard_count(const ms_shard_t *s) { return s->n; }
int ms_shard_channels(const ms_shard_t *s) { return s->c; }
int ms_shard_height(const ms_shard_t *s) { return s->h; }
int ms_shard_width(const ms_shard_t *s) { return s->w; }
ms_pixel_t ms_shard_dtype(const ms_shard_t *s) { return s->dtype; }
int ms_shard_classes(const ms_shard_t *s) { return s->k; }
int ms_shard_multi_label(const ms_shard_t *s) { return s->multi; }
ms_comp_t ms_shard_compression(const ms_shard_t *s) { return s->comp; }
const char *ms_shard_class_name(const ms_shard_t *s, int k) { return s->class_names[k]; }
const char *ms_shard_channel_name(const ms_shard_t *s, int c) { return s->channel_names[c]; }
const ms_image_meta_t *ms_shard_meta(const ms_shard_t *s, int i) { return &s->meta[i]; }

char *ms_shard_names_joined(const ms_shard_t *s, int channels)
{
    char *const *names = channels ? s->channel_names : s->class_names;
    int n = channels ? s->c : s->k;
    size_t len = 1;
    for (int j = 0; j < n; j++)
        len += strlen(names[j]) + 1;
    char *out = malloc(len), *p = out;
    if (!out)
        return NULL;
    *p = 0;
    for (int j = 0; j < n; j++)
        p += sprintf(p, "%s%s", j ? "\n" : "", names[j]);
    return out;
}
/* "[a, b, c]" of a '\n'-joined list, cut with "..." to fit n (>= 16) bytes. */
static void names_text(char *out, size_t n, const char *joined)
{
    size_t o = 0;
    const char *p = joined;
    out[o++] = '[';
    for (; *p && o + 6 < n; p++) {
        if (*p == '\n') {
            out[o++] = ',';
            out[o++] = ' ';
        } else {
            out[o++] = *p;
        }
    }
    if (*p) { /* did not fit */
        o = n - 5;
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = ']';
    out[o] = 0;
}

ms_status_t ms_names_check(const char *kind, const char *a_from, const char *a,
                           const char *b_from, const char *b)
{
    if (!strcmp(a ? a : "", b ? b : ""))
        return MS_OK;
    char ta[700], tb[700];
    names_text(ta, sizeof ta, a ? a : "");
    names_text(tb, sizeof tb, b ? b : "");
    return MS_ERR(MS_EFORMAT, "%s differ (names and order must be the same): %s has %s; %s has "
                  "%s", kind, a_from, ta, b_from, tb);
}

ms_status_t ms_shard_check_same(const ms_shard_t *a, const ms_shard_t *b)
{
    ms_status_t st = MS_OK;
    char *na = NULL, *nb = NULL;
    for (int ch = 1; ch >= 0; ch--) {
        na = ms_shard_names_joined(a, ch);
        nb = ms_shard_names_joined(b, ch);
        if (!na || !nb)
            MS_FAIL(MS_ENOMEM, "out of memory");
        MS_TRY(ms_names_check(ch ? "channels" : "classes", a->path, na, b->path, nb));
        free(na), free(nb);
        na = nb = NULL;
    }
    if (a->multi != b->multi)
        MS_FAIL(MS_EFORMAT, "%s is %s-label but %s is %s-label", a->path,
                a->multi ? "multi" : "single", b->path, b->multi ? "multi" : "single");
done:
    free(na), free(nb);
    return st;
}

int ms_shard_label(const ms_shard_t *s, int i) { return s->meta[i].label; }
int ms_shard_labelled(const ms_shard_t *s, int i) { return s->known[i]; }
const uint8_t *ms_shard_labels(const ms_shard_t *s, int i)
{
    return s->labels + (size_t)i * s->k;
}
int ms_shard_has_cells(const ms_shard_t *s) { return s->has_cells; }
int ms_shard_has_masks(const ms_shard_t *s) { return s->masks > 0; }

ms_status_t ms_shard_cells(ms_shard_t *s, ms_cells_t *cells)
{
    if (!s->has_cells)
        return MS_ERR(MS_EFORMAT, "%s has no /cells", s->path);
    *cells = s->cells;
    return MS_OK;
}

/* ------------------------------------------------------------------ pixels */

static ms_status_t check_index(const ms_shard_t *s, int i)
{
    if (i < 0 || i >= s->n)
        return MS_ERR(MS_EARG, "%s: image %d out of range 0..%d", s->path, i, s->n - 1);
    return MS_OK;
}

/* HDF5 hyperslab read of a window, converted to uint16 by HDF5. */
static ms_status_t read_hyperslab(ms_shard_t *s, hid_t ds, int i, int nc, int y, int x, int h,
                                  int w, uint16_t *out, const char *what)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    int rank = nc ? 4 : 3;
    hsize_t start4[4] = {(hsize_t)i, 0, (hsize_t)y, (hsize_t)x};
    hsize_t count4[4] = {1, (hsize_t)nc, (hsize_t)h, (hsize_t)w};
    hsize_t start3[3] = {(hsize_t)i, (hsize_t)y, (hsize_t)x};
    hsize_t count3[3] = {1, (hsize_t)h, (hsize_t)w};
    char where[600];
    snprintf(where, sizeof where, "%s:%s of image %d", s->path, what, i);
    ms_status_t chk = ms_h5_check_region(ds, where, rank, nc ? start4 : start3,
                                         nc ? count4 : count3);
    if (chk)
        return chk;
    hid_t fs = H5Dget_space(ds);
    hid_t ms = H5Screate_simple(rank, nc ? count4 : count3, NULL);
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, nc ? start4 : start3, NULL,
                            nc ? count4 : count3, NULL) < 0 ||
        H5Dread(ds, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, out) < 0)
        st = MS_ERR(MS_EFORMAT, "%s: cannot read %s of image %d: %s", s->path, what, i,
                    ms_h5_reason());
    H5Sclose(ms);
    H5Sclose(fs);
    return st;
}

ms_status_t ms_shard_read_hdf5(ms_shard_t *s, int i, uint16_t *out)
{
    ms_status_t st = check_index(s, i);
    return st ? st : read_hyperslab(s, s->images, i, s->c, 0, 0, s->h, s->w, out, "/images");
}

/* Decodes chunk (i, :, cy, cx) into sc->b as (C, th, tw) of the stored dtype. */
static ms_status_t decode_chunk(ms_shard_t *s, int i, int cy, int cx, scratch_t **scp)
{
    size_t es = s->dtype == MS_DTYPE_U8 ? 1 : 2;
    size_t nel = (size_t)s->c * s->th * s->tw;
    size_t nbytes = nel * es;
    hsize_t off[4] = {(hsize_t)i, 0, (hsize_t)cy, (hsize_t)cx};
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    struct timespec t0, t1;
    pthread_once(&ts_once, check_threadsafe);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!h5_threadsafe)
        pthread_mutex_lock(&h5_mu);
    ms_h5_quiet();
    herr_t he = H5Dget_chunk_info_by_coord(s->images, off, &mask, &addr, &size);
    if (!h5_threadsafe)
        pthread_mutex_unlock(&h5_mu);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_fetch_add(&locked_ns, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
                                            (t1.tv_nsec - t0.tv_nsec)));
    if (he < 0)
        return MS_ERR(MS_EFORMAT, "%s: cannot locate chunk of image %d at (%d, %d)", s->path, i,
                      cy, cx);
    if (addr == HADDR_UNDEF || size == 0)
        return MS_ERR(MS_EFORMAT, "%s: image %d was never written (chunk at (%d, %d) missing)",
                      s->path, i, cy, cx);
    if (mask != 0)
        return MS_ERR(MS_EFORMAT, "%s: image %d: a chunk skipped a filter (mask %u); not "
                      "supported", s->path, i, mask);
    scratch_t *sc = scratch_get((size_t)size, 2 * nbytes);
    if (!sc)
        return MS_ERR(MS_ENOMEM, "out of memory decoding %s", s->path);
    *scp = sc;
    uint8_t *raw = s->comp == MS_COMP_NONE ? sc->b : sc->a;
    if (s->comp == MS_COMP_NONE && size != nbytes)
        return MS_ERR(MS_EFORMAT, "%s: image %d: uncompressed chunk of %llu bytes, expected %zu",
                      s->path, i, (unsigned long long)size, nbytes);
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(s->fd, raw + got, (size_t)size - got,
                          (off_t)(addr + s->userblock + got));
        if (r <= 0)
            return MS_ERR(MS_EIO, "%s: cannot read image %d (%s)", s->path, i,
                          r == 0 ? "file truncated" : "read error");
        got += (size_t)r;
    }
    if (s->comp == MS_COMP_NONE)
        return MS_OK;
    uint8_t *dst = s->shuffle && es == 2 ? sc->b + nbytes : sc->b;
    size_t actual = 0;
    enum libdeflate_result lr =
        libdeflate_zlib_decompress(sc->dec, sc->a, (size_t)size, dst, nbytes, &actual);
    if (lr != LIBDEFLATE_SUCCESS || actual != nbytes)
        return MS_ERR(MS_EFORMAT, "%s: image %d: corrupt compressed chunk at (%d, %d)", s->path,
                      i, cy, cx);
    if (dst != sc->b)
        unshuffle2(sc->b, dst, nel);
    return MS_OK;
}

ms_status_t ms_shard_read_region(ms_shard_t *s, int i, int y, int x, int h, int w,
                                 uint16_t *out)
{
    ms_status_t st = MS_OK;
    MS_TRY(check_index(s, i));
    if (y < 0 || x < 0 || h <= 0 || w <= 0 || y + h > s->h || x + w > s->w)
        MS_FAIL(MS_EARG, "%s: region y=%d x=%d h=%d w=%d outside the %dx%d image", s->path, y, x,
                h, w, s->h, s->w);
    if (!s->raw_ok)
        return read_hyperslab(s, s->images, i, s->c, y, x, h, w, out, "/images");
    for (int cy = (y / s->th) * s->th; cy < y + h; cy += s->th)
        for (int cx = (x / s->tw) * s->tw; cx < x + w; cx += s->tw) {
            scratch_t *sc = NULL;
            MS_TRY(decode_chunk(s, i, cy, cx, &sc));
            int y0 = cy > y ? cy : y, y1 = cy + s->th < y + h ? cy + s->th : y + h;
            int x0 = cx > x ? cx : x, x1 = cx + s->tw < x + w ? cx + s->tw : x + w;
            for (int c = 0; c < s->c; c++)
                for (int yy = y0; yy < y1; yy++) {
                    size_t src = ((size_t)c * s->th + (yy - cy)) * s->tw + (x0 - cx);
                    uint16_t *o = out + ((size_t)c * h + (yy - y)) * w + (x0 - x);
                    if (s->dtype == MS_DTYPE_U8)
                        for (int xx = 0; xx < x1 - x0; xx++)
                            o[xx] = sc->b[src + xx];
                    else
                        memcpy(o, (const uint16_t *)sc->b + src, (size_t)(x1 - x0) * 2);
                }
        }
done:
    return st;
}

ms_status_t ms_shard_read_view(ms_shard_t *s, int i, const uint16_t **pix)
{
    ms_status_t st = MS_OK;
    *pix = NULL;
    MS_TRY(check_index(s, i));
    if (!s->raw_ok || s->dtype != MS_DTYPE_U16 || s->th != s->h || s->tw != s->w)
        return MS_OK; /* not one uint16 chunk: the caller uses ms_shard_read */
    scratch_t *sc = NULL;
    MS_TRY(decode_chunk(s, i, 0, 0, &sc));
    *pix = (const uint16_t *)sc->b;
done:
    return st;
}

ms_status_t ms_shard_read(ms_shard_t *s, int i, uint16_t *out)
{
    return ms_shard_read_region(s, i, 0, 0, s->h, s->w, out);
}

ms_status_t ms_shard_read_mask(ms_shard_t *s, int i, uint16_t *out)
{
    ms_status_t st = check_index(s, i);
    if (st)
        return st;
    if (s->masks <= 0)
        return MS_ERR(MS_EFORMAT, "%s has no /masks", s->path);
    return read_hyperslab(s, s->masks, i, 0, 0, 0, s->h, s->w, out, "/masks");
}

ms_status_t ms_shard_digest(ms_shard_t *s, char out[65]) { return ms_file_sha256(s->path, out); }

/* ------------------------------------------------------------------ writing */

struct ms_shard_writer {
    ms_shard_spec_t spec;
    char **class_names, **channel_names;
    ms_h5file_t f;
    hid_t images, masks;
    struct libdeflate_compressor *comp;
    uint8_t *written, *mask_written, *meta_set; /* (N) */
    ms_image_meta_t *meta;                      /* (N) */
    uint8_t *labels;                            /* (N, K) */
    int th, tw;
    uint8_t *chunk, *shuf; /* one chunk: gathered, shuffled (compressed into a caller slot) */
    size_t zcap;
    uint8_t *narrow; /* (C, H, W) uint8 for write_image_u16 on uint8 shards */
    int ncells, capcells;
    int32_t *cimg, *clabel, *cmask;
    float *cx, *cy;
};

static char *xstrdup(const char *s) { return strdup(s ? s : ""); }

void ms_shard_discard(ms_shard_writer_t *w)
{
    if (!w)
        return;
    ms_h5_quiet();
    if (w->images > 0)
        H5Dclose(w->images);
    if (w->masks > 0)
        H5Dclose(w->masks);
    ms_h5_abort(&w->f);
    if (w->comp)
        libdeflate_free_compressor(w->comp);
    for (int k = 0; k < w->spec.k && w->class_names; k++)
        free(w->class_names[k]);
    for (int c = 0; c < w->spec.c && w->channel_names; c++)
        free(w->channel_names[c]);
    free(w->class_names);
    free(w->channel_names);
    free(w->written);
    free(w->mask_written);
    free(w->meta_set);
    meta_free(w->meta, w->spec.n);
    free(w->labels);
    free(w->chunk);
    free(w->shuf);
    free(w->narrow);
    free(w->cimg);
    free(w->clabel);
    free(w->cmask);
    free(w->cx);
    free(w->cy);
    free(w);
}

/* A chunked dataset [N, ...dims] of type t, optionally shuffle+deflate through HDF5. */
static ms_status_t create_chunked(ms_shard_writer_t *w, const char *name, hid_t t, int rank,
                                  const hsize_t *dims, const hsize_t *chunk, int deflate,
                                  hid_t *ds)
{
    ms_status_t st = MS_OK;
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0); /* no timestamps: same content, same bytes */
    H5Pset_chunk(dcpl, rank, chunk);
    if (deflate) {
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, (unsigned)deflate);
    }
    /* Never written chunks stay unallocated, so a missing image is detectable. */
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_INCR);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    *ds = H5Dcreate2(w->f.id, name, t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (*ds < 0)
        st = MS_ERR(MS_EIO, "%s: cannot create /%s: %s", w->f.path, name, ms_h5_reason());
    H5Pclose(dcpl);
    H5Sclose(sp);
    return st;
}

ms_status_t ms_shard_create(ms_shard_writer_t **out, const char *path, const ms_shard_spec_t *sp)
{
    ms_status_t st = MS_OK;
    ms_shard_writer_t *w = NULL;
    *out = NULL;
    if (sp->n < 0 || sp->c < 1 || sp->h < 1 || sp->w < 1 || sp->k < 0 ||
        (sp->dtype != MS_DTYPE_U8 && sp->dtype != MS_DTYPE_U16) || sp->level < 0 ||
        sp->level > 9 || sp->tile < 0 || !(sp->pixel_size[0] >= 0) ||
        !(sp->pixel_size[1] >= 0) || (sp->pixel_size[0] > 0) != (sp->pixel_size[1] > 0))
        return MS_ERR(MS_EARG, "%s: bad shard shape or options (N=%d C=%d H=%d W=%d K=%d level=%d "
                      "tile=%d)", path, sp->n, sp->c, sp->h, sp->w, sp->k, sp->level, sp->tile);
    MS_ALLOC(w, 1, "shard writer");
    w->images = w->masks = H5I_INVALID_HID;
    w->f.id = H5I_INVALID_HID;
    w->spec = *sp;
    w->spec.class_names = w->spec.channel_names = NULL;
    if (w->spec.comp == MS_COMP_DEFLATE && w->spec.level == 0)
        w->spec.level = MS_SHARD_DEFAULT_LEVEL;
    int n = sp->n, k = sp->k;
    MS_ALLOC(w->class_names, k + 1, "class names");
    MS_ALLOC(w->channel_names, sp->c, "channel names");
    for (int j = 0; j < k; j++)
        if (!(w->class_names[j] = xstrdup(sp->class_names ? sp->class_names[j] : NULL)))
            MS_FAIL(MS_ENOMEM, "out of memory");
    for (int c = 0; c < sp->c; c++) {
        char buf[32];
        snprintf(buf, sizeof buf, "ch%d", c);
        if (!(w->channel_names[c] =
                  xstrdup(sp->channel_names ? sp->channel_names[c] : buf)))
            MS_FAIL(MS_ENOMEM, "out of memory");
    }
    MS_ALLOC(w->written, n + 1, "shard writer");
    MS_ALLOC(w->mask_written, n + 1, "shard writer");
    MS_ALLOC(w->meta_set, n + 1, "shard writer");
    MS_ALLOC(w->meta, n + 1, "shard writer");
    MS_ALLOC(w->labels, (size_t)n * (k ? k : 1) + 1, "shard writer");
    w->th = sp->tile && sp->tile < sp->h ? sp->tile : sp->h;
    w->tw = sp->tile && sp->tile < sp->w ? sp->tile : sp->w;
    size_t es = sp->dtype == MS_DTYPE_U8 ? 1 : 2;
    size_t cbytes = (size_t)sp->c * w->th * w->tw * es;
    MS_ALLOC(w->chunk, cbytes, "shard writer chunk");
    MS_ALLOC(w->shuf, cbytes, "shard writer chunk");
    if (sp->comp == MS_COMP_DEFLATE) {
        w->comp = libdeflate_alloc_compressor(w->spec.level);
        if (!w->comp)
            MS_FAIL(MS_ENOMEM, "cannot allocate a compressor");
        w->zcap = libdeflate_zlib_compress_bound(w->comp, cbytes);
    }
    MS_TRY(ms_h5_create(&w->f, path));
    hsize_t dims[4] = {(hsize_t)n, (hsize_t)sp->c, (hsize_t)sp->h, (hsize_t)sp->w};
    hsize_t chunk[4] = {1, (hsize_t)sp->c, (hsize_t)w->th, (hsize_t)w->tw};
    /* The filters are declared so readers (HDF5, h5py) decode; we compress chunks ourselves. */
    MS_TRY(create_chunked(w, "images", sp->dtype == MS_DTYPE_U8 ? H5T_STD_U8LE : H5T_STD_U16LE,
                          4, dims, chunk, sp->comp == MS_COMP_DEFLATE ? w->spec.level : 0,
                          &w->images));
    if (sp->masks) {
        hsize_t md[3] = {(hsize_t)n, (hsize_t)sp->h, (hsize_t)sp->w};
        hsize_t mc[3] = {1, (hsize_t)sp->h, (hsize_t)sp->w};
        MS_TRY(create_chunked(w, "masks", H5T_STD_U16LE, 3, md, mc, 1, &w->masks));
    }
    *out = w;
    w = NULL;
done:
    ms_shard_discard(w);
    return st;
}

/* Bytes one encoded chunk may take (a slot of the encode buffer). */
static size_t chunk_slot(const ms_shard_writer_t *w)
{
    size_t nbytes = (size_t)w->spec.c * w->th * w->tw * (w->spec.dtype == MS_DTYPE_U8 ? 1 : 2);
    return w->spec.comp == MS_COMP_DEFLATE ? w->zcap : nbytes;
}

static int chunks_per_image(const ms_shard_writer_t *w)
{
    return ((w->spec.h + w->th - 1) / w->th) * ((w->spec.w + w->tw - 1) / w->tw);
}

/* Encodes one image's chunks into out (one slot each, sizes[j] bytes used): gather the tile
 * (zero-padded at the right and bottom edges), shuffle, compress. Touches no HDF5 and no
 * writer state, so threads encode different images at once. 0 on success. */
static int encode_image(const ms_shard_writer_t *w, struct libdeflate_compressor *cz,
                        const void *pix, uint8_t *chunk, uint8_t *shuf, uint8_t *out,
                        size_t *sizes)
{
    const ms_shard_spec_t *sp = &w->spec;
    size_t es = sp->dtype == MS_DTYPE_U8 ? 1 : 2;
    size_t nel = (size_t)sp->c * w->th * w->tw, slot = chunk_slot(w);
    int j = 0;
    for (int cy = 0; cy < sp->h; cy += w->th)
        for (int cx = 0; cx < sp->w; cx += w->tw, j++) {
            int hh = cy + w->th <= sp->h ? w->th : sp->h - cy;
            int ww = cx + w->tw <= sp->w ? w->tw : sp->w - cx;
            uint8_t *dst = sp->comp == MS_COMP_DEFLATE ? chunk : out + j * slot;
            if (hh < w->th || ww < w->tw)
                memset(dst, 0, nel * es);
            for (int c = 0; c < sp->c; c++)
                for (int y = 0; y < hh; y++)
                    memcpy(dst + (((size_t)c * w->th + y) * w->tw) * es,
                           (const uint8_t *)pix +
                               (((size_t)c * sp->h + cy + y) * sp->w + cx) * es,
                           (size_t)ww * es);
            sizes[j] = nel * es;
            if (sp->comp == MS_COMP_DEFLATE) {
                const uint8_t *src = chunk;
                if (es == 2) {
                    shuffle2(shuf, chunk, nel);
                    src = shuf;
                }
                sizes[j] = libdeflate_zlib_compress(cz, src, nel * es, out + j * slot, slot);
                if (!sizes[j])
                    return -1;
            }
        }
    return 0;
}

/* Writes the encoded chunks of image i (HDF5: one thread). */
static ms_status_t put_image(ms_shard_writer_t *w, int i, const uint8_t *enc,
                             const size_t *sizes)
{
    size_t slot = chunk_slot(w);
    int j = 0;
    for (int cy = 0; cy < w->spec.h; cy += w->th)
        for (int cx = 0; cx < w->spec.w; cx += w->tw, j++) {
            hsize_t off[4] = {(hsize_t)i, 0, (hsize_t)cy, (hsize_t)cx};
            if (H5Dwrite_chunk(w->images, H5P_DEFAULT, 0, off, sizes[j], enc + j * slot) < 0)
                return MS_ERR(MS_EIO, "%s: cannot write image %d: %s", w->f.path, i,
                              ms_h5_reason());
        }
    w->written[i] = 1;
    return MS_OK;
}

ms_status_t ms_shard_write_image(ms_shard_writer_t *w, int i, const void *pix)
{
    return ms_shard_write_images(w, i, 1, pix, 1);
}

ms_status_t ms_shard_write_images(ms_shard_writer_t *w, int i0, int n, const void *pix,
                                  int threads)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    const ms_shard_spec_t *sp = &w->spec;
    if (n < 0 || i0 < 0 || i0 + n > sp->n)
        return MS_ERR(MS_EARG, "%s: images %d..%d out of range 0..%d", w->f.path, i0,
                      i0 + n - 1, sp->n - 1);
    size_t es = sp->dtype == MS_DTYPE_U8 ? 1 : 2;
    size_t img = (size_t)sp->c * sp->h * sp->w * es;
    size_t cbytes = (size_t)sp->c * w->th * w->tw * es;
    int nch = chunks_per_image(w);
    size_t per = (size_t)nch * chunk_slot(w);
    uint8_t *enc = NULL;
    size_t *sizes = NULL;
    int failed = -1;
    MS_ALLOC(enc, (size_t)n * per, "encoded images");
    MS_ALLOC(sizes, (size_t)n * nch, "encoded images");
    if (threads <= 1 || n == 1) {
        for (int b = 0; b < n && failed < 0; b++)
            if (encode_image(w, w->comp, (const uint8_t *)pix + b * img, w->chunk, w->shuf,
                             enc + b * per, sizes + (size_t)b * nch))
                failed = i0 + b;
    } else {
#pragma omp parallel num_threads(threads)
        {
            struct libdeflate_compressor *cz =
                sp->comp == MS_COMP_DEFLATE ? libdeflate_alloc_compressor(sp->level) : NULL;
            uint8_t *chunk = malloc(cbytes), *shuf = malloc(cbytes);
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < n; b++) {
                int bad = !chunk || !shuf || (sp->comp == MS_COMP_DEFLATE && !cz) ||
                          encode_image(w, cz, (const uint8_t *)pix + b * img, chunk, shuf,
                                       enc + b * per, sizes + (size_t)b * nch);
                if (bad) {
#pragma omp critical(ms_shard_encode)
                    if (failed < 0 || i0 + b < failed)
                        failed = i0 + b;
                }
            }
            if (cz)
                libdeflate_free_compressor(cz);
            free(chunk);
            free(shuf);
        }
    }
    if (failed >= 0)
        MS_FAIL(MS_ENOMEM, "%s: encoding image %d failed (out of memory?)", w->f.path, failed);
    for (int b = 0; b < n; b++)
        MS_TRY(put_image(w, i0 + b, enc + b * per, sizes + (size_t)b * nch));
done:
    free(enc);
    free(sizes);
    return st;
}

long ms_narrow_u8(uint8_t *dst, const uint16_t *src, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        if (src[j] > 255)
            return (long)j;
        dst[j] = (uint8_t)src[j];
    }
    return -1;
}

ms_status_t ms_shard_write_image_u16(ms_shard_writer_t *w, int i, const uint16_t *pix)
{
    ms_status_t st = MS_OK;
    if (w->spec.dtype == MS_DTYPE_U16)
        return ms_shard_write_image(w, i, pix);
    size_t nel = (size_t)w->spec.c * w->spec.h * w->spec.w;
    if (!w->narrow)
        MS_ALLOC(w->narrow, nel, "uint8 image");
    long bad = ms_narrow_u8(w->narrow, pix, nel);
    if (bad >= 0)
        MS_FAIL(MS_EARG, "%s: image %d has value %u > 255 for a uint8 shard", w->f.path, i,
                pix[bad]);
    MS_TRY(ms_shard_write_image(w, i, w->narrow));
done:
    return st;
}

ms_status_t ms_shard_set_meta(ms_shard_writer_t *w, int i, const ms_image_meta_t *m,
                              const uint8_t *labels)
{
    ms_status_t st = MS_OK;
    const ms_shard_spec_t *sp = &w->spec;
    if (i < 0 || i >= sp->n)
        MS_FAIL(MS_EARG, "%s: image %d out of range 0..%d", w->f.path, i, sp->n - 1);
    if (!m->image_id || !m->image_id[0])
        MS_FAIL(MS_EARG, "%s: image %d has an empty image_id", w->f.path, i);
    ms_image_meta_t *d = &w->meta[i];
    free(d->image_id);
    free(d->plate);
    free(d->well);
    free(d->treatment);
    *d = *m;
    d->image_id = xstrdup(m->image_id);
    d->plate = xstrdup(m->plate);
    d->well = xstrdup(m->well);
    d->treatment = xstrdup(m->treatment);
    if (!d->image_id || !d->plate || !d->well || !d->treatment)
        MS_FAIL(MS_ENOMEM, "out of memory");
    uint8_t *row = w->labels + (size_t)i * sp->k;
    if (sp->multi_label) {
        for (int k = 0; k < sp->k; k++) {
            if (labels && labels[k] > 1)
                MS_FAIL(MS_EARG, "%s: image %d: label value %d for class %d (0 or 1)", w->f.path,
                        i, labels[k], k);
            row[k] = labels ? labels[k] : 255;
        }
    } else if (m->label < -1 || m->label >= sp->k) {
        MS_FAIL(MS_EARG, "%s: image %d: label %d is not -1 or a class 0..%d", w->f.path, i,
                m->label, sp->k - 1);
    }
    w->meta_set[i] = 1;
done:
    return st;
}

ms_status_t ms_shard_write_mask(ms_shard_writer_t *w, int i, const uint16_t *mask)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    if (w->masks <= 0)
        return MS_ERR(MS_EARG, "%s: shard created without masks", w->f.path);
    if (i < 0 || i >= w->spec.n)
        return MS_ERR(MS_EARG, "%s: mask %d out of range", w->f.path, i);
    hsize_t start[3] = {(hsize_t)i, 0, 0};
    hsize_t count[3] = {1, (hsize_t)w->spec.h, (hsize_t)w->spec.w};
    hid_t fs = H5Dget_space(w->masks);
    hid_t ms = H5Screate_simple(3, count, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (H5Dwrite(w->masks, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, mask) < 0)
        st = MS_ERR(MS_EIO, "%s: cannot write mask %d: %s", w->f.path, i, ms_h5_reason());
    else
        w->mask_written[i] = 1;
    H5Sclose(ms);
    H5Sclose(fs);
    return st;
}

ms_status_t ms_shard_add_cells(ms_shard_writer_t *w, int n, const int32_t *image_index,
                               const float *x, const float *y, const int32_t *label,
                               const int32_t *mask_id)
{
    if (w->ncells + n > w->capcells) {
        int cap = w->capcells ? w->capcells : 1024;
        while (cap < w->ncells + n)
            cap *= 2;
        int32_t *a = realloc(w->cimg, (size_t)cap * 4), *b = a ? realloc(w->clabel, cap * 4u) : 0;
        if (a)
            w->cimg = a;
        if (b)
            w->clabel = b;
        int32_t *c = b ? realloc(w->cmask, (size_t)cap * 4) : 0;
        if (c)
            w->cmask = c;
        float *d = c ? realloc(w->cx, (size_t)cap * 4) : 0;
        if (d)
            w->cx = d;
        float *e = d ? realloc(w->cy, (size_t)cap * 4) : 0;
        if (e)
            w->cy = e;
        if (!e)
            return MS_ERR(MS_ENOMEM, "out of memory storing cells");
        w->capcells = cap;
    }
    for (int j = 0; j < n; j++) {
        if (image_index[j] < 0 || image_index[j] >= w->spec.n)
            return MS_ERR(MS_EARG, "%s: cell of image %d out of range", w->f.path,
                          image_index[j]);
        int o = w->ncells + j;
        w->cimg[o] = image_index[j];
        w->cx[o] = x[j];
        w->cy[o] = y[j];
        w->clabel[o] = label[j];
        w->cmask[o] = mask_id ? mask_id[j] : 0;
    }
    w->ncells += n;
    return MS_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The shard's own per-image datasets (an extra column may not take their names). */
static const char *const own_meta[] = {"image_id", "plate", "well", "site", "treatment",
                                       "replicate", "label", "labels"};

ms_status_t ms_shard_write_meta_strings(ms_shard_writer_t *w, const char *name,
                                        const char *const *values)
{
    ms_status_t st = MS_OK;
    char path[300];
    ms_h5_quiet();
    if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || strlen(name) > 255)
        return MS_ERR(MS_EARG, "%s: '%s' cannot name a /meta dataset", w->f.path, name);
    for (size_t j = 0; j < sizeof own_meta / sizeof *own_meta; j++)
        if (!strcmp(name, own_meta[j]))
            return MS_ERR(MS_EARG, "%s: an extra column cannot be named /meta/%s (the shard's "
                          "own)", w->f.path, name);
    snprintf(path, sizeof path, "meta/%s", name);
    if (ms_h5_exists(w->f.id, path))
        return MS_ERR(MS_EARG, "%s: /meta/%s is written twice", w->f.path, name);
    static const char *const lab[1] = {"image"};
    MS_TRY(ms_h5_write_strings(w->f.id, path, (size_t)w->spec.n, values));
    MS_TRY(ms_h5_label_dims(w->f.id, path, lab));
done:
    return st;
}

/* pixel_size_um: float64 [2] (y, x) on the root. */
static ms_status_t write_pixel_size(ms_shard_writer_t *w)
{
    ms_status_t st = MS_OK;
    hsize_t two = 2;
    hid_t sp = H5Screate_simple(1, &two, NULL);
    hid_t a = H5Acreate2(w->f.id, "pixel_size_um", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, H5T_NATIVE_DOUBLE, w->spec.pixel_size) < 0)
        st = MS_ERR(MS_EIO, "%s: cannot write attribute pixel_size_um", w->f.path);
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    return st;
}

static ms_status_t write_meta(ms_shard_writer_t *w)
{
    ms_status_t st = MS_OK;
    int n = w->spec.n;
    const char **s = NULL;
    int *v = NULL;
    hid_t f = w->f.id;
    MS_ALLOC(s, n + 1, "metadata");
    MS_ALLOC(v, n + 1, "metadata");
    for (int i = 0; i < n; i++)
        s[i] = w->meta[i].image_id;
    qsort(s, (size_t)n, sizeof *s, cmp_str);
    for (int i = 1; i < n; i++)
        if (!strcmp(s[i], s[i - 1]))
            MS_FAIL(MS_EARG, "%s: image_id '%s' is not unique", w->f.path, s[i]);
#define STRS(field, name)                                                              \
    for (int i = 0; i < n; i++)                                                        \
        s[i] = w->meta[i].field;                                                       \
    MS_TRY(ms_h5_write_strings(f, name, (size_t)n, s));
#define INTS(field, name)                                                              \
    for (int i = 0; i < n; i++)                                                        \
        v[i] = w->meta[i].field;                                                       \
    MS_TRY(ms_h5_write(f, name, H5T_NATIVE_INT, 1, d1, v, NULL, 0));
    hsize_t d1[1] = {(hsize_t)n};
    STRS(image_id, "meta/image_id");
    STRS(plate, "meta/plate");
    STRS(well, "meta/well");
    STRS(treatment, "meta/treatment");
    INTS(site, "meta/site");
    INTS(replicate, "meta/replicate");
    if (w->spec.multi_label) {
        hsize_t d2[2] = {(hsize_t)n, (hsize_t)w->spec.k};
        MS_TRY(ms_h5_write(f, "meta/labels", H5T_NATIVE_UINT8, 2, d2, w->labels, NULL, 0));
    } else {
        INTS(label, "meta/label");
    }
#undef STRS
#undef INTS
    /* dimension labels: h5py's dims[i].label, HDFView's and ViTables' column names */
    static const char *const l_img[1] = {"image"}, *const l_lab[2] = {"image", "class"};
    static const char *const l_cell[1] = {"cell"};
    for (size_t j = 0; j < sizeof own_meta / sizeof *own_meta; j++) {
        char path[64];
        snprintf(path, sizeof path, "meta/%s", own_meta[j]);
        if (ms_h5_exists(f, path))
            MS_TRY(ms_h5_label_dims(f, path, !strcmp(own_meta[j], "labels") ? l_lab : l_img));
    }
    if (w->ncells) {
        hsize_t dc[1] = {(hsize_t)w->ncells};
        MS_TRY(ms_h5_write(f, "cells/image_index", H5T_NATIVE_INT32, 1, dc, w->cimg, NULL, 0));
        MS_TRY(ms_h5_write(f, "cells/x", H5T_NATIVE_FLOAT, 1, dc, w->cx, NULL, 0));
        MS_TRY(ms_h5_write(f, "cells/y", H5T_NATIVE_FLOAT, 1, dc, w->cy, NULL, 0));
        MS_TRY(ms_h5_write(f, "cells/label", H5T_NATIVE_INT32, 1, dc, w->clabel, NULL, 0));
        MS_TRY(ms_h5_write(f, "cells/mask_id", H5T_NATIVE_INT32, 1, dc, w->cmask, NULL, 0));
        static const char *const cn[5] = {"image_index", "x", "y", "label", "mask_id"};
        for (int j = 0; j < 5; j++) {
            char path[32];
            snprintf(path, sizeof path, "cells/%s", cn[j]);
            MS_TRY(ms_h5_label_dims(f, path, l_cell));
        }
    }
    static const char *const l_images[4] = {"image", "channel", "y", "x"};
    static const char *const l_masks[3] = {"image", "y", "x"};
    MS_TRY(ms_h5_label_dims(f, "images", l_images));
    if (w->masks > 0)
        MS_TRY(ms_h5_label_dims(f, "masks", l_masks));
    if (w->spec.pixel_size[0] > 0)
        MS_TRY(write_pixel_size(w));
    MS_TRY(ms_h5_attr_set_str(f, "format", MS_SHARD_FORMAT));
    MS_TRY(ms_h5_attr_set_int(f, "format_version", MS_SHARD_VERSION));
    MS_TRY(ms_h5_attr_set_strings(f, "channel_names", (size_t)w->spec.c,
                                  (const char *const *)w->channel_names));
    MS_TRY(ms_h5_attr_set_strings(f, "class_names", (size_t)w->spec.k,
                                  (const char *const *)w->class_names));
    MS_TRY(ms_h5_attr_set_int(f, "multi_label", w->spec.multi_label ? 1 : 0));
done:
    free(s);
    free(v);
    return st;
}

ms_status_t ms_shard_finish(ms_shard_writer_t *w)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    for (int i = 0; i < w->spec.n; i++) {
        if (!w->written[i])
            MS_FAIL(MS_EINTERNAL, "%s: image %d was never written", w->f.path, i);
        if (!w->meta_set[i])
            MS_FAIL(MS_EINTERNAL, "%s: image %d has no metadata", w->f.path, i);
        if (w->masks > 0 && !w->mask_written[i])
            MS_FAIL(MS_EINTERNAL, "%s: mask %d was never written", w->f.path, i);
    }
    MS_TRY(write_meta(w));
    H5Dclose(w->images);
    w->images = H5I_INVALID_HID;
    if (w->masks > 0)
        H5Dclose(w->masks);
    w->masks = H5I_INVALID_HID;
    MS_TRY(ms_h5_commit(&w->f));
done:
    ms_shard_discard(w);
    return st;
}
