/* Shard writer and reader: pixels, tiles, regions, metadata, cells, masks and the digest
 * round-trip; the raw-chunk decoder agrees with HDF5's own; bad files give clear errors and a
 * failed write leaves no file. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/h5util.h"
#include "io/shard.h"
#include "tests/check.h"

static char dir[256];

static uint16_t pix_value(int i, int c, int y, int x, int maxv)
{
    uint32_t v = (uint32_t)(i * 7919 + c * 104729 + y * 131 + x * 31 + (x * y) % 17);
    return (uint16_t)(v % (uint32_t)(maxv + 1));
}

static void fill(uint16_t *p, int i, int c, int h, int w, int maxv)
{
    for (int cc = 0; cc < c; cc++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                p[((size_t)cc * h + y) * w + x] = pix_value(i, cc, y, x, maxv);
}

/* Writes a shard with the given options; returns the path. */
static void make_shard(const char *path, ms_pixel_t dt, ms_comp_t comp, int tile, int multi,
                       int n, int c, int h, int w)
{
    const char *classes[3] = {"alpha", "beta", "gamma"};
    const char *chans[4] = {"DAPI", "Tubulin", "Actin", "GFP"};
    ms_shard_spec_t sp = {.n = n, .c = c, .h = h, .w = w, .dtype = dt, .comp = comp,
                          .tile = tile, .k = 3, .class_names = classes, .channel_names = chans,
                          .multi_label = multi, .masks = 1};
    ms_shard_writer_t *wr = NULL;
    CHECK_OK(ms_shard_create(&wr, path, &sp));
    if (!wr)
        return;
    uint16_t *p = malloc(sizeof(uint16_t) * c * h * w);
    uint16_t *m = malloc(sizeof(uint16_t) * h * w);
    for (int i = 0; i < n; i++) {
        fill(p, i, c, h, w, dt == MS_DTYPE_U8 ? 255 : 65535);
        CHECK_OK(ms_shard_write_image_u16(wr, i, p));
        for (int j = 0; j < h * w; j++)
            m[j] = (uint16_t)((j + i) % 5);
        CHECK_OK(ms_shard_write_mask(wr, i, m));
        char id[32], well[8];
        snprintf(id, sizeof id, "img-%03d", i);
        snprintf(well, sizeof well, "B%02d", i + 1);
        ms_image_meta_t meta = {.image_id = id, .plate = "P1", .well = well, .site = i % 4,
                                .treatment = i % 2 ? "taxol@0.3" : "DMSO@0",
                                .replicate = 1 + i % 3, .label = i == 1 ? -1 : i % 3};
        uint8_t row[3] = {(uint8_t)(i % 2), 1, 0};
        CHECK_OK(ms_shard_set_meta(wr, i, &meta, i == 1 ? NULL : row));
    }
    int32_t ci[2] = {0, n - 1}, cl[2] = {2, -1}, cm[2] = {1, 4};
    float cx[2] = {1.5f, 3.25f}, cy[2] = {2.0f, 0.5f};
    CHECK_OK(ms_shard_add_cells(wr, 2, ci, cx, cy, cl, cm));
    CHECK_OK(ms_shard_finish(wr));
    free(p);
    free(m);
}

static void check_shard(const char *path, ms_pixel_t dt, int multi, int n, int c, int h, int w)
{
    ms_shard_t *s = NULL;
    CHECK_OK(ms_shard_open(&s, path));
    if (!s)
        return;
    CHECK(ms_shard_count(s) == n && ms_shard_channels(s) == c && ms_shard_height(s) == h &&
              ms_shard_width(s) == w,
          "shape");
    CHECK(ms_shard_dtype(s) == dt, "dtype");
    CHECK(ms_shard_classes(s) == 3 && !strcmp(ms_shard_class_name(s, 1), "beta"), "classes");
    CHECK(!strcmp(ms_shard_channel_name(s, 0), "DAPI"), "channels");
    CHECK(ms_shard_multi_label(s) == multi, "multi");
    uint16_t *p = malloc(sizeof(uint16_t) * c * h * w);
    uint16_t *q = malloc(sizeof(uint16_t) * c * h * w);
    uint16_t *m = malloc(sizeof(uint16_t) * h * w);
    int maxv = dt == MS_DTYPE_U8 ? 255 : 65535;
    for (int i = 0; i < n; i++) {
        fill(q, i, c, h, w, maxv);
        memset(p, 0xff, sizeof(uint16_t) * c * h * w);
        CHECK_OK(ms_shard_read(s, i, p));
        CHECK(!memcmp(p, q, sizeof(uint16_t) * c * h * w), "pixels of image %d", i);
        memset(p, 0xff, sizeof(uint16_t) * c * h * w);
        CHECK_OK(ms_shard_read_hdf5(s, i, p));
        CHECK(!memcmp(p, q, sizeof(uint16_t) * c * h * w), "HDF5's pixels of image %d", i);
        /* a window that straddles tiles */
        int y = h / 3, x = w / 4, rh = h / 2, rw = w / 2 + 1;
        CHECK_OK(ms_shard_read_region(s, i, y, x, rh, rw, p));
        int bad = 0;
        for (int cc = 0; cc < c; cc++)
            for (int yy = 0; yy < rh; yy++)
                for (int xx = 0; xx < rw; xx++)
                    bad += p[((size_t)cc * rh + yy) * rw + xx] !=
                           pix_value(i, cc, y + yy, x + xx, maxv);
        CHECK(bad == 0, "region of image %d: %d wrong", i, bad);
        CHECK_OK(ms_shard_read_mask(s, i, m));
        CHECK(m[5] == (5 + i) % 5 && m[h * w - 1] == (h * w - 1 + i) % 5, "mask %d", i);
        const ms_image_meta_t *mt = ms_shard_meta(s, i);
        char id[32];
        snprintf(id, sizeof id, "img-%03d", i);
        CHECK(!strcmp(mt->image_id, id) && !strcmp(mt->plate, "P1"), "meta %d", i);
        CHECK(mt->site == i % 4 && mt->replicate == 1 + i % 3, "meta ints %d", i);
        CHECK(!strcmp(mt->treatment, i % 2 ? "taxol@0.3" : "DMSO@0"), "treatment %d", i);
        const uint8_t *row = ms_shard_labels(s, i);
        if (multi) {
            CHECK(ms_shard_labelled(s, i) == (i != 1), "labelled %d", i);
            if (i != 1)
                CHECK(row[0] == i % 2 && row[1] == 1 && row[2] == 0, "labels row %d", i);
        } else {
            int want = i == 1 ? -1 : i % 3;
            CHECK(ms_shard_label(s, i) == want, "label %d: %d", i, ms_shard_label(s, i));
            CHECK(ms_shard_labelled(s, i) == (want >= 0), "labelled %d", i);
            for (int k = 0; k < 3; k++)
                CHECK(row[k] == (k == want), "one-hot %d", i);
        }
    }
    ms_cells_t cells;
    CHECK_OK(ms_shard_cells(s, &cells));
    CHECK(cells.n == 2 && cells.image_index[1] == n - 1 && cells.x[1] == 3.25f &&
              cells.label[0] == 2 && cells.mask_id[1] == 4,
          "cells");
    CHECK(ms_shard_read(s, n, p) != MS_OK, "out of range read fails");
    ms_shard_close(s);
    free(p);
    free(q);
    free(m);
}

static void test_roundtrips(void)
{
    char path[512];
    struct {
        ms_pixel_t dt;
        ms_comp_t comp;
        int tile, multi, c, h, w;
    } cases[] = {
        {MS_DTYPE_U16, MS_COMP_DEFLATE, 0, 0, 3, 37, 53},
        {MS_DTYPE_U16, MS_COMP_DEFLATE, 16, 1, 2, 37, 53}, /* edge tiles are partial */
        {MS_DTYPE_U8, MS_COMP_NONE, 0, 0, 1, 20, 24},
        {MS_DTYPE_U8, MS_COMP_DEFLATE, 8, 1, 4, 20, 24},
        {MS_DTYPE_U16, MS_COMP_NONE, 10, 0, 3, 20, 24},
    };
    for (size_t j = 0; j < sizeof cases / sizeof *cases; j++) {
        snprintf(path, sizeof path, "%s/s%zu.h5", dir, j);
        make_shard(path, cases[j].dt, cases[j].comp, cases[j].tile, cases[j].multi, 5,
                   cases[j].c, cases[j].h, cases[j].w);
        check_shard(path, cases[j].dt, cases[j].multi, 5, cases[j].c, cases[j].h, cases[j].w);
    }
}

static void test_digest(void)
{
    char a[512], b[512], da[65], db[65], dc[65];
    /* FIPS 180-2 test vector: SHA-256("abc") */
    snprintf(a, sizeof a, "%s/abc.txt", dir);
    FILE *f = fopen(a, "wb");
    fputs("abc", f);
    fclose(f);
    CHECK_OK(ms_file_sha256(a, da));
    CHECK(!strcmp(da, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "%s",
          da);
    /* 56 bytes: padding spills into a second block */
    f = fopen(a, "wb");
    fputs("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", f);
    fclose(f);
    CHECK_OK(ms_file_sha256(a, da));
    CHECK(!strcmp(da, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"), "%s",
          da);
    /* same content twice: same digest; one pixel changed: different */
    snprintf(a, sizeof a, "%s/d1.h5", dir);
    snprintf(b, sizeof b, "%s/d2.h5", dir);
    make_shard(a, MS_DTYPE_U16, MS_COMP_DEFLATE, 0, 0, 2, 1, 8, 8);
    ms_shard_t *s = NULL;
    CHECK_OK(ms_shard_open(&s, a));
    CHECK_OK(ms_shard_digest(s, da));
    ms_shard_close(s);
    CHECK_OK(ms_file_sha256(a, db));
    CHECK(!strcmp(da, db), "digest stable");
    const char *classes[3] = {"alpha", "beta", "gamma"};
    ms_shard_spec_t sp = {.n = 1, .c = 1, .h = 8, .w = 8, .dtype = MS_DTYPE_U16,
                          .comp = MS_COMP_DEFLATE, .k = 3, .class_names = classes};
    uint16_t p[64] = {0};
    ms_image_meta_t meta = {.image_id = "x", .plate = "", .well = "", .treatment = "",
                            .label = 0};
    ms_shard_writer_t *w;
    CHECK_OK(ms_shard_create(&w, b, &sp));
    CHECK_OK(ms_shard_write_image(w, 0, p));
    CHECK_OK(ms_shard_set_meta(w, 0, &meta, NULL));
    CHECK_OK(ms_shard_finish(w));
    CHECK_OK(ms_file_sha256(b, da));
    p[10] = 1;
    CHECK_OK(ms_shard_create(&w, b, &sp));
    CHECK_OK(ms_shard_write_image(w, 0, p));
    CHECK_OK(ms_shard_set_meta(w, 0, &meta, NULL));
    CHECK_OK(ms_shard_finish(w));
    CHECK_OK(ms_file_sha256(b, db));
    CHECK(strcmp(da, db) != 0, "a changed pixel changes the digest");
    meta.label = 1;
    CHECK_OK(ms_shard_create(&w, b, &sp));
    CHECK_OK(ms_shard_write_image(w, 0, p));
    CHECK_OK(ms_shard_set_meta(w, 0, &meta, NULL));
    CHECK_OK(ms_shard_finish(w));
    CHECK_OK(ms_file_sha256(b, dc));
    CHECK(strcmp(dc, db) != 0, "a changed label changes the digest");
}

static int count_files(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A %s/fail | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

static void test_errors(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/fail", dir);
    CHECK(mkdir(path, 0755) == 0, "mkdir %s", path);
    /* an image never written: finish fails, nothing left in the folder */
    snprintf(path, sizeof path, "%s/fail/missing.h5", dir);
    const char *classes[1] = {"a"};
    ms_shard_spec_t sp = {.n = 2, .c = 1, .h = 4, .w = 4, .dtype = MS_DTYPE_U16,
                          .comp = MS_COMP_DEFLATE, .k = 1, .class_names = classes};
    ms_shard_writer_t *w;
    uint16_t p[16] = {0};
    ms_image_meta_t meta = {.image_id = "a", .plate = "", .well = "", .treatment = ""};
    CHECK_OK(ms_shard_create(&w, path, &sp));
    CHECK_OK(ms_shard_write_image(w, 0, p));
    CHECK_OK(ms_shard_set_meta(w, 0, &meta, NULL));
    CHECK_OK(ms_shard_set_meta(w, 1, &meta, NULL));
    CHECK(ms_shard_finish(w) != MS_OK, "finish with a missing image fails");
    CHECK(strstr(ms_error_message(), "image 1 was never written") != NULL, "%s",
          ms_error_message());
    CHECK(count_files() == 0, "no file left behind (%d)", count_files());
    /* duplicate image ids */
    CHECK_OK(ms_shard_create(&w, path, &sp));
    CHECK_OK(ms_shard_write_image(w, 0, p));
    CHECK_OK(ms_shard_write_image(w, 1, p));
    CHECK_OK(ms_shard_set_meta(w, 0, &meta, NULL));
    CHECK_OK(ms_shard_set_meta(w, 1, &meta, NULL));
    CHECK(ms_shard_finish(w) != MS_OK && strstr(ms_error_message(), "not unique"),
          "duplicate ids: %s", ms_error_message());
    CHECK(count_files() == 0, "no file left behind");
    /* a uint8 shard rejects 16-bit values; bad label */
    sp.dtype = MS_DTYPE_U8;
    CHECK_OK(ms_shard_create(&w, path, &sp));
    p[3] = 256;
    CHECK(ms_shard_write_image_u16(w, 0, p) != MS_OK, "256 in a uint8 shard");
    meta.label = 5;
    CHECK(ms_shard_set_meta(w, 0, &meta, NULL) != MS_OK, "label out of range");
    ms_shard_discard(w);
    CHECK(count_files() == 0, "discard leaves nothing");

    /* not a shard, not HDF5, missing */
    ms_shard_t *s = NULL;
    snprintf(path, sizeof path, "%s/fail/text.h5", dir);
    FILE *f = fopen(path, "w");
    fputs("hello\n", f);
    fclose(f);
    CHECK(ms_shard_open(&s, path) == MS_EFORMAT && strstr(ms_error_message(), path) &&
              strstr(ms_error_message(), "not an HDF5 file"),
          "%s", ms_error_message());
    snprintf(path, sizeof path, "%s/fail/nope.h5", dir);
    CHECK(ms_shard_open(&s, path) == MS_EIO && strstr(ms_error_message(), path), "%s",
          ms_error_message());
    snprintf(path, sizeof path, "%s/fail/other.h5", dir);
    ms_h5file_t hf;
    CHECK_OK(ms_h5_create(&hf, path));
    CHECK_OK(ms_h5_attr_set_str(hf.id, "format", "something-else"));
    CHECK_OK(ms_h5_commit(&hf));
    CHECK(ms_shard_open(&s, path) == MS_EFORMAT && strstr(ms_error_message(), "something-else"),
          "%s", ms_error_message());
    CHECK_OK(ms_h5_create(&hf, path));
    CHECK_OK(ms_h5_attr_set_str(hf.id, "format", MS_SHARD_FORMAT));
    CHECK_OK(ms_h5_attr_set_int(hf.id, "format_version", 99));
    CHECK_OK(ms_h5_commit(&hf));
    CHECK(ms_shard_open(&s, path) == MS_EFORMAT && strstr(ms_error_message(), "version 99"),
          "%s", ms_error_message());
    /* a truncated shard: open fails or reading fails, never crashes */
    char good[512];
    snprintf(good, sizeof good, "%s/s0.h5", dir);
    snprintf(path, sizeof path, "%s/fail/trunc.h5", dir);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "head -c 3000 %s > %s", good, path);
    CHECK(system(cmd) == 0, "truncate");
    CHECK(ms_shard_open(&s, path) != MS_OK, "truncated shard fails to open");
}

static void test_h5util(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/util.h5", dir);
    ms_h5file_t f;
    CHECK_OK(ms_h5_create(&f, path));
    CHECK(access(path, F_OK) != 0, "final name absent before commit");
    float a[6] = {1, 2, 3, 4, 5, 6};
    hsize_t d[2] = {2, 3}, ch[2] = {1, 3};
    CHECK_OK(ms_h5_write(f.id, "g/h/w", H5T_NATIVE_FLOAT, 2, d, a, ch, 4));
    const char *names[2] = {"conv1", "a longer name"};
    CHECK_OK(ms_h5_attr_set_strings(f.id, "names", 2, names));
    CHECK_OK(ms_h5_attr_set_double(f.id, "lr", 1e-3));
    CHECK_OK(ms_h5_attr_set_int(f.id, "step", 12345678901LL));
    CHECK_OK(ms_h5_commit(&f));
    hid_t id;
    CHECK_OK(ms_h5_open(&id, path));
    float b[6] = {0};
    CHECK_OK(ms_h5_read(id, "g/h/w", H5T_NATIVE_FLOAT, 2, d, b));
    CHECK(!memcmp(a, b, sizeof a), "floats");
    hsize_t wrong[2] = {3, 2};
    CHECK(ms_h5_read(id, "g/h/w", H5T_NATIVE_FLOAT, 2, wrong, b) == MS_ESHAPE &&
              strstr(ms_error_message(), "[2, 3], expected [3, 2]"),
          "%s", ms_error_message());
    CHECK(ms_h5_read(id, "g/nope", H5T_NATIVE_FLOAT, 2, d, b) == MS_EFORMAT &&
              strstr(ms_error_message(), "util.h5:/g/nope"),
          "%s", ms_error_message());
    char **s = NULL;
    size_t n = 0;
    CHECK_OK(ms_h5_attr_get_strings(id, "names", &n, &s));
    CHECK(n == 2 && !strcmp(s[1], "a longer name"), "strings");
    ms_h5_free_strings(s, n);
    double lr;
    long long step;
    CHECK_OK(ms_h5_attr_get_double(id, "lr", &lr));
    CHECK_OK(ms_h5_attr_get_int(id, "step", &step));
    CHECK(lr == 1e-3 && step == 12345678901LL, "numbers");
    CHECK(ms_h5_attr_get_int(id, "missing", &step) == MS_EFORMAT, "missing attribute");
    H5Fclose(id);

    /* every byte read is a byte written: a window touching a chunk that was never written is
     * refused, one that does not is read; the same for a whole read */
    snprintf(path, sizeof path, "%s/holes.h5", dir);
    CHECK_OK(ms_h5_create(&f, path));
    hsize_t hd[2] = {4, 6}, hc[2] = {2, 3};
    hid_t sp = H5Screate_simple(2, hd, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, hc);
    hid_t ds = H5Dcreate2(f.id, "holes", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    hsize_t start[2] = {0, 0}, count[2] = {2, 6}; /* the top two chunks only */
    hid_t ms = H5Screate_simple(2, count, NULL), fs = H5Dget_space(ds);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    float top[12] = {0};
    CHECK(H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, top) >= 0, "partial write");
    H5Sclose(fs), H5Sclose(ms), H5Pclose(dcpl), H5Sclose(sp);
    hsize_t w0[2] = {1, 2}, n0[2] = {1, 4}, w1[2] = {1, 2}, n1[2] = {2, 1};
    CHECK_OK(ms_h5_check_region(ds, "holes", 2, w0, n0));
    CHECK(ms_h5_check_region(ds, "holes", 2, w1, n1) == MS_EFORMAT &&
              strstr(ms_error_message(), "chunk at [2, 0] was never written"),
          "%s", ms_error_message());
    H5Dclose(ds);
    CHECK_OK(ms_h5_commit(&f));
    CHECK_OK(ms_h5_open(&id, path));
    float all[24];
    CHECK(ms_h5_read(id, "holes", H5T_NATIVE_FLOAT, 2, hd, all) == MS_EFORMAT &&
              strstr(ms_error_message(), "only 2 of its 4 chunks were written"),
          "%s", ms_error_message());
    H5Fclose(id);
}

/* A run folder's checkpoints by step, whatever order the folder lists them in: the newest for
 * score --checkpoint RUN_DIR, the n newest for --resume and pruning (a newest taken from the
 * first directory entry scored with an older checkpoint). */
static void test_run_folder(void)
{
    char run[600], path[700];
    snprintf(run, sizeof run, "%s/run", dir);
    mkdir(run, 0777);
    const long steps[] = {8, 120, 4, 16, 12000, 64, 32};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        snprintf(path, sizeof path, "%s/ckpt-%08ld.h5", run, steps[i]);
        FILE *f = fopen(path, "w");
        if (f)
            fclose(f);
    }
    snprintf(path, sizeof path, "%s/ckpt-notastep.h5", run);
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
    char newest[800];
    ms_checkpoint_newest(run, newest, sizeof newest);
    snprintf(path, sizeof path, "%s/ckpt-00012000.h5", run);
    CHECK(!strcmp(newest, path), "newest is %s", newest);
    long got[3];
    int n = ms_checkpoint_list(run, got, 3);
    CHECK(n == 3 && got[0] == 12000 && got[1] == 120 && got[2] == 64, "3 newest: %d: %ld %ld %ld",
          n, got[0], got[1], got[2]);
    long all[16];
    n = ms_checkpoint_list(run, all, 16);
    CHECK(n == 7 && all[0] == 12000 && all[6] == 4, "all: %d, %ld .. %ld", n, all[0], all[6]);
    ms_checkpoint_prune(run, 2);
    n = ms_checkpoint_list(run, all, 16);
    CHECK(n == 2 && all[0] == 12000 && all[1] == 120, "after pruning to 2: %d", n);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/ms_test_io_shard.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    test_h5util();
    test_roundtrips();
    test_digest();
    test_errors();
    test_run_folder();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (check_fail == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_summary();
}
