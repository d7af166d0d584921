import Testing

@testable import PCIBackFS

// Spec §10 "Fixture A": the device, the machine around it, and a dom0 with the device bound to
// pciback and exported to frontend domain 1 through vpci. Guest accesses go through the PV op
// path (`Dom0.perform`), hardware is read straight from the emulated config space.

/// Store input as kernfs hands it to a store: the raw bytes of the write.
func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Runs a sysfs store and returns its errno (nil: the store succeeded). Any other error type
/// is a test failure.
func storeError(_ body: () throws -> Void) -> Errno? {
    do {
        try body()
        return nil
    } catch let error as Errno {
        return error
    } catch {
        Issue.record("expected an Errno, got \(error)")
        return nil
    }
}

/// What a show callback produced, as text.
func shown(_ output: [UInt8]) -> String { String(decoding: output, as: UTF8.self) }

/// PV op error codes (pciif.h XEN_PCI_ERR_*, and the raw negative errnos passed through).
enum OpError {
    static let success: Int32 = 0
    static let deviceNotFound: Int32 = -1
    static let invalidOffset: Int32 = -2
    static let accessDenied: Int32 = -3
    static let notImplemented: Int32 = -4
    static let invalid: Int32 = -22
}

struct FixtureA {
    // MARK: - Addresses and layout (spec §10)

    static let host = PCIAddress(bus: 3, slot: 0, function: 0)
    static let rootPort = PCIAddress(bus: 0, slot: 0x1c, function: 0)
    static let hostBridge = PCIAddress(bus: 0, slot: 0, function: 0)
    /// Where vpci puts the device in the guest.
    static let virtual = PCIAddress(bus: 0, slot: 0, function: 0)
    static let frontend: UInt32 = 1
    static let name = "0000:03:00.0"

    static let pm = 0x40
    static let msi = 0x50
    static let msix = 0x70
    static let pcie = 0xa0
    static let msiFlags = msi + 2
    static let msixFlags = msix + 2
    static let pmcsr = pm + 4

    /// MSI flags at bind: 64-bit, one vector, disabled.
    static let msiFlagsAtBind: UInt16 = 0x0080
    /// MSI-X flags at bind: table size 5 (encoded 4), disabled, not masked.
    static let msixFlagsAtBind: UInt16 = 0x0004
    static let irq: UInt32 = 43

    // MARK: - Hardware

    /// The 0000:03:00.0 function. `express: false` is the conventional-PCI variant of case 19
    /// (no PCI Express capability, 256-byte config space, SPECIAL implemented).
    static func makeDevice(express: Bool = true) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: host, express: express,
            identity: .init(vendor: 0x8086, device: 0x10d3, subsystemVendor: 0x8086, subsystemDevice: 0xa01f,
                            classCode: 0x020000, interruptPin: 1))
        builder.label = "fixture A"
        builder.irq = irq
        builder.setBISTCapable()
        builder.setBAR(0, .memory32, size: 128 * 1024, address: 0xfebc_0000)
        builder.setBAR(2, .io, size: 32, address: 0xe000)
        builder.setBAR(3, .memory32, size: 16 * 1024, address: 0xfebe_0000)
        builder.setBAR(4, .memory64Prefetchable, size: 256 << 20, address: 0x3_8000_0000)
        builder.setROM(size: 256 * 1024, address: 0xfeb8_0000)
        builder.placeNextCapability(at: pm)
        #expect(builder.addPowerManagement(pmeSupport: 0x19, noSoftReset: true) == pm)
        builder.placeNextCapability(at: msi)
        #expect(builder.addMSI(vectors: 1, is64Bit: true, perVectorMasking: false) == msi)
        builder.placeNextCapability(at: msix)
        #expect(builder.addMSIX(tableSize: 5, tableBAR: 3, tableOffset: 0, pbaBAR: 3, pbaOffset: 0x2000) == msix)
        if express {
            builder.placeNextCapability(at: pcie)
            #expect(builder.addPCIExpress(.endpoint, functionReset: true) == pcie)
        }
        let device = builder.build(firmwareCommand: 0)
        // Firmware programs a 64-byte cache line.
        device.hardwareWrite(PCIRegister.cacheLineSize, width: 1, value: 0x10)
        return device
    }

    /// Host bridge, the root port whose secondary bus is 3, and the device behind it.
    static func makeMachine(express: Bool = true, device: EmulatedDevice? = nil) -> Machine {
        Machine(name: "fixture-A", devices: [
            BuiltinMachine.hostBridge(),
            BuiltinMachine.rootPort(slot: 0x1c, function: 0, device: 0x3a40, secondaryBus: 3,
                                    memory: (0xfeb0_0000, 0xfebf_ffff), io: (0xe000, 0xefff), irq: 27),
            device ?? makeDevice(express: express),
        ])
    }

    /// A dom0 that has booted with the machine: nothing hidden, 0000:03:00.0 has no driver.
    static func makeUnboundDom0(profile: KernelProfile = .current, express: Bool = true,
                                globalPermissive: Bool = false) throws -> Dom0 {
        try Dom0(machine: makeMachine(express: express),
                 policy: FilterPolicy(profile: profile, globalPermissive: globalPermissive))
    }

    // MARK: - The bound, exported fixture

    var dom0: Dom0
    let device: EmulatedDevice

    /// new_slot + bind + export to domain 1. `prepare` runs on the hardware before the bind
    /// (for tests that need a particular state to be snapshotted).
    init(profile: KernelProfile = .current, express: Bool = true, globalPermissive: Bool = false,
         prepare: (EmulatedDevice) -> Void = { _ in }) throws {
        let device = FixtureA.makeDevice(express: express)
        prepare(device)
        var dom0 = try Dom0(machine: FixtureA.makeMachine(express: express, device: device),
                            policy: FilterPolicy(profile: profile, globalPermissive: globalPermissive))
        try dom0.newSlot(input: bytes(FixtureA.name + "\n"))
        try dom0.bind(driver: PCIDriver.pcibackName, input: bytes(FixtureA.name + "\n"))
        let virtual = try dom0.attach(domain: FixtureA.frontend, address: FixtureA.host)
        #expect(virtual == FixtureA.virtual)
        self.dom0 = dom0
        self.device = device
    }

    // MARK: - Guest side (pcifront ops on the virtual device 0000:00:00.0)

    mutating func op(_ command: PCIOperation.Command, offset: Int = 0, size: Int = 0, value: UInt32 = 0)
        -> PCIOperationResult
    {
        dom0.perform(
            PCIOperation(command: command.rawValue, devfn: UInt32(FixtureA.virtual.devfn), offset: Int32(offset),
                         size: Int32(size), value: value),
            frontend: FixtureA.frontend)
    }

    /// conf_read: (op->err, op->value).
    mutating func read(_ offset: Int, size: Int) -> (err: Int32, value: UInt32) {
        let result = op(.configRead, offset: offset, size: size)
        return (result.error, result.value)
    }

    /// conf_write: op->err.
    @discardableResult
    mutating func write(_ offset: Int, size: Int, _ value: UInt32) -> Int32 {
        op(.configWrite, offset: offset, size: size, value: value).error
    }

    /// The guest's view of the command register.
    mutating func guestCommand() -> UInt16 { UInt16(truncatingIfNeeded: read(PCIRegister.command, size: 2).value) }

    // MARK: - Hardware side

    func hw(_ offset: Int, _ width: Int) -> UInt32 { device.config.read(offset, width: width) }
    var hwCommand: UInt16 { device.command }
    var hwMSIFlags: UInt16 { UInt16(hw(FixtureA.msiFlags, 2)) }
    var hwMSIXFlags: UInt16 { UInt16(hw(FixtureA.msixFlags, 2)) }

    /// A raw write from dom0 (root through sysfs `config`), bypassing pciback.
    func hwWrite(_ offset: Int, _ width: Int, _ value: UInt32) {
        device.hardwareWrite(offset, width: width, value: value)
    }

    // MARK: - pciback state

    var data: PcibackDeviceData { dom0.deviceData[FixtureA.host]! }

    /// Guest release (frontend device removal), then export again, as a new guest would get it.
    mutating func releaseAndReattach() throws {
        try dom0.detach(domain: FixtureA.frontend, address: FixtureA.host)
        let virtual = try dom0.attach(domain: FixtureA.frontend, address: FixtureA.host)
        #expect(virtual == FixtureA.virtual)
    }
}
