import ArgumentParser
import Foundation
import PreMoe

@main
struct PreMoeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "premoe",
        abstract: "Run Mixture-of-Experts models on the CPU with only the experts a task needs.",
        subcommands: [Inspect.self, Generate.self, Logits.self, Tokenize.self, Bench.self, Profile.self, Patterns.self, Retrieve.self, RunTask.self, Prune.self, Quantize.self, Eval.self, Demo.self, SEAPCommand.self, Serve.self])

    /// The library's warnings (e.g. a skipped pattern file) go to stderr.
    static func main() {
        PreMoeLog.handler = { printError("warning: \($0)") }
        main(nil)
    }
}

/// Options shared by every command that loads a model.
struct ModelOptions: ParsableArguments {
    @Argument(help: "Model: a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json) or a GGUF file (quantize reads a directory only).")
    var model: String

    @Option(help: "Kernel threads (default: all cores).")
    var threads: Int = 0

    var url: URL { URL(fileURLWithPath: model) }

    func validate() throws {
        if threads < 0 || threads > 4096 { throw ValidationError("--threads must be 0 (all cores) or in 1...4096, got \(threads)") }
    }
}

/// Prints a JSON-encodable value on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Writes a line to stderr (progress and diagnostics never go to stdout).
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
