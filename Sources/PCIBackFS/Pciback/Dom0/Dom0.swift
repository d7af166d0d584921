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
    public private(set) var hideParameter = ""
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

    public init(machine: Machine, policy: FilterPolicy = FilterPolicy(), hide: String = "", passthrough: Bool = false) throws(Errno) {
        self.machine = machine
        self.policy = policy
        self.passthroughBackend = passthrough
        classDeviceOrder = ClassDeviceOrder(machine: machine)
        // Host drivers register at boot, in the order their devices enumerate; pciback loads later.
        for address in machine.order {
            guard let device = machine[address], let name = device.bootDriver else { continue }
            let id = PCIDriver.DeviceID(vendor: UInt32(device.identity.vendor), device: UInt32(device.identity.device))
            if let index = drivers.firstIndex(where: { $0.name == name }) {
                if !drivers[index].ids.contains(id) { drivers[index].ids.append(id) }
            } else {
                drivers.append(PCIDriver(name: name, ids: [id]))
            }
        }
        drivers.append(PCIDriver(name: PCIDriver.pcibackName, ids: [PCIDriver.DeviceID(vendor: 0xffff_ffff, device: 0xffff_ffff)]))
        initializeSRIOV()
        // Boot: seize list from `hide` first (pciback is built in, so it claims hidden devices
        // before their host drivers), then every other function binds to its driver.
        try loadHideParameter(hide)
        for address in machine.order {
            guard let device = machine[address] else { continue }
            if matchesSeizeList(address) && device.identity.layout != .cardbus {
                // An imported function may carry a driver's state; pciback starts from a quiet one.
                if device.isEnabled { device.quiesceForDriverRemoval() }
                try? seizeAtBoot(address)
            } else if let name = device.bootDriver {
                bindHostDriver(name, address, atBoot: true)
            }
        }
    }

    private mutating func loadHideParameter(_ hide: String) throws(Errno) {
        hideParameter = hide
        switch PcibackGrammar.hide(hide) {
        case .failure(let error):
            log.module(error.message)
            throw error.errno
        case .success(let slots):
            for slot in slots { try addSlot(slot) }
        }
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
