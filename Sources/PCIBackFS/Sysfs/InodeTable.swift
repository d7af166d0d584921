/// Stable inode numbers: a path gets a number the first time it is seen and keeps it for the
/// life of the mount, so libvirt's `stat()` comparisons and the kernel's caches agree.
///
/// It also remembers what each inode resolved to, under a `NodeGeneration`: open, getattr and
/// readlink of a known inode then cost an array index instead of a path walk (lspci over
/// thousands of functions spent three quarters of its daemon time resolving paths).
struct InodeTable {
    private var byPath: [String: Inode] = ["": rootInode]
    /// Indexed by `inode - rootInode`; inodes are handed out densely from the root on.
    private var entries: [Entry] = [Entry(path: "")]

    private struct Entry {
        let path: String
        var node: SysfsNode?
        var generation = NodeGeneration.none
    }

    mutating func inode(for path: String) -> Inode {
        if let existing = byPath[path] { return existing }
        let assigned = rootInode + Inode(entries.count)
        byPath[path] = assigned
        entries.append(Entry(path: path))
        return assigned
    }

    func existingInode(for path: String) -> Inode? { byPath[path] }

    func path(of inode: Inode) -> String? { entry(inode)?.path }

    /// What `inode` resolved to while the tree was at `generation`, if it was resolved then.
    func cachedNode(_ inode: Inode, at generation: NodeGeneration) -> SysfsNode? {
        guard let entry = entry(inode), entry.generation == generation else { return nil }
        return entry.node
    }

    /// What `inode` resolved to the last time it resolved, whatever has changed since.
    func lastKnownNode(_ inode: Inode) -> SysfsNode? { entry(inode)?.node }

    mutating func cacheNode(_ node: SysfsNode, for inode: Inode, at generation: NodeGeneration) {
        guard inode >= rootInode, inode - rootInode < Inode(entries.count) else { return }
        let index = Int(inode - rootInode)
        entries[index].node = node
        entries[index].generation = generation
    }

    private func entry(_ inode: Inode) -> Entry? {
        guard inode >= rootInode, inode - rootInode < Inode(entries.count) else { return nil }
        return entries[Int(inode - rootInode)]
    }
}

/// What a resolved node depends on: the dom0 topology (bindings, exports, VFs, removals; see
/// `Dom0.topologyGeneration`) and the tree's own epoch, bumped on anything else that may
/// change what paths mean (a topology-changing store, a restore, direct access to the state).
struct NodeGeneration: Equatable {
    var topology: Int
    var epoch: Int

    static let none = NodeGeneration(topology: -1, epoch: -1)
}

/// Joins path components the way the tree stores them (no leading slash; the root is "").
@inline(__always)
func joinPath(_ parent: String, _ name: String) -> String {
    parent.isEmpty ? name : parent + "/" + name
}

/// The components of a tree path, split on "/" byte-wise (a Character walk costs far more, and
/// "/" can only ever be a whole byte in UTF-8). Empty components are kept.
func pathComponents(_ path: String) -> [String] {
    var path = path
    return path.withUTF8 { bytes in
        var components: [String] = []
        var start = 0
        for index in 0..<bytes.count where bytes[index] == UInt8(ascii: "/") {
            components.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
            start = index + 1
        }
        components.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start...]), as: UTF8.self))
        return components
    }
}
