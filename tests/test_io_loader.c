/* Loader: every value of every batch equals the crop, transform and normalisation it reports
 * applied to the stored pixels; batches are bit-identical for 0, 1 and 3 threads and with or
 * without the cache; ranks see disjoint parts that together are the one-rank batch; labelled-only
 * filtering, targets, epochs, errors, and ms_norm_stats against a direct computation. */
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "io/loader.h"
#include "io/shard.h"
#include "tests/check.h"

enum { N = 23, C = 3, H = 40, W = 48 };
static char dir[256], pa[300], pb[300];

static uint16_t pix(int g, int c, int y, int x)
{
    return (uint16_t)((g * 7919 + c * 1237 + y * 97 + x * 13 + (x * y) % 11) % 60000);
}

static void make(const char *path, int first, int n, int k, const char *cls0)
{
    const char *classes[3] = {cls0, "b", "c"};
    ms_shard_spec_t sp = {.n = n, .c = C, .h = H, .w = W, .dtype = MS_DTYPE_U16,
                          .comp = MS_COMP_DEFLATE, .tile = first ? 0 : 16, .k = k,
                          .class_names = classes}; /* b.h5 one chunk per image: the view path */
    ms_shard_writer_t *w;
    CHECK_OK(ms_shard_create(&w, path, &sp));
    uint16_t *p = malloc(sizeof(uint16_t) * C * H * W);
    for (int i = 0; i < n; i++) {
        int g = first + i;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    p[(c * H + y) * W + x] = pix(g, c, y, x);
        CHECK_OK(ms_shard_write_image(w, i, p));
        char id[16];
        snprintf(id, sizeof id, "i%d", i);
        ms_image_meta_t m = {.image_id = id, .plate = "", .well = "", .treatment = "",
                             .label = g % 5 == 4 ? -1 : g % k};
        CHECK_OK(ms_shard_set_meta(w, i, &m, NULL));
    }
    CHECK_OK(ms_shard_finish(w));
    free(p);
}

static const float mean[C] = {100.5f, 2000.0f, 30000.0f}, sd[C] = {1000.0f, 250.0f, 17.0f};

/* Checks every value of a batch against what it claims it did. */
static int verify(const ms_batch_t *b)
{
    int bad = 0;
    for (int p = 0; p < b->n; p++) {
        int g = (int)b->index[p], tr = b->transform[p];
        for (int c = 0; c < C; c++)
            for (int y = 0; y < b->h; y++)
                for (int x = 0; x < b->w; x++) {
                    int a = tr & 4 ? x : y, bb = tr & 4 ? y : x;
                    if (tr & 2)
                        a = b->h - 1 - a;
                    if (tr & 1)
                        bb = b->w - 1 - bb;
                    float want = ((float)pix(g, c, b->y0[p] + a, b->x0[p] + bb) - mean[c]) *
                                 (1.0f / sd[c]);
                    bad += b->x[(((size_t)p * C + c) * b->h + y) * b->w + x] != want;
                }
        int lab = g % 5 == 4 ? -1 : g % 3;
        for (int k = 0; k < 3; k++)
            bad += b->t[p * 3 + k] != (k == lab ? 1.0f : 0.0f);
    }
    return bad;
}

typedef struct {
    int n;
    int64_t idx[64];
    int tr[64], y0[64], x0[64];
    float *x;
    size_t nx;
} epoch_t;

/* Runs one epoch, verifies every batch and records it. */
static void run_epoch(ms_loader_t *L, int e, epoch_t *rec, int *nbatches)
{
    ms_batch_t b;
    memset(rec, 0, sizeof *rec);
    CHECK_OK(ms_loader_epoch(L, e));
    int nb = 0;
    for (;;) {
        ms_status_t st = ms_loader_next(L, &b);
        CHECK(st == MS_OK, "%s", ms_error_message());
        if (st || b.n == 0)
            break;
        nb++;
        CHECK(verify(&b) == 0, "batch %d of epoch %d: values differ from what it reports", nb, e);
        size_t per = (size_t)b.c * b.h * b.w;
        rec->x = realloc(rec->x, (rec->nx + b.n * per) * sizeof(float));
        memcpy(rec->x + rec->nx, b.x, b.n * per * sizeof(float));
        rec->nx += b.n * per;
        for (int p = 0; p < b.n && rec->n < 64; p++) {
            rec->idx[rec->n] = b.index[p];
            rec->tr[rec->n] = b.transform[p];
            rec->y0[rec->n] = b.y0[p];
            rec->x0[rec->n++] = b.x0[p];
        }
    }
    *nbatches = nb;
}

static int same(const epoch_t *a, const epoch_t *b)
{
    return a->n == b->n && a->nx == b->nx && !memcmp(a->idx, b->idx, sizeof a->idx) &&
           !memcmp(a->tr, b->tr, sizeof a->tr) && !memcmp(a->y0, b->y0, sizeof a->y0) &&
           !memcmp(a->x0, b->x0, sizeof a->x0) && !memcmp(a->x, b->x, a->nx * sizeof(float));
}

static void test_determinism(void)
{
    const char *paths[2] = {pa, pb};
    ms_loader_opts_t o = {.paths = paths, .npaths = 2, .crop = 16, .random_crop = 1,
                          .augment = 1, .shuffle = 1, .seed = 11, .ranks = 1, .batch = 4,
                          .mean = mean, .std = sd};
    epoch_t ref[2], got;
    int nb;
    ms_loader_t *L = NULL;
    CHECK_OK(ms_loader_open(&L, &o));
    if (!L)
        return;
    CHECK(ms_loader_images(L) == 2 * N && ms_loader_steps(L) == (2 * N + 3) / 4, "sizes");
    run_epoch(L, 0, &ref[0], &nb);
    CHECK(nb == 12 && ref[0].n == 46, "epoch 0: %d batches, %d images", nb, ref[0].n);
    int seen[2 * N] = {0}, trs[8] = {0};
    for (int j = 0; j < ref[0].n; j++) {
        seen[ref[0].idx[j]]++;
        trs[ref[0].tr[j]]++;
    }
    int once = 1;
    for (int g = 0; g < 2 * N; g++)
        once &= seen[g] == 1;
    CHECK(once, "every image once per epoch");
    run_epoch(L, 1, &ref[1], &nb);
    for (int j = 0; j < ref[1].n; j++)
        trs[ref[1].tr[j]]++;
    for (int t = 0; t < 8; t++)
        CHECK(trs[t] > 0, "transform %d never drawn in 92 draws", t);
    CHECK(memcmp(ref[0].idx, ref[1].idx, sizeof ref[0].idx) != 0, "epochs shuffle differently");
    ms_loader_close(L);

    /* threads, prefetch depth and the cache change nothing */
    struct {
        int threads, prefetch;
        size_t cache;
    } v[] = {{1, 0, 0}, {3, 0, 0}, {3, 5, 0}, {2, 1, 5 * C * H * W * 2}, {0, 0, 1 << 30}};
    for (size_t j = 0; j < sizeof v / sizeof *v; j++) {
        o.threads = v[j].threads;
        o.prefetch = v[j].prefetch;
        o.cache_bytes = v[j].cache;
        CHECK_OK(ms_loader_open(&L, &o));
        if (!L)
            continue;
        for (int e = 0; e < 2; e++) {
            run_epoch(L, e, &got, &nb);
            CHECK(same(&got, &ref[e]), "threads %d prefetch %d cache %zu: epoch %d differs",
                  v[j].threads, v[j].prefetch, v[j].cache, e);
            free(got.x);
        }
        if (v[j].cache)
            CHECK(ms_loader_cached_bytes(L) ==
                      (v[j].cache < (size_t)2 * N * C * H * W * 2 ? v[j].cache
                                                                 : (size_t)2 * N * C * H * W * 2),
                  "cached %zu bytes", ms_loader_cached_bytes(L));
        /* an epoch restarted in the middle of another */
        ms_batch_t b;
        CHECK_OK(ms_loader_epoch(L, 0));
        CHECK_OK(ms_loader_next(L, &b));
        run_epoch(L, 1, &got, &nb);
        CHECK(same(&got, &ref[1]), "epoch 1 after an interrupted epoch 0");
        free(got.x);
        ms_loader_close(L);
    }
    free(ref[0].x);
    free(ref[1].x);
}

static void test_ranks(void)
{
    const char *paths[2] = {pa, pb};
    ms_loader_opts_t o = {.paths = paths, .npaths = 2, .crop = 8, .random_crop = 1,
                          .augment = 1, .shuffle = 1, .seed = 5, .ranks = 1, .batch = 6,
                          .drop_last = 1, .threads = 2, .mean = mean, .std = sd};
    epoch_t one, part[3];
    int nb, nbr[3];
    ms_loader_t *L;
    CHECK_OK(ms_loader_open(&L, &o));
    run_epoch(L, 3, &one, &nb);
    CHECK(nb == 46 / 6 && one.n == 42, "drop_last: %d batches, %d images", nb, one.n);
    ms_loader_close(L);
    o.ranks = 3;
    o.batch = 2;
    for (int r = 0; r < 3; r++) {
        o.rank = r;
        CHECK_OK(ms_loader_open(&L, &o));
        CHECK(ms_loader_steps(L) == 7, "steps per rank");
        run_epoch(L, 3, &part[r], &nbr[r]);
        ms_loader_close(L);
    }
    /* step j of rank r holds items j*6 + 2r, +1 of the one-rank epoch, with the same crops */
    int bad = 0;
    for (int r = 0; r < 3; r++) {
        bad += nbr[r] != 7 || part[r].n != 14;
        for (int j = 0; j < 7; j++)
            for (int p = 0; p < 2; p++) {
                int u = j * 6 + 2 * r + p, v = j * 2 + p;
                bad += part[r].idx[v] != one.idx[u] || part[r].tr[v] != one.tr[u] ||
                       part[r].y0[v] != one.y0[u];
            }
        free(part[r].x);
    }
    CHECK(bad == 0, "3 ranks x batch 2 = 1 rank x batch 6 (%d differences)", bad);
    free(one.x);
}

static void test_options(void)
{
    const char *paths[2] = {pa, pb};
    ms_loader_t *L;
    int nb;
    epoch_t rec;
    /* labelled only, whole images (non-square: only 4 transforms), centred, no shuffle */
    ms_loader_opts_t o = {.paths = paths, .npaths = 2, .augment = 1, .seed = 2, .ranks = 1,
                          .batch = 5, .threads = 2, .labelled_only = 1, .mean = mean, .std = sd};
    CHECK_OK(ms_loader_open(&L, &o));
    int want = 0;
    for (int g = 0; g < 2 * N; g++)
        want += g % 5 != 4;
    CHECK(ms_loader_images(L) == want, "labelled only: %d of %d", ms_loader_images(L), want);
    run_epoch(L, 0, &rec, &nb);
    int ok = rec.n == want, maxtr = 0;
    for (int j = 1; j < rec.n; j++)
        ok &= rec.idx[j] > rec.idx[j - 1] && rec.idx[j] % 5 != 4;
    for (int j = 0; j < rec.n; j++)
        maxtr = rec.tr[j] > maxtr ? rec.tr[j] : maxtr;
    CHECK(ok, "shard order, no unknown labels");
    CHECK(maxtr <= 3, "no transpose of a non-square image");
    free(rec.x);
    ms_loader_close(L);
    /* centred crops */
    o.crop = 20;
    o.augment = 0;
    CHECK_OK(ms_loader_open(&L, &o));
    run_epoch(L, 0, &rec, &nb);
    CHECK(rec.y0[0] == 10 && rec.x0[0] == 14 && rec.tr[0] == 0, "centred crop");
    free(rec.x);
    ms_loader_close(L);
    /* errors */
    o.crop = 41;
    CHECK(ms_loader_open(&L, &o) == MS_EARG && strstr(ms_error_message(), "smaller than the crop"),
          "%s", ms_error_message());
    char pc[300];
    snprintf(pc, sizeof pc, "%s/c.h5", dir);
    make(pc, 0, 2, 3, "other");
    const char *mixed[2] = {pa, pc};
    o.paths = mixed;
    o.crop = 0;
    CHECK(ms_loader_open(&L, &o) == MS_EFORMAT &&
              strstr(ms_error_message(), "has [a, b, c]") &&
              strstr(ms_error_message(), "has [other, b, c]"),
          "both class lists named: %s", ms_error_message());
}

static void test_stats(void)
{
    const char *paths[2] = {pa, pb};
    float m[C], s[C];
    CHECK_OK(ms_norm_stats(paths, 2, m, s));
    for (int c = 0; c < C; c++) {
        double s1 = 0, s2 = 0, n = 0;
        for (int g = 0; g < 2 * N; g++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    double v = pix(g, c, y, x);
                    s1 += v;
                    s2 += v * v;
                    n++;
                }
        double mu = s1 / n, sig = sqrt(s2 / n - mu * mu);
        /* float32 results of double sums: relative 1e-6 */
        CHECK(check_close(m[c], mu, 1e-6) && check_close(s[c], sig, 1e-6),
              "channel %d: %g %g vs %g %g", c, m[c], s[c], mu, sig);
    }
}

/* A damaged chunk: the reader says which file and image, a loader thread hands the error to
 * the consumer (no hang, no crash), and closing the loader afterwards is clean. */
static void test_damaged(void)
{
    char pd[300];
    snprintf(pd, sizeof pd, "%s/damaged.h5", dir);
    make(pd, 0, 9, 3, "a");
    hid_t f;
    CHECK_OK(ms_h5_open(&f, pd));
    hid_t ds = H5Dopen2(f, "images", H5P_DEFAULT);
    hsize_t off[4] = {5, 0, 0, 0}; /* damaged.h5 has one chunk per image */
    unsigned mask = 0;
    haddr_t addr = 0;
    hsize_t size = 0;
    CHECK(H5Dget_chunk_info_by_coord(ds, off, &mask, &addr, &size) >= 0 && size > 64,
          "chunk info");
    H5Dclose(ds);
    H5Fclose(f);
    FILE *fp = fopen(pd, "r+b");
    char junk[32];
    memset(junk, 0x5a, sizeof junk);
    CHECK(fp && fseek(fp, (long)(addr + size / 2), SEEK_SET) == 0 &&
              fwrite(junk, 1, sizeof junk, fp) == sizeof junk,
          "damage the file");
    if (fp)
        fclose(fp);
    ms_shard_t *s = NULL;
    CHECK_OK(ms_shard_open(&s, pd));
    uint16_t *p = malloc(sizeof(uint16_t) * C * H * W);
    CHECK(ms_shard_read(s, 5, p) == MS_EFORMAT && strstr(ms_error_message(), "damaged.h5") &&
              strstr(ms_error_message(), "image 5"),
          "%s", ms_error_message());
    CHECK(ms_shard_read_hdf5(s, 5, p) != MS_OK, "HDF5 notices too");
    CHECK_OK(ms_shard_read(s, 4, p));
    ms_shard_close(s);
    free(p);
    const char *paths[1] = {pd};
    for (int threads = 0; threads <= 3; threads += 3) {
        ms_loader_opts_t o = {.paths = paths, .npaths = 1, .ranks = 1, .batch = 2,
                              .threads = threads, .shuffle = 1, .seed = 3};
        ms_loader_t *L = NULL;
        CHECK_OK(ms_loader_open(&L, &o));
        if (!L)
            continue;
        ms_status_t st = MS_OK;
        for (int e = 0; e < 2; e++) {
            CHECK_OK(ms_loader_epoch(L, e));
            ms_batch_t b;
            int guard = 0;
            do {
                st = ms_loader_next(L, &b);
            } while (st == MS_OK && b.n && ++guard < 100);
            CHECK(st == MS_EFORMAT && strstr(ms_error_message(), "image 5"),
                  "threads %d epoch %d: %s", threads, e, ms_error_message());
        }
        ms_loader_close(L);
    }
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/ms_test_io_loader.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(pa, sizeof pa, "%s/a.h5", dir);
    snprintf(pb, sizeof pb, "%s/b.h5", dir);
    make(pa, 0, N, 3, "a");
    make(pb, N, N, 3, "a");
    test_determinism();
    test_ranks();
    test_options();
    test_stats();
    test_damaged();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_summary();
}
