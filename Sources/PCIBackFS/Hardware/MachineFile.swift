import Foundation

/// A machine described in JSON: each function either from a built-in template (the devices of
/// the built-in machine, placed at any address) or from captured data (an lspci dump, or raw
/// config bytes with their masks). Identical template functions share their read-only data.
///
/// ```json
/// { "name": "two-nics",
///   "devices": [
///     { "address": "0000:00:1c.0", "template": "root-port", "secondaryBus": 3, "subordinateBus": 4 },
///     { "address": "0000:03:00.0", "template": "nic-82576", "irq": 18 },
///     { "address": "0000:03:00.1", "template": "nic-82576", "irq": 19 },
///     { "lspciDump": "dumps/laptop.txt" },
///     { "address": "0000:05:00.0", "config": "86800a15...", "writable": "...", "writeOneClear": "...",
///       "bars": [ { "index": 0, "kind": "memory32", "size": 131072, "address": 4273864704 } ],
///       "irq": 16, "driver": "e1000e" } ] }
/// ```
public struct MachineFile: Codable, Sendable, Equatable {
    public var name: String?
    public var devices: [Entry]

    /// The keys of the file's top level.
    public enum CodingKeys: String, CodingKey, CaseIterable, Sendable {
        case name, devices
    }

    public struct Entry: Codable, Sendable, Equatable {
        public var address: String?
        /// host-bridge, root-port, nic-82576, nvme, xhci, vga, rtl8139
        public var template: String?
        public var secondaryBus: Int?
        public var subordinateBus: Int?
        public var irq: UInt32?
        public var driver: String?
        /// All functions of an `lspci -vvv -xxx` dump (path relative to the machine file).
        public var lspciDump: String?
        /// Raw config bytes in hex (256 or 4096 bytes), with optional masks of the same length.
        public var config: String?
        public var writable: String?
        public var writeOneClear: String?
        public var resetImage: String?
        public var bars: [BAR]?
        /// SR-IOV VF BAR windows of a captured PF (`resource` lines 7-12).
        public var iovBars: [BAR]?
        /// Faults armed from the start, e.g. { "resetFails": "sticky" }.
        public var faults: DeviceFaults?

        /// The keys of a device entry.
        public enum CodingKeys: String, CodingKey, CaseIterable, Sendable {
            case address, template, secondaryBus, subordinateBus, irq, driver, lspciDump, config, writable, writeOneClear,
                 resetImage, bars, iovBars, faults
        }

        public init(address: String? = nil, template: String? = nil) {
            self.address = address
            self.template = template
        }
    }

    public struct BAR: Codable, Sendable, Equatable {
        public var index: Int
        public var kind: BARDescriptor.Kind
        public var size: UInt64
        public var address: UInt64
        /// The capture gave no size and `size` was inferred from the address
        /// (`BARSizeInference`); set `size` to the real one when it is known. Informative only.
        public var sizeInferred: Bool?

        /// The keys of a BAR.
        public enum CodingKeys: String, CodingKey, CaseIterable, Sendable {
            case index, kind, size, address, sizeInferred
        }

        /// The keys every BAR must have (`sizeInferred` is optional).
        public static let requiredKeys: [CodingKeys] = [.index, .kind, .size, .address]
    }

    public init(name: String? = nil, devices: [Entry]) {
        self.name = name
        self.devices = devices
    }

    /// What is wrong with a machine file: one or more problems, each with its place.
    public struct LoadError: Error, CustomStringConvertible, Equatable {
        /// The machine file's path (nil when the file was not read from disk).
        public var file: String?
        public var problems: [Problem]

        public struct Problem: Sendable, Equatable, CustomStringConvertible {
            /// The JSON path, e.g. `devices[1].faults.resetFail`; empty for the whole file.
            public var path: String
            public var line: Int?
            public var column: Int?
            public var message: String

            public init(path: String = "", line: Int? = nil, column: Int? = nil, message: String) {
                self.path = path
                self.line = line
                self.column = column
                self.message = message
            }

            public var description: String {
                var text = ""
                if let line, let column { text += "line \(line), column \(column): " }
                if !path.isEmpty { text += path + ": " }
                return text + message
            }
        }

        public init(file: String? = nil, problems: [Problem]) {
            self.file = file
            self.problems = problems
        }

        init(path: String, _ message: String) { self.init(problems: [Problem(path: path, message: message)]) }

        /// One line per problem, each prefixed with the file name.
        public var description: String {
            problems.map { (file.map { $0 + ": " } ?? "") + $0.description }.joined(separator: "\n")
        }
    }

    public static func load(path: String) throws(LoadError) -> [EmulatedDevice] {
        var warnings: [String] = []
        return try load(path: path, warnings: &warnings)
    }

    /// Reads, checks and builds a machine file. Warnings (a dump's PCI Express function without
    /// its extended space) are appended to `warnings`, each prefixed with the file name.
    public static func load(path: String, warnings: inout [String]) throws(LoadError) -> [EmulatedDevice] {
        let bytes: [UInt8]
        do { bytes = try CaptureFiles.readWholeFile(path, limit: 256 << 20) } catch {
            throw LoadError(file: path, problems: [.init(message: error.message(about: path))])
        }
        let (file, document) = try parse(bytes, name: path)
        var found: [String] = []
        defer { warnings += found.map { path + ": " + $0 } }
        do {
            return try file.devices(relativeTo: (path as NSString).deletingLastPathComponent, warnings: &found)
        } catch {
            var located = error
            located.file = path
            located.problems = error.problems.map { MachineFileSchema.locate($0, in: document, bytes: bytes) }
            throw located
        }
    }

    /// A machine file from its JSON text, strictly: syntax errors with line and column, unknown
    /// keys, fault names, modes and templates with their JSON path and what is allowed.
    public static func parse(_ bytes: [UInt8], name: String? = nil) throws(LoadError) -> (MachineFile, JSONValue) {
        let document: JSONValue
        do { document = try StrictJSON.parse(bytes) } catch {
            let (line, column) = lineAndColumn(of: error.offset, in: bytes)
            throw LoadError(file: name, problems: [.init(line: line, column: column, message: error.message)])
        }
        let problems = MachineFileSchema.check(document, bytes: bytes)
        guard problems.isEmpty else { throw LoadError(file: name, problems: problems) }
        do {
            return (try JSONDecoder().decode(MachineFile.self, from: Data(bytes)), document)
        } catch let error as DecodingError {
            throw LoadError(file: name, problems: [MachineFileSchema.problem(error)])
        } catch {
            throw LoadError(file: name, problems: [.init(message: "\(error)")])
        }
    }

    public func devices(relativeTo directory: String = ".") throws(LoadError) -> [EmulatedDevice] {
        var warnings: [String] = []
        return try devices(relativeTo: directory, warnings: &warnings)
    }

    /// Builds the functions. Template functions with the same template and parameters are
    /// cloned from one instance, so their config arrays share storage until written.
    public func devices(relativeTo directory: String, warnings: inout [String]) throws(LoadError) -> [EmulatedDevice] {
        let result = try buildDevices(relativeTo: directory, warnings: &warnings)
        // Faults apply to the function at the entry's address.
        for entry in devices {
            guard let faults = entry.faults, let text = entry.address, let address = PCIAddress(kernelName: text),
                  let device = result.first(where: { $0.address == address }) else { continue }
            device.faults = faults
        }
        return result
    }

    private func buildDevices(relativeTo directory: String, warnings: inout [String]) throws(LoadError) -> [EmulatedDevice] {
        var result: [EmulatedDevice] = []
        var origins: [PCIAddress: Int] = [:]
        var prototypes: [String: EmulatedDevice] = [:]
        func add(_ new: [EmulatedDevice], _ index: Int) throws(LoadError) {
            for device in new {
                if let other = origins[device.address] {
                    throw LoadError(path: "devices[\(index)]", "a second function at \(device.address) (devices[\(other)] has one)")
                }
                origins[device.address] = index
                result.append(device)
            }
        }
        for (index, entry) in devices.enumerated() {
            let path = "devices[\(index)]"
            if let dump = entry.lspciDump {
                let dumpPath = dump.hasPrefix("/") ? dump : directory + "/" + dump
                let imported: [EmulatedDevice]
                do { imported = try DeviceImporter.importDump(path: dumpPath, warnings: &warnings) } catch {
                    throw LoadError(path: path + ".lspciDump", error.message(about: dumpPath, naming: true))
                }
                try add(imported, index)
                continue
            }
            guard let text = entry.address, let address = PCIAddress(kernelName: text) else {
                throw LoadError(path: path, "needs an address like 0000:03:00.0")
            }
            if let name = entry.template {
                guard let template = MachineTemplate(rawValue: name) else {
                    throw LoadError(path: path + ".template", MachineFileSchema.unknownTemplate(name))
                }
                let key = "\(name)/\(entry.secondaryBus ?? -1)/\(entry.subordinateBus ?? -1)/\(address.function)"
                if let prototype = prototypes[key] {
                    try add([prototype.clone(at: address, irq: entry.irq ?? prototype.irq, bootDriver: entry.driver ?? prototype.bootDriver)], index)
                    continue
                }
                let device: EmulatedDevice
                do {
                    device = try template.build(at: address, irq: entry.irq, secondaryBus: entry.secondaryBus,
                                                subordinateBus: entry.subordinateBus)
                } catch { throw LoadError(path: path, error.reason) }
                if let driver = entry.driver { device.bootDriver = driver }
                prototypes[key] = device
                try add([device], index)
                continue
            }
            guard let configText = entry.config, let bytes = Self.bytes(fromHex: configText),
                  bytes.count == 256 || bytes.count == 4096
            else { throw LoadError(path: path, "needs a template, an lspciDump, or config hex of 256 or 4096 bytes") }
            if entry.writable == nil {
                // Captured bytes: the masks come from the standard semantics, as for a dump.
                func captured(_ bar: BAR) -> CapturedBAR? {
                    guard bar.size > 0, bar.index >= 0, bar.index <= 6 else { return nil }
                    let kind: CapturedBAR.Kind
                    switch bar.kind {
                    case .io: kind = .io
                    case .memory32: kind = .memory(is64Bit: false, prefetchable: false)
                    case .memory32Prefetchable: kind = .memory(is64Bit: false, prefetchable: true)
                    case .memory64: kind = .memory(is64Bit: true, prefetchable: false)
                    case .memory64Prefetchable: kind = .memory(is64Bit: true, prefetchable: true)
                    case .rom: kind = .rom(enabled: false)
                    }
                    guard (bar.index == 6) == (bar.kind == .rom) else { return nil }
                    return CapturedBAR(index: bar.index, base: bar.address, size: bar.size, kind: kind,
                                       sizeInferred: bar.sizeInferred ?? false)
                }
                let function = CapturedFunction(address: address, config: bytes, bars: (entry.bars ?? []).compactMap(captured),
                                                iovBARs: (entry.iovBars ?? []).compactMap(captured), irq: entry.irq,
                                                driver: entry.driver)
                // Without "bars" the sizes are unknown, as in a dump without -v: inferred.
                try add([DeviceImporter.device(from: entry.bars == nil ? BARSizeInference.completing(function) : function)], index)
                continue
            }
            var config = ConfigSpace(bytes: bytes)
            if let masks = entry.writable.flatMap(Self.bytes(fromHex:)), masks.count == bytes.count {
                for offset in 0..<bytes.count { config.setWritable(offset, width: 1, mask: UInt32(masks[offset])) }
            }
            if let masks = entry.writeOneClear.flatMap(Self.bytes(fromHex:)), masks.count == bytes.count {
                for offset in 0..<bytes.count where masks[offset] != 0 {
                    config.setWriteOneClear(offset, width: 1, mask: UInt32(masks[offset]))
                }
            }
            var bars: [BARDescriptor?] = Array(repeating: nil, count: 7)
            for (barIndex, bar) in (entry.bars ?? []).enumerated() {
                guard bar.index >= 0, bar.index < 7, bar.size > 0, bar.size & (bar.size - 1) == 0 else {
                    throw LoadError(path: path + ".bars[\(barIndex)]", "BAR \(bar.index): index 0...6 and a power-of-two size")
                }
                bars[bar.index] = BARDescriptor(kind: bar.kind, size: bar.size, address: bar.address)
            }
            let reset = entry.resetImage.flatMap(Self.bytes(fromHex:)).flatMap { $0.count == bytes.count ? $0 : nil }
            try add([EmulatedDevice(address: address, config: config, resetImage: reset, bars: bars,
                                    irq: entry.irq ?? 0, bootDriver: entry.driver)], index)
        }
        return result
    }

    /// A machine file entry holding a captured function (config bytes, BARs, IRQ, driver).
    public static func entry(capturing function: CapturedFunction) -> Entry {
        func bar(_ captured: CapturedBAR) -> BAR {
            let kind: BARDescriptor.Kind
            switch captured.kind {
            case .io: kind = .io
            case .memory(let is64, let prefetchable):
                kind = is64 ? (prefetchable ? .memory64Prefetchable : .memory64) : (prefetchable ? .memory32Prefetchable : .memory32)
            case .rom: kind = .rom
            }
            return BAR(index: captured.index, kind: kind, size: captured.size, address: captured.base,
                       sizeInferred: captured.sizeInferred ? true : nil)
        }
        var entry = Entry(address: function.address.description)
        entry.config = function.config.map { hex($0, width: 2) }.joined()
        entry.bars = function.bars.map(bar)
        if !function.iovBARs.isEmpty { entry.iovBars = function.iovBARs.map(bar) }
        entry.irq = function.irq
        entry.driver = function.driver
        return entry
    }

    static func bytes(fromHex text: String) -> [UInt8]? {
        var result: [UInt8] = []
        result.reserveCapacity(text.utf8.count / 2)
        var high: UInt8?
        for byte in text.utf8 {
            if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") { continue }
            guard let digit = hexDigitValue(byte) else { return nil }
            if let first = high {
                result.append(first << 4 | digit)
                high = nil
            } else {
                high = digit
            }
        }
        return high == nil ? result : nil
    }
}

extension EmulatedDevice {
    /// The same function at another address: config, masks and reset image share storage with
    /// this one until either is written; the kernel-side state starts fresh.
    public func clone(at address: PCIAddress, irq: UInt32, bootDriver: String?) -> EmulatedDevice {
        var config = self.config
        // Firmware programs each function's own interrupt line (copying the bytes only when it differs).
        if identity.layout != .cardbus, config.read(PCIRegister.interruptLine, width: 1) != irq & 0xff {
            config.store(PCIRegister.interruptLine, width: 1, value: irq & 0xff)
        }
        let copy = EmulatedDevice(address: address, config: config, resetImage: resetImage, identity: identity, bars: bars,
                                  irq: irq, bootDriver: bootDriver, label: label, vpd: vpdContents)
        copy.physicalFunction = physicalFunction
        return copy
    }
}
