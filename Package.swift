// swift-tools-version: 6.0
import Foundation
import PackageDescription

/// Release builds are compiled for the CPU they run on: Swift's SIMD types fall back to slow
/// generic code without a target CPU (measured: about ten times slower on a plain GEMV).
/// `PREMOE_TARGET_CPU` overrides the choice (e.g. `haswell` for a portable AVX2 build).
let targetCPU = ProcessInfo.processInfo.environment["PREMOE_TARGET_CPU"] ?? "native"
/// Every target but the kernels keeps Swift's checks (`-O`): bounds and overflow checks there
/// guard data from files and flags. `premoe bench models/demo-moe` (13 interleaved runs each,
/// 2026-12) put prefill and decode speed within run-to-run noise of the all-`-Ounchecked` build.
let checkedSettings: [SwiftSetting] = [
    .unsafeFlags(["-O", "-target-cpu", targetCPU], .when(configuration: .release)),
]
/// The kernels' inner loops run on validated buffers and counts: only there `-Ounchecked` pays.
let kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-target-cpu", targetCPU, "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "PreMoe",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Kernels", targets: ["Kernels"]),
        .library(name: "Formats", targets: ["Formats"]),
        .library(name: "Tokenization", targets: ["Tokenization"]),
        .library(name: "Models", targets: ["Models"]),
        .library(name: "Runtime", targets: ["Runtime"]),
        .library(name: "PreMoe", targets: ["PreMoe"]),
        .library(name: "SEAP", targets: ["SEAP"]),
        .library(name: "Evaluation", targets: ["Evaluation"]),
        .library(name: "Server", targets: ["Server"]),
        .executable(name: "premoe", targets: ["premoe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `premoe serve` (Server): HTTP, Prometheus text; the HTTP client only in ServerTests.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // Integer-activation dot products per instruction set (C: Swift has no vpmaddubsw/vpdpbusd).
        .target(name: "CKernels"),
        .target(name: "Kernels", dependencies: ["CKernels"], swiftSettings: kernelSettings),
        .target(name: "Formats", dependencies: ["Kernels"], swiftSettings: checkedSettings),
        .target(name: "Tokenization", swiftSettings: checkedSettings),
        .target(name: "Models", dependencies: ["Kernels", "Formats", "Tokenization"], swiftSettings: checkedSettings),
        .target(name: "Runtime", dependencies: ["Kernels", "Models", "Tokenization"], swiftSettings: checkedSettings),
        .target(name: "PreMoe", dependencies: ["Models", "Formats", "Kernels", "Tokenization"], swiftSettings: checkedSettings),
        .target(name: "SEAP", dependencies: ["Models", "PreMoe", "Formats", "Kernels", "Tokenization"], swiftSettings: checkedSettings),
        .target(name: "Evaluation", dependencies: ["PreMoe", "SEAP", "Runtime", "Models", "Formats", "Tokenization"], swiftSettings: checkedSettings),
        .target(
            name: "Server",
            dependencies: [
                "Runtime", "PreMoe", "Models", "Kernels", "Formats", "Tokenization",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: checkedSettings
        ),
        .executableTarget(
            name: "premoe",
            dependencies: [
                "Formats", "Tokenization", "Models", "Runtime", "PreMoe", "SEAP", "Evaluation", "Server",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: checkedSettings
        ),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestSupport"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats", "Kernels", "TestSupport"]),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Formats", "Kernels", "Tokenization", "TestSupport"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "Models", "Kernels", "TestSupport"]),
        .testTarget(name: "PreMoeTests", dependencies: ["PreMoe", "Models", "Formats", "Kernels", "Tokenization", "TestSupport"]),
        .testTarget(name: "SEAPTests", dependencies: ["SEAP", "Evaluation", "Models", "PreMoe", "Formats", "Kernels", "TestSupport"]),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "Models", "PreMoe", "Runtime", "TestSupport"]),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "Server", "Runtime", "PreMoe", "Models", "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Runs the built `premoe` binary: the contracts other tools depend on.
        .testTarget(name: "CLITests", dependencies: ["premoe", "TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
