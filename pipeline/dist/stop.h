/* A stop request that reaches every rank without a collective: work that is not in lock step
 * (score: each rank its own shards, of any size) cannot fold a stop flag into a per-step
 * all-reduce as training does. The rank that got a signal sends one small message to every
 * other rank; each rank polls between units of work (an image) and stops too. With one rank
 * every call is a no-op. */
#ifndef MS_DIST_STOP_H
#define MS_DIST_STOP_H

#include <signal.h>

#include "pipeline/dist/dist.h"

typedef struct {
    ms_dist_t *d;
    int sent;       /* this rank asked the others to stop */
    int got;        /* stop messages received so far */
    int from, sig;  /* the first request received: its rank and signal */
    void *comm;     /* a duplicate of MPI_COMM_WORLD: no message of another part matches */
    void *reqs;     /* (ranks) the sends in flight */
} ms_dist_stop_t;

/* Collective (every rank, same point). */
ms_status_t ms_dist_stop_open(ms_dist_stop_t *s, ms_dist_t *d);
/* Asks every other rank to stop (once; later calls do nothing); sig is passed on. */
ms_status_t ms_dist_stop_send(ms_dist_stop_t *s, int sig);
/* 1 when another rank has asked to stop (s->from, s->sig say who and why); never blocks. */
int ms_dist_stop_poll(ms_dist_stop_t *s);
/* Collective, once at the end of this rank's work. While it waits for the other ranks to
 * finish theirs, a signal here (*sig set by the caller's handler) is still passed on, so a
 * rank that is done can stop the others. Then it receives the requests still in flight and
 * completes this rank's sends, so that MPI_Finalize finds nothing pending. */
ms_status_t ms_dist_stop_close(ms_dist_stop_t *s, volatile sig_atomic_t *sig);

#endif
