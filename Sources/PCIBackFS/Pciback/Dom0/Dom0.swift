/// The dom0 kernel's PCI state: hardware, driver core, pciback and its frontends. Every
/// operation a sysfs attribute or a frontend performs is a method here; the caller holds the
/// one lock around it.
///
/// This file holds the state and the lookups; the operations are extensions, one file per
/// concern: DriverCore.swift (bind, unbind, drivers_probe, new_id, remove_id, driver_override),
/// PcibackDriver.swift (pciback's seize list, per-device flags, probe and remove),
/// ../Frontends/Frontends.swift (exports, guest config access), Topology.swift (remove, rescan,
/// dom0's own config access), SRIOV.swift, FaultControl.swift, ../Frontends/PCIOps.swift and
/// ../Frontends/Trace.swift.
public struct Dom0 {
    public var machine: Machine
    public var policy: FilterPolicy
    /// `xen_pciback.passthrough`: 0 = vpci backend (default), 1 = passthrough.
    public var passthroughBackend = false
    /// A PV dom0 (the common case) or a PVH one: only PVH has Xen's device-reset hypercall.
    /// A constant of the start options (`--dom0`), so --state snapshots need no copy.
    public let dom0Kind: Dom0Kind
    /// Whether the OS owns AER (`pcie_aer_is_native`: firmware granted it through _OSC, as
    /// on most machines); `pci_restore_state` clears AER status only then. A constant of the
    /// platform (tests change it to model firmware-first AER).
    public internal(set) var aerOwnedByOS = true
    public private(set) var hideParameter = ""
    /// Why xen-pciback did not register (its init failed on `hide`), nil when it runs. Then there
    /// is no `pciback` driver and no backend; a constant of the start options.
    public let pcibackLoadFailure: PcibackLoadFailure?
    public internal(set) var drivers: [PCIDriver] = []
    public internal(set) var bindings: [PCIAddress: String] = [:]
    /// `driver_override`, as the bytes written (the kernel keeps them verbatim).
    public internal(set) var driverOverrides: [PCIAddress: [UInt8]] = [:]
    public var log = KernelLog()

    // pciback
    public internal(set) var seizeList: [SlotPattern] = []
    /// `pcistub_devices`: runtime binds at the head.
    public internal(set) var pcibackDevices: [PCIAddress] = []
    /// The quirks registration list, in device-initialisation order.
    public internal(set) var quirkRegistrations: [PCIAddress] = []
    public internal(set) var deviceData: [PCIAddress: PcibackDeviceData] = [:]
    /// Which frontend owns a device (`psdev->pdev`).
    public internal(set) var owners: [PCIAddress: UInt32] = [:]
    public internal(set) var frontends: [UInt32: Frontend] = [:]
    /// Settings sysfs stores only remember (autoprobe, numa_node, msi_bus, ...).
    public internal(set) var tunables = KernelTunables()
    /// pciback's verdicts on frontend accesses, newest last.
    public internal(set) var trace = TraceRing()
    /// SR-IOV physical functions and what the kernel caches about each.
    public internal(set) var sriov: [PCIAddress: SRIOVState] = [:]
    /// Functions removed through `remove`, found again by `rescan`.
    public internal(set) var removedDevices: [PCIAddress: EmulatedDevice] = [:]
    /// Changes whenever nodes appear or vanish (bindings, exports, removals).
    public internal(set) var topologyGeneration = 0
    /// Which functions get which interface and controller numbers (ClassDevices.swift). Fixed
    /// at boot from the machine the start options describe, so a --state snapshot needs no copy.
    public let classDeviceOrder: ClassDeviceOrder
    var nextMSIIRQ: UInt32 = 120

    /// The machine after boot. `hide` is xen-pciback's parameter: when it does not parse or
    /// names an address out of range, pciback does not register and everything else boots
    /// (`pcibackLoadFailure`); with `strictHide` that failure is thrown instead.
    public init(machine: Machine, policy: FilterPolicy = FilterPolicy(), hide: String = "", passthrough: Bool = false,
                strictHide: Bool = false, dom0Kind: Dom0Kind = .pv) throws(Errno) {
        self.machine = machine
        self.policy = policy
        self.passthroughBackend = passthrough
        self.dom0Kind = dom0Kind
        classDeviceOrder = ClassDeviceOrder(machine: machine)
        hideParameter = hide
        let hidden = Dom0.hideSeizeList(hide)
        switch hidden {
        case .success(let list):
            pcibackLoadFailure = nil
            seizeList = list
        case .failure(let failure):
            if strictHide { throw failure.errno }
            pcibackLoadFailure = failure
            if let message = failure.kernelMessage { log.module(message) }
        }
        // Host drivers register at boot, in the order their devices enumerate; pciback loads later.
        for address in machine.order {
            guard let device = machine[address], let name = device.bootDriver, name != PCIDriver.pcibackName else { continue }
            let id = PCIDriver.DeviceID(vendor: UInt32(device.identity.vendor), device: UInt32(device.identity.device))
            if let index = drivers.firstIndex(where: { $0.name == name }) {
                if !drivers[index].ids.contains(id) { drivers[index].ids.append(id) }
            } else {
                drivers.append(PCIDriver(name: name, ids: [id]))
            }
        }
        let registered = pcibackLoadFailure == nil
        if registered {
            drivers.append(PCIDriver(name: PCIDriver.pcibackName, ids: [PCIDriver.DeviceID(vendor: 0xffff_ffff, device: 0xffff_ffff)]))
            // A captured function bound to pciback was seized on the system it came from: its
            // exact address joins the seize list after `hide`'s entries, as new_slot would add it.
            for address in machine.order where machine[address]?.bootDriver == PCIDriver.pcibackName {
                try? addSlot(SlotPattern(address))
            }
        }
        initializeSRIOV()
        // Boot: pciback (built in, or loaded early) claims the listed devices before their host
        // drivers, with the messages of a later bind; every other function binds to its driver.
        for address in machine.order {
            guard let device = machine[address] else { continue }
            if registered && seizeAtBoot(address) { continue }
            if let name = device.bootDriver, name != PCIDriver.pcibackName { bindHostDriver(name, address, atBoot: true) }
        }
    }

    /// xen-pciback's init reading `hide` (spec §2, `pcistub_init`): the seize list its groups
    /// give, or the failure that keeps the driver from registering. Groups are parsed and added
    /// one at a time. One that does not parse stops init there, and the message quotes the
    /// string from that group on (after the whitespace the group before it consumed); one out
    /// of range (`pcistub_device_id_add`, spec §1.4) stops init with -EINVAL and no message.
    public static func hideSeizeList(_ hide: String) -> Result<[SlotPattern], PcibackLoadFailure> {
        let (groups, parseError) = PcibackGrammar.hideGroups(hide)
        var list: [SlotPattern] = []
        for group in groups {
            do { try addSlot(group, to: &list) } catch {
                return .failure(PcibackLoadFailure(errno: error, kernelMessage: nil, reason: "group \(group.hideText) is out of range"))
            }
        }
        if let parseError {
            return .failure(PcibackLoadFailure(errno: parseError.errno, kernelMessage: parseError.message,
                                               reason: "it does not parse at \"\(parseError.rest)\""))
        }
        return .success(list)
    }

    // MARK: - Lookups

    public func device(_ address: PCIAddress) -> EmulatedDevice? { machine[address] }

    public func driverName(of address: PCIAddress) -> String? { bindings[address] }

    public func isBoundToPciback(_ address: PCIAddress) -> Bool { bindings[address] == PCIDriver.pcibackName }

    public func driver(named name: String) -> PCIDriver? { drivers.first { $0.name == name } }

    public func boundDevices(of driver: String) -> [PCIAddress] {
        machine.order.filter { bindings[$0] == driver }
    }

    func require(_ data: [UInt8]) throws(Errno) -> EmulatedDevice {
        guard let address = StoreInput.deviceName(data), let device = machine[address] else { throw .noSuchDevice }
        return device
    }
}

extension Dom0 {
    /// An independent dom0 in the same state (the machine's functions are objects: each is
    /// copied). `fs/pcibackfs/reset` starts from a copy of the state the daemon started with.
    func copied() -> Dom0 {
        var copy = self
        (copy.machine, copy.removedDevices) = machine.copied(removed: removedDevices)
        return copy
    }
}

/// Why xen-pciback's init failed, so that the driver never registered.
public struct PcibackLoadFailure: Error, Sendable, Equatable {
    public var errno: Errno
    /// What the kernel logs (after the `xen_pciback: ` prefix), if it logs anything.
    public var kernelMessage: String?
    /// The cause in words, for the daemon's standard error.
    public var reason: String
}

extension SlotPattern {
    /// The group as `hide` writes it, wildcards as `*`: `(0000:100:*.*)`.
    var hideText: String {
        func wildcard(_ value: Int32, _ text: String) -> String { value < 0 ? "*" : text }
        return "(" + hex(UInt32(bitPattern: domain), width: 4) + ":" + hex(UInt32(bitPattern: bus), width: 2) + ":"
            + wildcard(slot, hex(UInt32(bitPattern: slot), width: 2)) + "." + wildcard(function, String(function, radix: 16)) + ")"
    }
}
