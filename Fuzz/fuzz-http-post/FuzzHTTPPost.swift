import FuzzDriver
import FuzzEntryPoints

/// libFuzzer entry: an HTTP POST (headers, blank line, body) through the 2026-07-28/2025-11-25 routing rules.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPPost(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzDriver.check(data, count, FuzzEntryPoints.httpPost)
}

@_cdecl("fuzz_http_post_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.run(argc, argv, fuzzHTTPPost)
}
