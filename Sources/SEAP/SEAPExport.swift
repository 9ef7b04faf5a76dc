import Foundation
import Formats
import Kernels
import Models

/// Writes a SEAP-pruned model as a GGUF file that llama.cpp loads: per-layer
/// `<arch>.feed_forward_length`, `<arch>.attention.head_count` and `.head_count_kv` arrays, the
/// pruned tensors, every other tensor and metadata key copied byte for byte. A `llama` source is
/// written as llama.cpp's `deci` architecture (see `writeGGUF`); qwen2/qwen3 keep their
/// architecture, whose llama.cpp graphs may read one width for all layers.
///
/// llama.cpp needs every KV head of a layer to serve the same number of query heads. A layer
/// whose groups differ (SEAP's GQA rule can leave `[1, 2]`) is padded to its largest group with
/// silent heads: zero `attn_q` rows and zero `attn_output` columns. A silent head attends
/// uniformly, and its output is multiplied by zero columns, so the logits are unchanged; it costs
/// the padded heads' attention work in llama.cpp (our engine runs the groups unpadded).
/// Bias compensation is written as `blk.L.attn_output.bias` / `blk.L.ffn_down.bias` (F32),
/// which llama.cpp's llama graph adds when present.
public enum SEAPExport {
    /// - Parameters:
    ///   - source: the unpruned `.gguf` the model was loaded from.
    ///   - pruned: `StructuredPruning.prune` of that model with `mask`.
    ///   - out: the new file (must not exist).
    /// - Throws: `SEAPError.unsupported` for an architecture other than llama/qwen2/qwen3 or a
    ///   pruned layer that is not grouped attention and a dense MLP; `GGUFError` for I/O.
    public static func writeGGUF(source: URL, pruned: DecoderModel, mask: SEAPMask, to out: URL) throws {
        guard !FileManager.default.fileExists(atPath: out.path) else {
            throw SEAPError.invalidSetting("\(out.path) exists; choose a new file")
        }
        let gguf = try GGUFFile(url: source)
        guard let arch = gguf.architecture, ["llama", "qwen2", "qwen3"].contains(arch) else {
            throw SEAPError.unsupported("GGUF export supports llama, qwen2 and qwen3 files, not '\(gguf.architecture ?? "?")'")
        }
        let hd = pruned.spec.headDim
        // llama.cpp's `llama` graph reads one FFN width and head count for every layer; its
        // `deci` graph (Llama-3.1-Nemotron-NAS: llama tensors, per-layer widths and heads) reads
        // them per layer. A llama file is written as `deci`, its `llama.*` keys renamed.
        let outArch = arch == "llama" ? "deci" : arch
        var writer = GGUFWriter(alignment: gguf.alignment)
        for key in gguf.metadataKeys where key != "general.alignment" {
            guard let value = gguf[key] else { continue }
            if key == "general.architecture" {
                writer.set(key, .string(outArch))
            } else if key.hasPrefix(arch + ".") {
                writer.set(outArch + key.dropFirst(arch.count), value)
            } else {
                writer.set(key, value)
            }
        }
        var widths: [Int] = [], heads: [Int] = [], kvHeads: [Int] = []
        var replaced: [String: Tensor] = [:]
        var extraBiases: [(String, [Float])] = []
        for (l, layer) in pruned.layers.enumerated() {
            let (attention, mlp) = try SEAPModelCheck.denseParts(layer, index: l)
            let kv = attention.kvHeadCount(headDim: hd)
            let groups = attention.queryGroups ?? [Int](repeating: attention.headCount(headDim: hd) / max(1, kv), count: kv)
            let padded = groups.max() ?? 0
            // Slot of every stored query head in the padded layout, and the padded head count.
            var slots: [Int] = []
            for (g, count) in groups.enumerated() { for i in 0..<count { slots.append(g * padded + i) } }
            let paddedHeads = padded * kv
            let b = "blk.\(l)"
            replaced["\(b).attn_q.weight"] = try placeRows(attention.q.weight, headDim: hd, slots: slots, heads: paddedHeads)
            replaced["\(b).attn_k.weight"] = attention.k.weight
            replaced["\(b).attn_v.weight"] = attention.v.weight
            replaced["\(b).attn_output.weight"] = try placeColumns(attention.o.weight, headDim: hd, slots: slots, heads: paddedHeads)
            if let bias = attention.q.bias {
                var full = [Float](repeating: 0, count: paddedHeads * hd)
                for (i, s) in slots.enumerated() { for d in 0..<hd { full[s * hd + d] = bias[i * hd + d] } }
                replaced["\(b).attn_q.bias"] = Tensor.owned(full, shape: [full.count])
            }
            if let bias = attention.k.bias { replaced["\(b).attn_k.bias"] = Tensor.owned(bias, shape: [bias.count]) }
            if let bias = attention.v.bias { replaced["\(b).attn_v.bias"] = Tensor.owned(bias, shape: [bias.count]) }
            if let bias = attention.o.bias { extraBiases.append(("\(b).attn_output.bias", bias)) }
            replaced["\(b).ffn_gate.weight"] = mlp.gate.weight
            replaced["\(b).ffn_up.weight"] = mlp.up.weight
            replaced["\(b).ffn_down.weight"] = mlp.down.weight
            if let bias = mlp.down.bias { extraBiases.append(("\(b).ffn_down.bias", bias)) }
            widths.append(mlp.intermediateSize)
            heads.append(paddedHeads)
            kvHeads.append(kv)
        }
        writer.set("\(outArch).feed_forward_length", GGUFValue.int32s(widths))
        writer.set("\(outArch).attention.head_count", GGUFValue.int32s(heads))
        writer.set("\(outArch).attention.head_count_kv", GGUFValue.int32s(kvHeads))
        // llama.cpp derives the head width from layer 0's head count when these are absent.
        writer.set("\(outArch).attention.key_length", .uint32(UInt32(hd)))
        writer.set("\(outArch).attention.value_length", .uint32(UInt32(hd)))
        writer.set("premoe.seap.task", .string(mask.task))
        writer.set("premoe.seap.score", .string(mask.score.rawValue))
        writer.set("premoe.seap.schedule", .string(mask.schedule.rawValue))
        writer.set("premoe.seap.sparsity", .float32(Float(mask.sparsity)))
        for info in gguf.tensorInfos {
            if let t = replaced[info.name] {
                try writer.add(info.name, t)
            } else if let bias = extraBiases.first(where: { $0.0 == info.name }) {
                try writer.add(info.name, Tensor.owned(bias.1, shape: [bias.1.count]))
            } else {
                try writer.add(info.name, type: info.type, dimensions: info.dimensions, bytes: try gguf.rawBytes(info.name), owner: gguf)
            }
        }
        for (name, bias) in extraBiases where gguf.info(name) == nil {
            try writer.add(name, Tensor.owned(bias, shape: [bias.count]))
        }
        try writer.write(to: out)
    }

    /// `[heads · headDim, in]`: the stored heads' rows at their `slots`, zero rows elsewhere
    /// (all-zero bytes decode to 0 in every GGML type).
    static func placeRows(_ weight: Tensor, headDim hd: Int, slots: [Int], heads: Int) throws -> Tensor {
        if slots == Array(0..<heads) { return weight }
        let rowBytes = weight.dtype.byteCount(elements: weight.rowLength)
        let buffer = TensorBuffer(byteCount: heads * hd * rowBytes)
        buffer.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.byteCount)
        for (i, s) in slots.enumerated() {
            buffer.pointer.advanced(by: s * hd * rowBytes).copyMemory(from: weight.data + i * hd * rowBytes, byteCount: hd * rowBytes)
        }
        return Tensor(dtype: weight.dtype, shape: [heads * hd, weight.rowLength], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    /// `[out, heads · headDim]`: the stored heads' columns at their `slots`, zero columns
    /// elsewhere; whole blocks are moved as bytes, otherwise the values are stored f16 (f32
    /// stays f32).
    static func placeColumns(_ weight: Tensor, headDim hd: Int, slots: [Int], heads: Int) throws -> Tensor {
        if slots == Array(0..<heads) { return weight }
        let rows = weight.shape[0], cols = weight.rowLength
        let block = weight.dtype.blockSize
        if hd % block == 0 {
            let bb = weight.dtype.byteCount(elements: block)
            let perHead = hd / block * bb
            let inRow = weight.dtype.byteCount(elements: cols), outRow = heads * perHead
            let buffer = TensorBuffer(byteCount: rows * outRow)
            buffer.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.byteCount)
            for r in 0..<rows {
                for (i, s) in slots.enumerated() {
                    buffer.pointer.advanced(by: r * outRow + s * perHead).copyMemory(from: weight.data + r * inRow + i * perHead, byteCount: perHead)
                }
            }
            return Tensor(dtype: weight.dtype, shape: [rows, heads * hd], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
        }
        var values = [Float](repeating: 0, count: rows * heads * hd)
        var row = [Float](repeating: 0, count: cols)
        for r in 0..<rows {
            row.withUnsafeMutableBufferPointer { convertToFloat(weight, offset: r * cols, into: $0.baseAddress!, count: cols) }
            for (i, s) in slots.enumerated() { for d in 0..<hd { values[r * heads * hd + s * hd + d] = row[i * hd + d] } }
        }
        return Tensor.owned(values, shape: [rows, heads * hd]).converted(to: weight.dtype == .float32 ? .float32 : .float16)
    }
}
