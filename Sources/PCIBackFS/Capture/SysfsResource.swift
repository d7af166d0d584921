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
