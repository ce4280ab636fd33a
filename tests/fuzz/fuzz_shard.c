/* Fuzz target: the shard reader (io/shard.c). Structure-aware: the input bytes decide how an
 * HDF5 file is built — shape, pixel type, chunk layout, filters, which chunks are written,
 * which attributes and /meta datasets exist and with what lengths and values, cells, masks,
 * and bytes flipped in the file (written in milscreen's checksummed format) — so that the fuzzer explores our reader's checks
 * rather than libhdf5's own file parser. Properties beyond "no crash": a refusal carries a
 * message; an accepted shard's labels lie in range; and where both the fast decoder and
 * HDF5's own H5Dread read an image, they agree pixel for pixel. */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/h5util.h"
#include "io/shard.h"
#include "tests/fuzz/check.h"

typedef struct {
    const uint8_t *p;
    size_t n;
} bytes_t;

/* The next input byte modulo mod (0 when the input is used up). */
static unsigned take(bytes_t *b, unsigned mod)
{
    if (!b->n)
        return 0;
    unsigned v = *b->p++;
    b->n--;
    return mod ? v % mod : v;
}

static void put_strings(hid_t f, const char *name, int n, const char *prefix, bytes_t *b)
{
    char (*buf)[16] = calloc((size_t)(n ? n : 1), 16);
    const char **s = calloc((size_t)(n ? n : 1), sizeof *s);
    for (int i = 0; i < n; i++) {
        /* mostly unique ids; sometimes a duplicate or an empty one */
        unsigned r = take(b, 16);
        snprintf(buf[i], 16, "%s%d", r == 0 ? "" : prefix, r == 1 && i ? i - 1 : i);
        s[i] = buf[i];
    }
    ms_h5_write_strings(f, name, (size_t)n, s);
    free(s);
    free(buf);
}

static void put_ints(hid_t f, const char *name, int n, int lo, int span, bytes_t *b)
{
    int *v = calloc((size_t)(n ? n : 1), sizeof *v);
    for (int i = 0; i < n; i++)
        v[i] = lo + (int)take(b, (unsigned)span);
    hsize_t d[1] = {(hsize_t)n};
    ms_h5_write(f, name, H5T_NATIVE_INT, 1, d, v, NULL, 0);
    free(v);
}

static void put_names(hid_t f, const char *attr, int n)
{
    const char *names[8];
    char buf[8][8];
    for (int i = 0; i < n && i < 8; i++) {
        snprintf(buf[i], sizeof buf[i], "n%d", i);
        names[i] = buf[i];
    }
    ms_h5_attr_set_strings(f, attr, (size_t)n, names);
}

/* Builds the file the input describes; returns 0 when HDF5 refused to build it. */
static int build(const char *path, bytes_t *b)
{
    ms_h5_quiet();
    hid_t fapl = ms_h5_fapl();
    /* the format milscreen writes (ms_h5_create): checksummed metadata, so that a flipped
     * byte in an object header is HDF5's checksum error, not a walk through libhdf5 1.10's
     * parser of unchecked metadata (whose crashes are HDF5's, out of this target's reach) */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0)
        return 0;
    int N = (int)take(b, 5), C = 1 + (int)take(b, 3), H = 1 + (int)take(b, 24),
        W = 1 + (int)take(b, 24), K = (int)take(b, 5);
    unsigned dt = take(b, 5), layout = take(b, 5), filt = take(b, 4);
    hid_t ftype = dt == 0 ? H5T_STD_U8LE : dt == 1 ? H5T_STD_U16LE : dt == 2 ? H5T_STD_I16LE
                  : dt == 3 ? H5T_IEEE_F32LE : H5T_STD_U16BE;
    hsize_t dims[4] = {(hsize_t)N, (hsize_t)C, (hsize_t)H, (hsize_t)W};
    int rank = take(b, 16) == 0 ? 3 : 4; /* sometimes the wrong rank */
    hid_t space = H5Screate_simple(rank, rank == 4 ? dims : dims + 1, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (layout > 0 && N > 0) {
        hsize_t th = 1 + take(b, (unsigned)H), tw = 1 + take(b, (unsigned)W);
        hsize_t ch[4] = {layout == 4 ? 2 : 1, layout == 3 ? 1 : (hsize_t)C,
                         layout == 1 ? (hsize_t)H : th, layout == 1 ? (hsize_t)W : tw};
        H5Pset_chunk(dcpl, rank, rank == 4 ? ch : ch + 1);
        if (filt == 2 || filt == 3)
            H5Pset_shuffle(dcpl);
        if (filt == 3)
            H5Pset_fletcher32(dcpl);
        if (filt)
            H5Pset_deflate(dcpl, 1);
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_INCR);
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    }
    hid_t ds = H5Dcreate2(f, "images", ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (ds >= 0 && rank == 4) {
        size_t px = (size_t)C * H * W;
        uint16_t *img = malloc(px * sizeof *img);
        for (int i = 0; i < N && img; i++) {
            if (take(b, 4) == 0)
                continue; /* this image is never written */
            for (size_t j = 0; j < px; j++)
                img[j] = (uint16_t)(take(b, 0) * 257u + j);
            hsize_t start[4] = {(hsize_t)i, 0, 0, 0}, count[4] = {1, (hsize_t)C, (hsize_t)H,
                                                                   (hsize_t)W};
            hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(4, count, NULL);
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
            H5Dwrite(ds, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, img);
            H5Sclose(ms);
            H5Sclose(fs);
        }
        free(img);
    }
    if (ds >= 0)
        H5Dclose(ds);

    /* attributes: each sometimes missing or wrong */
    if (take(b, 16))
        ms_h5_attr_set_str(f, "format", take(b, 16) ? MS_SHARD_FORMAT : "milscreen-scores");
    if (take(b, 16))
        ms_h5_attr_set_int(f, "format_version", take(b, 16) ? MS_SHARD_VERSION : 7);
    if (take(b, 16))
        put_names(f, "channel_names", take(b, 8) ? C : C + 1);
    if (take(b, 16))
        put_names(f, "class_names", K);
    int multi = take(b, 3) == 0;
    if (take(b, 16))
        ms_h5_attr_set_int(f, "multi_label", multi);

    /* metadata: lengths sometimes off by one, values sometimes out of range */
    int nm = take(b, 12) == 0 ? N + 1 : N;
    if (take(b, 16))
        put_strings(f, "meta/image_id", nm, "img", b);
    put_strings(f, "meta/plate", nm, "p", b);
    put_strings(f, "meta/well", nm, "A", b);
    put_strings(f, "meta/treatment", nm, "t", b);
    put_ints(f, "meta/site", nm, 0, 4, b);
    put_ints(f, "meta/replicate", nm, 0, 4, b);
    if (multi) {
        uint8_t *lab = calloc((size_t)(nm * K + 1), 1);
        for (int j = 0; j < nm * K; j++) {
            unsigned r = take(b, 8);
            lab[j] = r < 3 ? 0 : r < 6 ? 1 : r == 6 ? 255 : (uint8_t)take(b, 0);
        }
        hsize_t d2[2] = {(hsize_t)nm, (hsize_t)K};
        ms_h5_write(f, "meta/labels", H5T_NATIVE_UINT8, 2, d2, lab, NULL, 0);
        free(lab);
    } else {
        put_ints(f, "meta/label", nm, -2, K + 3, b);
    }
    if (take(b, 4) == 0) { /* cells */
        int nc = (int)take(b, 6);
        put_ints(f, "cells/image_index", nc, -1, N + 2, b);
        put_ints(f, "cells/label", take(b, 8) ? nc : nc + 1, -1, K + 1, b);
        float *xy = calloc((size_t)nc + 1, sizeof *xy);
        for (int j = 0; j < nc; j++)
            xy[j] = (float)take(b, 0) - 8.0f;
        hsize_t dc[1] = {(hsize_t)nc};
        ms_h5_write(f, "cells/x", H5T_NATIVE_FLOAT, 1, dc, xy, NULL, 0);
        ms_h5_write(f, "cells/y", H5T_NATIVE_FLOAT, 1, dc, xy, NULL, 0);
        free(xy);
    }
    if (take(b, 4) == 0) { /* true masks, sometimes with the wrong shape */
        hsize_t md[3] = {(hsize_t)N, (hsize_t)H, (hsize_t)(take(b, 6) ? W : W + 1)};
        size_t n = md[0] * md[1] * md[2];
        uint16_t *m = calloc(n + 1, sizeof *m);
        ms_h5_write(f, "masks", H5T_NATIVE_UINT16, 3, md, m, NULL, 0);
        free(m);
    }
    H5Fclose(f);

    /* flip bytes inside the file at input-chosen places past the superblock */
    unsigned flips = take(b, 4) == 0 ? 1 + take(b, 4) : 0;
    FILE *fp = flips ? fopen(path, "r+b") : NULL;
    if (fp) {
        fseek(fp, 0, SEEK_END);
        long len = ftell(fp);
        for (unsigned j = 0; j < flips && len > 512; j++) {
            long at = 512 + (long)((take(b, 0) << 8 | take(b, 0)) % (unsigned)(len - 512));
            fseek(fp, at, SEEK_SET);
            int c = fgetc(fp);
            fseek(fp, at, SEEK_SET);
            fputc(c ^ (1 + (int)take(b, 255)), fp);
        }
        fclose(fp);
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[128];
    if (!path[0]) { /* memory-backed when the system has it: thousands of files a minute */
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/ms-fuzz-shard-%ld.h5", dir, (long)getpid());
    }
    bytes_t b = {data, size};
    if (!build(path, &b))
        return 0;
    ms_shard_t *s = NULL;
    ms_status_t st = ms_shard_open(&s, path);
    if (st) {
        FUZZ_CHECK(ms_error_message()[0], "ms_shard_open failed without a message");
        ms_error_clear();
        unlink(path);
        return 0;
    }
    int N = ms_shard_count(s), C = ms_shard_channels(s), H = ms_shard_height(s),
        W = ms_shard_width(s), K = ms_shard_classes(s);
    size_t px = (size_t)C * H * W;
    uint16_t *a = malloc(px * sizeof *a), *h = malloc(px * sizeof *h);
    for (int i = 0; i < N && a && h; i++) {
        int lab = ms_shard_label(s, i);
        FUZZ_CHECK(lab >= -1 && lab < K, "image %d: label %d of %d classes", i, lab, K);
        const uint8_t *row = ms_shard_labels(s, i);
        for (int k = 0; k < K; k++)
            FUZZ_CHECK(row[k] <= 1, "image %d: label row value %d", i, row[k]);
        ms_status_t s1 = ms_shard_read(s, i, a);
        ms_error_clear();
        ms_status_t s2 = ms_shard_read_hdf5(s, i, h);
        ms_error_clear();
        if (s1 == MS_OK && s2 == MS_OK)
            FUZZ_CHECK(!memcmp(a, h, px * sizeof *a), "image %d: the fast decoder and H5Dread "
                       "disagree", i);
        const uint16_t *view = NULL;
        if (ms_shard_read_view(s, i, &view) == MS_OK && view && s1 == MS_OK)
            FUZZ_CHECK(!memcmp(view, a, px * sizeof *a), "image %d: read_view disagrees", i);
        ms_error_clear();
        int y = (int)take(&b, (unsigned)H), x = (int)take(&b, (unsigned)W);
        int rh = 1 + (int)take(&b, (unsigned)(H - y)), rw = 1 + (int)take(&b, (unsigned)(W - x));
        if (ms_shard_read_region(s, i, y, x, rh, rw, h) == MS_OK && s1 == MS_OK)
            for (int c = 0; c < C; c++)
                for (int yy = 0; yy < rh; yy++)
                    FUZZ_CHECK(!memcmp(h + ((size_t)c * rh + yy) * rw,
                                       a + ((size_t)c * H + y + yy) * W + x, rw * sizeof *a),
                               "image %d: region (%d,%d %dx%d) disagrees", i, y, x, rh, rw);
        ms_error_clear();
        if (ms_shard_has_masks(s)) {
            uint16_t *m = malloc((size_t)H * W * sizeof *m);
            if (m && ms_shard_read_mask(s, i, m) != MS_OK)
                FUZZ_CHECK(ms_error_message()[0], "mask read failed without a message");
            ms_error_clear();
            free(m);
        }
    }
    ms_cells_t cells;
    if (ms_shard_has_cells(s) && ms_shard_cells(s, &cells) == MS_OK)
        for (int j = 0; j < cells.n; j++)
            FUZZ_CHECK(cells.image_index[j] >= 0 && cells.image_index[j] < N,
                       "cell %d names image %d of %d", j, cells.image_index[j], N);
    ms_error_clear();
    free(a);
    free(h);
    ms_shard_close(s);
    unlink(path);
    return 0;
}
