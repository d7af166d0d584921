#if canImport(Glibc)
import Foundation
import Glibc
import PCIBackFS
import Testing

// Mistakes a user makes with the command line and its input files, run through the real built
// `pcibackfsd`: each must get its message (naming the file or option and saying what is wrong,
// with the JSON path, line and column, or what is allowed) and its exit status, never a
// Foundation error dump.

/// The inputs the cases use, written into one temporary directory.
private enum StrictInputFiles {
    static let readmeExample = """
        { "name": "two-port NIC",
          "devices": [
            { "address": "0000:00:1c.0", "template": "root-port", "secondaryBus": 3 },
            { "address": "0000:03:00.0", "template": "nic-82576", "irq": 18, "faults": { "resetFails": "once" } },
            { "address": "0000:03:00.1", "template": "nic-82576", "irq": 19 } ] }

        """

    static let readmeLines = """
        0000:00:1c.0 8086:3a40 class 060400 config 4096 driver pcieport faults -
        0000:03:00.0 8086:10c9 class 020000 config 4096 driver igb faults resetFails=once
        0000:03:00.1 8086:10c9 class 020000 config 4096 driver igb faults -

        """

    /// An 82576 function (PCI Express) as an lspci dump, with `bytes` of its config space.
    static func nicDump(bytes: Int) -> String {
        let config = MachineTemplate.nic82576.example.config.bytes
        let function = CapturedFunction(address: PCIAddress(bus: 3, slot: 0, function: 0), config: Array(config[..<bytes]),
                                        bars: [], irq: 18, driver: "igb", name: "Ethernet controller: Intel Corporation 82576")
        return LspciDump.render([function])
    }

    static func write(into directory: String) throws {
        let files = [
            "readme.json": readmeExample,
            "unknown-key.json": readmeExample.replacingOccurrences(of: "\"irq\": 19", with: "\"irq\": 19, \"colour\": \"red\""),
            "fault-name.json": readmeExample.replacingOccurrences(of: "\"resetFails\"", with: "\"resetFail\""),
            "template.json": readmeExample.replacingOccurrences(of: "\"nic-82576\", \"irq\": 19", with: "\"nic-82567\", \"irq\": 19"),
            "syntax.json": "{ \"devices\": [\n  { \"address\": \"0000:03:00.0\" \"template\": \"nvme\" } ] }\n",
            "nic-256.txt": nicDump(bytes: 256),
            "nic-4096.txt": nicDump(bytes: 4096),
        ]
        for (name, text) in files { try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8) }
        try writeFakeSysfs(directory + "/sysroot")
    }

    /// A sysfs laid out like the kernel's: the device under devices/pci0000:00, a relative link
    /// to it in bus/pci/devices, and a dummy devices/system directory (not PCI).
    static func writeFakeSysfs(_ root: String) throws {
        let fm = FileManager.default
        let device = root + "/devices/pci0000:00/0000:03:00.0"
        try fm.createDirectory(atPath: device, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/devices/system", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/bus/pci/devices", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/bus/pci/drivers/igb", withIntermediateDirectories: true)
        try Data(MachineTemplate.nic82576.example.config.bytes).write(to: URL(fileURLWithPath: device + "/config"))
        try "18\n".write(toFile: device + "/irq", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: device + "/driver", withDestinationPath: "../../../bus/pci/drivers/igb")
        try fm.createSymbolicLink(atPath: root + "/bus/pci/devices/0000:03:00.0",
                                  withDestinationPath: "../../../devices/pci0000:00/0000:03:00.0")
    }
}

/// One mistake (or one correct use): the arguments (`{dir}` is the directory of the files),
/// and what must come out.
struct StrictInputCase: Sendable, CustomTestStringConvertible {
    var name: String
    var arguments: [String]
    var status: Int32
    var stdout: String? = nil
    var stdoutContains: [String] = []
    var stderr: String? = nil
    var stderrContains: [String] = []
    var stderrLacks: [String] = []
    var testDescription: String { name }
}

private let faultNames = ["resetFails", "enableFails", "lowPowerStatesRefused", "msiEnableFails", "msixEnableFails", "configReadFails"]
private let templateNames = ["host-bridge", "root-port", "nic-82576", "nvme", "xhci", "vga", "rtl8139"]
private let sysfsForms = ["", "/", "/bus/pci", "/bus/pci/", "/bus/pci/devices", "/bus/pci/devices/"]

private let strictInputCases: [StrictInputCase] = [
    StrictInputCase(name: "unknown key: its JSON path, line and column, and the valid keys",
                    arguments: ["check", "{dir}/unknown-key.json"], status: 1, stdout: "",
                    stderrContains: ["{dir}/unknown-key.json: line 5, column 70: devices[2].colour: unknown key \"colour\"",
                                     "the keys of a device entry are address, template, secondaryBus, subordinateBus, irq, driver, "
                                     + "lspciDump, config, writable, writeOneClear, resetImage, bars, iovBars, faults"]),
    StrictInputCase(name: "mistyped fault name resetFail: its path, a suggestion and every fault name",
                    arguments: ["check", "{dir}/fault-name.json"], status: 1, stdout: "",
                    stderrContains: ["{dir}/fault-name.json: line 4, column 82: devices[1].faults.resetFail: unknown fault \"resetFail\"",
                                     "did you mean \"resetFails\"?", "the faults are " + faultNames.joined(separator: ", ")]),
    StrictInputCase(name: "unknown template: the valid ones are listed",
                    arguments: ["check", "{dir}/template.json"], status: 1, stdout: "",
                    stderrContains: ["{dir}/template.json: line 5, column 46: devices[2].template: unknown template \"nic-82567\"",
                                     "the templates are " + templateNames.joined(separator: ", ")]),
    StrictInputCase(name: "JSON syntax error: line and column, in words",
                    arguments: ["check", "{dir}/syntax.json"], status: 1, stdout: "",
                    stderr: "{dir}/syntax.json: line 2, column 31: expected ',' or '}', found '\"'\n"),
    StrictInputCase(name: "serve --machine with a mistake: the option, the file, the place; no usage line",
                    arguments: ["{dir}/mnt", "--machine", "{dir}/fault-name.json"], status: 1,
                    stderrContains: ["pcibackfsd: --machine {dir}/fault-name.json: line 4, column 82: devices[1].faults.resetFail: "],
                    stderrLacks: ["Usage:"]),
    StrictInputCase(name: "serve --machine with a missing file: the errno's words",
                    arguments: ["{dir}/mnt", "--machine", "{dir}/missing.json"], status: 1,
                    stderr: "pcibackfsd: --machine {dir}/missing.json: No such file or directory\n"),
    StrictInputCase(name: "check: a PCI Express dump cut at 256 bytes imports as 256 bytes, with a warning",
                    arguments: ["check", "{dir}/nic-256.txt"], status: 0,
                    stdout: "0000:03:00.0 8086:10c9 class 020000 config 256 driver igb faults -\n",
                    stderrContains: ["{dir}/nic-256.txt: warning: 0000:03:00.0 is a PCI Express function but only its first 256 config bytes",
                                     "extended capabilities (AER, SR-IOV, ARI, ...) are missing"]),
    StrictInputCase(name: "serve --lspci-dump: the same warning before anything else",
                    arguments: ["{dir}/no-such-mountpoint", "--no-builtin", "--lspci-dump", "{dir}/nic-256.txt"], status: 1,
                    stderrContains: ["{dir}/nic-256.txt: warning: 0000:03:00.0 is a PCI Express function", "pcibackfsd: cannot use {dir}/no-such-mountpoint as a mount point: No such file or directory"]),
    StrictInputCase(name: "check: the full dump gives no warning",
                    arguments: ["check", "{dir}/nic-4096.txt"], status: 0,
                    stdout: "0000:03:00.0 8086:10c9 class 020000 config 4096 driver igb faults -\n", stderr: ""),
    StrictInputCase(name: "check on a valid file: one line per function",
                    arguments: ["check", "{dir}/readme.json"], status: 0, stdout: StrictInputFiles.readmeLines, stderr: ""),
    StrictInputCase(name: "check on several files: each file's lines after its name; errors prefixed with the file; exit 1",
                    arguments: ["check", "{dir}/readme.json", "{dir}/syntax.json"], status: 1,
                    stdout: "{dir}/readme.json:\n" + StrictInputFiles.readmeLines,
                    stderr: "{dir}/syntax.json: line 2, column 31: expected ',' or '}', found '\"'\n"),
    StrictInputCase(name: "templates: every template, one line each",
                    arguments: ["templates"], status: 0,
                    stdoutContains: templateNames.map { "\n" + $0 + " " } + ["8086:10c9", "class 020000", "SR-IOV"], stderr: ""),
    StrictInputCase(name: "capture -o into a missing directory: cannot write, in words",
                    arguments: ["capture", "--lspci-dump", "{dir}/nic-4096.txt", "-o", "{dir}/missing/x.json"], status: 1,
                    stdout: "", stderr: "pcibackfsd capture: cannot write {dir}/missing/x.json: No such file or directory\n"),
    StrictInputCase(name: "capture --lspci-dump of a cut PCI Express dump warns too",
                    arguments: ["capture", "--lspci-dump", "{dir}/nic-256.txt", "-o", "{dir}/cut.json"], status: 0,
                    stderrContains: ["{dir}/nic-256.txt: warning: 0000:03:00.0 is a PCI Express function"]),
    StrictInputCase(name: "capture --sysfs of a directory that is not a PCI sysfs says what it takes",
                    arguments: ["capture", "--sysfs", "{dir}/sysroot/devices"], status: 1, stdout: "",
                    stderr: "pcibackfsd capture: {dir}/sysroot/devices: not a PCI sysfs directory; give /sys, /sys/bus/pci or "
                        + "/sys/bus/pci/devices (or the same under a mount point)\n"),
    StrictInputCase(name: "capture of an unknown function: a message, not the usage",
                    arguments: ["capture", "--sysfs", "{dir}/sysroot", "0000:7f:1f.7"], status: 1, stdout: "",
                    stderr: "pcibackfsd capture: no function 0000:7f:1f.7 in {dir}/sysroot/bus/pci/devices\n"),
    StrictInputCase(name: "capture of a malformed function name is a usage error of capture",
                    arguments: ["capture", "03:00.0.1"], status: 64,
                    stderrContains: ["'03:00.0.1' is not a function name like 0000:03:00.0", "Usage: pcibackfsd capture"]),
    StrictInputCase(name: "--help: the usage line, the most used options, the subcommands",
                    arguments: ["--help"], status: 0,
                    stdoutContains: ["pcibackfsd MOUNTPOINT [options]", "--machine FILE", "--lspci-dump FILE", "pcibackfsd help serve",
                                     "pcibackfsd help run", "check", "templates", "capture"]),
] + sysfsForms.map { form in
    StrictInputCase(name: "capture --sysfs ROOT\(form) of a fake sysfs",
                    arguments: ["capture", "--sysfs", "{dir}/sysroot" + form], status: 0,
                    stdoutContains: ["\"address\" : \"0000:03:00.0\"", "\"driver\" : \"igb\"", "\"irq\" : 18"], stderr: "")
}

@Suite("Strict inputs and messages (the built pcibackfsd)", .serialized, .timeLimit(.minutes(3)))
struct StrictInputTests {
    static func run(_ arguments: [String], in directory: String) -> ProcessResult {
        Subprocess.run(MountEnvironment.daemonPath, arguments.map { $0.replacingOccurrences(of: "{dir}", with: directory) })
    }

    @Test("a mistake gets its message and exit status", arguments: strictInputCases)
    func mistake(_ mistake: StrictInputCase) throws {
        let directory = Temporary.directory(prefix: "pcibackfs-strict")
        defer { Temporary.remove(directory) }
        try StrictInputFiles.write(into: directory)
        func expand(_ text: String) -> String { text.replacingOccurrences(of: "{dir}", with: directory) }
        let result = Self.run(mistake.arguments, in: directory)
        #expect(!result.timedOut)
        #expect(result.status == mistake.status, "\(result)")
        if let stdout = mistake.stdout { #expect(result.stdout == expand(stdout), "\(result)") }
        // A leading newline, so "\nNAME" finds NAME at the start of any line.
        for text in mistake.stdoutContains { #expect(("\n" + result.stdout).contains(expand(text)), "stdout lacks \(text)\n\(result)") }
        if let stderr = mistake.stderr { #expect(result.stderr == expand(stderr), "\(result)") }
        for text in mistake.stderrContains { #expect(result.stderr.contains(expand(text)), "stderr lacks \(text)\n\(result)") }
        for text in mistake.stderrLacks + ["Error Domain", "NSCocoaErrorDomain", "DecodingError"] {
            #expect(!result.stderr.contains(text), "stderr has \(text)\n\(result)")
        }
    }

    @Test("capture --sysfs takes every form of the host's /sys (one function)",
          arguments: ["/sys", "/sys/", "/sys/bus/pci", "/sys/bus/pci/", "/sys/bus/pci/devices", "/sys/bus/pci/devices/"])
    func hostSysfsForms(_ form: String) throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices").sorted()) ?? []
        try #require(!names.isEmpty && MountEnvironment.isRoot, "needs root and PCI devices in /sys/bus/pci/devices")
        let result = Self.run(["capture", "--sysfs", form, names[0]], in: "/")
        #expect(result.status == 0, "\(result)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdoutBytes)) as? [String: Any]
        #expect((object?["devices"] as? [[String: Any]])?.compactMap { $0["address"] as? String } == [names[0]], "\(result)")
        #expect(object?["name"] as? String == "/sys/bus/pci/devices")
    }

    @Test("every machine file under fixtures/ and the README's example pass check")
    func fixturesAndReadme() throws {
        let fixtures = MountEnvironment.packageRoot + "/fixtures"
        let files = try FileManager.default.contentsOfDirectory(atPath: fixtures).filter { $0.hasSuffix(".json") }.sorted()
        try #require(!files.isEmpty)
        for file in files {
            let result = Self.run(["check", fixtures + "/" + file], in: fixtures)
            #expect(result.status == 0 && result.stderr.isEmpty, "\(file): \(result)")
            #expect(!result.stdout.isEmpty)
        }
        // The README's example, as it stands in "Machine files".
        let readme = try String(contentsOfFile: MountEnvironment.packageRoot + "/README.md", encoding: .utf8)
        let section = try #require(readme.range(of: "## Machine files").map { readme[$0.upperBound...] })
        let start = try #require(section.range(of: "```json\n"))
        let end = try #require(section[start.upperBound...].range(of: "```"))
        let directory = Temporary.directory(prefix: "pcibackfs-strict")
        defer { Temporary.remove(directory) }
        try String(section[start.upperBound..<end.lowerBound]).write(toFile: directory + "/example.json", atomically: true, encoding: .utf8)
        let result = Self.run(["check", directory + "/example.json"], in: directory)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == StrictInputFiles.readmeLines, "\(result)")
    }
}
#endif
