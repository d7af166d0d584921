#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// File reading shared by the capture and import paths (POSIX, so errors keep their errno).
enum CaptureFiles {
    static func readWholeFile(_ path: String, limit: Int) throws(CaptureError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, errno: Errno(errno)) }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, errno: Errno(errno))
            }
            if count == 0 { return result }
            result.append(contentsOf: chunk[..<count])
            if result.count > limit {
                throw .malformedFile(path: path, reason: "larger than \(limit) bytes")
            }
        }
    }

    /// A text file's content, or nil if it does not exist.
    static func readOptionalTextFile(_ path: String) throws(CaptureError) -> String? {
        do throws(CaptureError) {
            return String(decoding: try Self.readWholeFile(path, limit: 1 << 20), as: UTF8.self)
        } catch .io(_, let error) where error == .noSuchFileOrDirectory {
            return nil
        }
    }

    /// A symlink's target, or nil if it does not exist.
    static func readOptionalLink(_ path: String) throws(CaptureError) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count)
        if count < 0 {
            if errno == ENOENT { return nil }
            throw .io(path: path, errno: Errno(errno))
        }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
