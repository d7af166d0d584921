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
// The tree does not know the journal: it reports its changes through the `ChangeRecorder`
// protocol (Sysfs/ChangeRecorder.swift), which `StateJournal` implements; persistence calls
// the tree (restore, replay, a snapshot under the tree's lock), never the other way round.
// Files here: JournalFormat.swift (CRC-32, the header and its StateOptions, framing, decoding
// a file), JournalRecordCoding.swift (a record's bytes, attribute paths), this file (the open
// journal: recording, commit, compaction), JournalReplay.swift (restore and replay),
// StateSnapshot.swift (the compacted state) and StateFingerprint.swift (exact comparison).

// MARK: - The journal

/// The open state of a daemon: the journal file it appends to, and the snapshot that the
/// journal continues (after a compaction). Records are appended while the tree's lock is held
/// (the tree calls `record`, as its `ChangeRecorder`, from inside its critical sections);
/// `commit` runs after the lock is dropped and, with `--fsync`, makes them durable before the
/// reply. When the journal has grown past `compactionBytes`, `record` starts a compaction on
/// its own thread.
///
/// Files: FILE (the journal), FILE.snapshot (the state after the first `base` records, when a
/// compaction happened), FILE.next (a journal being started by a compaction; after a crash
/// mid-compaction it continues FILE), FILE.snapshot.tmp (a snapshot being written) and
/// FILE.lock (one daemon per state file).
public final class StateJournal: ChangeRecorder, Sendable {
    public let path: String
    public let options: StateOptions
    public let syncsEachRecord: Bool
    /// A compaction starts when the journal holds this many bytes of records.
    public let compactionBytes: Int
    /// `PCIBACKFS_STATE_COMPACT_BYTES` overrides it (tests, the crash test).
    public static let defaultCompactionBytes = 256 << 10

    var snapshotPath: String { path + ".snapshot" }
    var nextPath: String { path + ".next" }

    struct Appender {
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

    let appender: Locked<Appender>
    /// The --fsync watermark (in `Appender.total` bytes).
    private let durable: Locked<Int>
    private let lockDescriptor: Int32
    /// What the files held at open, waiting for `restore`.
    let pending: Locked<Pending?>
    /// The tree it was restored into (weak: the tree holds the journal as its recorder).
    let tree = Locked(TreeReference())

    struct TreeReference {
        weak var tree: SysfsTree?
    }

    struct Pending {
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


    /// Records in the whole history (snapshot included).
    public var recordCount: Int { Int(appender.withLock { $0.records }) }

    /// The current journal file's length in bytes.
    public var length: Int { appender.withLock { $0.length } }

    /// Whether a compaction is under way (its snapshot not yet durable).
    public var isCompacting: Bool { appender.withLock { $0.compacting || $0.compactionScheduled } }

    // MARK: Recording (the tree's ChangeRecorder; called with the tree's lock held)

    func record(_ record: JournalRecord) throws(Errno) {
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
    func recordsRead(of device: EmulatedDevice, frontend: UInt32?) -> Bool {
        frontend != nil || device.faults.configReadFails == .once
    }

    /// Runs an attribute store and records it with its outcome.
    func recordingStore(_ kind: AttributeKind, input: [UInt8], caller: Caller, _ body: () throws(Errno) -> Void) throws(Errno) {
        guard let path = kind.journalPath else { return try body() }
        do {
            try body()
        } catch {
            try record(.store(path: path, input: input, uid: caller.uid, gid: caller.gid, result: error.rawValue))
            throw error
        }
        try record(.store(path: path, input: input, uid: caller.uid, gid: caller.gid, result: 0))
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
    func settle() throws {
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

// MARK: - The tree it records

extension SysfsTree {
    /// A tree that reports every acknowledged change to `journal` (`--state`). Call the
    /// journal's `restore(into:)` with it before serving.
    public convenience init(dom0: sending Dom0, legacyModes: Bool = false, traceLog: TraceLog? = nil, journal: StateJournal?) {
        self.init(dom0: dom0, options: TreeOptions(legacyModes: legacyModes), traceLog: traceLog, recorder: journal)
    }

    public convenience init(dom0: sending Dom0, options: TreeOptions, traceLog: TraceLog? = nil, journal: StateJournal?) {
        self.init(dom0: dom0, options: options, traceLog: traceLog, recorder: journal)
    }
}
