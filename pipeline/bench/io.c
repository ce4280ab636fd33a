/* milscreen bench --io: how fast shards feed training. For each compression setting it writes
 * a shard of 1024x1280x3 uint16 synthetic fields (bbbc021-like: real-looking content, so the
 * compression ratio means something), checks that every reader returns the written pixels,
 * then times reading + decoding + normalising whole images through the loader with 1, 2 and
 * all threads, and through HDF5's own H5Dread (its zlib, behind its global lock) for
 * comparison. Files are read from the page cache: this measures decoding, not the disk. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "io/loader.h"
#include "io/shard.h"
#include "io/synth.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void help(void)
{
    printf("usage: milscreen bench --io [options]\n\n"
           "Images/s for reading, decoding and normalising 1024x1280x3 uint16 fields from a\n"
           "shard with 1, 2 and all threads, per compression setting, and the file size per\n"
           "image; also HDF5's own H5Dread path. Each figure is the median of --repeats\n"
           "passes after one warm-up pass; files sit in the page cache (decode speed, not disk).\n\n"
           "  --images N       images per shard (default 48; 8 distinct fields repeated)\n"
           "  --levels L,L     deflate levels to try (default 1,3,6,9; 'none' always runs)\n"
           "  --threads N      the 'all' thread count (default: online CPUs)\n"
           "  --repeats N      timed passes (default 3)\n"
           "  --size WxH       field size (default 1280x1024)\n"
           "  --dir DIR        where the shards go (default $TMPDIR or /tmp), removed after\n");
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds used by every thread of this process: images per CPU-second is the per-core
 * speed even when other jobs share the machine (the wall clock then is not). */
static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *in, int n)
{
    double v[128];
    memcpy(v, in, sizeof *v * (size_t)n);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    double wall, cpu; /* images per second, images per CPU-second */
} rate_t;

/* One timed epoch of the loader over the shard (with cache, an untimed epoch fills it
 * first; crop > 0 adds random crops and the 8 transforms). */
static ms_status_t loader_pass(const char *path, int threads, int n, const float *mean,
                               const float *sd, int cache, int crop, rate_t *r)
{
    ms_status_t st = MS_OK;
    ms_loader_t *L = NULL;
    const char *paths[1] = {path};
    ms_loader_opts_t o = {.paths = paths, .npaths = 1, .ranks = 1, .batch = 4,
                          .threads = threads, .mean = mean, .std = sd, .crop = crop,
                          .random_crop = 1, .augment = crop > 0, .shuffle = 1,
                          .cache_bytes = cache ? (size_t)1 << 40 : 0};
    MS_TRY(ms_loader_open(&L, &o));
    for (int e = cache ? 0 : 1; e <= 1; e++) {
        MS_TRY(ms_loader_epoch(L, e));
        double t0 = now(), c0 = cpu_now();
        int got = 0;
        ms_batch_t b;
        do {
            MS_TRY(ms_loader_next(L, &b));
            got += b.n;
        } while (b.n);
        r->wall = got / (now() - t0);
        r->cpu = got / (cpu_now() - c0 + 1e-9);
        if (got != n)
            MS_FAIL(MS_EINTERNAL, "loader gave %d images of %d", got, n);
    }
done:
    ms_loader_close(L);
    return st;
}

/* The same work through H5Dread: decode with HDF5's filters, then normalise. */
static ms_status_t hdf5_pass(ms_shard_t *s, int threads, const float *mean, const float *sd,
                             rate_t *r)
{
    int n = ms_shard_count(s), C = ms_shard_channels(s);
    size_t hw = (size_t)ms_shard_height(s) * ms_shard_width(s);
    ms_status_t first = MS_OK;
    double t0 = now(), c0 = cpu_now();
#pragma omp parallel num_threads(threads) if (ms_hdf5_threadsafe())
    {
        uint16_t *buf = malloc(sizeof(uint16_t) * C * hw);
        float *x = malloc(sizeof(float) * C * hw);
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n; i++) {
            ms_status_t e = buf && x ? ms_shard_read_hdf5(s, i, buf) : MS_ENOMEM;
            if (e) {
#pragma omp critical(bench_io_err)
                first = first ? first : e;
                continue;
            }
            for (int c = 0; c < C; c++) {
                float m = mean[c], inv = 1.0f / sd[c];
                for (size_t j = 0; j < hw; j++)
                    x[c * hw + j] = ((float)buf[c * hw + j] - m) * inv;
            }
        }
        free(buf);
        free(x);
    }
    r->wall = n / (now() - t0);
    r->cpu = n / (cpu_now() - c0 + 1e-9);
    return first ? MS_ERR(first, "H5Dread pass failed: %s", ms_error_message()) : MS_OK;
}

enum { MAXREP = 20 };

typedef struct {
    char name[16];
    char path[4096];
    ms_comp_t comp;
    int level;
    double mb_per_image;
    rate_t write;
    rate_t load[3][MAXREP]; /* loader: 1, 2, all threads */
    rate_t h5[2][MAXREP];   /* H5Dread: 1, all threads */
    rate_t cached[MAXREP];  /* loader, all threads, decoded images cached */
    double serial[MAXREP];  /* share of a 1-thread pass spent inside HDF5 (its lock) */
} setting_t;

static double med_wall(const rate_t *r, int n)
{
    double v[MAXREP];
    for (int j = 0; j < n; j++)
        v[j] = r[j].wall;
    return median(v, n);
}

static double med_cpu(const rate_t *r, int n)
{
    double v[MAXREP];
    for (int j = 0; j < n; j++)
        v[j] = r[j].cpu;
    return median(v, n);
}

int ms_bench_io(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "bench"};
    enum { O_IO = MS_OPT_FIRST_FREE, O_N, O_LEVELS, O_THR, O_REP, O_SIZE, O_DIR };
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS,
                                         {"io", no_argument, 0, O_IO},
                                         {"images", required_argument, 0, O_N},
                                         {"levels", required_argument, 0, O_LEVELS},
                                         {"threads", required_argument, 0, O_THR},
                                         {"repeats", required_argument, 0, O_REP},
                                         {"size", required_argument, 0, O_SIZE},
                                         {"dir", required_argument, 0, O_DIR},
                                         {0, 0, 0, 0}};
    int n = 48, all = 0, reps = 3, W = 1280, H = 1024, opt;
    const char *levels = "1,3,6,9", *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = ms_cli_common(&cli, opt, optarg);
        if (c < 0)
            return 2;
        if (c)
            continue;
        int cc;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case O_IO: break;
        case O_N:
            if (ms_cli_int("bench", "images", optarg, 8, 1 << 20, &n))
                return 2;
            break;
        case O_LEVELS: levels = optarg; break;
        case O_THR:
            if (ms_cli_int("bench", "threads", optarg, 0, 4096, &all))
                return 2;
            break;
        case O_REP:
            if (ms_cli_int("bench", "repeats", optarg, 1, MAXREP, &reps))
                return 2;
            break;
        case O_DIR: dir = optarg; break;
        case O_SIZE:
            if (ms_cli_parse_size(optarg, &W, &H, &cc, 3) != 0)
                return ms_cli_usage_error("bench", "--size '%s': expected WxH", optarg);
            break;
        default: return ms_cli_usage_error("bench", "unknown option for --io");
        }
    }
    if (n < 8 || reps < 1 || reps > MAXREP || W < 64 || H < 64)
        return ms_cli_usage_error("bench", "--images >= 8, --repeats 1..%d, --size >= 64x64",
                                  MAXREP);
    if (all <= 0)
        all = (int)sysconf(_SC_NPROCESSORS_ONLN);
    ms_status_t st = MS_OK;
    static setting_t set[12];
    int ns = 0;
    snprintf(set[ns].name, sizeof set[ns].name, "none");
    set[ns].comp = MS_COMP_NONE;
    set[ns++].level = 0;
    for (const char *p = levels; *p && ns < 12;) {
        int l = atoi(p);
        if (l < 1 || l > 9)
            return ms_cli_usage_error("bench", "--levels: deflate levels are 1..9");
        snprintf(set[ns].name, sizeof set[ns].name, "deflate-%d", l);
        set[ns].comp = MS_COMP_DEFLATE;
        set[ns++].level = l;
        const char *cma = strchr(p, ',');
        p = cma ? cma + 1 : "";
    }

    /* the content: 8 bbbc021-like fields */
    ms_synth_preset_t pre;
    ms_synth_preset("bbbc021-like", &pre);
    pre.h = H;
    pre.w = W;
    const int C = 3, NU = 8;
    size_t per = (size_t)C * H * W;
    uint16_t *fields = malloc(per * NU * sizeof(uint16_t));
    uint16_t *mask = malloc((size_t)H * W * NU * sizeof(uint16_t));
    uint16_t *back = malloc(per * sizeof(uint16_t));
    ms_synth_cell_t *cells = malloc(sizeof *cells * (size_t)pre.cells_max * NU);
    float mean[3], sd[3];
    char path[4096];
    ms_shard_t *sh = NULL;
    if (!fields || !mask || !back || !cells) {
        fprintf(stderr, "milscreen bench: out of memory\n");
        return 1;
    }
    char cpu[512] = "unknown CPU";
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char line[512];
        while (fgets(line, sizeof line, ci))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                snprintf(cpu, sizeof cpu, "%s", c ? c + 2 : line);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(ci);
    }
    printf("bench --io: %s, %ld online CPUs; %d images of %dx%dx%d uint16 (%.1f MB raw each) "
           "per shard in %s\n", cpu, sysconf(_SC_NPROCESSORS_ONLN), n, W, H, C,
           per * 2 / 1e6, dir);
#pragma omp parallel for schedule(dynamic, 1)
    for (int f = 0; f < NU; f++) {
        uint8_t cls[64] = {0};
        cls[f % pre.k] = 1;
        int nc;
        ms_synth_field(&pre, 1, (uint64_t)f, cls, 1.0f, fields + f * per,
                       mask + (size_t)f * H * W, cells + (size_t)f * pre.cells_max,
                       pre.cells_max, &nc);
    }
    for (int c = 0; c < C; c++) {
        double s1 = 0, s2 = 0;
        for (int f = 0; f < NU; f++)
            for (size_t j = 0; j < (size_t)H * W; j++) {
                double v = fields[f * per + c * (size_t)H * W + j];
                s1 += v;
                s2 += v * v;
            }
        double cnt = (double)NU * H * W;
        mean[c] = (float)(s1 / cnt);
        sd[c] = (float)sqrt(s2 / cnt - (s1 / cnt) * (s1 / cnt));
    }
    int thr[3] = {1, 2 < all ? 2 : all, all};
    double load[3] = {0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = -1;
        fclose(la);
    }
    /* write every setting's shard and check both readers before anything is timed */
    for (int j = 0; j < ns; j++) {
        setting_t *S = &set[j];
        snprintf(S->path, sizeof S->path, "%s/ms_bench_io_%ld_%.15s.h5", dir, (long)getpid(),
                 S->name);
        snprintf(path, sizeof path, "%s", S->path);
        ms_shard_spec_t sp = {.n = n, .c = C, .h = H, .w = W, .dtype = MS_DTYPE_U16,
                              .comp = S->comp, .level = S->level, .k = 1,
                              .class_names = (const char *const[]){"x"}};
        ms_shard_writer_t *w = NULL;
        double t0 = now(), c0 = cpu_now();
        MS_TRY(ms_shard_create(&w, S->path, &sp));
        for (int i = 0; i < n && !st; i++) {
            char id[32];
            snprintf(id, sizeof id, "img%d", i);
            ms_image_meta_t m = {.image_id = id, .plate = "", .well = "", .treatment = ""};
            st = ms_shard_write_image(w, i, fields + (size_t)(i % NU) * per);
            if (!st)
                st = ms_shard_set_meta(w, i, &m, NULL);
        }
        if (st) {
            ms_shard_discard(w);
            goto done;
        }
        MS_TRY(ms_shard_finish(w));
        S->write.wall = n / (now() - t0);
        S->write.cpu = n / (cpu_now() - c0);
        struct stat sb;
        stat(S->path, &sb);
        S->mb_per_image = (double)sb.st_size / n / 1e6;
        MS_TRY(ms_shard_open(&sh, S->path));
        for (int i = 0; i < NU; i++) {
            MS_TRY(ms_shard_read(sh, i, back));
            if (memcmp(back, fields + (size_t)i * per, per * 2))
                MS_FAIL(MS_EINTERNAL, "%s: image %d reads back wrong (raw-chunk path)", path, i);
            MS_TRY(ms_shard_read_hdf5(sh, i, back));
            if (memcmp(back, fields + (size_t)i * per, per * 2))
                MS_FAIL(MS_EINTERNAL, "%s: image %d reads back wrong (H5Dread)", path, i);
        }
        ms_shard_close(sh);
        sh = NULL;
        rate_t warm;
        MS_TRY(loader_pass(S->path, all, n, mean, sd, 0, 0, &warm)); /* page cache warm */
    }
    /* repeats go round all settings so that a change in machine load hits them alike */
    rate_t train[MAXREP];
    int crop = H < 900 || W < 900 ? (H < W ? H : W) * 7 / 8 : 900;
    for (int r = 0; r < reps; r++) {
        for (int j = 0; j < ns; j++) {
            setting_t *S = &set[j];
            snprintf(path, sizeof path, "%s", S->path);
            for (int t = 0; t < 3; t++) {
                double h0 = ms_shard_hdf5_seconds(), c0 = cpu_now();
                MS_TRY(loader_pass(S->path, thr[t], n, mean, sd, 0, 0, &S->load[t][r]));
                if (t == 0)
                    S->serial[r] = (ms_shard_hdf5_seconds() - h0) / (cpu_now() - c0);
            }
            MS_TRY(loader_pass(S->path, all, n, mean, sd, 1, 0, &S->cached[r]));
            MS_TRY(ms_shard_open(&sh, S->path));
            MS_TRY(hdf5_pass(sh, 1, mean, sd, &S->h5[0][r]));
            MS_TRY(hdf5_pass(sh, all, mean, sd, &S->h5[1][r]));
            ms_shard_close(sh);
            sh = NULL;
        }
        MS_TRY(loader_pass(set[ns > 1 ? 1 : 0].path, all, n, mean, sd, 1, crop, &train[r]));
        fprintf(stderr, "bench --io: pass %d of %d done\n", r + 1, reps);
    }
    printf("\nimages/s (wall clock, median of %d), per core = images per CPU-second of the "
           "1-thread run\n\n", reps);
    printf("%-10s %6s %5s %11s | %-22s %8s | %-13s %8s | %s\n", "setting", "MB/img", "ratio",
           "write/s,core", "loader: 1, 2, all", "per core", "H5Dread: 1,all", "per core",
           "cached,all");
    for (int j = 0; j < ns; j++) {
        setting_t *S = &set[j];
        printf("%-10s %6.2f %5.2f %5.1f %5.1f | %6.1f %6.1f %8.1f %8.1f | %5.1f %7.1f %8.1f | "
               "%8.1f\n", S->name, S->mb_per_image, per * 2 / 1e6 / S->mb_per_image,
               S->write.wall, S->write.cpu, med_wall(S->load[0], reps),
               med_wall(S->load[1], reps), med_wall(S->load[2], reps), med_cpu(S->load[0], reps),
               med_wall(S->h5[0], reps), med_wall(S->h5[1], reps), med_cpu(S->h5[0], reps),
               med_wall(S->cached, reps));
    }
    printf("\nall = %d threads. loader = pread of the raw chunk + libdeflate + unshuffle in its\n"
           "threads, then normalise to float (whole images); H5Dread = HDF5's own zlib behind\n"
           "its global lock, then normalise; cached = the loader's cache of decoded images.\n"
           "training path (%s, crop %d + 8 transforms, cached, all threads): %.1f images/s, "
           "%.1f per core\n"
           "load average at start: %.2f %.2f %.2f on %ld CPUs\n", all, set[ns > 1 ? 1 : 0].name,
           crop, med_wall(train, reps), med_cpu(train, reps), load[0], load[1], load[2],
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("\nper core, and what a GPU node needs (1,000 images/s from 16 cores):\n");
    for (int j = 0; j < ns; j++) {
        setting_t *S = &set[j];
        double core = med_cpu(S->load[0], reps);
        double sf = median(S->serial, reps), amdahl = 1.0 / (sf + (1 - sf) / 16);
        printf("  %-10s %7.1f images/s per core -> %5.1f cores for 1,000/s (%s); %.2f%% of "
               "the time inside HDF5's lock: 16 threads at most %.1fx one\n", S->name, core,
               1000.0 / core, 1000.0 / core <= 16 ? "a 16-core node can" : "not enough",
               100 * sf, amdahl);
    }
done:
    ms_shard_close(sh);
    for (int j = 0; j < ns; j++)
        if (set[j].path[0])
            unlink(set[j].path);
    free(fields);
    free(mask);
    free(back);
    free(cells);
    if (st)
        return ms_cli_fail("bench", st);
    return 0;
}
