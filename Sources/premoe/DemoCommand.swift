import ArgumentParser
import Evaluation
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A tour in a minute: profile tasks, draw their expert heatmaps, retrieve, prune to 50% and 25%, "
            + "generate, and compare memory, time and quality.")
    @Argument(help: "Model directory.") var model = "models/demo-moe"
    @Option(help: "Comma-separated tasks (folders of --data-dir).") var tasks = "gsm8k,ai2_arc,boolq,piqa"
    @Option(name: .customLong("calibration-tokens"), help: "Calibration tokens per task (train split).")
    var calibrationTokens = 8000
    @Option(help: "Directory for the heatmap PNGs, the pattern store (patterns/) and summary.json.")
    var out = "demo-output"
    @Option(name: .customLong("data-dir"), help: "Task data laid out as <task>/<split>.jsonl.") var dataDir: String?
    @Option(name: .customLong("retrieval-prompts"), help: "Held-out prompts per task to retrieve.") var retrievalPrompts = 2
    @Option(name: .customLong("eval-items"), help: "Held-out items per task for perplexity.") var evalItems = 20
    @Option(help: "The prompt to generate from (default: the first held-out prompt of the first task).") var prompt: String?
    @Option(name: .customLong("max-tokens"), help: "Tokens to generate.") var maxTokens = 32
    @Option(help: "Kernel threads (default: all cores).") var threads = 0
    @Flag(name: .customLong("no-color"), help: "ASCII shades instead of 24-bit colour (also when stdout is not a terminal).")
    var noColor = false
    @Flag(help: "Print a JSON summary instead of the tour.") var json = false

    func validate() throws {
        if calibrationTokens < 1 { throw ValidationError("--calibration-tokens must be ≥ 1") }
        if retrievalPrompts < 1 { throw ValidationError("--retrieval-prompts must be ≥ 1") }
        if evalItems < 1 { throw ValidationError("--eval-items must be ≥ 1") }
        if maxTokens < 1 { throw ValidationError("--max-tokens must be ≥ 1") }
        if threads < 0 { throw ValidationError("--threads must be 0 (all cores) or positive") }
        if taskList.isEmpty { throw ValidationError("--tasks is empty") }
        if prompt?.isEmpty == true { throw ValidationError("--prompt is empty") }
    }

    var taskList: [String] {
        tasks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func run() throws {
        let options = DemoOptions(
            tasks: taskList, dataDirectory: dataDir.map { URL(fileURLWithPath: $0) } ?? Eval.defaultDataDirectory(),
            outputDirectory: URL(fileURLWithPath: out), calibrationTokens: calibrationTokens,
            retrievalPrompts: retrievalPrompts, evaluationItems: evalItems, generationTokens: maxTokens,
            prompt: prompt, threads: threads)
        let colour = !noColor && isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        let style: ExpertHeatmap.TerminalStyle = colour ? .color : .plain
        let progress: (String) -> Void = { printError($0) }
        func show(_ text: String) {
            guard !json else { return }
            print(text)
            fflush(stdout)
        }

        let session = try DemoSession(modelDirectory: URL(fileURLWithPath: model), options: options)
        show(session.report.headerText(style: style))
        _ = try session.profile(progress: progress)
        show(session.report.profileText(session.taskHeatmaps, style: style))
        _ = try session.retrieve(progress: progress)
        show(session.report.retrievalText(style: style))
        _ = try session.measureQuality(progress: progress)
        show(session.report.qualityText(style: style))
        _ = try session.compare(progress: progress)
        show(session.report.comparisonText(style: style))
        let report = try session.finish()
        if json { return try printJSON(report) }
        print(report.footerText(style: style), terminator: "")
    }
}
