public enum CaptureError: Error, Hashable, Sendable, CustomStringConvertible {
    /// lspci dump: a header, hex or BAR/IRQ line that cannot be parsed (line numbers count from 1).
    case malformedDumpLine(line: Int, reason: String)
    /// lspci dump: a hex line whose bytes start at `offset` and reach beyond the 4096-byte space.
    case configOffsetOutOfRange(line: Int, offset: Int)
    /// lspci dump: a hex line with no device header line before it (since the last empty line).
    case dataOutsideDevice(line: Int)
    /// Fewer config bytes than the space needs: `bytes` present of `required` (256 or 4096). An
    /// unprivileged `lspci -x` or sysfs `config` read yields only 64 (128 for CardBus). `line` is the
    /// dump's header line, nil for sysfs.
    case truncatedConfig(address: PCIAddress, bytes: Int, required: Int, line: Int?)
    /// A raw config blob that is neither 256 nor 4096 bytes (and not shorter than 256).
    case invalidConfigSize(address: PCIAddress, bytes: Int)
    /// sysfs `resource`: a line that is not three hex numbers, or is inconsistent.
    case malformedResourceLine(line: Int, reason: String)
    /// A sysfs device directory whose name is not `DDDD:BB:SS.F`.
    case invalidDeviceName(String)
    /// A sysfs file with unexpected content.
    case malformedFile(path: String, reason: String)
    /// A file could not be read.
    case io(path: String, errno: Errno)

    public var description: String {
        switch self {
        case .malformedDumpLine(let line, let reason):
            return "lspci dump line \(line): \(reason)"
        case .configOffsetOutOfRange(let line, let offset):
            return "lspci dump line \(line): data at offset 0x\(hex(offset, width: 2)) reaches beyond the 4096-byte config space"
        case .dataOutsideDevice(let line):
            return "lspci dump line \(line): hex data line without a device header line before it"
        case .truncatedConfig(let address, let bytes, let required, let line):
            let location = line.map { "lspci dump line \($0): " } ?? ""
            return "\(location)device \(address): only \(bytes) of \(required) config bytes present; "
                + "the capture needs the full config space (an unprivileged read shows only 64 bytes: "
                + "capture as root, with `lspci -xxx` or `lspci -xxxx`)"
        case .invalidConfigSize(let address, let bytes):
            return "device \(address): config is \(bytes) bytes; expected 256 or 4096"
        case .malformedResourceLine(let line, let reason):
            return "resource line \(line): \(reason)"
        case .invalidDeviceName(let name):
            return "'\(name)' is not a PCI device name (DDDD:BB:SS.F)"
        case .malformedFile(let path, let reason):
            return "\(path): \(reason)"
        case .io(let path, let errno):
            return "\(path): \(errno)"
        }
    }

    /// The error in a report about `file`: without the file's name (the caller prefixes it), or
    /// with it exactly once when `naming`.
    public func message(about file: String, naming: Bool = false) -> String {
        switch self {
        case .io(let path, let errno) where path == file: return naming ? description : errno.description
        case .malformedFile(let path, let reason) where path == file: return naming ? description : reason
        default: return naming && !description.hasPrefix(file + ":") ? "\(file): \(description)" : description
        }
    }
}
