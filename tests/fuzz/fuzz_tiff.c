/* Fuzz target: the TIFF reader (io/tiff.c) over libtiff. The input is a TIFF file's bytes
 * (the seeds are small files tifffile wrote: grey 8/16-bit, RGB contiguous and planar,
 * palette, min-is-white, tiled, float, 12-bit, OME-TIFF); its first byte also decides whether
 * a value range for float and signed data is given. Properties beyond "no crash": a refusal
 * carries a message; an accepted page reads into exactly its declared size; reading twice
 * gives the same pixels (no uninitialised memory: MemorySanitizer-free, so checked here). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/shard.h"
#include "io/tiff.h"
#include "tests/fuzz/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[128];
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/ms-fuzz-tiff-%ld.tif", dir, (long)getpid());
        /* a fuzzed header may declare anything: keep every accepted image small */
        ms_io_set_max_image_pixels(1u << 20);
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    ms_tiff_map_t map = {.set = size > 0 && (data[0] & 1), .lo = -32768, .hi = 32767};
    ms_tiff_info_t info;
    ms_status_t st = ms_tiff_info(path, 0, &map, &info);
    if (st) {
        FUZZ_CHECK(ms_error_message()[0], "ms_tiff_info failed without a message");
        ms_error_clear();
        unlink(path);
        return 0;
    }
    FUZZ_CHECK(info.width > 0 && info.height > 0 && info.samples > 0 &&
                   info.samples <= MS_TIFF_MAX_SAMPLES && info.pages >= 1,
               "accepted page of %d x %d x %d samples, %d pages", info.width, info.height,
               info.samples, info.pages);
    FUZZ_CHECK((uint64_t)info.width * info.height <= ms_io_max_image_pixels(),
               "accepted %d x %d over the pixel limit", info.width, info.height);
    int sel[MS_TIFF_MAX_SAMPLES];
    for (int s = 0; s < info.samples; s++)
        sel[s] = s;
    size_t n = (size_t)info.samples * info.width * info.height;
    uint16_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    if (a && b) {
        memset(a, 0xA5, n * sizeof *a);
        memset(b, 0x5A, n * sizeof *b);
        int nw = 0;
        char warning[256];
        ms_status_t s1 = ms_tiff_read(path, 0, &map, info.samples, sel, info.height, info.width,
                                      a, &nw, warning);
        ms_error_clear();
        ms_status_t s2 = ms_tiff_read(path, 0, &map, info.samples, sel, info.height, info.width,
                                      b, &nw, warning);
        if (s1)
            FUZZ_CHECK(s2 != MS_OK, "a read failed once and succeeded the second time");
        else if (s2 == MS_OK)
            FUZZ_CHECK(!memcmp(a, b, n * sizeof *a), "two reads of one page differ: pixels "
                       "left unwritten by the decoder");
        if (s1 == MS_OK && !(info.conv & MS_TIFF_MAPPED) && info.out_bits == 8)
            for (size_t j = 0; j < n; j++)
                FUZZ_CHECK(a[j] <= 255, "an 8-bit page gave the value %u", a[j]);
        ms_error_clear();
    }
    free(a);
    free(b);
    unlink(path);
    return 0;
}
