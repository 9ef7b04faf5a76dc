// MXFP4 expert weights as OpenAI's gpt-oss release stores them (transformers' integrations/mxfp4.py,
// `_convert_moe_packed_tensors`, is the reference for the arithmetic and the layout).
import Formats
import Foundation
import Kernels

/// e2m1 (FP4) → Float for the 16 codes: 1 sign, 2 exponent, 1 mantissa bit.
let e2m1Values: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]

/// A gpt-oss checkpoint whose routed experts are MXFP4: each `….experts.{gate_up_proj,down_proj}`
/// is stored as `<name>_blocks` (U8 `[E, out, in/32, 16]`, two e2m1 codes per byte, low nibble
/// first) and `<name>_scales` (U8 `[E, out, in/32]`, e8m0: value = code × 2^(scale − 127)).
/// This source shows each pair as the one tensor transformers holds in memory, `<name>` of shape
/// `[E, in, out]` (input-major), and dequantizes only the experts asked for, once per load, into
/// f32 (`readRows`); the blocks and scales themselves are hidden from `tensorNames`. Everything
/// else passes through.
///
/// Dequantizing at load holds 4 bytes per weight (f32; a second, transient copy while the
/// expert is rearranged) where the file holds half a byte plus 1/32 of a scale byte: the price of
/// exact f32 parity without an FP4 kernel.
final class MXFP4Source: TensorSource {
    let checkpoint: SafetensorsCheckpoint
    /// Virtual name → `[E, out, groups]` of its blocks.
    private let packed: [String: [Int]]
    let tensorNames: [String]

    static let blocksSuffix = "_blocks"
    static let scalesSuffix = "_scales"

    /// Checks every `*_blocks` tensor against its `*_scales` before anything is loaded.
    /// - Throws: `ModelError.weightProblems` listing blocks without scales, scales of the wrong
    ///   shape, and either stored in a dtype other than U8 (scales without blocks stay visible
    ///   and are reported as unexpected by the loader).
    init(checkpoint: SafetensorsCheckpoint) throws {
        self.checkpoint = checkpoint
        var packed: [String: [Int]] = [:]
        var problems: [WeightProblem] = []
        for name in checkpoint.tensorNames where name.hasSuffix(Self.blocksSuffix) {
            guard let entry = try checkpoint.entry(name) else { continue }
            let base = String(name.dropLast(Self.blocksSuffix.count))
            let scale = base + Self.scalesSuffix
            guard entry.dtypeName == "U8", entry.shape.count == 4, entry.shape[3] == 16 else {
                problems.append(.unreadable(name, reason: "MXFP4 blocks stored as \(entry.dtypeName) \(entry.shape); expected U8 [E, out, in/32, 16]"))
                continue
            }
            guard let scaleEntry = try checkpoint.entry(scale) else {
                problems.append(.missing(scale))
                continue
            }
            guard scaleEntry.dtypeName == "U8" else {
                problems.append(.unreadable(scale, reason: "MXFP4 scales stored as \(scaleEntry.dtypeName); expected U8 (e8m0)"))
                continue
            }
            guard scaleEntry.shape == Array(entry.shape.prefix(3)) else {
                problems.append(.wrongShape(scale, expected: Array(entry.shape.prefix(3)), actual: scaleEntry.shape))
                continue
            }
            packed[base] = Array(entry.shape.prefix(3))
        }
        if !problems.isEmpty { throw ModelError.weightProblems(problems, directory: checkpoint.directory.path) }
        self.packed = packed
        let hidden = Set(packed.keys.flatMap { [$0 + Self.blocksSuffix, $0 + Self.scalesSuffix] })
        tensorNames = (checkpoint.tensorNames.filter { !hidden.contains($0) } + packed.keys).sorted()
    }

    func shape(of name: String) -> [Int]? {
        guard let p = packed[name] else { return checkpoint.shape(of: name) }
        return [p[0], p[2] * 32, p[1]]
    }

    func byteCount(of name: String) -> Int? {
        guard packed[name] != nil else { return checkpoint.byteCount(of: name) }
        return (checkpoint.byteCount(of: name + Self.blocksSuffix) ?? 0) + (checkpoint.byteCount(of: name + Self.scalesSuffix) ?? 0)
    }

    /// `MXFP4` for a blocks-and-scales pair, the stored dtype otherwise.
    func storedDType(of name: String) -> String? { packed[name] != nil ? "MXFP4" : checkpoint.storedDType(of: name) }

    var bytesRead: Int { checkpoint.bytesRead }

    /// MXFP4 tensors have no mapped f32 form: they are read per expert (`readRows`).
    func tensor(_ name: String) throws -> Tensor {
        guard let p = packed[name] else { return try checkpoint.tensor(name) }
        return try readRows(name, rows: 0..<p[0])
    }

    /// Reads experts `rows` (their blocks and scales, both counted in `bytesRead`) and returns
    /// them dequantized, `[rows.count, in, out]` f32.
    func readRows(_ name: String, rows: Range<Int>) throws -> Tensor {
        guard let p = packed[name] else { return try checkpoint.readRows(name, rows: rows) }
        let blocks = try checkpoint.readRawRows(name + Self.blocksSuffix, rows: rows).bytes
        let scales = try checkpoint.readRawRows(name + Self.scalesSuffix, rows: rows).bytes
        let (out, groups) = (p[1], p[2])
        let inFeatures = groups * 32
        let count = rows.count * inFeatures * out
        let buffer = TensorBuffer(byteCount: count * 4)
        let values = buffer.pointer.bindMemory(to: Float.self, capacity: count)
        e2m1Values.withUnsafeBufferPointer { table in
            for e in 0..<rows.count {
                let dst = values + e * inFeatures * out
                for r in 0..<out {
                    for g in 0..<groups {
                        let s = (e * out + r) * groups + g
                        let scale = Float(sign: .plus, exponent: Int(scales[s]) - 127, significand: 1)
                        for j in 0..<16 {
                            let byte = Int(blocks[s * 16 + j])
                            let k = g * 32 + 2 * j
                            dst[k * out + r] = table[byte & 0x0F] * scale
                            dst[(k + 1) * out + r] = table[byte >> 4] * scale
                        }
                    }
                }
            }
        }
        return Tensor(dtype: .float32, shape: [rows.count, inFeatures, out], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    func prefetchRows(_ requests: [(name: String, rows: Range<Int>)]) {
        checkpoint.prefetchRows(requests.flatMap { r in
            packed[r.name] == nil ? [r] : [(r.name + Self.blocksSuffix, r.rows), (r.name + Self.scalesSuffix, r.rows)]
        })
    }
}
