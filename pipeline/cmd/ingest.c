/* milscreen ingest: TIFFs named by a CSV manifest or by BBBC021's tables into one shard;
 * the work is in io/ingest.c. */
#include <math.h>
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
           "Builds a shard (docs/FORMATS.md) from TIFFs: 1..16-bit unsigned grey (12-bit and\n"
           "1/4-bit data kept as they are, in 16 or 8 bits), min-is-white (inverted), palette\n"
           "(its colours), RGB and other multi-sample pages (a channel per sample), OME-TIFF\n"
           "(channel names, pages, pixel size), float and signed data with --value-range;\n"
           "striped or tiled, any libtiff compression, either byte order. Every file is\n"
           "checked first; an error names the CSV line and the file, exits non-zero and leaves\n"
           "no shard behind. Each conversion is said once; the class order always.\n\n"
           "  --manifest FILE   CSV, one row per field. milscreen's layout: plate, well, site,\n"
           "                    treatment, replicate, label or labels (';'-separated),\n"
           "                    image_id, file_<channel> (one page: 'a.tif#2' is page 2) or\n"
           "                    file (every channel of an OME-TIFF or RGB file). CellProfiler's\n"
           "                    LoadData layout (FileName_<ch>, PathName_<ch>, Frame_<ch>,\n"
           "                    Metadata_Plate/Well/Site) is recognised by its header. Other\n"
           "                    Metadata_* columns are kept as /meta/<column>\n"
           "  --bbbc021 FILE    BBBC021_v1_image.csv; joined with --moa on compound and\n"
           "                    concentration (3,848 labelled images, 12 MoAs + DMSO)\n"
           "  --root DIR        relative paths start here (default: the CSV's folder)\n"
           "  --out SHARD.h5    the shard; never one of the inputs\n"
           "  --force           replace --out if it exists (refused otherwise)\n"
           "  --classes A,B,..  class names in this order (each once); default: the sorted\n"
           "                    names found (BBBC021: of the MoA table). Give the same list to\n"
           "                    every plate of a screen so that class k means one thing\n"
           "  --label-column C  take the class from column C (e.g. Metadata_moa)\n"
           "  --treatment-column C  take the treatment from column C\n"
           "  --channels A,B    keep these channels, in this order (default: all, in column\n"
           "                    order; RGB samples are <channel>.R, .G, .B)\n"
           "  --sample N        of a multi-sample (RGB) page keep only sample N (0-based)\n"
           "  --value-range LO:HI  read float, signed and 32-bit samples: [LO, HI] maps\n"
           "                    linearly onto 0..65535 (-32768:32767 is int16 exactly);\n"
           "                    a value outside is refused, never clipped\n"
           "  --pixel-size UM   micrometres per pixel, one value or Y,X (default: from\n"
           "                    OME-XML; stored as pixel_size_um)\n"
           "  --plates A,B      BBBC021: only these plates (one shard per plate is typical)\n"
           "  --all             BBBC021: also images without a MoA (label -1)\n"
           "  --compression C   deflate (default; shuffle + deflate) or none\n"
           "  --level L         deflate level 1..9 (default %d)\n"
           "  --tile T          chunk images in TxT tiles (default: one chunk per image)\n"
           "  --dtype D         uint8 or uint16 (default: uint8 only if every value read\n"
           "                    fits 8 bits)\n"
           "  --threads N       images read at once (default: all cores; fewer for images\n"
           "                    so large that the batch would pass 1 GiB)\n"
           "  --max-image-pixels N  refuse TIFFs whose planes declare more pixels (default\n"
           "                    2^28)\n"
           "  --dry-run         parse and join, print the classes and counts, write nothing\n",
           MS_SHARD_DEFAULT_LEVEL);
}

/* "LO:HI" with LO < HI, both finite. */
static int parse_range(const char *s, double *lo, double *hi)
{
    char *end;
    *lo = strtod(s, &end);
    if (end == s || *end != ':')
        return -1;
    const char *h = end + 1;
    *hi = strtod(h, &end);
    return end == h || *end || !isfinite(*lo) || !isfinite(*hi) || !(*lo < *hi) ? -1 : 0;
}

/* "UM" or "Y,X", positive and finite. */
static int parse_pixel_size(const char *s, double ps[2])
{
    char *end;
    ps[0] = strtod(s, &end);
    if (end == s)
        return -1;
    ps[1] = ps[0];
    if (*end == ',') {
        const char *x = end + 1;
        ps[1] = strtod(x, &end);
        if (end == x)
            return -1;
    }
    return *end || !isfinite(ps[0]) || !isfinite(ps[1]) || !(ps[0] > 0) || !(ps[1] > 0) ? -1 : 0;
}

int ms_cmd_ingest(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "ingest"};
    enum { O_MAN = MS_OPT_FIRST_FREE, O_BB, O_MOA, O_ROOT, O_OUT, O_PLATES, O_ALL, O_CLASSES,
           O_COMP, O_LEVEL, O_TILE, O_DTYPE, O_THREADS, O_DRY, O_FORCE, O_CHANNELS, O_SAMPLE,
           O_RANGE, O_PIXEL, O_LABELCOL, O_TREATCOL };
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
                                         {"force", no_argument, 0, O_FORCE},
                                         {"channels", required_argument, 0, O_CHANNELS},
                                         {"sample", required_argument, 0, O_SAMPLE},
                                         {"value-range", required_argument, 0, O_RANGE},
                                         {"pixel-size", required_argument, 0, O_PIXEL},
                                         {"label-column", required_argument, 0, O_LABELCOL},
                                         {"treatment-column", required_argument, 0, O_TREATCOL},
                                         {0, 0, 0, 0}};
    const char *manifest = NULL, *bb = NULL, *moa = NULL, *out = NULL;
    ms_ingest_opts_t o = ms_ingest_defaults();
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int c = ms_cli_common(&cli, opt, optarg);
        if (c < 0)
            return 2;
        if (c)
            continue;
        int v = 0;
        if ((opt == O_LEVEL || opt == O_TILE || opt == O_THREADS || opt == O_SAMPLE) &&
            ms_cli_int("ingest", ms_cli_opt_name(opts, opt), optarg,
                       opt == O_LEVEL ? 1 : 0, opt == O_LEVEL ? 9 : opt == O_SAMPLE ? 63 : 100000,
                       &v))
            return 2;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case O_MAN: manifest = optarg; break;
        case O_BB: bb = optarg; break;
        case O_MOA: moa = optarg; break;
        case O_ROOT: o.root = optarg; break;
        case O_OUT: out = optarg; break;
        case O_PLATES: o.plates = optarg; break;
        case O_ALL: o.all = 1; break;
        case O_CLASSES: o.classes = optarg; break;
        case O_CHANNELS: o.channels = optarg; break;
        case O_LABELCOL: o.label_column = optarg; break;
        case O_TREATCOL: o.treatment_column = optarg; break;
        case O_FORCE: o.force = 1; break;
        case O_SAMPLE: o.sample = v; break;
        case O_RANGE:
            if (parse_range(optarg, &o.map.lo, &o.map.hi))
                return ms_cli_usage_error("ingest", "--value-range '%s': LO:HI with LO < HI",
                                          optarg);
            o.map.set = 1;
            break;
        case O_PIXEL:
            if (parse_pixel_size(optarg, o.pixel_size))
                return ms_cli_usage_error("ingest", "--pixel-size '%s': micrometres per pixel, "
                                          "one positive number or Y,X", optarg);
            break;
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
                              : ms_ingest_bbbc021(bb, moa, NULL, out, &o);
    if (st)
        return ms_cli_fail("ingest", st);
    if (!o.dry_run)
        printf("ingest: wrote %s\n", out);
    return 0;
}
