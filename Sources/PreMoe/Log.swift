import Foundation

/// The one place PreMoe's library code reports what a user should see but that is not an error
/// (a pattern file skipped while listing a store). Library code never prints; the CLI installs a
/// handler that writes to stderr, tests install one that collects.
public enum PreMoeLog {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var current: @Sendable (String) -> Void = { _ in }

    /// Receives every warning; the default drops them. Thread-safe.
    public static var handler: @Sendable (String) -> Void {
        get { lock.withLock { current } }
        set { lock.withLock { current = newValue } }
    }

    /// Reports `message` to the handler.
    static func warning(_ message: String) { handler(message) }
}
