/* milscreen ingest: TIFFs named by a CSV manifest or by BBBC021's tables into one shard;
 * the work is in io/ingest.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ingest.h"
#include "io/tiff.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void help(void)
{
    printf("usage: milscreen ingest --manifest FILE.csv --out SHARD.h5 [options]\n"
           "       milscreen ingest --bbbc021 BBBC021_v1_image.csv --moa BBBC021_v1_moa.csv\n"
           "                        [--root DIR] --out SHARD.h5 [options]\n\n"
           "Builds a shard (docs/FORMATS.md) from TIFFs: 8 or 16 bit, striped or tiled,\n"
           "uncompressed, LZW, deflate or PackBits, either byte order, one channel per file\n"
           "or per page ('file.tif#2'). Every file is checked first; an error names the CSV\n"
           "line and the file, exits non-zero and leaves no shard behind.\n\n"
           "  --manifest FILE   CSV, one row per field: plate, well, site, treatment,\n"
           "                    replicate, label or labels (';'-separated), image_id,\n"
           "                    file_<channel> ... (paths relative to the CSV's folder)\n"
           "  --bbbc021 FILE    BBBC021_v1_image.csv; joined with --moa on compound and\n"
           "                    concentration (3,848 labelled images, 12 MoAs + DMSO)\n"
           "  --root DIR        folder holding BBBC021's Week*/ folders (default: the CSV's)\n"
           "  --plates A,B      BBBC021: only these plates (one shard per plate is typical)\n"
           "  --all             BBBC021: also images without a MoA (label -1)\n"
           "  --classes A,B,..  class names in this order (default: sorted names found)\n"
           "  --compression C   deflate (default; shuffle + deflate) or none\n"
           "  --level L         deflate level 1..9 (default %d)\n"
           "  --tile T          chunk images in TxT tiles (default: one chunk per image)\n"
           "  --dtype D         uint8 or uint16 (default: uint8 only if every TIFF is 8-bit)\n"
           "  --threads N       images read at once (default: all cores)\n"
           "  --dry-run         parse and join, print the classes and counts, write nothing\n",
           MS_SHARD_DEFAULT_LEVEL);
}

int ms_cmd_ingest(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "ingest"};
    enum { O_MAN = MS_OPT_FIRST_FREE, O_BB, O_MOA, O_ROOT, O_OUT, O_PLATES, O_ALL, O_CLASSES,
           O_COMP, O_LEVEL, O_TILE, O_DTYPE, O_THREADS, O_DRY };
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS,
                                         {"manifest", required_argument, 0, O_MAN},
                                         {"bbbc021", required_argument, 0, O_BB},
                                         {"moa", required_argument, 0, O_MOA},
                                         {"root", required_argument, 0, O_ROOT},
                                         {"out", required_argument, 0, O_OUT},
                                         {"plates", required_argument, 0, O_PLATES},
                                         {"all", no_argument, 0, O_ALL},
                                         {"classes", required_argument, 0, O_CLASSES},
                                         {"compression", required_argument, 0, O_COMP},
                                         {"level", required_argument, 0, O_LEVEL},
                                         {"tile", required_argument, 0, O_TILE},
                                         {"dtype", required_argument, 0, O_DTYPE},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"dry-run", no_argument, 0, O_DRY},
                                         {0, 0, 0, 0}};
    const char *manifest = NULL, *bb = NULL, *moa = NULL, *root = NULL, *out = NULL;
    ms_ingest_opts_t o = {.comp = MS_COMP_DEFLATE, .log = stderr};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = ms_cli_common(&cli, opt, optarg);
        if (c < 0)
            return 2;
        if (c)
            continue;
        int v = 0;
        if ((opt == O_LEVEL || opt == O_TILE || opt == O_THREADS) &&
            ms_cli_int("ingest", ms_cli_opt_name(opts, opt), optarg,
                       opt == O_LEVEL ? 1 : 0, opt == O_LEVEL ? 9 : 100000, &v))
            return 2;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case O_MAN: manifest = optarg; break;
        case O_BB: bb = optarg; break;
        case O_MOA: moa = optarg; break;
        case O_ROOT: root = optarg; break;
        case O_OUT: out = optarg; break;
        case O_PLATES: o.plates = optarg; break;
        case O_ALL: o.all = 1; break;
        case O_CLASSES: o.classes = optarg; break;
        case O_COMP:
            if (!strcmp(optarg, "deflate"))
                o.comp = MS_COMP_DEFLATE;
            else if (!strcmp(optarg, "none"))
                o.comp = MS_COMP_NONE;
            else
                return ms_cli_usage_error("ingest", "--compression '%s': deflate or none", optarg);
            break;
        case O_LEVEL: o.level = v; break;
        case O_TILE: o.tile = v; break;
        case O_THREADS: o.threads = v; break;
        case O_DTYPE:
            if (!strcmp(optarg, "uint8"))
                o.dtype = MS_DTYPE_U8;
            else if (!strcmp(optarg, "uint16"))
                o.dtype = MS_DTYPE_U16;
            else
                return ms_cli_usage_error("ingest", "--dtype '%s': uint8 or uint16", optarg);
            break;
        case O_DRY: o.dry_run = 1; break;
        default: return ms_cli_usage_error("ingest", "unknown option");
        }
    }
    if (optind < argc)
        return ms_cli_usage_error("ingest", "unexpected argument '%s'", argv[optind]);
    if (!!manifest + !!bb != 1)
        return ms_cli_usage_error("ingest", "give one of --manifest FILE or --bbbc021 FILE");
    if (bb && !moa)
        return ms_cli_usage_error("ingest", "--bbbc021 needs --moa BBBC021_v1_moa.csv");
    if (!out && !o.dry_run)
        return ms_cli_usage_error("ingest", "--out SHARD.h5 is required");
    if (!ms_tiff_available() && !o.dry_run)
        return ms_cli_usage_error("ingest", "this milscreen was built without libtiff "
                                  "(install libtiff-dev and reconfigure)");
    ms_status_t st = manifest ? ms_ingest_manifest(manifest, out, &o)
                              : ms_ingest_bbbc021(bb, moa, root, out, &o);
    if (st)
        return ms_cli_fail("ingest", st);
    if (!o.dry_run)
        printf("ingest: wrote %s\n", out);
    return 0;
}
