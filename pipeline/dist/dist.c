/* Ranks, the gradient all-reduce and the job-wide abort (pipeline/dist/dist.h). */
#include "pipeline/dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ms_build_config.h"

#if MS_HAVE_MPI
#include <mpi.h>
#endif

/* The launcher's own count of ranks, or 0 when no MPI launcher started this process:
 * Open MPI's mpirun, PMIx (srun --mpi=pmix, Open MPI 5), PMI (MPICH, srun --mpi=pmi2). */
static long launcher_ranks(void)
{
    static const char *const size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                            "SLURM_STEP_NUM_TASKS"};
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_RANK"))
        return 0;
    for (size_t i = 0; i < sizeof size_vars / sizeof *size_vars; i++) {
        const char *v = getenv(size_vars[i]);
        if (v && atol(v) > 0)
            return atol(v);
    }
    return 1; /* PMIx without a size variable: MPI will tell */
}

ms_status_t ms_dist_open(ms_dist_t *d)
{
    memset(d, 0, sizeof *d);
    d->ranks = d->local_ranks = 1;
    long launched = launcher_ranks();
    const char *slurm_tasks = getenv("SLURM_STEP_NUM_TASKS");
    if (!launched && slurm_tasks && atol(slurm_tasks) > 1 && getenv("SLURM_PROCID"))
        return MS_ERR(MS_EARG, "started as task %s of %s Slurm tasks without an MPI launch, so "
                      "every task would work alone: use 'srun --mpi=pmix' (Open MPI), or one "
                      "task", getenv("SLURM_PROCID"), slurm_tasks);
    if (!launched)
        return MS_OK;
#if MS_HAVE_MPI
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return MS_ERR(MS_EIO, "MPI_Init_thread failed");
    d->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->ranks);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &d->local_rank);
    MPI_Comm_size(node, &d->local_ranks);
    MPI_Comm_free(&node);
    /* errors come back as codes, so that the message names what failed */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return MS_OK;
#else
    if (launched > 1)
        return MS_ERR(MS_EBACKEND, "started as one of %ld MPI ranks, but this milscreen was "
                      "built without MPI (install libopenmpi-dev and rebuild)", launched);
    return MS_OK;
#endif
}

void ms_dist_close(ms_dist_t *d)
{
#if MS_HAVE_MPI
    if (d->mpi)
        MPI_Finalize();
#endif
    d->mpi = 0;
}

#if MS_HAVE_MPI
static ms_status_t mpi_check(int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return MS_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return MS_ERR(MS_EIO, "%s: %s", what, msg);
}
#endif

ms_status_t ms_dist_mean(ms_dist_t *d, void *v, size_t n, ms_dtype_t dt)
{
    if (d->ranks == 1)
        return MS_OK; /* the mean of one rank is itself */
#if MS_HAVE_MPI
    ms_status_t st = MS_OK;
    if (n > (size_t)0x7fffffff)
        MS_FAIL(MS_EARG, "all-reduce: %zu values exceed MPI's int count", n);
    MS_TRY(mpi_check(MPI_Allreduce(MPI_IN_PLACE, v, (int)n, dt == MS_F64 ? MPI_DOUBLE : MPI_FLOAT,
                                   MPI_SUM, MPI_COMM_WORLD),
                     "all-reduce of the gradients"));
    /* a division, not a multiplication by 1/ranks: the mean of an exact sum is then rounded
     * once (exact for integers), as the GPU ranks' NCCL path rounds it */
    if (dt == MS_F64) {
        double *p = v, r = d->ranks;
        for (size_t i = 0; i < n; i++)
            p[i] /= r;
    } else {
        float *p = v, r = (float)d->ranks;
        for (size_t i = 0; i < n; i++)
            p[i] /= r;
    }
done:
    return st;
#else
    return MS_ERR(MS_EBACKEND, "several ranks without MPI");
#endif
}

ms_status_t ms_dist_bcast(ms_dist_t *d, void *buf, int bytes)
{
    if (d->ranks == 1)
        return MS_OK;
#if MS_HAVE_MPI
    return mpi_check(MPI_Bcast(buf, bytes, MPI_BYTE, 0, MPI_COMM_WORLD), "broadcast from rank 0");
#else
    return MS_ERR(MS_EBACKEND, "several ranks without MPI");
#endif
}

ms_status_t ms_dist_sum(ms_dist_t *d, double *v, int n)
{
    if (d->ranks == 1)
        return MS_OK;
#if MS_HAVE_MPI
    return mpi_check(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
                     "all-reduce");
#else
    return MS_ERR(MS_EBACKEND, "several ranks without MPI");
#endif
}

int ms_dist_fail(ms_dist_t *d, int code)
{
#if MS_HAVE_MPI
    if (d->mpi && d->ranks > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
#endif
    return code;
}
