import Foundation

/// A `tokenizer.json` post-processor. Only its effect on ids matters here (offsets are not tracked),
/// so `ByteLevel` is a no-op and the others add special tokens around a single sequence.
indirect enum PostProcessor: Sendable {
    /// Ids before and after the sequence.
    case template(prefix: [Int], suffix: [Int])
    case none
    case sequence([PostProcessor])

    /// Parses a post-processor object.
    /// - Throws: `TokenizerError.unsupported` for an unknown type, `invalidField` for a template
    ///   naming an unknown special token.
    init(_ json: JSONReader) throws {
        let type = try json.type()
        switch type {
        case "ByteLevel":
            self = .none
        case "TemplateProcessing":
            guard let single = json.raw("single") as? [Any] else {
                throw TokenizerError.missingField(field: json.fieldPath("single"), file: json.file)
            }
            let specials = try json.object("special_tokens")
            var prefix: [Int] = []
            var suffix: [Int] = []
            var seenSequence = false
            for (i, item) in single.enumerated() {
                guard let item = item as? [String: Any] else {
                    throw json.invalid("single[\(i)]", "expected an object")
                }
                let piece = JSONReader(item, path: json.fieldPath("single[\(i)]"), file: json.file)
                if piece.has("Sequence") {
                    seenSequence = true
                } else if let special = try piece.object("SpecialToken") {
                    let name = try special.requiredString("id")
                    guard let entry = try specials?.object(name),
                        let ids = entry.raw("ids") as? [Any]
                    else {
                        throw json.invalid("special_tokens", "no entry for '\(name)'")
                    }
                    let values = try ids.map { v -> Int in
                        guard let n = JSONReader.tokenID(v) else {
                            throw json.invalid("special_tokens.\(name).ids", "expected token ids")
                        }
                        return n
                    }
                    if seenSequence { suffix += values } else { prefix += values }
                } else {
                    throw json.invalid("single[\(i)]", "expected Sequence or SpecialToken")
                }
            }
            self = .template(prefix: prefix, suffix: suffix)
        case "RobertaProcessing", "BertProcessing":
            func tokenID(_ key: String) throws -> Int {
                guard let pair = json.raw(key) as? [Any], pair.count == 2, let id = JSONReader.tokenID(pair[1]) else {
                    throw json.invalid(key, "expected [token, id]")
                }
                return id
            }
            self = .template(prefix: [try tokenID("cls")], suffix: [try tokenID("sep")])
        case "Sequence":
            self = .sequence(try json.objects("processors").map(PostProcessor.init))
        default:
            throw TokenizerError.unsupported(component: "post_processor", type: type, file: json.file)
        }
    }

    func apply(_ ids: [Int]) -> [Int] {
        switch self {
        case .none: return ids
        case .template(let prefix, let suffix): return prefix + ids + suffix
        case .sequence(let list): return list.reduce(ids) { $1.apply($0) }
        }
    }

    /// The first id this processor puts before every sequence, if any (a BOS heuristic).
    var leadingID: Int? {
        switch self {
        case .none: return nil
        case .template(let prefix, _): return prefix.first
        case .sequence(let list): return list.lazy.compactMap(\.leadingID).first
        }
    }
}
