/* Building shards from TIFFs: a CSV manifest (docs/FORMATS.md) or BBBC021's published tables
 * (BBBC021_v1_image.csv joined with BBBC021_v1_moa.csv on compound and concentration). Every
 * file is checked before the shard is created; any error names the CSV file and line (and the
 * TIFF), and no partial shard is left behind. */
#ifndef MS_INGEST_H
#define MS_INGEST_H

#include <stdio.h>

#include "engine/status.h"
#include "io/shard.h"

typedef struct {
    ms_comp_t comp;
    int level;            /* 0: default */
    int tile;             /* 0: one chunk per image */
    ms_pixel_t dtype;     /* 0: uint8 if every TIFF is 8-bit, else uint16 */
    const char *classes;  /* comma-separated class names in order; NULL: sorted names found */
    int threads;          /* images read at once (0: all cores) */
    int all;              /* BBBC021: keep images whose compound has no MoA (label -1) */
    const char *plates;   /* BBBC021: comma-separated plates to keep; NULL: all */
    int dry_run;          /* parse, join and print the summary; read no TIFF, write nothing */
    FILE *log;            /* progress and summary lines; NULL: quiet */
} ms_ingest_opts_t;

ms_status_t ms_ingest_manifest(const char *csv, const char *out, const ms_ingest_opts_t *o);
/* root: the folder holding the Image_PathName_* folders (default: the image CSV's folder). */
ms_status_t ms_ingest_bbbc021(const char *image_csv, const char *moa_csv, const char *root,
                              const char *out, const ms_ingest_opts_t *o);

#endif
