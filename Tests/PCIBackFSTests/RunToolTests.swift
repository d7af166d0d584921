#if canImport(Glibc)
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Glibc
@testable import PCIBackFS
import Testing

// Real programs, unmodified, at their default /sys paths, through `pcibackfsd run`, on the
// built-in machine. A missing program fails the test (scripts/setup.sh installs them all).
// What each must show comes from the emulated machine as the library builds it.

/// The built-in machine as a fresh daemon starts it.
struct BuiltinView {
    let dom0: Dom0
    let tree: SysfsTree

    init() throws {
        let make = { () throws -> Dom0 in
            try Dom0(machine: BuiltinMachine.make(), policy: FilterPolicy(profile: .current, globalPermissive: false),
                     hide: "", passthrough: false)
        }
        dom0 = try make()
        tree = SysfsTree(dom0: try make())
    }

    var functions: [PCIAddress] { dom0.machine.order }
    func driver(_ address: PCIAddress) -> String? { dom0.driverName(of: address) }
    func parentBridge(_ address: PCIAddress) -> PCIAddress? { dom0.machine.parentBridge(of: address) }
    /// The interfaces of network functions, by function: from `class/net/<name>`'s target,
    /// `../../devices/.../<BDF>/net/<name>`.
    var interfaces: [String: String] {
        var result: [String: String] = [:]
        for interface in tree.networkInterfaces() {
            guard let net = try? tree.lookup(parent: rootInode, name: "class"),
                  let netClass = try? tree.lookup(parent: net.inode, name: "net"),
                  let link = try? tree.lookup(parent: netClass.inode, name: interface.name),
                  let target = try? tree.readlink(link.inode) else { continue }
            let parts = target.split(separator: "/")
            if parts.count >= 3 { result[String(parts[parts.count - 3])] = interface.name }
        }
        return result
    }
}

enum ToolRun {
    /// Runs `script` in the namespace and requires success.
    static func succeed(_ script: String, timeout: Double = 120, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        let result = RunNamespace.shell(script, timeout: timeout)
        #expect(result.status == 0 && !result.timedOut, "\(result)", sourceLocation: sourceLocation)
        return result.stdout
    }
}

@Suite("Real tools through pcibackfsd run", .serialized, .requiresDaemonMount)
struct RunToolTests {
    let view: BuiltinView
    init() throws { view = try BuiltinView() }

    @Test("lspci -D lists exactly the emulated functions; -k shows each driver; setpci reads and writes")
    func pciutils() throws {
        let output = ToolRun.succeed("""
            lspci -D | cut -d' ' -f1; echo ==
            lspci -D -k 2>/dev/null; echo ==
            setpci -s 00:05.0 LATENCY_TIMER; setpci -s 00:05.0 LATENCY_TIMER=0x40; setpci -s 00:05.0 LATENCY_TIMER
            """)
        let parts = output.components(separatedBy: "==\n")
        try #require(parts.count == 3)
        #expect(parts[0].split(separator: "\n").map(String.init) == view.functions.map(\.description))
        // Each function's block: its header line, then indented lines.
        var drivers: [String: String] = [:]
        var current = ""
        for line in parts[1].split(separator: "\n").map(String.init) {
            if !line.hasPrefix("\t") { current = String(line.prefix { $0 != " " }) }
            if line.hasPrefix("\tKernel driver in use: ") { drivers[current] = String(line.dropFirst(23)) }
        }
        for address in view.functions {
            #expect(drivers[address.description] == view.driver(address), "\(address)")
        }
        let latency = parts[2].split(separator: "\n").map(String.init)
        #expect(latency.count == 2 && latency[1] == "40", "\(latency)")
    }

    @Test("dpdk-devbind.py: status with interface names, -b pciback refused, a seize, then -b igb, -u, -b igb")
    func dpdkDevbind() throws {
        let nics = view.functions.filter { view.driver($0) == "igb" }
        try #require(nics.count == 2)
        let port = nics[0].description
        let output = ToolRun.succeed("""
            drv() { if link=$(readlink /sys/bus/pci/devices/$1/driver); then basename "$link"; else echo none; fi; }
            dpdk-devbind.py --status-dev net 2>/dev/null; echo @@@@
            dpdk-devbind.py -b pciback \(port) 2>&1; echo "status $?"; drv \(port); echo @@@@
            echo -n \(port) > /sys/bus/pci/devices/\(port)/driver/unbind
            echo -n \(port) > /sys/bus/pci/drivers/pciback/new_slot
            echo -n \(port) > /sys/bus/pci/drivers/pciback/bind
            drv \(port)
            dpdk-devbind.py -b igb \(port) 2>/dev/null; echo "status $?"; drv \(port)
            dpdk-devbind.py -u \(port) 2>/dev/null; echo "status $?"; drv \(port)
            dpdk-devbind.py -b igb \(port) 2>/dev/null; echo "status $?"; drv \(port)
            """)
        let parts = output.components(separatedBy: "@@@@\n")
        try #require(parts.count == 3)
        for nic in nics {
            let line = parts[0].split(separator: "\n").first { $0.hasPrefix(nic.description + " ") }
            let name = try #require(view.interfaces[nic.description])
            #expect(line?.contains("if=\(name) ") == true && line?.contains("drv=igb ") == true, "\(parts[0])")
        }
        #expect(parts[1].contains("Error: Driver 'pciback' is not loaded."), "\(parts[1])")
        #expect(parts[1].hasSuffix("status 1\nigb\n"), "\(parts[1])")
        #expect(parts[2].split(separator: "\n").map(String.init)
                == ["pciback", "status 0", "igb", "status 0", "none", "status 0", "igb"], "\(parts[2])")
    }

    @Test("driverctl set-override and unset-override, with the pciback module alias a dom0 has")
    func driverctl() throws {
        let port = try #require(view.functions.first { view.driver($0) == "igb" }).description
        // As a dom0 admin's /etc/modprobe.d does: `alias pciback xen-pciback`; modules that are
        // loaded (have a /sys/module directory) succeed, others fail.
        let output = ToolRun.succeed("""
            cat > /tmp/pcibackfs-modprobe <<'EOF'
            #!/bin/sh
            for name; do case "$name" in -*) ;; *) module=$name;; esac; done
            case "$module" in pciback) module=xen_pciback;; esac
            [ -d "/sys/module/$(echo "$module" | tr - _)" ]
            EOF
            chmod +x /tmp/pcibackfs-modprobe && mount --bind /tmp/pcibackfs-modprobe /sbin/modprobe
            drv() { if link=$(readlink /sys/bus/pci/devices/$1/driver); then basename "$link"; else echo none; fi; }
            driverctl --nosave set-override \(port) pciback; echo "status $?"; drv \(port)
            cat /sys/bus/pci/devices/\(port)/driver_override
            driverctl --nosave unset-override \(port); echo "status $?"; drv \(port)
            cat /sys/bus/pci/devices/\(port)/driver_override
            """)
        #expect(output.split(separator: "\n").map(String.init)
                == ["status 0", "pciback", "pciback", "status 0", "igb", "(null)"], "\(output)")
    }

    @Test("lshw -json: every emulated function with vendor, product and driver, nested under its bridge, nothing else")
    func lshw() throws {
        let output = ToolRun.succeed("lshw -json 2>/dev/null")
        let json = try JSONSerialization.jsonObject(with: Data(output.utf8))
        var found: [String: (parent: String?, node: [String: Any])] = [:]
        func walk(_ value: Any, parent: String?) {
            if let list = value as? [Any] { list.forEach { walk($0, parent: parent) }; return }
            guard let node = value as? [String: Any] else { return }
            var here = parent
            if let businfo = node["businfo"] as? String, businfo.hasPrefix("pci@") {
                let address = String(businfo.dropFirst(4))
                found[address] = (parent, node)
                here = address
            }
            (node["children"] as? [Any]).map { walk($0, parent: here) }
        }
        walk(json, parent: nil)
        #expect(Set(found.keys) == Set(view.functions.map(\.description)), "lshw saw \(found.keys.sorted())")
        for address in view.functions {
            guard let entry = found[address.description] else { continue }
            #expect((entry.node["vendor"] as? String)?.isEmpty == false, "\(address) vendor")
            #expect((entry.node["product"] as? String)?.isEmpty == false, "\(address) product")
            let driver = (entry.node["configuration"] as? [String: Any])?["driver"] as? String
            #expect(driver == view.driver(address), "\(address) driver")
            if let bridge = view.parentBridge(address) {
                #expect(entry.parent == bridge.description, "\(address) should sit under \(bridge)")
            }
        }
    }

    #if canImport(FoundationXML)
    @Test("lstopo --whole-io: the host's cores, every emulated function and no other, bus ranges, link speeds, Net OS devices")
    func lstopo() throws {
        let output = ToolRun.succeed("lstopo-no-graphics --whole-io --of xml")
        let document = try XMLDocument(xmlString: output)
        let objects = try document.nodes(forXPath: "//object").compactMap { $0 as? XMLElement }
        func attribute(_ element: XMLElement, _ name: String) -> String? { element.attribute(forName: name)?.stringValue }
        #expect(objects.filter { attribute($0, "type") == "PU" }.count == sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #expect(objects.contains { attribute($0, "type") == "Core" })
        let pci = objects.filter { attribute($0, "pci_busid") != nil }
        let byAddress = Dictionary(pci.map { (attribute($0, "pci_busid")!, $0) }, uniquingKeysWith: { first, _ in first })
        #expect(Set(byAddress.keys) == Set(view.functions.map(\.description)))
        for address in view.functions {
            guard let element = byAddress[address.description], let device = view.dom0.device(address) else { continue }
            if device.isBridge {
                let secondary = device.config.read(0x19, width: 1), subordinate = device.config.read(0x1a, width: 1)
                let range = String(format: "%04x:[%02x-%02x]", address.domain, secondary, subordinate)
                #expect(attribute(element, "bridge_pci") == range, "\(address)")
            }
            let speed = Double(attribute(element, "pci_link_speed") ?? "") ?? -1
            #expect(device.isPCIExpress ? speed > 0 : speed == 0, "\(address) link speed \(speed)")
            if let name = view.interfaces[address.description] {
                let children = (element.children ?? []).compactMap { $0 as? XMLElement }
                #expect(children.contains { attribute($0, "type") == "OSDev" && attribute($0, "name") == name },
                        "no Net OS device \(name) under \(address)")
            }
        }
    }
    #endif

    @Test("hwinfo --pci: every function with its driver, attached to its bridge")
    func hwinfo() throws {
        let output = ToolRun.succeed("hwinfo --pci 2>/dev/null")
        struct Entry { var number = "", sysfs = "", driver: String?, attachedTo: String? }
        var entries: [Entry] = []
        for line in output.split(separator: "\n").map(String.init) {
            if let colon = line.firstIndex(of: ":"), !line.hasPrefix(" "), Int(line[..<colon]) != nil {
                entries.append(Entry(number: String(line[..<colon])))
            } else if line.hasPrefix("  SysFS ID: ") {
                entries[entries.count - 1].sysfs = String(line.dropFirst(12))
            } else if line.hasPrefix("  Driver: \"") {
                entries[entries.count - 1].driver = String(line.dropFirst(11).dropLast())
            } else if line.hasPrefix("  Attached to: #") {
                entries[entries.count - 1].attachedTo = String(line.dropFirst(16).prefix { $0 != " " })
            }
        }
        let byAddress = Dictionary(entries.map { (String($0.sysfs.split(separator: "/").last ?? ""), $0) },
                                   uniquingKeysWith: { first, _ in first })
        #expect(Set(byAddress.keys) == Set(view.functions.map(\.description)))
        for address in view.functions {
            guard let entry = byAddress[address.description] else { continue }
            #expect(entry.sysfs == "/" + view.dom0.machine.sysfsPath(of: address))
            #expect(entry.driver == view.driver(address), "\(address)")
            if let bridge = view.parentBridge(address) {
                #expect(entry.attachedTo.flatMap { Int($0) } == byAddress[bridge.description].flatMap { Int($0.number) },
                        "\(address) attached to \(bridge)")
            }
        }
    }
}
#endif
