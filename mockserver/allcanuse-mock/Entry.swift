import Dispatch

/// The process's entry point. With `@main` on an `AsyncParsableCommand`, the main thread ends in `dispatch_main()`,
/// whose `pthread_exit` unwinds that thread's stack once at start: the unwinder's lookups fault in ~0.9 MiB of the
/// binary's unwind tables (`.eh_frame_hdr`, `.eh_frame`), resident for the server's whole life and never read again.
/// Here the main thread parks until the command returns; the command runs on the concurrency pool as it did (nothing
/// in the server uses the main actor or the main queue).
@main
enum AllcanuseMockEntry {
    static func main() {
        let finished = DispatchSemaphore(value: 0)
        Task.detached {
            // Parses, runs, and exits with the command's status (or its error's) as ArgumentParser does.
            await AllcanuseMockCommand.main()
            finished.signal()
        }
        finished.wait()
    }
}
