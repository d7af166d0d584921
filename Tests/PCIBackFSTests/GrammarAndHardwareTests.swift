import Testing

@testable import PCIBackFS

// The input grammars (spec §1.3, §1.9, §2), the show formats (§1.6, §1.9, §1.1 PAGE_SIZE), and
// the emulated hardware and PCI core underneath the filter (§5.3, §6, §9).

@Suite("grammars, show formats and hardware")
struct GrammarAndHardwareTests {}

// MARK: - §1.3 str_to_slot

extension GrammarAndHardwareTests {
    struct SlotRow: Sendable, CustomTestStringConvertible {
        var input: String
        /// (domain, bus, slot, func) with -1 for a wildcard; nil: -EINVAL.
        var parsed: (Int32, Int32, Int32, Int32)?
        var testDescription: String {
            guard let parsed else { return "\(input.debugDescription) → EINVAL" }
            return "\(input.debugDescription) → \(parsed)"
        }
    }

    static let slotRows: [SlotRow] = [
        // The six shapes.
        SlotRow(input: "0000:03:00.0", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0000:03:00.*", parsed: (0, 3, 0, -1)),
        SlotRow(input: "0000:03:*.*", parsed: (0, 3, -1, -1)),
        SlotRow(input: "03:00.0", parsed: (0, 3, 0, 0)),
        SlotRow(input: "03:00.*", parsed: (0, 3, 0, -1)),
        SlotRow(input: "03:*.*", parsed: (0, 3, -1, -1)),
        SlotRow(input: "1:2:3.4", parsed: (1, 2, 3, 4)),
        SlotRow(input: "3:0.0", parsed: (0, 3, 0, 0)),
        SlotRow(input: "FFFF:Ab:1F.7", parsed: (0xffff, 0xab, 0x1f, 7)),
        // Whitespace: before numbers (and at the ends), never before a literal.
        SlotRow(input: "00: 1f.3", parsed: (0, 0, 0x1f, 3)),
        SlotRow(input: "\t 0000:03:00.0\n", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0000:03:00.0 \n\n", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0000:03:00. 1", parsed: (0, 3, 0, 1)),
        SlotRow(input: "00 :1f.3", parsed: nil),
        SlotRow(input: "00:1f. *", parsed: nil),
        SlotRow(input: "0000:03: *.*", parsed: nil),
        // Rejected shapes and trailing junk.
        SlotRow(input: "*", parsed: nil),
        SlotRow(input: "03:*.3", parsed: nil),
        SlotRow(input: "*:00.0", parsed: nil),
        SlotRow(input: "0000:*:*.*", parsed: nil),
        SlotRow(input: "0000:03:00", parsed: nil),
        SlotRow(input: "1f.3", parsed: nil),
        SlotRow(input: "0000:00:1f.3x", parsed: nil),
        SlotRow(input: "0000:00:1f.3 foo", parsed: nil),
        SlotRow(input: "0000:03:00.0:", parsed: nil),
        SlotRow(input: "0000:03:00.0g", parsed: nil),
        SlotRow(input: "", parsed: nil),
        SlotRow(input: "\n", parsed: nil),
        // No sign.
        SlotRow(input: "-1:03:00.0", parsed: nil),
        SlotRow(input: "+3:00.0", parsed: nil),
        SlotRow(input: "03:00.-1", parsed: nil),
        // The 0x prefix: accepted before digits, skipped even with no digit after it.
        SlotRow(input: "0x0:0x3:0x0.0x0", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0X3:0x1F.0x7", parsed: (0, 3, 0x1f, 7)),
        SlotRow(input: "0000:03:00.0x", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0000:03:00.0x\n", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0x:03:00.0", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0000:03:00.1x", parsed: nil),
        SlotRow(input: "0000:03:00.0xg", parsed: nil),
        // Values are ints: 32-bit truncation, and ≥ 0x80000000 is negative.
        SlotRow(input: "ffffffff:03:00.0", parsed: (-1, 3, 0, 0)),
        SlotRow(input: "0000:03:ffffffff.0", parsed: (0, 3, -1, 0)),
        SlotRow(input: "0000:03:00.80000000", parsed: (0, 3, 0, Int32.min)),
        SlotRow(input: "0000:03:00.100000000", parsed: (0, 3, 0, 0)),
        SlotRow(input: "0000:103:00.0", parsed: (0, 0x103, 0, 0)),
        // The store sees a C string: a NUL ends the input.
        SlotRow(input: "0000:03:00.0\0junk", parsed: (0, 3, 0, 0)),
    ]

    @Test("§1.3 str_to_slot", arguments: slotRows)
    func slotGrammar(_ row: SlotRow) {
        let result = storeError { _ = try PcibackGrammar.slot(bytes(row.input)) }
        if let parsed = row.parsed {
            #expect(result == nil)
            let pattern = try? PcibackGrammar.slot(bytes(row.input))
            #expect(pattern == SlotPattern(domain: parsed.0, bus: parsed.1, slot: parsed.2, function: parsed.3))
        } else {
            #expect(result == .invalidArgument)
        }
    }

    struct SeizeRow: Sendable, CustomTestStringConvertible {
        var input: String
        var errno: Errno?
        var entries: Int
        var first: String?
        var last: String?
        var testDescription: String { input.debugDescription }
    }

    @Test("§1.4 new_slot: wildcard expansion (negative ints included) and range checks", arguments: [
        SeizeRow(input: "0000:03:ffffffff.0\n", errno: nil, entries: 32, first: "0000:03:00.0", last: "0000:03:1f.0"),
        SeizeRow(input: "0000:03:01.80000000\n", errno: nil, entries: 8, first: "0000:03:01.0", last: "0000:03:01.7"),
        SeizeRow(input: "ffff:ff:1f.7\n", errno: nil, entries: 1, first: "ffff:ff:1f.7", last: "ffff:ff:1f.7"),
        SeizeRow(input: "0000:03:00.100000000\n", errno: nil, entries: 1, first: "0000:03:00.0", last: "0000:03:00.0"),
        SeizeRow(input: "ffffffff:03:00.0\n", errno: .invalidArgument, entries: 0),
        SeizeRow(input: "10000:03:*.*\n", errno: .invalidArgument, entries: 0),
        SeizeRow(input: "0000:03:ffffffff.8\n", errno: .invalidArgument, entries: 0),
        SeizeRow(input: "0000:103:00.0\n", errno: .invalidArgument, entries: 0),
    ])
    func newSlotExpansion(_ row: SeizeRow) throws {
        var dom0 = try FixtureA.makeUnboundDom0()
        #expect(storeError { try dom0.newSlot(input: bytes(row.input)) } == row.errno)
        let lines = shown(dom0.slotsText()).split(separator: "\n").map(String.init)
        #expect(lines.count == row.entries)
        #expect(lines.first == row.first)
        #expect(lines.last == row.last)
    }

    @Test("§1.5 remove_slot: negative slot or func match anything; domain and bus must be equal")
    func removeSlotWildcards() throws {
        var dom0 = try FixtureA.makeUnboundDom0()
        try dom0.newSlot(input: bytes("0000:03:00.*\n"))
        try dom0.newSlot(input: bytes("0000:04:00.0\n"))
        #expect(storeError { try dom0.removeSlot(input: bytes("0001:03:*.*\n")) } == .noSuchFileOrDirectory)
        #expect(storeError { try dom0.removeSlot(input: bytes("0000:03:00.80000000\n")) } == nil)
        #expect(shown(dom0.slotsText()) == "0000:04:00.0\n")
        #expect(storeError { try dom0.removeSlot(input: bytes("0000:04:ffffffff.0\n")) } == nil)
        #expect(shown(dom0.slotsText()) == "")
    }
}

// MARK: - §1.9 quirks grammar and checks order

extension GrammarAndHardwareTests {
    struct QuirkGrammarRow: Sendable, CustomTestStringConvertible {
        var input: String
        /// domain, bus, slot, func, reg, size, mask; nil: -EINVAL.
        var parsed: [Int32]?
        var testDescription: String { input.debugDescription }
    }

    @Test("§1.9 str_to_quirk", arguments: [
        QuirkGrammarRow(input: "0000:03:00.0-a8:2:ffff", parsed: [0, 3, 0, 0, 0xa8, 2, 0xffff]),
        QuirkGrammarRow(input: "03:00.0-a8:2:ffff\n", parsed: [0, 3, 0, 0, 0xa8, 2, 0xffff]),
        QuirkGrammarRow(input: "00:19.0-E0:2:FF", parsed: [0, 0, 0x19, 0, 0xe0, 2, 0xff]),
        QuirkGrammarRow(input: " 03:00.0-a8:2:ffff \n", parsed: [0, 3, 0, 0, 0xa8, 2, 0xffff]),
        QuirkGrammarRow(input: "03:00.0- e0: 2: 0", parsed: [0, 3, 0, 0, 0xe0, 2, 0]),
        QuirkGrammarRow(input: "03:00.0-0xe0:0x2:0x0", parsed: [0, 3, 0, 0, 0xe0, 2, 0]),
        QuirkGrammarRow(input: "03:00.0-e0:ffffffff:0", parsed: [0, 3, 0, 0, 0xe0, -1, 0]),
        QuirkGrammarRow(input: "03:00.0 -e0:2:0", parsed: nil),
        QuirkGrammarRow(input: "03:00.*-e0:2:0", parsed: nil),
        QuirkGrammarRow(input: "03:*.*-e0:2:0", parsed: nil),
        QuirkGrammarRow(input: "03:00.0-e0:2", parsed: nil),
        QuirkGrammarRow(input: "03:00.0-e0:2:0 x", parsed: nil),
        QuirkGrammarRow(input: "03:00.0", parsed: nil),
        QuirkGrammarRow(input: "", parsed: nil),
    ])
    func quirkGrammar(_ row: QuirkGrammarRow) {
        let result = storeError { _ = try PcibackGrammar.quirk(bytes(row.input)) }
        guard let parsed = row.parsed else {
            #expect(result == .invalidArgument)
            return
        }
        #expect(result == nil)
        guard let request = try? PcibackGrammar.quirk(bytes(row.input)) else { return }
        #expect([request.slot.domain, request.slot.bus, request.slot.slot, request.slot.function, request.register,
                 request.size, request.mask] == parsed)
    }

    struct QuirkCheckRow: Sendable, CustomTestStringConvertible {
        var input: String
        var errno: Errno?
        /// The field that must now exist (offset, size, mask); nil: none added.
        var added: (Int, Int, UInt32)?
        var why: String
        var testDescription: String { "\(input) (\(why))" }
    }

    static let quirkCheckRows: [QuirkCheckRow] = [
        // 1. register, 2. mask width: both before the device lookup.
        QuirkCheckRow(input: "04:00.0-1000:4:0", errno: .invalidArgument, why: "register checked before the device"),
        QuirkCheckRow(input: "04:00.0-e0:1:100", errno: .invalidArgument, why: "mask checked before the device"),
        QuirkCheckRow(input: "04:00.0-e0:0:1", errno: .invalidArgument, why: "size 0: any mask is too wide"),
        QuirkCheckRow(input: "03:00.0-e0:2:10000", errno: .invalidArgument, why: "mask wider than 2 bytes"),
        QuirkCheckRow(input: "03:00.0-e0:1:ffffffff", errno: .invalidArgument, why: "negative mask, size 1"),
        // 3. device, before 4. size.
        QuirkCheckRow(input: "04:00.0-e0:3:0", errno: .noSuchDevice, why: "device checked before the size"),
        QuirkCheckRow(input: "04:00.0-e0:0:0", errno: .noSuchDevice, why: "size 0 with mask 0 reaches the lookup"),
        QuirkCheckRow(input: "04:00.0-e0:ffffffff:0", errno: .noSuchDevice, why: "huge size skips the mask check"),
        QuirkCheckRow(input: "00:1c.0-e0:2:0", errno: .noSuchDevice, why: "exists, but not bound to pciback"),
        QuirkCheckRow(input: "0001:03:00.0-e0:2:0", errno: .noSuchDevice, why: "domain must match"),
        QuirkCheckRow(input: "03:00.0-e0:0:0", errno: .invalidArgument, why: "size 0"),
        QuirkCheckRow(input: "03:00.0-e0:3:ffffff", errno: .invalidArgument, why: "size 3"),
        QuirkCheckRow(input: "03:00.0-e0:5:0", errno: .invalidArgument, why: "size 5"),
        QuirkCheckRow(input: "03:00.0-e0:ffffffff:0", errno: .invalidArgument, why: "huge size"),
        // Accepted.
        QuirkCheckRow(input: "03:00.0-e0:2:ffff", errno: nil, added: (0xe0, 2, 0xffff), why: "plain"),
        QuirkCheckRow(input: "0000:03:00.0-e0:1:ff", errno: nil, added: (0xe0, 1, 0xff), why: "with domain"),
        QuirkCheckRow(input: "03:00.0-e1:2:0", errno: nil, added: (0xe1, 2, 0), why: "need not be aligned"),
        QuirkCheckRow(input: "03:00.0-12:2:0", errno: nil, added: (0x12, 2, 0), why: "overlap at another start is fine"),
        QuirkCheckRow(input: "03:00.0-fff:1:ff", errno: nil, added: (0xfff, 1, 0xff), why: "register 0xfff"),
        QuirkCheckRow(input: "03:00.0-e0:4:ffffffff", errno: nil, added: (0xe0, 4, 0xffff_ffff), why: "no mask check at 4"),
        // pcistub_reg_add takes REG unsigned: 0x80000000 and up fail "REG > 0xfff" before the lookup.
        QuirkCheckRow(input: "04:00.0-80000000:4:0", errno: .invalidArgument, why: "huge REG fails before the lookup"),
        QuirkCheckRow(input: "03:00.0-ffffffff:1:0", errno: .invalidArgument, why: "REG 0xffffffff is above 0xfff"),
        QuirkCheckRow(input: "03:00.0-42:2:ffff", errno: nil, added: nil, why: "PMC field starts there: success, nothing"),
    ]

    @Test("§1.9 quirks store: checks in the kernel's order", arguments: quirkCheckRows)
    func quirkChecks(_ row: QuirkCheckRow) throws {
        var fixture = try FixtureA()
        let before = fixture.data.fields
        #expect(storeError { try fixture.dom0.addQuirk(input: bytes(row.input + "\n")) } == row.errno)
        if let (offset, size, mask) = row.added {
            #expect(fixture.data.fields == before + [ConfigField(offset: offset, size: size, mask: mask, kind: .quirk)])
        } else {
            #expect(fixture.data.fields == before)
        }
    }

    @Test("§1.9 REG is unsigned: 0xffffffff is refused and nothing is listed")
    func hugeQuirkRegister() throws {
        var fixture = try FixtureA()
        let before = shown(fixture.dom0.quirksText())
        #expect(storeError { try fixture.dom0.addQuirk(input: bytes("03:00.0-ffffffff:1:0\n")) } == .invalidArgument)
        #expect(shown(fixture.dom0.quirksText()) == before)
        #expect(fixture.read(-1, size: 1).err == OpError.invalid, "a negative offset goes to the accessor")
    }

    @Test("§7 a quirk's mask is never enforced; a partial write is read-modify-write against hardware")
    func quirkPassThrough() throws {
        var fixture = try FixtureA()
        let devctl = FixtureA.pcie + PCIeRegister.deviceControl  // 0xa8, hardware 0x2810
        try fixture.dom0.addQuirk(input: bytes("03:00.0-a8:2:1\n"))
        #expect(fixture.write(devctl + 1, size: 1, 0x20) == 0)
        #expect(fixture.hw(devctl, 2) == 0x2010)
        #expect(fixture.read(devctl, size: 2) == (0, 0x2010))
    }
}

// MARK: - §2 hide

extension GrammarAndHardwareTests {
    struct HideRow: Sendable, CustomTestStringConvertible {
        var parameter: String
        /// The parsed groups, or the rest of the string at the error.
        var result: Result<[SlotPattern], PcibackGrammar.HideError>
        var testDescription: String { parameter.debugDescription }
    }

    static func slot(_ domain: Int32, _ bus: Int32, _ slot: Int32, _ function: Int32) -> SlotPattern {
        SlotPattern(domain: domain, bus: bus, slot: slot, function: function)
    }

    static func hideError(_ rest: String) -> Result<[SlotPattern], PcibackGrammar.HideError> {
        .failure(PcibackGrammar.HideError(rest: rest, errno: .invalidArgument))
    }

    static let hideRows: [HideRow] = [
        HideRow(parameter: "", result: .success([])),
        HideRow(parameter: "(0000:03:00.0)", result: .success([slot(0, 3, 0, 0)])),
        HideRow(parameter: "(03:00.0)(0000:04:00.1)", result: .success([slot(0, 3, 0, 0), slot(0, 4, 0, 1)])),
        HideRow(parameter: " (03:00.0)  (04:*.*) ", result: .success([slot(0, 3, 0, 0), slot(0, 4, -1, -1)])),
        HideRow(parameter: "(0000:03:00.*)(0000:05:*.*)", result: .success([slot(0, 3, 0, -1), slot(0, 5, -1, -1)])),
        HideRow(parameter: "(03:00.*)", result: .success([slot(0, 3, 0, -1)])),
        HideRow(parameter: "( 03: 00. 1)", result: .success([slot(0, 3, 0, 1)])),
        HideRow(parameter: "(03:00.0),(04:00.0)", result: hideError(",(04:00.0)")),
        HideRow(parameter: "03:00.0", result: hideError("03:00.0")),
        HideRow(parameter: "(03:00.0", result: hideError("(03:00.0")),
        HideRow(parameter: "(03:00.0) junk", result: hideError("junk")),
        HideRow(parameter: "(03:*.1)", result: hideError("(03:*.1)")),
        HideRow(parameter: "(*)", result: hideError("(*)")),
        HideRow(parameter: "   ", result: hideError("   ")),
    ]

    @Test("§2 hide grammar", arguments: hideRows)
    func hideGrammar(_ row: HideRow) {
        #expect(PcibackGrammar.hide(row.parameter) == row.result)
    }

    @Test("§2 a hide parse error or range error fails the driver's init; a good one seizes at boot")
    func hideAtBoot() throws {
        // Init fails: pciback does not register (HideAndDumpsTests has the cases); strictHide throws.
        #expect(try Dom0(machine: FixtureA.makeMachine(), hide: "(03:00.0),(04:00.0)").driver(named: PCIDriver.pcibackName) == nil)
        #expect(storeError { _ = try Dom0(machine: FixtureA.makeMachine(), hide: "(03:00.0),(04:00.0)", strictHide: true) }
                == .invalidArgument)
        #expect(storeError { _ = try Dom0(machine: FixtureA.makeMachine(), hide: "(0000:100:00.0)", strictHide: true) }
                == .invalidArgument)

        let dom0 = try Dom0(machine: FixtureA.makeMachine(), hide: "(0000:03:00.0)")
        #expect(dom0.isBoundToPciback(FixtureA.host))
        #expect(shown(dom0.slotsText()) == "0000:03:00.0\n")
        #expect(dom0.hideParameter == "(0000:03:00.0)")

        // Hiding a bridge seizes what is behind it too; boot-time seizes are appended (§3.4).
        let bridgeHidden = try Dom0(machine: FixtureA.makeMachine(), hide: "(00:1c.0)")
        #expect(bridgeHidden.isBoundToPciback(FixtureA.rootPort))
        #expect(bridgeHidden.isBoundToPciback(FixtureA.host))
        #expect(shown(bridgeHidden.slotsText()) == "0000:00:1c.0\n")
        #expect(shown(bridgeHidden.irqHandlersText()) == "0000:00:1c.0:off:not acking:0\n0000:03:00.0:off:not acking:0\n")
    }
}

// MARK: - Show formats and PAGE_SIZE (§1.1, §1.6, §1.9, §3.4)

extension GrammarAndHardwareTests {
    static func slotLine(bus: Int, slot: Int, function: Int) -> String {
        "0000:" + hex(bus, width: 2) + ":" + hex(slot, width: 2) + "." + String(function) + "\n"
    }

    @Test("§1.1 a seize list longer than a page shows exactly 4095 bytes")
    func slotsTruncation() throws {
        var dom0 = try FixtureA.makeUnboundDom0()
        try dom0.newSlot(input: bytes("0000:05:*.*\n"))
        #expect(dom0.slotsText().count == 256 * 13)
        try dom0.newSlot(input: bytes("0000:06:*.*\n"))
        var full = ""
        for bus in [5, 6] {
            for slot in 0..<32 {
                for function in 0..<8 { full += Self.slotLine(bus: bus, slot: slot, function: function) }
            }
        }
        #expect(full.utf8.count == 512 * 13)
        let output = dom0.slotsText()
        #expect(output.count == 4095)
        #expect(output == Array(full.utf8.prefix(4095)))
        #expect(shown(output).hasSuffix("0000:06:07.2\n"), "4095 = 315 lines of 13: the next line never starts")
    }

    @Test("§1.9 quirks is cut at 4095 bytes too, in the middle of a field line")
    func quirksTruncation() throws {
        var fixture = try FixtureA()
        var full = PcibackSpecTests.QuirkCases.builtInFields
        for register in stride(from: 0x100, to: 0x100 + 4 * 200, by: 4) {
            try fixture.dom0.addQuirk(input: bytes("03:00.0-\(String(register, radix: 16)):4:0\n"))
            full += "\t\t" + hex(register, width: 8) + ":4:00000000\n"
        }
        #expect(full.utf8.count > 4096)
        let output = fixture.dom0.quirksText()
        #expect(output.count == 4095)
        #expect(output == Array(full.utf8.prefix(4095)))
        #expect(output.last != UInt8(ascii: "\n"))
    }

    @Test("§1.9 / §3.4 irq_handlers and permissive list the newest runtime bind first; bridges are listed too")
    func deviceListOrder() throws {
        var fixture = try FixtureA()
        try fixture.dom0.unbind(driver: "pcieport", input: bytes("0000:00:1c.0\n"))
        try fixture.dom0.newSlot(input: bytes("0000:00:1c.0\n"))
        try fixture.dom0.bind(driver: PCIDriver.pcibackName, input: bytes("0000:00:1c.0\n"))
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:00:1c.0:off:not acking:0\n0000:03:00.0:off:not acking:0\n")
        try fixture.dom0.setPermissive(input: bytes("0000:03:00.0\n"))
        try fixture.dom0.setPermissive(input: bytes("0000:00:1c.0\n"))
        #expect(shown(fixture.dom0.permissiveText()) == "0000:00:1c.0\n0000:03:00.0\n")
        // The quirks list keeps initialisation order, and prints bus:slot.func only.
        let quirks = shown(fixture.dom0.quirksText())
        let headers = quirks.split(separator: "\n").filter { !$0.hasPrefix("\t") }
        #expect(headers == ["03:00.0", "00:1c.0"])
        #expect(quirks.contains("00:1c.0\n\t8086:3a40:0000:0000\n\t\t00000000:2:00000000\n"))
        // Type 1: BAR0, BAR1, then the ROM at 0x38.
        #expect(quirks.contains("\t\t00000010:4:00000000\n\t\t00000014:4:00000000\n\t\t00000038:4:00000000\n"))
    }

    @Test("§1.9 irq_handlers shows the handled count in decimal")
    func irqHandlersCount() throws {
        var fixture = try FixtureA()
        fixture.dom0.deviceData[FixtureA.host]!.handledInterrupts = 1234
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:off:not acking:1234\n")
    }
}

// MARK: - Hardware: register semantics (the layer below the filter)

extension GrammarAndHardwareTests {
    @Test("status bits are write-1-to-clear; CAP_LIST is read-only")
    func statusRW1C() {
        let device = FixtureA.makeDevice()
        #expect(device.config.read(PCIRegister.status, width: 2) == 0x0010)
        device.config.store(PCIRegister.status, width: 2, value: 0xf910)  // latched errors
        device.hardwareWrite(PCIRegister.status, width: 2, value: 0x0000)
        #expect(device.config.read(PCIRegister.status, width: 2) == 0xf910, "writing 0 leaves them")
        device.hardwareWrite(PCIRegister.status, width: 2, value: 0x8000)
        #expect(device.config.read(PCIRegister.status, width: 2) == 0x7910, "only the bit written as 1 clears")
        device.hardwareWrite(PCIRegister.status, width: 2, value: 0xffff)
        #expect(device.config.read(PCIRegister.status, width: 2) == 0x0010)
    }

    struct HardwareSizing: Sendable, CustomTestStringConvertible {
        var name: String
        var offset: Int
        var write: UInt32
        var readBack: UInt32
        var testDescription: String { "\(name): 0x\(String(write, radix: 16)) → 0x\(String(readBack, radix: 16))" }
    }

    @Test("BAR sizing on the hardware itself", arguments: [
        HardwareSizing(name: "BAR0 mem32 128K", offset: 0x10, write: 0xffff_ffff, readBack: 0xfffe_0000),
        HardwareSizing(name: "BAR1 absent", offset: 0x14, write: 0xffff_ffff, readBack: 0),
        HardwareSizing(name: "BAR2 I/O 32B (16 decode bits)", offset: 0x18, write: 0xffff_ffff, readBack: 0x0000_ffe1),
        HardwareSizing(name: "BAR3 mem32 16K", offset: 0x1c, write: 0xffff_ffff, readBack: 0xffff_c000),
        HardwareSizing(name: "BAR4 mem64 pref 256M, low", offset: 0x20, write: 0xffff_ffff, readBack: 0xf000_000c),
        HardwareSizing(name: "BAR5 mem64 pref 256M, high", offset: 0x24, write: 0xffff_ffff, readBack: 0xffff_ffff),
        HardwareSizing(name: "ROM 256K, enable bit writable", offset: 0x30, write: 0xffff_ffff, readBack: 0xfffc_0001),
        HardwareSizing(name: "ROM 256K, sizing without enable", offset: 0x30, write: 0xffff_f800, readBack: 0xfffc_0000),
        HardwareSizing(name: "ROM enable", offset: 0x30, write: 0xfeb8_0001, readBack: 0xfeb8_0001),
        HardwareSizing(name: "BAR0 moved", offset: 0x10, write: 0x1234_5678, readBack: 0x1234_0000),
        HardwareSizing(name: "BAR2 moved", offset: 0x18, write: 0x0000_c0ff, readBack: 0x0000_c0e1),
    ])
    func hardwareBARSizing(_ row: HardwareSizing) {
        let device = FixtureA.makeDevice()
        device.hardwareWrite(row.offset, width: 4, value: row.write)
        #expect(device.config.read(row.offset, width: 4) == row.readBack)
    }

    @Test("BARs as firmware left them")
    func firmwareBARs() {
        let device = FixtureA.makeDevice()
        let expected: [(Int, UInt32)] = [
            (0x10, 0xfebc_0000), (0x14, 0), (0x18, 0x0000_e001), (0x1c, 0xfebe_0000), (0x20, 0x8000_000c),
            (0x24, 0x0000_0003), (0x30, 0xfeb8_0000),
        ]
        for (offset, value) in expected {
            #expect(device.config.read(offset, width: 4) == value, "0x\(String(offset, radix: 16))")
        }
    }

    @Test("capability headers (ID, next) are read-only in hardware and through pciback", arguments: [
        (FixtureA.pm, UInt32(0x5001)), (FixtureA.msi, UInt32(0x7005)), (FixtureA.msix, UInt32(0xa011)),
        (FixtureA.pcie, UInt32(0x0010)),
    ])
    func capabilityHeaders(_ offset: Int, _ header: UInt32) throws {
        var fixture = try FixtureA(globalPermissive: true)
        #expect(fixture.hw(offset, 2) == header)
        fixture.hwWrite(offset, 2, 0xffff)
        #expect(fixture.hw(offset, 2) == header)
        #expect(fixture.write(offset, size: 2, 0x0000) == 0)
        #expect(fixture.hw(offset, 2) == header)
        #expect(fixture.read(offset, size: 2) == (0, header))
        #expect(fixture.hw(PCIRegister.capabilityList, 1) == 0x40)
    }

    @Test("MSI Multiple Message Enable is clamped to Multiple Message Capable", arguments: [
        (1, UInt16(0x0070), UInt16(0x0000)), (4, 0x0070, 0x0020), (4, 0x0010, 0x0010), (32, 0x0070, 0x0050),
    ])
    func msiQueueSizeClamp(_ vectors: Int, _ written: UInt16, _ enabled: UInt16) {
        var builder = DeviceBuilder(address: FixtureA.host, express: true,
                                    identity: .init(vendor: 0x8086, device: 0x10d3, classCode: 0x020000))
        let msi = builder.addMSI(vectors: vectors, is64Bit: true, perVectorMasking: false)
        let device = builder.build()
        device.hardwareWrite(msi + MSIRegister.flags, width: 2, value: UInt32(written | MSIRegister.enable))
        let flags = UInt16(device.config.read(msi + MSIRegister.flags, width: 2))
        #expect(flags & MSIRegister.multipleMessageEnable == enabled)
        #expect(flags & MSIRegister.enable != 0)
        #expect(flags & MSIRegister.multipleMessageCapable == UInt16(vectors.trailingZeroBitCount) << 1)
    }

    @Test("a PMCSR write of an unsupported D1/D2 is ignored by hardware; D3hot is taken", arguments: [
        (UInt16(1), UInt16(0)), (2, 0), (3, 3),
    ])
    func powerStatesInHardware(_ state: UInt16, _ result: UInt16) {
        let device = FixtureA.makeDevice()
        device.hardwareWrite(FixtureA.pmcsr, width: 2, value: UInt32(0x0008 | state))
        #expect(device.powerState == UInt8(result))
        #expect(device.config.read(FixtureA.pmcsr, width: 2) == UInt32(0x0008 | result))
    }

    @Test("a function with D1 and D2 takes them")
    func supportedLowPowerStates() throws {
        var builder = DeviceBuilder(address: FixtureA.host, express: true,
                                    identity: .init(vendor: 0x8086, device: 0x10d3, classCode: 0x020000))
        builder.addPowerManagement(d1: true, d2: true)
        let device = builder.build()
        try device.setPowerState(1)
        #expect(device.powerState == 1)
        try device.setPowerState(2)
        #expect(device.powerState == 2)
        let fixture = FixtureA.makeDevice()
        #expect(storeError { try fixture.setPowerState(1) } != nil)
        #expect(storeError { try fixture.setPowerState(2) } != nil)
        #expect(fixture.powerState == 0)
    }

    @Test("FLR resets every writable and RW1C bit to its reset value and keeps read-only ones")
    func functionLevelReset() {
        let device = FixtureA.makeDevice()
        let devctl = FixtureA.pcie + PCIeRegister.deviceControl
        let linkStatus = FixtureA.pcie + PCIeRegister.linkStatus
        // Software changes ...
        device.hardwareWrite(PCIRegister.command, width: 2, value: 0x0507)
        device.hardwareWrite(PCIRegister.cacheLineSize, width: 1, value: 0x20)
        device.hardwareWrite(0x10, width: 4, value: 0x1234_0000)
        device.hardwareWrite(FixtureA.msiFlags, width: 2, value: 0x0081)
        device.hardwareWrite(FixtureA.msixFlags, width: 2, value: 0xc004)
        device.hardwareWrite(FixtureA.pmcsr, width: 2, value: 0x0203)
        device.hardwareWrite(devctl, width: 2, value: 0x0010)
        // ... and hardware-side state: latched status bits, a read-only link status.
        device.config.store(PCIRegister.status, width: 2, value: 0x8010)
        device.config.store(linkStatus, width: 2, value: 0x1041)

        device.hardwareWrite(devctl, width: 2, value: UInt32(PCIeRegister.devCtlInitiateFLR))

        #expect(device.command == 0x0000)
        #expect(device.config.read(PCIRegister.cacheLineSize, width: 1) == 0)
        #expect(device.config.read(0x10, width: 4) == 0x0000_0000)
        #expect(device.config.read(0x20, width: 4) == 0x0000_000c, "type bits are read-only")
        #expect(device.config.read(FixtureA.msiFlags, width: 2) == 0x0080)
        #expect(device.config.read(FixtureA.msixFlags, width: 2) == 0x0004)
        #expect(device.config.read(FixtureA.pmcsr, width: 2) == 0x0008, "No_Soft_Reset is read-only")
        #expect(device.config.read(devctl, width: 2) == 0x2810, "reset value; Initiate FLR reads 0")
        #expect(device.config.read(PCIRegister.status, width: 2) == 0x0010)
        #expect(device.config.read(linkStatus, width: 2) == 0x1041)
        #expect(device.config.read(0x00, width: 4) == 0x10d3_8086)
        #expect(device.config.read(PCIRegister.bist, width: 1) == 0x80)
        #expect(device.config.read(FixtureA.pm + PMRegister.capabilities, width: 2) == 0xc803)
        #expect(device.config.read(PCIRegister.interruptPin, width: 1) == 1)
    }

    @Test("BIST: Start completes at once; pciback passes only a start or an unchanged value")
    func bist() throws {
        var fixture = try FixtureA()
        #expect(fixture.hw(PCIRegister.bist, 1) == 0x80)
        #expect(fixture.read(PCIRegister.bist, size: 1) == (0, 0x80))
        #expect(fixture.write(PCIRegister.bist, size: 1, 0x40) == 0)
        #expect(fixture.hw(PCIRegister.bist, 1) == 0x80, "completed, code 0")
        #expect(fixture.write(PCIRegister.bist, size: 1, 0x00) == 0)  // ignored: bit 7 differs
        #expect(fixture.write(PCIRegister.bist, size: 1, 0xc0) == 0)  // same as hw except 0x40: written
        #expect(fixture.hw(PCIRegister.bist, 1) == 0x80)
        // On hardware whose capable bit is writable the rule becomes visible.
        fixture.device.config.setWritable(PCIRegister.bist, width: 1, mask: 0xc0)
        #expect(fixture.write(PCIRegister.bist, size: 1, 0x00) == 0)
        #expect(fixture.hw(PCIRegister.bist, 1) == 0x80, "a change outside 0x40 is dropped")
        #expect(fixture.write(PCIRegister.bist, size: 1, 0x40) == 0)
        #expect(fixture.hw(PCIRegister.bist, 1) == 0x00, "0x40 exactly is written, clearing bit 7")
    }
}

// MARK: - §6.1 power management through pciback

extension GrammarAndHardwareTests {
    @Test("PMC hides PME support; bind clears PME_ENABLE")
    func pmCapabilities() throws {
        let fixture0 = try FixtureA(prepare: { device in
            device.hardwareWrite(FixtureA.pmcsr, width: 2, value: 0x0108)
            #expect(device.config.read(FixtureA.pmcsr, width: 2) == 0x0108)
        })
        var fixture = fixture0
        #expect(fixture.hw(FixtureA.pmcsr, 2) & UInt32(PMRegister.pmeEnable) == 0)
        #expect(fixture.read(FixtureA.pm + PMRegister.capabilities, size: 2) == (0, 0x0003))
        #expect(fixture.hw(FixtureA.pm + PMRegister.capabilities, 2) == 0xc803)
        #expect(fixture.write(FixtureA.pm + PMRegister.capabilities, size: 2, 0x0000) == 0)
    }

    @Test("PMCSR: D-states through the PCI core, D1 refused with -3 after the OK bits were written")
    func pmControl() throws {
        var fixture = try FixtureA()
        #expect(fixture.write(FixtureA.pmcsr, size: 2, 0x000b) == 0)
        #expect(fixture.device.powerState == 3)
        #expect(fixture.write(FixtureA.pmcsr, size: 2, 0x0008) == 0)
        #expect(fixture.device.powerState == 0)
        // DATA_SEL 1 and D1: the OK bits land, the state change is refused.
        #expect(fixture.write(FixtureA.pmcsr, size: 2, 0x0209) == OpError.accessDenied)
        #expect(fixture.hw(FixtureA.pmcsr, 2) == 0x0208)
        // PME_ENABLE cannot be set by the guest.
        #expect(fixture.write(FixtureA.pmcsr, size: 2, 0x0108) == 0)
        #expect(fixture.hw(FixtureA.pmcsr, 2) & UInt32(PMRegister.pmeEnable) == 0)
    }

    @Test("PMCSR: PME_Status is cleared by a 1 only when the OK bits differ")
    func pmeStatus() throws {
        var fixture = try FixtureA()
        fixture.device.config.store(FixtureA.pmcsr, width: 2, value: 0x8008)  // PME asserted
        #expect(fixture.write(FixtureA.pmcsr, size: 2, 0x8008) == 0)
        #expect(fixture.hw(FixtureA.pmcsr, 2) == 0x8008, "masked values equal: nothing written")
        #expect(fixture.write(FixtureA.pmcsr, size: 2, 0x8208) == 0)
        #expect(fixture.hw(FixtureA.pmcsr, 2) == 0x0208, "written: PME_Status cleared, DATA_SEL set")
    }
}

// MARK: - §9 the PCI core's side effects

extension GrammarAndHardwareTests {
    static func simpleDevice(pin: UInt8, bars: [(Int, BARDescriptor.Kind, UInt64)], rom: Bool = false) -> EmulatedDevice {
        var builder = DeviceBuilder(address: FixtureA.host, express: true,
                                    identity: .init(vendor: 0x8086, device: 0x10d3, classCode: 0x020000, interruptPin: pin))
        for (index, kind, address) in bars { builder.setBAR(index, kind, size: 4096, address: address) }
        if rom { builder.setROM(size: 64 * 1024, address: 0xfe00_0000) }
        builder.addPowerManagement()
        return builder.build()
    }

    @Test("pci_enable_device: decode from the BAR types, INTx unmasked, D0, counted")
    func enableDevice() throws {
        let device = FixtureA.makeDevice()
        device.hardwareWrite(PCIRegister.command, width: 2, value: 0x0400)
        device.hardwareWrite(FixtureA.pmcsr, width: 2, value: 0x000b)
        try device.enableDevice()
        #expect(device.command == 0x0003)
        #expect(device.powerState == 0)
        #expect(device.enableCount == 1)
        // Nested enable: no-op on the hardware.
        device.hardwareWrite(PCIRegister.command, width: 2, value: 0x0404)
        try device.enableDevice()
        #expect(device.command == 0x0404)
        #expect(device.enableCount == 2)
        // Disable: MASTER goes only when the count reaches 0; IO/MEMORY stay.
        device.hardwareWrite(PCIRegister.command, width: 2, value: 0x0007)
        device.setBusMaster(true)
        device.disableDevice()
        #expect(device.command == 0x0007)
        device.disableDevice()
        #expect(device.command == 0x0003)
        #expect(!device.isBusmaster)
        #expect(!device.isEnabled)
    }

    struct EnableRow: Sendable, CustomTestStringConvertible {
        var name: String
        var pin: UInt8
        var bars: [(Int, BARDescriptor.Kind, UInt64)]
        var rom = false
        var kernelMSI = false
        var result: Result<UInt16, Errno>
        var testDescription: String { name }
    }

    @Test("pci_enable_device per function", arguments: [
        EnableRow(name: "memory BARs only", pin: 1, bars: [(0, .memory32, 0xfe00_0000)], result: .success(0x0002)),
        EnableRow(name: "I/O BAR only", pin: 1, bars: [(0, .io, 0xd000)], result: .success(0x0001)),
        EnableRow(name: "ROM only counts for nothing", pin: 1, bars: [], rom: true, result: .success(0x0000)),
        EnableRow(name: "no pin: INTX_DISABLE stays", pin: 0, bars: [(0, .memory64, 0xfe00_0000)], result: .success(0x0402)),
        EnableRow(name: "kernel MSI on: INTX_DISABLE stays", pin: 1, bars: [(0, .memory32, 0xfe00_0000)], kernelMSI: true,
                  result: .success(0x0402)),
        EnableRow(name: "unassigned BAR", pin: 1, bars: [(0, .memory32, 0xfe00_0000), (1, .memory32, 0)],
                  result: .failure(.invalidArgument)),
    ])
    func enableDeviceVariants(_ row: EnableRow) {
        let device = Self.simpleDevice(pin: row.pin, bars: row.bars, rom: row.rom)
        device.hardwareWrite(PCIRegister.command, width: 2, value: 0x0400)
        device.kernelMSIEnabled = row.kernelMSI
        let error = storeError { try device.enableDevice() }
        switch row.result {
        case .success(let command):
            #expect(error == nil)
            #expect(device.command == command)
            #expect(device.isEnabled)
        case .failure(let errno):
            #expect(error == errno)
            #expect(device.command == 0x0400)
            #expect(!device.isEnabled)
        }
    }

    @Test("§9 pci_enable_device enables the upstream bridge first: enable and bus mastering")
    func enableUpstreamBridge() throws {
        var fixture = try FixtureA()
        let rootPort = try #require(fixture.dom0.device(FixtureA.rootPort))
        #expect(fixture.dom0.machine.parentBridge(of: FixtureA.host) == FixtureA.rootPort)
        try fixture.dom0.unbind(driver: "pcieport", input: bytes("0000:00:1c.0\n"))
        #expect(!rootPort.isEnabled)
        #expect(!rootPort.isBusmaster)
        #expect(rootPort.command & PCICommand.master == 0)
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == 0)
        #expect(rootPort.isEnabled)
        #expect(rootPort.isBusmaster)
        #expect(rootPort.command & PCICommand.master != 0)
        #expect(rootPort.enableCount == 1)

        // An enabled bridge that lost bus mastering only gets it back.
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0000) == 0)
        rootPort.setBusMaster(false)
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == 0)
        #expect(rootPort.isBusmaster)
        #expect(rootPort.enableCount == 1)
        // The bridge stays enabled when the device is disabled.
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0000) == 0)
        #expect(rootPort.isEnabled)
    }

    @Test("§9 a failing pci_enable_device returns -22 to the guest before master, MWI, INTx and the shadow")
    func enableFailureThroughPciback() throws {
        var fixture = try FixtureA()
        try fixture.dom0.setAllowInterruptControl(input: bytes("03:00.0\n"))
        fixture.device.faults.enableFails = .once
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0417) == OpError.invalid)
        #expect(!fixture.device.isEnabled)
        #expect(!fixture.device.isBusmaster)
        #expect(fixture.hwCommand == 0x0003, "no MASTER, no INTX_DISABLE")
        #expect(fixture.data.commandShadow == 0x0000)
        #expect(fixture.guestCommand() == 0x0000)
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:off:not acking:0\n", "no ISR after a failed op")
        // The next attempt succeeds.
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0407) == 0)
        #expect(fixture.hwCommand == 0x0407)
    }

    @Test("§5.2 step 3: MWI goes through pci_set_mwi; a failure drops INVALIDATE from the shadow", arguments: [true, false])
    func memoryWriteInvalidate(_ cacheLineWritable: Bool) throws {
        var fixture = try FixtureA(express: false)
        fixture.hwWrite(PCIRegister.cacheLineSize, 1, 0)
        if !cacheLineWritable { fixture.device.config.setReadOnly(PCIRegister.cacheLineSize..<PCIRegister.cacheLineSize + 1) }
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0017) == 0)
        if cacheLineWritable {
            #expect(fixture.hw(PCIRegister.cacheLineSize, 1) == 0x10)
            #expect(fixture.hwCommand & PCICommand.invalidate != 0)
            #expect(fixture.data.commandShadow == 0x0017)
            #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == 0)
            #expect(fixture.hwCommand & PCICommand.invalidate == 0, "pci_clear_mwi")
        } else {
            #expect(fixture.hwCommand & PCICommand.invalidate == 0)
            #expect(fixture.data.commandShadow == 0x0007)
            #expect(fixture.dom0.log.lines.contains { $0.contains("memory-write-invalidate") })
        }
    }

    @Test("§4.2 offsets past the function's space read all-ones; past 4095 the accessor fails with -EINVAL")
    func outOfRangeOffsets() throws {
        var conventional = try FixtureA(express: false)
        #expect(conventional.read(0x100, size: 4) == (0, 0xffff_ffff))
        #expect(conventional.read(0xffc, size: 4) == (0, 0xffff_ffff))
        #expect(conventional.write(0x100, size: 4, 0) == 0)
        var express = try FixtureA()
        #expect(express.read(0x1000, size: 4) == (OpError.invalid, 0xffff_ffff))
        #expect(express.read(0x1000, size: 2) == (OpError.invalid, 0x0000_ffff))
        #expect(express.read(-4, size: 4).err == OpError.invalid)
        #expect(express.read(0xffc, size: 4) == (0, 0))
        // A write reaches the accessor only when permissive; otherwise it is an ignored write.
        #expect(express.write(0x1000, size: 4, 0) == 0)
        try express.dom0.setPermissive(input: bytes("03:00.0\n"))
        #expect(express.write(0x1000, size: 4, 0) == OpError.invalid)
        #expect(express.write(-4, size: 4, 0) == OpError.invalid)
    }
}

// MARK: - §4.3 - §4.5 errors from hardware, §5.1 simple fields, §6.2 VPD

extension GrammarAndHardwareTests {
    @Test("§4.3 a failed hardware read: a field that does not read hardware clears the error")
    func readErrors() throws {
        var fixture = try FixtureA()
        fixture.device.faults.configReadFails = .once
        #expect(fixture.read(0x00, size: 2) == (0, 0x8086), "vendor comes from the kernel's cache")
        fixture.device.faults.configReadFails = .once
        #expect(fixture.read(PCIRegister.status, size: 2) == (OpError.deviceNotFound, 0xffff), "no field: hw error, -1")
        fixture.device.faults.configReadFails = .sticky
        #expect(fixture.read(PCIRegister.command, size: 2).err == OpError.deviceNotFound, "the command field reads hw")
        // A write whose field read fails stops there: nothing is enabled.
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == OpError.deviceNotFound)
        #expect(!fixture.device.isEnabled)
        fixture.device.faults.configReadFails = .off
        #expect(fixture.read(PCIRegister.command, size: 2) == (0, 0x0000))
    }

    struct SimpleField: Sendable, CustomTestStringConvertible {
        var name: String
        var offset: Int
        var value: UInt32
        /// Hardware afterwards; nil: unchanged.
        var hardware: UInt32?
        var testDescription: String { name }
    }

    @Test("§5.1 header fields swallow or pass writes whatever the permissive setting", arguments: [
        SimpleField(name: "cache line size: pass-through", offset: 0x0c, value: 0x08, hardware: 0x08),
        SimpleField(name: "latency timer: ignored", offset: 0x0d, value: 0x40, hardware: nil),
        SimpleField(name: "interrupt pin: ignored", offset: 0x3d, value: 0x00, hardware: nil),
        SimpleField(name: "interrupt line: ignored", offset: 0x3c, value: 0x05, hardware: nil),
        SimpleField(name: "vendor: ignored", offset: 0x00, value: 0x12, hardware: nil),
    ], [false, true])
    func simpleFields(_ field: SimpleField, _ permissive: Bool) throws {
        // Conventional PCI: the latency timer is writable in hardware, so a write would show.
        var fixture = try FixtureA(express: false, globalPermissive: permissive)
        #expect(fixture.device.config.writableMask(0x0d, width: 1) == 0xff)
        let before = fixture.hw(field.offset, 1)
        #expect(fixture.write(field.offset, size: 1, field.value) == 0)
        #expect(fixture.hw(field.offset, 1) == field.hardware ?? before)
    }

    @Test("§6.2 VPD: F set is refused with -3, an address write starts a read, data writes are swallowed; VPD fields come first")
    func vpd() throws {
        var dom0 = try Dom0(machine: BuiltinMachine.make())
        let nic = PCIAddress(bus: 0, slot: 5, function: 0)
        try dom0.unbind(driver: "8139too", input: bytes("0000:00:05.0\n"))
        try dom0.newSlot(input: bytes("0000:00:05.0\n"))
        try dom0.bind(driver: PCIDriver.pcibackName, input: bytes("0000:00:05.0\n"))
        #expect(try dom0.attach(domain: 1, address: nic) == FixtureA.virtual)
        let device = try #require(dom0.device(nic))
        let vpd = device.capabilities.vpd
        let pm = device.capabilities.powerManagement
        #expect(pm < vpd, "PM is first in the capability list")
        func op(_ command: PCIOperation.Command, _ offset: Int, _ size: Int, _ value: UInt32 = 0) -> PCIOperationResult {
            dom0.perform(PCIOperation(command: command.rawValue, devfn: 0, offset: Int32(offset), size: Int32(size), value: value),
                         frontend: 1)
        }
        #expect(op(.configWrite, vpd + 2, 2, 0x8000).error == OpError.accessDenied)
        #expect(device.config.read(vpd + 2, width: 2) == 0)
        #expect(op(.configWrite, vpd + 2, 2, 0x0000).error == 0)
        #expect(device.config.read(vpd + 2, width: 2) == 0x8000, "read complete")
        let firstWord = device.vpdContents.prefix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        #expect(firstWord != 0)
        let word = op(.configRead, vpd + 4, 4)
        #expect(word.error == 0)
        #expect(word.value == firstWord)
        #expect(op(.configWrite, vpd + 4, 4, 0).error == 0)
        #expect(device.config.read(vpd + 4, width: 4) == firstWord)

        // Registration order VPD, PM, MSI, MSI-X, whatever the list order.
        let capabilityFields = dom0.deviceData[nic]!.fields.map(\.offset).filter { $0 >= 0x40 }
        #expect(capabilityFields == [vpd, vpd + 2, vpd + 4, pm, pm + 2, pm + 4, pm + 6, pm + 7])
    }
}

// MARK: - §4.3 / §4.4 merging several fields in one access

extension GrammarAndHardwareTests {
    struct MergedRead: Sendable, CustomTestStringConvertible {
        var offset: Int
        var size: Int
        var value: UInt32
        var why: String
        var testDescription: String { "size \(size) at 0x\(String(offset, radix: 16)): \(why)" }
    }

    @Test("§4.3 a read is hardware with every overlapping field merged over it", arguments: [
        MergedRead(offset: 0x3c, size: 4, value: 0x0000_012b, why: "IRQ line virtual, pin from hw, min_gnt/max_lat hw"),
        MergedRead(offset: 0x0c, size: 4, value: 0x8000_0010, why: "cache line, latency, header type (no field), BIST"),
        MergedRead(offset: 0x0e, size: 2, value: 0x0000_8000, why: "header type from hw, BIST field"),
        MergedRead(offset: 0x40, size: 4, value: 0x0003_5001, why: "PM header, PMC without PME support"),
        MergedRead(offset: 0x2c, size: 4, value: 0xa01f_8086, why: "subsystem IDs: no field, hw"),
        MergedRead(offset: 0x00, size: 1, value: 0x0000_8086, why: "vendor field wider than the access"),
    ])
    func mergedReads(_ row: MergedRead) throws {
        var fixture = try FixtureA()
        fixture.hwWrite(PCIRegister.interruptLine, 1, 0x0b)
        #expect(fixture.read(row.offset, size: row.size) == (0, row.value))
    }

    @Test("§4.4 a later field's success masks an earlier field's failure in the same write")
    func maskedWriteError() throws {
        var fixture = try FixtureA()
        // PMCSR refuses D1 (-3), then the PM bridge-extension and data fields accept (0).
        #expect(fixture.write(FixtureA.pmcsr, size: 4, 0x0000_0209) == 0)
        #expect(fixture.device.powerState == 0)
        #expect(fixture.hw(FixtureA.pmcsr, 2) == 0x0208, "the OK bits were written")
        // The same request as a word reports the refusal.
        #expect(fixture.write(FixtureA.pmcsr, size: 2, 0x0009) == OpError.accessDenied)
    }

    @Test("§4.4 bytes that no field covers are dropped when any byte is handled, even permissive", arguments: [false, true])
    func handledIsAllOrNothing(_ permissive: Bool) throws {
        var fixture = try FixtureA(express: false, globalPermissive: permissive)
        // 0x3c line (virtual), 0x3d pin (ignored), 0x3e/0x3f min_gnt/max_lat: unhandled but covered.
        fixture.device.config.setWritable(0x3e, width: 2, mask: 0xffff)  // so a write would show
        #expect(fixture.write(0x3c, size: 4, 0xaabb_0000) == 0)
        #expect(fixture.hw(0x3e, 2) == 0)
        #expect(fixture.write(0x3e, size: 2, 0xaabb) == 0)
        #expect(fixture.hw(0x3e, 2) == (permissive ? 0xaabb : 0), "alone, they reach hw only when permissive")
    }
}
