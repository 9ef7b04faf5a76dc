import Foundation
import TestSupport
import Testing

@testable import Tokenization

/// One semantics case rendered by jinja2 with transformers' environment (`jinja_cases.json`).
struct JinjaCase: Decodable, CustomTestStringConvertible, Sendable {
    let template: String
    let expected: String?
    /// The jinja2 exception class when the template fails.
    let error: String?

    var testDescription: String { template.debugDescription }

    private struct File: Decodable { let cases: [JinjaCase] }

    static let all: [JinjaCase] = (try? Fixtures.json(File.self, "chat_templates/jinja_cases.json").cases) ?? []
}

@Suite("Jinja interpreter")
struct JinjaTests {
    static let messages = [ChatMessage(role: "user", content: "  hi  "), ChatMessage(role: "assistant", content: "yo")]

    @Test("the semantics cases are present")
    func casesPresent() {
        #expect(JinjaCase.all.count >= 40)
        #expect(JinjaCase.all.filter { $0.error != nil }.count >= 10)
    }

    @Test("renders as jinja2 with trim_blocks and lstrip_blocks, or fails the same way", arguments: JinjaCase.all)
    func semantics(_ c: JinjaCase) throws {
        let template = ChatTemplate(source: c.template)
        if let expected = c.expected {
            #expect(template.parseError == nil)
            #expect(try template.render(Self.messages, addGenerationPrompt: false) == expected)
            return
        }
        let error = try #require(c.error)
        let thrown = #expect(throws: ChatTemplateError.self) {
            try template.render(Self.messages, addGenerationPrompt: false)
        }
        switch (error, thrown) {
        case ("TemplateSyntaxError", .syntax?), ("TemplateError", .raised?), ("TemplateAssertionError", .unsupported?),
             ("UndefinedError", .render?), ("TypeError", .render?), ("TypeError", .unsupported?), ("SecurityError", .render?):
            break
        default:
            Issue.record("jinja2 raised \(error); we threw \(String(describing: thrown))")
        }
    }

    @Test("a syntax error names its line")
    func syntaxLine() {
        let template = ChatTemplate(source: "line 1\n{{ ok }}\n{% if %}")
        guard case .syntax(let line, _)? = template.parseError else {
            Issue.record("expected a syntax error, got \(String(describing: template.parseError))")
            return
        }
        #expect(line == 3)
    }

    @Test("strftime_now formats the clock it is given")
    func strftime() throws {
        var c = DateComponents()
        (c.year, c.month, c.day, c.hour, c.minute) = (2025, 1, 5, 14, 7)
        let date = try #require(Calendar(identifier: .gregorian).date(from: c))
        let text = try ChatTemplate(source: "{{ strftime_now('%d %b %Y|%Y-%m-%d|%A %H:%M|%B %y %I%p') }}")
            .render([], now: date)
        #expect(text == "05 Jan 2025|2025-01-05|Sunday 14:07|January 25 02PM")
    }

    @Test("runaway macro recursion is stopped")
    func recursionLimit() {
        let template = ChatTemplate(source: "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
        #expect(throws: ChatTemplateError.self) { try template.render([]) }
    }

    @Test("variables override the defaults, as apply_chat_template's kwargs do")
    func variables() throws {
        let template = ChatTemplate(source: "{{ bos_token }}|{{ tools }}|{{ flag is false }}|{{ extra | tojson }}",
                                    bosToken: "<s>")
        let text = try template.render(
            [], variables: ["flag": false, "extra": ["k": [1, "two", nil, true]], "bos_token": "<B>"])
        #expect(text == #"<B>|None|True|{"k": [1, "two", null, true]}"#)
    }
}
