#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The host's real `/sys`, reached through a directory descriptor.
///
/// `pcibackfsd run` opens `/sys` before it mounts the merged tree over it: a path walk that
/// starts at that descriptor stays in the sysfs mount underneath (and crosses into the host's
/// submounts), so the daemon reads the live host tree without a staging mount, and never
/// through its own mount (which would wait on itself). Paths are relative, without a leading
/// slash; "" is the root.
public final class HostSysfs: Sendable {
    /// A directory descriptor of the host's sysfs root.
    public let rootDescriptor: Int32

    public init(rootDescriptor: Int32) {
        self.rootDescriptor = rootDescriptor
    }

    /// Opens `path` (normally "/sys") as the root.
    public static func open(_ path: String) throws(Errno) -> HostSysfs {
        let descriptor = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw Errno(errno) }
        return HostSysfs(rootDescriptor: descriptor)
    }

    public struct Status: Sendable, Equatable {
        public var kind: NodeKind
        public var mode: UInt32
        public var size: Int
        public var linkCount: UInt32
    }

    /// `lstat` of `path`; nil when it does not exist (or is neither file, directory nor link).
    public func status(_ path: String) -> Status? {
        var info = stat()
        guard fstatat(rootDescriptor, path.isEmpty ? "." : path, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        let kind: NodeKind
        switch info.st_mode & S_IFMT {
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        case S_IFREG: kind = .regularFile
        default: return nil
        }
        return Status(kind: kind, mode: UInt32(info.st_mode & 0o7777), size: Int(info.st_size),
                      linkCount: UInt32(truncatingIfNeeded: info.st_nlink))
    }

    /// The names in directory `path` with their kinds (no "." or "..").
    public func entries(in path: String) throws(Errno) -> [(name: String, kind: NodeKind)] {
        let descriptor = openat(rootDescriptor, path.isEmpty ? "." : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw Errno(errno) }
        guard let directory = fdopendir(descriptor) else {
            let error = errno
            close(descriptor)
            throw Errno(error)
        }
        defer { closedir(directory) }
        var result: [(name: String, kind: NodeKind)] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            let kind: NodeKind
            switch Int32(entry.pointee.d_type) {
            case Int32(DT_DIR): kind = .directory
            case Int32(DT_LNK): kind = .symlink
            case Int32(DT_REG): kind = .regularFile
            default:
                guard let status = status(joinPath(path, name)) else { continue }
                kind = status.kind
            }
            result.append((name, kind))
        }
        return result
    }

    /// The target of symlink `path`, as stored (sysfs links are relative).
    public func linkTarget(_ path: String) throws(Errno) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlinkat(rootDescriptor, path, &buffer, buffer.count - 1)
        guard count >= 0 else { throw Errno(errno) }
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Opens file `path` with the access mode and status flags of `flags` (never creating).
    public func openFile(_ path: String, flags: Int32) throws(Errno) -> Int32 {
        let allowed = O_ACCMODE | O_NONBLOCK | O_APPEND | O_TRUNC | O_DIRECTORY
        let descriptor = openat(rootDescriptor, path, (flags & allowed) | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else { throw Errno(errno) }
        return descriptor
    }
}

/// Resolves a relative link `target` found in directory `directory` to a tree path, lexically
/// (sysfs links name canonical directories, so no component of the result is itself a link).
/// Nil when the target leaves the tree or is absolute.
func resolveLink(_ target: String, in directory: String) -> String? {
    guard !target.hasPrefix("/") else { return nil }
    var parts = directory.isEmpty ? [] : pathComponents(directory)
    for part in pathComponents(target) {
        switch part {
        case "", ".": continue
        case "..":
            guard !parts.isEmpty else { return nil }
            parts.removeLast()
        default: parts.append(part)
        }
    }
    return parts.joined(separator: "/")
}
