/// Byte-level parsing helpers shared by the importers.
enum CaptureText {
    static let tab = UInt8(ascii: "\t")
    static let space = UInt8(ascii: " ")
    static let colon = UInt8(ascii: ":")
    static let dot = UInt8(ascii: ".")
    static let carriageReturn = UInt8(ascii: "\r")
    static let newline = UInt8(ascii: "\n")

    /// Splits on `\n`; a trailing `\r` is dropped from each line. A final empty piece after the last
    /// newline is not a line.
    static func splitLines(_ text: String) -> [ArraySlice<UInt8>] {
        let bytes = Array(text.utf8)
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        for i in bytes.indices where bytes[i] == newline {
            lines.append(bytes[start..<i])
            start = i + 1
        }
        if start < bytes.count { lines.append(bytes[start...]) }
        return lines.map { $0.last == carriageReturn ? $0.dropLast() : $0 }
    }

    /// Parses all of `digits` as hex (at most 16 digits); nil if empty, too long or not hex.
    static func parseHex<C: Collection>(_ digits: C) -> UInt64? where C.Element == UInt8 {
        guard !digits.isEmpty, digits.count <= 16 else { return nil }
        var value: UInt64 = 0
        for byte in digits {
            guard let digit = hexDigitValue(byte) else { return nil }
            value = value << 4 | UInt64(digit)
        }
        return value
    }

    static func parseDecimal<S: StringProtocol>(_ text: S) -> UInt64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        return UInt64(text)
    }

    static func isHexDigit(_ byte: UInt8) -> Bool { hexDigitValue(byte) != nil }

    /// Parses `BB:SS.F` (exactly 2, 2 and 1 digits) at the start of `bytes`, returning the address parts
    /// and the index after them, or nil if the shape does not match. Slot and function are not checked.
    static func parseBusSlotFunction(_ bytes: ArraySlice<UInt8>, from start: Int) -> (bus: UInt8, slot: UInt8, function: UInt8, next: Int)? {
        let i = start
        guard bytes.endIndex - i >= 7,
              isHexDigit(bytes[i]), isHexDigit(bytes[i + 1]), bytes[i + 2] == colon,
              isHexDigit(bytes[i + 3]), isHexDigit(bytes[i + 4]), bytes[i + 5] == dot,
              (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i + 6]),
              let bus = parseHex(bytes[i..<i + 2]), let slot = parseHex(bytes[i + 3..<i + 5])
        else { return nil }
        return (UInt8(bus), UInt8(slot), bytes[i + 6] - UInt8(ascii: "0"), i + 7)
    }

    /// lspci's size notation: a decimal number with an optional binary unit (K, M, G, T, P, E).
    static func parseSize(_ text: Substring) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60]
        var digits = text
        var multiplier: UInt64 = 1
        if let last = text.last, let unit = units[last] {
            multiplier = unit
            digits = text.dropLast()
        }
        guard let number = parseDecimal(digits) else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    static func formatSize(_ size: UInt64) -> String {
        var value = size
        var unit = 0
        while unit < 6, value >= 1024, value % 1024 == 0 {
            value /= 1024
            unit += 1
        }
        return String(value) + ["", "K", "M", "G", "T", "P", "E"][unit]
    }
}
