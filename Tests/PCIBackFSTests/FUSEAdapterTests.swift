import Foundation
import Testing

@testable import PCIBackFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// End-to-end tests of the FUSE adapter: a small in-memory model is mounted in this process on
// a temporary directory and driven with plain syscalls. Every mount has a watchdog that
// aborts the FUSE connection if a test hangs, and a teardown that falls back to
// `fusermount3 -u -z`.

extension Trait where Self == ConditionTrait {
    /// Mount tests need /dev/fuse (and the right to mount, which root has).
    fileprivate static var requiresFUSE: Self {
        .enabled(if: FUSETestSupport.canMount, "skipped: /dev/fuse is missing or can't be opened read-write")
    }
}

@Suite("FUSE adapter")
struct FUSEAdapterTests {
    @Test("the -o list: default_permissions always, escaped fsname/subtype, optional flags")
    func mountOptionList() {
        #expect(FUSEServer.Options().mountOptionList == "default_permissions,fsname=pcibackfs,subtype=pcibackfs")
        let options = FUSEServer.Options(allowOther: true, fsName: "a,b\\c", subtype: "x", autoUnmount: true)
        #expect(options.mountOptionList == "default_permissions,fsname=a\\,b\\\\c,subtype=x,allow_other,auto_unmount")
        #expect(FUSEServer.Options().maxThreads == 8)
        #expect(FUSEServer.Options().cloneFD)
    }

    @Test("read returns the exact bytes; reads past EOF return 0", .requiresFUSE)
    func readsExactBytes() throws {
        try withToyMount { mount throws in
            #expect(try readAll(mount.path("readonly")) == Array("hello\n".utf8))
            #expect(try readAll(mount.path("readonly"), chunk: 1) == Array("hello\n".utf8))
            #expect(try readAll(mount.path("sub/inner")) == Array("inner\n".utf8))
            #expect(try pread(mount.path("readonly"), offset: 2, count: 100) == Array("llo\n".utf8))
            #expect(try pread(mount.path("readonly"), offset: 6, count: 100) == [])
            #expect(try pread(mount.path("readonly"), offset: 5000, count: 100) == [])
        }
    }

    @Test("a file whose content changes is read fresh on every open (direct_io)", .requiresFUSE)
    func contentChanges() throws {
        try withToyMount { mount throws in
            #expect(try readAll(mount.path("counter")) == Array("1\n".utf8))
            #expect(try readAll(mount.path("counter")) == Array("2\n".utf8))
            #expect(try readAll(mount.path("counter"), chunk: 1) == Array("3\n".utf8))
        }
    }

    @Test("a store error comes back from write(2) with its errno", .requiresFUSE)
    func writeErrors() throws {
        try withToyMount { mount throws in
            let fd = open(mount.path("sink"), O_WRONLY)
            #expect(fd >= 0)
            guard fd >= 0 else { return }
            defer { close(fd) }
            #expect(writeString(fd, "bad\n") == .failure(Errno(EINVAL)))
            #expect(writeString(fd, "good\n") == .success(5))
            #expect(writeString(fd, "bad") == .failure(Errno(EINVAL)))
            #expect(mount.model.stores == ["good\n"])
        }
    }

    @Test("open(O_WRONLY|O_TRUNC) and truncate(2) work on an attribute; chmod and utimes don't", .requiresFUSE)
    func truncation() throws {
        try withToyMount { mount throws in
            let path = mount.path("attr")
            let fd = open(path, O_WRONLY | O_TRUNC)
            #expect(fd >= 0, "open(O_TRUNC): \(Errno(errno))")
            if fd >= 0 {
                #expect(writeString(fd, "42\n") == .success(3))
                close(fd)
            }
            #expect(try readAll(path) == Array("42\n".utf8))
            #expect(truncate(path, 0) == 0, "truncate: \(Errno(errno))")
            #expect(truncate(mount.path("sink"), 0) == 0, "truncate: \(Errno(errno))")
            #expect(try readAll(path) == Array("42\n".utf8), "sysfs ignores truncation")
            #expect(mount.model.truncations >= 2)

            #expect(chmod(path, 0o600) == -1 && errno == EPERM)
            #expect(chown(path, 1, 1) == -1 && errno == EPERM)
            #expect(utimes(path, nil) == -1 && errno == EPERM)
        }
    }

    @Test("a changed symlink target and changed attributes are visible right after the write", .requiresFUSE)
    func invalidation() throws {
        try withToyMount { mount throws in
            let link = mount.path("link")
            let grows = mount.path("grows")
            // Prime the kernel caches: the entry and attributes are valid for 60 s.
            #expect(try readlink(link) == "target-0")
            let firstInode = try linkStatus(link).st_ino
            #expect(try fileStatus(grows).st_size == 1)

            for generation in 1...5 {
                let fd = open(mount.path("switch"), O_WRONLY)
                #expect(fd >= 0)
                guard fd >= 0 else { return }
                #expect(writeString(fd, "\(generation)\n") == .success(2))
                close(fd)
                // No sleeping: the write's invalidations must already be in effect.
                #expect(try readlink(link) == "target-\(generation)")
                #expect(try linkStatus(link).st_size == "target-\(generation)".utf8.count)
                #expect(try fileStatus(grows).st_size == off_t(generation + 1))
                #expect(try readAll(grows).count == generation + 1)
            }
            #expect(try linkStatus(link).st_ino != firstInode)
        }
    }

    @Test("EACCES from the model comes through open(2)", .requiresFUSE)
    func accessErrors() throws {
        try withToyMount { mount throws in
            // As root the kernel's mode check passes; the model (like kernfs) refuses.
            #expect(open(mount.path("readonly"), O_WRONLY) == -1 && errno == EACCES)
            #expect(open(mount.path("readonly"), O_RDWR) == -1 && errno == EACCES)
            #expect(open(mount.path("sink"), O_RDONLY) == -1 && errno == EACCES)
            #expect(open(mount.path("missing"), O_RDONLY) == -1 && errno == ENOENT)
            #expect(open(mount.path("readonly/x"), O_RDONLY) == -1 && errno == ENOTDIR)
        }
    }

    @Test("stat shows the model's types, modes, sizes and link counts", .requiresFUSE)
    func attributes() throws {
        try withToyMount { mount throws in
            let readonly = try fileStatus(mount.path("readonly"))
            #expect(readonly.st_mode == S_IFREG | 0o444)
            #expect(readonly.st_size == 4096)
            #expect(readonly.st_nlink == 1)
            #expect(readonly.st_uid == 0 && readonly.st_gid == 0)
            #expect(readonly.st_ino == 2)
            #expect(readonly.st_mtim.tv_sec > 0)

            #expect(try fileStatus(mount.path("sink")).st_mode == S_IFREG | 0o200)
            #expect(try fileStatus(mount.path("attr")).st_mode == S_IFREG | 0o644)

            let sub = try fileStatus(mount.path("sub"))
            #expect(sub.st_mode == S_IFDIR | 0o755)
            #expect(sub.st_nlink == 2)

            let root = try fileStatus(mount.root)
            #expect(root.st_mode == S_IFDIR | 0o755)
            #expect(root.st_ino == 1)

            let link = try linkStatus(mount.path("link"))
            #expect(link.st_mode == S_IFLNK | 0o777)
            #expect(link.st_size == 8)

            var fs = statvfs()
            #expect(statvfs(mount.root, &fs) == 0)
            #expect(fs.f_bsize == 4096)
        }
    }

    @Test("readdir lists every entry, with . and .., across several READDIR calls", .requiresFUSE)
    func directoryListing() throws {
        try withToyMount { mount throws in
            #expect(try listDirectory(mount.root) == [
                ".", "..", "attr", "counter", "grows", "link", "many", "readonly", "sink", "sub", "switch",
            ])
            #expect(try listDirectory(mount.path("sub")) == [".", "..", "inner"])
            // 56 bytes per FUSE dirent: more than one READDIR reply even with a 32 KiB getdents buffer.
            let many = try listDirectory(mount.path("many"))
            #expect(many.count == ToyModel.manyCount + 2)
            #expect(Set(many).count == many.count)
            #expect(many.contains(ToyModel.manyName(0)) && many.contains(ToyModel.manyName(ToyModel.manyCount - 1)))
            let (first, resumed) = try seekInDirectory(mount.path("many"), count: 20, resumeAfter: 9)
            #expect(first.count == 20)
            #expect(resumed == Array(first[10...]) + Array(many[20..<30]))
        }
    }

    @Test("concurrent clients on several worker threads", .requiresFUSE)
    func concurrentClients() throws {
        try withToyMount(options: .init(maxThreads: 8, installsSignalHandlers: false)) { mount throws in
            let failures = Locked<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 8) { client in
                for round in 0..<50 {
                    do {
                        guard try readAll(mount.path("readonly")) == Array("hello\n".utf8) else {
                            throw Errno.ioError
                        }
                        if client % 2 == 0 {
                            let fd = open(mount.path("switch"), O_WRONLY)
                            guard fd >= 0 else { throw Errno(errno) }
                            defer { close(fd) }
                            guard case .success = writeString(fd, "\(round)\n") else { throw Errno(errno) }
                        } else {
                            guard try readlink(mount.path("link")).hasPrefix("target-") else { throw Errno.ioError }
                        }
                    } catch {
                        failures.withLock { $0.append("client \(client) round \(round): \(error)") }
                    }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty)
            #expect(try readlink(mount.path("link")) == "target-200")
        }
    }

    @Test("mount options; exit() stops run(), unmount() removes the mount", .requiresFUSE)
    func lifecycle() throws {
        var root = ""
        try withToyMount(options: .init(allowOther: true, maxThreads: 2, cloneFD: false, installsSignalHandlers: false)) { mount throws in
            root = mount.root
            let line = try #require(FUSETestSupport.mountInfoLine(for: mount.root))
            #expect(line.fileSystemType == "fuse.pcibackfs")
            #expect(line.source == "pcibackfs")
            #expect(line.superOptions.contains("default_permissions"))
            #expect(line.superOptions.contains("allow_other"))
            #expect(mount.server.isRunning)
            #expect(mount.server.mountPoint == mount.root)
            #expect(throws: Errno.resourceBusy) { try mount.server.mount(at: mount.root) }
            #expect(throws: Errno.resourceBusy) { try mount.server.run() }
            #expect(try readAll(mount.path("readonly")) == Array("hello\n".utf8))
        } after: { mount, termination in
            #expect(termination == .exitRequested)
            #expect(mount.server.isRunning == false)
            #expect(mount.server.mountPoint == nil)
        }
        #expect(FUSETestSupport.mountInfoLine(for: root) == nil)
    }

    @Test("mounting on something that is not a directory fails with its errno", .requiresFUSE)
    func mountErrors() {
        let server = FUSEServer(model: ToyModel(), options: .init(installsSignalHandlers: false))
        #expect(throws: Errno.noSuchFileOrDirectory) { try server.mount(at: "/nonexistent/pcibackfs") }
        #expect(throws: Errno.notDirectory) { try server.mount(at: "/dev/null") }
        #expect(throws: Errno(ENOTCONN)) { try server.run() }
        #expect(server.mountPoint == nil)
    }

    @Test("run() returns .unmounted when the file system is unmounted from outside", .requiresFUSE)
    func externalUnmount() throws {
        try withToyMount { mount throws in
            #expect(try readAll(mount.path("readonly")) == Array("hello\n".utf8))
            #expect(mount.releasesSettle())
            #expect(umount2(mount.root, 0) == 0, "umount: \(Errno(errno))")
            #expect(mount.loop.waitUntilFinished(seconds: 3))
            #expect(mount.loop.termination == .unmounted)
        }
    }

    @Test("exit() before run() makes run() return at once", .requiresFUSE)
    func exitBeforeRun() throws {
        try withToyMount(beforeRun: { $0.exit() }) { mount throws in
            #expect(mount.loop.waitUntilFinished(seconds: 3))
            #expect(mount.loop.termination == .exitRequested)
        }
    }

    @Test("libfuse's signal handlers end run() with .signal and are removed afterwards", .requiresFUSE)
    func signals() throws {
        // Only use a signal whose disposition is the default, so libfuse installs its handler
        // (it leaves other dispositions alone) and nothing else in the runner reacts to it.
        guard let signal = [SIGHUP, SIGTERM, SIGINT].first(where: { FUSETestSupport.hasDefaultDisposition($0) }) else {
            return
        }
        // The handlers are process-wide, so the two cases run one after the other.
        for target in ["the loop's thread", "another thread"] {
            try withToyMount(options: .init(maxThreads: 2, installsSignalHandlers: true)) { mount throws in
                #expect(try readAll(mount.path("readonly")) == Array("hello\n".utf8))
                #expect(mount.releasesSettle())
                try #require(!FUSETestSupport.hasDefaultDisposition(signal), "libfuse did not install its handler")
                if target == "another thread" {
                    // The handler runs there; the server's watcher has to wake the loop.
                    FUSETestSupport.raiseOnFreshThread(signal)
                } else {
                    // run() unblocked the signal on its thread, whatever the caller's mask was.
                    #expect(pthread_kill(try #require(mount.loop.thread), signal) == 0)
                }
                #expect(mount.loop.waitUntilFinished(seconds: 3), "signal on \(target)")
                #expect(mount.loop.termination == .signal(signal), "signal on \(target)")
                #expect(FUSETestSupport.hasDefaultDisposition(signal), "handler not removed after run()")
            }
        }
    }
}

// MARK: - The toy file system

/// A small, thread-safe model: every `FileSystemModel` behaviour the adapter has to carry.
///
/// ```
/// /            0755 dir
///   readonly   0444 "hello\n" (st_size 4096, like sysfs)
///   sink       0200 records stores; "bad" → EINVAL
///   attr       0644 holds the last store
///   counter    0444 "N\n", N increases with every open
///   switch     0200 any store bumps the generation (invalidates link and grows)
///   link       symlink → "target-<generation>", new inode per generation, cached 60 s
///              (an old generation's inode keeps its old target)
///   grows      0444 generation+1 bytes of "x", exact st_size, cached 60 s
///   sub/inner  0644 "inner\n"
///   many/      manyCount files with long names
/// ```
private final class ToyModel: FileSystemModel {
    static let manyCount = 1500
    static let manyBase: Inode = 10_000
    static let linkBase: Inode = 1_000

    enum Node: Inode {
        case root = 1, readonly, sink, attr, counter, switcher, grows, sub, inner, many
    }

    struct State {
        var generation = 0
        var opens = 0
        var attr = Array("0\n".utf8)
        var counter = 0
        var stores: [String] = []
        var openFiles = 0
        var truncations = 0
    }

    let state = Locked(State())

    var stores: [String] { state.withLock { $0.stores } }
    var openFiles: Int { state.withLock { $0.openFiles } }
    var truncations: Int { state.withLock { $0.truncations } }

    final class File: OpenFile {
        let inode: Inode
        let snapshot: [UInt8]
        init(inode: Inode, snapshot: [UInt8]) {
            self.inode = inode
            self.snapshot = snapshot
        }
    }

    static func manyName(_ index: Int) -> String {
        "entry-with-a-longish-name-" + String(repeating: "0", count: max(0, 4 - String(index).count)) + String(index)
    }

    private func linkTarget(_ generation: Int) -> String { "target-\(generation)" }

    private func node(_ inode: Inode, _ state: State) throws(Errno) -> NodeStat {
        if inode >= Self.linkBase, inode <= Self.linkBase + Inode(state.generation) {
            // Older generations stay readable, like a kernfs node still referenced after removal.
            let target = linkTarget(Int(inode - Self.linkBase))
            return NodeStat(inode: inode, kind: .symlink, mode: 0o777, size: target.utf8.count, cacheSeconds: 60)
        }
        if inode >= Self.manyBase, inode < Self.manyBase + Inode(Self.manyCount) {
            return NodeStat(inode: inode, kind: .regularFile, mode: 0o444, size: 4096, cacheSeconds: 60)
        }
        guard let node = Node(rawValue: inode) else { throw .noSuchFileOrDirectory }
        switch node {
        case .root: return NodeStat(inode: inode, kind: .directory, mode: 0o755, size: 0, linkCount: 4, cacheSeconds: 60)
        case .sub, .many: return NodeStat(inode: inode, kind: .directory, mode: 0o755, size: 0, linkCount: 2, cacheSeconds: 60)
        case .readonly, .counter: return NodeStat(inode: inode, kind: .regularFile, mode: 0o444, size: 4096, cacheSeconds: 60)
        case .sink, .switcher: return NodeStat(inode: inode, kind: .regularFile, mode: 0o200, size: 4096, cacheSeconds: 60)
        case .attr, .inner: return NodeStat(inode: inode, kind: .regularFile, mode: 0o644, size: 4096, cacheSeconds: 60)
        case .grows: return NodeStat(inode: inode, kind: .regularFile, mode: 0o444, size: state.generation + 1, cacheSeconds: 60)
        }
    }

    private func entries(_ inode: Inode, _ state: State) throws(Errno) -> [DirectoryEntry] {
        switch Node(rawValue: inode) {
        case .root:
            return [
                DirectoryEntry(name: "attr", inode: Node.attr.rawValue, kind: .regularFile),
                DirectoryEntry(name: "counter", inode: Node.counter.rawValue, kind: .regularFile),
                DirectoryEntry(name: "grows", inode: Node.grows.rawValue, kind: .regularFile),
                DirectoryEntry(name: "link", inode: Self.linkBase + Inode(state.generation), kind: .symlink),
                DirectoryEntry(name: "many", inode: Node.many.rawValue, kind: .directory),
                DirectoryEntry(name: "readonly", inode: Node.readonly.rawValue, kind: .regularFile),
                DirectoryEntry(name: "sink", inode: Node.sink.rawValue, kind: .regularFile),
                DirectoryEntry(name: "sub", inode: Node.sub.rawValue, kind: .directory),
                DirectoryEntry(name: "switch", inode: Node.switcher.rawValue, kind: .regularFile),
            ]
        case .sub:
            return [DirectoryEntry(name: "inner", inode: Node.inner.rawValue, kind: .regularFile)]
        case .many:
            return (0..<Self.manyCount).map {
                DirectoryEntry(name: Self.manyName($0), inode: Self.manyBase + Inode($0), kind: .regularFile)
            }
        case nil:
            _ = try node(inode, state)
            throw .notDirectory
        default:
            throw .notDirectory
        }
    }

    func lookup(parent: Inode, name: String) throws(Errno) -> NodeStat {
        try state.withLock { state throws(Errno) in
            guard let entry = try entries(parent, state).first(where: { $0.name == name }) else {
                throw .noSuchFileOrDirectory
            }
            return try node(entry.inode, state)
        }
    }

    func getattr(_ inode: Inode) throws(Errno) -> NodeStat {
        try state.withLock { state throws(Errno) in try node(inode, state) }
    }

    func readlink(_ inode: Inode) throws(Errno) -> String {
        try state.withLock { state throws(Errno) in
            guard inode >= Self.linkBase, inode <= Self.linkBase + Inode(state.generation) else {
                throw .noSuchFileOrDirectory
            }
            return linkTarget(Int(inode - Self.linkBase))
        }
    }

    func readdir(_ inode: Inode) throws(Errno) -> [DirectoryEntry] {
        try state.withLock { state throws(Errno) in try entries(inode, state) }
    }

    func open(_ inode: Inode, flags: Int32, caller: Caller) throws(Errno) -> any OpenFile {
        try state.withLock { state throws(Errno) in
            let node = try node(inode, state)
            guard node.kind == .regularFile else { throw .isDirectory }
            let access = flags & O_ACCMODE
            if access != O_WRONLY, node.mode & 0o444 == 0 { throw .permissionDenied }
            if access != O_RDONLY, node.mode & 0o222 == 0 { throw .permissionDenied }
            let content: [UInt8]
            switch Node(rawValue: inode) {
            case .readonly: content = Array("hello\n".utf8)
            case .inner: content = Array("inner\n".utf8)
            case .attr: content = state.attr
            case .counter:
                state.counter += 1
                content = Array("\(state.counter)\n".utf8)
            case .grows: content = Array(repeating: UInt8(ascii: "x"), count: state.generation + 1)
            default: content = []
            }
            state.openFiles += 1
            return File(inode: inode, snapshot: content)
        }
    }

    func read(_ file: any OpenFile, offset: Int, size: Int) throws(Errno) -> [UInt8] {
        let file = file as! File
        guard offset < file.snapshot.count else { return [] }
        return Array(file.snapshot[offset..<min(file.snapshot.count, offset + size)])
    }

    func write(_ file: any OpenFile, offset: Int, data: UnsafeRawBufferPointer) throws(Errno) -> WriteOutcome {
        let file = file as! File
        let bytes = Array(data)
        let text = String(decoding: bytes, as: UTF8.self)
        return try state.withLock { state throws(Errno) in
            switch Node(rawValue: file.inode) {
            case .sink:
                if text.hasPrefix("bad") { throw .invalidArgument }
                state.stores.append(text)
                return WriteOutcome(count: bytes.count)
            case .attr:
                state.attr = bytes
                return WriteOutcome(count: bytes.count)
            case .switcher:
                state.generation += 1
                return WriteOutcome(count: bytes.count, invalidations: [
                    .entry(parent: Node.root.rawValue, name: "link"),
                    .inode(Node.grows.rawValue),
                ])
            default:
                throw .ioError
            }
        }
    }

    func release(_ file: any OpenFile) {
        state.withLock { $0.openFiles -= 1 }
    }

    func truncate(_ inode: Inode, caller: Caller) throws(Errno) -> NodeStat {
        try state.withLock { state throws(Errno) in
            let node = try node(inode, state)
            guard node.kind == .regularFile else { throw .isDirectory }
            state.truncations += 1
            return node
        }
    }
}

// MARK: - Mounting in-process

private struct ToyMount {
    let root: String
    let model: ToyModel
    let server: FUSEServer
    let loop: LoopThread

    func path(_ relative: String) -> String { root + "/" + relative }

    /// Waits until every opened file has been released (RELEASE is asynchronous).
    func releasesSettle() -> Bool {
        FUSETestSupport.poll(seconds: 2) { model.openFiles == 0 }
    }
}

/// Mounts a fresh `ToyModel`, runs `body`, then tears down. A watchdog aborts the FUSE
/// connection after `timeLimit` seconds so that a hang makes the test fail instead of hang.
private func withToyMount(
    options: FUSEServer.Options = .init(maxThreads: 4, installsSignalHandlers: false),
    timeLimit: Double = 20,
    beforeRun: (FUSEServer) -> Void = { _ in },
    _ body: (ToyMount) throws -> Void,
    after: (ToyMount, FUSEServer.Termination?) -> Void = { _, _ in }
) throws {
    var template = Array("/tmp/pcibackfs-fuse-XXXXXX".utf8CString)
    guard let created = mkdtemp(&template) else { throw Errno(errno) }
    let root = String(cString: created)
    defer { rmdir(root) }

    let model = ToyModel()
    var options = options
    options.debug = ProcessInfo.processInfo.environment["PCIBACKFS_FUSE_DEBUG"] != nil
    let server = FUSEServer(model: model, options: options)
    try server.mount(at: root)
    let connection = FUSETestSupport.mountInfoLine(for: root)?.connection

    let loop = LoopThread(server: server)
    let mount = ToyMount(root: root, model: model, server: server, loop: loop)
    beforeRun(server)
    loop.start()
    let watchdog = Watchdog(seconds: timeLimit, root: root, connection: connection)
    watchdog.start()

    var bodyError: (any Error)?
    if loop.waitUntilReady(seconds: 5) {
        do { try body(mount) } catch { bodyError = error }
    } else {
        Issue.record("the FUSE loop did not start")
    }

    // close(2) sends RELEASE asynchronously: give it a moment, then every handle must be back.
    // (Only while the loop runs: libfuse drops requests it reads after the exit flag is set.)
    if !loop.isFinished {
        #expect(mount.releasesSettle(), "open/release not balanced")
    }

    // Teardown: ask the loop to stop; if it doesn't, force the kernel side away.
    server.exit()
    var stopped = loop.waitUntilFinished(seconds: 3)
    if !stopped {
        Issue.record("the FUSE loop did not stop after exit(); forcing an unmount")
        FUSETestSupport.forceUnmount(root: root, connection: connection)
        stopped = loop.waitUntilFinished(seconds: 3)
    }
    watchdog.cancel()
    #expect(!watchdog.fired, "the watchdog had to abort the FUSE connection (a request hung)")
    guard stopped else {
        Issue.record("the FUSE loop is stuck; leaking it")
        return
    }
    server.unmount()
    #expect(FUSETestSupport.mountInfoLine(for: root) == nil, "still mounted after unmount()")
    after(mount, loop.termination)
    if let bodyError { throw bodyError }
}

/// Runs `server.run()` on its own thread and reports readiness and the outcome.
private final class LoopThread: Sendable {
    let server: FUSEServer
    private let status = Locked<(ready: Bool, finished: Bool, termination: FUSEServer.Termination?, thread: pthread_t?)>(
        (false, false, nil, nil))

    init(server: FUSEServer) { self.server = server }

    func start() {
        let thread = Thread { [self] in
            status.withLock { $0.thread = pthread_self() }
            let termination = try? server.run(onReady: { self.status.withLock { $0.ready = true } })
            status.withLock {
                $0.finished = true
                $0.termination = termination
            }
        }
        thread.name = "fuse-loop"
        thread.start()
    }

    var termination: FUSEServer.Termination? { status.withLock { $0.termination } }
    /// The thread inside `run()`, once started.
    var thread: pthread_t? { status.withLock { $0.thread } }

    func waitUntilReady(seconds: Double) -> Bool {
        FUSETestSupport.poll(seconds: seconds) { status.withLock { $0.ready || $0.finished } }
            && status.withLock { $0.ready }
    }

    var isFinished: Bool { status.withLock { $0.finished } }

    func waitUntilFinished(seconds: Double) -> Bool {
        FUSETestSupport.poll(seconds: seconds) { status.withLock { $0.finished } }
    }
}

/// Aborts the FUSE connection (and lazily unmounts) if the test is still running at the deadline.
private final class Watchdog: Sendable {
    let seconds: Double
    let root: String
    let connection: String?
    private let state = Locked<(cancelled: Bool, fired: Bool)>((false, false))

    init(seconds: Double, root: String, connection: String?) {
        self.seconds = seconds
        self.root = root
        self.connection = connection
    }

    var fired: Bool { state.withLock { $0.fired } }

    func start() {
        Thread { [self] in
            if FUSETestSupport.poll(seconds: seconds, { state.withLock { $0.cancelled } }) { return }
            state.withLock { $0.fired = true }
            FUSETestSupport.forceUnmount(root: root, connection: connection)
        }.start()
    }

    func cancel() { state.withLock { $0.cancelled = true } }
}

private enum FUSETestSupport {
    static var canMount: Bool {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    struct MountInfo: Equatable {
        var connection: String  // minor device number: /sys/fs/fuse/connections/<n>
        var fileSystemType: String
        var source: String
        var superOptions: String
    }

    /// The /proc/self/mountinfo entry for a mount point (read without touching the mount).
    static func mountInfoLine(for mountPoint: String) -> MountInfo? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let fields = halves[0].split(separator: " ")
            let tail = halves[1].split(separator: " ")
            guard fields.count >= 5, tail.count >= 3, fields[4] == mountPoint else { continue }
            let device = fields[2].split(separator: ":")
            return MountInfo(
                connection: device.count == 2 ? String(device[1]) : "",
                fileSystemType: String(tail[0]),
                source: String(tail[1]),
                superOptions: String(tail[2])
            )
        }
        return nil
    }

    static func hasDefaultDisposition(_ signal: Int32) -> Bool {
        var action = sigaction()
        guard sigaction(signal, nil, &action) == 0 else { return false }
        return action.__sigaction_handler.sa_handler == nil  // SIG_DFL
    }

    /// Sends `signal` to a new thread that has it unblocked (test-runner threads block it) and
    /// waits until that thread is done, i.e. the handler has run there.
    static func raiseOnFreshThread(_ signal: Int32) {
        let done = Locked(false)
        Thread {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, signal)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            pthread_kill(pthread_self(), signal)
            done.withLock { $0 = true }
        }.start()
        _ = poll(seconds: 2) { done.withLock { $0 } }
    }

    static func forceUnmount(root: String, connection: String?) {
        if let connection, !connection.isEmpty {
            let abort = open("/sys/fs/fuse/connections/\(connection)/abort", O_WRONLY)
            if abort >= 0 {
                _ = Glibc.write(abort, "1", 1)
                close(abort)
            }
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        process.arguments = ["-u", "-z", root]
        process.standardError = FileHandle.nullDevice
        if (try? process.run()) != nil { process.waitUntilExit() }
    }

    /// Polls `condition` every 2 ms until it holds (true) or `seconds` pass (false).
    static func poll(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(2000)
        }
        return condition()
    }
}

// MARK: - Syscall helpers (errors as Errno)

private func readAll(_ path: String, chunk: Int = 4096) throws(Errno) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw Errno(errno) }
    defer { close(fd) }
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: chunk)
    while true {
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, chunk) }
        guard count >= 0 else { throw Errno(errno) }
        if count == 0 { return result }
        result += buffer[0..<count]
    }
}

private func pread(_ path: String, offset: Int, count: Int) throws(Errno) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw Errno(errno) }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: count)
    let got = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, off_t(offset)) }
    guard got >= 0 else { throw Errno(errno) }
    return Array(buffer[0..<got])
}

private func writeString(_ fd: Int32, _ text: String) -> Result<Int, Errno> {
    let bytes = Array(text.utf8)
    let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    return written >= 0 ? .success(written) : .failure(Errno(errno))
}

private func readlink(_ path: String) throws(Errno) -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = Glibc.readlink(path, &buffer, buffer.count - 1)
    guard count >= 0 else { throw Errno(errno) }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

private func fileStatus(_ path: String) throws(Errno) -> stat {
    var result = stat()
    guard stat(path, &result) == 0 else { throw Errno(errno) }
    return result
}

private func linkStatus(_ path: String) throws(Errno) -> stat {
    var result = stat()
    guard lstat(path, &result) == 0 else { throw Errno(errno) }
    return result
}

/// Directory entries in the order readdir(3) returns them.
private func listDirectory(_ path: String) throws(Errno) -> [String] {
    try withDirectory(path) { directory in
        var names: [String] = []
        while let entry = readdir(directory) {
            names.append(entryName(entry))
        }
        return names
    }
}

/// Reads `count` entries, remembering telldir(3) after each, then seeks back to the position
/// after entry `resumeAfter` and reads on: the kernel resumes READDIR at that offset.
private func seekInDirectory(_ path: String, count: Int, resumeAfter: Int) throws(Errno) -> (first: [String], resumed: [String]) {
    try withDirectory(path) { directory in
        var first: [String] = []
        var positions: [Int] = []
        while first.count < count, let entry = readdir(directory) {
            first.append(entryName(entry))
            positions.append(telldir(directory))
        }
        seekdir(directory, positions[resumeAfter])
        var resumed: [String] = []
        while resumed.count < count, let entry = readdir(directory) {
            resumed.append(entryName(entry))
        }
        return (first, resumed)
    }
}

private func withDirectory<T>(_ path: String, _ body: (OpaquePointer) -> T) throws(Errno) -> T {
    guard let directory = opendir(path) else { throw Errno(errno) }
    defer { closedir(directory) }
    return body(directory)
}

private func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
    // Read the name in place: glibc allocates each entry only as long as its name, so copying
    // the whole struct (entry.pointee) reads past it.
    let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
    return String(cString: UnsafeRawPointer(entry).advanced(by: offset).assumingMemoryBound(to: CChar.self))
}
