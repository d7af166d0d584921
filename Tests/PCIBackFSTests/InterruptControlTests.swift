import Testing

@testable import PCIBackFS

// The interrupt-control rules of every kernel profile (spec §5.2 step 4, §6.3 - §6.5, §11), as
// one table: each scenario sets the hardware up, runs guest config writes, and lists per
// profile the op->err of every write and the hardware afterwards.

@Suite("interrupt control per kernel profile (§5.2, §6.3 - §6.5, §11)")
struct InterruptControlTests {}

// MARK: - The table's vocabulary

private let ok = OpError.success
private let denied = OpError.accessDenied

// MSI flags (64-bit, one vector) and MSI-X flags (table size 5) of fixture A.
private let msiOff: UInt16 = 0x0080
private let msiOn: UInt16 = 0x0081
private let msixOff: UInt16 = 0x0004
private let msixOn: UInt16 = 0x8004
private let msixOnMasked: UInt16 = 0xc004
private let msixMaskedOnly: UInt16 = 0x4004

extension InterruptControlTests {

    /// The state the guest finds: hardware interrupt enables, the command shadow, the flags.
    struct Setup: Sendable, CustomStringConvertible {
        /// INTx enabled in hardware (INTX_DISABLE clear).
        var intx = false
        var msi = false
        var msix = false
        var maskall = false
        /// The guest wrote 0x0007 first (pci_enable_device ran, which turns INTx on in hw).
        var enabled = false
        /// INTX_DISABLE in cmd->val; nil: as in hardware (the guest's last write agreed).
        var shadowINTxDisable: Bool?
        var allowInterruptControl = true
        var permissive = false

        var description: String {
            var parts: [String] = []
            if enabled { parts.append("device enabled") }
            parts.append(intx ? "INTx on" : "INTx off")
            if msi { parts.append("MSI on") }
            if msix { parts.append(maskall ? "MSI-X on+MASKALL" : "MSI-X on") } else if maskall { parts.append("MASKALL") }
            if let shadow = shadowINTxDisable { parts.append("shadow INTX_DISABLE=\(shadow ? 1 : 0)") }
            if !allowInterruptControl { parts.append("allow_interrupt_control unset") }
            if permissive { parts.append("permissive") }
            return parts.joined(separator: ", ")
        }

        static let allOff = Setup()
        static let intxOn = Setup(intx: true)
        static let msiOn = Setup(msi: true)
        static let msixOn = Setup(msix: true)
        /// The guest enabled the device; pci_enable_device left INTx on in hardware.
        static let enabledWithINTx = Setup(intx: true, enabled: true)
    }

    /// One guest conf_write.
    struct Step: Sendable, CustomStringConvertible {
        var offset: Int
        var size: Int
        var value: UInt32

        static func command(_ value: UInt16) -> Step { Step(offset: PCIRegister.command, size: 2, value: UInt32(value)) }
        static func msi(_ value: UInt16) -> Step { Step(offset: FixtureA.msiFlags, size: 2, value: UInt32(value)) }
        static func msix(_ value: UInt16) -> Step { Step(offset: FixtureA.msixFlags, size: 2, value: UInt32(value)) }

        var description: String {
            let register: String
            switch offset {
            case PCIRegister.command: register = "command"
            case FixtureA.msiFlags: register = "MSI flags"
            case FixtureA.msixFlags: register = "MSI-X flags"
            default: register = "0x" + String(offset, radix: 16)
            }
            return "\(register) ← 0x\(hex(value, width: size * 2))"
        }
    }

    /// What one profile does: op->err per step, then hardware (nil: unchanged from the setup)
    /// and, where it matters, the guest's view of the command register.
    struct Expectation: Sendable {
        var errors: [Int32]
        var intxDisabled: Bool?
        var msi: UInt16?
        var msix: UInt16?
        var guestCommand: UInt16?

        init(_ errors: [Int32], intxDisabled: Bool? = nil, msi: UInt16? = nil, msix: UInt16? = nil,
             guestCommand: UInt16? = nil) {
            self.errors = errors
            self.intxDisabled = intxDisabled
            self.msi = msi
            self.msix = msix
            self.guestCommand = guestCommand
        }

        /// Every write succeeds and hardware keeps the setup's state.
        static func unchanged(_ steps: Int, guestCommand: UInt16? = nil) -> Expectation {
            Expectation(Array(repeating: ok, count: steps), guestCommand: guestCommand)
        }
    }

    struct Scenario: Sendable {
        var name: String
        var setup: Setup
        var steps: [Step]
        var expect: [KernelProfile: Expectation]
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var profile: KernelProfile
        var scenario: Scenario
        var expectation: Expectation { scenario.expect[profile]! }
        var testDescription: String {
            "[\(profile.rawValue)] \(scenario.name) (\(scenario.setup)): "
                + scenario.steps.map(\.description).joined(separator: ", ")
        }
    }
}

// MARK: - The table

extension InterruptControlTests {
    static let scenarios: [Scenario] = [
        // §6.3 - §6.5: enabling from each starting state.
        Scenario(name: "enable MSI from all-off", setup: .allOff, steps: [.msi(msiOn)], expect: [
            .current: Expectation([ok], msi: msiOn),
            .maskall2022: Expectation([ok], msi: msiOn),
            .original2020: Expectation([ok], msi: msiOn),
            .v5_6: Expectation([denied]),  // t = 0 is not NONE (1)
            .pre5_6: .unchanged(1),  // no field: dropped with success
        ]),
        Scenario(name: "enable MSI-X from all-off", setup: .allOff, steps: [.msix(msixOn)], expect: [
            .current: Expectation([ok], msix: msixOn),
            .maskall2022: Expectation([ok], msix: msixOn),
            .original2020: Expectation([ok], msix: msixOn),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "enable MSI with INTx on", setup: .intxOn, steps: [.msi(msiOn)], expect: [
            .current: Expectation([ok], msi: msiOn),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "enable MSI-X with INTx on", setup: .intxOn, steps: [.msix(msixOn)], expect: [
            .current: Expectation([ok], msix: msixOn),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "MSI-X ENABLE|MASKALL in one write", setup: .allOff, steps: [.msix(msixOnMasked)], expect: [
            .current: Expectation([ok], msix: msixOnMasked),
            .maskall2022: Expectation([ok], msix: msixOnMasked),
            .original2020: Expectation([denied]),  // MASKALL not in allowed_bits: ENABLE not set either
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "MSI-X ENABLE|MASKALL in one write", setup: .intxOn, steps: [.msix(msixOnMasked)], expect: [
            .current: Expectation([ok], msix: msixOnMasked),
            .maskall2022: Expectation([denied]),  // INTx counted
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "set MASKALL while MSI-X is enabled", setup: .msixOn, steps: [.msix(msixOnMasked)], expect: [
            .current: Expectation([ok], msix: msixOnMasked),
            .maskall2022: Expectation([ok], msix: msixOnMasked),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "clear MASKALL while MSI-X is enabled",
                 setup: Setup(intx: true, msix: true, maskall: true), steps: [.msix(msixOn)], expect: [
            .current: Expectation([ok], msix: msixOn),  // INTx not counted while MSI-X is on
            .maskall2022: Expectation([denied]),  // type MSIX|INTX
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "set MASKALL while MSI-X is disabled", setup: .intxOn, steps: [.msix(msixMaskedOnly)], expect: [
            .current: Expectation([ok], msix: msixMaskedOnly),  // no enable bit: no type check
            .maskall2022: Expectation([ok], msix: msixMaskedOnly),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "enable MSI while MSI-X is on", setup: .msixOn, steps: [.msi(msiOn)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "enable MSI-X while MSI is on", setup: .msiOn, steps: [.msix(msixOn)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "enable MSI-X with MASKALL while MSI is on", setup: .msiOn, steps: [.msix(msixOnMasked)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "disable MSI", setup: Setup(intx: true, msi: true), steps: [.msi(msiOff)], expect: [
            .current: Expectation([ok], msi: msiOff),
            .maskall2022: Expectation([ok], msi: msiOff),
            .original2020: Expectation([ok], msi: msiOff),
            .v5_6: Expectation([ok], msi: msiOff),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "disable MSI-X", setup: Setup(intx: true, msix: true, maskall: true), steps: [.msix(msixOff)], expect: [
            .current: Expectation([ok], msix: msixOff),
            .maskall2022: Expectation([ok], msix: msixOff),  // MASKALL cleared with ENABLE: allowed bits
            .original2020: Expectation([denied]),  // the MASKALL change makes the whole write fail
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "disable MSI-X (MASKALL untouched)", setup: Setup(intx: true, msix: true), steps: [.msix(msixOff)],
                 expect: [
            .current: Expectation([ok], msix: msixOff),
            .maskall2022: Expectation([ok], msix: msixOff),
            .original2020: Expectation([ok], msix: msixOff),
            .v5_6: Expectation([ok], msix: msixOff),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "dword write over the MSI header and flags", setup: .allOff,
                 steps: [Step(offset: FixtureA.msi, size: 4, value: UInt32(msiOn) << 16 | 0x7005)], expect: [
            .current: Expectation([ok], msi: msiOn),
            .maskall2022: Expectation([ok], msi: msiOn),
            .original2020: Expectation([ok], msi: msiOn),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),

        // §5.2 step 4: INTx through the command register.
        Scenario(name: "INTx disable via command while MSI is on", setup: Setup(intx: true, msi: true),
                 steps: [.command(0x0400)], expect: [
            .current: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .maskall2022: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .original2020: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .v5_6: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .pre5_6: .unchanged(1, guestCommand: 0x0400),  // shadowed only
        ]),
        Scenario(name: "INTx enable via command while MSI is on", setup: .msiOn, steps: [.command(0x0000)], expect: [
            .current: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .maskall2022: Expectation([denied], guestCommand: 0x0400),  // cmd->val not updated
            .original2020: Expectation([denied], guestCommand: 0x0400),
            .v5_6: Expectation([denied], guestCommand: 0x0400),
            .pre5_6: .unchanged(1, guestCommand: 0x0000),
        ]),
        Scenario(name: "INTx enable via command while MSI-X is on", setup: .msixOn, steps: [.command(0x0000)], expect: [
            .current: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .maskall2022: Expectation([denied], guestCommand: 0x0400),
            .original2020: Expectation([denied], guestCommand: 0x0400),
            .v5_6: Expectation([denied], guestCommand: 0x0400),
            .pre5_6: .unchanged(1, guestCommand: 0x0000),
        ]),
        Scenario(name: "INTx enable via command from all-off", setup: .allOff, steps: [.command(0x0000)], expect: [
            .current: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .maskall2022: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .original2020: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .v5_6: Expectation([denied], guestCommand: 0x0400),  // t = 0 again
            .pre5_6: .unchanged(1, guestCommand: 0x0000),
        ]),
        Scenario(name: "INTx enable via command when hardware already has INTx on",
                 setup: Setup(intx: true, shadowINTxDisable: true), steps: [.command(0x0000)], expect: [
            .current: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .maskall2022: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .original2020: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),
            .v5_6: Expectation([ok], intxDisabled: false, guestCommand: 0x0000),  // type INTX: a no-op success
            .pre5_6: .unchanged(1, guestCommand: 0x0000),
        ]),
        Scenario(name: "INTx bit equal to the shadow is never applied", setup: Setup(intx: true, shadowINTxDisable: true),
                 steps: [.command(0x0400)], expect: [
            .current: Expectation([ok], intxDisabled: false, guestCommand: 0x0400),
            .maskall2022: Expectation([ok], intxDisabled: false, guestCommand: 0x0400),
            .original2020: Expectation([ok], intxDisabled: false, guestCommand: 0x0400),
            .v5_6: Expectation([ok], intxDisabled: false, guestCommand: 0x0400),
            .pre5_6: .unchanged(1, guestCommand: 0x0400),
        ]),
        Scenario(name: "enabling the device turns INTx back on in hardware, then MSI", setup: .allOff,
                 steps: [.command(0x0407), .msi(msiOn)], expect: [
            .current: Expectation([ok, ok], intxDisabled: false, msi: msiOn, guestCommand: 0x0407),
            .maskall2022: Expectation([ok, denied], intxDisabled: false, guestCommand: 0x0407),
            .original2020: Expectation([ok, denied], intxDisabled: false, guestCommand: 0x0407),
            .v5_6: Expectation([ok, denied], intxDisabled: false, guestCommand: 0x0407),
            .pre5_6: Expectation([ok, ok], intxDisabled: false, guestCommand: 0x0407),
        ]),

        // Start-up sequences of real guests.
        Scenario(name: "Linux MSI-X start-up: ENABLE|MASKALL, INTx off, ENABLE only", setup: .enabledWithINTx,
                 steps: [.msix(msixOnMasked), .command(0x0407), .msix(msixOn)], expect: [
            .current: Expectation([ok, ok, ok], intxDisabled: true, msix: msixOn),
            .maskall2022: Expectation([denied, ok, ok], intxDisabled: true, msix: msixOn),
            .original2020: Expectation([denied, ok, ok], intxDisabled: true, msix: msixOn),
            .v5_6: Expectation([denied, ok, denied], intxDisabled: true),
            .pre5_6: Expectation([ok, ok, ok], intxDisabled: false, guestCommand: 0x0407),
        ]),
        Scenario(name: "Linux MSI start-up: enable, then INTx off", setup: .enabledWithINTx,
                 steps: [.msi(msiOn), .command(0x0407)], expect: [
            .current: Expectation([ok, ok], intxDisabled: true, msi: msiOn),
            .maskall2022: Expectation([denied, ok], intxDisabled: true),
            .original2020: Expectation([denied, ok], intxDisabled: true),
            .v5_6: Expectation([denied, ok], intxDisabled: true),
            .pre5_6: Expectation([ok, ok], intxDisabled: false, guestCommand: 0x0407),
        ]),
        Scenario(name: "QEMU MSI start-up: INTx off first", setup: .enabledWithINTx,
                 steps: [.command(0x0407), .msi(msiOn)], expect: [
            .current: Expectation([ok, ok], intxDisabled: true, msi: msiOn),
            .maskall2022: Expectation([ok, ok], intxDisabled: true, msi: msiOn),
            .original2020: Expectation([ok, ok], intxDisabled: true, msi: msiOn),
            .v5_6: Expectation([ok, denied], intxDisabled: true),
            .pre5_6: Expectation([ok, ok], intxDisabled: false, guestCommand: 0x0407),
        ]),
        Scenario(name: "QEMU MSI-X start-up: INTx off first", setup: .enabledWithINTx,
                 steps: [.command(0x0407), .msix(msixOn)], expect: [
            .current: Expectation([ok, ok], intxDisabled: true, msix: msixOn),
            .maskall2022: Expectation([ok, ok], intxDisabled: true, msix: msixOn),
            .original2020: Expectation([ok, ok], intxDisabled: true, msix: msixOn),
            .v5_6: Expectation([ok, denied], intxDisabled: true),
            .pre5_6: Expectation([ok, ok], intxDisabled: false, guestCommand: 0x0407),
        ]),

        // Without allow_interrupt_control: -3 for any change, hardware unchanged.
        Scenario(name: "enable MSI", setup: Setup(allowInterruptControl: false), steps: [.msi(msiOn)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "MSI-X ENABLE|MASKALL", setup: Setup(allowInterruptControl: false), steps: [.msix(msixOnMasked)],
                 expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "disable MSI", setup: Setup(msi: true, allowInterruptControl: false), steps: [.msi(msiOff)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "Linux MSI-X start-up", setup: Setup(intx: true, enabled: true, allowInterruptControl: false),
                 steps: [.msix(msixOnMasked), .command(0x0407), .msix(msixOn)], expect: [
            .current: Expectation([denied, ok, denied], guestCommand: 0x0407),  // INTX_DISABLE shadowed only
            .maskall2022: Expectation([denied, ok, denied], guestCommand: 0x0407),
            .original2020: Expectation([denied, ok, denied], guestCommand: 0x0407),
            .v5_6: Expectation([denied, ok, denied], guestCommand: 0x0407),
            .pre5_6: Expectation([ok, ok, ok], guestCommand: 0x0407),
        ]),
        Scenario(name: "INTx disable via command is shadowed only", setup: Setup(intx: true, allowInterruptControl: false),
                 steps: [.command(0x0400)], expect: [
            .current: .unchanged(1, guestCommand: 0x0400),
            .maskall2022: .unchanged(1, guestCommand: 0x0400),
            .original2020: .unchanged(1, guestCommand: 0x0400),
            .v5_6: .unchanged(1, guestCommand: 0x0400),
            .pre5_6: .unchanged(1, guestCommand: 0x0400),
        ]),

        // new == old returns success before any other check (§6.3 step 3).
        Scenario(name: "rewrite unchanged flags", setup: Setup(allowInterruptControl: false),
                 steps: [.msi(msiOff), .msix(msixOff)], expect: [
            .current: .unchanged(2),
            .maskall2022: .unchanged(2),
            .original2020: .unchanged(2),
            .v5_6: .unchanged(2),
            .pre5_6: .unchanged(2),
        ]),
        Scenario(name: "rewrite unchanged flags while the other type is on", setup: .msixOn, steps: [.msi(msiOff), .msix(msixOn)],
                 expect: [
            .current: .unchanged(2),
            .maskall2022: .unchanged(2),
            .original2020: .unchanged(2),
            .v5_6: .unchanged(2),
            .pre5_6: .unchanged(2),
        ]),

        // Bits outside allowed_bits (§6.3 step 4).
        Scenario(name: "change MSI QSIZE (multiple message enable)", setup: .allOff, steps: [.msi(0x00a0)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "enable MSI and change QSIZE together", setup: .allOff, steps: [.msi(0x00a1)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "write MSI 64BIT (read-only) differently", setup: .allOff, steps: [.msi(0x0001)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),
        Scenario(name: "write the MSI-X table size differently", setup: .allOff, steps: [.msix(0x8000)], expect: [
            .current: Expectation([denied]),
            .maskall2022: Expectation([denied]),
            .original2020: Expectation([denied]),
            .v5_6: Expectation([denied]),
            .pre5_6: .unchanged(1),
        ]),

        // Permissive: a raw write, no allow_interrupt_control, no exclusivity (§6.3 step 1).
        Scenario(name: "enable MSI while MSI-X is on", setup: Setup(msix: true, allowInterruptControl: false, permissive: true),
                 steps: [.msi(msiOn)], expect: [
            .current: Expectation([ok], msi: msiOn),
            .maskall2022: Expectation([ok], msi: msiOn),
            .original2020: Expectation([ok], msi: msiOn),
            .v5_6: Expectation([ok], msi: msiOn),
            .pre5_6: Expectation([ok], msi: msiOn),  // unhandled bytes, permissive: raw
        ]),
        Scenario(name: "MSI-X ENABLE|MASKALL", setup: Setup(allowInterruptControl: false, permissive: true),
                 steps: [.msix(msixOnMasked)], expect: [
            .current: Expectation([ok], msix: msixOnMasked),
            .maskall2022: Expectation([ok], msix: msixOnMasked),
            .original2020: Expectation([ok], msix: msixOnMasked),
            .v5_6: Expectation([ok], msix: msixOnMasked),
            .pre5_6: Expectation([ok], msix: msixOnMasked),
        ]),
        Scenario(name: "MSI QSIZE reaches hardware, which clamps it to one vector",
                 setup: Setup(allowInterruptControl: false, permissive: true), steps: [.msi(0x00f1)], expect: [
            .current: Expectation([ok], msi: msiOn),
            .maskall2022: Expectation([ok], msi: msiOn),
            .original2020: Expectation([ok], msi: msiOn),
            .v5_6: Expectation([ok], msi: msiOn),
            .pre5_6: Expectation([ok], msi: msiOn),
        ]),
        Scenario(name: "INTX_DISABLE is not a guest bit", setup: Setup(intx: true, allowInterruptControl: false, permissive: true),
                 steps: [.command(0x0400)], expect: [
            .current: .unchanged(1, guestCommand: 0x0400),
            .maskall2022: .unchanged(1, guestCommand: 0x0400),
            .original2020: .unchanged(1, guestCommand: 0x0400),
            .v5_6: .unchanged(1, guestCommand: 0x0400),
            .pre5_6: .unchanged(1, guestCommand: 0x0400),
        ]),
        Scenario(name: "INTX_DISABLE through step 4 still works", setup: Setup(intx: true, permissive: true),
                 steps: [.command(0x0400)], expect: [
            .current: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .maskall2022: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .original2020: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .v5_6: Expectation([ok], intxDisabled: true, guestCommand: 0x0400),
            .pre5_6: .unchanged(1, guestCommand: 0x0400),
        ]),
    ]

    static var rows: [Row] {
        scenarios.flatMap { scenario in
            KernelProfile.allCases.map { Row(profile: $0, scenario: scenario) }
        }
    }
}

// MARK: - Running a row

extension InterruptControlTests {
    /// Puts fixture A into `setup` (hardware by dom0's raw writes, the shadow directly, the
    /// flags through their sysfs attributes).
    static func prepare(_ setup: Setup, profile: KernelProfile) throws -> FixtureA {
        var fixture = try FixtureA(profile: profile)
        if setup.enabled {
            #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == ok)
            #expect(fixture.device.isEnabled)
        }
        var command = fixture.hwCommand
        command = setup.intx ? command & ~PCICommand.intxDisable : command | PCICommand.intxDisable
        fixture.hwWrite(PCIRegister.command, 2, UInt32(command))
        fixture.hwWrite(FixtureA.msiFlags, 2, UInt32(FixtureA.msiFlagsAtBind | (setup.msi ? MSIRegister.enable : 0)))
        let msix = FixtureA.msixFlagsAtBind | (setup.msix ? MSIXRegister.enable : 0)
            | (setup.maskall ? MSIXRegister.functionMask : 0)
        fixture.hwWrite(FixtureA.msixFlags, 2, UInt32(msix))
        let shadowDisabled = setup.shadowINTxDisable ?? !setup.intx
        var shadow = fixture.data.commandShadow
        shadow = shadowDisabled ? shadow | PCICommand.intxDisable : shadow & ~PCICommand.intxDisable
        fixture.dom0.deviceData[FixtureA.host]!.commandShadow = shadow
        if setup.allowInterruptControl && profile.hasInterruptControl {
            try fixture.dom0.setAllowInterruptControl(input: bytes("0000:03:00.0\n"))
        }
        if setup.permissive { try fixture.dom0.setPermissive(input: bytes("0000:03:00.0\n")) }
        return fixture
    }

    @Test("profiles × scenarios", arguments: rows)
    func rule(_ row: Row) throws {
        var fixture = try Self.prepare(row.scenario.setup, profile: row.profile)
        let before = (intxDisabled: fixture.hwCommand & PCICommand.intxDisable != 0, msi: fixture.hwMSIFlags,
                      msix: fixture.hwMSIXFlags)
        let errors = row.scenario.steps.map { fixture.write($0.offset, size: $0.size, $0.value) }
        let expected = row.expectation
        #expect(errors == expected.errors)
        #expect((fixture.hwCommand & PCICommand.intxDisable != 0) == (expected.intxDisabled ?? before.intxDisabled),
                "hw INTX_DISABLE")
        #expect(fixture.hwMSIFlags == expected.msi ?? before.msi, "hw MSI flags")
        #expect(fixture.hwMSIXFlags == expected.msix ?? before.msix, "hw MSI-X flags")
        if let command = expected.guestCommand {
            #expect(fixture.guestCommand() == command, "guest's command register")
        }
        // The guest reads the flags from hardware.
        #expect(fixture.read(FixtureA.msiFlags, size: 2).value == UInt32(fixture.hwMSIFlags))
        #expect(fixture.read(FixtureA.msixFlags, size: 2).value == UInt32(fixture.hwMSIXFlags))
    }

    @Test("the table covers every profile in every scenario")
    func tableIsComplete() {
        for scenario in Self.scenarios {
            #expect(Set(scenario.expect.keys) == Set(KernelProfile.allCases), "\(scenario.name)")
            for (profile, expectation) in scenario.expect {
                #expect(expectation.errors.count == scenario.steps.count, "\(scenario.name) [\(profile.rawValue)]")
            }
        }
    }
}

// MARK: - §6.4 xen_pcibk_get_interrupt_type

extension InterruptControlTests {
    struct TypeRow: Sendable, CustomTestStringConvertible {
        var profile: KernelProfile
        var setup: Setup
        var type: Int32
        var testDescription: String { "[\(profile.rawValue)] \(setup) → \(type)" }
    }

    static let typeRows: [TypeRow] = {
        let states: [Setup] = [
            .allOff, .intxOn, .msiOn, .msixOn, Setup(intx: true, msi: true), Setup(intx: true, msix: true),
            Setup(msi: true, msix: true),
        ]
        // NONE, INTX, MSI, MSIX, INTX+MSI, INTX+MSIX, MSI+MSIX for each profile's constants.
        let answers: [KernelProfile: [Int32]] = [
            .current: [0, 1, 2, 4, 2, 4, 6],  // INTx counted only with both off
            .maskall2022: [0, 1, 2, 4, 3, 5, 6],
            .original2020: [0, 1, 2, 4, 3, 5, 6],
            .v5_6: [0, 2, 4, 8, 6, 10, 12],  // "nothing" is 0, not NONE (1)
        ]
        return answers.flatMap { profile, types in
            zip(states, types).map { TypeRow(profile: profile, setup: $0, type: $1) }
        }
    }()

    @Test("the interrupt type as each profile computes it from hardware", arguments: typeRows)
    func interruptType(_ row: TypeRow) throws {
        let fixture = try Self.prepare(row.setup, profile: row.profile)
        #expect(InterruptControl.interruptType(fixture.device, profile: row.profile) == row.type)
    }
}

// MARK: - allow_interrupt_control itself (§1.8, §3.3)

extension InterruptControlTests {
    static let profilesWithControl = KernelProfile.allCases.filter(\.hasInterruptControl)

    @Test("allow_interrupt_control is listed by name and cleared by a guest release, with the bind snapshot restored",
          arguments: profilesWithControl)
    func releaseClearsAllow(_ profile: KernelProfile) throws {
        var fixture = try FixtureA(profile: profile)
        let builtInFields = fixture.data.fields
        let commandAtBind = fixture.hwCommand
        #expect(shown(fixture.dom0.allowInterruptControlText()) == "")
        try fixture.dom0.setAllowInterruptControl(input: bytes("03:00.0\n"))
        try fixture.dom0.setAllowInterruptControl(input: bytes("03:00.0\n"))
        #expect(shown(fixture.dom0.allowInterruptControlText()) == "0000:03:00.0\n")
        try fixture.dom0.setPermissive(input: bytes("03:00.0\n"))
        try fixture.dom0.addQuirk(input: bytes("03:00.0-a8:2:ffff\n"))

        // The guest enables the device, turns INTx off and MSI-X on (raw: permissive).
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0407) == ok)
        #expect(fixture.write(FixtureA.msixFlags, size: 2, UInt32(msixOn)) == ok)
        #expect(fixture.hwCommand & PCICommand.intxDisable != 0)
        #expect(fixture.hwMSIXFlags == msixOn)

        try fixture.dom0.detach(domain: FixtureA.frontend, address: FixtureA.host)
        #expect(!fixture.data.allowInterruptControl)
        #expect(shown(fixture.dom0.allowInterruptControlText()) == "")
        #expect(fixture.data.permissive, "permissive survives a release")
        #expect(fixture.data.fields == builtInFields, "quirk fields are freed")
        #expect(fixture.hwMSIXFlags == FixtureA.msixFlagsAtBind)
        #expect(fixture.hwMSIFlags == FixtureA.msiFlagsAtBind)
        #expect(fixture.hwCommand == commandAtBind, "snapshot restored, device disabled")
        #expect(!fixture.device.isEnabled)
        #expect(fixture.data.commandShadow == 0x0407, "cmd->val is not reset on release")
        #expect(shown(fixture.dom0.irqHandlersText()) == "0000:03:00.0:off:not acking:0\n", "fake ISR removed")
    }

    @Test("reset_device only forgets bus mastering: a never-enabled device keeps the snapshot's MASTER (§8.3)")
    func releaseKeepsSnapshotMaster() throws {
        // Firmware left bus mastering on; the bind snapshot (taken after the enable) has it.
        var fixture = try FixtureA(prepare: { $0.hardwareWrite(PCIRegister.command, width: 2, value: 0x0004) })
        #expect(fixture.data.savedState[PCIRegister.command] == 0x07)
        #expect(fixture.hwCommand == 0x0003, "bind disabled the device it had enabled: MASTER cleared")
        #expect(!fixture.device.isBusmaster)
        // The guest never enables the device; release restores the snapshot and disables nothing.
        try fixture.dom0.detach(domain: FixtureA.frontend, address: FixtureA.host)
        #expect(fixture.hwCommand == 0x0007)
        #expect(!fixture.device.isEnabled)
        #expect(!fixture.device.isBusmaster)
    }

    @Test("a bridge bound to pciback loses MWI at bind, keeps its MASTER bit (§8.3)")
    func bridgeReset() throws {
        var fixture = try FixtureA()
        let rootPort = try #require(fixture.dom0.device(FixtureA.rootPort))
        try fixture.dom0.unbind(driver: "pcieport", input: bytes("0000:00:1c.0\n"))
        rootPort.config.setWritable(PCIRegister.command, width: 2, mask: 0x0757)  // a bridge that implements MWI
        rootPort.hardwareWrite(PCIRegister.command, width: 2, value: 0x0017)
        try fixture.dom0.newSlot(input: bytes("0000:00:1c.0\n"))
        try fixture.dom0.bind(driver: PCIDriver.pcibackName, input: bytes("0000:00:1c.0\n"))
        #expect(rootPort.command & PCICommand.invalidate == 0)
        #expect(rootPort.command & PCICommand.master != 0, "only is_busmaster is cleared")
        #expect(!rootPort.isBusmaster)
        #expect(rootPort.isEnabled, "bridges are not disabled")
    }

    @Test("a release keeps the handled count")
    func releaseKeepsHandled() throws {
        var fixture = try FixtureA()
        fixture.dom0.deviceData[FixtureA.host]!.handledInterrupts = 7
        try fixture.releaseAndReattach()
        #expect(fixture.data.handledInterrupts == 7)
    }

    @Test("after a release the next guest needs allow_interrupt_control again", arguments: profilesWithControl)
    func releaseRequiresAllowAgain(_ profile: KernelProfile) throws {
        var fixture = try Self.prepare(Setup(msi: true), profile: profile)
        #expect(fixture.data.allowInterruptControl)
        try fixture.releaseAndReattach()
        // Disabling is allowed in every profile, but only with the flag.
        fixture.hwWrite(FixtureA.msiFlags, 2, UInt32(msiOn))
        #expect(fixture.write(FixtureA.msiFlags, size: 2, UInt32(msiOff)) == denied)
        #expect(fixture.hwMSIFlags == msiOn)
        try fixture.dom0.setAllowInterruptControl(input: bytes("03:00.0\n"))
        #expect(fixture.write(FixtureA.msiFlags, size: 2, UInt32(msiOff)) == ok)
        #expect(fixture.hwMSIFlags == msiOff)
    }

    @Test("unbind clears both flags (dev_data freed)")
    func unbindClearsFlags() throws {
        var fixture = try FixtureA()
        try fixture.dom0.setAllowInterruptControl(input: bytes("03:00.0\n"))
        try fixture.dom0.setPermissive(input: bytes("03:00.0\n"))
        try fixture.dom0.unbind(driver: PCIDriver.pcibackName, input: bytes("0000:03:00.0\n"))
        #expect(shown(fixture.dom0.allowInterruptControlText()) == "")
        #expect(shown(fixture.dom0.permissiveText()) == "")
        #expect(fixture.dom0.deviceData[FixtureA.host] == nil)
    }

    @Test("pre-5.6 has no allow_interrupt_control and no MSI/MSI-X fields")
    func pre56() throws {
        var fixture = try FixtureA(profile: .pre5_6)
        #expect(storeError { try fixture.dom0.setAllowInterruptControl(input: bytes("03:00.0\n")) } == .noSuchFileOrDirectory)
        let offsets = fixture.data.fields.map(\.offset)
        #expect(!offsets.contains(FixtureA.msi) && !offsets.contains(FixtureA.msiFlags))
        #expect(!offsets.contains(FixtureA.msix) && !offsets.contains(FixtureA.msixFlags))
        #expect(offsets.contains(FixtureA.pm) && offsets.contains(FixtureA.pmcsr))
        // An MSI flags write is an unhandled write: the one-time warning is logged.
        #expect(fixture.write(FixtureA.msiFlags, size: 2, UInt32(msiOn)) == ok)
        #expect(fixture.dom0.log.lines.contains { $0.contains("read-only configuration space field at offset 0x52, size 2") })
    }
}

// MARK: - §3.5 unbind while a guest owns the device

extension InterruptControlTests {
    @Test("unbind while attached: four warnings, forced release, the guest loses the device")
    func unbindWhileAttached() throws {
        var fixture = try FixtureA()
        let commandAtBind = fixture.hwCommand
        try fixture.dom0.setAllowInterruptControl(input: bytes("03:00.0\n"))
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0407) == ok)
        #expect(fixture.write(FixtureA.msiFlags, size: 2, UInt32(msiOn)) == ok)
        try fixture.dom0.unbind(driver: PCIDriver.pcibackName, input: bytes("0000:03:00.0\n"))
        #expect(fixture.dom0.log.lines.filter { $0.contains("******") }.count == 4)
        #expect(fixture.dom0.owners[FixtureA.host] == nil)
        #expect(fixture.dom0.frontends[FixtureA.frontend] == nil)
        #expect(fixture.read(0x00, size: 4).err == OpError.deviceNotFound)
        #expect(fixture.hwMSIFlags == msiOff)
        #expect(fixture.hwCommand == commandAtBind)
        #expect(!fixture.device.isEnabled)
        #expect(shown(fixture.dom0.quirksText()) == "")
        #expect(shown(fixture.dom0.irqHandlersText()) == "")
    }
}

// MARK: - §8.2 / §8.3 the PV frontend's MSI ops and the fake INTx handler

extension InterruptControlTests {
    static func enableMSIX(_ fixture: inout FixtureA, vectors: UInt32, entries: [UInt16]) -> PCIOperationResult {
        fixture.dom0.perform(
            PCIOperation(command: PCIOperation.Command.enableMSIX.rawValue, devfn: 0, value: vectors,
                         entries: entries.map { PCIOperation.MSIXEntry(entry: $0, vector: 0) }),
            frontend: FixtureA.frontend)
    }

    static func irqHandlers(_ fixture: FixtureA) -> String { shown(fixture.dom0.irqHandlersText()) }

    @Test("enable_msi / disable_msi: -5 on any refusal, ack_intr off while MSI is on")
    func pvMSI() throws {
        var fixture = try FixtureA()
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == ok)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:on:acking:0\n")

        let enable = fixture.op(.enableMSI)
        #expect(enable.error == 0)
        #expect(enable.value != 0 && enable.value == fixture.device.msiIRQ)
        #expect(fixture.device.kernelMSIEnabled)
        #expect(fixture.hwMSIFlags & MSIRegister.enable != 0)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:on:not acking:0\n")

        let again = fixture.op(.enableMSI, value: 7)
        #expect(again.error == -5)
        #expect(again.value == 0)
        let msix = Self.enableMSIX(&fixture, vectors: 1, entries: [0])
        #expect(msix.error == -Errno.noSuchDeviceOrAddress.rawValue)
        #expect(!fixture.device.kernelMSIXEnabled)

        let disable = fixture.op(.disableMSI)
        #expect(disable.error == 0)
        #expect(disable.value == FixtureA.irq)
        #expect(!fixture.device.kernelMSIEnabled)
        #expect(fixture.hwMSIFlags & MSIRegister.enable == 0)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:on:acking:0\n")
        #expect(fixture.op(.disableMSI).error == 0)
    }

    @Test("enable_msi while the kernel has MSI-X: -5")
    func pvMSIWhileMSIX() throws {
        var fixture = try FixtureA()
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == ok)
        #expect(Self.enableMSIX(&fixture, vectors: 2, entries: [0, 1]).error == 0)
        let result = fixture.op(.enableMSI)
        #expect(result.error == -5)
        #expect(result.value == 0)
        #expect(!fixture.device.kernelMSIEnabled)
    }

    @Test("enable_msix: checks in order, vectors on success, ack_intr off even when the PCI core fails")
    func pvMSIX() throws {
        var fixture = try FixtureA()
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == ok)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:on:acking:0\n")

        let tooMany = Self.enableMSIX(&fixture, vectors: 129, entries: Array(0..<129).map(UInt16.init))
        #expect(tooMany.error == -Errno.invalidArgument.rawValue)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:on:acking:0\n", "early refusals leave ack_intr")

        fixture.hwWrite(PCIRegister.command, 2, UInt32(fixture.hwCommand & ~PCICommand.memory))
        #expect(Self.enableMSIX(&fixture, vectors: 1, entries: [0]).error == -Errno.noSuchDeviceOrAddress.rawValue)
        fixture.hwWrite(PCIRegister.command, 2, UInt32(fixture.hwCommand | PCICommand.memory))

        // The table has 5 entries: entry 7 makes pci_enable_msix_exact fail.
        let failed = Self.enableMSIX(&fixture, vectors: 1, entries: [7])
        #expect(failed.error < 0)
        #expect(!fixture.device.kernelMSIXEnabled)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:on:not acking:0\n")

        let ok = Self.enableMSIX(&fixture, vectors: 2, entries: [0, 3])
        #expect(ok.error == 0)
        #expect(ok.entries.map(\.entry) == [0, 3])
        #expect(ok.entries.allSatisfy { $0.vector != 0 })
        #expect(fixture.device.kernelMSIXEnabled)
        #expect(fixture.hwMSIXFlags & MSIXRegister.enable != 0)
        #expect(Self.enableMSIX(&fixture, vectors: 1, entries: [0]).error == -Errno.alreadyInProgress.rawValue)

        let disable = fixture.op(.disableMSIX)
        #expect(disable.error == 0)
        #expect(disable.value == FixtureA.irq)
        #expect(!fixture.device.kernelMSIXEnabled)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:on:acking:0\n")
    }

    @Test("no fake INTx handler while the kernel has MSI enabled")
    func noISRWithKernelMSI() throws {
        var fixture = try FixtureA()
        #expect(fixture.op(.enableMSI).error == 0)
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0007) == ok)
        #expect(fixture.data.enableINTx)
        #expect(Self.irqHandlers(fixture) == "0000:03:00.0:off:not acking:0\n")
    }

    struct LookupRow: Sendable, CustomTestStringConvertible {
        var domain: UInt32
        var bus: UInt32
        var devfn: UInt32
        var command: Int32
        var error: Int32
        var testDescription: String { "cmd \(command) at \(domain):\(bus) devfn 0x\(String(devfn, radix: 16)) → \(error)" }
    }

    @Test("device lookup on the virtual bus and unknown commands", arguments: [
        LookupRow(domain: 0, bus: 0, devfn: 0x00, command: 0, error: 0),
        LookupRow(domain: 0, bus: 0, devfn: 0x100, command: 0, error: 0),  // high devfn bits ignored
        LookupRow(domain: 0, bus: 0, devfn: 0x08, command: 0, error: OpError.deviceNotFound),
        LookupRow(domain: 0, bus: 0, devfn: 0x01, command: 0, error: OpError.deviceNotFound),
        LookupRow(domain: 0, bus: 3, devfn: 0x00, command: 0, error: OpError.deviceNotFound),
        LookupRow(domain: 1, bus: 0, devfn: 0x00, command: 0, error: OpError.deviceNotFound),
        LookupRow(domain: 0, bus: 0, devfn: 0x00, command: 6, error: OpError.notImplemented),
        LookupRow(domain: 0, bus: 0, devfn: 0x00, command: 9, error: OpError.notImplemented),
        LookupRow(domain: 0, bus: 0, devfn: 0x00, command: 42, error: OpError.notImplemented),
    ])
    func lookup(_ row: LookupRow) throws {
        var fixture = try FixtureA()
        let result = fixture.dom0.perform(
            PCIOperation(command: row.command, domain: row.domain, bus: row.bus, devfn: row.devfn, offset: 0, size: 2),
            frontend: FixtureA.frontend)
        #expect(result.error == row.error)
        if row.error == 0 { #expect(result.value == 0x8086) }
    }
}
