import Foundation
import TestSupport
import Testing

@testable import Tokenization

/// One rendering of a real template by transformers (`scripts/make_chat_template_goldens.py`).
struct ChatTemplateGolden: Decodable, CustomTestStringConvertible, Sendable {
    let template: String
    let conversation: String
    let messages: [ChatMessage]
    let addGenerationPrompt: Bool
    let variables: [String: VariableValue]
    let bosToken: String?
    let eosToken: String?
    let expected: String?
    let error: String?

    /// The variables the goldens pass: strings and booleans.
    enum VariableValue: Decodable, Sendable {
        case string(String), bool(Bool)
        init(from decoder: Swift.Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { self = .bool(b) } else { self = .string(try c.decode(String.self)) }
        }
        var jinja: JinjaValue {
            switch self {
            case .string(let s): return .string(s)
            case .bool(let b): return .bool(b)
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case template, conversation, messages, variables, expected, error
        case addGenerationPrompt = "add_generation_prompt", bosToken = "bos_token", eosToken = "eos_token"
    }

    var testDescription: String {
        "\(template) \(conversation) gen=\(addGenerationPrompt)"
            + (variables.isEmpty ? "" : " " + variables.keys.sorted().joined(separator: ","))
    }

    private struct File: Decodable {
        let now: String
        let cases: [ChatTemplateGolden]
    }

    static let all: [ChatTemplateGolden] =
        (try? Fixtures.json(File.self, "chat_templates/goldens.json").cases) ?? []

    /// The clock the goldens were rendered at: `FIXED_NOW` of the script, local time.
    static let now: Date = {
        var c = DateComponents()
        (c.year, c.month, c.day, c.hour, c.minute, c.second) = (2026, 3, 14, 9, 26, 53)
        return Calendar(identifier: .gregorian).date(from: c) ?? Date(timeIntervalSince1970: 0)
    }()
}

@Suite("Chat templates")
struct ChatTemplateTests {
    let messages = [
        ChatMessage(role: "system", content: "You are terse."),
        ChatMessage(role: "user", content: "hi"),
    ]

    @Test("the goldens cover every template, with and without a generation prompt")
    func goldensPresent() {
        let templates = Set(ChatTemplateGolden.all.map(\.template))
        #expect(templates.count == 7)
        #expect(ChatTemplateGolden.all.count >= 100)
        #expect(ChatTemplateGolden.all.contains { $0.error != nil })
    }

    @Test("real templates render byte for byte as transformers' apply_chat_template", arguments: ChatTemplateGolden.all)
    func golden(_ g: ChatTemplateGolden) throws {
        let source = try String(contentsOf: Fixtures.url("chat_templates/\(g.template).jinja"), encoding: .utf8)
        let template = ChatTemplate(source: source, bosToken: g.bosToken, eosToken: g.eosToken)
        #expect(template.parseError == nil)
        let render = {
            try template.render(g.messages, addGenerationPrompt: g.addGenerationPrompt,
                                variables: g.variables.mapValues(\.jinja), now: ChatTemplateGolden.now)
        }
        if let error = g.error {
            #expect(throws: ChatTemplateError.raised(message: error)) { try render() }
        } else {
            let text = try render()
            #expect(text == g.expected)
        }
    }

    @Test("the user's content is recovered from a prompt rendered with each real template",
          arguments: Set(ChatTemplateGolden.all.map(\.template)).sorted())
    func userContent(_ name: String) throws {
        let source = try String(contentsOf: Fixtures.url("chat_templates/\(name).jinja"), encoding: .utf8)
        let tokens = try #require(ChatTemplateGolden.all.first { $0.template == name })
        let template = ChatTemplate(source: source, bosToken: tokens.bosToken, eosToken: tokens.eosToken)
        let question = "Which gas do plants take in?\nA. oxygen\nB. carbon dioxide"
        let conversations: [[ChatMessage]] = [
            [ChatMessage(role: "user", content: question)],
            [ChatMessage(role: "system", content: "You are terse."), ChatMessage(role: "user", content: question)],
            [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello."),
             ChatMessage(role: "user", content: question)],
        ]
        for messages in conversations {
            // Some templates refuse a system turn or reorder it; those conversations are skipped.
            guard let prompt = try? template.render(messages, addGenerationPrompt: true, now: ChatTemplateGolden.now) else { continue }
            let content = template.userContent(of: prompt)
            if messages[0].role == "system" {
                // Mistral's template writes the system text into the last user turn.
                #expect(content?.hasSuffix(question) == true, "\(prompt.debugDescription)")
            } else {
                #expect(content == question, "\(messages.count) messages: \(prompt.debugDescription)")
            }
        }
        #expect(template.userContent(of: question) == nil, "a bare prompt carries no markers")
        #expect(ChatTemplate.plain.userContent(of: "User: hi\n\nAssistant:") == nil, "no template, nothing to unwrap")
    }

    @Test("plain layout without a template")
    func plain() throws {
        #expect(try ChatTemplate.plain.render(messages) == "System: You are terse.\n\nUser: hi\n\nAssistant:")
        #expect(ChatTemplate.plain.format(messages, addGenerationPrompt: false) == "System: You are terse.\n\nUser: hi\n\n")
    }

    @Test("format falls back to the plain layout when the template refuses; render says why")
    func formatFallback() {
        let template = ChatTemplate(source: "{{ raise_exception('no system role') }}")
        #expect(template.format(messages) == ChatTemplate.plain.format(messages))
        #expect(throws: ChatTemplateError.raised(message: "no system role")) { try template.render(messages) }
    }

    /// The llama3 fixture's template is a truncated placeholder (`{% for %}` without `{% endfor %}`):
    /// the tokenizer still loads, and the template reports its syntax error when used.
    @Test(
        "the tokenizer takes its template and special tokens from tokenizer_config.json",
        arguments: [("qwen2", true, true), ("smollm2", true, true), ("llama3", true, false), ("llama2", true, true),
                    ("gpt2", false, true), ("mistral", false, true)])
    func fromConfig(name: String, hasTemplate: Bool, parses: Bool) throws {
        let tokenizer = try LoadedFixtures.tokenizer(name)
        #expect((tokenizer.chatTemplate != nil) == hasTemplate)
        #expect((tokenizer.chatTemplate?.parseError == nil) == parses)
    }

    @Test("special tokens reach the template")
    func specialTokens() throws {
        let smol = try #require(try LoadedFixtures.tokenizer("smollm2").chatTemplate)
        #expect(smol.bosToken == "<|im_start|>" && smol.eosToken == "<|im_end|>")
        #expect(try LoadedFixtures.tokenizer("qwen2").chatTemplate?.bosToken == nil)
    }

    @Test("a vocabulary with ChatML tokens but no template has no chat template")
    func noTemplateWithoutConfig() throws {
        let data = try Data(contentsOf: Fixtures.url("tokenizers/qwen2/tokenizer.json"))
        #expect(try Tokenizer(data: data).chatTemplate == nil)
    }

    @Test("a rendered prompt encodes its markers as single special tokens")
    func encodesMarkers() throws {
        let tokenizer = try LoadedFixtures.tokenizer("qwen2")
        let prompt = try #require(tokenizer.chatTemplate).render([ChatMessage(role: "user", content: "hi")])
        let ids = tokenizer.encode(prompt)
        let start = try #require(tokenizer.tokenID("<|im_start|>"))
        let end = try #require(tokenizer.tokenID("<|im_end|>"))
        #expect(ids.filter { $0 == start }.count == prompt.components(separatedBy: "<|im_start|>").count - 1)
        #expect(ids.filter { $0 == end }.count == prompt.components(separatedBy: "<|im_end|>").count - 1)
        #expect(tokenizer.decode(ids) == prompt)
    }
}
