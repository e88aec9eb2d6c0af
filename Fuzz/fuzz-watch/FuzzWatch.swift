import FuzzEntryPoints

/// libFuzzer entry: what a condition watcher reads (HTTP responses, URLs, conditions).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWatch(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    do {
        try FuzzEntryPoints.watch(Array(UnsafeBufferPointer(start: data, count: count)))
    } catch {
        fatalError("invariant broken: \(error)")
    }
    return 0
}

// SwiftPM links an executable's entry point as `<module>_main` (and points `main` at it), so libFuzzer's own
// main is not used: this one hands over to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("fuzz_watch_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, fuzzWatch)
}
