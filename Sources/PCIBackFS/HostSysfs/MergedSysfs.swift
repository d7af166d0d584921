#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A whole `/sys`: the emulated machine where it has something to say, the host's live sysfs
/// everywhere else, and nothing of the host's PCI hardware.
///
/// Ownership is decided per directory. The emulated tree's entries always win. A few of its
/// directories are *shared containers*, where the host's entries live beside the emulation's
/// (the root, `bus`, `devices`, `fs`, `module`, `class` and each class, `block`, `dev/block`,
/// `dev/char`, `kernel`, `kernel/iommu_groups`); every other emulated directory is the
/// emulation's alone (`bus/pci`, `devices/pci0000:00`, `module/xen_pciback`, ...). Below a
/// host directory everything is the host's, filtered by `HostVisibility` and by one more rule:
/// a host link is shown only when its target exists in the merged view, so every link resolves.
///
/// Inodes: emulated entries keep the tree's numbers (so the tree's cache invalidations apply
/// unchanged); host entries get numbers from `hostInodeBase` on, stable per path. Host entries
/// are live: the kernel may cache them for `hostCacheSeconds`.
public final class MergedSysfs: FileSystemModel {
    public let tree: SysfsTree
    public let host: HostSysfs
    let visibility: HostVisibility
    private let hostInodes = Locked(HostInodeTable())
    /// Called after a store into the emulated tree changed what exists (it returned cache
    /// invalidations), outside every lock: `run` mirrors the interfaces into its network.
    private let treeChanged: (@Sendable () -> Void)?

    static let hostInodeBase: Inode = 1 << 40
    static let hostCacheSeconds = 1.0
    /// Link chains followed when checking that a host link resolves.
    private static let linkDepth = 8

    public init(tree: SysfsTree, host: HostSysfs, treeChanged: (@Sendable () -> Void)? = nil) {
        self.tree = tree
        self.host = host
        self.visibility = HostVisibility(host: host)
        self.treeChanged = treeChanged
    }

    /// Emulated directories where host entries are listed too.
    static func isSharedContainer(_ path: String) -> Bool {
        if path.isEmpty { return true }
        let parts = pathComponents(path)
        if parts.count == 1 { return true }
        return parts.count == 2 && (parts[0] == "class" || parts[0] == "dev" || path == "kernel/iommu_groups")
    }

    // MARK: - Places

    private enum Place {
        case emulated(Inode)
        case host(String)
    }

    private func place(of inode: Inode) -> Place? {
        if inode < Self.hostInodeBase { return .emulated(inode) }
        return hostInodes.withLock { $0.path(of: inode) }.map { .host($0) }
    }

    private func hostInode(for path: String) -> Inode {
        hostInodes.withLock { $0.inode(for: path) }
    }

    /// The stat of visible host entry `path`, or nil when it is hidden or absent.
    private func hostStat(_ path: String) -> NodeStat? {
        guard let status = visibleHostStatus(path, depth: Self.linkDepth) else { return nil }
        return NodeStat(inode: hostInode(for: path), kind: status.kind, mode: status.mode,
                        size: status.kind == .regularFile ? status.size : 0,
                        linkCount: status.linkCount, cacheSeconds: Self.hostCacheSeconds)
    }

    private func visibleHostStatus(_ path: String, depth: Int) -> HostSysfs.Status? {
        guard !visibility.hides(path), let status = host.status(path) else { return nil }
        switch status.kind {
        case .symlink:
            guard depth > 0, let target = try? host.linkTarget(path) else { return nil }
            let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
            // A link that leaves the tree is the host's own business; one into it must resolve.
            if let resolved = resolveLink(target, in: directory), !exists(resolved, depth: depth - 1) { return nil }
        case .directory:
            if isHostIOMMUGroupWithHiddenDevices(path) { return nil }
        case .regularFile:
            break
        }
        return status
    }

    /// `kernel/iommu_groups/N` of the host whose devices are host PCI functions: hidden whole.
    private func isHostIOMMUGroupWithHiddenDevices(_ path: String) -> Bool {
        let parts = pathComponents(path)
        guard parts.count == 3, parts[0] == "kernel", parts[1] == "iommu_groups" else { return false }
        for entry in (try? host.entries(in: path + "/devices")) ?? [] where entry.kind == .symlink {
            let link = path + "/devices/" + entry.name
            if let target = try? host.linkTarget(link), let resolved = resolveLink(target, in: path + "/devices"),
               visibility.hides(resolved) {
                return true
            }
        }
        return false
    }

    /// Whether `path` names something in the merged view.
    private func exists(_ path: String, depth: Int) -> Bool {
        var current = Place.emulated(rootInode)
        var currentPath = ""
        for name in path.isEmpty ? [] : pathComponents(path) {
            let childPath = joinPath(currentPath, name)
            switch current {
            case .emulated(let inode):
                if let child = try? tree.lookup(parent: inode, name: name) {
                    current = .emulated(child.inode)
                } else if Self.isSharedContainer(currentPath) {
                    current = .host(childPath)
                } else {
                    return false
                }
            case .host:
                current = .host(childPath)
            }
            currentPath = childPath
        }
        if case .host(let hostPath) = current { return visibleHostStatus(hostPath, depth: depth) != nil }
        return true
    }

    // MARK: - FileSystemModel

    public func lookup(parent: Inode, name: String) throws(Errno) -> NodeStat {
        switch place(of: parent) {
        case .emulated(let inode):
            do {
                return try tree.lookup(parent: inode, name: name)
            } catch {
                guard error == .noSuchFileOrDirectory, let path = tree.path(of: inode), Self.isSharedContainer(path),
                      let stat = hostStat(joinPath(path, name))
                else { throw error }
                return stat
            }
        case .host(let path):
            guard let stat = hostStat(joinPath(path, name)) else { throw .noSuchFileOrDirectory }
            return stat
        case nil:
            throw .noSuchFileOrDirectory
        }
    }

    public func getattr(_ inode: Inode) throws(Errno) -> NodeStat {
        switch place(of: inode) {
        case .emulated(let inode): return try tree.getattr(inode)
        case .host(let path):
            guard let stat = hostStat(path) else { throw .noSuchFileOrDirectory }
            return stat
        case nil: throw .noSuchFileOrDirectory
        }
    }

    public func readlink(_ inode: Inode) throws(Errno) -> String {
        switch place(of: inode) {
        case .emulated(let inode): return try tree.readlink(inode)
        case .host(let path): return try host.linkTarget(path)
        case nil: throw .noSuchFileOrDirectory
        }
    }

    public func readdir(_ inode: Inode) throws(Errno) -> [DirectoryEntry] {
        switch place(of: inode) {
        case .emulated(let inode):
            var entries = try tree.readdir(inode)
            guard let path = tree.path(of: inode), Self.isSharedContainer(path),
                  host.status(path)?.kind == .directory
            else { return entries }
            let emulated = Set(entries.map(\.name))
            entries += hostEntries(in: path).filter { !emulated.contains($0.name) }
            return entries
        case .host(let path):
            guard hostStat(path)?.kind == .directory else { throw .noSuchFileOrDirectory }
            return hostEntries(in: path)
        case nil:
            throw .noSuchFileOrDirectory
        }
    }

    private func hostEntries(in path: String) -> [DirectoryEntry] {
        ((try? host.entries(in: path)) ?? []).compactMap { entry in
            let child = joinPath(path, entry.name)
            guard let status = visibleHostStatus(child, depth: Self.linkDepth) else { return nil }
            return DirectoryEntry(name: entry.name, inode: hostInode(for: child), kind: status.kind)
        }
    }

    public func open(_ inode: Inode, flags: Int32, caller: Caller) throws(Errno) -> any OpenFile {
        switch place(of: inode) {
        case .emulated(let inode):
            return try tree.open(inode, flags: flags, caller: caller)
        case .host(let path):
            guard let stat = hostStat(path) else { throw .noSuchFileOrDirectory }
            switch stat.kind {
            case .symlink: throw .invalidArgument
            case .directory where flags & O_ACCMODE != O_RDONLY: throw .isDirectory
            default: return HostFile(descriptor: try host.openFile(path, flags: flags))
            }
        case nil:
            throw .noSuchFileOrDirectory
        }
    }

    public func read(_ file: any OpenFile, offset: Int, size: Int) throws(Errno) -> [UInt8] {
        guard let file = file as? HostFile else { return try tree.read(file, offset: offset, size: size) }
        var bytes = [UInt8](repeating: 0, count: max(0, size))
        var failure: Errno?
        let count = bytes.withUnsafeMutableBytes { buffer -> Int in
            do throws(Errno) { return try file.read(at: offset, into: buffer) } catch {
                failure = error
                return 0
            }
        }
        if let failure { throw failure }
        bytes.removeLast(bytes.count - count)
        return bytes
    }

    public func read(_ file: any OpenFile, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        guard let file = file as? HostFile else { return try tree.read(file, offset: offset, into: buffer) }
        return try file.read(at: offset, into: buffer)
    }

    public func write(_ file: any OpenFile, offset: Int, data: UnsafeRawBufferPointer) throws(Errno) -> WriteOutcome {
        guard let file = file as? HostFile else {
            let outcome = try tree.write(file, offset: offset, data: data)
            if !outcome.invalidations.isEmpty { treeChanged?() }
            return outcome
        }
        return WriteOutcome(count: try file.write(at: offset, data))
    }

    public func release(_ file: any OpenFile) {
        guard let file = file as? HostFile else { return tree.release(file) }
        file.close()
    }

    public func truncate(_ inode: Inode, caller: Caller) throws(Errno) -> NodeStat {
        switch place(of: inode) {
        case .emulated(let inode): return try tree.truncate(inode, caller: caller)
        case .host:
            let stat = try getattr(inode)
            guard stat.kind == .regularFile else { throw .isDirectory }
            return stat
        case nil: throw .noSuchFileOrDirectory
        }
    }
}

/// Stable inode numbers for host paths, from `MergedSysfs.hostInodeBase` on.
private struct HostInodeTable {
    private var byPath: [String: Inode] = [:]
    private var paths: [String] = []

    mutating func inode(for path: String) -> Inode {
        if let existing = byPath[path] { return existing }
        let assigned = MergedSysfs.hostInodeBase + Inode(paths.count)
        byPath[path] = assigned
        paths.append(path)
        return assigned
    }

    func path(of inode: Inode) -> String? {
        guard inode >= MergedSysfs.hostInodeBase, inode - MergedSysfs.hostInodeBase < Inode(paths.count) else { return nil }
        return paths[Int(inode - MergedSysfs.hostInodeBase)]
    }
}

/// An open host file: reads and writes go to the host's sysfs at the caller's offsets.
final class HostFile: OpenFile {
    private let descriptor: Locked<Int32>

    init(descriptor: Int32) {
        self.descriptor = Locked(descriptor)
    }

    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let descriptor = self.descriptor.withLock { $0 }
        guard descriptor >= 0 else { throw .badFileDescriptor }
        guard !buffer.isEmpty else { return 0 }
        let count = pread(descriptor, buffer.baseAddress, buffer.count, off_t(offset))
        guard count >= 0 else { throw Errno(errno) }
        return count
    }

    func write(at offset: Int, _ data: UnsafeRawBufferPointer) throws(Errno) -> Int {
        let descriptor = self.descriptor.withLock { $0 }
        guard descriptor >= 0 else { throw .badFileDescriptor }
        let count = pwrite(descriptor, data.baseAddress, data.count, off_t(offset))
        guard count >= 0 else { throw Errno(errno) }
        return count
    }

    func close() {
        let descriptor = self.descriptor.withLock { value -> Int32 in
            defer { value = -1 }
            return value
        }
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
    }

    deinit { close() }
}
