/* Counter-based random numbers: every draw is a pure function of (key, counter), so
 * dropout masks need no storage, are the same on every backend and thread count, and
 * resume exactly from a step number. splitmix64 finaliser (Steele et al. 2014). */
#ifndef MS_RNG_H
#define MS_RNG_H

#include <stdint.h>

#ifdef __CUDACC__
#define MS_HD __host__ __device__ __forceinline__
#else
#define MS_HD static inline
#endif

MS_HD uint64_t ms_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0,1) with 24 random bits, exact in float and double. */
MS_HD float ms_uniform(uint64_t key, uint64_t counter)
{
    return (float)(ms_mix64(key ^ ms_mix64(counter)) >> 40) * (1.0f / 16777216.0f);
}

/* The key of one dropout layer at one training step. */
MS_HD uint64_t ms_dropout_key(uint64_t seed, uint64_t step, int layer)
{
    return ms_mix64(ms_mix64(seed ^ 0x6d696c7363726eULL) + step * 0x100000001b3ULL +
                    (uint64_t)layer);
}

/* Keep a unit at logical NCHW index i with probability 1 - rate. */
MS_HD int ms_dropout_keep(uint64_t key, uint64_t i, float rate)
{
    return ms_uniform(key, i) >= rate;
}

#endif
