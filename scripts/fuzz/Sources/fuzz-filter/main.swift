// Entry point: libFuzzer's driver (FuzzDriver) with this target's LLVMFuzzerTestOneInput.
import FuzzDriver

runFuzzDriver(fuzz)
