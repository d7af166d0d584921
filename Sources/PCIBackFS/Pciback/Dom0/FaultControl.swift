/// The test bench's fault injection (`fs/pcibackfs/faults`): per device, one-shot or sticky,
/// cleared with `off`.
extension Dom0 {
    /// The fault names accepted by the control file, and what each breaks.
    public static var faultNames: [(name: String, path: WritableKeyPath<DeviceFaults, DeviceFaults.Mode>)] { [
        ("reset", \.resetFails),                    // function reset fails (and, in a PVH dom0, Xen's reset: bind fails)
        ("enable", \.enableFails),                  // pci_enable_device fails: the guest's command write gets -22
        ("low-power-states", \.lowPowerStatesRefused),  // D1/D2 refused
        ("msi-enable", \.msiEnableFails),           // enable_msi: err -5
        ("msix-enable", \.msixEnableFails),         // enable_msix: the core's errno
        ("config-read", \.configReadFails),         // hardware config reads fail: all-ones
    ] }

    /// `BDF FAULT MODE` (mode once, sticky or off), or `BDF vanish` for a surprise removal.
    public mutating func storeFault(input: [UInt8]) throws(Errno) {
        let text = String(decoding: PcibackGrammar.cString(input), as: UTF8.self)
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        guard words.count >= 2, let address = PCIAddress(kernelName: words[0]) else { throw .invalidArgument }
        guard let device = machine[address] else { throw .noSuchDevice }
        if words[1] == "vanish" {
            guard words.count == 2 else { throw .invalidArgument }
            log.device(address, "surprise removal", driver: "pcieport")
            removeDevice(address)
            return
        }
        guard words.count == 3, let fault = Dom0.faultNames.first(where: { $0.name == words[1] }),
              let mode = DeviceFaults.Mode(rawValue: words[2])
        else { throw .invalidArgument }
        device.faults[keyPath: fault.path] = mode
    }

    public func faultsText() -> [UInt8] {
        var buffer = ShowBuffer()
        for address in machine.order {
            guard let device = machine[address] else { continue }
            for fault in Dom0.faultNames where device.faults[keyPath: fault.path] != .off {
                buffer.print("\(address) \(fault.name) \(device.faults[keyPath: fault.path].rawValue)\n")
            }
        }
        return buffer.bytes
    }
}
