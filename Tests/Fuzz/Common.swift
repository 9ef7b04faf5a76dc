// Shared by every fuzz target (compiled into each): a scratch file per process for readers that
// take a path, and the input as `Data`.
import Foundation

/// Writes `data` to this process's scratch file with extension `ext` and returns its URL.
func scratchFile(_ data: Data, ext: String) -> URL {
    let url = URL(fileURLWithPath: NSTemporaryDirectory())
        .appendingPathComponent("premoe-fuzz-\(ProcessInfo.processInfo.processIdentifier).\(ext)")
    try? data.write(to: url)
    return url
}

/// The fuzzer's bytes as `Data`.
func input(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Data { Data(bytes: bytes, count: count) }
