#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Captured PCI functions: a neutral, source-independent description of one real function (its
// config space, BAR sizes, IRQ and host driver), and the importers that build it from
//   * an `lspci -F` dump (`lspci -xxx`/`-xxxx`, optionally with `-vvv` text), see `LspciDump`;
//   * a sysfs `resource` file, see `SysfsResource`;
//   * a live sysfs device directory, or a raw config blob plus a `resource` text, see `SysfsCapture`.
// Everything here is pure value code (plus plain POSIX file reads in `SysfsCapture`).

// MARK: - Model

/// One address range of a captured function: a BAR (index 0...5) or the expansion ROM (index 6).
/// In `CapturedFunction.iovBARs` the index is the VF BAR number (0...5) instead.
public struct CapturedBAR: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case io
        case memory(is64Bit: Bool, prefetchable: Bool)
        /// The expansion ROM; `enabled` is the ROM BAR's enable bit (IORESOURCE_ROM_ENABLE).
        case rom(enabled: Bool)
    }

    /// The `index` of the expansion ROM, as in the sysfs `resource` file (line 6).
    public static let romIndex = 6

    public var index: Int
    /// Bus address; 0 when the range is unassigned (lspci `<unassigned>`/`<ignored>`).
    public var base: UInt64
    /// Size in bytes, always > 0 (ranges of unknown size are not captured at all).
    public var size: UInt64
    public var kind: Kind

    public init(index: Int, base: UInt64, size: UInt64, kind: Kind) {
        precondition((0...6).contains(index), "BAR index out of range")
        precondition(size > 0, "BAR size must be known")
        if case .rom = kind {
            precondition(index == Self.romIndex, "the ROM has index 6")
        } else {
            precondition(index != Self.romIndex, "index 6 is the ROM")
        }
        self.index = index
        self.base = base
        self.size = size
        self.kind = kind
    }

    public var isIO: Bool { kind == .io }
    public var isROM: Bool { if case .rom = kind { true } else { false } }
    /// Only memory BARs can be 64-bit.
    public var is64Bit: Bool { if case .memory(true, _) = kind { true } else { false } }
    /// Only memory BARs report this (the kernel also marks the ROM prefetchable, see `SysfsResource`).
    public var isPrefetchable: Bool { if case .memory(_, true) = kind { true } else { false } }
    /// The ROM's enable bit; nil for BARs.
    public var romEnabled: Bool? { if case .rom(let enabled) = kind { enabled } else { nil } }
    /// The last byte's address (the `end` column of sysfs `resource`).
    public var end: UInt64 { base &+ (size &- 1) }

    public var description: String {
        let what: String
        switch kind {
        case .io: what = "I/O"
        case .memory(let is64Bit, let prefetchable):
            what = (is64Bit ? "mem64" : "mem32") + (prefetchable ? " pref" : "")
        case .rom(let enabled): what = enabled ? "ROM enabled" : "ROM disabled"
        }
        return "\(index == Self.romIndex ? "ROM" : "BAR\(index)") \(what) 0x\(hex(base, width: 1)) size 0x\(hex(size, width: 1))"
    }
}

/// One captured PCI function, whatever it was captured from.
public struct CapturedFunction: Sendable, Hashable {
    public var address: PCIAddress
    /// The whole config space: exactly 256 or 4096 bytes.
    public var config: [UInt8]
    /// BARs 0...5 and the ROM (index 6) whose size is known, in index order.
    public var bars: [CapturedBAR]
    /// SR-IOV VF BARs (sysfs `resource` lines 7...12, index = VF BAR number), when known.
    public var iovBARs: [CapturedBAR]
    /// The sysfs `irq` value (for lspci dumps: the IRQ of the `Interrupt:` line), or nil.
    public var irq: UInt32?
    /// The host driver's name (the sysfs `driver` link's basename, or lspci "Kernel driver in use").
    public var driver: String?
    /// Free description text, e.g. the lspci header line's text after the address.
    public var name: String?

    public init(address: PCIAddress, config: [UInt8], bars: [CapturedBAR] = [], iovBARs: [CapturedBAR] = [],
                irq: UInt32? = nil, driver: String? = nil, name: String? = nil) {
        precondition(config.count == 256 || config.count == 4096, "config must be 256 or 4096 bytes")
        self.address = address
        self.config = config
        self.bars = bars.sorted { $0.index < $1.index }
        self.iovBARs = iovBARs.sorted { $0.index < $1.index }
        self.irq = irq
        self.driver = driver
        self.name = name
    }

    public var vendorID: UInt16 { UInt16(config[0]) | UInt16(config[1]) << 8 }
    public var deviceID: UInt16 { UInt16(config[2]) | UInt16(config[3]) << 8 }
    /// Config byte 0x0e without the multi-function bit: 0 normal, 1 bridge, 2 CardBus.
    public var headerType: UInt8 { config[0x0e] & 0x7f }
    public var hasExtendedConfig: Bool { config.count == 4096 }

    public func bar(_ index: Int) -> CapturedBAR? { bars.first { $0.index == index } }
    public var rom: CapturedBAR? { bar(CapturedBAR.romIndex) }
}

// MARK: - Errors

public enum CaptureError: Error, Hashable, Sendable, CustomStringConvertible {
    /// lspci dump: a header, hex or BAR/IRQ line that cannot be parsed (line numbers count from 1).
    case malformedDumpLine(line: Int, reason: String)
    /// lspci dump: a hex line whose bytes start at `offset` and reach beyond the 4096-byte space.
    case configOffsetOutOfRange(line: Int, offset: Int)
    /// lspci dump: a hex line with no device header line before it (since the last empty line).
    case dataOutsideDevice(line: Int)
    /// Fewer config bytes than the space needs: `bytes` present of `required` (256 or 4096). An
    /// unprivileged `lspci -x` or sysfs `config` read yields only 64 (128 for CardBus). `line` is the
    /// dump's header line, nil for sysfs.
    case truncatedConfig(address: PCIAddress, bytes: Int, required: Int, line: Int?)
    /// A raw config blob that is neither 256 nor 4096 bytes (and not shorter than 256).
    case invalidConfigSize(address: PCIAddress, bytes: Int)
    /// sysfs `resource`: a line that is not three hex numbers, or is inconsistent.
    case malformedResourceLine(line: Int, reason: String)
    /// A sysfs device directory whose name is not `DDDD:BB:SS.F`.
    case invalidDeviceName(String)
    /// A sysfs file with unexpected content.
    case malformedFile(path: String, reason: String)
    /// A file could not be read.
    case io(path: String, errno: Errno)

    public var description: String {
        switch self {
        case .malformedDumpLine(let line, let reason):
            return "lspci dump line \(line): \(reason)"
        case .configOffsetOutOfRange(let line, let offset):
            return "lspci dump line \(line): data at offset 0x\(hex(offset, width: 2)) reaches beyond the 4096-byte config space"
        case .dataOutsideDevice(let line):
            return "lspci dump line \(line): hex data line without a device header line before it"
        case .truncatedConfig(let address, let bytes, let required, let line):
            let location = line.map { "lspci dump line \($0): " } ?? ""
            return "\(location)device \(address): only \(bytes) of \(required) config bytes present; "
                + "the capture needs the full config space (an unprivileged read shows only 64 bytes: "
                + "capture as root, with `lspci -xxx` or `lspci -xxxx`)"
        case .invalidConfigSize(let address, let bytes):
            return "device \(address): config is \(bytes) bytes; expected 256 or 4096"
        case .malformedResourceLine(let line, let reason):
            return "resource line \(line): \(reason)"
        case .invalidDeviceName(let name):
            return "'\(name)' is not a PCI device name (DDDD:BB:SS.F)"
        case .malformedFile(let path, let reason):
            return "\(path): \(reason)"
        case .io(let path, let errno):
            return "\(path): \(errno)"
        }
    }
}

// MARK: - Small byte helpers

/// Byte-level parsing helpers shared by the importers.
private enum CaptureText {
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

// MARK: - lspci -F dumps

/// The `lspci -F` dump format (clients.md §5.2), read and written.
///
/// Reading follows lspci's dump reader, with these decisions:
/// * A header line is `BB:SS.F ` or `DDDD:BB:SS.F ` (4 to 6 domain digits) followed by a space; the
///   rest of the line is the function's `name`. Slot > 0x1f or function > 7 is an error. A header
///   also ends the previous device if no empty line did.
/// * A hex line is 2 to 8 hex digits, `: `, then byte pairs separated by single spaces (trailing
///   blanks and a trailing `\r` are tolerated, as are upper-case digits). Bytes running past 4096,
///   malformed pairs, and hex lines outside a device are errors (lspci ignores the latter; here
///   they almost certainly mean a damaged file).
/// * An empty line ends the device; every other line is ignored, except that tab-indented
///   (exactly one tab) `-v`/`-vvv` text of the current device is mined for `Region N:`,
///   `Expansion ROM at`, `Interrupt: ... routed to IRQ N` (or `Flags: ..., IRQ N`) and
///   `Kernel driver in use:`. Deeper-indented lines (capability details, e.g. SR-IOV VF BAR
///   `Region` lines) never count. BAR lines without `[size=...]` are skipped (size unknown);
///   `<unassigned>`/`<ignored>` addresses become base 0; plain `-v` BAR lines (no `Region N:`,
///   so no index) are not used; `[virtual]`, `[enhanced]` and `[disabled]` tags are accepted and
///   do not change the BAR. The ROM's enable bit comes from the
///   config ROM register (0x30, or 0x38 for bridges) since lspci's `[disabled]` also reflects the
///   command register; only for other header types does `[disabled]` decide.
/// * Config size: 4096 if any byte at 0x100 or above is present, else 256. Every byte of that size
///   must be present (lspci -xxx/-xxxx print all of them): a shorter dump, such as the 64 bytes an
///   unprivileged `lspci -x` shows, is refused with `CaptureError.truncatedConfig` instead of being
///   padded with 0xff.
public enum LspciDump {
    public static func parse(_ text: String) throws(CaptureError) -> [CapturedFunction] {
        var functions: [CapturedFunction] = []
        var current: LspciDeviceReader?
        for (index, line) in CaptureText.splitLines(text).enumerated() {
            let lineNumber = index + 1
            if line.isEmpty {
                if let device = current { functions.append(try device.finish()) }
                current = nil
                continue
            }
            if let header = try parseHeader(line, lineNumber: lineNumber) {
                if let device = current { functions.append(try device.finish()) }
                current = LspciDeviceReader(address: header.address, name: header.name, headerLine: lineNumber)
                continue
            }
            if let data = try parseDataLine(line, lineNumber: lineNumber) {
                guard current != nil else { throw .dataOutsideDevice(line: lineNumber) }
                guard data.offset + data.bytes.count <= 4096 else {
                    throw .configOffsetOutOfRange(line: lineNumber, offset: data.offset)
                }
                current!.store(data.bytes, at: data.offset)
                continue
            }
            if current != nil, line.count >= 2, line.first == CaptureText.tab, line[line.startIndex + 1] != CaptureText.tab,
               line[line.startIndex + 1] != CaptureText.space {
                try current!.mine(String(decoding: line.dropFirst(), as: UTF8.self), lineNumber: lineNumber)
            }
        }
        if let device = current { functions.append(try device.finish()) }
        return functions
    }

    /// Renders functions in the dump format: a header line (the `name`, or `Class CCCC: Device
    /// VVVV:DDDD` without one), the details `parse` understands (when `includeDetails`: IRQ, BARs,
    /// ROM, driver; not `iovBARs`, which the format cannot carry), 16 bytes per hex line with
    /// `%02x: ` offsets (three digits from 0x100, as `lspci -xxx`/`-xxxx` print them), and an empty
    /// line after each function.
    public static func render(_ functions: [CapturedFunction], includeDetails: Bool = true) -> String {
        functions.map { render($0, includeDetails: includeDetails) }.joined()
    }

    public static func render(_ function: CapturedFunction, includeDetails: Bool = true) -> String {
        let address = function.address.domain == 0 ? function.address.shortDescription : function.address.description
        var name = function.name ?? ""
        if name.isEmpty {
            let config = function.config
            let classCode = UInt16(config[0x0b]) << 8 | UInt16(config[0x0a])
            name = "Class \(hex(classCode, width: 4)): Device \(hex(function.vendorID, width: 4)):\(hex(function.deviceID, width: 4))"
        }
        var out = address + " " + name + "\n"
        if includeDetails {
            if let irq = function.irq {
                let pin = function.config[0x3d]
                let pinName = (1...4).contains(pin) ? String(Character(UnicodeScalar(UInt8(ascii: "A") + pin - 1))) : "?"
                out += "\tInterrupt: pin \(pinName) routed to IRQ \(irq)\n"
            }
            for bar in function.bars {
                let size = "[size=\(CaptureText.formatSize(bar.size))]"
                switch bar.kind {
                case .io:
                    out += "\tRegion \(bar.index): I/O ports at \(addressText(bar.base, width: 4)) \(size)\n"
                case .memory(let is64Bit, let prefetchable):
                    out += "\tRegion \(bar.index): Memory at \(addressText(bar.base, width: 8)) ("
                        + (is64Bit ? "64-bit" : "32-bit") + ", " + (prefetchable ? "prefetchable" : "non-prefetchable")
                        + ") \(size)\n"
                case .rom(let enabled):
                    out += "\tExpansion ROM at \(addressText(bar.base, width: 8)) " + (enabled ? "" : "[disabled] ") + size + "\n"
                }
            }
            if let driver = function.driver {
                out += "\tKernel driver in use: \(driver)\n"
            }
        }
        for lineStart in stride(from: 0, to: function.config.count, by: 16) {
            out += hex(lineStart, width: 2) + ":"
            for byte in function.config[lineStart..<min(lineStart + 16, function.config.count)] {
                out += " " + hex(byte, width: 2)
            }
            out += "\n"
        }
        return out + "\n"
    }

    private static func addressText(_ base: UInt64, width: Int) -> String {
        base == 0 ? "<unassigned>" : hex(base, width: width)
    }

    /// A header line's address and text, nil if the line is not a header.
    private static func parseHeader(_ line: ArraySlice<UInt8>, lineNumber: Int) throws(CaptureError) -> (address: PCIAddress, name: String?)? {
        var start = line.startIndex
        var domain: UInt64 = 0
        var digits = start
        while digits < line.endIndex, CaptureText.isHexDigit(line[digits]) { digits += 1 }
        if (4...6).contains(digits - start), digits < line.endIndex, line[digits] == CaptureText.colon {
            guard let value = CaptureText.parseHex(line[start..<digits]) else { return nil }
            domain = value
            start = digits + 1
        }
        guard let parts = CaptureText.parseBusSlotFunction(line, from: start), parts.next < line.endIndex,
              line[parts.next] == CaptureText.space
        else { return nil }
        guard parts.slot < 32, parts.function < 8 else {
            throw .malformedDumpLine(line: lineNumber, reason: "invalid device address in header line (slot must be 00-1f, function 0-7)")
        }
        let address = PCIAddress(domain: UInt32(domain), bus: parts.bus, slot: parts.slot, function: parts.function)
        let text = String(decoding: line[(parts.next + 1)...], as: UTF8.self)
        return (address, text.isEmpty ? nil : text)
    }

    /// A hex line's offset and bytes, nil if the line is not a hex line.
    private static func parseDataLine(_ line: ArraySlice<UInt8>, lineNumber: Int) throws(CaptureError) -> (offset: Int, bytes: [UInt8])? {
        var i = line.startIndex
        while i < line.endIndex, CaptureText.isHexDigit(line[i]) { i += 1 }
        let digitCount = i - line.startIndex
        guard (2...8).contains(digitCount), i + 1 < line.endIndex, line[i] == CaptureText.colon, line[i + 1] == CaptureText.space,
              let offset = CaptureText.parseHex(line[line.startIndex..<i])
        else { return nil }
        var end = line.endIndex
        while end > i + 2, line[end - 1] == CaptureText.space || line[end - 1] == CaptureText.tab { end -= 1 }
        var bytes: [UInt8] = []
        var j = i + 2
        while true {
            guard j + 1 < end, let value = CaptureText.parseHex(line[j..<j + 2]) else {
                throw .malformedDumpLine(line: lineNumber, reason: "malformed hex byte in config data line (expected pairs of hex digits separated by single spaces)")
            }
            bytes.append(UInt8(value))
            j += 2
            if j == end { break }
            guard line[j] == CaptureText.space else {
                throw .malformedDumpLine(line: lineNumber, reason: "malformed config data line (expected pairs of hex digits separated by single spaces)")
            }
            j += 1
        }
        guard offset < 4096 else { throw .configOffsetOutOfRange(line: lineNumber, offset: Int(offset)) }
        return (Int(offset), bytes)
    }
}

/// The device being read from a dump.
private struct LspciDeviceReader {
    let address: PCIAddress
    let name: String?
    let headerLine: Int
    var config = [UInt8](repeating: 0xff, count: 4096)
    var present = [Bool](repeating: false, count: 4096)
    var bars: [Int: CapturedBAR] = [:]
    /// The ROM line's `[disabled]` tag, used only when the header type has no ROM register.
    var romTextEnabled = true
    var interruptIRQ: UInt32?
    var flagsIRQ: UInt32?
    var driver: String?

    init(address: PCIAddress, name: String?, headerLine: Int) {
        self.address = address
        self.name = name
        self.headerLine = headerLine
    }

    mutating func store(_ bytes: [UInt8], at offset: Int) {
        for (k, byte) in bytes.enumerated() {
            config[offset + k] = byte
            present[offset + k] = true
        }
    }

    func finish() throws(CaptureError) -> CapturedFunction {
        let extended = present[0x100...].contains(true)
        let required = extended ? 4096 : 256
        let bytes = present[..<required].lazy.filter { $0 }.count
        guard bytes == required else {
            throw .truncatedConfig(address: address, bytes: bytes, required: required, line: headerLine)
        }
        let configBytes = Array(config[..<required])
        var bars = bars
        if let rom = bars[CapturedBAR.romIndex] {
            let register: Int? = switch configBytes[0x0e] & 0x7f {
            case 0: 0x30
            case 1: 0x38
            default: nil
            }
            let enabled = register.map { configBytes[$0] & 1 != 0 } ?? romTextEnabled
            bars[CapturedBAR.romIndex] = CapturedBAR(index: rom.index, base: rom.base, size: rom.size, kind: .rom(enabled: enabled))
        }
        return CapturedFunction(address: address, config: configBytes, bars: Array(bars.values), irq: interruptIRQ ?? flagsIRQ,
                                driver: driver, name: name)
    }

    /// One line of `-v` text at the device's top level (the leading tab removed).
    mutating func mine(_ text: String, lineNumber: Int) throws(CaptureError) {
        func fail(_ reason: String) -> CaptureError { .malformedDumpLine(line: lineNumber, reason: reason) }

        if text.hasPrefix("Region ") {
            let rest = text.dropFirst("Region ".count)
            guard let colonIndex = rest.firstIndex(of: ":"), let index = CaptureText.parseDecimal(rest[..<colonIndex]), index < 6 else {
                throw fail("malformed Region line (expected 'Region N:' with N from 0 to 5)")
            }
            var body = rest[rest.index(after: colonIndex)...].drop { $0 == " " }
            // Tags lspci may put before the type: [virtual], [enhanced].
            while body.hasPrefix("["), let close = body.firstIndex(of: "]") {
                body = body[body.index(after: close)...].drop { $0 == " " }
            }
            let kind: CapturedBAR.Kind
            let base: UInt64
            var tail: Substring
            if body.hasPrefix("Memory at ") {
                let parsed = try Self.address(body.dropFirst("Memory at ".count), fail: fail)
                base = parsed.0
                tail = parsed.1
                tail = tail.drop { $0 == " " }
                guard tail.hasPrefix("("), let close = tail.firstIndex(of: ")") else {
                    throw fail("malformed Region line (expected '(32-bit|64-bit, [non-]prefetchable)')")
                }
                let parts = tail[tail.index(after: tail.startIndex)..<close].split(separator: ",").map {
                    $0.trimmingPrefix(" ")
                }
                guard parts.count == 2, parts[1] == "prefetchable" || parts[1] == "non-prefetchable" else {
                    throw fail("malformed Region line (expected '(32-bit|64-bit, [non-]prefetchable)')")
                }
                kind = .memory(is64Bit: parts[0] == "64-bit", prefetchable: parts[1] == "prefetchable")
                tail = tail[tail.index(after: close)...]
            } else if body.hasPrefix("I/O ports at ") {
                let parsed = try Self.address(body.dropFirst("I/O ports at ".count), fail: fail)
                base = parsed.0
                tail = parsed.1
                kind = .io
            } else {
                throw fail("malformed Region line (expected 'Memory at' or 'I/O ports at')")
            }
            guard let size = try Self.size(in: tail, fail: fail) else { return }
            guard bars[Int(index)] == nil else { throw fail("duplicate Region \(index) line") }
            bars[Int(index)] = CapturedBAR(index: Int(index), base: base, size: size, kind: kind)
        } else if text.hasPrefix("Expansion ROM at ") {
            let (base, tail) = try Self.address(text.dropFirst("Expansion ROM at ".count), fail: fail)
            guard let size = try Self.size(in: tail, fail: fail) else { return }
            guard bars[CapturedBAR.romIndex] == nil else { throw fail("duplicate Expansion ROM line") }
            romTextEnabled = !tail.contains("[disabled]")
            bars[CapturedBAR.romIndex] = CapturedBAR(index: CapturedBAR.romIndex, base: base, size: size,
                                                     kind: .rom(enabled: romTextEnabled))
        } else if text.hasPrefix("Kernel driver in use:") {
            let name = text.dropFirst("Kernel driver in use:".count).trimmingPrefix(" ")
            guard !name.isEmpty, !name.contains(" ") else { throw fail("malformed 'Kernel driver in use' line") }
            driver = String(name)
        } else if text.hasPrefix("Interrupt:"), let routed = text.firstRange(of: " routed to IRQ ") {
            guard let value = CaptureText.parseDecimal(text[routed.upperBound...]), let irq = UInt32(exactly: value) else {
                throw fail("malformed IRQ number in Interrupt line")
            }
            interruptIRQ = irq
        } else if text.hasPrefix("Flags:") {
            // `lspci -v`: "Flags: bus master, fast devsel, latency 0, IRQ 16[, NUMA node 0...]".
            for part in text.dropFirst("Flags:".count).split(separator: ",") {
                let item = part.trimmingPrefix(" ")
                if item.hasPrefix("IRQ "), let value = CaptureText.parseDecimal(item.dropFirst(4)), let irq = UInt32(exactly: value) {
                    flagsIRQ = irq
                }
            }
        }
    }

    /// A hex address, `<unassigned>` or `<ignored>` (both base 0), and the text after it.
    private static func address(_ text: Substring, fail: (String) -> CaptureError) throws(CaptureError) -> (UInt64, Substring) {
        let token = text.prefix { $0 != " " }
        let tail = text[token.endIndex...]
        if token == "<unassigned>" || token == "<ignored>" { return (0, tail) }
        guard let value = CaptureText.parseHex(token.utf8) else { throw fail("malformed address '\(token)'") }
        return (value, tail)
    }

    /// The `[size=N]` tag's value; nil if there is no size tag (or it says 0).
    private static func size(in text: Substring, fail: (String) -> CaptureError) throws(CaptureError) -> UInt64? {
        guard let open = text.firstRange(of: "[size=") else { return nil }
        let rest = text[open.upperBound...]
        guard let close = rest.firstIndex(of: "]"), let size = CaptureText.parseSize(rest[..<close]) else {
            throw fail("malformed [size=...] tag")
        }
        return size == 0 ? nil : size
    }
}

// MARK: - sysfs resource

/// The sysfs `resource` file (clients.md §2.4): one `"0x%016llx 0x%016llx 0x%016llx\n"` line
/// (start, end, flags) per resource; lines 0-5 are the BARs, 6 the ROM, then 6 SR-IOV lines (with
/// `CONFIG_PCI_IOV`) and, for bridges, 4 window lines. Unused lines are all zero.
///
/// Flags written for a BAR kind (`flags(for:)`) are what the kernel's BAR decoding produces: the
/// BAR register's low bits (I/O: bit 0 set; memory: type bits 2:1 = 2 for 64-bit, bit 3 prefetch),
/// IORESOURCE_IO (0x100) or IORESOURCE_MEM (0x200), IORESOURCE_PREFETCH (0x2000) for prefetchable
/// memory, IORESOURCE_MEM_64 (0x100000) for 64-bit, and IORESOURCE_SIZEALIGN (0x40000) always.
/// The ROM is IORESOURCE_MEM | PREFETCH | READONLY (0x4000) | SIZEALIGN, plus
/// IORESOURCE_ROM_ENABLE (0x1) when enabled. IORESOURCE_CACHEABLE (0x1000) is not set: current
/// kernels do not set it for PCI BARs. So:
///
/// | kind | flags |
/// |---|---|
/// | I/O | 0x40101 |
/// | 32-bit memory | 0x40200 |
/// | 32-bit prefetchable | 0x42208 |
/// | 64-bit memory | 0x140204 |
/// | 64-bit prefetchable | 0x14220c |
/// | ROM, disabled / enabled | 0x46200 / 0x46201 |
///
/// The first four rows match clients.md §1.1 (libxl only looks at bit 0). Shadowed VGA ROMs
/// (IORESOURCE_ROM_SHADOW) and other unusual flags are read as the plain kinds above.
public struct SysfsResource: Sendable, Hashable {
    public struct Line: Sendable, Hashable {
        public var start: UInt64
        public var end: UInt64
        public var flags: UInt64
        public init(start: UInt64, end: UInt64, flags: UInt64) {
            self.start = start
            self.end = end
            self.flags = flags
        }
        public var isUnused: Bool { start == 0 && end == 0 && flags == 0 }
        /// `end - start + 1`, or nil when start and end are both 0 (nothing assigned or sized).
        public var size: UInt64? { start == 0 && end == 0 ? nil : end &- start &+ 1 }
    }

    public static let ioresourceIO: UInt64 = 0x100
    public static let ioresourceMem: UInt64 = 0x200
    public static let ioresourceCacheable: UInt64 = 0x1000
    public static let ioresourcePrefetch: UInt64 = 0x2000
    public static let ioresourceReadOnly: UInt64 = 0x4000
    public static let ioresourceSizeAlign: UInt64 = 0x40000
    public static let ioresourceMem64: UInt64 = 0x100000
    public static let ioresourceROMEnable: UInt64 = 0x1

    /// Every line of the file, in order.
    public var lines: [Line]
    /// Lines 0-6 that have a size: BARs 0-5 and the ROM (index 6).
    public var bars: [CapturedBAR]
    /// Lines 7-12 that have a size, when the file has the SR-IOV lines (13 or 17 lines); index 0-5.
    public var iovBARs: [CapturedBAR]
    /// The last four lines of a bridge's file (11 or 17 lines), else empty.
    public var bridgeWindows: [Line]

    public init(parsing text: String) throws(CaptureError) {
        var lines: [Line] = []
        for (index, raw) in CaptureText.splitLines(text).enumerated() {
            let fields = raw.split(whereSeparator: { $0 == CaptureText.space || $0 == CaptureText.tab })
            let values = fields.compactMap { field -> UInt64? in
                var digits = field
                if digits.count > 2, digits[digits.startIndex] == UInt8(ascii: "0"),
                   digits[digits.startIndex + 1] | 0x20 == UInt8(ascii: "x") {
                    digits = digits.dropFirst(2)
                }
                return CaptureText.parseHex(digits)
            }
            guard fields.count == 3, values.count == 3 else {
                throw .malformedResourceLine(line: index + 1, reason: "expected three hex numbers 'start end flags'")
            }
            guard values[1] >= values[0] else {
                throw .malformedResourceLine(line: index + 1, reason: "end is below start")
            }
            guard values[0] != 0 || values[1] != UInt64.max else {
                throw .malformedResourceLine(line: index + 1, reason: "size does not fit 64 bits")
            }
            lines.append(Line(start: values[0], end: values[1], flags: values[2]))
        }
        guard lines.count >= 7 else {
            throw .malformedResourceLine(line: lines.count + 1, reason: "expected at least 7 lines (6 BARs and the ROM), found \(lines.count)")
        }
        self.lines = lines
        bars = []
        for index in 0...6 {
            if let bar = try Self.bar(index: index, line: lines[index], lineNumber: index + 1, isROM: index == 6) {
                bars.append(bar)
            }
        }
        iovBARs = []
        if lines.count == 13 || lines.count == 17 {
            for index in 0...5 {
                if let bar = try Self.bar(index: index, line: lines[7 + index], lineNumber: 8 + index, isROM: false) {
                    iovBARs.append(bar)
                }
            }
        }
        bridgeWindows = lines.count == 11 || lines.count == 17 ? Array(lines.suffix(4)) : []
    }

    /// The function's own BARs and ROM (lines 0-6) from a `resource` file.
    public static func parse(_ text: String) throws(CaptureError) -> [CapturedBAR] {
        try SysfsResource(parsing: text).bars
    }

    private static func bar(index: Int, line: Line, lineNumber: Int, isROM: Bool) throws(CaptureError) -> CapturedBAR? {
        guard let size = line.size else { return nil }
        let kind: CapturedBAR.Kind
        if line.flags & ioresourceIO != 0, !isROM {
            kind = .io
        } else if line.flags & ioresourceMem != 0 {
            kind = isROM ? .rom(enabled: line.flags & ioresourceROMEnable != 0)
                : .memory(is64Bit: line.flags & ioresourceMem64 != 0, prefetchable: line.flags & ioresourcePrefetch != 0)
        } else {
            throw .malformedResourceLine(line: lineNumber, reason: "a sized resource whose flags 0x\(hex(line.flags, width: 1)) are neither "
                                         + (isROM ? "IORESOURCE_MEM (ROM)" : "IORESOURCE_IO nor IORESOURCE_MEM"))
        }
        return CapturedBAR(index: index, base: line.start, size: size, kind: kind)
    }

    /// One line exactly as the kernel prints it: `"0x%016llx 0x%016llx 0x%016llx\n"`, 57 bytes.
    public static func line(start: UInt64, end: UInt64, flags: UInt64) -> String {
        "0x" + hex(start, width: 16) + " 0x" + hex(end, width: 16) + " 0x" + hex(flags, width: 16) + "\n"
    }

    /// The kernel's resource flags for a BAR kind (see the table above).
    public static func flags(for kind: CapturedBAR.Kind) -> UInt64 {
        switch kind {
        case .io:
            return ioresourceSizeAlign | ioresourceIO | 0x1
        case .memory(let is64Bit, let prefetchable):
            var flags = ioresourceSizeAlign | ioresourceMem
            if is64Bit { flags |= ioresourceMem64 | 0x4 }
            if prefetchable { flags |= ioresourcePrefetch | 0x8 }
            return flags
        case .rom(let enabled):
            return ioresourceSizeAlign | ioresourceReadOnly | ioresourcePrefetch | ioresourceMem
                | (enabled ? ioresourceROMEnable : 0)
        }
    }

    /// A whole `resource` file: `lineCount` lines (7 without SR-IOV support, 13 with it; bridges
    /// 11 or 17), BARs and the ROM on lines 0-6, `iovBARs` on lines 7-12, the rest zero.
    public static func text(bars: [CapturedBAR], iovBARs: [CapturedBAR] = [], lineCount: Int = 13) -> String {
        precondition(lineCount >= 7 && (iovBARs.isEmpty || lineCount >= 13), "too few resource lines")
        var lines = [Line](repeating: Line(start: 0, end: 0, flags: 0), count: lineCount)
        for bar in bars {
            lines[bar.index] = Line(start: bar.base, end: bar.end, flags: flags(for: bar.kind))
        }
        for bar in iovBARs where !bar.isROM {
            lines[7 + bar.index] = Line(start: bar.base, end: bar.end, flags: flags(for: bar.kind))
        }
        return lines.map { line(start: $0.start, end: $0.end, flags: $0.flags) }.joined()
    }
}

// MARK: - Live sysfs

/// Captures functions from sysfs: a live device directory, or a raw config blob plus `resource` text.
public enum SysfsCapture {
    /// Reads `/sys/bus/pci/devices/DDDD:BB:SS.F` (or any directory laid out like it): `config`
    /// (required; needs root for more than 64 bytes), `resource` (optional), `irq` (optional), and
    /// the `driver` link (optional). The address comes from the directory's name.
    public static func read(deviceDirectory: String) throws(CaptureError) -> CapturedFunction {
        var directory = deviceDirectory
        while directory.count > 1, directory.hasSuffix("/") { directory.removeLast() }
        let name = directory.split(separator: "/").last.map(String.init) ?? directory
        guard let address = SysfsCapture.address(fromDeviceName: name) else { throw .invalidDeviceName(name) }

        let config = try CaptureFiles.readWholeFile(directory + "/config", limit: 65536)
        let resourcePath = directory + "/resource"
        let resourceText = try CaptureFiles.readOptionalTextFile(resourcePath)
        let irqPath = directory + "/irq"
        var irq: UInt32?
        if let text = try CaptureFiles.readOptionalTextFile(irqPath) {
            guard let value = CaptureText.parseDecimal(text.hasSuffix("\n") ? text.dropLast() : text[...]), let number = UInt32(exactly: value) else {
                throw .malformedFile(path: irqPath, reason: "expected a decimal IRQ number")
            }
            irq = number
        }
        let driver = try CaptureFiles.readOptionalLink(directory + "/driver").map { target in
            String(target.split(separator: "/").last ?? Substring(target))
        }
        do throws(CaptureError) {
            return try readRaw(config: config, resourceText: resourceText, address: address, irq: irq, driver: driver)
        } catch .malformedResourceLine(let line, let reason) {
            throw .malformedFile(path: resourcePath, reason: "line \(line): \(reason)")
        }
    }

    /// Builds a function from a raw binary config space (256 or 4096 bytes; fewer than 256 is
    /// refused as truncated) and, optionally, the text of its sysfs `resource` file.
    public static func readRaw(config: [UInt8], resourceText: String?, address: PCIAddress, irq: UInt32? = nil,
                               driver: String? = nil, name: String? = nil) throws(CaptureError) -> CapturedFunction {
        guard config.count >= 256 else {
            throw .truncatedConfig(address: address, bytes: config.count, required: 256, line: nil)
        }
        guard config.count == 256 || config.count == 4096 else {
            throw .invalidConfigSize(address: address, bytes: config.count)
        }
        let resource = try resourceText.map { (text: String) throws(CaptureError) in try SysfsResource(parsing: text) }
        return CapturedFunction(address: address, config: config, bars: resource?.bars ?? [], iovBARs: resource?.iovBARs ?? [],
                                irq: irq, driver: driver, name: name)
    }

    /// `DDDD:BB:SS.F` with a 4-to-8-digit domain (the kernel prints `%04x`), as sysfs names devices.
    public static func address(fromDeviceName name: String) -> PCIAddress? {
        let bytes = ArraySlice(Array(name.utf8))
        guard let firstColon = bytes.firstIndex(of: CaptureText.colon), (4...8).contains(firstColon),
              let domain = CaptureText.parseHex(bytes[..<firstColon]),
              let rest = CaptureText.parseBusSlotFunction(bytes, from: firstColon + 1), rest.next == bytes.endIndex,
              rest.slot < 32, rest.function < 8
        else { return nil }
        return PCIAddress(domain: UInt32(domain), bus: rest.bus, slot: rest.slot, function: rest.function)
    }

    /// Every function under a `devices` directory (default `/sys/bus/pci/devices`), by address.
    public static func readAll(devicesDirectory: String = "/sys/bus/pci/devices") throws(CaptureError) -> [CapturedFunction] {
        guard let dir = opendir(devicesDirectory) else {
            throw .io(path: devicesDirectory, errno: Errno(errno))
        }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if !name.hasPrefix(".") { names.append(name) }
        }
        closedir(dir)
        var functions: [CapturedFunction] = []
        for name in names {
            functions.append(try read(deviceDirectory: devicesDirectory + "/" + name))
        }
        return functions.sorted { $0.address < $1.address }
    }
}

// MARK: - POSIX file access

/// File reading shared by the capture and import paths (POSIX, so errors keep their errno).
enum CaptureFiles {
    static func readWholeFile(_ path: String, limit: Int) throws(CaptureError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, errno: Errno(errno)) }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, errno: Errno(errno))
            }
            if count == 0 { return result }
            result.append(contentsOf: chunk[..<count])
            if result.count > limit {
                throw .malformedFile(path: path, reason: "larger than \(limit) bytes")
            }
        }
    }

    /// A text file's content, or nil if it does not exist.
    static func readOptionalTextFile(_ path: String) throws(CaptureError) -> String? {
        do throws(CaptureError) {
            return String(decoding: try Self.readWholeFile(path, limit: 1 << 20), as: UTF8.self)
        } catch .io(_, let error) where error == .noSuchFileOrDirectory {
            return nil
        }
    }

    /// A symlink's target, or nil if it does not exist.
    static func readOptionalLink(_ path: String) throws(CaptureError) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count)
        if count < 0 {
            if errno == ENOENT { return nil }
            throw .io(path: path, errno: Errno(errno))
        }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
