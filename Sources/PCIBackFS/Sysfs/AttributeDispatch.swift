/// Which show() and store() each text attribute has.
extension Dom0 {
    func show(_ kind: AttributeKind, legacy: Bool) -> [UInt8]? {
        switch kind {
        case .device(let address, let attribute):
            return show(attribute, of: address)
        case .frontendDevice(_, let host, let attribute):
            return show(attribute, of: host)
        case .driver(_, let attribute):
            switch attribute {
            case .slots: return slotsText()
            case .quirks: return quirksText()
            case .permissive: return permissiveText()
            case .allowInterruptControl: return allowInterruptControlText()
            case .irqHandlers: return irqHandlersText()
            default: return nil
            }
        case .bus(let attribute):
            return attribute == .driversAutoprobe ? Array((tunables.driversAutoprobe ? "1\n" : "0\n").utf8) : nil
        case .moduleParameter(let parameter):
            switch parameter {
            case .hide: return Array((hideParameter + "\n").utf8)
            case .permissive: return Array((policy.globalPermissive ? "Y\n" : "N\n").utf8)
            case .passthrough: return Array((passthroughBackend ? "1\n" : "0\n").utf8)
            case .verboseRequest: return Array("\(tunables.verboseRequest)\n".utf8)
            }
        case .control(let control):
            switch control {
            case .profile: return Array((policy.profile.rawValue + "\n").utf8)
            case .log:
                var text = log.lines.joined(separator: "\n")
                if !text.isEmpty { text += "\n" }
                return Array(text.utf8)
            case .trace: return traceText()
            case .faults: return faultsText()
            case .attach, .detach, .reset: return nil
            }
        case .pciBus(let name, let attribute):
            return show(attribute, ofBus: name)
        case .pciOperation, .netInterface, .nvmeController, .nvmeNamespace, .module, .moduleSection:
            // Class devices and modules render in the layout (ClassDeviceLayout.swift), which
            // knows the tree's options (device numbers, xen-pciback's build).
            return nil
        }
    }

    mutating func store(_ kind: AttributeKind, input: [UInt8], caller: Caller) throws(Errno) {
        switch kind {
        case .device(let address, let attribute):
            try store(attribute, of: address, input: input, caller: caller)
        case .frontendDevice:
            throw .ioError
        case .driver(let driver, let attribute):
            switch attribute {
            case .bind: try bind(driver: driver, input: input)
            case .unbind: try unbind(driver: driver, input: input)
            case .newID: try newID(driver: driver, input: input)
            case .removeID: try removeID(driver: driver, input: input)
            case .uevent: try Dom0.checkUeventAction(input)
            case .newSlot: try newSlot(input: input)
            case .removeSlot: try removeSlot(input: input)
            case .quirks: try addQuirk(input: input)
            case .permissive: try setPermissive(input: input)
            case .allowInterruptControl: try setAllowInterruptControl(input: input)
            case .irqHandlerState: try toggleIRQHandlerState(input: input)
            case .slots, .irqHandlers: throw .ioError
            }
        case .bus(let attribute):
            switch attribute {
            case .driversProbe: try driversProbe(input: input)
            // `drivers_autoprobe_store` parses nothing: buf[0] == '0' turns autoprobe off, any other
            // input on, and the count is returned.
            case .driversAutoprobe: tunables.driversAutoprobe = input.first != UInt8(ascii: "0")
            case .rescan: if try KernelNumbers.unsignedLongOrInvalid(input) != 0 { rescan() }
            case .uevent: try Dom0.checkUeventAction(input)
            }
        case .moduleParameter(let parameter):
            switch parameter {
            case .permissive: policy.globalPermissive = try Dom0.parseBool(input)
            case .verboseRequest: tunables.verboseRequest = try KernelNumbers.signedInt(input)
            case .hide, .passthrough: throw .permissionDenied
            }
        case .control(let control):
            switch control {
            case .attach:
                try requireBackend()
                let (domain, address) = try Dom0.parseControl(input)
                _ = try attach(domain: domain, address: address)
            case .detach:
                try requireBackend()
                let (domain, address) = try Dom0.parseControl(input)
                try detach(domain: domain, address: address)
            case .faults:
                try storeFault(input: input)
            // The reset replaces the whole dom0: the tree does it (SysfsTree.State.reset).
            case .profile, .log, .trace, .reset: throw .ioError
            }
        case .pciOperation:
            throw .ioError
        case .pciBus(let name, let attribute):
            try store(attribute, ofBus: name, input: input)
        case .netInterface(let address, let attribute):
            guard networkInterface(of: address) != nil else { throw .noSuchDevice }
            switch attribute {
            case .uevent: try Dom0.checkUeventAction(input)
            // change_carrier: -EINVAL unless the interface is up (netif_running); it never is.
            case .carrier: throw .invalidArgument
            // Interface settings are not modelled (the interface stays down, 1500, 0x1002, 1000).
            case .mtu, .flags, .txQueueLen: throw .notSupported
            default: throw .ioError
            }
        case .nvmeController(_, .uevent), .nvmeNamespace(_, .uevent), .module(_, .uevent):
            try Dom0.checkUeventAction(input)
        case .nvmeController, .nvmeNamespace, .module, .moduleSection:
            throw .ioError
        }
    }

    /// `param_set_bool` is `kstrtobool` on the C string: decided by its first one or two
    /// characters (1/y/Y/t/T, 0/n/N/f/F, on/off in any case), trailing text ignored.
    static func parseBool(_ input: [UInt8]) throws(Errno) -> Bool {
        try kernelBool(PcibackGrammar.cString(input))
    }

    /// The frontend files need xen-pciback's backend: when its init failed (`hide`), ENODEV.
    func requireBackend() throws(Errno) {
        if pcibackLoadFailure != nil { throw .noSuchDevice }
    }

    /// `attach` / `detach` input: "DOMID DDDD:BB:SS.F" (decimal domain id, kernel device name).
    static func parseControl(_ input: [UInt8]) throws(Errno) -> (UInt32, PCIAddress) {
        let text = String(decoding: PcibackGrammar.cString(input), as: UTF8.self)
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
        guard words.count == 2, let domain = UInt32(words[0]), domain > 0, domain < 0x7ff0,
              let address = PCIAddress(kernelName: words[1])
        else { throw .invalidArgument }
        return (domain, address)
    }

    // MARK: - pci_op

    /// One op per line: `conf_read BDF OFFSET SIZE`, `conf_write BDF OFFSET SIZE VALUE`,
    /// `enable_msi BDF`, `disable_msi BDF`, `enable_msix BDF ENTRY[,ENTRY...]`, `disable_msix BDF`,
    /// or `op NUMBER BDF` for any raw command. BDF is the frontend's (`[DDDD:]BB:SS.F`); numbers
    /// are C-style (0x for hex). The result line: `err E value 0xVVVVVVVV[ vectors E:P,...]`.
    mutating func performOperationLine(_ input: [UInt8], frontend domain: UInt32) throws(Errno) -> String {
        try requireBackend()
        guard frontends[domain] != nil else { throw .noSuchDevice }
        let text = String(decoding: PcibackGrammar.cString(input), as: UTF8.self)
        var words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        guard !words.isEmpty else { throw .invalidArgument }
        var command: Int32
        let name = words.removeFirst()
        switch name {
        case "conf_read": command = 0
        case "conf_write": command = 1
        case "enable_msi": command = 2
        case "disable_msi": command = 3
        case "enable_msix": command = 4
        case "disable_msix": command = 5
        case "op":
            guard !words.isEmpty, let number = Int32(words.removeFirst()) else { throw .invalidArgument }
            command = number
        default: throw .invalidArgument
        }
        guard !words.isEmpty, let location = Dom0.parseFrontendAddress(words.removeFirst()) else { throw .invalidArgument }
        var op = PCIOperation(command: command, domain: location.domain, bus: location.bus, devfn: location.devfn)
        func number(_ word: String) throws(Errno) -> UInt64 {
            try KernelNumbers.unsignedLong(Array(word.utf8))
        }
        switch name {
        case "conf_read":
            guard words.count == 2 else { throw .invalidArgument }
            op.offset = Int32(truncatingIfNeeded: try number(words[0]))
            op.size = Int32(truncatingIfNeeded: try number(words[1]))
        case "conf_write":
            guard words.count == 3 else { throw .invalidArgument }
            op.offset = Int32(truncatingIfNeeded: try number(words[0]))
            op.size = Int32(truncatingIfNeeded: try number(words[1]))
            op.value = UInt32(truncatingIfNeeded: try number(words[2]))
        case "enable_msix":
            guard words.count == 1 else { throw .invalidArgument }
            var entries: [PCIOperation.MSIXEntry] = []
            for word in words[0].split(separator: ",") {
                entries.append(PCIOperation.MSIXEntry(entry: UInt16(truncatingIfNeeded: try number(String(word))), vector: 0))
            }
            op.value = UInt32(entries.count)
            op.entries = entries
        default:
            guard words.isEmpty else { throw .invalidArgument }
        }
        let result = perform(op, frontend: domain)
        var line = "err \(result.error) value 0x" + hex(result.value, width: 8)
        if command == 4, result.error == 0 {
            line += " vectors " + result.entries.prefix(Int(op.value)).map { "\($0.entry):\($0.vector)" }.joined(separator: ",")
        }
        return line + "\n"
    }

    /// A frontend's device address: `BB:SS.F` or `DDDD:BB:SS.F` (hex) -> domain, bus, devfn.
    static func parseFrontendAddress(_ word: String) -> (domain: UInt32, bus: UInt32, devfn: UInt32)? {
        let parts = word.split(separator: ":")
        guard parts.count == 2 || parts.count == 3 else { return nil }
        let domain = parts.count == 3 ? UInt32(parts[0], radix: 16) : 0
        let busText = parts[parts.count - 2]
        let slotFunction = parts[parts.count - 1].split(separator: ".")
        guard let domain, let bus = UInt32(busText, radix: 16), bus <= 0xff, slotFunction.count == 2,
              let slot = UInt32(slotFunction[0], radix: 16), slot < 32, let function = UInt32(slotFunction[1], radix: 16),
              function < 8
        else { return nil }
        return (domain, bus, slot << 3 | function)
    }
}
