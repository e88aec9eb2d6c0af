/// What every fuzz target needs besides its entry point. SwiftPM links an executable's entry point as
/// `<module>_main` (and points `main` at it), so libFuzzer's own main is not used: each target's `<module>_main`
/// hands over to libFuzzer's driver through `FuzzDriver.run`. Built only with CORRAL_FUZZ=1, where the fuzzer
/// runtime provides `LLVMFuzzerRunDriver`.
public enum FuzzDriver {
    public typealias Entry = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt

    public static func run(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ entry: Entry) -> CInt {
        var count = argc
        var arguments = argv
        return LLVMFuzzerRunDriver(&count, &arguments, entry)
    }

    /// Runs one input through an entry point, trapping on a broken invariant (what libFuzzer reports as a crash).
    public static func check(_ data: UnsafePointer<UInt8>, _ count: Int, _ body: ([UInt8]) throws -> Void) -> CInt {
        do {
            try body(Array(UnsafeBufferPointer(start: data, count: count)))
        } catch {
            fatalError("invariant broken: \(error)")
        }
        return 0
    }
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt
