// Integer dot products of GGML block-quantized weight rows with 8-bit quantized activations,
// one implementation per instruction set, chosen at run time (see QuantDot.c). Swift has no
// portable access to vpmaddubsw, so these few kernels are C.
#ifndef PREMOE_CKERNELS_H
#define PREMOE_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction sets a kernel can be compiled for, in increasing order.
typedef enum {
    PM_ISA_SCALAR = 0,
    /// AVX2 + FMA + F16C (Haswell, Zen 1–3).
    PM_ISA_AVX2 = 1,
    /// AVX-512 F/BW/VL/DQ + VNNI (Ice Lake, Zen 4, Zen 5): kernels of its own for every format,
    /// bit-identical to the AVX2 ones.
    PM_ISA_AVX512VNNI = 2,
    PM_ISA_COUNT = 3
} pm_isa;

/// Weight formats, numbered as `QuantizedFormat.allCases` in Swift.
typedef enum {
    PM_Q4_0 = 0, PM_Q4_1 = 1, PM_Q8_0 = 2, PM_Q4_K = 3, PM_Q5_K = 4, PM_Q6_K = 5, PM_Q5_0 = 6, PM_Q5_1 = 7,
    PM_FORMAT_COUNT = 8
} pm_format;

/// Whether this CPU (and this build) can run kernels of `isa`.
int pm_isa_supported(int isa);
/// The best instruction set this CPU supports (what the engine uses), at most the one named by
/// the environment variable `PREMOE_ISA` (`scalar`, `avx2`, `avx512vnni`) when set.
int pm_isa_best(void);
/// A short name of `isa` ("scalar", "avx2", "avx512vnni").
const char *pm_isa_name(int isa);

/// Bytes of the quantized activations of one row of `n` values for weight `format`:
/// 40-byte blocks of 32 (`float d, float s = d·Σq, int8 q[32]`) for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 292-byte
/// blocks of 256 (`float d, int16 bsums[16], int8 q[256]`, bsums over 16 values) for K-quants.
size_t pm_activation_bytes(int format, int n);

/// Quantizes `rows` rows of `n` activations (row stride `n` floats) for `format`, each block to
/// `q = round(x / d)` with `d = max|x| / 127` (round to nearest even). Row `t` goes to
/// `out + t * pm_activation_bytes(format, n)`. Identical bytes on every instruction set.
void pm_quantize_activations(int isa, int format, const float *x, int rows, int n, void *out);

/// `y[t * ldy + r] = Σ_i W[r, i] · xq[t, i]` for `rows` weight rows (`row_bytes` apart) and
/// `tokens` quantized activation rows (`xq_stride` bytes apart, made by
/// `pm_quantize_activations`). `n` is a multiple of the format's block size.
void pm_matmul_q8(int isa, int format, const void *w, size_t row_bytes, int rows, const void *xq, size_t xq_stride,
                  int tokens, int n, float *y, size_t ldy);

/// Whether `rows` rows of `format` can be multiplied in the interleaved layout on `isa`: Q4_0,
/// Q4_1 and Q4_K, a multiple of 8 rows, AVX2 (see QuantDot.c, "Interleaved rows").
int pm_interleaved_supported(int isa, int format, int rows);

/// Rewrites `rows` plain rows of `n` values (`format`, rows back to back) into `out` (as many
/// bytes) in the interleaved layout: groups of eight rows, block by block. Returns 0 (nothing
/// written) for a format without that layout, `rows` not a multiple of 8 or `n` not a whole
/// number of blocks.
int pm_interleave_rows(int format, const void *w, int rows, int n, void *out);

/// `pm_matmul_q8` on interleaved rows (`pm_interleave_rows`): `rows` a multiple of 8, `w` the
/// start of a group. Returns 1 when done, 0 when `pm_interleaved_supported` is false or the
/// arguments are out of range (nothing written).
int pm_matmul_q8_interleaved(int isa, int format, const void *w, int rows, const void *xq, size_t xq_stride,
                             int tokens, int n, float *y, size_t ldy);

/// `y[r] = Σ_i W[r, i] · x[i]` for `rows` rows of `n` bf16 (`kind` 0) or f16 (`kind` 1) values,
/// `row_stride` elements apart, with AVX2+FMA+F16C (HalfGemv.c), in the summation order of
/// Sources/Kernels/SIMDSupport.swift (bit-identical to the Swift kernels). Returns 1 when done,
/// 0 when this CPU or build lacks AVX2 or the arguments are out of range (nothing written).
int pm_gemv_half(int kind, const void *w, size_t row_stride, int rows, const float *x, int n, float *y);

/// The exact path with AVX2+FMA+F16C: `y[t * ldy + r] = Σ_i W[r, i] · x[t, i]` for `rows` rows
/// (`row_bytes` apart) of `format` and `tokens` rows of `x` (`n` floats each, `n` a multiple of
/// the block size), in the summation order of `QuantizedKernels.dot` (bit-identical to the
/// Swift kernels). For the 32-value formats `sums` holds each token's `n / 32` block sums of `x`
/// (`QuantizedKernels.blockSums`); K-quants ignore it. Returns 1 when done, 0 for a CPU or
/// build without AVX2 or arguments out of range (nothing written).
int pm_matmul_exact(int format, const void *w, size_t row_bytes, int rows, const float *x, int tokens, int n,
                    const float *sums, float *y, size_t ldy);

/// One 256-value block of a K-quant (`format` Q4_K, Q5_K or Q6_K) dequantized into `y` with AVX2,
/// the same floats as `QuantizedReference.dequantizeBlock` bit for bit. Returns 1 when done, 0
/// for another format or a CPU or build without AVX2 (nothing written).
int pm_dequantize_k_block(int format, const void *block, float *y);

/// Whether `pm_gemm_tiles_avx512` runs on this CPU (AVX-512 F/BW/VL/DQ; off when `PREMOE_ISA`
/// names an instruction set below `avx512vnni`).
int pm_tiles_avx512_supported(void);

/// Floats `pm_pack_token_pairs` writes for `tokens` rows of `n` values.
size_t pm_token_pairs_floats(int tokens, int n);

/// Packs the whole multiples of 8 of `tokens` activation rows (`n` floats each, back to back)
/// pair by pair: for pair p and position block j, 16 floats `x[2p][8j..<8j+8]`,
/// `x[2p+1][8j..<8j+8]` (zeros for a missing last token).
void pm_pack_token_pairs(const float *x, int tokens, int n, float *xp);

/// `y[t * ldy + r] = Σ_i W[r, i] · x[t, i]` for `rows` rows (`row_bytes` apart) of bf16 (`kind`
/// 0), f16 (1) or f32 (2) values and `tokens` rows of `x` (`n` floats each; `xp` their
/// `pm_pack_token_pairs`), two tokens per AVX-512 register, in the summation order of
/// Sources/Kernels/SIMDSupport.swift (bit-identical to the other paths). Returns 1 when done, 0
/// when `pm_tiles_avx512_supported` is false or the arguments are out of range (nothing written).
int pm_gemm_tiles_avx512(int kind, const void *w, size_t row_bytes, int rows, const float *x, const float *xp, int tokens,
                         int n, float *y, size_t ldy);

#ifdef __cplusplus
}
#endif

#endif
