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
///   `Kernel driver in use:` (any text, spaces included; `Kernel modules:` is not used). Deeper-indented lines (capability details, e.g. SR-IOV VF BAR
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
    /// The functions of a dump file (errors: `CaptureError.io` for the file, the parser's for its lines).
    public static func parse(path: String) throws(CaptureError) -> [CapturedFunction] {
        try parse(String(decoding: try CaptureFiles.readWholeFile(path, limit: 64 << 20), as: UTF8.self))
    }

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
                // An inferred size is not written: reading the text back infers it again.
                let size = bar.sizeInferred ? "" : " [size=\(CaptureText.formatSize(bar.size))]"
                switch bar.kind {
                case .io:
                    out += "\tRegion \(bar.index): I/O ports at \(addressText(bar.base, width: 4))\(size)\n"
                case .memory(let is64Bit, let prefetchable):
                    out += "\tRegion \(bar.index): Memory at \(addressText(bar.base, width: 8)) ("
                        + (is64Bit ? "64-bit" : "32-bit") + ", " + (prefetchable ? "prefetchable" : "non-prefetchable")
                        + ")\(size)\n"
                case .rom(let enabled):
                    out += "\tExpansion ROM at \(addressText(bar.base, width: 8))" + (enabled ? "" : " [disabled]") + size + "\n"
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
        // A BAR with an address but no [size=] (no -v text, another access method) gets an inferred size.
        return BARSizeInference.completing(CapturedFunction(address: address, config: configBytes, bars: Array(bars.values),
                                                            irq: interruptIRQ ?? flagsIRQ, driver: driver, name: name))
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
            // Any text: older kernels named drivers with spaces ("HDA Intel"). lspci prints the
            // `driver` link's last component, which has no '/' (kobject names turn '/' into '!').
            let name = text.dropFirst("Kernel driver in use:".count).trimmingPrefix(" ")
            driver = name.isEmpty ? nil : name.replacingOccurrences(of: "/", with: "!")
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
