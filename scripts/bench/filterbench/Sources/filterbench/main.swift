// B6 of scripts/bench.sh: guest config accesses through pciback's filter, in process, one
// thread, no FUSE. Prints one line per figure ("name=value") so bench.sh can parse it.
//
//   filterbench [--secs S] [--rounds N] [--zero 0]
//
// Each round times, for S seconds each, interleaved:
//   filtered_reads     dom0.guestRead(nic, offset: 4, size: 4)        (frontend 1's view)
//   raw_reads          ConfigSpace.read(4, width: 4) on the same function's config (baseline)
//   filtered_writes    dom0.guestWrite(nic, offset: 4, size: 2, value: <current command>)
//   raw_writes         ConfigSpace.write(4, width: 2, value: <same>) on a copy (baseline)
// The offset is `4 | zero` with `zero` taken from the command line (0), so the optimizer
// cannot hoist a loop-invariant read out of the loop; the same applies to both sides.
import PCIBackFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

func fail(_ message: String) -> Never {
    let line = "filterbench: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

var seconds = 1.0
var rounds = 5
var zero = 0
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--secs": seconds = Double(arguments.next() ?? "") ?? seconds
    case "--rounds": rounds = Int(arguments.next() ?? "") ?? rounds
    case "--zero": zero = Int(arguments.next() ?? "") ?? 0
    default: fail("usage: filterbench [--secs S] [--rounds N]")
    }
}

let nic = PCIAddress(kernelName: "0000:03:00.0")!
let slot = Array("0000:03:00.0".utf8)
var dom0: Dom0
do {
    dom0 = try Dom0(machine: BuiltinMachine.make())
    try dom0.unbind(driver: "igb", input: slot)
    try dom0.newSlot(input: slot)
    try dom0.bind(driver: "pciback", input: slot)
    _ = try dom0.attach(domain: 1, address: nic)
} catch {
    fail("setting up the NIC for frontend 1: \(error)")
}

let offset = 4 | zero
guard let device = dom0.device(nic) else { fail("no device at \(nic)") }
let expected = dom0.guestRead(nic, offset: offset, size: 4)
guard expected.error == 0 else { fail("guestRead failed: \(expected.error)") }
let command = UInt32(expected.value & 0xffff)
let logLines = dom0.log.lines.count

/// Runs `body` in batches of 1024 until `seconds` have passed; returns operations per second.
@inline(never)
func measure(seconds: Double, offset: Int, _ body: (Int) -> UInt32) -> (rate: Double, sink: UInt32) {
    var sink: UInt32 = 0
    var operations = 0
    let start = now()
    let deadline = start + seconds
    var elapsed = 0.0
    repeat {
        for _ in 0..<1024 {
            sink &+= body(offset)
        }
        operations += 1024
        elapsed = now() - start
    } while start + elapsed < deadline
    return (Double(operations) / elapsed, sink)
}

var results: [String: [Double]] = [:]
var sinks: UInt32 = 0
for _ in 0..<rounds {
    let filteredRead = measure(seconds: seconds, offset: offset) { dom0.guestRead(nic, offset: $0, size: 4).value }
    var raw = device.config
    let rawRead = measure(seconds: seconds, offset: offset) { raw.read($0, width: 4) }
    let filteredWrite = measure(seconds: seconds, offset: offset) { UInt32(bitPattern: dom0.guestWrite(nic, offset: $0, size: 2, value: command).error) }
    let rawWrite = measure(seconds: seconds, offset: offset) { raw.write($0, width: 2, value: command); return 0 }
    results["filtered_reads", default: []].append(filteredRead.rate)
    results["raw_reads", default: []].append(rawRead.rate)
    results["filtered_writes", default: []].append(filteredWrite.rate)
    results["raw_writes", default: []].append(rawWrite.rate)
    sinks &+= filteredRead.sink &+ rawRead.sink &+ filteredWrite.sink
}

// The loops must not have changed what the guest sees, nor logged anything.
let after = dom0.guestRead(nic, offset: offset, size: 4)
guard after == expected else { fail("guest view changed: \(expected) -> \(after)") }
guard dom0.log.lines.count == logLines else { fail("the filter logged \(dom0.log.lines.count - logLines) lines") }

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

for name in ["filtered_reads", "raw_reads", "filtered_writes", "raw_writes"] {
    let values = results[name]!
    print("\(name)=\(Int(median(values))) rounds=\(values.map { String(Int($0)) }.joined(separator: ","))")
}
let readRatios = zip(results["filtered_reads"]!, results["raw_reads"]!).map { $0 / $1 }
let writeRatios = zip(results["filtered_writes"]!, results["raw_writes"]!).map { $0 / $1 }
print("read_ratio=\(median(readRatios))")
print("write_ratio=\(median(writeRatios))")
print("sink=\(sinks)")
