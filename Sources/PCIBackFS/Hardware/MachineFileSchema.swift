/// The strict shape of a machine file, checked on the parsed JSON before it is decoded: every
/// key at every level must be one the format knows (the `CodingKeys` of `MachineFile`, its
/// `Entry`, `BAR` and `DeviceFaults`), and each value of the type, range or set the key takes.
/// Each problem names its JSON path and where it is, and lists what is allowed.
enum MachineFileSchema {
    typealias Problem = MachineFile.LoadError.Problem

    static func check(_ document: JSONValue, bytes: [UInt8]) -> [Problem] {
        var checker = Checker(bytes: bytes)
        checker.file(document)
        return checker.problems
    }

    static func unknownTemplate(_ name: String) -> String {
        "unknown template \"\(name)\"\(suggestion(name, MachineTemplate.names)); the templates are "
            + MachineTemplate.names.joined(separator: ", ") + " (`pcibackfsd templates` describes them)"
    }

    /// A problem found after the check (while building the functions), placed at the value its
    /// path names.
    static func locate(_ problem: Problem, in document: JSONValue, bytes: [UInt8]) -> Problem {
        guard problem.line == nil, let offset = find(problem.path, in: document) else { return problem }
        var located = problem
        (located.line, located.column) = lineAndColumn(of: offset, in: bytes)
        return located
    }

    /// A decoding error the check did not foresee, in words.
    static func problem(_ error: DecodingError) -> Problem {
        func path(_ codingPath: [any CodingKey]) -> String {
            render(codingPath.map { $0.intValue.map(PathStep.index) ?? .key($0.stringValue) })
        }
        switch error {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return Problem(path: path(context.codingPath), message: context.debugDescription)
        case .keyNotFound(let key, let context):
            return Problem(path: path(context.codingPath), message: "needs \"\(key.stringValue)\"")
        @unknown default:
            return Problem(message: "\(error)")
        }
    }

    // MARK: - Paths

    enum PathStep {
        case key(String)
        case index(Int)
    }

    static func render(_ steps: [PathStep]) -> String {
        var text = ""
        for step in steps {
            switch step {
            case .key(let key): text += (text.isEmpty ? "" : ".") + key
            case .index(let index): text += "[\(index)]"
            }
        }
        return text
    }

    /// The offset of the value at `path` (as `render` writes it), nil if there is none.
    static func find(_ path: String, in document: JSONValue) -> Int? {
        var value = document
        var rest = Substring(path)
        while !rest.isEmpty {
            if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]"), let index = Int(rest[rest.index(after: rest.startIndex)..<close]),
                      case .array(let elements, _) = value, elements.indices.contains(index) else { return nil }
                value = elements[index]
                rest = rest[rest.index(after: close)...]
            } else {
                if rest.hasPrefix(".") { rest = rest.dropFirst() }
                let end = rest.firstIndex { $0 == "." || $0 == "[" } ?? rest.endIndex
                guard case .object(let members, _) = value, let member = members.first(where: { $0.key == rest[..<end] }) else { return nil }
                value = member.value
                rest = rest[end...]
            }
        }
        return value.offset
    }

    // MARK: - Suggestions

    /// ` (did you mean "X"?)` for the closest allowed word within two edits, or nothing.
    static func suggestion(_ word: String, _ allowed: [String]) -> String {
        let scored = allowed.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(1, min(2, word.count / 3)) else { return "" }
        return " (did you mean \"\(best.0)\"?)"
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in a.indices {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for j in b.indices {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (a[i] == b[j] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

// MARK: - The check

private struct Checker {
    typealias Problem = MachineFileSchema.Problem
    typealias PathStep = MachineFileSchema.PathStep
    typealias EntryKey = MachineFile.Entry.CodingKeys

    let bytes: [UInt8]
    var problems: [Problem] = []

    mutating func report(_ path: [PathStep], at offset: Int, _ message: String) {
        let (line, column) = lineAndColumn(of: offset, in: bytes)
        problems.append(Problem(path: MachineFileSchema.render(path), line: line, column: column, message: message))
    }

    /// The members of an object whose keys are all in `allowed`; reports the others (and
    /// duplicates). Nil (reported) if `value` is not an object.
    mutating func members(_ value: JSONValue, _ path: [PathStep], allowed: [String], what: String) -> [JSONValue.Member]? {
        guard case .object(let members, _) = value else {
            report(path, at: value.offset, "expected \(what) (a JSON object), found \(value.kindName)")
            return nil
        }
        var seen = Set<String>()
        var known: [JSONValue.Member] = []
        for member in members {
            let memberPath = path + [.key(member.key)]
            if !allowed.contains(member.key) {
                report(memberPath, at: member.keyOffset, "unknown key \"\(member.key)\"\(MachineFileSchema.suggestion(member.key, allowed)); "
                       + "the keys of \(what) are " + allowed.joined(separator: ", "))
            } else if !seen.insert(member.key).inserted {
                report(memberPath, at: member.keyOffset, "\"\(member.key)\" appears twice")
            } else if case .null = member.value {
                continue  // an optional value left out
            } else {
                known.append(member)
            }
        }
        return known
    }

    mutating func string(_ value: JSONValue, _ path: [PathStep]) -> String? {
        guard case .string(let text, _) = value else {
            report(path, at: value.offset, "expected a string, found \(value.kindName)")
            return nil
        }
        return text
    }

    mutating func oneOf(_ value: JSONValue, _ path: [PathStep], _ allowed: [String], what: String) {
        guard let text = string(value, path), !allowed.contains(text) else { return }
        report(path, at: value.offset, "unknown \(what) \"\(text)\"\(MachineFileSchema.suggestion(text, allowed)); one of "
               + allowed.joined(separator: ", "))
    }

    /// A whole number in `range` (written without fraction or exponent).
    mutating func integer(_ value: JSONValue, _ path: [PathStep], _ range: ClosedRange<UInt64>, what: String) {
        let expected = "\(what) from \(range.lowerBound) to \(range.upperBound)"
        guard case .number(let text, _) = value else {
            report(path, at: value.offset, "expected \(expected), found \(value.kindName)")
            return
        }
        guard let number = UInt64(text), range.contains(number) else {
            report(path, at: value.offset, "expected \(expected), found \(text)")
            return
        }
    }

    mutating func file(_ document: JSONValue) {
        let keys = MachineFile.CodingKeys.allCases.map(\.rawValue)
        guard let members = members(document, [], allowed: keys, what: "a machine file") else { return }
        var hasDevices = false
        for member in members {
            let path: [PathStep] = [.key(member.key)]
            switch MachineFile.CodingKeys(rawValue: member.key)! {
            case .name: _ = string(member.value, path)
            case .devices:
                hasDevices = true
                guard case .array(let entries, _) = member.value else {
                    report(path, at: member.value.offset, "expected an array of device entries, found \(member.value.kindName)")
                    continue
                }
                for (index, entry) in entries.enumerated() { self.entry(entry, path + [.index(index)]) }
            }
        }
        if !hasDevices { report([], at: document.offset, "a machine file needs \"devices\", an array of device entries") }
    }

    mutating func entry(_ value: JSONValue, _ path: [PathStep]) {
        guard let members = members(value, path, allowed: EntryKey.allCases.map(\.rawValue), what: "a device entry") else { return }
        var present: [EntryKey: JSONValue] = [:]
        for member in members { present[EntryKey(rawValue: member.key)!] = member.value }
        let template: MachineTemplate? = present[.template].flatMap {
            if case .string(let name, _) = $0 { MachineTemplate(rawValue: name) } else { nil }
        }
        for member in members {
            let key = EntryKey(rawValue: member.key)!
            let memberPath = path + [.key(member.key)]
            if let misplaced = misplaced(key, present: present, template: template) {
                report(memberPath, at: member.keyOffset, misplaced)
                continue
            }
            let value = member.value
            switch key {
            case .address:
                if let text = string(value, memberPath), PCIAddress(kernelName: text) == nil {
                    report(memberPath, at: value.offset, "\"\(text)\" is not a PCI address like 0000:03:00.0 (DDDD:BB:SS.F, lower-case hex)")
                }
            case .template:
                if let name = string(value, memberPath), MachineTemplate(rawValue: name) == nil {
                    report(memberPath, at: value.offset, MachineFileSchema.unknownTemplate(name))
                }
            case .secondaryBus, .subordinateBus: integer(value, memberPath, 0...255, what: "a bus number")
            case .irq: integer(value, memberPath, 0...UInt64(UInt32.max), what: "an IRQ number")
            case .driver, .lspciDump, .config, .writable, .writeOneClear, .resetImage: _ = string(value, memberPath)
            case .bars, .iovBars:
                guard case .array(let bars, _) = value else {
                    report(memberPath, at: value.offset, "expected an array of BARs, found \(value.kindName)")
                    continue
                }
                for (index, bar) in bars.enumerated() { self.bar(bar, memberPath + [.index(index)]) }
            case .faults: faults(value, memberPath)
            }
        }
    }

    /// Why `key` does not belong in an entry of this kind, or nil.
    func misplaced(_ key: EntryKey, present: [EntryKey: JSONValue], template: MachineTemplate?) -> String? {
        if present[.lspciDump] != nil {
            return key == .lspciDump ? nil
                : "an lspciDump entry takes no other key (the dump gives each function's address, config, BARs, IRQ and driver)"
        }
        switch key {
        case .template where present[.config] != nil:
            return "an entry has either \"template\" or \"config\", not both"
        case .config, .writable, .writeOneClear, .resetImage, .bars, .iovBars:
            return present[.template] != nil ? "not used with a template (only with \"config\")" : nil
        case .secondaryBus, .subordinateBus:
            if present[.template] == nil { return "only the root-port template takes \(key.rawValue)" }
            if let template, !template.takesBusNumbers { return "the \(template.rawValue) template takes no \(key.rawValue) (only root-port does)" }
            return nil
        default:
            return nil
        }
    }

    mutating func bar(_ value: JSONValue, _ path: [PathStep]) {
        typealias Key = MachineFile.BAR.CodingKeys
        guard let members = members(value, path, allowed: Key.allCases.map(\.rawValue), what: "a BAR") else { return }
        for member in members {
            let memberPath = path + [.key(member.key)]
            switch Key(rawValue: member.key)! {
            case .index: integer(member.value, memberPath, 0...6, what: "a BAR number (6: the ROM)")
            case .kind: oneOf(member.value, memberPath, BARDescriptor.Kind.allCases.map(\.rawValue), what: "BAR kind")
            case .size, .address: integer(member.value, memberPath, 0...UInt64.max, what: "a number")
            case .sizeInferred:
                if case .bool = member.value { break }
                report(memberPath, at: member.value.offset, "expected true or false, found \(member.value.kindName)")
            }
        }
        for key in MachineFile.BAR.requiredKeys where !members.contains(where: { $0.key == key.rawValue }) {
            report(path, at: value.offset, "a BAR needs \"\(key.rawValue)\" (a BAR has " + Key.allCases.map(\.rawValue).joined(separator: ", ")
                   + "; sizeInferred is optional)")
        }
    }

    mutating func faults(_ value: JSONValue, _ path: [PathStep]) {
        let names = DeviceFaults.CodingKeys.allCases.map(\.rawValue)
        guard case .object(let members, _) = value else {
            report(path, at: value.offset, "expected the faults (a JSON object such as { \"resetFails\": \"once\" }), found \(value.kindName)")
            return
        }
        var seen = Set<String>()
        for member in members {
            let memberPath = path + [.key(member.key)]
            guard names.contains(member.key) else {
                report(memberPath, at: member.keyOffset, "unknown fault \"\(member.key)\"\(MachineFileSchema.suggestion(member.key, names)); "
                       + "the faults are " + names.joined(separator: ", "))
                continue
            }
            guard seen.insert(member.key).inserted else {
                report(memberPath, at: member.keyOffset, "\"\(member.key)\" appears twice")
                continue
            }
            oneOf(member.value, memberPath, DeviceFaults.Mode.allCases.map(\.rawValue), what: "fault mode")
        }
    }
}

extension BARDescriptor.Kind: CaseIterable {
    public static var allCases: [BARDescriptor.Kind] { [.io, .memory32, .memory32Prefetchable, .memory64, .memory64Prefetchable, .rom] }
}
