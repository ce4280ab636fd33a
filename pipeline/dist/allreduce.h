/* The gradient all-reduce (DESIGN §4), one interface whatever runs underneath, so the
 * training loop does not know which: after each step's backward pass the net's flat gradient
 * buffer becomes the mean over ranks.
 *   - CPU ranks: MPI_Allreduce of the host buffer, then a division by the ranks.
 *   - GPU ranks: NCCL in device memory, on a stream of its own, in buckets of parameters taken
 *     from the last layer back; a bucket starts as soon as the backward pass has issued the
 *     layers it covers (the net's backward hook, engine/net.h), so it overlaps the rest of
 *     the backward pass. Rank 0 makes the NCCL id and MPI broadcasts it.
 *   - GPU ranks where some rank has no NCCL (a plugin built without it): MPI through host
 *     memory, one download and one upload of the buffer per step.
 * The choice is agreed between ranks (any rank without NCCL makes every rank use MPI), and
 * said in one line (ms_allreduce_describe) of train's start-up table. The mean is the exact
 * sum divided by the ranks, rounded once, on every path: integer-valued gradients come out
 * exact (tests/test_allreduce.c). */
#ifndef MS_ALLREDUCE_H
#define MS_ALLREDUCE_H

#include <stddef.h>

#include "engine/net.h"
#include "engine/spec.h"
#include "pipeline/dist/dist.h"

/* Default bucket size; MILSCREEN_BUCKET_KB overrides it (0: one bucket per layer). */
#define MS_ALLREDUCE_BUCKET_KB 512

typedef struct {
    size_t off, n; /* parameters [off, off + n) of the flat buffers */
    int layer;     /* the lowest layer in the bucket: it starts after this layer's backward */
} ms_bucket_t;

/* Buckets from the last layer back: the parameters of layers nlayers-1, nlayers-2, ...
 * (layers without parameters skipped) are gathered until a bucket holds at least
 * bucket_elems; what is left at layer 0 is the last bucket. Parameters of consecutive layers
 * are contiguous (engine/spec.c), so the buckets tile the buffer from its end down. Writes at
 * most nlayers buckets to out, returns how many. */
int ms_allreduce_buckets(const ms_layer_t *layers, int nlayers, size_t bucket_elems,
                         ms_bucket_t *out);

typedef enum {
    MS_ALLREDUCE_NONE,   /* one rank: nothing to reduce */
    MS_ALLREDUCE_MPI,    /* host gradients, MPI_Allreduce */
    MS_ALLREDUCE_STAGED, /* device gradients through host memory, MPI_Allreduce */
    MS_ALLREDUCE_NCCL    /* device gradients, NCCL, bucketed, overlapping the backward pass */
} ms_allreduce_kind_t;

typedef struct ms_allreduce ms_allreduce_t;

/* Chooses the all-reduce for net (its backend and buffers) over the ranks of d, and sets the
 * net's backward hook when it needs one. force: reduce even with one rank (tests, bench
 * --scaling: the path runs and the mean of one rank is itself). */
ms_status_t ms_allreduce_open(ms_allreduce_t **ar, ms_dist_t *d, ms_net_t *net, int force);
/* Removes the backward hook; NULL is fine. */
void ms_allreduce_close(ms_allreduce_t *ar);
/* One line: which all-reduce, over how many ranks, how. */
const char *ms_allreduce_describe(const ms_allreduce_t *ar);
ms_allreduce_kind_t ms_allreduce_kind(const ms_allreduce_t *ar);
int ms_allreduce_nbuckets(const ms_allreduce_t *ar);
/* The backward hook (what ms_net_backward calls after layer `layer`): starts the buckets
 * whose lowest layer this is. Public so that a test can drive the buckets without a network
 * pass. */
ms_status_t ms_allreduce_layer_done(ms_allreduce_t *ar, int layer);
/* After the backward pass: returns when the net's gradients are the mean over ranks (starting
 * whatever bucket has not been started, so it also reduces a buffer written directly). */
ms_status_t ms_allreduce_wait(ms_allreduce_t *ar);

#endif
