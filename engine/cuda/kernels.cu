// The CUDA backend's kernels: layout conversions, bias+ReLU epilogue, pooling, dropout,
// MIL pooling (a port of the log-space formulas of engine/ref/ops.inc, which are the spec),
// loss, the FC head and Adam. Templated on the activation type (float or bf16); arithmetic
// is always in float, sums of many terms too, and the loss in double as the reference.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <math.h>

#include "engine/cuda/index.h"
#include "engine/cuda/kernels.h"
#include "engine/rng.h"

typedef __nv_bfloat16 bf16_t;

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16_t *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16_t *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// Grid for a grid-stride loop over n elements.
inline unsigned grid_for(size_t n)
{
    size_t g = (n + kThreads - 1) / kThreads;
    if (g > (1u << 20))
        g = 1u << 20;
    return g ? (unsigned)g : 1u;
}

#define GRID_LOOP(i, n)                                                                     \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                 \
         i += (size_t)gridDim.x * blockDim.x)

// Launches KERNEL<float> or KERNEL<bf16_t> over a grid-stride loop of n elements.
#define LAUNCH_T(bf16, n, KERNEL, ...)                                                      \
    do {                                                                                    \
        if (bf16)                                                                           \
            KERNEL<bf16_t><<<grid_for(n), kThreads, 0, s>>>(__VA_ARGS__);                   \
        else                                                                                \
            KERNEL<float><<<grid_for(n), kThreads, 0, s>>>(__VA_ARGS__);                    \
    } while (0)

// Launches KERNEL<T, V> with V channels per thread (one 16-byte access: 8 bf16 or 4 float)
// when the channel count allows, else KERNEL<T, 1>; n is the element count.
#define LAUNCH_TV(bf16, C, n, KERNEL, ...)                                                  \
    do {                                                                                    \
        if ((bf16) && (C) % 8 == 0)                                                         \
            KERNEL<bf16_t, 8><<<grid_for((n) / 8), kThreads, 0, s>>>(__VA_ARGS__);          \
        else if (bf16)                                                                      \
            KERNEL<bf16_t, 1><<<grid_for(n), kThreads, 0, s>>>(__VA_ARGS__);                \
        else if ((C) % 4 == 0)                                                              \
            KERNEL<float, 4><<<grid_for((n) / 4), kThreads, 0, s>>>(__VA_ARGS__);           \
        else                                                                                \
            KERNEL<float, 1><<<grid_for(n), kThreads, 0, s>>>(__VA_ARGS__);                 \
    } while (0)

// V consecutive values of T at p + i (i a multiple of V, so the access is aligned), as floats.
template <typename T, int V> struct vec;
template <typename T> struct vec<T, 1> {
    __device__ static void load(const T *p, size_t i, float *f) { f[0] = ld(p, i); }
    __device__ static void store(T *p, size_t i, const float *f) { st(p, i, f[0]); }
};
template <> struct vec<bf16_t, 8> {
    __device__ static void load(const bf16_t *p, size_t i, float *f)
    {
        uint4 u = *reinterpret_cast<const uint4 *>(p + i);
        const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
        for (int k = 0; k < 4; k++) {
            float2 t = __bfloat1622float2(h[k]);
            f[2 * k] = t.x;
            f[2 * k + 1] = t.y;
        }
    }
    __device__ static void store(bf16_t *p, size_t i, const float *f)
    {
        uint4 u;
        __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
        for (int k = 0; k < 4; k++)
            h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
        *reinterpret_cast<uint4 *>(p + i) = u;
    }
};
template <> struct vec<float, 4> {
    __device__ static void load(const float *p, size_t i, float *f)
    {
        float4 u = *reinterpret_cast<const float4 *>(p + i);
        f[0] = u.x, f[1] = u.y, f[2] = u.z, f[3] = u.w;
    }
    __device__ static void store(float *p, size_t i, const float *f)
    {
        *reinterpret_cast<float4 *>(p + i) = make_float4(f[0], f[1], f[2], f[3]);
    }
};

// V bytes at p + i (i a multiple of V).
template <int V> struct bytes;
template <> struct bytes<1> {
    __device__ static void load(const uint8_t *p, size_t i, int *a) { a[0] = p[i]; }
    __device__ static void store(uint8_t *p, size_t i, const int *a) { p[i] = (uint8_t)a[0]; }
};
template <> struct bytes<4> {
    __device__ static void load(const uint8_t *p, size_t i, int *a)
    {
        uint32_t u = *reinterpret_cast<const uint32_t *>(p + i);
        for (int k = 0; k < 4; k++)
            a[k] = (u >> (8 * k)) & 0xff;
    }
    __device__ static void store(uint8_t *p, size_t i, const int *a)
    {
        uint32_t u = 0;
        for (int k = 0; k < 4; k++)
            u |= (uint32_t)(a[k] & 0xff) << (8 * k);
        *reinterpret_cast<uint32_t *>(p + i) = u;
    }
};
template <> struct bytes<8> {
    __device__ static void load(const uint8_t *p, size_t i, int *a)
    {
        unsigned long long u = *reinterpret_cast<const unsigned long long *>(p + i);
        for (int k = 0; k < 8; k++)
            a[k] = (int)((u >> (8 * k)) & 0xff);
    }
    __device__ static void store(uint8_t *p, size_t i, const int *a)
    {
        unsigned long long u = 0;
        for (int k = 0; k < 8; k++)
            u |= (unsigned long long)(a[k] & 0xff) << (8 * k);
        *reinterpret_cast<unsigned long long *>(p + i) = u;
    }
};

// ---- the reference's scalar functions, in float ------------------------------------------

__device__ __forceinline__ float sigm(float x)
{
    if (x >= 0)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ float logsigm(float x)
{
    return -(fmaxf(-x, 0.0f) + log1pf(expf(-fabsf(x))));
}

__device__ __forceinline__ float safelog(float x) { return logf(fmaxf(x, FLT_MIN)); }

// log(1 - e^-x) and x / (e^x - 1) for x = e^lx > 0, finite however small x is (ops.inc)
__device__ __forceinline__ float log1mexp(float lx)
{
    float x = expf(lx);
    return x < 1e-6f ? lx - x / 2 : logf(-expm1f(-x));
}

__device__ __forceinline__ float xoverexpm1(float lx)
{
    float x = expf(lx);
    return x < 1e-6f ? 1.0f - x / 2 : x / expm1f(x);
}

// ---- block reductions (blockDim.x == kThreads) ---------------------------------------------

enum { RED_SUM, RED_MAX, RED_MIN };

__device__ __forceinline__ float red_op(int op, float a, float b)
{
    return op == RED_SUM ? a + b : (op == RED_MAX ? fmaxf(a, b) : fminf(a, b));
}

// Every thread gets the result. Safe to call repeatedly: the first barrier keeps a fast
// thread from overwriting the scratch while others still read the previous result.
__device__ float block_reduce(float v, int op)
{
    __shared__ float sh[32];
    __shared__ float res;
    const float ident = op == RED_SUM ? 0.0f : (op == RED_MAX ? -INFINITY : INFINITY);
    for (int o = 16; o > 0; o >>= 1)
        v = red_op(op, v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? sh[lane] : ident;
        for (int o = 16; o > 0; o >>= 1)
            v = red_op(op, v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0)
            res = v;
    }
    __syncthreads();
    return res;
}

// ---- layouts ------------------------------------------------------------------------------

template <typename T>
__global__ void k_nchw_to_nhwc(void *dstv, const float *src, int N, int C, int H, int W)
{
    T *dst = (T *)dstv;
    size_t n = (size_t)N * C * H * W;
    GRID_LOOP(i, n)
    {
        size_t t = i;
        int c = (int)(t % C);
        t /= C;
        int x = (int)(t % W);
        t /= W;
        int y = (int)(t % H);
        size_t b = t / H;
        st(dst, i, src[((b * C + c) * H + y) * W + x]);
    }
}

template <typename T>
__global__ void k_nhwc_to_nchw(float *dst, const void *srcv, int N, int C, int H, int W,
                               int sigmoid)
{
    const T *src = (const T *)srcv;
    size_t n = (size_t)N * C * H * W;
    GRID_LOOP(i, n)
    {
        size_t t = i;
        int x = (int)(t % W);
        t /= W;
        int y = (int)(t % H);
        t /= H;
        int c = (int)(t % C);
        size_t b = t / C;
        float v = ld(src, ((b * H + y) * W + x) * C + c);
        dst[i] = sigmoid ? sigm(v) : v;
    }
}

// dst (O,k,k,Ip) from w (O,I,k,k), input channels I..Ip-1 zero
template <typename T>
__global__ void k_weights_krsc(void *dstv, const float *w, int O, int I, int Ip, int k)
{
    T *dst = (T *)dstv;
    size_t n = (size_t)O * Ip * k * k;
    GRID_LOOP(i, n)
    {
        size_t t = i;
        int ci = (int)(t % Ip);
        t /= Ip;
        int kx = (int)(t % k);
        t /= k;
        int ky = (int)(t % k);
        size_t o = t / k;
        st(dst, i, ci < I ? w[((o * I + ci) * k + ky) * k + kx] : 0.0f);
    }
}

// dw (O,I,k,k) += src (O,k,k,Ip), channels I..Ip-1 ignored
template <typename T>
__global__ void k_dw_add(float *dw, const void *srcv, int O, int I, int Ip, int k)
{
    const T *src = (const T *)srcv;
    size_t n = (size_t)O * I * k * k;
    GRID_LOOP(i, n)
    {
        size_t t = i;
        int kx = (int)(t % k);
        t /= k;
        int ky = (int)(t % k);
        t /= k;
        int ci = (int)(t % I);
        size_t o = t / I;
        dw[i] += ld(src, ((o * k + ky) * k + kx) * Ip + ci);
    }
}

// dst (rows,Cp) <- src (rows,C) with zero channels C..Cp-1 (pad), or back (unpad)
template <typename T>
__global__ void k_pad_channels(void *dstv, const void *srcv, size_t rows, int C, int Cp, int pad)
{
    T *dst = (T *)dstv;
    const T *src = (const T *)srcv;
    size_t n = rows * (pad ? Cp : C);
    GRID_LOOP(i, n)
    {
        if (pad) {
            size_t r = i / Cp;
            int c = (int)(i % Cp);
            dst[i] = c < C ? src[r * C + c] : T(0.0f);
        } else {
            size_t r = i / C;
            int c = (int)(i % C);
            dst[i] = src[r * Cp + c];
        }
    }
}

// ---- convolution epilogues ----------------------------------------------------------------

template <typename T, int V>
__global__ void k_bias_act(void *yv, const float *b, size_t rows, int C, int relu)
{
    T *y = (T *)yv;
    size_t nv = rows * C / V;
    GRID_LOOP(iv, nv)
    {
        size_t i = iv * V;
        int c = (int)(i % C);
        float f[V];
        vec<T, V>::load(y, i, f);
        for (int k = 0; k < V; k++) {
            f[k] += b[c + k];
            f[k] = relu ? fmaxf(f[k], 0.0f) : f[k];
        }
        vec<T, V>::store(y, i, f);
    }
}

// Scalar path. Block (32, 8): threadIdx.x walks channels (coalesced along C), threadIdx.y and
// blockIdx.x walk rows. Column sums of this block's rows go to partial[blockIdx.x][c].
template <typename T>
__global__ void k_relu_bias_bwd(void *dyv, const void *yv, float *partial, size_t rows, int C,
                                int relu)
{
    T *dy = (T *)dyv;
    const T *y = (const T *)yv;
    __shared__ float sh[8][33];
    int c = blockIdx.y * 32 + threadIdx.x;
    float acc = 0;
    if (c < C) {
        for (size_t r = (size_t)blockIdx.x * 8 + threadIdx.y; r < rows;
             r += (size_t)gridDim.x * 8) {
            size_t i = r * C + c;
            float g = ld(dy, i);
            if (relu) {
                g = ld(y, i) > 0.0f ? g : 0.0f;
                st(dy, i, g);
            }
            acc += g;
        }
    }
    if (!partial)
        return;
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float s = 0;
        for (int j = 0; j < 8; j++)
            s += sh[j][threadIdx.x];
        partial[(size_t)blockIdx.x * C + c] = s;
    }
}

// Vector path, for C / V <= kThreads: thread t handles channels (t % CV) * V .. + V - 1 of the
// rows t / CV, t / CV + rpi, ... of this block's share (rpi = kThreads / CV rows at a time).
template <typename T, int V>
__global__ void k_relu_bias_bwd_v(void *dyv, const void *yv, float *partial, size_t rows, int C,
                                  int relu)
{
    T *dy = (T *)dyv;
    const T *y = (const T *)yv;
    __shared__ float sh[kThreads * V];
    const int CV = C / V, rpi = kThreads / CV, t = threadIdx.x, cv = t % CV, r0 = t / CV;
    float acc[V];
    for (int k = 0; k < V; k++)
        acc[k] = 0;
    if (r0 < rpi) {
        for (size_t r = (size_t)blockIdx.x * rpi + r0; r < rows; r += (size_t)gridDim.x * rpi) {
            size_t i = r * C + (size_t)cv * V;
            float g[V];
            vec<T, V>::load(dy, i, g);
            if (relu) {
                float o[V];
                vec<T, V>::load(y, i, o);
                for (int k = 0; k < V; k++)
                    g[k] = o[k] > 0.0f ? g[k] : 0.0f;
                vec<T, V>::store(dy, i, g);
            }
            for (int k = 0; k < V; k++)
                acc[k] += g[k];
        }
    }
    if (!partial)
        return;
    for (int k = 0; k < V; k++)
        sh[t * V + k] = acc[k];
    __syncthreads();
    if (t < CV)
        for (int k = 0; k < V; k++) {
            float sum = 0;
            for (int r = 0; r < rpi; r++)
                sum += sh[(r * CV + t) * V + k];
            partial[(size_t)blockIdx.x * C + (size_t)t * V + k] = sum;
        }
}

__global__ void k_bias_finish(float *db, const float *partial, int nblocks, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    float s = 0;
    for (int b = 0; b < nblocks; b++)
        s += partial[(size_t)b * C + c];
    db[c] += s;
}

inline int bias_blocks(size_t rows)
{
    size_t b = (rows + 7) / 8;
    return (int)(b < MS_CUK_BIAS_BLOCKS ? (b ? b : 1) : MS_CUK_BIAS_BLOCKS);
}

// ---- pooling ------------------------------------------------------------------------------

// Max pooling with arg != NULL also records where each maximum was: its offset in the
// (unclipped) window, dy * k + dx, so that the backward pass need not search again.
template <typename T, int V>
__global__ void k_pool_fwd(void *outv, uint8_t *arg, const void *inv, ms_cuk_pool_t p,
                           int is_max)
{
    T *out = (T *)outv;
    const T *in = (const T *)inv;
    size_t nv = (size_t)p.n * p.oh * p.ow * p.c / V;
    GRID_LOOP(iv, nv)
    {
        size_t i = iv * V, t = i;
        int c = (int)(t % p.c);
        t /= p.c;
        int ox = (int)(t % p.ow);
        t /= p.ow;
        int oy = (int)(t % p.oh);
        size_t b = t / p.oh;
        int ys = oy * p.stride - p.pad, xs = ox * p.stride - p.pad;
        int y0 = max(ys, 0), x0 = max(xs, 0);
        int y1 = min(ys + p.k, p.h), x1 = min(xs + p.k, p.w);
        float acc[V];
        int best[V];
        for (int k = 0; k < V; k++) {
            acc[k] = is_max ? -INFINITY : 0.0f;
            best[k] = (y0 - ys) * p.k + (x0 - xs); // the first cell, as the reference
        }
        for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) {
                float v[V];
                vec<T, V>::load(in, ((b * p.h + iy) * p.w + ix) * p.c + c, v);
                for (int k = 0; k < V; k++) {
                    if (!is_max) {
                        acc[k] += v[k];
                    } else if (v[k] > acc[k]) {
                        acc[k] = v[k];
                        best[k] = (iy - ys) * p.k + (ix - xs);
                    }
                }
            }
        if (!is_max)
            for (int k = 0; k < V; k++)
                acc[k] /= (float)((y1 - y0) * (x1 - x0));
        vec<T, V>::store(out, i, acc);
        if (arg)
            bytes<V>::store(arg, i, best);
    }
}

template <typename T, int V>
__global__ void k_pool_bwd(void *dinv, const void *doutv, const void *inv, const uint8_t *arg,
                           ms_cuk_pool_t p, int is_max)
{
    T *din = (T *)dinv;
    const T *dout = (const T *)doutv, *in = (const T *)inv;
    size_t nv = (size_t)p.n * p.h * p.w * p.c / V;
    GRID_LOOP(iv, nv)
    {
        size_t i = iv * V, t = i;
        int c = (int)(t % p.c);
        t /= p.c;
        int ix = (int)(t % p.w);
        t /= p.w;
        int iy = (int)(t % p.h);
        size_t b = t / p.h;
        // the outputs whose windows hold the cell
        int oy0, oy1, ox0, ox1;
        ms_pool_windows_of(iy, p.k, p.stride, p.pad, p.oh, &oy0, &oy1);
        ms_pool_windows_of(ix, p.k, p.stride, p.pad, p.ow, &ox0, &ox1);
        const size_t plane = b * p.h * p.w * p.c + c; // (b, 0, 0, c)
        float g[V];
        for (int k = 0; k < V; k++)
            g[k] = 0;
        for (int oy = oy0; oy <= oy1; oy++)
            for (int ox = ox0; ox <= ox1; ox++) {
                int ys = oy * p.stride - p.pad, xs = ox * p.stride - p.pad;
                int y0 = max(ys, 0), x0 = max(xs, 0);
                int y1 = min(ys + p.k, p.h), x1 = min(xs + p.k, p.w);
                size_t o = ((b * p.oh + oy) * p.ow + ox) * p.c + c;
                float d[V];
                vec<T, V>::load(dout, o, d);
                if (!is_max) {
                    float cnt = (float)((y1 - y0) * (x1 - x0));
                    for (int k = 0; k < V; k++)
                        g[k] += d[k] / cnt; // as the reference: divide, then add
                    continue;
                }
                int a[V];
                if (arg) {
                    bytes<V>::load(arg, o, a);
                } else { // the first maximum in scan order, searched again
                    float bv[V];
                    vec<T, V>::load(in, plane + ((size_t)y0 * p.w + x0) * p.c, bv);
                    for (int k = 0; k < V; k++)
                        a[k] = (y0 - ys) * p.k + (x0 - xs);
                    for (int yy = y0; yy < y1; yy++)
                        for (int xx = x0; xx < x1; xx++) {
                            float v[V];
                            vec<T, V>::load(in, plane + ((size_t)yy * p.w + xx) * p.c, v);
                            for (int k = 0; k < V; k++)
                                if (v[k] > bv[k]) {
                                    bv[k] = v[k];
                                    a[k] = (yy - ys) * p.k + (xx - xs);
                                }
                        }
                }
                for (int k = 0; k < V; k++)
                    if (ys + a[k] / p.k == iy && xs + a[k] % p.k == ix)
                        g[k] += d[k];
            }
        vec<T, V>::store(din, i, g);
    }
}

// ---- elementwise --------------------------------------------------------------------------

template <typename T>
__global__ void k_relu_fwd(void *outv, const void *inv, size_t n)
{
    T *out = (T *)outv;
    const T *in = (const T *)inv;
    GRID_LOOP(i, n)
    {
        float v = ld(in, i);
        st(out, i, v > 0.0f ? v : 0.0f);
    }
}

template <typename T>
__global__ void k_relu_bwd(void *dinv, const void *doutv, const void *outv, size_t n)
{
    T *din = (T *)dinv;
    const T *dout = (const T *)doutv, *out = (const T *)outv;
    GRID_LOOP(i, n) st(din, i, ld(out, i) > 0.0f ? ld(dout, i) : 0.0f);
}

template <typename T, int V>
__global__ void k_dropout(void *outv, const void *inv, int N, int C, int H, int W, uint64_t i0,
                          uint64_t key, float rate, float scale)
{
    T *out = (T *)outv;
    const T *in = (const T *)inv;
    size_t nv = (size_t)N * C * H * W / V;
    GRID_LOOP(iv, nv)
    {
        size_t i = iv * V;
        float f[V];
        vec<T, V>::load(in, i, f);
        // the mask is defined on the logical NCHW index, offset by the batch's first unit
        for (int k = 0; k < V; k++)
            f[k] = ms_dropout_keep(key, i0 + ms_nhwc_logical(i + k, C, H, W), rate)
                       ? f[k] * scale
                       : 0.0f;
        vec<T, V>::store(out, i, f);
    }
}

template <typename T>
__global__ void k_clamp(void *pv, size_t n, float lo, float hi)
{
    T *p = (T *)pv;
    GRID_LOOP(i, n)
    {
        float v = ld(p, i);
        st(p, i, v < lo ? lo : (v > hi ? hi : v));
    }
}

// p = p / d, IEEE division (nvcc's default -prec-div=true): the all-reduce's mean, rounded once
// from the exact sum as the CPU ranks' MPI path rounds it
__global__ void k_div(float *p, size_t n, float d)
{
    GRID_LOOP(i, n) p[i] = __fdiv_rn(p[i], d);
}

// ---- MIL pooling ----------------------------------------------------------------------------
// One block per bag (n,k): instance j of the bag is z[(n*J + j)*K + k]. The statistics each
// pooling function needs are block reductions; the formulas are those of ops.inc.

struct bag_t {
    float lp, l1, P;    // log P, log(1-P), P
    float lpb, lqb;     // Noisy-AND: log pbar, log qbar
    float mx, s;        // LSE, GM, ISR: max and sum of exp(. - max); ISR: L in mx
    int jm;             // max: the first maximum
};

template <typename T>
__device__ bag_t mil_bag(const T *z, int K, int J, float b, int kind, float a, float r)
{
    bag_t o = {};
    const float fJ = (float)J;
    switch (kind) {
    case 0: { // MS_MIL_NOISY_AND
        // log pbar and log qbar by log-sum-exp of log sigmoid, as in ops.inc
        float mp = -INFINITY, mq = -INFINITY;
        for (int j = threadIdx.x; j < J; j += blockDim.x) {
            float v = ld(z, (size_t)j * K);
            mp = fmaxf(mp, logsigm(v));
            mq = fmaxf(mq, logsigm(-v));
        }
        mp = block_reduce(mp, RED_MAX);
        mq = block_reduce(mq, RED_MAX);
        float ps = 0, qs = 0;
        for (int j = threadIdx.x; j < J; j += blockDim.x) {
            float v = ld(z, (size_t)j * K);
            ps += expf(logsigm(v) - mp);
            qs += expf(logsigm(-v) - mq);
        }
        ps = block_reduce(ps, RED_SUM);
        qs = block_reduce(qs, RED_SUM);
        o.lpb = mp + logf(ps / fJ);
        o.lqb = mq + logf(qs / fJ);
        float u = a * (expf(o.lpb) - b), lden = safelog(-expm1f(-a)), la = logf(a);
        o.lp = logsigm(u) + log1mexp(la + o.lpb) - logsigm(a * (1.0f - b)) - lden;
        o.l1 = logsigm(-u) + log1mexp(la + o.lqb) - logsigm(a * b) - lden;
        break;
    }
    case 1: { // MS_MIL_LSE
        float sp = 0, sq = 0, mx = -INFINITY;
        for (int j = threadIdx.x; j < J; j += blockDim.x) {
            float v = ld(z, (size_t)j * K);
            sp += expm1f(r * sigm(v));
            sq += expm1f(-r * sigm(-v));
            mx = fmaxf(mx, r * sigm(v));
        }
        sp = block_reduce(sp, RED_SUM);
        sq = block_reduce(sq, RED_SUM);
        o.mx = block_reduce(mx, RED_MAX);
        float Pv = log1pf(sp / fJ) / r, Qv = -log1pf(sq / fJ) / r;
        o.lp = safelog(Pv);
        o.l1 = safelog(Qv);
        float s = 0;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            s += expf(r * sigm(ld(z, (size_t)j * K)) - o.mx);
        o.s = block_reduce(s, RED_SUM);
        break;
    }
    case 2: { // MS_MIL_GM
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            mx = fmaxf(mx, r * logsigm(ld(z, (size_t)j * K)));
        o.mx = block_reduce(mx, RED_MAX);
        float s = 0;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            s += expf(r * logsigm(ld(z, (size_t)j * K)) - o.mx);
        o.s = block_reduce(s, RED_SUM);
        o.lp = (o.mx + logf(o.s) - logf(fJ)) / r;
        o.l1 = safelog(-expm1f(o.lp));
        break;
    }
    case 3: { // MS_MIL_MAX
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            mx = fmaxf(mx, ld(z, (size_t)j * K));
        mx = block_reduce(mx, RED_MAX);
        float jm = INFINITY; // indices are exact in float below 2^24
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            if (ld(z, (size_t)j * K) == mx)
                jm = fminf(jm, (float)j);
        o.jm = (int)block_reduce(jm, RED_MIN);
        o.lp = logsigm(mx);
        o.l1 = logsigm(-mx);
        break;
    }
    case 4: { // MS_MIL_NOISY_OR
        float S = 0;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            S += logsigm(-ld(z, (size_t)j * K));
        S = block_reduce(S, RED_SUM);
        o.l1 = S;
        o.lp = safelog(-expm1f(S));
        break;
    }
    default: { // MS_MIL_ISR: L = log sum e^z
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            mx = fmaxf(mx, ld(z, (size_t)j * K));
        mx = block_reduce(mx, RED_MAX);
        float s = 0;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            s += expf(ld(z, (size_t)j * K) - mx);
        s = block_reduce(s, RED_SUM);
        o.mx = mx + logf(s);
        o.lp = logsigm(o.mx);
        o.l1 = logsigm(-o.mx);
        break;
    }
    }
    o.P = expf(o.lp);
    return o;
}

template <typename T>
__global__ void k_mil_fwd(float *P, float *logP, float *log1mP, const void *zv, const float *b,
                          int kind, float a, float r, int K, int J)
{
    int bag = blockIdx.x, n = bag / K, k = bag % K;
    const T *z = (const T *)zv + (size_t)n * J * K + k;
    bag_t o = mil_bag<T>(z, K, J, b ? b[k] : 0.0f, kind, a, r);
    if (threadIdx.x == 0) {
        P[bag] = o.P;
        logP[bag] = o.lp;
        log1mP[bag] = o.l1;
    }
}

template <typename T>
__global__ void k_mil_bwd(void *dzv, float *dbbag, const float *gP, const float *glogP,
                          const float *glog1mP, const void *zv, const float *b, int kind,
                          float a, float r, int K, int J)
{
    int bag = blockIdx.x, n = bag / K, k = bag % K;
    size_t base = (size_t)n * J * K + k;
    const T *z = (const T *)zv + base;
    T *d = (T *)dzv + base;
    float bk = b ? b[k] : 0.0f;
    bag_t o = mil_bag<T>(z, K, J, bk, kind, a, r);
    const float P = o.P, Q = expf(o.l1), fJ = (float)J;
    float gp = gP ? gP[bag] : 0.0f, gl = glogP ? glogP[bag] : 0.0f,
          gq = glog1mP ? glog1mP[bag] : 0.0f;
    float GL = gl + gp * P; // total gradient w.r.t. log P, folding dP = P dlogP
    switch (kind) {
    case 0: {
        float u = a * (expf(o.lpb) - bk), la = logf(a), lJ = logf(fJ);
        float G = GL * a * sigm(-u) - gq * a * sigm(u);
        float Gp = GL * xoverexpm1(la + o.lpb), Gq = gq * xoverexpm1(la + o.lqb);
        for (int j = threadIdx.x; j < J; j += blockDim.x) {
            float v = ld(z, (size_t)j * K), lpj = logsigm(v), lqj = logsigm(-v);
            st(d, (size_t)j * K, G * expf(lpj + lqj) / fJ + Gp * expf(lpj - lJ - o.lpb + lqj) -
                                     Gq * expf(lqj - lJ - o.lqb + lpj));
        }
        if (b && dbbag && threadIdx.x == 0)
            dbbag[bag] = GL * (-a * sigm(-u) + a * sigm(-a * (1.0f - bk))) +
                         gq * (a * sigm(u) - a * sigm(-a * bk));
        break;
    }
    case 1: {
        float G = GL / fmaxf(P, FLT_MIN) - gq / fmaxf(Q, FLT_MIN);
        for (int j = threadIdx.x; j < J; j += blockDim.x) {
            float v = ld(z, (size_t)j * K), p = sigm(v), q = sigm(-v);
            st(d, (size_t)j * K, G * expf(r * p - o.mx) / o.s * p * q);
        }
        break;
    }
    case 2: {
        float G = GL - gq * expf(o.lp - o.l1);
        for (int j = threadIdx.x; j < J; j += blockDim.x) {
            float v = ld(z, (size_t)j * K);
            st(d, (size_t)j * K, G * expf(r * logsigm(v) - o.mx) / o.s * sigm(-v));
        }
        break;
    }
    case 3:
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            st(d, (size_t)j * K, j == o.jm ? GL * Q - gq * P : 0.0f);
        break;
    case 4: {
        float GS = gq - GL * Q / fmaxf(P, FLT_MIN);
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            st(d, (size_t)j * K, -GS * sigm(ld(z, (size_t)j * K)));
        break;
    }
    default: {
        float GLv = GL * Q - gq * P;
        for (int j = threadIdx.x; j < J; j += blockDim.x)
            st(d, (size_t)j * K, GLv * expf(ld(z, (size_t)j * K) - o.mx));
        break;
    }
    }
}

__global__ void k_colsum_add(float *db, const float *x, int N, int K)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= K)
        return;
    float s = 0;
    for (int n = 0; n < N; n++)
        s += x[(size_t)n * K + k];
    db[k] += s;
}

// ---- the head -------------------------------------------------------------------------------

__global__ void k_fc_fwd(float *y, const float *x, const float *w, const float *b, int N, int ni,
                         int no)
{
    size_t n = (size_t)N * no;
    GRID_LOOP(i, n)
    {
        int o = (int)(i % no);
        size_t bn = i / no;
        float acc = b ? b[o] : 0.0f;
        for (int c = 0; c < ni; c++)
            acc += w[(size_t)o * ni + c] * x[bn * ni + c];
        y[i] = acc;
    }
}

// Threads [0, N*ni): dx; [N*ni, N*ni + no*ni): dw; then no: db. Sums run over n or o in a
// fixed order (deterministic).
__global__ void k_fc_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                         const float *w, int N, int ni, int no)
{
    size_t nx = (size_t)N * ni, nw = (size_t)no * ni, total = nx + nw + no;
    GRID_LOOP(t, total)
    {
        if (t < nx) {
            if (!dx)
                continue;
            int c = (int)(t % ni);
            size_t bn = t / ni;
            float acc = 0;
            for (int o = 0; o < no; o++)
                acc += w[(size_t)o * ni + c] * dy[bn * no + o];
            dx[t] = acc;
        } else if (t < nx + nw) {
            if (!dw)
                continue;
            size_t i = t - nx;
            int c = (int)(i % ni), o = (int)(i / ni);
            float acc = 0;
            for (int bn = 0; bn < N; bn++)
                acc += dy[(size_t)bn * no + o] * x[(size_t)bn * ni + c];
            dw[i] += acc;
        } else {
            if (!db)
                continue;
            int o = (int)(t - nx - nw);
            float acc = 0;
            for (int bn = 0; bn < N; bn++)
                acc += dy[(size_t)bn * no + o];
            db[o] += acc;
        }
    }
}

// log sum_k e^{y_k}: the softmax head's normaliser, prob_k = e^{y_k - L}
__device__ float log_softmax_norm(const float *y, int K)
{
    float m = -INFINITY, s = 0;
    for (int k = 0; k < K; k++)
        m = fmaxf(m, y[k]);
    for (int k = 0; k < K; k++)
        s += expf(y[k] - m);
    return m + logf(s);
}

// One block; thread n handles image n (and n + blockDim.x, ...).
__global__ void k_loss(double *loss, float *glogP, float *glog1mP, float *gy, float *prob,
                       const float *logP, const float *log1mP, const float *y, const float *t,
                       int head, int N, int K)
{
    __shared__ double sh[kThreads];
    const float inv = 1.0f / (float)N;
    double acc = 0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        const float *tn = t + (size_t)n * K;
        for (int k = 0; k < K; k++) {
            size_t i = (size_t)n * K + k;
            acc -= (double)(tn[k] * logP[i] + (1.0f - tn[k]) * log1mP[i]);
            glogP[i] = -tn[k] * inv;
            glog1mP[i] = -(1.0f - tn[k]) * inv;
        }
        if (!y)
            continue;
        const float *yn = y + (size_t)n * K;
        float *g = gy + (size_t)n * K, *pr = prob + (size_t)n * K;
        if (head == 0) { // softmax
            float L = log_softmax_norm(yn, K), tsum = 0;
            for (int k = 0; k < K; k++)
                tsum += tn[k];
            for (int k = 0; k < K; k++) {
                pr[k] = expf(yn[k] - L);
                acc -= (double)(tn[k] * (yn[k] - L));
                g[k] = (pr[k] * tsum - tn[k]) * inv;
            }
        } else { // sigmoid; BCE with logits: softplus(y) - t y
            for (int k = 0; k < K; k++) {
                pr[k] = sigm(yn[k]);
                acc += (double)(fmaxf(yn[k], 0.0f) + log1pf(expf(-fabsf(yn[k]))) - tn[k] * yn[k]);
                g[k] = (pr[k] - tn[k]) * inv;
            }
        }
    }
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o)
            sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *loss = sh[0] / N;
}

template <typename T>
__global__ void k_guided_seed(void *dv, const void *zv, const float *P, int cls, int N, int K,
                              int J)
{
    T *d = (T *)dv;
    const T *z = (const T *)zv;
    size_t n = (size_t)N * J * K;
    GRID_LOOP(i, n)
    {
        int k = (int)(i % K);
        size_t bn = i / ((size_t)J * K);
        float sel = (cls < 0 || cls == k) ? P[bn * K + k] : 0.0f;
        st(d, i, sigm(ld(z, i)) * sel);
    }
}

// Explicit round-to-nearest intrinsics: no fused multiply-adds, so the same operations in
// the same order as the reference compiled for x86-64 without FMA.
__global__ void k_adam(float *p, const float *g, float *m, float *v, size_t n, float b1,
                       float b2, float step_size, float sbc2, float eps)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    GRID_LOOP(i, n)
    {
        float gi = g[i];
        float mi = __fadd_rn(__fmul_rn(m[i], b1), __fmul_rn(gi, c1));
        float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(gi, gi), c2));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), sbc2), eps);
        p[i] = __fsub_rn(p[i], __fdiv_rn(__fmul_rn(step_size, mi), denom));
    }
}

// ---- loopy belief propagation (a port of ms_lbp_binary in pipeline/localise.c) -------------
// Messages (4, H, W) by the direction they come from (0 up, 1 down, 2 left, 3 right), as
// log-odds; one thread per pixel writes its own outgoing messages from the previous sweep's.
// The arithmetic is the CPU's, in its order, without fused multiply-adds.

__device__ __forceinline__ float potts_message(float h, float beta, float B, int max_product)
{
    if (max_product)
        return fmaxf(h + beta, 0.0f) - fmaxf(h, beta);
    float E = expf(-fabsf(h));
    return copysignf(logf(__fdiv_rn(B + E, __fadd_rn(1.0f, __fmul_rn(B, E)))), h);
}

__global__ void k_lbp_sweep(float *nxt, const float *msg, const float *unary, int H, int W,
                            float beta, float B, float d, int max_product)
{
    const size_t hw = (size_t)H * W;
    const float keep = 1.0f - d;
    GRID_LOOP(i, hw)
    {
        int y = (int)(i / W), x = (int)(i % W);
        float in0 = msg[i], in1 = msg[hw + i], in2 = msg[2 * hw + i], in3 = msg[3 * hw + i];
        float b = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(unary[i], in0), in1), in2), in3);
        if (y > 0) {
            size_t j = hw + i - W;
            nxt[j] = __fadd_rn(__fmul_rn(keep, potts_message(b - in0, beta, B, max_product)),
                               __fmul_rn(d, msg[j]));
        }
        if (y < H - 1) {
            size_t j = i + W;
            nxt[j] = __fadd_rn(__fmul_rn(keep, potts_message(b - in1, beta, B, max_product)),
                               __fmul_rn(d, msg[j]));
        }
        if (x > 0) {
            size_t j = 3 * hw + i - 1;
            nxt[j] = __fadd_rn(__fmul_rn(keep, potts_message(b - in2, beta, B, max_product)),
                               __fmul_rn(d, msg[j]));
        }
        if (x < W - 1) {
            size_t j = 2 * hw + i + 1;
            nxt[j] = __fadd_rn(__fmul_rn(keep, potts_message(b - in3, beta, B, max_product)),
                               __fmul_rn(d, msg[j]));
        }
    }
}

__global__ void k_lbp_decide(uint8_t *out, const float *msg, const float *unary, size_t hw)
{
    GRID_LOOP(i, hw)
    {
        float b = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(unary[i], msg[i]), msg[hw + i]),
                                      msg[2 * hw + i]),
                            msg[3 * hw + i]);
        out[i] = b > 0;
    }
}

} // namespace

// ---- launchers ------------------------------------------------------------------------------

extern "C" {

cudaError_t ms_cuk_nchw_to_nhwc(void *dst, const float *src, int N, int C, int H, int W,
                                int bf16, cudaStream_t s)
{
    size_t n = (size_t)N * C * H * W;
    LAUNCH_T(bf16, n, k_nchw_to_nhwc, dst, src, N, C, H, W);
    return cudaGetLastError();
}

cudaError_t ms_cuk_nhwc_to_nchw(float *dst, const void *src, int N, int C, int H, int W,
                                int sigmoid, int bf16, cudaStream_t s)
{
    size_t n = (size_t)N * C * H * W;
    LAUNCH_T(bf16, n, k_nhwc_to_nchw, dst, src, N, C, H, W, sigmoid);
    return cudaGetLastError();
}

cudaError_t ms_cuk_weights_krsc(void *dst, const float *w, int O, int I, int Ip, int k, int bf16,
                                cudaStream_t s)
{
    size_t n = (size_t)O * Ip * k * k;
    LAUNCH_T(bf16, n, k_weights_krsc, dst, w, O, I, Ip, k);
    return cudaGetLastError();
}

cudaError_t ms_cuk_dw_add(float *dw, const void *src, int O, int I, int Ip, int k, int bf16,
                          cudaStream_t s)
{
    size_t n = (size_t)O * I * k * k;
    LAUNCH_T(bf16, n, k_dw_add, dw, src, O, I, Ip, k);
    return cudaGetLastError();
}

cudaError_t ms_cuk_pad_channels(void *dst, const void *src, size_t rows, int C, int Cp, int pad,
                                int bf16, cudaStream_t s)
{
    size_t n = rows * (pad ? Cp : C);
    LAUNCH_T(bf16, n, k_pad_channels, dst, src, rows, C, Cp, pad);
    return cudaGetLastError();
}

cudaError_t ms_cuk_bias_act(void *y, const float *b, size_t rows, int C, int relu, int bf16,
                            cudaStream_t s)
{
    size_t n = rows * C;
    LAUNCH_TV(bf16, C, n, k_bias_act, y, b, rows, C, relu);
    return cudaGetLastError();
}

cudaError_t ms_cuk_relu_bias_bwd(void *dy, const void *y, float *partial, size_t rows, int C,
                                 int relu, int bf16, cudaStream_t s)
{
    const int vw = bf16 ? 8 : 4;
    if (C % vw == 0 && C / vw <= kThreads) {
        if (bf16)
            k_relu_bias_bwd_v<bf16_t, 8><<<bias_blocks(rows), kThreads, 0, s>>>(dy, y, partial,
                                                                              rows, C, relu);
        else
            k_relu_bias_bwd_v<float, 4><<<bias_blocks(rows), kThreads, 0, s>>>(dy, y, partial,
                                                                             rows, C, relu);
        return cudaGetLastError();
    }
    dim3 grid(bias_blocks(rows), (C + 31) / 32), block(32, 8);
    if (bf16)
        k_relu_bias_bwd<bf16_t><<<grid, block, 0, s>>>(dy, y, partial, rows, C, relu);
    else
        k_relu_bias_bwd<float><<<grid, block, 0, s>>>(dy, y, partial, rows, C, relu);
    return cudaGetLastError();
}

cudaError_t ms_cuk_bias_finish(float *db, const float *partial, size_t rows, int C,
                               cudaStream_t s)
{
    k_bias_finish<<<(C + 127) / 128, 128, 0, s>>>(db, partial, bias_blocks(rows), C);
    return cudaGetLastError();
}

cudaError_t ms_cuk_pool_fwd(void *out, uint8_t *arg, const void *in, const ms_cuk_pool_t *p,
                            int is_max, int bf16, cudaStream_t s)
{
    size_t n = (size_t)p->n * p->oh * p->ow * p->c;
    LAUNCH_TV(bf16, p->c, n, k_pool_fwd, out, is_max ? arg : NULL, in, *p, is_max);
    return cudaGetLastError();
}

cudaError_t ms_cuk_pool_bwd(void *din, const void *dout, const void *in, const uint8_t *arg,
                            const ms_cuk_pool_t *p, int is_max, int bf16, cudaStream_t s)
{
    size_t n = (size_t)p->n * p->h * p->w * p->c;
    LAUNCH_TV(bf16, p->c, n, k_pool_bwd, din, dout, in, is_max ? arg : NULL, *p, is_max);
    return cudaGetLastError();
}

cudaError_t ms_cuk_relu_fwd(void *out, const void *in, size_t n, int bf16, cudaStream_t s)
{
    LAUNCH_T(bf16, n, k_relu_fwd, out, in, n);
    return cudaGetLastError();
}

cudaError_t ms_cuk_relu_bwd(void *din, const void *dout, const void *out, size_t n, int bf16,
                            cudaStream_t s)
{
    LAUNCH_T(bf16, n, k_relu_bwd, din, dout, out, n);
    return cudaGetLastError();
}

cudaError_t ms_cuk_dropout(void *out, const void *in, int N, int C, int H, int W, uint64_t i0,
                           uint64_t key, float rate, float scale, int bf16, cudaStream_t s)
{
    size_t n = (size_t)N * C * H * W;
    LAUNCH_TV(bf16, C, n, k_dropout, out, in, N, C, H, W, i0, key, rate, scale);
    return cudaGetLastError();
}

cudaError_t ms_cuk_clamp(void *p, size_t n, float lo, float hi, int bf16, cudaStream_t s)
{
    LAUNCH_T(bf16, n, k_clamp, p, n, lo, hi);
    return cudaGetLastError();
}

cudaError_t ms_cuk_div(float *p, size_t n, float d, cudaStream_t s)
{
    k_div<<<grid_for(n), kThreads, 0, s>>>(p, n, d);
    return cudaGetLastError();
}

cudaError_t ms_cuk_mil_fwd(float *P, float *logP, float *log1mP, const void *z, const float *b,
                           int kind, float a, float r, int N, int K, int J, int bf16,
                           cudaStream_t s)
{
    if (bf16)
        k_mil_fwd<bf16_t><<<N * K, kThreads, 0, s>>>(P, logP, log1mP, z, b, kind, a, r, K, J);
    else
        k_mil_fwd<float><<<N * K, kThreads, 0, s>>>(P, logP, log1mP, z, b, kind, a, r, K, J);
    return cudaGetLastError();
}

cudaError_t ms_cuk_mil_bwd(void *dz, float *dbbag, const float *gP, const float *glogP,
                           const float *glog1mP, const void *z, const float *b, int kind,
                           float a, float r, int N, int K, int J, int bf16, cudaStream_t s)
{
    if (bf16)
        k_mil_bwd<bf16_t><<<N * K, kThreads, 0, s>>>(dz, dbbag, gP, glogP, glog1mP, z, b, kind,
                                                     a, r, K, J);
    else
        k_mil_bwd<float><<<N * K, kThreads, 0, s>>>(dz, dbbag, gP, glogP, glog1mP, z, b, kind,
                                                    a, r, K, J);
    return cudaGetLastError();
}

cudaError_t ms_cuk_colsum_add(float *db, const float *x, int N, int K, cudaStream_t s)
{
    k_colsum_add<<<(K + 127) / 128, 128, 0, s>>>(db, x, N, K);
    return cudaGetLastError();
}

cudaError_t ms_cuk_fc_fwd(float *y, const float *x, const float *w, const float *b, int N,
                          int ni, int no, cudaStream_t s)
{
    size_t n = (size_t)N * no;
    k_fc_fwd<<<grid_for(n), kThreads, 0, s>>>(y, x, w, b, N, ni, no);
    return cudaGetLastError();
}

cudaError_t ms_cuk_fc_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, int N, int ni, int no, cudaStream_t s)
{
    size_t n = (size_t)N * ni + (size_t)no * ni + no;
    k_fc_bwd<<<grid_for(n), kThreads, 0, s>>>(dx, dw, db, dy, x, w, N, ni, no);
    return cudaGetLastError();
}

cudaError_t ms_cuk_loss(double *loss, float *glogP, float *glog1mP, float *gy, float *prob,
                        const float *logP, const float *log1mP, const float *y, const float *t,
                        int head, int N, int K, cudaStream_t s)
{
    k_loss<<<1, kThreads, 0, s>>>(loss, glogP, glog1mP, gy, prob, logP, log1mP, y, t, head, N,
                                  K);
    return cudaGetLastError();
}

cudaError_t ms_cuk_guided_seed(void *d, const void *z, const float *P, int cls, int N, int K,
                               int J, int bf16, cudaStream_t s)
{
    size_t n = (size_t)N * J * K;
    LAUNCH_T(bf16, n, k_guided_seed, d, z, P, cls, N, K, J);
    return cudaGetLastError();
}

cudaError_t ms_cuk_adam(float *p, const float *g, float *m, float *v, size_t n, float b1,
                        float b2, float step_size, float sbc2, float eps, cudaStream_t s)
{
    k_adam<<<grid_for(n), kThreads, 0, s>>>(p, g, m, v, n, b1, b2, step_size, sbc2, eps);
    return cudaGetLastError();
}

cudaError_t ms_cuk_lbp(uint8_t *out, float *msg, float *nxt, const float *unary, int H, int W,
                       float beta, int iterations, int max_product, float damping,
                       cudaStream_t s)
{
    size_t hw = (size_t)H * W;
    const float B = expf(beta);
    for (int it = 0; it < iterations; it++) {
        k_lbp_sweep<<<grid_for(hw), kThreads, 0, s>>>(nxt, msg, unary, H, W, beta, B, damping,
                                                      max_product);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
        float *t = msg;
        msg = nxt;
        nxt = t;
    }
    k_lbp_decide<<<grid_for(hw), kThreads, 0, s>>>(out, msg, unary, hw);
    return cudaGetLastError();
}

} // extern "C"

/* One thread per row: K is the number of classes (tens). */
__global__ void k_head_prob(float *prob, const float *y, int head, int N, int K)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N)
        return;
    const float *yn = y + (size_t)n * K;
    float *pr = prob + (size_t)n * K;
    if (head == 0) { /* MS_HEAD_SOFTMAX */
        float L = log_softmax_norm(yn, K);
        for (int k = 0; k < K; k++)
            pr[k] = expf(yn[k] - L);
    } else { /* the reference's two-sided sigmoid, as k_loss (1/(1+e^-y) flushes to 0) */
        for (int k = 0; k < K; k++)
            pr[k] = sigm(yn[k]);
    }
}

cudaError_t ms_cuk_head_prob(float *prob, const float *y, int head, int N, int K,
                             cudaStream_t s)
{
    k_head_prob<<<(N + 127) / 128, 128, 0, s>>>(prob, y, head, N, K);
    return cudaGetLastError();
}
