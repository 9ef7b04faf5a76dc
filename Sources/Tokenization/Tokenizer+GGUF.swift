import Foundation

extension Tokenizer {
    /// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
    public enum GGUFTokenType: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// llama.cpp's pre-tokenizer regexes (`llm_tokenizer_bpe` in `llama-vocab.cpp`, llama.cpp
    /// 0c1e570), applied in order; each splits the pieces the previous one left, keeping matches
    /// and the text between them (a `Split` with `Isolated` behaviour).
    enum GGUFPreTokenizerRegexes {
        static let gpt2 = [RegexSplitter.gpt2Pattern]
        static let smollm = [#"\p{N}"#, RegexSplitter.gpt2Pattern]
        static let qwen2 = [RegexSplitter.qwen2Pattern]
        static let llama3 = [RegexSplitter.llama3Pattern]
        /// llama.cpp's `default` (also what it uses for an empty name).
        static let `default` = [
            #"[\p{P}\$\+<=>\^~\|]+"#, RegexSplitter.gpt2Pattern, #"\p{N}+"#, "[0-9][0-9][0-9]",
        ]
        static let deepseekLLM = [
            "[\r\n]",
            "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
            "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            "\\p{N}+",
        ]
        static let deepseekV3 = [
            "\\p{N}{1,3}",
            "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ]
    }

    /// GGUF `tokenizer.ggml.pre` names (as llama.cpp's converter writes them) → the regexes,
    /// whether merges are skipped for whole-word vocabulary hits (`ignore_merges`), and whether
    /// the text is NFC-normalised first (Qwen2's `tokenizer.json` does so; llama.cpp does not, so
    /// the two agree on NFC text).
    static let ggufPreTokenizers: [String: (regexes: [String], ignoreMerges: Bool, nfc: Bool)] = {
        var table: [String: (regexes: [String], ignoreMerges: Bool, nfc: Bool)] = [:]
        func add(_ names: [String], _ regexes: [String], ignoreMerges: Bool = false, nfc: Bool = false) {
            for n in names { table[n] = (regexes, ignoreMerges, nfc) }
        }
        // "gpt2" is what premoe's own exports wrote before they used llama.cpp's name.
        add(["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "mellum",
             "a.x-4.0", "gigachat", "modern-bert"], GGUFPreTokenizerRegexes.gpt2)
        add(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
            GGUFPreTokenizerRegexes.smollm)
        add(["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan", "kormo"], GGUFPreTokenizerRegexes.qwen2, nfc: true)
        add(["llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"],
            GGUFPreTokenizerRegexes.llama3, ignoreMerges: true)
        add(["dbrx", "smaug-bpe"], GGUFPreTokenizerRegexes.llama3)
        add(["default"], GGUFPreTokenizerRegexes.default)
        add(["deepseek-llm"], GGUFPreTokenizerRegexes.deepseekLLM)
        add(["deepseek-v3", "hunyuan-dense", "joyai-llm"], GGUFPreTokenizerRegexes.deepseekV3)
        return table
    }()

    /// The GGUF `tokenizer.ggml.pre` names this initializer understands (llama.cpp's spellings).
    public static var supportedGGUFPreTokenizers: [String] { ggufPreTokenizers.keys.sorted() }

    /// Builds a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.model = "gpt2"`).
    ///
    /// - Parameters:
    ///   - vocabulary: `tokenizer.ggml.tokens`; the index is the id.
    ///   - merges: `tokenizer.ggml.merges`, `"a b"` strings in rank order.
    ///   - tokenTypes: `tokenizer.ggml.token_type` (raw values of `GGUFTokenType`); control tokens
    ///     become special added tokens, user-defined ones plain added tokens. Nil: all normal.
    ///   - preTokenizer: `tokenizer.ggml.pre` (`qwen2`, `llama-bpe`, `smollm`, `gpt-2`, ...; see
    ///     `supportedGGUFPreTokenizers`); empty means llama.cpp's `default`.
    ///   - bosTokenID: `tokenizer.ggml.bos_token_id`.
    ///   - eosTokenID: `tokenizer.ggml.eos_token_id`.
    ///   - addBOS: `tokenizer.ggml.add_bos_token`: put BOS before every encoded sequence.
    ///   - chatTemplate: `tokenizer.chat_template`, run by `ChatTemplate`.
    /// - Throws: `TokenizerError.unsupported` for an unknown pre-tokenizer name,
    ///   `invalidField`/`mergeReferencesUnknownToken` for inconsistent metadata.
    public convenience init(
        vocabulary: [String], merges: [String], tokenTypes: [Int]? = nil, preTokenizer: String,
        bosTokenID: Int? = nil, eosTokenID: Int? = nil, addBOS: Bool = false,
        chatTemplate: String? = nil
    ) throws {
        let file = "GGUF metadata"
        if let tokenTypes, tokenTypes.count != vocabulary.count {
            throw TokenizerError.invalidField(
                field: "tokenizer.ggml.token_type", file: file,
                reason: "\(tokenTypes.count) types for \(vocabulary.count) tokens")
        }
        for (key, id) in [("tokenizer.ggml.bos_token_id", bosTokenID), ("tokenizer.ggml.eos_token_id", eosTokenID)] {
            if let id, !vocabulary.indices.contains(id) {
                throw TokenizerError.invalidField(field: key, file: file, reason: "id \(id) is outside the vocabulary")
            }
        }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabulary.count)
        for (id, token) in vocabulary.enumerated() where vocab[token] == nil { vocab[token] = id }
        let pairs = try merges.enumerated().map { i, m -> (String, String) in
            let parts = m.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError.invalidField(
                    field: "tokenizer.ggml.merges[\(i)]", file: file,
                    reason: "expected \"a b\", got \(m.debugDescription)")
            }
            return (String(parts[0]), String(parts[1]))
        }

        guard let pre = Self.ggufPreTokenizers[preTokenizer.isEmpty ? "default" : preTokenizer] else {
            throw TokenizerError.unsupported(component: "GGUF tokenizer.ggml.pre", type: preTokenizer, file: file)
        }
        let splits = try pre.regexes.map { r in
            PreTokenizer.split(try RegexSplitter(.regex(r), file: file), .isolated, invert: false)
        }
        let normalizer: Normalizer? = pre.nfc ? .nfc : nil
        let ignoreMerges = pre.ignoreMerges

        let model = try BPEModel(
            vocab: vocab, merges: pairs, unkToken: nil, byteFallback: false, fuseUnk: false,
            ignoreMerges: ignoreMerges, continuingSubwordPrefix: nil, endOfWordSuffix: nil,
            file: file)
        var added: [AddedToken] = []
        for (id, raw) in (tokenTypes ?? []).enumerated() {
            switch GGUFTokenType(rawValue: raw) {
            case .control: added.append(AddedToken(id: id, content: vocabulary[id], special: true))
            case .userDefined: added.append(AddedToken(id: id, content: vocabulary[id], special: false))
            default: break
            }
        }
        let config = TokenizerConfig(
            bosToken: bosTokenID.map { vocabulary[$0] }, hasBOS: true,
            eosToken: eosTokenID.map { vocabulary[$0] }, chatTemplate: chatTemplate)
        let post: PostProcessor? = addBOS ? bosTokenID.map { .template(prefix: [$0], suffix: []) } : nil
        try self.init(
            model: model, normalizer: normalizer,
            preTokenizer: .sequence(splits + [.byteLevel(addPrefixSpace: false, useRegex: false)]), postProcessor: post,
            decoder: .byteLevel, addedTokens: added, config: config)
    }
}
