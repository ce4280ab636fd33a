/* OME-Zarr plates (OME-NGFF 0.4, https://ngff.openmicroscopy.org/0.4/): one Zarr v2 store per
 * plate, plate -> row -> column (well) -> field groups, each field a multiscale image whose
 * channels are the shard's channels followed by one class map per class, upsampled to the
 * image's pixels so that every viewer shows them aligned, and whose `labels` hold the masks.
 * The layout and what each part holds: docs/FORMATS.md "OME-Zarr plates". */
#include "pipeline/export/export.h"

#include <ctype.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "pipeline/export/zarr.h"

#define MAX_CHUNK 1024 /* chunk side: a 1024x1280 field is 2 chunks per channel */
#define AUTO_SMALLEST 256 /* automatic levels stop once the longer side is this or less */
#define MAP_SCALE 65535.0 /* class map channels hold round(p * 65535) */

typedef struct {
    int in;            /* input */
    int i;             /* image within it */
    const char *plate; /* its plate name */
    int row, col;      /* well position, 0-based */
    int site;
} ref_t;

/* "B03", "b3", "AF48": row letters (A = 0, ..., Z = 25, AA = 26, ...) then a column number
 * from 1. 0 if it is not such a name. */
static int parse_well(const char *w, int *row, int *col)
{
    int r = 0, nl = 0;
    const char *p = w;
    for (; isalpha((unsigned char)*p) && nl < 2; p++, nl++)
        r = r * 26 + (toupper((unsigned char)*p) - 'A' + 1);
    if (!nl || !isdigit((unsigned char)*p))
        return 0;
    long c = 0;
    for (; isdigit((unsigned char)*p) && c < 100000; p++)
        c = c * 10 + (*p - '0');
    if (*p || c < 1 || c > 9999)
        return 0;
    *row = r - 1;
    *col = (int)c - 1;
    return 1;
}

static void row_name(int r, char out[4])
{
    if (r < 26)
        snprintf(out, 4, "%c", 'A' + r);
    else
        snprintf(out, 4, "%c%c", 'A' + r / 26 - 1, 'A' + r % 26);
}

static int by_position(const void *pa, const void *pb)
{
    const ref_t *a = pa, *b = pb;
    int c = strcmp(a->plate, b->plate);
    if (c)
        return c;
    if (a->row != b->row)
        return a->row - b->row;
    if (a->col != b->col)
        return a->col - b->col;
    if (a->site != b->site)
        return a->site < b->site ? -1 : 1;
    if (a->in != b->in)
        return a->in - b->in;
    return a->i - b->i;
}

/* A folder name for a plate: letters, digits, '.', '_' and '-' kept, anything else '_'. */
static void plate_dir_name(const char *plate, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = plate; *p && n + 10 < cap; p++, n++)
        out[n] = (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || (*p == '.' && n))
                     ? *p : '_';
    out[n] = 0;
    snprintf(out + n, cap - n, "%s.ome.zarr", n ? "" : "plate");
}

/* Level l of (planes, H, W) at every 2^l-th pixel in y and x. */
static void subsample(void *dst, const void *src, size_t es, int planes, int H, int W, int f,
                      int h, int w)
{
    for (int c = 0; c < planes; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                memcpy((uint8_t *)dst + (((size_t)c * h + y) * w + x) * es,
                       (const uint8_t *)src +
                           (((size_t)c * H + (size_t)y * f) * W + (size_t)x * f) * es,
                       es);
}

static int auto_levels(int H, int W)
{
    int L = 1, m = H > W ? H : W;
    while (m > AUTO_SMALLEST && L < 10) {
        m = (m + 1) / 2;
        L++;
    }
    return L;
}

/* axes and datasets of a multiscales entry: (c,) y, x with a scale per level (micrometres
 * when the pixel size is known, else the factor to level 0 as the spec asks). */
static void multiscales(ms_json_t *j, const char *name, int with_c, int L,
                        const ms_export_input_t *in, const char *how)
{
    const char *unit = in->has_pixel_size ? ", \"unit\": \"micrometer\"" : "";
    double py = in->has_pixel_size ? in->pixel_size[0] : 1, px =
                in->has_pixel_size ? in->pixel_size[1] : 1;
    ms_json_raw(j, "\"multiscales\": [{\"version\": \"0.4\", \"name\": ");
    ms_json_str(j, name);
    ms_json_raw(j, ", \"axes\": [%s{\"name\": \"y\", \"type\": \"space\"%s}, "
                   "{\"name\": \"x\", \"type\": \"space\"%s}], \"datasets\": [",
                with_c ? "{\"name\": \"c\", \"type\": \"channel\"}, " : "", unit, unit);
    for (int l = 0; l < L; l++) {
        ms_json_raw(j, "%s{\"path\": \"%d\", \"coordinateTransformations\": [{\"type\": "
                       "\"scale\", \"scale\": [%s", l ? ", " : "", l, with_c ? "1.0, " : "");
        ms_json_num(j, py * (1 << l));
        ms_json_raw(j, ", ");
        ms_json_num(j, px * (1 << l));
        ms_json_raw(j, "]}]}");
    }
    ms_json_raw(j, "], \"type\": \"nearest\", \"metadata\": {\"description\": ");
    ms_json_str(j, how);
    ms_json_raw(j, "}}]");
}

static const char *const SUBSAMPLED = "level l holds every 2^l-th pixel of level 0 in y and x "
                                      "(array[..., ::2**l, ::2**l])";

/* Writes (planes, H, W) (or (H, W) with planes 0) as the L levels "0".."L-1" under dir. */
static ms_status_t write_levels(const char *dir, const void *data, ms_zarr_dtype_t dt,
                                int planes, int H, int W, int L, int zlevel)
{
    ms_status_t st = MS_OK;
    uint8_t *lv = NULL;
    const size_t es = dt == MS_ZARR_U16 ? 2 : 1;
    const int P = planes ? planes : 1;
    char path[4096];
    MS_ALLOC(lv, (size_t)P * H * W * es, "a resolution level");
    for (int l = 0; l < L; l++) {
        int f = 1 << l, h = (H + f - 1) / f, w = (W + f - 1) / f;
        subsample(lv, data, es, P, H, W, f, h, w);
        size_t shape[3] = {(size_t)P, (size_t)h, (size_t)w};
        size_t chunks[3] = {1, (size_t)(h < MAX_CHUNK ? h : MAX_CHUNK),
                            (size_t)(w < MAX_CHUNK ? w : MAX_CHUNK)};
        MS_TRY(ms_zarr_path(path, sizeof path, "%s/%d", dir, l));
        if (planes)
            MS_TRY(ms_zarr_write_array(path, 3, shape, chunks, dt, zlevel, lv));
        else
            MS_TRY(ms_zarr_write_array(path, 2, shape + 1, chunks + 1, dt, zlevel, lv));
    }
done:
    free(lv);
    return st;
}

/* Plane (i, k) of the score output's /class_masks [N, K, H, W] as 0/1. */
static ms_status_t read_class_mask(const ms_export_input_t *in, size_t i, int k, uint8_t *out)
{
    ms_status_t st = MS_OK;
    hid_t d = H5I_INVALID_HID, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t start[4] = {i, (hsize_t)k, 0, 0}, count[4] = {1, 1, in->H, in->W};
    hsize_t n = (hsize_t)in->H * in->W;
    if ((d = H5Dopen2((hid_t)in->s.file, "class_masks", H5P_DEFAULT)) < 0 ||
        (fs = H5Dget_space(d)) < 0 ||
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        (ms = H5Screate_simple(1, &n, NULL)) < 0 ||
        H5Dread(d, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, out) < 0)
        MS_FAIL(MS_EFORMAT, "%s: cannot read /class_masks[%zu, %d]", in->scores_path, i, k);
    for (hsize_t j = 0; j < n; j++)
        out[j] = out[j] != 0;
done:
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    if (d >= 0)
        H5Dclose(d);
    return st;
}

/* The map (h, w) of one class at every pixel of the image: each pixel takes the value of the
 * instance whose receptive field centre (offset + stride * (u, v)) is nearest, clamped at the
 * border (a tie goes to the next instance), as round(p * 65535). Nearest, not interpolated:
 * every pixel holds a probability the network gave, and a map's 16 x 16 blocks of one value
 * compress several times smaller than smooth ones. */
static ms_status_t upsample_map(uint16_t *out, const float *map, const ms_export_input_t *in,
                                size_t i, int k)
{
    const int h = in->s.map_h, w = in->s.map_w;
    for (int j = 0; j < h * w; j++)
        if (!(map[j] >= 0 && map[j] <= 1))
            return MS_ERR(MS_EFORMAT, "%s: /maps[%zu, %d] holds %g, not a probability",
                          in->scores_path, i, k, map[j]);
    for (int y = 0; y < in->H; y++) {
        double v = floor((y - in->offset) / in->stride + 0.5);
        const float *row = map + (size_t)(v < 0 ? 0 : v > h - 1 ? h - 1 : v) * w;
        for (int x = 0; x < in->W; x++) {
            double u = floor((x - in->offset) / in->stride + 0.5);
            float p = row[u < 0 ? 0 : u > w - 1 ? w - 1 : (int)u];
            out[(size_t)y * in->W + x] = (uint16_t)lrint(p * MAP_SCALE);
        }
    }
    return MS_OK;
}

static const char *const PALETTE[] = {"0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF",
                                      "FFFF00", "FFFFFF"};

/* One label image under labels/: (H, W) data at L levels with its image-label metadata. */
static ms_status_t write_label(const char *labels_dir, const char *key, const char *name,
                               const void *data, ms_zarr_dtype_t dt, int L, int zlevel,
                               const ms_export_input_t *in, const ms_json_t *image_label)
{
    ms_status_t st = MS_OK;
    ms_json_t a = {0};
    char dir[4096];
    MS_TRY(ms_zarr_path(dir, sizeof dir, "%s/%s", labels_dir, key));
    ms_json_raw(&a, "{");
    multiscales(&a, name, 0, L, in, SUBSAMPLED);
    ms_json_raw(&a, ",\n\"image-label\": {\"version\": \"0.4\", \"source\": {\"image\": "
                    "\"../../\"}%s%s}}\n", image_label && image_label->len ? ", " : "",
                image_label && image_label->len ? image_label->s : "");
    if (image_label && image_label->failed)
        a.failed = 1;
    MS_TRY(ms_zarr_group(dir, &a));
    MS_TRY(write_levels(dir, data, dt, 0, in->H, in->W, L, zlevel));
done:
    ms_json_free(&a);
    return st;
}

/* One field: the image group (channels + maps) and its labels. */
static ms_status_t write_field(const char *dir, const ms_export_input_t *in, size_t i,
                               int levels, int zlevel)
{
    ms_status_t st = MS_OK;
    const ms_scores_t *s = &in->s;
    ms_shard_t *sh = in->shard;
    const int C = ms_shard_channels(sh), H = in->H, W = in->W, K = s->K;
    const int maps = s->map_h > 0, Cz = C + (maps ? K : 0);
    const size_t HW = (size_t)H * W;
    const int L = levels ? levels : auto_levels(H, W);
    uint16_t *img = NULL;  /* (Cz, H, W): channels, then class maps */
    float *map = NULL;     /* (h, w) */
    uint8_t *mask = NULL;  /* (H, W) */
    uint16_t *cells = NULL; /* (H, W) */
    ms_json_t a = {0}, lab = {0}, il = {0};
    char ldir[4096];
    const ms_image_meta_t *m = ms_shard_meta(sh, (int)i);

    MS_ALLOC(img, (size_t)Cz * HW, "an exported image");
    MS_TRY(ms_shard_read(sh, (int)i, img));
    if (maps) {
        MS_ALLOC(map, (size_t)s->map_h * s->map_w, "an instance map");
        for (int k = 0; k < K; k++) {
            MS_TRY(ms_scores_read_map(s, i, k, map));
            MS_TRY(upsample_map(img + (size_t)(C + k) * HW, map, in, i, k));
        }
    }

    /* the image group's metadata: multiscales, omero (channel names, colours, contrast) */
    ms_json_raw(&a, "{\n");
    multiscales(&a, s->image_id[i], 1, L, in, SUBSAMPLED);
    ms_json_raw(&a, ",\n\"omero\": {\"version\": \"0.4\", \"name\": ");
    ms_json_str(&a, s->image_id[i]);
    ms_json_raw(&a, ", \"rdefs\": {\"model\": \"color\", \"defaultT\": 0, \"defaultZ\": 0}, "
                    "\"channels\": [");
    for (int c = 0; c < Cz; c++) {
        const uint16_t *p = img + (size_t)c * HW;
        uint16_t lo = 65535, hi = 0;
        char label[512];
        if (c < C) {
            for (size_t j = 0; j < HW; j++) {
                lo = p[j] < lo ? p[j] : lo;
                hi = p[j] > hi ? p[j] : hi;
            }
            hi = hi > lo ? hi : lo + 1;
            snprintf(label, sizeof label, "%s", ms_shard_channel_name(sh, c));
        } else {
            lo = 0;
            hi = 65535;
            snprintf(label, sizeof label, "map:%s", s->class_names[c - C]);
        }
        ms_json_raw(&a, "%s\n  {\"label\": ", c ? "," : "");
        ms_json_str(&a, label);
        ms_json_raw(&a, ", \"color\": \"%s\", \"active\": %s, \"coefficient\": 1, \"family\": "
                        "\"linear\", \"inverted\": false, \"window\": {\"min\": 0, \"max\": "
                        "65535, \"start\": %d, \"end\": %d}}",
                    c >= C ? "FFA500" : C == 1 ? "FFFFFF" : PALETTE[c % 7],
                    c < C ? "true" : "false", lo, hi);
    }
    ms_json_raw(&a, "]},\n\"milscreen\": {\"image_id\": ");
    ms_json_str(&a, s->image_id[i]);
    ms_json_raw(&a, ", \"plate\": ");
    ms_json_str(&a, m->plate);
    ms_json_raw(&a, ", \"well\": ");
    ms_json_str(&a, m->well);
    ms_json_raw(&a, ", \"site\": %d, \"treatment\": ", m->site);
    ms_json_str(&a, m->treatment);
    ms_json_raw(&a, ", \"replicate\": %d, \"shard\": ", m->replicate);
    ms_json_str(&a, ms_export_basename(in->shard_path));
    ms_json_raw(&a, ", \"scores\": ");
    ms_json_str(&a, ms_export_basename(in->scores_path));
    ms_json_raw(&a, ", \"image_channels\": %d", C);
    if (maps) {
        ms_json_raw(&a, ", \"map_channels\": {\"first\": %d, \"classes\": [", C);
        for (int k = 0; k < K; k++) {
            ms_json_raw(&a, k ? ", " : "");
            ms_json_str(&a, s->class_names[k]);
        }
        ms_json_raw(&a, "], \"value\": \"round(p * 65535), p the probability of the instance "
                        "whose centre, offset + stride * (u, v), is nearest\", \"stride\": %d, "
                        "\"offset\": ", in->stride);
        ms_json_num(&a, in->offset);
        ms_json_raw(&a, "}");
    }
    ms_json_raw(&a, "}\n}\n");
    MS_TRY(ms_zarr_group(dir, &a));
    MS_TRY(write_levels(dir, img, MS_ZARR_U16, Cz, H, W, L, zlevel));

    /* labels: the predicted mask, the shard's true cells, each class's mask */
    int has_class_masks = ms_h5_exists((hid_t)s->file, "class_masks");
    if (has_class_masks) {
        int r;
        hsize_t d[8];
        MS_TRY(ms_h5_dims((hid_t)s->file, "class_masks", &r, d));
        if (r != 4 || d[0] != s->N || d[1] != (hsize_t)K || d[2] != (hsize_t)H ||
            d[3] != (hsize_t)W)
            MS_FAIL(MS_EFORMAT, "%s: /class_masks is not (%zu, %d, %d, %d)", in->scores_path,
                    s->N, K, H, W);
    }
    const int has_cells = ms_shard_has_masks(sh);
    if (!s->mask_h && !has_cells && !has_class_masks)
        goto done;
    MS_TRY(ms_zarr_path(ldir, sizeof ldir, "%s/labels", dir));
    ms_json_raw(&lab, "{\"labels\": [");
    int nl = 0;
    if (s->mask_h)
        ms_json_raw(&lab, "%s\"mask\"", nl++ ? ", " : "");
    if (has_cells)
        ms_json_raw(&lab, "%s\"true_cells\"", nl++ ? ", " : "");
    for (int k = 0; has_class_masks && k < K; k++)
        ms_json_raw(&lab, "%s\"class_mask_%d\"", nl++ ? ", " : "", k);
    ms_json_raw(&lab, "]}\n");
    MS_TRY(ms_zarr_group(ldir, &lab));
    MS_ALLOC(mask, HW, "a mask");
    if (s->mask_h) {
        MS_TRY(ms_scores_read_mask(s, i, mask));
        ms_json_raw(&il, "\"colors\": [{\"label-value\": 1, \"rgba\": [0, 255, 255, 255]}]");
        MS_TRY(write_label(ldir, "mask", "mask", mask, MS_ZARR_U8, L, zlevel, in, &il));
        ms_json_free(&il);
    }
    if (has_cells) {
        MS_ALLOC(cells, HW, "true cells");
        MS_TRY(ms_shard_read_mask(sh, (int)i, cells));
        /* each cell's true class (the shard's /cells records) shown beside its id */
        ms_cells_t c = {0};
        if (ms_shard_has_cells(sh))
            MS_TRY(ms_shard_cells(sh, &c));
        int np = 0;
        for (int j = 0; c.mask_id && j < c.n; j++) {
            if (c.image_index[j] != (int)i || c.mask_id[j] <= 0)
                continue;
            int lb = c.label ? c.label[j] : -1;
            ms_json_raw(&il, "%s{\"label-value\": %d, \"class\": ", np++ ? ", " : "\"properties\": [",
                        c.mask_id[j]);
            ms_json_str(&il, lb >= 0 && lb < ms_shard_classes(sh) ? ms_shard_class_name(sh, lb)
                                                                 : "none");
            ms_json_raw(&il, "}");
        }
        if (np)
            ms_json_raw(&il, "]");
        MS_TRY(write_label(ldir, "true_cells", "true cells", cells, MS_ZARR_U16, L, zlevel, in,
                           np ? &il : NULL));
        ms_json_free(&il);
    }
    for (int k = 0; has_class_masks && k < K; k++) {
        char key[32], name[512];
        MS_TRY(read_class_mask(in, i, k, mask));
        snprintf(key, sizeof key, "class_mask_%d", k);
        snprintf(name, sizeof name, "mask:%s", s->class_names[k]);
        ms_json_raw(&il, "\"colors\": [{\"label-value\": 1, \"rgba\": [255, 165, 0, 255]}], "
                         "\"properties\": [{\"label-value\": 1, \"class\": ");
        ms_json_str(&il, s->class_names[k]);
        ms_json_raw(&il, "}]");
        MS_TRY(write_label(ldir, key, name, mask, MS_ZARR_U8, L, zlevel, in, &il));
        ms_json_free(&il);
    }
done:
    free(img);
    free(map);
    free(mask);
    free(cells);
    ms_json_free(&a);
    ms_json_free(&lab);
    ms_json_free(&il);
    return st;
}

static const int PLATE_FORMATS[][2] = {{2, 3}, {3, 4}, {4, 6}, {6, 8}, {8, 12}, {16, 24},
                                       {32, 48}}; /* rows, columns: 6 to 1536 wells */

/* One plate: refs[0..n) sorted by well and site. */
static ms_status_t write_plate(const char *dir, const char *name, ms_export_input_t *in,
                               ref_t *refs, size_t n, int levels, int zlevel, char ***paths)
{
    ms_status_t st = MS_OK;
    ms_json_t a = {0}, w = {0};
    char pdir[4096], path[4096];
    int rows = 0, cols = 0, fields = 0;
    for (size_t j = 0, f = 0; j < n; j++) {
        rows = refs[j].row + 1 > rows ? refs[j].row + 1 : rows;
        cols = refs[j].col + 1 > cols ? refs[j].col + 1 : cols;
        f = j && refs[j].row == refs[j - 1].row && refs[j].col == refs[j - 1].col ? f + 1 : 1;
        fields = (int)f > fields ? (int)f : fields;
    }
    /* every row and column of the physical plate is listed (the spec's MUST): the smallest
     * standard format that holds the wells used, else just as many as used */
    for (size_t p = 0; p < sizeof PLATE_FORMATS / sizeof *PLATE_FORMATS; p++)
        if (rows <= PLATE_FORMATS[p][0] && cols <= PLATE_FORMATS[p][1]) {
            rows = PLATE_FORMATS[p][0];
            cols = PLATE_FORMATS[p][1];
            break;
        }
    ms_json_raw(&a, "{\"plate\": {\"version\": \"0.4\", \"name\": ");
    ms_json_str(&a, name);
    ms_json_raw(&a, ", \"field_count\": %d,\n\"rows\": [", fields);
    for (int r = 0; r < rows; r++) {
        char rn[4];
        row_name(r, rn);
        ms_json_raw(&a, "%s{\"name\": \"%s\"}", r ? ", " : "", rn);
    }
    ms_json_raw(&a, "],\n\"columns\": [");
    for (int c = 0; c < cols; c++)
        ms_json_raw(&a, "%s{\"name\": \"%d\"}", c ? ", " : "", c + 1);
    ms_json_raw(&a, "],\n\"wells\": [");
    for (size_t j = 0, nw = 0; j < n; j++) {
        if (j && refs[j].row == refs[j - 1].row && refs[j].col == refs[j - 1].col)
            continue;
        char rn[4];
        row_name(refs[j].row, rn);
        ms_json_raw(&a, "%s\n  {\"path\": \"%s/%d\", \"rowIndex\": %d, \"columnIndex\": %d}",
                    nw++ ? "," : "", rn, refs[j].col + 1, refs[j].row, refs[j].col);
    }
    ms_json_raw(&a, "]}}\n");
    MS_TRY(ms_zarr_path(pdir, sizeof pdir, "%s", dir));
    MS_TRY(ms_zarr_group(pdir, &a));

    for (size_t j = 0; j < n;) {
        char rn[4];
        size_t e = j;
        while (e < n && refs[e].row == refs[j].row && refs[e].col == refs[j].col)
            e++;
        row_name(refs[j].row, rn);
        if (!j || refs[j].row != refs[j - 1].row) {
            MS_TRY(ms_zarr_path(path, sizeof path, "%s/%s", pdir, rn));
            MS_TRY(ms_zarr_group(path, NULL));
        }
        ms_json_free(&w);
        ms_json_raw(&w, "{\"well\": {\"version\": \"0.4\", \"images\": [");
        for (size_t f = j; f < e; f++)
            ms_json_raw(&w, "%s{\"path\": \"%zu\"}", f > j ? ", " : "", f - j);
        ms_json_raw(&w, "]}, \"milscreen\": {\"well\": ");
        ms_json_str(&w, ms_shard_meta(in[refs[j].in].shard, refs[j].i)->well);
        ms_json_raw(&w, "}}\n");
        MS_TRY(ms_zarr_path(path, sizeof path, "%s/%s/%d", pdir, rn, refs[j].col + 1));
        MS_TRY(ms_zarr_group(path, &w));
        for (size_t f = j; f < e; f++) {
            MS_TRY(ms_zarr_path(path, sizeof path, "%s/%s/%d/%zu", pdir, rn, refs[j].col + 1,
                                f - j));
            MS_TRY(write_field(path, &in[refs[f].in], (size_t)refs[f].i, levels, zlevel));
            /* the CSV's zarr_path: relative to the export folder */
            char rel[4096];
            MS_TRY(ms_zarr_path(rel, sizeof rel, "%s/%s/%d/%zu", ms_export_basename(pdir), rn,
                                refs[j].col + 1, f - j));
            if (!(paths[refs[f].in][refs[f].i] = strdup(rel)))
                MS_FAIL(MS_ENOMEM, "out of memory");
        }
        j = e;
    }
done:
    ms_json_free(&a);
    ms_json_free(&w);
    return st;
}

void ms_export_free_paths(char ***zarr_path, const ms_export_input_t *in, int n_in)
{
    if (!zarr_path)
        return;
    for (int a = 0; a < n_in; a++) {
        for (size_t i = 0; zarr_path[a] && i < in[a].s.N; i++)
            free(zarr_path[a][i]);
        free(zarr_path[a]);
    }
    free(zarr_path);
}

ms_status_t ms_export_omezarr(const char *dir, ms_export_input_t *in, int n_in, int levels,
                              int zlib_level, char ****zarr_path, char ***plates,
                              int *n_plates)
{
    ms_status_t st = MS_OK;
    ref_t *refs = NULL;
    char ***paths = NULL, **names = NULL; /* (n_in)(N), (plates) */
    const char **first = NULL;             /* (plates) each plate's name as in the metadata */
    int np = 0;
    size_t n = 0;
    *zarr_path = NULL;
    *plates = NULL;
    *n_plates = 0;
    if (n_in < 1)
        return MS_OK;
    for (int a = 0; a < n_in; a++)
        n += in[a].s.N;
    MS_ALLOC(refs, n, "image positions");
    MS_ALLOC(paths, n_in, "field paths");
    n = 0;
    for (int a = 0; a < n_in; a++) {
        MS_ALLOC(paths[a], in[a].s.N, "field paths");
        for (size_t i = 0; i < in[a].s.N; i++) {
            const ms_image_meta_t *m = ms_shard_meta(in[a].shard, (int)i);
            ref_t *r = &refs[n++];
            *r = (ref_t){.in = a, .i = (int)i, .plate = m->plate ? m->plate : "",
                         .site = m->site};
            if (!parse_well(m->well ? m->well : "", &r->row, &r->col))
                MS_FAIL(MS_EFORMAT, "%s: image %s is in well '%s', not a plate position such "
                        "as B03 (row letters, column number): an OME-Zarr plate cannot hold "
                        "it (--no-zarr writes the tables alone)", in[a].shard_path,
                        in[a].s.image_id[i], m->well ? m->well : "");
        }
    }
    qsort(refs, n, sizeof *refs, by_position);
    MS_ALLOC(names, n, "plate names"); /* at most one plate per image */
    MS_ALLOC(first, n, "plate names");
    for (size_t j = 0; j < n;) {
        size_t e = j;
        while (e < n && !strcmp(refs[e].plate, refs[j].plate))
            e++;
        char pname[512], pdir[4096];
        plate_dir_name(refs[j].plate, pname, sizeof pname);
        for (int p = 0; p < np; p++)
            if (!strcmp(names[p], pname))
                MS_FAIL(MS_EARG, "plates '%s' and '%s' would both be written to %s",
                        first[p], refs[j].plate, pname);
        if (!(names[np] = strdup(pname)))
            MS_FAIL(MS_ENOMEM, "out of memory");
        first[np++] = refs[j].plate;
        MS_TRY(ms_zarr_path(pdir, sizeof pdir, "%s/%s", dir, pname));
        MS_TRY(write_plate(pdir, refs[j].plate, in, refs + j, e - j, levels, zlib_level, paths));
        j = e;
    }
    *zarr_path = paths;
    paths = NULL;
    *plates = names;
    *n_plates = np;
    names = NULL;
    np = 0;
done:
    free(refs);
    free(first);
    ms_export_free_paths(paths, in, n_in);
    for (int p = 0; names && p < np; p++)
        free(names[p]);
    free(names);
    return st;
}
