/* milscreen export: a score output joined with the shard it scored, checked once here, then
 * written out as tables (tables.c) and as an OME-Zarr plate (omezarr.c). */
#ifndef MS_EXPORT_H
#define MS_EXPORT_H

#include <stddef.h>

#include "engine/status.h"
#include "io/shard.h"
#include "pipeline/eval/evalio.h"

typedef struct {
    char *scores_path;
    ms_scores_t s;       /* the score output, all of its tables in memory */
    char *shard_path;    /* where its shard was found */
    ms_shard_t *shard;   /* the shard: metadata, labels, cells, pixels */
    int H, W;            /* image size */
    /* Where instance (u, v) of the maps sits in the image: its receptive field is centred at
     * pixel offset + stride * (u, v) (from the network config the output was scored with).
     * stride 0 when the output has no maps. */
    int stride;
    double offset;
    int has_pixel_size;
    double pixel_size[2]; /* (y, x) micrometres per pixel: the shard's pixel_size_um */
} ms_export_input_t;

/* Opens a score output and its shard: the shard named by the output's `source` attribute,
 * else the file of that name in shard_dir (when given), else beside the output. Checks that
 * the output is complete (image_id, mil_prob, fc_prob, pred), that the shard is the one
 * scored (SHA-256 against `source_digest`), that both list the same image ids in the same
 * order, that cell records agree, and that maps and masks fit the images. Every message names
 * the files. */
ms_status_t ms_export_input_open(ms_export_input_t *in, const char *scores_path,
                                 const char *shard_dir);
void ms_export_input_close(ms_export_input_t *in);

/* The name of the shard file (after the last '/'). */
const char *ms_export_basename(const char *path);

/* Writes dir/images.csv (one row per image of every input) and, when any input has scored
 * cells, dir/cells.csv (docs/FORMATS.md "Export tables"). zarr_path[i][j] (or NULL for none)
 * is the OME-Zarr field of image j of input i, relative to dir. Every input must have the
 * same class names. */
ms_status_t ms_export_tables(const char *dir, const ms_export_input_t *in, int n_in,
                             char **const *zarr_path, int *wrote_cells);

/* Writes one OME-Zarr plate per plate name found in the inputs' metadata,
 * dir/<plate>.ome.zarr (docs/FORMATS.md "OME-Zarr plates"), with `levels` resolution levels
 * (0: until the longest side is at most 256 pixels) and chunks zlib-compressed at `zlib_level`
 * (0 raw). zarr_path (n_in arrays of N strings each, malloc'd; free with
 * ms_export_free_paths) gets each image's field, relative to dir; plates (malloc'd, n_plates
 * of them) the plate folders' names. */
ms_status_t ms_export_omezarr(const char *dir, ms_export_input_t *in, int n_in, int levels,
                              int zlib_level, char ****zarr_path, char ***plates,
                              int *n_plates);
void ms_export_free_paths(char ***zarr_path, const ms_export_input_t *in, int n_in);

#endif
