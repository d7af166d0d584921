#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// The checks `serve` makes before mounting, so that a mistake never hides files or stacks a
/// second machine over a live one. (`run` mounts over /sys on purpose and makes none of them.)
public enum MountPoint {
    /// Detaches a stale mount at `path` (its daemon died), then refuses a directory that a live
    /// pcibackfs serves, a path that is not a directory, and a non-empty directory unless
    /// `allowNonEmpty`. Returns what was done about a stale mount, if anything.
    public static func prepare(_ path: String, allowNonEmpty: Bool) throws(SetupError) -> String? {
        let stale = StaleMount.clear(path)
        if let server = liveServer(at: path) {
            throw SetupError("\(path) is already served by \(server); stop it first (fusermount3 -u \(path))")
        }
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw SetupError("cannot use \(path) as a mount point: \(Errno(errno))")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            throw SetupError("cannot use \(path) as a mount point: \(Errno(ENOTDIR))")
        }
        if !allowNonEmpty, let first = directoryNames(path)?.first {
            throw SetupError("\(path) is not empty (it holds \(first)); mounting would hide its files. "
                                  + "Use an empty directory, or --nonempty to mount over it anyway")
        }
        return stale
    }

    /// Whether the caller can mount FUSE at all: root, or root in a user namespace. A plain
    /// user in the initial user namespace would go through the setuid fusermount3 and get a
    /// mount that neither root nor the daemon's own writes can use as sysfs.
    public static func checkPrivilege() throws(SetupError) {
        guard geteuid() != 0 else { return }
        guard isInInitialUserNamespace() else { return }
        throw SetupError("""
            mounting needs root (uid \(geteuid()) cannot create sysfs-like files root can use). \
            Run it as root, or run your tool in a private /sys with `pcibackfsd run -- COMMAND` \
            (a user namespace), or start it inside one: unshare -Urm pcibackfsd MOUNTPOINT
            """)
    }

    /// The initial user namespace maps every id to itself: "0 0 4294967295".
    static func isInInitialUserNamespace() -> Bool {
        guard let map = try? String(contentsOfFile: "/proc/self/uid_map", encoding: .utf8) else { return true }
        return map.split(whereSeparator: { $0 == " " || $0 == "\n" }) == ["0", "0", "4294967295"]
    }

    /// Who serves `path` when it is the mount point of a live pcibackfs (a dead one was detached).
    static func liveServer(at path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        let target = String(cString: resolved)
        let live = MountInfo.entries().contains { $0.mountPoint == target && $0.fileSystemType == "fuse.pcibackfs" }
        return live ? "another pcibackfsd (fuse.pcibackfs)" : nil
    }
}

/// The names in directory `path`, without "." and ".."; nil when it cannot be read.
func directoryNames(_ path: String) -> [String]? {
    guard let directory = opendir(path) else { return nil }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// The calling process's mount table (/proc/self/mountinfo).
enum MountInfo {
    struct Entry: Equatable {
        var mountPoint: String
        var fileSystemType: String
    }

    static func entries() -> [Entry] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4, let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count else { return nil }
            return Entry(mountPoint: unescape(String(fields[4])), fileSystemType: String(fields[separator + 1]))
        }
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        var input = Array(field.utf8)[...]
        while let byte = input.popFirst() {
            if byte == UInt8(ascii: "\\"), input.count >= 3,
               let value = UInt8(String(decoding: input.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                input = input.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
