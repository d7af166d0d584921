import ArgumentParser
import Foundation
import PCIBackFS

/// pcibackfsd: mounts an imitation of a Xen dom0's PCI sysfs over FUSE.
struct PCIBackFSDaemon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pcibackfsd",
        abstract: "An emulated Xen dom0 PCI sysfs (pciback, devices, frontends) over FUSE.",
        usage: """
            pcibackfsd MOUNTPOINT [options]      (serve: the default subcommand)
            pcibackfsd run [options] -- COMMAND [ARGS...]
            pcibackfsd capture [BDF...] [--sysfs DIR] [--lspci-dump FILE] [-o FILE]
            pcibackfsd check FILE...
            pcibackfsd templates
            """,
        discussion: """
            Most used options of serve and run (every option: pcibackfsd help serve,
            pcibackfsd help run):
              --machine FILE      a JSON machine file instead of the built-in machine
                                  (pcibackfsd check FILE validates it)
              --lspci-dump FILE   add the functions of an lspci -vvv -xxxx dump
              --no-builtin        start without the built-in machine
              --profile P         the kernel whose pciback to imitate (default current)
              --hide S            xen-pciback.hide, e.g. "(0000:03:00.0)" (--strict-hide: refuse a bad one)
              --permissive, --passthrough, --state FILE, --trace-log FILE

            Examples:
              pcibackfsd /run/pcibackfs
              pcibackfsd /run/pcibackfs --machine host.json
              pcibackfsd run -- lspci -D -k
            """,
        version: PCIBackFSVersion.string,
        subcommands: [Serve.self, Run.self, Capture.self, Check.self, Templates.self, RunInit.self],
        defaultSubcommand: Serve.self)
}

/// A runtime error (not a usage error): `pcibackfsd[ COMMAND]: MESSAGE` on standard error, one
/// prefix per line, and exit status 1.
func failure(_ command: String?, _ message: String) -> ExitCode {
    let prefix = "pcibackfsd" + (command.map { " " + $0 } ?? "") + ": "
    let lines = message.split(separator: "\n", omittingEmptySubsequences: false).map { prefix + $0 + "\n" }
    FileHandle.standardError.write(Data(lines.joined().utf8))
    return ExitCode(1)
}

/// Warnings on standard error, one a line, as they are.
func printWarnings(_ warnings: [String]) {
    for warning in warnings { FileHandle.standardError.write(Data((warning + "\n").utf8)) }
}

/// The options that describe the emulated machine and how it is served, shared by `serve`
/// and `run`.
struct MachineOptions: ParsableArguments {
    @Option(name: .long, help: "The kernel whose pciback to imitate: \(KernelProfile.allCases.map(\.rawValue).joined(separator: ", ")).")
    var profile: String = KernelProfile.current.rawValue

    @Option(name: .long, help: "A JSON machine file (see README) instead of the built-in machine.")
    var machine: String?

    @Option(name: .long, parsing: .singleValue,
            help: "Add the functions of an `lspci -vvv -xxx`/`-xxxx` dump (repeatable). With --no-builtin, only these.")
    var lspciDump: [String] = []

    @Flag(name: .long, help: "Start without the built-in machine (use with --lspci-dump).")
    var noBuiltin = false

    @Option(name: .long, help: "xen-pciback.hide: the boot-time seize list, e.g. \"(0000:03:00.0)(0000:03:00.1)\".")
    var hide: String = ""

    @Flag(name: .long, help: "Refuse to start when --hide does not parse or is out of range (by default the machine runs without pciback, as the kernel does).")
    var strictHide = false

    @Flag(name: .long, help: "xen-pciback.permissive=1: global permissive mode.")
    var permissive = false

    @Flag(name: .long, help: "xen-pciback.passthrough=1: the passthrough backend instead of vpci.")
    var passthrough = false

    @Option(name: .long, help: "How xen-pciback is built: module (loadable, as Debian ships it) or builtin; shapes module/xen_pciback.")
    var pcibackBuild: String = ModuleBuild.module.rawValue

    @Option(name: .long, help: "The dom0 the kernel runs as: pv (default) or pvh. Only a PVH dom0 has Xen's device-reset hypercall, whose failure fails pciback's bind.")
    var dom0: String = Dom0Kind.pv.rawValue

    @Flag(name: .long, help: "Attribute modes of kernels before 4.14 (0400/0600 instead of 0444/0644).")
    var legacyModes = false

    @Flag(name: .long, help: "Let users other than root use the mount (FUSE allow_other).")
    var allowOther = false

    @Option(name: .long, help: "Upper bound of FUSE worker threads.")
    var maxThreads: Int = 8

    @Flag(name: .long, help: "One /dev/fuse descriptor for all workers (no clone_fd).")
    var noCloneFD = false

    @Flag(name: .long, help: "Print libfuse's request trace on standard error.")
    var debug = false

    @Option(name: .long, help: "Also append every pciback verdict on frontend accesses to FILE as JSON lines.")
    var traceLog: String?

    @Option(name: .long, help: "Keep the machine in FILE (a journal of every acknowledged change, replayed on start).")
    var state: String?

    @Flag(name: .long, help: "With --state: fdatasync the journal before acknowledging each change.")
    var fsync = false

    func validate() throws {
        guard KernelProfile(rawValue: profile) != nil else {
            throw ValidationError("unknown profile '\(profile)'; one of \(KernelProfile.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard ModuleBuild(rawValue: pcibackBuild) != nil else {
            throw ValidationError("unknown --pciback-build '\(pcibackBuild)'; one of \(ModuleBuild.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard Dom0Kind(rawValue: dom0) != nil else {
            throw ValidationError("unknown --dom0 '\(dom0)'; one of \(Dom0Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard maxThreads >= 1 && maxThreads <= 256 else { throw ValidationError("--max-threads must be 1...256") }
        if noBuiltin && lspciDump.isEmpty && machine == nil {
            throw ValidationError("--no-builtin needs --machine or at least one --lspci-dump")
        }
    }

    /// The dom0 these options describe (the built-in machine, a machine file, dumps). Errors
    /// are reported as `pcibackfsd[ command]: ...` and end with exit status 1, after the
    /// warnings gathered so far. On success the warnings are printed unless `warning` is false
    /// (a check whose build is repeated later, and warns then).
    func makeDom0(command: String? = nil, warning: Bool = true) throws -> Dom0 {
        var devices: [EmulatedDevice] = []
        var warnings: [String] = []
        func fail(_ message: String) -> ExitCode {
            printWarnings(warnings)
            return failure(command, message)
        }
        if let machine {
            do { devices = try MachineFile.load(path: machine, warnings: &warnings) } catch { throw fail("--machine \(error)") }
        } else if !noBuiltin {
            let builtin = BuiltinMachine.make()
            devices = builtin.order.compactMap { builtin[$0] }
        }
        for path in lspciDump {
            var found: [String] = []
            defer { warnings += found.map { path + ": " + $0 } }
            do { devices += try DeviceImporter.importDump(path: path, warnings: &found) } catch {
                throw fail("--lspci-dump \(error.message(about: path, naming: true))")
            }
        }
        var seen = Set<PCIAddress>()
        for device in devices where !seen.insert(device.address).inserted {
            throw fail("two functions at \(device.address) (from --machine, --lspci-dump or the built-in machine); "
                       + "use --no-builtin or a dump without clashes")
        }
        // Imported PFs with VF Enable set come up with their VFs (a snapshot of a running system).
        do { devices = try SnapshotSRIOV.placeVirtualFunctions(devices) } catch { throw fail("virtual functions: \(error)") }
        let machine = Machine(name: self.machine ?? (noBuiltin ? "imported" : "builtin"), devices: devices)
        let policy = FilterPolicy(profile: KernelProfile(rawValue: profile)!, globalPermissive: permissive)
        // A --hide that xen-pciback's init rejects: its message as the kernel logs it, then either
        // the refusal (--strict-hide) or the machine without pciback.
        var loadFailure: PcibackLoadFailure?
        if case .failure(let reason) = Dom0.hideSeizeList(hide) { loadFailure = reason }
        if let message = loadFailure?.kernelMessage { warnings.append("xen_pciback: " + message) }
        let dom0: Dom0
        do {
            dom0 = try Dom0(machine: machine, policy: policy, hide: hide, passthrough: passthrough, strictHide: strictHide,
                            dom0Kind: Dom0Kind(rawValue: self.dom0)!)
        } catch {
            throw fail("--hide \"\(hide)\": xen-pciback failed to load: \(error)")
        }
        if let loadFailure {
            warnings.append("pcibackfsd: --hide \"\(hide)\": xen-pciback did not load (\(loadFailure.errno): \(loadFailure.reason)); "
                            + "serving without pciback (--strict-hide refuses to start instead)")
        }
        if warning { printWarnings(warnings) }
        return dom0
    }

    /// The tree's options: the class devices' numbers avoid those this host uses.
    var treeOptions: TreeOptions {
        TreeOptions(legacyModes: legacyModes, pcibackBuild: ModuleBuild(rawValue: pcibackBuild)!, hostNumbers: .scan())
    }

    /// The tree over `makeDom0()`, with the trace log and the restored --state journal.
    func makeTree(command: String? = nil) throws -> SysfsTree {
        let dom0 = try makeDom0(command: command)
        var log: TraceLog?
        if let traceLog {
            do { log = try TraceLog(path: traceLog) } catch { throw failure(command, "--trace-log \(traceLog): \(error)") }
        }
        var journal: StateJournal?
        if let state {
            do {
                journal = try StateJournal(path: state, options: StateOptions(
                    profile: profile, machine: self.machine, lspciDumps: lspciDump, noBuiltin: noBuiltin, hide: hide,
                    permissive: permissive, passthrough: passthrough, legacyModes: legacyModes, pcibackBuild: pcibackBuild,
                    dom0: self.dom0),
                    fsync: fsync)
            } catch {
                FileHandle.standardError.write(Data("pcibackfsd: --state \(state): \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
        let tree = SysfsTree(dom0: dom0, options: treeOptions, traceLog: log, journal: journal)
        if let journal {
            do {
                let report = try journal.restore(into: tree)
                FileHandle.standardError.write(Data("pcibackfsd: --state \(journal.path): \(report)\n".utf8))
            } catch {
                FileHandle.standardError.write(Data("pcibackfsd: --state \(journal.path): \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
        return tree
    }

    var serverOptions: FUSEServer.Options {
        .init(allowOther: allowOther, maxThreads: maxThreads, cloneFD: !noCloneFD, debug: debug)
    }
}

/// `pcibackfsd [serve] MOUNTPOINT [options]`
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount an emulated Xen dom0 PCI sysfs (pciback, devices, frontends) over FUSE.",
        discussion: """
            The mount point mirrors /sys: use it in place with
              lspci -A linux-sysfs -O sysfs.path=MOUNTPOINT/bus/pci
            or bind-mount it over /sys in a private mount namespace.
            Frontends (stub domains, PV guests) are under MOUNTPOINT/fs/pcibackfs/.
            """)

    @Argument(help: "An existing, empty directory to mount on.")
    var mountPoint: String

    @OptionGroup var options: MachineOptions

    @Flag(name: .long, help: "Mount even if MOUNTPOINT is not empty (its files are hidden while mounted).")
    var nonempty = false

    @Option(name: .long, help: "Write the daemon's pid to FILE once the mount serves (removed on exit).")
    var pidfile: String?

    @Option(name: .long, help: "Write a line to file descriptor N once the mount serves, then close it.")
    var readyFd: Int32?

    func validate() throws {
        if let readyFd, readyFd < 0 || fcntl(readyFd, F_GETFD) < 0 {
            throw ValidationError("--ready-fd \(readyFd): not an open file descriptor")
        }
    }

    /// Tells scripts and supervisors that the mount serves: systemd's READY=1, the pid file,
    /// the ready descriptor.
    private func announceReady() {
        ServiceNotification.ready()
        if let pidfile {
            if let why = OutputFile.write(Data("\(getpid())\n".utf8), to: pidfile) {
                FileHandle.standardError.write(Data("pcibackfsd: cannot write --pidfile \(pidfile): \(why)\n".utf8))
            }
        }
        if let readyFd {
            _ = "ready\n".withCString { write(readyFd, $0, strlen($0)) }
            close(readyFd)
        }
    }

    func run() throws {
        let tree = try options.makeTree()
        do {
            try MountPoint.checkPrivilege()
            if let message = try MountPoint.prepare(mountPoint, allowNonEmpty: nonempty) {
                FileHandle.standardError.write(Data("pcibackfsd: \(message)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("pcibackfsd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let server = FUSEServer(model: tree, options: options.serverOptions)
        do {
            try server.mount(at: mountPoint)
        } catch {
            var hint = ""
            if error == .operationNotPermitted || error == .permissionDenied {
                hint = " (FUSE mounts need root, or a user namespace where the kernel allows FUSE: unshare -Urm)"
            }
            FileHandle.standardError.write(Data("pcibackfsd: cannot mount on \(mountPoint): \(error)\(hint)\n".utf8))
            throw ExitCode(1)
        }
        defer {
            server.unmount()
            if let pidfile { unlink(pidfile) }
        }
        do {
            try server.run(onReady: announceReady)
        } catch {
            FileHandle.standardError.write(Data("pcibackfsd: session ended: \(error)\n".utf8))
            throw ExitCode(1)
        }
        ServiceNotification.stopping()
    }
}

// The trampoline that becomes `run`'s COMMAND (RunSupervisor.execCommand): before any parsing.
if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == RunSupervisor.execVerb {
    RunSupervisor.execCommand(Array(CommandLine.arguments.dropFirst(2)))
}
PCIBackFSDaemon.main()

/// `pcibackfsd capture [BDF...]`: a machine file from this host's PCI sysfs or an lspci dump.
struct Capture: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a machine file (JSON) from this host's /sys/bus/pci or from an lspci dump.",
        discussion: """
            The file replays the functions (config bytes, BAR sizes, IRQ, host driver) with
            `pcibackfsd MOUNTPOINT --machine FILE`. Capturing from sysfs needs root to read more than
            64 bytes of config.
            """)

    @Argument(help: "Functions to capture (DDDD:BB:SS.F); all when none is given.")
    var functions: [String] = []

    @Option(name: .long, help: "The sysfs to read: /sys, /sys/bus/pci or /sys/bus/pci/devices, or the same under a mount point.")
    var sysfs: String = "/sys"

    @Option(name: .long, help: "Read an `lspci -vvv -xxx`/`-xxxx` dump instead of sysfs.")
    var lspciDump: String?

    @Option(name: [.short, .long], help: "Write to FILE instead of standard output.")
    var output: String?

    func validate() throws {
        for text in functions where PCIAddress(kernelName: text) == nil {
            throw ValidationError("'\(text)' is not a function name like 0000:03:00.0 (DDDD:BB:SS.F, lower-case hex)")
        }
    }

    func run() throws {
        var captured: [CapturedFunction]
        let source: String
        do {
            if let lspciDump {
                source = lspciDump
                do { captured = try LspciDump.parse(path: lspciDump) } catch {
                    throw failure("capture", error.message(about: lspciDump, naming: true))
                }
                printWarnings(captured.compactMap(DeviceImporter.missingExtendedSpaceWarning).map { lspciDump + ": " + $0 })
            } else {
                source = try SysfsCapture.devicesDirectory(for: sysfs)
                captured = try SysfsCapture.readAll(devicesDirectory: source)
                if captured.isEmpty { throw failure("capture", "\(source): no PCI functions there") }
            }
        } catch let error as CaptureError {
            throw failure("capture", error.message(about: sysfs, naming: true))
        }
        if !functions.isEmpty {
            let wanted = functions.compactMap { PCIAddress(kernelName: $0) }
            for address in wanted where !captured.contains(where: { $0.address == address }) {
                throw failure("capture", "no function \(address) in \(source)")
            }
            captured = captured.filter { wanted.contains($0.address) }
        }
        let file = MachineFile(name: source, devices: captured.map(MachineFile.entry(capturing:)))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var data = try encoder.encode(file)
        data.append(0x0a)
        if let output {
            if let reason = OutputFile.write(data, to: output) { throw failure("capture", "cannot write \(output): \(reason)") }
        } else {
            FileHandle.standardOutput.write(data)
        }
    }
}

/// `pcibackfsd run [options] -- COMMAND [ARGS...]`: COMMAND in private namespaces whose /sys
/// is the host's with the emulated machine in place of the host's PCI devices.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run COMMAND in a private /sys: the host's, with the emulated machine instead of its PCI devices.",
        discussion: """
            COMMAND runs in new mount, network and pid namespaces (and a user namespace when not
            root). Its /sys is the host's sysfs with every host PCI device hidden and the emulated
            machine in their place; the control files are at /sys/fs/pcibackfs/. /proc/bus/pci is
            hidden, and the network namespace holds lo and one link per emulated interface.
            run exits with COMMAND's status (128+N if signal N ended it); nothing stays behind.
            """)

    @OptionGroup var options: MachineOptions

    @OptionGroup var runOptions: RunOptions

    @Argument(parsing: .postTerminator, help: "The command to run, after --.")
    var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("run needs a COMMAND after --, e.g. pcibackfsd run -- lspci -D") }
    }

    func run() throws {
        // Fail on a bad machine before any namespace exists; the init process builds it again
        // and prints its warnings then.
        _ = try options.makeDom0(command: "run", warning: false)
        let arguments = CommandLine.arguments
        guard let verb = arguments.firstIndex(of: "run") else { throw failure("run", "cannot find the subcommand in the arguments") }
        do {
            try RunSupervisor.enterNamespaces()
            let status = try RunSupervisor.superviseInit(["pcibackfsd", RunInit.verb] + arguments[(verb + 1)...],
                                                        executable: "/proc/self/exe")
            throw ExitCode(status)
        } catch let error as SetupError {
            FileHandle.standardError.write(Data("pcibackfsd run: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Options of `run` alone.
struct RunOptions: ParsableArguments {
    @Flag(name: .long, help: """
        Give each emulated interface a network link of its name and MAC (dummy, or ifb) in the namespace, \
        so /proc/net/dev and ip link list it. Off by default: ethtool (and so lshw) then reports \
        the link's driver instead of the emulated one.
        """)
    var netLinks = false
}

/// The init process of `run` (pid 1 of its pid namespace); not for direct use.
struct RunInit: ParsableCommand {
    static let verb = RunSupervisor.initVerb
    static let configuration = CommandConfiguration(commandName: verb, shouldDisplay: false)

    @OptionGroup var options: MachineOptions

    @OptionGroup var runOptions: RunOptions

    @Argument(parsing: .postTerminator)
    var command: [String] = []

    func run() throws {
        RunSupervisor.bindLifetimeToSupervisor()
        do {
            let namespace = try NamespaceInit()
            let tree = try options.makeTree(command: "run")
            namespace.bringUpLoopback()
            var treeChanged: (@Sendable () -> Void)?
            if runOptions.netLinks {
                let network = NetworkMirror(warnings: { namespace.warn($0) })
                @Sendable func interfaces() -> [NetworkMirror.Interface] {
                    tree.networkInterfaces().map { NetworkMirror.Interface(name: $0.name, address: $0.address) }
                }
                network.apply(interfaces())
                treeChanged = { network.request(interfaces()) }
            }
            let merged = MergedSysfs(tree: tree, host: namespace.host, treeChanged: treeChanged)
            var serverOptions = options.serverOptions
            // /sys is for every user of the namespace, as sysfs is.
            serverOptions.allowOther = true
            let status = try namespace.serve(merged, options: serverOptions, command: command, executable: "/proc/self/exe")
            for warning in namespace.setupWarnings { FileHandle.standardError.write(Data("pcibackfsd run: \(warning)\n".utf8)) }
            throw ExitCode(status)
        } catch let error as SetupError {
            FileHandle.standardError.write(Data("pcibackfsd run: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
