import ArgumentParser
import Foundation
import Glibc

/// `corral bench relay -- CMD ARGS…`: the floor of any stdio proxy, for `corral bench proxy` to measure in the same
/// run. It runs the command with pipes, as `corral proxy` runs its server, and copies bytes both ways on two threads
/// (`read` into a buffer, `write` it out), parsing nothing: what is left is the two extra pipe hops and the thread
/// wake-ups that every proxy between a stdio client and a stdio server pays.
struct PipeRelay: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay", abstract: "A bare byte relay between stdio and a server command (a floor for benchmarks).",
        shouldDisplay: false)

    @Argument(parsing: .captureForPassthrough, help: "The server command and its arguments, after --.")
    var command: [String] = []

    func run() throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        guard !argv.isEmpty else { throw ValidationError("give the server command after --") }
        var toServer: [Int32] = [-1, -1]
        var fromServer: [Int32] = [-1, -1]
        guard pipe(&toServer) == 0, pipe(&fromServer) == 0 else { throw RelayError("pipe", errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toServer[0], STDIN_FILENO)
        posix_spawn_file_actions_adddup2(&actions, fromServer[1], STDOUT_FILENO)
        for fd in toServer + fromServer { posix_spawn_file_actions_addclose(&actions, fd) }
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { throw RelayError("posix_spawnp \(argv[0])", spawned) }
        close(toServer[0])
        close(fromServer[1])
        let (clientInput, serverInput) = (STDIN_FILENO, toServer[1])
        Thread {
            Self.copy(from: clientInput, to: serverInput)
            close(serverInput)  // the client is done: so is the server's input, as through corral proxy
        }.start()
        Self.copy(from: fromServer[0], to: STDOUT_FILENO)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Copies until the end of input or an error on either side.
    private static func copy(from input: Int32, to output: Int32) {
        let capacity = 1 << 16
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 1)
        defer { buffer.deallocate() }
        while true {
            let count = read(input, buffer, capacity)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            var written = 0
            while written < count {
                let result = write(output, buffer + written, count - written)
                if result < 0 && errno == EINTR { continue }
                guard result > 0 else { return }
                written += result
            }
        }
    }
}

struct RelayError: Error, CustomStringConvertible {
    let description: String
    init(_ what: String, _ code: Int32) { description = "\(what): \(String(cString: strerror(code)))" }
}
