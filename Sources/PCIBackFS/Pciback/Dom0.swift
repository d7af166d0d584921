/// A PCI driver registered with the bus, in registration order.
public struct PCIDriver: Sendable, Equatable {
    public struct DeviceID: Sendable, Equatable {
        public var vendor: UInt32
        public var device: UInt32
        public var subvendor: UInt32 = 0xffff_ffff  // PCI_ANY_ID
        public var subdevice: UInt32 = 0xffff_ffff
        public var classCode: UInt32 = 0
        public var classMask: UInt32 = 0

        func matches(_ identity: DeviceIdentity) -> Bool {
            (vendor == 0xffff_ffff || vendor == UInt32(identity.vendor))
                && (device == 0xffff_ffff || device == UInt32(identity.device))
                && (subvendor == 0xffff_ffff || subvendor == UInt32(identity.subsystemVendor))
                && (subdevice == 0xffff_ffff || subdevice == UInt32(identity.subsystemDevice))
                && (identity.classCode ^ classCode) & classMask == 0
        }
    }

    public var name: String
    /// The static id table (pciback's matches everything).
    public var ids: [DeviceID]
    public var dynamicIDs: [DeviceID] = []

    public static let pcibackName = "pciback"

    func matches(_ identity: DeviceIdentity) -> Bool {
        ids.contains { $0.matches(identity) } || dynamicIDs.contains { $0.matches(identity) }
    }
}

/// A frontend domain (a PV guest's pcifront or a device-model stub domain) and the devices
/// exported to it, as xenstore and the backend (vpci or passthrough) would hold them.
public struct Frontend: Sendable, Equatable {
    public struct Export: Sendable, Equatable {
        public var virtual: PCIAddress
        public var host: PCIAddress
    }

    public var domain: UInt32
    public var exports: [Export] = []
}

/// The dom0 kernel's PCI state: hardware, driver core, pciback and its frontends. Every
/// operation a sysfs attribute or a frontend performs is a method here; the caller holds the
/// one lock around it.
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
    var nextMSIIRQ: UInt32 = 120

    public init(machine: Machine, policy: FilterPolicy = FilterPolicy(), hide: String = "", passthrough: Bool = false) throws(Errno) {
        self.machine = machine
        self.policy = policy
        self.passthroughBackend = passthrough
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
                bindHostDriver(name, address)
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

    private func require(_ data: [UInt8]) throws(Errno) -> EmulatedDevice {
        guard let address = StoreInput.deviceName(data), let device = machine[address] else { throw .noSuchDevice }
        return device
    }

    // MARK: - Driver core (drivers/base, drivers/pci/pci-driver.c)

    private func driverMatches(_ driver: PCIDriver, _ device: EmulatedDevice) -> Bool {
        if let override = driverOverrides[device.address] { return override == Array(driver.name.utf8) }
        return driver.matches(device.identity)
    }

    /// `drivers/<name>/bind`.
    public mutating func bind(driver name: String, input: [UInt8]) throws(Errno) {
        let device = try require(input)
        guard let driver = driver(named: name), driverMatches(driver, device) else { throw .noSuchDevice }
        if bindings[device.address] != nil { throw .resourceBusy }
        try probe(driver, device.address)
    }

    /// `drivers/<name>/unbind`.
    public mutating func unbind(driver name: String, input: [UInt8]) throws(Errno) {
        let device = try require(input)
        guard bindings[device.address] == name else { throw .noSuchDevice }
        releaseDriver(device.address)
    }

    /// `bus/pci/drivers_probe`: attach the first matching driver whose probe succeeds. Success
    /// even when none binds (callers look at the `driver` link).
    public mutating func driversProbe(input: [UInt8]) throws(Errno) {
        let device = try require(input)
        attachDriver(device.address)
    }

    /// `device_attach`.
    mutating func attachDriver(_ address: PCIAddress) {
        guard bindings[address] == nil, let device = machine[address] else { return }
        for driver in drivers where driverMatches(driver, device) {
            if (try? probe(driver, address)) != nil { return }
        }
    }

    private mutating func probe(_ driver: PCIDriver, _ address: PCIAddress) throws(Errno) {
        // pci_device_can_probe: a VF waits for its PF's drivers_autoprobe or an override.
        guard mayProbe(address) else { throw .noSuchDevice }
        if driver.name == PCIDriver.pcibackName {
            try pcistubProbe(address)
        } else {
            bindHostDriver(driver.name, address)
        }
    }

    /// A host driver's probe: enable, bus master, and the interrupts it prefers.
    private mutating func bindHostDriver(_ name: String, _ address: PCIAddress) {
        guard let device = machine[address] else { return }
        bindings[address] = name
        topologyGeneration += 1
        // An imported function already holds the state its driver left; don't enable it twice.
        guard device.identity.layout == .normal, !device.isEnabled else { return }
        device.driverProbeEnable()
        // msi_bus = 0 disallows MSI and MSI-X for drivers bound from now on.
        guard tunables[device: address].msiBus else { return }
        if device.capabilities.msix != 0 {
            try? device.enableMSIX(vectors: min(device.msixTableSize, 4))
        } else if device.capabilities.msi != 0 {
            try? device.enableMSI()
            device.msiIRQ = allocateMSIIRQ()
        }
    }

    private mutating func allocateMSIIRQ() -> UInt32 {
        defer { nextMSIIRQ += 1 }
        return nextMSIIRQ
    }

    /// `device_release_driver`.
    mutating func releaseDriver(_ address: PCIAddress) {
        guard let name = bindings[address] else { return }
        if sriov[address] != nil {
            if name == PCIDriver.pcibackName {
                // Only pciback's bus notifier acts: its own unowned VFs are let go first.
                for vf in sriov[address]!.virtualFunctions
                where bindings[vf] == PCIDriver.pcibackName && owners[vf] == nil {
                    releaseDriver(vf)
                }
                sriov[address]!.driverMaxVFs = sriov[address]!.totalVFs
            } else {
                physicalFunctionDriverRemoval(address)
            }
        }
        if name == PCIDriver.pcibackName {
            pcistubRemove(address)
        } else {
            machine[address]?.quiesceForDriverRemoval()
        }
        bindings[address] = nil
        topologyGeneration += 1
    }

    /// `drivers/<name>/new_id`: "vendor device [subvendor subdevice class class_mask driver_data]".
    public mutating func newID(driver name: String, input: [UInt8]) throws(Errno) {
        guard let index = drivers.firstIndex(where: { $0.name == name }) else { throw .noSuchDevice }
        let fields = KernelScanf.numbers(PcibackGrammar.cString(input), maximum: 7)
        guard fields.count >= 2 else { throw .invalidArgument }
        var id = PCIDriver.DeviceID(vendor: fields[0], device: fields[1])
        if fields.count > 2 { id.subvendor = fields[2] }
        if fields.count > 3 { id.subdevice = fields[3] }
        if fields.count > 4 { id.classCode = fields[4] }
        if fields.count > 5 { id.classMask = fields[5] }
        if fields.count != 7 {
            let probe = DeviceIdentity(vendor: UInt16(truncatingIfNeeded: id.vendor), device: UInt16(truncatingIfNeeded: id.device),
                                       subsystemVendor: UInt16(truncatingIfNeeded: id.subvendor),
                                       subsystemDevice: UInt16(truncatingIfNeeded: id.subdevice),
                                       classCode: id.classCode, revision: 0, headerType: 0, interruptPin: 0)
            if drivers[index].matches(probe) { throw .fileExists }
        } else if fields[6] != 0 {
            throw .invalidArgument
        }
        drivers[index].dynamicIDs.append(id)
        // driver_attach: unbound devices that now match are probed.
        for address in machine.order where bindings[address] == nil {
            guard let device = machine[address], driverMatches(drivers[index], device) else { continue }
            try? probe(drivers[index], address)
        }
    }

    /// `drivers/<name>/remove_id`: the first dynamic id with this vendor and device whose
    /// subsystem ids match (PCI_ANY_ID, the default, matches any) and whose class agrees under
    /// the mask.
    public mutating func removeID(driver name: String, input: [UInt8]) throws(Errno) {
        guard let index = drivers.firstIndex(where: { $0.name == name }) else { throw .noSuchDevice }
        let fields = KernelScanf.numbers(PcibackGrammar.cString(input), maximum: 6)
        guard fields.count >= 2 else { throw .invalidArgument }
        let any: UInt32 = 0xffff_ffff
        let subvendor = fields.count > 2 ? fields[2] : any
        let subdevice = fields.count > 3 ? fields[3] : any
        let classCode = fields.count > 4 ? fields[4] : 0
        let classMask = fields.count > 5 ? fields[5] : 0
        guard let position = drivers[index].dynamicIDs.firstIndex(where: {
            $0.vendor == fields[0] && $0.device == fields[1] && (subvendor == any || $0.subvendor == subvendor)
                && (subdevice == any || $0.subdevice == subdevice) && ($0.classCode ^ classCode) & classMask == 0
        }) else { throw .noSuchDevice }
        drivers[index].dynamicIDs.remove(at: position)
    }

    /// `devices/<BDF>/driver_override` store: one trailing newline stripped; empty clears.
    public mutating func setDriverOverride(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        guard machine[address] != nil else { throw .noSuchDevice }
        if input.count >= ShowBuffer.pageSize - 1 { throw .invalidArgument }
        // driver_set_override: the C string, cut at the first newline; empty clears.
        var text = PcibackGrammar.cString(input)
        if let newline = text.firstIndex(of: UInt8(ascii: "\n")) { text = Array(text[..<newline]) }
        driverOverrides[address] = text.isEmpty ? nil : text
    }

    public func driverOverride(_ address: PCIAddress) -> [UInt8]? { driverOverrides[address] }

    // MARK: - pciback: seize list (spec §1.4 - §1.6)

    private func matchesSeizeList(_ address: PCIAddress) -> Bool {
        // A VF on a VF-only bus has no bridge above it in the kernel's walk (bus->self is NULL).
        var bridges = machine.upstreamBridges(of: address)
        if let pf = machine[address]?.physicalFunction, pf.bus != address.bus { bridges = [] }
        let chain = bridges + [address]
        return chain.contains { candidate in
            seizeList.contains { entry in
                entry.domain == Int32(bitPattern: candidate.domain) && entry.bus == Int32(candidate.bus)
                    && entry.slot == Int32(candidate.slot) && entry.function == Int32(candidate.function)
            }
        }
    }

    /// `pcistub_device_id_add`: wildcards expand; each entry is range-checked and appended
    /// unless an identical one is listed.
    private mutating func addSlot(_ slot: SlotPattern) throws(Errno) {
        if slot.slot < 0 {
            for number in Int32(0)..<32 {
                try addSlot(SlotPattern(domain: slot.domain, bus: slot.bus, slot: number, function: slot.function))
            }
            return
        }
        if slot.function < 0 {
            for number in Int32(0)..<8 {
                try addSlot(SlotPattern(domain: slot.domain, bus: slot.bus, slot: slot.slot, function: number))
            }
            return
        }
        guard slot.domain >= 0, slot.domain <= 0xffff, slot.bus >= 0, slot.bus <= 0xff,
              slot.slot <= 0x1f, slot.function <= 7
        else { throw .invalidArgument }
        if !seizeList.contains(slot) { seizeList.append(slot) }
    }

    public mutating func newSlot(input: [UInt8]) throws(Errno) {
        try addSlot(PcibackGrammar.slot(input))
    }

    public mutating func removeSlot(input: [UInt8]) throws(Errno) {
        let slot = try PcibackGrammar.slot(input)
        let before = seizeList.count
        seizeList.removeAll { entry in
            entry.domain == slot.domain && entry.bus == slot.bus && (slot.slot < 0 || entry.slot == slot.slot)
                && (slot.function < 0 || entry.function == slot.function)
        }
        if seizeList.count == before { throw .noSuchFileOrDirectory }
    }

    public func slotsText() -> [UInt8] {
        var buffer = ShowBuffer()
        for entry in seizeList { buffer.print(entry.description + "\n") }
        return buffer.bytes
    }

    // MARK: - pciback: per-device flags (spec §1.7 - §1.9)

    /// `pcistub_device_find` on an exact, bound BDF.
    private func boundPcibackDevice(_ input: [UInt8], notFound: Errno) throws(Errno) -> PCIAddress {
        let slot = try PcibackGrammar.slot(input)
        guard let address = slot.address, slot.slot >= 0, slot.function >= 0, pcibackDevices.contains(address) else {
            throw notFound
        }
        return address
    }

    public mutating func setPermissive(input: [UInt8]) throws(Errno) {
        let address = try boundPcibackDevice(input, notFound: .noSuchDevice)
        guard deviceData[address] != nil else { throw .noSuchDeviceOrAddress }
        if !deviceData[address]!.permissive {
            deviceData[address]!.permissive = true
            log.device(address, "enabling permissive mode configuration space accesses!")
            log.device(address, "permissive mode is potentially unsafe!")
        }
    }

    public mutating func setAllowInterruptControl(input: [UInt8]) throws(Errno) {
        guard policy.profile.hasInterruptControl else { throw .noSuchFileOrDirectory }
        let address = try boundPcibackDevice(input, notFound: .noSuchDevice)
        guard deviceData[address] != nil else { throw .noSuchDeviceOrAddress }
        deviceData[address]!.allowInterruptControl = true
    }

    private func flagList(_ flag: (PcibackDeviceData) -> Bool) -> [UInt8] {
        var buffer = ShowBuffer()
        for address in pcibackDevices {
            guard let data = deviceData[address], flag(data) else { continue }
            buffer.print("\(address)\n")
        }
        return buffer.bytes
    }

    public func permissiveText() -> [UInt8] { flagList { $0.permissive } }
    public func allowInterruptControlText() -> [UInt8] { flagList { $0.allowInterruptControl } }

    public func irqHandlersText() -> [UInt8] {
        var buffer = ShowBuffer()
        for address in pcibackDevices {
            guard let data = deviceData[address] else { continue }
            buffer.print("\(address):\(data.isrOn ? "on" : "off"):\(data.ackInterrupts ? "ack" : "not ack")ing:\(data.handledInterrupts)\n")
        }
        return buffer.bytes
    }

    public mutating func toggleIRQHandlerState(input: [UInt8]) throws(Errno) {
        let address = try boundPcibackDevice(input, notFound: .noSuchFileOrDirectory)
        guard var data = deviceData[address] else { throw .noSuchFileOrDirectory }
        data.isrOn.toggle()
        if data.isrOn { data.ackInterrupts = true }
        deviceData[address] = data
    }

    /// `quirks` store (spec §1.9): checks in the kernel's order.
    public mutating func addQuirk(input: [UInt8]) throws(Errno) {
        let request = try PcibackGrammar.quirk(input)
        // pcistub_reg_add takes REG, SIZE and MASK as unsigned ints.
        let register = UInt32(bitPattern: request.register)
        let size = UInt32(bitPattern: request.size)
        let mask = UInt32(bitPattern: request.mask)
        if register > 0xfff || (size < 4 && mask >> (8 * size) != 0) { throw .invalidArgument }
        guard let address = request.slot.address, request.slot.slot >= 0, request.slot.function >= 0,
              pcibackDevices.contains(address), deviceData[address] != nil
        else { throw .noSuchDevice }
        guard size == 1 || size == 2 || size == 4 else { throw .invalidArgument }
        let offset = Int(register)
        if deviceData[address]!.fields.contains(where: { $0.offset == offset }) { return }
        deviceData[address]!.fields.append(ConfigField(offset: offset, size: Int(size), mask: mask, kind: .quirk))
    }

    public func quirksText() -> [UInt8] {
        var buffer = ShowBuffer()
        for address in quirkRegistrations {
            guard let device = machine[address], let data = deviceData[address] else { continue }
            let identity = device.identity
            buffer.print(address.shortDescription + "\n")
            buffer.print("\t\(hex(identity.vendor, width: 4)):\(hex(identity.device, width: 4)):"
                         + "\(hex(identity.subsystemVendor, width: 4)):\(hex(identity.subsystemDevice, width: 4))\n")
            for field in data.fields {
                buffer.print("\t\t\(hex(field.offset, width: 8)):\(String(field.size, radix: 16)):\(hex(field.mask, width: 8))\n")
            }
            if buffer.isFull { break }
        }
        return buffer.bytes
    }

    // MARK: - pciback: bind, release, unbind (spec §3)

    /// `pcistub_probe`.
    private mutating func pcistubProbe(_ address: PCIAddress) throws(Errno) {
        guard let device = machine[address] else { throw .noSuchDevice }
        let bySlot = matchesSeizeList(address)
        guard bySlot || driverOverrides[address] == Array(PCIDriver.pcibackName.utf8) else { throw .noSuchDevice }
        guard device.identity.layout == .normal || device.identity.layout == .bridge else {
            log.device(address, "can't export pci devices that don't have a normal (0) or bridge (1) header type!")
            throw .noSuchDevice
        }
        if !bySlot { try? addSlot(SlotPattern(address)) }
        log.device(address, "seizing device")
        try initializeDevice(address)
        pcibackDevices.insert(address, at: 0)
        bindings[address] = PCIDriver.pcibackName
        topologyGeneration += 1
    }

    /// Boot-time seize: the same initialisation, appended to the device list.
    private mutating func seizeAtBoot(_ address: PCIAddress) throws(Errno) {
        try initializeDevice(address)
        pcibackDevices.append(address)
        bindings[address] = PCIDriver.pcibackName
    }

    /// `pcistub_init_device` (spec §3.2).
    private mutating func initializeDevice(_ address: PCIAddress) throws(Errno) {
        guard let device = machine[address] else { throw .noSuchDevice }
        var data = PcibackDeviceData(address: address)
        try ConfigFilter.initialize(device, &data, profile: policy.profile)
        quirkRegistrations.append(address)
        do {
            try device.enableDevice()
            device.saveState()
            data.savedState = device.config.bytes
            try device.resetFunction()
            device.restoreState()
        } catch {
            quirkRegistrations.removeAll { $0 == address }
            device.disableDevice()
            log.device(address, "could not enable or reset the device (\(-error.rawValue))")
            throw error
        }
        resetDevice(device, &data)
        deviceData[address] = data
    }

    /// `xen_pcibk_reset_device` (spec §8.3).
    private mutating func resetDevice(_ device: EmulatedDevice, _ data: inout PcibackDeviceData) {
        controlISR(device, &data, reset: true)
        if device.identity.layout == .normal {
            if device.kernelMSIXEnabled { device.disableMSIX() }
            if device.kernelMSIEnabled { device.disableMSI() }
            if device.isEnabled { device.disableDevice() }
            // Only the kernel's flag: PCI_COMMAND is not touched, so a snapshot's MASTER stays.
            device.isBusmaster = false
        } else if device.command & PCICommand.invalidate != 0 {
            device.clearMemoryWriteInvalidate()
            device.isBusmaster = false
        }
    }

    /// `xen_pcibk_control_isr`.
    mutating func controlISR(_ device: EmulatedDevice, _ data: inout PcibackDeviceData, reset: Bool) {
        guard device.identity.layout == .normal else { return }
        if reset {
            data.enableINTx = false
            data.ackInterrupts = false
        }
        let enable = data.enableINTx
        if !enable && !data.isrOn { return }
        if enable { data.isrIRQ = device.irq }
        if data.isrIRQ == 0 { return }
        if enable {
            if device.kernelMSIEnabled || device.kernelMSIXEnabled { return }
        } else {
            data.isrIRQ = 0
        }
        data.isrOn = enable
        data.ackInterrupts = enable
    }

    /// `pcistub_put_pci_dev` (spec §3.3): the guest let go.
    private mutating func releaseFromGuest(_ address: PCIAddress) {
        guard let device = machine[address], var data = deviceData[address] else { return }
        try? device.resetFunction()
        device.restoreState(data.savedState)
        resetDevice(device, &data)
        for index in data.bars.indices { data.bars[index]?.sizing = false }
        data.fields.removeAll { $0.isDynamic }
        data.allowInterruptControl = false
        deviceData[address] = data
        owners[address] = nil
    }

    /// `pcistub_remove` (spec §3.5).
    private mutating func pcistubRemove(_ address: PCIAddress) {
        quirkRegistrations.removeAll { $0 == address }
        if let domain = owners[address] {
            log.device(address, "****** removing device \(address) while still in-use by domain \(domain)! ******")
            log.device(address, "****** driver domain may still access this device's i/o resources!")
            log.device(address, "****** shutdown driver domain before binding device")
            log.device(address, "****** to other drivers or domains")
            removeExport(address)
            releaseFromGuest(address)
        }
        if let device = machine[address], var data = deviceData[address] {
            try? device.resetFunction()
            device.restoreState(data.savedState)
            resetDevice(device, &data)
        }
        deviceData[address] = nil
        pcibackDevices.removeAll { $0 == address }
    }

    // MARK: - Frontends (what xenstore and pcifront do on a real host)

    /// Exports a device bound to pciback to frontend `domain`; returns its virtual address.
    public mutating func attach(domain: UInt32, address: PCIAddress) throws(Errno) -> PCIAddress {
        guard isBoundToPciback(address), owners[address] == nil, let device = machine[address] else {
            throw .invalidArgument  // "Couldn't locate PCI device ... perhaps already in-use?"
        }
        var frontend = frontends[domain] ?? Frontend(domain: domain)
        let virtual: PCIAddress
        if passthroughBackend {
            virtual = address
        } else {
            guard device.identity.classCode >> 16 != 0x06 else { throw .badAddress }  // bridges: -EFAULT
            guard let slot = virtualSlot(for: device, in: frontend) else { throw .outOfMemory }
            virtual = PCIAddress(domain: 0, bus: 0, slot: slot, function: address.function)
            log.device(address, "vpci: assign to virtual slot \(slot)")
        }
        frontend.exports.append(Frontend.Export(virtual: virtual, host: address))
        frontends[domain] = frontend
        owners[address] = domain
        topologyGeneration += 1
        return virtual
    }

    /// vpci's slot rule: functions of one physical slot share a virtual slot, except that an
    /// SR-IOV VF at function 0 takes its own; otherwise the first free slot.
    private func virtualSlot(for device: EmulatedDevice, in frontend: Frontend) -> UInt8? {
        let isVirtualFunction = device.physicalFunction != nil
        if !isVirtualFunction || device.address.function != 0 {
            for slot in UInt8(0)..<32 {
                guard let first = frontend.exports.first(where: { $0.virtual.slot == slot }),
                      let firstDevice = machine[first.host]
                else { continue }
                if firstDevice.physicalFunction != nil && first.host.function == 0 { continue }
                if first.host.domain == device.address.domain && first.host.bus == device.address.bus
                    && first.host.slot == device.address.slot {
                    return slot
                }
            }
        }
        let used = Set(frontend.exports.map(\.virtual.slot))
        return (UInt8(0)..<32).first { !used.contains($0) }
    }

    /// The frontend let a device go (device removal or frontend shutdown).
    public mutating func detach(domain: UInt32, address: PCIAddress) throws(Errno) {
        guard owners[address] == domain else { throw .noSuchDevice }
        removeExport(address)
        releaseFromGuest(address)
        topologyGeneration += 1
    }

    private mutating func removeExport(_ address: PCIAddress) {
        guard let domain = owners[address] else { return }
        frontends[domain]?.exports.removeAll { $0.host == address }
        if frontends[domain]?.exports.isEmpty == true { frontends[domain] = nil }
    }

    /// `xen_pcibk_get_pci_dev`: the device a frontend addresses.
    public func frontendDevice(domain: UInt32, pciDomain: UInt32, bus: UInt32, devfn: UInt32) -> PCIAddress? {
        guard let frontend = frontends[domain] else { return nil }
        if passthroughBackend {
            return frontend.exports.first {
                $0.host.domain == pciDomain && UInt32($0.host.bus) == bus && UInt32($0.host.devfn) == devfn
            }?.host
        }
        guard pciDomain == 0, bus == 0 else { return nil }
        let slot = UInt8((devfn >> 3) & 0x1f)
        let function = UInt8(devfn & 7)
        return frontend.exports.first { $0.virtual.slot == slot && $0.virtual.function == function }?.host
    }

    // MARK: - Guest config access through the filter

    // The per-device data is reached through its dictionary index and changed in place: a
    // copy out and back would duplicate its arrays on every access (this is the B6 hot path).

    public mutating func guestRead(_ address: PCIAddress, offset: Int, size: Int) -> FilterVerdict {
        guard let index = deviceData.index(forKey: address), let device = machine.devices[address] else {
            return FilterVerdict(error: XenPCIError.deviceNotFound)
        }
        let verdict = ConfigFilter.read(device, &deviceData.values[index], offset: offset, size: size)
        record(.configRead, device: address, offset: offset, size: size, value: verdict.value, verdict: verdict)
        return verdict
    }

    public mutating func guestWrite(_ address: PCIAddress, offset: Int, size: Int, value: UInt32) -> FilterVerdict {
        guard let index = deviceData.index(forKey: address), let device = machine.devices[address] else {
            return FilterVerdict(error: XenPCIError.deviceNotFound)
        }
        let policy = self.policy
        let intxBefore = deviceData.values[index].enableINTx
        let verdict = ConfigFilter.write(device, &deviceData.values[index], offset: offset, size: size, value: value,
                                         policy: policy, log: &log)
        if verdict.error == 0, deviceData.values[index].enableINTx != intxBefore {
            var data = deviceData.values[index]
            controlISR(device, &data, reset: false)
            deviceData.values[index] = data
        }
        record(.configWrite, device: address, offset: offset, size: size, value: value, verdict: verdict)
        return verdict
    }

    // MARK: - Hot removal and rescan

    /// `devices/<BDF>/remove`: the function (and everything behind it, for a bridge) is
    /// released from its driver and leaves the tree; `rescan` finds it again.
    public mutating func removeDevice(_ address: PCIAddress) {
        var doomed: [PCIAddress] = []
        func collect(_ current: PCIAddress) {
            for child in machine.children(of: current) where machine[child]?.physicalFunction == nil { collect(child) }
            doomed.append(current)
        }
        collect(address)
        // A PF's VFs go with it (its driver's remove disables SR-IOV: VFs, VF Enable, NumVFs).
        for pf in doomed where sriov[pf] != nil { disableSRIOV(pf) }
        for target in doomed {
            if owners[target] != nil { removeExport(target) }
            releaseDriver(target)
            removedDevices[target] = machine[target]
        }
        machine.remove(doomed)
        topologyGeneration += 1
    }

    /// `bus/pci/rescan`: removed functions come back and drivers attach.
    public mutating func rescan() {
        guard !removedDevices.isEmpty else { return }
        let returning = removedDevices.values.sorted { $0.address < $1.address }
        removedDevices = [:]
        machine.add(returning)
        // bus_probe_device: only while the bus's drivers_autoprobe is on.
        if tunables.driversAutoprobe {
            for device in returning { attachDriver(device.address) }
        }
        topologyGeneration += 1
    }

    // MARK: - dom0's own sysfs config (no filter: root touching the hardware)

    public func hostRead(_ address: PCIAddress, offset: Int, width: Int) -> UInt32 {
        guard let device = machine[address] else { return 0xffff_ffff }
        return hostRead(device, offset: offset, width: width)
    }

    public func hostRead(_ device: EmulatedDevice, offset: Int, width: Int) -> UInt32 {
        let (value, error) = device.hardwareRead(offset, width: width)
        return error == 0 ? value : (width == 4 ? 0xffff_ffff : (1 << (8 * UInt32(width))) - 1)
    }

    public mutating func hostWrite(_ address: PCIAddress, offset: Int, width: Int, value: UInt32) {
        machine[address]?.hardwareWrite(offset, width: width, value: value)
    }
}

extension KernelScanf {
    /// `sscanf(buf, "%x %x ...")` with up to `maximum` conversions, as new_id/remove_id parse.
    static func numbers(_ input: [UInt8], maximum: Int) -> [UInt32] {
        let format = Array(repeating: "%x", count: maximum).joined(separator: " ")
        return KernelScanf(format).scan(input).values.map { UInt32(bitPattern: $0) }
    }
}
