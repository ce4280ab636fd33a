/* ms_file_sha256 (the shard digest score records and compares) against digests computed by
 * Python's hashlib of the same bytes: lengths on both sides of SHA-256's 55/56-byte padding
 * boundary and of the reader's 1 MiB buffer, and a missing file. With --bench FILE it prints
 * the digest's speed on that file instead (docs/PERFORMANCE.md, "Shard digest"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "io/shard.h"

/* Bytes x >> 24 of x = x * 1103515245 + 12345 (mod 2^32) from x = 12345, as the Python that
 * computed the expected digests generated them. */
static void gen(uint8_t *p, size_t n)
{
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 24);
    }
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int bench(const char *path)
{
    char hex[65];
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    double mb = ftell(f) / 1e6, best = 1e30;
    fclose(f);
    for (int r = 0; r < 5; r++) { /* the first run also brings the file into the page cache */
        double t0 = now();
        if (ms_file_sha256(path, hex) != MS_OK) {
            fprintf(stderr, "%s\n", ms_error_message());
            return 1;
        }
        double t = now() - t0;
        best = t < best ? t : best;
    }
    printf("sha256 %s: %.0f MB in %.3f s (best of 5): %.0f MB/s\n", hex, mb, best, mb / best);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--bench"))
        return bench(argv[2]);
    static const struct {
        size_t n;
        const char *hex;
    } cases[] = {
        {0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {1, "28969cdfa74a12c82f3bad960b0b000aca2ac329deea5c2328ebc6f2ba9802c1"},
        {3, "a43bb230589fe1900660c6fb9e6a0d1a2a25993138f51efe3901c1da84e02b9b"},
        {55, "de8ecaacd17b7b3c930ce92aee684f01be0f9d51e79cac480468285357ea222c"},
        {56, "e387cd9820f9f40de1c32a9520672bc83118e44dc460a53ada22a0e37b395148"},
        {63, "aabcb078117b89e753bf3288fbab76bdc4ff41a4c50c4895712ae628203eb260"},
        {64, "07ef99a5568f61060103669d5ba609650b3f9e4b8934c6056bb23de35e0412a7"},
        {65, "9905034cd389d4abb4c51b8cfb978c15e3ad5d4b77e68b7a978d6e1f5d50a3aa"},
        {119, "d59842df4f4fbdbe412eb4bcf550d98d24549937567f707a072a6f8598d4fb6d"},
        {120, "16cf2e045872e5532e48bdb3392465e7931b818f04bf558f92919344dc07428b"},
        {(1u << 20) - 1, "8067f1006a108425e44c4be03a5da6ce719e564f642f85f7ada04e6fe7e823f4"},
        {1u << 20, "fc7cfb2bd116edf7d68c65c5f4bf1f7d794d9c52259f24340bc01028345c557f"},
        {(1u << 20) + 1, "06aaecb77fed13e72a2a5d75f4e34459016d59e7b30a6355e8f9ed808e34d241"},
        {3u * (1u << 20) + 17, "8c3cf9a4cfff5d3df1203f691dc6da46affd0066e6aa7effec362930f051e1c6"},
    };
    char path[] = "/tmp/ms-test-sha256-XXXXXX";
    int fd = mkstemp(path);
    size_t max = 3u * (1u << 20) + 17;
    uint8_t *buf = malloc(max);
    if (fd < 0 || !buf) {
        fprintf(stderr, "cannot make %s or its buffer\n", path);
        return 1;
    }
    close(fd);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        gen(buf, cases[c].n);
        FILE *f = fopen(path, "wb");
        CHECK(f && fwrite(buf, 1, cases[c].n, f) == cases[c].n && fclose(f) == 0, "write");
        char hex[65] = "";
        CHECK(ms_file_sha256(path, hex) == MS_OK, "digest of %zu bytes: %s", cases[c].n,
              ms_error_message());
        CHECK(!strcmp(hex, cases[c].hex), "%zu bytes: %s, hashlib %s", cases[c].n, hex,
              cases[c].hex);
    }
    unlink(path);
    char hex[65];
    CHECK(ms_file_sha256(path, hex) == MS_EIO && strstr(ms_error_message(), path),
          "a missing file is an I/O error naming it: %s", ms_error_message());
    free(buf);
    return check_summary();
}
