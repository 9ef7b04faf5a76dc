// libFuzzer target: config.json → the shared spec (every architecture, every check), then the
// sizes a loader would allocate from it.
import Foundation
import Models

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let (spec, _) = try? ModelRegistry.spec(configData: input(bytes, count), file: "config.json") else { return 0 }
    _ = spec.moeLayers.map { spec.moe($0)?.expertCount ?? 0 }
    _ = spec.cacheKeyWidth * spec.maxPositions
    return 0
}
