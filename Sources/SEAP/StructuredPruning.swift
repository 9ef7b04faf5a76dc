import Foundation
import Kernels
import Models

/// How the down projection is stored once input columns are removed. Removing output rows
/// (q/k/v, gate/up) keeps every quantization block whole; removing input columns of a quantized
/// matrix cuts blocks (a GGML block runs along the input axis), unless whole blocks go (o_proj:
/// a head's `headDim` columns are whole blocks when `headDim` is a multiple of the block size).
public enum PrunedStorage: String, Sendable, CaseIterable, Codable {
    /// Dequantize, keep the columns, quantize again to the source type (rows padded to a whole
    /// number of blocks are refused: falls back to f16). Smallest and fastest; adds rounding.
    case requantize
    /// Dequantize, keep the columns, quantize to Q8_0 (8.5 bits a value: a finer grid than a
    /// 4-bit source, so the added rounding is small; rows that are not whole blocks fall back to f16).
    case q8_0
    /// Dequantize and store f16.
    case float16
    /// Dequantize and store f32 (exact).
    case float32
}

/// Structured pruning that removes (METHODS §6.4): smaller matrices, per-layer widths and head
/// counts, the residual width unchanged.
///
/// GQA rule: query heads are pruned one by one within their KV group; a KV head (its `k_proj` and
/// `v_proj` rows and cache slot) goes only when every one of its query heads is pruned. A layer
/// whose groups end up of different sizes runs one attention call per KV head
/// (`Attention.queryGroups`).
public enum StructuredPruning {
    /// A new model holding only what `mask` keeps; `model` is left as it is (mapped weights are
    /// shared where a tensor is kept whole).
    /// - Parameters:
    ///   - storage: how a down projection whose quantization blocks are cut is stored.
    /// - Throws: `SEAPError.invalidFile` when the mask does not fit the model, `.unsupported` for a
    ///   model SEAP cannot prune.
    public static func prune(_ model: DecoderModel, mask: SEAPMask, storage: PrunedStorage = .requantize) throws -> DecoderModel {
        var spec = model.spec
        try mask.check(against: spec)
        let hd = spec.headDim
        var layers: [DecoderLayer] = []
        for (l, layer) in model.layers.enumerated() {
            let (attention, mlp) = try SEAPModelCheck.denseParts(layer, index: l)
            let m = mask.layers[l]
            let kvKept = m.keptKVHeads(groupSize: mask.groupSize)
            let qRows = m.keptHeads.flatMap { h in (h * hd)..<((h + 1) * hd) }
            let kvRows = kvKept.flatMap { g in (g * hd)..<((g + 1) * hd) }
            let groups = m.queryGroups(groupSize: mask.groupSize)
            let o = Linear(weight: try gatherColumns(attention.o.weight, qRows, storage: storage),
                           bias: shifted(attention.o.bias, by: m.outputBiasShift, count: spec.hiddenSize))
            let pruned = Attention(
                q: attention.q.rows(qRows), k: attention.k.rows(kvRows), v: attention.v.rows(kvRows), o: o,
                qNorm: attention.qNorm, kNorm: attention.kNorm,
                queryGroups: Set(groups).count > 1 ? groups : nil)
            let channels = m.keptChannels
            let down = Linear(weight: try gatherColumns(mlp.down.weight, channels, storage: storage),
                              bias: shifted(mlp.down.bias, by: m.downBiasShift, count: spec.hiddenSize))
            let newMLP = GatedMLP(gate: mlp.gate.rows(channels), up: mlp.up.rows(channels), down: down)
            layers.append(DecoderLayer(inputNorm: layer.inputNorm, attention: .grouped(pruned),
                                       postAttentionNorm: layer.postAttentionNorm, feedForward: .dense(newMLP)))
            spec.feedForward[l] = .dense(intermediateSize: channels.count)
        }
        return DecoderModel(spec: spec, embedding: model.embedding, layers: layers, finalNorm: model.finalNorm,
                            lmHead: model.lmHead, pool: model.pool)
    }

    /// The same model with pruned units zeroed instead of removed (the soft mask): o_proj columns
    /// of pruned heads and down_proj columns of pruned channels are set to 0 (both stored f32),
    /// bias shifts added. It computes what `prune(…, storage: .float32)` computes.
    /// - Throws: as `prune`.
    public static func softMasked(_ model: DecoderModel, mask: SEAPMask) throws -> DecoderModel {
        try mask.check(against: model.spec)
        let hd = model.spec.headDim
        var layers: [DecoderLayer] = []
        for (l, layer) in model.layers.enumerated() {
            let (attention, mlp) = try SEAPModelCheck.denseParts(layer, index: l)
            let m = mask.layers[l]
            let keptO = Set(m.keptHeads.flatMap { h in (h * hd)..<((h + 1) * hd) })
            let o = Linear(weight: zeroColumns(attention.o.weight, keeping: keptO),
                           bias: shifted(attention.o.bias, by: m.outputBiasShift, count: model.spec.hiddenSize))
            let down = Linear(weight: zeroColumns(mlp.down.weight, keeping: Set(m.keptChannels)),
                              bias: shifted(mlp.down.bias, by: m.downBiasShift, count: model.spec.hiddenSize))
            let masked = Attention(q: attention.q, k: attention.k, v: attention.v, o: o, qNorm: attention.qNorm,
                                   kNorm: attention.kNorm, queryGroups: attention.queryGroups)
            layers.append(DecoderLayer(inputNorm: layer.inputNorm, attention: .grouped(masked),
                                       postAttentionNorm: layer.postAttentionNorm,
                                       feedForward: .dense(GatedMLP(gate: mlp.gate, up: mlp.up, down: down))))
        }
        return DecoderModel(spec: model.spec, embedding: model.embedding, layers: layers, finalNorm: model.finalNorm,
                            lmHead: model.lmHead, pool: model.pool)
    }

    /// `bias + shift` (a zero bias created when there is none); `bias` when no shift.
    static func shifted(_ bias: [Float]?, by shift: [Float]?, count: Int) -> [Float]? {
        guard let shift else { return bias }
        let base = bias ?? [Float](repeating: 0, count: count)
        return zip(base, shift).map { $0 + $1 }
    }

    /// The columns `indices` of `weight` (`[out, in]`). Quantized rows keep their bytes when the
    /// kept columns are whole blocks; otherwise the values are re-stored as `storage` says.
    static func gatherColumns(_ weight: Tensor, _ indices: [Int], storage: PrunedStorage) throws -> Tensor {
        let rows = weight.shape[0], cols = weight.rowLength
        if indices == Array(0..<cols) { return weight }
        let n = indices.count
        let block = weight.dtype.blockSize
        if block > 1, let blocks = wholeBlocks(indices, block: block) {
            let blockBytes = weight.dtype.byteSize
            let inRow = cols / block * blockBytes, outRow = blocks.count * blockBytes
            let buffer = TensorBuffer(byteCount: rows * outRow)
            for r in 0..<rows {
                for (i, b) in blocks.enumerated() {
                    buffer.pointer.advanced(by: r * outRow + i * blockBytes)
                        .copyMemory(from: weight.data + r * inRow + b * blockBytes, byteCount: blockBytes)
                }
            }
            return Tensor(dtype: weight.dtype, shape: [rows, n], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
        }
        var values = [Float](repeating: 0, count: rows * n)
        var row = [Float](repeating: 0, count: cols)
        for r in 0..<rows {
            row.withUnsafeMutableBufferPointer { convertToFloat(weight, offset: r * cols, into: $0.baseAddress!, count: cols) }
            for (i, j) in indices.enumerated() { values[r * n + i] = row[j] }
        }
        let plain = Tensor.owned(values, shape: [rows, n])
        let target: DType
        switch storage {
        case .float32: target = .float32
        case .float16: target = .float16
        case .q8_0: target = plain.canConvert(to: .q8_0) ? .q8_0 : .float16
        case .requantize:
            target = weight.dtype == .float32 || weight.dtype == .bfloat16 ? weight.dtype
                : plain.canConvert(to: weight.dtype) ? weight.dtype : .float16
        }
        return plain.converted(to: target)
    }

    /// The source blocks, in order, when `indices` are exactly whole aligned blocks; else nil.
    static func wholeBlocks(_ indices: [Int], block: Int) -> [Int]? {
        guard indices.count % block == 0 else { return nil }
        var blocks: [Int] = []
        for start in stride(from: 0, to: indices.count, by: block) {
            let first = indices[start]
            guard first % block == 0, indices[start..<(start + block)].elementsEqual(first..<(first + block)) else { return nil }
            blocks.append(first / block)
        }
        return blocks
    }

    /// `weight` widened to f32 with every column outside `kept` set to 0.
    static func zeroColumns(_ weight: Tensor, keeping kept: Set<Int>) -> Tensor {
        let rows = weight.shape[0], cols = weight.rowLength
        var values = [Float](repeating: 0, count: rows * cols)
        values.withUnsafeMutableBufferPointer { convertToFloat(weight, into: $0.baseAddress!, count: rows * cols) }
        for j in 0..<cols where !kept.contains(j) {
            for r in 0..<rows { values[r * cols + j] = 0 }
        }
        return Tensor.owned(values, shape: [rows, cols])
    }
}
