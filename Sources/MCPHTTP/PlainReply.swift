import CorralJSON
import MCPCore

/// An answer written as it is, whichever path serves the request (Hummingbird's, or `ModernPostHandler` in front
/// of it): a status, a JSON body or none, and headers beyond the content type.
struct PlainReply: Sendable {
    var status: Int
    var json: String?
    var headers: [(name: String, value: String)] = []

    init(status: Int, json: String? = nil) {
        self.status = status
        self.json = json
    }

    init(status: Int, _ message: JSONValue) {
        self.init(status: status, json: message.jsonString())
    }

    /// The reply a POST's route gives without running anything: an error with its status, 202 for a notification,
    /// 406 for an `Accept` the answer cannot meet.
    init(_ route: HTTPPostRoute) {
        switch route {
        case .reply(let status, let message?): self.init(status: status, message)
        case .reply(let status, nil): self.init(status: status)
        default: self.init(status: 406)
        }
    }
}
