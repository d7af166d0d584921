extension Dom0 {
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
        guard let device = machine[address] else { return }
        let control = device.isBridge ? device.config.read(PCIRegister.bridgeControl, width: 2) : 0
        device.hardwareWrite(offset, width: width, value: value)
        // A bridge's Secondary Bus Reset going from 0 to 1 hot-resets everything below it.
        if device.isBridge, offset <= PCIRegister.bridgeControl, offset + width > PCIRegister.bridgeControl,
           UInt16(control) & PCIBridgeControl.secondaryBusReset == 0,
           UInt16(device.config.read(PCIRegister.bridgeControl, width: 2)) & PCIBridgeControl.secondaryBusReset != 0 {
            hotResetBelow(address)
        }
    }
}
