/* Reading one grey plane from a TIFF through libtiff: 8 or 16 bit unsigned, striped or tiled,
 * any compression libtiff decodes (none, LZW, deflate, PackBits, ...), either byte order, a
 * page of a multi-page file, palette images as their index values. libtiff's messages are
 * captured into ms_status_t errors naming the file. */
#ifndef MS_TIFF_H
#define MS_TIFF_H

#include <stdint.h>

#include "engine/status.h"

typedef struct {
    int width, height;
    int bits;  /* 8 or 16 */
    int pages; /* directories in the file */
} ms_tiff_info_t;

/* 1 if this build reads TIFF (libtiff found at configure time). */
int ms_tiff_available(void);

/* Size and depth of page `page` (and the file's page count); errors name the file. */
ms_status_t ms_tiff_info(const char *path, int page, ms_tiff_info_t *info);
/* Reads page `page` into out (height, width) uint16; expects the given size. */
ms_status_t ms_tiff_read(const char *path, int page, int height, int width, uint16_t *out);

#endif
