import ArgumentParser
import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Runtime

extension GGUFOutputType: ExpressibleByArgument {}

/// The `--type` values, for help texts and errors.
let ggufTypeList = GGUFOutputType.allCases.map(\.rawValue).joined(separator: "|")

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a Hugging Face checkpoint to one GGUF file, with llama-quantize's tensor types.",
        discussion: """
            Tensor types follow llama.cpp: norms, biases and routers stay F32, the output head is Q6_K \
            for block types, q4_k_m mixes Q4_K with Q6_K as llama-quantize's Q4_K_M does. A tensor whose \
            rows are not a whole number of blocks falls back to Q8_0 (K-quants) or F16, with a note. \
            FP8 block-scaled weights (Qwen3-MoE -FP8) are dequantized with their scales and converted from \
            there; families GGUF export cannot express (DeepSeek, GLM-4.5, gpt-oss) are refused by name.
            """)
    @OptionGroup var options: ModelOptions
    @Option(help: "Tensor type: \(ggufTypeList).") var type: GGUFOutputType
    @Option(help: "Output .gguf file (must not exist).") var out: String
    @Flag(help: "Print JSON.") var json = false

    struct Output: Encodable {
        let out: String, type: String, tensorCount: Int, tensorBytes: Int, notes: [String]
    }

    func run() throws {
        let url = options.url
        if ModelLoader.isGGUF(url) {
            throw CLIError(description: "\(url.path): already a GGUF file; quantize reads a Hugging Face checkpoint directory")
        }
        let spec = try ModelLoader.spec(at: url)
        _ = try GGUFExport.architecture(of: spec.modelType, model: url)  // refuse by name before reading weights
        let checkpoint = try ModelLoader.tensorSource(at: url)  // FP8 weights dequantized with their scales
        let configData = try Data(contentsOf: url.appendingPathComponent("config.json"))
        let fingerprint = try ModelFingerprint.compute(configData: configData, checkpoint: checkpoint, spec: spec)
        let report = try GGUFExport.writeFile(
            modelDirectory: url, keptExperts: GGUFExport.allExperts(spec), sourceFingerprint: fingerprint, type: type,
            pool: options.threadPool, to: URL(fileURLWithPath: out))
        for note in report.notes { printError("note: \(note)") }
        if json {
            return try printJSON(Output(out: out, type: type.rawValue, tensorCount: report.tensorCount,
                                        tensorBytes: report.tensorBytes, notes: report.notes))
        }
        print("wrote \(out): \(report.tensorCount) tensors, \(formatBytes(report.tensorBytes)) of weights (\(type.rawValue))")
    }
}

extension ModelOptions {
    /// A pool of `--threads` threads (all cores for 0).
    var threadPool: ThreadPool {
        ThreadPool(threads: threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount)
    }
}
