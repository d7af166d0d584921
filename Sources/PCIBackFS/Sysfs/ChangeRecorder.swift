/// Whoever keeps the tree's changes: with `--state`, the journal in Persistence/.
/// The tree reports every acknowledged mutating access through this protocol and knows nothing
/// else about where it goes; persistence calls the tree (restore, replay, snapshots), never the
/// other way round.
///
/// `record`, `recordsRead` and `recordingStore` are called with the tree's lock held, so changes
/// are recorded in the order they took effect and before the FUSE reply; `commit` is called
/// after the lock is dropped, still before the reply.
protocol ChangeRecorder: AnyObject, Sendable {
    /// Records one change. Throws (EIO) to refuse the access when it cannot be recorded.
    func record(_ change: TreeChange) throws(Errno)

    /// Whether a config read of `device` (through `frontend`'s view, or dom0's when nil)
    /// changes state, so must be recorded.
    func recordsRead(of device: EmulatedDevice, frontend: UInt32?) -> Bool

    /// Runs an attribute store (`body`) and records it with its outcome.
    func recordingStore(_ kind: AttributeKind, input: [UInt8], caller: Caller, _ body: () throws(Errno) -> Void) throws(Errno)

    /// After the tree's lock is dropped, before the reply: what was recorded so far becomes as
    /// durable as the recorder promises (`--fsync`).
    func commit()
}

/// One acknowledged mutating access, as the tree reports it to its `ChangeRecorder` (the
/// journal's records; Persistence/ encodes them).
public enum TreeChange: Equatable, Sendable {
    /// An attribute store: the attribute's path in the tree, the bytes the store got (after the
    /// page clip), the caller, and the errno it returned (0: success). Failed stores are kept
    /// too: some change state before failing (a bind whose reset fails leaves the slot in the
    /// seize list and consumes a one-shot fault; refusals log kernel messages).
    case store(path: String, input: [UInt8], uid: UInt32, gid: UInt32, result: Int32)
    /// A write to a `config` file: dom0's view (frontend nil) or a frontend's.
    case configWrite(address: PCIAddress, frontend: UInt32?, offset: Int, bytes: [UInt8])
    /// A read of a `config` file that changed state (frontend reads append trace verdicts; a
    /// dom0 read may consume a one-shot config-read fault).
    case configRead(address: PCIAddress, frontend: UInt32?, offset: Int, size: Int, uid: UInt32, gid: UInt32)
}
