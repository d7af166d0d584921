/// A file given to `pcibackfsd check`: a machine file (a JSON object) or an lspci dump
/// (anything else), told apart by content.
public enum InputFile {
    public enum Kind: Sendable, Equatable {
        case machineFile
        case lspciDump
    }

    /// A JSON object (the first non-blank byte is `{`) is a machine file; anything else a dump.
    public static func kind(of bytes: [UInt8]) -> Kind {
        let first = bytes.first { ![UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r")].contains($0) }
        return first == UInt8(ascii: "{") ? .machineFile : .lspciDump
    }

    /// The functions the file would create, with the VFs of its imported PFs
    /// (`SnapshotSRIOV`). Errors name the file; warnings are appended to `warnings`, each
    /// prefixed with the file name.
    public static func load(path: String, warnings: inout [String]) throws(MachineFile.LoadError) -> [EmulatedDevice] {
        let devices = try loadFunctions(path: path, warnings: &warnings)
        do { return try SnapshotSRIOV.placeVirtualFunctions(devices) } catch {
            throw MachineFile.LoadError(file: path, problems: [.init(message: error.message)])
        }
    }

    private static func loadFunctions(path: String, warnings: inout [String]) throws(MachineFile.LoadError) -> [EmulatedDevice] {
        let bytes: [UInt8]
        do { bytes = try CaptureFiles.readWholeFile(path, limit: 256 << 20) } catch {
            throw MachineFile.LoadError(file: path, problems: [.init(message: error.message(about: path))])
        }
        switch kind(of: bytes) {
        case .machineFile:
            return try MachineFile.load(path: path, warnings: &warnings)
        case .lspciDump:
            var found: [String] = []
            defer { warnings += found.map { path + ": " + $0 } }
            do { return try DeviceImporter.importDump(path: path, warnings: &found) } catch {
                throw MachineFile.LoadError(file: path, problems: [.init(message: error.message(about: path))])
            }
        }
    }
}

extension EmulatedDevice {
    /// One line for `pcibackfsd check`: address, vendor:device, class, config size, boot
    /// driver and armed faults, e.g.
    /// `0000:03:00.0 8086:10c9 class 020000 config 4096 driver igb faults resetFails=once`.
    public var summaryLine: String {
        let faults = self.faults.armedDescriptions
        return "\(address) \(hex(identity.vendor, width: 4)):\(hex(identity.device, width: 4)) "
            + "class \(hex(identity.classCode, width: 6)) config \(configSize) driver \(bootDriver ?? "-") "
            + "faults \(faults.isEmpty ? "-" : faults.joined(separator: ","))"
    }
}
