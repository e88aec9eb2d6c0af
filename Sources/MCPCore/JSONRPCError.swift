import CorralJSON

/// A JSON-RPC error object, thrown by handlers and written as `{"code", "message", "data"?}`.
public struct JSONRPCError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: Int
    public var message: String
    public var data: JSONValue?

    public init(code: Int, message: String, data: JSONValue? = nil) {
        self.code = code
        self.message = message
        self.data = data
    }

    public var description: String { "error \(code): \(message)" }

    public var json: JSONValue {
        var object: [String: JSONValue] = ["code": .int(code), "message": .string(message)]
        if let data { object["data"] = data }
        return .object(object)
    }

    public init?(json: JSONValue) {
        guard let code = json["code"]?.intValue else { return nil }
        self.init(code: code, message: json["message"]?.stringValue ?? "", data: json["data"])
    }

    // MARK: - the codes

    public static let parseErrorCode = -32700
    public static let invalidRequestCode = -32600
    public static let methodNotFoundCode = -32601
    public static let invalidParamsCode = -32602
    public static let internalErrorCode = -32603
    /// 2026-07-28: a required header missing, malformed, or different from the body.
    public static let headerMismatchCode = -32020
    /// 2026-07-28: the request needs a client capability (e.g. an extension) it did not declare.
    public static let missingRequiredClientCapabilityCode = -32021
    /// 2026-07-28: the requested protocol version is not served.
    public static let unsupportedProtocolVersionCode = -32022

    /// The answer to a request still running when its server stops (any transport, either era).
    public static let serverStopping = JSONRPCError(
        code: -32000, message: "the server is shutting down: the request was ended before it finished")

    public static func parseError(_ detail: String) -> JSONRPCError {
        JSONRPCError(code: parseErrorCode, message: "Parse error: \(detail)")
    }
    public static func invalidRequest(_ detail: String) -> JSONRPCError {
        JSONRPCError(code: invalidRequestCode, message: "Invalid Request: \(detail)")
    }
    public static func methodNotFound(_ method: String, _ why: String? = nil) -> JSONRPCError {
        JSONRPCError(code: methodNotFoundCode, message: "Method not found: \(method)" + (why.map { " (\($0))" } ?? ""))
    }
    public static func invalidParams(_ detail: String) -> JSONRPCError {
        JSONRPCError(code: invalidParamsCode, message: "Invalid params: \(detail)")
    }
    public static func internalError(_ detail: String) -> JSONRPCError {
        JSONRPCError(code: internalErrorCode, message: "Internal error: \(detail)")
    }
    public static func headerMismatch(_ detail: String) -> JSONRPCError {
        JSONRPCError(code: headerMismatchCode, message: "Header mismatch: \(detail)")
    }
    public static func unsupportedProtocolVersion(_ requested: JSONValue) -> JSONRPCError {
        JSONRPCError(
            code: unsupportedProtocolVersionCode, message: "Unsupported protocol version",
            data: ["supported": .array(ProtocolVersions.supported.map(JSONValue.string)), "requested": requested])
    }
    public static func missingClientCapability(_ capabilities: JSONValue, _ detail: String) -> JSONRPCError {
        JSONRPCError(
            code: missingRequiredClientCapabilityCode, message: "Missing required client capability: \(detail)",
            data: ["requiredCapabilities": capabilities])
    }

    /// The HTTP status a 2026-07-28 error answer carries (the spec's table; anything else is 200).
    public var httpStatus: Int {
        switch code {
        case Self.parseErrorCode, Self.invalidRequestCode, Self.invalidParamsCode, Self.headerMismatchCode,
            Self.missingRequiredClientCapabilityCode, Self.unsupportedProtocolVersionCode:
            400
        case Self.methodNotFoundCode: 404
        default: 200
        }
    }
}

/// Building JSON-RPC messages.
public enum JSONRPC {
    public static func response(id: JSONValue, result: JSONValue) -> JSONValue {
        ["jsonrpc": "2.0", "id": id, "result": result]
    }

    public static func error(id: JSONValue?, _ error: JSONRPCError) -> JSONValue {
        ["jsonrpc": "2.0", "id": id ?? .null, "error": error.json]
    }

    public static func notification(_ method: String, _ params: JSONValue? = nil) -> JSONValue {
        var object: [String: JSONValue] = ["jsonrpc": "2.0", "method": .string(method)]
        if let params { object["params"] = params }
        return .object(object)
    }

    public static func request(id: JSONValue, _ method: String, _ params: JSONValue? = nil) -> JSONValue {
        var object: [String: JSONValue] = ["jsonrpc": "2.0", "id": id, "method": .string(method)]
        if let params { object["params"] = params }
        return .object(object)
    }

    /// MCP: "the ID MUST be a string or integer" (and not null).
    public static func isValidID(_ id: JSONValue) -> Bool { id.stringValue != nil || id.intValue != nil }

    /// A JSON-RPC id as a dictionary key: `"1"` and `1` are different ids.
    public static func key(_ id: JSONValue) -> String { id.jsonString() }
}

/// One decoded JSON-RPC message, classified.
public enum JSONRPCMessage: Sendable {
    case request(id: JSONValue, method: String, params: JSONValue)
    case notification(method: String, params: JSONValue)
    case response(id: JSONValue, result: JSONValue)
    case errorResponse(id: JSONValue, error: JSONValue)

    /// Classifies one message object; the error says why it is not one (with the id to answer under, if any).
    public static func classify(_ value: JSONValue) -> Result<JSONRPCMessage, MessageShapeError> {
        guard let object = value.objectValue else {
            return .failure(MessageShapeError(id: nil, error: .invalidRequest("not a JSON-RPC object")))
        }
        let id = object["id"]
        guard object["jsonrpc"]?.stringValue == "2.0" else {
            return .failure(MessageShapeError(id: id.flatMap(validID), error: .invalidRequest("jsonrpc must be \"2.0\"")))
        }
        if let method = object["method"] {
            guard let name = method.stringValue else {
                return .failure(MessageShapeError(id: id.flatMap(validID), error: .invalidRequest("method must be a string")))
            }
            let params = object["params"] ?? .null
            guard params.isNull || params.objectValue != nil || params.arrayValue != nil else {
                return .failure(MessageShapeError(id: id.flatMap(validID), error: .invalidRequest("params must be an object")))
            }
            guard let id else { return .success(.notification(method: name, params: params)) }
            guard JSONRPC.isValidID(id) else {
                return .failure(MessageShapeError(id: nil, error: .invalidRequest("an id must be a string or an integer")))
            }
            return .success(.request(id: id, method: name, params: params))
        }
        guard let id else {
            return .failure(MessageShapeError(id: nil, error: .invalidRequest("no method, result or error")))
        }
        if let result = object["result"] { return .success(.response(id: id, result: result)) }
        if let error = object["error"] { return .success(.errorResponse(id: id, error: error)) }
        return .failure(MessageShapeError(id: validID(id), error: .invalidRequest("no method, result or error")))
    }

    private static func validID(_ id: JSONValue) -> JSONValue? { JSONRPC.isValidID(id) ? id : nil }
}

/// Why a JSON value is not a JSON-RPC message, and the id its error answer carries.
public struct MessageShapeError: Error, Sendable {
    public let id: JSONValue?
    public let error: JSONRPCError
}
