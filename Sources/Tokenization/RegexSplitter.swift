import Foundation

/// Finds the matches of a `Split` pre-tokenizer pattern in a run of Unicode scalars.
///
/// The GPT-2, Qwen2 and Llama-3 patterns are recognised by their exact text and run through a
/// hand-written matcher: they are applied to every byte of input the profiler encodes, and
/// `NSRegularExpression` (ICU) is about an order of magnitude slower on them. Any other pattern
/// falls back to `NSRegularExpression`, whose syntax covers what `tokenizers` (Oniguruma) accepts
/// in practice (`\p{L}`, `(?i:...)`, look-ahead).
enum RegexSplitter: @unchecked Sendable {
    case gpt2
    /// Qwen2 (`digitRun == 1`) and Llama-3 (`digitRun == 3`) share everything but the digit run.
    case qwenLlama(digitRun: Int)
    case literal([Unicode.Scalar])
    case general(NSRegularExpression)

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let llama3Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Builds a splitter for a `tokenizers` pattern.
    /// - Parameters:
    ///   - pattern: the `{"String"}` or `{"Regex"}` pattern.
    ///   - file: file name for error messages.
    ///   - forceGeneral: always use `NSRegularExpression` (tests compare both paths).
    /// - Throws: `TokenizerError.invalidRegex` when the pattern does not compile.
    init(_ pattern: Pattern, file: String, forceGeneral: Bool = false) throws {
        switch pattern {
        case .string(let s):
            self = .literal(Array(s.unicodeScalars))
        case .regex(let r):
            if !forceGeneral {
                if r == RegexSplitter.gpt2Pattern { self = .gpt2; return }
                if r == RegexSplitter.qwen2Pattern { self = .qwenLlama(digitRun: 1); return }
                if r == RegexSplitter.llama3Pattern { self = .qwenLlama(digitRun: 3); return }
            }
            do {
                self = .general(try NSRegularExpression(pattern: r, options: []))
            } catch {
                throw TokenizerError.invalidRegex(pattern: r, file: file, reason: "\(error)")
            }
        }
    }

    /// Non-overlapping matches in `s`, as half-open scalar index ranges, left to right.
    func matches(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        switch self {
        case .gpt2, .qwenLlama:
            var out: [Range<Int>] = []
            var i = 0
            while i < s.count {
                let end = matchFamily(s, at: i)
                out.append(i..<end)
                i = end
            }
            return out
        case .literal(let needle):
            guard !needle.isEmpty, needle.count <= s.count else { return [] }
            var out: [Range<Int>] = []
            var i = 0
            while i + needle.count <= s.count {
                if s[i] == needle[0] && s[i..<(i + needle.count)].elementsEqual(needle) {
                    out.append(i..<(i + needle.count))
                    i += needle.count
                } else {
                    i += 1
                }
            }
            return out
        case .general(let regex):
            var text: [Unicode.Scalar] = []
            text.append(contentsOf: s)
            let string = String(scalars: text)
            // Map UTF-16 offsets back to scalar indices.
            var utf16ToScalar = [Int](repeating: 0, count: string.utf16.count + 1)
            var u = 0
            for (k, scalar) in s.enumerated() {
                utf16ToScalar[u] = k
                u += scalar.utf16.count
            }
            utf16ToScalar[u] = s.count
            var out: [Range<Int>] = []
            let ns = string as NSString
            for m in regex.matches(in: string, options: [], range: NSRange(location: 0, length: ns.length)) {
                let r = m.range
                guard r.location != NSNotFound, r.length > 0 else { continue }
                out.append(utf16ToScalar[r.location]..<utf16ToScalar[r.location + r.length])
            }
            return out
        }
    }

    /// End of the match starting at `i` for the GPT-2 / Qwen2 / Llama-3 alternation. Every
    /// scalar is covered by some alternative, so the result is always greater than `i`.
    private func matchFamily(_ s: [Unicode.Scalar], at i: Int) -> Int {
        let n = s.count
        let c = s[i]
        let caseInsensitive: Bool
        let digitRun: Int
        if case .qwenLlama(let run) = self {
            caseInsensitive = true
            digitRun = run
        } else {
            caseInsensitive = false
            digitRun = 0
        }

        // 1. Contractions: 's 't 're 've 'm 'll 'd
        if c == "'" && i + 1 < n {
            if let end = contraction(s, at: i + 1, caseInsensitive: caseInsensitive) { return end }
        }
        // 2. Letters.
        if digitRun == 0 {
            // ` ?\p{L}+`
            if c.isLetter { return letterRun(s, from: i) }
            if c == " " && i + 1 < n && s[i + 1].isLetter { return letterRun(s, from: i + 1) }
        } else {
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if c.isLetter { return letterRun(s, from: i) }
            if !c.isNewline && !c.isNumber && i + 1 < n && s[i + 1].isLetter { return letterRun(s, from: i + 1) }
        }
        // 3. Numbers.
        if digitRun == 0 {
            // ` ?\p{N}+`
            if c.isNumber { return numberRun(s, from: i, limit: Int.max) }
            if c == " " && i + 1 < n && s[i + 1].isNumber { return numberRun(s, from: i + 1, limit: Int.max) }
        } else if c.isNumber {
            return numberRun(s, from: i, limit: digitRun)
        }
        // 4. ` ?[^\s\p{L}\p{N}]+` (+ `[\r\n]*` for Qwen2/Llama-3)
        var start = -1
        if isOther(c) {
            start = i
        } else if c == " " && i + 1 < n && isOther(s[i + 1]) {
            start = i + 1
        }
        if start >= 0 {
            var j = start
            while j < n && isOther(s[j]) { j += 1 }
            if digitRun != 0 { while j < n && s[j].isNewline { j += 1 } }
            return j
        }
        // Whitespace alternatives; c is whitespace here.
        var runEnd = i
        while runEnd < n && s[runEnd].isSpace { runEnd += 1 }
        if runEnd == i { return i + 1 }  // unreachable: every scalar is L, N, \s or other
        // 5. `\s*[\r\n]+` (Qwen2/Llama-3): ends after the last newline of the whitespace run.
        if digitRun != 0 {
            var k = runEnd - 1
            while k >= i && !s[k].isNewline { k -= 1 }
            if k >= i { return k + 1 }
        }
        // 6. `\s+(?!\S)`: the whole run at the end of input, else all but its last scalar.
        if runEnd == n { return runEnd }
        if runEnd - 1 > i { return runEnd - 1 }
        // 7. `\s+`
        return runEnd
    }

    @inline(__always) private func isOther(_ s: Unicode.Scalar) -> Bool {
        !s.isSpace && !s.isLetter && !s.isNumber
    }

    private func letterRun(_ s: [Unicode.Scalar], from start: Int) -> Int {
        var j = start
        while j < s.count && s[j].isLetter { j += 1 }
        return j
    }

    private func numberRun(_ s: [Unicode.Scalar], from start: Int, limit: Int) -> Int {
        var j = start
        while j < s.count && s[j].isNumber && j - start < limit { j += 1 }
        return j
    }

    private func contraction(_ s: [Unicode.Scalar], at j: Int, caseInsensitive: Bool) -> Int? {
        @inline(__always) func lower(_ k: Int) -> UInt32? {
            guard k < s.count else { return nil }
            let v = s[k].value
            if caseInsensitive && v >= 0x41 && v <= 0x5A { return v | 0x20 }
            return v
        }
        guard let a = lower(j) else { return nil }
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return j + 1  // s t m d
        case 0x72, 0x76:  // r v -> re ve
            return lower(j + 1) == 0x65 ? j + 2 : nil
        case 0x6C:  // l -> ll
            return lower(j + 1) == 0x6C ? j + 2 : nil
        default: return nil
        }
    }
}
