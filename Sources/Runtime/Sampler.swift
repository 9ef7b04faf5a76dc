import Foundation
import Kernels

/// Chooses the next token from logits: greedy, or seeded temperature / top-k / top-p sampling.
public struct Sampler: Sendable {
    /// 0 means greedy (argmax, ties to the lower id).
    public var temperature: Float
    /// Keep only the `topK` most likely tokens (0 = all).
    public var topK: Int
    /// Keep the smallest set of tokens whose probability reaches `topP` (1 = all).
    public var topP: Float
    private var rng: SplitMix64

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        rng = SplitMix64(seed: seed)
    }

    /// Applies a repetition penalty in place, as transformers' `RepetitionPenaltyLogitsProcessor`
    /// does: the logit of every token in `history` (once per distinct token) is divided by
    /// `penalty` when positive and multiplied by it when negative. `penalty` 1 changes nothing.
    public static func penalizeRepetitions(_ logits: inout [Float], history: [Int], penalty: Float) {
        guard penalty != 1 else { return }
        for id in Set(history) where id >= 0 && id < logits.count {
            logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty
        }
    }

    /// Greedy choice: the largest logit, ties to the lower id, NaN never chosen; nil when every
    /// logit is NaN (or there is none).
    public static func argmax(_ logits: [Float]) -> Int? {
        var best: Int?
        var bestValue = -Float.infinity
        for (i, v) in logits.enumerated() where !v.isNaN && (best == nil || v > bestValue) {
            best = i
            bestValue = v
        }
        return best
    }

    /// The next token for `logits` (`[vocab]`), nil when every logit is NaN (there is no
    /// candidate to choose from).
    public mutating func sample(_ logits: [Float]) -> Int? {
        guard temperature > 0 else { return Self.argmax(logits) }
        // Candidates sorted by logit, descending (ties to the lower id), the `topK` best when set:
        // the routers' ranking, which puts NaN last, so those are dropped from the tail.
        guard !logits.isEmpty else { return nil }
        var order = logits.withUnsafeBufferPointer { values in
            Kernels.topK(values.baseAddress!, count: values.count, k: topK > 0 ? topK : values.count)
        }
        while let last = order.last, logits[last].isNaN { order.removeLast() }
        guard !order.isEmpty else { return nil }
        let maxLogit = logits[order[0]]
        var probs = order.map { Double(exp((logits[$0] - maxLogit) / temperature)) }
        var total = probs.reduce(0, +)
        if topP < 1 {
            var cumulative = 0.0
            var keep = probs.count
            for (i, p) in probs.enumerated() {
                cumulative += p / total
                if cumulative >= Double(topP) {
                    keep = i + 1
                    break
                }
            }
            probs.removeSubrange(keep...)
            order.removeSubrange(keep...)
            total = probs.reduce(0, +)
        }
        let r = rng.nextUnit() * total
        var acc = 0.0
        for (i, p) in probs.enumerated() {
            acc += p
            if r < acc { return order[i] }
        }
        return order[order.count - 1]
    }
}
