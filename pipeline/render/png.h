/* Pictures for people: an RGB canvas with alpha blending, a built-in 5x7 bitmap font (all of
 * printable ASCII, upper and lower case, and the micro sign), and PNG files through libpng,
 * written to a temporary name and renamed when complete. */
#ifndef MS_PNG_H
#define MS_PNG_H

#include <stdint.h>

#include "engine/status.h"

typedef struct {
    int w, h;
    uint8_t *rgb; /* (h, w, 3) row-major, 8 bits per channel */
} ms_canvas_t;

ms_status_t ms_canvas_init(ms_canvas_t *c, int w, int h);
void ms_canvas_free(ms_canvas_t *c);
/* out = (1 - alpha) * pixel + alpha * colour, clipped to the canvas; alpha in [0, 1]. */
void ms_canvas_blend(ms_canvas_t *c, int x, int y, const uint8_t rgb[3], float alpha);
void ms_canvas_rect(ms_canvas_t *c, int x, int y, int w, int h, const uint8_t rgb[3],
                    float alpha);

/* Glyph cell: 5x7 dots plus one column and one row of spacing, times the scale. */
#define MS_FONT_W 5
#define MS_FONT_H 7
/* Whether the font has a glyph for character code ch: printable ASCII (' ' to '~') and 0xB5,
 * the micro sign; anything else is drawn as '?'. A char holding 0xB5 may be passed as is. */
int ms_font_has(int ch);
/* Text is UTF-8: one glyph per character ("\xc2\xb5m" is the micro sign then m).
 * Width and height in pixels of s drawn at scale (no trailing spacing column). */
int ms_font_text_width(const char *s, int scale);
int ms_font_text_height(int scale);
/* Draws s with its top-left corner at (x, y); returns the width drawn. */
int ms_font_draw(ms_canvas_t *c, int x, int y, const char *s, int scale, const uint8_t rgb[3]);
/* The dot (col, row) of ch's glyph, for tests: 1 if set. */
int ms_font_dot(int ch, int col, int row);
/* Number of malformed glyphs in the table (a row not exactly 5 of '.' and '#'): 0. */
int ms_font_selfcheck(void);
/* The characters the font has, one byte each (the micro sign as the byte 0xB5). */
const char *ms_font_charset(void);

/* Writes an 8-bit RGB PNG: path.tmp.PID first, renamed to path when complete. */
ms_status_t ms_png_write(const char *path, const uint8_t *rgb, int w, int h);
/* Reads any 8/16-bit PNG as 8-bit RGB (h, w, 3) into *rgb (malloc'd). */
ms_status_t ms_png_read(const char *path, uint8_t **rgb, int *w, int *h);

#endif
