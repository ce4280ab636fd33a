/* The loader that feeds training and scoring: batches of normalised float images and their
 * targets from a list of shards, decoded ahead by background threads, with random crops, the
 * 8 rotations/reflections, an in-memory cache of decoded images and a shared-seed shuffle of
 * which rank r of R takes a disjoint part. Everything random is a pure function of (seed,
 * epoch, global image index), so batches are identical whatever the thread count. */
#ifndef MS_LOADER_H
#define MS_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/status.h"
#include "io/shard.h"

typedef struct {
    const char *const *paths; /* shards, all with the same channels and classes */
    int npaths;
    int crop;          /* side of a square crop, 0 = whole image (all shards one size) */
    int random_crop;   /* 1: crop position drawn per image and epoch; 0: centred */
    int augment;       /* 1: one of the 8 rotations/reflections per image and epoch (only the
                        * 4 that keep the shape when crop == 0 and H != W) */
    int shuffle;       /* 1: a new permutation every epoch; 0: shard order (scoring) */
    uint64_t seed;
    int rank, ranks;   /* this rank sees its part of every global batch; ranks >= 1 */
    int batch;         /* images per batch on this rank (the global batch is batch * ranks) */
    int drop_last;     /* 1: drop the last incomplete global batch (training) */
    int threads;       /* decoding threads; 0: decode in ms_loader_next */
    int prefetch;      /* batches decoded ahead (0: 2 + threads / batch) */
    size_t cache_bytes; /* decoded images kept in memory across epochs, at most this much */
    const float *mean, *std; /* (C) normalisation; NULL: mean 0, std 1 */
    int labelled_only; /* skip images whose label is unknown */
} ms_loader_opts_t;

typedef struct {
    int n;            /* images in this batch; 0: the epoch is over */
    int c, h, w, k;
    float *x;         /* (n, C, h, w) normalised */
    float *t;         /* (n, K) one-hot or multi-hot (all 0 for an unknown label) */
    int64_t *index;   /* (n) global image index: images of earlier shards + image */
    int *shard;       /* (n) shard of each image */
    int *image;       /* (n) image within its shard */
    int *transform;   /* (n) 0..7: bit 0 flip x, bit 1 flip y, bit 2 transpose (applied first) */
    int *y0, *x0;     /* (n) crop origin in the image */
} ms_batch_t;

typedef struct ms_loader ms_loader_t;

ms_status_t ms_loader_open(ms_loader_t **L, const ms_loader_opts_t *opts);
void ms_loader_close(ms_loader_t *L);

int ms_loader_nshards(const ms_loader_t *L);
ms_shard_t *ms_loader_shard(ms_loader_t *L, int s);
/* Images the loader draws from (after labelled_only), over all ranks. */
int ms_loader_images(const ms_loader_t *L);
/* Batches this rank gets per epoch (the same on every rank when drop_last). */
int ms_loader_steps(const ms_loader_t *L);
/* Bytes of decoded images now in the cache. */
size_t ms_loader_cached_bytes(const ms_loader_t *L);

/* Starts epoch e (any order, e.g. resuming at e = 7); threads begin decoding. */
ms_status_t ms_loader_epoch(ms_loader_t *L, int e);
/* The next batch (valid until the next call; owned by the loader); b->n == 0 at the end. */
ms_status_t ms_loader_next(ms_loader_t *L, ms_batch_t *b);

/* Per-channel mean and standard deviation over every pixel of every image in the shards
 * (computed in double, images decoded in parallel). mean, std: (C). */
ms_status_t ms_norm_stats(const char *const *paths, int n, float *mean, float *std);

#endif
