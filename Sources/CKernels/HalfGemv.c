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

// MARK: - Prefill tiles with AVX-512 (two tokens per zmm)
//
// y[t, r] for many tokens keeps each output's canonical chain by giving each token its own
// 256-bit half: a zmm holds tokens 2p (low half) and 2p + 1 (high half) of the same eight
// positions, the eight weights of a row are broadcast to both halves, and one 16-lane FMA
// advances two chains by one step each. The halves are summed canonically at the end, then the
// scalar tail, in order. So results equal the AVX2 and Swift paths bit for bit, at twice the
// multiply-adds per instruction. The activations are first packed pair by pair
// (`pm_pack_token_pairs`) so that one aligned-or-not 64-byte load feeds a pair.

#define PM_HG_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

/// Eight weights at element `i` of `row` widened to float in both halves: bf16 (kind 0), f16 (1), f32 (2).
PM_HG_AVX512 __attribute__((always_inline)) static inline __m512 pm_hg_load8x2(int kind, const void *row, int i) {
    if (kind == 2) return _mm512_broadcast_f32x8(_mm256_loadu_ps((const float *)row + i));
    const __m256i h = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)row + i)));
    if (kind == 0) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

PM_HG_AVX512 static inline float pm_hg_load1k(int kind, const void *row, int i) {
    if (kind == 2) return ((const float *)row)[i];
    return pm_hg_load1(kind, (const uint16_t *)row + i);
}

size_t pm_token_pairs_floats(int tokens, int n) { return (size_t)((tokens + 1) / 2) * (size_t)(n / 8) * 16; }

void pm_pack_token_pairs(const float *x, int tokens, int n, float *xp) {
    const int n8 = n / 8;
    for (int p = 0; p < (tokens + 1) / 2; p++) {
        for (int h = 0; h < 2; h++) {
            const int t = 2 * p + h;
            for (int j = 0; j < n8; j++) {
                float *o = xp + ((size_t)p * (size_t)n8 + (size_t)j) * 16 + 8 * h;
                if (t < tokens) {
                    memcpy(o, x + (size_t)t * (size_t)n + 8 * (size_t)j, 32);
                } else {
                    memset(o, 0, 32);
                }
            }
        }
    }
}

/// `R` rows (`rb` bytes apart) × `P` token pairs (`P` ≤ 4) starting at pair `p0`; only tokens
/// below `tokens` are stored, token t's row r to `y[t * ldy + r]`.
PM_HG_AVX512 __attribute__((always_inline)) static inline void pm_hg_tile512(int kind, int R, int P, const uint8_t *w, size_t rb,
                                                                            const float *x, const float *xp, int p0, int tokens,
                                                                            int n, float *y, size_t ldy) {
    const int n8 = n & ~7;
    const size_t ps = (size_t)(n / 8) * 16;  // floats per packed pair
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int p = 0; p < P; p++) acc[r][p] = _mm512_setzero_ps();
    const float *xpp = xp + (size_t)p0 * ps;
    for (int i = 0; i < n8; i += 8) {
        __m512 xv[4];
        for (int p = 0; p < P; p++) xv[p] = _mm512_loadu_ps(xpp + (size_t)p * ps + 2 * (size_t)i);
        for (int r = 0; r < R; r++) {
            const __m512 wv = pm_hg_load8x2(kind, w + (size_t)r * rb, i);
            for (int p = 0; p < P; p++) acc[r][p] = _mm512_fmadd_ps(xv[p], wv, acc[r][p]);
        }
    }
    for (int r = 0; r < R; r++) {
        const uint8_t *row = w + (size_t)r * rb;
        for (int p = 0; p < P; p++) {
            for (int h = 0; h < 2; h++) {
                const int t = 2 * (p0 + p) + h;
                if (t >= tokens) break;
                const __m256 half = h == 0 ? _mm512_castps512_ps256(acc[r][p]) : _mm512_extractf32x8_ps(acc[r][p], 1);
                float s = pm_hg_hsum(half);
                const float *xt = x + (size_t)t * (size_t)n;
                for (int j = n8; j < n; j++) s = fmaf(xt[j], pm_hg_load1k(kind, row, j), s);
                y[(size_t)t * ldy + (size_t)r] = s;
            }
        }
    }
}

/// `pm_hg_tile512` with the pair count `P` (1 to 4) made a constant for each case.
PM_HG_AVX512 __attribute__((always_inline)) static inline void pm_hg_tile512_pairs(int kind, int R, int P, const uint8_t *w, size_t rb,
                                                                                  const float *x, const float *xp, int p0,
                                                                                  int tokens, int n, float *y, size_t ldy) {
    switch (P) {
    case 4: pm_hg_tile512(kind, R, 4, w, rb, x, xp, p0, tokens, n, y, ldy); break;
    case 3: pm_hg_tile512(kind, R, 3, w, rb, x, xp, p0, tokens, n, y, ldy); break;
    case 2: pm_hg_tile512(kind, R, 2, w, rb, x, xp, p0, tokens, n, y, ldy); break;
    default: pm_hg_tile512(kind, R, 1, w, rb, x, xp, p0, tokens, n, y, ldy); break;
    }
}

/// All `tokens` × `rows`: four pairs (eight tokens) at a time over every row, four rows per tile.
PM_HG_AVX512 __attribute__((always_inline)) static inline void pm_hg_gemm512(int kind, const uint8_t *w, size_t rb, int rows,
                                                                            const float *x, const float *xp, int tokens, int n,
                                                                            float *y, size_t ldy) {
    const int pairs = (tokens + 1) / 2;
    for (int p = 0; p < pairs; p += 4) {
        const int P = pairs - p < 4 ? pairs - p : 4;
        int r = 0;
        for (; r + 4 <= rows; r += 4) pm_hg_tile512_pairs(kind, 4, P, w + (size_t)r * rb, rb, x, xp, p, tokens, n, y + r, ldy);
        for (; r < rows; r++) pm_hg_tile512_pairs(kind, 1, P, w + (size_t)r * rb, rb, x, xp, p, tokens, n, y + r, ldy);
    }
}

#define PM_HG_GEMM512(NAME, KIND)                                                                               \
    PM_HG_AVX512 static void NAME(const uint8_t *w, size_t rb, int rows, const float *x, const float *xp, int tokens, int n, \
                                  float *y, size_t ldy) {                                                        \
        pm_hg_gemm512(KIND, w, rb, rows, x, xp, tokens, n, y, ldy);                                             \
    }
PM_HG_GEMM512(pm_hg_gemm512_bf16, 0)
PM_HG_GEMM512(pm_hg_gemm512_f16, 1)
PM_HG_GEMM512(pm_hg_gemm512_f32, 2)

int pm_gemm_tiles_avx512(int kind, const void *w, size_t row_bytes, int rows, const float *x, const float *xp, int tokens,
                         int n, float *y, size_t ldy) {
    if (!pm_tiles_avx512_supported() || kind < 0 || kind > 2 || rows <= 0 || tokens <= 0 || n < 0) return 0;
    const uint8_t *wp = (const uint8_t *)w;
    switch (kind) {
    case 0: pm_hg_gemm512_bf16(wp, row_bytes, rows, x, xp, tokens, n, y, ldy); break;
    case 1: pm_hg_gemm512_f16(wp, row_bytes, rows, x, xp, tokens, n, y, ldy); break;
    default: pm_hg_gemm512_f32(wp, row_bytes, rows, x, xp, tokens, n, y, ldy); break;
    }
    return 1;
}

#else

int pm_gemv_half(int kind, const void *w, size_t row_stride, int rows, const float *x, int n, float *y) {
    (void)kind, (void)w, (void)row_stride, (void)rows, (void)x, (void)n, (void)y;
    return 0;
}

size_t pm_token_pairs_floats(int tokens, int n) { return (size_t)((tokens + 1) / 2) * (size_t)(n / 8) * 16; }

void pm_pack_token_pairs(const float *x, int tokens, int n, float *xp) { (void)x, (void)tokens, (void)n, (void)xp; }

int pm_gemm_tiles_avx512(int kind, const void *w, size_t row_bytes, int rows, const float *x, const float *xp, int tokens,
                         int n, float *y, size_t ldy) {
    (void)kind, (void)w, (void)row_bytes, (void)rows, (void)x, (void)xp, (void)tokens, (void)n, (void)y, (void)ldy;
    return 0;
}

#endif
