/// What the kernel caches about a physical function (`struct pci_sriov`), and what the
/// `sriov_*` files show: these change only through the kernel's own writes, never through raw
/// config writes to the capability.
public struct SRIOVState: Sendable, Equatable {
    public var totalVFs: UInt16
    public var initialVFs: UInt16
    /// `driver_max_VFs`: TotalVFs unless the bound driver lowered it.
    public var driverMaxVFs: UInt16
    public var numVFs: UInt16 = 0
    public var offset: UInt16
    public var stride: UInt16
    public var vfDeviceID: UInt16
    public var driversAutoprobe = true
    public var migrationCapable: Bool
    /// `iov->ctrl`: the SR-IOV Control value the kernel last wrote (what it restores).
    public var control: UInt16 = 0
    /// VF BAR windows: per-VF size and the address of VF 0's BAR, by VF BAR index.
    public var windows: [Int: BARDescriptor] = [:]
    /// The VFs that exist, by VF id (0-based).
    public var virtualFunctions: [PCIAddress] = []
}

/// Host drivers whose model has an `sriov_configure` callback (as `pci_sriov_configure_simple`
/// behaves). pciback, pcieport and the rest have none.
let driversWithSRIOVConfigure: Set<String> = ["igb", "ixgbe", "i40e", "ice", "mlx5_core", "nvme", "pci-pf-stub"]

extension Dom0 {
    // MARK: - Enumeration (sriov_init, spec sriov.md §1.4)

    /// The boot-time pass over every PF: clear a stale VF Enable, page size, VF BAR sizing and
    /// window assignment, the NumVFs sweep ending at 0. A device that fails a check is simply
    /// not a PF (no sriov_* files). Imported PFs are snapshots of a running system and keep
    /// their registers (`adoptSnapshotSRIOV`); the pass is for templates and the built-in machine.
    mutating func initializeSRIOV() {
        // Memory the machine already decodes; VF BAR windows are placed around it.
        var used = AddressMap()
        for address in machine.order {
            guard let device = machine[address] else { continue }
            for case let bar? in device.bars where bar.kind.isMemory && bar.address != 0 {
                used.insert(bar.address...(bar.address + bar.size - 1))
            }
        }
        for address in machine.order {
            guard let device = machine[address], device.isPCIExpress, device.configSize == 4096,
                  let capability = SRIOVCapability(device) else { continue }
            if device.isSnapshot {
                adoptSnapshotSRIOV(address, device, capability)
                for window in sriov[address]?.windows.values ?? [:].values {
                    used.insert(window.address...(window.address + window.size * UInt64(sriov[address]!.totalVFs) - 1))
                }
                continue
            }
            let base = capability.offset
            typealias R = SRIOVCapability.Register
            if UInt16(capability.read(device, R.control, width: 2)) & SRIOVCapability.vfEnable != 0 {
                device.hardwareWrite(base + R.control, width: 2, value: 0)
            }
            device.hardwareWrite(base + R.control, width: 2, value: 0)
            let total = UInt16(capability.read(device, R.totalVFs, width: 2))
            guard total > 0 else { continue }
            // The smallest supported page size of at least PAGE_SIZE (4 KiB on x86: every bit).
            let supported = capability.read(device, R.supportedPageSizes, width: 4)
            guard supported != 0 else { continue }
            device.hardwareWrite(base + R.systemPageSize, width: 4, value: SRIOVCapability.systemPageSize(supported: supported))
            // Firmware's VF BAR addresses, read before sizing (which restores them).
            let firmware = capability.virtualFunctionBARAddresses(device)
            let vfBARs = capability.virtualFunctionBARs(device)
            guard vfBARs.allSatisfy({ $0.size % 4096 == 0 }) else { continue }
            // Offsets and strides for every NumVFs must be usable.
            var usable = true
            for count in stride(from: Int(total), through: 1, by: -1) {
                device.hardwareWrite(base + R.numVFs, width: 2, value: UInt32(count))
                let offset = capability.read(device, R.firstVFOffset, width: 2)
                let step = capability.read(device, R.vfStride, width: 2)
                if offset == 0 || (count > 1 && step == 0) { usable = false }
            }
            device.hardwareWrite(base + R.numVFs, width: 2, value: 0)
            guard usable else { continue }
            var state = SRIOVState(
                totalVFs: total, initialVFs: UInt16(capability.read(device, R.initialVFs, width: 2)),
                driverMaxVFs: total,
                offset: UInt16(capability.read(device, R.firstVFOffset, width: 2)),
                stride: UInt16(capability.read(device, R.vfStride, width: 2)),
                vfDeviceID: UInt16(capability.read(device, R.vfDeviceID, width: 2)),
                migrationCapable: capability.read(device, R.capabilities, width: 4) & SRIOVCapability.vfMigrationCapable != 0)
            // Window assignment: each VF BAR i gets size x TotalVFs, written into the VF BAR.
            for bar in vfBARs {
                let span = bar.size * UInt64(total)
                let start = assignWindow(for: address, kind: bar.kind, size: bar.size, span: span,
                                         firmware: firmware[bar.index] ?? 0, used: used)
                used.insert(start...(start + span - 1))
                state.windows[bar.index] = BARDescriptor(kind: bar.kind, size: bar.size, address: start)
                let register = base + R.vfBAR0 + 4 * bar.index
                device.hardwareWrite(register, width: 4, value: UInt32(truncatingIfNeeded: start) | bar.kind.typeBits)
                if bar.kind.is64Bit {
                    device.hardwareWrite(register + 4, width: 4, value: UInt32(truncatingIfNeeded: start >> 32))
                }
            }
            sriov[address] = state
        }
    }

    /// An imported PF is a snapshot of a running system (sriov.md §6 item 3, revised): nothing is
    /// written; the kernel's cache is what `sriov_init` and a later enable left, read from the
    /// registers as recorded: TotalVFs, offset and stride (for the recorded NumVFs), VF Device
    /// ID, `num_VFs` and `ctrl` (NumVFs and Control when VF Enable is set, else 0 and Control),
    /// the VF BAR windows the registers hold, and the VFs `SnapshotSRIOV` placed. A PF with
    /// TotalVFs 0 is not a PF (§1.4 step 3).
    private mutating func adoptSnapshotSRIOV(_ address: PCIAddress, _ device: EmulatedDevice, _ capability: SRIOVCapability) {
        typealias R = SRIOVCapability.Register
        let total = UInt16(capability.read(device, R.totalVFs, width: 2))
        guard total > 0 else { return }
        let control = UInt16(capability.read(device, R.control, width: 2))
        let enabled = control & SRIOVCapability.vfEnable != 0
        var state = SRIOVState(
            totalVFs: total, initialVFs: UInt16(capability.read(device, R.initialVFs, width: 2)), driverMaxVFs: total,
            numVFs: enabled ? UInt16(capability.read(device, R.numVFs, width: 2)) : 0,
            offset: UInt16(capability.read(device, R.firstVFOffset, width: 2)),
            stride: UInt16(capability.read(device, R.vfStride, width: 2)),
            vfDeviceID: UInt16(capability.read(device, R.vfDeviceID, width: 2)),
            migrationCapable: capability.read(device, R.capabilities, width: 4) & SRIOVCapability.vfMigrationCapable != 0)
        state.control = control
        state.windows = SnapshotSRIOV.windows(of: device, capability)
        let rid = Int(address.bus) << 8 + Int(address.devfn)
        func id(_ vf: PCIAddress) -> Int { (Int(vf.bus) << 8 + Int(vf.devfn) - rid - Int(state.offset)) / max(Int(state.stride), 1) }
        state.virtualFunctions = machine.order.filter { machine[$0]?.physicalFunction == address }.sorted { id($0) < id($1) }
        sriov[address] = state
    }

    /// Where the kernel's resource assignment puts a VF BAR window of `span` bytes aligned to the
    /// per-VF `size` (`pci_sriov_resource_alignment`): firmware's address if it lies in the
    /// upstream bridge's window and clashes with nothing; otherwise the first free range in
    /// that window (a prefetchable BAR in the prefetchable window, any other memory BAR, 64-bit
    /// or not, in the 32-bit memory window); if the window is full or there is no bridge, the
    /// first free range of the host's MMIO hole (or, for 64-bit BARs, above 4 GiB).
    private func assignWindow(for pf: PCIAddress, kind: BARDescriptor.Kind, size: UInt64, span: UInt64, firmware: UInt64,
                              used: AddressMap) -> UInt64 {
        func free(_ start: UInt64) -> ClosedRange<UInt64>? {
            used.firstOverlap(with: start...(start + span - 1))
        }
        func firstFit(in window: ClosedRange<UInt64>) -> UInt64? {
            var start = (window.lowerBound + size - 1) / size * size
            while start <= window.upperBound, window.upperBound - start >= span - 1 {
                guard let clash = free(start) else { return start }
                start = (clash.upperBound + size) / size * size
            }
            return nil
        }
        var windows: [ClosedRange<UInt64>] = []
        if let bridge = machine.parentBridge(of: pf).flatMap({ machine[$0] }) {
            let config = bridge.config
            let memoryBase = UInt64(config.read(PCIRegister.memoryBase, width: 2) & 0xfff0) << 16
            let memoryLimit = UInt64(config.read(PCIRegister.memoryLimit, width: 2) & 0xfff0) << 16 | 0xfffff
            let prefetchBase = UInt64(config.read(PCIRegister.prefetchBase, width: 2) & 0xfff0) << 16
                | UInt64(config.read(PCIRegister.prefetchBaseUpper, width: 4)) << 32
            let prefetchLimit = (UInt64(config.read(PCIRegister.prefetchLimit, width: 2) & 0xfff0) << 16 | 0xfffff)
                | UInt64(config.read(PCIRegister.prefetchLimitUpper, width: 4)) << 32
            if kind.isPrefetchable, prefetchBase <= prefetchLimit, kind.is64Bit || prefetchLimit <= 0xffff_ffff {
                windows.append(prefetchBase...prefetchLimit)
            }
            if memoryBase <= memoryLimit { windows.append(memoryBase...memoryLimit) }
        }
        if firmware != 0, windows.contains(where: { $0.contains(firmware) && $0.upperBound - firmware >= span - 1 }),
           firmware % size == 0, free(firmware) == nil {
            return firmware
        }
        for window in windows {
            if let start = firstFit(in: window) { return start }
        }
        if let start = firstFit(in: 0xc000_0000...0xfebf_ffff) { return start }
        return firstFit(in: 0x40_0000_0000...0xffff_ffff_ffff) ?? 0x40_0000_0000
    }

    private func routingID(_ address: PCIAddress) -> Int { Int(address.bus) << 8 | Int(address.devfn) }

    /// The address of VF `id` (spec sriov.md §3.1), nil past bus 255.
    func virtualFunctionAddress(of pf: PCIAddress, id: Int, offset: UInt16, stride: UInt16) -> PCIAddress? {
        let rid = routingID(pf) + Int(offset) + id * Int(stride)
        guard rid <= 0xffff else { return nil }
        return PCIAddress(domain: pf.domain, bus: UInt8(rid >> 8), devfn: UInt8(rid & 0xff))
    }

    public func isPhysicalFunction(_ address: PCIAddress) -> Bool { sriov[address] != nil }

    // MARK: - sriov_numvfs (spec sriov.md §2.3, §2.4)

    public mutating func storeNumVFs(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        guard var state = sriov[address] else { throw .noSuchFileOrDirectory }
        guard let value = try? KernelNumbers.unsignedLong(input), value <= 0xffff else { throw .invalidArgument }
        let count = UInt16(value)
        if count > state.driverMaxVFs { throw .outOfRange }
        if count == state.numVFs { return }
        guard let driver = bindings[address] else {
            log.device(address, "no driver bound to device; cannot configure SR-IOV", driver: "pci")
            throw .noSuchFileOrDirectory
        }
        guard driversWithSRIOVConfigure.contains(driver) else {
            // dev_printk names the bound driver, or the bus when there is none.
            log.device(address, "driver does not support SR-IOV configuration via sysfs", driver: driver)
            throw .noSuchFileOrDirectory
        }
        if count == 0 {
            try configureSRIOV(address, driver: driver, count: 0, state: &state)
            return
        }
        if state.numVFs != 0 {
            log.device(address, "\(state.numVFs) VFs already enabled. Disable before enabling \(count) VFs", driver: driver)
            throw .resourceBusy
        }
        try configureSRIOV(address, driver: driver, count: count, state: &state)
    }

    /// The PF driver's `sriov_configure`, as `pci_sriov_configure_simple` behaves: nothing may
    /// change while a VF is assigned (bound to pciback), then disable or enable.
    private mutating func configureSRIOV(_ address: PCIAddress, driver: String, count: UInt16,
                                         state: inout SRIOVState) throws(Errno) {
        if assignedVirtualFunctions(of: address) > 0 {
            log.device(address, "Cannot modify SR-IOV while VFs are assigned", driver: driver)
            throw .operationNotPermitted
        }
        if count == 0 {
            disableSRIOV(address)
        } else {
            try enableSRIOV(address, count: count, state: &state)
        }
    }

    /// VFs of `pf` bound to pciback (pci_vfs_assigned).
    func assignedVirtualFunctions(of pf: PCIAddress) -> Int {
        (sriov[pf]?.virtualFunctions ?? []).filter { bindings[$0] == PCIDriver.pcibackName }.count
    }

    /// `sriov_enable`: the checks in the kernel's order, the register writes, then the VFs.
    private mutating func enableSRIOV(_ address: PCIAddress, count: UInt16, state: inout SRIOVState) throws(Errno) {
        guard let pf = machine[address], let capability = SRIOVCapability(pf) else { throw .noSuchDevice }
        typealias R = SRIOVCapability.Register
        if state.initialVFs > state.totalVFs || (!state.migrationCapable && state.initialVFs != state.totalVFs) {
            throw .ioError
        }
        if count > state.totalVFs || (!state.migrationCapable && count > state.initialVFs) { throw .invalidArgument }
        // The last VF's bus must fit under the upstream bridge (cached offset and stride).
        let range: ClosedRange<Int>
        if let bridge = machine.parentBridge(of: address).flatMap({ machine[$0] }) {
            range = Int(address.bus)...max(Int(address.bus), Int(bridge.config.read(PCIRegister.subordinateBus, width: 1)))
        } else {
            range = Int(address.bus)...Int(address.bus)
        }
        let last = virtualFunctionAddress(of: address, id: Int(count) - 1, offset: state.offset, stride: state.stride)
        if last == nil || Int(last!.bus) > range.upperBound {
            let lastBus = (routingID(address) + Int(state.offset) + (Int(count) - 1) * Int(state.stride)) >> 8
            let resource = range.count == 1 ? "[bus \(hex(range.lowerBound, width: 2))]"
                : "[bus \(hex(range.lowerBound, width: 2))-\(hex(range.upperBound, width: 2))]"
            log.device(address, "can't enable \(count) VFs (bus \(hex(lastBus, width: 2)) out of range of \(resource))",
                       driver: bindings[address] ?? "pci")
            throw .outOfMemory
        }
        // NumVFs, re-read offset and stride, then VF Enable and MSE in one write.
        pf.hardwareWrite(capability.offset + R.numVFs, width: 2, value: UInt32(count))
        let offset = UInt16(capability.read(pf, R.firstVFOffset, width: 2))
        let stride = UInt16(capability.read(pf, R.vfStride, width: 2))
        let addresses = (0..<Int(count)).map { virtualFunctionAddress(of: address, id: $0, offset: offset, stride: stride) }
        if addresses.contains(where: { $0 == nil || Int($0!.bus) > range.upperBound || machine[$0!] != nil }) {
            // What the device computes for this NumVFs clashes with a function that exists (or
            // leaves the bus range): device_add fails, sriov_enable undoes its writes.
            log.device(address, "SR-IOV: VF addresses for \(count) VFs clash with existing functions", driver: bindings[address] ?? "pci")
            pf.hardwareWrite(capability.offset + R.numVFs, width: 2, value: 0)
            state.offset = UInt16(capability.read(pf, R.firstVFOffset, width: 2))
            state.stride = UInt16(capability.read(pf, R.vfStride, width: 2))
            sriov[address] = state
            throw .fileExists
        }
        state.offset = offset
        state.stride = stride
        let control = UInt16(capability.read(pf, R.control, width: 2)) | SRIOVCapability.vfEnable | SRIOVCapability.vfMemorySpaceEnable
        pf.hardwareWrite(capability.offset + R.control, width: 2, value: UInt32(control))
        state.control = control
        var created: [EmulatedDevice] = []
        for (id, vfAddress) in addresses.enumerated() {
            let bars = SRIOVCapability.virtualFunctionBARs(id, windows: state.windows)
            created.append(pf.makeVirtualFunction(at: vfAddress!, index: id, vfDeviceID: state.vfDeviceID, bars: bars))
        }
        machine.add(created)
        state.virtualFunctions = created.map(\.address)
        state.numVFs = count
        sriov[address] = state
        topologyGeneration += 1
        if tunables.driversAutoprobe {
            for vf in created { attachDriver(vf.address) }
        }
    }

    /// `sriov_disable`: VFs removed in increasing order (a VF bound to pciback goes through
    /// pcistub_remove), then VF Enable and MSE cleared and NumVFs set to 0.
    mutating func disableSRIOV(_ address: PCIAddress) {
        guard var state = sriov[address], state.numVFs > 0, let pf = machine[address],
              let capability = SRIOVCapability(pf) else { return }
        typealias R = SRIOVCapability.Register
        for vf in state.virtualFunctions {
            if owners[vf] != nil || bindings[vf] != nil { releaseDriver(vf) }
        }
        // The pci_dev structures are freed: a VF created again starts without an override.
        for vf in state.virtualFunctions { try? setDriverOverride(vf, input: []) }
        machine.remove(state.virtualFunctions)
        let control = UInt16(capability.read(pf, R.control, width: 2)) & ~(SRIOVCapability.vfEnable | SRIOVCapability.vfMemorySpaceEnable)
        pf.hardwareWrite(capability.offset + R.control, width: 2, value: UInt32(control))
        state.control = control
        pf.hardwareWrite(capability.offset + R.numVFs, width: 2, value: 0)
        state.offset = UInt16(capability.read(pf, R.firstVFOffset, width: 2))
        state.stride = UInt16(capability.read(pf, R.vfStride, width: 2))
        state.virtualFunctions = []
        state.numVFs = 0
        sriov[address] = state
        topologyGeneration += 1
    }

    /// What happens to a PF's VFs when its driver lets go (spec sriov.md §5.4, §2.4): pciback's
    /// notifier first unbinds the VFs it holds that no guest owns; then the PF driver's remove
    /// disables SR-IOV unless VFs are still assigned (then the kernel warns and they stay).
    /// `pci-pf-stub` has no remove callback: its VFs always stay.
    mutating func physicalFunctionDriverRemoval(_ address: PCIAddress) {
        guard var state = sriov[address] else { return }
        for vf in state.virtualFunctions where bindings[vf] == PCIDriver.pcibackName && owners[vf] == nil {
            releaseDriver(vf)
        }
        if state.numVFs > 0 {
            if bindings[address] != "pci-pf-stub", assignedVirtualFunctions(of: address) == 0 {
                disableSRIOV(address)
            } else {
                log.device(address, "driver left SR-IOV enabled after remove", driver: "pci")
            }
        }
        state = sriov[address] ?? state
        state.driverMaxVFs = state.totalVFs
        sriov[address] = state
    }

    // MARK: - sriov_drivers_autoprobe, sriov_vf_msix_count

    public mutating func storeDriversAutoprobe(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        guard sriov[address] != nil else { throw .noSuchFileOrDirectory }
        sriov[address]!.driversAutoprobe = try Dom0.kernelBool(input)
    }

    /// `kstrtobool`: decided by the first one or two characters.
    static func kernelBool(_ input: [UInt8]) throws(Errno) -> Bool {
        guard let first = input.first else { throw .invalidArgument }
        switch first {
        case UInt8(ascii: "1"), UInt8(ascii: "y"), UInt8(ascii: "Y"), UInt8(ascii: "t"), UInt8(ascii: "T"): return true
        case UInt8(ascii: "0"), UInt8(ascii: "n"), UInt8(ascii: "N"), UInt8(ascii: "f"), UInt8(ascii: "F"): return false
        case UInt8(ascii: "o"), UInt8(ascii: "O"):
            guard input.count > 1 else { throw .invalidArgument }
            switch input[1] {
            case UInt8(ascii: "n"), UInt8(ascii: "N"): return true
            case UInt8(ascii: "f"), UInt8(ascii: "F"): return false
            default: throw .invalidArgument
            }
        default: throw .invalidArgument
        }
    }

    public mutating func storeVFMSIXCount(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        guard machine[address]?.physicalFunction != nil else { throw .noSuchFileOrDirectory }
        let value = try? KernelNumbers.signedInt(input)
        guard let value, value >= 0 else { throw .invalidArgument }
        // Whether or not the PF has a driver: no modelled PF driver has sriov_set_msix_vec_count.
        throw .notSupported
    }

    /// Whether the driver core may probe `address` now: a VF only while its PF's
    /// drivers_autoprobe is set or it has a driver_override.
    func mayProbe(_ address: PCIAddress) -> Bool {
        guard let pf = machine[address]?.physicalFunction, let state = sriov[pf] else { return true }
        return state.driversAutoprobe || driverOverrides[address] != nil
    }
}

/// Memory ranges in use, kept merged and sorted so that finding a clash is a binary search
/// (machines with hundreds of PFs would otherwise make window assignment cubic).
struct AddressMap {
    private var ranges: [ClosedRange<UInt64>] = []

    /// Index of the first range that ends at or after `address`.
    private func firstEnding(atOrAfter address: UInt64) -> Int {
        var low = 0
        var high = ranges.count
        while low < high {
            let middle = (low + high) / 2
            if ranges[middle].upperBound < address { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The merged range that overlaps `candidate`, if any.
    func firstOverlap(with candidate: ClosedRange<UInt64>) -> ClosedRange<UInt64>? {
        let index = firstEnding(atOrAfter: candidate.lowerBound)
        guard index < ranges.count, ranges[index].lowerBound <= candidate.upperBound else { return nil }
        return ranges[index]
    }

    mutating func insert(_ range: ClosedRange<UInt64>) {
        // Merge with every range it overlaps or touches.
        var lower = range.lowerBound
        var upper = range.upperBound
        let first = firstEnding(atOrAfter: lower == 0 ? 0 : lower - 1)
        var last = first
        while last < ranges.count, upper == .max || ranges[last].lowerBound <= upper + 1 {
            lower = min(lower, ranges[last].lowerBound)
            upper = max(upper, ranges[last].upperBound)
            last += 1
        }
        ranges.replaceSubrange(first..<last, with: [lower...upper])
    }
}
