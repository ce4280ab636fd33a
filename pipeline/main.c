/* milscreen: one binary, one command per job step. */
#include <stdio.h>
#include <string.h>

#include "ms_build_config.h"
#include "pipeline/commands.h"
#include "pipeline/version.h"

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} command_t;

static const command_t commands[] = {
    {"model", "print the network of a config: layers, shapes, parameters, cost", ms_cmd_model},
    {"info", "describe a shard, score output or checkpoint (--json for scripts)", ms_cmd_info},
    {"train", "train a network on plate shards (checkpoints, --resume)", ms_cmd_train},
    {"plot", "a PNG of a run's training curves: loss and accuracy per epoch", ms_cmd_plot},
    {"score", "predict, map and mask every image of plate shards with a checkpoint", ms_cmd_score},
    {"bench", "measure speed (--cpu, --gpu, --io), optionally against PyTorch", ms_cmd_bench},
    {"eval", "accuracy, mAP, treatment and per-cell accuracy, mask IoU of score outputs",
     ms_cmd_eval},
    {"render", "a PNG of one scored image: class map, mask outline, probabilities", ms_cmd_render},
    {"export", "score outputs as CSV tables and OME-Zarr plates (napari, Fiji)", ms_cmd_export},
    {"ingest", "build a shard from TIFFs (CSV manifest or BBBC021 tables)", ms_cmd_ingest},
    {"synth", "write a synthetic plate data set (cells, masks, per-cell labels)", ms_cmd_synth},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: milscreen <command> [--config FILE] [--set section.key=value ...] "
               "[options]\n\n"
               "Classify and segment high-content-screening plates with a multiple instance\n"
               "learning CNN (Kraus, Ba & Frey 2016).\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'milscreen <command> --help' describes a command.\n"
               "Backends in this build: ref%s%s. MPI: %s.\n",
            MS_HAVE_DNNL ? ", cpu (oneDNN)" : "", MS_HAVE_CUDA ? ", cuda" : "",
            MS_HAVE_MPI ? "yes" : "no");
}

/* -h is --help on every command (the commands parse long options only): argv with each
 * "-h" before any "--" made "--help". */
static char **short_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "-h"))
            argv[i] = (char *)"--help";
    return argv;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version"))
        return ms_version_print(stdout);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, short_help(argc - 1, argv + 1));
    fprintf(stderr, "milscreen: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
