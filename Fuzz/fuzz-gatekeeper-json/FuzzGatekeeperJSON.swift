import FuzzDriver
import FuzzEntryPoints

/// libFuzzer entry: one text as corral proxy reads it (FuzzEntryPoints.gatekeeperJSON).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGatekeeperJSON(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzDriver.check(data, count, FuzzEntryPoints.gatekeeperJSON)
}

@_cdecl("fuzz_gatekeeper_json_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.run(argc, argv, fuzzGatekeeperJSON)
}
