
/// The mounted tree: the dom0 state behind one lock, served through `FileSystemModel`.
///
/// Text attributes render at offset 0 into a snapshot kept per open handle (later offsets read
/// from it, so `cat` and `read(fd, 1)` loops see one consistent value); stores act in `write`
/// and report errors there; `config` files split accesses as `pci-sysfs.c` does.
public final class SysfsTree: FileSystemModel {
    struct State {
        var dom0: Dom0
        var inodes = InodeTable()
        let options: TreeOptions
        /// The last pci_op result per frontend, for readers that did not write the op themselves.
        var lastOperationResult: [UInt32: String] = [:]
        /// The last trace sequence number written to the trace log.
        var traceLogged: UInt64 = 0
        /// Bumped when paths may have changed meaning outside `dom0.topologyGeneration`.
        var layoutEpoch = 0
        /// The dom0 the tree was built with, never touched: `fs/pcibackfs/reset` goes back to a
        /// copy of it.
        let start: Dom0
        /// Counts the changes that made nodes vanish (a device removed, a link retargeted, a
        /// frontend gone, a reset); a handle remembers the count it was opened at.
        var vanishings = 0
        /// When each path vanished last (a value of `vanishings`).
        var vanishedPaths: [String: Int] = [:]
        /// When the last reset made every node vanish.
        var resetAt = 0
        var layout: SysfsLayout { SysfsLayout(dom0: dom0, options: options) }

        var nodeGeneration: NodeGeneration { NodeGeneration(topology: dom0.topologyGeneration, epoch: layoutEpoch) }

        init(dom0: Dom0, options: TreeOptions) {
            self.dom0 = dom0
            self.options = options
            start = dom0.copied()
        }

        /// Whether the node a handle was opened on has vanished since (an ancestor counts:
        /// the files of a removed device go with its directory). One comparison while nothing
        /// vanished since the open.
        func hasVanished(_ opened: Handle.Opened?) -> Bool {
            guard let opened, opened.vanishings != vanishings else { return false }
            if resetAt > opened.vanishings { return true }
            let path = opened.path
            var index = path.startIndex
            while true {
                let end = path[index...].firstIndex(of: "/") ?? path.endIndex
                if let at = vanishedPaths[String(path[..<end])], at > opened.vanishings { return true }
                guard end < path.endIndex else { return false }
                index = path.index(after: end)
            }
        }

        /// ENODEV for a handle whose node has vanished (kernfs_get_active fails on it).
        func requireLive(_ handle: Handle?) throws(Errno) {
            if hasVanished(handle?.opened) { throw .noSuchDevice }
        }

        /// Entries of `dynamicEntries()` that vanished or changed target between two of its
        /// results: their nodes (and everything under them) are gone for open handles.
        mutating func noteVanished(from before: [String: String], to after: [String: String]) {
            var counted = false
            for (key, target) in before where after[key] != target {
                if !counted {
                    vanishings += 1
                    counted = true
                }
                let parts = key.split(separator: "\u{0}", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                vanishedPaths[joinPath(parts[0], parts[1])] = vanishings
            }
        }

        /// `fs/pcibackfs/reset`: the machine as the daemon started it, with nothing left of what
        /// happened since (frontends, trace, log, pci_op results); every open handle goes stale.
        mutating func reset(_ input: [UInt8]) throws(Errno) {
            guard input == Array("1".utf8) || input == Array("1\n".utf8) else { throw .invalidArgument }
            dom0 = start.copied()
            lastOperationResult = [:]
            traceLogged = 0
            layoutEpoch += 1
            vanishings += 1
            resetAt = vanishings
            vanishedPaths = [:]
        }

        /// What `inode` is now: from the inode table's cache while nothing it depends on has
        /// changed, otherwise resolved from its path (and cached again).
        mutating func node(of inode: Inode) -> SysfsNode? {
            let generation = nodeGeneration
            if let cached = inodes.cachedNode(inode, at: generation) { return cached }
            guard let path = inodes.path(of: inode), let node = layout.node(at: path) else { return nil }
            inodes.cacheNode(node, for: inode, at: generation)
            return node
        }

        /// Resolves `name` in `parent`, giving the node an inode.
        mutating func lookup(parent: Inode, name: String) -> (Inode, SysfsNode)? {
            guard let parentPath = inodes.path(of: parent) else { return nil }
            let path = joinPath(parentPath, name)
            if let inode = inodes.existingInode(for: path) {
                return node(of: inode).map { (inode, $0) }
            }
            guard let node = layout.node(at: path) else { return nil }
            let inode = inodes.inode(for: path)
            inodes.cacheNode(node, for: inode, at: nodeGeneration)
            return (inode, node)
        }
    }

    let state: Locked<State>
    private let traceLog: TraceLog?
    /// `--state`: every mutating access is reported before its reply (ChangeRecorder.swift).
    let recorder: (any ChangeRecorder)?

    /// `traceLog`: a file that receives every verdict as a JSON line.
    public convenience init(dom0: sending Dom0, legacyModes: Bool = false, traceLog: TraceLog? = nil) {
        self.init(dom0: dom0, options: TreeOptions(legacyModes: legacyModes), traceLog: traceLog, recorder: nil)
    }

    public convenience init(dom0: sending Dom0, options: TreeOptions, traceLog: TraceLog? = nil) {
        self.init(dom0: dom0, options: options, traceLog: traceLog, recorder: nil)
    }

    /// A tree that reports its changes to `recorder` (the `--state` journal builds one this way).
    init(dom0: sending Dom0, options: TreeOptions, traceLog: TraceLog?, recorder: (any ChangeRecorder)?) {
        state = Locked(State(dom0: dom0, options: options))
        self.traceLog = traceLog
        self.recorder = recorder
    }

    /// Appends the verdicts recorded since the last call to the trace log, outside the lock.
    private func flushTrace() {
        guard let traceLog else { return }
        let records = state.withLock { state -> [TraceRecord] in
            let records = state.dom0.trace.records(after: state.traceLogged)
            if let last = records.last { state.traceLogged = last.sequence }
            return records
        }
        traceLog.append(records)
    }

    /// Runs `body` on the dom0 state under the lock (for tests, tools and the daemon's setup).
    public func withDom0<T: Sendable>(_ body: (inout Dom0) throws -> T) rethrows -> T {
        try state.withLock { state in
            state.layoutEpoch += 1
            return try body(&state.dom0)
        }
    }

    // MARK: - Nodes and attributes

    /// Every entry may be cached long: names never change meaning, and a store that makes entries
    /// appear, vanish or change target returns their invalidations (see `store`). Symlink
    /// targets are never cached (FUSE_CAP_CACHE_SYMLINKS stays off) and contents use direct_io.
    private static let entryCacheSeconds = 3600.0

    /// As kernfs reports them: a directory links 2 + its subdirectories and has size 0, a
    /// symlink has size 0 (not its target's length), text attributes 4096.
    private static func stat(_ node: SysfsNode, inode: Inode, state: State) -> NodeStat {
        switch node {
        case .directory:
            let subdirectories = state.inodes.path(of: inode).map { state.layout.subdirectoryCount(at: $0) } ?? 0
            return NodeStat(inode: inode, kind: .directory, mode: 0o755, size: 0, linkCount: UInt32(2 + subdirectories),
                            cacheSeconds: entryCacheSeconds)
        case .link:
            return NodeStat(inode: inode, kind: .symlink, mode: 0o777, size: 0, cacheSeconds: entryCacheSeconds)
        case .attribute(let attribute):
            return NodeStat(inode: inode, kind: .regularFile, mode: attribute.mode, size: 4096, cacheSeconds: entryCacheSeconds)
        case .config(let address, _):
            return NodeStat(inode: inode, kind: .regularFile, mode: 0o644, size: state.dom0.device(address)?.configSize ?? 256,
                            cacheSeconds: entryCacheSeconds)
        }
    }

    public func lookup(parent: Inode, name: String) throws(Errno) -> NodeStat {
        try state.withLock { state throws(Errno) -> NodeStat in
            guard let (inode, node) = state.lookup(parent: parent, name: name) else { throw .noSuchFileOrDirectory }
            return SysfsTree.stat(node, inode: inode, state: state)
        }
    }

    /// A node that has vanished still answers with what it was: the kernel only asks for it
    /// through a descriptor still open on it (fstat works on a removed kernfs node); paths
    /// to it were invalidated, so they come as lookups, which fail.
    public func getattr(_ inode: Inode) throws(Errno) -> NodeStat {
        try state.withLock { state throws(Errno) -> NodeStat in
            guard let node = state.node(of: inode) ?? state.inodes.lastKnownNode(inode) else { throw .noSuchFileOrDirectory }
            return SysfsTree.stat(node, inode: inode, state: state)
        }
    }

    public func readlink(_ inode: Inode) throws(Errno) -> String {
        try state.withLock { state throws(Errno) -> String in
            guard let node = state.node(of: inode) else { throw .noSuchFileOrDirectory }
            guard case .link(let target) = node else { throw .invalidArgument }
            return target
        }
    }

    public func readdir(_ inode: Inode) throws(Errno) -> [DirectoryEntry] {
        try state.withLock { state throws(Errno) -> [DirectoryEntry] in
            guard let path = state.inodes.path(of: inode) else { throw .noSuchFileOrDirectory }
            guard let listing = state.layout.listing(of: path) else {
                throw state.layout.node(at: path) == nil ? .noSuchFileOrDirectory : .notDirectory
            }
            return listing.map { name, node in
                let kind: NodeKind
                switch node {
                case .directory: kind = .directory
                case .link: kind = .symlink
                case .attribute, .config: kind = .regularFile
                }
                return DirectoryEntry(name: name, inode: state.inodes.inode(for: joinPath(path, name)), kind: kind)
            }
        }
    }

    public func truncate(_ inode: Inode, caller: Caller) throws(Errno) -> NodeStat {
        let stat = try getattr(inode)
        guard stat.kind == .regularFile else { throw .isDirectory }
        return stat
    }

    // MARK: - Open files

    final class Handle: OpenFile {
        let node: SysfsNode
        let caller: Caller
        let canRead: Bool
        let canWrite: Bool
        /// Where and when it was opened (nil: a handle of the tree's own, never stale).
        let opened: Opened?
        /// The rendered text of an attribute, taken at offset 0, and pci_op results. Only
        /// text attributes have one: a config file or a write-only open needs none (and an
        /// open-write-close store then allocates one object less).
        private let scratch: Locked<Scratch>?

        struct Scratch {
            var text: [UInt8]?
            /// pci_op results of ops written through this handle.
            var results: [String] = []
        }

        struct Opened {
            var path: String
            /// `State.vanishings` at open.
            var vanishings: Int
        }

        init(node: SysfsNode, caller: Caller, canRead: Bool, canWrite: Bool, opened: Opened? = nil) {
            self.node = node
            self.caller = caller
            self.canRead = canRead
            self.canWrite = canWrite
            self.opened = opened
            var needsScratch = false
            if case .attribute(let attribute) = node {
                if case .pciOperation = attribute.kind { needsScratch = true } else { needsScratch = canRead }
            }
            scratch = needsScratch ? Locked(Scratch()) : nil
        }

        /// Runs `body` on the scratch state; a handle without one behaves as if it were empty.
        func withScratch<T>(_ body: (inout Scratch) -> T) -> T {
            if let scratch { return scratch.withLock(body) }
            var empty = Scratch()
            return body(&empty)
        }
    }

    public func open(_ inode: Inode, flags: Int32, caller: Caller) throws(Errno) -> any OpenFile {
        let (node, opened) = try state.withLock { state throws(Errno) -> (SysfsNode, Handle.Opened) in
            guard let node = state.node(of: inode), let path = state.inodes.path(of: inode) else { throw .noSuchFileOrDirectory }
            return (node, Handle.Opened(path: path, vanishings: state.vanishings))
        }
        let access = flags & 0o3
        let wantsRead = access == 0 || access == 2
        let wantsWrite = access == 1 || access == 2
        switch node {
        case .directory:
            if wantsWrite { throw .isDirectory }
        case .link:
            throw .invalidArgument
        case .attribute(let attribute):
            // kernfs checks the mode even for root.
            if wantsRead && !attribute.isReadable { throw .permissionDenied }
            if wantsWrite && !attribute.isWritable { throw .permissionDenied }
        case .config:
            break
        }
        return Handle(node: node, caller: caller, canRead: wantsRead, canWrite: wantsWrite, opened: opened)
    }

    public func release(_ file: any OpenFile) {}

    public func hasVanished(_ file: any OpenFile) -> Bool {
        guard let handle = file as? Handle else { return false }
        return state.withLock { $0.hasVanished(handle.opened) }
    }

    public func read(_ file: any OpenFile, offset: Int, size: Int) throws(Errno) -> [UInt8] {
        guard let handle = file as? Handle else { throw .badFileDescriptor }
        switch handle.node {
        case .config:
            var failure: Errno?
            let bytes = [UInt8](unsafeUninitializedCapacity: max(0, min(size, 4096))) { buffer, initialized in
                do throws(Errno) {
                    initialized = try read(handle, offset: offset, into: UnsafeMutableRawBufferPointer(buffer))
                } catch {
                    failure = error
                    initialized = 0
                }
            }
            if let failure { throw failure }
            return bytes
        case .attribute(let attribute):
            let text = try attributeText(attribute, handle: handle, offset: offset)
            guard offset < text.count else { return [] }
            if offset == 0 && size >= text.count { return text }
            return Array(text[offset..<min(text.count, offset + size)])
        case .directory:
            throw .isDirectory
        case .link:
            throw .invalidArgument
        }
    }

    public func read(_ file: any OpenFile, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        guard let handle = file as? Handle else { throw .badFileDescriptor }
        return try read(handle, offset: offset, into: buffer)
    }

    private func read(_ handle: Handle, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        switch handle.node {
        case .config(let address, let frontend):
            defer { if frontend != nil { flushTrace() } }
            return try readConfig(address, frontend: frontend, caller: handle.caller, offset: offset, into: buffer, handle: handle)
        case .attribute(let attribute):
            let text = try attributeText(attribute, handle: handle, offset: offset)
            guard offset < text.count, !buffer.isEmpty else { return 0 }
            let count = min(text.count - offset, buffer.count)
            text.withUnsafeBytes { source in
                buffer.baseAddress!.copyMemory(from: source.baseAddress! + offset, byteCount: count)
            }
            return count
        case .directory:
            throw .isDirectory
        case .link:
            throw .invalidArgument
        }
    }

    /// An attribute's text: rendered at offset 0 and kept in the handle, so later offsets read
    /// the same value (the kernel's seq_file buffer does this for sysfs).
    private func attributeText(_ attribute: Attribute, handle: Handle, offset: Int) throws(Errno) -> [UInt8] {
        if offset != 0, let snapshot = handle.withScratch({ $0.text }) { return snapshot }
        let text = try render(attribute, handle: handle)
        handle.withScratch { $0.text = text }
        return text
    }

    public func write(_ file: any OpenFile, offset: Int, data: UnsafeRawBufferPointer) throws(Errno) -> WriteOutcome {
        guard let handle = file as? Handle else { throw .badFileDescriptor }
        defer { recorder?.commit() }
        switch handle.node {
        case .config(let address, let frontend):
            defer { if frontend != nil { flushTrace() } }
            let count = try writeConfig(address, frontend: frontend, offset: offset, data: data, handle: handle)
            return WriteOutcome(count: count)
        case .attribute(let attribute):
            if data.isEmpty { return WriteOutcome(count: 0) }
            // kernfs hands the store at most one page, whatever the file position.
            let input = StoreInput.clip(Array(data))
            defer { if case .pciOperation = attribute.kind { flushTrace() } }
            let invalidations = try store(attribute, input: input, handle: handle)
            return WriteOutcome(count: input.count, invalidations: invalidations)
        case .directory:
            throw .isDirectory
        case .link:
            throw .invalidArgument
        }
    }

    // MARK: - config

    /// Calls `body` for each naturally aligned access `pci-sysfs.c` makes of a range: a leading
    /// byte, a leading word, dwords, a trailing word and byte (no list is built: hot path).
    @inline(__always)
    static func forEachAccess<E: Error>(offset: Int, count: Int, _ body: (_ offset: Int, _ width: Int) throws(E) -> Void) throws(E) {
        var position = offset
        var remaining = count
        if position & 1 != 0 && remaining > 0 {
            try body(position, 1); position += 1; remaining -= 1
        }
        if position & 3 != 0 && remaining > 2 {
            try body(position, 2); position += 2; remaining -= 2
        }
        while remaining > 3 {
            try body(position, 4); position += 4; remaining -= 4
        }
        if remaining >= 2 {
            try body(position, 2); position += 2; remaining -= 2
        }
        if remaining > 0 { try body(position, 1) }
    }

    func readConfig(_ address: PCIAddress, frontend: UInt32?, caller: Caller, offset: Int,
                    into buffer: UnsafeMutableRawBufferPointer, handle: Handle? = nil) throws(Errno) -> Int {
        try state.withLock { state throws(Errno) -> Int in
            try state.requireLive(handle)
            guard let device = state.dom0.device(address) else { throw .noSuchDevice }
            let limit = caller.isPrivileged ? device.configSize : (device.identity.layout == .cardbus ? 128 : 64)
            guard offset < limit, !buffer.isEmpty else { return 0 }
            let count = min(buffer.count, limit - offset)
            let recorded = recorder?.recordsRead(of: device, frontend: frontend) == true
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            // dom0 reads are plain hardware reads: one copy unless a fault must fire per access.
            if frontend != nil || !device.hardwareReadBytes(offset, into: target) {
                SysfsTree.forEachAccess(offset: offset, count: count) { position, width in
                    var value: UInt32
                    if frontend != nil {
                        let verdict = state.dom0.guestRead(address, offset: position, size: width)
                        // pcifront turns an error into all-ones; the guest's core truncates to the width.
                        value = verdict.error == 0 ? verdict.value : 0xffff_ffff
                    } else {
                        value = state.dom0.hostRead(device, offset: position, width: width)
                    }
                    for index in 0..<width {
                        target[position - offset + index] = UInt8(truncatingIfNeeded: value)
                        value >>= 8
                    }
                }
            }
            if recorded {
                try recorder?.record(.configRead(address: address, frontend: frontend, offset: offset, size: buffer.count,
                                                 uid: caller.uid, gid: caller.gid))
            }
            return count
        }
    }

    func writeConfig(_ address: PCIAddress, frontend: UInt32?, offset: Int, data: UnsafeRawBufferPointer,
                     handle: Handle? = nil) throws(Errno) -> Int {
        try state.withLock { state throws(Errno) -> Int in
            try state.requireLive(handle)
            guard let device = state.dom0.device(address) else { throw .noSuchDevice }
            let limit = device.configSize
            guard !data.isEmpty else { return 0 }
            // sysfs_kf_bin_write: a write at or past the end of a sized binary file is EFBIG.
            guard offset < limit else { throw .fileTooLarge }
            let count = min(data.count, limit - offset)
            SysfsTree.forEachAccess(offset: offset, count: count) { position, width in
                var value: UInt32 = 0
                for index in stride(from: width - 1, through: 0, by: -1) {
                    value = value << 8 | UInt32(data[position - offset + index])
                }
                // Errors of the individual accesses are ignored: the write returns the count.
                if frontend != nil {
                    _ = state.dom0.guestWrite(address, offset: position, size: width, value: value)
                } else {
                    state.dom0.hostWrite(address, offset: position, width: width, value: value)
                }
            }
            try recorder?.record(.configWrite(address: address, frontend: frontend, offset: offset,
                                              bytes: Array(UnsafeRawBufferPointer(rebasing: data[0..<count]))))
            return count
        }
    }

    // MARK: - Text attributes

    private func render(_ attribute: Attribute, handle: Handle) throws(Errno) -> [UInt8] {
        if case .pciOperation(let domain) = attribute.kind {
            let own = handle.withScratch { $0.results }
            return try state.withLock { state throws(Errno) -> [UInt8] in
                try state.requireLive(handle)
                if !own.isEmpty { return Array(own.joined().utf8) }
                guard state.dom0.frontends[domain] != nil else { throw .noSuchDevice }
                return Array((state.lastOperationResult[domain] ?? "").utf8)
            }
        }
        return try state.withLock { state throws(Errno) -> [UInt8] in
            try state.requireLive(handle)
            return try state.layout.show(attribute.kind)
        }
    }

    func store(_ attribute: Attribute, input: [UInt8], handle: Handle) throws(Errno) -> [CacheInvalidation] {
        try state.withLock { state throws(Errno) -> [CacheInvalidation] in
            try state.requireLive(handle)
            if attribute.kind.mayChangeTopology { state.layoutEpoch += 1 }
            let before = state.dom0.topologyGeneration
            let entriesBefore = attribute.kind.mayChangeTopology ? state.layout.dynamicEntries() : [:]
            var wasReset = false
            try recordingStore(attribute.kind, input: input, caller: handle.caller) { () throws(Errno) in
                if case .pciOperation(let domain) = attribute.kind {
                    let line = try state.dom0.performOperationLine(input, frontend: domain)
                    state.lastOperationResult[domain] = line
                    handle.withScratch { $0.results.append(line) }
                } else if case .control(.reset) = attribute.kind {
                    try state.reset(input)
                    wasReset = true
                } else {
                    try state.dom0.store(attribute.kind, input: input, caller: handle.caller)
                }
            }
            guard attribute.kind.mayChangeTopology, state.dom0.topologyGeneration != before || wasReset
            else { return [] }
            let entriesAfter = state.layout.dynamicEntries()
            state.noteVanished(from: entriesBefore, to: entriesAfter)
            return SysfsTree.invalidations(from: entriesBefore, to: entriesAfter, inodes: state.inodes)
        }
    }

    /// Runs a store: through the recorder, which records it with its outcome, when there is one.
    private func recordingStore(_ kind: AttributeKind, input: [UInt8], caller: Caller, _ body: () throws(Errno) -> Void)
        throws(Errno)
    {
        guard let recorder else { return try body() }
        try recorder.recordingStore(kind, input: input, caller: caller, body)
    }

    /// What the kernel must forget: entries that appeared, vanished or changed target, their
    /// nodes, and their directories' attributes (a directory's link count counts its
    /// subdirectories).
    private static func invalidations(from before: [String: String], to after: [String: String], inodes: InodeTable)
        -> [CacheInvalidation]
    {
        var result: [CacheInvalidation] = []
        var parents = Set<Inode>()
        for key in Set(before.keys).union(after.keys) where before[key] != after[key] {
            let parts = key.split(separator: "\u{0}", maxSplits: 1).map(String.init)
            guard parts.count == 2, let parent = inodes.existingInode(for: parts[0]) else { continue }
            result.append(.entry(parent: parent, name: parts[1]))
            if let inode = inodes.existingInode(for: joinPath(parts[0], parts[1])) { result.append(.inode(inode)) }
            parents.insert(parent)
        }
        return result + parents.sorted().map { .inode($0) }
    }
}


#if canImport(Glibc)
import Glibc
#endif

/// The optional JSON-lines trace file: one `write(2)` per batch on an O_APPEND descriptor.
public final class TraceLog: Sendable {
    private let descriptor: Int32

    public init(path: String) throws(Errno) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Errno(errno) }
        descriptor = fd
    }

    deinit { close(descriptor) }

    func append(_ records: [TraceRecord]) {
        guard !records.isEmpty else { return }
        let text = records.map { $0.json + "\n" }.joined()
        _ = text.utf8CString.withUnsafeBufferPointer { buffer in
            Glibc.write(descriptor, buffer.baseAddress, buffer.count - 1)
        }
    }
}
