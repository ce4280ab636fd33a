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
#define MS_CKPT_VERSION 1
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
} ms_ckpt_t;

ms_status_t ms_checkpoint_save(const char *path, ms_net_t *net, ms_ckpt_t *ck);
/* Reads only the metadata (config, names, statistics, position): enough to build the net. */
ms_status_t ms_checkpoint_read_meta(const char *path, ms_ckpt_t *ck);
/* Loads weights (and the optimizer state when with_optimizer) into a net built from the
 * checkpoint's config; fails naming the dataset whose shape differs. */
ms_status_t ms_checkpoint_load(const char *path, ms_net_t *net, int with_optimizer);
void ms_checkpoint_free(ms_ckpt_t *ck);

/* A run folder holds ckpt-<step, 8 digits>.h5. The newest (highest step) into out, or "" when
 * there is none. */
void ms_checkpoint_newest(const char *dir, char *out, size_t n);
/* Removes all but the newest keep checkpoints of dir. */
void ms_checkpoint_prune(const char *dir, int keep);

#endif
