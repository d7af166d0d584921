#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// A mount point left by a FUSE daemon that died (SIGKILL, crash) stays mounted with its
/// connection gone: every access fails with ENOTCONN ("Transport endpoint is not connected")
/// and a new mount on it fails. A restarting daemon detaches it first.
public enum StaleMount {
    /// Whether `path` is such a dead FUSE mount.
    /// stat(2) may still answer from the attribute cache; statvfs(3) (statfs) always asks the daemon.
    public static func isStale(_ path: String) -> Bool {
        var status = stat()
        if stat(path, &status) != 0 && errno == ENOTCONN { return true }
        var fileSystem = statvfs()
        return statvfs(path, &fileSystem) != 0 && errno == ENOTCONN
    }

    /// Detaches a dead FUSE mount at `path` (`fusermount3 -u -z`, else `umount2(MNT_DETACH)`).
    /// Returns a message saying what was done, or nil when `path` was not stale.
    @discardableResult
    public static func clear(_ path: String) -> String? {
        guard isStale(path) else { return nil }
        if let fusermount = locate("fusermount3") ?? locate("fusermount") {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: fusermount)
            process.arguments = ["-u", "-z", path]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            if (try? process.run()) != nil {
                process.waitUntilExit()
                if !isStale(path) { return "detached a stale mount on \(path) (the previous daemon died)" }
            }
        }
        if umount2(path, Int32(MNT_DETACH)) == 0 || !isStale(path) {
            return "detached a stale mount on \(path) (the previous daemon died)"
        }
        return "\(path) is a stale mount that could not be detached: \(Errno(errno))"
    }

    private static func locate(_ name: String) -> String? {
        let search = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/bin:/bin:/usr/sbin:/sbin"
        for directory in search.split(separator: ":") where access("\(directory)/\(name)", X_OK) == 0 {
            return "\(directory)/\(name)"
        }
        return nil
    }
}
