import Foundation
import Testing
@testable import PCIBackFS

// The pciutils dumps are read at run time from ../shared/testdata/pciutils (relative to the package
// root); nothing from them is copied here beyond the few BAR values checked in `knownBARs`.

/// Fixtures and independent helpers (namespaced so they cannot collide with other test files).
private enum Fixtures {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let dumpDirectory = packageRoot.deletingLastPathComponent()
        .appendingPathComponent("shared").appendingPathComponent("testdata").appendingPathComponent("pciutils")
    static let dumpNames: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: dumpDirectory.path)) ?? [])
        .filter { !$0.hasPrefix(".") && !$0.hasSuffix(".md") }
        .sorted()

    static func dumpText(_ name: String) throws -> String {
        try String(contentsOf: dumpDirectory.appendingPathComponent(name), encoding: .utf8)
    }

    static let lspciPath: String? = ["/usr/bin/lspci", "/usr/sbin/lspci", "/bin/lspci", "/sbin/lspci"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    static let liveDevicesDirectory = "/sys/bus/pci/devices"
    static let liveDeviceNames: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: liveDevicesDirectory)) ?? [])
        .filter { !$0.hasPrefix(".") }
        .sorted()

    /// Independent of the code under test: header lines and hex lines as clients.md §5.2 defines them.
    static func isHeaderLine(_ line: Substring) throws -> Bool {
        try line.prefixMatch(of: Regex(#"([0-9a-fA-F]{4,6}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7] "#)) != nil
    }

    static func isHexLine(_ line: Substring) throws -> Bool {
        try line.prefixMatch(of: Regex(#"[0-9a-fA-F]{2,8}: "#)) != nil
    }

    static func lines(_ text: String) -> [Substring] {
        text.split(separator: "\n", omittingEmptySubsequences: false)
    }

    /// The hex lines of each device of a dump, in file order.
    static func hexLinesPerDevice(_ text: String) throws -> [[Substring]] {
        var devices: [[Substring]] = []
        for line in lines(text) {
            if try isHeaderLine(line) {
                devices.append([])
            } else if try isHexLine(line), !devices.isEmpty {
                devices[devices.count - 1].append(line)
            }
        }
        return devices
    }

    /// A synthetic config space (vendor 0x1234, device 0x5678, header type 0), and its hex lines
    /// written with Foundation's formatter, independently of `LspciDump.render`.
    static func syntheticConfig(size: Int = 256) -> [UInt8] {
        var config = [UInt8](repeating: 0, count: size)
        config[0] = 0x34; config[1] = 0x12; config[2] = 0x78; config[3] = 0x56
        config[0x0b] = 0x02
        config[0x3d] = 0x01
        for i in 0x40..<size { config[i] = UInt8(truncatingIfNeeded: i &* 7) }
        return config
    }

    static func hexLines(_ config: [UInt8], upTo count: Int? = nil) -> String {
        let limit = count ?? config.count
        return stride(from: 0, to: limit, by: 16).map { offset in
            String(format: "%02x:", offset) + config[offset..<min(offset + 16, limit)].map { String(format: " %02x", $0) }.joined() + "\n"
        }.joined()
    }

    static func syntheticDump(header: String = "03:00.0 Ethernet controller: Synthetic", details: [String] = [],
                               config: [UInt8] = syntheticConfig()) -> String {
        header + "\n" + details.map { $0 + "\n" }.joined() + hexLines(config) + "\n"
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("capture-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func runLspci(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: lspciPath!)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func lineNumber(of error: CaptureError) -> Int? {
        switch error {
        case .malformedDumpLine(let line, _), .configOffsetOutOfRange(let line, _), .dataOutsideDevice(let line),
             .malformedResourceLine(let line, _):
            return line
        case .truncatedConfig(_, _, _, let line):
            return line
        default:
            return nil
        }
    }
}

@Suite("Capture")
struct CaptureTests {
    // MARK: lspci dumps from pciutils

    @Test func dumpDirectoryIsThere() {
        #expect(!Fixtures.dumpNames.isEmpty, "no dumps found in \(Fixtures.dumpDirectory.path)")
    }

    @Test("every pciutils dump parses, one function per header line, hex lines re-render identically",
          arguments: Fixtures.dumpNames)
    func dumpParsesAndReRenders(name: String) throws {
        let text = try Fixtures.dumpText(name)
        let functions = try LspciDump.parse(text)
        let expectedHex = try Fixtures.hexLinesPerDevice(text)
        #expect(functions.count == expectedHex.count)
        #expect(functions.count == (try Fixtures.lines(text).filter { try Fixtures.isHeaderLine($0) }.count))
        for (function, expectedLines) in zip(functions, expectedHex) {
            #expect(function.config.count == 256 || function.config.count == 4096)
            #expect(function.config.count == expectedLines.count * 16)
            let rendered = try Fixtures.lines(LspciDump.render(function, includeDetails: false)).filter { try Fixtures.isHexLine($0) }
            #expect(rendered == expectedLines, "hex lines differ for \(function.address)")
            // Everything the dump carried survives render → parse.
            #expect(try LspciDump.parse(LspciDump.render(function)) == [function])
        }
        #expect(try LspciDump.parse(LspciDump.render(functions)) == functions)
    }

    struct KnownBAR: Sendable, CustomTestStringConvertible {
        var file: String
        var address: PCIAddress
        var bar: CapturedBAR
        var testDescription: String { "\(file) \(address.shortDescription) \(bar)" }
    }

    // Values read off the dumps' own `Region`/`Expansion ROM` lines.
    static let knownBARs: [KnownBAR] = [
        KnownBAR(file: "cap-pcie-2", address: PCIAddress(bus: 1, slot: 0, function: 0),
                 bar: CapturedBAR(index: 0, base: 0xe080_0000, size: 128 << 10, kind: .memory(is64Bit: false, prefetchable: false))),
        KnownBAR(file: "cap-pcie-2", address: PCIAddress(bus: 1, slot: 0, function: 0),
                 bar: CapturedBAR(index: 1, base: 0xe000_0000, size: 4 << 20, kind: .memory(is64Bit: false, prefetchable: false))),
        KnownBAR(file: "cap-pcie-2", address: PCIAddress(bus: 1, slot: 0, function: 0),
                 bar: CapturedBAR(index: 2, base: 0x1020, size: 32, kind: .io)),
        KnownBAR(file: "cap-pcie-2", address: PCIAddress(bus: 1, slot: 0, function: 0),
                 bar: CapturedBAR(index: 3, base: 0xe084_0000, size: 16 << 10, kind: .memory(is64Bit: false, prefetchable: false))),
        KnownBAR(file: "cap-pcie-2", address: PCIAddress(bus: 1, slot: 0, function: 0),
                 bar: CapturedBAR(index: 6, base: 0xc780_0000, size: 4 << 20, kind: .rom(enabled: false))),
        KnownBAR(file: "cap-vendor-virtio", address: PCIAddress(bus: 0, slot: 4, function: 0),
                 bar: CapturedBAR(index: 2, base: 0x2_0000_0000, size: 1 << 30, kind: .memory(is64Bit: true, prefetchable: true))),
        KnownBAR(file: "cap-vendor-virtio", address: PCIAddress(bus: 0, slot: 9, function: 0),
                 bar: CapturedBAR(index: 0, base: 0xc060, size: 32, kind: .io)),
    ]

    @Test("BARs from the dumps' Region lines", arguments: knownBARs)
    func knownBAR(_ expected: KnownBAR) throws {
        let functions = try LspciDump.parse(try Fixtures.dumpText(expected.file))
        let function = try #require(functions.first { $0.address == expected.address })
        #expect(function.bar(expected.bar.index) == expected.bar)
    }

    @Test func knownFunctionDetails() throws {
        let nic = try #require(try LspciDump.parse(try Fixtures.dumpText("cap-pcie-2")).first)
        #expect(nic.address == PCIAddress(bus: 1, slot: 0, function: 0))
        #expect(nic.config.count == 4096)
        #expect(nic.bars.map(\.index) == [0, 1, 2, 3, 6])
        #expect(nic.irq == 16)
        #expect(nic.driver == "igb")
        #expect(nic.name?.hasPrefix("Ethernet controller") == true)
        #expect(nic.vendorID == 0x8086)

        let virtio = try LspciDump.parse(try Fixtures.dumpText("cap-vendor-virtio"))
        #expect(virtio.map(\.address) == [PCIAddress(bus: 0, slot: 9, function: 0), PCIAddress(bus: 0, slot: 4, function: 0)])
        #expect(virtio.allSatisfy { $0.config.count == 256 && $0.driver == "virtio-pci" })
        #expect(virtio[0].irq == 10)
        #expect(virtio[1].irq == nil)
        #expect(virtio[1].bars.map(\.index) == [0, 2])
    }

    // MARK: lspci -F agrees

    @Test("lspci -F shows a rendered dump exactly like the original", .enabled(if: Fixtures.lspciPath != nil, "lspci is not installed"),
          arguments: Fixtures.dumpNames)
    func lspciAgrees(name: String) throws {
        let original = Fixtures.dumpDirectory.appendingPathComponent(name).path
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let copy = directory.appendingPathComponent(name)
        try LspciDump.render(try LspciDump.parse(try Fixtures.dumpText(name))).write(to: copy, atomically: true, encoding: .utf8)
        for options in [["-xxxx"], ["-vvv", "-xxxx"]] {
            let expected = try Fixtures.runLspci(["-F", original] + options)
            let actual = try Fixtures.runLspci(["-F", copy.path] + options)
            #expect(expected.status == 0 && actual.status == 0)
            #expect(!expected.output.isEmpty)
            #expect(actual.output == expected.output, "lspci \(options) differs for \(name)")
        }
    }

    // MARK: Synthetic dumps

    @Test func unprivilegedDumpIsRefused() {
        // What `lspci -x` prints without root: 64 bytes only.
        let text = "03:00.0 Ethernet controller: Synthetic\n" + Fixtures.hexLines(Fixtures.syntheticConfig(), upTo: 64) + "\n"
        #expect(throws: CaptureError.truncatedConfig(address: PCIAddress(bus: 3, slot: 0, function: 0), bytes: 64, required: 256, line: 1)) {
            try LspciDump.parse(text)
        }
        let error = CaptureError.truncatedConfig(address: PCIAddress(bus: 3, slot: 0, function: 0), bytes: 64, required: 256, line: 1)
        #expect(error.description.contains("line 1"))
        #expect(error.description.contains("64 of 256"))
    }

    @Test func incompleteExtendedSpaceIsRefused() {
        var text = Fixtures.syntheticDump(config: Fixtures.syntheticConfig(size: 4096))
        text = text.replacingOccurrences(of: "\n200:", with: "\nX200:")  // drop one 16-byte line
        #expect(throws: CaptureError.truncatedConfig(address: PCIAddress(bus: 3, slot: 0, function: 0), bytes: 4080, required: 4096, line: 1)) {
            try LspciDump.parse(text)
        }
    }

    @Test func syntheticDumpBasics() throws {
        let config4K = Fixtures.syntheticConfig(size: 4096)
        let text = "Some preamble that is ignored\n"
            + Fixtures.syntheticDump(header: "0000:03:00.0 A", config: Fixtures.syntheticConfig())
            + Fixtures.syntheticDump(header: "12345:7f:1f.7", config: config4K)  // no text after the address: not a header
            + Fixtures.syntheticDump(header: "12345:7f:1f.7 B", config: config4K)
            + "04:00.0 C\n" + Fixtures.hexLines(Fixtures.syntheticConfig())  // no empty line at the end
        #expect(throws: CaptureError.dataOutsideDevice(line: 21)) { try LspciDump.parse(text) }

        let valid = "Some preamble that is ignored\n"
            + Fixtures.syntheticDump(header: "0000:03:00.0 A", config: Fixtures.syntheticConfig())
            + Fixtures.syntheticDump(header: "12345:7f:1f.7 B", config: config4K)
            + "04:00.0 C\n" + Fixtures.hexLines(Fixtures.syntheticConfig()).uppercased().replacingOccurrences(of: "\n", with: " \r\n")
        let functions = try LspciDump.parse(valid)
        #expect(functions.map(\.address) == [
            PCIAddress(bus: 3, slot: 0, function: 0),
            PCIAddress(domain: 0x12345, bus: 0x7f, slot: 0x1f, function: 7),
            PCIAddress(bus: 4, slot: 0, function: 0),
        ])
        #expect(functions.map(\.config) == [Fixtures.syntheticConfig(), config4K, Fixtures.syntheticConfig()])
        #expect(functions.map(\.name) == ["A", "B", "C"])
        #expect(functions[1].hasExtendedConfig)
        // A new header ends the previous device even without an empty line.
        let back2back = "01:00.0 X\n" + Fixtures.hexLines(Fixtures.syntheticConfig()) + "01:00.1 Y\n" + Fixtures.hexLines(Fixtures.syntheticConfig())
        #expect(try LspciDump.parse(back2back).count == 2)
    }

    struct MalformedCase: Sendable, CustomTestStringConvertible {
        var label: String
        var text: String
        var line: Int
        var testDescription: String { label }
    }

    static let malformedCases: [MalformedCase] = [
        MalformedCase(label: "odd digit", text: "01:00.0 x\n00: 86 80 c9 1\n", line: 2),
        MalformedCase(label: "double space", text: "01:00.0 x\n00: 86 80 c9 10\n10: 86  80\n", line: 3),
        MalformedCase(label: "not hex", text: "\n01:00.0 x\n00: 86 gg\n", line: 3),
        MalformedCase(label: "no bytes", text: "01:00.0 x\n00: \n", line: 2),
        MalformedCase(label: "tab separator", text: "01:00.0 x\n00: 86\t80\n", line: 2),
        MalformedCase(label: "offset 4096", text: "01:00.0 x\n00: 00\n1000: 00\n", line: 3),
        MalformedCase(label: "past 4096", text: "01:00.0 x\nffc: 00 11 22 33 44\n", line: 2),
        MalformedCase(label: "orphan data", text: "00: 86 80\n", line: 1),
        MalformedCase(label: "orphan after device", text: Fixtures.syntheticDump() + "10: 00 00\n", line: 19),
        MalformedCase(label: "slot 0x20", text: "00:20.0 x\n", line: 1),
        MalformedCase(label: "function 8", text: "x\n00:1f.8 x\n", line: 2),
        MalformedCase(label: "region index", text: "01:00.0 x\n\tRegion 7: Memory at 1000 (32-bit, prefetchable) [size=4K]\n", line: 2),
        MalformedCase(label: "region address", text: "01:00.0 x\n\tRegion 0: Memory at zz (32-bit, prefetchable) [size=4K]\n", line: 2),
        MalformedCase(label: "region type", text: "01:00.0 x\n\tRegion 0: Memory at 1000 (32-bit) [size=4K]\n", line: 2),
        MalformedCase(label: "region size", text: "01:00.0 x\n\tRegion 0: I/O ports at 1000 [size=12Q]\n", line: 2),
        MalformedCase(label: "duplicate region", text: "01:00.0 x\n\tRegion 0: I/O ports at 1000 [size=16]\n\tRegion 0: I/O ports at 1000 [size=16]\n", line: 3),
        MalformedCase(label: "irq", text: "01:00.0 x\n\tInterrupt: pin A routed to IRQ x1\n", line: 2),
    ]

    @Test("malformed dump lines are errors with their line number", arguments: malformedCases)
    func malformedLine(_ testCase: MalformedCase) throws {
        let error = try #require(throws: CaptureError.self) { try LspciDump.parse(testCase.text) }
        #expect(Fixtures.lineNumber(of: error) == testCase.line)
        #expect(error.description.contains("line \(testCase.line)"), "\(error)")
    }

    struct DetailCase: Sendable, CustomTestStringConvertible {
        var line: String
        var bar: CapturedBAR?
        var testDescription: String { line.trimmingCharacters(in: .whitespaces) }
    }

    static let detailCases: [DetailCase] = [
        DetailCase(line: "\tRegion 0: Memory at fe000000 (32-bit, non-prefetchable) [size=16M]",
                   bar: CapturedBAR(index: 0, base: 0xfe00_0000, size: 16 << 20, kind: .memory(is64Bit: false, prefetchable: false))),
        DetailCase(line: "\tRegion 2: Memory at 4000000000 (64-bit, prefetchable) [size=2G]",
                   bar: CapturedBAR(index: 2, base: 0x40_0000_0000, size: 2 << 30, kind: .memory(is64Bit: true, prefetchable: true))),
        DetailCase(line: "\tRegion 1: Memory at d0000000 (32-bit, prefetchable) [disabled] [size=256]",
                   bar: CapturedBAR(index: 1, base: 0xd000_0000, size: 256, kind: .memory(is64Bit: false, prefetchable: true))),
        DetailCase(line: "\tRegion 4: I/O ports at e000 [disabled] [size=256]",
                   bar: CapturedBAR(index: 4, base: 0xe000, size: 256, kind: .io)),
        DetailCase(line: "\tRegion 0: [virtual] Memory at f0000000 (64-bit, non-prefetchable) [size=64K]",
                   bar: CapturedBAR(index: 0, base: 0xf000_0000, size: 64 << 10, kind: .memory(is64Bit: true, prefetchable: false))),
        DetailCase(line: "\tRegion 2: [enhanced] Memory at 840000000000 (64-bit, non-prefetchable) [size=2M]",
                   bar: CapturedBAR(index: 2, base: 0x8400_0000_0000, size: 2 << 20, kind: .memory(is64Bit: true, prefetchable: false))),
        DetailCase(line: "\tRegion 1: Memory at <unassigned> (64-bit, prefetchable) [size=8T]",
                   bar: CapturedBAR(index: 1, base: 0, size: 8 << 40, kind: .memory(is64Bit: true, prefetchable: true))),
        DetailCase(line: "\tRegion 3: I/O ports at <ignored> [size=8]",
                   bar: CapturedBAR(index: 3, base: 0, size: 8, kind: .io)),
        DetailCase(line: "\tRegion 5: Memory at fd000000 (32-bit, non-prefetchable)", bar: nil),
        DetailCase(line: "\tExpansion ROM at 000c0000 [virtual] [disabled] [size=128K]",
                   bar: CapturedBAR(index: 6, base: 0xc0000, size: 128 << 10, kind: .rom(enabled: false))),
        DetailCase(line: "\tExpansion ROM at <unassigned> [disabled] [size=64K]",
                   bar: CapturedBAR(index: 6, base: 0, size: 64 << 10, kind: .rom(enabled: false))),
        // Deeper lines belong to capabilities (e.g. SR-IOV VF BARs), not to the function.
        DetailCase(line: "\t\tRegion 0: Memory at e0400000 (64-bit, non-prefetchable) [size=16K]", bar: nil),
        DetailCase(line: "\t\tVF BAR0: Memory at e0400000 (64-bit, non-prefetchable) [size=16K]", bar: nil),
        DetailCase(line: " \tRegion 0: Memory at e0400000 (64-bit, non-prefetchable) [size=16K]", bar: nil),
        // Outside a device (after the empty line) nothing is mined; tested separately below.
    ]

    @Test("BAR and ROM line forms", arguments: detailCases)
    func detailLine(_ testCase: DetailCase) throws {
        let function = try #require(try LspciDump.parse(Fixtures.syntheticDump(details: [testCase.line])).first)
        #expect(function.bars == (testCase.bar.map { [$0] } ?? []))
    }

    @Test func romEnableComesFromConfig() throws {
        var config = Fixtures.syntheticConfig()
        config[0x30] = 0x01  // type-0 ROM register, enable bit set
        let line = "\tExpansion ROM at 000c0000 [disabled] [size=128K]"
        var function = try #require(try LspciDump.parse(Fixtures.syntheticDump(details: [line], config: config)).first)
        #expect(function.rom?.romEnabled == true)
        config[0x0e] = 0x01  // a bridge: its ROM register is at 0x38
        function = try #require(try LspciDump.parse(Fixtures.syntheticDump(details: [line], config: config)).first)
        #expect(function.rom?.romEnabled == false)
        config[0x38] = 0x01
        function = try #require(try LspciDump.parse(Fixtures.syntheticDump(details: [line], config: config)).first)
        #expect(function.rom?.romEnabled == true)
    }

    @Test func interruptAndDriverLines() throws {
        var function = try #require(try LspciDump.parse(Fixtures.syntheticDump(details: [
            "\tFlags: bus master, fast devsel, latency 0, IRQ 42, NUMA node 0",
            "\tInterrupt: pin B routed to IRQ 17",
            "\tKernel driver in use: vfio-pci",
            "\tKernel modules: igb",
        ])).first)
        #expect(function.irq == 17)
        #expect(function.driver == "vfio-pci")
        function = try #require(try LspciDump.parse(Fixtures.syntheticDump(details: [
            "\tFlags: bus master, fast devsel, latency 0, IRQ 42, NUMA node 0",
        ])).first)
        #expect(function.irq == 42)
        // Detail lines after the device's empty line are not the device's.
        let text = Fixtures.syntheticDump() + "\tKernel driver in use: other\n\tInterrupt: pin A routed to IRQ 5\n"
        function = try #require(try LspciDump.parse(text).first)
        #expect(function.irq == nil && function.driver == nil)
    }

    @Test func renderFormat() {
        let function = CapturedFunction(address: PCIAddress(domain: 1, bus: 2, slot: 3, function: 4), config: Fixtures.syntheticConfig(size: 4096),
                                        bars: [CapturedBAR(index: 0, base: 0x1000, size: 1536, kind: .io)], irq: 9)
        let text = LspciDump.render(function)
        let textLines = Fixtures.lines(text)
        #expect(textLines[0] == "0001:02:03.4 Class 0200: Device 1234:5678")
        #expect(textLines.contains("\tInterrupt: pin A routed to IRQ 9"))
        #expect(textLines.contains("\tRegion 0: I/O ports at 1000 [size=1536]"))
        #expect(textLines.contains { $0.hasPrefix("f0: ") })
        #expect(textLines.contains { $0.hasPrefix("100: ") })
        #expect(textLines.contains { $0.hasPrefix("ff0: ") })
        #expect(text.hasSuffix("\n\n"))
        #expect(text.contains(Fixtures.hexLines(Fixtures.syntheticConfig(size: 4096))))
    }

    // MARK: sysfs resource

    struct FlagsCase: Sendable, CustomTestStringConvertible {
        var kind: CapturedBAR.Kind
        var flags: UInt64
        var testDescription: String { "\(kind) → 0x\(String(flags, radix: 16))" }
    }

    static let flagsCases: [FlagsCase] = [
        FlagsCase(kind: .io, flags: 0x40101),
        FlagsCase(kind: .memory(is64Bit: false, prefetchable: false), flags: 0x40200),
        FlagsCase(kind: .memory(is64Bit: false, prefetchable: true), flags: 0x42208),
        FlagsCase(kind: .memory(is64Bit: true, prefetchable: false), flags: 0x140204),
        FlagsCase(kind: .memory(is64Bit: true, prefetchable: true), flags: 0x14220c),
        FlagsCase(kind: .rom(enabled: false), flags: 0x46200),
        FlagsCase(kind: .rom(enabled: true), flags: 0x46201),
    ]

    @Test("kernel resource flags per BAR kind", arguments: flagsCases)
    func resourceFlags(_ testCase: FlagsCase) throws {
        #expect(SysfsResource.flags(for: testCase.kind) == testCase.flags)
        // Bit 0 is what libxl reads to tell I/O from memory.
        #expect((testCase.flags & 1 == 1) == (testCase.kind == .io || testCase.kind == .rom(enabled: true)))
        // And the flags parse back to the same kind.
        let index = testCase.kind == .rom(enabled: true) || testCase.kind == .rom(enabled: false) ? 6 : 0
        var resourceLines = Array(repeating: SysfsResource.line(start: 0, end: 0, flags: 0), count: 7)
        resourceLines[index] = SysfsResource.line(start: 0xf000_0000, end: 0xf000_ffff, flags: testCase.flags)
        #expect(try SysfsResource.parse(resourceLines.joined()) == [CapturedBAR(index: index, base: 0xf000_0000, size: 0x10000, kind: testCase.kind)])
    }

    @Test func resourceLineFormat() {
        let line = SysfsResource.line(start: 0xfe00_0000, end: 0xfe01_ffff, flags: 0x40200)
        #expect(line == "0x00000000fe000000 0x00000000fe01ffff 0x0000000000040200\n")
        #expect(line.utf8.count == 57)
        #expect(SysfsResource.line(start: .max, end: .max, flags: .max).utf8.count == 57)
    }

    @Test("resource text round trip", arguments: [7, 11, 13, 17])
    func resourceRoundTrip(lineCount: Int) throws {
        let bars = [
            CapturedBAR(index: 0, base: 0xfe00_0000, size: 0x20000, kind: .memory(is64Bit: false, prefetchable: false)),
            CapturedBAR(index: 2, base: 0xe000, size: 0x20, kind: .io),
            CapturedBAR(index: 3, base: 0x38_0000_0000, size: 1 << 30, kind: .memory(is64Bit: true, prefetchable: true)),
            CapturedBAR(index: 5, base: 0, size: 0x1000, kind: .memory(is64Bit: false, prefetchable: true)),  // unassigned
            CapturedBAR(index: 6, base: 0xfe10_0000, size: 0x80000, kind: .rom(enabled: true)),
        ]
        let iovBARs = lineCount >= 13 ? [
            CapturedBAR(index: 0, base: 0xfd00_0000, size: 8 * 0x4000, kind: .memory(is64Bit: true, prefetchable: false)),
            CapturedBAR(index: 3, base: 0xfd10_0000, size: 8 * 0x4000, kind: .memory(is64Bit: true, prefetchable: false)),
        ] : []
        let text = SysfsResource.text(bars: bars, iovBARs: iovBARs, lineCount: lineCount)
        #expect(text.utf8.count == 57 * lineCount)
        let parsed = try SysfsResource(parsing: text)
        #expect(parsed.lines.count == lineCount)
        #expect(parsed.bars == bars)
        #expect(parsed.iovBARs == iovBARs)
        #expect(parsed.bridgeWindows.count == (lineCount == 11 || lineCount == 17 ? 4 : 0))
        #expect(try SysfsResource.parse(text) == bars)
        #expect(parsed.lines[1].isUnused)
        #expect(parsed.lines[3] == SysfsResource.Line(start: 0x38_0000_0000, end: 0x38_3fff_ffff, flags: 0x14220c))
    }

    static let malformedResources: [MalformedCase] = [
        MalformedCase(label: "two columns", text: "0x0 0x0 0x0\n0x0 0x0\n", line: 2),
        MalformedCase(label: "not hex", text: "0x0 0x0 0x0\n0x0 0x0 0x0\nzz 0x0 0x0\n", line: 3),
        MalformedCase(label: "end below start", text: String(repeating: "0x0 0x0 0x0\n", count: 3) + "0x2000 0x1fff 0x200\n"
                          + String(repeating: "0x0 0x0 0x0\n", count: 3), line: 4),
        MalformedCase(label: "sized without type flags", text: "0x1000 0x1fff 0x0\n" + String(repeating: "0x0 0x0 0x0\n", count: 6), line: 1),
        MalformedCase(label: "I/O ROM", text: String(repeating: "0x0 0x0 0x0\n", count: 6) + "0x1000 0x1fff 0x100\n", line: 7),
        MalformedCase(label: "only six lines", text: String(repeating: "0x0 0x0 0x0\n", count: 6), line: 7),
    ]

    @Test("malformed resource files name the line", arguments: malformedResources)
    func malformedResource(_ testCase: MalformedCase) throws {
        let error = try #require(throws: CaptureError.self) { try SysfsResource(parsing: testCase.text) }
        #expect(Fixtures.lineNumber(of: error) == testCase.line, "\(error)")
        #expect(error.description.contains("line \(testCase.line)"), "\(error)")
    }

    // MARK: Raw config and sysfs directories

    @Test func rawCapture() throws {
        let address = PCIAddress(bus: 5, slot: 0, function: 1)
        let resource = SysfsResource.text(bars: [CapturedBAR(index: 1, base: 0xf000_0000, size: 0x1000, kind: .memory(is64Bit: false, prefetchable: false))])
        let function = try SysfsCapture.readRaw(config: Fixtures.syntheticConfig(size: 4096), resourceText: resource, address: address, irq: 11, driver: "pciback")
        #expect(function == CapturedFunction(address: address, config: Fixtures.syntheticConfig(size: 4096),
                                             bars: [CapturedBAR(index: 1, base: 0xf000_0000, size: 0x1000, kind: .memory(is64Bit: false, prefetchable: false))],
                                             irq: 11, driver: "pciback"))
        #expect(try SysfsCapture.readRaw(config: Fixtures.syntheticConfig(), resourceText: nil, address: address).bars.isEmpty)
        #expect(throws: CaptureError.truncatedConfig(address: address, bytes: 64, required: 256, line: nil)) {
            try SysfsCapture.readRaw(config: Array(Fixtures.syntheticConfig()[..<64]), resourceText: nil, address: address)
        }
        #expect(throws: CaptureError.invalidConfigSize(address: address, bytes: 300)) {
            try SysfsCapture.readRaw(config: Fixtures.syntheticConfig(size: 300), resourceText: nil, address: address)
        }
    }

    @Test func sysfsDirectoryCapture() throws {
        let root = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let fm = FileManager.default
        let device = root.appendingPathComponent("0001:02:1f.3")
        try fm.createDirectory(at: device, withIntermediateDirectories: true)
        try Data(Fixtures.syntheticConfig(size: 4096)).write(to: device.appendingPathComponent("config"))
        let bars = [
            CapturedBAR(index: 0, base: 0x40_0000_0000, size: 0x80000, kind: .memory(is64Bit: true, prefetchable: false)),
            CapturedBAR(index: 6, base: 0xfeb8_0000, size: 0x40000, kind: .rom(enabled: false)),
        ]
        let iovBARs = [CapturedBAR(index: 0, base: 0x41_0000_0000, size: 0x100000, kind: .memory(is64Bit: true, prefetchable: true))]
        try SysfsResource.text(bars: bars, iovBARs: iovBARs).write(to: device.appendingPathComponent("resource"), atomically: true, encoding: .utf8)
        try "24\n".write(to: device.appendingPathComponent("irq"), atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: device.appendingPathComponent("driver").path, withDestinationPath: "../../../bus/pci/drivers/pciback")

        let function = try SysfsCapture.read(deviceDirectory: device.path + "/")
        #expect(function == CapturedFunction(address: PCIAddress(domain: 1, bus: 2, slot: 0x1f, function: 3), config: Fixtures.syntheticConfig(size: 4096),
                                             bars: bars, iovBARs: iovBARs, irq: 24, driver: "pciback"))
        #expect(try SysfsCapture.readAll(devicesDirectory: root.path) == [function])

        // Optional files may be missing; a short config is refused; a bad name is reported.
        for name in ["resource", "irq", "driver"] { try fm.removeItem(at: device.appendingPathComponent(name)) }
        let bare = try SysfsCapture.read(deviceDirectory: device.path)
        #expect(bare.bars.isEmpty && bare.irq == nil && bare.driver == nil)
        try Data(Fixtures.syntheticConfig()[..<64]).write(to: device.appendingPathComponent("config"))
        #expect(throws: CaptureError.truncatedConfig(address: bare.address, bytes: 64, required: 256, line: nil)) {
            try SysfsCapture.read(deviceDirectory: device.path)
        }
        #expect(throws: CaptureError.invalidDeviceName("not-a-device")) {
            try SysfsCapture.read(deviceDirectory: root.appendingPathComponent("not-a-device").path)
        }
        let missing = root.appendingPathComponent("0000:00:00.0").path
        #expect(throws: CaptureError.io(path: missing + "/config", errno: .noSuchFileOrDirectory)) {
            try SysfsCapture.read(deviceDirectory: missing)
        }
    }

    @Test("live sysfs devices capture, and agree with their vendor/device/irq files and the driver link",
          .enabled(if: !Fixtures.liveDeviceNames.isEmpty, "this machine has no PCI devices in /sys/bus/pci/devices"))
    func liveSysfs() throws {
        let functions = try SysfsCapture.readAll()
        #expect(functions.map(\.address.description) == Fixtures.liveDeviceNames)
        for function in functions {
            let directory = Fixtures.liveDevicesDirectory + "/" + function.address.description
            func value(_ file: String) throws -> String {
                try String(contentsOfFile: directory + "/" + file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(try value("vendor") == "0x" + String(format: "%04x", function.vendorID))
            #expect(try value("device") == "0x" + String(format: "%04x", function.deviceID))
            #expect(try UInt32(value("irq")) == function.irq)
            let link = try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/driver")
            #expect(link.map { URL(fileURLWithPath: $0).lastPathComponent } == function.driver)
            let size = try FileManager.default.attributesOfItem(atPath: directory + "/config")[.size] as? Int
            #expect(size == function.config.count)
        }
    }

    @Test("live lspci -vvv -xxxx text gives the same BARs and drivers as sysfs",
          .enabled(if: !Fixtures.liveDeviceNames.isEmpty && Fixtures.lspciPath != nil, "needs lspci and PCI devices in /sys/bus/pci/devices"))
    func liveLspciMatchesSysfs() throws {
        let sysfs = try SysfsCapture.readAll()
        let lspci = try Fixtures.runLspci(["-D", "-vvv", "-xxxx"])
        #expect(lspci.status == 0)
        let dumped = try LspciDump.parse(lspci.output)
        #expect(dumped.map(\.address) == sysfs.map(\.address))
        for (fromLspci, fromSysfs) in zip(dumped, sysfs) {
            #expect(fromLspci.bars == fromSysfs.bars, "\(fromSysfs.address)")
            #expect(fromLspci.driver == fromSysfs.driver, "\(fromSysfs.address)")
            if let irq = fromLspci.irq { #expect(irq == fromSysfs.irq) }
            #expect(fromLspci.config.count == fromSysfs.config.count)
            #expect(fromLspci.config[..<4] == fromSysfs.config[..<4])
        }
    }
}
