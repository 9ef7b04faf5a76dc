import Foundation
import Kernels

/// How typical a query's features are of the stored tasks' calibration prompts: the fallback of
/// classifier retrieval ("none of the stored tasks").
///
/// Model: every task is a Gaussian with its own mean and one shared, ridge-regularised covariance
/// over standardised features (the class model of linear discriminant analysis). A query's
/// distance is its smallest squared Mahalanobis distance to a task mean. Its typicality is the
/// share of in-store calibration prompts, each scored by a model fitted without its item
/// (5-fold cross-validation over items), that are at least as far: an empirical p-value. A query
/// falls back when its typicality is below a chosen level, so that level is also the expected
/// share of in-store prompts that fall back.
///
/// Why not the nearest sample's cosine similarity (the previous rule): measured on the demo model
/// with raw held-out questions at equal false fallbacks, WikiText paragraphs fell back 24–48% of
/// the time by nearest-sample similarity and 70% by this distance. What separates them from BoolQ's
/// Wikipedia passages lies in directions of small within-task variance, which a cosine over raw
/// features weighs by their (small) magnitude and the covariance weighs by their spread.
///
/// Features longer than `maxDimension` are first folded into that many dimensions by a seeded
/// signed hashing projection (inner products are preserved in expectation), so models with
/// 7k-wide embeddings stay at a bounded cost.
public struct TypicalityModel: Codable, Sendable, Equatable {
    /// Ridge added to the covariance's diagonal (features are standardised, so variances are about 1).
    public static let defaultRidge = 0.1
    /// Largest dimension the covariance is estimated in.
    public static let maxDimension = 1024
    /// Folds of the cross-validated in-store distances.
    static let folds = 5
    /// In-store distances kept (evenly spaced order statistics).
    static let keptDistances = 1000

    /// Dimension of the standardised features it takes.
    public var dimension: Int
    /// Dimension after the hashing projection (`dimension` when none).
    public var projected: Int
    public var ridge: Double
    /// Lower-triangular Cholesky factor `L` of `covariance + ridge·I`, packed row by row, base64 of
    /// little-endian float32.
    public var factor: String
    /// Per task, `L⁻¹ · mean`.
    public var whitenedMeans: [[Float]]
    /// Cross-validated in-store distances, ascending.
    public var inStore: [Float]

    enum CodingKeys: String, CodingKey {
        case dimension, projected, ridge, factor
        case whitenedMeans = "whitened_means"
        case inStore = "in_store"
    }

    /// A model from its parts (`fit` makes them; tests and timings build their own).
    public init(dimension: Int, projected: Int, ridge: Double, factor: String, whitenedMeans: [[Float]], inStore: [Float]) {
        self.dimension = dimension
        self.projected = projected
        self.ridge = ridge
        self.factor = factor
        self.whitenedMeans = whitenedMeans
        self.inStore = inStore
    }

    /// Fits the model.
    /// - Parameters:
    ///   - rows: standardised features, `[n × dimension]`.
    ///   - labels: task of each row (`0..<tasks`).
    ///   - items: calibration item of each row (renderings of one item stay in one fold).
    ///   - tasks: number of tasks.
    ///   - dimension: feature length.
    ///   - ridge: added to the covariance's diagonal.
    /// - Returns: nil when there are fewer than two items (nothing to cross-validate).
    static func fit(rows: [Float], labels: [Int], items: [Int], tasks: Int, dimension: Int,
                    ridge: Double = defaultRidge) -> TypicalityModel? {
        let n = labels.count
        let k = min(dimension, maxDimension)
        let projected = dimension > k ? project(rows: rows, n: n, from: dimension, to: k) : rows.map(Double.init)
        let folds = Set(items).count >= folds ? folds : Set(items).count
        guard folds >= 2 else { return nil }
        // Distances of each fold's rows under a model fitted without that fold.
        var inStore: [Float] = []
        inStore.reserveCapacity(n)
        for f in 0..<folds {
            let train = (0..<n).filter { items[$0] % folds != f }
            let held = (0..<n).filter { items[$0] % folds == f }
            guard !held.isEmpty, let gaussian = Gaussians(rows: projected, select: train, labels: labels, tasks: tasks, dimension: k, ridge: ridge)
            else { continue }
            // Scored as queries are (float32), so the reference distribution and a query's
            // distance come from the same arithmetic.
            let scorer = gaussian.scorer(ridge: ridge)
            for r in held { inStore.append(Float(scorer.distance(projected[(r * k)..<((r + 1) * k)].map(Float.init)))) }
        }
        guard !inStore.isEmpty,
              let all = Gaussians(rows: projected, select: Array(0..<n), labels: labels, tasks: tasks, dimension: k, ridge: ridge)
        else { return nil }
        inStore.sort()
        let kept = inStore.count <= keptDistances ? inStore
            : (0..<keptDistances).map { inStore[Int(Double($0) * Double(inStore.count - 1) / Double(keptDistances - 1))] }
        return TypicalityModel(dimension: dimension, projected: k, ridge: ridge, factor: encode(all.factor),
                               whitenedMeans: all.whitenedMeans.map { $0.map(Float.init) }, inStore: kept)
    }

    /// A fitted model, ready to score (the factor decoded once).
    public struct Scorer: Sendable {
        let model: TypicalityModel
        /// Packed lower-triangular factor.
        let factor: [Float]
        /// `‖L⁻¹ mean‖²` per task.
        let meanNorms: [Float]

        init(model: TypicalityModel, factor: [Float]) {
            self.model = model
            self.factor = factor
            meanNorms = model.whitenedMeans.map { m in m.reduce(0) { $0 + $1 * $1 } }
        }

        /// Smallest squared Mahalanobis distance of standardised `features` to a task mean.
        public func distance(_ features: [Float]) -> Double {
            let k = model.projected
            let x = model.dimension > k
                ? TypicalityModel.project(rows: features, n: 1, from: model.dimension, to: k).map(Float.init)
                : features
            // y = L⁻¹ x by forward substitution, each row's sum one vector dot product.
            var y = [Float](repeating: 0, count: k)
            factor.withUnsafeBufferPointer { l in
                y.withUnsafeMutableBufferPointer { y in
                    for i in 0..<k {
                        let row = l.baseAddress! + i * (i + 1) / 2
                        let s = i > 0 ? Self.rowDot(row, y.baseAddress!, count: i) : 0
                        y[i] = (x[i] - s) / row[i]
                    }
                }
            }
            // ‖y − m‖² = ‖y‖² − 2 y·m + ‖m‖².
            let norm = y.withUnsafeBufferPointer { Kernels.dot($0.baseAddress!, $0.baseAddress!, count: k) }
            var best = Double.infinity
            for (t, mean) in model.whitenedMeans.enumerated() {
                let cross = y.withUnsafeBufferPointer { y in mean.withUnsafeBufferPointer { Kernels.dot(y.baseAddress!, $0.baseAddress!, count: k) } }
                best = min(best, Double(norm) - 2 * Double(cross) + Double(meanNorms[t]))
            }
            return max(0, best)
        }

        /// `a · b` over four independent vector sums: the substitution's rows are long (up to the
        /// 800 projected features) and one running sum waits on each multiply-add in turn.
        static func rowDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
            var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
            func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
            var i = 0
            while i + 32 <= count {
                s0.addProduct(load(a + i), load(b + i))
                s1.addProduct(load(a + i + 8), load(b + i + 8))
                s2.addProduct(load(a + i + 16), load(b + i + 16))
                s3.addProduct(load(a + i + 24), load(b + i + 24))
                i += 32
            }
            while i + 8 <= count {
                s0.addProduct(load(a + i), load(b + i))
                i += 8
            }
            var total = ((s0 + s1) + (s2 + s3)).sum()
            while i < count {
                total = total.addingProduct(a[i], b[i])
                i += 1
            }
            return total
        }

        /// Share of in-store calibration prompts at least as far as `features` (1: as typical as
        /// the closest; near 0: farther than all of them).
        public func typicality(_ features: [Float]) -> Double {
            let d = Float(distance(features))
            let inStore = model.inStore
            // First index with a distance ≥ d.
            var lo = 0, hi = inStore.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if inStore[mid] < d { lo = mid + 1 } else { hi = mid }
            }
            return Double(inStore.count - lo) / Double(max(1, inStore.count))
        }
    }

    /// Decodes the factor.
    /// - Throws: `PreMoeError.unsupported` when it is not valid base64 of the right length.
    public func scorer() throws -> Scorer {
        let count = projected * (projected + 1) / 2
        guard let data = Data(base64Encoded: factor), data.count == count * 4,
              whitenedMeans.allSatisfy({ $0.count == projected })
        else {
            throw PreMoeError.unsupported("the task classifier's typicality model is damaged (expected \(count) factor values "
                + "and means of length \(projected)); delete the store's .task-classifier.json to refit it")
        }
        let values = data.withUnsafeBytes { raw in
            (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
        return Scorer(model: self, factor: values)
    }

    /// A packed factor as stored in `factor` (base64 of little-endian float32).
    public static func encode(_ values: [Double]) -> String {
        var data = Data(capacity: values.count * 4)
        for v in values {
            withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { data.append(contentsOf: $0) }
        }
        return data.base64EncodedString()
    }

    /// Signed hashing projection of `n` rows from `from` to `to` dimensions: input `i` goes to
    /// output `h(i)` with sign `s(i)`, both drawn from a seeded SplitMix64 (the same for every call).
    static func project(rows: [Float], n: Int, from d: Int, to k: Int) -> [Double] {
        var generator = SplitMix64(seed: 0x7E11_CA11)
        var target = [Int](repeating: 0, count: d)
        var sign = [Double](repeating: 1, count: d)
        for i in 0..<d {
            let r = generator.next()
            target[i] = Int(r % UInt64(k))
            sign[i] = (r >> 63) == 0 ? 1 : -1
        }
        var out = [Double](repeating: 0, count: n * k)
        for r in 0..<n {
            for i in 0..<d { out[r * k + target[i]] += sign[i] * Double(rows[r * d + i]) }
        }
        return out
    }
}

/// Task means and a shared covariance's Cholesky factor, fitted on selected rows.
struct Gaussians {
    /// Packed lower triangle of `L` with `L Lᵀ = covariance + ridge·I`.
    let factor: [Double]
    /// Per task `L⁻¹ · mean` (tasks without rows are left out).
    let whitenedMeans: [[Double]]
    let dimension: Int

    init?(rows: [Double], select: [Int], labels: [Int], tasks: Int, dimension d: Int, ridge: Double) {
        var means = [[Double]](repeating: [Double](repeating: 0, count: d), count: tasks)
        var counts = [Int](repeating: 0, count: tasks)
        for r in select {
            counts[labels[r]] += 1
            for i in 0..<d { means[labels[r]][i] += rows[r * d + i] }
        }
        for t in 0..<tasks where counts[t] > 0 { for i in 0..<d { means[t][i] /= Double(counts[t]) } }
        // Within-task covariance (lower triangle, full storage for the rank-1 updates).
        var covariance = [Double](repeating: 0, count: d * d)
        var centred = [Double](repeating: 0, count: d)
        covariance.withUnsafeMutableBufferPointer { c in
            centred.withUnsafeMutableBufferPointer { x in
                for r in select {
                    let m = means[labels[r]]
                    for i in 0..<d { x[i] = rows[r * d + i] - m[i] }
                    for i in 0..<d {
                        let xi = x[i]
                        let row = c.baseAddress! + i * d
                        for j in 0...i { row[j] += xi * x[j] }
                    }
                }
            }
        }
        let scale = 1 / Double(max(1, select.count - tasks))
        var packed = [Double](repeating: 0, count: d * (d + 1) / 2)
        for i in 0..<d {
            for j in 0...i { packed[i * (i + 1) / 2 + j] = covariance[i * d + j] * scale + (i == j ? ridge : 0) }
        }
        guard let factor = Self.cholesky(packed, dimension: d) else { return nil }
        self.factor = factor
        self.dimension = d
        whitenedMeans = (0..<tasks).filter { counts[$0] > 0 }.map { Self.forwardSubstitute(factor, means[$0], dimension: d) }
    }

    /// A scorer of already projected features under these Gaussians (float32, as stored).
    func scorer(ridge: Double) -> TypicalityModel.Scorer {
        let model = TypicalityModel(dimension: dimension, projected: dimension, ridge: ridge, factor: "",
                                    whitenedMeans: whitenedMeans.map { $0.map(Float.init) }, inStore: [])
        return TypicalityModel.Scorer(model: model, factor: factor.map(Float.init))
    }

    /// In-place Cholesky of a packed lower triangle; nil when not positive definite.
    static func cholesky(_ a: [Double], dimension d: Int) -> [Double]? {
        var l = a
        for i in 0..<d {
            let ri = i * (i + 1) / 2
            for j in 0...i {
                let rj = j * (j + 1) / 2
                var s = l[ri + j]
                for k in 0..<j { s -= l[ri + k] * l[rj + k] }
                if i == j {
                    guard s > 0 else { return nil }
                    l[ri + i] = s.squareRoot()
                } else {
                    l[ri + j] = s / l[rj + j]
                }
            }
        }
        return l
    }

    /// Solves `L y = x` for a packed lower-triangular `L`.
    static func forwardSubstitute(_ l: [Double], _ x: [Double], dimension d: Int) -> [Double] {
        var y = [Double](repeating: 0, count: d)
        for i in 0..<d {
            let ri = i * (i + 1) / 2
            var s = x[i]
            for k in 0..<i { s -= l[ri + k] * y[k] }
            y[i] = s / l[ri + i]
        }
        return y
    }
}
