/* The machine bench --cpu runs on, measured rather than assumed: the arithmetic peak of its
 * cores (chains of independent AVX-512 FMAs in fp32, and AVX512_BF16's vdpbf16ps), on one
 * thread and on all, and the physical core / SMT layout the kernel reports. Every figure of
 * bench --cpu is then stated as a fraction of that peak. */
#ifndef MS_BENCH_PEAK_H
#define MS_BENCH_PEAK_H

#include <stdio.h>

typedef struct {
    int threads;           /* OpenMP threads of the all-thread figures */
    const char *fp32_isa;  /* the fp32 kernel: "avx512" (zmm) or "avx2" (ymm) */
    double fp32_1;         /* GFLOP/s, one thread (an FMA counts 2) */
    double fp32_all;       /* GFLOP/s, all threads together */
    double bf16_1;         /* GFLOP/s of vdpbf16ps (a pair of products and their sums counts
                              4 per lane), one thread; 0: no AVX512_BF16 */
    double bf16_all;
    double mhz;            /* the nominal clock of /proc/cpuinfo, 0 when unknown */
} ms_peak_t;

/* Runs the kernels (about a second): each figure is the best of several short runs, the one
 * least disturbed by other work on the machine. */
void ms_peak_measure(ms_peak_t *p, int threads);

/* Prints the CPU model, the online CPUs and their packages / cores / threads per core (from
 * /sys/devices/system/cpu/cpuN/topology), the CPUs this process may run on, and whether a
 * hypervisor is present (then the host's placement of the vCPUs is not visible), each line
 * starting with prefix; then one machine-readable line "milscreen-topology ...". */
void ms_topology_print(FILE *f, const char *prefix);

/* The 1-minute load average (/proc/loadavg), or -1. */
double ms_load_average(void);

#endif
