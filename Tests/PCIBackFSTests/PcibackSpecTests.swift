import Testing

@testable import PCIBackFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Spec §10, cases 1 - 20, each as written there. Fixture A is in Fixtures.swift.

@Suite("pciback spec §10 test cases")
struct PcibackSpecTests {}

extension PcibackSpecTests {
@Suite("sysfs parsing and bad input (cases 1 - 8)")
struct SysfsCases {
    @Test("case 1: new_slot 0000:03:00.0 lists it once; the same id again changes nothing")
    func case1() throws {
        var dom0 = try FixtureA.makeUnboundDom0()
        #expect(shown(dom0.slotsText()) == "")
        #expect(storeError { try dom0.newSlot(input: bytes("0000:03:00.0\n")) } == nil)
        #expect(shown(dom0.slotsText()) == "0000:03:00.0\n")
        #expect(storeError { try dom0.newSlot(input: bytes("0000:03:00.0\n")) } == nil)
        #expect(shown(dom0.slotsText()) == "0000:03:00.0\n")
        // Nothing is bound by new_slot.
        #expect(dom0.driverName(of: FixtureA.host) == nil)
    }

    struct Wildcard: Sendable, CustomTestStringConvertible {
        var input: String
        var lines: Int
        var first: String
        var last: String
        /// (index, line) samples in between.
        var samples: [(Int, String)]
        var testDescription: String { input }
    }

    @Test("case 2: wildcards expand into the seize list, func printed in decimal", arguments: [
        Wildcard(input: "03:00.*\n", lines: 8, first: "0000:03:00.0", last: "0000:03:00.7",
                 samples: [(3, "0000:03:00.3")]),
        Wildcard(input: "0000:05:*.*\n", lines: 256, first: "0000:05:00.0", last: "0000:05:1f.7",
                 samples: [(1, "0000:05:00.1"), (8, "0000:05:01.0"), (10 * 8 + 3, "0000:05:0a.3"), (255, "0000:05:1f.7")]),
    ])
    func case2(_ row: Wildcard) throws {
        var dom0 = try FixtureA.makeUnboundDom0()
        #expect(storeError { try dom0.newSlot(input: bytes(row.input)) } == nil)
        let output = shown(dom0.slotsText())
        #expect(output.hasSuffix("\n"))
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.count == row.lines)
        #expect(lines.first == row.first)
        #expect(lines.last == row.last)
        for (index, line) in row.samples where index < lines.count {
            #expect(lines[index] == line)
        }
        #expect(Set(lines).count == lines.count, "no duplicates")
    }

    enum Outcome: Sendable, Equatable {
        case rejected(Errno)
        /// Accepted; `slots` then reads exactly this.
        case accepted(slots: String)
    }

    struct NewSlotRow: Sendable, CustomTestStringConvertible {
        var input: String
        var outcome: Outcome
        var testDescription: String { "\(input.debugDescription) → \(outcome)" }
    }

    static let case3Rows: [NewSlotRow] = [
        // Grammar errors.
        NewSlotRow(input: "03:*.3\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "*:00.0\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:*:*.*\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:03:00\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "1f.3\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:03:00.1x\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:03:00.0g\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:03:00.0 junk\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000 :03:00.0\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "\n", outcome: .rejected(.invalidArgument)),
        // Range errors (pcistub_device_id_add).
        NewSlotRow(input: "10000:03:00.0\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:100:00.0\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:03:20.0\n", outcome: .rejected(.invalidArgument)),
        NewSlotRow(input: "0000:03:00.8\n", outcome: .rejected(.invalidArgument)),
        // Accepted.
        NewSlotRow(input: " 0000:0A:1f.7 \n", outcome: .accepted(slots: "0000:0a:1f.7\n")),
        NewSlotRow(input: "0x0:0x3:0x0.0x0\n", outcome: .accepted(slots: "0000:03:00.0\n")),
        NewSlotRow(input: "0000: 03:00.0\n", outcome: .accepted(slots: "0000:03:00.0\n")),
        NewSlotRow(input: "0000:03:00.0x\n", outcome: .accepted(slots: "0000:03:00.0\n")),
    ]

    @Test("case 3: new_slot rejects bad input with EINVAL and accepts the odd forms", arguments: case3Rows)
    func case3(_ row: NewSlotRow) throws {
        var dom0 = try FixtureA.makeUnboundDom0()
        let error = storeError { try dom0.newSlot(input: bytes(row.input)) }
        switch row.outcome {
        case .rejected(let errno):
            #expect(error == errno)
            #expect(shown(dom0.slotsText()) == "", "a rejected write adds nothing")
        case .accepted(let slots):
            #expect(error == nil)
            #expect(shown(dom0.slotsText()) == slots)
        }
    }

    @Test("case 4: remove_slot: ENOENT when nothing matches (no range check); a wildcard removes every match")
    func case4() throws {
        var dom0 = try FixtureA.makeUnboundDom0()
        try dom0.newSlot(input: bytes("03:00.*\n"))
        try dom0.newSlot(input: bytes("0000:04:00.0\n"))
        try dom0.newSlot(input: bytes("0000:03:1f.7\n"))
        #expect(storeError { try dom0.removeSlot(input: bytes("0000:09:00.0\n")) } == .noSuchFileOrDirectory)
        #expect(storeError { try dom0.removeSlot(input: bytes("0000:100:00.0\n")) } == .noSuchFileOrDirectory)
        #expect(storeError { try dom0.removeSlot(input: bytes("03:*.*\n")) } == nil)
        #expect(shown(dom0.slotsText()) == "0000:04:00.0\n")
        #expect(storeError { try dom0.removeSlot(input: bytes("03:*.*\n")) } == .noSuchFileOrDirectory)
        #expect(storeError { try dom0.removeSlot(input: bytes("garbage\n")) } == .invalidArgument)
    }

    @Test("case 4: remove_slot leaves a bound device bound")
    func case4Bound() throws {
        var fixture = try FixtureA()
        #expect(storeError { try fixture.dom0.removeSlot(input: bytes("03:*.*\n")) } == nil)
        #expect(shown(fixture.dom0.slotsText()) == "")
        #expect(fixture.dom0.isBoundToPciback(FixtureA.host))
    }

    enum FlagAttribute: String, Sendable, CaseIterable {
        case permissive
        case allowInterruptControl = "allow_interrupt_control"
        case irqHandlerState = "irq_handler_state"

        func store(_ dom0: inout Dom0, _ input: String) -> Errno? {
            switch self {
            case .permissive: return storeError { try dom0.setPermissive(input: bytes(input)) }
            case .allowInterruptControl: return storeError { try dom0.setAllowInterruptControl(input: bytes(input)) }
            case .irqHandlerState: return storeError { try dom0.toggleIRQHandlerState(input: bytes(input)) }
            }
        }
    }

    struct FlagRow: Sendable, CustomTestStringConvertible {
        var attribute: FlagAttribute
        var input: String
        var errno: Errno
        var testDescription: String { "\(input.debugDescription) > \(attribute.rawValue) → \(errno)" }
    }

    static let case5Rows: [FlagRow] = [
        FlagRow(attribute: .permissive, input: "0000:09:00.0\n", errno: .noSuchDevice),
        FlagRow(attribute: .permissive, input: "03:00.*\n", errno: .noSuchDevice),
        FlagRow(attribute: .permissive, input: "garbage\n", errno: .invalidArgument),
        FlagRow(attribute: .allowInterruptControl, input: "0000:09:00.0\n", errno: .noSuchDevice),
        FlagRow(attribute: .allowInterruptControl, input: "03:00.*\n", errno: .noSuchDevice),
        FlagRow(attribute: .allowInterruptControl, input: "garbage\n", errno: .invalidArgument),
        FlagRow(attribute: .irqHandlerState, input: "0000:09:00.0\n", errno: .noSuchFileOrDirectory),
        FlagRow(attribute: .irqHandlerState, input: "03:00.*\n", errno: .noSuchFileOrDirectory),
        FlagRow(attribute: .irqHandlerState, input: "garbage\n", errno: .invalidArgument),
    ]

    @Test("case 5: per-device flag attributes on an unbound id, a wildcard and garbage", arguments: case5Rows)
    func case5(_ row: FlagRow) throws {
        var fixture = try FixtureA()
        let before = fixture.data
        #expect(row.attribute.store(&fixture.dom0, row.input) == row.errno)
        #expect(fixture.data == before, "a failed store changes nothing")
    }

    @Test("case 5: a device that exists but is not bound to pciback is not found either")
    func case5NotPciback() throws {
        var fixture = try FixtureA()
        // The root port exists and is bound to pcieport.
        #expect(FlagAttribute.permissive.store(&fixture.dom0, "0000:00:1c.0\n") == .noSuchDevice)
        #expect(FlagAttribute.allowInterruptControl.store(&fixture.dom0, "0000:00:1c.0\n") == .noSuchDevice)
        #expect(FlagAttribute.irqHandlerState.store(&fixture.dom0, "0000:00:1c.0\n") == .noSuchFileOrDirectory)
    }

    @Test("case 6: permissive is idempotent, listed by name, warned about once, never cleared by a store")
    func case6() throws {
        var fixture = try FixtureA()
        #expect(shown(fixture.dom0.permissiveText()) == "")
        #expect(FlagAttribute.permissive.store(&fixture.dom0, "03:00.0\n") == nil)
        #expect(FlagAttribute.permissive.store(&fixture.dom0, "03:00.0\n") == nil)
        #expect(shown(fixture.dom0.permissiveText()) == "0000:03:00.0\n")
        let warnings = fixture.dom0.log.lines.filter {
            $0.contains("enabling permissive mode configuration space accesses!")
                || $0.contains("permissive mode is potentially unsafe!")
        }
        #expect(warnings.count == 2)
        // A guest release does not clear it either (§3.3); only unbind does.
        try fixture.releaseAndReattach()
        #expect(shown(fixture.dom0.permissiveText()) == "0000:03:00.0\n")
        try fixture.dom0.unbind(driver: PCIDriver.pcibackName, input: bytes("0000:03:00.0\n"))
        #expect(shown(fixture.dom0.permissiveText()) == "")
    }

    struct ModeRow: Sendable, CustomTestStringConvertible {
        var attribute: String
        var mode: UInt32
        var testDescription: String { "\(attribute) \(String(mode, radix: 8))" }
    }

    static let case7Rows: [ModeRow] = [
        ModeRow(attribute: "new_slot", mode: 0o200),
        ModeRow(attribute: "remove_slot", mode: 0o200),
        ModeRow(attribute: "irq_handler_state", mode: 0o200),
        ModeRow(attribute: "slots", mode: 0o444),
        ModeRow(attribute: "irq_handlers", mode: 0o444),
        ModeRow(attribute: "quirks", mode: 0o644),
        ModeRow(attribute: "permissive", mode: 0o644),
        ModeRow(attribute: "allow_interrupt_control", mode: 0o644),
    ]

    @Test("case 7: attribute modes; opening against the mode is EACCES even for root", arguments: case7Rows)
    func case7(_ row: ModeRow) throws {
        let tree = SysfsTree(dom0: try FixtureA.makeUnboundDom0())
        var inode = rootInode
        for component in ["bus", "pci", "drivers", "pciback", row.attribute] {
            inode = try tree.lookup(parent: inode, name: component).inode
        }
        #expect(try tree.getattr(inode).mode == row.mode)
        let readable = row.mode & 0o444 != 0
        let writable = row.mode & 0o222 != 0
        let readOpen = storeError { _ = try tree.open(inode, flags: O_RDONLY, caller: .root) }
        let writeOpen = storeError { _ = try tree.open(inode, flags: O_WRONLY, caller: .root) }
        #expect(readOpen == (readable ? nil : .permissionDenied))
        #expect(writeOpen == (writable ? nil : .permissionDenied))
    }

    @Test("case 8: irq_handlers before the guest enables the device; irq_handler_state toggles isr_on, not ack_intr")
    func case8() throws {
        var fixture = try FixtureA()
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:off:not acking:0\n")
        #expect(storeError { try fixture.dom0.toggleIRQHandlerState(input: bytes("03:00.0\n")) } == nil)
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:on:acking:0\n")
        #expect(storeError { try fixture.dom0.toggleIRQHandlerState(input: bytes("03:00.0\n")) } == nil)
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:off:acking:0\n")
    }
}

}

extension PcibackSpecTests {
@Suite("quirks (cases 9 - 10)")
struct QuirkCases {
    static let builtInFields = """
        03:00.0
        \t8086:10d3:8086:a01f
        \t\t00000000:2:00000000
        \t\t00000002:2:00000000
        \t\t00000004:2:00000000
        \t\t0000003c:1:00000000
        \t\t0000003d:1:00000000
        \t\t0000000c:1:00000000
        \t\t0000000d:1:00000000
        \t\t0000000f:1:00000000
        \t\t00000010:4:00000000
        \t\t00000014:4:00000000
        \t\t00000018:4:00000000
        \t\t0000001c:4:00000000
        \t\t00000020:4:00000000
        \t\t00000024:4:00000000
        \t\t00000030:4:00000000
        \t\t00000040:2:00000000
        \t\t00000042:2:00000000
        \t\t00000044:2:00000000
        \t\t00000046:1:00000000
        \t\t00000047:1:00000000
        \t\t00000050:2:00000000
        \t\t00000052:2:00000000
        \t\t00000070:2:00000000
        \t\t00000072:2:00000000

        """

    @Test("case 9: a quirk field is listed after the built-in fields and passes guest writes to hardware until release")
    func case9() throws {
        var fixture = try FixtureA()
        let devctl = FixtureA.pcie + PCIeRegister.deviceControl
        #expect(devctl == 0xa8)
        let original = fixture.hw(devctl, 2)
        #expect(original == 0x2810)

        // Without the quirk, a write to the PCIe capability is dropped.
        #expect(fixture.write(0xa8, size: 2, 0x2010) == 0)
        #expect(fixture.hw(0xa8, 2) == original)

        #expect(storeError { try fixture.dom0.addQuirk(input: bytes("03:00.0-a8:2:ffff\n")) } == nil)
        #expect(shown(fixture.dom0.quirksText()) == Self.builtInFields + "\t\t000000a8:2:0000ffff\n")

        #expect(fixture.write(0xa8, size: 2, 0x2010) == 0)
        #expect(fixture.hw(0xa8, 2) == 0x2010, "the quirk makes the bytes handled: no permissive needed")
        #expect(!fixture.data.permissive)

        try fixture.releaseAndReattach()
        #expect(shown(fixture.dom0.quirksText()) == Self.builtInFields)
        #expect(fixture.hw(0xa8, 2) == original, "release restores the bind snapshot")
        #expect(fixture.write(0xa8, size: 2, 0x2010) == 0)
        #expect(fixture.hw(0xa8, 2) == original, "dropped again")
    }

    struct QuirkRow: Sendable, CustomTestStringConvertible {
        var input: String
        /// nil: success.
        var errno: Errno?
        var note: String
        var testDescription: String { "\(input) → \(errno.map(String.init(describing:)) ?? "success") (\(note))" }
    }

    static let case10Rows: [QuirkRow] = [
        QuirkRow(input: "03:00.0-e0:1:1ff\n", errno: .invalidArgument, note: "mask too wide"),
        QuirkRow(input: "03:00.0-1000:4:0\n", errno: .invalidArgument, note: "register > 0xfff"),
        QuirkRow(input: "03:00.0-e0:3:0\n", errno: .invalidArgument, note: "size"),
        QuirkRow(input: "03:00.0-e0:0:1\n", errno: .invalidArgument, note: "mask check with size 0"),
        QuirkRow(input: "04:00.0-e0:2:0\n", errno: .noSuchDevice, note: "no such bound device"),
        QuirkRow(input: "03:00.*-e0:2:0\n", errno: .invalidArgument, note: "no wildcards"),
    ]

    @Test("case 10: quirk errors add nothing", arguments: case10Rows)
    func case10(_ row: QuirkRow) throws {
        var fixture = try FixtureA()
        let before = fixture.data.fields
        #expect(storeError { try fixture.dom0.addQuirk(input: bytes(row.input)) } == row.errno)
        #expect(fixture.data.fields == before)
    }

    @Test("case 10: a quirk at a start offset that already has a field succeeds and adds nothing")
    func case10Duplicate() throws {
        var fixture = try FixtureA()
        let before = fixture.data.fields
        #expect(storeError { try fixture.dom0.addQuirk(input: bytes("03:00.0-10:4:0\n")) } == nil)
        #expect(fixture.data.fields == before)
        #expect(shown(fixture.dom0.quirksText()) == QuirkCases.builtInFields)
        // BAR0 keeps its behaviour: no pass-through to hardware.
        #expect(fixture.write(0x10, size: 4, 0x1234_0000) == 0)
        #expect(fixture.hw(0x10, 4) == 0xfebc_0000)
    }
}

}

extension PcibackSpecTests {
@Suite("config engine basics (cases 11 - 14)")
struct EngineCases {
    struct Access: Sendable, CustomTestStringConvertible {
        var offset: Int
        var size: Int
        var testDescription: String { "size \(size) at 0x\(String(offset, radix: 16))" }
    }

    @Test("case 11: misaligned or odd-sized reads and writes fail with -2 and touch nothing", arguments: [
        Access(offset: 0x03, size: 2), Access(offset: 0x02, size: 4), Access(offset: 0x00, size: 3),
        Access(offset: 0x00, size: 8), Access(offset: 0x11, size: 4), Access(offset: 0x05, size: 2),
        Access(offset: 0x00, size: 0),
    ])
    func case11(_ access: Access) throws {
        var fixture = try FixtureA()
        let (err, value) = fixture.read(access.offset, size: access.size)
        #expect(err == OpError.invalidOffset)
        #expect(value == 0)
        let before = fixture.device.config.bytes
        let shadow = fixture.data.commandShadow
        #expect(fixture.write(access.offset, size: access.size, 0xffff_ffff) == OpError.invalidOffset)
        #expect(fixture.device.config.bytes == before)
        #expect(fixture.data.commandShadow == shadow)
    }

    @Test("case 12: vendor/device from the kernel, interrupt line = dom0 IRQ, high byte of the vendor")
    func case12() throws {
        var fixture = try FixtureA()
        #expect(fixture.read(0x00, size: 4) == (0, 0x10d3_8086))
        // Hardware's interrupt line is whatever firmware wrote; the guest sees dom0's IRQ.
        fixture.hwWrite(PCIRegister.interruptLine, 1, 0x0b)
        #expect(fixture.read(0x3c, size: 1) == (0, 0x2b))
        #expect(fixture.write(0x3c, size: 1, 0x05) == 0)
        #expect(fixture.read(0x3c, size: 1) == (0, 0x2b))
        #expect(fixture.hw(0x3c, 1) == 0x0b, "the write is swallowed")
        #expect(fixture.read(0x01, size: 1).value & 0xff == 0x80)
        #expect(fixture.read(0x01, size: 1) == (0, 0x80))
    }

    @Test("case 12: vendor and device come from the kernel's cache, not from hardware")
    func case12Cached() throws {
        var fixture = try FixtureA()
        // A function whose ID registers stop answering (e.g. a VF) still shows the cached IDs.
        fixture.device.config.store(0x00, width: 4, value: 0xffff_ffff)
        #expect(fixture.read(0x00, size: 4) == (0, 0x10d3_8086))
        #expect(fixture.write(0x00, size: 4, 0x1234_5678) == 0)
    }

    @Test("case 13: non-permissive: a status write is dropped with success and warned about once")
    func case13NonPermissive() throws {
        var fixture = try FixtureA()
        // A latched error bit, so a write that reached hardware would clear it (RW1C).
        fixture.device.config.store(PCIRegister.status, width: 2, value: 0x8010)
        #expect(fixture.write(0x06, size: 2, 0xffff) == 0)
        #expect(fixture.hw(0x06, 2) == 0x8010)
        let warning = "Driver tried to write to a read-only configuration space field at offset 0x6, size 2."
        #expect(fixture.dom0.log.lines.filter { $0.contains(warning) }.count == 1)
        #expect(fixture.data.warnedOnWrite)
        #expect(fixture.write(0x06, size: 2, 0xffff) == 0)
        #expect(fixture.hw(0x06, 2) == 0x8010)
        #expect(fixture.dom0.log.lines.filter { $0.contains("Driver tried to write") }.count == 1)
        // warned_on_write survives a guest release; only unbind clears it (§3.1).
        try fixture.releaseAndReattach()
        #expect(fixture.write(0x06, size: 2, 0xffff) == 0)
        #expect(fixture.dom0.log.lines.filter { $0.contains("Driver tried to write") }.count == 1)
        try fixture.dom0.unbind(driver: PCIDriver.pcibackName, input: bytes("0000:03:00.0\n"))
        try fixture.dom0.bind(driver: PCIDriver.pcibackName, input: bytes("0000:03:00.0\n"))
        _ = try fixture.dom0.attach(domain: FixtureA.frontend, address: FixtureA.host)
        #expect(fixture.write(0x06, size: 2, 0xffff) == 0)
        #expect(fixture.dom0.log.lines.filter { $0.contains("Driver tried to write") }.count == 2)
    }

    enum PermissiveKind: String, Sendable, CaseIterable {
        case device
        case global
    }

    static func permissiveFixture(_ kind: PermissiveKind) throws -> FixtureA {
        var fixture = try FixtureA(globalPermissive: kind == .global)
        if kind == .device { try fixture.dom0.setPermissive(input: bytes("03:00.0\n")) }
        return fixture
    }

    @Test("case 13: permissive (device or global): the unhandled status write reaches hardware",
          arguments: PermissiveKind.allCases)
    func case13Permissive(_ kind: PermissiveKind) throws {
        var fixture = try Self.permissiveFixture(kind)
        fixture.device.config.store(PCIRegister.status, width: 2, value: 0x8010)
        #expect(fixture.write(0x06, size: 2, 0xffff) == 0)
        #expect(fixture.hw(0x06, 2) == 0x0010, "RW1C bits cleared, CAP_LIST is read-only")
        #expect(!fixture.dom0.log.lines.contains { $0.contains("Driver tried to write") })
        // The module parameter is not reflected in the attribute (§1.7).
        #expect(shown(fixture.dom0.permissiveText()) == (kind == .device ? "0000:03:00.0\n" : ""))
    }

    @Test("case 13: permissive: a dword write at 0x04 runs the command field but never writes status",
          arguments: PermissiveKind.allCases)
    func case13Handled(_ kind: PermissiveKind) throws {
        var fixture = try Self.permissiveFixture(kind)
        fixture.device.config.store(PCIRegister.status, width: 2, value: 0x8010)
        #expect(fixture.write(0x04, size: 4, 0xffff_0006) == 0)
        #expect(fixture.device.isEnabled)
        #expect(fixture.device.isBusmaster)
        #expect(fixture.hwCommand & PCICommand.master != 0)
        #expect(fixture.hw(0x06, 2) == 0x8010, "status not written")
    }

    @Test("case 14: a byte read inside BAR0 returns the BAR's bytes from that one upwards")
    func case14() throws {
        var fixture = try FixtureA()
        #expect(fixture.read(0x12, size: 1) == (0, 0x0000_febc))
        #expect(fixture.read(0x13, size: 1) == (0, 0x0000_00fe))
        #expect(fixture.read(0x12, size: 2) == (0, 0x0000_febc))
        #expect(fixture.read(0x10, size: 1) == (0, 0xfebc_0000))
    }
}

}

extension PcibackSpecTests {
@Suite("BARs (cases 15 - 17)")
struct BARCases {
    struct Sizing: Sendable, CustomTestStringConvertible {
        var name: String
        var offset: Int
        var value: UInt32
        var readBack: UInt32
        var testDescription: String {
            "\(name): write 0x\(String(value, radix: 16)) → read 0x\(String(readBack, radix: 16))"
        }
    }

    static let case15Rows: [Sizing] = [
        Sizing(name: "BAR0", offset: 0x10, value: 0xffff_ffff, readBack: 0xfffe_0000),
        Sizing(name: "BAR0", offset: 0x10, value: 0xffff_fff0, readBack: 0xfffe_0000),
        Sizing(name: "BAR0", offset: 0x10, value: 0xfebc_0000, readBack: 0xfebc_0000),
        Sizing(name: "BAR2 (I/O)", offset: 0x18, value: 0xffff_fffc, readBack: 0xffff_ffe1),
        Sizing(name: "BAR2 (I/O)", offset: 0x18, value: 0xffff_ffff, readBack: 0xffff_ffe1),
        Sizing(name: "BAR3", offset: 0x1c, value: 0xffff_ffff, readBack: 0xffff_c000),
        Sizing(name: "BAR4", offset: 0x20, value: 0xffff_ffff, readBack: 0xf000_000c),
        Sizing(name: "BAR5 (upper half)", offset: 0x24, value: 0xffff_ffff, readBack: 0xffff_ffff),
        Sizing(name: "BAR5 (upper half)", offset: 0x24, value: 0xffff_fff0, readBack: 0x0000_0003),
        Sizing(name: "BAR1 (unimplemented)", offset: 0x14, value: 0xffff_ffff, readBack: 0x0000_0000),
    ]

    @Test("case 15: sizing writes are answered from the kernel's resources, hardware untouched", arguments: case15Rows)
    func case15(_ row: Sizing) throws {
        var fixture = try FixtureA()
        let hardware = fixture.hw(row.offset, 4)
        #expect(fixture.write(row.offset, size: 4, row.value) == 0)
        #expect(fixture.read(row.offset, size: 4) == (0, row.readBack))
        #expect(fixture.hw(row.offset, 4) == hardware)
    }

    @Test("case 15: initial values, and leaving sizing mode by writing the address back")
    func case15Values() throws {
        var fixture = try FixtureA()
        let expected: [(Int, UInt32)] = [
            (0x10, 0xfebc_0000), (0x14, 0), (0x18, 0x0000_e001), (0x1c, 0xfebe_0000), (0x20, 0x8000_000c),
            (0x24, 0x0000_0003), (0x30, 0xfeb8_0000),
        ]
        for (offset, value) in expected {
            #expect(fixture.read(offset, size: 4) == (0, value), "offset 0x\(String(offset, radix: 16))")
        }
        #expect(fixture.write(0x10, size: 4, 0xffff_ffff) == 0)
        #expect(fixture.read(0x10, size: 4).value == 0xfffe_0000)
        #expect(fixture.write(0x10, size: 4, 0xfebc_0000) == 0)
        #expect(fixture.read(0x10, size: 4).value == 0xfebc_0000)
        #expect(fixture.write(0x20, size: 4, 0xffff_ffff) == 0)
        #expect(fixture.write(0x24, size: 4, 0xffff_ffff) == 0)
        #expect(fixture.read(0x20, size: 4).value == 0xf000_000c)
        #expect(fixture.read(0x24, size: 4).value == 0xffff_ffff)
        #expect(fixture.write(0x20, size: 4, 0x8000_000c) == 0)
        #expect(fixture.write(0x24, size: 4, 0x0000_0003) == 0)
        #expect(fixture.read(0x20, size: 4).value == 0x8000_000c)
        #expect(fixture.read(0x24, size: 4).value == 0x0000_0003)
    }

    @Test("case 16: moving a BAR is ignored with success; byte-wise all-ones never sizes")
    func case16() throws {
        var fixture = try FixtureA()
        #expect(fixture.write(0x10, size: 4, 0x1234_0000) == 0)
        #expect(fixture.read(0x10, size: 4) == (0, 0xfebc_0000))
        #expect(fixture.hw(0x10, 4) == 0xfebc_0000)
        for offset in 0x10...0x13 {
            #expect(fixture.write(offset, size: 1, 0xff) == 0)
            #expect(fixture.read(0x10, size: 4) == (0, 0xfebc_0000))
        }
        #expect(fixture.hw(0x10, 4) == 0xfebc_0000)
    }

    @Test("case 16: writing the original value restores hardware after a reset moved it")
    func case16Restore() throws {
        var fixture = try FixtureA()
        fixture.hwWrite(0x10, 4, 0)  // as a reset leaves it
        #expect(fixture.hw(0x10, 4) == 0)
        #expect(fixture.write(0x10, size: 4, 0x1234_0000) == 0)
        #expect(fixture.hw(0x10, 4) == 0, "a different value is still ignored")
        #expect(fixture.write(0x10, size: 4, 0xfebc_0000) == 0)
        #expect(fixture.hw(0x10, 4) == 0xfebc_0000)
    }

    @Test("case 17: ROM sizing, the enable bit never reaches hardware, release ends sizing", arguments: [
        UInt32(0xffff_f800), 0xffff_fffe, 0xffff_ffff,
    ])
    func case17(_ sizingValue: UInt32) throws {
        var fixture = try FixtureA()
        #expect(fixture.write(0x30, size: 4, sizingValue) == 0)
        #expect(fixture.read(0x30, size: 4) == (0, 0xfffc_0000))
        #expect(fixture.write(0x30, size: 4, 0xfeb8_0001) == 0)
        #expect(fixture.hw(0x30, 4) & 1 == 0)
        #expect(fixture.hw(0x30, 4) == 0xfeb8_0000)
        #expect(fixture.read(0x30, size: 4) == (0, 0xfeb8_0000))

        #expect(fixture.write(0x30, size: 4, sizingValue) == 0)
        #expect(fixture.data.bars[6]?.sizing == true)
        try fixture.releaseAndReattach()
        #expect(fixture.data.bars[6]?.sizing == false)
        #expect(fixture.read(0x30, size: 4) == (0, 0xfeb8_0000))
    }
}

}

extension PcibackSpecTests {
@Suite("command register (cases 18 - 20)")
struct CommandCases {
    @Test("case 18: non-permissive 0x0407 enables through the PCI core; INTX_DISABLE and SPECIAL stay virtual")
    func case18() throws {
        var fixture = try FixtureA()
        #expect(fixture.data.commandShadow == 0x0000, "cmd->val snapshotted before the bind-time enable")
        #expect(fixture.write(0x04, size: 2, 0x0407) == 0)
        #expect(fixture.hwCommand == 0x0007)
        #expect(fixture.guestCommand() == 0x0407)
        #expect(fixture.data.enableINTx)
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:on:acking:0\n")

        #expect(fixture.write(0x04, size: 2, 0x000f) == 0)
        #expect(fixture.hwCommand == 0x0007)
        #expect(fixture.guestCommand() == 0x0007)
    }

    struct Case19: Sendable, CustomTestStringConvertible {
        var express: Bool
        var hardware: UInt16
        var guestView: UInt16
        var testDescription: String { express ? "PCI Express (SPECIAL hard-wired 0)" : "conventional PCI" }
    }

    @Test("case 19: permissive passes guest bits (SPECIAL) but not PARITY; hardware's own mask applies after",
          arguments: [
              Case19(express: false, hardware: 0x000f, guestView: 0x004f),
              Case19(express: true, hardware: 0x0007, guestView: 0x0047),
          ])
    func case19(_ row: Case19) throws {
        var fixture = try FixtureA(express: row.express)
        try fixture.dom0.setPermissive(input: bytes("03:00.0\n"))
        #expect(fixture.write(0x04, size: 2, 0x004f) == 0)
        #expect(fixture.hwCommand == row.hardware)
        #expect(fixture.hwCommand & PCICommand.parity == 0)
        #expect(fixture.guestCommand() == row.guestView)
    }

    @Test("case 20: writing 0 disables: MASTER cleared, IO/MEMORY stay, the fake ISR goes")
    func case20() throws {
        var fixture = try FixtureA()
        #expect(fixture.write(0x04, size: 2, 0x0407) == 0)
        #expect(fixture.hwCommand == 0x0007)
        #expect(fixture.write(0x04, size: 2, 0x0000) == 0)
        #expect(fixture.hwCommand == 0x0003)
        #expect(!fixture.device.isEnabled)
        #expect(!fixture.device.isBusmaster)
        #expect(!fixture.data.enableINTx)
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:off:not acking:0\n")
        #expect(fixture.guestCommand() == 0x0000)
    }
}
}
