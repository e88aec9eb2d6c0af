import ArgumentParser
import CorralJSON
import Foundation
import Gateway

/// `corral grants`: the bearer-token file of `corral proxy --http --grants`.
struct GrantsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grants",
        abstract: "Make and check the --grants file of corral proxy (bearer tokens as SHA-256, mapped to grant ids).",
        discussion: """
            A grants file: {"grants": [{"id": "team-a", "token_sha256": "<64 hex digits>"}, …]}. A grant may have \
            several tokens (for rotation); a token stands for one grant only. Tokens are never stored in clear.

            Example:
              openssl rand -hex 32 | tee team-a.token | corral grants hash --id team-a
            """,
        subcommands: [Hash.self, Check.self])

    struct Hash: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read a token from stdin (one line) and print its SHA-256, or with --id a ready grants entry.")

        @Option(help: "Print {\"id\": ID, \"token_sha256\": …} instead of the bare digest.") var id: String?

        func run() throws {
            guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                throw ValidationError("no token on stdin (the token is read from stdin so that it stays out of ps and shell history)")
            }
            let digest = GrantTable.digestHex(of: line)
            if let id {
                print(#"{"id": \#(JSONValue.string(id).jsonString()), "token_sha256": "\#(digest)"}"#)
            } else {
                print(digest)
            }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a grants file: prints the grant ids (exit 0), or what is wrong with it (exit 1).")

        @Argument(help: "Path to the grants file.") var file: String

        func run() throws {
            do {
                let table = try GrantTable(contentsOfFile: file)
                print("ok: \(table.ids.count) token(s) for grant(s) \(Array(Set(table.ids)).sorted().joined(separator: ", "))")
            } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
