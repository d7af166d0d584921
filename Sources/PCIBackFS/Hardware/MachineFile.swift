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
    }

    public init(name: String? = nil, devices: [Entry]) {
        self.name = name
        self.devices = devices
    }

    public enum LoadError: Error, CustomStringConvertible, Equatable {
        case unreadable(String)
        case invalid(entry: Int, reason: String)

        public var description: String {
            switch self {
            case .unreadable(let reason): return reason
            case .invalid(let entry, let reason): return "device entry \(entry): \(reason)"
            }
        }
    }

    public static func load(path: String) throws(LoadError) -> [EmulatedDevice] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .unreadable("\(path): \(error.localizedDescription)")
        }
        let file: MachineFile
        do { file = try JSONDecoder().decode(MachineFile.self, from: data) } catch {
            throw .unreadable("\(path): not a machine file: \(error)")
        }
        return try file.devices(relativeTo: (path as NSString).deletingLastPathComponent)
    }

    /// Builds the functions. Template functions with the same template and parameters are
    /// cloned from one instance, so their config arrays share storage until written.
    public func devices(relativeTo directory: String = ".") throws(LoadError) -> [EmulatedDevice] {
        let result = try buildDevices(relativeTo: directory)
        // Faults apply to the function at the entry's address.
        for entry in devices {
            guard let faults = entry.faults, let text = entry.address, let address = PCIAddress(kernelName: text),
                  let device = result.first(where: { $0.address == address }) else { continue }
            device.faults = faults
        }
        return result
    }

    private func buildDevices(relativeTo directory: String) throws(LoadError) -> [EmulatedDevice] {
        var result: [EmulatedDevice] = []
        var prototypes: [String: EmulatedDevice] = [:]
        for (index, entry) in devices.enumerated() {
            if let dump = entry.lspciDump {
                let path = dump.hasPrefix("/") ? dump : directory + "/" + dump
                do { result += try DeviceImporter.importDump(path: path) } catch {
                    throw .invalid(entry: index, reason: "\(dump): \(error)")
                }
                continue
            }
            guard let text = entry.address, let address = PCIAddress(kernelName: text) else {
                throw .invalid(entry: index, reason: "needs an address like 0000:03:00.0")
            }
            if let template = entry.template {
                let key = "\(template)/\(entry.secondaryBus ?? -1)/\(entry.subordinateBus ?? -1)/\(address.function)"
                if let prototype = prototypes[key] {
                    result.append(prototype.clone(at: address, irq: entry.irq ?? prototype.irq, bootDriver: entry.driver ?? prototype.bootDriver))
                    continue
                }
                guard let device = try Self.build(template: template, entry: entry, at: address, index: index) else {
                    throw .invalid(entry: index, reason: "unknown template '\(template)'")
                }
                prototypes[key] = device
                result.append(device)
                continue
            }
            guard let configText = entry.config, let bytes = Self.bytes(fromHex: configText),
                  bytes.count == 256 || bytes.count == 4096
            else { throw .invalid(entry: index, reason: "needs a template, an lspciDump, or config hex of 256 or 4096 bytes") }
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
                    return CapturedBAR(index: bar.index, base: bar.address, size: bar.size, kind: kind)
                }
                let function = CapturedFunction(address: address, config: bytes, bars: (entry.bars ?? []).compactMap(captured),
                                                iovBARs: (entry.iovBars ?? []).compactMap(captured), irq: entry.irq,
                                                driver: entry.driver)
                result.append(DeviceImporter.device(from: function))
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
            for bar in entry.bars ?? [] {
                guard bar.index >= 0, bar.index < 7, bar.size > 0, bar.size & (bar.size - 1) == 0 else {
                    throw .invalid(entry: index, reason: "BAR \(bar.index): index 0...6 and a power-of-two size")
                }
                bars[bar.index] = BARDescriptor(kind: bar.kind, size: bar.size, address: bar.address)
            }
            let reset = entry.resetImage.flatMap(Self.bytes(fromHex:)).flatMap { $0.count == bytes.count ? $0 : nil }
            result.append(EmulatedDevice(address: address, config: config, resetImage: reset, bars: bars,
                                         irq: entry.irq ?? 0, bootDriver: entry.driver))
        }
        return result
    }

    private static func build(template: String, entry: Entry, at address: PCIAddress, index: Int) throws(LoadError) -> EmulatedDevice? {
        var device: EmulatedDevice
        switch template {
        case "host-bridge": device = BuiltinMachine.hostBridge(at: address)
        case "root-port":
            guard let secondary = entry.secondaryBus, secondary > Int(address.bus), secondary <= 0xff else {
                throw .invalid(entry: index, reason: "a root port needs secondaryBus above its own bus")
            }
            let subordinate = entry.subordinateBus ?? secondary
            guard subordinate >= secondary, subordinate <= 0xff else {
                throw .invalid(entry: index, reason: "subordinateBus must be secondaryBus...255")
            }
            device = BuiltinMachine.rootPort(at: address, secondaryBus: UInt8(secondary), subordinateBus: UInt8(subordinate),
                                             memory: (0xe000_0000, 0xefff_ffff), io: nil, irq: entry.irq ?? 0)
        case "nic-82576":
            device = BuiltinMachine.nic82576(at: address, irq: entry.irq ?? 0, memoryBase: 0xf000_0000, ioBase: 0x1000,
                                             msixBase: 0xf100_0000)
        case "nvme": device = BuiltinMachine.nvme(at: address, irq: entry.irq)
        case "xhci": device = BuiltinMachine.xhci(at: address, irq: entry.irq)
        case "vga": device = BuiltinMachine.vga(at: address, irq: entry.irq)
        case "rtl8139": device = BuiltinMachine.conventionalNIC(at: address, irq: entry.irq)
        default: return nil
        }
        if let driver = entry.driver { device.bootDriver = driver }
        return device
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
            return BAR(index: captured.index, kind: kind, size: captured.size, address: captured.base)
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
