/// One `struct xen_pci_op` as pcifront sends it (spec §8).
public struct PCIOperation: Sendable, Equatable {
    public enum Command: Int32, Sendable {
        case configRead = 0
        case configWrite = 1
        case enableMSI = 2
        case disableMSI = 3
        case enableMSIX = 4
        case disableMSIX = 5
    }

    public struct MSIXEntry: Sendable, Equatable {
        public var entry: UInt16
        public var vector: UInt32
        public init(entry: UInt16, vector: UInt32) {
            self.entry = entry
            self.vector = vector
        }
    }

    /// The raw command number (AER ops and unknown numbers are kept, to answer -4).
    public var command: Int32
    public var domain: UInt32
    public var bus: UInt32
    public var devfn: UInt32
    public var offset: Int32
    public var size: Int32
    public var value: UInt32
    public var entries: [MSIXEntry]

    public init(command: Int32, domain: UInt32 = 0, bus: UInt32 = 0, devfn: UInt32, offset: Int32 = 0, size: Int32 = 0,
                value: UInt32 = 0, entries: [MSIXEntry] = []) {
        self.command = command
        self.domain = domain
        self.bus = bus
        self.devfn = devfn
        self.offset = offset
        self.size = size
        self.value = value
        self.entries = entries
    }
}

/// What the backend writes back: `err`, `value` and, after a successful enable_msix, the vectors.
public struct PCIOperationResult: Sendable, Equatable {
    public var error: Int32
    public var value: UInt32
    public var entries: [PCIOperation.MSIXEntry]
    /// The host function the op reached (nil when the lookup failed).
    public var host: PCIAddress?
    /// For a refused or dropped write: the rule that decided it.
    public var rule: String?
}

extension Dom0 {
    /// The largest MSI-X vector count a frontend may ask for (SH_INFO_MAX_VEC).
    public static let maximumMSIXVectors = 128

    /// `xen_pcibk_do_one_op`.
    public mutating func perform(_ op: PCIOperation, frontend domain: UInt32) -> PCIOperationResult {
        var result = PCIOperationResult(error: 0, value: op.value, entries: op.entries, host: nil, rule: nil)
        guard let address = frontendDevice(domain: domain, pciDomain: op.domain, bus: op.bus, devfn: op.devfn),
              let device = machine[address]
        else {
            result.error = XenPCIError.deviceNotFound
            return result
        }
        result.host = address
        let intxBefore = deviceData[address]?.enableINTx
        switch PCIOperation.Command(rawValue: op.command) {
        case .configRead:
            let verdict = guestRead(address, offset: Int(op.offset), size: Int(op.size))
            result.error = verdict.error
            result.value = verdict.value
        case .configWrite:
            // The ISR transition is handled below, once per op.
            let verdict = guestWriteWithoutISR(address, offset: Int(op.offset), size: Int(op.size), value: op.value)
            result.error = verdict.error
            result.rule = verdict.rule
        case .enableMSI:
            var status: Errno?
            if device.kernelMSIEnabled {
                status = .alreadyInProgress
            } else if device.kernelMSIXEnabled {
                status = .noSuchDeviceOrAddress
            } else {
                do {
                    try device.enableMSI()
                    device.msiIRQ = allocateIRQ()
                } catch { status = error }
            }
            if let status {
                log.device(address, "error enabling MSI for guest \(domain): err \(-status.rawValue)", driver: "pciback")
                result.value = 0
                result.error = XenPCIError.operationFailed
                result.rule = "enable_msi: " + (status == .alreadyInProgress ? "MSI already enabled by the kernel"
                    : status == .noSuchDeviceOrAddress ? "MSI-X enabled by the kernel" : "the PCI core failed (\(-status.rawValue))")
            } else {
                result.value = device.msiIRQ
                deviceData[address]?.ackInterrupts = false
            }
        case .disableMSI:
            if device.kernelMSIEnabled {
                device.disableMSI()
                device.msiIRQ = 0
                deviceData[address]?.ackInterrupts = true
            }
            result.value = device.irq
        case .enableMSIX:
            let outcome = enableMSIX(device, op)
            result.error = outcome.error
            result.value = UInt32(bitPattern: outcome.value)
            if outcome.error == 0 { result.entries = outcome.entries } else { result.rule = outcome.rule }
            if outcome.reachedPCICore { deviceData[address]?.ackInterrupts = false }
        case .disableMSIX:
            if device.kernelMSIXEnabled {
                device.disableMSIX()
                deviceData[address]?.ackInterrupts = true
            }
            result.value = device.irq
        case nil:
            result.error = XenPCIError.notImplemented
        }
        if op.command >= 2 {
            record(.pciOp(op.command), device: address, offset: 0, size: 0, value: result.value,
                   verdict: FilterVerdict(value: result.value, error: result.error, rule: result.rule))
        }
        if result.error == 0, let before = intxBefore, var data = deviceData[address], data.enableINTx != before {
            controlISR(device, &data, reset: false)
            deviceData[address] = data
        }
        return result
    }

    private mutating func guestWriteWithoutISR(_ address: PCIAddress, offset: Int, size: Int, value: UInt32) -> FilterVerdict {
        guard let device = machine[address], var data = deviceData[address] else {
            return FilterVerdict(error: XenPCIError.deviceNotFound)
        }
        let verdict = ConfigFilter.write(device, &data, offset: offset, size: size, value: value, policy: policy, log: &log)
        deviceData[address] = data
        record(.configWrite, device: address, offset: offset, size: size, value: value, verdict: verdict)
        return verdict
    }

    private mutating func allocateIRQ() -> UInt32 {
        // MSI IRQs sit above the legacy range; one per enable is enough for an emulation.
        var candidate: UInt32 = 120
        let used = Set(machine.order.compactMap { machine[$0]?.msiIRQ })
        while used.contains(candidate) { candidate += 1 }
        return candidate
    }

    /// `xen_pcibk_enable_msix`: the checks in the kernel's order, then `pci_enable_msix_exact`.
    private mutating func enableMSIX(_ device: EmulatedDevice, _ op: PCIOperation)
        -> (error: Int32, value: Int32, entries: [PCIOperation.MSIXEntry], reachedPCICore: Bool, rule: String?)
    {
        let count = Int(op.value)
        let unchanged = Int32(bitPattern: op.value)
        if count > Dom0.maximumMSIXVectors {
            return (-Errno.invalidArgument.rawValue, unchanged, op.entries, false, "enable_msix: more than 128 vectors")
        }
        if device.kernelMSIXEnabled {
            return (-Errno.alreadyInProgress.rawValue, unchanged, op.entries, false, "enable_msix: MSI-X already enabled by the kernel")
        }
        let physical = device.physicalFunction.flatMap { machine[$0] } ?? device
        if device.kernelMSIEnabled || physical.command & PCICommand.memory == 0 {
            let reason = device.kernelMSIEnabled ? "MSI enabled by the kernel" : "memory decoding off in the (physical) function"
            return (-Errno.noSuchDeviceOrAddress.rawValue, unchanged, op.entries, false, "enable_msix: " + reason)
        }
        let requested = Array(op.entries.prefix(count))
        var status: Int32 = 0
        let tableSize = device.msixTableSize
        if count == 0 || requested.count < count {
            status = -Errno.invalidArgument.rawValue
        } else if Set(requested.map(\.entry)).count != requested.count || requested.contains(where: { Int($0.entry) >= tableSize }) {
            status = -Errno.invalidArgument.rawValue
        } else if count > tableSize {
            status = -Errno.noSpace.rawValue
        } else {
            do { try device.enableMSIX(vectors: count) } catch { status = -error.rawValue }
        }
        if status != 0 {
            log.device(device.address, "error enabling MSI-X for guest: err \(status)")
            return (status, status, op.entries, true, "enable_msix: the PCI core failed (\(status))")
        }
        var entries = op.entries
        for index in 0..<count {
            entries[index].vector = 200 + UInt32(device.address.devfn) * 4 + UInt32(entries[index].entry)
        }
        return (0, 0, entries, true, nil)
    }
}
