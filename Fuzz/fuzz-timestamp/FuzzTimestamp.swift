import FuzzDriver
import FuzzEntryPoints

/// libFuzzer entry: a time a client gives, as `Timestamp.parse` reads it (FuzzEntryPoints.timestamp).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTimestamp(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzDriver.check(data, count, FuzzEntryPoints.timestamp)
}

@_cdecl("fuzz_timestamp_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.run(argc, argv, fuzzTimestamp)
}
