// Matrix × vector for bf16 and f16 weight rows (decode), AVX2+FMA+F16C, straight from storage.
//
// Each output element follows the summation order contract of Sources/Kernels/SIMDSupport.swift
// bit for bit: one 8-lane FMA chain `acc = fma(x[i..<i+8], w[i..<i+8], acc)` from zero over the
// whole multiples of 8, the canonical horizontal sum (halves, quarters, last pair), then a scalar
// FMA tail in order. So these rows equal the Swift GEMV and the prefill tiles exactly, whichever
// path, batch or thread split computes them.
//
// Why C: the Swift version (vpmovzxwd + vpslld per vector through SIMD8) measured 0.78× llama.cpp
// on bf16 decode; here four rows share each activation load, the widen is one shift of a
// zero-extended load, and the four rows are far apart (see `PM_HG_STREAMS`).

#include "CKernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define PM_HG_AVX2 __attribute__((target("avx2,fma,f16c")))

PM_HG_AVX2 static inline float pm_hg_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// Eight weights at `p` widened to float: bf16 (kind 0) by a 16-bit shift, f16 (kind 1) by vcvtph2ps.
PM_HG_AVX2 __attribute__((always_inline)) static inline __m256 pm_hg_load8(int kind, const uint16_t *p) {
    const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    if (kind == 0) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

PM_HG_AVX2 static inline float pm_hg_load1(int kind, const uint16_t *p) {
    if (kind == 0) {
        const uint32_t bits = (uint32_t)*p << 16;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    return _cvtsh_ss(*p);
}

/// Horizontal sum and in-order scalar tail of one row's chain.
PM_HG_AVX2 __attribute__((always_inline)) static inline float pm_hg_finish(int kind, __m256 acc, const uint16_t *w,
                                                                          const float *x, int i, int n) {
    float s = pm_hg_hsum(acc);
    for (; i < n; i++) s = fmaf(x[i], pm_hg_load1(kind, w + i), s);
    return s;
}

/// `R` rows (`R` ≤ 8) starting at `w`, `stride` elements apart, row k's result to `y[k * ys]`.
PM_HG_AVX2 __attribute__((always_inline)) static inline void pm_hg_rows(int kind, int R, const uint16_t *w, size_t stride,
                                                                       const float *x, int n, float *y, size_t ys) {
    __m256 acc[8];
    for (int k = 0; k < R; k++) acc[k] = _mm256_setzero_ps();
    const int n8 = n & ~7;
    int i = 0;
    for (; i < n8; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        for (int k = 0; k < R; k++) acc[k] = _mm256_fmadd_ps(xv, pm_hg_load8(kind, w + k * stride + i), acc[k]);
    }
    for (int k = 0; k < R; k++) y[k * ys] = pm_hg_finish(kind, acc[k], w + k * stride, x, n8, n);
}

/// Rows are read as `PM_HG_STREAMS` sequential streams, one per equal share of the rows (rows
/// i, i + q, i + 2q, i + 3q together): four sequential streams per thread keep more lines in
/// flight than the hardware prefetcher does for one stream, or for eight neighbouring 1-2 KiB
/// rows. Bench model, 2-core Zen 3, `premoe bench` on the BF16 GGUF: decode 1.5-1.6x the
/// eight-neighbouring-rows kernel (two, three, six and eight streams measured slower than four;
/// software prefetch of each stream's next row slower than none).
#define PM_HG_STREAMS 4

PM_HG_AVX2 __attribute__((always_inline)) static inline void pm_hg_gemv(int kind, const uint16_t *w, size_t stride, int rows,
                                                                       const float *x, int n, float *y) {
    const int q = rows / PM_HG_STREAMS;
    for (int i = 0; i < q; i++)
        pm_hg_rows(kind, PM_HG_STREAMS, w + (size_t)i * stride, stride * (size_t)q, x, n, y + i, (size_t)q);
    for (int r = PM_HG_STREAMS * q; r < rows; r++) pm_hg_rows(kind, 1, w + (size_t)r * stride, stride, x, n, y + r, 1);
}

PM_HG_AVX2 static void pm_hg_gemv_bf16(const uint16_t *w, size_t s, int rows, const float *x, int n, float *y) {
    pm_hg_gemv(0, w, s, rows, x, n, y);
}

PM_HG_AVX2 static void pm_hg_gemv_f16(const uint16_t *w, size_t s, int rows, const float *x, int n, float *y) {
    pm_hg_gemv(1, w, s, rows, x, n, y);
}

int pm_gemv_half(int kind, const void *w, size_t row_stride, int rows, const float *x, int n, float *y) {
    if (!pm_isa_supported(PM_ISA_AVX2) || (kind != 0 && kind != 1) || rows <= 0 || n < 0) return 0;
    if (kind == 0) {
        pm_hg_gemv_bf16((const uint16_t *)w, row_stride, rows, x, n, y);
    } else {
        pm_hg_gemv_f16((const uint16_t *)w, row_stride, rows, x, n, y);
    }
    return 1;
}

#else

int pm_gemv_half(int kind, const void *w, size_t row_stride, int rows, const float *x, int n, float *y) {
    (void)kind, (void)w, (void)row_stride, (void)rows, (void)x, (void)n, (void)y;
    return 0;
}

#endif
