/// The subset of the kernel's `vsscanf` that pciback's parsers use, with its exact semantics
/// (spec §1.3): a space in the format matches any run of whitespace (or none); any other literal,
/// `*` included, must match exactly; `%x` skips leading whitespace, needs a hex digit, accepts
/// and skips a `0x` prefix even with no digit after it, takes no sign and stores the low 32 bits
/// as an `int`; `%n` stores the characters consumed so far, even at the end of the input. The
/// result counts the `%x` conversions that succeeded.
struct KernelScanf {
    struct Result {
        var values: [Int32] = []
        /// What `%n` stored, if the scan reached it.
        var consumed: Int?
        var conversions: Int { values.count }
    }

    private enum Token {
        case whitespace
        case literal(UInt8)
        case hex
        case count
    }

    private let tokens: [Token]

    init(_ format: String) {
        var tokens: [Token] = []
        var bytes = Array(format.utf8)[...]
        while let byte = bytes.first {
            bytes = bytes.dropFirst()
            if isSpace(byte) {
                while let next = bytes.first, isSpace(next) { bytes = bytes.dropFirst() }
                tokens.append(.whitespace)
            } else if byte == UInt8(ascii: "%"), let conversion = bytes.first {
                bytes = bytes.dropFirst()
                switch conversion {
                case UInt8(ascii: "x"): tokens.append(.hex)
                case UInt8(ascii: "n"): tokens.append(.count)
                default: preconditionFailure("unsupported conversion in \(format)")
                }
            } else {
                tokens.append(.literal(byte))
            }
        }
        self.tokens = tokens
    }

    /// Scans `input` (the bytes up to the first NUL, as the C string the store sees).
    func scan(_ input: [UInt8]) -> Result {
        var result = Result()
        // One allocation for every conversion the format can make (stores parse on every write).
        result.values.reserveCapacity(tokens.count)
        var position = 0
        func at(_ index: Int) -> UInt8 { index < input.count ? input[index] : 0 }
        for token in tokens {
            switch token {
            case .whitespace:
                while isSpace(at(position)) { position += 1 }
            case .literal(let byte):
                guard at(position) == byte, byte != 0 else { return result }
                position += 1
            case .count:
                result.consumed = position
            case .hex:
                if at(position) == 0 { return result }
                while isSpace(at(position)) { position += 1 }
                guard hexDigitValue(at(position)) != nil else { return result }
                if at(position) == UInt8(ascii: "0"), at(position + 1) | 0x20 == UInt8(ascii: "x") {
                    position += 2
                }
                var value: UInt64 = 0
                while let digit = hexDigitValue(at(position)) {
                    value = value &* 16 &+ UInt64(digit)
                    position += 1
                }
                result.values.append(Int32(truncatingIfNeeded: value))
            }
        }
        return result
    }
}

@inline(__always)
func isSpace(_ byte: UInt8) -> Bool {
    // The kernel's isspace: space, \t \n \v \f \r (and 0xa0 in its Latin-1 ctype table).
    byte == 0x20 || (byte >= 0x09 && byte <= 0x0d) || byte == 0xa0
}

/// A seize-list slot as `str_to_slot` produces it: -1 for a wildcard slot or function. Values
/// are `int`s, so huge hex numbers wrap (and a negative slot acts as a wildcard).
public struct SlotPattern: Hashable, Sendable, CustomStringConvertible {
    public var domain: Int32
    public var bus: Int32
    public var slot: Int32
    public var function: Int32

    public init(domain: Int32, bus: Int32, slot: Int32, function: Int32) {
        self.domain = domain
        self.bus = bus
        self.slot = slot
        self.function = function
    }

    public init(_ address: PCIAddress) {
        self.init(domain: Int32(bitPattern: address.domain), bus: Int32(address.bus), slot: Int32(address.slot),
                  function: Int32(address.function))
    }

    /// A concrete address (no wildcard, in range), if the pattern is one.
    public var address: PCIAddress? {
        guard domain >= 0, domain <= 0xffff, bus >= 0, bus <= 0xff, slot >= 0, slot < 32, function >= 0, function < 8
        else { return nil }
        return PCIAddress(domain: UInt32(domain), bus: UInt8(bus), slot: UInt8(slot), function: UInt8(function))
    }

    /// `slots` format: `%04x:%02x:%02x.%d`.
    public var description: String {
        hex(UInt32(bitPattern: domain), width: 4) + ":" + hex(UInt32(bitPattern: bus), width: 2) + ":"
            + hex(UInt32(bitPattern: slot), width: 2) + "." + String(function)
    }
}

/// pciback's input grammars (spec §1.3, §1.9, §2), each failing with the kernel's errno.
public enum PcibackGrammar {
    private static let withDomain = KernelScanf(" %x:%x:%x.%x %n")
    private static let withDomainAnyFunction = KernelScanf(" %x:%x:%x.* %n")
    private static let withDomainAnySlot = KernelScanf(" %x:%x:*.* %n")
    private static let noDomain = KernelScanf(" %x:%x.%x %n")
    private static let noDomainAnyFunction = KernelScanf(" %x:%x.* %n")
    private static let noDomainAnySlot = KernelScanf(" %x:*.* %n")
    private static let quirkWithDomain = KernelScanf(" %x:%x:%x.%x-%x:%x:%x %n")
    private static let quirkNoDomain = KernelScanf(" %x:%x.%x-%x:%x:%x %n")
    private static let hideWithDomain = KernelScanf(" (%x:%x:%x.%x) %n")
    private static let hideWithDomainAnyFunction = KernelScanf(" (%x:%x:%x.*) %n")
    private static let hideWithDomainAnySlot = KernelScanf(" (%x:%x:*.*) %n")
    private static let hideNoDomain = KernelScanf(" (%x:%x.%x) %n")
    private static let hideNoDomainAnyFunction = KernelScanf(" (%x:%x.*) %n")
    private static let hideNoDomainAnySlot = KernelScanf(" (%x:*.*) %n")

    /// The store's buffer as a C string: everything up to the first NUL.
    static func cString(_ bytes: [UInt8]) -> [UInt8] {
        if let nul = bytes.firstIndex(of: 0) { return Array(bytes[..<nul]) }
        return bytes
    }

    /// `str_to_slot`. `parsed` carries over between attempts, as in the kernel.
    public static func slot(_ raw: [UInt8]) throws(Errno) -> SlotPattern {
        let input = cString(raw)
        var parsed = 0
        var pattern = SlotPattern(domain: 0, bus: 0, slot: 0, function: 0)

        func note(_ result: KernelScanf.Result) { if let consumed = result.consumed { parsed = consumed } }
        func accepted() -> Bool { parsed != 0 && parsed >= input.count }

        var first = withDomain.scan(input)
        note(first)
        switch first.conversions {
        case 3:
            let retry = withDomainAnyFunction.scan(input)
            note(retry)
            first.values = retry.values.count == 3 ? retry.values : first.values
            pattern = SlotPattern(domain: first.values[0], bus: first.values[1], slot: first.values[2], function: -1)
        case 2:
            let retry = withDomainAnySlot.scan(input)
            note(retry)
            pattern = SlotPattern(domain: first.values[0], bus: first.values[1], slot: -1, function: -1)
        case 4:
            pattern = SlotPattern(domain: first.values[0], bus: first.values[1], slot: first.values[2], function: first.values[3])
        default:
            break
        }
        if accepted() { return pattern }

        var second = noDomain.scan(input)
        note(second)
        switch second.conversions {
        case 2:
            let retry = noDomainAnyFunction.scan(input)
            note(retry)
            second.values = retry.values.count == 2 ? retry.values : second.values
            pattern = SlotPattern(domain: 0, bus: second.values[0], slot: second.values[1], function: -1)
        case 1:
            let retry = noDomainAnySlot.scan(input)
            note(retry)
            pattern = SlotPattern(domain: 0, bus: second.values[0], slot: -1, function: -1)
        case 3:
            pattern = SlotPattern(domain: 0, bus: second.values[0], slot: second.values[1], function: second.values[2])
        default:
            break
        }
        if accepted() { return pattern }
        throw .invalidArgument
    }

    public struct QuirkRequest: Sendable, Equatable {
        public var slot: SlotPattern
        public var register: Int32
        public var size: Int32
        public var mask: Int32
    }

    /// `str_to_quirk`: `[DDDD:]BB:SS.F-REG:SIZE:MASK`, all hex, no wildcards.
    public static func quirk(_ raw: [UInt8]) throws(Errno) -> QuirkRequest {
        let input = cString(raw)
        var parsed = 0
        let first = quirkWithDomain.scan(input)
        if let consumed = first.consumed { parsed = consumed }
        if parsed != 0, parsed >= input.count, first.conversions == 7 {
            let v = first.values
            return QuirkRequest(slot: SlotPattern(domain: v[0], bus: v[1], slot: v[2], function: v[3]),
                                register: v[4], size: v[5], mask: v[6])
        }
        let second = quirkNoDomain.scan(input)
        if let consumed = second.consumed { parsed = consumed }
        if parsed != 0, parsed >= input.count, second.conversions == 6 {
            let v = second.values
            return QuirkRequest(slot: SlotPattern(domain: 0, bus: v[0], slot: v[1], function: v[2]),
                                register: v[3], size: v[4], mask: v[5])
        }
        throw .invalidArgument
    }

    /// The `hide` module parameter: parenthesised BDFs, whitespace around groups, nothing else.
    /// Returns the slots in order, or the error (with the rest of the string for the message).
    public static func hide(_ text: String) -> Result<[SlotPattern], HideError> {
        let (groups, error) = hideGroups(text)
        return error.map { .failure($0) } ?? .success(groups)
    }

    /// `hide` group by group, as `pcistub_init` reads it: the groups before the first one that
    /// does not parse, and that one's error (nil when the whole string parses).
    public static func hideGroups(_ text: String) -> (groups: [SlotPattern], error: HideError?) {
        let input = cString(Array(text.utf8))  // a C string: it ends at the first NUL
        var position = 0
        var slots: [SlotPattern] = []
        while position < input.count {
            let rest = Array(input[position...])
            var parsed = 0
            var pattern = SlotPattern(domain: 0, bus: 0, slot: 0, function: 0)
            func note(_ result: KernelScanf.Result) { if let consumed = result.consumed { parsed = consumed } }
            let first = hideWithDomain.scan(rest)
            note(first)
            switch first.conversions {
            case 4: pattern = SlotPattern(domain: first.values[0], bus: first.values[1], slot: first.values[2], function: first.values[3])
            case 3:
                note(hideWithDomainAnyFunction.scan(rest))
                pattern = SlotPattern(domain: first.values[0], bus: first.values[1], slot: first.values[2], function: -1)
            case 2:
                note(hideWithDomainAnySlot.scan(rest))
                pattern = SlotPattern(domain: first.values[0], bus: first.values[1], slot: -1, function: -1)
            default: break
            }
            if parsed == 0 {
                let second = hideNoDomain.scan(rest)
                note(second)
                switch second.conversions {
                case 3: pattern = SlotPattern(domain: 0, bus: second.values[0], slot: second.values[1], function: second.values[2])
                case 2:
                    note(hideNoDomainAnyFunction.scan(rest))
                    pattern = SlotPattern(domain: 0, bus: second.values[0], slot: second.values[1], function: -1)
                case 1:
                    note(hideNoDomainAnySlot.scan(rest))
                    pattern = SlotPattern(domain: 0, bus: second.values[0], slot: -1, function: -1)
                default: break
                }
            }
            guard parsed > 0 else {
                return (slots, HideError(rest: String(decoding: rest, as: UTF8.self), errno: .invalidArgument))
            }
            slots.append(pattern)
            position += parsed
        }
        return (slots, nil)
    }

    public struct HideError: Error, Equatable, Sendable {
        public var rest: String
        public var errno: Errno
        public var message: String { "Error parsing pci_devs_to_hide at \"\(rest)\"" }
    }
}
