/// Requests that would change the tree's names, which sysfs never lets a caller do: kernfs
/// directories have no create, mkdir (sysfs has no kernfs_syscall_ops), unlink, symlink, link
/// or mknod, and its rename refuses everything. These are the answers a root caller gets from
/// /sys, measured on Linux 6.x (python3 os.* against /sys/bus/pci; renameat2 through
/// syscall(2)). The VFS answers before the file system when the target exists (EEXIST) or is
/// missing (ENOENT), for the wrong kind (EISDIR, ENOTDIR), and, with default_permissions, for
/// callers without write permission on the directory (EACCES; link: EPERM from
/// protected_hardlinks), so FUSE only passes on what is left, and gets the same answers here.
public enum NamespaceChange: Sendable, Equatable {
    /// open(O_CREAT) of a missing name (FUSE CREATE).
    case create
    /// mknod(2); `mode` carries the file type (S_IFREG for mknod of a regular file).
    case mknod(mode: UInt32)
    case mkdir
    case unlink
    case rmdir
    case symlink
    case link
    /// rename(2), or renameat2(2) with `flags` (RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
    case rename(flags: UInt32)

    /// The errno sysfs gives, in one place for every model: the VFS turns open(O_CREAT) and
    /// mknod of a regular file into ->create, which kernfs lacks (EACCES); every other change
    /// finds no inode operation (EPERM); kernfs_iop_rename refuses any flag with EINVAL before
    /// it looks for a rename of its own.
    public var sysfsAnswer: Errno {
        switch self {
        case .create: return .permissionDenied
        case .mknod(let mode): return mode & 0o170000 == 0o100000 || mode & 0o170000 == 0 ? .permissionDenied : .operationNotPermitted
        case .rename(let flags): return flags != 0 ? .invalidArgument : .operationNotPermitted
        case .mkdir, .unlink, .rmdir, .symlink, .link: return .operationNotPermitted
        }
    }
}
