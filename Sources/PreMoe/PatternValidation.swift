import Foundation
import Models

extension TaskPattern {
    /// Largest |score| or |signature value| accepted. Real scores are selection probabilities,
    /// logits or output norms averaged over tokens (well under 1e6); a bound keeps squared
    /// distances and score sums finite.
    public static let maxMagnitude = 1e12

    /// Checks the pattern against the model it is about to be applied to, on top of its own
    /// consistency (`validate(file:)`): exactly the model's MoE layers, the model's routed expert
    /// count, finite values of sane magnitude, scorers this build knows (with valid parameters),
    /// a token count ≥ 0, and a signature taken at the first MoE layer. Every command that loads
    /// a stored pattern calls this (through `PatternStore.load`/`list` with a spec), so a pattern
    /// missing a layer can no longer make a pruned load keep every expert of that layer.
    /// - Parameters:
    ///   - spec: the model's shared spec.
    ///   - file: the pattern's file, for the error.
    /// - Throws: `PreMoeError.invalidPattern` naming the file and the field.
    public func validate(against spec: DecoderSpec, file: String) throws {
        try validate(file: file)
        func invalid(_ reason: String) -> PreMoeError { .invalidPattern(file: file, reason: reason) }
        let moeLayers = spec.moeLayers
        guard let first = moeLayers.first, let moe = spec.moe(first) else {
            throw PreMoeError.unsupported("\(file): the model has no MoE layer to apply a pattern to")
        }
        if !modelType.isEmpty && modelType != spec.modelType {
            throw invalid("model_type '\(modelType)', but the model is '\(spec.modelType)'")
        }
        guard expertCount == moe.expertCount else {
            throw invalid("expert_count \(expertCount), but the model has \(moe.expertCount) routed experts per MoE layer")
        }
        for l in moeLayers where spec.moe(l)?.expertCount != expertCount {
            throw invalid("MoE layer \(l) has \(spec.moe(l)?.expertCount ?? 0) experts, expert_count is \(expertCount)")
        }
        let stored = Set(layers.keys.compactMap { Int($0) })
        if let missing = moeLayers.first(where: { !stored.contains($0) }) {
            throw invalid("layers: MoE layer \(missing) is missing (the model's MoE layers: \(Self.describe(moeLayers)))")
        }
        if let extra = stored.subtracting(moeLayers).min() {
            throw invalid("layers: layer \(extra) is not a MoE layer of the model (its MoE layers: \(Self.describe(moeLayers)))")
        }
        guard tokenCount >= 0 else { throw invalid("token_count \(tokenCount) is negative") }
        for (key, values) in layers {
            if let bad = values.firstIndex(where: { !(abs($0) <= Self.maxMagnitude) }) {
                throw invalid("layers.\(key)[\(bad)]: \(values[bad]) is outside ±\(Self.maxMagnitude)")
            }
        }
        if let bad = signature.values.firstIndex(where: { !(abs($0) <= Self.maxMagnitude) }) {
            throw invalid("signature.values[\(bad)]: \(signature.values[bad]) is outside ±\(Self.maxMagnitude)")
        }
        guard signature.layer == first else {
            throw invalid("signature.layer \(signature.layer), but retrieval reads the first MoE layer, \(first)")
        }
        for (field, descriptor) in [("scorer", scorer), ("signature.scorer", signature.scorer)] {
            do {
                _ = try Scorers.make(descriptor, modelTopK: moe.topK)
            } catch {
                throw invalid("\(field): \(error)")
            }
        }
    }

    /// `0...31`-style text of a layer list when it is a run, else the list.
    static func describe(_ layers: [Int]) -> String {
        guard let lo = layers.first, let hi = layers.last else { return "none" }
        return layers == Array(lo...hi) ? "\(lo)...\(hi)" : layers.map(String.init).joined(separator: ", ")
    }
}
