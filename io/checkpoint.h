/* Checkpoints: HDF5 files holding the weights (one dataset per parameter, PyTorch layout,
 * under the layer's name: /weights/conv1/weight (O,I,kh,kw), /weights/fc/bias ...), the Adam
 * moments and step, the run position, the normalisation statistics, class and channel names
 * (in the network's order) and the config text. Written to a temporary name and renamed, so a crash never leaves half a file. */
#ifndef MS_CHECKPOINT_H
#define MS_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/net.h"

#define MS_CKPT_FORMAT "milscreen-checkpoint"
/* 2: every dataset chunked with HDF5's fletcher32 checksum, HDF5 1.8 file format (checksummed
 * metadata). Version 1 files (no checksums; the digest is verified) are still read. */
#define MS_CKPT_VERSION 2
#define MS_MAX_CHANNELS 64

typedef struct {
    long step;            /* optimizer steps taken */
    long epoch;           /* epoch in progress */
    long batch;           /* batches of that epoch already consumed */
    uint64_t seed;        /* run seed (dropout masks and shuffles derive from it) */
    int channels;
    float mean[MS_MAX_CHANNELS], std[MS_MAX_CHANNELS];
    char *class_names;    /* K names separated by '\n' (malloc'd on load) */
    char *channel_names;  /* C names separated by '\n' (malloc'd on load; NULL when the
                           * checkpoint predates them) */
    char *config;         /* the effective config text (malloc'd on load) */
    char digest[17];      /* hex of a 64-bit hash of config and weights (set on save/load) */
    int version;          /* format version of the file read */
} ms_ckpt_t;

ms_status_t ms_checkpoint_save(const char *path, ms_net_t *net, ms_ckpt_t *ck);
/* Reads only the metadata (config, names, statistics, position): enough to build the net.
 * /norm must be finite with std > 0. */
ms_status_t ms_checkpoint_read_meta(const char *path, ms_ckpt_t *ck);
/* Loads weights (and the optimizer state when with_optimizer) into a net built from the
 * checkpoint's config. Checkpoints prove themselves: each dataset's checksum (version 2; a
 * damaged one is named), finite weights and Adam moments, and the stored digest of config and
 * weights are verified before the net is changed; on failure the net is as it was. */
ms_status_t ms_checkpoint_load(const char *path, ms_net_t *net, int with_optimizer);
void ms_checkpoint_free(ms_ckpt_t *ck);

/* A run folder holds ckpt-<step, 8 digits>.h5. The steps of the max newest, newest first;
 * their count. */
int ms_checkpoint_list(const char *dir, long *steps, int max);
/* dir/ckpt-<step>.h5 into out; -1 when it does not fit. */
int ms_checkpoint_path(const char *dir, long step, char *out, size_t n);
/* The newest (highest step) into out, or "" when there is none. */
void ms_checkpoint_newest(const char *dir, char *out, size_t n);
/* Removes all but the newest keep checkpoints of dir. */
void ms_checkpoint_prune(const char *dir, int keep);

#endif
