/* milscreen bench: dispatches to the benchmark sections (--cpu, --gpu, --io). */
#include <stdio.h>
#include <string.h>

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
           "  --vs-pytorch  also run tools/bench-pytorch in the same invocation; print ratios\n"
           "'milscreen bench --cpu --help' lists the section's own options (--gpu too).\n");
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
    }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        }
    return ms_cli_usage_error("bench", "choose a section: --cpu, --gpu or --io");
}
