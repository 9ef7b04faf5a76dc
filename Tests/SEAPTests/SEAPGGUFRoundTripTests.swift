import Foundation
import Formats
import Kernels
import Models
@testable import SEAP
import Testing
import TestSupport

/// `SEAPExport.writeGGUF` output loaded back by `ModelLoader`: per-layer head counts and FFN
/// widths (llama → `deci`), padded KV groups, bias compensation.
@Suite struct SEAPGGUFRoundTripTests {
    /// The loaded file holds the pruned model's weights byte for byte (F32 pruned columns, the
    /// source's rows); what differs is layer 0's padded silent head, whose zero o_proj columns add
    /// exact zeros to the output. Measured: bit-identical logits on all five fixtures. 1e-5 of
    /// the logit range allows a kernel whose SIMD split changes with o_proj's padded width.
    static let tolerance: Float = 1e-5

    @Test(arguments: ["llama.f32", "llama.f16", "llama.q8_0", "qwen2.f32", "qwen3.f32"])
    func exportedFileLoadsAsThePrunedModel(_ fixture: String) throws {
        let source = Fixtures.url("gguf/\(fixture).gguf")
        let model = try ModelLoader.load(source, options: LoadOptions(threads: 2)).model
        let dir = try Fixtures.temporaryDirectory("seap-gguf")
        defer { try? FileManager.default.removeItem(at: dir) }
        for shifts in [false, true] {
            let mask = gqaMask(model.spec, shifts: shifts)
            let pruned = try StructuredPruning.prune(model, mask: mask, storage: .float32)
            let out = dir.appendingPathComponent("\(fixture)-\(shifts).gguf")
            try SEAPExport.writeGGUF(source: source, pruned: pruned, mask: mask, to: out)
            let loaded = try ModelLoader.load(out, options: LoadOptions(threads: 2)).model
            // Layer 0 keeps heads [0, 2, 3] (KV groups of 1 and 2, padded to 2 + 2), layer 1 keeps [2, 3].
            #expect(loaded.spec.layerHeadCounts == [4, 2] && loaded.spec.layerKVHeadCounts == [2, 1], "\(fixture)")
            for l in 0..<mask.layers.count {
                guard case .dense(let width) = loaded.spec.feedForward[l] else { Issue.record("layer \(l) not dense"); continue }
                #expect(width == mask.layers[l].keptChannels.count, "\(fixture) layer \(l)")
            }
            #expect(loaded.spec.downBias == shifts)
            let error = maxRelativeError(try logitsTrace(loaded), try logitsTrace(pruned))
            #expect(error < Self.tolerance, "\(fixture) shifts \(shifts): \(error)")
            // The pruned model is not the dense one: the comparison can fail.
            #expect(maxRelativeError(try logitsTrace(model), try logitsTrace(pruned)) > 1e-3)
        }
        let file = try GGUFFile(url: dir.appendingPathComponent("\(fixture)-false.gguf"))
        #expect(file.architecture == (fixture.hasPrefix("llama") ? "deci" : String(fixture.prefix(while: { $0 != "." }))))
    }

    /// `src` rewritten with `edit` applied to its metadata.
    static func rewritten(_ src: URL, to out: URL, edit: (inout GGUFWriter, String) -> Void) throws {
        let file = try GGUFFile(url: src)
        var writer = GGUFWriter(alignment: file.alignment)
        for key in file.metadataKeys where key != "general.alignment" {
            if let value = file[key] { writer.set(key, value) }
        }
        edit(&writer, file.architecture ?? "")
        for info in file.tensorInfos {
            try writer.add(info.name, type: info.type, dimensions: info.dimensions, bytes: try file.rawBytes(info.name), owner: file)
        }
        try writer.write(to: out)
    }

    /// llama.cpp's 0 entries (no attention, linear attention, no FFN) and wrong-length arrays are
    /// refused with the key named.
    @Test func zeroAndMisSizedPerLayerValuesAreRefused() throws {
        let source = Fixtures.url("gguf/llama.f32.gguf")
        let model = try ModelLoader.load(source).model
        let dir = try Fixtures.temporaryDirectory("seap-gguf")
        defer { try? FileManager.default.removeItem(at: dir) }
        let mask = gqaMask(model.spec)
        let exported = dir.appendingPathComponent("pruned.gguf")
        try SEAPExport.writeGGUF(source: source, pruned: try StructuredPruning.prune(model, mask: mask), mask: mask, to: exported)
        let cases: [(String, [Int], String)] = [
            ("attention.head_count", [4, 0], "no attention"),
            ("attention.head_count_kv", [2, 0], "linear attention"),
            ("feed_forward_length", [64, 0], "no FFN"),
            ("feed_forward_length", [64, 64, 64], "3 values for 2 layers"),
            ("attention.head_count_kv", [3, 1], "do not divide"),
        ]
        for (i, (key, values, message)) in cases.enumerated() {
            let out = dir.appendingPathComponent("bad\(i).gguf")
            try Self.rewritten(exported, to: out) { w, arch in w.set("\(arch).\(key)", .int32s(values)) }
            do {
                _ = try ModelLoader.load(out)
                Issue.record("\(key) = \(values) loaded")
            } catch {
                #expect("\(error)".contains(message) && "\(error)".contains(key), "\(error)")
            }
        }
    }
}
