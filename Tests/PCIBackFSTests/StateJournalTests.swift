import Foundation
import Testing

@testable import PCIBackFS

#if canImport(Glibc)
import Glibc
#endif

// `--state FILE`: the journal's format (frames, checksums, torn tails), the replay (a machine
// rebuilt from the journal is the machine that wrote it, down to every register and kernel
// message), and a real daemon SIGKILLed and restarted on its stale mount point.

// MARK: - Helpers

/// A tree driven through the FileSystemModel calls FUSE makes (lookup, readlink, open, write,
/// read, release), with paths resolved the way the kernel walks them (following links).
private struct JournalClient {
    let tree: SysfsTree

    func inode(_ path: String) throws -> Inode {
        var inode = rootInode
        var resolved: [String] = []
        var pending = path.split(separator: "/").map(String.init)
        var hops = 0
        while !pending.isEmpty {
            let name = pending.removeFirst()
            if name == ".." {
                resolved.removeLast()
                inode = try resolved.reduce(rootInode) { try tree.lookup(parent: $0, name: $1).inode }
                continue
            }
            let stat = try tree.lookup(parent: inode, name: name)
            if stat.kind == .symlink {
                hops += 1
                if hops > 16 { throw Errno(ELOOP) }
                let target = try tree.readlink(stat.inode).split(separator: "/").map(String.init)
                pending = target + pending
                continue
            }
            resolved.append(name)
            inode = stat.inode
        }
        return inode
    }

    @discardableResult
    func write(_ path: String, _ text: String, uid: UInt32 = 0) -> Errno? {
        write(path, bytes: Array(text.utf8), uid: uid)
    }

    @discardableResult
    func write(_ path: String, bytes: [UInt8], offset: Int = 0, uid: UInt32 = 0) -> Errno? {
        do {
            let file = try tree.open(try inode(path), flags: O_WRONLY, caller: Caller(uid: uid, gid: uid, pid: 1))
            defer { tree.release(file) }
            _ = try bytes.withUnsafeBytes { try tree.write(file, offset: offset, data: $0) }
            return nil
        } catch let error as Errno {
            return error
        } catch {
            return .ioError
        }
    }

    func read(_ path: String, offset: Int = 0, size: Int = 4096, uid: UInt32 = 0) throws -> [UInt8] {
        let file = try tree.open(try inode(path), flags: O_RDONLY, caller: Caller(uid: uid, gid: uid, pid: 1))
        defer { tree.release(file) }
        return try tree.read(file, offset: offset, size: size)
    }

    func text(_ path: String) -> String {
        (try? read(path)).map { String(decoding: $0, as: UTF8.self) } ?? "<unreadable>"
    }

    func configWrite(_ path: String, offset: Int, width: Int, value: UInt32) {
        let bytes = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
        write(path, bytes: bytes, offset: offset)
    }
}

private let testOptions = StateOptions(profile: "current", machine: nil, lspciDumps: [], noBuiltin: false, hide: "",
                                       permissive: false, passthrough: false, legacyModes: false)

/// A tree on the built-in machine, as the daemon builds it without options.
private func makeTree(journal: StateJournal?) throws -> SysfsTree {
    let builtin = BuiltinMachine.make()
    let machine = Machine(name: "builtin", devices: builtin.order.compactMap { builtin[$0] })
    let dom0 = try Dom0(machine: machine, policy: FilterPolicy(profile: .current, globalPermissive: false))
    return SysfsTree(dom0: dom0, journal: journal)
}

/// Everything the tree holds that a restart must keep (not the inode numbers of this mount).
private func fingerprint(_ tree: SysfsTree) -> String {
    tree.state.withLock { state in
        StateFingerprint.of(state.dom0) + "\nlast pci_op results: " + StateFingerprint.of(state.lastOperationResult)
    }
}

/// The files a person would compare, for readable failures.
private func observed(_ client: JournalClient) -> [String: String] {
    var result: [String: String] = [:]
    for file in ["slots", "permissive", "allow_interrupt_control", "quirks", "irq_handlers"] {
        result[file] = client.text("bus/pci/drivers/pciback/\(file)")
    }
    for file in ["log", "trace", "faults"] { result[file] = client.text("fs/pcibackfs/\(file)") }
    result["module permissive"] = client.text("module/xen_pciback/parameters/permissive")
    let addresses = client.tree.state.withLock { $0.dom0.machine.order.map(\.description) }
    for address in addresses {
        let base = "bus/pci/devices/\(address)"
        result["\(address) driver"] = (try? client.tree.readlink(try client.inode(base + "/driver"))) ?? "none"
        result["\(address) config"] = ((try? client.read(base + "/config")) ?? []).map { hex($0, width: 2) }.joined()
        result["\(address) driver_override"] = client.text(base + "/driver_override")
        result["\(address) enable"] = client.text(base + "/enable")
    }
    result["sriov_numvfs"] = client.text("bus/pci/devices/0000:03:00.1/sriov_numvfs")
    result["frontends"] = client.tree.state.withLock { state in
        state.dom0.frontends.keys.sorted().map { domain in
            "\(domain): " + state.dom0.frontends[domain]!.exports.map { "\($0.virtual)=\($0.host)" }.joined(separator: " ")
        }.joined(separator: "; ")
    }
    return result
}

/// The keys whose values differ, with both values cut short.
private func differences(_ expected: [String: String], _ actual: [String: String]) -> [String] {
    Set(expected.keys).union(actual.keys).sorted().filter { expected[$0] != actual[$0] }.map {
        "\($0): expected \(String((expected[$0] ?? "nil").prefix(120)).debugDescription), got \(String((actual[$0] ?? "nil").prefix(120)).debugDescription)"
    }
}

/// Where two fingerprints first differ, with some context (for readable failures).
private func firstDifference(_ expected: String, _ actual: String) -> String {
    let a = Array(expected.utf8), b = Array(actual.utf8)
    guard let index = (0..<min(a.count, b.count)).first(where: { a[$0] != b[$0] }) ?? (a.count == b.count ? nil : min(a.count, b.count))
    else { return "equal" }
    let from = max(0, index - 300)
    return "at \(index): expected …\(String(decoding: a[from..<min(a.count, index + 200)], as: UTF8.self))…\n"
        + "got …\(String(decoding: b[from..<min(b.count, index + 200)], as: UTF8.self))…"
}

private func temporaryStatePath() -> (directory: String, file: String) {
    let directory = Temporary.directory(prefix: "pcibackfs-state")
    return (directory, directory + "/state")
}

/// A file of `records` after a header, as the daemon writes it.
private func journalBytes(_ records: [JournalRecord], options: StateOptions = testOptions) -> [UInt8] {
    JournalFile.start(JournalHeader(version: "test", base: 0, options: options))
        + records.flatMap { JournalFile.frame($0.payload) }
}

private let sampleRecords: [JournalRecord] = [
    .store(path: "bus/pci/drivers/pciback/new_slot", input: Array("0000:03:00.0".utf8), uid: 0, gid: 0, result: 0),
    .store(path: "bus/pci/drivers/pciback/permissive", input: Array("garbage\n".utf8), uid: 1000, gid: 100, result: -22),
    .configWrite(address: PCIAddress(bus: 3, slot: 0, function: 0), frontend: 5, offset: 0x62, bytes: [0x09, 0xc0]),
    .configWrite(address: PCIAddress(bus: 0, slot: 5, function: 0), frontend: nil, offset: 4, bytes: Array(repeating: 0xab, count: 4096)),
    .configRead(address: PCIAddress(domain: 1, bus: 2, slot: 31, function: 7), frontend: nil, offset: 0, size: 256, uid: 0, gid: 0),
    .store(path: "fs/pcibackfs/frontends/5/pci_op", input: [], uid: 0, gid: 0, result: 0),
]

// MARK: - Format

@Suite("State journal")
struct StateJournalTests {
    @Test("CRC-32 is the zlib/IEEE one")
    func crc() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xcbf4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
        let whole = Array("The quick brown fox jumps over the lazy dog".utf8)
        #expect(CRC32.checksum(whole) == 0x414f_a339)
        #expect(CRC32.checksum(whole[10...], continuing: CRC32.checksum(whole[..<10])) == 0x414f_a339)
    }

    @Test("records and header decode as they were encoded")
    func roundTrip() throws {
        let bytes = journalBytes(sampleRecords)
        let contents = try JournalFile.decode(bytes)
        #expect(contents.records == sampleRecords)
        #expect(contents.header?.options == testOptions)
        #expect(contents.validLength == bytes.count)
        #expect(contents.droppedBytes == 0)
        #expect(contents.dropReason == nil)
    }

    @Test("a torn final record is dropped at every cut, everything before it kept")
    func tornTail() throws {
        let bytes = journalBytes(sampleRecords)
        let intact = journalBytes(Array(sampleRecords.dropLast()))
        for cut in intact.count..<bytes.count {
            let contents = try JournalFile.decode(Array(bytes[..<cut]))
            #expect(contents.records == Array(sampleRecords.dropLast()), "cut at \(cut)")
            #expect(contents.validLength == intact.count)
            #expect(contents.droppedBytes == cut - intact.count)
            if cut > intact.count { #expect(contents.dropReason?.hasPrefix("incomplete") == true) }
        }
    }

    @Test("a checksum mismatch ends the journal there")
    func checksumMismatch() throws {
        let prefix = journalBytes(Array(sampleRecords.prefix(2)))
        var bytes = journalBytes(sampleRecords)
        bytes[prefix.count + 8 + 3] ^= 0x40  // inside the third record's payload
        let contents = try JournalFile.decode(bytes)
        #expect(contents.records == Array(sampleRecords.prefix(2)))
        #expect(contents.validLength == prefix.count)
        #expect(contents.dropReason == "checksum mismatch")
        // A damaged length is caught the same way (or as an impossible one).
        var lengths = journalBytes(sampleRecords)
        lengths[prefix.count + 1] ^= 0x01
        #expect(try JournalFile.decode(lengths).records == Array(sampleRecords.prefix(2)))
    }

    @Test("a file that is not a journal, or whose header is damaged, is refused; a torn header is a fresh start")
    func headers() throws {
        #expect(throws: (any Error).self) { try JournalFile.decode(Array("hello world, not a journal".utf8)) }
        var damaged = journalBytes(sampleRecords)
        damaged[JournalFile.magic.count + 10] ^= 0x01
        #expect(throws: (any Error).self) { try JournalFile.decode(damaged) }
        let start = journalBytes([])
        for cut in 0..<start.count {
            let contents = try JournalFile.decode(Array(start[..<cut]))
            #expect(contents.header == nil && contents.records.isEmpty && contents.validLength == 0, "cut at \(cut)")
        }
    }

    @Test("attribute paths name the attribute they were recorded for")
    func paths() {
        let address = PCIAddress(bus: 3, slot: 0, function: 1)
        var kinds: [AttributeKind] = DeviceAttribute.allCases.map { .device(address, $0) }
        kinds += DriverAttribute.allCases.map { .driver("pciback", $0) } + [.driver("igb", .bind)]
        kinds += BusAttribute.allCases.map { .bus($0) } + ModuleParameter.allCases.map { .moduleParameter($0) }
        kinds += ControlFile.allCases.map { .control($0) } + [.pciOperation(domain: 7)]
        kinds += PCIBusAttribute.allCases.map { .pciBus("0000:03", $0) }
        for kind in kinds {
            let path = kind.journalPath
            #expect(path != nil)
            #expect(path.flatMap(AttributeKind.init(journalPath:)) == kind, "\(path ?? "nil")")
        }
        #expect(AttributeKind.frontendDevice(domain: 1, host: address, .vendor).journalPath == nil)
        #expect(AttributeKind(journalPath: "bus/pci/devices/nonsense/enable") == nil)
        #expect(AttributeKind(journalPath: "devices/pci0000:00/0000:00:05.0/enable") == nil)
    }

    // MARK: - Replay

    /// A day in the life of a dom0: seize, bind, export, a guest's MSI-X start-up, quirks,
    /// permissive, SR-IOV VFs, faults (one consumed by a failing bind), removal and rescan,
    /// driver overrides, dom0 config writes, refused stores.
    private func workload(_ client: JournalClient) {
        let pciback = "bus/pci/drivers/pciback"
        #expect(client.write("bus/pci/devices/0000:03:00.0/driver/unbind", "0000:03:00.0") == nil)
        #expect(client.write("\(pciback)/new_slot", "0000:03:00.0") == nil)
        #expect(client.write("\(pciback)/bind", "0000:03:00.0") == nil)
        #expect(client.write("fs/pcibackfs/attach", "5 0000:03:00.0") == nil)
        #expect(client.write("\(pciback)/allow_interrupt_control", "0000:03:00.0") == nil)
        #expect(client.write("\(pciback)/permissive", "0000:03:00.0") == nil)
        #expect(client.write("\(pciback)/quirks", "0000:03:00.0-44:2:ffff") == nil)
        let op = "fs/pcibackfs/frontends/5/pci_op"
        #expect(client.write(op, "conf_write 00:00.0 0x62 2 0xc009") == nil)
        #expect(client.write(op, "conf_write 00:00.0 0x04 2 0x0407") == nil)
        #expect(client.write(op, "enable_msix 00:00.0 0,1,2") == nil)
        #expect(client.write(op, "conf_read 00:00.0 0x00 4") == nil)
        // The frontend's own config file (through the filter), and reads that leave verdicts.
        let frontendConfig = "fs/pcibackfs/frontends/5/bus/pci/devices/0000:00:00.0/config"
        client.configWrite(frontendConfig, offset: 0x0c, width: 1, value: 0x10)
        client.configWrite(frontendConfig, offset: 0x10, width: 4, value: 0xffff_ffff)
        _ = try? client.read(frontendConfig, offset: 0, size: 64)
        // dom0's view of another function.
        client.configWrite("bus/pci/devices/0000:00:05.0/config", offset: 0x04, width: 2, value: 0x0003)
        client.configWrite("bus/pci/devices/0000:00:05.0/config", offset: 0x3c, width: 1, value: 0x0b)
        // Refused and failing stores (some change state on the way).
        #expect(client.write("\(pciback)/permissive", "garbage") == .invalidArgument)
        #expect(client.write("bus/pci/devices/0000:00:05.0/driver/bind", "0000:00:05.0") != nil)
        #expect(client.write("bus/pci/devices/0000:00:05.0/enable", "1", uid: 1000) == .operationNotPermitted)
        #expect(client.write("fs/pcibackfs/faults", "0000:02:00.0 reset once") == nil)
        #expect(client.write("bus/pci/devices/0000:02:00.0/driver/unbind", "0000:02:00.0") == nil)
        #expect(client.write("bus/pci/devices/0000:02:00.0/driver_override", "pciback") == nil)
        #expect(client.write("bus/pci/drivers_probe", "0000:02:00.0") == nil)  // the reset fails, ignored in a PV dom0
        #expect(client.write("fs/pcibackfs/faults", "0000:00:05.0 config-read once") == nil)
        _ = try? client.read("bus/pci/devices/0000:00:05.0/config", offset: 0, size: 4)  // consumes it
        // SR-IOV on the second port of the 82576.
        #expect(client.write("bus/pci/devices/0000:03:00.1/sriov_numvfs", "2") == nil)
        #expect(client.write("bus/pci/devices/0000:03:00.1/sriov_numvfs", "3") == .resourceBusy)
        #expect(client.write("module/xen_pciback/parameters/permissive", "Y") == nil)
        // Removal and rescan, a new_id, the guest letting go of nothing, detach.
        #expect(client.write("bus/pci/devices/0000:04:00.0/remove", "1") == nil)
        #expect(client.write("bus/pci/rescan", "1") == nil)
        // Again, rescanning through a bus's class device (a refused input first).
        #expect(client.write("bus/pci/devices/0000:00:03.0/remove", "1") == nil)
        #expect(client.write("class/pci_bus/0000:00/rescan", "yes") == .invalidArgument)
        #expect(client.write("class/pci_bus/0000:00/rescan", "1") == nil)
        #expect(client.write("bus/pci/drivers/igb/new_id", "8086 10ca") == nil)
        #expect(client.write("bus/pci/drivers/pciback/new_id", "10ec 8139") == .fileExists)
        #expect(client.write(op, "disable_msix 00:00.0") == nil)
        #expect(client.write("fs/pcibackfs/detach", "5 0000:03:00.0") == nil)
        #expect(client.write("fs/pcibackfs/attach", "6 0000:03:00.0") == nil)
    }

    @Test("replaying the journal rebuilds the same machine, register for register")
    func replayReproducesState() throws {
        let (directory, file) = temporaryStatePath()
        defer { Temporary.remove(directory) }
        let expected: [String: String]
        let expectedFingerprint: String
        let written: Int
        do {
            let journal = try StateJournal(path: file, options: testOptions, fsync: false)
            let tree = try makeTree(journal: journal)
            #expect(try journal.restore(into: tree).records == 0)
            let client = JournalClient(tree: tree)
            workload(client)
            expected = observed(client)
            expectedFingerprint = fingerprint(tree)
            written = journal.recordCount
        }
        #expect(expected["slots"]?.contains("0000:03:00.0") == true)
        #expect(expected["sriov_numvfs"] == "2\n")
        #expect(expected["faults"]?.contains("config-read") == false)
        #expect(written > 20)

        // The daemon dies (its journal closes, as a killed process's descriptors do); a new one
        // opens the same file.
        let reopened = try StateJournal(path: file, options: testOptions, fsync: false)
        let restored = try makeTree(journal: reopened)
        let report = try reopened.restore(into: restored)
        #expect(report.records == written)
        #expect(report.droppedBytes == 0)
        #expect(report.divergences.isEmpty, "\(report.divergences)")
        let again = JournalClient(tree: restored)
        let actual = observed(again)
        #expect(differences(expected, actual).isEmpty, "\(differences(expected, actual))")
        #expect(fingerprint(restored) == expectedFingerprint, "\(firstDifference(expectedFingerprint, fingerprint(restored)))")

        // It goes on recording after the replayed records.
        #expect(again.write("bus/pci/drivers/pciback/remove_slot", "0000:03:00.0") == nil)
        #expect(reopened.recordCount == written + 1)
    }

    @Test("a torn last record is dropped on open and cut from the file; appending resumes after it")
    func tornTailInFile() throws {
        let (directory, file) = temporaryStatePath()
        defer { Temporary.remove(directory) }
        do {
            let journal = try StateJournal(path: file, options: testOptions, fsync: true)
            let tree = try makeTree(journal: journal)
            try journal.restore(into: tree)
            let client = JournalClient(tree: tree)
            #expect(client.write("bus/pci/drivers/pciback/new_slot", "0000:00:05.0") == nil)
            client.configWrite("bus/pci/devices/0000:00:05.0/config", offset: 0x0d, width: 1, value: 0x40)
        }
        let good = try Data(contentsOf: URL(fileURLWithPath: file))
        // A record cut mid-write (killed inside write(2)), and one with a bad checksum.
        let extra = JournalFile.frame(JournalRecord.store(path: "bus/pci/drivers/pciback/new_slot",
                                                          input: Array("0000:00:1c.0".utf8), uid: 0, gid: 0, result: 0).payload)
        for damaged in [Array(extra.prefix(extra.count - 3)), extra.enumerated().map { $0.offset == 12 ? $0.element ^ 1 : $0.element }] {
            try (good + Data(damaged)).write(to: URL(fileURLWithPath: file))
            let journal = try StateJournal(path: file, options: testOptions, fsync: false)
            let tree = try makeTree(journal: journal)
            let report = try journal.restore(into: tree)
            #expect(report.records == 2)
            #expect(report.droppedBytes == damaged.count)
            let client = JournalClient(tree: tree)
            #expect(client.text("bus/pci/drivers/pciback/slots") == "0000:00:05.0\n")
            #expect(try client.read("bus/pci/devices/0000:00:05.0/config", offset: 0x0d, size: 1) == [0x40])
            #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == good)
        }
    }

    @Test("a state file of another machine is refused with every difference named")
    func optionsMismatch() throws {
        let (directory, file) = temporaryStatePath()
        defer { Temporary.remove(directory) }
        do {
            let journal = try StateJournal(path: file, options: testOptions, fsync: false)
            try journal.restore(into: try makeTree(journal: journal))
        }
        var other = testOptions
        other.profile = "maskall-2022"
        other.hide = "(03:00.0)"
        do {
            _ = try StateJournal(path: file, options: other, fsync: false)
            Issue.record("a mismatching state file was accepted")
        } catch {
            #expect(error.description.contains("--profile: the state has current, this start has maskall-2022"))
            #expect(error.description.contains("--hide"))
        }
        // Not a journal at all: refused, and left alone.
        let foreign = directory + "/foreign"
        try Data("precious".utf8).write(to: URL(fileURLWithPath: foreign))
        #expect(throws: StateJournal.OpenError.self) { try StateJournal(path: foreign, options: testOptions, fsync: false) }
        #expect(try String(contentsOfFile: foreign, encoding: .utf8) == "precious")
    }

    /// More of what a snapshot must carry: VFs (one bound to pciback and exported, one gone in
    /// a surprise removal), a function removed and not rescanned, a dynamic id, a wrapped log.
    private func moreWorkload(_ client: JournalClient) {
        let vfs = client.tree.state.withLock { $0.dom0.sriov[PCIAddress(bus: 3, slot: 0, function: 1)]?.virtualFunctions ?? [] }
        #expect(vfs.count == 2)
        guard vfs.count == 2 else { return }
        #expect(client.write("bus/pci/drivers/igb/unbind", "\(vfs[0])") == nil)  // igb took them through new_id
        #expect(client.write("bus/pci/devices/\(vfs[0])/driver_override", "pciback") == nil)
        #expect(client.write("bus/pci/drivers_probe", "\(vfs[0])") == nil)
        #expect(client.write("fs/pcibackfs/attach", "9 \(vfs[0])") == nil)
        #expect(client.write("fs/pcibackfs/frontends/9/pci_op", "enable_msix 00:00.0 0,2") == nil)
        #expect(client.write("fs/pcibackfs/faults", "\(vfs[1]) vanish") == nil)
        #expect(client.write("bus/pci/devices/0000:00:05.0/remove", "1") == nil)
        #expect(client.write("bus/pci/drivers/pciback/remove_id", "8086 10ca") == .noSuchDevice)
        for index in 0..<600 {  // the kernel log ring wraps (1024 lines)
            _ = client.write("bus/pci/devices/0000:03:00.1/sriov_numvfs", index % 2 == 0 ? "7" : "9")
        }
    }

    @Test("a snapshot restores exactly the state it was taken of")
    func snapshotRoundTrip() throws {
        let tree = try makeTree(journal: nil)
        let client = JournalClient(tree: tree)
        workload(client)
        moreWorkload(client)
        let expected = observed(client)
        let expectedFingerprint = fingerprint(tree)
        let snapshot = tree.state.withLock { StateSnapshot(state: $0, sequence: 42, options: testOptions) }
        let (directory, file) = temporaryStatePath()
        defer { Temporary.remove(directory) }
        try Data(try snapshot.fileBytes()).write(to: URL(fileURLWithPath: file))
        let decoded = try #require(try StateSnapshot.read(file))
        #expect(decoded.sequence == 42)
        let restored = try makeTree(journal: nil)
        try restored.state.withLock { state in try decoded.restore(into: &state) }
        #expect(differences(expected, observed(JournalClient(tree: restored))).isEmpty,
                "\(differences(expected, observed(JournalClient(tree: restored))))")
        #expect(fingerprint(restored) == expectedFingerprint, "\(firstDifference(expectedFingerprint, fingerprint(restored)))")
        #expect(fingerprint(try makeTree(journal: nil)) != expectedFingerprint)
        // A damaged snapshot is refused, not half-applied.
        var bytes = try snapshot.fileBytes()
        bytes[bytes.count / 2] ^= 0x20
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        #expect(throws: (any Error).self) { try StateSnapshot.read(file) }
    }

    @Test("compaction replaces the journal by a snapshot; restart = snapshot + the records after it")
    func compaction() throws {
        let (directory, file) = temporaryStatePath()
        defer { Temporary.remove(directory) }
        let expected: [String: String]
        let expectedFingerprint: String
        do {
            // Compacts on its own whenever 4 KiB of records pile up (on a background thread).
            let journal = try StateJournal(path: file, options: testOptions, fsync: true, compactionBytes: 4096)
            let tree = try makeTree(journal: journal)
            try journal.restore(into: tree)
            let client = JournalClient(tree: tree)
            workload(client)
            moreWorkload(client)
            let deadline = Date().addingTimeInterval(10)
            while journal.isCompacting && Date() < deadline { usleep(1000) }
            #expect(FileManager.default.fileExists(atPath: file + ".snapshot"))
            #expect(journal.length < 4096 + 2048)
            expected = observed(client)
            expectedFingerprint = fingerprint(tree)
        }
        let journal = try StateJournal(path: file, options: testOptions, fsync: false, compactionBytes: 4096)
        let tree = try makeTree(journal: journal)
        let report = try journal.restore(into: tree)
        #expect(report.snapshotRecords > 0)
        #expect(report.divergences.isEmpty, "\(report.divergences)")
        #expect(differences(expected, observed(JournalClient(tree: tree))).isEmpty)
        #expect(fingerprint(tree) == expectedFingerprint, "\(firstDifference(expectedFingerprint, fingerprint(tree)))")
        #expect(!FileManager.default.fileExists(atPath: file + ".next"))
    }

    @Test("a compaction interrupted at any step leaves files that restore the whole state")
    func interruptedCompaction() throws {
        let (directory, file) = temporaryStatePath()
        defer { Temporary.remove(directory) }
        let options = testOptions
        // The pieces: the journal before a compaction, the snapshot it made, the journal after.
        let oldJournal: Data
        let expected: String
        do {
            let journal = try StateJournal(path: file, options: options, fsync: false, compactionBytes: 1 << 30)
            let tree = try makeTree(journal: journal)
            try journal.restore(into: tree)
            let client = JournalClient(tree: tree)
            workload(client)
            oldJournal = try Data(contentsOf: URL(fileURLWithPath: file))
            #expect(journal.compact(synchronously: true) == nil)
            moreWorkload(client)
            expected = fingerprint(tree)
        }
        let snapshot = try Data(contentsOf: URL(fileURLWithPath: file + ".snapshot"))
        let newJournal = try Data(contentsOf: URL(fileURLWithPath: file))
        let cases: [(String, [String: Data])] = [
            ("FILE.next started, snapshot not written", ["": oldJournal, ".next": newJournal, ".snapshot.tmp": snapshot.prefix(100)]),
            ("snapshot renamed, FILE.next not yet", ["": oldJournal, ".next": newJournal, ".snapshot": snapshot]),
            ("settled", ["": newJournal, ".snapshot": snapshot]),
        ]
        for (name, files) in cases {
            for suffix in ["", ".next", ".snapshot", ".snapshot.tmp"] { try? FileManager.default.removeItem(atPath: file + suffix) }
            for (suffix, data) in files { try data.write(to: URL(fileURLWithPath: file + suffix)) }
            for attempt in 0..<2 {  // the first start settles the files; the second finds them settled
                let journal = try StateJournal(path: file, options: options, fsync: false)
                let tree = try makeTree(journal: journal)
                let report = try journal.restore(into: tree)
                #expect(report.divergences.isEmpty, "\(name): \(report.divergences)")
                #expect(fingerprint(tree) == expected, "\(name), start \(attempt): \(firstDifference(expected, fingerprint(tree)))")
                #expect(!FileManager.default.fileExists(atPath: file + ".next"), "\(name)")
            }
        }
    }

    @Test("the snapshot knows every stored field of the state it copies")
    func snapshotCoversEveryField() throws {
        // A field added to one of these types must be added to StateSnapshot (capture and
        // restore) and then here; until then this test fails instead of a restart losing it.
        func labels(_ value: Any) -> [String] {
            var result: [String] = []
            var mirror: Mirror? = Mirror(reflecting: value)
            while let current = mirror {
                result += current.children.compactMap(\.label)
                mirror = current.superclassMirror
            }
            return result.sorted()
        }
        let tree = try makeTree(journal: nil)
        let (dom0Labels, stateLabels, deviceLabels, machineLabels) = tree.state.withLock { state in
            (labels(state.dom0), labels(state), labels(state.dom0.machine.devices.values.first!), labels(state.dom0.machine))
        }
        // layoutEpoch is a cache key, not state: a restore bumps it (see StateSnapshot.restore).
        // start is rebuilt from the options; vanishings, vanishedPaths and resetAt only concern
        // open descriptors, which do not survive a restart.
        #expect(stateLabels == ["dom0", "inodes", "lastOperationResult", "layoutEpoch", "options", "resetAt", "start",
                                "traceLogged", "vanishedPaths", "vanishings"])
        // classDeviceOrder, pcibackLoadFailure and dom0Kind are constants of the start options
        // (Dom0.init), like the machine's identity; aerOwnedByOS is one of the platform.
        #expect(dom0Labels == ["aerOwnedByOS", "bindings", "classDeviceOrder", "deviceData", "dom0Kind", "driverOverrides", "drivers",
                               "frontends", "hideParameter", "log", "machine",
                               "nextMSIIRQ", "owners", "passthroughBackend", "pcibackDevices", "pcibackLoadFailure", "policy", "quirkRegistrations",
                               "removedDevices", "seizeList", "sriov", "topologyGeneration", "trace", "tunables"])
        // isSnapshot is fixed by the start options (imported or not) and only read at boot.
        #expect(deviceLabels == ["address", "bars", "bootDriver", "capabilities", "config", "enableCount", "faults", "identity",
                                 "irq", "isBusmaster", "isSnapshot", "kernelMSIEnabled", "kernelMSIXEnabled", "label", "msiIRQ",
                                 "physicalFunction", "resetImage", "savedState", "upstreamBridge", "vpdContents"])
        #expect(machineLabels == ["children", "devices", "name", "order", "parents", "rootBusOf", "rootBuses", "secondaryBuses"])
        #expect(labels(PcibackDeviceData(address: FixtureA.host)) == [
            "ackInterrupts", "allowInterruptControl", "bars", "commandShadow", "enableINTx", "fields", "handledInterrupts",
            "irqName", "isrIRQ", "isrOn", "permissive", "savedState", "warnedOnWrite"])
        #expect(labels(SRIOVState(totalVFs: 1, initialVFs: 1, driverMaxVFs: 1, offset: 1, stride: 1, vfDeviceID: 1,
                                  migrationCapable: false)) == [
            "control", "driverMaxVFs", "driversAutoprobe", "initialVFs", "migrationCapable", "numVFs", "offset", "stride", "totalVFs",
            "vfDeviceID", "virtualFunctions", "windows"])
        #expect(labels(KernelLog()) == ["capacity", "dropped", "lines"])
        #expect(labels(TraceRing()) == ["capacity", "nextSequence", "start", "storage"])
        #expect(labels(PCIDriver(name: "x", ids: [])) == ["dynamicIDs", "ids", "name"])
        #expect(labels(FilterPolicy()) == ["globalPermissive", "profile"])
        #expect(labels(CapabilityOffsets()).count == 9)
    }

    @Test("two daemons cannot share one state file")
    func exclusive() throws {
        let (directory, file) = temporaryStatePath()
        defer { Temporary.remove(directory) }
        let first = try StateJournal(path: file, options: testOptions, fsync: false)
        let started = Date()
        #expect(throws: StateJournal.OpenError.self) { try StateJournal(path: file, options: testOptions, fsync: false) }
        #expect(Date().timeIntervalSince(started) < 10)
        _ = first
    }
}

// MARK: - The real daemon, killed and restarted

/// A daemon with `--state` on a mount point that outlives it.
private final class StatefulDaemon {
    let work: String
    let mountPoint: String
    let stateFile: String
    private(set) var pid: pid_t = 0
    /// Every daemon started, for the teardown (whatever a failing test left running).
    private var spawned: [pid_t] = []
    private var round = 0

    init() {
        work = Temporary.directory(prefix: "pcibackfs-state-mount")
        chmod(work, 0o755)
        mountPoint = work + "/mnt"
        mkdir(mountPoint, 0o755)
        stateFile = work + "/state"
    }

    /// Starts the daemon; returns the seconds until the mount answered (≤ 10 s, else throws).
    @discardableResult
    func start() throws -> Double {
        round += 1
        let started = Date()
        pid = try Subprocess.spawn(MountEnvironment.daemonPath, [mountPoint, "--state", stateFile],
                                   stdoutPath: work + "/out.\(round)", stderrPath: work + "/err.\(round)")
        spawned.append(pid)
        let deadline = started.addingTimeInterval(10)
        // A read, not access(2): the dentries and attributes of a stale mount answer from the
        // kernel's caches; opening and reading an attribute needs a live daemon.
        while (try? Sys.readBytes(mountPoint + "/bus/pci/drivers/pciback/slots")) == nil {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                pid = 0
                throw HarnessError("pcibackfsd exited with \(Subprocess.decode(status)) before serving:\n\(log)")
            }
            if Date() >= deadline { throw HarnessError("pcibackfsd did not serve within 10 s:\n\(log)") }
            usleep(2_000)
        }
        return Date().timeIntervalSince(started)
    }

    var log: String { (try? String(contentsOfFile: work + "/err.\(round)", encoding: .utf8)) ?? "" }

    func kill9() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        _ = Subprocess.wait(pid, until: Date().addingTimeInterval(5))
        pid = 0
    }

    /// Lazy unmount (twice: a stale mount may sit under a live one), kill, remove. Idempotent.
    func tearDown() {
        _ = Subprocess.run("fusermount3", ["-u", "-z", mountPoint], timeout: 5)
        kill9()
        for other in spawned {
            kill(-other, SIGKILL)  // its own process group (Subprocess.spawn)
            _ = Subprocess.wait(other, until: Date().addingTimeInterval(2))
        }
        _ = Subprocess.run("fusermount3", ["-u", "-z", mountPoint], timeout: 5)
        rmdir(mountPoint)
        Temporary.remove(work)
    }

    func path(_ relative: String) -> String { mountPoint + "/" + relative }

    @discardableResult
    func echo(_ text: String, _ relative: String) -> EchoResult { Sys.echo(text, to: path(relative), style: .plain) }

    /// What a restart must keep, as clients read it.
    func observe() -> [String: String] {
        var result: [String: String] = [:]
        func read(_ relative: String) -> String { (try? Sys.cat(path(relative))) ?? "<error>" }
        for file in ["slots", "permissive", "allow_interrupt_control", "quirks", "irq_handlers"] {
            result[file] = read("bus/pci/drivers/pciback/\(file)")
        }
        for file in ["log", "trace", "faults"] { result[file] = read("fs/pcibackfs/\(file)") }
        result["module permissive"] = read("module/xen_pciback/parameters/permissive")
        result["frontends"] = ((try? Sys.list(path("fs/pcibackfs/frontends"))) ?? []).sorted().joined(separator: " ")
        for device in ((try? Sys.list(path("bus/pci/devices"))) ?? []).sorted() {
            let base = "bus/pci/devices/\(device)"
            result["\(device) config"] = ((try? Sys.readBytes(path(base + "/config"))) ?? []).map { hex($0, width: 2) }.joined()
            result["\(device) driver"] = (try? Sys.readlink(path(base + "/driver"))) ?? "none"
            result["\(device) driver_override"] = read(base + "/driver_override")
            result["\(device) enable"] = read(base + "/enable")
        }
        // (Not the frontends' config files: a frontend read is itself recorded, as its verdict
        // goes to the trace, so observing would change what is observed.)
        return result
    }
}

@Suite("State journal: the daemon killed and restarted", .serialized, .requiresDaemonMount, .timeLimit(.minutes(1)))
struct StateJournalTestsKillRestart {
    @Test("every acknowledged write survives SIGKILL; the restart replaces the stale mount")
    func killAndRestart() throws {
        let daemon = StatefulDaemon()
        defer { daemon.tearDown() }
        try daemon.start()
        let pciback = "bus/pci/drivers/pciback"
        let writes: [(String, String)] = [
            ("0000:03:00.0", "bus/pci/devices/0000:03:00.0/driver/unbind"),
            ("0000:03:00.0", "\(pciback)/new_slot"),
            ("0000:03:00.0", "\(pciback)/bind"),
            ("5 0000:03:00.0", "fs/pcibackfs/attach"),
            ("0000:03:00.0", "\(pciback)/allow_interrupt_control"),
            ("0000:03:00.0", "\(pciback)/permissive"),
            ("0000:03:00.0-44:2:ffff", "\(pciback)/quirks"),
            ("conf_write 00:00.0 0x62 2 0xc009\n", "fs/pcibackfs/frontends/5/pci_op"),
            ("conf_write 00:00.0 0x04 2 0x0407\n", "fs/pcibackfs/frontends/5/pci_op"),
            ("enable_msix 00:00.0 0,1\n", "fs/pcibackfs/frontends/5/pci_op"),
            ("pciback", "bus/pci/devices/0000:04:00.0/driver_override"),
            ("2", "bus/pci/devices/0000:03:00.1/sriov_numvfs"),
            ("Y", "module/xen_pciback/parameters/permissive"),
            ("0000:00:05.0 msi-enable sticky", "fs/pcibackfs/faults"),
        ]
        for (text, file) in writes { #expect(daemon.echo(text, file) == .written(text.utf8.count), "\(file)") }
        let frontendConfig = daemon.path("fs/pcibackfs/frontends/5/bus/pci/devices/0000:00:00.0/config")
        #expect(try Sys.configWrite(frontendConfig, offset: 0x0c, width: 1, value: 0x10) == 1)
        #expect(try Sys.configWrite(daemon.path("bus/pci/devices/0000:00:05.0/config"), offset: 0x3c, width: 1, value: 0x0b) == 1)
        #expect(daemon.echo("garbage", "\(pciback)/permissive") == .writeFailed(EINVAL))
        let expected = daemon.observe()
        #expect(expected["slots"] == "0000:03:00.0\n")
        #expect(expected["frontends"] == "5")
        #expect(expected["0000:03:00.1 driver"]?.hasSuffix("igb") == true)
        #expect(expected.keys.contains { $0.hasPrefix("0000:04:10.") || $0.hasPrefix("0000:03:10.") } || expected.count > 40)

        daemon.kill9()
        #expect(StaleMount.isStale(daemon.mountPoint), "a killed FUSE daemon leaves ENOTCONN behind")
        let seconds = try daemon.start()
        #expect(seconds < 5, "restart took \(seconds) s")
        #expect(daemon.log.contains("detached a stale mount"))
        #expect(daemon.log.contains("replayed \(writes.count + 3) records"), "\(daemon.log)")
        let actual = daemon.observe()
        #expect(differences(expected, actual).isEmpty, "\(differences(expected, actual))")
        #expect(!StaleMount.isStale(daemon.mountPoint))

        // Again, with nothing written in between: the same state, nothing recorded twice.
        daemon.kill9()
        try daemon.start()
        #expect(daemon.log.contains("replayed \(writes.count + 3) records"), "\(daemon.log)")
        let again = daemon.observe()
        #expect(differences(expected, again).isEmpty, "\(differences(expected, again))")
    }
}
