// The journal's records: the tree's changes (`TreeChange`, Sysfs/ChangeRecorder.swift) as
// bytes, and the attribute paths a store record names its attribute by.

/// In the journal, a change the tree reported is a record (the name Persistence/ and its tests use).
public typealias JournalRecord = TreeChange

extension JournalRecord {
    static let storeKind: UInt8 = 0x53        // 'S'
    static let configWriteKind: UInt8 = 0x57  // 'W'
    static let configReadKind: UInt8 = 0x52   // 'R'
    static let headerKind: UInt8 = 0x48       // 'H'

    var payload: [UInt8] {
        var encoder = JournalEncoder()
        switch self {
        case .store(let path, let input, let uid, let gid, let result):
            encoder.u8(JournalRecord.storeKind)
            encoder.u32(uid)
            encoder.u32(gid)
            encoder.u32(UInt32(bitPattern: result))
            let pathBytes = Array(path.utf8)
            encoder.u16(UInt16(pathBytes.count))
            encoder.bytes += pathBytes
            encoder.bytes += input
        case .configWrite(let address, let frontend, let offset, let bytes):
            encoder.u8(JournalRecord.configWriteKind)
            encoder.address(address)
            encoder.frontend(frontend)
            encoder.u32(UInt32(truncatingIfNeeded: offset))
            encoder.bytes += bytes
        case .configRead(let address, let frontend, let offset, let size, let uid, let gid):
            encoder.u8(JournalRecord.configReadKind)
            encoder.address(address)
            encoder.frontend(frontend)
            encoder.u32(UInt32(truncatingIfNeeded: offset))
            encoder.u32(UInt32(truncatingIfNeeded: size))
            encoder.u32(uid)
            encoder.u32(gid)
        }
        return encoder.bytes
    }

    init(payload decoder: inout JournalDecoder) throws(JournalFormatError) {
        let kind = try decoder.u8()
        switch kind {
        case JournalRecord.storeKind:
            let uid = try decoder.u32()
            let gid = try decoder.u32()
            let result = Int32(bitPattern: try decoder.u32())
            let length = Int(try decoder.u16())
            guard let path = String(validating: try decoder.raw(length), as: UTF8.self) else { throw .badText }
            self = .store(path: path, input: decoder.rest(), uid: uid, gid: gid, result: result)
        case JournalRecord.configWriteKind:
            let address = try decoder.address()
            let frontend = try decoder.frontend()
            let offset = Int(try decoder.u32())
            self = .configWrite(address: address, frontend: frontend, offset: offset, bytes: decoder.rest())
        case JournalRecord.configReadKind:
            let address = try decoder.address()
            let frontend = try decoder.frontend()
            let offset = Int(try decoder.u32())
            let size = Int(try decoder.u32())
            let uid = try decoder.u32()
            let gid = try decoder.u32()
            guard decoder.position == decoder.end else { throw .badText }
            self = .configRead(address: address, frontend: frontend, offset: offset, size: size, uid: uid, gid: gid)
        default:
            throw .badKind(kind)
        }
    }
}

// MARK: - Attribute paths

extension AttributeKind {
    /// Where the attribute is in the tree, as a client would name it (device attributes through
    /// the `bus/pci/devices/<BDF>` links). nil for attributes whose stores never change anything.
    var journalPath: String? {
        switch self {
        case .device(let address, let attribute): return "bus/pci/devices/\(address)/\(attribute.rawValue)"
        case .frontendDevice, .netInterface, .nvmeController, .nvmeNamespace, .module, .moduleSection: return nil
        case .driver(let driver, let attribute): return "bus/pci/drivers/\(driver)/\(attribute.rawValue)"
        case .bus(let attribute): return "bus/pci/\(attribute.rawValue)"
        case .moduleParameter(let parameter): return "module/xen_pciback/parameters/\(parameter.rawValue)"
        case .control(let control): return "fs/pcibackfs/\(control.rawValue)"
        case .pciOperation(let domain): return "fs/pcibackfs/frontends/\(domain)/pci_op"
        // Through the class link, as a client names it: `class/pci_bus/0000:03/rescan`.
        case .pciBus(let name, let attribute): return "class/pci_bus/\(name)/\(attribute.rawValue)"
        }
    }

    /// The attribute a journal path names. Resolved by its words alone, not through the current
    /// layout, so a replayed store reaches what the original one reached even where the tree
    /// would no longer list the file (a store through a handle opened before a change).
    init?(journalPath path: String) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        switch parts.count {
        case 3 where parts[0] == "bus" && parts[1] == "pci":
            guard let attribute = BusAttribute(rawValue: parts[2]) else { return nil }
            self = .bus(attribute)
        case 3 where parts[0] == "fs" && parts[1] == "pcibackfs":
            guard let control = ControlFile(rawValue: parts[2]) else { return nil }
            self = .control(control)
        case 4 where parts[0] == "class" && parts[1] == "pci_bus":
            guard PCIAddress.isBusName(parts[2]), let attribute = PCIBusAttribute(rawValue: parts[3]) else { return nil }
            self = .pciBus(parts[2], attribute)
        case 4 where parts[0] == "module" && parts[1] == "xen_pciback" && parts[2] == "parameters":
            guard let parameter = ModuleParameter(rawValue: parts[3]) else { return nil }
            self = .moduleParameter(parameter)
        case 5 where parts[0] == "bus" && parts[1] == "pci" && parts[2] == "devices":
            guard let address = PCIAddress(kernelName: parts[3]), let attribute = DeviceAttribute(rawValue: parts[4]) else {
                return nil
            }
            self = .device(address, attribute)
        case 5 where parts[0] == "bus" && parts[1] == "pci" && parts[2] == "drivers":
            guard !parts[3].isEmpty, let attribute = DriverAttribute(rawValue: parts[4]) else { return nil }
            self = .driver(parts[3], attribute)
        case 5 where parts[0] == "fs" && parts[1] == "pcibackfs" && parts[2] == "frontends" && parts[4] == "pci_op":
            guard let domain = UInt32(parts[3]) else { return nil }
            self = .pciOperation(domain: domain)
        default:
            return nil
        }
    }
}
