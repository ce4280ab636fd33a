/* The picture `milscreen render` draws, as a pure function of arrays: the image's channels
 * mapped to colours with a percentile contrast stretch, one class's instance map as a
 * translucent heat overlay at input resolution with its p = 0.5 contour, the mask's outline,
 * and a text panel. */
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
    const char *lines[MS_RENDER_MAX_LINES]; /* text for the panel on the right */
    const uint8_t *line_rgb[MS_RENDER_MAX_LINES]; /* colour of each line, NULL: white */
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

#endif
