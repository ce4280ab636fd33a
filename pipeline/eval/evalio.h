/* Reading what `eval` and `render` need: score output files (DESIGN §3, format
 * "milscreen-scores" version 1) and, from the input shard they name, labels, treatments,
 * cell labels, true masks and single images. Plain HDF5, every call checked and failures
 * naming the file and dataset. */
#ifndef MS_EVALIO_H
#define MS_EVALIO_H

#include <stddef.h>
#include <stdint.h>

#include "engine/status.h"

typedef struct {
    char *path;
    long long file;        /* hid_t of the open file */
    size_t N;              /* images */
    int K;                 /* classes */
    char **image_id;       /* (N) */
    float *mil_prob;       /* (N, K) */
    float *fc_prob;        /* (N, K) or NULL when absent */
    int *pred;             /* (N) or NULL when absent */
    int map_h, map_w;      /* /maps (N, K, h, w); 0 when absent */
    int mask_h, mask_w;    /* /masks (N, H, W); 0 when absent */
    size_t M;              /* cells; 0 when there is no /cells/prob */
    float *cell_prob;      /* (M, K) */
    int *cell_image;       /* (M) */
    char *source;          /* the shard's path (attribute), or NULL */
    char *config;          /* the config text (attribute), or NULL */
    char **class_names;    /* (K) from the attribute, or "0".."K-1" */
    int named;             /* 1 when class_names came from the file */
} ms_scores_t;

ms_status_t ms_scores_open(ms_scores_t *s, const char *path);
void ms_scores_close(ms_scores_t *s);
/* Instance map of image i, class k: out (h, w). */
ms_status_t ms_scores_read_map(const ms_scores_t *s, size_t i, int k, float *out);
/* Mask of image i: out (H, W), 0/1. */
ms_status_t ms_scores_read_mask(const ms_scores_t *s, size_t i, uint8_t *out);

/* The shard side, read through io/shard.h (which validates the format) into the flat arrays
 * the metrics take. */
typedef struct {
    char *path;
    struct ms_shard *shard;
    size_t N;
    int C, H, W;           /* /images (N, C, H, W) */
    int K;                 /* classes (the shard's class_names) */
    char **class_names;    /* (K) */
    char **image_id;       /* (N) */
    int *label;            /* (N) single label, -1 unknown; NULL for multi-label shards */
    int *labels;           /* (N, K) multi-hot, -1 unknown; NULL for single-label shards */
    char **treatment;      /* (N) treatment names, "" unknown */
    int *replicate;        /* (N) replicate numbers */
    size_t M;              /* cells in /cells; 0 when none */
    int *cell_image;       /* (M) */
    int *cell_label;       /* (M): class whose phenotype the cell shows, -1 control-like */
    int has_masks;         /* /masks (N, H, W) present */
    char **channel_names;  /* (C) */
} ms_shard_view_t;

ms_status_t ms_shard_view_open(ms_shard_view_t *v, const char *path);
void ms_shard_view_close(ms_shard_view_t *v);
/* Image i as float: out (C, H, W). */
ms_status_t ms_shard_view_image(const ms_shard_view_t *v, size_t i, float *out);
/* True mask of image i (nonzero = inside, e.g. a label image): out (H, W) of 0/1. */
ms_status_t ms_shard_view_mask(const ms_shard_view_t *v, size_t i, uint8_t *out);

#endif
