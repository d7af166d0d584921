import Foundation

// The compacted form of a `--state` journal: every mutable field of the tree's state (Dom0, its
// machine and each emulated function, the per-frontend pci_op results) as plain values. Restore
// builds the machine from the start options as usual and then overwrites it with the snapshot;
// the functions that only exist at run time (SR-IOV VFs) are created again by the same code
// that created them, then overwritten too. Tests compare a restored state with the original by
// reflection (StateFingerprint) and list the fields of every type involved, so a field added
// to Dom0 or EmulatedDevice without being added here fails a test instead of being lost.

struct StateSnapshot: Codable, Sendable {
    var format = 1
    /// How many journal records the snapshot holds (records 1...sequence of the whole history).
    var sequence: UInt64
    var options: StateOptions
    var lastOperationResults: [String: String]
    var dom0: Dom0State

    struct Dom0State: Codable, Sendable {
        var profile: String
        var globalPermissive: Bool
        var passthroughBackend: Bool
        var drivers: [Driver]
        var bindings: [String: String]
        var driverOverrides: [String: [UInt8]]
        var logLines: [String]
        var logDropped: Int
        var seizeList: [[Int32]]
        var pcibackDevices: [String]
        var quirkRegistrations: [String]
        var deviceData: [String: DeviceData]
        var owners: [String: UInt32]
        var frontends: [Frontend]
        /// The trace ring's records, oldest slot first, packed (JSON objects for 4096 records
        /// would take most of a restart's time to decode).
        var trace: Data
        var traceStart: Int
        var traceNextSequence: UInt64
        var sriov: [String: SRIOV]
        var topologyGeneration: Int
        var nextMSIIRQ: UInt32
        var tunables: KernelTunables
        var machine: MachineState
    }

    struct Driver: Codable, Sendable {
        var name: String
        var ids: [[UInt32]]
        var dynamicIDs: [[UInt32]]
    }

    struct DeviceData: Codable, Sendable {
        var fields: [Field]
        var permissive: Bool
        var allowInterruptControl: Bool
        var warnedOnWrite: Bool
        var enableINTx: Bool
        var isrOn: Bool
        var ackInterrupts: Bool
        var handledInterrupts: Int
        var isrIRQ: UInt32
        var commandShadow: UInt16
        var bars: [VirtualBARState?]
        var savedState: Data
    }

    struct Field: Codable, Sendable {
        var offset: Int
        var size: Int
        var mask: UInt32
        var kind: String
        var bar: Int?
    }

    struct VirtualBARState: Codable, Sendable {
        var value: UInt32
        var sizingValue: UInt32
        var sizing: Bool
        var ignoreMask: UInt32
    }

    struct Frontend: Codable, Sendable {
        var domain: UInt32
        var exports: [[String]]  // [virtual, host]
    }

    struct TraceEntry: Codable, Sendable {
        var sequence: UInt64
        var domain: UInt32
        var device: String
        /// -1 conf_read, -2 conf_write, else the pci_op command.
        var operation: Int32
        var offset: Int32
        var size: Int32
        var value: UInt32
        var error: Int32
        var rule: String?
    }

    struct SRIOV: Codable, Sendable {
        var totalVFs: UInt16
        var initialVFs: UInt16
        var driverMaxVFs: UInt16
        var numVFs: UInt16
        var offset: UInt16
        var stride: UInt16
        var vfDeviceID: UInt16
        var driversAutoprobe: Bool
        var migrationCapable: Bool
        /// Absent in snapshots written before the kernel's `ctrl` was kept.
        var control: UInt16?
        var windows: [Int: BARDescriptor]
        var virtualFunctions: [String]
    }

    struct MachineState: Codable, Sendable {
        var name: String
        var devices: [Device]
        /// Functions taken out by `remove` (or a surprise removal), waiting for `rescan`.
        var removed: [Device]
        var parents: [String: String]
        var children: [String: [String]]
        var rootBuses: [String: [String]]
        var rootBusOf: [String: String]
        /// Each bridge's secondary bus (its pci_bus class device). Absent in snapshots taken
        /// before pci_bus existed: then what the restored bridges' registers give.
        var secondaryBuses: [String: Int]?
    }

    struct Device: Codable, Sendable {
        var address: String
        /// For a VF: how it was created (its PF, VF id from the label, device ID), else nil.
        var physicalFunction: String?
        var label: String
        var vfDeviceID: UInt16
        var config: Data
        var bars: [BARDescriptor?]
        var capabilities: [Int]
        var irq: UInt32
        var bootDriver: String?
        var faults: DeviceFaults
        var msiIRQ: UInt32
        var enableCount: Int
        var isBusmaster: Bool
        var kernelMSIEnabled: Bool
        var kernelMSIXEnabled: Bool
        var savedState: Data?
        var vpdContents: Data
        /// The bridge above it as the device holds it (`pci_upstream_bridge`), kept by Machine; a
        /// removed function keeps the one it had.
        var upstreamBridge: String?
    }

    enum RestoreError: Error, CustomStringConvertible {
        case mismatch(String)
        var description: String {
            switch self {
            case .mismatch(let text): return "the snapshot does not fit the machine built from the options: \(text)"
            }
        }
    }
}

// MARK: - Capture

extension StateSnapshot {
    /// Everything the tree holds that a restart must keep. Called with the tree's lock held:
    /// copies values only (arrays share storage until written), no encoding.
    init(state: SysfsTree.State, sequence: UInt64, options: StateOptions) {
        self.sequence = sequence
        self.options = options
        lastOperationResults = Dictionary(uniqueKeysWithValues: state.lastOperationResult.map { (String($0.key), $0.value) })
        let dom0 = state.dom0
        func key(_ address: PCIAddress) -> String { address.description }
        func keyed<V>(_ dictionary: [PCIAddress: V]) -> [String: V] {
            Dictionary(uniqueKeysWithValues: dictionary.map { (key($0.key), $0.value) })
        }
        func id(_ value: PCIDriver.DeviceID) -> [UInt32] {
            [value.vendor, value.device, value.subvendor, value.subdevice, value.classCode, value.classMask]
        }
        let machine = dom0.machine
        self.dom0 = Dom0State(
            profile: dom0.policy.profile.rawValue,
            globalPermissive: dom0.policy.globalPermissive,
            passthroughBackend: dom0.passthroughBackend,
            drivers: dom0.drivers.map { Driver(name: $0.name, ids: $0.ids.map(id), dynamicIDs: $0.dynamicIDs.map(id)) },
            bindings: keyed(dom0.bindings),
            driverOverrides: keyed(dom0.driverOverrides),
            logLines: dom0.log.lines,
            logDropped: dom0.log.dropped,
            seizeList: dom0.seizeList.map { [$0.domain, $0.bus, $0.slot, $0.function] },
            pcibackDevices: dom0.pcibackDevices.map(key),
            quirkRegistrations: dom0.quirkRegistrations.map(key),
            deviceData: keyed(dom0.deviceData).mapValues(DeviceData.init),
            owners: keyed(dom0.owners),
            frontends: dom0.frontends.values.sorted { $0.domain < $1.domain }.map { frontend in
                Frontend(domain: frontend.domain, exports: frontend.exports.map { [key($0.virtual), key($0.host)] })
            },
            trace: TraceEntry.pack(dom0.trace.storage),
            traceStart: dom0.trace.start,
            traceNextSequence: dom0.trace.nextSequence,
            sriov: keyed(dom0.sriov).mapValues(SRIOV.init),
            topologyGeneration: dom0.topologyGeneration,
            nextMSIIRQ: dom0.nextMSIIRQ,
            tunables: dom0.tunables,
            machine: MachineState(
                name: machine.name,
                devices: machine.order.compactMap { machine[$0] }.map(Device.init),
                removed: dom0.removedDevices.keys.sorted().compactMap { dom0.removedDevices[$0] }.map(Device.init),
                parents: Dictionary(uniqueKeysWithValues: machine.parents.map { (key($0.key), key($0.value)) }),
                children: Dictionary(uniqueKeysWithValues: machine.children.map { (key($0.key), $0.value.map(key)) }),
                rootBuses: machine.rootBuses.mapValues { $0.map(key) },
                rootBusOf: Dictionary(uniqueKeysWithValues: machine.rootBusOf.map { (key($0.key), $0.value) }),
                secondaryBuses: Dictionary(uniqueKeysWithValues: machine.secondaryBuses.map { (key($0.key), Int($0.value)) })))
    }
}

extension StateSnapshot.DeviceData {
    init(_ data: PcibackDeviceData) {
        fields = data.fields.map(StateSnapshot.Field.init)
        permissive = data.permissive
        allowInterruptControl = data.allowInterruptControl
        warnedOnWrite = data.warnedOnWrite
        enableINTx = data.enableINTx
        isrOn = data.isrOn
        ackInterrupts = data.ackInterrupts
        handledInterrupts = data.handledInterrupts
        isrIRQ = data.isrIRQ
        commandShadow = data.commandShadow
        bars = data.bars.map { $0.map { StateSnapshot.VirtualBARState(value: $0.value, sizingValue: $0.sizingValue, sizing: $0.sizing,
                                                                       ignoreMask: $0.ignoreMask) } }
        savedState = Data(data.savedState)
    }

    func restored(at address: PCIAddress) -> PcibackDeviceData {
        var data = PcibackDeviceData(address: address)
        data.fields = fields.map { $0.restored }
        data.permissive = permissive
        data.allowInterruptControl = allowInterruptControl
        data.warnedOnWrite = warnedOnWrite
        data.enableINTx = enableINTx
        data.isrOn = isrOn
        data.ackInterrupts = ackInterrupts
        data.handledInterrupts = handledInterrupts
        data.isrIRQ = isrIRQ
        data.commandShadow = commandShadow
        data.bars = bars.map { $0.map { VirtualBAR(value: $0.value, sizingValue: $0.sizingValue, sizing: $0.sizing, ignoreMask: $0.ignoreMask) } }
        data.savedState = Array(savedState)
        return data
    }
}

extension StateSnapshot.Field {
    init(_ field: ConfigField) {
        offset = field.offset
        size = field.size
        mask = field.mask
        switch field.kind {
        case .vendor: kind = "vendor"
        case .device: kind = "device"
        case .command: kind = "command"
        case .interruptLine: kind = "interruptLine"
        case .hardwareReadOnly: kind = "hardwareReadOnly"
        case .hardwarePassThrough: kind = "hardwarePassThrough"
        case .bist: kind = "bist"
        case .bar(let index):
            kind = "bar"
            bar = index
        case .rom: kind = "rom"
        case .powerManagementCapabilities: kind = "powerManagementCapabilities"
        case .powerManagementControl: kind = "powerManagementControl"
        case .vpdAddress: kind = "vpdAddress"
        case .msiFlags: kind = "msiFlags"
        case .msixFlags: kind = "msixFlags"
        case .quirk: kind = "quirk"
        }
    }

    var restored: ConfigField {
        let kinds: [String: ConfigField.Kind] = [
            "vendor": .vendor, "device": .device, "command": .command, "interruptLine": .interruptLine,
            "hardwareReadOnly": .hardwareReadOnly, "hardwarePassThrough": .hardwarePassThrough, "bist": .bist, "rom": .rom,
            "powerManagementCapabilities": .powerManagementCapabilities, "powerManagementControl": .powerManagementControl,
            "vpdAddress": .vpdAddress, "msiFlags": .msiFlags, "msixFlags": .msixFlags, "quirk": .quirk,
        ]
        return ConfigField(offset: offset, size: size, mask: mask, kind: kind == "bar" ? .bar(bar ?? 0) : kinds[kind] ?? .quirk)
    }
}

extension StateSnapshot.TraceEntry {
    static func pack(_ records: [TraceRecord]) -> Data {
        var encoder = JournalEncoder()
        for record in records {
            let entry = StateSnapshot.TraceEntry(record)
            encoder.u64(entry.sequence)
            encoder.u32(entry.domain)
            encoder.address(record.device)
            encoder.u32(UInt32(bitPattern: entry.operation))
            encoder.u32(UInt32(bitPattern: entry.offset))
            encoder.u32(UInt32(bitPattern: entry.size))
            encoder.u32(entry.value)
            encoder.u32(UInt32(bitPattern: entry.error))
            let rule = entry.rule.map { Array($0.utf8) }
            encoder.u8(rule == nil ? 0 : 1)
            encoder.u32(UInt32(rule?.count ?? 0))
            encoder.bytes += rule ?? []
        }
        return Data(encoder.bytes)
    }

    static func unpack(_ data: Data) -> [TraceRecord]? {
        let bytes = [UInt8](data)
        var decoder = JournalDecoder(bytes)
        var records: [TraceRecord] = []
        do {
            while decoder.position < decoder.end {
                let sequence = try decoder.u64()
                let domain = try decoder.u32()
                let device = try decoder.address()
                let operation = Int32(bitPattern: try decoder.u32())
                let offset = Int32(bitPattern: try decoder.u32())
                let size = Int32(bitPattern: try decoder.u32())
                let value = try decoder.u32()
                let error = Int32(bitPattern: try decoder.u32())
                let hasRule = try decoder.u8()
                let ruleBytes = try decoder.raw(Int(try decoder.u32()))
                let kind: TraceRecord.Operation = operation == -1 ? .configRead : operation == -2 ? .configWrite : .pciOp(operation)
                records.append(TraceRecord(sequence: sequence, domain: domain, device: device, operation: kind, offset: offset,
                                           size: size, value: value, error: error,
                                           rule: hasRule != 0 ? String(decoding: ruleBytes, as: UTF8.self) : nil))
            }
        } catch {
            return nil
        }
        return records
    }

    init(_ record: TraceRecord) {
        sequence = record.sequence
        domain = record.domain
        device = record.device.description
        switch record.operation {
        case .configRead: operation = -1
        case .configWrite: operation = -2
        case .pciOp(let command): operation = command
        }
        offset = record.offset
        size = record.size
        value = record.value
        error = record.error
        rule = record.rule
    }
}

extension StateSnapshot.SRIOV {
    init(_ state: SRIOVState) {
        totalVFs = state.totalVFs
        initialVFs = state.initialVFs
        driverMaxVFs = state.driverMaxVFs
        numVFs = state.numVFs
        offset = state.offset
        stride = state.stride
        vfDeviceID = state.vfDeviceID
        driversAutoprobe = state.driversAutoprobe
        migrationCapable = state.migrationCapable
        control = state.control
        windows = state.windows
        virtualFunctions = state.virtualFunctions.map(\.description)
    }

    func restored() throws(StateSnapshot.RestoreError) -> SRIOVState {
        SRIOVState(totalVFs: totalVFs, initialVFs: initialVFs, driverMaxVFs: driverMaxVFs, numVFs: numVFs, offset: offset,
                   stride: stride, vfDeviceID: vfDeviceID, driversAutoprobe: driversAutoprobe,
                   migrationCapable: migrationCapable, control: control ?? 0, windows: windows,
                   virtualFunctions: try virtualFunctions.map(StateSnapshot.address))
    }
}

extension StateSnapshot.Device {
    init(_ device: EmulatedDevice) {
        address = device.address.description
        physicalFunction = device.physicalFunction?.description
        label = device.label
        vfDeviceID = device.identity.device
        config = Data(device.config.bytes)
        bars = device.bars
        let offsets = device.capabilities
        capabilities = [offsets.powerManagement, offsets.vpd, offsets.msi, offsets.msix, offsets.pciExpress,
                        offsets.advancedFeatures, offsets.aer, offsets.ari, offsets.sriov]
        irq = device.irq
        bootDriver = device.bootDriver
        faults = device.faults
        msiIRQ = device.msiIRQ
        enableCount = device.enableCount
        isBusmaster = device.isBusmaster
        kernelMSIEnabled = device.kernelMSIEnabled
        kernelMSIXEnabled = device.kernelMSIXEnabled
        savedState = device.savedState.map { Data($0) }
        vpdContents = Data(device.vpdContents)
        upstreamBridge = device.upstreamBridge?.address.description
    }

    /// Overwrites a function built from the options (or created again) with the saved fields.
    func apply(to device: EmulatedDevice) throws(StateSnapshot.RestoreError) {
        guard config.count == device.configSize, capabilities.count == 9, bars.count == device.bars.count else {
            throw .mismatch("\(address): config size or layout differs")
        }
        device.config.store(0, bytes: Array(config))
        device.bars = bars
        var offsets = CapabilityOffsets()
        offsets.powerManagement = capabilities[0]
        offsets.vpd = capabilities[1]
        offsets.msi = capabilities[2]
        offsets.msix = capabilities[3]
        offsets.pciExpress = capabilities[4]
        offsets.advancedFeatures = capabilities[5]
        offsets.aer = capabilities[6]
        offsets.ari = capabilities[7]
        offsets.sriov = capabilities[8]
        device.capabilities = offsets
        device.irq = irq
        device.bootDriver = bootDriver
        device.faults = faults
        device.physicalFunction = try physicalFunction.map(StateSnapshot.address)
        device.msiIRQ = msiIRQ
        device.enableCount = enableCount
        device.isBusmaster = isBusmaster
        device.kernelMSIEnabled = kernelMSIEnabled
        device.kernelMSIXEnabled = kernelMSIXEnabled
        device.savedState = savedState.map { Array($0) }
        device.vpdContents = Array(vpdContents)
    }

    /// The VF id in "virtual function N of ...".
    var virtualFunctionIndex: Int {
        let words = label.split(separator: " ")
        return words.count > 2 ? Int(words[2]) ?? 0 : 0
    }
}

// MARK: - Restore

extension StateSnapshot {
    static func address(_ text: String) throws(RestoreError) -> PCIAddress {
        guard let address = PCIAddress(kernelName: text) else { throw .mismatch("'\(text)' is not a device name") }
        return address
    }

    static func addressKeyed<V>(_ dictionary: [String: V]) throws(RestoreError) -> [PCIAddress: V] {
        var result: [PCIAddress: V] = [:]
        for (key, value) in dictionary { result[try address(key)] = value }
        return result
    }

    /// Overwrites `state` (a tree just built from the same options) with the snapshot.
    func restore(into state: inout SysfsTree.State) throws(RestoreError) {
        var dom0 = state.dom0
        let saved = self.dom0
        guard saved.profile == dom0.policy.profile.rawValue else { throw .mismatch("profile \(saved.profile)") }
        // The functions: those built from the options are reused; VFs are created by their PF.
        var pool = dom0.machine.devices
        for (address, device) in dom0.removedDevices { pool[address] = device }
        var instances: [PCIAddress: EmulatedDevice] = [:]
        let all = saved.machine.devices + saved.machine.removed
        for part in all where part.physicalFunction == nil {
            let address = try StateSnapshot.address(part.address)
            guard let device = pool[address] else { throw .mismatch("no function \(part.address) in the machine") }
            try part.apply(to: device)
            instances[address] = device
        }
        for part in all where part.physicalFunction != nil {
            let address = try StateSnapshot.address(part.address)
            let pfAddress = try StateSnapshot.address(part.physicalFunction!)
            guard let pf = instances[pfAddress] ?? pool[pfAddress] else { throw .mismatch("no physical function \(pfAddress)") }
            let vf = pf.makeVirtualFunction(at: address, index: part.virtualFunctionIndex, vfDeviceID: part.vfDeviceID,
                                            bars: part.bars)
            try part.apply(to: vf)
            instances[address] = vf
        }
        var machine = Machine(name: saved.machine.name,
                              devices: try saved.machine.devices.map { part throws(RestoreError) in instances[try StateSnapshot.address(part.address)]! })
        var parents: [PCIAddress: PCIAddress] = [:]
        for (key, value) in saved.machine.parents { parents[try StateSnapshot.address(key)] = try StateSnapshot.address(value) }
        machine.parents = parents
        var children: [PCIAddress: [PCIAddress]] = [:]
        for (key, list) in saved.machine.children {
            children[try StateSnapshot.address(key)] = try list.map { text throws(RestoreError) in try StateSnapshot.address(text) }
        }
        machine.children = children
        var rootBuses: [String: [PCIAddress]] = [:]
        for (key, list) in saved.machine.rootBuses {
            rootBuses[key] = try list.map { text throws(RestoreError) in try StateSnapshot.address(text) }
        }
        machine.rootBuses = rootBuses
        machine.rootBusOf = try StateSnapshot.addressKeyed(saved.machine.rootBusOf)
        if let saved = saved.machine.secondaryBuses {
            var buses: [PCIAddress: UInt8] = [:]
            for (key, bus) in saved {
                guard let number = UInt8(exactly: bus) else { throw .mismatch("secondary bus \(bus) of \(key)") }
                buses[try StateSnapshot.address(key)] = number
            }
            machine.secondaryBuses = buses
        }
        for part in all {
            let device = instances[try StateSnapshot.address(part.address)]
            if let text = part.upstreamBridge {
                let bridge = try StateSnapshot.address(text)
                device?.upstreamBridge = instances[bridge] ?? pool[bridge]
            } else {
                device?.upstreamBridge = nil
            }
        }
        dom0.machine = machine
        var removed: [PCIAddress: EmulatedDevice] = [:]
        for part in saved.machine.removed {
            let address = try StateSnapshot.address(part.address)
            removed[address] = instances[address]
        }
        dom0.removedDevices = removed

        dom0.policy.globalPermissive = saved.globalPermissive
        dom0.passthroughBackend = saved.passthroughBackend
        func id(_ fields: [UInt32]) -> PCIDriver.DeviceID {
            var value = PCIDriver.DeviceID(vendor: fields[0], device: fields[1])
            value.subvendor = fields[2]
            value.subdevice = fields[3]
            value.classCode = fields[4]
            value.classMask = fields[5]
            return value
        }
        guard saved.drivers.allSatisfy({ ($0.ids + $0.dynamicIDs).allSatisfy { $0.count == 6 } }) else {
            throw .mismatch("a driver id is malformed")
        }
        dom0.drivers = saved.drivers.map { PCIDriver(name: $0.name, ids: $0.ids.map(id), dynamicIDs: $0.dynamicIDs.map(id)) }
        dom0.bindings = try StateSnapshot.addressKeyed(saved.bindings)
        dom0.driverOverrides = try StateSnapshot.addressKeyed(saved.driverOverrides)
        var log = KernelLog()
        log.lines = saved.logLines
        log.dropped = saved.logDropped
        dom0.log = log
        guard saved.seizeList.allSatisfy({ $0.count == 4 }) else { throw .mismatch("a slot is malformed") }
        dom0.seizeList = saved.seizeList.map { SlotPattern(domain: $0[0], bus: $0[1], slot: $0[2], function: $0[3]) }
        dom0.pcibackDevices = try saved.pcibackDevices.map { text throws(RestoreError) in try StateSnapshot.address(text) }
        dom0.quirkRegistrations = try saved.quirkRegistrations.map { text throws(RestoreError) in try StateSnapshot.address(text) }
        var deviceData: [PCIAddress: PcibackDeviceData] = [:]
        for (key, data) in saved.deviceData {
            let address = try StateSnapshot.address(key)
            deviceData[address] = data.restored(at: address)
        }
        dom0.deviceData = deviceData
        dom0.owners = try StateSnapshot.addressKeyed(saved.owners)
        var frontends: [UInt32: PCIBackFS.Frontend] = [:]
        for frontend in saved.frontends {
            var restored = PCIBackFS.Frontend(domain: frontend.domain)
            for pair in frontend.exports {
                guard pair.count == 2 else { throw .mismatch("an export is malformed") }
                restored.exports.append(.init(virtual: try StateSnapshot.address(pair[0]), host: try StateSnapshot.address(pair[1])))
            }
            frontends[frontend.domain] = restored
        }
        dom0.frontends = frontends
        var trace = TraceRing(capacity: dom0.trace.capacity)
        guard let storage = TraceEntry.unpack(saved.trace) else { throw .mismatch("the trace is malformed") }
        trace.storage = storage
        trace.start = saved.traceStart
        trace.nextSequence = saved.traceNextSequence
        dom0.trace = trace
        var sriov: [PCIAddress: SRIOVState] = [:]
        for (key, value) in saved.sriov { sriov[try StateSnapshot.address(key)] = try value.restored() }
        dom0.sriov = sriov
        dom0.topologyGeneration = saved.topologyGeneration
        dom0.nextMSIIRQ = saved.nextMSIIRQ
        dom0.tunables = saved.tunables
        state.dom0 = dom0
        state.layoutEpoch += 1
        var results: [UInt32: String] = [:]
        for (key, value) in lastOperationResults {
            guard let domain = UInt32(key) else { throw .mismatch("frontend '\(key)'") }
            results[domain] = value
        }
        state.lastOperationResult = results
        state.traceLogged = saved.traceNextSequence - 1
    }
}

// MARK: - The snapshot file

extension StateSnapshot {
    static let magic: [UInt8] = Array("PCIBKS01".utf8)

    /// The file's bytes: magic, then one frame (length, CRC-32, JSON).
    func fileBytes() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return StateSnapshot.magic + JournalFile.frame(Array(try encoder.encode(self)))
    }

    /// nil when the file is absent; throws when it is there but damaged.
    static func read(_ path: String) throws -> StateSnapshot? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let bytes = [UInt8](data)
        guard bytes.count > magic.count + 8, Array(bytes[0..<magic.count]) == magic else {
            throw StateJournal.OpenError(description: "\(path): not a snapshot")
        }
        var decoder = JournalDecoder(bytes, from: magic.count, to: magic.count + 8)
        let length = Int(try decoder.u32())
        let checksum = try decoder.u32()
        let start = magic.count + 8
        guard bytes.count - start == length, CRC32.checksum(bytes[start...]) == checksum else {
            throw StateJournal.OpenError(description: "\(path): damaged (length or checksum)")
        }
        do {
            return try JSONDecoder().decode(StateSnapshot.self, from: Data(bytes[start...]))
        } catch {
            throw StateJournal.OpenError(description: "\(path): cannot be decoded (written by another version?): \(error)")
        }
    }
}
