/* The CUDA kernels' index arithmetic (engine/cuda/index.h), on the CPU so that CI, which has
 * no GPU, checks it: the pooling windows that hold each input cell against a brute-force
 * scan, for every small size, window, stride, padding and rounding; that no window of a
 * resolved pooling layer is empty (the kernels divide by its size and start max at its first
 * cell); and the NHWC -> logical NCHW map that dropout masks use. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/cuda/index.h"
#include "engine/spec.h"
#include "tests/check.h"

static void check_windows(void)
{
    long cases = 0, bad = 0;
    for (int in = 1; in <= 40; in++)
        for (int k = 1; k <= 6; k++)
            for (int s = 1; s <= 4; s++)
                for (int p = 0; 2 * p <= k; p++)
                    for (int ceil = 0; ceil <= 1; ceil++) {
                        int out = ms_window_out(in, k, s, p, ceil);
                        for (int o = 0; o < out; o++) {
                            int a = o * s - p, b = a + k;
                            a = a < 0 ? 0 : a;
                            b = b > in ? in : b;
                            if (b <= a && bad++ < 5)
                                fprintf(stderr, "empty window: in %d k %d s %d p %d ceil %d o %d\n",
                                        in, k, s, p, ceil, o);
                        }
                        for (int i = 0; i < in; i++) {
                            int lo, hi, blo = -1, bhi = -2;
                            ms_pool_windows_of(i, k, s, p, out, &lo, &hi);
                            for (int o = 0; o < out; o++)
                                if (o * s - p <= i && i < o * s - p + k) {
                                    if (blo < 0)
                                        blo = o;
                                    bhi = o;
                                }
                            int same = (blo < 0) ? hi < lo : (lo == blo && hi == bhi);
                            if (!same && bad++ < 5)
                                fprintf(stderr, "in %d k %d s %d p %d ceil %d cell %d: [%d,%d], "
                                        "scan [%d,%d]\n", in, k, s, p, ceil, i, lo, hi, blo, bhi);
                            cases++;
                        }
                    }
    CHECK(bad == 0, "%ld of %ld cells get the wrong pooling windows (or a window is empty)",
          bad, cases);
}

static void check_nhwc(void)
{
    const int N = 3, C = 5, H = 7, W = 4;
    const size_t n = (size_t)N * C * H * W;
    unsigned char *seen = calloc(n, 1);
    long bad = 0;
    for (int b = 0; b < N; b++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {
                    uint64_t i = (((uint64_t)b * H + y) * W + x) * C + c;
                    uint64_t l = ms_nhwc_logical(i, C, H, W);
                    uint64_t want = (((uint64_t)b * C + c) * H + y) * W + x;
                    if (l != want)
                        bad++;
                    else
                        seen[l]++;
                }
    for (size_t i = 0; i < n; i++)
        bad += seen[i] != 1;
    CHECK(bad == 0, "the NHWC -> NCHW index map is wrong or not a bijection (%ld errors)", bad);
    /* beyond 2^32 elements the arithmetic must stay 64-bit */
    uint64_t big = ms_nhwc_logical((uint64_t)3 << 32, 64, 1000, 1000);
    CHECK(big == ms_nhwc_logical(((uint64_t)3 << 32) + 64, 64, 1000, 1000) - 1,
          "the index map wraps beyond 2^32 elements");
    free(seen);
}

int main(void)
{
    check_windows();
    check_nhwc();
    return check_summary();
}
