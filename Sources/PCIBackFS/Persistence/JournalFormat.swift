import Foundation

// File layout: the magic "PCIBKJ01", then frames `[u32 length][u32 CRC-32 of payload][payload]`
// (little-endian). The first frame is the header (JSON start options); every later frame is one
// record. A frame that is incomplete, fails its checksum or does not decode ends the journal:
// it and everything after it are dropped (and cut off the file before appending resumes).

// MARK: - CRC-32

/// CRC-32 as zlib and Ethernet compute it (reflected polynomial 0xEDB88320).
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? 0xedb8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    public static func checksum<Bytes: Sequence>(_ bytes: Bytes, continuing previous: UInt32 = 0) -> UInt32
    where Bytes.Element == UInt8 {
        var crc = ~previous
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        }
        return ~crc
    }
}

// MARK: - Start options (the header)

/// The start options that determine the machine. A journal replays only onto a machine built
/// from the same ones; files are compared by content (CRC-32) as well as by name.
public struct StateOptions: Codable, Equatable, Sendable {
    public var profile: String
    public var machine: String?
    public var machineChecksum: UInt32?
    public var lspciDumps: [String]
    public var lspciDumpChecksums: [UInt32]
    public var noBuiltin: Bool
    public var hide: String
    public var permissive: Bool
    public var passthrough: Bool
    public var legacyModes: Bool
    /// `--pciback-build`; absent from headers written before the option existed, which were
    /// all `module` (the tree then showed module/xen_pciback with parameters only).
    public var pcibackBuild: String?
    /// `--dom0`; absent from headers written before the option existed, which were all `pv`.
    public var dom0: String?

    public init(profile: String, machine: String?, lspciDumps: [String], noBuiltin: Bool, hide: String, permissive: Bool,
                passthrough: Bool, legacyModes: Bool, pcibackBuild: String = ModuleBuild.module.rawValue,
                dom0: String = Dom0Kind.pv.rawValue) {
        self.profile = profile
        self.machine = machine
        self.machineChecksum = machine.flatMap(StateOptions.fileChecksum)
        self.lspciDumps = lspciDumps
        self.lspciDumpChecksums = lspciDumps.map { StateOptions.fileChecksum($0) ?? 0 }
        self.noBuiltin = noBuiltin
        self.hide = hide
        self.permissive = permissive
        self.passthrough = passthrough
        self.legacyModes = legacyModes
        self.pcibackBuild = pcibackBuild
        self.dom0 = dom0
    }

    private var build: String { pcibackBuild ?? ModuleBuild.module.rawValue }
    private var dom0Kind: String { dom0 ?? Dom0Kind.pv.rawValue }

    static func fileChecksum(_ path: String) -> UInt32? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return CRC32.checksum(data)
    }

    /// The options as command-line words, for messages.
    var commandLine: String {
        var words = ["--profile \(profile)"]
        if let machine { words.append("--machine \(machine)") }
        words += lspciDumps.map { "--lspci-dump \($0)" }
        if noBuiltin { words.append("--no-builtin") }
        if !hide.isEmpty { words.append("--hide '\(hide)'") }
        if permissive { words.append("--permissive") }
        if passthrough { words.append("--passthrough") }
        if legacyModes { words.append("--legacy-modes") }
        words.append("--pciback-build \(build)")
        words.append("--dom0 \(dom0Kind)")
        return words.joined(separator: " ")
    }

    /// What differs from `other` (the options this start was given), one phrase per option.
    func differences(from other: StateOptions) -> [String] {
        var result: [String] = []
        func compare<T: Equatable>(_ name: String, _ mine: T, _ theirs: T, _ show: (T) -> String) {
            if mine != theirs { result.append("\(name): the state has \(show(mine)), this start has \(show(theirs))") }
        }
        compare("--profile", profile, other.profile) { $0 }
        compare("--machine", machine, other.machine) { $0 ?? "(none)" }
        if machine == other.machine, machineChecksum != other.machineChecksum {
            result.append("--machine: the content of \(machine ?? "") changed since the state was written")
        }
        compare("--lspci-dump", lspciDumps, other.lspciDumps) { $0.isEmpty ? "(none)" : $0.joined(separator: ", ") }
        if lspciDumps == other.lspciDumps, lspciDumpChecksums != other.lspciDumpChecksums {
            result.append("--lspci-dump: the content of a dump changed since the state was written")
        }
        compare("--no-builtin", noBuiltin, other.noBuiltin) { $0 ? "on" : "off" }
        compare("--hide", hide, other.hide) { "\"\($0)\"" }
        compare("--permissive", permissive, other.permissive) { $0 ? "on" : "off" }
        compare("--passthrough", passthrough, other.passthrough) { $0 ? "on" : "off" }
        compare("--legacy-modes", legacyModes, other.legacyModes) { $0 ? "on" : "off" }
        compare("--pciback-build", build, other.build) { $0 }
        compare("--dom0", dom0Kind, other.dom0Kind) { $0 }
        return result
    }
}

/// The first frame of a journal file.
struct JournalHeader: Codable, Equatable {
    var format = 1
    /// The daemon that created the file (informational: replay checks outcomes, not versions).
    var version: String
    /// How many records precede this file's first one (those a snapshot holds); 0 without one.
    var base: UInt64
    var options: StateOptions
}

// MARK: - Little-endian fields (records, frames, the snapshot's packed trace)

enum JournalFormatError: Error, Equatable {
    case truncated
    case badKind(UInt8)
    case badText
}

/// Little-endian encoding of the record fields.
struct JournalEncoder {
    var bytes: [UInt8] = []
    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { for shift in stride(from: 0, to: 16, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt16(shift))) } }
    mutating func u32(_ value: UInt32) { for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) } }
    mutating func u64(_ value: UInt64) { for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) } }
    mutating func address(_ value: PCIAddress) {
        u32(value.domain)
        u8(value.bus)
        u8(value.slot)
        u8(value.function)
    }
    mutating func frontend(_ value: UInt32?) {
        u8(value == nil ? 0 : 1)
        u32(value ?? 0)
    }
}

struct JournalDecoder {
    let bytes: [UInt8]
    var position: Int
    let end: Int

    init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        position = start
        self.end = end ?? bytes.count
    }

    mutating func u8() throws(JournalFormatError) -> UInt8 {
        guard position < end else { throw .truncated }
        defer { position += 1 }
        return bytes[position]
    }
    mutating func u16() throws(JournalFormatError) -> UInt16 {
        UInt16(try u8()) | UInt16(try u8()) << 8
    }
    mutating func u32() throws(JournalFormatError) -> UInt32 {
        UInt32(try u16()) | UInt32(try u16()) << 16
    }
    mutating func u64() throws(JournalFormatError) -> UInt64 {
        UInt64(try u32()) | UInt64(try u32()) << 32
    }
    mutating func raw(_ count: Int) throws(JournalFormatError) -> [UInt8] {
        guard count >= 0, end - position >= count else { throw .truncated }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }
    mutating func rest() -> [UInt8] {
        defer { position = end }
        return Array(bytes[position..<end])
    }
    mutating func address() throws(JournalFormatError) -> PCIAddress {
        let domain = try u32()
        let bus = try u8()
        let slot = try u8()
        let function = try u8()
        guard slot < 32, function < 8 else { throw .badText }
        return PCIAddress(domain: domain, bus: bus, slot: slot, function: function)
    }
    mutating func frontend() throws(JournalFormatError) -> UInt32? {
        let present = try u8()
        let value = try u32()
        return present != 0 ? value : nil
    }
}

// MARK: - The file format

/// Encoding and decoding of whole journal files (pure: no I/O).
public enum JournalFile {
    public static let magic: [UInt8] = Array("PCIBKJ01".utf8)
    /// A frame longer than this is garbage (the largest record is a 4 KiB config write).
    static let maximumFrame = 1 << 20

    static func frame(_ payload: [UInt8]) -> [UInt8] {
        var encoder = JournalEncoder()
        encoder.u32(UInt32(payload.count))
        encoder.u32(CRC32.checksum(payload))
        encoder.bytes += payload
        return encoder.bytes
    }

    static func headerPayload(_ header: JournalHeader) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(header)) ?? Data()
        return [JournalRecord.headerKind] + Array(json)
    }

    /// A new file's bytes: magic and header.
    static func start(_ header: JournalHeader) -> [UInt8] {
        magic + frame(headerPayload(header))
    }

    /// What a file holds: its header (nil when even the header is incomplete), its intact
    /// records, and where they end; anything past `validLength` is a torn or corrupt tail.
    public struct Contents: Equatable {
        var header: JournalHeader?
        public var records: [JournalRecord]
        /// Bytes up to the end of the last intact frame.
        public var validLength: Int
        /// Bytes after it (dropped).
        public var droppedBytes: Int
        /// Why the tail was dropped (nil when there was none).
        public var dropReason: String?
        /// Where the header frame ends (0 without a header).
        var headerLength = 0
    }

    enum FileError: Error, CustomStringConvertible {
        case notAJournal
        case damagedHeader
        var description: String {
            switch self {
            case .notAJournal: return "not a pcibackfsd state file (no PCIBKJ01 magic); refusing to overwrite it"
            case .damagedHeader: return "its header is damaged (checksum); refusing to overwrite it"
            }
        }
    }

    static func decode(_ bytes: [UInt8]) throws(FileError) -> Contents {
        var contents = Contents(header: nil, records: [], validLength: 0, droppedBytes: bytes.count, dropReason: nil)
        guard bytes.count >= magic.count else {
            // A file cut inside its magic is a start that died; only a prefix of it is ours.
            guard bytes.elementsEqual(magic.prefix(bytes.count)) else { throw .notAJournal }
            contents.dropReason = bytes.isEmpty ? nil : "incomplete magic"
            return contents
        }
        guard Array(bytes[0..<magic.count]) == magic else { throw .notAJournal }
        var position = magic.count
        contents.validLength = position
        while position < bytes.count {
            guard bytes.count - position >= 8 else {
                contents.dropReason = "incomplete frame header"
                break
            }
            var lengths = JournalDecoder(bytes, from: position, to: position + 8)
            let length = Int((try? lengths.u32()) ?? 0)
            let checksum = (try? lengths.u32()) ?? 0
            guard length > 0, length <= maximumFrame else {
                contents.dropReason = "impossible frame length \(length)"
                break
            }
            guard bytes.count - position - 8 >= length else {
                contents.dropReason = "incomplete frame (\(bytes.count - position - 8) of \(length) bytes)"
                break
            }
            let start = position + 8
            guard CRC32.checksum(bytes[start..<start + length]) == checksum else {
                contents.dropReason = "checksum mismatch"
                break
            }
            if contents.header == nil {
                guard bytes[start] == JournalRecord.headerKind,
                      let header = try? JSONDecoder().decode(JournalHeader.self, from: Data(bytes[start + 1..<start + length]))
                else {
                    contents.dropReason = "undecodable header"
                    break
                }
                contents.header = header
                contents.headerLength = start + length
            } else {
                var decoder = JournalDecoder(bytes, from: start, to: start + length)
                guard let record = try? JournalRecord(payload: &decoder) else {
                    contents.dropReason = "undecodable record"
                    break
                }
                contents.records.append(record)
            }
            position = start + length
            contents.validLength = position
        }
        if contents.header == nil {
            // Only a start that died while writing its header leaves no header: the first frame
            // is incomplete. A complete but damaged header would lose records if taken as new.
            guard contents.dropReason == nil || contents.dropReason!.hasPrefix("incomplete") else { throw .damagedHeader }
            contents.validLength = 0
        }
        contents.droppedBytes = bytes.count - contents.validLength
        return contents
    }
}
