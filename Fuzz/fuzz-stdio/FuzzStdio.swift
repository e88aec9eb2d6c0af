import FuzzDriver
import FuzzEntryPoints

/// libFuzzer entry: newline-separated messages on one dual-era stdio connection.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStdio(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzDriver.check(data, count, FuzzEntryPoints.stdio)
}

@_cdecl("fuzz_stdio_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.run(argc, argv, fuzzStdio)
}
