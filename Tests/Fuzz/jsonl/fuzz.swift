// libFuzzer target: the JSONL task reader and the item parsers of every task it feeds.
import Evaluation
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    // The bytes, not a file: Foundation's Data(contentsOf:) leaks 4 KB on an empty file, which
    // LeakSanitizer would report against every empty input.
    guard let rows = try? TaskItems.parseJSONL(input(bytes, count), file: "fuzz.jsonl", limit: 64) else { return 0 }
    for (i, row) in rows.enumerated() {
        for task in TaskItems.multipleChoiceTasks {
            _ = try? TaskItems.multipleChoice(task: task, row: row, file: "fuzz.jsonl", line: i + 1)
        }
        _ = try? TaskItems.generative(row: row, file: "fuzz.jsonl", line: i + 1)
    }
    return 0
}
