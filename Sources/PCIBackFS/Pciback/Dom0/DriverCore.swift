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

extension Dom0 {
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

    /// A host driver's probe: enable, bus master, and the interrupts it prefers. At boot an
    /// imported function is a snapshot: bound as recorded, its registers untouched.
    mutating func bindHostDriver(_ name: String, _ address: PCIAddress, atBoot: Bool = false) {
        guard let device = machine[address] else { return }
        bindings[address] = name
        topologyGeneration += 1
        if atBoot && device.isSnapshot { return }
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
}

extension KernelScanf {
    /// `sscanf(buf, "%x %x ...")` with up to `maximum` conversions, as new_id/remove_id parse.
    static func numbers(_ input: [UInt8], maximum: Int) -> [UInt32] {
        let format = Array(repeating: "%x", count: maximum).joined(separator: " ")
        return KernelScanf(format).scan(input).values.map { UInt32(bitPattern: $0) }
    }
}
