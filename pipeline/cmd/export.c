/* milscreen export: score outputs out to where biologists look: a per-image and a per-cell CSV
 * table for spreadsheets and pandas, and an OME-Zarr plate per plate (image channels, class
 * maps, masks) for napari and Fiji. Everything goes into one folder, written under a temporary
 * name beside it and renamed when complete; an existing export is replaced only with --force. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ms_build_config.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/export/export.h"
#include "pipeline/export/zarr.h"

#define EXPORT_FORMAT "milscreen-export"
#define EXPORT_VERSION 1

static void help(void)
{
    printf("usage: milscreen export --out DIR [options] SCORES.h5 [SCORES.h5 ...]\n\n"
           "Writes the score outputs (milscreen score) to the folder DIR:\n"
           "  images.csv      one row per image: image_id, plate, well, site, treatment,\n"
           "                  replicate, true label, predicted class (both heads) and every\n"
           "                  class's probability by name (fc_prob:<class>, mil_prob:<class>)\n"
           "  cells.csv       one row per scored cell (when the shards list cells): position,\n"
           "                  true label, predicted class, mil_prob:<class>\n"
           "  <plate>.ome.zarr  an OME-Zarr (NGFF 0.4) plate per plate: each field's channels,\n"
           "                  then one class map per class at the image's resolution, and the\n"
           "                  masks as label images; napari and Fiji open it\n"
           "  export.json     what was exported, from which files\n"
           "Metadata and pixels come from the shard each output names (attribute 'source');\n"
           "export checks that it is the shard scored (digest and image ids). Formats:\n"
           "docs/FORMATS.md. No Parquet: Debian 12 has no Arrow/Parquet C or C++ library.\n\n"
           "  --out DIR           the export folder; must not exist unless --force\n"
           "  --force             replace DIR when it holds an earlier export (export.json);\n"
           "                      any other existing DIR is never replaced\n"
           "  --no-zarr           the tables alone\n"
           "  --levels N          resolution levels per field, 1 to 10 (default: halve until\n"
           "                      the longer side is at most 256 pixels)\n"
           "  --zlib L            zlib level of the Zarr chunks, 0 (raw) to 9 (default 1)\n"
           "  --shard-dir DIR     look for the shards in DIR when 'source' does not exist\n"
           "  --max-image-pixels N  refuse images of more pixels per plane (default 2^28)\n");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a folder this command made (its temporary output, or a replaced export). */
static void remove_tree(const char *path)
{
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        fprintf(stderr, "milscreen export: warning: could not remove %s: %s\n", path,
                strerror(errno));
}

/* 0 if path does not exist, 1 if it is a folder holding a milscreen export, else an error
 * saying why it is not replaced. */
static ms_status_t existing_output(const char *path, int force, int *exists)
{
    struct stat sb;
    char mf[4096];
    *exists = 0;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return MS_OK;
        return MS_ERR(MS_EIO, "%s: %s", path, strerror(errno));
    }
    *exists = 1;
    if (!force)
        return MS_ERR(MS_EARG, "%s exists; --force replaces an earlier export", path);
    if (snprintf(mf, sizeof mf, "%s/export.json", path) >= (int)sizeof mf)
        return MS_ERR(MS_EARG, "%s: path too long", path);
    FILE *f = S_ISDIR(sb.st_mode) ? fopen(mf, "rb") : NULL;
    char head[4096] = "";
    size_t got = f ? fread(head, 1, sizeof head - 1, f) : 0;
    head[got] = 0;
    if (f)
        fclose(f);
    if (!strstr(head, "\"" EXPORT_FORMAT "\""))
        return MS_ERR(MS_EARG, "%s exists and is not a milscreen export (no export.json of "
                      "format %s): not replacing it, even with --force", path, EXPORT_FORMAT);
    return MS_OK;
}

static int same_names(const ms_scores_t *a, const ms_scores_t *b)
{
    if (a->K != b->K)
        return 0;
    for (int k = 0; k < a->K; k++)
        if (strcmp(a->class_names[k], b->class_names[k]))
            return 0;
    return 1;
}

static ms_status_t write_manifest(const char *dir, const ms_export_input_t *in, int n_in,
                                  int cells, char **plates, int n_plates)
{
    ms_status_t st = MS_OK;
    ms_json_t j = {0};
    char path[4096];
    ms_json_raw(&j, "{\n  \"format\": \"%s\",\n  \"format_version\": %d,\n  "
                    "\"milscreen_version\": ", EXPORT_FORMAT, EXPORT_VERSION);
    ms_json_str(&j, MS_VERSION);
    ms_json_raw(&j, ",\n  \"class_names\": [");
    for (int k = 0; k < in[0].s.K; k++) {
        ms_json_raw(&j, k ? ", " : "");
        ms_json_str(&j, in[0].s.class_names[k]);
    }
    ms_json_raw(&j, "],\n  \"tables\": [\"images.csv\"%s],\n  \"plates\": [",
                cells ? ", \"cells.csv\"" : "");
    for (int p = 0; p < n_plates; p++) {
        ms_json_raw(&j, p ? ", " : "");
        ms_json_str(&j, plates[p]);
    }
    ms_json_raw(&j, "],\n  \"inputs\": [");
    for (int a = 0; a < n_in; a++) {
        ms_json_raw(&j, "%s\n    {\"scores\": ", a ? "," : "");
        ms_json_str(&j, in[a].scores_path);
        ms_json_raw(&j, ", \"shard\": ");
        ms_json_str(&j, in[a].shard_path);
        ms_json_raw(&j, ", \"images\": %zu, \"cells\": %zu}", in[a].s.N, in[a].s.M);
    }
    ms_json_raw(&j, "\n  ]\n}\n");
    if (j.failed)
        MS_FAIL(MS_ENOMEM, "out of memory writing export.json");
    if (snprintf(path, sizeof path, "%s/export.json", dir) >= (int)sizeof path)
        MS_FAIL(MS_EARG, "%s: path too long", dir);
    MS_TRY(ms_zarr_write_file(path, j.s, j.len));
done:
    ms_json_free(&j);
    return st;
}

int ms_cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"force", no_argument, 0, 'f'},
                                         {"no-zarr", no_argument, 0, 'n'},
                                         {"levels", required_argument, 0, 'l'},
                                         {"zlib", required_argument, 0, 'z'},
                                         {"shard-dir", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {"max-image-pixels", required_argument, 0,
                                          MS_OPT_MAX_PIXELS},
                                         {0, 0, 0, 0}};
    ms_cli_t cli = {.cmd = "export"};
    const char *out = NULL, *shard_dir = NULL;
    int force = 0, no_zarr = 0, levels = 0, zlevel = 1, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            help();
            return 0;
        case 'o':
            out = optarg;
            break;
        case 'f':
            force = 1;
            break;
        case 'n':
            no_zarr = 1;
            break;
        case 'd':
            shard_dir = optarg;
            break;
        case 'l':
            if (ms_cli_int("export", "levels", optarg, 1, 10, &levels))
                return 2;
            break;
        case 'z':
            if (ms_cli_int("export", "zlib", optarg, 0, 9, &zlevel))
                return 2;
            break;
        default: {
            int r = ms_cli_common(&cli, opt, optarg);
            if (r < 0)
                return 2;
            if (r == 0)
                return ms_cli_usage_error("export", "unknown option");
        }
        }
    }
    if (!out || !*out)
        return ms_cli_usage_error("export", "--out DIR is required");
    if (optind >= argc)
        return ms_cli_usage_error("export", "no score outputs given");

    ms_status_t st = MS_OK;
    const int n_in = argc - optind;
    ms_export_input_t *in = NULL;
    char ***zarr_path = NULL, **plates = NULL;
    int n_plates = 0, exists = 0, cells = 0, made_tmp = 0;
    char dest[4096], tmp[4096], old[4096];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    /* the folder and its temporary and replaced names, all in its parent folder */
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/')
        len--;
    if (len >= sizeof dest - 64)
        MS_FAIL(MS_EARG, "--out %s: path too long", out);
    snprintf(dest, sizeof dest, "%.*s", (int)len, out);
    const char *base = ms_export_basename(dest);
    int plen = (int)(base - dest);
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        MS_FAIL(MS_EARG, "--out %s: name a new folder", out);
    snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", plen, dest, base, (long)getpid());
    snprintf(old, sizeof old, "%.*s.%s.old.%ld", plen, dest, base, (long)getpid());
    MS_TRY(existing_output(dest, force, &exists));

    /* every input opened and checked before anything is written */
    MS_ALLOC(in, n_in, "inputs");
    for (int a = 0; a < n_in; a++) {
        MS_TRY(ms_export_input_open(&in[a], argv[optind + a], shard_dir));
        if (!same_names(&in[0].s, &in[a].s))
            MS_FAIL(MS_EFORMAT, "%s and %s have different classes (names or order): export "
                    "them separately", in[0].scores_path, in[a].scores_path);
    }

    if (mkdir(tmp, 0777) != 0)
        MS_FAIL(MS_EIO, "%s: cannot create the temporary folder: %s", tmp, strerror(errno));
    made_tmp = 1;
    if (!no_zarr)
        MS_TRY(ms_export_omezarr(tmp, in, n_in, levels, zlevel, &zarr_path, &plates,
                                 &n_plates));
    MS_TRY(ms_export_tables(tmp, in, n_in, zarr_path, &cells));
    MS_TRY(write_manifest(tmp, in, n_in, cells, plates, n_plates));

    /* complete: into place, the earlier export (if replaced) out of the way first */
    if (exists && rename(dest, old) != 0)
        MS_FAIL(MS_EIO, "cannot move the earlier export %s aside: %s", dest, strerror(errno));
    if (rename(tmp, dest) != 0) {
        int e = errno;
        if (exists && rename(old, dest) != 0)
            fprintf(stderr, "milscreen export: warning: the earlier export is now %s\n", old);
        MS_FAIL(MS_EIO, "cannot rename %s to %s: %s", tmp, dest, strerror(e));
    }
    made_tmp = 0;
    if (exists)
        remove_tree(old);

    clock_gettime(CLOCK_MONOTONIC, &t1);
    size_t N = 0, M = 0;
    for (int a = 0; a < n_in; a++) {
        N += in[a].s.N;
        M += in[a].s.M;
    }
    printf("wrote %s in %.1f s: images.csv (%zu images from %d score output%s)", dest,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), N, n_in,
           n_in == 1 ? "" : "s");
    if (cells)
        printf(", cells.csv (%zu cells)", M);
    for (int p = 0; p < n_plates; p++)
        printf(", %s", plates[p]);
    printf("\n");
done:
    if (made_tmp)
        remove_tree(tmp);
    ms_export_free_paths(zarr_path, in, n_in);
    for (int p = 0; p < n_plates; p++)
        free(plates[p]);
    free(plates);
    for (int a = 0; in && a < n_in; a++)
        ms_export_input_close(&in[a]);
    free(in);
    return st ? ms_cli_fail("export", st) : 0;
}
