// Quantized weight rows · 8-bit activations, the way ggml's `ggml_vec_dot_*_q8_*` compute them:
// the activation row is quantized once per call (blocks of 32 for Q4_0/Q4_1/Q8_0, 256 with
// 16-value sums for K-quants), then each block's integer dot product is exact in 32-bit
// integers and scaled once by d_w · d_x in float.
//
// Three builds of every kernel live in this one file: plain C (any CPU), AVX2+FMA+F16C, and
// AVX-512 (F/BW/VL/DQ + VNNI), the SIMD ones through `target` attributes so the
// file compiles for baseline x86-64 and one binary picks its path at run time (`pm_isa_best`,
// `__builtin_cpu_supports`). The AVX-512 kernels give the AVX2 kernels' results bit for bit.
// On AVX2 every format takes four tokens per row in prefill. Q4_0, Q4_1 and Q4_K also
// have an interleaved layout (eight rows block by block, one lane per row, one contiguous stream;
// "Interleaved rows" below) that the engine copies the weights into on first use; eight rows read
// in place as eight streams had measured 2x faster in cache but 25-30% slower from memory.
// Block layouts: see Sources/Kernels/Quantized.swift.

#include "CKernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define PM_X86 1
#include <immintrin.h>
#define PM_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

// MARK: - Blocks

/// Activations for 32-value weight blocks (Q8_1 in ggml, with a float scale).
typedef struct {
    float d;
    float s;  // d · Σ q: what the block offsets (Q4_1's m, Q4_0's -8) multiply
    int8_t q[32];
} pm_q8;

/// Activations for 256-value K-quant blocks (ggml's Q8_K).
typedef struct {
    float d;
    int16_t bsums[16];
    int8_t q[256];
} pm_q8k;

_Static_assert(sizeof(pm_q8) == 40, "pm_q8 layout");
_Static_assert(sizeof(pm_q8k) == 292, "pm_q8k layout");

static inline uint16_t pm_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/// IEEE half to float, exact (subnormals, inf and NaN included).
static inline float pm_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF, bits;
    if (e == 0) {
        if (m == 0) {
            bits = sign;
        } else {
            e = 113;
            while (!(m & 0x400)) {
                m <<= 1;
                e--;
            }
            bits = sign | (e << 23) | ((m & 0x3FF) << 13);
        }
    } else if (e == 31) {
        bits = sign | 0x7F800000u | (m << 13);
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// The eight 6-bit scales and mins of a Q4_K/Q5_K block (ggml's `utmp` unpacking).
static inline void pm_scales_k4(const uint8_t *packed, uint8_t sc[8], uint8_t mn[8]) {
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    uint32_t u[4];
    memcpy(u, packed, 12);
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t aux = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = aux;
    u[0] &= k1;
    memcpy(sc, u, 8);
    memcpy(mn, u + 2, 8);
}

/// Whether `format` is a 256-value K-quant (Q4_K, Q5_K, Q6_K).
static inline int pm_is_k(int format) { return format == PM_Q4_K || format == PM_Q5_K || format == PM_Q6_K; }

static inline int pm_block_size(int format) { return pm_is_k(format) ? 256 : 32; }

size_t pm_activation_bytes(int format, int n) {
    return pm_is_k(format) ? (size_t)(n / 256) * sizeof(pm_q8k) : (size_t)(n / 32) * sizeof(pm_q8);
}

/// Bytes of one block of a group of eight interleaved rows; 0 for a format not interleaved.
static inline size_t pm_x8_block_bytes(int format) {
    switch (format) {
    case PM_Q4_0: return 8 * 18;
    case PM_Q4_1: return 8 * 20;
    case PM_Q4_K: return 8 * 144;
    default: return 0;
    }
}

// MARK: - Scalar kernels (any CPU; also the integer definition the SIMD ones must match)

static void quantize_scalar(int format, const float *x, int n, uint8_t *out) {
    const int bs = pm_block_size(format);
    for (int b = 0; b < n / bs; b++) {
        const float *v = x + b * bs;
        float amax = 0;
        for (int j = 0; j < bs; j++) amax = fmaxf(amax, fabsf(v[j]));
        const float d = amax / 127;
        const float id = d != 0 ? 1 / d : 0;
        int8_t *q;
        if (pm_is_k(format)) {
            pm_q8k *blk = (pm_q8k *)(void *)out + b;
            blk->d = d;
            q = blk->q;
            for (int j = 0; j < 256; j++) q[j] = (int8_t)nearbyintf(v[j] * id);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += q[g * 16 + j];
                blk->bsums[g] = (int16_t)s;
            }
        } else {
            pm_q8 *blk = (pm_q8 *)(void *)out + b;
            int s = 0;
            for (int j = 0; j < 32; j++) {
                blk->q[j] = (int8_t)nearbyintf(v[j] * id);
                s += blk->q[j];
            }
            blk->d = d;
            blk->s = d * (float)s;
        }
    }
}

static float dot_q4_0_scalar(const uint8_t *row, const uint8_t *xq, int nb) {
    const pm_q8 *x = (const pm_q8 *)(const void *)xq;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 18 * b;
        int s = 0;
        for (int j = 0; j < 16; j++) {
            s += ((blk[2 + j] & 0xF) - 8) * x[b].q[j] + ((blk[2 + j] >> 4) - 8) * x[b].q[j + 16];
        }
        acc += pm_half(pm_u16(blk)) * x[b].d * (float)s;
    }
    return acc;
}

static float dot_q4_1_scalar(const uint8_t *row, const uint8_t *xq, int nb) {
    const pm_q8 *x = (const pm_q8 *)(const void *)xq;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 20 * b;
        int s = 0;
        for (int j = 0; j < 16; j++) s += (blk[4 + j] & 0xF) * x[b].q[j] + (blk[4 + j] >> 4) * x[b].q[j + 16];
        acc += pm_half(pm_u16(blk)) * x[b].d * (float)s + pm_half(pm_u16(blk + 2)) * x[b].s;
    }
    return acc;
}

static float dot_q8_0_scalar(const uint8_t *row, const uint8_t *xq, int nb) {
    const pm_q8 *x = (const pm_q8 *)(const void *)xq;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 34 * b;
        int s = 0;
        for (int j = 0; j < 32; j++) s += (int8_t)blk[2 + j] * x[b].q[j];
        acc += pm_half(pm_u16(blk)) * x[b].d * (float)s;
    }
    return acc;
}

/// The 32 five-bit codes of a Q5_0/Q5_1 block: low nibbles of `qs` are values 0..15, high
/// nibbles 16..31, bit j of the little-endian `qh` is value j's fifth bit.
static inline void pm_codes_q5(const uint8_t *qh, const uint8_t *qs, int c[32]) {
    uint32_t h;
    memcpy(&h, qh, 4);
    for (int j = 0; j < 16; j++) {
        c[j] = (qs[j] & 0xF) | (int)((h >> j) & 1) << 4;
        c[j + 16] = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
    }
}

static float dot_q5_0_scalar(const uint8_t *row, const uint8_t *xq, int nb) {
    const pm_q8 *x = (const pm_q8 *)(const void *)xq;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 22 * b;
        int c[32], s = 0;
        pm_codes_q5(blk + 2, blk + 6, c);
        for (int j = 0; j < 32; j++) s += (c[j] - 16) * x[b].q[j];
        acc += pm_half(pm_u16(blk)) * x[b].d * (float)s;
    }
    return acc;
}

static float dot_q5_1_scalar(const uint8_t *row, const uint8_t *xq, int nb) {
    const pm_q8 *x = (const pm_q8 *)(const void *)xq;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 24 * b;
        int c[32], s = 0;
        pm_codes_q5(blk + 4, blk + 8, c);
        for (int j = 0; j < 32; j++) s += c[j] * x[b].q[j];
        acc += pm_half(pm_u16(blk)) * x[b].d * (float)s + pm_half(pm_u16(blk + 2)) * x[b].s;
    }
    return acc;
}

/// Q4_K (fifth = 0) and Q5_K (fifth = 1).
static inline float dot_q45_k_scalar(const uint8_t *row, const uint8_t *xq, int nb, int fifth) {
    const pm_q8k *x = (const pm_q8k *)(const void *)xq;
    const size_t bb = fifth ? 176 : 144;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + bb * b;
        uint8_t sc[8], mn[8];
        pm_scales_k4(blk + 4, sc, mn);
        const uint8_t *qs = blk + (fifth ? 48 : 16), *qh = blk + 16;
        const int8_t *q8 = x[b].q;
        int sumi = 0, summ = 0;
        for (int j = 0; j < 4; j++) {
            int lo = 0, hi = 0;
            for (int l = 0; l < 32; l++) {
                int a = qs[32 * j + l] & 0xF, c = qs[32 * j + l] >> 4;
                if (fifth) {
                    a += ((qh[l] >> (2 * j)) & 1) << 4;
                    c += ((qh[l] >> (2 * j + 1)) & 1) << 4;
                }
                lo += a * q8[64 * j + l];
                hi += c * q8[64 * j + 32 + l];
            }
            sumi += sc[2 * j] * lo + sc[2 * j + 1] * hi;
        }
        for (int j = 0; j < 8; j++) summ += mn[j] * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        acc += x[b].d * (pm_half(pm_u16(blk)) * (float)sumi - pm_half(pm_u16(blk + 2)) * (float)summ);
    }
    return acc;
}

static float dot_q4_k_scalar(const uint8_t *row, const uint8_t *xq, int nb) { return dot_q45_k_scalar(row, xq, nb, 0); }
static float dot_q5_k_scalar(const uint8_t *row, const uint8_t *xq, int nb) { return dot_q45_k_scalar(row, xq, nb, 1); }

static float dot_q6_k_scalar(const uint8_t *row, const uint8_t *xq, int nb) {
    const pm_q8k *x = (const pm_q8k *)(const void *)xq;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 210 * b;
        const int8_t *sc = (const int8_t *)blk + 192;
        int sumi = 0;
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = blk + 64 * half, *qh = blk + 128 + 32 * half;
            const int8_t *q8 = x[b].q + 128 * half, *s = sc + 8 * half;
            int part[8] = {0};
            for (int l = 0; l < 32; l++) {
                const int g = l / 16;
                part[g] += (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32) * q8[l];
                part[2 + g] += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * q8[l + 32];
                part[4 + g] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * q8[l + 64];
                part[6 + g] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * q8[l + 96];
            }
            for (int k = 0; k < 8; k++) sumi += s[k] * part[k];
        }
        acc += x[b].d * pm_half(pm_u16(blk + 208)) * (float)sumi;
    }
    return acc;
}

// MARK: - AVX2 kernels

#ifdef PM_X86

PM_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

PM_AVX2 static inline float half_avx2(const uint8_t *p) { return _cvtsh_ss(pm_u16(p)); }

/// 16 bytes of packed nibbles → 32 bytes: low nibbles (values 0..15), then high (16..31).
PM_AVX2 static inline __m256i nibbles32(const uint8_t *p) {
    const __m128i t = _mm_loadu_si128((const __m128i *)(const void *)p);
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/// Σ over 4-byte groups of unsigned u[i] · signed s[i], as eight int32 lanes.
PM_AVX2 static inline __m256i dot_u8s8_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/// Eight floats (already scaled by 1/d) rounded to nearest-even int32.
PM_AVX2 static inline __m256i round8(const float *v, __m256 id) {
    return _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/// 32 values quantized with `id` into `q`; returns their integer sum.
PM_AVX2 static inline int quantize32_avx2(const float *v, float id, int8_t *q) {
    const __m256 idv = _mm256_set1_ps(id);
    __m256i i0 = round8(v, idv), i1 = round8(v + 8, idv), i2 = round8(v + 16, idv), i3 = round8(v + 24, idv);
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_hadd_epi32(s4, s4);
    s4 = _mm_hadd_epi32(s4, s4);
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(void *)q, i0);
    return _mm_cvtsi128_si32(s4);
}

PM_AVX2 static inline float absmax_avx2(const float *v, int count) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < count; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + j)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

PM_AVX2 static void quantize_avx2(int format, const float *x, int n, uint8_t *out) {
    if (pm_is_k(format)) {
        for (int b = 0; b < n / 256; b++) {
            const float *v = x + b * 256;
            pm_q8k *blk = (pm_q8k *)(void *)out + b;
            const float d = absmax_avx2(v, 256) / 127;
            const float id = d != 0 ? 1 / d : 0;
            blk->d = d;
            for (int j = 0; j < 8; j++) quantize32_avx2(v + 32 * j, id, blk->q + 32 * j);
            for (int g = 0; g < 16; g++) {
                // 16 int8 → int16, horizontal sum
                __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(blk->q + 16 * g)));
                __m128i s = _mm_add_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
                s = _mm_hadd_epi16(s, s);
                s = _mm_hadd_epi16(s, s);
                s = _mm_hadd_epi16(s, s);
                blk->bsums[g] = (int16_t)_mm_extract_epi16(s, 0);
            }
        }
    } else {
        for (int b = 0; b < n / 32; b++) {
            const float *v = x + b * 32;
            pm_q8 *blk = (pm_q8 *)(void *)out + b;
            const float d = absmax_avx2(v, 32) / 127;
            const float id = d != 0 ? 1 / d : 0;
            const int s = quantize32_avx2(v, id, blk->q);
            blk->d = d;
            blk->s = d * (float)s;
        }
    }
}

PM_AVX2 static inline __m256i dot_s8s8_avx2(__m256i w, __m256i x) {
    return dot_u8s8_avx2(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

/// The fifth bits of a Q5_0/Q5_1 block as 32 bytes in value order: 0x10 where bit j of the
/// little-endian `qh` is set.
PM_AVX2 static inline __m256i pm_fifth_bits(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                               _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

/// A 32-value block's codes as 32 bytes (`kind`: 0 Q4_0, 1 Q4_1, 2 Q8_0, 3 Q5_0, 4 Q5_1; the
/// codes of all but Q8_0 are unsigned) and their dot product with 32 activation bytes, as eight
/// int32 lanes.
PM_AVX2 __attribute__((always_inline)) static inline __m256i pm_unpack_q32(int kind, const uint8_t *blk) {
    switch (kind) {
    case 2: return _mm256_loadu_si256((const __m256i *)(const void *)(blk + 2));
    case 3: return _mm256_or_si256(nibbles32(blk + 6), pm_fifth_bits(blk + 2));
    case 4: return _mm256_or_si256(nibbles32(blk + 8), pm_fifth_bits(blk + 4));
    default: return nibbles32(blk + (kind == 0 ? 2 : 4));
    }
}

/// Bytes of a block of kind `kind` (see `pm_unpack_q32`).
static inline size_t pm_q32_bytes(int kind) {
    static const size_t bytes[5] = {18, 20, 34, 22, 24};
    return bytes[kind];
}

/// Whether a kind's block offset is `m` (Q4_1, Q5_1) rather than a multiple of `d` (Q4_0: -8d,
/// Q5_0: -16d; Q8_0 has none).
static inline int pm_q32_has_min(int kind) { return kind == 1 || kind == 4; }

/// A row's result from its scaled integer sum and its summed block offsets (Q8_0 has none).
static inline float pm_q32_finish(int kind, float sum, float off) {
    return kind == 0 ? sum - 8 * off : kind == 3 ? sum - 16 * off : kind == 2 ? sum : sum + off;
}

PM_AVX2 __attribute__((always_inline)) static inline __m256i pm_dot_q32(int kind, __m256i w, __m256i x) {
    return kind == 2 ? dot_s8s8_avx2(w, x) : dot_u8s8_avx2(w, x);
}

/// Decode (one token) reads a matrix as this many sequential streams side by side, one per equal
/// share of its rows (rows i, i + q, i + 2q, i + 3q together, q = rows / 4): more cache lines in
/// flight than the hardware prefetcher keeps for one stream. Bench model, 2-core Zen 3: Q8_0 and
/// Q4_0 weights alone 1.2-1.3x the GB/s of row after row, decode 1.06-1.10x. Not for the K-quants:
/// their four-row Q4_K/Q6_K kernels (a block of each row in turn) measured 0.88x in decode.
#define PM_DECODE_STREAMS 4

/// The end of `q32_avx2` (and of `q32_avx512`): the odd last block, if any (`b` = nb - 1), into the
/// even accumulators `a0`, then each (row, token)'s result from both accumulators and its offsets.
PM_AVX2 __attribute__((always_inline)) static inline void q32_tail_avx2(int kind, int R, int T, const uint8_t *row, size_t rs,
                                                                       const pm_q8 *const x[4], int b, int nb, __m256 *a0,
                                                                       const __m256 *a1, float *off, float *y, size_t yr,
                                                                       size_t yt) {
    const size_t bb = pm_q32_bytes(kind);
    for (; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *p0 = row + (size_t)r * rs + bb * b;
            const float d0 = half_avx2(p0), m0 = pm_q32_has_min(kind) ? half_avx2(p0 + 2) : d0;
            const __m256i w0 = pm_unpack_q32(kind, p0);
            for (int k = 0; k < T; k++) {
                const int i = r * T + k;
                const __m256i s0 = pm_dot_q32(kind, w0, _mm256_loadu_si256((const __m256i *)(const void *)x[k][b].q));
                a0[i] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * x[k][b].d), _mm256_cvtepi32_ps(s0), a0[i]);
                if (kind != 2) off[i] += m0 * x[k][b].s;
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int k = 0; k < T; k++) {
            const int i = r * T + k;
            y[(size_t)r * yr + (size_t)k * yt] = pm_q32_finish(kind, hsum256(_mm256_add_ps(a0[i], a1[i])), off[i]);
        }
    }
}

/// `R` rows (`rs` bytes apart) of a 32-value format against `T` tokens (`xs` bytes apart),
/// R·T ≤ 4: one row and four tokens in prefill (each weight block unpacked once, met by four
/// activation rows), four rows and one token in decode (four streams, see `PM_DECODE_STREAMS`),
/// or one of each. Row r and token k's result goes to `y[r * yr + k * yt]`. Every (row, token)
/// pair runs the same operations in the same order (even and odd blocks in two accumulators,
/// offsets summed in pairs), so a result depends neither on its batch nor on the rows beside it.
/// `kind` as in `pm_unpack_q32`.
PM_AVX2 __attribute__((always_inline)) static inline void q32_avx2(int kind, int R, int T, const uint8_t *row, size_t rs,
                                                                  const uint8_t *xq, size_t xs, int nb, float *y, size_t yr,
                                                                  size_t yt) {
    const size_t bb = pm_q32_bytes(kind);
    const pm_q8 *x[4];
    for (int k = 0; k < T; k++) x[k] = (const pm_q8 *)(const void *)(xq + (size_t)k * xs);
    __m256 a0[4], a1[4];
    float off[4] = {0, 0, 0, 0};
    for (int i = 0; i < R * T; i++) a0[i] = a1[i] = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        for (int r = 0; r < R; r++) {
            const uint8_t *p0 = row + (size_t)r * rs + bb * b, *p1 = p0 + bb;
            const float d0 = half_avx2(p0), d1 = half_avx2(p1);
            const float m0 = pm_q32_has_min(kind) ? half_avx2(p0 + 2) : d0, m1 = pm_q32_has_min(kind) ? half_avx2(p1 + 2) : d1;
            const __m256i w0 = pm_unpack_q32(kind, p0), w1 = pm_unpack_q32(kind, p1);
            for (int k = 0; k < T; k++) {
                const int i = r * T + k;
                const __m256i s0 = pm_dot_q32(kind, w0, _mm256_loadu_si256((const __m256i *)(const void *)x[k][b].q));
                const __m256i s1 = pm_dot_q32(kind, w1, _mm256_loadu_si256((const __m256i *)(const void *)x[k][b + 1].q));
                a0[i] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * x[k][b].d), _mm256_cvtepi32_ps(s0), a0[i]);
                a1[i] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * x[k][b + 1].d), _mm256_cvtepi32_ps(s1), a1[i]);
                if (kind != 2) off[i] += m0 * x[k][b].s + m1 * x[k][b + 1].s;
            }
        }
    }
    q32_tail_avx2(kind, R, T, row, rs, x, b, nb, a0, a1, off, y, yr, yt);
}

/// Σ over a Q4_K/Q5_K block's eight sub-blocks of min × (sum of the sub-block's 32 activations),
/// `mins` the eight mins as int16.
PM_AVX2 __attribute__((always_inline)) static inline int pm_q45k_mins(const int16_t *bsums, __m128i mins) {
    const __m128i bs = _mm_loadu_si128((const __m128i *)(const void *)bsums);
    const __m128i bs2 = _mm_loadu_si128((const __m128i *)(const void *)(bsums + 8));
    __m128i prod = _mm_madd_epi16(_mm_hadd_epi16(bs, bs2), mins);
    prod = _mm_hadd_epi32(prod, prod);
    prod = _mm_hadd_epi32(prod, prod);
    return _mm_cvtsi128_si32(prod);
}

/// `T` tokens (1 in decode, 4 in prefill) against one Q4_K (fifth = 0) or Q5_K (fifth = 1) row:
/// each block's scales and codes are unpacked once and meet the T activation rows (`xs` bytes
/// apart). Per token the integer sums are exact and the float operations the same whatever T,
/// so a token's result does not depend on the batch it is in.
PM_AVX2 __attribute__((always_inline)) static inline void dotn_q45_k_avx2(const uint8_t *row, const uint8_t *xq, size_t xs,
                                                                         int nb, float out[4], int fifth, int T) {
    const size_t bb = fifth ? 176 : 144;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const pm_q8k *x[4];
    for (int k = 0; k < T; k++) x[k] = (const pm_q8k *)(const void *)(xq + (size_t)k * xs);
    __m256 acc[4];
    float accm[4] = {0, 0, 0, 0};
    for (int k = 0; k < T; k++) acc[k] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + bb * b;
        uint8_t sc[8], mn[8];
        pm_scales_k4(blk + 4, sc, mn);
        const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)mn));
        // The eight scales as 16-bit values in both halves; sub-block j's is picked by one byte shuffle.
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)sc)));
        const float d = half_avx2(blk), dmin = half_avx2(blk + 2);
        const uint8_t *qs = blk + (fifth ? 48 : 16);
        __m256i hb = fifth ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16)) : _mm256_setzero_si256();
        __m256i sumi[4];
        for (int k = 0; k < T; k++) sumi[k] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * j));
            __m256i lo = _mm256_and_si256(bits, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (fifth) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
                hb = _mm256_srli_epi16(hb, 2);
            }
            const __m256i sl = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(((4 * j + 1) << 8) | (4 * j))));
            const __m256i sh = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(((4 * j + 3) << 8) | (4 * j + 2))));
            for (int k = 0; k < T; k++) {
                const int8_t *q8 = x[k][b].q;
                const __m256i pl = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 64 * j))), sl);
                const __m256i ph = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 64 * j + 32))), sh);
                sumi[k] = _mm256_add_epi32(sumi[k], _mm256_add_epi32(pl, ph));
            }
        }
        for (int k = 0; k < T; k++) {
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(x[k][b].d * d), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
            accm[k] += x[k][b].d * dmin * (float)pm_q45k_mins(x[k][b].bsums, mins);
        }
    }
    for (int k = 0; k < T; k++) out[k] = hsum256(acc[k]) - accm[k];
}

/// One K-quant format's row kernels of one instruction set around its `dotn_<KERNEL>_<ISA>`
/// (`...` its arguments before the token count, after `nb` and `out`): `dot4_<FORMAT>_<ISA>`,
/// four activation rows `xs` bytes apart (prefill), and `dot_<FORMAT>_<ISA>`, one (decode).
#define PM_K_ROW_DOTS(FORMAT, KERNEL, ISA, ATTR, ...)                                                           \
    ATTR static inline void dot4_##FORMAT##_##ISA(const uint8_t *r, const uint8_t *x, size_t xs, int nb, float o[4]) { \
        dotn_##KERNEL##_##ISA(r, x, xs, nb, o, __VA_ARGS__ 4);                                                  \
    }                                                                                                           \
    ATTR static inline float dot_##FORMAT##_##ISA(const uint8_t *row, const uint8_t *xq, int nb) {              \
        float o[4];                                                                                             \
        dotn_##KERNEL##_##ISA(row, xq, 0, nb, o, __VA_ARGS__ 1);                                                \
        return o[0];                                                                                            \
    }

PM_K_ROW_DOTS(q4_k, q45_k, avx2, PM_AVX2, 0, )
PM_K_ROW_DOTS(q5_k, q45_k, avx2, PM_AVX2, 1, )

/// A Q6_K block's integer sums start from -32 · Σ_k scale_k · Σ q8 over group k (the -32 offset
/// of every code, done once), in lane 0; `scw` holds the 16 scales as int16.
PM_AVX2 __attribute__((always_inline)) static inline __m256i pm_q6k_offset(const int16_t *bsums, __m256i scw) {
    const __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)bsums), scw);
    __m128i o = _mm_add_epi32(_mm256_castsi256_si128(off), _mm256_extracti128_si256(off, 1));
    o = _mm_hadd_epi32(o, o);
    o = _mm_hadd_epi32(o, o);
    return _mm256_setr_epi32(-32 * _mm_cvtsi128_si32(o), 0, 0, 0, 0, 0, 0, 0);
}

/// `T` tokens (1 in decode, 4 in prefill) against one Q6_K row: each block's codes and scales
/// are unpacked once and meet the T activation rows (`xs` bytes apart). Per token the integer
/// sums are exact and the float operations the same whatever T (batch-independent results).
PM_AVX2 __attribute__((always_inline)) static inline void dotn_q6_k_avx2(const uint8_t *row, const uint8_t *xq, size_t xs,
                                                                        int nb, float out[4], int T) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    const pm_q8k *x[4];
    __m256 acc[4];
    for (int k = 0; k < T; k++) {
        x[k] = (const pm_q8k *)(const void *)(xq + (size_t)k * xs);
        acc[k] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 210 * b;
        const int8_t *sc = (const int8_t *)blk + 192;
        const __m256i scw = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)sc));
        __m256i sumi[4];
        for (int t = 0; t < T; t++) sumi[t] = pm_q6k_offset(x[t][b].bsums, scw);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
            const int8_t *s = sc + 8 * h;
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
            const __m256i b2 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
            const __m256i bh = _mm256_loadu_si256((const __m256i *)(const void *)qh);
            __m256i v[4], scale[4];
            v[0] = _mm256_or_si256(_mm256_and_si256(b1, m4), _mm256_slli_epi16(_mm256_and_si256(bh, m2), 4));
            v[1] = _mm256_or_si256(_mm256_and_si256(b2, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m2), 4));
            v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m2), 4));
            v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                scale[k] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(s[2 * k])), _mm_set1_epi16(s[2 * k + 1]), 1);
            }
            for (int t = 0; t < T; t++) {
                const int8_t *q8 = x[t][b].q + 128 * h;
                for (int k = 0; k < 4; k++) {
                    const __m256i p = _mm256_maddubs_epi16(v[k], _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 32 * k)));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scale[k]));
                }
            }
        }
        const float d = half_avx2(blk + 208);
        for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(x[t][b].d * d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
    for (int t = 0; t < T; t++) out[t] = hsum256(acc[t]);
}

PM_K_ROW_DOTS(q6_k, q6_k, avx2, PM_AVX2)

// MARK: - Interleaved rows (AVX2)
//
// Groups of eight rows stored block by block: block b of the group holds the eight rows' scales
// (halves: d[8], then m[8] for Q4_1), then their codes in 32-byte chunks, chunk c holding bytes
// 4c..4c+3 of each row's codes, row i at offset 4i. One 32-byte load then carries four codes of
// each of the eight rows, one broadcast of four activation bytes meets all eight, and the int32
// lane i of `vpmaddwd` ends up holding row i's sum: no horizontal sums, one contiguous stream per
// group. Same bytes per block as the plain layout (8 × 18, 8 × 20, 8 × 144 for Q4_K, whose
// layout is described at its kernel). Q8_0 has none: an interleaved Q8_0 kernel (|w| · sign(x, w)
// per 4-byte lane) was faster in cache but measured 0.81-0.85x the plain rows in end-to-end
// decode of the Q8_0 bench model (shared 2-core Zen 3, interleaved A/B runs). Block sizes:
// `pm_x8_block_bytes` (with the plain-C helpers above, as the packing needs it on every CPU).

/// One-token passes over Q4_K groups (and the groups left over from four streams, see
/// `PM_DECODE_STREAMS`) go one group after another: the bytes of a block, `PM_X8_PREFETCH_BYTES`
/// ahead, are prefetched as the block is read. Measured single-threaded from memory on Zen 3 (shared
/// machine): Q8_0 11.9 GB/s against 9.7 with the whole next group prefetched at once and 10.9
/// for the plain rows; Q4_0 12.0 against 9.1 and 7.2 (2048 and 4096 bytes ahead were slower).
#define PM_X8_PREFETCH_BYTES 1024
static inline void pm_x8_prefetch(const uint8_t *blk, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(blk + PM_X8_PREFETCH_BYTES + o, 0, 0);
}

/// One interleaved Q4_0/Q4_1/Q8_0 block's float steps for a token: `f` the eight rows' integer
/// sums, `d` their scales, `blk` the rows' block (Q4_1's mins follow the scales), `xb` the
/// token's block. Shared by the AVX2 and AVX-512 kernels, whose integer sums are the same.
PM_AVX2 __attribute__((always_inline)) static inline __m256 pm_x8_block_accumulate(__m256 acc, __m256 f, __m256 d, const uint8_t *blk,
                                                                                  int format, const pm_q8 *xb) {
    if (format == PM_Q4_0) {
        // d_w · (d_x · Σ n·q − 8 · d_x · Σ q)
        const __m256 t = _mm256_fmsub_ps(f, _mm256_set1_ps(xb->d), _mm256_set1_ps(8 * xb->s));
        return _mm256_fmadd_ps(t, d, acc);
    }
    acc = _mm256_fmadd_ps(_mm256_mul_ps(f, _mm256_set1_ps(xb->d)), d, acc);
    if (format == PM_Q4_1) {
        const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16)));
        acc = _mm256_fmadd_ps(m, _mm256_set1_ps(xb->s), acc);
    }
    return acc;
}

/// `G` groups of eight interleaved rows (`gs` bytes apart) of `nb` blocks against `T` tokens,
/// G·T ≤ 4 (constants after inlining): one group and up to four tokens in prefill, four groups and
/// one token in decode (four streams, see `PM_DECODE_STREAMS`). Group r and token k's eight
/// results go to `y + r * ys + k * ldy`. Per (group, token) the integer sums are exact and the
/// float operations the same whatever G and T, so a result depends neither on its batch nor on
/// the groups beside it. One group and one token prefetches ahead (`pm_x8_prefetch`).
PM_AVX2 __attribute__((always_inline)) static inline void gemm_x8_avx2(int format, int G, int T, const uint8_t *g, size_t gs,
                                                                      const uint8_t *xq, size_t xs, int nb, float *y,
                                                                      size_t ys, size_t ldy) {
    const size_t gb = pm_x8_block_bytes(format);
    const size_t codes = format == PM_Q4_1 ? 32 : 16;
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const pm_q8 *x[4];
    __m256 acc[4];
    for (int k = 0; k < T; k++) x[k] = (const pm_q8 *)(const void *)(xq + (size_t)k * xs);
    for (int i = 0; i < G * T; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        if (G == 1 && T == 1) pm_x8_prefetch(g + gb * (size_t)b, gb);
        __m256i s[4];
        for (int i = 0; i < G * T; i++) s[i] = _mm256_setzero_si256();
        // Nibbles (0..15) × int8 (|q| ≤ 127): a pair is at most 3810, eight pairs summed in int16
        // at most 30480, so the int16 sums are exact and widened once per block.
        for (int c = 0; c < 4; c++) {
            for (int r = 0; r < G; r++) {
                const uint8_t *qs = g + (size_t)r * gs + gb * (size_t)b + codes;
                const __m256i w = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * c));
                const __m256i lo = _mm256_and_si256(w, m4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                for (int k = 0; k < T; k++) {
                    const int i = r * T + k;
                    int32_t ql, qh;
                    memcpy(&ql, x[k][b].q + 4 * c, 4);
                    memcpy(&qh, x[k][b].q + 16 + 4 * c, 4);
                    s[i] = _mm256_add_epi16(s[i], _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(ql)),
                                                                   _mm256_maddubs_epi16(hi, _mm256_set1_epi32(qh))));
                }
            }
        }
        for (int r = 0; r < G; r++) {
            const uint8_t *blk = g + (size_t)r * gs + gb * (size_t)b;
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)blk));
            for (int k = 0; k < T; k++) {
                const int i = r * T + k;
                const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s[i], ones));
                acc[i] = pm_x8_block_accumulate(acc[i], f, d, blk, format, &x[k][b]);
            }
        }
    }
    for (int r = 0; r < G; r++)
        for (int k = 0; k < T; k++) _mm256_storeu_ps(y + (size_t)r * ys + (size_t)k * ldy, acc[r * T + k]);
}

/// A Q4_K interleaved block's sub-block scales, as int32 lanes (one per row) holding the scale
/// in both 16-bit halves (`vpmaddwd` against a row's int16 pair sums), and its mins in pairs,
/// lane i holding row i's (min 2p, min 2p + 1) as int16.
PM_AVX2 __attribute__((always_inline)) static inline void pm_q4k_x8_scales(const uint8_t *blk, __m256i scale[8], __m256i minp[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(0x3F), m3 = _mm256_set1_epi8(0x03);
    // scales and mins as bytes [j][row]
    uint8_t sc[64], mn[64];
    const __m256i s0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 32));
    const __m256i s1 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64));
    const __m256i hi = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 96));
    _mm256_storeu_si256((__m256i *)(void *)sc, _mm256_and_si256(s0, m6));
    _mm256_storeu_si256((__m256i *)(void *)(sc + 32), _mm256_and_si256(s1, m6));
    // byte 8(j/2)+i of `hi`: low nibble j even, high nibble j odd. Split into [j][row] order.
    const __m256i hlo = _mm256_and_si256(hi, m4), hhi = _mm256_and_si256(_mm256_srli_epi16(hi, 4), m4);
    // interleave 8-byte groups: j even from hlo, j odd from hhi
    const __m256i e0 = _mm256_unpacklo_epi64(hlo, hhi), e1 = _mm256_unpackhi_epi64(hlo, hhi);
    // e0 = [hlo q0, hhi q0 | hlo q2, hhi q2], e1 = [hlo q1, hhi q1 | hlo q3, hhi q3] (q = 8-byte group)
    const __m256i j0 = _mm256_permute2x128_si256(e0, e1, 0x20), j1 = _mm256_permute2x128_si256(e0, e1, 0x31);
    const __m256i low0 = _mm256_and_si256(_mm256_srli_epi16(s0, 6), m3), low1 = _mm256_and_si256(_mm256_srli_epi16(s1, 6), m3);
    _mm256_storeu_si256((__m256i *)(void *)mn, _mm256_or_si256(low0, _mm256_slli_epi16(j0, 2)));
    _mm256_storeu_si256((__m256i *)(void *)(mn + 32), _mm256_or_si256(low1, _mm256_slli_epi16(j1, 2)));
    for (int j = 0; j < 8; j++) {
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(sc + 8 * j)));
        scale[j] = _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
    }
    for (int p = 0; p < 4; p++) {
        const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(mn + 16 * p)));
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(mn + 16 * p + 8)));
        minp[p] = _mm256_or_si256(a, _mm256_slli_epi32(c, 16));
    }
}

/// Pair p's mins term of one token (`bs`: its block's 16-value sums): Σ over the pair's two
/// sub-blocks of min × (sum of the sub-block's activations), per row.
PM_AVX2 __attribute__((always_inline)) static inline __m256i pm_q4k_x8_mins(const int16_t *bsums, __m256i minp, int p) {
    const int16_t *bs = bsums + 4 * p;
    const int32_t pair = (int32_t)(uint16_t)(int16_t)(bs[0] + bs[1]) | ((int32_t)(int16_t)(bs[2] + bs[3]) << 16);
    return _mm256_madd_epi16(minp, _mm256_set1_epi32(pair));
}

/// A block's scaled sums into a token's eight row accumulators.
PM_AVX2 __attribute__((always_inline)) static inline __m256 pm_q4k_x8_accumulate(__m256 acc, __m256i s32, __m256i m32, __m256 d,
                                                                                __m256 dmin, float dx) {
    const __m256 dxv = _mm256_set1_ps(dx);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(d, dxv), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m32), _mm256_mul_ps(dmin, dxv), acc);
}

/// Q4_K interleaved (`gemm_x8_q4_k_<isa>`, below): per group of eight rows and block of 256 values, 1152 bytes (8 × 144):
/// d[8], dmin[8] (halves, 32 B); 64 bytes of sub-block scales and mins, byte 8j+i for row i's
/// sub-block j holding its 6-bit scale in bits 0–5 and bits 0–1 of its min in bits 6–7; 32 bytes
/// of the mins' bits 2–5, nibble (low for even j, high for odd) of byte 8(j/2)+i; then the codes,
/// 256 bytes per pair of sub-blocks p (0..3): 32-byte chunk c holding bytes 4c..4c+3 of each
/// row's 32 code bytes of the pair (low nibbles sub-block 2p, high 2p+1), row i at offset 4i.
/// This is the AVX2 part: one pair of sub-blocks (p) of a block, `codes` its 256 bytes: each
/// token's sums of the pair's low and high nibbles times its bytes in int16 (`vpmaddubsw`), each
/// times its sub-block's scale into int32 (`vpmaddwd`), added to the token's `s32`.
PM_AVX2 __attribute__((always_inline)) static inline void pm_q4k_x8_pair_avx2(const uint8_t *codes, const pm_q8k *const *x, int b,
                                                                             int p, int T, const __m256i *scale, __m256i *s32) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i lo16[4], hi16[4];
    for (int k = 0; k < T; k++) lo16[k] = hi16[k] = _mm256_setzero_si256();
    for (int c = 0; c < 8; c++) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(const void *)(codes + 32 * c));
        const __m256i lo = _mm256_and_si256(w, m4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
        for (int k = 0; k < T; k++) {
            int32_t ql, qh;
            memcpy(&ql, x[k][b].q + 64 * p + 4 * c, 4);
            memcpy(&qh, x[k][b].q + 64 * p + 32 + 4 * c, 4);
            lo16[k] = _mm256_add_epi16(lo16[k], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(ql)));
            hi16[k] = _mm256_add_epi16(hi16[k], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(qh)));
        }
    }
    for (int k = 0; k < T; k++) {
        s32[k] = _mm256_add_epi32(s32[k], _mm256_add_epi32(_mm256_madd_epi16(lo16[k], scale[0]),
                                                           _mm256_madd_epi16(hi16[k], scale[1])));
    }
}

/// The Q4_K interleaved kernel of one instruction set `ISA` (`ATTR` its target attribute) around
/// its pair function `pm_q4k_x8_pair_<ISA>`: T (≤ 4) tokens against one group of eight rows,
/// `nb` blocks; scales, mins and the float steps are shared, so both give the same results.
#define PM_Q4K_X8_GEMM(ISA, ATTR)                                                                               \
    ATTR __attribute__((always_inline)) static inline void gemm_x8_q4_k_##ISA(const uint8_t *g, const uint8_t *xq, \
                                                                             size_t xs, int nb, int T, float *y,   \
                                                                             size_t ldy) {                         \
        const pm_q8k *x[4];                                                                                     \
        __m256 acc[4];                                                                                          \
        for (int k = 0; k < T; k++) {                                                                           \
            x[k] = (const pm_q8k *)(const void *)(xq + (size_t)k * xs);                                         \
            acc[k] = _mm256_setzero_ps();                                                                       \
        }                                                                                                       \
        for (int b = 0; b < nb; b++) {                                                                          \
            const uint8_t *blk = g + 1152 * (size_t)b;                                                          \
            if (T == 1) pm_x8_prefetch(blk, 1152);                                                              \
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)blk));              \
            const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16)));    \
            __m256i scale[8], minp[4];                                                                          \
            pm_q4k_x8_scales(blk, scale, minp);                                                                 \
            __m256i s32[4], m32[4];                                                                             \
            for (int k = 0; k < T; k++) s32[k] = m32[k] = _mm256_setzero_si256();                               \
            for (int p = 0; p < 4; p++) {                                                                       \
                pm_q4k_x8_pair_##ISA(blk + 128 + 256 * p, x, b, p, T, scale + 2 * p, s32);                      \
                for (int k = 0; k < T; k++) m32[k] = _mm256_add_epi32(m32[k], pm_q4k_x8_mins(x[k][b].bsums, minp[p], p)); \
            }                                                                                                   \
            for (int k = 0; k < T; k++) acc[k] = pm_q4k_x8_accumulate(acc[k], s32[k], m32[k], d, dmin, x[k][b].d); \
        }                                                                                                       \
        for (int k = 0; k < T; k++) _mm256_storeu_ps(y + (size_t)k * ldy, acc[k]);                              \
    }

PM_Q4K_X8_GEMM(avx2, PM_AVX2)

// MARK: - AVX-512 VNNI kernels
//
// Compiled for every x86-64 build through a `target` attribute and run only where the CPU reports
// AVX-512 F/BW/VL/DQ and VNNI (`pm_isa_supported`). Each zmm holds what two AVX2 registers held:
// two 32-value blocks (low half: the AVX2 kernel's even-block accumulator, high half: the odd
// one), two 32-byte chunks of an interleaved block, or two K-quant sub-blocks; `vpdpbusd` forms
// the same exact int32 sums of four byte products as `vpmaddubsw` + `vpmaddwd`, and the halves
// are added where the AVX2 kernel adds its registers' lanes. So every float operation, and its
// order, is the AVX2 kernel's: the two instruction sets give bit-identical results (tested).
// One thread on Zen 5 against the AVX2 kernels: prefill tiles 1.35-1.45x in cache; decode from
// memory Q6_K 1.5x, Q4_K/Q5_K plain rows 1.2-1.3x, the others within 10% (bandwidth-bound).

#define PM_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/// Two blocks' codes (the bytes of `pm_unpack_q32`) side by side, block `p0` in the low half: each
/// block's 16 code bytes broadcast to two 16-byte lanes, the second lane shifted by a nibble, and
/// Q5_0/Q5_1's fifth bits set straight from their 64 bits as a byte mask (`vmovdqu8` with zeroing).
PM_AVX512 __attribute__((always_inline)) static inline __m512i pm_unpack2_q32(int kind, const uint8_t *p0, const uint8_t *p1) {
    if (kind == 2) {
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(p0 + 2))),
                                  _mm256_loadu_si256((const __m256i *)(const void *)(p1 + 2)), 1);
    }
    const size_t qs = kind == 0 ? 2 : kind == 1 ? 4 : kind == 3 ? 6 : 8;
    const __m512i both = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p0 + qs)))),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p1 + qs))), 1);
    const __m512i nibble = _mm512_set_epi64(0x0004000400040004LL, 0x0004000400040004LL, 0, 0, 0x0004000400040004LL,
                                            0x0004000400040004LL, 0, 0);
    __m512i w = _mm512_and_si512(_mm512_srlv_epi16(both, nibble), _mm512_set1_epi8(0x0F));
    if (kind == 3 || kind == 4) {
        uint32_t h0, h1;
        memcpy(&h0, p0 + qs - 4, 4);
        memcpy(&h1, p1 + qs - 4, 4);
        w = _mm512_or_si512(w, _mm512_maskz_mov_epi8(((uint64_t)h1 << 32) | h0, _mm512_set1_epi8(0x10)));
    }
    return w;
}

/// Σ over 4-byte groups of codes `w` × activations `x` as 16 int32 lanes: unsigned codes directly,
/// Q8_0's signed ones as |w| × (x with w's sign), as `dot_s8s8_avx2` does.
PM_AVX512 __attribute__((always_inline)) static inline __m512i pm_dot2_q32(int kind, __m512i w, __m512i x) {
    if (kind != 2) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x);
    const __mmask64 neg = _mm512_movepi8_mask(w);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x));
}

/// `q32_avx2` with two blocks per zmm (even block low, odd block high); the odd last block, if
/// any, goes through the low half alone. Same results, bit for bit. With 32 registers R·T may
/// reach 8 (two rows × four tokens in prefill).
PM_AVX512 __attribute__((always_inline)) static inline void q32_avx512(int kind, int R, int T, const uint8_t *row, size_t rs,
                                                                      const uint8_t *xq, size_t xs, int nb, float *y, size_t yr,
                                                                      size_t yt) {
    const size_t bb = pm_q32_bytes(kind);
    const pm_q8 *x[4];
    for (int k = 0; k < T; k++) x[k] = (const pm_q8 *)(const void *)(xq + (size_t)k * xs);
    __m512 acc[8];
    float off[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m512i xv[4];
        for (int k = 0; k < T; k++)
            xv[k] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)x[k][b].q)),
                                       _mm256_loadu_si256((const __m256i *)(const void *)x[k][b + 1].q), 1);
        for (int r = 0; r < R; r++) {
            const uint8_t *p0 = row + (size_t)r * rs + bb * b, *p1 = p0 + bb;
            const float d0 = half_avx2(p0), d1 = half_avx2(p1);
            const float m0 = pm_q32_has_min(kind) ? half_avx2(p0 + 2) : d0, m1 = pm_q32_has_min(kind) ? half_avx2(p1 + 2) : d1;
            const __m512i w = pm_unpack2_q32(kind, p0, p1);
            for (int k = 0; k < T; k++) {
                const int i = r * T + k;
                const __m512 scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0 * x[k][b].d), _mm512_set1_ps(d1 * x[k][b + 1].d));
                acc[i] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(pm_dot2_q32(kind, w, xv[k])), acc[i]);
                if (kind != 2) off[i] += m0 * x[k][b].s + m1 * x[k][b + 1].s;
            }
        }
    }
    __m256 a0[8], a1[8];
    for (int i = 0; i < R * T; i++) {
        a0[i] = _mm512_castps512_ps256(acc[i]);
        a1[i] = _mm512_extractf32x8_ps(acc[i], 1);
    }
    q32_tail_avx2(kind, R, T, row, rs, x, b, nb, a0, a1, off, y, yr, yt);
}

/// The `vpermd` index that broadcasts int32 lane 2c (four activation bytes of interleaved chunk
/// 2c) to the low half and lane 2c + 1 to the high half: chunks 2c and 2c + 1 side by side.
PM_AVX512 __attribute__((always_inline)) static inline __m512i pm_pick_pair(int c) {
    return _mm512_inserti64x4(_mm512_set1_epi32(2 * c), _mm256_set1_epi32(2 * c + 1), 1);
}

/// `gemm_x8_avx2` with the integer sums in zmm: chunks c and c + 1 of a block side by side, each
/// row's four-byte products summed by `vpdpbusd` in the int32 lane of its row, the two halves
/// added at the end of the block: the same exact sums, then the same float operations. Same
/// results, bit for bit.
PM_AVX512 __attribute__((always_inline)) static inline void gemm_x8_avx512(int format, int G, int T, const uint8_t *g, size_t gs,
                                                                          const uint8_t *xq, size_t xs, int nb, float *y,
                                                                          size_t ys, size_t ldy) {
    const size_t gb = pm_x8_block_bytes(format);
    const size_t codes = format == PM_Q4_1 ? 32 : 16;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const pm_q8 *x[4];
    __m256 acc[4];
    for (int k = 0; k < T; k++) x[k] = (const pm_q8 *)(const void *)(xq + (size_t)k * xs);
    for (int i = 0; i < G * T; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        if (G == 1 && T == 1) pm_x8_prefetch(g + gb * (size_t)b, gb);
        __m512i xv[4][4];
        for (int k = 0; k < T; k++) {
            const __m512i q = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)x[k][b].q));
            // chunk pairs (0, 1) and (2, 3) of the low nibbles' bytes 0-15, then of the high ones' 16-31
            for (int h = 0; h < 4; h++) xv[k][h] = _mm512_permutexvar_epi32(pm_pick_pair(h), q);
        }
        __m512i s[4];
        for (int i = 0; i < G * T; i++) s[i] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            for (int r = 0; r < G; r++) {
                const uint8_t *qs = g + (size_t)r * gs + gb * (size_t)b + codes;
                const __m512i w = _mm512_loadu_si512((const void *)(qs + 64 * h));
                const __m512i lo = _mm512_and_si512(w, m4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
                for (int k = 0; k < T; k++) {
                    const int i = r * T + k;
                    s[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s[i], lo, xv[k][h]), hi, xv[k][2 + h]);
                }
            }
        }
        for (int r = 0; r < G; r++) {
            const uint8_t *blk = g + (size_t)r * gs + gb * (size_t)b;
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)blk));
            for (int k = 0; k < T; k++) {
                const int i = r * T + k;
                const __m256 f = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm512_castsi512_si256(s[i]), _mm512_extracti64x4_epi64(s[i], 1)));
                acc[i] = pm_x8_block_accumulate(acc[i], f, d, blk, format, &x[k][b]);
            }
        }
    }
    for (int r = 0; r < G; r++)
        for (int k = 0; k < T; k++) _mm256_storeu_ps(y + (size_t)r * ys + (size_t)k * ldy, acc[r * T + k]);
}

/// `pm_q4k_x8_pair_avx2` in zmm: chunks c and c + 1 side by side, `vpdpbusd` summing a row's
/// four-byte products in its int32 lane, the halves added at the end of the pair; a sub-block's
/// sum times its scale is then the same integer `vpmaddwd` forms from the AVX2 kernel's int16
/// sums. Same results, bit for bit.
PM_AVX512 __attribute__((always_inline)) static inline void pm_q4k_x8_pair_avx512(const uint8_t *codes, const pm_q8k *const *x,
                                                                                 int b, int p, int T, const __m256i *scale,
                                                                                 __m256i *s32) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m256i low16 = _mm256_set1_epi32(0xFFFF);
    __m512i lo32[4], hi32[4];
    for (int k = 0; k < T; k++) lo32[k] = hi32[k] = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        const __m512i w = _mm512_loadu_si512((const void *)(codes + 64 * c));
        const __m512i lo = _mm512_and_si512(w, m4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
        for (int k = 0; k < T; k++) {
            const int8_t *q8 = x[k][b].q + 64 * p;
            const __m512i ql = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)q8));
            const __m512i qh = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(q8 + 32)));
            lo32[k] = _mm512_dpbusd_epi32(lo32[k], lo, _mm512_permutexvar_epi32(pm_pick_pair(c), ql));
            hi32[k] = _mm512_dpbusd_epi32(hi32[k], hi, _mm512_permutexvar_epi32(pm_pick_pair(c), qh));
        }
    }
    const __m256i sl = _mm256_and_si256(scale[0], low16), sh = _mm256_and_si256(scale[1], low16);
    for (int k = 0; k < T; k++) {
        const __m256i l = _mm256_add_epi32(_mm512_castsi512_si256(lo32[k]), _mm512_extracti64x4_epi64(lo32[k], 1));
        const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(hi32[k]), _mm512_extracti64x4_epi64(hi32[k], 1));
        s32[k] = _mm256_add_epi32(s32[k], _mm256_add_epi32(_mm256_mullo_epi32(l, sl), _mm256_mullo_epi32(h, sh)));
    }
}

PM_Q4K_X8_GEMM(avx512, PM_AVX512)

/// `dotn_q45_k_avx2` with a pair of sub-blocks per zmm (low nibbles of 32 code bytes in the low
/// half, high nibbles in the high half, each half with its sub-block's scale): the int32 lanes of
/// the two halves add to the AVX2 kernel's lanes of the same positions, so the block sums are the
/// same integers and the float operations the same. Same results, bit for bit.
PM_AVX512 __attribute__((always_inline)) static inline void dotn_q45_k_avx512(const uint8_t *row, const uint8_t *xq, size_t xs,
                                                                             int nb, float out[4], int fifth, int T) {
    const size_t bb = fifth ? 176 : 144;
    const __m512i m4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
    const __m512i nibble = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(4), 1);  // low half bits 0-3, high 4-7
    const __m512i fifthShift = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(1), 1);
    const pm_q8k *x[4];
    for (int k = 0; k < T; k++) x[k] = (const pm_q8k *)(const void *)(xq + (size_t)k * xs);
    __m256 acc[4];
    float accm[4] = {0, 0, 0, 0};
    for (int k = 0; k < T; k++) acc[k] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + bb * b;
        uint8_t sc[8], mn[8];
        pm_scales_k4(blk + 4, sc, mn);
        const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)mn));
        const __m512i scales = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)sc)));
        const float d = half_avx2(blk), dmin = half_avx2(blk + 2);
        const uint8_t *qs = blk + (fifth ? 48 : 16);
        __m512i hb = fifth ? _mm512_srlv_epi16(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 16))), fifthShift)
                           : _mm512_setzero_si512();
        __m512i sumi[4];
        for (int k = 0; k < T; k++) sumi[k] = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            const __m512i bits = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * j)));
            __m512i v = _mm512_and_si512(_mm512_srlv_epi16(bits, nibble), m4);
            if (fifth) {
                v = _mm512_or_si512(v, _mm512_slli_epi16(_mm512_and_si512(hb, one), 4));
                hb = _mm512_srli_epi16(hb, 2);
            }
            // sub-block 2j's scale in the low half, 2j + 1's in the high half
            const __m512i s = _mm512_permutexvar_epi16(
                _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * j)), _mm256_set1_epi16((short)(2 * j + 1)), 1), scales);
            for (int k = 0; k < T; k++) {
                const __m512i p = _mm512_maddubs_epi16(v, _mm512_loadu_si512((const void *)(x[k][b].q + 64 * j)));
                sumi[k] = _mm512_add_epi32(sumi[k], _mm512_madd_epi16(p, s));
            }
        }
        for (int k = 0; k < T; k++) {
            const __m256i s32 = _mm256_add_epi32(_mm512_castsi512_si256(sumi[k]), _mm512_extracti64x4_epi64(sumi[k], 1));
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(x[k][b].d * d), _mm256_cvtepi32_ps(s32), acc[k]);
            accm[k] += x[k][b].d * dmin * (float)pm_q45k_mins(x[k][b].bsums, mins);
        }
    }
    for (int k = 0; k < T; k++) out[k] = hsum256(acc[k]) - accm[k];
}

PM_K_ROW_DOTS(q4_k, q45_k, avx512, PM_AVX512, 0, )
PM_K_ROW_DOTS(q5_k, q45_k, avx512, PM_AVX512, 1, )

/// `dotn_q6_k_avx2` with two 32-code chunks per zmm (chunks k and k + 1 of a half block side by
/// side, each 16-byte lane with its own scale): every int32 lane of the two zmm halves adds to the
/// AVX2 kernel's lane of the same position, so the block sums are the same integers and the
/// float operations the same. Same results, bit for bit.
PM_AVX512 __attribute__((always_inline)) static inline void dotn_q6_k_avx512(const uint8_t *row, const uint8_t *xq, size_t xs,
                                                                            int nb, float out[4], int T) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    // 16-bit shifts of the high bits: chunk pair (0, 1) takes bits 0-1 and 2-3, pair (2, 3) bits 4-5 and 6-7
    const __m512i shift01 = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    const __m512i shift23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    // int16 lanes picking scale j of a half block for 16-byte lane j (pair 01) or j + 4 (pair 23)
    const __m512i pick01 = _mm512_set_epi64(0x0003000300030003LL, 0x0003000300030003LL, 0x0002000200020002LL, 0x0002000200020002LL,
                                            0x0001000100010001LL, 0x0001000100010001LL, 0, 0);
    const __m512i pick23 = _mm512_add_epi16(pick01, _mm512_set1_epi16(4));
    const pm_q8k *x[4];
    __m256 acc[4];
    for (int k = 0; k < T; k++) {
        x[k] = (const pm_q8k *)(const void *)(xq + (size_t)k * xs);
        acc[k] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + 210 * b;
        const int8_t *sc = (const int8_t *)blk + 192;
        const __m256i scw = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)sc));
        __m256i sumi[4];
        __m512i wide[4];
        for (int t = 0; t < T; t++) {
            sumi[t] = pm_q6k_offset(x[t][b].bsums, scw);
            wide[t] = _mm512_setzero_si512();
        }
        for (int h = 0; h < 2; h++) {
            const __m512i bits = _mm512_loadu_si512((const void *)(blk + 64 * h));
            const __m512i bh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 128 + 32 * h)));
            const __m512i v01 = _mm512_or_si512(_mm512_and_si512(bits, m4),
                                                _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(bh, shift01), m2), 4));
            const __m512i v23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(bits, 4), m4),
                                                _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(bh, shift23), m2), 4));
            const __m512i s16 = _mm512_castsi128_si512(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)(sc + 8 * h))));
            const __m512i scale01 = _mm512_permutexvar_epi16(pick01, s16), scale23 = _mm512_permutexvar_epi16(pick23, s16);
            for (int t = 0; t < T; t++) {
                const int8_t *q8 = x[t][b].q + 128 * h;
                const __m512i p01 = _mm512_maddubs_epi16(v01, _mm512_loadu_si512((const void *)q8));
                const __m512i p23 = _mm512_maddubs_epi16(v23, _mm512_loadu_si512((const void *)(q8 + 64)));
                wide[t] = _mm512_add_epi32(wide[t], _mm512_add_epi32(_mm512_madd_epi16(p01, scale01), _mm512_madd_epi16(p23, scale23)));
            }
        }
        const float d = half_avx2(blk + 208);
        for (int t = 0; t < T; t++) {
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm512_castsi512_si256(wide[t]), _mm512_extracti64x4_epi64(wide[t], 1)));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(x[t][b].d * d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) out[t] = hsum256(acc[t]);
}

PM_K_ROW_DOTS(q6_k, q6_k, avx512, PM_AVX512)

// MARK: - Interleaved drivers

/// `rows` (a multiple of 8) interleaved rows × `tokens` activation rows of FORMAT with KERNEL
/// (`gemm_x8_avx2` or `gemm_x8_avx512`) and KERNEL_Q4_K: tokens four at a time; one token as
/// `PM_DECODE_STREAMS` streams of groups if STREAMS (not Q4_K, see there), else group after
/// group with prefetch. The AVX2 build streams (Zen 3: Q4_0 decode 1.06-1.10x group after group),
/// the AVX-512 one does not (Zen 5, Q4_0 bench model decode, five interleaved pairs: medians 308
/// tok/s group after group against 263 with four streams).
#define PM_GEMM_X8(NAME, FORMAT, KERNEL, KERNEL_Q4_K, STREAMS, ATTR)                                            \
    ATTR __attribute__((always_inline)) static inline void NAME##_tile(const uint8_t *grp, const uint8_t *xq, size_t xs, \
                                                                       int nb, int T, float *y, size_t ldy) {   \
        if (FORMAT == PM_Q4_K) {                                                                               \
            KERNEL_Q4_K(grp, xq, xs, nb, T, y, ldy);                                                           \
        } else {                                                                                               \
            KERNEL(FORMAT, 1, T, grp, 0, xq, xs, nb, y, 0, ldy);                                               \
        }                                                                                                      \
    }                                                                                                          \
    ATTR static void NAME(const uint8_t *w, int rows, const uint8_t *xq, size_t xs, int tokens, int nb, float *y, \
                          size_t ldy) {                                                                        \
        const size_t group = pm_x8_block_bytes(FORMAT) * (size_t)nb;                                           \
        const size_t groups = (size_t)rows / 8;                                                                \
        size_t g = 0;                                                                                          \
        if (tokens == 1 && FORMAT != PM_Q4_K && STREAMS) { /* decode: four streams of groups */              \
            const size_t q = groups / PM_DECODE_STREAMS;                                                       \
            for (; g < q; g++) KERNEL(FORMAT, 4, 1, w + g * group, q * group, xq, 0, nb, y + 8 * g, 8 * q, 0); \
            g = PM_DECODE_STREAMS * q;                                                                         \
        }                                                                                                      \
        for (; g < groups; g++) {                                                                              \
            const uint8_t *grp = w + g * group;                                                                \
            float *yg = y + 8 * g;                                                                             \
            int t = 0;                                                                                         \
            for (; t + 4 <= tokens; t += 4) NAME##_tile(grp, xq + (size_t)t * xs, xs, nb, 4, yg + (size_t)t * ldy, ldy); \
            switch (tokens - t) {                                                                              \
            case 3: NAME##_tile(grp, xq + (size_t)t * xs, xs, nb, 3, yg + (size_t)t * ldy, ldy); break;        \
            case 2: NAME##_tile(grp, xq + (size_t)t * xs, xs, nb, 2, yg + (size_t)t * ldy, ldy); break;        \
            case 1: NAME##_tile(grp, xq + (size_t)t * xs, xs, nb, 1, yg + (size_t)t * ldy, ldy); break;        \
            default: break;                                                                                    \
            }                                                                                                  \
        }                                                                                                      \
    }

// MARK: - Exact f32 path (AVX2)
//
// f32 activations times the codes widened to f32, in the summation order of
// `QuantizedKernels.dot` (Sources/Kernels/Quantized.swift): per block b an 8-lane chain
// `s = q0·x0; s = fma(q1, x1, s); s = fma(q2, x2, s); s = fma(q3, x3, s)`, then
// `acc = fma(s, d_b, acc)` and `off = fma(m_b, Σx_b, off)`; result `hsum(acc) + off`. Codes are
// small integers, exact in float whichever way they are widened, so every operation is the Swift
// kernel's and the results equal it bit for bit. `R` rows × `T` tokens (R·T ≤ 4), as `q32_avx2`.

/// The block offset m of `QuantizedKernels`' `scaleOffset`: -8d (Q4_0), -16d (Q5_0), m (Q4_1,
/// Q5_1), 0 (Q8_0).
PM_AVX2 static inline float pm_exact_offset(int kind, const uint8_t *blk, float d) {
    switch (kind) {
    case 0: return -8.0f * d;
    case 3: return -16.0f * d;
    case 1: case 4: return half_avx2(blk + 2);
    default: return 0;
    }
}

/// Bytes 8k..8k+7 (k < 4) of `c` widened to int32, as signed or unsigned values.
PM_AVX2 __attribute__((always_inline)) static inline __m256i pm_bytes8_epi32(__m256i c, int k, int is_signed) {
    const __m128i half = k < 2 ? _mm256_castsi256_si128(c) : _mm256_extracti128_si256(c, 1);
    const __m128i eight = (k & 1) ? _mm_srli_si128(half, 8) : half;
    return is_signed ? _mm256_cvtepi8_epi32(eight) : _mm256_cvtepu8_epi32(eight);
}

/// Eight codes (bytes 8k..8k+7 of `pm_unpack_q32`'s 32) as float: signed for Q8_0.
PM_AVX2 __attribute__((always_inline)) static inline __m256 pm_exact_codes8(int kind, __m256i c, int k) {
    return _mm256_cvtepi32_ps(pm_bytes8_epi32(c, k, kind == 2));
}

PM_AVX2 __attribute__((always_inline)) static inline void exact_q32_avx2(int kind, int R, int T, const uint8_t *row, size_t rs,
                                                                        const float *x, size_t xs, const float *sums, size_t ss,
                                                                        int nb, float *y, size_t yr, size_t yt) {
    const size_t bb = pm_q32_bytes(kind);
    __m256 acc[4];
    float off[4] = {0, 0, 0, 0};
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = row + (size_t)r * rs + bb * (size_t)b;
            const float d = half_avx2(blk), m = pm_exact_offset(kind, blk, d);
            const __m256i c = pm_unpack_q32(kind, blk);
            const __m256 q0 = pm_exact_codes8(kind, c, 0), q1 = pm_exact_codes8(kind, c, 1);
            const __m256 q2 = pm_exact_codes8(kind, c, 2), q3 = pm_exact_codes8(kind, c, 3);
            const __m256 dv = _mm256_set1_ps(d);
            for (int t = 0; t < T; t++) {
                const int i = r * T + t;
                const float *xb = x + (size_t)t * xs + 32 * (size_t)b;
                __m256 sv = _mm256_mul_ps(q0, _mm256_loadu_ps(xb));
                sv = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xb + 8), sv);
                sv = _mm256_fmadd_ps(q2, _mm256_loadu_ps(xb + 16), sv);
                sv = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xb + 24), sv);
                acc[i] = _mm256_fmadd_ps(sv, dv, acc[i]);
                off[i] = fmaf(m, sums[(size_t)t * ss + (size_t)b], off[i]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[(size_t)r * yr + (size_t)t * yt] = hsum256(acc[r * T + t]) + off[r * T + t];
}

/// `rows` rows (`rb` bytes apart) × `tokens`: one token reads four streams (`PM_DECODE_STREAMS`),
/// several take four tokens per unpacked block.
PM_AVX2 __attribute__((always_inline)) static inline void exact_q32_matmul_avx2(int kind, const uint8_t *w, size_t rb, int rows,
                                                                               const float *x, size_t xs, const float *sums,
                                                                               size_t ss, int tokens, int nb, float *y, size_t ldy) {
    int r = 0;
    if (tokens == 1) {
        const int q = rows / PM_DECODE_STREAMS;
        for (int i = 0; i < q; i++) exact_q32_avx2(kind, 4, 1, w + (size_t)i * rb, (size_t)q * rb, x, 0, sums, 0, nb, y + i, (size_t)q, 0);
        r = PM_DECODE_STREAMS * q;
    }
    for (; r < rows; r++) {
        const uint8_t *row = w + (size_t)r * rb;
        int t = 0;
        for (; t + 4 <= tokens; t += 4)
            exact_q32_avx2(kind, 1, 4, row, 0, x + (size_t)t * xs, xs, sums + (size_t)t * ss, ss, nb, y + (size_t)t * ldy + r, 0, ldy);
        for (; t < tokens; t++)
            exact_q32_avx2(kind, 1, 1, row, 0, x + (size_t)t * xs, 0, sums + (size_t)t * ss, 0, nb, y + (size_t)t * ldy + r, 0, 0);
    }
}

#define PM_EXACT_Q32(NAME, KIND)                                                                                \
    PM_AVX2 static void exact_##NAME##_avx2(const uint8_t *w, size_t rb, int rows, const float *x, size_t xs,      \
                                            const float *sums, size_t ss, int tokens, int nb, float *y, size_t ldy) { \
        exact_q32_matmul_avx2(KIND, w, rb, rows, x, xs, sums, ss, tokens, nb, y, ldy);                          \
    }
PM_EXACT_Q32(q4_0, 0)
PM_EXACT_Q32(q4_1, 1)
PM_EXACT_Q32(q8_0, 2)
PM_EXACT_Q32(q5_0, 3)
PM_EXACT_Q32(q5_1, 4)

/// One Q4_K/Q5_K (`fifth`) block dequantized into 256 floats as `QuantizedReference.dequantizeBlock`
/// computes them (value = d·scale · code − dmin·min, a multiply then a subtract), bit for bit.
PM_AVX2 static void dequantize_q45_k_avx2(const uint8_t *blk, int fifth, float *y) {
    uint8_t sc[8], mn[8];
    pm_scales_k4(blk + 4, sc, mn);
    const float d = half_avx2(blk), dmin = half_avx2(blk + 2);
    const uint8_t *qs = blk + (fifth ? 48 : 16);
    const __m256i m4 = _mm256_set1_epi8(0x0F), sixteen = _mm256_set1_epi8(16);
    const __m256i hb = fifth ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16)) : _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * j));
        __m256i c[2] = {_mm256_and_si256(bits, m4), _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4)};
        for (int h = 0; h < 2; h++) {
            if (fifth) {
                const __m256i u = _mm256_set1_epi8((char)(1 << (2 * j + h)));
                c[h] = _mm256_add_epi8(c[h], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, u), u), sixteen));
            }
            const __m256 scale = _mm256_set1_ps(d * (float)sc[2 * j + h]), min = _mm256_set1_ps(dmin * (float)mn[2 * j + h]);
            for (int k = 0; k < 4; k++) {
                const __m256 v = _mm256_cvtepi32_ps(pm_bytes8_epi32(c[h], k, 0));
                _mm256_storeu_ps(y + 64 * j + 32 * h + 8 * k, _mm256_sub_ps(_mm256_mul_ps(scale, v), min));
            }
        }
    }
}

/// One Q6_K block dequantized as `QuantizedReference.dequantizeBlock` does ((d·scale)·(code − 32)).
PM_AVX2 static void dequantize_q6_k_avx2(const uint8_t *blk, float *y) {
    const float d = half_avx2(blk + 208);
    const int8_t *sc = (const int8_t *)blk + 192;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03), off = _mm256_set1_epi32(32);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
        const __m256i b2 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
        const __m256i bh = _mm256_loadu_si256((const __m256i *)(const void *)qh);
        __m256i v[4];
        v[0] = _mm256_or_si256(_mm256_and_si256(b1, m4), _mm256_slli_epi16(_mm256_and_si256(bh, m2), 4));
        v[1] = _mm256_or_si256(_mm256_and_si256(b2, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m2), 4));
        v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m2), 4));
        v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m2), 4));
        for (int q = 0; q < 4; q++) {
            for (int k = 0; k < 4; k++) {
                // values 32q + 8k ..< +8 of this half; their scale is sc[8h + 2q + (k >= 2)]
                const __m256i codes = _mm256_sub_epi32(pm_bytes8_epi32(v[q], k, 0), off);
                const __m256 scale = _mm256_set1_ps(d * (float)sc[8 * h + 2 * q + (k >= 2)]);
                _mm256_storeu_ps(y + 128 * h + 32 * q + 8 * k, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(codes)));
            }
        }
    }
}

/// A K-quant block dequantized as the reference does (see the two functions above).
PM_AVX2 __attribute__((always_inline)) static inline void dequantize_k_avx2(int format, const uint8_t *blk, float *y) {
    if (format == PM_Q6_K) {
        dequantize_q6_k_avx2(blk, y);
    } else {
        dequantize_q45_k_avx2(blk, format == PM_Q5_K, y);
    }
}

/// The exact path for K-quants in `QuantizedKernels.dotK`'s order: per block the dequantized
/// values (the reference's floats) meet x in one 8-lane chain `s = w0·x0; s = fma(w_i, x_i, s)`,
/// then `acc += s`; result `hsum(acc)`. One chain is 32 dependent FMAs per block, so `R` rows ×
/// `T` tokens (R·T ≤ 4) run their chains side by side; each (row, token) still sees the same
/// operations in the same order.
PM_AVX2 __attribute__((always_inline)) static inline void exact_k_avx2(int format, int R, int T, const uint8_t *row, size_t rs,
                                                                      const float *x, size_t xs, int nb, float *y, size_t yr,
                                                                      size_t yt) {
    const size_t bb = format == PM_Q4_K ? 144 : format == PM_Q5_K ? 176 : 210;
    float w[4][256] __attribute__((aligned(32)));
    __m256 acc[4];
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) dequantize_k_avx2(format, row + (size_t)r * rs + bb * (size_t)b, w[r]);
        __m256 sv[4];
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) sv[r * T + t] = _mm256_mul_ps(_mm256_load_ps(w[r]), _mm256_loadu_ps(x + (size_t)t * xs + 256 * (size_t)b));
        for (int i = 8; i < 256; i += 8) {
            for (int r = 0; r < R; r++) {
                const __m256 wv = _mm256_load_ps(w[r] + i);
                for (int t = 0; t < T; t++)
                    sv[r * T + t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)t * xs + 256 * (size_t)b + i), sv[r * T + t]);
            }
        }
        for (int i = 0; i < R * T; i++) acc[i] = _mm256_add_ps(acc[i], sv[i]);
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[(size_t)r * yr + (size_t)t * yt] = hsum256(acc[r * T + t]);
}

/// `rows` K-quant rows × `tokens`: one token takes four neighbouring rows at a time (four chains;
/// rows a quarter of the matrix apart, as the 32-value formats read them, measured 0.6-0.8x on the
/// Q4_K_M bench model, Zen 5), several tokens four per row.
PM_AVX2 __attribute__((always_inline)) static inline void exact_k_matmul_avx2(int format, const uint8_t *w, size_t rb, int rows,
                                                                             const float *x, size_t xs, int tokens, int nb, float *y,
                                                                             size_t ldy) {
    int r = 0;
    if (tokens == 1) {
        for (; r + 4 <= rows; r += 4) exact_k_avx2(format, 4, 1, w + (size_t)r * rb, rb, x, 0, nb, y + r, 1, 0);
    }
    for (; r < rows; r++) {
        const uint8_t *row = w + (size_t)r * rb;
        int t = 0;
        for (; t + 4 <= tokens; t += 4) exact_k_avx2(format, 1, 4, row, 0, x + (size_t)t * xs, xs, nb, y + (size_t)t * ldy + r, 0, ldy);
        for (; t < tokens; t++) exact_k_avx2(format, 1, 1, row, 0, x + (size_t)t * xs, 0, nb, y + (size_t)t * ldy + r, 0, 0);
    }
}

#define PM_EXACT_K(NAME, FORMAT)                                                                                \
    PM_AVX2 static void exact_##NAME##_avx2(const uint8_t *w, size_t rb, int rows, const float *x, size_t xs, int tokens, \
                                            int nb, float *y, size_t ldy) {                                     \
        exact_k_matmul_avx2(FORMAT, w, rb, rows, x, xs, tokens, nb, y, ldy);                                    \
    }
PM_EXACT_K(q4_k, PM_Q4_K)
PM_EXACT_K(q5_k, PM_Q5_K)
PM_EXACT_K(q6_k, PM_Q6_K)

#endif  // PM_X86

// MARK: - Matmul drivers and dispatch

typedef void (*pm_matmul_fn)(const uint8_t *w, size_t rb, int rows, const uint8_t *xq, size_t xs, int tokens, int nb,
                             float *y, size_t ldy);

/// Rows outer, tokens inner: a weight row (a few hundred bytes) stays in L1 while every token
/// reads it. For one token (decode, memory-bound) the row `PM_PREFETCH_BYTES` ahead is
/// prefetched, so more cache lines are in flight than the hardware prefetcher keeps on its own.
#define PM_PREFETCH_BYTES 2048
#define PM_MATMUL(NAME, DOT, ATTR)                                                                              \
    ATTR static void NAME(const uint8_t *w, size_t rb, int rows, const uint8_t *xq, size_t xs, int tokens, int nb, \
                          float *y, size_t ldy) {                                                              \
        const size_t ahead = (PM_PREFETCH_BYTES + rb - 1) / rb;                                                 \
        for (int r = 0; r < rows; r++) {                                                                        \
            const uint8_t *row = w + (size_t)r * rb;                                                            \
            if (tokens == 1 && (size_t)r + ahead < (size_t)rows) {                                              \
                const uint8_t *next = row + ahead * rb;                                                         \
                for (size_t o = 0; o < rb; o += 64) __builtin_prefetch(next + o, 0, 0);                         \
            }                                                                                                   \
            for (int t = 0; t < tokens; t++) y[(size_t)t * ldy + r] = DOT(row, xq + (size_t)t * xs, nb);        \
        }                                                                                                       \
    }

/// As PM_MATMUL, with tokens taken four at a time by DOT4 (prefill).
#define PM_MATMUL4(NAME, DOT, DOT4, ATTR)                                                                       \
    ATTR static void NAME(const uint8_t *w, size_t rb, int rows, const uint8_t *xq, size_t xs, int tokens, int nb, \
                          float *y, size_t ldy) {                                                              \
        const size_t ahead = (PM_PREFETCH_BYTES + rb - 1) / rb;                                                 \
        for (int r = 0; r < rows; r++) {                                                                        \
            const uint8_t *row = w + (size_t)r * rb;                                                            \
            if (tokens == 1 && (size_t)r + ahead < (size_t)rows) {                                              \
                const uint8_t *next = row + ahead * rb;                                                         \
                for (size_t o = 0; o < rb; o += 64) __builtin_prefetch(next + o, 0, 0);                         \
            }                                                                                                   \
            int t = 0;                                                                                          \
            for (; t + 4 <= tokens; t += 4) {                                                                   \
                float o4[4];                                                                                    \
                DOT4(row, xq + (size_t)t * xs, xs, nb, o4);                                                     \
                for (int k = 0; k < 4; k++) y[(size_t)(t + k) * ldy + r] = o4[k];                               \
            }                                                                                                   \
            for (; t < tokens; t++) y[(size_t)t * ldy + r] = DOT(row, xq + (size_t)t * xs, nb);                 \
        }                                                                                                       \
    }

/// The matmul of a 32-value format on `q32_<ISA>`: one token reads the rows as
/// `PM_DECODE_STREAMS` streams (rows i, i + q, i + 2q, i + 3q), then the rows left over; several
/// tokens go four at a time per row, and where TWO_ROWS (AVX-512: 32 registers) Q5_0/Q5_1 rows
/// in tiles of two rows × four tokens, each pair of activation blocks, once loaded, meeting two
/// rows. One thread, 256 rows × 1024 × 64 tokens in cache on Zen 5: Q5_0 54 -> 72 G
/// multiply-adds/s, Q5_1 51 -> 53, while Q8_0 (69 against 70) and Q4_0 (52 against 56) were
/// faster with one row per tile. Every (row, token) runs the same operations whatever the tile.
#define PM_Q32_MATMUL(ISA, ATTR, TWO_ROWS)                                                                      \
    ATTR __attribute__((always_inline)) static inline void q32_matmul_##ISA(int kind, const uint8_t *w, size_t rb, int rows, \
                                                                           const uint8_t *xq, size_t xs, int tokens, int nb, \
                                                                           float *y, size_t ldy) {               \
        int r = 0;                                                                                              \
        if (tokens == 1) {                                                                                      \
            const int q = rows / PM_DECODE_STREAMS;                                                             \
            for (int i = 0; i < q; i++) q32_##ISA(kind, 4, 1, w + (size_t)i * rb, (size_t)q * rb, xq, 0, nb, y + i, (size_t)q, 0); \
            for (r = PM_DECODE_STREAMS * q; r < rows; r++) q32_##ISA(kind, 1, 1, w + (size_t)r * rb, 0, xq, 0, nb, y + r, 0, 0); \
            return;                                                                                             \
        }                                                                                                       \
        for (; (TWO_ROWS) && (kind == 3 || kind == 4) && r + 2 <= rows; r += 2) {                               \
            const uint8_t *row = w + (size_t)r * rb;                                                            \
            int t = 0;                                                                                          \
            for (; t + 4 <= tokens; t += 4)                                                                     \
                q32_##ISA(kind, 2, 4, row, rb, xq + (size_t)t * xs, xs, nb, y + (size_t)t * ldy + r, 1, ldy);   \
            for (; t < tokens; t++) q32_##ISA(kind, 2, 1, row, rb, xq + (size_t)t * xs, 0, nb, y + (size_t)t * ldy + r, 1, 0); \
        }                                                                                                       \
        for (; r < rows; r++) {                                                                                 \
            const uint8_t *row = w + (size_t)r * rb;                                                            \
            int t = 0;                                                                                          \
            for (; t + 4 <= tokens; t += 4)                                                                     \
                q32_##ISA(kind, 1, 4, row, 0, xq + (size_t)t * xs, xs, nb, y + (size_t)t * ldy + r, 0, ldy);    \
            for (; t < tokens; t++) q32_##ISA(kind, 1, 1, row, 0, xq + (size_t)t * xs, 0, nb, y + (size_t)t * ldy + r, 0, 0); \
        }                                                                                                       \
    }

/// `mm_<NAME>_<ISA>`, the table entry of a 32-value format.
#define PM_MATMUL_Q32(NAME, KIND, ISA, ATTR)                                                                    \
    ATTR static void mm_##NAME##_##ISA(const uint8_t *w, size_t rb, int rows, const uint8_t *xq, size_t xs, int tokens, \
                                       int nb, float *y, size_t ldy) {                                          \
        q32_matmul_##ISA(KIND, w, rb, rows, xq, xs, tokens, nb, y, ldy);                                        \
    }

#define PM_NOATTR
PM_MATMUL(mm_q4_0_scalar, dot_q4_0_scalar, PM_NOATTR)
PM_MATMUL(mm_q4_1_scalar, dot_q4_1_scalar, PM_NOATTR)
PM_MATMUL(mm_q8_0_scalar, dot_q8_0_scalar, PM_NOATTR)
PM_MATMUL(mm_q4_k_scalar, dot_q4_k_scalar, PM_NOATTR)
PM_MATMUL(mm_q5_k_scalar, dot_q5_k_scalar, PM_NOATTR)
PM_MATMUL(mm_q6_k_scalar, dot_q6_k_scalar, PM_NOATTR)
PM_MATMUL(mm_q5_0_scalar, dot_q5_0_scalar, PM_NOATTR)
PM_MATMUL(mm_q5_1_scalar, dot_q5_1_scalar, PM_NOATTR)

static const pm_matmul_fn table_scalar[PM_FORMAT_COUNT] = {
    mm_q4_0_scalar, mm_q4_1_scalar, mm_q8_0_scalar, mm_q4_k_scalar, mm_q5_k_scalar, mm_q6_k_scalar,
    mm_q5_0_scalar, mm_q5_1_scalar};

#ifdef PM_X86
PM_Q32_MATMUL(avx2, PM_AVX2, 0)
PM_MATMUL_Q32(q4_0, 0, avx2, PM_AVX2)
PM_MATMUL_Q32(q4_1, 1, avx2, PM_AVX2)
PM_MATMUL_Q32(q8_0, 2, avx2, PM_AVX2)
PM_MATMUL_Q32(q5_0, 3, avx2, PM_AVX2)
PM_MATMUL_Q32(q5_1, 4, avx2, PM_AVX2)
PM_MATMUL4(mm_q4_k_avx2, dot_q4_k_avx2, dot4_q4_k_avx2, PM_AVX2)
PM_MATMUL4(mm_q5_k_avx2, dot_q5_k_avx2, dot4_q5_k_avx2, PM_AVX2)
PM_MATMUL4(mm_q6_k_avx2, dot_q6_k_avx2, dot4_q6_k_avx2, PM_AVX2)

static const pm_matmul_fn table_avx2[PM_FORMAT_COUNT] = {
    mm_q4_0_avx2, mm_q4_1_avx2, mm_q8_0_avx2, mm_q4_k_avx2, mm_q5_k_avx2, mm_q6_k_avx2, mm_q5_0_avx2, mm_q5_1_avx2};

PM_Q32_MATMUL(avx512, PM_AVX512, 1)
PM_MATMUL_Q32(q4_0, 0, avx512, PM_AVX512)
PM_MATMUL_Q32(q4_1, 1, avx512, PM_AVX512)
PM_MATMUL_Q32(q8_0, 2, avx512, PM_AVX512)
PM_MATMUL_Q32(q5_0, 3, avx512, PM_AVX512)
PM_MATMUL_Q32(q5_1, 4, avx512, PM_AVX512)

PM_MATMUL4(mm_q4_k_avx512, dot_q4_k_avx512, dot4_q4_k_avx512, PM_AVX512)
PM_MATMUL4(mm_q5_k_avx512, dot_q5_k_avx512, dot4_q5_k_avx512, PM_AVX512)
PM_MATMUL4(mm_q6_k_avx512, dot_q6_k_avx512, dot4_q6_k_avx512, PM_AVX512)

static const pm_matmul_fn table_avx512[PM_FORMAT_COUNT] = {
    mm_q4_0_avx512, mm_q4_1_avx512, mm_q8_0_avx512, mm_q4_k_avx512, mm_q5_k_avx512, mm_q6_k_avx512, mm_q5_0_avx512, mm_q5_1_avx512};
#endif

// MARK: - Interleaved rows: packing and dispatch

#ifdef PM_X86
PM_GEMM_X8(gemm_x8_q4_0_avx2, PM_Q4_0, gemm_x8_avx2, gemm_x8_q4_k_avx2, 1, PM_AVX2)
PM_GEMM_X8(gemm_x8_q4_1_avx2, PM_Q4_1, gemm_x8_avx2, gemm_x8_q4_k_avx2, 1, PM_AVX2)
PM_GEMM_X8(gemm_x8_q4_k_avx2_rows, PM_Q4_K, gemm_x8_avx2, gemm_x8_q4_k_avx2, 1, PM_AVX2)
PM_GEMM_X8(gemm_x8_q4_0_avx512, PM_Q4_0, gemm_x8_avx512, gemm_x8_q4_k_avx512, 0, PM_AVX512)
PM_GEMM_X8(gemm_x8_q4_1_avx512, PM_Q4_1, gemm_x8_avx512, gemm_x8_q4_k_avx512, 0, PM_AVX512)
PM_GEMM_X8(gemm_x8_q4_k_avx512_rows, PM_Q4_K, gemm_x8_avx512, gemm_x8_q4_k_avx512, 0, PM_AVX512)
#endif

int pm_interleaved_supported(int isa, int format, int rows) {
#ifdef PM_X86
    return isa >= PM_ISA_AVX2 && pm_isa_supported(PM_ISA_AVX2) && pm_x8_block_bytes(format) != 0 && rows > 0
        && rows % 8 == 0;
#else
    (void)isa, (void)format, (void)rows;
    return 0;
#endif
}

/// Q4_K's interleaved block (see gemm_x8_q4_k_avx2) of rows `src` … (eight rows, `nb` blocks each).
static void pm_interleave_q4_k(const uint8_t *src, size_t nb, size_t b, uint8_t *o) {
    for (size_t i = 0; i < 8; i++) {
        const uint8_t *blk = src + (i * nb + b) * 144;
        uint8_t sc[8], mn[8];
        pm_scales_k4(blk + 4, sc, mn);
        memcpy(o + 2 * i, blk, 2);
        memcpy(o + 16 + 2 * i, blk + 2, 2);
        for (int j = 0; j < 8; j++) o[32 + 8 * j + i] = (uint8_t)(sc[j] | ((mn[j] & 3) << 6));
        for (int q = 0; q < 4; q++) o[96 + 8 * q + i] = (uint8_t)((mn[2 * q] >> 2) | ((mn[2 * q + 1] >> 2) << 4));
        for (int p = 0; p < 4; p++) {
            for (int c = 0; c < 8; c++) memcpy(o + 128 + 256 * p + 32 * c + 4 * i, blk + 16 + 32 * p + 4 * c, 4);
        }
    }
}

int pm_interleave_rows(int format, const void *w, int rows, int n, void *out) {
    const size_t gb = pm_x8_block_bytes(format);
    const int bs = pm_block_size(format);
    if (gb == 0 || rows <= 0 || rows % 8 != 0 || n <= 0 || n % bs != 0) return 0;
    const size_t bb = gb / 8, nb = (size_t)(n / bs);
    const size_t scales = format == PM_Q4_1 ? 4 : 2;  // bytes of d (and m) per row and block
    const uint8_t *src = (const uint8_t *)w;
    uint8_t *dst = (uint8_t *)out;
    for (size_t g = 0; g < (size_t)rows / 8; g++) {
        for (size_t b = 0; b < nb; b++) {
            uint8_t *o = dst + (g * nb + b) * gb;
            if (format == PM_Q4_K) {
                pm_interleave_q4_k(src + g * 8 * nb * bb, nb, b, o);
                continue;
            }
            for (size_t i = 0; i < 8; i++) {
                const uint8_t *blk = src + ((g * 8 + i) * nb + b) * bb;
                memcpy(o + 2 * i, blk, 2);
                if (format == PM_Q4_1) memcpy(o + 16 + 2 * i, blk + 2, 2);
                for (size_t c = 0; c < 4; c++) memcpy(o + 8 * scales + 32 * c + 4 * i, blk + scales + 4 * c, 4);
            }
        }
    }
    return 1;
}

int pm_matmul_q8_interleaved(int isa, int format, const void *w, int rows, const void *xq, size_t xq_stride,
                             int tokens, int n, float *y, size_t ldy) {
    if (!pm_interleaved_supported(isa, format, rows) || tokens <= 0 || n <= 0 || n % pm_block_size(format) != 0) return 0;
#ifdef PM_X86
    const uint8_t *wp = (const uint8_t *)w, *xp = (const uint8_t *)xq;
    if (isa >= PM_ISA_AVX512VNNI && pm_isa_supported(PM_ISA_AVX512VNNI)) {
        switch (format) {
        case PM_Q4_0: gemm_x8_q4_0_avx512(wp, rows, xp, xq_stride, tokens, n / 32, y, ldy); return 1;
        case PM_Q4_1: gemm_x8_q4_1_avx512(wp, rows, xp, xq_stride, tokens, n / 32, y, ldy); return 1;
        case PM_Q4_K: gemm_x8_q4_k_avx512_rows(wp, rows, xp, xq_stride, tokens, n / 256, y, ldy); return 1;
        default: break;
        }
    }
    switch (format) {
    case PM_Q4_0: gemm_x8_q4_0_avx2(wp, rows, xp, xq_stride, tokens, n / 32, y, ldy); return 1;
    case PM_Q4_1: gemm_x8_q4_1_avx2(wp, rows, xp, xq_stride, tokens, n / 32, y, ldy); return 1;
    case PM_Q4_K: gemm_x8_q4_k_avx2_rows(wp, rows, xp, xq_stride, tokens, n / 256, y, ldy); return 1;
    default: return 0;
    }
#else
    return 0;
#endif
}

static int pm_detect(int isa);

/// AVX2 and AVX-512 F/BW/VL/DQ: what the AVX-512 float tiles need (VNNI is for the int8 kernels).
static int pm_detect_avx512(void) {
#ifdef PM_X86
    return pm_detect(PM_ISA_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

static int pm_detect(int isa) {
    switch (isa) {
    case PM_ISA_SCALAR: return 1;
#ifdef PM_X86
    case PM_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case PM_ISA_AVX512VNNI: return pm_detect_avx512() && __builtin_cpu_supports("avx512vnni");
#endif
    default: return 0;
    }
}

int pm_isa_supported(int isa) {
    // Detected once per ISA; racing threads store the same value.
    static int known[PM_ISA_COUNT] = {-1, -1, -1};
    if (isa < 0 || isa >= PM_ISA_COUNT) return 0;
    int v = __atomic_load_n(&known[isa], __ATOMIC_RELAXED);
    if (v < 0) {
        v = pm_detect(isa);
        __atomic_store_n(&known[isa], v, __ATOMIC_RELAXED);
    }
    return v;
}

/// The cap `PREMOE_ISA` sets (an instruction set's name, e.g. `avx2` to run an AVX-512 CPU's
/// AVX2 kernels for comparison); no cap when unset or unknown.
static int pm_isa_cap(void) {
    const char *name = getenv("PREMOE_ISA");
    if (name == NULL) return PM_ISA_COUNT - 1;
    for (int isa = 0; isa < PM_ISA_COUNT; isa++) {
        if (strcmp(name, pm_isa_name(isa)) == 0) return isa;
    }
    return PM_ISA_COUNT - 1;
}

int pm_tiles_avx512_supported(void) {
    static int known = -1;
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (v < 0) {
        v = pm_isa_cap() >= PM_ISA_AVX512VNNI && pm_detect_avx512();
        __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    }
    return v;
}

int pm_isa_best(void) {
    static int best = -1;
    int v = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (v >= 0) return v;
    v = PM_ISA_SCALAR;
    for (int isa = pm_isa_cap(); isa > PM_ISA_SCALAR; isa--) {
        if (pm_isa_supported(isa)) {
            v = isa;
            break;
        }
    }
    __atomic_store_n(&best, v, __ATOMIC_RELAXED);
    return v;
}

const char *pm_isa_name(int isa) {
    switch (isa) {
    case PM_ISA_SCALAR: return "scalar";
    case PM_ISA_AVX2: return "avx2";
    case PM_ISA_AVX512VNNI: return "avx512vnni";
    default: return "unknown";
    }
}

/// The kernel for (isa, format); falls back to scalar for an ISA this CPU or build lacks.
static pm_matmul_fn pm_kernel(int isa, int format) {
#ifdef PM_X86
    if (isa >= PM_ISA_AVX512VNNI && pm_isa_supported(PM_ISA_AVX512VNNI)) return table_avx512[format];
    if (isa >= PM_ISA_AVX2 && pm_isa_supported(PM_ISA_AVX2)) return table_avx2[format];
#else
    (void)isa;
#endif
    return table_scalar[format];
}

void pm_quantize_activations(int isa, int format, const float *x, int rows, int n, void *out) {
    const size_t stride = pm_activation_bytes(format, n);
    for (int t = 0; t < rows; t++) {
        uint8_t *o = (uint8_t *)out + (size_t)t * stride;
        const float *v = x + (size_t)t * (size_t)n;
#ifdef PM_X86
        if (isa >= PM_ISA_AVX2 && pm_isa_supported(PM_ISA_AVX2)) {
            quantize_avx2(format, v, n, o);
            continue;
        }
#endif
        quantize_scalar(format, v, n, o);
    }
}

void pm_matmul_q8(int isa, int format, const void *w, size_t row_bytes, int rows, const void *xq, size_t xq_stride,
                  int tokens, int n, float *y, size_t ldy) {
    if (format < 0 || format >= PM_FORMAT_COUNT || rows <= 0 || tokens <= 0) return;
    pm_kernel(isa, format)((const uint8_t *)w, row_bytes, rows, (const uint8_t *)xq, xq_stride, tokens,
                           n / pm_block_size(format), y, ldy);
}

int pm_matmul_exact(int format, const void *w, size_t row_bytes, int rows, const float *x, int tokens, int n,
                    const float *sums, float *y, size_t ldy) {
#ifdef PM_X86
    if (!pm_isa_supported(PM_ISA_AVX2) || format < 0 || format >= PM_FORMAT_COUNT || rows <= 0 || tokens <= 0 || n <= 0
        || n % pm_block_size(format) != 0 || (!pm_is_k(format) && sums == NULL))
        return 0;
    const uint8_t *wp = (const uint8_t *)w;
    const size_t xs = (size_t)n, ss = (size_t)(n / 32);
    const int nb = n / 32;
    switch (format) {
    case PM_Q4_K: exact_q4_k_avx2(wp, row_bytes, rows, x, xs, tokens, n / 256, y, ldy); return 1;
    case PM_Q5_K: exact_q5_k_avx2(wp, row_bytes, rows, x, xs, tokens, n / 256, y, ldy); return 1;
    case PM_Q6_K: exact_q6_k_avx2(wp, row_bytes, rows, x, xs, tokens, n / 256, y, ldy); return 1;
    case PM_Q4_0: exact_q4_0_avx2(wp, row_bytes, rows, x, xs, sums, ss, tokens, nb, y, ldy); return 1;
    case PM_Q4_1: exact_q4_1_avx2(wp, row_bytes, rows, x, xs, sums, ss, tokens, nb, y, ldy); return 1;
    case PM_Q8_0: exact_q8_0_avx2(wp, row_bytes, rows, x, xs, sums, ss, tokens, nb, y, ldy); return 1;
    case PM_Q5_0: exact_q5_0_avx2(wp, row_bytes, rows, x, xs, sums, ss, tokens, nb, y, ldy); return 1;
    case PM_Q5_1: exact_q5_1_avx2(wp, row_bytes, rows, x, xs, sums, ss, tokens, nb, y, ldy); return 1;
    default: return 0;
    }
#else
    (void)format, (void)w, (void)row_bytes, (void)rows, (void)x, (void)tokens, (void)n, (void)sums, (void)y, (void)ldy;
    return 0;
#endif
}

int pm_dequantize_k_block(int format, const void *block, float *y) {
#ifdef PM_X86
    if (!pm_isa_supported(PM_ISA_AVX2)) return 0;
    switch (format) {
    case PM_Q4_K: dequantize_q45_k_avx2((const uint8_t *)block, 0, y); return 1;
    case PM_Q5_K: dequantize_q45_k_avx2((const uint8_t *)block, 1, y); return 1;
    case PM_Q6_K: dequantize_q6_k_avx2((const uint8_t *)block, y); return 1;
    default: return 0;
    }
#else
    (void)format, (void)block, (void)y;
    return 0;
#endif
}
