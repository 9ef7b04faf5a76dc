import ArgumentParser
import Foundation
import Models
import Runtime

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure load time, prefill and decode speed, and peak memory.")
    @OptionGroup var options: ModelOptions
    @Option(name: .customLong("prompt-tokens"), help: "Prompt length for the prefill measurement.") var promptTokens = 128
    @Option(name: .customLong("gen-tokens"), help: "Tokens to decode.") var genTokens = 32
    @Option(help: "Seed for the random prompt ids.") var seed: UInt64 = 1
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if promptTokens < 1 { throw ValidationError("--prompt-tokens must be ≥ 1") }
        if genTokens < 1 { throw ValidationError("--gen-tokens must be ≥ 1") }
    }

    struct Report: Encodable {
        let model: String, threads: Int, promptTokens: Int, genTokens: Int
        let loadSeconds: Double, prefillSeconds: Double, prefillTokensPerSecond: Double
        let decodeSeconds: Double, decodeTokensPerSecond: Double
        /// Weight bytes a decode step reads: every dense weight, one embedding row, top-k experts per MoE layer.
        let activeWeightBytesPerToken: Int
        let decodeBandwidthGBPerSecond: Double
        let weightBytes: Int, peakResidentBytes: Int?
    }

    func run() throws {
        let start = Date()
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads))
        let loadSeconds = Date().timeIntervalSince(start)
        let model = loaded.model
        let vocab = model.spec.vocabularySize
        let limit = model.spec.maxPositions
        guard promptTokens <= limit, genTokens <= limit - promptTokens else {
            throw CLIError(description: "--prompt-tokens \(promptTokens) + --gen-tokens \(genTokens) exceed the model's "
                + "max_position_embeddings (\(limit))")
        }
        var rng = seed
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
        let decodeSeconds = Date().timeIntervalSince(decodeStart)
        let active = activeBytesPerToken(model)
        let decodeRate = Double(genTokens) / decodeSeconds
        let bytes = model.weightBytes
        let report = Report(
            model: options.model, threads: model.pool.threadCount, promptTokens: promptTokens, genTokens: genTokens,
            loadSeconds: loadSeconds, prefillSeconds: prefillSeconds,
            prefillTokensPerSecond: Double(promptTokens) / prefillSeconds, decodeSeconds: decodeSeconds,
            decodeTokensPerSecond: decodeRate, activeWeightBytesPerToken: active,
            decodeBandwidthGBPerSecond: Double(active) * decodeRate / 1e9,
            weightBytes: bytes.backbone + bytes.experts, peakResidentBytes: ProcessMemory.peakResidentBytes)
        if json { return try printJSON(report) }
        print(String(format: "load      %.2f s", loadSeconds))
        print(String(format: "prefill   %d tokens in %.3f s: %.1f tok/s", promptTokens, prefillSeconds, report.prefillTokensPerSecond))
        print(String(format: "decode    %d tokens in %.3f s: %.2f tok/s, %.2f GB/s of weights", genTokens, decodeSeconds,
                     decodeRate, report.decodeBandwidthGBPerSecond))
        if let peak = report.peakResidentBytes { print("peak RSS  \(formatBytes(peak))") }
    }

    /// Weight bytes one decode step reads.
    func activeBytesPerToken(_ model: DecoderModel) -> Int {
        let spec = model.spec
        var total = model.embedding.rowLength * model.embedding.dtype.byteSize + model.lmHead.byteCount
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
        _ = spec
        return total
    }
}
