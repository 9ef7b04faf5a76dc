import Foundation

/// Errors raised while loading a tokenizer. Each case names the file and the field or component
/// at fault, so a user can tell which part of an unusual `tokenizer.json` we do not understand.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// The file or directory does not exist, or a directory holds no `tokenizer.json`.
    case fileNotFound(path: String)
    /// The file is not valid JSON (or its top level is not an object).
    case invalidJSON(file: String, reason: String)
    /// A required field is absent.
    case missingField(field: String, file: String)
    /// A field is present but has the wrong type or an impossible value.
    case invalidField(field: String, file: String, reason: String)
    /// A component (`model`, `normalizer`, `pre_tokenizer`, `decoder`, `post_processor`) has a
    /// `type` this implementation does not handle.
    case unsupported(component: String, type: String, file: String)
    /// A BPE merge names a token (or produces a token) that is missing from the vocabulary.
    case mergeReferencesUnknownToken(merge: String, token: String, file: String)
    /// A regular expression pattern could not be compiled.
    case invalidRegex(pattern: String, file: String, reason: String)

    /// A one-line explanation naming the file, the field or component, and what was expected.
    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "tokenizer file not found: \(path) (expected a tokenizer.json file or a directory holding one)"
        case .invalidJSON(let file, let reason):
            return "\(file): not a valid tokenizer JSON document: \(reason)"
        case .missingField(let field, let file):
            return "\(file): missing required field '\(field)'"
        case .invalidField(let field, let file, let reason):
            return "\(file): invalid field '\(field)': \(reason)"
        case .unsupported(let component, let type, let file):
            return "\(file): unsupported \(component) type '\(type)'"
                + " (supported: \(TokenizerError.supported[component] ?? "none"))"
        case .mergeReferencesUnknownToken(let merge, let token, let file):
            return "\(file): merge '\(merge)' references token '\(token)' that is not in the vocabulary"
        case .invalidRegex(let pattern, let file, let reason):
            return "\(file): cannot compile regex \(pattern.debugDescription): \(reason)"
        }
    }

    /// What each component supports, quoted in `unsupported` messages.
    static let supported: [String: String] = [
        "model": "BPE",
        "normalizer": "NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence",
        "pre_tokenizer": "Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, "
            + "BertPreTokenizer, Sequence",
        "decoder": "ByteLevel, ByteFallback, Metaspace, Replace, Fuse, Strip, Sequence",
        "post_processor": "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence",
        "pattern": "String, Regex",
        "split behavior": "Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous",
        "prepend_scheme": "always, first, never",
        "GGUF tokenizer.ggml.pre": Tokenizer.supportedGGUFPreTokenizers.joined(separator: ", "),
        "GGUF tokenizer.ggml.model": "gpt2 (byte-level BPE), llama (SentencePiece)",
    ]
}
