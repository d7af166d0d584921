#if canImport(Glibc)
import Glibc
#endif

/// Device numbers the host already uses, so that the emulated class devices' numbers do not
/// collide with the host's when both trees are merged (`run`).
public struct HostDeviceNumbers: Sendable, Equatable {
    /// Character majors registered on the host (`/proc/devices`) or in use (`/sys/dev/char`).
    public var takenCharMajors: Set<Int> = []
    /// Minors of block major 259 (blkext) in use on the host (`/sys/dev/block/259:*`).
    public var takenBlockExtMinors: Set<Int> = []

    public init(takenCharMajors: Set<Int> = [], takenBlockExtMinors: Set<Int> = []) {
        self.takenCharMajors = takenCharMajors
        self.takenBlockExtMinors = takenBlockExtMinors
    }

    /// Reads the host's numbers (missing files give empty sets).
    public static func scan(sysfs: String = "/sys", procDevices: String = "/proc/devices") -> HostDeviceNumbers {
        var numbers = HostDeviceNumbers()
        for (major, _) in entries(sysfs + "/dev/char") { numbers.takenCharMajors.insert(major) }
        for (major, minor) in entries(sysfs + "/dev/block") where major == blockExtMajor {
            numbers.takenBlockExtMinors.insert(minor)
        }
        // "Character devices:\n  1 mem\n...\n\nBlock devices:\n..."
        if let bytes = try? CaptureFiles.readWholeFile(procDevices, limit: 1 << 20) {
            let text = String(decoding: bytes, as: UTF8.self)
            var inCharacter = false
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("Character devices:") { inCharacter = true; continue }
                if line.hasPrefix("Block devices:") { inCharacter = false; continue }
                if inCharacter, let major = line.split(separator: " ").first.flatMap({ Int($0) }) {
                    numbers.takenCharMajors.insert(major)
                }
            }
        }
        return numbers
    }

    /// `MAJ:MIN` names of a `/sys/dev/{char,block}` directory.
    private static func entries(_ directory: String) -> [(Int, Int)] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var result: [(Int, Int)] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let parts = name.split(separator: ":")
            if parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]) { result.append((major, minor)) }
        }
        return result
    }

    /// BLOCK_EXT_MAJOR: NVMe namespaces (and their partitions) take minors of it.
    public static let blockExtMajor = 259

    /// The major `alloc_chrdev_region` gives the nvme driver: fs/char_dev.c `find_dynamic_major`
    /// takes the highest free major from 254 down to 234, then from 511 down to 384. The host's
    /// registered majors count as taken, so the emulated controllers' `dev` never names one of
    /// the host's devices (254 when nothing is known of the host).
    public var nvmeCharMajor: Int {
        let candidates = Array(stride(from: 254, through: 234, by: -1)) + Array(stride(from: 511, through: 384, by: -1))
        return candidates.first { !takenCharMajors.contains($0) } ?? 511
    }

    /// The 259 minor of the `ordinal`-th emulated namespace: the lowest minors the host does
    /// not use, in order (`blk_alloc_ext_minor` hands out the lowest free one).
    public func blockExtMinor(ordinal: Int) -> Int {
        var minor = 0
        var remaining = ordinal
        while true {
            if !takenBlockExtMinors.contains(minor) {
                if remaining == 0 { return minor }
                remaining -= 1
            }
            minor += 1
        }
    }
}
