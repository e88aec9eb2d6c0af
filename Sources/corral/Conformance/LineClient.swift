import CorralJSON
import Foundation
import Gateway
import MCPCore

/// A raw JSON-RPC client on a gateway command's stdio, for `corral conformance`.
///
/// Hand-written rather than the SDK's `Client`: the scenarios must send what a well-behaved client never would
/// (batches, params that are not objects) and see the gateway's answers byte for byte.
final class LineClient: @unchecked Sendable {  // the buffer is guarded by `condition`
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let condition = NSCondition()
    private var received: [JSONValue] = []
    private var closed = false
    let stderrPath: String

    /// Runs `command` with `/bin/sh -c`; its stderr goes to `stderrPath`.
    init(shellCommand command: String, environment: [String: String], stderrPath: String) throws {
        self.stderrPath = stderrPath
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        // In a session of its own, so that close() can end everything the command started, not just the shell.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        process.arguments = ["/bin/sh", "-c", command]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.run()
        let reader = output.fileHandleForReading
        Thread { [self] in
            LineReader.readLines(from: reader) { line in
                guard let message = try? JSONValue.parse(line) else { return }
                condition.lock()
                received += message.arrayValue ?? [message]
                condition.broadcast()
                condition.unlock()
            }
            condition.lock()
            closed = true
            condition.broadcast()
            condition.unlock()
        }.start()
    }

    func send(_ message: JSONValue) {
        sendRaw(message.jsonString())
    }

    func sendRaw(_ text: String) {
        writeLine(Data(text.utf8), to: input.fileHandleForWriting.fileDescriptor)
    }

    /// Waits for the responses with these ids (in any order, alone or in batches).
    func responses(_ ids: Set<Int>, timeout: Duration) throws -> [Int: JSONValue] {
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds))
        condition.lock()
        defer { condition.unlock() }
        while true {
            var found: [Int: JSONValue] = [:]
            for message in received where message["method"] == nil {
                if case .int(let id)? = message["id"], ids.contains(id) { found[id] = message }
            }
            if found.count == ids.count { return found }
            if closed { throw ConformanceFailure("the gateway closed its output before answering ids \(ids.subtracting(found.keys).sorted())") }
            if !condition.wait(until: deadline) {
                throw ConformanceFailure("no answer to ids \(ids.subtracting(found.keys).sorted()) within \(timeout.components.seconds) s")
            }
        }
    }

    func request(_ id: Int, _ method: String, _ params: JSONValue, timeout: Duration) throws -> JSONValue {
        send(["jsonrpc": "2.0", "id": .int(id), "method": .string(method), "params": params])
        return try responses([id], timeout: timeout)[id] ?? .null
    }

    /// Ends the gateway: closes its input, then SIGTERM and SIGKILL to its whole process group if anything of it
    /// lingers (a gateway command need not exec its server, and a server need not exit at EOF).
    func close() {
        try? input.fileHandleForWriting.close()
        let group = process.processIdentifier  // setsid made the shell a group leader
        for signal in [SIGTERM, SIGKILL] {
            let deadline = Date().addingTimeInterval(5)
            while Self.groupIsAlive(group) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            guard Self.groupIsAlive(group) else { break }
            kill(-group, signal)
        }
        process.waitUntilExit()
    }

    private static func groupIsAlive(_ group: Int32) -> Bool { kill(-group, 0) == 0 }
}

struct ConformanceFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
