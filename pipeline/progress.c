/* Progress lines, bars and the JSON run log. */
#include "pipeline/progress.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Wall-clock time of an event, ISO 8601 in UTC with milliseconds, for the run log. */
static void iso_time(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + len, n - len, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* One line of the run log: the fields, then the wall-clock time and the seconds since this
 * process started. */
static void log_line(ms_progress_t *p, const char *json_fields)
{
    if (!p->log)
        return;
    char t[40];
    iso_time(t, sizeof t);
    fprintf(p->log, "{%s, \"time\": \"%s\", \"elapsed_s\": %.3f}\n", json_fields, t,
            ms_now() - p->t0);
    fflush(p->log);
}

void ms_progress_log(ms_progress_t *p, const char *json_fields)
{
    log_line(p, json_fields);
}

int ms_progress_parse(const char *name, ms_progress_mode_t *mode)
{
    if (!strcmp(name, "auto"))
        *mode = MS_PROGRESS_AUTO;
    else if (!strcmp(name, "lines"))
        *mode = MS_PROGRESS_LINES;
    else if (!strcmp(name, "bar"))
        *mode = MS_PROGRESS_BAR;
    else
        return -1;
    return 0;
}

void ms_progress_start(ms_progress_t *p, ms_progress_mode_t mode, FILE *log, long start_step,
                       long total, int quiet)
{
    memset(p, 0, sizeof *p);
    if (mode == MS_PROGRESS_AUTO)
        mode = (isatty(STDOUT_FILENO) && !getenv("SLURM_JOB_ID")) ? MS_PROGRESS_BAR
                                                                   : MS_PROGRESS_LINES;
    p->mode = mode;
    p->log = log;
    p->t0 = p->last = ms_now();
    p->start_step = start_step;
    p->last_step = start_step;
    p->total = total;
    p->interval = mode == MS_PROGRESS_BAR ? 0.5 : 10.0;
    const char *iv = getenv("MS_PROGRESS_INTERVAL");
    if (iv && atof(iv) > 0)
        p->interval = atof(iv);
    p->quiet = quiet;
    char js[128];
    snprintf(js, sizeof js, "\"event\": \"start\", \"step\": %ld, \"steps_total\": %ld",
             start_step, total);
    log_line(p, js);
    if (!quiet && mode == MS_PROGRESS_LINES) {
        printf("%10s | %6s | %10s | %8s | %5s | %9s\n", "step", "epoch", "loss", "img/s", "busy",
               "ETA");
        fflush(stdout);
    }
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (s < 0 || s > 1e8)
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%dh%02dm%02ds", (int)(s / 3600), (int)(s / 60) % 60, (int)s % 60);
}

void ms_progress_step(ms_progress_t *p, long step, long epoch, double loss, long images,
                      int force)
{
    double now = ms_now();
    if (!force && now - p->last < p->interval)
        return;
    /* the backend's share of this interval's training steps (validation and checkpoints
     * left out): the steady state, not diluted by the start-up */
    const ms_timing_t *a = &p->time, *b = &p->time_last;
    if (force && a->engine == b->engine && p->last > p->t0)
        return; /* no step since the last line (it ended the epoch): nothing new to say */
    double steps = (now - p->last) - (a->validation - b->validation) -
                   (a->checkpoint - b->checkpoint);
    double busy = steps > 0 ? (a->engine - b->engine) / steps : 0;
    double wait = steps > 0 ? (a->loader - b->loader) / steps : 0;
    if (step == p->last_step && p->last_step > p->start_step) {
        busy = p->last_busy; /* no training step in this interval (the end-of-epoch line) */
        wait = p->last_wait;
    }
    p->last_step = step;
    p->last_busy = busy;
    p->last_wait = wait;
    p->time_last = p->time;
    p->last = now;
    double el = now - p->t0;
    long done = step - p->start_step;
    double ips = el > 0 ? images / el : 0;
    double eta = done > 0 ? el / done * (p->total - step) : -1;
    char e[32];
    fmt_eta(e, sizeof e, eta);
    if (p->log) {
        char js[256];
        snprintf(js, sizeof js,
                 "\"event\": \"step\", \"step\": %ld, \"epoch\": %ld, \"loss\": %.8g, "
                 "\"images_per_s\": %.4g, \"busy\": %.4f, \"loader_wait\": %.4f",
                 step, epoch, loss, ips, busy, wait);
        log_line(p, js);
    }
    if (p->quiet)
        return;
    if (p->mode == MS_PROGRESS_BAR) {
        int width = 30, fill = p->total > 0 ? (int)(width * (double)step / p->total) : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        printf("\r[%s] step %ld/%ld epoch %ld loss %.4f %.2f img/s busy %3.0f%% ETA %s   ",
               bar, step, p->total, epoch, loss, ips, 100 * busy, e);
        p->bar_open = 1;
    } else {
        printf("%10ld | %6ld | %10.5f | %8.2f | %4.0f%% | %9s\n", step, epoch, loss, ips,
               100 * busy, e);
    }
    fflush(stdout);
}

void ms_progress_note(ms_progress_t *p, const char *json_fields, const char *fmt, ...)
{
    if (json_fields)
        log_line(p, json_fields);
    if (p->quiet)
        return;
    if (p->bar_open) {
        printf("\n");
        p->bar_open = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

void ms_progress_end(ms_progress_t *p)
{
    double el = ms_now() - p->t0;
    const ms_timing_t *t = &p->time;
    if (el <= 0)
        return;
    double other = el - t->engine - t->loader - t->comm - t->checkpoint - t->validation;
    char js[320];
    snprintf(js, sizeof js,
             "\"event\": \"timing\", \"wall_s\": %.3f, \"engine_s\": %.3f, \"loader_s\": "
             "%.3f, \"allreduce_s\": %.3f, \"checkpoint_s\": %.3f, \"validation_s\": %.3f",
             el, t->engine, t->loader, t->comm, t->checkpoint, t->validation);
    ms_progress_note(p, js,
                     "time: backend (busy) %.1f%%, waiting for data %.1f%%, all-reduce %.1f%%, "
                     "checkpoints %.1f%%, validation %.1f%%, other %.1f%% of %.1f s",
                     100 * t->engine / el, 100 * t->loader / el, 100 * t->comm / el,
                     100 * t->checkpoint / el, 100 * t->validation / el, 100 * other / el, el);
}
