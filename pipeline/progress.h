/* Progress of long work: one fixed-width line per interval (step | epoch | loss | img/s |
 * ETA), flushed, or a bar redrawn in place on a terminal; a machine-readable JSON line per
 * interval in the run folder's log. Only rank 0 prints. */
#ifndef MS_PROGRESS_H
#define MS_PROGRESS_H

#include <stdio.h>

typedef enum { MS_PROGRESS_AUTO, MS_PROGRESS_LINES, MS_PROGRESS_BAR } ms_progress_mode_t;

/* Where the run's wall time goes, seconds, added up by the caller. engine: the backend's
 * work including the input upload, timed to the device's completion (the caller syncs each
 * step), so engine / wall is the device's busy fraction; loader: waiting for the next batch;
 * comm: the gradient all-reduce; checkpoint, validation: as named. */
typedef struct {
    double engine, loader, comm, checkpoint, validation;
} ms_timing_t;

/* MS_TRY(call), adding its seconds to counter (a double). */
#define MS_TIMED(counter, call)                                                              \
    do {                                                                                   \
        double t_ = ms_now();                                                              \
        MS_TRY(call);                                                                      \
        (counter) += ms_now() - t_;                                                        \
    } while (0)

typedef struct {
    ms_progress_mode_t mode; /* resolved: LINES or BAR */
    FILE *log;               /* JSON lines, or NULL */
    double t0, last;         /* seconds */
    long total;              /* steps in the run, for the ETA */
    long start_step;         /* first step of this process (resume) */
    double interval;         /* seconds between lines */
    int quiet;               /* not rank 0 */
    int bar_open;
    ms_timing_t time;        /* the caller adds into this */
    ms_timing_t time_last;   /* at the last line: the next line's shares are of the interval */
    long last_step;          /* step of the last line, and its shares: a forced line with no */
    double last_busy, last_wait; /* step since then repeats them rather than showing 0 */
} ms_progress_t;

/* mode_name: "auto" (bar on a terminal outside Slurm, lines otherwise), "lines" or "bar". */
int ms_progress_parse(const char *mode_name, ms_progress_mode_t *mode);
void ms_progress_start(ms_progress_t *p, ms_progress_mode_t mode, FILE *log, long start_step,
                       long total, int quiet);
/* Called every step; prints when the interval has passed or force is set. A line's "busy"
 * is the backend's share of the interval's training steps (p->time). */
void ms_progress_step(ms_progress_t *p, long step, long epoch, double loss, long images,
                      int force);
/* Every log line carries "time" (wall clock, ISO 8601 UTC) and "elapsed_s" (seconds since
 * ms_progress_start); ms_progress_start logs a "start" event (the step it starts from). */
/* A line of the log only (json_fields: the object's fields without braces). */
void ms_progress_log(ms_progress_t *p, const char *json_fields);
/* A free-form line (validation results...), printed between progress lines and logged. */
void ms_progress_note(ms_progress_t *p, const char *json_fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends a bar, then prints and logs where the time went (ms_timing_t) over the whole run. */
void ms_progress_end(ms_progress_t *p);
double ms_now(void);

#endif
