import Foundation

/// One supported `model_type`: decodes `config.json` into the shared spec and names the
/// checkpoint layout.
public struct Architecture: Sendable {
    public let modelType: String
    let make: @Sendable (_ configData: Data, _ file: String) throws -> (DecoderSpec, HFDecoderLayout)
}

/// The table of supported architectures, keyed by `config.json`'s `model_type`.
public enum ModelRegistry {
    static let all: [String: Architecture] = {
        var table: [String: Architecture] = [:]
        for a in dense + qwenMoE + deepSeek + [mixtral, olmoe, glm4MoE, gptOss] { table[a.modelType] = a }
        return table
    }()

    /// Every supported `model_type`, sorted.
    public static var supportedTypes: [String] { all.keys.sorted() }

    /// Whether `modelType` can be loaded — ask before reading any weight.
    public static func supports(_ modelType: String) -> Bool { all[modelType] != nil }

    /// The architecture for a `config.json`'s bytes.
    /// - Throws: `ModelError.unsupportedModelType` listing the supported types, or a config error.
    static func architecture(configData: Data, file: String) throws -> Architecture {
        struct TypeOnly: Decodable { let model_type: String? }
        let type: String
        do {
            type = try JSONDecoder().decode(TypeOnly.self, from: configData).model_type ?? ""
        } catch {
            throw ModelError.invalidConfig(field: "(root)", reason: "not a JSON object: \(error)", file: file)
        }
        guard !type.isEmpty else {
            throw ModelError.invalidConfig(field: "model_type", reason: "missing", file: file)
        }
        guard let arch = all[type] else {
            throw ModelError.unsupportedModelType(type, supported: supportedTypes, file: file)
        }
        return arch
    }

    /// Decodes `config.json` into the shared spec, validating it: sizes in range and free of
    /// overflow (`ConfigValidation.swift`) before the architecture builds anything from them.
    /// - Throws: `ModelError` naming the field; decoding errors are rewrapped with the key path.
    public static func spec(configData: Data, file: String) throws -> (DecoderSpec, HFDecoderLayout) {
        let arch = try architecture(configData: configData, file: file)
        do {
            // Sizes first: an architecture allocates per-layer tables from them while decoding.
            try JSONDecoder().decode(BaseConfiguration.self, from: configData).validateSizes(file: file)
            let (spec, layout) = try arch.make(configData, file)
            try spec.validateSizes(file: file)
            return (spec, layout)
        } catch let error as DecodingError {
            throw ModelError.invalidConfig(field: error.fieldPath, reason: error.reason, file: file)
        }
    }
}

extension DecodingError {
    var fieldPath: String {
        let path: [CodingKey]
        switch self {
        case .keyNotFound(let key, let context): path = context.codingPath + [key]
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context): path = context.codingPath
        @unknown default: path = []
        }
        return path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }

    var reason: String {
        switch self {
        case .keyNotFound: return "required but missing"
        case .typeMismatch(let type, _): return "expected \(type)"
        case .valueNotFound(let type, _): return "expected \(type), found null"
        case .dataCorrupted(let context): return context.debugDescription
        @unknown default: return "\(self)"
        }
    }
}
