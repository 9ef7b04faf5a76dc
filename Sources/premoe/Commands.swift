import ArgumentParser
import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Runtime
import Tokenization

struct CLIError: Error, CustomStringConvertible {
    let description: String
}

extension LoadedModel {
    func requireTokenizer() throws -> Tokenizer {
        guard let tokenizer else { throw CLIError(description: "\(directory.path): no tokenizer.json in the model directory") }
        return tokenizer
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a model's architecture, experts and memory.")
    @OptionGroup var options: ModelOptions
    @Flag(help: "Print JSON.") var json = false

    /// Byte figures are what the checkpoint stores (FP8 weights with their scales, MXFP4 blocks
    /// with theirs, GGUF blocks); `residentBytes` is what the loaded model holds in memory.
    struct Report: Encodable {
        let modelType: String, layers: Int, hiddenSize: Int, vocabularySize: Int, heads: Int, kvHeads: Int, headDim: Int
        let moeLayers: [Int], experts: Int?, topK: Int?, expertIntermediateSize: Int?, sharedExpert: Bool
        let parameters: Int, backboneParameters: Int, expertParameters: Int
        let bytes: Int, backboneBytes: Int, expertBytes: Int, bytesPerExpert: Int?, residentBytes: Int
        /// The stored dtypes, most bytes first, joined with " + " (`MXFP4 + BF16`); `dtypes` has their bytes
        /// (an FP8 or MXFP4 weight counts with its scales).
        let dtype: String, dtypes: [String: Int]
    }

    func run() throws {
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads))
        let model = loaded.model
        let spec = model.spec
        let stored = ModelSizes.measure(loaded.checkpoint, spec: spec)
        let firstMoE = spec.moeLayers.first.flatMap { spec.moe($0) }
        let parameters = model.parameterCounts
        let expertBytes = stored.expertBytes.values.reduce(0) { $0 + $1.reduce(0, +) }
        var dtypes: [String: Int] = [:]
        let ignored = Set(loaded.ignoredTensors)  // DeepSeek's MTP layer: never loaded, not counted
        for name in loaded.checkpoint.tensorNames where !ignored.contains(name) {
            if let dtype = loaded.checkpoint.storedDType(of: name) {
                dtypes[dtype, default: 0] += loaded.checkpoint.byteCount(of: name) ?? 0
            }
        }
        let resident = model.weightBytes
        let report = Report(
            modelType: spec.modelType, layers: spec.layerCount, hiddenSize: spec.hiddenSize,
            vocabularySize: spec.vocabularySize, heads: spec.headCount, kvHeads: spec.kvHeadCount, headDim: spec.headDim,
            moeLayers: spec.moeLayers, experts: firstMoE?.expertCount, topK: firstMoE?.topK,
            expertIntermediateSize: firstMoE?.expertIntermediateSize, sharedExpert: firstMoE?.sharedIntermediateSize != nil,
            parameters: parameters.backbone + parameters.experts, backboneParameters: parameters.backbone,
            expertParameters: parameters.experts, bytes: stored.backboneBytes + expertBytes,
            backboneBytes: stored.backboneBytes, expertBytes: expertBytes,
            bytesPerExpert: spec.moeLayers.first.flatMap { stored.expertBytes[$0]?.first },
            residentBytes: resident.backbone + resident.experts,
            dtype: dtypes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map(\.key).joined(separator: " + "), dtypes: dtypes)
        if json { return try printJSON(report) }
        print("model_type      \(report.modelType) (\(report.dtype))")
        print("layers          \(report.layers) (hidden \(report.hiddenSize), heads \(report.heads)/\(report.kvHeads) kv × \(report.headDim))")
        print("vocabulary      \(report.vocabularySize)")
        if let experts = report.experts, let topK = report.topK {
            print("MoE layers      \(report.moeLayers.count) of \(report.layers): \(experts) experts, top-\(topK), expert width \(report.expertIntermediateSize ?? 0)\(report.sharedExpert ? ", shared expert" : "")")
        } else {
            print("MoE layers      none (dense)")
        }
        print("parameters      \(formatCount(report.parameters)) (backbone \(formatCount(report.backboneParameters)), experts \(formatCount(report.expertParameters)))")
        print("bytes stored    \(formatBytes(report.bytes)) (backbone \(formatBytes(report.backboneBytes)), experts \(formatBytes(report.expertBytes))); in memory \(formatBytes(report.residentBytes))")
        if let perExpert = report.bytesPerExpert { print("bytes/expert    \(formatBytes(perExpert)) stored") }
    }
}

/// Says on stderr when the model's context, not `--max-tokens`, will bound a generation (the
/// generator caps it; a prompt longer than the context is refused there with an error).
func warnIfContextCaps(promptCount: Int, maxTokens: Int, spec: DecoderSpec) {
    let cap = Generator.maxNewTokens(promptCount: promptCount, maxTokens: maxTokens, maxPositions: spec.maxPositions)
    if cap < maxTokens && promptCount <= spec.maxPositions {
        printError("warning: --max-tokens \(maxTokens) capped at \(cap): the prompt has \(promptCount) tokens and the model's "
            + "max_position_embeddings is \(spec.maxPositions)")
    }
}

func formatCount(_ n: Int) -> String {
    n >= 1_000_000_000 ? String(format: "%.2fB", Double(n) / 1e9)
        : n >= 1_000_000 ? String(format: "%.2fM", Double(n) / 1e6)
        : n >= 1000 ? String(format: "%.1fK", Double(n) / 1e3) : "\(n)"
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt.")
    @OptionGroup var options: ModelOptions
    @Option(help: "The prompt.") var prompt: String
    @Option(name: .customLong("max-tokens"), help: "Tokens to generate at most.") var maxTokens = 64
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(name: .customLong("top-k"), help: "Sample among the k most likely tokens (0 = all).") var topK = 0
    @Option(name: .customLong("top-p"), help: "Nucleus sampling mass (1 = off).") var topP: Float = 1
    @Option(name: .customLong("repetition-penalty"), help: "transformers' repetition penalty (1 = off).")
    var repetitionPenalty: Float = 1
    @Option(help: "Random seed for sampling.") var seed: UInt64 = 0
    @Option(help: "Stop when this string appears (repeatable).") var stop: [String] = []
    @Flag(help: "Format the prompt as a chat user turn with the model's chat template.") var chat = false
    @Flag(help: "Print JSON (text, tokens, timings) instead of streaming.") var json = false
    @Option(help: "Quantized-weight arithmetic: exact (f32 activations, the parity path) or int8 (8-bit activations).")
    var arithmetic: QuantizedArithmetic = Generate.defaultArithmetic

    /// What `generate` and `bench` use for GGUF block weights unless told (`logits` is always exact).
    static let defaultArithmetic: QuantizedArithmetic = .exact

    func validate() throws {
        if maxTokens < 0 { throw ValidationError("--max-tokens must be ≥ 0") }
        if temperature < 0 || !temperature.isFinite { throw ValidationError("--temperature must be a finite number ≥ 0") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
        if repetitionPenalty <= 0 || !repetitionPenalty.isFinite { throw ValidationError("--repetition-penalty must be > 0") }
        if prompt.isEmpty { throw ValidationError("--prompt is empty") }
    }

    struct Output: Encodable {
        let text: String, tokens: [Int], promptTokens: Int, finishReason: String
        let prefillSeconds: Double, decodeSeconds: Double, decodeTokensPerSecond: Double
    }

    func run() throws {
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads, quantizedArithmetic: arithmetic))
        let tokenizer = try loaded.requireTokenizer()
        var text = prompt
        if chat { text = try chatPrompt(prompt, tokenizer: tokenizer, model: loaded.directory.path) }
        let ids = tokenizer.encode(text)
        warnIfContextCaps(promptCount: ids.count, maxTokens: maxTokens, spec: loaded.model.spec)
        let generator = Generator(model: loaded.model, tokenizer: tokenizer)
        let parameters = GenerationParameters(maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP,
                                              repetitionPenalty: repetitionPenalty, seed: seed, stop: stop, eosTokenIDs: loaded.eosTokenIDs)
        let result = try generator.generate(promptIDs: ids, parameters: parameters) { piece in
            if !json {
                FileHandle.standardOutput.write(Data(piece.utf8))
            }
            return true
        }
        let decodeRate = result.tokens.count > 1 ? Double(result.tokens.count - 1) / max(result.decodeSeconds, 1e-9) : 0
        if json {
            try printJSON(Output(text: result.text, tokens: result.tokens, promptTokens: result.promptTokens,
                                 finishReason: result.finishReason.rawValue, prefillSeconds: result.prefillSeconds,
                                 decodeSeconds: result.decodeSeconds, decodeTokensPerSecond: decodeRate))
        } else {
            print("")
            printError(String(format: "[%d prompt tokens, %d generated, %.1f tok/s decode, finish: %@]",
                              result.promptTokens, result.tokens.count, decodeRate, result.finishReason.rawValue))
        }
    }
}

/// Parses "1,2,3" into ids.
func parseIDs(_ text: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    var ids: [Int] = []
    for part in parts {
        guard let id = Int(part) else { throw ValidationError("--ids: '\(part)' is not an integer") }
        ids.append(id)
    }
    return ids
}

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the logits of every position for token ids.")
    @OptionGroup var options: ModelOptions
    @Option(help: "Comma-separated token ids, e.g. 1,2,3.") var ids: String
    @Flag(help: "Print JSON: {\"logits\": [[…], …]}, one row per input position.") var json = false

    func run() throws {
        let tokens = try parseIDs(ids)
        guard !tokens.isEmpty else { throw ValidationError("--ids is empty") }
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads))
        let model = loaded.model
        let flat = try model.forward(tokens, cache: model.makeCache(capacity: tokens.count), logits: .all)
        let vocab = model.spec.vocabularySize
        let rows = (0..<tokens.count).map { Array(flat[($0 * vocab)..<(($0 + 1) * vocab)]) }
        if json {
            struct Output: Encodable { let logits: [[Float]] }
            try printJSON(Output(logits: rows))
        } else {
            for (t, row) in rows.enumerated() {
                guard let best = Sampler.argmax(row) else {
                    print("position \(t): token \(tokens[t]) → every logit is NaN")
                    continue
                }
                print("position \(t): token \(tokens[t]) → argmax \(best) (\(row[best]))")
            }
        }
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tokenise text with the model's tokenizer.json or GGUF vocabulary.")
    @Argument(help: "Model directory, tokenizer.json path or .gguf file.") var model: String
    @Option(help: "Text to tokenise.") var text: String
    @Flag(name: .customLong("no-special"), help: "Do not add the post-processor's special tokens.") var noSpecial = false
    @Flag(help: "Print JSON: {\"ids\": […]}.") var json = false

    func run() throws {
        let url = URL(fileURLWithPath: model)
        let tokenizer: Tokenizer
        if ModelLoader.isGGUF(url) {
            guard let t = try Tokenizer.fromGGUF(try GGUFFile(url: url)) else {
                throw CLIError(description: "\(url.path): no tokenizer.ggml.* metadata in this GGUF file")
            }
            tokenizer = t
        } else {
            tokenizer = try Tokenizer(url: url)
        }
        let ids = tokenizer.encode(text, addSpecialTokens: !noSpecial)
        if json {
            struct Output: Encodable { let ids: [Int] }
            try printJSON(Output(ids: ids))
        } else {
            print(ids.map(String.init).joined(separator: " "))
            print(ids.map { tokenizer.token($0) ?? "?" }.joined(separator: " | "))
        }
    }
}

/// Renders `prompt` as one user turn with the model's own chat template, ending with the
/// assistant's turn header, for `--chat`.
/// - Throws: `CLIError` when the model has no template (a base model: drop `--chat`) or its
///   template fails or refuses the turn.
func chatPrompt(_ prompt: String, tokenizer: Tokenizer, model: String) throws -> String {
    guard let template = tokenizer.chatTemplate else {
        throw CLIError(description: "\(model): the tokenizer has no chat template (no chat_template in "
            + "tokenizer_config.json or tokenizer.chat_template in the GGUF); drop --chat")
    }
    do {
        return try template.render([ChatMessage(role: "user", content: prompt)])
    } catch {
        throw CLIError(description: "\(model): \(error)")
    }
}
