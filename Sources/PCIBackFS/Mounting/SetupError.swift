/// Why the daemon could not set up where or how it was asked to (a mount point, the namespaces
/// of `run`), in words a user can act on; printed as it is, after the program's name.
public struct SetupError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
