/// A strict JSON reader (RFC 8259) that keeps where each value and key starts, so a machine
/// file's mistakes can be reported at their line and column. It only validates and locates;
/// the typed decoding is `JSONDecoder`'s, on the same bytes.
public indirect enum JSONValue: Sendable {
    case object([Member], offset: Int)
    case array([JSONValue], offset: Int)
    case string(String, offset: Int)
    /// The literal as written (e.g. `-1`, `2.5e3`).
    case number(String, offset: Int)
    case bool(Bool, offset: Int)
    case null(offset: Int)

    public struct Member: Sendable {
        public var key: String
        public var keyOffset: Int
        public var value: JSONValue
    }

    public var offset: Int {
        switch self {
        case .object(_, let offset), .array(_, let offset), .string(_, let offset), .number(_, let offset),
             .bool(_, let offset), .null(let offset):
            return offset
        }
    }

    /// "an object", "a string", ... for messages.
    public var kindName: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .number: return "a number"
        case .bool: return "true or false"
        case .null: return "null"
        }
    }
}

/// A JSON syntax error at a byte offset.
public struct JSONSyntaxError: Error, Sendable, Equatable {
    public var offset: Int
    public var message: String
}

/// Line and column (both from 1; the column counts characters, not bytes) of a byte offset.
public func lineAndColumn(of offset: Int, in bytes: [UInt8]) -> (line: Int, column: Int) {
    var line = 1
    var column = 1
    for byte in bytes[..<min(offset, bytes.count)] {
        if byte == UInt8(ascii: "\n") {
            line += 1
            column = 1
        } else if byte & 0xc0 != 0x80 {
            column += 1
        }
    }
    return (line, column)
}

public enum StrictJSON {
    public static func parse(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        var reader = Reader(bytes: bytes)
        reader.skipSpace()
        let value = try reader.value()
        reader.skipSpace()
        if reader.position < bytes.count {
            throw reader.error("unexpected \(reader.found) after the end of the document")
        }
        return value
    }
}

private struct Reader {
    let bytes: [UInt8]
    var position = 0
    var depth = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    func error(_ message: String, at offset: Int? = nil) -> JSONSyntaxError {
        JSONSyntaxError(offset: offset ?? position, message: message)
    }

    /// What is at the current position, for "found ..." in messages.
    var found: String {
        guard position < bytes.count else { return "the end of the file" }
        let byte = bytes[position]
        if byte >= 0x21 && byte < 0x7f { return "'\(Character(UnicodeScalar(byte)))'" }
        switch byte {
        case UInt8(ascii: " "), UInt8(ascii: "\t"): return "a blank"
        case UInt8(ascii: "\n"), UInt8(ascii: "\r"): return "the end of the line"
        default: return "byte 0x\(hex(byte, width: 2))"
        }
    }

    mutating func skipSpace() {
        while position < bytes.count,
              [UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r")].contains(bytes[position]) {
            position += 1
        }
    }

    mutating func value() throws(JSONSyntaxError) -> JSONValue {
        guard position < bytes.count else { throw error("expected a value, found the end of the file") }
        let start = position
        switch bytes[position] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string(), offset: start)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number(), offset: start)
        default:
            for (word, value) in [("true", JSONValue.bool(true, offset: start)), ("false", .bool(false, offset: start)),
                                  ("null", .null(offset: start))] where bytes[position...].starts(with: word.utf8) {
                position += word.utf8.count
                return value
            }
            if bytes[position] == UInt8(ascii: "'") { throw error("strings take double quotes (\"), not single quotes") }
            throw error("expected a value (an object, array, string, number, true, false or null), found \(found)")
        }
    }

    /// Past an opening bracket, one level deeper.
    mutating func enter() throws(JSONSyntaxError) {
        position += 1
        depth += 1
        if depth > 256 { throw error("nested more than 256 levels deep") }
    }

    mutating func object() throws(JSONSyntaxError) -> JSONValue {
        let start = position
        try enter()
        defer { depth -= 1 }
        if closesAtOnce("}") { return .object([], offset: start) }
        var members: [JSONValue.Member] = []
        while true {
            skipSpace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                    throw error("a trailing ',' before '}' is not allowed in JSON")
                }
                throw error("expected a key in double quotes, found \(found)")
            }
            let keyOffset = position
            let key = try string()
            skipSpace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else {
                throw error("expected ':' after the key \"\(key)\", found \(found)")
            }
            position += 1
            skipSpace()
            members.append(.init(key: key, keyOffset: keyOffset, value: try value()))
            if try closes("}", what: "an object") { return .object(members, offset: start) }
        }
    }

    mutating func array() throws(JSONSyntaxError) -> JSONValue {
        let start = position
        try enter()
        defer { depth -= 1 }
        if closesAtOnce("]") { return .array([], offset: start) }
        var elements: [JSONValue] = []
        while true {
            skipSpace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                throw error("a trailing ',' before ']' is not allowed in JSON")
            }
            elements.append(try value())
            if try closes("]", what: "an array") { return .array(elements, offset: start) }
        }
    }

    /// An empty object or array: true past its closing bracket.
    mutating func closesAtOnce(_ bracket: Character) -> Bool {
        skipSpace()
        guard position < bytes.count, bytes[position] == bracket.asciiValue! else { return false }
        position += 1
        return true
    }

    /// After a member or element: true past the closing bracket, false past a ','.
    mutating func closes(_ bracket: Character, what: String) throws(JSONSyntaxError) -> Bool {
        skipSpace()
        guard position < bytes.count else { throw error("expected ',' or '\(bracket)', found the end of the file (\(what) is not closed)") }
        let byte = bytes[position]
        guard byte == UInt8(ascii: ",") || byte == bracket.asciiValue! else { throw error("expected ',' or '\(bracket)', found \(found)") }
        position += 1
        return byte != UInt8(ascii: ",")
    }

    mutating func string() throws(JSONSyntaxError) -> String {
        let start = position
        position += 1
        var scalars = String.UnicodeScalarView()
        var runStart = position
        func flush(_ end: Int) { scalars.append(contentsOf: String(decoding: bytes[runStart..<end], as: UTF8.self).unicodeScalars) }
        while true {
            guard position < bytes.count else { throw error("a string is not closed (missing '\"')", at: start) }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                flush(position)
                position += 1
                return String(scalars)
            }
            if byte < 0x20 {
                throw error(byte == UInt8(ascii: "\n") ? "a string is not closed before the end of the line"
                                                       : "a control character (0x\(hex(byte, width: 2))) in a string must be escaped")
            }
            guard byte == UInt8(ascii: "\\") else {
                position += 1
                continue
            }
            flush(position)
            guard position + 1 < bytes.count else { throw error("a string is not closed (missing '\"')", at: start) }
            let escape = bytes[position + 1]
            position += 2
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(UnicodeScalar(escape))
            case UInt8(ascii: "b"): scalars.append("\u{8}")
            case UInt8(ascii: "f"): scalars.append("\u{c}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xd800..<0xdc00).contains(code), bytes[position...].starts(with: "\\u".utf8) {
                    position += 2
                    let low = try hex4()
                    guard (0xdc00..<0xe000).contains(low) else { throw error("invalid UTF-16 surrogate pair in \\u escape", at: position - 12) }
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                }
                guard let scalar = UnicodeScalar(code) else { throw error("\\u escape of a lone UTF-16 surrogate", at: position - 6) }
                scalars.append(scalar)
            default:
                throw error("invalid escape '\\\(Character(UnicodeScalar(escape)))' in a string", at: position - 2)
            }
            runStart = position
        }
    }

    mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
        guard position + 4 <= bytes.count, let value = UInt32(String(decoding: bytes[position..<position + 4], as: UTF8.self), radix: 16) else {
            throw error("\\u needs four hex digits", at: position - 2)
        }
        position += 4
        return value
    }

    mutating func number() throws(JSONSyntaxError) -> String {
        let start = position
        func digits() -> Int {
            let first = position
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
            return position - first
        }
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerStart = position
        guard digits() > 0 else { throw error("expected a digit after '-', found \(found)") }
        if bytes[integerStart] == UInt8(ascii: "0"), position - integerStart > 1 {
            throw error("numbers cannot have leading zeros", at: integerStart)
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw error("expected a digit after '.', found \(found)") }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard digits() > 0 else { throw error("expected a digit in the exponent, found \(found)") }
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }
}
