// Shared by every fuzz target (compiled into each): a scratch file per process for readers that
// take a path, and the input as `Data`.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes `data` to this process's scratch file with extension `ext` and returns its URL. Plain
/// POSIX writes: `Data.write(to:)` syncs every file to disk, which made each input cost a fsync.
func scratchFile(_ data: Data, ext: String) -> URL {
    let path = NSTemporaryDirectory() + "/premoe-fuzz-\(getpid()).\(ext)"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    if fd >= 0 {
        data.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n <= 0 { break }
                done += n
            }
        }
        close(fd)
    }
    return URL(fileURLWithPath: path)
}

/// The fuzzer's bytes as `Data`.
func input(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Data { Data(bytes: bytes, count: count) }
