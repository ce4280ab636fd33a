/* Stop requests between ranks (pipeline/dist/stop.h): one int (the signal) from the stopping
 * rank to each other rank on a private communicator; received by polling. */
#include "pipeline/dist/stop.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ms_build_config.h"

#if MS_HAVE_MPI
#include <mpi.h>

#define STOP_TAG 75

static ms_status_t mpi_check(int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return MS_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return MS_ERR(MS_EIO, "stop request between ranks: %s: %s", what, msg);
}
#endif

static int active(const ms_dist_stop_t *s) { return s->d && s->d->mpi && s->d->ranks > 1; }

ms_status_t ms_dist_stop_open(ms_dist_stop_t *s, ms_dist_t *d)
{
    memset(s, 0, sizeof *s);
    s->d = d;
    s->from = -1;
    if (!active(s))
        return MS_OK;
#if MS_HAVE_MPI
    ms_status_t st = MS_OK;
    MPI_Comm *c = NULL;
    MPI_Request *r = NULL;
    MS_ALLOC(c, 1, "stop communicator");
    MS_ALLOC(r, d->ranks, "stop requests");
    for (int i = 0; i < d->ranks; i++)
        r[i] = MPI_REQUEST_NULL;
    s->comm = c;
    s->reqs = r;
    MS_TRY(mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, c), "MPI_Comm_dup"));
    MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
    return MS_OK;
done:
    free(c);
    free(r);
    s->comm = s->reqs = NULL;
    s->d = NULL;
    return st;
#else
    return MS_ERR(MS_EBACKEND, "several ranks without MPI");
#endif
}

ms_status_t ms_dist_stop_send(ms_dist_stop_t *s, int sig)
{
    if (!active(s) || s->sent)
        return MS_OK;
    s->sent = 1;
#if MS_HAVE_MPI
    static int payload[1];
    payload[0] = sig;
    MPI_Request *r = s->reqs;
    for (int i = 0; i < s->d->ranks; i++) {
        if (i == s->d->rank)
            continue;
        int rc = MPI_Isend(payload, 1, MPI_INT, i, STOP_TAG, *(MPI_Comm *)s->comm, &r[i]);
        if (rc != MPI_SUCCESS)
            return mpi_check(rc, "MPI_Isend");
    }
#endif
    return MS_OK;
}

int ms_dist_stop_poll(ms_dist_stop_t *s)
{
    if (!active(s))
        return 0;
#if MS_HAVE_MPI
    for (;;) {
        int flag = 0, sig = 0;
        MPI_Status stat;
        if (MPI_Iprobe(MPI_ANY_SOURCE, STOP_TAG, *(MPI_Comm *)s->comm, &flag, &stat) !=
                MPI_SUCCESS || !flag)
            break;
        if (MPI_Recv(&sig, 1, MPI_INT, stat.MPI_SOURCE, STOP_TAG, *(MPI_Comm *)s->comm,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS)
            break;
        if (s->got++ == 0) {
            s->from = stat.MPI_SOURCE;
            s->sig = sig;
        }
    }
#endif
    return s->got > 0;
}

ms_status_t ms_dist_stop_close(ms_dist_stop_t *s, volatile sig_atomic_t *sig)
{
    ms_status_t st = MS_OK;
    if (!active(s) || !s->comm)
        goto done;
#if MS_HAVE_MPI
    MPI_Comm c = *(MPI_Comm *)s->comm;
    /* 1: wait for every rank to be done, still passing a signal on; once the barrier is
     * complete no rank sends any more */
    MPI_Request bar;
    MS_TRY(mpi_check(MPI_Ibarrier(c, &bar), "MPI_Ibarrier"));
    for (int done = 0;;) {
        MS_TRY(mpi_check(MPI_Test(&bar, &done, MPI_STATUS_IGNORE), "MPI_Test"));
        if (done)
            break;
        if (sig && *sig)
            MS_TRY(ms_dist_stop_send(s, *sig));
        ms_dist_stop_poll(s);
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    /* 2: every rank that sent, sent to every other rank: count the senders, receive the rest */
    int senders = s->sent;
    MS_TRY(mpi_check(MPI_Allreduce(MPI_IN_PLACE, &senders, 1, MPI_INT, MPI_SUM, c),
                     "MPI_Allreduce"));
    for (int left = senders - s->sent - s->got; left > 0; left--) {
        int theirs;
        MPI_Status stat;
        MS_TRY(mpi_check(MPI_Recv(&theirs, 1, MPI_INT, MPI_ANY_SOURCE, STOP_TAG, c, &stat),
                         "MPI_Recv"));
        if (s->got++ == 0) {
            s->from = stat.MPI_SOURCE;
            s->sig = theirs;
        }
    }
    MS_TRY(mpi_check(MPI_Waitall(s->d->ranks, s->reqs, MPI_STATUSES_IGNORE), "MPI_Waitall"));
    MPI_Comm_free((MPI_Comm *)s->comm);
#endif
done:
    free(s->comm);
    free(s->reqs);
    s->comm = s->reqs = NULL;
    return st;
}
