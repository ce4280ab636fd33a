/* Index arithmetic of the CUDA kernels, in a header that the host compiler also reads so
 * that tests/test_cuda_index.c checks it on the CPU (CI has no GPU): which pooling windows
 * hold an input cell (the gather of pooling's backward pass), and the logical NCHW index of
 * an NHWC element (dropout masks are defined on it, so they equal the CPU backends'). */
#ifndef MS_CUDA_INDEX_H
#define MS_CUDA_INDEX_H

#include <stdint.h>

#include "engine/rng.h" /* MS_HD: __host__ __device__ under nvcc, static inline in C */

/* Outputs o in [*lo, *hi] (empty when *hi < *lo) of a window of size k, stride and pad over
 * one axis with `out` outputs whose window [o*stride - pad, o*stride - pad + k) holds input
 * cell i (0 <= i). */
MS_HD void ms_pool_windows_of(int i, int k, int stride, int pad, int out, int *lo, int *hi)
{
    int n = i + pad - k + 1; /* o*stride >= n */
    *lo = n <= 0 ? 0 : (n + stride - 1) / stride;
    int h = (i + pad) / stride; /* o*stride <= i + pad */
    *hi = h < out - 1 ? h : out - 1;
}

/* The logical NCHW index of element i of an (N,H,W,C) tensor. */
MS_HD uint64_t ms_nhwc_logical(uint64_t i, int C, int H, int W)
{
    uint64_t c = i % (uint64_t)C, t = i / (uint64_t)C;
    uint64_t x = t % (uint64_t)W;
    t /= (uint64_t)W;
    uint64_t y = t % (uint64_t)H, n = t / (uint64_t)H;
    return ((n * C + c) * H + y) * W + x;
}

#endif
