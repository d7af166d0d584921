/// The contract between the FUSE adapter (below it only libfuse) and the sysfs tree.
///
/// The FUSE layer knows nothing of PCI: it turns low-level requests into these calls, replies with
/// what they return, and converts a thrown `Errno` into `fuse_reply_err` in one place. Everything
/// here is called from several libfuse worker threads at once, so implementations are thread-safe.

public typealias Inode = UInt64

/// The root directory's inode, as libfuse numbers it.
public let rootInode: Inode = 1

public enum NodeKind: Sendable, Equatable {
    case directory
    case regularFile
    case symlink
}

public struct NodeStat: Sendable, Equatable {
    public var inode: Inode
    public var kind: NodeKind
    /// Permission bits only (e.g. 0o644); the FUSE layer adds the file type.
    public var mode: UInt32
    public var size: Int
    public var linkCount: UInt32
    /// Seconds the kernel may cache this entry and its attributes. 0 for nodes that appear,
    /// vanish or change target (driver links, frontend devices); long for the static structure.
    public var cacheSeconds: Double

    public init(inode: Inode, kind: NodeKind, mode: UInt32, size: Int, linkCount: UInt32 = 1, cacheSeconds: Double) {
        self.inode = inode
        self.kind = kind
        self.mode = mode
        self.size = size
        self.linkCount = linkCount
        self.cacheSeconds = cacheSeconds
    }
}

public struct DirectoryEntry: Sendable, Equatable {
    public var name: String
    public var inode: Inode
    public var kind: NodeKind
    public init(name: String, inode: Inode, kind: NodeKind) {
        self.name = name
        self.inode = inode
        self.kind = kind
    }
}

/// Who made a request, from the FUSE context (uid, gid, pid: no capabilities).
public struct Caller: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    public init(uid: UInt32, gid: UInt32, pid: Int32) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
    public static let root = Caller(uid: 0, gid: 0, pid: 0)
    public var isPrivileged: Bool { uid == 0 }
}

/// What the kernel must forget after a change, so the change is visible when `write()` returns.
/// The FUSE layer sends these after the model has dropped its lock and before it replies.
public enum CacheInvalidation: Sendable, Equatable {
    /// A name in a directory appeared, vanished or changed target.
    case entry(parent: Inode, name: String)
    /// A node's attributes or contents changed (or it went away).
    case inode(Inode)
}

public struct WriteOutcome: Sendable, Equatable {
    public var count: Int
    public var invalidations: [CacheInvalidation]
    public init(count: Int, invalidations: [CacheInvalidation] = []) {
        self.count = count
        self.invalidations = invalidations
    }
}

/// An open file. The model creates it in `open`; the FUSE layer keeps it alive (retained in
/// `fuse_file_info.fh`) until `release`, and hands it back on every read and write.
public protocol OpenFile: AnyObject, Sendable {}

public protocol FileSystemModel: AnyObject, Sendable {
    func lookup(parent: Inode, name: String) throws(Errno) -> NodeStat
    func getattr(_ inode: Inode) throws(Errno) -> NodeStat
    func readlink(_ inode: Inode) throws(Errno) -> String
    func readdir(_ inode: Inode) throws(Errno) -> [DirectoryEntry]
    /// Decides access as kernfs does (EACCES for a read-only file opened for writing and the
    /// reverse, even for root). `flags` are the open(2) flags; O_TRUNC is accepted and ignored.
    func open(_ inode: Inode, flags: Int32, caller: Caller) throws(Errno) -> any OpenFile
    /// Returns at most `size` bytes from `offset`. An empty result is end of file.
    func read(_ file: any OpenFile, offset: Int, size: Int) throws(Errno) -> [UInt8]
    /// `read` into the caller's buffer (at most `buffer.count` bytes); returns the count. The
    /// FUSE layer uses this one, so the hot path allocates nothing.
    func read(_ file: any OpenFile, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int
    func write(_ file: any OpenFile, offset: Int, data: UnsafeRawBufferPointer) throws(Errno) -> WriteOutcome
    func release(_ file: any OpenFile)
    /// `truncate(2)` or SETATTR(size) on an attribute: accepted and ignored, as sysfs does.
    func truncate(_ inode: Inode, caller: Caller) throws(Errno) -> NodeStat
    /// Whether the node `file` was opened on has gone since (its device removed, the machine
    /// reset), even if a node of the same name came back: kernfs then answers read and write
    /// with ENODEV, and getdents of a directory with "." and ".." only (kernfs_fop_readdir
    /// finds no active children under a removed node); fstat still works. The model's own
    /// read and write throw ENODEV; the FUSE layer asks this for directory listings.
    /// Default: handles never go stale.
    func hasVanished(_ file: any OpenFile) -> Bool
}

extension FileSystemModel {
    public func hasVanished(_ file: any OpenFile) -> Bool { false }

    public func read(_ file: any OpenFile, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let bytes = try read(file, offset: offset, size: buffer.count)
        let count = min(bytes.count, buffer.count)
        bytes.withUnsafeBytes { source in
            if count > 0 { buffer.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: count) }
        }
        return count
    }
}
