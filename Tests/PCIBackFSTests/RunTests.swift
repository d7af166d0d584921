#if canImport(Glibc)
import Foundation
import Glibc
import PCIBackFS
import Testing

// `pcibackfsd run -- COMMAND`: the real daemon, a real namespace, real commands. Each test has
// a hard time limit (Subprocess.run kills the process group when it expires).

enum RunNamespace {
    /// `pcibackfsd run [options] -- sh -c SCRIPT`.
    static func shell(_ script: String, options: [String] = [], timeout: Double = 90) -> ProcessResult {
        Subprocess.run(MountEnvironment.daemonPath, ["run"] + options + ["--", "sh", "-c", script], timeout: timeout)
    }

    /// The built-in machine's functions, as the library builds them.
    static var builtinFunctions: [String] { BuiltinMachine.make().order.map(\.description) }

    /// Processes whose command line contains `marker`, with their pid-namespace links.
    static func processes(containing marker: String) -> [(pid: Int32, commandLine: String)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { name in
            guard let pid = Int32(name),
                  let bytes = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(name)/cmdline")) else { return nil }
            let line = String(decoding: bytes.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return line.contains(marker) ? (pid, line) : nil
        }
    }

    /// Pids of every process in namespace `namespace` (the text of a /proc/PID/ns/KIND link).
    static func members(of namespace: String, kind: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { name in
            guard let pid = Int32(name), (try? Sys.readlink("/proc/\(name)/ns/\(kind)")) == namespace else { return nil }
            return pid
        }
    }

    /// Whether the host's mount table has a pcibackfs on /sys (run's must stay in its namespace).
    static func hostHasSysMount() -> Bool {
        let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").contains { $0.split(separator: " ")[4] == "/sys" && $0.contains(" - fuse.pcibackfs ") }
    }

    static func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }
}

@Suite("pcibackfsd run: lifetime", .serialized, .requiresDaemonMount)
struct RunLifetimeTests {
    @Test("run exits with COMMAND's status, 128+N for signal N", arguments: [
        ("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 143), ("kill -KILL $$", 137),
        ("exec /nonexistent/command", 127),
    ] as [(String, Int32)])
    func exitStatus(script: String, expected: Int32) {
        let result = RunNamespace.shell(script)
        #expect(!result.timedOut)
        #expect(result.status == expected, "\(result)")
    }

    /// A terminal sends ^C to its whole foreground group: COMMAND gets it from the terminal, so
    /// `run` passes on only what kill(2) sends it, and an interactive COMMAND survives ^C.
    @Test("a terminal's ^C reaches COMMAND once each, and does not end run")
    func terminalInterrupt() {
        let driver = """
            import os, pty, sys, time
            pid, fd = pty.fork()
            if pid == 0:
                os.execv(sys.argv[1], [sys.argv[1], "run", "--", "python3", "-c",
                    "import signal, time\\n"
                    "count = [0]\\n"
                    "signal.signal(signal.SIGINT, lambda *a: count.__setitem__(0, count[0] + 1))\\n"
                    "print('ready', flush=True)\\n"
                    "while count[0] < 2: time.sleep(0.05)\\n"
                    "time.sleep(0.5)\\n"
                    "print('interrupts', count[0], flush=True)\\n"])
            output = b""
            while b"ready" not in output:
                output += os.read(fd, 1024)
            for _ in range(2):
                os.write(fd, b"\\x03")
                time.sleep(0.3)
            while True:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            _, status = os.waitpid(pid, 0)
            print(output.decode().replace("\\r", "").split("ready")[1].replace("^C", "").strip(), os.waitstatus_to_exitcode(status))
            """
        let result = Subprocess.run("python3", ["-c", driver, MountEnvironment.daemonPath], timeout: 60)
        #expect(result.stdout == "interrupts 2 0\n", "\(result)")
    }

    /// `run` builds the machine once before the namespaces (to fail early) and once inside;
    /// a warning must still appear once.
    @Test("start-up warnings appear once") func warningsOnce() {
        let result = Subprocess.run(MountEnvironment.daemonPath, ["run", "--hide", "(zz", "--", "true"], timeout: 30)
        #expect(result.status == 0, "\(result)")
        #expect(result.stderr.components(separatedBy: "xen_pciback: Error parsing pci_devs_to_hide at \"(zz\"").count == 2,
                "\(result.stderr)")
    }

    @Test("a missing COMMAND is a usage error") func missingCommand() {
        let result = Subprocess.run(MountEnvironment.daemonPath, ["run"], timeout: 30)
        #expect(result.status == 64)
        #expect(result.stderr.contains("run needs a COMMAND after --"))
    }

    enum Ending: String, CaseIterable, CustomTestStringConvertible {
        case commandExits, commandKilled, runInterrupted, runTerminated, runKilled
        var testDescription: String { rawValue }
        /// What `run` exits with.
        var status: Int32 {
            switch self {
            case .commandExits: 0
            case .commandKilled, .runKilled: 137
            case .runInterrupted: 130
            case .runTerminated: 143
            }
        }
    }

    /// The FUSE connection lives as long as a process holds its /dev/fuse descriptor, and the
    /// mount namespace (with the mount) as long as a process is in it: both are gone when no
    /// process is left in the run's pid and mount namespaces.
    @Test("nothing is left behind: no process, namespace or mount", arguments: Ending.allCases)
    func teardown(ending: Ending) throws {
        let marker = "pcibackfs-run-\(UUID().uuidString)"
        let directory = Temporary.directory(prefix: "pcibackfs-run-teardown")
        defer { Temporary.remove(directory) }
        let ready = directory + "/ready", quit = directory + "/quit"
        let script = "touch \(ready); while [ ! -e \(quit) ]; do sleep 0.05; done; : \(marker)"
        let run = try Subprocess.spawn(MountEnvironment.daemonPath, ["run", "--", "sh", "-c", script],
                                       stdoutPath: directory + "/out", stderrPath: directory + "/err")
        defer { kill(-run, SIGKILL); _ = Subprocess.wait(run, until: Date().addingTimeInterval(5)) }
        #expect(RunNamespace.waitUntil(30) { access(ready, F_OK) == 0 }, "COMMAND never started")

        let inside = RunNamespace.processes(containing: marker)
        let initProcess = try #require(inside.first { $0.commandLine.contains(RunSupervisor.initVerb) })
        let pidNamespace = try Sys.readlink("/proc/\(initProcess.pid)/ns/pid")
        let mountNamespace = try Sys.readlink("/proc/\(initProcess.pid)/ns/mnt")
        #expect(mountNamespace != (try Sys.readlink("/proc/self/ns/mnt")))
        #expect(RunNamespace.members(of: pidNamespace, kind: "pid").count >= 2)
        #expect(!RunNamespace.hostHasSysMount())

        switch ending {
        case .commandExits: FileManager.default.createFile(atPath: quit, contents: nil)
        case .commandKilled:
            let command = try #require(inside.first { $0.commandLine.hasPrefix("sh -c") })
            kill(command.pid, SIGKILL)
        case .runInterrupted: kill(run, SIGINT)
        case .runTerminated: kill(run, SIGTERM)
        case .runKilled: kill(run, SIGKILL)
        }
        let status = Subprocess.wait(run, until: Date().addingTimeInterval(30))
        #expect(status == ending.status)
        #expect(RunNamespace.waitUntil(10) { RunNamespace.members(of: pidNamespace, kind: "pid").isEmpty },
                "processes left: \(RunNamespace.members(of: pidNamespace, kind: "pid"))")
        #expect(RunNamespace.waitUntil(10) { RunNamespace.members(of: mountNamespace, kind: "mnt").isEmpty })
        // The merged /sys never reached the host's mount table.
        #expect(!RunNamespace.hostHasSysMount())
    }
}

@Suite("pcibackfs run: privilege", .serialized, .requiresDaemonMount, .requiresTool("setpriv"))
struct RunPrivilegeTests {
    @Test("an unprivileged user is root in a user namespace and sees the machine")
    func unprivileged() {
        let result = Subprocess.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups",
                                                MountEnvironment.daemonPath, "run", "--", "sh", "-c",
                                                "id -u; lspci -D | cut -d' ' -f1"], timeout: 60)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.split(separator: "\n").map(String.init) == ["0"] + RunNamespace.builtinFunctions)
    }

    /// User namespaces nest 32 deep: below 32 levels the kernel refuses a new one, as a kernel
    /// that forbids them to unprivileged users does.
    @Test("where the kernel refuses a user namespace, run says what to do and exits 1")
    func refused() {
        var command = "unshare -U --map-user=1000 --map-group=1000 \(MountEnvironment.daemonPath) run -- true"
        for _ in 0..<32 { command = "unshare -U -r " + command }
        let result = Subprocess.shell(command, timeout: 60)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("pcibackfsd run: cannot create a user namespace"))
        #expect(result.stderr.contains("Run as root"))
    }
}

@Suite("pcibackfs run: the merged /sys", .serialized, .requiresDaemonMount)
struct RunViewTests {
    /// Sections of one script's output, split on "== NAME" lines.
    static func sections(_ text: String) -> [String: [String]] {
        var result: [String: [String]] = [:]
        var current = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("== ") { current = String(line.dropFirst(3)); result[current] = [] } else if !line.isEmpty {
                result[current, default: []].append(line)
            }
        }
        return result
    }

    @Test("PCI is the emulation's, the rest is the host's, and every link resolves")
    func view() throws {
        let script = """
            echo '== pci'; ls /sys/bus/pci/devices
            echo '== cpu'; cat /sys/devices/system/cpu/online
            echo '== procpci'; ls -A /proc/bus/pci 2>&1
            echo '== procpcimount'; awk '$5 == "/proc/bus/pci" { print $6 }' /proc/self/mountinfo
            echo '== netdev'; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
            echo '== sysmounts'; awk '$5 ~ "^/sys(/|$)" { split($0, a, " - "); split(a[2], b, " "); print $5, b[1] }' /proc/self/mountinfo
            echo '== dangling'; find /sys -xdev -xtype l
            echo '== control'; cat /sys/fs/pcibackfs/profile
            """
        let result = RunNamespace.shell(script)
        #expect(result.status == 0, "\(result)")
        let sections = Self.sections(result.stdout)
        #expect(sections["pci"] == RunNamespace.builtinFunctions)
        let hostCPUs = try String(contentsOfFile: "/sys/devices/system/cpu/online", encoding: .utf8)
        #expect(sections["cpu"] == [hostCPUs.trimmingCharacters(in: .whitespacesAndNewlines)])
        #expect(sections["procpci"] == [])
        #expect(sections["procpcimount"] == ["ro,nosuid,nodev,noexec,relatime"])
        #expect(sections["netdev"]?.contains("lo") == true)
        #expect(sections["dangling"] == [], "dangling links: \(sections["dangling"] ?? [])")
        #expect(sections["control"] == ["current"])
        // /sys itself is the merged FUSE tree; every host submount is the real file system again.
        let mounts = sections["sysmounts"] ?? []
        #expect(mounts.last { $0.hasPrefix("/sys ") } == "/sys fuse.pcibackfs")
        let hostMountInfo = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        for line in hostMountInfo.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, fields[4].hasPrefix("/sys/"), let separator = fields.firstIndex(of: "-") else { continue }
            let entry = "\(fields[4]) \(fields[separator + 1])"
            #expect(mounts.contains(entry), "host submount \(entry) missing inside")
        }
    }

    @Test("no host network interface is visible in sysfs or /proc/net/dev")
    func network() throws {
        let hostInterfaces = try FileManager.default.contentsOfDirectory(atPath: "/sys/class/net").filter { $0 != "lo" }
        let result = RunNamespace.shell("ls /sys/class/net; ls /sys/devices/virtual/net; tail -n +3 /proc/net/dev | cut -d: -f1")
        #expect(result.status == 0, "\(result)")
        let seen = Set(result.stdout.split(whereSeparator: { $0 == "\n" || $0 == " " }).map(String.init))
        for interface in hostInterfaces { #expect(!seen.contains(interface), "host interface \(interface) is visible") }
    }

    @Test("--net-links: a link per emulated interface, with its MAC, that follows unbind and bind")
    func netLinks() throws {
        let tree = SysfsTree(dom0: try Dom0(machine: BuiltinMachine.make(),
                                            policy: FilterPolicy(profile: .current, globalPermissive: false),
                                            hide: "", passthrough: false))
        let interfaces = tree.networkInterfaces()
        let nic = try #require(interfaces.first { $0.name.hasSuffix("f0") })
        let script = """
            links() { tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo; }
            links
            cat /sys/class/net/\(nic.name)/address; cat /sys/class/net/\(nic.name)/device/../\(nic.name) 2>/dev/null
            ip -o link show \(nic.name) | grep -o 'link/ether [0-9a-f:]*'
            bdf=$(basename "$(readlink /sys/class/net/\(nic.name)/device)")
            echo -n $bdf > /sys/bus/pci/devices/$bdf/driver/unbind
            i=0; while ip link show \(nic.name) >/dev/null 2>&1 && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; links
            echo -n $bdf > /sys/bus/pci/drivers/igb/bind
            i=0; while ! ip link show \(nic.name) >/dev/null 2>&1 && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; links
            """
        let result = RunNamespace.shell(script, options: ["--net-links"])
        #expect(result.status == 0, "\(result)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let all = (interfaces.map(\.name) + ["lo"]).sorted().joined(separator: " ") + " "
        let without = (interfaces.map(\.name).filter { $0 != nic.name } + ["lo"]).sorted().joined(separator: " ") + " "
        #expect(lines == [all, nic.address, "link/ether \(nic.address)", without, all], "\(result)")
    }
}
#endif
