import FuzzDriver
import FuzzEntryPoints

/// libFuzzer entry: what a condition watcher reads (HTTP responses, URLs, conditions).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWatch(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzDriver.check(data, count, FuzzEntryPoints.watch)
}

@_cdecl("fuzz_watch_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.run(argc, argv, fuzzWatch)
}
