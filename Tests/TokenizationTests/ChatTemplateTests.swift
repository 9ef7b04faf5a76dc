import Foundation
import TestSupport
import Testing

@testable import Tokenization

@Suite("Chat templates")
struct ChatTemplateTests {
    let messages = [
        ChatMessage(role: "system", content: "You are terse."),
        ChatMessage(role: "user", content: "hi"),
    ]

    @Test("ChatML formatting")
    func chatML() {
        let template = ChatTemplate(style: .chatML)
        #expect(
            template.format(messages) == """
                <|im_start|>system
                You are terse.<|im_end|>
                <|im_start|>user
                hi<|im_end|>
                <|im_start|>assistant

                """)
        #expect(template.format(messages, addGenerationPrompt: false).hasSuffix("hi<|im_end|>\n"))
    }

    @Test("plain formatting")
    func plain() {
        #expect(ChatTemplate(style: .plain).format(messages) == "System: You are terse.\n\nUser: hi\n\nAssistant:")
    }

    @Test(
        "detection from tokenizer_config.json and from the vocabulary",
        arguments: [
            ("qwen2", ChatTemplate.Style?.some(.chatML)), ("smollm2", .chatML), ("llama3", .plain),
            ("llama2", .plain), ("gpt2", nil), ("mistral", nil),
        ])
    func detection(name: String, style: ChatTemplate.Style?) throws {
        #expect(try LoadedFixtures.tokenizer(name).chatTemplate?.style == style)
    }

    @Test("ChatML vocabulary without a config is detected")
    func detectionFromVocabulary() throws {
        let data = try Data(contentsOf: Fixtures.url("tokenizers/qwen2/tokenizer.json"))
        let tokenizer = try Tokenizer(data: data)
        #expect(tokenizer.chatTemplate == ChatTemplate(style: .chatML))
    }

    @Test("a formatted ChatML prompt encodes its markers as single special tokens")
    func encodesMarkers() throws {
        let tokenizer = try LoadedFixtures.tokenizer("qwen2")
        let prompt = try #require(tokenizer.chatTemplate).format([ChatMessage(role: "user", content: "hi")])
        let ids = tokenizer.encode(prompt)
        let start = try #require(tokenizer.tokenID("<|im_start|>"))
        let end = try #require(tokenizer.tokenID("<|im_end|>"))
        #expect(ids.filter { $0 == start }.count == 2)
        #expect(ids.filter { $0 == end }.count == 1)
        #expect(tokenizer.decode(ids) == prompt)
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "user\nhi\nassistant\n")
    }
}
