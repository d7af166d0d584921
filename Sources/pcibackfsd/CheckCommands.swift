import ArgumentParser
import Foundation
import PCIBackFS
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `pcibackfsd check FILE...`: validates machine files and lspci dumps and lists the functions
/// each would create.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check machine files and lspci dumps, and list the functions they would create.",
        discussion: """
            A file whose content is a JSON object is a machine file (see README, "Machine files");
            anything else is read as an `lspci -vvv -xxx`/`-xxxx` dump. Each function is one line:
              0000:03:00.0 8086:10c9 class 020000 config 4096 driver igb faults resetFails=once
            With several files, each file's lines follow a line with its name. Errors and warnings
            go to standard error, prefixed with the file's name; the exit status is 0 when every
            file is valid, 1 otherwise.
            """)

    @Argument(help: "Machine files (JSON) or lspci dumps.")
    var files: [String]

    func validate() throws {
        if files.isEmpty { throw ValidationError("check needs at least one FILE") }
    }

    func run() throws {
        var valid = true
        for path in files {
            var warnings: [String] = []
            do {
                let devices = try InputFile.load(path: path, warnings: &warnings)
                printWarnings(warnings)
                var lines = devices.map(\.summaryLine)
                if files.count > 1 { lines.insert(path + ":", at: 0) }
                FileHandle.standardOutput.write(Data(lines.map { $0 + "\n" }.joined().utf8))
            } catch {
                printWarnings(warnings)
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
                valid = false
            }
        }
        if !valid { throw ExitCode(1) }
    }
}

/// `pcibackfsd templates`: the built-in templates a machine file can place.
struct Templates: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the built-in templates of machine files: name, IDs, class, config size, driver, description.")

    func run() {
        let rows = MachineTemplate.allCases.map { template -> [String] in
            let device = template.example
            return [template.rawValue, "\(hex(device.identity.vendor, width: 4)):\(hex(device.identity.device, width: 4))",
                    "class \(hex(device.identity.classCode, width: 6))", "config \(device.configSize)",
                    "driver \(device.bootDriver ?? "-")", template.summary]
        }
        var widths = [Int](repeating: 0, count: 5)
        for row in rows { for column in 0..<5 { widths[column] = max(widths[column], row[column].count) } }
        var text = ""
        for row in rows {
            text += (0..<5).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
                + "  " + row[5] + "\n"
        }
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// Writing an output file with POSIX calls, so a failure is the errno's text.
enum OutputFile {
    /// Writes `data` to `path` (created or truncated); nil on success, else why not.
    static func write(_ data: Data, to path: String) -> String? {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        var failure: String?
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failure = String(cString: strerror(errno))
                    return
                }
                offset += written
            }
        }
        if close(fd) != 0, failure == nil { failure = String(cString: strerror(errno)) }
        return failure
    }
}
