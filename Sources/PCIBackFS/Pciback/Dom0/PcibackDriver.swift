extension Dom0 {
    // MARK: - pciback: seize list (spec §1.4 - §1.6)

    func matchesSeizeList(_ address: PCIAddress) -> Bool {
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
    mutating func addSlot(_ slot: SlotPattern) throws(Errno) {
        try Dom0.addSlot(slot, to: &seizeList)
    }

    /// `pcistub_device_id_add` on a given list (new_slot's, or `hide`'s at init).
    static func addSlot(_ slot: SlotPattern, to list: inout [SlotPattern]) throws(Errno) {
        if slot.slot < 0 {
            for number in Int32(0)..<32 {
                try addSlot(SlotPattern(domain: slot.domain, bus: slot.bus, slot: number, function: slot.function), to: &list)
            }
            return
        }
        if slot.function < 0 {
            for number in Int32(0)..<8 {
                try addSlot(SlotPattern(domain: slot.domain, bus: slot.bus, slot: slot.slot, function: number), to: &list)
            }
            return
        }
        guard slot.domain >= 0, slot.domain <= 0xffff, slot.bus >= 0, slot.bus <= 0xff,
              slot.slot <= 0x1f, slot.function <= 7
        else { throw .invalidArgument }
        if !list.contains(slot) { list.append(slot) }
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
    mutating func pcistubProbe(_ address: PCIAddress) throws(Errno) {
        guard let device = machine[address] else { throw .noSuchDevice }
        let bySlot = matchesSeizeList(address)
        guard bySlot || driverOverrides[address] == Array(PCIDriver.pcibackName.utf8) else { throw .noSuchDevice }
        try checkHeaderType(device)
        if !bySlot { try? addSlot(SlotPattern(address)) }
        log.device(address, "seizing device")
        try initializeDevice(address)
        pcibackDevices.insert(address, at: 0)
        bindings[address] = PCIDriver.pcibackName
        topologyGeneration += 1
    }

    /// `pcistub_probe`'s header check: pciback exports only header types 0 and 1.
    private mutating func checkHeaderType(_ device: EmulatedDevice) throws(Errno) {
        guard device.identity.layout == .normal || device.identity.layout == .bridge else {
            log.device(device.address, "can't export pci devices that don't have a normal (0) or bridge (1) header type!")
            throw .noSuchDevice
        }
    }

    /// `pcistub_probe` while pciback registers at boot: the same checks and messages as a later
    /// bind ("seizing device", the header-type refusal, initialisation errors), the device
    /// appended to the device list (spec §3.4). Returns false when pciback leaves the function to
    /// its own driver (not in the seize list, or a header type pciback refuses).
    mutating func seizeAtBoot(_ address: PCIAddress) -> Bool {
        guard let device = machine[address], matchesSeizeList(address) else { return false }
        do { try checkHeaderType(device) } catch { return false }
        log.device(address, "seizing device")
        // An imported function may carry a driver's state; pciback starts from a quiet one.
        if device.isEnabled { device.quiesceForDriverRemoval() }
        do {
            try initializeDevice(address)
        } catch {
            // pcistub_init_devices_late: the device is dropped from pciback's list, unbound.
            log.device(address, "error \(-error.rawValue) initializing device")
            return true
        }
        pcibackDevices.append(address)
        bindings[address] = PCIDriver.pcibackName
        return true
    }

    /// `pcistub_init_device` (spec §3.2).
    private mutating func initializeDevice(_ address: PCIAddress) throws(Errno) {
        guard let device = machine[address] else { throw .noSuchDevice }
        var data = PcibackDeviceData(address: address)
        try ConfigFilter.initialize(device, &data, profile: policy.profile)
        quirkRegistrations.append(address)
        do throws(Errno) {
            try device.enableDevice()
            // pci_save_state, pci_store_saved_state; the reset step (its function reset's result
            // ignored, Xen's reset under PVH failing the bind); pci_restore_state.
            device.saveState()
            data.savedState = device.config.bytes
            if let error = pcistubResetDeviceState(address) { throw error }
            restoreState(address)
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
    mutating func releaseFromGuest(_ address: PCIAddress) {
        guard let device = machine[address], var data = deviceData[address] else { return }
        _ = pcistubResetDeviceState(address)
        restoreState(address, from: data.savedState)
        resetDevice(device, &data)
        for index in data.bars.indices { data.bars[index]?.sizing = false }
        data.fields.removeAll { $0.isDynamic }
        data.allowInterruptControl = false
        deviceData[address] = data
        owners[address] = nil
    }

    /// `pcistub_remove` (spec §3.5).
    mutating func pcistubRemove(_ address: PCIAddress) {
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
            _ = pcistubResetDeviceState(address)
            restoreState(address, from: data.savedState)
            resetDevice(device, &data)
        }
        deviceData[address] = nil
        pcibackDevices.removeAll { $0 == address }
    }
}
