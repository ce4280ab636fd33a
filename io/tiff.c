/* libtiff reader for ingest: one grey plane per call, strips or tiles, widened to uint16.
 * libtiff reports through global handlers; they write into a thread-local buffer that the
 * failing call turns into its message. */
#include "io/tiff.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ms_build_config.h"

#if MS_HAVE_TIFF
#include <tiffio.h>

static _Thread_local char tiff_msg[512];

static void on_error(const char *module, const char *fmt, va_list ap)
{
    (void)module;
    vsnprintf(tiff_msg, sizeof tiff_msg, fmt, ap);
}

static void on_warning(const char *module, const char *fmt, va_list ap)
{
    (void)module;
    (void)fmt;
    (void)ap; /* unknown tags and the like: not our concern */
}

static void set_handlers(void)
{
    TIFFSetErrorHandler(on_error);
    TIFFSetWarningHandler(on_warning);
}

static TIFF *open_page(const char *path, int page, ms_status_t *st)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, set_handlers);
    tiff_msg[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *st = MS_ERR(MS_EIO, "cannot read %s: %m", path);
        return NULL;
    }
    fclose(f);
    TIFF *t = TIFFOpen(path, "r");
    if (!t) {
        *st = MS_ERR(MS_EFORMAT, "%s is not a readable TIFF (%s)", path,
                     tiff_msg[0] ? tiff_msg : "libtiff cannot open it");
        return NULL;
    }
    if (page > 0 && !TIFFSetDirectory(t, (tdir_t)page)) {
        int n = TIFFNumberOfDirectories(t);
        TIFFClose(t);
        *st = MS_ERR(MS_EFORMAT, "%s has %d page(s); page %d was asked for", path, n, page);
        return NULL;
    }
    *st = MS_OK;
    return t;
}

static ms_status_t check_layout(TIFF *t, const char *path, int page, ms_tiff_info_t *info)
{
    uint32_t w = 0, h = 0;
    uint16_t bits = 1, spp = 1, fmt = SAMPLEFORMAT_UINT;
    TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
    TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &bits);
    TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLEFORMAT, &fmt);
    if (!w || !h)
        return MS_ERR(MS_EFORMAT, "%s (page %d): no image size", path, page);
    if (spp != 1)
        return MS_ERR(MS_EFORMAT, "%s (page %d) has %u samples per pixel; one grey plane per "
                      "page or file is expected (give RGB channels as separate files)", path,
                      page, spp);
    if ((bits != 8 && bits != 16) || fmt != SAMPLEFORMAT_UINT)
        return MS_ERR(MS_EFORMAT, "%s (page %d) has %u-bit %s samples; 8- or 16-bit unsigned "
                      "integers are read", path, page, bits,
                      fmt == SAMPLEFORMAT_IEEEFP ? "floating-point" : fmt == SAMPLEFORMAT_INT
                                                                          ? "signed" : "other");
    info->width = (int)w;
    info->height = (int)h;
    info->bits = bits;
    return MS_OK;
}

int ms_tiff_available(void) { return 1; }

ms_status_t ms_tiff_info(const char *path, int page, ms_tiff_info_t *info)
{
    ms_status_t st;
    TIFF *t = open_page(path, page, &st);
    if (!t)
        return st;
    st = check_layout(t, path, page, info);
    info->pages = TIFFNumberOfDirectories(t);
    TIFFClose(t);
    return st;
}

/* Copies a block of samples (rows x cols, row stride `stride` samples) to out at (y, x). */
static void put(uint16_t *out, int W, int H, int y, int x, const uint8_t *buf, int rows,
                int cols, int stride, int bits)
{
    for (int r = 0; r < rows && y + r < H; r++) {
        int n = x + cols <= W ? cols : W - x;
        uint16_t *o = out + (size_t)(y + r) * W + x;
        if (bits == 8) {
            const uint8_t *s = buf + (size_t)r * stride;
            for (int c = 0; c < n; c++)
                o[c] = s[c];
        } else {
            memcpy(o, buf + (size_t)r * stride * 2, (size_t)n * 2); /* libtiff gives native order */
        }
    }
}

ms_status_t ms_tiff_read(const char *path, int page, int height, int width, uint16_t *out)
{
    ms_status_t st;
    uint8_t *buf = NULL;
    TIFF *t = open_page(path, page, &st);
    if (!t)
        return st;
    ms_tiff_info_t info;
    MS_TRY(check_layout(t, path, page, &info));
    if (info.width != width || info.height != height)
        MS_FAIL(MS_ESHAPE, "%s (page %d) is %dx%d, expected %dx%d like the first image", path,
                page, info.width, info.height, width, height);
    int es = info.bits / 8;
    if (TIFFIsTiled(t)) {
        uint32_t tw = 0, th = 0;
        TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
        TIFFGetField(t, TIFFTAG_TILELENGTH, &th);
        tmsize_t size = TIFFTileSize(t);
        if (!tw || !th || size <= 0)
            MS_FAIL(MS_EFORMAT, "%s (page %d): bad tile layout", path, page);
        MS_ALLOC(buf, (size_t)size, "TIFF tile");
        for (uint32_t y = 0; y < (uint32_t)height; y += th)
            for (uint32_t x = 0; x < (uint32_t)width; x += tw) {
                if (TIFFReadTile(t, buf, x, y, 0, 0) < 0)
                    MS_FAIL(MS_EFORMAT, "%s (page %d): cannot decode the tile at (%u, %u): %s "
                            "(truncated or damaged?)", path, page, x, y,
                            tiff_msg[0] ? tiff_msg : "read error");
                put(out, width, height, (int)y, (int)x, buf, (int)th, (int)tw, (int)tw,
                    info.bits);
            }
    } else {
        uint32_t rps = 0;
        TIFFGetFieldDefaulted(t, TIFFTAG_ROWSPERSTRIP, &rps);
        if (rps == 0 || rps > (uint32_t)height)
            rps = (uint32_t)height;
        tmsize_t size = TIFFStripSize(t);
        if (size <= 0)
            MS_FAIL(MS_EFORMAT, "%s (page %d): bad strip layout", path, page);
        MS_ALLOC(buf, (size_t)size, "TIFF strip");
        uint32_t nstrips = TIFFNumberOfStrips(t);
        for (uint32_t s = 0; s < nstrips; s++) {
            int y = (int)(s * rps);
            int rows = y + (int)rps <= height ? (int)rps : height - y;
            tmsize_t want = (tmsize_t)rows * width * es;
            tmsize_t got = TIFFReadEncodedStrip(t, s, buf, want);
            if (got < want)
                MS_FAIL(MS_EFORMAT, "%s (page %d): cannot decode strip %u of %u: %s (truncated "
                        "or damaged?)", path, page, s, nstrips,
                        tiff_msg[0] ? tiff_msg : "short read");
            put(out, width, height, y, 0, buf, rows, width, width, info.bits);
        }
    }
done:
    free(buf);
    TIFFClose(t);
    return st;
}

#else

int ms_tiff_available(void) { return 0; }

ms_status_t ms_tiff_info(const char *path, int page, ms_tiff_info_t *info)
{
    (void)page;
    (void)info;
    return MS_ERR(MS_EARG, "%s: this milscreen was built without libtiff (MS_WITH_TIFF, "
                  "libtiff-dev)", path);
}

ms_status_t ms_tiff_read(const char *path, int page, int height, int width, uint16_t *out)
{
    (void)page;
    (void)height;
    (void)width;
    (void)out;
    return MS_ERR(MS_EARG, "%s: this milscreen was built without libtiff", path);
}

#endif
