#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

// `pcibackfsd --state FILE`: the machine survives the daemon.
//
// The emulation is deterministic given the same start options, so the state is kept as the
// start options (the journal's header) plus every acknowledged mutating access, in order (the
// journal's records): each attribute store (path, input bytes, caller, outcome), each `config`
// write (device, view, offset, bytes) and each config read that changes state (frontend reads,
// which leave a trace verdict, and dom0 reads that consume a one-shot read fault). A record is
// written with one write(2) while the tree's lock is still held, so the file's order is the
// order the operations took effect, and before the FUSE reply goes out; `--fsync` adds an
// fdatasync after the lock is dropped (a group commit: one sync covers every record written
// before it). On start the records are replayed through the same SysfsTree methods the FUSE
// requests use.
//
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

    public init(profile: String, machine: String?, lspciDumps: [String], noBuiltin: Bool, hide: String, permissive: Bool,
                passthrough: Bool, legacyModes: Bool) {
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
    }

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

// MARK: - Records

/// One acknowledged mutating access.
public enum JournalRecord: Equatable, Sendable {
    /// An attribute store: the attribute's path in the tree, the bytes the store got (after the
    /// page clip), the caller, and the errno it returned (0: success). Failed stores are kept
    /// too: some change state before failing (a bind whose reset fails leaves the slot in the
    /// seize list and consumes a one-shot fault; refusals log kernel messages).
    case store(path: String, input: [UInt8], uid: UInt32, gid: UInt32, result: Int32)
    /// A write to a `config` file: dom0's view (frontend nil) or a frontend's.
    case configWrite(address: PCIAddress, frontend: UInt32?, offset: Int, bytes: [UInt8])
    /// A read of a `config` file that changed state (frontend reads append trace verdicts; a
    /// dom0 read may consume a one-shot config-read fault).
    case configRead(address: PCIAddress, frontend: UInt32?, offset: Int, size: Int, uid: UInt32, gid: UInt32)
}

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

// MARK: - Attribute paths

extension AttributeKind {
    /// Where the attribute is in the tree, as a client would name it (device attributes through
    /// the `bus/pci/devices/<BDF>` links). nil for attributes whose stores never change anything.
    var journalPath: String? {
        switch self {
        case .device(let address, let attribute): return "bus/pci/devices/\(address)/\(attribute.rawValue)"
        case .frontendDevice: return nil
        case .driver(let driver, let attribute): return "bus/pci/drivers/\(driver)/\(attribute.rawValue)"
        case .bus(let attribute): return "bus/pci/\(attribute.rawValue)"
        case .moduleParameter(let parameter): return "module/xen_pciback/parameters/\(parameter.rawValue)"
        case .control(let control): return "fs/pcibackfs/\(control.rawValue)"
        case .pciOperation(let domain): return "fs/pcibackfs/frontends/\(domain)/pci_op"
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

// MARK: - The journal

/// The open state of a daemon: the journal file it appends to, and the snapshot that the
/// journal continues (after a compaction). Records are appended while the tree's lock is held
/// (the tree calls `append` from inside its critical sections); `commit` runs after the lock
/// is dropped and, with `--fsync`, makes them durable before the reply. When the journal has
/// grown past `compactionBytes`, `append` starts a compaction on its own thread.
///
/// Files: FILE (the journal), FILE.snapshot (the state after the first `base` records, when a
/// compaction happened), FILE.next (a journal being started by a compaction; after a crash
/// mid-compaction it continues FILE), FILE.snapshot.tmp (a snapshot being written) and
/// FILE.lock (one daemon per state file).
public final class StateJournal: Sendable {
    public let path: String
    public let options: StateOptions
    public let syncsEachRecord: Bool
    /// A compaction starts when the journal holds this many bytes of records.
    public let compactionBytes: Int
    /// `PCIBACKFS_STATE_COMPACT_BYTES` overrides it (tests, the crash test).
    public static let defaultCompactionBytes = 256 << 10

    var snapshotPath: String { path + ".snapshot" }
    var nextPath: String { path + ".next" }

    private struct Appender {
        var descriptor: Int32
        /// Bytes in the current file (records end here).
        var length: Int
        /// Where the current file's header ends.
        var headerLength: Int
        /// Records in the whole history (the snapshot's, then every journal's), replayed included.
        var records: UInt64
        /// Bytes of records written by this process across files (the --fsync watermark).
        var total: Int = 0
        /// While a compaction runs: the journal it replaced, kept open (and synced by commit)
        /// until the snapshot that holds its records is durable.
        var previous: Int32?
        var previousEnd = 0
        /// Off while the start-up replay runs: replayed operations are already in the files.
        var recording = false
        /// A compaction thread was started and has not taken its snapshot yet.
        var compactionScheduled = false
        var compacting = false
        /// A compaction failed: the files still chain correctly, so appending goes on, but no
        /// further compaction is attempted (it would start FILE.next afresh).
        var compactionFailed = false
        /// A write failed: the file is a consistent prefix, and stays one (every later mutating
        /// access is refused with EIO instead of being recorded after a gap).
        var failed = false
    }

    private let appender: Locked<Appender>
    /// The --fsync watermark (in `Appender.total` bytes).
    private let durable: Locked<Int>
    private let lockDescriptor: Int32
    /// What the files held at open, waiting for `restore`.
    private let pending: Locked<Pending?>
    /// The tree it was restored into (weak: the tree holds the journal).
    private let tree = Locked(TreeReference())

    private struct TreeReference {
        weak var tree: SysfsTree?
    }

    private struct Pending {
        var snapshot: StateSnapshot?
        var records: [JournalRecord]
        var droppedBytes: Int
        var dropReason: String?
        /// The files do not have the settled form (a compaction was interrupted): compact
        /// right after the replay.
        var settle: Bool
        /// Seconds spent reading and decoding the files.
        var readSeconds = 0.0
    }

    public struct OpenError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Opens (or creates) the state file for a machine built from `options`. An existing state
    /// must have been written for the same options: a mismatch is an error naming every
    /// difference (the state belongs to that machine; start with its options or remove it).
    public init(path: String, options: StateOptions, fsync: Bool, compactionBytes: Int? = nil) throws(OpenError) {
        self.path = path
        self.options = options
        syncsEachRecord = fsync
        self.compactionBytes = compactionBytes
            ?? ProcessInfo.processInfo.environment["PCIBACKFS_STATE_COMPACT_BYTES"].flatMap(Int.init)
            ?? StateJournal.defaultCompactionBytes
        // One daemon per state file. A killed predecessor's lock goes with its descriptors;
        // give one that is still exiting a moment.
        lockDescriptor = Glibc.open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockDescriptor >= 0 else { throw OpenError(description: "cannot open \(path).lock: \(Errno(errno))") }
        var locked = false
        for _ in 0..<100 {
            if flock(lockDescriptor, LOCK_EX | LOCK_NB) == 0 {
                locked = true
                break
            }
            usleep(10_000)
        }
        let lockDescriptor = self.lockDescriptor
        guard locked else {
            close(lockDescriptor)
            throw OpenError(description: "another pcibackfsd holds it (flock on \(path).lock)")
        }
        do {
            let started = DispatchTime.now().uptimeNanoseconds
            var (appender, pending) = try StateJournal.load(path: path, options: options)
            pending.readSeconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            self.appender = Locked(appender)
            self.pending = Locked(pending)
        } catch {
            close(lockDescriptor)
            throw error
        }
        durable = Locked(0)
    }

    deinit {
        appender.withLock { appender in
            close(appender.descriptor)
            if let previous = appender.previous { close(previous) }
        }
        close(lockDescriptor)
    }

    /// Reads the snapshot and the journals, checks they belong to `options` and chain without
    /// a gap, cuts a torn tail, and opens the file to append to.
    private static func load(path: String, options: StateOptions) throws(OpenError) -> (Appender, Pending) {
        let snapshot: StateSnapshot?
        do { snapshot = try StateSnapshot.read(path + ".snapshot") } catch {
            throw OpenError(description: "\(error)")
        }
        if let snapshot {
            let differences = snapshot.options.differences(from: options)
            guard differences.isEmpty else { throw mismatch(differences, snapshot.options) }
        }
        struct Segment {
            var path: String
            var descriptor: Int32
            var contents: JournalFile.Contents
            var base: UInt64 { contents.header?.base ?? 0 }
            var end: UInt64 { base + UInt64(contents.records.count) }
        }
        var segments: [Segment] = []
        func closeAll() { for segment in segments { close(segment.descriptor) } }
        for candidate in [path, path + ".next"] {
            let flags = candidate == path ? O_RDWR | O_CREAT | O_CLOEXEC : O_RDWR | O_CLOEXEC
            let descriptor = Glibc.open(candidate, flags, 0o600)
            if descriptor < 0 {
                if errno == ENOENT { continue }
                let error = Errno(errno)
                closeAll()
                throw OpenError(description: "cannot open \(candidate): \(error)")
            }
            do {
                let contents = try JournalFile.decode(try readAll(descriptor))
                if let header = contents.header {
                    let differences = header.options.differences(from: options)
                    guard differences.isEmpty else { throw mismatch(differences, header.options) }
                }
                segments.append(Segment(path: candidate, descriptor: descriptor, contents: contents))
            } catch let error as OpenError {
                close(descriptor)
                closeAll()
                throw error
            } catch {
                close(descriptor)
                closeAll()
                throw OpenError(description: "\(candidate): \(error)")
            }
        }
        // Replay from the snapshot on, through each journal that goes past it.
        var position = snapshot?.sequence ?? 0
        var records: [JournalRecord] = []
        var settle = segments.count > 1
        var dropped = 0
        var reason: String?
        for segment in segments.sorted(by: { $0.base < $1.base }) where segment.contents.header != nil {
            dropped += segment.contents.droppedBytes
            reason = segment.contents.dropReason ?? reason
            if segment.end <= position { continue }
            guard segment.base <= position else {
                closeAll()
                throw OpenError(description: "\(segment.path) starts after record \(segment.base), but the snapshot and the "
                                + "journals before it hold only \(position) records")
            }
            records += segment.contents.records[Int(position - segment.base)...]
            position = segment.end
        }
        // Append to FILE: cut a torn tail, or start it when it is new (or only a torn header).
        // FILE.next, or a FILE that does not continue the snapshot, means a compaction was
        // interrupted: the files are settled after the replay, before anything is appended.
        let snapshotSequence = snapshot?.sequence ?? 0
        let active = segments.first { $0.path == path }!
        for segment in segments where segment.path != path { close(segment.descriptor) }
        if let header = active.contents.header, header.base != snapshotSequence { settle = true }
        var headerLength = active.contents.validLength
        var length = active.contents.validLength
        if !settle, active.contents.header != nil {
            headerLength = active.contents.headerLength
            if active.contents.droppedBytes > 0, ftruncate(active.descriptor, off_t(active.contents.validLength)) != 0 {
                close(active.descriptor)
                throw OpenError(description: "cannot cut the torn tail of \(path): \(Errno(errno))")
            }
        } else if !settle {
            let start = JournalFile.start(JournalHeader(version: PCIBackFSVersion.string, base: position, options: options))
            guard ftruncate(active.descriptor, 0) == 0, (try? writeAll(active.descriptor, start, at: 0)) != nil,
                  fdatasync(active.descriptor) == 0
            else {
                close(active.descriptor)
                throw OpenError(description: "cannot write the header of \(path): \(Errno(errno))")
            }
            syncDirectory(of: path)
            headerLength = start.count
            length = start.count
        }
        let appender = Appender(descriptor: active.descriptor, length: length, headerLength: headerLength, records: position)
        return (appender, Pending(snapshot: snapshot, records: records, droppedBytes: dropped, dropReason: reason,
                                  settle: settle))
    }

    private static func mismatch(_ differences: [String], _ theirs: StateOptions) -> OpenError {
        OpenError(description: """
            it holds the state of another machine:
              \(differences.joined(separator: "\n  "))
            Start with the options it was written with (\(theirs.commandLine)),
            or remove the file (and its .snapshot) to start afresh.
            """)
    }

    /// What `restore` did.
    public struct RestoreReport: Sendable, CustomStringConvertible {
        /// The snapshot's records (0 without one).
        public var snapshotRecords: UInt64
        public var records: Int
        public var droppedBytes: Int
        public var dropReason: String?
        /// Replayed stores whose errno differed from the recorded one (the emulation changed).
        public var divergences: [String]
        public var seconds: Double
        /// Reading and decoding the files (before `restore`).
        public var readSeconds: Double = 0
        public var error: String?

        public var description: String {
            var text = "read the state in \(String(format: "%.3f", readSeconds)) s, "
            if snapshotRecords > 0 { text += "restored a snapshot of \(snapshotRecords) records, " }
            text += "replayed \(records) records in \(String(format: "%.3f", seconds)) s"
            if droppedBytes > 0 { text += "; dropped a torn tail of \(droppedBytes) bytes (\(dropReason ?? "?"))" }
            if !divergences.isEmpty {
                text += "; \(divergences.count) replayed stores ended differently, first: \(divergences[0])"
            }
            if let error { text += "; \(error)" }
            return text
        }
    }

    /// Restores the snapshot and replays the journals into `tree` (built from the same options,
    /// with this journal), then starts recording. Call once, before serving. Throws when the
    /// snapshot does not fit the machine.
    @discardableResult
    public func restore(into tree: SysfsTree) throws(OpenError) -> RestoreReport {
        let started = DispatchTime.now().uptimeNanoseconds
        let pending = self.pending.withLock { pending in
            defer { pending = nil }
            return pending
        }
        self.tree.withLock { $0.tree = tree }
        var report = RestoreReport(snapshotRecords: pending?.snapshot?.sequence ?? 0, records: 0,
                                   droppedBytes: pending?.droppedBytes ?? 0, dropReason: pending?.dropReason, divergences: [],
                                   seconds: 0, readSeconds: pending?.readSeconds ?? 0)
        if let snapshot = pending?.snapshot {
            do {
                try tree.state.withLock { state throws(StateSnapshot.RestoreError) in try snapshot.restore(into: &state) }
            } catch {
                throw OpenError(description: "\(snapshotPath): \(error)")
            }
        }
        if let records = pending?.records {
            report.divergences = tree.replay(records)
            report.records = records.count
        }
        if pending?.settle == true {
            // A compaction was interrupted: finish the job now, before serving.
            do { try settle() } catch { throw OpenError(description: "settling the state files failed: \(error)") }
            report.error = "settled the state files (a compaction had been interrupted)"
        }
        appender.withLock { $0.recording = true }
        report.seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        return report
    }

    /// Records in the whole history (snapshot included).
    public var recordCount: Int { Int(appender.withLock { $0.records }) }

    /// The current journal file's length in bytes.
    public var length: Int { appender.withLock { $0.length } }

    /// Whether a compaction is under way (its snapshot not yet durable).
    public var isCompacting: Bool { appender.withLock { $0.compacting || $0.compactionScheduled } }

    // MARK: Appending (called with the tree's lock held)

    func append(_ record: JournalRecord) throws(Errno) {
        let compactionDue = try appender.withLock { appender throws(Errno) -> Bool in
            guard appender.recording else { return false }
            guard !appender.failed else { throw .ioError }
            let frame = JournalFile.frame(record.payload)
            do {
                try StateJournal.writeAll(appender.descriptor, frame, at: appender.length)
            } catch {
                // Cut a partial frame so the file stays a consistent prefix.
                _ = ftruncate(appender.descriptor, off_t(appender.length))
                appender.failed = true
                FileHandle.standardError.write(Data("pcibackfsd: --state \(path): write failed (\(error)); every further change is refused with EIO\n".utf8))
                throw .ioError
            }
            appender.length += frame.count
            appender.total += frame.count
            appender.records += 1
            guard !appender.compacting, !appender.compactionScheduled, !appender.compactionFailed,
                  appender.length - appender.headerLength >= compactionBytes
            else { return false }
            appender.compactionScheduled = true
            return true
        }
        // The compaction needs the tree's lock, which this caller holds: it runs on its own
        // thread, taking its snapshot as soon as the lock is free.
        if compactionDue { Thread.detachNewThread { [self] in _ = compact(synchronously: true) } }
    }

    /// Whether a config read of `device` must be journaled: every frontend read (its verdict
    /// goes to the trace) and a dom0 read while a one-shot read fault waits.
    func journalsRead(of device: EmulatedDevice, frontend: UInt32?) -> Bool {
        frontend != nil || device.faults.configReadFails == .once
    }

    /// Runs an attribute store and records it with its outcome.
    static func recordingStore(
        _ journal: StateJournal?, _ kind: AttributeKind, input: [UInt8], caller: Caller, _ body: () throws(Errno) -> Void
    ) throws(Errno) {
        guard let journal, let path = kind.journalPath else { return try body() }
        do {
            try body()
        } catch {
            try journal.append(.store(path: path, input: input, uid: caller.uid, gid: caller.gid, result: error.rawValue))
            throw error
        }
        try journal.append(.store(path: path, input: input, uid: caller.uid, gid: caller.gid, result: 0))
    }

    /// After the tree's lock is dropped, before the reply: with `--fsync`, every record written
    /// so far reaches stable storage (one fdatasync covers concurrent writers' records).
    func commit() {
        guard syncsEachRecord else { return }
        let target = appender.withLock { $0.total }
        durable.withLock { durable in
            guard durable < target else { return }
            let (descriptor, previous, previousEnd, end) = appender.withLock {
                ($0.descriptor, $0.previous, $0.previousEnd, $0.total)
            }
            if let previous, durable < previousEnd { _ = fdatasync(previous) }
            if fdatasync(descriptor) == 0 { durable = end }
        }
    }

    // MARK: Compaction

    /// Replaces the records so far by a snapshot. Under the tree's lock (briefly): capture the
    /// state as values, start FILE.next (its header says which record it continues from) and
    /// append there from now on. Then, without the lock (on a background thread unless
    /// `synchronously`): encode the snapshot, write FILE.snapshot.tmp, fsync, rename it over
    /// FILE.snapshot, fsync FILE.next, rename it over FILE, fsync the directory. A crash at any
    /// point leaves files that chain: the old snapshot + FILE + FILE.next, or the new snapshot
    /// + FILE.next (FILE superseded), or the settled form. Returns an error message (or nil).
    @discardableResult
    func compact(synchronously: Bool) -> String? {
        guard let tree = tree.withLock({ $0.tree }) else { return "no tree" }
        let started: (StateSnapshot, Int32)? = tree.state.withLock { state -> (StateSnapshot, Int32)? in
            appender.withLock { appender -> (StateSnapshot, Int32)? in
                appender.compactionScheduled = false
                guard !appender.compacting, !appender.failed else { return nil }
                let snapshot = StateSnapshot(state: state, sequence: appender.records, options: options)
                let start = JournalFile.start(JournalHeader(version: PCIBackFSVersion.string, base: appender.records, options: options))
                let descriptor = Glibc.open(nextPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
                guard descriptor >= 0, (try? StateJournal.writeAll(descriptor, start, at: 0)) != nil else {
                    if descriptor >= 0 { close(descriptor) }
                    appender.compactionFailed = true
                    return nil
                }
                appender.previous = appender.descriptor
                appender.previousEnd = appender.total
                appender.descriptor = descriptor
                appender.length = start.count
                appender.headerLength = start.count
                appender.compacting = true
                return (snapshot, descriptor)
            }
        }
        guard let (snapshot, descriptor) = started else { return "could not start \(nextPath)" }
        let finish: @Sendable () -> String? = { [self] in
            var failure: String?
            do {
                try writeSnapshot(snapshot)
                guard fdatasync(descriptor) == 0, rename(nextPath, path) == 0 else { throw Errno(errno) }
                StateJournal.syncDirectory(of: path)
            } catch {
                failure = "\(error)"
                FileHandle.standardError.write(Data("pcibackfsd: --state \(path): compaction failed (\(error)); the journal keeps growing\n".utf8))
            }
            // The old journal's records are in the durable snapshot now (or, after a failure,
            // still chained before FILE.next): let its descriptor go.
            durable.withLock { _ in
                appender.withLock { appender in
                    if let previous = appender.previous { close(previous) }
                    appender.previous = nil
                    appender.compacting = false
                    if failure != nil { appender.compactionFailed = true }
                }
            }
            return failure
        }
        if synchronously { return finish() }
        Thread.detachNewThread { _ = finish() }
        return nil
    }

    /// FILE.snapshot.tmp, fsync, renamed over FILE.snapshot, directory synced.
    private func writeSnapshot(_ snapshot: StateSnapshot) throws {
        let bytes = try snapshot.fileBytes()
        let temporary = snapshotPath + ".tmp"
        let file = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw Errno(errno) }
        defer { close(file) }
        try StateJournal.writeAll(file, bytes, at: 0)
        guard fsync(file) == 0, rename(temporary, snapshotPath) == 0 else { throw Errno(errno) }
        StateJournal.syncDirectory(of: path)
    }

    /// After the replay of files left by an interrupted compaction (before recording starts):
    /// a snapshot of everything first, then a fresh FILE continuing it (FILE.next renamed over
    /// FILE). A crash in between leaves a snapshot that supersedes both journals.
    private func settle() throws {
        guard let tree = tree.withLock({ $0.tree }) else { return }
        let (snapshot, records) = tree.state.withLock { state in
            appender.withLock { (StateSnapshot(state: state, sequence: $0.records, options: options), $0.records) }
        }
        try writeSnapshot(snapshot)
        let start = JournalFile.start(JournalHeader(version: PCIBackFSVersion.string, base: records, options: options))
        let descriptor = Glibc.open(nextPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw Errno(errno) }
        do {
            try StateJournal.writeAll(descriptor, start, at: 0)
            guard fdatasync(descriptor) == 0, rename(nextPath, path) == 0 else { throw Errno(errno) }
        } catch {
            close(descriptor)
            throw error
        }
        StateJournal.syncDirectory(of: path)
        appender.withLock { appender in
            close(appender.descriptor)
            appender.descriptor = descriptor
            appender.length = start.count
            appender.headerLength = start.count
        }
    }

    // MARK: I/O helpers

    static func readAll(_ descriptor: Int32) throws(Errno) -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, offset) }
            if count < 0 {
                if errno == EINTR { continue }
                throw Errno(errno)
            }
            if count == 0 { return result }
            result += buffer[0..<count]
            offset += off_t(count)
        }
    }

    static func writeAll(_ descriptor: Int32, _ bytes: [UInt8], at offset: Int) throws(Errno) {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                pwrite(descriptor, buffer.baseAddress! + written, buffer.count - written, off_t(offset + written))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw Errno(errno)
            }
            written += count
        }
    }

    static func syncDirectory(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let descriptor = Glibc.open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = fsync(descriptor)
        close(descriptor)
    }
}

// MARK: - Replay

extension SysfsTree {
    /// Applies journal records through the methods FUSE requests use. Returns a description of
    /// every replayed store whose outcome differs from the recorded one.
    func replay(_ records: [JournalRecord]) -> [String] {
        var divergences: [String] = []
        for record in records {
            switch record {
            case .store(let path, let input, let uid, let gid, let result):
                guard let kind = AttributeKind(journalPath: path) else {
                    divergences.append("\(path): not an attribute")
                    continue
                }
                let attribute = Attribute(kind: kind, mode: 0o200)
                let handle = Handle(node: .attribute(attribute), caller: Caller(uid: uid, gid: gid, pid: 0), canRead: false,
                                    canWrite: true)
                var outcome: Int32 = 0
                do { _ = try store(attribute, input: input, handle: handle) } catch { outcome = error.rawValue }
                if outcome != result {
                    divergences.append("\(path) <- \(String(decoding: input.prefix(64), as: UTF8.self).debugDescription): "
                                       + "errno \(outcome), recorded \(result)")
                }
            case .configWrite(let address, let frontend, let offset, let bytes):
                _ = try? bytes.withUnsafeBytes { buffer in
                    try writeConfig(address, frontend: frontend, offset: offset, data: buffer)
                }
            case .configRead(let address, let frontend, let offset, let size, let uid, let gid):
                let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(0, min(size, 4096)), alignment: 1)
                defer { scratch.deallocate() }
                _ = try? readConfig(address, frontend: frontend, caller: Caller(uid: uid, gid: gid, pid: 0), offset: offset,
                                    into: scratch)
            }
        }
        // The verdicts regenerated here were logged by the daemon that made them.
        state.withLock { $0.traceLogged = $0.dom0.trace.nextSequence - 1 }
        return divergences
    }
}
