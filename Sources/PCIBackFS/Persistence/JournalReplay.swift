import Foundation

// Start-up: the snapshot is restored into the tree, then the journals' records are replayed
// through the same SysfsTree methods FUSE requests use (persistence calls the tree, downwards).

// MARK: - Restore

extension StateJournal {
    /// What `restore` did.
    public struct RestoreReport: Sendable, CustomStringConvertible {
        /// The snapshot's records (0 without one).
        public var snapshotRecords: UInt64
        public var records: Int
        public var droppedBytes: Int
        public var dropReason: String?
        /// Replayed stores whose errno differed from the recorded one (the emulation changed).
        public var divergences: [String]
        public var seconds: Double
        /// Reading and decoding the files (before `restore`).
        public var readSeconds: Double = 0
        public var error: String?

        public var description: String {
            var text = "read the state in \(String(format: "%.3f", readSeconds)) s, "
            if snapshotRecords > 0 { text += "restored a snapshot of \(snapshotRecords) records, " }
            text += "replayed \(records) records in \(String(format: "%.3f", seconds)) s"
            if droppedBytes > 0 { text += "; dropped a torn tail of \(droppedBytes) bytes (\(dropReason ?? "?"))" }
            if !divergences.isEmpty {
                text += "; \(divergences.count) replayed stores ended differently, first: \(divergences[0])"
            }
            if let error { text += "; \(error)" }
            return text
        }
    }

    /// Restores the snapshot and replays the journals into `tree` (built from the same options,
    /// with this journal), then starts recording. Call once, before serving. Throws when the
    /// snapshot does not fit the machine.
    @discardableResult
    public func restore(into tree: SysfsTree) throws(OpenError) -> RestoreReport {
        let started = DispatchTime.now().uptimeNanoseconds
        let pending = self.pending.withLock { pending in
            defer { pending = nil }
            return pending
        }
        self.tree.withLock { $0.tree = tree }
        var report = RestoreReport(snapshotRecords: pending?.snapshot?.sequence ?? 0, records: 0,
                                   droppedBytes: pending?.droppedBytes ?? 0, dropReason: pending?.dropReason, divergences: [],
                                   seconds: 0, readSeconds: pending?.readSeconds ?? 0)
        if let snapshot = pending?.snapshot {
            do {
                try tree.state.withLock { state throws(StateSnapshot.RestoreError) in try snapshot.restore(into: &state) }
            } catch {
                throw OpenError(description: "\(snapshotPath): \(error)")
            }
        }
        if let records = pending?.records {
            report.divergences = tree.replay(records)
            report.records = records.count
        }
        if pending?.settle == true {
            // A compaction was interrupted: finish the job now, before serving.
            do { try settle() } catch { throw OpenError(description: "settling the state files failed: \(error)") }
            report.error = "settled the state files (a compaction had been interrupted)"
        }
        appender.withLock { $0.recording = true }
        report.seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        return report
    }
}

// MARK: - Replay

extension SysfsTree {
    /// Applies journal records through the methods FUSE requests use. Returns a description of
    /// every replayed store whose outcome differs from the recorded one.
    func replay(_ records: [JournalRecord]) -> [String] {
        var divergences: [String] = []
        for record in records {
            switch record {
            case .store(let path, let input, let uid, let gid, let result):
                guard let kind = AttributeKind(journalPath: path) else {
                    divergences.append("\(path): not an attribute")
                    continue
                }
                let attribute = Attribute(kind: kind, mode: 0o200)
                let handle = Handle(node: .attribute(attribute), caller: Caller(uid: uid, gid: gid, pid: 0), canRead: false,
                                    canWrite: true)
                var outcome: Int32 = 0
                do { _ = try store(attribute, input: input, handle: handle) } catch { outcome = error.rawValue }
                if outcome != result {
                    divergences.append("\(path) <- \(String(decoding: input.prefix(64), as: UTF8.self).debugDescription): "
                                       + "errno \(outcome), recorded \(result)")
                }
            case .configWrite(let address, let frontend, let offset, let bytes):
                _ = try? bytes.withUnsafeBytes { buffer in
                    try writeConfig(address, frontend: frontend, offset: offset, data: buffer)
                }
            case .configRead(let address, let frontend, let offset, let size, let uid, let gid):
                let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(0, min(size, 4096)), alignment: 1)
                defer { scratch.deallocate() }
                _ = try? readConfig(address, frontend: frontend, caller: Caller(uid: uid, gid: gid, pid: 0), offset: offset,
                                    into: scratch)
            }
        }
        // The verdicts regenerated here were logged by the daemon that made them.
        state.withLock { $0.traceLogged = $0.dom0.trace.nextSequence - 1 }
        return divergences
    }
}
