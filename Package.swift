// swift-tools-version:6.1
import Foundation
import PackageDescription

let package = Package(
    name: "Corral",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "corral", targets: ["corral"]),
        .library(name: "TaskRuntime", targets: ["TaskRuntime"]),
        .library(name: "Sandbox", targets: ["Sandbox"]),
        .library(name: "Policy", targets: ["Policy"]),
        .library(name: "Gateway", targets: ["Gateway"]),
        .library(name: "MCPCore", targets: ["MCPCore"]),
        // What the fuzz targets (Fuzz/, built with -sanitize=fuzzer) and the corpus replay tests call.
        .library(name: "FuzzEntryPoints", targets: ["FuzzEntryPoints"]),
        .executable(name: "allcanuse-mock", targets: ["allcanuse-mock"]),
        .executable(name: "allcanuse-watch", targets: ["allcanuse-watch"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // Spawn shim and thin wrappers for what Swift cannot import (raw syscalls, packed epoll_event).
        .target(name: "CCorral"),
        .systemLibrary(
            name: "CSeccomp",
            pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]
        ),
        .target(name: "CorralJSON"),
        // The MCP protocol core, both eras (2026-07-28 stateless, 2025-11-25 sessions): messages, envelope and
        // header checks with the spec's codes, the HTTP routing rules, server/discover, subscriptions/listen, the
        // dual-era stdio connection. No HTTP server here, so that stdio users and the fuzz targets stay small.
        .target(name: "MCPCore", dependencies: ["CorralJSON", "CCorral"]),
        // Streamable HTTP for MCPCore, both eras on one endpoint, on Hummingbird.
        .target(
            name: "MCPHTTP",
            dependencies: [
                "MCPCore", "CorralJSON",
                .product(name: "Hummingbird", package: "hummingbird"),
                // Its HTTP/1.1 child channel, with modern POSTs served in front of the router (ModernPostHandler).
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // The server's one event loop, which its handlers run on too (EventLoopTaskExecutor).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // Open streams, for whoever bootstraps a backend (corral proxy --metrics).
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "Sandbox",
            dependencies: ["CCorral", "CSeccomp"]
        ),
        .target(
            name: "TaskRuntime",
            dependencies: [
                "Sandbox", "CCorral", "CorralJSON", "SQLiteWAL",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The write-ahead log of every SQLite store checkpointed off the commit path.
        .target(
            name: "SQLiteWAL",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                // sqlite3_wal_hook, which GRDB does not wrap.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]
        ),
        .target(
            name: "Policy",
            dependencies: [
                "CorralJSON", "SQLiteWAL",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        // The agent-side gateway: policy enforcement in front of MCP servers.
        .target(
            name: "Gateway",
            dependencies: [
                "Policy", "CorralJSON", "CCorral", "MCPCore", "MCPHTTP",
                // The Streamable HTTP client transport (a NIO connection pool, not URLSession: MCPHTTPClient says why).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // HMAC-SHA256 for approval states (constant-time checks).
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                // Decision, store and upstream figures; the backend (Prometheus) is the executable's choice.
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The policy store in PostgreSQL, shared by several gateway instances (counters, single-use approvals, task
        // owners). Its own target so that in-process users of Policy and Gateway do not link NIO's PostgreSQL client.
        .target(
            name: "PolicyPostgres",
            dependencies: [
                "Policy",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // TLS for sslmode=prefer|require (the configuration type PostgresNIO takes).
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The Allcanuse wait conditions (file, process, port, HTTP): parsed in the server, checked in the watcher.
        .target(name: "WatchConditions", dependencies: ["CorralJSON"], path: "mockserver/WatchConditions"),
        // The condition watcher process: small on purpose (no NIO, no SQLite), a thousand may run at once.
        .executableTarget(
            name: "allcanuse-watch", dependencies: ["WatchConditions", "CorralJSON"], path: "mockserver/allcanuse-watch"),
        // The Allcanuse task tools over the runtime (MCP-free; the allcanuse-mock server maps MCP calls onto it).
        .target(
            name: "AllcanuseMock",
            dependencies: ["TaskRuntime", "Sandbox", "CorralJSON", "WatchConditions", "CCorral"],
            path: "mockserver/AllcanuseMock"
        ),
        // The MCP server: the tool catalog over MCPCore, policy first.
        .target(
            name: "AllcanuseMockServer",
            dependencies: [
                "AllcanuseMock", "Policy", "CorralJSON", "MCPCore", "SQLiteWAL",
                .product(name: "Logging", package: "swift-log"),
                // MCP task handles, in their own SQLite file beside the task store.
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "mockserver/AllcanuseMockServer"
        ),
        .executableTarget(
            name: "allcanuse-mock",
            dependencies: [
                "AllcanuseMockServer", "MCPCore", "MCPHTTP", "AllcanuseMock", "TaskRuntime", "Sandbox", "Policy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "mockserver/allcanuse-mock"
        ),
        // `corral bench …`: the benchmark programs, next to the product rather than in its command target.
        .target(
            name: "CorralBenchmarks",
            dependencies: [
                "TaskRuntime", "Sandbox", "Policy", "PolicyPostgres", "Gateway", "CorralJSON", "MCPCore", "CCorral",
                // `corral bench agent` runs the mock in-process.
                "AllcanuseMock", "AllcanuseMockServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/CorralBenchmarks"
        ),
        .executableTarget(
            name: "corral",
            dependencies: [
                "TaskRuntime", "Sandbox", "Policy", "Gateway", "CorralJSON", "MCPCore", "MCPHTTP", "PolicyPostgres",
                "CorralBenchmarks",
                // `corral conformance` checks a gateway's tools/list against the mock's catalog.
                "AllcanuseMock",
                // `corral conformance --gateway-url`'s HTTP client.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                // The /metrics endpoint of `corral proxy --metrics`.
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The README's agent loop, built so that it cannot rot: `swift run agent-loop .build/debug/allcanuse-mock`.
        .executableTarget(name: "agent-loop", dependencies: ["Gateway", "Policy", "CorralJSON"], path: "Examples/AgentLoop"),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "CCorral"], exclude: ["Resources"]),
        .testTarget(
            name: "TaskRuntimeTests",
            dependencies: [
                "TaskRuntime", "Sandbox", "CCorral", "CorralJSON", "SQLiteWAL", .product(name: "GRDB", package: "GRDB.swift"),
                // The stdio server's loop, as the executor exits are handled on.
                "MCPCore",
            ]),
        .testTarget(
            name: "PolicyTests",
            dependencies: [
                "Policy", "CorralJSON", "PolicyPostgres", "SQLiteWAL",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "CorralJSONTests", dependencies: ["CorralJSON"]),
        .target(name: "FuzzEntryPoints", dependencies: ["MCPCore", "CorralJSON", "WatchConditions"]),
        // The HTTP connection's fuzz entry point, apart from FuzzEntryPoints: it needs NIO, the others do not.
        .target(
            name: "FuzzHTTPEntryPoints",
            dependencies: [
                "FuzzEntryPoints", "MCPHTTP", "MCPCore", "CorralJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "MCPCoreTests", dependencies: ["MCPCore", "CorralJSON", "FuzzEntryPoints"], exclude: []),
        .testTarget(
            name: "MCPHTTPTests",
            dependencies: [
                "MCPHTTP", "MCPCore", "CorralJSON", "FuzzHTTPEntryPoints",
                // ModernPostHandler on an EmbeddedChannel: its parts in and out, without sockets.
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "AllcanuseMock", "AllcanuseMockServer", "TaskRuntime", "CorralJSON", "Policy", "MCPCore",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "AllcanuseMockTests",
            dependencies: [
                "AllcanuseMock", "AllcanuseMockServer", "TaskRuntime", "Sandbox", "CorralJSON", "Policy", "MCPCore",
                .product(name: "Logging", package: "swift-log"), .product(name: "GRDB", package: "GRDB.swift"),
            ]),
    ]
)

// The libFuzzer targets exist only for scripts/fuzz (CORRAL_FUZZ=1, built with -sanitize=fuzzer, whose runtime
// provides main): a normal build has no fuzzer runtime to link them with.
if ProcessInfo.processInfo.environment["CORRAL_FUZZ"] != nil {
    package.targets.append(.target(name: "FuzzDriver", path: "Fuzz/FuzzDriver"))
    let entryPoints = [
        "fuzz-http-post": "FuzzEntryPoints", "fuzz-stdio": "FuzzEntryPoints", "fuzz-watch": "FuzzEntryPoints",
        "fuzz-gatekeeper-json": "FuzzEntryPoints", "fuzz-timestamp": "FuzzEntryPoints",
        "fuzz-http-connection": "FuzzHTTPEntryPoints",
    ]
    for (name, entryPoint) in entryPoints.sorted(by: { $0.key < $1.key }) {
        package.targets.append(
            .executableTarget(name: name, dependencies: [.target(name: entryPoint), "FuzzDriver"], path: "Fuzz/\(name)"))
        package.products.append(.executable(name: name, targets: [name]))
    }
}
