import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Hummingbird's HTTP/1.1 child channel with `ModernPostHandler` right after the HTTP decoder: modern POSTs are
/// served there, and every other request goes on to Hummingbird as before. The codec's limits, the request loop and
/// shutdown stay Hummingbird's own. Its connection state handler does not see the requests served in front of it,
/// so an idle timeout there (none is configured: `HTTP1Channel`'s default) would not know of them.
struct MCPHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel
    let server: MCPHTTPServer

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(ModernPostHandler(server: server), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
