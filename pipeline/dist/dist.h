/* The distributed runtime (DESIGN §4). Ranks are MPI processes, started by `srun --mpi=pmix`
 * under Slurm or by `mpirun`; a process started any other way is the only rank and makes no
 * MPI call. Training: each rank takes its part of every global batch, and the gradients are
 * averaged by one all-reduce per step over the flat gradient buffer (pipeline/dist/allreduce.h:
 * NCCL on GPU ranks, MPI_Allreduce on CPU ranks), so R ranks with batches of B/R follow one
 * rank with batch B up to float summation order. Scoring: shards are dealt
 * to ranks. A rank that fails takes the others down (MPI_Abort) rather than leave them
 * waiting in an all-reduce. */
#ifndef MS_DIST_H
#define MS_DIST_H

#include <stddef.h>

#include "engine/net.h"
#include "engine/status.h"

typedef struct {
    int rank, ranks;             /* in the job */
    int local_rank, local_ranks; /* on this node (MPI_COMM_TYPE_SHARED): the GPU to take */
    int mpi;                     /* MPI was initialised here */
} ms_dist_t;

/* Joins the job's ranks when the process was started by an MPI launcher, else makes it the
 * only rank. Fails with a clear message when Slurm started several tasks without MPI (each
 * would train alone), or when this build has no MPI and the launcher asked for ranks. */
ms_status_t ms_dist_open(ms_dist_t *d);
/* MPI_Finalize, when it was initialised here. */
void ms_dist_close(ms_dist_t *d);
/* v[i] = (sum over ranks of v[i]) / ranks, the division rounded once (host memory, float or
 * double): the CPU ranks' gradient all-reduce (pipeline/dist/allreduce.h). */
ms_status_t ms_dist_mean(ms_dist_t *d, void *v, size_t n, ms_dtype_t dtype);
/* v[i] = sum over ranks of v[i] (host doubles). */
ms_status_t ms_dist_sum(ms_dist_t *d, double *v, int n);
/* Rank 0's bytes to every rank. */
ms_status_t ms_dist_bcast(ms_dist_t *d, void *buf, int bytes);
/* After this rank's error has been printed: ends every rank of the job with code. Returns
 * code when there is only one rank. */
int ms_dist_fail(ms_dist_t *d, int code);

#endif
