import Foundation
import Kernels
import Models

/// Merging instead of dropping: every expert a plan drops is folded into the kept expert of its
/// layer it resembles most, so its weights still contribute to the tokens the router now sends
/// to that expert.
///
/// - Which kept expert: the one whose router row is closest by cosine similarity to the dropped
///   expert's row (experts with similar rows receive similar tokens: a weight-space stand-in for
///   routing co-activation that needs no extra statistics).
/// - Aligning neurons first: two experts trained apart number their intermediate neurons
///   arbitrarily, and averaging neuron `i` of one with neuron `i` of the other mixes unrelated
///   features. Each neuron is described by its gate row, up row and down column; the dropped
///   expert's neurons are matched one to one to the kept expert's by greedy maximum cosine
///   similarity before averaging.
/// - Weights of the average: each expert's routing frequency on the task (`frequency` scores of
///   the pattern, else its routing mass); a kept expert nobody merges into is left as it is.
///
/// The merged experts are f32 (exports convert them back to the checkpoint's dtype).
public enum ExpertMerging {
    /// Widest expert whose neurons are aligned (the matching sorts every pair of neurons).
    public static let maxAlignedNeurons = 4096

    /// Per kept expert (in plan order), the original ids folded into it, itself first.
    public typealias Groups = [[Int]]

    /// Which kept expert each dropped expert joins.
    /// - Parameters:
    ///   - router: the full router `[experts, hidden]` (rows by original expert id).
    ///   - kept: original ids kept, in plan order.
    /// - Returns: for each kept expert, the ids merged into it (itself first).
    public static func groups(router: Tensor, kept: [Int]) -> Groups {
        let hidden = router.rowLength
        let w = router.toFloatArray().map(Double.init)
        let rows = (0..<router.rows).map { Array(w[($0 * hidden)..<(($0 + 1) * hidden)]) }
        let keptSet = Set(kept)
        var groups = kept.map { [$0] }
        for d in rows.indices where !keptSet.contains(d) {
            var best = 0, bestDistance = Double.infinity
            for (slot, k) in kept.enumerated() {
                let distance = DistanceMetric.cosine.distance(rows[d], rows[k])
                if distance < bestDistance { (best, bestDistance) = (slot, distance) }
            }
            groups[best].append(d)
        }
        return groups
    }

    /// The kept experts of one layer with the dropped ones merged into them.
    /// - Parameters:
    ///   - block: the layer's full block (every expert held, in original order).
    ///   - kept: original ids kept, in plan order.
    ///   - weights: each original expert's weight in the average (routing frequency).
    /// - Returns: one expert per kept id, in plan order.
    /// - Throws: `PreMoeError.unsupported` when the block does not hold every expert or the
    ///   weights do not cover them.
    public static func merge(block: MoEBlock, kept: [Int], weights: [Double]) throws -> [GatedMLP] {
        let count = block.router.outFeatures
        guard block.experts.count == count, block.expertIDs == Array(0..<count) else {
            throw PreMoeError.unsupported("merging needs every expert of the layer held (\(block.experts.count) of \(count))")
        }
        guard weights.count == count, weights.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw PreMoeError.unsupported("merging needs \(count) finite non-negative expert weights, got \(weights.count)")
        }
        guard kept.allSatisfy({ (0..<count).contains($0) }), Set(kept).count == kept.count, !kept.isEmpty else {
            throw PreMoeError.unsupported("merging: kept experts \(kept) are not distinct ids below \(count)")
        }
        let width = block.experts.first?.intermediateSize ?? 0
        guard width <= maxAlignedNeurons else {
            throw PreMoeError.unsupported("merging experts of \(width) neurons: the neuron alignment compares every pair, "
                + "supported up to \(maxAlignedNeurons)")
        }
        return groups(router: block.router.weight, kept: kept).map { group in
            group.count == 1 ? block.experts[group[0]] : mergeGroup(group.map { block.experts[$0] }, weights: group.map { weights[$0] })
        }
    }

    /// A frequency-weighted average of `experts` after aligning each one's neurons to the first's.
    static func mergeGroup(_ experts: [GatedMLP], weights: [Double]) -> GatedMLP {
        let base = Neurons(experts[0])
        let total = weights.reduce(0, +)
        let share = total > 0 ? weights.map { $0 / total } : weights.map { _ in 1 / Double(weights.count) }
        var merged = Neurons.zero(like: base)
        merged.add(base, permutation: Array(0..<base.count), weight: share[0])
        for (expert, w) in zip(experts.dropFirst(), share.dropFirst()) {
            let other = Neurons(expert)
            merged.add(other, permutation: align(base, other), weight: w)
        }
        return merged.expert(activation: experts[0].activation)
    }

    /// For each neuron of `base`, the neuron of `other` matched to it: greedy one-to-one matching
    /// by descending cosine similarity of the neurons' (gate row, up row, down column).
    static func align(_ base: Neurons, _ other: Neurons) -> [Int] {
        let n = base.count
        var pairs: [(similarity: Float, i: Int, j: Int)] = []
        pairs.reserveCapacity(n * n)
        let a = base.unitDescriptors(), b = other.unitDescriptors()
        let length = a.count / max(1, n)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                for i in 0..<n {
                    for j in 0..<n {
                        pairs.append((Kernels.dot(a.baseAddress! + i * length, b.baseAddress! + j * length, count: length), i, j))
                    }
                }
            }
        }
        pairs.sort { ($0.similarity, $1.i, $1.j) > ($1.similarity, $0.i, $0.j) }
        var match = [Int](repeating: -1, count: n)
        var taken = [Bool](repeating: false, count: n)
        var left = n
        for p in pairs where left > 0 && match[p.i] < 0 && !taken[p.j] {
            match[p.i] = p.j
            taken[p.j] = true
            left -= 1
        }
        return match
    }

    /// An expert widened to f32: gate and up `[neurons, hidden]`, down `[hidden, neurons]`, biases.
    struct Neurons {
        var gate: [Float], up: [Float], down: [Float]
        var gateBias: [Float]?, upBias: [Float]?, downBias: [Float]?
        let count: Int, hidden: Int

        init(_ e: GatedMLP) {
            count = e.gate.outFeatures
            hidden = e.gate.inFeatures
            gate = e.gate.weight.toFloatArray()
            up = e.up.weight.toFloatArray()
            down = e.down.weight.toFloatArray()
            gateBias = e.gate.bias
            upBias = e.up.bias
            downBias = e.down.bias
        }

        private init(count: Int, hidden: Int, biases: (Bool, Bool, Bool)) {
            self.count = count
            self.hidden = hidden
            gate = [Float](repeating: 0, count: count * hidden)
            up = gate
            down = gate
            gateBias = biases.0 ? [Float](repeating: 0, count: count) : nil
            upBias = biases.1 ? [Float](repeating: 0, count: count) : nil
            downBias = biases.2 ? [Float](repeating: 0, count: hidden) : nil
        }

        static func zero(like n: Neurons) -> Neurons {
            Neurons(count: n.count, hidden: n.hidden, biases: (n.gateBias != nil, n.upBias != nil, n.downBias != nil))
        }

        /// Neuron `i`'s gate row, up row and down column, concatenated and scaled to unit length.
        func unitDescriptors() -> [Float] {
            var out = [Float](repeating: 0, count: count * 3 * hidden)
            for i in 0..<count {
                let o = i * 3 * hidden
                var norm: Float = 0
                for h in 0..<hidden {
                    let values = (gate[i * hidden + h], up[i * hidden + h], down[h * count + i])
                    out[o + h] = values.0
                    out[o + hidden + h] = values.1
                    out[o + 2 * hidden + h] = values.2
                    norm += values.0 * values.0 + values.1 * values.1 + values.2 * values.2
                }
                let scale = norm > 0 ? 1 / norm.squareRoot() : 0
                for k in 0..<(3 * hidden) { out[o + k] *= scale }
            }
            return out
        }

        /// `self += weight · other`, other's neuron `permutation[i]` landing on neuron `i`.
        mutating func add(_ other: Neurons, permutation: [Int], weight: Double) {
            let w = Float(weight)
            for i in 0..<count {
                let j = permutation[i]
                for h in 0..<hidden {
                    gate[i * hidden + h] += w * other.gate[j * hidden + h]
                    up[i * hidden + h] += w * other.up[j * hidden + h]
                    down[h * count + i] += w * other.down[h * other.count + j]
                }
                if let b = other.gateBias { gateBias?[i] += w * b[j] }
                if let b = other.upBias { upBias?[i] += w * b[j] }
            }
            if let b = other.downBias { for h in 0..<hidden { downBias?[h] += w * b[h] } }
        }

        func expert(activation: GatedActivation) -> GatedMLP {
            GatedMLP(gate: Linear(weight: Tensor.owned(gate, shape: [count, hidden]), bias: gateBias),
                     up: Linear(weight: Tensor.owned(up, shape: [count, hidden]), bias: upBias),
                     down: Linear(weight: Tensor.owned(down, shape: [hidden, count]), bias: downBias),
                     activation: activation)
        }
    }
}

extension TaskPattern {
    /// Each expert's weight when merging (`ExpertMerging`): its selection frequency on the task
    /// when the pattern stores one, else its share of the routing mass.
    public var mergeWeightsByLayer: [Int: [Double]] {
        scores(named: "frequency") ?? routingMassByLayer
    }
}

extension ExpertMerging {
    /// Merge weights for a plan over several tasks (a generalist): per layer, the mean of each
    /// task's weights after scaling them to sum 1, so every task counts alike; one task's as they are.
    public static func weights(_ patterns: [TaskPattern]) -> [Int: [Double]] {
        guard patterns.count > 1 else { return patterns.first?.mergeWeightsByLayer ?? [:] }
        var out: [Int: [Double]] = [:]
        for pattern in patterns {
            for (l, w) in pattern.mergeWeightsByLayer {
                let total = w.reduce(0, +)
                let share = total > 0 ? w.map { $0 / total } : w.map { _ in 1 / Double(max(1, w.count)) }
                out[l] = out[l].map { zip($0, share).map { $0 + $1 / Double(patterns.count) } } ?? share.map { $0 / Double(patterns.count) }
            }
        }
        return out
    }

    /// Per MoE layer of `kept`, the kept experts (in plan order) with the dropped ones merged into
    /// them. `model` must hold every expert.
    /// - Throws: `PreMoeError` when a layer is not a full MoE layer or weights are missing.
    public static func mergedExperts(_ model: DecoderModel, kept: [Int: [Int]], weights: [Int: [Double]]) throws -> [Int: [GatedMLP]] {
        var out: [Int: [GatedMLP]] = [:]
        for (l, ids) in kept.sorted(by: { $0.key < $1.key }) {
            guard model.layers.indices.contains(l), case .moe(let block) = model.layers[l].feedForward else {
                throw PreMoeError.invalidBudget("layer \(l) of the plan is not a MoE layer of the model")
            }
            guard let w = weights[l] else { throw PreMoeError.unsupported("no merge weights for layer \(l)") }
            out[l] = try merge(block: block, kept: ids, weights: w)
        }
        return out
    }
}

extension DecoderModel {
    /// Prunes every MoE layer of `kept` to those original experts (in that order) with the dropped
    /// experts merged into them (`ExpertMerging`). Needs every expert held (a full model).
    /// - Throws: `PreMoeError` when a layer is not a full MoE layer or weights are missing.
    public func pruneMerging(_ kept: [Int: [Int]], weights: [Int: [Double]]) throws {
        let merged = try ExpertMerging.mergedExperts(self, kept: kept, weights: weights)
        for (l, ids) in kept.sorted(by: { $0.key < $1.key }) {
            guard let experts = merged[l], case .moe(let block) = layers[l].feedForward else { continue }
            setFeedForward(.moe(block.keeping(rows: ids, experts: experts)), layer: l)
        }
    }
}
