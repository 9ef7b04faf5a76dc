import Foundation
import Testing

@testable import Formats

@Suite struct JSONValueTests {
    @Test(arguments: [
        ("null", JSONValue.null),
        ("true", .bool(true)),
        (" false ", .bool(false)),
        ("-12.5e1", .number(-125)),
        ("0", .number(0)),
        ("\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\"", .string("a\"b\\c/d\né😀")),
        ("\"wörd\"", .string("wörd")),
        ("[1, [2], {}]", .array([.number(1), .array([.number(2)]), .object([:])])),
        ("{\"a\": {\"b\": [null]}, \"c\": \"d\"}", .object(["a": .object(["b": .array([.null])]), "c": .string("d")])),
        ("\u{FEFF}{}", .object([:])),
    ])
    func parsesValidJSON(text: String, expected: JSONValue) throws {
        #expect(try JSONValue(parsing: Data(text.utf8)) == expected)
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "{'a':1}", "01", "1.", "-", "1e", "tru", "nul", "\"abc", "\"\\x\"",
        "\"\\ud800\"", "\"\\ude00\"", "\"tab\there\"", "{\"a\" 1}", "[1 2]", "{} {}", "NaN", "{\"a\":1}x",
        "\"\"\\u12\"", String(repeating: "[", count: 200),
    ])
    func rejectsInvalidJSON(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: Data(text.utf8)) }
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: Data([0x22, 0xFF, 0xFE, 0x22])) }
    }

    @Test func duplicateKeysAreRejectedOrKeptLast() throws {
        let text = Data("{\"x\": {\"a\": 1, \"a\": 2}}".utf8)
        do {
            _ = try JSONValue(parsing: text)
            Issue.record("duplicate key accepted")
        } catch let error as JSONParseError {
            #expect(error.duplicateKey == "a")
            #expect(error.depth == 2)
            #expect(error.description.contains("duplicate key \"a\""))
        }
        let lenient = try JSONValue(parsing: text, duplicateKeys: .keepLast)
        #expect(lenient["x"]?["a"]?.intValue == 2)
    }

    @Test func accessors() throws {
        let value = try JSONValue(
            parsing: Data(#"{"n": 3, "f": 2.5, "big": 1e300, "s": "x", "b": true, "a": [1, "two"], "z": null}"#.utf8))
        #expect(value["n"]?.intValue == 3)
        #expect(value["f"]?.intValue == nil)
        #expect(value["f"]?.doubleValue == 2.5)
        #expect(value["f"]?.floatValue == 2.5)
        #expect(value["big"]?.intValue == nil)
        #expect(value["s"]?.stringValue == "x")
        #expect(value["b"]?.boolValue == true)
        #expect(value["a"]?[1]?.stringValue == "two")
        #expect(value["a"]?[2] == nil)
        #expect(value["z"]?.isNull == true)
        #expect(value["missing"] == nil)
        #expect(value["n"]?["key of a number"] == nil)
        #expect(value.objectValue?.count == 7)
        #expect(value["a"]?.arrayValue?.count == 2)
    }

    @Test func decodableThroughJSONDecoderAndBack() throws {
        struct Config: Codable, Equatable {
            let name: String
            let extra: JSONValue
        }
        let text = #"{"name": "qwen", "extra": {"rope": {"theta": 1000000.0, "type": "yarn"}, "ids": [1, 2], "flag": false, "none": null}}"#
        let config = try JSONDecoder().decode(Config.self, from: Data(text.utf8))
        #expect(config.extra["rope"]?["theta"]?.intValue == 1_000_000)
        #expect(config.extra["rope"]?["type"]?.stringValue == "yarn")
        #expect(config.extra["flag"]?.boolValue == false)
        #expect(config.extra["ids"]?[1]?.intValue == 2)
        #expect(config.extra["none"]?.isNull == true)
        let again = try JSONDecoder().decode(Config.self, from: JSONEncoder().encode(config))
        #expect(again == config)
    }

    @Test func jsonStringIsCompactSortedAndReparses() throws {
        let value = JSONValue.object([
            "b": .array([.number(1), .number(2.5), .bool(true), .null]), "a": .string("q\"\n\u{01}"),
        ])
        #expect(value.jsonString == #"{"a":"q\"\n\u0001","b":[1,2.5,true,null]}"#)
        #expect(try JSONValue(parsing: Data(value.jsonString.utf8)) == value)
    }
}
