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
        // The first of the shared ranking (larger first, ties to the lower index, NaN last).
        logits.withUnsafeBufferPointer { values in
            guard let base = values.baseAddress, let first = Kernels.topK(base, count: values.count, k: 1).first,
                  !values[first].isNaN else { return nil }
            return first
        }
    }

    /// Candidates ranked before the whole vocabulary is: most draws (and top-p cuts) end among
    /// the best few dozen tokens. (Tests lower it to send draws past the head.) A head defined
    /// by weight instead (tokens within e^-16 of the best) measured slower on the demo model,
    /// whose flat distributions put thousands of tokens in it.
    var headCount = 64

    /// The sampling weight of every logit, `exp((logit − maxLogit) / temperature)` by the
    /// kernels' vector exp (0 for NaN), and their total (f64 lanes, then the lanes in order).
    /// One pass over the vocabulary with no scalar `exp`: the sampler's per-token cost.
    static func weights(_ logits: UnsafePointer<Float>, count: Int, maxLogit: Float, temperature: Float)
        -> (weights: [Float], total: Double) {
        var lanes = SIMD8<Double>()
        // Every element is written by the scaling pass before anything reads it.
        let weights = [Float](unsafeUninitializedCapacity: count) { w, initialized in
            initialized = count
            guard let out = w.baseAddress else { return }
            let m = SIMD8<Float>(repeating: maxLogit), t = SIMD8<Float>(repeating: temperature)
            var i = 0
            while i + 8 <= count {
                let v = UnsafeRawPointer(logits + i).loadUnaligned(as: SIMD8<Float>.self)
                var scaled = (v - m) / t
                scaled.replace(with: -.infinity, where: v .!= v)
                UnsafeMutableRawPointer(out + i).storeBytes(of: scaled, as: SIMD8<Float>.self)
                i += 8
            }
            for j in i..<count { out[j] = logits[j].isNaN ? -.infinity : (logits[j] - maxLogit) / temperature }
            exponential(out, into: out, count: count)
            i = 0
            while i + 8 <= count {
                let e = UnsafeRawPointer(out + i).loadUnaligned(as: SIMD8<Float>.self)
                lanes += SIMD8<Double>(Double(e[0]), Double(e[1]), Double(e[2]), Double(e[3]),
                                       Double(e[4]), Double(e[5]), Double(e[6]), Double(e[7]))
                i += 8
            }
            for j in i..<count { lanes[j - i] += Double(out[j]) }
        }
        var total = 0.0
        for l in 0..<8 { total += lanes[l] }
        return (weights, total)
    }

    /// The next token for `logits` (`[vocab]`), nil when every logit is NaN (there is no
    /// candidate to choose from).
    ///
    /// The candidates are the tokens in ranking order (larger logit first, ties to the lower id,
    /// NaN never), the `topK` best when set; each weighs `exp((logit − max) / temperature)`
    /// (`weights`); top-p keeps the shortest prefix whose share of the total weight reaches
    /// `topP`; one uniform draw over the kept weight walks the prefix. Without `topK`, only the
    /// first `headCount` candidates are ranked (one selection pass) and one vector pass weighs
    /// every token; four heads are ranked when the walk or the cut goes past the head (2 of 114
    /// draws on the demo model at temperature 0.7), and the whole vocabulary only past those.
    /// Each stretch is a prefix of the full ranking, so the walk is the one a full ranking gives.
    public mutating func sample(_ logits: [Float]) -> Int? {
        guard temperature > 0 else { return Self.argmax(logits) }
        guard !logits.isEmpty else { return nil }
        return logits.withUnsafeBufferPointer { values in
            let base = values.baseAddress!
            let count = values.count
            let temperature = temperature
            // The `k` best candidates in ranking order (NaN ranks last and is dropped).
            func best(_ k: Int) -> [Int] {
                var order = Kernels.topK(base, count: count, k: k)
                while let last = order.last, values[last].isNaN { order.removeLast() }
                return order
            }
            let restricted = topK > 0 && topK < count
            var order = best(restricted ? topK : min(count, headCount))
            guard let first = order.first else { return nil }
            let maxLogit = values[first]
            var total = 0.0
            var all: [Float] = []
            if restricted {
                for i in order { total += Double(exponential((values[i] - maxLogit) / temperature)) }
            } else {
                (all, total) = Self.weights(base, count: count, maxLogit: maxLogit, temperature: temperature)
            }
            // The same value either way: `exponential(_:)` equals the vector pass's lanes.
            func weight(_ i: Int) -> Double {
                restricted ? Double(exponential((values[i] - maxLogit) / temperature)) : Double(all[i])
            }
            // Every candidate is in `order`: topK's set, the whole of a small vocabulary, or a head
            // that NaNs cut short.
            var ranked = restricted || count <= headCount || order.count < headCount
            // The ranking's next stretch: four heads (one more selection pass), then all of it.
            func rankMore() {
                let k = order.count < 4 * headCount ? min(count, 4 * headCount) : count
                order = best(k)
                ranked = k == count || order.count < k
            }
            if topP < 1 {
                // The shortest prefix reaching topP of the weight, and the weight it keeps.
                var cumulative = 0.0, kept = 0.0, keep = -1
                var i = 0
                while keep < 0 {
                    if i == order.count {
                        if ranked { keep = order.count; break }
                        rankMore()
                        continue
                    }
                    let w = weight(order[i])
                    cumulative += w / total
                    kept += w
                    i += 1
                    if cumulative >= Double(topP) { keep = i }
                }
                order.removeSubrange(keep...)
                total = kept
                ranked = true
            }
            let r = rng.nextUnit() * total
            var acc = 0.0
            var i = 0
            while true {
                if i == order.count {
                    if ranked { return order[order.count - 1] }
                    rankMore()
                    continue
                }
                acc += weight(order[i])
                if r < acc { return order[i] }
                i += 1
            }
        }
    }
}
