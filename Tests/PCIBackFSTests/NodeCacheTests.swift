import Testing

@testable import PCIBackFS

// The tree remembers what each inode resolved to (InodeTable's node cache), so open, getattr
// and readlink of a known inode skip the path walk. These tests pin down that the cache never
// answers with a stale node: an inode resolved before a change (by the FileSystemModel calls
// FUSE makes, with the kernel holding on to the inode) must resolve to the new truth after it.

@Suite("Node cache: a resolved inode follows every change of what its path means")
struct NodeCacheTests {
    /// One change and what it must do to paths resolved before it.
    struct Row: CustomTestStringConvertible, Sendable {
        let name: String
        /// Paths resolved (and so cached) before the change.
        let before: [String: Outcome]
        /// The change, through the tree's files (as a toolstack makes it) or its direct access.
        let change: @Sendable (SRIOVClient) -> Void
        /// The same inodes afterwards (getattr, readlink on the inode resolved before).
        let after: [String: Outcome]
        /// Paths that did not exist before and must be found afterwards (no negative caching).
        var appearing: [String] = []
        var testDescription: String { name }
    }

    enum Outcome: Equatable, Sendable {
        case missing
        case file
        case directory
        case link(String)
    }

    static let nic = "0000:03:00.0"
    static let nicDirectory = "devices/pci0000:00/0000:00:1c.1/0000:03:00.0"

    static let rows: [Row] = [
        Row(name: "unbind drops the driver link",
            before: ["\(nicDirectory)/driver": .link("../../../../bus/pci/drivers/igb")],
            change: { client in _ = client.write(nic, "bus/pci/drivers/igb/unbind") },
            after: ["\(nicDirectory)/driver": .missing]),
        Row(name: "bind to pciback retargets the driver link and adds the driver's device link",
            before: ["\(nicDirectory)/driver": .link("../../../../bus/pci/drivers/igb")],
            change: { client in
                _ = client.write(nic, "bus/pci/drivers/igb/unbind")
                _ = client.write(nic, "bus/pci/drivers/pciback/new_slot")
                _ = client.write(nic, "bus/pci/drivers/pciback/bind")
            },
            after: ["\(nicDirectory)/driver": .link("../../../../bus/pci/drivers/pciback")],
            appearing: ["bus/pci/drivers/pciback/\(nic)"]),
        // getattr of an inode that vanished answers what it was: the kernel only asks through a
        // descriptor still open on it (fstat of a removed kernfs node works); its paths fail
        // (openAfterRemoval, SysfsAnswersTests) and so does readlink.
        Row(name: "remove takes the function's directory and files away",
            before: ["\(nicDirectory)/config": .file, nicDirectory: .directory,
                     "bus/pci/devices/\(nic)": .link("../../../\(nicDirectory)")],
            change: { client in _ = client.write("1", "\(nicDirectory)/remove") },
            after: ["\(nicDirectory)/config": .file, nicDirectory: .directory, "bus/pci/devices/\(nic)": .missing]),
        Row(name: "rescan brings a removed function back under the same inodes",
            before: ["\(nicDirectory)/vendor": .file],
            change: { client in
                _ = client.write("1", "\(nicDirectory)/remove")
                _ = client.write("1", "bus/pci/rescan")
            },
            after: ["\(nicDirectory)/vendor": .file, "\(nicDirectory)/driver": .link("../../../../bus/pci/drivers/igb")]),
        Row(name: "sriov_numvfs creates virtfn links and VF directories; 0 removes them",
            before: ["\(nicDirectory)/sriov_numvfs": .file],
            change: { client in
                _ = client.write("2", "\(nicDirectory)/sriov_numvfs")
            },
            after: ["\(nicDirectory)/sriov_numvfs": .file, "\(nicDirectory)/virtfn1": .link("../0000:03:10.2")],
            appearing: ["\(nicDirectory)/virtfn0", "devices/pci0000:00/0000:00:1c.1/0000:03:10.0/physfn"]),
        Row(name: "a direct change of the state (tests, tools) is seen too",
            before: ["\(nicDirectory)/driver": .link("../../../../bus/pci/drivers/igb")],
            change: { client in
                client.tree.withDom0 { dom0 in
                    try? dom0.unbind(driver: "igb", input: Array(nic.utf8))
                }
            },
            after: ["\(nicDirectory)/driver": .missing]),
    ]

    static func outcome(_ client: SRIOVClient, inode: Inode) -> Outcome {
        do throws(Errno) {
            let stat = try client.tree.getattr(inode)
            switch stat.kind {
            case .directory: return .directory
            case .regularFile: return .file
            case .symlink: return .link(try client.tree.readlink(inode))
            }
        } catch {
            return .missing
        }
    }

    @Test("inodes resolved before a change answer with the new truth", arguments: rows)
    func resolvedInodesFollowChanges(_ row: Row) throws {
        let client = SRIOVClient(try Dom0(machine: BuiltinMachine.make()))
        var inodes: [String: Inode] = [:]
        for (path, expected) in row.before {
            let inode = try client.resolve(path, followLast: false).inode
            inodes[path] = inode
            // Twice: the second answer comes from the cache.
            #expect(Self.outcome(client, inode: inode) == expected, "\(path) before")
            #expect(Self.outcome(client, inode: inode) == expected, "\(path) before, cached")
        }
        for path in row.appearing {
            #expect(!client.exists(path), "\(path) must not exist before")
        }
        row.change(client)
        for (path, expected) in row.after {
            let inode = try inodes[path] ?? client.resolve(path, followLast: false).inode
            #expect(Self.outcome(client, inode: inode) == expected, "\(path) after")
        }
        for path in row.appearing {
            #expect(client.exists(path), "\(path) must exist after")
        }
    }

    @Test("open of a cached inode of a removed function fails instead of reaching a stale node")
    func openAfterRemoval() throws {
        let client = SRIOVClient(try Dom0(machine: BuiltinMachine.make()))
        let inode = try client.resolve("\(Self.nicDirectory)/vendor").inode
        #expect(try client.cat("\(Self.nicDirectory)/vendor") == "0x8086\n")
        _ = client.write("1", "\(Self.nicDirectory)/remove")
        #expect(throws: Errno.noSuchFileOrDirectory) { try client.tree.open(inode, flags: 0, caller: .root) }
    }
}
