/// The class devices the emulated host drivers register when they probe a function: a network
/// interface (`register_netdev`) for a NIC bound to its driver, an NVMe controller with one
/// namespace disk for a function bound to `nvme`. A remove (unbind) unregisters them, a probe
/// (bind) registers them again under the same name and numbers.
///
/// Numbers are stable per function rather than allocated afresh at each probe as the kernel
/// does (it hands out a new ifindex and the lowest free NVMe instance each time): a function's
/// interface keeps its name, MAC and ifindex across unbind/bind, so tools and tests can rely
/// on them. They are assigned at boot (`ClassDeviceOrder`), in the machine's order.
public struct ClassDeviceOrder: Sendable, Equatable {
    /// Functions with a network class code (0x02xxxx), in boot order: ifindex 2, 3, ... (lo is 1).
    public internal(set) var networkFunctions: [PCIAddress] = []
    /// Functions with the NVMe class code (0x010802), in boot order: controller nvme0, nvme1, ...
    public internal(set) var nvmeFunctions: [PCIAddress] = []
    /// Each function's place in the lists above: every getattr of a function's directory asks,
    /// so a linear search would make `lspci` over thousands of NICs quadratic.
    private(set) var networkIndex: [PCIAddress: Int] = [:]
    private(set) var nvmeIndex: [PCIAddress: Int] = [:]

    init(machine: Machine) {
        for address in machine.order {
            guard let device = machine[address], device.physicalFunction == nil else { continue }
            let classCode = device.identity.classCode
            if classCode >> 16 == 0x02 {
                networkIndex[address] = networkFunctions.count
                networkFunctions.append(address)
            }
            if classCode == NVMeController.classCode {
                nvmeIndex[address] = nvmeFunctions.count
                nvmeFunctions.append(address)
            }
        }
    }
}

/// A network interface of an emulated NIC driver.
public struct NetworkInterface: Sendable, Equatable {
    public var function: PCIAddress
    public var name: String
    /// The permanent MAC address, `aa:bb:cc:dd:ee:ff`.
    public var address: String
    public var ifindex: Int

    /// systemd-udevd's predictable name from the PCI path (`names_pci` in udev-builtin-net_id.c,
    /// the name `NamePolicy=... path` gives when there is no firmware index or hotplug slot, as
    /// on this tree, whose `bus/pci/slots` is empty): `en`, `P<domain>` (decimal) when the
    /// domain is not 0, `p<bus>s<slot>` (decimal), then `f<function>` only when the function is
    /// not 0 or the device is multi-function (header type bit 7). ARI folding (function += 8 *
    /// slot) does not arise: `ari_enabled` reads 0 here. dev_port is always 0, so no `d<port>`.
    public static func predictableName(of address: PCIAddress, multiFunction: Bool) -> String {
        var name = "en"
        if address.domain != 0 { name += "P\(address.domain)" }
        name += "p\(address.bus)s\(address.slot)"
        if address.function != 0 || multiFunction { name += "f\(address.function)" }
        return name
    }

    /// The MAC rule: a locally administered unicast address (first octet 0x02) built from the
    /// function's address, `02:<domain bits 23..16>:<domain bits 15..8>:<domain bits 7..0>:<bus>:<devfn>`
    /// (0000:03:00.1 -> 02:00:00:00:03:01). Unique per function (domains below 2^24), the same
    /// across unbind/bind and restarts, and never a real vendor's OUI.
    public static func macAddress(of address: PCIAddress) -> String {
        let devfn = UInt32(address.slot) << 3 | UInt32(address.function)
        let octets = [0x02, address.domain >> 16 & 0xff, address.domain >> 8 & 0xff, address.domain & 0xff, UInt32(address.bus), devfn]
        return octets.map { hex($0, width: 2) }.joined(separator: ":")
    }
}

/// An NVMe controller (`nvme<N>`) of the emulated `nvme` driver and its one namespace (`nvme<N>n1`).
public struct NVMeController: Sendable, Equatable {
    public static let classCode: UInt32 = 0x010802
    public var function: PCIAddress
    /// The controller instance N (`nvme_instance_ida`).
    public var instance: Int
    /// The index among the machine's NVMe functions: picks the namespace's block minor.
    public var ordinal: Int

    public var name: String { "nvme\(instance)" }
    public var namespaceName: String { "nvme\(instance)n1" }

    /// What the emulated controller reports (Identify Controller) and its namespace's size.
    public var model: String { "pcibackfs emulated NVMe" }
    public var serial: String {
        "PBFS" + hex(function.domain, width: 4) + hex(function.bus, width: 2) + hex(function.slot, width: 2) + String(function.function)
    }
    public var firmwareRevision: String { "1.0" }
    /// 1 GiB in 512-byte sectors, as the `size` file counts.
    public var sectors: UInt64 { 2_097_152 }
}

extension Dom0 {
    /// Drivers that take a function without registering a class device: the stub and
    /// userspace-I/O drivers (a NIC bound to vfio-pci has no interface).
    static let stubDrivers: Set<String> = [PCIDriver.pcibackName, "vfio-pci", "pci-stub", "uio_pci_generic", "igb_uio"]

    /// The interface of `function` while its NIC driver is bound to it.
    public func networkInterface(of function: PCIAddress) -> NetworkInterface? {
        guard let driver = bindings[function], !Dom0.stubDrivers.contains(driver),
              let index = classDeviceOrder.networkIndex[function], let device = machine[function]
        else { return nil }
        return NetworkInterface(function: function,
                                name: NetworkInterface.predictableName(of: function, multiFunction: device.identity.isMultiFunction),
                                address: NetworkInterface.macAddress(of: function), ifindex: 2 + index)
    }

    /// The controller of `function` while `nvme` is bound to it.
    public func nvmeController(of function: PCIAddress) -> NVMeController? {
        guard bindings[function] == "nvme", let index = classDeviceOrder.nvmeIndex[function] else { return nil }
        return NVMeController(function: function, instance: index, ordinal: index)
    }

    /// Every interface present now, by name.
    public func networkInterfaces() -> [NetworkInterface] {
        classDeviceOrder.networkFunctions.compactMap(networkInterface(of:)).sorted { $0.name < $1.name }
    }

    public func nvmeControllers() -> [NVMeController] {
        classDeviceOrder.nvmeFunctions.compactMap(nvmeController(of:))
    }
}
