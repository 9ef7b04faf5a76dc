import Foundation
import Models
import PreMoe

/// What `premoe seap profile` stores: per task the activation statistics, and the task router.
/// Plain JSON, versioned.
public struct SEAPProfile: Codable {
    public static let currentVersion = 1
    public var version = currentVersion
    /// The unpruned model's shape (`SEAPMask` checks the same fields).
    public var layerCount: Int
    public var hiddenSize: Int
    /// task → statistics.
    public var tasks: [String: ActivationStats]
    /// task → calibration tokens.
    public var tokens: [String: Int]
    public var router: SEAPRouter?

    enum CodingKeys: String, CodingKey {
        case version, tasks, tokens, router
        case layerCount = "layer_count"
        case hiddenSize = "hidden_size"
    }

    public init(spec: DecoderSpec, tasks: [String: ActivationStats] = [:], tokens: [String: Int] = [:], router: SEAPRouter? = nil) {
        layerCount = spec.layerCount
        hiddenSize = spec.hiddenSize
        self.tasks = tasks
        self.tokens = tokens
        self.router = router
    }

    /// Reads a profile and checks it against `spec`.
    /// - Throws: `SEAPError.invalidFile`.
    public static func read(_ url: URL, spec: DecoderSpec) throws -> SEAPProfile {
        let profile: SEAPProfile
        do {
            profile = try JSONDecoder().decode(SEAPProfile.self, from: Data(contentsOf: url))
        } catch let error as SEAPError {
            throw error
        } catch {
            throw SEAPError.invalidFile("\(url.path): \(error)")
        }
        guard profile.version == currentVersion else { throw SEAPError.invalidFile("\(url.path): version \(profile.version)") }
        guard profile.layerCount == spec.layerCount, profile.hiddenSize == spec.hiddenSize else {
            throw SEAPError.invalidFile("\(url.path): made for \(profile.layerCount) layers × \(profile.hiddenSize), "
                + "the model has \(spec.layerCount) × \(spec.hiddenSize)")
        }
        return profile
    }

    /// Writes the profile (atomically).
    public func write(to url: URL) throws {
        try JSONEncoder().encode(self).write(to: url, options: .atomic)
    }

    /// The statistics of `task`.
    /// - Throws: `SEAPError.missingStatistics` naming the tasks there are.
    public func stats(_ task: String) throws -> ActivationStats {
        guard let s = tasks[task] else {
            throw SEAPError.missingStatistics("task '\(task)' was not profiled (profiled: \(tasks.keys.sorted().joined(separator: ", ")))")
        }
        return s
    }
}

/// Makes the masks of SEAP and its baselines from a profile (the one place the CLI and the
/// evaluation decide which statistics a method uses).
///
/// - `wifv`, `wifn`: the task's own statistics (SEAP); `task == "generic"` combines the tasks as
///   METHODS §6.5 says (`3 · s(wikitext2) + 2 · Σ s(other tasks)`, raw scores).
/// - `wanda`, `flap`: task-agnostic baselines, calibrated on generic text (`wikitext2`) whatever
///   the task; `flap` adds FLAP's bias compensation.
/// - `random`: seeded; the statistics only give the widths.
public enum SEAPMasks {
    public static let genericName = "generic"

    /// - Parameters:
    ///   - biasCompensation: nil = the method's default (`ScoreMethod.compensatesBias`: SEAP's scores
    ///     and FLAP). The generic mask compensates with its tasks' means, weighted as its scores are.
    ///   - heads: whether attention heads are pruned (`HeadPruning`).
    /// - Throws: `SEAPError` for missing statistics or a bad setting.
    public static func make(method: ScoreMethod, task: String, sparsity: Double, schedule: SparsitySchedule,
                            profile: SEAPProfile, model: DecoderModel, norms: WeightNorms, seed: UInt64 = 42,
                            biasCompensation: Bool? = nil, logistic: LogisticSchedule = LogisticSchedule(),
                            heads: HeadPruning = .prune) throws -> SEAPMask {
        let score = ChannelScore(method, seed: seed)
        let hd = model.spec.headDim
        let scores: LayerScores
        // The statistics the mask was scored on, with their weights: bias compensation shifts by
        // their means, so the generic mask compensates with the mixture it was chosen for.
        var sources: [(weight: Double, stats: ActivationStats)] = []
        if task == genericName && !method.isTaskAgnostic {
            var parts: [(Double, LayerScores)] = []
            for name in profile.tasks.keys.sorted() {
                let weight: Double = name == SEAPData.genericTask ? 3 : 2
                let stats = try profile.stats(name)
                parts.append((weight, try score.scores(norms: norms, stats: stats, headDim: hd)))
                sources.append((weight, stats))
            }
            guard !parts.isEmpty else { throw SEAPError.missingStatistics("the profile holds no task") }
            scores = LayerScores.weightedSum(parts)
        } else {
            let source = method.isTaskAgnostic
                ? (profile.tasks[SEAPData.genericTask] != nil ? SEAPData.genericTask : profile.tasks.keys.sorted().first ?? task)
                : task
            let stats = try profile.stats(source)
            scores = try score.scores(norms: norms, stats: stats, headDim: hd)
            sources = [(1, stats)]
        }
        var means: (output: [[Double]], down: [[Double]])?
        if biasCompensation ?? method.compensatesBias {
            let total = sources.reduce(0) { $0 + $1.weight }
            func mixture(_ site: ActivationSite, _ l: Int) throws -> [Double] {
                var out: [Double] = []
                for (weight, stats) in sources {
                    let mean = try stats.require(site, layer: l).mean
                    if out.isEmpty { out = [Double](repeating: 0, count: mean.count) }
                    for j in out.indices { out[j] += weight / total * mean[j] }
                }
                return out
            }
            means = (try (0..<model.spec.layerCount).map { try mixture(.attentionOutputInput, $0) },
                     try (0..<model.spec.layerCount).map { try mixture(.downInput, $0) })
        }
        // Kept widths in whole quantization blocks of down_proj (1 for float weights).
        var multiple = 1
        if let first = model.layers.first, case .dense(let mlp) = first.feedForward { multiple = mlp.down.weight.dtype.blockSize }
        return try SEAPMask.make(task: task, score: method, schedule: schedule, sparsity: sparsity, scores: scores,
                                 spec: model.spec, logistic: logistic, biasMeans: means, model: model, channelMultiple: multiple,
                                 heads: heads)
    }
}
