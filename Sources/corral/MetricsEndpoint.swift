import Foundation
import Hummingbird
import Logging
import MCPHTTP
import Metrics
import Prometheus

/// `--metrics HOST:PORT`: swift-metrics into a Prometheus registry, served as text at `/metrics`.
enum MetricsEndpoint {
    /// Installs the Prometheus backend for the whole process (once, before anything records a metric).
    static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    /// Serves `/metrics` until the task is cancelled; `onRunning` gets the bound port.
    static func serve(
        _ registry: PrometheusCollectorRegistry, at address: HTTPAddress, logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void
    ) async throws {
        let router = Router()
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "corral-metrics"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? address.port) },
            logger: logger)
        // The Service's own run: no signal handlers of its own (the proxy decides what a signal means).
        try await app.run()
    }
}
