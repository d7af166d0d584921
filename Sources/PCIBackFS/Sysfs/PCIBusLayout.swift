/// The `pci_bus` class devices: one per bus the machine has, named `DDDD:BB`.
///
/// ```
/// devices/pci0000:00/pci_bus/0000:00/{cpuaffinity,cpulistaffinity,rescan,uevent,
///                                     device -> ../../../pci0000:00, subsystem -> ../../../../class/pci_bus}
/// devices/.../<bridge BDF>/pci_bus/DDDD:SS/{..., device -> ../../../<bridge BDF>, subsystem -> ...}
/// class/pci_bus/DDDD:BB -> ../../devices/.../pci_bus/DDDD:BB
/// ```
///
/// A root bus's class device sits in its host bridge's directory, a bridge's secondary bus in
/// the bridge's. The kernel's `power/` directory of each is left out: nothing reads it here.
struct PCIBusDevice: Equatable {
    /// `DDDD:BB`.
    var name: String
    /// The directory holding `pci_bus/` (`devices/pci0000:00`, or a bridge's directory).
    var parent: String
    /// What `device` names: the parent directory's last component.
    var deviceName: String

    /// `devices/.../pci_bus/DDDD:BB`.
    var directory: String { parent + "/pci_bus/" + name }
}

/// A `pci_bus` class device's files (drivers/pci/pci-sysfs.c's bus attributes, and uevent).
enum PCIBusAttribute: String, CaseIterable, Hashable {
    case cpuaffinity, cpulistaffinity, rescan, uevent

    var mode: UInt32 {
        switch self {
        case .cpuaffinity, .cpulistaffinity: return 0o444
        case .rescan: return 0o200
        case .uevent: return 0o644
        }
    }
}

extension Machine {
    /// The class device of a root bus (`pci0000:00` -> `0000:00`), while it has functions.
    func rootPCIBus(_ rootName: String) -> PCIBusDevice? {
        guard rootBuses[rootName] != nil, rootName.hasPrefix("pci") else { return nil }
        return PCIBusDevice(name: String(rootName.dropFirst(3)), parent: "devices/" + rootName, deviceName: rootName)
    }

    /// The class device of a bridge's secondary bus, if the bridge has one.
    func bridgePCIBus(_ address: PCIAddress) -> PCIBusDevice? {
        guard self[address] != nil, let bus = secondaryBus(of: address) else { return nil }
        return PCIBusDevice(name: hex(address.domain, width: 4) + ":" + hex(bus, width: 2), parent: sysfsPath(of: address),
                            deviceName: address.description)
    }

    /// Every bus's class device: root buses first, then bridges in enumeration order.
    func pciBuses() -> [PCIBusDevice] {
        rootBuses.keys.sorted().compactMap(rootPCIBus) + order.compactMap(bridgePCIBus)
    }

    func hasPCIBus(named name: String) -> Bool { pciBuses().contains { $0.name == name } }
}

extension SysfsLayout {
    /// `rest`: the path below the directory holding `pci_bus/`, starting with "pci_bus".
    func pciBusNode(_ bus: PCIBusDevice?, _ rest: [String]) -> SysfsNode? {
        guard let bus else { return nil }
        if rest.count == 1 { return .directory }
        guard rest[1] == bus.name else { return nil }
        if rest.count == 2 { return .directory }
        guard rest.count == 3 else { return nil }
        switch rest[2] {
        case "device": return .link("../../../" + bus.deviceName)
        case "subsystem":
            let depth = pathComponents(bus.directory).count
            return .link(String(repeating: "../", count: depth) + "class/pci_bus")
        default:
            guard let attribute = PCIBusAttribute(rawValue: rest[2]) else { return nil }
            return .attribute(Attribute(kind: .pciBus(bus.name, attribute), mode: attribute.mode))
        }
    }

    func pciBusNames(_ bus: PCIBusDevice?, _ rest: [String]) -> [String] {
        guard let bus else { return [] }
        switch rest.count {
        case 1: return [bus.name]
        case 2: return PCIBusAttribute.allCases.map(\.rawValue) + ["device", "subsystem"]
        default: return []
        }
    }

    /// The bus directories' part of `dynamicEntries()`: a bridge's comes and goes with it.
    func pciBusDynamicEntries(into entries: inout [String: String]) {
        for bus in dom0.machine.pciBuses() {
            entries[bus.parent + "\u{0}pci_bus"] = ""
            entries[bus.parent + "/pci_bus\u{0}" + bus.name] = ""
        }
    }
}

extension Dom0 {
    func show(_ attribute: PCIBusAttribute, ofBus name: String) -> [UInt8]? {
        guard machine.hasPCIBus(named: name) else { return nil }
        switch attribute {
        case .cpuaffinity: return Array((localCPUsText + "\n").utf8)
        case .cpulistaffinity: return Array((localCPUListText + "\n").utf8)
        case .uevent: return []
        case .rescan: return nil
        }
    }

    /// `rescan` rescans as `bus/pci/rescan` does (kstrtoul, then any nonzero value).
    mutating func store(_ attribute: PCIBusAttribute, ofBus name: String, input: [UInt8]) throws(Errno) {
        guard machine.hasPCIBus(named: name) else { throw .noSuchDevice }
        switch attribute {
        case .rescan: if try KernelNumbers.unsignedLongOrInvalid(input) != 0 { rescan() }
        case .uevent: try Dom0.checkUeventAction(input)
        case .cpuaffinity, .cpulistaffinity: throw .ioError
        }
    }
}
