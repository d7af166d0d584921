#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A POSIX error number, the one error type that crosses the sysfs boundary.
///
/// Kernel store functions fail with a negative errno; here they throw `Errno`, and the FUSE layer
/// turns it into `fuse_reply_err` in exactly one place.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    public static let operationNotPermitted = Errno(EPERM)
    public static let noSuchFileOrDirectory = Errno(ENOENT)
    public static let ioError = Errno(EIO)
    public static let noSuchDeviceOrAddress = Errno(ENXIO)
    public static let badFileDescriptor = Errno(EBADF)
    public static let outOfMemory = Errno(ENOMEM)
    public static let permissionDenied = Errno(EACCES)
    public static let badAddress = Errno(EFAULT)
    public static let resourceBusy = Errno(EBUSY)
    public static let fileExists = Errno(EEXIST)
    public static let noSuchDevice = Errno(ENODEV)
    public static let notDirectory = Errno(ENOTDIR)
    public static let isDirectory = Errno(EISDIR)
    public static let invalidArgument = Errno(EINVAL)
    public static let fileTooLarge = Errno(EFBIG)
    public static let readOnlyFileSystem = Errno(EROFS)
    public static let outOfRange = Errno(ERANGE)
    public static let notImplemented = Errno(ENOSYS)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let alreadyInProgress = Errno(EALREADY)
    /// ENOTTY: no reset method applies (`pci_reset_function`).
    public static let inappropriateIoctl = Errno(ENOTTY)
    public static let invalidLink = Errno(EINVAL)

    public var description: String {
        if let text = strerror(rawValue) { return String(cString: text) }
        return "errno \(rawValue)"
    }
}
