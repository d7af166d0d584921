/// The built-in templates a machine file places at any address: the functions of the built-in
/// machine (`BuiltinMachine`), one name each.
public enum MachineTemplate: String, CaseIterable, Sendable {
    case hostBridge = "host-bridge"
    case rootPort = "root-port"
    case nic82576 = "nic-82576"
    case nvme
    case xhci
    case vga
    case rtl8139

    /// One line for `pcibackfsd templates`.
    public var summary: String {
        switch self {
        case .hostBridge: return "host bridge, conventional PCI"
        case .rootPort: return "PCI Express root port, MSI, AER; needs secondaryBus (subordinateBus defaults to it)"
        case .nic82576: return "82576 Gigabit NIC: MSI (64-bit, maskable), MSI-X 10, FLR, AER, DSN, ARI, SR-IOV (8 VFs)"
        case .nvme: return "NVMe controller: MSI-X only, FLR, AER, DSN"
        case .xhci: return "xHCI USB controller: MSI only, AER"
        case .vga: return "VGA controller: 64-bit prefetchable BAR, I/O BAR, ROM, MSI"
        case .rtl8139: return "conventional PCI NIC: INTx only, I/O BAR, VPD, 256-byte config"
        }
    }

    /// Whether the template takes `secondaryBus` and `subordinateBus`.
    public var takesBusNumbers: Bool { self == .rootPort }

    /// The names, in the order `pcibackfsd templates` lists them.
    public static var names: [String] { allCases.map(\.rawValue) }

    /// The template's function at `address`. A root port needs `secondaryBus` above its own bus.
    public func build(at address: PCIAddress, irq: UInt32?, secondaryBus: Int?, subordinateBus: Int?) throws(MachineTemplateError) -> EmulatedDevice {
        switch self {
        case .hostBridge: return BuiltinMachine.hostBridge(at: address)
        case .rootPort:
            guard let secondary = secondaryBus, secondary > Int(address.bus), secondary <= 0xff else {
                throw MachineTemplateError(key: "secondaryBus", reason: "a root port needs secondaryBus above its own bus (\(address.bus)) and at most 255")
            }
            let subordinate = subordinateBus ?? secondary
            guard subordinate >= secondary, subordinate <= 0xff else {
                throw MachineTemplateError(key: "subordinateBus", reason: "subordinateBus must be secondaryBus...255")
            }
            return BuiltinMachine.rootPort(at: address, secondaryBus: UInt8(secondary), subordinateBus: UInt8(subordinate),
                                           memory: (0xe000_0000, 0xefff_ffff), io: nil, irq: irq ?? 0)
        case .nic82576:
            return BuiltinMachine.nic82576(at: address, irq: irq ?? 0, memoryBase: 0xf000_0000, ioBase: 0x1000, msixBase: 0xf100_0000)
        case .nvme: return BuiltinMachine.nvme(at: address, irq: irq)
        case .xhci: return BuiltinMachine.xhci(at: address, irq: irq)
        case .vga: return BuiltinMachine.vga(at: address, irq: irq)
        case .rtl8139: return BuiltinMachine.conventionalNIC(at: address, irq: irq)
        }
    }

    /// The template at 0000:00:1c.0 (a root port to bus 1), to show its IDs and defaults.
    public var example: EmulatedDevice {
        // Cannot fail: the root port's bus numbers are valid.
        try! build(at: PCIAddress(bus: 0, slot: 0x1c, function: 0), irq: nil, secondaryBus: 1, subordinateBus: nil)
    }
}

/// A template parameter that does not fit.
public struct MachineTemplateError: Error, Sendable {
    public var key: String
    public var reason: String
}
