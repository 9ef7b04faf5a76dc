import Foundation

/// Process memory figures, from `/proc/self/status` on Linux.
public enum ProcessMemory {
    /// Resets the peak resident size to the current one (Linux: writing 5 to
    /// `/proc/self/clear_refs`), so the next peak measured is that of what runs next.
    /// - Returns: whether the reset happened.
    @discardableResult
    public static func resetPeakResident() -> Bool {
        #if os(Linux)
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return "5".withCString { write(fd, $0, 1) } == 1
        #else
        return false
        #endif
    }

    /// Hands freed heap back to the OS. glibc keeps freed blocks (expert tensors are tens of KiB
    /// each) in its arenas, where they would count towards the next measurement's resident size.
    /// `malloc_trim` is not in Swift's Glibc module, so it is looked up at run time.
    public static func returnFreedMemory() {
        #if os(Linux)
        typealias Trim = @convention(c) (Int) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") {  // RTLD_DEFAULT
            _ = unsafeBitCast(symbol, to: Trim.self)(0)
        }
        #endif
    }

    /// Peak resident set size in bytes (VmHWM), or nil where unavailable.
    public static var peakResidentBytes: Int? { field("VmHWM") }
    /// Current resident set size in bytes (VmRSS), or nil where unavailable.
    public static var residentBytes: Int? { field("VmRSS") }

    private static func field(_ name: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }
}

/// A byte count for people: `512 B`, `14.33 MiB`, `2.43 GiB` (binary units).
public func formatBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(n) B" : String(format: "%.2f %@", value, units[unit])
}
