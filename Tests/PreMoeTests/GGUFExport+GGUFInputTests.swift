import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Testing
import TestSupport

/// `GGUFExport.prune(gguf:…)`: a GGUF file pruned into a GGUF file, checked byte for byte against
/// the source's expert slices and, through our loader, against the in-memory pruned model of the
/// same source file.
@Suite(.serialized) struct GGUFInputExportTests {
    /// A GGUF source: a committed fixture, or the qwen3_moe checkpoint converted at Q8_0 in-test.
    static let sources = ["mixtral.f32", "olmoe.f32", "qwen3_moe.q4_1", "qwen3_moe.q8_0"]

    /// The source file (written into `directory` when it is not committed) and its model's name.
    static func source(_ name: String, in directory: URL) throws -> (url: URL, model: String) {
        let model = String(name.split(separator: ".")[0])
        guard name == "qwen3_moe.q8_0" else { return (Fixtures.url("gguf/\(name).gguf"), model) }
        let url = directory.appendingPathComponent("\(name).gguf")
        let spec = try ModelLoader.spec(at: fixtureDirectory(model))
        try GGUFExport.writeFile(modelDirectory: fixtureDirectory(model), keptExperts: GGUFExport.allExperts(spec),
                                 sourceFingerprint: "unpruned", type: .q8_0, to: url)
        return (url, model)
    }

    /// Scrambled kept lists, half the experts of every MoE layer, a different order per layer.
    static func keptList(_ spec: DecoderSpec) -> [Int: [Int]] {
        var kept: [Int: [Int]] = [:]
        for l in spec.moeLayers {
            let e = spec.moe(l)!.expertCount
            kept[l] = (0..<(e / 2)).map { (e - 1 - 2 * $0 + l) % e }
        }
        return kept
    }

    /// Whether GGUF tensor `name` holds one slice per routed expert (stacked experts, router).
    static func isPerExpert(_ name: String) -> Bool { name.contains("_exps.") || name.contains(".ffn_gate_inp.") }

    @Test(arguments: sources)
    func prunedGGUFSlicesTheSourceAndComputesThePrunedModel(_ name: String) throws {
        let dir = try Fixtures.temporaryDirectory("premoe-gguf-in")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (url, model) = try Self.source(name, in: dir)
        let spec = try ModelLoader.spec(at: url)
        let kept = Self.keptList(spec)
        let n = try #require(kept.values.first?.count)
        let out = dir.appendingPathComponent("pruned")
        let report = try GGUFExport.prune(gguf: url, keptExperts: kept, sourceFingerprint: "source-fp", tasks: ["a", "b"], to: out)
        #expect(report.files == ["model.gguf"])
        #expect(report.expertsPerLayer == n)

        let source = try GGUFFile(url: url)
        let pruned = try GGUFFile(url: out.appendingPathComponent("model.gguf"))
        if name.hasSuffix("f32") == false {
            // The point of the quantized cases: the experts are stored in a block type.
            #expect(source.info("blk.0.ffn_up_exps.weight")?.type != .f32)
        }

        // Tensors: same names, order, types and alignment; expert slices equal to the source's.
        #expect(pruned.alignment == source.alignment)
        #expect(pruned.tensorNames == source.tensorNames)
        var sliced = 0
        for info in source.tensorInfos {
            let copy = try #require(pruned.info(info.name))
            #expect(copy.type == info.type, "\(info.name)")
            let bytes = Array(try source.rawBytes(info.name))
            let written = Array(try pruned.rawBytes(info.name))
            if let l = Int(info.name.split(separator: ".")[1]), spec.moeLayers.contains(l), Self.isPerExpert(info.name) {
                let e = try #require(info.dimensions.last)
                let rowBytes = bytes.count / e
                let expected = kept[l]!.flatMap { bytes[($0 * rowBytes)..<(($0 + 1) * rowBytes)] }
                #expect(copy.dimensions == Array(info.dimensions.dropLast()) + [n], "\(info.name)")
                #expect(written == expected, "\(info.name)")
                sliced += 1
            } else {
                #expect(copy.dimensions == info.dimensions, "\(info.name)")
                #expect(written == bytes, "\(info.name)")
            }
        }
        #expect(sliced == 4 * spec.moeLayers.count, "three stacked expert tensors and a router per MoE layer")

        // Metadata: every source key, unchanged except the expert counts; provenance added.
        let arch = try #require(source.architecture)
        let k = try #require(try source.int("\(arch).expert_used_count"))
        #expect(try pruned.int("\(arch).expert_count") == n)
        #expect(try pruned.int("\(arch).expert_used_count") == min(k, n))
        for key in source.metadataKeys where !key.hasPrefix("premoe.")
            && !["\(arch).expert_count", "\(arch).expert_used_count"].contains(key) {
            #expect(pruned.metadata[key] == source.metadata[key], "\(key)")
        }
        for (l, ids) in kept { #expect(try pruned.ints("premoe.kept_experts.\(l)") == ids) }
        #expect(try pruned.string("premoe.source_fingerprint") == "source-fp")
        #expect(try pruned.strings("premoe.tasks") == ["a", "b"])

        // Logits: the pruned file through our loader = the source pruned in memory.
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(model)/golden.json")
        let loaded = try ModelLoader.load(out.appendingPathComponent("model.gguf"), options: LoadOptions(threads: 1))
        for l in spec.moeLayers { #expect(loaded.model.spec.moe(l)?.expertCount == n) }
        let reference = try Reconstruction.load(url, plan: PruningPlan(keptExperts: kept), threads: 1).model
        let a = try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .all)
        let b = try reference.forward(golden.input_ids, cache: reference.makeCache(), logits: .all)
        #expect(a.count == b.count && !a.isEmpty)
        #expect(maxRelativeError(a, b) <= 1e-6, "\(name)")
    }

    @Test func refusesABadPlanAndANonEmptyDirectory() throws {
        let dir = try Fixtures.temporaryDirectory("premoe-gguf-in")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = Fixtures.url("gguf/olmoe.f32.gguf")
        let spec = try ModelLoader.spec(at: url)
        var uneven = Self.keptList(spec)
        uneven[spec.moeLayers[0]]!.removeLast()
        let bad: [(String, [Int: [Int]])] = [
            ("does not list", [spec.moeLayers[0]: [0, 1]]),
            ("distinct", uneven.mapValues { _ in [0, 0] }),
            ("same number", uneven),
        ]
        for (reason, plan) in bad {
            #expect {
                try GGUFExport.prune(gguf: url, keptExperts: plan, sourceFingerprint: "fp", to: dir.appendingPathComponent("out"))
            } throws: { error in
                guard let e = error as? PreMoeError, case .invalidBudget(let message) = e else { return false }
                return message.contains(reason)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/model.gguf").path))
        try Data("x".utf8).write(to: dir.appendingPathComponent("stale"))
        #expect(throws: PreMoeError.self) {
            try GGUFExport.prune(gguf: url, keptExperts: Self.keptList(spec), sourceFingerprint: "fp", to: dir)
        }
    }
}
