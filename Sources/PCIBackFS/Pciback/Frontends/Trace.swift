/// One verdict of pciback on a frontend's access: who, what, the result, and for a write that
/// was dropped or refused, the rule that decided it.
public struct TraceRecord: Sendable, Equatable {
    public enum Operation: Sendable, Equatable {
        case configRead
        case configWrite
        case pciOp(Int32)
    }

    public var sequence: UInt64
    public var domain: UInt32
    public var device: PCIAddress
    public var operation: Operation
    public var offset: Int32
    public var size: Int32
    public var value: UInt32
    public var error: Int32
    public var rule: String?

    var operationName: String {
        switch operation {
        case .configRead: return "conf_read"
        case .configWrite: return "conf_write"
        case .pciOp(let command):
            switch command {
            case 2: return "enable_msi"
            case 3: return "disable_msi"
            case 4: return "enable_msix"
            case 5: return "disable_msix"
            default: return "op\(command)"
            }
        }
    }

    /// `seq=.. dom=.. dev=.. op=.. [off=.. size=..] value=.. err=.. [rule="..."]`
    public var line: String {
        var text = "seq=\(sequence) dom=\(domain) dev=\(device) op=\(operationName)"
        if operation == .configRead || operation == .configWrite {
            text += " off=0x" + String(offset, radix: 16) + " size=\(size)"
        }
        text += " value=0x" + hex(value, width: 8) + " err=\(error)"
        if let rule { text += " rule=\"\(rule)\"" }
        return text
    }

    /// One JSON object (for the optional trace log file).
    public var json: String {
        var text = "{\"seq\":\(sequence),\"domain\":\(domain),\"device\":\"\(device)\",\"op\":\"\(operationName)\""
        if operation == .configRead || operation == .configWrite { text += ",\"offset\":\(offset),\"size\":\(size)" }
        text += ",\"value\":\(value),\"err\":\(error)"
        if let rule {
            let escaped = rule.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            text += ",\"rule\":\"\(escaped)\""
        }
        return text + "}"
    }
}

/// A bounded ring of the newest verdicts.
public struct TraceRing: Sendable {
    public let capacity: Int
    var storage: [TraceRecord] = []
    var start = 0
    public internal(set) var nextSequence: UInt64 = 1

    public init(capacity: Int = 4096) { self.capacity = capacity }

    mutating func append(_ record: TraceRecord) {
        var record = record
        record.sequence = nextSequence
        nextSequence += 1
        if storage.count < capacity {
            storage.append(record)
        } else {
            storage[start] = record
            start += 1
            if start == capacity { start = 0 }
        }
    }

    /// Records oldest first; with `after`, only those with a larger sequence number.
    public func records(after sequence: UInt64 = 0) -> [TraceRecord] {
        let ordered = Array(storage[start...] + storage[..<start])
        return sequence == 0 ? ordered : ordered.filter { $0.sequence > sequence }
    }
}

extension Dom0 {
    mutating func record(_ operation: TraceRecord.Operation, device: PCIAddress, offset: Int, size: Int, value: UInt32,
                         verdict: FilterVerdict) {
        trace.append(TraceRecord(sequence: 0, domain: owners[device] ?? 0, device: device, operation: operation,
                                 offset: Int32(truncatingIfNeeded: offset), size: Int32(truncatingIfNeeded: size),
                                 value: value, error: verdict.error, rule: verdict.rule))
    }

    /// The trace as the `fs/pcibackfs/trace` file shows it (newest last, cut to one page from
    /// the front so the newest lines always fit).
    public func traceText() -> [UInt8] {
        var lines: [String] = []
        var total = 0
        for record in trace.records().reversed() {
            let line = record.line + "\n"
            if total + line.utf8.count > ShowBuffer.pageSize - 1 { break }
            total += line.utf8.count
            lines.append(line)
        }
        return Array(lines.reversed().joined().utf8)
    }
}
