/* milscreen bench: dispatches to the benchmark sections (--cpu, --gpu, --io). */
#include <stdio.h>
#include <string.h>

#include "engine/spec.h"
#include "ms_build_config.h"
#include "engine/install.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void help(void)
{
    printf("usage: milscreen bench --cpu [--vs-pytorch] [options]\n\n"
           "  --cpu         the machine (measured fp32 FMA and bf16 peak, cores / SMT), then\n"
           "                the paper's network on the oneDNN CPU backend in fp32 and bf16:\n"
           "                training at 256x256 batch 4 and 900x900 batch 1, inference at\n"
           "                1000x1200, per-layer times, GFLOP/s and fractions of the peak\n"
           "  --gpu         the paper's network on the CUDA backend in fp32, TF32 and bf16:\n"
           "                training at 900x900 batch 16, inference at 1000x1200, peak\n"
           "                device memory, per-layer times\n"
           "  --io          reading, decoding and normalising shards: images/s with 1, 2 and\n"
           "                all threads per compression setting, file size per image\n"
           "  --scaling     the step's compute time and the gradient all-reduce's time on\n"
           "                this machine, one rank or several (mpirun -np 2 milscreen bench\n"
           "                --scaling)\n"
           "  --vs-pytorch  also run tools/bench-pytorch in the same invocation; print ratios\n"
           "  --print-config  print the network config the sections read (--config, default\n"
           "                configs/paper.ini, with --set), every default filled in, and exit\n"
           "'milscreen bench --cpu --help' lists the section's own options (--gpu, --io and\n"
           "--scaling too).\n");
}

/* --print-config for every section: they read only the network ([net] and the layers) from
 * --config (default configs/paper.ini) and --set; the sections' own options are ignored. */
static int print_config(int argc, char **argv)
{
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS, MS_CLI_PRINT_CONFIG_OPTION,
                                         {0, 0, 0, 0}};
    ms_cli_t cli = {.cmd = "bench"};
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (ms_cli_common(&cli, opt, optarg) < 0)
            return 2;
    opterr = 1;
    ms_status_t st = MS_OK;
    char paper[4096];
    if (!cli.config_path) {
        MS_TRY(ms_install_data(paper, sizeof paper, "configs/paper.ini"));
        cli.config_path = paper;
    }
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    MS_TRY(ms_cli_config(&cli, &cfg));
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_TRY(ms_cli_print_config(&cli, cfg, cli.config_path));
done:
    ms_spec_free(&spec);
    ms_config_free(cfg);
    return st ? ms_cli_fail("bench", st) : 0;
}

int ms_cmd_bench(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--print-config"))
            return print_config(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu"))
            return ms_bench_cpu(argc, argv);
        if (!strcmp(argv[i], "--gpu"))
            return ms_bench_gpu(argc, argv);
        if (!strcmp(argv[i], "--io"))
            return ms_bench_io(argc, argv);
        if (!strcmp(argv[i], "--scaling"))
            return ms_bench_scaling(argc, argv);
    }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        }
    return ms_cli_usage_error("bench", "choose a section: --cpu, --gpu, --io or --scaling");
}
