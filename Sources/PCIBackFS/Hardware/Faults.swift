/// Faults a test bench can inject into one emulated function.
public struct DeviceFaults: Sendable, Equatable, Codable {
    public enum Mode: String, Sendable, Equatable, Codable {
        case off
        /// Fires once, then clears itself.
        case once
        /// Fires every time until cleared.
        case sticky
    }

    public var resetFails: Mode = .off
    public var enableFails: Mode = .off
    public var lowPowerStatesRefused: Mode = .off
    public var msiEnableFails: Mode = .off
    public var msixEnableFails: Mode = .off
    public var configReadFails: Mode = .off

    public init() {}

    /// Whether the fault fires now; a one-shot fault is consumed.
    public mutating func fire(_ path: WritableKeyPath<DeviceFaults, Mode>) -> Bool {
        switch self[keyPath: path] {
        case .off: return false
        case .sticky: return true
        case .once:
            self[keyPath: path] = .off
            return true
        }
    }
}
