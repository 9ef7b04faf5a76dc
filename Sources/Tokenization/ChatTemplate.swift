import Foundation

/// One chat message.
public struct ChatMessage: Sendable, Equatable, Codable {
    /// `system`, `user`, `assistant`, ...
    public var role: String
    /// The message text, inserted verbatim.
    public var content: String

    /// Creates a message.
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Formats chat messages into a prompt. Jinja is deliberately not implemented: the formats below
/// cover the models this package serves, and an unknown template falls back to `plain`.
public struct ChatTemplate: Sendable, Equatable {
    /// The prompt layouts we can produce without a Jinja engine.
    public enum Style: String, Sendable, Equatable {
        /// `<|im_start|>role\ncontent<|im_end|>\n`, ending with `<|im_start|>assistant\n` (Qwen, SmolLM).
        case chatML
        /// `Role: content` paragraphs, ending with `Assistant:`; for base models or unknown templates.
        case plain
    }

    /// The layout used by `format`.
    public var style: Style
    /// The Jinja source from `tokenizer_config.json`, kept for reference; never executed.
    public var source: String?

    /// Creates a template of a given style.
    public init(style: Style, source: String? = nil) {
        self.style = style
        self.source = source
    }

    /// Picks a style: ChatML when the Jinja source mentions `<|im_start|>` or, without a source,
    /// when the vocabulary has `<|im_start|>` and `<|im_end|>`; `plain` for any other source;
    /// nil when there is no sign of a chat format.
    static func detect(source: String?, hasChatMLTokens: Bool) -> ChatTemplate? {
        if let source {
            return ChatTemplate(style: source.contains("<|im_start|>") ? .chatML : .plain, source: source)
        }
        return hasChatMLTokens ? ChatTemplate(style: .chatML) : nil
    }

    /// Renders messages as a prompt string (special tokens written as text; `encode` recognises them).
    /// - Parameters:
    ///   - messages: the conversation so far.
    ///   - addGenerationPrompt: end with the assistant's turn header so the model answers.
    /// - Returns: the prompt text.
    public func format(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var out = ""
        switch style {
        case .chatML:
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        case .plain:
            for m in messages { out += "\(ChatTemplate.capitalized(m.role)): \(m.content)\n\n" }
            if addGenerationPrompt { out += "Assistant:" }
        }
        return out
    }

    private static func capitalized(_ role: String) -> String {
        guard let first = role.first else { return role }
        return first.uppercased() + role.dropFirst()
    }
}
