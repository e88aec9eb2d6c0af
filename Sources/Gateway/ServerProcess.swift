import CCorral
import Foundation
import MCPCore
import Synchronization

/// A stdio MCP server as a child process (stderr shared with ours).
final class ServerProcess: Sendable {
    private let process: Process
    /// The write end of the server's stdin, nil once closed: writes and the close are serialized, so a write can
    /// never reach a descriptor number that was closed and handed out again.
    private let input: Mutex<FileHandle?>
    let output: FileHandle

    init(command: [String], environment: [String: String]? = nil) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ServerLaunch.envArguments(for: command)
        if let environment { process.environment = environment }
        let toServer = Pipe()
        let fromServer = Pipe()
        process.standardInput = toServer
        process.standardOutput = fromServer
        process.standardError = FileHandle.standardError
        try process.run()
        self.process = process
        input = Mutex(toServer.fileHandleForWriting)
        output = fromServer.fileHandleForReading
    }

    /// Writes one message as a line; false once the input is closed or the server stopped reading.
    @discardableResult
    func writeLine(_ message: Data) -> Bool {
        input.withLock { handle in
            guard let handle else { return false }
            return MCPCore.writeLine(message, to: handle.fileDescriptor)
        }
    }

    var isRunning: Bool { process.isRunning }
    var pid: Int32 { process.processIdentifier }

    func closeInput() {
        input.withLock { handle in
            try? handle?.close()
            handle = nil
        }
    }

    func signal(_ signal: Int32) {
        if process.isRunning { kill(process.processIdentifier, signal) }
    }

    /// How the server ended ("exited with status 1"), waiting for it briefly after its output closed. Blocks: call
    /// it from a reader thread, or once `isRunning` is false.
    func exitDescription() -> String {
        let deadline = Date().addingTimeInterval(1)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        guard !process.isRunning else { return "closed its output" }
        return process.terminationReason == .uncaughtSignal
            ? "was killed by signal \(process.terminationStatus)" : "exited with status \(process.terminationStatus)"
    }

    func waitForExit() -> Int32 {
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// Asks the server to stop by closing its input; SIGTERM after `grace`, SIGKILL after another.
    func stop(grace: Duration) async {
        closeInput()
        await ServerLaunch.stop(process, grace: grace)
    }
}

/// Starting and stopping stdio MCP servers (for `AgentSandbox` and `corral proxy`).
public enum ServerLaunch {
    /// `env` arguments that run `command` with SIGPIPE back at its default: SwiftNIO ignores SIGPIPE process-wide
    /// on Linux, Foundation's `Process` cannot reset it, and an ignored signal survives exec — a server that relies on
    /// dying by SIGPIPE would not. GNU env (coreutils ≥ 8.31) does it; elsewhere the command runs as given.
    static func envArguments(for command: [String]) -> [String] {
        resetsSIGPIPE ? ["--default-signal=PIPE", "--"] + command : ["--"] + command
    }

    /// Whether a server started here gets SIGPIPE back at its default whatever this process does with it (GNU env
    /// with `--default-signal`): only then may a stdio proxy ignore SIGPIPE itself.
    public static let resetsSIGPIPE: Bool = {
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
