import Foundation
import Testing
import TestSupport

@Suite struct ServeCommandTests {
    /// `premoe serve` binds loopback by default, and SIGTERM ends it with status 0.
    @Test func serveBindsLoopbackAndExitsZeroOnSIGTERM() async throws {
        let process = Process()
        process.executableURL = CLI.binary
        process.arguments = ["serve", Fixtures.url("models/qwen3_moe").path, "--port", "0", "--threads", "1",
                             "--shutdown-grace", "1"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        final class Buffer: @unchecked Sendable {
            let lock = NSLock()
            var text = ""
        }
        let buffer = Buffer()
        err.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            buffer.lock.withLock { buffer.text += String(decoding: data, as: UTF8.self) }
        }
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && !buffer.lock.withLock({ buffer.text.contains("listening on") }) && process.isRunning {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        let started = buffer.lock.withLock { buffer.text }
        #expect(started.contains("listening on http://127.0.0.1:"), "\(started)")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        err.fileHandleForReading.readabilityHandler = nil
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0, "\(buffer.lock.withLock { buffer.text })")
    }
}
