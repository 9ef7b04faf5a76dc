/// How a batched step of the engine spreads over the model's threads. Both ways give the same
/// tokens (`DecoderModel.forward(batch:lanes:)`); which one is faster depends on the model, the
/// machine and what else runs on its cores.
public enum BatchSplit: String, Sendable, CaseIterable {
    /// Every kernel call split over the threads; the sequences share each matmul.
    case kernels
    /// The sequences dealt to the threads, each thread running whole single-threaded passes.
    case sequences
    /// Whichever has measured faster for steps of the same shape (`SplitChooser`).
    case auto
}

/// Chooses, step by step, between splitting the kernels and splitting the sequences of a batched
/// step, from the seconds per token that recent decode steps of as many sequences took each way.
/// Measured rather than guessed: splitting sequences saves a hand-off between threads per kernel
/// call but reads the weights once per lane, which wins when they sit in cache and loses when
/// they stream from memory. Each way is tried until it has `warmup` samples; then the faster
/// one runs, and the other every `exploreEvery`-th step (every `exploreEveryFar`-th once it is
/// `far` times slower: a check costs that much), so a change of conditions (another process,
/// longer contexts) is noticed. A sample is capped at `outlier` times the running mean
/// (a step the scheduler interrupted says little about the way it ran). Steps that run a prompt
/// vary too much in size to compare: they follow the decode steps' choice and teach nothing.
struct SplitChooser {
    let mode: BatchSplit
    let threads: Int
    static let warmup = 4
    static let exploreEvery = 16
    static let exploreEveryFar = 64
    static let far = 1.25
    /// Weight of a new sample in a way's running mean.
    static let decay = 0.125
    static let outlier = 2.0

    /// Per way (0: kernels, 1: sequences): running mean seconds per token and samples taken.
    private struct Record {
        var mean: [Double] = [0, 0]
        var samples = [0, 0]
        var steps = 0

        var best: Int { mean[1] < mean[0] ? 1 : 0 }
        var exploreEvery: Int {
            mean[1 - best] > SplitChooser.far * mean[best] ? SplitChooser.exploreEveryFar : SplitChooser.exploreEvery
        }
        var warm: Bool { samples.allSatisfy { $0 >= SplitChooser.warmup } }
    }

    /// By the number of sequences in the step.
    private var records: [Int: Record] = [:]

    init(mode: BatchSplit, threads: Int) {
        self.mode = mode
        self.threads = threads
    }

    /// Lanes for a step of `sequences` sequences that can be dealt evenly (`BatchLanes.deal`):
    /// 1 splits the kernels, `threads` the sequences.
    mutating func lanes(sequences: Int, prompt: Bool) -> Int {
        guard threads > 1, sequences > 1 else { return 1 }
        switch mode {
        case .kernels: return 1
        case .sequences: return threads
        case .auto: break
        }
        var record = records[sequences, default: Record()]
        let way: Int
        if prompt {
            way = record.warm ? record.best : 0
        } else if !record.warm {
            way = record.samples[1] < record.samples[0] ? 1 : 0
        } else {
            record.steps += 1
            way = record.steps % record.exploreEvery == 0 ? 1 - record.best : record.best
        }
        records[sequences] = record
        return way == 0 ? 1 : threads
    }

    /// Records how long a step chosen by `lanes(sequences:prompt:)` took for its `tokens` rows.
    mutating func record(sequences: Int, prompt: Bool, lanes: Int, seconds: Double, tokens: Int) {
        guard mode == .auto, threads > 1, sequences > 1, !prompt, tokens > 0 else { return }
        var record = records[sequences, default: Record()]
        let way = lanes > 1 ? 1 : 0
        let sample = seconds / Double(tokens)
        if record.samples[way] == 0 {
            record.mean[way] = sample
        } else {
            record.mean[way] += Self.decay * (min(sample, Self.outlier * record.mean[way]) - record.mean[way])
        }
        record.samples[way] += 1
        records[sequences] = record
    }

    /// Per number of sequences: each way's running mean milliseconds per token and samples.
    var measurements: [Int: (kernels: Double, sequences: Double, samples: [Int])] {
        records.mapValues { (1000 * $0.mean[0], 1000 * $0.mean[1], $0.samples) }
    }

    /// The way decode steps of `sequences` sequences run once both ways are measured (nil before).
    func preferred(sequences: Int) -> BatchSplit? {
        guard let record = records[sequences], record.warm else { return nil }
        return record.best == 1 ? .sequences : .kernels
    }
}
