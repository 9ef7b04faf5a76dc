import ArgumentParser
import Evaluation
import Foundation
import Kernels
import Models
import PreMoe
import Runtime
import Server

extension QuantizedArithmetic: ExpressibleByArgument {}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure load time, prefill and decode speed, and peak memory.",
        discussion: """
            --compare-llama-bench runs llama.cpp's llama-bench on the same GGUF with the same threads, \
            interleaved with premoe's own runs, and prints both, their ratios, the weight bandwidth each \
            achieved and the machine's read bandwidth measured in the same run. --profile shows where a \
            decode token's time goes. --perplexity scores a text file with both arithmetics.
            """)
    @OptionGroup var options: ModelOptions
    @Option(name: .customLong("prompt-tokens"), help: "Prompt length for the prefill measurement.") var promptTokens = 128
    @Option(name: .customLong("gen-tokens"), help: "Tokens to decode.") var genTokens = 32
    @Option(help: "Seed for the random prompt ids.") var seed: UInt64 = 1
    @Option(help: "Quantized-weight arithmetic: exact (f32 activations, the parity path) or int8 (8-bit activations).")
    var arithmetic: QuantizedArithmetic = Generate.defaultArithmetic
    @Option(name: .customLong("compare-llama-bench"),
            help: "llama-bench executable, or the directory holding it: run it on the same GGUF, interleaved.")
    var llamaBench: String?
    @Option(help: "Interleaved rounds with --compare-llama-bench (medians are reported).") var rounds = 3
    @Flag(help: "Print where a decode token's time goes (attention, router, experts by type, head).") var profile = false
    @Option(help: "With --profile: sequences decoded together, one batched forward pass per step (as the server does).")
    var batch = 1
    @Option(help: ArgumentHelp(
        "With --profile --batch: a pattern store; the sequences take its tasks and their generalist in turn, each routing among its task's kept experts (as the server's mixed-task steps).",
        valueName: "dir"))
    var store: String?
    @Option(help: "With --store: experts each task keeps (as premoe serve --keep).") var keep = "25%"
    @Option(help: "Text file: report perplexity with exact and int8 arithmetic and the relative change.")
    var perplexity: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if promptTokens < 1 { throw ValidationError("--prompt-tokens must be ≥ 1") }
        if genTokens < 1 { throw ValidationError("--gen-tokens must be ≥ 1") }
        if rounds < 1 || rounds > 100 { throw ValidationError("--rounds must be in 1...100") }
        if batch < 1 || batch > 256 { throw ValidationError("--batch must be in 1...256") }
        if store != nil && !profile { throw ValidationError("--store needs --profile") }
        _ = try ExpertBudget(keep: keep)
    }

    struct Report: Encodable {
        let model: String, threads: Int, promptTokens: Int, genTokens: Int
        let arithmetic: String, instructionSet: String
        /// The kernel thread pool's backend: "persistent" workers or "dispatch".
        let threadPool: String
        let loadSeconds: Double, prefillSeconds: Double, prefillTokensPerSecond: Double
        let decodeSeconds: Double, decodeTokensPerSecond: Double
        /// Weight bytes a decode step reads: every dense weight, one embedding row, top-k experts per MoE layer.
        let activeWeightBytesPerToken: Int
        let decodeBandwidthGBPerSecond: Double
        let weightBytes: Int, peakResidentBytes: Int?
        var comparison: Comparison?
        var profile: [ProfileEntry]?
        /// With `--profile --batch N` (N > 1): the same batched decode without the profiler, each
        /// way of using the threads (`BatchSplit`), medians of interleaved rounds.
        var batchSplit: [SplitTiming]?
        var perplexity: PerplexityReport?
    }

    /// One interleaved round: llama-bench's and premoe's rates (tokens/s).
    struct Round: Encodable {
        let llamaPrefill: Double, llamaDecode: Double, premoePrefill: Double, premoeDecode: Double
    }

    struct Comparison: Encodable {
        let cpu: String, llamaBench: String, rounds: [Round]
        let llamaPrefill: Double, llamaDecode: Double, premoePrefill: Double, premoeDecode: Double
        let prefillRatio: Double, decodeRatio: Double
        /// Weight bytes per decode token × decode rate, GB/s.
        let llamaDecodeGBPerSecond: Double, premoeDecodeGBPerSecond: Double
        /// The machine's read bandwidth with the same threads, one and four streams per thread, GB/s.
        let readOneStreamGBPerSecond: Double, readFourStreamsGBPerSecond: Double
    }

    struct ProfileEntry: Encodable {
        let part: String, millisecondsPerToken: Double, percent: Double
    }

    struct SplitTiming: Encodable {
        let split: String, millisecondsPerToken: [Double], median: Double
    }

    struct PerplexityReport: Encodable {
        let file: String, tokens: Int, exact: Double, int8: Double, relativeChange: Double
    }

    func run() throws {
        let start = Date()
        let loaded = try ModelLoader.load(
            options.url, options: LoadOptions(threads: options.threads, quantizedArithmetic: arithmetic))
        let loadSeconds = Date().timeIntervalSince(start)
        let model = loaded.model
        let limit = model.spec.maxPositions
        guard promptTokens <= limit, genTokens <= limit - promptTokens else {
            throw CLIError(description: "--prompt-tokens \(promptTokens) + --gen-tokens \(genTokens) exceed the model's "
                + "max_position_embeddings (\(limit))")
        }
        // A warm-up prefill (llama-bench warms up too): faults the weights in and, with int8
        // arithmetic, makes the kernels' interleaved weight copies, which would otherwise count
        // as prefill time.
        let warmUp = model.makeCache(capacity: promptTokens)
        _ = try model.forward((0..<promptTokens).map { $0 % model.spec.vocabularySize }, cache: warmUp, logits: .last)
        let first = try measure(model)
        let active = activeBytesPerToken(model)
        let bytes = model.weightBytes
        var report = Report(
            model: options.model, threads: model.pool.threadCount, promptTokens: promptTokens, genTokens: genTokens,
            arithmetic: arithmetic.rawValue, instructionSet: InstructionSet.best.name, threadPool: model.pool.backendName,
            loadSeconds: loadSeconds, prefillSeconds: first.prefillSeconds,
            prefillTokensPerSecond: Double(promptTokens) / first.prefillSeconds, decodeSeconds: first.decodeSeconds,
            decodeTokensPerSecond: Double(genTokens) / first.decodeSeconds, activeWeightBytesPerToken: active,
            decodeBandwidthGBPerSecond: Double(active) * Double(genTokens) / first.decodeSeconds / 1e9,
            weightBytes: bytes.backbone + bytes.experts, peakResidentBytes: ProcessMemory.peakResidentBytes)
        if let llamaBench { report.comparison = try compare(model, llamaBench: llamaBench, activeBytes: active) }
        if profile {
            let views = try taskViews(loaded)
            report.profile = try profileDecode(model, views: views)
            if batch > 1 { report.batchSplit = try timeSplits(model, views: views) }
        }
        if let perplexity { report.perplexity = try perplexityChange(loaded, file: perplexity) }
        if json { return try printJSON(report) }
        print(String(format: "load      %.2f s", loadSeconds))
        print("kernels   \(arithmetic.rawValue) arithmetic, \(InstructionSet.best.name), \(report.threads) threads (\(report.threadPool) pool)")
        print(String(format: "prefill   %d tokens in %.3f s: %.1f tok/s", promptTokens, report.prefillSeconds, report.prefillTokensPerSecond))
        print(String(format: "decode    %d tokens in %.3f s: %.2f tok/s, %.2f GB/s of weights", genTokens, report.decodeSeconds,
                     report.decodeTokensPerSecond, report.decodeBandwidthGBPerSecond))
        if let peak = report.peakResidentBytes { print("peak RSS  \(formatBytes(peak))") }
        if let c = report.comparison { printComparison(c) }
        if let p = report.profile {
            print("\ndecode profile (ms per token" + (batch > 1 ? ", \(batch) sequences per batched step" : "")
                + (store.map { ", tasks of \($0) keeping \(keep) in turn" } ?? "") + "):")
            let width = p.map(\.part.count).max() ?? 0
            for e in p {
                let name = e.part.padding(toLength: width, withPad: " ", startingAt: 0)
                print("  \(name) " + String(format: "%8.3f  %5.1f%%", e.millisecondsPerToken, e.percent))
            }
        }
        if let timings = report.batchSplit {
            print("\nbatched decode without the profiler (ms per token, medians of \(Self.splitRounds) interleaved rounds):")
            for t in timings {
                print("  threads split \(t.split.padding(toLength: 9, withPad: " ", startingAt: 0)) "
                      + String(format: "%8.4f", t.median) + "  (" + t.millisecondsPerToken.map { String(format: "%.4f", $0) }.joined(separator: ", ") + ")")
            }
        }
        if let p = report.perplexity {
            print(String(format: "\nperplexity on %@ (%d tokens): exact %.4f, int8 %.4f, change %+.3f%%", p.file, p.tokens, p.exact,
                         p.int8, 100 * p.relativeChange))
        }
    }

    /// One prefill of a random prompt and `genTokens` greedy decode steps on a fresh cache.
    func measure(_ model: DecoderModel) throws -> (prefillSeconds: Double, decodeSeconds: Double) {
        var rng = seed
        let vocab = model.spec.vocabularySize
        func nextID() -> Int {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            return Int((rng >> 33) % UInt64(vocab))
        }
        let prompt = (0..<promptTokens).map { _ in nextID() }
        let cache = model.makeCache(capacity: promptTokens + genTokens + 1)
        let prefillStart = Date()
        var logits = try model.forward(prompt, cache: cache, logits: .last)
        let prefillSeconds = Date().timeIntervalSince(prefillStart)
        let decodeStart = Date()
        for _ in 0..<genTokens {
            logits = try model.forward([Sampler.argmax(logits) ?? 0], cache: cache, logits: .last)
        }
        return (prefillSeconds, Date().timeIntervalSince(decodeStart))
    }

    /// Interleaved rounds of llama-bench and premoe on the same file and threads.
    func compare(_ model: DecoderModel, llamaBench: String, activeBytes: Int) throws -> Comparison {
        guard ModelLoader.isGGUF(options.url) else {
            throw CLIError(description: "--compare-llama-bench needs a GGUF file as the model (llama-bench reads only GGUF)")
        }
        var isDirectory: ObjCBool = false
        var executable = URL(fileURLWithPath: llamaBench)
        if FileManager.default.fileExists(atPath: executable.path, isDirectory: &isDirectory), isDirectory.boolValue {
            executable = executable.appendingPathComponent("llama-bench")
        }
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw CLIError(description: "--compare-llama-bench: \(executable.path) is not an executable "
                + "(build it with scripts/build_llama_cpp.sh)")
        }
        let threads = model.pool.threadCount
        printError("measuring memory read bandwidth (\(threads) threads)…")
        let one = KernelBenchmark.readBandwidth(threads: threads, streamsPerThread: 1)
        let four = KernelBenchmark.readBandwidth(threads: threads, streamsPerThread: 4)
        var results: [Round] = []
        for r in 0..<rounds {
            // Alternate who goes first, so neither always runs on a cooler or quieter machine.
            var llama: (prefill: Double, decode: Double) = (0, 0)
            var ours: (prefillSeconds: Double, decodeSeconds: Double) = (0, 0)
            if r % 2 == 0 {
                llama = try runLlamaBench(executable, threads: threads)
                ours = try measure(model)
            } else {
                ours = try measure(model)
                llama = try runLlamaBench(executable, threads: threads)
            }
            let round = Round(llamaPrefill: llama.prefill, llamaDecode: llama.decode,
                              premoePrefill: Double(promptTokens) / ours.prefillSeconds,
                              premoeDecode: Double(genTokens) / ours.decodeSeconds)
            printError(String(format: "round %d: llama.cpp pp %.1f tg %.2f | premoe pp %.1f tg %.2f t/s", r + 1, round.llamaPrefill,
                              round.llamaDecode, round.premoePrefill, round.premoeDecode))
            results.append(round)
        }
        func median(_ v: [Double]) -> Double {
            let s = v.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        let lp = median(results.map(\.llamaPrefill)), ld = median(results.map(\.llamaDecode))
        let pp = median(results.map(\.premoePrefill)), pd = median(results.map(\.premoeDecode))
        return Comparison(
            cpu: Self.cpuName(), llamaBench: executable.path, rounds: results, llamaPrefill: lp, llamaDecode: ld,
            premoePrefill: pp, premoeDecode: pd, prefillRatio: pp / lp, decodeRatio: pd / ld,
            llamaDecodeGBPerSecond: Double(activeBytes) * ld / 1e9, premoeDecodeGBPerSecond: Double(activeBytes) * pd / 1e9,
            readOneStreamGBPerSecond: one, readFourStreamsGBPerSecond: four)
    }

    /// Runs `llama-bench -p P -n G -t T -r 1 -o json` once; returns its prefill and decode rates.
    func runLlamaBench(_ executable: URL, threads: Int) throws -> (prefill: Double, decode: Double) {
        let process = Process()
        process.executableURL = executable
        process.arguments = ["-m", options.url.path, "-p", "\(promptTokens)", "-n", "\(genTokens)", "-t", "\(threads)",
                             "-r", "1", "-o", "json"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CLIError(description: "llama-bench exited with status \(process.terminationStatus) on \(options.url.path)")
        }
        guard let rows = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
            throw CLIError(description: "llama-bench printed no JSON array")
        }
        func rate(_ key: String, _ count: Int) throws -> Double {
            let row = rows.first { ($0[key] as? Int) == count && ($0[key == "n_prompt" ? "n_gen" : "n_prompt"] as? Int) == 0 }
            guard let value = row?["avg_ts"] as? Double else {
                throw CLIError(description: "llama-bench JSON has no \(key) = \(count) row with avg_ts")
            }
            return value
        }
        return (try rate("n_prompt", promptTokens), try rate("n_gen", genTokens))
    }

    /// The CPU's model name (`/proc/cpuinfo`), with its vector extensions.
    static func cpuName() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
        let lines = text.split(separator: "\n")
        let name = lines.first { $0.hasPrefix("model name") }?.split(separator: ":", maxSplits: 1).last?
            .trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let flags = Set(lines.first { $0.hasPrefix("flags") }?.split(separator: " ").map(String.init) ?? [])
        let shown = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"].filter(flags.contains)
        return "\(name) (\(shown.joined(separator: " ")))"
    }

    func printComparison(_ c: Comparison) {
        print("\nCPU       \(c.cpu); kernels \(InstructionSet.best.name)")
        print(String(format: "memory    read %.1f GB/s one stream, %.1f GB/s four streams per thread (%d threads)",
                     c.readOneStreamGBPerSecond, c.readFourStreamsGBPerSecond, options.threads > 0 ? options.threads : ProcessInfo.processInfo.activeProcessorCount))
        print("          llama.cpp    premoe     ratio   (medians of \(c.rounds.count) interleaved rounds)")
        print(String(format: "prefill   %9.1f %9.1f   %7.2f   tok/s", c.llamaPrefill, c.premoePrefill, c.prefillRatio))
        print(String(format: "decode    %9.2f %9.2f   %7.2f   tok/s", c.llamaDecode, c.premoeDecode, c.decodeRatio))
        print(String(format: "decode    %9.2f %9.2f             GB/s of weights (%.0f%% / %.0f%% of four-stream read)",
                     c.llamaDecodeGBPerSecond, c.premoeDecodeGBPerSecond, 100 * c.llamaDecodeGBPerSecond / c.readFourStreamsGBPerSecond,
                     100 * c.premoeDecodeGBPerSecond / c.readFourStreamsGBPerSecond))
    }

    /// Decodes `genTokens` tokens of `batch` sequences (prompts of one repeated id each, a
    /// different id per sequence), one batched forward pass per step, with a profiler attached;
    /// each part's time per token (a step's time over the sequences it advances).
    /// - Parameter views: per-task expert views the sequences take in turn (empty: the full model).
    func profileDecode(_ model: DecoderModel, views: [[Int: MoEBlock]]) throws -> [ProfileEntry] {
        let profiler = ForwardProfiler()
        model.profiler = profiler
        defer { model.profiler = nil }
        let total = try decodeBatch(model, views: views, lanes: 1)
        let tokens = Double(genTokens * batch)
        var entries = profiler.labels.map { label in
            ProfileEntry(part: label, millisecondsPerToken: 1000 * profiler.seconds[label]! / tokens,
                         percent: 100 * profiler.seconds[label]! / total)
        }
        let rest = total - profiler.seconds.values.reduce(0, +)
        entries.append(ProfileEntry(part: "other (norms, residuals, sampling)", millisecondsPerToken: 1000 * rest / tokens,
                                    percent: 100 * rest / total))
        entries.append(ProfileEntry(part: "total", millisecondsPerToken: 1000 * total / tokens, percent: 100))
        return entries
    }

    static let splitRounds = 3

    /// The batched decode of `profileDecode` without the profiler, kernels split over the threads
    /// and sequences dealt to them (`forward(batch:lanes:)`) in turn: ms per token, per round.
    func timeSplits(_ model: DecoderModel, views: [[Int: MoEBlock]]) throws -> [SplitTiming] {
        let ways: [(BatchSplit, Int)] = [(.kernels, 1), (.sequences, model.pool.threadCount)]
        var times = [[Double]](repeating: [], count: ways.count)
        for round in 0..<Self.splitRounds {
            for w in (round % 2 == 0 ? [0, 1] : [1, 0]) {
                times[w].append(1000 * (try decodeBatch(model, views: views, lanes: ways[w].1)) / Double(genTokens * batch))
            }
        }
        return ways.indices.map { w in
            SplitTiming(split: ways[w].0.rawValue, millisecondsPerToken: times[w], median: times[w].sorted()[times[w].count / 2])
        }
    }

    /// Prefills `batch` sequences (prompts of one repeated id each, a different id per
    /// sequence, each taking the next of `views`), then decodes `genTokens` greedy tokens of all
    /// of them, one batched forward pass per step with `lanes`; returns the decode's seconds.
    func decodeBatch(_ model: DecoderModel, views: [[Int: MoEBlock]], lanes: Int) throws -> Double {
        let caches = (0..<batch).map { _ in model.makeCache(capacity: promptTokens + genTokens + 1) }
        let moe = (0..<batch).map { views.isEmpty ? [:] : views[$0 % views.count] }
        let profiler = model.profiler
        model.profiler = nil
        var logits = try caches.enumerated().map { i, cache in
            try model.forward(batch: [BatchEntry(tokens: Array(repeating: (1 + i) % model.spec.vocabularySize, count: promptTokens),
                                                 cache: cache, moe: moe[i])])[0]
        }
        model.profiler = profiler
        let t0 = Date()
        for _ in 0..<genTokens {
            logits = try model.forward(batch: caches.indices.map {
                BatchEntry(tokens: [Sampler.argmax(logits[$0]) ?? 0], cache: caches[$0], moe: moe[$0])
            }, lanes: lanes)
        }
        return Date().timeIntervalSince(t0)
    }

    /// With `--store`: each stored task's view of every MoE layer, then the generalist's, with
    /// the experts the server's `TaskSelector` plans for them, behind their router rows (here over
    /// the loaded model's own experts).
    func taskViews(_ loaded: LoadedModel) throws -> [[Int: MoEBlock]] {
        guard let store else { return [] }
        let model = loaded.model
        let patterns = try PatternStore(directory: URL(fileURLWithPath: store)).list(fingerprint: try ModelFingerprint.compute(loaded),
                                                                                      spec: model.spec)
        guard !patterns.isEmpty else { throw CLIError(description: "--store \(store) holds no pattern for this model") }
        let selector = TaskSelector(spec: model.spec, patterns: patterns, retriever: nil, budget: try ExpertBudget(keep: keep),
                                    allocation: .selected, fallback: .generalist,
                                    sizes: ModelSizes.measure(loaded.checkpoint, spec: model.spec))
        return try selector.taskNames.filter { $0 != TaskSelector.fullName }.map { task in
            var view: [Int: MoEBlock] = [:]
            for (l, ids) in try selector.experts(for: task) {
                guard case .moe(let block) = model.layers[l].feedForward else { continue }
                view[l] = block.keeping(rows: ids, experts: ids.map { block.experts[$0] })
            }
            return view
        }
    }

    /// Perplexity of a text file with the exact and the int8 arithmetic (windows of 512 tokens).
    func perplexityChange(_ loaded: LoadedModel, file: String) throws -> PerplexityReport {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let model = loaded.model
        let scorer = LogLikelihoodScorer(model: model, tokenizer: try loaded.requireTokenizer())
        let saved = model.pool
        defer { model.pool = saved }
        var results: [QuantizedArithmetic: (perplexity: Double, tokens: Int)] = [:]
        for a in QuantizedArithmetic.allCases {
            model.pool = ThreadPool(threads: saved.threadCount, quantizedArithmetic: a)
            results[a] = try scorer.perplexity([text])
        }
        let exact = results[.exact]!, int8 = results[.int8]!
        return PerplexityReport(file: file, tokens: exact.tokens, exact: exact.perplexity, int8: int8.perplexity,
                                relativeChange: int8.perplexity / exact.perplexity - 1)
    }

    /// Weight bytes one decode step reads.
    func activeBytesPerToken(_ model: DecoderModel) -> Int {
        var total = model.embedding.dtype.byteCount(elements: model.embedding.rowLength) + model.lmHead.byteCount
        for layer in model.layers {
            total += layer.attention.byteCount
            switch layer.feedForward {
            case .dense(let mlp): total += mlp.byteCount
            case .moe(let block):
                total += block.router.weight.byteCount + (block.shared?.byteCount ?? 0)
                let perExpert = block.experts.first?.byteCount ?? 0
                total += min(block.spec.topK, block.experts.count) * perExpert
            }
        }
        return total
    }
}
