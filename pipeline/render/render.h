/* The picture `milscreen render` draws, as a pure function of arrays: the image's channels
 * mapped to colours with a percentile contrast stretch, one class's instance map as a
 * translucent heat overlay at input resolution with its p = 0.5 contour, the mask's outline,
 * a scale bar where the pixel size is known, and a text panel with colour swatches (the
 * channels' legend) and the heat colour bar. */
#ifndef MS_RENDER_H
#define MS_RENDER_H

#include <stdint.h>

#include "engine/status.h"
#include "pipeline/render/png.h"

#define MS_RENDER_MAX_LINES 64

typedef struct {
    const float *img;   /* (C, H, W) raw intensities */
    int C, H, W;
    const float *map;   /* (h, w) instance probabilities of one class, in [0, 1]; or NULL */
    int h, w;
    /* Where instance (u, v) sits in the input: its receptive field is centred at pixel
     * offset + stride * (u, v). stride 0: stretch the map over the image instead. */
    int stride;
    double offset;
    const uint8_t *mask; /* (H, W) 0/1, or NULL */
    double percentile;   /* contrast stretch from this percentile to 100 minus it */
    const uint8_t (*colours)[3]; /* (C) colour of each channel; NULL: the defaults */
    double heat_alpha;   /* overlay opacity at probability 1 */
    int zoom;            /* pixel replication factor; 0: enlarge images under 512 pixels
                            to about 512 */
    double pixel_um;     /* micrometres per pixel along x: a scale bar at the bottom left;
                            0: unknown, no bar */
    const char *lines[MS_RENDER_MAX_LINES]; /* text for the panel on the right (UTF-8) */
    const uint8_t *line_rgb[MS_RENDER_MAX_LINES]; /* colour of each line, NULL: white */
    /* a square of this colour before the line's text (a channel's legend), or NULL */
    const uint8_t *line_swatch[MS_RENDER_MAX_LINES];
    /* 1: the line is the heat colour bar (probability 0 to 1, ticks 0, 0.5, 1 under it)
     * instead of text; it takes two rows */
    int line_heatbar[MS_RENDER_MAX_LINES];
    int nlines;
} ms_render_t;

/* The default colours for C channels: grey for 1; green and magenta for 2 (readable for
 * red-green colour blindness); red, green, blue for 3 and more (others off). */
void ms_render_default_colours(uint8_t (*rgb)[3], int C);
/* Draws the picture into *canvas (initialised here; free with ms_canvas_free): the image at
 * (0, 0), enlarged by the zoom, and the text panel to its right. */
ms_status_t ms_render_draw(ms_canvas_t *canvas, const ms_render_t *r);
/* The heat colour of p in [0, 1] (yellow to red). */
void ms_render_heat(uint8_t rgb[3], float p);

/* Where ms_render_draw put things, for tests and for saying so: the scale bar (length in
 * micrometres and its pixels on the canvas; length 0 when none) and the heat bar (x0..x1 on
 * row y: column x shows probability (x - x0) / (x1 - x0)). */
typedef struct {
    double bar_um;
    int bar_x, bar_y, bar_w, bar_h;
    int heat_x0, heat_x1, heat_y, heat_h;
} ms_render_layout_t;
/* The length of the scale bar for an image width_um wide: the largest 1, 2 or 5 times a
 * power of ten micrometres that is at most a fifth of it. */
double ms_render_scale_length(double width_um);
/* ms_render_draw, also saying where the bars went (layout may be NULL). */
ms_status_t ms_render_draw_layout(ms_canvas_t *canvas, const ms_render_t *r,
                                  ms_render_layout_t *layout);

#endif
