// swift-tools-version: 6.0
import Foundation
import PackageDescription

/// Release builds are compiled for the CPU they run on: Swift's SIMD types fall back to slow
/// generic code without a target CPU (measured: about ten times slower on a plain GEMV).
/// `PREMOE_TARGET_CPU` overrides the choice (e.g. `haswell` for a portable AVX2 build).
let targetCPU = ProcessInfo.processInfo.environment["PREMOE_TARGET_CPU"] ?? "native"
let fastSettings: [SwiftSetting] = [
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
        .library(name: "Evaluation", targets: ["Evaluation"]),
        .executable(name: "premoe", targets: ["premoe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "Kernels", swiftSettings: fastSettings),
        .target(name: "Formats", dependencies: ["Kernels"], swiftSettings: fastSettings),
        .target(name: "Tokenization", swiftSettings: fastSettings),
        .target(name: "Models", dependencies: ["Kernels", "Formats", "Tokenization"], swiftSettings: fastSettings),
        .target(name: "Runtime", dependencies: ["Models"], swiftSettings: fastSettings),
        .target(name: "PreMoe", dependencies: ["Kernels", "Models", "Runtime", "Formats", "Tokenization"], swiftSettings: fastSettings),
        .target(name: "Evaluation", dependencies: ["PreMoe", "Runtime", "Models", "Formats", "Tokenization"], swiftSettings: fastSettings),
        .executableTarget(
            name: "premoe",
            dependencies: [
                "Kernels", "Formats", "Tokenization", "Models", "Runtime", "PreMoe", "Evaluation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: fastSettings
        ),
        .target(name: "TestSupport", dependencies: ["Kernels"], path: "Tests/TestSupport"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestSupport"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats", "TestSupport"]),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "TestSupport"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "TestSupport"]),
        .testTarget(name: "PreMoeTests", dependencies: ["PreMoe", "TestSupport"]),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "PreMoe", "Runtime", "TestSupport"]),
        // Runs the built `premoe` binary: the contracts other tools depend on.
        .testTarget(name: "CLITests", dependencies: ["premoe", "TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
