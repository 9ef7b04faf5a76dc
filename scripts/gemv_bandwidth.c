// Bandwidth of the engine's bf16/f16 decode kernel (Sources/CKernels/HalfGemv.c) run alone, outside
// the engine: 1 MiB matrices of 512 rows x 1024 columns (the bench model's expert gate/up shape),
// one after another, each thread taking every other matrix, over a buffer of the given size.
// Compare its GB/s with `premoe bench --profile` (the same kernel inside the engine) and with
// ../shared/tools/membw.c (what the machine reads) to see whether a decode gap is the kernel's or
// the engine's. Reference tool only; not built by SwiftPM.
//
// Build: clang -O2 -march=native -pthread -I Sources/CKernels/include scripts/gemv_bandwidth.c -o /tmp/gemv_bandwidth
// Usage: /tmp/gemv_bandwidth [MiB=1024] [memory=file|anon|huge] [threads=2] [kind=bf16|f16] [reps=5]
//   file: a temporary file in /tmp, mapped read-only and populated (page cache, 4 KiB pages);
//   anon: anonymous 4 KiB pages (MADV_NOHUGEPAGE); huge: anonymous, MADV_HUGEPAGE.
// A buffer under 512 MiB is read several times per repetition (in-cache sizes measure the kernel's
// arithmetic, not DRAM). Prints the best repetition's GB/s and a checksum of the outputs (so that
// nothing is optimised away).
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../Sources/CKernels/HalfGemv.c"

// HalfGemv.c asks QuantDot.c whether the CPU has AVX2; this tool answers for itself.
int pm_isa_supported(int isa) { return isa == PM_ISA_AVX2 && __builtin_cpu_supports("avx2"); }

enum { ROWS = 512, COLS = 1024 };
static const size_t matrix_bytes = (size_t)ROWS * COLS * 2;

static const uint8_t *weights;
static size_t matrices;
static int kind, threads;
/// Passes over the buffer per repetition: enough for 512 MiB of reads, so that starting a
/// thread costs nothing next to a pass over an in-cache buffer.
static size_t passes = 1;
static float x[COLS];
static float y[2][ROWS];

static void *run(void *arg) {
    const long t = (long)arg;
    for (size_t p = 0; p < passes; p++)
        for (size_t m = (size_t)t; m < matrices; m += (size_t)threads)
            pm_gemv_half(kind, weights + m * matrix_bytes, COLS, ROWS, x, COLS, y[t]);
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const uint8_t *map_buffer(size_t bytes, const char *memory) {
    if (strcmp(memory, "file") == 0) {
        char path[] = "/tmp/gemv_bandwidth.XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0) { perror("mkstemp"); exit(1); }
        unlink(path);
        uint8_t block[1 << 16];
        for (size_t i = 0; i < sizeof block; i++) block[i] = (uint8_t)(i * 131 + 7) & 0x3f;  // small finite values
        for (size_t done = 0; done < bytes; done += sizeof block)
            if (write(fd, block, sizeof block) != (ssize_t)sizeof block) { perror("write"); exit(1); }
        void *p = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) { perror("mmap"); exit(1); }
        close(fd);
        return p;
    }
    const size_t huge = 2u << 20;
    uint8_t *raw = mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) { perror("mmap"); exit(1); }
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
    madvise(p, bytes, strcmp(memory, "huge") == 0 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(p, 0x3f, bytes);
    return p;
}

int main(int argc, char **argv) {
    const size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 1024;
    const char *memory = argc > 2 ? argv[2] : "file";
    threads = argc > 3 ? atoi(argv[3]) : 2;
    kind = argc > 4 && strcmp(argv[4], "f16") == 0 ? 1 : 0;
    const int reps = argc > 5 ? atoi(argv[5]) : 5;
    if (threads < 1 || threads > 2 || reps < 1 || mib < 1) {
        fprintf(stderr, "usage: %s [MiB] [file|anon|huge] [threads 1|2] [bf16|f16] [reps]\n", argv[0]);
        return 2;
    }
    matrices = (mib << 20) / matrix_bytes;
    if (matrices == 0) matrices = 1;
    weights = map_buffer(matrices * matrix_bytes, memory);
    passes = ((size_t)512 << 20) / (matrices * matrix_bytes);
    if (passes == 0) passes = 1;
    for (int i = 0; i < COLS; i++) x[i] = 0.001f * (float)i;

    double best = 0;
    for (int r = 0; r < reps; r++) {
        pthread_t worker;
        const double start = now();
        if (threads == 2) pthread_create(&worker, NULL, run, (void *)1);
        run((void *)0);
        if (threads == 2) pthread_join(worker, NULL);
        const double gbps = (double)(passes * matrices * matrix_bytes) / (now() - start) / 1e9;
        if (gbps > best) best = gbps;
    }
    double checksum = 0;
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < ROWS; i++) checksum += y[t][i];
    printf("%s %s, %zu MiB, %d thread(s): %.2f GB/s (best of %d; checksum %g)\n", kind ? "f16" : "bf16", memory,
           matrices * matrix_bytes >> 20, threads, best, reps, checksum);
    return 0;
}
