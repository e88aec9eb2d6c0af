import AllcanuseMock
import MCPCore
import TaskRuntime

/// The tool service and the MCP task bridge behind a mock's protocol core, possibly still starting.
///
/// Starting the task supervisor (locking the state directory, opening both stores, preparing cgroups, recovering
/// what a previous run left) took half of the server's start → first answer. None of it is needed for
/// `server/discover`, `initialize` or `tools/list`, so the core answers those at once, and a tool call or an MCP task
/// request waits here until the services are ready. A start that fails fails every request that waits, with its
/// reason; the command ends the server with the same reason.
public struct MockServices: Sendable {
    public struct Ready: Sendable {
        public let service: AllcanuseService
        public let tasks: MCPTaskBridge?

        public init(service: AllcanuseService, tasks: MCPTaskBridge?) {
            self.service = service
            self.tasks = tasks
        }

        public var supervisor: TaskSupervisor { service.supervisor }
    }

    /// Whether the MCP Tasks extension is served (advertised by discover before the bridge exists).
    public let servesTasks: Bool
    /// Listen streams: the core announces tool-list changes on them, the bridge task status.
    public let listeners: ListenRegistry
    private let starting: Task<Ready, any Error>

    /// Services that are ready already.
    public static func ready(service: AllcanuseService, tasks: MCPTaskBridge?) -> MockServices {
        let ready = Ready(service: service, tasks: tasks)
        return MockServices(
            servesTasks: tasks != nil, listeners: tasks?.listeners ?? ListenRegistry(), starting: Task { ready })
    }

    /// Services that `start` makes, beginning now; the bridge it makes must use `listeners`.
    public static func starting(
        servesTasks: Bool, listeners: ListenRegistry, _ start: @escaping @Sendable () async throws -> Ready
    ) -> MockServices {
        MockServices(servesTasks: servesTasks, listeners: listeners, starting: Task { try await start() })
    }

    private init(servesTasks: Bool, listeners: ListenRegistry, starting: Task<Ready, any Error>) {
        self.servesTasks = servesTasks
        self.listeners = listeners
        self.starting = starting
        // A listen names task handles by id: it honours those the bridge has (once it is up; none if it never is).
        listeners.honourTasks { taskIDs in
            guard let tasks = try? await starting.value.tasks else { return [] }
            return await tasks.known(taskIDs)
        }
    }

    /// The services once started, or the reason they could not start.
    public func value() async throws -> Ready {
        try await starting.value
    }

    /// For a request that needs the services: their start's failure as a JSON-RPC internal error.
    func forRequest() async throws(JSONRPCError) -> Ready {
        do {
            return try await starting.value
        } catch {
            throw .internalError("the server could not start its task services: \(error)")
        }
    }
}
