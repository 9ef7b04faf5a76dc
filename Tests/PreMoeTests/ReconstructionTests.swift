import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Testing
import TestSupport

/// Float rounding between a pruned model and its masked reference (different softmax sums).
let maskedTolerance: Float = 1e-5

@Suite struct ReconstructionTests {
    /// Half of each MoE layer's experts (at least top-k) in a scrambled, non-sorted order
    /// (5 is coprime with every expert count here, so the indices are distinct).
    func scrambledSubset(_ spec: DecoderSpec) -> [Int: [Int]] {
        var kept: [Int: [Int]] = [:]
        for (i, l) in spec.moeLayers.enumerated() {
            let moe = spec.moe(l)!
            let e = moe.expertCount
            kept[l] = (0..<max(moe.topK, e / 2)).map { (($0 * 5 + i * 3 + 1) % e) }
        }
        return kept
    }

    @Test(arguments: moeFixtures)
    func readsExactlyTheKeptExpertsBytes(_ name: String) throws {
        let dir = fixtureDirectory(name)
        let spec = try ModelLoader.spec(at: dir)
        let kept = scrambledSubset(spec)
        let loaded = try ModelLoader.load(dir, options: LoadOptions(threads: 1, keptExperts: kept, copyExperts: true))
        let checkpoint = loaded.checkpoint
        let sizes = ModelSizes.measure(checkpoint, spec: spec)
        let expected = sizes.bytes(keeping: kept) - sizes.backboneBytes
        #expect(checkpoint.bytesRead == expected)
        // FP8 experts are held dequantized: 4 bytes per weight where the file has 1 (+ scales).
        var resident = expected
        if name.hasSuffix("_fp8") {
            resident = checkpoint.tensorNames.reduce(0) { total, name in
                guard case .expert(let l, let e, _, _)? = checkpoint.shape(of: name).map({
                    ExpertTensorRole.classify(name, shape: $0, expertCount: { spec.moe($0)?.expertCount })
                }), kept[l]?.contains(e) == true else { return total }
                return total + (checkpoint.shape(of: name) ?? []).reduce(4, *)
            }
        }
        // MXFP4 experts likewise, 4 bytes per weight where the file has half a byte (+ scales);
        // the source shows each stacked tensor at its f32 shape.
        if name.hasSuffix("_mxfp4") {
            resident = checkpoint.tensorNames.reduce(0) { total, name in
                guard let shape = checkpoint.shape(of: name), case .stackedExperts(let l) = ExpertTensorRole.classify(
                    name, shape: shape, expertCount: { spec.moe($0)?.expertCount }) else { return total }
                return total + shape.dropFirst().reduce(4, *) * kept[l]!.count
            }
        }
        #expect(loaded.model.weightBytes.experts == resident)
        // Two-step TAER load: backbone first (nothing read), then the kept experts.
        let backbone = try Reconstruction.loadBackbone(dir, threads: 1)
        let c2 = backbone.checkpoint
        #expect(c2.bytesRead == 0)
        let plan = PruningPlan(keptExperts: kept, expertsPerLayer: kept.values.first!.count, tasks: [], warnings: [])
        try Reconstruction.equip(backbone, plan: plan)
        #expect(c2.bytesRead == expected)
        for l in spec.moeLayers {
            guard case .moe(let block) = backbone.model.layers[l].feedForward else { Issue.record("layer \(l)"); continue }
            #expect(block.expertIDs == kept[l])
            #expect(block.router.outFeatures == kept[l]!.count)
        }
    }

    @Test(arguments: moeFixtures)
    func allExpertsInPermutedOrderGiveTheUnprunedLogits(_ name: String) throws {
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let full = try loadFixture(name).model
        let spec = full.spec
        var kept: [Int: [Int]] = [:]
        for l in spec.moeLayers { kept[l] = Array((0..<spec.moe(l)!.expertCount).reversed()) }
        let permuted = try Reconstruction.load(fixtureDirectory(name),
                                               plan: PruningPlan(keptExperts: kept, expertsPerLayer: 0, tasks: [], warnings: []),
                                               threads: 1).model
        let a = try full.forward(golden.input_ids, cache: full.makeCache(), logits: .all)
        let b = try permuted.forward(golden.input_ids, cache: permuted.makeCache(), logits: .all)
        #expect(maxRelativeError(b, a) <= maskedTolerance)
        #expect(maxRelativeError(b, golden.logits.flatMap { $0 }) <= 1e-4)
    }

    /// The pruned model equals the unpruned model whose routers are masked to the kept experts:
    /// the reference keeps every expert and adds a −1e30 bias to non-kept router rows, so softmax
    /// gives them exactly 0 and top-k never picks them. Not for DeepSeek-V3: a sigmoid router
    /// with a selection bias can still pick a masked row (sigmoid(−1e30) + bias), and its group
    /// limit sees every expert (V3 in FP8 and GLM-4.5, which routes as V3, likewise); `DeepSeekModelTests` checks
    /// pruned V3 routing directly.
    @Test(arguments: moeFixtures.filter { !$0.hasPrefix("deepseek_v3") && $0 != "glm4_moe" })
    func prunedModelEqualsMaskedRouterReference(_ name: String) throws {
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let reference = try loadFixture(name).model
        let spec = reference.spec
        let kept = scrambledSubset(spec)
        for l in spec.moeLayers {
            guard case .moe(let block) = reference.layers[l].feedForward else { continue }
            let keptSet = Set(kept[l]!)
            // Added to the router's own bias where it has one (gpt-oss).
            let mask = (0..<block.expertIDs.count).map {
                (keptSet.contains(block.expertIDs[$0]) ? Float(0) : -1e30) + (block.router.bias?[$0] ?? 0)
            }
            let masked = MoEBlock(spec: block.spec, router: Linear(weight: block.router.weight, bias: mask),
                                  experts: block.experts, expertIDs: block.expertIDs, shared: block.shared,
                                  sharedGate: block.sharedGate)
            reference.setFeedForward(.moe(masked), layer: l)
        }
        let pruned = try Reconstruction.load(fixtureDirectory(name),
                                             plan: PruningPlan(keptExperts: kept, expertsPerLayer: kept.values.first!.count, tasks: [], warnings: []),
                                             threads: 1).model
        let expected = try reference.forward(golden.input_ids, cache: reference.makeCache(), logits: .all)
        let actual = try pruned.forward(golden.input_ids, cache: pruned.makeCache(), logits: .all)
        #expect(maxRelativeError(actual, expected) <= maskedTolerance, "\(name)")
        // And pruning really changed the function (the subset is not a no-op).
        #expect(maxRelativeError(actual, golden.logits.flatMap { $0 }) > 1e-3)
        // Routing only ever picks kept experts, reported by original index.
        let log = EventLog()
        pruned.observer = log
        _ = try pruned.forward(golden.input_ids, cache: pruned.makeCache(), logits: .none)
        for ev in log.events {
            #expect(ev.ids == kept[ev.layer])
            #expect(ev.selected.allSatisfy { Set(kept[ev.layer]!).contains(ev.ids[$0]) })
        }
    }
}
