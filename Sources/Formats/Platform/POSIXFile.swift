// The one place in Formats that talks to the OS: open, pread, mmap, write, fsync, rename.
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
import Foundation
import Kernels

/// Text for the current `errno`.
func errnoDescription(_ code: Int32 = errno) -> String {
    String(cString: strerror(code)) + " (errno \(code))"
}

/// A file opened read-only, for `pread` at absolute offsets. Safe to share between threads:
/// `pread` carries its own offset.
final class ReadOnlyFile: @unchecked Sendable {
    let path: String
    let descriptor: Int32
    let size: Int

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CheckpointError.io(file: path, operation: "open", reason: errnoDescription()) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = errnoDescription()
            close(fd)
            throw CheckpointError.io(file: path, operation: "stat", reason: reason)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw CheckpointError.io(file: path, operation: "open", reason: "not a regular file")
        }
        descriptor = fd
        size = Int(info.st_size)
    }

    deinit { close(descriptor) }

    /// Tells the kernel reads through this descriptor are random: no readahead around them.
    /// Expert loading reads kept experts, scattered in the file, in plan order; readahead would
    /// also read their dropped neighbours (measured: 1.7 GB read from disk for 0.75 GB needed).
    func adviseRandomAccess() {
        #if os(Linux)
            _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_RANDOM)
        #endif
    }

    /// Asks the kernel to read `count` bytes at `offset` into the page cache in the background.
    func adviseWillNeed(offset: Int, count: Int) {
        #if os(Linux)
            _ = posix_fadvise(descriptor, off_t(offset), off_t(count), POSIX_FADV_WILLNEED)
        #endif
    }

    /// Reads exactly `count` bytes at `offset` into `destination`, looping over short reads.
    func read(into destination: UnsafeMutableRawPointer, count: Int, at offset: Int) throws {
        // Linux transfers at most 0x7ffff000 bytes per call; stay under it.
        let maxChunk = 1 << 30
        var done = 0
        while done < count {
            let chunk = min(count - done, maxChunk)
            let n = pread(descriptor, destination + done, chunk, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.io(
                    file: path, operation: "read at byte \(offset + done)", reason: errnoDescription())
            }
            if n == 0 {
                throw CheckpointError.io(
                    file: path, operation: "read at byte \(offset + done)",
                    reason: "unexpected end of file (wanted \(count) bytes at \(offset)); was the file truncated?")
            }
            done += n
        }
    }

    /// Reads `count` bytes at `offset` into a new array.
    func readBytes(count: Int, at offset: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { raw in
            if let base = raw.baseAddress { try read(into: base, count: count, at: offset) }
        }
        return bytes
    }
}

/// A whole file mapped read-only (`PROT_READ`, `MAP_PRIVATE`): pages are read on first touch,
/// never copied into memory up front. Unmapped when the last `Tensor` viewing it goes away.
///
/// If another process truncates the file while it is mapped, touching the lost pages raises
/// SIGBUS; that is the price of zero-copy weights, and the same as every mmap loader.
final class MappedFile: @unchecked Sendable {
    let path: String
    let base: UnsafeRawPointer
    let length: Int

    init(file: ReadOnlyFile) throws {
        path = file.path
        length = file.size
        guard length > 0 else { throw CheckpointError.fileTooSmall(file: path, size: 0) }
        let address = mmap(nil, length, PROT_READ, MAP_PRIVATE, file.descriptor, 0)
        // MAP_FAILED is ((void *)-1), a macro Swift does not import.
        guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw CheckpointError.io(file: path, operation: "mmap of \(length) bytes", reason: errnoDescription())
        }
        base = UnsafeRawPointer(address)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), length) }
}

extension MappedFile: ReleasableStorage {
    /// `madvise(MADV_DONTNEED)` on the whole pages inside the range: the mapping is read-only
    /// and private, so the pages are simply read from the file again when touched.
    func releasePages(from start: UnsafeRawPointer, count: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lower = max(Int(bitPattern: start), Int(bitPattern: base))
        let upper = min(Int(bitPattern: start) + count, Int(bitPattern: base) + length)
        let first = (lower + page - 1) / page * page
        let last = upper / page * page
        guard page > 0, last > first, let address = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(address, last - first, MADV_DONTNEED)
    }
}

/// `write(2)`, under a name that methods called `write` do not shadow.
private func systemWrite(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, pointer, count)
}

/// A file being written: created exclusively under a temporary name beside its destination,
/// renamed into place by `commit()` after an fsync, removed if never committed. Readers of the
/// destination therefore see either the old file or the complete new one, never a torn write.
final class AtomicFileWriter {
    let destination: String
    let temporary: String
    private var descriptor: Int32
    private var committed = false

    init(destination: URL) throws {
        self.destination = destination.path
        let directory = destination.deletingLastPathComponent().path
        temporary = directory + "/." + destination.lastPathComponent + ".tmp-" + UUID().uuidString
        descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw CheckpointError.io(file: temporary, operation: "create", reason: errnoDescription())
        }
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
        if !committed { unlink(temporary) }
    }

    /// Appends `count` bytes, looping over short writes.
    func write(_ pointer: UnsafeRawPointer, count: Int) throws {
        let maxChunk = 1 << 30
        var done = 0
        while done < count {
            let n = systemWrite(descriptor, pointer + done, min(count - done, maxChunk))
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.io(file: temporary, operation: "write", reason: errnoDescription())
            }
            done += n
        }
    }

    /// Appends bytes.
    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            if let base = raw.baseAddress { try write(base, count: raw.count) }
        }
    }

    /// Flushes to disk, closes, renames over the destination and syncs the directory entry.
    func commit() throws {
        guard fsync(descriptor) == 0 else {
            throw CheckpointError.io(file: temporary, operation: "fsync", reason: errnoDescription())
        }
        let closed = close(descriptor)
        descriptor = -1
        guard closed == 0 else {
            throw CheckpointError.io(file: temporary, operation: "close", reason: errnoDescription())
        }
        guard rename(temporary, destination) == 0 else {
            throw CheckpointError.io(
                file: destination, operation: "rename from \(temporary)", reason: errnoDescription())
        }
        committed = true
        // Make the rename itself durable; a failure here loses nothing already written.
        let directory = (destination as NSString).deletingLastPathComponent
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }
}
