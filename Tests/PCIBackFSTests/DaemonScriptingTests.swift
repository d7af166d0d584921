#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// Scripting the daemon without systemd: signals whatever disposition it inherited, --pidfile
// and --ready-fd. Each test starts the real daemon from `sh` (as a script would) and always
// unmounts lazily and kills it in its teardown.

@Suite("The daemon in scripts: signals, --pidfile, --ready-fd", .serialized, .requiresDaemonMount)
struct DaemonScriptingTests {
    /// A daemon started by `sh -c "PREFIX exec pcibackfsd MOUNTPOINT OPTIONS"`.
    final class ScriptedDaemon {
        let directory: String
        let mountPoint: String
        let shell: pid_t

        init(prefix: String, options: String = "") throws {
            directory = Temporary.directory(prefix: "pcibackfs-script")
            mountPoint = directory + "/mnt"
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            let script = "\(prefix) exec \(MountEnvironment.daemonPath) \(mountPoint) \(options)"
            shell = try Subprocess.spawn("sh", ["-c", script], stdoutPath: directory + "/out", stderrPath: directory + "/err")
        }

        var isMounted: Bool {
            let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").contains { $0.split(separator: " ")[4] == mountPoint }
        }

        func waitServing() -> Bool {
            RunNamespace.waitUntil(20) { access(mountPoint + "/bus/pci/drivers/pciback", F_OK) == 0 }
        }

        func exitStatus(within seconds: Double) -> Int32? {
            Subprocess.wait(shell, until: Date().addingTimeInterval(seconds))
        }

        deinit {
            _ = Subprocess.run("umount", ["-l", mountPoint], timeout: 10)
            kill(-shell, SIGKILL)
            _ = Subprocess.wait(shell, until: Date().addingTimeInterval(5))
            Temporary.remove(directory)
        }
    }

    @Test("SIGINT, SIGTERM and SIGHUP stop the daemon and unmount, whatever it inherited", arguments: [
        ("", SIGINT), ("trap '' INT;", SIGINT), ("", SIGTERM), ("trap '' TERM;", SIGTERM), ("", SIGHUP),
    ] as [(String, Int32)])
    func stopSignals(prefix: String, signal: Int32) throws {
        let daemon = try ScriptedDaemon(prefix: prefix)
        try #require(daemon.waitServing())
        kill(daemon.shell, signal)
        #expect(daemon.exitStatus(within: 10) == 0)
        #expect(!daemon.isMounted)
    }

    @Test("SIGHUP inherited as ignored (nohup) does not stop it") func nohup() throws {
        let daemon = try ScriptedDaemon(prefix: "trap '' HUP;")
        try #require(daemon.waitServing())
        kill(daemon.shell, SIGHUP)
        #expect(daemon.exitStatus(within: 1) == nil)
        #expect(access(daemon.mountPoint + "/bus/pci/devices", F_OK) == 0)
        kill(daemon.shell, SIGTERM)
        #expect(daemon.exitStatus(within: 10) == 0)
    }

    @Test("--pidfile holds the daemon's pid while it serves and is removed on exit") func pidfile() throws {
        let pidfile = Temporary.directory(prefix: "pcibackfs-pid") + "/daemon.pid"
        let daemon = try ScriptedDaemon(prefix: "", options: "--pidfile \(pidfile)")
        try #require(daemon.waitServing())
        let text = try String(contentsOfFile: pidfile, encoding: .utf8)
        #expect(text == "\(daemon.shell)\n")
        kill(daemon.shell, SIGTERM)
        #expect(daemon.exitStatus(within: 10) == 0)
        #expect(access(pidfile, F_OK) != 0)
    }

    @Test("--ready-fd N gets a line once the mount serves, then is closed") func readyDescriptor() throws {
        let directory = Temporary.directory(prefix: "pcibackfs-ready")
        defer { Temporary.remove(directory) }
        let mountPoint = directory + "/mnt"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        // The script blocks on the pipe until the daemon writes, checks that the tree is there
        // at that moment, and sees end-of-file after the line (the daemon closed its end).
        let script = """
            \(MountEnvironment.daemonPath) \(mountPoint) --ready-fd 3 3>&1 >/dev/null 2>&1 | {
                read line; echo "line=$line"; ls \(mountPoint)/bus/pci/drivers/pciback/new_slot; cat; echo eof; }
            """
        let reader = try Subprocess.spawn("sh", ["-c", script], stdoutPath: directory + "/out", stderrPath: directory + "/err")
        defer {
            _ = Subprocess.run("umount", ["-l", mountPoint], timeout: 10)
            kill(-reader, SIGKILL)
            _ = Subprocess.wait(reader, until: Date().addingTimeInterval(5))
        }
        #expect(RunNamespace.waitUntil(20) {
            ((try? String(contentsOfFile: directory + "/out", encoding: .utf8)) ?? "").contains("eof")
        })
        let output = try String(contentsOfFile: directory + "/out", encoding: .utf8)
        #expect(output == "line=ready\n\(mountPoint)/bus/pci/drivers/pciback/new_slot\neof\n")
    }

    @Test("--ready-fd must name an open descriptor") func badReadyDescriptor() {
        let result = Subprocess.run(MountEnvironment.daemonPath, ["/nonexistent", "--ready-fd", "57"], timeout: 10)
        #expect(result.status == 64)
        #expect(result.stderr.contains("--ready-fd 57: not an open file descriptor"))
    }
}

@Suite("Mount point and privilege mistakes", .serialized, .requiresDaemonMount)
struct MountPointMistakeTests {
    enum Mistake: String, CaseIterable, CustomTestStringConvertible {
        case nonEmptyDirectory, mountPointIsAFile, missingMountPoint, alreadyServed, plainUser
        var testDescription: String { rawValue }
    }

    @Test("refused with a one-line reason and exit status 1, nothing mounted", arguments: Mistake.allCases)
    func refused(mistake: Mistake) throws {
        let directory = Temporary.directory(prefix: "pcibackfs-mistake")
        defer {
            _ = Subprocess.run("umount", ["-l", directory + "/mnt"], timeout: 10)
            Temporary.remove(directory)
        }
        var mountPoint = directory + "/mnt"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        var command = [MountEnvironment.daemonPath, mountPoint]
        var first: pid_t?
        let expected: String
        switch mistake {
        case .nonEmptyDirectory:
            FileManager.default.createFile(atPath: mountPoint + "/keep", contents: Data("x".utf8))
            expected = "\(mountPoint) is not empty (it holds keep); mounting would hide its files. Use an empty directory, or --nonempty to mount over it anyway"
        case .mountPointIsAFile:
            mountPoint = directory + "/file"
            FileManager.default.createFile(atPath: mountPoint, contents: nil)
            command[1] = mountPoint
            expected = "cannot use \(mountPoint) as a mount point: Not a directory"
        case .missingMountPoint:
            mountPoint = directory + "/missing"
            command[1] = mountPoint
            expected = "cannot use \(mountPoint) as a mount point: No such file or directory"
        case .alreadyServed:
            first = try Subprocess.spawn(MountEnvironment.daemonPath, [mountPoint], stdoutPath: "/dev/null", stderrPath: "/dev/null")
            try #require(RunNamespace.waitUntil(20) { access(mountPoint + "/bus/pci/drivers/pciback", F_OK) == 0 })
            expected = "\(mountPoint) is already served by another pcibackfsd (fuse.pcibackfs); stop it first (fusermount3 -u \(mountPoint))"
        case .plainUser:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + command
            expected = "mounting needs root (uid 65534 cannot create sysfs-like files root can use)."
        }
        defer {
            if let first {
                kill(first, SIGTERM)
                _ = Subprocess.wait(first, until: Date().addingTimeInterval(10))
            }
        }
        let result = Subprocess.run(command[0], Array(command.dropFirst()), timeout: 20)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.hasPrefix("pcibackfsd: " + expected), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1)
        if mistake == .nonEmptyDirectory { #expect(access(mountPoint + "/keep", F_OK) == 0) }
        if mistake == .alreadyServed {
            // Exactly one pcibackfs on it, and it still answers.
            let mounts = (try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)).split(separator: "\n")
            #expect(mounts.filter { $0.split(separator: " ")[4] == mountPoint }.count == 1)
        }
    }

    @Test("--nonempty mounts over a non-empty directory, whose files come back afterwards") func nonEmptyAllowed() throws {
        let directory = Temporary.directory(prefix: "pcibackfs-nonempty")
        defer { Temporary.remove(directory) }
        FileManager.default.createFile(atPath: directory + "/keep", contents: nil)
        let daemon = try Subprocess.spawn(MountEnvironment.daemonPath, [directory, "--nonempty"],
                                          stdoutPath: "/dev/null", stderrPath: "/dev/null")
        defer { _ = Subprocess.run("umount", ["-l", directory], timeout: 10); kill(daemon, SIGKILL) }
        #expect(RunNamespace.waitUntil(20) { access(directory + "/bus/pci/drivers/pciback", F_OK) == 0 })
        #expect(access(directory + "/keep", F_OK) != 0)
        kill(daemon, SIGTERM)
        #expect(Subprocess.wait(daemon, until: Date().addingTimeInterval(10)) == 0)
        #expect(access(directory + "/keep", F_OK) == 0)
    }
}

@Suite("scripts/setup.sh without the Swift toolchain")
struct SetupToolchainTests {
    /// setup.sh runs first in both README commands: where no Swift 6 is installed it must say
    /// what is missing and where to get it, before installing anything.
    @Test("a missing or old swift is named, with where to get it, and exit 1", arguments: [
        ("", "setup: the Swift 6 toolchain is missing (no 'swift' in PATH). Install it from https://www.swift.org/install/linux/"),
        ("#!/bin/sh\necho 'Swift version 5.10.1 (swift-5.10.1-RELEASE)'\n",
         "setup: pcibackfs needs Swift 6 or newer; 'swift --version' says: Swift version 5.10.1 (swift-5.10.1-RELEASE)"),
    ] as [(String, String)])
    func toolchain(fakeSwift: String, message: String) throws {
        let directory = Temporary.directory(prefix: "pcibackfs-setup")
        defer { Temporary.remove(directory) }
        if !fakeSwift.isEmpty {
            FileManager.default.createFile(atPath: directory + "/swift", contents: Data(fakeSwift.utf8),
                                           attributes: [.posixPermissions: 0o755])
        }
        // PATH with the basic tools and no Swift toolchain (it lives in /opt/swift here).
        let result = Subprocess.run("env", ["PATH=\(directory):/usr/bin:/bin", "bash",
                                            MountEnvironment.packageRoot + "/scripts/setup.sh"], timeout: 30)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.hasPrefix(message), "\(result.stderr)")
    }
}
#endif

