/* bench --cpu's machine section: the measured arithmetic peak of the cores (fp32 FMA and
 * bf16 dot products), the core / SMT layout from sysfs, the load average. */
#define _GNU_SOURCE
#include "pipeline/bench/peak.h"

#include <immintrin.h>
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ---- the kernels ----------------------------------------------------------------------
 * CHAINS independent accumulators, each updated once per iteration: enough to keep two FMA
 * pipes busy through a latency of up to 12 cycles, few enough to stay in the 32 vector
 * registers with the two operands. The operands keep the values finite and normal (no
 * denormal slow path): fp32 converges to 1, bf16 grows by 2e-6 per iteration. Each returns
 * a sum of its accumulators so that nothing is optimised away. */
enum { CHAINS = 24 };

__attribute__((target("avx512f"), noinline)) static float fma_zmm(long iters)
{
    __m512 acc[CHAINS];
    const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], b, c);
    }
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++)
        s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"), noinline)) static float fma_ymm(long iters)
{
    __m256 acc[CHAINS / 2]; /* 16 ymm registers */
    const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < CHAINS / 2; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS / 2; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], b, c);
    }
    float out[8], s = 0;
    for (int i = 1; i < CHAINS / 2; i++)
        acc[0] = _mm256_add_ps(acc[0], acc[i]);
    _mm256_storeu_ps(out, acc[0]);
    for (int i = 0; i < 8; i++)
        s += out[i];
    return s;
}

__attribute__((target("avx512f,avx512bf16"), noinline)) static float dpbf16_zmm(long iters)
{
    __m512 acc[CHAINS];
    /* bf16 bit patterns: 1.0 and about 1e-6 in every half of every lane */
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80);
    const __m512bh y = (__m512bh)_mm512_set1_epi16(0x3586);
    for (int i = 0; i < CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    }
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++)
        s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

typedef enum { K_ZMM, K_YMM, K_BF16 } kernel_t;

/* FLOP of one iteration: an fp32 FMA is 2 per lane; vdpbf16ps multiplies two bf16 pairs per
 * fp32 lane and adds both products into it, 4 per lane. */
static double kernel_flop(kernel_t k)
{
    return k == K_ZMM ? CHAINS * 16 * 2.0 : k == K_YMM ? CHAINS / 2 * 8 * 2.0 : CHAINS * 16 * 4.0;
}

static volatile float sink; /* the kernels' results go here */

static float run_kernel(kernel_t k, long iters)
{
    return k == K_ZMM ? fma_zmm(iters) : k == K_YMM ? fma_ymm(iters) : dpbf16_zmm(iters);
}

/* GFLOP/s of kernel k on `threads` threads at once (1: this thread alone), best of reps
 * runs of iters iterations each. */
static double kernel_rate(kernel_t k, int threads, long iters, int reps)
{
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = 0, t1;
        if (threads == 1) {
            t0 = now();
            sink = run_kernel(k, iters);
        } else {
#pragma omp parallel num_threads(threads)
            {
#pragma omp barrier
#pragma omp master
                t0 = now();
                float v = run_kernel(k, iters);
#pragma omp atomic
                sink += v;
            }
        }
        t1 = now();
        double rate = threads * iters * kernel_flop(k) / (t1 - t0) * 1e-9;
        best = rate > best ? rate : best;
    }
    return best;
}

/* The first "key : value" line of /proc/cpuinfo, value into buf ("" when absent). */
static void cpuinfo(const char *key, char *buf, size_t n)
{
    buf[0] = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[4096];
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && (line[kl] == ' ' || line[kl] == '\t' || line[kl] == ':')) {
            char *v = strchr(line, ':');
            if (v) {
                v += 1 + strspn(v + 1, " \t");
                v[strcspn(v, "\n")] = 0;
                snprintf(buf, n, "%s", v);
            }
            break;
        }
    fclose(f);
}

void ms_peak_measure(ms_peak_t *p, int threads)
{
    memset(p, 0, sizeof *p);
    p->threads = threads;
    char mhz[64];
    cpuinfo("cpu MHz", mhz, sizeof mhz);
    p->mhz = mhz[0] ? strtod(mhz, NULL) : 0;
    __builtin_cpu_init();
    /* about 25 ms per run at 200 GFLOP/s */
    const long iters = 1L << 22;
    const int reps = 5;
    kernel_t k = __builtin_cpu_supports("avx512f") ? K_ZMM : K_YMM;
    p->fp32_isa = k == K_ZMM ? "avx512" : "avx2";
    if (k == K_YMM && !__builtin_cpu_supports("fma"))
        return; /* no FMA at all: nothing to measure */
    /* alternate the single and all-thread runs so that other load hits both alike */
    for (int r = 0; r < 2; r++) {
        double a = kernel_rate(k, 1, iters, reps), b = kernel_rate(k, threads, iters, reps);
        p->fp32_1 = a > p->fp32_1 ? a : p->fp32_1;
        p->fp32_all = b > p->fp32_all ? b : p->fp32_all;
        if (__builtin_cpu_supports("avx512bf16")) {
            a = kernel_rate(K_BF16, 1, iters, reps), b = kernel_rate(K_BF16, threads, iters, reps);
            p->bf16_1 = a > p->bf16_1 ? a : p->bf16_1;
            p->bf16_all = b > p->bf16_all ? b : p->bf16_all;
        }
    }
}

/* ---- topology ---------------------------------------------------------------------------- */

enum { MAXCPU = 4096 };

/* A sysfs CPU list ("0-3,8,10-11") into set; the count, or -1 when unreadable. */
static int read_cpulist(const char *path, unsigned char *set)
{
    memset(set, 0, MAXCPU);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char buf[8192];
    int n = 0;
    if (fgets(buf, sizeof buf, f)) {
        for (char *s = buf; *s && *s != '\n';) {
            char *e;
            long a = strtol(s, &e, 10), b = a;
            if (e == s)
                break;
            if (*e == '-')
                b = strtol(e + 1, &e, 10);
            for (long c = a; c <= b && c < MAXCPU; c++)
                if (c >= 0 && !set[c])
                    set[c] = 1, n++;
            s = *e == ',' ? e + 1 : e;
        }
    }
    fclose(f);
    return n;
}

static int read_int(const char *fmt, int cpu)
{
    char path[256];
    snprintf(path, sizeof path, fmt, cpu);
    FILE *f = fopen(path, "r");
    int v = -1;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* "0-1,4" from a set */
static void cpulist_text(const unsigned char *set, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = 0;
    for (int c = 0; c < MAXCPU && len + 24 < n; c++) {
        if (!set[c])
            continue;
        int e = c;
        while (e + 1 < MAXCPU && set[e + 1])
            e++;
        len += (size_t)snprintf(buf + len, n - len, len ? ",%d" : "%d", c);
        if (e > c)
            len += (size_t)snprintf(buf + len, n - len, "-%d", e);
        c = e;
    }
}

/* Distinct (package, core) pairs among the CPUs of set; *pk: distinct packages. */
static int count_cores(const unsigned char *set, int *pk)
{
    static int pkg[MAXCPU], core[MAXCPU];
    int ncore = 0, npkg = 0;
    static int seen_pkg[MAXCPU];
    for (int c = 0; c < MAXCPU; c++) {
        if (!set[c])
            continue;
        int p = read_int("/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        int k = read_int("/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        int dup = 0;
        for (int i = 0; i < ncore && !dup; i++)
            dup = pkg[i] == p && core[i] == k;
        if (!dup)
            pkg[ncore] = p, core[ncore] = k, ncore++;
        dup = 0;
        for (int i = 0; i < npkg && !dup; i++)
            dup = seen_pkg[i] == p;
        if (!dup)
            seen_pkg[npkg++] = p;
    }
    if (pk)
        *pk = npkg;
    return ncore;
}

void ms_topology_print(FILE *f, const char *prefix)
{
    static unsigned char online[MAXCPU], allowed[MAXCPU], sib[MAXCPU];
    char model[256], vendor[64], family[32], mdl[32], mhz[64], flags[8192], list[512];
    cpuinfo("model name", model, sizeof model);
    cpuinfo("vendor_id", vendor, sizeof vendor);
    cpuinfo("cpu family", family, sizeof family);
    cpuinfo("model", mdl, sizeof mdl);
    cpuinfo("cpu MHz", mhz, sizeof mhz);
    cpuinfo("flags", flags, sizeof flags);
    int hyper = strstr(flags, " hypervisor") != NULL;
    fprintf(f, "%smachine: %s (%s, family %s, model %s), nominal %s MHz, hypervisor: %s\n",
            prefix, model[0] ? model : "unknown CPU", vendor, family, mdl, mhz[0] ? mhz : "?",
            hyper ? "yes (a VM: where its vCPUs sit on the host's cores is not visible here)"
                  : "no");
    int non = read_cpulist("/sys/devices/system/cpu/online", online);
    if (non <= 0) {
        fprintf(f, "%stopology: /sys/devices/system/cpu/online unreadable\n", prefix);
        return;
    }
    int npkg = 0, ncore = count_cores(online, &npkg), tpc = 0;
    for (int c = 0; c < MAXCPU; c++) {
        if (!online[c])
            continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list",
                 c);
        int s = read_cpulist(path, sib);
        tpc = s > tpc ? s : tpc;
    }
    cpulist_text(online, list, sizeof list);
    fprintf(f, "%stopology: %d CPUs online (%s): %d package%s, %d physical core%s, %d thread%s "
            "per core (/sys/devices/system/cpu/cpu*/topology)\n",
            prefix, non, list, npkg, npkg == 1 ? "" : "s", ncore, ncore == 1 ? "" : "s", tpc,
            tpc == 1 ? "" : "s");
    cpu_set_t cs;
    int nallowed = 0, acore = 0;
    if (sched_getaffinity(0, sizeof cs, &cs) == 0) {
        for (int c = 0; c < MAXCPU && c < CPU_SETSIZE; c++)
            allowed[c] = CPU_ISSET(c, &cs) && online[c], nallowed += allowed[c];
        acore = count_cores(allowed, NULL);
        cpulist_text(allowed, list, sizeof list);
        fprintf(f, "%saffinity: this process may run on CPUs %s: %d physical core%s\n", prefix,
                list, acore, acore == 1 ? "" : "s");
    }
    fprintf(f, "milscreen-topology online=%d packages=%d cores=%d threads_per_core=%d "
            "allowed=%d allowed_cores=%d hypervisor=%d\n",
            non, npkg, ncore, tpc, nallowed, acore, hyper);
}

double ms_load_average(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1;
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}
