import CFuse
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The object behind libfuse's userdata pointer: turns low-level requests into
/// `FileSystemModel` calls and their results into `FUSEReply` values.
///
/// libfuse calls it from several worker threads at once. Its own state is immutable except
/// the session pointer used for cache invalidations, which is atomic; the model is
/// thread-safe by contract.
final class FUSEDispatcher: Sendable {
    let model: any FileSystemModel
    /// The one timestamp every node shows (atime = mtime = ctime), in seconds since the epoch.
    let timestamp: Int
    /// `struct fuse_session *` as an integer, 0 while there is no session. Set by the server
    /// right after `fuse_session_new`, cleared before `fuse_session_destroy`.
    private let sessionAddress = Atomic<UInt>(0)

    init(model: any FileSystemModel, timestamp: Int) {
        self.model = model
        self.timestamp = timestamp
    }

    /// The dispatcher a request belongs to (the session's userdata).
    static func from(_ request: fuse_req_t) -> FUSEDispatcher {
        Unmanaged<FUSEDispatcher>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    var userdata: UnsafeMutableRawPointer {
        Unmanaged.passUnretained(self).toOpaque()
    }

    func attach(session: OpaquePointer?) {
        sessionAddress.store(UInt(bitPattern: session), ordering: .releasing)
    }

    // MARK: Requests

    func lookup(parent: Inode, name: String) throws(Errno) -> FUSEReply {
        .entry(try model.lookup(parent: parent, name: name))
    }

    func getattr(_ inode: Inode) throws(Errno) -> FUSEReply {
        .attributes(try model.getattr(inode))
    }

    /// Only a size change (truncate(2), ftruncate(2), O_TRUNC without atomic_o_trunc) is
    /// accepted, and the model decides what it means. The kernel sends the time stamps
    /// along with a truncate; they are ignored. chmod, chown and utimes fail with EPERM.
    func setattr(_ inode: Inode, changes: Int32, caller: Caller) throws(Errno) -> FUSEReply {
        let ownership = CFUSE_SET_ATTR_MODE | CFUSE_SET_ATTR_UID | CFUSE_SET_ATTR_GID
        guard changes & ownership == 0, changes & CFUSE_SET_ATTR_SIZE != 0 else {
            throw .operationNotPermitted
        }
        return .attributes(try model.truncate(inode, caller: caller))
    }

    func readlink(_ inode: Inode) throws(Errno) -> FUSEReply {
        .symlinkTarget(try model.readlink(inode))
    }

    /// Opens a file with direct I/O (every read(2) reaches the model, whatever st_size says)
    /// and keeps the model's `OpenFile` retained in `fh` until release.
    func open(_ inode: Inode, info: UnsafeMutablePointer<fuse_file_info>, caller: Caller) throws(Errno) -> FUSEReply {
        let file = try model.open(inode, flags: info.pointee.flags, caller: caller)
        info.pointee.fh = HandleSlot.store(OpenFileHandle(file))
        info.pointee.direct_io = 1
        info.pointee.keep_cache = 0
        // Nothing is buffered, so close(2) needs no FLUSH round trip.
        info.pointee.noflush = 1
        let model = self.model
        let fh = info.pointee.fh
        return .opened(info, abandon: {
            model.release(HandleSlot.take(fh, as: OpenFileHandle.self).file)
        })
    }

    /// Fills `buffer` (the reply) from the model; returns the byte count.
    func read(_ info: UnsafeMutablePointer<fuse_file_info>, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let file = HandleSlot.borrow(info.pointee.fh, as: OpenFileHandle.self).file
        return min(try model.read(file, offset: offset, into: buffer), buffer.count)
    }

    /// The model applies the write and drops its lock; then the kernel is told what to
    /// forget; only then is the write answered, so the change is visible when write(2) returns.
    func write(_ info: UnsafeMutablePointer<fuse_file_info>, offset: Int, data: UnsafeRawBufferPointer) throws(Errno) -> FUSEReply {
        let file = HandleSlot.borrow(info.pointee.fh, as: OpenFileHandle.self).file
        let outcome = try model.write(file, offset: offset, data: data)
        invalidate(outcome.invalidations)
        return .written(min(max(outcome.count, 0), data.count))
    }

    func release(_ info: UnsafeMutablePointer<fuse_file_info>) -> FUSEReply {
        model.release(HandleSlot.take(info.pointee.fh, as: OpenFileHandle.self).file)
        return .success
    }

    /// Takes the directory listing once, with "." and "..", so that the offsets readdir hands
    /// out stay valid for the whole life of the handle. The model's handle on the directory
    /// (if it opens directories) tells later whether the directory has vanished.
    func opendir(_ inode: Inode, info: UnsafeMutablePointer<fuse_file_info>, caller: Caller) throws(Errno) -> FUSEReply {
        let listing = try model.readdir(inode)
        let file = try? model.open(inode, flags: O_RDONLY | O_DIRECTORY, caller: caller)
        let entries = [
            DirectoryEntry(name: ".", inode: inode, kind: .directory),
            // The model does not expose parents; the kernel does not use d_ino of "..".
            DirectoryEntry(name: "..", inode: inode, kind: .directory),
        ] + listing
        info.pointee.fh = HandleSlot.store(DirectoryListing(entries, file: file))
        let fh = info.pointee.fh
        let model = self.model
        return .opened(info, abandon: {
            if let file = HandleSlot.take(fh, as: DirectoryListing.self).file { model.release(file) }
        })
    }

    /// Fills at most `size` bytes with the entries from index `offset` on. Each entry carries
    /// the offset of the one after it, so the next call resumes exactly there.
    func readdir(_ request: fuse_req_t, info: UnsafeMutablePointer<fuse_file_info>, offset: Int, size: Int) -> FUSEReply {
        let directory = HandleSlot.borrow(info.pointee.fh, as: DirectoryListing.self)
        // A removed directory lists only "." and ".." (kernfs_fop_readdir).
        let vanished = directory.file.map(model.hasVanished) ?? false
        let entries = vanished ? Array(directory.entries.prefix(2)) : directory.entries
        guard offset >= 0, offset < entries.count, size > 0 else { return .bytes([]) }
        var buffer = [UInt8](repeating: 0, count: size)
        var used = 0
        buffer.withUnsafeMutableBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { chars in
                for index in offset..<entries.count {
                    let entry = entries[index]
                    var attributes = stat()
                    attributes.st_ino = __ino_t(truncatingIfNeeded: entry.inode)
                    attributes.st_mode = Self.typeBits(entry.kind)
                    let remaining = size - used
                    let needed = entry.name.withCString { name in
                        fuse_add_direntry(request, chars.baseAddress! + used, remaining, name, &attributes, off_t(index + 1))
                    }
                    if needed > remaining { break }
                    used += needed
                }
            }
        }
        buffer.removeLast(size - used)
        return .bytes(buffer)
    }

    func releasedir(_ info: UnsafeMutablePointer<fuse_file_info>) -> FUSEReply {
        if let file = HandleSlot.take(info.pointee.fh, as: DirectoryListing.self).file { model.release(file) }
        return .success
    }

    // MARK: Cache invalidation

    /// Sends the model's invalidations. Called with no model lock held (the model released it
    /// before returning) and before the reply, as libfuse requires for notify_inval_*.
    /// ENOENT (the kernel has nothing cached) and ENOSYS (old kernel) are expected.
    func invalidate(_ invalidations: [CacheInvalidation]) {
        guard !invalidations.isEmpty,
              let session = OpaquePointer(bitPattern: sessionAddress.load(ordering: .acquiring))
        else { return }
        for invalidation in invalidations {
            let result: Int32
            switch invalidation {
            case .entry(let parent, let name):
                result = name.withCString { fuse_lowlevel_notify_inval_entry(session, parent, $0, strlen($0)) }
            case .inode(let inode):
                // Offset 0, length 0: the attributes and all cached data of the inode.
                result = fuse_lowlevel_notify_inval_inode(session, inode, 0, 0)
            }
            if result != 0 && result != -ENOENT && result != -ENOSYS {
                FUSELog.warning("cache invalidation \(invalidation) failed: \(Errno(-result))")
            }
        }
    }

    // MARK: Attributes

    static func typeBits(_ kind: NodeKind) -> mode_t {
        switch kind {
        case .directory: return S_IFDIR
        case .regularFile: return S_IFREG
        case .symlink: return S_IFLNK
        }
    }

    func makeStat(_ node: NodeStat) -> stat {
        var attributes = stat()
        attributes.st_ino = __ino_t(truncatingIfNeeded: node.inode)
        attributes.st_mode = Self.typeBits(node.kind) | mode_t(node.mode & 0o7777)
        attributes.st_nlink = __nlink_t(node.linkCount)
        attributes.st_size = off_t(node.size)
        attributes.st_uid = 0
        attributes.st_gid = 0
        attributes.st_blksize = 4096
        attributes.st_blocks = 0
        let time = timespec(tv_sec: timestamp, tv_nsec: 0)
        attributes.st_atim = time
        attributes.st_mtim = time
        attributes.st_ctim = time
        return attributes
    }

    static func caller(of request: fuse_req_t) -> Caller {
        guard let context = fuse_req_ctx(request)?.pointee else { return .root }
        return Caller(uid: context.uid, gid: context.gid, pid: context.pid)
    }
}

/// An open file as kept in `fuse_file_info.fh`.
final class OpenFileHandle: Sendable {
    let file: any OpenFile
    init(_ file: any OpenFile) { self.file = file }
}

/// A directory listing snapshot as kept in `fuse_file_info.fh`, with the model's handle on
/// the directory (nil if the model does not open directories).
final class DirectoryListing: Sendable {
    let entries: [DirectoryEntry]
    let file: (any OpenFile)?
    init(_ entries: [DirectoryEntry], file: (any OpenFile)?) {
        self.entries = entries
        self.file = file
    }
}

/// Objects parked in the 64-bit `fh` of `fuse_file_info`: retained on store, borrowed while
/// open, released by exactly one `take` (release, releasedir, or an undeliverable open reply).
enum HandleSlot {
    static func store<Object: AnyObject>(_ object: Object) -> UInt64 {
        UInt64(UInt(bitPattern: Unmanaged.passRetained(object).toOpaque()))
    }

    static func borrow<Object: AnyObject>(_ fh: UInt64, as type: Object.Type) -> Object {
        Unmanaged<Object>.fromOpaque(pointer(fh)).takeUnretainedValue()
    }

    static func take<Object: AnyObject>(_ fh: UInt64, as type: Object.Type) -> Object {
        Unmanaged<Object>.fromOpaque(pointer(fh)).takeRetainedValue()
    }

    private static func pointer(_ fh: UInt64) -> UnsafeRawPointer {
        guard let pointer = UnsafeRawPointer(bitPattern: UInt(fh)) else {
            preconditionFailure("FUSE request without the file handle set by open/opendir")
        }
        return pointer
    }
}

/// Diagnostics of the FUSE layer, on standard error (the C `stderr` global is not usable
/// from Swift 6 code, so this writes to fd 2 directly).
enum FUSELog {
    static func warning(_ message: String) {
        let line = "pcibackfs: fuse: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }
}
