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
/// - Fallback, two ways:
///   - the query's typicality (`TypicalityModel`): the share of in-store calibration prompts,
///     scored out of fold, that lie at least as far from every task under one shared covariance.
///     Below `minTypicality` the query is out of store, so about that share of in-store queries
///     fall back (the false-fallback rate is chosen, not discovered);
///   - a "none" class beside the tasks, fitted on the tasks' context texts (`TaskQuery.context`:
///     passages alone, long answers alone), weighted as much as an average task: when it is more
///     probable than every task, the query reads like the stored tasks' material without their
///     request. Typicality alone cannot see that: a paragraph of Wikipedia lies as close to BoolQ's
///     passage-plus-question queries as those queries lie to each other. Measured on the demo
///     model (held-out queries as typed; docs/RESULTS.md), with the router-input features it
///     moved WikiText paragraphs falling back from 56% to 80% and the GPL's paragraphs to 74%
///     (16% in a replica of the rule before), for 1–2 points more false fallbacks on in-store
///     queries; neither text is in any calibration set.
public struct TaskClassifier: Codable, Sendable {
    public static let currentVersion = 3

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
    /// The "none" class's weights and bias; nil when fitted without context samples.
    public var noneWeights: [Float]?
    public var noneBias: Float?
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
        case noneWeights = "none_weights"
        case noneBias = "none_bias"
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
        noneWeights = try c.decodeIfPresent([Float].self, forKey: .noneWeights)
        noneBias = try c.decodeIfPresent(Float.self, forKey: .noneBias)
        key = try c.decode(String.self, forKey: .key)
        guard noneWeights.map({ $0.count == mean.count }) ?? true, (noneWeights == nil) == (noneBias == nil) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.noneWeights],
                                                    debugDescription: "none_weights must have one value per feature, with none_bias"))
        }
    }

    public init(version: Int = currentVersion, features: String, tasks: [String], mean: [Float], scale: [Float],
                weights: [[Float]], bias: [Float], noneWeights: [Float]? = nil, noneBias: Float? = nil,
                minTypicality: Double, typicality: TypicalityModel?, key: String) {
        self.version = version
        self.features = features
        self.tasks = tasks
        self.mean = mean
        self.scale = scale
        self.weights = weights
        self.bias = bias
        self.noneWeights = noneWeights
        self.noneBias = noneBias
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
        /// Probability of the "none" class (nil without one); `probabilities` and it sum to 1.
        public var noneProbability: Double?
    }

    /// Fits the classifier.
    /// - Parameters:
    ///   - tasks: names, indexed by `RetrievalSample.task`.
    ///   - samples: at least one per task, all of one length.
    ///   - features: the feature definition's name.
    ///   - context: feature vectors of the tasks' context texts, the "none" class (none: no such class).
    ///   - key: the cache key to record.
    /// - Throws: `PreMoeError.unsupported` for no task (one task is fitted trivially), a task without samples, or
    ///   samples of different lengths or with non-finite values.
    public static func fit(tasks: [String], samples: [RetrievalSample], features: String,
                           context: [[Float]] = [], settings: Settings = Settings(), key: String = "") throws -> TaskClassifier {
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
        guard context.allSatisfy({ $0.count == d && $0.allSatisfy(\.isFinite) }) else {
            throw PreMoeError.unsupported("context samples must have \(d) finite values each")
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
        // Standardised with the in-store samples' statistics; the context rows follow them.
        var x = [Float](repeating: 0, count: (n + context.count) * d)
        for (r, features) in (samples.map(\.features) + context).enumerated() {
            for i in 0..<d { x[r * d + i] = (features[i] - meanF[i]) / scale[i] }
        }
        let labels = samples.map(\.task) + [Int](repeating: tasks.count, count: context.count)
        let classes = tasks.count + (context.isEmpty ? 0 : 1)
        // The none class weighs as much as an average task, however many context texts there are.
        var classWeights = [Float](repeating: 1, count: classes)
        if !context.isEmpty { classWeights[tasks.count] = Float(n) / Float(tasks.count) / Float(context.count) }
        var (weights, bias) = classes == 1
            ? ([[Float](repeating: 0, count: d)], [Float(0)])
            : optimise(x: x, labels: labels, d: d, classes: classes, classWeights: classWeights, settings: settings)
        var noneWeights: [Float]?, noneBias: Float?
        if !context.isEmpty {
            noneWeights = weights.removeLast()
            noneBias = bias.removeLast()
        }
        let typicality = settings.fitsTypicality
            ? TypicalityModel.fit(rows: Array(x[0..<(n * d)]), labels: samples.map(\.task), items: samples.map(\.item),
                                  tasks: tasks.count, dimension: d)
            : nil
        return TaskClassifier(version: currentVersion, features: features, tasks: tasks, mean: meanF, scale: scale,
                              weights: weights, bias: bias, noneWeights: noneWeights, noneBias: noneBias,
                              minTypicality: settings.minTypicality, typicality: typicality, key: key)
    }

    /// Multinomial logistic regression by full-batch Adam on the weighted mean cross-entropy + L2
    /// (`classWeights[k]` multiplies the loss of a sample of class `k`); `x` holds one row of `d`
    /// values per label.
    static func optimise(x: [Float], labels: [Int], d: Int, classes c: Int, classWeights: [Float],
                         settings: Settings) -> ([[Float]], [Float])
    {
        let n = labels.count
        var w = [Float](repeating: 0, count: c * (d + 1))  // row k: d weights then the bias
        var m = [Float](repeating: 0, count: w.count)
        var v = [Float](repeating: 0, count: w.count)
        var grad = [Float](repeating: 0, count: w.count)
        var logits = [Float](repeating: 0, count: c)
        let beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
        let lr = Float(settings.learningRate), l2 = Float(settings.l2)
        let stride = d + 1
        let inv = 1 / labels.reduce(Float(0)) { $0 + classWeights[$1] }
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
                            let weight = classWeights[labels[r]]
                            for k in 0..<c {
                                let delta = weight * (logits[k] / total - (labels[r] == k ? 1 : 0))
                                let gk = gs.baseAddress! + k * stride
                                for i in 0..<d { gk[i] += delta * row[i] }
                                gk[d] += delta
                            }
                        }
                    }
                }
            }
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
        if let noneWeights, let noneBias { logits.append(Double(noneBias) + Self.dot(noneWeights, x)) }
        let top = logits.max() ?? 0
        logits = logits.map { Foundation.exp($0 - top) }
        let total = logits.reduce(0, +)
        var probabilities = logits.map { $0 / total }
        let none = noneWeights == nil ? nil : probabilities.removeLast()
        let best = probabilities.indices.max { (probabilities[$0], -$0) < (probabilities[$1], -$1) } ?? 0
        return Decision(probabilities: probabilities, best: best, typicality: scorer?.typicality(x), noneProbability: none)
    }
}
