import ArgumentParser
import CorralJSON
import Foundation

/// `corral conformance`: allcanuse-mock behind any gateway, checked scenario by scenario.
struct ConformanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Test any MCP gateway: run allcanuse-mock behind it and check what clients get against what the mock received.",
        discussion: """
            For each scenario, --gateway is run with /bin/sh -c after replacing {server} with the mock's command \
            line (allcanuse-mock on stdio with a fresh state directory and a call log) and {policy} with the path of \
            the scenario's PolicyLayer policy.json (also in $CORRAL_CONFORMANCE_POLICY). The kit speaks raw JSON-RPC \
            to the gateway's stdio, then compares the answers with the mock's record of every tools/call it \
            received. Prints one row per scenario; exits 0 only if every selected scenario passed.

            Each scenario runs in both MCP eras by default (--era): as a 2025-11-25 client (initialize first) and as \
            a 2026-07-28 client (server/discover, then every request with its _meta); a few apply to one era only (a \
            batch is 2025-11-25; approval-replay checks 2026-07-28's input_required round trip, and tasks-bypass the \
            Tasks extension's task handles, which are 2026-07-28 only). With --gateway-url the kit talks to the \
            gateway over Streamable HTTP instead of its stdio, and header-mismatch (2026-07-28 only) checks that \
            2026-07-28 headers which disagree with the body are refused before the server.

            Example:
              corral conformance --gateway "corral proxy --policy {policy} -- {server}"
            """
    )

    @Option(help: "The gateway command line, with {server} and {policy} placeholders.")
    var gateway: String?
    @Option(name: .customLong("scenario"), help: "Run only this scenario (repeatable; see --list).")
    var scenarios: [String] = []
    @Flag(help: "List the scenarios and exit.") var list = false
    @Option(help: "The allcanuse-mock binary (default: the one beside corral, else the first in PATH).")
    var mock: String?
    @Option(help: "Seconds to wait for any one answer.") var timeout = 20
    @Flag(help: "Keep each scenario's files (policy, call log, gateway stderr) and print where.") var keep = false
    @Option(help: "The MCP era of the kit's client: legacy (2025-11-25 handshake), modern (2026-07-28 stateless) or both.")
    var era = "both"
    @Option(help: "Talk to the gateway over Streamable HTTP at this URL (the --gateway command must serve it, e.g. \"corral proxy --http 127.0.0.1:8799 --policy {policy} -- {server}\" with http://127.0.0.1:8799/mcp) instead of its stdio; enables the header scenarios.")
    var gatewayUrl: String?

    func run() throws {
        if list {
            for scenario in Scenarios.all { print("\(scenario.name.padding(toLength: 22, withPad: " ", startingAt: 0))\(scenario.summary)") }
            return
        }
        guard let gateway else { throw ValidationError("--gateway is required, e.g. --gateway \"corral proxy --policy {policy} -- {server}\"") }
        guard gateway.contains("{server}") else { throw ValidationError("--gateway must contain {server}, where the mock's command line goes") }
        let known = Set(Scenarios.all.map(\.name))
        if let unknown = scenarios.first(where: { !known.contains($0) }) {
            throw ValidationError("unknown scenario \(unknown); known: \(known.sorted().joined(separator: ", "))")
        }
        guard timeout > 0 else { throw ValidationError("--timeout must be at least 1 second") }
        let mockPath = try resolveMock()
        let eras: [ConformanceEra]
        switch era {
        case "both": eras = [.legacy, .modern]
        case "legacy": eras = [.legacy]
        case "modern": eras = [.modern]
        default: throw ValidationError("--era is legacy, modern or both; got \(era)")
        }
        let url = try gatewayUrl.map { text -> URL in
            guard let url = URL(string: text), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw ValidationError("--gateway-url wants an http(s) URL, e.g. http://127.0.0.1:8799/mcp; got \(text)")
            }
            return url
        }
        let chosen = scenarios.isEmpty ? Scenarios.all : Scenarios.all.filter { scenarios.contains($0.name) }
        let selected = eras.flatMap { era in
            chosen.filter { $0.eras.contains(era) && (!$0.needsHTTP || url != nil) }.map { (scenario: $0, era: era) }
        }
        let scratch = try makeTemporaryDirectory("corral-conformance")
        defer { if !keep { try? FileManager.default.removeItem(atPath: scratch) } }

        func line(_ name: String, _ era: String, _ result: String, _ detail: String) {
            print(name.padding(toLength: 22, withPad: " ", startingAt: 0) + era.padding(toLength: 8, withPad: " ", startingAt: 0)
                + result.padding(toLength: 8, withPad: " ", startingAt: 0) + detail)
        }
        line("scenario", "era", "result", "detail")
        var failed = 0
        for (scenario, era) in selected {
            let directory = scratch + "/" + scenario.name + "-" + era.rawValue
            let outcome = Result { try run(scenario, era: era, url: url, gateway: gateway, mock: mockPath, directory: directory) }
            switch outcome {
            case .success(let detail):
                line(scenario.name, era.rawValue, "PASS", detail)
            case .failure(let error):
                failed += 1
                line(scenario.name, era.rawValue, "FAIL", "\(error)")
                let stderr = (try? String(contentsOfFile: directory + "/gateway.stderr", encoding: .utf8)) ?? ""
                let tail = stderr.split(separator: "\n").suffix(5)
                for line in tail { print("    gateway stderr: \(line)") }
            }
        }
        print("\(selected.count - failed) of \(selected.count) scenarios passed")
        if keep { print("files kept in \(scratch)") }
        if failed > 0 { throw ExitCode(1) }
    }

    private func run(
        _ scenario: ConformanceScenario, era: ConformanceEra, url: URL?, gateway: String, mock: String, directory: String
    ) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let policyPath = directory + "/policy.json"
        try (scenario.policy.jsonString() + "\n").write(toFile: policyPath, atomically: true, encoding: .utf8)
        let callLog = directory + "/calls.jsonl"
        // Lenient about repeated keys, as many servers are: a gateway that forwards an ambiguous text must be caught by
        // what the mock then runs, not saved by the mock's own strictness.
        let server = [
            mock, "--state-dir", directory + "/state", "--call-log", callLog, "--grace-ms", "200", "--log-level", "warning",
            "--accept-duplicate-keys",
        ]
            .map(shellQuoted).joined(separator: " ")
        let command = gateway.replacingOccurrences(of: "{server}", with: server)
            .replacingOccurrences(of: "{policy}", with: shellQuoted(policyPath))
        let client = try LineClient(
            shellCommand: command, environment: ["CORRAL_CONFORMANCE_POLICY": policyPath],
            stderrPath: directory + "/gateway.stderr")
        var http: ConformanceHTTPClient?
        defer {
            http?.close()
            client.close(terminate: url != nil)
        }
        var wire: any ScenarioWire = client
        if let url {
            let connection = ConformanceHTTPClient(endpoint: url)
            http = connection
            try connection.waitUntilUp(timeout: .seconds(timeout))
            wire = connection
        }
        let session = ScenarioSession(client: wire, callLog: callLog, timeout: .seconds(timeout), era: era)
        try session.initialize()
        return try scenario.run(session)
    }

    private func resolveMock() throws -> String {
        if let mock {
            guard FileManager.default.isExecutableFile(atPath: mock) else { throw ValidationError("--mock \(mock) is not an executable file") }
            return mock
        }
        let beside = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("allcanuse-mock").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(directory)/allcanuse-mock"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw ValidationError("allcanuse-mock not found beside corral or in PATH; build it (swift build) or pass --mock")
    }
}

/// Single-quoted for /bin/sh.
func shellQuoted(_ word: String) -> String {
    "'" + word.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
}
