/// Stable inode numbers: a path gets a number the first time it is seen and keeps it for the
/// life of the mount, so libvirt's `stat()` comparisons and the kernel's caches agree.
struct InodeTable {
    private var byPath: [String: Inode] = ["": rootInode]
    private var byInode: [Inode: String] = [rootInode: ""]
    private var next: Inode = rootInode + 1

    mutating func inode(for path: String) -> Inode {
        if let existing = byPath[path] { return existing }
        let assigned = next
        next += 1
        byPath[path] = assigned
        byInode[assigned] = path
        return assigned
    }

    func existingInode(for path: String) -> Inode? { byPath[path] }

    func path(of inode: Inode) -> String? { byInode[inode] }
}

/// Joins path components the way the tree stores them (no leading slash; the root is "").
@inline(__always)
func joinPath(_ parent: String, _ name: String) -> String {
    parent.isEmpty ? name : parent + "/" + name
}
