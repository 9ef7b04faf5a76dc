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

#if os(Linux)
    /// `O_DIRECT`, which Glibc's Swift module does not export (it needs `_GNU_SOURCE`).
    #if arch(x86_64) || arch(i386)
        private let linuxODirect: Int32 = 0o40000
    #else
        private let linuxODirect: Int32 = 0o200000  // arm64, riscv64
    #endif
#endif

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

    /// Whether reads bypass the page cache (`O_DIRECT`): offsets, counts and buffers must then be
    /// multiples of `directAlignment`.
    let isDirect: Bool
    /// The alignment `O_DIRECT` reads get here (the largest logical block size in common use).
    static let directAlignment = 4096

    /// Opens `path` for reading.
    /// - Parameter direct: open with `O_DIRECT` (Linux only).
    /// - Throws: `CheckpointError.io` when it cannot be opened (a file system that refuses
    ///   `O_DIRECT` answers EINVAL) or is not a regular file.
    init(path: String, direct: Bool = false) throws {
        self.path = path
        var flags = O_RDONLY | O_CLOEXEC
        #if os(Linux)
            if direct { flags |= linuxODirect }
            isDirect = direct
        #else
            isDirect = false
        #endif
        let fd = open(path, flags)
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

    /// Reads at least `needed` bytes at `offset` into `destination` with `O_DIRECT`: `offset`,
    /// `count` (≥ `needed`) and `destination` are multiples of `directAlignment`, and the end of
    /// the file may come before `count` bytes (not before `needed`).
    /// - Throws: `CheckpointError.io`.
    func readDirect(into destination: UnsafeMutableRawPointer, count: Int, needed: Int, at offset: Int) throws {
        var done = 0
        while done < needed {
            let n = pread(descriptor, destination + done, min(count - done, 1 << 30), off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.io(file: path, operation: "direct read at byte \(offset + done)", reason: errnoDescription())
            }
            if n == 0 {
                throw CheckpointError.io(file: path, operation: "direct read at byte \(offset + done)",
                                         reason: "unexpected end of file (wanted \(needed) bytes at \(offset))")
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

/// One read of a batch (`ReadOnlyFile.read(_:concurrency:)`): `count` bytes at `offset` of
/// `file` into `destination`. With `direct` (the same file opened `O_DIRECT`) the aligned span
/// around them is read straight into the caller's buffer, with no copy: `destination` must then
/// lie `offset % directAlignment` bytes past an aligned address, with room for the span after it.
struct FileRead: @unchecked Sendable {
    let file: ReadOnlyFile
    let offset: Int
    let count: Int
    let destination: UnsafeMutableRawPointer
    let direct: ReadOnlyFile?

    /// Bytes a buffer needs for a direct read of `count` bytes at `offset`: the aligned span.
    static func directSpan(offset: Int, count: Int) -> Int {
        let a = ReadOnlyFile.directAlignment
        return (offset % a + count + a - 1) / a * a
    }

    /// Reads into `destination`. A direct read that fails (an unaligned short read, a file system
    /// that refuses) is done again through the page cache.
    func perform() throws {
        if let direct {
            let lead = offset % ReadOnlyFile.directAlignment
            let span = Self.directSpan(offset: offset, count: count)
            if (try? direct.readDirect(into: destination - lead, count: span, needed: lead + count, at: offset - lead)) != nil {
                return
            }
        }
        try file.read(into: destination, count: count, at: offset)
    }
}

extension ReadOnlyFile {
    /// Runs `reads` on `concurrency` threads of its own (blocked in `pread`, they cost no CPU),
    /// handed out in array order, so several requests are in flight at once: a single thread
    /// waiting for each read in turn leaves NVMe and virtio disks mostly idle (measured on the
    /// development VM: 4–8 reads in flight read 604 MB of scattered experts 2–4× as fast as one).
    /// A read whose `direct` path fails (an unaligned tail, a refusing file system) is done again
    /// through the page cache.
    /// - Throws: the first `CheckpointError.io` of any read (reads not yet started are skipped).
    static func read(_ reads: [FileRead], concurrency: Int) throws {
        guard !reads.isEmpty else { return }
        let queue = ReadQueue(reads)
        let group = DispatchGroup()
        for _ in 1..<max(1, min(concurrency, reads.count)) {
            group.enter()
            let thread = Thread {
                queue.work()
                group.leave()
            }
            thread.stackSize = 1 << 18
            thread.start()
        }
        queue.work()
        group.wait()
        if let failure = queue.failure { throw failure }
    }
}

/// The reads of one `ReadOnlyFile.read(_:concurrency:)` call, handed out one at a time.
private final class ReadQueue: @unchecked Sendable {
    private let reads: [FileRead]
    private let lock = NSLock()
    private var next = 0
    private var firstFailure: Error?

    init(_ reads: [FileRead]) { self.reads = reads }

    var failure: Error? { lock.withLock { firstFailure } }

    /// Performs reads until none is left (or one has failed).
    func work() {
        while true {
            let i: Int? = lock.withLock {
                guard next < reads.count, firstFailure == nil else { return nil }
                next += 1
                return next - 1
            }
            guard let i else { return }
            do {
                try reads[i].perform()
            } catch {
                lock.withLock { if firstFailure == nil { firstFailure = error } }
            }
        }
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

extension MappedFile {
    /// Whether every page of `count` bytes at `offset` of the file is in the page cache
    /// (`mincore`); false when that cannot be told.
    func isResident(offset: Int, count: Int) -> Bool {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0, count > 0, offset >= 0, offset + count <= length else { return false }
        let first = offset / page * page
        let end = min(length, offset + count)
        let pages = (end - first + page - 1) / page
        var vector = [UInt8](repeating: 0, count: pages)
        let status = vector.withUnsafeMutableBufferPointer { v in
            mincore(UnsafeMutableRawPointer(mutating: base + first), end - first, v.baseAddress)
        }
        return status == 0 && vector.allSatisfy { $0 & 1 == 1 }
    }
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
    /// Bytes appended since the written pages were last dropped from the page cache.
    private var undropped = 0
    /// How many written bytes `dropWrittenPages` lets accumulate before it syncs and drops them.
    static let dropThreshold = 64 << 20

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
        undropped += count
    }

    /// Once more than `dropThreshold` bytes were appended since the last time, writes them to
    /// disk and drops them from the page cache (Linux), so a file larger than memory is written
    /// without its dirty pages filling a memory cgroup's limit. A hint: failures are ignored.
    func dropWrittenPages() {
        guard undropped >= Self.dropThreshold else { return }
        undropped = 0
        #if os(Linux)
            if fdatasync(descriptor) == 0 { _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED) }
        #endif
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
