import Foundation

/// Keeps the network namespace of `pcibackfsd run` in step with the emulated interfaces: one
/// inert link (the kernel's dummy driver, or ifb where dummy is not built) per emulated
/// interface, of the same name and MAC address, so `/proc/net/dev`, `ip link` and ethtool agree
/// with `/sys/class/net`. A driver's probe adds its interface and its remove deletes it.
///
/// Changes are applied on a thread of the mirror's own, never inside a FUSE request (they run
/// `ip`), so a link follows its sysfs directory within moments rather than before the store
/// returns.
public final class NetworkMirror: Sendable {
    public struct Interface: Sendable, Hashable {
        public var name: String
        public var address: String
        public init(name: String, address: String) {
            self.name = name
            self.address = address
        }
    }

    private struct State {
        var present: Set<Interface> = []
        var wanted: Set<Interface> = []
        var syncing = false
    }

    private let state = Locked(State())
    private let warnings: @Sendable (String) -> Void

    public init(warnings: @escaping @Sendable (String) -> Void) {
        self.warnings = warnings
    }

    /// Applies `interfaces` now, on the calling thread (start-up, before COMMAND runs).
    public func apply(_ interfaces: [Interface]) {
        state.withLock { $0.wanted = Set(interfaces) }
        synchronize()
    }

    /// Asks for `interfaces` to become the namespace's set; returns at once.
    public func request(_ interfaces: [Interface]) {
        let start = state.withLock { state -> Bool in
            state.wanted = Set(interfaces)
            guard !state.syncing, state.wanted != state.present else { return false }
            state.syncing = true
            return true
        }
        guard start else { return }
        Thread.detachNewThread { [self] in synchronize() }
    }

    /// Adds and deletes links until what is present is what is wanted.
    private func synchronize() {
        while true {
            let (remove, add) = state.withLock { state -> (Set<Interface>, Set<Interface>) in
                (state.present.subtracting(state.wanted), state.wanted.subtracting(state.present))
            }
            if remove.isEmpty && add.isEmpty {
                let done = state.withLock { state -> Bool in
                    guard state.wanted == state.present else { return false }
                    state.syncing = false
                    return true
                }
                if done { return }
                continue
            }
            for interface in remove {
                _ = try? ChildProcess.runToCompletion(["ip", "link", "delete", interface.name])
                state.withLock { _ = $0.present.remove(interface) }
            }
            for interface in add.sorted(by: { $0.name < $1.name }) {
                let added = ["dummy", "ifb"].contains { kind in
                    (try? ChildProcess.runToCompletion(["ip", "link", "add", interface.name, "address", interface.address,
                                                        "type", kind])) == 0
                }
                if !added { warnings("no network link for \(interface.name) (neither dummy nor ifb links could be created)") }
                // Counted as present either way: retrying a link the kernel refuses would spin.
                state.withLock { _ = $0.present.insert(interface) }
            }
        }
    }
}
