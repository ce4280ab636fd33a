/* Building shards from TIFFs: a CSV manifest (milscreen's own layout or CellProfiler's
 * LoadData layout, told apart by the header; docs/FORMATS.md) or BBBC021's published tables
 * (BBBC021_v1_image.csv joined with BBBC021_v1_moa.csv on compound and concentration). Every
 * file is checked before the shard is created; any error names the CSV file and line (and the
 * TIFF), and no partial shard is left behind. The output never replaces an input, nor an
 * existing file unless asked (force). */
#ifndef MS_INGEST_H
#define MS_INGEST_H

#include <stddef.h>
#include <stdio.h>

#include "engine/status.h"
#include "io/shard.h"
#include "io/tiff.h"

/* Images read at once are capped so that their buffers (pixels and encoded chunks) stay
 * under this many bytes: a plate of huge fields is read one or two at a time instead of
 * taking threads x image size of memory. */
#define MS_INGEST_BATCH_BYTES (1ULL << 30)

typedef struct {
    ms_comp_t comp;
    int level;            /* 0: default */
    int tile;             /* 0: one chunk per image */
    ms_pixel_t dtype;     /* 0: uint8 if every value read fits 8 bits (<= 8-bit grey), else uint16 */
    const char *classes;  /* comma-separated class names in order (duplicates refused); NULL:
                           * the sorted names found (the manifest's labels, BBBC021's MoA table),
                           * said loudly for a manifest since another plate may differ */
    const char *channels; /* comma-separated channel names to keep, in this order; NULL: all */
    int sample;           /* -1: each sample of a multi-sample (RGB) page is a channel; else
                           * only this sample (0-based) */
    ms_tiff_map_t map;    /* float, signed and 32-bit samples: [lo, hi] -> 0..65535 (unset:
                           * refused) */
    double pixel_size[2]; /* (y, x) micrometres; 0: from OME-XML where files declare it */
    const char *label_column;     /* a column holding the class name (e.g. Metadata_moa) */
    const char *treatment_column; /* a column holding the treatment */
    const char *root;     /* folder relative file paths start from (default: the CSV's) */
    int force;            /* replace an existing output (never an input) */
    int threads;          /* images read at once (0: all cores) */
    int all;              /* BBBC021: keep images whose compound has no MoA (label -1) */
    const char *plates;   /* BBBC021: comma-separated plates to keep; NULL: all */
    int dry_run;          /* parse, join and print the summary; read no TIFF, write nothing */
    FILE *log;            /* progress and summary lines; NULL: quiet */
} ms_ingest_opts_t;

/* Defaults: deflate, sample -1, everything else 0/NULL, log stderr. */
ms_ingest_opts_t ms_ingest_defaults(void);

ms_status_t ms_ingest_manifest(const char *csv, const char *out, const ms_ingest_opts_t *o);
/* The same on a manifest already in memory (name for messages; relative paths start from
 * name's folder or o->root): a fuzz target calls it with o->dry_run set, which reads no
 * file. */
ms_status_t ms_ingest_manifest_text(const char *name, const char *text, size_t n,
                                    const char *out, const ms_ingest_opts_t *o);
/* root: the folder holding the Image_PathName_* folders (default: the image CSV's folder). */
ms_status_t ms_ingest_bbbc021(const char *image_csv, const char *moa_csv, const char *root,
                              const char *out, const ms_ingest_opts_t *o);

#endif
