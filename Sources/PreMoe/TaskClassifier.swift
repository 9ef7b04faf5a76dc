import Foundation
import Kernels

/// One labelled query feature vector (`QueryFeatures`) for fitting the classifier.
public struct RetrievalSample: Sendable {
    /// Index into the classifier's task list.
    public var task: Int
    /// The calibration item it was rendered from: renderings of one item share it, so the
    /// held-out statistics below never compare a query with another rendering of itself.
    public var item: Int
    public var features: [Float]

    public init(task: Int, item: Int, features: [Float]) {
        self.task = task
        self.item = item
        self.features = features
    }
}

/// Which stored task a query belongs to, from `QueryFeatures`, with a calibrated way to say
/// "none of them".
///
/// - Decision: multinomial logistic regression on standardised features (the SEAP task router's
///   model, fitted here in Swift), L2-regularised, full-batch Adam.
/// - Fallback: the query's typicality (`TypicalityModel`): the share of in-store calibration
///   prompts, scored out of fold, that lie at least as far from every task under one shared
///   covariance. Below `minTypicality` the query is out of store, so about that share of in-store
///   queries fall back (the false-fallback rate is chosen, not discovered).
public struct TaskClassifier: Codable, Sendable {
    public static let currentVersion = 2

    public var version: Int
    /// `QueryFeatures.name` of the samples it was fitted on.
    public var features: String
    /// Task names, in the order of `weights`' rows.
    public var tasks: [String]
    /// Standardisation: `x' = (x − mean) / scale`.
    public var mean: [Float]
    public var scale: [Float]
    /// `[tasks][dimension]` and `[tasks]`.
    public var weights: [[Float]]
    public var bias: [Float]
    /// Typicality below which a query falls back.
    public var minTypicality: Double
    /// The fallback's model; nil when the samples could not be cross-validated (one item).
    public var typicality: TypicalityModel?
    /// Hash of everything the fit depended on (samples, settings), to know when to refit.
    public var key: String

    enum CodingKeys: String, CodingKey {
        case version, features, tasks, mean, scale, weights, bias, key
        case typicality
        case minTypicality = "min_typicality"
    }

    /// Decodes a stored classifier. Files written before the typicality fallback (a SEAP
    /// profile's router, version 1) have no `min_typicality`: they get the default threshold,
    /// and having no typicality model they never fall back.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        features = try c.decode(String.self, forKey: .features)
        tasks = try c.decode([String].self, forKey: .tasks)
        mean = try c.decode([Float].self, forKey: .mean)
        scale = try c.decode([Float].self, forKey: .scale)
        weights = try c.decode([[Float]].self, forKey: .weights)
        bias = try c.decode([Float].self, forKey: .bias)
        minTypicality = try c.decodeIfPresent(Double.self, forKey: .minTypicality) ?? Settings().minTypicality
        typicality = try c.decodeIfPresent(TypicalityModel.self, forKey: .typicality)
        key = try c.decode(String.self, forKey: .key)
    }

    public init(version: Int = currentVersion, features: String, tasks: [String], mean: [Float], scale: [Float],
                weights: [[Float]], bias: [Float], minTypicality: Double, typicality: TypicalityModel?, key: String) {
        self.version = version
        self.features = features
        self.tasks = tasks
        self.mean = mean
        self.scale = scale
        self.weights = weights
        self.bias = bias
        self.minTypicality = minTypicality
        self.typicality = typicality
        self.key = key
    }

    /// Settings of a fit; part of the cache key.
    public struct Settings: Sendable, Equatable {
        /// L2 penalty on the weights (per sample, standardised features).
        public var l2: Double = 1e-3
        public var iterations: Int = 300
        public var learningRate: Double = 0.05
        /// Share of in-store queries allowed to fall back (the typicality threshold).
        public var minTypicality: Double = 0.05
        /// Fit the fallback's typicality model (SEAP's router, which never falls back, skips it).
        public var fitsTypicality = true
        public init() {}
        var description: String {
            "l2=\(l2),it=\(iterations),lr=\(learningRate),typ=\(minTypicality),\(fitsTypicality ? TypicalityModel.defaultRidge : 0)"
        }
    }

    /// What the classifier says about one query.
    public struct Decision: Sendable {
        /// Probability of each task, in `tasks` order.
        public var probabilities: [Double]
        /// The most probable task's index.
        public var best: Int
        /// Typicality of the query (nil without a typicality model).
        public var typicality: Double?
    }

    /// Fits the classifier.
    /// - Parameters:
    ///   - tasks: names, indexed by `RetrievalSample.task`.
    ///   - samples: at least one per task, all of one length.
    ///   - features: the feature definition's name.
    ///   - key: the cache key to record.
    /// - Throws: `PreMoeError.unsupported` for no task (one task is fitted trivially), a task without samples, or
    ///   samples of different lengths or with non-finite values.
    public static func fit(tasks: [String], samples: [RetrievalSample], features: String,
                           settings: Settings = Settings(), key: String = "") throws -> TaskClassifier {
        guard tasks.count >= 1 else { throw PreMoeError.unsupported("a task classifier needs at least one task") }
        guard let d = samples.first?.features.count, d > 0 else {
            throw PreMoeError.unsupported("no retrieval samples to fit a task classifier on")
        }
        var counts = [Int](repeating: 0, count: tasks.count)
        for s in samples {
            guard s.task >= 0, s.task < tasks.count else { throw PreMoeError.unsupported("sample of unknown task \(s.task)") }
            guard s.features.count == d, s.features.allSatisfy(\.isFinite) else {
                throw PreMoeError.unsupported("retrieval samples of '\(tasks[s.task])' have \(s.features.count) values "
                    + "(expected \(d)) or non-finite ones")
            }
            counts[s.task] += 1
        }
        if let empty = counts.firstIndex(of: 0) {
            throw PreMoeError.unsupported("task '\(tasks[empty])' has no retrieval samples")
        }
        let n = samples.count
        // Standardise.
        var mean = [Double](repeating: 0, count: d)
        var square = [Double](repeating: 0, count: d)
        for s in samples {
            for i in 0..<d {
                let v = Double(s.features[i])
                mean[i] += v
                square[i] += v * v
            }
        }
        for i in 0..<d {
            mean[i] /= Double(n)
            square[i] = (square[i] / Double(n) - mean[i] * mean[i]).squareRoot()
        }
        let scale = square.map { $0 > 1e-8 ? Float($0) : 1 }
        let meanF = mean.map { Float($0) }
        var x = [Float](repeating: 0, count: n * d)
        for (r, s) in samples.enumerated() {
            for i in 0..<d { x[r * d + i] = (s.features[i] - meanF[i]) / scale[i] }
        }
        let (weights, bias) = tasks.count == 1
            ? ([[Float](repeating: 0, count: d)], [Float(0)])
            : optimise(x: x, labels: samples.map(\.task), n: n, d: d, classes: tasks.count, settings: settings)
        let typicality = settings.fitsTypicality
            ? TypicalityModel.fit(rows: x, labels: samples.map(\.task), items: samples.map(\.item), tasks: tasks.count, dimension: d)
            : nil
        return TaskClassifier(version: currentVersion, features: features, tasks: tasks, mean: meanF, scale: scale,
                              weights: weights, bias: bias, minTypicality: settings.minTypicality, typicality: typicality, key: key)
    }

    /// Multinomial logistic regression by full-batch Adam on the mean cross-entropy + L2.
    static func optimise(x: [Float], labels: [Int], n: Int, d: Int, classes c: Int, settings: Settings)
        -> ([[Float]], [Float])
    {
        var w = [Float](repeating: 0, count: c * (d + 1))  // row k: d weights then the bias
        var m = [Float](repeating: 0, count: w.count)
        var v = [Float](repeating: 0, count: w.count)
        var grad = [Float](repeating: 0, count: w.count)
        var logits = [Float](repeating: 0, count: c)
        let beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
        let lr = Float(settings.learningRate), l2 = Float(settings.l2)
        let stride = d + 1
        for step in 1...max(1, settings.iterations) {
            for i in grad.indices { grad[i] = 0 }
            x.withUnsafeBufferPointer { xs in
                w.withUnsafeBufferPointer { ws in
                    grad.withUnsafeMutableBufferPointer { gs in
                        for r in 0..<n {
                            let row = xs.baseAddress! + r * d
                            var maxLogit = -Float.infinity
                            for k in 0..<c {
                                let wk = ws.baseAddress! + k * stride
                                var s = wk[d]
                                for i in 0..<d { s += wk[i] * row[i] }
                                logits[k] = s
                                maxLogit = max(maxLogit, s)
                            }
                            var total: Float = 0
                            for k in 0..<c {
                                logits[k] = Foundation.exp(logits[k] - maxLogit)
                                total += logits[k]
                            }
                            for k in 0..<c {
                                let delta = logits[k] / total - (labels[r] == k ? 1 : 0)
                                let gk = gs.baseAddress! + k * stride
                                for i in 0..<d { gk[i] += delta * row[i] }
                                gk[d] += delta
                            }
                        }
                    }
                }
            }
            let inv = 1 / Float(n)
            let correction1 = 1 - Foundation.pow(beta1, Float(step))
            let correction2 = 1 - Foundation.pow(beta2, Float(step))
            for k in 0..<c {
                for i in 0...d {
                    let j = k * stride + i
                    let g = grad[j] * inv + (i < d ? l2 * w[j] : 0)
                    m[j] = beta1 * m[j] + (1 - beta1) * g
                    v[j] = beta2 * v[j] + (1 - beta2) * g * g
                    w[j] -= lr * (m[j] / correction1) / ((v[j] / correction2).squareRoot() + eps)
                }
            }
        }
        let weights = (0..<c).map { k in Array(w[(k * stride)..<(k * stride + d)]) }
        let bias = (0..<c).map { w[$0 * stride + d] }
        return (weights, bias)
    }

    /// `v / ‖v‖` (a zero vector stays zero).
    public static func unitVector(_ v: [Float]) -> [Float] {
        let norm = v.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
        return norm > 0 ? v.map { $0 / norm } : v
    }

    static func dot(_ a: [Float], _ b: [Float]) -> Double {
        guard !a.isEmpty, !b.isEmpty else { return 0 }
        return a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in Double(Kernels.dot(a.baseAddress!, b.baseAddress!, count: min(a.count, b.count))) }
        }
    }

    /// Standardised features (`(x − mean) / scale`).
    func standardised(_ features: [Float]) -> [Float] {
        (0..<mean.count).map { (features[$0] - mean[$0]) / scale[$0] }
    }

    /// Classifies one query.
    /// - Parameters:
    ///   - features: the query's `QueryFeatures`.
    ///   - typicality: the decoded `typicality` model (`TypicalityModel.scorer()`), when the
    ///     caller wants the fallback score.
    /// - Throws: `PreMoeError.unsupported` when the length differs from the fit's.
    public func decide(_ features: [Float], typicality scorer: TypicalityModel.Scorer? = nil) throws -> Decision {
        let d = mean.count
        guard features.count == d else {
            throw PreMoeError.unsupported("query features have \(features.count) values, the classifier \(d)")
        }
        let x = standardised(features)
        var logits = (0..<tasks.count).map { k in Double(bias[k]) + Self.dot(weights[k], x) }
        let top = logits.max() ?? 0
        logits = logits.map { Foundation.exp($0 - top) }
        let total = logits.reduce(0, +)
        let probabilities = logits.map { $0 / total }
        let best = probabilities.indices.max { (probabilities[$0], -$0) < (probabilities[$1], -$1) } ?? 0
        return Decision(probabilities: probabilities, best: best, typicality: scorer?.typicality(x))
    }
}
