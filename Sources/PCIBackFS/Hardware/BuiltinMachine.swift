/// The daemon's default machine, authored from the PCI specifications (no dump): a host
/// bridge, PCI Express root ports with devices behind them, and one function of each kind a
/// passthrough toolstack meets.
///
/// ```
/// 00:00.0 host bridge                  8086:29c0
/// 00:01.0 root port -> bus 01           8086:29c1  01:00.0 NVMe (MSI-X only, 4 KiB config)     nvme
/// 00:03.0 root port -> bus 04           8086:29c9  04:00.0 VGA (64-bit prefetchable BAR, ROM)  radeon
/// 00:05.0 conventional NIC (INTx only, I/O BAR, 256-byte config)  10ec:8139                    8139too
/// 00:1c.0 root port -> bus 02           8086:3a40  02:00.0 xHCI (MSI only)                     xhci_hcd
/// 00:1c.1 root port -> bus 03           8086:3a42  03:00.0, 03:00.1 82576 NIC (MSI, MSI-X,
///                                                  FLR, SR-IOV)                                 igb
/// ```
public enum BuiltinMachine {
    public static func make() -> Machine {
        Machine(name: "builtin", devices: [
            hostBridge(),
            rootPort(slot: 0x01, function: 0, device: 0x29c1, secondaryBus: 1, memory: (0xfe00_0000, 0xfe0f_ffff), io: nil,
                     irq: 24),
            nvme(),
            rootPort(slot: 0x03, function: 0, device: 0x29c9, secondaryBus: 4, memory: (0xfe40_0000, 0xfe4f_ffff),
                     io: (0xd000, 0xdfff), prefetchable: (0xc000_0000, 0xcfff_ffff), irq: 25),
            vga(),
            conventionalNIC(),
            rootPort(slot: 0x1c, function: 0, device: 0x3a40, secondaryBus: 2, memory: (0xfe10_0000, 0xfe1f_ffff), io: nil,
                     irq: 26, multiFunction: true),
            xhci(),
            rootPort(slot: 0x1c, function: 1, device: 0x3a42, secondaryBus: 3, memory: (0xfe20_0000, 0xfe3f_ffff),
                     io: (0xe000, 0xefff), irq: 27),
            nic82576(function: 0),
            nic82576(function: 1),
        ])
    }

    static func hostBridge(at address: PCIAddress = PCIAddress(bus: 0, slot: 0, function: 0)) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: address, express: false,
            identity: .init(vendor: 0x8086, device: 0x29c0, subsystemVendor: 0x8086, subsystemDevice: 0x5044,
                            classCode: 0x060000, revision: 0x02))
        builder.label = "host bridge"
        return builder.build(firmwareCommand: PCICommand.memory)
    }

    static func rootPort(slot: UInt8, function: UInt8, device: UInt16, secondaryBus: UInt8, memory: (UInt32, UInt32),
                         io: (UInt32, UInt32)?, prefetchable: (UInt64, UInt64)? = nil, irq: UInt32,
                         multiFunction: Bool = false) -> EmulatedDevice {
        rootPort(at: PCIAddress(bus: 0, slot: slot, function: function), device: device, secondaryBus: secondaryBus,
                 subordinateBus: secondaryBus, memory: memory, io: io, prefetchable: prefetchable, irq: irq,
                 multiFunction: multiFunction)
    }

    static func rootPort(at address: PCIAddress, device: UInt16 = 0x3a40, secondaryBus: UInt8, subordinateBus: UInt8,
                         memory: (UInt32, UInt32), io: (UInt32, UInt32)?, prefetchable: (UInt64, UInt64)? = nil,
                         irq: UInt32, multiFunction: Bool = false) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: address, headerType: .bridge, express: true,
            identity: .init(vendor: 0x8086, device: device, classCode: 0x060400, revision: 0x02, interruptPin: 1,
                            multiFunction: multiFunction))
        builder.label = "PCI Express root port"
        builder.irq = irq
        builder.bootDriver = "pcieport"
        builder.addPCIExpress(.rootPort, functionReset: false, slotImplemented: true)
        builder.addMSI(vectors: 1, is64Bit: false, perVectorMasking: false)
        builder.addPowerManagement(pmeSupport: 0x19)
        builder.addAER()
        let device = builder.build(firmwareCommand: PCICommand.io | PCICommand.memory | PCICommand.master)
        // Firmware programs the bus numbers and windows.
        device.programBridge(secondaryBus: secondaryBus, subordinateBus: subordinateBus, memory: memory, io: io,
                             prefetchable: prefetchable)
        return device
    }

    static func nvme(at address: PCIAddress = PCIAddress(bus: 1, slot: 0, function: 0), irq: UInt32? = nil) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: address, express: true,
            identity: .init(vendor: 0x144d, device: 0xa808, subsystemVendor: 0x144d, subsystemDevice: 0xa801,
                            classCode: 0x010802))
        builder.label = "NVMe controller"
        builder.irq = irq ?? 0
        builder.bootDriver = "nvme"
        builder.setBAR(0, .memory64, size: 16 * 1024, address: 0xfe00_0000)
        builder.addPowerManagement()
        builder.addMSIX(tableSize: 33, tableBAR: 0, tableOffset: 0x3000, pbaBAR: 0, pbaOffset: 0x2000)
        builder.addPCIExpress(.endpoint, functionReset: true, linkSpeed: 3, linkWidth: 4)
        builder.addAER()
        builder.addDeviceSerialNumber(0x0025_3856_0000_1a2b)
        return builder.build()
    }

    static func vga(at address: PCIAddress = PCIAddress(bus: 4, slot: 0, function: 0), irq: UInt32? = nil) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: address, express: true,
            identity: .init(vendor: 0x1002, device: 0x6779, subsystemVendor: 0x1028, subsystemDevice: 0x2120,
                            classCode: 0x030000, interruptPin: 1))
        builder.label = "VGA controller"
        builder.bootDriver = "radeon"
        builder.irq = irq ?? 20
        builder.setBAR(0, .memory64Prefetchable, size: 256 << 20, address: 0xc000_0000)
        builder.setBAR(2, .memory64, size: 128 * 1024, address: 0xfe40_0000)
        builder.setBAR(4, .io, size: 256, address: 0xd000)
        builder.setROM(size: 128 * 1024, address: 0xfe42_0000)
        builder.addPowerManagement(d1: true, d2: true)
        builder.addPCIExpress(.legacyEndpoint, functionReset: false, linkSpeed: 2, linkWidth: 8)
        builder.addMSI(vectors: 1, is64Bit: true, perVectorMasking: false)
        builder.addVendorSpecific(payload: [0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])
        return builder.build()
    }

    static func conventionalNIC(at address: PCIAddress = PCIAddress(bus: 0, slot: 5, function: 0), irq: UInt32? = nil) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: address, express: false,
            identity: .init(vendor: 0x10ec, device: 0x8139, subsystemVendor: 0x10ec, subsystemDevice: 0x8139,
                            classCode: 0x020000, revision: 0x10, interruptPin: 1))
        builder.label = "conventional PCI Ethernet (INTx only)"
        builder.bootDriver = "8139too"
        builder.irq = irq ?? 21
        builder.setBAR(0, .io, size: 256, address: 0xc000)
        builder.setBAR(1, .memory32, size: 256, address: 0xfebf_1000)
        builder.addPowerManagement(d1: true, d2: true, pmeSupport: 0x1f, noSoftReset: false)
        // An identifier-string resource (tag 0x82, 16 bytes), then the end tag (0x78).
        builder.addVPD(contents: [0x82, 0x10, 0x00] + Array("Realtek RTL8139C".utf8) + [0x78])
        return builder.build()
    }

    static func xhci(at address: PCIAddress = PCIAddress(bus: 2, slot: 0, function: 0), irq: UInt32? = nil) -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: address, express: true,
            identity: .init(vendor: 0x1912, device: 0x0014, subsystemVendor: 0x1912, subsystemDevice: 0x0014,
                            classCode: 0x0c0330, revision: 0x03, interruptPin: 1))
        builder.label = "xHCI USB controller (MSI only)"
        builder.bootDriver = "xhci_hcd"
        builder.irq = irq ?? 17
        builder.setBAR(0, .memory64, size: 8 * 1024, address: 0xfe10_0000)
        builder.addPowerManagement(pmeSupport: 0x1f)
        builder.addMSI(vectors: 8, is64Bit: true, perVectorMasking: false)
        builder.addPCIExpress(.endpoint, functionReset: false, linkSpeed: 2, linkWidth: 1)
        builder.addAER()
        return builder.build()
    }

    static func nic82576(function: UInt8) -> EmulatedDevice {
        nic82576(at: PCIAddress(bus: 3, slot: 0, function: function), irq: function == 0 ? 18 : 19,
                 memoryBase: function == 0 ? 0xfe22_0000 : 0xfe20_0000, ioBase: function == 0 ? 0xe020 : 0xe000,
                 msixBase: function == 0 ? 0xfe24_4000 : 0xfe24_0000)
    }

    /// An 82576-class function at `address` (function 0 or 1 of a two-function device).
    static func nic82576(at address: PCIAddress, irq: UInt32, memoryBase: UInt32, ioBase: UInt64, msixBase: UInt64) -> EmulatedDevice {
        let function = address.function
        var builder = DeviceBuilder(
            address: address, express: true,
            identity: .init(vendor: 0x8086, device: 0x10c9, subsystemVendor: 0x8086, subsystemDevice: 0xa03c,
                            classCode: 0x020000, revision: 0x01, interruptPin: (function & 1) + 1, multiFunction: true))
        builder.label = "82576 Gigabit Ethernet, function \(function)"
        builder.bootDriver = "igb"
        builder.irq = irq
        builder.setBAR(0, .memory32, size: 128 * 1024, address: UInt64(memoryBase))
        builder.setBAR(2, .io, size: 32, address: ioBase)
        builder.setBAR(3, .memory32, size: 16 * 1024, address: msixBase)
        builder.addPowerManagement(pmeSupport: 0x19)
        builder.addMSI(vectors: 1, is64Bit: true, perVectorMasking: true)
        builder.addMSIX(tableSize: 10, tableBAR: 3, tableOffset: 0, pbaBAR: 3, pbaOffset: 0x2000)
        builder.addPCIExpress(.endpoint, functionReset: true, linkSpeed: 1, linkWidth: 4)
        builder.addAER()
        builder.addDeviceSerialNumber(0x001b_21ff_ff4a_9c10 + UInt64(function))
        builder.addARI(nextFunction: function == 0 ? 1 : 0)
        builder.addSRIOV(initialVFs: 8, totalVFs: 8, firstVFOffset: 0x80, vfStride: 2, vfDeviceID: 0x10ca,
                         vfBARs: [(0, .memory64, 16 * 1024), (3, .memory64, 16 * 1024)])
        return builder.build()
    }
}

extension EmulatedDevice {
    /// Firmware's bus numbering and window programming for a bridge.
    func programBridge(secondaryBus: UInt8, subordinateBus: UInt8, memory: (UInt32, UInt32), io: (UInt32, UInt32)?,
                       prefetchable: (UInt64, UInt64)?) {
        config.store(PCIRegister.primaryBus, width: 1, value: UInt32(address.bus))
        config.store(PCIRegister.secondaryBus, width: 1, value: UInt32(secondaryBus))
        config.store(PCIRegister.subordinateBus, width: 1, value: UInt32(subordinateBus))
        config.store(PCIRegister.memoryBase, width: 2, value: (memory.0 >> 16) & 0xfff0)
        config.store(PCIRegister.memoryLimit, width: 2, value: (memory.1 >> 16) & 0xfff0)
        if let io {
            config.store(PCIRegister.ioBase, width: 1, value: ((io.0 >> 8) & 0xf0) | 0x1)
            config.store(PCIRegister.ioLimit, width: 1, value: ((io.1 >> 8) & 0xf0) | 0x1)
        } else {
            config.store(PCIRegister.ioBase, width: 1, value: 0xf1)
            config.store(PCIRegister.ioLimit, width: 1, value: 0x01)
        }
        if let prefetchable {
            config.store(PCIRegister.prefetchBase, width: 2, value: UInt32((prefetchable.0 >> 16) & 0xfff0) | 0x1)
            config.store(PCIRegister.prefetchLimit, width: 2, value: UInt32((prefetchable.1 >> 16) & 0xfff0) | 0x1)
            config.store(PCIRegister.prefetchBaseUpper, width: 4, value: UInt32(prefetchable.0 >> 32))
            config.store(PCIRegister.prefetchLimitUpper, width: 4, value: UInt32(prefetchable.1 >> 32))
        } else {
            config.store(PCIRegister.prefetchBase, width: 2, value: 0xfff1)
            config.store(PCIRegister.prefetchLimit, width: 2, value: 0x0001)
        }
    }
}
