import MCPCore
import TaskRuntime

/// allcanuse-mock's stdio loop runs every request, creates among them, and is where exits are handled: it stays
/// awake through a create's spawn, and it watches the tasks' exits itself. (Declared here, where both modules meet:
/// the protocol core knows nothing of tasks.)
extension ReadLoop: WakefulExecutor, DescriptorWatchingExecutor {}
