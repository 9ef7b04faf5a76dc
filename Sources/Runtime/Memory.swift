import Foundation

/// Process memory figures, from `/proc/self/status` on Linux.
public enum ProcessMemory {
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
