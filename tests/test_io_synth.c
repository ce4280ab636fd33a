/* Synthetic plates: deterministic from the seed; masks and per-cell records agree; the
 * phenotype fraction follows the class; the tiny set is written and reads back as shards.
 * Usage: test_io_synth [DIR]  (DIR: keep the tiny set there instead of a temporary folder) */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/shard.h"
#include "io/synth.h"
#include "tests/check.h"

static void test_field(const char *preset, int h, int w)
{
    ms_synth_preset_t p;
    CHECK_OK(ms_synth_preset(preset, &p));
    p.h = h;
    p.w = w;
    size_t HW = (size_t)h * w;
    uint16_t *a = malloc(HW * p.c * 2), *b = malloc(HW * p.c * 2);
    uint16_t *ma = malloc(HW * 2), *mb = malloc(HW * 2);
    ms_synth_cell_t ca[512], cb[512];
    int na = 0, nb = 0;
    uint8_t cls[64] = {0};
    cls[1] = 1;
    CHECK_OK(ms_synth_field(&p, 7, 3, cls, 1.0f, a, ma, ca, 512, &na));
    CHECK_OK(ms_synth_field(&p, 7, 3, cls, 1.0f, b, mb, cb, 512, &nb));
    CHECK(na == nb && !memcmp(a, b, HW * p.c * 2) && !memcmp(ma, mb, HW * 2),
          "%s: same seed and field, same pixels", preset);
    CHECK_OK(ms_synth_field(&p, 8, 3, cls, 1.0f, b, mb, cb, 512, &nb));
    CHECK(memcmp(a, b, HW * p.c * 2) != 0, "%s: another seed, other pixels", preset);
    CHECK(na >= 5, "%s: %d cells", preset, na);
    /* every recorded cell's centre lies in its own mask region (cells are convex-ish) */
    int inside = 0, shows = 0;
    for (int j = 0; j < na; j++) {
        int x = (int)ca[j].x, y = (int)ca[j].y;
        inside += ma[(size_t)y * w + x] == ca[j].id;
        shows += ca[j].label == 1;
        CHECK(ca[j].label == 1 || ca[j].label == -1, "cell label %d", ca[j].label);
    }
    CHECK(inside >= na * 9 / 10, "%s: %d of %d centres inside their mask", preset, inside, na);
    /* the phenotype shows in about the class's fraction of cells (binomial: 4 sigma) */
    double f = ms_synth_fraction(&p, 1), sd = sqrt(f * (1 - f) / na);
    CHECK(fabs((double)shows / na - f) < 4 * sd + 0.02, "%s: fraction %.2f, expected %.2f",
          preset, (double)shows / na, f);
    /* cells are brighter than the background in every channel */
    for (int c = 0; c < p.c; c++) {
        double in = 0, out = 0;
        size_t nin = 0, nout = 0;
        for (size_t o = 0; o < HW; o++) {
            if (ma[o]) {
                in += a[c * HW + o];
                nin++;
            } else {
                out += a[c * HW + o];
                nout++;
            }
        }
        CHECK(nin && nout && in / nin > 1.5 * out / nout, "%s: channel %d cell %.0f vs bg %.0f",
              preset, c, in / (nin ? nin : 1), out / (nout ? nout : 1));
    }
    free(a);
    free(b);
    free(ma);
    free(mb);
}

static void test_tiny_set(const char *dir)
{
    ms_synth_preset_t p;
    CHECK_OK(ms_synth_preset("tiny", &p));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_OK(ms_synth_write(&p, dir, 42, 0, 0, NULL));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("tiny set written in %.2f s\n", s);
    CHECK(s < 10, "tiny set takes %.1f s (CI wants seconds)", s);
    char path[600];
    const char *split[2] = {"train", "test"};
    for (int j = 0; j < 2; j++) {
        snprintf(path, sizeof path, "%s/%s.h5", dir, split[j]);
        ms_shard_t *sh = NULL;
        CHECK_OK(ms_shard_open(&sh, path));
        if (!sh)
            continue;
        int n = ms_shard_count(sh);
        CHECK(n == p.k * p.replicates * p.sites * (j ? 1 : p.treatments - 1), "%s: %d images",
              path, n);
        CHECK(ms_shard_has_masks(sh) && ms_shard_has_cells(sh), "masks and cells");
        CHECK(!strcmp(ms_shard_class_name(sh, 0), "DNA damage") &&
                  !strcmp(ms_shard_channel_name(sh, 2), "Actin"),
              "names");
        int per_class[3] = {0};
        for (int i = 0; i < n; i++)
            per_class[ms_shard_label(sh, i)]++;
        CHECK(per_class[0] == per_class[1] && per_class[1] == per_class[2], "balanced");
        ms_cells_t cells;
        CHECK_OK(ms_shard_cells(sh, &cells));
        uint16_t *m = malloc((size_t)p.h * p.w * 2);
        int agree = 0, lab_ok = 0;
        for (int c = 0; c < cells.n; c++) {
            int i = cells.image_index[c];
            CHECK_OK(ms_shard_read_mask(sh, i, m));
            int x = (int)cells.x[c], y = (int)cells.y[c];
            agree += m[y * p.w + x] == cells.mask_id[c];
            lab_ok += cells.label[c] == -1 || cells.label[c] == ms_shard_label(sh, i);
        }
        CHECK(agree >= cells.n * 9 / 10, "%d of %d cells in their masks", agree, cells.n);
        CHECK(lab_ok == cells.n, "cell labels are the image's class or -1");
        free(m);
        ms_shard_close(sh);
    }
}

int main(int argc, char **argv)
{
    test_field("tiny", 128, 128);
    test_field("bbbc021-like", 300, 360);
    test_field("yeast-like", 200, 260);
    char dir[256];
    if (argc > 1) {
        snprintf(dir, sizeof dir, "%s", argv[1]);
    } else {
        snprintf(dir, sizeof dir, "/tmp/ms_test_io_synth.XXXXXX");
        if (!mkdtemp(dir))
            return 1;
    }
    test_tiny_set(dir);
    if (argc == 1) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
    return check_summary();
}
