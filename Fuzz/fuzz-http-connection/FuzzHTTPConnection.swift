import FuzzDriver
import FuzzHTTPEntryPoints

/// libFuzzer entry: a client's bytes on one HTTP connection, through NIO's decoder and ModernPostHandler.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPConnection(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzDriver.check(data, count) { _ = try FuzzHTTPEntryPoints.connection($0) }
}

@_cdecl("fuzz_http_connection_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.run(argc, argv, fuzzHTTPConnection)
}
