import Foundation
import Testing

@testable import PCIBackFS

// Function resets, two layers kept apart:
// * hardware (EmulatedDevice.hardwareReset): what an FLR, a D3hot->D0 soft reset and a hot
//   reset leave (sticky bits, PME context, FLR's link exceptions);
// * the kernel (FunctionReset.swift): reset methods in pci_reset_fn_methods order, their probe
//   conditions, __pci_reset_function_locked, pci_reset_function, pci_restore_state step by step,
//   pciback's pcistub_reset_device_state under a PV or a PVH dom0.

// MARK: - Benches

enum ResetBench {
    static let endpoint = PCIAddress(bus: 3, slot: 0, function: 0)
    static let sibling = PCIAddress(bus: 3, slot: 0, function: 1)
    static let rootPort = PCIAddress(bus: 0, slot: 0x1c, function: 0)
    static let onRootBus = PCIAddress(bus: 0, slot: 6, function: 0)

    struct Shape: Sendable {
        var vendor: UInt16 = 0x1af4
        var device: UInt16 = 0x1234
        var classCode: UInt32 = 0x020000
        var express = true
        var flr = true
        var pm = true
        var noSoftReset = true
        var pmeFromD3cold = true
        var aer = true
        /// The AF capability's capability byte (TP 0x01, FLR 0x02); nil: no AF capability.
        var advancedFeatures: UInt8?
    }

    static func function(_ shape: Shape, at address: PCIAddress = endpoint) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: address, express: shape.express,
            identity: .init(vendor: shape.vendor, device: shape.device, classCode: shape.classCode, interruptPin: 1))
        builder.irq = 40
        builder.setBAR(0, .memory32, size: 64 * 1024, address: 0xfeb0_0000)
        if shape.pm { builder.addPowerManagement(pmeSupport: shape.pmeFromD3cold ? 0x19 : 0x09, noSoftReset: shape.noSoftReset) }
        builder.addMSI(vectors: 1, is64Bit: true, perVectorMasking: false)
        builder.addMSIX(tableSize: 4, tableBAR: 0, tableOffset: 0x2000, pbaBAR: 0, pbaOffset: 0x3000)
        var af = 0
        if shape.advancedFeatures != nil { af = builder.addCapability(CapabilityID.advancedFeatures, length: 6) }
        if shape.express {
            builder.addPCIExpress(.endpoint, functionReset: shape.flr)
            if shape.aer { builder.addAER() }
        }
        let device = builder.build(firmwareCommand: 0)
        if let cap = shape.advancedFeatures {
            device.config.store(af + 2, width: 1, value: 6)
            device.config.store(af + AFRegister.capabilities, width: 1, value: UInt32(cap))
        }
        return device
    }

    /// Host bridge, the root port to bus 3, and `devices`; nothing bound.
    static func dom0(_ devices: [EmulatedDevice], kind: Dom0Kind = .pv) throws -> Dom0 {
        let machine = Machine(name: "reset-bench", devices: [
            BuiltinMachine.hostBridge(),
            BuiltinMachine.rootPort(slot: 0x1c, function: 0, device: 0x3a40, secondaryBus: 3,
                                    memory: (0xfeb0_0000, 0xfebf_ffff), io: nil, irq: 27),
        ] + devices)
        return try Dom0(machine: machine, dom0Kind: kind)
    }

    /// The built-in machine's 82576 at 0000:03:00.0, bound to igb (MSI-X on by its driver), as
    /// the kernel sees it at boot.
    static let nic = PCIAddress(bus: 3, slot: 0, function: 0)
    static func builtin() throws -> Dom0 { try Dom0(machine: BuiltinMachine.make()) }
}

// MARK: - Hardware layer: what each reset leaves

/// One register of the bench function, set to a value before a reset, and what each kind of
/// reset leaves in it.
struct StickyCase: Sendable, CustomTestStringConvertible {
    var rule: String
    var register: @Sendable (EmulatedDevice) -> (offset: Int, width: Int, mask: UInt32)
    var shape: ResetBench.Shape
    var set: UInt32
    var kept: [HardwareReset]
    var testDescription: String { rule }

    static let all: [StickyCase] = [
        StickyCase(rule: "AER Uncorrectable Error Status is RW1CS: kept by FLR, soft reset and hot reset (PCIe §7.8.4.2)",
                   register: { ($0.capabilities.aer + AERRegister.uncorrectableStatus, 4, 0x0000_1000) },
                   shape: .init(noSoftReset: false), set: 0x0000_1000, kept: HardwareReset.allCases),
        StickyCase(rule: "AER Correctable Error Status is RW1CS: kept by every reset (PCIe §7.8.4.5)",
                   register: { ($0.capabilities.aer + AERRegister.correctableStatus, 4, 0x0000_0001) },
                   shape: .init(noSoftReset: false), set: 0x0000_0001, kept: HardwareReset.allCases),
        StickyCase(rule: "AER Uncorrectable Error Mask is RWS: kept by every reset (PCIe §7.8.4.3)",
                   register: { ($0.capabilities.aer + AERRegister.uncorrectableMask, 4, 0x0000_0010) },
                   shape: .init(noSoftReset: false), set: 0x0000_0010, kept: HardwareReset.allCases),
        StickyCase(rule: "PME_Status with PME from D3cold (aux power) is sticky: kept by every reset (PCI PM 1.2 PMCSR)",
                   register: { ($0.capabilities.powerManagement + PMRegister.controlStatus, 2, UInt32(PMRegister.pmeStatus)) },
                   shape: .init(noSoftReset: false, pmeFromD3cold: true), set: UInt32(PMRegister.pmeStatus), kept: HardwareReset.allCases),
        StickyCase(rule: "PME_Status without PME from D3cold: cleared by FLR and hot reset, kept by the D3hot->D0 soft reset (PME context)",
                   register: { ($0.capabilities.powerManagement + PMRegister.controlStatus, 2, UInt32(PMRegister.pmeStatus)) },
                   shape: .init(noSoftReset: false, pmeFromD3cold: false), set: UInt32(PMRegister.pmeStatus), kept: [.softReset]),
        StickyCase(rule: "PME_En without PME from D3cold: kept only by the soft reset (PME context)",
                   register: { ($0.capabilities.powerManagement + PMRegister.controlStatus, 2, UInt32(PMRegister.pmeEnable)) },
                   shape: .init(noSoftReset: false, pmeFromD3cold: false), set: UInt32(PMRegister.pmeEnable), kept: [.softReset]),
        StickyCase(rule: "Device Control Max_Payload_Size: FLR leaves it (PCIe §6.6.2), other resets do not",
                   register: { ($0.capabilities.pciExpress + PCIeRegister.deviceControl, 2, UInt32(PCIeRegister.devCtlMaxPayload)) },
                   shape: .init(noSoftReset: false), set: 0x2830, kept: [.functionLevel]),
        StickyCase(rule: "Link Control Common Clock Configuration: FLR leaves it (PCIe §6.6.2), other resets do not",
                   register: { ($0.capabilities.pciExpress + PCIeRegister.linkControl, 2, 0x0040) },
                   shape: .init(noSoftReset: false), set: 0x0040, kept: [.functionLevel]),
        StickyCase(rule: "Link Control Enable Clock Power Management: reset by every reset",
                   register: { ($0.capabilities.pciExpress + PCIeRegister.linkControl, 2, 0x0100) },
                   shape: .init(noSoftReset: false), set: 0x0100, kept: []),
        StickyCase(rule: "Command Memory Space: reset by every reset",
                   register: { _ in (PCIRegister.command, 2, UInt32(PCICommand.memory)) },
                   shape: .init(noSoftReset: false), set: UInt32(PCICommand.memory), kept: []),
    ]
}

@Suite("Hardware resets: sticky bits and what each reset type preserves")
struct HardwareResetTests {
    /// Each reset reached the way hardware gets it: Initiate FLR in Device Control, D3hot then
    /// D0 in PMCSR (No_Soft_Reset clear), Secondary Bus Reset in the bridge above.
    static func trigger(_ kind: HardwareReset, _ dom0: inout Dom0, _ device: EmulatedDevice) {
        switch kind {
        case .functionLevel:
            let devctl = device.capabilities.pciExpress + PCIeRegister.deviceControl
            device.hardwareWrite(devctl, width: 2, value: device.config.read(devctl, width: 2) | UInt32(PCIeRegister.devCtlInitiateFLR))
        case .softReset:
            let pmcsr = device.capabilities.powerManagement + PMRegister.controlStatus
            let keep = device.config.read(pmcsr, width: 2) & ~UInt32(PMRegister.stateMask | PMRegister.pmeStatus)
            device.hardwareWrite(pmcsr, width: 2, value: keep | 3)
            device.hardwareWrite(pmcsr, width: 2, value: keep)
        case .hotReset:
            let control = dom0.hostRead(ResetBench.rootPort, offset: PCIRegister.bridgeControl, width: 2)
            dom0.hostWrite(ResetBench.rootPort, offset: PCIRegister.bridgeControl, width: 2,
                           value: control | UInt32(PCIBridgeControl.secondaryBusReset))
            dom0.hostWrite(ResetBench.rootPort, offset: PCIRegister.bridgeControl, width: 2, value: control)
        }
    }

    @Test("a register across each reset type", arguments: StickyCase.all, HardwareReset.allCases)
    func stickiness(_ row: StickyCase, _ kind: HardwareReset) throws {
        let device = ResetBench.function(row.shape)
        var dom0 = try ResetBench.dom0([device])
        let (offset, width, mask) = row.register(device)
        device.config.store(offset, width: width, value: (device.config.read(offset, width: width) & ~mask) | (row.set & mask))
        #expect(device.config.read(offset, width: width) & mask == row.set & mask, "set before the reset")
        Self.trigger(kind, &dom0, device)
        let expected = row.kept.contains(kind) ? row.set & mask : ConfigSpace(bytes: device.resetImage).read(offset, width: width) & mask
        #expect(device.config.read(offset, width: width) & mask == expected, "\(kind)")
    }

    @Test("a hot reset reaches every function below the bridge, and only those")
    func hotResetScope() throws {
        let below = ResetBench.function(.init())
        let elsewhere = ResetBench.function(.init(), at: ResetBench.onRootBus)
        var dom0 = try ResetBench.dom0([below, elsewhere])
        for device in [below, elsewhere] { device.hardwareWrite(PCIRegister.command, width: 2, value: UInt32(PCICommand.memory)) }
        Self.trigger(.hotReset, &dom0, below)
        #expect(below.command & PCICommand.memory == 0)
        #expect(elsewhere.command & PCICommand.memory != 0)
    }

    @Test("AF Initiate FLR resets the function only with the AF capability's FLR bit (PCI AF ECN)",
          arguments: [(UInt8(0x03), true), (UInt8(0x01), false), (UInt8(0x00), false)])
    func advancedFeaturesFLR(_ capability: UInt8, _ resets: Bool) throws {
        let device = ResetBench.function(.init(express: false, advancedFeatures: capability))
        device.hardwareWrite(PCIRegister.command, width: 2, value: UInt32(PCICommand.memory))
        device.hardwareWrite(device.capabilities.advancedFeatures + AFRegister.control, width: 1, value: 1)
        #expect((device.command & PCICommand.memory == 0) == resets)
    }
}

// MARK: - Kernel layer: reset methods

struct MethodCase: Sendable, CustomTestStringConvertible {
    var rule: String
    var shape: ResetBench.Shape
    var address: PCIAddress = ResetBench.endpoint
    var withSibling = false
    var expected: [ResetMethod]
    var testDescription: String { rule }

    static let all: [MethodCase] = [
        MethodCase(rule: "pcie_reset_flr (DevCap FLR) and pci_parent_bus_reset (alone below a bridge)",
                   shape: .init(), expected: [.flr, .bus]),
        MethodCase(rule: "pci_pm_reset: PM capability without No_Soft_Reset, after flr and before bus",
                   shape: .init(noSoftReset: false), expected: [.flr, .pm, .bus]),
        MethodCase(rule: "pci_pm_reset: No_Soft_Reset set, no pm", shape: .init(flr: false), expected: [.bus]),
        MethodCase(rule: "pci_parent_bus_reset: another function on the bus, no bus",
                   shape: .init(), withSibling: true, expected: [.flr]),
        MethodCase(rule: "pci_parent_bus_reset: on a root bus (no bus->self), no bus; nothing else: none",
                   shape: .init(flr: false), address: ResetBench.onRootBus, expected: []),
        MethodCase(rule: "pci_af_flr: AF capability with TP and FLR",
                   shape: .init(express: false, flr: false, advancedFeatures: 0x03), address: ResetBench.onRootBus, expected: [.afFLR]),
        MethodCase(rule: "pci_af_flr: AF capability with FLR but without TP, no af_flr",
                   shape: .init(express: false, flr: false, advancedFeatures: 0x02), address: ResetBench.onRootBus, expected: []),
        MethodCase(rule: "pci_dev_specific_reset: 8086:10ed (reset_intel_82599_sfp_virtfn) comes first",
                   shape: .init(vendor: 0x8086, device: 0x10ed), expected: [.deviceSpecific, .flr, .bus]),
        MethodCase(rule: "pci_dev_specific_reset: 144d:a804 NVMe (nvme_disable_and_flr) needs FLR",
                   shape: .init(vendor: 0x144d, device: 0xa804, classCode: 0x010802, flr: false), expected: [.bus]),
        MethodCase(rule: "all of them, in pci_reset_fn_methods order",
                   shape: .init(vendor: 0x8086, device: 0x10ed, noSoftReset: false, advancedFeatures: 0x03),
                   expected: [.deviceSpecific, .flr, .afFLR, .pm, .bus]),
    ]
}

@Suite("Reset methods (pci_init_reset_methods, __pci_reset_function_locked, pci_reset_function)")
struct ResetMethodTests {
    @Test("which methods apply, in the kernel's order", arguments: MethodCase.all)
    func methods(_ row: MethodCase) throws {
        var devices = [ResetBench.function(row.shape, at: row.address)]
        if row.withSibling { devices.append(ResetBench.function(.init(), at: ResetBench.sibling)) }
        let dom0 = try ResetBench.dom0(devices)
        #expect(dom0.resetMethods(row.address) == row.expected)
        let client = SRIOVClient(dom0)
        let names = try client.list("bus/pci/devices/\(row.address)")
        #expect(names.contains("reset") == !row.expected.isEmpty, "reset exists iff a method applies (pci_reset_supported)")
        #expect(names.contains("reset_method") == !row.expected.isEmpty)
        if !row.expected.isEmpty {
            #expect(try client.readBytes("bus/pci/devices/\(row.address)/reset_method")
                    == Array((row.expected.map(\.rawValue).joined(separator: " ") + "\n").utf8))
        }
    }

    @Test("a bridge (dev->subordinate) gets no bus reset from its parent; the root port has no method at all")
    func bridgeHasNoBusReset() throws {
        let dom0 = try ResetBench.dom0([ResetBench.function(.init())])
        #expect(dom0.resetMethods(ResetBench.rootPort) == [])
        #expect(!dom0.hasResetMethod(ResetBench.rootPort))
    }

    @Test("pci_reset_function without a method: ENOTTY and nothing changes; no reset file (ENOENT)")
    func noMethod() throws {
        let device = ResetBench.function(.init(flr: false), at: ResetBench.onRootBus)
        var dom0 = try ResetBench.dom0([device])
        device.hardwareWrite(PCIRegister.command, width: 2, value: UInt32(PCICommand.memory | PCICommand.master))
        device.faults.resetFails = .sticky
        let before = device.config.bytes
        #expect(throws: Errno.inappropriateIoctl) { try dom0.pciResetFunction(ResetBench.onRootBus) }
        #expect(device.config.bytes == before)
        #expect(device.faults.resetFails == .sticky, "no method ran, so no reset could fail")
        let client = SRIOVClient(dom0)
        #expect(client.write("1", "bus/pci/devices/\(ResetBench.onRootBus)/reset") == .failure(.noSuchFileOrDirectory))
    }

    @Test("pci_reset_function: the first applicable method runs (bus is not used when flr applies)")
    func firstMethodRuns() throws {
        let device = ResetBench.function(.init())
        var dom0 = try ResetBench.dom0([device])
        try dom0.pciResetFunction(ResetBench.endpoint)
        let bridge = try #require(dom0.machine[ResetBench.rootPort])
        #expect(bridge.config.read(PCIRegister.bridgeControl, width: 2) & UInt32(PCIBridgeControl.secondaryBusReset) == 0)
    }

    @Test("reset_method store: a supported list, unsupported or unknown names EINVAL (unchanged), \"\" disables (then ENOTTY), default")
    func resetMethodStore() throws {
        let device = ResetBench.function(.init())
        let client = SRIOVClient(try ResetBench.dom0([device]))
        let file = "bus/pci/devices/\(ResetBench.endpoint)/reset_method"
        let reset = "bus/pci/devices/\(ResetBench.endpoint)/reset"
        #expect(try client.readBytes(file) == bytes("flr bus\n"))
        #expect(client.write("bus\n", file) == .success(4))
        #expect(try client.readBytes(file) == bytes("bus\n"))
        #expect(client.write("pm", file) == .failure(.invalidArgument), "pm does not apply (No_Soft_Reset)")
        #expect(client.write("bogus", file) == .failure(.invalidArgument))
        #expect(try client.readBytes(file) == bytes("bus\n"))
        #expect(client.write("1", reset) == .success(1))
        #expect(client.write("\n", file) == .success(1), "echo \"\" > reset_method")
        #expect(try client.readBytes(file) == [])
        #expect(client.write("1", reset) == .failure(.inappropriateIoctl), "the file stays; no method: -ENOTTY")
        #expect(client.write("default", file) == .success(7))
        #expect(try client.readBytes(file) == bytes("flr bus\n"))
    }

    @Test("a failing reset method ends the walk with its error; pci_dev_restore still runs")
    func failingMethod() throws {
        var dom0 = try ResetBench.builtin()
        let device = try #require(dom0.machine[ResetBench.nic])
        let command = device.command
        device.faults.resetFails = .sticky
        #expect(throws: Errno.ioError) { try dom0.pciResetFunction(ResetBench.nic) }
        #expect(device.command == command, "Command written back by pci_restore_state after the failed reset")
    }
}

// MARK: - Kernel layer: pci_save_state / pci_restore_state

struct RestoreCase: Sendable, CustomTestStringConvertible {
    enum Action: Sendable {
        /// `pci_reset_function` (sysfs reset).
        case resetFunction
        /// pci_save_state, then the register changed to the value, then pci_restore_state.
        case saveChangeRestore(offset: @Sendable (EmulatedDevice) -> Int, width: Int, value: UInt32)
    }

    var step: String
    var prepare: @Sendable (inout Dom0, EmulatedDevice) throws -> Void = { _, _ in }
    var action: Action = .resetFunction
    var check: @Sendable (Dom0, EmulatedDevice) -> Bool
    var testDescription: String { step }

    static let msix: @Sendable (EmulatedDevice) -> UInt16 = { $0.msixFlags ?? 0 }
    static let msi: @Sendable (EmulatedDevice) -> UInt16 = { $0.msiFlags ?? 0 }

    /// igb's MSI-X off (the kernel's), then Enable (bit 0 of MSI and bit 15 of MSI-X flags) set
    /// in `flags` by a raw config write, as a guest with allow_interrupt_control does.
    static func rawEnable(_ flags: @escaping @Sendable (EmulatedDevice) -> Int) -> @Sendable (inout Dom0, EmulatedDevice) throws -> Void {
        { _, device in
            device.disableMSIX()
            let enable = flags(device) == device.capabilities.msi + MSIRegister.flags ? MSIRegister.enable : MSIXRegister.enable
            device.hardwareWrite(flags(device), width: 2, value: UInt32(enable))
        }
    }

    static let all: [RestoreCase] = [
        RestoreCase(step: "pci_restore_config_space: Command (IO, MEMORY, MASTER as igb left it) back after the FLR",
                    check: { _, device in device.command & 0x0007 == 0x0007 }),
        RestoreCase(step: "pci_restore_config_space: BAR 0 back at its address",
                    check: { _, device in device.config.read(PCIRegister.baseAddress0, width: 4) & ~0xf == UInt32(truncatingIfNeeded: device.bars[0]!.address) }),
        RestoreCase(step: "pci_restore_pcie_state: Device Control (relaxed ordering off) back",
                    prepare: { _, device in device.hardwareWrite(device.capabilities.pciExpress + PCIeRegister.deviceControl, width: 2, value: 0x2800) },
                    check: { _, device in device.config.read(device.capabilities.pciExpress + PCIeRegister.deviceControl, width: 2) == 0x2800 }),
        RestoreCase(step: "pci_restore_pcie_state: Link Control (Enable Clock PM, which FLR clears) back",
                    prepare: { _, device in device.hardwareWrite(device.capabilities.pciExpress + PCIeRegister.linkControl, width: 2, value: 0x0100) },
                    check: { _, device in device.config.read(device.capabilities.pciExpress + PCIeRegister.linkControl, width: 2) == 0x0100 }),
        RestoreCase(step: "pci_restore_pcie_state: Device Control 2 back (version 2 capability)",
                    prepare: { _, device in device.hardwareWrite(device.capabilities.pciExpress + PCIeRegister.deviceControl2, width: 2, value: 0x0005) },
                    check: { _, device in device.config.read(device.capabilities.pciExpress + PCIeRegister.deviceControl2, width: 2) == 0x0005 }),
        RestoreCase(step: "pci_aer_clear_status: AER status (sticky, kept by the FLR) cleared when the OS owns AER",
                    prepare: { _, device in device.config.store(device.capabilities.aer + AERRegister.uncorrectableStatus, width: 4, value: 0x1000) },
                    check: { _, device in device.config.read(device.capabilities.aer + AERRegister.uncorrectableStatus, width: 4) == 0 }),
        RestoreCase(step: "pci_aer_clear_status: AER status kept when firmware owns AER (not pcie_aer_is_native)",
                    prepare: { dom0, device in
                        dom0.aerOwnedByOS = false
                        device.config.store(device.capabilities.aer + AERRegister.correctableStatus, width: 4, value: 0x0001)
                    },
                    check: { _, device in device.config.read(device.capabilities.aer + AERRegister.correctableStatus, width: 4) == 0x0001 }),
        RestoreCase(step: "pci_restore_aer_state: the saved Uncorrectable Error Mask written back",
                    action: .saveChangeRestore(offset: { $0.capabilities.aer + AERRegister.uncorrectableMask }, width: 4, value: 0x0000_0010),
                    check: { _, device in device.config.read(device.capabilities.aer + AERRegister.uncorrectableMask, width: 4) == 0 }),
        RestoreCase(step: "pci_restore_msi_state: MSI-X on again when the kernel enabled it (igb), Function Mask off",
                    check: { _, device in msix(device) & MSIXRegister.enable != 0 && msix(device) & MSIXRegister.functionMask == 0 && device.kernelMSIXEnabled }),
        RestoreCase(step: "pci_restore_msi_state: MSI-X enabled by a raw config write only stays off (dev->msix_enabled clear)",
                    prepare: rawEnable { $0.capabilities.msix + MSIXRegister.flags },
                    check: { _, device in msix(device) & MSIXRegister.enable == 0 && !device.kernelMSIXEnabled }),
        RestoreCase(step: "pci_restore_msi_state: MSI on again when the kernel enabled it, INTx off",
                    prepare: { _, device in
                        device.disableMSIX()
                        try device.enableMSI()
                    },
                    check: { _, device in msi(device) & MSIRegister.enable != 0 && device.command & PCICommand.intxDisable != 0 }),
        RestoreCase(step: "pci_restore_msi_state: MSI enabled by a raw config write only stays off (dev->msi_enabled clear)",
                    prepare: rawEnable { $0.capabilities.msi + MSIRegister.flags },
                    check: { _, device in msi(device) & MSIRegister.enable == 0 && !device.kernelMSIEnabled }),
        RestoreCase(step: "pci_restore_iov_state (sriov_restore_state): VF Enable, MSE and NumVFs back after the PF's FLR",
                    prepare: { dom0, _ in try dom0.storeNumVFs(ResetBench.nic, input: bytes("2")) },
                    check: { dom0, device in
                        let sriov = SRIOVCapability(device)!
                        return sriov.read(device, SRIOVCapability.Register.control, width: 2) & 0x0009 == 0x0009
                            && sriov.read(device, SRIOVCapability.Register.numVFs, width: 2) == 2
                            && dom0.sriov[ResetBench.nic]?.numVFs == 2
                    }),
        RestoreCase(step: "pci_restore_iov_state (sriov_restore_state): nothing while VF Enable is set",
                    prepare: { dom0, _ in try dom0.storeNumVFs(ResetBench.nic, input: bytes("2")) },
                    action: .saveChangeRestore(offset: { SRIOVCapability($0)!.offset + SRIOVCapability.Register.systemPageSize }, width: 4, value: 2),
                    check: { _, device in
                        let sriov = SRIOVCapability(device)!
                        return sriov.read(device, SRIOVCapability.Register.systemPageSize, width: 4) == 2
                    }),
        RestoreCase(step: "pci_dev_save_and_disable: D0 before the save, so the function ends in D0",
                    prepare: { _, device in try device.setPowerState(3) },
                    check: { _, device in device.powerState == 0 }),
    ]
}

@Suite("pci_restore_state: each step and its condition")
struct RestoreStateTests {
    @Test("a step of pci_save_state/pci_restore_state on the 82576", arguments: RestoreCase.all)
    func step(_ row: RestoreCase) throws {
        var dom0 = try ResetBench.builtin()
        let device = try #require(dom0.machine[ResetBench.nic])
        try row.prepare(&dom0, device)
        switch row.action {
        case .resetFunction:
            try dom0.pciResetFunction(ResetBench.nic)
        case .saveChangeRestore(let offset, let width, let value):
            device.saveState()
            device.hardwareWrite(offset(device), width: width, value: value)
            dom0.restoreState(ResetBench.nic)
        }
        #expect(row.check(dom0, device))
    }

    @Test("issue 12: a guest's raw MSI-X enable (allow_interrupt_control) does not survive `reset`; enable_msix then works")
    func guestMSIXThenReset() throws {
        var fixture = try FixtureA()
        try fixture.dom0.setAllowInterruptControl(input: bytes(FixtureA.name))
        #expect(fixture.write(FixtureA.msixFlags, size: 2, 0xc004) == 0)
        #expect(fixture.write(PCIRegister.command, size: 2, 0x0407) == 0)
        #expect(fixture.write(FixtureA.msixFlags, size: 2, 0x8004) == 0)
        #expect(fixture.hwMSIXFlags & MSIXRegister.enable != 0, "the guest's write reached the hardware")
        #expect(!fixture.device.kernelMSIXEnabled)
        let client = SRIOVClient(fixture.dom0)
        #expect(client.write("1", "bus/pci/devices/\(FixtureA.name)/reset") == .success(1))
        let (flags, result) = client.dom0 { dom0 in
            let flags = dom0.machine[FixtureA.host]?.msixFlags ?? 0
            let result = dom0.perform(
                PCIOperation(command: PCIOperation.Command.enableMSIX.rawValue, devfn: UInt32(FixtureA.virtual.devfn), value: 1,
                             entries: [.init(entry: 0, vector: 0)]),
                frontend: FixtureA.frontend)
            return (flags, result)
        }
        #expect(flags & MSIXRegister.enable == 0, "pci_restore_msi_state skips MSI-X the kernel did not enable")
        #expect(result.error == 0, "enable_msix: not -EALREADY (-114)")
    }

    @Test("pciback's PM init writes PMCSR back only when PME_En is set, so a sticky PME_Status clears only then",
          arguments: [(PMRegister.pmeEnable | PMRegister.pmeStatus, UInt16(0)), (PMRegister.pmeStatus, PMRegister.pmeStatus)])
    func pmInitClearsPMEStatus(_ before: UInt16, _ after: UInt16) throws {
        let fixture = try FixtureA { device in
            device.config.store(FixtureA.pmcsr, width: 2, value: device.config.read(FixtureA.pmcsr, width: 2) | UInt32(before))
        }
        #expect(UInt16(fixture.hw(FixtureA.pmcsr, 2)) & (PMRegister.pmeEnable | PMRegister.pmeStatus) == after)
    }
}

// MARK: - pciback: PV and PVH dom0

struct Dom0KindCase: Sendable, CustomTestStringConvertible {
    var kind: Dom0Kind
    var mode: DeviceFaults.Mode
    var firstBind: Errno?
    var secondBind: Errno?
    var testDescription: String { "\(kind) dom0, reset \(mode): bind \(firstBind.map { "fails \($0)" } ?? "succeeds")" }

    static let all: [Dom0KindCase] = [
        // pcistub_reset_device_state: the function reset's result is ignored; only xen_reset_device
        // (PVH only) fails the bind.
        Dom0KindCase(kind: .pv, mode: .sticky, firstBind: nil, secondBind: nil),
        Dom0KindCase(kind: .pv, mode: .once, firstBind: nil, secondBind: nil),
        Dom0KindCase(kind: .pvh, mode: .sticky, firstBind: .ioError, secondBind: .ioError),
        Dom0KindCase(kind: .pvh, mode: .once, firstBind: .ioError, secondBind: nil),
        Dom0KindCase(kind: .pvh, mode: .off, firstBind: nil, secondBind: nil),
    ]
}

@Suite("pciback's reset step in a PV and a PVH dom0 (pcistub_reset_device_state)")
struct Dom0KindTests {
    @Test("bind with the reset fault", arguments: Dom0KindCase.all)
    func bind(_ row: Dom0KindCase) throws {
        var dom0 = try Dom0(machine: FixtureA.makeMachine(), dom0Kind: row.kind)
        dom0.machine[FixtureA.host]!.faults.resetFails = row.mode
        try dom0.newSlot(input: bytes(FixtureA.name))
        #expect(storeError { try dom0.bind(driver: PCIDriver.pcibackName, input: bytes(FixtureA.name)) } == row.firstBind)
        #expect(dom0.log.lines.contains { $0.contains("could not enable or reset the device") } == (row.firstBind != nil))
        if row.firstBind != nil {
            #expect(storeError { try dom0.bind(driver: PCIDriver.pcibackName, input: bytes(FixtureA.name)) } == row.secondBind)
        }
        let bound = row.firstBind == nil || row.secondBind == nil
        #expect(dom0.isBoundToPciback(FixtureA.host) == bound)
    }

    @Test("PV: the fault makes the function reset fail (sysfs reset EIO) and nothing else", arguments: Dom0Kind.allCases)
    func sysfsReset(_ kind: Dom0Kind) throws {
        var dom0 = try Dom0(machine: FixtureA.makeMachine(), dom0Kind: kind)
        dom0.machine[FixtureA.host]!.faults.resetFails = .sticky
        #expect(throws: Errno.ioError) { try dom0.pciResetFunction(FixtureA.host) }
    }

    @Test("a PV dom0 whose reset fails still seizes, and the hardware was not reset (registers as restored)")
    func pvSeizeWithoutReset() throws {
        var dom0 = try Dom0(machine: FixtureA.makeMachine(), dom0Kind: .pv)
        let device = dom0.machine[FixtureA.host]!
        device.faults.resetFails = .sticky
        try dom0.newSlot(input: bytes(FixtureA.name))
        try dom0.bind(driver: PCIDriver.pcibackName, input: bytes(FixtureA.name))
        #expect(dom0.log.lines.contains { $0.contains("seizing device") })
        #expect(dom0.deviceData[FixtureA.host] != nil)
    }

    @Test("--state records --dom0: a start with the other kind is refused, an old header means pv")
    func stateOptions() throws {
        func options(_ kind: String) -> StateOptions {
            StateOptions(profile: "current", machine: nil, lspciDumps: [], noBuiltin: false, hide: "", permissive: false,
                         passthrough: false, legacyModes: false, dom0: kind)
        }
        #expect(options("pvh").differences(from: options("pv")) == ["--dom0: the state has pvh, this start has pv"])
        #expect(options("pv").differences(from: options("pv")).isEmpty)
        var old = options("pv")
        old.dom0 = nil
        #expect(old.differences(from: options("pv")).isEmpty)
        #expect(old.differences(from: options("pvh")) == ["--dom0: the state has pv, this start has pvh"])
        #expect(options("pvh").commandLine.hasSuffix("--dom0 pvh"))
    }
}
