import Foundation

/// A Hugging Face `tokenizer.json` tokenizer (BPE models), producing exactly the ids of the Python
/// `tokenizers` library's `Tokenizer.from_file(path).encode(text).ids`.
///
/// The pipeline is the library's: added tokens are cut out of the raw text first, each remaining
/// piece is normalized, pre-tokenized into words, and each word is split by BPE; the
/// post-processor then adds BOS/EOS-style tokens. Instances are immutable apart from an internal,
/// lock-protected word cache, so one tokenizer can be shared across threads.
public final class Tokenizer: @unchecked Sendable {
    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let postProcessor: PostProcessor?
    let decoder: Decoder?
    /// `added_tokens`, in file order.
    public let addedTokens: [AddedToken]
    private let addedByID: [Int: AddedToken]
    /// What `decode` and `token(_:)` show for an added token: its content, normalized when the
    /// token is matched in normalized text (`tokenizers` stores it that way).
    private let addedText: [Int: String]
    private let addedByContent: [String: AddedToken]
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher

    /// Number of embedding rows the ids can address: max id + 1 over the vocabulary and added tokens.
    public let vocabularySize: Int
    /// The beginning-of-sequence id: `bos_token` from `tokenizer_config.json` when present,
    /// else the first token the post-processor puts in front of every sequence.
    public let bosTokenID: Int?
    /// Ids that end generation: `eos_token` from `tokenizer_config.json` first, then whichever of
    /// `<|endoftext|>`, `<|im_end|>`, `</s>`, `<|eot_id|>`, `<|end_of_text|>`, `<|end|>` exist.
    public let eosTokenIDs: [Int]
    /// The model's chat template (`chat_template` of `tokenizer_config.json`, or GGUF's
    /// `tokenizer.chat_template`); nil when it has none.
    public let chatTemplate: ChatTemplate?

    /// Loads a tokenizer.
    /// - Parameter url: a `tokenizer.json` file, or a directory holding one. A
    ///   `tokenizer_config.json` next to it, when present, supplies BOS/EOS and the chat template.
    /// - Throws: `TokenizerError` when the files are missing, malformed or use unsupported components.
    public convenience init(url: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw TokenizerError.fileNotFound(path: url.path)
        }
        let file = isDirectory.boolValue ? url.appendingPathComponent("tokenizer.json") : url
        guard let data = FileManager.default.contents(atPath: file.path) else {
            throw TokenizerError.fileNotFound(path: file.path)
        }
        let configURL = file.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        let config = FileManager.default.contents(atPath: configURL.path)
        try self.init(data: data, configData: config, fileName: file.lastPathComponent)
    }

    /// Parses a tokenizer from the contents of a `tokenizer.json`.
    /// - Parameters:
    ///   - data: the `tokenizer.json` bytes.
    ///   - configData: optional `tokenizer_config.json` bytes.
    ///   - fileName: name used in error messages.
    /// - Throws: `TokenizerError` for malformed JSON or unsupported components.
    public convenience init(data: Data, configData: Data? = nil, fileName: String = "tokenizer.json") throws {
        let json = try JSONReader.parse(data, file: fileName)
        let config = try configData.map { try TokenizerConfig(data: $0, file: "tokenizer_config.json") }

        let modelJSON = try json.requiredObject("model")
        let modelType = try modelJSON.string("type") ?? (modelJSON.has("merges") ? "BPE" : "")
        guard modelType == "BPE" else {
            throw TokenizerError.unsupported(
                component: "model", type: modelType.isEmpty ? "(none)" : modelType, file: fileName)
        }
        let model = try Tokenizer.parseBPE(modelJSON)

        let added = try json.objects("added_tokens").map { t -> AddedToken in
            guard let id = try t.tokenID("id") else {
                throw TokenizerError.missingField(field: t.fieldPath("id"), file: fileName)
            }
            return AddedToken(
                id: id, content: try t.requiredString("content"),
                singleWord: try t.bool("single_word", default: false), lstrip: try t.bool("lstrip", default: false),
                rstrip: try t.bool("rstrip", default: false), normalized: try t.bool("normalized", default: true),
                special: try t.bool("special", default: false))
        }
        try self.init(
            model: model,
            normalizer: try json.object("normalizer").map(Normalizer.init),
            preTokenizer: try json.object("pre_tokenizer").map(PreTokenizer.init),
            postProcessor: try json.object("post_processor").map(PostProcessor.init),
            decoder: try json.object("decoder").map(Decoder.init),
            addedTokens: added, config: config)
    }

    init(
        model: BPEModel, normalizer: Normalizer?, preTokenizer: PreTokenizer?, postProcessor: PostProcessor?,
        decoder: Decoder?, addedTokens: [AddedToken], config: TokenizerConfig?
    ) throws {
        self.model = model
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.postProcessor = postProcessor
        self.decoder = decoder
        self.addedTokens = addedTokens
        var byID: [Int: AddedToken] = [:]
        var byContent: [String: AddedToken] = [:]
        for t in addedTokens {
            byID[t.id] = t
            byContent[t.content] = t
        }
        addedByID = byID
        addedText = Dictionary(
            addedTokens.map { t in
                (t.id, t.normalized ? (normalizer?.apply(t.content) ?? t.content) : t.content)
            }, uniquingKeysWith: { _, last in last })
        addedByContent = byContent
        rawMatcher = AddedTokenMatcher(addedTokens.filter { !$0.normalized }.map { ($0.content, $0) })
        normalizedMatcher = AddedTokenMatcher(
            addedTokens.filter(\.normalized).map { t in
                (normalizer?.apply(t.content) ?? t.content, t)
            })
        vocabularySize = max(model.idToToken.count, (addedTokens.map(\.id).max() ?? -1) + 1)

        func lookup(_ token: String) -> Int? { byContent[token]?.id ?? model.vocab[token] }
        if let config, config.hasBOS {
            bosTokenID = config.bosToken.flatMap(lookup)
        } else {
            bosTokenID = postProcessor?.leadingID
        }
        var eos: [Int] = []
        for name in [config?.eosToken].compactMap({ $0 })
            + ["<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<|end|>"]
        {
            if let id = lookup(name), !eos.contains(id) { eos.append(id) }
        }
        eosTokenIDs = eos
        chatTemplate = config?.chatTemplate.map {
            ChatTemplate(source: $0, bosToken: config?.bosToken, eosToken: config?.eosToken)
        }
    }

    private static func parseBPE(_ json: JSONReader) throws -> BPEModel {
        guard let vocabObject = json.raw("vocab") as? [String: Any] else {
            throw json.has("vocab")
                ? json.invalid("vocab", "expected an object of token → id")
                : TokenizerError.missingField(field: json.fieldPath("vocab"), file: json.file)
        }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabObject.count)
        for (token, value) in vocabObject {
            guard let id = JSONReader.tokenID(value) else {
                throw json.invalid("vocab", "id of '\(token)' is not an integer in 0..<\(JSONReader.maxTokenID)")
            }
            vocab[token] = id
        }
        var merges: [(String, String)] = []
        if let list = json.raw("merges") {
            guard let array = list as? [Any] else { throw json.invalid("merges", "expected an array") }
            merges.reserveCapacity(array.count)
            for (i, m) in array.enumerated() {
                if let s = m as? String {
                    // "a b": tokens never contain a space in this format.
                    let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                    guard parts.count == 2 else {
                        throw json.invalid("merges[\(i)]", "expected \"a b\", got \(s.debugDescription)")
                    }
                    merges.append((String(parts[0]), String(parts[1])))
                } else if let pair = m as? [Any], pair.count == 2, let a = pair[0] as? String,
                    let b = pair[1] as? String
                {
                    merges.append((a, b))
                } else {
                    throw json.invalid("merges[\(i)]", "expected \"a b\" or [\"a\", \"b\"]")
                }
            }
        }
        return try BPEModel(
            vocab: vocab, merges: merges, unkToken: try json.string("unk_token"),
            byteFallback: try json.bool("byte_fallback", default: false),
            fuseUnk: try json.bool("fuse_unk", default: false),
            ignoreMerges: try json.bool("ignore_merges", default: false),
            continuingSubwordPrefix: try json.string("continuing_subword_prefix"),
            endOfWordSuffix: try json.string("end_of_word_suffix"), file: json.file)
    }

    // MARK: - Encoding

    /// Encodes text to token ids.
    /// - Parameters:
    ///   - text: raw text; special tokens written in it (`<|im_start|>`) are recognised.
    ///   - addSpecialTokens: apply the post-processor (BOS and the like), as `tokenizers` does by default.
    /// - Returns: token ids.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        let scalars = Array(text.unicodeScalars)
        var ids: [Int] = []
        ids.reserveCapacity(scalars.count / 3)
        for (range, token) in rawMatcher.split(scalars) {
            if let token {
                ids.append(token.id)
                continue
            }
            if range.isEmpty { continue }
            let normalized =
                normalizer.map { Array($0.apply(String(scalars: scalars[range])).unicodeScalars) }
                ?? Array(scalars[range])
            for (inner, innerToken) in normalizedMatcher.split(normalized) {
                if let innerToken {
                    ids.append(innerToken.id)
                    continue
                }
                if inner.isEmpty { continue }
                var pieces = [
                    Piece(
                        scalars: Array(normalized[inner]),
                        atStart: range.lowerBound == 0 && inner.lowerBound == 0)
                ]
                if let preTokenizer { pieces = preTokenizer.apply(pieces) }
                for piece in pieces {
                    ids.append(contentsOf: model.tokenize(String(scalars: piece.scalars)))
                }
            }
        }
        if addSpecialTokens, let postProcessor { return postProcessor.apply(ids) }
        return ids
    }

    // MARK: - Decoding

    /// Decodes token ids to text, through the tokenizer's decoder (tokens joined by spaces when it
    /// has none, as `tokenizers` does). Unknown ids are skipped.
    /// - Parameters:
    ///   - ids: token ids.
    ///   - skipSpecialTokens: drop added tokens marked `special`.
    /// - Returns: the text.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        let tokens = ids.compactMap { id -> String? in
            if let t = addedByID[id] { return skipSpecialTokens && t.special ? nil : addedText[id] }
            guard id >= 0, id < model.idToToken.count, let token = model.idToToken[id] else { return nil }
            if skipSpecialTokens, let t = addedByContent[token], t.special { return nil }
            return token
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decode(tokens)
    }

    /// The id of a token string (added tokens first, then the model vocabulary).
    public func tokenID(_ token: String) -> Int? { addedByContent[token]?.id ?? model.vocab[token] }

    /// The token string of an id, or nil if no token has it. A normalized added token shows its
    /// normalized form, as `tokenizers`' `id_to_token` does.
    public func token(_ id: Int) -> String? {
        if let text = addedText[id] { return text }
        guard id >= 0, id < model.idToToken.count else { return nil }
        return model.idToToken[id]
    }

    /// Whether `id` is a special added token (`<|im_end|>`, `<s>`, ...).
    public func isSpecialToken(_ id: Int) -> Bool { addedByID[id]?.special ?? false }
}

/// The fields of `tokenizer_config.json` this package uses.
struct TokenizerConfig {
    /// Whether `bos_token` is present at all (null means "no BOS", as Qwen2 says).
    var hasBOS = false
    var bosToken: String?
    var eosToken: String?
    var chatTemplate: String?

    init(bosToken: String? = nil, hasBOS: Bool = false, eosToken: String? = nil, chatTemplate: String? = nil) {
        self.bosToken = bosToken
        self.hasBOS = hasBOS
        self.eosToken = eosToken
        self.chatTemplate = chatTemplate
    }

    init(data: Data, file: String) throws {
        let json = try JSONReader.parse(data, file: file)
        func token(_ key: String) throws -> String? {
            guard let v = json.raw(key) else { return nil }
            if let s = v as? String { return s }
            if let o = v as? [String: Any], let s = o["content"] as? String { return s }
            throw json.invalid(key, "expected a string or an object with 'content'")
        }
        hasBOS = json.object.keys.contains("bos_token")
        bosToken = try token("bos_token")
        eosToken = try token("eos_token")
        if let s = json.raw("chat_template") as? String {
            chatTemplate = s
        } else if let list = json.raw("chat_template") as? [[String: Any]] {
            // Named templates: prefer "default".
            let named = list.first { ($0["name"] as? String) == "default" } ?? list.first
            chatTemplate = named?["template"] as? String
        }
    }
}
