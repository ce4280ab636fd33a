/* milscreen info: what a file is and holds, for people and (--json) for scripts. A shard, a
 * score output or a checkpoint is recognised by its `format` attribute and described through
 * the readers that check it (io/shard.c, eval/evalio.c, io/checkpoint.c): format and version,
 * images, shapes, classes, channels, pixel size, digest, config. Any other HDF5 file is said
 * to be no milscreen file, with its top-level objects. */
#include <getopt.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/checkpoint.h"
#include "io/h5util.h"
#include "io/shard.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/eval/evalio.h"

static void help(void)
{
    printf("usage: milscreen info FILE... [--json] [--no-digest]\n\n"
           "Describes each FILE. A plate shard: images, channels, size, pixel type and\n"
           "storage, classes with their label counts, plates, wells, treatments, cells, masks,\n"
           "pixel size and the SHA-256 digest that score records. A score output: images,\n"
           "classes, predictions per class, maps, masks, cells, its shard and checkpoint\n"
           "digests and config. A checkpoint: step and epoch, digest, classes, channels,\n"
           "parameters, normalisation and config. Every dataset with its type and shape.\n"
           "Any other HDF5 file: 'not a milscreen file' and its top-level objects.\n\n"
           "  --json       one JSON object per file (an array for several files) on stdout\n"
           "  --no-digest  do not read a whole shard for its SHA-256 digest\n\n"
           "Exit status: 0 when every FILE is a milscreen file that reads correctly, 1 when\n"
           "one is not (or is damaged), 2 for a usage error.\n");
}

/* ---- JSON out: commas and nesting kept here, so the describers only name values ------ */

typedef struct {
    int json;
    int depth;
    int first[16]; /* per nesting level: nothing written yet */
} out_t;

static void j_raw_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p == '\n')
            printf("\\n");
        else if (*p == '\t')
            printf("\\t");
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* Before a value (key NULL inside arrays). */
static void j_item(out_t *o, const char *key)
{
    if (!o->first[o->depth])
        putchar(',');
    o->first[o->depth] = 0;
    if (o->depth > 0)
        printf("\n%*s", 2 * o->depth, "");
    if (key) {
        j_raw_str(key);
        printf(": ");
    }
}

static void j_open(out_t *o, const char *key, char bracket)
{
    j_item(o, key);
    putchar(bracket);
    o->first[++o->depth] = 1;
}

static void j_close(out_t *o, char bracket)
{
    int empty = o->first[o->depth];
    o->depth--;
    if (!empty)
        printf("\n%*s", 2 * o->depth, "");
    putchar(bracket);
}

static void j_str(out_t *o, const char *key, const char *v)
{
    j_item(o, key);
    if (v)
        j_raw_str(v);
    else
        printf("null");
}

static void j_num(out_t *o, const char *key, double v)
{
    j_item(o, key);
    if (!isfinite(v))
        printf("null");
    else if (v == floor(v) && fabs(v) < 1e15)
        printf("%.0f", v);
    else
        printf("%.9g", v);
}

static void j_bool(out_t *o, const char *key, int v)
{
    j_item(o, key);
    printf(v ? "true" : "false");
}

static void j_strings(out_t *o, const char *key, char *const *s, size_t n)
{
    j_open(o, key, '[');
    for (size_t i = 0; i < n; i++)
        j_str(o, NULL, s[i]);
    j_close(o, ']');
}

/* ---- text out ---------------------------------------------------------------------------- */

static void t_line(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void t_line(const char *label, const char *fmt, ...)
{
    va_list ap;
    printf("  %-11s ", label);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* "3: a, b, c" (the first max names, then "..."). */
static void t_names(const char *label, char *const *s, size_t n, const int *counts)
{
    printf("  %-11s %zu", label, n);
    for (size_t i = 0; i < n; i++) {
        if (i == 24) {
            printf(", ... (%zu more)", n - i);
            break;
        }
        printf("%s%s", i ? ", " : ": ", s[i]);
        if (counts)
            printf(" (%d)", counts[i]);
    }
    printf("\n");
}

/* Multi-line text (a config), indented. */
static void t_block(const char *label, const char *text)
{
    int lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    printf("  %-11s %d lines\n", label, lines + (text[0] && text[strlen(text) - 1] != '\n'));
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        printf("%s%.*s\n", n ? "    " : "", (int)n, p);
        p += n + (p[n] == '\n');
    }
}

/* ---- the HDF5 side: objects, types, attributes ------------------------------------------ */

typedef struct {
    char path[512];
    int dataset;      /* 1 dataset, 0 group, -1 other (named type, ...) */
    char type[48];
    int rank;
    hsize_t dims[8], chunk[8];
    int chunked;
    char filters[64];
} object_t;

typedef struct {
    object_t *o;
    size_t n, cap;
    int top_only;
} objects_t;

static void type_name(hid_t t, char *buf, size_t n)
{
    H5T_class_t c = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    if (c == H5T_INTEGER)
        snprintf(buf, n, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", 8 * size);
    else if (c == H5T_FLOAT)
        snprintf(buf, n, "float%zu", 8 * size);
    else if (c == H5T_STRING && H5Tis_variable_str(t) > 0)
        snprintf(buf, n, "string");
    else if (c == H5T_STRING)
        snprintf(buf, n, "string%zu", size);
    else if (c == H5T_COMPOUND)
        snprintf(buf, n, "compound");
    else if (c == H5T_ENUM)
        snprintf(buf, n, "enum");
    else
        snprintf(buf, n, "other");
}

static herr_t visit(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    objects_t *os = data;
    (void)info;
    if (os->top_only && strchr(name, '/'))
        return 0;
    if (os->n == os->cap) {
        size_t cap = os->cap ? 2 * os->cap : 64;
        object_t *no = realloc(os->o, cap * sizeof *no);
        if (!no)
            return -1;
        os->o = no;
        os->cap = cap;
    }
    object_t *o = &os->o[os->n];
    memset(o, 0, sizeof *o);
    snprintf(o->path, sizeof o->path, "/%s", name);
    o->dataset = -1;
    hid_t id = H5Oopen(g, name, H5P_DEFAULT);
    if (id < 0) {
        snprintf(o->type, sizeof o->type, "(cannot open: an external or dangling link?)");
        os->n++;
        return 0;
    }
    H5I_type_t kind = H5Iget_type(id);
    if (kind == H5I_GROUP) {
        o->dataset = 0;
    } else if (kind == H5I_DATASET) {
        o->dataset = 1;
        hid_t t = H5Dget_type(id), sp = H5Dget_space(id), pl = H5Dget_create_plist(id);
        if (t >= 0)
            type_name(t, o->type, sizeof o->type);
        int r = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
        if (r >= 0 && r <= 8) {
            o->rank = r;
            H5Sget_simple_extent_dims(sp, o->dims, NULL);
        }
        if (pl >= 0 && H5Pget_layout(pl) == H5D_CHUNKED && o->rank > 0) {
            o->chunked = H5Pget_chunk(pl, 8, o->chunk) == o->rank;
            int nf = H5Pget_nfilters(pl);
            size_t len = 0;
            for (int f = 0; f < nf && len < sizeof o->filters; f++) {
                unsigned flags, cd[8];
                size_t ncd = 8;
                char fname[64] = "";
                H5Z_filter_t id2 = H5Pget_filter2(pl, (unsigned)f, &flags, &ncd, cd,
                                                  sizeof fname, fname, NULL);
                const char *nm = id2 == H5Z_FILTER_DEFLATE   ? "deflate"
                                 : id2 == H5Z_FILTER_SHUFFLE ? "shuffle"
                                 : fname[0]                  ? fname
                                                             : "filter";
                len += (size_t)snprintf(o->filters + len, sizeof o->filters - len, "%s%s",
                                        len ? "+" : "", nm);
            }
        }
        if (t >= 0)
            H5Tclose(t);
        if (sp >= 0)
            H5Sclose(sp);
        if (pl >= 0)
            H5Pclose(pl);
    }
    H5Oclose(id);
    os->n++;
    return 0;
}

static ms_status_t list_objects(hid_t f, const char *path, int top_only, objects_t *os)
{
    os->top_only = top_only;
    if (H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, visit, os) < 0)
        return MS_ERR(MS_EFORMAT, "%s: cannot list its objects (damaged?)", path);
    return MS_OK;
}

static void shape_text(char *buf, size_t n, int rank, const hsize_t *d)
{
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%llu", i ? ", " : "",
                                (unsigned long long)d[i]);
    if (len < n)
        snprintf(buf + len, n - len, "]");
}

static void print_objects(out_t *o, const objects_t *os, const char *key)
{
    if (o->json) {
        j_open(o, key, '[');
        for (size_t i = 0; i < os->n; i++) {
            const object_t *ob = &os->o[i];
            j_open(o, NULL, '{');
            j_str(o, "path", ob->path);
            j_str(o, "kind", ob->dataset > 0 ? "dataset" : ob->dataset == 0 ? "group" : "other");
            if (ob->dataset > 0) {
                j_str(o, "type", ob->type);
                j_open(o, "shape", '[');
                for (int d = 0; d < ob->rank; d++)
                    j_num(o, NULL, (double)ob->dims[d]);
                j_close(o, ']');
                if (ob->chunked) {
                    j_open(o, "chunks", '[');
                    for (int d = 0; d < ob->rank; d++)
                        j_num(o, NULL, (double)ob->chunk[d]);
                    j_close(o, ']');
                } else {
                    j_str(o, "chunks", NULL);
                }
                j_str(o, "filters", ob->filters[0] ? ob->filters : NULL);
            }
            j_close(o, '}');
        }
        j_close(o, ']');
        return;
    }
    printf("  %s\n", !strcmp(key, "objects") ? "top-level objects" : "datasets");
    for (size_t i = 0; i < os->n; i++) {
        const object_t *ob = &os->o[i];
        if (ob->dataset == 0 && strcmp(key, "objects"))
            continue; /* groups show in the dataset paths */
        char shape[160] = "", chunk[256] = "";
        if (ob->dataset > 0) {
            shape_text(shape, sizeof shape, ob->rank, ob->dims);
            if (ob->chunked) {
                char c[120];
                shape_text(c, sizeof c, ob->rank, ob->chunk);
                snprintf(chunk, sizeof chunk, "  chunks %s%s%s", c, ob->filters[0] ? " " : "",
                         ob->filters);
            }
        }
        char ln[1200];
        int len = snprintf(ln, sizeof ln, "    %-28s %-10s %s%s", ob->path,
                           ob->dataset > 0    ? ob->type
                           : ob->dataset == 0 ? "group"
                                              : ob->type,
                           shape, chunk);
        while (len > 0 && ln[len - 1] == ' ')
            ln[--len] = 0;
        printf("%s\n", ln);
    }
}

/* Root attributes, any type: strings (fixed or variable length) and numbers as values. */
typedef struct {
    out_t *o;
} attr_ctx_t;

static herr_t attr_one(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    out_t *o = ((attr_ctx_t *)data)->o;
    (void)info;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    int scalar = H5Sget_simple_extent_type(sp) == H5S_SCALAR;
    size_t n = np > 0 ? (size_t)np : 0;
    H5T_class_t c = H5Tget_class(t);
    if (o->json)
        j_item(o, name);
    else
        printf("    %-28s ", name);
    if (!scalar && o->json)
        printf("[");
    if (c == H5T_STRING) {
        int vl = H5Tis_variable_str(t) > 0;
        size_t size = H5Tget_size(t);
        hid_t mt = H5Tcopy(t); /* strings convert only within one character set */
        void *buf = calloc(n ? n : 1, vl ? sizeof(char *) : size + 1);
        if (buf && H5Aread(a, mt, buf) >= 0) {
            for (size_t i = 0; i < n; i++) {
                char *s;
                char tmp[4096];
                if (vl) {
                    s = ((char **)buf)[i] ? ((char **)buf)[i] : "";
                } else {
                    size_t len = strnlen((char *)buf + i * size, size);
                    snprintf(tmp, sizeof tmp, "%.*s", (int)len, (char *)buf + i * size);
                    s = tmp;
                }
                if (o->json) {
                    printf("%s", i ? ", " : "");
                    j_raw_str(s);
                } else if (strchr(s, '\n')) { /* a config: shown in full elsewhere */
                    size_t lines = 1;
                    for (const char *q = s; *q; q++)
                        lines += *q == '\n' && q[1];
                    printf("%s(%zu lines of text)", i ? ", " : "", lines);
                } else {
                    printf("%s%s", i ? ", " : "", s);
                }
            }
            if (vl)
                for (size_t i = 0; i < n; i++)
                    H5free_memory(((char **)buf)[i]);
        } else if (o->json) {
            printf("null");
        } else {
            printf("(unreadable)");
        }
        free(buf);
        H5Tclose(mt);
    } else if (c == H5T_INTEGER || c == H5T_FLOAT) {
        double *v = calloc(n ? n : 1, sizeof *v);
        if (v && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0) {
            for (size_t i = 0; i < n; i++) {
                if (!o->json && i == 16) {
                    printf(", ... (%zu values)", n);
                    break;
                }
                if (o->json && !isfinite(v[i]))
                    printf("%snull", i ? ", " : "");
                else
                    printf("%s%.9g", i ? ", " : "", v[i]);
            }
        } else {
            printf(o->json ? "null" : "(unreadable)");
        }
        free(v);
    } else {
        char tn[48];
        type_name(t, tn, sizeof tn);
        if (o->json)
            j_raw_str(tn);
        else
            printf("(%s)", tn);
    }
    if (!scalar && o->json)
        printf("]");
    if (!o->json)
        printf("\n");
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return 0;
}

static void print_attributes(out_t *o, hid_t f)
{
    attr_ctx_t ctx = {o};
    hsize_t idx = 0;
    if (o->json)
        j_open(o, "attributes", '{');
    else
        printf("  attributes\n");
    H5Aiterate2(f, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_one, &ctx);
    if (o->json)
        j_close(o, '}');
}

/* ---- the three milscreen files ----------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Distinct values of s (n, sorted in place): the count, and the values into out (at most
 * max; pointers into s). */
static size_t distinct(const char **s, size_t n, const char **out, size_t max)
{
    qsort(s, n, sizeof *s, cmp_str);
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(s[i], s[i - 1])) {
            if (d < max)
                out[d] = s[i];
            d++;
        }
    return d;
}

/* Splits "a\nb\nc" (modified in place) into at most max names. */
static size_t split_lines(char *s, char **out, size_t max)
{
    size_t n = 0;
    if (!s || !*s)
        return 0;
    for (char *p = s; n < max;) {
        out[n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        p = nl + 1;
    }
    return n;
}

/* The shard's pixel size, µm per pixel (y, x); 0 when absent. A present but malformed
 * attribute is an error: a wrong scale bar would be worse than none. */
static ms_status_t pixel_size(hid_t f, double um[2])
{
    um[0] = um[1] = 0;
    if (!ms_h5_attr_exists(f, "pixel_size_um"))
        return MS_OK;
    return ms_h5_attr_get_doubles(f, "pixel_size_um", 2, um);
}

static ms_status_t describe_shard(out_t *o, const char *path, hid_t f, int digest)
{
    ms_status_t st = MS_OK;
    ms_shard_t *sh = NULL;
    const char **tmp = NULL, **vals = NULL;
    int *counts = NULL;
    char **cls = NULL, **chn = NULL;
    char dg[65] = "";
    double um[2];
    MS_TRY(pixel_size(f, um));
    MS_TRY(ms_shard_open(&sh, path));
    const int N = ms_shard_count(sh), C = ms_shard_channels(sh), H = ms_shard_height(sh),
              W = ms_shard_width(sh), K = ms_shard_classes(sh), multi = ms_shard_multi_label(sh);
    MS_ALLOC(cls, K + 1, "class names");
    MS_ALLOC(chn, C + 1, "channel names");
    MS_ALLOC(counts, K + 1, "label counts");
    for (int k = 0; k < K; k++)
        cls[k] = (char *)ms_shard_class_name(sh, k);
    for (int c = 0; c < C; c++)
        chn[c] = (char *)ms_shard_channel_name(sh, c);
    int unknown = 0;
    for (int i = 0; i < N; i++) {
        if (!ms_shard_labelled(sh, i)) {
            unknown++;
            continue;
        }
        const uint8_t *row = ms_shard_labels(sh, i);
        for (int k = 0; k < K; k++)
            counts[k] += row[k] != 0;
    }
    /* plates, wells (per plate), treatments, replicates: distinct values */
    MS_ALLOC(tmp, N + 1, "metadata");
    MS_ALLOC(vals, 8, "metadata");
    char **wells = NULL;
    for (int i = 0; i < N; i++)
        tmp[i] = ms_shard_meta(sh, i)->treatment;
    size_t ntreat = distinct(tmp, (size_t)N, vals, 0);
    size_t nrep = 0;
    {
        int seen[64] = {0}, other = 0;
        for (int i = 0; i < N; i++) {
            int r = ms_shard_meta(sh, i)->replicate;
            if (r >= 0 && r < 64)
                nrep += !seen[r], seen[r] = 1;
            else
                other = 1;
        }
        nrep += other; /* replicate numbers outside 0..63 count as one more */
    }
    int site_lo = N ? ms_shard_meta(sh, 0)->site : 0, site_hi = site_lo;
    for (int i = 0; i < N; i++) {
        int s = ms_shard_meta(sh, i)->site;
        site_lo = s < site_lo ? s : site_lo;
        site_hi = s > site_hi ? s : site_hi;
    }
    /* wells as "plate/well" so that B03 of two plates counts twice */
    MS_ALLOC(wells, N + 1, "metadata");
    for (int i = 0; i < N && st == MS_OK; i++) {
        const ms_image_meta_t *m = ms_shard_meta(sh, i);
        size_t len = strlen(m->plate) + strlen(m->well) + 2;
        wells[i] = malloc(len);
        if (!wells[i])
            st = MS_ERR(MS_ENOMEM, "out of memory");
        else
            snprintf(wells[i], len, "%s/%s", m->plate, m->well);
    }
    size_t nwell = 0;
    if (st == MS_OK) {
        for (int i = 0; i < N; i++)
            tmp[i] = wells[i];
        nwell = distinct(tmp, (size_t)N, vals, 0);
    }
    for (int i = 0; i < N && wells; i++)
        free(wells[i]);
    free(wells);
    MS_TRY(st);
    for (int i = 0; i < N; i++)
        tmp[i] = ms_shard_meta(sh, i)->plate;
    size_t nplate = distinct(tmp, (size_t)N, vals, 8);
    ms_cells_t cells = {0};
    if (ms_shard_has_cells(sh))
        MS_TRY(ms_shard_cells(sh, &cells));
    if (digest)
        MS_TRY(ms_shard_digest(sh, dg));
    const char *dtype = ms_shard_dtype(sh) == MS_DTYPE_U8 ? "uint8" : "uint16";
    const char *comp = ms_shard_compression(sh) == MS_COMP_DEFLATE ? "deflate" : "none";

    if (o->json) {
        j_num(o, "images", N);
        j_num(o, "channels", C);
        j_strings(o, "channel_names", chn, (size_t)C);
        j_num(o, "height", H);
        j_num(o, "width", W);
        j_str(o, "dtype", dtype);
        j_str(o, "compression", comp);
        j_num(o, "classes", K);
        j_strings(o, "class_names", cls, (size_t)K);
        j_bool(o, "multi_label", multi);
        j_open(o, "label_counts", '{');
        for (int k = 0; k < K; k++)
            j_num(o, cls[k], counts[k]);
        j_close(o, '}');
        j_num(o, "unlabelled", unknown);
        j_num(o, "plates", (double)nplate);
        j_strings(o, "plate_names", (char *const *)vals, nplate < 8 ? nplate : 8);
        j_num(o, "wells", (double)nwell);
        j_num(o, "treatments", (double)ntreat);
        j_num(o, "replicates", (double)nrep);
        j_open(o, "sites", '[');
        j_num(o, NULL, site_lo);
        j_num(o, NULL, site_hi);
        j_close(o, ']');
        j_num(o, "cells", cells.n);
        j_bool(o, "masks", ms_shard_has_masks(sh));
        if (um[0] > 0) {
            j_open(o, "pixel_size_um", '[');
            j_num(o, NULL, um[0]);
            j_num(o, NULL, um[1]);
            j_close(o, ']');
        } else {
            j_str(o, "pixel_size_um", NULL);
        }
        j_str(o, "digest", digest ? dg : NULL);
    } else {
        t_line("images", "%d of %d x %d x %d (channels x height x width), %s, %s", N, C, H, W,
               dtype, comp);
        t_names("channels", chn, (size_t)C, NULL);
        printf("  %-11s %s-label\n", "labels", multi ? "multi" : "single");
        t_names("classes", cls, (size_t)K, counts);
        t_line("unlabelled", "%d image%s", unknown, unknown == 1 ? "" : "s");
        printf("  %-11s %zu", "plates", nplate);
        for (size_t i = 0; i < nplate && i < 8; i++)
            printf("%s%s", i ? ", " : ": ", vals[i]);
        printf("%s\n", nplate > 8 ? ", ..." : "");
        t_line("wells", "%zu; sites %d to %d; %zu treatments; %zu replicates", nwell, site_lo,
               site_hi, ntreat, nrep);
        t_line("cells", "%d%s", cells.n, cells.n ? " (centres and per-cell labels)" : "");
        t_line("masks", "%s", ms_shard_has_masks(sh) ? "true instance masks" : "none");
        if (um[0] > 0)
            t_line("pixel size", "%g x %g um (y x)", um[0], um[1]);
        else
            t_line("pixel size", "unknown (no pixel_size_um attribute)");
        t_line("digest", "%s", digest ? dg : "(not read: --no-digest)");
    }
done:
    free(tmp);
    free(vals);
    free(counts);
    free(cls);
    free(chn);
    ms_shard_close(sh);
    return st;
}

static ms_status_t describe_scores(out_t *o, const char *path, hid_t f)
{
    ms_status_t st = MS_OK;
    ms_scores_t s;
    int *pred = NULL;
    char *mode = NULL, *src_dg = NULL, *ck_dg = NULL;
    memset(&s, 0, sizeof s);
    MS_TRY(ms_scores_open(&s, path));
    MS_ALLOC(pred, s.K + 1, "prediction counts");
    for (size_t i = 0; i < s.N; i++) {
        int k = s.pred ? s.pred[i] : -1;
        if (!s.pred) { /* no /pred: the arg-max of the head (or the MIL output) */
            const float *p = s.fc_prob ? s.fc_prob + i * s.K : s.mil_prob + i * s.K;
            k = 0;
            for (int c = 1; c < s.K; c++)
                k = p[c] > p[k] ? c : k;
        }
        if (k >= 0 && k < s.K)
            pred[k]++;
    }
    if (ms_h5_attr_exists(f, "mask_mode"))
        MS_TRY(ms_h5_attr_get_str(f, "mask_mode", &mode));
    if (ms_h5_attr_exists(f, "source_digest"))
        MS_TRY(ms_h5_attr_get_str(f, "source_digest", &src_dg));
    if (ms_h5_attr_exists(f, "checkpoint_digest"))
        MS_TRY(ms_h5_attr_get_str(f, "checkpoint_digest", &ck_dg));
    if (o->json) {
        j_num(o, "images", (double)s.N);
        j_num(o, "classes", s.K);
        j_strings(o, "class_names", s.class_names, (size_t)s.K);
        j_open(o, "predicted_counts", '{');
        for (int k = 0; k < s.K; k++)
            j_num(o, s.class_names[k], pred[k]);
        j_close(o, '}');
        j_bool(o, "head", s.fc_prob != NULL);
        if (s.map_h) {
            j_open(o, "map_size", '[');
            j_num(o, NULL, s.map_h);
            j_num(o, NULL, s.map_w);
            j_close(o, ']');
        } else {
            j_str(o, "map_size", NULL);
        }
        j_str(o, "mask_mode", mode);
        j_num(o, "cells", (double)s.M);
        j_str(o, "source", s.source);
        j_str(o, "source_digest", src_dg);
        j_str(o, "checkpoint_digest", ck_dg);
        j_str(o, "config", s.config);
    } else {
        t_line("images", "%zu, %d classes, %s", s.N, s.K,
               s.fc_prob ? "MIL output and head" : "MIL output (no head)");
        t_names("predicted", s.class_names, (size_t)s.K, pred);
        if (s.map_h)
            t_line("maps", "%d x %d instances per class", s.map_h, s.map_w);
        else
            t_line("maps", "none");
        t_line("masks", "%s%s", s.mask_h ? "per image, " : "none",
               s.mask_h ? (mode ? mode : "mode not recorded") : "");
        t_line("cells", "%zu", s.M);
        t_line("source", "%s", s.source ? s.source : "(not recorded)");
        t_line("source sha", "%s", src_dg ? src_dg : "(not recorded)");
        t_line("checkpoint", "digest %s", ck_dg ? ck_dg : "(not recorded)");
        if (s.config)
            t_block("config", s.config);
    }
done:
    free(pred);
    free(mode);
    free(src_dg);
    free(ck_dg);
    ms_scores_close(&s);
    return st;
}

static ms_status_t describe_checkpoint(out_t *o, const char *path, const objects_t *os)
{
    ms_status_t st = MS_OK;
    ms_ckpt_t ck = {0};
    char *cls_text = NULL, *chn_text = NULL;
    char *cls[4096], *chn[MS_MAX_CHANNELS];
    MS_TRY(ms_checkpoint_read_meta(path, &ck));
    cls_text = ck.class_names ? strdup(ck.class_names) : NULL;
    chn_text = ck.channel_names ? strdup(ck.channel_names) : NULL;
    size_t K = split_lines(cls_text, cls, 4096), C = split_lines(chn_text, chn, MS_MAX_CHANNELS);
    /* parameters: every dataset under /weights */
    double params = 0;
    int arrays = 0;
    for (size_t i = 0; i < os->n; i++)
        if (os->o[i].dataset > 0 && !strncmp(os->o[i].path, "/weights/", 9)) {
            double n = 1;
            for (int d = 0; d < os->o[i].rank; d++)
                n *= (double)os->o[i].dims[d];
            params += n;
            arrays++;
        }
    if (o->json) {
        j_num(o, "step", ck.step);
        j_num(o, "epoch", ck.epoch);
        j_num(o, "batch", ck.batch);
        j_num(o, "seed", (double)ck.seed);
        j_str(o, "digest", ck.digest);
        j_num(o, "classes", (double)K);
        j_strings(o, "class_names", cls, K);
        j_num(o, "channels", ck.channels);
        if (C)
            j_strings(o, "channel_names", chn, C);
        else
            j_str(o, "channel_names", NULL);
        j_num(o, "parameters", params);
        j_open(o, "norm_mean", '[');
        for (int c = 0; c < ck.channels && c < MS_MAX_CHANNELS; c++)
            j_num(o, NULL, ck.mean[c]);
        j_close(o, ']');
        j_open(o, "norm_std", '[');
        for (int c = 0; c < ck.channels && c < MS_MAX_CHANNELS; c++)
            j_num(o, NULL, ck.std[c]);
        j_close(o, ']');
        j_str(o, "config", ck.config);
    } else {
        t_line("position", "step %ld, epoch %ld, batch %ld (where --resume goes on); seed %llu",
               ck.step, ck.epoch, ck.batch, (unsigned long long)ck.seed);
        t_line("digest", "%s", ck.digest);
        t_names("classes", cls, K, NULL);
        if (C)
            t_names("channels", chn, C, NULL);
        else
            t_line("channels", "%d (names not recorded)", ck.channels);
        t_line("parameters", "%.0f in %d arrays", params, arrays);
        printf("  %-11s mean", "normalise");
        for (int c = 0; c < ck.channels && c < MS_MAX_CHANNELS; c++)
            printf("%s %.6g", c ? "," : "", ck.mean[c]);
        printf("; std");
        for (int c = 0; c < ck.channels && c < MS_MAX_CHANNELS; c++)
            printf("%s %.6g", c ? "," : "", ck.std[c]);
        printf("\n");
        if (ck.config)
            t_block("config", ck.config);
    }
done:
    free(cls_text);
    free(chn_text);
    ms_checkpoint_free(&ck);
    return st;
}

/* Describes one file; returns 0, 1 (not a milscreen file, or one that fails its checks). */
static int info_one(out_t *o, const char *path, int digest)
{
    ms_status_t st = MS_OK;
    hid_t f = H5I_INVALID_HID;
    char *format = NULL, *version_by = NULL;
    objects_t os = {0};
    long long version = -1;
    int rc = 0;
    struct stat sb;
    if (stat(path, &sb) != 0)
        MS_FAIL(MS_EIO, "%s: no such file", path);
    if (S_ISDIR(sb.st_mode))
        MS_FAIL(MS_EARG, "%s is a folder (for a run folder's training curves: milscreen plot)",
                path);
    ms_h5_quiet();
    if (H5Fis_hdf5(path) <= 0)
        MS_FAIL(MS_EFORMAT, "%s: not a milscreen file: not HDF5 at all (milscreen's shards, "
                "score outputs and checkpoints are HDF5)", path);
    MS_TRY(ms_h5_open(&f, path));
    if (ms_h5_attr_exists(f, "format") && ms_h5_attr_get_str(f, "format", &format) != MS_OK) {
        ms_error_clear();
        format = NULL;
    }
    if (ms_h5_attr_exists(f, "format_version") &&
        ms_h5_attr_get_int(f, "format_version", &version) != MS_OK) {
        ms_error_clear();
        version = -1;
    }
    if (ms_h5_attr_exists(f, "milscreen_version") &&
        ms_h5_attr_get_str(f, "milscreen_version", &version_by) != MS_OK) {
        ms_error_clear();
        version_by = NULL;
    }
    const char *kind = !format                                    ? NULL
                       : !strcmp(format, MS_SHARD_FORMAT)         ? "shard"
                       : !strcmp(format, "milscreen-scores")      ? "scores"
                       : !strcmp(format, MS_CKPT_FORMAT)          ? "checkpoint"
                                                                  : NULL;
    MS_TRY(list_objects(f, path, kind == NULL, &os));
    static const char *const what[] = {"plate shard", "score output", "checkpoint"};
    int ki = !kind ? -1 : !strcmp(kind, "shard") ? 0 : !strcmp(kind, "scores") ? 1 : 2;
    if (o->json) {
        j_open(o, NULL, '{');
        j_str(o, "path", path);
        j_num(o, "bytes", (double)sb.st_size);
        j_bool(o, "milscreen", kind != NULL);
        j_str(o, "kind", kind);
        j_str(o, "format", format);
        j_num(o, "format_version", version >= 0 ? (double)version : NAN);
        j_str(o, "milscreen_version", version_by);
    } else {
        char size[32];
        double b = (double)sb.st_size;
        snprintf(size, sizeof size, b < 1e6 ? "%.1f kB" : b < 1e9 ? "%.1f MB" : "%.2f GB",
                 b < 1e6 ? b / 1e3 : b < 1e9 ? b / 1e6 : b / 1e9);
        if (kind)
            printf("%s: milscreen %s (format %s, version %lld%s%s), %s\n", path, what[ki],
                   format, version, version_by ? ", written by milscreen " : "",
                   version_by ? version_by : "", size);
        else
            printf("%s: not a milscreen file (%s%s%s), HDF5, %s\n", path,
                   format ? "its format attribute is '" : "no format attribute",
                   format ? format : "", format ? "'" : "", size);
    }
    ms_status_t ds = MS_OK; /* a milscreen file that fails its reader's checks */
    if (ki == 0)
        ds = describe_shard(o, path, f, digest);
    else if (ki == 1)
        ds = describe_scores(o, path, f);
    else if (ki == 2)
        ds = describe_checkpoint(o, path, &os);
    if (ds) {
        if (o->json)
            j_str(o, "error", ms_error_message());
        else
            printf("  error       %s\n", ms_error_message());
        fprintf(stderr, "milscreen info: error: %s\n", ms_error_message());
        ms_error_clear();
        rc = 1;
    }
    print_attributes(o, f);
    print_objects(o, &os, kind ? "datasets" : "objects");
    if (o->json)
        j_close(o, '}');
    if (!kind) {
        rc = 1;
        if (!o->json)
            fprintf(stderr, "milscreen info: %s is not a milscreen file\n", path);
    }
done:
    if (f >= 0)
        H5Fclose(f);
    free(format);
    free(version_by);
    free(os.o);
    if (st) {
        /* nothing described: the file is missing or not HDF5 */
        if (o->json) {
            j_open(o, NULL, '{');
            j_str(o, "path", path);
            j_bool(o, "milscreen", 0);
            j_str(o, "error", ms_error_message());
            j_close(o, '}');
        }
        ms_cli_fail("info", st);
        return 1;
    }
    return rc;
}

int ms_cmd_info(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "info"};
    enum { O_JSON = MS_OPT_FIRST_FREE, O_NODIGEST };
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS,
                                         {"json", no_argument, 0, O_JSON},
                                         {"no-digest", no_argument, 0, O_NODIGEST},
                                         {0, 0, 0, 0}};
    out_t o = {.first = {1}};
    int digest = 1, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = ms_cli_common(&cli, opt, optarg);
        if (r < 0)
            return 2;
        if (r && opt != MS_OPT_MAX_PIXELS)
            return ms_cli_usage_error("info", "info reads no config");
        if (r)
            continue;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case O_JSON: o.json = 1; break;
        case O_NODIGEST: digest = 0; break;
        default: return ms_cli_usage_error("info", "unknown option");
        }
    }
    if (optind >= argc)
        return ms_cli_usage_error("info", "which file? give a shard, score output or checkpoint");
    int many = argc - optind > 1, rc = 0;
    if (o.json && many)
        j_open(&o, NULL, '[');
    for (int i = optind; i < argc; i++) {
        if (!o.json && i > optind)
            printf("\n");
        rc |= info_one(&o, argv[i], digest);
        fflush(stdout);
    }
    if (o.json && many)
        j_close(&o, ']');
    if (o.json)
        printf("\n");
    return rc;
}
