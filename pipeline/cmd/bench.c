/* milscreen bench: dispatches to the benchmark sections (--cpu, --gpu, --io). */
#include <stdio.h>
#include <string.h>

#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void help(void)
{
    printf("usage: milscreen bench --cpu [--vs-pytorch] [options]\n\n"
           "  --cpu         the paper's network on the oneDNN CPU backend: training at\n"
           "                256x256 batch 4 and 900x900 batch 1, inference at 1000x1200,\n"
           "                per-layer forward/backward times and GFLOP/s\n"
           "  --gpu         the paper's network on the CUDA backend in fp32, TF32 and bf16:\n"
           "                training at 900x900 batch 16, inference at 1000x1200, peak\n"
           "                device memory, per-layer times\n"
           "  --io          reading, decoding and normalising shards: images/s with 1, 2 and\n"
           "                all threads per compression setting, file size per image\n"
           "  --scaling     the step's compute time and the gradient all-reduce's time on\n"
           "                this machine, one rank or several (mpirun -np 2 milscreen bench\n"
           "                --scaling)\n"
           "  --vs-pytorch  also run tools/bench-pytorch in the same invocation; print ratios\n"
           "'milscreen bench --cpu --help' lists the section's own options (--gpu, --io and\n"
           "--scaling too).\n");
}

int ms_cmd_bench(int argc, char **argv)
{
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
