/* Prints what milscreen's shard reader sees, one tab-separated record per line, so that
 * tests/io_roundtrip.py can compare it with h5py's view of the same file: shape and names,
 * each image's metadata and a 64-bit FNV-1a hash of its pixels (as uint16 little-endian,
 * decoded by the raw-chunk path; the HDF5 path must agree), cells and the digest.
 * Usage: io_shard_dump SHARD */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/shard.h"

static uint64_t fnv(const uint16_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (p[i] & 0xff)) * 1099511628211ULL;
        h = (h ^ (p[i] >> 8)) * 1099511628211ULL;
    }
    return h;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: io_shard_dump SHARD\n");
        return 2;
    }
    ms_shard_t *s = NULL;
    if (ms_shard_open(&s, argv[1])) {
        fprintf(stderr, "io_shard_dump: %s\n", ms_error_message());
        return 1;
    }
    int n = ms_shard_count(s), c = ms_shard_channels(s), h = ms_shard_height(s);
    int w = ms_shard_width(s), k = ms_shard_classes(s);
    printf("shape\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", n, c, h, w, k, ms_shard_multi_label(s),
           ms_shard_dtype(s) == MS_DTYPE_U8 ? "uint8" : "uint16");
    for (int j = 0; j < k; j++)
        printf("class\t%d\t%s\n", j, ms_shard_class_name(s, j));
    for (int j = 0; j < c; j++)
        printf("channel\t%d\t%s\n", j, ms_shard_channel_name(s, j));
    size_t npix = (size_t)c * h * w;
    uint16_t *a = malloc(npix * 2), *b = malloc(npix * 2);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const ms_image_meta_t *m = ms_shard_meta(s, i);
        if (ms_shard_read(s, i, a) || ms_shard_read_hdf5(s, i, b)) {
            fprintf(stderr, "io_shard_dump: %s\n", ms_error_message());
            rc = 1;
            break;
        }
        if (memcmp(a, b, npix * 2)) {
            fprintf(stderr, "io_shard_dump: image %d: raw-chunk and HDF5 decoding differ\n", i);
            rc = 1;
        }
        printf("image\t%d\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t", i, m->image_id, m->plate, m->well,
               m->site, m->treatment, m->replicate, ms_shard_labelled(s, i) ? m->label : -1);
        const uint8_t *row = ms_shard_labels(s, i);
        for (int j = 0; j < k; j++)
            putchar(ms_shard_labelled(s, i) ? '0' + row[j] : '?');
        printf("\t%016llx\n", (unsigned long long)fnv(a, npix));
    }
    if (ms_shard_has_cells(s)) {
        ms_cells_t cl;
        ms_shard_cells(s, &cl);
        for (int j = 0; j < cl.n; j++)
            printf("cell\t%d\t%.3f\t%.3f\t%d\t%d\n", cl.image_index[j], cl.x[j], cl.y[j],
                   cl.label[j], cl.mask_id[j]);
    }
    if (ms_shard_has_masks(s)) {
        uint16_t *m = malloc((size_t)h * w * 2);
        for (int i = 0; i < n && !rc; i++) {
            if (ms_shard_read_mask(s, i, m)) {
                fprintf(stderr, "io_shard_dump: %s\n", ms_error_message());
                rc = 1;
            }
            printf("mask\t%d\t%016llx\n", i, (unsigned long long)fnv(m, (size_t)h * w));
        }
        free(m);
    }
    char d[65];
    if (!rc && ms_shard_digest(s, d) == MS_OK)
        printf("digest\t%s\n", d);
    free(a);
    free(b);
    ms_shard_close(s);
    return rc;
}
