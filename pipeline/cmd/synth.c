/* milscreen synth: writes a synthetic plate data set (train.h5 and test.h5 shards with true
 * masks and per-cell labels) from a preset; the renderer lives in io/synth.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/shard.h"
#include "io/synth.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void help(void)
{
    printf("usage: milscreen synth --preset NAME --out DIR [--seed N] [options]\n\n"
           "Writes DIR/train.h5 and DIR/test.h5: multi-channel uint16 fields of rendered cells\n"
           "whose phenotype shows in a class-dependent fraction of the cells, with uneven\n"
           "illumination, blur, shot noise and debris; true instance masks (/masks) and\n"
           "per-cell labels (/cells). Each class has T treatments (wells) on R replicate\n"
           "plates with S sites each; the last treatment of every class is the test set.\n\n"
           "presets:\n"
           "  tiny          3 channels, 128x128, 3 classes (CI: 36 fields in about a second)\n"
           "  bbbc021-like  3 channels (DAPI, Tubulin, Actin), 1024x1280, 12 mechanisms\n"
           "  yeast-like    2 channels (GFP, RFP), 1010x1335, 17 compartments, multi-label\n\n"
           "options:\n"
           "  --seed N          random seed (default 1); same seed, same files\n"
           "  --treatments T    per class (default: preset's, >= 2)\n"
           "  --replicates R    plates (default 3)\n"
           "  --sites S         fields per well\n"
           "  --size WxH        field size (default: preset's)\n"
           "  --level L         deflate level 1..9 (default %d)\n"
           "  --threads N       fields rendered at once (default: all cores)\n",
           MS_SHARD_DEFAULT_LEVEL);
}

int ms_cmd_synth(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "synth"};
    enum { O_PRESET = MS_OPT_FIRST_FREE, O_OUT, O_SEED, O_T, O_R, O_S, O_SIZE, O_LEVEL, O_THR };
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS,
                                         {"preset", required_argument, 0, O_PRESET},
                                         {"out", required_argument, 0, O_OUT},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"treatments", required_argument, 0, O_T},
                                         {"replicates", required_argument, 0, O_R},
                                         {"sites", required_argument, 0, O_S},
                                         {"size", required_argument, 0, O_SIZE},
                                         {"level", required_argument, 0, O_LEVEL},
                                         {"threads", required_argument, 0, O_THR},
                                         {0, 0, 0, 0}};
    const char *preset = NULL, *out = NULL, *size = NULL;
    int seed = 1, t = 0, r = 0, s = 0, level = 0, threads = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = ms_cli_common(&cli, opt, optarg);
        if (c < 0)
            return 2;
        if (c)
            continue;
        int bad = 0;
        const char *name = ms_cli_opt_name(opts, opt);
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case O_PRESET: preset = optarg; break;
        case O_OUT: out = optarg; break;
        case O_SEED: bad = ms_cli_int("synth", name, optarg, 0, 2147483647, &seed); break;
        case O_T: bad = ms_cli_int("synth", name, optarg, 2, 1000, &t); break;
        case O_R: bad = ms_cli_int("synth", name, optarg, 1, 100, &r); break;
        case O_S: bad = ms_cli_int("synth", name, optarg, 1, 1000, &s); break;
        case O_SIZE: size = optarg; break;
        case O_LEVEL: bad = ms_cli_int("synth", name, optarg, 1, 9, &level); break;
        case O_THR: bad = ms_cli_int("synth", name, optarg, 1, 1024, &threads); break;
        default: return ms_cli_usage_error("synth", "unknown option");
        }
        if (bad)
            return 2;
    }
    if (optind < argc)
        return ms_cli_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (!preset || !out)
        return ms_cli_usage_error("synth", "--preset NAME and --out DIR are required");
    ms_synth_preset_t p;
    ms_status_t st = ms_synth_preset(preset, &p);
    if (st)
        return ms_cli_fail("synth", st);
    if (t)
        p.treatments = t;
    if (r)
        p.replicates = r;
    if (s)
        p.sites = s;
    if (size) {
        int w, h, c;
        if (ms_cli_parse_size(size, &w, &h, &c, p.c) != 0 || w < 32 || h < 32 || c != p.c)
            return ms_cli_usage_error("synth", "--size '%s': expected WxH, at least 32x32", size);
        p.w = w;
        p.h = h;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    st = ms_synth_write(&p, out, (uint64_t)seed, threads, level, stderr);
    if (st)
        return ms_cli_fail("synth", st);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("synth: %s preset, %d classes, %dx%dx%d, %d treatments x %d replicates x %d sites "
           "per class -> %s/train.h5, %s/test.h5 (%.1f s)\n",
           p.name, p.k, p.c, p.h, p.w, p.treatments, p.replicates, p.sites, out, out,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return 0;
}
