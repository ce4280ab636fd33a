/* Line charts for people, as a pure function of arrays (the training curves of `milscreen
 * plot`): panels side by side, each with a frame, grid, ticks and tick labels at round
 * values, series as lines with a marker at every point, a legend under the panel, and
 * dashed vertical marks (e.g. where a run was resumed). Drawn into an ms_canvas_t. */
#ifndef MS_PLOT_H
#define MS_PLOT_H

#include <stdint.h>

#include "engine/status.h"
#include "pipeline/render/png.h"

#define MS_PLOT_MAX_SERIES 8
#define MS_PLOT_MAX_PANELS 4

typedef struct {
    const char *label;     /* legend text */
    const double *x, *y;   /* (n) points; a non-finite y is a gap (nothing drawn there) */
    int n;
    uint8_t rgb[3];        /* line colour */
    uint8_t marker[3];     /* colour of the square marker at each point (distinct from every
                              line colour, so that a marker's pixels say where its point is) */
    int dashed;
} ms_plot_series_t;

typedef struct {
    const char *title;     /* above the panel, e.g. "loss" */
    const char *xlabel;    /* under the x axis */
    double ymin, ymax;     /* the y range; ymin >= ymax: the data's, out to round values */
    ms_plot_series_t series[MS_PLOT_MAX_SERIES];
    int nseries;
    const double *marks;   /* (nmarks) x of dashed vertical lines, labelled mark_label */
    int nmarks;
    const char *mark_label;
} ms_plot_panel_t;

typedef struct {
    const char *title;     /* over the whole figure */
    const char *subtitle;  /* a second line, or NULL */
    ms_plot_panel_t panels[MS_PLOT_MAX_PANELS];
    int npanels;
    int width, height;     /* of each panel's plotting area in pixels (0: 520 x 340) */
    int scale;             /* text scale (0: 2, i.e. 10 x 14 pixel glyphs) */
} ms_plot_t;

/* Where a panel's data went: value x lands on pixel column
 * x0 + (x - xmin) / (xmax - xmin) * (x1 - x0), value y on row y0 + (ymax - y) / (ymax - ymin)
 * * (y1 - y0) (y0 is the top), rounded to the nearest pixel. */
typedef struct {
    int x0, x1, y0, y1;
    double xmin, xmax, ymin, ymax;
} ms_plot_frame_t;

/* Colours of the training curves: train and validation (blue and vermilion of the Okabe-Ito
 * palette, told apart with red-green colour blindness), and the head's lighter pair. */
extern const uint8_t ms_plot_train_rgb[3], ms_plot_val_rgb[3], ms_plot_train2_rgb[3],
    ms_plot_val2_rgb[3];
/* A marker colour for a line colour: the same hue at 60 % brightness. */
void ms_plot_marker_colour(uint8_t out[3], const uint8_t line[3]);

/* Draws the figure into *canvas (initialised here; free with ms_canvas_free); frames
 * (npanels, may be NULL) receive each panel's mapping. Fails when a panel has no finite
 * point at all. */
ms_status_t ms_plot_draw(ms_canvas_t *canvas, const ms_plot_t *p, ms_plot_frame_t *frames);
/* A round tick step (1, 2 or 5 times a power of ten) giving about `want` ticks over span. */
double ms_plot_tick_step(double span, int want);

#endif
