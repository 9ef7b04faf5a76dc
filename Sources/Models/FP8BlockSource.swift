// FP8 block-scaled checkpoints as DeepSeek-V3/R1, Kimi-K2 and Qwen3 "-FP8" publish them
// (DeepSeek's `inference/kernel.py` `weight_dequant` is the reference for the arithmetic).
import Formats
import Foundation
import Kernels

/// How a checkpoint's weights are quantized, from `quantization_config` in `config.json`.
public enum WeightQuantization: Equatable, Sendable {
    /// `{"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [rows, cols]}`: linear weights
    /// stored as `F8_E4M3` with an F32 `<name>_scale_inv` of shape `[⌈out/rows⌉, ⌈in/cols⌉]`;
    /// weight = fp8 value × the scale of its block (partial last blocks included).
    ///
    /// `"scale_fmt": "ue8m0"` (DeepSeek-V3.1, V3.2) says the scales are powers of two (and that
    /// activations are quantized with power-of-two scales at run time, which an f32 engine does
    /// not do); V3.1's published files still store `weight_scale_inv` as F32 (its tensor dtypes are
    /// BF16, F8_E4M3 and F32), so the key changes nothing here. Scale grids stored as `F8_E8M0`
    /// (one exponent byte, 2^(byte − 127), 0xFF NaN; DeepSeek-V4's layout) are read as well.
    case fp8Block(rows: Int, cols: Int)
    /// `{"quant_method": "mxfp4"}` (gpt-oss only): routed experts stored as e2m1 blocks with an
    /// e8m0 scale per 32 inputs (`MXFP4Source`); everything else unquantized.
    case mxfp4

    /// Reads `quantization_config`; nil when the config has none. Runs before any weight is read.
    /// - Throws: `ModelError.unsupportedFeature` naming the `quant_method` (or FP8 format) this
    ///   engine does not compute, `.invalidConfig` for a malformed block size.
    public static func read(configData: Data, file: String) throws -> WeightQuantization? {
        guard let root = try? JSONSerialization.jsonObject(with: configData) as? [String: Any],
              let q = root["quantization_config"], !(q is NSNull) else { return nil }
        guard let config = q as? [String: Any] else {
            throw ModelError.invalidConfig(field: "quantization_config", reason: "expected an object", file: file)
        }
        let method = config["quant_method"] as? String ?? "(none)"
        let modelType = root["model_type"] as? String ?? "(none)"
        if method == "mxfp4" {
            guard modelType == "gpt_oss" else {
                throw ModelError.unsupportedFeature(
                    "quantization_config.quant_method 'mxfp4' for model_type '\(modelType)' (supported: gpt_oss's MXFP4 experts)",
                    file: file)
            }
            return .mxfp4
        }
        guard method == "fp8" else {
            throw ModelError.unsupportedFeature(
                "quantization_config.quant_method '\(method)' (supported: fp8 with weight_block_size, as DeepSeek-V3; mxfp4 for gpt_oss)",
                file: file)
        }
        let format = config["fmt"] as? String ?? "e4m3"
        guard format == "e4m3" else {
            throw ModelError.unsupportedFeature("quantization_config.fmt '\(format)' (supported: e4m3)", file: file)
        }
        if let scheme = config["activation_scheme"] as? String, scheme != "dynamic" {
            throw ModelError.unsupportedFeature(
                "quantization_config.activation_scheme '\(scheme)' (supported: dynamic; static activation scales are not read)",
                file: file)
        }
        guard let block = config["weight_block_size"] as? [Int] else {
            throw ModelError.unsupportedFeature(
                "FP8 without quantization_config.weight_block_size (per-tensor or per-channel FP8; supported: block scales)",
                file: file)
        }
        guard block.count == 2, block.allSatisfy({ (1...65_536).contains($0) }) else {
            throw ModelError.invalidConfig(
                field: "quantization_config.weight_block_size", reason: "expected two sizes in 1…65536, got \(block)",
                file: file)
        }
        return .fp8Block(rows: block[0], cols: block[1])
    }
}

/// `float8_e4m3fn` → Float for all 256 bit patterns: 1 sign, 4 exponent (bias 7), 3 mantissa bits,
/// subnormals at exponent 0, no infinities, `S.1111.111` is NaN.
let e4m3Values: [Float] = (0..<256).map { (bits: Int) -> Float in
    let sign: Float = bits & 0x80 != 0 ? -1 : 1
    let exponent = (bits >> 3) & 0xF
    let mantissa = Float(bits & 7)
    if exponent == 0xF && bits & 7 == 7 { return .nan }
    if exponent == 0 { return sign * mantissa / 8 * 0x1p-6 }
    return sign * (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
}

/// A checkpoint whose `F8_E4M3` weights are served dequantized: each FP8 weight and its
/// `_scale_inv` grid become one f32 tensor when read (once per load, for the backbone and for each
/// expert loaded), so every kernel and every PreMoe step sees plain weights. The scale tensors are
/// consumed here and hidden from `tensorNames`.
///
/// Dequantizing once per loaded tensor costs 4 bytes per weight in memory (the FP8 file holds 1):
/// the price of exact f32 parity without an FP8 kernel.
final class FP8BlockSource: TensorSource {
    let checkpoint: SafetensorsCheckpoint
    let block: (rows: Int, cols: Int)
    /// FP8 weights (each has a validated `_scale_inv`).
    private let fp8: Set<String>
    let tensorNames: [String]

    static let scaleSuffix = "_scale_inv"
    /// The safetensors name of unsigned exponent-only scales (OCP MX's E8M0).
    static let e8m0 = "F8_E8M0"

    /// Checks every `F8_E4M3` tensor for its scale grid before anything is loaded.
    /// - Throws: `ModelError.weightProblems` listing FP8 tensors without a scale, scales of the
    ///   wrong shape, and FP8 tensors that are not matrices.
    init(checkpoint: SafetensorsCheckpoint, block: (rows: Int, cols: Int)) throws {
        self.checkpoint = checkpoint
        self.block = block
        var fp8: Set<String> = []
        var problems: [WeightProblem] = []
        for name in checkpoint.tensorNames {
            guard let entry = try checkpoint.entry(name), entry.dtypeName == "F8_E4M3" else { continue }
            guard entry.shape.count == 2 else {
                problems.append(.unreadable(name, reason: "an F8_E4M3 tensor of shape \(entry.shape); expected a matrix"))
                continue
            }
            let scale = name + Self.scaleSuffix
            let grid = [(entry.shape[0] + block.rows - 1) / block.rows, (entry.shape[1] + block.cols - 1) / block.cols]
            guard let scaleEntry = try checkpoint.entry(scale) else {
                problems.append(.missing(scale))
                continue
            }
            guard scaleEntry.dtype != nil || scaleEntry.dtypeName == Self.e8m0 else {
                problems.append(.unreadable(scale, reason: "scales stored as \(scaleEntry.dtypeName); supported: F32, BF16, F16, F8_E8M0"))
                continue
            }
            guard scaleEntry.shape == grid else {
                problems.append(.wrongShape(scale, expected: grid, actual: scaleEntry.shape))
                continue
            }
            fp8.insert(name)
        }
        if !problems.isEmpty { throw ModelError.weightProblems(problems, directory: checkpoint.directory.path) }
        self.fp8 = fp8
        let scales = Set(fp8.map { $0 + Self.scaleSuffix })
        tensorNames = checkpoint.tensorNames.filter { !scales.contains($0) }
    }

    func shape(of name: String) -> [Int]? { checkpoint.shape(of: name) }

    func byteCount(of name: String) -> Int? {
        guard let bytes = checkpoint.byteCount(of: name) else { return nil }
        return bytes + (fp8.contains(name) ? checkpoint.byteCount(of: name + Self.scaleSuffix) ?? 0 : 0)
    }

    func storedDType(of name: String) -> String? { checkpoint.storedDType(of: name) }

    var bytesRead: Int { checkpoint.bytesRead }

    func tensor(_ name: String) throws -> Tensor {
        guard fp8.contains(name) else { return try checkpoint.tensor(name) }
        let scale = try scales(of: name, rows: nil)
        return try checkpoint.withMappedBytes(name) { entry, bytes in
            dequantize(bytes, rows: 0..<entry.shape[0], columns: entry.shape[1], scale: scale, firstScaleRow: 0)
        }
    }

    /// Reads the rows and the scale rows covering them (both counted in `bytesRead`, as the
    /// expert's `byteCount` includes its scales).
    func readRows(_ name: String, rows: Range<Int>) throws -> Tensor {
        guard fp8.contains(name) else { return try checkpoint.readRows(name, rows: rows) }
        let (entry, bytes) = try checkpoint.readRawRows(name, rows: rows)
        let scaleRows = rows.isEmpty ? 0..<0 : (rows.lowerBound / block.rows)..<((rows.upperBound - 1) / block.rows + 1)
        let scale = try scales(of: name, rows: scaleRows)
        return bytes.withUnsafeBytes {
            dequantize($0, rows: rows, columns: entry.shape[1], scale: scale, firstScaleRow: scaleRows.lowerBound)
        }
    }

    func prefetchRows(_ requests: [(name: String, rows: Range<Int>)]) { checkpoint.prefetchRows(requests) }

    /// Grid rows `rows` of the scales of FP8 weight `name` as f32 (E8M0 bytes decoded), read
    /// into memory (counted); nil: the whole grid, mapped (not counted, as the weight itself).
    private func scales(of name: String, rows: Range<Int>?) throws -> [Float] {
        let scale = name + Self.scaleSuffix
        let e8m0 = checkpoint.storedDType(of: scale) == Self.e8m0
        guard let rows else {
            guard e8m0 else { return try checkpoint.tensor(scale).toFloatArray() }
            return try checkpoint.withMappedBytes(scale) { _, bytes in bytes.map(Self.e8m0Value) }
        }
        guard e8m0 else { return try checkpoint.readRows(scale, rows: rows).toFloatArray() }
        return try checkpoint.readRawRows(scale, rows: rows).bytes.map(Self.e8m0Value)
    }

    /// An E8M0 scale byte: 2^(byte − 127), 0xFF is NaN (OCP MX).
    static func e8m0Value(_ byte: UInt8) -> Float {
        byte == 0xFF ? .nan : Float(sign: .plus, exponent: Int(byte) - 127, significand: 1)
    }

    /// `rows` of an FP8 matrix (`bytes` holds exactly those rows) as f32: value × the scale of its
    /// block; `scale` holds grid rows from `firstScaleRow` on.
    private func dequantize(
        _ bytes: UnsafeRawBufferPointer, rows: Range<Int>, columns: Int, scale: [Float], firstScaleRow: Int
    ) -> Tensor {
        let buffer = TensorBuffer(byteCount: rows.count * columns * 4)
        let out = buffer.pointer.bindMemory(to: Float.self, capacity: rows.count * columns)
        let gridColumns = (columns + block.cols - 1) / block.cols
        e4m3Values.withUnsafeBufferPointer { table in
            for (i, r) in rows.enumerated() {
                let scaleRow = (r / block.rows - firstScaleRow) * gridColumns
                for c in 0..<columns {
                    out[i * columns + c] = table[Int(bytes[i * columns + c])] * scale[scaleRow + c / block.cols]
                }
            }
        }
        return Tensor(dtype: .float32, shape: [rows.count, columns], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }
}

extension ModelLoader {
    /// The tensors of a Hugging Face model directory as the model sees them: F8_E4M3 weights
    /// dequantized with their `weight_scale_inv` grids (`FP8BlockSource`), gpt-oss's MXFP4 experts
    /// as f32 `[E, in, out]` (`MXFP4Source`), everything else as stored. Reads `config.json` and the
    /// safetensors headers only; each tensor is dequantized when it is read. Converters that write
    /// another format (GGUF) read through this, so they never see a scale tensor.
    /// - Throws: `ModelError` for a missing config or an unsupported `quantization_config`,
    ///   `CheckpointError` for unreadable safetensors.
    public static func tensorSource(at directory: URL) throws -> TensorSource {
        let configURL = directory.appendingPathComponent("config.json")
        guard let data = try? Data(contentsOf: configURL) else {
            throw ModelError.notAModel(path: directory.path, reason: "no readable config.json")
        }
        return try tensorSource(try SafetensorsCheckpoint(directory: directory), configData: data, file: configURL.path)
    }

    /// The tensor source for a checkpoint: the checkpoint itself, or an `FP8BlockSource` /
    /// `MXFP4Source` over it when `config.json` declares FP8 block or MXFP4 quantization.
    /// - Throws: `ModelError` for an unsupported `quantization_config` or FP8 tensors without scales.
    static func tensorSource(_ checkpoint: SafetensorsCheckpoint, configData: Data, file: String) throws -> TensorSource {
        switch try WeightQuantization.read(configData: configData, file: file) {
        case nil: return checkpoint
        case .fp8Block(let rows, let cols)?: return try FP8BlockSource(checkpoint: checkpoint, block: (rows, cols))
        case .mxfp4?: return try MXFP4Source(checkpoint: checkpoint)
        }
    }
}
