/* libtiff reader for ingest: decodes each strip or tile once and converts the samples asked
 * for into uint16 planes (io/tiff.h lists the conversions), and a small OME-XML scanner for
 * channel names, planes and pixel size. libtiff reports through global handlers; they write
 * into thread-local buffers that the failing call turns into its message, and warnings are
 * counted for the caller to show. */
#include "io/tiff.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/shard.h"
#include "ms_build_config.h"

/* ------------------------------------------------------------------ OME-XML */

/* One element tag: its local name (namespace prefix dropped) and its attribute text. */
typedef struct {
    const char *name, *attrs;
    size_t nlen, alen;
    int close, empty; /* </name>, <name ... /> */
} xtag_t;

/* The next element tag at or after p (comments, declarations, processing instructions and
 * CDATA skipped); NULL at the end of the text or in an unclosed tag. */
static const char *xml_next(const char *p, xtag_t *t)
{
    for (;;) {
        p = strchr(p, '<');
        if (!p)
            return NULL;
        const char *skip = NULL;
        if (!strncmp(p, "<!--", 4))
            skip = strstr(p + 4, "-->");
        else if (!strncmp(p, "<![CDATA[", 9))
            skip = strstr(p + 9, "]]>");
        else if (p[1] == '?' || p[1] == '!')
            skip = strchr(p, '>');
        else
            break;
        if (!skip)
            return NULL;
        p = skip + 1;
    }
    const char *q = p + 1;
    t->close = *q == '/';
    q += t->close;
    const char *name = q;
    while (*q && !isspace((unsigned char)*q) && *q != '>' && *q != '/')
        q++;
    const char *colon = memchr(name, ':', (size_t)(q - name));
    t->name = colon ? colon + 1 : name;
    t->nlen = (size_t)(q - t->name);
    t->attrs = q;
    char quote = 0;
    for (; *q && (quote || *q != '>'); q++)
        if (quote && *q == quote)
            quote = 0;
        else if (!quote && (*q == '"' || *q == '\''))
            quote = *q;
    if (!*q)
        return NULL;
    t->empty = q > t->attrs && q[-1] == '/';
    t->alen = (size_t)(q - t->attrs) - (size_t)t->empty;
    return q + 1;
}

static int xml_is(const xtag_t *t, const char *name)
{
    return t->nlen == strlen(name) && !strncmp(t->name, name, t->nlen);
}

/* Appends code point c as UTF-8 to out (room for n - 1 bytes in all, *k used). */
static void put_utf8(char *out, size_t n, size_t *k, unsigned long c)
{
    char b[4];
    int l = 0;
    if (c < 0x80) {
        b[l++] = (char)c;
    } else if (c < 0x800) {
        b[l++] = (char)(0xc0 | c >> 6);
        b[l++] = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        b[l++] = (char)(0xe0 | c >> 12);
        b[l++] = (char)(0x80 | (c >> 6 & 0x3f));
        b[l++] = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x110000) {
        b[l++] = (char)(0xf0 | c >> 18);
        b[l++] = (char)(0x80 | (c >> 12 & 0x3f));
        b[l++] = (char)(0x80 | (c >> 6 & 0x3f));
        b[l++] = (char)(0x80 | (c & 0x3f));
    }
    for (int j = 0; j < l && *k + 1 < n; j++)
        out[(*k)++] = b[j];
}

/* Copies an attribute value with XML's entities decoded (truncated to n - 1 bytes). */
static void xml_decode(const char *v, size_t vl, char *out, size_t n)
{
    static const struct {
        const char *e;
        char c;
    } ents[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
    size_t k = 0;
    for (size_t i = 0; i < vl;) {
        if (v[i] == '&') {
            size_t j;
            for (j = 0; j < sizeof ents / sizeof *ents; j++) {
                size_t el = strlen(ents[j].e);
                if (i + 1 + el <= vl && !strncmp(v + i + 1, ents[j].e, el)) {
                    put_utf8(out, n, &k, (unsigned char)ents[j].c);
                    i += 1 + el;
                    break;
                }
            }
            if (j < sizeof ents / sizeof *ents)
                continue;
            if (i + 2 < vl && v[i + 1] == '#') {
                int hex = v[i + 2] == 'x';
                size_t d = i + 2 + hex, e = d;
                unsigned long c = 0;
                while (e < vl && e - d < 7 && (hex ? isxdigit((unsigned char)v[e])
                                                  : isdigit((unsigned char)v[e]))) {
                    int x = v[e];
                    c = c * (hex ? 16 : 10) +
                        (unsigned long)(isdigit(x) ? x - '0' : (tolower(x) - 'a' + 10));
                    e++;
                }
                if (e > d && e < vl && v[e] == ';') {
                    put_utf8(out, n, &k, c);
                    i = e + 1;
                    continue;
                }
            }
        }
        if (k + 1 < n)
            out[k++] = v[i];
        i++;
    }
    if (n)
        out[k] = 0;
}

/* Value of attribute `name` of t, decoded, into out; 1 if present. */
static int xml_attr(const xtag_t *t, const char *name, char *out, size_t n)
{
    const char *p = t->attrs, *end = t->attrs + t->alen;
    size_t nl = strlen(name);
    while (p < end) {
        while (p < end && isspace((unsigned char)*p))
            p++;
        const char *an = p;
        while (p < end && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t al = (size_t)(p - an);
        while (p < end && isspace((unsigned char)*p))
            p++;
        if (p >= end || *p != '=') {
            p += p < end && al == 0; /* a stray character: step over it */
            continue;
        }
        p++;
        while (p < end && isspace((unsigned char)*p))
            p++;
        if (p >= end || (*p != '"' && *p != '\''))
            return 0;
        char q = *p++;
        const char *v = p;
        while (p < end && *p != q)
            p++;
        if (p >= end)
            return 0;
        size_t vl = (size_t)(p - v);
        p++;
        const char *colon = memchr(an, ':', al);
        if (colon) {
            al -= (size_t)(colon + 1 - an);
            an = colon + 1;
        }
        if (al == nl && !strncmp(an, name, nl)) {
            xml_decode(v, vl, out, n);
            return 1;
        }
    }
    return 0;
}

/* A non-negative integer attribute (def when absent); -1 when present but not a number. */
static long xml_long(const xtag_t *t, const char *name, long def)
{
    char v[32];
    if (!xml_attr(t, name, v, sizeof v))
        return def;
    char *end;
    long x = strtol(v, &end, 10);
    return end == v || *end || x < 0 || x > 1000000000L ? -1 : x;
}

/* Micrometres per unit, 0 for a unit that is not a length (OME's UnitsLength). */
static double um_per(const char *u)
{
    static const struct {
        const char *u;
        double f;
    } t[] = {{"\xc2\xb5m", 1}, {"\xce\xbcm", 1}, {"um", 1}, {"nm", 1e-3}, {"pm", 1e-6},
             {"\xc3\x85", 1e-4}, {"\xe2\x84\xab", 1e-4}, {"mm", 1e3}, {"cm", 1e4},
             {"dm", 1e5}, {"m", 1e6}};
    for (size_t j = 0; j < sizeof t / sizeof *t; j++)
        if (!strcmp(u, t[j].u))
            return t[j].f;
    return 0;
}

/* Linear index of plane (c, z, t) in DimensionOrder order (XY first, then the other three). */
static long plane_index(const char *order, long c, long z, long t, long nc, long nz, long nt)
{
    long idx = 0, stride = 1;
    for (int j = 2; j < 5 && order[j]; j++) {
        long v = order[j] == 'C' ? c : order[j] == 'Z' ? z : t;
        long n = order[j] == 'C' ? nc : order[j] == 'Z' ? nz : nt;
        idx += v * stride;
        stride *= n;
    }
    return idx;
}

void ms_tiff_parse_ome(const char *xml, const char *file_name, ms_tiff_ome_t *o)
{
    memset(o, 0, sizeof *o);
    xtag_t t;
    const char *p = xml ? xml_next(xml, &t) : NULL;
    if (!p || t.close || !xml_is(&t, "OME"))
        return; /* not OME-XML: an ordinary description */
    o->present = 1;
    int in_image = 0, in_pixels = 0, tiffdata = 0, pending_uuid = 0, nch_final = 0;
    long sizec = 1, sizez = 1, sizet = 1, td_start = 0, td_count = 0, td_ifd = 0;
    char order[8] = "XYCZT";
    for (int c = 0; c < MS_TIFF_MAX_CHANNELS; c++)
        o->page[c] = -1;
#define PROBLEM(...)                                                                   \
    do {                                                                               \
        if (!o->problem[0])                                                            \
            snprintf(o->problem, sizeof o->problem, __VA_ARGS__);                      \
    } while (0)
    /* Maps the pending TiffData's planes (td_start.., td_count of them, from IFD td_ifd) to
     * the channel planes at z = t = 0; a foreign file names where they are. */
#define MAP_TIFFDATA(foreign)                                                          \
    for (int c = 0; c < o->nchannels; c++) {                                           \
        long q = plane_index(order, c, 0, 0, o->nchannels, sizez, sizet);              \
        if (q >= td_start && q < td_start + td_count) {                                \
            if (foreign)                                                               \
                PROBLEM("channel %d is stored in another file (%s): multi-file OME-TIFF " \
                        "sets are not read as one", c, uuid_file);                     \
            else                                                                       \
                o->page[c] = (int)(td_ifd + (q - td_start));                           \
        }                                                                              \
    }
    char uuid_file[256] = "";
    while ((p = xml_next(p, &t))) {
        if (xml_is(&t, "Image")) {
            if (t.close) {
                in_image = 0;
                continue;
            }
            if (++o->nimages == 1)
                in_image = !t.empty;
            continue;
        }
        if (!in_image)
            continue;
        if (xml_is(&t, "Pixels")) {
            in_pixels = !t.close && !t.empty;
            if (t.close)
                continue;
            char v[64];
            sizec = xml_long(&t, "SizeC", 1);
            sizez = xml_long(&t, "SizeZ", 1);
            sizet = xml_long(&t, "SizeT", 1);
            if (sizec < 1 || sizez < 1 || sizet < 1) {
                PROBLEM("OME-XML SizeC, SizeZ or SizeT is not a positive number");
                sizec = sizez = sizet = 1;
            }
            o->sizez = (int)sizez;
            o->sizet = (int)sizet;
            if (xml_attr(&t, "DimensionOrder", v, sizeof v)) {
                if (strlen(v) == 5 && !strncmp(v, "XY", 2) && strchr(v + 2, 'C') &&
                    strchr(v + 2, 'Z') && strchr(v + 2, 'T'))
                    snprintf(order, sizeof order, "%s", v);
                else
                    PROBLEM("OME-XML DimensionOrder '%s' is not one of XY{C,Z,T}", v);
            }
            double ps[2] = {0, 0};
            for (int d = 0; d < 2; d++) {
                char name[32], uname[48], unit[32] = "\xc2\xb5m";
                snprintf(name, sizeof name, "PhysicalSize%c", d ? 'X' : 'Y');
                if (!xml_attr(&t, name, v, sizeof v))
                    continue;
                snprintf(uname, sizeof uname, "%sUnit", name);
                xml_attr(&t, uname, unit, sizeof unit);
                char *end;
                double x = strtod(v, &end);
                double f = um_per(unit);
                if (end == v || *end || !isfinite(x) || x <= 0)
                    snprintf(o->pixel_note, sizeof o->pixel_note, "%s='%s' is not a positive "
                             "number", name, v);
                else if (!f)
                    snprintf(o->pixel_note, sizeof o->pixel_note, "pixel size unit '%s' is not "
                             "a length", unit);
                else
                    ps[d] = x * f;
            }
            if (ps[0] > 0 && ps[1] > 0) {
                o->pixel_size[0] = ps[0];
                o->pixel_size[1] = ps[1];
            } else if (ps[0] > 0 || ps[1] > 0) {
                /* square pixels are the OME default reading of a single size */
                o->pixel_size[0] = o->pixel_size[1] = ps[0] > 0 ? ps[0] : ps[1];
            }
            continue;
        }
        if (!in_pixels)
            continue;
        if (xml_is(&t, "Channel") && !t.close) {
            if (nch_final) {
                PROBLEM("OME-XML has a Channel after its TiffData");
                continue;
            }
            if (o->nchannels == MS_TIFF_MAX_CHANNELS) {
                PROBLEM("more than %d OME channels", MS_TIFF_MAX_CHANNELS);
                continue;
            }
            int c = o->nchannels++;
            long spp = xml_long(&t, "SamplesPerPixel", 1);
            o->samples[c] = spp >= 1 && spp <= MS_TIFF_MAX_SAMPLES ? (int)spp : 1;
            if (!xml_attr(&t, "Name", o->name[c], sizeof o->name[c]))
                o->name[c][0] = 0;
            continue;
        }
        if (xml_is(&t, "TiffData") || xml_is(&t, "UUID")) {
            int is_uuid = xml_is(&t, "UUID");
            if (!is_uuid && !t.close && !nch_final) {
                /* the channels are complete (OME's schema puts them before TiffData) */
                nch_final = 1;
                if (o->nchannels == 0) {
                    o->nchannels = sizec < MS_TIFF_MAX_CHANNELS ? (int)sizec : MS_TIFF_MAX_CHANNELS;
                    if (sizec > MS_TIFF_MAX_CHANNELS)
                        PROBLEM("more than %d OME channels", MS_TIFF_MAX_CHANNELS);
                    for (int c = 0; c < o->nchannels; c++)
                        o->samples[c] = 1;
                }
            }
            if (!is_uuid && !t.close) {
                tiffdata = 1;
                long nplanes = (long)o->nchannels * sizez * sizet;
                long ifd = xml_long(&t, "IFD", -2), fc = xml_long(&t, "FirstC", 0);
                long fz = xml_long(&t, "FirstZ", 0), ft = xml_long(&t, "FirstT", 0);
                long cnt = xml_long(&t, "PlaneCount", -2);
                if (ifd == -1 || fc < 0 || fz < 0 || ft < 0 || cnt == -1) {
                    PROBLEM("OME-XML TiffData has an attribute that is not a number");
                    continue;
                }
                td_start = plane_index(order, fc, fz, ft, o->nchannels, sizez, sizet);
                td_count = cnt >= 0 ? cnt : ifd >= 0 ? 1 : nplanes - td_start;
                td_ifd = ifd >= 0 ? ifd : 0;
                uuid_file[0] = 0;
                pending_uuid = !t.empty; /* a UUID child may name the file */
                if (!pending_uuid)
                    MAP_TIFFDATA(0);
                continue;
            }
            if (is_uuid && !t.close && pending_uuid) {
                xml_attr(&t, "FileName", uuid_file, sizeof uuid_file);
                continue;
            }
            if (!is_uuid && t.close && pending_uuid) {
                pending_uuid = 0;
                int foreign = uuid_file[0] && file_name && strcmp(uuid_file, file_name);
                MAP_TIFFDATA(foreign);
            }
            continue;
        }
    }
#undef MAP_TIFFDATA
    if (!o->nimages) {
        /* OME-XML without an Image: the metadata live in a companion file (BinaryOnly) */
        o->present = 0;
        snprintf(o->pixel_note, sizeof o->pixel_note, "its OME-XML names a companion file "
                 "(not read)");
        return;
    }
    if (!nch_final && o->nchannels == 0) {
        o->nchannels = sizec < MS_TIFF_MAX_CHANNELS ? (int)sizec : MS_TIFF_MAX_CHANNELS;
        for (int c = 0; c < o->nchannels; c++)
            o->samples[c] = 1;
    }
    if (!tiffdata) /* no TiffData: planes are the pages in dimension order */
        for (int c = 0; c < o->nchannels; c++)
            o->page[c] = (int)plane_index(order, c, 0, 0, o->nchannels, sizez, sizet);
    for (int c = 0; c < o->nchannels; c++)
        if (o->page[c] < 0)
            PROBLEM("its OME-XML maps no page to channel %d", c);
    if (o->nimages > 1)
        PROBLEM("it holds %d OME images (series); one field per file is read as channels",
                o->nimages);
    if (sizez > 1 || sizet > 1)
        PROBLEM("it holds SizeZ=%ld x SizeT=%ld planes per channel; one plane per channel is "
                "read (project the stack first, or name pages as file.tif#N)", sizez, sizet);
#undef PROBLEM
}

/* ------------------------------------------------------------------ libtiff */

#if MS_HAVE_TIFF
#include <tiffio.h>

static _Thread_local char tiff_msg[512];
static _Thread_local char tiff_warn[256];
static _Thread_local int tiff_nwarn;

static void on_error(const char *module, const char *fmt, va_list ap)
{
    (void)module;
    vsnprintf(tiff_msg, sizeof tiff_msg, fmt, ap);
}

static void on_warning(const char *module, const char *fmt, va_list ap)
{
    if (tiff_nwarn++)
        return;
    char m[224];
    vsnprintf(m, sizeof m, fmt, ap);
    snprintf(tiff_warn, sizeof tiff_warn, "%s%s%s", module ? module : "", module ? ": " : "",
             m);
}

static void set_handlers(void)
{
    TIFFSetErrorHandler(on_error);
    TIFFSetWarningHandler(on_warning);
}

/* One page as it will be read. */
typedef struct {
    TIFF *t;
    const char *path;
    int page;
    uint32_t w, h, tw, th; /* tw, th: tile size, if tiled */
    uint16_t bits, spp, fmt, photo, planar;
    uint16_t *cmap[3]; /* palette: R, G, B (owned by libtiff) */
    int nsamp;         /* samples as read (3 for a palette) */
    int rgb, invert, mapped;
    unsigned conv;
    int out_bits;
} page_t;

static TIFF *open_file(const char *path, ms_status_t *st)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, set_handlers);
    tiff_msg[0] = tiff_warn[0] = 0;
    tiff_nwarn = 0;
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
    *st = MS_OK;
    return t;
}

static ms_status_t set_page(TIFF *t, const char *path, int page)
{
    if (page > 0 && !TIFFSetDirectory(t, (tdir_t)page)) {
        int n = TIFFNumberOfDirectories(t);
        return MS_ERR(MS_EFORMAT, "%s has %d page(s); page %d was asked for", path, n, page);
    }
    return MS_OK;
}

static const char *photometric_name(int p)
{
    switch (p) {
    case PHOTOMETRIC_SEPARATED: return "separated (CMYK)";
    case PHOTOMETRIC_MASK: return "transparency mask";
    case PHOTOMETRIC_CIELAB: case PHOTOMETRIC_ICCLAB: case PHOTOMETRIC_ITULAB: return "Lab";
    case PHOTOMETRIC_LOGL: case PHOTOMETRIC_LOGLUV: return "LogLuv";
    case PHOTOMETRIC_CFA: return "colour filter array (raw)";
    case PHOTOMETRIC_YCBCR: return "YCbCr without JPEG compression";
    default: return "unknown";
    }
}

/* Checks the page's layout and decides how it is read (p->t at the page). */
static ms_status_t check_layout(page_t *p, const ms_tiff_map_t *map)
{
    TIFF *t = p->t;
    const char *path = p->path;
    int page = p->page;
    uint16_t comp = COMPRESSION_NONE;
    p->bits = 1;
    p->spp = 1;
    p->fmt = SAMPLEFORMAT_UINT;
    p->planar = PLANARCONFIG_CONTIG;
    TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &p->w);
    TIFFGetField(t, TIFFTAG_IMAGELENGTH, &p->h);
    TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &p->bits);
    TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &p->spp);
    TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLEFORMAT, &p->fmt);
    TIFFGetFieldDefaulted(t, TIFFTAG_PLANARCONFIG, &p->planar);
    TIFFGetFieldDefaulted(t, TIFFTAG_COMPRESSION, &comp);
    if (!TIFFGetField(t, TIFFTAG_PHOTOMETRIC, &p->photo))
        p->photo = PHOTOMETRIC_MINISBLACK;
    if (!p->w || !p->h)
        return MS_ERR(MS_EFORMAT, "%s (page %d): no image size", path, page);
    if (p->spp < 1 || p->spp > MS_TIFF_MAX_SAMPLES)
        return MS_ERR(MS_EFORMAT, "%s (page %d) has %u samples per pixel (at most %d are read)",
                      path, page, p->spp, MS_TIFF_MAX_SAMPLES);
    p->nsamp = p->spp;
    p->rgb = p->invert = p->mapped = 0;
    p->conv = 0;
    int fmt_ok = 0;
    switch (p->fmt) {
    case SAMPLEFORMAT_UINT:
        fmt_ok = (p->bits >= 1 && p->bits <= 16) || p->bits == 32;
        p->mapped = p->bits == 32;
        break;
    case SAMPLEFORMAT_INT:
        p->mapped = fmt_ok = p->bits == 8 || p->bits == 16 || p->bits == 32;
        break;
    case SAMPLEFORMAT_IEEEFP:
        p->mapped = fmt_ok = p->bits == 16 || p->bits == 32 || p->bits == 64;
        break;
    }
    const char *kind = p->fmt == SAMPLEFORMAT_IEEEFP ? "floating-point"
                       : p->fmt == SAMPLEFORMAT_INT  ? "signed"
                       : p->fmt == SAMPLEFORMAT_UINT ? "unsigned"
                                                     : "untyped or complex";
    if (!fmt_ok)
        return MS_ERR(MS_EFORMAT, "%s (page %d) has %u-bit %s samples; unsigned 1..16-bit, "
                      "signed 8/16/32-bit and 16/32/64-bit floating-point samples are read",
                      path, page, p->bits, kind);
    if (p->mapped && !(map && map->set))
        return MS_ERR(MS_EFORMAT, "%s (page %d) has %u-bit %s samples, but shards hold unsigned "
                      "8- or 16-bit values: give --value-range LO:HI to map [LO, HI] linearly "
                      "onto 0..65535 (values outside are refused; docs/FORMATS.md)", path, page,
                      p->bits, kind);
    if (p->mapped)
        p->conv |= MS_TIFF_MAPPED;
    else if (p->bits != 8 && p->bits != 16)
        p->conv |= MS_TIFF_WIDENED;
    switch (p->photo) {
    case PHOTOMETRIC_MINISBLACK:
        break;
    case PHOTOMETRIC_MINISWHITE:
        if (p->mapped)
            return MS_ERR(MS_EFORMAT, "%s (page %d) is min-is-white with %s samples: there is "
                          "no white to invert from (store it min-is-black)", path, page, kind);
        p->invert = 1;
        p->conv |= MS_TIFF_INVERTED;
        break;
    case PHOTOMETRIC_RGB:
        if (p->spp < 3)
            return MS_ERR(MS_EFORMAT, "%s (page %d) is RGB with %u samples per pixel", path,
                          page, p->spp);
        p->rgb = 1;
        break;
    case PHOTOMETRIC_PALETTE:
        if (p->spp != 1 || p->fmt != SAMPLEFORMAT_UINT || p->bits > 16)
            return MS_ERR(MS_EFORMAT, "%s (page %d): a palette image with %u samples of %u bits",
                          path, page, p->spp, p->bits);
        if (!TIFFGetField(t, TIFFTAG_COLORMAP, &p->cmap[0], &p->cmap[1], &p->cmap[2]) ||
            !p->cmap[0] || !p->cmap[1] || !p->cmap[2])
            return MS_ERR(MS_EFORMAT, "%s (page %d) is a palette image without a colormap",
                          path, page);
        p->nsamp = 3;
        p->rgb = 1;
        p->conv = (p->conv & ~(unsigned)MS_TIFF_WIDENED) | MS_TIFF_PALETTE;
        break;
    case PHOTOMETRIC_YCBCR:
        if (comp == COMPRESSION_JPEG && p->bits == 8 && p->spp == 3) {
            /* libjpeg converts to RGB; the strip sizes follow (libtiff "upsamples") */
            if (!TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB))
                return MS_ERR(MS_EFORMAT, "%s (page %d): libtiff cannot decode its JPEG YCbCr "
                              "as RGB", path, page);
            p->rgb = 1;
            p->conv |= MS_TIFF_YCBCR;
            break;
        }
        /* fall through */
    default:
        return MS_ERR(MS_EFORMAT, "%s (page %d) has photometric interpretation %u (%s), which "
                      "is not read: grey (min-is-black or min-is-white), RGB and palette are",
                      path, page, p->photo, photometric_name(p->photo));
    }
    p->out_bits = p->mapped || (p->conv & MS_TIFF_PALETTE) || p->bits > 8 ? 16 : 8;
    ms_status_t st = ms_io_check_image_size(path, (uint64_t)p->nsamp, p->h, p->w, 2);
    if (st || !TIFFIsTiled(t))
        return st;
    p->tw = p->th = 0;
    TIFFGetField(t, TIFFTAG_TILEWIDTH, &p->tw);
    TIFFGetField(t, TIFFTAG_TILELENGTH, &p->th);
    if (!p->tw || !p->th)
        return MS_ERR(MS_EFORMAT, "%s (page %d): bad tile layout (%ux%u)", path, page, p->tw,
                      p->th);
    /* a tile larger than any image we accept would be a huge buffer: refuse it first */
    uint64_t lim = ms_io_max_image_pixels();
    if (p->tw > lim || p->th > lim || (uint64_t)p->tw * p->th > lim)
        return MS_ERR(MS_EFORMAT, "%s (page %d) declares tiles of %u x %u pixels (%.1f GiB "
                      "each), over the limit of %llu pixels per plane; if the file is right, "
                      "raise it with --max-image-pixels", path, page, p->tw, p->th,
                      (double)p->tw * p->th * p->spp * ((p->bits + 7) / 8) / (1 << 30),
                      (unsigned long long)lim);
    return MS_OK;
}

int ms_tiff_available(void) { return 1; }

ms_status_t ms_tiff_info(const char *path, int page, const ms_tiff_map_t *map,
                         ms_tiff_info_t *info)
{
    ms_status_t st;
    memset(info, 0, sizeof *info);
    TIFF *t = open_file(path, &st);
    if (!t)
        return st;
    char *desc = NULL;
    if (TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &desc) && desc && strstr(desc, "<OME")) {
        const char *base = strrchr(path, '/');
        ms_tiff_parse_ome(desc, base ? base + 1 : path, &info->ome);
    }
    info->pages = TIFFNumberOfDirectories(t);
    page_t p = {.t = t, .path = path, .page = page};
    MS_TRY(set_page(t, path, page));
    if (info->pages < page + 1) /* a broken chain of directories: libtiff counted fewer */
        info->pages = page + 1;
    MS_TRY(check_layout(&p, map));
    info->width = (int)p.w;
    info->height = (int)p.h;
    info->bits = p.bits;
    info->format = p.fmt;
    info->samples = p.nsamp;
    info->rgb = p.rgb;
    info->out_bits = p.out_bits;
    info->conv = p.conv;
    for (int c = 0; c < info->ome.nchannels; c++)
        if (info->ome.page[c] >= info->pages && !info->ome.problem[0])
            snprintf(info->ome.problem, sizeof info->ome.problem, "its OME-XML puts channel %d "
                     "on page %d of %d", c, info->ome.page[c], info->pages);
done:
    info->nwarnings = tiff_nwarn;
    snprintf(info->warning, sizeof info->warning, "%s", tiff_warn);
    TIFFClose(t);
    return st;
}

/* IEEE half precision to float. */
static float half_to_float(uint16_t h)
{
    int e = h >> 10 & 0x1f, m = h & 0x3ff;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY)
                                                        : ldexpf((float)(m | 0x400), e - 25);
    return h & 0x8000 ? -v : v;
}

/* Sample idx of a decoded row as an unsigned integer: bit-packed (most significant bit
 * first) below 8 bits and from 9 to 15, native byte order at 8, 16 and 32 bits (libtiff has
 * swapped those). Reads up to 2 bytes past the sample: block buffers have that slack. */
static inline uint32_t get_uint(const uint8_t *row, size_t idx, int bits)
{
    switch (bits) {
    case 8: return row[idx];
    case 16: {
        uint16_t v;
        memcpy(&v, row + 2 * idx, 2);
        return v;
    }
    case 32: {
        uint32_t v;
        memcpy(&v, row + 4 * idx, 4);
        return v;
    }
    }
    size_t bit = idx * (size_t)bits, b = bit >> 3;
    uint32_t win = (uint32_t)row[b] << 16 | (uint32_t)row[b + 1] << 8 | row[b + 2];
    return win >> (24 - (bit & 7) - (size_t)bits) & ((1u << bits) - 1);
}

static inline double get_value(const uint8_t *row, size_t idx, int bits, int fmt)
{
    if (fmt == SAMPLEFORMAT_INT) {
        if (bits == 8)
            return (int8_t)row[idx];
        if (bits == 16) {
            int16_t v;
            memcpy(&v, row + 2 * idx, 2);
            return v;
        }
        int32_t v;
        memcpy(&v, row + 4 * idx, 4);
        return v;
    }
    if (fmt == SAMPLEFORMAT_IEEEFP) {
        if (bits == 16) {
            uint16_t h;
            memcpy(&h, row + 2 * idx, 2);
            return half_to_float(h);
        }
        if (bits == 32) {
            float v;
            memcpy(&v, row + 4 * idx, 4);
            return v;
        }
        double v;
        memcpy(&v, row + 8 * idx, 8);
        return v;
    }
    return get_uint(row, idx, bits);
}

typedef struct {
    int bad;
    int y, x;
    double v;
} bad_t;

/* Converts sample si of the pixels of one decoded block (rows x cols at (y, x), a row every
 * stride bytes, spb samples per pixel) into plane o (H, W); colour picks the colormap entry
 * of a palette. Records the first value outside the map's range in bad. */
static void put_block(const page_t *p, const ms_tiff_map_t *map, uint16_t *o, int y, int x,
                      int rows, int cols, size_t stride, const uint8_t *buf, int spb, int si,
                      int colour, bad_t *bad)
{
    int H = (int)p->h, W = (int)p->w;
    if (y + rows > H)
        rows = H - y;
    if (x + cols > W)
        cols = W - x;
    int plain = !p->mapped && !p->invert && !(p->conv & MS_TIFF_PALETTE) && spb == 1;
    uint32_t maxv = p->bits >= 32 ? 0xffffffffu : (1u << p->bits) - 1;
    double scale = p->mapped ? 65535.0 / (map->hi - map->lo) : 0;
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = buf + (size_t)r * stride;
        uint16_t *out = o + (size_t)(y + r) * W + x;
        if (plain && p->bits == 16) {
            memcpy(out, row, (size_t)cols * 2);
        } else if (plain && p->bits == 8) {
            for (int c = 0; c < cols; c++)
                out[c] = row[c];
        } else if (p->mapped) {
            for (int c = 0; c < cols; c++) {
                double v = get_value(row, (size_t)c * spb + si, p->bits, p->fmt);
                if (!(v >= map->lo && v <= map->hi)) { /* NaN too */
                    if (!bad->bad)
                        *bad = (bad_t){1, y + r, x + c, v};
                    out[c] = 0;
                    continue;
                }
                double u = floor((v - map->lo) * scale + 0.5);
                out[c] = (uint16_t)(u > 65535 ? 65535 : u);
            }
        } else {
            for (int c = 0; c < cols; c++) {
                uint32_t v = get_uint(row, (size_t)c * spb + si, p->bits);
                if (p->conv & MS_TIFF_PALETTE)
                    out[c] = p->cmap[colour][v];
                else
                    out[c] = (uint16_t)(p->invert ? maxv - v : v);
            }
        }
    }
}

ms_status_t ms_tiff_read(const char *path, int page, const ms_tiff_map_t *map, int nsel,
                         const int *sel, int height, int width, uint16_t *out, int *nwarnings,
                         char *warning)
{
    ms_status_t st;
    uint8_t *buf = NULL;
    TIFF *t = open_file(path, &st);
    if (!t)
        return st;
    page_t p = {.t = t, .path = path, .page = page};
    bad_t bad = {0};
    MS_TRY(set_page(t, path, page));
    MS_TRY(check_layout(&p, map));
    if ((int)p.w != width || (int)p.h != height)
        MS_FAIL(MS_ESHAPE, "%s (page %d) is %ux%u, expected %dx%d like the first image", path,
                page, p.w, p.h, width, height);
    for (int j = 0; j < nsel; j++)
        if (sel[j] < 0 || sel[j] >= p.nsamp)
            MS_FAIL(MS_EARG, "%s (page %d) has %d samples per pixel; sample %d was asked for",
                    path, page, p.nsamp, sel[j]);
    int separate = p.planar == PLANARCONFIG_SEPARATE && p.spp > 1;
    int spb = separate ? 1 : p.spp;   /* samples per pixel in a decoded block */
    int passes = separate ? nsel : 1; /* separate planes: one pass over the blocks each */
    size_t plane = (size_t)height * width;
    if (TIFFIsTiled(t)) {
        uint32_t tw = p.tw, th = p.th;
        tmsize_t size = TIFFTileSize(t);
        size_t stride = (size_t)TIFFTileRowSize(t);
        if (size <= 0 || !stride)
            MS_FAIL(MS_EFORMAT, "%s (page %d): bad tile layout", path, page);
        MS_ALLOC(buf, (size_t)size + 8, "TIFF tile");
        for (int pass = 0; pass < passes; pass++) {
            uint16_t s = (uint16_t)(separate ? sel[pass] : 0);
            for (uint32_t y = 0; y < (uint32_t)height; y += th)
                for (uint32_t x = 0; x < (uint32_t)width; x += tw) {
                    if (TIFFReadTile(t, buf, x, y, 0, s) < 0)
                        MS_FAIL(MS_EFORMAT, "%s (page %d): cannot decode the tile at (%u, %u): "
                                "%s (truncated or damaged?)", path, page, x, y,
                                tiff_msg[0] ? tiff_msg : "read error");
                    for (int j = 0; j < nsel; j++)
                        if (!separate || j == pass)
                            put_block(&p, map, out + j * plane, (int)y, (int)x, (int)th,
                                      (int)tw, stride, buf, spb,
                                      separate || (p.conv & MS_TIFF_PALETTE) ? 0 : sel[j],
                                      sel[j], &bad);
                }
        }
    } else {
        uint32_t rps = 0;
        TIFFGetFieldDefaulted(t, TIFFTAG_ROWSPERSTRIP, &rps);
        if (rps == 0 || rps > (uint32_t)height)
            rps = (uint32_t)height;
        tmsize_t size = TIFFStripSize(t);
        size_t stride = (size_t)TIFFScanlineSize(t);
        if (size <= 0 || !stride)
            MS_FAIL(MS_EFORMAT, "%s (page %d): bad strip layout", path, page);
        MS_ALLOC(buf, (size_t)size + 8, "TIFF strip");
        for (int pass = 0; pass < passes; pass++) {
            uint16_t s = (uint16_t)(separate ? sel[pass] : 0);
            for (uint32_t y = 0; y < (uint32_t)height; y += rps) {
                int rows = y + rps <= (uint32_t)height ? (int)rps : height - (int)y;
                tmsize_t want = (tmsize_t)((size_t)rows * stride);
                uint32_t strip = TIFFComputeStrip(t, y, s);
                tmsize_t got = TIFFReadEncodedStrip(t, strip, buf, want);
                if (got < want)
                    MS_FAIL(MS_EFORMAT, "%s (page %d): cannot decode strip %u of %u: %s "
                            "(truncated or damaged?)", path, page, strip,
                            TIFFNumberOfStrips(t), tiff_msg[0] ? tiff_msg : "short read");
                for (int j = 0; j < nsel; j++)
                    if (!separate || j == pass)
                        put_block(&p, map, out + j * plane, (int)y, 0, rows, width, stride, buf,
                                  spb, separate || (p.conv & MS_TIFF_PALETTE) ? 0 : sel[j],
                                  sel[j], &bad);
            }
        }
    }
    if (bad.bad)
        MS_FAIL(MS_EFORMAT, "%s (page %d): value %g at (x %d, y %d) is outside --value-range "
                "%g:%g (values are refused, never clipped)", path, page, bad.v, bad.x, bad.y,
                map->lo, map->hi);
done:
    if (nwarnings)
        *nwarnings = tiff_nwarn;
    if (warning)
        snprintf(warning, 256, "%s", tiff_warn);
    free(buf);
    TIFFClose(t);
    return st;
}

#else

int ms_tiff_available(void) { return 0; }

ms_status_t ms_tiff_info(const char *path, int page, const ms_tiff_map_t *map,
                         ms_tiff_info_t *info)
{
    (void)page;
    (void)map;
    memset(info, 0, sizeof *info);
    return MS_ERR(MS_EARG, "%s: this milscreen was built without libtiff (MS_WITH_TIFF, "
                  "libtiff-dev)", path);
}

ms_status_t ms_tiff_read(const char *path, int page, const ms_tiff_map_t *map, int nsel,
                         const int *sel, int height, int width, uint16_t *out, int *nwarnings,
                         char *warning)
{
    (void)page;
    (void)map;
    (void)nsel;
    (void)sel;
    (void)height;
    (void)width;
    (void)out;
    if (nwarnings)
        *nwarnings = 0;
    if (warning)
        warning[0] = 0;
    return MS_ERR(MS_EARG, "%s: this milscreen was built without libtiff", path);
}

#endif
