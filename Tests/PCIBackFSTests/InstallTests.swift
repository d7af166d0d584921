#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// scripts/install.sh into a temporary DESTDIR: a binary that runs without the Swift runtime
// libraries, the systemd unit pointing at PREFIX, and man pages that `man -l` renders. It
// builds in its own scratch path (.build-install), a release build: minutes on first run.

@Suite("scripts/install.sh", .serialized, .enabled(if: geteuid() == 0, "skipped: install.sh runs setup.sh, which needs root"))
struct InstallTests {
    @Test("installs a self-contained binary, its unit and its man pages under DESTDIR/PREFIX")
    func install() throws {
        let destination = Temporary.directory(prefix: "pcibackfs-install")
        defer { Temporary.remove(destination) }
        let script = MountEnvironment.packageRoot + "/scripts/install.sh"
        let result = Subprocess.shell("DESTDIR=\(destination) PREFIX=/opt/pcibackfs \(script)", timeout: 1800)
        try #require(result.status == 0, "\(result)")
        let root = destination + "/opt/pcibackfs"

        let binary = root + "/bin/pcibackfsd"
        let version = Subprocess.run(binary, ["--version"], timeout: 30)
        #expect(version.status == 0 && !version.stdout.isEmpty, "\(version)")
        let libraries = Subprocess.run("ldd", [binary], timeout: 30).stdout
        #expect(!libraries.contains("libswift"), "linked against the Swift runtime: \(libraries)")
        #expect(!libraries.contains("libFoundation"), "linked against Foundation's shared library: \(libraries)")
        #expect(libraries.contains("libfuse3"))

        let unit = try String(contentsOfFile: root + "/lib/systemd/system/pcibackfsd.service", encoding: .utf8)
        #expect(unit.contains("\nExecStart=/opt/pcibackfs/bin/pcibackfsd /run/pcibackfs"))

        let pages = try FileManager.default.contentsOfDirectory(atPath: root + "/share/man/man1").sorted()
        for page in ["pcibackfsd.1", "pcibackfsd.serve.1", "pcibackfsd.run.1", "pcibackfsd.capture.1"] {
            #expect(pages.contains(page), "\(pages)")
        }
        #expect(!pages.contains { $0.hasPrefix("pcibackfsd.__") || $0 == "pcibackfsd.help.1" }, "internals installed: \(pages)")
        let rendered = Subprocess.run("man", ["-l", root + "/share/man/man1/pcibackfsd.run.1"], timeout: 60)
        #expect(rendered.status == 0, "\(rendered)")
        #expect(rendered.stdout.contains("pcibackfsd run"))
        #expect(rendered.stdout.contains("--profile"))
    }
}
#endif
