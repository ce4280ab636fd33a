/* Reading TIFF planes through libtiff for ingest: striped or tiled, any compression libtiff
 * decodes, either byte order, a page of a multi-page file, contiguous or separate samples.
 * Values arrive as uint16 and are what the file stores, except for the conversions listed
 * below (each reported in ms_tiff_info_t.conv, so ingest can say it once):
 *   1..7- and 9..15-bit unsigned samples are widened to 8 or 16 bits, values kept (lossless);
 *   min-is-white grey is inverted, v -> 2^bits - 1 - v (lossless);
 *   palette images give their colours (3 samples R, G, B: the colormap's 16-bit values),
 *   never their indices;
 *   JPEG-compressed YCbCr is decoded to RGB by libjpeg (JPEG is lossy in the file already);
 *   floating-point, signed and 32-bit samples only with a value range [lo, hi] the caller
 *   gives (ingest --value-range), mapped linearly onto 0..65535; a value outside it (or NaN)
 *   is refused, never clipped.
 * OME-XML in the first page's ImageDescription gives channel names, which page holds each
 * channel and the pixel size. libtiff's errors become ms_status_t messages naming the file;
 * its warnings are counted and the first kept, for the caller to show once per file. */
#ifndef MS_TIFF_H
#define MS_TIFF_H

#include <stdint.h>

#include "engine/status.h"

enum { MS_TIFF_MAX_SAMPLES = 64, MS_TIFF_MAX_CHANNELS = 64 };

/* ms_tiff_info_t.conv: what reading does beyond copying stored values. */
enum {
    MS_TIFF_WIDENED = 1,  /* 1..7 or 9..15 bits per sample stored in 8 or 16 bits */
    MS_TIFF_INVERTED = 2, /* min-is-white */
    MS_TIFF_PALETTE = 4,  /* indices replaced by colours */
    MS_TIFF_MAPPED = 8,   /* float, signed or 32-bit values mapped from [lo, hi] */
    MS_TIFF_YCBCR = 16,   /* JPEG YCbCr decoded to RGB */
};

/* How floating-point, signed and 32-bit unsigned samples become uint16: set = 0 refuses them;
 * else u = round((v - lo) * 65535 / (hi - lo)) for lo <= v <= hi, any other value refused.
 * (lo, hi) = (-32768, 32767) maps int16 exactly (v + 32768); (0, 65535) keeps non-negative
 * integers as they are. */
typedef struct {
    int set;
    double lo, hi;
} ms_tiff_map_t;

/* OME-XML (OME-TIFF): the first Image's channels, one plane each (SizeZ = SizeT = 1). */
typedef struct {
    int present;                        /* the file carries OME-XML with an Image */
    int nchannels;
    int page[MS_TIFF_MAX_CHANNELS];     /* the page (IFD) holding channel c */
    int samples[MS_TIFF_MAX_CHANNELS];  /* SamplesPerPixel of channel c (1, or 3 for RGB) */
    char name[MS_TIFF_MAX_CHANNELS][64]; /* Name, or "" when the channel has none */
    int nimages;                        /* Image elements (series) in the file */
    int sizez, sizet;                   /* planes per channel */
    double pixel_size[2];               /* PhysicalSizeY, PhysicalSizeX in micrometres; 0 unknown */
    char pixel_note[128];               /* why a declared pixel size was not used, or "" */
    char problem[256];                  /* why the channels cannot be read from the OME-XML
                                         * (several series, a z-stack, a plane in another file,
                                         * a malformed attribute), or "" */
} ms_tiff_ome_t;

typedef struct {
    int width, height;
    int pages;    /* directories in the file */
    int bits;     /* bits per sample as stored */
    int format;   /* TIFF SampleFormat: 1 unsigned, 2 signed, 3 floating point */
    int samples;  /* values per pixel as read: the stored samples, or 3 (R, G, B) for a palette */
    int rgb;      /* samples 0..2 are R, G, B */
    int out_bits; /* 8 or 16: what the values read need */
    unsigned conv; /* MS_TIFF_* */
    int nwarnings; /* libtiff warnings while reading the header of this page and page 0 */
    char warning[256]; /* the first of them, or "" */
    ms_tiff_ome_t ome;
} ms_tiff_info_t;

/* 1 if this build reads TIFF (libtiff found at configure time). */
int ms_tiff_available(void);

/* Checks page `page` and describes it (and the file's page count and OME-XML); refuses what
 * cannot be read honestly (a float page without map->set, a size over --max-image-pixels,
 * an unsupported photometric interpretation...), naming the file. map may be NULL (unset). */
ms_status_t ms_tiff_info(const char *path, int page, const ms_tiff_map_t *map,
                         ms_tiff_info_t *info);
/* Reads samples sel[0..nsel-1] of page `page` into out (nsel, height, width); expects the
 * given size. nwarnings/warning (may be NULL; warning holds 256 bytes) receive libtiff's
 * warnings raised while decoding. */
ms_status_t ms_tiff_read(const char *path, int page, const ms_tiff_map_t *map, int nsel,
                         const int *sel, int height, int width, uint16_t *out, int *nwarnings,
                         char *warning);

/* Parses OME-XML text (an ImageDescription) into ome; file_name is the TIFF's own name (a
 * TiffData naming another file marks its channels unreadable). Text that is not OME leaves
 * ome->present = 0; what cannot be used is said in ome->problem and ome->pixel_note, never
 * guessed. Pure: no file is touched (a fuzz target can call it). */
void ms_tiff_parse_ome(const char *xml, const char *file_name, ms_tiff_ome_t *ome);

#endif
