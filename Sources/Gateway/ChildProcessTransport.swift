import CCorral
import Foundation
import Logging
import MCP
import Synchronization

/// An SDK `Transport` to a stdio MCP server run as a child process.
///
/// Not the SDK's `StdioTransport`: that one polls a non-blocking fd and sleeps 10 ms whenever it is empty, which
/// adds up to 10 ms to every call, and it finishes its stream quietly at EOF, after which the SDK client spins.
/// Here a thread does blocking reads, and the end of the server's output ends the stream with an error and calls
/// `onPeerClosed`.
public actor ChildProcessTransport: Transport {
    public nonisolated let logger: Logger
    private let process: Process
    private let toServer: Pipe
    private let fromServer: Pipe
    private let stream: AsyncThrowingStream<Data, Swift.Error>
    private let continuation: AsyncThrowingStream<Data, Swift.Error>.Continuation
    private let onPeerClosed: @Sendable (String) -> Void
    private var started = false

    /// `command[0]` is looked up in `PATH`. The server's stderr goes to ours.
    public init(
        command: [String], environment: [String: String]? = nil, logger: Logger? = nil,
        onPeerClosed: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        guard !command.isEmpty else { throw MCPError.internalError("empty server command") }
        self.logger = logger ?? Logger(label: "corral.gateway.child", factory: { _ in SwiftLogNoOpLogHandler() })
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ServerLaunch.envArguments(for: command)
        if let environment { process.environment = environment }
        toServer = Pipe()
        fromServer = Pipe()
        process.standardInput = toServer
        process.standardOutput = fromServer
        process.standardError = FileHandle.standardError
        (stream, continuation) = AsyncThrowingStream.makeStream()
        self.onPeerClosed = onPeerClosed
    }

    public func connect() async throws {
        guard !started else { return }
        started = true
        do {
            try process.run()
        } catch {
            throw MCPError.transportError(error)
        }
        let reader = fromServer.fileHandleForReading
        let continuation = continuation
        let process = process
        let onPeerClosed = onPeerClosed
        let thread = Thread {
            LineReader.readLines(from: reader) { continuation.yield($0) }
            process.waitUntilExit()
            let reason = exitReason(process)
            continuation.finish(throwing: MCPError.transportError(PeerClosed(reason: reason)))
            onPeerClosed(reason)
        }
        thread.start()
    }

    public func disconnect() async {
        guard started, process.isRunning else { return }
        // Closing its input is how a stdio server is asked to stop; a server that ignores it is terminated.
        try? toServer.fileHandleForWriting.close()
        await ServerLaunch.stop(process, grace: .seconds(2))
    }

    public func send(_ data: Data) async throws {
        let line = data + Data("\n".utf8)
        let fd = toServer.fileHandleForWriting.fileDescriptor
        let status = line.withUnsafeBytes { corral_write_all_nosigpipe(fd, $0.baseAddress, $0.count) }
        guard status != 0 else { return }
        // The server closed its input, most likely by exiting: say how it ended if it does so soon.
        let deadline = Date().addingTimeInterval(1)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        throw MCPError.transportError(PeerClosed(reason: process.isRunning ? "the server closed its input" : exitReason(process)))
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, Swift.Error> { stream }

    /// The server's process id (for tests and diagnostics).
    public var pid: Int32 { process.processIdentifier }
}

private func exitReason(_ process: Process) -> String {
    process.terminationReason == .uncaughtSignal
        ? "the server was killed by signal \(process.terminationStatus)"
        : "the server exited with status \(process.terminationStatus)"
}

struct PeerClosed: LocalizedError, CustomStringConvertible {
    let reason: String
    var description: String { reason }
    var errorDescription: String? { reason }
}

/// Splits a byte stream into lines, blocking reads on a dedicated thread's handle.
enum LineReader {
    /// Raw `read(2)` into one buffer and `memchr` for line ends: `FileHandle.availableData` plus `Data` slicing
    /// spent most of the proxy's time per message in allocation and exclusivity checks.
    static func readLines(from handle: FileHandle, _ body: (Data) -> Void) {
        let fd = handle.fileDescriptor
        let capacity = 1 << 16
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
        defer { chunk.deallocate() }
        guard let base = chunk.baseAddress else { return }
        var pending = Data()  // the start of a line that continues in the next read
        while true {
            let count = read(fd, base, capacity)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            var start = 0
            while start < count, let newline = memchr(base + start, 0x0A, count - start) {
                let end = base.distance(to: newline)
                if pending.isEmpty {
                    if end > start { body(Data(bytes: base + start, count: end - start)) }
                } else {
                    pending.append(base.assumingMemoryBound(to: UInt8.self) + start, count: end - start)
                    body(pending)
                    pending = Data()
                }
                start = end + 1
            }
            if start < count { pending.append(base.assumingMemoryBound(to: UInt8.self) + start, count: count - start) }
        }
        if !pending.isEmpty { body(pending) }
    }
}

/// Starting and stopping stdio MCP servers (for `AgentSandbox` and `corral proxy`).
enum ServerLaunch {
    /// `env` arguments that run `command` with SIGPIPE back at its default: SwiftNIO ignores SIGPIPE process-wide
    /// on Linux, Foundation's `Process` cannot reset it, and an ignored signal survives exec — a server that relies on
    /// dying by SIGPIPE would not. GNU env (coreutils ≥ 8.31) does it; elsewhere the command runs as given.
    static func envArguments(for command: [String]) -> [String] {
        resetsSIGPIPE ? ["--default-signal=PIPE", "--"] + command : ["--"] + command
    }

    private static let resetsSIGPIPE: Bool = {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["--default-signal=PIPE", "true"]
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return false }
        probe.waitUntilExit()
        return probe.terminationStatus == 0
    }()

    /// Closing its input is how a stdio server is asked to stop (the caller did that); then SIGTERM after `grace`,
    /// and SIGKILL after another, so a server that ignores both cannot outlive its proxy.
    static func stop(_ process: Process, grace: Duration) async {
        for signal in [SIGTERM, SIGKILL] {
            let deadline = ContinuousClock.now + grace
            while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
            guard process.isRunning else { return }
            kill(process.processIdentifier, signal)
        }
        while process.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
    }
}
