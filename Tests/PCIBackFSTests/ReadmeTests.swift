#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// The README, tested. Every ```console block is a terminal session: lines starting with `# `
// (root) or `$ ` (a user) are commands, a command line ending in `\` continues on the next line,
// and the lines under a command are what it prints, standard error included. Each block runs,
// commands in order in one bash process (so `F=...` persists), on a fresh daemon of the
// built-in machine mounted on a fresh temporary directory exported as $R, with the built
// pcibackfsd first in PATH, and what each command prints must be exactly the lines under it.
// Every ```sh block is `bash -n` clean, and runs on such a mount (it must exit 0) unless an
// HTML comment right before it says `<!-- not run: REASON -->`. A comment
// `<!-- files: PATH... (what they are) -->` before a block copies those files of the package
// into the directory the block runs in (otherwise an empty temporary one), and
// `<!-- daemon: OPTIONS -->` starts that block's daemon with OPTIONS (what the text around the
// block says it was started with).

// MARK: - The README's blocks

struct ReadmeBlock: Sendable, CustomTestStringConvertible {
    enum Kind: String, Sendable { case console, sh }

    var kind: Kind
    var section: String
    /// The 1-based line of the opening fence.
    var line: Int
    var lines: [String]
    /// The reason given by `<!-- not run: ... -->`, if any.
    var notRun: String?
    /// Package files copied into the block's working directory (`<!-- files: ... -->`).
    var files: [String]
    /// Options of the block's daemon (`<!-- daemon: ... -->`).
    var daemonOptions: [String] = []

    var text: String { lines.map { $0 + "\n" }.joined() }

    var testDescription: String {
        let first = kind == .console ? (try? ConsoleSession(self).steps.first?.command) : lines.first
        let command = first.map { $0.count > 70 ? $0.prefix(67) + "..." : $0 } ?? "(empty)"
        return "\(kind) block, \(section), line \(line): \(command)"
    }
}

enum ReadmeDocument {
    static var path: String { MountEnvironment.packageRoot + "/README.md" }

    /// The fenced blocks of the README that are examples (console and sh), in order.
    static func blocks(of text: String) -> [ReadmeBlock] {
        var blocks: [ReadmeBlock] = []
        var section = "(top)"
        var open: (language: String, line: Int, body: [String])?
        var lastComment: String?
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).enumerated() {
            if var current = open {
                if line.hasPrefix("```") {
                    if let kind = ReadmeBlock.Kind(rawValue: current.language) {
                        blocks.append(ReadmeBlock(kind: kind, section: section, line: current.line, lines: current.body,
                                                  notRun: directive("not run:", in: lastComment),
                                                  files: fileList(directive("files:", in: lastComment)),
                                                  daemonOptions: (directive("daemon:", in: lastComment) ?? "")
                                                      .split(separator: " ").map(String.init)))
                    }
                    open = nil
                    lastComment = nil
                } else {
                    current.body.append(line)
                    open = current
                }
                continue
            }
            if line.hasPrefix("```") {
                open = (String(line.dropFirst(3)).trimmingCharacters(in: .whitespaces), index + 1, [])
            } else if line.hasPrefix("## ") {
                section = String(line.dropFirst(3))
                lastComment = nil
            } else if line.hasPrefix("<!--") {
                lastComment = line
            } else if !line.trimmingCharacters(in: .whitespaces).isEmpty {
                // A directive holds only for the block right after it.
                lastComment = nil
            }
        }
        return blocks
    }

    /// The languages of every fenced block (to catch an example that no test would run).
    static func fenceLanguages(of text: String) -> [String] {
        var languages: [String] = []
        var inside = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where line.hasPrefix("```") {
            if !inside { languages.append(String(line.dropFirst(3)).trimmingCharacters(in: .whitespaces)) }
            inside.toggle()
        }
        return languages
    }

    private static func directive(_ keyword: String, in comment: String?) -> String? {
        guard let comment, comment.hasPrefix("<!-- " + keyword), comment.hasSuffix("-->") else { return nil }
        return String(comment.dropFirst(5 + keyword.count).dropLast(3)).trimmingCharacters(in: .whitespaces)
    }

    /// `fixtures/readme/machine.json (what it is)` -> the paths before the parenthesis.
    private static func fileList(_ text: String?) -> [String] {
        guard let text else { return [] }
        let paths = text.split(separator: "(", maxSplits: 1).first ?? ""
        return paths.split(separator: " ").map(String.init)
    }

    /// The README's blocks; a README that cannot be read gives none (and `readmeIsRead` fails).
    static let all: [ReadmeBlock] = {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return blocks(of: text)
    }()

    static var console: [ReadmeBlock] { all.filter { $0.kind == .console } }
    static var sh: [ReadmeBlock] { all.filter { $0.kind == .sh } }
    static var runnableSh: [ReadmeBlock] { sh.filter { $0.notRun == nil } }
}

// MARK: - A console block as commands and their output

struct ConsoleSession: Equatable {
    struct Step: Equatable {
        var command: String
        var output: [String]
    }

    var steps: [Step]

    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    static func isPrompt(_ line: String) -> Bool { line.hasPrefix("# ") || line.hasPrefix("$ ") }

    init(steps: [Step]) { self.steps = steps }

    init(_ block: ReadmeBlock) throws {
        steps = []
        var continuing = false
        for line in block.lines {
            if continuing, let last = steps.indices.last {
                steps[last].command += "\n" + line
            } else if Self.isPrompt(line) {
                steps.append(Step(command: String(line.dropFirst(2)), output: []))
            } else if let last = steps.indices.last {
                steps[last].output.append(line)
                continue
            } else {
                throw ParseError(description: "line \(block.line + 1): output before any command: \(line)")
            }
            continuing = line.hasSuffix("\\")
        }
        if continuing { throw ParseError(description: "the block ends inside a command continued with \\") }
    }

    /// The block as the README shows it.
    var rendered: String {
        steps.map { step in
            (["# " + step.command] + step.output).joined(separator: "\n") + "\n"
        }.joined()
    }
}

// MARK: - Running blocks

enum ReadmeRunner {
    /// Printed after each command, on a line of its own, to tell the commands' outputs apart.
    static let marker = "@@pcibackfs-readme-step@@"

    /// The environment every block gets: $R, the built daemon first in PATH, the C locale (the
    /// messages are the untranslated ones the README shows), the working directory.
    static func prologue(root: String, directory: String) -> String {
        let path = MountEnvironment.packageRoot + "/.build/debug:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        return """
            exec 2>&1
            export R=\(quoted(root)) PATH=\(quoted(path)) LC_ALL=C
            cd \(quoted(directory)) || exit 99

            """
    }

    static func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// A fresh working directory holding the block's files.
    static func workingDirectory(for block: ReadmeBlock) throws -> String {
        let directory = Temporary.directory(prefix: "pcibackfs-readme")
        for file in block.files {
            let source = MountEnvironment.packageRoot + "/" + file
            let target = directory + "/" + (file as NSString).lastPathComponent
            try FileManager.default.copyItem(atPath: source, toPath: target)
        }
        return directory
    }

    /// Runs the commands of `session` in one bash on `mount` and returns what each printed,
    /// normalized (see `normalize`).
    static func run(_ session: ConsoleSession, block: ReadmeBlock, on mount: DaemonMount) throws -> ConsoleSession {
        let directory = try workingDirectory(for: block)
        defer { Temporary.remove(directory) }
        var script = prologue(root: mount.root, directory: directory)
        for step in session.steps {
            script += step.command + "\n" + "printf '%s\\n' \(marker)\n"
        }
        // `bash` as $0: the shell names itself so in its messages, as an interactive one does.
        let result = Subprocess.run("bash", ["-c", script, "bash"], timeout: 60)
        guard !result.timedOut else { throw HarnessError("the block timed out:\n\(result)") }
        let chunks = result.stdout.components(separatedBy: marker + "\n")
        var actual = ConsoleSession(steps: [])
        for (index, step) in session.steps.enumerated() {
            let chunk = index < chunks.count ? chunks[index] : "(nothing: the shell ended before this command)\n"
            actual.steps.append(.init(command: step.command, output: normalize(chunk, root: mount.root)))
        }
        let trailing = chunks.dropFirst(session.steps.count).joined(separator: marker + "\n")
        if !trailing.isEmpty {
            // Output after the last command's marker (something printed late).
            actual.steps.append(.init(command: "(after the last command)", output: normalize(trailing, root: mount.root)))
        }
        return actual
    }

    /// What a terminal would show, from what the test's shell printed:
    /// * a non-interactive bash may prefix its own error messages with `bash: line N: ` (bash
    ///   5.0 and 5.1 do so for `bash -c`) where an interactive shell says `bash: `: the line
    ///   number is dropped;
    /// * the temporary mount point is written `$R`, as the README writes it (commands such as
    ///   `cat` name the path in their errors);
    /// * an output that does not end with a newline ends its last line (a terminal would put
    ///   the next prompt after it on the same line).
    static func normalize(_ chunk: String, root: String) -> [String] {
        var lines = chunk.replacingOccurrences(of: root, with: "$R").split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines.map { line in
            guard line.hasPrefix("bash: line "),
                  let colon = line.dropFirst("bash: line ".count).firstIndex(of: ":"),
                  line[line.index(line.startIndex, offsetBy: "bash: line ".count)..<colon].allSatisfy(\.isNumber)
            else { return line }
            return "bash:" + line[line.index(after: colon)...]
        }
    }

    /// Runs a console block on a fresh daemon: the expected and the actual session.
    static func check(_ block: ReadmeBlock) throws -> (expected: ConsoleSession, actual: ConsoleSession) {
        let expected = try ConsoleSession(block)
        let actual = try withDaemon(block.daemonOptions) { try run(expected, block: block, on: $0) }
        return (expected, actual)
    }

    /// A sh block run as a script on a fresh daemon, stopping at the first failing command.
    static func runScript(_ block: ReadmeBlock) throws -> ProcessResult {
        let directory = try workingDirectory(for: block)
        defer { Temporary.remove(directory) }
        return try withDaemon(block.daemonOptions) { mount in
            Subprocess.run("bash", ["-e", "-c", prologue(root: mount.root, directory: directory) + block.text, "bash"], timeout: 60)
        }
    }

    /// Where two sessions differ, command by command, for the failure message.
    static func differences(_ expected: ConsoleSession, _ actual: ConsoleSession) -> String {
        var report: [String] = []
        for index in 0..<max(expected.steps.count, actual.steps.count) {
            let want = index < expected.steps.count ? expected.steps[index] : nil
            let got = index < actual.steps.count ? actual.steps[index] : nil
            guard want != got else { continue }
            report.append("# " + (want ?? got)!.command)
            report.append("  README:  " + (want?.output.joined(separator: "\n           ") ?? "(no such command)"))
            report.append("  daemon:  " + (got?.output.joined(separator: "\n           ") ?? "(no such command)"))
        }
        return report.joined(separator: "\n")
    }
}

// MARK: - Tests

@Suite("README examples", .serialized)
struct ReadmeTests {
    @Test("the README is read and holds console and sh blocks")
    func readmeIsRead() {
        #expect(ReadmeDocument.console.count >= 5, "console blocks found: \(ReadmeDocument.console.count)")
        #expect(!ReadmeDocument.runnableSh.isEmpty)
    }

    @Test("every fenced block is an example a test runs, JSON, or untagged text")
    func fenceLanguages() throws {
        let text = try String(contentsOfFile: ReadmeDocument.path, encoding: .utf8)
        let unknown = ReadmeDocument.fenceLanguages(of: text).filter { !["console", "sh", "json", ""].contains($0) }
        #expect(unknown.isEmpty, "blocks no test runs: \(unknown)")
    }

    @Test("a console block's output is exactly what the daemon prints", .requiresDaemonMount,
          arguments: ReadmeDocument.console)
    func consoleBlock(_ block: ReadmeBlock) throws {
        #expect(block.notRun == nil, "console blocks always run; only sh blocks may be marked not run")
        let (expected, actual) = try ReadmeRunner.check(block)
        let matches = expected == actual
        #expect(matches, """
            README.md line \(block.line) (\(block.section)) differs from the daemon:
            \(ReadmeRunner.differences(expected, actual))
            --- the block as the daemon runs it:
            \(actual.rendered)
            """)
    }

    @Test("a sh block is bash -n clean", arguments: ReadmeDocument.sh)
    func shSyntax(_ block: ReadmeBlock) {
        let result = Subprocess.run("bash", ["-n", "-c", block.text], timeout: 10)
        #expect(result.succeeded && result.stderr.isEmpty, "README.md line \(block.line): \(result)")
    }

    @Test("a sh block not marked 'not run' runs on a mount and exits 0", .requiresDaemonMount,
          arguments: ReadmeDocument.runnableSh)
    func shRuns(_ block: ReadmeBlock) throws {
        let result = try ReadmeRunner.runScript(block)
        #expect(result.succeeded, "README.md line \(block.line) (\(block.section)):\n\(result)")
    }

    @Test("a block marked not run says why")
    func notRunReasons() {
        for block in ReadmeDocument.sh where block.notRun != nil {
            #expect((block.notRun ?? "").count >= 10, "README.md line \(block.line): a reason, not just a mark")
        }
    }

    @Test("files a block names exist; machine.json is the README's example with resetFails misspelt")
    func blockFiles() throws {
        for block in ReadmeDocument.all {
            for file in block.files {
                #expect(access(MountEnvironment.packageRoot + "/" + file, R_OK) == 0, "README.md line \(block.line): \(file)")
            }
        }
        let text = try String(contentsOfFile: ReadmeDocument.path, encoding: .utf8)
        let section = try #require(text.range(of: "## Machine files").map { text[$0.upperBound...] })
        let start = try #require(section.range(of: "```json\n"))
        let end = try #require(section[start.upperBound...].range(of: "```"))
        let example = String(section[start.upperBound..<end.lowerBound])
        let fixture = try String(contentsOfFile: MountEnvironment.packageRoot + "/fixtures/readme/machine.json", encoding: .utf8)
        #expect(fixture == example.replacingOccurrences(of: "\"resetFails\"", with: "\"resetFail\""))
    }

    @Test("the parser: prompts, output and continued commands")
    func parser() throws {
        let block = ReadmeBlock(kind: .console, section: "test", line: 1,
                                lines: ["# echo a \\", "b", "a b", "$ true", "# cat x", "cat: x: No such file"],
                                notRun: nil, files: [])
        let session = try ConsoleSession(block)
        #expect(session.steps == [.init(command: "echo a \\\nb", output: ["a b"]), .init(command: "true", output: []),
                                  .init(command: "cat x", output: ["cat: x: No such file"])])
        var orphan = block
        orphan.lines = ["stray output", "# true"]
        #expect(throws: ConsoleSession.ParseError.self) { try ConsoleSession(orphan) }
        #expect(ReadmeRunner.normalize("bash: line 12: echo: write error: Invalid argument\n/m/x\nno newline", root: "/m")
                == ["bash: echo: write error: Invalid argument", "$R/x", "no newline"])
    }

    @Test("the test can fail: a block with one output line changed does not match", .requiresDaemonMount)
    func changedOutputFails() throws {
        let original = try #require(ReadmeDocument.console.first { block in
            (try? ConsoleSession(block))?.steps.contains { !$0.output.isEmpty } == true
        })
        var changed = original
        let index = try #require(changed.lines.firstIndex { !ConsoleSession.isPrompt($0) })
        changed.lines[index] += " (changed)"
        let (expected, actual) = try ReadmeRunner.check(changed)
        #expect(expected != actual, "a changed output line went unnoticed")
        let (unchangedExpected, unchangedActual) = try ReadmeRunner.check(original)
        #expect(unchangedExpected == unchangedActual, "the original block passes")
        #expect(ReadmeRunner.differences(expected, actual).contains("(changed)"))
    }
}
#endif
