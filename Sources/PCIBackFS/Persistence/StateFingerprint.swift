/// A canonical text of a value's whole stored state, read by reflection: every stored property
/// (private ones included) of structs, enums and class instances, dictionaries and sets in a
/// sorted order, byte arrays as hex. Two machines with equal fingerprints are in the same state,
/// whatever order their dictionaries iterate in. Used to check that a replayed (or restored)
/// state is exactly the one the daemon had.
enum StateFingerprint {
    static func of(_ value: Any) -> String {
        var visiting = Set<ObjectIdentifier>()
        return render(value, &visiting)
    }

    private static func render(_ value: Any, _ visiting: inout Set<ObjectIdentifier>) -> String {
        if let bytes = value as? [UInt8] {
            var text = "<\(bytes.count):"
            for byte in bytes {
                text.append(hexDigits[Int(byte >> 4)])
                text.append(hexDigits[Int(byte & 0xf)])
            }
            return text + ">"
        }
        if let string = value as? String { return string.debugDescription }
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .dictionary?:
            let entries = mirror.children.map { child -> String in
                let pair = Array(Mirror(reflecting: child.value).children)
                guard pair.count == 2 else { return render(child.value, &visiting) }
                return render(pair[0].value, &visiting) + ": " + render(pair[1].value, &visiting)
            }
            return "[" + entries.sorted().joined(separator: ", ") + "]"
        case .set?:
            return "{" + mirror.children.map { render($0.value, &visiting) }.sorted().joined(separator: ", ") + "}"
        case .collection?:
            return "[" + mirror.children.map { render($0.value, &visiting) }.joined(separator: ", ") + "]"
        case .optional?:
            guard let wrapped = mirror.children.first else { return "nil" }
            return render(wrapped.value, &visiting)
        case .tuple?:
            return "(" + mirror.children.map { ($0.label.map { $0 + ": " } ?? "") + render($0.value, &visiting) }
                .joined(separator: ", ") + ")"
        case .enum?:
            guard let payload = mirror.children.first else { return "\(mirror.subjectType).\(value)" }
            return "\(mirror.subjectType).\(payload.label ?? "?")(" + render(payload.value, &visiting) + ")"
        case .struct?, .class?:
            var identity: ObjectIdentifier?
            if mirror.displayStyle == .class {
                let object = ObjectIdentifier(value as AnyObject)
                // A back reference (a weak link up a chain) is named, not followed.
                guard !visiting.contains(object) else { return "\(mirror.subjectType)(cycle)" }
                visiting.insert(object)
                identity = object
            }
            defer { if let identity { visiting.remove(identity) } }
            var fields: [String] = []
            var current: Mirror? = mirror
            while let level = current {
                for child in level.children {
                    fields.append((child.label ?? "_") + "=" + render(child.value, &visiting))
                }
                current = level.superclassMirror
            }
            return "\(mirror.subjectType){" + fields.joined(separator: ", ") + "}"
        default:
            return String(describing: value)
        }
    }

    private static let hexDigits: [Character] = Array("0123456789abcdef")
}
