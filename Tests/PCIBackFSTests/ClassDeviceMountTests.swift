// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// Class devices and /sys/module on the real daemon: what tools see with plain syscalls and
// child processes, including that another process sees an interface go and come back as soon
// as the unbind or bind store returns (the kernel's dentry cache is invalidated).

private let nicDirectory = "devices/pci0000:00/0000:00:1c.1/0000:03:00.0"
private let nvmeDirectory = "devices/pci0000:00/0000:00:01.0/0000:01:00.0"

@Suite("pcibackfsd: class devices and modules", .serialized, .requiresDaemonMount, .timeLimit(.minutes(1)))
struct ClassDeviceMountTests {
    @Test("readlink class/net, cat the MAC, ls module; carrier is EINVAL while down")
    func netAndModules() throws {
        try withDaemon { mount throws in
            #expect(try mount.readlink("class/net/enp3s0f0") == "../../\(nicDirectory)/net/enp3s0f0")
            #expect(try mount.cat("class/net/enp3s0f0/address") == "02:00:00:00:03:00\n")
            #expect(try Sys.realpath(mount.path("class/net/enp3s0f0/device")) == mount.path(nicDirectory))
            let listing = Subprocess.shell("ls \"$1\"", [mount.path("module")])
            #expect(listing.stdout == "8139too\nigb\nnvme\nradeon\nxen_pciback\nxhci_pci\n", "\(listing)")
            let carrier = Subprocess.shell("cat \"$1\"", [mount.path("class/net/enp3s0f0/carrier")])
            #expect(!carrier.succeeded && carrier.stderr.contains("Invalid argument"), "\(carrier)")
            // The NVMe disk's numbers agree between its dev file and the dev/ links.
            let dev = try mount.cat("block/nvme0n1/dev").trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try Sys.realpath(mount.path("dev/block/\(dev)")) == mount.path("\(nvmeDirectory)/nvme/nvme0/nvme0n1"))
            #expect(try mount.readlink("bus/pci/drivers/xhci_hcd/module") == "../../../../module/xhci_pci")
            #expect(!mount.exists("bus/pci/drivers/pcieport/module"))
            #expect(!mount.exists("module/pciback"))
        }
    }

    @Test("another process sees the interface go on unbind and return on bind")
    func interfaceFollowsBinding() throws {
        try withDaemon { mount throws in
            let probe = "readlink \"$1\" || echo none; cat \"$2\" 2>/dev/null || echo gone"
            let paths = [mount.path("class/net/enp3s0f0"), mount.path("\(nicDirectory)/net/enp3s0f0/ifindex")]
            let present = "../../\(nicDirectory)/net/enp3s0f0\n3\n"
            // Warm the caches (this process and a child) first.
            #expect(try mount.readlink("class/net/enp3s0f0") == "../../\(nicDirectory)/net/enp3s0f0")
            #expect(Subprocess.shell(probe, paths).stdout == present)
            for round in 0..<3 {
                #expect(mount.echo("0000:03:00.0", "bus/pci/drivers/igb/unbind") == .written(12), "round \(round)")
                #expect(Subprocess.shell(probe, paths).stdout == "none\ngone\n", "round \(round)")
                #expect(Sys.lstatError(mount.path("class/net/enp3s0f0")) == ENOENT)
                #expect(mount.echo("0000:03:00.0", "bus/pci/drivers/igb/bind") == .written(12), "round \(round)")
                #expect(Subprocess.shell(probe, paths).stdout == present, "round \(round)")
            }
        }
    }

    @Test("--pciback-build builtin: module/xen_pciback has parameters, uevent and drivers only")
    func builtinPciback() throws {
        try withDaemon(["--pciback-build", "builtin"]) { mount throws in
            #expect(try mount.list("module/xen_pciback").sorted() == ["drivers", "parameters", "uevent"])
            #expect(try mount.readlink("bus/pci/drivers/pciback/module") == "../../../../module/xen_pciback")
            #expect(try mount.readlink("module/xen_pciback/drivers/pci:pciback") == "../../../bus/pci/drivers/pciback")
        }
    }

    @Test("dpdk-devbind refuses -b pciback as on a dom0: the module is xen_pciback",
          .requiresTool("dpdk-devbind.py"), .requiresTool("unshare"))
    func dpdkRefusesPciback() throws {
        try withDaemon { mount throws in
            let script = """
                mount --rbind "$1" /sys
                dpdk-devbind.py -b pciback 0000:03:00.0
                """
            let result = Subprocess.run("unshare", ["-m", "--propagation", "private", "sh", "-c", script, "sh", mount.root],
                                        timeout: 30)
            #expect(!result.succeeded, "\(result)")
            #expect((result.stdout + result.stderr).contains("Driver 'pciback' is not loaded"), "\(result)")
            #expect(mount.driver(of: "0000:03:00.0") == "igb")
        }
    }
}
#endif
