/// Rendering and storing the per-device files (`drivers/pci/pci-sysfs.c` formats).
extension Dom0 {
    func show(_ attribute: DeviceAttribute, of address: PCIAddress) -> [UInt8]? {
        guard let device = machine[address] else { return nil }
        let identity = device.identity
        let text: String
        switch attribute {
        // The ID files are what every lspci and toolstack run reads: formatted byte-wise.
        case .vendor: return hexLine(UInt32(identity.vendor), digits: 4)
        case .device: return hexLine(UInt32(identity.device), digits: 4)
        case .subsystemVendor: return hexLine(UInt32(identity.subsystemVendor), digits: 4)
        case .subsystemDevice: return hexLine(UInt32(identity.subsystemDevice), digits: 4)
        case .class: return hexLine(UInt32(identity.classCode), digits: 6)
        case .revision: return hexLine(UInt32(identity.revision), digits: 2)
        case .irq: text = String(device.kernelMSIEnabled && device.msiIRQ != 0 ? device.msiIRQ : device.irq)
        case .resource: return Array(resourceText(device).utf8)
        case .enable: text = String(device.enableCount)
        case .driverOverride: return (driverOverride(address) ?? Array("(null)".utf8)) + [0x0a]
        case .modalias: text = modalias(identity)
        case .numaNode: text = String(tunables[device: address].numaNode)
        case .localCPUs: text = localCPUsText
        case .localCPUList: text = localCPUListText
        case .msiBus: text = tunables[device: address].msiBus ? "1" : "0"
        case .powerState: text = ["D0", "D1", "D2", "D3hot"][Int(device.powerState)]
        case .dmaMaskBits, .consistentDMAMaskBits: text = device.isBridge ? "32" : "64"
        case .brokenParityStatus: text = tunables[device: address].brokenParityStatus ? "1" : "0"
        case .d3coldAllowed: text = tunables[device: address].d3coldAllowed ? "1" : "0"
        case .ariEnabled: text = "0"
        case .uevent: text = uevent(device)
        case .remove, .rescan, .reset: return nil
        case .resetMethod: return resetMethodText(address)
        case .currentLinkSpeed, .maxLinkSpeed:
            let pcie = device.capabilities.pciExpress
            let register = attribute == .currentLinkSpeed ? PCIeRegister.linkStatus : PCIeRegister.linkCapabilities
            text = linkSpeedName(Int(device.config.read(pcie + register, width: 2) & 0xf))
        case .currentLinkWidth, .maxLinkWidth:
            let pcie = device.capabilities.pciExpress
            let register = attribute == .currentLinkWidth ? PCIeRegister.linkStatus : PCIeRegister.linkCapabilities
            text = String((device.config.read(pcie + register, width: 2) >> 4) & 0x3f)
        case .sriovTotalVFs: text = String(sriov[address]?.driverMaxVFs ?? 0)
        case .sriovNumVFs: text = String(sriov[address]?.numVFs ?? 0)
        case .sriovOffset: text = String(sriov[address]?.offset ?? 0)
        case .sriovStride: text = String(sriov[address]?.stride ?? 0)
        case .sriovVFDevice: text = String(sriov[address]?.vfDeviceID ?? 0, radix: 16)
        case .sriovDriversAutoprobe: text = (sriov[address]?.driversAutoprobe ?? true) ? "1" : "0"
        case .sriovVFTotalMSIX: text = "0"
        case .sriovVFMSIXCount: return nil
        case .secondaryBusNumber: text = String(device.config.read(PCIRegister.secondaryBus, width: 1))
        case .subordinateBusNumber: text = String(device.config.read(PCIRegister.subordinateBus, width: 1))
        }
        return Array((text + "\n").utf8)
    }

    /// `"0x%0Nx\n"` of `value` (N = `digits`, at least; more digits if the value needs them).
    private func hexLine(_ value: UInt32, digits: Int) -> [UInt8] {
        let needed = max(digits, (32 - value.leadingZeroBitCount + 3) / 4)
        return [UInt8](unsafeUninitializedCapacity: needed + 3) { buffer, count in
            buffer[0] = UInt8(ascii: "0")
            buffer[1] = UInt8(ascii: "x")
            for index in 0..<needed {
                let nibble = UInt8(truncatingIfNeeded: value >> (4 * UInt32(needed - 1 - index))) & 0xf
                buffer[2 + index] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
            }
            buffer[needed + 2] = UInt8(ascii: "\n")
            count = needed + 3
        }
    }

    private var cpuCount: Int { max(1, SystemFacts.processorCount) }
    private var cpuMask: UInt64 { cpuCount >= 64 ? UInt64.max : (UInt64(1) << UInt64(cpuCount)) - 1 }
    /// `local_cpus` (and a bus's `cpuaffinity`) without the newline.
    var localCPUsText: String { String(cpuMask, radix: 16) }
    /// `local_cpulist` (and a bus's `cpulistaffinity`) without the newline.
    var localCPUListText: String { cpuCount > 1 ? "0-\(cpuCount - 1)" : "0" }

    private func linkSpeedName(_ code: Int) -> String {
        switch code {
        case 1: return "2.5 GT/s PCIe"
        case 2: return "5.0 GT/s PCIe"
        case 3: return "8.0 GT/s PCIe"
        case 4: return "16.0 GT/s PCIe"
        case 5: return "32.0 GT/s PCIe"
        case 6: return "64.0 GT/s PCIe"
        default: return "Unknown"
        }
    }

    func modalias(_ identity: DeviceIdentity) -> String {
        func upper(_ value: UInt32, _ width: Int) -> String { hex(value, width: width).uppercased() }
        return "pci:v" + upper(UInt32(identity.vendor), 8) + "d" + upper(UInt32(identity.device), 8)
            + "sv" + upper(UInt32(identity.subsystemVendor), 8) + "sd" + upper(UInt32(identity.subsystemDevice), 8)
            + "bc" + upper(identity.classCode >> 16, 2) + "sc" + upper((identity.classCode >> 8) & 0xff, 2)
            + "i" + upper(identity.classCode & 0xff, 2)
    }

    private func uevent(_ device: EmulatedDevice) -> String {
        let identity = device.identity
        var lines: [String] = []
        if let driver = driverName(of: device.address) { lines.append("DRIVER=\(driver)") }
        lines.append("PCI_CLASS=" + String(identity.classCode, radix: 16).uppercased())
        lines.append("PCI_ID=" + hex(identity.vendor, width: 4).uppercased() + ":" + hex(identity.device, width: 4).uppercased())
        lines.append("PCI_SUBSYS_ID=" + hex(identity.subsystemVendor, width: 4).uppercased() + ":"
                     + hex(identity.subsystemDevice, width: 4).uppercased())
        lines.append("PCI_SLOT_NAME=\(device.address)")
        lines.append("MODALIAS=" + modalias(identity))
        return lines.joined(separator: "\n")
    }

    /// `resource`: 13 lines (6 BARs, ROM, 6 IOV) for a function, 17 for a bridge (plus its
    /// four windows), each `0x%016llx 0x%016llx 0x%016llx`.
    func resourceText(_ device: EmulatedDevice) -> String {
        func line(_ start: UInt64, _ end: UInt64, _ flags: UInt64) -> String {
            "0x" + hex(start, width: 16) + " 0x" + hex(end, width: 16) + " 0x" + hex(flags, width: 16) + "\n"
        }
        var text = ""
        for index in 0..<7 {
            if let bar = device.bars[index], bar.address != 0 {
                var flags = bar.kernelFlags
                if index == 6, device.config.read(device.isBridge ? PCIRegister.romAddressBridge : PCIRegister.romAddress, width: 4) & 1 != 0 {
                    flags |= 0x1
                }
                text += line(bar.address, bar.address + bar.size - 1, flags)
            } else {
                text += line(0, 0, 0)
            }
        }
        // IOV resources: VF BAR i's window covers TotalVFs VFs.
        let state = sriov[device.address]
        for index in 0..<6 {
            if let window = state?.windows[index] {
                let span = window.size * UInt64(state!.totalVFs)
                text += line(window.address, window.address + span - 1, window.kernelFlags)
            } else {
                text += line(0, 0, 0)
            }
        }
        if device.isBridge {
            let config = device.config
            let ioBase = config.read(PCIRegister.ioBase, width: 1)
            let ioLimit = config.read(PCIRegister.ioLimit, width: 1)
            if ioBase & 0xf0 <= ioLimit & 0xf0 {
                let start = UInt64(ioBase & 0xf0) << 8 | UInt64(config.read(PCIRegister.ioBaseUpper, width: 2)) << 16
                let end = UInt64(ioLimit & 0xf0) << 8 | 0xfff | UInt64(config.read(PCIRegister.ioLimitUpper, width: 2)) << 16
                text += line(start, end, 0x101)
            } else {
                text += line(0, 0, 0)
            }
            let memBase = UInt64(config.read(PCIRegister.memoryBase, width: 2) & 0xfff0) << 16
            let memLimit = UInt64(config.read(PCIRegister.memoryLimit, width: 2) & 0xfff0) << 16 | 0xfffff
            text += memBase <= memLimit ? line(memBase, memLimit, 0x200) : line(0, 0, 0)
            let prefBase = UInt64(config.read(PCIRegister.prefetchBase, width: 2) & 0xfff0) << 16
                | UInt64(config.read(PCIRegister.prefetchBaseUpper, width: 4)) << 32
            let prefLimit = (UInt64(config.read(PCIRegister.prefetchLimit, width: 2) & 0xfff0) << 16 | 0xfffff)
                | UInt64(config.read(PCIRegister.prefetchLimitUpper, width: 4)) << 32
            text += prefBase <= prefLimit ? line(prefBase, prefLimit, 0x102201) : line(0, 0, 0)
            text += line(0, 0, 0)
        }
        return text
    }

    // MARK: - Stores

    mutating func store(_ attribute: DeviceAttribute, of address: PCIAddress, input: [UInt8], caller: Caller) throws(Errno) {
        guard let device = machine[address] else { throw .noSuchDevice }
        switch attribute {
        case .enable:
            guard caller.isPrivileged else { throw .operationNotPermitted }
            let value = try KernelNumbers.unsignedLong(input)
            if driverName(of: address) != nil { throw .resourceBusy }
            if value != 0 {
                try device.enableDevice()
            } else if device.isEnabled {
                device.disableDevice()
            } else {
                throw .ioError
            }
        case .driverOverride:
            try setDriverOverride(address, input: input)
        case .msiBus, .brokenParityStatus, .d3coldAllowed:
            if attribute == .msiBus, !caller.isPrivileged { throw .operationNotPermitted }
            let on = try KernelNumbers.unsignedLongOrInvalid(input) != 0
            switch attribute {
            case .msiBus: tunables[device: address].msiBus = on
            case .brokenParityStatus: tunables[device: address].brokenParityStatus = on
            default: tunables[device: address].d3coldAllowed = on
            }
        case .numaNode:
            guard caller.isPrivileged else { throw .operationNotPermitted }
            let node = try KernelNumbers.signedInt(input)
            // One online node (0) on this dom0; -1 means none.
            guard node == -1 || node == 0 else { throw .invalidArgument }
            tunables[device: address].numaNode = node
        case .uevent:
            try Dom0.checkUeventAction(input)
        case .reset:
            guard try KernelNumbers.unsignedLongOrInvalid(input) == 1 else { throw .invalidArgument }
            try pciResetFunction(address)
        case .resetMethod:
            try storeResetMethod(address, input: input)
        case .remove:
            if try KernelNumbers.unsignedLongOrInvalid(input) != 0 { removeDevice(address) }
        case .rescan:
            if try KernelNumbers.unsignedLongOrInvalid(input) != 0 { rescan() }
        case .sriovNumVFs:
            try storeNumVFs(address, input: input)
        case .sriovDriversAutoprobe:
            try storeDriversAutoprobe(address, input: input)
        case .sriovVFMSIXCount:
            try storeVFMSIXCount(address, input: input)
        default:
            throw .ioError
        }
    }

    /// The uevent stores (device, driver, bus) run `kobject_synth_uevent` on the written bytes
    /// (a count, not a C string): one trailing newline or NUL is dropped, the first word must be
    /// an action name exactly, and anything after its space must be a UUID optionally followed by
    /// ` KEY=VALUE` pairs of alphanumerics (`kobject_action_args`). Else EINVAL. The synthetic
    /// event itself has no effect on the tree.
    static func checkUeventAction(_ input: [UInt8]) throws(Errno) {
        let actions = ["add", "remove", "change", "move", "online", "offline", "bind", "unbind"]
        let bytes = dropTerminator(input[...])
        guard !bytes.isEmpty else { throw .invalidArgument }
        let space = bytes.firstIndex(of: UInt8(ascii: " "))
        let action = bytes[..<(space ?? bytes.endIndex)]
        guard actions.contains(where: { $0.utf8.elementsEqual(action) }) else { throw .invalidArgument }
        // The arguments run to the end of the original count, and lose their own terminator.
        if let space { try checkUeventArguments(dropTerminator(input[(space + 1)...])) }
    }

    private static func dropTerminator(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        guard let last = bytes.last, last == UInt8(ascii: "\n") || last == 0 else { return bytes }
        return bytes.dropLast()
    }

    /// `kobject_action_args`: "UUID[ KEY=VALUE]...", each variable added to a 2048-byte uevent
    /// environment of at most 64 entries (`add_uevent_var`; overflowing it is EINVAL here too).
    private static func checkUeventArguments(_ bytes: ArraySlice<UInt8>) throws(Errno) {
        let uuidLength = 36
        guard bytes.count >= uuidLength else { throw .invalidArgument }
        for (index, byte) in bytes.prefix(uuidLength).enumerated() {
            let valid = [8, 13, 18, 23].contains(index) ? byte == UInt8(ascii: "-") : hexDigitValue(byte) != nil
            guard valid else { throw .invalidArgument }
        }
        // The kernel's ctype: ASCII letters and digits, and the Latin-1 letters 0xc0...0xff.
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7a)
                || (byte >= 0xc0 && byte != 0xd7 && byte != 0xf7)
        }
        var environmentBytes = "SYNTH_UUID=".utf8.count + uuidLength + 1
        var variables = 1
        var rest = bytes.dropFirst(uuidLength)
        while let separator = rest.first {
            guard separator == UInt8(ascii: " ") else { throw .invalidArgument }
            rest = rest.dropFirst()
            let key = rest.prefix { $0 != UInt8(ascii: "=") }
            guard !key.isEmpty, key.allSatisfy(isAlphanumeric), key.count < rest.count else { throw .invalidArgument }
            rest = rest.dropFirst(key.count + 1)
            let value = rest.prefix { $0 != UInt8(ascii: " ") }
            guard !value.isEmpty, value.allSatisfy(isAlphanumeric) else { throw .invalidArgument }
            rest = rest.dropFirst(value.count)
            environmentBytes += "SYNTH_ARG_=".utf8.count + key.count + value.count + 1
            variables += 1
            guard environmentBytes <= 2048, variables <= 64 else { throw .invalidArgument }
        }
    }
}

import Foundation

enum SystemFacts {
    static let processorCount = ProcessInfo.processInfo.activeProcessorCount
}
