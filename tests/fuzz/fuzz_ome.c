/* Fuzz target: the OME-XML scanner (ms_tiff_parse_ome, io/tiff.c), a pure function over the
 * ImageDescription text of an OME-TIFF. Properties beyond "no crash": channel counts, pages
 * and plane counts stay in range, names are terminated, a pixel size is finite and positive
 * or unknown (0). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/tiff.h"
#include "tests/fuzz/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *xml = malloc(size + 1);
    if (!xml)
        return 0;
    memcpy(xml, data, size);
    xml[size] = 0;
    ms_tiff_ome_t ome;
    memset(&ome, 0x7f, sizeof ome); /* whatever the scanner leaves unset shows up */
    ms_tiff_parse_ome(xml, "fuzz.ome.tif", &ome);
    if (ome.present && !ome.problem[0]) {
        FUZZ_CHECK(ome.nchannels >= 1 && ome.nchannels <= MS_TIFF_MAX_CHANNELS,
                   "%d channels", ome.nchannels);
        for (int c = 0; c < ome.nchannels; c++) {
            FUZZ_CHECK(ome.page[c] >= 0, "channel %d on page %d", c, ome.page[c]);
            FUZZ_CHECK(memchr(ome.name[c], 0, sizeof ome.name[c]), "name %d unterminated", c);
        }
    }
    FUZZ_CHECK(memchr(ome.problem, 0, sizeof ome.problem) &&
                   memchr(ome.pixel_note, 0, sizeof ome.pixel_note),
               "a message is unterminated");
    for (int d = 0; ome.present && d < 2; d++)
        FUZZ_CHECK(ome.pixel_size[d] == 0 || (isfinite(ome.pixel_size[d]) &&
                                             ome.pixel_size[d] > 0),
                   "pixel size %g", ome.pixel_size[d]);
    free(xml);
    return 0;
}
